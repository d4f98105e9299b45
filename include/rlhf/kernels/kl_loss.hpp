#pragma once
/// @file
/// KL to the reference policy as a loss term ("KL in the loss", GRPO-style), with its
/// closed-form gradient w.r.t. the current log-probs, in one fused pass.
///
/// Per token, with `d = lp − ref` and the estimator, clamps and float32 rounding of
/// `rlhf::kl_options` (kl.hpp; the value is exactly that of `rlhf::token_kl`):
///
/// 1. `X = clamp(estimator(clamp(d, ±log_ratio_clamp)), ±value_clamp)`;
///    `∂X/∂lp = estimator'(d)` inside both clamps, 0 where one of them is active
///    (k1: 1, abs: sign(d), k2: d, k3: 1 − exp(−d));
/// 2. straight-through (verl `k3+`, `low_var_kl+`, ...): the value stays `X`, the gradient is
///    that of k2, `∂/∂lp = d` (unclamped);
/// 3. importance weighting (the overload with `old_log_probs`; TRL `use_bias_correction_kl`,
///    DeepSeek-V3.2): `L = ρ·X` with `ρ = exp(lp − old)` (no clamp, as TRL), and
///    `∂L/∂lp = ρ·(∂X/∂lp + X)` (ρ carries gradient);
/// 4. `loss = coef · Σ_bt m_bt · c_b · L_bt` (`rlhf::aggregation_options`).
///
/// At kinks the gradient follows LibTorch's autograd, so it equals autograd of the composed
/// torch-op form: `torch.clamp` passes the gradient on its bounds (inclusive), `abs` has
/// gradient 0 at 0. With `float32_log_ratio` (OpenRLHF) autograd also rounds the incoming
/// gradient to float32 on its way back through the cast; the kernel keeps it in `T` (the two
/// differ at float32 resolution for double inputs).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/options/kl_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Statistics of one call over this call's valid tokens (local), accumulated in double. With no
/// valid token every statistic is 0.
struct kl_loss_stats {
    /// mean_m(L): the mean per-token KL term (after the clamps and the importance weight; TRL `kl`).
    double kl_mean = 0.0;
    /// `Σ_bt m_bt · c_b · L_bt` without `coef` (verl's `actor/kl_loss`).
    double kl_aggregated = 0.0;
    /// Fraction of valid tokens where a clamp is active (the estimator's gradient is 0 there).
    double clamp_fraction = 0.0;
    /// mean_m(ρ) with importance weighting, 1 without.
    double ratio_mean = 0.0;
    /// Σ m of this call.
    double valid_tokens = 0.0;
};

/// Loss and statistics of `rlhf::kl_loss`.
struct kl_loss_result {
    /// `coef · Σ_bt m_bt · c_b · L_bt`.
    double loss = 0.0;
    kl_loss_stats stats{};
};

namespace detail {

/// The estimator with its clamps and its derivative w.r.t. lp, at one token.
template <class T>
struct kl_point {
    T value;    // X after both clamps
    T grad;     // dX/dlp (the surrogate's gradient with straight-through)
    T clamped;  // 1 when a clamp is active
};

/// Value and gradient of the estimator `E`; the value is computed as `detail::kl_functor`
/// computes it (kl.hpp), so it equals `rlhf::token_kl`.
template <class T, kl_estimator E, bool Float32, bool StraightThrough>
struct kl_grad_functor {
    T ratio_low, ratio_high, value_low, value_high;

    [[nodiscard]] kl_point<T> operator()(T lp, T ref) const noexcept {
        T d;
        if constexpr (Float32)
            d = static_cast<T>(static_cast<float>(lp) - static_cast<float>(ref));
        else
            d = lp - ref;
        const T dc = std::min(std::max(d, ratio_low), ratio_high);
        const bool d_inside = d >= ratio_low && d <= ratio_high;
        T k;
        T dk;
        if constexpr (E == kl_estimator::k1) {
            k = dc;
            dk = T{1};
        } else if constexpr (E == kl_estimator::abs) {
            k = std::abs(dc);
            dk = dc > T{0} ? T{1} : (dc < T{0} ? T{-1} : T{0});  // torch: sign, 0 at 0
        } else if constexpr (E == kl_estimator::k2) {
            k = static_cast<T>(0.5) * dc * dc;
            dk = dc;
        } else {
            k = k3_of(dc);          // as rlhf::token_kl, without cancellation
            dk = -std::expm1(-dc);  // 1 − exp(−d)
        }
        const T x = std::min(std::max(k, value_low), value_high);
        const bool k_inside = k >= value_low && k <= value_high;
        const bool inside = d_inside && k_inside;
        T g;
        if constexpr (StraightThrough)
            g = d;
        else
            g = inside ? dk : T{0};
        return {x, g, inside ? T{0} : T{1}};
    }
};

/// Calls `body(functor)` with the `kl_grad_functor` that the options select.
template <class T, class Body>
decltype(auto) with_kl_grad_functor(const kl_loss_options& options, Body&& body) {
    constexpr T inf = std::numeric_limits<T>::infinity();
    const kl_options& o = options.kl;
    const T ratio = o.log_ratio_clamp ? static_cast<T>(*o.log_ratio_clamp) : inf;
    const T value = o.value_clamp ? static_cast<T>(*o.value_clamp) : inf;
    const auto run = [&]<kl_estimator E>() -> decltype(auto) {
        const auto with_st = [&]<bool F32>() -> decltype(auto) {
            if (options.straight_through) return body(kl_grad_functor<T, E, F32, true>{-ratio, ratio, -value, value});
            return body(kl_grad_functor<T, E, F32, false>{-ratio, ratio, -value, value});
        };
        if (o.float32_log_ratio) return with_st.template operator()<true>();
        return with_st.template operator()<false>();
    };
    return dispatch_kl_estimator(o.estimator, run);
}

inline void check_kl_loss_options(std::string_view function, const kl_loss_options& o) {
    if (o.kl.log_ratio_clamp) check_positive(function, "options.kl.log_ratio_clamp", *o.kl.log_ratio_clamp);
    if (o.kl.value_clamp) check_positive(function, "options.kl.value_clamp", *o.kl.value_clamp);
    check_kl_options(function, o.kl);
    if (!std::isfinite(o.coef))
        fail(error_kind::config, function, "options.coef", "a finite value", number_string(o.coef));
    check_aggregation_options(function, "options.aggregation.", o.aggregation);
}

/// The shared body of both `kl_loss` overloads; `old_log_probs` is empty without importance weighting.
template <class T, class M, class R>
kl_loss_result kl_loss_impl(std::string_view function, view<T> log_probs, view<T> ref_log_probs, view<T> old_log_probs,
                            bool weighted, view<M> mask, const kl_loss_options& options, mut_view<T> grad_log_probs,
                            mut_view<T> token_losses, R& reducer) {
    check_kl_loss_options(function, options);
    check_same_shape(function, "ref_log_probs", ref_log_probs, "log_probs", log_probs);
    if (weighted) check_same_shape(function, "old_log_probs", old_log_probs, "log_probs", log_probs);
    check_same_shape(function, "mask", mask, "log_probs", log_probs);
    const bool want_grad = grad_log_probs.data() != nullptr;
    const bool want_tokens = token_losses.data() != nullptr;
    if (want_grad) check_same_shape(function, "grad_log_probs", grad_log_probs, "log_probs", log_probs);
    if (want_tokens) check_same_shape(function, "token_losses", token_losses, "log_probs", log_probs);
    check_finite(function, "log_probs", log_probs);
    check_finite(function, "ref_log_probs", ref_log_probs);
    if (weighted) check_finite(function, "old_log_probs", old_log_probs);
    check_binary_mask(function, "mask", mask);

    const index_t rows = log_probs.extent(0);
    const auto cols = static_cast<std::size_t>(log_probs.extent(1));
    std::vector<double> scratch(static_cast<std::size_t>(rows));
    const mut_view<double, 1> weights(scratch.data(), {rows});
    const aggregation_counts counts =
        detail::compute_row_weights(function, mask, options.aggregation, weights, reducer);

    const T coef = static_cast<T>(options.coef);
    double total = 0.0, sum_value = 0.0, sum_clamped = 0.0, sum_ratio = 0.0;
    bool overflow = false;
    with_kl_grad_functor<T>(options, [&](const auto estimate) {
        for (index_t b = 0; b < rows; ++b) {
            const auto lp = log_probs.row(b);
            const auto ref = ref_log_probs.row(b);
            const auto old = weighted ? old_log_probs.row(b) : std::span<const T>{};
            const auto msk = mask.row(b);
            const double c_row = weights(b);
            const T wc = coef * static_cast<T>(c_row);
            const auto g = want_grad ? grad_log_probs.row(b) : std::span<T>{};
            const auto tl = want_tokens ? token_losses.row(b) : std::span<T>{};
            double row_loss = 0.0;
            for (std::size_t t = 0; t < cols; ++t) {
                const bool valid = msk[t] != M{0};
                const kl_point<T> p = estimate(lp[t], ref[t]);
                T loss = p.value;
                T grad = p.grad;
                T rho = T{1};
                if (weighted) {
                    rho = std::exp(lp[t] - old[t]);
                    overflow = overflow || (valid && !std::isfinite(rho));
                    // ρ·X and ρ·(X' + X), 0 where the factor is 0 (no inf·0 from an overflowed ρ).
                    loss = p.value == T{0} ? T{0} : rho * p.value;
                    const T inner = p.grad + p.value;
                    grad = inner == T{0} ? T{0} : rho * inner;
                }
                const double ld = static_cast<double>(loss);
                row_loss += valid ? ld : 0.0;
                sum_value += valid ? ld : 0.0;
                sum_clamped += valid ? static_cast<double>(p.clamped) : 0.0;
                sum_ratio += valid ? static_cast<double>(rho) : 0.0;
                if (want_grad) g[t] = valid ? wc * grad : T{0};
                if (want_tokens) tl[t] = loss;
            }
            total += c_row * row_loss;
        }
    });
    if (overflow)
        fail(error_kind::value, function, "log_probs",
             "exp(log_probs - old_log_probs) finite at valid tokens (log-ratio below ~88.7 in float, ~709.8 in "
             "double)",
             "an overflowed importance weight");

    kl_loss_result result;
    result.loss = options.coef * total;
    kl_loss_stats& st = result.stats;
    st.kl_aggregated = total;
    const double n = counts.local_tokens;
    st.valid_tokens = n;
    if (n > 0.0) {
        st.kl_mean = sum_value / n;
        st.clamp_fraction = sum_clamped / n;
        st.ratio_mean = sum_ratio / n;
    }
    if (std::isnan(result.loss))
        fail(error_kind::value, function, "log_probs", "a loss that is not NaN",
             "NaN (importance-weighted terms of +inf and -inf)");
    return result;
}

}  // namespace detail

/// KL-in-loss term, its gradient w.r.t. `log_probs`, and statistics (see this file's comment for
/// the formula and `rlhf::kl_loss_options` for the framework presets).
///
/// Shapes: `log_probs` (current policy), `ref_log_probs` (reference), `mask`, all `[B, T]`;
/// `mask` ∈ {0,1} (bool, integer or floating). Only tokens with m = 1 enter the loss, the
/// gradient and the statistics.
/// Outputs (caller-provided, after the inputs and before `options`; optional: `{}` skips one):
/// `grad_log_probs` `[B, T]` receives d loss / d log_probs (0 on masked tokens);
/// `token_losses` `[B, T]` receives the per-token term `L_bt` at every position.
///
/// Policies: non-finite inputs (any position) are an `rlhf::error` (kind value). Empty mask:
/// that of `rlhf::row_weights` (an error naming `mask` when the aggregation divisor is 0,
/// otherwise loss 0 and gradient 0). Options out of range are config errors naming
/// `options.<field>`. Numerics: without clamps k3 of a log-ratio below ~−88.7 (float) or
/// ~−709.8 (double) is +inf, as in the peers that do not clamp (TRL): the loss is then +inf and
/// the gradient −inf, never NaN.
///
/// Allocates one scratch vector of B doubles; `reducer` sums the aggregation counts across ranks
/// (at most one collective call; the statistics stay local).
template <class T, class M, Reducer R = local_reducer>
kl_loss_result kl_loss(view<T> log_probs, view<T> ref_log_probs, view<M> mask, mut_view<T> grad_log_probs = {},
                       mut_view<T> token_losses = {}, const kl_loss_options& options = {}, R&& reducer = R{}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::kl_loss: values must be float or double");
    return detail::kl_loss_impl<T, M>("rlhf::kl_loss", log_probs, ref_log_probs, view<T>{}, false, mask, options,
                                      grad_log_probs, token_losses, reducer);
}

/// Importance-weighted KL-in-loss term (TRL `use_bias_correction_kl`, DeepSeek-V3.2's unbiased
/// KL): each token's term is multiplied by `ρ = exp(log_probs − old_log_probs)`, which carries
/// gradient. `old_log_probs` `[B, T]` are the behaviour (rollout) log-probs.
///
/// Policies as the unweighted overload, plus: an overflowed ρ at a valid token is an
/// `rlhf::error` (kind value, argument `log_probs`), and so is a NaN loss (terms of +inf and −inf).
/// @note TRL `trl/trainer/grpo_trainer.py: _compute_loss` (`per_token_kl * coef_1`, coef_1 =
/// exp(lp − old) unclamped, before the `delta` clamp).
template <class T, class M, Reducer R = local_reducer>
kl_loss_result kl_loss(view<T> log_probs, view<T> ref_log_probs, view<T> old_log_probs, view<M> mask,
                       mut_view<T> grad_log_probs = {}, mut_view<T> token_losses = {},
                       const kl_loss_options& options = {}, R&& reducer = R{}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::kl_loss: values must be float or double");
    return detail::kl_loss_impl<T, M>("rlhf::kl_loss", log_probs, ref_log_probs, old_log_probs, true, mask, options,
                                      grad_log_probs, token_losses, reducer);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
