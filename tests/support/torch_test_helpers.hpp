#pragma once
// LibTorch helpers shared by the LibTorch test files (see test_helpers.hpp for the rest). The
// test files get support/doctest_torch.hpp precompiled first, so glog's CHECK is gone here.
#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/core/view.hpp"
#include "rlhf/libtorch/view.hpp"
#include "support/test_helpers.hpp"

namespace rlhf_test {

/// A tensor of the given shape holding a copy of `values`.
template <class T>
torch::Tensor tensor_of(const std::vector<T>& values, std::vector<int64_t> shape) {
    return torch::from_blob(const_cast<T*>(values.data()), shape, rlhf::libtorch::dtype_of<T>()).clone();
}

/// The elements of a tensor of element type T, row-major.
template <class T>
std::vector<T> to_vector(const torch::Tensor& t) {
    const torch::Tensor c = t.contiguous();
    return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

/// [rows, cols] of N(mean, stddev) as T.
template <class T>
torch::Tensor random_values(std::mt19937& rng, int64_t rows, int64_t cols, double mean, double stddev) {
    return tensor_of(as<T>(random_normal(rng, static_cast<std::size_t>(rows * cols), mean, stddev)), {rows, cols});
}

/// random_padded_mask as a bool tensor.
inline torch::Tensor random_padded_mask_tensor(std::mt19937& rng, int64_t rows, int64_t cols) {
    const auto m = random_padded_mask(rng, static_cast<std::size_t>(rows), static_cast<std::size_t>(cols));
    return tensor_of(as<std::uint8_t>(m), {rows, cols}).to(torch::kBool);
}

/// range_mask as a uint8 tensor.
inline torch::Tensor range_mask_tensor(int64_t rows, int64_t cols) {
    return tensor_of(as<std::uint8_t>(range_mask(static_cast<std::size_t>(rows), static_cast<std::size_t>(cols))),
                     {rows, cols});
}

/// A kernel view of a [rows, cols] tensor with innermost stride 1, built independently of
/// rlhf::libtorch::as_view.
template <class T>
rlhf::view<T> kview(const torch::Tensor& t) {
    return {t.data_ptr<T>(), {t.size(0), t.size(1)}, {t.stride(0), 1}};
}
template <class T>
rlhf::mut_view<T> kmut(torch::Tensor& t) {
    return {t.data_ptr<T>(), {t.size(0), t.size(1)}, {t.stride(0), 1}};
}

/// Checks that a tensor has element type T and holds exactly `expected` (row-major).
template <class T>
void check_same(const torch::Tensor& t, const std::vector<T>& expected) {
    REQUIRE((t.scalar_type() == rlhf::libtorch::dtype_of<T>()));
    REQUIRE(t.numel() == static_cast<int64_t>(expected.size()));
    const torch::Tensor flat = t.contiguous().reshape({-1});
    for (std::size_t k = 0; k < expected.size(); ++k) CHECK(flat[static_cast<int64_t>(k)].item<T>() == expected[k]);
}

}  // namespace rlhf_test
