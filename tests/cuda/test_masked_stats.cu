// rlhf::cuda masked statistics and whitening against the CPU kernels, on seeded random data:
// per batch (up to 2.4M elements: the grid of 1024 blocks loops) and per row, every whitening
// flavour the presets use, empty and one-element scopes, holes, strided rows, several mask types,
// in place, float and double. Outputs and statistics are poisoned (NaN) before each call.
//
// Tolerances, relative to max(1, |expected|): sums in double on both sides, in another order
// (per-block partials): a few ulps of double for these sizes (the worst-case bound n·eps is
// 2.4e6 · 1.1e-16 ≈ 3e-10, relative to Σ|x| / |Σ x| ≈ 1 for values of mean 3 and std 2).
//   - statistics: 1e-9; counts exactly;
//   - whitened float: 5e-7 (both round nearly equal doubles once: 1 ulp apart at most, and
//     the device may fuse (x − mean)·scale + offset into one rounding);
//   - whitened double: 1e-9.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/cuda_test_support.cuh"
#include "cuda/row_test_data.cuh"
#include "rlhf/cuda/masked_stats.cuh"
#include "rlhf/kernels/masked_stats.hpp"

namespace {

using rlhf::index_t;
using rlhf_test::cuda_ok;
using rlhf_test::device_array;
using rlhf_test::rows::device_mask;
using rlhf_test::rows::strided;
using rlhf_test::rows::strided_mut;

template <class T>
constexpr double output_tolerance = std::is_same_v<T, float> ? 5e-7 : 1e-9;
constexpr double stats_tolerance = 1e-9;

bool close(double got, double expected, double tolerance) {
    return std::abs(got - expected) <= tolerance * std::max(1.0, std::abs(expected));  // false for NaN
}

/// Random data `[rows, stride]`: values N(3, 2) rounded to T; mask rows by index: random holes,
/// empty, one valid element, full.
template <class T>
std::pair<std::vector<T>, std::vector<int>> stats_data(std::mt19937& rng, index_t rows, index_t cols, index_t stride,
                                                       double keep_probability) {
    std::normal_distribution<double> normal(3.0, 2.0);
    std::bernoulli_distribution keep(keep_probability);
    const auto n = static_cast<std::size_t>(rows * stride);
    std::vector<T> x(n);
    std::vector<int> m(n, 0);
    for (auto& a : x) a = static_cast<T>(normal(rng));
    for (index_t b = 0; b < rows; ++b) {
        int* row = m.data() + b * stride;
        switch (b % 5) {
            case 1:
                break;  // empty
            case 2:
                row[std::uniform_int_distribution<index_t>(0, cols - 1)(rng)] = 1;
                break;
            case 3:
                for (index_t t = 0; t < cols; ++t) row[t] = 1;
                break;
            default:
                for (index_t t = 0; t < cols; ++t) row[t] = keep(rng) ? 1 : 0;
        }
    }
    return {x, m};
}

/// The statistics `[S, 4]` against the CPU's moments of each scope.
void check_moments(const std::vector<double>& got, const std::vector<rlhf::masked_moments>& expected,
                   const std::string& what) {
    std::size_t bad = 0;
    std::string first;
    for (std::size_t s = 0; s < expected.size(); ++s) {
        const double* g = got.data() + 4 * s;
        const rlhf::masked_moments& e = expected[s];
        const bool ok = g[0] == e.count && close(g[1], e.sum, stats_tolerance) &&
                        close(g[2], e.mean, stats_tolerance) && close(g[3], e.variance, stats_tolerance);
        if (!ok && first.empty())
            first = "scope " + std::to_string(s) + ": {" + std::to_string(g[0]) + ", " + std::to_string(g[1]) + ", " +
                    std::to_string(g[2]) + ", " + std::to_string(g[3]) + "} vs {" + std::to_string(e.count) + ", " +
                    std::to_string(e.sum) + ", " + std::to_string(e.mean) + ", " + std::to_string(e.variance) + "}";
        if (!ok) ++bad;
    }
    CHECK_MESSAGE(bad == 0, what << ": " << bad << " scopes differ, first " << first);
}

/// The `[rows, cols]` part against the CPU's output; the padding must still be NaN (poison).
template <class T>
void check_output(const std::vector<T>& got, const std::vector<T>& expected, index_t rows, index_t cols, index_t stride,
                  bool padding_poisoned, const std::string& what) {
    std::size_t bad = 0;
    std::string first;
    for (index_t b = 0; b < rows; ++b)
        for (index_t t = 0; t < stride; ++t) {
            const auto i = static_cast<std::size_t>(b * stride + t);
            const double g = static_cast<double>(got[i]);
            const bool ok = t < cols ? close(g, static_cast<double>(expected[i]), output_tolerance<T>)
                                     : (!padding_poisoned || std::isnan(g));
            if (!ok && first.empty())
                first = "[" + std::to_string(b) + ", " + std::to_string(t) + "]: " + std::to_string(g) + " vs " +
                        (t < cols ? std::to_string(static_cast<double>(expected[i])) : std::string("padding"));
            if (!ok) ++bad;
        }
    CHECK_MESSAGE(bad == 0, what << ": " << bad << " mismatches, first " << first);
}

/// The CPU moments of every scope (the batch, or each row), under `options`.
template <class T>
std::vector<rlhf::masked_moments> cpu_moments(const std::vector<T>& x, const std::vector<int>& m, index_t rows,
                                              index_t cols, index_t stride, bool per_row,
                                              const rlhf::moments_options& options) {
    std::vector<rlhf::masked_moments> out;
    if (!per_row) {
        out.push_back(rlhf::compute_masked_moments(strided(x.data(), rows, cols, stride),
                                                   strided(m.data(), rows, cols, stride), options));
        return out;
    }
    for (index_t b = 0; b < rows; ++b)
        out.push_back(rlhf::compute_masked_moments(strided(x.data() + b * stride, 1, cols, stride),
                                                   strided(m.data() + b * stride, 1, cols, stride), options));
    return out;
}

std::string describe(index_t rows, index_t cols, index_t pad) {
    return "B=" + std::to_string(rows) + " T=" + std::to_string(cols) + " pad=" + std::to_string(pad);
}

template <class T, class M>
void check_moments_case(std::mt19937& rng, index_t rows, index_t cols, index_t pad, double keep,
                        const rlhf::moments_options& options) {
    const index_t stride = cols + pad;
    const auto [x, m] = stats_data<T>(rng, rows, cols, stride, keep);
    device_array<T> dx(x);
    const device_mask<M> dm(m);
    device_array<double> batch(4), per_row(static_cast<std::size_t>(4 * rows));
    device_array<unsigned char> workspace(rlhf::cuda::masked_stats_workspace_bytes(rows, cols));
    batch.poison();
    per_row.poison();
    const auto xv = strided<T>(dx.data(), rows, cols, stride);
    const auto mv = strided<M>(dm.device.data(), rows, cols, stride);
    rlhf::cuda::compute_masked_moments(xv, mv, rlhf::mut_view<double>{batch.data(), {1, 4}}, workspace.data(), options,
                                       cudaStream_t{});
    rlhf::cuda::compute_masked_moments_per_row(xv, mv, rlhf::mut_view<double>{per_row.data(), {rows, 4}}, options,
                                               cudaStream_t{});
    const std::string what = describe(rows, cols, pad) + " " + std::string(rlhf::to_string(options.variance)) +
                             " count_epsilon=" + std::to_string(options.count_epsilon);
    check_moments(batch.download(), cpu_moments(x, m, rows, cols, stride, false, options), what + " batch");
    check_moments(per_row.download(), cpu_moments(x, m, rows, cols, stride, true, options), what + " per row");
}

template <class T, class M>
void check_whiten_case(std::mt19937& rng, index_t rows, index_t cols, index_t pad, double keep,
                       const rlhf::whiten_options& options, bool in_place) {
    const index_t stride = cols + pad;
    const auto [x, m] = stats_data<T>(rng, rows, cols, stride, keep);
    const bool per_row = options.scope == rlhf::whiten_scope::per_row;
    std::vector<T> want(x.size());
    rlhf::masked_whiten(strided(x.data(), rows, cols, stride), strided(m.data(), rows, cols, stride),
                        strided_mut(want.data(), rows, cols, stride), options);
    const rlhf::moments_options moments_options{options.variance, rlhf::small_sample_policy::zero_variance,
                                                options.count_epsilon};

    device_array<T> dx(x), dout(x.size());
    const device_mask<M> dm(m);
    const index_t scopes = per_row ? rows : 1;
    device_array<double> moments(static_cast<std::size_t>(4 * scopes));
    device_array<unsigned char> workspace(rlhf::cuda::masked_stats_workspace_bytes(rows, cols));
    dout.poison();
    moments.poison();
    T* out = in_place ? dx.data() : dout.data();
    rlhf::cuda::masked_whiten(strided<T>(dx.data(), rows, cols, stride),
                              strided<M>(dm.device.data(), rows, cols, stride), strided_mut(out, rows, cols, stride),
                              rlhf::mut_view<double>{moments.data(), {scopes, 4}}, per_row ? nullptr : workspace.data(),
                              options, cudaStream_t{});
    const std::string what = describe(rows, cols, pad) + (per_row ? " per row" : " per batch") +
                             " policy=" + std::string(rlhf::to_string(options.small_sample)) +
                             (in_place ? " in place" : "");
    check_output((in_place ? dx : dout).download(), want, rows, cols, stride, !in_place, what);
    check_moments(moments.download(), cpu_moments(x, m, rows, cols, stride, per_row, moments_options),
                  what + " statistics");
}

/// The whitening flavours of the presets (see whiten_options), with the device's policies.
std::vector<rlhf::whiten_options> flavours() {
    using rlhf::small_sample_policy;
    return {
        {.small_sample = small_sample_policy::zero_variance},                // TRL
        {.small_sample = small_sample_policy::skip, .count_epsilon = 1e-8},  // verl
        {.variance = rlhf::variance_estimator::biased,                       // OpenRLHF batch
         .epsilon_mode = rlhf::whiten_epsilon::clamp_variance,
         .small_sample = small_sample_policy::zero_variance},
        {.variance = rlhf::variance_estimator::biased,  // OpenRLHF masked_normalize
         .scope = rlhf::whiten_scope::per_row,
         .epsilon_mode = rlhf::whiten_epsilon::clamp_variance,
         .small_sample = small_sample_policy::zero_variance,
         .zero_masked = true},
        {.shift_mean = false, .small_sample = small_sample_policy::skip, .zero_masked = true},  // TRL rewards
        {.small_sample = small_sample_policy::zero_variance, .scale = false},                   // no_std_norm
        {.scope = rlhf::whiten_scope::per_row, .small_sample = small_sample_policy::skip},
    };
}

using rlhf_test::rows::float_bool, rlhf_test::rows::double_uint8, rlhf_test::rows::float_int32,
    rlhf_test::rows::double_float;

constexpr std::pair<index_t, index_t> shapes[] = {{1, 1}, {3, 7}, {7, 300}, {5, 1000}, {64, 4097}, {2, 100000}};

}  // namespace

TEST_SUITE("cuda") {
    TEST_CASE_TEMPLATE("cuda compute_masked_moments per batch and per row equal the CPU kernel", Types, float_bool,
                       double_uint8, float_int32, double_float) {
        using T = typename Types::value;
        using M = typename Types::mask;
        std::mt19937 rng(4242);
        int trial = 0;
        for (const auto& [rows, cols] : shapes) {
            for (const auto estimator : {rlhf::variance_estimator::unbiased, rlhf::variance_estimator::biased}) {
                const double count_epsilon = trial % 2 == 0 ? 0.0 : 1e-8;
                const auto policy =
                    trial % 3 == 0 ? rlhf::small_sample_policy::skip : rlhf::small_sample_policy::zero_variance;
                check_moments_case<T, M>(rng, rows, cols, trial % 2 == 0 ? 0 : 3, 0.6,
                                         {estimator, policy, count_epsilon});
                ++trial;
            }
        }
        // Every mask entry 0: count 0, mean 0, variance 0 everywhere.
        check_moments_case<T, M>(rng, 5, 64, 1, 0.0, {.small_sample = rlhf::small_sample_policy::zero_variance});
        // Many blocks: 300 · 8192 elements, the grid of 1024 blocks loops.
        check_moments_case<T, M>(rng, 300, 8192, 0, 0.7, {.small_sample = rlhf::small_sample_policy::zero_variance});
    }

    TEST_CASE_TEMPLATE("cuda masked_whiten equals the CPU kernel in every flavour", Types, float_bool, double_uint8,
                       float_int32, double_float) {
        using T = typename Types::value;
        using M = typename Types::mask;
        std::mt19937 rng(99);
        int trial = 0;
        for (const auto& [rows, cols] : shapes) {
            for (rlhf::whiten_options options : flavours()) {
                for (const auto scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row}) {
                    options.scope = scope;
                    check_whiten_case<T, M>(rng, rows, cols, trial % 2 == 0 ? 0 : 5, 0.6, options, false);
                    ++trial;
                }
            }
        }
        check_whiten_case<T, M>(rng, 5, 64, 1, 0.0, {.small_sample = rlhf::small_sample_policy::zero_variance}, false);
        check_whiten_case<T, M>(rng, 5, 64, 1, 0.0, {.small_sample = rlhf::small_sample_policy::skip}, false);
        check_whiten_case<T, M>(rng, 300, 8192, 0, 0.7, {.small_sample = rlhf::small_sample_policy::zero_variance},
                                false);
    }

    TEST_CASE_TEMPLATE("cuda masked_whiten in place and unmasked whiten", T, float, double) {
        std::mt19937 rng(12);
        for (const auto scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row})
            check_whiten_case<T, std::uint8_t>(
                rng, 9, 777, 2, 0.6, {.scope = scope, .small_sample = rlhf::small_sample_policy::zero_variance}, true);
        // rlhf::cuda::whiten against rlhf::whiten (no mask), per batch and per row.
        for (const auto scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row}) {
            const index_t rows = 6, cols = 3000, stride = 3001;
            const auto [x, m] = stats_data<T>(rng, rows, cols, stride, 1.0);
            const rlhf::whiten_options options{.scope = scope,
                                               .small_sample = rlhf::small_sample_policy::zero_variance};
            std::vector<T> want(x.size());
            rlhf::whiten(strided(x.data(), rows, cols, stride), strided_mut(want.data(), rows, cols, stride), options);
            device_array<T> dx(x), dout(x.size());
            const index_t scopes = scope == rlhf::whiten_scope::per_row ? rows : 1;
            device_array<double> moments(static_cast<std::size_t>(4 * scopes));
            device_array<unsigned char> workspace(rlhf::cuda::masked_stats_workspace_bytes(rows, cols));
            dout.poison();
            moments.poison();
            rlhf::cuda::whiten(strided<T>(dx.data(), rows, cols, stride), strided_mut(dout.data(), rows, cols, stride),
                               rlhf::mut_view<double>{moments.data(), {scopes, 4}}, workspace.data(), options,
                               cudaStream_t{});
            check_output(dout.download(), want, rows, cols, stride, true, "whiten");
            const std::vector<int> ones(x.size(), 1);
            check_moments(moments.download(),
                          cpu_moments(x, ones, rows, cols, stride, scope == rlhf::whiten_scope::per_row,
                                      {.small_sample = rlhf::small_sample_policy::zero_variance}),
                          "whiten statistics");
        }
    }

    TEST_CASE("cuda masked statistics check shapes and options on the host") {
        device_array<float> x(12), out(12);
        device_array<std::uint8_t> m(12);
        device_array<double> moments(12), workspace(64);
        const rlhf::view<float> xv{x.data(), {3, 4}};
        const rlhf::view<std::uint8_t> mv{m.data(), {3, 4}};
        const rlhf::mut_view<float> ov{out.data(), {3, 4}};
        const rlhf::mut_view<double> one{moments.data(), {1, 4}}, three{moments.data(), {3, 4}};
        const rlhf::whiten_options zero{.small_sample = rlhf::small_sample_policy::zero_variance};
        const auto expect = [](auto&& run, rlhf::error_kind kind, std::string_view argument) {
            try {
                run();
                FAIL("expected rlhf::error naming " << argument);
            } catch (const rlhf::error& e) {
                CHECK(e.kind() == kind);
                CHECK(e.argument() == argument);
            }
        };
        // The CPU default policy raises, which the device cannot do without a host read.
        expect([&] { rlhf::cuda::masked_whiten(xv, mv, ov, one, workspace.data(), {}, cudaStream_t{}); },
               rlhf::error_kind::config, "small_sample");
        expect([&] { rlhf::cuda::compute_masked_moments(xv, mv, one, workspace.data(), {}, cudaStream_t{}); },
               rlhf::error_kind::config, "small_sample");
        expect([&] { rlhf::cuda::masked_whiten(xv, mv, ov, one, nullptr, zero, cudaStream_t{}); },
               rlhf::error_kind::value, "workspace");
        expect([&] { rlhf::cuda::masked_whiten(xv, mv, ov, three, workspace.data(), zero, cudaStream_t{}); },
               rlhf::error_kind::shape, "moments");
        expect(
            [&] {
                rlhf::cuda::masked_whiten(xv, rlhf::view<std::uint8_t>{m.data(), {4, 3}}, ov, one, workspace.data(),
                                          zero, cudaStream_t{});
            },
            rlhf::error_kind::shape, "mask");
        expect(
            [&] {
                rlhf::cuda::masked_whiten(xv, mv, rlhf::mut_view<float>{x.data() + 1, {3, 4}, {4, 1}}, one,
                                          workspace.data(), zero, cudaStream_t{});
            },
            rlhf::error_kind::value, "out");
        expect(
            [&] {
                rlhf::whiten_options bad = zero;
                bad.epsilon = 0.0;
                rlhf::cuda::masked_whiten(xv, mv, ov, one, workspace.data(), bad, cudaStream_t{});
            },
            rlhf::error_kind::config, "epsilon");
        // Per row needs no workspace.
        CHECK_NOTHROW(rlhf::cuda::masked_whiten(
            xv, mv, ov, three, nullptr,
            {.scope = rlhf::whiten_scope::per_row, .small_sample = rlhf::small_sample_policy::skip}, cudaStream_t{}));
        cuda_ok(cudaDeviceSynchronize());
    }
}
