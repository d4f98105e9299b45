#pragma once
/// @file
/// The advantage stage's operations composed of torch ops, so that they run on the tensors'
/// device (CUDA included) without copying to the host: the masked per-token KL, reward shaping,
/// the KL measure, masked and unmasked whitening, GAE (the three `gae_masking` modes, with per-row
/// bootstrap values), reverse discounted returns and the outcome estimators (GRPO, Dr.GRPO, RLOO,
/// OPO, REINFORCE++, REINFORCE++-baseline, ReMax). Each is `rlhf::libtorch::torch_ops::<name>`
/// and reproduces the fused CPU kernel of the same name (kernels/*.hpp: formulas, options, edge
/// cases) within float rounding; statistics and recursions run in float64.
///
/// No host synchronisation: the checks that depend on values (non-finite inputs, empty rows under
/// `empty_rows = raise`, too few tokens under `small_sample = raise`, singleton groups under
/// `singleton = raise`, holes under `valid_range`) are recorded as device flags in a
/// `deferred_checks` and read in one transfer by `deferred_checks::verify` — by the caller, which
/// passes its own `deferred_checks` (the advantage stage verifies once at its end), or at the end
/// of the call when it passes none. A mask that is not bool is validated with one host read
/// (`checked_mask`); pass bool masks. Batch whitening (masked and unmasked, REINFORCE++'s) takes an
/// optional `tensor_sum` that sums its statistics across data-parallel ranks (the PPO trainer's
/// communicator); other statistics are local.

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/entry/advantages.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/kl_loss.hpp"
#include "rlhf/libtorch/loss_support.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

/// Sums a float64 tensor across data-parallel ranks in place (`distributed::communicator::all_reduce`).
using tensor_sum = std::function<void(torch::Tensor&)>;

/// Value checks of the composed paths, kept on the device until `verify` reads them all in one
/// host transfer and throws the first failed one as `rlhf::error`.
class deferred_checks {
public:
    /// Records an error raised by `verify` when `failed` (a 0-dim bool tensor) is true.
    void fail_if(const torch::Tensor& failed, error_kind kind, std::string_view function, std::string_view argument,
                 std::string expected, std::string got) {
        flags_.push_back(failed.reshape({}));
        entries_.push_back({kind, std::string(function), std::string(argument), std::move(expected), std::move(got)});
    }

    /// Reads every recorded flag (one host synchronisation when there is any) and throws the error
    /// of the first that is set; the record is cleared either way.
    void verify() {
        if (flags_.empty()) return;
        const torch::Tensor flags = torch::stack(flags_).to(torch::kCPU, torch::kBool).contiguous();
        std::vector<entry> entries = std::move(entries_);
        flags_.clear();
        entries_.clear();
        const bool* f = flags.data_ptr<bool>();
        for (std::size_t i = 0; i < entries.size(); ++i)
            if (f[i])
                fail(entries[i].kind, entries[i].function, entries[i].argument, entries[i].expected, entries[i].got);
    }

    [[nodiscard]] std::size_t size() const noexcept { return flags_.size(); }

private:
    struct entry {
        error_kind kind;
        std::string function, argument, expected, got;
    };
    std::vector<torch::Tensor> flags_;
    std::vector<entry> entries_;
};

namespace detail::ops {

/// `body(checks)` with the caller's `deferred_checks`, or with one verified when `body` returns.
template <class Body>
decltype(auto) with_checks(deferred_checks* given, Body&& body) {
    if (given != nullptr) return std::forward<Body>(body)(*given);
    deferred_checks local;
    auto result = std::forward<Body>(body)(local);
    local.verify();
    return result;
}

inline void require_finite(deferred_checks& checks, std::string_view function, std::string_view argument,
                           const torch::Tensor& x) {
    checks.fail_if(torch::isfinite(x).all().logical_not(), error_kind::value, function, argument, "finite values",
                   "a NaN or an infinity");
}

/// The bool mask of `values` `[B, T]` after the shape, device and dtype checks.
inline torch::Tensor mask_of(std::string_view function, const torch::Tensor& mask, const torch::Tensor& values) {
    check_values_tensor(function, "values", values);
    return binary_mask(function, mask, values);
}

/// Column positions `[1, T]` (int64) on the device of `like`.
inline torch::Tensor positions(const torch::Tensor& like) {
    return torch::arange(like.size(1), torch::TensorOptions(torch::kInt64).device(like.device())).unsqueeze(0);
}

/// The last valid position of each row `[B]` (int64, -1 for an empty row).
inline torch::Tensor last_valid(const torch::Tensor& mask) {
    return torch::where(mask, positions(mask), torch::full({}, -1, positions(mask).options())).amax(1);
}

/// `[B, T]` bool: the row's last valid position.
inline torch::Tensor is_last_valid(const torch::Tensor& mask) {
    return mask.logical_and(positions(mask) == last_valid(mask).unsqueeze(1));
}

/// A backward recursion over the columns of `[B, T]` inputs: `step(t, state)` gives the output
/// column t (and updates the state); the outputs are stacked into `[B, T]`.
template <class Step>
torch::Tensor backward_scan(std::int64_t rows, std::int64_t cols, const torch::TensorOptions& options, Step&& step) {
    if (cols == 0) return torch::zeros({rows, 0}, options);
    std::vector<torch::Tensor> out(static_cast<std::size_t>(cols));
    for (std::int64_t t = cols; t-- > 0;) out[static_cast<std::size_t>(t)] = step(t);
    return torch::stack(out, 1);
}

/// The numerator and denominator of the KL measure `unit` of `kl` `[B, T]` over the bool mask
/// `valid`, as `rlhf::measure_kl` sums them (float64 `[2]`; a sum across ranks keeps its meaning).
inline torch::Tensor kl_measure_sums(const torch::Tensor& kl, const torch::Tensor& valid, kl_measure unit) {
    const torch::Tensor f = valid.to(torch::kFloat64);
    const torch::Tensor sums = (kl.to(torch::kFloat64) * f).sum(1);
    const torch::Tensor counts = f.sum(1);
    if (unit == kl_measure::token_mean) return torch::stack({sums.sum(), counts.sum()});
    const torch::Tensor rows = torch::full({}, static_cast<double>(kl.size(0)), f.options());
    if (unit == kl_measure::seq_mean_token_sum) return torch::stack({sums.sum(), rows});
    return torch::stack({torch::where(counts > 0, sums / counts, torch::zeros({}, f.options())).sum(), rows});
}

/// The masked moments of `x` (float64) over `dims` (empty: the batch) and the small-sample flag of
/// each scope (`needed` valid elements), as `rlhf::detail::stats::scope_moments` computes them.
struct scope_stats {
    torch::Tensor count, mean, variance, small;
};

/// With `reduce` (batch scope only), the sums are global: `{count, sum}`, then the sum of squared
/// deviations, each summed across data-parallel ranks (as the kernels' two reductions).
inline scope_stats moments(const torch::Tensor& x, const torch::Tensor& valid, bool per_row, bool need_variance,
                           variance_estimator estimator, double count_epsilon, const tensor_sum* reduce = nullptr) {
    const std::vector<std::int64_t> all{0, 1}, row{1};
    const auto dims = per_row ? c10::IntArrayRef(row) : c10::IntArrayRef(all);
    const bool global = reduce != nullptr && *reduce && !per_row;
    const torch::Tensor zero = torch::zeros({}, x.options());
    torch::Tensor count = valid.sum(dims, true);
    torch::Tensor sum = torch::where(valid.to(torch::kBool), x, zero).sum(dims, true);
    if (global) {
        torch::Tensor both = torch::cat({count.reshape({1}), sum.reshape({1})});
        (*reduce)(both);
        count = both[0].reshape(count.sizes());
        sum = both[1].reshape(sum.sizes());
    }
    const torch::Tensor denominator = count + count_epsilon;
    const torch::Tensor mean = torch::where(denominator > 0, sum / denominator, zero);
    const double needed = rlhf::detail::stats::needed(need_variance, estimator);
    const torch::Tensor small = count < needed;
    torch::Tensor variance = zero.expand_as(count);
    if (need_variance) {
        const torch::Tensor centred = torch::where(valid.to(torch::kBool), x - mean, zero);
        torch::Tensor squares = (centred * centred).sum(dims, true);
        if (global) (*reduce)(squares);
        variance = torch::where(denominator > 0, squares / denominator, zero);
        if (estimator == variance_estimator::unbiased)
            variance = torch::where(count > 1, variance * count / (count - 1), zero);
        variance = torch::where(small, zero, variance);
    }
    return {count, mean, variance, small};
}

/// Under `small_sample_policy::raise`, the deferred error of a scope with too few valid elements
/// (`small`: a flag per scope, from `moments`).
inline void require_enough_samples(deferred_checks& checks, std::string_view function, std::string_view argument,
                                   const torch::Tensor& small, const whiten_options& options) {
    if (options.small_sample != small_sample_policy::raise) return;
    const bool two = rlhf::detail::stats::needed(options.scale, options.variance) == 2;
    const bool masked = argument == "mask";
    checks.fail_if(small.any(), error_kind::value, function, argument,
                   std::string(two ? "at least 2 " : "at least 1 ") +
                       (masked ? (two ? "valid elements (mask entries 1)" : "valid element (mask entry 1)")
                               : (two ? "elements" : "element")) +
                       (two ? " for an unbiased variance" : ""),
                   options.scope == whiten_scope::per_row ? "fewer in a row" : "fewer");
}

/// Whitening of `values` with the validity `valid` (float64 0/1, `[B, T]`): `rlhf::masked_whiten`
/// (`argument` "mask") or `rlhf::whiten` ("values", every position valid).
/// With `reduce`, batch statistics are global across data-parallel ranks.
inline torch::Tensor whiten_with(std::string_view function, std::string_view argument, const torch::Tensor& values,
                                 const torch::Tensor& valid, const whiten_options& options, deferred_checks& checks,
                                 const tensor_sum* reduce = nullptr) {
    rlhf::detail::stats::check_whiten_options(function, options);
    const torch::Tensor x = values.to(torch::kFloat64);
    const bool per_row = options.scope == whiten_scope::per_row;
    const scope_stats s = moments(x, valid, per_row, options.scale, options.variance, options.count_epsilon, reduce);
    require_finite(checks, function, "values", values);
    require_enough_samples(checks, function, argument, s.small, options);
    torch::Tensor scale = torch::ones_like(s.variance);
    if (options.scale)
        scale = (options.epsilon_mode == whiten_epsilon::add_to_variance ? s.variance + options.epsilon
                                                                         : s.variance.clamp_min(options.epsilon))
                    .rsqrt();
    torch::Tensor out = (x - s.mean) * scale + (options.shift_mean ? torch::zeros_like(s.mean) : s.mean);
    if (options.small_sample == small_sample_policy::skip) out = torch::where(s.small, x, out);
    if (options.zero_masked) out = torch::where(valid.to(torch::kBool), out, torch::zeros({}, out.options()));
    return out.to(values.scalar_type());
}

/// A group rule of `rlhf::detail::apply_group_rule` on the row values `s` `[B]` (float64):
/// the advantage of each row; `lengths` (OPO) the valid tokens per row.
inline torch::Tensor group_rule(std::string_view function, const torch::Tensor& s, const torch::Tensor& groups,
                                const torch::Tensor& lengths, const rlhf::detail::group_rule& rule,
                                deferred_checks& checks) {
    using kind = rlhf::detail::group_rule_kind;
    const torch::Tensor same = (groups.unsqueeze(1) == groups.unsqueeze(0)).to(torch::kFloat64);
    const torch::Tensor n = same.sum(1);
    const torch::Tensor mean = same.matmul(s) / n;
    const torch::Tensor singleton = n == 1;
    torch::Tensor advantage;
    switch (rule.kind) {
        case kind::grpo:
            advantage = s - mean;
            if (rule.normalize_by_std) {
                const torch::Tensor centred = s.unsqueeze(0) - mean.unsqueeze(1);
                const torch::Tensor squares = (same * centred * centred).sum(1);
                const torch::Tensor divisor = rule.std_estimator == variance_estimator::unbiased ? n - 1 : n;
                advantage = advantage / ((squares / divisor).sqrt() + rule.epsilon);
            }
            break;
        case kind::rloo:
            advantage = (s - mean) * n / (n - 1);
            break;
        case kind::mean:
            advantage = s - mean;
            break;
        case kind::opo: {
            const torch::Tensor total = same.matmul(lengths);
            const torch::Tensor baseline =
                torch::where(total > 0, same.matmul(lengths * s) / total, torch::zeros({}, s.options()));
            advantage = s - baseline;
            break;
        }
    }
    torch::Tensor lone = s;
    switch (rule.singleton) {
        case singleton_group_policy::raise:
            checks.fail_if(singleton.any(), error_kind::value, function, "group_ids",
                           "groups of at least 2 rows (singleton_group_policy::raise)", "a group with 1 row");
            break;
        case singleton_group_policy::zero:
            lone = torch::zeros_like(s);
            break;
        case singleton_group_policy::raw_score:
            if (rule.kind == kind::grpo && rule.normalize_by_std) lone = s / (1.0 + rule.epsilon);
            break;
    }
    return torch::where(singleton, lone, advantage);
}

/// The checks of a `[B, T]` group estimator; returns the bool mask.
inline torch::Tensor group_inputs(std::string_view function, const torch::Tensor& rewards, const torch::Tensor& mask,
                                  const torch::Tensor& groups, deferred_checks& checks) {
    const torch::Tensor valid = mask_of(function, mask, rewards);
    check_defined(groups, function, "group_ids");
    if (groups.dim() != 1 || groups.size(0) != rewards.size(0))
        fail(error_kind::shape, function, "group_ids", "[" + std::to_string(rewards.size(0)) + "] (one per row)",
             shape_string(groups));
    require_finite(checks, function, "token_rewards", rewards);
    return valid;
}

/// `row_values[i] · m[i, t]` in the rewards' dtype (`rlhf::detail::broadcast_rows`).
inline torch::Tensor broadcast_rows(const torch::Tensor& row_values, const torch::Tensor& valid,
                                    const torch::Tensor& like) {
    return row_values.to(like.scalar_type()).unsqueeze(1) * valid.to(like.scalar_type());
}

/// `[B, T]` group estimator (`rlhf::detail::group_token_advantages`).
inline torch::Tensor group_token_advantages(std::string_view function, const torch::Tensor& rewards,
                                            const torch::Tensor& mask, const torch::Tensor& groups,
                                            const rlhf::detail::group_rule& rule, deferred_checks* given) {
    return with_checks(given, [&](deferred_checks& checks) {
        const torch::Tensor valid = group_inputs(function, rewards, mask, groups, checks);
        const torch::Tensor s = rewards.to(torch::kFloat64).sum(1);
        const torch::Tensor lengths = valid.to(torch::kFloat64).sum(1);
        return broadcast_rows(group_rule(function, s, groups.to(rewards.device()), lengths, rule, checks), valid,
                              rewards);
    });
}

/// The reverse returns of `rlhf::detail::reverse_returns` in float64, then in `rewards`' dtype.
inline torch::Tensor reverse_returns(const torch::Tensor& rewards, const torch::Tensor& valid, double gamma,
                                     return_masking masking) {
    const torch::Tensor r = rewards.to(torch::kFloat64).t().contiguous();
    const torch::Tensor m = valid.t().contiguous();
    const torch::Tensor mf = m.to(torch::kFloat64);
    torch::Tensor running = torch::zeros({rewards.size(0)}, r.options());
    return backward_scan(rewards.size(0), rewards.size(1), r.options(),
                         [&](std::int64_t t) {
                             switch (masking) {
                                 case return_masking::reset_at_masked: {
                                     running = r[t] + gamma * running;
                                     const torch::Tensor out = running;
                                     running = running * mf[t];
                                     return out;
                                 }
                                 case return_masking::zero_masked:
                                     running = r[t] * mf[t] + gamma * running;
                                     return running;
                                 case return_masking::skip_masked:
                                     running = torch::where(m[t], r[t] + gamma * running, running);
                                     return running * mf[t];
                             }
                             return running;
                         })
        .to(rewards.scalar_type());
}

/// Reverse cumulative sum over the columns, in float64.
inline torch::Tensor reverse_cumsum(const torch::Tensor& x) {
    return x.flip(1).cumsum(1).flip(1);
}

/// The checks of a pair of log-prob tensors that need no device read: `log_probs` `[B, T]`, its
/// mask, `ref_log_probs` like it; returns the bool mask.
[[nodiscard]] inline torch::Tensor checked_log_prob_pair(std::string_view fn, const torch::Tensor& log_probs,
                                                         const torch::Tensor& ref_log_probs,
                                                         const torch::Tensor& mask) {
    torch::Tensor valid = mask_of(fn, mask, log_probs);
    check_like(fn, "ref_log_probs", ref_log_probs, "log_probs", log_probs);
    return valid;
}

/// The deferred value checks of a pair of log-prob tensors: finite.
inline void require_finite_log_prob_pair(deferred_checks& c, std::string_view fn, const torch::Tensor& log_probs,
                                         const torch::Tensor& ref_log_probs) {
    require_finite(c, fn, "log_probs", log_probs);
    require_finite(c, fn, "ref_log_probs", ref_log_probs);
}

/// Reward shaping's checks that need no device read (options, shapes, `scores` `[B]`); returns the
/// bool mask.
[[nodiscard]] inline torch::Tensor checked_shaping_mask(std::string_view fn, const torch::Tensor& log_probs,
                                                        const torch::Tensor& ref_log_probs, const torch::Tensor& mask,
                                                        const torch::Tensor& scores,
                                                        const reward_shaping_options& options) {
    rlhf::detail::check_shaping_options(fn, options);
    rlhf::detail::check_kl_options(fn, options.kl);
    torch::Tensor valid = checked_log_prob_pair(fn, log_probs, ref_log_probs, mask);
    check_defined(scores, fn, "scores");
    if (scores.dim() != 1 || scores.size(0) != log_probs.size(0))
        fail(error_kind::shape, fn, "scores", "[" + std::to_string(log_probs.size(0)) + "] (one per row of 'mask')",
             shape_string(scores));
    return valid;
}

/// Reward shaping's deferred value checks: finite inputs, and no empty row under
/// `empty_rows = raise`.
inline void require_shaping_values(deferred_checks& c, std::string_view fn, const torch::Tensor& log_probs,
                                   const torch::Tensor& ref_log_probs, const torch::Tensor& valid,
                                   const torch::Tensor& scores, const reward_shaping_options& options) {
    require_finite_log_prob_pair(c, fn, log_probs, ref_log_probs);
    require_finite(c, fn, "scores", scores);
    if (options.empty_rows == empty_row_policy::raise)
        c.fail_if(valid.sum(1).eq(0).any(), error_kind::value, fn, "mask",
                  "at least one valid token in every row (empty_rows = raise)", "an empty row");
}

/// GAE's checks that need no device read (shapes, devices, discounts, `bootstrap_values` `[B]`);
/// returns the bool mask.
[[nodiscard]] inline torch::Tensor checked_gae_mask(std::string_view fn, const torch::Tensor& rewards,
                                                    const torch::Tensor& values, const torch::Tensor& mask,
                                                    const torch::Tensor& bootstrap_values, const gae_options& options) {
    torch::Tensor valid = mask_of(fn, mask, rewards);
    check_like(fn, "values", values, "rewards", rewards);
    rlhf::detail::gae::check_discounts(fn, options.gamma, options.lambda);
    const std::int64_t rows = rewards.size(0);
    if (bootstrap_values.defined() && (bootstrap_values.dim() != 1 || bootstrap_values.size(0) != rows ||
                                       bootstrap_values.device() != rewards.device()))
        fail(error_kind::shape, fn, "bootstrap_values", "[" + std::to_string(rows) + "] on the rewards' device",
             shape_string(bootstrap_values));
    return valid;
}

/// GAE's value checks, deferred: finite inputs, and contiguous valid positions under
/// `gae_masking::valid_range`.
inline void require_gae_values(deferred_checks& c, std::string_view fn, const torch::Tensor& rewards,
                               const torch::Tensor& values, const torch::Tensor& valid,
                               const torch::Tensor& bootstrap_values, const gae_options& options) {
    require_finite(c, fn, "rewards", rewards);
    require_finite(c, fn, "values", values);
    if (bootstrap_values.defined()) require_finite(c, fn, "bootstrap_values", bootstrap_values);
    if (options.masking != gae_masking::valid_range) return;
    const torch::Tensor count = valid.sum(1);
    const torch::Tensor first =
        torch::where(valid, positions(valid), torch::full({}, valid.size(1), count.options())).amin(1);
    c.fail_if(count.gt(0).logical_and(last_valid(valid) - first + 1 != count).any(), error_kind::value, fn, "mask",
              "contiguous valid positions under gae_masking::valid_range (use skip_masked for holes)", "a hole");
}

}  // namespace detail::ops

namespace torch_ops {

/// Masked per-token KL `[B, T]` (`rlhf::token_kl`): the estimate where `mask` is 1, 0 elsewhere.
[[nodiscard]] inline torch::Tensor token_kl(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                            const torch::Tensor& mask, const kl_options& options = {},
                                            deferred_checks* checks = nullptr) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::token_kl";
    rlhf::detail::check_kl_options(fn, options);
    const torch::Tensor valid = detail::ops::checked_log_prob_pair(fn, log_probs, ref_log_probs, mask);
    return detail::ops::with_checks(checks, [&](deferred_checks& c) {
        detail::ops::require_finite_log_prob_pair(c, fn, log_probs, ref_log_probs);
        const torch::Tensor estimate = detail::kl_terms(log_probs, ref_log_probs, options).estimate;
        return torch::where(valid, estimate, torch::zeros({}, estimate.options()));
    });
}

/// Per-token rewards `[B, T]` (`rlhf::shape_rewards_from_logprobs`): `−kl_coef · kl (· mask)
/// (/ n)` plus the clipped score `[B]` at the slot of `options.slot`; empty rows follow
/// `options.empty_rows`.
[[nodiscard]] inline torch::Tensor shape_rewards_from_logprobs(const torch::Tensor& log_probs,
                                                               const torch::Tensor& ref_log_probs,
                                                               const torch::Tensor& mask, const torch::Tensor& scores,
                                                               const reward_shaping_options& options = {},
                                                               deferred_checks* checks = nullptr) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::shape_rewards_from_logprobs";
    const torch::Tensor valid = detail::ops::checked_shaping_mask(fn, log_probs, ref_log_probs, mask, scores, options);
    return detail::ops::with_checks(checks, [&](deferred_checks& c) {
        detail::ops::require_shaping_values(c, fn, log_probs, ref_log_probs, valid, scores, options);
        const auto type = log_probs.scalar_type();
        const std::int64_t cols = log_probs.size(1);
        const torch::Tensor count = valid.sum(1);
        const torch::Tensor empty = count == 0;
        const torch::Tensor kl = detail::kl_terms(log_probs, ref_log_probs, options.kl).estimate;
        const torch::Tensor zero = torch::zeros({}, kl.options());
        const torch::Tensor value = options.mask_kl ? torch::where(valid, kl, zero) : kl;
        torch::Tensor r = value * (-options.kl_coef);
        if (options.divide_kl_by_length) r = r / count.clamp_min(1).to(type).unsqueeze(1);
        torch::Tensor score = scores.to(torch::kFloat64);
        if (options.score_clip) score = score.clamp(-*options.score_clip, *options.score_clip);
        if (options.score_clip_range)
            score = score.clamp(options.score_clip_range->first, options.score_clip_range->second);
        score = score.to(type).unsqueeze(1);
        const torch::Tensor has_score =
            (options.empty_rows == empty_row_policy::drop_score ? empty.logical_not() : torch::ones_like(empty))
                .unsqueeze(1);
        const torch::Tensor at = detail::ops::positions(valid);
        const torch::Tensor last = detail::ops::last_valid(valid);
        const torch::Tensor some = count > 0;
        torch::Tensor slot;
        switch (options.slot) {
            case reward_slot::every_valid_token:
                return torch::where(has_score, torch::where(at < count.unsqueeze(1), r + score, zero), r);
            case reward_slot::last_valid_token:
                slot = torch::where(some, last, torch::full_like(last, cols - 1));
                break;
            case reward_slot::after_last_valid:
                slot = count.clamp_max(cols - 1);
                break;
            case reward_slot::first_pad_slot:
                slot = torch::where(some, torch::where(last + 1 < cols, last + 1, last), torch::zeros_like(last));
                break;
        }
        return r + torch::where(has_score.logical_and(at == slot.unsqueeze(1)), score, zero);
    });
}

/// A per-token KL `[B, T]` reduced in `unit` (`rlhf::measure_kl`), as a 0-dim float64 tensor on
/// the KL's device.
[[nodiscard]] inline torch::Tensor measure_kl(const torch::Tensor& kl, const torch::Tensor& mask, kl_measure unit) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::measure_kl";
    rlhf::detail::check_named_measure(fn, unit);
    const torch::Tensor sums = detail::ops::kl_measure_sums(kl, detail::ops::mask_of(fn, mask, kl), unit);
    return sums[0] / sums[1];
}

/// Masked whitening of `values` `[B, T]` (`rlhf::masked_whiten`), statistics in float64.
[[nodiscard]] inline torch::Tensor masked_whiten(const torch::Tensor& values, const torch::Tensor& mask,
                                                 const whiten_options& options = {},
                                                 deferred_checks* checks = nullptr) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::masked_whiten";
    const torch::Tensor valid = detail::ops::mask_of(fn, mask, values).to(torch::kFloat64);
    return detail::ops::with_checks(
        checks, [&](deferred_checks& c) { return detail::ops::whiten_with(fn, "mask", values, valid, options, c); });
}

/// Unmasked whitening of `values` `[B, T]` (`rlhf::whiten`).
[[nodiscard]] inline torch::Tensor whiten(const torch::Tensor& values, const whiten_options& options = {},
                                          deferred_checks* checks = nullptr) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::whiten";
    detail::check_values_tensor(fn, "values", values);
    const torch::Tensor valid = torch::ones(values.sizes(), values.options().dtype(torch::kFloat64));
    return detail::ops::with_checks(
        checks, [&](deferred_checks& c) { return detail::ops::whiten_with(fn, "values", values, valid, options, c); });
}

/// Token-level GAE over `[B, T]` rows (`rlhf::compute_gae`) with `bootstrap_values` `[B]` (undefined:
/// 0, finished rows), under the three `gae_masking` modes; the recursion runs in float64 over the
/// columns (one small step per column).
[[nodiscard]] inline advantages_and_returns<torch::Tensor> compute_gae(
    const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask,
    const torch::Tensor& bootstrap_values, const gae_options& options = {}, deferred_checks* checks = nullptr) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::compute_gae";
    const torch::Tensor valid = detail::ops::checked_gae_mask(fn, rewards, values, mask, bootstrap_values, options);
    const std::int64_t rows = rewards.size(0), cols = rewards.size(1);
    return detail::ops::with_checks(checks, [&](deferred_checks& c) {
        detail::ops::require_gae_values(c, fn, rewards, values, valid, bootstrap_values, options);
        const auto f64 = rewards.options().dtype(torch::kFloat64);
        const torch::Tensor boot =
            bootstrap_values.defined() ? bootstrap_values.to(torch::kFloat64) : torch::zeros({rows}, f64);
        const double gamma = options.gamma, gl = options.gamma * options.lambda;
        const torch::Tensor mf = valid.to(torch::kFloat64);
        const torch::Tensor r = rewards.to(torch::kFloat64), v = values.to(torch::kFloat64);
        torch::Tensor a = torch::zeros({rows}, f64);
        torch::Tensor advantages, returns;
        if (options.masking == gae_masking::zero_masked) {
            // δ_t = r_t·m_t + γ·V'_{t+1} − V'_t with V' = V·m, plus γ·bootstrap at the last valid position.
            const torch::Tensor counted = v * mf;
            const torch::Tensor next = torch::cat({counted.narrow(1, 1, std::max<std::int64_t>(cols - 1, 0)),
                                                   torch::zeros({rows, cols > 0 ? 1 : 0}, f64)},
                                                  1);
            const torch::Tensor delta = (r * mf + gamma * next - counted +
                                         gamma * boot.unsqueeze(1) * detail::ops::is_last_valid(valid).to(f64.dtype()))
                                            .t()
                                            .contiguous();
            advantages = detail::ops::backward_scan(rows, cols, f64, [&](std::int64_t t) {
                a = delta[t] + gl * a;
                return a;
            });
            returns = advantages + counted;
        } else {
            // Masked positions are transparent: the next value and the running advantage carry over.
            const torch::Tensor rt = r.t().contiguous(), vt = v.t().contiguous(), mt = valid.t().contiguous();
            torch::Tensor next_value = boot;
            advantages = detail::ops::backward_scan(rows, cols, f64, [&](std::int64_t t) {
                a = torch::where(mt[t], rt[t] + gamma * next_value - vt[t] + gl * a, a);
                next_value = torch::where(mt[t], vt[t], next_value);
                return a;
            });
            returns = advantages + v;
            if (options.masking == gae_masking::valid_range) {
                const torch::Tensor zero = torch::zeros({}, f64);
                advantages = torch::where(valid, advantages, zero);
                returns = torch::where(valid, returns, zero);
            }
        }
        return advantages_and_returns<torch::Tensor>{advantages.to(rewards.scalar_type()),
                                                     returns.to(rewards.scalar_type())};
    });
}

/// GAE without bootstrap values (every row finished).
[[nodiscard]] inline advantages_and_returns<torch::Tensor> compute_gae(const torch::Tensor& rewards,
                                                                       const torch::Tensor& values,
                                                                       const torch::Tensor& mask,
                                                                       const gae_options& options = {},
                                                                       deferred_checks* checks = nullptr) {
    return compute_gae(rewards, values, mask, torch::Tensor(), options, checks);
}

/// `compute_gae` with `bootstrap_values`, under a name of its own: the key of its CUDA slot
/// (`cuda_implementation`, which takes a function that is not overloaded).
[[nodiscard]] inline advantages_and_returns<torch::Tensor> compute_gae_with_bootstrap(
    const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask,
    const torch::Tensor& bootstrap_values, const gae_options& options, deferred_checks* checks) {
    return compute_gae(rewards, values, mask, bootstrap_values, options, checks);
}

/// GRPO advantages `[B, T]` (`rlhf::compute_grpo_advantages`); `group_ids` `[B]` int64.
[[nodiscard]] inline torch::Tensor compute_grpo_advantages(const torch::Tensor& token_rewards,
                                                           const torch::Tensor& mask, const torch::Tensor& group_ids,
                                                           const grpo_options& options = {},
                                                           deferred_checks* checks = nullptr) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::compute_grpo_advantages";
    rlhf::detail::check_grpo_options(fn, options);
    return detail::ops::group_token_advantages(fn, token_rewards, mask, group_ids,
                                               {rlhf::detail::group_rule_kind::grpo, options.normalize_by_std,
                                                options.epsilon, options.std_estimator, options.singleton},
                                               checks);
}

/// Dr.GRPO advantages `[B, T]` (`rlhf::compute_dr_grpo_advantages`).
[[nodiscard]] inline torch::Tensor compute_dr_grpo_advantages(const torch::Tensor& token_rewards,
                                                              const torch::Tensor& mask, const torch::Tensor& group_ids,
                                                              const dr_grpo_options& options = {},
                                                              deferred_checks* checks = nullptr) {
    return detail::ops::group_token_advantages(
        "rlhf::libtorch::torch_ops::compute_dr_grpo_advantages", token_rewards, mask, group_ids,
        {rlhf::detail::group_rule_kind::mean, false, 0.0, variance_estimator::unbiased, options.singleton}, checks);
}

/// RLOO advantages `[B, T]` (`rlhf::compute_rloo_advantages`).
[[nodiscard]] inline torch::Tensor compute_rloo_advantages(const torch::Tensor& token_rewards,
                                                           const torch::Tensor& mask, const torch::Tensor& group_ids,
                                                           const rloo_options& options = {},
                                                           deferred_checks* checks = nullptr) {
    return detail::ops::group_token_advantages(
        "rlhf::libtorch::torch_ops::compute_rloo_advantages", token_rewards, mask, group_ids,
        {rlhf::detail::group_rule_kind::rloo, false, 0.0, variance_estimator::unbiased, options.singleton}, checks);
}

/// OPO advantages `[B, T]` (`rlhf::compute_opo_advantages`).
[[nodiscard]] inline torch::Tensor compute_opo_advantages(const torch::Tensor& token_rewards, const torch::Tensor& mask,
                                                          const torch::Tensor& group_ids,
                                                          const opo_options& options = {},
                                                          deferred_checks* checks = nullptr) {
    return detail::ops::group_token_advantages(
        "rlhf::libtorch::torch_ops::compute_opo_advantages", token_rewards, mask, group_ids,
        {rlhf::detail::group_rule_kind::opo, false, 0.0, variance_estimator::unbiased, options.singleton}, checks);
}

/// REINFORCE++ advantages and returns `[B, T]` (`rlhf::compute_reinforce_plus_plus_advantages`).
[[nodiscard]] inline advantages_and_returns<torch::Tensor> compute_reinforce_plus_plus_advantages(
    const torch::Tensor& token_rewards, const torch::Tensor& mask, const reinforce_plus_plus_options& options = {},
    deferred_checks* checks = nullptr, const tensor_sum* reduce = nullptr) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::compute_reinforce_plus_plus_advantages";
    check_in_range(fn, "gamma", options.gamma, 0.0, 1.0);
    const torch::Tensor valid = detail::ops::mask_of(fn, mask, token_rewards);
    return detail::ops::with_checks(checks, [&](deferred_checks& c) {
        detail::ops::require_finite(c, fn, "token_rewards", token_rewards);
        const torch::Tensor returns =
            detail::ops::reverse_returns(token_rewards, valid, options.gamma, options.masking);
        return advantages_and_returns<torch::Tensor>{
            detail::ops::whiten_with(fn, "mask", returns, valid.to(torch::kFloat64), options.whiten, c, reduce),
            returns};
    });
}

/// REINFORCE++-baseline advantages and returns `[B, T]`
/// (`rlhf::compute_reinforce_plus_plus_baseline_advantages`).
[[nodiscard]] inline advantages_and_returns<torch::Tensor> compute_reinforce_plus_plus_baseline_advantages(
    const torch::Tensor& token_rewards, const torch::Tensor& mask, const torch::Tensor& group_ids,
    const reinforce_plus_plus_baseline_options& options = {}, deferred_checks* checks = nullptr,
    const tensor_sum* reduce = nullptr) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::compute_reinforce_plus_plus_baseline_advantages";
    return detail::ops::with_checks(checks, [&](deferred_checks& c) {
        const torch::Tensor valid = detail::ops::group_inputs(fn, token_rewards, mask, group_ids, c);
        const torch::Tensor f = valid.to(torch::kFloat64);
        const torch::Tensor s = token_rewards.to(torch::kFloat64).sum(1);
        const torch::Tensor centred = detail::ops::group_rule(
            fn, s, group_ids.to(token_rewards.device()), torch::Tensor(),
            {rlhf::detail::group_rule_kind::mean, false, 0.0, variance_estimator::unbiased, options.singleton}, c);
        if (options.broadcast == baseline_broadcast::tiled_score) {
            const torch::Tensor a = detail::ops::whiten_with(
                fn, "mask", detail::ops::broadcast_rows(centred, valid, token_rewards), f, options.whiten, c, reduce);
            return advantages_and_returns<torch::Tensor>{a, a.clone()};
        }
        const torch::Tensor baseline = (s - centred).unsqueeze(1);  // b_g, or the singleton policy's
        const torch::Tensor x =
            token_rewards.to(torch::kFloat64) * f -
            torch::where(detail::ops::is_last_valid(valid), baseline, torch::zeros({}, f.options()));
        const torch::Tensor returns = detail::ops::reverse_cumsum(x).to(token_rewards.scalar_type());
        return advantages_and_returns<torch::Tensor>{
            detail::ops::whiten_with(fn, "mask", returns, f, options.whiten, c, reduce), returns};
    });
}

/// ReMax advantages and returns `[B, T]` (`rlhf::compute_remax_advantages`); `reward_baselines` `[B]`.
[[nodiscard]] inline advantages_and_returns<torch::Tensor> compute_remax_advantages(
    const torch::Tensor& token_rewards, const torch::Tensor& mask, const torch::Tensor& reward_baselines,
    deferred_checks* checks = nullptr) {
    constexpr std::string_view fn = "rlhf::libtorch::torch_ops::compute_remax_advantages";
    const torch::Tensor valid = detail::ops::mask_of(fn, mask, token_rewards);
    check_defined(reward_baselines, fn, "reward_baselines");
    if (reward_baselines.dim() != 1 || reward_baselines.size(0) != token_rewards.size(0))
        fail(error_kind::shape, fn, "reward_baselines",
             "[" + std::to_string(token_rewards.size(0)) + "] (one per row of 'token_rewards')",
             shape_string(reward_baselines));
    return detail::ops::with_checks(checks, [&](deferred_checks& c) {
        detail::ops::require_finite(c, fn, "token_rewards", token_rewards);
        detail::ops::require_finite(c, fn, "reward_baselines", reward_baselines);
        const torch::Tensor f = valid.to(torch::kFloat64);
        const torch::Tensor returns = detail::ops::reverse_cumsum(token_rewards.to(torch::kFloat64) * f);
        const torch::Tensor advantages =
            returns - reward_baselines.to(token_rewards.device(), torch::kFloat64).unsqueeze(1) * f;
        return advantages_and_returns<torch::Tensor>{advantages.to(token_rewards.scalar_type()),
                                                     returns.to(token_rewards.scalar_type())};
    });
}

}  // namespace torch_ops

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
