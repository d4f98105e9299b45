#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/libtorch/rewards.hpp"

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

// Random log-probs and a mask with holes, an empty row and left padding: [B, C] = [5, 7].
template <class T>
struct batch {
    static constexpr rlhf::index_t B = 5, C = 7;
    std::vector<T> lp, ref, scores;
    std::vector<std::uint8_t> mask;
    batch() {
        std::mt19937 rng(3);
        std::normal_distribution<double> normal(0.0, 1.0);
        for (rlhf::index_t i = 0; i < B * C; ++i) {
            lp.push_back(static_cast<T>(-std::abs(normal(rng)) * 1.5));
            ref.push_back(static_cast<T>(static_cast<double>(lp.back()) + 0.3 * normal(rng)));
        }
        for (rlhf::index_t b = 0; b < B; ++b) scores.push_back(static_cast<T>(2.0 * normal(rng)));
        mask = {1, 1, 1, 1, 0, 0, 0,   // right padding
                1, 0, 1, 1, 0, 1, 0,   // holes
                0, 0, 0, 0, 0, 0, 0,   // empty
                0, 0, 0, 1, 1, 1, 1,   // left padding
                1, 1, 1, 1, 1, 1, 1};  // full
    }
    torch::Tensor tensor(std::vector<T>& v, rlhf::index_t rows, rlhf::index_t cols) const {
        return torch::from_blob(v.data(), {rows, cols}, rlhf::libtorch::dtype_of<T>()).clone();
    }
};

template <class T>
std::vector<T> to_vector(const torch::Tensor& t) {
    const torch::Tensor c = t.contiguous();
    return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

}  // namespace

TEST_CASE_TEMPLATE("libtorch token_kl and shape_rewards agree with the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    batch<T> d;
    const auto B = d.B, C = d.C;
    const torch::Tensor lp = d.tensor(d.lp, B, C), ref = d.tensor(d.ref, B, C);
    const torch::Tensor mask_u8 = torch::from_blob(d.mask.data(), {B, C}, torch::kUInt8).clone();
    const torch::Tensor scores = torch::from_blob(d.scores.data(), {B}, rlhf::libtorch::dtype_of<T>()).clone();
    const auto lp_v = rlhf::make_view(d.lp.data(), B, C);
    const auto ref_v = rlhf::make_view(d.ref.data(), B, C);
    const auto mask_v = rlhf::make_view(d.mask.data(), B, C);
    const rlhf::view<T, 1> scores_v{d.scores.data(), {B}};
    std::vector<T> expected(static_cast<std::size_t>(B * C));
    const auto out = rlhf::make_mut_view(expected.data(), B, C);

    for (const auto& kl_opts :
         {rlhf::kl_preset::trl(rlhf::kl_estimator::k1), rlhf::kl_preset::verl(rlhf::kl_estimator::k3),
          rlhf::kl_preset::openrlhf(rlhf::kl_estimator::k2)}) {
        rlhf::token_kl(lp_v, ref_v, out, kl_opts);
        CHECK(to_vector<T>(rlhf::libtorch::token_kl(lp, ref, kl_opts)) == expected);
        rlhf::token_kl(lp_v, ref_v, mask_v, out, kl_opts);
        CHECK(to_vector<T>(rlhf::libtorch::token_kl(lp, ref, mask_u8, kl_opts)) == expected);
        CHECK(to_vector<T>(rlhf::libtorch::token_kl(lp, ref, mask_u8.to(torch::kBool), kl_opts)) == expected);
        CHECK(to_vector<T>(rlhf::libtorch::token_kl(lp, ref, mask_u8.to(lp.scalar_type()), kl_opts)) == expected);
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
        CHECK(to_vector<T>(rlhf::libtorch::shape_rewards_from_logprobs(lp, ref, mask_u8.to(torch::kInt64), scores,
                                                                       o)) == expected);
        rlhf::shape_rewards(lp_v, mask_v, scores_v, out, o);  // the log-probs standing in for a KL
        CHECK(to_vector<T>(rlhf::libtorch::shape_rewards(lp, mask_u8.to(torch::kInt32), scores, o)) == expected);
    }
}

TEST_CASE("libtorch rewards: column ranges of a wider tensor / and errors" * doctest::test_suite("unit")) {
    const torch::Tensor full = torch::randn({3, 8}, torch::kFloat64);
    const torch::Tensor lp = full.slice(1, 2, 8), ref = full.slice(1, 1, 7);
    const torch::Tensor mask = torch::ones({3, 6}, torch::kBool);
    const torch::Tensor scores = torch::ones({3}, torch::kFloat64);
    const torch::Tensor r = rlhf::libtorch::shape_rewards_from_logprobs(lp, ref, mask, scores, {.kl_coef = 0.5});
    CHECK(r.is_contiguous());
    const torch::Tensor expected = -0.5 * (lp - ref);
    CHECK(torch::allclose(r.slice(1, 0, 5), expected.slice(1, 0, 5)));
    CHECK(r[0][5].item<double>() == doctest::Approx(expected[0][5].item<double>() + 1.0));

    auto e = expect_error([&] { (void)rlhf::libtorch::token_kl(lp, ref.to(torch::kFloat32)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "ref_log_probs");
    e = expect_error([&] { (void)rlhf::libtorch::token_kl(lp.to(torch::kInt64), ref); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "log_probs");
    e = expect_error([&] { (void)rlhf::libtorch::token_kl(lp, ref, mask.to(torch::kInt16)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)rlhf::libtorch::token_kl(lp[0], ref[0]); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "log_probs");
    e = expect_error([&] { (void)rlhf::libtorch::token_kl(lp.t(), ref.t()); });
    CHECK(e.argument() == "log_probs");
    e = expect_error([&] { (void)rlhf::libtorch::shape_rewards(lp, mask, scores.reshape({3, 1})); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "scores");
    e = expect_error([&] { (void)rlhf::libtorch::shape_rewards(lp, mask, scores.to(torch::kFloat32)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "scores");
    e = expect_error([&] { (void)rlhf::libtorch::shape_rewards(lp, mask.slice(0, 0, 2), scores); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)rlhf::libtorch::shape_rewards(lp, torch::zeros({3, 6}, torch::kBool), scores); });
    CHECK(e.kind() == rlhf::error_kind::value);  // empty rows under the default policy (raise)
    CHECK(e.argument() == "mask");
}
