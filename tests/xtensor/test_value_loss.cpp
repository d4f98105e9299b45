#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/xtensor/kl_loss.hpp"
#include "rlhf/xtensor/value_loss.hpp"

namespace {

template <class T>
xt::xtensor<T, 2> random_tensor(std::size_t rows, std::size_t cols, std::mt19937& gen, double scale,
                                double shift = 0.0) {
    std::normal_distribution<double> normal(0.0, 1.0);
    auto x = xt::xtensor<T, 2>::from_shape({rows, cols});
    for (auto& e : x) e = static_cast<T>(shift + scale * normal(gen));
    return x;
}

}  // namespace

TEST_CASE_TEMPLATE("xtensor::value_loss and xtensor::kl_loss equal the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 gen(23);
    const auto old = random_tensor<T>(3, 6, gen, 1.0);
    const xt::xtensor<T, 2> values = old + random_tensor<T>(3, 6, gen, 0.4);
    const xt::xtensor<T, 2> returns = old + random_tensor<T>(3, 6, gen, 3.0);
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

    const auto lp = random_tensor<T>(3, 6, gen, 1.0, -2.0);
    const xt::xtensor<T, 2> ref = lp + random_tensor<T>(3, 6, gen, 1.0);
    const xt::xtensor<T, 2> old_lp = lp + random_tensor<T>(3, 6, gen, 0.3);
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
    try {
        (void)rlhf::xtensor::value_loss(zeros, zeros, zeros, wide);
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::shape);
        CHECK(e.argument() == "mask");
    }
    try {
        (void)rlhf::xtensor::kl_loss(zeros, zeros, zeros);
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.argument() == "mask");
    }
    const xt::xtensor<double, 1> line = xt::zeros<double>({3});
    try {
        (void)rlhf::xtensor::kl_loss(line, zeros, ones);
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.argument() == "log_probs");
    }
    (void)a;
}
