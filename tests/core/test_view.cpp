#include <doctest/doctest.h>

#include <array>
#include <numeric>
#include <vector>

#include "rlhf/core/view.hpp"

TEST_CASE("view: contiguous row-major indexing" * doctest::test_suite("unit")) {
    std::vector<double> data(12);
    std::iota(data.begin(), data.end(), 0.0);
    const rlhf::view<double> matrix = rlhf::make_view(data.data(), 3, 4);
    CHECK(matrix.extent(0) == 3);
    CHECK(matrix.extent(1) == 4);
    CHECK(matrix.stride(0) == 4);
    CHECK(matrix.stride(1) == 1);
    CHECK(matrix.size() == 12);
    CHECK(matrix.is_contiguous());
    CHECK(matrix(2, 3) == 11.0);
    CHECK(matrix(1, 0) == 4.0);
    CHECK(matrix.row(1)[2] == 6.0);
    CHECK(matrix.row(2).size() == 4);
}

TEST_CASE("view: padded rows cover a column range without a copy" * doctest::test_suite("unit")) {
    // A [2, 5] buffer; the view is its last 3 columns (the "response" of a [B, P + T] sequence).
    std::array<float, 10> data{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    const rlhf::view<float> response(data.data() + 2, {2, 3}, {5, 1});
    CHECK_FALSE(response.is_contiguous());
    CHECK(response(0, 0) == 2.0f);
    CHECK(response(1, 2) == 9.0f);
    CHECK(response.row(1)[0] == 7.0f);
}

TEST_CASE("view: rank 3 slices and rank 1 spans" * doctest::test_suite("unit")) {
    std::vector<int> data(24);
    std::iota(data.begin(), data.end(), 0);
    const rlhf::mut_view<int, 3> cube(data.data(), {2, 3, 4});
    CHECK(cube(1, 2, 3) == 23);
    const auto plane = cube.slice(1);
    CHECK(plane.extent(0) == 3);
    CHECK(plane(0, 1) == 13);
    plane(0, 1) = -1;
    CHECK(data[13] == -1);
    const rlhf::view<int, 1> line = rlhf::make_view(std::span<const int>(data.data(), 5));
    CHECK(line.span().size() == 5);
    CHECK(line(4) == 4);
}

TEST_CASE("view: a writable view converts to a read-only one" * doctest::test_suite("unit")) {
    std::array<double, 4> data{1, 2, 3, 4};
    const rlhf::mut_view<double> writable = rlhf::make_mut_view(data.data(), 2, 2);
    writable(1, 1) = 10.0;
    const rlhf::view<double> readable = writable;
    CHECK(readable(1, 1) == 10.0);
    CHECK(readable.data() == data.data());
    static_assert(!std::is_convertible_v<rlhf::view<double>, rlhf::mut_view<double>>);
}

TEST_CASE("view: shape_string formats extents" * doctest::test_suite("unit")) {
    CHECK(rlhf::shape_string(rlhf::extents_t<2>{4, 7}) == "[4, 7]");
    CHECK(rlhf::shape_string(rlhf::extents_t<1>{0}) == "[0]");
}
