#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/eigen/outcome_advantages.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "support/backend_agreement.hpp"
#include "support/fixtures.hpp"

using rlhf_test::check_same;
using rlhf_test::outcome_batch;

namespace {

RLHF_TEST_OUTCOME_BACKEND(eigen_backend, rlhf::eigen);
constexpr rlhf::index_t rows = outcome_batch<double>::rows, cols = outcome_batch<double>::cols;

}  // namespace

TEST_CASE_TEMPLATE("eigen outcome estimators agree with the kernels" * doctest::test_suite("unit"), T, float, double) {
    const outcome_batch<T> b(23u);
    const Eigen::Map<const rlhf::eigen::row_matrix<T>> rewards(b.rewards.data(), rows, cols);
    // A bool mask: any arithmetic element type works.
    Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> mask(rows, cols);
    for (rlhf::index_t i = 0; i < rows; ++i)
        for (rlhf::index_t t = 0; t < cols; ++t) mask(i, t) = b.mask[static_cast<std::size_t>(i * cols + t)] != T{0};
    const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> ids(b.ids.data(), rows);
    const Eigen::Map<const rlhf::eigen::vector<T>> scores(b.scores.data(), rows);
    const Eigen::Map<const rlhf::eigen::vector<T>> baselines(b.baselines.data(), rows);
    rlhf_test::check_outcome_agreement<eigen_backend>(
        b, rewards, mask, ids, scores, baselines, [](const auto& x, const auto& e) { check_same(x, e); },
        rlhf::grpo_preset::chatlearn(), {.gamma = 0.9, .masking = rlhf::return_masking::skip_masked});
}

TEST_CASE("eigen outcome estimators: a block of a wider matrix / bad input" * doctest::test_suite("unit")) {
    const outcome_batch<double> b(4u);
    rlhf::eigen::row_matrix<double> wide = rlhf::eigen::row_matrix<double>::Zero(rows, cols + 2);
    for (rlhf::index_t i = 0; i < rows; ++i)
        for (rlhf::index_t t = 0; t < cols; ++t) wide(i, t + 1) = b.rewards[static_cast<std::size_t>(i * cols + t)];
    const Eigen::Map<const rlhf::eigen::row_matrix<double>> mask(b.mask.data(), rows, cols);
    const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> ids(b.ids.data(), rows);
    std::vector<double> expected(static_cast<std::size_t>(rows * cols));
    rlhf::compute_opo_advantages(b.r(), b.m(), b.g(), rlhf::make_mut_view(expected.data(), rows, cols));
    check_same(rlhf::eigen::compute_opo_advantages(wide.middleCols(1, cols), mask, ids), expected);

    const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> short_ids(b.ids.data(), rows - 1);
    rlhf_test::check_error(
        [&] { (void)rlhf::eigen::compute_grpo_advantages(wide.middleCols(1, cols), mask, short_ids); },
        rlhf::error_kind::shape, "group_ids");
    const auto e = rlhf_test::check_error(
        [&] {
            (void)rlhf::eigen::compute_rloo_advantages(wide.middleCols(1, cols), mask, ids,
                                                       {.singleton = rlhf::singleton_group_policy::raise});
        },
        rlhf::error_kind::value, "group_ids");
    CHECK(e.actual() == "group 100 with 1 row (row 3)");
}
