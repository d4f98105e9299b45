#pragma once
// Device buffers for the CUDA tests: poisoned before each call (every byte 0xFF: NaN in every
// floating type, -1 in every signed integer), so an element a kernel fails to write fails the
// comparison with the CPU kernel.

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstddef>
#include <vector>

#include "rlhf/cuda/support.cuh"

namespace rlhf_test {

/// Fails the test case when a CUDA call failed (a kernel's fault shows at the next synchronise).
inline void cuda_ok(cudaError_t status) {
    REQUIRE_MESSAGE(status == cudaSuccess, cudaGetErrorString(status));
}

/// An owning device array of `n` elements of `T`.
template <class T>
class device_array {
public:
    explicit device_array(std::size_t n) : size_(n) { cuda_ok(cudaMalloc(&data_, bytes() > 0 ? bytes() : 1)); }
    explicit device_array(const std::vector<T>& host) : device_array(host.size()) { upload(host); }
    device_array(const device_array&) = delete;
    device_array& operator=(const device_array&) = delete;
    ~device_array() { cudaFree(data_); }

    [[nodiscard]] T* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] std::size_t bytes() const noexcept { return size_ * sizeof(T); }

    void upload(const std::vector<T>& host) {
        REQUIRE(host.size() == size_);
        cuda_ok(cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice));
    }
    /// Every byte 0xFF.
    void poison() { cuda_ok(cudaMemset(data_, 0xFF, bytes())); }
    /// Waits for the device, then copies back.
    [[nodiscard]] std::vector<T> download() const {
        cuda_ok(cudaDeviceSynchronize());
        std::vector<T> host(size_);
        cuda_ok(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost));
        return host;
    }

private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace rlhf_test
