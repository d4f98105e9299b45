#include <doctest/doctest.h>

#include "rlhf/eigen.hpp"

TEST_CASE("eigen::as_view maps row-major matrices / blocks and vectors" * doctest::test_suite("unit")) {
    rlhf::eigen::row_matrix<double> m(3, 4);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<double>(i);
    const auto v = rlhf::eigen::as_view(m, "f", "x");
    CHECK(v.data() == m.data());
    CHECK(v(2, 3) == 11.0);
    const auto block = rlhf::eigen::as_view(m.rightCols(2), "f", "x");
    CHECK(block.stride(0) == 4);
    CHECK(block(1, 0) == 6.0);
    // A column-major [T, B] matrix is read as [B, T] through its transpose.
    Eigen::MatrixXf time_major(4, 2);
    time_major << 0, 10, 1, 11, 2, 12, 3, 13;
    const auto batch_major = rlhf::eigen::as_view(time_major.transpose(), "f", "x");
    CHECK(batch_major.extent(0) == 2);
    CHECK(batch_major(1, 2) == 12.0f);
    rlhf::eigen::vector<float> scores(3);
    scores << 1, 2, 3;
    CHECK(rlhf::eigen::as_vector_view(scores, "f", "scores")(2) == 3.0f);
    rlhf::eigen::as_mut_view(m, "f", "out")(0, 0) = -1.0;
    CHECK(m(0, 0) == -1.0);
}

TEST_CASE("eigen::as_view rejects a strided inner dimension" * doctest::test_suite("unit")) {
    rlhf::eigen::row_matrix<double> m = rlhf::eigen::row_matrix<double>::Zero(4, 4);
    const Eigen::Map<const rlhf::eigen::row_matrix<double>, 0, Eigen::Stride<8, 2>> every_other(m.data(), 2, 2);
    CHECK_THROWS_AS((void)rlhf::eigen::as_view(every_other, "f", "values"), rlhf::error);
}
