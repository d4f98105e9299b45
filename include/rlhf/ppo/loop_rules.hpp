#pragma once
/// @file
/// The rules of the PPO epoch loop on which the frameworks differ (`rlhf::ppo::config`): where the
/// ratio threshold is judged and what it zeroes, when the KL early stop is judged, and the
/// reference-model refresh (TRL `sync_ref_model`). The trainer's loop calls these; docs/ppo.md
/// ("The loop of each preset") says which framework runs which rule.

#include <torch/types.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rlhf/core/error.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/distributed/communicator.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/options/loss_aggregation.hpp"
#include "rlhf/options/policy_loss.hpp"
#include "rlhf/ppo/concepts.hpp"
#include "rlhf/ppo/config.hpp"
#include "rlhf/ppo/experience_buffer.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The policy-loss options the kernel gets: under `ratio_threshold_scope::minibatch` without the
/// ratio threshold (the loop judges it over the whole minibatch).
[[nodiscard]] inline policy_loss_options kernel_policy_options(const config& c) {
    policy_loss_options o = c.policy_loss;
    if (c.threshold_scope == ratio_threshold_scope::minibatch) o.ratio_threshold.reset();
    return o;
}

/// Whether a minibatch whose valid tokens sum `ratio_sum` (Σ of ρ) over `tokens` exceeds the ratio
/// threshold under `ratio_threshold_scope::minibatch`.
[[nodiscard]] inline bool minibatch_ratio_exceeded(const config& c, double ratio_sum, double tokens) {
    return c.threshold_scope == ratio_threshold_scope::minibatch && c.policy_loss.ratio_threshold && tokens > 0.0 &&
           ratio_sum / tokens > *c.policy_loss.ratio_threshold;
}

/// Zeroes every defined gradient of each parameter list (a skipped batch: the optimizer still
/// steps, as after TRL's `loss * 0` backward).
template <class... Lists>
void zero_gradients(const Lists&... lists) {
    const auto zero = [](const std::vector<torch::Tensor>& params) {
        for (const auto& p : params)
            if (p.grad().defined()) {
                torch::Tensor g = p.grad();
                g.zero_();
            }
    };
    (zero(lists), ...);
}

/// Whether the KL early stop fires at the point `when` of the loop: the config's rule is `when`,
/// `early_stop_kl` is set, there were tokens, and the policy KL exceeds `early_stop_factor ·
/// early_stop_kl` (TRL: 1.5·`target_kl`).
[[nodiscard]] inline bool early_stop_due(const config& c, early_stop_rule when, double policy_kl, double tokens) {
    return c.early_stop == when && c.early_stop_kl && tokens > 0.0 &&
           policy_kl > c.early_stop_factor * *c.early_stop_kl;
}

/// The valid tokens, non-empty rows and widest response of a minibatch.
struct minibatch_counts {
    double tokens = 0.0;
    double sequences = 0.0;
    double width = 0.0;
};

/// The counts of the rows `rows` of `buffer`: valid tokens (`action_tokens[r]`, the rows' action
/// masks, when given; else the response lengths), non-empty rows, widest response.
[[nodiscard]] inline minibatch_counts count_minibatch(const experience_buffer& buffer,
                                                      std::span<const std::int64_t> rows,
                                                      const std::vector<double>& action_tokens) {
    if (!action_tokens.empty() && static_cast<std::int64_t>(action_tokens.size()) != buffer.size())
        fail(error_kind::shape, "rlhf::ppo::ppo_trainer::train", "action_tokens",
             std::to_string(buffer.size()) + " counts (one per row) or none", std::to_string(action_tokens.size()));
    minibatch_counts c;
    for (const std::int64_t r : rows) {
        const auto length = static_cast<double>(buffer.response_length(r));
        const double n = action_tokens.empty() ? length : action_tokens[static_cast<std::size_t>(r)];
        c.tokens += n;
        c.sequences += n > 0.0 ? 1.0 : 0.0;
        c.width = std::max(c.width, length);
    }
    return c;
}

/// The counts of a minibatch split across data-parallel ranks: tokens and rows summed, the
/// widest response over every rank (two collectives).
[[nodiscard]] inline minibatch_counts global_counts(distributed::communicator& group, const minibatch_counts& local) {
    std::array<double, 2> sums{local.tokens, local.sequences};
    std::array<double, 1> width{local.width};
    group.sum_all(sums);
    group.max_all(width);
    return {.tokens = sums[0], .sequences = sums[1], .width = width[0]};
}

/// The aggregation of one loss for a micro-batch of a minibatch: under
/// `micro_batch_scaling::global_counts` (verl) with the minibatch's counts, unless set, and with
/// `world_size` data-parallel ranks `dp_size = world_size` (their gradients are averaged; verl
/// `agg_loss`'s `dp_size`).
[[nodiscard]] inline aggregation_options micro_aggregation(aggregation_options a, const config& c,
                                                           const minibatch_counts& minibatch, int world_size = 1) {
    if (c.scaling != micro_batch_scaling::global_counts) return a;
    if (world_size > 1) a.dp_size = static_cast<double>(world_size);
    if (!a.global_token_count) a.global_token_count = minibatch.tokens;
    if (!a.global_sequence_count) a.global_sequence_count = minibatch.sequences;
    if (!a.normalizer) a.normalizer = minibatch.width;
    return a;
}

/// After trainer step `step` (counted from 1), every `ref_model_sync_steps` steps under
/// `sync_ref_model`: `reference ← α·policy + (1 − α)·reference` (`copy_parameters{.alpha}`).
/// @note TRL `SyncRefModelCallback.on_step_end`: `global_step % ref_model_sync_steps == 0`.
template <HasParameters From, HasParameters To>
void refresh_reference(const config& c, std::int64_t step, From& policy, To& reference) {
    if (c.sync_ref_model && step % c.ref_model_sync_steps == 0)
        copy_parameters{.alpha = c.ref_model_mixup_alpha}.sync(policy, reference);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
