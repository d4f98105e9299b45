#pragma once
/// @file
/// Kernels on logits `[B, T, V]`: token log-probabilities and entropy, the full-vocabulary KL
/// between two distributions given by their logits, and the language-model (PTX/SFT) loss, each
/// with its closed-form gradient w.r.t. the logits.
///
/// Every kernel streams each position's vocabulary row once with an online (chunked) log-sum-exp:
/// a running maximum, `Σ exp(x - max)` and `Σ exp(x - max)·(x - max)`, rescaled when the maximum
/// grows. Nothing `[B, T, V]`-sized is materialised; the one V-sized output is the gradient the
/// caller provides. Statistics are accumulated in double for float logits as well, in 8 partial
/// sums per row, and the exponentials of the log-prob/entropy kernels use `detail::vexp`
/// (vector_math.hpp), so that their inner loops are SIMD code.
///
/// Values of logits:
/// - `-inf` is a legal logit (a vocabulary entry masked out by the sampler): probability 0;
/// - NaN and `+inf` are an `rlhf::error` (kind `value`) naming the logits and the position;
/// - a position whose logits are all `-inf` is an `rlhf::error` (no distribution);
/// - positions whose mask is 0 are not read at all (their logits may hold anything) and get 0
///   outputs and 0 gradients.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/vector_math.hpp"
#include "rlhf/options/logits.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Result of `rlhf::lm_loss`.
struct lm_loss_result {
    double loss = 0.0;       ///< mean negative log-likelihood over the counted tokens (0 when none)
    index_t num_tokens = 0;  ///< number of counted tokens (mask 1 and not `ignore_index`)
};

namespace detail::logits {

inline constexpr double neg_inf = -std::numeric_limits<double>::infinity();
inline constexpr double pos_inf = std::numeric_limits<double>::infinity();
/// Entries per chunk of the online log-sum-exp: the chunk is read twice (max, then sums) while
/// it is in L1, so memory is streamed once.
inline constexpr index_t chunk = 512;

/// Softmax statistics of one row `x = z / τ`: `max`, `sum = Σ e^(x-max)`,
/// `moment = Σ e^(x-max)·(x-max)`. `invalid` when a NaN or +inf was seen.
struct row_stats {
    double max = neg_inf;
    double sum = 0.0;
    double moment = 0.0;
    bool invalid = false;

    [[nodiscard]] double log_sum() const { return std::log(sum); }
    [[nodiscard]] double logsumexp() const { return max + std::log(sum); }
    /// `H = logsumexp(x) - Σ softmax(x)·x`, in the shifted form (no large-minus-large).
    [[nodiscard]] double entropy() const { return std::log(sum) - moment / sum; }
};

/// Adds `n` (at most `chunk`) entries of a row to `stats`: `x = z·scale` and its validity, the
/// maximum, then `e^(x-max)` and `e^(x-max)·(x-max)` of each, all in buffers in L1 (each loop is
/// SIMD code), and the two sums in partial lanes (`detail::lane_sum`).
template <class T>
inline void accumulate(row_stats& stats, const T* z, index_t n, double scale) {
    double x[chunk];
    int bad = 0;
    for (index_t k = 0; k < n; ++k) {
        x[k] = static_cast<double>(z[k]) * scale;
        bad |= static_cast<int>(!(x[k] < pos_inf));  // NaN or +inf
    }
    if (bad != 0) {
        stats.invalid = true;
        return;
    }
    const auto count = static_cast<std::size_t>(n);
    const double chunk_max = detail::lane_max(x, count, neg_inf);
    if (chunk_max == neg_inf) return;  // all -inf: no probability mass
    if (chunk_max > stats.max) {
        if (stats.max != neg_inf) {
            const double shift = stats.max - chunk_max;
            const double factor = std::exp(shift);
            stats.moment = factor * (stats.moment + shift * stats.sum);
            stats.sum *= factor;
        }
        stats.max = chunk_max;
    }
    const double max = stats.max;
    double e[chunk];
    double moment[chunk];
    for (index_t k = 0; k < n; ++k) {
        const double d = x[k] - max;
        const double p = detail::vexp(d);
        e[k] = p;
        moment[k] = detail::bit_select(p > 0.0, p * d, 0.0);  // a -inf entry has p = 0 and d = -inf
    }
    stats.sum += detail::lane_sum(e, count);
    stats.moment += detail::lane_sum(moment, count);
}

/// Softmax statistics of a row of `v` logits.
template <class T>
[[nodiscard]] inline row_stats softmax_stats(const T* z, index_t v, double scale) {
    row_stats stats;
    for (index_t begin = 0; begin < v; begin += chunk) accumulate(stats, z + begin, std::min(chunk, v - begin), scale);
    return stats;
}

/// Throws the error of a row whose statistics are invalid or empty: the first NaN/+inf entry,
/// a temperature that overflows a finite logit, or a row of -inf only.
template <class T>
[[noreturn]] inline void fail_row(std::string_view function, std::string_view argument, const T* z, index_t v,
                                  double scale, index_t b, index_t t) {
    for (index_t i = 0; i < v; ++i) {
        const double raw = static_cast<double>(z[i]);
        if (std::isnan(raw) || raw == pos_inf)
            fail(error_kind::value, function, argument, "finite logits or -inf",
                 number_string(z[i]) + " at " + shape_string(extents_t<3>{b, t, i}));
        if (!(raw * scale < pos_inf))
            fail(error_kind::config, function, "temperature", "a temperature for which logits / temperature is finite",
                 "logit " + number_string(z[i]) + " at " + shape_string(extents_t<3>{b, t, i}) + " overflows");
    }
    fail(error_kind::value, function, argument, "at least one logit above -inf at every position",
         "all -inf at " + shape_string(extents_t<2>{b, t}));
}

/// Row statistics, or the row's error.
template <class T>
[[nodiscard]] inline row_stats checked_stats(std::string_view function, std::string_view argument, const T* z,
                                             index_t v, double scale, index_t b, index_t t) {
    const row_stats stats = softmax_stats(z, v, scale);
    if (stats.invalid || stats.max == neg_inf) fail_row(function, argument, z, v, scale, b, t);
    return stats;
}

/// Token id at (b, t), checked to lie in [0, v).
inline std::int64_t checked_token(std::string_view function, const view<std::int64_t>& tokens, index_t b, index_t t,
                                  index_t v) {
    const std::int64_t y = tokens(b, t);
    if (y < 0 || y >= static_cast<std::int64_t>(v))
        fail(error_kind::value, function, "tokens", "token ids in [0, " + std::to_string(v) + ") (the vocabulary size)",
             number_string(y) + " at " + shape_string(extents_t<2>{b, t}));
    return y;
}

/// Fails when the chosen token has probability 0 (its logit is -inf).
template <class T>
inline void check_token_logit(std::string_view function, const T* z, std::int64_t y, index_t b, index_t t) {
    if (static_cast<double>(z[y]) == neg_inf)
        fail(error_kind::value, function, "tokens", "tokens of non-zero probability (a logit above -inf)",
             "token " + number_string(y) + " with logit -inf at " + shape_string(extents_t<2>{b, t}));
}

template <class Element>
[[nodiscard]] constexpr bool present(const basic_view<Element, 2>& v) noexcept {
    return v.data() != nullptr;
}

/// Common checks of a `[B, T, V]` logits argument; returns nothing, throws on misuse.
template <class T>
inline void check_logits(std::string_view function, std::string_view argument, const view<T, 3>& logits) {
    if (logits.extent(2) < 1 && logits.extent(0) * logits.extent(1) > 0)
        fail(error_kind::shape, function, argument, "a vocabulary (last dimension) of at least 1",
             shape_string(logits.extents()));
}

template <class Element>
inline void check_optional_bt(std::string_view function, std::string_view argument, const basic_view<Element, 2>& v,
                              const extents_t<2>& expected) {
    if (present(v)) check_shape(function, argument, v, expected);
}

template <class M>
[[nodiscard]] inline bool masked_out(const view<M>* mask, index_t b, index_t t) {
    return mask != nullptr && (*mask)(b, t) == M{0};
}

template <class T>
inline void zero_row(T* row, index_t v) {
    std::fill(row, row + v, T{0});
}

// -- token log-probs and entropy ------------------------------------------------------------

template <class T, class M>
void forward(std::string_view function, const view<T, 3>& logits, const view<std::int64_t>* tokens, const view<M>* mask,
             const mut_view<T>& logprobs, const mut_view<T>& entropy, const mut_view<double>& logsumexp,
             double temperature) {
    check_positive(function, "temperature", temperature);
    check_logits(function, "logits", logits);
    const index_t batch = logits.extent(0), steps = logits.extent(1), vocab = logits.extent(2);
    const extents_t<2> bt{batch, steps};
    if (tokens != nullptr) check_shape(function, "tokens", *tokens, bt);
    if (mask != nullptr) {
        check_shape(function, "mask", *mask, bt);
        check_binary_mask(function, "mask", *mask);
    }
    if (tokens != nullptr) check_optional_bt(function, "logprobs", logprobs, bt);
    check_optional_bt(function, "entropy", entropy, bt);
    check_optional_bt(function, "logsumexp", logsumexp, bt);
    const bool want_lp = tokens != nullptr && present(logprobs);
    const bool want_h = present(entropy);
    const bool want_lse = present(logsumexp);
    const double scale = 1.0 / temperature;
    for (index_t b = 0; b < batch; ++b) {
        for (index_t t = 0; t < steps; ++t) {
            if (masked_out(mask, b, t)) {
                if (want_lp) logprobs(b, t) = T{0};
                if (want_h) entropy(b, t) = T{0};
                if (want_lse) logsumexp(b, t) = 0.0;
                continue;
            }
            const T* z = &logits(b, t, 0);
            const std::int64_t y = tokens != nullptr ? checked_token(function, *tokens, b, t, vocab) : 0;
            const row_stats stats = checked_stats(function, "logits", z, vocab, scale, b, t);
            if (tokens != nullptr) check_token_logit(function, z, y, b, t);
            if (want_lp)
                logprobs(b, t) = static_cast<T>((static_cast<double>(z[y]) * scale - stats.max) - stats.log_sum());
            if (want_h) entropy(b, t) = static_cast<T>(stats.entropy());
            if (want_lse) logsumexp(b, t) = stats.logsumexp();
        }
    }
}

/// `−p·(g_lp + g_h·(d − centre))`: the derivative of `g_lp·lp_y + g_h·H` w.r.t. `x_j` less the
/// chosen token's `g_lp`, with `p = p_j` and `d − centre = x_j − Σp·x`; 0 where `p` is 0 (a -inf
/// logit, whose `d` is -inf). Host-device: the CUDA kernels (rlhf/cuda/logits.cuh) use it too.
template <class S>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE S softmax_gradient(S p, S d, S centre, S g_lp, S g_h) noexcept {
    return detail::bit_select(p > S{0}, -p * (g_lp + g_h * (d - centre)), S{0});
}

/// `g·p·bracket` of the full-KL gradient (`bracket = log p_j − log q_j − KL`); 0 where `p` or the
/// bracket is 0, even if `g` overflowed (a tiny temperature: 0·inf is NaN). Host-device.
template <class S>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE S kl_gradient(S g, S p, S bracket) noexcept {
    return p > S{0} && bracket != S{0} ? g * p * bracket : S{0};
}

/// Writes `d/dz [g_lp·lp_y + g_h·H]` for one row: with `p = softmax(x)`, `x = z·scale`,
/// `dlp/dx = onehot(y) − p`, `dH/dx = −p·(x − Σp·x)`. `p_j = exp(x_j − shift − log_sum)`,
/// `x_j − Σp·x = (x_j − shift) − centre`.
template <class T>
inline bool gradient_row(const T* z, T* out, index_t v, double scale, double shift, double log_sum, double centre,
                         double g_lp, double g_h, std::int64_t y, bool has_token) {
    int bad = 0;
    for (index_t j = 0; j < v; ++j) {
        const double d = static_cast<double>(z[j]) * scale - shift;
        bad |= static_cast<int>(!(d < pos_inf));
        const double p = detail::vexp(d - log_sum);
        const double g = softmax_gradient(p, d, centre, g_lp, g_h);
        out[j] = static_cast<T>(g * scale);
    }
    if (has_token) {
        // The chosen token in double before the one rounding to T: (1 − p)·g_lp from −p·g_lp rounded
        // to T first lost every digit where p ≈ 1.
        const double d = static_cast<double>(z[y]) * scale - shift;
        const double p = detail::vexp(d - log_sum);
        const double g = softmax_gradient(p, d, centre, g_lp, g_h);
        out[y] = static_cast<T>((g + g_lp) * scale);
    }
    return bad == 0;
}

template <class T, class M>
void backward(std::string_view function, const view<T, 3>& logits, const view<std::int64_t>* tokens,
              const view<M>* mask, const view<T>& grad_logprobs, const view<T>& grad_entropy,
              const mut_view<T, 3>& grad_logits, const view<double>& saved_logsumexp, const view<T>& saved_entropy,
              double temperature) {
    check_positive(function, "temperature", temperature);
    check_logits(function, "logits", logits);
    const index_t batch = logits.extent(0), steps = logits.extent(1), vocab = logits.extent(2);
    const extents_t<2> bt{batch, steps};
    if (tokens != nullptr) check_shape(function, "tokens", *tokens, bt);
    if (mask != nullptr) {
        check_shape(function, "mask", *mask, bt);
        check_binary_mask(function, "mask", *mask);
    }
    const bool has_glp = tokens != nullptr && present(grad_logprobs);
    const bool has_gh = present(grad_entropy);
    if (has_glp) {
        check_shape(function, "grad_logprobs", grad_logprobs, bt);
        check_finite(function, "grad_logprobs", grad_logprobs);
    }
    if (has_gh) {
        check_shape(function, "grad_entropy", grad_entropy, bt);
        check_finite(function, "grad_entropy", grad_entropy);
    }
    check_same_shape(function, "grad_logits", grad_logits, "logits", logits);
    const bool saved = present(saved_logsumexp) && (!has_gh || present(saved_entropy));
    if (present(saved_logsumexp)) {
        check_shape(function, "logsumexp", saved_logsumexp, bt);
        check_finite(function, "logsumexp", saved_logsumexp);
    }
    if (present(saved_entropy)) {
        check_shape(function, "entropy", saved_entropy, bt);
        check_finite(function, "entropy", saved_entropy);
    }
    const double scale = 1.0 / temperature;
    for (index_t b = 0; b < batch; ++b) {
        for (index_t t = 0; t < steps; ++t) {
            T* out = &grad_logits(b, t, 0);
            if (masked_out(mask, b, t)) {
                zero_row(out, vocab);
                continue;
            }
            const T* z = &logits(b, t, 0);
            const std::int64_t y = tokens != nullptr ? checked_token(function, *tokens, b, t, vocab) : 0;
            const double g_lp = has_glp ? static_cast<double>(grad_logprobs(b, t)) : 0.0;
            const double g_h = has_gh ? static_cast<double>(grad_entropy(b, t)) : 0.0;
            double shift = 0.0, log_sum = 0.0, centre = 0.0;
            if (saved) {
                // p = exp(x − lse); x − Σp·x = (x − lse) + H.
                shift = saved_logsumexp(b, t);
                centre = has_gh ? -static_cast<double>(saved_entropy(b, t)) : 0.0;
            } else {
                const row_stats stats = checked_stats(function, "logits", z, vocab, scale, b, t);
                shift = stats.max;
                log_sum = stats.log_sum();
                centre = stats.moment / stats.sum;
            }
            if (tokens != nullptr) check_token_logit(function, z, y, b, t);
            if (!gradient_row(z, out, vocab, scale, shift, log_sum, centre, g_lp, g_h, y, has_glp))
                fail_row(function, "logits", z, vocab, scale, b, t);
        }
    }
}

// -- full-vocabulary KL -----------------------------------------------------------------------

/// Two-stream statistics of a row: policy `x` and reference `y` (both `z / τ`), and
/// `cross = Σ e^(x−mx)·((x−mx) − (y−my))`.
struct kl_stats {
    double max_p = neg_inf, sum_p = 0.0;
    double max_q = neg_inf, sum_q = 0.0;
    double cross = 0.0;
    bool invalid = false;      // NaN or +inf in either row
    bool unsupported = false;  // policy mass where the reference is -inf (KL = +inf)

    [[nodiscard]] double kl() const { return cross / sum_p - std::log(sum_p) + std::log(sum_q); }
};

template <class T>
inline void accumulate_kl(kl_stats& s, const T* zp, const T* zq, index_t n, double scale) {
    double cmx = neg_inf, cmy = neg_inf;
    int bad = 0;
    for (index_t i = 0; i < n; ++i) {
        const double x = static_cast<double>(zp[i]) * scale;
        const double y = static_cast<double>(zq[i]) * scale;
        cmx = x > cmx ? x : cmx;
        cmy = y > cmy ? y : cmy;
        bad |= static_cast<int>(!(x < pos_inf)) | static_cast<int>(!(y < pos_inf));
    }
    if (bad != 0) {
        s.invalid = true;
        return;
    }
    if (cmx > s.max_p) {
        if (s.max_p != neg_inf) {
            const double shift = s.max_p - cmx;
            const double factor = std::exp(shift);
            s.cross = factor * (s.cross + shift * s.sum_p);
            s.sum_p *= factor;
        }
        s.max_p = cmx;
    }
    if (cmy > s.max_q) {
        if (s.max_q != neg_inf) {
            s.cross += (cmy - s.max_q) * s.sum_p;
            s.sum_q *= std::exp(s.max_q - cmy);
        }
        s.max_q = cmy;
    }
    const double mx = s.max_p, my = s.max_q;
    if (mx == neg_inf && my == neg_inf) return;
    double sp = 0.0, sq = 0.0, cross = 0.0;
    if (mx == neg_inf) {
        for (index_t i = 0; i < n; ++i) sq += std::exp(static_cast<double>(zq[i]) * scale - my);
    } else if (my == neg_inf) {
        for (index_t i = 0; i < n; ++i) sp += std::exp(static_cast<double>(zp[i]) * scale - mx);
        if (cmx > neg_inf) s.unsupported = true;
    } else {
        int unsupported = 0;
        for (index_t i = 0; i < n; ++i) {
            const double dx = static_cast<double>(zp[i]) * scale - mx;
            const double dy = static_cast<double>(zq[i]) * scale - my;
            const double ep = std::exp(dx);
            sp += ep;
            sq += std::exp(dy);
            cross += ep > 0.0 ? ep * (dx - dy) : 0.0;
            unsupported |= static_cast<int>(ep > 0.0) & static_cast<int>(dy == neg_inf);
        }
        if (unsupported != 0) s.unsupported = true;
    }
    s.sum_p += sp;
    s.sum_q += sq;
    s.cross += cross;
}

template <class T>
[[nodiscard]] inline kl_stats checked_kl_stats(std::string_view function, const T* zp, const T* zq, index_t v,
                                               double scale, index_t b, index_t t) {
    kl_stats s;
    for (index_t begin = 0; begin < v; begin += chunk)
        accumulate_kl(s, zp + begin, zq + begin, std::min(chunk, v - begin), scale);
    if (s.invalid || s.max_p == neg_inf) {
        const row_stats p = softmax_stats(zp, v, scale);
        if (p.invalid || p.max == neg_inf) fail_row(function, "policy_logits", zp, v, scale, b, t);
        fail_row(function, "reference_logits", zq, v, scale, b, t);
    }
    if (s.max_q == neg_inf) fail_row(function, "reference_logits", zq, v, scale, b, t);
    if (s.unsupported) {
        for (index_t i = 0; i < v; ++i)
            if (static_cast<double>(zp[i]) > neg_inf && static_cast<double>(zq[i]) == neg_inf)
                fail(error_kind::value, function, "reference_logits",
                     "a logit above -inf wherever the policy has probability > 0 (else the KL is +inf)",
                     "-inf at " + shape_string(extents_t<3>{b, t, i}));
    }
    return s;
}

template <class T, class M>
void check_kl_inputs(std::string_view function, const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
                     const view<M>* mask, double temperature) {
    check_positive(function, "temperature", temperature);
    check_logits(function, "policy_logits", policy_logits);
    check_same_shape(function, "reference_logits", reference_logits, "policy_logits", policy_logits);
    if (mask != nullptr) {
        check_shape(function, "mask", *mask, {policy_logits.extent(0), policy_logits.extent(1)});
        check_binary_mask(function, "mask", *mask);
    }
}

template <class T, class M>
void full_kl(std::string_view function, const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
             const view<M>* mask, const mut_view<T>& kl, double temperature) {
    check_kl_inputs(function, policy_logits, reference_logits, mask, temperature);
    const index_t batch = policy_logits.extent(0), steps = policy_logits.extent(1), vocab = policy_logits.extent(2);
    check_shape(function, "kl", kl, {batch, steps});
    const double scale = 1.0 / temperature;
    for (index_t b = 0; b < batch; ++b) {
        for (index_t t = 0; t < steps; ++t) {
            if (masked_out(mask, b, t)) {
                kl(b, t) = T{0};
                continue;
            }
            const kl_stats s =
                checked_kl_stats(function, &policy_logits(b, t, 0), &reference_logits(b, t, 0), vocab, scale, b, t);
            kl(b, t) = static_cast<T>(s.kl());
        }
    }
}

template <class T, class M>
void full_kl_backward(std::string_view function, const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
                      const view<M>* mask, const view<T>& grad_kl, const mut_view<T, 3>& grad_policy_logits,
                      double temperature) {
    check_kl_inputs(function, policy_logits, reference_logits, mask, temperature);
    const index_t batch = policy_logits.extent(0), steps = policy_logits.extent(1), vocab = policy_logits.extent(2);
    check_shape(function, "grad_kl", grad_kl, {batch, steps});
    check_finite(function, "grad_kl", grad_kl);
    check_same_shape(function, "grad_policy_logits", grad_policy_logits, "policy_logits", policy_logits);
    const double scale = 1.0 / temperature;
    for (index_t b = 0; b < batch; ++b) {
        for (index_t t = 0; t < steps; ++t) {
            T* out = &grad_policy_logits(b, t, 0);
            if (masked_out(mask, b, t)) {
                zero_row(out, vocab);
                continue;
            }
            const T* zp = &policy_logits(b, t, 0);
            const T* zq = &reference_logits(b, t, 0);
            const kl_stats s = checked_kl_stats(function, zp, zq, vocab, scale, b, t);
            // dKL/dx_j = p_j·(log p_j − log q_j − KL)
            const double kl_value = s.kl();
            const double log_sp = std::log(s.sum_p), log_sq = std::log(s.sum_q);
            const double g = static_cast<double>(grad_kl(b, t)) * scale;
            for (index_t j = 0; j < vocab; ++j) {
                const double dx = static_cast<double>(zp[j]) * scale - s.max_p;
                const double dy = static_cast<double>(zq[j]) * scale - s.max_q;
                const double p = std::exp(dx - log_sp);
                const double bracket = ((dx - log_sp) - (dy - log_sq)) - kl_value;
                out[j] = static_cast<T>(kl_gradient(g, p, bracket));
            }
        }
    }
}

// -- LM loss ----------------------------------------------------------------------------------

template <class T, class M>
lm_loss_result lm_loss(std::string_view function, const view<T, 3>& logits, const view<std::int64_t>& tokens,
                       const view<M>* mask, const mut_view<T, 3>* grad_logits, double grad_scale,
                       const lm_loss_options& options) {
    check_positive(function, "temperature", options.temperature);
    check_logits(function, "logits", logits);
    const index_t batch = logits.extent(0), steps = logits.extent(1), vocab = logits.extent(2);
    check_shape(function, "tokens", tokens, {batch, steps});
    if (mask != nullptr) {
        check_shape(function, "mask", *mask, {batch, steps});
        check_binary_mask(function, "mask", *mask);
    }
    if (grad_logits != nullptr) check_same_shape(function, "grad_logits", *grad_logits, "logits", logits);
    if (!std::isfinite(grad_scale))
        fail(error_kind::value, function, "grad_loss", "a finite value", number_string(grad_scale));
    const auto counted = [&](index_t b, index_t t) {
        return !masked_out(mask, b, t) && !(options.ignore_index && tokens(b, t) == *options.ignore_index);
    };
    index_t count = 0;
    for (index_t b = 0; b < batch; ++b)
        for (index_t t = 0; t < steps; ++t)
            if (counted(b, t)) {
                (void)checked_token(function, tokens, b, t, vocab);
                ++count;
            }
    const double scale = 1.0 / options.temperature;
    // d(mean NLL)/dx_j = (p_j − onehot_j) / N, times the upstream gradient.
    const double g_lp = count > 0 ? -grad_scale / static_cast<double>(count) : 0.0;
    double nll = 0.0;
    for (index_t b = 0; b < batch; ++b) {
        for (index_t t = 0; t < steps; ++t) {
            T* out = grad_logits != nullptr ? &(*grad_logits)(b, t, 0) : nullptr;
            if (!counted(b, t)) {
                if (out != nullptr) zero_row(out, vocab);
                continue;
            }
            const T* z = &logits(b, t, 0);
            const std::int64_t y = tokens(b, t);
            const row_stats stats = checked_stats(function, "logits", z, vocab, scale, b, t);
            check_token_logit(function, z, y, b, t);
            nll -= (static_cast<double>(z[y]) * scale - stats.max) - stats.log_sum();
            if (out != nullptr)
                (void)gradient_row(z, out, vocab, scale, stats.max, stats.log_sum(), 0.0, g_lp, 0.0, y, true);
        }
    }
    return {count > 0 ? nll / static_cast<double>(count) : 0.0, count};
}

}  // namespace detail::logits

// -- public API -------------------------------------------------------------------------------

/// Token log-probabilities `log softmax(z / τ)[y]` of `logits [B, T, V]` at `tokens [B, T]`,
/// with the entropy `H = logsumexp(x) − Σ softmax(x)·x` (`x = z / τ`) and `logsumexp(x)` of each
/// position, all from one streaming pass over each vocabulary row (online log-sum-exp; the
/// `[B, T, V]` log-softmax is never formed). Writes `logprobs [B, T]`; `entropy [B, T]` and
/// `logsumexp [B, T]` are optional outputs (pass `{}` to skip); keep both for a one-pass
/// `rlhf::logprobs_from_logits_backward`. `logsumexp` is double for float logits too: rounded to
/// float it would shift every `p = exp(x − logsumexp)` by up to `|x|·2⁻²⁴` (1e-3 at |x| = 1e4).
///
/// `mask [B, T] ∈ {0,1}`: positions with mask 0 are not read (their logits and tokens may hold
/// anything, e.g. -100 labels) and get 0 in every output. Token ids of unmasked positions must
/// lie in `[0, V)` and have a logit above -inf, else `rlhf::error` naming `tokens` and the
/// position. Logits: see the file comment (-inf legal; NaN, +inf, all -inf rejected).
/// @note `logprobs` reproduces TRL `logprobs_from_logits` (huggingface/trl, trl/core.py, v0.11.4),
///       DeepSpeed-Chat `gather_log_probs` (microsoft/DeepSpeedExamples,
///       applications/DeepSpeed-Chat/dschat/rlhf/ppo_trainer.py), verl `logprobs_from_logits`
///       (volcengine/verl, verl/utils/torch_functional.py); `entropy` reproduces TRL
///       `entropy_from_logits` (trl/core.py), verl `entropy_from_logits` (verl/utils/torch_functional.py)
///       and OpenRLHF `compute_entropy` (OpenRLHF/OpenRLHF, openrlhf/models/utils.py).
template <class T, class M>
void logprobs_from_logits(const view<T, 3>& logits, const view<std::int64_t>& tokens, const view<M>& mask,
                          const mut_view<T>& logprobs, const mut_view<T>& entropy = {},
                          const mut_view<double>& logsumexp = {}, const logits_options& options = {}) {
    detail::logits::forward("rlhf::logprobs_from_logits", logits, &tokens, &mask, logprobs, entropy, logsumexp,
                            options.temperature);
}

/// `rlhf::logprobs_from_logits` without a mask (every position is read).
template <class T>
void logprobs_from_logits(const view<T, 3>& logits, const view<std::int64_t>& tokens, const mut_view<T>& logprobs,
                          const mut_view<T>& entropy = {}, const mut_view<double>& logsumexp = {},
                          const logits_options& options = {}) {
    detail::logits::forward<T, bool>("rlhf::logprobs_from_logits", logits, &tokens, nullptr, logprobs, entropy,
                                     logsumexp, options.temperature);
}

/// Gradient of `Σ g_lp·logprobs + g_H·entropy` w.r.t. `logits [B, T, V]`, written into
/// `grad_logits [B, T, V]` in one pass per row:
/// `d lp/dz = (onehot(y) − p)/τ`, `dH/dz = −p·(x − Σp·x)/τ` with `p = softmax(x)`, `x = z / τ`.
/// `grad_logprobs [B, T]` and `grad_entropy [B, T]` are the upstream gradients; either may be `{}`
/// (no gradient flows through that output). `logsumexp` (double) and `entropy [B, T]` are the
/// forward's optional outputs, inputs here (before the output `grad_logits`): given, each row is
/// read once; `{}`, the statistics are recomputed (one more read of each row).
/// Masked positions (mask 0) get a 0 gradient row and are not read.
/// Upstream gradients must be finite.
template <class T, class M>
void logprobs_from_logits_backward(const view<T, 3>& logits, const view<std::int64_t>& tokens, const view<M>& mask,
                                   const view<T>& grad_logprobs, const view<T>& grad_entropy,
                                   const view<double>& logsumexp, const view<T>& entropy,
                                   const mut_view<T, 3>& grad_logits, const logits_options& options = {}) {
    detail::logits::backward("rlhf::logprobs_from_logits_backward", logits, &tokens, &mask, grad_logprobs, grad_entropy,
                             grad_logits, logsumexp, entropy, options.temperature);
}

/// `rlhf::logprobs_from_logits_backward` without a mask.
template <class T>
void logprobs_from_logits_backward(const view<T, 3>& logits, const view<std::int64_t>& tokens,
                                   const view<T>& grad_logprobs, const view<T>& grad_entropy,
                                   const view<double>& logsumexp, const view<T>& entropy,
                                   const mut_view<T, 3>& grad_logits, const logits_options& options = {}) {
    detail::logits::backward<T, bool>("rlhf::logprobs_from_logits_backward", logits, &tokens, nullptr, grad_logprobs,
                                      grad_entropy, grad_logits, logsumexp, entropy, options.temperature);
}

/// Entropy `H = logsumexp(x) − Σ softmax(x)·x` (`x = z / τ`) of each position of
/// `logits [B, T, V]`, written into `entropy [B, T]` (one streaming pass per row); `logsumexp`
/// optional. Masked positions get 0.
/// @note Reproduces TRL `entropy_from_logits` (huggingface/trl, trl/core.py, v0.11.4), verl
///       `entropy_from_logits` (volcengine/verl, verl/utils/torch_functional.py; its
///       `compute_entropy_loss` in verl/trainer/ppo/core_algos.py aggregates these over
///       `response_mask`) and OpenRLHF `compute_entropy` (openrlhf/models/utils.py).
template <class T, class M>
void entropy_from_logits(const view<T, 3>& logits, const view<M>& mask, const mut_view<T>& entropy,
                         const mut_view<double>& logsumexp = {}, const logits_options& options = {}) {
    detail::logits::forward("rlhf::entropy_from_logits", logits, nullptr, &mask, mut_view<T>{}, entropy, logsumexp,
                            options.temperature);
}

/// `rlhf::entropy_from_logits` without a mask.
template <class T>
void entropy_from_logits(const view<T, 3>& logits, const mut_view<T>& entropy, const mut_view<double>& logsumexp = {},
                         const logits_options& options = {}) {
    detail::logits::forward<T, bool>("rlhf::entropy_from_logits", logits, nullptr, nullptr, mut_view<T>{}, entropy,
                                     logsumexp, options.temperature);
}

/// Gradient of `Σ g_H·entropy` w.r.t. `logits [B, T, V]`: `−p·(x − Σp·x)/τ`, into
/// `grad_logits [B, T, V]`; the saved `logsumexp` and `entropy` (each may be `{}`) come before it,
/// as in `rlhf::logprobs_from_logits_backward`. Masked positions get 0.
template <class T, class M>
void entropy_from_logits_backward(const view<T, 3>& logits, const view<M>& mask, const view<T>& grad_entropy,
                                  const view<double>& logsumexp, const view<T>& entropy,
                                  const mut_view<T, 3>& grad_logits, const logits_options& options = {}) {
    detail::logits::backward("rlhf::entropy_from_logits_backward", logits, nullptr, &mask, view<T>{}, grad_entropy,
                             grad_logits, logsumexp, entropy, options.temperature);
}

/// `rlhf::entropy_from_logits_backward` without a mask.
template <class T>
void entropy_from_logits_backward(const view<T, 3>& logits, const view<T>& grad_entropy, const view<double>& logsumexp,
                                  const view<T>& entropy, const mut_view<T, 3>& grad_logits,
                                  const logits_options& options = {}) {
    detail::logits::backward<T, bool>("rlhf::entropy_from_logits_backward", logits, nullptr, nullptr, view<T>{},
                                      grad_entropy, grad_logits, logsumexp, entropy, options.temperature);
}

/// Full-vocabulary KL per position, `KL(p‖q) = Σ_v p(v)·(log p(v) − log q(v))` with
/// `p = softmax(policy_logits / τ)`, `q = softmax(reference_logits / τ)`, both `[B, T, V]`,
/// written into `kl [B, T]`. One fused streaming pass over both rows (two online log-sum-exps).
/// Masked positions get 0 and are not read. A reference logit of -inf where the policy has
/// probability > 0 makes the KL +inf: `rlhf::error` naming `reference_logits` (a -inf policy
/// logit contributes 0). Rounding can leave a KL of about −1e-16 for equal distributions
/// (not clamped, as TRL).
/// @note Reproduces TRL classic `PPOTrainer._kl_penalty` with `kl_penalty='full'`
///       (huggingface/trl, trl/trainer/ppo_trainer.py, v0.11.4:
///       `F.kl_div(ref_logprob, logprob, log_target=True, reduction='none').sum(-1)`), which takes
///       log-softmax outputs: log-probs are valid logits (their log-sum-exp is 0), so passing
///       them gives the same numbers. verl raises NotImplementedError for `full`.
template <class T, class M>
void full_kl_from_logits(const view<T, 3>& policy_logits, const view<T, 3>& reference_logits, const view<M>& mask,
                         const mut_view<T>& kl, const logits_options& options = {}) {
    detail::logits::full_kl("rlhf::full_kl_from_logits", policy_logits, reference_logits, &mask, kl,
                            options.temperature);
}

/// `rlhf::full_kl_from_logits` without a mask.
template <class T>
void full_kl_from_logits(const view<T, 3>& policy_logits, const view<T, 3>& reference_logits, const mut_view<T>& kl,
                         const logits_options& options = {}) {
    detail::logits::full_kl<T, bool>("rlhf::full_kl_from_logits", policy_logits, reference_logits, nullptr, kl,
                                     options.temperature);
}

/// Gradient of `Σ g·KL` w.r.t. the policy logits: `dKL/dz_j = p_j·(log p_j − log q_j − KL)/τ`,
/// written into `grad_policy_logits [B, T, V]` (the reference is a constant). Two passes per row
/// (statistics, then the gradient; the row is re-read while it is in cache). `grad_kl [B, T]`
/// finite. Masked positions get 0.
template <class T, class M>
void full_kl_from_logits_backward(const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
                                  const view<M>& mask, const view<T>& grad_kl, const mut_view<T, 3>& grad_policy_logits,
                                  const logits_options& options = {}) {
    detail::logits::full_kl_backward("rlhf::full_kl_from_logits_backward", policy_logits, reference_logits, &mask,
                                     grad_kl, grad_policy_logits, options.temperature);
}

/// `rlhf::full_kl_from_logits_backward` without a mask.
template <class T>
void full_kl_from_logits_backward(const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
                                  const view<T>& grad_kl, const mut_view<T, 3>& grad_policy_logits,
                                  const logits_options& options = {}) {
    detail::logits::full_kl_backward<T, bool>("rlhf::full_kl_from_logits_backward", policy_logits, reference_logits,
                                              nullptr, grad_kl, grad_policy_logits, options.temperature);
}

/// Language-model loss for PTX / SFT: the token-mean negative log-likelihood
/// `−Σ m·log softmax(z/τ)[y] / Σ m` over the counted positions (mask 1 and token ≠
/// `ignore_index`) of `logits [B, T, V]` and `tokens [B, T]`. `logits[b, t]` predicts
/// `tokens[b, t]`: for a causal LM pass the shifted pair (`logits[:, :-1]`, `tokens[:, 1:]`,
/// both views without a copy). With no counted token the loss is 0 (documented; torch's
/// `CrossEntropyLoss` gives NaN). Token ids of counted positions must lie in `[0, V)`.
/// When `grad_logits [B, T, V]` is given (non-empty) it receives `d loss / d logits`
/// (`(p − onehot(y)) / (N·τ)` on counted rows, 0 elsewhere), computed while each row is in cache.
/// @note Reproduces ColossalChat `GPTLMLoss` (hpcaitech/ColossalAI,
///       applications/Chat/coati/models/loss.py; CrossEntropyLoss with ignore_index -100 after
///       the shift), OpenRLHF `GPTLMLoss` (openrlhf/models/loss.py, the former PTX loss) and the
///       Hugging Face causal-LM loss DeepSpeed-Chat's `train_unsupervised` backpropagates
///       (applications/DeepSpeed-Chat/dschat/rlhf/ppo_trainer.py), scaled there by `unsup_coef`.
template <class T, class M>
lm_loss_result lm_loss(const view<T, 3>& logits, const view<std::int64_t>& tokens, const view<M>& mask,
                       const mut_view<T, 3>& grad_logits = {}, const lm_loss_options& options = {}) {
    const bool want = grad_logits.data() != nullptr;
    return detail::logits::lm_loss("rlhf::lm_loss", logits, tokens, &mask, want ? &grad_logits : nullptr, 1.0, options);
}

/// `rlhf::lm_loss` without a mask (positions are excluded through `ignore_index` only).
template <class T>
lm_loss_result lm_loss(const view<T, 3>& logits, const view<std::int64_t>& tokens,
                       const mut_view<T, 3>& grad_logits = {}, const lm_loss_options& options = {}) {
    const bool want = grad_logits.data() != nullptr;
    return detail::logits::lm_loss<T, bool>("rlhf::lm_loss", logits, tokens, nullptr, want ? &grad_logits : nullptr,
                                            1.0, options);
}

/// Gradient of `grad_loss · lm_loss` w.r.t. `logits`, into `grad_logits [B, T, V]`.
template <class T, class M>
void lm_loss_backward(const view<T, 3>& logits, const view<std::int64_t>& tokens, const view<M>& mask, double grad_loss,
                      const mut_view<T, 3>& grad_logits, const lm_loss_options& options = {}) {
    (void)detail::logits::lm_loss("rlhf::lm_loss_backward", logits, tokens, &mask, &grad_logits, grad_loss, options);
}

/// `rlhf::lm_loss_backward` without a mask.
template <class T>
void lm_loss_backward(const view<T, 3>& logits, const view<std::int64_t>& tokens, double grad_loss,
                      const mut_view<T, 3>& grad_logits, const lm_loss_options& options = {}) {
    (void)detail::logits::lm_loss<T, bool>("rlhf::lm_loss_backward", logits, tokens, nullptr, &grad_logits, grad_loss,
                                           options);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
