// libFuzzer target: rlhf::policy_loss and rlhf::value_loss on views, with their gradient and
// per-token outputs and options drawn from the input (docs/fuzzing.md).
//
// Per input: a float32 call on contiguous buffers (the optional outputs the input asks for), a
// float32 call on strided views with every output (bitwise equal on what both have; padding never
// written), a call with another mask element type (bitwise equal), and the double reference on
// the same float-rounded inputs. Either all of them throw the same `rlhf::error`, or nothing is
// NaN and the float32 results equal the reference within the float32 tolerance. Near a kink of
// the loss (a clip bound, a tie of a min/max, a threshold) float32 and double rounding may pick
// different branches: a mismatch there is accepted when it matches the double kernel on inputs
// nudged by a few float32 ulps (2^-20 relative) in either direction.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "loss_stat_fields.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"

namespace {

using rlhf::index_t;
using rlhf_fuzz::matrix;
using rlhf_fuzz::outcome;
using rlhf_fuzz::require;
using rlhf_fuzz::source;
using rlhf_fuzz::violation;

// ---- options ----------------------------------------------------------------------------------------

rlhf::aggregation_options decode_aggregation(source& in) {
    rlhf::aggregation_options o;
    o.mode = in.enumeration<rlhf::loss_aggregation>(4);
    if (in.chance(40)) o.global_token_count = in.option({1.0, 5.0, 100.0, 0.5});
    if (in.chance(40)) o.global_sequence_count = in.option({1.0, 2.0, 4.0});
    if (in.chance(64)) o.normalizer = in.option({1.0, 10.0, 256.0});
    if (in.chance(32)) o.dp_size = in.option({1.0, 2.0, 8.0});
    if (in.chance(32)) o.token_count_epsilon = in.option({1e-8, 0.0, 1e-3});
    return o;
}

bool is_nan(const std::optional<double>& x) {
    return x && std::isnan(*x);
}

/// Why options are refused by the documentation ("" when they are not): a NaN anywhere, an enum
/// value out of range.
std::string invalid(const rlhf::aggregation_options& o) {
    const auto mode = static_cast<int>(o.mode);
    if (mode < 0 || mode > 3) return "aggregation.mode " + std::to_string(mode);
    if (is_nan(o.global_token_count) || is_nan(o.global_sequence_count) || is_nan(o.normalizer) ||
        std::isnan(o.dp_size) || std::isnan(o.token_count_epsilon))
        return "a NaN aggregation option";
    return {};
}

rlhf::policy_loss_options decode_policy_options(source& in) {
    rlhf::policy_loss_options o;
    if (in.flag()) o.clip_low = in.option({0.2, 0.0, 1.0, 0.1});
    if (in.flag()) o.clip_high = in.option({0.2, 0.28, 0.0, 10.0});
    o.dual_clip = in.optional_option({3.0, 1.5, 10.0});
    if (in.flag()) o.ratio_cap = in.option({10.0, 1.0, 2.0, 0.5});
    if (in.flag()) o.loss_cap = in.option({3.0, 0.0, -1.0, 100.0});
    if (in.flag()) o.log_ratio_min = in.option({-20.0, -10.0, -88.0, 0.0});
    if (in.flag()) o.log_ratio_max = in.option({20.0, 10.0, 88.0, 0.0});
    o.mask_log_ratio = in.flag();
    if (in.chance(48)) o.skip_threshold = in.option({20.0, 1.0, 0.5});
    if (in.chance(48)) o.ratio_threshold = in.option({10.0, 1.0, 1.5});
    o.level = in.enumeration<rlhf::importance_ratio_level>(2);
    o.aggregation = decode_aggregation(in);
    return o;
}

std::string invalid(const rlhf::policy_loss_options& o) {
    const auto level = static_cast<int>(o.level);
    if (level < 0 || level > 1) return "level " + std::to_string(level);
    if (std::isnan(o.clip_low) || std::isnan(o.clip_high) || is_nan(o.dual_clip) || is_nan(o.ratio_cap) ||
        is_nan(o.loss_cap) || is_nan(o.log_ratio_min) || is_nan(o.log_ratio_max) || is_nan(o.skip_threshold) ||
        is_nan(o.ratio_threshold))
        return "a NaN option";
    return invalid(o.aggregation);
}

rlhf::value_loss_options decode_value_options(source& in) {
    rlhf::value_loss_options o;
    if (in.flag()) o.clip_range = in.optional_option({0.2, 0.5, 0.0, 0.4, 10.0});
    o.huber_delta = in.flag() ? std::nullopt : in.optional_option({10.0, 1.0, 0.5});
    if (in.flag()) o.scale = in.option({0.5, 1.0, 0.0, -0.5, 2.0});
    if (in.flag()) o.coef = in.option({1.0, 0.1, 0.5, 0.0, -1.0});
    o.returns_from_advantages = in.flag();
    o.aggregation = decode_aggregation(in);
    return o;
}

std::string invalid(const rlhf::value_loss_options& o) {
    if (is_nan(o.clip_range) || is_nan(o.huber_delta) || std::isnan(o.scale) || std::isnan(o.coef))
        return "a NaN option";
    return invalid(o.aggregation);
}

// ---- problems ---------------------------------------------------------------------------------------

/// A decoded `[B, T]` problem: three value inputs (policy: log_probs, old_log_probs, advantages;
/// value: values, old_values, returns), a mask, the row padding of each buffer in the strided
/// call, the optional outputs of the contiguous call, and possibly one mis-shaped argument.
struct problem {
    index_t rows = 0, cols = 0;
    std::array<std::vector<float>, 3> x;
    rlhf_fuzz::mask_values mask;
    std::size_t mask_type = 5, other_mask_type = 5;
    bool other_mask_ok = false;
    std::array<index_t, 6> pad{};  // x0, x1, x2, mask, first output, second output
    bool want_grad = true, want_tokens = true;
    int misshape = 0;  // 1, 2: x1, x2; 3: mask; 4, 5: the outputs (one column more)
};

template <class M>
bool mask_fits(const rlhf_fuzz::mask_values& m) {
    for (const double v : m.m)
        if (!rlhf_fuzz::representable<M>(v)) return false;
    return true;
}

bool mask_fits(std::size_t type, const rlhf_fuzz::mask_values& m) {
    return rlhf_fuzz::with_mask_type(type, [&]<class M>(std::type_identity<M>) { return mask_fits<M>(m); });
}

/// `first` is a base input (log-probs, values); `second` = first − delta mostly (ratios near 1,
/// values near the old ones), sometimes independent; `third` independent.
problem decode_problem(source& in, int base_low, int base_high) {
    problem p;
    p.rows = in.extent(4, 9);
    p.cols = in.extent(12, 600);
    const auto n = static_cast<std::size_t>(p.rows * p.cols);
    const std::vector<double> first = in.values(n, base_low, base_high);
    std::vector<double> second;
    if (in.chance(64)) {
        second = in.values(n, base_low, base_high);
    } else {
        second = in.values(n, -14, 2);
        for (std::size_t i = 0; i < n; ++i) second[i] = first[i] - second[i];
    }
    const std::vector<double> third = in.values(n, -6, 4);
    p.x = {rlhf_fuzz::to_float(first), rlhf_fuzz::to_float(second), rlhf_fuzz::to_float(third)};
    p.mask = rlhf_fuzz::decode_mask(in, p.rows, p.cols);
    p.mask_type = in.pick(rlhf_fuzz::mask_type_count);
    if (!mask_fits(p.mask_type, p.mask)) p.mask_type = 5;  // double holds every value
    p.other_mask_type = in.pick(rlhf_fuzz::mask_type_count);
    p.other_mask_ok = p.mask.binary && p.other_mask_type != p.mask_type;
    for (index_t& pad : p.pad) pad = in.integer<index_t>(0, 3);
    p.want_grad = in.flag();
    p.want_tokens = in.flag();
    if (in.chance(12)) p.misshape = in.integer<int>(1, 5);
    if (p.misshape == 4) p.want_grad = true;
    if (p.misshape == 5) p.want_tokens = true;
    return p;
}

/// Row-major `values` of `[rows, cols]` widened to `[rows, cols + 1]` (the extra column `extra`).
std::vector<double> widen(std::span<const double> values, index_t rows, index_t cols, double extra) {
    std::vector<double> out;
    out.reserve(static_cast<std::size_t>(rows * (cols + 1)));
    for (index_t b = 0; b < rows; ++b) {
        for (index_t t = 0; t < cols; ++t) out.push_back(values[static_cast<std::size_t>(b * cols + t)]);
        out.push_back(extra);
    }
    return out;
}

std::string describe(const problem& p) {
    using rlhf_fuzz::list;
    return "B " + std::to_string(p.rows) + ", T " + std::to_string(p.cols) + ", x0 " +
           list(std::span<const float>(p.x[0])) + ", x1 " + list(std::span<const float>(p.x[1])) + ", x2 " +
           list(std::span<const float>(p.x[2])) + ", mask " + list(std::span<const double>(p.mask.m)) + ", mask type " +
           std::to_string(p.mask_type) + ", misshape " + std::to_string(p.misshape) + ", grad " +
           std::to_string(p.want_grad) + ", tokens " + std::to_string(p.want_tokens);
}

std::string describe(const rlhf::aggregation_options& o) {
    using rlhf_fuzz::num;
    using rlhf_fuzz::opt;
    return "aggregation {mode " + std::to_string(static_cast<int>(o.mode)) + ", tokens " + opt(o.global_token_count) +
           ", sequences " + opt(o.global_sequence_count) + ", normalizer " + opt(o.normalizer) + ", dp " +
           num(o.dp_size) + ", eps " + num(o.token_count_epsilon) + "}";
}

std::string describe(const rlhf::policy_loss_options& o) {
    using rlhf_fuzz::num;
    using rlhf_fuzz::opt;
    return "policy {clip " + num(o.clip_low) + " " + num(o.clip_high) + ", dual " + opt(o.dual_clip) + ", ratio_cap " +
           opt(o.ratio_cap) + ", loss_cap " + opt(o.loss_cap) + ", log_ratio " + opt(o.log_ratio_min) + " " +
           opt(o.log_ratio_max) + ", mask_log_ratio " + std::to_string(o.mask_log_ratio) + ", skip " +
           opt(o.skip_threshold) + ", threshold " + opt(o.ratio_threshold) + ", level " +
           std::to_string(static_cast<int>(o.level)) + ", " + describe(o.aggregation) + "}";
}

std::string describe(const rlhf::value_loss_options& o) {
    using rlhf_fuzz::num;
    using rlhf_fuzz::opt;
    return "value {clip " + opt(o.clip_range) + ", huber " + opt(o.huber_delta) + ", scale " + num(o.scale) +
           ", coef " + num(o.coef) + ", from_advantages " + std::to_string(o.returns_from_advantages) + ", " +
           describe(o.aggregation) + "}";
}

// ---- one run ----------------------------------------------------------------------------------------

/// What one loss call produced (outputs as logical row-major vectors; empty when not asked).
template <class T>
struct loss_run {
    double loss = 0.0;
    std::vector<double> stats;
    std::vector<T> grad, tokens;
};

using rlhf_test::policy_stat_names;
using rlhf_test::stat_values;
using rlhf_test::value_stat_names;

enum class layout { contiguous, strided };

/// Calls `kernel(x0, x1, x2, mask, grad, tokens)` on buffers of `T` and mask element `M` built from
/// `x` (the problem's inputs, or nudged ones) in `where`'s layout; checks that no padding was written.
template <class T, class M, class Kernel>
outcome<loss_run<T>> run_loss(const char* what, std::initializer_list<std::string_view> names, const problem& p,
                              const std::array<std::vector<double>, 3>& x, layout where, bool want_grad,
                              bool want_tokens, Kernel&& kernel) {
    const bool strided = where == layout::strided;
    const auto pad = [&](std::size_t k) { return strided ? p.pad[k] : index_t{0}; };
    const auto cols_of = [&](int k) { return p.misshape == k ? p.cols + 1 : p.cols; };
    std::array<matrix<T>, 3> in;
    for (std::size_t k = 0; k < 3; ++k) {
        const int id = k == 0 ? -1 : static_cast<int>(k);  // the first input is the shape reference
        const std::vector<double> values = p.misshape == id ? widen(x[k], p.rows, p.cols, 0.0) : x[k];
        in[k] = matrix<T>::from(std::span<const double>(values), p.rows, cols_of(id), pad(k), rlhf_fuzz::sentinel<T>());
    }
    const std::vector<double> mask_values = p.misshape == 3 ? widen(p.mask.m, p.rows, p.cols, 1.0) : p.mask.m;
    const M mask_padding = rlhf_fuzz::mask_padding<M>();
    const matrix<M> mask =
        matrix<M>::from(std::span<const double>(mask_values), p.rows, cols_of(3), pad(3), mask_padding);
    matrix<T> grad(p.rows, cols_of(4), pad(4));
    matrix<T> tokens(p.rows, cols_of(5), pad(5));
    grad.fill(rlhf_fuzz::sentinel<T>());
    tokens.fill(rlhf_fuzz::sentinel<T>());
    auto result = rlhf_fuzz::attempt(what, names, [&] {
        loss_run<T> out;
        const auto [loss, stats] =
            kernel(in[0].view(), in[1].view(), in[2].view(), mask.view(), want_grad ? grad.mut() : rlhf::mut_view<T>{},
                   want_tokens ? tokens.mut() : rlhf::mut_view<T>{});
        out.loss = loss;
        out.stats = stat_values(stats);
        if (want_grad) out.grad = grad.logical();
        if (want_tokens) out.tokens = tokens.logical();
        return out;
    });
    const T s = rlhf_fuzz::sentinel<T>();
    require(grad.padding_intact(s) && tokens.padding_intact(s),
            std::string(what) + ": an output's padding was written");
    require((want_grad || grad.untouched(s)) && (want_tokens || tokens.untouched(s)),
            std::string(what) + ": an output that was not asked for was written");
    return result;
}

template <class T>
void no_nan(const std::string& what, const loss_run<T>& r, bool nan_loss_known = false, bool nan_grad_known = false) {
    if (!nan_loss_known) rlhf_fuzz::no_nan(what + " loss", r.loss);
    rlhf_fuzz::no_nan(what + " stats", std::span<const double>(r.stats));
    if (!nan_grad_known) rlhf_fuzz::no_nan(what + " grad", std::span<const T>(r.grad));
    rlhf_fuzz::no_nan(what + " token losses", std::span<const T>(r.tokens));
}

/// Bitwise equality of what two float32 runs both produced.
void same_bits(const std::string& what, const loss_run<float>& a, const loss_run<float>& b) {
    rlhf_fuzz::bitwise_equal(what + " loss", a.loss, b.loss);
    rlhf_fuzz::bitwise_equal(what + " stats", std::span<const double>(a.stats), std::span<const double>(b.stats));
    if (!a.grad.empty() && !b.grad.empty())
        rlhf_fuzz::bitwise_equal(what + " grad", std::span<const float>(a.grad), std::span<const float>(b.grad));
    if (!a.tokens.empty() && !b.tokens.empty())
        rlhf_fuzz::bitwise_equal(what + " token losses", std::span<const float>(a.tokens),
                                 std::span<const float>(b.tokens));
}

std::array<std::vector<double>, 3> as_double(const problem& p) {
    std::array<std::vector<double>, 3> out;
    for (std::size_t k = 0; k < 3; ++k) out[k].assign(p.x[k].begin(), p.x[k].end());
    return out;
}

// ---- reference comparison ---------------------------------------------------------------------------

/// How a float32 run is compared with its double references (the reference on the same inputs
/// first, nudged ones after a mismatch).
struct tolerances {
    double tokens_floor = 0.0;                         ///< scale floor of the per-token losses (float32 intermediates)
    double grad_floor = 0.0;                           ///< scale floor of the gradient
    double tokens_slack = rlhf_fuzz::subnormal_slack;  ///< absolute slack of a token loss (subnormals)
    double grad_slack = rlhf_fuzz::subnormal_slack;    ///< absolute slack of a gradient entry
    index_t row_length = 0;           ///< > 0: an overflowed token excuses the gradient of its row (GSPO)
    std::vector<double> stat_scales;  ///< per statistic: the scale of `close_scalar`
    std::vector<bool> stat_skipped;   ///< per statistic: not compared
    std::vector<double> stat_range;   ///< per statistic: > 0 for a count or flag, its largest value
    bool split_ties = false;          ///< a gradient may be the reference times 0, 1/2, 1 or 2 (value loss ties)
    double loss_scale = 1.0;          ///< the scale of the loss (Σ of the magnitudes of its terms)
};

/// Compares `f` (float32, every output) with the double references; returns what failed, if anything.
std::optional<std::string> mismatch(const loss_run<float>& f, const std::vector<const loss_run<double>*>& refs,
                                    const tolerances& tol, std::span<const char* const> stat_names) {
    constexpr double eps = rlhf_fuzz::float32_tolerance;
    // Token losses, entry by entry: an entry passes against any reference. An entry beyond the
    // float32 range excuses the gradient at the same token and the loss.
    std::vector<bool> overflowed(f.tokens.size(), false);
    for (std::size_t i = 0; i < f.tokens.size(); ++i) {
        bool ok = false;
        for (const loss_run<double>* r : refs) {
            bool overflow = false;
            const double scale = rlhf_fuzz::element_scale(r->tokens, tol.tokens_floor);
            ok = rlhf_fuzz::element_ok(static_cast<double>(f.tokens[i]), r->tokens[i], eps, scale, overflow,
                                       tol.tokens_slack) ||
                 ok;
            overflowed[i] = overflowed[i] || overflow;
        }
        if (!ok)
            return "token loss at " + std::to_string(i) + ": " + rlhf_fuzz::num(static_cast<double>(f.tokens[i])) +
                   " vs reference " + rlhf_fuzz::num(refs[0]->tokens[i]);
    }
    bool any_overflow = false;
    for (const bool o : overflowed) any_overflow = any_overflow || o;
    if (tol.row_length > 0) {  // the sequence ratio: a token's overflow reaches its whole row
        const auto n = static_cast<std::size_t>(tol.row_length);
        for (std::size_t start = 0; start < overflowed.size(); start += n) {
            bool row = false;
            for (std::size_t i = start; i < start + n; ++i) row = row || overflowed[i];
            for (std::size_t i = start; i < start + n; ++i) overflowed[i] = row;
        }
    }
    // The TRL ratio threshold zeroes the loss and the gradient; float32 and double may sit on
    // either side of it (ratio_mean itself is compared below).
    const bool threshold_split = f.stats.size() > 9 && f.stats[9] != refs[0]->stats[9];
    // Gradient: excused where the token loss overflowed float32.
    for (std::size_t i = 0; i < f.grad.size() && !threshold_split; ++i) {
        bool ok = overflowed[i];
        double low = std::numeric_limits<double>::infinity(), high = -low, slack = 0.0;
        for (const loss_run<double>* r : refs) {
            bool overflow = false;
            const double scale = rlhf_fuzz::element_scale(r->grad, tol.grad_floor);
            ok = ok || rlhf_fuzz::element_ok(static_cast<double>(f.grad[i]), r->grad[i], eps, scale, overflow,
                                             tol.grad_slack);
            low = std::min(low, r->grad[i]);
            high = std::max(high, r->grad[i]);
            slack = std::max(slack, eps * scale + tol.grad_slack);
        }
        // At a tie of a min/max (torch splits the gradient in halves) that float32 rounding created,
        // the gradient lies between the one-sided ones of the nudged references.
        const auto g = static_cast<double>(f.grad[i]);
        if (!ok && refs.size() > 1) ok = g >= low - slack && g <= high + slack;
        // The value loss's max(ψ(V − R), ψ(V_clip − R)) where V_clip is clamped: ψ' of the clamped
        // side is 0, so a tie that float32 rounding makes (or breaks) gives 0, 1/2 or all of it.
        if (!ok && tol.split_ties)
            for (const double k : {0.0, 0.5, 2.0}) ok = ok || std::abs(g - k * refs[0]->grad[i]) <= slack;
        if (!ok)
            return "gradient at " + std::to_string(i) + ": " + rlhf_fuzz::num(static_cast<double>(f.grad[i])) +
                   " vs reference " + rlhf_fuzz::num(refs[0]->grad[i]) + " (scale " +
                   rlhf_fuzz::num(rlhf_fuzz::element_scale(refs[0]->grad, tol.grad_floor)) + ")";
    }

    // Statistics, then the loss. A count or a flag (which branch a token took, a threshold) is
    // only checked for its range: float32 and double round differently at every kink, and both
    // take the branch by the same code.
    for (std::size_t k = 0; k < f.stats.size(); ++k) {
        if (tol.stat_skipped[k]) continue;
        bool ok = false;
        if (tol.stat_range[k] > 0.0) {
            ok = f.stats[k] >= 0.0 && f.stats[k] <= tol.stat_range[k];
        } else {
            for (const loss_run<double>* r : refs)
                ok = ok || rlhf_fuzz::close_scalar(f.stats[k], r->stats[k], eps, tol.stat_scales[k]);
        }
        if (!ok)
            return std::string("statistic ") + stat_names[k] + ": " + rlhf_fuzz::num(f.stats[k]) + " vs reference " +
                   rlhf_fuzz::num(refs[0]->stats[k]);
    }
    if (!any_overflow && !threshold_split) {
        bool ok = false;
        for (const loss_run<double>* r : refs) ok = ok || rlhf_fuzz::close_scalar(f.loss, r->loss, eps, tol.loss_scale);
        if (!ok)
            return "loss: " + rlhf_fuzz::num(f.loss) + " vs reference " + rlhf_fuzz::num(refs[0]->loss) + " (scale " +
                   rlhf_fuzz::num(tol.loss_scale) + ")";
    }
    return std::nullopt;
}

/// `x` with `x[which]` moved by `direction` · (2^-20 · magnitude + 2^-20) per entry, where the
/// magnitude is the largest of the three inputs at that entry: crosses every kink that float32
/// rounding can cross.
std::array<std::vector<double>, 3> nudged(const std::array<std::vector<double>, 3>& x, std::size_t which,
                                          double direction) {
    std::array<std::vector<double>, 3> out = x;
    for (std::size_t i = 0; i < x[which].size(); ++i) {
        const double magnitude = std::max({std::abs(x[0][i]), std::abs(x[1][i]), std::abs(x[2][i])});
        out[which][i] += direction * (std::ldexp(magnitude, -20) + 0x1p-20);
    }
    return out;
}

/// The weighted sum of `terms` [B, T] with the options' aggregation weights (the scale of the loss).
double aggregate_magnitude(const problem& p, std::span<const double> terms, const rlhf::aggregation_options& o) {
    std::vector<double> magnitudes(terms.size());
    for (std::size_t i = 0; i < terms.size(); ++i) magnitudes[i] = std::abs(terms[i]);
    try {
        return std::abs(rlhf::aggregate(rlhf::make_view(magnitudes.data(), p.rows, p.cols),
                                        rlhf::make_view(p.mask.m.data(), p.rows, p.cols), rlhf::mut_view<double>{}, o));
    } catch (const rlhf::error&) {
        return std::numeric_limits<double>::infinity();  // not comparable; the kernel agreed to run
    }
}

/// Whether float32 holds `x` to its relative precision (0, or a normal float32 magnitude): an
/// option that underflows or overflows in T is a different option for the float32 kernel.
bool float_faithful(double x) {
    const double a = std::abs(x);
    return a == 0.0 || (a >= static_cast<double>(std::numeric_limits<float>::min()) &&
                        a <= static_cast<double>(std::numeric_limits<float>::max()));
}
bool float_faithful(const std::optional<double>& x) {
    return !x || float_faithful(*x);
}

/// The aggregation weights c_b of the problem's mask, or nothing when the options refuse it.
std::optional<std::vector<double>> weights_of(const problem& p, const rlhf::aggregation_options& o) {
    std::vector<double> weights(static_cast<std::size_t>(p.rows));
    try {
        (void)rlhf::row_weights(rlhf::make_view(p.mask.m.data(), p.rows, p.cols),
                                rlhf::mut_view<double, 1>(weights.data(), {p.rows}), o);
    } catch (const rlhf::error&) {
        return std::nullopt;
    }
    return weights;
}

/// Whether every non-zero weight (times `factor`) lies in float32's normal range: the kernels
/// round it to T, so a weight below 2^-126 loses digits and one beyond FLT_MAX overflows.
bool weights_in_float_range(const std::vector<double>& weights, double factor) {
    for (const double w : weights) {
        const double x = std::abs(w * factor);
        if (x != 0.0 && (x < static_cast<double>(std::numeric_limits<float>::min()) ||
                         x > static_cast<double>(std::numeric_limits<float>::max())))
            return false;
    }
    return true;
}

// ---- the two losses ---------------------------------------------------------------------------------

constexpr std::initializer_list<std::string_view> policy_names = {
    "log_probs", "old_log_probs", "advantages", "mask", "grad_log_probs", "token_losses", "options."};
constexpr std::initializer_list<std::string_view> value_names = {"values",      "old_values",   "returns", "mask",
                                                                 "grad_values", "token_losses", "options."};

/// The float32, strided, mask-type and double runs of one loss, and the checks common to both.
/// `compare(f, d, refs_maker)` does the reference comparison.
template <class Kernel, class Compare>
void check_loss(const char* name, std::initializer_list<std::string_view> names, const problem& p,
                const std::string& must_throw, bool sequence_level, const rlhf::aggregation_options& aggregation,
                Kernel&& kernel, Compare&& compare) {
    const std::array<std::vector<double>, 3> x = as_double(p);
    rlhf_fuzz::with_mask_type(p.mask_type, [&]<class M>(std::type_identity<M>) {
        const std::string base = name;
        auto f = run_loss<float, M>(name, names, p, x, layout::contiguous, p.want_grad, p.want_tokens, kernel);
        auto s = run_loss<float, M>(name, names, p, x, layout::strided, true, true, kernel);
        auto d = run_loss<double, M>(name, names, p, x, layout::contiguous, true, true, kernel);
        rlhf_fuzz::same_error(base + " contiguous vs strided", f, s);
        // An option float32 cannot represent (a value loss scale beyond FLT_MAX) is refused for
        // float32 only: a config error of the float32 run alone is fine.
        if (!(f.threw && !d.threw && f.kind == rlhf::error_kind::config))
            rlhf_fuzz::same_error(base + " float vs double", f, d);
        if (p.misshape != 0)
            require(f.threw, base + ": a mis-shaped argument (" + std::to_string(p.misshape) + ") was accepted");
        if (!must_throw.empty()) require(f.threw, base + ": an invalid option was accepted: " + must_throw);
        if (f.threw) {
            require(p.misshape != 0 || !must_throw.empty() || f.kind != rlhf::error_kind::shape,
                    base + ": a shape error for well-shaped arguments: " + f.message);
            return;
        }
        // Known issue (docs/fuzzing.md): float32 token losses of +inf and -inf at weighted tokens
        // (|A| near FLT_MAX: clip(ρ)·A overflows both ways) sum to a NaN loss, and under the
        // sequence ratio (GSPO, `sequence_level`) to a NaN gradient of the row.
        const auto both_infinities = [&](const auto& run) {
            bool plus = false, minus = false;
            for (std::size_t i = 0; i < run.tokens.size(); ++i) {
                const bool weighted_inf = p.mask.m[i] != 0.0 && std::isinf(run.tokens[i]);
                plus = plus || (weighted_inf && run.tokens[i] > 0);
                minus = minus || (weighted_inf && run.tokens[i] < 0);
            }
            return plus && minus;
        };
        // Known issue 2: weights so large (dp_size near DBL_MAX) that weight · L overflows double
        // with both signs: the loss is NaN.
        const auto weights = weights_of(p, aggregation);
        bool enormous_weights = false;
        if (weights)
            for (const double w : *weights) enormous_weights = enormous_weights || std::abs(w) > 1e260;
        const bool known_nan_loss = both_infinities(*s.value) || enormous_weights;
        // Under the sequence ratio the row's gradient is a sum of the weighted per-token ones in T:
        // with a weight beyond float32's range they are +-inf too.
        // A weighted per-token gradient is at most |A|·ρ·c_b, ρ the row's ratio (the double run's
        // ratio_max): beyond FLT_MAX it is +-inf in T.
        bool weighted_gradient_overflows = false;
        if (weights && sequence_level) {
            double c_max = 0.0;
            for (const double w : *weights) c_max = std::max(c_max, std::abs(w));
            const double rho = std::max(1.0, d.value->stats[6]);
            weighted_gradient_overflows = rlhf_fuzz::max_abs(std::span<const float>(p.x[2])) * rho * c_max >
                                          0.25 * static_cast<double>(std::numeric_limits<float>::max());
        }
        const bool known_nan_grad = sequence_level && (both_infinities(*s.value) || weighted_gradient_overflows);
        no_nan(base + " float", *f.value, known_nan_loss, known_nan_grad);
        no_nan(base + " strided", *s.value, known_nan_loss, known_nan_grad);
        no_nan(base + " double", *d.value, both_infinities(*d.value) || enormous_weights,
               (both_infinities(*d.value) || enormous_weights) && sequence_level);
        same_bits(base + " contiguous vs strided", *f.value, *s.value);
        if (p.other_mask_ok) {
            rlhf_fuzz::with_mask_type(p.other_mask_type, [&]<class M2>(std::type_identity<M2>) {
                auto o = run_loss<float, M2>(name, names, p, x, layout::contiguous, p.want_grad, p.want_tokens, kernel);
                require(!o.threw, base + ": another mask element type threw: " + o.message);
                same_bits(base + " mask element types", *f.value, *o.value);
            });
        }
        const auto reference = [&](std::size_t which, double direction) -> std::optional<loss_run<double>> {
            auto r = run_loss<double, M>(name, names, p, nudged(x, which, direction), layout::contiguous, true, true,
                                         kernel);
            if (r.threw) return std::nullopt;
            return *r.value;
        };
        // The known issues above leave NaN where the reference has numbers: no comparison then.
        if (!known_nan_loss && !known_nan_grad) compare(*s.value, *d.value, reference);
    });
}

void fuzz_policy(source& in) {
    problem p = decode_problem(in, -8, 4);
    const rlhf::policy_loss_options o = decode_policy_options(in);
    rlhf_fuzz::describe_input() = [&] { return describe(p) + "; " + describe(o); };
    const auto kernel = [&o](auto lp, auto old, auto adv, auto mask, auto grad, auto tokens) {
        const rlhf::policy_loss_result r = rlhf::policy_loss(lp, old, adv, mask, grad, tokens, o);
        return std::pair{r.loss, r.stats};
    };
    const auto compare = [&](const loss_run<float>& f, const loss_run<double>& d, auto&& reference) {
        // Documented float32 overflow: ρ = exp(log-ratio) is +inf in float32 beyond log(FLT_MAX);
        // then only the checks above apply (no NaN, layouts, errors).
        // So is lp − old itself beyond FLT_MAX. Weights outside float32's normal range: see
        // weights_in_float_range.
        double high = -std::numeric_limits<double>::infinity(), spread = 0.0;
        for (std::size_t i = 0; i < p.x[0].size(); ++i) {
            const double raw = static_cast<double>(p.x[0][i]) - static_cast<double>(p.x[1][i]);
            high = std::max(high, o.mask_log_ratio && p.mask.m[i] == 0.0 ? 0.0 : raw);
            spread = std::max(spread, std::abs(raw));
        }
        if (o.log_ratio_max) high = std::min(high, *o.log_ratio_max);
        if (o.log_ratio_min) high = std::max(high, *o.log_ratio_min);
        const auto weights = weights_of(p, o.aggregation);
        if (high > 88.0 || spread > 0.5 * static_cast<double>(std::numeric_limits<float>::max()) || !weights ||
            !weights_in_float_range(*weights, 1.0))
            return;
        if (!float_faithful(1.0 - o.clip_low) || !float_faithful(1.0 + o.clip_high) || !float_faithful(o.dual_clip) ||
            !float_faithful(o.ratio_cap) || !float_faithful(o.loss_cap) || !float_faithful(o.log_ratio_min) ||
            !float_faithful(o.log_ratio_max))
            return;
        tolerances tol;
        const std::size_t n_stats = f.stats.size();
        tol.stat_scales.assign(n_stats, 1.0);
        tol.stat_skipped.assign(n_stats, false);
        tol.stat_range.assign(n_stats, 0.0);
        tol.stat_scales[3] = tol.stat_scales[4] = std::max(1.0, spread);  // policy_kl: a mean of signed terms
        for (const std::size_t k : {0U, 1U, 9U, 10U}) tol.stat_range[k] = 1.0;
        // A subnormal float32 ratio is off by a subnormal step, times the advantage and the weight.
        double c_max = 0.0;
        for (const double w : *weights) c_max = std::max(c_max, w);
        tol.tokens_slack =
            rlhf_fuzz::subnormal_slack * std::max(1.0, rlhf_fuzz::max_abs(std::span<const float>(p.x[2])));
        tol.grad_slack = tol.tokens_slack * std::max(1.0, c_max);
        if (o.level == rlhf::importance_ratio_level::sequence) {
            // The row's gradient is a sum over its tokens of terms of both signs (A·ρ·c): it
            // cancels, and each term carries float32 rounding.
            tol.row_length = p.cols;
            const double rho = std::max({1.0, d.stats[6], 1.0 + o.clip_high});
            tol.grad_floor = c_max * rlhf_fuzz::max_abs(std::span<const float>(p.x[2])) * rho * 0x1p-20 /
                             rlhf_fuzz::float32_tolerance;
        }
        tol.loss_scale = aggregate_magnitude(p, d.tokens, o.aggregation);
        const auto bad = mismatch(f, {&d}, tol, policy_stat_names);
        if (!bad) return;
        const auto up = reference(0, 1.0), down = reference(0, -1.0);
        std::vector<const loss_run<double>*> refs{&d};
        if (up) refs.push_back(&*up);
        if (down) refs.push_back(&*down);
        if (const auto still = mismatch(f, refs, tol, policy_stat_names))
            violation("policy_loss: float32 vs double reference: " + *still);
    };
    check_loss("policy_loss", policy_names, p, invalid(o), o.level == rlhf::importance_ratio_level::sequence,
               o.aggregation, kernel, compare);
}

void fuzz_value(source& in) {
    problem p = decode_problem(in, -4, 8);
    const rlhf::value_loss_options o = decode_value_options(in);
    rlhf_fuzz::describe_input() = [&] { return describe(p) + "; " + describe(o); };
    const auto kernel = [&o](auto v, auto old, auto ret, auto mask, auto grad, auto tokens) {
        const rlhf::value_loss_result r = rlhf::value_loss(v, old, ret, mask, grad, tokens, o);
        return std::pair{r.loss, r.stats};
    };
    const auto compare = [&](const loss_run<float>& f, const loss_run<double>& d, auto&& reference) {
        // Float32 intermediates: the target R' = R (+ V_old) and the clip bounds V_old ± c are rounded
        // (each by half an ulp of the largest magnitude M), and a squared error overflows float32
        // beyond |e| ≈ 1.8e19 (documented: the loss is then +inf).
        const double clip = o.clip_range && std::isfinite(*o.clip_range) ? *o.clip_range : 0.0;
        double m = 0.0, target_m = 0.0;
        for (std::size_t i = 0; i < p.x[0].size(); ++i) {
            const double v = static_cast<double>(p.x[0][i]), old = static_cast<double>(p.x[1][i]);
            const double target = static_cast<double>(p.x[2][i]) + (o.returns_from_advantages ? old : 0.0);
            m = std::max({m, std::abs(v), std::abs(old) + clip, std::abs(target)});
            target_m = std::max(target_m, std::abs(target));
        }
        // So is scale·ψ'(e) = scale·2e beyond FLT_MAX (an option near FLT_MAX), before the weight.
        if (2.0 * m > 1.8e19 ||
            std::abs(o.scale) * 4.0 * m > 0.5 * static_cast<double>(std::numeric_limits<float>::max()))
            return;
        constexpr double eps = rlhf_fuzz::float32_tolerance;
        const double s = std::abs(o.scale);
        const double token_error = s * m * m * 0x1p-19;  // |ΔL| from the rounding of e
        const auto weights = weights_of(p, o.aggregation);
        if (!weights || !weights_in_float_range(*weights, o.coef) || !float_faithful(o.clip_range)) return;
        double c_max = 0.0;
        for (const double w : *weights) c_max = std::max(c_max, std::abs(w));
        const std::vector<double> ones(p.mask.m.size(), 1.0);
        tolerances tol;
        tol.tokens_floor = token_error / eps;
        tol.grad_floor = std::abs(o.coef) * c_max * s * m * 0x1p-19 / eps;
        const std::size_t n_stats = f.stats.size();
        tol.stat_scales.assign(n_stats, 1.0);
        tol.stat_skipped.assign(n_stats, false);
        tol.stat_range.assign(n_stats, 0.0);
        tol.stat_range[0] = 1.0;                           // clip_fraction
        tol.stat_range[6] = std::max(d.stats[5], 1e-300);  // clipped_tokens ≤ valid_tokens
        tol.split_ties = o.clip_range.has_value();
        tol.stat_scales[1] = m;                      // value_mean: a mean of signed values
        tol.stat_scales[2] = m * m * 0x1p-19 / eps;  // value_error: the rounding of R'
        tol.stat_scales[3] = std::max(target_m, m * 0x1p-10);
        tol.stat_skipped[4] = o.returns_from_advantages;  // explained variance of a rounded target: ill-conditioned
        tol.loss_scale = std::abs(o.coef) * (aggregate_magnitude(p, d.tokens, o.aggregation) +
                                             aggregate_magnitude(p, ones, o.aggregation) * token_error / eps);
        const auto bad = mismatch(f, {&d}, tol, value_stat_names);
        if (!bad) return;
        const auto up = reference(0, 1.0), down = reference(0, -1.0);
        std::vector<const loss_run<double>*> refs{&d};
        if (up) refs.push_back(&*up);
        if (down) refs.push_back(&*down);
        if (const auto still = mismatch(f, refs, tol, value_stat_names))
            violation("value_loss: float32 vs double reference: " + *still);
    };
    check_loss("value_loss", value_names, p, invalid(o), false, o.aggregation, kernel, compare);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    source in(data, size);
    if (in.flag())
        fuzz_value(in);
    else
        fuzz_policy(in);
    rlhf_fuzz::describe_input() = nullptr;
    return 0;
}
