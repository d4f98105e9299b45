#pragma once
/// @file
/// Critic-free advantage estimators on the device: GRPO (every `grpo_options`), Dr.GRPO, RLOO and
/// OPO (token-level `[B, T]` and per-sequence `[B]`), reverse discounted returns, REINFORCE++,
/// REINFORCE++-baseline (both broadcasts) and ReMax, with the CPU's formulas
/// (`rlhf/kernels/outcome_advantages.hpp`: `singleton_advantage`, `coefficients_of_group`,
/// `group_advantage`, host-device) and the return recursion as a scan of the affine maps of
/// `rlhf/cuda/return_scan.hpp` (checked against the CPU kernel by CPU tests).
///
/// Group ids: the CPU takes arbitrary int64 ids (it sorts the rows by id, stably). Without a host
/// read the device cannot size a table of arbitrary ids, so here **the caller passes the number of
/// groups G and every id must lie in [0, G)** (the index of the prompt in its batch, say; ids held
/// on the host map to [0, G) with `rlhf::cuda::dense_group_ids`, `rlhf/cuda/group_ids.hpp`). G is
/// checked on the host (`groups`: `rlhf::error`, kind value, when B > 0 and G < 1 or G > 2^31 − 1);
/// the ids themselves are not (a device read): a row whose id lies outside [0, G) gets NaN
/// advantages (for REINFORCE++-baseline the NaN reaches the batch whitening, so every output),
/// never a write out of bounds. An id in range that no row uses is an empty group: nothing happens.
///
/// Layout, group estimators: (1) one block of 256 threads per row adds the row's rewards (all
/// positions, masked ones included, as the CPU) and valid tokens into the workspace; (2) one block
/// per group walks the B ids (each thread a strided subset, block sums in double: deterministic,
/// no atomics) for the group's count, sum, Σ len·s and Σ len, then Σ (s − mean)² about the mean,
/// and writes each member's advantage value; (3) an elementwise kernel writes `value·mask`. Step (2)
/// reads B ids per group, O(G·B) reads (4096 rows in 512 groups: 2M cached reads, negligible next
/// to the `[B, T]` passes). Returns: one block of 256 threads per row scans the row from its end in
/// chunks of 1024 positions (4 per thread) with CUB's `BlockScan`, the running map carried from
/// chunk to chunk (as `rlhf::cuda::compute_gae`). Whitening: `rlhf::cuda::masked_whiten`
/// (`masked_stats.cuh`), whose statistics are this device's (no reducer).
///
/// Scratch: each function takes `void* workspace` (device memory, 8-byte aligned) of the bytes its
/// `*_workspace_bytes` function gives; its contents need no initialisation and are clobbered.
///
/// Launches on `stream`, never synchronises, allocates nothing. Shapes, options and overlaps are
/// checked on the host (the CPU's option checks); values are not (no device read): non-finite
/// rewards propagate, a mask entry other than 0 counts as valid (1), and what needs a host read is
/// refused with `rlhf::error` (kind config): `singleton_group_policy::raise` (argument `singleton`)
/// and `small_sample_policy::raise` in a whitening (argument `small_sample`; the CPU default of
/// REINFORCE++: pass `zero_variance` or `skip`).

#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/cuda/group_ids.hpp"
#include "rlhf/cuda/masked_stats.cuh"
#include "rlhf/cuda/return_scan.hpp"
#include "rlhf/cuda/support.cuh"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/options/outcome_advantages.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda {

namespace detail::outcome {

using rlhf::detail::group_rule;
using rlhf::detail::group_rule_kind;

inline constexpr int threads = 256;
inline constexpr int scan_items = 4;
inline constexpr unsigned int max_elementwise_blocks = 4096;

/// Doubles of the per-row scratch of the group estimators: score, valid length, advantage value.
[[nodiscard]] constexpr std::size_t group_doubles(index_t rows) noexcept {
    return 3 * static_cast<std::size_t>(rows);
}

/// Doubles of a whitening's statistics (`[S, 4]`, S = B covers both scopes).
[[nodiscard]] constexpr std::size_t moments_doubles(index_t rows) noexcept {
    return 4 * static_cast<std::size_t>(rows > 0 ? rows : 1);
}

inline void check_workspace(std::string_view function, const void* workspace, std::string_view bytes_function) {
    if (workspace == nullptr || reinterpret_cast<std::uintptr_t>(workspace) % alignof(double) != 0)
        fail(error_kind::value, function, "workspace",
             "device memory of " + std::string(bytes_function) + " bytes, 8-byte aligned",
             workspace == nullptr ? "null" : "a misaligned pointer");
}

inline void check_groups(std::string_view function, index_t rows, index_t groups) {
    if (rows > 0 && (groups < 1 || groups > index_t{0x7fffffff}))
        fail(error_kind::value, function, "groups", "the number of groups G, 1 to 2^31 - 1 (ids in [0, G))",
             std::to_string(groups));
}

inline void check_rows(std::string_view function, std::string_view argument, index_t rows) {
    if (rows > index_t{0x7fffffff})
        fail(error_kind::shape, function, argument, "at most 2^31 - 1 rows (one block per row)",
             std::to_string(rows) + " rows");
}

/// The CPU's refusal of unknown enum values, then the device's of `raise`.
inline void check_rule(std::string_view function, const group_rule& rule) {
    if (rule.singleton != singleton_group_policy::raw_score && rule.singleton != singleton_group_policy::zero &&
        rule.singleton != singleton_group_policy::raise)
        fail(error_kind::config, function, "singleton", "one of 'raw_score' 'zero' 'raise'", "an unknown value");
    if (rule.std_estimator != variance_estimator::unbiased && rule.std_estimator != variance_estimator::biased)
        fail(error_kind::config, function, "std_estimator", "one of 'unbiased' 'biased'", "an unknown value");
    if (rule.singleton == singleton_group_policy::raise)
        fail(error_kind::config, function, "singleton",
             "'raw_score' or 'zero' (raising on a singleton group needs a device-to-host read)", "'raise'");
}

/// Scratch of a group estimator: per row its score, valid length and advantage value.
struct group_scratch {
    double* score;
    double* length;
    double* value;
};

[[nodiscard]] inline group_scratch scratch_of(void* workspace, index_t rows) noexcept {
    auto* base = static_cast<double*>(workspace);
    return {base, base + rows, base + 2 * rows};
}

/// One block per row: `score = Σ_t r[b, t]` (every position), `length = Σ_t (m[b, t] != 0)`, and
/// the value NaN until its group writes it (a row with an id outside [0, G) keeps it).
template <class T, class M>
__global__ void __launch_bounds__(threads) row_sums_kernel(const T* rewards, index_t rewards_stride, const M* mask,
                                                           index_t mask_stride, index_t cols, group_scratch s) {
    const index_t b = blockIdx.x;
    const T* r = rewards + b * rewards_stride;
    const M* m = mask + b * mask_stride;
    double sum = 0.0, length = 0.0;
    for (index_t t = threadIdx.x; t < cols; t += threads) {
        sum += static_cast<double>(r[t]);
        length += m[t] != M{0} ? 1.0 : 0.0;
    }
    sum = block_sum<threads>(sum);
    length = block_sum<threads>(length);
    if (threadIdx.x == 0) {
        s.score[b] = sum;
        s.length[b] = length;
        s.value[b] = std::numeric_limits<double>::quiet_NaN();
    }
}

/// `[B]` scores into the scratch (length 0: unused).
template <class T>
__global__ void __launch_bounds__(threads) load_scores_kernel(const T* scores, index_t rows, group_scratch s) {
    for (index_t i = static_cast<index_t>(blockIdx.x) * threads + threadIdx.x; i < rows;
         i += static_cast<index_t>(gridDim.x) * threads) {
        s.score[i] = static_cast<double>(scores[i]);
        s.length[i] = 0.0;
        s.value[i] = std::numeric_limits<double>::quiet_NaN();
    }
}

/// One block per group g: its count, sum (and Σ len·s, Σ len for OPO), mean, Σ (s − mean)² (GRPO
/// with std normalisation), the coefficients, then each member's value. (A template, so that the
/// header can be in several translation units: `Threads` is always `threads`.)
template <int Threads>
__global__ void __launch_bounds__(Threads)
    group_kernel(const std::int64_t* ids, index_t rows, group_scratch s, group_rule rule) {
    static_assert(Threads == threads);
    namespace cpu = rlhf::detail;
    __shared__ double shared_count, shared_mean;
    const auto g = static_cast<std::int64_t>(blockIdx.x);
    const bool opo = rule.kind == group_rule_kind::opo;
    double count = 0.0, sum = 0.0, weighted = 0.0, total = 0.0;
    for (index_t i = threadIdx.x; i < rows; i += threads) {
        if (ids[i] != g) continue;
        count += 1.0;
        sum += s.score[i];
        if (opo) {
            weighted += s.length[i] * s.score[i];
            total += s.length[i];
        }
    }
    count = block_sum<threads>(count);
    sum = block_sum<threads>(sum);
    if (opo) {
        weighted = block_sum<threads>(weighted);
        total = block_sum<threads>(total);
    }
    if (threadIdx.x == 0) {
        shared_count = count;
        shared_mean = count > 0.0 ? sum / count : 0.0;
    }
    __syncthreads();
    const double n = shared_count, mean = shared_mean;
    if (n == 0.0) return;  // no row has this id
    if (n == 1.0) {
        for (index_t i = threadIdx.x; i < rows; i += threads)
            if (ids[i] == g) s.value[i] = cpu::singleton_advantage(rule, s.score[i]);
        return;
    }
    double squares = 0.0;
    if (rule.kind == group_rule_kind::grpo && rule.normalize_by_std) {
        for (index_t i = threadIdx.x; i < rows; i += threads) {
            if (ids[i] != g) continue;
            const double centred = s.score[i] - mean;
            squares += centred * centred;
        }
        squares = block_sum<threads>(squares);
    }
    __shared__ cpu::group_coefficients shared_c;
    if (threadIdx.x == 0) shared_c = cpu::coefficients_of_group(rule, n, mean, squares, weighted, total);
    __syncthreads();
    const cpu::group_coefficients c = shared_c;
    for (index_t i = threadIdx.x; i < rows; i += threads)
        if (ids[i] == g) s.value[i] = cpu::group_advantage(c, s.score[i]);
}

/// `out[b, t] = m[b, t] != 0 ? T(value[b]) : 0` over the batch.
template <class T, class M>
__global__ void __launch_bounds__(threads) broadcast_kernel(const double* value, const M* mask, index_t mask_stride,
                                                            T* out, index_t out_stride, index_t rows, index_t cols) {
    const index_t n = rows * cols;
    for (index_t i = static_cast<index_t>(blockIdx.x) * threads + threadIdx.x; i < n;
         i += static_cast<index_t>(gridDim.x) * threads) {
        const index_t b = i / cols, t = i - b * cols;
        out[b * out_stride + t] = mask[b * mask_stride + t] != M{0} ? static_cast<T>(value[b]) : T{0};
    }
}

/// `advantages[i] = T(value[i])`.
template <class T>
__global__ void __launch_bounds__(threads) store_values_kernel(const double* value, index_t rows, T* advantages) {
    for (index_t i = static_cast<index_t>(blockIdx.x) * threads + threadIdx.x; i < rows;
         i += static_cast<index_t>(gridDim.x) * threads)
        advantages[i] = static_cast<T>(value[i]);
}

[[nodiscard]] inline unsigned int elementwise_blocks(index_t n) noexcept {
    const unsigned int blocks = blocks_for(n, threads);
    return blocks < max_elementwise_blocks ? blocks : max_elementwise_blocks;
}

/// Steps (1) and (2) of a `[B, T]` group estimator: the advantage value of every row in `s.value`.
template <class T, class M>
void launch_group_values(std::string_view function, view<T> rewards, view<M> mask, view<std::int64_t, 1> ids,
                         index_t groups, group_scratch s, const group_rule& rule, cudaStream_t stream) {
    row_sums_kernel<T, M><<<static_cast<unsigned int>(rewards.extent(0)), threads, 0, stream>>>(
        rewards.data(), rewards.stride(0), mask.data(), mask.stride(0), rewards.extent(1), s);
    check_launch(function);
    group_kernel<threads>
        <<<static_cast<unsigned int>(groups), threads, 0, stream>>>(ids.data(), rewards.extent(0), s, rule);
    check_launch(function);
}

/// The checks of a `[B, T]` group estimator (the CPU's, without value checks) and its launches.
template <class T, class M>
void group_token_advantages(std::string_view function, std::string_view bytes_function, view<T> token_rewards,
                            view<M> mask, view<std::int64_t, 1> group_ids, index_t groups, mut_view<T> advantages,
                            void* workspace, const group_rule& rule, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda outcome advantages: T must be float or double");
    check_rule(function, rule);
    check_same_shape(function, "mask", mask, "token_rewards", token_rewards);
    check_length(function, "group_ids", group_ids.extent(0), token_rewards.extent(0), "one per row of 'token_rewards'");
    check_same_shape(function, "advantages", advantages, "token_rewards", token_rewards);
    check_same_or_disjoint(function, "advantages", advantages, "token_rewards", token_rewards);
    check_disjoint(function, "advantages", advantages, "mask", mask);
    check_disjoint(function, "advantages", advantages, "group_ids", group_ids);
    check_groups(function, token_rewards.extent(0), groups);
    check_rows(function, "token_rewards", token_rewards.extent(0));
    check_workspace(function, workspace, bytes_function);
    if (token_rewards.extent(0) == 0) return;
    const group_scratch s = scratch_of(workspace, token_rewards.extent(0));
    launch_group_values(function, token_rewards, mask, group_ids, groups, s, rule, stream);
    if (token_rewards.extent(1) == 0) return;
    broadcast_kernel<T, M><<<elementwise_blocks(token_rewards.size()), threads, 0, stream>>>(
        s.value, mask.data(), mask.stride(0), advantages.data(), advantages.stride(0), token_rewards.extent(0),
        token_rewards.extent(1));
    check_launch(function);
}

/// The checks of a `[B]` group estimator and its launches.
template <class T>
void group_score_advantages(std::string_view function, std::string_view bytes_function, view<T, 1> scores,
                            view<std::int64_t, 1> group_ids, index_t groups, mut_view<T, 1> advantages, void* workspace,
                            const group_rule& rule, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda outcome advantages: T must be float or double");
    check_rule(function, rule);
    check_length(function, "group_ids", group_ids.extent(0), scores.extent(0), "one per element of 'scores'");
    check_same_shape(function, "advantages", advantages, "scores", scores);
    check_same_or_disjoint(function, "advantages", advantages, "scores", scores);
    check_disjoint(function, "advantages", advantages, "group_ids", group_ids);
    check_groups(function, scores.extent(0), groups);
    check_workspace(function, workspace, bytes_function);
    const index_t rows = scores.extent(0);
    if (rows == 0) return;
    const group_scratch s = scratch_of(workspace, rows);
    load_scores_kernel<T><<<elementwise_blocks(rows), threads, 0, stream>>>(scores.data(), rows, s);
    check_launch(function);
    group_kernel<threads><<<static_cast<unsigned int>(groups), threads, 0, stream>>>(group_ids.data(), rows, s, rule);
    check_launch(function);
    store_values_kernel<T><<<elementwise_blocks(rows), threads, 0, stream>>>(s.value, rows, advantages.data());
    check_launch(function);
}

/// What the row scan writes besides the returns.
enum class scan_mode {
    returns,              ///< returns only
    remax,                ///< advantages = returns − baseline·m (baseline: `reward_baselines[b]`)
    baseline_cumulative,  ///< returns −= baseline at t <= last valid (baseline: score − value)
};

template <class T, class M>
struct scan_arguments {
    const T* rewards;
    const M* mask;
    T* returns;
    T* advantages;  ///< remax only
    index_t rewards_stride, mask_stride, returns_stride, advantages_stride;
    index_t cols;
    return_masking masking;
    double gamma;
    scan_mode mode;
    const T* reward_baselines;  ///< remax
    group_scratch scratch;      ///< baseline_cumulative: baseline = score − value
};

/// The running map of a row, handed to `BlockScan` as its prefix (see `rlhf::cuda::compute_gae`).
struct running_map {
    rlhf::detail::return_scan::affine total;
    __device__ rlhf::detail::return_scan::affine operator()(const rlhf::detail::return_scan::affine& chunk) {
        const rlhf::detail::return_scan::affine before = total;
        total = rlhf::detail::return_scan::compose(chunk, total);
        return before;
    }
};

struct max_op {
    [[nodiscard]] __device__ __forceinline__ index_t operator()(index_t a, index_t b) const { return a < b ? b : a; }
};

/// One block per row: chunks of `threads · scan_items` positions from the row's end; item j of a
/// chunk ending at `end` is position `end − 1 − j`, thread i holding j = i·scan_items + q. The
/// exclusive scan gives each position the running return after it. Every input of a chunk is read
/// before the scan's barriers and every output written after them, so the returns (or, for ReMax,
/// the advantages) may be the rewards themselves.
template <class T, class M>
__global__ void __launch_bounds__(threads) returns_kernel(scan_arguments<T, M> p) {
    namespace scan = rlhf::detail::return_scan;
    using block_scan = cub::BlockScan<scan::affine, threads, cub::BLOCK_SCAN_WARP_SCANS>;
    using reduce = cub::BlockReduce<index_t, threads>;
    constexpr index_t chunk = static_cast<index_t>(threads) * scan_items;
    __shared__ typename block_scan::TempStorage storage;
    __shared__ typename reduce::TempStorage reduce_storage;
    __shared__ index_t shared_last;

    const index_t row = blockIdx.x;
    const T* r = p.rewards + row * p.rewards_stride;
    const M* m = p.mask + row * p.mask_stride;
    T* ret = p.returns + row * p.returns_stride;
    T* adv = p.advantages != nullptr ? p.advantages + row * p.advantages_stride : nullptr;
    double baseline = 0.0;
    index_t last = -1;
    if (p.mode == scan_mode::remax) baseline = static_cast<double>(p.reward_baselines[row]);
    if (p.mode == scan_mode::baseline_cumulative) {
        baseline = p.scratch.score[row] - p.scratch.value[row];  // b_g, or the singleton policy's baseline
        for (index_t t = threadIdx.x; t < p.cols; t += threads) last = m[t] != M{0} ? t : last;
        last = reduce(reduce_storage).Reduce(last, max_op{});
        if (threadIdx.x == 0) shared_last = last;
        __syncthreads();
        last = shared_last;
    }
    running_map running{scan::constant(0.0)};
    for (index_t end = p.cols; end > 0; end -= chunk) {
        scan::affine maps[scan_items];
        scan::step_maps steps[scan_items];
        bool valid[scan_items];
#pragma unroll
        for (int q = 0; q < scan_items; ++q) {
            const index_t t = end - 1 - (static_cast<index_t>(threadIdx.x) * scan_items + q);
            if (t < 0) {
                maps[q] = scan::identity();
                steps[q] = {scan::identity(), 0.0, 0.0};
                valid[q] = false;
                continue;
            }
            valid[q] = m[t] != M{0};
            steps[q] = scan::step(p.masking, valid[q], static_cast<double>(r[t]), p.gamma);
            maps[q] = steps[q].running;
        }
        block_scan(storage).ExclusiveScan(maps, maps, scan::backward_op{}, running);
#pragma unroll
        for (int q = 0; q < scan_items; ++q) {
            const index_t t = end - 1 - (static_cast<index_t>(threadIdx.x) * scan_items + q);
            if (t < 0) continue;
            // maps[q] is constant (the prefix is seeded with a constant map): its e is R_{t+1}.
            const double g = scan::output(steps[q], maps[q].e);
            switch (p.mode) {
                case scan_mode::returns:
                    ret[t] = static_cast<T>(g);
                    break;
                case scan_mode::remax:
                    ret[t] = static_cast<T>(g);
                    adv[t] = static_cast<T>(g - (valid[q] ? baseline : 0.0));
                    break;
                case scan_mode::baseline_cumulative:
                    ret[t] = static_cast<T>(t <= last ? g - baseline : g);
                    break;
            }
        }
        __syncthreads();  // the scan's storage is reused by the next chunk
    }
}

template <class T, class M>
void launch_returns(std::string_view function, const scan_arguments<T, M>& p, index_t rows, cudaStream_t stream) {
    if (rows == 0 || p.cols == 0) return;
    returns_kernel<T, M><<<static_cast<unsigned int>(rows), threads, 0, stream>>>(p);
    check_launch(function);
}

template <class T, class M>
scan_arguments<T, M> scan_of(view<T> rewards, view<M> mask, mut_view<T> returns, return_masking masking,
                             double gamma) noexcept {
    return {rewards.data(),
            mask.data(),
            returns.data(),
            nullptr,
            rewards.stride(0),
            mask.stride(0),
            returns.stride(0),
            0,
            rewards.extent(1),
            masking,
            gamma,
            scan_mode::returns,
            nullptr,
            {nullptr, nullptr, nullptr}};
}

/// The device's refusal of a whitening that would raise.
inline void check_whitening(std::string_view function, const whiten_options& options) {
    rlhf::detail::stats::check_whiten_options(function, options);
    detail::stats::check_device_policy(function, options.small_sample);
}

/// The statistics view of a whitening over `rows` rows, at the start of `moments`.
[[nodiscard]] inline mut_view<double> moments_view(double* moments, index_t rows, const whiten_options& options) {
    return {moments, {options.scope == whiten_scope::per_row ? rows : 1, moments_slots}};
}

[[nodiscard]] inline group_rule grpo_rule(const grpo_options& o) noexcept {
    return {group_rule_kind::grpo, o.normalize_by_std, o.epsilon, o.std_estimator, o.singleton};
}

/// The rule of Dr.GRPO, RLOO, OPO and the REINFORCE++ baseline (`kind`), as the CPU's.
[[nodiscard]] inline group_rule plain_rule(group_rule_kind kind, singleton_group_policy singleton) noexcept {
    return {kind, false, 0.0, variance_estimator::unbiased, singleton};
}

}  // namespace detail::outcome

/// Bytes of the workspace of the group estimators (GRPO, Dr.GRPO, RLOO, OPO, `[B, T]` and `[B]`)
/// over B rows: three doubles per row.
[[nodiscard]] constexpr std::size_t group_advantages_workspace_bytes(index_t rows) noexcept {
    return detail::outcome::group_doubles(rows) * sizeof(double);
}

/// Bytes of the workspace of `compute_reinforce_plus_plus_advantages` over `[B, T]`: the
/// whitening's statistics (4·max(B, 1) doubles) and `masked_stats_workspace_bytes(B, T)`.
[[nodiscard]] constexpr std::size_t reinforce_plus_plus_workspace_bytes(index_t rows, index_t cols) noexcept {
    return detail::outcome::moments_doubles(rows) * sizeof(double) + masked_stats_workspace_bytes(rows, cols);
}

/// Bytes of the workspace of `compute_reinforce_plus_plus_baseline_advantages` over `[B, T]`: the
/// group scratch, the whitening's statistics and `masked_stats_workspace_bytes(B, T)`.
[[nodiscard]] constexpr std::size_t reinforce_plus_plus_baseline_workspace_bytes(index_t rows, index_t cols) noexcept {
    return group_advantages_workspace_bytes(rows) + reinforce_plus_plus_workspace_bytes(rows, cols);
}

/// `rlhf::compute_grpo_advantages` on the device: `A[i, t] = (s_i − mean_g) / (std_g + ε) · m[i, t]`
/// (or `s_i − mean_g` without std normalisation), `s_i = Σ_t token_rewards[i, t]`; `[B, T]`
/// rewards, mask, advantages (device memory, any row strides; `advantages` may be `token_rewards`),
/// `[B]` group ids in [0, `groups`) (see the file comment). Singletons: `raw_score` or `zero`
/// (`raise` refused). `workspace`: `group_advantages_workspace_bytes(B)` bytes. Equals the CPU
/// kernel to the rounding of the sums (the group sums add in a different order).
template <class T, class M>
void compute_grpo_advantages(view<T> token_rewards, view<M> mask, view<std::int64_t, 1> group_ids, index_t groups,
                             mut_view<T> advantages, void* workspace, const grpo_options& options,
                             cudaStream_t stream) {
    constexpr std::string_view function = "rlhf::cuda::compute_grpo_advantages";
    rlhf::detail::check_grpo_options(function, options);
    detail::outcome::group_token_advantages(function, "group_advantages_workspace_bytes(B)", token_rewards, mask,
                                            group_ids, groups, advantages, workspace,
                                            detail::outcome::grpo_rule(options), stream);
}

/// `rlhf::compute_grpo_advantages` of per-sequence scores on the device: `A_i = (s_i − mean_g) /
/// (std_g + ε)`, all `[B]` (`advantages` may be `scores`); ids in [0, `groups`);
/// `workspace`: `group_advantages_workspace_bytes(B)` bytes.
template <class T>
void compute_grpo_advantages(view<T, 1> scores, view<std::int64_t, 1> group_ids, index_t groups,
                             mut_view<T, 1> advantages, void* workspace, const grpo_options& options,
                             cudaStream_t stream) {
    constexpr std::string_view function = "rlhf::cuda::compute_grpo_advantages";
    rlhf::detail::check_grpo_options(function, options);
    detail::outcome::group_score_advantages(function, "group_advantages_workspace_bytes(B)", scores, group_ids, groups,
                                            advantages, workspace, detail::outcome::grpo_rule(options), stream);
}

/// `rlhf::compute_dr_grpo_advantages` on the device: `A[i, t] = (s_i − mean_g) · m[i, t]`; as
/// `compute_grpo_advantages` otherwise.
template <class T, class M>
void compute_dr_grpo_advantages(view<T> token_rewards, view<M> mask, view<std::int64_t, 1> group_ids, index_t groups,
                                mut_view<T> advantages, void* workspace, const dr_grpo_options& options,
                                cudaStream_t stream) {
    detail::outcome::group_token_advantages(
        "rlhf::cuda::compute_dr_grpo_advantages", "group_advantages_workspace_bytes(B)", token_rewards, mask, group_ids,
        groups, advantages, workspace,
        detail::outcome::plain_rule(rlhf::detail::group_rule_kind::mean, options.singleton), stream);
}

/// `rlhf::compute_dr_grpo_advantages` of per-sequence scores on the device: `A_i = s_i − mean_g`, `[B]`.
template <class T>
void compute_dr_grpo_advantages(view<T, 1> scores, view<std::int64_t, 1> group_ids, index_t groups,
                                mut_view<T, 1> advantages, void* workspace, const dr_grpo_options& options,
                                cudaStream_t stream) {
    detail::outcome::group_score_advantages(
        "rlhf::cuda::compute_dr_grpo_advantages", "group_advantages_workspace_bytes(B)", scores, group_ids, groups,
        advantages, workspace, detail::outcome::plain_rule(rlhf::detail::group_rule_kind::mean, options.singleton),
        stream);
}

/// `rlhf::compute_rloo_advantages` on the device: `A[i, t] = (s_i − mean_g)·n/(n − 1) · m[i, t]`
/// (the score minus the mean of the other rows); as `compute_grpo_advantages` otherwise.
template <class T, class M>
void compute_rloo_advantages(view<T> token_rewards, view<M> mask, view<std::int64_t, 1> group_ids, index_t groups,
                             mut_view<T> advantages, void* workspace, const rloo_options& options,
                             cudaStream_t stream) {
    detail::outcome::group_token_advantages(
        "rlhf::cuda::compute_rloo_advantages", "group_advantages_workspace_bytes(B)", token_rewards, mask, group_ids,
        groups, advantages, workspace,
        detail::outcome::plain_rule(rlhf::detail::group_rule_kind::rloo, options.singleton), stream);
}

/// `rlhf::compute_rloo_advantages` of per-sequence scores on the device, `[B]`.
template <class T>
void compute_rloo_advantages(view<T, 1> scores, view<std::int64_t, 1> group_ids, index_t groups,
                             mut_view<T, 1> advantages, void* workspace, const rloo_options& options,
                             cudaStream_t stream) {
    detail::outcome::group_score_advantages(
        "rlhf::cuda::compute_rloo_advantages", "group_advantages_workspace_bytes(B)", scores, group_ids, groups,
        advantages, workspace, detail::outcome::plain_rule(rlhf::detail::group_rule_kind::rloo, options.singleton),
        stream);
}

/// `rlhf::compute_opo_advantages` on the device: `A[i, t] = (s_i − Σ_g len·s / Σ_g len) · m[i, t]`,
/// `len_i` the row's valid tokens; as `compute_grpo_advantages` otherwise.
template <class T, class M>
void compute_opo_advantages(view<T> token_rewards, view<M> mask, view<std::int64_t, 1> group_ids, index_t groups,
                            mut_view<T> advantages, void* workspace, const opo_options& options, cudaStream_t stream) {
    detail::outcome::group_token_advantages(
        "rlhf::cuda::compute_opo_advantages", "group_advantages_workspace_bytes(B)", token_rewards, mask, group_ids,
        groups, advantages, workspace,
        detail::outcome::plain_rule(rlhf::detail::group_rule_kind::opo, options.singleton), stream);
}

/// `rlhf::compute_cumulative_returns` on the device: `G_t = r_t + γ·G_{t+1}` per row, mask-0
/// positions as `options.masking` says; `[B, T]` (any row strides), accumulated in double, one
/// block per row (see the file comment). `returns` may be `rewards`. No workspace.
template <class T, class M>
void compute_cumulative_returns(view<T> rewards, view<M> mask, mut_view<T> returns,
                                const cumulative_return_options& options, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::compute_cumulative_returns: T must be float or double");
    constexpr std::string_view function = "rlhf::cuda::compute_cumulative_returns";
    check_in_range(function, "gamma", options.gamma, 0.0, 1.0);
    rlhf::detail::check_return_masking(function, options.masking);
    check_same_shape(function, "mask", mask, "rewards", rewards);
    check_same_shape(function, "returns", returns, "rewards", rewards);
    check_same_or_disjoint(function, "returns", returns, "rewards", rewards);
    check_disjoint(function, "returns", returns, "mask", mask);
    detail::outcome::check_rows(function, "rewards", rewards.extent(0));
    detail::outcome::launch_returns(function,
                                    detail::outcome::scan_of(rewards, mask, returns, options.masking, options.gamma),
                                    rewards.extent(0), stream);
}

/// `rlhf::compute_reinforce_plus_plus_advantages` on the device: `returns` G as
/// `compute_cumulative_returns`, then `advantages = masked_whiten(G, mask, options.whiten)`
/// (`rlhf::cuda::masked_whiten`: this device's statistics, no reducer; `small_sample` must be
/// `zero_variance` or `skip`, the default `raise` is refused). `[B, T]` everything, `advantages`
/// and `returns` distinct (`returns` may be `token_rewards`). `workspace`:
/// `reinforce_plus_plus_workspace_bytes(B, T)` bytes; the whitening's statistics are left at its
/// start (`[S, 4]` doubles: S = 1, or B per row).
template <class T, class M>
void compute_reinforce_plus_plus_advantages(view<T> token_rewards, view<M> mask, mut_view<T> advantages,
                                            mut_view<T> returns, void* workspace,
                                            const reinforce_plus_plus_options& options, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>,
                  "rlhf::cuda::compute_reinforce_plus_plus_advantages: T must be float or double");
    constexpr std::string_view function = "rlhf::cuda::compute_reinforce_plus_plus_advantages";
    check_in_range(function, "gamma", options.gamma, 0.0, 1.0);
    rlhf::detail::check_return_masking(function, options.masking);
    detail::outcome::check_whitening(function, options.whiten);
    check_same_shape(function, "mask", mask, "token_rewards", token_rewards);
    check_same_shape(function, "advantages", advantages, "token_rewards", token_rewards);
    check_same_shape(function, "returns", returns, "token_rewards", token_rewards);
    check_same_or_disjoint(function, "returns", returns, "token_rewards", token_rewards);
    check_same_or_disjoint(function, "advantages", advantages, "token_rewards", token_rewards);
    check_disjoint(function, "advantages", advantages, "returns", returns);
    check_disjoint(function, "advantages", advantages, "mask", mask);
    check_disjoint(function, "returns", returns, "mask", mask);
    detail::outcome::check_rows(function, "token_rewards", token_rewards.extent(0));
    detail::outcome::check_workspace(function, workspace, "reinforce_plus_plus_workspace_bytes(B, T)");
    const index_t rows = token_rewards.extent(0);
    detail::outcome::launch_returns(
        function, detail::outcome::scan_of(token_rewards, mask, returns, options.masking, options.gamma), rows, stream);
    auto* moments = static_cast<double*>(workspace);
    masked_whiten(view<T>(returns), mask, advantages, detail::outcome::moments_view(moments, rows, options.whiten),
                  moments + detail::outcome::moments_doubles(rows), options.whiten, stream);
}

/// `rlhf::compute_reinforce_plus_plus_baseline_advantages` on the device: `b_g` = group mean of the
/// scores (singletons: `raw_score` or `zero`; `raise` refused), spread by `options.broadcast`
/// (`tiled_score`: `(s − b_g)·m`; `cumulative_returns`: reward-to-go of `r·m` minus `b_g` up to the
/// row's last valid token), then `rlhf::cuda::masked_whiten` (`small_sample` `zero_variance` or
/// `skip`). `returns` gets the values before whitening for `cumulative_returns` and the advantages
/// for `tiled_score`, as on the CPU. `[B, T]` rewards, mask, outputs (`advantages`, `returns`
/// distinct; either may be `token_rewards`); ids in [0, `groups`); `workspace`:
/// `reinforce_plus_plus_baseline_workspace_bytes(B, T)` bytes.
template <class T, class M>
void compute_reinforce_plus_plus_baseline_advantages(view<T> token_rewards, view<M> mask,
                                                     view<std::int64_t, 1> group_ids, index_t groups,
                                                     mut_view<T> advantages, mut_view<T> returns, void* workspace,
                                                     const reinforce_plus_plus_baseline_options& options,
                                                     cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>,
                  "rlhf::cuda::compute_reinforce_plus_plus_baseline_advantages: T must be float or double");
    constexpr std::string_view function = "rlhf::cuda::compute_reinforce_plus_plus_baseline_advantages";
    if (options.broadcast != baseline_broadcast::tiled_score &&
        options.broadcast != baseline_broadcast::cumulative_returns)
        fail(error_kind::config, function, "broadcast", "one of 'tiled_score' 'cumulative_returns'",
             "an unknown value");
    const rlhf::detail::group_rule rule =
        detail::outcome::plain_rule(rlhf::detail::group_rule_kind::mean, options.singleton);
    detail::outcome::check_rule(function, rule);
    detail::outcome::check_whitening(function, options.whiten);
    check_same_shape(function, "mask", mask, "token_rewards", token_rewards);
    check_length(function, "group_ids", group_ids.extent(0), token_rewards.extent(0), "one per row of 'token_rewards'");
    check_same_shape(function, "advantages", advantages, "token_rewards", token_rewards);
    check_same_shape(function, "returns", returns, "token_rewards", token_rewards);
    check_same_or_disjoint(function, "advantages", advantages, "token_rewards", token_rewards);
    check_same_or_disjoint(function, "returns", returns, "token_rewards", token_rewards);
    check_disjoint(function, "advantages", advantages, "returns", returns);
    check_disjoint(function, "advantages", advantages, "mask", mask);
    check_disjoint(function, "returns", returns, "mask", mask);
    check_disjoint(function, "advantages", advantages, "group_ids", group_ids);
    check_disjoint(function, "returns", returns, "group_ids", group_ids);
    detail::outcome::check_groups(function, token_rewards.extent(0), groups);
    detail::outcome::check_rows(function, "token_rewards", token_rewards.extent(0));
    detail::outcome::check_workspace(function, workspace, "reinforce_plus_plus_baseline_workspace_bytes(B, T)");
    const index_t rows = token_rewards.extent(0), cols = token_rewards.extent(1);
    const detail::outcome::group_scratch s = detail::outcome::scratch_of(workspace, rows);
    double* moments = static_cast<double*>(workspace) + detail::outcome::group_doubles(rows);
    void* stats_workspace = moments + detail::outcome::moments_doubles(rows);
    const mut_view<double> moments_view = detail::outcome::moments_view(moments, rows, options.whiten);
    if (rows > 0)
        detail::outcome::launch_group_values(function, token_rewards, mask, group_ids, groups, s, rule, stream);
    if (options.broadcast == baseline_broadcast::tiled_score) {
        if (rows > 0 && cols > 0) {
            detail::outcome::broadcast_kernel<T, M>
                <<<detail::outcome::elementwise_blocks(rows * cols), detail::outcome::threads, 0, stream>>>(
                    s.value, mask.data(), mask.stride(0), advantages.data(), advantages.stride(0), rows, cols);
            check_launch(function);
        }
        masked_whiten(view<T>(advantages), mask, advantages, moments_view, stats_workspace, options.whiten, stream);
        if (rows > 0 && cols > 0) {
            // A single row's stride may be anything: the pitches are at least the row's width.
            const auto pitch = [cols](index_t stride) {
                return static_cast<std::size_t>(stride > cols ? stride : cols) * sizeof(T);
            };
            check_status(cudaMemcpy2DAsync(returns.data(), pitch(returns.stride(0)), advantages.data(),
                                           pitch(advantages.stride(0)), static_cast<std::size_t>(cols) * sizeof(T),
                                           static_cast<std::size_t>(rows), cudaMemcpyDeviceToDevice, stream),
                         function);
        }
        return;
    }
    detail::outcome::scan_arguments<T, M> p =
        detail::outcome::scan_of(token_rewards, mask, returns, return_masking::zero_masked, 1.0);
    p.mode = detail::outcome::scan_mode::baseline_cumulative;
    p.scratch = s;
    detail::outcome::launch_returns(function, p, rows, stream);
    masked_whiten(view<T>(returns), mask, advantages, moments_view, stats_workspace, options.whiten, stream);
}

/// `rlhf::compute_remax_advantages` on the device: `returns` = reverse cumulative sum of
/// `token_rewards·mask`, `advantages = returns − reward_baselines[i]·mask`; `[B, T]` rewards, mask,
/// outputs (distinct; either may be `token_rewards`), `[B]` baselines. One block per row, no workspace.
template <class T, class M>
void compute_remax_advantages(view<T> token_rewards, view<M> mask, view<T, 1> reward_baselines, mut_view<T> advantages,
                              mut_view<T> returns, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::compute_remax_advantages: T must be float or double");
    constexpr std::string_view function = "rlhf::cuda::compute_remax_advantages";
    check_same_shape(function, "mask", mask, "token_rewards", token_rewards);
    check_length(function, "reward_baselines", reward_baselines.extent(0), token_rewards.extent(0),
                 "one per row of 'token_rewards'");
    check_same_shape(function, "advantages", advantages, "token_rewards", token_rewards);
    check_same_shape(function, "returns", returns, "token_rewards", token_rewards);
    check_same_or_disjoint(function, "advantages", advantages, "token_rewards", token_rewards);
    check_same_or_disjoint(function, "returns", returns, "token_rewards", token_rewards);
    check_disjoint(function, "advantages", advantages, "returns", returns);
    check_disjoint(function, "advantages", advantages, "mask", mask);
    check_disjoint(function, "returns", returns, "mask", mask);
    check_disjoint(function, "advantages", advantages, "reward_baselines", reward_baselines);
    check_disjoint(function, "returns", returns, "reward_baselines", reward_baselines);
    detail::outcome::check_rows(function, "token_rewards", token_rewards.extent(0));
    detail::outcome::scan_arguments<T, M> p =
        detail::outcome::scan_of(token_rewards, mask, returns, return_masking::zero_masked, 1.0);
    p.mode = detail::outcome::scan_mode::remax;
    p.advantages = advantages.data();
    p.advantages_stride = advantages.stride(0);
    p.reward_baselines = reward_baselines.data();
    detail::outcome::launch_returns(function, p, token_rewards.extent(0), stream);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda
