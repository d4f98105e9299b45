#pragma once
/// @file
/// Typed metrics of one PPO step (`rlhf::ppo::step_metrics`), a visitor over their fields, and
/// two sinks that write them: JSON Lines (`jsonl_sink`) and CSV (`csv_sink`), and the accumulator
/// of a step's training statistics (`train_statistics`). The library never prints; a trainer
/// hands every step's metrics to its callbacks, and a sink is one.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// Wall-clock seconds of each phase of a step.
struct phase_timings {
    double generate = 0.0;    ///< `Policy::generate` (0 when the rollout came from outside)
    double forward = 0.0;     ///< old and reference log-probs, values, scores
    double advantages = 0.0;  ///< score normalisation, reward shaping, advantages, whitening
    double train = 0.0;       ///< PPO epochs: forward, backward, optimizer steps
    double total = 0.0;       ///< the whole step, rollout included
};

/// Metrics of one PPO step. Rollout statistics are over the step's valid response tokens (rows
/// for per-row quantities); training statistics are averaged over the micro-batches of every
/// PPO epoch, weighted by their valid tokens; losses are the mean over optimizer steps of each
/// minibatch's loss (its micro-batch losses summed as they were backpropagated).
struct step_metrics {
    std::int64_t step = 0;              ///< completed steps after this one (1 for the first)
    std::uint64_t generation_seed = 0;  ///< the seed of this step's generation options
    std::int64_t rows = 0;              ///< rollout rows (prompts × samples_per_prompt)
    double response_tokens = 0.0;       ///< valid response tokens of the rollout
    double response_length_mean = 0.0;

    double score_mean = 0.0;   ///< reward-model scores before normalisation and clipping (token RMs: row sums)
    double score_std = 0.0;    ///< their population standard deviation
    double reward_mean = 0.0;  ///< mean over rows of Σ_t of the shaped per-token rewards
    double reward_std = 0.0;   ///< their population standard deviation
    double kl = 0.0;           ///< KL(old policy ‖ reference) of the rollout, in `kl_unit` (0 without a KL term)
    kl_measure kl_unit = kl_measure::seq_mean_token_sum;
    double kl_coef = 0.0;       ///< β used by this step
    double kl_coef_next = 0.0;  ///< β after this step's controller update
    double advantage_mean = 0.0;
    double advantage_std = 0.0;  ///< population, over valid tokens
    double return_mean = 0.0;
    double value_mean = 0.0;  ///< rollout values (0 without a critic)

    double policy_loss = 0.0;   ///< the clipped surrogate
    double value_loss = 0.0;    ///< the value loss (its `coef` included; 0 without a critic)
    double kl_loss = 0.0;       ///< the KL-in-loss term (β included; 0 unless `kl = loss`)
    double entropy_loss = 0.0;  ///< `− entropy_coef · agg(H)` (0 unless `entropy_coef > 0`)
    double ptx_loss = 0.0;      ///< the LM loss of the PTX batches (before `ptx_coef`)
    double entropy = 0.0;       ///< mean token entropy (0 unless the policy is an `EntropyPolicy`)
    double clip_fraction = 0.0;
    double clip_fraction_lower = 0.0;
    double approx_kl = 0.0;  ///< ½·mean((lp − old)²)
    double policy_kl = 0.0;  ///< mean(old − lp)
    double ratio_mean = 0.0;
    double ratio_max = 0.0;
    double value_clip_fraction = 0.0;
    double explained_variance = 0.0;
    double policy_grad_norm = 0.0;  ///< mean over actor steps of the norm before clipping
    double critic_grad_norm = 0.0;  ///< mean over critic steps of the norm before clipping
    double policy_lr = 0.0;         ///< the policy LR of the step's last optimizer step (TRL `ppo/learning_rate`)
    double critic_lr = 0.0;         ///< the critic LR of the step's last critic step (0 without a critic optimizer)

    std::int64_t optimizer_steps = 0;        ///< actor optimizer steps (PTX steps not counted)
    std::int64_t micro_batches = 0;          ///< forward/backward passes
    std::int64_t skipped_micro_batches = 0;  ///< actor backward skipped (`policy_loss.skip_threshold`)
    std::int64_t ratio_threshold_hits = 0;   ///< batches zeroed by `policy_loss.ratio_threshold` (`threshold_scope`)
    std::int64_t epochs_completed = 0;
    bool early_stopped = false;  ///< the PPO epochs ended on `early_stop_kl`
    /// Optimizer steps skipped for a non-finite gradient under `config::loss_scaling`.
    std::int64_t overflow_skipped_steps = 0;

    phase_timings time{};
    std::map<std::string, double> eval{};  ///< what the evaluation hook returned this step (often empty)
};

/// The training statistics of one step, accumulated over its micro-batches (weighted by their
/// valid tokens) and minibatches, written into a `step_metrics` by `write_to`.
class train_statistics {
public:
    /// A micro-batch's policy-loss statistics.
    void add_policy(const policy_loss_stats& s) {
        const double n = s.valid_tokens;
        tokens_ += n;
        clip_ += s.clip_fraction * n;
        lower_ += s.clip_fraction_lower * n;
        approx_ += s.approx_kl * n;
        policy_kl_ += s.policy_kl * n;
        ratio_ += s.ratio_mean * n;
        ratio_max_ = std::max(ratio_max_, s.ratio_max);
    }
    /// A micro-batch's value-loss statistics.
    void add_value(const value_loss_stats& s) {
        value_tokens_ += s.valid_tokens;
        value_clip_ += s.clip_fraction * s.valid_tokens;
        explained_ += s.explained_variance * s.valid_tokens;
    }
    /// A micro-batch's entropy: its sum over `tokens` valid tokens.
    void add_entropy(double sum, double tokens) {
        entropy_ += sum;
        entropy_tokens_ += tokens;
    }
    /// A minibatch's losses (each the sum of its micro-batch losses as backpropagated).
    void add_minibatch(double policy, double value, double kl, double entropy) {
        policy_loss_ += policy;
        value_loss_ += value;
        kl_loss_ += kl;
        entropy_loss_ += entropy;
        ++minibatches_;
    }
    /// A PTX batch's LM loss.
    void add_ptx(double loss) {
        ptx_loss_ += loss;
        ++ptx_batches_;
    }
    /// An actor optimizer step with the gradient norm before clipping.
    void add_policy_step(double grad_norm) {
        policy_norm_ += grad_norm;
        ++policy_steps_;
    }
    /// A critic optimizer step with the gradient norm before clipping.
    void add_critic_step(double grad_norm) {
        critic_norm_ += grad_norm;
        ++critic_steps_;
    }

    /// Makes the statistics those of every rank of `group` (data parallelism): token-weighted sums
    /// and counts are summed, `ratio_max` is the maximum, the losses are averaged over the ranks
    /// (each rank's loss is its share scaled by `dp_size`, so the mean is the whole batch's); the
    /// gradient norms and step counts are the same on every rank already. `Group`: a
    /// `distributed::communicator` (`sum_all`, `max_all` of doubles, `world_size`).
    template <class Group>
    void reduce_across(Group& group) {
        std::array<double*, 16> sums{&tokens_,     &clip_,    &lower_,          &approx_,
                                     &policy_kl_,  &ratio_,   &value_tokens_,   &value_clip_,
                                     &explained_,  &entropy_, &entropy_tokens_, &policy_loss_,
                                     &value_loss_, &kl_loss_, &entropy_loss_,   &ptx_loss_};
        std::array<double, 16> values{};
        for (std::size_t i = 0; i < sums.size(); ++i) values[i] = *sums[i];
        group.sum_all(values);
        for (std::size_t i = 0; i < sums.size(); ++i) *sums[i] = values[i] / (i >= 11 ? group.world_size() : 1);
        std::array<double, 1> ratio_max{ratio_max_};
        group.max_all(ratio_max);
        ratio_max_ = ratio_max[0];
    }

    /// Writes the means (0 where nothing was added) into `m`.
    void write_to(step_metrics& m) const {
        const auto mean = [](double sum, double count) { return count > 0.0 ? sum / count : 0.0; };
        const auto per = [&](double sum, std::int64_t count) { return mean(sum, static_cast<double>(count)); };
        m.clip_fraction = mean(clip_, tokens_);
        m.clip_fraction_lower = mean(lower_, tokens_);
        m.approx_kl = mean(approx_, tokens_);
        m.policy_kl = mean(policy_kl_, tokens_);
        m.ratio_mean = mean(ratio_, tokens_);
        m.ratio_max = ratio_max_;
        m.value_clip_fraction = mean(value_clip_, value_tokens_);
        m.explained_variance = mean(explained_, value_tokens_);
        m.entropy = mean(entropy_, entropy_tokens_);
        m.policy_loss = per(policy_loss_, minibatches_);
        m.value_loss = per(value_loss_, minibatches_);
        m.kl_loss = per(kl_loss_, minibatches_);
        m.entropy_loss = per(entropy_loss_, minibatches_);
        m.ptx_loss = per(ptx_loss_, ptx_batches_);
        m.policy_grad_norm = per(policy_norm_, policy_steps_);
        m.critic_grad_norm = per(critic_norm_, critic_steps_);
        m.optimizer_steps = policy_steps_;
    }

private:
    double tokens_ = 0.0, clip_ = 0.0, lower_ = 0.0, approx_ = 0.0, policy_kl_ = 0.0, ratio_ = 0.0, ratio_max_ = 0.0;
    double value_tokens_ = 0.0, value_clip_ = 0.0, explained_ = 0.0, entropy_ = 0.0, entropy_tokens_ = 0.0;
    double policy_loss_ = 0.0, value_loss_ = 0.0, kl_loss_ = 0.0, entropy_loss_ = 0.0, ptx_loss_ = 0.0;
    double policy_norm_ = 0.0, critic_norm_ = 0.0;
    std::int64_t minibatches_ = 0, ptx_batches_ = 0, policy_steps_ = 0, critic_steps_ = 0;
};

/// Calls `visit(name, value)` for every scalar field of `m`, in a fixed order; `value` is a
/// `double`, a `std::int64_t`, a `std::uint64_t`, a `bool` or (for `kl_unit`) a `std::string_view`.
/// `eval` is not visited (its keys vary from step to step).
template <class Visitor>
void for_each_metric(const step_metrics& m, Visitor&& visit) {
    visit("step", m.step);
    visit("generation_seed", m.generation_seed);
    visit("rows", m.rows);
    visit("response_tokens", m.response_tokens);
    visit("response_length_mean", m.response_length_mean);
    visit("score_mean", m.score_mean);
    visit("score_std", m.score_std);
    visit("reward_mean", m.reward_mean);
    visit("reward_std", m.reward_std);
    visit("kl", m.kl);
    visit("kl_unit", to_string(m.kl_unit));
    visit("kl_coef", m.kl_coef);
    visit("kl_coef_next", m.kl_coef_next);
    visit("advantage_mean", m.advantage_mean);
    visit("advantage_std", m.advantage_std);
    visit("return_mean", m.return_mean);
    visit("value_mean", m.value_mean);
    visit("policy_loss", m.policy_loss);
    visit("value_loss", m.value_loss);
    visit("kl_loss", m.kl_loss);
    visit("entropy_loss", m.entropy_loss);
    visit("ptx_loss", m.ptx_loss);
    visit("entropy", m.entropy);
    visit("clip_fraction", m.clip_fraction);
    visit("clip_fraction_lower", m.clip_fraction_lower);
    visit("approx_kl", m.approx_kl);
    visit("policy_kl", m.policy_kl);
    visit("ratio_mean", m.ratio_mean);
    visit("ratio_max", m.ratio_max);
    visit("value_clip_fraction", m.value_clip_fraction);
    visit("explained_variance", m.explained_variance);
    visit("policy_grad_norm", m.policy_grad_norm);
    visit("critic_grad_norm", m.critic_grad_norm);
    visit("policy_lr", m.policy_lr);
    visit("critic_lr", m.critic_lr);
    visit("optimizer_steps", m.optimizer_steps);
    visit("micro_batches", m.micro_batches);
    visit("skipped_micro_batches", m.skipped_micro_batches);
    visit("ratio_threshold_hits", m.ratio_threshold_hits);
    visit("epochs_completed", m.epochs_completed);
    visit("early_stopped", m.early_stopped);
    visit("overflow_skipped_steps", m.overflow_skipped_steps);
    visit("time_generate", m.time.generate);
    visit("time_forward", m.time.forward);
    visit("time_advantages", m.time.advantages);
    visit("time_train", m.time.train);
    visit("time_total", m.time.total);
}

namespace detail {

/// A metric value as JSON text: numbers round-trip, non-finite doubles are `null`.
template <class V>
[[nodiscard]] std::string json_value(const V& value) {
    if constexpr (std::is_same_v<V, bool>) {
        return value ? "true" : "false";
    } else if constexpr (std::is_convertible_v<V, std::string_view>) {
        std::string out = "\"";
        for (const char c : std::string_view(value)) {
            if (c == '"' || c == '\\') out.push_back('\\');
            out.push_back(c);
        }
        return out + "\"";
    } else if constexpr (std::is_floating_point_v<V>) {
        return std::isfinite(value) ? number_string(value) : std::string("null");
    } else {
        return number_string(value);
    }
}

/// A metric value as a CSV field (non-finite doubles as `nan`, `inf`, `-inf`).
template <class V>
[[nodiscard]] std::string csv_value(const V& value) {
    if constexpr (std::is_same_v<V, bool>)
        return value ? "1" : "0";
    else if constexpr (std::is_convertible_v<V, std::string_view>)
        return std::string(std::string_view(value));
    else
        return number_string(value);
}

[[nodiscard]] inline std::shared_ptr<std::ofstream> open_sink(const std::filesystem::path& path, bool append,
                                                              std::string_view function) {
    auto stream = std::make_shared<std::ofstream>(path, append ? std::ios::app : std::ios::trunc);
    if (!*stream) fail(error_kind::state, function, "path", "a writable file", path.string());
    return stream;
}

}  // namespace detail

/// Writes one JSON object per step and line: every field of `for_each_metric`, then
/// `"eval": {...}` when the step has evaluation results. Non-finite values are `null`. Each
/// line is flushed. Copyable (copies share the file), so it can be a trainer callback.
/// Errors: a file that cannot be opened → `rlhf::error` (kind state, argument `path`).
class jsonl_sink {
public:
    explicit jsonl_sink(const std::filesystem::path& path, bool append = false)
        : out_(detail::open_sink(path, append, "rlhf::ppo::jsonl_sink")) {}

    void operator()(const step_metrics& m) const {
        std::string line = "{";
        bool first = true;
        for_each_metric(m, [&](std::string_view name, const auto& value) {
            if (!first) line += ",";
            first = false;
            line += detail::json_value(name) + ":" + detail::json_value(value);
        });
        if (!m.eval.empty()) {
            line += ",\"eval\":{";
            bool first_eval = true;
            for (const auto& [name, value] : m.eval) {
                if (!first_eval) line += ",";
                first_eval = false;
                line += detail::json_value(name) + ":" + detail::json_value(value);
            }
            line += "}";
        }
        line += "}\n";
        *out_ << line;
        out_->flush();
    }

private:
    std::shared_ptr<std::ofstream> out_;
};

/// Writes one CSV row per step: a header of the `for_each_metric` names before the first row
/// (unless appending to a non-empty file), then the values in the same order. `eval` results
/// are not written (their keys vary; use the JSONL sink). Flushed per row; copyable.
/// Errors: a file that cannot be opened → `rlhf::error` (kind state, argument `path`).
class csv_sink {
public:
    explicit csv_sink(const std::filesystem::path& path, bool append = false)
        : out_(detail::open_sink(path, append, "rlhf::ppo::csv_sink")),
          header_written_(std::make_shared<bool>(append && std::filesystem::exists(path) &&
                                                 std::filesystem::file_size(path) > 0)) {}

    void operator()(const step_metrics& m) const {
        std::string header;
        std::string row;
        bool first = true;
        for_each_metric(m, [&](std::string_view name, const auto& value) {
            if (!first) {
                header += ",";
                row += ",";
            }
            first = false;
            header += name;
            row += detail::csv_value(value);
        });
        if (!*header_written_) {
            *out_ << header << "\n";
            *header_written_ = true;
        }
        *out_ << row << "\n";
        out_->flush();
    }

private:
    std::shared_ptr<std::ofstream> out_;
    std::shared_ptr<bool> header_written_;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
