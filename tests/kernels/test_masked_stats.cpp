#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "rlhf/cuda/stats_scope.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::as;
using rlhf_test::expect_error;
using rlhf_test::mask_buffer;
using rlhf_test::mut_view_of;
using rlhf_test::tolerance;
using rlhf_test::view_of;

namespace {

// Naive references: straightforward loops over a flat buffer, no shared code with the kernels.
struct naive_moments {
    double count = 0, mean = 0, var = 0;
};

naive_moments naive(const std::vector<double>& x, const std::vector<int>& m, std::size_t begin, std::size_t end,
                    bool unbiased, double count_epsilon = 0.0) {
    naive_moments r;
    double sum = 0;
    for (std::size_t i = begin; i < end; ++i)
        if (m[i] != 0) {
            r.count += 1;
            sum += x[i];
        }
    r.mean = sum / (r.count + count_epsilon);
    double ssd = 0;
    for (std::size_t i = begin; i < end; ++i)
        if (m[i] != 0) ssd += (x[i] - r.mean) * (x[i] - r.mean);
    r.var = ssd / (r.count + count_epsilon);
    if (unbiased) r.var = r.var * r.count / (r.count - 1);
    return r;
}

struct batch {
    std::size_t rows, cols;
    std::vector<double> x;
    std::vector<int> m;  // 0/1, reference copy
};

// Random values with a random mask: holes, left/right padding and an empty row when rows >= 3.
batch random_batch(std::mt19937& rng, std::size_t rows, std::size_t cols, bool empty_row) {
    std::normal_distribution<double> normal(0.5, 2.0);
    std::bernoulli_distribution keep(0.7);
    batch b{rows, cols, std::vector<double>(rows * cols), std::vector<int>(rows * cols)};
    for (std::size_t i = 0; i < rows * cols; ++i) {
        b.x[i] = normal(rng);
        b.m[i] = keep(rng) ? 1 : 0;
    }
    for (std::size_t r = 0; r < rows; ++r) {  // at least two valid per row
        b.m[r * cols] = 1;
        b.m[r * cols + cols - 1] = 1;
    }
    if (empty_row && rows >= 3)
        for (std::size_t c = 0; c < cols; ++c) b.m[cols + c] = 0;
    return b;
}

/// A reducer that plays a second rank holding `other`: it adds that rank's {count, sum}, then its
/// squared deviations about the global mean (what an all-reduce over two ranks returns).
struct two_rank_reducer {
    const batch* other;
    int calls = 0;
    double total_count = 0, total_sum = 0;
    void sum_all(std::span<double> values) {
        if (values.size() == 2) {  // {count, sum}
            double c = 0, s = 0;
            for (std::size_t i = 0; i < other->x.size(); ++i)
                if (other->m[i] != 0) {
                    c += 1;
                    s += other->x[i];
                }
            values[0] += c;
            values[1] += s;
            total_count = values[0];
            total_sum = values[1];
        } else {  // {squared deviations about the global mean}
            const double mean = total_sum / total_count;
            double ssd = 0;
            for (std::size_t i = 0; i < other->x.size(); ++i)
                if (other->m[i] != 0) ssd += (other->x[i] - mean) * (other->x[i] - mean);
            values[0] += ssd;
        }
        ++calls;
    }
};

struct counting_reducer {
    int calls = 0;
    void sum_all(std::span<double> /*values*/) { ++calls; }
};

}  // namespace

TEST_CASE("masked moments of a hand-computed example" * doctest::test_suite("unit")) {
    // valid elements 1, 2, 4, 6: count 4, sum 13, mean 3.25, squared deviations 14.75
    const std::vector<double> x{1, 2, 3, 4, 5, 6};
    const std::vector<std::uint8_t> m{1, 1, 0, 1, 0, 1};
    const auto v = view_of(x, 2, 3);
    const auto mv = view_of(m, 2, 3);
    const auto moments = rlhf::compute_masked_moments(v, mv);
    CHECK(moments.count == 4.0);
    CHECK(moments.sum == 13.0);
    CHECK(moments.mean == 3.25);
    CHECK(moments.variance == doctest::Approx(14.75 / 3).epsilon(1e-15));
    CHECK(rlhf::masked_mean(v, mv) == 3.25);
    CHECK(rlhf::masked_variance(v, mv) == doctest::Approx(14.75 / 3).epsilon(1e-15));
    CHECK(rlhf::masked_variance(v, mv, {.variance = rlhf::variance_estimator::biased}) ==
          doctest::Approx(14.75 / 4).epsilon(1e-15));
    // verl / ColossalChat: the count + 1e-8 in the mean's denominator.
    CHECK(rlhf::masked_mean(v, mv, {.count_epsilon = 1e-8}) == doctest::Approx(13.0 / (4.0 + 1e-8)).epsilon(1e-15));
    std::vector<double> row_means(2), row_vars(2);
    rlhf::masked_mean_per_row(v, mv, rlhf::make_mut_view(std::span<double>(row_means)));
    rlhf::masked_variance_per_row(v, mv, rlhf::make_mut_view(std::span<double>(row_vars)));
    CHECK(row_means[0] == 1.5);
    CHECK(row_means[1] == 5.0);
    CHECK(row_vars[0] == doctest::Approx(0.5));  // (0.25 + 0.25) / 1
    CHECK(row_vars[1] == doctest::Approx(2.0));  // (1 + 1) / 1
    // whitened: (x - 3.25) / sqrt(14.75/3 + 1e-8), written at masked positions too (TRL)
    std::vector<double> out(6);
    rlhf::masked_whiten(v, mv, mut_view_of(out, 2, 3));
    const double s = 1.0 / std::sqrt(14.75 / 3 + 1e-8);
    for (std::size_t i = 0; i < 6; ++i) CHECK(out[i] == doctest::Approx((x[i] - 3.25) * s).epsilon(1e-14));
    rlhf::masked_whiten(v, mv, mut_view_of(out, 2, 3), {.shift_mean = false, .zero_masked = true});
    CHECK(out[2] == 0.0);
    CHECK(out[4] == 0.0);
    CHECK(out[0] == doctest::Approx((1 - 3.25) * s + 3.25).epsilon(1e-14));
}

TEST_CASE_TEMPLATE("masked_whiten matches a naive reference (per batch / per row / all options)" *
                       doctest::test_suite("unit"),
                   T, float, double) {
    std::mt19937 rng(1234);
    for (int trial = 0; trial < 20; ++trial) {
        const std::size_t rows = 1 + static_cast<std::size_t>(trial % 5),
                          cols = 1 + static_cast<std::size_t>(trial * 7 % 23) + 2;
        const batch b = random_batch(rng, rows, cols, false);
        const auto x = as<T>(b.x);
        const auto m = as<std::int64_t>(b.m);
        std::vector<double> xd(x.begin(), x.end());  // the reference sees the rounded inputs
        for (const auto scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row})
            for (const auto estimator : {rlhf::variance_estimator::unbiased, rlhf::variance_estimator::biased})
                for (const auto mode : {rlhf::whiten_epsilon::add_to_variance, rlhf::whiten_epsilon::clamp_variance})
                    for (const bool shift : {true, false})
                        for (const bool zero_masked : {false, true}) {
                            const rlhf::whiten_options options{.shift_mean = shift,
                                                               .variance = estimator,
                                                               .scope = scope,
                                                               .epsilon = 1e-3,
                                                               .epsilon_mode = mode,
                                                               .zero_masked = zero_masked};
                            std::vector<T> out(x.size());
                            rlhf::masked_whiten(view_of(x, rows, cols), view_of(m, rows, cols),
                                                mut_view_of(out, rows, cols), options);
                            for (std::size_t r = 0; r < rows; ++r) {
                                const bool batchwide = scope == rlhf::whiten_scope::per_batch;
                                const auto ref =
                                    naive(xd, b.m, batchwide ? 0 : r * cols, batchwide ? rows * cols : (r + 1) * cols,
                                          estimator == rlhf::variance_estimator::unbiased);
                                const double guarded = mode == rlhf::whiten_epsilon::add_to_variance
                                                           ? ref.var + 1e-3
                                                           : std::max(ref.var, 1e-3);
                                for (std::size_t c = 0; c < cols; ++c) {
                                    const std::size_t i = r * cols + c;
                                    double expected =
                                        (xd[i] - ref.mean) / std::sqrt(guarded) + (shift ? 0.0 : ref.mean);
                                    if (zero_masked && b.m[i] == 0) expected = 0.0;
                                    CHECK(static_cast<double>(out[i]) ==
                                          doctest::Approx(expected).epsilon(tolerance<T>()).scale(1.0));
                                }
                            }
                        }
    }
}

TEST_CASE("masked_whiten accepts every mask type and works in place" * doctest::test_suite("unit")) {
    std::mt19937 rng(7);
    const batch b = random_batch(rng, 4, 9, true);
    const rlhf::whiten_options options{.scope = rlhf::whiten_scope::per_row,
                                       .small_sample = rlhf::small_sample_policy::zero_variance};
    std::vector<double> reference(b.x.size());
    const auto m8 = as<std::uint8_t>(b.m);
    rlhf::masked_whiten(view_of(b.x, 4, 9), view_of(m8, 4, 9), mut_view_of(reference, 4, 9), options);
    const mask_buffer<bool> mb(b.m);
    const auto m32 = as<std::int32_t>(b.m);
    const auto mf = as<double>(b.m);
    std::vector<double> out(b.x.size());
    rlhf::masked_whiten(view_of(b.x, 4, 9), mb.view(4, 9), mut_view_of(out, 4, 9), options);
    CHECK(out == reference);
    rlhf::masked_whiten(view_of(b.x, 4, 9), view_of(m32, 4, 9), mut_view_of(out, 4, 9), options);
    CHECK(out == reference);
    rlhf::masked_whiten(view_of(b.x, 4, 9), view_of(mf, 4, 9), mut_view_of(out, 4, 9), options);
    CHECK(out == reference);
    std::vector<double> in_place = b.x;
    rlhf::masked_whiten(view_of(in_place, 4, 9), view_of(m8, 4, 9), mut_view_of(in_place, 4, 9), options);
    CHECK(in_place == reference);
    // A partial overlap is refused.
    std::vector<double> shifted(b.x.size() + 1);
    const auto e = expect_error([&] {
        rlhf::masked_whiten(rlhf::make_view(shifted.data(), 4, 9), view_of(m8, 4, 9),
                            rlhf::make_mut_view(shifted.data() + 1, 4, 9), options);
    });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "out");
}

TEST_CASE("masked_whiten over a column range of a wider buffer" * doctest::test_suite("unit")) {
    // [2, 5] buffer; whiten columns [2, 5) only, through row strides, and compare with a copy.
    const std::vector<double> wide{9, 9, 1, 2, 3, 9, 9, 4, 5, 7};
    const std::vector<double> narrow{1, 2, 3, 4, 5, 7};
    const std::vector<int> mask{1, 1, 0, 1, 1, 1};
    const rlhf::view<double> columns{wide.data() + 2, {2, 3}, {5, 1}};
    std::vector<double> a(6), b(6);
    rlhf::masked_whiten(columns, view_of(mask, 2, 3), mut_view_of(a, 2, 3));
    rlhf::masked_whiten(view_of(narrow, 2, 3), view_of(mask, 2, 3), mut_view_of(b, 2, 3));
    CHECK(a == b);
}

TEST_CASE("masked_whiten options: scale / count_epsilon / clamp versus add" * doctest::test_suite("unit")) {
    const std::vector<double> x{1.0, 1.0 + 1e-5, 1.0 - 1e-5, 1.0};
    const std::vector<int> m{1, 1, 1, 1};
    std::vector<double> out(4);
    // scale = false only centres (OpenRLHF no_std_norm).
    rlhf::masked_whiten(view_of(x, 1, 4), view_of(m, 1, 4), mut_view_of(out, 1, 4), {.scale = false});
    CHECK(out[1] == doctest::Approx(1e-5).epsilon(1e-9));
    // A variance below epsilon: add gives (x - mean) / sqrt(var + eps), clamp (x - mean) / sqrt(eps).
    const double var = (1e-10 + 1e-10) / 3;
    rlhf::masked_whiten(view_of(x, 1, 4), view_of(m, 1, 4), mut_view_of(out, 1, 4), {.epsilon = 1e-8});
    CHECK(out[1] == doctest::Approx(1e-5 / std::sqrt(var + 1e-8)).epsilon(1e-9));
    rlhf::masked_whiten(view_of(x, 1, 4), view_of(m, 1, 4), mut_view_of(out, 1, 4),
                        {.epsilon = 1e-8, .epsilon_mode = rlhf::whiten_epsilon::clamp_variance});
    CHECK(out[1] == doctest::Approx(1e-5 / std::sqrt(1e-8)).epsilon(1e-9));
    // count_epsilon shrinks the mean: (x - 4/(4 + 0.5)) with the variance about that mean.
    const std::vector<double> y{0, 2, 0, 2};
    rlhf::masked_whiten(view_of(y, 1, 4), view_of(m, 1, 4), mut_view_of(out, 1, 4),
                        {.variance = rlhf::variance_estimator::biased, .count_epsilon = 0.5});
    const double mean = 4.0 / 4.5;
    const double v = (2 * mean * mean + 2 * (2 - mean) * (2 - mean)) / 4.5;
    CHECK(out[0] == doctest::Approx(-mean / std::sqrt(v + 1e-8)).epsilon(1e-12));
}

TEST_CASE("small-sample policy: empty mask / one valid element / empty rows" * doctest::test_suite("unit")) {
    const std::vector<double> x{1, 2, 3, 4, 5, 6};
    const std::vector<int> none{0, 0, 0, 0, 0, 0};
    const std::vector<int> one{0, 1, 0, 0, 0, 0};
    std::vector<double> out(6);
    const auto v = view_of(x, 2, 3);
    const auto o = mut_view_of(out, 2, 3);

    // All-zero mask, batch scope.
    auto e = expect_error([&] { rlhf::masked_whiten(v, view_of(none, 2, 3), o); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.function() == "rlhf::masked_whiten");
    CHECK(e.argument() == "mask");
    CHECK(e.actual() == "0 valid elements");
    rlhf::masked_whiten(v, view_of(none, 2, 3), o, {.small_sample = rlhf::small_sample_policy::skip});
    CHECK(out == x);
    rlhf::masked_whiten(v, view_of(none, 2, 3), o,
                        {.small_sample = rlhf::small_sample_policy::skip, .zero_masked = true});
    CHECK(out == std::vector<double>(6, 0.0));
    rlhf::masked_whiten(v, view_of(none, 2, 3), o, {.small_sample = rlhf::small_sample_policy::zero_variance});
    CHECK(out[5] == doctest::Approx(6.0 / std::sqrt(1e-8)));  // mean 0, variance 0
    rlhf::masked_whiten(v, view_of(none, 2, 3), o,
                        {.small_sample = rlhf::small_sample_policy::zero_variance, .zero_masked = true});
    CHECK(out == std::vector<double>(6, 0.0));

    // One valid element under the unbiased estimator (TRL: NaN; verl: raises).
    e = expect_error([&] { rlhf::masked_whiten(v, view_of(one, 2, 3), o); });
    CHECK(e.argument() == "mask");
    CHECK(e.expected() == "at least 2 valid elements (mask entries 1) for an unbiased variance");
    CHECK(e.actual() == "1 valid element");
    rlhf::masked_whiten(v, view_of(one, 2, 3), o, {.small_sample = rlhf::small_sample_policy::skip});
    CHECK(out == x);
    rlhf::masked_whiten(v, view_of(one, 2, 3), o, {.small_sample = rlhf::small_sample_policy::zero_variance});
    CHECK(out[1] == 0.0);                                      // x - mean, mean = the single value
    CHECK(out[0] == doctest::Approx(-1.0 / std::sqrt(1e-8)));  // masked, (1 - 2) / sqrt(eps)
    rlhf::masked_whiten(v, view_of(one, 2, 3), o,
                        {.shift_mean = false, .small_sample = rlhf::small_sample_policy::zero_variance});
    CHECK(out[1] == 2.0);
    // Biased variance of one element is 0: no policy involved.
    CHECK_NOTHROW(rlhf::masked_whiten(v, view_of(one, 2, 3), o, {.variance = rlhf::variance_estimator::biased}));
    CHECK(out[1] == 0.0);
    // Centring only needs a mean: one element is enough.
    CHECK_NOTHROW(rlhf::masked_whiten(v, view_of(one, 2, 3), o, {.scale = false}));

    // Per row: the policy applies per row and the error names the row.
    const std::vector<int> row_empty{1, 1, 0, 0, 0, 0};
    e = expect_error(
        [&] { rlhf::masked_whiten(v, view_of(row_empty, 2, 3), o, {.scope = rlhf::whiten_scope::per_row}); });
    CHECK(e.actual() == "0 valid elements in row 1");
    rlhf::masked_whiten(v, view_of(row_empty, 2, 3), o,
                        {.scope = rlhf::whiten_scope::per_row, .small_sample = rlhf::small_sample_policy::skip});
    CHECK(out[3] == 4.0);
    CHECK(out[5] == 6.0);
    CHECK(out[0] == doctest::Approx(-0.5 / std::sqrt(0.5 + 1e-8)));  // row 0 still whitened
    // OpenRLHF masked_normalize: empty rows give zeros.
    rlhf::masked_whiten(v, view_of(row_empty, 2, 3), o,
                        {.variance = rlhf::variance_estimator::biased,
                         .scope = rlhf::whiten_scope::per_row,
                         .epsilon_mode = rlhf::whiten_epsilon::clamp_variance,
                         .small_sample = rlhf::small_sample_policy::zero_variance,
                         .zero_masked = true});
    CHECK(out[3] == 0.0);
    CHECK(out[4] == 0.0);
    CHECK(out[5] == 0.0);
    CHECK(out[0] == doctest::Approx(-1.0));

    // The plain statistics.
    e = expect_error([&] { (void)rlhf::masked_mean(v, view_of(none, 2, 3)); });
    CHECK(e.function() == "rlhf::masked_mean");
    CHECK(e.expected() == "at least 1 valid element (mask entry 1)");
    CHECK(rlhf::masked_mean(v, view_of(none, 2, 3), {.small_sample = rlhf::small_sample_policy::zero_variance}) == 0.0);
    CHECK(rlhf::masked_mean(v, view_of(one, 2, 3)) == 2.0);
    e = expect_error([&] { (void)rlhf::masked_variance(v, view_of(one, 2, 3)); });
    CHECK(e.function() == "rlhf::masked_variance");
    CHECK(rlhf::masked_variance(v, view_of(one, 2, 3), {.small_sample = rlhf::small_sample_policy::skip}) == 0.0);
    std::vector<double> per_row(2);
    e = expect_error([&] {
        rlhf::masked_mean_per_row(v, view_of(row_empty, 2, 3), rlhf::make_mut_view(std::span<double>(per_row)));
    });
    CHECK(e.actual() == "0 valid elements in row 1");
    rlhf::masked_mean_per_row(v, view_of(row_empty, 2, 3), rlhf::make_mut_view(std::span<double>(per_row)),
                              {.small_sample = rlhf::small_sample_policy::zero_variance});
    CHECK(per_row == std::vector<double>{1.5, 0.0});
    e = expect_error(
        [&] { rlhf::masked_variance_per_row(v, view_of(one, 2, 3), rlhf::make_mut_view(std::span<double>(per_row))); });
    CHECK(e.actual() == "1 valid element in row 0");
}

TEST_CASE("masked statistics reject bad input with the argument's name" * doctest::test_suite("unit")) {
    std::vector<double> x{1, 2, 3, 4, 5, 6};
    const std::vector<int> m{1, 1, 1, 1, 1, 1};
    const std::vector<int> short_mask{1, 1, 1, 1};
    std::vector<double> out(6), small_out(4);
    // shapes
    auto e =
        expect_error([&] { rlhf::masked_whiten(view_of(x, 2, 3), view_of(short_mask, 2, 2), mut_view_of(out, 2, 3)); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { rlhf::masked_whiten(view_of(x, 2, 3), view_of(m, 2, 3), mut_view_of(small_out, 2, 2)); });
    CHECK(e.argument() == "out");
    std::vector<double> rows(3);
    e = expect_error([&] {
        rlhf::masked_mean_per_row(view_of(x, 2, 3), view_of(m, 2, 3), rlhf::make_mut_view(std::span<double>(rows)));
    });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "out");
    // mask entries
    const std::vector<int> two{1, 2, 1, 1, 1, 1};
    e = expect_error([&] { (void)rlhf::masked_mean(view_of(x, 2, 3), view_of(two, 2, 3)); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "mask");
    // non-finite values, masked positions included
    const std::vector<int> masked_nan{1, 1, 0, 1, 1, 1};
    x[2] = std::numeric_limits<double>::quiet_NaN();
    e = expect_error([&] { rlhf::masked_whiten(view_of(x, 2, 3), view_of(masked_nan, 2, 3), mut_view_of(out, 2, 3)); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "values");
    CHECK(e.actual() == "nan at [0, 2]");
    x[2] = std::numeric_limits<double>::infinity();
    e = expect_error([&] { (void)rlhf::masked_variance(view_of(x, 2, 3), view_of(m, 2, 3)); });
    CHECK(e.argument() == "values");
    CHECK(e.actual() == "inf at [0, 2]");
    x[2] = 3;
    // options
    e = expect_error(
        [&] { rlhf::masked_whiten(view_of(x, 2, 3), view_of(m, 2, 3), mut_view_of(out, 2, 3), {.epsilon = 0.0}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "epsilon");
    e = expect_error([&] {
        rlhf::masked_whiten(view_of(x, 2, 3), view_of(m, 2, 3), mut_view_of(out, 2, 3),
                            {.epsilon = std::numeric_limits<double>::quiet_NaN()});
    });
    CHECK(e.argument() == "epsilon");
    e = expect_error([&] { (void)rlhf::masked_mean(view_of(x, 2, 3), view_of(m, 2, 3), {.count_epsilon = -1e-8}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "count_epsilon");
}

TEST_CASE("whiten: the unmasked form equals masked_whiten with an all-ones mask" * doctest::test_suite("unit")) {
    std::mt19937 rng(3);
    const std::vector<double> x = rlhf_test::random_normal(rng, 24);
    const std::vector<int> ones(24, 1);
    std::vector<double> a(24), b(24);
    for (const auto scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row}) {
        rlhf::whiten(view_of(x, 4, 6), mut_view_of(a, 4, 6), {.scope = scope});
        rlhf::masked_whiten(view_of(x, 4, 6), view_of(ones, 4, 6), mut_view_of(b, 4, 6), {.scope = scope});
        CHECK(a == b);
    }
    // One element: the error names 'values' (there is no mask).
    const std::vector<double> single{3.0};
    std::vector<double> out(1);
    const auto e = expect_error([&] { rlhf::whiten(view_of(single, 1, 1), mut_view_of(out, 1, 1)); });
    CHECK(e.function() == "rlhf::whiten");
    CHECK(e.argument() == "values");
    CHECK(e.actual() == "1 element");
}

TEST_CASE("per-batch statistics are global through the reducer" * doctest::test_suite("unit")) {
    std::mt19937 rng(11);
    const batch mine = random_batch(rng, 3, 7, false);
    const batch theirs = random_batch(rng, 2, 7, false);
    // The reference: the concatenation of both ranks' rows.
    batch all{5, 7, mine.x, mine.m};
    all.x.insert(all.x.end(), theirs.x.begin(), theirs.x.end());
    all.m.insert(all.m.end(), theirs.m.begin(), theirs.m.end());
    const auto ref = naive(all.x, all.m, 0, all.x.size(), true);
    two_rank_reducer reducer{&theirs};
    std::vector<double> out(mine.x.size());
    rlhf::masked_whiten(view_of(mine.x, 3, 7), view_of(mine.m, 3, 7), mut_view_of(out, 3, 7), {}, reducer);
    CHECK(reducer.calls == 2);
    for (std::size_t i = 0; i < out.size(); ++i)
        CHECK(out[i] == doctest::Approx((mine.x[i] - ref.mean) / std::sqrt(ref.var + 1e-8)).epsilon(1e-12));
    two_rank_reducer again{&theirs};
    const auto moments = rlhf::compute_masked_moments(view_of(mine.x, 3, 7), view_of(mine.m, 3, 7), {}, again);
    CHECK(moments.count == ref.count);
    CHECK(moments.mean == doctest::Approx(ref.mean).epsilon(1e-14));
    CHECK(moments.variance == doctest::Approx(ref.var).epsilon(1e-12));
    // One reduction for a mean, none for per-row scopes.
    counting_reducer count;
    (void)rlhf::masked_mean(view_of(mine.x, 3, 7), view_of(mine.m, 3, 7), {}, count);
    CHECK(count.calls == 1);
    rlhf::masked_whiten(view_of(mine.x, 3, 7), view_of(mine.m, 3, 7), mut_view_of(out, 3, 7),
                        {.scope = rlhf::whiten_scope::per_row}, count);
    CHECK(count.calls == 1);
}

TEST_CASE("whiten_epsilon names" * doctest::test_suite("unit")) {
    CHECK(rlhf::to_string(rlhf::whiten_epsilon::add_to_variance) == "add_to_variance");
    CHECK(rlhf::to_string(rlhf::whiten_epsilon::clamp_variance) == "clamp_variance");
    CHECK(rlhf::parse_option<rlhf::whiten_epsilon>("clamp_variance") == rlhf::whiten_epsilon::clamp_variance);
    const auto e = expect_error([] { (void)rlhf::parse_option<rlhf::whiten_epsilon>("clamp"); });
    CHECK(e.kind() == rlhf::error_kind::config);
}

TEST_CASE("running_moments: TRL's update formula / merge / policies / reducer" * doctest::test_suite("unit")) {
    // Hand-computed: batch {1, 2, 3}: mean 2, population var 2/3, unbiased std 1.
    rlhf::running_moments running;
    CHECK(running.mean() == 0.0);
    CHECK(running.std() == 1.0);
    CHECK(running.var() == 1.0);
    CHECK(running.count() == 1e-24);
    const std::vector<double> first{1, 2, 3};
    const auto b1 = running.update(rlhf::make_view(std::span<const double>(first)));
    CHECK(b1.mean == 2.0);
    CHECK(b1.std == doctest::Approx(1.0).epsilon(1e-15));
    CHECK(b1.count == 3.0);
    CHECK(running.mean() == doctest::Approx(2.0).epsilon(1e-15));
    CHECK(running.var() == doctest::Approx(2.0 / 3).epsilon(1e-15));
    CHECK(running.std() == doctest::Approx(1.0).epsilon(1e-15));
    CHECK(running.count() == doctest::Approx(3.0));
    // Batch {5, 7}: all five {1, 2, 3, 5, 7}: mean 3.6, population var 4.64.
    const std::vector<float> second{5, 7};
    const auto b2 = running.update(rlhf::make_view(std::span<const float>(second)));
    CHECK(b2.mean == 6.0);
    CHECK(b2.std == doctest::Approx(std::sqrt(2.0)));
    CHECK(running.mean() == doctest::Approx(3.6).epsilon(1e-14));
    CHECK(running.var() == doctest::Approx(4.64).epsilon(1e-14));
    CHECK(running.std() == doctest::Approx(std::sqrt(4.64 * 5 / 4)).epsilon(1e-14));

    // merge: two streams merged equal one stream over both.
    rlhf::running_moments a, b, both;
    const std::vector<double> xs{0.5, -1, 4, 2.5}, ys{3, 3.5, -2};
    (void)a.update(rlhf::make_view(std::span<const double>(xs)));
    (void)b.update(rlhf::make_view(std::span<const double>(ys)));
    (void)both.update(rlhf::make_view(std::span<const double>(xs)));
    (void)both.update(rlhf::make_view(std::span<const double>(ys)));
    a.merge(b);
    CHECK(a.mean() == doctest::Approx(both.mean()).epsilon(1e-14));
    CHECK(a.var() == doctest::Approx(both.var()).epsilon(1e-14));
    CHECK(a.std() == doctest::Approx(both.std()).epsilon(1e-14));
    CHECK(a.count() == doctest::Approx(both.count()));

    // Masked update: only the valid elements count.
    rlhf::running_moments masked;
    const std::vector<double> grid{1, 9, 2, 3};
    const std::vector<int> grid_mask{1, 0, 1, 1};
    const auto bm = masked.update(view_of(grid, 2, 2), view_of(grid_mask, 2, 2));
    CHECK(bm.mean == 2.0);
    CHECK(bm.count == 3.0);

    // Policies: one element (TRL: NaN std), none.
    const std::vector<double> lone{5.0};
    const auto lone_view = rlhf::make_view(std::span<const double>(lone));
    rlhf::running_moments strict(running.state());
    auto e = expect_error([&] { (void)strict.update(lone_view); });
    CHECK(e.function() == "rlhf::running_moments::update");
    CHECK(e.argument() == "values");
    CHECK(strict.count() == running.count());  // unchanged
    rlhf::running_moments zero(running.state(), {.small_sample = rlhf::small_sample_policy::zero_variance});
    const auto z = zero.update(lone_view);
    CHECK(z.std == 0.0);
    CHECK(zero.count() == doctest::Approx(6.0));
    rlhf::running_moments skip(running.state(), {.small_sample = rlhf::small_sample_policy::skip});
    const auto s = skip.update(lone_view);
    CHECK(s.mean == 5.0);
    CHECK(s.std == 0.0);
    CHECK(skip.count() == running.count());
    const std::vector<double> nothing;
    e = expect_error([&] { (void)strict.update(rlhf::make_view(std::span<const double>(nothing))); });
    CHECK(e.actual() == "0 elements");
    // A fresh state fed one element under zero_variance: total count 1, std 0 (TRL: NaN).
    rlhf::running_moments fresh({.small_sample = rlhf::small_sample_policy::zero_variance});
    (void)fresh.update(lone_view);
    CHECK(fresh.std() == 0.0);
    CHECK(fresh.mean() == doctest::Approx(5.0));
    // Non-finite batch, bad state.
    const std::vector<double> bad{1.0, std::numeric_limits<double>::quiet_NaN()};
    e = expect_error([&] { (void)running.update(rlhf::make_view(std::span<const double>(bad))); });
    CHECK(e.argument() == "values");
    e = expect_error([] {
        const rlhf::running_moments broken(rlhf::running_moments_state{.count = 0.0});
        (void)broken;
    });
    CHECK(e.argument() == "state.count");

    // The reducer makes the batch global: this rank's {1, 2, 3} plus another rank's {5, 7}.
    const batch other{1, 2, {5, 7}, {1, 1}};
    two_rank_reducer reducer{&other};
    rlhf::running_moments global;
    const auto g = global.update(rlhf::make_view(std::span<const double>(first)), reducer);
    CHECK(reducer.calls == 2);
    CHECK(g.mean == doctest::Approx(3.6));
    CHECK(g.count == 5.0);
    CHECK(g.std == doctest::Approx(std::sqrt(4.64 * 5 / 4)));
}

TEST_CASE("masked_whiten: skip copies a small scope under a bool mask per row and per batch" *
          doctest::test_suite("unit")) {
    // GCC 12 at -O2 once compiled the skip branch away for bool masks (the scope was whitened).
    for (const auto& [rows, cols] : std::vector<std::pair<rlhf::index_t, rlhf::index_t>>{{4, 1}, {3, 5}, {1, 4}}) {
        std::vector<double> x(static_cast<std::size_t>(rows * cols)), out(x.size(), 9.0);
        bool mask[64] = {};
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.1 * static_cast<double>(i + 1);
        for (rlhf::index_t r = 0; r < rows; ++r) mask[r * cols] = true;  // one valid element per row
        const rlhf::view<double> v(x.data(), {rows, cols});
        const rlhf::view<bool> m(mask, {rows, cols});
        const rlhf::mut_view<double> o(out.data(), {rows, cols});
        rlhf::masked_whiten(v, m, o,
                            {.scope = rlhf::whiten_scope::per_row, .small_sample = rlhf::small_sample_policy::skip});
        CHECK(out == x);
        if (rows == 1) {
            std::fill(out.begin(), out.end(), 9.0);
            rlhf::masked_whiten(v, m, o, {.small_sample = rlhf::small_sample_policy::skip, .count_epsilon = 1e-8});
            CHECK(out == x);
        }
    }
}

// Found by tests/fuzz (docs/fuzzing.md): an unknown small-sample policy acted as zero_variance.
TEST_CASE("running_moments: an unknown small-sample policy is refused" * doctest::test_suite("unit")) {
    const rlhf::running_moments_options bad{.small_sample = static_cast<rlhf::small_sample_policy>(9)};
    rlhf_test::check_error([&] { rlhf::running_moments r(bad); }, rlhf::error_kind::config, "small_sample");
    rlhf_test::check_error([&] { rlhf::running_moments r(rlhf::running_moments_state{}, bad); },
                           rlhf::error_kind::config, "small_sample");
}

// The scope functions behind the CUDA statistics (rlhf/cuda/stats_scope.hpp, CUDA-free): from a
// scope's count, sum and squared deviations (added here by plain loops), they give the CPU
// kernels' moments and whitened outputs under the policies the device supports (zero_variance,
// skip), for every option that changes the formula.
TEST_CASE("stats_scope: moments and whitening from a scope's sums equal the CPU kernels" *
          doctest::test_suite("unit")) {
    namespace scope = rlhf::detail::stats_scope;
    std::mt19937 rng(31);
    std::normal_distribution<double> normal(3.0, 2.0);
    std::bernoulli_distribution keep(0.6);
    const std::size_t rows = 6, cols = 9;
    std::vector<double> x(rows * cols);
    std::vector<int> m(rows * cols);
    for (std::size_t i = 0; i < x.size(); ++i) {
        x[i] = normal(rng);
        m[i] = keep(rng) ? 1 : 0;
    }
    for (std::size_t t = 0; t < cols; ++t) {
        m[cols + t] = 0;                   // row 1 empty
        m[2 * cols + t] = t == 4 ? 1 : 0;  // row 2: one valid element
    }
    const auto R = static_cast<rlhf::index_t>(rows), C = static_cast<rlhf::index_t>(cols);
    // count, sum, mean, variance of the rows [begin, end) as the device computes them.
    const auto device_moments = [&](std::size_t begin, std::size_t end, double count_epsilon,
                                    rlhf::variance_estimator estimator) {
        double count = 0, sum = 0, ssd = 0;
        for (std::size_t i = begin * cols; i < end * cols; ++i)
            if (m[i] != 0) {
                count += 1;
                sum += x[i];
            }
        const double mean = scope::mean(count, sum, count_epsilon);
        for (std::size_t i = begin * cols; i < end * cols; ++i)
            if (m[i] != 0) ssd += (x[i] - mean) * (x[i] - mean);
        return rlhf::masked_moments{count, sum, mean, scope::variance(count, ssd, count_epsilon, estimator)};
    };
    for (const auto estimator : {rlhf::variance_estimator::unbiased, rlhf::variance_estimator::biased}) {
        for (const double count_epsilon : {0.0, 1e-8}) {
            const rlhf::moments_options options{estimator, rlhf::small_sample_policy::zero_variance, count_epsilon};
            const rlhf::masked_moments cpu = rlhf::compute_masked_moments(view_of(x, R, C), view_of(m, R, C), options);
            const rlhf::masked_moments dev = device_moments(0, rows, count_epsilon, estimator);
            CHECK(dev.count == cpu.count);
            CHECK(dev.mean == doctest::Approx(cpu.mean).epsilon(1e-13));
            CHECK(dev.variance == doctest::Approx(cpu.variance).epsilon(1e-13));
            std::vector<double> means(rows), variances(rows);
            rlhf::masked_mean_per_row(view_of(x, R, C), view_of(m, R, C), rlhf_test::mut_vec(means), options);
            rlhf::masked_variance_per_row(view_of(x, R, C), view_of(m, R, C), rlhf_test::mut_vec(variances), options);
            for (std::size_t b = 0; b < rows; ++b) {
                const rlhf::masked_moments row = device_moments(b, b + 1, count_epsilon, estimator);
                CHECK(row.mean == doctest::Approx(means[b]).epsilon(1e-13));
                CHECK(row.variance == doctest::Approx(variances[b]).epsilon(1e-13));
            }
        }
    }
    std::vector<rlhf::whiten_options> flavours = {
        {.small_sample = rlhf::small_sample_policy::zero_variance},
        {.small_sample = rlhf::small_sample_policy::skip, .count_epsilon = 1e-8},
        {.variance = rlhf::variance_estimator::biased,
         .epsilon_mode = rlhf::whiten_epsilon::clamp_variance,
         .small_sample = rlhf::small_sample_policy::zero_variance},
        {.shift_mean = false, .small_sample = rlhf::small_sample_policy::skip, .zero_masked = true},
        {.epsilon = 0.5, .small_sample = rlhf::small_sample_policy::zero_variance, .scale = false},
        {.small_sample = rlhf::small_sample_policy::skip, .scale = false},
    };
    for (rlhf::whiten_options options : flavours) {
        for (const auto whiten_scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row}) {
            options.scope = whiten_scope;
            std::vector<double> cpu(x.size()), dev(x.size());
            rlhf::masked_whiten(view_of(x, R, C), view_of(m, R, C), mut_view_of(cpu, R, C), options);
            const bool per_row = whiten_scope == rlhf::whiten_scope::per_row;
            for (std::size_t b = 0; b < rows; ++b) {
                const rlhf::masked_moments s = per_row
                                                   ? device_moments(b, b + 1, options.count_epsilon, options.variance)
                                                   : device_moments(0, rows, options.count_epsilon, options.variance);
                const scope::whitening w = scope::whitening_of(s.count, s.mean, s.variance, options);
                for (std::size_t t = 0; t < cols; ++t) {
                    const std::size_t i = b * cols + t;
                    dev[i] = scope::whitened(w, m[i] != 0, x[i], options.zero_masked);
                }
            }
            for (std::size_t i = 0; i < x.size(); ++i) CHECK(dev[i] == doctest::Approx(cpu[i]).epsilon(1e-12));
        }
    }
}
