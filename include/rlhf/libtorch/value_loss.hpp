#pragma once
/// @file
/// The value loss on LibTorch tensors: an autograd Function over the CPU kernel
/// (`rlhf::libtorch::cpu::value_loss`) and a composition of torch ops that runs on any device
/// (`rlhf::libtorch::torch_ops::value_loss`, the GPU fallback), picked by device by
/// `rlhf::libtorch::value_loss`. Both return the loss as a 0-dim
/// tensor differentiable w.r.t. `values`, and the statistics of `rlhf::value_loss`.

#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/loss_support.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

/// Loss and statistics of the LibTorch value loss.
struct value_loss_output {
    /// 0-dim tensor of `values`' dtype and device; backpropagates into `values`.
    torch::Tensor loss;
    value_loss_stats stats{};
    /// The statistics on the loss's device (`statistics_readback::deferred`; `read_statistics`).
    torch::Tensor device_stats{};
};

/// Value loss of `rlhf::value_loss` (see value_loss.hpp for the formula, the options and the
/// framework presets) on CPU tensors, with autograd: the backward is the kernel's closed-form
/// gradient times the incoming gradient.
///
/// `values`, `old_values`, `returns`: `[B, T]` float32 or float64 CPU tensors of one dtype, with
/// a contiguous innermost dimension; `mask`: `[B, T]` bool, uint8, int32, int64 or the values'
/// dtype, ∈ {0,1}. Only `values` receives a gradient. Errors: `rlhf::error` naming the argument
/// (dtype, device, shape, non-finite values, non-binary or empty mask, options).
namespace cpu {

template <Reducer R = local_reducer>
value_loss_output value_loss(const torch::Tensor& values, const torch::Tensor& old_values, const torch::Tensor& returns,
                             const torch::Tensor& mask, const rlhf::value_loss_options& options = {},
                             R&& reducer = R{}) {
    constexpr std::string_view function = "rlhf::libtorch::cpu::value_loss";
    value_loss_output out;
    out.loss = dispatch_floating(values, function, "values", [&](auto tag) {
        using T = decltype(tag);
        const auto v = as_view<T>(values, function, "values");
        const auto old = as_view<T>(old_values, function, "old_values");
        const auto ret = as_view<T>(returns, function, "returns");
        return with_mask_view<T>(mask, function, [&](const auto m) {
            return libtorch::detail::closed_form_on_cpu<T>(function, values, out.stats, [&](mut_view<T> g) {
                return rlhf::value_loss(v, old, ret, m, g, mut_view<T>{}, options, reducer);
            });
        });
    });
    return out;
}

/// The value loss composed of torch ops (any device; autograd differentiates it): the same
/// formula, options, policies and statistics as `rlhf::libtorch::value_loss` (the aggregation
/// weights come from `rlhf::row_weights` on a CPU copy of the mask). Kinks follow autograd's
/// conventions (`clamp` inclusive, `max` split on ties), which the kernel reproduces.
/// `readback`: `immediate` validates the values and reads the statistics back (device
/// synchronisations); `deferred` does neither (`statistics_readback`).
}  // namespace cpu

namespace detail {

/// The checks of a value loss on tensors of any device (options, dtypes, shapes, devices; under
/// `immediate` readback also the values), and the mask as bool (`loss_mask`).
[[nodiscard]] inline torch::Tensor checked_value_loss_mask(std::string_view function, const torch::Tensor& values,
                                                           const torch::Tensor& old_values,
                                                           const torch::Tensor& returns, const torch::Tensor& mask,
                                                           const rlhf::value_loss_options& options,
                                                           statistics_readback readback) {
    rlhf::detail::check_value_loss_options(function, options);
    libtorch::detail::check_values_tensor(function, "values", values);
    libtorch::detail::check_like(function, "old_values", old_values, "values", values);
    libtorch::detail::check_like(function, "returns", returns, "values", values);
    torch::Tensor valid = libtorch::detail::loss_mask(function, mask, values, readback);
    if (readback == statistics_readback::immediate) {
        libtorch::detail::check_finite_tensor(function, "values", values);
        libtorch::detail::check_finite_tensor(function, "old_values", old_values);
        libtorch::detail::check_finite_tensor(function, "returns", returns);
    }
    return valid;
}

}  // namespace detail

namespace torch_ops {

template <Reducer R = local_reducer>
value_loss_output value_loss(const torch::Tensor& values, const torch::Tensor& old_values, const torch::Tensor& returns,
                             const torch::Tensor& mask, const rlhf::value_loss_options& options = {}, R&& reducer = R{},
                             statistics_readback readback = statistics_readback::immediate) {
    constexpr std::string_view function = "rlhf::libtorch::torch_ops::value_loss";
    const torch::Tensor valid =
        detail::checked_value_loss_mask(function, values, old_values, returns, mask, options, readback);
    const torch::Tensor w =
        libtorch::detail::loss_weights(function, valid, options.aggregation, values.scalar_type(), reducer, readback);

    const torch::Tensor target = options.returns_from_advantages ? returns + old_values : returns;
    const auto psi = [&](const torch::Tensor& e) {
        if (!options.huber_delta) return e * e;
        const double delta = *options.huber_delta;
        const torch::Tensor a = e.abs();
        return torch::where(a <= delta, e * e, delta * (2.0 * a - delta));
    };
    const torch::Tensor p1 = psi(values - target);
    torch::Tensor per_token = p1;
    torch::Tensor clipped;
    if (options.clip_range) {
        const double c = *options.clip_range;
        const torch::Tensor clipped_values = torch::clamp(values, old_values - c, old_values + c);
        const torch::Tensor p2 = psi(clipped_values - target);
        per_token = torch::max(p1, p2);
        clipped = (p2 > p1).logical_and(valid);
    }
    per_token = options.scale * per_token;
    value_loss_output out;
    out.loss = options.coef * torch::where(valid, per_token * w, torch::zeros({}, w.options())).sum();

    torch::NoGradGuard no_grad;
    const torch::Tensor fm = valid.to(torch::kFloat64);
    const torch::Tensor n = fm.sum();
    const torch::Tensor denom = n.clamp_min(1.0);  // every statistic is 0 without a valid token
    const torch::Tensor v = values.to(torch::kFloat64);
    const torch::Tensor r = target.to(torch::kFloat64);
    const torch::Tensor residual = r - v;
    const torch::Tensor clipped_tokens = clipped.defined() ? clipped.sum().to(torch::kFloat64) : torch::zeros_like(n);
    const torch::Tensor value_error = (residual * residual * fm).sum() / denom;
    const torch::Tensor return_mean = (r * fm).sum() / denom;
    const torch::Tensor residual_mean = (residual * fm).sum() / denom;
    const torch::Tensor var_target = ((r * r * fm).sum() / denom - return_mean * return_mean).clamp_min(0.0);
    const torch::Tensor var_residual = (value_error - residual_mean * residual_mean).clamp_min(0.0);
    const torch::Tensor explained =
        torch::where(var_target > 0.0, 1.0 - var_residual / var_target.clamp_min(1e-300), torch::zeros_like(n));
    // The fields of `value_loss_stats` in declaration order (`for_each_field`).
    libtorch::detail::set_statistics(out,
                                     torch::stack({clipped_tokens / denom, (v * fm).sum() / denom, value_error,
                                                   return_mean, explained, n, clipped_tokens}),
                                     readback);
    return out;
}

}  // namespace torch_ops

/// The value loss on tensors, by device: `cpu::value_loss` on CPU tensors, `torch_ops::value_loss`
/// (with `readback`) elsewhere; bfloat16/float16 inputs in float32 (`in_compute_precision`).
template <Reducer R = local_reducer>
value_loss_output value_loss(const torch::Tensor& values, const torch::Tensor& old_values, const torch::Tensor& returns,
                             const torch::Tensor& mask, const rlhf::value_loss_options& options = {}, R&& reducer = R{},
                             statistics_readback readback = statistics_readback::immediate) {
    const torch::Tensor v = detail::in_compute_precision(values);
    const torch::Tensor old = detail::in_compute_precision(old_values);
    const torch::Tensor ret = detail::in_compute_precision(returns);
    if constexpr (std::is_same_v<std::remove_cvref_t<R>, local_reducer>) {
        // Local statistics: the CUDA kernel when registered (rlhf/cuda/libtorch.cuh).
        return by_device<&torch_ops::value_loss<local_reducer>>(
            v, [&] { return cpu::value_loss(v, old, ret, mask, options, reducer); }, v, old, ret, mask, options,
            local_reducer{}, readback);
    } else {
        return by_device(
            v, [&] { return cpu::value_loss(v, old, ret, mask, options, reducer); },
            [&] { return torch_ops::value_loss(v, old, ret, mask, options, reducer, readback); });
    }
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
