#pragma once
/// @file
/// The advantage stage of a PPO step as functions of the config and the rollout tensors (no
/// model): running score normalisation, the rollout KL, reward shaping, reward whitening, the
/// advantage estimator and advantage whitening. GAE over sequence scores runs the config's
/// kernel preset (`rlhf::compute_advantages` through `rlhf::compute_advantages`);
/// token reward models and the critic-free estimators run the same steps through the kernels'
/// LibTorch entry points; `record_advantage_metrics` gives the rollout part of the step's
/// metrics. Tensors are `[B, T]` in the response layout, on one device, which the stage keeps: CPU
/// tensors run the fused kernels, other devices (or `config::advantage_ops = torch_ops`) the
/// compositions of rlhf/libtorch/advantage_ops.hpp, without host synchronisation except: the value
/// checks, read once at the end of `compute_advantage_stage` (`libtorch::deferred_checks`); the
/// rollout KL, read once by `measure_rollout_kl` (the controller needs a number); the running
/// moments of `score_norm`; the metrics, read once by `record_advantage_metrics`. Log-probs,
/// values and rewards may be bfloat16/float16: the stage computes in float32 (float64 stays
/// float64). With a communicator of several ranks (data parallelism, docs/distributed.md) every
/// batch statistic is global: the running score moments, the rollout KL, reward and advantage
/// whitening (REINFORCE++'s included) and the metrics; group estimators stay local (a prompt's
/// samples are on one rank).

#include <torch/types.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <utility>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/distributed/communicator.hpp"
#include "rlhf/entry/advantages.hpp"
#include "rlhf/entry/outcome_advantages.hpp"
#include "rlhf/entry/rewards.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/libtorch/adapter.hpp"
#include "rlhf/libtorch/advantage_ops.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/check_config.hpp"
#include "rlhf/ppo/config.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/metrics.hpp"
#include "rlhf/ppo/presets.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The rollout tensors the advantage stage reads (on one device; floating tensors float32,
/// float64, bfloat16 or float16: the stage computes in float64 when the log-probs are float64,
/// else in float32).
struct advantage_inputs {
    torch::Tensor log_probs{};      ///< `[B, T]` the old policy's log-probs
    torch::Tensor ref_log_probs{};  ///< `[B, T]` the reference's; undefined: no KL term
    torch::Tensor mask{};           ///< `[B, T]` mask ∈ {0,1}
    torch::Tensor scores{};         ///< `[B]` sequence scores (after `normalize_scores`)
    torch::Tensor token_rewards{};  ///< `[B, T]` a token reward model's rewards, 0 on padding (instead of `scores`)
    torch::Tensor values{};         ///< `[B, T]` the critic's values (GAE)
    torch::Tensor group_ids{};      ///< `[B]` int64 prompt index of each row (group estimators)
    torch::Tensor baseline{};       ///< `[B]` scores of ReMax's greedy rollouts, before clipping
    torch::Tensor
        bootstrap{};  ///< `[B]` GAE's value after each row's last token (`truncation_bootstrap`); undefined: 0
};

/// What the advantage stage gives, `[B, T]` each, in the stage's dtype (float64 for float64
/// log-probs, else float32), on the log-probs' device.
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

/// Whether the stage runs the `torch_ops::` compositions for tensors like `t`: off the CPU (the
/// one device dispatch, `libtorch::by_device`), or everywhere under `advantage_ops = torch_ops`.
[[nodiscard]] inline bool composed(const config& c, const torch::Tensor& t) {
    if (c.advantage_ops == advantage_route::torch_ops) return true;
    return libtorch::by_device(
        t, [] { return false; }, [] { return true; });
}

/// Checks that `t` (when defined) has a floating dtype, else `rlhf::error` (kind dtype) naming
/// `argument`.
inline void require_floating(const torch::Tensor& t, std::string_view function, std::string_view argument) {
    if (t.defined() && !c10::isFloatingType(t.scalar_type()))
        fail(error_kind::dtype, function, argument, "a floating dtype (float32, float64, bfloat16 or float16)",
             libtorch::dtype_name(t.scalar_type()));
}

/// The stage's dtype: float64 log-probs stay float64, any other floating dtype (bfloat16 and
/// float16 included) computes in float32.
[[nodiscard]] inline torch::Tensor in_math_dtype(const torch::Tensor& log_probs, std::string_view function) {
    require_floating(log_probs, function, "log_probs");
    return libtorch::detail::in_compute_precision(log_probs);
}

/// `t` (floating, else an error naming `argument`) in the dtype and on the device of `reference`;
/// undefined stays undefined.
[[nodiscard]] inline torch::Tensor like(const torch::Tensor& t, const torch::Tensor& reference,
                                        std::string_view function, std::string_view argument) {
    require_floating(t, function, argument);
    return t.defined() ? t.to(reference.device(), reference.scalar_type()) : t;
}

template <class Result>
[[nodiscard]] advantages_and_returns<torch::Tensor> pair_of(const Result& r) {
    return {r.advantages, r.returns};
}

/// The stage's operations on one route: the fused kernels' entry points (CPU tensors), or the
/// `torch_ops::` compositions, whose value checks go to `checks`.
struct stage_ops {
    bool composed = false;
    libtorch::deferred_checks* checks = nullptr;
    /// Whether a CUDA kernel registered for a torch-op function may replace it (the by_device
    /// route; under `advantage_ops = torch_ops` the compositions run everywhere).
    bool cuda_kernels = true;
    /// Data-parallel ranks whose batch statistics are global (null: this process only).
    distributed::communicator* group = nullptr;

    [[nodiscard]] bool global() const { return group != nullptr && group->world_size() > 1; }
    /// `body(reducer)` with the group as the `Reducer`, or `local_reducer`.
    template <class Body>
    [[nodiscard]] auto with_reducer(Body&& body) const {
        if (global()) return body(*group);
        local_reducer local;
        return body(local);
    }
    /// The group's sum of float64 tensors (for the compositions), or an empty function.
    [[nodiscard]] libtorch::tensor_sum tensor_reducer() const {
        if (!global()) return {};
        return [g = group](torch::Tensor& t) { g->all_reduce(t, distributed::reduce_op::sum); };
    }

    /// `TorchOps(args...)`, or on CUDA tensors the kernel registered for it (`cuda_kernels`).
    template <auto TorchOps, class... Args>
    [[nodiscard]] auto composed_call(const torch::Tensor& t, const Args&... args) const {
        const auto reference = [&] { return TorchOps(args...); };
        if (!cuda_kernels) return reference();
        return libtorch::by_device<TorchOps>(t, reference, args...);
    }
    [[nodiscard]] torch::Tensor token_kl(const torch::Tensor& lp, const torch::Tensor& ref, const torch::Tensor& mask,
                                         const kl_options& o) const {
        return composed ? composed_call<&libtorch::torch_ops::token_kl>(lp, lp, ref, mask, o, checks)
                        : rlhf::token_kl(lp, ref, mask, o);
    }
    [[nodiscard]] torch::Tensor shape(const torch::Tensor& lp, const torch::Tensor& ref, const torch::Tensor& mask,
                                      const torch::Tensor& scores, const reward_shaping_options& o) const {
        return composed ? composed_call<&libtorch::torch_ops::shape_rewards_from_logprobs>(lp, lp, ref, mask, scores, o,
                                                                                           checks)
                        : rlhf::shape_rewards_from_logprobs(lp, ref, mask, scores, o);
    }
    /// Global statistics on the composed route: the composition with the group's sums (no CUDA
    /// kernel: its statistics are local).
    [[nodiscard]] torch::Tensor masked_whiten(const torch::Tensor& x, const torch::Tensor& mask,
                                              const whiten_options& o) const {
        if (composed && global()) {
            const libtorch::tensor_sum sum = tensor_reducer();
            return libtorch::detail::ops::whiten_with("rlhf::libtorch::torch_ops::masked_whiten", "mask", x,
                                                      mask.to(torch::kFloat64), o, *checks, &sum);
        }
        if (composed) return composed_call<&libtorch::torch_ops::masked_whiten>(x, x, mask, o, checks);
        return with_reducer([&](auto& reducer) { return rlhf::masked_whiten(x, mask, o, reducer); });
    }
    [[nodiscard]] torch::Tensor whiten(const torch::Tensor& x, const whiten_options& o) const {
        if (composed && global()) {
            const libtorch::tensor_sum sum = tensor_reducer();
            return libtorch::detail::ops::whiten_with("rlhf::libtorch::torch_ops::whiten", "values", x,
                                                      torch::ones(x.sizes(), x.options().dtype(torch::kFloat64)), o,
                                                      *checks, &sum);
        }
        if (composed) return libtorch::torch_ops::whiten(x, o, checks);
        return with_reducer([&](auto& reducer) { return rlhf::whiten(x, o, reducer); });
    }
    [[nodiscard]] advantages_and_returns<torch::Tensor> gae(const torch::Tensor& r, const torch::Tensor& v,
                                                            const torch::Tensor& mask, const torch::Tensor& bootstrap,
                                                            const gae_options& o) const {
        if (composed)
            return composed_call<&libtorch::torch_ops::compute_gae_with_bootstrap>(r, r, v, mask, bootstrap, o, checks);
        return bootstrap.defined() ? pair_of(rlhf::compute_gae(r, v, mask, bootstrap, o))
                                   : pair_of(rlhf::compute_gae(r, v, mask, o));
    }
    /// One of the critic-free estimators of `c` (not GAE); ReMax takes `baseline`.
    [[nodiscard]] advantages_and_returns<torch::Tensor> outcome(const config& c, const torch::Tensor& r,
                                                                const torch::Tensor& mask, const torch::Tensor& groups,
                                                                const torch::Tensor& baseline) const {
        namespace ops = libtorch::torch_ops;
        const auto advantages_only = [](torch::Tensor a) { return advantages_and_returns<torch::Tensor>{a, {}}; };
        switch (c.estimator) {
            case advantage_estimator::grpo:
                return advantages_only(composed ? ops::compute_grpo_advantages(r, mask, groups, c.grpo, checks)
                                                : rlhf::compute_grpo_advantages(r, mask, groups, c.grpo));
            case advantage_estimator::dr_grpo:
                return advantages_only(composed ? ops::compute_dr_grpo_advantages(r, mask, groups, c.dr_grpo, checks)
                                                : rlhf::compute_dr_grpo_advantages(r, mask, groups, c.dr_grpo));
            case advantage_estimator::rloo:
                return advantages_only(composed ? ops::compute_rloo_advantages(r, mask, groups, c.rloo, checks)
                                                : rlhf::compute_rloo_advantages(r, mask, groups, c.rloo));
            case advantage_estimator::opo:
                return advantages_only(composed ? ops::compute_opo_advantages(r, mask, groups, c.opo, checks)
                                                : rlhf::compute_opo_advantages(r, mask, groups, c.opo));
            case advantage_estimator::reinforce_plus_plus: {
                const libtorch::tensor_sum sum = tensor_reducer();
                if (composed)
                    return ops::compute_reinforce_plus_plus_advantages(r, mask, c.reinforce_plus_plus, checks, &sum);
                return with_reducer([&](auto& reducer) {
                    return pair_of(
                        rlhf::compute_reinforce_plus_plus_advantages(r, mask, c.reinforce_plus_plus, reducer));
                });
            }
            case advantage_estimator::reinforce_plus_plus_baseline: {
                const libtorch::tensor_sum sum = tensor_reducer();
                if (composed)
                    return ops::compute_reinforce_plus_plus_baseline_advantages(
                        r, mask, groups, c.reinforce_plus_plus_baseline, checks, &sum);
                return with_reducer([&](auto& reducer) {
                    return pair_of(rlhf::compute_reinforce_plus_plus_baseline_advantages(
                        r, mask, groups, c.reinforce_plus_plus_baseline, reducer));
                });
            }
            case advantage_estimator::remax:
                return composed ? ops::compute_remax_advantages(r, mask, baseline, checks)
                                : pair_of(rlhf::compute_remax_advantages(r, mask, baseline));
            case advantage_estimator::gae:
                break;
        }
        return {};
    }
};

/// A KL `[B, T]` reduced in `unit` (`rlhf::measure_kl`, fused route).
template <class R>
[[nodiscard]] measured_kl measure(const torch::Tensor& kl, const torch::Tensor& mask, kl_measure unit, R& reducer) {
    constexpr std::string_view fn = "rlhf::ppo::measure_rollout_kl";
    return libtorch::dispatch_floating(kl, fn, "kl", [&](auto tag) {
        using T = decltype(tag);
        return libtorch::dispatch_mask<T>(mask, fn, "mask", [&](auto mask_tag) {
            using M = decltype(mask_tag);
            return rlhf::measure_kl(libtorch::as_view<T>(kl, fn, "kl"), libtorch::as_view<M>(mask, fn, "mask"), unit,
                                    reducer);
        });
    });
}

/// Sums `t` (float64, any device) across `group` in place; no group or one rank: nothing.
inline void sum_across(distributed::communicator* group, torch::Tensor& t) {
    if (group != nullptr && group->world_size() > 1) group->all_reduce(t, distributed::reduce_op::sum);
}

}  // namespace detail

/// Running score normalisation: updates `moments` with `scores` `[B]`, then returns
/// `scores / (std + ε)` (`scale`) or `(scores − mean) / (std + ε)` (`scale_and_shift`) in the
/// scores' dtype on their device, computed in double; `score_norm = none` returns `scores`. The
/// running moments live on the host: off the CPU, the update reads the scores back (one transfer).
/// With `group`, the moments are updated with the scores of every rank.
/// @note TRL v0.11 `use_score_scaling` / `use_score_norm` (trl/trainer/ppo_trainer.py).
[[nodiscard]] inline torch::Tensor normalize_scores(const config& c, running_moments& moments,
                                                    const torch::Tensor& scores,
                                                    distributed::communicator* group = nullptr) {
    if (c.score_norm == score_normalization::none) return scores;
    const torch::Tensor s = scores.to(torch::kFloat64);
    const detail::stage_ops ops{.group = group};
    (void)ops.with_reducer(
        [&](auto& reducer) { return rlhf::update_running_moments(moments, s.to(torch::kCPU), reducer); });
    const double factor = moments.std() + c.score_norm_epsilon;
    const torch::Tensor shifted = c.score_norm == score_normalization::scale_and_shift ? s - moments.mean() : s;
    return (shifted / factor).to(scores.scalar_type());
}

/// The rollout KL `token_kl(log_probs, ref_log_probs, mask)` with the estimator of the KL's
/// placement (`kl_loss.kl` under `kl = loss`, else `reward.kl`), measured in `kl_metric` units and
/// in the controller's (`rlhf::controller_measure`). Shapes `[B, T]`; errors those of the kernels.
/// The composed route reads both numbers back in one transfer. With `group`, both are measured
/// over the rows of every rank.
[[nodiscard]] inline rollout_kl measure_rollout_kl(const config& c, const torch::Tensor& log_probs,
                                                   const torch::Tensor& ref_log_probs, const torch::Tensor& mask,
                                                   distributed::communicator* group = nullptr) {
    constexpr std::string_view fn = "rlhf::ppo::measure_rollout_kl";
    libtorch::check_defined(log_probs, fn, "log_probs");
    const torch::Tensor lp = detail::in_math_dtype(log_probs, fn);
    const torch::Tensor valid = detail::checked_mask(mask, fn).to(lp.device());
    const kl_options& estimator = c.kl == kl_placement::loss ? c.kl_loss.kl : c.reward.kl;
    const kl_measure unit = controller_measure(c.kl_control, c.kl_metric);
    libtorch::deferred_checks checks;
    const detail::stage_ops ops{detail::composed(c, lp), &checks, c.advantage_ops == advantage_route::by_device, group};
    const torch::Tensor kl = ops.token_kl(lp, detail::like(ref_log_probs, lp, fn, "ref_log_probs"), valid, estimator);
    if (ops.composed) {
        namespace ops_detail = libtorch::detail::ops;
        torch::Tensor sums = torch::cat(
            {ops_detail::kl_measure_sums(kl, valid, c.kl_metric), ops_detail::kl_measure_sums(kl, valid, unit)});
        detail::sum_across(group, sums);
        const torch::Tensor both = (sums.slice(0, 0, 4, 2) / sums.slice(0, 1, 4, 2)).to(torch::kCPU);
        checks.verify();
        return {both[0].item<double>(), {both[1].item<double>(), unit}};
    }
    return ops.with_reducer([&](auto& reducer) {
        const measured_kl metric = detail::measure(kl, valid, c.kl_metric, reducer);
        return rollout_kl{metric.value, unit == c.kl_metric ? metric : detail::measure(kl, valid, unit, reducer)};
    });
}

/// Rewards, advantages and returns of a rollout as the config says: the per-token rewards
/// (`−β·kl` when `kl = reward`, with `β = kl_coef`, the controller's value; the score at its slot,
/// or a token reward model's rewards), reward whitening, the estimator, advantage whitening.
/// GAE over sequence scores on the fused route is `rlhf::compute_advantages` of
/// `advantage_preset_of(c)`; the composed route runs the same steps one by one.
/// Errors (`rlhf::error`, function `rlhf::ppo::compute_advantage_stage`): an undefined input the
/// config needs (kind value: `log_probs`, `mask`, `scores` without `token_rewards`,
/// `ref_log_probs` for the KL in the reward with `kl_coef > 0`, `values` for GAE, `group_ids`
/// for a group estimator, `baseline` for ReMax); a mask entry other than 0 or 1 (`mask`); the
/// kernels' errors (shapes, dtypes, non-finite inputs, empty rows, too few tokens to whiten),
/// which the composed route raises at the end of the stage (function `rlhf::libtorch::torch_ops::…`).
/// With `group`, batch whitening is global across its ranks.
[[nodiscard]] inline advantage_outputs compute_advantage_stage(const config& c, double kl_coef,
                                                               const advantage_inputs& in,
                                                               distributed::communicator* group = nullptr) {
    constexpr std::string_view fn = "rlhf::ppo::compute_advantage_stage";
    const auto require = [&](const torch::Tensor& t, std::string_view name) { libtorch::check_defined(t, fn, name); };
    require(in.log_probs, "log_probs");
    const torch::Tensor lp = detail::in_math_dtype(in.log_probs, fn);
    const torch::Tensor mask = detail::checked_mask(in.mask, fn).to(lp.device());
    const bool dense = in.token_rewards.defined();
    if (!dense) require(in.scores, "scores");
    const double beta = c.kl == kl_placement::reward ? kl_coef : 0.0;
    if (beta > 0.0) require(in.ref_log_probs, "ref_log_probs");
    // Without the KL term the log-probs stand in for the reference: their KL is 0.
    const torch::Tensor ref = beta > 0.0 ? detail::like(in.ref_log_probs, lp, fn, "ref_log_probs") : lp;
    const torch::Tensor scores = detail::like(in.scores, lp, fn, "scores");
    const torch::Tensor values = detail::like(in.values, lp, fn, "values");
    reward_shaping_options shaping = c.reward;
    shaping.kl_coef = beta;
    libtorch::deferred_checks checks;
    const detail::stage_ops ops{detail::composed(c, lp), &checks, c.advantage_ops == advantage_route::by_device, group};

    if (c.estimator == advantage_estimator::gae) require(in.values, "values");
    // The fused preset path, unless a row bootstraps (its GAE takes no bootstrap values).
    if (c.estimator == advantage_estimator::gae && !dense && !ops.composed && !in.bootstrap.defined()) {
        auto out = ops.with_reducer([&](auto& reducer) {
            return rlhf::compute_advantages(lp, ref, mask, scores, values, advantage_preset_of(c), beta, reducer);
        });
        // The preset whitens its shaped rewards in place: the metrics' unwhitened ones are shaped again.
        const torch::Tensor shaped =
            c.reward_whitening ? rlhf::shape_rewards_from_logprobs(lp, ref, mask, scores, shaping) : out.rewards;
        return {shaped, out.rewards, out.advantages, out.returns};
    }

    advantage_outputs out;
    if (!dense) {
        out.shaped_rewards = ops.shape(lp, ref, mask, scores, shaping);
    } else if (beta > 0.0) {
        // The KL part alone (no score, masked as `token_kl` masks it), plus the dense rewards.
        shaping.score_clip = std::nullopt;
        shaping.score_clip_range = std::nullopt;
        shaping.mask_kl = true;
        const torch::Tensor zeros = torch::zeros({lp.size(0)}, lp.options());
        out.shaped_rewards =
            ops.shape(lp, ref, mask, zeros, shaping) + detail::like(in.token_rewards, lp, fn, "token_rewards");
    } else {
        out.shaped_rewards = detail::like(in.token_rewards, lp, fn, "token_rewards").clone();
    }
    out.rewards =
        c.reward_whitening ? ops.masked_whiten(out.shaped_rewards, mask, *c.reward_whitening) : out.shaped_rewards;

    const torch::Tensor& r = out.rewards;
    if (detail::is_group_estimator(c.estimator)) require(in.group_ids, "group_ids");
    const torch::Tensor groups =
        in.group_ids.defined() ? in.group_ids.to(lp.device(), torch::kInt64).contiguous() : in.group_ids;
    torch::Tensor baseline;
    if (c.estimator == advantage_estimator::remax) {
        require(in.baseline, "baseline");
        baseline = detail::like(in.baseline, r, fn, "baseline").contiguous();
        if (c.reward.score_clip) baseline = baseline.clamp(-*c.reward.score_clip, *c.reward.score_clip);
        if (c.reward.score_clip_range)
            baseline = baseline.clamp(c.reward.score_clip_range->first, c.reward.score_clip_range->second);
    }
    const advantages_and_returns<torch::Tensor> estimated =
        c.estimator == advantage_estimator::gae
            ? ops.gae(r, values, mask, detail::like(in.bootstrap, lp, fn, "bootstrap"), c.gae)
            : ops.outcome(c, r, mask, groups, baseline);
    out.advantages = estimated.advantages;
    // Critic-free: no value target, the returns are the unwhitened advantages.
    out.returns = estimated.returns.defined() ? estimated.returns : out.advantages.clone();
    if (c.advantage_whitening)
        out.advantages = c.whiten_unmasked ? ops.whiten(out.advantages, *c.advantage_whitening)
                                           : ops.masked_whiten(out.advantages, mask, *c.advantage_whitening);
    checks.verify();
    return out;
}

/// The rollout statistics of `m`: response tokens and mean length, the mean and standard
/// deviation of `scores` `[B]` (as the reward model gave them) and of the per-row sums of the
/// shaped rewards, and over the valid tokens of `mask` the advantage mean and standard
/// deviation and the return and `values` means (`values` may be undefined: no critic). Computed
/// in float64 on the advantages' device in two passes (sums, then squared deviations; with
/// `group`, each summed across its ranks) and read back once, at the end of this call.
inline void record_advantage_metrics(step_metrics& m, const torch::Tensor& mask, const torch::Tensor& scores,
                                     const advantage_outputs& a, const torch::Tensor& values,
                                     distributed::communicator* group = nullptr) {
    const auto f64 = torch::TensorOptions(torch::kFloat64).device(a.advantages.device());
    const torch::Tensor valid = mask.to(f64.device(), torch::kFloat64);
    const torch::Tensor score = scores.to(f64.device(), torch::kFloat64);
    const torch::Tensor reward = a.shaped_rewards.to(f64.device(), torch::kFloat64).sum(1);
    const torch::Tensor advantage = a.advantages.to(torch::kFloat64);
    const torch::Tensor value =
        values.defined() ? values.to(f64.device(), torch::kFloat64) : torch::zeros_like(advantage);
    torch::Tensor sums =
        torch::stack({valid.sum(), torch::full({}, static_cast<double>(mask.size(0)), f64), score.sum(), reward.sum(),
                      (advantage * valid).sum(), (a.returns.to(torch::kFloat64) * valid).sum(), (value * valid).sum()});
    detail::sum_across(group, sums);
    const torch::Tensor tokens = sums[0], rows = sums[1], zero = torch::zeros({}, f64);
    const auto mean = [&](const torch::Tensor& sum, const torch::Tensor& count) {
        return torch::where(count > 0, sum / count, zero);
    };
    const torch::Tensor score_mean = mean(sums[2], rows), reward_mean = mean(sums[3], rows);
    const torch::Tensor advantage_mean = mean(sums[4], tokens);
    torch::Tensor squares = torch::stack({(score - score_mean).square().sum(), (reward - reward_mean).square().sum(),
                                          ((advantage - advantage_mean).square() * valid).sum()});
    detail::sum_across(group, squares);
    const auto std_of = [&](const torch::Tensor& square_sum, const torch::Tensor& count) {
        return mean(square_sum, count).clamp_min(0.0).sqrt();
    };
    const torch::Tensor host = torch::stack({tokens, mean(tokens, rows), score_mean, std_of(squares[0], rows),
                                             reward_mean, std_of(squares[1], rows), advantage_mean,
                                             std_of(squares[2], tokens), mean(sums[5], tokens), mean(sums[6], tokens)})
                                   .to(torch::kCPU);
    constexpr std::array fields{
        &step_metrics::response_tokens, &step_metrics::response_length_mean, &step_metrics::score_mean,
        &step_metrics::score_std,       &step_metrics::reward_mean,          &step_metrics::reward_std,
        &step_metrics::advantage_mean,  &step_metrics::advantage_std,        &step_metrics::return_mean};
    const double* h = host.data_ptr<double>();
    for (std::size_t i = 0; i < fields.size(); ++i) m.*fields[i] = h[i];
    if (values.defined()) m.value_mean = h[9];
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
