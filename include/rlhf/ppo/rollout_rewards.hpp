#pragma once
/// @file
/// What a rollout itself adds to the advantage stage, beside the reward model: the action mask
/// of its experience (the response tokens the policy chose, holes at the observations of a
/// multi-turn rollout), the missing-EOS penalty on the scores (TRL `missing_eos_penalty`), and
/// the bootstrap values of rows cut at the length limit.

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "rlhf/core/error.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The action mask `[B, width]` (bool) of a rollout's experience: each row's response range,
/// AND-ed with `generated.action_mask` when the rollout has one (its columns beyond `width` and
/// beyond a row's response are ignored). Errors (`rlhf::error`, kind shape, argument
/// `action_mask`): an action mask narrower than `width`.
[[nodiscard]] inline torch::Tensor rollout_action_mask(const rollout& generated, std::int64_t width,
                                                       std::string_view function) {
    const torch::Tensor in_range = response_mask(generated, width, torch::kBool);
    if (!generated.action_mask.defined()) return in_range;
    if (generated.action_mask.size(1) < width)
        fail(error_kind::shape, function, "action_mask",
             "at least " + std::to_string(width) + " columns (the longest response)",
             libtorch::shape_string(generated.action_mask));
    return in_range.logical_and(generated.action_mask.narrow(1, 0, width).ne(0));
}

/// `[B]` bool: row `b`'s response `sequences[b, response_start[b] : response_end[b]]` holds one of
/// `token_ids`.
[[nodiscard]] inline torch::Tensor response_contains(const rollout& generated,
                                                     const std::vector<std::int64_t>& token_ids) {
    const std::int64_t width = response_width(generated);
    const torch::Tensor tokens = gather_response(generated.sequences.to(torch::kInt64), generated, width);
    const torch::Tensor in_range = response_mask(generated, width, torch::kBool);
    torch::Tensor hit = torch::zeros_like(in_range);
    for (const std::int64_t id : token_ids) hit = hit.logical_or(tokens.eq(id).logical_and(in_range));
    return hit.any(1);
}

/// TRL's `missing_eos_penalty` (trl/trainer/ppo_trainer.py, `scores[~contain_eos_token] -=
/// missing_eos_penalty`): `scores − penalty` at rows whose response holds no token of `eos_ids`.
[[nodiscard]] inline torch::Tensor penalize_missing_eos(const torch::Tensor& scores, const rollout& generated,
                                                        const std::vector<std::int64_t>& eos_ids, double penalty) {
    const torch::Tensor ended = response_contains(generated, eos_ids).to(scores.device());
    return torch::where(ended, scores, scores - penalty);
}

/// The bootstrap value `[B]` of each row for GAE: at a truncated row, the value of its last
/// action token (the state after the cut is not in the rollout, its value is taken as that of
/// the last state it has); 0 at a row the policy ended (and at every row when `truncated` is
/// undefined). `values`, `mask` `[B, T]`.
[[nodiscard]] inline torch::Tensor truncation_bootstrap(const torch::Tensor& values, const torch::Tensor& mask,
                                                        const torch::Tensor& truncated) {
    const std::int64_t rows = values.size(0);
    if (!truncated.defined() || values.size(1) == 0) return torch::zeros({rows}, values.options());
    const torch::Tensor columns =
        torch::arange(values.size(1), torch::TensorOptions(torch::kInt64).device(values.device()));
    const torch::Tensor valid = mask.ne(0).to(values.device());
    // The last valid column of each row (0 for an empty row, which the mask then excludes).
    const torch::Tensor last = torch::where(valid, columns.unsqueeze(0), torch::zeros_like(columns)).amax(1);
    const torch::Tensor at_last = values.gather(1, last.unsqueeze(1)).squeeze(1);
    const torch::Tensor use = truncated.to(values.device()).logical_and(valid.any(1));
    return torch::where(use, at_last, torch::zeros_like(at_last));
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
