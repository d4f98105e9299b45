#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "rlhf/cuda/gae_scan.hpp"
#include "rlhf/kernels/gae.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::as;
using rlhf_test::expect_error;
using rlhf_test::mut_view_of;
using rlhf_test::view_of;

namespace {

using rlhf::index_t;

struct result {
    std::vector<double> advantages, returns;
};

// Naive references from the forward definition A_t = Σ_k (γλ)^k δ_{t+k}, over a flat row-major
// buffer, written independently of the kernels' backward recursion.
result naive_gae(const std::vector<double>& r, const std::vector<double>& v, const std::vector<int>& m,
                 std::size_t rows, std::size_t cols, double gamma, double lambda, rlhf::gae_masking masking,
                 const std::vector<double>& bootstrap) {
    result out{std::vector<double>(rows * cols, 0.0), std::vector<double>(rows * cols, 0.0)};
    for (std::size_t b = 0; b < rows; ++b) {
        const auto at = [&](std::size_t t) { return b * cols + t; };
        const double boot = bootstrap.empty() ? 0.0 : bootstrap[b];
        std::vector<std::size_t> valid;
        for (std::size_t t = 0; t < cols; ++t)
            if (m[at(t)] != 0) valid.push_back(t);
        if (masking == rlhf::gae_masking::zero_masked) {
            std::vector<double> delta(cols);
            for (std::size_t t = 0; t < cols; ++t) {
                const double next = t + 1 < cols ? v[at(t + 1)] * m[at(t + 1)] : 0.0;
                const double extra = !valid.empty() && t == valid.back() ? boot : 0.0;
                delta[t] = r[at(t)] * m[at(t)] + gamma * (next + extra) - v[at(t)] * m[at(t)];
            }
            for (std::size_t t = 0; t < cols; ++t) {
                double a = 0;
                for (std::size_t k = t; k < cols; ++k)
                    a += std::pow(gamma * lambda, static_cast<double>(k - t)) * delta[k];
                out.advantages[at(t)] = a;
                out.returns[at(t)] = a + v[at(t)] * m[at(t)];
            }
        } else if (masking == rlhf::gae_masking::skip_masked) {
            std::vector<double> delta(valid.size());
            for (std::size_t i = 0; i < valid.size(); ++i) {
                const double next = i + 1 < valid.size() ? v[at(valid[i + 1])] : boot;
                delta[i] = r[at(valid[i])] + gamma * next - v[at(valid[i])];
            }
            std::vector<double> adv_valid(valid.size());
            for (std::size_t i = 0; i < valid.size(); ++i) {
                double a = 0;
                for (std::size_t k = i; k < valid.size(); ++k)
                    a += std::pow(gamma * lambda, static_cast<double>(k - i)) * delta[k];
                adv_valid[i] = a;
            }
            for (std::size_t t = 0; t < cols; ++t) {
                double a = 0;  // a masked position reports the advantage of the next valid one
                for (std::size_t i = 0; i < valid.size(); ++i)
                    if (valid[i] >= t) {
                        a = adv_valid[i];
                        break;
                    }
                out.advantages[at(t)] = a;
                out.returns[at(t)] = a + v[at(t)];
            }
        } else {  // valid_range over [first, last]
            if (valid.empty()) continue;
            const std::size_t first = valid.front(), last = valid.back();
            for (std::size_t t = first; t <= last; ++t) {
                double a = 0;
                for (std::size_t k = t; k <= last; ++k) {
                    const double next = k < last ? v[at(k + 1)] : boot;
                    a += std::pow(gamma * lambda, static_cast<double>(k - t)) * (r[at(k)] + gamma * next - v[at(k)]);
                }
                out.advantages[at(t)] = a;
                out.returns[at(t)] = a + v[at(t)];
            }
        }
    }
    return out;
}

struct rollout {
    std::size_t rows, cols;
    std::vector<double> r, v, boot;
    std::vector<int> m;
};

// Random rows; `contiguous` masks are one run per row (left/right padding), otherwise holes too.
// Row 1 is empty when there are at least 3 rows.
rollout random_rollout(std::mt19937& rng, std::size_t rows, std::size_t cols, bool contiguous) {
    std::normal_distribution<double> normal;
    std::bernoulli_distribution keep(0.65);
    rollout x{rows,
              cols,
              std::vector<double>(rows * cols),
              std::vector<double>(rows * cols),
              std::vector<double>(rows),
              std::vector<int>(rows * cols)};
    for (double& a : x.r) a = normal(rng);
    for (double& a : x.v) a = normal(rng);
    for (double& a : x.boot) a = normal(rng);
    for (std::size_t b = 0; b < rows; ++b) {
        if (contiguous) {
            std::uniform_int_distribution<std::size_t> pick(0, cols);
            std::size_t lo = pick(rng), hi = pick(rng);
            if (lo > hi) std::swap(lo, hi);
            for (std::size_t t = lo; t < hi; ++t) x.m[b * cols + t] = 1;
        } else {
            for (std::size_t t = 0; t < cols; ++t) x.m[b * cols + t] = keep(rng) ? 1 : 0;
        }
    }
    if (rows >= 3)
        for (std::size_t t = 0; t < cols; ++t) x.m[cols + t] = 0;
    return x;
}

}  // namespace

TEST_CASE("compute_gae: hand-computed rows with a hole / gamma = lambda = 1" * doctest::test_suite("unit")) {
    // r = [1, 2, 3, 4], V = [10, 20, 30, 40], mask [1, 0, 1, 1]. With γ = λ = 1 the advantage is
    // the sum of the remaining rewards minus V_t (the next values telescope).
    const std::vector<double> r{1, 2, 3, 4}, v{10, 20, 30, 40};
    const std::vector<std::uint8_t> hole{1, 0, 1, 1}, range{0, 1, 1, 0};
    std::vector<double> a(4), ret(4);
    const rlhf::gae_options base{.gamma = 1.0, .lambda = 1.0};

    // zero_masked (TRL, OpenRLHF): r·m = [1, 0, 3, 4], V·m = [10, 0, 30, 40].
    rlhf::compute_gae(view_of(r, 1, 4), view_of(v, 1, 4), view_of(hole, 1, 4), mut_view_of(a, 1, 4),
                      mut_view_of(ret, 1, 4), base);
    CHECK(a == std::vector<double>{-2, 7, -23, -36});
    CHECK(ret == std::vector<double>{8, 7, 7, 4});

    // skip_masked (verl): the hole is transparent and reports the carried advantage.
    rlhf::compute_gae(view_of(r, 1, 4), view_of(v, 1, 4), view_of(hole, 1, 4), mut_view_of(a, 1, 4),
                      mut_view_of(ret, 1, 4), {.gamma = 1.0, .lambda = 1.0, .masking = rlhf::gae_masking::skip_masked});
    CHECK(a == std::vector<double>{-2, -23, -23, -36});
    CHECK(ret == std::vector<double>{8, -3, 7, 4});

    // valid_range (DeepSpeed-Chat): the recursion over [1, 2] only.
    rlhf::compute_gae(view_of(r, 1, 4), view_of(v, 1, 4), view_of(range, 1, 4), mut_view_of(a, 1, 4),
                      mut_view_of(ret, 1, 4), {.gamma = 1.0, .lambda = 1.0, .masking = rlhf::gae_masking::valid_range});
    CHECK(a == std::vector<double>{0, -15, -27, 0});
    CHECK(ret == std::vector<double>{0, 5, 3, 0});

    // A bootstrap of 100 enters at the last valid position under every mode.
    const std::vector<double> boot{100};
    const rlhf::view<double, 1> b{boot.data(), {1}};
    rlhf::compute_gae(view_of(r, 1, 4), view_of(v, 1, 4), view_of(hole, 1, 4), b, mut_view_of(a, 1, 4),
                      mut_view_of(ret, 1, 4), base);
    CHECK(a == std::vector<double>{98, 107, 77, 64});
    rlhf::compute_gae(view_of(r, 1, 4), view_of(v, 1, 4), view_of(hole, 1, 4), b, mut_view_of(a, 1, 4),
                      mut_view_of(ret, 1, 4), {.gamma = 1.0, .lambda = 1.0, .masking = rlhf::gae_masking::skip_masked});
    CHECK(a == std::vector<double>{98, 77, 77, 64});
    rlhf::compute_gae(view_of(r, 1, 4), view_of(v, 1, 4), view_of(range, 1, 4), b, mut_view_of(a, 1, 4),
                      mut_view_of(ret, 1, 4), {.gamma = 1.0, .lambda = 1.0, .masking = rlhf::gae_masking::valid_range});
    CHECK(a == std::vector<double>{0, 85, 73, 0});
    // zero_masked with trailing padding: the bootstrap enters at the last valid token, not at T-1.
    const std::vector<std::uint8_t> right{1, 1, 0, 0};
    rlhf::compute_gae(view_of(r, 1, 4), view_of(v, 1, 4), view_of(right, 1, 4), b, mut_view_of(a, 1, 4),
                      mut_view_of(ret, 1, 4), base);
    CHECK(a == std::vector<double>{93, 82, 0, 0});
    CHECK(ret == std::vector<double>{103, 102, 0, 0});
}

TEST_CASE_TEMPLATE("compute_gae matches the naive reference in every mode" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 rng(2024);
    for (int trial = 0; trial < 24; ++trial) {
        const std::size_t rows = 1 + static_cast<std::size_t>(trial % 4);
        const std::size_t cols = 1 + static_cast<std::size_t>((trial * 5) % 17);
        const double gamma = trial % 3 == 0 ? 1.0 : 0.9, lambda = trial % 2 == 0 ? 0.95 : 0.5;
        for (const auto masking :
             {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
            const rollout x = random_rollout(rng, rows, cols, masking == rlhf::gae_masking::valid_range);
            const auto r = as<T>(x.r), v = as<T>(x.v), boot = as<T>(x.boot);
            const std::vector<double> rd(r.begin(), r.end()), vd(v.begin(), v.end()), bd(boot.begin(), boot.end());
            const auto m = as<std::int32_t>(x.m);
            const auto R = static_cast<index_t>(rows), C = static_cast<index_t>(cols);
            const rlhf::gae_options options{.gamma = gamma, .lambda = lambda, .masking = masking};
            for (const bool with_bootstrap : {false, true}) {
                std::vector<T> a(r.size()), ret(r.size());
                if (with_bootstrap)
                    rlhf::compute_gae(view_of(r, R, C), view_of(v, R, C), view_of(m, R, C),
                                      rlhf::view<T, 1>{boot.data(), {R}}, mut_view_of(a, R, C), mut_view_of(ret, R, C),
                                      options);
                else
                    rlhf::compute_gae(view_of(r, R, C), view_of(v, R, C), view_of(m, R, C), mut_view_of(a, R, C),
                                      mut_view_of(ret, R, C), options);
                const result ref = naive_gae(rd, vd, x.m, rows, cols, gamma, lambda, masking,
                                             with_bootstrap ? bd : std::vector<double>{});
                for (std::size_t i = 0; i < a.size(); ++i) {
                    CHECK(static_cast<double>(a[i]) ==
                          doctest::Approx(ref.advantages[i]).epsilon(rlhf_test::tolerance<T>(1e-5)).scale(1.0));
                    CHECK(static_cast<double>(ret[i]) ==
                          doctest::Approx(ref.returns[i]).epsilon(rlhf_test::tolerance<T>(1e-5)).scale(1.0));
                }
            }
        }
    }
}

TEST_CASE("compute_gae edge cases: empty rows / one valid token / left and right padding" *
          doctest::test_suite("unit")) {
    const std::vector<double> r{1, 2, 3, 4, 5, 6}, v{0.5, 1.5, 2.5, 3.5, 4.5, 5.5};
    std::vector<double> a(6), ret(6);
    const rlhf::gae_options g{.gamma = 0.9, .lambda = 0.8};
    // Row 0 empty, row 1 a single valid token (r - V).
    const std::vector<int> sparse{0, 0, 0, 0, 1, 0};
    for (const auto masking : {rlhf::gae_masking::zero_masked, rlhf::gae_masking::valid_range}) {
        auto o = g;
        o.masking = masking;
        rlhf::compute_gae(view_of(r, 2, 3), view_of(v, 2, 3), view_of(sparse, 2, 3), mut_view_of(a, 2, 3),
                          mut_view_of(ret, 2, 3), o);
        CHECK(a[0] == 0.0);
        CHECK(a[1] == 0.0);
        CHECK(a[2] == 0.0);
        CHECK(ret[0] == 0.0);
        CHECK(a[4] == doctest::Approx(5 - 4.5));
        CHECK(ret[4] == doctest::Approx(5));
    }
    auto skip = g;
    skip.masking = rlhf::gae_masking::skip_masked;
    rlhf::compute_gae(view_of(r, 2, 3), view_of(v, 2, 3), view_of(sparse, 2, 3), mut_view_of(a, 2, 3),
                      mut_view_of(ret, 2, 3), skip);
    CHECK(a[0] == 0.0);
    CHECK(ret[0] == 0.5);                 // skip_masked: returns = values on masked positions with nothing carried
    CHECK(a[3] == doctest::Approx(0.5));  // left of the single token: its advantage, carried
    CHECK(a[4] == doctest::Approx(0.5));
    CHECK(a[5] == 0.0);
    // Right padding: the three modes agree on the valid positions.
    const std::vector<int> right{1, 1, 0, 1, 1, 1};
    std::vector<double> a0(6), a1(6), a2(6), r0(6), r1(6), r2(6);
    for (auto [masking, adv, rets] :
         {std::tuple{rlhf::gae_masking::zero_masked, &a0, &r0}, std::tuple{rlhf::gae_masking::skip_masked, &a1, &r1},
          std::tuple{rlhf::gae_masking::valid_range, &a2, &r2}}) {
        auto o = g;
        o.masking = masking;
        rlhf::compute_gae(view_of(r, 2, 3), view_of(v, 2, 3), view_of(right, 2, 3), mut_view_of(*adv, 2, 3),
                          mut_view_of(*rets, 2, 3), o);
    }
    for (std::size_t i : {0u, 1u, 3u, 4u, 5u}) {
        CHECK(a0[i] == doctest::Approx(a1[i]));
        CHECK(a0[i] == doctest::Approx(a2[i]));
        CHECK(r0[i] == doctest::Approx(r2[i]));
    }
    CHECK(a0[2] == 0.0);
    CHECK(a2[2] == 0.0);
    CHECK(r1[2] == 2.5);  // skip_masked keeps values at the padding
    // Left padding: zero_masked gives the padding a non-zero advantage (TRL), valid_range 0.
    const std::vector<int> left{0, 1, 1, 0, 1, 1};
    auto range = g;
    range.masking = rlhf::gae_masking::valid_range;
    rlhf::compute_gae(view_of(r, 2, 3), view_of(v, 2, 3), view_of(left, 2, 3), mut_view_of(a0, 2, 3),
                      mut_view_of(r0, 2, 3), g);
    rlhf::compute_gae(view_of(r, 2, 3), view_of(v, 2, 3), view_of(left, 2, 3), mut_view_of(a2, 2, 3),
                      mut_view_of(r2, 2, 3), range);
    CHECK(a0[0] == doctest::Approx(0.9 * 1.5 + 0.72 * a0[1]));  // δ_0 = 0 + γ·V_1 - 0
    CHECK(a2[0] == 0.0);
    CHECK(a0[1] == doctest::Approx(a2[1]));
}

TEST_CASE("compute_gae in place and refused overlaps" * doctest::test_suite("unit")) {
    std::mt19937 rng(5);
    const rollout x = random_rollout(rng, 3, 6, false);
    for (const auto masking : {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked}) {
        const rlhf::gae_options o{.gamma = 0.99, .lambda = 0.9, .masking = masking};
        std::vector<double> a(18), ret(18);
        rlhf::compute_gae(view_of(x.r, 3, 6), view_of(x.v, 3, 6), view_of(x.m, 3, 6), mut_view_of(a, 3, 6),
                          mut_view_of(ret, 3, 6), o);
        // advantages over rewards and returns over values
        std::vector<double> r = x.r, v = x.v;
        rlhf::compute_gae(view_of(r, 3, 6), view_of(v, 3, 6), view_of(x.m, 3, 6), mut_view_of(r, 3, 6),
                          mut_view_of(v, 3, 6), o);
        CHECK(r == a);
        CHECK(v == ret);
        // advantages over values and returns over rewards
        r = x.r;
        v = x.v;
        rlhf::compute_gae(view_of(r, 3, 6), view_of(v, 3, 6), view_of(x.m, 3, 6), mut_view_of(v, 3, 6),
                          mut_view_of(r, 3, 6), o);
        CHECK(v == a);
        CHECK(r == ret);
    }
    std::vector<double> buffer(40);
    std::vector<double> ret(18);
    auto e = expect_error([&] {
        rlhf::compute_gae(rlhf::make_view(buffer.data(), 3, 6), view_of(x.v, 3, 6), view_of(x.m, 3, 6),
                          rlhf::make_mut_view(buffer.data() + 2, 3, 6), mut_view_of(ret, 3, 6));
    });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "advantages");
    CHECK_NOTHROW(rlhf::compute_gae(view_of(x.r, 3, 6), view_of(x.v, 3, 6), view_of(x.m, 3, 6),
                                    rlhf::make_mut_view(buffer.data(), 3, 6),
                                    rlhf::make_mut_view(buffer.data() + 18, 3, 6)));
    e = expect_error([&] {
        rlhf::compute_gae(view_of(x.r, 3, 6), view_of(x.v, 3, 6), view_of(x.m, 3, 6),
                          rlhf::make_mut_view(buffer.data(), 3, 6), rlhf::make_mut_view(buffer.data() + 17, 3, 6));
    });
    CHECK(e.argument() == "returns");
}

TEST_CASE("compute_gae over a column range of [B / P + T] sequences (DeepSpeed-Chat start)" *
          doctest::test_suite("unit")) {
    // [2, 6] buffers; the response is columns [2, 6): views with row stride 6, no copy.
    const std::vector<double> r{9, 9, 1, 2, 3, 4, 9, 9, 5, 6, 7, 8};
    const std::vector<double> v{9, 9, 0.5, 1, 1.5, 2, 9, 9, 2.5, 3, 3.5, 4};
    const std::vector<int> m{1, 1, 1, 0, 1, 1, 1, 1};
    const rlhf::view<double> rr{r.data() + 2, {2, 4}, {6, 1}};
    const rlhf::view<double> vv{v.data() + 2, {2, 4}, {6, 1}};
    const std::vector<double> r_copy{1, 2, 3, 4, 5, 6, 7, 8}, v_copy{0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4};
    std::vector<double> a(8), ret(8), a2(8), ret2(8);
    const rlhf::gae_options o{.masking = rlhf::gae_masking::valid_range};
    rlhf::compute_gae(rr, vv, view_of(m, 2, 4), mut_view_of(a, 2, 4), mut_view_of(ret, 2, 4), o);
    rlhf::compute_gae(view_of(r_copy, 2, 4), view_of(v_copy, 2, 4), view_of(m, 2, 4), mut_view_of(a2, 2, 4),
                      mut_view_of(ret2, 2, 4), o);
    CHECK(a == a2);
    CHECK(ret == ret2);
    // DeepSpeed-Chat's own recipe: zero rewards and values from `ends` on, then the plain
    // recursion over the whole range; the valid_range mask [start, ends) gives the same numbers.
    std::vector<double> rz = r_copy, vz = v_copy;
    rz[3] = vz[3] = 0.0;  // row 0: ends = 3
    const std::vector<int> ones(8, 1);
    std::vector<double> a3(8), ret3(8);
    rlhf::compute_gae(view_of(rz, 2, 4), view_of(vz, 2, 4), view_of(ones, 2, 4), mut_view_of(a3, 2, 4),
                      mut_view_of(ret3, 2, 4), {.masking = rlhf::gae_masking::zero_masked});
    for (std::size_t i = 0; i < 8; ++i) {
        CHECK(a[i] == doctest::Approx(a3[i]));
        CHECK(ret[i] == doctest::Approx(ret3[i]));
    }
}

TEST_CASE("compute_gae rejects bad input with the argument's name" * doctest::test_suite("unit")) {
    std::vector<double> r{1, 2, 3, 4}, v{1, 2, 3, 4};
    const std::vector<int> m{1, 1, 1, 1};
    std::vector<double> a(4), ret(4), small(3);
    const auto call = [&](const rlhf::gae_options& o) {
        rlhf::compute_gae(view_of(r, 2, 2), view_of(v, 2, 2), view_of(m, 2, 2), mut_view_of(a, 2, 2),
                          mut_view_of(ret, 2, 2), o);
    };
    for (const double bad : {-0.1, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
        auto e = expect_error([&] { call({.gamma = bad}); });
        CHECK(e.kind() == rlhf::error_kind::config);
        CHECK(e.function() == "rlhf::compute_gae");
        CHECK(e.argument() == "gamma");
        e = expect_error([&] { call({.lambda = bad}); });
        CHECK(e.argument() == "lambda");
    }
    CHECK_NOTHROW(call({.gamma = 0.0, .lambda = 0.0}));
    CHECK(a[0] == doctest::Approx(r[0] - v[0]));  // γ = 0: one-step advantage
    auto e = expect_error([&] {
        rlhf::compute_gae(view_of(r, 2, 2), view_of(small, 1, 3), view_of(m, 2, 2), mut_view_of(a, 2, 2),
                          mut_view_of(ret, 2, 2));
    });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "values");
    e = expect_error([&] {
        rlhf::compute_gae(view_of(r, 2, 2), view_of(v, 2, 2), view_of(m, 1, 4), mut_view_of(a, 2, 2),
                          mut_view_of(ret, 2, 2));
    });
    CHECK(e.argument() == "mask");
    e = expect_error([&] {
        rlhf::compute_gae(view_of(r, 2, 2), view_of(v, 2, 2), view_of(m, 2, 2), mut_view_of(small, 1, 3),
                          mut_view_of(ret, 2, 2));
    });
    CHECK(e.argument() == "advantages");
    e = expect_error([&] {
        rlhf::compute_gae(view_of(r, 2, 2), view_of(v, 2, 2), view_of(m, 2, 2), mut_view_of(a, 2, 2),
                          mut_view_of(small, 3, 1));
    });
    CHECK(e.argument() == "returns");
    const std::vector<double> boot{1, 2, 3};
    e = expect_error([&] {
        rlhf::compute_gae(view_of(r, 2, 2), view_of(v, 2, 2), view_of(m, 2, 2), rlhf::view<double, 1>{boot.data(), {3}},
                          mut_view_of(a, 2, 2), mut_view_of(ret, 2, 2));
    });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "bootstrap_values");
    const std::vector<double> bad_boot{1, std::numeric_limits<double>::infinity()};
    e = expect_error([&] {
        rlhf::compute_gae(view_of(r, 2, 2), view_of(v, 2, 2), view_of(m, 2, 2),
                          rlhf::view<double, 1>{bad_boot.data(), {2}}, mut_view_of(a, 2, 2), mut_view_of(ret, 2, 2));
    });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "bootstrap_values");
    // Non-finite rewards or values, masked positions included.
    const std::vector<int> masked{1, 0, 1, 1};
    v[1] = std::numeric_limits<double>::quiet_NaN();
    e = expect_error([&] {
        rlhf::compute_gae(view_of(r, 2, 2), view_of(v, 2, 2), view_of(masked, 2, 2), mut_view_of(a, 2, 2),
                          mut_view_of(ret, 2, 2));
    });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "values");
    CHECK(e.actual() == "nan at [0, 1]");
    v[1] = 2;
    r[3] = -std::numeric_limits<double>::infinity();
    e = expect_error([&] { call({}); });
    CHECK(e.argument() == "rewards");
    r[3] = 4;
    // Mask entries outside {0, 1}.
    const std::vector<int> three{1, 3, 1, 1};
    e = expect_error([&] {
        rlhf::compute_gae(view_of(r, 2, 2), view_of(v, 2, 2), view_of(three, 2, 2), mut_view_of(a, 2, 2),
                          mut_view_of(ret, 2, 2));
    });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "mask");
    // valid_range: an interior hole.
    const std::vector<int> hole{1, 0, 1, 1, 1, 1};
    std::vector<double> r6(6, 1.0), v6(6, 0.0), a6(6), ret6(6);
    e = expect_error([&] {
        rlhf::compute_gae(view_of(r6, 2, 3), view_of(v6, 2, 3), view_of(hole, 2, 3), mut_view_of(a6, 2, 3),
                          mut_view_of(ret6, 2, 3), {.masking = rlhf::gae_masking::valid_range});
    });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "mask");
    CHECK(e.actual() == "a hole at [0, 1]");
    // An enum value out of range.
    e = expect_error([&] { call({.masking = static_cast<rlhf::gae_masking>(7)}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "masking");
}

TEST_CASE("compute_gae_time_major: terminated versus truncated / hand-computed" * doctest::test_suite("unit")) {
    // [T = 3, N = 2], γ = λ = 0.5 (γλ = 0.25).
    // env 0: terminated at t = 1; next_values = 2.
    //   t=2: δ = 3 + 0.5·2 - 1.5 = 2.5, A = 2.5
    //   t=1: terminal: δ = 2 - 1 = 1, A = 1 (nothing carried)
    //   t=0: δ = 1 + 0.5·1 - 0.5 = 1, A = 1 + 0.25·1 = 1.25
    // env 1: truncated at t = 0 with V(final) = 4; next_values = 0.
    //   t=2: δ = 1 + 0 - 1 = 0, A = 0
    //   t=1: δ = 1 + 0.5·1 - 1 = 0.5, A = 0.5
    //   t=0: δ = 1 + 0.5·4 - 1 = 2, A = 2 (nothing carried across the episode boundary)
    const std::vector<double> rewards{1, 1, 2, 1, 3, 1};
    const std::vector<double> values{0.5, 1, 1, 1, 1.5, 1};
    const std::vector<std::uint8_t> terminated{0, 0, 1, 0, 0, 0};
    const std::vector<std::uint8_t> truncated{0, 1, 0, 0, 0, 0};
    const std::vector<double> truncation_values{0, 4, 0, 0, 0, 0};
    const std::vector<double> next_values{2, 0};
    std::vector<double> a(6), ret(6);
    rlhf::compute_gae_time_major(view_of(rewards, 3, 2), view_of(values, 3, 2), view_of(terminated, 3, 2),
                                 view_of(truncated, 3, 2), view_of(truncation_values, 3, 2),
                                 rlhf::view<double, 1>{next_values.data(), {2}}, mut_view_of(a, 3, 2),
                                 mut_view_of(ret, 3, 2), {.gamma = 0.5, .lambda = 0.5});
    CHECK(a == std::vector<double>{1.25, 2, 1, 0.5, 2.5, 0});
    CHECK(ret == std::vector<double>{1.75, 3, 2, 1.5, 4, 1});
    // Both flags: termination wins (no bootstrap).
    const std::vector<std::uint8_t> both{0, 1, 0, 0, 0, 0};
    rlhf::compute_gae_time_major(view_of(rewards, 3, 2), view_of(values, 3, 2), view_of(both, 3, 2),
                                 view_of(truncated, 3, 2), view_of(truncation_values, 3, 2),
                                 rlhf::view<double, 1>{next_values.data(), {2}}, mut_view_of(a, 3, 2),
                                 mut_view_of(ret, 3, 2), {.gamma = 0.5, .lambda = 0.5});
    CHECK(a[1] == 0.0);  // 1 + 0 - 1
    // Truncation at the last step uses truncation_values, not next_values.
    const std::vector<std::uint8_t> last_cut{0, 0, 0, 0, 1, 0};
    const std::vector<std::uint8_t> none(6, 0);
    const std::vector<double> final_values{0, 0, 0, 0, 10, 0};
    rlhf::compute_gae_time_major(view_of(rewards, 3, 2), view_of(values, 3, 2), view_of(none, 3, 2),
                                 view_of(last_cut, 3, 2), view_of(final_values, 3, 2),
                                 rlhf::view<double, 1>{next_values.data(), {2}}, mut_view_of(a, 3, 2),
                                 mut_view_of(ret, 3, 2), {.gamma = 0.5, .lambda = 0.5});
    CHECK(a[4] == 3 + 5 - 1.5);
}

TEST_CASE_TEMPLATE("compute_gae_time_major matches a per-environment reference" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 rng(99);
    std::normal_distribution<double> normal;
    std::bernoulli_distribution flag(0.15);
    const std::size_t steps = 13, envs = 5;
    std::vector<double> r(steps * envs), v(steps * envs), fin(steps * envs), next(envs);
    std::vector<int> term(steps * envs), trunc(steps * envs);
    for (std::size_t i = 0; i < r.size(); ++i) {
        r[i] = static_cast<double>(static_cast<T>(normal(rng)));
        v[i] = static_cast<double>(static_cast<T>(normal(rng)));
        fin[i] = static_cast<double>(static_cast<T>(normal(rng)));
        term[i] = flag(rng) ? 1 : 0;
        trunc[i] = flag(rng) ? 1 : 0;
    }
    for (double& x : next) x = static_cast<double>(static_cast<T>(normal(rng)));
    const double gamma = 0.97, lambda = 0.9;
    // Reference: each environment's episodes split at the flags, A_t = Σ (γλ)^k δ_{t+k} inside one.
    std::vector<double> expected(r.size());
    for (std::size_t n = 0; n < envs; ++n)
        for (std::size_t t = 0; t < steps; ++t) {
            double a = 0, discount = 1;
            for (std::size_t k = t; k < steps; ++k) {
                const std::size_t i = k * envs + n;
                const double next_v = term[i] ? 0.0 : trunc[i] ? fin[i] : (k + 1 < steps ? v[i + envs] : next[n]);
                a += discount * (r[i] + gamma * next_v - v[i]);
                if (term[i] || trunc[i]) break;
                discount *= gamma * lambda;
            }
            expected[t * envs + n] = a;
        }
    const auto rt = as<T>(r), vt = as<T>(v), ft = as<T>(fin), nt = as<T>(next);
    const auto S = static_cast<index_t>(steps), N = static_cast<index_t>(envs);
    std::vector<T> a(r.size()), ret(r.size());
    rlhf::compute_gae_time_major(view_of(rt, S, N), view_of(vt, S, N), view_of(term, S, N), view_of(trunc, S, N),
                                 view_of(ft, S, N), rlhf::view<T, 1>{nt.data(), {N}}, mut_view_of(a, S, N),
                                 mut_view_of(ret, S, N), {.gamma = gamma, .lambda = lambda});
    for (std::size_t i = 0; i < a.size(); ++i) {
        CHECK(static_cast<double>(a[i]) ==
              doctest::Approx(expected[i]).epsilon(rlhf_test::tolerance<T>(1e-5)).scale(1.0));
        CHECK(static_cast<double>(ret[i]) ==
              doctest::Approx(expected[i] + v[i]).epsilon(rlhf_test::tolerance<T>(1e-5)).scale(1.0));
    }
    // In place over the rewards.
    std::vector<T> in_place = rt;
    std::vector<T> ret2(r.size());
    rlhf::compute_gae_time_major(view_of(in_place, S, N), view_of(vt, S, N), view_of(term, S, N), view_of(trunc, S, N),
                                 view_of(ft, S, N), rlhf::view<T, 1>{nt.data(), {N}}, mut_view_of(in_place, S, N),
                                 mut_view_of(ret2, S, N), {.gamma = gamma, .lambda = lambda});
    CHECK(in_place == a);
    CHECK(ret2 == ret);
}

TEST_CASE("compute_gae_time_major rejects bad input with the argument's name" * doctest::test_suite("unit")) {
    std::vector<double> r(6, 1.0), v(6, 0.5), fin(6, 0.0), next{0, 0};
    const std::vector<int> zeros(6, 0);
    std::vector<double> a(6), ret(6);
    const auto S = index_t{3}, N = index_t{2};
    const auto call = [&](const std::vector<int>& term, const std::vector<int>& trunc,
                          const std::vector<double>& next_values, const rlhf::time_major_gae_options& o) {
        rlhf::compute_gae_time_major(
            view_of(r, S, N), view_of(v, S, N), view_of(term, S, N), view_of(trunc, S, N), view_of(fin, S, N),
            rlhf::view<double, 1>{next_values.data(), {static_cast<index_t>(next_values.size())}}, mut_view_of(a, S, N),
            mut_view_of(ret, S, N), o);
    };
    CHECK_NOTHROW(call(zeros, zeros, next, {}));
    auto e = expect_error([&] { call(zeros, zeros, {0, 0, 0}, {}); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.function() == "rlhf::compute_gae_time_major");
    CHECK(e.argument() == "next_values");
    e = expect_error([&] { call(zeros, zeros, next, {.gamma = 1.01}); });
    CHECK(e.argument() == "gamma");
    e = expect_error([&] { call(zeros, zeros, next, {.lambda = -1}); });
    CHECK(e.argument() == "lambda");
    const std::vector<int> two{0, 2, 0, 0, 0, 0};
    e = expect_error([&] { call(two, zeros, next, {}); });
    CHECK(e.argument() == "terminated");
    e = expect_error([&] { call(zeros, two, next, {}); });
    CHECK(e.argument() == "truncated");
    fin[3] = std::numeric_limits<double>::quiet_NaN();
    e = expect_error([&] { call(zeros, zeros, next, {}); });
    CHECK(e.argument() == "truncation_values");
    fin[3] = 0;
    // Outputs may share memory only with the rewards.
    e = expect_error([&] {
        rlhf::compute_gae_time_major(view_of(r, S, N), view_of(v, S, N), view_of(zeros, S, N), view_of(zeros, S, N),
                                     view_of(fin, S, N), rlhf::view<double, 1>{next.data(), {2}}, mut_view_of(v, S, N),
                                     mut_view_of(ret, S, N));
    });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "advantages");
}

// Found by tests/fuzz (docs/fuzzing.md): the time-major kernel carries the advantage through its
// float32 output rows; one beyond float's range (+inf) times γλ = 0 gave NaN.
TEST_CASE("compute_gae_time_major: gamma * lambda = 0 does not read an overflowed advantage" *
          doctest::test_suite("unit")) {
    const std::vector<float> rewards{1.0f, 1e38f}, values{0.5f, 0.0f}, zeros{0.0f, 0.0f}, next{3.4e38f};
    std::vector<float> adv(2), ret(2);
    const auto m = [](const std::vector<float>& x) { return rlhf::make_view(x.data(), 2, 1); };
    rlhf::compute_gae_time_major(m(rewards), m(values), m(zeros), m(zeros), m(zeros),
                                 rlhf::view<float, 1>(next.data(), {1}), rlhf::make_mut_view(adv.data(), 2, 1),
                                 rlhf::make_mut_view(ret.data(), 2, 1), {.gamma = 1.0, .lambda = 0.0});
    CHECK(std::isinf(adv[1]));  // 1e38 + 3.4e38 overflows float (documented)
    CHECK(adv[0] == 0.5f);      // r_0 + γ·V_1 − V_0, no γλ·A_1 term
}

// The affine maps behind the CUDA kernels (rlhf/cuda/gae_scan.hpp, CUDA-free): scanned in the
// CUDA kernels' order (chunks from the row's end, a Hillis–Steele scan inside each, the running
// map carried from chunk to chunk), they reproduce the CPU kernels. This checks the per-position
// coefficients and the associativity the device scans rely on, without a GPU.
namespace {

namespace gae_scan = rlhf::detail::gae_scan;

// Inclusive scan of `maps` (in scan order) by pairwise rounds, as a block scan reorders it, each
// result composed over `seed` (the map of everything scanned before).
std::vector<gae_scan::affine> tree_scan(std::vector<gae_scan::affine> maps, const gae_scan::affine& seed) {
    const gae_scan::backward_op op;
    for (std::size_t offset = 1; offset < maps.size(); offset *= 2) {
        std::vector<gae_scan::affine> next = maps;
        for (std::size_t i = offset; i < maps.size(); ++i) next[i] = op(maps[i - offset], maps[i]);
        maps = next;
    }
    for (auto& m : maps) m = op(seed, m);
    return maps;
}

// One row by the device kernel's order, with chunks of `chunk` positions.
void scan_row_like_device(const std::vector<double>& r, const std::vector<double>& v, const std::vector<int>& m,
                          std::size_t row, std::size_t cols, rlhf::gae_masking masking, double gamma, double lambda,
                          double bootstrap, std::size_t chunk, std::vector<double>& adv, std::vector<double>& ret) {
    const auto at = [&](std::size_t t) { return row * cols + t; };
    gae_scan::affine running = gae_scan::constant(0.0, bootstrap);
    for (std::size_t end = cols; end > 0;) {
        const std::size_t start = end > chunk ? end - chunk : 0;
        std::vector<gae_scan::affine> maps;
        for (std::size_t t = end; t-- > start;) {
            const double next_counted = t + 1 < cols && m[at(t + 1)] != 0 ? v[at(t + 1)] : 0.0;
            maps.push_back(
                gae_scan::step(masking, m[at(t)] != 0, r[at(t)], v[at(t)], next_counted, gamma, gamma * lambda));
        }
        const std::vector<gae_scan::affine> scanned = tree_scan(maps, running);
        for (std::size_t j = 0; j < scanned.size(); ++j) {
            const std::size_t t = end - 1 - j;
            const gae_scan::outputs out = gae_scan::output(masking, m[at(t)] != 0, scanned[j].e, v[at(t)]);
            adv[at(t)] = out.advantage;
            ret[at(t)] = out.ret;
        }
        running = scanned.back();
        end = start;
    }
}

}  // namespace

TEST_CASE("gae_scan: the device scan order of the affine maps equals compute_gae" * doctest::test_suite("unit")) {
    std::mt19937 rng(7);
    int trial = 0;
    for (const std::size_t cols : {1U, 2U, 5U, 16U, 37U, 130U}) {
        for (const auto masking :
             {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
            ++trial;
            const std::size_t rows = 4;
            const double gamma = trial % 3 == 0 ? 1.0 : 0.9, lambda = trial % 2 == 0 ? 0.95 : 0.0;
            const rollout x = random_rollout(rng, rows, cols, masking == rlhf::gae_masking::valid_range);
            const auto R = static_cast<index_t>(rows), C = static_cast<index_t>(cols);
            const rlhf::gae_options options{.gamma = gamma, .lambda = lambda, .masking = masking};
            for (const bool with_bootstrap : {false, true}) {
                std::vector<double> a(x.r.size()), ret(x.r.size());
                if (with_bootstrap)
                    rlhf::compute_gae(view_of(x.r, R, C), view_of(x.v, R, C), view_of(x.m, R, C),
                                      rlhf::view<double, 1>{x.boot.data(), {R}}, mut_view_of(a, R, C),
                                      mut_view_of(ret, R, C), options);
                else
                    rlhf::compute_gae(view_of(x.r, R, C), view_of(x.v, R, C), view_of(x.m, R, C), mut_view_of(a, R, C),
                                      mut_view_of(ret, R, C), options);
                for (const std::size_t chunk : {1U, 3U, 8U, 1024U}) {
                    std::vector<double> sa(a.size()), sret(a.size());
                    for (std::size_t b = 0; b < rows; ++b)
                        scan_row_like_device(x.r, x.v, x.m, b, cols, masking, gamma, lambda,
                                             with_bootstrap ? x.boot[b] : 0.0, chunk, sa, sret);
                    for (std::size_t i = 0; i < a.size(); ++i) {
                        // Double sums of at most 130 terms of size < 10 taken in another order.
                        CHECK(sa[i] == doctest::Approx(a[i]).epsilon(1e-12).scale(1.0));
                        CHECK(sret[i] == doctest::Approx(ret[i]).epsilon(1e-12).scale(1.0));
                    }
                }
            }
        }
    }
}

TEST_CASE("gae_scan: time-major slices combined by a scan equal compute_gae_time_major" * doctest::test_suite("unit")) {
    std::mt19937 rng(11);
    std::normal_distribution<double> normal;
    std::bernoulli_distribution flag(0.1);
    for (const std::size_t steps : {1U, 2U, 9U, 64U, 301U}) {
        const std::size_t envs = 3;
        std::vector<double> r(steps * envs), v(steps * envs), fin(steps * envs), next(envs);
        std::vector<int> term(steps * envs), trunc(steps * envs);
        for (std::size_t i = 0; i < r.size(); ++i) {
            r[i] = normal(rng);
            v[i] = normal(rng);
            fin[i] = normal(rng);
            term[i] = flag(rng) ? 1 : 0;
            trunc[i] = flag(rng) ? 1 : 0;
        }
        for (double& x : next) x = normal(rng);
        const double gamma = 0.99, lambda = steps % 2 == 0 ? 0.95 : 1.0;
        const auto S = static_cast<index_t>(steps), N = static_cast<index_t>(envs);
        std::vector<double> a(r.size()), ret(r.size());
        rlhf::compute_gae_time_major(view_of(r, S, N), view_of(v, S, N), view_of(term, S, N), view_of(trunc, S, N),
                                     view_of(fin, S, N), rlhf::view<double, 1>{next.data(), {N}}, mut_view_of(a, S, N),
                                     mut_view_of(ret, S, N), {.gamma = gamma, .lambda = lambda});
        const auto map_at = [&](std::size_t t, std::size_t n) {
            const std::size_t i = t * envs + n;
            return gae_scan::time_major_step(term[i] != 0, trunc[i] != 0, r[i], v[i],
                                             t + 1 < steps ? v[i + envs] : next[n], fin[i], gamma, gamma * lambda);
        };
        for (const std::size_t slices : {1U, 2U, 8U, 64U}) {
            const std::size_t slice = (steps + slices - 1) / slices;
            for (std::size_t n = 0; n < envs; ++n) {
                // Each slice's map, then the suffix scan of the slices (pairwise rounds).
                std::vector<gae_scan::affine> maps(slices, gae_scan::identity());
                for (std::size_t y = 0; y < slices; ++y)
                    for (std::size_t t = std::min(steps, (y + 1) * slice); t-- > std::min(steps, y * slice);)
                        maps[y] = gae_scan::compose(map_at(t, n), maps[y]);
                for (std::size_t offset = 1; offset < slices; offset *= 2) {
                    std::vector<gae_scan::affine> next_maps = maps;
                    for (std::size_t y = 0; y + offset < slices; ++y)
                        next_maps[y] = gae_scan::compose(maps[y], maps[y + offset]);
                    maps = next_maps;
                }
                for (std::size_t y = 0; y < slices; ++y) {
                    double advantage = y + 1 < slices ? maps[y + 1].e : 0.0;
                    for (std::size_t t = std::min(steps, (y + 1) * slice); t-- > std::min(steps, y * slice);) {
                        const gae_scan::affine map = map_at(t, n);
                        advantage = map.e + map.a * advantage;
                        CHECK(advantage == doctest::Approx(a[t * envs + n]).epsilon(1e-12).scale(1.0));
                        CHECK(advantage + v[t * envs + n] ==
                              doctest::Approx(ret[t * envs + n]).epsilon(1e-12).scale(1.0));
                    }
                }
            }
        }
    }
}
