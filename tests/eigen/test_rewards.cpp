#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/eigen/rewards.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"

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
bool same_values(const rlhf::eigen::row_matrix<T>& actual, const std::vector<T>& expected) {
    return std::vector<T>(actual.data(), actual.data() + actual.size()) == expected;
}

}  // namespace

TEST_CASE_TEMPLATE("eigen token_kl and shape_rewards agree with the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    constexpr Eigen::Index B = 5, C = 7;
    std::mt19937 rng(5);
    std::normal_distribution<double> normal(0.0, 1.0);
    rlhf::eigen::row_matrix<T> lp(B, C), ref(B, C);
    for (Eigen::Index i = 0; i < lp.size(); ++i) {
        lp.data()[i] = static_cast<T>(-std::abs(normal(rng)) * 1.5);
        ref.data()[i] = static_cast<T>(static_cast<double>(lp.data()[i]) + 0.3 * normal(rng));
    }
    rlhf::eigen::vector<T> scores(B);
    for (Eigen::Index b = 0; b < B; ++b) scores(b) = static_cast<T>(2.0 * normal(rng));
    Eigen::Matrix<std::uint8_t, B, C, Eigen::RowMajor> mask;
    mask << 1, 1, 1, 1, 0, 0, 0,  // right padding
        1, 0, 1, 1, 0, 1, 0,      // holes
        0, 0, 0, 0, 0, 0, 0,      // empty
        0, 0, 0, 1, 1, 1, 1,      // left padding
        1, 1, 1, 1, 1, 1, 1;      // full
    const rlhf::view<T> lp_v{lp.data(), {B, C}};
    const rlhf::view<T> ref_v{ref.data(), {B, C}};
    const rlhf::view<std::uint8_t> mask_v{mask.data(), {B, C}};
    const rlhf::view<T, 1> scores_v{scores.data(), {B}};
    std::vector<T> expected(static_cast<std::size_t>(B * C));
    const auto out = rlhf::make_mut_view(expected.data(), B, C);

    for (const auto& kl_opts :
         {rlhf::kl_preset::trl(rlhf::kl_estimator::k1), rlhf::kl_preset::verl(rlhf::kl_estimator::k3),
          rlhf::kl_preset::openrlhf(rlhf::kl_estimator::k2)}) {
        rlhf::token_kl(lp_v, ref_v, out, kl_opts);
        CHECK(same_values(rlhf::eigen::token_kl(lp, ref, kl_opts), expected));
        rlhf::token_kl(lp_v, ref_v, mask_v, out, kl_opts);
        CHECK(same_values(rlhf::eigen::token_kl(lp, ref, mask, kl_opts), expected));
        const rlhf::eigen::row_matrix<T> mask_t = mask.template cast<T>();
        CHECK(same_values(rlhf::eigen::token_kl(lp, ref, mask_t, kl_opts), expected));
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
        CHECK(same_values(rlhf::eigen::shape_rewards_from_logprobs(lp, ref, mask, scores, o), expected));
        rlhf::shape_rewards(lp_v, mask_v, scores_v, out, o);  // the log-probs standing in for a KL
        CHECK(same_values(rlhf::eigen::shape_rewards(lp, mask, scores, o), expected));
    }
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
