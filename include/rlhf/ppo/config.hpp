#pragma once
/// @file
/// The configuration of the PPO loop (`rlhf::ppo::ppo_trainer`): one aggregate of the kernels'
/// option structs (`rlhf/options/`, no kernel compiled) plus the loop's own knobs, usable with
/// designated initialisers. Its validation is `rlhf/ppo/check_config.hpp`, the named presets that
/// combine the options the way each framework does `rlhf/ppo/presets.hpp` (docs/ppo.md).
///
/// A config is plain data: no model, no callback, no state. What the trainer needs from the
/// models (a critic, a reference, an entropy-aware or LM-capable policy) is checked against the
/// config when the trainer is built (`rlhf::ppo::check_config(config, trainer_capabilities)`).

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "rlhf/core/options.hpp"
#include "rlhf/options/gae.hpp"
#include "rlhf/options/kl.hpp"
#include "rlhf/options/kl_controller.hpp"
#include "rlhf/options/kl_loss.hpp"
#include "rlhf/options/logits.hpp"
#include "rlhf/options/masked_stats.hpp"
#include "rlhf/options/outcome_advantages.hpp"
#include "rlhf/options/policy_loss.hpp"
#include "rlhf/options/reward_shaping.hpp"
#include "rlhf/options/value_loss.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/experience_buffer.hpp"
#include "rlhf/ppo/schedule.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// Where the KL to the reference model enters the objective.
enum class kl_placement {
    none,    ///< no KL term (no reference model needed): verl PPO's default, GRPO with β = 0
    reward,  ///< `−β·kl` in the per-token rewards (`rlhf::shape_rewards_from_logprobs`): TRL, DeepSpeed-Chat, ...
    loss,    ///< `β·agg(kl)` added to the actor loss (`rlhf::kl_loss`): verl `use_kl_loss`, GRPO
};

/// How PTX (pretraining / unsupervised) data is mixed into the actor's update.
enum class ptx_mode {
    none,
    /// `(1 − ptx_coef)·actor_loss + ptx_coef·lm_loss`, both backpropagated before the one
    /// optimizer step of the minibatch.
    /// @note ColossalChat `coati/trainer/ppo.py: _training_step` (v1 and v2).
    mixed,
    /// After the minibatch's actor step: a separate `ptx_coef·lm_loss` backward and actor step.
    /// @note DeepSpeed-Chat `dschat/rlhf/ppo_trainer.py: DeepSpeedPPOTrainerUnsupervised.train_unsupervised`
    /// (`unsup_coef` = 27.8 in `training/step3_rlhf_finetuning/main.py`).
    separate_step,
};

/// How the losses of the micro-batches of one minibatch (gradient accumulation) are scaled.
enum class micro_batch_scaling {
    /// Every micro-batch is aggregated with the minibatch's token and row counts
    /// (`aggregation_options::global_token_count` / `global_sequence_count`), so the
    /// accumulated gradient is exactly that of the whole minibatch, whatever the split.
    /// @note verl `agg_loss` with `batch_num_tokens` / `global_batch_size` (core_algos.py).
    global_counts,
    /// Every micro-batch is aggregated on its own and its loss divided by the number of
    /// micro-batches (the mean of the micro-batch losses).
    /// @note TRL v0.11 (`accelerator.accumulate`), DeepSpeed / OpenRLHF gradient accumulation.
    mean_of_micro_batches,
};

/// Running score normalisation before shaping (TRL v0.11 `use_score_scaling` / `use_score_norm`).
enum class score_normalization {
    none,
    scale,            ///< `score / (running_std + eps)`
    scale_and_shift,  ///< `(score − running_mean) / (running_std + eps)`
};

/// Over which batch the mean ratio is compared with `policy_loss.ratio_threshold`. Either way a
/// hit zeroes that batch's WHOLE loss (policy, value, KL, entropy: `loss * 0`) and the optimizer
/// still steps, with zero gradients from it.
/// @note TRL v0.11 `PPOTrainer.loss` (trl/trainer/ppo_trainer.py) zeroes `pg_loss`, `vf_loss`
/// and `loss`; `loss()` runs once per forward batch of its `mini_batch_size` rows, inside
/// `accelerator.accumulate` over `gradient_accumulation_steps` of them: TRL's mini-batch is this
/// library's micro-batch, its `backward_batch_size` this library's `minibatch_size`.
enum class ratio_threshold_scope {
    /// Each micro-batch on its own mean ratio over its valid tokens (TRL v0.11).
    micro_batch,
    /// The minibatch on the mean ratio over all its valid tokens: a hit zeroes the gradients the
    /// minibatch accumulated (TRL v0.11 whenever `gradient_accumulation_steps = 1`).
    minibatch,
};

/// When the KL early stop (`early_stop_kl`) is judged and what it drops.
enum class early_stop_rule {
    /// After every minibatch's backward, on its token-weighted policy KL `mean_m(old − lp)`: a hit
    /// drops that minibatch's gradients (no step) and ends the epochs.
    /// @note Stable-Baselines3 `PPO.train` (`target_kl`, checked before the optimizer step).
    each_minibatch_before_step,
    /// After each epoch's last optimizer step, on the policy KL of the epoch's last micro-batch
    /// (the last `loss()` call): a hit ends the epochs; every step of the epoch was taken.
    /// @note TRL v0.11 `PPOTrainer.step` (`early_stopping`, `target_kl`, `_early_stop`).
    after_epoch,
};

RLHF_OPTION_NAMES(ratio_threshold_scope, {ratio_threshold_scope::micro_batch, "micro_batch"},
                  {ratio_threshold_scope::minibatch, "minibatch"})

RLHF_OPTION_NAMES(early_stop_rule, {early_stop_rule::each_minibatch_before_step, "each_minibatch_before_step"},
                  {early_stop_rule::after_epoch, "after_epoch"})

// Names for configs read from text (`rlhf::parse_option`); aliases: verl's `use_kl_in_reward` and
// `use_kl_loss`, TRL v0.11's `use_score_scaling` and `use_score_norm`.
/// Which implementation the advantage stage runs (ppo/advantage_stage.hpp).
enum class advantage_route {
    by_device,  ///< CPU tensors: the fused CPU kernels; other devices: the `torch_ops::` compositions
    torch_ops,  ///< the `torch_ops::` compositions on every device, the CPU included
};

/// Where the trainer checks that the models' outputs are finite (`config::check_finite`).
enum class finite_checks {
    off,
    /// The rollout's outputs (policy and reference log-probs, values, scores or token rewards):
    /// one host read per `make_experience`; a NaN never enters the experience.
    rollout,
    /// Also each training micro-batch's outputs before its backward: one host read per
    /// micro-batch (the step's statistics are otherwise read once).
    every_forward,
};

RLHF_OPTION_NAMES(kl_placement, {kl_placement::none, "none"}, {kl_placement::reward, "reward"},
                  {kl_placement::loss, "loss"}, {kl_placement::reward, "use_kl_in_reward"},
                  {kl_placement::loss, "use_kl_loss"})

RLHF_OPTION_NAMES(ptx_mode, {ptx_mode::none, "none"}, {ptx_mode::mixed, "mixed"},
                  {ptx_mode::separate_step, "separate_step"})

RLHF_OPTION_NAMES(micro_batch_scaling, {micro_batch_scaling::global_counts, "global_counts"},
                  {micro_batch_scaling::mean_of_micro_batches, "mean_of_micro_batches"})

RLHF_OPTION_NAMES(advantage_route, {advantage_route::by_device, "by_device"}, {advantage_route::torch_ops, "torch_ops"})
RLHF_OPTION_NAMES(finite_checks, {finite_checks::off, "off"}, {finite_checks::rollout, "rollout"},
                  {finite_checks::every_forward, "every_forward"})
RLHF_OPTION_NAMES(score_normalization, {score_normalization::none, "none"}, {score_normalization::scale, "scale"},
                  {score_normalization::scale_and_shift, "scale_and_shift"},
                  {score_normalization::scale, "use_score_scaling"},
                  {score_normalization::scale_and_shift, "use_score_norm"})

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The configuration of `rlhf::ppo::ppo_trainer` (see the file comment; defaults are a plain
/// PPO with GAE, KL in the reward and a fixed β = 0.1).
struct config {
    // ---- Rollout ----------------------------------------------------------------------------
    /// Rows per step (prompts × `samples_per_prompt`); 0: whatever the prompts give. When set,
    /// a step with another row count is an error, and `minibatch_size` must divide it.
    std::int64_t rollout_batch_size = 0;
    /// Responses generated per prompt; rows of one prompt form a group (`info["group"]`) for
    /// the group estimators (GRPO, RLOO, ...), which need at least 2.
    std::int64_t samples_per_prompt = 1;
    /// Generation options; `seed` is replaced by one the trainer draws each step.
    generation_options generation{};

    // ---- Rewards and KL ---------------------------------------------------------------------
    score_normalization score_norm = score_normalization::none;
    /// The `eps` of `score_norm` (TRL: `torch.finfo(float32).eps`).
    double score_norm_epsilon = 1.1920928955078125e-07;
    /// Reward shaping: the score slot, score clip, KL estimator and its masking. `kl_coef` is
    /// ignored: β comes from `kl_control`.
    reward_shaping_options reward{};
    /// Where the KL term goes.
    kl_placement kl = kl_placement::reward;
    /// Subtracted from the score of a row whose response holds no token of
    /// `generation.eos_token_id` (sequence reward models; TRL `missing_eos_penalty`).
    std::optional<double> missing_eos_penalty{};
    /// GAE bootstraps a row the rollout marks `truncated` (cut at the length limit) from the
    /// value at its last action (`truncation_bootstrap`), instead of taking the cut as the end.
    bool bootstrap_truncated = false;
    /// The controller of β (used by the reward or the loss, as `kl` says).
    kl_control_options kl_control = fixed_kl_options{};
    /// The unit of the KL reported in the metrics (`step_metrics::kl`).
    kl_measure kl_metric = kl_measure::seq_mean_token_sum;
    /// KL-in-loss estimator, clamps and aggregation; `coef` is ignored: β comes from `kl_control`.
    kl_loss_options kl_loss{};
    /// The controller's `n_steps` is rows × `world_size` (TRL passes `batch_size · num_processes`;
    /// verl the local batch size: keep 1).
    std::int64_t world_size = 1;

    // ---- Advantages -------------------------------------------------------------------------
    advantage_estimator estimator = advantage_estimator::gae;
    gae_options gae{};
    grpo_options grpo{};
    dr_grpo_options dr_grpo{};
    rloo_options rloo{};
    opo_options opo{};
    reinforce_plus_plus_options reinforce_plus_plus{};
    reinforce_plus_plus_baseline_options reinforce_plus_plus_baseline{};
    /// Whitening of the shaped rewards before GAE (TRL `whiten_rewards`: `.shift_mean = false`).
    std::optional<whiten_options> reward_whitening{};
    /// Whitening of the advantages after the estimator (TRL, verl GAE: the defaults).
    std::optional<whiten_options> advantage_whitening = whiten_options{};
    /// Whiten the advantages over every element of the `[B, T]` batch, padding included
    /// (ChatLearn's older PPO), instead of over the valid tokens.
    bool whiten_unmasked = false;
    /// Whiten the advantages of an estimator that already normalises them (GRPO with
    /// `normalize_by_std`, REINFORCE++, REINFORCE++-baseline) once more with
    /// `advantage_whitening`; without it `check_config` refuses the pair (a silent double
    /// normalisation, peer-formulas.md §c.6).
    bool allow_double_whitening = false;
    /// The implementation of the advantage stage: by the tensors' device (the models' device is
    /// kept: no copy to the host), or the `torch_ops::` compositions everywhere.
    advantage_route advantage_ops = advantage_route::by_device;

    // ---- Losses -----------------------------------------------------------------------------
    policy_loss_options policy_loss{};
    /// The value loss; its `coef` is the vf_coef.
    value_loss_options value_loss{};
    /// Entropy bonus: `− entropy_coef · agg(H)` in the actor loss (needs an `EntropyPolicy`).
    double entropy_coef = 0.0;
    ptx_mode ptx = ptx_mode::none;
    double ptx_coef = 0.0;
    lm_loss_options ptx_loss{};

    // ---- Optimisation -----------------------------------------------------------------------
    std::int64_t ppo_epochs = 1;
    /// Rows per optimizer step; 0: the whole rollout batch.
    std::int64_t minibatch_size = 0;
    /// Rows per forward/backward (gradient accumulation); 0: the whole minibatch.
    std::int64_t micro_batch_size = 0;
    bool shuffle = true;          ///< a fresh seeded permutation of the rows every epoch
    bool token_balanced = false;  ///< token-balanced micro-batches (`experience_buffer::micro_batches`)
    micro_batch_scaling scaling = micro_batch_scaling::global_counts;
    std::optional<double> max_grad_norm{};         ///< policy grad-norm clip (`clip_grad_norm_`)
    std::optional<double> critic_max_grad_norm{};  ///< critic grad-norm clip (its own optimizer)
    /// Loss scaling for a float16 model (unset: none; bfloat16 and float32 need none).
    std::optional<loss_scaling_options> loss_scaling{};
    /// Where the ratio threshold (`policy_loss.ratio_threshold`) is judged; a hit zeroes the whole
    /// loss of that batch (loop_rules.hpp; TRL v0.11: `micro_batch`).
    ratio_threshold_scope threshold_scope = ratio_threshold_scope::micro_batch;
    /// Early stop on the policy KL (TRL `early_stopping`, `target_kl`): it fires when the policy
    /// KL `mean_m(old − lp)` exceeds `early_stop_factor · early_stop_kl`, judged as
    /// `early_stop` says (loop_rules.hpp; TRL v0.11: `after_epoch`), and ends the PPO epochs.
    std::optional<double> early_stop_kl{};
    double early_stop_factor = 1.5;
    early_stop_rule early_stop = early_stop_rule::each_minibatch_before_step;
    /// The policy optimizer's LR schedule, stepped once per policy optimizer step (schedule.hpp;
    /// unset: the trainer leaves the LR alone).
    std::optional<lr_schedule_options> lr_schedule{};
    /// The critic optimizer's LR schedule, stepped once per critic optimizer step.
    std::optional<lr_schedule_options> critic_lr_schedule{};
    /// EMA of the actor: `ema ← β·ema + (1 − β)·θ` after every actor optimizer step.
    /// @note DeepSpeed-Chat `dschat/utils/utils.py: moving_average`, OpenRLHF
    /// `openrlhf/utils/deepspeed/deepspeed.py: moving_average` (β = 0.992 in both).
    std::optional<double> ema_beta{};
    /// Parameter-efficient training (LoRA-style adapters): the EMA, the checkpoints' model tensors
    /// and `copy_ema_to` cover only the parameters with `requires_grad()` (no buffers); frozen ones
    /// are neither cloned nor written (`trainable_tensors`, ppo/parameter_selection.hpp).
    bool trainable_parameters_only = false;
    /// Call the evaluation hook every N steps (0: never).
    std::int64_t eval_every = 0;
    /// Reference refresh (TRL `sync_ref_model`): after every `ref_model_sync_steps`-th step the
    /// reference becomes `α·policy + (1 − α)·reference`, `α = ref_model_mixup_alpha` (TRL
    /// `SyncRefModelCallback`; defaults 512 and 0.6 as TRL's). Needs a reference with parameters.
    bool sync_ref_model = false;
    std::int64_t ref_model_sync_steps = 512;
    double ref_model_mixup_alpha = 0.6;

    // ---- Data handling ----------------------------------------------------------------------
    padding_side padding = padding_side::right;  ///< padding of the collated training batches
    std::int64_t pad_token_id = 0;
    bool cpu_offload = false;  ///< keep the experience on the CPU between rollout and training
    /// Seed of the trainer's generator: generation seeds and minibatch permutations derive from it.
    std::uint64_t seed = 0;

    // ---- Failure handling -------------------------------------------------------------------
    /// Which model outputs must be finite (NaN or ±Inf on an action position → `rlhf::error`,
    /// kind value, naming the output and the step, before anything is trained on it).
    finite_checks check_finite = finite_checks::rollout;
    /// A step (`step`, `train`) that throws leaves the models, optimizers and trainer state as
    /// they were before it: the trainer keeps an in-memory checkpoint of the step's start (one
    /// serialized copy of the checkpoint's tensors per step). Off: a `train` that throws after
    /// some optimizer steps keeps them.
    bool restore_on_error = false;
};

/// What the models given to a trainer can do; `check_config` checks the config against it.
struct trainer_capabilities {
    bool critic = false;            ///< a critic model was given
    bool critic_optimizer = false;  ///< the critic has its own optimizer
    bool reference = false;         ///< a reference model was given
    bool entropy_policy = false;    ///< the policy is an `EntropyPolicy`
    bool language_model = false;    ///< the policy is a `LanguageModelPolicy` (PTX)
    bool sequence_rewards = false;  ///< the reward model is a `SequenceRewardModel`
    bool token_rewards = false;     ///< the reward model gives per-token rewards (`TokenRewardModel`)
    /// The policy's optimizer holds every critic parameter (a value head sharing it, as TRL's).
    bool policy_optimizer_holds_critic = false;
    /// The reference model lists its parameters (`HasParameters`): `sync_ref_model` can mix into it.
    bool reference_parameters = false;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
