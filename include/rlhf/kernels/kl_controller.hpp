#pragma once
/// @file
/// KL-coefficient controllers (fixed, adaptive, proportional) and the measured KL they consume.
///
/// The frameworks feed their controllers different quantities under the same name "current KL":
/// TRL the batch mean of per-sequence KL *sums*, verl and OpenRLHF the batch mean of
/// per-sequence *token means*. With equal targets the controllers then behave very differently,
/// so here a measured KL carries its unit (`kl_measure`): a controller is configured with the
/// unit it expects and refuses a measurement in any other unit.

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/options/kl_controller.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// A measured KL and its unit: `rlhf::measured_kl{.value = 0.3, .measure = kl_measure::token_mean}`.
struct measured_kl {
    double value = 0.0;
    kl_measure measure = kl_measure::unspecified;
};

namespace detail {
inline void check_measured_kl(std::string_view function, const measured_kl& current, kl_measure expected) {
    // ±inf is a saturated measurement: the update clips its error term, as every framework's does.
    if (std::isnan(current.value))
        fail(error_kind::value, function, "current_kl", "a number (±inf saturates the clipped error)",
             number_string(current.value));
    if (expected != kl_measure::unspecified && current.measure != expected)
        fail(error_kind::config, function, "current_kl",
             "a KL measured as '" + std::string(to_string(expected)) + "' (the controller's measure)",
             "'" + std::string(to_string(current.measure)) + "'");
}

inline void check_named_measure(std::string_view function, kl_measure measure) {
    if (measure != kl_measure::seq_mean_token_sum && measure != kl_measure::seq_mean_token_mean &&
        measure != kl_measure::token_mean)
        fail(error_kind::config, function, "measure",
             "the unit of the measured KL: 'seq-mean-token-sum' (TRL), 'seq-mean-token-mean' (verl, OpenRLHF) or "
             "'token-mean'",
             "'" + std::string(to_string(measure)) + "'");
}
}  // namespace detail

/// Reduces a per-token KL to one number in the unit `measure`.
///
/// Shapes: `kl`, `mask` `[B, T]`, `mask ∈ {0,1}`; `kl` must be finite everywhere. With a
/// reducer the sums are global across ranks. Policies: an empty row counts as a row whose sum
/// and token mean are 0 (verl's `masked_mean` with its `+1e-8` gives the same); no rows at all
/// (B = 0 on every rank), or no valid token for `token_mean`, is an `rlhf::error`.
/// @note seq_mean_token_sum: TRL `trl/trainer/ppo_trainer.py: PPOTrainer.record_step_stats`
///       (v0.11); seq_mean_token_mean: verl `verl/trainer/ppo/ray_trainer.py: apply_kl_penalty`
///       (which divides by `n + 1e-8`, a relative difference of 1e-8/n).
template <class T, class M, Reducer R = local_reducer>
[[nodiscard]] measured_kl measure_kl(view<T> kl, view<M> mask, kl_measure measure, R&& reducer = R{}) {
    constexpr std::string_view fn = "rlhf::measure_kl";
    check_same_shape(fn, "mask", mask, "kl", kl);
    check_finite(fn, "kl", kl);
    check_binary_mask(fn, "mask", mask);
    detail::check_named_measure(fn, measure);
    // sums[0]: the numerator; sums[1]: the denominator (rows, or valid tokens for token_mean).
    std::array<double, 2> sums{0.0, 0.0};
    for (index_t b = 0; b < kl.extent(0); ++b) {
        const T* k = kl.row(b).data();
        const M* m = mask.row(b).data();
        double row_sum = 0.0;
        double row_count = 0.0;
        for (index_t t = 0; t < kl.extent(1); ++t) {
            const bool valid = m[t] != M{0};
            row_sum += valid ? static_cast<double>(k[t]) : 0.0;
            row_count += valid ? 1.0 : 0.0;
        }
        if (measure == kl_measure::token_mean) {
            sums[0] += row_sum;
            sums[1] += row_count;
        } else {
            sums[0] +=
                measure == kl_measure::seq_mean_token_sum ? row_sum : (row_count > 0.0 ? row_sum / row_count : 0.0);
            sums[1] += 1.0;
        }
    }
    reducer.sum_all(std::span<double>(sums));
    if (!(sums[1] > 0.0)) {
        if (measure == kl_measure::token_mean) fail(error_kind::value, fn, "mask", "at least one valid token", "none");
        fail(error_kind::shape, fn, "kl", "at least one row", "[0, " + std::to_string(kl.extent(1)) + "]");
    }
    return {sums[0] / sums[1], measure};
}

/// A KL coefficient that never changes; `update` only validates its arguments.
/// @note verl `kl_ctrl.type: fixed` (its default), TRL `adap_kl_ctrl=False`: `FixedKLController`.
class fixed_kl_controller {
public:
    /// `kl_coef >= 0`, finite.
    explicit fixed_kl_controller(double kl_coef) : value_(kl_coef) {
        check_non_negative("rlhf::fixed_kl_controller", "kl_coef", kl_coef);
    }

    [[nodiscard]] double value() const noexcept { return value_; }

    /// No-op; `current_kl` must be finite (any unit) and `n_steps >= 0`. Returns the coefficient.
    double update(const measured_kl& current_kl, index_t n_steps = 0) const {
        constexpr std::string_view fn = "rlhf::fixed_kl_controller::update";
        detail::check_measured_kl(fn, current_kl, kl_measure::unspecified);
        check_in_range<index_t>(fn, "n_steps", n_steps, 0, std::numeric_limits<index_t>::max());
        return value_;
    }

private:
    double value_;
};

/// Adaptive KL controller (Ziegler et al. 2019):
/// `e = clip(current / target - 1, -error_clip, error_clip)`, `beta <- beta * (1 + e * n_steps / horizon)`.
/// @note TRL `trl/trainer/utils.py: AdaptiveKLController` (caller passes the seq-mean-token-sum KL
///       and `batch_size * num_processes`); verl `verl/trainer/ppo/core_algos.py:
///       AdaptiveKLController` (seq-mean-token-mean KL, local batch size); OpenRLHF
///       `openrlhf/trainer/ppo_utils/kl_controller.py`; ChatLearn (302cdc7e)
///       `examples/megatron/models/policy_trainer.py`.
class adaptive_kl_controller {
public:
    explicit adaptive_kl_controller(const adaptive_kl_options& options) : options_(options) {
        constexpr std::string_view fn = "rlhf::adaptive_kl_controller";
        check_non_negative(fn, "init_kl_coef", options.init_kl_coef);
        check_positive(fn, "target", options.target);
        check_positive(fn, "horizon", options.horizon);
        check_non_negative(fn, "error_clip", options.error_clip);
        detail::check_named_measure(fn, options.measure);
        value_ = options.init_kl_coef;
    }

    [[nodiscard]] double value() const noexcept { return value_; }
    [[nodiscard]] const adaptive_kl_options& options() const noexcept { return options_; }
    [[nodiscard]] kl_measure measure() const noexcept { return options_.measure; }

    /// One update with the KL measured over `n_steps` samples (>= 0). `current_kl` must be finite
    /// and in the controller's unit. Returns the new coefficient.
    double update(const measured_kl& current_kl, index_t n_steps) {
        constexpr std::string_view fn = "rlhf::adaptive_kl_controller::update";
        detail::check_measured_kl(fn, current_kl, options_.measure);
        check_in_range<index_t>(fn, "n_steps", n_steps, 0, std::numeric_limits<index_t>::max());
        const double error =
            std::clamp(current_kl.value / options_.target - 1.0, -options_.error_clip, options_.error_clip);
        const double multiplier = 1.0 + error * static_cast<double>(n_steps) / options_.horizon;
        value_ *= multiplier;
        return value_;
    }

private:
    adaptive_kl_options options_;
    double value_ = 0.0;
};

/// Proportional KL controller without horizon:
/// `alpha <- alpha * (1 + update_rate * clip((current - target) / target, -error_clip, error_clip))`.
/// @note OpenRL `openrl/envs/nlp/rewards/kl_penalty.py: KLPenalty.update_alpha` (called once per
///       rollout with the mean per-step KL: `kl_measure::token_mean`).
class proportional_kl_controller {
public:
    explicit proportional_kl_controller(const proportional_kl_options& options) : options_(options) {
        constexpr std::string_view fn = "rlhf::proportional_kl_controller";
        check_non_negative(fn, "init_kl_coef", options.init_kl_coef);
        check_positive(fn, "target", options.target);
        check_non_negative(fn, "update_rate", options.update_rate);
        check_non_negative(fn, "error_clip", options.error_clip);
        detail::check_named_measure(fn, options.measure);
        value_ = options.init_kl_coef;
    }

    [[nodiscard]] double value() const noexcept { return value_; }
    [[nodiscard]] const proportional_kl_options& options() const noexcept { return options_; }
    [[nodiscard]] kl_measure measure() const noexcept { return options_.measure; }

    /// One update; `current_kl` must be finite and in the controller's unit. `n_steps` (>= 0) is
    /// accepted for a uniform interface and ignored. Returns the new coefficient.
    double update(const measured_kl& current_kl, index_t n_steps = 0) {
        constexpr std::string_view fn = "rlhf::proportional_kl_controller::update";
        detail::check_measured_kl(fn, current_kl, options_.measure);
        check_in_range<index_t>(fn, "n_steps", n_steps, 0, std::numeric_limits<index_t>::max());
        const double error = std::clamp((current_kl.value - options_.target) / options_.target, -options_.error_clip,
                                        options_.error_clip);
        value_ *= 1.0 + options_.update_rate * error;
        return value_;
    }

private:
    proportional_kl_options options_;
    double value_ = 0.0;
};

/// Any of the controllers behind one interface (for a trainer configured at run time).
class kl_controller {
public:
    kl_controller(fixed_kl_controller controller) : impl_(controller) {}         // NOLINT(google-explicit-constructor)
    kl_controller(adaptive_kl_controller controller) : impl_(controller) {}      // NOLINT(google-explicit-constructor)
    kl_controller(proportional_kl_controller controller) : impl_(controller) {}  // NOLINT(google-explicit-constructor)

    // The alternatives copy without throwing, so the variant is never valueless and visit never throws.
    // NOLINTNEXTLINE(bugprone-exception-escape)
    [[nodiscard]] double value() const noexcept {
        return std::visit([](const auto& c) { return c.value(); }, impl_);
    }

    /// Forwards to the held controller's `update`; returns the new coefficient.
    double update(const measured_kl& current_kl, index_t n_steps) {
        return std::visit([&](auto& c) { return c.update(current_kl, n_steps); }, impl_);
    }

    /// The held controller, e.g. `std::get_if<rlhf::adaptive_kl_controller>(&c.get())`.
    [[nodiscard]] const std::variant<fixed_kl_controller, adaptive_kl_controller, proportional_kl_controller>& get()
        const noexcept {
        return impl_;
    }

private:
    std::variant<fixed_kl_controller, adaptive_kl_controller, proportional_kl_controller> impl_;
};

/// The controller `options` describe; `value` (a restored coefficient) replaces its start value.
/// Invalid options throw the controller's `rlhf::error`.
[[nodiscard]] inline kl_controller make_kl_controller(const kl_control_options& options,
                                                      std::optional<double> value = std::nullopt) {
    return std::visit(
        [&](auto o) -> kl_controller {
            using O = std::decay_t<decltype(o)>;
            if constexpr (std::is_same_v<O, fixed_kl_options>) {
                return fixed_kl_controller(value.value_or(o.kl_coef));
            } else {
                if (value) o.init_kl_coef = *value;
                if constexpr (std::is_same_v<O, adaptive_kl_options>)
                    return adaptive_kl_controller(o);
                else
                    return proportional_kl_controller(o);
            }
        },
        options);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
