#pragma once
/// @file
/// The optimizers of a PPO trainer (the user's `torch::optim::Optimizer`s): which it steps, the
/// parameters they hold, and gradient-norm clipping before a step.

// First: torch/nn/utils/clip_grad.h uses torch::Tensor without including it.
#include <torch/types.h>

#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <unordered_set>
#include <vector>

#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The optimizers (the user's; non-owning). Without `critic`, the policy optimizer must hold the
/// critic's parameters (a value head sharing the policy's optimizer, as TRL's): the value loss is
/// then added to the actor loss.
struct trainer_optimizers {
    torch::optim::Optimizer* policy = nullptr;
    torch::optim::Optimizer* critic = nullptr;
};

/// Every parameter of an optimizer's parameter groups.
[[nodiscard]] inline std::vector<torch::Tensor> optimizer_parameters(const torch::optim::Optimizer& optimizer) {
    std::vector<torch::Tensor> params;
    for (const auto& group : optimizer.param_groups())
        for (const auto& p : group.params()) params.push_back(p);
    return params;
}

/// Whether `optimizer` holds every tensor of `params` (the same tensors, not copies).
[[nodiscard]] inline bool holds_parameters(const torch::optim::Optimizer& optimizer,
                                           const std::vector<torch::Tensor>& params) {
    std::unordered_set<const void*> held;
    for (const auto& p : optimizer_parameters(optimizer)) held.insert(p.unsafeGetTensorImpl());
    return std::all_of(params.begin(), params.end(),
                       [&](const torch::Tensor& p) { return held.count(p.unsafeGetTensorImpl()) > 0; });
}

/// The gradient norm of `params` before clipping; clips it to `max_norm` when set
/// (`torch::nn::utils::clip_grad_norm_`).
inline double clip_gradients(const std::vector<torch::Tensor>& params, std::optional<double> max_norm) {
    if (max_norm) return torch::nn::utils::clip_grad_norm_(params, *max_norm);
    double squares = 0.0;
    for (const auto& p : params)
        if (p.grad().defined()) {
            const double n = p.grad().norm().item<double>();
            squares += n * n;
        }
    return std::sqrt(squares);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
