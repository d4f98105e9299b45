// doctest's CHECK over glog's: tests/support/doctest_torch.hpp, precompiled first (tests/CMakeLists.txt).
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/libtorch/outcome_advantages.hpp"

namespace {

using rlhf::index_t;

constexpr index_t rows = 6;
constexpr index_t cols = 7;

// Random rewards; masks with right padding, left padding, an interior hole and an empty row;
// group ids neither contiguous nor sorted, with a singleton.
template <class T>
struct batch {
    std::vector<T> rewards, mask, scores, baselines;
    std::vector<std::int64_t> ids{3, -8, 3, 100, -8, 3};
    explicit batch(unsigned seed) {
        std::mt19937 gen(seed);
        std::normal_distribution<double> normal;
        for (index_t i = 0; i < rows; ++i) {
            for (index_t t = 0; t < cols; ++t) {
                bool valid = true;
                if (i == 1) valid = t < 4;             // right padding
                if (i == 2) valid = t >= 2;            // left padding
                if (i == 3) valid = t != 3 && t != 4;  // hole
                if (i == 4) valid = false;             // empty row
                mask.push_back(valid ? T{1} : T{0});
                rewards.push_back(static_cast<T>(normal(gen)));
            }
            scores.push_back(static_cast<T>(normal(gen)));
            baselines.push_back(static_cast<T>(normal(gen)));
        }
    }
    [[nodiscard]] rlhf::view<T> r() const { return rlhf::make_view(rewards.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T> m() const { return rlhf::make_view(mask.data(), rows, cols); }
    [[nodiscard]] rlhf::view<std::int64_t, 1> g() const { return {ids.data(), {rows}}; }
};

template <class T>
torch::Tensor tensor_of(const std::vector<T>& values, std::vector<int64_t> shape) {
    return torch::from_blob(const_cast<T*>(values.data()), shape, rlhf::libtorch::dtype_of<T>()).clone();
}

template <class T>
void check_same(const torch::Tensor& t, const std::vector<T>& expected) {
    REQUIRE((t.scalar_type() == rlhf::libtorch::dtype_of<T>()));
    REQUIRE(t.numel() == static_cast<int64_t>(expected.size()));
    const torch::Tensor flat = t.contiguous().reshape({-1});
    for (std::size_t k = 0; k < expected.size(); ++k) CHECK(flat[static_cast<int64_t>(k)].item<T>() == expected[k]);
}

}  // namespace

TEST_CASE_TEMPLATE("libtorch outcome estimators agree with the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    const batch<T> b(17u);
    const torch::Tensor rewards = tensor_of(b.rewards, {rows, cols});
    const torch::Tensor mask = tensor_of(b.mask, {rows, cols}).to(torch::kBool);
    const torch::Tensor ids = tensor_of(b.ids, {rows});
    const torch::Tensor scores = tensor_of(b.scores, {rows});
    std::vector<T> a(static_cast<std::size_t>(rows * cols)), g(a.size()), s(static_cast<std::size_t>(rows));
    const auto av = rlhf::make_mut_view(a.data(), rows, cols);
    const auto gv = rlhf::make_mut_view(g.data(), rows, cols);
    const rlhf::mut_view<T, 1> sv{s.data(), {rows}};
    const rlhf::view<T, 1> scores_view{b.scores.data(), {rows}};

    rlhf::compute_grpo_advantages(b.r(), b.m(), b.g(), av, rlhf::grpo_preset::trl());
    check_same(rlhf::libtorch::compute_grpo_advantages(rewards, mask, ids, rlhf::grpo_preset::trl()), a);
    rlhf::compute_grpo_advantages(scores_view, b.g(), sv);
    check_same(rlhf::libtorch::compute_grpo_advantages(scores, ids), s);
    rlhf::compute_dr_grpo_advantages(b.r(), b.m(), b.g(), av);
    check_same(rlhf::libtorch::compute_dr_grpo_advantages(rewards, mask, ids), a);
    rlhf::compute_dr_grpo_advantages(scores_view, b.g(), sv);
    check_same(rlhf::libtorch::compute_dr_grpo_advantages(scores, ids), s);
    rlhf::compute_rloo_advantages(b.r(), b.m(), b.g(), av);
    check_same(rlhf::libtorch::compute_rloo_advantages(rewards, mask, ids), a);
    rlhf::compute_rloo_advantages(scores_view, b.g(), sv);
    check_same(rlhf::libtorch::compute_rloo_advantages(scores, ids), s);
    rlhf::compute_opo_advantages(b.r(), b.m(), b.g(), av);
    check_same(rlhf::libtorch::compute_opo_advantages(rewards, mask, ids), a);

    const rlhf::cumulative_return_options cumulative{.gamma = 0.9, .masking = rlhf::return_masking::zero_masked};
    rlhf::compute_cumulative_returns(b.r(), b.m(), gv, cumulative);
    check_same(rlhf::libtorch::compute_cumulative_returns(rewards, mask, cumulative), g);

    for (const auto& options :
         {rlhf::reinforce_plus_plus_preset::verl(0.99), rlhf::reinforce_plus_plus_preset::openrlhf(1.0)}) {
        rlhf::compute_reinforce_plus_plus_advantages(b.r(), b.m(), av, gv, options);
        const auto result = rlhf::libtorch::compute_reinforce_plus_plus_advantages(rewards, mask, options);
        check_same(result.advantages, a);
        check_same(result.returns, g);
    }
    for (const auto& options :
         {rlhf::reinforce_plus_plus_baseline_preset::verl(),
          rlhf::reinforce_plus_plus_baseline_options{.broadcast = rlhf::baseline_broadcast::cumulative_returns}}) {
        rlhf::compute_reinforce_plus_plus_baseline_advantages(b.r(), b.m(), b.g(), av, gv, options);
        const auto result =
            rlhf::libtorch::compute_reinforce_plus_plus_baseline_advantages(rewards, mask, ids, options);
        check_same(result.advantages, a);
        check_same(result.returns, g);
    }
    rlhf::compute_remax_advantages(b.r(), b.m(), rlhf::view<T, 1>{b.baselines.data(), {rows}}, av, gv);
    const auto remax = rlhf::libtorch::compute_remax_advantages(rewards, mask, tensor_of(b.baselines, {rows}));
    check_same(remax.advantages, a);
    check_same(remax.returns, g);
}

TEST_CASE("libtorch outcome estimators: a column range / mask dtypes / bad tensors" * doctest::test_suite("unit")) {
    const batch<double> b(3u);
    const torch::Tensor wide = torch::zeros({rows, cols + 3}, torch::kFloat64);
    wide.slice(1, 2, 2 + cols).copy_(tensor_of(b.rewards, {rows, cols}));
    const torch::Tensor rewards = wide.slice(1, 2, 2 + cols);  // row stride cols + 3
    const torch::Tensor ids = tensor_of(b.ids, {rows});
    std::vector<double> expected(static_cast<std::size_t>(rows * cols));
    rlhf::compute_rloo_advantages(b.r(), b.m(), b.g(), rlhf::make_mut_view(expected.data(), rows, cols));
    for (const auto dtype : {torch::kFloat64, torch::kUInt8, torch::kInt32, torch::kInt64, torch::kBool}) {
        const torch::Tensor mask = tensor_of(b.mask, {rows, cols}).to(dtype);
        check_same(rlhf::libtorch::compute_rloo_advantages(rewards, mask, ids), expected);
    }

    const torch::Tensor mask = tensor_of(b.mask, {rows, cols});
    try {
        (void)rlhf::libtorch::compute_grpo_advantages(rewards, mask, ids.to(torch::kInt32));
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::dtype);
        CHECK(e.argument() == "group_ids");
        CHECK(e.function() == "rlhf::libtorch::compute_grpo_advantages");
    }
    try {
        (void)rlhf::libtorch::compute_grpo_advantages(rewards, mask, ids.slice(0, 0, 4));
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::shape);
        CHECK(e.argument() == "group_ids");
        CHECK(e.function() == "rlhf::compute_grpo_advantages");
    }
    try {
        (void)rlhf::libtorch::compute_remax_advantages(rewards, mask, torch::zeros({rows}, torch::kFloat32));
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::dtype);
        CHECK(e.argument() == "reward_baselines");
    }
    try {
        (void)rlhf::libtorch::compute_dr_grpo_advantages(rewards.to(torch::kInt64), mask, ids);
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::dtype);
        CHECK(e.argument() == "token_rewards");
    }
    try {
        (void)rlhf::libtorch::compute_cumulative_returns(rewards, mask, {.gamma = -0.5});
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::config);
        CHECK(e.argument() == "gamma");
    }
}
