#pragma once
/// @file
/// Masked statistics over `[B, T]` values: count, sum, mean, variance, whitening, and TRL's
/// running moments.
///
/// A position is valid where `mask != 0` (`mask ∈ {0,1}`, checked). Statistics are taken per row
/// or over the whole batch (`whiten_scope`); batch statistics go through a `Reducer`, so they are
/// global across data-parallel ranks when the reducer all-reduces (`rlhf/distributed/`).
///
/// Numerics: counts, sums and squared deviations are accumulated in double for float and double
/// values. The variance is two-pass: one reduction of `{count, sum}` gives the (global) mean, a
/// second reduction of `Σ (x - mean)² m` the variance. This costs one more all-reduce of one
/// double than the `{count, sum, sum of squares}` form, which cancels catastrophically when
/// `|mean| >> std` (TRL `get_global_statistics` makes the same choice).
///
/// Edge cases, one policy each, chosen by `small_sample_policy` (default `raise`):
///   - no valid element in a scope (all-zero mask, empty row under `per_row`): `raise` throws
///     `rlhf::error` (kind `value`, argument `mask`); otherwise the missing mean is 0;
///   - one valid element under the unbiased estimator: `raise` throws (verl raises, TRL returns
///     NaN/inf); otherwise the missing variance is 0;
///   - `skip` in whitening copies the scope's values to the output unchanged; for the plain
///     statistics (which have no input to return) it behaves as `zero_variance`.
/// Non-finite values are rejected at every position, masked ones included (kind `value`,
/// argument `values`): masked garbage is an upstream bug, and TRL's `x·m` would turn it into NaN.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/vector_math.hpp"
#include "rlhf/options/masked_stats.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Statistics of the valid elements of a scope (global when a reducer all-reduces).
struct masked_moments {
    double count = 0.0;     ///< Σ m
    double sum = 0.0;       ///< Σ x·m
    double mean = 0.0;      ///< sum / (count + count_epsilon); 0 when count is 0 and the policy allows
    double variance = 0.0;  ///< Σ (x - mean)² m / (count + count_epsilon), times count/(count-1) if unbiased
};

namespace detail::stats {

/// The mask of a `[B, T]` view, row by row.
template <class M>
struct view_mask {
    view<M> mask;
    struct row_type {
        const M* data;
        [[nodiscard]] bool operator[](index_t t) const noexcept { return data[t] != M{0}; }
    };
    [[nodiscard]] row_type row(index_t b) const noexcept { return {mask.row(b).data()}; }
    static constexpr std::string_view argument = "mask";  ///< named by the small-sample error
};

/// No mask: every position valid (TRL `whiten`, ChatLearn's old PPO `whiten`).
struct no_mask {
    struct row_type {
        [[nodiscard]] constexpr bool operator[](index_t /*t*/) const noexcept { return true; }
    };
    [[nodiscard]] constexpr row_type row(index_t /*b*/) const noexcept { return {}; }
    static constexpr std::string_view argument = "values";
};

/// Adds the count and the sum of the valid elements of one row, in `lanes` partial sums (SIMD
/// code: one running sum is a dependency chain; `bit_select`, as a conditional expression would
/// become a branch).
template <class T, class MaskRow>
inline void add_count_sum(const T* x, MaskRow m, index_t n, double& count, double& sum) noexcept {
    constexpr auto width = static_cast<index_t>(lanes);
    // Two loops of one accumulator each: the compiler vectorises those, not one loop of two.
    double c[lanes] = {};
    index_t t = 0;
    for (; t + width <= n; t += width)
        for (index_t j = 0; j < width; ++j) c[j] += m[t + j] ? 1.0 : 0.0;
    for (index_t j = 0; t < n; ++t, ++j) c[j] += m[t] ? 1.0 : 0.0;
    double s[lanes] = {};
    t = 0;
    for (; t + width <= n; t += width)
        for (index_t j = 0; j < width; ++j) s[j] += bit_select(m[t + j], static_cast<double>(x[t + j]), 0.0);
    for (index_t j = 0; t < n; ++t, ++j) s[j] += bit_select(m[t], static_cast<double>(x[t]), 0.0);
    for (std::size_t j = 0; j < lanes; ++j) {
        count += c[j];
        sum += s[j];
    }
}

/// Adds Σ (x - mean)² over the valid elements of one row, in `lanes` partial sums.
template <class T, class MaskRow>
inline void add_squared_deviations(const T* x, MaskRow m, index_t n, double mean, double& ssd) noexcept {
    constexpr auto width = static_cast<index_t>(lanes);
    double a[lanes] = {};
    index_t t = 0;
    for (; t + width <= n; t += width) {
        for (index_t j = 0; j < width; ++j) {
            const double d = static_cast<double>(x[t + j]) - mean;
            a[j] += bit_select(m[t + j], d * d, 0.0);
        }
    }
    for (index_t j = 0; t < n; ++t, ++j) {
        const double d = static_cast<double>(x[t]) - mean;
        a[j] += bit_select(m[t], d * d, 0.0);
    }
    for (const double v : a) ssd += v;
}

/// "in row 3" for per-row scopes, "" for the batch.
inline std::string where(index_t row) {
    return row < 0 ? std::string() : " in row " + std::to_string(row);
}

/// Throws the small-sample error: `needed` valid elements were required, `count` were there.
/// `argument` is `mask` for the masked functions and `values` for the unmasked ones.
[[noreturn]] inline void fail_small_sample(std::string_view function, std::string_view argument, double count,
                                           int needed, index_t row) {
    const auto n = static_cast<long long>(count);
    const bool masked = argument == "mask";
    std::string expected = needed == 1
                               ? (masked ? "at least 1 valid element (mask entry 1)" : "at least 1 element")
                               : (masked ? "at least 2 valid elements (mask entries 1)" : "at least 2 elements");
    if (needed == 2) expected += " for an unbiased variance";
    fail(error_kind::value, function, argument, expected,
         std::to_string(n) +
             (masked ? (n == 1 ? " valid element" : " valid elements") : (n == 1 ? " element" : " elements")) +
             where(row));
}

/// Valid elements a statistic needs: 1 for a mean or a biased variance, 2 for an unbiased one.
[[nodiscard]] constexpr int needed(bool need_variance, variance_estimator estimator) noexcept {
    return need_variance && estimator == variance_estimator::unbiased ? 2 : 1;
}

/// Finishes a mean (host-device under nvcc: `rlhf/cuda/masked_stats.cuh` finishes with it too).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double mean_of(double count, double sum, double count_epsilon) noexcept {
    const double denominator = count + count_epsilon;
    return denominator > 0.0 ? sum / denominator : 0.0;
}

/// Finishes a variance from the squared deviations (TRL's order: mean of c², then Bessel;
/// host-device under nvcc).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double variance_of(double count, double ssd, double count_epsilon,
                                                          variance_estimator estimator) noexcept {
    const double denominator = count + count_epsilon;
    double variance = denominator > 0.0 ? ssd / denominator : 0.0;
    if (estimator == variance_estimator::unbiased) variance = count > 1.0 ? variance * (count / (count - 1.0)) : 0.0;
    return variance;
}

/// Moments of one scope, the rows [row_begin, row_end), with the small-sample policy applied.
/// `row` is the row index of a per-row scope (named in errors), or -1 for the batch, whose sums
/// go through `reducer` (two reductions when the variance is needed, one otherwise).
template <class T, class Mask, class R>
[[nodiscard]] masked_moments scope_moments(std::string_view function, view<T> values, const Mask& mask,
                                           index_t row_begin, index_t row_end, bool need_variance,
                                           const moments_options& options, R& reducer, index_t row) {
    const index_t cols = values.extent(1);
    std::array<double, 2> count_sum{0.0, 0.0};
    for (index_t b = row_begin; b < row_end; ++b)
        add_count_sum(values.row(b).data(), mask.row(b), cols, count_sum[0], count_sum[1]);
    if (row < 0) reducer.sum_all(count_sum);
    masked_moments m{.count = count_sum[0], .sum = count_sum[1]};
    const int required = needed(need_variance, options.variance);
    if (m.count < static_cast<double>(required)) {
        if (options.small_sample == small_sample_policy::raise)
            fail_small_sample(function, Mask::argument, m.count, required, row);
        m.mean = mean_of(m.count, m.sum, options.count_epsilon);  // 0 when empty; the single value otherwise
        m.variance = 0.0;
        return m;
    }
    m.mean = mean_of(m.count, m.sum, options.count_epsilon);
    if (!need_variance) return m;
    std::array<double, 1> ssd{0.0};
    for (index_t b = row_begin; b < row_end; ++b)
        add_squared_deviations(values.row(b).data(), mask.row(b), cols, m.mean, ssd[0]);
    if (row < 0) reducer.sum_all(ssd);
    m.variance = variance_of(m.count, ssd[0], options.count_epsilon, options.variance);
    return m;
}

/// Validates the options shared by the statistics.
inline void check_moments_options(std::string_view function, const moments_options& options) {
    check_non_negative(function, "count_epsilon", options.count_epsilon);
    switch (options.small_sample) {
        case small_sample_policy::raise:
        case small_sample_policy::skip:
        case small_sample_policy::zero_variance:
            break;
        default:
            fail(error_kind::config, function, "small_sample", "one of 'raise' 'skip' 'zero_variance'",
                 "an unknown value");
    }
    switch (options.variance) {
        case variance_estimator::unbiased:
        case variance_estimator::biased:
            break;
        default:
            fail(error_kind::config, function, "variance", "one of 'unbiased' 'biased'", "an unknown value");
    }
}

inline void check_whiten_options(std::string_view function, const whiten_options& options) {
    check_moments_options(function, {options.variance, options.small_sample, options.count_epsilon});
    check_positive(function, "epsilon", options.epsilon);
    switch (options.scope) {
        case whiten_scope::per_row:
        case whiten_scope::per_batch:
            break;
        default:
            fail(error_kind::config, function, "scope", "one of 'per_row' 'per_batch'", "an unknown value");
    }
    switch (options.epsilon_mode) {
        case whiten_epsilon::add_to_variance:
        case whiten_epsilon::clamp_variance:
            break;
        default:
            fail(error_kind::config, function, "epsilon_mode", "one of 'add_to_variance' 'clamp_variance'",
                 "an unknown value");
    }
}

/// Writes one whitened row: `(x - mean) * scale + offset`, or 0 at masked positions if asked.
template <class T, class MaskRow>
inline void write_row(const T* x, MaskRow m, T* y, index_t n, double mean, double scale, double offset,
                      bool zero_masked) noexcept {
    if (zero_masked) {
        for (index_t t = 0; t < n; ++t) {
            const double w = (static_cast<double>(x[t]) - mean) * scale + offset;
            y[t] = static_cast<T>(m[t] ? w : 0.0);
        }
    } else {
        for (index_t t = 0; t < n; ++t) y[t] = static_cast<T>((static_cast<double>(x[t]) - mean) * scale + offset);
    }
}

/// Copies one row unchanged (policy `skip`), or 0 at masked positions if asked.
template <class T, class MaskRow>
inline void copy_row(const T* x, MaskRow m, T* y, index_t n, bool zero_masked) noexcept {
    if (zero_masked) {
        for (index_t t = 0; t < n; ++t) y[t] = m[t] ? x[t] : T{0};
    } else if (x != y) {
        for (index_t t = 0; t < n; ++t) y[t] = x[t];
    }
}

/// Whitens the rows [row_begin, row_end) with one set of statistics (`row` as in scope_moments).
template <class T, class Mask, class R>
void whiten_scope_rows(std::string_view function, view<T> values, const Mask& mask, mut_view<T> out, index_t row_begin,
                       index_t row_end, const whiten_options& options, R& reducer, index_t row) {
    const index_t cols = values.extent(1);
    const bool need_variance = options.scale;  // centring alone needs one valid element
    // `skip` must know whether the statistics exist: compute them leniently, then decide.
    // Set after the initialisation: GCC 12 -O2 (tree-vrp) dropped `skip` when the policy was chosen
    // by a conditional inside the braced initialiser, so `skip` never copied a small scope.
    const small_sample_policy policy = options.small_sample;
    const bool skip = policy == small_sample_policy::skip;
    moments_options moments{options.variance, policy, options.count_epsilon};
    if (skip) moments.small_sample = small_sample_policy::zero_variance;
    const masked_moments m =
        scope_moments(function, values, mask, row_begin, row_end, need_variance, moments, reducer, row);
    if (skip && m.count < static_cast<double>(needed(need_variance, options.variance))) {
        for (index_t b = row_begin; b < row_end; ++b)
            copy_row(values.row(b).data(), mask.row(b), out.row(b).data(), cols, options.zero_masked);
        return;
    }
    double scale = 1.0;
    if (need_variance) {
        const double guarded = options.epsilon_mode == whiten_epsilon::add_to_variance
                                   ? m.variance + options.epsilon
                                   : std::max(m.variance, options.epsilon);
        scale = 1.0 / std::sqrt(guarded);
    }
    const double offset = options.shift_mean ? 0.0 : m.mean;
    for (index_t b = row_begin; b < row_end; ++b)
        write_row(values.row(b).data(), mask.row(b), out.row(b).data(), cols, m.mean, scale, offset,
                  options.zero_masked);
}

template <class T, class Mask, class R>
void whiten(std::string_view function, view<T> values, const Mask& mask, mut_view<T> out, const whiten_options& options,
            R& reducer) {
    if (options.scope == whiten_scope::per_batch) {
        whiten_scope_rows(function, values, mask, out, 0, values.extent(0), options, reducer, -1);
    } else {
        local_reducer local;
        for (index_t b = 0; b < values.extent(0); ++b)
            whiten_scope_rows(function, values, mask, out, b, b + 1, options, local, b);
    }
}

}  // namespace detail::stats

/// Statistics of the valid elements of `values` `[B, T]` (`mask` `[B, T]`, `mask ∈ {0,1}`) over
/// the whole batch, global across ranks through `reducer` (two reductions: `{count, sum}`, then
/// the squared deviations about the global mean).
/// Policy: see the file comment (count 0: mean; count < 2 under `unbiased`: variance).
/// @note TRL `trl/core.py: masked_mean/masked_var` (v0.11.4) with the defaults; verl
/// `verl/utils/torch_functional.py: masked_sum/masked_mean/masked_var` with `.count_epsilon = 1e-8`.
template <class T, class M, Reducer R = local_reducer>
[[nodiscard]] masked_moments compute_masked_moments(view<T> values, view<M> mask, const moments_options& options = {},
                                                    R&& reducer = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::compute_masked_moments: values must be float or double");
    constexpr std::string_view function = "rlhf::compute_masked_moments";
    check_same_shape(function, "mask", mask, "values", values);
    detail::stats::check_moments_options(function, options);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "values", values);
    return detail::stats::scope_moments(function, values, detail::stats::view_mask<M>{mask}, 0, values.extent(0), true,
                                        options, reducer, -1);
}

/// Mean of the valid elements of `values` `[B, T]` over the batch: Σ x·m / (Σ m + count_epsilon),
/// global through `reducer` (one reduction). Count 0: `raise` throws, otherwise 0 (verl's
/// empty-mask mean is 0: `.small_sample = zero_variance, .count_epsilon = 1e-8`).
/// @note TRL `trl/core.py: masked_mean`, OpenRLHF `openrlhf/models/utils.py: masked_mean`;
/// verl and ColossalChat `masked_mean` with `.count_epsilon = 1e-8`.
template <class T, class M, Reducer R = local_reducer>
[[nodiscard]] double masked_mean(view<T> values, view<M> mask, const moments_options& options = {}, R&& reducer = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::masked_mean: values must be float or double");
    constexpr std::string_view function = "rlhf::masked_mean";
    check_same_shape(function, "mask", mask, "values", values);
    detail::stats::check_moments_options(function, options);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "values", values);
    return detail::stats::scope_moments(function, values, detail::stats::view_mask<M>{mask}, 0, values.extent(0), false,
                                        options, reducer, -1)
        .mean;
}

/// Variance of the valid elements of `values` `[B, T]` over the batch (two-pass, global through
/// `reducer`). Count 0, or 1 under `unbiased`: `raise` throws, otherwise 0.
/// @note TRL `trl/core.py: masked_var(unbiased)`: TRL returns NaN/inf for one valid element,
/// verl `masked_var` raises for 0 and 1 (our `raise`).
template <class T, class M, Reducer R = local_reducer>
[[nodiscard]] double masked_variance(view<T> values, view<M> mask, const moments_options& options = {},
                                     R&& reducer = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::masked_variance: values must be float or double");
    constexpr std::string_view function = "rlhf::masked_variance";
    check_same_shape(function, "mask", mask, "values", values);
    detail::stats::check_moments_options(function, options);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "values", values);
    return detail::stats::scope_moments(function, values, detail::stats::view_mask<M>{mask}, 0, values.extent(0), true,
                                        options, reducer, -1)
        .variance;
}

namespace detail::stats {

/// The per-row moments behind `masked_mean_per_row` and `masked_variance_per_row`.
template <class T, class M, class U>
void moments_per_row(std::string_view function, view<T> values, view<M> mask, mut_view<U, 1> out,
                     const moments_options& options, bool variance) {
    static_assert(std::is_floating_point_v<T> && std::is_floating_point_v<U>,
                  "rlhf: per-row moments: values and out must be float or double");
    check_same_shape(function, "mask", mask, "values", values);
    check_length(function, "out", out.extent(0), values.extent(0), "one per row of 'values'");
    check_moments_options(function, options);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "values", values);
    local_reducer local;
    const view_mask<M> rows{mask};
    for (index_t b = 0; b < values.extent(0); ++b) {
        const masked_moments row = scope_moments(function, values, rows, b, b + 1, variance, options, local, b);
        out(b) = static_cast<U>(variance ? row.variance : row.mean);
    }
}

}  // namespace detail::stats

/// Per-row mean of `values` `[B, T]` into `out` `[B]` (float or double). An empty row follows the
/// policy per row (`raise` names the row; otherwise 0).
/// @note TRL `masked_mean(values, mask, axis=1)`; verl `masked_mean(values, mask, axis=-1)` with
/// `.count_epsilon = 1e-8`; ColossalChat `masked_mean(dim=1)` likewise.
template <class T, class M, class U>
void masked_mean_per_row(view<T> values, view<M> mask, mut_view<U, 1> out, const moments_options& options = {}) {
    detail::stats::moments_per_row("rlhf::masked_mean_per_row", values, mask, out, options, false);
}

/// Per-row variance of `values` `[B, T]` into `out` `[B]`; the policy applies per row.
/// @note The per-row variance of OpenRLHF `masked_normalize` (biased) and TRL `masked_var` per row.
template <class T, class M, class U>
void masked_variance_per_row(view<T> values, view<M> mask, mut_view<U, 1> out, const moments_options& options = {}) {
    detail::stats::moments_per_row("rlhf::masked_variance_per_row", values, mask, out, options, true);
}

/// Masked whitening of `values` `[B, T]` into `out` `[B, T]`:
/// `out = (x - mean) * rsqrt(var + eps)` (or `rsqrt(max(var, eps))`), plus `mean` when
/// `shift_mean` is false; statistics over the valid elements of each row or of the batch.
/// `out` may be `values` itself (in place); a partial overlap is an error. Masked positions get the
/// whitened value (TRL) or 0 (`zero_masked`). `per_batch` statistics are global through
/// `reducer` (two reductions); `per_row` ignores it (rows are local).
/// Policy (per scope): count 0, or 1 under `unbiased` (when `scale`): `raise` throws (kind
/// `value`, argument `mask`, naming the row under `per_row`); `skip` copies the scope's values
/// unchanged; `zero_variance` uses variance 0 (and mean 0 when the scope is empty).
/// @note Which options reproduce TRL, verl, OpenRLHF and ChatLearn: see `whiten_options`.
template <class T, class M, Reducer R = local_reducer>
void masked_whiten(view<T> values, view<M> mask, mut_view<T> out, const whiten_options& options = {},
                   R&& reducer = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::masked_whiten: values must be float or double");
    constexpr std::string_view function = "rlhf::masked_whiten";
    check_same_shape(function, "mask", mask, "values", values);
    check_same_shape(function, "out", out, "values", values);
    check_same_or_disjoint(function, "out", out, "values", values);
    detail::stats::check_whiten_options(function, options);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "values", values);
    detail::stats::whiten(function, values, detail::stats::view_mask<M>{mask}, out, options, reducer);
}

/// Unmasked whitening of `values` `[B, T]` into `out`: `masked_whiten` with every position valid,
/// without materialising a mask. With the defaults it is TRL `trl/core.py: whiten` and ChatLearn's
/// old PPO `whiten` (`torch.var_mean` over all elements, unbiased; global statistics through
/// `reducer` like its `get_global_statistics`). A single element under `unbiased` follows the policy.
/// @note ChatLearn `examples/megatron/models/utils.py: whiten` (commit 302cdc7e).
template <class T, Reducer R = local_reducer>
void whiten(view<T> values, mut_view<T> out, const whiten_options& options = {}, R&& reducer = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::whiten: values must be float or double");
    constexpr std::string_view function = "rlhf::whiten";
    check_same_shape(function, "out", out, "values", values);
    check_same_or_disjoint(function, "out", out, "values", values);
    detail::stats::check_whiten_options(function, options);
    check_finite(function, "values", values);
    detail::stats::whiten(function, values, detail::stats::no_mask{}, out, options, reducer);
}

/// State of `running_moments`; TRL's initial state is the default (count 1e-24 avoids 0/0).
struct running_moments_state {
    double mean = 0.0;
    double std = 1.0;  ///< unbiased: sqrt(var * count / (count - 1))
    double var = 1.0;  ///< population variance of everything seen
    double count = 1e-24;
};

/// What `running_moments::update` returns: the batch's own statistics.
struct batch_moments {
    double mean = 0.0;
    double std = 0.0;  ///< unbiased standard deviation of the batch
    double count = 0.0;
};

/// Running mean and variance of a stream of batches (score scaling/normalisation).
///
/// Update with a batch of `n` elements, mean `μ_b` and population variance `σ²_b`:
/// `δ = μ_b - μ`, `N = count + n`, `var = (var·count + δ²·count·n/N + σ²_b·n) / N`,
/// `μ += δ·n/N`, `std = sqrt(var·N/(N-1))`, `count = N`. `merge` applies the same formula to
/// another running state, so states are mergeable (across ranks, say); `update` with an
/// all-reducing `reducer` uses the global batch (two reductions, like TRL's
/// `get_global_statistics`).
/// @note TRL `trl/trainer/utils.py: RunningMoments` (v0.11.4, from MOSS-RLHF). TRL computes in
/// float32; this class computes in double.
class running_moments {
public:
    running_moments() = default;
    explicit running_moments(const running_moments_options& options) : options_(options) {
        check_small_sample(options);
    }
    /// Resumes from a saved state (checkpoints).
    explicit running_moments(const running_moments_state& state, const running_moments_options& options = {})
        : state_(state), options_(options) {
        constexpr std::string_view function = "rlhf::running_moments";
        check_small_sample(options);
        if (!(std::isfinite(state.mean) && std::isfinite(state.std) && state.std >= 0.0))
            fail(error_kind::value, function, "state", "finite mean and non-negative finite std",
                 number_string(state.mean) + ", " + number_string(state.std));
        check_non_negative(function, "state.var", state.var);
        check_positive(function, "state.count", state.count);
    }

    [[nodiscard]] double mean() const noexcept { return state_.mean; }
    [[nodiscard]] double std() const noexcept { return state_.std; }
    [[nodiscard]] double var() const noexcept { return state_.var; }
    [[nodiscard]] double count() const noexcept { return state_.count; }
    [[nodiscard]] const running_moments_state& state() const noexcept { return state_; }
    [[nodiscard]] const running_moments_options& options() const noexcept { return options_; }

    /// Adds a batch `values` `[n]`; returns its mean and unbiased std (global through `reducer`).
    template <class T, Reducer R = local_reducer>
    batch_moments update(view<T, 1> values, R&& reducer = {}) {
        static_assert(std::is_floating_point_v<T>, "rlhf::running_moments::update: values must be float or double");
        constexpr std::string_view function = "rlhf::running_moments::update";
        check_finite(function, "values", values);
        const view<T> matrix{values.data(), {1, values.extent(0)}};
        return update_scope(function, matrix, detail::stats::no_mask{}, reducer);
    }

    /// Adds the valid elements of `values` `[B, T]` (`mask` `[B, T]`, `mask ∈ {0,1}`).
    template <class T, class M, Reducer R = local_reducer>
    batch_moments update(view<T> values, view<M> mask, R&& reducer = {}) {
        static_assert(std::is_floating_point_v<T>, "rlhf::running_moments::update: values must be float or double");
        constexpr std::string_view function = "rlhf::running_moments::update";
        check_same_shape(function, "mask", mask, "values", values);
        check_binary_mask(function, "mask", mask);
        check_finite(function, "values", values);
        return update_scope(function, values, detail::stats::view_mask<M>{mask}, reducer);
    }

    /// Folds another running state into this one (the update formula with `other` as the batch).
    void merge(const running_moments& other) {
        absorb("rlhf::running_moments::merge", "other", other.state_.count, other.state_.mean, other.state_.var);
    }

private:
    /// An unknown policy would act as `zero_variance` without a word.
    static void check_small_sample(const running_moments_options& options) {
        detail::stats::check_moments_options("rlhf::running_moments", {.small_sample = options.small_sample});
    }

    template <class T, class Mask, class R>
    batch_moments update_scope(std::string_view function, view<T> values, const Mask& mask, R& reducer) {
        const moments_options probe{variance_estimator::biased, small_sample_policy::zero_variance, 0.0};
        const masked_moments m =
            detail::stats::scope_moments(function, values, mask, 0, values.extent(0), true, probe, reducer, -1);
        if (m.count < 1.0) {
            if (options_.small_sample == small_sample_policy::raise)
                detail::stats::fail_small_sample(function, Mask::argument, m.count, 1, -1);
            return {};
        }
        double batch_std = 0.0;
        if (m.count < 2.0) {
            if (options_.small_sample == small_sample_policy::raise)
                fail(error_kind::value, function, Mask::argument,
                     "at least 2 elements for the batch's unbiased standard deviation", "1 element");
            if (options_.small_sample == small_sample_policy::skip) return {m.mean, 0.0, m.count};
        } else {
            batch_std = std::sqrt(m.variance * m.count / (m.count - 1.0));
        }
        absorb(function, "values", m.count, m.mean, m.variance);
        return {m.mean, batch_std, m.count};
    }

    void absorb(std::string_view function, std::string_view argument, double n, double batch_mean, double batch_var) {
        const double delta = batch_mean - state_.mean;
        const double total = state_.count + n;
        const double old_sum = state_.var * state_.count + delta * delta * state_.count * n / total;
        const double new_var = (old_sum + batch_var * n) / total;
        double new_std = 0.0;
        if (total > 1.0) {
            new_std = std::sqrt(new_var * total / (total - 1.0));
        } else {
            if (options_.small_sample == small_sample_policy::raise)
                fail(error_kind::value, function, argument, "a total count above 1 for an unbiased standard deviation",
                     number_string(total));
            if (options_.small_sample == small_sample_policy::skip) return;
        }
        state_.mean += delta * n / total;
        state_.var = new_var;
        state_.std = new_std;
        state_.count = total;
    }

    running_moments_state state_{};
    running_moments_options options_{};
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
