// Tests of rlhf/kernels/logits.hpp: token log-probs and entropy, full-vocabulary KL, LM loss.
// References are written the straightforward way (materialised log-softmax, −Σ p·log p), unlike
// the kernels' streaming form; gradients are checked by central finite differences.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "rlhf/kernels/logits.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::cube;
using rlhf_test::expect_error;
using rlhf_test::matrix;
using rlhf_test::tolerance;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();

// Materialised log-softmax of x = z / tau (long double), -inf entries kept.
template <class T>
std::vector<long double> log_softmax(const T* z, rlhf::index_t v, double tau) {
    long double m = -std::numeric_limits<long double>::infinity();
    for (rlhf::index_t i = 0; i < v; ++i)
        m = std::max(m, static_cast<long double>(z[i]) / static_cast<long double>(tau));
    long double s = 0;
    for (rlhf::index_t i = 0; i < v; ++i)
        s += std::exp(static_cast<long double>(z[i]) / static_cast<long double>(tau) - m);
    std::vector<long double> out(static_cast<std::size_t>(v));
    for (rlhf::index_t i = 0; i < v; ++i)
        out[static_cast<std::size_t>(i)] =
            static_cast<long double>(z[i]) / static_cast<long double>(tau) - m - std::log(s);
    return out;
}

long double entropy_of(const std::vector<long double>& logp) {
    long double h = 0;
    for (long double l : logp)
        if (std::isfinite(l)) h -= std::exp(l) * l;
    return h;
}

long double kl_of(const std::vector<long double>& lp, const std::vector<long double>& lq) {
    long double k = 0;
    for (std::size_t i = 0; i < lp.size(); ++i)
        if (std::isfinite(lp[i])) k += std::exp(lp[i]) * (lp[i] - lq[i]);
    return k;
}

template <class T>
cube<T> random_logits(std::mt19937& gen, rlhf::index_t b, rlhf::index_t t, rlhf::index_t v, double scale = 3.0) {
    std::normal_distribution<double> normal(0.0, scale);
    cube<T> c(b, t, v);
    for (auto& x : c.data) x = static_cast<T>(normal(gen));
    return c;
}

matrix<std::int64_t> random_tokens(std::mt19937& gen, rlhf::index_t b, rlhf::index_t t, rlhf::index_t v) {
    std::uniform_int_distribution<std::int64_t> pick(0, v - 1);
    matrix<std::int64_t> tokens(b, t);
    for (auto& y : tokens.data) y = pick(gen);
    return tokens;
}

// Checks `grad` against central differences (step 1e-6) of `objective()` at every finite entry of
// `x`; at a -inf entry (a masked vocabulary entry) the gradient must be exactly 0.
template <class F>
void check_gradient(const cube<double>& grad, cube<double>& x, F&& objective) {
    for (std::size_t i = 0; i < x.data.size(); ++i) {
        if (std::isinf(x.data[i])) {
            CHECK(grad.data[i] == 0.0);
            continue;
        }
        const double fd = rlhf_test::central_difference(objective, x.data, i, 1e-6);
        CHECK(grad.data[i] == doctest::Approx(fd).epsilon(1e-7).scale(1.0));
    }
}

}  // namespace

TEST_CASE("logprobs_from_logits: hand-computed values" * doctest::test_suite("unit")) {
    // Row 0: softmax of {0, ln 2, ln 3} is {1, 2, 3} / 6. Row 1: {0, 0, -inf} is {1/2, 1/2, 0}.
    const std::vector<double> z{0.0, std::log(2.0), std::log(3.0), 0.0, 0.0, -inf};
    const rlhf::view<double, 3> logits(z.data(), {1, 2, 3});
    const std::vector<std::int64_t> y{2, 1};
    std::vector<double> lp(2), h(2), lse(2);
    rlhf::logprobs_from_logits(logits, rlhf::make_view(y.data(), 1, 2), rlhf::make_mut_view(lp.data(), 1, 2),
                               rlhf::make_mut_view(h.data(), 1, 2), rlhf::make_mut_view(lse.data(), 1, 2));
    const double h0 = -(std::log(1.0 / 6) / 6 + 2 * std::log(2.0 / 6) / 6 + 3 * std::log(3.0 / 6) / 6);
    CHECK(lp[0] == doctest::Approx(std::log(0.5)).epsilon(1e-15));
    CHECK(h[0] == doctest::Approx(h0).epsilon(1e-15));
    CHECK(lse[0] == doctest::Approx(std::log(6.0)).epsilon(1e-15));
    CHECK(lp[1] == doctest::Approx(-std::log(2.0)).epsilon(1e-15));
    CHECK(h[1] == doctest::Approx(std::log(2.0)).epsilon(1e-15));
    CHECK(lse[1] == doctest::Approx(std::log(2.0)).epsilon(1e-15));

    // Temperature 2: {0, 2 ln 2} / 2 = {0, ln 2}: softmax {1/3, 2/3}.
    const std::vector<float> zt{0.0f, 2.0f * std::log(2.0f)};
    const std::vector<std::int64_t> yt{0};
    float lpt = 0, ht = 0;
    rlhf::logprobs_from_logits(rlhf::view<float, 3>(zt.data(), {1, 1, 2}), rlhf::make_view(yt.data(), 1, 1),
                               rlhf::make_mut_view(&lpt, 1, 1), rlhf::make_mut_view(&ht, 1, 1), {},
                               {.temperature = 2.0});
    CHECK(lpt == doctest::Approx(std::log(1.0 / 3)).epsilon(1e-6));
    CHECK(ht == doctest::Approx(-(std::log(1.0 / 3) / 3 + 2 * std::log(2.0 / 3) / 3)).epsilon(1e-6));

    // A single-entry vocabulary: lp = 0, H = 0.
    const double one = 5.0;
    const std::int64_t zero_token = 0;
    double lp1 = 1, h1 = 1;
    rlhf::logprobs_from_logits(rlhf::view<double, 3>(&one, {1, 1, 1}), rlhf::make_view(&zero_token, 1, 1),
                               rlhf::make_mut_view(&lp1, 1, 1), rlhf::make_mut_view(&h1, 1, 1));
    CHECK(lp1 == 0.0);
    CHECK(h1 == 0.0);
}

TEST_CASE_TEMPLATE("logprobs_from_logits matches a materialised log-softmax" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 gen(7);
    for (const rlhf::index_t v : {1, 7, 512, 513, 1500}) {
        const rlhf::index_t b = 2, t = 3;
        cube<T> z = random_logits<T>(gen, b, t, v);
        // Row (0, 1) increases along the vocabulary and row (1, 2) decreases: the running maximum
        // changes in every chunk, or never.
        for (rlhf::index_t k = 0; k < v; ++k) {
            z(0, 1, k) = static_cast<T>(0.01 * static_cast<double>(k));
            z(1, 2, k) = static_cast<T>(-0.01 * static_cast<double>(k));
        }
        if (v > 3) z(1, 0, 2) = static_cast<T>(-inf);  // a masked vocabulary entry
        const auto y = random_tokens(gen, b, t, v);
        matrix<std::int64_t> tokens = y;
        if (v > 3 && tokens(1, 0) == 2) tokens(1, 0) = 3;
        for (const double tau : {1.0, 0.7}) {
            matrix<T> lp(b, t), h(b, t);
            matrix<double> lse(b, t);
            rlhf::logprobs_from_logits(z.view(), tokens.view(), lp.mut(), h.mut(), lse.mut(), {.temperature = tau});
            for (rlhf::index_t i = 0; i < b; ++i)
                for (rlhf::index_t j = 0; j < t; ++j) {
                    const auto ref = log_softmax(&z(i, j, 0), v, tau);
                    const double tol = tolerance<T>();
                    CHECK(
                        static_cast<double>(lp(i, j)) ==
                        doctest::Approx(static_cast<double>(ref[static_cast<std::size_t>(tokens(i, j))])).epsilon(tol));
                    CHECK(static_cast<double>(h(i, j)) ==
                          doctest::Approx(static_cast<double>(entropy_of(ref))).epsilon(tol).scale(1.0));
                    CHECK(static_cast<double>(lse(i, j)) ==
                          doctest::Approx(
                              static_cast<double>(static_cast<long double>(z(i, j, 0)) / static_cast<long double>(tau) -
                                                  ref[0]))
                              .epsilon(tol)
                              .scale(1.0));
                }
            // entropy_from_logits gives the same entropy.
            matrix<T> h2(b, t);
            rlhf::entropy_from_logits(z.view(), h2.mut(), {}, {.temperature = tau});
            CHECK(h2.data == h.data);
        }
    }
}

TEST_CASE_TEMPLATE("logprobs_from_logits is stable for logits of magnitude 1e4" * doctest::test_suite("unit"), T, float,
                   double) {
    // {1e4, 1e4 - 1, -1e4, 1e4 - 2}: the naive exp overflows; the answer is that of {0, -1, -2e4, -2}.
    const std::vector<T> z{T(1e4), T(1e4 - 1), T(-1e4), T(1e4 - 2)};
    const std::vector<T> shifted{T(0), T(-1), T(-2e4), T(-2)};
    const std::vector<std::int64_t> y{1};
    T lp{}, h{};
    rlhf::logprobs_from_logits(rlhf::view<T, 3>(z.data(), {1, 1, 4}), rlhf::make_view(y.data(), 1, 1),
                               rlhf::make_mut_view(&lp, 1, 1), rlhf::make_mut_view(&h, 1, 1));
    const auto ref = log_softmax(shifted.data(), 4, 1.0);
    CHECK(std::isfinite(lp));
    CHECK(static_cast<double>(lp) == doctest::Approx(static_cast<double>(ref[1])).epsilon(1e-6));
    CHECK(static_cast<double>(h) == doctest::Approx(static_cast<double>(entropy_of(ref))).epsilon(1e-6));
    // A very confident row: entropy ~ 0, not negative garbage.
    const std::vector<T> sharp{T(1e4), T(-1e4)};
    const std::vector<std::int64_t> y0{0};
    rlhf::logprobs_from_logits(rlhf::view<T, 3>(sharp.data(), {1, 1, 2}), rlhf::make_view(y0.data(), 1, 1),
                               rlhf::make_mut_view(&lp, 1, 1), rlhf::make_mut_view(&h, 1, 1));
    CHECK(lp == T(0));
    CHECK(h == T(0));
}

TEST_CASE("logprobs_from_logits: masked positions are not read and get 0" * doctest::test_suite("unit")) {
    std::mt19937 gen(3);
    cube<double> z = random_logits<double>(gen, 2, 3, 5);
    auto tokens = random_tokens(gen, 2, 3, 5);
    matrix<std::uint8_t> mask(2, 3, 1);
    mask(0, 2) = 0;
    mask(1, 0) = 0;
    for (rlhf::index_t k = 0; k < 5; ++k) z(0, 2, k) = not_a_number;
    tokens(0, 2) = -100;
    tokens(1, 0) = 99;
    matrix<double> lp(2, 3, 7.0), h(2, 3, 7.0), lse(2, 3, 7.0);
    rlhf::logprobs_from_logits(z.view(), tokens.view(), mask.view(), lp.mut(), h.mut(), lse.mut());
    CHECK(lp(0, 2) == 0.0);
    CHECK(h(0, 2) == 0.0);
    CHECK(lse(1, 0) == 0.0);
    const auto ref = log_softmax(&z(1, 1, 0), 5, 1.0);
    CHECK(lp(1, 1) == doctest::Approx(static_cast<double>(ref[static_cast<std::size_t>(tokens(1, 1))])));
    // The unmasked result equals the masked one where the mask is 1.
    matrix<double> lp_all(2, 3);
    tokens(0, 2) = 0;
    tokens(1, 0) = 0;
    for (rlhf::index_t k = 0; k < 5; ++k) z(0, 2, k) = 0.0;
    rlhf::logprobs_from_logits(z.view(), tokens.view(), lp_all.mut());
    CHECK(lp_all(1, 1) == lp(1, 1));
    CHECK(lp_all(0, 0) == lp(0, 0));
    // Gradient rows of masked positions are 0.
    for (rlhf::index_t k = 0; k < 5; ++k) z(0, 2, k) = not_a_number;
    tokens(0, 2) = -100;
    cube<double> grad(2, 3, 5, 9.0);
    const matrix<double> ones(2, 3, 1.0);
    rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), mask.view(), ones.view(), ones.view(), {}, {},
                                        grad.mut());
    for (rlhf::index_t k = 0; k < 5; ++k) {
        CHECK(grad(0, 2, k) == 0.0);
        CHECK(grad(1, 0, k) == 0.0);
    }
}

TEST_CASE("logprobs_from_logits: errors name the argument and the position" * doctest::test_suite("unit")) {
    std::vector<double> z{0.0, 1.0, 2.0, 3.0, 4.0, 5.0};  // [1, 2, 3]
    std::vector<std::int64_t> y{0, 2};
    std::vector<double> lp(2);
    const auto call = [&](rlhf::logits_options options = {}) {
        rlhf::logprobs_from_logits(rlhf::view<double, 3>(z.data(), {1, 2, 3}), rlhf::make_view(y.data(), 1, 2),
                                   rlhf::make_mut_view(lp.data(), 1, 2), {}, {}, options);
    };
    CHECK_NOTHROW(call());
    y[1] = 3;
    auto e = expect_error([&] { call(); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "tokens");
    CHECK(e.function() == "rlhf::logprobs_from_logits");
    CHECK(e.actual() == "3 at [0, 1]");
    CHECK(e.expected() == "token ids in [0, 3) (the vocabulary size)");
    y[1] = -1;
    CHECK(expect_error([&] { call(); }).actual() == "-1 at [0, 1]");
    y[1] = 2;
    z[4] = not_a_number;
    e = expect_error([&] { call(); });
    CHECK(e.argument() == "logits");
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.actual() == "nan at [0, 1, 1]");
    z[4] = inf;
    CHECK(expect_error([&] { call(); }).actual() == "inf at [0, 1, 1]");
    z[3] = z[4] = z[5] = -inf;
    e = expect_error([&] { call(); });
    CHECK(e.argument() == "logits");
    CHECK(e.actual() == "all -inf at [0, 1]");
    z[3] = 1.0;
    z[4] = 2.0;  // token 2 has logit -inf: probability 0
    e = expect_error([&] { call(); });
    CHECK(e.argument() == "tokens");
    CHECK(e.actual() == "token 2 with logit -inf at [0, 1]");
    z[5] = 3.0;
    e = expect_error([&] { call({.temperature = 0.0}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "temperature");
    CHECK(expect_error([&] { call({.temperature = -1.0}); }).argument() == "temperature");
    z[0] = 1e300;
    e = expect_error([&] { call({.temperature = 1e-10}); });
    CHECK(e.argument() == "temperature");
    z[0] = 0.0;
    // Shapes.
    std::vector<std::int64_t> y3{0, 0, 0};
    e = expect_error([&] {
        rlhf::logprobs_from_logits(rlhf::view<double, 3>(z.data(), {1, 2, 3}), rlhf::make_view(y3.data(), 1, 3),
                                   rlhf::make_mut_view(lp.data(), 1, 2));
    });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "tokens");
    e = expect_error([&] {
        rlhf::logprobs_from_logits(rlhf::view<double, 3>(z.data(), {1, 2, 3}), rlhf::make_view(y.data(), 1, 2),
                                   rlhf::make_mut_view(lp.data(), 2, 1));
    });
    CHECK(e.argument() == "logprobs");
    std::vector<double> h(3);
    e = expect_error([&] {
        rlhf::logprobs_from_logits(rlhf::view<double, 3>(z.data(), {1, 2, 3}), rlhf::make_view(y.data(), 1, 2),
                                   rlhf::make_mut_view(lp.data(), 1, 2), rlhf::make_mut_view(h.data(), 1, 3));
    });
    CHECK(e.argument() == "entropy");
    std::vector<int> mask{1, 2};
    e = expect_error([&] {
        rlhf::logprobs_from_logits(rlhf::view<double, 3>(z.data(), {1, 2, 3}), rlhf::make_view(y.data(), 1, 2),
                                   rlhf::make_view(mask.data(), 1, 2), rlhf::make_mut_view(lp.data(), 1, 2));
    });
    CHECK(e.argument() == "mask");
    CHECK(e.actual() == "2 at [0, 1]");
    e = expect_error([&] {
        rlhf::logprobs_from_logits(rlhf::view<double, 3>(z.data(), {1, 2, 3}), rlhf::make_view(y.data(), 1, 2),
                                   rlhf::make_view(mask.data(), 2, 1), rlhf::make_mut_view(lp.data(), 1, 2));
    });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "mask");
    e = expect_error([&] {
        rlhf::logprobs_from_logits(rlhf::view<double, 3>(z.data(), {1, 2, 0}), rlhf::make_view(y.data(), 1, 2),
                                   rlhf::make_mut_view(lp.data(), 1, 2));
    });
    CHECK(e.argument() == "logits");
    // Backward: gradient shapes, upstream gradients finite.
    std::vector<double> g(6), up{1.0, not_a_number};
    e = expect_error([&] {
        rlhf::logprobs_from_logits_backward(rlhf::view<double, 3>(z.data(), {1, 2, 3}), rlhf::make_view(y.data(), 1, 2),
                                            rlhf::make_view(up.data(), 1, 2), rlhf::view<double>{}, {}, {},
                                            rlhf::mut_view<double, 3>(g.data(), {1, 2, 3}));
    });
    CHECK(e.argument() == "grad_logprobs");
    CHECK(e.kind() == rlhf::error_kind::value);
    up[1] = 1.0;
    e = expect_error([&] {
        rlhf::logprobs_from_logits_backward(rlhf::view<double, 3>(z.data(), {1, 2, 3}), rlhf::make_view(y.data(), 1, 2),
                                            rlhf::make_view(up.data(), 1, 2), rlhf::view<double>{}, {}, {},
                                            rlhf::mut_view<double, 3>(g.data(), {1, 3, 2}));
    });
    CHECK(e.argument() == "grad_logits");
    CHECK(e.function() == "rlhf::logprobs_from_logits_backward");
    z[1] = not_a_number;  // the backward validates the logits too, also with saved statistics
    std::vector<double> lse{0.0, 0.0}, ent{0.0, 0.0};
    e = expect_error([&] {
        rlhf::logprobs_from_logits_backward(rlhf::view<double, 3>(z.data(), {1, 2, 3}), rlhf::make_view(y.data(), 1, 2),
                                            rlhf::make_view(up.data(), 1, 2), rlhf::view<double>{},
                                            rlhf::make_view(lse.data(), 1, 2), rlhf::make_view(ent.data(), 1, 2),
                                            rlhf::mut_view<double, 3>(g.data(), {1, 2, 3}));
    });
    CHECK(e.argument() == "logits");
    CHECK(e.actual() == "nan at [0, 0, 1]");
}

TEST_CASE("logprobs_from_logits_backward: central finite differences" * doctest::test_suite("gradient")) {
    std::mt19937 gen(11);
    const rlhf::index_t b = 2, t = 3, v = 6;
    cube<double> z = random_logits<double>(gen, b, t, v, 1.5);
    z(1, 1, 4) = -inf;  // a masked vocabulary entry: gradient exactly 0 there
    auto tokens = random_tokens(gen, b, t, v);
    if (tokens(1, 1) == 4) tokens(1, 1) = 0;
    matrix<double> g_lp(b, t), g_h(b, t);
    std::normal_distribution<double> normal;
    for (auto& x : g_lp.data) x = normal(gen);
    for (auto& x : g_h.data) x = normal(gen);
    matrix<int> mask(b, t, 1);
    mask(0, 2) = 0;
    for (const double tau : {1.0, 0.6}) {
        const rlhf::logits_options options{.temperature = tau};
        const auto objective = [&](const cube<double>& x) {
            matrix<double> lp(b, t), h(b, t);
            rlhf::logprobs_from_logits(x.view(), tokens.view(), mask.view(), lp.mut(), h.mut(), {}, options);
            double f = 0;
            for (std::size_t i = 0; i < lp.data.size(); ++i) f += g_lp.data[i] * lp.data[i] + g_h.data[i] * h.data[i];
            return f;
        };
        cube<double> grad(b, t, v), grad_saved(b, t, v);
        rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), mask.view(), g_lp.view(), g_h.view(), {}, {},
                                            grad.mut(), options);
        matrix<double> lp(b, t), h(b, t), lse(b, t);
        rlhf::logprobs_from_logits(z.view(), tokens.view(), mask.view(), lp.mut(), h.mut(), lse.mut(), options);
        rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), mask.view(), g_lp.view(), g_h.view(), lse.view(),
                                            h.view(), grad_saved.mut(), options);
        check_gradient(grad, z, [&] { return objective(z); });
        for (std::size_t i = 0; i < z.data.size(); ++i)
            if (!std::isinf(z.data[i]))
                CHECK(grad_saved.data[i] == doctest::Approx(grad.data[i]).epsilon(1e-13).scale(1.0));
        // Entropy only, through entropy_from_logits_backward.
        cube<double> grad_h(b, t, v);
        rlhf::entropy_from_logits_backward(z.view(), mask.view(), g_h.view(), {}, {}, grad_h.mut(), options);
        const auto entropy_objective = [&](const cube<double>& x) {
            matrix<double> hx(b, t);
            rlhf::entropy_from_logits(x.view(), mask.view(), hx.mut(), {}, options);
            double f = 0;
            for (std::size_t i = 0; i < hx.data.size(); ++i) f += g_h.data[i] * hx.data[i];
            return f;
        };
        for (std::size_t i = 0; i < z.data.size(); ++i) {
            if (std::isinf(z.data[i])) continue;
            const double fd = rlhf_test::central_difference([&] { return entropy_objective(z); }, z.data, i, 1e-6);
            CHECK(grad_h.data[i] == doctest::Approx(fd).epsilon(1e-7).scale(1.0));
        }
    }
}

TEST_CASE_TEMPLATE("logprobs_from_logits_backward: closed form at scale / float and double" *
                       doctest::test_suite("gradient"),
                   T, float, double) {
    // onehot − p and −p·(x − Σp·x) from a materialised softmax, V across chunks.
    std::mt19937 gen(5);
    const rlhf::index_t b = 1, t = 2, v = 1100;
    cube<T> z = random_logits<T>(gen, b, t, v, 4.0);
    z(0, 1, 0) = static_cast<T>(1e4);  // magnitude 1e4 next to ordinary logits
    z(0, 1, 1) = static_cast<T>(1e4 - 0.5);
    const auto tokens = random_tokens(gen, b, t, v);
    const std::vector<T> g_lp{T(0.5), T(-1.25)}, g_h{T(2.0), T(0.75)};
    cube<T> grad(b, t, v), grad_saved(b, t, v);
    rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), rlhf::make_view(g_lp.data(), 1, 2),
                                        rlhf::make_view(g_h.data(), 1, 2), {}, {}, grad.mut());
    // From the forward's saved statistics (logsumexp in double, entropy in T), at temperature 0.7
    // where z / τ is not representable in T.
    const rlhf::logits_options hot{.temperature = 0.7};
    matrix<T> lp(b, t), h(b, t);
    matrix<double> lse(b, t);
    rlhf::logprobs_from_logits(z.view(), tokens.view(), lp.mut(), h.mut(), lse.mut(), hot);
    rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), rlhf::make_view(g_lp.data(), 1, 2),
                                        rlhf::make_view(g_h.data(), 1, 2), lse.view(), h.view(), grad_saved.mut(), hot);
    cube<T> grad_hot(b, t, v);
    rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), rlhf::make_view(g_lp.data(), 1, 2),
                                        rlhf::make_view(g_h.data(), 1, 2), {}, {}, grad_hot.mut(), hot);
    for (std::size_t i = 0; i < grad_hot.data.size(); ++i)
        CHECK(static_cast<double>(grad_saved.data[i]) ==
              doctest::Approx(static_cast<double>(grad_hot.data[i])).epsilon(tolerance<T>()).scale(1.0));
    for (rlhf::index_t j = 0; j < t; ++j) {
        const auto ls = log_softmax(&z(0, j, 0), v, 1.0);
        long double mean = 0;
        for (rlhf::index_t k = 0; k < v; ++k)
            mean += std::exp(ls[static_cast<std::size_t>(k)]) * static_cast<long double>(z(0, j, k));
        for (rlhf::index_t k = 0; k < v; ++k) {
            const long double p = std::exp(ls[static_cast<std::size_t>(k)]);
            const long double expected =
                static_cast<long double>(g_lp[static_cast<std::size_t>(j)]) * ((k == tokens(0, j) ? 1 : 0) - p) -
                static_cast<long double>(g_h[static_cast<std::size_t>(j)]) * p *
                    (static_cast<long double>(z(0, j, k)) - mean);
            CHECK(static_cast<double>(grad(0, j, k)) ==
                  doctest::Approx(static_cast<double>(expected)).epsilon(tolerance<T>()).scale(1.0));
        }
    }
}

TEST_CASE("full_kl_from_logits: values" * doctest::test_suite("unit")) {
    // p = {1/2, 1/2}, q = {1/4, 3/4}: KL = ½·ln 2 + ½·ln(2/3).
    const std::vector<double> zp{0.0, 0.0}, zq{0.0, std::log(3.0)};
    double kl = 0;
    rlhf::full_kl_from_logits(rlhf::view<double, 3>(zp.data(), {1, 1, 2}), rlhf::view<double, 3>(zq.data(), {1, 1, 2}),
                              rlhf::make_mut_view(&kl, 1, 1));
    CHECK(kl == doctest::Approx(0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0)).epsilon(1e-15));
    // Log-probs are logits: passing log-softmax outputs gives the same KL (TRL's 'full' input).
    const std::vector<double> lp{std::log(0.5), std::log(0.5)}, lq{std::log(0.25), std::log(0.75)};
    double kl2 = 0;
    rlhf::full_kl_from_logits(rlhf::view<double, 3>(lp.data(), {1, 1, 2}), rlhf::view<double, 3>(lq.data(), {1, 1, 2}),
                              rlhf::make_mut_view(&kl2, 1, 1));
    CHECK(kl2 == doctest::Approx(kl).epsilon(1e-15));

    std::mt19937 gen(19);
    for (const rlhf::index_t v : {1, 9, 700, 1600}) {
        cube<double> p = random_logits<double>(gen, 2, 2, v), q = random_logits<double>(gen, 2, 2, v);
        for (rlhf::index_t k = 0; k < v; ++k) {  // maxima that move in every chunk, in both streams
            p(0, 0, k) = 0.01 * static_cast<double>(k);
            q(0, 1, k) = 0.02 * static_cast<double>(k);
            q(1, 0, k) = -0.01 * static_cast<double>(k);
        }
        if (v > 3) {
            p(1, 1, 1) = -inf;  // policy -inf, reference finite: contributes 0
            p(1, 1, 2) = -inf;
            q(1, 1, 2) = -inf;  // both -inf
        }
        p(1, 0, 0) = 1e4;  // large magnitudes
        q(1, 0, 0) = 1e4 - 3;
        for (const double tau : {1.0, 1.3}) {
            matrix<double> out(2, 2);
            rlhf::full_kl_from_logits(p.view(), q.view(), out.mut(), {.temperature = tau});
            for (rlhf::index_t i = 0; i < 2; ++i)
                for (rlhf::index_t j = 0; j < 2; ++j) {
                    const auto ref = kl_of(log_softmax(&p(i, j, 0), v, tau), log_softmax(&q(i, j, 0), v, tau));
                    CHECK(out(i, j) == doctest::Approx(static_cast<double>(ref)).epsilon(1e-12).scale(1.0));
                }
        }
        matrix<double> same(2, 2);
        rlhf::full_kl_from_logits(p.view(), p.view(), same.mut());
        for (double x : same.data) CHECK(std::abs(x) < 1e-14);
    }
}

TEST_CASE("full_kl_from_logits: errors and masks" * doctest::test_suite("unit")) {
    std::vector<double> zp{0.0, 1.0, 2.0}, zq{0.5, 0.5, 0.5};
    double kl = 0;
    const auto call = [&] {
        rlhf::full_kl_from_logits(rlhf::view<double, 3>(zp.data(), {1, 1, 3}),
                                  rlhf::view<double, 3>(zq.data(), {1, 1, 3}), rlhf::make_mut_view(&kl, 1, 1));
    };
    CHECK_NOTHROW(call());
    zq[1] = -inf;  // the policy has mass where the reference has none: KL = +inf
    auto e = expect_error(call);
    CHECK(e.argument() == "reference_logits");
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.actual() == "-inf at [0, 0, 1]");
    zp[1] = -inf;  // both -inf: fine
    CHECK_NOTHROW(call());
    zq[2] = not_a_number;
    e = expect_error(call);
    CHECK(e.argument() == "reference_logits");
    CHECK(e.actual() == "nan at [0, 0, 2]");
    zq[2] = 0.5;
    zp[0] = not_a_number;
    e = expect_error(call);
    CHECK(e.argument() == "policy_logits");
    zp = {-inf, -inf, -inf};
    CHECK(expect_error(call).actual() == "all -inf at [0, 0]");
    zp = {0.0, 1.0, 2.0};
    zq = {-inf, -inf, -inf};
    e = expect_error(call);
    CHECK(e.argument() == "reference_logits");
    zq = {0.0, 0.0, 0.0};
    std::vector<double> zq4(4);
    e = expect_error([&] {
        rlhf::full_kl_from_logits(rlhf::view<double, 3>(zp.data(), {1, 1, 3}),
                                  rlhf::view<double, 3>(zq4.data(), {1, 1, 4}), rlhf::make_mut_view(&kl, 1, 1));
    });
    CHECK(e.argument() == "reference_logits");
    CHECK(e.kind() == rlhf::error_kind::shape);
    std::vector<double> kl2(2);
    e = expect_error([&] {
        rlhf::full_kl_from_logits(rlhf::view<double, 3>(zp.data(), {1, 1, 3}),
                                  rlhf::view<double, 3>(zq.data(), {1, 1, 3}), rlhf::make_mut_view(kl2.data(), 1, 2));
    });
    CHECK(e.argument() == "kl");
    // A masked position is not read.
    zp[0] = not_a_number;
    const bool mask = false;
    kl = 3.0;
    rlhf::full_kl_from_logits(rlhf::view<double, 3>(zp.data(), {1, 1, 3}), rlhf::view<double, 3>(zq.data(), {1, 1, 3}),
                              rlhf::make_view(&mask, 1, 1), rlhf::make_mut_view(&kl, 1, 1));
    CHECK(kl == 0.0);
}

TEST_CASE("full_kl_from_logits_backward: central finite differences" * doctest::test_suite("gradient")) {
    std::mt19937 gen(23);
    const rlhf::index_t b = 2, t = 2, v = 5;
    cube<double> p = random_logits<double>(gen, b, t, v, 1.0), q = random_logits<double>(gen, b, t, v, 1.0);
    p(0, 1, 3) = -inf;
    q(1, 0, 2) = -inf;
    p(1, 0, 2) = -inf;
    matrix<double> g(b, t);
    std::normal_distribution<double> normal;
    for (auto& x : g.data) x = normal(gen);
    matrix<float> mask(b, t, 1.0f);
    mask(1, 1) = 0.0f;
    for (const double tau : {1.0, 0.8}) {
        const rlhf::logits_options options{.temperature = tau};
        cube<double> grad(b, t, v);
        rlhf::full_kl_from_logits_backward(p.view(), q.view(), mask.view(), g.view(), grad.mut(), options);
        const auto objective = [&](const cube<double>& x) {
            matrix<double> kl(b, t);
            rlhf::full_kl_from_logits(x.view(), q.view(), mask.view(), kl.mut(), options);
            double f = 0;
            for (std::size_t i = 0; i < kl.data.size(); ++i) f += g.data[i] * kl.data[i];
            return f;
        };
        check_gradient(grad, p, [&] { return objective(p); });
        for (rlhf::index_t k = 0; k < v; ++k) CHECK(grad(1, 1, k) == 0.0);
    }
}

TEST_CASE("lm_loss: token mean over the counted positions / ignore_index / empty" * doctest::test_suite("unit")) {
    // Two positions: softmax {1,2,3}/6 with token 0, and {1/2, 1/2, 0} with token 1.
    const std::vector<double> z{0.0, std::log(2.0), std::log(3.0), 0.0, 0.0, -inf};
    const rlhf::view<double, 3> logits(z.data(), {1, 2, 3});
    std::vector<std::int64_t> y{0, 1};
    auto r = rlhf::lm_loss(logits, rlhf::make_view(y.data(), 1, 2));
    CHECK(r.num_tokens == 2);
    CHECK(r.loss == doctest::Approx((std::log(6.0) + std::log(2.0)) / 2).epsilon(1e-15));
    y[1] = -100;  // ignored (Hugging Face label convention)
    r = rlhf::lm_loss(logits, rlhf::make_view(y.data(), 1, 2));
    CHECK(r.num_tokens == 1);
    CHECK(r.loss == doctest::Approx(std::log(6.0)).epsilon(1e-15));
    // Without ignore_index, -100 is an out-of-range token.
    const auto e = expect_error(
        [&] { (void)rlhf::lm_loss(logits, rlhf::make_view(y.data(), 1, 2), {}, {.ignore_index = std::nullopt}); });
    CHECK(e.argument() == "tokens");
    CHECK(e.function() == "rlhf::lm_loss");
    CHECK(e.actual() == "-100 at [0, 1]");
    // A mask excludes positions as well; nothing counted: loss 0, gradient 0.
    y[1] = 1;
    const std::vector<bool> dummy;
    const bool mask[2] = {false, false};
    std::vector<double> grad(6, 5.0);
    r = rlhf::lm_loss(logits, rlhf::make_view(y.data(), 1, 2), rlhf::make_view(mask, 1, 2),
                      rlhf::mut_view<double, 3>(grad.data(), {1, 2, 3}));
    CHECK(r.num_tokens == 0);
    CHECK(r.loss == 0.0);
    for (double x : grad) CHECK(x == 0.0);
    const bool mask1[2] = {false, true};
    r = rlhf::lm_loss(logits, rlhf::make_view(y.data(), 1, 2), rlhf::make_view(mask1, 1, 2));
    CHECK(r.num_tokens == 1);
    CHECK(r.loss == doctest::Approx(std::log(2.0)).epsilon(1e-15));
    // A token of probability 0 is an error (the loss would be +inf).
    y[1] = 2;
    CHECK(expect_error([&] { (void)rlhf::lm_loss(logits, rlhf::make_view(y.data(), 1, 2)); }).actual() ==
          "token 2 with logit -inf at [0, 1]");
    CHECK(expect_error([&] {
              (void)rlhf::lm_loss(logits, rlhf::make_view(y.data(), 1, 2), {}, {.temperature = -2.0});
          }).argument() == "temperature");
}

TEST_CASE("lm_loss: gradient by finite differences and via logprobs_from_logits_backward" *
          doctest::test_suite("gradient")) {
    std::mt19937 gen(29);
    const rlhf::index_t b = 2, t = 4, v = 7;
    cube<double> z = random_logits<double>(gen, b, t, v, 2.0);
    auto tokens = random_tokens(gen, b, t, v);
    tokens(0, 3) = -100;
    matrix<std::int64_t> mask(b, t, 1);
    mask(1, 0) = 0;
    const rlhf::lm_loss_options options{.temperature = 0.9};
    cube<double> grad(b, t, v);
    const auto r = rlhf::lm_loss(z.view(), tokens.view(), mask.view(), grad.mut(), options);
    CHECK(r.num_tokens == 6);
    check_gradient(grad, z, [&] { return rlhf::lm_loss(z.view(), tokens.view(), mask.view(), {}, options).loss; });
    // lm_loss_backward scales by the upstream gradient.
    cube<double> scaled(b, t, v);
    rlhf::lm_loss_backward(z.view(), tokens.view(), mask.view(), 2.5, scaled.mut(), options);
    for (std::size_t i = 0; i < z.data.size(); ++i)
        CHECK(scaled.data[i] == doctest::Approx(2.5 * grad.data[i]).epsilon(1e-14).scale(1.0));
    // It is the log-prob gradient with g_lp = −1/N on the counted positions.
    matrix<double> g_lp(b, t, -1.0 / 6.0);
    g_lp(0, 3) = 0.0;
    tokens(0, 3) = 0;
    cube<double> via(b, t, v);
    rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), mask.view(), g_lp.view(), rlhf::view<double>{}, {}, {},
                                        via.mut(), {.temperature = 0.9});
    for (std::size_t i = 0; i < z.data.size(); ++i)
        CHECK(via.data[i] == doctest::Approx(grad.data[i]).epsilon(1e-14).scale(1.0));
}

// Found by tests/fuzz (docs/fuzzing.md): the chosen token's gradient (1 − p)·g was formed from
// −p·g rounded to float32 first, which kept no digit where p ≈ 1.
TEST_CASE("logits backward: the chosen token's gradient keeps its digits in float32" * doctest::test_suite("unit")) {
    const std::vector<float> z{0.0f, 20.0f};
    const std::vector<std::int64_t> tokens{1};
    const std::vector<float> upstream{1.0f};
    std::vector<float> grad(2, -99.0f);
    const rlhf::view<float, 3> logits(z.data(), {1, 1, 2});
    const rlhf::mut_view<float, 3> out(grad.data(), {1, 1, 2});
    const double p0 = 1.0 / (1.0 + std::exp(20.0));  // 1 − p_1
    rlhf::logprobs_from_logits_backward(logits, rlhf::make_view(tokens.data(), 1, 1),
                                        rlhf::make_view(upstream.data(), 1, 1), rlhf::view<float>{},
                                        rlhf::view<double>{}, rlhf::view<float>{}, out);
    const auto relative = [](float x, double expected) { return std::abs(static_cast<double>(x) / expected - 1.0); };
    CHECK(relative(grad[1], p0) < 1e-5);  // was 0
    CHECK(relative(grad[0], -p0) < 1e-5);
    (void)rlhf::lm_loss(logits, rlhf::make_view(tokens.data(), 1, 1), out);
    CHECK(relative(grad[1], -p0) < 1e-5);
}

// Found by tests/fuzz (docs/fuzzing.md): with a tiny temperature, grad_kl / τ overflowed to +inf
// and times a zero term (p·(log p − log q − KL) = 0) gave NaN.
TEST_CASE("full_kl_from_logits_backward: a tiny temperature gives no NaN" * doctest::test_suite("unit")) {
    const std::vector<float> zp{-16.0f, 0.69f}, zq{-3.96f, 1.33f}, grad_kl{1e38f};
    std::vector<float> grad(2, -99.0f);
    rlhf::full_kl_from_logits_backward(rlhf::view<float, 3>(zp.data(), {1, 1, 2}),
                                       rlhf::view<float, 3>(zq.data(), {1, 1, 2}),
                                       rlhf::make_view(grad_kl.data(), 1, 1),
                                       rlhf::mut_view<float, 3>(grad.data(), {1, 1, 2}), {.temperature = 1e-300});
    CHECK(grad[0] == 0.0f);  // p = 0
    CHECK(grad[1] == 0.0f);  // p = 1, q = 1: no KL, no gradient
}
