#pragma once
// Eigen helpers shared by the Eigen test files (see test_helpers.hpp for the rest).
#include <Eigen/Core>

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/core/view.hpp"
#include "rlhf/eigen/view.hpp"
#include "support/test_helpers.hpp"

namespace rlhf_test {

/// A row-major [rows, cols] copy of `values`.
template <class T>
rlhf::eigen::row_matrix<T> matrix_of(const std::vector<T>& values, Eigen::Index rows, Eigen::Index cols) {
    return Eigen::Map<const rlhf::eigen::row_matrix<T>>(values.data(), rows, cols);
}

/// [rows, cols] of N(mean, stddev) as T.
template <class T>
rlhf::eigen::row_matrix<T> random_values(std::mt19937& rng, Eigen::Index rows, Eigen::Index cols, double mean,
                                         double stddev) {
    const auto n = static_cast<std::size_t>(rows * cols);
    return matrix_of(as<T>(random_normal(rng, n, mean, stddev)), rows, cols);
}

/// random_padded_mask as a uint8 matrix.
inline rlhf::eigen::row_matrix<std::uint8_t> random_padded_mask_matrix(std::mt19937& rng, Eigen::Index rows,
                                                                       Eigen::Index cols) {
    const auto m = random_padded_mask(rng, static_cast<std::size_t>(rows), static_cast<std::size_t>(cols));
    return matrix_of(as<std::uint8_t>(m), rows, cols);
}

/// range_mask as a uint8 matrix.
inline rlhf::eigen::row_matrix<std::uint8_t> range_mask_matrix(Eigen::Index rows, Eigen::Index cols) {
    return matrix_of(as<std::uint8_t>(range_mask(static_cast<std::size_t>(rows), static_cast<std::size_t>(cols))), rows,
                     cols);
}

/// A kernel view of a dense row-major matrix, built independently of rlhf::eigen::as_view.
template <class M>
auto kview(const M& m) {
    using T = typename M::Scalar;
    return rlhf::view<T>{m.data(), {m.rows(), m.cols()}, {m.cols(), 1}};
}
template <class M>
auto kmut(M& m) {
    using T = typename M::Scalar;
    return rlhf::mut_view<T>{m.data(), {m.rows(), m.cols()}, {m.cols(), 1}};
}

}  // namespace rlhf_test
