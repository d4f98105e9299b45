#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "rlhf/cuda/group_ids.hpp"
#include "rlhf/cuda/return_scan.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::expect_error;
using rlhf_test::matrix;
using rlhf_test::mut_vec;
using rlhf_test::vec;

namespace {

using rlhf::index_t;

// B = 5, T = 3; groups {7: rows 0, 2, 4} and {-3: rows 1, 3}; scores 1, 0.5, 2, -0.5, 6 placed on the
// last valid token; valid lengths 3, 2, 1, 3, 2 (right padding).
struct fixture {
    matrix<double> rewards{5, 3, {0, 0, 1, 0, 0.5, 0, 2, 0, 0, 0, 0, -0.5, 0, 6, 0}};
    matrix<double> mask{5, 3, {1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 0}};
    std::vector<std::int64_t> ids{7, -3, 7, -3, 7};
    matrix<double> out{5, 3};
};

// Expected per-row values broadcast times the mask.
void check_rows(const matrix<double>& out, const matrix<double>& mask, const std::vector<double>& rows) {
    for (index_t i = 0; i < out.rows; ++i)
        for (index_t t = 0; t < out.cols; ++t)
            CHECK(out(i, t) == doctest::Approx(rows[static_cast<std::size_t>(i)] * mask(i, t)).epsilon(1e-13));
}

// ---- naive references: straight loops over all pairs of rows ----

std::vector<double> naive_scores(const matrix<double>& r) {
    std::vector<double> s(static_cast<std::size_t>(r.rows), 0.0);
    for (index_t i = 0; i < r.rows; ++i)
        for (index_t t = 0; t < r.cols; ++t) s[static_cast<std::size_t>(i)] += r(i, t);
    return s;
}

// kind: 0 grpo (normalised), 1 mean baseline, 2 rloo, 3 opo. Singletons follow verl (raw score).
std::vector<double> naive_group(const std::vector<double>& s, const std::vector<std::int64_t>& ids,
                                const std::vector<double>& len, int kind, double eps, bool biased) {
    const std::size_t n_rows = s.size();
    std::vector<double> out(n_rows);
    for (std::size_t i = 0; i < n_rows; ++i) {
        double n = 0, sum = 0, wsum = 0, lsum = 0;
        for (std::size_t j = 0; j < n_rows; ++j)
            if (ids[j] == ids[i]) {
                n += 1;
                sum += s[j];
                if (kind == 3) {
                    wsum += len[j] * s[j];
                    lsum += len[j];
                }
            }
        if (n == 1) {
            out[i] = kind == 0 ? s[i] / (1 + eps) : s[i];
            continue;
        }
        const double mean = sum / n;
        if (kind == 0) {
            double ss = 0;
            for (std::size_t j = 0; j < n_rows; ++j)
                if (ids[j] == ids[i]) ss += (s[j] - mean) * (s[j] - mean);
            out[i] = (s[i] - mean) / (std::sqrt(ss / (biased ? n : n - 1)) + eps);
        } else if (kind == 1) {
            out[i] = s[i] - mean;
        } else if (kind == 2) {
            out[i] = s[i] - (sum - s[i]) / (n - 1);
        } else {
            out[i] = s[i] - (lsum > 0 ? wsum / lsum : 0.0);
        }
    }
    return out;
}

// Unbiased masked whitening over the whole batch, rsqrt(var + 1e-8), means over Σm + 1e-8, masked
// positions 0 (verl `masked_whiten` times the mask).
matrix<double> naive_whiten(const matrix<double>& x, const matrix<double>& m) {
    double n = 0, sum = 0;
    for (index_t i = 0; i < x.rows; ++i)
        for (index_t t = 0; t < x.cols; ++t)
            if (m(i, t) != 0) {
                n += 1;
                sum += x(i, t);
            }
    const double mean = sum / (n + 1e-8);
    double ss = 0;
    for (index_t i = 0; i < x.rows; ++i)
        for (index_t t = 0; t < x.cols; ++t)
            if (m(i, t) != 0) ss += (x(i, t) - mean) * (x(i, t) - mean);
    const double var = ss / (n + 1e-8) * n / (n - 1);
    matrix<double> out(x.rows, x.cols);
    for (index_t i = 0; i < x.rows; ++i)
        for (index_t t = 0; t < x.cols; ++t) out(i, t) = m(i, t) != 0 ? (x(i, t) - mean) / std::sqrt(var + 1e-8) : 0.0;
    return out;
}

// Reverse discounted returns, written from the definitions of each masking.
matrix<double> naive_returns(const matrix<double>& r, const matrix<double>& m, double gamma,
                             rlhf::return_masking masking) {
    matrix<double> g(r.rows, r.cols);
    for (index_t i = 0; i < r.rows; ++i) {
        for (index_t t = 0; t < r.cols; ++t) {
            double total = 0;
            if (masking == rlhf::return_masking::zero_masked) {
                for (index_t u = t; u < r.cols; ++u) total += std::pow(gamma, double(u - t)) * r(i, u) * m(i, u);
            } else if (masking == rlhf::return_masking::reset_at_masked) {
                // Own reward (whatever its mask), then later rewards up to the next mask-0 slot, excluded.
                total = r(i, t);
                for (index_t u = t + 1; u < r.cols && m(i, u) != 0; ++u)
                    total += std::pow(gamma, double(u - t)) * r(i, u);
            } else if (m(i, t) != 0) {  // skip_masked: discount counts valid tokens only
                double k = 0;
                for (index_t u = t; u < r.cols; ++u)
                    if (m(i, u) != 0) {
                        total += std::pow(gamma, k) * r(i, u);
                        k += 1;
                    }
            }
            g(i, t) = total;
        }
    }
    return g;
}

template <class T>
matrix<T> cast(const matrix<double>& x) {
    return {x.rows, x.cols, rlhf_test::as<T>(x.data)};
}

struct random_batch {
    matrix<double> rewards, mask;
    std::vector<std::int64_t> ids;
    std::vector<double> baselines;
};

// Random rewards, masks with left/right padding, holes and one empty row; ids in shuffled order.
random_batch make_random(index_t rows, index_t cols, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal;
    std::uniform_int_distribution<int> pick(0, 4);
    random_batch b{matrix<double>(rows, cols), matrix<double>(rows, cols), {}, {}};
    for (index_t i = 0; i < rows; ++i) {
        const int kind = pick(gen);
        for (index_t t = 0; t < cols; ++t) {
            double m = 1;
            if (kind == 1) m = t < cols - 1 - i % 3 ? 1 : 0;                  // right padding
            if (kind == 2) m = t >= 1 + i % 2 ? 1 : 0;                        // left padding
            if (kind == 3) m = (t == cols / 2 || t == cols / 2 + 1) ? 0 : 1;  // interior hole
            b.mask(i, t) = m;
            b.rewards(i, t) = 0.1 * normal(gen);
        }
        b.ids.push_back(static_cast<std::int64_t>(std::uniform_int_distribution<int>(0, 3)(gen)) * 1000 - 1500);
        b.baselines.push_back(normal(gen));
    }
    for (index_t t = 0; t < cols; ++t) b.mask(rows - 2, t) = 0;  // an empty row
    b.ids[static_cast<std::size_t>(rows - 1)] = 123456789;       // a singleton
    return b;
}

}  // namespace

TEST_CASE("GRPO advantages by hand / non-contiguous group ids" * doctest::test_suite("unit")) {
    fixture f;
    const double s7 = std::sqrt(7.0);  // group 7: scores 1, 2, 6, mean 3, unbiased var 14 / 2
    const double sm = std::sqrt(0.5);  // group -3: scores 0.5, -0.5, mean 0, unbiased var 0.5
    rlhf::compute_grpo_advantages(f.rewards.view(), f.mask.view(), vec(f.ids), f.out.mut());
    check_rows(f.out, f.mask,
               {-2 / (s7 + 1e-6), 0.5 / (sm + 1e-6), -1 / (s7 + 1e-6), -0.5 / (sm + 1e-6), 3 / (s7 + 1e-6)});

    const double b7 = std::sqrt(14.0 / 3.0);  // population std
    rlhf::compute_grpo_advantages(f.rewards.view(), f.mask.view(), vec(f.ids), f.out.mut(),
                                  {.epsilon = 1e-5, .std_estimator = rlhf::variance_estimator::biased});
    check_rows(f.out, f.mask,
               {-2 / (b7 + 1e-5), 0.5 / (0.5 + 1e-5), -1 / (b7 + 1e-5), -0.5 / (0.5 + 1e-5), 3 / (b7 + 1e-5)});

    rlhf::compute_grpo_advantages(f.rewards.view(), f.mask.view(), vec(f.ids), f.out.mut(),
                                  {.normalize_by_std = false});
    check_rows(f.out, f.mask, {-2, 0.5, -1, -0.5, 3});
    rlhf::compute_dr_grpo_advantages(f.rewards.view(), f.mask.view(), vec(f.ids), f.out.mut());
    check_rows(f.out, f.mask, {-2, 0.5, -1, -0.5, 3});
}

TEST_CASE("RLOO and OPO advantages by hand" * doctest::test_suite("unit")) {
    fixture f;
    rlhf::compute_rloo_advantages(f.rewards.view(), f.mask.view(), vec(f.ids), f.out.mut());
    check_rows(f.out, f.mask, {1 - 4.0, 1.0, 2 - 3.5, -1.0, 6 - 1.5});
    // OPO: group 7 lengths 3, 1, 2 -> baseline (3 + 2 + 12) / 6; group -3 lengths 2, 3 -> (1 - 1.5) / 5.
    rlhf::compute_opo_advantages(f.rewards.view(), f.mask.view(), vec(f.ids), f.out.mut());
    check_rows(f.out, f.mask, {1 - 17.0 / 6, 0.6, 2 - 17.0 / 6, -0.4, 6 - 17.0 / 6});
}

TEST_CASE("group estimators on [B] scores" * doctest::test_suite("unit")) {
    const std::vector<double> scores{1, 0.5, 2, -0.5, 6};
    const std::vector<std::int64_t> ids{7, -3, 7, -3, 7};
    std::vector<double> out(5);
    rlhf::compute_dr_grpo_advantages(vec(scores), vec(ids), mut_vec(out));
    CHECK(out == std::vector<double>{-2, 0.5, -1, -0.5, 3});
    rlhf::compute_rloo_advantages(vec(scores), vec(ids), mut_vec(out));
    CHECK(out[0] == doctest::Approx(-3));
    CHECK(out[3] == doctest::Approx(-1));
    CHECK(out[4] == doctest::Approx(4.5));
    rlhf::compute_grpo_advantages(vec(scores), vec(ids), mut_vec(out), rlhf::grpo_preset::chatlearn());
    CHECK(out[1] == doctest::Approx(0.5 / (0.5 + 1e-5)));
    CHECK(out[2] == doctest::Approx(-1 / (std::sqrt(14.0 / 3.0) + 1e-5)));
    // ChatLearn golden-style: binary rewards, a group of equal rewards gives 0 (not NaN).
    const std::vector<double> binary{1, 1, 0, 1};
    const std::vector<std::int64_t> pairs{0, 0, 1, 1};
    std::vector<double> adv(4);
    rlhf::compute_grpo_advantages(vec(binary), vec(pairs), mut_vec(adv), rlhf::grpo_preset::chatlearn());
    CHECK(adv == std::vector<double>{0, 0, -0.5 / (0.5 + 1e-5), 0.5 / (0.5 + 1e-5)});
}

TEST_CASE("singleton groups follow the documented policy" * doctest::test_suite("unit")) {
    const matrix<double> rewards{2, 2, {0, 3, 1, 1}};
    const matrix<double> mask{2, 2, {1, 1, 1, 0}};
    const std::vector<std::int64_t> ids{4, 9};
    matrix<double> out(2, 2);
    rlhf::compute_grpo_advantages(rewards.view(), mask.view(), vec(ids), out.mut());
    check_rows(out, mask, {3 / (1 + 1e-6), 2 / (1 + 1e-6)});  // verl: mean 0, std 1
    rlhf::compute_grpo_advantages(rewards.view(), mask.view(), vec(ids), out.mut(), {.normalize_by_std = false});
    check_rows(out, mask, {3, 2});
    rlhf::compute_rloo_advantages(rewards.view(), mask.view(), vec(ids), out.mut());
    check_rows(out, mask, {3, 2});
    rlhf::compute_opo_advantages(rewards.view(), mask.view(), vec(ids), out.mut());
    check_rows(out, mask, {3, 2});
    rlhf::compute_grpo_advantages(rewards.view(), mask.view(), vec(ids), out.mut(), rlhf::grpo_preset::trl());
    check_rows(out, mask, {0, 0});
    rlhf::compute_rloo_advantages(rewards.view(), mask.view(), vec(ids), out.mut(),
                                  {.singleton = rlhf::singleton_group_policy::zero});
    check_rows(out, mask, {0, 0});

    const auto e = expect_error([&] {
        rlhf::compute_grpo_advantages(rewards.view(), mask.view(), vec(ids), out.mut(), rlhf::grpo_preset::openrlhf());
    });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "group_ids");
    CHECK(e.function() == "rlhf::compute_grpo_advantages");
    CHECK(e.actual() == "group 4 with 1 row (row 0)");
    const auto r = expect_error([&] {
        rlhf::compute_rloo_advantages(rewards.view(), mask.view(), vec(ids), out.mut(),
                                      {.singleton = rlhf::singleton_group_policy::raise});
    });
    CHECK(r.argument() == "group_ids");
    CHECK(r.function() == "rlhf::compute_rloo_advantages");
    CHECK(rlhf::parse_option<rlhf::singleton_group_policy>("zero") == rlhf::singleton_group_policy::zero);
    CHECK(rlhf::to_string(rlhf::singleton_group_policy::raw_score) == "raw_score");
    CHECK(rlhf::to_string(rlhf::return_masking::skip_masked) == "skip_masked");
    CHECK(rlhf::parse_option<rlhf::baseline_broadcast>("cumulative_returns") ==
          rlhf::baseline_broadcast::cumulative_returns);
}

TEST_CASE("empty rows keep their score in the group and get advantages 0" * doctest::test_suite("unit")) {
    const matrix<double> rewards{3, 2, {0, 1, 0, 3, 0, 0}};
    const matrix<double> mask{3, 2, {1, 1, 1, 1, 0, 0}};
    const std::vector<std::int64_t> ids{1, 1, 1};
    matrix<double> out(3, 2);
    rlhf::compute_dr_grpo_advantages(rewards.view(), mask.view(), vec(ids), out.mut());
    check_rows(out, mask, {1 - 4.0 / 3, 3 - 4.0 / 3, 0});
    CHECK(out(2, 0) == 0.0);
    // OPO: the empty row has length 0 and no weight in the baseline.
    rlhf::compute_opo_advantages(rewards.view(), mask.view(), vec(ids), out.mut());
    check_rows(out, mask, {-1, 1, 0});
    // A group whose rows are all empty: baseline 0, advantages 0.
    const matrix<double> none{2, 2};
    const std::vector<std::int64_t> pair{5, 5};
    matrix<double> out2(2, 2, {9, 9, 9, 9});
    rlhf::compute_opo_advantages(none.view(), none.view(), vec(pair), out2.mut());
    CHECK(out2.data == std::vector<double>{0, 0, 0, 0});
}

TEST_CASE("group estimators reject bad input / naming the argument" * doctest::test_suite("unit")) {
    fixture f;
    const std::vector<std::int64_t> short_ids{1, 2, 3};
    auto e = expect_error(
        [&] { rlhf::compute_grpo_advantages(f.rewards.view(), f.mask.view(), vec(short_ids), f.out.mut()); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "group_ids");
    CHECK(e.actual() == "length 3");

    matrix<double> bad = f.rewards;
    bad(3, 2) = std::numeric_limits<double>::quiet_NaN();  // a masked position: still rejected
    e = expect_error([&] { rlhf::compute_rloo_advantages(bad.view(), f.mask.view(), vec(f.ids), f.out.mut()); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "token_rewards");
    CHECK(e.actual() == "nan at [3, 2]");

    matrix<double> soft = f.mask;
    soft(0, 1) = 0.5;
    e = expect_error([&] { rlhf::compute_opo_advantages(f.rewards.view(), soft.view(), vec(f.ids), f.out.mut()); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "mask");

    matrix<double> narrow(5, 2);
    e = expect_error(
        [&] { rlhf::compute_dr_grpo_advantages(f.rewards.view(), f.mask.view(), vec(f.ids), narrow.mut()); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "advantages");
    e = expect_error([&] { rlhf::compute_grpo_advantages(f.rewards.view(), narrow.view(), vec(f.ids), f.out.mut()); });
    CHECK(e.argument() == "mask");

    e = expect_error([&] {
        rlhf::compute_grpo_advantages(f.rewards.view(), f.mask.view(), vec(f.ids), f.out.mut(), {.epsilon = 0.0});
    });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "epsilon");
    // Without std normalisation epsilon is unused.
    CHECK_NOTHROW(rlhf::compute_grpo_advantages(f.rewards.view(), f.mask.view(), vec(f.ids), f.out.mut(),
                                                {.epsilon = 0.0, .normalize_by_std = false}));

    const std::vector<double> scores{1, std::numeric_limits<double>::infinity()};
    const std::vector<std::int64_t> ids{0, 0};
    std::vector<double> out(2);
    e = expect_error([&] { rlhf::compute_grpo_advantages(vec(scores), vec(ids), mut_vec(out)); });
    CHECK(e.argument() == "scores");
    e = expect_error([&] { rlhf::compute_grpo_advantages(vec(scores), vec(short_ids), mut_vec(out)); });
    CHECK(e.argument() == "group_ids");
}

TEST_CASE("cumulative returns: three maskings by hand / interior hole" * doctest::test_suite("unit")) {
    const matrix<double> r{1, 4, {1, 2, 3, 4}};
    const matrix<double> m{1, 4, {1, 0, 1, 1}};
    matrix<double> g(1, 4);
    rlhf::compute_cumulative_returns(r.view(), m.view(), g.mut(), {.gamma = 0.5});
    CHECK(g.data == std::vector<double>{1, 4.5, 5, 4});  // reset before the hole
    rlhf::compute_cumulative_returns(r.view(), m.view(), g.mut(),
                                     {.gamma = 0.5, .masking = rlhf::return_masking::zero_masked});
    CHECK(g.data == std::vector<double>{2.25, 2.5, 5, 4});
    rlhf::compute_cumulative_returns(r.view(), m.view(), g.mut(),
                                     {.gamma = 0.5, .masking = rlhf::return_masking::skip_masked});
    CHECK(g.data == std::vector<double>{3.5, 0, 5, 4});

    const auto e =
        expect_error([&] { rlhf::compute_cumulative_returns(r.view(), m.view(), g.mut(), {.gamma = -0.1}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "gamma");
    CHECK(e.function() == "rlhf::compute_cumulative_returns");
    CHECK_THROWS_AS(rlhf::compute_cumulative_returns(r.view(), m.view(), g.mut(), {.gamma = 1.5}), rlhf::error);
}

TEST_CASE("ReMax by hand / left padding" * doctest::test_suite("unit")) {
    const matrix<double> r{1, 4, {7, 2, 3, 4}};
    const matrix<double> m{1, 4, {0, 1, 1, 1}};
    const std::vector<double> b{2};
    matrix<double> adv(1, 4), ret(1, 4);
    rlhf::compute_remax_advantages(r.view(), m.view(), vec(b), adv.mut(), ret.mut());
    CHECK(ret.data == std::vector<double>{9, 9, 7, 4});  // the masked reward 7 is dropped
    CHECK(adv.data == std::vector<double>{9, 7, 5, 2});  // no baseline on the masked slot (verl)
    const std::vector<double> two{1, 2};
    auto e = expect_error([&] { rlhf::compute_remax_advantages(r.view(), m.view(), vec(two), adv.mut(), ret.mut()); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "reward_baselines");
    const std::vector<double> nan{std::numeric_limits<double>::quiet_NaN()};
    e = expect_error([&] { rlhf::compute_remax_advantages(r.view(), m.view(), vec(nan), adv.mut(), ret.mut()); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "reward_baselines");
}

TEST_CASE("REINFORCE++ (verl form): returns by hand / advantages whitened" * doctest::test_suite("unit")) {
    const matrix<double> r{2, 4, {1, 2, 3, 4, 0.5, 0, 1, 9}};
    const matrix<double> m{2, 4, {1, 0, 1, 1, 1, 1, 1, 0}};
    matrix<double> adv(2, 4), ret(2, 4);
    rlhf::compute_reinforce_plus_plus_advantages(r.view(), m.view(), adv.mut(), ret.mut(), {.gamma = 0.5});
    CHECK(ret.data == std::vector<double>{1, 4.5, 5, 4, 0.5 + 0.5 * (0 + 0.5 * 1), 0.5, 1, 9});
    const auto expected = naive_whiten(ret, m);
    for (std::size_t k = 0; k < adv.data.size(); ++k)
        CHECK(adv.data[k] == doctest::Approx(expected.data[k]).epsilon(1e-12));

    const auto e = expect_error([&] {
        rlhf::compute_reinforce_plus_plus_advantages(r.view(), m.view(), adv.mut(), ret.mut(), {.gamma = -1.0});
    });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "gamma");
    // One valid token: unbiased whitening cannot run (verl raises).
    const matrix<double> one_r{1, 2, {1, 0}};
    const matrix<double> one_m{1, 2, {1, 0}};
    matrix<double> a1(1, 2), g1(1, 2);
    CHECK_THROWS_AS(rlhf::compute_reinforce_plus_plus_advantages(one_r.view(), one_m.view(), a1.mut(), g1.mut()),
                    rlhf::error);
}

TEST_CASE("REINFORCE++-baseline: both broadcasts against naive references" * doctest::test_suite("unit")) {
    const auto b = make_random(7, 6, 11u);
    matrix<double> adv(7, 6), ret(7, 6);
    rlhf::compute_reinforce_plus_plus_baseline_advantages(b.rewards.view(), b.mask.view(), vec(b.ids), adv.mut(),
                                                          ret.mut());
    const auto rows = naive_group(naive_scores(b.rewards), b.ids, {}, 1, 0, false);
    matrix<double> tiled(7, 6);
    for (index_t i = 0; i < 7; ++i)
        for (index_t t = 0; t < 6; ++t) tiled(i, t) = rows[static_cast<std::size_t>(i)] * b.mask(i, t);
    const auto expected = naive_whiten(tiled, b.mask);
    for (std::size_t k = 0; k < adv.data.size(); ++k) {
        CHECK(adv.data[k] == doctest::Approx(expected.data[k]).epsilon(1e-12));
        CHECK(ret.data[k] == adv.data[k]);
    }

    // cumulative_returns: reward-to-go of r·m with the baseline at the last valid token.
    rlhf::compute_reinforce_plus_plus_baseline_advantages(b.rewards.view(), b.mask.view(), vec(b.ids), adv.mut(),
                                                          ret.mut(),
                                                          {.broadcast = rlhf::baseline_broadcast::cumulative_returns});
    const auto scores = naive_scores(b.rewards);
    matrix<double> shaped(7, 6);
    for (index_t i = 0; i < 7; ++i) {
        index_t last = -1;
        for (index_t t = 0; t < 6; ++t)
            if (b.mask(i, t) != 0) last = t;
        for (index_t t = 0; t < 6; ++t)
            shaped(i, t) = b.rewards(i, t) * b.mask(i, t) -
                           (t == last ? scores[static_cast<std::size_t>(i)] - rows[static_cast<std::size_t>(i)] : 0.0);
    }
    const auto g = naive_returns(shaped, matrix<double>(7, 6, std::vector<double>(42, 1.0)), 1.0,
                                 rlhf::return_masking::zero_masked);
    const auto w = naive_whiten(g, b.mask);
    for (std::size_t k = 0; k < adv.data.size(); ++k) {
        CHECK(ret.data[k] == doctest::Approx(g.data[k]).epsilon(1e-12));
        CHECK(adv.data[k] == doctest::Approx(w.data[k]).epsilon(1e-12));
    }
}

TEST_CASE_TEMPLATE("group estimators match naive references on random input" * doctest::test_suite("unit"), T, float,
                   double) {
    const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
    for (unsigned seed : {1u, 2u, 3u}) {
        const auto b = make_random(13, 9, seed);
        const auto rewards = cast<T>(b.rewards);
        const auto mask = cast<T>(b.mask);
        const auto scores = naive_scores(b.rewards);
        std::vector<double> len(13, 0.0);
        for (index_t i = 0; i < 13; ++i)
            for (index_t t = 0; t < 9; ++t) len[static_cast<std::size_t>(i)] += b.mask(i, t);
        matrix<T> out(13, 9);
        const auto check = [&](const std::vector<double>& rows) {
            for (index_t i = 0; i < 13; ++i)
                for (index_t t = 0; t < 9; ++t)
                    CHECK(static_cast<double>(out(i, t)) ==
                          doctest::Approx(rows[static_cast<std::size_t>(i)] * b.mask(i, t)).epsilon(tol));
        };
        rlhf::compute_grpo_advantages(rewards.view(), mask.view(), vec(b.ids), out.mut());
        check(naive_group(scores, b.ids, len, 0, 1e-6, false));
        rlhf::compute_grpo_advantages(rewards.view(), mask.view(), vec(b.ids), out.mut(),
                                      {.epsilon = 1e-5, .std_estimator = rlhf::variance_estimator::biased});
        check(naive_group(scores, b.ids, len, 0, 1e-5, true));
        rlhf::compute_dr_grpo_advantages(rewards.view(), mask.view(), vec(b.ids), out.mut());
        check(naive_group(scores, b.ids, len, 1, 0, false));
        rlhf::compute_rloo_advantages(rewards.view(), mask.view(), vec(b.ids), out.mut());
        check(naive_group(scores, b.ids, len, 2, 0, false));
        rlhf::compute_opo_advantages(rewards.view(), mask.view(), vec(b.ids), out.mut());
        check(naive_group(scores, b.ids, len, 3, 0, false));
    }
}

TEST_CASE_TEMPLATE("returns / REINFORCE++ and ReMax match naive references on random input" *
                       doctest::test_suite("unit"),
                   T, float, double) {
    const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
    const auto b = make_random(9, 11, 5u);
    const auto rewards = cast<T>(b.rewards);
    const auto mask = cast<T>(b.mask);
    matrix<T> adv(9, 11), ret(9, 11);
    for (const auto masking : {rlhf::return_masking::reset_at_masked, rlhf::return_masking::zero_masked,
                               rlhf::return_masking::skip_masked}) {
        for (const double gamma : {1.0, 0.9, 0.0}) {
            rlhf::compute_cumulative_returns(rewards.view(), mask.view(), ret.mut(),
                                             {.gamma = gamma, .masking = masking});
            const auto g = naive_returns(b.rewards, b.mask, gamma, masking);
            for (std::size_t k = 0; k < g.data.size(); ++k)
                CHECK(static_cast<double>(ret.data[k]) == doctest::Approx(g.data[k]).epsilon(tol));
            rlhf::compute_reinforce_plus_plus_advantages(rewards.view(), mask.view(), adv.mut(), ret.mut(),
                                                         {.gamma = gamma, .masking = masking});
            const auto w = naive_whiten(g, b.mask);
            for (std::size_t k = 0; k < g.data.size(); ++k)
                CHECK(static_cast<double>(adv.data[k]) == doctest::Approx(w.data[k]).epsilon(tol * 10));
        }
    }
    std::vector<T> baselines;
    for (double x : b.baselines) baselines.push_back(static_cast<T>(x));
    rlhf::compute_remax_advantages(rewards.view(), mask.view(), vec(baselines), adv.mut(), ret.mut());
    for (index_t i = 0; i < 9; ++i)
        for (index_t t = 0; t < 11; ++t) {
            double total = 0;
            for (index_t u = t; u < 11; ++u) total += b.rewards(i, u) * b.mask(i, u);
            CHECK(static_cast<double>(ret(i, t)) == doctest::Approx(total).epsilon(tol));
            CHECK(static_cast<double>(adv(i, t)) ==
                  doctest::Approx(total - static_cast<double>(baselines[static_cast<std::size_t>(i)]) * b.mask(i, t))
                      .epsilon(tol));
        }
}

TEST_CASE("mask element types give the same advantages" * doctest::test_suite("unit")) {
    const auto b = make_random(6, 5, 9u);
    matrix<double> expected(6, 5), out(6, 5);
    rlhf::compute_grpo_advantages(b.rewards.view(), b.mask.view(), vec(b.ids), expected.mut());
    const auto bytes = rlhf_test::as<std::uint8_t>(b.mask.data);
    const auto longs = rlhf_test::as<std::int64_t>(b.mask.data);
    const rlhf_test::mask_buffer<bool> bools(b.mask.data);
    rlhf::compute_grpo_advantages(b.rewards.view(), rlhf::make_view(bytes.data(), 6, 5), vec(b.ids), out.mut());
    CHECK(out.data == expected.data);
    rlhf::compute_grpo_advantages(b.rewards.view(), rlhf::make_view(longs.data(), 6, 5), vec(b.ids), out.mut());
    CHECK(out.data == expected.data);
    rlhf::compute_grpo_advantages(b.rewards.view(), bools.view(6, 5), vec(b.ids), out.mut());
    CHECK(out.data == expected.data);
}

// Found by tests/fuzz (docs/fuzzing.md): a per-row advantage beyond float32's range (+-inf) times
// a 0 mask gave NaN at masked positions; unknown singleton, std_estimator and broadcast values
// acted as other policies, and an unknown return_masking left the returns unwritten.
TEST_CASE("outcome estimators: masked positions stay 0 beyond float32 / unknown enum values are refused" *
          doctest::test_suite("unit")) {
    const std::vector<float> rewards{-1e38f, -3.4e38f, 0.0f}, mask{1.0f, 1.0f, 0.0f};
    const std::vector<std::int64_t> ids{0};
    std::vector<float> adv(3, -99.0f), ret(3, -99.0f);
    const auto r = rlhf::make_view(rewards.data(), 1, 3);
    const auto m = rlhf::make_view(mask.data(), 1, 3);
    const auto a = rlhf::make_mut_view(adv.data(), 1, 3);
    rlhf::compute_dr_grpo_advantages(r, m, vec(ids), a);  // singleton: the raw score −4.4e38
    CHECK(std::isinf(adv[0]));
    CHECK(adv[2] == 0.0f);
    // A -0.0 mask entry (a 0) gives +0, as any other mask type.
    const std::vector<float> small{1.0f, 2.0f, 3.0f}, minus_zero{1.0f, 1.0f, -0.0f};
    rlhf::compute_dr_grpo_advantages(rlhf::make_view(small.data(), 1, 3), rlhf::make_view(minus_zero.data(), 1, 3),
                                     vec(ids), a);
    CHECK_FALSE(std::signbit(adv[2]));

    const auto refused = [](auto&& call, const char* argument) {
        rlhf_test::check_error(call, rlhf::error_kind::config, argument);
    };
    const auto bad_singleton = static_cast<rlhf::singleton_group_policy>(9);
    refused([&] { rlhf::compute_dr_grpo_advantages(r, m, vec(ids), a, {.singleton = bad_singleton}); }, "singleton");
    refused([&] { rlhf::compute_rloo_advantages(r, m, vec(ids), a, {.singleton = bad_singleton}); }, "singleton");
    refused(
        [&] {
            rlhf::compute_grpo_advantages(r, m, vec(ids), a,
                                          {.std_estimator = static_cast<rlhf::variance_estimator>(4)});
        },
        "std_estimator");
    const auto bad_masking = static_cast<rlhf::return_masking>(3);
    const auto rt = rlhf::make_mut_view(ret.data(), 1, 3);
    refused([&] { rlhf::compute_cumulative_returns(r, m, rt, {.masking = bad_masking}); }, "masking");
    refused([&] { rlhf::compute_reinforce_plus_plus_advantages(r, m, a, rt, {.masking = bad_masking}); }, "masking");
    refused(
        [&] {
            rlhf::compute_reinforce_plus_plus_baseline_advantages(
                r, m, vec(ids), a, rt, {.broadcast = static_cast<rlhf::baseline_broadcast>(2)});
        },
        "broadcast");
}

// The affine maps behind the CUDA row scans (rlhf/cuda/return_scan.hpp, CUDA-free): scanned in the
// device's order (chunks from the row's end, an exclusive pairwise-round scan inside each, the
// running map carried from chunk to chunk), they reproduce compute_cumulative_returns for every
// masking. This checks the per-position coefficients and the associativity the device relies on.
namespace {

namespace return_scan = rlhf::detail::return_scan;

// One row in the device's order with chunks of `chunk` positions (item j of a chunk ending at `end`
// is position end − 1 − j).
std::vector<double> scan_returns_like_device(const std::vector<double>& r, const std::vector<int>& m,
                                             rlhf::return_masking masking, double gamma, std::size_t chunk) {
    const std::size_t cols = r.size();
    std::vector<double> out(cols);
    const return_scan::backward_op op;
    return_scan::affine running = return_scan::constant(0.0);
    for (std::size_t end = cols; end > 0; end = end > chunk ? end - chunk : 0) {
        const std::size_t len = std::min(chunk, end);
        std::vector<return_scan::step_maps> steps(len);
        std::vector<return_scan::affine> maps(len);
        for (std::size_t j = 0; j < len; ++j) {
            const std::size_t t = end - 1 - j;
            steps[j] = return_scan::step(masking, m[t] != 0, r[t], gamma);
            maps[j] = steps[j].running;
        }
        // Inclusive scan by pairwise rounds (a block scan's reordering), then exclusive over `running`.
        std::vector<return_scan::affine> inclusive = maps;
        for (std::size_t offset = 1; offset < len; offset *= 2) {
            std::vector<return_scan::affine> next = inclusive;
            for (std::size_t i = offset; i < len; ++i) next[i] = op(inclusive[i - offset], inclusive[i]);
            inclusive = next;
        }
        for (std::size_t j = 0; j < len; ++j) {
            const return_scan::affine before = j == 0 ? running : op(running, inclusive[j - 1]);
            CHECK(before.a == 0.0);  // constant: its e is the running return after the position
            out[end - 1 - j] = return_scan::output(steps[j], before.e);
        }
        running = op(running, inclusive[len - 1]);
    }
    return out;
}

}  // namespace

TEST_CASE("return_scan maps scanned like the CUDA kernel reproduce compute_cumulative_returns" *
          doctest::test_suite("unit")) {
    std::mt19937 rng(11);
    std::normal_distribution<double> normal;
    std::bernoulli_distribution keep(0.7);
    for (const auto masking : {rlhf::return_masking::reset_at_masked, rlhf::return_masking::zero_masked,
                               rlhf::return_masking::skip_masked}) {
        for (const double gamma : {1.0, 0.9, 0.0}) {
            for (const std::size_t cols : {std::size_t{1}, std::size_t{7}, std::size_t{64}, std::size_t{300}}) {
                std::vector<double> r(cols);
                std::vector<int> m(cols);
                for (std::size_t t = 0; t < cols; ++t) {
                    r[t] = normal(rng);
                    m[t] = keep(rng) ? 1 : 0;
                }
                std::vector<double> want(cols);
                rlhf::compute_cumulative_returns(rlhf::view<double>{r.data(), {1, static_cast<index_t>(cols)}},
                                                 rlhf::view<int>{m.data(), {1, static_cast<index_t>(cols)}},
                                                 rlhf::mut_view<double>{want.data(), {1, static_cast<index_t>(cols)}},
                                                 {.gamma = gamma, .masking = masking});
                for (const std::size_t chunk : {std::size_t{1}, std::size_t{4}, std::size_t{13}, std::size_t{1024}}) {
                    const std::vector<double> got = scan_returns_like_device(r, m, masking, gamma, chunk);
                    for (std::size_t t = 0; t < cols; ++t)
                        CHECK_MESSAGE(std::abs(got[t] - want[t]) <= 1e-12 * std::max(1.0, std::abs(want[t])),
                                      rlhf::to_string(masking)
                                          << " gamma " << gamma << " T " << cols << " chunk " << chunk << " t " << t);
                }
            }
        }
    }
}

TEST_CASE("dense_group_ids maps arbitrary ids to 0 ... G-1 keeping the groups" * doctest::test_suite("unit")) {
    std::vector<std::int64_t> ids{7, -3, 7, std::numeric_limits<std::int64_t>::min(), -3, 1000000000000, 7};
    std::vector<std::int64_t> dense(ids.size());
    const auto b = static_cast<index_t>(ids.size());
    const index_t groups = rlhf::cuda::dense_group_ids(rlhf::view<std::int64_t, 1>{ids.data(), {b}},
                                                       rlhf::mut_view<std::int64_t, 1>{dense.data(), {b}});
    CHECK(groups == 4);
    CHECK(dense == std::vector<std::int64_t>{2, 1, 2, 0, 1, 3, 2});
    // The same GRPO advantages with either ids.
    std::vector<double> scores{1, 0.5, 2, -0.5, 6, 3, -1}, want(ids.size()), got(ids.size());
    rlhf::compute_grpo_advantages(rlhf::view<double, 1>{scores.data(), {b}},
                                  rlhf::view<std::int64_t, 1>{ids.data(), {b}},
                                  rlhf::mut_view<double, 1>{want.data(), {b}});
    rlhf::compute_grpo_advantages(rlhf::view<double, 1>{scores.data(), {b}},
                                  rlhf::view<std::int64_t, 1>{dense.data(), {b}},
                                  rlhf::mut_view<double, 1>{got.data(), {b}});
    CHECK(got == want);
    // In place, and an empty batch.
    CHECK(rlhf::cuda::dense_group_ids(rlhf::view<std::int64_t, 1>{ids.data(), {b}},
                                      rlhf::mut_view<std::int64_t, 1>{ids.data(), {b}}) == 4);
    CHECK(ids == dense);
    CHECK(rlhf::cuda::dense_group_ids(rlhf::view<std::int64_t, 1>{ids.data(), {0}},
                                      rlhf::mut_view<std::int64_t, 1>{dense.data(), {0}}) == 0);
    rlhf_test::check_error(
        [&] {
            rlhf::cuda::dense_group_ids(rlhf::view<std::int64_t, 1>{ids.data(), {b}},
                                        rlhf::mut_view<std::int64_t, 1>{dense.data(), {b - 1}});
        },
        rlhf::error_kind::shape, "dense");
}
