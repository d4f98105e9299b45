#pragma once
/// @file
/// Typed metrics of one PPO step (`rlhf::ppo::step_metrics`), a visitor over their fields, and
/// two sinks that write them: JSON Lines (`jsonl_sink`) and CSV (`csv_sink`). The library never
/// prints; a trainer hands every step's metrics to its callbacks, and a sink is one.

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

namespace rlhf::ppo {

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

    std::int64_t optimizer_steps = 0;        ///< actor optimizer steps (PTX steps not counted)
    std::int64_t micro_batches = 0;          ///< forward/backward passes
    std::int64_t skipped_micro_batches = 0;  ///< actor backward skipped (`policy_loss.skip_threshold`)
    std::int64_t ratio_threshold_hits = 0;   ///< micro-batches zeroed by `policy_loss.ratio_threshold`
    std::int64_t epochs_completed = 0;
    bool early_stopped = false;  ///< the PPO epochs ended on `early_stop_kl`

    phase_timings time{};
    std::map<std::string, double> eval{};  ///< what the evaluation hook returned this step (often empty)
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
    visit("optimizer_steps", m.optimizer_steps);
    visit("micro_batches", m.micro_batches);
    visit("skipped_micro_batches", m.skipped_micro_batches);
    visit("ratio_threshold_hits", m.ratio_threshold_hits);
    visit("epochs_completed", m.epochs_completed);
    visit("early_stopped", m.early_stopped);
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

}  // namespace rlhf::ppo
