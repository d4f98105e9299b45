#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/eigen/outcome_advantages.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"

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

template <class T>
void check_same(const rlhf::eigen::row_matrix<T>& m, const std::vector<T>& expected) {
    REQUIRE(m.size() == static_cast<Eigen::Index>(expected.size()));
    for (std::size_t k = 0; k < expected.size(); ++k) CHECK(m.data()[k] == expected[k]);
}

template <class T>
void check_same(const rlhf::eigen::vector<T>& v, const std::vector<T>& expected) {
    REQUIRE(v.size() == static_cast<Eigen::Index>(expected.size()));
    for (std::size_t k = 0; k < expected.size(); ++k) CHECK(v(static_cast<Eigen::Index>(k)) == expected[k]);
}

}  // namespace

TEST_CASE_TEMPLATE("eigen outcome estimators agree with the kernels" * doctest::test_suite("unit"), T, float, double) {
    const batch<T> b(23u);
    const Eigen::Map<const rlhf::eigen::row_matrix<T>> rewards(b.rewards.data(), rows, cols);
    // A bool mask: any arithmetic element type works.
    Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> mask(rows, cols);
    for (index_t i = 0; i < rows; ++i)
        for (index_t t = 0; t < cols; ++t) mask(i, t) = b.mask[static_cast<std::size_t>(i * cols + t)] != T{0};
    const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> ids(b.ids.data(), rows);
    const Eigen::Map<const rlhf::eigen::vector<T>> scores(b.scores.data(), rows);
    const Eigen::Map<const rlhf::eigen::vector<T>> baselines(b.baselines.data(), rows);
    std::vector<T> a(static_cast<std::size_t>(rows * cols)), g(a.size()), s(static_cast<std::size_t>(rows));
    const auto av = rlhf::make_mut_view(a.data(), rows, cols);
    const auto gv = rlhf::make_mut_view(g.data(), rows, cols);
    const rlhf::mut_view<T, 1> sv{s.data(), {rows}};

    rlhf::compute_grpo_advantages(b.r(), b.m(), b.g(), av, rlhf::grpo_preset::chatlearn());
    check_same(rlhf::eigen::compute_grpo_advantages(rewards, mask, ids, rlhf::grpo_preset::chatlearn()), a);
    rlhf::compute_grpo_advantages(b.s(), b.g(), sv);
    check_same(rlhf::eigen::compute_grpo_advantages(scores, ids), s);
    rlhf::compute_dr_grpo_advantages(b.r(), b.m(), b.g(), av);
    check_same(rlhf::eigen::compute_dr_grpo_advantages(rewards, mask, ids), a);
    rlhf::compute_dr_grpo_advantages(b.s(), b.g(), sv);
    check_same(rlhf::eigen::compute_dr_grpo_advantages(scores, ids), s);
    rlhf::compute_rloo_advantages(b.r(), b.m(), b.g(), av);
    check_same(rlhf::eigen::compute_rloo_advantages(rewards, mask, ids), a);
    rlhf::compute_rloo_advantages(b.s(), b.g(), sv);
    check_same(rlhf::eigen::compute_rloo_advantages(scores, ids), s);
    rlhf::compute_opo_advantages(b.r(), b.m(), b.g(), av);
    check_same(rlhf::eigen::compute_opo_advantages(rewards, mask, ids), a);

    const rlhf::cumulative_return_options cumulative{.gamma = 0.9, .masking = rlhf::return_masking::skip_masked};
    rlhf::compute_cumulative_returns(b.r(), b.m(), gv, cumulative);
    check_same(rlhf::eigen::compute_cumulative_returns(rewards, mask, cumulative), g);

    for (const auto& options :
         {rlhf::reinforce_plus_plus_preset::verl(0.99), rlhf::reinforce_plus_plus_preset::openrlhf(1.0)}) {
        rlhf::compute_reinforce_plus_plus_advantages(b.r(), b.m(), av, gv, options);
        const auto result = rlhf::eigen::compute_reinforce_plus_plus_advantages(rewards, mask, options);
        check_same(result.advantages, a);
        check_same(result.returns, g);
    }
    for (const auto& options :
         {rlhf::reinforce_plus_plus_baseline_preset::verl(),
          rlhf::reinforce_plus_plus_baseline_options{.broadcast = rlhf::baseline_broadcast::cumulative_returns}}) {
        rlhf::compute_reinforce_plus_plus_baseline_advantages(b.r(), b.m(), b.g(), av, gv, options);
        const auto result = rlhf::eigen::compute_reinforce_plus_plus_baseline_advantages(rewards, mask, ids, options);
        check_same(result.advantages, a);
        check_same(result.returns, g);
    }
    rlhf::compute_remax_advantages(b.r(), b.m(), b.b(), av, gv);
    const auto remax = rlhf::eigen::compute_remax_advantages(rewards, mask, baselines);
    check_same(remax.advantages, a);
    check_same(remax.returns, g);
}

TEST_CASE("eigen outcome estimators: a block of a wider matrix / bad input" * doctest::test_suite("unit")) {
    const batch<double> b(4u);
    rlhf::eigen::row_matrix<double> wide = rlhf::eigen::row_matrix<double>::Zero(rows, cols + 2);
    for (index_t i = 0; i < rows; ++i)
        for (index_t t = 0; t < cols; ++t) wide(i, t + 1) = b.rewards[static_cast<std::size_t>(i * cols + t)];
    const Eigen::Map<const rlhf::eigen::row_matrix<double>> mask(b.mask.data(), rows, cols);
    const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> ids(b.ids.data(), rows);
    std::vector<double> expected(static_cast<std::size_t>(rows * cols));
    rlhf::compute_opo_advantages(b.r(), b.m(), b.g(), rlhf::make_mut_view(expected.data(), rows, cols));
    check_same(rlhf::eigen::compute_opo_advantages(wide.middleCols(1, cols), mask, ids), expected);

    const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> short_ids(b.ids.data(), rows - 1);
    try {
        (void)rlhf::eigen::compute_grpo_advantages(wide.middleCols(1, cols), mask, short_ids);
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::shape);
        CHECK(e.argument() == "group_ids");
    }
    try {
        (void)rlhf::eigen::compute_rloo_advantages(wide.middleCols(1, cols), mask, ids,
                                                   {.singleton = rlhf::singleton_group_policy::raise});
        FAIL("expected rlhf::error");
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "group_ids");
        CHECK(e.actual() == "group 100 with 1 row (row 3)");
    }
}
