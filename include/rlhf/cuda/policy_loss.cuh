#pragma once
/// @file
/// The clipped PPO policy loss on CUDA: `rlhf::policy_loss` (kernels/policy_loss.hpp) on device
/// memory, forward and backward in one fused pass, with the same options and the same per-token
/// function (`rlhf::detail::surrogate`, host-device under nvcc).
///
/// Launches on `stream`, in order (all asynchronous, none reads back to the host):
/// 1. one block per row: n_b (and, for the sequence ratio, the row's mean log-ratio);
/// 2. one block: the aggregation divisor and c_b (`rlhf::detail::row_weight`);
/// 3. the fused pass, one block per (row, 1024 tokens): per token the surrogate, the gradient
///    `m·c_b·dL/dlp`, the token loss; per block the partial sums of the loss and statistics in
///    double, written to the workspace (no atomics: the sums are deterministic);
/// 4. one block: the partial sums in a fixed order, the statistics, the thresholds, `result`;
/// 5. only with the sequence ratio or a `ratio_threshold`, and a gradient: a pass over the
///    gradient that writes the sequence ratio's gradient and zeroes it when the threshold of (4)
///    was exceeded (it reads the flag from `result` on the device).

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <limits>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/cuda/loss_aggregation.cuh"
#include "rlhf/cuda/support.cuh"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/options/policy_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda {

/// Layout of the `result` array of `rlhf::cuda::policy_loss` (float64, device): the loss, then
/// the fields of `rlhf::policy_loss_stats` in the order of `for_each_field` in
/// rlhf/libtorch/loss_support.hpp (the flags as 0 or 1).
enum policy_result_index : int {
    policy_result_loss = 0,
    policy_result_clip_fraction,
    policy_result_clip_fraction_lower,
    policy_result_approx_kl,
    policy_result_policy_kl,
    policy_result_policy_kl_clamped,
    policy_result_ratio_mean,
    policy_result_ratio_max,
    policy_result_ratio_mean_all_positions,
    policy_result_valid_tokens,
    policy_result_ratio_threshold_exceeded,
    policy_result_skip_threshold_exceeded,
};

/// Length of the `result` array of `rlhf::cuda::policy_loss`: 12 doubles.
inline constexpr int policy_result_size = policy_result_skip_threshold_exceeded + 1;

namespace detail {

/// Partial sums of one block of the fused pass (`partials[block · policy_fields + field]`).
enum policy_field : int {
    pf_loss = 0,      // c_b · Σ m·L (0 on rows with c_b = 0)
    pf_clipped,       // Σ m·[clip(ρ)A < ρA]
    pf_lower,         // Σ m·[dual clip active]
    pf_sq_log_ratio,  // Σ (m·(lp − old))²
    pf_log_ratio,     // Σ m·(lp − old)
    pf_clamped,       // Σ m·clamp(lp − old)
    pf_ratio,         // Σ m·ρ
    pf_ratio_all,     // Σ ρ
    pf_ratio_max,     // max m·ρ (from 0)
    pf_row_grad,      // Σ m·c_b·dL/dd (the sequence ratio's row gradient)
    policy_fields
};

/// Per-row arrays of the policy workspace: counts, weights, the mean log-ratio.
inline constexpr index_t policy_row_arrays = 3;

/// The arguments of the policy kernels (device pointers, row strides in elements).
template <class T, class M>
struct policy_args {
    const T* lp;
    index_t lp_stride;
    const T* old;
    index_t old_stride;
    const T* adv;
    index_t adv_stride;
    const M* mask;
    index_t mask_stride;
    T* grad;  // null: no gradient
    index_t grad_stride;
    T* tokens;  // null: no token losses
    index_t tokens_stride;
    index_t rows, cols, chunks;
    ::rlhf::detail::surrogate_params<T> params;
    bool sequence;
    T log_ratio_mask;             // 1 with `mask_log_ratio`
    double stats_min, stats_max;  // the clamp of `policy_kl_clamped`, in double
    bool has_skip_threshold, has_ratio_threshold;
    double skip_threshold, ratio_threshold;
};

/// Launch (3): the fused pass over the tokens of one (row, chunk) per block; the per-token terms
/// are those of `rlhf::detail::policy_rows`.
template <int Threads, int Tokens, bool Variants, class T, class M>
__global__ void __launch_bounds__(Threads)
    policy_tokens_kernel(policy_args<T, M> a, const double* weights, const double* seq_log_ratio, double* partials) {
    using ::rlhf::detail::bit_max;
    using ::rlhf::detail::bit_min;
    using ::rlhf::detail::bit_select;
    const index_t block = blockIdx.x;
    const index_t row = block / a.chunks;
    if (row >= a.rows) return;  // the idle block of a launch with B = 0 (no partials to write)
    const index_t start = (block % a.chunks) * Tokens;
    double s[policy_fields] = {};
    double top = 0.0;
    long long clipped = 0, lower = 0;
    {
        const double c_row = weights[row];
        const T c = static_cast<T>(c_row);
        const bool zero_row = c_row == 0.0;
        const T seq = a.sequence ? static_cast<T>(seq_log_ratio[row]) : T{0};
        const T* lp = a.lp + row * a.lp_stride;
        const T* old = a.old + row * a.old_stride;
        const T* adv = a.adv + row * a.adv_stride;
        const M* msk = a.mask + row * a.mask_stride;
        T* g = a.grad != nullptr ? a.grad + row * a.grad_stride : nullptr;
        T* tl = a.tokens != nullptr ? a.tokens + row * a.tokens_stride : nullptr;
        const bool write_grad = g != nullptr && !a.sequence;  // the sequence ratio's: launch (5)
        T top_t = T{0};
        double counted = 0.0;
        for (index_t k = threadIdx.x; k < Tokens; k += Threads) {
            const index_t t = start + k;
            if (t >= a.cols) break;
            const T m = static_cast<T>(msk[t]);
            const T raw = lp[t] - old[t];
            T d = raw;
            if constexpr (Variants) {
                const T token_d = bit_select((a.log_ratio_mask != T{0}) & (m == T{0}), T{0}, raw);
                d = bit_select(a.sequence, seq, token_d);
            }
            const auto sp = ::rlhf::detail::surrogate<Variants>(d, adv[t], a.params);
            const double md = static_cast<double>(m);
            const double raw_d = static_cast<double>(lp[t]) - static_cast<double>(old[t]);
            if (tl != nullptr) tl[t] = sp.loss;
            const T gt = bit_select((m == T{0}) | (c == T{0}) | (sp.grad == T{0}), T{0}, sp.grad * c);
            if (write_grad) g[t] = gt;
            s[pf_row_grad] += static_cast<double>(gt);
            counted += static_cast<double>(bit_select((m == T{0}) | zero_row, T{0}, sp.loss));
            const double lr = md * raw_d;
            s[pf_log_ratio] += lr;
            s[pf_sq_log_ratio] += lr * lr;
            if constexpr (Variants)
                s[pf_clamped] += md * bit_min(bit_max(raw_d, a.stats_min), a.stats_max);
            else
                s[pf_clamped] += lr;
            const T rm = bit_select(m != T{0}, sp.ratio, T{0});
            s[pf_ratio] += static_cast<double>(rm);
            s[pf_ratio_all] += static_cast<double>(sp.ratio);
            top_t = bit_max(top_t, rm);
            clipped += static_cast<long long>((m != T{0}) & (sp.clipped != T{0}));
            if constexpr (Variants) lower += static_cast<long long>((m != T{0}) & (sp.lower != T{0}));
        }
        s[pf_loss] = c_row * counted;  // `counted` is 0 on a row with c_b = 0
        top = static_cast<double>(top_t);
    }
    s[pf_clipped] = static_cast<double>(clipped);
    s[pf_lower] = static_cast<double>(lower);
    block_sums<Threads>(s);
    top = block_max<Threads>(top);
    if (threadIdx.x == 0) store_partials(s, block, partials)[pf_ratio_max] = top;
}

/// Launch (4): the statistics of `rlhf::policy_loss` from the partial sums (one block; the
/// blocks' sums in a fixed order), written to `result` (`policy_result_index`).
template <int Threads, class T, class M>
__global__ void __launch_bounds__(Threads)
    policy_finalize_kernel(policy_args<T, M> a, index_t blocks, const double* header, const double* partials,
                           double* result) {
    double s[policy_fields] = {};
    sum_partials<Threads>(partials, blocks, s);
    double top = 0.0;
    for (index_t b = threadIdx.x; b < blocks; b += Threads) {
        const double p = partials[b * policy_fields + pf_ratio_max];
        top = p > top ? p : top;
    }
    top = block_max<Threads>(top);
    if (threadIdx.x != 0) return;
    const double valid = header[0];
    double r[policy_result_size] = {};
    r[policy_result_valid_tokens] = valid;
    if (valid > 0.0) {
        r[policy_result_clip_fraction] = s[pf_clipped] / valid;
        r[policy_result_clip_fraction_lower] = s[pf_lower] / valid;
        r[policy_result_approx_kl] = 0.5 * s[pf_sq_log_ratio] / valid;
        r[policy_result_policy_kl] = -s[pf_log_ratio] / valid;
        r[policy_result_policy_kl_clamped] = -s[pf_clamped] / valid;
        r[policy_result_ratio_mean] = s[pf_ratio] / valid;
        r[policy_result_ratio_max] = top;
    }
    const double positions = static_cast<double>(a.rows) * static_cast<double>(a.cols);
    if (positions > 0.0) r[policy_result_ratio_mean_all_positions] = s[pf_ratio_all] / positions;
    const bool skip = a.has_skip_threshold && r[policy_result_ratio_mean_all_positions] > a.skip_threshold;
    const bool exceeded = a.has_ratio_threshold && r[policy_result_ratio_mean] > a.ratio_threshold;
    r[policy_result_skip_threshold_exceeded] = skip ? 1.0 : 0.0;
    r[policy_result_ratio_threshold_exceeded] = exceeded ? 1.0 : 0.0;
    r[policy_result_loss] = exceeded ? 0.0 : s[pf_loss];
#pragma unroll
    for (int i = 0; i < policy_result_size; ++i) result[i] = r[i];
}

/// Launch (5): the gradient's second pass (same grid as (3)). Sequence ratio:
/// `g_bt = m_bt · (Σ_t m·c_b·dL/dd) / max(n_b, 1)` (the row sum from the partials of (3), in
/// the same order in every block); with the TRL ratio threshold exceeded (`result`'s flag):
/// `g = 0`.
template <int Threads, int Tokens, class T, class M>
__global__ void __launch_bounds__(Threads)
    policy_gradient_kernel(policy_args<T, M> a, const double* counts, const double* partials, const double* result) {
    const index_t block = blockIdx.x;
    const index_t row = block / a.chunks;
    if (row >= a.rows) return;
    const index_t start = (block % a.chunks) * Tokens;
    const bool zero = a.has_ratio_threshold && result[policy_result_ratio_threshold_exceeded] != 0.0;
    if (!a.sequence && !zero) return;
    T* g = a.grad + row * a.grad_stride;
    const M* msk = a.mask + row * a.mask_stride;
    T per_token = T{0};
    if (!zero) {
        double row_grad = 0.0;
        for (index_t k = 0; k < a.chunks; ++k) row_grad += partials[(row * a.chunks + k) * policy_fields + pf_row_grad];
        const double n = counts[row];
        per_token = static_cast<T>(row_grad / (n > 1.0 ? n : 1.0));
    }
    for (index_t k = threadIdx.x; k < Tokens; k += Threads) {
        const index_t t = start + k;
        if (t >= a.cols) break;
        g[t] = ::rlhf::detail::scaled(static_cast<T>(msk[t]), per_token);
    }
}

}  // namespace detail

/// Bytes of the workspace of `rlhf::cuda::policy_loss` for `[rows, cols]` inputs:
/// `8 · (3·B + 4 + 10·B·max(⌈T / 1024⌉, 1))` (per-row counts, weights and mean log-ratios, a header,
/// the partial sums of each block of the fused pass).
[[nodiscard]] constexpr std::size_t policy_loss_workspace_bytes(index_t rows, index_t cols) noexcept {
    return sizeof(double) * static_cast<std::size_t>(detail::workspace_doubles(rows, cols, detail::policy_row_arrays,
                                                                               detail::policy_fields));
}

/// `rlhf::policy_loss` on device memory: the loss, d loss / d log_probs and the statistics.
///
/// Inputs and outputs as `rlhf::policy_loss` (`[B, T]` views of device memory, any row stride,
/// mask bool/integer/floating; `grad_log_probs` and `token_losses` optional: an empty view skips
/// one), every option of `rlhf::policy_loss_options`. `result`: `policy_result_size` doubles of
/// device memory, [loss, `policy_loss_stats` in `for_each_field` order] (`policy_result_index`).
/// `workspace`: `policy_loss_workspace_bytes(B, T)` bytes of device memory, 8-byte aligned (its
/// contents on entry do not matter). Every output is written on `stream`; nothing is read back,
/// allocated or synchronised.
///
/// Differences from the CPU kernel: the values are not checked (non-finite inputs or mask entries
/// other than 0/1 give what the formulas give; the CPU raises an error); the aggregation divisor
/// is the option's global count or this call's count (no reducer), and one that is not positive
/// (no valid token: the CPU's error) gives weights 0 and a loss of 0, as the torch-op path with
/// deferred statistics; the TRL ratio threshold zeroes the loss in `result` and the
/// gradient on the device (launch 5). Sums run in another order (different rounding).
/// Host checks (`rlhf::error` naming the argument): shapes, options (`rlhf::policy_loss`'s), null
/// `result` / `workspace`; CUDA launch errors.
template <class T, class M>
void policy_loss(view<T> log_probs, view<T> old_log_probs, view<T> advantages, view<M> mask, mut_view<T> grad_log_probs,
                 mut_view<T> token_losses, const policy_loss_options& options, double* result, void* workspace,
                 cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::policy_loss: values must be float or double");
    constexpr std::string_view function = "rlhf::cuda::policy_loss";
    ::rlhf::detail::check_policy_loss_call(function, log_probs, old_log_probs, advantages, mask, grad_log_probs,
                                           token_losses, options);
    const bool want_grad = grad_log_probs.data() != nullptr;
    const bool want_tokens = token_losses.data() != nullptr;
    const index_t rows = log_probs.extent(0);
    const index_t cols = log_probs.extent(1);
    detail::check_loss_buffers(function, result, workspace, rows, cols);

    const bool sequence = options.level == importance_ratio_level::sequence;
    const detail::loss_workspace ws = detail::split_workspace(workspace, rows, detail::policy_row_arrays);
    detail::launch_row_weights(function, mask, sequence ? log_probs.data() : nullptr, log_probs.stride(0),
                               old_log_probs.data(), old_log_probs.stride(0), options.aggregation, ws, stream);

    constexpr double inf = std::numeric_limits<double>::infinity();
    const detail::policy_args<T, M> args{log_probs.data(),
                                         log_probs.stride(0),
                                         old_log_probs.data(),
                                         old_log_probs.stride(0),
                                         advantages.data(),
                                         advantages.stride(0),
                                         mask.data(),
                                         mask.stride(0),
                                         grad_log_probs.data(),
                                         want_grad ? grad_log_probs.stride(0) : 0,
                                         token_losses.data(),
                                         want_tokens ? token_losses.stride(0) : 0,
                                         rows,
                                         cols,
                                         detail::loss_chunks(cols),
                                         ::rlhf::detail::make_surrogate_params<T>(options),
                                         sequence,
                                         options.mask_log_ratio ? T{1} : T{0},
                                         options.log_ratio_min.value_or(-inf),
                                         options.log_ratio_max.value_or(inf),
                                         options.skip_threshold.has_value(),
                                         options.ratio_threshold.has_value(),
                                         options.skip_threshold.value_or(0.0),
                                         options.ratio_threshold.value_or(0.0)};
    // The plain clipped loss skips the selects of the options it does not use (as the CPU).
    const bool variants = options.log_ratio_min || options.log_ratio_max || options.ratio_cap || options.dual_clip ||
                          options.loss_cap || options.mask_log_ratio || sequence;
    constexpr int threads = detail::loss_block_threads;
    constexpr int tokens = detail::loss_block_tokens;
    const index_t blocks = rows * args.chunks;
    const auto grid = static_cast<unsigned int>(blocks > 0 ? blocks : 1);
    if (variants)
        detail::policy_tokens_kernel<threads, tokens, true, T, M>
            <<<grid, threads, 0, stream>>>(args, ws.weights, ws.row_values, ws.partials);
    else
        detail::policy_tokens_kernel<threads, tokens, false, T, M>
            <<<grid, threads, 0, stream>>>(args, ws.weights, ws.row_values, ws.partials);
    check_launch(function);
    detail::policy_finalize_kernel<threads, T, M>
        <<<1, threads, 0, stream>>>(args, blocks, ws.header, ws.partials, result);
    check_launch(function);
    if (want_grad && (sequence || options.ratio_threshold)) {
        detail::policy_gradient_kernel<threads, tokens, T, M>
            <<<grid, threads, 0, stream>>>(args, ws.counts, ws.partials, result);
        check_launch(function);
    }
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda
