#pragma once
/// @file
/// Options of the value loss (kernels/value_loss.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include <optional>

#include "rlhf/options/loss_aggregation.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Options of `rlhf::value_loss` (designated initialisers:
/// `rlhf::value_loss_options{.clip_range = 0.5, .aggregation = {.mode =
/// rlhf::loss_aggregation::seq_mean_token_mean}}`). Framework presets (each checked against the golden outputs where
/// the file has one):
///
/// - TRL v0.11 `trl/trainer/ppo_trainer.py: PPOTrainer.loss` (and the current
///   `trl/experimental/ppo/ppo_trainer.py`): `.clip_range = cliprange_value (0.2), .coef = vf_coef (0.1)`.
/// - verl `verl/trainer/ppo/core_algos.py: compute_value_loss`: `.clip_range = cliprange_value (0.5)`
///   and the critic's `loss_agg_mode` in `.aggregation`.
/// - OpenRLHF `openrlhf/models/loss.py: ValueLoss`: `.clip_range = value_clip (0.5)` or
///   `std::nullopt` for `clip_eps=None`; `token_level_loss=False` → `seq_mean_token_mean`.
/// - DeepSpeed-Chat `dschat/rlhf/ppo_trainer.py: critic_loss_fn`: `.clip_range = 0.2`.
/// - ColossalChat v2 `coati/models/loss.py: ValueLoss`: `.clip_range = 0.2,
///   .returns_from_advantages = true` (token-mean over the whole batch; the trainer's `vf_coef = 1`).
/// - ColossalChat v1 `coati/models/loss.py: ValueLoss`: `.clip_range = 0.4` on `[B, 1]`
///   per-sequence values with a full mask.
/// - OpenRL `openrl/algorithms/ppo.py: cal_value_loss`: `.clip_range = clip_param (0.2),
///   .huber_delta = 10, .coef = value_loss_coef (0.5)` (its `huber_loss`/`mse_loss` carry the ½).
/// - chatllama `chatllama/rlhf/trainer.py`: `.scale = 1` (no ½), rewards as targets.
struct value_loss_options {
    /// c ≥ 0: `V_clip = clamp(V, V_old − c, V_old + c)` (absolute, in value units).
    /// `std::nullopt`: no clipping (OpenRLHF `clip_eps=None`, OpenRL `use_clipped_value_loss=False`).
    std::optional<double> clip_range = 0.2;
    /// δ > 0: squared error within δ, linear beyond (OpenRL `use_huber_loss`, `huber_delta = 10`).
    /// `std::nullopt`: squared error everywhere.
    std::optional<double> huber_delta{};
    /// The factor in front of the per-token error: ½ everywhere but chatllama.
    double scale = 0.5;
    /// Multiplies the aggregated loss (TRL `vf_coef`, OpenRL `value_loss_coef`).
    double coef = 1.0;
    /// `returns` holds advantages; the target is `advantages + old_values` (ColossalChat v2, which
    /// is only right when the advantages were not whitened).
    bool returns_from_advantages = false;
    /// How the per-token losses are reduced (see loss_aggregation.hpp).
    aggregation_options aggregation{};
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
