#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/eigen/rewards.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "support/backend_agreement.hpp"
#include "support/eigen_test_helpers.hpp"
#include "support/fixtures.hpp"

using rlhf_test::expect_error;
using rlhf_test::same_values;

namespace {

RLHF_TEST_REWARD_BACKEND(eigen_backend, rlhf::eigen);

}  // namespace

TEST_CASE_TEMPLATE("eigen token_kl and shape_rewards agree with the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    const rlhf_test::reward_batch<T> d(5);
    constexpr Eigen::Index B = rlhf_test::reward_batch<T>::rows, C = rlhf_test::reward_batch<T>::cols;
    const auto lp = rlhf_test::matrix_of(d.lp, B, C), ref = rlhf_test::matrix_of(d.ref, B, C);
    const rlhf::eigen::vector<T> scores = Eigen::Map<const rlhf::eigen::vector<T>>(d.scores.data(), B);
    const Eigen::Matrix<std::uint8_t, B, C, Eigen::RowMajor> mask(d.mask.data());  // a fixed-size matrix
    const rlhf::eigen::row_matrix<T> mask_t = mask.template cast<T>();
    rlhf_test::check_reward_agreement<eigen_backend>(
        d, lp, ref, scores, mask, mask, [](const auto& x, const auto& e) { return same_values(x, e); }, mask, mask_t);
}

TEST_CASE("eigen rewards: column blocks / and errors" * doctest::test_suite("unit")) {
    rlhf::eigen::row_matrix<double> full = rlhf::eigen::row_matrix<double>::Random(3, 8);
    const auto lp = full.middleCols(2, 6);
    const auto ref = full.middleCols(1, 6);
    const rlhf::eigen::row_matrix<int> mask = rlhf::eigen::row_matrix<int>::Ones(3, 6);
    const rlhf::eigen::vector<double> scores = rlhf::eigen::vector<double>::Ones(3);
    const auto r = rlhf::eigen::shape_rewards_from_logprobs(lp, ref, mask, scores, {.kl_coef = 0.5});
    const rlhf::eigen::row_matrix<double> expected = -0.5 * (lp - ref);
    CHECK(r.leftCols(5).isApprox(expected.leftCols(5)));
    CHECK(r(1, 5) == doctest::Approx(expected(1, 5) + 1.0));

    auto e = expect_error([&] { (void)rlhf::eigen::token_kl(lp, full.middleCols(1, 5)); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "ref_log_probs");
    CHECK(e.function() == "rlhf::token_kl");
    const rlhf::eigen::vector<double> short_scores = rlhf::eigen::vector<double>::Ones(2);
    e = expect_error([&] { (void)rlhf::eigen::shape_rewards(lp, mask, short_scores); });
    CHECK(e.argument() == "scores");
    rlhf::eigen::row_matrix<int> bad = mask;
    bad(2, 2) = 3;
    e = expect_error([&] { (void)rlhf::eigen::shape_rewards(lp, bad, scores); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "mask");
}
