// rlhf::cuda::value_loss against the CPU kernel rlhf::value_loss (tolerances: see
// cuda_loss_test_support.cuh).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/cuda_loss_test_support.cuh"
#include "cuda/cuda_test_support.cuh"
#include "fuzz/loss_stat_fields.hpp"
#include "rlhf/cuda/value_loss.cuh"
#include "rlhf/kernels/value_loss.hpp"
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
void check_value(std::uint64_t seed, const problem_shape& sh, const rlhf::value_loss_options& o,
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
    const auto values = rlhf_test::random_matrix<T>(gen, sh.rows, sh.cols, stride, 0.5, 1.0);
    auto old = values;
    std::normal_distribution<double> noise(0.0, sh.sigma);
    for (int b = 0; b < sh.rows; ++b)
        for (int t = 0; t < sh.cols; ++t)
            old.at(b, t) = static_cast<T>(static_cast<double>(values.at(b, t)) + noise(gen));
    const auto returns = rlhf_test::random_matrix<T>(gen, sh.rows, sh.cols, stride, 0.3, 1.5);
    const auto mask = rlhf_test::random_mask<M>(gen, sh.rows, sh.cols, mask_stride, sh.p_valid, sh.empty_every);

    host_matrix<T> grad(sh.rows, sh.cols, out_stride, T{0}), tokens(sh.rows, sh.cols, out_stride, T{0});
    const auto cpu = rlhf::value_loss(rlhf_test::host_view<T>(values), rlhf_test::host_view<T>(old),
                                      rlhf_test::host_view<T>(returns), rlhf_test::host_view<M>(mask),
                                      want_outputs ? rlhf_test::host_mut_view<T>(grad) : rlhf::mut_view<T>{},
                                      want_outputs ? rlhf_test::host_mut_view<T>(tokens) : rlhf::mut_view<T>{}, o);

    const device_matrix<T, T> d_values(values), d_old(old), d_returns(returns);
    const device_matrix<M, rlhf_test::mask_storage<M>> d_mask(mask);
    device_matrix<T, T> d_grad(sh.rows, sh.cols, out_stride), d_tokens(sh.rows, sh.cols, out_stride);
    device_array<double> result(rlhf::cuda::value_result_size);
    device_array<double> workspace(rlhf::cuda::value_loss_workspace_bytes(sh.rows, sh.cols) / sizeof(double));
    d_grad.array.poison();
    d_tokens.array.poison();
    result.poison();
    workspace.poison();
    rlhf::cuda::value_loss(d_values.view(), d_old.view(), d_returns.view(), d_mask.view(),
                           want_outputs ? d_grad.mut_view() : rlhf::mut_view<T>{},
                           want_outputs ? d_tokens.mut_view() : rlhf::mut_view<T>{}, o, result.data(), workspace.data(),
                           cudaStream_t{});
    const std::vector<double> got = result.download();
    const std::vector<double> want = rlhf_test::loss_and_stat_values(cpu);
    for (int i = 0; i < rlhf::cuda::value_result_size; ++i) {
        const auto k = static_cast<std::size_t>(i);
        INFO((i == 0 ? "loss" : rlhf_test::value_stat_names[i - 1]) << ": device " << got[k] << ", CPU " << want[k]);
        if (i >= rlhf::cuda::value_result_valid_tokens)
            CHECK(got[k] == want[k]);
        else
            CHECK(close(got[k], want[k], sum_tolerance, sum_tolerance));
    }
    if (!want_outputs) {  // nothing written to the skipped outputs
        const auto g = d_grad.array.download();
        const auto tl = d_tokens.array.download();
        CHECK(std::all_of(g.begin(), g.end(), [](T x) { return rlhf_test::poisoned(x); }));
        CHECK(std::all_of(tl.begin(), tl.end(), [](T x) { return rlhf_test::poisoned(x); }));
        return;
    }
    compare_matrix("grad_values", d_grad.array.download(), grad, token_tolerance<T>);
    compare_matrix("token_losses", d_tokens.array.download(), tokens, token_tolerance<T>);
}

using family = rlhf_test::loss_family<rlhf::value_loss_options>;

/// The option families: this loss's options, then the aggregation families.
std::vector<family> families() {
    std::vector<family> out = {
        {"clipped squared error", {}, 0.3},
        {"unclipped", {.clip_range = std::nullopt}, 0.3},
        {"clip range 0", {.clip_range = 0.0}, 0.3},
        {"huber", {.clip_range = 0.3, .huber_delta = 0.5}, 0.6},
        {"huber unclipped", {.clip_range = std::nullopt, .huber_delta = 1.0}, 0.6},
        {"TRL scale and coef", {.scale = 1.0, .coef = 0.1}, 0.3},
        {"coef 0", {.coef = 0.0}, 0.3},
        {"returns from advantages", {.clip_range = 0.2, .returns_from_advantages = true}, 0.3},
    };
    const auto aggregation = rlhf_test::aggregation_families<rlhf::value_loss_options>();
    out.insert(out.end(), aggregation.begin(), aggregation.end());
    return out;
}

}  // namespace

TEST_SUITE("cuda") {
    TEST_CASE("cuda value_loss: every option family equals the CPU kernel in float with a float mask") {
        rlhf_test::check_families(11000, families(), [](auto... a) { check_value<float, float>(a...); });
    }
    TEST_CASE("cuda value_loss: every option family equals the CPU kernel in double with a bool mask") {
        rlhf_test::check_families(12000, families(), [](auto... a) { check_value<double, bool>(a...); });
    }
    TEST_CASE("cuda value_loss: integer masks and skipped outputs") {
        const problem_shape sh{13, 700, 4, 0.4, 0.7, 3};
        check_value<float, std::int64_t>(13000, sh, {.huber_delta = 0.5});
        check_value<double, std::uint8_t>(13001, sh, {.returns_from_advantages = true});
        check_value<float, std::int32_t>(13002, sh, {}, false);
        check_value<double, double>(13003, sh, {.clip_range = std::nullopt}, false);
    }
    TEST_CASE("cuda value_loss: large batches 512x4096") {
        const problem_shape sh{512, 4096, 0, 0.5, 0.8, 7};
        check_value<float, float>(14000, sh, {});
        check_value<float, bool>(
            14001, sh, {.clip_range = 0.5, .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean}});
        check_value<double, float>(
            14002, {512, 4096, 8, 0.5, 0.8, 7},
            {.huber_delta = 1.0, .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_sum}});
    }
    TEST_CASE("cuda value_loss: an empty mask with a global count gives loss 0 and gradient 0") {
        const problem_shape sh{6, 50, 2, 0.3, 0.0, 0};
        check_value<float, float>(15000, sh, {.aggregation = {.global_token_count = 10.0}});
        check_value<double, bool>(
            15001, sh,
            {.aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_sum, .global_sequence_count = 4.0}});
    }
    TEST_CASE(
        "cuda value_loss: a zero aggregation divisor gives a zero loss and gradient where the CPU raises an error") {
        const rlhf::index_t rows = 3, cols = 8;
        const std::vector<double> zeros(static_cast<std::size_t>(rows * cols), 0.0);
        CHECK_THROWS_AS(
            rlhf::value_loss(rlhf::make_view(zeros.data(), rows, cols), rlhf::make_view(zeros.data(), rows, cols),
                             rlhf::make_view(zeros.data(), rows, cols), rlhf::make_view(zeros.data(), rows, cols)),
            rlhf::error);
        rlhf_test::check_zero_divisor_gives_zero<double>(
            rows, cols, rlhf::cuda::value_result_size, rlhf::cuda::value_loss_workspace_bytes(rows, cols),
            rlhf::cuda::value_result_loss, rlhf::cuda::value_result_valid_tokens,
            {rlhf::loss_aggregation::token_mean, rlhf::loss_aggregation::seq_mean_token_sum},
            [](rlhf::view<double> v, rlhf::mut_view<double> grad, rlhf::loss_aggregation mode, double* result,
               void* ws) {
                rlhf::cuda::value_loss(v, v, v, v, grad, rlhf::mut_view<double>{}, {.aggregation = {.mode = mode}},
                                       result, ws, cudaStream_t{});
            });
    }
    TEST_CASE("cuda value_loss: B = 0 and T = 0 write the result") {
        rlhf_test::check_empty_shapes_write_zero_result(
            rlhf::cuda::value_result_size, rlhf::cuda::value_loss_workspace_bytes(4, 0),
            [](rlhf::view<float> v, double* result, void* ws) {
                rlhf::cuda::value_loss(v, v, v, v, {}, {}, {.aggregation = {.global_token_count = 1.0}}, result, ws,
                                       cudaStream_t{});
            });
    }
    TEST_CASE("cuda value_loss: shapes and options and buffers are checked on the host naming the argument") {
        device_array<float> x(20);
        device_array<double> result(rlhf::cuda::value_result_size);
        device_array<double> workspace(rlhf::cuda::value_loss_workspace_bytes(4, 5) / sizeof(double));
        const rlhf::view<float> v(x.data(), {4, 5});
        const rlhf::view<float> w(x.data(), {5, 4});
        const auto call = [&](rlhf::view<float> ret, rlhf::mut_view<float> tokens, const rlhf::value_loss_options& o,
                              double* r,
                              void* ws) { rlhf::cuda::value_loss(v, v, ret, v, {}, tokens, o, r, ws, cudaStream_t{}); };
        rlhf_test::check_error([&] { call(w, {}, {}, result.data(), workspace.data()); }, rlhf::error_kind::shape,
                               "returns");
        rlhf_test::check_error(
            [&] {
                call(v, rlhf::mut_view<float>(x.data(), {5, 4}), {}, result.data(), workspace.data());
            },
            rlhf::error_kind::shape, "token_losses");
        rlhf_test::check_error([&] { call(v, {}, {.huber_delta = 0.0}, result.data(), workspace.data()); },
                               rlhf::error_kind::config, "options.huber_delta");
        rlhf_test::check_error([&] { call(v, {}, {.huber_delta = 1e-50}, result.data(), workspace.data()); },
                               rlhf::error_kind::config, "options.huber_delta");  // 0 in float
        rlhf_test::check_error([&] { call(v, {}, {.scale = 1e300}, result.data(), workspace.data()); },
                               rlhf::error_kind::config, "options.scale");  // inf in float
        rlhf_test::check_error(
            [&] { call(v, {}, {.aggregation = {.normalizer = -1.0}}, result.data(), workspace.data()); },
            rlhf::error_kind::config, "options.aggregation.normalizer");
        rlhf_test::check_error([&] { call(v, {}, {}, nullptr, workspace.data()); }, rlhf::error_kind::value, "result");
        rlhf_test::check_error([&] { call(v, {}, {}, result.data(), nullptr); }, rlhf::error_kind::value, "workspace");
    }
}
