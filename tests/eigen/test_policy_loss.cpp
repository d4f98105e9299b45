#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "rlhf/eigen/policy_loss.hpp"
#include "support/eigen_test_helpers.hpp"

TEST_CASE_TEMPLATE("eigen::policy_loss equals the kernel" * doctest::test_suite("unit"), T, float, double) {
    std::mt19937 gen(11);
    const auto lp = rlhf_test::random_values<T>(gen, 3, 6, -1.5, 1.0);
    const rlhf::eigen::row_matrix<T> old = lp + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 0.5);
    const auto adv = rlhf_test::random_values<T>(gen, 3, 6, 0.0, 1.5);
    Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> mask(3, 6);
    mask.setConstant(true);
    mask(0, 5) = false;
    mask(2, 0) = false;
    mask(2, 3) = false;
    const rlhf::policy_loss_options options{.clip_high = 0.28,
                                            .dual_clip = 3.0,
                                            .log_ratio_min = -20.0,
                                            .log_ratio_max = 20.0,
                                            .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean}};
    const auto out = rlhf::eigen::policy_loss(lp, old, adv, mask, options);
    std::vector<T> grad(18);
    const auto direct =
        rlhf::policy_loss(rlhf::eigen::as_view(lp, "t", "lp"), rlhf::eigen::as_view(old, "t", "old"),
                          rlhf::eigen::as_view(adv, "t", "adv"), rlhf::eigen::as_view(mask, "t", "mask"), options,
                          rlhf::make_mut_view(grad.data(), 3, 6));
    CHECK(out.loss == direct.loss);
    CHECK(out.stats.clip_fraction == direct.stats.clip_fraction);
    CHECK(out.stats.approx_kl == direct.stats.approx_kl);
    REQUIRE(out.grad_log_probs.rows() == 3);
    REQUIRE(out.grad_log_probs.cols() == 6);
    for (Eigen::Index i = 0; i < 18; ++i) CHECK(out.grad_log_probs.data()[i] == grad[static_cast<std::size_t>(i)]);
    CHECK(out.grad_log_probs(0, 5) == T(0));

    // A block of a wider matrix and a column-major [T, B] matrix read through its transpose.
    rlhf::eigen::row_matrix<T> wide = rlhf::eigen::row_matrix<T>::Zero(3, 9);
    wide.rightCols(6) = lp;
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> old_time_major = old.transpose();
    const Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> int_mask =
        mask.template cast<std::int32_t>();
    const auto views = rlhf::eigen::policy_loss(wide.rightCols(6), old_time_major.transpose(), adv, int_mask, options);
    CHECK(views.loss == doctest::Approx(out.loss).epsilon(1e-12));
    CHECK(views.grad_log_probs.isApprox(out.grad_log_probs));
}

TEST_CASE("eigen::policy_loss names the bad argument" * doctest::test_suite("unit")) {
    const rlhf::eigen::row_matrix<double> lp = rlhf::eigen::row_matrix<double>::Constant(2, 3, -1.0);
    const rlhf::eigen::row_matrix<double> adv = rlhf::eigen::row_matrix<double>::Ones(2, 4);
    const Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> mask =
        Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>::Ones(2, 3);
    rlhf_test::check_error([&] { (void)rlhf::eigen::policy_loss(lp, lp, adv, mask); }, rlhf::error_kind::shape,
                           "advantages");
    rlhf_test::check_error([&] { (void)rlhf::eigen::policy_loss(lp, lp, lp, mask, {.dual_clip = 0.9}); },
                           rlhf::error_kind::config, "options.dual_clip");
}
