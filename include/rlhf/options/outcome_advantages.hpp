#pragma once
/// @file
/// Options of the critic-free advantage estimators and their framework presets (kernels/outcome_advantages.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include "rlhf/core/options.hpp"
#include "rlhf/options/masked_stats.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// What a group estimator does with a group of one row, which has no siblings to form a baseline.
enum class singleton_group_policy {
    /// Baseline 0 and standard deviation 1: the advantage is the score itself, s / (1 + ε) for GRPO
    /// with std normalisation (verl `verl/trainer/ppo/core_algos.py`). verl's std 1 is a float32
    /// tensor, so it divides by float32(1 + ε) (1.00000095 for ε = 1e-6); the library divides by
    /// 1 + ε in double (relative difference below 1e-7).
    raw_score,
    /// The advantage is 0 (TRL `trl/trainer/grpo_trainer.py`, through its NaN std; ChatLearn
    /// `chatlearn/algorithm/grpo_utils/advantage_compute.py`, whose population std is 0).
    zero,
    /// Throw `rlhf::error` naming `group_ids` (OpenRLHF asserts `n_samples_per_prompt > 1`).
    raise,
};

RLHF_OPTION_NAMES(singleton_group_policy, {singleton_group_policy::raw_score, "raw_score"},
                  {singleton_group_policy::zero, "zero"}, {singleton_group_policy::raise, "raise"})

/// How the reverse discounted return G_t = r_t + γ·G_{t+1} treats positions whose mask is 0.
enum class return_masking {
    /// The running return restarts from 0 before every mask-0 slot: G_t = r_t + γ·m_{t+1}·G_{t+1}.
    /// Mask-0 slots keep their own G_t. An outcome reward never reaches the tokens before an interior
    /// hole (verl `compute_reinforce_plus_plus_outcome_advantage` before volcengine/verl#7300).
    reset_at_masked,
    /// Rewards are multiplied by the mask and the discount runs through every slot, holes included:
    /// G_t = r_t·m_t + γ·G_{t+1} (OpenRLHF `get_cumulative_returns`,
    /// `openrlhf/trainer/ppo_utils/experience_maker.py`).
    zero_masked,
    /// Mask-0 slots are transparent: no reward, no discount, and a return of 0 there; the return of
    /// the next valid token carries across holes (verl after volcengine/verl#7300).
    skip_masked,
};

RLHF_OPTION_NAMES(return_masking, {return_masking::reset_at_masked, "reset_at_masked"},
                  {return_masking::zero_masked, "zero_masked"}, {return_masking::skip_masked, "skip_masked"})

/// How REINFORCE++-baseline spreads the baseline-corrected score over the tokens before whitening.
enum class baseline_broadcast {
    /// (s_i − b_g) on every valid token, 0 elsewhere (verl
    /// `compute_reinforce_plus_plus_baseline_outcome_advantage`).
    tiled_score,
    /// Undiscounted reward-to-go of r·m with b_g subtracted at the row's last valid token, so
    /// per-token rewards (a KL penalty, say) keep their place (OpenRLHF `reinforce_baseline`, which
    /// forces γ = 1).
    cumulative_returns,
};

RLHF_OPTION_NAMES(baseline_broadcast, {baseline_broadcast::tiled_score, "tiled_score"},
                  {baseline_broadcast::cumulative_returns, "cumulative_returns"})

/// GRPO: A_i = (s_i − mean_g) / (std_g + ε), or s_i − mean_g without std normalisation.
/// The defaults are verl's.
/// @note ε: verl 1e-6 (`verl/trainer/ppo/core_algos.py`), TRL 1e-4 (`trl/trainer/grpo_trainer.py`),
///       OpenRLHF 1e-9 (`group_norm`, `openrlhf/trainer/ppo_utils/experience_maker.py`), ColossalChat
///       1e-4 (`applications/ColossalChat/coati/distributed/grpo_consumer.py`), ChatLearn 1e-5
///       (`chatlearn/algorithm/grpo_utils/advantage_compute.py`). Std: unbiased everywhere except
///       ChatLearn (biased, `np.std`). Singletons: verl `raw_score`, TRL and ChatLearn `zero`,
///       OpenRLHF `raise`.
struct grpo_options {
    double epsilon = 1e-6;         ///< added to the group std; must be > 0 when `normalize_by_std`
    bool normalize_by_std = true;  ///< false: Dr.GRPO (verl `norm_adv_by_std_in_grpo=False`)
    variance_estimator std_estimator = variance_estimator::unbiased;
    singleton_group_policy singleton = singleton_group_policy::raw_score;
};

/// Dr.GRPO: A_i = s_i − mean_g, no std normalisation.
/// @note verl `norm_adv_by_std_in_grpo=False`; OpenRLHF `dr_grpo` and the shaping of
///       `reinforce_baseline`; TRL `scale_rewards='none'`.
struct dr_grpo_options {
    singleton_group_policy singleton = singleton_group_policy::raw_score;
};

/// RLOO: A_i = s_i − mean of the other rows of the group = (s_i − mean_g)·n/(n − 1).
/// @note verl `compute_rloo_outcome_advantage` (`s·n/(n−1) − mean·n/(n−1)`, singleton unchanged:
///       `raw_score`); OpenRLHF `rloo` (`r − (Σr − r)/(n−1)`, n > 1 asserted: `raise`).
struct rloo_options {
    singleton_group_policy singleton = singleton_group_policy::raw_score;
};

/// OPO: A_i = s_i − Σ_g len·s / Σ_g len, with len the number of valid tokens of a row.
/// A group whose rows are all empty has baseline 0 (its advantages are 0 anyway).
/// @note verl `compute_opo_outcome_advantage` (singleton baseline 0: `raw_score`).
struct opo_options {
    singleton_group_policy singleton = singleton_group_policy::raw_score;
};

/// Reverse discounted returns G_t = r_t + γ·G_{t+1} (reward-to-go), per row.
/// @note `zero_masked` with γ is OpenRLHF `get_cumulative_returns`; `reset_at_masked` is the scan
///       inside verl `compute_reinforce_plus_plus_outcome_advantage`.
struct cumulative_return_options {
    double gamma = 1.0;  ///< in [0, 1]
    return_masking masking = return_masking::reset_at_masked;
};

/// REINFORCE++: returns G by `compute_cumulative_returns`, then advantages = masked whitening of G.
/// Defaults: verl (`reset_at_masked`; batch whitening as verl `masked_whiten`: unbiased variance,
/// rsqrt(var + 1e-8), Σm + 1e-8 in the means' denominators; masked positions set to 0).
/// @note OpenRLHF `reinforce`: `{.masking = return_masking::zero_masked, .whiten = {.variance =
///       variance_estimator::biased, .epsilon_mode = whiten_epsilon::clamp_variance}}` (its batch
///       whitening leaves masked positions as (G − μ)·rstd and computes the statistics in float32).
struct reinforce_plus_plus_options {
    double gamma = 1.0;  ///< in [0, 1]
    return_masking masking = return_masking::reset_at_masked;
    whiten_options whiten = {.zero_masked = true, .count_epsilon = 1e-8};
};

/// REINFORCE++-baseline: b_g = group mean of the scores, spread over the tokens by `broadcast`,
/// then masked whitening. Defaults: verl.
/// @note OpenRLHF `reinforce_baseline`: `{.broadcast = baseline_broadcast::cumulative_returns, .whiten =
///       {.variance = variance_estimator::biased, .epsilon_mode = whiten_epsilon::clamp_variance}}`,
///       with score-only `token_rewards` (OpenRLHF subtracts the baseline before adding the KL penalty;
///       with a KL penalty in the rewards, use `compute_dr_grpo_advantages` on the `[B]` scores, shape
///       the rewards, then `compute_reinforce_plus_plus_advantages` with the OpenRLHF options).
struct reinforce_plus_plus_baseline_options {
    singleton_group_policy singleton = singleton_group_policy::raw_score;
    baseline_broadcast broadcast = baseline_broadcast::tiled_score;
    whiten_options whiten = {.zero_masked = true, .count_epsilon = 1e-8};
};

/// Options that reproduce each framework's GRPO advantages.
namespace grpo_preset {

/// verl (`verl/trainer/ppo/core_algos.py: compute_grpo_outcome_advantage`); `normalize_by_std = false`
/// is its Dr.GRPO (`norm_adv_by_std_in_grpo=False`).
[[nodiscard]] inline grpo_options verl(bool normalize_by_std = true) {
    return {.epsilon = 1e-6, .normalize_by_std = normalize_by_std};
}

/// TRL (`trl/trainer/grpo_trainer.py`, `scale_rewards='group'`): a singleton's NaN std gives 0.
[[nodiscard]] inline grpo_options trl() {
    return {.epsilon = 1e-4, .singleton = singleton_group_policy::zero};
}

/// OpenRLHF `group_norm` (`openrlhf/trainer/ppo_utils/experience_maker.py`), which asserts groups of
/// more than one sample.
[[nodiscard]] inline grpo_options openrlhf() {
    return {.epsilon = 1e-9, .singleton = singleton_group_policy::raise};
}

/// ColossalChat (`applications/ColossalChat/coati/distributed/grpo_consumer.py`). A singleton group
/// there gives a NaN advantage (torch.std of one element); the library refuses it instead.
[[nodiscard]] inline grpo_options colossalchat() {
    return {.epsilon = 1e-4, .singleton = singleton_group_policy::raise};
}

/// ChatLearn `AdvantageComputer` (`chatlearn/algorithm/grpo_utils/advantage_compute.py`): population
/// std (`np.std`); a singleton gives 0.
[[nodiscard]] inline grpo_options chatlearn() {
    return {.epsilon = 1e-5, .std_estimator = variance_estimator::biased, .singleton = singleton_group_policy::zero};
}

}  // namespace grpo_preset

/// Options that reproduce each framework's REINFORCE++.
namespace reinforce_plus_plus_preset {

/// verl (`verl/trainer/ppo/core_algos.py: compute_reinforce_plus_plus_outcome_advantage`, before
/// volcengine/verl#7300): reset at every mask-0 slot, unbiased batch whitening, masked positions 0.
[[nodiscard]] inline reinforce_plus_plus_options verl(double gamma = 1.0) {
    return {.gamma = gamma};
}

/// OpenRLHF `reinforce` (`openrlhf/trainer/ppo_utils/experience_maker.py`): cumulative returns of
/// the masked rewards, batch whitening with biased variance and rsqrt(max(var, 1e-8)), masked
/// positions whitened too. OpenRLHF takes the statistics in float32; these are in double.
[[nodiscard]] inline reinforce_plus_plus_options openrlhf(double gamma = 1.0) {
    return {.gamma = gamma,
            .masking = return_masking::zero_masked,
            .whiten = {.variance = variance_estimator::biased, .epsilon_mode = whiten_epsilon::clamp_variance}};
}

}  // namespace reinforce_plus_plus_preset

/// Options that reproduce each framework's REINFORCE++-baseline.
namespace reinforce_plus_plus_baseline_preset {

/// verl (`compute_reinforce_plus_plus_baseline_outcome_advantage`): singleton baseline 0.
[[nodiscard]] inline reinforce_plus_plus_baseline_options verl() {
    return {};
}

/// OpenRLHF `reinforce_baseline` (see `reinforce_plus_plus_baseline_options`).
[[nodiscard]] inline reinforce_plus_plus_baseline_options openrlhf() {
    return {.singleton = singleton_group_policy::raise,
            .broadcast = baseline_broadcast::cumulative_returns,
            .whiten = {.variance = variance_estimator::biased, .epsilon_mode = whiten_epsilon::clamp_variance}};
}

}  // namespace reinforce_plus_plus_baseline_preset

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
