#pragma once
/// @file
/// Framework presets for the non-differentiable half of a PPO step: per-token reward shaping,
/// reward whitening, GAE, advantage whitening and KL control, as each framework combines them,
/// and `compute_advantages`, which runs that combination.
///
/// `docs/semantics.md` lists every field and the framework file it comes from.

#include <optional>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// One framework's reward shaping and advantage estimation with a critic.
struct advantage_preset {
    std::string_view framework = {};  ///< "TRL v0.11", ...
    /// KL estimator and clamps, the score slot and clip; `kl_coef` is the controller's start value.
    reward_shaping_options rewards = {};
    /// Whitening of the shaped per-token rewards before GAE (TRL `whiten_rewards`), if any.
    std::optional<whiten_options> reward_whitening = std::nullopt;
    gae_options gae = {};
    /// Whitening of the advantages after GAE, if any.
    std::optional<whiten_options> advantage_whitening = std::nullopt;
    /// Whiten the advantages over every element, masked ones included (ChatLearn's older PPO).
    bool whiten_unmasked = false;
    kl_control_options kl_control = fixed_kl_options{};
};

/// One framework's sequence-level pipeline, without per-token advantages: one reward per
/// sequence (the score minus the KL penalty averaged over the valid tokens) and the advantage
/// `reward - value` with one value per sequence, broadcast over the sequence's tokens by the
/// policy loss.
struct sequence_advantage_preset {
    std::string_view framework = {};
    /// KL estimator, mean epsilon; `kl_coef` is the controller's start value.
    sequence_reward_options rewards = {};
    kl_control_options kl_control = fixed_kl_options{};
};

namespace presets {

/// TRL v0.11.4 classic `PPOTrainer` (`trl/trainer/ppo_trainer.py`, `trl/trainer/ppo_config.py`):
/// k1 unmasked, score at the last valid token, adaptive KL (0.2, target 6 in summed KL per
/// sequence, horizon 1e4), GAE γ=1 λ=0.95 over mask-multiplied values and rewards, advantages
/// whitened (unbiased, shift). `whiten_rewards=True` is `reward_whitening = {.shift_mean = false}`;
/// TRL then lets the whitened padding leak into the recursion, which this pipeline does not.
[[nodiscard]] inline advantage_preset trl_v0_11() {
    return {.framework = "TRL v0.11",
            .rewards = {.kl_coef = 0.2, .slot = reward_slot::last_valid_token, .kl = kl_preset::trl()},
            .gae = {.gamma = 1.0, .lambda = 0.95, .masking = gae_masking::zero_masked},
            .advantage_whitening = whiten_options{},
            .kl_control = adaptive_kl_options{
                .init_kl_coef = 0.2, .target = 6.0, .horizon = 10000.0, .measure = kl_measure::seq_mean_token_sum}};
}

/// Current TRL PPO (`trl/experimental/ppo/ppo_trainer.py`): fixed k1 coefficient 0.05 on the
/// valid tokens, the score at the first pad slot, GAE γ=1 λ=0.95, whitened advantages. TRL runs
/// the recursion over the response and its first pad slot: pass a mask extended by that slot.
[[nodiscard]] inline advantage_preset trl() {
    return {.framework = "TRL (current PPO)",
            .rewards = {.kl_coef = 0.05, .slot = reward_slot::first_pad_slot, .mask_kl = true, .kl = kl_preset::trl()},
            .gae = {.gamma = 1.0, .lambda = 0.95, .masking = gae_masking::zero_masked},
            .advantage_whitening = whiten_options{},
            .kl_control = fixed_kl_options{.kl_coef = 0.05}};
}

/// DeepSpeed-Chat (`dschat/rlhf/ppo_trainer.py`): k1 coefficient 0.1, score clipped to ±5 one slot
/// after the last response token (an empty row: its first response slot, as DeepSpeed-Chat's
/// `ends` does), GAE γ=1 λ=0.95 over the valid range, no whitening.
[[nodiscard]] inline advantage_preset deepspeed_chat() {
    return {.framework = "DeepSpeed-Chat",
            .rewards = {.kl_coef = 0.1,
                        .slot = reward_slot::after_last_valid,
                        .score_clip = 5.0,
                        .empty_rows = empty_row_policy::peer_slot,
                        .kl = kl_preset::trl()},
            .gae = {.gamma = 1.0, .lambda = 0.95, .masking = gae_masking::valid_range},
            .kl_control = fixed_kl_options{.kl_coef = 0.1}};
}

/// ColossalChat v2 (`coati/models/utils.py: compute_reward`, `coati/experience_maker/naive.py`):
/// masked k1 coefficient 0.1, the score clipped to ±5 on every valid token (right padding), GAE
/// γ=1 λ=0.95, no whitening.
[[nodiscard]] inline advantage_preset colossalchat_v2() {
    return {.framework = "ColossalChat v2",
            .rewards = {.kl_coef = 0.1,
                        .slot = reward_slot::every_valid_token,
                        .mask_kl = true,
                        .score_clip = 5.0,
                        .kl = kl_preset::trl()},
            .gae = {.gamma = 1.0, .lambda = 0.95, .masking = gae_masking::zero_masked},
            .kl_control = fixed_kl_options{.kl_coef = 0.1}};
}

/// OpenRLHF (`openrlhf/models/utils.py: compute_reward`, `trainer/ppo_utils/experience_maker.py`):
/// k1 in float32 clamped to ±10, coefficient 0.01, the score clipped to [-10, 10] at the last
/// valid token (an empty row: at the last column, as OpenRLHF's argmax does), GAE γ=1 λ=1,
/// advantages whitened over the batch with the biased variance and rsqrt(max(var, 1e-8)).
[[nodiscard]] inline advantage_preset openrlhf() {
    return {.framework = "OpenRLHF",
            .rewards = {.kl_coef = 0.01,
                        .slot = reward_slot::last_valid_token,
                        .score_clip_range = std::pair{-10.0, 10.0},
                        .empty_rows = empty_row_policy::peer_slot,
                        .kl = kl_preset::openrlhf()},
            .gae = {.gamma = 1.0, .lambda = 1.0, .masking = gae_masking::zero_masked},
            .advantage_whitening =
                whiten_options{.variance = variance_estimator::biased, .epsilon_mode = whiten_epsilon::clamp_variance},
            .kl_control = fixed_kl_options{.kl_coef = 0.01}};
}

/// verl (`verl/trainer/ppo/core_algos.py`, `ray_trainer.py: apply_kl_penalty`): the KL is not in
/// the reward by default (`use_kl_in_reward=false`; set `rewards.kl_coef = 0.001` to turn it
/// on), GAE γ=1 λ=1 skipping masked positions, advantages whitened (unbiased, Σm + 1e-8).
[[nodiscard]] inline advantage_preset verl() {
    return {
        .framework = "verl",
        .rewards = {.kl_coef = 0.0, .slot = reward_slot::last_valid_token, .mask_kl = true, .kl = kl_preset::verl()},
        .gae = {.gamma = 1.0, .lambda = 1.0, .masking = gae_masking::skip_masked},
        .advantage_whitening = whiten_options{.count_epsilon = 1e-8},
        .kl_control = fixed_kl_options{.kl_coef = 0.0}};
}

/// ChatLearn's older PPO (`examples/megatron/models/{reward_inference,utils}.py`,
/// `configs/llama2/base.yaml`, 302cdc7e): k1 divided by the response length with a fixed
/// β = 0.02 (`fix_kl_coef`, `init_kl_coef`), the score clipped to ±100 (`cliprange_reward`) at
/// the last action, GAE γ=1 λ=0.95 over every position, advantages whitened over every element
/// (unbiased).
[[nodiscard]] inline advantage_preset chatlearn() {
    return {.framework = "ChatLearn (PPO)",
            .rewards = {.kl_coef = 0.02,
                        .slot = reward_slot::last_valid_token,
                        .score_clip = 100.0,
                        .divide_kl_by_length = true,
                        .kl = kl_preset::trl()},
            .gae = {.gamma = 1.0, .lambda = 0.95, .masking = gae_masking::zero_masked},
            .advantage_whitening = whiten_options{},
            .whiten_unmasked = true,
            .kl_control = fixed_kl_options{.kl_coef = 0.02}};
}

/// ColossalChat v1 (`applications/Chat/coati/experience_maker/naive.py: make_experience`,
/// `coati/models/utils.py: compute_reward`, 36c4bb28): the reward is the score minus 0.1 × the
/// k3 estimate averaged over the action mask (count + 1e-8), the advantage is that reward minus
/// the critic's sequence value, fixed KL coefficient; no GAE, no whitening.
[[nodiscard]] inline sequence_advantage_preset colossalchat_v1() {
    return {.framework = "ColossalChat v1",
            .rewards = {.kl_coef = 0.1, .kl = kl_preset::trl(kl_estimator::k3), .mean_eps = 1e-8},
            .kl_control = fixed_kl_options{.kl_coef = 0.1}};
}

}  // namespace presets

/// Runs a preset: per-token rewards from the log-probs, the reference log-probs and the scores
/// (with `kl_coef`, the controller's current value), reward whitening, GAE with `values`, and
/// advantage whitening.
///
/// Arguments: the inputs, the outputs `rewards`, `advantages`, `returns` (written), then `preset`,
/// `kl_coef` and `reducer`.
/// Shapes: `log_probs`, `ref_log_probs`, `mask`, `values`, `rewards`, `advantages`, `returns`
/// `[B, T]`; `scores` `[B]`. Errors are those of the steps (`rlhf::shape_rewards_from_logprobs`,
/// `rlhf::masked_whiten`, `rlhf::compute_gae`), each naming its argument.
template <class T, class M, Reducer R = local_reducer>
void compute_advantages(view<T> log_probs, view<T> ref_log_probs, view<M> mask, view<T, 1> scores, view<T> values,
                        mut_view<T> rewards, mut_view<T> advantages, mut_view<T> returns,
                        const advantage_preset& preset, double kl_coef, R&& reducer = {}) {
    reward_shaping_options shaping = preset.rewards;
    shaping.kl_coef = kl_coef;
    shape_rewards_from_logprobs(log_probs, ref_log_probs, mask, scores, rewards, shaping);
    if (preset.reward_whitening) masked_whiten(view<T>(rewards), mask, rewards, *preset.reward_whitening, reducer);
    compute_gae(view<T>(rewards), values, mask, advantages, returns, preset.gae);
    if (!preset.advantage_whitening) return;
    if (preset.whiten_unmasked)
        whiten(view<T>(advantages), advantages, *preset.advantage_whitening, reducer);
    else
        masked_whiten(view<T>(advantages), mask, advantages, *preset.advantage_whitening, reducer);
}

/// Runs a sequence-level preset: `rewards[b] = scores[b] - kl_coef · mean KL of row b` (with
/// `kl_coef`, the controller's current value) and `advantages[b] = rewards[b] - values[b]`.
///
/// Arguments: the inputs, the outputs `rewards`, `advantages` (written), then `preset` and
/// `kl_coef`.
/// Shapes: `log_probs`, `ref_log_probs`, `mask` `[B, T]`; `scores`, `values`, `rewards`,
/// `advantages` `[B]`. An empty row has KL 0, so its reward is its score. Errors: those of
/// `rlhf::sequence_rewards`, and `values` / `advantages` of the wrong length or `values` not finite.
template <class T, class M>
void compute_sequence_advantages(view<T> log_probs, view<T> ref_log_probs, view<M> mask, view<T, 1> scores,
                                 view<T, 1> values, mut_view<T, 1> rewards, mut_view<T, 1> advantages,
                                 const sequence_advantage_preset& preset, double kl_coef) {
    constexpr std::string_view fn = "rlhf::compute_sequence_advantages";
    check_length(fn, "values", values.extent(0), log_probs.extent(0), "one per row of 'log_probs'");
    check_length(fn, "advantages", advantages.extent(0), log_probs.extent(0), "one per row of 'log_probs'");
    check_finite(fn, "values", values);
    check_disjoint(fn, "advantages", advantages, "rewards", rewards);
    check_disjoint(fn, "rewards", rewards, "values", values);
    check_same_or_disjoint(fn, "advantages", advantages, "values", values);
    sequence_reward_options options = preset.rewards;
    options.kl_coef = kl_coef;
    sequence_rewards(scores, log_probs, ref_log_probs, mask, rewards, options);
    for (index_t b = 0; b < advantages.extent(0); ++b) advantages(b) = rewards(b) - values(b);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
