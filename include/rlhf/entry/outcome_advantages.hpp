#pragma once
/// @file
/// Container entry points of the critic-free advantage estimators
/// (`rlhf/kernels/outcome_advantages.hpp`): GRPO, Dr.GRPO, RLOO, OPO, REINFORCE++,
/// REINFORCE++-baseline, ReMax and cumulative returns. `token_rewards` and `mask` are `[B, T]`,
/// `group_ids` an int64 `[B]`, `scores` and `reward_baselines` `[B]` of the rewards' type.

#include <cstdint>
#include <string_view>

#include "rlhf/core/reducer.hpp"
#include "rlhf/entry/advantages.hpp"
#include "rlhf/entry/backend.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

namespace detail::entry {

/// `[B, T]` rewards, mask and group ids to one new `[B, T]` container written by
/// `kernel(rewards, mask, ids, out)`.
template <class R, class M, class G, class Kernel>
[[nodiscard]] auto group_tokens(std::string_view function, const R& token_rewards, const M& mask, const G& group_ids,
                                Kernel&& kernel) {
    return on_values(function, token_rewards, "token_rewards", [&](const auto& c) {
        const auto r = c.in(token_rewards, "token_rewards");
        auto out = c.template make<2>(r.extents());
        c.with_mask(mask, [&](auto m) {
            kernel(r, m, c.template in<1, std::int64_t>(group_ids, "group_ids"), c.out(out, r.extents()));
        });
        return out;
    });
}

/// `[B]` scores and group ids to one new `[B]` container written by `kernel(scores, ids, out)`.
template <class S, class G, class Kernel>
[[nodiscard]] auto group_scores(std::string_view function, const S& scores, const G& group_ids, Kernel&& kernel) {
    return on_values(function, scores, "scores", [&](const auto& c) {
        const auto s = c.template in<1>(scores, "scores");
        auto out = c.template make<1>(s.extents());
        kernel(s, c.template in<1, std::int64_t>(group_ids, "group_ids"), c.out(out, s.extents()));
        return out;
    });
}

}  // namespace detail::entry

/// GRPO advantages `[B, T]` (`rlhf::compute_grpo_advantages`).
template <backend_container R, backend_container M, backend_container G>
[[nodiscard]] auto compute_grpo_advantages(const R& token_rewards, const M& mask, const G& group_ids,
                                           const grpo_options& options = {}) {
    return detail::entry::group_tokens(
        "rlhf::compute_grpo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { compute_grpo_advantages(r, m, g, out, options); });
}

/// GRPO advantages `[B]` of per-sequence `scores` `[B]`.
template <backend_container S, backend_container G>
[[nodiscard]] auto compute_grpo_advantages(const S& scores, const G& group_ids, const grpo_options& options = {}) {
    return detail::entry::group_scores("rlhf::compute_grpo_advantages", scores, group_ids,
                                       [&](auto s, auto g, auto out) { compute_grpo_advantages(s, g, out, options); });
}

/// Dr.GRPO advantages `[B, T]` (`rlhf::compute_dr_grpo_advantages`).
template <backend_container R, backend_container M, backend_container G>
[[nodiscard]] auto compute_dr_grpo_advantages(const R& token_rewards, const M& mask, const G& group_ids,
                                              const dr_grpo_options& options = {}) {
    return detail::entry::group_tokens(
        "rlhf::compute_dr_grpo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { compute_dr_grpo_advantages(r, m, g, out, options); });
}

/// Dr.GRPO advantages `[B]` of per-sequence `scores` `[B]`.
template <backend_container S, backend_container G>
[[nodiscard]] auto compute_dr_grpo_advantages(const S& scores, const G& group_ids,
                                              const dr_grpo_options& options = {}) {
    return detail::entry::group_scores(
        "rlhf::compute_dr_grpo_advantages", scores, group_ids,
        [&](auto s, auto g, auto out) { compute_dr_grpo_advantages(s, g, out, options); });
}

/// RLOO advantages `[B, T]` (`rlhf::compute_rloo_advantages`).
template <backend_container R, backend_container M, backend_container G>
[[nodiscard]] auto compute_rloo_advantages(const R& token_rewards, const M& mask, const G& group_ids,
                                           const rloo_options& options = {}) {
    return detail::entry::group_tokens(
        "rlhf::compute_rloo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { compute_rloo_advantages(r, m, g, out, options); });
}

/// RLOO advantages `[B]` of per-sequence `scores` `[B]`.
template <backend_container S, backend_container G>
[[nodiscard]] auto compute_rloo_advantages(const S& scores, const G& group_ids, const rloo_options& options = {}) {
    return detail::entry::group_scores("rlhf::compute_rloo_advantages", scores, group_ids,
                                       [&](auto s, auto g, auto out) { compute_rloo_advantages(s, g, out, options); });
}

/// OPO advantages `[B, T]` (`rlhf::compute_opo_advantages`).
template <backend_container R, backend_container M, backend_container G>
[[nodiscard]] auto compute_opo_advantages(const R& token_rewards, const M& mask, const G& group_ids,
                                          const opo_options& options = {}) {
    return detail::entry::group_tokens(
        "rlhf::compute_opo_advantages", token_rewards, mask, group_ids,
        [&](auto r, auto m, auto g, auto out) { compute_opo_advantages(r, m, g, out, options); });
}

/// Reverse discounted returns `[B, T]` (`rlhf::compute_cumulative_returns`).
template <backend_container R, backend_container M>
[[nodiscard]] auto compute_cumulative_returns(const R& rewards, const M& mask,
                                              const cumulative_return_options& options = {}) {
    return detail::entry::on_values("rlhf::compute_cumulative_returns", rewards, "rewards", [&](const auto& c) {
        const auto r = c.in(rewards, "rewards");
        auto out = c.template make<2>(r.extents());
        c.with_mask(mask, [&](auto m) { compute_cumulative_returns(r, m, c.out(out, r.extents()), options); });
        return out;
    });
}

/// REINFORCE++ advantages and returns `[B, T]` (`rlhf::compute_reinforce_plus_plus_advantages`);
/// the whitening statistics are global through `reducer`.
template <backend_container R, backend_container M, Reducer Red = local_reducer>
[[nodiscard]] auto compute_reinforce_plus_plus_advantages(const R& token_rewards, const M& mask,
                                                          const reinforce_plus_plus_options& options = {},
                                                          Red&& reducer = {}) {
    return detail::entry::on_values(
        "rlhf::compute_reinforce_plus_plus_advantages", token_rewards, "token_rewards", [&](const auto& c) {
            const auto r = c.in(token_rewards, "token_rewards");
            auto result = detail::entry::make_advantages(c, r.extents());
            c.with_mask(mask, [&](auto m) {
                compute_reinforce_plus_plus_advantages(r, m, c.out(result.advantages, r.extents()),
                                                       c.out(result.returns, r.extents()), options, reducer);
            });
            return result;
        });
}

/// REINFORCE++-baseline advantages and returns `[B, T]`
/// (`rlhf::compute_reinforce_plus_plus_baseline_advantages`).
template <backend_container R, backend_container M, backend_container G, Reducer Red = local_reducer>
[[nodiscard]] auto compute_reinforce_plus_plus_baseline_advantages(
    const R& token_rewards, const M& mask, const G& group_ids, const reinforce_plus_plus_baseline_options& options = {},
    Red&& reducer = {}) {
    return detail::entry::on_values(
        "rlhf::compute_reinforce_plus_plus_baseline_advantages", token_rewards, "token_rewards", [&](const auto& c) {
            const auto r = c.in(token_rewards, "token_rewards");
            auto result = detail::entry::make_advantages(c, r.extents());
            c.with_mask(mask, [&](auto m) {
                compute_reinforce_plus_plus_baseline_advantages(
                    r, m, c.template in<1, std::int64_t>(group_ids, "group_ids"), c.out(result.advantages, r.extents()),
                    c.out(result.returns, r.extents()), options, reducer);
            });
            return result;
        });
}

/// ReMax advantages and returns `[B, T]` (`rlhf::compute_remax_advantages`), `reward_baselines` `[B]`.
template <backend_container R, backend_container M, backend_container B>
[[nodiscard]] auto compute_remax_advantages(const R& token_rewards, const M& mask, const B& reward_baselines) {
    return detail::entry::on_values(
        "rlhf::compute_remax_advantages", token_rewards, "token_rewards", [&](const auto& c) {
            const auto r = c.in(token_rewards, "token_rewards");
            auto result = detail::entry::make_advantages(c, r.extents());
            c.with_mask(mask, [&](auto m) {
                compute_remax_advantages(r, m, c.template in<1>(reward_baselines, "reward_baselines"),
                                         c.out(result.advantages, r.extents()), c.out(result.returns, r.extents()));
            });
            return result;
        });
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
