#pragma once
/// @file
/// Options of reward shaping, sequence rewards and score scaling (kernels/reward_shaping.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include <optional>
#include <utility>

#include "rlhf/core/options.hpp"
#include "rlhf/options/kl.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// What reward shaping does with a row whose mask is all zero.
enum class empty_row_policy {
    raise,       ///< throw `rlhf::error` naming `mask` (TRL v0.11 raises IndexError, ColossalChat v2 asserts)
    drop_score,  ///< the row keeps its KL term and gets no score (no zeroing for every_valid_token)
    peer_slot,   ///< the slot the peer's index arithmetic gives: last_valid_token -> T - 1 (OpenRLHF),
                 ///< after_last_valid -> 0 (DeepSpeed-Chat), first_pad_slot -> 0 (TRL),
                 ///< every_valid_token -> no score, the whole row 0
};

RLHF_OPTION_NAMES(empty_row_policy, {empty_row_policy::raise, "raise"}, {empty_row_policy::drop_score, "drop_score"},
                  {empty_row_policy::peer_slot, "peer_slot"})

/// Options of `shape_rewards` / `shape_rewards_from_logprobs`.
struct reward_shaping_options {
    /// beta >= 0: the per-token reward is `-kl_coef * kl`.
    double kl_coef = 0.1;
    /// Where the sequence score goes.
    reward_slot slot = reward_slot::last_valid_token;
    /// Multiply the KL term by the mask (ColossalChat v2, verl, current TRL). TRL v0.11, OpenRLHF
    /// and DeepSpeed-Chat leave it unmasked (masked later, by GAE).
    bool mask_kl = false;
    /// Clip the score to `[-c, c]`, c >= 0 (TRL `score_clip`, DeepSpeed-Chat `clip_reward_value`,
    /// ColossalChat v2 `reward_eps`, ChatLearn `cliprange_reward`).
    std::optional<double> score_clip = std::nullopt;
    /// Clip the score to `[low, high]` (OpenRLHF `reward_clip_range`); not together with `score_clip`.
    std::optional<std::pair<double, double>> score_clip_range = std::nullopt;
    /// Divide the KL term of each row by its number of valid tokens (at least 1): ChatLearn's
    /// older PPO (`examples/megatron/models/reward_inference.py: get_all_rewards`, 302cdc7e).
    bool divide_kl_by_length = false;
    /// What a row with no valid token does.
    empty_row_policy empty_rows = empty_row_policy::raise;
    /// The per-token KL estimator (only `shape_rewards_from_logprobs` computes the KL).
    kl_options kl{};
};

/// Options of `sequence_rewards`.
struct sequence_reward_options {
    double kl_coef = 0.1;                          ///< beta >= 0
    kl_options kl{.estimator = kl_estimator::k3};  ///< the per-token estimator (ColossalChat v1: k3)
    /// The row mean divides by `n + mean_eps` (ColossalChat's `masked_mean` adds 1e-8); >= 0.
    double mean_eps = 0.0;
};

/// Options of `scale_scores`: TRL's score pre-processing in `PPOTrainer.step`.
struct score_scaling_options {
    /// `use_score_scaling`: update the running moments with the batch, then divide by
    /// `running.std + eps`.
    bool scale = false;
    /// `use_score_norm`: also subtract the running mean (requires `scale`).
    bool normalize = false;
    /// Added to the running std; default: the machine epsilon of `T` (`torch.finfo(dtype).eps`).
    std::optional<double> eps = std::nullopt;
    /// `score_clip`: clip the result to `[-c, c]`, c >= 0.
    std::optional<double> clip = std::nullopt;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
