#pragma once
// The statistics of `rlhf::policy_loss` and `rlhf::value_loss` as flat vectors of doubles, in the
// declaration order of their fields (`for_each_field` of rlhf/libtorch/loss_support.hpp, the
// layout of the CUDA `result` arrays after the loss; flags as 0 or 1), with their names. Shared by
// the loss fuzzer and the CUDA loss tests; CPU-only.

#include <vector>

#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"

namespace rlhf_test {

inline std::vector<double> stat_values(const rlhf::policy_loss_stats& s) {
    return {s.clip_fraction,
            s.clip_fraction_lower,
            s.approx_kl,
            s.policy_kl,
            s.policy_kl_clamped,
            s.ratio_mean,
            s.ratio_max,
            s.ratio_mean_all_positions,
            s.valid_tokens,
            s.ratio_threshold_exceeded ? 1.0 : 0.0,
            s.skip_threshold_exceeded ? 1.0 : 0.0};
}
inline constexpr const char* policy_stat_names[] = {"clip_fraction",
                                                    "clip_fraction_lower",
                                                    "approx_kl",
                                                    "policy_kl",
                                                    "policy_kl_clamped",
                                                    "ratio_mean",
                                                    "ratio_max",
                                                    "ratio_mean_all_positions",
                                                    "valid_tokens",
                                                    "ratio_threshold_exceeded",
                                                    "skip_threshold_exceeded"};

inline std::vector<double> stat_values(const rlhf::value_loss_stats& s) {
    return {s.clip_fraction,      s.value_mean,   s.value_error,   s.return_mean,
            s.explained_variance, s.valid_tokens, s.clipped_tokens};
}
inline constexpr const char* value_stat_names[] = {"clip_fraction",      "value_mean",   "value_error",   "return_mean",
                                                   "explained_variance", "valid_tokens", "clipped_tokens"};

/// A loss result `r` (`policy_loss_result`, `value_loss_result`) as [loss, statistics...].
template <class Result>
std::vector<double> loss_and_stat_values(const Result& r) {
    std::vector<double> out{r.loss};
    const std::vector<double> stats = stat_values(r.stats);
    out.insert(out.end(), stats.begin(), stats.end());
    return out;
}

}  // namespace rlhf_test
