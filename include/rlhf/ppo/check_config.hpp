#pragma once
/// @file
/// Validation of a PPO config (`rlhf::ppo::config`): every option in range, options that do not
/// contradict each other, and what the trainer's models must provide; the minibatch size of a
/// rollout; the rollout request of a step's prompts. Errors name the config field.

#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/config.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

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

/// Whether the config's estimator already normalises the advantages (GRPO dividing by the group
/// std, REINFORCE++ and REINFORCE++-baseline whitening in the estimator).
[[nodiscard]] inline bool estimator_normalises(const config& c) noexcept {
    return (c.estimator == advantage_estimator::grpo && c.grpo.normalize_by_std) ||
           c.estimator == advantage_estimator::reinforce_plus_plus ||
           c.estimator == advantage_estimator::reinforce_plus_plus_baseline;
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
    if (c.advantage_whitening && detail::estimator_normalises(c) && !c.allow_double_whitening)
        detail::config_error("advantage_whitening",
                             "unset: the estimator '" + std::string(to_string(c.estimator)) +
                                 "' already normalises the advantages (set allow_double_whitening = true to "
                                 "whiten them twice)",
                             "set");
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
    if (c.missing_eos_penalty) {
        if (!std::isfinite(*c.missing_eos_penalty))
            detail::config_error("missing_eos_penalty", "a finite number", number_string(*c.missing_eos_penalty));
        if (c.generation.eos_token_id.empty())
            detail::config_error("missing_eos_penalty", "unset: generation.eos_token_id names no EOS token", "set");
    }
    if (c.bootstrap_truncated && c.estimator != advantage_estimator::gae)
        detail::config_error("bootstrap_truncated", "false: only GAE bootstraps from values",
                             std::string(to_string(c.estimator)));
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
    if (c.threshold_scope != ratio_threshold_scope::micro_batch &&
        c.threshold_scope != ratio_threshold_scope::minibatch)
        detail::config_error("threshold_scope", "micro_batch or minibatch", "an unknown value");
    if (c.early_stop != early_stop_rule::each_minibatch_before_step && c.early_stop != early_stop_rule::after_epoch)
        detail::config_error("early_stop", "each_minibatch_before_step or after_epoch", "an unknown value");
    if (c.lr_schedule) check_lr_schedule(*c.lr_schedule, "lr_schedule");
    if (c.critic_lr_schedule) check_lr_schedule(*c.critic_lr_schedule, "critic_lr_schedule");
    if (c.sync_ref_model) {
        check_positive(fn, "ref_model_sync_steps", c.ref_model_sync_steps);
        check_positive(fn, "ref_model_mixup_alpha", c.ref_model_mixup_alpha);  // 0 never moves the reference
        check_in_range(fn, "ref_model_mixup_alpha", c.ref_model_mixup_alpha, 0.0, 1.0);
    }
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
/// - `sync_ref_model` needs a reference model with parameters (argument `sync_ref_model`);
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
    if (c.sync_ref_model && !models.reference_parameters)
        detail::config_error(
            "sync_ref_model", "false: the reference refresh needs a reference model with parameters() (HasParameters)",
            models.reference ? "true, and a reference without parameters()" : "true, and no reference");
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

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
