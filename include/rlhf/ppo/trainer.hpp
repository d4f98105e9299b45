#pragma once
/// @file
/// `rlhf::ppo::ppo_trainer`: the PPO loop over user models and loss kernels.
///
/// One step:
///  1. rollout: the prompts (each repeated `samples_per_prompt` times, rows of a prompt form a
///     group) are generated from by `Policy::generate` with a seed the trainer draws;
///  2. forward (no grad): old log-probs (the policy), reference log-probs, values (the critic),
///     scores (the reward model);
///  3. score normalisation (running moments), reward shaping (KL in the reward or not, the score
///     at its slot), reward whitening, advantages (GAE or a critic-free estimator), advantage
///     whitening: the kernels, through their LibTorch entry points, on CPU copies `[B, T]`;
///  4. the experience goes into a fresh `experience_buffer` (seeded from the trainer's generator);
///  5. PPO epochs over seeded minibatches; each minibatch is split into micro-batches whose
///     losses are backpropagated (gradient accumulation), then the gradient norm is clipped and
///     the optimizers step; the policy loss (`Kernels::policy_loss`), the value loss
///     (`Kernels::value_loss`), the KL in the loss (`Kernels::kl_loss`), the entropy bonus and
///     PTX are combined as `config` says; early stop on the policy KL, ratio-threshold skip;
///  6. EMA of the actor after each actor step, KL-controller update, metrics to the callbacks,
///     the evaluation hook every `eval_every` steps.
///
/// Determinism: every random choice comes from the trainer's own `std::mt19937_64` (seeded by
/// `config::seed`): the generation seed of each step and the seed of each step's minibatch
/// permutations. The trainer never touches LibTorch's global generator. A checkpoint holds the
/// models, the optimizers, the KL coefficient, the running score moments, the EMA, the step
/// counter and the generator's state, so a resumed run continues exactly like an uninterrupted
/// one (given a deterministic policy, prompts that are a function of the step, and the same
/// config).

// First: torch/nn/utils/clip_grad.h uses torch::Tensor without including it.
#include <torch/types.h>

#include <torch/autograd.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/libtorch/advantages.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/kernel_concepts.hpp"
#include "rlhf/libtorch/logits.hpp"
#include "rlhf/libtorch/outcome_advantages.hpp"
#include "rlhf/libtorch/rewards.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/checkpoint.hpp"
#include "rlhf/ppo/concepts.hpp"
#include "rlhf/ppo/config.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/experience_buffer.hpp"
#include "rlhf/ppo/metrics.hpp"

namespace rlhf::ppo {

/// Marks a trainer without a critic (critic-free estimators: GRPO, RLOO, REINFORCE++, ...).
struct no_critic {};

/// Marks a trainer without a reference model (no KL term).
struct no_reference {};

/// A policy that also gives next-token logits over a token batch, for PTX:
/// `policy.lm_logits(input_ids, attention_mask)` → `[B, S, V]`, position `p` predicting token `p + 1`.
template <class P>
concept LanguageModelPolicy = requires(P& policy, const torch::Tensor& input_ids, const torch::Tensor& mask) {
    { policy.lm_logits(input_ids, mask) } -> std::convertible_to<torch::Tensor>;
};

/// A policy the trainer can optimise: a `Policy` whose parameters it can list (for the EMA and
/// checkpoints).
template <class P>
concept TrainablePolicy = Policy<P> && HasParameters<P>;

/// `no_critic`, or a `Critic` whose parameters the trainer can list (checkpoints).
template <class C>
concept CriticOrNone = std::same_as<C, no_critic> ||(Critic<C>&& HasParameters<C>);

/// `no_reference`, or a `ReferenceModel`.
template <class R>
concept ReferenceOrNone = std::same_as<R, no_reference> || ReferenceModel<R>;

/// The loss kernels a trainer needs (rlhf/libtorch/kernel_concepts.hpp): the library's
/// `fused_kernels` (default) or `composed_kernels`, or a user's (CUDA) kernel type.
template <class K>
concept TrainerKernels = libtorch::PolicyLossKernel<K> && libtorch::ValueLossKernel<K> && libtorch::KlLossKernel<K>;

/// The models of a trainer (non-owning; they must outlive it). Designated initialisers:
/// `rlhf::ppo::trainer_models{.policy = &policy, .reward_model = &rm, .critic = &critic, .reference = &ref}`;
/// leave `.critic` out for a critic-free estimator, `.reference` out for no KL.
template <class P, class R, class C = no_critic, class Ref = no_reference>
struct trainer_models {
    P* policy = nullptr;
    R* reward_model = nullptr;
    C* critic = nullptr;
    Ref* reference = nullptr;
};

/// The optimizers (the user's; non-owning). Without `critic`, the policy optimizer must hold the
/// critic's parameters (a value head sharing the policy's optimizer, as TRL's): the value loss is
/// then added to the actor loss.
struct trainer_optimizers {
    torch::optim::Optimizer* policy = nullptr;
    torch::optim::Optimizer* critic = nullptr;
};

/// A batch of PTX (pretraining) data: `[B, S]` tokens; `labels` default to `input_ids`; a label
/// of `ptx_loss.ignore_index` (or a 0 in the attention mask) is not counted. The loss is the
/// token-mean next-token NLL: logits of positions `[0, S − 1)` against labels `[1, S)`.
struct ptx_batch {
    torch::Tensor input_ids;
    torch::Tensor attention_mask;
    torch::Tensor labels;
};

/// What to generate for one step: the prompts repeated `samples_per_prompt` times, the group of
/// each row, and the generation options with the step's seed (`ppo_trainer::prepare_rollout`).
struct rollout_request {
    prompt_batch prompts;
    torch::Tensor group_ids;  ///< `[B]` int64: the index of the row's prompt
    generation_options generation;
};

/// The experience of one step, ready for `ppo_trainer::train`.
struct step_experience {
    experience batch;           ///< rollout, log-probs, values, rewards, advantages, returns, `info["group"]`
    step_metrics metrics;       ///< the rollout part of the step's metrics
    measured_kl controller_kl;  ///< the rollout KL in the controller's unit
    bool has_kl = false;        ///< a reference model measured `controller_kl`
};

namespace detail {

using clock = std::chrono::steady_clock;

[[nodiscard]] inline double seconds_since(clock::time_point start) {
    return std::chrono::duration<double>(clock::now() - start).count();
}

/// A model output must be a floating `[rows, cols]` tensor; `name` names the model call.
inline void check_model_output(const torch::Tensor& t, std::int64_t rows, std::int64_t cols, std::string_view function,
                               std::string_view name) {
    if (!t.defined()) fail(error_kind::value, function, name, "a defined tensor", "an undefined tensor");
    const auto d = t.scalar_type();
    if (d != torch::kFloat32 && d != torch::kFloat64 && d != torch::kFloat16 && d != torch::kBFloat16)
        fail(error_kind::dtype, function, name, "a floating dtype", libtorch::dtype_name(d));
    const bool ok =
        cols < 0 ? (t.dim() == 1 && t.size(0) == rows) : (t.dim() == 2 && t.size(0) == rows && t.size(1) == cols);
    if (!ok)
        fail(error_kind::shape, function, name,
             cols < 0 ? "[" + std::to_string(rows) + "]"
                      : "[" + std::to_string(rows) + ", " + std::to_string(cols) + "] (rows, response width)",
             libtorch::shape_string(t));
}

/// A KL `[B, T]` reduced in `unit` (`rlhf::measure_kl` on the CPU tensors).
[[nodiscard]] inline measured_kl measure(const torch::Tensor& kl, const torch::Tensor& mask, kl_measure unit) {
    constexpr std::string_view fn = "rlhf::ppo::ppo_trainer";
    return libtorch::dispatch_floating(kl, fn, "kl", [&](auto tag) {
        using T = decltype(tag);
        return libtorch::dispatch_mask<T>(mask, fn, "mask", [&](auto mask_tag) {
            using M = decltype(mask_tag);
            return rlhf::measure_kl(libtorch::as_view<T>(kl, fn, "kl"), libtorch::as_view<M>(mask, fn, "mask"), unit);
        });
    });
}

/// `Σ_bt m_bt · c_b · x_bt` with the aggregation weights of `options` (loss_aggregation.hpp),
/// differentiable w.r.t. `x` (the entropy bonus uses the policy loss's aggregation).
[[nodiscard]] inline torch::Tensor aggregate(const torch::Tensor& x, const torch::Tensor& mask,
                                             const aggregation_options& options) {
    constexpr std::string_view fn = "rlhf::ppo::ppo_trainer";
    const torch::Tensor m = mask.to(torch::kCPU, torch::kUInt8).contiguous();
    std::vector<double> weights(static_cast<std::size_t>(m.size(0)));
    (void)rlhf::row_weights(libtorch::as_view<std::uint8_t>(m, fn, "mask"), options,
                            mut_view<double, 1>(weights.data(), {m.size(0)}));
    const torch::Tensor c = torch::tensor(weights, torch::kFloat64).to(x.device(), x.scalar_type()).unsqueeze(1);
    return (x * mask.to(x.device(), x.scalar_type()) * c).sum();
}

/// Masked mean and population standard deviation of `x` over `mask` (double; 0, 0 when empty).
[[nodiscard]] inline std::pair<double, double> masked_mean_std(const torch::Tensor& x, const torch::Tensor& mask) {
    const torch::Tensor m = mask.to(torch::kFloat64);
    const double n = m.sum().item<double>();
    if (n <= 0.0) return {0.0, 0.0};
    const torch::Tensor v = x.to(torch::kFloat64);
    const double mean = (v * m).sum().item<double>() / n;
    const double var = ((v - mean) * (v - mean) * m).sum().item<double>() / n;
    return {mean, std::sqrt(std::max(var, 0.0))};
}

/// Every parameter of an optimizer's parameter groups.
[[nodiscard]] inline std::vector<torch::Tensor> optimizer_parameters(const torch::optim::Optimizer& optimizer) {
    std::vector<torch::Tensor> params;
    for (const auto& group : optimizer.param_groups())
        for (const auto& p : group.params()) params.push_back(p);
    return params;
}

/// The gradient norm of `params` before clipping; clips it to `max_norm` when set
/// (`torch::nn::utils::clip_grad_norm_`).
inline double clip_gradients(const std::vector<torch::Tensor>& params, std::optional<double> max_norm) {
    if (max_norm) return torch::nn::utils::clip_grad_norm_(params, *max_norm);
    double squares = 0.0;
    for (const auto& p : params)
        if (p.grad().defined()) {
            const double n = p.grad().norm().item<double>();
            squares += n * n;
        }
    return std::sqrt(squares);
}

/// Token-mean LM loss on the fused kernel (CPU) or the composed ops.
[[nodiscard]] inline torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& tokens,
                                           const torch::Tensor& mask, const lm_loss_options& options) {
    if (logits.device().is_cpu()) return libtorch::lm_loss(logits, tokens, mask, options);
    return libtorch::composed::lm_loss(logits, tokens, mask, options);
}

/// Training statistics accumulated over micro-batches (token-weighted) and minibatches.
struct train_accumulator {
    double tokens = 0.0, clip = 0.0, lower = 0.0, approx = 0.0, policy_kl = 0.0, ratio = 0.0, ratio_max = 0.0;
    double value_tokens = 0.0, value_clip = 0.0, explained = 0.0, entropy = 0.0, entropy_tokens = 0.0;
    double policy_loss = 0.0, value_loss = 0.0, kl_loss = 0.0, entropy_loss = 0.0, ptx_loss = 0.0;
    double policy_norm = 0.0, critic_norm = 0.0;
    std::int64_t minibatches = 0, ptx_batches = 0, policy_steps = 0, critic_steps = 0;
};

}  // namespace detail

/// The PPO trainer (see the file comment). Template arguments: the policy, the critic (or
/// `no_critic`), the reward model, the reference model (or `no_reference`) and the loss kernels
/// (default `rlhf::libtorch::fused_kernels`); each is checked by its concept where the trainer
/// is named, so a model that misses a member fails with the concept's name.
template <class P, class C, class R, class Ref, class K = libtorch::fused_kernels>
requires TrainablePolicy<P> && CriticOrNone<C> && RewardModel<R> && ReferenceOrNone<Ref> && TrainerKernels<K>
class ppo_trainer {
public:
    static constexpr bool has_critic = !std::same_as<C, no_critic>;
    static constexpr bool has_reference = !std::same_as<Ref, no_reference>;
    using metrics_callback = std::function<void(const step_metrics&)>;
    using evaluator = std::function<std::map<std::string, double>(std::int64_t step)>;
    /// Gives the PTX batch of minibatch `minibatch` (counted from 0 within the step) of step `step`.
    using ptx_source = std::function<ptx_batch(std::int64_t step, std::int64_t minibatch)>;

    /// Builds a trainer. Errors (`rlhf::error`, function `rlhf::ppo::ppo_trainer`): a null model
    /// pointer (kind value, argument `models.policy`, `models.reward_model`, `models.critic`,
    /// `models.reference`); a null policy optimizer (`optimizers.policy`); a critic without an
    /// optimizer whose parameters the policy optimizer does not hold either (kind config,
    /// `optimizers.critic`); a critic optimizer without a critic (`optimizers.critic`); every
    /// error of `check_config(cfg, capabilities)`, which names the config field.
    ppo_trainer(const config& cfg, const trainer_models<P, R, C, Ref>& models, const trainer_optimizers& optimizers,
                K kernels = K{})
        : config_(cfg),
          policy_(models.policy),
          reward_model_(models.reward_model),
          critic_(models.critic),
          reference_(models.reference),
          optimizers_(optimizers),
          kernels_(std::move(kernels)),
          controller_(make_kl_controller(cfg.kl_control)) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer";
        if (policy_ == nullptr) fail(error_kind::value, fn, "models.policy", "a policy", "nullptr");
        if (reward_model_ == nullptr) fail(error_kind::value, fn, "models.reward_model", "a reward model", "nullptr");
        if constexpr (has_critic)
            if (critic_ == nullptr) fail(error_kind::value, fn, "models.critic", "a critic", "nullptr");
        if constexpr (has_reference)
            if (reference_ == nullptr) fail(error_kind::value, fn, "models.reference", "a reference model", "nullptr");
        if (optimizers_.policy == nullptr) fail(error_kind::value, fn, "optimizers.policy", "an optimizer", "nullptr");
        if constexpr (!has_critic)
            if (optimizers_.critic != nullptr)
                fail(error_kind::config, fn, "optimizers.critic", "nullptr: the trainer has no critic", "an optimizer");
        check_config(config_, trainer_capabilities{.critic = has_critic,
                                                   .critic_optimizer = optimizers_.critic != nullptr,
                                                   .reference = has_reference,
                                                   .entropy_policy = EntropyPolicy<P>,
                                                   .language_model = LanguageModelPolicy<P>,
                                                   .sequence_rewards = SequenceRewardModel<R> && !TokenRewardModel<R>});
        if (config_.score_norm != score_normalization::none && TokenRewardModel<R>)
            fail(error_kind::config, "rlhf::ppo::check_config", "score_norm",
                 "none: the reward model gives per-token rewards (no sequence score to normalise)", "set");
        if (config_.estimator == advantage_estimator::remax && config_.score_norm != score_normalization::none)
            fail(error_kind::config, "rlhf::ppo::check_config", "score_norm",
                 "none under remax (the greedy baseline is not normalised)", "set");
        if constexpr (has_critic) {
            if (optimizers_.critic == nullptr) {
                // A value head sharing the policy's optimizer: every critic parameter must be in it.
                std::unordered_set<const void*> held;
                for (const auto& p : detail::optimizer_parameters(*optimizers_.policy))
                    held.insert(p.unsafeGetTensorImpl());
                for (const auto& p : critic_->parameters())
                    if (held.count(p.unsafeGetTensorImpl()) == 0)
                        fail(error_kind::config, fn, "optimizers.critic",
                             "an optimizer for the critic, or a policy optimizer that holds the critic's parameters",
                             "nullptr, and a critic parameter the policy optimizer does not hold");
            }
        }
        std::seed_seq sequence{static_cast<std::uint32_t>(config_.seed),
                               static_cast<std::uint32_t>(config_.seed >> 32U)};
        engine_.seed(sequence);
        if (config_.ema_beta) {
            const c10::AutoGradMode no_grad(false);
            for (const auto& p : policy_->parameters()) ema_.push_back(p.detach().clone());
        }
    }

    ppo_trainer(const ppo_trainer&) = delete;
    ppo_trainer& operator=(const ppo_trainer&) = delete;
    ppo_trainer(ppo_trainer&&) noexcept = default;
    ppo_trainer& operator=(ppo_trainer&&) noexcept = default;

    // ---- The step ---------------------------------------------------------------------------

    /// Draws this step's generation seed and expands the prompts: each row repeated
    /// `samples_per_prompt` times (`repeat_interleave`), `group_ids[i]` = its prompt's index.
    /// Errors: prompts that are not `[P, S]` tokens with a mask of their shape (kind shape or
    /// value, argument `prompts`); `P · samples_per_prompt` ≠ `rollout_batch_size` when set.
    [[nodiscard]] rollout_request prepare_rollout(const prompt_batch& prompts) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::prepare_rollout";
        if (!prompts.input_ids.defined() || prompts.input_ids.dim() != 2)
            fail(error_kind::shape, fn, "prompts", "input_ids [P, S]",
                 prompts.input_ids.defined() ? libtorch::shape_string(prompts.input_ids) : "undefined");
        if (!prompts.attention_mask.defined() || prompts.attention_mask.sizes() != prompts.input_ids.sizes())
            fail(error_kind::shape, fn, "prompts", "attention_mask of the shape of input_ids",
                 prompts.attention_mask.defined() ? libtorch::shape_string(prompts.attention_mask) : "undefined");
        const std::int64_t n = config_.samples_per_prompt;
        const std::int64_t rows = prompts.input_ids.size(0) * n;
        if (config_.rollout_batch_size > 0 && rows != config_.rollout_batch_size)
            fail(error_kind::shape, fn, "prompts",
                 std::to_string(config_.rollout_batch_size / n) + " prompts (rollout_batch_size " +
                     std::to_string(config_.rollout_batch_size) + " / samples_per_prompt " + std::to_string(n) + ")",
                 std::to_string(prompts.input_ids.size(0)) + " prompts");
        rollout_request request;
        request.prompts = {prompts.input_ids.repeat_interleave(n, 0), prompts.attention_mask.repeat_interleave(n, 0)};
        request.group_ids =
            torch::arange(prompts.input_ids.size(0), torch::kInt64).repeat_interleave(n).to(prompts.input_ids.device());
        request.generation = config_.generation;
        request.generation.seed = engine_();
        return request;
    }

    /// Generates with the policy and builds the step's experience (`prepare_rollout`, then
    /// `Policy::generate`, then `make_experience(request, rollout)`).
    [[nodiscard]] step_experience make_experience(const prompt_batch& prompts) {
        const auto start = detail::clock::now();
        const rollout_request request = prepare_rollout(prompts);
        rollout generated;
        {
            const torch::NoGradGuard no_grad;
            generated = policy_->generate(request.prompts, request.generation);
        }
        const double generate_seconds = detail::seconds_since(start);
        step_experience result = make_experience(request, generated);
        result.metrics.time.generate = generate_seconds;
        result.metrics.time.total += generate_seconds;
        return result;
    }

    /// Builds the step's experience from a rollout generated elsewhere (an inference copy of the
    /// policy, synced by an engine): old log-probs, reference log-probs, values, scores, shaped
    /// rewards, advantages and returns, all without gradient. Errors (`rlhf::error`, function
    /// `rlhf::ppo::ppo_trainer::make_experience`): those of `check_rollout`; a rollout whose row
    /// count is not the request's (kind shape, `rollout`); a model output of the wrong shape or
    /// dtype (argument `policy.log_probs`, `reference.log_probs`, `critic.values`,
    /// `reward_model.score`, `reward_model.token_rewards`); the kernels' errors (an empty
    /// response under `reward.empty_rows = raise`, whitening with too few tokens, ...).
    [[nodiscard]] step_experience make_experience(const rollout_request& request, const rollout& generated) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::make_experience";
        const auto start = detail::clock::now();
        const torch::NoGradGuard no_grad;
        check_rollout(generated, fn);
        const std::int64_t rows = generated.sequences.size(0);
        if (rows != request.prompts.input_ids.size(0))
            fail(error_kind::shape, fn, "rollout",
                 std::to_string(request.prompts.input_ids.size(0)) + " rows (the request's)",
                 std::to_string(rows) + " rows");
        const std::int64_t width = response_width(generated);
        const torch::Device device = generated.sequences.device();

        const torch::Tensor model_log_probs = policy_->log_probs(generated);
        detail::check_model_output(model_log_probs, rows, width, fn, "policy.log_probs");
        const torch::Dtype dtype = model_log_probs.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
        const auto cpu = [&](const torch::Tensor& t) { return t.to(torch::kCPU, dtype).contiguous(); };
        const torch::Tensor old_log_probs = cpu(model_log_probs);
        const torch::Tensor mask = response_mask(generated, width, torch::kBool).to(torch::kCPU);

        torch::Tensor ref_log_probs;
        if constexpr (has_reference) {
            const torch::Tensor r = reference_->log_probs(generated);
            detail::check_model_output(r, rows, width, fn, "reference.log_probs");
            ref_log_probs = cpu(r);
        }
        torch::Tensor model_values;
        torch::Tensor values;
        if constexpr (has_critic) {
            model_values = critic_->values(generated);
            detail::check_model_output(model_values, rows, width, fn, "critic.values");
            values = cpu(model_values);
        }
        torch::Tensor scores;         // [B], after normalisation
        torch::Tensor token_rewards;  // [B, T], token reward models only
        if constexpr (TokenRewardModel<R>) {
            const torch::Tensor t = reward_model_->token_rewards(generated);
            detail::check_model_output(t, rows, width, fn, "reward_model.token_rewards");
            token_rewards = cpu(t) * mask.to(dtype);
            scores = token_rewards.sum(1);
        } else {
            const torch::Tensor s = reward_model_->score(generated);
            detail::check_model_output(s, rows, -1, fn, "reward_model.score");
            scores = cpu(s);
        }
        const double forward_seconds = detail::seconds_since(start);
        const auto advantages_start = detail::clock::now();

        step_experience out;
        step_metrics& m = out.metrics;
        m.step = step_ + 1;
        m.generation_seed = request.generation.seed;
        m.rows = rows;
        const torch::Tensor lengths =
            (generated.response_end - generated.response_start).to(torch::kCPU, torch::kFloat64);
        m.response_tokens = lengths.sum().item<double>();
        m.response_length_mean = rows > 0 ? m.response_tokens / static_cast<double>(rows) : 0.0;
        {
            const auto [mean, std] = detail::masked_mean_std(scores, torch::ones_like(scores, torch::kBool));
            m.score_mean = mean;
            m.score_std = std;
        }
        const double beta = controller_.value();
        m.kl_coef = beta;
        m.kl_unit = config_.kl_metric;

        // Score normalisation (TRL use_score_scaling / use_score_norm), after the update.
        if (config_.score_norm != score_normalization::none) {
            (void)libtorch::update_running_moments(score_moments_, scores.to(torch::kFloat64));
            const double factor = score_moments_.std() + config_.score_norm_epsilon;
            scores = config_.score_norm == score_normalization::scale_and_shift
                         ? ((scores.to(torch::kFloat64) - score_moments_.mean()) / factor).to(dtype)
                         : (scores.to(torch::kFloat64) / factor).to(dtype);
        }

        // The per-token KL of the rollout (old policy vs reference), for metrics and controller.
        const bool kl_on = has_reference && config_.kl != kl_placement::none;
        if constexpr (has_reference) {
            const kl_options& estimator = config_.kl == kl_placement::loss ? config_.kl_loss.kl : config_.reward.kl;
            const torch::Tensor token_kl = libtorch::token_kl(old_log_probs, ref_log_probs, mask, estimator);
            m.kl = detail::measure(token_kl, mask, config_.kl_metric).value;
            const kl_measure unit = controller_measure(config_.kl_control, config_.kl_metric);
            out.controller_kl = detail::measure(token_kl, mask, unit);
            out.has_kl = true;
        }

        // Reward shaping: −β·kl on every token (KL in the reward), the score at its slot.
        reward_shaping_options shaping = config_.reward;
        shaping.kl_coef = (kl_on && config_.kl == kl_placement::reward) ? beta : 0.0;
        torch::Tensor rewards;
        if constexpr (TokenRewardModel<R>) {
            if (shaping.kl_coef > 0.0) {
                const torch::Tensor token_kl = libtorch::token_kl(old_log_probs, ref_log_probs, mask, shaping.kl);
                reward_shaping_options kl_only = shaping;
                kl_only.score_clip = std::nullopt;
                kl_only.score_clip_range = std::nullopt;
                rewards =
                    libtorch::shape_rewards(token_kl, mask, torch::zeros({rows}, old_log_probs.options()), kl_only) +
                    token_rewards;
            } else {
                rewards = token_rewards.clone();
            }
        } else {
            if (shaping.kl_coef > 0.0)
                rewards = libtorch::shape_rewards_from_logprobs(old_log_probs, ref_log_probs, mask, scores, shaping);
            else
                rewards = libtorch::shape_rewards(torch::zeros_like(old_log_probs), mask, scores, shaping);
        }
        {
            const torch::Tensor sums = rewards.to(torch::kFloat64).sum(1);
            const auto [mean, std] = detail::masked_mean_std(sums, torch::ones_like(sums, torch::kBool));
            m.reward_mean = mean;
            m.reward_std = std;
        }
        if (config_.reward_whitening) rewards = libtorch::masked_whiten(rewards, mask, *config_.reward_whitening);

        // Advantages and returns.
        const torch::Tensor groups = request.group_ids.to(torch::kCPU, torch::kInt64).contiguous();
        torch::Tensor advantages;
        torch::Tensor returns;
        switch (config_.estimator) {
            case advantage_estimator::gae: {
                const libtorch::gae_result g = libtorch::compute_gae(rewards, values, mask, config_.gae);
                advantages = g.advantages;
                returns = g.returns;
                break;
            }
            case advantage_estimator::grpo:
                advantages = libtorch::compute_grpo_advantages(rewards, mask, groups, config_.grpo);
                break;
            case advantage_estimator::dr_grpo:
                advantages = libtorch::compute_dr_grpo_advantages(rewards, mask, groups, config_.dr_grpo);
                break;
            case advantage_estimator::rloo:
                advantages = libtorch::compute_rloo_advantages(rewards, mask, groups, config_.rloo);
                break;
            case advantage_estimator::opo:
                advantages = libtorch::compute_opo_advantages(rewards, mask, groups, config_.opo);
                break;
            case advantage_estimator::reinforce_plus_plus: {
                const auto r =
                    libtorch::compute_reinforce_plus_plus_advantages(rewards, mask, config_.reinforce_plus_plus);
                advantages = r.advantages;
                returns = r.returns;
                break;
            }
            case advantage_estimator::reinforce_plus_plus_baseline: {
                const auto r = libtorch::compute_reinforce_plus_plus_baseline_advantages(
                    rewards, mask, groups, config_.reinforce_plus_plus_baseline);
                advantages = r.advantages;
                returns = r.returns;
                break;
            }
            case advantage_estimator::remax: {
                const auto r = libtorch::compute_remax_advantages(rewards, mask, greedy_baseline(request, dtype));
                advantages = r.advantages;
                returns = r.returns;
                break;
            }
        }
        if (!returns.defined()) returns = advantages.clone();  // critic-free: no value target
        if (config_.advantage_whitening)
            advantages = config_.whiten_unmasked
                             ? libtorch::whiten(advantages, *config_.advantage_whitening)
                             : libtorch::masked_whiten(advantages, mask, *config_.advantage_whitening);
        {
            const auto [mean, std] = detail::masked_mean_std(advantages, mask);
            m.advantage_mean = mean;
            m.advantage_std = std;
            m.return_mean = detail::masked_mean_std(returns, mask).first;
            if constexpr (has_critic) m.value_mean = detail::masked_mean_std(values, mask).first;
        }

        experience& e = out.batch;
        e.sequences = generated.sequences;
        e.attention_mask = generated.attention_mask;
        e.response_start = generated.response_start;
        e.response_end = generated.response_end;
        e.action_mask = mask.to(device);
        e.log_probs = old_log_probs.to(device);
        if constexpr (has_reference) e.ref_log_probs = ref_log_probs.to(device);
        if constexpr (has_critic) e.values = model_values.detach().to(device);
        e.rewards = rewards.to(device);
        e.advantages = advantages.to(device);
        e.returns = returns.to(device);
        e.scores = scores.to(device);
        e.info["group"] = groups.to(device);
        m.time.forward = forward_seconds;
        m.time.advantages = detail::seconds_since(advantages_start);
        m.time.total = detail::seconds_since(start);
        return out;
    }

    /// Trains on one step's experience: PPO epochs over minibatches and micro-batches, optimizer
    /// steps, EMA, the KL-controller update; then counts the step, runs the evaluation hook when
    /// due and hands the metrics to every callback. Errors (`rlhf::error`, function
    /// `rlhf::ppo::ppo_trainer::train`): a minibatch size that does not divide the row count
    /// (kind config, `minibatch_size`); PTX on without a source (kind state, `ptx_source`); a
    /// model output of the wrong shape (`policy.log_probs`, `critic.values`, `policy.lm_logits`);
    /// the kernels' errors.
    step_metrics train(step_experience&& data) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::train";
        const auto start = detail::clock::now();
        step_metrics m = std::move(data.metrics);
        if (config_.ptx != ptx_mode::none && !ptx_source_)
            fail(error_kind::state, fn, "ptx_source", "a PTX source (set_ptx_source): ptx is on", "none");
        const std::int64_t rows = check_experience(data.batch, fn);
        const std::int64_t minibatch = config_.minibatch_size > 0 ? config_.minibatch_size : rows;
        if (rows == 0 || rows % minibatch != 0)
            fail(error_kind::config, fn, "minibatch_size",
                 "a divisor of the rollout's row count " + std::to_string(rows), std::to_string(minibatch));
        const std::int64_t micro =
            config_.micro_batch_size > 0 ? std::min(config_.micro_batch_size, minibatch) : minibatch;
        const torch::Device device = data.batch.sequences.device();

        experience_buffer buffer({.limit = 0, .cpu_offload = config_.cpu_offload, .seed = engine_()});
        buffer.append(data.batch);
        data.batch = {};
        const minibatch_plan plan =
            buffer.plan({.minibatch_size = minibatch, .epochs = config_.ppo_epochs, .shuffle = config_.shuffle});
        const double beta = m.kl_coef;
        const std::vector<torch::Tensor> policy_params = detail::optimizer_parameters(*optimizers_.policy);
        std::vector<torch::Tensor> critic_params;
        if (optimizers_.critic != nullptr) critic_params = detail::optimizer_parameters(*optimizers_.critic);

        detail::train_accumulator acc;
        std::int64_t minibatch_index = 0;
        bool stop = false;
        for (std::size_t epoch = 0; epoch < plan.size() && !stop; ++epoch) {
            for (const row_indices& rows_of_minibatch : plan[epoch]) {
                zero_grad();
                const minibatch_result r = train_minibatch(buffer, rows_of_minibatch, micro, beta, device, acc);
                m.micro_batches += r.micro_batches;
                m.skipped_micro_batches += r.skipped;
                m.ratio_threshold_hits += r.threshold_hits;
                if (config_.ptx == ptx_mode::mixed && config_.ptx_coef > 0.0) {
                    const torch::Tensor lm = ptx_loss(minibatch_index);
                    (lm * config_.ptx_coef).backward();
                    acc.ptx_loss += lm.item<double>();
                    ++acc.ptx_batches;
                }
                ++minibatch_index;
                if (config_.early_stop_kl && r.tokens > 0.0 &&
                    r.policy_kl > config_.early_stop_factor * *config_.early_stop_kl) {
                    // TRL `_early_stop`: the gradient is zeroed and the step skipped.
                    zero_grad();
                    m.early_stopped = true;
                    stop = true;
                    break;
                }
                acc.policy_norm += detail::clip_gradients(policy_params, config_.max_grad_norm);
                ++acc.policy_steps;
                optimizers_.policy->step();
                if (optimizers_.critic != nullptr) {
                    acc.critic_norm += detail::clip_gradients(critic_params, config_.critic_max_grad_norm);
                    ++acc.critic_steps;
                    optimizers_.critic->step();
                }
                if (config_.ptx == ptx_mode::separate_step && config_.ptx_coef > 0.0) {
                    optimizers_.policy->zero_grad();
                    const torch::Tensor lm = ptx_loss(minibatch_index - 1);
                    (lm * config_.ptx_coef).backward();
                    acc.ptx_loss += lm.item<double>();
                    ++acc.ptx_batches;
                    (void)detail::clip_gradients(policy_params, config_.max_grad_norm);
                    optimizers_.policy->step();
                }
                update_ema();
                zero_grad();
            }
            if (!stop) ++m.epochs_completed;
        }

        // Statistics.
        const auto per_token = [&](double sum) { return acc.tokens > 0.0 ? sum / acc.tokens : 0.0; };
        m.clip_fraction = per_token(acc.clip);
        m.clip_fraction_lower = per_token(acc.lower);
        m.approx_kl = per_token(acc.approx);
        m.policy_kl = per_token(acc.policy_kl);
        m.ratio_mean = per_token(acc.ratio);
        m.ratio_max = acc.ratio_max;
        m.value_clip_fraction = acc.value_tokens > 0.0 ? acc.value_clip / acc.value_tokens : 0.0;
        m.explained_variance = acc.value_tokens > 0.0 ? acc.explained / acc.value_tokens : 0.0;
        m.entropy = acc.entropy_tokens > 0.0 ? acc.entropy / acc.entropy_tokens : 0.0;
        const auto per_minibatch = [&](double sum) {
            return acc.minibatches > 0 ? sum / static_cast<double>(acc.minibatches) : 0.0;
        };
        m.policy_loss = per_minibatch(acc.policy_loss);
        m.value_loss = per_minibatch(acc.value_loss);
        m.kl_loss = per_minibatch(acc.kl_loss);
        m.entropy_loss = per_minibatch(acc.entropy_loss);
        m.ptx_loss = acc.ptx_batches > 0 ? acc.ptx_loss / static_cast<double>(acc.ptx_batches) : 0.0;
        m.policy_grad_norm = acc.policy_steps > 0 ? acc.policy_norm / static_cast<double>(acc.policy_steps) : 0.0;
        m.critic_grad_norm = acc.critic_steps > 0 ? acc.critic_norm / static_cast<double>(acc.critic_steps) : 0.0;
        m.optimizer_steps = acc.policy_steps;

        // KL controller (after the epochs, as TRL and verl).
        if (data.has_kl && config_.kl != kl_placement::none)
            (void)controller_.update(data.controller_kl, rows * config_.world_size);
        m.kl_coef_next = controller_.value();

        ++step_;
        m.step = step_;
        m.time.train = detail::seconds_since(start);
        m.time.total += m.time.train;
        if (config_.eval_every > 0 && evaluator_ && step_ % config_.eval_every == 0) m.eval = evaluator_(step_);
        for (const auto& callback : callbacks_) callback(m);
        return m;
    }

    /// One whole step: `train(make_experience(prompts))`.
    step_metrics step(const prompt_batch& prompts) { return train(make_experience(prompts)); }

    // ---- Hooks ------------------------------------------------------------------------------

    /// Adds a callback that receives every step's metrics (a `jsonl_sink`, a `csv_sink`, ...).
    void add_callback(metrics_callback callback) { callbacks_.push_back(std::move(callback)); }
    /// Sets the evaluation hook, called after every `config::eval_every`-th step with the step
    /// count; its results go to `step_metrics::eval`.
    void set_evaluator(evaluator hook) { evaluator_ = std::move(hook); }
    /// Sets the source of PTX batches (required when `config::ptx` is not `none`).
    void set_ptx_source(ptx_source source) { ptx_source_ = std::move(source); }

    // ---- State ------------------------------------------------------------------------------

    [[nodiscard]] const config& get_config() const noexcept { return config_; }
    [[nodiscard]] std::int64_t steps() const noexcept { return step_; }
    [[nodiscard]] double kl_coef() const noexcept { return controller_.value(); }
    [[nodiscard]] const kl_controller& controller() const noexcept { return controller_; }
    [[nodiscard]] const running_moments& score_moments() const noexcept { return score_moments_; }
    [[nodiscard]] P& policy() const noexcept { return *policy_; }
    [[nodiscard]] const K& kernels() const noexcept { return kernels_; }
    /// The EMA copy of the policy's parameters (empty without `ema_beta`), in `parameters()` order.
    [[nodiscard]] const std::vector<torch::Tensor>& ema_parameters() const noexcept { return ema_; }
    /// Copies the EMA parameters into `model` (a policy of the same architecture).
    /// Errors: no EMA (kind state, `ema_beta`); a parameter count or shape mismatch (kind shape, `to`).
    template <HasParameters M>
    void copy_ema_to(M& model) const {
        if (!config_.ema_beta)
            fail(error_kind::state, "rlhf::ppo::ppo_trainer::copy_ema_to", "ema_beta", "set (an EMA is kept)", "unset");
        struct ema_view {
            const std::vector<torch::Tensor>* tensors;
            [[nodiscard]] std::vector<torch::Tensor> parameters() const { return *tensors; }
        } source{&ema_};
        copy_parameters{}.sync(source, model);
    }

    // ---- Checkpoints ------------------------------------------------------------------------

    /// Writes a checkpoint to `path`, atomically (a temporary file renamed over it): the policy's
    /// and critic's parameters and buffers, both optimizers' state, the step count, the KL
    /// coefficient, the running score moments, the EMA and the generator's state.
    /// Errors: an unwritable path (kind state, argument `path`).
    void save_checkpoint(const std::filesystem::path& path) const {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::save_checkpoint";
        torch::serialize::OutputArchive archive;
        archive.write("format", c10::IValue(std::string(checkpoint_format)));
        archive.write("step", c10::IValue(step_));
        archive.write("rng", c10::IValue(checkpoint::engine_state(engine_)));
        archive.write("kl_coef", c10::IValue(controller_.value()));
        const running_moments_state& s = score_moments_.state();
        archive.write("score_mean", c10::IValue(s.mean));
        archive.write("score_std", c10::IValue(s.std));
        archive.write("score_var", c10::IValue(s.var));
        archive.write("score_count", c10::IValue(s.count));
        checkpoint::write_tensors(archive, "policy", checkpoint::model_tensors(*policy_));
        if constexpr (has_critic) checkpoint::write_tensors(archive, "critic", checkpoint::model_tensors(*critic_));
        checkpoint::write_optimizer(archive, "policy_optimizer", *optimizers_.policy);
        if (optimizers_.critic != nullptr)
            checkpoint::write_optimizer(archive, "critic_optimizer", *optimizers_.critic);
        checkpoint::write_tensors(archive, "ema", ema_);
        checkpoint::write_atomically(archive, path, fn);
    }

    /// Restores a checkpoint written by `save_checkpoint` into this trainer's models and
    /// optimizers (built as the saved ones were: same architectures, same config). Every tensor
    /// list is read and its shapes checked before anything changes. Errors: a missing file
    /// (kind state, argument `path`); not a trainer checkpoint, a missing entry, or a model or
    /// EMA whose parameter count or shapes differ (kind value, argument `path`).
    void load_checkpoint(const std::filesystem::path& path) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::load_checkpoint";
        torch::serialize::InputArchive archive;
        checkpoint::read_file(archive, path, fn);
        try {
            c10::IValue value;
            archive.read("format", value);
            if (!value.isString() || value.toStringRef() != checkpoint_format)
                fail(error_kind::value, fn, "path",
                     "an rlhf PPO trainer checkpoint (" + std::string(checkpoint_format) + ")", path.string());
            archive.read("step", value);
            const std::int64_t step = value.toInt();
            archive.read("rng", value);
            const std::string rng = value.toStringRef();
            archive.read("kl_coef", value);
            const double kl_coef = value.toDouble();
            running_moments_state moments;
            archive.read("score_mean", value);
            moments.mean = value.toDouble();
            archive.read("score_std", value);
            moments.std = value.toDouble();
            archive.read("score_var", value);
            moments.var = value.toDouble();
            archive.read("score_count", value);
            moments.count = value.toDouble();
            const std::vector<torch::Tensor> policy = checkpoint::read_tensors(archive, "policy");
            const std::vector<torch::Tensor> live_policy = checkpoint::model_tensors(*policy_);
            checkpoint_shapes(policy, live_policy, "policy", fn);
            std::vector<torch::Tensor> critic;
            std::vector<torch::Tensor> live_critic;
            if constexpr (has_critic) {
                critic = checkpoint::read_tensors(archive, "critic");
                live_critic = checkpoint::model_tensors(*critic_);
                checkpoint_shapes(critic, live_critic, "critic", fn);
            }
            std::vector<torch::Tensor> ema = checkpoint::read_tensors(archive, "ema");
            checkpoint_shapes(ema, ema_, "ema", fn);
            std::mt19937_64 engine;
            checkpoint::set_engine_state(engine, rng, fn);
            kl_controller controller = make_kl_controller(config_.kl_control, kl_coef);
            running_moments score_moments(moments);

            // Everything read and checked: commit.
            checkpoint::copy_into(policy, live_policy, "policy", fn);
            if constexpr (has_critic) checkpoint::copy_into(critic, live_critic, "critic", fn);
            checkpoint::copy_into(ema, ema_, "ema", fn);
            checkpoint::read_optimizer(archive, "policy_optimizer", *optimizers_.policy);
            if (optimizers_.critic != nullptr)
                checkpoint::read_optimizer(archive, "critic_optimizer", *optimizers_.critic);
            step_ = step;
            engine_ = engine;
            controller_ = controller;
            score_moments_ = score_moments;
        } catch (const c10::Error& e) {
            fail(error_kind::value, fn, "path", "an rlhf PPO trainer checkpoint with every entry",
                 path.string() + " (" + e.what_without_backtrace() + ")");
        }
    }

private:
    static constexpr std::string_view checkpoint_format = "rlhf.ppo.trainer/1";

    struct minibatch_result {
        double tokens = 0.0;
        double policy_kl = 0.0;  // token-weighted mean of the minibatch's micro-batches
        std::int64_t micro_batches = 0, skipped = 0, threshold_hits = 0;
    };

    static void checkpoint_shapes(const std::vector<torch::Tensor>& saved, const std::vector<torch::Tensor>& live,
                                  std::string_view what, std::string_view fn) {
        if (saved.size() != live.size())
            fail(error_kind::value, fn, "path", std::to_string(live.size()) + " tensors for " + std::string(what),
                 std::to_string(saved.size()) + " in the checkpoint");
        for (std::size_t i = 0; i < saved.size(); ++i)
            if (saved[i].sizes() != live[i].sizes())
                fail(error_kind::value, fn, "path",
                     libtorch::shape_string(live[i]) + " for " + std::string(what) + "[" + std::to_string(i) + "]",
                     libtorch::shape_string(saved[i]) + " in the checkpoint");
    }

    void zero_grad() {
        optimizers_.policy->zero_grad();
        if (optimizers_.critic != nullptr) optimizers_.critic->zero_grad();
    }

    /// The aggregation of one loss for a micro-batch of a minibatch with `tokens` valid tokens in
    /// `sequences` non-empty rows and responses up to `width` columns.
    [[nodiscard]] aggregation_options micro_aggregation(aggregation_options a, double tokens, double sequences,
                                                        double width) const {
        if (config_.scaling != micro_batch_scaling::global_counts) return a;
        if (!a.global_token_count) a.global_token_count = tokens;
        if (!a.global_sequence_count) a.global_sequence_count = sequences;
        if (!a.normalizer) a.normalizer = width;
        return a;
    }

    /// Forward and backward of every micro-batch of one minibatch (gradients accumulate).
    minibatch_result train_minibatch(const experience_buffer& buffer, const row_indices& rows, std::int64_t micro,
                                     double beta, const torch::Device& device, detail::train_accumulator& acc) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::train";
        double tokens = 0.0;
        double sequences = 0.0;
        double width = 0.0;
        for (const std::int64_t r : rows) {
            const auto n = static_cast<double>(buffer.response_length(r));
            tokens += n;
            sequences += n > 0.0 ? 1.0 : 0.0;
            width = std::max(width, n);
        }
        const std::vector<row_indices> parts =
            buffer.micro_batches(rows, {.micro_batch_size = micro, .token_balanced = config_.token_balanced});
        const double scale = config_.scaling == micro_batch_scaling::mean_of_micro_batches
                                 ? 1.0 / static_cast<double>(parts.size())
                                 : 1.0;
        const double actor_scale = config_.ptx == ptx_mode::mixed ? scale * (1.0 - config_.ptx_coef) : scale;
        const bool shared_value = has_critic && optimizers_.critic == nullptr;
        const aggregation_options policy_aggregation =
            micro_aggregation(config_.policy_loss.aggregation, tokens, sequences, width);

        minibatch_result result;
        double minibatch_policy = 0.0, minibatch_value = 0.0, minibatch_kl = 0.0, minibatch_entropy = 0.0;
        for (const row_indices& part : parts) {
            const experience batch = buffer.collate(
                part, {.padding = config_.padding, .pad_token_id = config_.pad_token_id, .device = device});
            const rollout sequences_of_part = as_rollout(batch);
            const torch::Tensor& mask = batch.action_mask;
            const std::int64_t n = batch.sequences.size(0);
            const std::int64_t t = mask.size(1);
            ++result.micro_batches;

            torch::Tensor log_probs;
            torch::Tensor entropy;
            if constexpr (EntropyPolicy<P>) {
                const policy_output o = policy_->log_probs_and_entropy(sequences_of_part);
                log_probs = o.log_probs;
                entropy = o.entropy;
                detail::check_model_output(entropy, n, t, fn, "policy.log_probs_and_entropy");
            } else {
                log_probs = policy_->log_probs(sequences_of_part);
            }
            detail::check_model_output(log_probs, n, t, fn, "policy.log_probs");
            const torch::Tensor old = batch.log_probs.to(log_probs.scalar_type());
            const torch::Tensor advantages = batch.advantages.to(log_probs.scalar_type());

            policy_loss_options po = config_.policy_loss;
            po.aggregation = policy_aggregation;
            const libtorch::policy_loss_output pg = kernels_.policy_loss(log_probs, old, advantages, mask, po);
            const policy_loss_stats& st = pg.stats;
            acc.tokens += st.valid_tokens;
            acc.clip += st.clip_fraction * st.valid_tokens;
            acc.lower += st.clip_fraction_lower * st.valid_tokens;
            acc.approx += st.approx_kl * st.valid_tokens;
            acc.policy_kl += st.policy_kl * st.valid_tokens;
            acc.ratio += st.ratio_mean * st.valid_tokens;
            acc.ratio_max = std::max(acc.ratio_max, st.ratio_max);
            result.tokens += st.valid_tokens;
            result.policy_kl += st.policy_kl * st.valid_tokens;
            if (st.ratio_threshold_exceeded) ++result.threshold_hits;

            torch::Tensor actor = pg.loss;
            minibatch_policy += pg.loss.item<double>() * scale;
            if (config_.kl == kl_placement::loss && has_reference && beta != 0.0) {
                kl_loss_options ko = config_.kl_loss;
                ko.coef = beta;
                ko.aggregation = micro_aggregation(ko.aggregation, tokens, sequences, width);
                const libtorch::kl_loss_output kl =
                    kernels_.kl_loss(log_probs, batch.ref_log_probs.to(log_probs.scalar_type()), mask, ko);
                actor = actor + kl.loss;
                minibatch_kl += kl.loss.item<double>() * scale;
            }
            if (entropy.defined()) {
                const torch::Tensor valid = mask.to(torch::kFloat64);
                acc.entropy += (entropy.detach().to(torch::kFloat64) * valid).sum().item<double>();
                acc.entropy_tokens += valid.sum().item<double>();
                if (config_.entropy_coef > 0.0) {
                    const torch::Tensor bonus =
                        -config_.entropy_coef * detail::aggregate(entropy, mask, policy_aggregation);
                    actor = actor + bonus;
                    minibatch_entropy += bonus.item<double>() * scale;
                }
            }

            torch::Tensor value_part;
            if constexpr (has_critic) {
                const torch::Tensor v = critic_->values(sequences_of_part);
                detail::check_model_output(v, n, t, fn, "critic.values");
                value_loss_options vo = config_.value_loss;
                vo.aggregation = micro_aggregation(vo.aggregation, tokens, sequences, width);
                // With `returns_from_advantages` (ColossalChat v2) the kernel builds the target as
                // advantages + old values itself, so it takes the (unwhitened) advantages.
                const torch::Tensor& targets = vo.returns_from_advantages ? batch.advantages : batch.returns;
                const libtorch::value_loss_output vl =
                    kernels_.value_loss(v, batch.values.to(v.scalar_type()), targets.to(v.scalar_type()), mask, vo);
                acc.value_tokens += vl.stats.valid_tokens;
                acc.value_clip += vl.stats.clip_fraction * vl.stats.valid_tokens;
                acc.explained += vl.stats.explained_variance * vl.stats.valid_tokens;
                minibatch_value += vl.loss.item<double>() * scale;
                value_part = vl.loss * scale;
            }

            // ColossalChat v2: a micro-batch whose mean ratio over all positions exceeds
            // `skip_threshold` is not backpropagated into the actor.
            const bool skip_actor = st.skip_threshold_exceeded;
            if (skip_actor) ++result.skipped;
            torch::Tensor total;
            if (!skip_actor) total = actor * actor_scale;
            if (value_part.defined() && shared_value) total = total.defined() ? total + value_part : value_part;
            if (total.defined()) total.backward();
            if (value_part.defined() && !shared_value) value_part.backward();
        }
        acc.policy_loss += minibatch_policy;
        acc.value_loss += minibatch_value;
        acc.kl_loss += minibatch_kl;
        acc.entropy_loss += minibatch_entropy;
        ++acc.minibatches;
        if (result.tokens > 0.0) result.policy_kl /= result.tokens;
        return result;
    }

    /// The LM loss of the PTX batch of minibatch `index` of this step.
    [[nodiscard]] torch::Tensor ptx_loss(std::int64_t index) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::train";
        if constexpr (LanguageModelPolicy<P>) {
            const ptx_batch batch = ptx_source_(step_, index);
            if (!batch.input_ids.defined() || batch.input_ids.dim() != 2 || batch.input_ids.size(1) < 2)
                fail(error_kind::shape, fn, "ptx_source", "input_ids [B, S] with S >= 2",
                     batch.input_ids.defined() ? libtorch::shape_string(batch.input_ids) : "undefined");
            const torch::Tensor attention =
                batch.attention_mask.defined() ? batch.attention_mask : torch::ones_like(batch.input_ids);
            const torch::Tensor labels = batch.labels.defined() ? batch.labels : batch.input_ids;
            const torch::Tensor logits = policy_->lm_logits(batch.input_ids, attention);
            const std::int64_t s = batch.input_ids.size(1);
            if (logits.dim() != 3 || logits.size(0) != batch.input_ids.size(0) || logits.size(1) != s)
                fail(error_kind::shape, fn, "policy.lm_logits",
                     "[" + std::to_string(batch.input_ids.size(0)) + ", " + std::to_string(s) + ", V]",
                     libtorch::shape_string(logits));
            return detail::lm_loss(logits.narrow(1, 0, s - 1), labels.narrow(1, 1, s - 1).to(torch::kInt64),
                                   attention.narrow(1, 1, s - 1), config_.ptx_loss);
        } else {
            fail(error_kind::config, fn, "ptx", "none: the policy has no lm_logits", "on");
        }
    }

    /// ReMax's baseline: the score of a greedy rollout of the same prompts (no gradient).
    [[nodiscard]] torch::Tensor greedy_baseline(const rollout_request& request, torch::Dtype dtype) {
        if constexpr (SequenceRewardModel<R> && !TokenRewardModel<R>) {
            generation_options greedy = request.generation;
            greedy.greedy = true;
            const rollout g = policy_->generate(request.prompts, greedy);
            check_rollout(g, "rlhf::ppo::ppo_trainer::make_experience");
            const torch::Tensor s = reward_model_->score(g);
            detail::check_model_output(s, g.sequences.size(0), -1, "rlhf::ppo::ppo_trainer::make_experience",
                                       "reward_model.score");
            torch::Tensor baseline = s.to(torch::kCPU, dtype).contiguous();
            if (config_.reward.score_clip)
                baseline = baseline.clamp(-*config_.reward.score_clip, *config_.reward.score_clip);
            if (config_.reward.score_clip_range)
                baseline =
                    baseline.clamp(config_.reward.score_clip_range->first, config_.reward.score_clip_range->second);
            return baseline;
        } else {
            fail(error_kind::config, "rlhf::ppo::check_config", "estimator",
                 "not remax: its greedy baseline needs a SequenceRewardModel", "remax");
        }
    }

    /// `ema ← β·ema + (1 − β)·θ` (as `torch.lerp(θ, ema, β)`, DeepSpeed-Chat's form).
    void update_ema() {
        if (!config_.ema_beta) return;
        const c10::AutoGradMode no_grad(false);
        const std::vector<torch::Tensor> params = policy_->parameters();
        for (std::size_t i = 0; i < params.size() && i < ema_.size(); ++i)
            ema_[i].copy_(torch::lerp(params[i].detach(), ema_[i], *config_.ema_beta));
    }

    config config_;
    P* policy_;
    R* reward_model_;
    C* critic_;
    Ref* reference_;
    trainer_optimizers optimizers_;
    K kernels_;
    kl_controller controller_;
    running_moments score_moments_{};
    std::mt19937_64 engine_{};
    std::int64_t step_ = 0;
    std::vector<torch::Tensor> ema_;
    std::vector<metrics_callback> callbacks_;
    evaluator evaluator_;
    ptx_source ptx_source_;
};

template <class P, class R, class C, class Ref>
ppo_trainer(const config&, const trainer_models<P, R, C, Ref>&, const trainer_optimizers&) -> ppo_trainer<P, C, R, Ref>;

template <class P, class R, class C, class Ref, class K>
ppo_trainer(const config&, const trainer_models<P, R, C, Ref>&, const trainer_optimizers&, K)
    -> ppo_trainer<P, C, R, Ref, K>;

}  // namespace rlhf::ppo
