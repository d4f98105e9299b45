#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/presets.hpp"
#include "rlhf/libtorch.hpp"
#include "support/torch_test_helpers.hpp"

using rlhf_test::expect_error;
using rlhf_test::kmut;
using rlhf_test::kview;

namespace {

template <class T>
torch::Tensor random_values(std::mt19937& rng, int64_t rows, int64_t cols) {
    return rlhf_test::random_values<T>(rng, rows, cols, 0.3, 1.7);
}

}  // namespace

TEST_CASE_TEMPLATE("libtorch::compute_gae agrees with the kernel in every mode / with and without bootstrap" *
                       doctest::test_suite("unit"),
                   T, float, double) {
    std::mt19937 rng(17);
    const int64_t rows = 4, cols = 11;
    const torch::Tensor rewards = random_values<T>(rng, rows, cols);
    const torch::Tensor values = random_values<T>(rng, rows, cols);
    const torch::Tensor boot = random_values<T>(rng, 1, rows).reshape({rows});
    for (const auto masking :
         {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
        const torch::Tensor mask = masking == rlhf::gae_masking::valid_range
                                       ? rlhf_test::range_mask_tensor(rows, cols)
                                       : rlhf_test::random_padded_mask_tensor(rng, rows, cols);
        const rlhf::gae_options options{.gamma = 0.97, .lambda = 0.9, .masking = masking};
        for (const bool with_bootstrap : {false, true}) {
            const auto result = with_bootstrap ? rlhf::compute_gae(rewards, values, mask, boot, options)
                                               : rlhf::compute_gae(rewards, values, mask, options);
            CHECK((result.advantages.scalar_type() == rewards.scalar_type()));
            CHECK((result.advantages.sizes() == rewards.sizes()));
            torch::Tensor a = torch::empty_like(rewards), ret = torch::empty_like(rewards);
            const torch::Tensor mask8 = mask.to(torch::kUInt8);
            if (with_bootstrap)
                rlhf::compute_gae(kview<T>(rewards), kview<T>(values), kview<std::uint8_t>(mask8),
                                  rlhf::view<T, 1>{boot.data_ptr<T>(), {rows}}, kmut<T>(a), kmut<T>(ret), options);
            else
                rlhf::compute_gae(kview<T>(rewards), kview<T>(values), kview<std::uint8_t>(mask8), kmut<T>(a),
                                  kmut<T>(ret), options);
            CHECK(torch::equal(result.advantages, a));
            CHECK(torch::equal(result.returns, ret));
        }
    }
    // Masks of every accepted dtype give the same answer.
    const torch::Tensor mask = rlhf_test::random_padded_mask_tensor(rng, rows, cols);
    const auto reference = rlhf::compute_gae(rewards, values, mask);
    for (const auto dtype : {torch::kUInt8, torch::kInt32, torch::kInt64, rlhf::libtorch::dtype_of<T>()}) {
        const auto other = rlhf::compute_gae(rewards, values, mask.to(dtype));
        CHECK(torch::equal(other.advantages, reference.advantages));
    }
}

TEST_CASE("libtorch::compute_gae matches a torch-composed TRL recursion and reads column ranges" *
          doctest::test_suite("unit")) {
    std::mt19937 rng(3);
    const torch::Tensor full_rewards = random_values<double>(rng, 3, 12);
    const torch::Tensor full_values = random_values<double>(rng, 3, 12);
    // The response is columns [4, 12) of [B, P + T] sequences: strided views, no copy.
    const torch::Tensor rewards = full_rewards.slice(1, 4, 12);
    const torch::Tensor values = full_values.slice(1, 4, 12);
    const torch::Tensor mask = rlhf_test::random_padded_mask_tensor(rng, 3, 8).to(torch::kFloat64);
    const auto result = rlhf::compute_gae(rewards, values, mask, {.gamma = 0.9, .lambda = 0.8});
    // TRL v0.11 compute_advantages, composed from torch ops.
    const torch::Tensor vm = values * mask, rm = rewards * mask;
    torch::Tensor last = torch::zeros({3}, torch::kFloat64);
    std::vector<torch::Tensor> reversed;
    for (int64_t t = 7; t >= 0; --t) {
        const torch::Tensor next = t < 7 ? vm.select(1, t + 1) : torch::zeros({3}, torch::kFloat64);
        last = rm.select(1, t) + 0.9 * next - vm.select(1, t) + 0.9 * 0.8 * last;
        reversed.push_back(last);
    }
    std::reverse(reversed.begin(), reversed.end());
    const torch::Tensor expected = torch::stack(reversed, 1);
    CHECK(torch::allclose(result.advantages, expected, 1e-12, 1e-12));
    CHECK(torch::allclose(result.returns, expected + vm, 1e-12, 1e-12));
    CHECK(result.advantages.is_contiguous());
}

TEST_CASE("libtorch::compute_gae rejects bad tensors with the argument's name" * doctest::test_suite("unit")) {
    const torch::Tensor r = torch::zeros({2, 3}, torch::kFloat32);
    const torch::Tensor m = torch::ones({2, 3}, torch::kBool);
    auto e = expect_error([&] { (void)rlhf::compute_gae(r, r.to(torch::kFloat64), m); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.function() == "rlhf::compute_gae");
    CHECK(e.argument() == "values");
    e = expect_error([&] { (void)rlhf::compute_gae(r.to(torch::kInt64), r, m); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "rewards");
    e = expect_error([&] { (void)rlhf::compute_gae(r, r, m.to(torch::kFloat16)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)rlhf::compute_gae(r, r, m.to(torch::kFloat64)); });
    CHECK(e.argument() == "mask");  // a floating mask must have the values' dtype
    e = expect_error([&] { (void)rlhf::compute_gae(r, torch::zeros({3, 2}, torch::kFloat32).t(), m); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "values");
    CHECK(e.expected() == "innermost stride 1 (call .contiguous())");
    e = expect_error([&] { (void)rlhf::compute_gae(r, torch::zeros({2, 4}, torch::kFloat32), m); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.function() == "rlhf::compute_gae");
    CHECK(e.argument() == "values");
    e = expect_error([&] { (void)rlhf::compute_gae(r, r, m, torch::zeros({3}, torch::kFloat32)); });
    CHECK(e.argument() == "bootstrap_values");
    e = expect_error([&] { (void)rlhf::compute_gae(r, r, m, {.lambda = 2.0}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "lambda");
}

TEST_CASE_TEMPLATE("libtorch::compute_gae_time_major agrees with the kernel" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 rng(23);
    const int64_t steps = 9, envs = 6;
    const torch::Tensor rewards = random_values<T>(rng, steps, envs);
    const torch::Tensor values = random_values<T>(rng, steps, envs);
    const torch::Tensor finals = random_values<T>(rng, steps, envs);
    const torch::Tensor next = random_values<T>(rng, 1, envs).reshape({envs});
    torch::manual_seed(23);
    const torch::Tensor terminated = torch::rand({steps, envs}) < 0.1;
    const torch::Tensor truncated = torch::rand({steps, envs}) < 0.1;
    const auto result = rlhf::compute_gae_time_major(rewards, values, terminated, truncated, finals, next);
    torch::Tensor a = torch::empty_like(rewards), ret = torch::empty_like(rewards);
    rlhf::compute_gae_time_major(kview<T>(rewards), kview<T>(values), kview<bool>(terminated), kview<bool>(truncated),
                                 kview<T>(finals), rlhf::view<T, 1>{next.data_ptr<T>(), {envs}}, kmut<T>(a),
                                 kmut<T>(ret));
    CHECK(torch::equal(result.advantages, a));
    CHECK(torch::equal(result.returns, ret));
    const auto e = expect_error([&] {
        (void)rlhf::compute_gae_time_major(rewards, values, terminated, truncated.to(torch::kUInt8), finals, next);
    });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "truncated");
}

TEST_CASE_TEMPLATE("libtorch statistics and whitening agree with the kernel and with torch ops" *
                       doctest::test_suite("unit"),
                   T, float, double) {
    std::mt19937 rng(41);
    const int64_t rows = 5, cols = 13;
    const torch::Tensor values = random_values<T>(rng, rows, cols);
    const torch::Tensor mask = rlhf_test::random_padded_mask_tensor(rng, rows, cols);  // row 1 empty
    const torch::Tensor mask8 = mask.to(torch::kUInt8);
    const double tol = rlhf_test::tolerance<T>(1e-5);

    // Batch statistics versus torch ops in double.
    const torch::Tensor vd = values.to(torch::kFloat64), md = mask.to(torch::kFloat64);
    const double n = md.sum().item<double>();
    const double mean = (vd * md).sum().item<double>() / n;
    const double var = (((vd - mean) * (vd - mean)) * md).sum().item<double>() / (n - 1);
    CHECK(rlhf::masked_mean(values, mask) == doctest::Approx(mean).epsilon(1e-12));
    CHECK(rlhf::masked_variance(values, mask) == doctest::Approx(var).epsilon(1e-12));
    const auto moments = rlhf::compute_masked_moments(values, mask);
    CHECK(moments.count == n);
    CHECK(moments.mean == rlhf::masked_mean(kview<T>(values), kview<std::uint8_t>(mask8)));

    // Whitening: TRL's formula composed from torch ops, and the kernel itself.
    const torch::Tensor whitened = rlhf::masked_whiten(values, mask);
    const torch::Tensor expected = ((vd - mean) * (1.0 / std::sqrt(var + 1e-8))).to(values.scalar_type());
    CHECK(torch::allclose(whitened, expected, tol, tol));
    for (const auto scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row}) {
        const rlhf::whiten_options options{.shift_mean = false,
                                           .variance = rlhf::variance_estimator::biased,
                                           .scope = scope,
                                           .epsilon_mode = rlhf::whiten_epsilon::clamp_variance,
                                           .small_sample = rlhf::small_sample_policy::zero_variance,
                                           .zero_masked = true};
        torch::Tensor out = torch::empty_like(values);
        rlhf::masked_whiten(kview<T>(values), kview<std::uint8_t>(mask8), kmut<T>(out), options);
        CHECK(torch::equal(rlhf::masked_whiten(values, mask, options), out));
    }
    // Per-row statistics (the empty row follows the policy).
    const rlhf::moments_options lenient{.small_sample = rlhf::small_sample_policy::zero_variance};
    const torch::Tensor row_means = rlhf::masked_mean_per_row(values, mask, lenient);
    const torch::Tensor row_vars = rlhf::masked_variance_per_row(values, mask, lenient);
    CHECK((row_means.scalar_type() == values.scalar_type()));
    CHECK(row_means.size(0) == rows);
    std::vector<T> means(rows), vars(rows);
    rlhf::masked_mean_per_row(kview<T>(values), kview<std::uint8_t>(mask8), rlhf::make_mut_view(std::span<T>(means)),
                              lenient);
    rlhf::masked_variance_per_row(kview<T>(values), kview<std::uint8_t>(mask8), rlhf::make_mut_view(std::span<T>(vars)),
                                  lenient);
    for (int64_t r = 0; r < rows; ++r) {
        CHECK(row_means[r].template item<T>() == means[static_cast<std::size_t>(r)]);
        CHECK(row_vars[r].template item<T>() == vars[static_cast<std::size_t>(r)]);
    }
    CHECK(row_means[1].template item<T>() == T{0});
    auto e = expect_error([&] { (void)rlhf::masked_mean_per_row(values, mask); });
    CHECK(e.actual() == "0 valid elements in row 1");

    // Unmasked whitening (ChatLearn's old PPO): torch.var_mean over all elements, unbiased.
    const torch::Tensor all = rlhf::whiten(values);
    const double all_mean = vd.mean().item<double>();
    const double all_var = vd.var().item<double>();
    CHECK(torch::allclose(all, ((vd - all_mean) / std::sqrt(all_var + 1e-8)).to(values.scalar_type()), tol, tol));

    // Running moments from a tensor.
    rlhf::running_moments running;
    const auto batch = rlhf::update_running_moments(running, values.reshape({-1}));
    CHECK(batch.mean == doctest::Approx(all_mean).epsilon(1e-12));
    CHECK(batch.std == doctest::Approx(std::sqrt(all_var)).epsilon(1e-12));

    e = expect_error([&] { (void)rlhf::masked_whiten(values.to(torch::kInt32), mask); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "values");
    e = expect_error([&] { (void)rlhf::masked_whiten(values, mask.slice(1, 0, 4)); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "mask");
}

namespace {

/// Right padding with at least one valid token and one pad slot per row (every preset's slot rule
/// applies, the current TRL one included).
torch::Tensor right_padded_mask(int64_t rows, int64_t cols) {
    torch::Tensor m = torch::zeros({rows, cols}, torch::kBool);
    for (int64_t b = 0; b < rows; ++b) m.index_put_({b, torch::indexing::Slice(0, cols - 1 - b % 3)}, true);
    return m;
}

}  // namespace

TEST_CASE_TEMPLATE("libtorch::compute_advantages runs each preset as the kernel does" * doctest::test_suite("unit"), T,
                   float, double) {
    std::mt19937 rng(23);
    const int64_t rows = 5, cols = 9;
    const torch::Tensor lp = -random_values<T>(rng, rows, cols).abs();
    const torch::Tensor ref = lp + 0.2 * random_values<T>(rng, rows, cols);
    const torch::Tensor values = random_values<T>(rng, rows, cols);
    const torch::Tensor scores = random_values<T>(rng, 1, rows).reshape({rows});
    const torch::Tensor mask = right_padded_mask(rows, cols);
    const torch::Tensor mask8 = mask.to(torch::kUInt8);
    for (const auto& preset : {rlhf::presets::trl_v0_11(), rlhf::presets::trl(), rlhf::presets::deepspeed_chat(),
                               rlhf::presets::colossalchat_v2(), rlhf::presets::openrlhf(), rlhf::presets::verl(),
                               rlhf::presets::chatlearn()}) {
        CAPTURE(preset.framework);
        const auto got = rlhf::compute_advantages(lp, ref, mask, scores, values, preset, 0.05);
        torch::Tensor rewards = torch::empty_like(lp), advantages = torch::empty_like(lp),
                      returns = torch::empty_like(lp);
        rlhf::compute_advantages(kview<T>(lp), kview<T>(ref), kview<std::uint8_t>(mask8),
                                 rlhf::view<T, 1>{scores.data_ptr<T>(), {rows}}, kview<T>(values), kmut<T>(rewards),
                                 kmut<T>(advantages), kmut<T>(returns), preset, 0.05);
        CHECK((got.rewards.scalar_type() == lp.scalar_type()));
        CHECK(torch::equal(got.rewards, rewards));
        CHECK(torch::equal(got.advantages, advantages));
        CHECK(torch::equal(got.returns, returns));
    }

    const torch::Tensor sequence_values = random_values<T>(rng, 1, rows).reshape({rows});
    const auto got = rlhf::compute_sequence_advantages(lp, ref, mask, scores, sequence_values,
                                                       rlhf::presets::colossalchat_v1(), 0.1);
    torch::Tensor rewards = torch::empty({rows}, lp.options()), advantages = torch::empty({rows}, lp.options());
    rlhf::compute_sequence_advantages(
        kview<T>(lp), kview<T>(ref), kview<std::uint8_t>(mask8), rlhf::view<T, 1>{scores.data_ptr<T>(), {rows}},
        rlhf::view<T, 1>{sequence_values.data_ptr<T>(), {rows}}, rlhf::mut_view<T, 1>{rewards.data_ptr<T>(), {rows}},
        rlhf::mut_view<T, 1>{advantages.data_ptr<T>(), {rows}}, rlhf::presets::colossalchat_v1(), 0.1);
    CHECK(torch::equal(got.rewards, rewards));
    CHECK(torch::equal(got.advantages, advantages));
    CHECK(torch::allclose(got.advantages, got.rewards - sequence_values));
}

TEST_CASE("libtorch::compute_advantages names the tensor it rejects" * doctest::test_suite("unit")) {
    const torch::Tensor lp = torch::zeros({2, 4}, torch::kFloat64);
    const torch::Tensor mask = right_padded_mask(2, 4);
    const torch::Tensor scores = torch::zeros({2}, torch::kFloat64);
    const auto preset = rlhf::presets::verl();
    auto e = expect_error(
        [&] { (void)rlhf::compute_advantages(lp, lp, mask, scores, lp.to(torch::kFloat32), preset, 0.0); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "values");
    e = expect_error(
        [&] { (void)rlhf::compute_advantages(lp, lp, mask, torch::zeros({3}, torch::kFloat64), lp, preset, 0.0); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "scores");
    e = expect_error([&] {
        (void)rlhf::compute_sequence_advantages(lp, lp, mask, scores, torch::zeros({3}, torch::kFloat64),
                                                rlhf::presets::colossalchat_v1(), 0.1);
    });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "values");
}
