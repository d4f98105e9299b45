#pragma once
/// @file
/// LibTorch entry points of the critic-free advantage estimators (CPU tensors): GRPO, Dr.GRPO,
/// RLOO, OPO, REINFORCE++, REINFORCE++-baseline, ReMax and cumulative returns.
///
/// `token_rewards` `[B, T]` float32 or float64 (innermost dimension contiguous; a column range of a
/// wider tensor is fine), `mask` `[B, T]` of dtype bool, uint8, int32, int64 or the rewards' dtype,
/// `group_ids` `[B]` int64, `scores` and `reward_baselines` `[B]` of the rewards' dtype. Results are
/// allocated and returned. A tensor of another dtype, rank or device is an `rlhf::error` naming it.
/// Semantics, options, presets and edge-case policies: `rlhf/kernels/outcome_advantages.hpp`.

#include <torch/types.h>

#include <cstdint>
#include <string_view>
#include <utility>

#include "rlhf/core/reducer.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/view.hpp"

namespace rlhf::libtorch {

/// Advantages and returns `[B, T]` of one estimator.
struct outcome_advantage_result {
    torch::Tensor advantages;
    torch::Tensor returns;
};

namespace detail::outcome {

/// Dispatches `[B, T]` rewards and mask, allocates `count` outputs like the rewards and calls
/// `kernel(rewards_view, mask_view, output_views...)`.
template <class Kernel>
torch::Tensor token_one(std::string_view fn, const torch::Tensor& rewards, std::string_view rewards_name,
                        const torch::Tensor& mask, std::string_view out_name, Kernel&& kernel) {
    return dispatch_floating(rewards, fn, rewards_name, [&](auto tag) {
        using T = decltype(tag);
        return with_mask_view<T>(mask, fn, [&](const auto m) {
            const auto r = as_view<T>(rewards, fn, rewards_name);
            torch::Tensor out = torch::empty({r.extent(0), r.extent(1)}, rewards.options());
            kernel(r, m, as_mut_view<T>(out, fn, out_name));
            return out;
        });
    });
}

template <class Kernel>
outcome_advantage_result token_two(std::string_view fn, const torch::Tensor& rewards, const torch::Tensor& mask,
                                   Kernel&& kernel) {
    return dispatch_floating(rewards, fn, "token_rewards", [&](auto tag) {
        using T = decltype(tag);
        return with_mask_view<T>(mask, fn, [&](const auto m) {
            const auto r = as_view<T>(rewards, fn, "token_rewards");
            outcome_advantage_result result{torch::empty({r.extent(0), r.extent(1)}, rewards.options()),
                                            torch::empty({r.extent(0), r.extent(1)}, rewards.options())};
            kernel(r, m, as_mut_view<T>(result.advantages, fn, "advantages"),
                   as_mut_view<T>(result.returns, fn, "returns"));
            return result;
        });
    });
}

/// `[B]` scores with group ids.
template <class Kernel>
torch::Tensor scores_one(std::string_view fn, const torch::Tensor& scores, const torch::Tensor& group_ids,
                         Kernel&& kernel) {
    return dispatch_floating(scores, fn, "scores", [&](auto tag) {
        using T = decltype(tag);
        const auto s = as_view<T, 1>(scores, fn, "scores");
        torch::Tensor out = torch::empty({s.extent(0)}, scores.options());
        kernel(s, as_view<std::int64_t, 1>(group_ids, fn, "group_ids"), as_mut_view<T, 1>(out, fn, "advantages"));
        return out;
    });
}

}  // namespace detail::outcome

/// GRPO advantages `[B, T]` (see `rlhf::compute_grpo_advantages`).
inline torch::Tensor compute_grpo_advantages(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                                             const torch::Tensor& group_ids, const grpo_options& options = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::compute_grpo_advantages";
    return detail::outcome::token_one(
        fn, token_rewards, "token_rewards", mask, "advantages", [&](auto r, auto m, auto out) {
            rlhf::compute_grpo_advantages(r, m, as_view<std::int64_t, 1>(group_ids, fn, "group_ids"), out, options);
        });
}

/// GRPO advantages `[B]` of per-sequence `scores` `[B]`.
inline torch::Tensor compute_grpo_advantages(const torch::Tensor& scores, const torch::Tensor& group_ids,
                                             const grpo_options& options = {}) {
    return detail::outcome::scores_one(
        "rlhf::libtorch::compute_grpo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { rlhf::compute_grpo_advantages(s, g, out, options); });
}

/// Dr.GRPO advantages `[B, T]` (see `rlhf::compute_dr_grpo_advantages`).
inline torch::Tensor compute_dr_grpo_advantages(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                                                const torch::Tensor& group_ids, const dr_grpo_options& options = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::compute_dr_grpo_advantages";
    return detail::outcome::token_one(
        fn, token_rewards, "token_rewards", mask, "advantages", [&](auto r, auto m, auto out) {
            rlhf::compute_dr_grpo_advantages(r, m, as_view<std::int64_t, 1>(group_ids, fn, "group_ids"), out, options);
        });
}

/// Dr.GRPO advantages `[B]` of per-sequence `scores` `[B]`.
inline torch::Tensor compute_dr_grpo_advantages(const torch::Tensor& scores, const torch::Tensor& group_ids,
                                                const dr_grpo_options& options = {}) {
    return detail::outcome::scores_one(
        "rlhf::libtorch::compute_dr_grpo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { rlhf::compute_dr_grpo_advantages(s, g, out, options); });
}

/// RLOO advantages `[B, T]` (see `rlhf::compute_rloo_advantages`).
inline torch::Tensor compute_rloo_advantages(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                                             const torch::Tensor& group_ids, const rloo_options& options = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::compute_rloo_advantages";
    return detail::outcome::token_one(
        fn, token_rewards, "token_rewards", mask, "advantages", [&](auto r, auto m, auto out) {
            rlhf::compute_rloo_advantages(r, m, as_view<std::int64_t, 1>(group_ids, fn, "group_ids"), out, options);
        });
}

/// RLOO advantages `[B]` of per-sequence `scores` `[B]`.
inline torch::Tensor compute_rloo_advantages(const torch::Tensor& scores, const torch::Tensor& group_ids,
                                             const rloo_options& options = {}) {
    return detail::outcome::scores_one(
        "rlhf::libtorch::compute_rloo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { rlhf::compute_rloo_advantages(s, g, out, options); });
}

/// OPO advantages `[B, T]` (see `rlhf::compute_opo_advantages`).
inline torch::Tensor compute_opo_advantages(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                                            const torch::Tensor& group_ids, const opo_options& options = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::compute_opo_advantages";
    return detail::outcome::token_one(
        fn, token_rewards, "token_rewards", mask, "advantages", [&](auto r, auto m, auto out) {
            rlhf::compute_opo_advantages(r, m, as_view<std::int64_t, 1>(group_ids, fn, "group_ids"), out, options);
        });
}

/// Reverse discounted returns `[B, T]` (see `rlhf::compute_cumulative_returns`).
inline torch::Tensor compute_cumulative_returns(const torch::Tensor& rewards, const torch::Tensor& mask,
                                                const cumulative_return_options& options = {}) {
    return detail::outcome::token_one(
        "rlhf::libtorch::compute_cumulative_returns", rewards, "rewards", mask, "returns",
        [&](auto r, auto m, auto out) { rlhf::compute_cumulative_returns(r, m, out, options); });
}

/// REINFORCE++ advantages and returns `[B, T]` (see `rlhf::compute_reinforce_plus_plus_advantages`);
/// the whitening statistics are global through `reducer`.
template <Reducer R = local_reducer>
outcome_advantage_result compute_reinforce_plus_plus_advantages(const torch::Tensor& token_rewards,
                                                                const torch::Tensor& mask,
                                                                const reinforce_plus_plus_options& options = {},
                                                                R&& reducer = {}) {
    return detail::outcome::token_two("rlhf::libtorch::compute_reinforce_plus_plus_advantages", token_rewards, mask,
                                      [&](auto r, auto m, auto adv, auto ret) {
                                          rlhf::compute_reinforce_plus_plus_advantages(r, m, adv, ret, options,
                                                                                       reducer);
                                      });
}

/// REINFORCE++-baseline advantages and returns `[B, T]` (see
/// `rlhf::compute_reinforce_plus_plus_baseline_advantages`).
template <Reducer R = local_reducer>
outcome_advantage_result compute_reinforce_plus_plus_baseline_advantages(
    const torch::Tensor& token_rewards, const torch::Tensor& mask, const torch::Tensor& group_ids,
    const reinforce_plus_plus_baseline_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::compute_reinforce_plus_plus_baseline_advantages";
    return detail::outcome::token_two(fn, token_rewards, mask, [&](auto r, auto m, auto adv, auto ret) {
        rlhf::compute_reinforce_plus_plus_baseline_advantages(
            r, m, as_view<std::int64_t, 1>(group_ids, fn, "group_ids"), adv, ret, options, reducer);
    });
}

/// ReMax advantages and returns `[B, T]` (see `rlhf::compute_remax_advantages`).
inline outcome_advantage_result compute_remax_advantages(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                                                         const torch::Tensor& reward_baselines) {
    constexpr std::string_view fn = "rlhf::libtorch::compute_remax_advantages";
    return detail::outcome::token_two(fn, token_rewards, mask, [&](auto r, auto m, auto adv, auto ret) {
        using T = typename decltype(r)::value_type;
        rlhf::compute_remax_advantages(r, m, as_view<T, 1>(reward_baselines, fn, "reward_baselines"), adv, ret);
    });
}

}  // namespace rlhf::libtorch
