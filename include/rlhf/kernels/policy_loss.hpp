#pragma once
/// @file
/// The clipped PPO policy loss with its closed-form gradient w.r.t. the current log-probs, in
/// one fused pass, with every variant the frameworks use as a named option.
///
/// Per token, with `d = lp − old` and `m` the mask:
///
/// 1. `d ← d · m` when `mask_log_ratio` (masked tokens get ratio 1);
/// 2. `d ← clamp(d, log_ratio_min, log_ratio_max)` when set;
/// 3. `ρ = exp(d)` (GSPO: `ρ_b = exp(clamp(Σ_t m·(lp − old) / max(n_b, 1)))`, one per row);
/// 4. `ρ ← min(ρ, ratio_cap)` when set;
/// 5. `L = −min(ρ·A, clip(ρ, 1 − clip_low, 1 + clip_high)·A)`;
/// 6. dual clip (Ye et al.), only where `A < 0`: `L ← min(L, −dual_clip·A)`;
/// 7. `L ← min(L, loss_cap)` when set;
/// 8. `loss = Σ_bt m_bt · c_b · L_bt` (`rlhf::aggregation_options`, see loss_aggregation.hpp).
///
/// The gradient is exact wherever the loss is differentiable; at kinks it follows LibTorch's
/// autograd conventions, so it equals autograd of the composed torch-op form:
/// `torch.clamp` passes the gradient on its bounds (inclusive), binary `torch.min`/`torch.max`
/// split it in halves on ties, `torch.where` sends it to the selected branch only.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/vector_math.hpp"
#include "rlhf/options/policy_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Statistics of one call, over this call's valid tokens (local: not reduced across ranks),
/// accumulated in double. With no valid token every mean and `ratio_max` are 0.
struct policy_loss_stats {
    /// mean_m[clip(ρ)·A < ρ·A]: TRL `clipfrac`, verl `pg_clipfrac`, OpenRLHF `clip_ratio`.
    double clip_fraction = 0.0;
    /// mean_m[A < 0 and min(ρA, clip(ρ)A) < dual_clip·A]: verl `pg_clipfrac_lower` (0 without dual clip).
    double clip_fraction_lower = 0.0;
    /// ½·mean_m((lp − old)²) of the raw log-ratio: TRL `approxkl`.
    double approx_kl = 0.0;
    /// mean_m(old − lp) of the raw log-ratio: TRL `policykl`, OpenRLHF `ppo_kl`.
    double policy_kl = 0.0;
    /// mean_m(−clamp(lp − old, log_ratio_min, log_ratio_max)), the log-ratio clamp of the options
    /// (unmasked log-ratio, per token): verl `ppo_kl`. Equals `policy_kl` inside the clamp.
    double policy_kl_clamped = 0.0;
    /// mean_m(ρ), ρ after the log-ratio clamp and before `ratio_cap` (TRL's `avg_ratio`).
    double ratio_mean = 0.0;
    /// max_m(ρ), same ρ.
    double ratio_max = 0.0;
    /// Mean of ρ over all B·T positions, padding included (ColossalChat v2's skip statistic).
    double ratio_mean_all_positions = 0.0;
    /// Σ m of this call.
    double valid_tokens = 0.0;
    /// TRL: `ratio_mean > ratio_threshold`; the loss and gradient were set to 0.
    bool ratio_threshold_exceeded = false;
    /// ColossalChat v2: `ratio_mean_all_positions > skip_threshold`; loss and gradient kept.
    bool skip_threshold_exceeded = false;
};

/// Loss and statistics of `rlhf::policy_loss`.
struct policy_loss_result {
    double loss = 0.0;
    policy_loss_stats stats{};
};

namespace detail {

/// The per-token constants of the surrogate, in the value type.
template <class T>
struct surrogate_params {
    T log_ratio_min;  // −inf when unset
    T log_ratio_max;  // +inf when unset
    T ratio_cap;      // +inf when unset
    T clip_lower;     // 1 − clip_low
    T clip_upper;     // 1 + clip_high
    T dual_clip;      // 0 when unset (then has_dual_clip is false)
    T loss_cap;       // 0 when unset (then has_loss_cap is false)
    bool has_dual_clip;
    bool has_loss_cap;
};

template <class T>
surrogate_params<T> make_surrogate_params(const policy_loss_options& o) {
    constexpr T inf = std::numeric_limits<T>::infinity();
    return {o.log_ratio_min ? static_cast<T>(*o.log_ratio_min) : -inf,
            o.log_ratio_max ? static_cast<T>(*o.log_ratio_max) : inf,
            o.ratio_cap ? static_cast<T>(*o.ratio_cap) : inf,
            static_cast<T>(1.0 - o.clip_low),
            static_cast<T>(1.0 + o.clip_high),
            o.dual_clip ? static_cast<T>(*o.dual_clip) : T{0},
            o.loss_cap ? static_cast<T>(*o.loss_cap) : T{0},
            o.dual_clip.has_value(),
            o.loss_cap.has_value()};
}

/// `f · v` that is 0 when `f` is 0 even if `v` is infinite (no NaN from an unselected branch).
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE T scaled(T f, T v) noexcept {
    return bit_select(f == T{0}, T{0}, f * v);
}

/// The surrogate at one token, given its log-ratio (after masking) and advantage.
template <class T>
struct surrogate_point {
    T loss;     // L after every variant
    T grad;     // dL / d(log-ratio), the log-ratio before its clamp
    T ratio;    // ρ after the log-ratio clamp, before ratio_cap
    T clipped;  // 1 when clip(ρ)·A < ρ·A
    T lower;    // 1 when the dual clip is active
};

/// Branch-free: every variant is computed and selected (`bit_select`), so that a loop over tokens
/// is SIMD code; every infinite intermediate is selected away or multiplied through `scaled`, so
/// an overflowed ρ never turns into NaN. ρ = `vexpf` / `vexp` (vector_math.hpp).
/// `Variants` false is the plain clipped loss (no log-ratio clamp, ratio cap, dual clip or loss
/// cap: TRL's and most presets'): their selects are left out, which gives the same values as
/// `Variants` with those options unset (clamps at ±inf are identities) in about half the work.
/// (`policy_rows<false>` also leaves out the sequence ratio and the log-ratio mask.)
template <bool Variants, class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE surrogate_point<T> surrogate(T d, T a, const surrogate_params<T>& p) noexcept {
    T dc = d;
    bool d_inside = true;
    if constexpr (Variants) {
        dc = bit_min(bit_max(d, p.log_ratio_min), p.log_ratio_max);
        d_inside = (d >= p.log_ratio_min) & (d <= p.log_ratio_max);  // torch.clamp: inclusive
    }
    T rho;
    if constexpr (std::is_same_v<T, float>)
        rho = vexpf(dc);
    else
        rho = static_cast<T>(vexp(static_cast<double>(dc)));
    T rc = rho;
    T drc = rho;  // d rc / d d
    if constexpr (Variants) {
        rc = bit_min(rho, p.ratio_cap);
        const bool rho_inside = rho <= p.ratio_cap;
        drc = bit_select(d_inside & rho_inside, rho, T{0});
    }
    const T s1 = bit_select(a == T{0}, T{0}, rc * a);  // ρ·A, 0 for A = 0 even when ρ = inf
    const T s2 = bit_min(bit_max(rc, p.clip_lower), p.clip_upper) * a;
    const T m = bit_min(s1, s2);
    // d min(s1, s2) / d rc: A when s1 is selected; on a tie (ρ inside the clip range or A = 0)
    // torch splits A/2 + A/2·1 = A; when s2 < s1 the ratio is outside the range: 0.
    const T dm = bit_select(s1 <= s2, a, T{0});
    const T clipped = bit_select(s2 < s1, T{1}, T{0});
    if constexpr (!Variants) return {-m, -scaled(dm, drc), rho, clipped, T{0}};
    // Dual clip, where A < 0 (dual_clip is 0 when unset: ca is then finite and unused).
    const T ca = p.dual_clip * a;
    const bool dual = p.has_dual_clip & (a < T{0});  // `&`, not `&&`: no branch
    const T lower = bit_select(dual & (m < ca), T{1}, T{0});
    const T f_dual = bit_select(m > ca, T{1}, bit_select(m == ca, T{0.5}, T{0}));
    T f = bit_select(dual, f_dual, T{1});  // product of the selection factors of the outer min/max
    T loss = bit_select(dual, -bit_max(m, ca), -m);
    // Loss cap.
    const T f_cap = bit_select(loss < p.loss_cap, T{1}, bit_select(loss == p.loss_cap, T{0.5}, T{0}));
    f = bit_select(p.has_loss_cap, f * f_cap, f);
    loss = bit_select(p.has_loss_cap, bit_min(loss, p.loss_cap), loss);
    const T grad = -scaled(f, scaled(dm, drc));
    return {loss, grad, rho, clipped, lower};
}

inline void check_policy_options(std::string_view function, const policy_loss_options& o) {
    if (o.level != importance_ratio_level::token && o.level != importance_ratio_level::sequence)
        fail(error_kind::config, function, "options.level", "one of 'token' 'sequence'", "an unknown value");
    check_in_range(function, "options.clip_low", o.clip_low, 0.0, 1.0);
    check_non_negative(function, "options.clip_high", o.clip_high);
    if (o.dual_clip) {
        const double c = *o.dual_clip;
        if (!(c > 1.0 && std::isfinite(c)))
            fail(error_kind::config, function, "options.dual_clip", "a finite value > 1", number_string(c));
    }
    if (o.ratio_cap) check_positive(function, "options.ratio_cap", *o.ratio_cap);
    if (o.loss_cap && !std::isfinite(*o.loss_cap))
        fail(error_kind::config, function, "options.loss_cap", "a finite value", number_string(*o.loss_cap));
    if (o.log_ratio_min && !std::isfinite(*o.log_ratio_min))
        fail(error_kind::config, function, "options.log_ratio_min", "a finite value", number_string(*o.log_ratio_min));
    if (o.log_ratio_max && !std::isfinite(*o.log_ratio_max))
        fail(error_kind::config, function, "options.log_ratio_max", "a finite value", number_string(*o.log_ratio_max));
    if (o.log_ratio_min && o.log_ratio_max && *o.log_ratio_min > *o.log_ratio_max)
        fail(error_kind::config, function, "options.log_ratio_max",
             "a value >= options.log_ratio_min (" + number_string(*o.log_ratio_min) + ")",
             number_string(*o.log_ratio_max));
    if (o.skip_threshold) check_positive(function, "options.skip_threshold", *o.skip_threshold);
    if (o.ratio_threshold) check_positive(function, "options.ratio_threshold", *o.ratio_threshold);
    check_aggregation_options(function, "options.aggregation.", o.aggregation);
}

/// Accumulators of the statistics, in double.
struct policy_accumulators {
    double clipped = 0.0, lower = 0.0, sq_log_ratio = 0.0, neg_log_ratio = 0.0, neg_clamped_log_ratio = 0.0,
           ratio = 0.0, ratio_all = 0.0;
    double ratio_max = 0.0;
};

/// Tokens per block of the fused pass.
inline constexpr std::size_t policy_block = 256;

/// Per-token terms of one block (they stay in L1). Those in the value type are exact there (a
/// mask times a value), so summing them in double gives the sums of the double terms; the
/// log-ratios are formed in double; squares and the row weight are applied by `add_block_sums`.
template <class T>
struct policy_buffers {
    T loss[policy_block], grad[policy_block];
    T counted_loss[policy_block];  // L where m = 1 and c_b ≠ 0, else 0
    // In double: lp − old in T overflows beyond T's range (and 0·inf at a masked token is NaN).
    double log_ratio[policy_block];          // m·(lp − old), raw
    double clamped_log_ratio[policy_block];  // m·clamp(lp − old) (Variants only)
    T ratio[policy_block];                   // m·ρ (0 where m = 0 even if ρ = inf)
    T ratio_all[policy_block];               // ρ
};

/// Adds a block's terms to the row loss (`c_b·Σ`) and the statistics, in double, in one loop:
/// every sum in `lanes` partial sums as `lane_sum` (same lanes, same order), all of them
/// independent, so the additions overlap where a loop per sum waited on its own chain.
template <bool Variants, class T>
void add_block_sums(const policy_buffers<T>& buf, std::size_t len, double c_row, double& row_loss,
                    policy_accumulators& acc) noexcept {
    double loss[lanes] = {}, lr[lanes] = {}, sq[lanes] = {}, clamped[lanes] = {}, ratio[lanes] = {}, all[lanes] = {};
    T top[lanes];
    for (T& x : top) x = static_cast<T>(acc.ratio_max);  // a T value or 0: exact
    // One inner loop per sum (each the `lane_sum` pattern the compiler turns into SIMD adds).
    const auto add = [&](std::size_t i, std::size_t count) {
        for (std::size_t j = 0; j < count; ++j) loss[j] += c_row * static_cast<double>(buf.counted_loss[i + j]);
        for (std::size_t j = 0; j < count; ++j) lr[j] += buf.log_ratio[i + j];
        for (std::size_t j = 0; j < count; ++j) sq[j] += buf.log_ratio[i + j] * buf.log_ratio[i + j];
        if constexpr (Variants)
            for (std::size_t j = 0; j < count; ++j) clamped[j] += buf.clamped_log_ratio[i + j];
        for (std::size_t j = 0; j < count; ++j) ratio[j] += static_cast<double>(buf.ratio[i + j]);
        for (std::size_t j = 0; j < count; ++j) all[j] += static_cast<double>(buf.ratio_all[i + j]);
        for (std::size_t j = 0; j < count; ++j) top[j] = bit_max(top[j], buf.ratio[i + j]);
    };
    std::size_t i = 0;
    for (; i + lanes <= len; i += lanes) add(i, lanes);
    add(i, len - i);
    const auto total = [](const double* partial) {
        double sum = 0.0;
        for (std::size_t j = 0; j < lanes; ++j) sum += partial[j];
        return sum;
    };
    row_loss += total(loss);
    const double log_ratio_sum = total(lr);
    acc.neg_log_ratio -= log_ratio_sum;
    acc.sq_log_ratio += total(sq);
    acc.neg_clamped_log_ratio -= Variants ? total(clamped) : log_ratio_sum;  // no clamp: the same terms
    acc.ratio += total(ratio);
    acc.ratio_all += total(all);
    T m = top[0];
    for (std::size_t j = 1; j < lanes; ++j) m = bit_max(m, top[j]);
    acc.ratio_max = static_cast<double>(m);
}

/// The rows' fused pass (see `rlhf::policy_loss`): loss, gradient, statistics. `weights` holds c_b.
template <bool Variants, class T, class M>
double policy_rows(view<T> log_probs, view<T> old_log_probs, view<T> advantages, view<M> mask,
                   mut_view<T> grad_log_probs, mut_view<T> token_losses, const policy_loss_options& options,
                   view<double, 1> weights, policy_accumulators& acc) {
    const index_t rows = log_probs.extent(0);
    const auto n = static_cast<std::size_t>(log_probs.extent(1));
    const bool want_grad = grad_log_probs.data() != nullptr;
    const bool want_tokens = token_losses.data() != nullptr;
    const auto params = make_surrogate_params<T>(options);
    const bool sequence = options.level == importance_ratio_level::sequence;
    const T log_ratio_mask = options.mask_log_ratio ? T{1} : T{0};
    // The clamp of `policy_kl_clamped`, in double (a bound beyond T's range is not infinite there).
    constexpr double inf = std::numeric_limits<double>::infinity();
    const double stats_ratio_min = options.log_ratio_min.value_or(-inf);
    const double stats_ratio_max = options.log_ratio_max.value_or(inf);
    policy_buffers<T> buf;
    double total = 0.0;
    for (index_t b = 0; b < rows; ++b) {
        const auto lp = log_probs.row(b);
        const auto old = old_log_probs.row(b);
        const auto adv = advantages.row(b);
        const auto msk = mask.row(b);
        const double c_row = weights(b);
        const T c = static_cast<T>(c_row);

        // Sequence level: the row's mean log-ratio over its valid tokens (OpenRLHF gspo:
        // Σ m·(lp − old) / max(n_b, 1)), accumulated in double.
        T seq_log_ratio = T{0};
        double n_row = 0.0;
        if (sequence) {
            double sum = 0.0;
            for (std::size_t t = 0; t < n; ++t) {
                const double m = static_cast<double>(msk[t]);
                sum += m * (static_cast<double>(lp[t]) - static_cast<double>(old[t]));
                n_row += m;
            }
            seq_log_ratio = static_cast<T>(sum / std::max(n_row, 1.0));
        }

        double row_loss = 0.0;
        double row_grad = 0.0;  // sequence level: Σ_t w_bt · dL_bt / d(seq log-ratio)
        const auto g = want_grad ? grad_log_probs.row(b) : std::span<T>{};
        const auto tl = want_tokens ? token_losses.row(b) : std::span<T>{};
        const bool zero_row = c_row == 0.0;
        // Blocks of tokens: a branch-free pass (SIMD code) writes each token's terms to buffers
        // in L1, then the sums run in partial lanes.
        for (std::size_t start = 0; start < n; start += policy_block) {
            const std::size_t len = std::min(policy_block, n - start);
            // The 0/1 counts as integers: exact, and a reduction the loop keeps in SIMD lanes.
            std::int32_t clipped = 0, lower = 0;
            for (std::size_t k = 0; k < len; ++k) {
                const std::size_t t = start + k;
                const T m = static_cast<T>(msk[t]);
                const T raw = lp[t] - old[t];
                T d = raw;
                if constexpr (Variants) {
                    // d·m as a select: a log-ratio that overflowed T times a 0 mask would be NaN.
                    const T token_d = bit_select((log_ratio_mask != T{0}) & (m == T{0}), T{0}, raw);
                    d = bit_select(sequence, seq_log_ratio, token_d);
                }
                const surrogate_point<T> sp = surrogate<Variants>(d, adv[t], params);
                const double md = static_cast<double>(m);
                const double raw_d = static_cast<double>(lp[t]) - static_cast<double>(old[t]);
                buf.loss[k] = sp.loss;
                // 0 without weight or gradient, even if the other factor overflowed (no 0·inf).
                buf.grad[k] = bit_select((m == T{0}) | (c == T{0}) | (sp.grad == T{0}), T{0}, sp.grad * c);
                // 0 where the token's weight is 0 even if L is infinite.
                buf.counted_loss[k] = bit_select((m == T{0}) | zero_row, T{0}, sp.loss);
                buf.log_ratio[k] = md * raw_d;
                buf.ratio[k] = bit_select(m != T{0}, sp.ratio, T{0});
                buf.ratio_all[k] = sp.ratio;
                clipped += static_cast<std::int32_t>((m != T{0}) & (sp.clipped != T{0}));
                if constexpr (Variants) {
                    lower += static_cast<std::int32_t>((m != T{0}) & (sp.lower != T{0}));
                    buf.clamped_log_ratio[k] = md * bit_min(bit_max(raw_d, stats_ratio_min), stats_ratio_max);
                }
            }
            acc.clipped += static_cast<double>(clipped);
            acc.lower += static_cast<double>(lower);
            add_block_sums<Variants>(buf, len, c_row, row_loss, acc);
            if (want_tokens) std::copy(buf.loss, buf.loss + len, tl.begin() + static_cast<std::ptrdiff_t>(start));
            if (want_grad) {
                if (sequence)
                    row_grad += lane_sum(buf.grad, len);
                else
                    std::copy(buf.grad, buf.grad + len, g.begin() + static_cast<std::ptrdiff_t>(start));
            }
        }
        total += row_loss;
        if (want_grad && sequence) {
            // d ρ_b / d lp_bt flows through the row mean: m_bt / max(n_b, 1).
            const T per_token = static_cast<T>(row_grad / std::max(n_row, 1.0));
            for (std::size_t t = 0; t < n; ++t) g[t] = scaled(static_cast<T>(msk[t]), per_token);
        }
    }
    return total;
}

/// The checks of a policy-loss call that read no value (options and shapes; an empty output view
/// is not wanted), shared by `rlhf::policy_loss` and `rlhf::cuda::policy_loss`.
template <class T, class M>
void check_policy_loss_call(std::string_view function, view<T> log_probs, view<T> old_log_probs, view<T> advantages,
                            view<M> mask, mut_view<T> grad_log_probs, mut_view<T> token_losses,
                            const policy_loss_options& options) {
    check_policy_options(function, options);
    check_same_shape(function, "old_log_probs", old_log_probs, "log_probs", log_probs);
    check_same_shape(function, "advantages", advantages, "log_probs", log_probs);
    check_same_shape(function, "mask", mask, "log_probs", log_probs);
    if (grad_log_probs.data() != nullptr)
        check_same_shape(function, "grad_log_probs", grad_log_probs, "log_probs", log_probs);
    if (token_losses.data() != nullptr)
        check_same_shape(function, "token_losses", token_losses, "log_probs", log_probs);
}
}  // namespace detail

/// Clipped policy loss, its gradient w.r.t. `log_probs`, and statistics (see this file's comment
/// for the formula and `rlhf::policy_loss_options` for the framework presets).
///
/// Shapes: `log_probs`, `old_log_probs`, `advantages`, `mask` all `[B, T]`; `mask` ∈ {0,1}
/// (bool, integer or floating). Only tokens with m = 1 enter the loss, the gradient and the
/// statistics (except `ratio_mean_all_positions`).
/// Outputs (caller-provided, after the inputs and before `options`; optional: `{}` skips one):
/// `grad_log_probs` `[B, T]` receives d loss / d log_probs (0 on masked tokens); with the
/// sequence ratio the gradient of a row's ratio reaches each of its valid tokens,
/// `d ρ_b / d lp_bt = ρ_b · m_bt / max(n_b, 1)`. `token_losses` `[B, T]` receives L_bt at every
/// position (the un-aggregated, un-skipped loss).
///
/// Policies: non-finite inputs (any position, masked ones included) are an `rlhf::error`
/// (kind value). The empty-mask policy is that of `rlhf::row_weights`: an error naming `mask`
/// when the aggregation divisor is 0, otherwise loss 0 and gradient 0. Options out of range are
/// config errors naming `options.<field>`.
/// Numerics: with a log-ratio clamp the loss and gradient are finite for any finite inputs.
/// Without one, ρ overflows to +inf once lp − old exceeds log(max of T) (≈ 88.7 in float,
/// ≈ 709.8 in double); then, with no dual clip, ratio cap or loss cap, a token with A < 0 has
/// L = +inf and gradient +inf (the loss is +inf), a token with A > 0 takes the clipped branch
/// (finite L, gradient 0), and A = 0 gives L = 0 (ρ·0 is defined as 0) — never NaN. With
/// `ratio_threshold` and an infinite mean ratio the step is skipped (loss 0, gradient 0).
///
/// One pass over the inputs (the checks and the mask counts, row by row, before any output is
/// written), one fused pass over the data (loss, gradient, statistics: per block of 256 tokens, a
/// branch-free SIMD pass into buffers in L1, then the sums in partial lanes; the plain clipped loss
/// in its own instantiation, without the selects of the options it does not use),
/// and a second pass over the gradient only when the TRL ratio threshold zeroes it. The
/// sequence ratio adds, per row, a pass for its mean log-ratio and one writing its gradient.
/// Allocates one scratch vector of B doubles. `reducer` sums the aggregation counts across
/// ranks (one collective call at most; the statistics stay local).
template <class T, class M, Reducer R = local_reducer>
policy_loss_result policy_loss(view<T> log_probs, view<T> old_log_probs, view<T> advantages, view<M> mask,
                               mut_view<T> grad_log_probs = {}, mut_view<T> token_losses = {},
                               const policy_loss_options& options = {}, R&& reducer = R{}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::policy_loss: values must be float or double");
    constexpr std::string_view function = "rlhf::policy_loss";
    detail::check_policy_loss_call(function, log_probs, old_log_probs, advantages, mask, grad_log_probs, token_losses,
                                   options);
    const bool want_grad = grad_log_probs.data() != nullptr;
    // One pass over the inputs checks them and counts the mask; the fused pass follows.
    const index_t rows = log_probs.extent(0);
    const index_t cols = log_probs.extent(1);
    std::vector<double> scratch(static_cast<std::size_t>(rows));
    const mut_view<double, 1> weights(scratch.data(), {rows});
    detail::check_and_count_rows(function,
                                 std::array{std::pair{std::string_view("log_probs"), log_probs},
                                            std::pair{std::string_view("old_log_probs"), old_log_probs},
                                            std::pair{std::string_view("advantages"), advantages}},
                                 "mask", mask, weights);
    const aggregation_counts counts =
        detail::weights_from_counts(function, mask.extents(), options.aggregation, weights, reducer);

    // The plain clipped loss (token level, no log-ratio masking or clamp, no caps, no dual clip)
    // skips the selects of the options it does not use.
    const bool variants = options.log_ratio_min || options.log_ratio_max || options.ratio_cap || options.dual_clip ||
                          options.loss_cap || options.mask_log_ratio || options.level != importance_ratio_level::token;
    detail::policy_accumulators acc;
    const view<double, 1> w(weights);
    const double total = variants ? detail::policy_rows<true>(log_probs, old_log_probs, advantages, mask,
                                                              grad_log_probs, token_losses, options, w, acc)
                                  : detail::policy_rows<false>(log_probs, old_log_probs, advantages, mask,
                                                               grad_log_probs, token_losses, options, w, acc);

    policy_loss_result result;
    policy_loss_stats& st = result.stats;
    const double valid = counts.local_tokens;
    st.valid_tokens = valid;
    if (valid > 0.0) {
        st.clip_fraction = acc.clipped / valid;
        st.clip_fraction_lower = acc.lower / valid;
        st.approx_kl = 0.5 * acc.sq_log_ratio / valid;
        st.policy_kl = acc.neg_log_ratio / valid;
        st.policy_kl_clamped = acc.neg_clamped_log_ratio / valid;
        st.ratio_mean = acc.ratio / valid;
        st.ratio_max = acc.ratio_max;
    }
    const double positions = static_cast<double>(rows) * static_cast<double>(cols);
    if (positions > 0.0) st.ratio_mean_all_positions = acc.ratio_all / positions;
    st.skip_threshold_exceeded = options.skip_threshold && st.ratio_mean_all_positions > *options.skip_threshold;
    st.ratio_threshold_exceeded = options.ratio_threshold && st.ratio_mean > *options.ratio_threshold;
    result.loss = total;
    if (st.ratio_threshold_exceeded) {
        // TRL multiplies the loss by 0; we set it (and its gradient) to 0 so that an infinite
        // loss does not become NaN.
        result.loss = 0.0;
        if (want_grad)
            for (index_t b = 0; b < rows; ++b)
                for (T& x : grad_log_probs.row(b)) x = T{0};
    }
    return result;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
