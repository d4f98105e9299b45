#pragma once
/// @file
/// The advantage stage of a PPO step as functions of the config and the rollout tensors (no
/// model): running score normalisation, the rollout KL, reward shaping, reward whitening, the
/// advantage estimator and advantage whitening. GAE over sequence scores runs the config's
/// kernel preset (`rlhf::compute_advantages` through `rlhf::compute_advantages`);
/// token reward models and the critic-free estimators run the same steps through the kernels'
/// LibTorch entry points; `record_advantage_metrics` gives the rollout part of the step's
/// metrics. All tensors are CPU tensors in the response layout `[B, T]`.

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/entry/advantages.hpp"
#include "rlhf/entry/outcome_advantages.hpp"
#include "rlhf/entry/rewards.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/libtorch/adapter.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/check_config.hpp"
#include "rlhf/ppo/config.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/metrics.hpp"
#include "rlhf/ppo/presets.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The rollout tensors the advantage stage reads (CPU; floating tensors share one dtype,
/// float32 or float64).
struct advantage_inputs {
    torch::Tensor log_probs{};      ///< `[B, T]` the old policy's log-probs
    torch::Tensor ref_log_probs{};  ///< `[B, T]` the reference's; undefined: no KL term
    torch::Tensor mask{};           ///< `[B, T]` mask ∈ {0,1}
    torch::Tensor scores{};         ///< `[B]` sequence scores (after `normalize_scores`)
    torch::Tensor token_rewards{};  ///< `[B, T]` a token reward model's rewards, 0 on padding (instead of `scores`)
    torch::Tensor values{};         ///< `[B, T]` the critic's values (GAE)
    torch::Tensor group_ids{};      ///< `[B]` int64 prompt index of each row (group estimators)
    torch::Tensor baseline{};       ///< `[B]` scores of ReMax's greedy rollouts, before clipping
};

/// What the advantage stage gives, `[B, T]` each, in the dtype of the log-probs.
struct advantage_outputs {
    torch::Tensor shaped_rewards{};  ///< the per-token rewards after shaping, before reward whitening
    torch::Tensor rewards{};         ///< the rewards the estimator used (whitened under `reward_whitening`)
    torch::Tensor advantages{};      ///< after advantage whitening
    torch::Tensor returns{};         ///< value targets (critic-free: the unwhitened advantages)
};

/// The rollout KL between the old policy and the reference.
struct rollout_kl {
    double metric = 0.0;     ///< in `config::kl_metric` units (`step_metrics::kl`)
    measured_kl controller;  ///< in the unit of the KL controller
};

namespace detail {

/// The mask checked once (entries 0 or 1), as bool: the kernels skip the check of a bool mask.
[[nodiscard]] inline torch::Tensor checked_mask(const torch::Tensor& mask, std::string_view function) {
    libtorch::check_defined(mask, function, "mask");
    require_binary(mask, function, "mask");
    return mask.scalar_type() == torch::kBool ? mask : mask.ne(0);
}

/// A KL `[B, T]` reduced in `unit` (`rlhf::measure_kl`).
[[nodiscard]] inline measured_kl measure(const torch::Tensor& kl, const torch::Tensor& mask, kl_measure unit) {
    constexpr std::string_view fn = "rlhf::ppo::measure_rollout_kl";
    return libtorch::dispatch_floating(kl, fn, "kl", [&](auto tag) {
        using T = decltype(tag);
        return libtorch::dispatch_mask<T>(mask, fn, "mask", [&](auto mask_tag) {
            using M = decltype(mask_tag);
            return rlhf::measure_kl(libtorch::as_view<T>(kl, fn, "kl"), libtorch::as_view<M>(mask, fn, "mask"), unit);
        });
    });
}

/// Mean and population standard deviation of `x` weighted by the 0/1 float64 `weights`, whose
/// sum is `count` (0, 0 when it is 0), in double.
[[nodiscard]] inline std::pair<double, double> weighted_mean_std(const torch::Tensor& x, const torch::Tensor& weights,
                                                                 double count) {
    if (count <= 0.0) return {0.0, 0.0};
    const torch::Tensor v = x.to(torch::kFloat64);
    const double mean = (v * weights).sum().item<double>() / count;
    const double var = ((v - mean) * (v - mean) * weights).sum().item<double>() / count;
    return {mean, std::sqrt(std::max(var, 0.0))};
}

}  // namespace detail

/// Running score normalisation: updates `moments` with `scores` `[B]`, then returns
/// `scores / (std + ε)` (`scale`) or `(scores − mean) / (std + ε)` (`scale_and_shift`) in the
/// scores' dtype, computed in double; `score_norm = none` returns `scores`.
/// @note TRL v0.11 `use_score_scaling` / `use_score_norm` (trl/trainer/ppo_trainer.py).
[[nodiscard]] inline torch::Tensor normalize_scores(const config& c, running_moments& moments,
                                                    const torch::Tensor& scores) {
    if (c.score_norm == score_normalization::none) return scores;
    const torch::Tensor s = scores.to(torch::kFloat64);
    (void)rlhf::update_running_moments(moments, s);
    const double factor = moments.std() + c.score_norm_epsilon;
    const torch::Tensor shifted = c.score_norm == score_normalization::scale_and_shift ? s - moments.mean() : s;
    return (shifted / factor).to(scores.scalar_type());
}

/// The rollout KL `token_kl(log_probs, ref_log_probs, mask)` with the estimator of the KL's
/// placement (`kl_loss.kl` under `kl = loss`, else `reward.kl`), measured in `kl_metric` units and
/// in the controller's (`rlhf::controller_measure`). Shapes `[B, T]`; errors those of the kernels.
[[nodiscard]] inline rollout_kl measure_rollout_kl(const config& c, const torch::Tensor& log_probs,
                                                   const torch::Tensor& ref_log_probs, const torch::Tensor& mask) {
    const torch::Tensor valid = detail::checked_mask(mask, "rlhf::ppo::measure_rollout_kl");
    const kl_options& estimator = c.kl == kl_placement::loss ? c.kl_loss.kl : c.reward.kl;
    const torch::Tensor kl = rlhf::token_kl(log_probs, ref_log_probs, valid, estimator);
    const measured_kl metric = detail::measure(kl, valid, c.kl_metric);
    const kl_measure unit = controller_measure(c.kl_control, c.kl_metric);
    return {metric.value, unit == c.kl_metric ? metric : detail::measure(kl, valid, unit)};
}

/// Rewards, advantages and returns of a rollout as the config says: the per-token rewards
/// (`−β·kl` when `kl = reward`, with `β = kl_coef`, the controller's value; the score at its slot,
/// or a token reward model's rewards), reward whitening, the estimator, advantage whitening.
/// GAE over sequence scores is `rlhf::compute_advantages` of `advantage_preset_of(c)`.
/// Errors (`rlhf::error`, function `rlhf::ppo::compute_advantage_stage`): an undefined input the
/// config needs (kind value: `log_probs`, `mask`, `scores` without `token_rewards`,
/// `ref_log_probs` for the KL in the reward with `kl_coef > 0`, `values` for GAE, `group_ids`
/// for a group estimator, `baseline` for ReMax); a mask entry other than 0 or 1 (`mask`); the
/// kernels' errors (shapes, dtypes, non-finite inputs, empty rows, too few tokens to whiten).
[[nodiscard]] inline advantage_outputs compute_advantage_stage(const config& c, double kl_coef,
                                                               const advantage_inputs& in) {
    constexpr std::string_view fn = "rlhf::ppo::compute_advantage_stage";
    const auto require = [&](const torch::Tensor& t, std::string_view name) { libtorch::check_defined(t, fn, name); };
    require(in.log_probs, "log_probs");
    const torch::Tensor mask = detail::checked_mask(in.mask, fn);
    const bool dense = in.token_rewards.defined();
    if (!dense) require(in.scores, "scores");
    const double beta = c.kl == kl_placement::reward ? kl_coef : 0.0;
    if (beta > 0.0) require(in.ref_log_probs, "ref_log_probs");
    // Without the KL term the log-probs stand in for the reference: their KL is 0.
    const torch::Tensor& ref = beta > 0.0 ? in.ref_log_probs : in.log_probs;
    reward_shaping_options shaping = c.reward;
    shaping.kl_coef = beta;

    if (c.estimator == advantage_estimator::gae) require(in.values, "values");
    if (c.estimator == advantage_estimator::gae && !dense) {
        auto out =
            rlhf::compute_advantages(in.log_probs, ref, mask, in.scores, in.values, advantage_preset_of(c), beta);
        // The preset whitens its shaped rewards in place: the metrics' unwhitened ones are shaped again.
        const torch::Tensor shaped =
            c.reward_whitening ? rlhf::shape_rewards_from_logprobs(in.log_probs, ref, mask, in.scores, shaping)
                               : out.rewards;
        return {shaped, out.rewards, out.advantages, out.returns};
    }

    advantage_outputs out;
    if (!dense) {
        out.shaped_rewards = rlhf::shape_rewards_from_logprobs(in.log_probs, ref, mask, in.scores, shaping);
    } else if (beta > 0.0) {
        // The KL part alone (no score, masked as `token_kl` masks it), plus the dense rewards.
        shaping.score_clip = std::nullopt;
        shaping.score_clip_range = std::nullopt;
        shaping.mask_kl = true;
        const torch::Tensor zeros = torch::zeros({in.log_probs.size(0)}, in.log_probs.options());
        out.shaped_rewards =
            rlhf::shape_rewards_from_logprobs(in.log_probs, ref, mask, zeros, shaping) + in.token_rewards;
    } else {
        out.shaped_rewards = in.token_rewards.clone();
    }
    out.rewards =
        c.reward_whitening ? rlhf::masked_whiten(out.shaped_rewards, mask, *c.reward_whitening) : out.shaped_rewards;

    const torch::Tensor& r = out.rewards;
    if (detail::is_group_estimator(c.estimator)) require(in.group_ids, "group_ids");
    const torch::Tensor groups = in.group_ids.defined() ? in.group_ids.to(torch::kInt64).contiguous() : in.group_ids;
    const auto take = [&](const auto& result) {
        out.advantages = result.advantages;
        out.returns = result.returns;
    };
    switch (c.estimator) {
        case advantage_estimator::gae: {
            const auto g = rlhf::compute_gae(r, in.values, mask, c.gae);
            out.advantages = g.advantages;
            out.returns = g.returns;
            break;
        }
        case advantage_estimator::grpo:
            out.advantages = rlhf::compute_grpo_advantages(r, mask, groups, c.grpo);
            break;
        case advantage_estimator::dr_grpo:
            out.advantages = rlhf::compute_dr_grpo_advantages(r, mask, groups, c.dr_grpo);
            break;
        case advantage_estimator::rloo:
            out.advantages = rlhf::compute_rloo_advantages(r, mask, groups, c.rloo);
            break;
        case advantage_estimator::opo:
            out.advantages = rlhf::compute_opo_advantages(r, mask, groups, c.opo);
            break;
        case advantage_estimator::reinforce_plus_plus:
            take(rlhf::compute_reinforce_plus_plus_advantages(r, mask, c.reinforce_plus_plus));
            break;
        case advantage_estimator::reinforce_plus_plus_baseline:
            take(
                rlhf::compute_reinforce_plus_plus_baseline_advantages(r, mask, groups, c.reinforce_plus_plus_baseline));
            break;
        case advantage_estimator::remax: {
            require(in.baseline, "baseline");
            torch::Tensor baseline = in.baseline.to(r.scalar_type()).contiguous();
            if (c.reward.score_clip) baseline = baseline.clamp(-*c.reward.score_clip, *c.reward.score_clip);
            if (c.reward.score_clip_range)
                baseline = baseline.clamp(c.reward.score_clip_range->first, c.reward.score_clip_range->second);
            take(rlhf::compute_remax_advantages(r, mask, baseline));
            break;
        }
    }
    if (!out.returns.defined()) out.returns = out.advantages.clone();  // critic-free: no value target
    if (c.advantage_whitening)
        out.advantages = c.whiten_unmasked ? rlhf::whiten(out.advantages, *c.advantage_whitening)
                                           : rlhf::masked_whiten(out.advantages, mask, *c.advantage_whitening);
    return out;
}

/// The rollout statistics of `m`: response tokens and mean length, the mean and standard
/// deviation of `scores` `[B]` (as the reward model gave them) and of the per-row sums of the
/// shaped rewards, and over the valid tokens of `mask` the advantage mean and standard
/// deviation and the return and `values` means (`values` may be undefined: no critic).
inline void record_advantage_metrics(step_metrics& m, const torch::Tensor& mask, const torch::Tensor& scores,
                                     const advantage_outputs& a, const torch::Tensor& values) {
    const torch::Tensor valid = mask.to(torch::kFloat64);
    const double tokens = valid.sum().item<double>();
    const auto rows = static_cast<double>(mask.size(0));
    const torch::Tensor every_row = torch::ones({mask.size(0)}, torch::kFloat64);
    m.response_tokens = tokens;
    m.response_length_mean = rows > 0.0 ? tokens / rows : 0.0;
    std::tie(m.score_mean, m.score_std) = detail::weighted_mean_std(scores, every_row, rows);
    std::tie(m.reward_mean, m.reward_std) =
        detail::weighted_mean_std(a.shaped_rewards.to(torch::kFloat64).sum(1), every_row, rows);
    std::tie(m.advantage_mean, m.advantage_std) = detail::weighted_mean_std(a.advantages, valid, tokens);
    m.return_mean = detail::weighted_mean_std(a.returns, valid, tokens).first;
    if (values.defined()) m.value_mean = detail::weighted_mean_std(values, valid, tokens).first;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
