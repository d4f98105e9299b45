#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/xtensor/kl_loss.hpp"
#include "rlhf/xtensor/value_loss.hpp"
#include "support/xtensor_test_helpers.hpp"

TEST_CASE_TEMPLATE("xtensor::value_loss and xtensor::kl_loss equal the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 gen(23);
    const auto old = rlhf_test::random_values<T>(gen, 3, 6, 0.0, 1.0);
    const xt::xtensor<T, 2> values = old + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 0.4);
    const xt::xtensor<T, 2> returns = old + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 3.0);
    xt::xtensor<bool, 2> mask = xt::xtensor<bool, 2>::from_shape({3, 6});
    mask.fill(true);
    mask(0, 2) = false;
    for (std::size_t t = 0; t < 6; ++t) mask(1, t) = false;
    const rlhf::value_loss_options options{.clip_range = 0.3, .huber_delta = 1.0, .coef = 0.5};
    const auto out = rlhf::xtensor::value_loss(values, old, returns, mask, options);
    std::vector<T> grad(18);
    const auto m = rlhf::xtensor::as_view(mask, "test", "mask");
    const auto direct =
        rlhf::value_loss(rlhf::xtensor::as_view(values, "t", "v"), rlhf::xtensor::as_view(old, "t", "o"),
                         rlhf::xtensor::as_view(returns, "t", "r"), m, options, rlhf::make_mut_view(grad.data(), 3, 6));
    CHECK(out.loss == direct.loss);
    CHECK(out.stats.value_error == direct.stats.value_error);
    for (std::size_t i = 0; i < 18; ++i) CHECK(out.grad_values.data()[i] == grad[i]);

    const auto lp = rlhf_test::random_values<T>(gen, 3, 6, -2.0, 1.0);
    const xt::xtensor<T, 2> ref = lp + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 1.0);
    const xt::xtensor<T, 2> old_lp = lp + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 0.3);
    const rlhf::kl_loss_options kl{.kl = rlhf::kl_preset::openrlhf(rlhf::kl_estimator::k2), .straight_through = true};
    for (const bool weighted : {false, true}) {
        const auto k =
            weighted ? rlhf::xtensor::kl_loss(lp, ref, old_lp, mask, kl) : rlhf::xtensor::kl_loss(lp, ref, mask, kl);
        const auto l = rlhf::xtensor::as_view(lp, "t", "l");
        const auto r = rlhf::xtensor::as_view(ref, "t", "r");
        const auto g = rlhf::make_mut_view(grad.data(), 3, 6);
        const auto d = weighted ? rlhf::kl_loss(l, r, rlhf::xtensor::as_view(old_lp, "t", "o"), m, kl, g)
                                : rlhf::kl_loss(l, r, m, kl, g);
        CHECK(k.loss == d.loss);
        for (std::size_t i = 0; i < 18; ++i) CHECK(k.grad_log_probs.data()[i] == grad[i]);
    }
}

TEST_CASE("xtensor value and KL losses: errors name the argument" * doctest::test_suite("unit")) {
    const auto a = xt::xtensor<double, 2>::from_shape({2, 3});
    xt::xtensor<double, 2> zeros = xt::zeros<double>({2, 3});
    xt::xtensor<double, 2> ones = xt::ones<double>({2, 3});
    const xt::xtensor<double, 2> wide = xt::zeros<double>({2, 4});
    rlhf_test::check_error([&] { (void)rlhf::xtensor::value_loss(zeros, zeros, zeros, wide); }, rlhf::error_kind::shape,
                           "mask");
    auto e = rlhf_test::expect_error([&] { (void)rlhf::xtensor::kl_loss(zeros, zeros, zeros); });
    CHECK(e.argument() == "mask");
    const xt::xtensor<double, 1> line = xt::zeros<double>({3});
    e = rlhf_test::expect_error([&] { (void)rlhf::xtensor::kl_loss(line, zeros, ones); });
    CHECK(e.argument() == "log_probs");
    (void)a;
}
