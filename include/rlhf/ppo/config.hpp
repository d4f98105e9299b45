#pragma once
/// @file
/// The configuration of the PPO loop (`rlhf::ppo::ppo_trainer`): one aggregate of the kernels'
/// option structs plus the loop's own knobs, usable with designated initialisers, its validation
/// (`rlhf::ppo::check_config`), and named presets that combine the options the way each
/// framework does (`rlhf::ppo::presets::*`). docs/ppo.md has the table of presets.
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

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/presets.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/experience_buffer.hpp"
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

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo

// Names of the loop's options, for configs read from text (`rlhf::parse_option`).
namespace rlhf::inline RLHF_ABI_NAMESPACE {

template <>
struct option_names<ppo::kl_placement> {
    static constexpr std::string_view type = "kl_placement";
    static constexpr std::array<std::pair<ppo::kl_placement, std::string_view>, 3> values{{
        {ppo::kl_placement::none, "none"},
        {ppo::kl_placement::reward, "reward"},
        {ppo::kl_placement::loss, "loss"},
    }};
    static constexpr std::array<std::pair<ppo::kl_placement, std::string_view>, 2> aliases{{
        {ppo::kl_placement::reward, "use_kl_in_reward"},  // verl
        {ppo::kl_placement::loss, "use_kl_loss"},         // verl
    }};
};

template <>
struct option_names<ppo::ptx_mode> {
    static constexpr std::string_view type = "ptx_mode";
    static constexpr std::array<std::pair<ppo::ptx_mode, std::string_view>, 3> values{{
        {ppo::ptx_mode::none, "none"},
        {ppo::ptx_mode::mixed, "mixed"},
        {ppo::ptx_mode::separate_step, "separate_step"},
    }};
    static constexpr std::array<std::pair<ppo::ptx_mode, std::string_view>, 0> aliases{};
};

template <>
struct option_names<ppo::micro_batch_scaling> {
    static constexpr std::string_view type = "micro_batch_scaling";
    static constexpr std::array<std::pair<ppo::micro_batch_scaling, std::string_view>, 2> values{{
        {ppo::micro_batch_scaling::global_counts, "global_counts"},
        {ppo::micro_batch_scaling::mean_of_micro_batches, "mean_of_micro_batches"},
    }};
    static constexpr std::array<std::pair<ppo::micro_batch_scaling, std::string_view>, 0> aliases{};
};

template <>
struct option_names<ppo::score_normalization> {
    static constexpr std::string_view type = "score_normalization";
    static constexpr std::array<std::pair<ppo::score_normalization, std::string_view>, 3> values{{
        {ppo::score_normalization::none, "none"},
        {ppo::score_normalization::scale, "scale"},
        {ppo::score_normalization::scale_and_shift, "scale_and_shift"},
    }};
    static constexpr std::array<std::pair<ppo::score_normalization, std::string_view>, 2> aliases{{
        {ppo::score_normalization::scale, "use_score_scaling"},         // TRL v0.11
        {ppo::score_normalization::scale_and_shift, "use_score_norm"},  // TRL v0.11
    }};
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE

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
    /// Early stop (TRL `early_stopping`, `target_kl`): when a minibatch's policy KL
    /// `mean_m(old − lp)` exceeds `early_stop_factor · early_stop_kl`, its step is dropped and
    /// the PPO epochs of the step end.
    std::optional<double> early_stop_kl{};
    double early_stop_factor = 1.5;
    /// EMA of the actor: `ema ← β·ema + (1 − β)·θ` after every actor optimizer step.
    /// @note DeepSpeed-Chat `dschat/utils/utils.py: moving_average`, OpenRLHF
    /// `openrlhf/utils/deepspeed/deepspeed.py: moving_average` (β = 0.992 in both).
    std::optional<double> ema_beta{};
    /// Call the evaluation hook every N steps (0: never).
    std::int64_t eval_every = 0;

    // ---- Data handling ----------------------------------------------------------------------
    padding_side padding = padding_side::right;  ///< padding of the collated training batches
    std::int64_t pad_token_id = 0;
    bool cpu_offload = false;  ///< keep the experience on the CPU between rollout and training
    /// Seed of the trainer's generator: generation seeds and minibatch permutations derive from it.
    std::uint64_t seed = 0;
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
};

namespace detail {

/// Runs `check` and rethrows its `rlhf::error` with the argument prefixed by `prefix` (and a
/// leading "options." removed), so kernel checks name the config field: `policy_loss.clip_low`.
template <class Check>
void check_field(std::string_view prefix, Check&& check) {
    try {
        std::forward<Check>(check)();
    } catch (const error& e) {
        std::string argument = e.argument();
        if (argument.rfind("options.", 0) == 0) argument.erase(0, 8);
        throw error(e.kind(), "rlhf::ppo::check_config", std::string(prefix) + argument, e.expected(), e.actual());
    }
}

[[noreturn]] inline void config_error(std::string_view field, std::string_view expected, std::string_view actual) {
    fail(error_kind::config, "rlhf::ppo::check_config", field, expected, actual);
}

[[nodiscard]] inline bool is_group_estimator(advantage_estimator e) noexcept {
    return e == advantage_estimator::grpo || e == advantage_estimator::dr_grpo || e == advantage_estimator::rloo ||
           e == advantage_estimator::opo || e == advantage_estimator::reinforce_plus_plus_baseline;
}

}  // namespace detail

/// Checks a config on its own: every option in range, options that do not contradict each other.
/// Throws `rlhf::error` (kind config, function `rlhf::ppo::check_config`) whose argument is the
/// field's path, e.g. `policy_loss.clip_low`, `minibatch_size`, `kl_control.target`.
inline void check_config(const config& c) {
    constexpr std::string_view fn = "rlhf::ppo::check_config";
    check_non_negative(fn, "rollout_batch_size", c.rollout_batch_size);
    check_positive(fn, "samples_per_prompt", c.samples_per_prompt);
    detail::check_field("generation.", [&] { check_generation_options(c.generation, fn); });
    check_positive(fn, "score_norm_epsilon", c.score_norm_epsilon);
    detail::check_field("reward.", [&] { rlhf::detail::check_shaping_options(fn, c.reward); });
    detail::check_field("reward.kl.", [&] { rlhf::detail::check_kl_options(fn, c.reward.kl); });
    switch (c.kl) {
        case kl_placement::none:
        case kl_placement::reward:
        case kl_placement::loss:
            break;
        default:
            detail::config_error("kl", "one of none, reward, loss", "an unknown value");
    }
    detail::check_field("kl_control.", [&] { (void)make_kl_controller(c.kl_control); });
    if (c.kl_metric != kl_measure::seq_mean_token_sum && c.kl_metric != kl_measure::seq_mean_token_mean &&
        c.kl_metric != kl_measure::token_mean)
        detail::config_error("kl_metric", "a named KL unit: seq-mean-token-sum, seq-mean-token-mean or token-mean",
                             "'" + std::string(to_string(c.kl_metric)) + "'");
    if (c.kl == kl_placement::loss)
        detail::check_field("kl_loss.", [&] { rlhf::detail::check_kl_loss_options(fn, c.kl_loss); });
    check_positive(fn, "world_size", c.world_size);

    detail::check_field("gae.", [&] { rlhf::detail::gae::check_discounts(fn, c.gae.gamma, c.gae.lambda); });
    detail::check_field("grpo.", [&] { rlhf::detail::check_grpo_options(fn, c.grpo); });
    check_in_range(fn, "reinforce_plus_plus.gamma", c.reinforce_plus_plus.gamma, 0.0, 1.0);
    detail::check_field("reinforce_plus_plus.whiten.",
                        [&] { rlhf::detail::stats::check_whiten_options(fn, c.reinforce_plus_plus.whiten); });
    detail::check_field("reinforce_plus_plus_baseline.whiten.",
                        [&] { rlhf::detail::stats::check_whiten_options(fn, c.reinforce_plus_plus_baseline.whiten); });
    if (c.reward_whitening)
        detail::check_field("reward_whitening.",
                            [&] { rlhf::detail::stats::check_whiten_options(fn, *c.reward_whitening); });
    if (c.advantage_whitening)
        detail::check_field("advantage_whitening.",
                            [&] { rlhf::detail::stats::check_whiten_options(fn, *c.advantage_whitening); });
    if (detail::is_group_estimator(c.estimator) && c.samples_per_prompt < 2)
        detail::config_error("samples_per_prompt",
                             "at least 2 for the group estimator '" + std::string(to_string(c.estimator)) +
                                 "' (every group would be a single row)",
                             std::to_string(c.samples_per_prompt));
    if (c.estimator == advantage_estimator::remax && c.score_norm != score_normalization::none)
        detail::config_error("score_norm", "none under remax (the greedy baseline is not normalised)", "set");
    if (c.value_loss.returns_from_advantages && c.advantage_whitening)
        detail::config_error("value_loss.returns_from_advantages",
                             "false when advantage_whitening is set (the target advantages + old values is only "
                             "the return when the advantages are not whitened)",
                             "true");

    detail::check_field("policy_loss.", [&] { rlhf::detail::check_policy_options(fn, c.policy_loss); });
    detail::check_field("value_loss.", [&] { rlhf::detail::check_value_loss_options(fn, c.value_loss); });
    check_non_negative(fn, "entropy_coef", c.entropy_coef);
    switch (c.ptx) {
        case ptx_mode::none:
            break;
        case ptx_mode::mixed:
            check_in_range(fn, "ptx_coef", c.ptx_coef, 0.0, 1.0);
            break;
        case ptx_mode::separate_step:
            check_non_negative(fn, "ptx_coef", c.ptx_coef);
            break;
        default:
            detail::config_error("ptx", "one of none, mixed, separate_step", "an unknown value");
    }
    if (c.ptx != ptx_mode::none) check_positive(fn, "ptx_loss.temperature", c.ptx_loss.temperature);

    check_positive(fn, "ppo_epochs", c.ppo_epochs);
    check_non_negative(fn, "minibatch_size", c.minibatch_size);
    check_non_negative(fn, "micro_batch_size", c.micro_batch_size);
    if (c.rollout_batch_size > 0 && c.minibatch_size > 0 && c.rollout_batch_size % c.minibatch_size != 0)
        detail::config_error("minibatch_size",
                             "a divisor of rollout_batch_size (" + std::to_string(c.rollout_batch_size) + ")",
                             std::to_string(c.minibatch_size));
    if (c.minibatch_size > 0 && c.micro_batch_size > c.minibatch_size)
        detail::config_error("micro_batch_size",
                             "at most minibatch_size (" + std::to_string(c.minibatch_size) + "), or 0",
                             std::to_string(c.micro_batch_size));
    if (c.max_grad_norm) check_positive(fn, "max_grad_norm", *c.max_grad_norm);
    if (c.critic_max_grad_norm) check_positive(fn, "critic_max_grad_norm", *c.critic_max_grad_norm);
    if (c.early_stop_kl) check_positive(fn, "early_stop_kl", *c.early_stop_kl);
    check_positive(fn, "early_stop_factor", c.early_stop_factor);
    if (c.ema_beta) check_in_range(fn, "ema_beta", *c.ema_beta, 0.0, 1.0);
    check_non_negative(fn, "eval_every", c.eval_every);
    if (c.padding != padding_side::left && c.padding != padding_side::right)
        detail::config_error("padding", "left or right", "an unknown value");
}

/// Checks a config against the models of a trainer: everything `check_config(c)` checks, plus
/// - a KL term (`kl` ≠ none) with a positive or adaptive β needs a reference model (argument `reference`);
/// - GAE needs a critic, a critic-free estimator must not be given one (argument `estimator`);
/// - `critic_max_grad_norm` needs a critic with its own optimizer (argument `critic_max_grad_norm`);
/// - `entropy_coef > 0` needs an `EntropyPolicy` (argument `entropy_coef`);
/// - PTX needs a `LanguageModelPolicy` (argument `ptx`);
/// - ReMax needs a `SequenceRewardModel` for its greedy baseline (argument `estimator`);
/// - score normalisation needs sequence scores, not per-token rewards (argument `score_norm`);
/// - a critic optimizer needs a critic, and a critic needs an optimizer: its own, or the
///   policy's holding its parameters (argument `optimizers.critic`).
inline void check_config(const config& c, const trainer_capabilities& models) {
    check_config(c);
    const bool adaptive = !std::holds_alternative<fixed_kl_options>(c.kl_control);
    if (c.kl != kl_placement::none && (adaptive || initial_kl_coef(c.kl_control) > 0.0) && !models.reference)
        fail(error_kind::config, "rlhf::ppo::check_config", "reference",
             std::string("a reference model: the KL term is on (kl = ") +
                 (c.kl == kl_placement::reward ? "reward" : "loss") + ")",
             "no reference model");
    if (c.estimator == advantage_estimator::gae && !models.critic)
        detail::config_error("estimator", "a critic-free estimator (grpo, rloo, ...): no critic was given", "gae");
    if (c.estimator != advantage_estimator::gae && models.critic)
        detail::config_error("estimator", "gae: a critic was given",
                             "'" + std::string(to_string(c.estimator)) + "' (critic-free)");
    if (c.critic_max_grad_norm && !models.critic_optimizer)
        detail::config_error("critic_max_grad_norm", "unset: the critic has no optimizer of its own",
                             number_string(*c.critic_max_grad_norm));
    if (c.entropy_coef > 0.0 && !models.entropy_policy)
        detail::config_error("entropy_coef", "0: the policy has no log_probs_and_entropy (EntropyPolicy)",
                             number_string(c.entropy_coef));
    if (c.ptx != ptx_mode::none && !models.language_model)
        detail::config_error("ptx", "none: the policy has no lm_logits (LanguageModelPolicy)",
                             c.ptx == ptx_mode::mixed ? "mixed" : "separate_step");
    if (c.estimator == advantage_estimator::remax && !models.sequence_rewards)
        detail::config_error("estimator", "not remax: its greedy baseline needs a SequenceRewardModel", "remax");
    if (c.score_norm != score_normalization::none && models.token_rewards)
        detail::config_error("score_norm",
                             "none: the reward model gives per-token rewards (no sequence score to normalise)", "set");
    if (models.critic_optimizer && !models.critic)
        detail::config_error("optimizers.critic", "nullptr: the trainer has no critic", "an optimizer");
    if (models.critic && !models.critic_optimizer && !models.policy_optimizer_holds_critic)
        detail::config_error("optimizers.critic",
                             "an optimizer for the critic, or a policy optimizer that holds the critic's parameters",
                             "nullptr, and a critic parameter the policy optimizer does not hold");
}

/// The rows of a minibatch for a rollout of `rows` rows (`minibatch_size`, or all of them when
/// 0). Errors: no rows, or a minibatch size that does not divide them (`rlhf::error`, kind
/// config, function `rlhf::ppo::check_config`, argument `minibatch_size`).
[[nodiscard]] inline std::int64_t minibatch_rows(const config& c, std::int64_t rows) {
    const std::int64_t minibatch = c.minibatch_size > 0 ? c.minibatch_size : rows;
    if (rows == 0 || rows % minibatch != 0)
        detail::config_error("minibatch_size", "a divisor of the rollout's row count " + std::to_string(rows),
                             std::to_string(minibatch));
    return minibatch;
}

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

/// What to generate for one step: each prompt row repeated `samples_per_prompt` times
/// (`repeat_interleave`), `group_ids[i]` = its prompt's index, the generation options with a seed
/// drawn from `engine` (after the checks). Errors (`rlhf::error`, kind shape, argument `prompts`):
/// prompts that are not `[P, S]` tokens with a mask of their shape; `P · samples_per_prompt` ≠
/// `rollout_batch_size` when that is set.
[[nodiscard]] inline rollout_request make_rollout_request(const config& c, const prompt_batch& prompts,
                                                          std::mt19937_64& engine) {
    constexpr std::string_view fn = "rlhf::ppo::make_rollout_request";
    if (!prompts.input_ids.defined() || prompts.input_ids.dim() != 2)
        fail(error_kind::shape, fn, "prompts", "input_ids [P, S]",
             prompts.input_ids.defined() ? libtorch::shape_string(prompts.input_ids) : "undefined");
    if (!prompts.attention_mask.defined() || prompts.attention_mask.sizes() != prompts.input_ids.sizes())
        fail(error_kind::shape, fn, "prompts", "attention_mask of the shape of input_ids",
             prompts.attention_mask.defined() ? libtorch::shape_string(prompts.attention_mask) : "undefined");
    const std::int64_t n = c.samples_per_prompt;
    const std::int64_t rows = prompts.input_ids.size(0) * n;
    if (c.rollout_batch_size > 0 && rows != c.rollout_batch_size)
        fail(error_kind::shape, fn, "prompts",
             std::to_string(c.rollout_batch_size / n) + " prompts (rollout_batch_size " +
                 std::to_string(c.rollout_batch_size) + " / samples_per_prompt " + std::to_string(n) + ")",
             std::to_string(prompts.input_ids.size(0)) + " prompts");
    rollout_request request;
    request.prompts = {prompts.input_ids.repeat_interleave(n, 0), prompts.attention_mask.repeat_interleave(n, 0)};
    request.group_ids =
        torch::arange(prompts.input_ids.size(0), torch::kInt64).repeat_interleave(n).to(prompts.input_ids.device());
    request.generation = c.generation;
    request.generation.seed = engine();
    return request;
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
[[nodiscard]] inline config trl_v0_11() {
    return from_advantage_preset(rlhf::presets::trl_v0_11(),
                                 {.kl_metric = kl_measure::seq_mean_token_sum,
                                  .policy_loss = {.clip_low = 0.2, .clip_high = 0.2, .ratio_threshold = 10.0},
                                  .value_loss = {.clip_range = 0.2, .coef = 0.1},
                                  .ppo_epochs = 4,
                                  .scaling = micro_batch_scaling::mean_of_micro_batches,
                                  .early_stop_factor = 1.5});
}

/// DeepSpeed-Chat step 3 (dschat/rlhf/ppo_trainer.py, training/step3_rlhf_finetuning/main.py):
/// `rlhf::presets::deepspeed_chat()`, log-ratio masked before exp, clip 0.2, value clip 0.2,
/// token-mean, 1 PPO epoch, gradient clipping 1.0 (its DeepSpeed config). `unsupervised = true`
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

}  // namespace presets

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
