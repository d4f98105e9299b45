// rlhf::cuda::policy_loss against the CPU kernel rlhf::policy_loss (tolerances: see
// cuda_loss_test_support.cuh).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_loss_test_support.cuh"
#include "cuda/cuda_test_support.cuh"
#include "fuzz/loss_stat_fields.hpp"
#include "rlhf/cuda/policy_loss.cuh"
#include "rlhf/kernels/policy_loss.hpp"
#include "support/test_helpers.hpp"

namespace {

using rlhf_test::close;
using rlhf_test::compare_matrix;
using rlhf_test::device_array;
using rlhf_test::device_matrix;
using rlhf_test::host_matrix;
using rlhf_test::problem_shape;
using rlhf_test::sum_tolerance;
using rlhf_test::token_tolerance;

/// One problem on the CPU and on the device (every output poisoned first), compared.
template <class T, class M>
void check_policy(std::uint64_t seed, const problem_shape& sh, const rlhf::policy_loss_options& o,
                  bool want_outputs = true) {
    CAPTURE(seed);
    CAPTURE(sh.rows);
    CAPTURE(sh.cols);
    CAPTURE(sh.pad);
    std::mt19937_64 gen(seed);
    // Every argument has its own row stride when the shape is padded.
    const int stride = sh.cols + sh.pad;
    const int mask_stride = sh.pad > 0 ? stride + 3 : stride;
    const int out_stride = sh.pad > 0 ? sh.cols + 2 * sh.pad : sh.cols;
    const auto lp = rlhf_test::random_matrix<T>(gen, sh.rows, sh.cols, stride, -2.0, 1.0);
    auto old = lp;
    std::normal_distribution<double> noise(0.0, sh.sigma);
    for (int b = 0; b < sh.rows; ++b)
        for (int t = 0; t < sh.cols; ++t) old.at(b, t) = static_cast<T>(static_cast<double>(lp.at(b, t)) + noise(gen));
    const auto adv = rlhf_test::random_matrix<T>(gen, sh.rows, sh.cols, stride, 0.0, 1.0);
    const auto mask = rlhf_test::random_mask<M>(gen, sh.rows, sh.cols, mask_stride, sh.p_valid, sh.empty_every);

    host_matrix<T> grad(sh.rows, sh.cols, out_stride, T{0}), tokens(sh.rows, sh.cols, out_stride, T{0});
    const auto cpu = rlhf::policy_loss(rlhf_test::host_view<T>(lp), rlhf_test::host_view<T>(old),
                                       rlhf_test::host_view<T>(adv), rlhf_test::host_view<M>(mask),
                                       want_outputs ? rlhf_test::host_mut_view<T>(grad) : rlhf::mut_view<T>{},
                                       want_outputs ? rlhf_test::host_mut_view<T>(tokens) : rlhf::mut_view<T>{}, o);

    const device_matrix<T, T> d_lp(lp), d_old(old), d_adv(adv);
    const device_matrix<M, rlhf_test::mask_storage<M>> d_mask(mask);
    device_matrix<T, T> d_grad(sh.rows, sh.cols, out_stride), d_tokens(sh.rows, sh.cols, out_stride);
    device_array<double> result(rlhf::cuda::policy_result_size);
    device_array<double> workspace(rlhf::cuda::policy_loss_workspace_bytes(sh.rows, sh.cols) / sizeof(double));
    d_grad.array.poison();
    d_tokens.array.poison();
    result.poison();
    workspace.poison();
    rlhf::cuda::policy_loss(
        d_lp.view(), d_old.view(), d_adv.view(), d_mask.view(), want_outputs ? d_grad.mut_view() : rlhf::mut_view<T>{},
        want_outputs ? d_tokens.mut_view() : rlhf::mut_view<T>{}, o, result.data(), workspace.data(), cudaStream_t{});
    const std::vector<double> got = result.download();
    const std::vector<double> want = rlhf_test::loss_and_stat_values(cpu);
    for (int i = 0; i < rlhf::cuda::policy_result_size; ++i) {
        INFO((i == 0 ? "loss" : rlhf_test::policy_stat_names[i - 1])
             << ": device " << got[static_cast<std::size_t>(i)] << ", CPU " << want[static_cast<std::size_t>(i)]);
        if (i == rlhf::cuda::policy_result_ratio_max)
            CHECK(close(got[static_cast<std::size_t>(i)], want[static_cast<std::size_t>(i)], token_tolerance<T>));
        else if (i >= rlhf::cuda::policy_result_valid_tokens)
            CHECK(got[static_cast<std::size_t>(i)] == want[static_cast<std::size_t>(i)]);
        else
            CHECK(close(got[static_cast<std::size_t>(i)], want[static_cast<std::size_t>(i)], sum_tolerance,
                        sum_tolerance));
    }
    if (!want_outputs) {  // nothing written to the skipped outputs
        const auto g = d_grad.array.download();
        const auto tl = d_tokens.array.download();
        CHECK(std::all_of(g.begin(), g.end(), [](T x) { return rlhf_test::poisoned(x); }));
        CHECK(std::all_of(tl.begin(), tl.end(), [](T x) { return rlhf_test::poisoned(x); }));
        return;
    }
    // The sequence ratio's gradient is a row sum (another order) spread over the row's tokens.
    const bool sequence = o.level == rlhf::importance_ratio_level::sequence;
    compare_matrix("grad_log_probs", d_grad.array.download(), grad, token_tolerance<T>, sequence ? sum_tolerance : 0.0);
    compare_matrix("token_losses", d_tokens.array.download(), tokens, token_tolerance<T>,
                   sequence ? sum_tolerance : 0.0);
}

using family = rlhf_test::loss_family<rlhf::policy_loss_options>;

/// The option families: this loss's options, then the aggregation families.
std::vector<family> families() {
    using agg = rlhf::loss_aggregation;
    std::vector<family> out = {
        {"plain clip", {}, 0.3},
        {"clip higher", {.clip_low = 0.1, .clip_high = 0.28}, 0.3},
        {"dual clip", {.dual_clip = 3.0}, 1.2},
        {"verl clamp and dual clip", {.dual_clip = 3.0, .log_ratio_min = -0.2, .log_ratio_max = 0.25}, 0.5},
        {"ratio cap", {.ratio_cap = 1.1}, 0.5},
        {"loss cap", {.loss_cap = 0.5}, 0.8},
        {"every cap", {.dual_clip = 2.0, .ratio_cap = 2.5, .loss_cap = 1.5, .log_ratio_max = 1.5}, 1.0},
        {"mask log-ratio and skip threshold", {.mask_log_ratio = true, .skip_threshold = 0.5}, 0.3},
        {"skip threshold not reached", {.skip_threshold = 50.0}, 0.3},
        {"ratio threshold exceeded", {.ratio_threshold = 0.5}, 0.3},
        {"ratio threshold not reached", {.ratio_threshold = 2.0}, 0.3},
        {"sequence ratio",
         {.level = rlhf::importance_ratio_level::sequence, .aggregation = {.mode = agg::seq_mean_token_mean}},
         0.3},
        {"sequence ratio with threshold",
         {.ratio_threshold = 0.5, .level = rlhf::importance_ratio_level::sequence},
         0.3},
    };
    const auto aggregation = rlhf_test::aggregation_families<rlhf::policy_loss_options>();
    out.insert(out.end(), aggregation.begin(), aggregation.end());
    return out;
}

}  // namespace

TEST_SUITE("cuda") {
    TEST_CASE("cuda policy_loss: every option family equals the CPU kernel in float with a float mask") {
        rlhf_test::check_families(1000, families(), [](auto... a) { check_policy<float, float>(a...); });
    }
    TEST_CASE("cuda policy_loss: every option family equals the CPU kernel in double with a bool mask") {
        rlhf_test::check_families(2000, families(), [](auto... a) { check_policy<double, bool>(a...); });
    }
    TEST_CASE("cuda policy_loss: integer masks and skipped outputs") {
        const problem_shape sh{13, 700, 4, 0.4, 0.7, 3};
        check_policy<float, std::int64_t>(3000, sh, {.dual_clip = 3.0});
        check_policy<double, std::uint8_t>(3001, sh, {.level = rlhf::importance_ratio_level::sequence});
        check_policy<float, std::int32_t>(3002, sh, {.ratio_threshold = 0.5}, false);
        check_policy<double, double>(3003, sh, {.clip_high = 0.28}, false);
    }
    TEST_CASE("cuda policy_loss: large batches 512x4096") {
        const problem_shape sh{512, 4096, 0, 0.5, 0.8, 7};
        check_policy<float, float>(4000, sh, {});
        check_policy<float, bool>(4001, sh,
                                  {.dual_clip = 3.0,
                                   .log_ratio_min = -20.0,
                                   .log_ratio_max = 20.0,
                                   .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean}});
        check_policy<double, float>(4002, {512, 4096, 8, 0.5, 0.8, 7},
                                    {.level = rlhf::importance_ratio_level::sequence,
                                     .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_sum}});
        check_policy<double, double>(4003, {300, 4000, 0, 0.5, 0.8, 0}, {.ratio_threshold = 0.9});
    }
    TEST_CASE("cuda policy_loss: an empty mask with a global count gives loss 0 and gradient 0") {
        const problem_shape sh{6, 50, 2, 0.3, 0.0, 0};
        check_policy<float, float>(5000, sh, {.aggregation = {.global_token_count = 10.0}});
        check_policy<double, bool>(
            5001, sh,
            {.aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean, .global_sequence_count = 4.0}});
    }
    TEST_CASE(
        "cuda policy_loss: a zero aggregation divisor gives a zero loss and gradient where the CPU raises an error") {
        const rlhf::index_t rows = 3, cols = 8;
        const std::vector<float> zeros(static_cast<std::size_t>(rows * cols), 0.0f);
        CHECK_THROWS_AS(
            rlhf::policy_loss(rlhf::make_view(zeros.data(), rows, cols), rlhf::make_view(zeros.data(), rows, cols),
                              rlhf::make_view(zeros.data(), rows, cols), rlhf::make_view(zeros.data(), rows, cols)),
            rlhf::error);
        rlhf_test::check_zero_divisor_gives_zero<float>(
            rows, cols, rlhf::cuda::policy_result_size, rlhf::cuda::policy_loss_workspace_bytes(rows, cols),
            rlhf::cuda::policy_result_loss, rlhf::cuda::policy_result_valid_tokens,
            {rlhf::loss_aggregation::token_mean, rlhf::loss_aggregation::seq_mean_token_mean},
            [](rlhf::view<float> v, rlhf::mut_view<float> grad, rlhf::loss_aggregation mode, double* result, void* ws) {
                rlhf::cuda::policy_loss(v, v, v, v, grad, rlhf::mut_view<float>{}, {.aggregation = {.mode = mode}},
                                        result, ws, cudaStream_t{});
            });
    }
    TEST_CASE("cuda policy_loss: B = 0 and T = 0 write the result") {
        rlhf_test::check_empty_shapes_write_zero_result(
            rlhf::cuda::policy_result_size, rlhf::cuda::policy_loss_workspace_bytes(4, 0),
            [](rlhf::view<float> v, double* result, void* ws) {
                rlhf::cuda::policy_loss(v, v, v, v, {}, {}, {.aggregation = {.global_token_count = 1.0}}, result, ws,
                                        cudaStream_t{});
            });
    }
    TEST_CASE("cuda policy_loss: shapes and options and buffers are checked on the host naming the argument") {
        device_array<float> x(20);
        device_array<double> result(rlhf::cuda::policy_result_size);
        device_array<double> workspace(rlhf::cuda::policy_loss_workspace_bytes(4, 5) / sizeof(double));
        const rlhf::view<float> v(x.data(), {4, 5});
        const rlhf::view<float> w(x.data(), {5, 4});
        const auto call = [&](rlhf::view<float> old, rlhf::mut_view<float> grad, const rlhf::policy_loss_options& o,
                              double* r,
                              void* ws) { rlhf::cuda::policy_loss(v, old, v, v, grad, {}, o, r, ws, cudaStream_t{}); };
        rlhf_test::check_error([&] { call(w, {}, {}, result.data(), workspace.data()); }, rlhf::error_kind::shape,
                               "old_log_probs");
        rlhf_test::check_error(
            [&] {
                call(v, rlhf::mut_view<float>(x.data(), {5, 4}), {}, result.data(), workspace.data());
            },
            rlhf::error_kind::shape, "grad_log_probs");
        rlhf_test::check_error([&] { call(v, {}, {.dual_clip = 0.5}, result.data(), workspace.data()); },
                               rlhf::error_kind::config, "options.dual_clip");
        rlhf_test::check_error([&] { call(v, {}, {.aggregation = {.dp_size = 0.0}}, result.data(), workspace.data()); },
                               rlhf::error_kind::config, "options.aggregation.dp_size");
        rlhf_test::check_error([&] { call(v, {}, {}, nullptr, workspace.data()); }, rlhf::error_kind::value, "result");
        rlhf_test::check_error([&] { call(v, {}, {}, result.data(), nullptr); }, rlhf::error_kind::value, "workspace");
    }
}
