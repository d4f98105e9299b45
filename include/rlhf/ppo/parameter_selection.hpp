#pragma once
/// @file
/// Which of a model's tensors the trainer keeps, saves and copies: all parameters, or under
/// parameter-efficient training (`config::trainable_parameters_only`, LoRA-style adapters on a
/// frozen backbone) only those with `requires_grad()`, so that frozen ones are neither cloned (EMA)
/// nor written (checkpoints) nor synced (`copy_parameters`). Also the EMA update and the checked
/// copy between two tensor lists that these share.

#include <torch/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "rlhf/core/error.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// `tensors` when `trainable_only` is false, else those of them with `requires_grad()` (in order).
[[nodiscard]] inline std::vector<torch::Tensor> trainable_tensors(const std::vector<torch::Tensor>& tensors,
                                                                  bool trainable_only) {
    if (!trainable_only) return tensors;
    std::vector<torch::Tensor> selected;
    for (const torch::Tensor& t : tensors)
        if (t.requires_grad()) selected.push_back(t);
    return selected;
}

/// Checks that `source` and `target` have one count and the same shapes (else `rlhf::error`, kind
/// shape, naming `argument`, the target's), then copies `source` into `target` under no-grad, or
/// with `alpha < 1` mixes it in: `target ← α·source + (1 − α)·target`.
/// `what` names the tensors in the message ("parameters", "trainable parameters", "buffers").
inline void copy_tensors(const std::vector<torch::Tensor>& source, const std::vector<torch::Tensor>& target,
                         std::string_view what, std::string_view function, std::string_view argument = "to",
                         double alpha = 1.0) {
    if (source.size() != target.size())
        fail(error_kind::shape, function, argument,
             std::to_string(source.size()) + " " + std::string(what) + " (as 'from')",
             std::to_string(target.size()) + " " + std::string(what));
    for (std::size_t i = 0; i < source.size(); ++i)
        if (source[i].sizes() != target[i].sizes())
            fail(error_kind::shape, function, argument,
                 libtorch::shape_string(source[i]) + " for " + std::string(what) + "[" + std::to_string(i) +
                     "] (as 'from')",
                 libtorch::shape_string(target[i]));
    const c10::AutoGradMode no_grad(false);
    for (std::size_t i = 0; i < source.size(); ++i) {
        torch::Tensor destination = target[i];
        if (alpha == 1.0)
            destination.copy_(source[i]);
        else
            destination.mul_(1.0 - alpha).add_(source[i].to(destination.options()), alpha);
    }
}

/// `ema ← β·ema + (1 − β)·θ` (as `torch.lerp(θ, ema, β)`, DeepSpeed-Chat's form) over the EMA's
/// tensors and the policy's (selected) parameters `params`. A parameter set that no longer fits the
/// EMA (another count or shape: the trainable set changed) is an `rlhf::error` (kind shape,
/// argument `policy.parameters`).
inline void update_ema(std::vector<torch::Tensor>& ema, const std::vector<torch::Tensor>& params, double beta,
                       std::string_view function) {
    if (params.size() != ema.size())
        fail(error_kind::shape, function, "policy.parameters", std::to_string(ema.size()) + " parameters (the EMA's)",
             std::to_string(params.size()));
    const c10::AutoGradMode no_grad(false);
    for (std::size_t i = 0; i < params.size(); ++i) {
        if (params[i].sizes() != ema[i].sizes())
            fail(error_kind::shape, function, "policy.parameters",
                 libtorch::shape_string(ema[i]) + " for parameter " + std::to_string(i) + " (the EMA's)",
                 libtorch::shape_string(params[i]));
        ema[i].copy_(torch::lerp(params[i].detach(), ema[i], beta));
    }
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
