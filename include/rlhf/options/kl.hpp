#pragma once
/// @file
/// Options of the per-token KL estimators and their framework presets (kernels/kl.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include <optional>

#include "rlhf/core/options.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// How the per-token KL estimate is computed.
struct kl_options {
    /// Which estimator (k1, abs, k2, k3).
    kl_estimator estimator = kl_estimator::k1;
    /// Clamp the log-ratio `d` to `[-c, c]` before the estimator (verl k3: 20). `c > 0`.
    std::optional<double> log_ratio_clamp = std::nullopt;
    /// Clamp the estimate to `[-c, c]` (verl, ChatLearn k3: 10; OpenRLHF, every estimator: 10). `c > 0`.
    std::optional<double> value_clamp = std::nullopt;
    /// Round both log-probs to float32 and subtract in float32 before the estimator (OpenRLHF's
    /// `log_probs.float() - log_probs_base.float()`); the estimator itself runs in `T`.
    bool float32_log_ratio = false;
};

/// Options that reproduce each framework's per-token KL.
namespace kl_preset {

/// TRL (`trl/trainer/ppo_trainer.py: PPOTrainer._kl_penalty`, v0.11, and the current PPO/GRPO
/// trainers): no clamp.
[[nodiscard]] inline kl_options trl(kl_estimator estimator = kl_estimator::k1) {
    return {.estimator = estimator};
}

/// verl (`verl/trainer/ppo/core_algos.py: kl_penalty_forward`): k3 clamps the log-ratio to +-20
/// and the estimate to +-10; the other estimators are not clamped.
[[nodiscard]] inline kl_options verl(kl_estimator estimator = kl_estimator::k1) {
    if (estimator == kl_estimator::k3) return {.estimator = estimator, .log_ratio_clamp = 20.0, .value_clamp = 10.0};
    return {.estimator = estimator};
}

/// OpenRLHF (`openrlhf/models/utils.py: compute_approx_kl`): float32 log-ratio, every estimator
/// clamped to +-10.
[[nodiscard]] inline kl_options openrlhf(kl_estimator estimator = kl_estimator::k1) {
    return {.estimator = estimator, .value_clamp = 10.0, .float32_log_ratio = true};
}

/// ChatLearn (`chatlearn/algorithm/grpo_utils/policy_trainer.py`): k3 clamped to +-10.
[[nodiscard]] inline kl_options chatlearn() {
    return {.estimator = kl_estimator::k3, .value_clamp = 10.0};
}

}  // namespace kl_preset

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
