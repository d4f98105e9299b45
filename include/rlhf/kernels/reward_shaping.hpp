#pragma once
/// @file
/// Per-token reward shaping: the KL penalty `-beta * kl` on every token plus a sequence score
/// placed at a documented slot (`rlhf::reward_slot`), and the sequence-level and verl variants.
///
/// Slots, for a row with mask `m` of length T, `n = sum(m)` valid tokens, the last valid at `l`:
///   last_valid_token   position `l`                                   TRL v0.11, OpenRLHF
///   after_last_valid   position `min(n, T - 1)`                       DeepSpeed-Chat `ends - 1`
///   every_valid_token  every position `< n`; positions `>= n` are 0   ColossalChat v2
///   first_pad_slot     `l + 1`, or `l` when `l = T - 1`               current TRL PPO
/// `after_last_valid` and `every_valid_token` count tokens, as their peers do: they are "one past
/// the last valid token" and "the valid tokens" only for right-padded rows. With left padding
/// `every_valid_token` zeroes valid tokens and scores padding, and `after_last_valid` lands
/// inside the row, exactly as ColossalChat v2 and DeepSpeed-Chat do.

#include <algorithm>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/options/reward_shaping.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

namespace detail {

inline void check_shaping_options(std::string_view function, const reward_shaping_options& options) {
    check_non_negative(function, "kl_coef", options.kl_coef);
    if (options.score_clip) check_non_negative(function, "score_clip", *options.score_clip);
    if (options.score_clip_range) {
        const auto [low, high] = *options.score_clip_range;
        if (!(low <= high))  // NaN fails too
            fail(error_kind::config, function, "score_clip_range", "low <= high",
                 "[" + number_string(low) + ", " + number_string(high) + "]");
        if (options.score_clip)
            fail(error_kind::config, function, "score_clip_range", "not set together with 'score_clip'", "both set");
    }
    switch (options.slot) {
        case reward_slot::last_valid_token:
        case reward_slot::after_last_valid:
        case reward_slot::every_valid_token:
        case reward_slot::first_pad_slot:
            break;
        default:
            fail(error_kind::config, function, "slot", "a reward_slot value", "an unknown value");
    }
    switch (options.empty_rows) {
        case empty_row_policy::raise:
        case empty_row_policy::drop_score:
        case empty_row_policy::peer_slot:
            break;
        default:
            fail(error_kind::config, function, "empty_rows", "an empty_row_policy value", "an unknown value");
    }
}

/// The interval a score is clipped to (`[-inf, inf]` without clipping).
struct score_bounds {
    double low, high;
};

/// The clipping interval of `options` (`score_clip` or `score_clip_range`).
inline score_bounds score_bounds_of(const reward_shaping_options& options) {
    if (options.score_clip) return {-*options.score_clip, *options.score_clip};
    if (options.score_clip_range) return {options.score_clip_range->first, options.score_clip_range->second};
    return {-std::numeric_limits<double>::infinity(), std::numeric_limits<double>::infinity()};
}

/// `std::clamp(score, low, high)` (host-device: the CUDA kernels clip with it too).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double clip_score(double score, const score_bounds& bounds) noexcept {
    return score < bounds.low ? bounds.low : (bounds.high < score ? bounds.high : score);
}

/// The clipped score, computed in double.
inline double clip_score(double score, const reward_shaping_options& options) {
    return clip_score(score, score_bounds_of(options));
}

/// Where the score of one row goes.
struct row_slot {
    index_t position;  ///< the slot, or -1 for no single slot
    index_t limit;     ///< every_valid_token: positions < limit get the score, the others are 0; else -1
    bool score;        ///< false: the row gets no score and no zeroing
};

/// The slot of a row with `count` valid tokens, the last at `last` (-1 if none), of `cols` columns,
/// for every policy but `raise` of an empty row (host-device: the CUDA kernels place scores with it).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE row_slot slot_of_row(reward_slot slot, empty_row_policy empty_rows,
                                                            index_t count, index_t last, index_t cols) noexcept {
    if (count == 0 && empty_rows == empty_row_policy::drop_score) return {-1, -1, false};
    switch (slot) {
        case reward_slot::last_valid_token:
            return {count > 0 ? last : cols - 1, -1, true};
        case reward_slot::after_last_valid:
            return {count < cols - 1 ? count : cols - 1, -1, true};
        case reward_slot::every_valid_token:
            return {-1, count, true};
        case reward_slot::first_pad_slot:
            return {count > 0 ? (last + 1 < cols ? last + 1 : last) : 0, -1, true};
    }
    return {-1, -1, false};
}

/// The slot of a row with `count` valid tokens, the last at `last` (-1 if none), of `cols` columns.
inline row_slot find_row_slot(std::string_view function, reward_slot slot, empty_row_policy empty_rows, index_t count,
                              index_t last, index_t cols, index_t row) {
    if (count == 0 && empty_rows == empty_row_policy::raise)
        fail(error_kind::value, function, "mask", "at least one valid token in every row (empty_rows = raise)",
             "row " + std::to_string(row) + " is empty");
    return slot_of_row(slot, empty_rows, count, last, cols);
}

/// The KL term of a position's reward, `-β·kl / length`, with `kl` taken as 0 where `masked_out`
/// (`mask_kl` and a mask-0 position). Host-device.
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE T kl_reward_term(T kl, bool masked_out, T neg_beta, T length) noexcept {
    return neg_beta * detail::bit_select(masked_out, T{0}, kl) / length;
}

/// The reward at position t of a `every_valid_token` row (`where.limit >= 0`): `term + score` below
/// the limit, 0 from it on. Host-device.
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE T reward_below_limit(T term, T score, bool below_limit) noexcept {
    return detail::bit_select(below_limit, term + score, T{0});
}

/// The reward at position t of a row with a single slot: `term`, plus the score at the slot. Host-device.
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE T reward_at_slot(T term, T score, bool at_slot) noexcept {
    return term + (at_slot ? score : T{0});
}

/// Positions per block of the shaping loop.
inline constexpr index_t shaping_block = 256;

/// The shaping loop shared by both entry points; `kl_block(b, start, len, out)` writes
/// `kl[b, start + k]` to `out[k]` for k < len (a block is read before its rewards are written, so
/// `rewards` may be an input).
template <class T, class M, class KlBlock>
void shape_rows(std::string_view function, view<M> mask, view<T, 1> scores, mut_view<T> rewards,
                const reward_shaping_options& options, KlBlock&& kl_block) {
    const index_t cols = mask.extent(1);
    const T neg_beta = static_cast<T>(-options.kl_coef);
    T kl[shaping_block];
    for (index_t b = 0; b < mask.extent(0); ++b) {
        const M* m = mask.row(b).data();
        index_t count = 0;
        for (index_t t = 0; t < cols; ++t) count += static_cast<index_t>(m[t] != M{0});
        index_t last = cols - 1;  // the last valid position: skip the padding 16 entries at a time
        for (; last >= 15; last -= 16) {
            unsigned any = 0;
            for (index_t j = 0; j < 16; ++j) any |= static_cast<unsigned>(m[last - j] != M{0});
            if (any != 0) break;
        }
        while (last >= 0 && m[last] == M{0}) --last;
        const row_slot where = find_row_slot(function, options.slot, options.empty_rows, count, last, cols, b);
        const T score = where.score ? static_cast<T>(clip_score(static_cast<double>(scores(b)), options)) : T{0};
        const T length = options.divide_kl_by_length ? static_cast<T>(std::max<index_t>(count, 1)) : T{1};
        T* out = rewards.row(b).data();
        // Branch-free (`bit_select`: a conditional expression would become a branch, and the loop
        // would stay scalar); dividing by a length of 1 is exact.
        const bool mask_kl = options.mask_kl;
        for (index_t start = 0; start < cols; start += shaping_block) {
            const index_t len = std::min(shaping_block, cols - start);
            kl_block(b, start, len, kl);
            if (where.limit >= 0) {
                for (index_t k = 0; k < len; ++k) {
                    const index_t t = start + k;
                    const T r = kl_reward_term(kl[k], mask_kl & (m[t] == M{0}), neg_beta, length);
                    out[t] = reward_below_limit(r, score, t < where.limit);
                }
            } else {
                for (index_t k = 0; k < len; ++k) {
                    const index_t t = start + k;
                    const T r = kl_reward_term(kl[k], mask_kl & (m[t] == M{0}), neg_beta, length);
                    out[t] = reward_at_slot(r, score, t == where.position);
                }
            }
        }
    }
}

template <class T, class M>
void check_shaping_inputs(std::string_view function, view<T> reference, std::string_view reference_name, view<M> mask,
                          view<T, 1> scores, mut_view<T> rewards) {
    check_same_shape(function, "mask", mask, reference_name, reference);
    check_length(function, "scores", scores.extent(0), reference.extent(0), "one per row of 'mask'");
    check_same_shape(function, "rewards", rewards, reference_name, reference);
    check_binary_mask(function, "mask", mask);
    check_finite(function, "scores", scores);
    check_disjoint(function, "rewards", rewards, "mask", mask);
    check_disjoint(function, "rewards", rewards, "scores", scores);
}

}  // namespace detail

/// Per-token rewards from a given per-token KL: `rewards = -kl_coef * kl (* mask) (/ n)` plus the
/// clipped sequence score at the slot of `options.slot`.
///
/// Shapes: `kl`, `mask`, `rewards` `[B, T]` (any row strides: a column range of a wider
/// `[B, P + T]` buffer is a view), `mask ∈ {0,1}`, `scores` `[B]`. `kl` and `scores` must be
/// finite. `rewards` may be exactly `kl` (in place); any other overlap with an input is an
/// `rlhf::error`. Empty rows follow `options.empty_rows`.
/// @note TRL `trl/trainer/ppo_trainer.py: PPOTrainer.compute_rewards` (v0.11): last_valid_token,
///       unmasked; OpenRLHF `openrlhf/models/utils.py: compute_reward`: last_valid_token,
///       unmasked, `score_clip_range`, empty rows `peer_slot`; DeepSpeed-Chat
///       `dschat/rlhf/ppo_trainer.py: compute_rewards`: after_last_valid on the response columns,
///       unmasked, `score_clip = 5`; ColossalChat v2 `coati/models/utils.py: compute_reward`:
///       every_valid_token, `mask_kl`, `score_clip = 5`; current TRL `trl/experimental/ppo/
///       ppo_trainer.py`: first_pad_slot, `mask_kl`; ChatLearn: `divide_kl_by_length`.
template <class T, class M>
void shape_rewards(view<T> kl, view<M> mask, view<T, 1> scores, mut_view<T> rewards,
                   const reward_shaping_options& options = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::shape_rewards: T must be float or double");
    constexpr std::string_view fn = "rlhf::shape_rewards";
    detail::check_shaping_options(fn, options);
    detail::check_shaping_inputs(fn, kl, "kl", mask, scores, rewards);
    check_finite(fn, "kl", kl);
    check_same_or_disjoint(fn, "rewards", rewards, "kl", kl);
    detail::shape_rows(fn, mask, scores, rewards, options, [&](index_t b, index_t start, index_t len, T* out) {
        const T* row = kl.row(b).data() + start;
        std::copy(row, row + len, out);
    });
}

/// Per-token rewards with the KL computed from the log-probs in the same pass:
/// `rewards = -kl_coef * token_kl(log_probs, ref_log_probs, options.kl) (* mask) (/ n)` plus the
/// clipped score at the slot.
///
/// Shapes: `log_probs`, `ref_log_probs`, `mask`, `rewards` `[B, T]`, `scores` `[B]`; inputs finite
/// (masked positions included). `rewards` may be exactly a log-prob input.
/// @note see `shape_rewards` for the framework of each option, `token_kl` for the estimators.
template <class T, class M>
void shape_rewards_from_logprobs(view<T> log_probs, view<T> ref_log_probs, view<M> mask, view<T, 1> scores,
                                 mut_view<T> rewards, const reward_shaping_options& options = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::shape_rewards_from_logprobs: T must be float or double");
    constexpr std::string_view fn = "rlhf::shape_rewards_from_logprobs";
    detail::check_shaping_options(fn, options);
    detail::check_kl_options(fn, options.kl);
    check_same_shape(fn, "ref_log_probs", ref_log_probs, "log_probs", log_probs);
    detail::check_shaping_inputs(fn, log_probs, "log_probs", mask, scores, rewards);
    check_finite(fn, "log_probs", log_probs);
    check_finite(fn, "ref_log_probs", ref_log_probs);
    check_same_or_disjoint(fn, "rewards", rewards, "log_probs", log_probs);
    check_same_or_disjoint(fn, "rewards", rewards, "ref_log_probs", ref_log_probs);
    detail::with_kl_functor<T>(options.kl, [&](const auto estimate) {
        detail::shape_rows(fn, mask, scores, rewards, options, [&](index_t b, index_t start, index_t len, T* out) {
            const T* lp = log_probs.row(b).data() + start;
            const T* ref = ref_log_probs.row(b).data() + start;
            for (index_t k = 0; k < len; ++k) out[k] = estimate(lp[k], ref[k]);
        });
    });
}

/// The KL part of the reward alone (TRL's `non_score_rewards`): `rewards = -kl_coef * token_kl`.
///
/// Shapes: `log_probs`, `ref_log_probs`, `rewards` `[B, T]`; inputs finite; `kl_coef >= 0`.
/// @note DeepSpeed-Chat `compute_rewards` applies it to the prompt columns too (k1, `kl_ctl`);
///       TRL v0.11 `compute_rewards` returns it as `non_score_rewards`.
template <class T>
void kl_rewards(view<T> log_probs, view<T> ref_log_probs, mut_view<T> rewards, double kl_coef,
                const kl_options& kl = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::kl_rewards: T must be float or double");
    constexpr std::string_view fn = "rlhf::kl_rewards";
    check_non_negative(fn, "kl_coef", kl_coef);
    detail::check_kl_options(fn, kl);
    check_same_shape(fn, "ref_log_probs", ref_log_probs, "log_probs", log_probs);
    check_same_shape(fn, "rewards", rewards, "log_probs", log_probs);
    check_finite(fn, "log_probs", log_probs);
    check_finite(fn, "ref_log_probs", ref_log_probs);
    check_same_or_disjoint(fn, "rewards", rewards, "log_probs", log_probs);
    check_same_or_disjoint(fn, "rewards", rewards, "ref_log_probs", ref_log_probs);
    const T neg_beta = static_cast<T>(-kl_coef);
    detail::with_kl_functor<T>(kl, [&](const auto estimate) {
        for (index_t b = 0; b < log_probs.extent(0); ++b) {
            const T* lp = log_probs.row(b).data();
            const T* ref = ref_log_probs.row(b).data();
            T* out = rewards.row(b).data();
            for (index_t t = 0; t < log_probs.extent(1); ++t) out[t] = neg_beta * estimate(lp[t], ref[t]);
        }
    });
}

/// One reward per sequence: `rewards[b] = scores[b] - kl_coef * mean_t(kl[b, t] over mask)`.
///
/// Shapes: `scores`, `rewards` `[B]`; `log_probs`, `ref_log_probs`, `mask` `[B, T]`,
/// `mask ∈ {0,1}`; inputs finite. The mean is accumulated in double. Masked positions do not
/// enter the mean (even where their estimate would be +inf). An empty row has mean KL 0, so its
/// reward is its score. `kl_coef = 0` returns the scores unchanged.
/// @note ColossalChat v1 `applications/Chat/coati/models/utils.py: compute_reward` (36c4bb28):
///       k3, `mean_eps = 1e-8`, `kl_coef = 0.1`.
template <class T, class M>
void sequence_rewards(view<T, 1> scores, view<T> log_probs, view<T> ref_log_probs, view<M> mask, mut_view<T, 1> rewards,
                      const sequence_reward_options& options = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::sequence_rewards: T must be float or double");
    constexpr std::string_view fn = "rlhf::sequence_rewards";
    check_non_negative(fn, "kl_coef", options.kl_coef);
    check_non_negative(fn, "mean_eps", options.mean_eps);
    detail::check_kl_options(fn, options.kl);
    check_same_shape(fn, "ref_log_probs", ref_log_probs, "log_probs", log_probs);
    check_same_shape(fn, "mask", mask, "log_probs", log_probs);
    check_length(fn, "scores", scores.extent(0), log_probs.extent(0), "one per row of 'log_probs'");
    check_length(fn, "rewards", rewards.extent(0), log_probs.extent(0), "one per row of 'log_probs'");
    check_finite(fn, "scores", scores);
    check_finite(fn, "log_probs", log_probs);
    check_finite(fn, "ref_log_probs", ref_log_probs);
    check_binary_mask(fn, "mask", mask);
    check_same_or_disjoint(fn, "rewards", rewards, "scores", scores);
    check_disjoint(fn, "rewards", rewards, "log_probs", log_probs);
    check_disjoint(fn, "rewards", rewards, "ref_log_probs", ref_log_probs);
    check_disjoint(fn, "rewards", rewards, "mask", mask);
    detail::with_kl_functor<T>(options.kl, [&](const auto estimate) {
        for (index_t b = 0; b < log_probs.extent(0); ++b) {
            const T* lp = log_probs.row(b).data();
            const T* ref = ref_log_probs.row(b).data();
            const M* m = mask.row(b).data();
            double sum = 0.0;
            double count = 0.0;
            for (index_t t = 0; t < log_probs.extent(1); ++t) {
                const bool valid = m[t] != M{0};
                sum += valid ? static_cast<double>(estimate(lp[t], ref[t])) : 0.0;
                count += valid ? 1.0 : 0.0;
            }
            const double denominator = count + options.mean_eps;
            const double mean = denominator > 0.0 ? sum / denominator : 0.0;
            const double score = static_cast<double>(scores(b));
            rewards(b) = static_cast<T>(options.kl_coef == 0.0 ? score : score - options.kl_coef * mean);
        }
    });
}

namespace detail {
template <class T, class M, bool Masked>
measured_kl apply_kl_penalty_impl(std::string_view fn, view<T> token_level_scores, view<T> log_probs,
                                  view<T> ref_log_probs, view<M> mask, mut_view<T> token_level_rewards, double kl_coef,
                                  const kl_options& kl) {
    check_non_negative(fn, "kl_coef", kl_coef);
    check_kl_options(fn, kl);
    check_same_shape(fn, "log_probs", log_probs, "token_level_scores", token_level_scores);
    check_same_shape(fn, "ref_log_probs", ref_log_probs, "token_level_scores", token_level_scores);
    if constexpr (Masked) check_same_shape(fn, "mask", mask, "token_level_scores", token_level_scores);
    check_same_shape(fn, "token_level_rewards", token_level_rewards, "token_level_scores", token_level_scores);
    check_finite(fn, "token_level_scores", token_level_scores);
    check_finite(fn, "log_probs", log_probs);
    check_finite(fn, "ref_log_probs", ref_log_probs);
    if constexpr (Masked) check_binary_mask(fn, "mask", mask);
    check_same_or_disjoint(fn, "token_level_rewards", token_level_rewards, "token_level_scores", token_level_scores);
    check_same_or_disjoint(fn, "token_level_rewards", token_level_rewards, "log_probs", log_probs);
    check_same_or_disjoint(fn, "token_level_rewards", token_level_rewards, "ref_log_probs", ref_log_probs);
    if constexpr (Masked) check_disjoint(fn, "token_level_rewards", token_level_rewards, "mask", mask);
    if (token_level_scores.extent(0) == 0)
        fail(error_kind::shape, fn, "token_level_scores", "at least one row",
             shape_string(token_level_scores.extents()));
    const T beta = static_cast<T>(kl_coef);
    double mean_sum = 0.0;
    with_kl_functor<T>(kl, [&](const auto estimate) {
        for (index_t b = 0; b < log_probs.extent(0); ++b) {
            const T* s = token_level_scores.row(b).data();
            const T* lp = log_probs.row(b).data();
            const T* ref = ref_log_probs.row(b).data();
            T* out = token_level_rewards.row(b).data();
            double sum = 0.0;
            double count = 0.0;
            for (index_t t = 0; t < log_probs.extent(1); ++t) {
                T k = estimate(lp[t], ref[t]);
                if constexpr (Masked) {
                    const bool valid = mask(b, t) != M{0};
                    k = valid ? k : T{0};
                    count += valid ? 1.0 : 0.0;
                } else {
                    count += 1.0;
                }
                sum += static_cast<double>(k);
                out[t] = s[t] - beta * k;
            }
            mean_sum += count > 0.0 ? sum / count : 0.0;
        }
    });
    return {mean_sum / static_cast<double>(log_probs.extent(0)), kl_measure::seq_mean_token_mean};
}
}  // namespace detail

/// verl's KL-in-reward: `token_level_rewards = token_level_scores - kl_coef * token_kl(log_probs,
/// ref_log_probs) * mask`; returns the batch mean of the per-row token-mean KL, the `current_kl`
/// verl feeds its controller (`kl_measure::seq_mean_token_mean`).
///
/// Shapes: all `[B, T]`, `mask ∈ {0,1}`, B >= 1; inputs finite. `token_level_scores` is dense
/// (the score already placed, verl's reward manager puts it on the last valid token). An empty
/// row has token-mean KL 0 and still counts as a row (verl: `masked_mean` with `+1e-8`).
/// `token_level_rewards` may be exactly `token_level_scores` (or a log-prob input).
/// @note verl `verl/trainer/ppo/ray_trainer.py: apply_kl_penalty` (old log-probs as `log_probs`,
///       `kl_preset::verl(estimator)`; verl divides the row mean by `n + 1e-8`).
template <class T, class M>
measured_kl apply_kl_penalty(view<T> token_level_scores, view<T> log_probs, view<T> ref_log_probs, view<M> mask,
                             mut_view<T> token_level_rewards, double kl_coef, const kl_options& kl = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::apply_kl_penalty: T must be float or double");
    return detail::apply_kl_penalty_impl<T, M, true>("rlhf::apply_kl_penalty", token_level_scores, log_probs,
                                                     ref_log_probs, mask, token_level_rewards, kl_coef, kl);
}

/// Unmasked form: `token_level_rewards = token_level_scores - kl_coef * token_kl(log_probs,
/// ref_log_probs)`; the returned mean is over every token of each row.
/// @note verl `verl/trainer/ppo/core_algos.py: compute_rewards(scores, old, ref, kl_ratio)` (k1).
template <class T>
measured_kl apply_kl_penalty(view<T> token_level_scores, view<T> log_probs, view<T> ref_log_probs,
                             mut_view<T> token_level_rewards, double kl_coef, const kl_options& kl = {}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::apply_kl_penalty: T must be float or double");
    return detail::apply_kl_penalty_impl<T, bool, false>("rlhf::apply_kl_penalty", token_level_scores, log_probs,
                                                         ref_log_probs, view<bool>{}, token_level_rewards, kl_coef, kl);
}

/// Scales, normalises and clips sequence scores with running moments, in TRL's order:
/// `running.update(scores)`, then `out = scores / (running.std + eps)` or, with `normalize`,
/// `out = (scores - running.mean) / (running.std + eps)`, then `clip(out, -clip, clip)`.
///
/// Shapes: `scores`, `out` `[B]` (`out` may alias `scores`); scores finite. The running
/// statistics are global through `reducer`; their small-sample policy (a batch of one score, an
/// empty batch) is `running`'s (`running_moments_options`). Returns the batch's own moments
/// (zeros when `scale` is off). `normalize` without `scale` is an `rlhf::error` (TRL ignores it).
/// @note TRL `trl/trainer/ppo_trainer.py: PPOTrainer.step` (v0.11.4). TRL clips after a cast to
///       float32 (`scores.float()`); here the clip runs in `T`.
template <class T, Reducer R = local_reducer>
batch_moments scale_scores(view<T, 1> scores, mut_view<T, 1> out, running_moments& running,
                           const score_scaling_options& options = {}, R&& reducer = R{}) {
    static_assert(std::is_floating_point_v<T>, "rlhf::scale_scores: T must be float or double");
    constexpr std::string_view fn = "rlhf::scale_scores";
    if (options.normalize && !options.scale)
        fail(error_kind::config, fn, "normalize", "set together with 'scale' (use_score_norm needs use_score_scaling)",
             "normalize without scale");
    if (options.eps) check_non_negative(fn, "eps", *options.eps);
    if (options.clip) check_non_negative(fn, "clip", *options.clip);
    check_length(fn, "out", out.extent(0), scores.extent(0), "one per score");
    check_finite(fn, "scores", scores);
    check_same_or_disjoint(fn, "out", out, "scores", scores);
    batch_moments batch{};
    double shift = 0.0;
    double factor = 1.0;
    if (options.scale) {
        batch = running.update(scores, reducer);
        const double eps = options.eps ? *options.eps : static_cast<double>(std::numeric_limits<T>::epsilon());
        factor = running.std() + eps;
        if (options.normalize) shift = running.mean();
        if (!(factor > 0.0)) fail(error_kind::value, fn, "eps", "a positive running std + eps", number_string(factor));
    }
    const double low = options.clip ? -*options.clip : -std::numeric_limits<double>::infinity();
    const double high = options.clip ? *options.clip : std::numeric_limits<double>::infinity();
    for (index_t b = 0; b < scores.extent(0); ++b) {
        T s = scores(b);
        if (options.scale) s = static_cast<T>((static_cast<double>(s) - shift) / factor);
        out(b) = static_cast<T>(std::clamp(static_cast<double>(s), low, high));
    }
    return batch;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
