// rlhf::cuda::compute_gae and compute_gae_time_major against the CPU kernels, on seeded random
// data: every masking, bootstrap values, several mask types, T = 1 to 8195 (several chunks of
// the row scan), empty rows, holes, strided rows, in place, float and double. Every output is
// poisoned (NaN) before each call, so an element the kernel misses fails the comparison.
//
// Tolerances, relative to max(1, |expected|): both sides compute in double and round to T once;
// the double results differ only by the order of the operations (a scan instead of a loop), a
// few ulps of double over sums of at most ~10^4 terms of size < 10, far below float's ulp.
//   - float: 5e-7 (about 4 float ulps; one rounding of nearly equal doubles differs by 1 ulp);
//   - double: 1e-9 (worst case n·eps·Σ|terms| ≈ 8195 · 1.1e-16 · 10^4 ≈ 1e-8 for γ = λ = 1 and
//     the longest row, in practice ~1e-13; values are N(0, 1)).
// The time-major CPU kernel carries its running advantage in T (rounded every step), the CUDA
// kernel in double: the float case is compared with the CPU kernel run in double on the same
// float inputs (then the bound above holds).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/cuda_test_support.cuh"
#include "cuda/row_test_data.cuh"
#include "rlhf/cuda/gae.cuh"
#include "rlhf/kernels/gae.hpp"

namespace {

using rlhf::index_t;
using rlhf_test::cuda_ok;
using rlhf_test::device_array;
using rlhf_test::rows::check_close;
using rlhf_test::rows::device_mask;
using rlhf_test::rows::normal_values;
using rlhf_test::rows::random_mask;
using rlhf_test::rows::rounded;
using rlhf_test::rows::strided;
using rlhf_test::rows::strided_mut;

template <class T>
constexpr double tolerance = std::is_same_v<T, float> ? 5e-7 : 1e-9;

/// One compute_gae call on the device against the CPU kernel (same T, same inputs).
template <class T, class M>
void check_gae(std::mt19937& rng, index_t rows, index_t cols, index_t pad, const rlhf::gae_options& options,
               bool with_bootstrap, bool in_place) {
    const index_t stride = cols + pad;
    const auto n = static_cast<std::size_t>(rows * stride);
    const std::vector<T> r = rounded<T>(normal_values(rng, n)), v = rounded<T>(normal_values(rng, n));
    const std::vector<T> boot = rounded<T>(normal_values(rng, static_cast<std::size_t>(rows)));
    const std::vector<int> m = random_mask(rng, rows, cols, stride, options.masking == rlhf::gae_masking::valid_range);

    std::vector<T> want_adv(n), want_ret(n);
    const rlhf::view<T, 1> host_boot{boot.data(), {rows}};
    if (with_bootstrap)
        rlhf::compute_gae(strided(r.data(), rows, cols, stride), strided(v.data(), rows, cols, stride),
                          strided(m.data(), rows, cols, stride), host_boot,
                          strided_mut(want_adv.data(), rows, cols, stride),
                          strided_mut(want_ret.data(), rows, cols, stride), options);
    else
        rlhf::compute_gae(strided(r.data(), rows, cols, stride), strided(v.data(), rows, cols, stride),
                          strided(m.data(), rows, cols, stride), strided_mut(want_adv.data(), rows, cols, stride),
                          strided_mut(want_ret.data(), rows, cols, stride), options);

    device_array<T> dr(r), dv(v), dboot(boot), dadv(n), dret(n);
    const device_mask<M> dm(m);
    dadv.poison();
    dret.poison();
    T* adv = in_place ? dr.data() : dadv.data();  // in place: advantages over rewards, returns over values
    T* ret = in_place ? dv.data() : dret.data();
    const auto rv = strided<T>(dr.data(), rows, cols, stride), vv = strided<T>(dv.data(), rows, cols, stride);
    const auto mv = strided<M>(dm.device.data(), rows, cols, stride);
    if (with_bootstrap)
        rlhf::cuda::compute_gae(rv, vv, mv, rlhf::view<T, 1>{dboot.data(), {rows}},
                                strided_mut(adv, rows, cols, stride), strided_mut(ret, rows, cols, stride), options,
                                cudaStream_t{});
    else
        rlhf::cuda::compute_gae(rv, vv, mv, strided_mut(adv, rows, cols, stride), strided_mut(ret, rows, cols, stride),
                                options, cudaStream_t{});
    const std::string what = std::string(rlhf::to_string(options.masking)) + " B=" + std::to_string(rows) +
                             " T=" + std::to_string(cols) + " pad=" + std::to_string(pad) +
                             " gamma=" + std::to_string(options.gamma) + " lambda=" + std::to_string(options.lambda) +
                             (with_bootstrap ? " bootstrap" : "") + (in_place ? " in place" : "");
    check_close((in_place ? dr : dadv).download(), want_adv, rows, cols, stride, tolerance<T>, !in_place,
                what + " advantages");
    check_close((in_place ? dv : dret).download(), want_ret, rows, cols, stride, tolerance<T>, !in_place,
                what + " returns");
}

/// One compute_gae_time_major call on the device against the CPU kernel in double on the same
/// T-rounded inputs (see the file comment).
template <class T, class M>
void check_time_major(std::mt19937& rng, index_t steps, index_t envs, index_t pad, double flag_probability,
                      const rlhf::time_major_gae_options& options, bool in_place) {
    const index_t stride = envs + pad;
    const auto n = static_cast<std::size_t>(steps * stride);
    const std::vector<T> r = rounded<T>(normal_values(rng, n)), v = rounded<T>(normal_values(rng, n));
    const std::vector<T> fin = rounded<T>(normal_values(rng, n));
    const std::vector<T> next = rounded<T>(normal_values(rng, static_cast<std::size_t>(envs)));
    std::bernoulli_distribution flag(flag_probability);
    std::vector<int> term(n), trunc(n);
    for (std::size_t i = 0; i < n; ++i) {
        term[i] = flag(rng) ? 1 : 0;
        trunc[i] = flag(rng) ? 1 : 0;
    }

    const auto as_double = [](const std::vector<T>& x) { return std::vector<double>(x.begin(), x.end()); };
    const std::vector<double> rd = as_double(r), vd = as_double(v), fd = as_double(fin), nd = as_double(next);
    std::vector<double> want_adv(n), want_ret(n);
    rlhf::compute_gae_time_major(strided(rd.data(), steps, envs, stride), strided(vd.data(), steps, envs, stride),
                                 strided(term.data(), steps, envs, stride), strided(trunc.data(), steps, envs, stride),
                                 strided(fd.data(), steps, envs, stride), rlhf::view<double, 1>{nd.data(), {envs}},
                                 strided_mut(want_adv.data(), steps, envs, stride),
                                 strided_mut(want_ret.data(), steps, envs, stride), options);

    device_array<T> dr(r), dv(v), dfin(fin), dnext(next), dadv(n), dret(n);
    const device_mask<M> dterm(term), dtrunc(trunc);
    dadv.poison();
    dret.poison();
    T* adv = in_place ? dr.data() : dadv.data();
    rlhf::cuda::compute_gae_time_major(
        strided<T>(dr.data(), steps, envs, stride), strided<T>(dv.data(), steps, envs, stride),
        strided<M>(dterm.device.data(), steps, envs, stride), strided<M>(dtrunc.device.data(), steps, envs, stride),
        strided<T>(dfin.data(), steps, envs, stride), rlhf::view<T, 1>{dnext.data(), {envs}},
        strided_mut(adv, steps, envs, stride), strided_mut(dret.data(), steps, envs, stride), options, cudaStream_t{});
    const std::string what = "time-major T=" + std::to_string(steps) + " N=" + std::to_string(envs) +
                             " pad=" + std::to_string(pad) + " flags=" + std::to_string(flag_probability) +
                             " gamma=" + std::to_string(options.gamma) + " lambda=" + std::to_string(options.lambda) +
                             (in_place ? " in place" : "");
    check_close((in_place ? dr : dadv).download(), want_adv, steps, envs, stride, tolerance<T>, !in_place,
                what + " advantages");
    check_close(dret.download(), want_ret, steps, envs, stride, tolerance<T>, true, what + " returns");
}

struct discounts {
    double gamma, lambda;
};
constexpr discounts discount_cases[] = {{1.0, 0.95}, {0.9, 0.5}, {1.0, 1.0}, {0.99, 0.0}, {0.0, 0.95}};

using rlhf_test::rows::float_bool, rlhf_test::rows::double_uint8, rlhf_test::rows::float_int32,
    rlhf_test::rows::double_float;

}  // namespace

TEST_SUITE("cuda") {
    TEST_CASE_TEMPLATE("cuda compute_gae equals the CPU kernel: every masking / bootstrap / T from 1 to 8195", Types,
                       float_bool, double_uint8, float_int32, double_float) {
        using T = typename Types::value;
        using M = typename Types::mask;
        std::mt19937 rng(20240611);
        constexpr std::pair<index_t, index_t> shapes[] = {{1, 1},    {3, 1},    {6, 7},    {6, 33},   {6, 255},
                                                          {7, 1024}, {6, 1025}, {6, 2049}, {6, 4100}, {3, 8195}};
        int trial = 0;
        for (const auto& [rows, cols] : shapes) {
            for (const auto masking :
                 {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
                for (const bool with_bootstrap : {false, true}) {
                    const discounts d = discount_cases[trial % 5];
                    const index_t pad = trial % 2 == 0 ? 0 : 3;
                    ++trial;
                    check_gae<T, M>(rng, rows, cols, pad, {.gamma = d.gamma, .lambda = d.lambda, .masking = masking},
                                    with_bootstrap, false);
                }
            }
        }
    }

    TEST_CASE_TEMPLATE("cuda compute_gae in place over rewards and values", T, float, double) {
        std::mt19937 rng(5);
        for (const auto masking :
             {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
            check_gae<T, std::uint8_t>(rng, 6, 2049, 5, {.gamma = 0.99, .lambda = 0.95, .masking = masking}, true,
                                       true);
            check_gae<T, std::uint8_t>(rng, 6, 100, 0, {.gamma = 1.0, .lambda = 1.0, .masking = masking}, false, true);
        }
    }

    TEST_CASE("cuda compute_gae valid_range over rows with holes: skip_masked at valid positions and 0 at holes") {
        // The CPU refuses holes under valid_range; the device does not read values, so it documents
        // what it computes instead.
        std::mt19937 rng(3);
        const index_t rows = 6, cols = 1500;
        const auto n = static_cast<std::size_t>(rows * cols);
        const std::vector<double> r = normal_values(rng, n), v = normal_values(rng, n);
        const std::vector<int> m = random_mask(rng, rows, cols, cols, false);
        std::vector<double> want_adv(n), want_ret(n);
        rlhf::compute_gae(strided(r.data(), rows, cols, cols), strided(v.data(), rows, cols, cols),
                          strided(m.data(), rows, cols, cols), strided_mut(want_adv.data(), rows, cols, cols),
                          strided_mut(want_ret.data(), rows, cols, cols), {.masking = rlhf::gae_masking::skip_masked});
        for (std::size_t i = 0; i < n; ++i)
            if (m[i] == 0) want_adv[i] = want_ret[i] = 0.0;
        device_array<double> dr(r), dv(v), dadv(n), dret(n);
        const device_mask<std::uint8_t> dm(m);
        dadv.poison();
        dret.poison();
        rlhf::cuda::compute_gae(
            strided<double>(dr.data(), rows, cols, cols), strided<double>(dv.data(), rows, cols, cols),
            strided<std::uint8_t>(dm.device.data(), rows, cols, cols), strided_mut(dadv.data(), rows, cols, cols),
            strided_mut(dret.data(), rows, cols, cols), {.masking = rlhf::gae_masking::valid_range}, cudaStream_t{});
        check_close(dadv.download(), want_adv, rows, cols, cols, tolerance<double>, true,
                    "valid_range with holes advantages");
        check_close(dret.download(), want_ret, rows, cols, cols, tolerance<double>, true,
                    "valid_range with holes returns");
    }

    TEST_CASE("cuda compute_gae checks shapes and options on the host and accepts empty batches") {
        device_array<double> r(12), v(12), adv(12), ret(12), boot(3);
        device_array<std::uint8_t> m(12);
        const auto V = [](const auto* p, index_t rows, index_t cols) {
            return rlhf::view<std::remove_cv_t<std::remove_pointer_t<decltype(p)>>>{p, {rows, cols}};
        };
        const rlhf::mut_view<double> a{adv.data(), {3, 4}}, re{ret.data(), {3, 4}};
        const auto expect = [](auto&& call, rlhf::error_kind kind, std::string_view argument) {
            try {
                call();
                FAIL("expected rlhf::error naming " << argument);
            } catch (const rlhf::error& e) {
                CHECK(e.kind() == kind);
                CHECK(e.argument() == argument);
                CHECK(e.function() == "rlhf::cuda::compute_gae");
            }
        };
        expect([&] { rlhf::cuda::compute_gae(V(r.data(), 3, 4), V(v.data(), 3, 4), V(m.data(), 4, 3), a, re, {}, {}); },
               rlhf::error_kind::shape, "mask");
        expect(
            [&] {
                rlhf::cuda::compute_gae(V(r.data(), 3, 4), V(v.data(), 3, 4), V(m.data(), 3, 4),
                                        rlhf::view<double, 1>{boot.data(), {2}}, a, re, {}, {});
            },
            rlhf::error_kind::shape, "bootstrap_values");
        expect(
            [&] {
                rlhf::cuda::compute_gae(V(r.data(), 3, 4), V(v.data(), 3, 4), V(m.data(), 3, 4), a, re, {.gamma = 1.5},
                                        {});
            },
            rlhf::error_kind::config, "gamma");
        expect(
            [&] {
                rlhf::cuda::compute_gae(V(r.data(), 3, 4), V(v.data(), 3, 4), V(m.data(), 3, 4), a, re,
                                        {.masking = static_cast<rlhf::gae_masking>(7)}, {});
            },
            rlhf::error_kind::config, "masking");
        expect(
            [&] {
                rlhf::cuda::compute_gae(V(r.data(), 3, 4), V(v.data(), 3, 4), V(m.data(), 3, 4),
                                        rlhf::mut_view<double>{r.data() + 1, {3, 4}, {4, 1}}, re, {}, {});
            },
            rlhf::error_kind::value, "advantages");
        // An empty batch launches nothing.
        CHECK_NOTHROW(rlhf::cuda::compute_gae(V(r.data(), 0, 4), V(v.data(), 0, 4), V(m.data(), 0, 4),
                                              rlhf::mut_view<double>{adv.data(), {0, 4}},
                                              rlhf::mut_view<double>{ret.data(), {0, 4}}, {}, {}));
        CHECK_NOTHROW(rlhf::cuda::compute_gae(V(r.data(), 3, 0), V(v.data(), 3, 0), V(m.data(), 3, 0),
                                              rlhf::mut_view<double>{adv.data(), {3, 0}},
                                              rlhf::mut_view<double>{ret.data(), {3, 0}}, {}, {}));
        cuda_ok(cudaDeviceSynchronize());
    }

    TEST_CASE_TEMPLATE("cuda compute_gae_time_major equals the CPU kernel: flags / long T / many environments", Types,
                       float_bool, double_uint8, float_int32, double_float) {
        using T = typename Types::value;
        using M = typename Types::mask;
        std::mt19937 rng(77);
        constexpr std::pair<index_t, index_t> shapes[] = {{1, 1},    {1, 37},   {7, 3},     {64, 1}, {300, 5},
                                                          {4100, 2}, {513, 64}, {128, 100}, {9, 33}, {2, 300}};
        const rlhf::time_major_gae_options options[] = {
            {.gamma = 0.99, .lambda = 0.95}, {.gamma = 1.0, .lambda = 1.0}, {.gamma = 0.9, .lambda = 0.0}};
        int trial = 0;
        for (const auto& [steps, envs] : shapes) {
            for (const double flags : {0.0, 0.05, 0.5}) {
                check_time_major<T, M>(rng, steps, envs, trial % 2 == 0 ? 0 : 3, flags, options[trial % 3], false);
                ++trial;
            }
        }
        check_time_major<T, M>(rng, 1000, 40, 2, 0.02, options[0], true);  // in place over the rewards
    }

    TEST_CASE("cuda compute_gae_time_major checks shapes and options on the host") {
        device_array<float> r(6), v(6), fin(6), next(2), adv(6), ret(6);
        device_array<std::uint8_t> flags(6);
        const auto F = [](const float* p) { return rlhf::view<float>{p, {3, 2}}; };
        const rlhf::view<std::uint8_t> f{flags.data(), {3, 2}};
        const auto call = [&](rlhf::view<float, 1> next_values, rlhf::mut_view<float> advantages,
                              const rlhf::time_major_gae_options& o) {
            rlhf::cuda::compute_gae_time_major(F(r.data()), F(v.data()), f, f, F(fin.data()), next_values, advantages,
                                               rlhf::mut_view<float>{ret.data(), {3, 2}}, o, cudaStream_t{});
        };
        const rlhf::mut_view<float> a{adv.data(), {3, 2}};
        const auto expect = [](auto&& run, std::string_view argument) {
            try {
                run();
                FAIL("expected rlhf::error naming " << argument);
            } catch (const rlhf::error& e) {
                CHECK(e.argument() == argument);
                CHECK(e.function() == "rlhf::cuda::compute_gae_time_major");
            }
        };
        expect([&] { call(rlhf::view<float, 1>{next.data(), {1}}, a, {}); }, "next_values");
        expect([&] { call(rlhf::view<float, 1>{next.data(), {2}}, a, {.lambda = 2.0}); }, "lambda");
        expect(
            [&] {
                call(rlhf::view<float, 1>{next.data(), {2}}, rlhf::mut_view<float>{v.data(), {3, 2}}, {});
            },
            "advantages");
        CHECK_NOTHROW(call(rlhf::view<float, 1>{next.data(), {2}}, a, {}));
        cuda_ok(cudaDeviceSynchronize());
    }
}
