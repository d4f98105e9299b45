#pragma once
/// @file
/// Options of the policy loss (kernels/policy_loss.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include <optional>

#include "rlhf/core/options.hpp"
#include "rlhf/options/loss_aggregation.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Level at which the importance ratio is taken.
enum class importance_ratio_level {
    token,     ///< ρ_bt = exp(lp_bt − old_bt) (PPO)
    sequence,  ///< ρ_b = exp(mean over the row's valid tokens of lp − old) (GSPO)
};

RLHF_OPTION_NAMES(importance_ratio_level, {importance_ratio_level::token, "token"},
                  {importance_ratio_level::sequence, "sequence"}, {importance_ratio_level::sequence, "gspo"})

/// Options of `rlhf::policy_loss` (designated initialisers:
/// `rlhf::policy_loss_options{.clip_high = 0.28, .dual_clip = 3.0}`). Framework presets:
///
/// - TRL v0.11 `PPOTrainer.loss`: defaults plus `.ratio_threshold = 10`.
/// - verl `compute_policy_loss_vanilla`: `.log_ratio_min = -20, .log_ratio_max = 20,
///   .dual_clip = 3` (clip_ratio_c) and the actor's aggregation mode.
/// - OpenRLHF `PolicyLoss` (ppo): `.log_ratio_min = -20, .log_ratio_max = 20`, optional
///   `.dual_clip`; `token_level_loss=False` → `seq_mean_token_mean`; gspo:
///   `.level = sequence` (no clamp) with `seq_mean_token_mean`.
/// - DeepSpeed-Chat `actor_loss_fn`: `.mask_log_ratio = true`.
/// - ColossalChat v1 `coati/models/loss.py: PolicyLoss`: `.mask_log_ratio = true`,
///   `seq_mean_token_mean` with `global_sequence_count = B`; v2 adds `.ratio_cap = 10,
///   .skip_threshold = 20` and `token_count_epsilon = 0`. v2 distributed GRPO
///   (`coati/distributed/loss.py`): `.mask_log_ratio = true` with clip-higher, `sample_level` =
///   `seq_mean_token_mean` over B rows, `token_level` = `token_mean` with
///   `global_token_count = total_effective_tokens + 1e-8` (its β·KL term is a separate loss).
/// - ChatLearn `calculate_grpo_loss`: `.log_ratio_max = 10, .loss_cap = 3`.
/// - OpenRL `dual_clip_ppo`: `.ratio_cap = dual_clip_coeff`.
struct policy_loss_options {
    /// ε_low: the ratio is clipped from below at 1 − clip_low (in [0, 1]).
    double clip_low = 0.2;
    /// ε_high: the ratio is clipped from above at 1 + clip_high (DAPO clip-higher: 0.28).
    double clip_high = 0.2;
    /// Dual clip c > 1 (Ye et al. 2020): where A < 0, `L ← min(L, −c·A)`.
    /// @note verl `compute_policy_loss_vanilla` always applies it (clip_ratio_c = 3);
    /// OpenRLHF `PolicyLoss(dual_clip=c)`; tianshou / PPOxFamily use the same A < 0 form.
    std::optional<double> dual_clip{};
    /// `ρ ← min(ρ, ratio_cap)` before the clip, for every A.
    /// @note OpenRL `openrl/algorithms/ppo.py` (`dual_clip_ppo`, `dual_clip_coeff`);
    /// ColossalChat `coati/models/loss.py: PolicyLoss` `ratio_.clamp(0, 10)`.
    std::optional<double> ratio_cap{};
    /// `L ← min(L, loss_cap)`: a constant cap on the per-token loss.
    /// @note ChatLearn `chatlearn/algorithm/grpo_utils/loss_gallery.py: calculate_grpo_loss`
    /// (`final_clip_ratio` = 3).
    std::optional<double> loss_cap{};
    /// Lower clamp of the log-ratio before exp (verl, OpenRLHF ppo: −20).
    std::optional<double> log_ratio_min{};
    /// Upper clamp of the log-ratio before exp (verl, OpenRLHF ppo: 20; ChatLearn: 10).
    std::optional<double> log_ratio_max{};
    /// `ρ = exp((lp − old) · m)`: masked tokens get ratio 1 (DeepSpeed-Chat `actor_loss_fn`,
    /// ColossalChat `PolicyLoss`). Changes only the statistics over all positions.
    bool mask_log_ratio = false;
    /// ColossalChat v2: sets `stats.skip_threshold_exceeded` when the mean of ρ over ALL B·T
    /// positions (padding included) exceeds it. The loss and gradient are still computed; the
    /// trainer decides to skip the step.
    std::optional<double> skip_threshold{};
    /// TRL: when the masked mean of ρ exceeds it, the loss is 0 and the gradient 0
    /// (`stats.ratio_threshold_exceeded`). The PPO trainer then zeroes the batch's value loss
    /// too, as TRL's `loss()` (`rlhf::ppo::config::threshold_scope`).
    std::optional<double> ratio_threshold{};
    /// Token ratio (PPO) or sequence ratio (GSPO; OpenRLHF `policy_loss_type='gspo'`).
    importance_ratio_level level = importance_ratio_level::token;
    /// How the per-token losses are reduced (see loss_aggregation.hpp).
    aggregation_options aggregation{};
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
