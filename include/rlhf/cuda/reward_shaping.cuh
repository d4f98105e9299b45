#pragma once
/// @file
/// Per-token KL and reward shaping on the device: `rlhf::token_kl` (masked and unmasked, every
/// `kl_estimator` and clamp of `kl_options`) and `rlhf::shape_rewards_from_logprobs` (every
/// `reward_slot`, `mask_kl`, score clipping, `divide_kl_by_length`, every estimator), one pass each.
///
/// The per-element math is the CPU's own: the estimator is the `kl_functor` that
/// `rlhf::detail::with_kl_functor` selects (host-device under nvcc; the dispatch on the estimator
/// runs on the host and picks the kernel's template argument), the slot is `slot_of_row`, the score
/// clip `clip_score` and the reward `kl_reward_term` / `reward_at_slot` / `reward_below_limit`
/// (`rlhf/kernels/reward_shaping.hpp`), all checked by the CPU tests.
///
/// Layout: `token_kl` is elementwise (a grid-stride loop over the flattened `[B, T]`, 256 threads
/// per block, at most 4096 blocks). `shape_rewards_from_logprobs` needs each row's valid count and
/// last valid position before it can place the score, so it runs one block of 256 threads per row:
/// the block reduces the row's mask (count and last valid position), thread 0 finds the slot and
/// clips the score, then the block writes the row's rewards. The log-probs are read once (the
/// mask twice), nothing is read back to the host.
///
/// Launches on `stream`, never synchronises, allocates nothing. Shapes, options and overlaps are
/// checked on the host (as the CPU kernels); values are not (no device read): non-finite inputs
/// propagate, a mask entry other than 0 counts as valid, and an empty row cannot raise, so
/// `empty_row_policy::raise` (the CPU default) is refused (kind `config`, argument `empty_rows`):
/// choose `drop_score` or `peer_slot`, which behave as on the CPU.

#include <cuda_runtime.h>

#include <cub/block/block_reduce.cuh>

#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/cuda/support.cuh"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/options/kl.hpp"
#include "rlhf/options/reward_shaping.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda {

namespace detail::shaping {

inline constexpr int threads = 256;
inline constexpr unsigned int max_elementwise_blocks = 4096;

/// Pointers and row strides of `token_kl` (`mask` null: unmasked).
template <class T, class M>
struct kl_arguments {
    const T* log_probs;
    const T* ref_log_probs;
    const M* mask;
    T* kl;
    index_t log_probs_stride, ref_stride, mask_stride, kl_stride;
    index_t rows, cols;
};

/// Every element of the batch: `kl = estimate(lp, ref)`, 0 where the mask is 0 (masked form).
template <class T, class M, class Estimate>
__global__ void __launch_bounds__(threads) token_kl_kernel(kl_arguments<T, M> p, Estimate estimate) {
    const index_t n = p.rows * p.cols;
    for (index_t i = static_cast<index_t>(blockIdx.x) * threads + threadIdx.x; i < n;
         i += static_cast<index_t>(gridDim.x) * threads) {
        const index_t b = i / p.cols, t = i - b * p.cols;
        const T k = estimate(p.log_probs[b * p.log_probs_stride + t], p.ref_log_probs[b * p.ref_stride + t]);
        // Masked positions are exactly 0, even where the estimate is +inf (as the CPU's select).
        p.kl[b * p.kl_stride + t] = p.mask == nullptr || p.mask[b * p.mask_stride + t] != M{0} ? k : T{0};
    }
}

/// Pointers, row strides and options of `shape_rewards_from_logprobs`.
template <class T, class M>
struct shape_arguments {
    const T* log_probs;
    const T* ref_log_probs;
    const M* mask;
    const T* scores;
    T* rewards;
    index_t log_probs_stride, ref_stride, mask_stride, rewards_stride;
    index_t cols;
    T neg_beta;
    rlhf::detail::score_bounds bounds;
    reward_slot slot;
    empty_row_policy empty_rows;
    bool mask_kl, divide_kl_by_length;
};

struct max_op {
    [[nodiscard]] __device__ __forceinline__ index_t operator()(index_t a, index_t b) const { return a < b ? b : a; }
};

/// One block per row: the row's valid count and last valid position, its slot and clipped score
/// (thread 0), then its rewards. Each reward is written by the thread that read its log-probs, so
/// `rewards` may be exactly a log-prob input.
template <class T, class M, class Estimate>
__global__ void __launch_bounds__(threads) shape_kernel(shape_arguments<T, M> p, Estimate estimate) {
    using reduce = cub::BlockReduce<index_t, threads>;
    __shared__ typename reduce::TempStorage storage;
    __shared__ rlhf::detail::row_slot where;
    __shared__ T score, length;
    const index_t b = blockIdx.x;
    const M* m = p.mask + b * p.mask_stride;
    index_t count = 0, last = -1;
    for (index_t t = threadIdx.x; t < p.cols; t += threads) {
        const bool valid = m[t] != M{0};
        count += valid ? 1 : 0;
        last = valid ? t : last;  // t increases: the thread's last valid position
    }
    count = reduce(storage).Sum(count);
    __syncthreads();  // the storage is reused
    last = reduce(storage).Reduce(last, max_op{});
    if (threadIdx.x == 0) {
        where = rlhf::detail::slot_of_row(p.slot, p.empty_rows, count, last, p.cols);
        score =
            where.score ? static_cast<T>(rlhf::detail::clip_score(static_cast<double>(p.scores[b]), p.bounds)) : T{0};
        length = p.divide_kl_by_length ? static_cast<T>(count > 1 ? count : 1) : T{1};
    }
    __syncthreads();
    const T* lp = p.log_probs + b * p.log_probs_stride;
    const T* ref = p.ref_log_probs + b * p.ref_stride;
    T* out = p.rewards + b * p.rewards_stride;
    const rlhf::detail::row_slot slot = where;
    const T row_score = score, row_length = length;
    for (index_t t = threadIdx.x; t < p.cols; t += threads) {
        const T r =
            rlhf::detail::kl_reward_term(estimate(lp[t], ref[t]), p.mask_kl && m[t] == M{0}, p.neg_beta, row_length);
        out[t] = slot.limit >= 0 ? rlhf::detail::reward_below_limit(r, row_score, t < slot.limit)
                                 : rlhf::detail::reward_at_slot(r, row_score, t == slot.position);
    }
}

template <class T, class M>
void launch_token_kl(std::string_view function, const kl_arguments<T, M>& p, const kl_options& options,
                     cudaStream_t stream) {
    if (p.rows * p.cols == 0) return;
    const unsigned int all = blocks_for(p.rows * p.cols, threads);
    const unsigned int blocks = all < max_elementwise_blocks ? all : max_elementwise_blocks;
    rlhf::detail::with_kl_functor<T>(
        options, [&](const auto estimate) { token_kl_kernel<<<blocks, threads, 0, stream>>>(p, estimate); });
    check_launch(function);
}

}  // namespace detail::shaping

/// `rlhf::token_kl` on the device: `kl[b, t] = estimator(lp − ref)` over `[B, T]` device memory
/// (any row strides), with the clamps and the float32 log-ratio of `options` (the CPU's estimator
/// functions, see the file comment). `kl` may be exactly either input; any other overlap is an
/// `rlhf::error`. Asynchronous on `stream`; inputs are not checked for finiteness (no device read):
/// non-finite ones propagate. Equals the CPU kernel to a few ulp of T (k3: `exp`/`expm1` of the
/// device's math library instead of the host's).
template <class T>
void token_kl(view<T> log_probs, view<T> ref_log_probs, mut_view<T> kl, const kl_options& options,
              cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::token_kl: T must be float or double");
    constexpr std::string_view function = "rlhf::cuda::token_kl";
    rlhf::detail::check_kl_options(function, options);
    check_same_shape(function, "ref_log_probs", ref_log_probs, "log_probs", log_probs);
    check_same_shape(function, "kl", kl, "log_probs", log_probs);
    check_same_or_disjoint(function, "kl", kl, "log_probs", log_probs);
    check_same_or_disjoint(function, "kl", kl, "ref_log_probs", ref_log_probs);
    const detail::shaping::kl_arguments<T, unsigned char> p{
        log_probs.data(),    ref_log_probs.data(),    nullptr, kl.data(),
        log_probs.stride(0), ref_log_probs.stride(0), 0,       kl.stride(0),
        log_probs.extent(0), log_probs.extent(1)};
    detail::shaping::launch_token_kl(function, p, options, stream);
}

/// Masked `rlhf::token_kl` on the device: `kl[b, t] = mask[b, t] ? estimator(lp − ref) : 0`, `mask`
/// `[B, T]` (any element type; a non-zero entry counts as valid). Masked positions are exactly 0.
template <class T, class M>
void token_kl(view<T> log_probs, view<T> ref_log_probs, view<M> mask, mut_view<T> kl, const kl_options& options,
              cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::token_kl: T must be float or double");
    constexpr std::string_view function = "rlhf::cuda::token_kl";
    rlhf::detail::check_kl_options(function, options);
    check_same_shape(function, "ref_log_probs", ref_log_probs, "log_probs", log_probs);
    check_same_shape(function, "mask", mask, "log_probs", log_probs);
    check_same_shape(function, "kl", kl, "log_probs", log_probs);
    check_same_or_disjoint(function, "kl", kl, "log_probs", log_probs);
    check_same_or_disjoint(function, "kl", kl, "ref_log_probs", ref_log_probs);
    check_disjoint(function, "kl", kl, "mask", mask);
    const detail::shaping::kl_arguments<T, M> p{
        log_probs.data(),        ref_log_probs.data(), mask.data(),  kl.data(),           log_probs.stride(0),
        ref_log_probs.stride(0), mask.stride(0),       kl.stride(0), log_probs.extent(0), log_probs.extent(1)};
    detail::shaping::launch_token_kl(function, p, options, stream);
}

/// `rlhf::shape_rewards_from_logprobs` on the device: `rewards = −kl_coef · token_kl(log_probs,
/// ref_log_probs, options.kl) (· mask if mask_kl) (/ n if divide_kl_by_length)` plus the clipped
/// score at `options.slot` (see `rlhf/kernels/reward_shaping.hpp` for the slots and the framework
/// of each option). `log_probs`, `ref_log_probs`, `mask`, `rewards` `[B, T]` device memory (any
/// row strides), `scores` `[B]`. `rewards` may be exactly a log-prob input. `options.empty_rows`
/// must be `drop_score` or `peer_slot` (`raise` needs a device read: refused, see the file
/// comment). Asynchronous on `stream`; values are not checked. Equals the CPU kernel to a few ulp of T.
template <class T, class M>
void shape_rewards_from_logprobs(view<T> log_probs, view<T> ref_log_probs, view<M> mask, view<T, 1> scores,
                                 mut_view<T> rewards, const reward_shaping_options& options, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::shape_rewards_from_logprobs: T must be float or double");
    constexpr std::string_view function = "rlhf::cuda::shape_rewards_from_logprobs";
    rlhf::detail::check_shaping_options(function, options);
    rlhf::detail::check_kl_options(function, options.kl);
    if (options.empty_rows == empty_row_policy::raise)
        fail(error_kind::config, function, "empty_rows",
             "'drop_score' or 'peer_slot' (raising on an empty row needs a device-to-host read)", "'raise'");
    check_same_shape(function, "ref_log_probs", ref_log_probs, "log_probs", log_probs);
    check_same_shape(function, "mask", mask, "log_probs", log_probs);
    check_length(function, "scores", scores.extent(0), log_probs.extent(0), "one per row of 'mask'");
    check_same_shape(function, "rewards", rewards, "log_probs", log_probs);
    check_disjoint(function, "rewards", rewards, "mask", mask);
    check_disjoint(function, "rewards", rewards, "scores", scores);
    check_same_or_disjoint(function, "rewards", rewards, "log_probs", log_probs);
    check_same_or_disjoint(function, "rewards", rewards, "ref_log_probs", ref_log_probs);
    if (log_probs.extent(0) > index_t{0x7fffffff})
        fail(error_kind::shape, function, "log_probs", "at most 2^31 - 1 rows (one block per row)",
             std::to_string(log_probs.extent(0)) + " rows");
    if (log_probs.empty()) return;
    const detail::shaping::shape_arguments<T, M> p{log_probs.data(),
                                                   ref_log_probs.data(),
                                                   mask.data(),
                                                   scores.data(),
                                                   rewards.data(),
                                                   log_probs.stride(0),
                                                   ref_log_probs.stride(0),
                                                   mask.stride(0),
                                                   rewards.stride(0),
                                                   log_probs.extent(1),
                                                   static_cast<T>(-options.kl_coef),
                                                   rlhf::detail::score_bounds_of(options),
                                                   options.slot,
                                                   options.empty_rows,
                                                   options.mask_kl,
                                                   options.divide_kl_by_length};
    const auto blocks = static_cast<unsigned int>(log_probs.extent(0));
    rlhf::detail::with_kl_functor<T>(options.kl, [&](const auto estimate) {
        detail::shaping::shape_kernel<<<blocks, detail::shaping::threads, 0, stream>>>(p, estimate);
    });
    check_launch(function);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda
