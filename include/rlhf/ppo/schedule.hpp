#pragma once
/// @file
/// Learning-rate schedules of the PPO trainer's optimizers: warm-up, then constant, linear or
/// cosine decay to a minimum, stepped once per optimizer step (`config::lr_schedule`,
/// `config::critic_lr_schedule`), or a user's `lr_lambda` (`ppo_trainer::set_lr_lambda`). A
/// schedule is a pure function of the optimizer-step count, so a checkpoint keeps its position by
/// keeping that count.
/// @note transformers `get_scheduler` (`constant_with_warmup`, `linear`, `cosine`,
/// `cosine_with_min_lr`), used by TRL; OpenRLHF `--lr_scheduler cosine_with_min_lr`,
/// `--lr_warmup_ratio` (min LR 0.1·lr); verl `optim.warmup_style`, `lr_warmup_steps`,
/// `lr_warmup_steps_ratio`, `min_lr_ratio`, `num_cycles`
/// (`verl/utils/torch_functional.py: get_cosine_schedule_with_warmup`).

#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numbers>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/ppo/optimization.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The decay after the warm-up.
enum class lr_scheduler_type {
    constant,  ///< transformers `constant_with_warmup`, verl `warmup_style: constant`
    linear,    ///< transformers `linear`: from 1 to `min_lr_ratio` over the decay steps
    cosine,    ///< transformers `cosine` / `cosine_with_min_lr`, OpenRLHF, verl `warmup_style: cosine`
};

RLHF_OPTION_NAMES(lr_scheduler_type, {lr_scheduler_type::constant, "constant"}, {lr_scheduler_type::linear, "linear"},
                  {lr_scheduler_type::cosine, "cosine"}, {lr_scheduler_type::constant, "constant_with_warmup"},
                  {lr_scheduler_type::cosine, "cosine_with_min_lr"})

/// A learning-rate schedule: the LR of optimizer step `k` (counted from 0) is
/// `base_lr · lr_factor(options, k)`, `base_lr` being the optimizer's LR when the trainer was built.
struct lr_schedule_options {
    lr_scheduler_type type = lr_scheduler_type::constant;  ///< transformers `lr_scheduler_type`
    std::int64_t warmup_steps = 0;                         ///< transformers `warmup_steps`, verl `lr_warmup_steps`
    /// When set, the warm-up is `ceil(warmup_ratio · total_steps)` steps (transformers
    /// `warmup_ratio`, OpenRLHF `lr_warmup_ratio`; verl's `lr_warmup_steps_ratio` truncates).
    std::optional<double> warmup_ratio{};
    /// Optimizer steps of the whole run (transformers `num_training_steps`, verl
    /// `total_training_steps`): needed by `linear`, `cosine` and `warmup_ratio`.
    std::int64_t total_steps = 0;
    /// The LR at the end of the decay, as a fraction of the base LR (verl `min_lr_ratio`;
    /// OpenRLHF: 0.1; transformers `linear` / `cosine`: 0).
    double min_lr_ratio = 0.0;
    double num_cycles = 0.5;  ///< cosine waves over the decay (transformers, verl: 0.5)
};

/// The user form of a schedule (torch `LambdaLR`): the factor on the base LR of optimizer step `k`.
using lr_lambda = std::function<double(std::int64_t step)>;

/// The warm-up steps of `o`: `ceil(warmup_ratio · total_steps)` when the ratio is set, else `warmup_steps`.
[[nodiscard]] inline std::int64_t warmup_steps_of(const lr_schedule_options& o) {
    if (o.warmup_ratio)
        return static_cast<std::int64_t>(std::ceil(*o.warmup_ratio * static_cast<double>(o.total_steps)));
    return o.warmup_steps;
}

/// The factor on the base LR of optimizer step `step` (counted from 0): `step / warmup` during the
/// warm-up, then `min + (1 − min)·d(p)` with `p = (step − warmup) / (total − warmup)` capped at 1,
/// `d = 1` (constant), `1 − p` (linear) or `½(1 + cos(2π·num_cycles·p))` (cosine). After
/// `total_steps` the LR stays at its final value.
[[nodiscard]] inline double lr_factor(const lr_schedule_options& o, std::int64_t step) {
    const std::int64_t warmup = warmup_steps_of(o);
    if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
    if (o.type == lr_scheduler_type::constant) return 1.0;
    const double progress = std::min(1.0, static_cast<double>(step - warmup) /
                                              static_cast<double>(std::max<std::int64_t>(1, o.total_steps - warmup)));
    const double decay = o.type == lr_scheduler_type::linear
                             ? 1.0 - progress
                             : 0.5 * (1.0 + std::cos(2.0 * std::numbers::pi * o.num_cycles * progress));
    return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * decay;
}

/// Checks a schedule; errors (`rlhf::error`, kind config, function `rlhf::ppo::check_config`) name
/// `field` + the option: a negative `warmup_steps` or `total_steps`, a `warmup_ratio` outside [0, 1],
/// `min_lr_ratio` outside [0, 1], `num_cycles` ≤ 0, no `total_steps` for a decay or a warm-up ratio,
/// a warm-up longer than `total_steps`.
inline void check_lr_schedule(const lr_schedule_options& o, std::string_view field) {
    constexpr std::string_view fn = "rlhf::ppo::check_config";
    const auto name = [&](std::string_view option) { return std::string(field) + "." + std::string(option); };
    if (o.type != lr_scheduler_type::constant && o.type != lr_scheduler_type::linear &&
        o.type != lr_scheduler_type::cosine)
        fail(error_kind::config, fn, name("type"), "one of constant, linear, cosine", "an unknown value");
    check_non_negative(fn, name("warmup_steps"), o.warmup_steps);
    check_non_negative(fn, name("total_steps"), o.total_steps);
    if (o.warmup_ratio) check_in_range(fn, name("warmup_ratio"), *o.warmup_ratio, 0.0, 1.0);
    check_in_range(fn, name("min_lr_ratio"), o.min_lr_ratio, 0.0, 1.0);
    check_positive(fn, name("num_cycles"), o.num_cycles);
    if ((o.type != lr_scheduler_type::constant || o.warmup_ratio) && o.total_steps == 0)
        fail(error_kind::config, fn, name("total_steps"),
             "> 0: the decay (or the warm-up ratio) is a fraction of the run's optimizer steps", "0");
    if (o.total_steps > 0 && warmup_steps_of(o) > o.total_steps)
        fail(error_kind::config, fn, name("warmup_steps"), "at most total_steps (" + number_string(o.total_steps) + ")",
             number_string(warmup_steps_of(o)));
}

/// The schedule of one optimizer: the base LR of each parameter group (read when it is built),
/// the count of optimizer steps taken, and the rule (a `lr_schedule_options`, a `lr_lambda`, or
/// none: the LR is left alone).
class lr_scheduler {
public:
    lr_scheduler() = default;
    lr_scheduler(torch::optim::Optimizer* optimizer, std::optional<lr_schedule_options> options)
        : optimizer_(optimizer), options_(std::move(options)) {
        if (optimizer_ != nullptr)
            for (auto& group : optimizer_->param_groups()) base_.push_back(group.options().get_lr());
    }

    /// Replaces the rule by `factor` (an empty function restores the options' rule).
    void set_lambda(lr_lambda factor) { lambda_ = std::move(factor); }

    /// One step of the optimizer: clips the gradients of `params` to `max_norm` (`clip_gradients`),
    /// sets every group's LR to `base · factor(steps())`, steps, counts the step; returns the
    /// gradient norm before clipping.
    torch::Tensor clip_and_step(const std::vector<torch::Tensor>& params, std::optional<double> max_norm) {
        torch::Tensor norm = clip_gradients(params, max_norm);
        if (lambda_ || options_) {
            const double factor = lambda_ ? lambda_(steps_) : lr_factor(*options_, steps_);
            auto& groups = optimizer_->param_groups();
            for (std::size_t i = 0; i < groups.size() && i < base_.size(); ++i)
                groups[i].options().set_lr(base_[i] * factor);
        }
        optimizer_->step();
        ++steps_;
        return norm;
    }

    /// The first parameter group's LR (0 without an optimizer).
    [[nodiscard]] double last_lr() const {
        if (optimizer_ == nullptr || optimizer_->param_groups().empty()) return 0.0;
        return optimizer_->param_groups().front().options().get_lr();
    }
    [[nodiscard]] std::int64_t steps() const noexcept { return steps_; }
    /// Restores the position of a checkpoint (`steps()` when it was saved).
    void set_steps(std::int64_t steps) noexcept { steps_ = steps; }

private:
    torch::optim::Optimizer* optimizer_ = nullptr;
    std::optional<lr_schedule_options> options_{};
    lr_lambda lambda_{};
    std::vector<double> base_{};
    std::int64_t steps_ = 0;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
