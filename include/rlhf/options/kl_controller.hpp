#pragma once
/// @file
/// Options of the KL controllers (kernels/kl_controller.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include <variant>

#include "rlhf/core/options.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// How a batch's per-token KL `kl[B, T]` (with its mask) was reduced to one number.
enum class kl_measure {
    unspecified,          ///< not named; controllers refuse it (the unit must be explicit)
    seq_mean_token_sum,   ///< mean over rows of sum_t kl*m: TRL (v0.11) `objective/kl`
    seq_mean_token_mean,  ///< mean over rows of sum_t kl*m / sum_t m: verl `apply_kl_penalty`, OpenRLHF `kl`
    token_mean,           ///< sum kl*m / sum m over the batch: OpenRL's mean per-step KL
};

RLHF_OPTION_NAMES(kl_measure, {kl_measure::unspecified, "unspecified"},
                  {kl_measure::seq_mean_token_sum, "seq-mean-token-sum"},
                  {kl_measure::seq_mean_token_mean, "seq-mean-token-mean"}, {kl_measure::token_mean, "token-mean"})

/// Options of the adaptive (Ziegler et al.) controller; defaults are TRL's (0.2 / 6 / 10000).
struct adaptive_kl_options {
    double init_kl_coef = 0.2;  ///< initial coefficient, >= 0
    double target = 6.0;        ///< target KL in the unit `measure`, > 0
    double horizon = 10000.0;   ///< > 0
    /// The unit of the KL passed to `update`; must be named (no default).
    kl_measure measure = kl_measure::unspecified;
    double error_clip = 0.2;  ///< the proportional error is clipped to +-error_clip (0.2 in every peer), >= 0
};

/// Options of the proportional (RL4LMs / OpenRL) controller; defaults are OpenRL's.
struct proportional_kl_options {
    double init_kl_coef = 0.2;  ///< initial alpha, >= 0
    double target = 0.05;       ///< target KL in the unit `measure`, > 0
    double update_rate = 0.1;   ///< >= 0
    double error_clip = 0.2;    ///< clip of the relative error, >= 0
    /// The unit of the KL passed to `update`; must be named (no default).
    kl_measure measure = kl_measure::unspecified;
};

/// A KL coefficient that never changes (`rlhf::fixed_kl_controller`).
struct fixed_kl_options {
    double kl_coef = 0.1;  ///< β >= 0
};

/// Which controller sets β, with its options: a constant, Ziegler et al.'s adaptive rule, or
/// OpenRL's proportional rule. The adaptive and proportional controllers name the unit of the KL
/// they are fed (`measure`).
using kl_control_options = std::variant<fixed_kl_options, adaptive_kl_options, proportional_kl_options>;

/// The coefficient a controller starts with.
[[nodiscard]] inline double initial_kl_coef(const kl_control_options& options) {
    return std::visit(
        [](const auto& o) {
            if constexpr (requires { o.kl_coef; })
                return o.kl_coef;
            else
                return o.init_kl_coef;
        },
        options);
}

/// The unit of the KL the controller consumes; a fixed controller takes any (`fallback`).
[[nodiscard]] inline kl_measure controller_measure(const kl_control_options& options, kl_measure fallback) {
    if (const auto* a = std::get_if<adaptive_kl_options>(&options)) return a->measure;
    if (const auto* p = std::get_if<proportional_kl_options>(&options)) return p->measure;
    return fallback;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
