#pragma once
/// @file
/// Generalised advantage estimation (GAE): token-level for RLHF rows `[B, T]`, and time-major
/// `[T, N]` for classic environment rollouts with terminated/truncated flags.
///
/// The recursion: `δ_t = r_t + γ·V_{t+1} - V_t`, `A_t = δ_t + γλ·A_{t+1}`, `A_T = 0`, and
/// returns `R_t = A_t + V_t`. Frameworks differ in how masked positions enter it
/// (`gae_masking`). Whitening is not part of GAE: TRL and verl whiten the advantages afterwards
/// (`rlhf::masked_whiten`), TRL optionally whitens the rewards before (`.shift_mean = false`).
///
/// Numerics: one backward pass per row, in blocks of 256 positions (4 KiB of buffers on the
/// stack): elementwise SIMD loops around a four-step recurrence over each row's valid span (see
/// `detail::gae::row_backward`); the recursion state (next value, running advantage) is kept in
/// double for float and double inputs, so long float rows do not accumulate float rounding. No
/// allocation, except B row ranges under `valid_range` (every row is checked before any output
/// is written).
/// `compute_gae` outputs may be exactly `rewards` or `values` (in place); the time-major outputs
/// may be exactly `rewards`. Any other overlap, and `advantages` overlapping `returns`, is an
/// error (kind `value`). Non-finite rewards or values (masked positions included) are rejected
/// (kind `value`); `gamma` and `lambda` must lie in [0, 1] (kind `config`).
/// The time-major kernel carries the running advantage through its output rows, in `T`.

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/options/gae.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

namespace detail::gae {

inline void check_discounts(std::string_view function, double gamma, double lambda) {
    check_in_range(function, "gamma", gamma, 0.0, 1.0);
    check_in_range(function, "lambda", lambda, 0.0, 1.0);
}

/// The checks of a time-major GAE call that read no value (shapes, overlaps, discounts), shared
/// by `rlhf::compute_gae_time_major` and `rlhf::cuda::compute_gae_time_major`.
template <class T, class M>
void check_time_major_call(std::string_view function, view<T> rewards, view<T> values, view<M> terminated,
                           view<M> truncated, view<T> truncation_values, view<T, 1> next_values, mut_view<T> advantages,
                           mut_view<T> returns, const time_major_gae_options& options) {
    check_same_shape(function, "values", values, "rewards", rewards);
    check_same_shape(function, "terminated", terminated, "rewards", rewards);
    check_same_shape(function, "truncated", truncated, "rewards", rewards);
    check_same_shape(function, "truncation_values", truncation_values, "rewards", rewards);
    check_length(function, "next_values", next_values.extent(0), rewards.extent(1),
                 "one per environment (column) of 'rewards'");
    check_same_shape(function, "advantages", advantages, "rewards", rewards);
    check_same_shape(function, "returns", returns, "rewards", rewards);
    // Step t reads values[t + 1] after step t + 1 wrote its outputs (on a GPU another thread's
    // slice): only `rewards` may be shared.
    check_same_or_disjoint(function, "advantages", advantages, "rewards", rewards);
    check_same_or_disjoint(function, "returns", returns, "rewards", rewards);
    check_disjoint(function, "returns", returns, "advantages", advantages);
    for (const auto& [name, output] :
         {std::pair{std::string_view("advantages"), advantages}, std::pair{std::string_view("returns"), returns}}) {
        check_disjoint(function, name, output, "values", values);
        check_disjoint(function, name, output, "truncation_values", truncation_values);
        check_disjoint(function, name, output, "next_values", next_values);
        check_disjoint(function, name, output, "terminated", terminated);
        check_disjoint(function, name, output, "truncated", truncated);
    }
    check_discounts(function, options.gamma, options.lambda);
}

/// A row's valid positions: the first and the last (-1 for an empty row), and whether some
/// position between them is masked (a hole).
struct row_range {
    index_t first = 0;
    index_t last = -1;
    bool holes = false;
};

/// Scans one row's mask: the padding at either end a block of 16 entries at a time, the range
/// between with an OR-reduction (SIMD code; the scalar form of these scans was a third of GAE).
template <class M>
[[nodiscard]] inline row_range scan_row(const M* m, index_t n) noexcept {
    constexpr index_t step = 16;
    index_t first = 0;
    for (; first + step <= n; first += step) {
        unsigned any = 0;
        for (index_t j = 0; j < step; ++j) any |= static_cast<unsigned>(m[first + j] != M{0});
        if (any != 0) break;
    }
    while (first < n && m[first] == M{0}) ++first;
    if (first == n) return {};
    index_t end = n;
    for (; end - step >= first; end -= step) {
        unsigned any = 0;
        for (index_t j = 1; j <= step; ++j) any |= static_cast<unsigned>(m[end - j] != M{0});
        if (any != 0) break;
    }
    while (m[end - 1] == M{0}) --end;
    unsigned hole = 0;
    for (index_t t = first; t < end; ++t) hole |= static_cast<unsigned>(m[t] == M{0});
    return {first, end - 1, hole != 0};
}

/// Throws the error of a row with a hole under valid_range, naming its first hole.
template <class M>
[[noreturn]] inline void fail_hole(std::string_view function, index_t row, const M* m, const row_range& range) {
    index_t t = range.first;
    while (m[t] != M{0}) ++t;
    fail(error_kind::value, function, "mask",
         "contiguous valid positions under gae_masking::valid_range (use skip_masked for holes)",
         "a hole at [" + std::to_string(row) + ", " + std::to_string(t) + "]");
}

/// Positions per block of the backward pass.
inline constexpr index_t block = 256;

/// Per-block buffers of the backward pass (4 KiB: they stay in L1).
struct block_buffers {
    double a[block], w[block];
};

/// Solves `out[t] = a[t] + c·out[t+1]` for t = n−1 … 0 from `out[n] = carry`, and returns out[0].
/// Four positions per step, `A_{t-j} = S_j + c^{j+1}·A_{t+1}` with `S_j = a_{t-j} + c·S_{j-1}`
/// computed off the dependency chain, which then advances by one multiply-add every four
/// positions (the plain loop waits for one per position). `out` may be `a`.
inline double backward_recurrence(const double* a, double c, double* out, index_t n, double carry) noexcept {
    const double c2 = c * c, c3 = c2 * c, c4 = c3 * c;
    index_t t = n;
    for (; t % 4 != 0; --t) {
        carry = a[t - 1] + c * carry;
        out[t - 1] = carry;
    }
    for (; t >= 4; t -= 4) {
        const double s1 = a[t - 1];
        const double s2 = a[t - 2] + c * s1;
        const double s3 = a[t - 3] + c * s2;
        const double s4 = a[t - 4] + c * s3;
        out[t - 1] = s1 + c * carry;
        out[t - 2] = s2 + c2 * carry;
        out[t - 3] = s3 + c3 * carry;
        carry = s4 + c4 * carry;
        out[t - 4] = carry;
    }
    return carry;
}

/// Writes one block's outputs: `adv = A`, `ret = A + w`.
template <class T>
inline void write_block(const block_buffers& buf, T* adv, T* ret, index_t len) noexcept {
    for (index_t k = 0; k < len; ++k) {
        adv[k] = static_cast<T>(buf.a[k]);
        ret[k] = static_cast<T>(buf.a[k] + buf.w[k]);
    }
}

// The backward passes below work in blocks of `block` positions from the end of the row: an
// elementwise SIMD loop computes δ into a buffer, `backward_recurrence` runs the recursion, a
// SIMD loop writes the outputs. A block's inputs are read before its outputs are written, so the
// outputs may be the inputs (in place). Recursion state and buffers are double.

/// zero_masked over a whole row: `δ_t = r_t·m_t + γ·V'_{t+1} − V'_t` with `V' = V·m` (plus
/// γ·bootstrap at `last`), `A_t = δ_t + γλ·A_{t+1}`, returns `A + V'`. The mask, checked binary,
/// enters as the number 0 or 1 (a comparison would become a branch that keeps the loop scalar).
template <class T, class M>
inline void masked_backward(const T* r, const T* v, const M* m, T* adv, T* ret, index_t n, double gamma,
                            double gamma_lambda, index_t last, double bootstrap, block_buffers& buf) noexcept {
    double carry = 0.0, next_counted = 0.0;  // A and V' at the first position after the block
    for (index_t end = n; end > 0;) {
        const index_t start = end > block ? end - block : 0;
        const index_t len = end - start;
        const T* rb = r + start;
        const T* vb = v + start;
        const M* mb = m + start;
        for (index_t k = 0; k + 1 < len; ++k) {
            const double counted = static_cast<double>(mb[k]) * static_cast<double>(vb[k]);
            const double counted_next = static_cast<double>(mb[k + 1]) * static_cast<double>(vb[k + 1]);
            buf.w[k] = counted;
            buf.a[k] = static_cast<double>(mb[k]) * static_cast<double>(rb[k]) + gamma * counted_next - counted;
        }
        const double m_last = static_cast<double>(mb[len - 1]);
        buf.w[len - 1] = m_last * static_cast<double>(vb[len - 1]);
        buf.a[len - 1] = m_last * static_cast<double>(rb[len - 1]) + gamma * next_counted - buf.w[len - 1];
        if (last >= start && last < end) buf.a[last - start] += gamma * bootstrap;
        next_counted = buf.w[0];
        carry = backward_recurrence(buf.a, gamma_lambda, buf.a, len, carry);
        write_block(buf, adv + start, ret + start, len);
        end = start;
    }
}

/// A span of valid positions `[0, n)` followed by V = `bootstrap` (0 for a finished row):
/// `δ_t = r_t + γ·V_{t+1} − V_t`, `A_t = δ_t + γλ·A_{t+1}` from `A_n = 0`, returns `A + V`.
/// Returns A_0.
template <class T>
inline double dense_backward(const T* r, const T* v, T* adv, T* ret, index_t n, double gamma, double gamma_lambda,
                             double bootstrap, block_buffers& buf) noexcept {
    double carry = 0.0, next_value = bootstrap;
    for (index_t end = n; end > 0;) {
        const index_t start = end > block ? end - block : 0;
        const index_t len = end - start;
        const T* rb = r + start;
        const T* vb = v + start;
        for (index_t k = 0; k + 1 < len; ++k) {
            buf.w[k] = static_cast<double>(vb[k]);
            buf.a[k] = static_cast<double>(rb[k]) + gamma * static_cast<double>(vb[k + 1]) - buf.w[k];
        }
        buf.w[len - 1] = static_cast<double>(vb[len - 1]);
        buf.a[len - 1] = static_cast<double>(rb[len - 1]) + gamma * next_value - buf.w[len - 1];
        next_value = buf.w[0];
        carry = backward_recurrence(buf.a, gamma_lambda, buf.a, len, carry);
        write_block(buf, adv + start, ret + start, len);
        end = start;
    }
    return carry;
}

/// skip_masked position by position (rows with holes): masked positions are transparent, the
/// next value and the running advantage are carried across them; `returns = A + V`.
template <class T, class M>
inline void skip_backward(const T* r, const T* v, const M* m, T* adv, T* ret, index_t n, double gamma,
                          double gamma_lambda, double bootstrap) noexcept {
    double next_value = bootstrap, gae = 0.0;
    for (index_t t = n; t-- > 0;) {
        const double value = static_cast<double>(v[t]);
        const double reward = static_cast<double>(r[t]);
        const bool valid = m[t] != M{0};
        const double delta = reward + gamma * next_value - value;
        const double candidate = delta + gamma_lambda * gae;
        gae = valid ? candidate : gae;
        next_value = valid ? value : next_value;
        adv[t] = static_cast<T>(gae);
        ret[t] = static_cast<T>(gae + value);
    }
}

/// Fills `[begin, end)` of a row: `adv = a`, `ret = a + V·keep_values` (the value read first:
/// `adv` may be `values`).
template <class T>
inline void fill_span(const T* v, T* adv, T* ret, index_t begin, index_t end, double a, double keep_values) noexcept {
    for (index_t t = begin; t < end; ++t) {
        const double value = static_cast<double>(v[t]);
        adv[t] = static_cast<T>(a);
        ret[t] = static_cast<T>(a + keep_values * value);
    }
}

/// One row under `Masking`. A row with holes runs position by position with the mask as a
/// factor (zero_masked) or a select (skip_masked; valid_range refuses holes). A hole-free row is
/// the recursion over its valid span `[first, last]` (every mask entry 1 there, the mask not read
/// again), the padding filled in: right of the span A = 0, with `returns` 0 (zero_masked,
/// valid_range) or V (skip_masked); left of it, valid_range writes 0, skip_masked carries A_first
/// (`returns = A_first + V`), and zero_masked continues the recursion over zero rewards and values,
/// `A_{first-1} = γ·V_first + γλ·A_first`, then `A_t = γλ·A_{t+1}` (`returns = A`).
template <gae_masking Masking, class T, class M>
inline void row_backward(const T* r, const T* v, const M* m, T* adv, T* ret, index_t n, double gamma,
                         double gamma_lambda, double bootstrap, const row_range& range, block_buffers& buf) noexcept {
    const double keep_values = Masking == gae_masking::skip_masked ? 1.0 : 0.0;
    if (range.holes) {
        if constexpr (Masking == gae_masking::zero_masked)
            masked_backward(r, v, m, adv, ret, n, gamma, gamma_lambda, range.last, bootstrap, buf);
        else
            skip_backward(r, v, m, adv, ret, n, gamma, gamma_lambda, bootstrap);  // valid_range refused holes
        return;
    }
    if (range.last < 0) {  // empty row: A = 0 everywhere
        fill_span(v, adv, ret, 0, n, 0.0, keep_values);
        return;
    }
    const index_t first = range.first, end = range.last + 1;
    fill_span(v, adv, ret, end, n, 0.0, keep_values);
    const double value_first = static_cast<double>(v[first]);  // read before the span's outputs
    const double a_first = dense_backward(r + first, v + first, adv + first, ret + first, end - first, gamma,
                                          gamma_lambda, bootstrap, buf);
    if constexpr (Masking == gae_masking::zero_masked) {
        double a = a_first;
        for (index_t t = first; t-- > 0;) {
            a = (t + 1 == first ? gamma * value_first : 0.0) + gamma_lambda * a;
            adv[t] = static_cast<T>(a);
            ret[t] = static_cast<T>(a);
        }
    } else {
        fill_span(v, adv, ret, 0, first, Masking == gae_masking::skip_masked ? a_first : 0.0, keep_values);
    }
}

/// Every row; `ranges` holds the rows' scans when the caller made them (valid_range), else null.
template <gae_masking Masking, class T, class M>
inline void all_rows(view<T> rewards, view<T> values, view<M> mask, const view<T, 1>* bootstrap, mut_view<T> advantages,
                     mut_view<T> returns, double gamma, double lambda, const row_range* ranges) {
    const index_t n = rewards.extent(1);
    block_buffers buffers;
    for (index_t b = 0; b < rewards.extent(0); ++b) {
        const M* m = mask.row(b).data();
        const double boot = bootstrap != nullptr ? static_cast<double>((*bootstrap)(b)) : 0.0;
        const row_range range = ranges != nullptr ? ranges[b] : scan_row(m, n);
        row_backward<Masking>(rewards.row(b).data(), values.row(b).data(), m, advantages.row(b).data(),
                              returns.row(b).data(), n, gamma, gamma * lambda, boot, range, buffers);
    }
}

template <class T, class M>
void compute(std::string_view function, view<T> rewards, view<T> values, view<M> mask, const view<T, 1>* bootstrap,
             mut_view<T> advantages, mut_view<T> returns, const gae_options& options) {
    check_same_shape(function, "values", values, "rewards", rewards);
    check_same_shape(function, "mask", mask, "rewards", rewards);
    check_same_shape(function, "advantages", advantages, "rewards", rewards);
    check_same_shape(function, "returns", returns, "rewards", rewards);
    check_same_or_disjoint(function, "advantages", advantages, "rewards", rewards);
    check_same_or_disjoint(function, "advantages", advantages, "values", values);
    check_same_or_disjoint(function, "returns", returns, "rewards", rewards);
    check_same_or_disjoint(function, "returns", returns, "values", values);
    check_disjoint(function, "returns", returns, "advantages", advantages);
    check_disjoint(function, "advantages", advantages, "mask", mask);
    check_disjoint(function, "returns", returns, "mask", mask);
    if (bootstrap != nullptr) {
        check_disjoint(function, "advantages", advantages, "bootstrap_values", *bootstrap);
        check_disjoint(function, "returns", returns, "bootstrap_values", *bootstrap);
    }
    check_discounts(function, options.gamma, options.lambda);
    switch (options.masking) {
        case gae_masking::zero_masked:
        case gae_masking::skip_masked:
        case gae_masking::valid_range:
            break;
        default:
            fail(error_kind::config, function, "masking", "one of 'zero_masked' 'skip_masked' 'valid_range'",
                 "an unknown value");
    }
    check_binary_mask(function, "mask", mask);
    check_finite(function, "rewards", rewards);
    check_finite(function, "values", values);
    std::vector<row_range> ranges;  // valid_range: every row scanned (and refused) before any output is written
    if (options.masking == gae_masking::valid_range) {
        ranges.resize(static_cast<std::size_t>(rewards.extent(0)));
        for (index_t b = 0; b < rewards.extent(0); ++b) {
            const row_range range = scan_row(mask.row(b).data(), rewards.extent(1));
            if (range.holes) fail_hole(function, b, mask.row(b).data(), range);
            ranges[static_cast<std::size_t>(b)] = range;
        }
    }
    switch (options.masking) {
        case gae_masking::zero_masked:
            all_rows<gae_masking::zero_masked>(rewards, values, mask, bootstrap, advantages, returns, options.gamma,
                                               options.lambda, nullptr);
            break;
        case gae_masking::skip_masked:
            all_rows<gae_masking::skip_masked>(rewards, values, mask, bootstrap, advantages, returns, options.gamma,
                                               options.lambda, nullptr);
            break;
        case gae_masking::valid_range:
            all_rows<gae_masking::valid_range>(rewards, values, mask, bootstrap, advantages, returns, options.gamma,
                                               options.lambda, ranges.data());
            break;
    }
}

}  // namespace detail::gae

/// Token-level GAE over `[B, T]` rows: `rewards`, `values` (V(s_t)) and `mask` (`mask ∈ {0,1}`),
/// writing raw (unwhitened) `advantages` and `returns` `[B, T]`. Every row ends with V = 0 after
/// its last position (a finished sequence); see the overload with `bootstrap_values` for
/// truncated rows.
/// Edge cases: an empty row (mask all 0) gives advantages 0 and returns `0` (`zero_masked`,
/// `valid_range`) or `values` (`skip_masked`); left padding and interior holes follow
/// `gae_options::masking` (holes are an error under `valid_range`); a single valid token is
/// `r - V` (plus γ·bootstrap). Whiten afterwards with `rlhf::masked_whiten` (TRL, verl).
/// @note The option that reproduces each framework: see `gae_options::masking`.
template <class T, class M>
void compute_gae(view<T> rewards, view<T> values, view<M> mask, mut_view<T> advantages, mut_view<T> returns,
                 const gae_options& options = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::compute_gae: values must be float or double");
    detail::gae::compute<T, M>("rlhf::compute_gae", rewards, values, mask, nullptr, advantages, returns, options);
}

/// Token-level GAE with a bootstrap value per row: `bootstrap_values` `[B]` is V of the state that
/// follows each row's last valid position (a row truncated by a length limit rather than ended
/// by EOS; 0 for finished rows). It enters as γ·bootstrap in the δ of the last valid position,
/// under every masking mode; an empty row ignores it. Must be finite.
/// @note The RLHF peers have no bootstrap (V_T = 0); this is the usual truncation correction.
template <class T, class M>
void compute_gae(view<T> rewards, view<T> values, view<M> mask, view<T, 1> bootstrap_values, mut_view<T> advantages,
                 mut_view<T> returns, const gae_options& options = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::compute_gae: values must be float or double");
    constexpr std::string_view function = "rlhf::compute_gae";
    check_length(function, "bootstrap_values", bootstrap_values.extent(0), rewards.extent(0),
                 "one per row of 'rewards'");
    check_finite(function, "bootstrap_values", bootstrap_values);
    detail::gae::compute<T, M>(function, rewards, values, mask, &bootstrap_values, advantages, returns, options);
}

/// GAE over time-major environment rollouts `[T, N]` (T steps of N environments), with the
/// Gymnasium distinction between termination and truncation:
///   - `rewards[t, n]`: reward of the step taken from s_t;
///   - `values[t, n]`: V(s_t);
///   - `terminated[t, n]` (`∈ {0,1}`): the step ended the episode in a terminal state: no
///     bootstrap (V = 0 after it) and the recursion does not cross into step t+1;
///   - `truncated[t, n]` (`∈ {0,1}`): the step ended the episode by a time limit: bootstrap with
///     `truncation_values[t, n]` = V(s_{t+1}^final), the value of the final observation (before the
///     environment reset), and the recursion does not cross into step t+1. Where both flags
///     are set, termination wins. `truncation_values` is read only where `truncated` is 1, but
///     must be finite everywhere;
///   - `next_values[n]`: V of the observation after the last step, the bootstrap of step T-1 when
///     that step neither terminated nor was truncated.
/// `δ_t = r_t + γ·[(1-term_t)·((1-trunc_t)·V_{t+1} + trunc_t·V^final_{t+1})] - V_t`,
/// `A_t = δ_t + γλ·(1-term_t)·(1-trunc_t)·A_{t+1}`, `returns = A + V`. Outputs `[T, N]`.
/// @note Stable-Baselines3 `RolloutBuffer.compute_returns_and_advantage` and CleanRL `ppo.py`
/// (which fold truncation into the reward as `r += γ·V(final)` and a single `done`), written
/// with separate flags so the truncation bootstrap is not discounted into the next episode.
template <class T, class M>
void compute_gae_time_major(view<T> rewards, view<T> values, view<M> terminated, view<M> truncated,
                            view<T> truncation_values, view<T, 1> next_values, mut_view<T> advantages,
                            mut_view<T> returns, const time_major_gae_options& options = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::compute_gae_time_major: values must be float or double");
    constexpr std::string_view function = "rlhf::compute_gae_time_major";
    detail::gae::check_time_major_call(function, rewards, values, terminated, truncated, truncation_values, next_values,
                                       advantages, returns, options);
    check_binary_mask(function, "terminated", terminated);
    check_binary_mask(function, "truncated", truncated);
    check_finite(function, "rewards", rewards);
    check_finite(function, "values", values);
    check_finite(function, "truncation_values", truncation_values);
    check_finite(function, "next_values", next_values);
    const index_t steps = rewards.extent(0), envs = rewards.extent(1);
    const double gamma = options.gamma, gamma_lambda = options.gamma * options.lambda;
    // Backwards in time; the inner loop runs over independent environments, so it vectorises.
    // The running advantage of each environment is the output row of step t + 1 (kept in T).
    const auto step = [&](index_t t, const T* v_next, const T* a_next) {
        const T* r = rewards.row(t).data();
        const T* v = values.row(t).data();
        const M* term = terminated.row(t).data();
        const M* trunc = truncated.row(t).data();
        const T* v_final = truncation_values.row(t).data();
        T* adv = advantages.row(t).data();
        T* ret = returns.row(t).data();
        for (index_t n = 0; n < envs; ++n) {
            const bool ended = term[n] != M{0};
            const bool cut = trunc[n] != M{0};
            const double bootstrap =
                ended ? 0.0 : (cut ? static_cast<double>(v_final[n]) : static_cast<double>(v_next[n]));
            // Not read when γλ = 0: a carried advantage that overflowed T (+-inf) would give 0·inf.
            const double carried =
                (ended || cut || a_next == nullptr || gamma_lambda == 0.0) ? 0.0 : static_cast<double>(a_next[n]);
            const double value = static_cast<double>(v[n]);
            const double gae = static_cast<double>(r[n]) + gamma * bootstrap - value + gamma_lambda * carried;
            adv[n] = static_cast<T>(gae);
            ret[n] = static_cast<T>(gae + value);
        }
    };
    if (steps == 0) return;
    step(steps - 1, next_values.data(), nullptr);
    for (index_t t = steps - 1; t-- > 0;) step(t, values.row(t + 1).data(), advantages.row(t + 1).data());
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
