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
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/cuda_test_support.cuh"
#include "rlhf/core/options.hpp"
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

/// A random loss problem's shape and spread.
struct problem_shape {
    int rows, cols, pad;  // row stride = cols + pad
    double sigma;         // spread of the input the loss compares (lp − old, V − V_old)
    double p_valid;       // per-token probability of m = 1
    int empty_every;      // every n-th row has no valid token (0: none)
};

/// The small shapes every option family runs on: T = 1, B = 1, one and several blocks of the
/// fused pass per row, padded rows, empty rows.
inline const std::vector<problem_shape> small_loss_shapes = {
    {1, 1, 0, 0, 1.0, 0},    {3, 1, 2, 0, 0.7, 0},    {5, 7, 0, 0, 0.6, 2},    {17, 1000, 3, 0, 0.8, 4},
    {9, 1024, 0, 0, 0.9, 3}, {4, 1025, 5, 0, 0.9, 0}, {2, 3000, 1, 0, 0.5, 0},
};

/// An option family of a loss: name, options, spread of its problems.
template <class Options>
struct loss_family {
    const char* name;
    Options options;
    double sigma;
};

/// The families of the aggregation options, the same for every loss (`Options` with only
/// `aggregation` set).
template <class Options>
std::vector<loss_family<Options>> aggregation_families() {
    using agg = rlhf::loss_aggregation;
    return {
        {"seq-mean-token-mean", {.aggregation = {.mode = agg::seq_mean_token_mean}}, 0.3},
        {"seq-mean-token-mean global rows",
         {.aggregation = {.mode = agg::seq_mean_token_mean,
                          .global_sequence_count = 1000.0,
                          .dp_size = 2.0,
                          .token_count_epsilon = 0.0}},
         0.3},
        {"seq-mean-token-sum", {.aggregation = {.mode = agg::seq_mean_token_sum, .dp_size = 3.0}}, 0.3},
        {"seq-mean-token-sum-norm", {.aggregation = {.mode = agg::seq_mean_token_sum_norm}}, 0.3},
        {"seq-mean-token-sum-norm normalizer",
         {.aggregation = {.mode = agg::seq_mean_token_sum_norm, .normalizer = 512.0}},
         0.3},
        {"token-mean global tokens", {.aggregation = {.global_token_count = 123456.0, .dp_size = 4.0}}, 0.3},
    };
}

/// `check(seed, shape, options)` for every family over `small_loss_shapes` (the family's
/// spread), the seed counting up from `seed`.
template <class Options, class Check>
void check_families(std::uint64_t seed, const std::vector<loss_family<Options>>& families, Check check) {
    for (const loss_family<Options>& f : families) {
        const std::string name = f.name;
        CAPTURE(name);
        for (problem_shape sh : small_loss_shapes) {
            sh.sigma = f.sigma;
            check(seed++, sh, f.options);
        }
    }
}

/// All-zero `[rows, cols]` inputs without a mask: an aggregation divisor of 0, which the CPU
/// refuses; the device writes loss 0, valid tokens 0 and a zero gradient in every `mode`.
/// `loss(v, grad, mode, result, workspace)` runs the device loss with `v` as every input.
template <class T, class Loss>
void check_zero_divisor_gives_zero(rlhf::index_t rows, rlhf::index_t cols, int result_size, std::size_t workspace_bytes,
                                   int loss_slot, int tokens_slot, std::initializer_list<rlhf::loss_aggregation> modes,
                                   Loss loss) {
    const std::vector<T> zeros(static_cast<std::size_t>(rows * cols), T{0});
    device_array<T> x(zeros), grad(zeros.size());
    device_array<double> result(static_cast<std::size_t>(result_size));
    device_array<double> workspace(workspace_bytes / sizeof(double));
    const rlhf::view<T> v(x.data(), {rows, cols});
    for (const auto mode : modes) {
        grad.poison();
        result.poison();
        workspace.poison();
        loss(v, rlhf::mut_view<T>(grad.data(), {rows, cols}), mode, result.data(), workspace.data());
        const auto r = result.download();
        CHECK(r[static_cast<std::size_t>(loss_slot)] == 0.0);
        CHECK(r[static_cast<std::size_t>(tokens_slot)] == 0.0);
        for (const T g : grad.download()) CHECK(g == T{0});
    }
}

/// B = 0 and T = 0: every slot of the result written 0. `loss(v, result, workspace)` runs the
/// device loss with `v` as every input.
template <class Loss>
void check_empty_shapes_write_zero_result(int result_size, std::size_t workspace_bytes, Loss loss) {
    device_array<double> result(static_cast<std::size_t>(result_size));
    device_array<double> workspace(workspace_bytes / sizeof(double));
    device_array<float> x(1);
    for (const auto& [rows, cols] : {std::pair<rlhf::index_t, rlhf::index_t>{0, 5}, {4, 0}}) {
        result.poison();
        workspace.poison();
        const rlhf::view<float> v(x.data(), {rows, cols});
        loss(v, result.data(), workspace.data());
        const auto r = result.download();
        for (const double value : r) CHECK(value == 0.0);
    }
}

}  // namespace rlhf_test
