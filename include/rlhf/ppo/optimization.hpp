#pragma once
/// @file
/// The optimizers of a PPO trainer (the user's `torch::optim::Optimizer`s): which it steps, the
/// parameters they hold, gradient-norm clipping before a step, and float16 loss scaling.

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <unordered_set>
#include <vector>

#include "rlhf/libtorch/host_reads.hpp"
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

/// The gradient norm of `params` before clipping, as a 0-dim tensor on the gradients' device
/// (float64 zero on the CPU when no parameter has a gradient); with `max_norm`, scales every
/// gradient by `min(max_norm / (norm + 1e-6), 1)` — `torch::nn::utils::clip_grad_norm_`'s
/// formula and norm order — without reading the norm back to the host.
inline torch::Tensor clip_gradients(const std::vector<torch::Tensor>& params, std::optional<double> max_norm) {
    std::vector<torch::Tensor> grads;
    for (const auto& p : params)
        if (p.grad().defined()) grads.push_back(p.grad());
    if (grads.empty()) return torch::zeros({}, torch::kFloat64);
    std::vector<torch::Tensor> norms;
    norms.reserve(grads.size());
    for (const auto& g : grads) norms.push_back(g.norm());
    const torch::Tensor total = norms.size() == 1 ? norms[0] : torch::stack(norms).norm();
    if (max_norm) {
        const torch::Tensor coef = torch::clamp(*max_norm / (total + 1e-6), c10::nullopt, 1.0);
        for (auto& g : grads) g.mul_(coef.to(g.scalar_type()));
    }
    return total;
}

/// Loss scaling for float16 training (`config::loss_scaling`): the loss is multiplied by
/// `scale` before backward, the gradients divided by it before clipping and the step; a step
/// with a non-finite gradient is skipped. Dynamic scaling halves the scale on such a step and
/// doubles it after `growth_interval` finite steps in a row (PyTorch `torch.amp.GradScaler`'s
/// defaults); static scaling keeps `initial_scale`.
struct loss_scaling_options {
    double initial_scale = 65536.0;
    bool dynamic = true;
    double growth_factor = 2.0;
    double backoff_factor = 0.5;
    std::int64_t growth_interval = 2000;
};

/// The state of loss scaling (see `loss_scaling_options`).
class loss_scaler {
public:
    explicit loss_scaler(const loss_scaling_options& options) : options_(options), scale_(options.initial_scale) {}

    [[nodiscard]] double scale() const noexcept { return scale_; }

    /// Divides the gradients of `params` by the scale; returns whether they are all finite
    /// (one host read: the decision to step) and updates the scale.
    bool unscale(const std::vector<torch::Tensor>& params) {
        std::vector<torch::Tensor> finite;
        for (const auto& p : params)
            if (p.grad().defined()) {
                p.grad().div_(scale_);
                finite.push_back(torch::isfinite(p.grad()).all());
            }
        const bool ok = finite.empty() || libtorch::read_scalar(torch::stack(finite).all()) != 0.0;
        if (!options_.dynamic) return ok;
        if (!ok) {
            scale_ *= options_.backoff_factor;
            good_steps_ = 0;
        } else if (++good_steps_ >= options_.growth_interval) {
            scale_ *= options_.growth_factor;
            good_steps_ = 0;
        }
        return ok;
    }

private:
    loss_scaling_options options_;
    double scale_;
    std::int64_t good_steps_ = 0;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
