#pragma once
/// @file
/// `rlhf::ppo::ppo_trainer`, the PPO loop over user models and loss kernels (docs/ppo.md): rollout,
/// the models' outputs without gradient, the advantage stage (advantage_stage.hpp), PPO epochs over
/// seeded minibatches split into micro-batches (gradient accumulation, grad-norm clip, optimizer
/// steps), EMA, KL-controller update, metrics. Randomness comes from the trainer's own
/// `std::mt19937_64` (`config::seed`), kept in checkpoints: a resumed run continues unchanged.
/// Data-parallel (`set_communicator`, docs/distributed.md): every rank runs the same loop on its
/// rows; statistics, counts and decisions are global, gradients are averaged before each step.

#include <torch/autograd.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/distributed/communicator.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/libtorch/kernel_concepts.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/advantage_stage.hpp"
#include "rlhf/ppo/check_config.hpp"
#include "rlhf/ppo/checkpoint.hpp"
#include "rlhf/ppo/concepts.hpp"
#include "rlhf/ppo/config.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/experience_buffer.hpp"
#include "rlhf/ppo/loop_rules.hpp"
#include "rlhf/ppo/metrics.hpp"
#include "rlhf/ppo/model_outputs.hpp"
#include "rlhf/ppo/optimization.hpp"
#include "rlhf/ppo/parameter_selection.hpp"
#include "rlhf/ppo/ptx.hpp"
#include "rlhf/ppo/rollout_rewards.hpp"
#include "rlhf/ppo/schedule.hpp"
#include "rlhf/ppo/step_statistics.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The experience of one step, ready for `ppo_trainer::train`.
struct step_experience {
    experience batch;           ///< rollout, log-probs, values, rewards, advantages, returns, `info["group"]`
    step_metrics metrics;       ///< the rollout part of the step's metrics
    measured_kl controller_kl;  ///< the rollout KL in the controller's unit
    bool has_kl = false;        ///< a reference model measured `controller_kl`
    /// Valid (action-mask) tokens of each row, on the host: the minibatches' token counts.
    std::vector<double> action_tokens;
};

namespace detail {

using clock = std::chrono::steady_clock;

[[nodiscard]] inline double seconds_since(clock::time_point start) {
    return std::chrono::duration<double>(clock::now() - start).count();
}

/// Rank `rank`'s generation seed from the job's draw `seed` (splitmix64 of both): rollouts differ
/// across ranks, and rank 0 keeps the draw, so a one-rank job equals a plain run.
[[nodiscard]] inline std::uint64_t rank_seed(std::uint64_t seed, int rank) {
    if (rank == 0) return seed;
    std::uint64_t z = seed + std::uint64_t{0x9E3779B97F4A7C15U} * static_cast<unsigned>(rank);
    z = (z ^ (z >> 30U)) * std::uint64_t{0xBF58476D1CE4E5B9U};
    z = (z ^ (z >> 27U)) * std::uint64_t{0x94D049BB133111EBU};
    return z ^ (z >> 31U);
}

}  // namespace detail

/// The PPO trainer (see the file comment). Template arguments: the policy, the critic (or
/// `no_critic`), the reward model, the reference model (or `no_reference`) and the loss kernels
/// (default `rlhf::libtorch::default_kernels`); each is checked by its concept where the trainer
/// is named, so a model that misses a member fails with the concept's name.
template <class P, class C, class R, class Ref, class K = libtorch::default_kernels>
requires TrainablePolicy<P> && CriticOrNone<C> && RewardModel<R> && ReferenceOrNone<Ref> && TrainerKernels<K>
class ppo_trainer {
public:
    static constexpr bool has_critic = !std::same_as<C, no_critic>;
    static constexpr bool has_reference = !std::same_as<Ref, no_reference>;
    static constexpr bool refreshable_reference = has_reference && HasParameters<Ref>;  // for sync_ref_model
    using metrics_callback = std::function<void(const step_metrics&)>;
    using evaluator = std::function<std::map<std::string, double>(std::int64_t step)>;
    /// Gives the PTX batch of minibatch `minibatch` (counted from 0 within the step) of step `step`.
    using ptx_source = std::function<ptx_batch(std::int64_t step, std::int64_t minibatch)>;

    /// Builds a trainer. Errors (`rlhf::error`): a null model pointer (kind value, function
    /// `rlhf::ppo::ppo_trainer`, argument `models.policy`, `models.reward_model`,
    /// `models.critic`, `models.reference`) or policy optimizer (`optimizers.policy`); every
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
        check_config(config_, trainer_capabilities{.critic = has_critic,
                                                   .critic_optimizer = optimizers_.critic != nullptr,
                                                   .reference = has_reference,
                                                   .entropy_policy = EntropyPolicy<P>,
                                                   .language_model = LanguageModelPolicy<P>,
                                                   .sequence_rewards = SequenceRewardModel<R> && !TokenRewardModel<R>,
                                                   .token_rewards = TokenRewardModel<R>,
                                                   .policy_optimizer_holds_critic = holds_critic(),
                                                   .reference_parameters = refreshable_reference});
        policy_lr_ = lr_scheduler(optimizers_.policy, config_.lr_schedule);
        critic_lr_ = lr_scheduler(optimizers_.critic, config_.critic_lr_schedule);
        std::seed_seq sequence{static_cast<std::uint32_t>(config_.seed),
                               static_cast<std::uint32_t>(config_.seed >> 32U)};
        engine_.seed(sequence);
        if (config_.loss_scaling) scaler_.emplace(*config_.loss_scaling);
        if (config_.ema_beta)
            for (const auto& p : trainable_tensors(policy_->parameters(), config_.trainable_parameters_only))
                ema_.push_back(p.detach().clone());
    }

    ppo_trainer(const ppo_trainer&) = delete;
    ppo_trainer& operator=(const ppo_trainer&) = delete;
    ppo_trainer(ppo_trainer&&) noexcept = default;
    ppo_trainer& operator=(ppo_trainer&&) noexcept = default;

    // ---- The step ---------------------------------------------------------------------------

    /// This step's rollout request: `make_rollout_request` with the trainer's generator.
    /// Data-parallel: the job's generator draws the same seed on every rank; rank r generates
    /// with `rank_seed(seed, r)`.
    [[nodiscard]] rollout_request prepare_rollout(const prompt_batch& prompts) {
        rollout_request request = make_rollout_request(config_, prompts, engine_);
        if (communicator_) request.generation.seed = detail::rank_seed(request.generation.seed, communicator_->rank());
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
    /// policy, synced by an engine): the models' outputs without gradient, then the advantage
    /// stage on the models' device. Errors (`rlhf::error`, function
    /// `rlhf::ppo::ppo_trainer::make_experience`): those of `check_rollout`; a rollout whose row
    /// count is not the request's (kind shape, `rollout`); a model output of the wrong shape or
    /// dtype (argument `policy.log_probs`, `reference.log_probs`, `critic.values`,
    /// `reward_model.score`, `reward_model.token_rewards`); unless `config::check_finite` is off, a
    /// NaN or Inf in one of them on an action position (kind value, the same names, the message
    /// giving the step and the position); the errors of `compute_advantage_stage` (an empty response under
    /// `reward.empty_rows = raise`, ...).
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

        const model_outputs models = forward_models(*policy_, critic_, generated, rows, width, false, fn);
        const torch::Dtype dtype = libtorch::detail::in_compute_precision(models.log_probs).scalar_type();
        const auto in_math = [&](const torch::Tensor& t) { return t.to(device, dtype).contiguous(); };
        // Built from the checked response ranges, as bool: no kernel scans it again.
        advantage_inputs in{.log_probs = in_math(models.log_probs),
                            .mask = rollout_action_mask(generated, width, fn).to(device),
                            .group_ids = request.group_ids.to(device, torch::kInt64).contiguous()};
        if constexpr (has_reference) {
            const torch::Tensor r = reference_->log_probs(generated);
            detail::check_model_output(r, rows, width, fn, "reference.log_probs");
            in.ref_log_probs = in_math(r);
        }
        if constexpr (has_critic) in.values = in_math(models.values);
        if constexpr (TokenRewardModel<R>) {
            const torch::Tensor t = reward_model_->token_rewards(generated);
            detail::check_model_output(t, rows, width, fn, "reward_model.token_rewards");
            in.token_rewards = in_math(t) * in.mask.to(dtype);
            in.scores = in.token_rewards.sum(1);
        } else {
            const torch::Tensor s = reward_model_->score(generated);
            detail::check_model_output(s, rows, -1, fn, "reward_model.score");
            in.scores = in_math(s);
            if (config_.missing_eos_penalty)
                in.scores = penalize_missing_eos(in.scores, generated, config_.generation.eos_token_id,
                                                 *config_.missing_eos_penalty);
            if (config_.estimator == advantage_estimator::remax) in.baseline = greedy_scores(request);
        }
        if (config_.check_finite != finite_checks::off)
            detail::check_finite_outputs({{&in.log_probs, "policy.log_probs"},
                                          {&in.ref_log_probs, "reference.log_probs"},
                                          {&in.values, "critic.values"},
                                          {&in.token_rewards, "reward_model.token_rewards"},
                                          {&in.scores, "reward_model.score"}},
                                         in.mask, step_ + 1, fn);
        if (config_.bootstrap_truncated) in.bootstrap = truncation_bootstrap(in.values, in.mask, generated.truncated);
        const double forward_seconds = detail::seconds_since(start);
        const auto advantages_start = detail::clock::now();

        step_experience out;
        step_metrics& m = out.metrics;
        m.step = step_ + 1;
        m.generation_seed = request.generation.seed;
        m.rows = rows;
        m.kl_coef = controller_.value();
        m.kl_unit = config_.kl_metric;
        const torch::Tensor raw_scores = in.scores;
        in.scores = normalize_scores(config_, score_moments_, in.scores, group());
        if constexpr (has_reference) {
            const rollout_kl kl = measure_rollout_kl(config_, in.log_probs, in.ref_log_probs, in.mask, group());
            m.kl = kl.metric;
            out.controller_kl = kl.controller;
            out.has_kl = true;
        }
        const advantage_outputs a = compute_advantage_stage(config_, m.kl_coef, in, group());
        const torch::Tensor counts = libtorch::read_to_host(in.mask.sum(1));
        out.action_tokens.assign(counts.data_ptr<double>(), counts.data_ptr<double>() + rows);
        record_advantage_metrics(m, in.mask, raw_scores, a, in.values, group());

        experience& e = out.batch;
        e.sequences = generated.sequences;
        e.attention_mask = generated.attention_mask;
        e.response_start = generated.response_start;
        e.response_end = generated.response_end;
        e.action_mask = in.mask.to(device);
        e.log_probs = in.log_probs.to(device);
        if constexpr (has_reference) e.ref_log_probs = in.ref_log_probs.to(device);
        if constexpr (has_critic) e.values = in.values;  // float32 for a reduced-precision critic
        e.rewards = a.rewards.to(device);
        e.advantages = a.advantages.to(device);
        e.returns = a.returns.to(device);
        e.scores = in.scores.to(device);
        e.info["group"] = in.group_ids.to(device);
        m.time.forward = forward_seconds;
        m.time.advantages = detail::seconds_since(advantages_start);
        m.time.total = detail::seconds_since(start);
        return out;
    }

    /// Trains on one step's experience: PPO epochs over minibatches and micro-batches, optimizer
    /// steps, EMA, the KL-controller update; then counts the step, runs the evaluation hook when
    /// due and hands the metrics to every callback. Errors (`rlhf::error`, function
    /// `rlhf::ppo::ppo_trainer::train` unless said): a minibatch size that does not divide the
    /// row count (kind config, `minibatch_size`, `rlhf::ppo::minibatch_rows`); PTX on without a
    /// source (kind state, `ptx_source`); a model output of the wrong shape (`policy.log_probs`,
    /// `critic.values`, `policy.lm_logits`); under `finite_checks::every_forward`, a NaN or Inf
    /// in a micro-batch's outputs (kind value, naming the output and the step, before its
    /// backward); the kernels' errors. With `config::restore_on_error`, a throw restores the
    /// models, optimizers and state of before the call.
    step_metrics train(step_experience&& data) {
        return restoring_on_error([&] { return train_unguarded(std::move(data)); });
    }

    /// One whole step: `train(make_experience(prompts))`; with `config::restore_on_error`, a
    /// step that throws leaves the trainer as it was before the step.
    step_metrics step(const prompt_batch& prompts) {
        return restoring_on_error([&] { return train_unguarded(make_experience(prompts)); });
    }

    // ---- Hooks ------------------------------------------------------------------------------

    /// Adds a callback that receives every step's metrics (a `jsonl_sink`, a `csv_sink`, ...).
    void add_callback(metrics_callback callback) { callbacks_.push_back(std::move(callback)); }
    /// Sets the evaluation hook, called after every `config::eval_every`-th step with the step
    /// count; its results go to `step_metrics::eval`.
    void set_evaluator(evaluator hook) { evaluator_ = std::move(hook); }
    /// Makes the trainer data-parallel over `communicator`'s ranks (docs/distributed.md): the
    /// running score moments, the rollout KL, reward and advantage whitening, the loss
    /// aggregation's token and row counts (`micro_batch_scaling::global_counts`, with `dp_size` =
    /// the world size, verl's semantics), the loop rules' KL and ratio, and the metrics are global;
    /// gradients are averaged (bucketed all-reduces) before every optimizer step, so the ranks'
    /// parameters stay equal. Every rank must build the trainer alike and call the same methods
    /// in the same order; checkpoints are the same on every rank (save on one). Errors: a null
    /// communicator (kind value, `communicator`).
    void set_communicator(std::shared_ptr<distributed::communicator> communicator) {
        if (!communicator)
            fail(error_kind::value, "rlhf::ppo::ppo_trainer::set_communicator", "communicator", "a communicator",
                 "nullptr");
        communicator_ = std::move(communicator);
    }
    /// Sets the source of PTX batches (required when `config::ptx` is not `none`).
    void set_ptx_source(ptx_source source) { ptx_source_ = std::move(source); }
    /// Schedules the LRs with factors on the optimizers' initial LRs, called with the count of
    /// each optimizer's steps taken (torch `LambdaLR`); replaces `lr_schedule` / `critic_lr_schedule`.
    void set_lr_lambda(lr_lambda policy, lr_lambda critic = {}) {
        policy_lr_.set_lambda(std::move(policy));
        critic_lr_.set_lambda(std::move(critic));
    }

    // ---- State ------------------------------------------------------------------------------

    [[nodiscard]] const config& get_config() const noexcept { return config_; }
    [[nodiscard]] std::int64_t steps() const noexcept { return step_; }
    [[nodiscard]] double kl_coef() const noexcept { return controller_.value(); }
    [[nodiscard]] const kl_controller& controller() const noexcept { return controller_; }
    [[nodiscard]] const running_moments& score_moments() const noexcept { return score_moments_; }
    [[nodiscard]] P& policy() const noexcept { return *policy_; }
    [[nodiscard]] const K& kernels() const noexcept { return kernels_; }
    /// The data-parallel communicator (null: this process alone).
    [[nodiscard]] distributed::communicator* group() const noexcept { return communicator_.get(); }
    /// The EMA copy of the policy's parameters (empty without `ema_beta`), in `parameters()` order.
    [[nodiscard]] const std::vector<torch::Tensor>& ema_parameters() const noexcept { return ema_; }
    /// Copies the EMA parameters into `model` (a policy of the same architecture).
    /// Errors: no EMA (kind state, `ema_beta`); a parameter count or shape mismatch (kind shape, `to`).
    template <HasParameters M>
    void copy_ema_to(M& model) const {
        if (!config_.ema_beta)
            fail(error_kind::state, "rlhf::ppo::ppo_trainer::copy_ema_to", "ema_beta", "set (an EMA is kept)", "unset");
        copy_tensors(ema_, trainable_tensors(model.parameters(), config_.trainable_parameters_only), "parameters",
                     "rlhf::ppo::ppo_trainer::copy_ema_to");
    }

    // ---- Checkpoints ------------------------------------------------------------------------

    /// Writes a checkpoint to `path` atomically (`checkpoint::save_trainer`): the policy's and
    /// critic's parameters and buffers, both optimizers' state, the step count, β, the running
    /// score moments, the EMA and the generator's state. Errors: an unwritable path (kind
    /// state, argument `path`).
    void save_checkpoint(const std::filesystem::path& path) const {
        checkpoint::save_trainer(path, trainer_state_now(), checkpoint_parts(),
                                 "rlhf::ppo::ppo_trainer::save_checkpoint");
    }

    /// Restores a checkpoint written by `save_checkpoint` into this trainer's models and
    /// optimizers (built as the saved ones were: same architectures, same config); nothing
    /// changes unless every entry reads and fits. Errors: those of `checkpoint::load_trainer`
    /// (a missing file: kind state; not a trainer checkpoint or a model of another shape: kind
    /// value; argument `path`).
    void load_checkpoint(const std::filesystem::path& path) {
        set_trainer_state(
            checkpoint::load_trainer(path, checkpoint_parts(), "rlhf::ppo::ppo_trainer::load_checkpoint"));
    }

private:
    /// `body()`; with `config::restore_on_error`, a throw first restores the state of before
    /// (an in-memory checkpoint: `checkpoint::write_trainer`).
    template <class Body>
    step_metrics restoring_on_error(Body&& body) {
        if (!config_.restore_on_error) return body();
        torch::serialize::OutputArchive archive;
        checkpoint::write_trainer(archive, trainer_state_now(), checkpoint_parts());
        std::ostringstream saved;
        archive.save_to(saved);
        try {
            return body();
        } catch (...) {
            torch::serialize::InputArchive restored;
            std::istringstream in(saved.str());
            restored.load_from(in, torch::Device(torch::kCPU));
            set_trainer_state(checkpoint::read_trainer(restored, checkpoint_parts(), "(the step's start, in memory)",
                                                       "rlhf::ppo::ppo_trainer::step"));
            zero_grad();
            throw;
        }
    }

    step_metrics train_unguarded(step_experience&& data) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::train";
        const auto start = detail::clock::now();
        step_metrics m = std::move(data.metrics);
        if (config_.ptx != ptx_mode::none && !ptx_source_)
            fail(error_kind::state, fn, "ptx_source", "a PTX source (set_ptx_source): ptx is on", "none");
        const std::int64_t rows = check_experience(data.batch, fn);
        const std::int64_t minibatch = minibatch_rows(config_, rows);
        const std::int64_t micro =
            config_.micro_batch_size > 0 ? std::min(config_.micro_batch_size, minibatch) : minibatch;
        const torch::Device device = data.batch.sequences.device();

        experience_buffer buffer({.limit = 0, .cpu_offload = config_.cpu_offload, .seed = engine_()});
        buffer.append(data.batch);
        data.batch = {};
        const minibatch_plan plan =
            buffer.plan({.minibatch_size = minibatch, .epochs = config_.ppo_epochs, .shuffle = config_.shuffle});
        const std::vector<torch::Tensor> policy_params = optimizer_parameters(*optimizers_.policy);
        std::vector<torch::Tensor> critic_params;
        if (optimizers_.critic != nullptr) critic_params = optimizer_parameters(*optimizers_.critic);
        std::vector<torch::Tensor> trained_params = policy_params;
        trained_params.insert(trained_params.end(), critic_params.begin(), critic_params.end());

        deferred_statistics stats;  // read back once, after the epochs
        minibatch_result r;
        std::int64_t minibatch_index = 0;
        bool stop = false;
        for (std::size_t epoch = 0; epoch < plan.size() && !stop; ++epoch) {
            for (const row_indices& rows_of_minibatch : plan[epoch]) {
                zero_grad();
                r = train_minibatch(buffer, rows_of_minibatch, micro, m.kl_coef, device, stats, data.action_tokens);
                m.micro_batches += r.micro_batches;
                m.skipped_micro_batches += r.skipped;
                m.ratio_threshold_hits += r.threshold_hits;
                if (minibatch_ratio_exceeded(config_, r.policy.ratio_sum, r.policy.tokens)) {
                    zero_gradients(policy_params, critic_params);  // the whole minibatch's loss × 0 (TRL `loss()`)
                    ++m.ratio_threshold_hits;
                }
                if (config_.ptx == ptx_mode::mixed) add_ptx_gradient(minibatch_index, stats);
                // Data-parallel: every decision above and below is global, so the ranks agree.
                if (data_parallel()) communicator_->average_gradients(trained_params);
                ++minibatch_index;
                if (early_stop_due(config_, early_stop_rule::each_minibatch_before_step, r.policy.policy_kl,
                                   r.policy.tokens)) {
                    zero_grad();  // the minibatch's gradient is dropped, no step
                    m.early_stopped = stop = true;
                    break;
                }
                if (scaler_ && !scaler_->unscale(trained_params)) {  // an overflow: no step (loss scaling)
                    ++m.overflow_skipped_steps;
                    zero_grad();
                    continue;
                }
                stats.add_policy_step(policy_lr_.clip_and_step(policy_params, config_.max_grad_norm));
                if (optimizers_.critic != nullptr)
                    stats.add_critic_step(critic_lr_.clip_and_step(critic_params, config_.critic_max_grad_norm));
                if (config_.ptx == ptx_mode::separate_step && config_.ptx_coef > 0.0) {
                    optimizers_.policy->zero_grad();
                    add_ptx_gradient(minibatch_index - 1, stats);
                    if (data_parallel()) communicator_->average_gradients(policy_params);
                    if (!scaler_ || scaler_->unscale(policy_params))  // a step of its own
                        (void)policy_lr_.clip_and_step(policy_params, config_.max_grad_norm);
                }
                update_ema();
                zero_grad();
            }
            if (!stop) ++m.epochs_completed;
            // TRL `step`: judged once per epoch, after its last step, on the last `loss()` call's policy KL.
            m.early_stopped = stop = stop || early_stop_due(config_, early_stop_rule::after_epoch,
                                                            r.policy.last_policy_kl, r.policy.last_tokens);
        }
        train_statistics totals;
        stats.replay_into(totals);
        if (data_parallel()) totals.reduce_across(*communicator_);
        totals.write_to(m);
        m.policy_lr = policy_lr_.last_lr();
        m.critic_lr = critic_lr_.last_lr();

        // KL controller (after the epochs, as TRL and verl).
        if (data.has_kl && config_.kl != kl_placement::none)
            (void)controller_.update(data.controller_kl, rows * config_.world_size);
        m.kl_coef_next = controller_.value();

        ++step_;
        m.step = step_;
        if constexpr (refreshable_reference) refresh_reference(config_, step_, *policy_, *reference_);
        m.time.train = detail::seconds_since(start);
        m.time.total += m.time.train;
        if (config_.eval_every > 0 && evaluator_ && step_ % config_.eval_every == 0) m.eval = evaluator_(step_);
        for (const auto& callback : callbacks_) callback(m);
        return m;
    }

    struct minibatch_result {
        minibatch_policy_totals policy;  // read only when a loop rule needs it
        std::int64_t micro_batches = 0, skipped = 0, threshold_hits = 0;
    };

    [[nodiscard]] checkpoint::trainer_state trainer_state_now() const {
        checkpoint::trainer_state state{.step = step_, .engine = engine_, .kl_coef = controller_.value()};
        state.score_moments = score_moments_.state();
        state.lr_steps = {policy_lr_.steps(), critic_lr_.steps()};
        return state;
    }

    void set_trainer_state(const checkpoint::trainer_state& state) {
        step_ = state.step;
        engine_ = state.engine;
        controller_ = make_kl_controller(config_.kl_control, state.kl_coef);
        score_moments_ = running_moments(state.score_moments);
        policy_lr_.set_steps(state.lr_steps[0]);
        critic_lr_.set_steps(state.lr_steps[1]);
    }

    [[nodiscard]] checkpoint::trainer_parts checkpoint_parts() const {
        const bool only_trainable = config_.trainable_parameters_only;
        checkpoint::trainer_parts parts{.policy = checkpoint::model_tensors(*policy_, only_trainable),
                                        .ema = ema_,
                                        .policy_optimizer = optimizers_.policy,
                                        .critic_optimizer = optimizers_.critic};
        if constexpr (has_critic) parts.critic = checkpoint::model_tensors(*critic_, only_trainable);
        if constexpr (refreshable_reference)
            if (config_.sync_ref_model) parts.reference = checkpoint::model_tensors(*reference_);
        return parts;
    }

    [[nodiscard]] bool data_parallel() const { return communicator_ && communicator_->world_size() > 1; }

    /// Whether the policy's optimizer holds every critic parameter (a value head sharing it).
    [[nodiscard]] bool holds_critic() const {
        if constexpr (has_critic) return holds_parameters(*optimizers_.policy, critic_->parameters());
        return false;
    }

    void zero_grad() {
        optimizers_.policy->zero_grad();
        if (optimizers_.critic != nullptr) optimizers_.critic->zero_grad();
    }

    /// Forward and backward of every micro-batch of one minibatch (gradients accumulate).
    minibatch_result train_minibatch(const experience_buffer& buffer, const row_indices& rows, std::int64_t micro,
                                     double beta, const torch::Device& device, deferred_statistics& stats,
                                     const std::vector<double>& action_tokens) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::train";
        const std::vector<row_indices> parts =
            buffer.micro_batches(rows, {.micro_batch_size = micro, .token_balanced = config_.token_balanced});
        const double scale = config_.scaling == micro_batch_scaling::mean_of_micro_batches
                                 ? 1.0 / static_cast<double>(parts.size())
                                 : 1.0;
        const double actor_scale = config_.ptx == ptx_mode::mixed ? scale * (1.0 - config_.ptx_coef) : scale;
        const bool shared_value = has_critic && optimizers_.critic == nullptr;
        policy_loss_options po = kernel_policy_options(config_);
        minibatch_counts counts = count_minibatch(buffer, rows, action_tokens);
        const int world = data_parallel() ? communicator_->world_size() : 1;
        if (world > 1) counts = global_counts(*communicator_, counts);
        po.aggregation = micro_aggregation(po.aggregation, config_, counts, world);
        kl_loss_options ko = config_.kl_loss;
        ko.coef = beta;
        ko.aggregation = micro_aggregation(ko.aggregation, config_, counts, world);
        value_loss_options vo = config_.value_loss;
        vo.aggregation = micro_aggregation(vo.aggregation, config_, counts, world);

        minibatch_result result;
        const auto zero = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
        torch::Tensor policy_sum = zero, value_sum = zero, kl_sum = zero, entropy_sum = zero;
        minibatch_policy_accumulator rule_inputs;  // read once, only when a rule needs it
        const double loss_scale = scaler_ ? scaler_->scale() : 1.0;
        for (const row_indices& part : parts) {
            const experience batch = buffer.collate(
                part, {.padding = config_.padding, .pad_token_id = config_.pad_token_id, .device = device});
            const torch::Tensor& mask = batch.action_mask;
            ++result.micro_batches;
            const model_outputs out = forward_models(*policy_, critic_, as_rollout(batch), batch.sequences.size(0),
                                                     mask.size(1), EntropyPolicy<P>, fn);
            if (config_.check_finite == finite_checks::every_forward)
                detail::check_finite_outputs({{&out.log_probs, "policy.log_probs"},
                                              {&out.entropy, "policy.entropy"},
                                              {&out.values, "critic.values"}},
                                             mask, step_ + 1, fn);
            // Mixed precision: the RLHF math in float32 (float64 stays), the gradient flows back
            // into the model's dtype.
            const torch::Tensor log_probs = libtorch::detail::in_compute_precision(out.log_probs);
            const auto as_log_probs = [&](const torch::Tensor& x) { return x.to(log_probs.scalar_type()); };

            const libtorch::policy_loss_output pg = kernels_.policy_loss(log_probs, as_log_probs(batch.log_probs),
                                                                         as_log_probs(batch.advantages), mask, po);
            stats.add_policy(pg);
            rule_inputs.add(pg);
            // Scalar decisions of the config, one host read each and only when configured: TRL's
            // micro-batch ratio threshold (the whole micro-batch loss × 0) and ColossalChat's skip.
            const bool decide_now = po.ratio_threshold || po.skip_threshold;
            const policy_loss_stats decided = decide_now ? libtorch::read_statistics(pg) : policy_loss_stats{};
            const double keep = decided.ratio_threshold_exceeded ? 0.0 : 1.0;
            if (keep == 0.0) ++result.threshold_hits;
            torch::Tensor actor = pg.loss;
            policy_sum = policy_sum + pg.loss.detach().to(zero.options()) * scale;
            if (config_.kl == kl_placement::loss && has_reference && beta != 0.0) {
                const libtorch::kl_loss_output kl =
                    kernels_.kl_loss(log_probs, as_log_probs(batch.ref_log_probs), mask, ko);
                actor = actor + kl.loss;
                kl_sum = kl_sum + kl.loss.detach().to(zero.options()) * (scale * keep);
            }
            if (out.entropy.defined()) {
                const torch::Tensor valid = mask.to(torch::kFloat64);
                stats.add_entropy((out.entropy.detach().to(torch::kFloat64) * valid).sum(), valid.sum());
                if (config_.entropy_coef > 0.0) {
                    const torch::Tensor h = libtorch::detail::in_compute_precision(out.entropy);
                    const torch::Tensor weights =
                        libtorch::detail::device_token_weights(fn, mask.ne(0), po.aggregation, h.scalar_type());
                    const torch::Tensor bonus = -config_.entropy_coef * (h * weights).sum();
                    actor = actor + bonus;
                    entropy_sum = entropy_sum + bonus.detach().to(zero.options()) * (scale * keep);
                }
            }

            torch::Tensor value_part;
            if constexpr (has_critic) {
                const torch::Tensor v = libtorch::detail::in_compute_precision(out.values);
                // With `returns_from_advantages` (ColossalChat v2) the kernel builds the target as
                // advantages + old values itself, so it takes the (unwhitened) advantages.
                const torch::Tensor& targets = vo.returns_from_advantages ? batch.advantages : batch.returns;
                const libtorch::value_loss_output vl =
                    kernels_.value_loss(v, batch.values.to(v.scalar_type()), targets.to(v.scalar_type()), mask, vo);
                stats.add_value(vl);
                value_sum = value_sum + vl.loss.detach().to(zero.options()) * (scale * keep);
                value_part = vl.loss * (scale * keep);
            }

            // ColossalChat v2: a micro-batch whose mean ratio over all positions exceeds
            // `skip_threshold` is not backpropagated into the actor.
            const bool skip_actor = decided.skip_threshold_exceeded;
            if (skip_actor) ++result.skipped;
            torch::Tensor total;
            if (!skip_actor) total = actor * (actor_scale * keep);
            if (value_part.defined() && shared_value) total = total.defined() ? total + value_part : value_part;
            if (total.defined()) (total * loss_scale).backward();
            if (value_part.defined() && !shared_value) (value_part * loss_scale).backward();
        }
        stats.add_minibatch(policy_sum, value_sum, kl_sum, entropy_sum);
        if (config_.early_stop_kl || config_.policy_loss.ratio_threshold) result.policy = rule_inputs.read(group());
        return result;
    }

    /// Backpropagates `ptx_coef ·` the LM loss of the PTX batch of minibatch `index` of this step.
    void add_ptx_gradient(std::int64_t index, deferred_statistics& stats) {
        if constexpr (LanguageModelPolicy<P>)  // else `check_config` refused PTX
            if (config_.ptx_coef > 0.0)
                stats.add_ptx(backward_ptx(*policy_, ptx_source_(step_, index),
                                           config_.ptx_coef * (scaler_ ? scaler_->scale() : 1.0), config_.ptx_loss));
    }

    /// ReMax's baseline: the scores of a greedy rollout of the same prompts (no gradient).
    [[nodiscard]] torch::Tensor greedy_scores(const rollout_request& request) {
        constexpr std::string_view fn = "rlhf::ppo::ppo_trainer::make_experience";
        generation_options greedy = request.generation;
        greedy.greedy = true;
        const rollout g = policy_->generate(request.prompts, greedy);
        check_rollout(g, fn);
        const torch::Tensor s = reward_model_->score(g);
        detail::check_model_output(s, g.sequences.size(0), -1, fn, "reward_model.score");
        return s.to(torch::kCPU);
    }

    /// `ema ← β·ema + (1 − β)·θ` (as `torch.lerp(θ, ema, β)`, DeepSpeed-Chat's form).
    void update_ema() {
        if (!config_.ema_beta) return;
        rlhf::ppo::update_ema(ema_, trainable_tensors(policy_->parameters(), config_.trainable_parameters_only),
                              *config_.ema_beta, "rlhf::ppo::ppo_trainer::train");
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
    std::optional<loss_scaler> scaler_;
    lr_scheduler policy_lr_, critic_lr_;
    std::vector<metrics_callback> callbacks_;
    evaluator evaluator_;
    ptx_source ptx_source_;
    std::shared_ptr<distributed::communicator> communicator_;
};

template <class P, class R, class C, class Ref>
ppo_trainer(const config&, const trainer_models<P, R, C, Ref>&, const trainer_optimizers&) -> ppo_trainer<P, C, R, Ref>;

template <class P, class R, class C, class Ref, class K>
ppo_trainer(const config&, const trainer_models<P, R, C, Ref>&, const trainer_optimizers&, K)
    -> ppo_trainer<P, C, R, Ref, K>;

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
