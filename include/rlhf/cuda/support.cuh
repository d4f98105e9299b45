#pragma once
/// @file
/// What every CUDA kernel of the library shares: CUDA errors as `rlhf::error`, launch shapes,
/// and block-wide sums in double.
///
/// The kernels of `rlhf/cuda/` take device pointers in the library's views (`rlhf::view` is a
/// pointer and extents, so it describes device memory as well) and a `cudaStream_t`; they launch
/// asynchronously on that stream and never synchronise. Shapes are checked on the host before the
/// launch; values (NaN, mask entries) are not, since that would need a device-to-host read.
/// Compile them with nvcc, `--expt-relaxed-constexpr` and C++20 (the `rlhf::cuda` CMake target
/// sets both).

#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include <cstddef>
#include <string>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda {

/// Throws `rlhf::error` (kind device, argument "CUDA") when `status` is not `cudaSuccess`.
inline void check_status(cudaError_t status, std::string_view function) {
    if (status != cudaSuccess)
        fail(error_kind::device, function, "CUDA", "cudaSuccess",
             std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status));
}

/// Checks the launch just made on this thread (a bad configuration is reported at launch).
inline void check_launch(std::string_view function) {
    check_status(cudaGetLastError(), function);
}

/// Threads per block of the row kernels: one block per row, a multiple of the warp size.
inline constexpr int row_block_threads = 256;

/// Blocks for `n` elements at `threads` per block (at least 1, so that a launch is well formed).
[[nodiscard]] constexpr unsigned int blocks_for(index_t n, int threads) noexcept {
    const index_t blocks = (n + threads - 1) / threads;
    return static_cast<unsigned int>(blocks > 0 ? blocks : 1);
}

/// Sum of `value` over the block's `Threads` threads, in the result of thread 0 (CUB's block
/// reduction; `Threads` must be the block size).
template <int Threads, class T>
[[nodiscard]] __device__ T block_sum(T value) {
    using reduce = cub::BlockReduce<T, Threads>;
    __shared__ typename reduce::TempStorage storage;
    const T total = reduce(storage).Sum(value);
    __syncthreads();  // the storage may be reused by the caller's next reduction
    return total;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda
