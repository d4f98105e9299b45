#pragma once
/// @file
/// Options of the logits kernels (kernels/logits.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include <cstdint>
#include <optional>

#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Options shared by the logits kernels.
struct logits_options {
    /// The logits are divided by this before the softmax (`z / τ`), as TRL's PPO trainers and
    /// verl do before computing log-probs (sampling temperature); must be positive and finite.
    /// The gradient is w.r.t. the undivided logits `z`.
    double temperature = 1.0;
};

/// Options of `rlhf::lm_loss`.
struct lm_loss_options {
    /// As `logits_options::temperature` (1 for a plain LM loss).
    double temperature = 1.0;
    /// Token id that marks a position as not counted, as `torch.nn.CrossEntropyLoss`'s
    /// `ignore_index` (-100, the Hugging Face label convention used by ColossalChat's
    /// `GPTLMLoss` and DeepSpeed-Chat's unsupervised loss). `std::nullopt`: every id is a token.
    std::optional<std::int64_t> ignore_index = -100;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
