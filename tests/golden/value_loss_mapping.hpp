#pragma once
// The value part of TRL v0.11.4 `PPOTrainer.loss` (golden trl_v0114__ppo_loss), for the policy
// family's TRL mapper to merge into its answer: TRL's total loss and its ratio-threshold skip
// combine both parts, so one mapper answers the whole case.

#include <map>
#include <string>

#include "golden_data.hpp"

namespace rlhf_golden {

/// `vf_loss_times_vf_coef`, `stats.val/clipfrac`, `stats.val/error`, `stats.val/mean`,
/// `stats.returns/mean` and, when the mask has at least two valid tokens, `stats.val/var` and
/// `stats.returns/var` (TRL's Bessel-corrected variance of one element is NaN; the library
/// raises there, so those two are not mapped). Not multiplied by TRL's ratio_threshold skip.
std::map<std::string, tensor> trl_value_loss_outputs(const golden_case& c);

}  // namespace rlhf_golden
