#pragma once
// Shared pieces of the CUDA loss tests: random [B, T] problems in strided host buffers (the
// padding columns hold NaN, so a kernel that reads them poisons its output), their device copies,
// and the comparisons with the CPU kernels.
//
// Tolerances. The test target is compiled with -fmad=false, so the device evaluates the shared
// per-token functions with the host's operations in the host's order: per-token values (loss,
// gradient, ratio) agree to the last bit in float; in double the device's exp (CUDA's, when the
// CPU build uses the C library's) may differ by 1 ulp, which a product passes on as a few ulp:
// per-token relative tolerance 1e-6 (float) and 1e-13 (double). Sums (the loss, the statistics,
// a sequence-level row mean) run in another order on the device (per thread, then a tree per
// block, then the blocks): with at most 2^21 terms of magnitude ~1 in double the difference is
// far below 1e-9 · (1 + |value|), the tolerance of every sum. Counts and flags are exact.

#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "cuda/cuda_test_support.cuh"
#include "rlhf/core/view.hpp"

namespace rlhf_test {

/// Host storage of a mask of element type M (bytes for bool: std::vector<bool> has no data()).
template <class M>
using mask_storage = std::conditional_t<std::is_same_v<M, bool>, unsigned char, M>;

/// A strided [rows, cols] host buffer (row stride `stride` ≥ cols; padding filled by the caller).
template <class E>
struct host_matrix {
    int rows = 0, cols = 0, stride = 0;
    std::vector<E> data;
    host_matrix(int r, int c, int s, E fill)
        : rows(r), cols(c), stride(s), data(static_cast<std::size_t>(r) * s, fill) {}
    E& at(int b, int t) { return data[static_cast<std::size_t>(b) * stride + t]; }
    const E& at(int b, int t) const { return data[static_cast<std::size_t>(b) * stride + t]; }
};

template <class V, class E>
rlhf::view<V> host_view(const host_matrix<E>& m) {
    return rlhf::view<V>(reinterpret_cast<const V*>(m.data.data()), {m.rows, m.cols}, {m.stride, 1});
}
template <class V, class E>
rlhf::mut_view<V> host_mut_view(host_matrix<E>& m) {
    return rlhf::mut_view<V>(reinterpret_cast<V*>(m.data.data()), {m.rows, m.cols}, {m.stride, 1});
}

/// A device copy of a host matrix (same stride).
template <class V, class E>
struct device_matrix {
    int rows, cols, stride;
    device_array<V> array;
    explicit device_matrix(const host_matrix<E>& m)
        : rows(m.rows), cols(m.cols), stride(m.stride), array(m.data.size()) {
        static_assert(sizeof(V) == sizeof(E));
        cuda_ok(cudaMemcpy(array.data(), m.data.data(), array.bytes(), cudaMemcpyHostToDevice));
    }
    device_matrix(int r, int c, int s) : rows(r), cols(c), stride(s), array(static_cast<std::size_t>(r) * s) {}
    [[nodiscard]] rlhf::view<V> view() const { return rlhf::view<V>(array.data(), {rows, cols}, {stride, 1}); }
    [[nodiscard]] rlhf::mut_view<V> mut_view() { return rlhf::mut_view<V>(array.data(), {rows, cols}, {stride, 1}); }
};

/// A random mask: each row valid with probability `p_valid` per token; every `empty_every`-th
/// row (0: none) has no valid token. With `p_valid` > 0 the first token is valid (so that every
/// aggregation divisor is positive, as the CPU kernel requires).
template <class M>
host_matrix<mask_storage<M>> random_mask(std::mt19937_64& gen, int rows, int cols, int stride, double p_valid,
                                         int empty_every) {
    host_matrix<mask_storage<M>> m(rows, cols, stride, mask_storage<M>{1});
    std::bernoulli_distribution valid(p_valid);
    for (int b = 0; b < rows; ++b)
        for (int t = 0; t < cols; ++t)
            m.at(b, t) = (empty_every > 0 && b % empty_every == empty_every - 1) ? mask_storage<M>{0}
                         : valid(gen)                                            ? mask_storage<M>{1}
                                                                                 : mask_storage<M>{0};
    if (p_valid > 0.0 && rows > 0 && cols > 0) m.at(0, 0) = mask_storage<M>{1};
    return m;
}

/// A random matrix: N(mean, sigma) (padding NaN).
template <class T>
host_matrix<T> random_matrix(std::mt19937_64& gen, int rows, int cols, int stride, double mean, double sigma) {
    host_matrix<T> m(rows, cols, stride, std::numeric_limits<T>::quiet_NaN());
    std::normal_distribution<double> normal(mean, sigma);
    for (int b = 0; b < rows; ++b)
        for (int t = 0; t < cols; ++t) m.at(b, t) = static_cast<T>(normal(gen));
    return m;
}

template <class T>
constexpr double token_tolerance = std::is_same_v<T, float> ? 1e-6 : 1e-13;
inline constexpr double sum_tolerance = 1e-9;

/// |got − want| ≤ rtol·|want| + atol, equal infinities, or both NaN.
inline bool close(double got, double want, double rtol, double atol = 0.0) {
    if (std::isnan(want)) return std::isnan(got);
    if (std::isinf(want)) return got == want;
    return std::abs(got - want) <= rtol * std::abs(want) + atol;
}

/// True when every byte of `x` is 0xFF (the poison: the kernel did not write it).
template <class T>
bool poisoned(T x) {
    unsigned char bytes[sizeof(T)];
    std::memcpy(bytes, &x, sizeof(T));
    return std::all_of(bytes, bytes + sizeof(T), [](unsigned char b) { return b == 0xFF; });
}

/// Compares a device [rows, cols] output (downloaded, with its stride) with the CPU's: the
/// valid region within tolerance (atol = `atol_of_max` · max |want|), the padding untouched.
template <class T>
void compare_matrix(const char* what, const std::vector<T>& got, const host_matrix<T>& want, double rtol,
                    double atol_of_max = 0.0) {
    double max_abs = 0.0;
    for (int b = 0; b < want.rows; ++b)
        for (int t = 0; t < want.cols; ++t)
            if (std::isfinite(want.at(b, t))) max_abs = std::max(max_abs, std::abs(static_cast<double>(want.at(b, t))));
    const double atol = atol_of_max * max_abs;
    int bad = 0, bad_padding = 0;
    for (int b = 0; b < want.rows; ++b) {
        for (int t = 0; t < want.stride; ++t) {
            const T g = got[static_cast<std::size_t>(b) * want.stride + t];
            if (t >= want.cols) {
                bad_padding += poisoned(g) ? 0 : 1;
                continue;
            }
            const T w = want.at(b, t);
            if (!close(static_cast<double>(g), static_cast<double>(w), rtol, atol)) {
                if (bad < 5) MESSAGE(what << "[" << b << ", " << t << "]: device " << g << ", CPU " << w);
                ++bad;
            }
        }
    }
    INFO(what);
    CHECK(bad == 0);
    CHECK(bad_padding == 0);
}

}  // namespace rlhf_test
