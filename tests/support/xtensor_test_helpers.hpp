#pragma once
// xtensor helpers shared by the xtensor test files (see test_helpers.hpp for the rest).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/core/view.hpp"
#include "rlhf/xtensor/view.hpp"
#include "support/test_helpers.hpp"

namespace rlhf_test {

/// An xtensor of the given shape holding `values` (row-major).
template <class T, std::size_t N>
xt::xtensor<T, N> container(const std::vector<T>& values, std::array<std::size_t, N> shape) {
    xt::xtensor<T, N> out(shape);
    std::copy(values.begin(), values.end(), out.data());
    return out;
}

/// [rows, cols] of N(mean, stddev) as T.
template <class T>
xt::xtensor<T, 2> random_values(std::mt19937& rng, std::size_t rows, std::size_t cols, double mean, double stddev) {
    return container(as<T>(random_normal(rng, rows * cols, mean, stddev)), std::array<std::size_t, 2>{rows, cols});
}

/// random_padded_mask as an int64 container.
inline xt::xtensor<std::int64_t, 2> random_padded_mask_xtensor(std::mt19937& rng, std::size_t rows, std::size_t cols) {
    return container(as<std::int64_t>(random_padded_mask(rng, rows, cols)), std::array<std::size_t, 2>{rows, cols});
}

/// range_mask as an int64 container.
inline xt::xtensor<std::int64_t, 2> range_mask_xtensor(std::size_t rows, std::size_t cols) {
    return container(as<std::int64_t>(range_mask(rows, cols)), std::array<std::size_t, 2>{rows, cols});
}

/// A kernel view of a dense row-major [rows, cols] container, built independently of
/// rlhf::xtensor::as_view.
template <class E>
auto kview(const E& e) {
    return rlhf::make_view(e.data(), static_cast<rlhf::index_t>(e.shape()[0]),
                           static_cast<rlhf::index_t>(e.shape()[1]));
}
template <class E>
auto kmut(E& e) {
    return rlhf::make_mut_view(e.data(), static_cast<rlhf::index_t>(e.shape()[0]),
                               static_cast<rlhf::index_t>(e.shape()[1]));
}

/// Whether two xtensors have the same shape and exactly the same elements.
template <class T, std::size_t N>
bool same(const xt::xtensor<T, N>& a, const xt::xtensor<T, N>& b) {
    return a.shape() == b.shape() && std::equal(a.data(), a.data() + a.size(), b.data());
}

}  // namespace rlhf_test
