#pragma once
/// @file
/// Options of the KL loss (kernels/kl_loss.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include "rlhf/options/kl.hpp"
#include "rlhf/options/loss_aggregation.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Options of `rlhf::kl_loss` (designated initialisers:
/// `rlhf::kl_loss_options{.kl = rlhf::kl_preset::verl(rlhf::kl_estimator::k3), .straight_through = true}`).
/// Framework presets:
///
/// - verl `verl/workers/actor/dp_actor.py` (`use_kl_loss`) over `verl/trainer/ppo/core_algos.py:
///   kl_penalty`: `.kl = kl_preset::verl(kl_loss_type)` (default `low_var_kl` = k3 with the ±20 /
///   ±10 clamps), `.straight_through = true` for the names ending in `+`, `.coef = kl_loss_coef
///   (0.001)`, the actor's `loss_agg_mode` in `.aggregation`.
/// - TRL `trl/trainer/grpo_trainer.py: _compute_loss` (`beta != 0`): `.kl = kl_preset::trl(k3)`,
///   `.coef = beta`, the aggregation of its `loss_type`; `use_bias_correction_kl` is the overload
///   with `old_log_probs`.
/// - OpenRLHF `openrlhf/trainer/ray/ppo_actor.py` (`algo.kl.use_loss`) over
///   `openrlhf/models/utils.py: compute_approx_kl`: `.kl = kl_preset::openrlhf(estimator)`,
///   `.coef = kl_ctl`, its `aggregate_loss` mode.
/// - ChatLearn `chatlearn/algorithm/grpo_utils/policy_trainer.py`: `.kl = kl_preset::chatlearn()`,
///   `.coef = kl_coef`, token-mean with the global token count.
/// - ColossalChat `coati/distributed/loss.py: PolicyLoss` (β·k3 per token): `.kl = kl_preset::trl(k3)`.
struct kl_loss_options {
    /// Estimator, clamps and float32 rounding of the log-ratio (kl.hpp). Default: k3, no clamp.
    kl_options kl{.estimator = kl_estimator::k3};
    /// Value of the estimator, gradient of k2 (verl's `+` estimators: `k2 − k2.detach() + X.detach()`).
    bool straight_through = false;
    /// Multiplies the aggregated loss (verl `kl_loss_coef`, TRL `beta`).
    double coef = 1.0;
    /// How the per-token losses are reduced (see loss_aggregation.hpp).
    aggregation_options aggregation{};
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
