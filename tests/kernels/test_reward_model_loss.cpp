// Tests of rlhf/kernels/reward_model_loss.hpp: pairwise log-sigmoid and log-exp losses.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "rlhf/kernels/reward_model_loss.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::expect_error;
using rlhf_test::mut_vec;
using rlhf_test::vec;

namespace {

// −log σ(d) the textbook way (fine for moderate d).
double neg_log_sigmoid(double d) {
    return -std::log(1.0 / (1.0 + std::exp(-d)));
}

}  // namespace

TEST_CASE("pairwise reward-model losses: hand-computed values" * doctest::test_suite("unit")) {
    const std::vector<double> c{1.0, 0.5, -2.0}, r{1.0, 1.5, -3.0};
    // Gaps c − r = {0, −1, 1}.
    const double expected = (std::log(2.0) + std::log1p(std::exp(1.0)) + std::log1p(std::exp(-1.0))) / 3;
    auto res = rlhf::pairwise_logsigmoid_loss(vec(c), vec(r));
    CHECK(res.loss == doctest::Approx(expected).epsilon(1e-15));
    CHECK(res.accuracy == doctest::Approx(1.0 / 3));
    CHECK(rlhf::log_exp_loss(vec(c), vec(r)).loss == doctest::Approx(expected).epsilon(1e-15));
    // Margin 0.5: −log σ(c − r − 0.5).
    res = rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), {}, {}, {.margin = 0.5});
    CHECK(res.loss ==
          doctest::Approx((neg_log_sigmoid(-0.5) + neg_log_sigmoid(-1.5) + neg_log_sigmoid(0.5)) / 3).epsilon(1e-14));
    // Per-pair margins, added to the scalar one.
    const std::vector<double> m{0.0, 1.0, -1.0};
    std::vector<double> gc(3), gr(3);
    res = rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), vec(m), mut_vec(gc), mut_vec(gr), {.margin = 0.25});
    CHECK(
        res.loss ==
        doctest::Approx((neg_log_sigmoid(-0.25) + neg_log_sigmoid(-2.25) + neg_log_sigmoid(1.75)) / 3).epsilon(1e-14));
    // Reward centering (TRL): + coef · mean((c + r)²) = 0.1 · (4 + 4 + 25) / 3.
    res = rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), {}, {}, {.center_rewards_coefficient = 0.1});
    CHECK(res.loss == doctest::Approx(expected + 0.1 * 33.0 / 3).epsilon(1e-14));
}

TEST_CASE_TEMPLATE("pairwise reward-model losses stay finite for large gaps" * doctest::test_suite("unit"), T, float,
                   double) {
    // ColossalChat v1's −log(σ(c − r)) is +inf here; the softplus form is exact.
    const std::vector<T> c{T(0), T(1000)}, r{T(1000), T(0)};
    std::vector<T> gc(2), gr(2);
    const auto res = rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), mut_vec(gc), mut_vec(gr));
    CHECK(std::isfinite(res.loss));
    CHECK(res.loss == doctest::Approx(500.0).epsilon(1e-12));
    CHECK(static_cast<double>(gc[0]) == doctest::Approx(-0.5));
    CHECK(static_cast<double>(gr[0]) == doctest::Approx(0.5));
    CHECK(gc[1] == T(0));
    CHECK(gr[1] == T(0));
    const auto le = rlhf::log_exp_loss(vec(c), vec(r), mut_vec(gc), mut_vec(gr));
    CHECK(le.loss == doctest::Approx(500.0).epsilon(1e-12));
}

TEST_CASE_TEMPLATE("pairwise reward-model losses: gradients by central finite differences" *
                       doctest::test_suite("gradient"),
                   T, float, double) {
    std::mt19937 gen(31);
    std::normal_distribution<double> normal(0.0, 2.0);
    const std::size_t n = 5;
    std::vector<double> c(n), r(n), m(n);
    for (std::size_t i = 0; i < n; ++i) {
        c[i] = normal(gen);
        r[i] = normal(gen);
        m[i] = 0.3 * normal(gen);
    }
    const rlhf::pairwise_loss_options options{.margin = 0.2, .center_rewards_coefficient = 0.05};
    const auto loss = [&] { return rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), vec(m), {}, {}, options).loss; };
    std::vector<double> gc(n), gr(n);
    (void)rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), vec(m), mut_vec(gc), mut_vec(gr), options);
    for (std::size_t i = 0; i < n; ++i) {
        CHECK(gc[i] == doctest::Approx(rlhf_test::central_difference(loss, c, i, 1e-6)).epsilon(1e-7).scale(1.0));
        CHECK(gr[i] == doctest::Approx(rlhf_test::central_difference(loss, r, i, 1e-6)).epsilon(1e-7).scale(1.0));
    }
    // log-exp: gradients ∓σ(r − c)/N; in T, equal to the double ones within T's precision.
    const auto ct = rlhf_test::as<T>(c), rt = rlhf_test::as<T>(r);
    std::vector<T> gct(n), grt(n);
    (void)rlhf::log_exp_loss(vec(ct), vec(rt), mut_vec(gct), mut_vec(grt));
    for (std::size_t i = 0; i < n; ++i) {
        const double d = static_cast<double>(rt[i]) - static_cast<double>(ct[i]);
        const double s = 1.0 / (1.0 + std::exp(-d));
        CHECK(static_cast<double>(gct[i]) == doctest::Approx(-s / n).epsilon(1e-6));
        CHECK(static_cast<double>(grt[i]) == doctest::Approx(s / n).epsilon(1e-6));
    }
}

TEST_CASE("pairwise reward-model losses: errors" * doctest::test_suite("unit")) {
    const std::vector<double> c{1.0, 2.0}, r{0.0, 1.0}, r3{0.0, 1.0, 2.0}, empty;
    auto e = expect_error([&] { (void)rlhf::pairwise_logsigmoid_loss(vec(c), vec(r3)); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "rejected");
    CHECK(e.function() == "rlhf::pairwise_logsigmoid_loss");
    e = expect_error([&] { (void)rlhf::log_exp_loss(vec(empty), vec(empty)); });
    CHECK(e.argument() == "chosen");
    CHECK(e.function() == "rlhf::log_exp_loss");
    const std::vector<double> bad{1.0, std::numeric_limits<double>::quiet_NaN()};
    e = expect_error([&] { (void)rlhf::pairwise_logsigmoid_loss(vec(bad), vec(r)); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "chosen");
    CHECK(e.actual() == "nan at [1]");
    CHECK(expect_error([&] { (void)rlhf::log_exp_loss(vec(c), vec(bad)); }).argument() == "rejected");
    CHECK(expect_error([&] { (void)rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), vec(bad), {}, {}); }).argument() ==
          "margin");
    CHECK(expect_error([&] { (void)rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), vec(r3), {}, {}); }).argument() ==
          "margin");
    e = expect_error([&] {
        (void)rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), {}, {},
                                             {.margin = std::numeric_limits<double>::infinity()});
    });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "margin");
    CHECK(expect_error([&] {
              (void)rlhf::pairwise_logsigmoid_loss(vec(c), vec(r), {}, {}, {.center_rewards_coefficient = -1.0});
          }).argument() == "center_rewards_coefficient");
    std::vector<double> g3(3), g2(2);
    CHECK(expect_error([&] { (void)rlhf::log_exp_loss(vec(c), vec(r), mut_vec(g3), mut_vec(g2)); }).argument() ==
          "grad_chosen");
    CHECK(expect_error([&] { (void)rlhf::log_exp_loss(vec(c), vec(r), mut_vec(g2), mut_vec(g3)); }).argument() ==
          "grad_rejected");
}
