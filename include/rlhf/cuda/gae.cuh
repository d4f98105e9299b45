#pragma once
/// @file
/// GAE on the device: `rlhf::compute_gae` (every `gae_masking`, with or without bootstrap values)
/// and `rlhf::compute_gae_time_major`, as parallel scans of the affine maps of
/// `rlhf/cuda/gae_scan.hpp` (the recursion `A_t = δ_t + c_t·A_{t+1}` composes associatively).
///
/// Token-level `[B, T]`: one block of 256 threads per row; the row is scanned from its end in
/// chunks of 1024 positions (4 per thread, in registers) with CUB's `BlockScan` (warp-scan
/// variant: 128 registers, 400 B of shared memory, two blocks per SM), the running map carried
/// from chunk to chunk, so any T takes one pass over memory. Time-major `[T, N]`: a block
/// holds w environments (adjacent columns, so reads coalesce; w the power of two >= N, at most 32)
/// and up to 256/w time slices; each thread composes its slice's maps, the slices are combined by a scan across
/// the block in shared memory, and each thread writes its slice from its carried advantage.
/// Everything in double, outputs rounded to T once (as the CPU kernels; the time-major CPU
/// kernel also rounds its carried advantage to T at every step, this one does not).
///
/// Launches on `stream`, never synchronises, allocates nothing. Shapes, options and overlaps are
/// checked on the host (as the CPU kernels); values are not (no device read): a non-binary mask
/// entry counts as valid, non-finite inputs propagate, and a hole under `valid_range` (an error on
/// the CPU) gives `skip_masked` advantages at the valid positions and 0 at the hole.

#include <cuda_runtime.h>

#include <cub/block/block_scan.cuh>

#include <string>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/cuda/gae_scan.hpp"
#include "rlhf/cuda/support.cuh"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/options/gae.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda {

namespace detail::gae {

using rlhf::detail::gae_scan::affine;

/// Threads per block and positions per thread of the token-level kernel.
inline constexpr int row_threads = 256;
inline constexpr int row_items = 4;

/// Threads per block of the time-major kernel.
inline constexpr int time_major_threads = 256;

/// Raw pointers and row strides of `compute_gae` (the views' innermost stride is 1).
template <class T, class M>
struct row_arguments {
    const T* rewards;
    const T* values;
    const M* mask;
    const T* bootstrap;  ///< null: 0 for every row
    T* advantages;
    T* returns;
    index_t rewards_stride, values_stride, mask_stride, advantages_stride, returns_stride;
    index_t cols;
    gae_masking masking;
    double gamma, gamma_lambda;
};

/// The running map of a row, handed to `BlockScan` as its prefix: returns the map of the positions
/// after the chunk and absorbs the chunk's aggregate.
struct running_map {
    affine total;
    __device__ affine operator()(const affine& chunk) {
        const affine before = total;
        total = rlhf::detail::gae_scan::compose(chunk, total);
        return before;
    }
};

/// One block per row: chunks of `row_threads · row_items` positions from the row's end; item j of
/// a chunk ending at `end` is position `end − 1 − j`, thread i holding j = i·row_items + q.
template <class T, class M>
__global__ void __launch_bounds__(row_threads) row_kernel(row_arguments<T, M> p) {
    namespace scan = rlhf::detail::gae_scan;
    using block_scan = cub::BlockScan<affine, row_threads, cub::BLOCK_SCAN_WARP_SCANS>;
    constexpr index_t chunk = static_cast<index_t>(row_threads) * row_items;
    __shared__ typename block_scan::TempStorage storage;
    __shared__ double boundary[2];  // m·V at the first position of the previous chunk, by parity

    const index_t row = blockIdx.x;
    const T* r = p.rewards + row * p.rewards_stride;
    const T* v = p.values + row * p.values_stride;
    const M* m = p.mask + row * p.mask_stride;
    T* adv = p.advantages + row * p.advantages_stride;
    T* ret = p.returns + row * p.returns_stride;
    const bool zero_masked = p.masking == gae_masking::zero_masked;
    running_map running{scan::constant(0.0, p.bootstrap != nullptr ? static_cast<double>(p.bootstrap[row]) : 0.0)};

    int parity = 0;
    for (index_t end = p.cols; end > 0; end -= chunk, parity ^= 1) {
        affine maps[row_items];
        double value[row_items];
        bool valid[row_items];
        // Every input of the chunk is read before the scan's barriers and every output written
        // after them, so outputs may be the inputs themselves (in place). The one input read
        // across chunks, m·V after the chunk, comes from `boundary`.
#pragma unroll
        for (int q = 0; q < row_items; ++q) {
            const index_t t = end - 1 - (static_cast<index_t>(threadIdx.x) * row_items + q);
            if (t < 0) {
                maps[q] = scan::identity();
                value[q] = 0.0;
                valid[q] = false;
                continue;
            }
            value[q] = static_cast<double>(v[t]);
            valid[q] = m[t] != M{0};
            double next_counted = 0.0;
            if (zero_masked && t + 1 < p.cols)
                next_counted =
                    t + 1 < end ? (m[t + 1] != M{0} ? static_cast<double>(v[t + 1]) : 0.0) : boundary[parity ^ 1];
            if (zero_masked && t == end - chunk) boundary[parity] = valid[q] ? value[q] : 0.0;
            maps[q] = scan::step(p.masking, valid[q], static_cast<double>(r[t]), value[q], next_counted, p.gamma,
                                 p.gamma_lambda);
        }
        block_scan(storage).InclusiveScan(maps, maps, scan::backward_op{}, running);
#pragma unroll
        for (int q = 0; q < row_items; ++q) {
            const index_t t = end - 1 - (static_cast<index_t>(threadIdx.x) * row_items + q);
            if (t < 0) continue;
            // maps[q] is constant (seeded with a constant map): its e is A_t.
            const scan::outputs out = scan::output(p.masking, valid[q], maps[q].e, value[q]);
            adv[t] = static_cast<T>(out.advantage);
            ret[t] = static_cast<T>(out.ret);
        }
        __syncthreads();  // the scan's storage is reused by the next chunk
    }
}

/// Raw pointers and row strides of `compute_gae_time_major`.
template <class T, class M>
struct time_major_arguments {
    const T* rewards;
    const T* values;
    const M* terminated;
    const M* truncated;
    const T* truncation_values;
    const T* next_values;
    T* advantages;
    T* returns;
    index_t rewards_stride, values_stride, terminated_stride, truncated_stride, truncation_values_stride,
        advantages_stride, returns_stride;
    index_t steps, envs;
    double gamma, gamma_lambda;
};

/// The map of step t of environment n.
template <class T, class M>
__device__ __forceinline__ affine time_major_map(const time_major_arguments<T, M>& p, index_t t, index_t n) {
    const double next_value = t + 1 < p.steps ? static_cast<double>(p.values[(t + 1) * p.values_stride + n])
                                              : static_cast<double>(p.next_values[n]);
    const bool terminated = p.terminated[t * p.terminated_stride + n] != M{0};
    const bool truncated = p.truncated[t * p.truncated_stride + n] != M{0};
    const double truncation_value =
        truncated ? static_cast<double>(p.truncation_values[t * p.truncation_values_stride + n]) : 0.0;
    return rlhf::detail::gae_scan::time_major_step(
        terminated, truncated, static_cast<double>(p.rewards[t * p.rewards_stride + n]),
        static_cast<double>(p.values[t * p.values_stride + n]), next_value, truncation_value, p.gamma, p.gamma_lambda);
}

/// Block `(blockDim.x environments, blockDim.y time slices)`: thread (x, y) owns environment
/// `blockIdx.x·blockDim.x + x` and the steps `[y·slice, (y+1)·slice)`. It composes its slice's
/// maps, the slices' maps are scanned from the last slice in shared memory (Hillis–Steele, log2
/// blockDim.y rounds), and it walks its slice again from the carried advantage, writing outputs.
template <class T, class M>
__global__ void __launch_bounds__(time_major_threads) time_major_kernel(time_major_arguments<T, M> p) {
    namespace scan = rlhf::detail::gae_scan;
    __shared__ double carry_of[time_major_threads], delta_of[time_major_threads];
    const int x = static_cast<int>(threadIdx.x), y = static_cast<int>(threadIdx.y);
    const int width = static_cast<int>(blockDim.x), slices = static_cast<int>(blockDim.y);
    const int self = y * width + x;
    const index_t n = static_cast<index_t>(blockIdx.x) * width + x;
    const bool active = n < p.envs;
    const index_t slice = (p.steps + slices - 1) / slices;
    const index_t begin = y * slice;
    const index_t end = begin + slice < p.steps ? begin + slice : p.steps;

    affine local = scan::identity();  // only a (carry) and e (δ) matter: b = d = f = 0 after a step
    if (active)
        for (index_t t = end; t-- > begin;) local = scan::compose(time_major_map(p, t, n), local);
    carry_of[self] = local.a;
    delta_of[self] = local.e;
    __syncthreads();
    // Inclusive scan from the last slice: slice y becomes its map composed with the maps after it.
    for (int offset = 1; offset < slices; offset *= 2) {
        double a = carry_of[self], e = delta_of[self];
        if (y + offset < slices) {
            const int other = self + offset * width;
            e = a * delta_of[other] + e;
            a = a * carry_of[other];
        }
        __syncthreads();
        carry_of[self] = a;
        delta_of[self] = e;
        __syncthreads();
    }
    if (!active) return;
    double advantage = y + 1 < slices ? delta_of[self + width] : 0.0;  // A at the step after the slice
    for (index_t t = end; t-- > begin;) {
        const affine map = time_major_map(p, t, n);
        advantage = map.e + map.a * advantage;
        const double value = static_cast<double>(p.values[t * p.values_stride + n]);
        p.advantages[t * p.advantages_stride + n] = static_cast<T>(advantage);
        p.returns[t * p.returns_stride + n] = static_cast<T>(advantage + value);
    }
}

template <class T, class M>
void launch_rows(std::string_view function, view<T> rewards, view<T> values, view<M> mask, const view<T, 1>* bootstrap,
                 mut_view<T> advantages, mut_view<T> returns, const gae_options& options, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::compute_gae: values must be float or double");
    check_same_shape(function, "values", values, "rewards", rewards);
    check_same_shape(function, "mask", mask, "rewards", rewards);
    check_same_shape(function, "advantages", advantages, "rewards", rewards);
    check_same_shape(function, "returns", returns, "rewards", rewards);
    check_same_or_disjoint(function, "advantages", advantages, "rewards", rewards);
    check_same_or_disjoint(function, "advantages", advantages, "values", values);
    check_same_or_disjoint(function, "returns", returns, "rewards", rewards);
    check_same_or_disjoint(function, "returns", returns, "values", values);
    check_disjoint(function, "returns", returns, "advantages", advantages);
    check_disjoint(function, "advantages", advantages, "mask", mask);
    check_disjoint(function, "returns", returns, "mask", mask);
    if (bootstrap != nullptr) {
        check_length(function, "bootstrap_values", bootstrap->extent(0), rewards.extent(0), "one per row of 'rewards'");
        check_disjoint(function, "advantages", advantages, "bootstrap_values", *bootstrap);
        check_disjoint(function, "returns", returns, "bootstrap_values", *bootstrap);
    }
    rlhf::detail::gae::check_discounts(function, options.gamma, options.lambda);
    switch (options.masking) {
        case gae_masking::zero_masked:
        case gae_masking::skip_masked:
        case gae_masking::valid_range:
            break;
        default:
            fail(error_kind::config, function, "masking", "one of 'zero_masked' 'skip_masked' 'valid_range'",
                 "an unknown value");
    }
    if (rewards.extent(0) > index_t{0x7fffffff})
        fail(error_kind::shape, function, "rewards", "at most 2^31 - 1 rows (one block per row)",
             std::to_string(rewards.extent(0)) + " rows");
    if (rewards.empty()) return;
    const row_arguments<T, M> p{rewards.data(),
                                values.data(),
                                mask.data(),
                                bootstrap != nullptr ? bootstrap->data() : nullptr,
                                advantages.data(),
                                returns.data(),
                                rewards.stride(0),
                                values.stride(0),
                                mask.stride(0),
                                advantages.stride(0),
                                returns.stride(0),
                                rewards.extent(1),
                                options.masking,
                                options.gamma,
                                options.gamma * options.lambda};
    row_kernel<T, M><<<static_cast<unsigned int>(rewards.extent(0)), row_threads, 0, stream>>>(p);
    check_launch(function);
}

/// Smallest power of two >= n (n >= 1), at most `limit`.
[[nodiscard]] constexpr int power_of_two_at_least(index_t n, int limit) noexcept {
    int p = 1;
    while (p < limit && p < n) p *= 2;
    return p;
}

}  // namespace detail::gae

/// `rlhf::compute_gae` on the device: token-level GAE over `[B, T]` rows of device memory
/// (`rewards`, `values`, `mask ∈ {0,1}`, any row strides), writing raw `advantages` and `returns`
/// `[B, T]`, V = 0 after each row. `A_t = δ_t + γλ·A_{t+1}`, `δ_t = r_t + γ·V_{t+1} − V_t`, masked
/// positions as `options.masking` says (see `gae_options`). Equals the CPU kernel (same options)
/// to the rounding of one cast to T. Outputs may be exactly `rewards` or `values` (in place).
/// Asynchronous on `stream`; shapes, options and overlaps are checked (`rlhf::error`), values
/// are not (see the file comment).
template <class T, class M>
void compute_gae(view<T> rewards, view<T> values, view<M> mask, mut_view<T> advantages, mut_view<T> returns,
                 const gae_options& options, cudaStream_t stream) {
    detail::gae::launch_rows<T, M>("rlhf::cuda::compute_gae", rewards, values, mask, nullptr, advantages, returns,
                                   options, stream);
}

/// `rlhf::compute_gae` with `bootstrap_values` `[B]` (device memory): V after each row's last
/// valid position, entering as γ·bootstrap in that position's δ under every masking.
template <class T, class M>
void compute_gae(view<T> rewards, view<T> values, view<M> mask, view<T, 1> bootstrap_values, mut_view<T> advantages,
                 mut_view<T> returns, const gae_options& options, cudaStream_t stream) {
    detail::gae::launch_rows<T, M>("rlhf::cuda::compute_gae", rewards, values, mask, &bootstrap_values, advantages,
                                   returns, options, stream);
}

/// `rlhf::compute_gae_time_major` on the device: `[T, N]` rollouts (device memory, any row
/// strides) with `terminated`/`truncated` flags (`∈ {0,1}`), `truncation_values` `[T, N]` and
/// `next_values` `[N]`:
/// `δ_t = r_t + γ·[(1−term)·((1−trunc)·V_{t+1} + trunc·V^final_{t+1})] − V_t`,
/// `A_t = δ_t + γλ·(1−term)·(1−trunc)·A_{t+1}`, `returns = A + V`. Outputs may be exactly
/// `rewards`; no other overlap. Asynchronous on `stream`; values are not checked.
template <class T, class M>
void compute_gae_time_major(view<T> rewards, view<T> values, view<M> terminated, view<M> truncated,
                            view<T> truncation_values, view<T, 1> next_values, mut_view<T> advantages,
                            mut_view<T> returns, const time_major_gae_options& options, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::compute_gae_time_major: values must be float or double");
    constexpr std::string_view function = "rlhf::cuda::compute_gae_time_major";
    rlhf::detail::gae::check_time_major_call(function, rewards, values, terminated, truncated, truncation_values,
                                             next_values, advantages, returns, options);
    if (rewards.empty()) return;
    const index_t steps = rewards.extent(0), envs = rewards.extent(1);
    // As many adjacent environments as there are (up to a warp) for coalesced reads, the rest of
    // the block's threads across time.
    const int width = detail::gae::power_of_two_at_least(envs, 32);
    const int slices = detail::gae::power_of_two_at_least(steps, detail::gae::time_major_threads / width);
    const detail::gae::time_major_arguments<T, M> p{rewards.data(),
                                                    values.data(),
                                                    terminated.data(),
                                                    truncated.data(),
                                                    truncation_values.data(),
                                                    next_values.data(),
                                                    advantages.data(),
                                                    returns.data(),
                                                    rewards.stride(0),
                                                    values.stride(0),
                                                    terminated.stride(0),
                                                    truncated.stride(0),
                                                    truncation_values.stride(0),
                                                    advantages.stride(0),
                                                    returns.stride(0),
                                                    steps,
                                                    envs,
                                                    options.gamma,
                                                    options.gamma * options.lambda};
    const dim3 block(static_cast<unsigned int>(width), static_cast<unsigned int>(slices));
    detail::gae::time_major_kernel<T, M><<<blocks_for(envs, width), block, 0, stream>>>(p);
    check_launch(function);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda
