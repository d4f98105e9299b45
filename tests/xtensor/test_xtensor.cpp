#include <doctest/doctest.h>

#include "rlhf/xtensor.hpp"

TEST_CASE("xtensor::as_view maps containers without copying" * doctest::test_suite("unit")) {
    xt::xtensor<double, 2> m = {{0, 1, 2}, {3, 4, 5}};
    const auto v = rlhf::xtensor::as_view(m, "f", "x");
    CHECK(v.data() == m.data());
    CHECK(v(1, 2) == 5.0);
    xt::xtensor<float, 1> scores = {1, 2, 3};
    CHECK(rlhf::xtensor::as_view<1>(scores, "f", "scores")(2) == 3.0f);
    rlhf::xtensor::as_mut_view(m, "f", "out")(0, 1) = 7.0;
    CHECK(m(0, 1) == 7.0);
    xt::xtensor<double, 2> single_row = {{1, 2, 3}};
    CHECK(rlhf::xtensor::as_view(single_row, "f", "x").stride(0) == 3);
}

TEST_CASE("xtensor::as_view rejects a wrong rank and a column-major layout" * doctest::test_suite("unit")) {
    xt::xtensor<double, 1> line = {1, 2};
    CHECK_THROWS_AS((void)rlhf::xtensor::as_view<2>(line, "f", "x"), rlhf::error);
    xt::xtensor<double, 2, xt::layout_type::column_major> column_major = {{0, 1}, {2, 3}};
    try {
        (void)rlhf::xtensor::as_view(column_major, "f", "values");
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.argument() == "values");
        CHECK(e.expected() == "row-major layout (innermost stride 1)");
    }
}
