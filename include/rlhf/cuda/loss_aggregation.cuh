#pragma once
/// @file
/// What the CUDA loss kernels share: the workspace layout, the per-row mask counts, the
/// aggregation weights c_b (`rlhf::detail::row_weight`, the CPU formula) and block reductions
/// of several doubles.
///
/// The divisor of the aggregation is the explicit global count of the options when set, else this
/// call's count (the CPU kernels with `rlhf::local_reducer`): a data-parallel caller passes the
/// global counts. A divisor that is not positive (no valid token for `token_mean`, no non-empty
/// row for `seq_mean_*`, T = 0 for the default sum-norm divisor), an `rlhf::error` on the CPU,
/// gives every weight 0 here, hence a loss of 0 (the error cannot be raised without a host read; the
/// LibTorch path raises it under `statistics_readback::immediate`).

#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/cuda/support.cuh"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/options/loss_aggregation.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda::detail {

/// Tokens of one row that one block of the fused loss passes covers (256 threads × 4 tokens).
inline constexpr int loss_block_threads = 256;
inline constexpr int loss_block_tokens = 4 * loss_block_threads;

/// Blocks of the fused pass along one row: ⌈T / loss_block_tokens⌉, at least 1.
[[nodiscard]] constexpr index_t loss_chunks(index_t cols) noexcept {
    const index_t chunks = (cols + loss_block_tokens - 1) / loss_block_tokens;
    return chunks > 0 ? chunks : 1;
}

/// Doubles of the workspace header: [this call's Σ m, rows with a valid token, divisor, unused].
inline constexpr index_t workspace_header = 4;

/// The workspace of a loss, in doubles: `row_arrays` arrays of B (counts n_b, weights c_b, ...),
/// the header, then `fields` partial sums per block of the fused pass (B·chunks blocks).
struct loss_workspace {
    double* counts;      ///< n_b, B
    double* weights;     ///< c_b, B
    double* row_values;  ///< a third per-row array (the policy's mean log-ratio), B, or null
    double* header;      ///< workspace_header doubles
    double* partials;    ///< B·chunks·fields
};

[[nodiscard]] constexpr index_t workspace_doubles(index_t rows, index_t cols, index_t row_arrays,
                                                  index_t fields) noexcept {
    return row_arrays * rows + workspace_header + rows * loss_chunks(cols) * fields;
}

[[nodiscard]] inline loss_workspace split_workspace(void* workspace, index_t rows, index_t row_arrays) noexcept {
    auto* base = static_cast<double*>(workspace);
    return {base, base + rows, row_arrays > 2 ? base + 2 * rows : nullptr, base + row_arrays * rows,
            base + row_arrays * rows + workspace_header};
}

/// Host checks of the device pointers a loss writes and of the grid size.
inline void check_loss_buffers(std::string_view function, const double* result, const void* workspace, index_t rows,
                               index_t cols) {
    if (result == nullptr) fail(error_kind::value, function, "result", "a device array of doubles", "nullptr");
    if (workspace == nullptr) fail(error_kind::value, function, "workspace", "a device buffer", "nullptr");
    if (reinterpret_cast<std::uintptr_t>(workspace) % alignof(double) != 0)
        fail(error_kind::value, function, "workspace", "an address aligned to 8 bytes", "a misaligned address");
    if (rows > INT_MAX / loss_chunks(cols))
        fail(error_kind::shape, function, "mask",
             "at most " + std::to_string(INT_MAX) + " blocks of " + std::to_string(loss_block_tokens) +
                 " tokens (one grid)",
             shape_string(extents_t<2>{rows, cols}));
}

/// The aggregation options as plain values for a kernel.
struct aggregation_params {
    loss_aggregation mode;
    double explicit_divisor;  ///< the option's global count or normalizer; < 0 when unset
    double columns;           ///< T, the default sum-norm divisor
    double dp_size;
    double token_count_epsilon;
};

[[nodiscard]] inline aggregation_params make_aggregation_params(const aggregation_options& o, index_t cols) {
    double explicit_divisor = -1.0;
    switch (o.mode) {
        case loss_aggregation::token_mean:
            explicit_divisor = o.global_token_count.value_or(-1.0);
            break;
        case loss_aggregation::seq_mean_token_sum:
        case loss_aggregation::seq_mean_token_mean:
            explicit_divisor = o.global_sequence_count.value_or(-1.0);
            break;
        case loss_aggregation::seq_mean_token_sum_norm:
            explicit_divisor = o.normalizer.value_or(-1.0);
            break;
    }
    return {o.mode, explicit_divisor, static_cast<double>(cols), o.dp_size, o.token_count_epsilon};
}

/// `sums[i]` summed over the block, in thread 0 (one `block_sum` per entry).
template <int Threads, int N>
__device__ void block_sums(double (&sums)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) sums[i] = block_sum<Threads>(sums[i]);
}

/// Launch (3)'s output: thread 0 writes its block's `N` sums to `partials[block · N + f]`;
/// returns that block's row of `partials`.
template <int N>
__device__ double* store_partials(const double (&sums)[N], index_t block, double* partials) {
    double* out = partials + block * N;
#pragma unroll
    for (int f = 0; f < N; ++f) out[f] = sums[f];
    return out;
}

/// Launch (4)'s reduction: the `N` partial sums of the `blocks` blocks of launch (3), each
/// thread's share (blocks `threadIdx.x + k·Threads`) first, then over the block (`block_sums`):
/// a fixed order, so the sums are deterministic; the totals in thread 0's `sums` (zero on entry).
template <int Threads, int N>
__device__ void sum_partials(const double* partials, index_t blocks, double (&sums)[N]) {
    for (index_t b = threadIdx.x; b < blocks; b += Threads) {
        const double* p = partials + b * N;
#pragma unroll
        for (int f = 0; f < N; ++f) sums[f] += p[f];
    }
    block_sums<Threads>(sums);
}

struct max_op {
    template <class T>
    __device__ T operator()(T a, T b) const {
        return a < b ? b : a;
    }
};

/// max of `value` over the block, in thread 0.
template <int Threads, class T>
[[nodiscard]] __device__ T block_max(T value) {
    using reduce = cub::BlockReduce<T, Threads>;
    __shared__ typename reduce::TempStorage storage;
    const T top = reduce(storage).Reduce(value, max_op{});
    __syncthreads();
    return top;
}

/// Launch (1): one block per row: `counts[b] = n_b = Σ_t [m_bt ≠ 0]` (exact), and when
/// `mean_difference` is not null `mean_difference[b] = Σ_t m_bt·(x_bt − y_bt) / max(n_b, 1)` in
/// double (the policy's sequence log-ratio; x, y are then read too).
template <int Threads, class T, class M>
__global__ void __launch_bounds__(Threads)
    row_counts_kernel(const M* mask, index_t mask_stride, const T* x, index_t x_stride, const T* y, index_t y_stride,
                      index_t rows, index_t cols, double* counts, double* mean_difference) {
    const index_t row = blockIdx.x;
    if (row >= rows) return;  // a launch with B = 0 has one idle block
    const M* m = mask + row * mask_stride;
    long long nonzero = 0;
    double sum = 0.0;
    if (mean_difference != nullptr) {
        const T* xr = x + row * x_stride;
        const T* yr = y + row * y_stride;
        for (index_t t = threadIdx.x; t < cols; t += Threads) {
            const double mt = static_cast<double>(m[t]);
            nonzero += static_cast<long long>(m[t] != M{0});
            sum += mt * (static_cast<double>(xr[t]) - static_cast<double>(yr[t]));
        }
    } else {
        for (index_t t = threadIdx.x; t < cols; t += Threads) nonzero += static_cast<long long>(m[t] != M{0});
    }
    const long long n = block_sum<Threads>(nonzero);
    if (mean_difference != nullptr) sum = block_sum<Threads>(sum);
    if (threadIdx.x == 0) {
        const double nd = static_cast<double>(n);
        counts[row] = nd;
        if (mean_difference != nullptr) mean_difference[row] = sum / (nd > 1.0 ? nd : 1.0);
    }
}

/// Launch (2): one block: the divisor (`params.explicit_divisor`, else this call's count) and
/// `weights[b] = rlhf::detail::row_weight(...)` (as `rlhf::detail::weights_from_counts` with
/// `rlhf::local_reducer`); 0 when the divisor is not positive. `header` = [Σ n_b, rows with
/// n_b > 0, divisor, 0].
template <int Threads>
__global__ void __launch_bounds__(Threads)
    row_weights_kernel(const double* counts, index_t rows, aggregation_params params, double* weights, double* header) {
    double sums[2] = {0.0, 0.0};
    for (index_t b = threadIdx.x; b < rows; b += Threads) {
        sums[0] += counts[b];
        sums[1] += counts[b] > 0.0 ? 1.0 : 0.0;
    }
    block_sums<Threads>(sums);
    __shared__ double divisor;
    if (threadIdx.x == 0) {
        double d = params.explicit_divisor;
        if (!(d >= 0.0)) {
            switch (params.mode) {
                case loss_aggregation::token_mean:
                    d = sums[0];
                    break;
                case loss_aggregation::seq_mean_token_sum:
                case loss_aggregation::seq_mean_token_mean:
                    d = sums[1];
                    break;
                case loss_aggregation::seq_mean_token_sum_norm:
                    d = params.columns;
                    break;
            }
        }
        divisor = d;
        header[0] = sums[0];
        header[1] = sums[1];
        header[2] = d;
        header[3] = 0.0;
    }
    __syncthreads();
    const double d = divisor;
    for (index_t b = threadIdx.x; b < rows; b += Threads)
        weights[b] =
            d > 0.0 ? ::rlhf::detail::row_weight(params.mode, counts[b], d, params.dp_size, params.token_count_epsilon)
                    : 0.0;
}

/// Launches (1) and (2) on `stream`: the counts (and, with `x`, the mean difference into
/// `ws.row_values`), then the weights.
template <class T, class M>
void launch_row_weights(std::string_view function, view<M> mask, const T* x, index_t x_stride, const T* y,
                        index_t y_stride, const aggregation_options& options, const loss_workspace& ws,
                        cudaStream_t stream) {
    const index_t rows = mask.extent(0);
    const index_t cols = mask.extent(1);
    constexpr int threads = row_block_threads;
    row_counts_kernel<threads, T, M><<<static_cast<unsigned int>(rows > 0 ? rows : 1), threads, 0, stream>>>(
        mask.data(), mask.stride(0), x, x_stride, y, y_stride, rows, cols, ws.counts,
        x != nullptr ? ws.row_values : nullptr);
    check_launch(function);
    row_weights_kernel<threads>
        <<<1, threads, 0, stream>>>(ws.counts, rows, make_aggregation_params(options, cols), ws.weights, ws.header);
    check_launch(function);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda::detail
