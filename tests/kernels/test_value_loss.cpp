#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "rlhf/kernels/value_loss.hpp"
#include "support/loss_option_sets.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::expect_error;

namespace {

// A [B, T] batch of value-loss inputs.
template <class T>
struct batch {
    rlhf::index_t rows = 0, cols = 0;
    std::vector<T> values, old_values, returns, mask;

    [[nodiscard]] rlhf::view<T> v() const { return rlhf::make_view(values.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T> old() const { return rlhf::make_view(old_values.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T> ret() const { return rlhf::make_view(returns.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T> m() const { return rlhf::make_view(mask.data(), rows, cols); }
};

// Random batch: values near old values (so that some tokens clip and some do not), a mask with
// an interior hole, an empty row and left padding.
template <class T>
batch<T> random_batch(rlhf::index_t rows, rlhf::index_t cols, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    batch<T> x;
    x.rows = rows;
    x.cols = cols;
    x.mask = rlhf_test::random_token_mask<T>(gen, rows, cols, 0.8, [&] {
        const double old = normal(gen);
        x.old_values.push_back(static_cast<T>(old));
        x.values.push_back(static_cast<T>(old + 0.4 * normal(gen)));
        x.returns.push_back(static_cast<T>(old + 3.0 * normal(gen)));
    });
    return x;
}

// Straightforward reference: the per-token loss and dL/dV written with if statements.
struct reference_token {
    double loss, grad;
    bool clipped;
};

reference_token reference_token_loss(double v, double old, double r, const rlhf::value_loss_options& o) {
    const auto psi = [&](double e) {
        if (o.huber_delta && std::abs(e) > *o.huber_delta) return *o.huber_delta * (2.0 * std::abs(e) - *o.huber_delta);
        return e * e;
    };
    const auto dpsi = [&](double e) {
        if (o.huber_delta && std::abs(e) > *o.huber_delta) return e > 0 ? 2.0 * *o.huber_delta : -2.0 * *o.huber_delta;
        return 2.0 * e;
    };
    if (o.returns_from_advantages) r += old;
    if (!o.clip_range) return {o.scale * psi(v - r), o.scale * dpsi(v - r), false};
    double vc = v;
    double dvc = 1.0;
    if (v > old + *o.clip_range) {
        vc = old + *o.clip_range;
        dvc = 0.0;
    }
    if (v < old - *o.clip_range) {
        vc = old - *o.clip_range;
        dvc = 0.0;
    }
    const double a = psi(v - r);
    const double b = psi(vc - r);
    if (b > a) return {o.scale * b, o.scale * dpsi(vc - r) * dvc, true};
    if (a > b) return {o.scale * a, o.scale * dpsi(v - r), false};
    return {o.scale * a, o.scale * 0.5 * (dpsi(v - r) + dpsi(vc - r) * dvc), false};
}

// Reference aggregation weight of every token (per mode, written out), local counts only.
std::vector<double> reference_weights(const std::vector<double>& mask, rlhf::index_t rows, rlhf::index_t cols,
                                      const rlhf::aggregation_options& a) {
    std::vector<double> w(mask.size(), 0.0);
    double tokens = 0.0, nonempty = 0.0;
    std::vector<double> per_row(static_cast<std::size_t>(rows), 0.0);
    for (rlhf::index_t b = 0; b < rows; ++b) {
        for (rlhf::index_t t = 0; t < cols; ++t)
            per_row[static_cast<std::size_t>(b)] += mask[static_cast<std::size_t>(b * cols + t)];
        tokens += per_row[static_cast<std::size_t>(b)];
        if (per_row[static_cast<std::size_t>(b)] > 0) nonempty += 1.0;
    }
    for (rlhf::index_t b = 0; b < rows; ++b) {
        const double n = per_row[static_cast<std::size_t>(b)];
        for (rlhf::index_t t = 0; t < cols; ++t) {
            const auto i = static_cast<std::size_t>(b * cols + t);
            if (mask[i] == 0.0) continue;
            switch (a.mode) {
                case rlhf::loss_aggregation::token_mean:
                    w[i] = 1.0 / tokens;
                    break;
                case rlhf::loss_aggregation::seq_mean_token_sum:
                    w[i] = 1.0 / nonempty;
                    break;
                case rlhf::loss_aggregation::seq_mean_token_mean:
                    w[i] = 1.0 / (n + a.token_count_epsilon) / nonempty;
                    break;
                case rlhf::loss_aggregation::seq_mean_token_sum_norm:
                    w[i] = 1.0 / static_cast<double>(cols);
                    break;
            }
        }
    }
    return w;
}

std::vector<rlhf::value_loss_options> every_option_set() {
    std::vector<rlhf::value_loss_options> sets = rlhf_test::value_option_sets();
    sets.push_back({.clip_range = 0.0});  // V_clip = V_old
    return sets;
}

}  // namespace

TEST_CASE("value_loss: hand-computed clipped loss / gradient and statistics" * doctest::test_suite("unit")) {
    // old = 0, c = 0.2. t0: inside the clip range (a tie, e = -0.9); t1: clipped, unclipped error
    // larger (e1 = 1.5 > e2 = 1.2); t2: clipped, clipped error larger (e1 = -0.1, e2 = -0.4).
    const std::vector<double> v{0.1, 0.5, 0.5}, old{0.0, 0.0, 0.0}, r{1.0, -1.0, 0.6}, m{1, 1, 1};
    std::vector<double> grad(3), tokens(3);
    const auto result = rlhf::value_loss(rlhf::make_view(v.data(), 1, 3), rlhf::make_view(old.data(), 1, 3),
                                         rlhf::make_view(r.data(), 1, 3), rlhf::make_view(m.data(), 1, 3),
                                         rlhf::make_mut_view(grad.data(), 1, 3),
                                         rlhf::make_mut_view(tokens.data(), 1, 3), {.clip_range = 0.2});
    CHECK(tokens[0] == doctest::Approx(0.405).epsilon(1e-14));
    CHECK(tokens[1] == doctest::Approx(1.125).epsilon(1e-14));
    CHECK(tokens[2] == doctest::Approx(0.08).epsilon(1e-14));
    CHECK(result.loss == doctest::Approx(1.61 / 3.0).epsilon(1e-14));
    CHECK(grad[0] == doctest::Approx(-0.9 / 3.0).epsilon(1e-14));
    CHECK(grad[1] == doctest::Approx(1.5 / 3.0).epsilon(1e-14));
    CHECK(grad[2] == 0.0);
    CHECK(result.stats.clip_fraction == doctest::Approx(1.0 / 3.0).epsilon(1e-15));
    CHECK(result.stats.clipped_tokens == 1.0);
    CHECK(result.stats.value_error == doctest::Approx(3.07 / 3.0).epsilon(1e-14));
    CHECK(result.stats.value_mean == doctest::Approx(1.1 / 3.0).epsilon(1e-14));
    CHECK(result.stats.return_mean == doctest::Approx(0.6 / 3.0).epsilon(1e-14));
    CHECK(result.stats.valid_tokens == 3.0);
    // Explained variance: Var(R) = mean(R²) - mean(R)² with R = {1, -1, 0.6}; residual R - V = {0.9, -1.5, 0.1}.
    const double var_r = (1.0 + 1.0 + 0.36) / 3.0 - 0.04;
    const double mean_d = -0.5 / 3.0;
    const double var_d = (0.81 + 2.25 + 0.01) / 3.0 - mean_d * mean_d;
    CHECK(result.stats.explained_variance == doctest::Approx(1.0 - var_d / var_r).epsilon(1e-13));

    // Huber with δ = 1 and ½: t1's |e| = 1.5 is in the linear piece: 1·(1.5 - 0.5) = 1, slope 1.
    const auto huber = rlhf::value_loss(
        rlhf::make_view(v.data(), 1, 3), rlhf::make_view(old.data(), 1, 3), rlhf::make_view(r.data(), 1, 3),
        rlhf::make_view(m.data(), 1, 3), rlhf::make_mut_view(grad.data(), 1, 3),
        rlhf::make_mut_view(tokens.data(), 1, 3), {.clip_range = 0.2, .huber_delta = 1.0, .coef = 3.0});
    CHECK(tokens[1] == doctest::Approx(1.0).epsilon(1e-14));
    CHECK(grad[1] == doctest::Approx(1.0).epsilon(1e-14));  // coef 3 × slope 1 / 3 tokens
    CHECK(huber.loss == doctest::Approx(0.405 + 1.0 + 0.08).epsilon(1e-14));

    // Unclipped (OpenRLHF clip_eps=None): ½(V - R)², no clip fraction.
    const auto plain = rlhf::value_loss(rlhf::make_view(v.data(), 1, 3), rlhf::make_view(old.data(), 1, 3),
                                        rlhf::make_view(r.data(), 1, 3), rlhf::make_view(m.data(), 1, 3),
                                        rlhf::mut_view<double>{}, {}, {.clip_range = std::nullopt});
    CHECK(plain.loss == doctest::Approx(0.5 * 3.07 / 3.0).epsilon(1e-14));
    CHECK(plain.stats.clip_fraction == 0.0);
}

TEST_CASE("value_loss: ColossalChat v2 target = advantages + old values" * doctest::test_suite("unit")) {
    const auto x = random_batch<double>(3, 5, 11);
    std::vector<double> adv(x.returns.size());
    for (std::size_t i = 0; i < adv.size(); ++i) adv[i] = x.returns[i] - x.old_values[i];
    std::vector<double> g1(adv.size()), g2(adv.size());
    const auto a = rlhf::value_loss(x.v(), x.old(), rlhf::make_view(adv.data(), 3, 5), x.m(),
                                    rlhf::make_mut_view(g1.data(), 3, 5), {}, {.returns_from_advantages = true});
    const auto b = rlhf::value_loss(x.v(), x.old(), x.ret(), x.m(), rlhf::make_mut_view(g2.data(), 3, 5));
    CHECK(a.loss == doctest::Approx(b.loss).epsilon(1e-13));
    for (std::size_t i = 0; i < g1.size(); ++i) CHECK(g1[i] == doctest::Approx(g2[i]).epsilon(1e-12));
}

TEST_CASE_TEMPLATE("value_loss: every option against a naive reference" * doctest::test_suite("unit"), T, float,
                   double) {
    const auto x = random_batch<T>(4, 9, 3);
    const std::vector<double> mask_d(x.mask.begin(), x.mask.end());
    const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
    for (const auto& options : every_option_set()) {
        std::vector<T> grad(x.values.size(), T{7}), tokens(x.values.size());
        const auto result = rlhf::value_loss(x.v(), x.old(), x.ret(), x.m(), rlhf::make_mut_view(grad.data(), 4, 9),
                                             rlhf::make_mut_view(tokens.data(), 4, 9), options);
        const auto w = reference_weights(mask_d, 4, 9, options.aggregation);
        double loss = 0.0, clipped = 0.0, n = 0.0;
        for (std::size_t i = 0; i < x.values.size(); ++i) {
            const auto ref =
                reference_token_loss(static_cast<double>(x.values[i]), static_cast<double>(x.old_values[i]),
                                     static_cast<double>(x.returns[i]), options);
            CHECK(static_cast<double>(tokens[i]) == doctest::Approx(ref.loss).epsilon(tol));
            loss += w[i] * ref.loss;
            CHECK(static_cast<double>(grad[i]) == doctest::Approx(options.coef * w[i] * ref.grad).epsilon(tol));
            if (x.mask[i] != T{0}) {
                n += 1.0;
                clipped += ref.clipped ? 1.0 : 0.0;
            }
        }
        CHECK(result.loss == doctest::Approx(options.coef * loss).epsilon(tol));
        CHECK(result.stats.valid_tokens == n);
        CHECK(result.stats.clip_fraction == doctest::Approx(clipped / n).epsilon(1e-15));
    }
}

TEST_CASE("value_loss: gradient matches central finite differences (double / away from kinks)" *
          doctest::test_suite("gradient")) {
    auto x = random_batch<double>(3, 7, 5);
    const rlhf::index_t rows = 3, cols = 7;
    for (const auto& options : every_option_set()) {
        std::vector<double> grad(x.values.size());
        rlhf::value_loss(x.v(), x.old(), x.ret(), x.m(), rlhf::make_mut_view(grad.data(), rows, cols), {}, options);
        int checked = 0;
        for (std::size_t i = 0; i < x.values.size(); ++i) {
            const double v = x.values[i], old = x.old_values[i];
            const double r = options.returns_from_advantages ? x.returns[i] + old : x.returns[i];
            // Skip tokens within 1e-4 of a kink: the clip bounds, the branch switch, the Huber knee.
            if (options.clip_range) {
                const double c = *options.clip_range;
                if (std::abs(std::abs(v - old) - c) < 1e-4) continue;
                const double vc = std::clamp(v, old - c, old + c);
                if (vc != v && std::abs(std::abs(v - r) - std::abs(vc - r)) < 1e-4) continue;
                if (options.huber_delta && std::abs(std::abs(vc - r) - *options.huber_delta) < 1e-4) continue;
            }
            if (options.huber_delta && std::abs(std::abs(v - r) - *options.huber_delta) < 1e-4) continue;
            const auto loss = [&] {
                return rlhf::value_loss(x.v(), x.old(), x.ret(), x.m(), rlhf::mut_view<double>{}, {}, options).loss;
            };
            const double fd = rlhf_test::central_difference(loss, x.values, i, 1e-6);
            CHECK(grad[i] == doctest::Approx(fd).epsilon(1e-6).scale(1.0));
            ++checked;
        }
        CHECK(checked > static_cast<int>(x.values.size()) / 2);
    }
}

TEST_CASE("value_loss: masked positions never matter / all-zero mask policy" * doctest::test_suite("unit")) {
    auto x = random_batch<double>(3, 6, 9);
    std::vector<double> g1(x.values.size()), g2(x.values.size());
    const auto a = rlhf::value_loss(x.v(), x.old(), x.ret(), x.m(), rlhf::make_mut_view(g1.data(), 3, 6));
    for (std::size_t i = 0; i < x.values.size(); ++i)
        if (x.mask[i] == 0.0) {
            x.values[i] = 1e6;
            x.returns[i] = -1e6;
        }
    const auto b = rlhf::value_loss(x.v(), x.old(), x.ret(), x.m(), rlhf::make_mut_view(g2.data(), 3, 6));
    CHECK(a.loss == b.loss);
    CHECK(g1 == g2);
    for (std::size_t i = 0; i < x.values.size(); ++i)
        if (x.mask[i] == 0.0) CHECK(g2[i] == 0.0);

    // Bool and integer masks give the same answer as the floating mask.
    std::vector<std::uint8_t> mask_u8(x.mask.begin(), x.mask.end());
    const auto c =
        rlhf::value_loss(x.v(), x.old(), x.ret(), rlhf::make_view(mask_u8.data(), 3, 6), rlhf::mut_view<double>{});
    CHECK(c.loss == b.loss);

    // All-zero mask: token-mean has no divisor -> error naming `mask`; with an explicit global
    // count (another rank holds the tokens) the loss and gradient are 0.
    const std::vector<double> zeros(x.values.size(), 0.0);
    const auto e = expect_error([&] {
        (void)rlhf::value_loss(x.v(), x.old(), x.ret(), rlhf::make_view(zeros.data(), 3, 6),
                               rlhf::make_mut_view(g1.data(), 3, 6));
    });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "mask");
    const auto z =
        rlhf::value_loss(x.v(), x.old(), x.ret(), rlhf::make_view(zeros.data(), 3, 6),
                         rlhf::make_mut_view(g1.data(), 3, 6), {}, {.aggregation = {.global_token_count = 10.0}});
    CHECK(z.loss == 0.0);
    CHECK(z.stats.clip_fraction == 0.0);
    CHECK(z.stats.valid_tokens == 0.0);
    for (const double g : g1) CHECK(g == 0.0);
}

TEST_CASE("value_loss: errors name the argument" * doctest::test_suite("unit")) {
    const auto x = random_batch<double>(2, 4, 1);
    std::vector<double> small(6), grad(8), bad = x.values;
    const auto v = x.v();
    const auto wrong = rlhf::make_view(small.data(), 2, 3);
    const auto g = rlhf::make_mut_view(grad.data(), 2, 4);
    const auto argument_of = [](auto call) { return expect_error(call).argument(); };
    CHECK(argument_of([&] { (void)rlhf::value_loss(v, wrong, x.ret(), x.m(), g); }) == "old_values");
    CHECK(argument_of([&] { (void)rlhf::value_loss(v, x.old(), wrong, x.m(), g); }) == "returns");
    CHECK(argument_of([&] { (void)rlhf::value_loss(v, x.old(), x.ret(), wrong, g); }) == "mask");
    CHECK(argument_of([&] {
              (void)rlhf::value_loss(v, x.old(), x.ret(), x.m(), rlhf::make_mut_view(small.data(), 2, 3));
          }) == "grad_values");
    CHECK(argument_of([&] {
              (void)rlhf::value_loss(v, x.old(), x.ret(), x.m(), g, rlhf::make_mut_view(small.data(), 2, 3));
          }) == "token_losses");
    bad[3] = std::numeric_limits<double>::quiet_NaN();
    const auto nan_view = rlhf::make_view(bad.data(), 2, 4);
    const auto e = expect_error([&] { (void)rlhf::value_loss(nan_view, x.old(), x.ret(), x.m(), g); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "values");
    CHECK(argument_of([&] { (void)rlhf::value_loss(v, nan_view, x.ret(), x.m(), g); }) == "old_values");
    bad[3] = std::numeric_limits<double>::infinity();
    CHECK(argument_of([&] { (void)rlhf::value_loss(v, x.old(), nan_view, x.m(), g); }) == "returns");
    std::vector<double> mask2 = x.mask;
    mask2[1] = 0.5;
    CHECK(argument_of([&] { (void)rlhf::value_loss(v, x.old(), x.ret(), rlhf::make_view(mask2.data(), 2, 4), g); }) ==
          "mask");
    const auto c =
        expect_error([&] { (void)rlhf::value_loss(v, x.old(), x.ret(), x.m(), g, {}, {.clip_range = -0.1}); });
    CHECK(c.kind() == rlhf::error_kind::config);
    CHECK(c.argument() == "options.clip_range");
    CHECK(argument_of([&] { (void)rlhf::value_loss(v, x.old(), x.ret(), x.m(), g, {}, {.huber_delta = 0.0}); }) ==
          "options.huber_delta");
    CHECK(argument_of([&] {
              (void)rlhf::value_loss(v, x.old(), x.ret(), x.m(), g, {},
                                     {.scale = std::numeric_limits<double>::infinity()});
          }) == "options.scale");
    CHECK(argument_of([&] {
              (void)rlhf::value_loss(v, x.old(), x.ret(), x.m(), g, {},
                                     {.coef = std::numeric_limits<double>::quiet_NaN()});
          }) == "options.coef");
    CHECK(argument_of([&] {
              (void)rlhf::value_loss(v, x.old(), x.ret(), x.m(), g, {}, {.aggregation = {.dp_size = 0.0}});
          }) == "options.aggregation.dp_size");
}

TEST_CASE("value_loss: the reducer makes the aggregation counts global (one collective call)" *
          doctest::test_suite("unit")) {
    // Two identical ranks: the global token count is twice the local one, so each rank's share of
    // the token-mean loss (and its gradient) is half the single-process value.
    struct two_rank_reducer {
        int* calls;
        void sum_all(std::span<double> values) const {
            ++*calls;
            for (double& v : values) v *= 2.0;
        }
    };
    const auto x = random_batch<double>(3, 5, 4);
    std::vector<double> g1(x.values.size()), g2(x.values.size());
    const auto local = rlhf::value_loss(x.v(), x.old(), x.ret(), x.m(), rlhf::make_mut_view(g1.data(), 3, 5));
    int calls = 0;
    const auto shared = rlhf::value_loss(x.v(), x.old(), x.ret(), x.m(), rlhf::make_mut_view(g2.data(), 3, 5), {}, {},
                                         two_rank_reducer{&calls});
    CHECK(calls == 1);
    CHECK(shared.loss == doctest::Approx(local.loss / 2.0).epsilon(1e-15));
    for (std::size_t i = 0; i < g1.size(); ++i) CHECK(g2[i] == doctest::Approx(g1[i] / 2.0).epsilon(1e-15));
    CHECK(shared.stats.valid_tokens == local.stats.valid_tokens);  // statistics stay local
}

// Found by tests/fuzz (docs/fuzzing.md): in float32 a squared error beyond float's range times
// scale = 0 or coef = 0, a coefficient beyond float's range times a zero gradient and a target
// R + V_old beyond float's range (statistics) gave NaN; a scale beyond float's range or a Huber δ
// that rounds to 0 in float were used as such.
TEST_CASE("value_loss: float32 overflow never gives NaN / options float cannot hold are refused" *
          doctest::test_suite("unit")) {
    const auto v = [](const std::vector<float>& x) { return rlhf::make_view(x.data(), 1, 2); };
    const std::vector<float> values{0.0f, 3e38f}, zeros{0.0f, 0.0f}, ones{1.0f, 1.0f};
    std::vector<float> grad(2), tokens(2);
    const auto g = rlhf::make_mut_view(grad.data(), 1, 2);
    const auto tl = rlhf::make_mut_view(tokens.data(), 1, 2);
    // ψ(3e38) = +inf in float.
    rlhf::value_loss_result r = rlhf::value_loss(v(values), v(zeros), v(zeros), v(ones), g, tl, {.scale = 0.0});
    CHECK(tokens[1] == 0.0f);
    CHECK(r.loss == 0.0);
    CHECK_FALSE(std::isnan(grad[1]));
    r = rlhf::value_loss(v(values), v(zeros), v(zeros), v(ones), g, tl, {.coef = 0.0});
    CHECK(r.loss == 0.0);
    CHECK(grad[1] == 0.0f);
    // coef 1e300: the weight is +inf in float; a token with error 0 keeps gradient 0.
    const std::vector<float> v2{1.0f, 2.0f}, ret2{1.0f, 0.0f};
    (void)rlhf::value_loss(v(v2), v(zeros), v(ret2), v(ones), g, tl, {.clip_range = std::nullopt, .coef = 1e300});
    CHECK(grad[0] == 0.0f);
    CHECK_FALSE(std::isnan(grad[1]));
    // R + V_old = 6e38 at a masked token: +inf in float, 0·inf in the statistics.
    const std::vector<float> big{3e38f, 0.0f}, mask{0.0f, 1.0f};
    r = rlhf::value_loss(v(zeros), v(big), v(big), v(mask), {}, {}, {.returns_from_advantages = true});
    CHECK(r.stats.value_error == 0.0);
    CHECK(r.stats.return_mean == 0.0);
    // Options float cannot hold: refused for float, accepted for double.
    rlhf_test::check_error([&] { (void)rlhf::value_loss(v(v2), v(zeros), v(ret2), v(ones), g, tl, {.scale = 1e39}); },
                           rlhf::error_kind::config, "options.scale");
    rlhf_test::check_error(
        [&] { (void)rlhf::value_loss(v(v2), v(zeros), v(ret2), v(ones), g, tl, {.huber_delta = 1e-300}); },
        rlhf::error_kind::config, "options.huber_delta");
    const std::vector<double> vd{1.0, 2.0}, zd{0.0, 0.0}, rd{1.0, 0.0}, md{1.0, 1.0};
    const auto w = [](const std::vector<double>& x) { return rlhf::make_view(x.data(), 1, 2); };
    CHECK_NOTHROW((void)rlhf::value_loss(w(vd), w(zd), w(rd), w(md), {}, {}, {.scale = 1e39}));
}
