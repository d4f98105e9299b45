#pragma once
// Seeded inputs that several test files share (the backends' agreement tests build their
// containers from these), as plain row-major vectors with kernel views.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/core/view.hpp"
#include "support/test_helpers.hpp"

namespace rlhf_test {

/// Outcome-advantage inputs, [6, 7]: random rewards; a mask with full rows, right padding (row 1),
/// left padding (row 2), an interior hole (row 3) and an empty row (4); group ids neither
/// contiguous nor sorted, with a singleton (100); per-row scores and baselines.
template <class T>
struct outcome_batch {
    static constexpr rlhf::index_t rows = 6, cols = 7;
    std::vector<T> rewards, mask, scores, baselines;
    std::vector<std::int64_t> ids{3, -8, 3, 100, -8, 3};
    explicit outcome_batch(unsigned seed)
        : mask(mask_pattern(rows, cols).right_padding(1, 4).left_padding(2, 2).hole(3, 3, 5).empty_row(4).values<T>()) {
        std::mt19937 gen(seed);
        std::normal_distribution<double> normal;
        for (rlhf::index_t i = 0; i < rows; ++i) {
            for (rlhf::index_t t = 0; t < cols; ++t) rewards.push_back(static_cast<T>(normal(gen)));
            scores.push_back(static_cast<T>(normal(gen)));
            baselines.push_back(static_cast<T>(normal(gen)));
        }
    }
    [[nodiscard]] rlhf::view<T> r() const { return rlhf::make_view(rewards.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T> m() const { return rlhf::make_view(mask.data(), rows, cols); }
    [[nodiscard]] rlhf::view<std::int64_t, 1> g() const { return vec(ids); }
    [[nodiscard]] rlhf::view<T, 1> s() const { return vec(scores); }
    [[nodiscard]] rlhf::view<T, 1> b() const { return vec(baselines); }
};

/// Reward-shaping inputs, [5, 7]: log-probs −1.5·|N(0, 1)|, reference log-probs 0.3·N(0, 1) away,
/// scores 2·N(0, 1), and a uint8 mask with right padding, holes, an empty row, left padding and a
/// full row.
template <class T>
struct reward_batch {
    static constexpr rlhf::index_t rows = 5, cols = 7;
    std::vector<T> lp, ref, scores;
    std::vector<std::uint8_t> mask{1, 1, 1, 1, 0, 0, 0,   // right padding
                                   1, 0, 1, 1, 0, 1, 0,   // holes
                                   0, 0, 0, 0, 0, 0, 0,   // empty
                                   0, 0, 0, 1, 1, 1, 1,   // left padding
                                   1, 1, 1, 1, 1, 1, 1};  // full
    explicit reward_batch(unsigned seed) {
        std::mt19937 rng(seed);
        std::normal_distribution<double> normal(0.0, 1.0);
        for (rlhf::index_t i = 0; i < rows * cols; ++i) {
            lp.push_back(static_cast<T>(-std::abs(normal(rng)) * 1.5));
            ref.push_back(static_cast<T>(static_cast<double>(lp.back()) + 0.3 * normal(rng)));
        }
        for (rlhf::index_t b = 0; b < rows; ++b) scores.push_back(static_cast<T>(2.0 * normal(rng)));
    }
    [[nodiscard]] rlhf::view<T> lp_view() const { return rlhf::make_view(lp.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T> ref_view() const { return rlhf::make_view(ref.data(), rows, cols); }
    [[nodiscard]] rlhf::view<std::uint8_t> mask_view() const { return rlhf::make_view(mask.data(), rows, cols); }
    [[nodiscard]] rlhf::view<T, 1> scores_view() const { return vec(scores); }
};

/// Logits inputs: policy and reference logits [B, T, V] of N(0, 2) (drawn in pairs), tokens in
/// [0, V), and upstream gradients for the log-probs and the entropy [B, T] (drawn in pairs).
template <class T>
struct logits_batch {
    rlhf::index_t b, t, v;
    std::vector<T> logits, reference, g_lp, g_h;
    std::vector<std::int64_t> tokens;
    logits_batch(unsigned seed, rlhf::index_t batch, rlhf::index_t steps, rlhf::index_t vocab)
        : b(batch), t(steps), v(vocab) {
        std::mt19937 gen(seed);
        std::normal_distribution<double> normal(0.0, 2.0);
        for (rlhf::index_t i = 0; i < b * t * v; ++i) {
            logits.push_back(static_cast<T>(normal(gen)));
            reference.push_back(static_cast<T>(normal(gen)));
        }
        std::uniform_int_distribution<std::int64_t> pick(0, v - 1);
        for (rlhf::index_t i = 0; i < b * t; ++i) tokens.push_back(pick(gen));
        for (rlhf::index_t i = 0; i < b * t; ++i) {
            g_lp.push_back(static_cast<T>(normal(gen)));
            g_h.push_back(static_cast<T>(normal(gen)));
        }
    }
    [[nodiscard]] rlhf::view<T, 3> z() const { return {logits.data(), {b, t, v}}; }
    [[nodiscard]] rlhf::view<T, 3> q() const { return {reference.data(), {b, t, v}}; }
    [[nodiscard]] rlhf::view<std::int64_t> y() const { return {tokens.data(), {b, t}}; }
    [[nodiscard]] rlhf::view<T> lp_grad() const { return {g_lp.data(), {b, t}}; }
    [[nodiscard]] rlhf::view<T> h_grad() const { return {g_h.data(), {b, t}}; }
};

}  // namespace rlhf_test
