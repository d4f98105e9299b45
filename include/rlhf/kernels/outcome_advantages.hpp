#pragma once
/// @file
/// Critic-free advantage estimators over outcome rewards: GRPO, Dr.GRPO, RLOO, OPO, REINFORCE++,
/// REINFORCE++-baseline and ReMax, and the reverse discounted (reward-to-go) returns they build on.
///
/// Shapes: `token_rewards`, `mask`, `advantages`, `returns` are `[B, T]`, `mask` ∈ {0, 1};
/// `group_ids`, `scores`, `reward_baselines` are `[B]`. Rows with equal `group_ids` form a group
/// (the prompt uid); ids are arbitrary int64 values in any order, not necessarily contiguous.
/// The score of a row is s_i = Σ_t token_rewards[i, t] over every position, masked ones included,
/// as verl computes it: put the sequence reward on a valid token and zeros elsewhere.
///
/// Edge cases, the same for every estimator here:
/// - non-finite rewards, scores or baselines (masked positions included): `rlhf::error` (value);
/// - a mask entry other than 0 or 1: `rlhf::error` (value) naming `mask`;
/// - `group_ids` of a length other than B: `rlhf::error` (shape) naming `group_ids`;
/// - a group of one row: `singleton_group_policy` (default `raw_score`, verl's behaviour);
/// - an empty row (mask all zero) keeps its score in its group's statistics (as verl) and gets
///   advantages 0 wherever the estimator multiplies by the mask;
/// - too few valid tokens for a whitening: `whiten_options::small_sample` (default: raise).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/vector_math.hpp"
#include "rlhf/options/outcome_advantages.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

namespace detail {

/// Which baseline a group estimator subtracts.
enum class group_rule_kind { grpo, rloo, mean, opo };

struct group_rule {
    group_rule_kind kind = group_rule_kind::mean;
    bool normalize_by_std = false;
    double epsilon = 0.0;
    variance_estimator std_estimator = variance_estimator::unbiased;
    singleton_group_policy singleton = singleton_group_policy::raw_score;
};

/// The advantage of the row of a singleton group under `rule.singleton` `raw_score` or `zero`
/// (host-device: the CUDA kernels apply it too).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double singleton_advantage(const group_rule& rule, double value) noexcept {
    if (rule.singleton == singleton_group_policy::zero) return 0.0;
    // verl: mean 0 and std 1 for a singleton, so GRPO still divides by 1 + ε.
    return rule.kind == group_rule_kind::grpo && rule.normalize_by_std ? value / (1.0 + rule.epsilon) : value;
}

/// A group's advantages as `(value − baseline)·scale / divisor`.
struct group_coefficients {
    double baseline;
    double scale;    ///< RLOO's n / (n − 1)
    double divisor;  ///< GRPO's std + ε (divided, not multiplied by a reciprocal, as the peers do)
};

/// The coefficients of a group of `n >= 2` rows under `rule`, from its mean score, `squares` =
/// Σ (s − mean)² (read by GRPO with std normalisation only) and, for OPO, `weighted` = Σ len·s and
/// `total` = Σ len. Host-device (the CUDA kernels use it too).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE group_coefficients coefficients_of_group(const group_rule& rule, double n,
                                                                                double mean, double squares,
                                                                                double weighted,
                                                                                double total) noexcept {
    group_coefficients c{mean, 1.0, 1.0};
    switch (rule.kind) {
        case group_rule_kind::grpo:
            if (rule.normalize_by_std) {
                const double count_divisor = rule.std_estimator == variance_estimator::unbiased ? n - 1.0 : n;
                c.divisor = std::sqrt(squares / count_divisor) + rule.epsilon;
            }
            break;
        case group_rule_kind::rloo:
            c.scale = n / (n - 1.0);  // s − (Σ − s)/(n − 1) = (s − mean)·n/(n − 1)
            break;
        case group_rule_kind::mean:
            break;
        case group_rule_kind::opo:
            c.baseline = total > 0.0 ? weighted / total : 0.0;
            break;
    }
    return c;
}

/// The advantage of a row of score `value` in a group of coefficients `c`. Host-device.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double group_advantage(const group_coefficients& c, double value) noexcept {
    return (value - c.baseline) * c.scale / c.divisor;
}

/// Replaces `values[i]` (the score of row i) by its advantage under `rule`, group by group.
/// `lengths` (OPO only) holds the number of valid tokens per row. Scratch: one index per row.
inline void apply_group_rule(std::string_view function, view<std::int64_t, 1> group_ids, std::span<double> values,
                             std::span<const double> lengths, const group_rule& rule) {
    // Unknown enum values would act as another policy without a word.
    if (rule.singleton != singleton_group_policy::raw_score && rule.singleton != singleton_group_policy::zero &&
        rule.singleton != singleton_group_policy::raise)
        fail(error_kind::config, function, "singleton", "one of 'raw_score' 'zero' 'raise'", "an unknown value");
    if (rule.std_estimator != variance_estimator::unbiased && rule.std_estimator != variance_estimator::biased)
        fail(error_kind::config, function, "std_estimator", "one of 'unbiased' 'biased'", "an unknown value");
    const auto rows = static_cast<index_t>(values.size());
    std::vector<index_t> order(values.size());
    std::iota(order.begin(), order.end(), index_t{0});
    // Rows of a group become one run, in row order (the order the frameworks stack them in).
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return group_ids(a) < group_ids(b); });
    const auto at = [](index_t i) { return static_cast<std::size_t>(i); };
    for (index_t first = 0, last = 0; first < rows; first = last) {
        const std::int64_t id = group_ids(order[at(first)]);
        last = first + 1;
        while (last < rows && group_ids(order[at(last)]) == id) ++last;
        const index_t count = last - first;
        if (count == 1) {
            const index_t row = order[at(first)];
            switch (rule.singleton) {
                case singleton_group_policy::raise:
                    fail(error_kind::value, function, "group_ids",
                         "groups of at least 2 rows (singleton_group_policy::raise)",
                         "group " + std::to_string(id) + " with 1 row (row " + std::to_string(row) + ")");
                case singleton_group_policy::zero:
                case singleton_group_policy::raw_score:
                    values[at(row)] = singleton_advantage(rule, values[at(row)]);
                    break;
            }
            continue;
        }
        const auto n = static_cast<double>(count);
        double sum = 0.0;
        for (index_t k = first; k < last; ++k) sum += values[at(order[at(k)])];
        const double mean = sum / n;
        double squares = 0.0;
        if (rule.kind == group_rule_kind::grpo && rule.normalize_by_std)
            for (index_t k = first; k < last; ++k) {
                const double centred = values[at(order[at(k)])] - mean;
                squares += centred * centred;
            }
        double weighted = 0.0;
        double total = 0.0;
        if (rule.kind == group_rule_kind::opo)
            for (index_t k = first; k < last; ++k) {
                const index_t row = order[at(k)];
                weighted += lengths[at(row)] * values[at(row)];
                total += lengths[at(row)];
            }
        const group_coefficients c = coefficients_of_group(rule, n, mean, squares, weighted, total);
        for (index_t k = first; k < last; ++k) {
            double& value = values[at(order[at(k)])];
            value = group_advantage(c, value);
        }
    }
}

/// Row sums of `[B, T]` values (or mask entries), accumulated in double.
template <class T>
[[nodiscard]] std::vector<double> row_sums(view<T> values) {
    std::vector<double> sums(static_cast<std::size_t>(values.extent(0)));
    for (index_t i = 0; i < values.extent(0); ++i) {
        const auto row = values.row(i);
        sums[static_cast<std::size_t>(i)] = lane_sum(row.data(), row.size());  // partial sums: SIMD code
    }
    return sums;
}

/// out[i, t] = row_values[i] · m[i, t].
template <class T, class M>
void broadcast_rows(std::span<const double> row_values, view<M> mask, mut_view<T> out) {
    const index_t cols = out.extent(1);
    for (index_t i = 0; i < out.extent(0); ++i) {
        const auto value = static_cast<T>(row_values[static_cast<std::size_t>(i)]);
        const M* m = mask.row(i).data();
        T* o = out.row(i).data();
        // A select, not value·m: a value beyond T's range (+-inf) times a 0 mask would be NaN.
        for (index_t t = 0; t < cols; ++t) o[t] = detail::bit_select(m[t] != M{0}, value, T{0});
    }
}

/// The checks every `[B, T]` group estimator starts with.
template <class T, class M>
void check_group_inputs(std::string_view function, view<T> token_rewards, view<M> mask, view<std::int64_t, 1> group_ids,
                        mut_view<T> advantages) {
    check_same_shape(function, "mask", mask, "token_rewards", token_rewards);
    check_length(function, "group_ids", group_ids.extent(0), token_rewards.extent(0), "one per row of 'token_rewards'");
    check_same_shape(function, "advantages", advantages, "token_rewards", token_rewards);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "token_rewards", token_rewards);
}

/// The checks every `[B]` group estimator starts with.
template <class T>
void check_group_scores(std::string_view function, view<T, 1> scores, view<std::int64_t, 1> group_ids,
                        mut_view<T, 1> advantages) {
    check_length(function, "group_ids", group_ids.extent(0), scores.extent(0), "one per element of 'scores'");
    check_same_shape(function, "advantages", advantages, "scores", scores);
    check_finite(function, "scores", scores);
}

inline void check_grpo_options(std::string_view function, const grpo_options& options) {
    if (options.normalize_by_std) check_positive(function, "epsilon", options.epsilon);
}

/// `[B, T]` group estimator: scores, group rule, broadcast times the mask.
template <class T, class M>
void group_token_advantages(std::string_view function, view<T> token_rewards, view<M> mask,
                            view<std::int64_t, 1> group_ids, mut_view<T> advantages, const group_rule& rule) {
    check_group_inputs(function, token_rewards, mask, group_ids, advantages);
    std::vector<double> values = row_sums(token_rewards);
    std::vector<double> lengths;
    if (rule.kind == group_rule_kind::opo) lengths = row_sums(mask);
    apply_group_rule(function, group_ids, values, lengths, rule);
    broadcast_rows<T, M>(values, mask, advantages);
}

/// `[B]` group estimator.
template <class T>
void group_score_advantages(std::string_view function, view<T, 1> scores, view<std::int64_t, 1> group_ids,
                            mut_view<T, 1> advantages, const group_rule& rule) {
    check_group_scores(function, scores, group_ids, advantages);
    std::vector<double> values(static_cast<std::size_t>(scores.extent(0)));
    for (index_t i = 0; i < scores.extent(0); ++i) values[static_cast<std::size_t>(i)] = static_cast<double>(scores(i));
    apply_group_rule(function, group_ids, values, {}, rule);
    for (index_t i = 0; i < scores.extent(0); ++i) advantages(i) = static_cast<T>(values[static_cast<std::size_t>(i)]);
}

/// An unknown `return_masking` would leave the returns unwritten.
inline void check_return_masking(std::string_view function, return_masking masking) {
    if (masking != return_masking::reset_at_masked && masking != return_masking::zero_masked &&
        masking != return_masking::skip_masked)
        fail(error_kind::config, function, "masking", "one of 'reset_at_masked' 'zero_masked' 'skip_masked'",
             "an unknown value");
}

/// The reverse scan of `compute_cumulative_returns`, without checks.
template <class T, class M>
void reverse_returns(view<T> rewards, view<M> mask, double gamma, return_masking masking, mut_view<T> returns) {
    const index_t cols = rewards.extent(1);
    for (index_t i = 0; i < rewards.extent(0); ++i) {
        const T* r = rewards.row(i).data();
        const M* m = mask.row(i).data();
        T* out = returns.row(i).data();
        double running = 0.0;
        switch (masking) {
            case return_masking::reset_at_masked:
                for (index_t t = cols; t-- > 0;) {
                    running = static_cast<double>(r[t]) + gamma * running;
                    out[t] = static_cast<T>(running);
                    running *= static_cast<double>(m[t]);
                }
                break;
            case return_masking::zero_masked:
                for (index_t t = cols; t-- > 0;) {
                    running = static_cast<double>(r[t]) * static_cast<double>(m[t]) + gamma * running;
                    out[t] = static_cast<T>(running);
                }
                break;
            case return_masking::skip_masked:
                for (index_t t = cols; t-- > 0;) {
                    const auto valid = static_cast<double>(m[t]);
                    const double next = static_cast<double>(r[t]) + gamma * running;
                    running = valid * next + (1.0 - valid) * running;
                    out[t] = static_cast<T>(valid * running);
                }
                break;
        }
    }
}

}  // namespace detail

/// GRPO advantages: A[i, t] = (s_i − mean_g) / (std_g + ε) · mask[i, t], s_i = Σ_t token_rewards[i, t].
/// `[B, T]` rewards and mask, `[B]` group ids; `advantages` `[B, T]` may be `token_rewards`' buffer.
/// The peers' returns equal these advantages. Edge cases: see the file comment; a group whose scores
/// are all equal gets advantages 0 up to the rounding of the mean (ε > 0 is required when normalising).
/// @note verl `compute_grpo_outcome_advantage` (`verl/trainer/ppo/core_algos.py`) with the defaults;
///       other peers: see `grpo_options`.
template <class T, class M>
void compute_grpo_advantages(view<T> token_rewards, view<M> mask, view<std::int64_t, 1> group_ids,
                             mut_view<T> advantages, const grpo_options& options = {}) {
    constexpr std::string_view function = "rlhf::compute_grpo_advantages";
    detail::check_grpo_options(function, options);
    detail::group_token_advantages(function, token_rewards, mask, group_ids, advantages,
                                   {detail::group_rule_kind::grpo, options.normalize_by_std, options.epsilon,
                                    options.std_estimator, options.singleton});
}

/// GRPO advantages of per-sequence scores: A_i = (s_i − mean_g) / (std_g + ε), all `[B]`.
/// @note ChatLearn `AdvantageComputer` is `{.epsilon = 1e-5, .std_estimator = variance_estimator::biased,
///       .singleton = singleton_group_policy::zero}` on the scores of one call (ChatLearn also keeps
///       incomplete groups across calls; pass whole groups here).
template <class T>
void compute_grpo_advantages(view<T, 1> scores, view<std::int64_t, 1> group_ids, mut_view<T, 1> advantages,
                             const grpo_options& options = {}) {
    constexpr std::string_view function = "rlhf::compute_grpo_advantages";
    detail::check_grpo_options(function, options);
    detail::group_score_advantages(function, scores, group_ids, advantages,
                                   {detail::group_rule_kind::grpo, options.normalize_by_std, options.epsilon,
                                    options.std_estimator, options.singleton});
}

/// Dr.GRPO advantages: A[i, t] = (s_i − mean_g) · mask[i, t] (GRPO without the std normalisation).
/// @note verl `compute_grpo_outcome_advantage` with `norm_adv_by_std_in_grpo=False`.
template <class T, class M>
void compute_dr_grpo_advantages(view<T> token_rewards, view<M> mask, view<std::int64_t, 1> group_ids,
                                mut_view<T> advantages, const dr_grpo_options& options = {}) {
    detail::group_token_advantages(
        "rlhf::compute_dr_grpo_advantages", token_rewards, mask, group_ids, advantages,
        {detail::group_rule_kind::mean, false, 0.0, variance_estimator::unbiased, options.singleton});
}

/// Dr.GRPO advantages of per-sequence scores: A_i = s_i − mean_g, all `[B]`.
/// @note OpenRLHF `dr_grpo` / `reinforce_baseline` shaping of the sequence rewards
///       (`openrlhf/trainer/ppo_utils/experience_maker.py`), with `singleton_group_policy::raise`.
template <class T>
void compute_dr_grpo_advantages(view<T, 1> scores, view<std::int64_t, 1> group_ids, mut_view<T, 1> advantages,
                                const dr_grpo_options& options = {}) {
    detail::group_score_advantages(
        "rlhf::compute_dr_grpo_advantages", scores, group_ids, advantages,
        {detail::group_rule_kind::mean, false, 0.0, variance_estimator::unbiased, options.singleton});
}

/// RLOO advantages: A[i, t] = (s_i − mean of the other rows of the group) · mask[i, t].
/// @note verl `compute_rloo_outcome_advantage` with the defaults.
template <class T, class M>
void compute_rloo_advantages(view<T> token_rewards, view<M> mask, view<std::int64_t, 1> group_ids,
                             mut_view<T> advantages, const rloo_options& options = {}) {
    detail::group_token_advantages(
        "rlhf::compute_rloo_advantages", token_rewards, mask, group_ids, advantages,
        {detail::group_rule_kind::rloo, false, 0.0, variance_estimator::unbiased, options.singleton});
}

/// RLOO advantages of per-sequence scores, all `[B]`.
/// @note OpenRLHF `rloo` shaping of the sequence rewards, with `singleton_group_policy::raise`.
template <class T>
void compute_rloo_advantages(view<T, 1> scores, view<std::int64_t, 1> group_ids, mut_view<T, 1> advantages,
                             const rloo_options& options = {}) {
    detail::group_score_advantages(
        "rlhf::compute_rloo_advantages", scores, group_ids, advantages,
        {detail::group_rule_kind::rloo, false, 0.0, variance_estimator::unbiased, options.singleton});
}

/// OPO advantages: A[i, t] = (s_i − Σ_g len·s / Σ_g len) · mask[i, t], len_i = Σ_t mask[i, t].
/// @note verl `compute_opo_outcome_advantage` with the defaults.
template <class T, class M>
void compute_opo_advantages(view<T> token_rewards, view<M> mask, view<std::int64_t, 1> group_ids,
                            mut_view<T> advantages, const opo_options& options = {}) {
    detail::group_token_advantages(
        "rlhf::compute_opo_advantages", token_rewards, mask, group_ids, advantages,
        {detail::group_rule_kind::opo, false, 0.0, variance_estimator::unbiased, options.singleton});
}

/// Reverse discounted returns (reward-to-go) per row: G_t = r_t + γ·G_{t+1}, G_T = 0, with mask-0
/// positions treated as `options.masking` says. `[B, T]` rewards, mask and returns; accumulated in
/// double. `returns` may be `rewards`' buffer.
/// @note OpenRLHF `get_cumulative_returns` is `{.gamma = γ, .masking = return_masking::zero_masked}`.
template <class T, class M>
void compute_cumulative_returns(view<T> rewards, view<M> mask, mut_view<T> returns,
                                const cumulative_return_options& options = {}) {
    constexpr std::string_view function = "rlhf::compute_cumulative_returns";
    check_in_range(function, "gamma", options.gamma, 0.0, 1.0);
    detail::check_return_masking(function, options.masking);
    check_same_shape(function, "mask", mask, "rewards", rewards);
    check_same_shape(function, "returns", returns, "rewards", rewards);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "rewards", rewards);
    detail::reverse_returns(rewards, mask, options.gamma, options.masking, returns);
}

/// REINFORCE++ advantages: returns G (see `compute_cumulative_returns`), then
/// advantages = masked_whiten(G, mask) over the batch (global across ranks through `reducer`).
/// `[B, T]` everything; `advantages` and `returns` are distinct buffers. Too few valid tokens for
/// the whitening: `options.whiten.small_sample` (`raise` throws from `rlhf::masked_whiten`, argument
/// `mask`, as verl raises for one valid token).
/// @note verl `compute_reinforce_plus_plus_outcome_advantage` with the defaults (the pre-#7300 reset
///       at every mask-0 slot, pitfall c.3); OpenRLHF `reinforce`: see `reinforce_plus_plus_options`.
template <class T, class M, Reducer R = local_reducer>
void compute_reinforce_plus_plus_advantages(view<T> token_rewards, view<M> mask, mut_view<T> advantages,
                                            mut_view<T> returns, const reinforce_plus_plus_options& options = {},
                                            R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::compute_reinforce_plus_plus_advantages";
    check_in_range(function, "gamma", options.gamma, 0.0, 1.0);
    detail::check_return_masking(function, options.masking);
    check_same_shape(function, "mask", mask, "token_rewards", token_rewards);
    check_same_shape(function, "advantages", advantages, "token_rewards", token_rewards);
    check_same_shape(function, "returns", returns, "token_rewards", token_rewards);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "token_rewards", token_rewards);
    detail::reverse_returns(token_rewards, mask, options.gamma, options.masking, returns);
    masked_whiten<T, M>(view<T>(returns), mask, advantages, options.whiten, std::forward<R>(reducer));
}

/// REINFORCE++-baseline advantages: b_g = group mean of the scores (singletons: `options.singleton`),
/// spread over the tokens by `options.broadcast`, then masked whitening over the batch. `returns` gets
/// the values before whitening for `cumulative_returns` and the advantages for `tiled_score` (verl
/// returns its advantages twice). `[B, T]` rewards, mask, outputs; `[B]` group ids.
/// @note verl `compute_reinforce_plus_plus_baseline_outcome_advantage` with the defaults; OpenRLHF
///       `reinforce_baseline`: see `reinforce_plus_plus_baseline_options`.
template <class T, class M, Reducer R = local_reducer>
void compute_reinforce_plus_plus_baseline_advantages(view<T> token_rewards, view<M> mask,
                                                     view<std::int64_t, 1> group_ids, mut_view<T> advantages,
                                                     mut_view<T> returns,
                                                     const reinforce_plus_plus_baseline_options& options = {},
                                                     R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::compute_reinforce_plus_plus_baseline_advantages";
    if (options.broadcast != baseline_broadcast::tiled_score &&
        options.broadcast != baseline_broadcast::cumulative_returns)
        fail(error_kind::config, function, "broadcast", "one of 'tiled_score' 'cumulative_returns'",
             "an unknown value");
    detail::check_group_inputs(function, token_rewards, mask, group_ids, advantages);
    check_same_shape(function, "returns", returns, "token_rewards", token_rewards);
    const std::vector<double> scores = detail::row_sums(token_rewards);
    std::vector<double> values = scores;
    detail::apply_group_rule(
        function, group_ids, values, {},
        {detail::group_rule_kind::mean, false, 0.0, variance_estimator::unbiased, options.singleton});
    if (options.broadcast == baseline_broadcast::tiled_score) {
        detail::broadcast_rows<T, M>(values, mask, advantages);
        masked_whiten<T, M>(view<T>(advantages), mask, advantages, options.whiten, std::forward<R>(reducer));
        for (index_t i = 0; i < advantages.extent(0); ++i)
            std::copy(advantages.row(i).begin(), advantages.row(i).end(), returns.row(i).begin());
        return;
    }
    const index_t cols = token_rewards.extent(1);
    for (index_t i = 0; i < token_rewards.extent(0); ++i) {
        const T* r = token_rewards.row(i).data();
        const M* m = mask.row(i).data();
        T* out = returns.row(i).data();
        index_t last_valid = cols;
        for (index_t t = cols; t-- > 0;)
            if (m[t] != M{0}) {
                last_valid = t;
                break;
            }
        const auto at = static_cast<std::size_t>(i);
        const double baseline = scores[at] - values[at];  // b_g, or the singleton policy's baseline
        double running = 0.0;
        for (index_t t = cols; t-- > 0;) {
            running += static_cast<double>(r[t]) * static_cast<double>(m[t]) - (t == last_valid ? baseline : 0.0);
            out[t] = static_cast<T>(running);
        }
    }
    masked_whiten<T, M>(view<T>(returns), mask, advantages, options.whiten, std::forward<R>(reducer));
}

/// ReMax advantages: returns = reverse cumsum of token_rewards·mask, advantages = returns −
/// reward_baselines[i]·mask (the greedy rollout's reward as the baseline). No whitening. Mask-0 slots
/// before valid ones (left padding, holes) keep the return of what follows, as in verl.
/// `[B, T]` rewards, mask, outputs; `[B]` reward_baselines.
/// @note verl `compute_remax_outcome_advantage` (`verl/trainer/ppo/core_algos.py`).
template <class T, class M>
void compute_remax_advantages(view<T> token_rewards, view<M> mask, view<T, 1> reward_baselines, mut_view<T> advantages,
                              mut_view<T> returns) {
    constexpr std::string_view function = "rlhf::compute_remax_advantages";
    check_same_shape(function, "mask", mask, "token_rewards", token_rewards);
    check_length(function, "reward_baselines", reward_baselines.extent(0), token_rewards.extent(0),
                 "one per row of 'token_rewards'");
    check_same_shape(function, "advantages", advantages, "token_rewards", token_rewards);
    check_same_shape(function, "returns", returns, "token_rewards", token_rewards);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "token_rewards", token_rewards);
    check_finite(function, "reward_baselines", reward_baselines);
    const index_t cols = token_rewards.extent(1);
    for (index_t i = 0; i < token_rewards.extent(0); ++i) {
        const T* r = token_rewards.row(i).data();
        const M* m = mask.row(i).data();
        T* ret = returns.row(i).data();
        T* adv = advantages.row(i).data();
        const auto baseline = static_cast<double>(reward_baselines(i));
        double running = 0.0;
        for (index_t t = cols; t-- > 0;) {
            const auto valid = static_cast<double>(m[t]);
            running += static_cast<double>(r[t]) * valid;
            ret[t] = static_cast<T>(running);
            adv[t] = static_cast<T>(running - baseline * valid);
        }
    }
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
