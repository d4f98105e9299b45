#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::check_close;
using rlhf_test::expect_error;

namespace {

using rlhf::reward_slot;

// Four rows of T = 5: right padding, full, left padding, an interior hole.
const std::vector<int> four_masks{1, 1, 1, 0, 0,  //
                                  1, 1, 1, 1, 1,  //
                                  0, 0, 1, 1, 1,  //
                                  1, 0, 1, 1, 0};
// The same KL on every row; beta = 2 makes the KL term -0.2, -0.4, ..., -1.0.
const std::vector<double> four_kl{0.1, 0.2, 0.3, 0.4, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5,
                                  0.1, 0.2, 0.3, 0.4, 0.5, 0.1, 0.2, 0.3, 0.4, 0.5};
const std::vector<double> four_scores{10, 10, 10, 10};

std::vector<double> shape_four(const rlhf::reward_shaping_options& options) {
    std::vector<double> out(20);
    rlhf::shape_rewards(rlhf::make_view(four_kl.data(), 4, 5), rlhf::make_view(four_masks.data(), 4, 5),
                        rlhf::view<double, 1>{four_scores.data(), {4}}, rlhf::make_mut_view(out.data(), 4, 5), options);
    return out;
}

// Naive reference: slot found by explicit searches, rewards written in separate passes.
template <class T, class M>
std::vector<double> naive_shape(const std::vector<T>& kl, const std::vector<M>& mask, const std::vector<T>& scores,
                                rlhf::index_t rows, rlhf::index_t cols, const rlhf::reward_shaping_options& o) {
    std::vector<double> out(kl.size());
    for (rlhf::index_t b = 0; b < rows; ++b) {
        const auto at = [&](rlhf::index_t t) { return static_cast<std::size_t>(b * cols + t); };
        rlhf::index_t n = 0;
        for (rlhf::index_t t = 0; t < cols; ++t)
            if (mask[at(t)] != M{0}) ++n;
        rlhf::index_t last = -1;
        for (rlhf::index_t t = cols - 1; t >= 0; --t)
            if (mask[at(t)] != M{0}) {
                last = t;
                break;
            }
        for (rlhf::index_t t = 0; t < cols; ++t) {
            double k = static_cast<double>(kl[at(t)]);
            if (o.mask_kl && mask[at(t)] == M{0}) k = 0.0;
            double r = -o.kl_coef * k;
            if (o.divide_kl_by_length) r /= static_cast<double>(n > 0 ? n : 1);
            out[at(t)] = r;
        }
        double s = static_cast<double>(scores[static_cast<std::size_t>(b)]);
        if (o.score_clip) s = std::min(std::max(s, -*o.score_clip), *o.score_clip);
        if (o.score_clip_range) s = std::min(std::max(s, o.score_clip_range->first), o.score_clip_range->second);
        if (n == 0 && o.empty_rows == rlhf::empty_row_policy::drop_score) continue;
        if (o.slot == reward_slot::every_valid_token) {
            for (rlhf::index_t t = 0; t < cols; ++t) out[at(t)] = t < n ? out[at(t)] + s : 0.0;
            continue;
        }
        rlhf::index_t slot = 0;
        if (o.slot == reward_slot::last_valid_token) slot = n > 0 ? last : cols - 1;
        if (o.slot == reward_slot::after_last_valid) slot = n < cols - 1 ? n : cols - 1;
        if (o.slot == reward_slot::first_pad_slot) slot = n == 0 ? 0 : (last == cols - 1 ? last : last + 1);
        out[at(slot)] += s;
    }
    return out;
}

const reward_slot all_slots[] = {reward_slot::last_valid_token, reward_slot::after_last_valid,
                                 reward_slot::every_valid_token, reward_slot::first_pad_slot};

}  // namespace

TEST_CASE("shape_rewards: each slot on right / full / left and holed rows (hand-computed)" *
          doctest::test_suite("unit")) {
    const std::vector<double> kl_term{-0.2, -0.4, -0.6, -0.8, -1.0};
    const auto expected = [&](std::vector<int> slots) {  // slot per row
        std::vector<double> out;
        for (int slot : slots)
            for (int t = 0; t < 5; ++t) out.push_back(kl_term[static_cast<std::size_t>(t)] + (t == slot ? 10.0 : 0.0));
        return out;
    };
    check_close(shape_four({.kl_coef = 2.0, .slot = reward_slot::last_valid_token}), expected({2, 4, 4, 3}));
    // DeepSpeed-Chat counts tokens: min(n, T - 1).
    check_close(shape_four({.kl_coef = 2.0, .slot = reward_slot::after_last_valid}), expected({3, 4, 3, 3}));
    // Current TRL: one past the last valid token, or the last one when it ends the row.
    check_close(shape_four({.kl_coef = 2.0, .slot = reward_slot::first_pad_slot}), expected({3, 4, 4, 4}));
    // ColossalChat v2: the score on every index < n, the rest zeroed (valid tokens too, with left padding).
    check_close(shape_four({.kl_coef = 2.0, .slot = reward_slot::every_valid_token}),
                {9.8, 9.6, 9.4, 0, 0, 9.8, 9.6, 9.4, 9.2, 9.0, 9.8, 9.6, 9.4, 0, 0, 9.8, 9.6, 9.4, 0, 0});
    check_close(shape_four({.kl_coef = 2.0, .slot = reward_slot::every_valid_token, .mask_kl = true}),
                {9.8, 9.6, 9.4, 0, 0, 9.8, 9.6, 9.4, 9.2, 9.0, 10, 10, 9.4, 0, 0, 9.8, 10, 9.4, 0, 0});
    // A masked KL term is 0 at masked positions.
    check_close(shape_four({.kl_coef = 2.0, .slot = reward_slot::last_valid_token, .mask_kl = true}),
                {-0.2, -0.4, 9.4, 0, 0, -0.2, -0.4, -0.6, -0.8, 9.0, 0, 0, -0.6, -0.8, 9.0, -0.2, 0, -0.6, 9.2, 0});
}

TEST_CASE("shape_rewards: score clipping and ChatLearn's division by length" * doctest::test_suite("unit")) {
    auto out = shape_four({.kl_coef = 2.0, .score_clip = 5.0});
    CHECK(out[2] == doctest::Approx(-0.6 + 5.0));
    out = shape_four({.kl_coef = 2.0, .score_clip_range = std::pair{-1.0, 3.0}});
    CHECK(out[2] == doctest::Approx(-0.6 + 3.0));
    out = shape_four({.kl_coef = 2.0, .score_clip = 0.0});
    CHECK(out[2] == doctest::Approx(-0.6));
    // n = 3 on the first row, 5 on the second.
    out = shape_four({.kl_coef = 2.0, .divide_kl_by_length = true});
    CHECK(out[0] == doctest::Approx(-0.2 / 3.0));
    CHECK(out[2] == doctest::Approx(-0.6 / 3.0 + 10.0));
    CHECK(out[5] == doctest::Approx(-0.2 / 5.0));
    // beta = 0: the score alone.
    out = shape_four({.kl_coef = 0.0});
    CHECK(out[0] == 0.0);
    CHECK(out[2] == 10.0);
}

TEST_CASE("shape_rewards: the empty-row policies" * doctest::test_suite("unit")) {
    const std::vector<double> kl{0.1, 0.2, 0.3, 0.1, 0.2, 0.3};
    const std::vector<bool> bits{true, false, false, false, false, false};
    const std::vector<std::uint8_t> mask(bits.begin(), bits.end());  // row 1 empty
    const std::vector<double> scores{1.0, 10.0};
    const auto run = [&](reward_slot slot, rlhf::empty_row_policy policy) {
        std::vector<double> out(6);
        rlhf::shape_rewards(rlhf::make_view(kl.data(), 2, 3), rlhf::make_view(mask.data(), 2, 3),
                            rlhf::view<double, 1>{scores.data(), {2}}, rlhf::make_mut_view(out.data(), 2, 3),
                            {.kl_coef = 1.0, .slot = slot, .empty_rows = policy});
        return std::vector<double>(out.begin() + 3, out.end());
    };
    for (const auto slot : all_slots) {
        const auto e = expect_error([&] { run(slot, rlhf::empty_row_policy::raise); });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "mask");
        CHECK(e.actual() == "row 1 is empty");
        check_close(run(slot, rlhf::empty_row_policy::drop_score), {-0.1, -0.2, -0.3});
    }
    check_close(run(reward_slot::last_valid_token, rlhf::empty_row_policy::peer_slot), {-0.1, -0.2, 9.7});  // OpenRLHF
    check_close(run(reward_slot::after_last_valid, rlhf::empty_row_policy::peer_slot), {9.9, -0.2, -0.3});  // DS-Chat
    check_close(run(reward_slot::first_pad_slot, rlhf::empty_row_policy::peer_slot), {9.9, -0.2, -0.3});    // TRL
    check_close(run(reward_slot::every_valid_token, rlhf::empty_row_policy::peer_slot), {0, 0, 0});
}

TEST_CASE("shape_rewards: a DeepSpeed-Chat sequence through column-range views" * doctest::test_suite("unit")) {
    // [B, S - 1] = [1, 6], prompt length P = 3: response columns [2, 6).
    const std::vector<double> lp{-1.0, -2.0, -1.0, -1.5, -2.0, -3.0};
    const std::vector<double> ref{-1.5, -1.0, -2.0, -1.0, -2.5, -3.0};
    const std::vector<double> action_mask{1, 1, 1, 1, 0, 0};  // 2 response tokens
    const std::vector<double> score{7.0};
    std::vector<double> rewards(6);
    const auto cols = [](const double* p) { return rlhf::view<double>{p + 2, {1, 4}, {6, 1}}; };
    rlhf::kl_rewards(rlhf::view<double>{lp.data(), {1, 2}, {6, 1}}, rlhf::view<double>{ref.data(), {1, 2}, {6, 1}},
                     rlhf::mut_view<double>{rewards.data(), {1, 2}, {6, 1}}, 0.1);
    rlhf::shape_rewards_from_logprobs(cols(lp.data()), cols(ref.data()), cols(action_mask.data()),
                                      rlhf::view<double, 1>{score.data(), {1}},
                                      rlhf::mut_view<double>{rewards.data() + 2, {1, 4}, {6, 1}},
                                      {.kl_coef = 0.1, .slot = reward_slot::after_last_valid, .score_clip = 5.0});
    // -0.1 * (lp - ref); the clipped score (5) at start + n = response column 2.
    check_close(rewards, {-0.05, 0.1, -0.1, 0.05, -0.05 + 5.0, 0.0});
}

TEST_CASE_TEMPLATE("shape_rewards matches the naive reference / the fused form equals token_kl + shape_rewards" *
                       doctest::test_suite("unit"),
                   T, float, double) {
    std::mt19937 rng(11);
    std::normal_distribution<double> normal(0.0, 1.0);
    const rlhf::index_t B = 6, C = 8;
    std::vector<T> lp(B * C), ref(B * C), kl(B * C), fused(B * C), composed(B * C), scores(B);
    std::vector<std::int32_t> mask(B * C, 0);
    for (std::size_t i = 0; i < lp.size(); ++i) {
        lp[i] = static_cast<T>(-std::abs(normal(rng)) * 1.5);
        ref[i] = static_cast<T>(static_cast<double>(lp[i]) + 0.3 * normal(rng));
    }
    for (auto& s : scores) s = static_cast<T>(3.0 * normal(rng));
    // Rows: right padding, full, left padding, holes, one token, right padding again.
    const int patterns[6][8] = {{1, 1, 1, 1, 1, 0, 0, 0}, {1, 1, 1, 1, 1, 1, 1, 1}, {0, 0, 0, 1, 1, 1, 1, 1},
                                {1, 0, 1, 1, 0, 1, 0, 0}, {0, 0, 0, 0, 1, 0, 0, 0}, {1, 1, 0, 0, 0, 0, 0, 0}};
    for (rlhf::index_t b = 0; b < B; ++b)
        for (rlhf::index_t t = 0; t < C; ++t) mask[static_cast<std::size_t>(b * C + t)] = patterns[b][t];
    const auto lp_v = rlhf::make_view(lp.data(), B, C);
    const auto ref_v = rlhf::make_view(ref.data(), B, C);
    const auto mask_v = rlhf::make_view(mask.data(), B, C);
    const rlhf::view<T, 1> scores_v{scores.data(), {B}};
    const double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-13;
    for (const auto slot : all_slots) {
        for (const bool mask_kl : {false, true}) {
            for (const bool per_length : {false, true}) {
                rlhf::reward_shaping_options o{.kl_coef = 0.05,
                                               .slot = slot,
                                               .mask_kl = mask_kl,
                                               .score_clip = 2.0,
                                               .divide_kl_by_length = per_length,
                                               .kl = rlhf::kl_preset::verl(rlhf::kl_estimator::k3)};
                rlhf::token_kl(lp_v, ref_v, rlhf::make_mut_view(kl.data(), B, C), o.kl);
                rlhf::shape_rewards(rlhf::view<T>(rlhf::make_view(kl.data(), B, C)), mask_v, scores_v,
                                    rlhf::make_mut_view(composed.data(), B, C), o);
                rlhf::shape_rewards_from_logprobs(lp_v, ref_v, mask_v, scores_v,
                                                  rlhf::make_mut_view(fused.data(), B, C), o);
                CHECK(fused == composed);
                const auto expected = naive_shape(kl, mask, scores, B, C, o);
                for (std::size_t i = 0; i < expected.size(); ++i) {
                    CAPTURE(i);
                    CAPTURE(static_cast<int>(slot));
                    CHECK(std::abs(static_cast<double>(fused[i]) - expected[i]) <=
                          tolerance * std::max(1.0, std::abs(expected[i])));
                }
                // In place: rewards overwrite the KL.
                rlhf::shape_rewards(rlhf::view<T>(rlhf::make_view(kl.data(), B, C)), mask_v, scores_v,
                                    rlhf::make_mut_view(kl.data(), B, C), o);
                CHECK(kl == composed);
            }
        }
    }
}

TEST_CASE("shape_rewards: errors name the argument" * doctest::test_suite("unit")) {
    std::vector<double> kl(6, 0.1), out(6), scores{1.0, 2.0}, small(4);
    std::vector<double> mask{1, 1, 0, 1, 0, 0};
    const auto k = rlhf::make_view(kl.data(), 2, 3);
    const auto m = rlhf::make_view(mask.data(), 2, 3);
    const auto r = rlhf::make_mut_view(out.data(), 2, 3);
    const rlhf::view<double, 1> s{scores.data(), {2}};
    const auto error_of = [&](const rlhf::reward_shaping_options& o) {
        return expect_error([&] { rlhf::shape_rewards(k, m, s, r, o); });
    };
    auto e = error_of({.kl_coef = -0.1});
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "kl_coef");
    CHECK(e.function() == "rlhf::shape_rewards");
    CHECK(error_of({.kl_coef = std::numeric_limits<double>::quiet_NaN()}).argument() == "kl_coef");
    CHECK(error_of({.score_clip = -1.0}).argument() == "score_clip");
    CHECK(error_of({.score_clip_range = std::pair{2.0, 1.0}}).argument() == "score_clip_range");
    CHECK(error_of({.score_clip_range = std::pair{std::numeric_limits<double>::quiet_NaN(), 1.0}}).argument() ==
          "score_clip_range");
    CHECK(error_of({.score_clip = 1.0, .score_clip_range = std::pair{-1.0, 1.0}}).argument() == "score_clip_range");
    CHECK(error_of({.slot = static_cast<reward_slot>(9)}).argument() == "slot");
    CHECK(error_of({.empty_rows = static_cast<rlhf::empty_row_policy>(9)}).argument() == "empty_rows");

    e = expect_error([&] { rlhf::shape_rewards(k, rlhf::make_view(mask.data(), 3, 2), s, r); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { rlhf::shape_rewards(k, m, rlhf::view<double, 1>{scores.data(), {1}}, r); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "scores");
    e = expect_error([&] { rlhf::shape_rewards(k, m, s, rlhf::make_mut_view(small.data(), 2, 2)); });
    CHECK(e.argument() == "rewards");
    e = expect_error([&] { rlhf::shape_rewards(k, m, rlhf::view<double, 1>{out.data() + 4, {2}}, r); });
    CHECK(e.kind() == rlhf::error_kind::value);  // the output would overwrite the scores
    CHECK(e.argument() == "rewards");
    std::vector<double> big(8, 0.1);
    e = expect_error([&] {
        rlhf::shape_rewards(rlhf::make_view(big.data(), 2, 3), m, s, rlhf::make_mut_view(big.data() + 1, 2, 3));
    });
    CHECK(e.kind() == rlhf::error_kind::value);  // a partial overlap with the KL
    CHECK(e.argument() == "rewards");
    mask[1] = 0.5;
    e = expect_error([&] { rlhf::shape_rewards(k, m, s, r); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "mask");
    mask[1] = 1.0;
    scores[1] = std::numeric_limits<double>::infinity();
    CHECK(expect_error([&] { rlhf::shape_rewards(k, m, s, r); }).argument() == "scores");
    scores[1] = 2.0;
    kl[5] = std::numeric_limits<double>::quiet_NaN();
    e = expect_error([&] { rlhf::shape_rewards(k, m, s, r); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "kl");
    kl[5] = 0.1;

    // The fused form checks the log-probs and its KL options.
    std::vector<double> lp(6, -1.0), ref(6, -1.0);
    const auto lp_v = rlhf::make_view(lp.data(), 2, 3);
    const auto ref_v = rlhf::make_view(ref.data(), 2, 3);
    e = expect_error([&] { rlhf::shape_rewards_from_logprobs(lp_v, rlhf::make_view(ref.data(), 3, 2), m, s, r); });
    CHECK(e.argument() == "ref_log_probs");
    e = expect_error([&] { rlhf::shape_rewards_from_logprobs(lp_v, ref_v, m, s, r, {.kl = {.value_clamp = 0.0}}); });
    CHECK(e.argument() == "value_clamp");
    CHECK(e.function() == "rlhf::shape_rewards_from_logprobs");
    ref[2] = std::numeric_limits<double>::quiet_NaN();
    CHECK(expect_error([&] { rlhf::shape_rewards_from_logprobs(lp_v, ref_v, m, s, r); }).argument() == "ref_log_probs");
    ref[2] = -1.0;
    lp[0] = -std::numeric_limits<double>::infinity();
    CHECK(expect_error([&] { rlhf::shape_rewards_from_logprobs(lp_v, ref_v, m, s, r); }).argument() == "log_probs");
    CHECK(rlhf::parse_option<rlhf::empty_row_policy>("peer_slot") == rlhf::empty_row_policy::peer_slot);
}

TEST_CASE("kl_rewards: -beta * kl" * doctest::test_suite("unit")) {
    const std::vector<double> lp{-1.0, -1.5}, ref{-1.5, -1.0};
    std::vector<double> out(2);
    rlhf::kl_rewards(rlhf::make_view(lp.data(), 1, 2), rlhf::make_view(ref.data(), 1, 2),
                     rlhf::make_mut_view(out.data(), 1, 2), 0.2, {.estimator = rlhf::kl_estimator::k2});
    CHECK(out[0] == doctest::Approx(-0.025));
    CHECK(out[1] == doctest::Approx(-0.025));
    const auto e = expect_error([&] {
        rlhf::kl_rewards(rlhf::make_view(lp.data(), 1, 2), rlhf::make_view(ref.data(), 1, 2),
                         rlhf::make_mut_view(out.data(), 1, 2), -0.2);
    });
    CHECK(e.argument() == "kl_coef");
}

TEST_CASE("sequence_rewards: ColossalChat v1's r - beta * masked mean of k3" * doctest::test_suite("unit")) {
    // Row 0: d = +0.5, -0.5, masked; row 1: empty; row 2: d = -1000 on a valid token.
    const std::vector<double> lp{-1.0, -1.5, -1001.0, -1.0, -1.0, -1.0, -1001.0, -1.0, -1.0};
    const std::vector<double> ref{-1.5, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0};
    const std::vector<bool> bits{true, true, false, false, false, false, true, false, false};
    const std::vector<std::int64_t> mask(bits.begin(), bits.end());
    const std::vector<double> scores{1.0, 2.0, 3.0};
    std::vector<double> out(3);
    const auto run = [&](const rlhf::sequence_reward_options& o, rlhf::index_t rows) {
        rlhf::sequence_rewards(rlhf::view<double, 1>{scores.data(), {rows}}, rlhf::make_view(lp.data(), rows, 3),
                               rlhf::make_view(ref.data(), rows, 3), rlhf::make_view(mask.data(), rows, 3),
                               rlhf::mut_view<double, 1>{out.data(), {rows}}, o);
    };
    run({.kl_coef = 0.1}, 2);
    const double mean = (0.10653065971263342 + 0.14872127070012819) / 2.0;
    CHECK(out[0] == doctest::Approx(1.0 - 0.1 * mean).epsilon(1e-15));
    CHECK(out[1] == 2.0);  // empty row: mean KL 0
    run({.kl_coef = 0.1, .mean_eps = 1e-8}, 2);
    CHECK(out[0] == doctest::Approx(1.0 - 0.1 * (2.0 * mean) / (2.0 + 1e-8)).epsilon(1e-15));
    // beta = 0 returns the scores, even where the unclamped k3 overflows.
    run({.kl_coef = 0.0}, 3);
    CHECK(out[2] == 3.0);
    run({.kl_coef = 0.1, .kl = rlhf::kl_preset::verl(rlhf::kl_estimator::k3)}, 3);
    CHECK(out[2] == doctest::Approx(3.0 - 0.1 * 10.0));

    auto e = expect_error([&] { run({.kl_coef = -1.0}, 2); });
    CHECK(e.argument() == "kl_coef");
    e = expect_error([&] { run({.mean_eps = -1e-8}, 2); });
    CHECK(e.argument() == "mean_eps");
    e = expect_error([&] {
        rlhf::sequence_rewards(rlhf::view<double, 1>{scores.data(), {3}}, rlhf::make_view(lp.data(), 2, 3),
                               rlhf::make_view(ref.data(), 2, 3), rlhf::make_view(mask.data(), 2, 3),
                               rlhf::mut_view<double, 1>{out.data(), {2}});
    });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "scores");
    e = expect_error([&] {
        rlhf::sequence_rewards(rlhf::view<double, 1>{scores.data(), {2}}, rlhf::make_view(lp.data(), 2, 3),
                               rlhf::make_view(ref.data(), 2, 3), rlhf::make_view(mask.data(), 2, 3),
                               rlhf::mut_view<double, 1>{out.data(), {3}});
    });
    CHECK(e.argument() == "rewards");
    e = expect_error([&] {
        rlhf::sequence_rewards(rlhf::view<double, 1>{scores.data(), {2}}, rlhf::make_view(lp.data(), 2, 3),
                               rlhf::make_view(ref.data(), 2, 3), rlhf::make_view(mask.data(), 3, 2),
                               rlhf::mut_view<double, 1>{out.data(), {2}});
    });
    CHECK(e.argument() == "mask");
}

TEST_CASE("apply_kl_penalty: verl's KL in the reward and its current_kl" * doctest::test_suite("unit")) {
    // d = lp - ref: [[0.5, -0.5, 1], [0.25, 0.5, 8]]; the last token of row 1 is masked.
    const std::vector<double> lp{-1.0, -1.5, -1.0, -1.0, -1.0, -1.0};
    const std::vector<double> ref{-1.5, -1.0, -2.0, -1.25, -1.5, -9.0};
    const std::vector<double> scores{0, 0, 1, 0, 2, 0};
    const std::vector<std::uint8_t> mask{1, 1, 1, 1, 1, 0};
    std::vector<double> out(6);
    const auto s = rlhf::make_view(scores.data(), 2, 3);
    const auto l = rlhf::make_view(lp.data(), 2, 3);
    const auto r = rlhf::make_view(ref.data(), 2, 3);
    const auto o = rlhf::make_mut_view(out.data(), 2, 3);
    auto kl = rlhf::apply_kl_penalty(s, l, r, rlhf::make_view(mask.data(), 2, 3), o, 0.1);
    check_close(out, {-0.05, 0.05, 0.9, -0.025, 1.95, 0.0});
    CHECK(kl.measure == rlhf::kl_measure::seq_mean_token_mean);
    CHECK(kl.value == doctest::Approx((1.0 / 3.0 + 0.375) / 2.0).epsilon(1e-15));
    // Unmasked (verl core_algos.compute_rewards): every token, also in the mean.
    kl = rlhf::apply_kl_penalty(s, l, r, o, 0.1);
    check_close(out, {-0.05, 0.05, 0.9, -0.025, 1.95, -0.8});
    CHECK(kl.value == doctest::Approx((1.0 / 3.0 + 8.75 / 3.0) / 2.0).epsilon(1e-15));
    // An empty row has token-mean KL 0 and still counts.
    const std::vector<std::uint8_t> empty_row{1, 1, 1, 0, 0, 0};
    kl = rlhf::apply_kl_penalty(s, l, r, rlhf::make_view(empty_row.data(), 2, 3), o, 0.1);
    CHECK(kl.value == doctest::Approx((1.0 / 3.0) / 2.0).epsilon(1e-15));
    check_close(out, {-0.05, 0.05, 0.9, 0.0, 2.0, 0.0});

    auto e = expect_error([&] { (void)rlhf::apply_kl_penalty(s, l, r, o, -0.1); });
    CHECK(e.argument() == "kl_coef");
    CHECK(e.function() == "rlhf::apply_kl_penalty");
    e = expect_error([&] { (void)rlhf::apply_kl_penalty(s, rlhf::make_view(lp.data(), 3, 2), r, o, 0.1); });
    CHECK(e.argument() == "log_probs");
    e = expect_error([&] { (void)rlhf::apply_kl_penalty(s, l, r, rlhf::make_mut_view(out.data(), 1, 3), 0.1); });
    CHECK(e.argument() == "token_level_rewards");
    e = expect_error([&] { (void)rlhf::apply_kl_penalty(s, l, r, rlhf::make_view(mask.data(), 3, 2), o, 0.1); });
    CHECK(e.argument() == "mask");
    e = expect_error([&] {
        (void)rlhf::apply_kl_penalty(rlhf::make_view(scores.data(), 0, 3), rlhf::make_view(lp.data(), 0, 3),
                                     rlhf::make_view(ref.data(), 0, 3), rlhf::make_mut_view(out.data(), 0, 3), 0.1);
    });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "token_level_scores");
    std::vector<double> bad = scores;
    bad[0] = std::numeric_limits<double>::quiet_NaN();
    e = expect_error([&] { (void)rlhf::apply_kl_penalty(rlhf::make_view(bad.data(), 2, 3), l, r, o, 0.1); });
    CHECK(e.argument() == "token_level_scores");
}

TEST_CASE_TEMPLATE("scale_scores: TRL's running score scaling / normalisation and clipping" *
                       doctest::test_suite("unit"),
                   T, float, double) {
    const std::vector<T> scores{1, 2, 3, 4};
    std::vector<T> out(4);
    const rlhf::view<T, 1> s{scores.data(), {4}};
    const rlhf::mut_view<T, 1> o{out.data(), {4}};
    const double eps = static_cast<double>(std::numeric_limits<T>::epsilon());
    const double std_after = std::sqrt(1.25 * 4.0 / 3.0);  // the first batch dominates the initial state
    const double tolerance = std::is_same_v<T, float> ? 1e-6 : 1e-12;

    rlhf::running_moments running;
    const auto batch = rlhf::scale_scores(s, o, running, {.scale = true});
    CHECK(batch.mean == doctest::Approx(2.5));
    CHECK(running.std() == doctest::Approx(std_after).epsilon(1e-12));
    for (std::size_t i = 0; i < 4; ++i)
        CHECK(static_cast<double>(out[i]) ==
              doctest::Approx(static_cast<double>(scores[i]) / (running.std() + eps)).epsilon(tolerance));

    rlhf::running_moments normalising;
    rlhf::scale_scores(s, o, normalising, {.scale = true, .normalize = true, .clip = 1.0});
    CHECK(static_cast<double>(out[0]) == doctest::Approx(-1.0));  // (1 - 2.5) / 1.29 clipped
    CHECK(static_cast<double>(out[1]) ==
          doctest::Approx((2.0 - normalising.mean()) / (normalising.std() + eps)).epsilon(tolerance));

    // Clipping alone leaves the running moments untouched; in place is fine.
    std::vector<T> in_place{-3, 0.5, 7, 1};
    rlhf::running_moments untouched;
    rlhf::scale_scores(rlhf::view<T, 1>{in_place.data(), {4}}, rlhf::mut_view<T, 1>{in_place.data(), {4}}, untouched,
                       {.clip = 2.0});
    CHECK(in_place == std::vector<T>{-2, 0.5, 2, 1});
    CHECK(untouched.count() == 1e-24);

    auto e = expect_error([&] { rlhf::scale_scores(s, o, running, {.normalize = true}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "normalize");
    CHECK(expect_error([&] { rlhf::scale_scores(s, o, running, {.clip = -1.0}); }).argument() == "clip");
    CHECK(expect_error([&] { rlhf::scale_scores(s, o, running, {.scale = true, .eps = -1.0}); }).argument() == "eps");
    CHECK(expect_error([&] {
              rlhf::scale_scores(s, rlhf::mut_view<T, 1>{out.data(), {3}}, running);
          }).argument() == "out");
    std::vector<T> bad{1, std::numeric_limits<T>::quiet_NaN()};
    CHECK(expect_error([&] {
              rlhf::scale_scores(rlhf::view<T, 1>{bad.data(), {2}}, rlhf::mut_view<T, 1>{out.data(), {2}}, running);
          }).argument() == "scores");
    // One score has no unbiased std: the running moments' default policy raises.
    CHECK_THROWS_AS(rlhf::scale_scores(rlhf::view<T, 1>{scores.data(), {1}}, rlhf::mut_view<T, 1>{out.data(), {1}},
                                       running, {.scale = true}),
                    rlhf::error);
}
