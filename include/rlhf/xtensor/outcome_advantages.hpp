#pragma once
/// @file
/// xtensor entry points of the critic-free advantage estimators: GRPO, Dr.GRPO, RLOO, OPO,
/// REINFORCE++, REINFORCE++-baseline, ReMax and cumulative returns.
///
/// Inputs are row-major xtensor containers (`xt::xtensor`, `xt::xarray`, or `xt::adapt` of a
/// row-major buffer): `token_rewards` and `mask` `[B, T]` (rewards float or double, a mask of any
/// arithmetic element type with entries 0 or 1), `group_ids` `[B]` of `std::int64_t`, `scores` and
/// `reward_baselines` `[B]` of the rewards' type. Results are returned as `xt::xtensor<T, 2>`
/// (`xt::xtensor<T, 1>` for `[B]` scores). Semantics, options, presets and edge-case policies:
/// `rlhf/kernels/outcome_advantages.hpp`.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

#include "rlhf/core/reducer.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/xtensor/view.hpp"

namespace rlhf::xtensor {

/// Advantages and returns `[B, T]` of one estimator.
template <class T>
struct outcome_advantage_result {
    xt::xtensor<T, 2> advantages;
    xt::xtensor<T, 2> returns;
};

namespace detail::outcome {

template <class E>
using value_t = std::remove_cv_t<std::remove_reference_t<decltype(*std::declval<const E&>().data())>>;

template <class T>
[[nodiscard]] xt::xtensor<T, 2> matrix(index_t rows, index_t cols) {
    return xt::xtensor<T, 2>(
        std::array<std::size_t, 2>{static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)});
}

template <class Ids>
[[nodiscard]] view<std::int64_t, 1> group_view(const Ids& group_ids, std::string_view fn) {
    static_assert(std::is_same_v<value_t<Ids>, std::int64_t>, "rlhf::xtensor: group_ids must hold std::int64_t");
    return as_view<1>(group_ids, fn, "group_ids");
}

/// `[B, T]` rewards, mask and group ids to one `[B, T]` result of `kernel`.
template <class Rewards, class Mask, class Ids, class Kernel>
[[nodiscard]] xt::xtensor<value_t<Rewards>, 2> group_tokens(std::string_view fn, const Rewards& token_rewards,
                                                            const Mask& mask, const Ids& group_ids, Kernel&& kernel) {
    const auto r = as_view(token_rewards, fn, "token_rewards");
    auto out = matrix<value_t<Rewards>>(r.extent(0), r.extent(1));
    kernel(r, as_view(mask, fn, "mask"), group_view(group_ids, fn), as_mut_view(out, fn, "advantages"));
    return out;
}

/// `[B]` scores and group ids to one `[B]` result of `kernel`.
template <class Scores, class Ids, class Kernel>
[[nodiscard]] xt::xtensor<value_t<Scores>, 1> group_scores(std::string_view fn, const Scores& scores,
                                                           const Ids& group_ids, Kernel&& kernel) {
    const auto s = as_view<1>(scores, fn, "scores");
    xt::xtensor<value_t<Scores>, 1> out(std::array<std::size_t, 1>{static_cast<std::size_t>(s.extent(0))});
    kernel(s, group_view(group_ids, fn), as_mut_view<1>(out, fn, "advantages"));
    return out;
}

template <class T>
[[nodiscard]] outcome_advantage_result<T> result(index_t rows, index_t cols) {
    return {matrix<T>(rows, cols), matrix<T>(rows, cols)};
}

}  // namespace detail::outcome

/// GRPO advantages `[B, T]` (see `rlhf::compute_grpo_advantages`).
template <dense_container Rewards, dense_container Mask, dense_container Ids>
[[nodiscard]] xt::xtensor<detail::outcome::value_t<Rewards>, 2> compute_grpo_advantages(
    const Rewards& token_rewards, const Mask& mask, const Ids& group_ids, const grpo_options& options = {}) {
    return detail::outcome::group_tokens(
        "rlhf::xtensor::compute_grpo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { rlhf::compute_grpo_advantages(r, m, g, out, options); });
}

/// GRPO advantages `[B]` of per-sequence `scores` `[B]`.
template <dense_container Scores, dense_container Ids>
[[nodiscard]] xt::xtensor<detail::outcome::value_t<Scores>, 1> compute_grpo_advantages(
    const Scores& scores, const Ids& group_ids, const grpo_options& options = {}) {
    return detail::outcome::group_scores(
        "rlhf::xtensor::compute_grpo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { rlhf::compute_grpo_advantages(s, g, out, options); });
}

/// Dr.GRPO advantages `[B, T]` (see `rlhf::compute_dr_grpo_advantages`).
template <dense_container Rewards, dense_container Mask, dense_container Ids>
[[nodiscard]] xt::xtensor<detail::outcome::value_t<Rewards>, 2> compute_dr_grpo_advantages(
    const Rewards& token_rewards, const Mask& mask, const Ids& group_ids, const dr_grpo_options& options = {}) {
    return detail::outcome::group_tokens(
        "rlhf::xtensor::compute_dr_grpo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { rlhf::compute_dr_grpo_advantages(r, m, g, out, options); });
}

/// Dr.GRPO advantages `[B]` of per-sequence `scores` `[B]`.
template <dense_container Scores, dense_container Ids>
[[nodiscard]] xt::xtensor<detail::outcome::value_t<Scores>, 1> compute_dr_grpo_advantages(
    const Scores& scores, const Ids& group_ids, const dr_grpo_options& options = {}) {
    return detail::outcome::group_scores(
        "rlhf::xtensor::compute_dr_grpo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { rlhf::compute_dr_grpo_advantages(s, g, out, options); });
}

/// RLOO advantages `[B, T]` (see `rlhf::compute_rloo_advantages`).
template <dense_container Rewards, dense_container Mask, dense_container Ids>
[[nodiscard]] xt::xtensor<detail::outcome::value_t<Rewards>, 2> compute_rloo_advantages(
    const Rewards& token_rewards, const Mask& mask, const Ids& group_ids, const rloo_options& options = {}) {
    return detail::outcome::group_tokens(
        "rlhf::xtensor::compute_rloo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { rlhf::compute_rloo_advantages(r, m, g, out, options); });
}

/// RLOO advantages `[B]` of per-sequence `scores` `[B]`.
template <dense_container Scores, dense_container Ids>
[[nodiscard]] xt::xtensor<detail::outcome::value_t<Scores>, 1> compute_rloo_advantages(
    const Scores& scores, const Ids& group_ids, const rloo_options& options = {}) {
    return detail::outcome::group_scores(
        "rlhf::xtensor::compute_rloo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { rlhf::compute_rloo_advantages(s, g, out, options); });
}

/// OPO advantages `[B, T]` (see `rlhf::compute_opo_advantages`).
template <dense_container Rewards, dense_container Mask, dense_container Ids>
[[nodiscard]] xt::xtensor<detail::outcome::value_t<Rewards>, 2> compute_opo_advantages(
    const Rewards& token_rewards, const Mask& mask, const Ids& group_ids, const opo_options& options = {}) {
    return detail::outcome::group_tokens(
        "rlhf::xtensor::compute_opo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { rlhf::compute_opo_advantages(r, m, g, out, options); });
}

/// Reverse discounted returns `[B, T]` (see `rlhf::compute_cumulative_returns`).
template <dense_container Rewards, dense_container Mask>
[[nodiscard]] xt::xtensor<detail::outcome::value_t<Rewards>, 2> compute_cumulative_returns(
    const Rewards& rewards, const Mask& mask, const cumulative_return_options& options = {}) {
    constexpr std::string_view fn = "rlhf::xtensor::compute_cumulative_returns";
    const auto r = as_view(rewards, fn, "rewards");
    auto out = detail::outcome::matrix<detail::outcome::value_t<Rewards>>(r.extent(0), r.extent(1));
    rlhf::compute_cumulative_returns(r, as_view(mask, fn, "mask"), as_mut_view(out, fn, "returns"), options);
    return out;
}

/// REINFORCE++ advantages and returns `[B, T]` (see `rlhf::compute_reinforce_plus_plus_advantages`);
/// the whitening statistics are global through `reducer`.
template <dense_container Rewards, dense_container Mask, Reducer R = local_reducer>
[[nodiscard]] outcome_advantage_result<detail::outcome::value_t<Rewards>> compute_reinforce_plus_plus_advantages(
    const Rewards& token_rewards, const Mask& mask, const reinforce_plus_plus_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view fn = "rlhf::xtensor::compute_reinforce_plus_plus_advantages";
    const auto r = as_view(token_rewards, fn, "token_rewards");
    auto result = detail::outcome::result<detail::outcome::value_t<Rewards>>(r.extent(0), r.extent(1));
    rlhf::compute_reinforce_plus_plus_advantages(
        r, as_view(mask, fn, "mask"), as_mut_view(result.advantages, fn, "advantages"),
        as_mut_view(result.returns, fn, "returns"), options, std::forward<R>(reducer));
    return result;
}

/// REINFORCE++-baseline advantages and returns `[B, T]` (see
/// `rlhf::compute_reinforce_plus_plus_baseline_advantages`).
template <dense_container Rewards, dense_container Mask, dense_container Ids, Reducer R = local_reducer>
[[nodiscard]] outcome_advantage_result<detail::outcome::value_t<Rewards>>
compute_reinforce_plus_plus_baseline_advantages(const Rewards& token_rewards, const Mask& mask, const Ids& group_ids,
                                                const reinforce_plus_plus_baseline_options& options = {},
                                                R&& reducer = {}) {
    constexpr std::string_view fn = "rlhf::xtensor::compute_reinforce_plus_plus_baseline_advantages";
    const auto r = as_view(token_rewards, fn, "token_rewards");
    auto result = detail::outcome::result<detail::outcome::value_t<Rewards>>(r.extent(0), r.extent(1));
    rlhf::compute_reinforce_plus_plus_baseline_advantages(
        r, as_view(mask, fn, "mask"), detail::outcome::group_view(group_ids, fn),
        as_mut_view(result.advantages, fn, "advantages"), as_mut_view(result.returns, fn, "returns"), options,
        std::forward<R>(reducer));
    return result;
}

/// ReMax advantages and returns `[B, T]` (see `rlhf::compute_remax_advantages`).
template <dense_container Rewards, dense_container Mask, dense_container Baselines>
[[nodiscard]] outcome_advantage_result<detail::outcome::value_t<Rewards>> compute_remax_advantages(
    const Rewards& token_rewards, const Mask& mask, const Baselines& reward_baselines) {
    using T = detail::outcome::value_t<Rewards>;
    static_assert(std::is_same_v<T, detail::outcome::value_t<Baselines>>,
                  "rlhf::xtensor::compute_remax_advantages: reward_baselines of the rewards' type");
    constexpr std::string_view fn = "rlhf::xtensor::compute_remax_advantages";
    const auto r = as_view(token_rewards, fn, "token_rewards");
    auto result = detail::outcome::result<T>(r.extent(0), r.extent(1));
    rlhf::compute_remax_advantages(r, as_view(mask, fn, "mask"), as_view<1>(reward_baselines, fn, "reward_baselines"),
                                   as_mut_view(result.advantages, fn, "advantages"),
                                   as_mut_view(result.returns, fn, "returns"));
    return result;
}

}  // namespace rlhf::xtensor
