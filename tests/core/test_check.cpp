#include <doctest/doctest.h>

#include <array>
#include <limits>
#include <string>
#include <vector>

#include "rlhf/core/check.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::expect_error;

TEST_CASE("check_same_shape names both arguments and both shapes" * doctest::test_suite("unit")) {
    std::vector<float> a(8), b(6);
    const auto rewards = rlhf::make_view(a.data(), 2, 4);
    const auto values = rlhf::make_view(b.data(), 2, 3);
    CHECK_NOTHROW(rlhf::check_same_shape("rlhf::f", "rewards", rewards, "rewards", rewards));
    const auto e =
        expect_error([&] { rlhf::check_same_shape("rlhf::compute_gae", "values", values, "rewards", rewards); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "values");
    CHECK(e.function() == "rlhf::compute_gae");
    CHECK(std::string(e.what()) ==
          "rlhf::compute_gae: argument 'values': expected shape [2, 4] (the shape of 'rewards'), got [2, 3]");
}

TEST_CASE("check_shape and check_length" * doctest::test_suite("unit")) {
    std::vector<double> a(6);
    const auto x = rlhf::make_view(a.data(), 3, 2);
    CHECK_NOTHROW(rlhf::check_shape("f", "x", x, {3, 2}));
    const auto e = expect_error([&] { rlhf::check_shape("f", "x", x, {2, 3}); });
    CHECK(std::string(e.what()) == "f: argument 'x': expected shape [2, 3], got [3, 2]");
    const auto l = expect_error([] { rlhf::check_length("f", "scores", 3, 4, "one per row of 'mask'"); });
    CHECK(l.kind() == rlhf::error_kind::shape);
    CHECK(std::string(l.what()) ==
          "f: argument 'scores': expected shape length 4 (one per row of 'mask'), got length 3");
}

TEST_CASE("check_finite reports the first non-finite element and where it is" * doctest::test_suite("unit")) {
    std::vector<double> a{0, 1, 2, 3, 4, 5};
    CHECK_NOTHROW(rlhf::check_finite("f", "logp", rlhf::make_view(a.data(), 2, 3)));
    a[4] = std::numeric_limits<double>::quiet_NaN();
    a[5] = std::numeric_limits<double>::infinity();
    const auto e = expect_error([&] { rlhf::check_finite("f", "logp", rlhf::make_view(a.data(), 2, 3)); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "logp");
    CHECK(e.actual() == "nan at [1, 1]");
    a[4] = 0;
    const auto inf = expect_error([&] { rlhf::check_finite("f", "logp", rlhf::make_view(a.data(), 2, 3)); });
    CHECK(inf.actual() == "inf at [1, 2]");
    const std::array<float, 3> v{1.0f, -std::numeric_limits<float>::infinity(), 0.0f};
    const auto vec =
        expect_error([&] { rlhf::check_finite("f", "scores", rlhf::make_view(std::span<const float>(v))); });
    CHECK(vec.actual() == "-inf at [1]");
}

TEST_CASE("check_binary_mask rejects entries other than 0 and 1" * doctest::test_suite("unit")) {
    std::vector<float> m{1, 1, 0, 1, 0.5f, 0};
    const auto e = expect_error([&] { rlhf::check_binary_mask("f", "mask", rlhf::make_view(m.data(), 2, 3)); });
    CHECK(e.argument() == "mask");
    CHECK(e.actual() == "0.5 at [1, 1]");
    m[4] = 1;
    CHECK_NOTHROW(rlhf::check_binary_mask("f", "mask", rlhf::make_view(m.data(), 2, 3)));
    std::vector<std::int64_t> ints{0, 1, 2};
    CHECK_THROWS_AS(rlhf::check_binary_mask("f", "mask", rlhf::make_view(ints.data(), 1, 3)), rlhf::error);
}

TEST_CASE("scalar option checks are configuration errors and catch NaN" * doctest::test_suite("unit")) {
    CHECK_NOTHROW(rlhf::check_in_range("f", "gamma", 1.0, 0.0, 1.0));
    const auto e = expect_error([] { rlhf::check_in_range("f", "gamma", 1.5, 0.0, 1.0); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(std::string(e.what()) == "f: argument 'gamma': expected a value in [0, 1], got 1.5");
    CHECK_THROWS_AS(rlhf::check_in_range("f", "lam", std::numeric_limits<double>::quiet_NaN(), 0.0, 1.0), rlhf::error);
    CHECK_THROWS_AS(rlhf::check_positive("f", "horizon", 0.0), rlhf::error);
    CHECK_THROWS_AS(rlhf::check_positive("f", "horizon", std::numeric_limits<double>::infinity()), rlhf::error);
    CHECK_NOTHROW(rlhf::check_non_negative("f", "clip", 0.0f));
    CHECK_THROWS_AS(rlhf::check_non_negative("f", "clip", -0.2f), rlhf::error);
}

TEST_CASE("rlhf::error is a std::invalid_argument" * doctest::test_suite("unit")) {
    CHECK_THROWS_AS(rlhf::fail(rlhf::error_kind::dtype, "f", "x", "float32", "int64"), std::invalid_argument);
    const auto e = expect_error([] { rlhf::fail(rlhf::error_kind::dtype, "f", "x", "float32", "int64"); });
    CHECK(std::string(e.what()) == "f: argument 'x': expected dtype float32, got int64");
    CHECK(rlhf::to_string(e.kind()) == "dtype");
}

TEST_CASE("number_string is the shortest round-trip text" * doctest::test_suite("unit")) {
    CHECK(rlhf::number_string(0.1) == "0.1");
    CHECK(rlhf::number_string(0.1f) == "0.1");
    CHECK(rlhf::number_string(12) == "12");
    CHECK(rlhf::number_string(-std::numeric_limits<double>::infinity()) == "-inf");
}
