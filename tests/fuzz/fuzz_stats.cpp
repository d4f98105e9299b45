// libFuzzer target: masked statistics and whitening (rlhf/kernels/masked_stats.hpp), the
// critic-free advantage estimators (GRPO, Dr.GRPO, RLOO, OPO on [B, T] rewards and on [B]
// scores, reward-to-go returns, REINFORCE++, REINFORCE++-baseline, ReMax) and the per-token KL
// estimators (docs/fuzzing.md).
//
// Per input: a float32 call on contiguous buffers, one on strided views (bitwise equal; padding
// never written), one in place where the documentation allows an output to be an input (bitwise
// equal), one with another mask element type (bitwise equal), and the double reference on the
// same float-rounded inputs (float32 tolerance).

#include <algorithm>
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
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"

namespace {

using rlhf::index_t;
using rlhf_fuzz::matrix;
using rlhf_fuzz::require;
using rlhf_fuzz::source;
using rlhf_fuzz::vector1;

enum op : int {
    op_moments = 0,   // compute_masked_moments, masked_mean, masked_variance, per-row mean and variance
    op_whitening,     // masked_whiten (or whiten without a mask)
    op_group,         // GRPO, Dr.GRPO, RLOO, OPO on [B, T] token rewards
    op_group_scores,  // GRPO, Dr.GRPO, RLOO on [B] scores
    op_returns,       // compute_cumulative_returns, REINFORCE++, ReMax
    op_baseline,      // REINFORCE++-baseline
    op_token_kl,      // token_kl, masked or not
    op_count
};

struct problem {
    int op = op_moments;
    int variant = 0;  // which estimator / function within the op
    bool masked = true;
    index_t rows = 0, cols = 0;
    std::vector<float> x, y;        // [B, T] values (token_kl: log_probs, ref_log_probs)
    std::vector<float> scores;      // [B]: scores (group_scores) or reward baselines (ReMax)
    std::vector<std::int64_t> ids;  // [B] group ids
    rlhf_fuzz::mask_values mask;
    std::size_t mask_type = 5, other_mask_type = 5;
    bool other_mask_ok = false;
    bool in_place = false;
    std::array<index_t, 6> pad{};
    rlhf::moments_options moments{};
    rlhf::whiten_options whiten{};
    rlhf::grpo_options grpo{};
    rlhf::singleton_group_policy singleton = rlhf::singleton_group_policy::raw_score;
    double gamma = 1.0;
    rlhf::return_masking masking = rlhf::return_masking::reset_at_masked;
    rlhf::baseline_broadcast broadcast = rlhf::baseline_broadcast::tiled_score;
    rlhf::kl_options kl{};
};

std::string describe(const problem& p) {
    using rlhf_fuzz::list;
    using rlhf_fuzz::num;
    const auto& w = p.whiten;
    return "op " + std::to_string(p.op) + "." + std::to_string(p.variant) + (p.masked ? " masked" : " unmasked") +
           " [" + std::to_string(p.rows) + ", " + std::to_string(p.cols) + "], x " + list(std::span<const float>(p.x)) +
           ", y " + list(std::span<const float>(p.y)) + ", scores " + list(std::span<const float>(p.scores)) +
           ", ids " + list(std::span<const std::int64_t>(p.ids)) + ", mask " + list(std::span<const double>(p.mask.m)) +
           ", mask type " + std::to_string(p.mask_type) + ", in place " + std::to_string(p.in_place) + "; moments {" +
           std::to_string(static_cast<int>(p.moments.variance)) + " " +
           std::to_string(static_cast<int>(p.moments.small_sample)) + " " + num(p.moments.count_epsilon) +
           "}; whiten {shift " + std::to_string(w.shift_mean) + " var " + std::to_string(static_cast<int>(w.variance)) +
           " scope " + std::to_string(static_cast<int>(w.scope)) + " eps " + num(w.epsilon) + " mode " +
           std::to_string(static_cast<int>(w.epsilon_mode)) + " small " +
           std::to_string(static_cast<int>(w.small_sample)) + " zero_masked " + std::to_string(w.zero_masked) +
           " scale " + std::to_string(w.scale) + " count_eps " + num(w.count_epsilon) + "}; grpo {eps " +
           num(p.grpo.epsilon) + " norm " + std::to_string(p.grpo.normalize_by_std) + " est " +
           std::to_string(static_cast<int>(p.grpo.std_estimator)) + " singleton " +
           std::to_string(static_cast<int>(p.grpo.singleton)) + "}; singleton " +
           std::to_string(static_cast<int>(p.singleton)) + ", gamma " + num(p.gamma) + ", masking " +
           std::to_string(static_cast<int>(p.masking)) + ", broadcast " +
           std::to_string(static_cast<int>(p.broadcast)) + "; kl {" + std::to_string(static_cast<int>(p.kl.estimator)) +
           " " + rlhf_fuzz::opt(p.kl.log_ratio_clamp) + " " + rlhf_fuzz::opt(p.kl.value_clamp) + " " +
           std::to_string(p.kl.float32_log_ratio) + "}";
}

bool mask_fits(std::size_t type, const rlhf_fuzz::mask_values& m) {
    return rlhf_fuzz::with_mask_type(type, [&]<class M>(std::type_identity<M>) {
        return std::all_of(m.m.begin(), m.m.end(), [](double v) { return rlhf_fuzz::representable<M>(v); });
    });
}

rlhf::whiten_options decode_whiten(source& in) {
    rlhf::whiten_options w;
    w.shift_mean = !in.chance(48);
    w.variance = in.enumeration<rlhf::variance_estimator>(2);
    w.scope = in.enumeration<rlhf::whiten_scope>(2);
    if (in.flag()) w.epsilon = in.option({1e-8, 1e-5, 1.0});
    w.epsilon_mode = in.enumeration<rlhf::whiten_epsilon>(2);
    w.small_sample = in.enumeration<rlhf::small_sample_policy>(3);
    w.zero_masked = in.flag();
    w.scale = !in.chance(48);
    if (in.chance(64)) w.count_epsilon = in.option({1e-8, 0.0});
    return w;
}

problem decode(source& in) {
    problem p;
    p.op = in.integer<int>(0, op_count - 1);
    p.variant = in.integer<int>(0, 3);
    p.masked = in.integer<int>(0, 3) != 0;
    p.rows = in.extent(6, 12);
    p.cols = in.extent(12, 300);
    const auto n = static_cast<std::size_t>(p.rows * p.cols);
    const auto b = static_cast<std::size_t>(p.rows);
    p.x = rlhf_fuzz::to_float(in.values(n, -8, 6));
    if (p.op == op_token_kl) {
        std::vector<double> delta = in.values(n, -12, 4);
        for (std::size_t i = 0; i < n; ++i) delta[i] = static_cast<double>(p.x[i]) - delta[i];
        p.y = rlhf_fuzz::to_float(in.chance(64) ? in.values(n, -8, 6) : delta);
    }
    p.scores = rlhf_fuzz::to_float(in.values(b, -6, 6));
    p.ids.resize(b);
    const int groups = in.integer<int>(1, 4);
    for (std::int64_t& id : p.ids)
        id = in.chance(8) ? in.pick<std::int64_t>({-1, 0x7fffffffffffffff, -0x7fffffffffffffff - 1, 1000})
                          : in.integer<int>(0, groups - 1);
    p.mask = rlhf_fuzz::decode_mask(in, p.rows, p.cols);
    p.mask_type = in.pick(rlhf_fuzz::mask_type_count);
    if (!mask_fits(p.mask_type, p.mask)) p.mask_type = 5;
    p.other_mask_type = in.pick(rlhf_fuzz::mask_type_count);
    p.other_mask_ok = p.mask.binary && p.other_mask_type != p.mask_type;
    p.in_place = in.flag();
    for (index_t& pad : p.pad) pad = in.integer<index_t>(0, 3);
    p.moments.variance = in.enumeration<rlhf::variance_estimator>(2);
    p.moments.small_sample = in.enumeration<rlhf::small_sample_policy>(3);
    if (in.chance(64)) p.moments.count_epsilon = in.option({1e-8, 0.0});
    p.whiten = decode_whiten(in);
    if (in.flag()) p.grpo.epsilon = in.option({1e-6, 1e-4, 1e-9});
    p.grpo.normalize_by_std = !in.chance(48);
    p.grpo.std_estimator = in.enumeration<rlhf::variance_estimator>(2);
    p.grpo.singleton = in.enumeration<rlhf::singleton_group_policy>(3);
    p.singleton = in.enumeration<rlhf::singleton_group_policy>(3);
    if (in.flag()) p.gamma = in.option({1.0, 0.99, 0.0, 0.5});
    p.masking = in.enumeration<rlhf::return_masking>(3);
    p.broadcast = in.enumeration<rlhf::baseline_broadcast>(2);
    p.kl.estimator = in.enumeration<rlhf::kl_estimator>(4);
    if (in.flag()) p.kl.log_ratio_clamp = in.option({20.0, 10.0, 1.0});
    if (in.flag()) p.kl.value_clamp = in.option({10.0, 1.0});
    p.kl.float32_log_ratio = in.flag();
    return p;
}

bool bad_enum(int value, int count) {
    return value < 0 || value >= count;
}

/// Options the documentation refuses that a call reads: NaN anywhere, an enum value out of range.
std::string must_throw(const problem& p) {
    const auto& w = p.whiten;
    const auto whiten_bad = [&] {
        return std::isnan(w.epsilon) || std::isnan(w.count_epsilon) || bad_enum(static_cast<int>(w.variance), 2) ||
               bad_enum(static_cast<int>(w.scope), 2) || bad_enum(static_cast<int>(w.epsilon_mode), 2) ||
               bad_enum(static_cast<int>(w.small_sample), 3);
    };
    switch (p.op) {
        case op_moments:
            if (bad_enum(static_cast<int>(p.moments.small_sample), 3)) return "small_sample";
            if (p.masked && (std::isnan(p.moments.count_epsilon) || bad_enum(static_cast<int>(p.moments.variance), 2)))
                return "moments options";
            break;
        case op_whitening:
            if (whiten_bad()) return "whiten options";
            break;
        case op_group:
        case op_group_scores:
            if (p.variant == 0 && (bad_enum(static_cast<int>(p.grpo.singleton), 3) ||
                                   (p.grpo.normalize_by_std && (std::isnan(p.grpo.epsilon) ||
                                                                bad_enum(static_cast<int>(p.grpo.std_estimator), 2)))))
                return "grpo options";
            if (p.variant != 0 && bad_enum(static_cast<int>(p.singleton), 3)) return "singleton";
            break;
        case op_returns:
            if (p.variant != 3 && (std::isnan(p.gamma) || bad_enum(static_cast<int>(p.masking), 3)))
                return "return options";
            if (p.variant == 1 && whiten_bad()) return "whiten options";
            break;
        case op_baseline:
            if (bad_enum(static_cast<int>(p.singleton), 3) || bad_enum(static_cast<int>(p.broadcast), 2) ||
                whiten_bad())
                return "baseline options";
            break;
        default:
            if (bad_enum(static_cast<int>(p.kl.estimator), 4) ||
                (p.kl.log_ratio_clamp && std::isnan(*p.kl.log_ratio_clamp)) ||
                (p.kl.value_clamp && std::isnan(*p.kl.value_clamp)))
                return "kl options";
            break;
    }
    return {};
}

/// What one call produced: up to two [B, T] or [B] outputs (logical) and some scalars.
template <class T>
struct stats_run {
    std::vector<T> a, b;
    std::vector<double> scalars;
};

enum class layout { contiguous, strided, in_place };

template <class T, class M>
rlhf_fuzz::outcome<stats_run<T>> run(const problem& p, layout where) {
    const bool strided = where == layout::strided;
    const bool in_place = where == layout::in_place;
    const auto pad = [&](std::size_t k) { return strided ? p.pad[k] : index_t{0}; };
    const T s = rlhf_fuzz::sentinel<T>();
    const M mask_padding = rlhf_fuzz::mask_padding<M>();
    auto x = matrix<T>::from(std::span<const float>(p.x), p.rows, p.cols, pad(0), s);
    auto y = matrix<T>::from(std::span<const float>(p.y), p.op == op_token_kl ? p.rows : 0, p.cols, pad(1), s);
    const auto mask = matrix<M>::from(std::span<const double>(p.mask.m), p.rows, p.cols, pad(2), mask_padding);
    const auto scores = vector1<T>::from(std::span<const float>(p.scores));
    const auto ids = vector1<std::int64_t>::from(std::span<const std::int64_t>(p.ids));
    matrix<T> out_a(p.rows, p.cols, pad(3)), out_b(p.rows, p.cols, pad(4));
    vector1<T> row_a(p.rows), row_b(p.rows);
    out_a.fill(s);
    out_b.fill(s);
    row_a.fill(s);
    row_b.fill(s);
    // The in-place run writes the first output into the first input's buffer.
    rlhf::mut_view<T> a = in_place ? x.mut() : out_a.mut();
    const std::initializer_list<std::string_view> names = {
        "values",        "mask",      "out",          "count_epsilon",   "small_sample",     "variance",
        "epsilon",       "scope",     "epsilon_mode", "token_rewards",   "group_ids",        "advantages",
        "returns",       "scores",    "rewards",      "gamma",           "reward_baselines", "log_probs",
        "ref_log_probs", "kl",        "estimator",    "log_ratio_clamp", "value_clamp",      "masking",
        "singleton",     "broadcast", "std_estimator"};
    auto result = rlhf_fuzz::attempt("stats", names, [&] {
        stats_run<T> r;
        bool rows_out = false;
        switch (p.op) {
            case op_moments: {
                if (p.masked) {
                    const rlhf::masked_moments m = rlhf::compute_masked_moments(x.view(), mask.view(), p.moments);
                    r.scalars = {m.count,
                                 m.sum,
                                 m.mean,
                                 m.variance,
                                 rlhf::masked_mean(x.view(), mask.view(), p.moments),
                                 rlhf::masked_variance(x.view(), mask.view(), p.moments)};
                    rlhf::masked_mean_per_row(x.view(), mask.view(), row_a.mut(), p.moments);
                    rlhf::masked_variance_per_row(x.view(), mask.view(), row_b.mut(), p.moments);
                    rows_out = true;
                } else {
                    rlhf::running_moments running(
                        rlhf::running_moments_options{.small_sample = p.moments.small_sample});
                    const rlhf::batch_moments m = running.update(x.view(), mask.view());
                    r.scalars = {m.mean, m.std, m.count, running.mean(), running.std(), running.var(), running.count()};
                }
                break;
            }
            case op_whitening:
                if (p.masked)
                    rlhf::masked_whiten(rlhf::view<T>(x.view()), mask.view(), a, p.whiten);
                else
                    rlhf::whiten(rlhf::view<T>(x.view()), a, p.whiten);
                break;
            case op_group: {
                const auto run_group = [&](auto&& estimator) { estimator(x.view(), mask.view(), ids.view(), a); };
                if (p.variant == 0)
                    run_group([&](auto... args) { rlhf::compute_grpo_advantages(args..., p.grpo); });
                else if (p.variant == 1)
                    run_group([&](auto... args) { rlhf::compute_dr_grpo_advantages(args..., {p.singleton}); });
                else if (p.variant == 2)
                    run_group([&](auto... args) { rlhf::compute_rloo_advantages(args..., {p.singleton}); });
                else
                    run_group([&](auto... args) { rlhf::compute_opo_advantages(args..., {p.singleton}); });
                break;
            }
            case op_group_scores:
                if (p.variant == 0)
                    rlhf::compute_grpo_advantages(scores.view(), ids.view(), row_a.mut(), p.grpo);
                else if (p.variant == 1)
                    rlhf::compute_dr_grpo_advantages(scores.view(), ids.view(), row_a.mut(), {p.singleton});
                else
                    rlhf::compute_rloo_advantages(scores.view(), ids.view(), row_a.mut(), {p.singleton});
                rows_out = true;
                break;
            case op_returns:
                if (p.variant == 0 || p.variant == 2) {
                    rlhf::compute_cumulative_returns(x.view(), mask.view(), a,
                                                     {.gamma = p.gamma, .masking = p.masking});
                } else if (p.variant == 1) {
                    rlhf::compute_reinforce_plus_plus_advantages(
                        x.view(), mask.view(), out_a.mut(), out_b.mut(),
                        {.gamma = p.gamma, .masking = p.masking, .whiten = p.whiten});
                } else {
                    rlhf::compute_remax_advantages(x.view(), mask.view(), scores.view(), out_a.mut(), out_b.mut());
                }
                break;
            case op_baseline:
                rlhf::compute_reinforce_plus_plus_baseline_advantages(
                    x.view(), mask.view(), ids.view(), out_a.mut(), out_b.mut(),
                    {.singleton = p.singleton, .broadcast = p.broadcast, .whiten = p.whiten});
                break;
            default:
                if (p.masked)
                    rlhf::token_kl(rlhf::view<T>(x.view()), y.view(), mask.view(), a, p.kl);
                else
                    rlhf::token_kl(rlhf::view<T>(x.view()), y.view(), a, p.kl);
                break;
        }
        if (rows_out) {
            r.a = row_a.logical();
            if (p.op == op_moments) r.b = row_b.logical();
        } else if (p.op != op_moments) {
            for (index_t i = 0; i < p.rows; ++i)
                for (index_t t = 0; t < p.cols; ++t) r.a.push_back(a(i, t));
            if (p.op == op_returns ? p.variant == 1 || p.variant == 3 : p.op == op_baseline) r.b = out_b.logical();
        }
        return r;
    });
    if (!in_place)
        require(out_a.padding_intact(s) && out_b.padding_intact(s), "stats: an output's padding was written");
    return result;
}

/// Which ops accept the first output as the first input's buffer.
bool in_place_allowed(const problem& p) {
    return p.op == op_whitening || p.op == op_group || p.op == op_token_kl ||
           (p.op == op_returns && (p.variant == 0 || p.variant == 2));
}

template <class T>
void same_bits(const std::string& what, const stats_run<T>& a, const stats_run<T>& b, bool zero_sign_free = false) {
    rlhf_fuzz::bitwise_equal(what + " first output", std::span<const T>(a.a), std::span<const T>(b.a), zero_sign_free);
    rlhf_fuzz::bitwise_equal(what + " second output", std::span<const T>(a.b), std::span<const T>(b.b), zero_sign_free);
    rlhf_fuzz::bitwise_equal(what + " scalars", std::span<const double>(a.scalars), std::span<const double>(b.scalars));
}

template <class T>
void no_nan(const std::string& what, const stats_run<T>& r) {
    rlhf_fuzz::no_nan(what + " first output", std::span<const T>(r.a));
    rlhf_fuzz::no_nan(what + " second output", std::span<const T>(r.b));
    rlhf_fuzz::no_nan(what + " scalars", std::span<const double>(r.scalars));
}

void fuzz(source& in) {
    const problem p = decode(in);
    rlhf_fuzz::describe_input() = [&] { return describe(p); };
    const std::string refused = must_throw(p);
    rlhf_fuzz::with_mask_type(p.mask_type, [&]<class M>(std::type_identity<M>) {
        auto f = run<float, M>(p, layout::contiguous);
        auto s = run<float, M>(p, layout::strided);
        auto d = run<double, M>(p, layout::contiguous);
        rlhf_fuzz::same_error("stats contiguous vs strided", f, s);
        // Returns beyond float32's range are refused by the float32 run alone (by the whitening
        // inside, which names its own argument 'values'): the double run must then have such values.
        const bool float_overflow_refused = f.threw && (!d.threw || d.message != f.message) &&
                                            f.kind == rlhf::error_kind::value &&
                                            (p.op == op_returns || p.op == op_baseline);
        if (float_overflow_refused) {
            // Every return, score and baseline-corrected score is bounded by 2·Σ_t |r_t| of a row.
            double largest = 0.0;
            for (index_t i = 0; i < p.rows; ++i) {
                double row = 0.0;
                for (index_t t = 0; t < p.cols; ++t)
                    row += std::abs(static_cast<double>(p.x[static_cast<std::size_t>(i * p.cols + t)]));
                largest = std::max(largest, 2.0 * row);
            }
            require(largest > static_cast<double>(std::numeric_limits<float>::max()),
                    "stats: float32 refused values within its range: " + f.message);
            return;
        }
        rlhf_fuzz::same_error("stats float vs double", f, d);
        if (!refused.empty()) require(f.threw, "stats: an invalid option was accepted: " + refused);
        if (p.in_place && in_place_allowed(p)) {
            auto i = run<float, M>(p, layout::in_place);
            rlhf_fuzz::same_error("stats out of place vs in place", f, i);
            if (!f.threw) same_bits("stats out of place vs in place", *f.value, *i.value);
        }
        if (f.threw) {
            require(f.kind != rlhf::error_kind::shape, "stats: a shape error for well-shaped arguments: " + f.message);
            return;
        }
        no_nan("stats float", *f.value);
        no_nan("stats double", *d.value);
        same_bits("stats contiguous vs strided", *f.value, *s.value);
        if (p.other_mask_ok && p.op != op_group_scores)
            rlhf_fuzz::with_mask_type(p.other_mask_type, [&]<class M2>(std::type_identity<M2>) {
                auto o = run<float, M2>(p, layout::contiguous);
                require(!o.threw, "stats: another mask element type threw: " + o.message);
                // A -0.0 mask entry (a valid 0) may flip the sign of a zero return (mask · G).
                same_bits("stats mask element types", *f.value, *o.value, p.op == op_returns || p.op == op_baseline);
            });
        // Statistics are accumulated in double from the same float-rounded inputs: float32 is the
        // double result rounded, except where a float32 intermediate feeds a later step.
        constexpr double eps = rlhf_fuzz::float32_tolerance;
        double floor = 0.0;
        constexpr auto fmax = static_cast<double>(std::numeric_limits<float>::max());
        if (p.op == op_token_kl) {
            // The estimator runs in T on lp − ref (rounded to T): |k'(d)|·ulp(M) per entry; beyond
            // d < −88 k3 overflows float32 (documented).
            double m = 0.0, d_max = 0.0, minus_d = 0.0;
            for (std::size_t i = 0; i < p.x.size(); ++i) {
                const double dd = static_cast<double>(p.x[i]) - static_cast<double>(p.y[i]);
                m = std::max({m, std::abs(static_cast<double>(p.x[i])), std::abs(static_cast<double>(p.y[i]))});
                d_max = std::max(d_max, std::abs(dd));
                minus_d = std::max(minus_d, -dd);
            }
            if (minus_d > 88.0 || 2.0 * m > fmax) return;
            floor = m * 0x1p-21 * (1.0 + d_max + std::exp(minus_d)) / eps;
        }
        if ((p.op == op_returns && p.variant == 1) || p.op == op_baseline) {
            // The whitening reads the float32-rounded returns: their rounding, times 1/std.
            std::vector<double> g(d.value->b.begin(), d.value->b.end());
            if (p.op == op_baseline && p.broadcast == rlhf::baseline_broadcast::tiled_score) return;  // b = a
            // The smallest variance of a scope (a row under per_row) sets the amplification.
            double variance = 0.0;
            const rlhf::moments_options biased{.variance = rlhf::variance_estimator::biased,
                                               .small_sample = rlhf::small_sample_policy::zero_variance};
            const auto gv = rlhf::make_view(g.data(), p.rows, p.cols);
            const auto mv = rlhf::make_view(p.mask.m.data(), p.rows, p.cols);
            try {
                variance = rlhf::masked_variance(gv, mv, biased);
                if (p.whiten.scope == rlhf::whiten_scope::per_row) {
                    std::vector<double> rows(static_cast<std::size_t>(p.rows));
                    rlhf::masked_variance_per_row(gv, mv, rlhf::mut_view<double, 1>(rows.data(), {p.rows}), biased);
                    for (const double v : rows) variance = std::min(variance, v);
                }
            } catch (const rlhf::error&) {
                return;
            }
            // A scope whose spread is within a few float32 ulps of its magnitude M is ill-conditioned
            // in float32 (its rounded values may have no variance left): not compared.
            const double m = rlhf_fuzz::max_abs(std::span<const double>(g));
            if (std::sqrt(variance) < m * 0x1p-8) return;
            const double guarded = std::max(variance, p.whiten.epsilon);
            floor = m * 0x1p-21 / std::sqrt(guarded) / eps;
        }
        rlhf_fuzz::expect_elements("stats first output vs double", f.value->a, d.value->a, eps, floor);
        rlhf_fuzz::expect_elements("stats second output vs double", f.value->b, d.value->b, eps, floor);
        for (std::size_t k = 0; k < d.value->scalars.size(); ++k)
            rlhf_fuzz::expect_close("stats scalar " + std::to_string(k) + " vs double", f.value->scalars[k],
                                    d.value->scalars[k], eps);
    });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    source in(data, size);
    fuzz(in);
    rlhf_fuzz::describe_input() = nullptr;
    return 0;
}
