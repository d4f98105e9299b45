#include <doctest/doctest.h>

#include <torch/autograd.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "rlhf/libtorch/policy_loss.hpp"
#include "support/torch_test_helpers.hpp"

using rlhf_test::expect_error;

namespace {

// Inputs [4, 9]: full row, right padding, left padding with a hole, an empty row; log-ratios
// spread wide enough to hit every branch; a few exact ties (log-ratio 0).
struct inputs {
    torch::Tensor lp, old, adv, mask;
};

inputs random_inputs(unsigned seed, torch::Dtype dtype) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    const int64_t rows = 4, cols = 9;
    std::vector<double> lp, old, adv;
    for (int64_t i = 0; i < rows * cols; ++i) {
        lp.push_back(-std::abs(normal(gen)) * 1.5 - 0.05);
        old.push_back(i % 7 == 3 ? lp.back() : lp.back() - 0.8 * normal(gen));
        adv.push_back(1.5 * normal(gen));
    }
    const std::vector<double> mask = rlhf_test::mask_pattern(rows, cols)
                                         .right_padding(1, 5)
                                         .left_padding(2, 2)
                                         .hole(2, 4, 5)
                                         .empty_row(3)
                                         .values<double>();
    const auto tensor = [&](const std::vector<double>& x, torch::Dtype d) {
        return rlhf_test::tensor_of(x, {rows, cols}).to(d);
    };
    return {tensor(lp, dtype), tensor(old, dtype), tensor(adv, dtype), tensor(mask, torch::kBool)};
}

struct named_options {
    const char* name;
    rlhf::policy_loss_options options;
};

std::vector<named_options> variants() {
    using rlhf::importance_ratio_level;
    using rlhf::loss_aggregation;
    return {
        {"vanilla token-mean", {}},
        {"clip-higher seq-mean-token-mean",
         {.clip_low = 0.2, .clip_high = 0.28, .aggregation = {.mode = loss_aggregation::seq_mean_token_mean}}},
        {"verl dual clip, clamp, seq-mean-token-sum",
         {.dual_clip = 3.0,
          .log_ratio_min = -20.0,
          .log_ratio_max = 20.0,
          .aggregation = {.mode = loss_aggregation::seq_mean_token_sum}}},
        {"active clamp, sum-norm",
         {.log_ratio_min = -0.5,
          .log_ratio_max = 0.6,
          .aggregation = {.mode = loss_aggregation::seq_mean_token_sum_norm}}},
        {"OpenRL ratio cap, global counts",
         {.ratio_cap = 1.5, .aggregation = {.global_token_count = 40.0, .dp_size = 2.0}}},
        {"ChatLearn", {.loss_cap = 1.0, .log_ratio_max = 0.9}},
        {"ColossalChat v2",
         {.ratio_cap = 2.0,
          .mask_log_ratio = true,
          .skip_threshold = 20.0,
          .aggregation = {.mode = loss_aggregation::seq_mean_token_mean, .global_sequence_count = 4.0}}},
        {"TRL threshold", {.ratio_threshold = 10.0}},
        {"GSPO",
         {.level = importance_ratio_level::sequence, .aggregation = {.mode = loss_aggregation::seq_mean_token_mean}}},
        {"GSPO clamp dual",
         {.dual_clip = 1.2, .log_ratio_min = -0.3, .log_ratio_max = 0.3, .level = importance_ratio_level::sequence}},
        {"everything",
         {.clip_low = 0.1,
          .clip_high = 0.3,
          .dual_clip = 2.0,
          .ratio_cap = 2.5,
          .loss_cap = 1.5,
          .log_ratio_min = -1.0,
          .log_ratio_max = 1.0}},
    };
}

void check_stats_equal(const rlhf::policy_loss_stats& a, const rlhf::policy_loss_stats& b, double tolerance) {
    CHECK(a.valid_tokens == b.valid_tokens);
    CHECK(a.clip_fraction == doctest::Approx(b.clip_fraction).epsilon(tolerance));
    CHECK(a.clip_fraction_lower == doctest::Approx(b.clip_fraction_lower).epsilon(tolerance));
    CHECK(a.approx_kl == doctest::Approx(b.approx_kl).epsilon(tolerance));
    CHECK(a.policy_kl == doctest::Approx(b.policy_kl).epsilon(tolerance));
    CHECK(a.ratio_mean == doctest::Approx(b.ratio_mean).epsilon(tolerance));
    CHECK(a.ratio_max == doctest::Approx(b.ratio_max).epsilon(tolerance));
    CHECK(a.ratio_mean_all_positions == doctest::Approx(b.ratio_mean_all_positions).epsilon(tolerance));
    CHECK(a.ratio_threshold_exceeded == b.ratio_threshold_exceeded);
    CHECK(a.skip_threshold_exceeded == b.skip_threshold_exceeded);
}

}  // namespace

TEST_CASE_TEMPLATE("libtorch: fused kernel and composed torch ops agree in loss / gradient and stats" *
                       doctest::test_suite("gradient"),
                   T, float, double) {
    const torch::Dtype dtype = rlhf::libtorch::dtype_of<T>();
    const double tolerance = rlhf_test::tolerance<T>();
    unsigned seed = 5;
    for (const auto& [name, options] : variants()) {
        const std::string variant = name;
        CAPTURE(variant);
        const inputs in = random_inputs(seed++, dtype);
        const torch::Tensor lp_fused = in.lp.clone().requires_grad_(true);
        const torch::Tensor lp_composed = in.lp.clone().requires_grad_(true);
        const rlhf::libtorch::policy_loss_output fused =
            rlhf::libtorch::cpu::policy_loss(lp_fused, in.old, in.adv, in.mask, options);
        const rlhf::libtorch::policy_loss_output composed =
            rlhf::libtorch::torch_ops::policy_loss(lp_composed, in.old, in.adv, in.mask, options);
        CHECK((fused.loss.scalar_type() == dtype));
        CHECK(fused.loss.dim() == 0);
        CHECK(fused.loss.item<double>() == doctest::Approx(composed.loss.item<double>()).epsilon(tolerance));
        check_stats_equal(fused.stats, composed.stats, tolerance);
        (3.0 * fused.loss).backward();
        (3.0 * composed.loss).backward();
        const torch::Tensor gf = lp_fused.grad().to(torch::kFloat64);
        const torch::Tensor gc = lp_composed.grad().to(torch::kFloat64);
        REQUIRE(gf.sizes() == gc.sizes());
        for (int64_t b = 0; b < gf.size(0); ++b)
            for (int64_t t = 0; t < gf.size(1); ++t) {
                CAPTURE(b);
                CAPTURE(t);
                CHECK(gf[b][t].item<double>() ==
                      doctest::Approx(gc[b][t].item<double>()).epsilon(tolerance).scale(1.0));
            }
        // The fused backward is the kernel's gradient times the incoming gradient.
        std::vector<T> g(static_cast<std::size_t>(in.lp.numel()));
        const torch::Tensor m8 = in.mask.to(torch::kUInt8);
        (void)rlhf::policy_loss(
            rlhf::libtorch::as_view<T>(in.lp, "t", "lp"), rlhf::libtorch::as_view<T>(in.old, "t", "old"),
            rlhf::libtorch::as_view<T>(in.adv, "t", "adv"), rlhf::libtorch::as_view<std::uint8_t>(m8, "t", "mask"),
            rlhf::make_mut_view(g.data(), in.lp.size(0), in.lp.size(1)), {}, options);
        const torch::Tensor expected =
            torch::tensor(std::vector<double>(g.begin(), g.end()), torch::kFloat64).reshape(gf.sizes()) * 3.0;
        CHECK(torch::allclose(gf, expected, std::is_same_v<T, float> ? 1e-6 : 1e-15, 0.0));
    }
}

TEST_CASE("libtorch: ties at kinks give the torch autograd gradient" * doctest::test_suite("gradient")) {
    // Log-ratio 0 (ratio 1 inside the clip range: s1 == s2), A = -3 with loss cap 3 (L == cap),
    // log-ratio on the clamp bound.
    const torch::Tensor lp = torch::tensor({0.0, 0.0, 0.5, 0.25}, torch::kFloat64).reshape({1, 4});
    const torch::Tensor old = torch::tensor({0.0, 0.0, 0.0, 0.25}, torch::kFloat64).reshape({1, 4});
    const torch::Tensor adv = torch::tensor({-3.0, 2.0, -1.0, 1.0}, torch::kFloat64).reshape({1, 4});
    const torch::Tensor mask = torch::ones({1, 4}, torch::kInt64);
    const rlhf::policy_loss_options options{.clip_high = 1.0, .loss_cap = 3.0, .log_ratio_max = 0.5};
    const torch::Tensor a = lp.clone().requires_grad_(true);
    const torch::Tensor b = lp.clone().requires_grad_(true);
    rlhf::libtorch::policy_loss(a, old, adv, mask, options).loss.backward();
    rlhf::libtorch::torch_ops::policy_loss(b, old, adv, mask, options).loss.backward();
    CHECK(torch::allclose(a.grad(), b.grad(), 1e-15, 0.0));
    CHECK(a.grad()[0][0].item<double>() == doctest::Approx(1.5 / 4.0));  // half of 3 on the tie with the cap
}

TEST_CASE("libtorch: the fused path accepts strided rows and every mask dtype" * doctest::test_suite("unit")) {
    const inputs in = random_inputs(42, torch::kFloat32);
    const torch::Tensor wide = torch::zeros({4, 12}, torch::kFloat32);
    wide.slice(1, 3, 12).copy_(in.lp);
    const torch::Tensor lp = wide.slice(1, 3, 12);
    REQUIRE(lp.stride(0) == 12);
    const auto reference = rlhf::libtorch::torch_ops::policy_loss(in.lp, in.old, in.adv, in.mask);
    for (const auto mask_dtype : {torch::kBool, torch::kUInt8, torch::kInt32, torch::kInt64, torch::kFloat32}) {
        const auto out = rlhf::libtorch::policy_loss(lp, in.old, in.adv, in.mask.to(mask_dtype));
        CHECK(out.loss.item<double>() == doctest::Approx(reference.loss.item<double>()).epsilon(1e-5));
        CHECK_FALSE(out.loss.requires_grad());  // no input requires grad: no gradient computed
    }
    const torch::Tensor leaf = wide.clone().requires_grad_(true);
    rlhf::libtorch::policy_loss(leaf.slice(1, 3, 12), in.old, in.adv, in.mask).loss.backward();
    CHECK(leaf.grad().slice(1, 0, 3).abs().sum().item<double>() == 0.0);
    CHECK(leaf.grad().slice(1, 3, 12).abs().sum().item<double>() > 0.0);
}

TEST_CASE("libtorch: extreme log-ratios with the verl clamp stay finite in both paths" * doctest::test_suite("unit")) {
    const torch::Tensor lp = torch::tensor({30.0, -30.0, 50.0, -50.0, 100.0, -100.0}, torch::kFloat32).reshape({1, 6});
    const torch::Tensor old = torch::zeros({1, 6}, torch::kFloat32);
    const torch::Tensor adv = torch::tensor({-1.0, 1.0, 2.0, -2.0, -0.5, 0.0}, torch::kFloat32).reshape({1, 6});
    const torch::Tensor mask = torch::ones({1, 6}, torch::kBool);
    const rlhf::policy_loss_options options{.dual_clip = 3.0, .log_ratio_min = -20.0, .log_ratio_max = 20.0};
    for (const bool fused : {true, false}) {
        const torch::Tensor x = lp.clone().requires_grad_(true);
        const auto out = fused ? rlhf::libtorch::cpu::policy_loss(x, old, adv, mask, options)
                               : rlhf::libtorch::torch_ops::policy_loss(x, old, adv, mask, options);
        out.loss.backward();
        CHECK(std::isfinite(out.loss.item<double>()));
        CHECK(torch::isfinite(x.grad()).all().item<bool>());
        CHECK(x.grad().abs().sum().item<double>() == 0.0);  // every token is outside the clamp
    }
}

TEST_CASE("libtorch: bad inputs name the argument" * doctest::test_suite("unit")) {
    const inputs in = random_inputs(3, torch::kFloat32);
    using rlhf::libtorch::policy_loss;
    namespace torch_ops = rlhf::libtorch::torch_ops;
    auto e = expect_error([&] { (void)policy_loss(in.lp.to(torch::kInt32), in.old, in.adv, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "log_probs");
    e = expect_error([&] { (void)policy_loss(in.lp, in.old.to(torch::kFloat64), in.adv, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "old_log_probs");
    e = expect_error([&] { (void)policy_loss(in.lp, in.old, in.adv.to(torch::kFloat64), in.mask); });
    CHECK(e.argument() == "advantages");
    e = expect_error([&] { (void)policy_loss(in.lp, in.old, in.adv, in.mask.to(torch::kFloat64)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)torch_ops::policy_loss(in.lp, in.old, in.adv, in.mask.to(torch::kFloat64)); });
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)torch_ops::policy_loss(in.lp.to(torch::kInt64), in.old, in.adv, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "log_probs");
    // Device: a meta tensor stands in for an accelerator one.
    const torch::Tensor meta = torch::empty({4, 9}, torch::TensorOptions().dtype(torch::kFloat32).device(torch::kMeta));
    e = expect_error([&] { (void)policy_loss(in.lp, meta, in.adv, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::device);
    CHECK(e.argument() == "old_log_probs");
    e = expect_error([&] { (void)torch_ops::policy_loss(in.lp, in.old, meta, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::device);
    CHECK(e.argument() == "advantages");
    // Shapes.
    e = expect_error([&] { (void)policy_loss(in.lp, in.old, in.adv.slice(1, 0, 8), in.mask); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "advantages");
    e = expect_error([&] { (void)torch_ops::policy_loss(in.lp, in.old, in.adv, in.mask.slice(0, 0, 2)); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)policy_loss(in.lp.reshape({36}), in.old, in.adv, in.mask); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "log_probs");
    // Values.
    for (const bool fused : {true, false}) {
        CAPTURE(fused);
        const auto call = [&](const torch::Tensor& lp, const torch::Tensor& mask, const rlhf::policy_loss_options& o) {
            return fused ? policy_loss(lp, in.old, in.adv, mask, o)
                         : torch_ops::policy_loss(lp, in.old, in.adv, mask, o);
        };
        const torch::Tensor nan_lp = in.lp.clone();
        nan_lp[3][4] = std::numeric_limits<float>::quiet_NaN();  // in the empty row: still rejected
        e = expect_error([&] { (void)call(nan_lp, in.mask, {}); });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "log_probs");
        CHECK(e.actual() == "nan at [3, 4]");
        e = expect_error([&] { (void)call(in.lp, torch::zeros_like(in.mask), {}); });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "mask");
        e = expect_error([&] { (void)call(in.lp, in.mask.to(torch::kInt32) * 2, {}); });
        CHECK(e.argument() == "mask");
        e = expect_error([&] { (void)call(in.lp, in.mask, {.clip_low = -0.2}); });
        CHECK(e.kind() == rlhf::error_kind::config);
        CHECK(e.argument() == "options.clip_low");
        e = expect_error([&] { (void)call(in.lp, in.mask, {.dual_clip = 1.0}); });
        CHECK(e.argument() == "options.dual_clip");
    }
}
