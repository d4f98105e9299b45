// doctest's CHECK over glog's: tests/support/doctest_torch.hpp, precompiled first (tests/CMakeLists.txt).
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/libtorch.hpp"
#include "support/fixtures.hpp"
#include "support/torch_test_helpers.hpp"

using rlhf_test::check_same;
using rlhf_test::outcome_batch;
using rlhf_test::tensor_of;

namespace {

constexpr rlhf::index_t rows = outcome_batch<double>::rows, cols = outcome_batch<double>::cols;

}  // namespace

TEST_CASE("libtorch outcome estimators: a column range / mask dtypes / bad tensors" * doctest::test_suite("unit")) {
    const outcome_batch<double> b(3u);
    const torch::Tensor wide = torch::zeros({rows, cols + 3}, torch::kFloat64);
    wide.slice(1, 2, 2 + cols).copy_(tensor_of(b.rewards, {rows, cols}));
    const torch::Tensor rewards = wide.slice(1, 2, 2 + cols);  // row stride cols + 3
    const torch::Tensor ids = tensor_of(b.ids, {rows});
    std::vector<double> expected(static_cast<std::size_t>(rows * cols));
    rlhf::compute_rloo_advantages(b.r(), b.m(), b.g(), rlhf::make_mut_view(expected.data(), rows, cols));
    for (const auto dtype : {torch::kFloat64, torch::kUInt8, torch::kInt32, torch::kInt64, torch::kBool}) {
        const torch::Tensor mask = tensor_of(b.mask, {rows, cols}).to(dtype);
        check_same(rlhf::compute_rloo_advantages(rewards, mask, ids), expected);
    }

    const torch::Tensor mask = tensor_of(b.mask, {rows, cols});
    auto e = rlhf_test::check_error([&] { (void)rlhf::compute_grpo_advantages(rewards, mask, ids.to(torch::kInt32)); },
                                    rlhf::error_kind::dtype, "group_ids");
    CHECK(e.function() == "rlhf::compute_grpo_advantages");
    e = rlhf_test::check_error([&] { (void)rlhf::compute_grpo_advantages(rewards, mask, ids.slice(0, 0, 4)); },
                               rlhf::error_kind::shape, "group_ids");
    CHECK(e.function() == "rlhf::compute_grpo_advantages");
    rlhf_test::check_error(
        [&] { (void)rlhf::compute_remax_advantages(rewards, mask, torch::zeros({rows}, torch::kFloat32)); },
        rlhf::error_kind::dtype, "reward_baselines");
    rlhf_test::check_error([&] { (void)rlhf::compute_dr_grpo_advantages(rewards.to(torch::kInt64), mask, ids); },
                           rlhf::error_kind::dtype, "token_rewards");
    rlhf_test::check_error([&] { (void)rlhf::compute_cumulative_returns(rewards, mask, {.gamma = -0.5}); },
                           rlhf::error_kind::config, "gamma");
}
