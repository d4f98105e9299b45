// rlhf::cuda::token_kl and shape_rewards_from_logprobs against the CPU kernels, on seeded random
// data: every estimator with and without each clamp and the float32 log-ratio, every reward slot,
// both device empty-row policies, mask_kl, score clipping (symmetric and range),
// divide_kl_by_length; T = 1, empty rows, single-token rows, holes, strided rows, in place,
// float and double, four mask types. Every output is poisoned (NaN) before each call.
//
// Tolerances, relative to max(1, |expected|): both sides evaluate the same formulas in T on the
// same T inputs; they differ by nvcc's contraction of a·b + c into FMA (the k3 series, the
// clamps are exact) and by the device's exp/expm1 (within 1-2 ulp of the host's), so a few ulp of
// T: float 2e-6 (about 16 float ulps at 1), double 1e-12 (thousands of double ulps: generous; the
// differences seen are a few ulp). Rewards add the clipped score (exact in T) to −β·kl/n.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/cuda_test_support.cuh"
#include "cuda/row_test_data.cuh"
#include "rlhf/cuda/reward_shaping.cuh"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"

namespace {

using rlhf::index_t;
using rlhf_test::cuda_ok;
using rlhf_test::device_array;
namespace rows = rlhf_test::rows;

template <class T>
constexpr double tolerance = std::is_same_v<T, float> ? 2e-6 : 1e-12;

/// Every `kl_options` variant the tests run: each estimator plain, with a log-ratio clamp, a value
/// clamp, both, and the float32 log-ratio.
std::vector<rlhf::kl_options> kl_variants() {
    std::vector<rlhf::kl_options> out;
    for (const auto e :
         {rlhf::kl_estimator::k1, rlhf::kl_estimator::abs, rlhf::kl_estimator::k2, rlhf::kl_estimator::k3}) {
        out.push_back({.estimator = e});
        out.push_back({.estimator = e, .log_ratio_clamp = 0.7});
        out.push_back({.estimator = e, .value_clamp = 0.3});
        out.push_back({.estimator = e, .log_ratio_clamp = 1.5, .value_clamp = 0.5});
        out.push_back({.estimator = e, .value_clamp = 10.0, .float32_log_ratio = true});
    }
    return out;
}

std::string describe(const rlhf::kl_options& o) {
    return std::string(rlhf::to_string(o.estimator)) +
           (o.log_ratio_clamp ? " ratio clamp " + std::to_string(*o.log_ratio_clamp) : "") +
           (o.value_clamp ? " value clamp " + std::to_string(*o.value_clamp) : "") +
           (o.float32_log_ratio ? " float32" : "");
}

/// Log-probs of a policy and a reference (negative, log-ratios of a few units).
template <class T>
std::pair<std::vector<T>, std::vector<T>> log_probs(std::mt19937& rng, std::size_t n) {
    std::vector<double> lp = rows::normal_values(rng, n, 1.5, -2.0), ref = rows::normal_values(rng, n, 1.5, -2.0);
    for (std::size_t i = 0; i < n; ++i) {
        lp[i] = -std::abs(lp[i]);
        ref[i] = -std::abs(ref[i]);
    }
    return {rows::rounded<T>(lp), rows::rounded<T>(ref)};
}

/// One token_kl call (masked or not) on the device against the CPU kernel.
template <class T, class M>
void check_token_kl(std::mt19937& rng, index_t b, index_t cols, index_t pad, const rlhf::kl_options& options,
                    bool masked, bool in_place) {
    const index_t stride = cols + pad;
    const auto n = static_cast<std::size_t>(b * stride);
    const auto [lp, ref] = log_probs<T>(rng, n);
    const std::vector<int> m = rows::random_mask(rng, b, cols, stride);
    std::vector<T> want(n);
    if (masked)
        rlhf::token_kl(rows::strided(lp.data(), b, cols, stride), rows::strided(ref.data(), b, cols, stride),
                       rows::strided(m.data(), b, cols, stride), rows::strided_mut(want.data(), b, cols, stride),
                       options);
    else
        rlhf::token_kl(rows::strided(lp.data(), b, cols, stride), rows::strided(ref.data(), b, cols, stride),
                       rows::strided_mut(want.data(), b, cols, stride), options);

    device_array<T> dlp(lp), dref(ref), dkl(n);
    const rows::device_mask<M> dm(m);
    dkl.poison();
    T* out = in_place ? dlp.data() : dkl.data();
    const auto lv = rows::strided<T>(dlp.data(), b, cols, stride), rv = rows::strided<T>(dref.data(), b, cols, stride);
    if (masked)
        rlhf::cuda::token_kl(lv, rv, rows::strided<M>(dm.device.data(), b, cols, stride),
                             rows::strided_mut(out, b, cols, stride), options, cudaStream_t{});
    else
        rlhf::cuda::token_kl(lv, rv, rows::strided_mut(out, b, cols, stride), options, cudaStream_t{});
    const std::string what = "token_kl " + describe(options) + " B=" + std::to_string(b) +
                             " T=" + std::to_string(cols) + " pad=" + std::to_string(pad) + (masked ? " masked" : "") +
                             (in_place ? " in place" : "");
    rows::check_close((in_place ? dlp : dkl).download(), want, b, cols, stride, tolerance<T>, !in_place, what);
}

/// One shape_rewards_from_logprobs call on the device against the CPU kernel.
template <class T, class M>
void check_shaping(std::mt19937& rng, index_t b, index_t cols, index_t pad, const rlhf::reward_shaping_options& options,
                   bool in_place) {
    const index_t stride = cols + pad;
    const auto n = static_cast<std::size_t>(b * stride);
    const auto [lp, ref] = log_probs<T>(rng, n);
    const std::vector<T> scores = rows::rounded<T>(rows::normal_values(rng, static_cast<std::size_t>(b), 3.0));
    const std::vector<int> m = rows::random_mask(rng, b, cols, stride);
    std::vector<T> want(n);
    rlhf::shape_rewards_from_logprobs(rows::strided(lp.data(), b, cols, stride),
                                      rows::strided(ref.data(), b, cols, stride),
                                      rows::strided(m.data(), b, cols, stride), rlhf::view<T, 1>{scores.data(), {b}},
                                      rows::strided_mut(want.data(), b, cols, stride), options);

    device_array<T> dlp(lp), dref(ref), dscores(scores), drewards(n);
    const rows::device_mask<M> dm(m);
    drewards.poison();
    T* out = in_place ? dref.data() : drewards.data();
    rlhf::cuda::shape_rewards_from_logprobs(
        rows::strided<T>(dlp.data(), b, cols, stride), rows::strided<T>(dref.data(), b, cols, stride),
        rows::strided<M>(dm.device.data(), b, cols, stride), rlhf::view<T, 1>{dscores.data(), {b}},
        rows::strided_mut(out, b, cols, stride), options, cudaStream_t{});
    const std::string what =
        "shape_rewards_from_logprobs " + std::string(rlhf::to_string(options.slot)) + " " +
        std::string(rlhf::to_string(options.empty_rows)) + " " + describe(options.kl) +
        (options.mask_kl ? " mask_kl" : "") + (options.score_clip ? " clip" : "") +
        (options.score_clip_range ? " clip range" : "") + (options.divide_kl_by_length ? " divide by length" : "") +
        " beta=" + std::to_string(options.kl_coef) + " B=" + std::to_string(b) + " T=" + std::to_string(cols) +
        " pad=" + std::to_string(pad) + (in_place ? " in place" : "");
    rows::check_close((in_place ? dref : drewards).download(), want, b, cols, stride, tolerance<T>, !in_place, what);
}

using rlhf_test::rows::float_bool, rlhf_test::rows::double_uint8, rlhf_test::rows::float_int32,
    rlhf_test::rows::double_float;

constexpr std::pair<index_t, index_t> shapes[] = {{1, 1}, {3, 1}, {6, 2}, {7, 33}, {12, 300}, {6, 1031}};

}  // namespace

TEST_SUITE("cuda") {
    TEST_CASE_TEMPLATE("cuda token_kl equals the CPU kernel: every estimator and clamp / masked and unmasked", Types,
                       float_bool, double_uint8, float_int32, double_float) {
        using T = typename Types::value;
        using M = typename Types::mask;
        std::mt19937 rng(20251205);
        int trial = 0;
        for (const auto& options : kl_variants()) {
            for (const auto& [b, cols] : shapes) {
                const index_t pad = trial % 2 == 0 ? 0 : 5;
                check_token_kl<T, M>(rng, b, cols, pad, options, trial % 3 != 0, false);
                ++trial;
            }
        }
        check_token_kl<T, M>(rng, 6, 500, 2, {.estimator = rlhf::kl_estimator::k3}, true, true);
        check_token_kl<T, M>(rng, 6, 500, 0, {.estimator = rlhf::kl_estimator::k2}, false, true);
    }

    TEST_CASE_TEMPLATE("cuda shape_rewards_from_logprobs equals the CPU kernel: every slot and option", Types,
                       float_bool, double_uint8, float_int32, double_float) {
        using T = typename Types::value;
        using M = typename Types::mask;
        std::mt19937 rng(7);
        const std::vector<rlhf::kl_options> kls = kl_variants();
        int trial = 0;
        for (const auto slot : {rlhf::reward_slot::last_valid_token, rlhf::reward_slot::after_last_valid,
                                rlhf::reward_slot::every_valid_token, rlhf::reward_slot::first_pad_slot}) {
            for (const auto empty_rows : {rlhf::empty_row_policy::drop_score, rlhf::empty_row_policy::peer_slot}) {
                for (const auto& [b, cols] : shapes) {
                    rlhf::reward_shaping_options o{.kl_coef = trial % 4 == 3 ? 0.0 : 0.05 * (1 + trial % 3),
                                                   .slot = slot,
                                                   .mask_kl = trial % 2 == 1,
                                                   .divide_kl_by_length = trial % 5 == 2,
                                                   .empty_rows = empty_rows,
                                                   .kl = kls[static_cast<std::size_t>(trial) % kls.size()]};
                    if (trial % 3 == 1) o.score_clip = 2.0;
                    if (trial % 3 == 2) o.score_clip_range = std::pair{-1.0, 4.0};
                    check_shaping<T, M>(rng, b, cols, trial % 2 == 0 ? 0 : 3, o, false);
                    ++trial;
                }
            }
        }
        check_shaping<T, M>(rng, 6, 700, 4,
                            {.slot = rlhf::reward_slot::every_valid_token,
                             .mask_kl = true,
                             .empty_rows = rlhf::empty_row_policy::peer_slot,
                             .kl = {.estimator = rlhf::kl_estimator::k3}},
                            true);
    }

    TEST_CASE("cuda token_kl and shape_rewards_from_logprobs check shapes and options on the host") {
        device_array<double> lp(12), ref(12), out(12), scores(3);
        device_array<std::uint8_t> m(12);
        const auto V = [](const auto* p, index_t r, index_t c) {
            return rlhf::view<std::remove_cv_t<std::remove_pointer_t<decltype(p)>>>{p, {r, c}};
        };
        const rlhf::mut_view<double> o{out.data(), {3, 4}};
        const rlhf::view<double, 1> s{scores.data(), {3}};
        const auto expect = [](auto&& call, rlhf::error_kind kind, std::string_view function,
                               std::string_view argument) {
            try {
                call();
                FAIL("expected rlhf::error naming " << argument);
            } catch (const rlhf::error& e) {
                CHECK(e.kind() == kind);
                CHECK(e.argument() == argument);
                CHECK(e.function() == function);
            }
        };
        constexpr std::string_view kl_fn = "rlhf::cuda::token_kl", shape_fn = "rlhf::cuda::shape_rewards_from_logprobs";
        expect([&] { rlhf::cuda::token_kl(V(lp.data(), 3, 4), V(ref.data(), 4, 3), o, {}, {}); },
               rlhf::error_kind::shape, kl_fn, "ref_log_probs");
        expect([&] { rlhf::cuda::token_kl(V(lp.data(), 3, 4), V(ref.data(), 3, 4), V(m.data(), 3, 3), o, {}, {}); },
               rlhf::error_kind::shape, kl_fn, "mask");
        expect([&] { rlhf::cuda::token_kl(V(lp.data(), 3, 4), V(ref.data(), 3, 4), o, {.value_clamp = -1.0}, {}); },
               rlhf::error_kind::config, kl_fn, "value_clamp");
        expect(
            [&] {
                rlhf::cuda::token_kl(V(lp.data(), 3, 4), V(ref.data(), 3, 4),
                                     rlhf::mut_view<double>{lp.data() + 1, {3, 4}, {4, 1}}, {}, {});
            },
            rlhf::error_kind::value, kl_fn, "kl");
        const rlhf::reward_shaping_options ok{.empty_rows = rlhf::empty_row_policy::peer_slot};
        expect(
            [&] {
                rlhf::cuda::shape_rewards_from_logprobs(V(lp.data(), 3, 4), V(ref.data(), 3, 4), V(m.data(), 3, 4), s,
                                                        o, rlhf::reward_shaping_options{}, {});
            },
            rlhf::error_kind::config, shape_fn, "empty_rows");
        expect(
            [&] {
                rlhf::cuda::shape_rewards_from_logprobs(V(lp.data(), 3, 4), V(ref.data(), 3, 4), V(m.data(), 3, 4),
                                                        rlhf::view<double, 1>{scores.data(), {2}}, o, ok, {});
            },
            rlhf::error_kind::shape, shape_fn, "scores");
        expect(
            [&] {
                auto bad = ok;
                bad.kl_coef = -1.0;
                rlhf::cuda::shape_rewards_from_logprobs(V(lp.data(), 3, 4), V(ref.data(), 3, 4), V(m.data(), 3, 4), s,
                                                        o, bad, {});
            },
            rlhf::error_kind::config, shape_fn, "kl_coef");
        expect(
            [&] {
                auto bad = ok;
                bad.score_clip = 1.0;
                bad.score_clip_range = std::pair{0.0, 1.0};
                rlhf::cuda::shape_rewards_from_logprobs(V(lp.data(), 3, 4), V(ref.data(), 3, 4), V(m.data(), 3, 4), s,
                                                        o, bad, {});
            },
            rlhf::error_kind::config, shape_fn, "score_clip_range");
        // An empty batch launches nothing.
        CHECK_NOTHROW(rlhf::cuda::shape_rewards_from_logprobs(
            V(lp.data(), 0, 4), V(ref.data(), 0, 4), V(m.data(), 0, 4), rlhf::view<double, 1>{scores.data(), {0}},
            rlhf::mut_view<double>{out.data(), {0, 4}}, ok, {}));
        CHECK_NOTHROW(rlhf::cuda::token_kl(V(lp.data(), 3, 0), V(ref.data(), 3, 0),
                                           rlhf::mut_view<double>{out.data(), {3, 0}}, {}, {}));
        cuda_ok(cudaDeviceSynchronize());
    }
}
