#pragma once
/// @file
/// The (clipped) value loss with its closed-form gradient w.r.t. the predicted values, in one
/// fused pass, with every variant the frameworks use as a named option.
///
/// Per token, with `V` the predicted value, `V_old` the rollout value, `R` the target and `m`
/// the mask:
///
/// 1. `R ← R + V_old` when `returns_from_advantages` (the `returns` argument holds advantages);
/// 2. `V_clip = clamp(V, V_old − c, V_old + c)` when `clip_range = c` is set;
/// 3. `ψ(e) = e²` (squared error), or with `huber_delta = δ`: `e²` for `|e| ≤ δ`, else
///    `δ·(2|e| − δ)` (so `½ψ` is the Huber loss);
/// 4. `L = scale · max(ψ(V − R), ψ(V_clip − R))` (pessimistic: the larger error), or
///    `L = scale · ψ(V − R)` without clipping;
/// 5. `loss = coef · Σ_bt m_bt · c_b · L_bt` (`rlhf::aggregation_options`, loss_aggregation.hpp).
///
/// The gradient is exact wherever the loss is differentiable; at kinks it follows LibTorch's
/// autograd conventions, so it equals autograd of the composed torch-op form:
/// `torch.clamp` passes the gradient on its bounds (inclusive), binary `torch.max` splits it in
/// halves on ties (every unclipped token is a tie, `V_clip = V`: ½·ψ'(e) + ½·ψ'(e)),
/// `torch.where` (Huber's two pieces) sends it to the selected piece only.

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
#include "rlhf/options/value_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Statistics of one call over this call's valid tokens (local: not reduced across ranks),
/// accumulated in double. With no valid token every statistic is 0.
struct value_loss_stats {
    /// mean_m[clipped error > unclipped error]: verl `vf_clipfrac`, TRL `val/clipfrac`
    /// (0 without clipping).
    double clip_fraction = 0.0;
    /// mean_m(V): the predicted values (TRL `val/vpred`, verl `critic/vpred_mean`).
    double value_mean = 0.0;
    /// mean_m((V − R)²), unclipped and without Huber: TRL `val/error`.
    double value_error = 0.0;
    /// mean_m(R) of the target used (after `returns_from_advantages`).
    double return_mean = 0.0;
    /// 1 − Var_m(R − V) / Var_m(R) (population variances); 0 when Var_m(R) = 0.
    double explained_variance = 0.0;
    /// Σ m of this call.
    double valid_tokens = 0.0;
    /// Number of valid tokens whose clipped error was the larger (clip_fraction · valid_tokens).
    double clipped_tokens = 0.0;
};

/// Loss and statistics of `rlhf::value_loss`.
struct value_loss_result {
    /// `coef · Σ_bt m_bt · c_b · L_bt`.
    double loss = 0.0;
    value_loss_stats stats{};
};

namespace detail {

/// The per-token constants of the value loss, in the value type.
template <class T>
struct value_loss_params {
    T clip;   // +inf when unclipped: then V_clip = V and the max is a tie
    T delta;  // +inf for the squared error
    T scale;
};

template <class T>
value_loss_params<T> make_value_loss_params(const value_loss_options& o) {
    constexpr T inf = std::numeric_limits<T>::infinity();
    return {o.clip_range ? static_cast<T>(*o.clip_range) : inf, o.huber_delta ? static_cast<T>(*o.huber_delta) : inf,
            static_cast<T>(o.scale)};
}

/// ψ(e): e² within δ, δ·(2|e| − δ) beyond (δ = +inf: e²). Branch-free (`bit_select`), as the
/// rest of the token loop, so that it is SIMD code.
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE T value_error(T e, T delta) noexcept {
    const T a = std::abs(e);
    return bit_select(a <= delta, e * e, delta * (T{2} * a - delta));
}

/// ψ'(e): 2e within δ, 2δ·sign(e) beyond.
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE T value_error_grad(T e, T delta) noexcept {
    return bit_select(std::abs(e) <= delta, T{2} * e, std::copysign(T{2} * delta, e));
}

/// The value loss at one token.
template <class T>
struct value_loss_point {
    T loss;     // scale · max(ψ1, ψ2)
    T grad;     // dL / dV
    T clipped;  // 1 when ψ(V_clip − R) > ψ(V − R)
};

/// Branch-free (selects only). `r` is the target (already advantage + old value if asked).
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE value_loss_point<T> value_loss_at(T v, T old, T r,
                                                                         const value_loss_params<T>& p) noexcept {
    const T lo = old - p.clip;
    const T hi = old + p.clip;
    // clamp(V, lo, hi) as TRL/verl `clip_by_value`: exactly V inside, so the tie is exact.
    const T vc = bit_min(bit_max(v, lo), hi);
    const bool inside = (v >= lo) & (v <= hi);  // torch.clamp passes its gradient on the bounds
    const T e1 = v - r;
    const T e2 = vc - r;
    const T p1 = value_error(e1, p.delta);
    const T p2 = value_error(e2, p.delta);
    const T g1 = value_error_grad(e1, p.delta);
    const T g2 = bit_select(inside, value_error_grad(e2, p.delta), T{0});
    // torch.max(a, b): the larger gets the gradient; a tie splits it in halves.
    const T g = bit_select(p2 > p1, g2, bit_select(p1 > p2, g1, T{0.5} * (g1 + g2)));
    // scale = 0 gives 0, also where ψ or ψ' overflowed (0·inf would be NaN).
    const bool zero = p.scale == T{0};
    return {bit_select(zero, T{0}, p.scale * bit_max(p1, p2)), bit_select(zero, T{0}, p.scale * g),
            bit_select(p2 > p1, T{1}, T{0})};
}

inline void check_value_loss_options(std::string_view function, const value_loss_options& o) {
    if (o.clip_range) check_non_negative(function, "options.clip_range", *o.clip_range);
    if (o.huber_delta) check_positive(function, "options.huber_delta", *o.huber_delta);
    if (!std::isfinite(o.scale))
        fail(error_kind::config, function, "options.scale", "a finite value", number_string(o.scale));
    if (!std::isfinite(o.coef))
        fail(error_kind::config, function, "options.coef", "a finite value", number_string(o.coef));
    check_aggregation_options(function, "options.aggregation.", o.aggregation);
}

/// The options in T must stay what they are: a scale beyond T's range, a Huber δ that rounds to 0.
template <class T>
void check_value_loss_params(std::string_view function, const value_loss_options& o, const value_loss_params<T>& p) {
    if (!std::isfinite(p.scale))
        fail(error_kind::config, function, "options.scale", "a value finite in the value type", number_string(o.scale));
    if (o.huber_delta && !(p.delta > T{0}))
        fail(error_kind::config, function, "options.huber_delta", "a value > 0 in the value type",
             number_string(*o.huber_delta));
}

/// Accumulators of the statistics, in double.
struct value_accumulators {
    double clipped = 0.0, value = 0.0, sq_error = 0.0, target = 0.0, sq_target = 0.0, residual = 0.0, sq_residual = 0.0;
};

/// Tokens per block of the fused pass.
inline constexpr std::size_t value_block = 256;

/// Per-token terms of one block, in the value type (5 KiB in float: they stay in L1). Each is
/// exact in T (a mask times a value), so the double sums formed from them in `add_block_sums`
/// (residuals and squares included) are those of the double terms.
template <class T>
struct value_buffers {
    T loss[value_block], grad[value_block];
    T counted_loss[value_block];  // L where m = 1, else 0
    T value[value_block];         // m·V
    double target[value_block];   // m·R, in double: R + V_old in T overflows beyond T's range
};

/// Adds a block's terms to the row loss and the statistics, in double: every sum in `lanes`
/// partial sums as `lane_sum` (same lanes, same order), one inner loop per sum, all in one loop
/// over the block so that the independent additions overlap.
template <class T>
void add_block_sums(const value_buffers<T>& buf, std::size_t len, double& row_loss, value_accumulators& acc) noexcept {
    double loss[lanes] = {}, value[lanes] = {}, sq_error[lanes] = {}, target[lanes] = {}, sq_target[lanes] = {},
           residual[lanes] = {};
    const auto add = [&](std::size_t i, std::size_t count) {
        for (std::size_t j = 0; j < count; ++j) loss[j] += static_cast<double>(buf.counted_loss[i + j]);
        for (std::size_t j = 0; j < count; ++j) value[j] += static_cast<double>(buf.value[i + j]);
        for (std::size_t j = 0; j < count; ++j) target[j] += buf.target[i + j];
        for (std::size_t j = 0; j < count; ++j) sq_target[j] += buf.target[i + j] * buf.target[i + j];
        for (std::size_t j = 0; j < count; ++j) {
            const double e = buf.target[i + j] - static_cast<double>(buf.value[i + j]);
            residual[j] += e;
            sq_error[j] += e * e;
        }
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
    acc.value += total(value);
    acc.sq_error += total(sq_error);
    acc.target += total(target);
    acc.sq_target += total(sq_target);
    acc.residual += total(residual);
}

/// The checks of a value-loss call that read no value (options and shapes; an empty output view
/// is not wanted), shared by `rlhf::value_loss` and `rlhf::cuda::value_loss`.
template <class T, class M>
void check_value_loss_call(std::string_view function, view<T> values, view<T> old_values, view<T> returns, view<M> mask,
                           mut_view<T> grad_values, mut_view<T> token_losses, const value_loss_options& options) {
    check_value_loss_options(function, options);
    check_same_shape(function, "old_values", old_values, "values", values);
    check_same_shape(function, "returns", returns, "values", values);
    check_same_shape(function, "mask", mask, "values", values);
    if (grad_values.data() != nullptr) check_same_shape(function, "grad_values", grad_values, "values", values);
    if (token_losses.data() != nullptr) check_same_shape(function, "token_losses", token_losses, "values", values);
}
}  // namespace detail

/// Value loss, its gradient w.r.t. `values`, and statistics (see this file's comment for the
/// formula and `rlhf::value_loss_options` for the framework presets).
///
/// Shapes: `values` (the critic's current predictions, "vpreds"), `old_values` (the rollout
/// values), `returns` (the targets, or the advantages with `returns_from_advantages`), `mask`,
/// all `[B, T]`; `mask` ∈ {0,1} (bool, integer or floating). Only tokens with m = 1 enter the
/// loss, the gradient and the statistics.
/// Outputs (caller-provided, after the inputs and before `options`; optional: `{}` skips one):
/// `grad_values` `[B, T]` receives d loss / d values (0 on masked tokens); `token_losses`
/// `[B, T]` receives `L_bt` (before aggregation and `coef`) at every position.
///
/// Policies: non-finite inputs (any position, masked ones included) are an `rlhf::error` (kind
/// value). The empty-mask policy is that of `rlhf::row_weights`: an error naming `mask` when the
/// aggregation divisor is 0, otherwise loss 0 and gradient 0. Options out of range are config
/// errors naming `options.<field>` (a negative `clip_range`, a non-positive `huber_delta`).
/// Numerics: for finite inputs the loss is finite unless a squared error overflows (|V − R|
/// beyond ~1e19 in float), then +inf — never NaN.
///
/// One pass over the inputs (the checks and the mask counts, row by row, before any output is
/// written), one fused pass over the data (per block of 256 tokens, a branch-free SIMD pass into
/// buffers in L1, then the sums in partial lanes). Allocates one
/// scratch vector of B doubles. `reducer` sums the aggregation counts across ranks (one collective call at
/// most; the statistics stay local).
template <class T, class M, Reducer R = local_reducer>
value_loss_result value_loss(view<T> values, view<T> old_values, view<T> returns, view<M> mask,
                             mut_view<T> grad_values = {}, mut_view<T> token_losses = {},
                             const value_loss_options& options = {}, R&& reducer = R{}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::value_loss: values must be float or double");
    constexpr std::string_view function = "rlhf::value_loss";
    detail::check_value_loss_call(function, values, old_values, returns, mask, grad_values, token_losses, options);
    const bool want_grad = grad_values.data() != nullptr;
    const bool want_tokens = token_losses.data() != nullptr;
    // One pass over the inputs checks them and counts the mask; the fused pass follows.
    const index_t rows = values.extent(0);
    const auto cols = static_cast<std::size_t>(values.extent(1));
    std::vector<double> scratch(static_cast<std::size_t>(rows));
    const mut_view<double, 1> weights(scratch.data(), {rows});
    detail::check_and_count_rows(
        function,
        std::array{std::pair{std::string_view("values"), values}, std::pair{std::string_view("old_values"), old_values},
                   std::pair{std::string_view("returns"), returns}},
        "mask", mask, weights);
    const aggregation_counts counts =
        detail::weights_from_counts(function, mask.extents(), options.aggregation, weights, reducer);

    const auto params = detail::make_value_loss_params<T>(options);
    detail::check_value_loss_params(function, options, params);
    const bool from_advantages = options.returns_from_advantages;
    const double old_weight = from_advantages ? 1.0 : 0.0;  // a product, not a select: the loop stays SIMD
    detail::value_accumulators acc;
    double total = 0.0;
    detail::value_buffers<T> buf;
    for (index_t b = 0; b < rows; ++b) {
        const auto v = values.row(b);
        const auto old = old_values.row(b);
        const auto ret = returns.row(b);
        const auto msk = mask.row(b);
        const double c_row = weights(b);
        const T wc = static_cast<T>(options.coef * c_row);  // the product in double: each factor may overflow T
        const auto g = want_grad ? grad_values.row(b) : std::span<T>{};
        const auto tl = want_tokens ? token_losses.row(b) : std::span<T>{};
        double row_loss = 0.0;
        // Blocks of tokens: a branch-free pass (SIMD code) writes each token's terms to buffers
        // in L1, then the sums run in partial lanes.
        for (std::size_t start = 0; start < cols; start += detail::value_block) {
            const std::size_t len = std::min(detail::value_block, cols - start);
            std::int32_t clipped = 0;  // a 0/1 count as an integer: exact, kept in SIMD lanes
            for (std::size_t k = 0; k < len; ++k) {
                const std::size_t t = start + k;
                const T m = static_cast<T>(msk[t]);  // 0 or 1 (checked)
                const bool valid = m != T{0};
                const T target = ret[t] + detail::bit_select(from_advantages, old[t], T{0});
                const detail::value_loss_point<T> p = detail::value_loss_at(v[t], old[t], target, params);
                buf.loss[k] = p.loss;
                // 0 without weight or gradient, even if the other factor overflowed (no 0·inf).
                buf.grad[k] = detail::bit_select(valid & (wc != T{0}) & (p.grad != T{0}), wc * p.grad, T{0});
                buf.counted_loss[k] = detail::bit_select(valid, p.loss, T{0});
                buf.value[k] = m * v[t];
                buf.target[k] =
                    static_cast<double>(m) * (static_cast<double>(ret[t]) + old_weight * static_cast<double>(old[t]));
                clipped += static_cast<std::int32_t>(valid & (p.clipped != T{0}));
            }
            acc.clipped += static_cast<double>(clipped);
            detail::add_block_sums(buf, len, row_loss, acc);
            if (want_grad) std::copy(buf.grad, buf.grad + len, g.begin() + static_cast<std::ptrdiff_t>(start));
            if (want_tokens) std::copy(buf.loss, buf.loss + len, tl.begin() + static_cast<std::ptrdiff_t>(start));
        }
        if (c_row != 0.0) total += c_row * row_loss;  // a weightless row adds 0, even with an overflowed loss
    }
    acc.sq_residual = acc.sq_error;

    value_loss_result result;
    result.loss = options.coef == 0.0 ? 0.0 : options.coef * total;
    value_loss_stats& st = result.stats;
    const double n = counts.local_tokens;
    st.valid_tokens = n;
    if (n > 0.0) {
        st.clipped_tokens = acc.clipped;
        st.clip_fraction = acc.clipped / n;
        st.value_mean = acc.value / n;
        st.value_error = acc.sq_error / n;
        st.return_mean = acc.target / n;
        const double residual_mean = acc.residual / n;
        const double var_target = std::max(acc.sq_target / n - st.return_mean * st.return_mean, 0.0);
        const double var_residual = std::max(acc.sq_residual / n - residual_mean * residual_mean, 0.0);
        st.explained_variance = var_target > 0.0 ? 1.0 - var_residual / var_target : 0.0;
    }
    return result;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
