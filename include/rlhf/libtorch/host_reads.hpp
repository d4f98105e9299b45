#pragma once
/// @file
/// Reads of tensor values back to the host, counted. On a GPU every such read waits for the
/// device (a synchronisation), so the PPO trainer and the deferred-statistics paths of the
/// losses make theirs through `read_to_host`, and a test can assert that a step's count does not
/// grow with its micro-batches (docs/ppo.md, "Device-resident steps").

#include <torch/types.h>

#include <atomic>
#include <cstdint>

#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

namespace detail {

[[nodiscard]] inline std::atomic<std::int64_t>& host_read_counter() noexcept {
    static std::atomic<std::int64_t> reads{0};
    return reads;
}

}  // namespace detail

/// How many `read_to_host` calls this process has made (all threads).
[[nodiscard]] inline std::int64_t host_reads() noexcept {
    return detail::host_read_counter().load(std::memory_order_relaxed);
}

/// `tensor` as a contiguous float64 CPU tensor: one counted device-to-host read.
[[nodiscard]] inline torch::Tensor read_to_host(const torch::Tensor& tensor) {
    detail::host_read_counter().fetch_add(1, std::memory_order_relaxed);
    return tensor.detach().to(torch::kCPU, torch::kFloat64).contiguous();
}

/// One value of a tensor on the host (a counted read).
[[nodiscard]] inline double read_scalar(const torch::Tensor& tensor) {
    return read_to_host(tensor).item<double>();
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
