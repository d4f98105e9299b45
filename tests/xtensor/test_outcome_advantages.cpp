#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/xtensor/outcome_advantages.hpp"

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
    [[nodiscard]] rlhf::view<T, 1> s() const { return {scores.data(), {rows}}; }
    [[nodiscard]] rlhf::view<T, 1> b() const { return {baselines.data(), {rows}}; }
};

template <class T, std::size_t N>
void check_same(const xt::xtensor<T, N>& x, const std::vector<T>& expected) {
    REQUIRE(x.size() == expected.size());
    for (std::size_t k = 0; k < expected.size(); ++k) CHECK(x.data()[k] == expected[k]);
}

template <class T, std::size_t N>
xt::xtensor<T, N> container(const std::vector<T>& values, std::array<std::size_t, N> shape) {
    xt::xtensor<T, N> out(shape);
    std::copy(values.begin(), values.end(), out.data());
    return out;
}

constexpr std::array<std::size_t, 2> matrix_shape{static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)};
constexpr std::array<std::size_t, 1> vector_shape{static_cast<std::size_t>(rows)};

}  // namespace

TEST_CASE_TEMPLATE("xtensor outcome estimators agree with the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    const batch<T> b(29u);
    const auto rewards = container(b.rewards, matrix_shape);
    std::vector<std::uint8_t> bytes;
    for (const T m : b.mask) bytes.push_back(m != T{0} ? 1 : 0);
    const auto mask = container(bytes, matrix_shape);  // a uint8 mask
    const auto ids = container(b.ids, vector_shape);
    const auto scores = container(b.scores, vector_shape);
    const auto baselines = container(b.baselines, vector_shape);
    std::vector<T> a(static_cast<std::size_t>(rows * cols)), g(a.size()), s(static_cast<std::size_t>(rows));
    const auto av = rlhf::make_mut_view(a.data(), rows, cols);
    const auto gv = rlhf::make_mut_view(g.data(), rows, cols);
    const rlhf::mut_view<T, 1> sv{s.data(), {rows}};

    rlhf::compute_grpo_advantages(b.r(), b.m(), b.g(), av, rlhf::grpo_preset::chatlearn());
    check_same(rlhf::xtensor::compute_grpo_advantages(rewards, mask, ids, rlhf::grpo_preset::chatlearn()), a);
    rlhf::compute_grpo_advantages(b.s(), b.g(), sv);
    check_same(rlhf::xtensor::compute_grpo_advantages(scores, ids), s);
    rlhf::compute_dr_grpo_advantages(b.r(), b.m(), b.g(), av);
    check_same(rlhf::xtensor::compute_dr_grpo_advantages(rewards, mask, ids), a);
    rlhf::compute_dr_grpo_advantages(b.s(), b.g(), sv);
    check_same(rlhf::xtensor::compute_dr_grpo_advantages(scores, ids), s);
    rlhf::compute_rloo_advantages(b.r(), b.m(), b.g(), av);
    check_same(rlhf::xtensor::compute_rloo_advantages(rewards, mask, ids), a);
    rlhf::compute_rloo_advantages(b.s(), b.g(), sv);
    check_same(rlhf::xtensor::compute_rloo_advantages(scores, ids), s);
    rlhf::compute_opo_advantages(b.r(), b.m(), b.g(), av);
    check_same(rlhf::xtensor::compute_opo_advantages(rewards, mask, ids), a);

    const rlhf::cumulative_return_options cumulative{.gamma = 0.9, .masking = rlhf::return_masking::skip_masked};
    rlhf::compute_cumulative_returns(b.r(), b.m(), gv, cumulative);
    check_same(rlhf::xtensor::compute_cumulative_returns(rewards, mask, cumulative), g);

    for (const auto& options :
         {rlhf::reinforce_plus_plus_preset::verl(0.99), rlhf::reinforce_plus_plus_preset::openrlhf(1.0)}) {
        rlhf::compute_reinforce_plus_plus_advantages(b.r(), b.m(), av, gv, options);
        const auto result = rlhf::xtensor::compute_reinforce_plus_plus_advantages(rewards, mask, options);
        check_same(result.advantages, a);
        check_same(result.returns, g);
    }
    for (const auto& options :
         {rlhf::reinforce_plus_plus_baseline_preset::verl(),
          rlhf::reinforce_plus_plus_baseline_options{.broadcast = rlhf::baseline_broadcast::cumulative_returns}}) {
        rlhf::compute_reinforce_plus_plus_baseline_advantages(b.r(), b.m(), b.g(), av, gv, options);
        const auto result = rlhf::xtensor::compute_reinforce_plus_plus_baseline_advantages(rewards, mask, ids, options);
        check_same(result.advantages, a);
        check_same(result.returns, g);
    }
    rlhf::compute_remax_advantages(b.r(), b.m(), b.b(), av, gv);
    const auto remax = rlhf::xtensor::compute_remax_advantages(rewards, mask, baselines);
    check_same(remax.advantages, a);
    check_same(remax.returns, g);
}

TEST_CASE("xtensor outcome estimators reject bad input / naming it" * doctest::test_suite("unit")) {
    const batch<double> b(5u);
    const auto rewards = container(b.rewards, matrix_shape);
    const auto mask = container(b.mask, matrix_shape);
    const auto ids = container(b.ids, vector_shape);
    auto nan_rewards = rewards;
    nan_rewards(4, 6) = std::numeric_limits<double>::quiet_NaN();  // in the empty row
    try {
        (void)rlhf::xtensor::compute_grpo_advantages(nan_rewards, mask, ids);
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "token_rewards");
        CHECK(e.actual() == "nan at [4, 6]");
    }
    auto soft = mask;
    soft(0, 0) = 0.5;
    try {
        (void)rlhf::xtensor::compute_reinforce_plus_plus_advantages(rewards, soft);
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "mask");
    }
    const xt::xtensor<double, 1> flat = xt::xtensor<double, 1>(std::array<std::size_t, 1>{4});
    try {
        (void)rlhf::xtensor::compute_cumulative_returns(flat, flat);
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::shape);
        CHECK(e.argument() == "rewards");
    }
}
