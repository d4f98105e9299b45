#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/xtensor/rewards.hpp"

namespace {

template <class Call>
rlhf::error expect_error(Call&& call) {
    try {
        call();
    } catch (const rlhf::error& e) {
        return e;
    }
    FAIL("expected rlhf::error");
    throw;  // unreachable
}

template <class T>
bool same_values(const xt::xtensor<T, 2>& actual, const std::vector<T>& expected) {
    return std::vector<T>(actual.data(), actual.data() + actual.size()) == expected;
}

}  // namespace

TEST_CASE_TEMPLATE("xtensor token_kl and shape_rewards agree with the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    constexpr std::size_t B = 5, C = 7;
    std::mt19937 rng(9);
    std::normal_distribution<double> normal(0.0, 1.0);
    xt::xtensor<T, 2> lp(std::array<std::size_t, 2>{B, C}), ref(std::array<std::size_t, 2>{B, C});
    for (std::size_t i = 0; i < B * C; ++i) {
        lp.data()[i] = static_cast<T>(-std::abs(normal(rng)) * 1.5);
        ref.data()[i] = static_cast<T>(static_cast<double>(lp.data()[i]) + 0.3 * normal(rng));
    }
    xt::xtensor<T, 1> scores(std::array<std::size_t, 1>{B});
    for (std::size_t b = 0; b < B; ++b) scores(b) = static_cast<T>(2.0 * normal(rng));
    const xt::xtensor<std::uint8_t, 2> mask = {{1, 1, 1, 1, 0, 0, 0},   // right padding
                                               {1, 0, 1, 1, 0, 1, 0},   // holes
                                               {0, 0, 0, 0, 0, 0, 0},   // empty
                                               {0, 0, 0, 1, 1, 1, 1},   // left padding
                                               {1, 1, 1, 1, 1, 1, 1}};  // full
    const rlhf::index_t rows = B, cols = C;
    const rlhf::view<T> lp_v{lp.data(), {rows, cols}};
    const rlhf::view<T> ref_v{ref.data(), {rows, cols}};
    const rlhf::view<std::uint8_t> mask_v{mask.data(), {rows, cols}};
    const rlhf::view<T, 1> scores_v{scores.data(), {rows}};
    std::vector<T> expected(B * C);
    const auto out = rlhf::make_mut_view(expected.data(), rows, cols);

    for (const auto& kl_opts :
         {rlhf::kl_preset::trl(rlhf::kl_estimator::k1), rlhf::kl_preset::verl(rlhf::kl_estimator::k3),
          rlhf::kl_preset::openrlhf(rlhf::kl_estimator::k2)}) {
        rlhf::token_kl(lp_v, ref_v, out, kl_opts);
        CHECK(same_values(rlhf::xtensor::token_kl(lp, ref, kl_opts), expected));
        rlhf::token_kl(lp_v, ref_v, mask_v, out, kl_opts);
        CHECK(same_values(rlhf::xtensor::token_kl(lp, ref, mask, kl_opts), expected));
        xt::xtensor<T, 2> mask_t(std::array<std::size_t, 2>{B, C});
        for (std::size_t i = 0; i < B * C; ++i) mask_t.data()[i] = static_cast<T>(mask.data()[i]);
        CHECK(same_values(rlhf::xtensor::token_kl(lp, ref, mask_t, kl_opts), expected));
    }
    for (const auto slot : {rlhf::reward_slot::last_valid_token, rlhf::reward_slot::after_last_valid,
                            rlhf::reward_slot::every_valid_token, rlhf::reward_slot::first_pad_slot}) {
        const rlhf::reward_shaping_options o{.kl_coef = 0.1,
                                             .slot = slot,
                                             .mask_kl = true,
                                             .score_clip = 1.5,
                                             .empty_rows = rlhf::empty_row_policy::peer_slot,
                                             .kl = rlhf::kl_preset::verl(rlhf::kl_estimator::k3)};
        rlhf::shape_rewards_from_logprobs(lp_v, ref_v, mask_v, scores_v, out, o);
        CHECK(same_values(rlhf::xtensor::shape_rewards_from_logprobs(lp, ref, mask, scores, o), expected));
        rlhf::shape_rewards(lp_v, mask_v, scores_v, out, o);  // the log-probs standing in for a KL
        CHECK(same_values(rlhf::xtensor::shape_rewards(lp, mask, scores, o), expected));
    }
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
