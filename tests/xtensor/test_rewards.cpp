#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/xtensor/rewards.hpp"
#include "support/backend_agreement.hpp"
#include "support/fixtures.hpp"
#include "support/xtensor_test_helpers.hpp"

using rlhf_test::expect_error;
using rlhf_test::same_values;

namespace {

RLHF_TEST_REWARD_BACKEND(xtensor_backend, rlhf::xtensor);

}  // namespace

TEST_CASE_TEMPLATE("xtensor token_kl and shape_rewards agree with the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    const rlhf_test::reward_batch<T> d(9);
    constexpr std::size_t B = rlhf_test::reward_batch<T>::rows, C = rlhf_test::reward_batch<T>::cols;
    const auto mask = rlhf_test::container(d.mask, std::array<std::size_t, 2>{B, C});
    xt::xtensor<T, 2> mask_t(std::array<std::size_t, 2>{B, C});
    for (std::size_t i = 0; i < B * C; ++i) mask_t.data()[i] = static_cast<T>(mask.data()[i]);
    rlhf_test::check_reward_agreement<xtensor_backend>(
        d, rlhf_test::container(d.lp, std::array<std::size_t, 2>{B, C}),
        rlhf_test::container(d.ref, std::array<std::size_t, 2>{B, C}),
        rlhf_test::container(d.scores, std::array<std::size_t, 1>{B}), mask, mask,
        [](const auto& x, const auto& e) { return same_values(x, e); }, mask, mask_t);
}

TEST_CASE("xtensor rewards: errors" * doctest::test_suite("unit")) {
    const xt::xtensor<double, 2> lp = {{-1.0, -2.0}, {-0.5, -1.5}};
    const xt::xtensor<double, 2> ref = {{-1.5, -2.0}, {-0.5, -1.0}};
    const xt::xtensor<double, 1> line = {-1.0, -2.0};
    const xt::xtensor<bool, 2> mask = {{true, false}, {true, true}};
    const xt::xtensor<double, 1> scores = {1.0, 2.0};
    const auto r = rlhf::xtensor::shape_rewards_from_logprobs(lp, ref, mask, scores, {.kl_coef = 1.0});
    CHECK(r(0, 0) == doctest::Approx(-0.5 + 1.0));
    CHECK(r(1, 1) == doctest::Approx(0.5 + 2.0));  // d = -0.5
    auto e = expect_error([&] { (void)rlhf::xtensor::token_kl(line, ref); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "log_probs");
    const xt::xtensor<double, 2> wide = {{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}};
    e = expect_error([&] { (void)rlhf::xtensor::token_kl(lp, wide); });
    CHECK(e.argument() == "ref_log_probs");
    e = expect_error([&] { (void)rlhf::xtensor::shape_rewards(lp, mask, lp); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "scores");
}
