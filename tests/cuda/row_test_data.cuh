#pragma once
// Seeded `[B, T]` test data of the CUDA row-kernel tests (GAE, masked statistics, reward shaping,
// outcome advantages): strided views,
// masks with every kind of row (full, empty, padded, holes, a single token), comparison of a
// device result with the CPU kernel's within a relative tolerance, padding left poisoned.

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/cuda_test_support.cuh"
#include "rlhf/core/view.hpp"

namespace rlhf_test::rows {

using rlhf::index_t;

/// A host mask of `M` (bool included, which std::vector would pack) on the device too.
template <class M>
struct device_mask {
    device_array<M> device;
    explicit device_mask(const std::vector<int>& bits) : device(bits.size()) {
        std::unique_ptr<M[]> host(new M[bits.size()]);
        for (std::size_t i = 0; i < bits.size(); ++i) host[i] = static_cast<M>(bits[i]);
        cuda_ok(cudaMemcpy(device.data(), host.get(), device.bytes(), cudaMemcpyHostToDevice));
    }
};

/// `[rows, cols]` views with row stride `stride`.
template <class T>
rlhf::view<T> strided(const T* data, index_t rows, index_t cols, index_t stride) {
    return {data, {rows, cols}, {stride, 1}};
}
template <class T>
rlhf::mut_view<T> strided_mut(T* data, index_t rows, index_t cols, index_t stride) {
    return {data, {rows, cols}, {stride, 1}};
}

/// Converts through T (the inputs both kernels see).
template <class T>
std::vector<T> rounded(const std::vector<double>& x) {
    std::vector<T> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<T>(x[i]);
    return out;
}

inline std::vector<double> normal_values(std::mt19937& rng, std::size_t n, double scale = 1.0, double shift = 0.0) {
    std::normal_distribution<double> normal;
    std::vector<double> x(n);
    for (double& a : x) a = shift + scale * normal(rng);
    return x;
}

/// Mask rows of every kind, by row index: full, empty, a random valid range (left and right
/// padding), random holes, a single valid token, runs with holes between. `contiguous` (GAE's
/// valid_range) replaces the rows with holes by padded ones.
inline std::vector<int> random_mask(std::mt19937& rng, index_t rows, index_t cols, index_t stride,
                                    bool contiguous = false) {
    std::vector<int> m(static_cast<std::size_t>(rows * stride), 0);
    std::uniform_int_distribution<index_t> pick(0, cols);
    std::bernoulli_distribution keep(0.65);
    for (index_t b = 0; b < rows; ++b) {
        int* row = m.data() + b * stride;
        int kind = static_cast<int>(b % 6);
        if (contiguous && (kind == 3 || kind == 5)) kind = 2;
        switch (kind) {
            case 0:
                for (index_t t = 0; t < cols; ++t) row[t] = 1;
                break;
            case 1:
                break;
            case 2: {
                index_t lo = pick(rng), hi = pick(rng);
                if (lo > hi) std::swap(lo, hi);
                for (index_t t = lo; t < hi; ++t) row[t] = 1;
                break;
            }
            case 3:
                for (index_t t = 0; t < cols; ++t) row[t] = keep(rng) ? 1 : 0;
                break;
            case 4:
                row[std::uniform_int_distribution<index_t>(0, cols - 1)(rng)] = 1;
                break;
            default:
                for (index_t t = 0; t < cols; ++t) row[t] = (t / 37) % 3 != 1 ? 1 : 0;
                break;
        }
    }
    return m;
}

/// Checks `got` against `expected` over the `[rows, cols]` view of stride `stride`: within
/// `tolerance · max(1, |expected|)`, and, when `padding_poisoned`, the padding still NaN (unwritten).
template <class T, class U>
void check_close(const std::vector<T>& got, const std::vector<U>& expected, index_t rows, index_t cols, index_t stride,
                 double tolerance, bool padding_poisoned, const std::string& what) {
    std::size_t bad = 0;
    std::string first;
    for (index_t b = 0; b < rows; ++b) {
        for (index_t t = 0; t < stride; ++t) {
            const auto i = static_cast<std::size_t>(b * stride + t);
            const double g = static_cast<double>(got[i]);
            bool ok = true;
            if (t < cols) {
                const double e = static_cast<double>(expected[i]);
                ok = std::abs(g - e) <= tolerance * std::max(1.0, std::abs(e));  // false for NaN
                if (!ok && first.empty())
                    first = "[" + std::to_string(b) + ", " + std::to_string(t) + "]: " + std::to_string(g) + " vs " +
                            std::to_string(e);
            } else if (padding_poisoned) {
                ok = std::isnan(g);
                if (!ok && first.empty())
                    first = "padding [" + std::to_string(b) + ", " + std::to_string(t) + "] written";
            }
            if (!ok) ++bad;
        }
    }
    CHECK_MESSAGE(bad == 0, what << ": " << bad << " mismatches, first " << first);
}

/// Value and mask types of a templated test case.
template <class T, class M>
struct types {
    using value = T;
    using mask = M;
};
using float_bool = types<float, bool>;
using double_uint8 = types<double, std::uint8_t>;
using float_int32 = types<float, std::int32_t>;
using double_float = types<double, float>;

}  // namespace rlhf_test::rows

// Test case names without commas (ctest filters split at them).
TYPE_TO_STRING_AS("float values and bool mask", rlhf_test::rows::float_bool);
TYPE_TO_STRING_AS("double values and uint8 mask", rlhf_test::rows::double_uint8);
TYPE_TO_STRING_AS("float values and int32 mask", rlhf_test::rows::float_int32);
TYPE_TO_STRING_AS("double values and float mask", rlhf_test::rows::double_float);
