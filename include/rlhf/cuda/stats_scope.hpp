#pragma once
/// @file
/// What one scope of masked statistics yields, from its sums: the moments and the whitening map
/// of `rlhf::masked_whiten` under the policies `zero_variance` and `skip`. Plain C++ (no CUDA):
/// host-device under nvcc, where `rlhf/cuda/masked_stats.cuh` finishes its reductions with it; the
/// CPU tests check it against `rlhf::compute_masked_moments` and `rlhf::masked_whiten`.

#include <cmath>

#include "rlhf/core/options.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/vector_math.hpp"  // RLHF_DETAIL_FORCE_INLINE
#include "rlhf/options/masked_stats.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::detail::stats_scope {

/// Mean of a scope: `sum / (count + count_epsilon)`, 0 when that is 0 (`scope_moments`).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double mean(double count, double sum, double count_epsilon) noexcept {
    return stats::mean_of(count, sum, count_epsilon);
}

/// Variance of a scope from `ssd = Σ (x − mean)²·m`: 0 when the count is below what the estimator
/// needs (1 biased, 2 unbiased), else `ssd / (count + count_epsilon)` (times `count/(count−1)`
/// unbiased), as `scope_moments` under `zero_variance`.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double variance(double count, double ssd, double count_epsilon,
                                                       variance_estimator estimator) noexcept {
    return count < static_cast<double>(stats::needed(true, estimator))
               ? 0.0
               : stats::variance_of(count, ssd, count_epsilon, estimator);
}

/// A scope's whitening: `copy` its values unchanged (policy `skip` with too few valid elements),
/// else `out = (x − mean)·scale + offset`.
struct whitening {
    bool copy;
    double mean, scale, offset;
};

/// The whitening of a scope with `count` valid elements, `mean` and `variance` (from `mean` and
/// `variance` above): `scale = 1/sqrt(variance + ε)` or `1/sqrt(max(variance, ε))` (1 without
/// `scale`), `offset = mean` unless `shift_mean`; `whiten_scope_rows` of `masked_stats.hpp`.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE whitening whitening_of(double count, double mean_value, double variance_value,
                                                              const whiten_options& options) noexcept {
    if (options.small_sample == small_sample_policy::skip &&
        count < static_cast<double>(stats::needed(options.scale, options.variance)))
        return {true, 0.0, 1.0, 0.0};
    double scale = 1.0;
    if (options.scale) {
        const double guarded = options.epsilon_mode == whiten_epsilon::add_to_variance
                                   ? variance_value + options.epsilon
                                   : (variance_value > options.epsilon ? variance_value : options.epsilon);
        scale = 1.0 / std::sqrt(guarded);
    }
    return {false, mean_value, scale, options.shift_mean ? 0.0 : mean_value};
}

/// One output element: `x` whitened, or copied; 0 at a masked position under `zero_masked`.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double whitened(const whitening& w, bool valid, double x,
                                                       bool zero_masked) noexcept {
    if (zero_masked && !valid) return 0.0;
    return w.copy ? x : (x - w.mean) * w.scale + w.offset;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::detail::stats_scope
