#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "rlhf/kernels/kl_loss.hpp"
#include "support/loss_option_sets.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::expect_error;

namespace {

// A [B, T] batch of KL-loss inputs with log-ratios lp - ref spread over [-4, 4] (so the ±10
// value clamp of k3 is active on some tokens) and a mask with an empty row.
template <class T>
struct batch {
    rlhf::index_t rows = 0, cols = 0;
    std::vector<T> lp, ref, old, mask;
    [[nodiscard]] rlhf::view<T> l() const { return rlhf::make_view(lp.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T> r() const { return rlhf::make_view(ref.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T> o() const { return rlhf::make_view(old.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T> m() const { return rlhf::make_view(mask.data(), rows, cols); }
};

template <class T>
batch<T> random_batch(rlhf::index_t rows, rlhf::index_t cols, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    batch<T> x;
    x.rows = rows;
    x.cols = cols;
    x.mask = rlhf_test::random_token_mask<T>(gen, rows, cols, 0.8, [&] {
        const double lp = -1.5 * std::abs(normal(gen));
        x.lp.push_back(static_cast<T>(lp));
        x.ref.push_back(static_cast<T>(lp + 8.0 * (uniform(gen) - 0.5)));
        x.old.push_back(static_cast<T>(lp + 0.3 * normal(gen)));
    });
    return x;
}

// Reference per-token term and dL/dlp, written out with if statements.
struct reference_token {
    double loss, grad;
    bool clamped;
};

reference_token reference_token_loss(double lp, double ref, std::optional<double> old, const rlhf::kl_loss_options& o) {
    const double d_raw =
        o.kl.float32_log_ratio ? static_cast<double>(static_cast<float>(lp) - static_cast<float>(ref)) : lp - ref;
    double d = d_raw;
    bool clamped = false;
    if (o.kl.log_ratio_clamp && std::abs(d) > *o.kl.log_ratio_clamp) {
        d = d > 0 ? *o.kl.log_ratio_clamp : -*o.kl.log_ratio_clamp;
        clamped = true;
    }
    double k = 0.0, dk = 0.0;
    switch (o.kl.estimator) {
        case rlhf::kl_estimator::k1:
            k = d;
            dk = 1.0;
            break;
        case rlhf::kl_estimator::abs:
            k = std::abs(d);
            dk = d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0);
            break;
        case rlhf::kl_estimator::k2:
            k = 0.5 * d * d;
            dk = d;
            break;
        case rlhf::kl_estimator::k3:
            k = std::exp(-d) + d - 1.0;
            dk = 1.0 - std::exp(-d);
            break;
    }
    if (o.kl.value_clamp && std::abs(k) > *o.kl.value_clamp) {
        k = k > 0 ? *o.kl.value_clamp : -*o.kl.value_clamp;
        clamped = true;
    }
    double g = clamped ? 0.0 : dk;
    if (o.straight_through) g = d_raw;
    if (!old) return {k, g, clamped};
    const double rho = std::exp(lp - *old);
    return {rho * k, rho * g + rho * k, clamped};
}

std::vector<rlhf::kl_loss_options> every_option_set() {
    return rlhf_test::kl_option_sets(0.001);
}

double weight(const std::vector<double>& mask, rlhf::index_t rows, rlhf::index_t cols, std::size_t i,
              const rlhf::aggregation_options& a) {
    if (mask[i] == 0.0) return 0.0;
    double tokens = 0.0, nonempty = 0.0, row = 0.0;
    const auto b = static_cast<rlhf::index_t>(i) / cols;
    for (rlhf::index_t r = 0; r < rows; ++r) {
        double n = 0.0;
        for (rlhf::index_t t = 0; t < cols; ++t) n += mask[static_cast<std::size_t>(r * cols + t)];
        tokens += n;
        nonempty += n > 0 ? 1.0 : 0.0;
        if (r == b) row = n;
    }
    switch (a.mode) {
        case rlhf::loss_aggregation::token_mean:
            return 1.0 / tokens;
        case rlhf::loss_aggregation::seq_mean_token_sum:
            return 1.0 / nonempty;
        case rlhf::loss_aggregation::seq_mean_token_mean:
            return 1.0 / (row + a.token_count_epsilon) / nonempty;
        case rlhf::loss_aggregation::seq_mean_token_sum_norm:
            return 1.0 / static_cast<double>(cols);
    }
    return 0.0;
}

}  // namespace

TEST_CASE("kl_loss: hand-computed values and gradients of each estimator" * doctest::test_suite("unit")) {
    // d = lp - ref = 0.5 and -0.25; token mean over 2.
    const std::vector<double> lp{-1.0, -2.0}, ref{-1.5, -1.75}, m{1, 1};
    std::vector<double> g(2);
    const auto run = [&](rlhf::kl_loss_options o) {
        return rlhf::kl_loss(rlhf::make_view(lp.data(), 1, 2), rlhf::make_view(ref.data(), 1, 2),
                             rlhf::make_view(m.data(), 1, 2), rlhf::make_mut_view(g.data(), 1, 2), {}, o);
    };
    using rlhf::kl_estimator;
    CHECK(run({.kl = {.estimator = kl_estimator::k1}}).loss == doctest::Approx(0.125).epsilon(1e-15));
    CHECK(g[0] == 0.5);
    CHECK(g[1] == 0.5);
    CHECK(run({.kl = {.estimator = kl_estimator::abs}}).loss == doctest::Approx(0.375).epsilon(1e-15));
    CHECK(g[0] == 0.5);
    CHECK(g[1] == -0.5);
    CHECK(run({.kl = {.estimator = kl_estimator::k2}, .coef = 2.0}).loss ==
          doctest::Approx(0.125 + 0.03125).epsilon(1e-15));
    CHECK(g[0] == doctest::Approx(0.5).epsilon(1e-15));
    CHECK(g[1] == doctest::Approx(-0.25).epsilon(1e-15));
    const double k3a = std::exp(-0.5) + 0.5 - 1.0, k3b = std::exp(0.25) - 0.25 - 1.0;
    const auto k3 = run({});  // default: k3, no clamp
    CHECK(k3.loss == doctest::Approx((k3a + k3b) / 2.0).epsilon(1e-14));
    CHECK(g[0] == doctest::Approx((1.0 - std::exp(-0.5)) / 2.0).epsilon(1e-14));
    CHECK(g[1] == doctest::Approx((1.0 - std::exp(0.25)) / 2.0).epsilon(1e-14));
    CHECK(k3.stats.kl_mean == doctest::Approx((k3a + k3b) / 2.0).epsilon(1e-14));
    CHECK(k3.stats.ratio_mean == 1.0);
    // Straight-through (verl k3+): the k3 value, the k2 gradient d.
    const auto st = run({.straight_through = true});
    CHECK(st.loss == k3.loss);
    CHECK(g[0] == doctest::Approx(0.25).epsilon(1e-15));
    CHECK(g[1] == doctest::Approx(-0.125).epsilon(1e-15));
}

TEST_CASE("kl_loss: verl and ChatLearn clamps zero the gradient where active" * doctest::test_suite("unit")) {
    // d = -25 (log-ratio clamp at 20, then k3(-20) = e^20 - 21 -> value clamp 10), d = -3 (k3 =
    // e^3 - 4 > 10 -> value clamp), d = 1 (inside), d = -2 (inside: k3 = e^2 - 3 = 4.39).
    const std::vector<double> lp{-26.0, -3.5, -0.5, -2.5}, ref{-1.0, -0.5, -1.5, -0.5}, m{1, 1, 1, 1};
    std::vector<double> g(4), tokens(4);
    const auto verl =
        rlhf::kl_loss(rlhf::make_view(lp.data(), 1, 4), rlhf::make_view(ref.data(), 1, 4),
                      rlhf::make_view(m.data(), 1, 4), rlhf::make_mut_view(g.data(), 1, 4),
                      rlhf::make_mut_view(tokens.data(), 1, 4), {.kl = rlhf::kl_preset::verl(rlhf::kl_estimator::k3)});
    CHECK(tokens[0] == 10.0);
    CHECK(tokens[1] == 10.0);
    CHECK(tokens[2] == doctest::Approx(std::exp(-1.0)).epsilon(1e-15));
    CHECK(tokens[3] == doctest::Approx(std::exp(2.0) - 3.0).epsilon(1e-14));
    CHECK(g[0] == 0.0);
    CHECK(g[1] == 0.0);
    CHECK(g[2] == doctest::Approx((1.0 - std::exp(-1.0)) / 4.0).epsilon(1e-14));
    CHECK(g[3] == doctest::Approx((1.0 - std::exp(2.0)) / 4.0).epsilon(1e-14));
    CHECK(verl.stats.clamp_fraction == 0.5);
    // Straight-through keeps the d gradient even where clamped (verl's k2 surrogate is unclamped).
    rlhf::kl_loss(rlhf::make_view(lp.data(), 1, 4), rlhf::make_view(ref.data(), 1, 4), rlhf::make_view(m.data(), 1, 4),
                  rlhf::make_mut_view(g.data(), 1, 4), {},
                  {.kl = rlhf::kl_preset::verl(rlhf::kl_estimator::k3), .straight_through = true});
    CHECK(g[0] == doctest::Approx(-25.0 / 4.0).epsilon(1e-15));
    CHECK(g[1] == doctest::Approx(-3.0 / 4.0).epsilon(1e-15));
    // Without clamps (TRL) the d = -25 token is e^25 - 26, finite, with gradient 1 - e^25.
    rlhf::kl_loss(rlhf::make_view(lp.data(), 1, 4), rlhf::make_view(ref.data(), 1, 4), rlhf::make_view(m.data(), 1, 4),
                  rlhf::make_mut_view(g.data(), 1, 4), rlhf::make_mut_view(tokens.data(), 1, 4));
    CHECK(tokens[0] == doctest::Approx(std::exp(25.0) - 26.0).epsilon(1e-14));
    CHECK(g[0] == doctest::Approx((1.0 - std::exp(25.0)) / 4.0).epsilon(1e-14));
}

TEST_CASE_TEMPLATE("kl_loss: values equal rlhf::token_kl for every estimator and preset" * doctest::test_suite("unit"),
                   T, float, double) {
    const auto x = random_batch<T>(3, 8, 21);
    for (const auto& options : every_option_set()) {
        std::vector<T> tokens(x.lp.size()), expected(x.lp.size());
        rlhf::kl_loss(x.l(), x.r(), x.m(), rlhf::mut_view<T>{}, rlhf::make_mut_view(tokens.data(), 3, 8), options);
        rlhf::token_kl(x.l(), x.r(), rlhf::make_mut_view(expected.data(), 3, 8), options.kl);
        CHECK(tokens == expected);
    }
}

TEST_CASE_TEMPLATE("kl_loss: every option against a naive reference" * doctest::test_suite("unit"), T, float, double) {
    const auto x = random_batch<T>(4, 7, 8);
    const std::vector<double> mask_d(x.mask.begin(), x.mask.end());
    const double tol = std::is_same_v<T, float> ? 5e-5 : 1e-11;
    for (const bool weighted : {false, true}) {
        for (const auto& options : every_option_set()) {
            std::vector<T> grad(x.lp.size(), T{7}), tokens(x.lp.size());
            const auto g = rlhf::make_mut_view(grad.data(), 4, 7);
            const auto tl = rlhf::make_mut_view(tokens.data(), 4, 7);
            const auto result = weighted ? rlhf::kl_loss(x.l(), x.r(), x.o(), x.m(), g, tl, options)
                                         : rlhf::kl_loss(x.l(), x.r(), x.m(), g, tl, options);
            double loss = 0.0, sum = 0.0, n = 0.0;
            for (std::size_t i = 0; i < x.lp.size(); ++i) {
                const auto ref = reference_token_loss(
                    static_cast<double>(x.lp[i]), static_cast<double>(x.ref[i]),
                    weighted ? std::optional<double>(static_cast<double>(x.old[i])) : std::nullopt, options);
                const double w = weight(mask_d, 4, 7, i, options.aggregation);
                CHECK(static_cast<double>(tokens[i]) == doctest::Approx(ref.loss).epsilon(tol));
                CHECK(static_cast<double>(grad[i]) == doctest::Approx(options.coef * w * ref.grad).epsilon(tol));
                loss += w * ref.loss;
                if (x.mask[i] != T{0}) {
                    sum += ref.loss;
                    n += 1.0;
                }
            }
            CHECK(result.loss == doctest::Approx(options.coef * loss).epsilon(tol));
            CHECK(result.stats.kl_aggregated == doctest::Approx(loss).epsilon(tol));
            CHECK(result.stats.kl_mean == doctest::Approx(sum / n).epsilon(tol));
            CHECK(result.stats.valid_tokens == n);
        }
    }
}

TEST_CASE("kl_loss: gradient matches central finite differences (double / away from kinks)" *
          doctest::test_suite("gradient")) {
    auto x = random_batch<double>(3, 7, 4);
    for (const bool weighted : {false, true}) {
        for (const auto& options : every_option_set()) {
            if (options.straight_through) continue;  // not the gradient of its value, by design
            std::vector<double> grad(x.lp.size());
            const auto loss_of = [&](rlhf::mut_view<double> g) {
                return weighted ? rlhf::kl_loss(x.l(), x.r(), x.o(), x.m(), g, {}, options).loss
                                : rlhf::kl_loss(x.l(), x.r(), x.m(), g, {}, options).loss;
            };
            loss_of(rlhf::make_mut_view(grad.data(), 3, 7));
            int checked = 0;
            for (std::size_t i = 0; i < x.lp.size(); ++i) {
                const double lp = x.lp[i];
                const double d = lp - x.ref[i];
                // Skip kinks: the log-ratio clamp, the value clamp, |d| at 0.
                if (options.kl.log_ratio_clamp && std::abs(std::abs(d) - *options.kl.log_ratio_clamp) < 1e-4) continue;
                if (options.kl.value_clamp) {
                    std::vector<double> k(1);
                    rlhf::token_kl(rlhf::make_view(&x.lp[i], 1, 1), rlhf::make_view(&x.ref[i], 1, 1),
                                   rlhf::make_mut_view(k.data(), 1, 1),
                                   {.estimator = options.kl.estimator, .log_ratio_clamp = options.kl.log_ratio_clamp});
                    if (std::abs(std::abs(k[0]) - *options.kl.value_clamp) < 1e-3) continue;
                }
                if (std::abs(d) < 1e-4) continue;
                // OpenRLHF's float32 log-ratio is piecewise constant at the float32 resolution:
                // use a step far above it.
                const double h = options.kl.float32_log_ratio ? 1e-3 : 1e-6;
                const double fd =
                    rlhf_test::central_difference([&] { return loss_of(rlhf::mut_view<double>{}); }, x.lp, i, h);
                const double tol = options.kl.float32_log_ratio ? 1e-3 : 1e-6;
                CHECK(grad[i] == doctest::Approx(fd).epsilon(tol));
                ++checked;
            }
            CHECK(checked > static_cast<int>(x.lp.size()) / 2);
        }
    }
}

TEST_CASE("kl_loss: masked positions never matter / empty mask policy" * doctest::test_suite("unit")) {
    auto x = random_batch<double>(3, 5, 2);
    std::vector<double> g1(x.lp.size()), g2(x.lp.size());
    const auto a = rlhf::kl_loss(x.l(), x.r(), x.o(), x.m(), rlhf::make_mut_view(g1.data(), 3, 5));
    for (std::size_t i = 0; i < x.lp.size(); ++i)
        if (x.mask[i] == 0.0) {
            x.lp[i] = -1000.0;   // k3 = +inf and rho = 0 there
            x.old[i] = -2000.0;  // rho = +inf there
        }
    const auto b = rlhf::kl_loss(x.l(), x.r(), x.o(), x.m(), rlhf::make_mut_view(g2.data(), 3, 5));
    CHECK(a.loss == b.loss);
    CHECK(g1 == g2);
    std::vector<std::int64_t> long_mask(x.mask.begin(), x.mask.end());
    const auto c =
        rlhf::kl_loss(x.l(), x.r(), x.o(), rlhf::make_view(long_mask.data(), 3, 5), rlhf::mut_view<double>{});
    CHECK(c.loss == b.loss);
    const std::vector<double> zeros(x.lp.size(), 0.0);
    const auto e = expect_error(
        [&] { (void)rlhf::kl_loss(x.l(), x.r(), rlhf::make_view(zeros.data(), 3, 5), rlhf::mut_view<double>{}); });
    CHECK(e.argument() == "mask");
    CHECK(e.kind() == rlhf::error_kind::value);
    const auto z =
        rlhf::kl_loss(x.l(), x.r(), rlhf::make_view(zeros.data(), 3, 5), rlhf::make_mut_view(g1.data(), 3, 5), {},
                      {.aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_sum_norm}});
    CHECK(z.loss == 0.0);
    CHECK(z.stats.kl_mean == 0.0);
    for (const double g : g1) CHECK(g == 0.0);
}

TEST_CASE("kl_loss: errors name the argument" * doctest::test_suite("unit")) {
    auto x = random_batch<double>(2, 4, 3);
    std::vector<double> small(6), grad(8), bad = x.lp;
    const auto wrong = rlhf::make_view(small.data(), 2, 3);
    const auto g = rlhf::make_mut_view(grad.data(), 2, 4);
    const auto argument_of = [](auto call) { return expect_error(call).argument(); };
    CHECK(argument_of([&] { (void)rlhf::kl_loss(x.l(), wrong, x.m(), g); }) == "ref_log_probs");
    CHECK(argument_of([&] { (void)rlhf::kl_loss(x.l(), x.r(), wrong, x.m(), g); }) == "old_log_probs");
    CHECK(argument_of([&] { (void)rlhf::kl_loss(x.l(), x.r(), wrong, g); }) == "mask");
    CHECK(argument_of([&] { (void)rlhf::kl_loss(x.l(), x.r(), x.m(), rlhf::make_mut_view(small.data(), 2, 3)); }) ==
          "grad_log_probs");
    CHECK(argument_of([&] { (void)rlhf::kl_loss(x.l(), x.r(), x.m(), g, rlhf::make_mut_view(small.data(), 2, 3)); }) ==
          "token_losses");
    bad[2] = std::numeric_limits<double>::quiet_NaN();
    const auto nan_view = rlhf::make_view(bad.data(), 2, 4);
    const auto e = expect_error([&] { (void)rlhf::kl_loss(nan_view, x.r(), x.m(), g); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "log_probs");
    CHECK(argument_of([&] { (void)rlhf::kl_loss(x.l(), nan_view, x.m(), g); }) == "ref_log_probs");
    CHECK(argument_of([&] { (void)rlhf::kl_loss(x.l(), x.r(), nan_view, x.m(), g); }) == "old_log_probs");
    const auto c =
        expect_error([&] { (void)rlhf::kl_loss(x.l(), x.r(), x.m(), g, {}, {.kl = {.log_ratio_clamp = 0.0}}); });
    CHECK(c.kind() == rlhf::error_kind::config);
    CHECK(c.argument() == "options.kl.log_ratio_clamp");
    CHECK(argument_of([&] { (void)rlhf::kl_loss(x.l(), x.r(), x.m(), g, {}, {.kl = {.value_clamp = -10.0}}); }) ==
          "options.kl.value_clamp");
    CHECK(argument_of([&] {
              (void)rlhf::kl_loss(x.l(), x.r(), x.m(), g, {}, {.coef = std::numeric_limits<double>::infinity()});
          }) == "options.coef");
    CHECK(argument_of([&] {
              (void)rlhf::kl_loss(x.l(), x.r(), x.m(), g, {}, {.aggregation = {.token_count_epsilon = -1.0}});
          }) == "options.aggregation.token_count_epsilon");
    // An overflowed importance weight at a valid token (lp - old = 800 > 709.8).
    x.old[0] = x.lp[0] - 800.0;
    const auto o = expect_error([&] { (void)rlhf::kl_loss(x.l(), x.r(), x.o(), x.m(), g); });
    CHECK(o.kind() == rlhf::error_kind::value);
    CHECK(o.argument() == "log_probs");
}

TEST_CASE("kl_loss: the reducer makes the aggregation counts global (one collective call)" *
          doctest::test_suite("unit")) {
    struct two_rank_reducer {
        int* calls;
        void sum_all(std::span<double> values) const {
            ++*calls;
            for (double& v : values) v *= 2.0;
        }
    };
    const auto x = random_batch<double>(3, 5, 6);
    const rlhf::kl_loss_options options{.aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean}};
    const auto local = rlhf::kl_loss(x.l(), x.r(), x.m(), rlhf::mut_view<double>{}, {}, options);
    int calls = 0;
    const auto shared =
        rlhf::kl_loss(x.l(), x.r(), x.o(), x.m(), rlhf::mut_view<double>{}, {}, options, two_rank_reducer{&calls});
    const auto weighted = rlhf::kl_loss(x.l(), x.r(), x.o(), x.m(), rlhf::mut_view<double>{}, {}, options);
    CHECK(calls == 1);
    CHECK(shared.loss == doctest::Approx(weighted.loss / 2.0).epsilon(1e-15));
    CHECK(local.stats.ratio_mean == 1.0);
}
