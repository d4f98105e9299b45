#pragma once
/// @file
/// The clipped policy loss on LibTorch tensors: `cpu::policy_loss` (the CPU kernel under
/// autograd, its closed-form gradient as the backward), `torch_ops::policy_loss` (torch ops on any
/// device, plain autograd: the GPU fallback) and `policy_loss`, which picks one by device. Both return the loss and
/// `rlhf::policy_loss_stats`. Formula, options and presets: rlhf/kernels/policy_loss.hpp.

#include <torch/autograd.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/loss_support.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

/// Loss (a 0-dim tensor of the dtype of `log_probs`, differentiable w.r.t. `log_probs`) and
/// statistics.
struct policy_loss_output {
    torch::Tensor loss;
    policy_loss_stats stats{};
    /// The statistics on the loss's device (`statistics_readback::deferred`; `read_statistics`).
    torch::Tensor device_stats{};
};

namespace cpu {

/// The CPU path: the kernel `rlhf::policy_loss` under autograd (`closed_form_loss`: the gradient
/// is computed in the forward pass, the backward scales it). `log_probs`, `old_log_probs`,
/// `advantages`: `[B, T]` CPU tensors of one dtype (float32 or float64; innermost stride 1, outer
/// strides free); `mask` `[B, T]` ∈ {0,1} of dtype bool, uint8, int32, int64 or that of
/// `log_probs`. Only `log_probs` receives a gradient; not twice differentiable. Global
/// token/row counts for aggregation go in `options.aggregation`.
inline policy_loss_output policy_loss(const torch::Tensor& log_probs, const torch::Tensor& old_log_probs,
                                      const torch::Tensor& advantages, const torch::Tensor& mask,
                                      const policy_loss_options& options = {}) {
    constexpr std::string_view function = "rlhf::libtorch::cpu::policy_loss";
    policy_loss_output out;
    out.loss = dispatch_floating(log_probs, function, "log_probs", [&](auto tag) {
        using T = decltype(tag);
        check_same_dtype(old_log_probs, function, "old_log_probs", log_probs, "log_probs");
        check_same_dtype(advantages, function, "advantages", log_probs, "log_probs");
        const view<T> lp = as_view<T>(log_probs, function, "log_probs");
        const view<T> old = as_view<T>(old_log_probs, function, "old_log_probs");
        const view<T> adv = as_view<T>(advantages, function, "advantages");
        return with_mask_view<T>(mask, function, [&](const auto m) {
            return libtorch::detail::closed_form_on_cpu<T>(function, log_probs, out.stats, [&](mut_view<T> g) {
                return ::rlhf::policy_loss(lp, old, adv, m, g, {}, options);
            });
        });
    });
    return out;
}

}  // namespace cpu

namespace detail {

/// The checks of a policy loss on tensors of any device: options, dtypes, shapes and devices;
/// under `immediate` readback also the values (finite, mask entries 0 or 1; device reads).
inline void check_policy_loss_tensors(std::string_view function, const torch::Tensor& log_probs,
                                      const torch::Tensor& old_log_probs, const torch::Tensor& advantages,
                                      const torch::Tensor& mask, const policy_loss_options& options,
                                      statistics_readback readback) {
    ::rlhf::detail::check_policy_options(function, options);
    check_defined(log_probs, function, "log_probs");
    const auto dtype = log_probs.scalar_type();
    if (dtype != torch::kFloat32 && dtype != torch::kFloat64)
        fail(error_kind::dtype, function, "log_probs", "float32 or float64", dtype_name(dtype));
    if (log_probs.dim() != 2)
        fail(error_kind::shape, function, "log_probs", "2 dimensions",
             std::to_string(log_probs.dim()) + " dimensions " + shape_string(log_probs));
    libtorch::detail::check_like(function, "old_log_probs", old_log_probs, "log_probs", log_probs, false);
    libtorch::detail::check_like(function, "advantages", advantages, "log_probs", log_probs, false);
    libtorch::detail::check_like(function, "mask", mask, "log_probs", log_probs, false);
    check_same_dtype(old_log_probs, function, "old_log_probs", log_probs, "log_probs");
    check_same_dtype(advantages, function, "advantages", log_probs, "log_probs");
    const auto mask_type = mask.scalar_type();
    if (mask_type != torch::kBool && mask_type != torch::kUInt8 && mask_type != torch::kInt32 &&
        mask_type != torch::kInt64 && mask_type != dtype)
        fail(error_kind::dtype, function, "mask",
             "bool, uint8, int32, int64 or " + dtype_name(dtype) + " (the dtype of the values)", dtype_name(mask_type));
    if (readback == statistics_readback::immediate) {
        libtorch::detail::check_finite_tensor(function, "log_probs", log_probs);
        libtorch::detail::check_finite_tensor(function, "old_log_probs", old_log_probs);
        libtorch::detail::check_finite_tensor(function, "advantages", advantages);
        if (!torch::logical_or(mask == 0, mask == 1).all().item<bool>())
            fail(error_kind::value, function, "mask", "mask entries 0 or 1", "another value");
    }
}

}  // namespace detail

/// The composed path: the same loss written with torch ops, on any device, differentiated by
/// autograd (w.r.t. `log_probs` only: `old_log_probs` and `advantages` are detached). The
/// kink conventions are those the fused kernel reproduces (`torch.clamp` bounds inclusive,
/// `torch.minimum` on ties, `torch.where` on the dual clip), so both agree to rounding.
/// `readback`: `immediate` validates the values (a few device-to-host syncs) and reads the
/// statistics back in one transfer; `deferred` does neither (see `statistics_readback`).
/// Numerics: values as the kernel's, but autograd's own: without a log-ratio clamp an
/// overflowed ratio gives NaN gradients (0·inf in exp's backward) where the kernel gives 0 or
/// inf; set a clamp (the verl/OpenRLHF presets do).
namespace torch_ops {

inline policy_loss_output policy_loss(const torch::Tensor& log_probs, const torch::Tensor& old_log_probs,
                                      const torch::Tensor& advantages, const torch::Tensor& mask,
                                      const policy_loss_options& options = {},
                                      statistics_readback readback = statistics_readback::immediate) {
    constexpr std::string_view function = "rlhf::libtorch::torch_ops::policy_loss";
    detail::check_policy_loss_tensors(function, log_probs, old_log_probs, advantages, mask, options, readback);
    const auto dtype = log_probs.scalar_type();
    const torch::Tensor m = mask.to(dtype);
    const torch::Tensor old = old_log_probs.detach();
    const torch::Tensor adv = advantages.detach();
    const torch::Tensor raw = log_probs - old;
    const bool sequence = options.level == importance_ratio_level::sequence;
    const torch::Tensor n_row = m.sum(-1, true);  // [B, 1]

    // Aggregation weights w = m · c_b, computed by the kernels' own rule (loss_aggregation.hpp).
    local_reducer reducer;
    const torch::Tensor weights =
        libtorch::detail::loss_weights(function, mask != 0, options.aggregation, dtype, reducer, readback);

    torch::Tensor d;
    if (sequence)
        d = (raw * m).sum(-1, true) / n_row.clamp_min(1.0);  // [B, 1], broadcast below
    else
        d = options.mask_log_ratio ? raw * m : raw;
    const bool clamp_log_ratio = options.log_ratio_min || options.log_ratio_max;
    const c10::optional<torch::Scalar> low =
        options.log_ratio_min ? c10::optional<torch::Scalar>(*options.log_ratio_min) : c10::nullopt;
    const c10::optional<torch::Scalar> high =
        options.log_ratio_max ? c10::optional<torch::Scalar>(*options.log_ratio_max) : c10::nullopt;
    if (clamp_log_ratio) d = torch::clamp(d, low, high);
    const torch::Tensor rho = d.exp();
    const torch::Tensor capped = options.ratio_cap ? torch::clamp_max(rho, *options.ratio_cap) : rho;
    const torch::Tensor s1 = capped * adv;
    const torch::Tensor s2 = torch::clamp(capped, 1.0 - options.clip_low, 1.0 + options.clip_high) * adv;
    const torch::Tensor smaller = torch::minimum(s1, s2);
    torch::Tensor loss_mat = -smaller;
    if (options.dual_clip)
        loss_mat = torch::where(adv < 0, torch::minimum(loss_mat, -*options.dual_clip * adv), loss_mat);
    if (options.loss_cap) loss_mat = torch::minimum(loss_mat, torch::full_like(loss_mat, *options.loss_cap));
    torch::Tensor loss = torch::where(m > 0, loss_mat * weights, torch::zeros_like(loss_mat)).sum();

    policy_loss_output out;
    torch::Tensor exceeded;  // TRL's ratio threshold, decided on the device
    {
        torch::NoGradGuard no_grad;
        const torch::Tensor rho_full = rho.detach().expand_as(log_probs);
        const torch::Tensor valid = m.sum();
        const torch::Tensor denom = valid.clamp_min(1.0);
        const torch::Tensor ratio_valid = torch::where(m > 0, rho_full, torch::zeros_like(rho_full));
        const torch::Tensor lower =
            options.dual_clip ? (torch::logical_and(adv < 0, smaller < *options.dual_clip * adv).to(dtype) * m).sum()
                              : torch::zeros_like(valid);
        const torch::Tensor ratio_mean = ratio_valid.sum() / denom;
        const torch::Tensor ratio_all = rho_full.mean();
        const auto above = [&](const torch::Tensor& x, const std::optional<double>& threshold) {
            return threshold ? x.gt(*threshold).to(dtype) : torch::zeros_like(valid);
        };
        exceeded = above(ratio_mean, options.ratio_threshold);
        // The fields of `policy_loss_stats` in declaration order (`for_each_field`).
        const torch::Tensor fields =
            torch::stack({((s2 < s1).to(dtype) * m).sum() / denom, lower / denom, 0.5 * (raw * raw * m).sum() / denom,
                          -(raw * m).sum() / denom,
                          -((clamp_log_ratio ? torch::clamp(raw, low, high) : raw) * m).sum() / denom, ratio_mean,
                          ratio_valid.max(), ratio_all, valid, exceeded, above(ratio_all, options.skip_threshold)})
                .to(torch::kFloat64);
        libtorch::detail::set_statistics(out, fields, readback);
    }
    // TRL's skip: loss 0 with a zero gradient (`where` keeps a possibly infinite loss out of it).
    if (options.ratio_threshold) loss = torch::where(exceeded.gt(0), (log_probs * 0).sum(), loss);
    out.loss = loss;
    return out;
}

}  // namespace torch_ops

/// The policy loss on tensors, by device (`rlhf::libtorch::by_device`): `cpu::policy_loss` on CPU
/// tensors, the CUDA kernel on CUDA tensors when registered (rlhf/cuda/libtorch.cuh),
/// `torch_ops::policy_loss` (with `readback`) elsewhere. bfloat16/float16 inputs (a
/// mixed-precision model's log-probs) are computed in float32 (`in_compute_precision`).
inline policy_loss_output policy_loss(const torch::Tensor& log_probs, const torch::Tensor& old_log_probs,
                                      const torch::Tensor& advantages, const torch::Tensor& mask,
                                      const policy_loss_options& options = {},
                                      statistics_readback readback = statistics_readback::immediate) {
    const torch::Tensor lp = detail::in_compute_precision(log_probs);
    const torch::Tensor old = detail::in_compute_precision(old_log_probs);
    const torch::Tensor adv = detail::in_compute_precision(advantages);
    return by_device<&torch_ops::policy_loss>(
        lp, [&] { return cpu::policy_loss(lp, old, adv, mask, options); }, lp, old, adv, mask, options, readback);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
