#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/xtensor/outcome_advantages.hpp"
#include "support/backend_agreement.hpp"
#include "support/fixtures.hpp"
#include "support/xtensor_test_helpers.hpp"

using rlhf_test::check_same;
using rlhf_test::container;
using rlhf_test::outcome_batch;

namespace {

RLHF_TEST_OUTCOME_BACKEND(xtensor_backend, rlhf::xtensor);
constexpr rlhf::index_t rows = outcome_batch<double>::rows, cols = outcome_batch<double>::cols;
constexpr std::array<std::size_t, 2> matrix_shape{static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)};
constexpr std::array<std::size_t, 1> vector_shape{static_cast<std::size_t>(rows)};

}  // namespace

TEST_CASE_TEMPLATE("xtensor outcome estimators agree with the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    const outcome_batch<T> b(29u);
    std::vector<std::uint8_t> bytes;
    for (const T m : b.mask) bytes.push_back(m != T{0} ? 1 : 0);
    rlhf_test::check_outcome_agreement<xtensor_backend>(
        b, container(b.rewards, matrix_shape), container(bytes, matrix_shape) /* a uint8 mask */,
        container(b.ids, vector_shape), container(b.scores, vector_shape), container(b.baselines, vector_shape),
        [](const auto& x, const auto& e) { check_same(x, e); }, rlhf::grpo_preset::chatlearn(),
        {.gamma = 0.9, .masking = rlhf::return_masking::skip_masked});
}

TEST_CASE("xtensor outcome estimators reject bad input / naming it" * doctest::test_suite("unit")) {
    const outcome_batch<double> b(5u);
    const auto rewards = container(b.rewards, matrix_shape);
    const auto mask = container(b.mask, matrix_shape);
    const auto ids = container(b.ids, vector_shape);
    auto nan_rewards = rewards;
    nan_rewards(4, 6) = std::numeric_limits<double>::quiet_NaN();  // in the empty row
    auto e = rlhf_test::check_error([&] { (void)rlhf::xtensor::compute_grpo_advantages(nan_rewards, mask, ids); },
                                    rlhf::error_kind::value, "token_rewards");
    CHECK(e.actual() == "nan at [4, 6]");
    auto soft = mask;
    soft(0, 0) = 0.5;
    rlhf_test::check_error([&] { (void)rlhf::xtensor::compute_reinforce_plus_plus_advantages(rewards, soft); },
                           rlhf::error_kind::value, "mask");
    const xt::xtensor<double, 1> flat = xt::xtensor<double, 1>(std::array<std::size_t, 1>{4});
    rlhf_test::check_error([&] { (void)rlhf::xtensor::compute_cumulative_returns(flat, flat); },
                           rlhf::error_kind::shape, "rewards");
}
