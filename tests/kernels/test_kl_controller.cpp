#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "rlhf/kernels/kl_controller.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::expect_error;

namespace {

constexpr auto sums = rlhf::kl_measure::seq_mean_token_sum;
constexpr auto token_means = rlhf::kl_measure::seq_mean_token_mean;

// Stands in for an all-reduce over two ranks holding the same data.
struct doubling_reducer {
    void sum_all(std::span<double> values) const {
        for (double& v : values) v *= 2.0;
    }
};

// Stands in for an all-reduce with a second rank that holds one row of KL sum 10 (and 4 tokens).
struct other_rank_reducer {
    void sum_all(std::span<double> values) const {
        values[0] += 10.0;
        values[1] += 1.0;
    }
};

}  // namespace

TEST_CASE("adaptive_kl_controller: Ziegler et al. update / clipped error" * doctest::test_suite("unit")) {
    rlhf::adaptive_kl_controller c({.init_kl_coef = 0.2, .target = 6.0, .horizon = 10000.0, .measure = sums});
    CHECK(c.value() == 0.2);
    CHECK(c.measure() == sums);
    // KL 0: error clipped at -0.2, beta * (1 - 0.2 * 128 / 10000).
    CHECK(c.update({.value = 0.0, .measure = sums}, 128) == doctest::Approx(0.199488).epsilon(1e-15));
    // KL 6.6: error 0.1, unclipped.
    double expected = 0.199488 * (1.0 + 0.1 * 128.0 / 10000.0);
    CHECK(c.update({.value = 6.6, .measure = sums}, 128) == doctest::Approx(expected).epsilon(1e-14));
    // KL 100: error clipped at +0.2.
    expected *= 1.0 + 0.2 * 256.0 / 10000.0;
    CHECK(c.update({.value = 100.0, .measure = sums}, 256) == doctest::Approx(expected).epsilon(1e-14));
    // On target, or no samples: unchanged. Negative KL (k1 can be negative) is a valid measurement.
    CHECK(c.update({.value = 6.0, .measure = sums}, 128) == doctest::Approx(expected).epsilon(1e-14));
    CHECK(c.update({.value = 50.0, .measure = sums}, 0) == doctest::Approx(expected).epsilon(1e-14));
    expected *= 1.0 - 0.2 * 1.0 / 10000.0;
    CHECK(c.update({.value = -1.0, .measure = sums}, 1) == doctest::Approx(expected).epsilon(1e-14));
    // A custom error clip.
    rlhf::adaptive_kl_controller wide(
        {.init_kl_coef = 1.0, .target = 1.0, .horizon = 10.0, .measure = token_means, .error_clip = 0.5});
    CHECK(wide.update({.value = 3.0, .measure = token_means}, 2) == doctest::Approx(1.1));
}

TEST_CASE("adaptive_kl_controller: the measured KL's unit must match" * doctest::test_suite("unit")) {
    rlhf::adaptive_kl_controller c({.init_kl_coef = 0.001, .target = 0.1, .horizon = 10000.0, .measure = token_means});
    auto e = expect_error([&] { c.update({.value = 0.2, .measure = sums}, 8); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "current_kl");
    CHECK(e.function() == "rlhf::adaptive_kl_controller::update");
    CHECK(e.expected() == "a KL measured as 'seq-mean-token-mean' (the controller's measure)");
    CHECK(e.actual() == "'seq-mean-token-sum'");
    e = expect_error([&] { c.update({.value = 0.2}, 8); });  // unit not named
    CHECK(e.argument() == "current_kl");
    CHECK(c.value() == 0.001);  // a refused update changes nothing
    // The controller itself must name a unit.
    e = expect_error([] { rlhf::adaptive_kl_controller({.init_kl_coef = 0.2, .target = 6.0}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "measure");
}

TEST_CASE("adaptive_kl_controller: option and argument errors" * doctest::test_suite("unit")) {
    const auto make = [](rlhf::adaptive_kl_options o) { return rlhf::adaptive_kl_controller(o); };
    const rlhf::adaptive_kl_options ok{.init_kl_coef = 0.2, .target = 6.0, .horizon = 10000.0, .measure = sums};
    auto o = ok;
    o.target = 0.0;
    CHECK(expect_error([&] { make(o); }).argument() == "target");
    o.target = -1.0;
    CHECK(expect_error([&] { make(o); }).argument() == "target");
    o = ok;
    o.horizon = 0.0;
    CHECK(expect_error([&] { make(o); }).argument() == "horizon");
    o = ok;
    o.init_kl_coef = -0.1;
    const auto init = expect_error([&] { make(o); });
    CHECK(init.argument() == "init_kl_coef");
    CHECK(init.kind() == rlhf::error_kind::config);
    o.init_kl_coef = std::numeric_limits<double>::infinity();
    CHECK(expect_error([&] { make(o); }).argument() == "init_kl_coef");
    o = ok;
    o.error_clip = -0.2;
    CHECK(expect_error([&] { make(o); }).argument() == "error_clip");
    o = ok;
    o.init_kl_coef = 0.0;  // beta = 0 is allowed (and stays 0)
    auto zero = make(o);
    CHECK(zero.update({.value = 100.0, .measure = sums}, 1000) == 0.0);

    auto c = make(ok);
    auto e = expect_error([&] { c.update({.value = 1.0, .measure = sums}, -1); });
    CHECK(e.argument() == "n_steps");
    e = expect_error([&] { c.update({.value = std::numeric_limits<double>::quiet_NaN(), .measure = sums}, 1); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "current_kl");
    // ±inf saturates the clipped error (±0.2 here), as TRL, verl and OpenRLHF's np.clip do.
    const double before = c.value();
    CHECK(c.update({.value = std::numeric_limits<double>::infinity(), .measure = sums}, 1) ==
          doctest::Approx(before * (1.0 + 0.2 * 1.0 / ok.horizon)).epsilon(1e-15));
    const double after = c.value();
    CHECK(c.update({.value = -std::numeric_limits<double>::infinity(), .measure = sums}, 1) ==
          doctest::Approx(after * (1.0 - 0.2 * 1.0 / ok.horizon)).epsilon(1e-15));
}

TEST_CASE("fixed_kl_controller: constant / validates its arguments" * doctest::test_suite("unit")) {
    rlhf::fixed_kl_controller c(0.05);
    CHECK(c.update({.value = 100.0, .measure = sums}, 512) == 0.05);
    CHECK(c.update({.value = -3.0, .measure = rlhf::kl_measure::token_mean}, 0) == 0.05);
    CHECK(c.value() == 0.05);
    CHECK(expect_error([] { rlhf::fixed_kl_controller(-0.1); }).argument() == "kl_coef");
    CHECK(expect_error([&] { c.update({.value = std::numeric_limits<double>::quiet_NaN()}, 1); }).argument() ==
          "current_kl");
    CHECK(expect_error([&] { c.update({.value = 1.0}, -5); }).argument() == "n_steps");
}

TEST_CASE("proportional_kl_controller: OpenRL's alpha rule" * doctest::test_suite("unit")) {
    constexpr auto unit = rlhf::kl_measure::token_mean;
    rlhf::proportional_kl_controller c(
        {.init_kl_coef = 0.2, .target = 0.05, .update_rate = 0.1, .error_clip = 0.2, .measure = unit});
    // kl 0: (0 - 0.05)/0.05 = -1 -> -0.2; alpha * (1 - 0.02).
    CHECK(c.update({.value = 0.0, .measure = unit}) == doctest::Approx(0.196).epsilon(1e-15));
    // kl 0.055: +0.1, unclipped.
    CHECK(c.update({.value = 0.055, .measure = unit}) == doctest::Approx(0.196 * 1.01).epsilon(1e-14));
    // On target: unchanged; n_steps is ignored.
    CHECK(c.update({.value = 0.05, .measure = unit}, 1000) == doctest::Approx(0.196 * 1.01).epsilon(1e-14));
    CHECK(expect_error([&] { c.update({.value = 0.05, .measure = sums}); }).argument() == "current_kl");

    const auto make = [](rlhf::proportional_kl_options o) { return rlhf::proportional_kl_controller(o); };
    const rlhf::proportional_kl_options ok{.measure = unit};
    auto o = ok;
    o.target = 0.0;
    CHECK(expect_error([&] { make(o); }).argument() == "target");
    o = ok;
    o.update_rate = -0.1;
    CHECK(expect_error([&] { make(o); }).argument() == "update_rate");
    o = ok;
    o.error_clip = -1.0;
    CHECK(expect_error([&] { make(o); }).argument() == "error_clip");
    o = ok;
    o.init_kl_coef = -1.0;
    CHECK(expect_error([&] { make(o); }).argument() == "init_kl_coef");
    CHECK(expect_error([&] { make({}); }).argument() == "measure");
}

TEST_CASE("kl_controller: one interface over the three controllers" * doctest::test_suite("unit")) {
    rlhf::kl_controller fixed = rlhf::fixed_kl_controller(0.1);
    rlhf::kl_controller adaptive =
        rlhf::adaptive_kl_controller({.init_kl_coef = 0.2, .target = 6.0, .horizon = 10000.0, .measure = sums});
    rlhf::kl_controller proportional = rlhf::proportional_kl_controller({.measure = sums});
    CHECK(fixed.update({.value = 1.0, .measure = sums}, 10) == 0.1);
    CHECK(adaptive.update({.value = 0.0, .measure = sums}, 128) == doctest::Approx(0.199488).epsilon(1e-15));
    CHECK(adaptive.value() == doctest::Approx(0.199488).epsilon(1e-15));
    CHECK(proportional.update({.value = 0.0, .measure = sums}, 128) == doctest::Approx(0.196).epsilon(1e-15));
    CHECK(std::holds_alternative<rlhf::adaptive_kl_controller>(adaptive.get()));
    CHECK(expect_error([&] { adaptive.update({.value = 1.0, .measure = token_means}, 1); }).argument() == "current_kl");
}

TEST_CASE("measure_kl: the three units / hand-computed" * doctest::test_suite("unit")) {
    // Row 0: 2 valid tokens (sum 3, mean 1.5); row 1: empty; row 2: left padding (sum 11, mean 5.5).
    const std::vector<double> kl{1, 2, 30, 40, 50, 60, 70, 5, 6};
    const std::vector<bool> mask_bits{true, true, false, false, false, false, false, true, true};
    std::vector<std::uint8_t> mask(mask_bits.begin(), mask_bits.end());
    const auto k = rlhf::make_view(kl.data(), 3, 3);
    const auto m = rlhf::make_view(mask.data(), 3, 3);
    auto r = rlhf::measure_kl(k, m, sums);
    CHECK(r.measure == sums);
    CHECK(r.value == doctest::Approx((3.0 + 0.0 + 11.0) / 3.0));
    r = rlhf::measure_kl(k, m, token_means);
    CHECK(r.value == doctest::Approx((1.5 + 0.0 + 5.5) / 3.0));
    r = rlhf::measure_kl(k, m, rlhf::kl_measure::token_mean);
    CHECK(r.value == doctest::Approx(14.0 / 4.0));
    // Global statistics through a reducer.
    CHECK(rlhf::measure_kl(k, m, sums, doubling_reducer{}).value == doctest::Approx(14.0 / 3.0));
    CHECK(rlhf::measure_kl(k, m, sums, other_rank_reducer{}).value == doctest::Approx(24.0 / 4.0));
    // A controller accepts what measure_kl returns for its unit.
    rlhf::adaptive_kl_controller c({.init_kl_coef = 0.2, .target = 6.0, .horizon = 10000.0, .measure = sums});
    CHECK_NOTHROW(c.update(rlhf::measure_kl(k, m, sums), 3));
    CHECK_THROWS_AS(c.update(rlhf::measure_kl(k, m, token_means), 3), rlhf::error);
}

TEST_CASE("measure_kl: errors" * doctest::test_suite("unit")) {
    std::vector<double> kl(6, 1.0);
    std::vector<int> mask(6, 0);
    const auto k = rlhf::make_view(kl.data(), 2, 3);
    auto e = expect_error(
        [&] { (void)rlhf::measure_kl(k, rlhf::make_view(mask.data(), 2, 3), rlhf::kl_measure::token_mean); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "mask");
    // Empty rows are fine for the per-sequence units.
    CHECK(rlhf::measure_kl(k, rlhf::make_view(mask.data(), 2, 3), sums).value == 0.0);
    e = expect_error(
        [&] { (void)rlhf::measure_kl(rlhf::make_view(kl.data(), 0, 3), rlhf::make_view(mask.data(), 0, 3), sums); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "kl");
    e = expect_error([&] { (void)rlhf::measure_kl(k, rlhf::make_view(mask.data(), 3, 2), sums); });
    CHECK(e.argument() == "mask");
    e = expect_error(
        [&] { (void)rlhf::measure_kl(k, rlhf::make_view(mask.data(), 2, 3), rlhf::kl_measure::unspecified); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "measure");
    kl[5] = std::numeric_limits<double>::quiet_NaN();
    e = expect_error([&] { (void)rlhf::measure_kl(k, rlhf::make_view(mask.data(), 2, 3), sums); });
    CHECK(e.argument() == "kl");
    kl[5] = 1.0;
    mask[0] = 3;
    e = expect_error([&] { (void)rlhf::measure_kl(k, rlhf::make_view(mask.data(), 2, 3), sums); });
    CHECK(e.argument() == "mask");
    CHECK(rlhf::parse_option<rlhf::kl_measure>("seq-mean-token-sum") == sums);
    CHECK(rlhf::to_string(rlhf::kl_measure::token_mean) == "token-mean");
}
