#pragma once
/// @file
/// Options of the reward-model losses (kernels/reward_model_loss.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Options of `rlhf::pairwise_logsigmoid_loss`.
struct pairwise_loss_options {
    /// Required reward gap: the loss is `−log σ(c − r − margin)` (TRL RewardTrainer's dataset
    /// `margin`, OpenRLHF `PairWiseLoss(margin)`); 0 is ColossalChat's `LogSigLoss`. Finite.
    double margin = 0.0;
    /// TRL `RewardConfig.center_rewards_coefficient`: adds `coef · mean((c + r)²)`, which pulls the
    /// rewards towards zero mean (0 = off, TRL's default `None`). Finite and not negative.
    double center_rewards_coefficient = 0.0;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
