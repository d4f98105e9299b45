#pragma once
/// @file
/// Eigen entry points of the critic-free advantage estimators: GRPO, Dr.GRPO, RLOO, OPO,
/// REINFORCE++, REINFORCE++-baseline, ReMax and cumulative returns.
///
/// `token_rewards` and `mask` are `[B, T]` row-major expressions with direct access
/// (`rlhf::eigen::row_matrix<T>`, or a `Map`/`Ref`/block of one), rewards of type float or double, a
/// mask of any arithmetic element type with entries 0 or 1; `group_ids` is an `std::int64_t` vector
/// `[B]`, `scores` and `reward_baselines` vectors `[B]` of the rewards' type. Results are returned as
/// `rlhf::eigen::row_matrix<T>` (`rlhf::eigen::vector<T>` for `[B]` scores). Semantics, options,
/// presets and edge-case policies: `rlhf/kernels/outcome_advantages.hpp`.

#include <Eigen/Core>

#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

#include "rlhf/core/reducer.hpp"
#include "rlhf/eigen/view.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"

namespace rlhf::eigen {

/// Advantages and returns `[B, T]` of one estimator.
template <class T>
struct outcome_advantage_result {
    row_matrix<T> advantages;
    row_matrix<T> returns;
};

namespace detail::outcome {

template <class Ids>
[[nodiscard]] view<std::int64_t, 1> group_view(const Eigen::DenseBase<Ids>& group_ids, std::string_view fn) {
    static_assert(std::is_same_v<typename Ids::Scalar, std::int64_t>, "rlhf::eigen: group_ids must hold std::int64_t");
    return as_vector_view(group_ids, fn, "group_ids");
}

/// `[B, T]` rewards, mask and group ids to one `[B, T]` result of `kernel`.
template <class Rewards, class Mask, class Ids, class Kernel>
[[nodiscard]] row_matrix<typename Rewards::Scalar> group_tokens(std::string_view fn,
                                                                const Eigen::DenseBase<Rewards>& token_rewards,
                                                                const Eigen::DenseBase<Mask>& mask,
                                                                const Eigen::DenseBase<Ids>& group_ids,
                                                                Kernel&& kernel) {
    row_matrix<typename Rewards::Scalar> out(token_rewards.rows(), token_rewards.cols());
    kernel(as_view(token_rewards, fn, "token_rewards"), as_view(mask, fn, "mask"), group_view(group_ids, fn),
           as_mut_view(out, fn, "advantages"));
    return out;
}

/// `[B]` scores and group ids to one `[B]` result of `kernel`.
template <class Scores, class Ids, class Kernel>
[[nodiscard]] vector<typename Scores::Scalar> group_scores(std::string_view fn, const Eigen::DenseBase<Scores>& scores,
                                                           const Eigen::DenseBase<Ids>& group_ids, Kernel&& kernel) {
    vector<typename Scores::Scalar> out(scores.size());
    kernel(as_vector_view(scores, fn, "scores"), group_view(group_ids, fn), as_mut_vector_view(out, fn, "advantages"));
    return out;
}

}  // namespace detail::outcome

/// GRPO advantages `[B, T]` (see `rlhf::compute_grpo_advantages`).
template <class Rewards, class Mask, class Ids>
[[nodiscard]] row_matrix<typename Rewards::Scalar> compute_grpo_advantages(
    const Eigen::DenseBase<Rewards>& token_rewards, const Eigen::DenseBase<Mask>& mask,
    const Eigen::DenseBase<Ids>& group_ids, const grpo_options& options = {}) {
    return detail::outcome::group_tokens(
        "rlhf::eigen::compute_grpo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { rlhf::compute_grpo_advantages(r, m, g, out, options); });
}

/// GRPO advantages `[B]` of per-sequence `scores` `[B]`.
template <class Scores, class Ids>
[[nodiscard]] vector<typename Scores::Scalar> compute_grpo_advantages(const Eigen::DenseBase<Scores>& scores,
                                                                      const Eigen::DenseBase<Ids>& group_ids,
                                                                      const grpo_options& options = {}) {
    return detail::outcome::group_scores(
        "rlhf::eigen::compute_grpo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { rlhf::compute_grpo_advantages(s, g, out, options); });
}

/// Dr.GRPO advantages `[B, T]` (see `rlhf::compute_dr_grpo_advantages`).
template <class Rewards, class Mask, class Ids>
[[nodiscard]] row_matrix<typename Rewards::Scalar> compute_dr_grpo_advantages(
    const Eigen::DenseBase<Rewards>& token_rewards, const Eigen::DenseBase<Mask>& mask,
    const Eigen::DenseBase<Ids>& group_ids, const dr_grpo_options& options = {}) {
    return detail::outcome::group_tokens(
        "rlhf::eigen::compute_dr_grpo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { rlhf::compute_dr_grpo_advantages(r, m, g, out, options); });
}

/// Dr.GRPO advantages `[B]` of per-sequence `scores` `[B]`.
template <class Scores, class Ids>
[[nodiscard]] vector<typename Scores::Scalar> compute_dr_grpo_advantages(const Eigen::DenseBase<Scores>& scores,
                                                                         const Eigen::DenseBase<Ids>& group_ids,
                                                                         const dr_grpo_options& options = {}) {
    return detail::outcome::group_scores(
        "rlhf::eigen::compute_dr_grpo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { rlhf::compute_dr_grpo_advantages(s, g, out, options); });
}

/// RLOO advantages `[B, T]` (see `rlhf::compute_rloo_advantages`).
template <class Rewards, class Mask, class Ids>
[[nodiscard]] row_matrix<typename Rewards::Scalar> compute_rloo_advantages(
    const Eigen::DenseBase<Rewards>& token_rewards, const Eigen::DenseBase<Mask>& mask,
    const Eigen::DenseBase<Ids>& group_ids, const rloo_options& options = {}) {
    return detail::outcome::group_tokens(
        "rlhf::eigen::compute_rloo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { rlhf::compute_rloo_advantages(r, m, g, out, options); });
}

/// RLOO advantages `[B]` of per-sequence `scores` `[B]`.
template <class Scores, class Ids>
[[nodiscard]] vector<typename Scores::Scalar> compute_rloo_advantages(const Eigen::DenseBase<Scores>& scores,
                                                                      const Eigen::DenseBase<Ids>& group_ids,
                                                                      const rloo_options& options = {}) {
    return detail::outcome::group_scores(
        "rlhf::eigen::compute_rloo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { rlhf::compute_rloo_advantages(s, g, out, options); });
}

/// OPO advantages `[B, T]` (see `rlhf::compute_opo_advantages`).
template <class Rewards, class Mask, class Ids>
[[nodiscard]] row_matrix<typename Rewards::Scalar> compute_opo_advantages(
    const Eigen::DenseBase<Rewards>& token_rewards, const Eigen::DenseBase<Mask>& mask,
    const Eigen::DenseBase<Ids>& group_ids, const opo_options& options = {}) {
    return detail::outcome::group_tokens(
        "rlhf::eigen::compute_opo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { rlhf::compute_opo_advantages(r, m, g, out, options); });
}

/// Reverse discounted returns `[B, T]` (see `rlhf::compute_cumulative_returns`).
template <class Rewards, class Mask>
[[nodiscard]] row_matrix<typename Rewards::Scalar> compute_cumulative_returns(
    const Eigen::DenseBase<Rewards>& rewards, const Eigen::DenseBase<Mask>& mask,
    const cumulative_return_options& options = {}) {
    constexpr std::string_view fn = "rlhf::eigen::compute_cumulative_returns";
    row_matrix<typename Rewards::Scalar> out(rewards.rows(), rewards.cols());
    rlhf::compute_cumulative_returns(as_view(rewards, fn, "rewards"), as_view(mask, fn, "mask"),
                                     as_mut_view(out, fn, "returns"), options);
    return out;
}

/// REINFORCE++ advantages and returns `[B, T]` (see `rlhf::compute_reinforce_plus_plus_advantages`);
/// the whitening statistics are global through `reducer`.
template <class Rewards, class Mask, Reducer R = local_reducer>
[[nodiscard]] outcome_advantage_result<typename Rewards::Scalar> compute_reinforce_plus_plus_advantages(
    const Eigen::DenseBase<Rewards>& token_rewards, const Eigen::DenseBase<Mask>& mask,
    const reinforce_plus_plus_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view fn = "rlhf::eigen::compute_reinforce_plus_plus_advantages";
    using T = typename Rewards::Scalar;
    outcome_advantage_result<T> result{row_matrix<T>(token_rewards.rows(), token_rewards.cols()),
                                       row_matrix<T>(token_rewards.rows(), token_rewards.cols())};
    rlhf::compute_reinforce_plus_plus_advantages(as_view(token_rewards, fn, "token_rewards"), as_view(mask, fn, "mask"),
                                                 as_mut_view(result.advantages, fn, "advantages"),
                                                 as_mut_view(result.returns, fn, "returns"), options,
                                                 std::forward<R>(reducer));
    return result;
}

/// REINFORCE++-baseline advantages and returns `[B, T]` (see
/// `rlhf::compute_reinforce_plus_plus_baseline_advantages`).
template <class Rewards, class Mask, class Ids, Reducer R = local_reducer>
[[nodiscard]] outcome_advantage_result<typename Rewards::Scalar> compute_reinforce_plus_plus_baseline_advantages(
    const Eigen::DenseBase<Rewards>& token_rewards, const Eigen::DenseBase<Mask>& mask,
    const Eigen::DenseBase<Ids>& group_ids, const reinforce_plus_plus_baseline_options& options = {},
    R&& reducer = {}) {
    constexpr std::string_view fn = "rlhf::eigen::compute_reinforce_plus_plus_baseline_advantages";
    using T = typename Rewards::Scalar;
    outcome_advantage_result<T> result{row_matrix<T>(token_rewards.rows(), token_rewards.cols()),
                                       row_matrix<T>(token_rewards.rows(), token_rewards.cols())};
    rlhf::compute_reinforce_plus_plus_baseline_advantages(
        as_view(token_rewards, fn, "token_rewards"), as_view(mask, fn, "mask"),
        detail::outcome::group_view(group_ids, fn), as_mut_view(result.advantages, fn, "advantages"),
        as_mut_view(result.returns, fn, "returns"), options, std::forward<R>(reducer));
    return result;
}

/// ReMax advantages and returns `[B, T]` (see `rlhf::compute_remax_advantages`).
template <class Rewards, class Mask, class Baselines>
[[nodiscard]] outcome_advantage_result<typename Rewards::Scalar> compute_remax_advantages(
    const Eigen::DenseBase<Rewards>& token_rewards, const Eigen::DenseBase<Mask>& mask,
    const Eigen::DenseBase<Baselines>& reward_baselines) {
    constexpr std::string_view fn = "rlhf::eigen::compute_remax_advantages";
    using T = typename Rewards::Scalar;
    static_assert(std::is_same_v<T, typename Baselines::Scalar>,
                  "rlhf::eigen::compute_remax_advantages: reward_baselines of the rewards' type");
    outcome_advantage_result<T> result{row_matrix<T>(token_rewards.rows(), token_rewards.cols()),
                                       row_matrix<T>(token_rewards.rows(), token_rewards.cols())};
    rlhf::compute_remax_advantages(as_view(token_rewards, fn, "token_rewards"), as_view(mask, fn, "mask"),
                                   as_vector_view(reward_baselines, fn, "reward_baselines"),
                                   as_mut_view(result.advantages, fn, "advantages"),
                                   as_mut_view(result.returns, fn, "returns"));
    return result;
}

}  // namespace rlhf::eigen
