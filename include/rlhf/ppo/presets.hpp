#pragma once
/// @file
/// Named PPO/GRPO configurations (`rlhf::ppo::presets::*`) that reproduce each framework's recipe,
/// built on the kernel presets (`rlhf::presets`, docs/semantics.md): `from_advantage_preset` and
/// its inverse `advantage_preset_of`. docs/ppo.md has the table.

#include "rlhf/core/options.hpp"
#include "rlhf/kernels/presets.hpp"
#include "rlhf/ppo/config.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// A config whose reward shaping, KL control, GAE and whitening are those of a kernel preset
/// (`rlhf::presets`, docs/semantics.md), with the KL in the reward and every other field from
/// `base`.
[[nodiscard]] inline config from_advantage_preset(const advantage_preset& preset, config base = {}) {
    base.reward = preset.rewards;
    base.kl = kl_placement::reward;
    base.kl_control = preset.kl_control;
    base.estimator = advantage_estimator::gae;
    base.gae = preset.gae;
    base.reward_whitening = preset.reward_whitening;
    base.advantage_whitening = preset.advantage_whitening;
    base.whiten_unmasked = preset.whiten_unmasked;
    return base;
}

/// The kernel preset of a config's reward pipeline (the inverse of `from_advantage_preset`): its
/// reward shaping, reward whitening, GAE, advantage whitening and KL control.
[[nodiscard]] inline advantage_preset advantage_preset_of(const config& c) {
    return {.framework = "rlhf::ppo::config",
            .rewards = c.reward,
            .reward_whitening = c.reward_whitening,
            .gae = c.gae,
            .advantage_whitening = c.advantage_whitening,
            .whiten_unmasked = c.whiten_unmasked,
            .kl_control = c.kl_control};
}

/// Named configurations that reproduce each framework's PPO/GRPO recipe (docs/ppo.md has the
/// table). Batch sizes are the user's: a preset sets the per-step structure (epochs, clipping,
/// KL, estimator, whitening, aggregation), not the sizes, unless the framework fixes them.
/// A GAE preset has the name of the kernel preset it starts from (`rlhf::presets`).
namespace presets {

/// TRL v0.11 classic `PPOTrainer` (trl/trainer/ppo_trainer.py, ppo_config.py, tag v0.11.4):
/// `rlhf::presets::trl_v0_11()` (adaptive β fed the per-sequence KL sum), ratio threshold 10,
/// value clip 0.2 with vf_coef 0.1, 4 PPO epochs, token-mean losses, micro-batches averaged
/// (accelerate). TRL's value head shares the policy's optimizer: pass no critic optimizer.
/// TRL's loop: a forward batch (`mini_batch_size`: this library's micro-batch) over the ratio
/// threshold has its whole loss (policy and value) zeroed; the early stop (`early_stop_kl` =
/// `target_kl`, off by default) is judged after each epoch from its last forward batch's KL.
[[nodiscard]] inline config trl_v0_11() {
    return from_advantage_preset(rlhf::presets::trl_v0_11(),
                                 {.kl_metric = kl_measure::seq_mean_token_sum,
                                  .policy_loss = {.clip_low = 0.2, .clip_high = 0.2, .ratio_threshold = 10.0},
                                  .value_loss = {.clip_range = 0.2, .coef = 0.1},
                                  .ppo_epochs = 4,
                                  .scaling = micro_batch_scaling::mean_of_micro_batches,
                                  .threshold_scope = ratio_threshold_scope::micro_batch,
                                  .early_stop_factor = 1.5,
                                  .early_stop = early_stop_rule::after_epoch});
}

/// DeepSpeed-Chat step 3 (dschat/rlhf/ppo_trainer.py, training/step3_rlhf_finetuning/main.py):
/// `rlhf::presets::deepspeed_chat()`, log-ratio masked before exp, clip 0.2, value clip 0.2,
/// token-mean, 1 PPO epoch over the minibatches in rollout order (`MiniDataset` slices the
/// generation batch; no shuffle), gradient clipping 1.0 (its DeepSpeed config). `unsupervised = true`
/// adds its PTX form: a separate `27.8·lm_loss` step after each actor step. EMA
/// (`--enable_ema`) is `.ema_beta = 0.992`.
/// @note DeepSpeed-Chat places the score one slot after the last response token
/// (`reward_slot::after_last_valid`, with the critic's value at that padding slot in GAE); the
/// response layout carries no value there, so the trainer scores the last response token.
[[nodiscard]] inline config deepspeed_chat(bool unsupervised = false) {
    config c = from_advantage_preset(rlhf::presets::deepspeed_chat(),
                                     {.policy_loss = {.clip_low = 0.2, .clip_high = 0.2, .mask_log_ratio = true},
                                      .value_loss = {.clip_range = 0.2, .coef = 1.0},
                                      .ptx = unsupervised ? ptx_mode::separate_step : ptx_mode::none,
                                      .ptx_coef = unsupervised ? 27.8 : 0.0,
                                      .ppo_epochs = 1,
                                      .shuffle = false,
                                      .scaling = micro_batch_scaling::mean_of_micro_batches,
                                      .max_grad_norm = 1.0,
                                      .critic_max_grad_norm = 1.0});
    c.reward.slot = reward_slot::last_valid_token;
    c.reward.empty_rows = empty_row_policy::raise;  // the peer's slot arithmetic belongs to its layout
    return c;
}

/// ColossalChat v2 PPO (applications/ColossalChat/coati/trainer/ppo.py, models/loss.py):
/// `rlhf::presets::colossalchat_v2()`, log-ratio masked, ratio capped at 10, step skipped when
/// the mean ratio over all positions exceeds 20, seq-mean-token-mean policy loss (ε = 0), value
/// clip 0.2 on `advantages + old values` with vf_coef 1, CPU-offloaded buffer, grad clip 1.0.
/// `with_ptx = true`: the trainer's default PTX mix `(1 − 0.9)·actor + 0.9·lm` (its example
/// scripts use 0).
[[nodiscard]] inline config colossalchat_v2(bool with_ptx = false) {
    return from_advantage_preset(
        rlhf::presets::colossalchat_v2(),
        {.policy_loss = {.clip_low = 0.2,
                         .clip_high = 0.2,
                         .ratio_cap = 10.0,
                         .mask_log_ratio = true,
                         .skip_threshold = 20.0,
                         .aggregation = {.mode = loss_aggregation::seq_mean_token_mean, .token_count_epsilon = 0.0}},
         .value_loss = {.clip_range = 0.2, .coef = 1.0, .returns_from_advantages = true},
         .ptx = with_ptx ? ptx_mode::mixed : ptx_mode::none,
         .ptx_coef = with_ptx ? 0.9 : 0.0,
         .ppo_epochs = 1,
         .max_grad_norm = 1.0,
         .critic_max_grad_norm = 1.0,
         .cpu_offload = true});
}

/// OpenRLHF PPO (openrlhf/cli/train_ppo_ray.py defaults, models/loss.py):
/// `rlhf::presets::openrlhf()`, log-ratio clamped to ±20, clip 0.2, value clip 0.5, token-mean,
/// 1 epoch, grad clip 1.0, CPU-offloaded buffer, micro-batches averaged (DeepSpeed). EMA
/// (`--enable_ema`) is `.ema_beta = 0.992`; an adaptive β (`kl.target` set) is
/// `adaptive_kl_options{.init_kl_coef = 0.01, .target = …, .measure = seq_mean_token_mean}`.
[[nodiscard]] inline config openrlhf() {
    return from_advantage_preset(
        rlhf::presets::openrlhf(),
        {.kl_metric = kl_measure::seq_mean_token_mean,
         .policy_loss = {.clip_low = 0.2, .clip_high = 0.2, .log_ratio_min = -20.0, .log_ratio_max = 20.0},
         .value_loss = {.clip_range = 0.5, .coef = 1.0},
         .ppo_epochs = 1,
         .scaling = micro_batch_scaling::mean_of_micro_batches,
         .max_grad_norm = 1.0,
         .critic_max_grad_norm = 1.0,
         .cpu_offload = true});
}

/// verl PPO (verl/trainer/config/_generated_ppo_trainer.yaml, trainer/ppo/core_algos.py):
/// `rlhf::presets::verl()` with no KL term by default (`use_kl_in_reward = false`, `use_kl_loss =
/// false`; turn on with `.kl = kl_placement::reward` or `loss`, β = 0.001 is set), log-ratio ±20,
/// dual clip 3, clip 0.2, value clip 0.5, token-mean over the global token count, 1 epoch, no
/// shuffle, grad clip 1.0.
[[nodiscard]] inline config verl() {
    config c = from_advantage_preset(rlhf::presets::verl(), {.kl_metric = kl_measure::seq_mean_token_mean,
                                                             .kl_loss = {.kl = kl_preset::verl(kl_estimator::k3)},
                                                             .policy_loss = {.clip_low = 0.2,
                                                                             .clip_high = 0.2,
                                                                             .dual_clip = 3.0,
                                                                             .log_ratio_min = -20.0,
                                                                             .log_ratio_max = 20.0},
                                                             .value_loss = {.clip_range = 0.5, .coef = 1.0},
                                                             .ppo_epochs = 1,
                                                             .shuffle = false,
                                                             .scaling = micro_batch_scaling::global_counts,
                                                             .max_grad_norm = 1.0,
                                                             .critic_max_grad_norm = 1.0});
    c.kl = kl_placement::none;
    c.kl_control = fixed_kl_options{.kl_coef = 0.001};
    return c;
}

/// ChatLearn (current, GRPO only: chatlearn/algorithm/grpo_utils/{loss_gallery,advantage_compute,
/// policy_trainer}.py): GRPO advantages with population std and ε = 1e-5 (singletons 0), no
/// whitening, log-ratio clamped above at 10, per-token loss capped at 3, clip 0.2/0.2,
/// token-mean over the global token count, k3 KL in the loss clamped to ±10 with `kl_coef = 0`
/// (off), 8 samples per prompt (set your `num_inference_per_prompt`).
[[nodiscard]] inline config chatlearn_grpo() {
    return {
        .samples_per_prompt = 8,
        .kl = kl_placement::none,
        .kl_control = fixed_kl_options{.kl_coef = 0.0},
        .kl_metric = kl_measure::token_mean,
        .kl_loss = {.kl = kl_preset::chatlearn()},
        .estimator = advantage_estimator::grpo,
        .grpo = grpo_preset::chatlearn(),
        .advantage_whitening = std::nullopt,
        .policy_loss = {.clip_low = 0.2, .clip_high = 0.2, .loss_cap = 3.0, .log_ratio_max = 10.0},
        .value_loss = {.clip_range = std::nullopt},
        .ppo_epochs = 1,
        .scaling = micro_batch_scaling::global_counts,
    };
}

/// ChatLearn's older PPO (examples/megatron/configs/llama2/base.yaml and models/*.py at
/// 302cdc7e): `rlhf::presets::chatlearn()` (k1 ÷ length with β = 0.02, score clipped to ±100,
/// advantages whitened over every element), log-ratio masked before exp, clip 0.2, value clip
/// 0.1, grad clip 0.5, 1 epoch.
/// @note ChatLearn can use a Taylor-expanded ratio (`numerical_stable`); here the ratio is exact.
[[nodiscard]] inline config chatlearn() {
    return from_advantage_preset(rlhf::presets::chatlearn(),
                                 {.policy_loss = {.clip_low = 0.2, .clip_high = 0.2, .mask_log_ratio = true},
                                  .value_loss = {.clip_range = 0.1, .coef = 1.0},
                                  .ppo_epochs = 1,
                                  .max_grad_norm = 0.5,
                                  .critic_max_grad_norm = 0.5});
}

/// GRPO as verl's GRPO recipe runs it (examples/grpo_trainer, `algorithm.adv_estimator=grpo`,
/// `actor.use_kl_loss=True`): group-normalised advantages (unbiased std, ε = 1e-6), no
/// critic, no further whitening, k3 KL in the loss with verl's clamps and β = 0.001, log-ratio
/// ±20, dual clip 3, clip 0.2, token-mean, 5 samples per prompt.
[[nodiscard]] inline config grpo() {
    return {
        .samples_per_prompt = 5,
        .kl = kl_placement::loss,
        .kl_control = fixed_kl_options{.kl_coef = 0.001},
        .kl_metric = kl_measure::seq_mean_token_mean,
        .kl_loss = {.kl = kl_preset::verl(kl_estimator::k3)},
        .estimator = advantage_estimator::grpo,
        .grpo = grpo_preset::verl(),
        .advantage_whitening = std::nullopt,
        .policy_loss =
            {.clip_low = 0.2, .clip_high = 0.2, .dual_clip = 3.0, .log_ratio_min = -20.0, .log_ratio_max = 20.0},
        .value_loss = {.clip_range = std::nullopt},
        .ppo_epochs = 1,
        .scaling = micro_batch_scaling::global_counts,
        .max_grad_norm = 1.0,
    };
}

/// RLOO (verl `compute_rloo_outcome_advantage`; TRL `RLOOTrainer`'s KL in the reward): the
/// leave-one-out baseline over 2 samples per prompt, k1 KL in the reward with β = 0.05 (summed
/// into each row's score, as TRL's sequence-level KL), no critic, no whitening, PPO clip 0.2.
[[nodiscard]] inline config rloo() {
    return {
        .samples_per_prompt = 2,
        .reward = {.slot = reward_slot::last_valid_token, .mask_kl = true, .kl = kl_preset::trl()},
        .kl = kl_placement::reward,
        .kl_control = fixed_kl_options{.kl_coef = 0.05},
        .estimator = advantage_estimator::rloo,
        .advantage_whitening = std::nullopt,
        .policy_loss = {.clip_low = 0.2, .clip_high = 0.2},
        .value_loss = {.clip_range = std::nullopt},
        .ppo_epochs = 1,
    };
}

/// REINFORCE++ as OpenRLHF runs it (`--advantage_estimator reinforce`): k1 KL in the reward
/// (OpenRLHF's float32 log-ratio, ±10 clamp) with β = 0.01, masked cumulative returns, batch
/// whitening with biased variance and rsqrt(max(var, 1e-8)), no critic, log-ratio ±20, clip 0.2,
/// token-mean, grad clip 1.0.
[[nodiscard]] inline config reinforce_plus_plus() {
    return {
        .reward = {.slot = reward_slot::last_valid_token,
                   .mask_kl = false,
                   .score_clip_range = std::pair{-10.0, 10.0},
                   .kl = kl_preset::openrlhf()},
        .kl = kl_placement::reward,
        .kl_control = fixed_kl_options{.kl_coef = 0.01},
        .kl_metric = kl_measure::seq_mean_token_mean,
        .estimator = advantage_estimator::reinforce_plus_plus,
        .reinforce_plus_plus = reinforce_plus_plus_preset::openrlhf(),
        .advantage_whitening = std::nullopt,
        .policy_loss = {.clip_low = 0.2, .clip_high = 0.2, .log_ratio_min = -20.0, .log_ratio_max = 20.0},
        .value_loss = {.clip_range = std::nullopt},
        .ppo_epochs = 1,
        .scaling = micro_batch_scaling::mean_of_micro_batches,
        .max_grad_norm = 1.0,
    };
}

/// OpenRL's NLP PPO (OpenRL-Lab/openrl: openrl/envs/nlp/rewards/kl_penalty.py,
/// openrl/rewards/nlp_reward.py, openrl/algorithms/ppo.py, openrl/configs/config.py,
/// examples/nlp/nlp_ppo.yaml): the learned reward at the last token plus `−α·(lp − ref)` per token,
/// α from the proportional controller (α₀ 0.2, target 0.05, rate 0.1, error clip 0.2) fed the
/// batch's mean per-token KL once per rollout; GAE γ 0.99, λ 0.95; advantages whitened with the
/// biased variance; clip 0.2, token-mean; clipped Huber value loss (clip 0.2, δ 10, coef 0.5);
/// entropy 0.01; grad clip 10; 5 epochs (nlp_ppo.yaml).
/// @note OpenRL divides by std + 1e-5; here rsqrt(var + 1e-10), equal while std ≫ 1e-5.
///       Its ValueNorm (running normalisation of the returns) is not part of the preset.
[[nodiscard]] inline config openrl() {
    return {
        .reward = {.slot = reward_slot::last_valid_token, .kl = kl_preset::trl()},
        .kl = kl_placement::reward,
        .kl_control = proportional_kl_options{.init_kl_coef = 0.2,
                                              .target = 0.05,
                                              .update_rate = 0.1,
                                              .error_clip = 0.2,
                                              .measure = kl_measure::token_mean},
        .kl_metric = kl_measure::token_mean,
        .gae = {.gamma = 0.99, .lambda = 0.95},
        .advantage_whitening = whiten_options{.variance = variance_estimator::biased, .epsilon = 1e-10},
        .policy_loss = {.clip_low = 0.2, .clip_high = 0.2},
        .value_loss = {.clip_range = 0.2, .huber_delta = 10.0, .coef = 0.5},
        .entropy_coef = 0.01,
        .ppo_epochs = 5,
        .max_grad_norm = 10.0,
        .critic_max_grad_norm = 10.0,
    };
}

/// chatllama's RLHF loop (nebuly-ai/nebuly: optimization/chatllama/chatllama/rlhf/trainer.py,
/// artifacts/config/config.yaml), as its formulas mean rather than as its code slips
/// (peer-formulas.md §c.17): a separate critic; the reward-to-go with γ = 1 minus the old values
/// (GAE with γ = λ = 1), advantages whitened over the batch; clip 0.2 on the sampled token's
/// ratio; value loss `max((V_clip − R)², (V − R)²)` without the ½ (clip 0.2) against the returns
/// (its raw rewards when only the last token is rewarded); 1 epoch; no reference model. Its
/// reward model is trained by MSE on scores (docs/examples.md).
/// @note chatllama takes the argmax token's probability for the ratio, and adds
///       `−β_s·Σ p·log p` (β_s = 0.02) and a "KL" to the old policy over that probability p alone:
///       terms of the max-probability token, not of the distribution, that no entropy or KL
///       option reproduces. The preset keeps PPO's sampled-token ratio and leaves them out.
[[nodiscard]] inline config chatllama() {
    return {
        .reward = {.slot = reward_slot::last_valid_token, .kl = kl_preset::trl()},
        .kl = kl_placement::none,
        .gae = {.gamma = 1.0, .lambda = 1.0},
        .advantage_whitening = whiten_options{},
        .policy_loss = {.clip_low = 0.2, .clip_high = 0.2},
        .value_loss = {.clip_range = 0.2, .scale = 1.0, .coef = 1.0},
        .ppo_epochs = 1,
    };
}

}  // namespace presets

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
