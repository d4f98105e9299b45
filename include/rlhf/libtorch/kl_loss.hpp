#pragma once
/// @file
/// KL-in-loss on LibTorch tensors: an autograd Function over the CPU kernel
/// (`rlhf::libtorch::cpu::kl_loss`) and a composition of torch ops that runs on any device
/// (`rlhf::libtorch::torch_ops::kl_loss`, the GPU fallback), picked by device by `rlhf::libtorch::kl_loss`. Both return
/// the loss as a 0-dim tensor differentiable w.r.t. `log_probs`, and the statistics of `rlhf::kl_loss`.

#include <torch/autograd.h>
#include <torch/types.h>

#include <optional>
#include <string_view>
#include <utility>

#include "rlhf/core/check.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/loss_support.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

/// Loss and statistics of the LibTorch KL-in-loss.
struct kl_loss_output {
    /// 0-dim tensor of `log_probs`' dtype and device; backpropagates into `log_probs`.
    torch::Tensor loss;
    kl_loss_stats stats{};
    /// The statistics on the loss's device (`statistics_readback::deferred`; `read_statistics`).
    torch::Tensor device_stats{};
};

namespace detail {

template <class R>
kl_loss_output kl_loss_kernel(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                              const torch::Tensor* old_log_probs, const torch::Tensor& mask,
                              const rlhf::kl_loss_options& options, R& reducer) {
    constexpr std::string_view function = "rlhf::libtorch::cpu::kl_loss";
    kl_loss_output out;
    out.loss = dispatch_floating(log_probs, function, "log_probs", [&](auto tag) {
        using T = decltype(tag);
        const auto lp = as_view<T>(log_probs, function, "log_probs");
        const auto ref = as_view<T>(ref_log_probs, function, "ref_log_probs");
        const auto old = old_log_probs != nullptr ? as_view<T>(*old_log_probs, function, "old_log_probs") : view<T>{};
        return with_mask_view<T>(mask, function, [&](const auto m) {
            return closed_form_on_cpu<T>(function, log_probs, out.stats, [&](mut_view<T> g) {
                return old_log_probs != nullptr ? rlhf::kl_loss(lp, ref, old, m, g, mut_view<T>{}, options, reducer)
                                                : rlhf::kl_loss(lp, ref, m, g, mut_view<T>{}, options, reducer);
            });
        });
    });
    return out;
}

/// The per-token KL of `rlhf::token_kl` composed of torch ops: the log-ratio `d` (in float32 first
/// under `float32_log_ratio`), the estimate `k` of the clamped `d`, and `estimate`, `k` clamped.
struct kl_terms_output {
    torch::Tensor d, k, estimate;
};

[[nodiscard]] inline kl_terms_output kl_terms(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                              const kl_options& o) {
    const torch::Tensor d =
        o.float32_log_ratio
            ? (log_probs.to(torch::kFloat32) - ref_log_probs.to(torch::kFloat32)).to(log_probs.scalar_type())
            : log_probs - ref_log_probs;
    const torch::Tensor dc = o.log_ratio_clamp ? torch::clamp(d, -*o.log_ratio_clamp, *o.log_ratio_clamp) : d;
    torch::Tensor k;
    switch (o.estimator) {
        case kl_estimator::abs:
            k = dc.abs();
            break;
        case kl_estimator::k2:
            k = 0.5 * dc * dc;
            break;
        case kl_estimator::k3:
            k = torch::expm1(-dc) + dc;
            break;
        case kl_estimator::k1:
            k = dc;
            break;
    }
    return {d, k, o.value_clamp ? torch::clamp(k, -*o.value_clamp, *o.value_clamp) : k};
}

template <class R>
kl_loss_output kl_loss_torch_ops(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                 const torch::Tensor* old_log_probs, const torch::Tensor& mask,
                                 const rlhf::kl_loss_options& options, R& reducer, statistics_readback readback);

}  // namespace detail

namespace cpu {

/// KL-in-loss of `rlhf::kl_loss` (see kl_loss.hpp for the formula, the options and the framework
/// presets) on CPU tensors, with autograd: the backward is the kernel's closed-form gradient
/// times the incoming gradient.
///
/// `log_probs`, `ref_log_probs`: `[B, T]` float32 or float64 CPU tensors of one dtype with a
/// contiguous innermost dimension; `mask`: `[B, T]` bool, uint8, int32, int64 or the log-probs'
/// dtype, ∈ {0,1}. Only `log_probs` receives a gradient. Errors: `rlhf::error` naming the argument.
template <Reducer R = local_reducer>
kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs, const torch::Tensor& mask,
                       const rlhf::kl_loss_options& options = {}, R&& reducer = R{}) {
    return detail::kl_loss_kernel(log_probs, ref_log_probs, nullptr, mask, options, reducer);
}

/// Importance-weighted KL-in-loss (TRL `use_bias_correction_kl`): each token's term times
/// `exp(log_probs − old_log_probs)` (with gradient); `old_log_probs` as `log_probs`.
template <Reducer R = local_reducer>
kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                       const torch::Tensor& old_log_probs, const torch::Tensor& mask,
                       const rlhf::kl_loss_options& options = {}, R&& reducer = R{}) {
    return detail::kl_loss_kernel(log_probs, ref_log_probs, &old_log_probs, mask, options, reducer);
}

}  // namespace cpu

namespace torch_ops {

/// KL-in-loss composed of torch ops (any device; autograd differentiates it): the same formula,
/// options, policies and statistics as `rlhf::libtorch::cpu::kl_loss`. The straight-through option
/// is verl's `k2 − k2.detach() + X.detach()`. `readback` (`statistics_readback`): `immediate`
/// validates the values and reads the statistics back to the host; `deferred` does neither. (Masked positions must hold
/// moderate values here: an overflowed weight at a masked token makes autograd's gradient NaN there, unlike the
/// kernel.)
template <Reducer R = local_reducer>
kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs, const torch::Tensor& mask,
                       const rlhf::kl_loss_options& options = {}, R&& reducer = R{},
                       statistics_readback readback = statistics_readback::immediate) {
    return detail::kl_loss_torch_ops(log_probs, ref_log_probs, nullptr, mask, options, reducer, readback);
}

/// Importance-weighted form of `torch_ops::kl_loss`: the weight `exp(lp − old)` carries gradient, as TRL.
template <Reducer R = local_reducer>
kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                       const torch::Tensor& old_log_probs, const torch::Tensor& mask,
                       const rlhf::kl_loss_options& options = {}, R&& reducer = R{},
                       statistics_readback readback = statistics_readback::immediate) {
    return detail::kl_loss_torch_ops(log_probs, ref_log_probs, &old_log_probs, mask, options, reducer, readback);
}

}  // namespace torch_ops

/// The KL loss on tensors, by device: `cpu::kl_loss` on CPU tensors, `torch_ops::kl_loss` (with
/// `readback`) elsewhere; bfloat16/float16 inputs in float32 (`in_compute_precision`).
template <Reducer R = local_reducer>
kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs, const torch::Tensor& mask,
                       const rlhf::kl_loss_options& options = {}, R&& reducer = R{},
                       statistics_readback readback = statistics_readback::immediate) {
    const torch::Tensor lp = detail::in_compute_precision(log_probs);
    const torch::Tensor ref = detail::in_compute_precision(ref_log_probs);
    return by_device(
        lp, [&] { return cpu::kl_loss(lp, ref, mask, options, reducer); },
        [&] { return torch_ops::kl_loss(lp, ref, mask, options, reducer, readback); });
}

/// The importance-weighted KL loss on tensors, by device.
template <Reducer R = local_reducer>
kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                       const torch::Tensor& old_log_probs, const torch::Tensor& mask,
                       const rlhf::kl_loss_options& options = {}, R&& reducer = R{},
                       statistics_readback readback = statistics_readback::immediate) {
    const torch::Tensor lp = detail::in_compute_precision(log_probs);
    const torch::Tensor ref = detail::in_compute_precision(ref_log_probs);
    const torch::Tensor old = detail::in_compute_precision(old_log_probs);
    return by_device(
        lp, [&] { return cpu::kl_loss(lp, ref, old, mask, options, reducer); },
        [&] { return torch_ops::kl_loss(lp, ref, old, mask, options, reducer, readback); });
}

template <class R>
kl_loss_output detail::kl_loss_torch_ops(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                         const torch::Tensor* old_log_probs, const torch::Tensor& mask,
                                         const rlhf::kl_loss_options& options, R& reducer,
                                         statistics_readback readback) {
    constexpr std::string_view function = "rlhf::libtorch::torch_ops::kl_loss";
    rlhf::detail::check_kl_loss_options(function, options);
    detail::check_values_tensor(function, "log_probs", log_probs);
    detail::check_like(function, "ref_log_probs", ref_log_probs, "log_probs", log_probs);
    const bool weighted = old_log_probs != nullptr;
    if (weighted) detail::check_like(function, "old_log_probs", *old_log_probs, "log_probs", log_probs);
    const torch::Tensor valid = detail::loss_mask(function, mask, log_probs, readback);
    const bool immediate = readback == statistics_readback::immediate;
    if (immediate) {
        detail::check_finite_tensor(function, "log_probs", log_probs);
        detail::check_finite_tensor(function, "ref_log_probs", ref_log_probs);
        if (weighted) detail::check_finite_tensor(function, "old_log_probs", *old_log_probs);
    }
    const torch::Tensor w =
        detail::loss_weights(function, valid, options.aggregation, log_probs.scalar_type(), reducer, readback);

    const kl_options& o = options.kl;
    const auto [d, k, x] = detail::kl_terms(log_probs, ref_log_probs, o);
    torch::Tensor per_token = x;
    if (options.straight_through) {
        const torch::Tensor k2 = 0.5 * d * d;
        per_token = k2 - k2.detach() + x.detach();
    }
    torch::Tensor rho;
    if (weighted) {
        rho = torch::exp(log_probs - *old_log_probs);
        per_token = per_token * rho;
    }
    const torch::Tensor zero = torch::zeros({}, w.options());
    const torch::Tensor aggregated = torch::where(valid, per_token * w, zero).sum();
    kl_loss_output out;
    out.loss = options.coef * aggregated;

    torch::NoGradGuard no_grad;
    if (immediate && weighted && !torch::where(valid, torch::isfinite(rho), torch::ones_like(valid)).all().item<bool>())
        fail(error_kind::value, function, "log_probs",
             "exp(log_probs - old_log_probs) finite at valid tokens (log-ratio below ~88.7 in float, ~709.8 in "
             "double)",
             "an overflowed importance weight");
    const torch::Tensor fm = valid.to(torch::kFloat64);
    const torch::Tensor n = fm.sum();
    const torch::Tensor denom = n.clamp_min(1.0);  // every mean is 0 without a valid token
    const auto masked_mean = [&](const torch::Tensor& per) {
        return torch::where(valid, per.to(torch::kFloat64), torch::zeros({}, fm.options())).sum() / denom;
    };
    torch::Tensor inside = torch::ones_like(valid);
    if (o.log_ratio_clamp) inside = inside.logical_and(d.abs() <= *o.log_ratio_clamp);
    if (o.value_clamp) inside = inside.logical_and(k.abs() <= *o.value_clamp);
    const torch::Tensor ratio_mean = weighted ? masked_mean(rho) : n.gt(0).to(torch::kFloat64);
    // The fields of `kl_loss_stats` in declaration order (`for_each_field`).
    detail::set_statistics(
        out,
        torch::stack({masked_mean(per_token), aggregated.to(torch::kFloat64),
                      inside.logical_not().logical_and(valid).sum().to(torch::kFloat64) / denom, ratio_mean, n}),
        readback);
    return out;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
