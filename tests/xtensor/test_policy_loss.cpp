#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "rlhf/xtensor/policy_loss.hpp"
#include "support/xtensor_test_helpers.hpp"

TEST_CASE_TEMPLATE("xtensor::policy_loss equals the kernel" * doctest::test_suite("unit"), T, float, double) {
    std::mt19937 gen(29);
    const auto lp = rlhf_test::random_values<T>(gen, 3, 6, -1.5, 1.0);
    const xt::xtensor<T, 2> old = lp + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 0.5);
    const auto adv = rlhf_test::random_values<T>(gen, 3, 6, 0.0, 1.5);
    auto mask = xt::xtensor<std::uint8_t, 2>::from_shape({3, 6});
    mask.fill(1);
    mask(1, 4) = 0;
    mask(1, 5) = 0;
    const rlhf::policy_loss_options options{.mask_log_ratio = true,
                                            .level = rlhf::importance_ratio_level::sequence,
                                            .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_sum}};
    const auto out = rlhf::xtensor::policy_loss(lp, old, adv, mask, options);
    std::vector<T> grad(18);
    const auto direct =
        rlhf::policy_loss(rlhf::xtensor::as_view(lp, "t", "lp"), rlhf::xtensor::as_view(old, "t", "old"),
                          rlhf::xtensor::as_view(adv, "t", "adv"), rlhf::xtensor::as_view(mask, "t", "mask"), options,
                          rlhf::make_mut_view(grad.data(), 3, 6));
    CHECK(out.loss == direct.loss);
    CHECK(out.stats.ratio_mean == direct.stats.ratio_mean);
    REQUIRE(out.grad_log_probs.shape()[0] == 3);
    REQUIRE(out.grad_log_probs.shape()[1] == 6);
    for (std::size_t i = 0; i < 18; ++i) CHECK(out.grad_log_probs.data()[i] == grad[i]);
    CHECK(out.grad_log_probs(1, 5) == T(0));
}

TEST_CASE("xtensor::policy_loss names the bad argument" * doctest::test_suite("unit")) {
    xt::xtensor<double, 2> lp = xt::xtensor<double, 2>::from_shape({2, 3});
    lp.fill(-1.0);
    xt::xtensor<double, 2> old = lp;
    old(1, 1) = std::numeric_limits<double>::quiet_NaN();
    auto mask = xt::xtensor<bool, 2>::from_shape({2, 3});
    mask.fill(true);
    rlhf_test::check_error([&] { (void)rlhf::xtensor::policy_loss(lp, old, lp, mask); }, rlhf::error_kind::value,
                           "old_log_probs");
    mask.fill(false);
    auto e = rlhf_test::expect_error([&] { (void)rlhf::xtensor::policy_loss(lp, lp, lp, mask); });
    CHECK(e.argument() == "mask");
}
