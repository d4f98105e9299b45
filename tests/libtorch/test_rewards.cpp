#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/libtorch.hpp"
#include "support/fixtures.hpp"
#include "support/torch_test_helpers.hpp"

using rlhf_test::expect_error;
using rlhf_test::tensor_of;
using rlhf_test::to_vector;

TEST_CASE("libtorch rewards: column ranges of a wider tensor / and errors" * doctest::test_suite("unit")) {
    const torch::Tensor full = torch::randn({3, 8}, torch::kFloat64);
    const torch::Tensor lp = full.slice(1, 2, 8), ref = full.slice(1, 1, 7);
    const torch::Tensor mask = torch::ones({3, 6}, torch::kBool);
    const torch::Tensor scores = torch::ones({3}, torch::kFloat64);
    const torch::Tensor r = rlhf::shape_rewards_from_logprobs(lp, ref, mask, scores, {.kl_coef = 0.5});
    CHECK(r.is_contiguous());
    const torch::Tensor expected = -0.5 * (lp - ref);
    CHECK(torch::allclose(r.slice(1, 0, 5), expected.slice(1, 0, 5)));
    CHECK(r[0][5].item<double>() == doctest::Approx(expected[0][5].item<double>() + 1.0));

    auto e = expect_error([&] { (void)rlhf::token_kl(lp, ref.to(torch::kFloat32)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "ref_log_probs");
    e = expect_error([&] { (void)rlhf::token_kl(lp.to(torch::kInt64), ref); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "log_probs");
    e = expect_error([&] { (void)rlhf::token_kl(lp, ref, mask.to(torch::kInt16)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)rlhf::token_kl(lp[0], ref[0]); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "log_probs");
    e = expect_error([&] { (void)rlhf::token_kl(lp.t(), ref.t()); });
    CHECK(e.argument() == "log_probs");
    e = expect_error([&] { (void)rlhf::shape_rewards(lp, mask, scores.reshape({3, 1})); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "scores");
    e = expect_error([&] { (void)rlhf::shape_rewards(lp, mask, scores.to(torch::kFloat32)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "scores");
    e = expect_error([&] { (void)rlhf::shape_rewards(lp, mask.slice(0, 0, 2), scores); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)rlhf::shape_rewards(lp, torch::zeros({3, 6}, torch::kBool), scores); });
    CHECK(e.kind() == rlhf::error_kind::value);  // empty rows under the default policy (raise)
    CHECK(e.argument() == "mask");
}
