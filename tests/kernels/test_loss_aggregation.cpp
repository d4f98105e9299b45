#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "rlhf/kernels/loss_aggregation.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::expect_error;

namespace {

// L = [[1,2,3],[4,5,6],[7,8,9]], mask = [[1,1,0],[0,0,0],[1,0,1]]: row sums 3, 0, 16.
const std::vector<double> losses{1, 2, 3, 4, 5, 6, 7, 8, 9};
const std::vector<double> mask_values{1, 1, 0, 0, 0, 0, 1, 0, 1};

// Sums every value twice, as two identical data-parallel ranks would; counts its calls.
struct two_rank_reducer {
    int* calls;
    void sum_all(std::span<double> values) const {
        ++*calls;
        for (double& v : values) v *= 2.0;
    }
};

}  // namespace

TEST_CASE("aggregate: each mode against hand-computed values" * doctest::test_suite("unit")) {
    const auto l = rlhf::make_view(losses.data(), 3, 3);
    const auto m = rlhf::make_view(mask_values.data(), 3, 3);
    using rlhf::loss_aggregation;
    CHECK(rlhf::aggregate(l, m) == doctest::Approx(19.0 / 4.0).epsilon(1e-15));
    CHECK(rlhf::aggregate(l, m, {}, {.mode = loss_aggregation::seq_mean_token_sum}) ==
          doctest::Approx(19.0 / 2.0).epsilon(1e-15));
    const double eps = 1e-8;
    CHECK(rlhf::aggregate(l, m, {}, {.mode = loss_aggregation::seq_mean_token_mean}) ==
          doctest::Approx((3.0 / (2 + eps) + 16.0 / (2 + eps)) / 2.0).epsilon(1e-15));
    CHECK(rlhf::aggregate(l, m, {}, {.mode = loss_aggregation::seq_mean_token_mean, .token_count_epsilon = 0.0}) ==
          doctest::Approx((1.5 + 8.0) / 2.0).epsilon(1e-15));
    CHECK(rlhf::aggregate(l, m, {}, {.mode = loss_aggregation::seq_mean_token_sum_norm}) ==
          doctest::Approx(19.0 / 3.0).epsilon(1e-15));
    CHECK(rlhf::aggregate(l, m, {}, {.mode = loss_aggregation::seq_mean_token_sum_norm, .normalizer = 4096.0}) ==
          doctest::Approx(19.0 / 4096.0).epsilon(1e-15));
    // verl: explicit global counts times dp_size; sum-norm ignores dp_size.
    CHECK(rlhf::aggregate(l, m, {}, {.global_token_count = 100.0, .dp_size = 2.0}) ==
          doctest::Approx(19.0 / 100.0 * 2.0).epsilon(1e-15));
    CHECK(
        rlhf::aggregate(
            l, m, {}, {.mode = loss_aggregation::seq_mean_token_sum, .global_sequence_count = 16.0, .dp_size = 2.0}) ==
        doctest::Approx(19.0 / 16.0 * 2.0).epsilon(1e-15));
    CHECK(rlhf::aggregate(l, m, {}, {.mode = loss_aggregation::seq_mean_token_sum_norm, .dp_size = 2.0}) ==
          doctest::Approx(19.0 / 3.0).epsilon(1e-15));
}

TEST_CASE("aggregate: the gradient is m * c_b" * doctest::test_suite("gradient")) {
    const auto l = rlhf::make_view(losses.data(), 3, 3);
    const auto m = rlhf::make_view(mask_values.data(), 3, 3);
    std::vector<double> g(9, -1.0);
    const auto gv = rlhf::make_mut_view(g.data(), 3, 3);
    (void)rlhf::aggregate(l, m, gv, {.mode = rlhf::loss_aggregation::seq_mean_token_mean, .token_count_epsilon = 0.0});
    const std::vector<double> expected{0.25, 0.25, 0, 0, 0, 0, 0.25, 0, 0.25};
    for (std::size_t i = 0; i < 9; ++i) CHECK(g[i] == doctest::Approx(expected[i]).epsilon(1e-15));
    // Central differences: the aggregation is linear, so they are exact up to rounding.
    for (const auto mode :
         {rlhf::loss_aggregation::token_mean, rlhf::loss_aggregation::seq_mean_token_sum,
          rlhf::loss_aggregation::seq_mean_token_mean, rlhf::loss_aggregation::seq_mean_token_sum_norm}) {
        CAPTURE(rlhf::to_string(mode));
        const rlhf::aggregation_options options{.mode = mode};
        (void)rlhf::aggregate(l, m, gv, options);
        std::vector<double> x = losses;
        const auto loss = [&] { return rlhf::aggregate(rlhf::make_view(x.data(), 3, 3), m, {}, options); };
        for (std::size_t i = 0; i < 9; ++i)
            CHECK(rlhf_test::central_difference(loss, x, i, 1e-4) == doctest::Approx(g[i]).epsilon(1e-9));
    }
}

TEST_CASE("row_weights: coefficients per row / empty rows get 0" * doctest::test_suite("unit")) {
    const auto m = rlhf::make_view(mask_values.data(), 3, 3);
    std::vector<double> w(3);
    const rlhf::mut_view<double, 1> wv(w.data(), {3});
    auto counts = rlhf::row_weights(m, wv, {.mode = rlhf::loss_aggregation::seq_mean_token_sum});
    CHECK(counts.local_tokens == 4.0);
    CHECK(counts.local_sequences == 2.0);
    CHECK(counts.divisor == 2.0);
    CHECK(w == std::vector<double>{0.5, 0.0, 0.5});
    counts = rlhf::row_weights(m, wv, {});
    CHECK(w == std::vector<double>{0.25, 0.25, 0.25});
    CHECK(counts.divisor == 4.0);
}

TEST_CASE("aggregate: a reducer makes the counts global (one collective call)" * doctest::test_suite("unit")) {
    const auto l = rlhf::make_view(losses.data(), 3, 3);
    const auto m = rlhf::make_view(mask_values.data(), 3, 3);
    int calls = 0;
    const two_rank_reducer reducer{&calls};
    // Two identical ranks: 8 tokens in all, so this rank's share is 19 / 8.
    CHECK(rlhf::aggregate(l, m, {}, {}, reducer) == doctest::Approx(19.0 / 8.0));
    CHECK(calls == 1);
    CHECK(rlhf::aggregate(l, m, {}, {.mode = rlhf::loss_aggregation::seq_mean_token_sum}, reducer) ==
          doctest::Approx(19.0 / 4.0));
    CHECK(calls == 2);
    // Nothing to reduce when the count is explicit or the mode needs none.
    (void)rlhf::aggregate(l, m, {}, {.global_token_count = 8.0}, reducer);
    (void)rlhf::aggregate(l, m, {}, {.mode = rlhf::loss_aggregation::seq_mean_token_sum_norm}, reducer);
    CHECK(calls == 2);
}

TEST_CASE_TEMPLATE("aggregate: every mask type / float values" * doctest::test_suite("unit"), M, bool, std::uint8_t,
                   std::int32_t, std::int64_t, float, double) {
    std::vector<float> lf(losses.begin(), losses.end());
    const rlhf_test::mask_buffer<M> mm(mask_values);
    const auto l = rlhf::make_view(lf.data(), 3, 3);
    const auto m = mm.view(3, 3);
    CHECK(rlhf::aggregate(l, m) == doctest::Approx(19.0 / 4.0).epsilon(1e-7));
    std::vector<float> g(9);
    (void)rlhf::aggregate(l, m, rlhf::make_mut_view(g.data(), 3, 3),
                          {.mode = rlhf::loss_aggregation::seq_mean_token_sum});
    CHECK(g[0] == 0.5f);
    CHECK(g[2] == 0.0f);
}

TEST_CASE("aggregate: empty-mask policy" * doctest::test_suite("unit")) {
    const std::vector<double> zeros(9, 0.0);
    const auto l = rlhf::make_view(losses.data(), 3, 3);
    const auto z = rlhf::make_view(zeros.data(), 3, 3);
    for (const auto mode : {rlhf::loss_aggregation::token_mean, rlhf::loss_aggregation::seq_mean_token_sum,
                            rlhf::loss_aggregation::seq_mean_token_mean}) {
        const auto e = expect_error([&] { (void)rlhf::aggregate(l, z, {}, {.mode = mode}); });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "mask");
        CHECK(e.function() == "rlhf::aggregate");
    }
    // A positive global divisor: this rank contributes 0 and a zero gradient.
    std::vector<double> g(9, 7.0);
    CHECK(rlhf::aggregate(l, z, rlhf::make_mut_view(g.data(), 3, 3), {.global_token_count = 10.0}) == 0.0);
    CHECK(g == zeros);
    CHECK(rlhf::aggregate(l, z, {},
                          {.mode = rlhf::loss_aggregation::seq_mean_token_sum, .global_sequence_count = 3.0}) == 0.0);
    CHECK(rlhf::aggregate(l, z, {}, {.mode = rlhf::loss_aggregation::seq_mean_token_sum_norm}) == 0.0);
    // T = 0: no default sum-norm divisor.
    const auto e = expect_error([&] {
        (void)rlhf::aggregate(rlhf::make_view(losses.data(), 3, 0), rlhf::make_view(zeros.data(), 3, 0), {},
                              {.mode = rlhf::loss_aggregation::seq_mean_token_sum_norm});
    });
    CHECK(e.argument() == "mask");
}

TEST_CASE("aggregate: bad inputs name the argument" * doctest::test_suite("unit")) {
    const auto l = rlhf::make_view(losses.data(), 3, 3);
    const auto m = rlhf::make_view(mask_values.data(), 3, 3);
    auto e = expect_error([&] { (void)rlhf::aggregate(l, rlhf::make_view(mask_values.data(), 3, 2)); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "mask");
    std::vector<double> g(6);
    e = expect_error([&] { (void)rlhf::aggregate(l, m, rlhf::make_mut_view(g.data(), 2, 3)); });
    CHECK(e.argument() == "grad_losses");
    std::vector<double> bad = losses;
    bad[4] = std::numeric_limits<double>::quiet_NaN();
    e = expect_error([&] { (void)rlhf::aggregate(rlhf::make_view(bad.data(), 3, 3), m); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "losses");
    std::vector<double> bad_mask = mask_values;
    bad_mask[0] = 2.0;
    e = expect_error([&] { (void)rlhf::aggregate(l, rlhf::make_view(bad_mask.data(), 3, 3)); });
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)rlhf::aggregate(l, m, {}, {.dp_size = 0.0}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "options.dp_size");
    e = expect_error([&] { (void)rlhf::aggregate(l, m, {}, {.global_token_count = -1.0}); });
    CHECK(e.argument() == "options.global_token_count");
    e = expect_error([&] { (void)rlhf::aggregate(l, m, {}, {.global_sequence_count = 0.0}); });
    CHECK(e.argument() == "options.global_sequence_count");
    e = expect_error([&] { (void)rlhf::aggregate(l, m, {}, {.normalizer = std::numeric_limits<double>::infinity()}); });
    CHECK(e.argument() == "options.normalizer");
    e = expect_error([&] { (void)rlhf::aggregate(l, m, {}, {.token_count_epsilon = -1e-8}); });
    CHECK(e.argument() == "options.token_count_epsilon");
    std::vector<double> w(2);
    e = expect_error([&] { (void)rlhf::row_weights(m, rlhf::mut_view<double, 1>(w.data(), {2}), {}); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "weights");
}

// Found by tests/fuzz (docs/fuzzing.md): an unknown mode left the token counts as weights, and a
// divisor so small that dp_size / divisor overflows gave infinite weights (a zero loss became NaN).
TEST_CASE("aggregate: unknown modes and divisors whose weight overflows are config errors" *
          doctest::test_suite("unit")) {
    const std::vector<double> token_losses{1.0, 2.0};
    const std::vector<double> mask{1.0, 1.0};
    const auto l = rlhf::make_view(token_losses.data(), 1, 2);
    const auto m = rlhf::make_view(mask.data(), 1, 2);
    const auto refused = [&](const rlhf::aggregation_options& o, const char* argument) {
        rlhf_test::check_error([&] { (void)rlhf::aggregate(l, m, rlhf::mut_view<double>{}, o); },
                               rlhf::error_kind::config, argument);
    };
    refused({.mode = static_cast<rlhf::loss_aggregation>(7)}, "options.mode");
    refused({.global_token_count = 5e-324}, "options.global_token_count");
    refused({.mode = rlhf::loss_aggregation::seq_mean_token_sum, .global_sequence_count = 1e-310, .dp_size = 1e10},
            "options.global_sequence_count");
    refused({.mode = rlhf::loss_aggregation::seq_mean_token_sum_norm, .normalizer = 5e-324}, "options.normalizer");
    // Small divisors with finite weights are fine.
    CHECK(rlhf::aggregate(l, m, rlhf::mut_view<double>{}, {.global_token_count = 1e-300}) == doctest::Approx(3e300));
}
