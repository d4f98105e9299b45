// The rlhf::cuda outcome estimators against the CPU kernels, on seeded random data: GRPO (std
// normalisation on and off, unbiased and biased std, two epsilons, singletons raw_score and zero),
// Dr.GRPO, RLOO, OPO (token-level and per-sequence), reverse returns (every masking, γ = 1, 0.9,
// 0), REINFORCE++ and REINFORCE++-baseline (both broadcasts, batch and per-row whitening,
// zero_masked on and off, biased variance, clamped variance, small_sample zero_variance and skip)
// and ReMax; T = 1 to 2100 (several chunks of the row scan), rows with no valid token, groups of
// one row, unused ids, ids in any order, strided rows, in place, float and double, four mask types.
// Every output and the workspace are poisoned (every byte 0xFF: NaN) before each call.
//
// Tolerances, relative to max(1, |expected|). Both sides accumulate in double and round to T once;
// the doubles differ by the order of the additions (block reductions and scans instead of loops),
// a few ulp of double over at most ~2000 terms of size < 5, far below float's ulp:
//   - float 5e-7 (about 4 float ulps at 1: one rounding of nearly equal doubles differs by 1 ulp);
//     outputs whitened from float returns 2e-6: a return that rounds to the neighbouring float
//     moves its whitened value by ulp(G)/σ ≈ 2^-23·|G|/σ, |G|/σ < 8 here;
//   - double 1e-10 (worst case n·eps·Σ|terms| ≈ 2100·1.1e-16·10^4 ≈ 2e-9 before whitening's
//     division by σ ≈ 20; in practice ~1e-14).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/cuda_test_support.cuh"
#include "cuda/row_test_data.cuh"
#include "rlhf/cuda/outcome_advantages.cuh"
#include "rlhf/kernels/outcome_advantages.hpp"

namespace {

using rlhf::index_t;
using rlhf_test::cuda_ok;
using rlhf_test::device_array;
namespace rows = rlhf_test::rows;

template <class T>
constexpr double tolerance = std::is_same_v<T, float> ? 5e-7 : 1e-10;
template <class T>
constexpr double whitened_tolerance = std::is_same_v<T, float> ? 2e-6 : 1e-10;

/// Group ids in [0, groups), in random order (some groups unused, some of one row).
std::vector<std::int64_t> random_ids(std::mt19937& rng, index_t b, index_t groups) {
    std::uniform_int_distribution<std::int64_t> pick(0, groups - 1);
    std::vector<std::int64_t> ids(static_cast<std::size_t>(b));
    for (auto& id : ids) id = pick(rng);
    return ids;
}

/// Inputs of one call: `[B, T]` rewards (stride T + pad), mask, ids, `[B]` scores and baselines.
template <class T>
struct inputs {
    index_t b, cols, pad, stride, groups;
    std::size_t n;
    std::vector<T> rewards, scores, baselines;
    std::vector<int> mask;
    std::vector<std::int64_t> ids;
};

template <class T>
inputs<T> make_inputs(std::mt19937& rng, index_t b, index_t cols, index_t pad, index_t groups) {
    inputs<T> in{b, cols, pad, cols + pad, groups, static_cast<std::size_t>(b * (cols + pad)), {}, {}, {}, {}, {}};
    in.rewards = rows::rounded<T>(rows::normal_values(rng, in.n));
    in.scores = rows::rounded<T>(rows::normal_values(rng, static_cast<std::size_t>(b), 2.0));
    in.baselines = rows::rounded<T>(rows::normal_values(rng, static_cast<std::size_t>(b), 2.0));
    in.mask = rows::random_mask(rng, b, cols, in.stride);
    in.ids = random_ids(rng, b, groups);
    return in;
}

std::string shape_of(index_t b, index_t cols, index_t pad, index_t groups) {
    return " B=" + std::to_string(b) + " T=" + std::to_string(cols) + " pad=" + std::to_string(pad) +
           " G=" + std::to_string(groups);
}

/// A `[B, T]` group estimator (`Estimator` = 0 GRPO, 1 Dr.GRPO, 2 RLOO, 3 OPO) on the device
/// against the CPU kernel; `in_place` writes the advantages over the rewards.
template <class T, class M, class Options>
void check_group_tokens(std::mt19937& rng, int estimator, index_t b, index_t cols, index_t pad, index_t groups,
                        const Options& options, bool in_place, const std::string& name) {
    const inputs<T> in = make_inputs<T>(rng, b, cols, pad, groups);
    const auto rv = rows::strided(in.rewards.data(), b, cols, in.stride);
    const auto mv = rows::strided(in.mask.data(), b, cols, in.stride);
    const rlhf::view<std::int64_t, 1> iv{in.ids.data(), {b}};
    std::vector<T> want(in.n);
    const auto wv = rows::strided_mut(want.data(), b, cols, in.stride);
    if constexpr (std::is_same_v<Options, rlhf::grpo_options>) rlhf::compute_grpo_advantages(rv, mv, iv, wv, options);
    if constexpr (std::is_same_v<Options, rlhf::dr_grpo_options>)
        rlhf::compute_dr_grpo_advantages(rv, mv, iv, wv, options);
    if constexpr (std::is_same_v<Options, rlhf::rloo_options>) rlhf::compute_rloo_advantages(rv, mv, iv, wv, options);
    if constexpr (std::is_same_v<Options, rlhf::opo_options>) rlhf::compute_opo_advantages(rv, mv, iv, wv, options);

    device_array<T> dr(in.rewards), dadv(in.n);
    device_array<std::int64_t> dids(in.ids);
    const rows::device_mask<M> dm(in.mask);
    device_array<unsigned char> workspace(rlhf::cuda::group_advantages_workspace_bytes(b));
    dadv.poison();
    workspace.poison();
    T* out = in_place ? dr.data() : dadv.data();
    const auto drv = rows::strided<T>(dr.data(), b, cols, in.stride);
    const auto dmv = rows::strided<M>(dm.device.data(), b, cols, in.stride);
    const rlhf::view<std::int64_t, 1> div{dids.data(), {b}};
    const auto dov = rows::strided_mut(out, b, cols, in.stride);
    if constexpr (std::is_same_v<Options, rlhf::grpo_options>)
        rlhf::cuda::compute_grpo_advantages(drv, dmv, div, groups, dov, workspace.data(), options, cudaStream_t{});
    if constexpr (std::is_same_v<Options, rlhf::dr_grpo_options>)
        rlhf::cuda::compute_dr_grpo_advantages(drv, dmv, div, groups, dov, workspace.data(), options, cudaStream_t{});
    if constexpr (std::is_same_v<Options, rlhf::rloo_options>)
        rlhf::cuda::compute_rloo_advantages(drv, dmv, div, groups, dov, workspace.data(), options, cudaStream_t{});
    if constexpr (std::is_same_v<Options, rlhf::opo_options>)
        rlhf::cuda::compute_opo_advantages(drv, dmv, div, groups, dov, workspace.data(), options, cudaStream_t{});
    (void)estimator;
    rows::check_close((in_place ? dr : dadv).download(), want, b, cols, in.stride, tolerance<T>, !in_place,
                      name + shape_of(b, cols, pad, groups) + (in_place ? " in place" : ""));
}

/// A `[B]` group estimator on the device against the CPU kernel.
template <class T, class Options>
void check_group_scores(std::mt19937& rng, index_t b, index_t groups, const Options& options, const std::string& name) {
    const inputs<T> in = make_inputs<T>(rng, b, 1, 0, groups);
    const rlhf::view<T, 1> sv{in.scores.data(), {b}};
    const rlhf::view<std::int64_t, 1> iv{in.ids.data(), {b}};
    std::vector<T> want(static_cast<std::size_t>(b));
    const rlhf::mut_view<T, 1> wv{want.data(), {b}};
    if constexpr (std::is_same_v<Options, rlhf::grpo_options>) rlhf::compute_grpo_advantages(sv, iv, wv, options);
    if constexpr (std::is_same_v<Options, rlhf::dr_grpo_options>) rlhf::compute_dr_grpo_advantages(sv, iv, wv, options);
    if constexpr (std::is_same_v<Options, rlhf::rloo_options>) rlhf::compute_rloo_advantages(sv, iv, wv, options);

    device_array<T> ds(in.scores), dadv(static_cast<std::size_t>(b));
    device_array<std::int64_t> dids(in.ids);
    device_array<unsigned char> workspace(rlhf::cuda::group_advantages_workspace_bytes(b));
    dadv.poison();
    workspace.poison();
    const rlhf::view<T, 1> dsv{ds.data(), {b}};
    const rlhf::view<std::int64_t, 1> div{dids.data(), {b}};
    const rlhf::mut_view<T, 1> dov{dadv.data(), {b}};
    if constexpr (std::is_same_v<Options, rlhf::grpo_options>)
        rlhf::cuda::compute_grpo_advantages(dsv, div, groups, dov, workspace.data(), options, cudaStream_t{});
    if constexpr (std::is_same_v<Options, rlhf::dr_grpo_options>)
        rlhf::cuda::compute_dr_grpo_advantages(dsv, div, groups, dov, workspace.data(), options, cudaStream_t{});
    if constexpr (std::is_same_v<Options, rlhf::rloo_options>)
        rlhf::cuda::compute_rloo_advantages(dsv, div, groups, dov, workspace.data(), options, cudaStream_t{});
    rows::check_close(dadv.download(), want, 1, b, b, tolerance<T>, false,
                      name + " scores" + shape_of(b, 1, 0, groups));
}

template <class T, class M>
void check_returns(std::mt19937& rng, index_t b, index_t cols, index_t pad, const rlhf::cumulative_return_options& o,
                   bool in_place) {
    const inputs<T> in = make_inputs<T>(rng, b, cols, pad, 1);
    std::vector<T> want(in.n);
    rlhf::compute_cumulative_returns(rows::strided(in.rewards.data(), b, cols, in.stride),
                                     rows::strided(in.mask.data(), b, cols, in.stride),
                                     rows::strided_mut(want.data(), b, cols, in.stride), o);
    device_array<T> dr(in.rewards), dret(in.n);
    const rows::device_mask<M> dm(in.mask);
    dret.poison();
    T* out = in_place ? dr.data() : dret.data();
    rlhf::cuda::compute_cumulative_returns(rows::strided<T>(dr.data(), b, cols, in.stride),
                                           rows::strided<M>(dm.device.data(), b, cols, in.stride),
                                           rows::strided_mut(out, b, cols, in.stride), o, cudaStream_t{});
    rows::check_close((in_place ? dr : dret).download(), want, b, cols, in.stride, tolerance<T>, !in_place,
                      "cumulative returns " + std::string(rlhf::to_string(o.masking)) + " gamma=" +
                          std::to_string(o.gamma) + shape_of(b, cols, pad, 1) + (in_place ? " in place" : ""));
}

std::string describe(const rlhf::whiten_options& w) {
    return std::string(" ") + std::string(rlhf::to_string(w.scope)) + (w.zero_masked ? " zero_masked" : "") + " " +
           std::string(rlhf::to_string(w.variance)) + " " + std::string(rlhf::to_string(w.epsilon_mode)) + " " +
           std::string(rlhf::to_string(w.small_sample));
}

/// The whitening variants the tests run (the device's small-sample policies only).
std::vector<rlhf::whiten_options> whiten_variants() {
    return {
        {.small_sample = rlhf::small_sample_policy::zero_variance, .zero_masked = true, .count_epsilon = 1e-8},
        {.variance = rlhf::variance_estimator::biased,
         .epsilon_mode = rlhf::whiten_epsilon::clamp_variance,
         .small_sample = rlhf::small_sample_policy::zero_variance},
        {.scope = rlhf::whiten_scope::per_row, .small_sample = rlhf::small_sample_policy::skip, .zero_masked = true}};
}

template <class T, class M>
void check_reinforce_plus_plus(std::mt19937& rng, index_t b, index_t cols, index_t pad,
                               const rlhf::reinforce_plus_plus_options& o) {
    const inputs<T> in = make_inputs<T>(rng, b, cols, pad, 1);
    std::vector<T> want_adv(in.n), want_ret(in.n);
    rlhf::compute_reinforce_plus_plus_advantages(rows::strided(in.rewards.data(), b, cols, in.stride),
                                                 rows::strided(in.mask.data(), b, cols, in.stride),
                                                 rows::strided_mut(want_adv.data(), b, cols, in.stride),
                                                 rows::strided_mut(want_ret.data(), b, cols, in.stride), o);
    device_array<T> dr(in.rewards), dadv(in.n), dret(in.n);
    const rows::device_mask<M> dm(in.mask);
    device_array<unsigned char> workspace(rlhf::cuda::reinforce_plus_plus_workspace_bytes(b, cols));
    dadv.poison();
    dret.poison();
    workspace.poison();
    rlhf::cuda::compute_reinforce_plus_plus_advantages(
        rows::strided<T>(dr.data(), b, cols, in.stride), rows::strided<M>(dm.device.data(), b, cols, in.stride),
        rows::strided_mut(dadv.data(), b, cols, in.stride), rows::strided_mut(dret.data(), b, cols, in.stride),
        workspace.data(), o, cudaStream_t{});
    const std::string what = "REINFORCE++ " + std::string(rlhf::to_string(o.masking)) +
                             " gamma=" + std::to_string(o.gamma) + describe(o.whiten) + shape_of(b, cols, pad, 1);
    rows::check_close(dret.download(), want_ret, b, cols, in.stride, tolerance<T>, true, what + " returns");
    rows::check_close(dadv.download(), want_adv, b, cols, in.stride, whitened_tolerance<T>, true, what + " advantages");
}

template <class T, class M>
void check_baseline(std::mt19937& rng, index_t b, index_t cols, index_t pad, index_t groups,
                    const rlhf::reinforce_plus_plus_baseline_options& o) {
    const inputs<T> in = make_inputs<T>(rng, b, cols, pad, groups);
    std::vector<T> want_adv(in.n), want_ret(in.n);
    rlhf::compute_reinforce_plus_plus_baseline_advantages(
        rows::strided(in.rewards.data(), b, cols, in.stride), rows::strided(in.mask.data(), b, cols, in.stride),
        rlhf::view<std::int64_t, 1>{in.ids.data(), {b}}, rows::strided_mut(want_adv.data(), b, cols, in.stride),
        rows::strided_mut(want_ret.data(), b, cols, in.stride), o);
    device_array<T> dr(in.rewards), dadv(in.n), dret(in.n);
    device_array<std::int64_t> dids(in.ids);
    const rows::device_mask<M> dm(in.mask);
    device_array<unsigned char> workspace(rlhf::cuda::reinforce_plus_plus_baseline_workspace_bytes(b, cols));
    dadv.poison();
    dret.poison();
    workspace.poison();
    rlhf::cuda::compute_reinforce_plus_plus_baseline_advantages(
        rows::strided<T>(dr.data(), b, cols, in.stride), rows::strided<M>(dm.device.data(), b, cols, in.stride),
        rlhf::view<std::int64_t, 1>{dids.data(), {b}}, groups, rows::strided_mut(dadv.data(), b, cols, in.stride),
        rows::strided_mut(dret.data(), b, cols, in.stride), workspace.data(), o, cudaStream_t{});
    const bool tiled = o.broadcast == rlhf::baseline_broadcast::tiled_score;
    const std::string what = "REINFORCE++-baseline " + std::string(rlhf::to_string(o.broadcast)) + " " +
                             std::string(rlhf::to_string(o.singleton)) + describe(o.whiten) +
                             shape_of(b, cols, pad, groups);
    rows::check_close(dret.download(), want_ret, b, cols, in.stride, tiled ? whitened_tolerance<T> : tolerance<T>, true,
                      what + " returns");
    rows::check_close(dadv.download(), want_adv, b, cols, in.stride, whitened_tolerance<T>, true, what + " advantages");
}

template <class T, class M>
void check_remax(std::mt19937& rng, index_t b, index_t cols, index_t pad, bool in_place) {
    const inputs<T> in = make_inputs<T>(rng, b, cols, pad, 1);
    std::vector<T> want_adv(in.n), want_ret(in.n);
    rlhf::compute_remax_advantages(
        rows::strided(in.rewards.data(), b, cols, in.stride), rows::strided(in.mask.data(), b, cols, in.stride),
        rlhf::view<T, 1>{in.baselines.data(), {b}}, rows::strided_mut(want_adv.data(), b, cols, in.stride),
        rows::strided_mut(want_ret.data(), b, cols, in.stride));
    device_array<T> dr(in.rewards), dbase(in.baselines), dadv(in.n), dret(in.n);
    const rows::device_mask<M> dm(in.mask);
    dadv.poison();
    dret.poison();
    T* ret = in_place ? dr.data() : dret.data();
    rlhf::cuda::compute_remax_advantages(
        rows::strided<T>(dr.data(), b, cols, in.stride), rows::strided<M>(dm.device.data(), b, cols, in.stride),
        rlhf::view<T, 1>{dbase.data(), {b}}, rows::strided_mut(dadv.data(), b, cols, in.stride),
        rows::strided_mut(ret, b, cols, in.stride), cudaStream_t{});
    const std::string what = "ReMax" + shape_of(b, cols, pad, 1) + (in_place ? " in place" : "");
    rows::check_close(dadv.download(), want_adv, b, cols, in.stride, tolerance<T>, true, what + " advantages");
    rows::check_close((in_place ? dr : dret).download(), want_ret, b, cols, in.stride, tolerance<T>, !in_place,
                      what + " returns");
}

using rlhf_test::rows::float_bool, rlhf_test::rows::double_uint8, rlhf_test::rows::float_int32,
    rlhf_test::rows::double_float;

/// (B, T, G): T = 1, B = 1, more groups than rows (singletons, unused ids), long rows.
struct group_shape {
    index_t b, cols, groups;
};
constexpr group_shape group_shapes[] = {{1, 1, 1},   {1, 9, 1},    {6, 1, 2},    {12, 7, 3},  {13, 40, 20},
                                        {64, 33, 8}, {40, 300, 5}, {600, 5, 75}, {9, 1100, 3}};

}  // namespace

TEST_SUITE("cuda") {
    TEST_CASE_TEMPLATE("cuda GRPO Dr.GRPO RLOO and OPO equal the CPU kernels: every option / singletons / T = 1", Types,
                       float_bool, double_uint8, float_int32, double_float) {
        using T = typename Types::value;
        using M = typename Types::mask;
        std::mt19937 rng(20251205);
        const rlhf::grpo_options grpo[] = {{},
                                           {.epsilon = 1e-4, .singleton = rlhf::singleton_group_policy::zero},
                                           {.epsilon = 1e-5, .std_estimator = rlhf::variance_estimator::biased},
                                           {.normalize_by_std = false},
                                           {.epsilon = 0.5,
                                            .std_estimator = rlhf::variance_estimator::biased,
                                            .singleton = rlhf::singleton_group_policy::zero}};
        int trial = 0;
        for (const auto& s : group_shapes) {
            const index_t pad = trial % 2 == 0 ? 0 : 3;
            const auto singleton =
                trial % 2 == 0 ? rlhf::singleton_group_policy::raw_score : rlhf::singleton_group_policy::zero;
            for (const auto& o : grpo) check_group_tokens<T, M>(rng, 0, s.b, s.cols, pad, s.groups, o, false, "GRPO");
            check_group_tokens<T, M>(rng, 1, s.b, s.cols, pad, s.groups, rlhf::dr_grpo_options{singleton}, false,
                                     "Dr.GRPO");
            check_group_tokens<T, M>(rng, 2, s.b, s.cols, pad, s.groups, rlhf::rloo_options{singleton}, trial % 3 == 0,
                                     "RLOO");
            check_group_tokens<T, M>(rng, 3, s.b, s.cols, pad, s.groups, rlhf::opo_options{singleton}, trial % 3 == 1,
                                     "OPO");
            for (const auto& o : grpo) check_group_scores<T>(rng, s.b, s.groups, o, "GRPO");
            check_group_scores<T>(rng, s.b, s.groups, rlhf::dr_grpo_options{singleton}, "Dr.GRPO");
            check_group_scores<T>(rng, s.b, s.groups, rlhf::rloo_options{singleton}, "RLOO");
            ++trial;
        }
        check_group_tokens<T, M>(rng, 0, 24, 50, 2, 6, rlhf::grpo_options{}, true, "GRPO");
    }

    TEST_CASE("cuda GRPO with arbitrary int64 ids mapped by dense_group_ids equals the CPU kernel on the raw ids") {
        std::mt19937 rng(31);
        const index_t b = 50, cols = 20;
        const auto n = static_cast<std::size_t>(b * cols);
        const std::vector<double> r = rows::normal_values(rng, n);
        const std::vector<int> m = rows::random_mask(rng, b, cols, cols);
        std::vector<std::int64_t> ids(static_cast<std::size_t>(b));
        const std::int64_t raw[] = {-9000000000, 17, 3, 1LL << 60, -1, 17000};
        for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = raw[(i * 7 + i / 3) % 6];
        std::vector<double> want(n);
        rlhf::compute_grpo_advantages(rows::strided(r.data(), b, cols, cols), rows::strided(m.data(), b, cols, cols),
                                      rlhf::view<std::int64_t, 1>{ids.data(), {b}},
                                      rows::strided_mut(want.data(), b, cols, cols));
        std::vector<std::int64_t> dense(ids.size());
        const index_t groups = rlhf::cuda::dense_group_ids(rlhf::view<std::int64_t, 1>{ids.data(), {b}},
                                                           rlhf::mut_view<std::int64_t, 1>{dense.data(), {b}});
        CHECK(groups == 6);
        device_array<double> dr(r), dadv(n);
        device_array<std::int64_t> dids(dense);
        const rows::device_mask<std::uint8_t> dm(m);
        device_array<unsigned char> workspace(rlhf::cuda::group_advantages_workspace_bytes(b));
        dadv.poison();
        workspace.poison();
        rlhf::cuda::compute_grpo_advantages(
            rows::strided<double>(dr.data(), b, cols, cols),
            rows::strided<std::uint8_t>(dm.device.data(), b, cols, cols), rlhf::view<std::int64_t, 1>{dids.data(), {b}},
            groups, rows::strided_mut(dadv.data(), b, cols, cols), workspace.data(), {}, cudaStream_t{});
        rows::check_close(dadv.download(), want, b, cols, cols, tolerance<double>, false, "GRPO dense ids");
    }

    TEST_CASE_TEMPLATE("cuda cumulative returns and ReMax equal the CPU kernels: every masking / T up to 2100", Types,
                       float_bool, double_uint8, float_int32, double_float) {
        using T = typename Types::value;
        using M = typename Types::mask;
        std::mt19937 rng(99);
        constexpr std::pair<index_t, index_t> shapes[] = {{1, 1}, {3, 1}, {6, 9}, {7, 1024}, {6, 1025}, {4, 2100}};
        int trial = 0;
        for (const auto& [b, cols] : shapes) {
            for (const auto masking : {rlhf::return_masking::reset_at_masked, rlhf::return_masking::zero_masked,
                                       rlhf::return_masking::skip_masked}) {
                for (const double gamma : {1.0, 0.9, 0.0}) {
                    check_returns<T, M>(rng, b, cols, trial % 2 == 0 ? 0 : 3, {.gamma = gamma, .masking = masking},
                                        trial % 5 == 4);
                    ++trial;
                }
            }
            check_remax<T, M>(rng, b, cols, trial % 2 == 0 ? 0 : 2, trial % 3 == 0);
            ++trial;
        }
    }

    TEST_CASE_TEMPLATE("cuda REINFORCE++ and REINFORCE++-baseline equal the CPU kernels: every broadcast and whitening",
                       Types, float_bool, double_uint8, float_int32, double_float) {
        using T = typename Types::value;
        using M = typename Types::mask;
        std::mt19937 rng(4242);
        constexpr group_shape shapes[] = {{1, 1, 1}, {6, 1, 2}, {12, 7, 3}, {30, 200, 9}, {8, 1500, 2}};
        int trial = 0;
        for (const auto& s : shapes) {
            for (const auto& w : whiten_variants()) {
                const index_t pad = trial % 2 == 0 ? 0 : 3;
                const auto masking = trial % 3 == 0   ? rlhf::return_masking::reset_at_masked
                                     : trial % 3 == 1 ? rlhf::return_masking::zero_masked
                                                      : rlhf::return_masking::skip_masked;
                check_reinforce_plus_plus<T, M>(
                    rng, s.b, s.cols, pad, {.gamma = trial % 2 == 0 ? 1.0 : 0.95, .masking = masking, .whiten = w});
                for (const auto broadcast :
                     {rlhf::baseline_broadcast::tiled_score, rlhf::baseline_broadcast::cumulative_returns})
                    check_baseline<T, M>(rng, s.b, s.cols, pad, s.groups,
                                         {.singleton = trial % 2 == 0 ? rlhf::singleton_group_policy::raw_score
                                                                      : rlhf::singleton_group_policy::zero,
                                          .broadcast = broadcast,
                                          .whiten = w});
                ++trial;
            }
        }
    }

    TEST_CASE("cuda GRPO gives NaN advantages to a row whose group id is outside 0 ... G-1") {
        const index_t b = 4, cols = 3, groups = 2;
        const std::vector<double> r{1, 0, 0, 2, 0, 0, 3, 0, 0, 5, 0, 0};
        const std::vector<int> m(12, 1);
        const std::vector<std::int64_t> ids{0, 0, 7, -1};
        device_array<double> dr(r), dadv(12);
        device_array<std::int64_t> dids(ids);
        const rows::device_mask<std::uint8_t> dm(m);
        device_array<unsigned char> workspace(rlhf::cuda::group_advantages_workspace_bytes(b));
        dadv.poison();
        rlhf::cuda::compute_dr_grpo_advantages(
            rows::strided<double>(dr.data(), b, cols, cols),
            rows::strided<std::uint8_t>(dm.device.data(), b, cols, cols), rlhf::view<std::int64_t, 1>{dids.data(), {b}},
            groups, rows::strided_mut(dadv.data(), b, cols, cols), workspace.data(), {}, cudaStream_t{});
        const std::vector<double> got = dadv.download();
        for (index_t t = 0; t < cols; ++t) {
            CHECK(got[static_cast<std::size_t>(t)] == doctest::Approx(-0.5));
            CHECK(got[static_cast<std::size_t>(cols + t)] == doctest::Approx(0.5));
            CHECK(std::isnan(got[static_cast<std::size_t>(2 * cols + t)]));
            CHECK(std::isnan(got[static_cast<std::size_t>(3 * cols + t)]));
        }
    }

    TEST_CASE("cuda outcome estimators check shapes and options on the host") {
        device_array<double> r(12), adv(12), ret(12), scores(3);
        device_array<std::int64_t> ids(3);
        device_array<std::uint8_t> m(12);
        device_array<unsigned char> workspace(4096);
        const rlhf::view<double> rv{r.data(), {3, 4}};
        const rlhf::view<std::uint8_t> mv{m.data(), {3, 4}};
        const rlhf::view<std::int64_t, 1> iv{ids.data(), {3}};
        const rlhf::mut_view<double> av{adv.data(), {3, 4}}, retv{ret.data(), {3, 4}};
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
        constexpr std::string_view grpo = "rlhf::cuda::compute_grpo_advantages";
        constexpr std::string_view rpp = "rlhf::cuda::compute_reinforce_plus_plus_advantages";
        constexpr std::string_view baseline = "rlhf::cuda::compute_reinforce_plus_plus_baseline_advantages";
        void* ws = workspace.data();
        expect([&] { rlhf::cuda::compute_grpo_advantages(rv, mv, iv, 0, av, ws, {}, {}); }, rlhf::error_kind::value,
               grpo, "groups");
        expect(
            [&] {
                rlhf::cuda::compute_grpo_advantages(rv, mv, rlhf::view<std::int64_t, 1>{ids.data(), {2}}, 2, av, ws, {},
                                                    {});
            },
            rlhf::error_kind::shape, grpo, "group_ids");
        expect([&] { rlhf::cuda::compute_grpo_advantages(rv, mv, iv, 2, av, nullptr, {}, {}); },
               rlhf::error_kind::value, grpo, "workspace");
        expect([&] { rlhf::cuda::compute_grpo_advantages(rv, mv, iv, 2, av, ws, {.epsilon = 0.0}, {}); },
               rlhf::error_kind::config, grpo, "epsilon");
        expect([&] { rlhf::cuda::compute_grpo_advantages(rv, mv, iv, 2, av, ws, rlhf::grpo_preset::openrlhf(), {}); },
               rlhf::error_kind::config, grpo, "singleton");
        expect(
            [&] {
                rlhf::cuda::compute_grpo_advantages(rv, rlhf::view<std::uint8_t>{m.data(), {4, 3}}, iv, 2, av, ws, {},
                                                    {});
            },
            rlhf::error_kind::shape, grpo, "mask");
        expect([&] { rlhf::cuda::compute_reinforce_plus_plus_advantages(rv, mv, av, retv, ws, {}, {}); },
               rlhf::error_kind::config, rpp, "small_sample");
        expect(
            [&] {
                rlhf::cuda::compute_reinforce_plus_plus_advantages(
                    rv, mv, av, rlhf::mut_view<double>{adv.data(), {3, 4}}, ws,
                    {.whiten = {.small_sample = rlhf::small_sample_policy::skip}}, {});
            },
            rlhf::error_kind::value, rpp, "advantages");
        expect(
            [&] {
                rlhf::cuda::compute_reinforce_plus_plus_advantages(
                    rv, mv, av, retv, ws, {.gamma = 1.5, .whiten = {.small_sample = rlhf::small_sample_policy::skip}},
                    {});
            },
            rlhf::error_kind::config, rpp, "gamma");
        expect(
            [&] {
                rlhf::cuda::compute_reinforce_plus_plus_baseline_advantages(
                    rv, mv, iv, 2, av, retv, ws,
                    {.broadcast = static_cast<rlhf::baseline_broadcast>(9),
                     .whiten = {.small_sample = rlhf::small_sample_policy::skip}},
                    {});
            },
            rlhf::error_kind::config, baseline, "broadcast");
        expect(
            [&] {
                rlhf::cuda::compute_remax_advantages(rv, mv, rlhf::view<double, 1>{scores.data(), {2}}, av, retv, {});
            },
            rlhf::error_kind::shape, "rlhf::cuda::compute_remax_advantages", "reward_baselines");
        expect(
            [&] {
                rlhf::cuda::compute_cumulative_returns(rv, mv, retv, {.masking = static_cast<rlhf::return_masking>(9)},
                                                       {});
            },
            rlhf::error_kind::config, "rlhf::cuda::compute_cumulative_returns", "masking");
        // Empty batches launch nothing.
        CHECK_NOTHROW(rlhf::cuda::compute_grpo_advantages(
            rlhf::view<double>{r.data(), {0, 4}}, rlhf::view<std::uint8_t>{m.data(), {0, 4}},
            rlhf::view<std::int64_t, 1>{ids.data(), {0}}, 0, rlhf::mut_view<double>{adv.data(), {0, 4}}, ws, {}, {}));
        CHECK_NOTHROW(rlhf::cuda::compute_cumulative_returns(rlhf::view<double>{r.data(), {3, 0}},
                                                             rlhf::view<std::uint8_t>{m.data(), {3, 0}},
                                                             rlhf::mut_view<double>{ret.data(), {3, 0}}, {}, {}));
        cuda_ok(cudaDeviceSynchronize());
    }
}
