#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/xtensor/advantages.hpp"
#include "support/xtensor_test_helpers.hpp"

using rlhf_test::kmut;
using rlhf_test::kview;
using rlhf_test::same;

namespace {

template <class T>
xt::xtensor<T, 2> random_values(std::mt19937& rng, std::size_t rows, std::size_t cols) {
    return rlhf_test::random_values<T>(rng, rows, cols, 0.1, 0.9);
}

}  // namespace

TEST_CASE_TEMPLATE("xtensor::compute_gae agrees with the kernel in every mode" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 rng(6);
    const std::size_t rows = 4, cols = 9;
    const auto rewards = random_values<T>(rng, rows, cols);
    const auto values = random_values<T>(rng, rows, cols);
    auto boot = xt::xtensor<T, 1>::from_shape({rows});
    for (std::size_t i = 0; i < rows; ++i) boot(i) = static_cast<T>(0.5 * static_cast<double>(i) - 1.0);
    for (const auto masking :
         {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
        const auto mask = masking == rlhf::gae_masking::valid_range
                              ? rlhf_test::range_mask_xtensor(rows, cols)
                              : rlhf_test::random_padded_mask_xtensor(rng, rows, cols);
        const rlhf::gae_options options{.gamma = 0.9, .lambda = 0.95, .masking = masking};
        auto a = xt::xtensor<T, 2>::from_shape({rows, cols});
        auto ret = xt::xtensor<T, 2>::from_shape({rows, cols});
        rlhf::compute_gae(kview(rewards), kview(values), kview(mask), kmut(a), kmut(ret), options);
        const auto result = rlhf::xtensor::compute_gae(rewards, values, mask, options);
        CHECK(same(result.advantages, a));
        CHECK(same(result.returns, ret));
        rlhf::compute_gae(kview(rewards), kview(values), kview(mask),
                          rlhf::view<T, 1>{boot.data(), {static_cast<rlhf::index_t>(rows)}}, kmut(a), kmut(ret),
                          options);
        const auto booted = rlhf::xtensor::compute_gae(rewards, values, mask, boot, options);
        CHECK(same(booted.advantages, a));
        CHECK(same(booted.returns, ret));
    }
    rlhf_test::check_error(
        [&] {
            (void)rlhf::xtensor::compute_gae(rewards, values,
                                             rlhf_test::random_padded_mask_xtensor(rng, rows + 1, cols));
        },
        rlhf::error_kind::shape, "mask");
}

TEST_CASE_TEMPLATE("xtensor::compute_gae_time_major agrees with the kernel" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 rng(9);
    const std::size_t steps = 8, envs = 3;
    const auto rewards = random_values<T>(rng, steps, envs);
    const auto values = random_values<T>(rng, steps, envs);
    const auto finals = random_values<T>(rng, steps, envs);
    auto next = xt::xtensor<T, 1>::from_shape({envs});
    for (std::size_t i = 0; i < envs; ++i) next(i) = static_cast<T>(i);
    std::bernoulli_distribution flag(0.2);
    auto terminated = xt::xtensor<std::uint8_t, 2>::from_shape({steps, envs});
    auto truncated = xt::xtensor<std::uint8_t, 2>::from_shape({steps, envs});
    for (std::size_t i = 0; i < terminated.size(); ++i) {
        terminated.data()[i] = flag(rng) ? 1 : 0;
        truncated.data()[i] = flag(rng) ? 1 : 0;
    }
    auto a = xt::xtensor<T, 2>::from_shape({steps, envs});
    auto ret = xt::xtensor<T, 2>::from_shape({steps, envs});
    rlhf::compute_gae_time_major(kview(rewards), kview(values), kview(terminated), kview(truncated), kview(finals),
                                 rlhf::view<T, 1>{next.data(), {static_cast<rlhf::index_t>(envs)}}, kmut(a), kmut(ret));
    const auto result = rlhf::xtensor::compute_gae_time_major(rewards, values, terminated, truncated, finals, next);
    CHECK(same(result.advantages, a));
    CHECK(same(result.returns, ret));
}

TEST_CASE_TEMPLATE("xtensor statistics and whitening agree with the kernel" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 rng(21);
    const std::size_t rows = 5, cols = 11;
    const auto values = random_values<T>(rng, rows, cols);
    const auto mask = rlhf_test::random_padded_mask_xtensor(rng, rows, cols);
    CHECK(rlhf::xtensor::masked_mean(values, mask) == rlhf::masked_mean(kview(values), kview(mask)));
    CHECK(rlhf::xtensor::masked_variance(values, mask) == rlhf::masked_variance(kview(values), kview(mask)));
    CHECK(rlhf::xtensor::compute_masked_moments(values, mask).sum ==
          rlhf::compute_masked_moments(kview(values), kview(mask)).sum);
    for (const auto scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row}) {
        const rlhf::whiten_options options{.variance = rlhf::variance_estimator::biased,
                                           .scope = scope,
                                           .small_sample = rlhf::small_sample_policy::zero_variance,
                                           .zero_masked = true};
        auto out = xt::xtensor<T, 2>::from_shape({rows, cols});
        rlhf::masked_whiten(kview(values), kview(mask), kmut(out), options);
        CHECK(same(rlhf::xtensor::masked_whiten(values, mask, options), out));
        rlhf::whiten(kview(values), kmut(out), options);
        CHECK(same(rlhf::xtensor::whiten(values, options), out));
    }
    const rlhf::moments_options lenient{.small_sample = rlhf::small_sample_policy::zero_variance};
    std::vector<T> means(rows), vars(rows);
    rlhf::masked_mean_per_row(kview(values), kview(mask), rlhf::make_mut_view(std::span<T>(means)), lenient);
    rlhf::masked_variance_per_row(kview(values), kview(mask), rlhf::make_mut_view(std::span<T>(vars)), lenient);
    const auto row_means = rlhf::xtensor::masked_mean_per_row(values, mask, lenient);
    const auto row_vars = rlhf::xtensor::masked_variance_per_row(values, mask, lenient);
    for (std::size_t r = 0; r < rows; ++r) {
        CHECK(row_means(r) == means[r]);
        CHECK(row_vars(r) == vars[r]);
    }
}
