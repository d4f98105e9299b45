#include <doctest/doctest.h>

#include <torch/autograd.h>
#include <torch/types.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/libtorch/kl_loss.hpp"
#include "rlhf/libtorch/value_loss.hpp"
#include "support/loss_option_sets.hpp"
#include "support/torch_test_helpers.hpp"

using rlhf_test::expect_error;
using rlhf_test::kl_option_sets;
using rlhf_test::tolerance;
using rlhf_test::value_option_sets;

namespace {

// [4, 9]: a mask with an interior hole, an empty row and left padding.
torch::Tensor test_mask() {
    const auto m = rlhf_test::mask_pattern(4, 9).hole(0, 2, 3).empty_row(1).left_padding(2, 1).values<std::uint8_t>();
    return rlhf_test::tensor_of(m, {4, 9}).to(torch::kBool);
}

struct value_inputs {
    torch::Tensor values, old_values, returns, mask;
};

value_inputs random_value_inputs(torch::Dtype dtype, uint64_t seed) {
    torch::manual_seed(seed);
    const auto opts = torch::TensorOptions().dtype(dtype);
    const torch::Tensor old = torch::randn({4, 9}, opts);
    return {old + 0.4 * torch::randn({4, 9}, opts), old, old + 3.0 * torch::randn({4, 9}, opts), test_mask()};
}

void check_close(const torch::Tensor& a, const torch::Tensor& b, double tol) {
    const double scale = 1.0 + b.abs().max().item<double>();
    CHECK((a - b).abs().max().item<double>() <= tol * scale);
}

}  // namespace

TEST_CASE("LibTorch autograd conventions the kernels reproduce" * doctest::test_suite("gradient")) {
    // Binary torch::max splits the gradient in halves on a tie; clamp passes it on its bounds.
    const torch::Tensor a = torch::tensor({1.0, 2.0, 3.0}, torch::kFloat64).requires_grad_(true);
    const torch::Tensor b = torch::tensor({1.0, 1.0, 4.0}, torch::kFloat64).requires_grad_(true);
    torch::max(a, b).sum().backward();
    CHECK(a.grad()[0].item<double>() == 0.5);
    CHECK(b.grad()[0].item<double>() == 0.5);
    CHECK(a.grad()[1].item<double>() == 1.0);
    CHECK(b.grad()[2].item<double>() == 1.0);
    const torch::Tensor x = torch::tensor({-1.0, 0.0, 1.0, 2.0}, torch::kFloat64).requires_grad_(true);
    const torch::Tensor lo = torch::full({4}, -1.0, torch::kFloat64), hi = torch::full({4}, 1.0, torch::kFloat64);
    torch::clamp(x, lo, hi).sum().backward();
    CHECK(x.grad()[0].item<double>() == 1.0);
    CHECK(x.grad()[2].item<double>() == 1.0);
    CHECK(x.grad()[3].item<double>() == 0.0);

    // A tie between the clipped and the unclipped error with V_clip != V: V = 0.75, V_old = 0,
    // c = 0.25 (V_clip = 0.25), R = 0.5: both errors are 0.25² exactly. autograd: ½·ψ'(e1)·½.
    const torch::Tensor v = torch::tensor({{0.75}}, torch::kFloat64).requires_grad_(true);
    const torch::Tensor old = torch::zeros({1, 1}, torch::kFloat64), r = torch::full({1, 1}, 0.5, torch::kFloat64);
    const torch::Tensor m = torch::ones({1, 1}, torch::kBool);
    rlhf::libtorch::torch_ops::value_loss(v, old, r, m, {.clip_range = 0.25}).loss.backward();
    CHECK(v.grad().item<double>() == 0.125);
    const torch::Tensor v2 = v.detach().clone().requires_grad_(true);
    rlhf::libtorch::value_loss(v2, old, r, m, {.clip_range = 0.25}).loss.backward();
    CHECK(v2.grad().item<double>() == 0.125);
}

TEST_CASE_TEMPLATE("libtorch::value_loss: kernel Function == kernel == composed (loss / gradient / stats)" *
                       doctest::test_suite("gradient"),
                   T, float, double) {
    const auto in = random_value_inputs(rlhf::libtorch::dtype_of<T>(), 7);
    for (const auto& options : value_option_sets()) {
        const torch::Tensor v1 = in.values.clone().requires_grad_(true);
        const auto kernel = rlhf::libtorch::value_loss(v1, in.old_values, in.returns, in.mask, options);
        (2.0 * kernel.loss).backward();
        const torch::Tensor v2 = in.values.clone().requires_grad_(true);
        const auto composed = rlhf::libtorch::torch_ops::value_loss(v2, in.old_values, in.returns, in.mask, options);
        (2.0 * composed.loss).backward();
        CHECK((kernel.loss.scalar_type() == rlhf::libtorch::dtype_of<T>()));
        CHECK((composed.loss.scalar_type() == rlhf::libtorch::dtype_of<T>()));
        CHECK(kernel.loss.item().toDouble() ==
              doctest::Approx(composed.loss.item().toDouble()).epsilon(tolerance<T>()));
        check_close(v1.grad(), v2.grad(), tolerance<T>());
        CHECK(kernel.stats.clip_fraction == doctest::Approx(composed.stats.clip_fraction).epsilon(1e-12));
        CHECK(kernel.stats.valid_tokens == composed.stats.valid_tokens);
        CHECK(kernel.stats.value_error == doctest::Approx(composed.stats.value_error).epsilon(1e-6));
        CHECK(kernel.stats.explained_variance == doctest::Approx(composed.stats.explained_variance).epsilon(1e-6));

        // The Function is the kernel: same loss, gradient = 2 × the kernel's gradient.
        std::vector<T> grad(static_cast<std::size_t>(in.values.numel()));
        const torch::Tensor mask_u8 = in.mask.to(torch::kUInt8);
        const auto direct = rlhf::value_loss(
            rlhf::libtorch::as_view<T>(in.values, "t", "v"), rlhf::libtorch::as_view<T>(in.old_values, "t", "o"),
            rlhf::libtorch::as_view<T>(in.returns, "t", "r"), rlhf::libtorch::as_view<std::uint8_t>(mask_u8, "t", "m"),
            rlhf::make_mut_view(grad.data(), 4, 9), {}, options);
        CHECK(kernel.loss.item().toDouble() == static_cast<double>(static_cast<T>(direct.loss)));
        const torch::Tensor expected = 2.0 * torch::from_blob(grad.data(), {4, 9}, rlhf::libtorch::dtype_of<T>());
        CHECK(torch::equal(v1.grad(), expected));
    }
}

TEST_CASE_TEMPLATE("libtorch::kl_loss: kernel Function == composed / with and without importance weights" *
                       doctest::test_suite("gradient"),
                   T, float, double) {
    torch::manual_seed(3);
    const auto opts = torch::TensorOptions().dtype(rlhf::libtorch::dtype_of<T>());
    const torch::Tensor lp = -1.5 * torch::randn({4, 9}, opts).abs();
    const torch::Tensor ref = lp + 8.0 * (torch::rand({4, 9}, opts) - 0.5);
    const torch::Tensor old = lp + 0.3 * torch::randn({4, 9}, opts);
    const torch::Tensor mask = test_mask().to(torch::kInt64);
    for (const bool weighted : {false, true}) {
        for (const auto& options : kl_option_sets(0.01)) {
            const torch::Tensor l1 = lp.clone().requires_grad_(true);
            const auto kernel = weighted ? rlhf::libtorch::kl_loss(l1, ref, old, mask, options)
                                         : rlhf::libtorch::kl_loss(l1, ref, mask, options);
            kernel.loss.backward();
            const torch::Tensor l2 = lp.clone().requires_grad_(true);
            const auto composed = weighted ? rlhf::libtorch::torch_ops::kl_loss(l2, ref, old, mask, options)
                                           : rlhf::libtorch::torch_ops::kl_loss(l2, ref, mask, options);
            composed.loss.backward();
            CHECK(kernel.loss.item().toDouble() ==
                  doctest::Approx(composed.loss.item().toDouble()).epsilon(tolerance<T>()));
            // OpenRLHF's float32 log-ratio: autograd rounds the gradient to float32 on its way back
            // through the cast; the kernel keeps it in T.
            check_close(l1.grad(), l2.grad(), options.kl.float32_log_ratio ? 1e-6 : tolerance<T>());
            CHECK(kernel.stats.kl_mean == doctest::Approx(composed.stats.kl_mean).epsilon(1e-5));
            CHECK(kernel.stats.clamp_fraction == composed.stats.clamp_fraction);
            CHECK(kernel.stats.ratio_mean == doctest::Approx(composed.stats.ratio_mean).epsilon(1e-5));
        }
    }
}

TEST_CASE("libtorch losses without requires_grad / and with a strided (column-range) input" *
          doctest::test_suite("unit")) {
    const auto in = random_value_inputs(torch::kFloat64, 2);
    const auto plain = rlhf::libtorch::value_loss(in.values, in.old_values, in.returns, in.mask);
    CHECK_FALSE(plain.loss.requires_grad());
    // A response column range of a wider [B, P + T] tensor: row stride P + T, no copy.
    const torch::Tensor wide = torch::cat({torch::zeros({4, 3}, torch::kFloat64), in.values}, 1);
    const auto sliced = rlhf::libtorch::value_loss(wide.slice(1, 3, 12), in.old_values, in.returns, in.mask);
    CHECK(sliced.loss.item().toDouble() == plain.loss.item().toDouble());
}

TEST_CASE("libtorch value and KL losses: errors name the argument" * doctest::test_suite("unit")) {
    const auto in = random_value_inputs(torch::kFloat64, 5);
    const auto argument_of = [](auto call) { return expect_error(call); };
    auto e = argument_of(
        [&] { (void)rlhf::libtorch::value_loss(in.values, in.old_values.to(torch::kFloat32), in.returns, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "old_values");
    e = argument_of([&] {
        (void)rlhf::libtorch::torch_ops::value_loss(in.values, in.old_values.to(torch::kFloat32), in.returns, in.mask);
    });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "old_values");
    e = argument_of(
        [&] { (void)rlhf::libtorch::value_loss(in.values.to(torch::kInt64), in.old_values, in.returns, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "values");
    e = argument_of(
        [&] { (void)rlhf::libtorch::value_loss(in.values, in.old_values, in.returns.slice(1, 0, 5), in.mask); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "returns");
    e = argument_of([&] {
        (void)rlhf::libtorch::torch_ops::value_loss(in.values, in.old_values, in.returns.slice(1, 0, 5), in.mask);
    });
    CHECK(e.argument() == "returns");
    const torch::Tensor meta = torch::empty({4, 9}, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kMeta));
    e = argument_of([&] { (void)rlhf::libtorch::value_loss(in.values, meta, in.returns, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::device);
    CHECK(e.argument() == "old_values");
    e = argument_of([&] { (void)rlhf::libtorch::torch_ops::value_loss(in.values, meta, in.returns, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::device);
    CHECK(e.argument() == "old_values");
    torch::Tensor nan_values = in.values.clone();
    nan_values.index_put_({1, 1}, std::numeric_limits<double>::quiet_NaN());
    for (const bool composed : {false, true}) {
        e = argument_of([&] {
            if (composed)
                (void)rlhf::libtorch::torch_ops::value_loss(nan_values, in.old_values, in.returns, in.mask);
            else
                (void)rlhf::libtorch::value_loss(nan_values, in.old_values, in.returns, in.mask);
        });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "values");
        e = argument_of([&] {
            const torch::Tensor zeros = torch::zeros_like(in.mask);
            if (composed)
                (void)rlhf::libtorch::torch_ops::value_loss(in.values, in.old_values, in.returns, zeros);
            else
                (void)rlhf::libtorch::value_loss(in.values, in.old_values, in.returns, zeros);
        });
        CHECK(e.argument() == "mask");
        e = argument_of([&] {
            const torch::Tensor half = in.mask.to(torch::kFloat64) * 0.5;
            if (composed)
                (void)rlhf::libtorch::torch_ops::value_loss(in.values, in.old_values, in.returns, half);
            else
                (void)rlhf::libtorch::value_loss(in.values, in.old_values, in.returns, half);
        });
        CHECK(e.argument() == "mask");
        e = argument_of([&] {
            const torch::Tensor half = in.mask.to(torch::kFloat16);
            if (composed)
                (void)rlhf::libtorch::torch_ops::value_loss(in.values, in.old_values, in.returns, half);
            else
                (void)rlhf::libtorch::value_loss(in.values, in.old_values, in.returns, half);
        });
        CHECK(e.kind() == rlhf::error_kind::dtype);
        CHECK(e.argument() == "mask");
        e = argument_of([&] {
            if (composed)
                (void)rlhf::libtorch::torch_ops::value_loss(in.values, in.old_values, in.returns, in.mask,
                                                            {.clip_range = -1.0});
            else
                (void)rlhf::libtorch::value_loss(in.values, in.old_values, in.returns, in.mask, {.clip_range = -1.0});
        });
        CHECK(e.kind() == rlhf::error_kind::config);
        CHECK(e.argument() == "options.clip_range");
        e = argument_of([&] {
            if (composed)
                (void)rlhf::libtorch::torch_ops::kl_loss(in.values, nan_values, in.mask);
            else
                (void)rlhf::libtorch::kl_loss(in.values, nan_values, in.mask);
        });
        CHECK(e.argument() == "ref_log_probs");
        e = argument_of([&] {
            if (composed)
                (void)rlhf::libtorch::torch_ops::kl_loss(in.values, in.returns, in.old_values.to(torch::kFloat32),
                                                         in.mask);
            else
                (void)rlhf::libtorch::kl_loss(in.values, in.returns, in.old_values.to(torch::kFloat32), in.mask);
        });
        CHECK(e.kind() == rlhf::error_kind::dtype);
        CHECK(e.argument() == "old_log_probs");
        e = argument_of([&] {
            const torch::Tensor far = in.values - 800.0;
            if (composed)
                (void)rlhf::libtorch::torch_ops::kl_loss(in.values, in.returns, far, in.mask);
            else
                (void)rlhf::libtorch::kl_loss(in.values, in.returns, far, in.mask);
        });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "log_probs");
    }
}
