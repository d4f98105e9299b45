#pragma once
/// @file
/// Loss aggregation: how a `[B, T]` matrix of per-token losses becomes one number.
///
/// Every mode of `rlhf::loss_aggregation` is a weighted sum `Σ_bt w_bt · L_bt` with the
/// per-token weight `w_bt = m_bt · c_b` (one coefficient per row), so a loss kernel computes
/// the loss and its gradient `w_bt · ∂L_bt/∂x` in the same pass:
///
/// | mode                      | c_b                                       |
/// | ------------------------- | ----------------------------------------- |
/// | `token_mean`              | dp_size / N_tokens                        |
/// | `seq_mean_token_sum`      | dp_size / N_rows            (0 if n_b = 0)|
/// | `seq_mean_token_mean`     | dp_size / ((n_b + ε) · N_rows) (0 if n_b = 0)|
/// | `seq_mean_token_sum_norm` | 1 / normalizer   (no dp_size, as verl)    |
///
/// `n_b = Σ_t m_bt`; `N_tokens = Σ_b n_b` and `N_rows` = the number of rows with `n_b > 0`,
/// summed over data-parallel ranks by a `Reducer`, or given explicitly (verl
/// `batch_num_tokens` / `global_batch_size`). `dp_size` compensates for the gradient averaging
/// of DDP/FSDP across ranks.
///
/// @note verl `verl/trainer/ppo/core_algos.py: agg_loss` (all four modes, `dp_size`,
/// `batch_num_tokens`, `global_batch_size`, `loss_scale_factor`, the 1e-8 of
/// seq-mean-token-mean, empty rows excluded from the row count).
/// @note OpenRLHF `openrlhf/models/loss.py: aggregate_loss`: `token_level_loss=True` is
/// `token_mean`, `False` is `seq_mean_token_mean` (same 1e-8, same empty-row rule).
/// @note ColossalChat v2 `coati/models/loss.py: PolicyLoss` is `seq_mean_token_mean` with
/// `global_sequence_count = B` (its batch mean counts empty rows) and `token_count_epsilon = 0`
/// (v1: 1e-8); its distributed GRPO `sample_level` is the same with ε = 1e-8, its
/// `token_level` is `token_mean` with `global_token_count = total_effective_tokens + 1e-8`.
/// TRL and DeepSpeed-Chat use `token_mean` (no ε). Dr.GRPO is `seq_mean_token_sum_norm`.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/vector_math.hpp"
#include "rlhf/options/loss_aggregation.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// The counts behind a set of row weights.
struct aggregation_counts {
    double local_tokens = 0.0;     ///< Σ m over this call's mask
    double local_sequences = 0.0;  ///< rows of this call's mask with a valid token
    double divisor = 0.0;          ///< the global divisor used: N_tokens, N_rows or the normalizer
};

namespace detail {

inline void check_aggregation_options(std::string_view function, const std::string& prefix,
                                      const aggregation_options& options) {
    switch (options.mode) {
        case loss_aggregation::token_mean:
        case loss_aggregation::seq_mean_token_mean:
        case loss_aggregation::seq_mean_token_sum:
        case loss_aggregation::seq_mean_token_sum_norm:
            break;
        default:  // an unknown value would leave the token counts as weights
            fail(error_kind::config, function, prefix + "mode",
                 "one of 'token-mean' 'seq-mean-token-mean' 'seq-mean-token-sum' 'seq-mean-token-sum-norm'",
                 "an unknown value");
    }
    check_positive(function, prefix + "dp_size", options.dp_size);
    check_non_negative(function, prefix + "token_count_epsilon", options.token_count_epsilon);
    // A divisor so small that the weight dp_size / divisor overflows is refused too (an infinite
    // weight turns a zero loss into NaN).
    const auto check_divisor = [&](std::string_view name, double divisor, double numerator) {
        check_positive(function, prefix + std::string(name), divisor);
        if (!std::isfinite(numerator / divisor))
            fail(error_kind::config, function, prefix + std::string(name),
                 "a value for which " + number_string(numerator) + " / value is finite", number_string(divisor));
    };
    if (options.global_token_count) check_divisor("global_token_count", *options.global_token_count, options.dp_size);
    if (options.global_sequence_count)
        check_divisor("global_sequence_count", *options.global_sequence_count, options.dp_size);
    if (options.normalizer) check_divisor("normalizer", *options.normalizer, 1.0);
}

/// c_b of a row with n_b = `n` valid tokens, given the mode's global divisor (> 0): the table in
/// this file's comment. Host-device under nvcc (the CUDA kernels use the same formula).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double row_weight(loss_aggregation mode, double n, double divisor,
                                                         double dp_size, double token_count_epsilon) noexcept {
    switch (mode) {
        case loss_aggregation::token_mean:
            return dp_size / divisor;
        case loss_aggregation::seq_mean_token_sum:
            return n > 0.0 ? dp_size / divisor : 0.0;
        case loss_aggregation::seq_mean_token_mean:
            return n > 0.0 ? dp_size / ((n + token_count_epsilon) * divisor) : 0.0;
        case loss_aggregation::seq_mean_token_sum_norm:
            return 1.0 / divisor;
    }
    return 0.0;  // not reached: the mode was checked
}

/// Sums one double across participants.
template <class R>
double reduce_one(R& reducer, double value) {
    std::array<double, 1> values{value};
    reducer.sum_all(std::span<double>(values));
    return values[0];
}

/// Turns the row counts n_b that `weights` holds on entry into the coefficients c_b: the global
/// divisor (explicit, or through the reducer: exactly one collective call when the mode needs a
/// count that was not given), then the coefficients. Options must have been checked.
template <class R>
aggregation_counts weights_from_counts(std::string_view function, const extents_t<2>& mask_extents,
                                       const aggregation_options& options, mut_view<double, 1> weights, R& reducer) {
    const index_t rows = weights.extent(0);
    const index_t cols = mask_extents[1];
    aggregation_counts counts;
    for (index_t b = 0; b < rows; ++b) {
        const double n = weights(b);
        counts.local_tokens += n;
        counts.local_sequences += n > 0.0 ? 1.0 : 0.0;
    }
    const double dp = options.dp_size;
    switch (options.mode) {
        case loss_aggregation::token_mean: {
            const double n_tokens =
                options.global_token_count ? *options.global_token_count : reduce_one(reducer, counts.local_tokens);
            if (!(n_tokens > 0.0))
                fail(error_kind::value, function, "mask", "at least one valid token (token-mean divides by Σ mask)",
                     "no valid token");
            counts.divisor = n_tokens;
            for (index_t b = 0; b < rows; ++b)
                weights(b) = row_weight(options.mode, weights(b), n_tokens, dp, options.token_count_epsilon);
            break;
        }
        case loss_aggregation::seq_mean_token_sum:
        case loss_aggregation::seq_mean_token_mean: {
            const double n_rows = options.global_sequence_count ? *options.global_sequence_count
                                                                : reduce_one(reducer, counts.local_sequences);
            if (!(n_rows > 0.0))
                fail(error_kind::value, function, "mask",
                     "at least one row with a valid token (" + std::string(to_string(options.mode)) +
                         " divides by the row count)",
                     "no valid token");
            counts.divisor = n_rows;
            for (index_t b = 0; b < rows; ++b)
                weights(b) = row_weight(options.mode, weights(b), n_rows, dp, options.token_count_epsilon);
            break;
        }
        case loss_aggregation::seq_mean_token_sum_norm: {
            const double k = options.normalizer ? *options.normalizer : static_cast<double>(cols);
            if (!(k > 0.0))
                fail(error_kind::value, function, "mask",
                     "at least one column (seq-mean-token-sum-norm divides by T when no normalizer is set)",
                     shape_string(mask_extents));
            counts.divisor = k;
            for (index_t b = 0; b < rows; ++b)
                weights(b) = row_weight(options.mode, weights(b), k, dp, options.token_count_epsilon);
            break;
        }
    }
    return counts;
}

/// n_b = Σ_t m_bt of one mask row (exact: a count), in partial lanes.
template <class M>
[[nodiscard]] double row_count(std::span<const M> row) noexcept {
    return lane_sum(row.data(), row.size());
}

/// Writes c_b into `weights` (length B): the counts (a pass over the mask only), then
/// `weights_from_counts`. Options must have been checked.
template <class M, class R>
aggregation_counts compute_row_weights(std::string_view function, view<M> mask, const aggregation_options& options,
                                       mut_view<double, 1> weights, R& reducer) {
    for (index_t b = 0; b < mask.extent(0); ++b) weights(b) = row_count(mask.row(b));
    return weights_from_counts(function, mask.extents(), options, weights, reducer);
}

/// A loss kernel's input checks and its mask counts in one pass over the rows: each row of every
/// input is scanned (non-finite values; mask entries other than 0 and 1) and n_b counted while
/// the rows are in L1, where a pass per check read the whole input once per check. Nothing is
/// written but `counts` (n_b), so the inputs are still validated before any output is. On a
/// failed scan the full checks run in their order (each of `values`, then `mask`), so the error
/// is theirs: the first offender of the first bad argument.
template <class T, class M, std::size_t N>
void check_and_count_rows(std::string_view function, const std::array<std::pair<std::string_view, view<T>>, N>& values,
                          std::string_view mask_name, view<M> mask, mut_view<double, 1> counts) {
    bool bad = false;
    for (index_t b = 0; b < mask.extent(0); ++b) {
        for (const auto& [name, v] : values) {
            const auto row = v.row(b);
            bad |= any_non_finite(row.data(), static_cast<index_t>(row.size()));
        }
        // The mask's check and count in one integer loop (SIMD code; a sum in double waits on
        // its additions): once the mask is binary, its sum is the number of nonzero entries.
        const auto m = mask.row(b);
        std::int64_t nonzero = 0;
        unsigned non_binary = 0;
        for (const M x : m) {
            nonzero += static_cast<std::int64_t>(x != M{0});
            non_binary |= static_cast<unsigned>((x != M{0}) & (x != M{1}));
        }
        bad |= non_binary != 0;
        counts(b) = static_cast<double>(nonzero);
    }
    if (!bad) return;
    for (const auto& [name, v] : values) check_finite(function, name, v);
    check_binary_mask(function, mask_name, mask);
}

}  // namespace detail

/// Per-row aggregation coefficients c_b (the token weight is `m_bt · c_b`).
///
/// `mask` `[B, T]` ∈ {0,1}; `weights` length B, the output (written; before `options`). Rows
/// with no valid token get 0 in the `seq_mean_*` modes (they are excluded from the row count, as
/// in verl and OpenRLHF).
/// Empty-mask policy: an `rlhf::error` (kind value, argument `mask`) when the mode's divisor is
/// 0 (no valid token anywhere for `token_mean`, no non-empty row for `seq_mean_*`, T = 0 for
/// the default sum-norm divisor); when the divisor is positive (explicit or summed over ranks by
/// `reducer`) an all-zero local mask is fine and every weight of its tokens is 0.
/// `reducer` is called at most once (a collective: every rank must call with the same options).
template <class M, Reducer R = local_reducer>
aggregation_counts row_weights(view<M> mask, mut_view<double, 1> weights, const aggregation_options& options,
                               R&& reducer = R{}) {
    constexpr std::string_view function = "rlhf::row_weights";
    detail::check_aggregation_options(function, "options.", options);
    check_binary_mask(function, "mask", mask);
    check_length(function, "weights", weights.extent(0), mask.extent(0), "one per row of 'mask'");
    return detail::compute_row_weights(function, mask, options, weights, reducer);
}

/// Aggregates a per-token loss matrix: returns `Σ_bt m_bt · c_b · L_bt` (see this file's table).
///
/// `losses` `[B, T]` (finite), `mask` `[B, T]` ∈ {0,1}. `grad_losses`, the optional output
/// (before `options`; `{}` skips it), must be `[B, T]` if it has data and receives
/// `∂ loss / ∂ losses = m_bt · c_b` (the backward of the aggregation).
/// The sum is accumulated in double. Empty-mask policy: that of `rlhf::row_weights`.
/// Allocates one scratch vector of B doubles per call.
/// @note reproduces verl `agg_loss` and OpenRLHF `aggregate_loss` (see this file's comment).
template <class T, class M, Reducer R = local_reducer>
double aggregate(view<T> losses, view<M> mask, mut_view<T> grad_losses = {}, const aggregation_options& options = {},
                 R&& reducer = R{}) {
    constexpr std::string_view function = "rlhf::aggregate";
    detail::check_aggregation_options(function, "options.", options);
    check_same_shape(function, "mask", mask, "losses", losses);
    if (grad_losses.data() != nullptr) check_same_shape(function, "grad_losses", grad_losses, "losses", losses);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "losses", losses);

    const index_t rows = losses.extent(0);
    std::vector<double> scratch(static_cast<std::size_t>(rows));
    const mut_view<double, 1> weights(scratch.data(), {rows});
    detail::compute_row_weights(function, mask, options, weights, reducer);

    double total = 0.0;
    for (index_t b = 0; b < rows; ++b) {
        const auto l = losses.row(b);
        const auto m = mask.row(b);
        const double c = weights(b);
        double row_sum = 0.0;
        for (std::size_t t = 0; t < l.size(); ++t) row_sum += static_cast<double>(m[t]) * static_cast<double>(l[t]);
        total += c * row_sum;
        if (grad_losses.data() != nullptr) {
            const auto g = grad_losses.row(b);
            const T ct = static_cast<T>(c);
            for (std::size_t t = 0; t < g.size(); ++t) g[t] = static_cast<T>(m[t]) * ct;
        }
    }
    return total;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
