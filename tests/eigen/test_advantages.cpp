#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "rlhf/eigen/advantages.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "support/eigen_test_helpers.hpp"

using rlhf_test::kmut;
using rlhf_test::kview;

namespace {

template <class T>
rlhf::eigen::row_matrix<T> random_values(std::mt19937& rng, Eigen::Index rows, Eigen::Index cols) {
    return rlhf_test::random_values<T>(rng, rows, cols, -0.2, 1.3);
}

}  // namespace

TEST_CASE_TEMPLATE("eigen::compute_gae agrees with the kernel in every mode" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 rng(5);
    const Eigen::Index rows = 4, cols = 10;
    const auto rewards = random_values<T>(rng, rows, cols);
    const auto values = random_values<T>(rng, rows, cols);
    const rlhf::eigen::vector<T> boot = random_values<T>(rng, rows, 1);
    for (const auto masking :
         {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
        const auto mask = masking == rlhf::gae_masking::valid_range
                              ? rlhf_test::range_mask_matrix(rows, cols)
                              : rlhf_test::random_padded_mask_matrix(rng, rows, cols);
        const rlhf::gae_options options{.gamma = 0.95, .lambda = 0.7, .masking = masking};
        rlhf::eigen::row_matrix<T> a(rows, cols), ret(rows, cols);
        rlhf::compute_gae(kview(rewards), kview(values), kview(mask), kmut(a), kmut(ret), options);
        const auto result = rlhf::eigen::compute_gae(rewards, values, mask, options);
        CHECK(result.advantages == a);
        CHECK(result.returns == ret);
        rlhf::compute_gae(kview(rewards), kview(values), kview(mask), rlhf::view<T, 1>{boot.data(), {rows}}, kmut(a),
                          kmut(ret), options);
        const auto booted = rlhf::eigen::compute_gae(rewards, values, mask, boot, options);
        CHECK(booted.advantages == a);
        CHECK(booted.returns == ret);
    }
    // A block (column range) and the transpose of a column-major matrix are read without a copy.
    const auto wide = random_values<T>(rng, rows, cols + 3);
    const auto mask = rlhf_test::random_padded_mask_matrix(rng, rows, cols);
    const rlhf::eigen::row_matrix<T> narrow = wide.rightCols(cols);
    CHECK(rlhf::eigen::compute_gae(wide.rightCols(cols), values, mask).advantages ==
          rlhf::eigen::compute_gae(narrow, values, mask).advantages);
    const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> time_major = values.transpose();
    CHECK(rlhf::eigen::compute_gae(rewards, time_major.transpose(), mask).returns ==
          rlhf::eigen::compute_gae(rewards, values, mask).returns);
    // Errors name the argument.
    rlhf_test::check_error(
        [&] { (void)rlhf::eigen::compute_gae(rewards, values, rlhf_test::range_mask_matrix(rows, cols + 1)); },
        rlhf::error_kind::shape, "mask");
}

TEST_CASE_TEMPLATE("eigen::compute_gae_time_major agrees with the kernel" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 rng(8);
    const Eigen::Index steps = 7, envs = 4;
    const auto rewards = random_values<T>(rng, steps, envs);
    const auto values = random_values<T>(rng, steps, envs);
    const auto finals = random_values<T>(rng, steps, envs);
    const rlhf::eigen::vector<T> next = random_values<T>(rng, envs, 1);
    std::bernoulli_distribution flag(0.2);
    rlhf::eigen::row_matrix<bool> terminated(steps, envs), truncated(steps, envs);
    for (Eigen::Index i = 0; i < terminated.size(); ++i) {
        terminated.data()[i] = flag(rng);
        truncated.data()[i] = flag(rng);
    }
    rlhf::eigen::row_matrix<T> a(steps, envs), ret(steps, envs);
    rlhf::compute_gae_time_major(kview(rewards), kview(values), kview(terminated), kview(truncated), kview(finals),
                                 rlhf::view<T, 1>{next.data(), {envs}}, kmut(a), kmut(ret));
    const auto result = rlhf::eigen::compute_gae_time_major(rewards, values, terminated, truncated, finals, next);
    CHECK(result.advantages == a);
    CHECK(result.returns == ret);
}

TEST_CASE_TEMPLATE("eigen statistics and whitening agree with the kernel" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 rng(13);
    const Eigen::Index rows = 5, cols = 12;
    const auto values = random_values<T>(rng, rows, cols);
    const auto mask = rlhf_test::random_padded_mask_matrix(rng, rows, cols);
    CHECK(rlhf::eigen::masked_mean(values, mask) == rlhf::masked_mean(kview(values), kview(mask)));
    CHECK(rlhf::eigen::masked_variance(values, mask) == rlhf::masked_variance(kview(values), kview(mask)));
    CHECK(rlhf::eigen::compute_masked_moments(values, mask).count ==
          rlhf::compute_masked_moments(kview(values), kview(mask)).count);
    for (const auto scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row}) {
        const rlhf::whiten_options options{.scope = scope, .small_sample = rlhf::small_sample_policy::skip};
        rlhf::eigen::row_matrix<T> out(rows, cols);
        rlhf::masked_whiten(kview(values), kview(mask), kmut(out), options);
        CHECK(rlhf::eigen::masked_whiten(values, mask, options) == out);
        rlhf::whiten(kview(values), kmut(out), options);
        CHECK(rlhf::eigen::whiten(values, options) == out);
    }
    const rlhf::moments_options lenient{.variance = rlhf::variance_estimator::biased,
                                        .small_sample = rlhf::small_sample_policy::zero_variance};
    std::vector<T> means(static_cast<std::size_t>(rows)), vars(static_cast<std::size_t>(rows));
    rlhf::masked_mean_per_row(kview(values), kview(mask), rlhf::make_mut_view(std::span<T>(means)), lenient);
    rlhf::masked_variance_per_row(kview(values), kview(mask), rlhf::make_mut_view(std::span<T>(vars)), lenient);
    const auto row_means = rlhf::eigen::masked_mean_per_row(values, mask, lenient);
    const auto row_vars = rlhf::eigen::masked_variance_per_row(values, mask, lenient);
    for (Eigen::Index r = 0; r < rows; ++r) {
        CHECK(row_means(r) == means[static_cast<std::size_t>(r)]);
        CHECK(row_vars(r) == vars[static_cast<std::size_t>(r)]);
    }
    const auto e = rlhf_test::expect_error(
        [&] { (void)rlhf::eigen::masked_whiten(values, mask, {.scope = rlhf::whiten_scope::per_row}); });
    CHECK(e.argument() == "mask");
    CHECK(e.actual() == "0 valid elements in row 1");
}
