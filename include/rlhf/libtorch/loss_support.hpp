#pragma once
/// @file
/// Support for the LibTorch losses: an autograd Function for a scalar loss whose kernel
/// computes the loss and its gradient w.r.t. one input in the same pass (the backward is the
/// saved gradient times the incoming gradient: no recomputation, no torch ops in the forward),
/// and the argument checks and aggregation weights of the composed torch-op implementations.

#include <torch/autograd.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/host_reads.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

/// When a composed (torch-op) loss reads its statistics back to the host.
enum class statistics_readback {
    /// In the call: `output.stats` is filled, after the value checks (NaN/Inf, mask entries).
    /// Each costs a device synchronisation on a GPU.
    immediate,
    /// Never in the call: `output.device_stats` holds the statistics on the loss's device (read
    /// them with `read_statistics`), and the values are not checked (the caller checked them):
    /// a training step can run its micro-batches without waiting for the device.
    deferred,
};

/// Calls `f(field)` on every field of a loss's statistics, in declaration order (the layout of
/// `device_stats`).
template <class F>
void for_each_field(policy_loss_stats& s, F&& f) {
    f(s.clip_fraction), f(s.clip_fraction_lower), f(s.approx_kl), f(s.policy_kl), f(s.policy_kl_clamped);
    f(s.ratio_mean), f(s.ratio_max), f(s.ratio_mean_all_positions), f(s.valid_tokens);
    f(s.ratio_threshold_exceeded), f(s.skip_threshold_exceeded);
}
template <class F>
void for_each_field(value_loss_stats& s, F&& f) {
    f(s.clip_fraction), f(s.value_mean), f(s.value_error), f(s.return_mean), f(s.explained_variance);
    f(s.valid_tokens), f(s.clipped_tokens);
}
template <class F>
void for_each_field(kl_loss_stats& s, F&& f) {
    f(s.kl_mean), f(s.kl_aggregated), f(s.clamp_fraction), f(s.ratio_mean), f(s.valid_tokens);
}

/// Statistics from their float64 host tensor (`for_each_field` order).
template <class Stats>
[[nodiscard]] Stats stats_from_host(const torch::Tensor& host) {
    Stats s{};
    const double* p = host.data_ptr<double>();
    for_each_field(s, [&](auto& field) { field = static_cast<std::remove_reference_t<decltype(field)>>(*p++); });
    return s;
}

/// Statistics as a float64 CPU tensor (`for_each_field` order).
template <class Stats>
[[nodiscard]] torch::Tensor stats_to_tensor(Stats s) {
    std::vector<double> fields;
    for_each_field(s, [&](const auto& field) { fields.push_back(static_cast<double>(field)); });
    return torch::tensor(fields, torch::kFloat64);
}

/// The statistics of a loss output (`policy_loss_output`, `value_loss_output`, `kl_loss_output`):
/// `stats`, or its deferred `device_stats` read back (one counted `read_to_host`).
template <class Output>
[[nodiscard]] auto read_statistics(const Output& output) -> decltype(output.stats) {
    if (!output.device_stats.defined()) return output.stats;
    return stats_from_host<decltype(output.stats)>(read_to_host(output.device_stats));
}

/// `closed_form_loss::apply(input, run)`: `run(grad)` evaluates the kernel and returns the loss
/// as a double; `grad` is a contiguous tensor shaped like `input` that `run` fills with
/// d loss / d input, or an undefined tensor when `input` does not require grad (then `run` must
/// skip the gradient). The result is a 0-dim tensor of `input`'s dtype and device whose
/// backward is `grad · grad_output`. Every other tensor `run` reads is treated as a constant.
/// Double backward is not supported (the saved gradient is a constant).
struct closed_form_loss : torch::autograd::Function<closed_form_loss> {
    template <class Run>
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, Run&& run) {
        torch::Tensor grad;
        if (input.requires_grad()) grad = torch::empty_like(input, torch::MemoryFormat::Contiguous);
        const double loss = std::forward<Run>(run)(grad);
        ctx->save_for_backward({grad});
        return torch::scalar_tensor(loss, input.options().requires_grad(false));
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        const torch::Tensor grad = ctx->get_saved_variables()[0];
        // One entry per forward argument: the input, then the (non-tensor) kernel call.
        return {grad * grad_outputs[0], torch::Tensor()};
    }
};

namespace detail {

/// The CPU path of a loss: `kernel(grad)` (a `*_loss_result`) under `closed_form_loss` on `input`,
/// `grad` the view of d loss / d input (empty when `input` needs no gradient); the result's
/// statistics go to `stats`, its loss is the returned 0-dim tensor.
template <class T, class Stats, class Kernel>
torch::Tensor closed_form_on_cpu(std::string_view function, const torch::Tensor& input, Stats& stats, Kernel&& kernel) {
    return closed_form_loss::apply(input, [&](const torch::Tensor& grad) {
        const mut_view<T> g = grad.defined() ? as_mut_view<T>(grad, function, "grad") : mut_view<T>{};
        const auto result = kernel(g);
        stats = result.stats;
        return result.loss;
    });
}

/// Checks that `tensor` is defined, floating, 2-D, and has the shape, dtype and device of
/// `reference` (named `reference_argument`).
inline void check_like(std::string_view function, std::string_view argument, const torch::Tensor& tensor,
                       std::string_view reference_argument, const torch::Tensor& reference, bool check_dtype = true) {
    check_defined(tensor, function, argument);
    if (tensor.device() != reference.device())
        fail(error_kind::device, function, argument,
             reference.device().str() + " (the device of '" + std::string(reference_argument) + "')",
             tensor.device().str());
    if (check_dtype) check_same_dtype(tensor, function, argument, reference, reference_argument);
    if (tensor.sizes() != reference.sizes())
        fail(error_kind::shape, function, argument,
             shape_string(reference) + " (the shape of '" + std::string(reference_argument) + "')",
             shape_string(tensor));
}

/// Checks a floating `[B, T]` tensor of float32/float64.
inline void check_values_tensor(std::string_view function, std::string_view argument, const torch::Tensor& tensor) {
    check_defined(tensor, function, argument);
    if (tensor.scalar_type() != torch::kFloat32 && tensor.scalar_type() != torch::kFloat64)
        fail(error_kind::dtype, function, argument, "float32 or float64", dtype_name(tensor.scalar_type()));
    if (tensor.dim() != 2)
        fail(error_kind::shape, function, argument, "2 dimensions",
             std::to_string(tensor.dim()) + " dimensions " + shape_string(tensor));
}

/// Rejects NaN/Inf anywhere in `tensor` (one device synchronisation).
inline void check_finite_tensor(std::string_view function, std::string_view argument, const torch::Tensor& tensor) {
    if (!torch::isfinite(tensor).all().item<bool>()) {
        const torch::Tensor at = torch::nonzero(torch::logical_not(torch::isfinite(tensor)))[0].cpu();
        fail(error_kind::value, function, argument, "finite values",
             number_string(tensor.index({at[0].item<int64_t>(), at[1].item<int64_t>()}).item<double>()) + " at [" +
                 std::to_string(at[0].item<int64_t>()) + ", " + std::to_string(at[1].item<int64_t>()) + "]");
    }
}

/// Checks a mask's shape and device against the values and its dtype (bool, an integer type or
/// the values'), without reading its entries.
inline void check_mask_like(std::string_view function, const torch::Tensor& mask, const torch::Tensor& values) {
    check_like(function, "mask", mask, "values", values, false);
    const auto type = mask.scalar_type();
    if (type != torch::kBool && type != torch::kUInt8 && type != torch::kInt32 && type != torch::kInt64 &&
        type != values.scalar_type())
        fail(error_kind::dtype, function, "mask",
             "bool, uint8, int32, int64 or " + dtype_name(values.scalar_type()) + " (the dtype of the values)",
             dtype_name(type));
}

/// The mask as a bool tensor (`checked_mask`), after `check_mask_like`.
inline torch::Tensor binary_mask(std::string_view function, const torch::Tensor& mask, const torch::Tensor& values) {
    check_mask_like(function, mask, values);
    return checked_mask(mask, function, "mask");
}

/// The float64 statistics vector `fields` (on the loss's device) as `output.stats` (immediate:
/// one read) or as `output.device_stats` (deferred).
template <class Output>
void set_statistics(Output& output, const torch::Tensor& fields, statistics_readback readback) {
    if (readback == statistics_readback::deferred)
        output.device_stats = fields;
    else
        output.stats = stats_from_host<decltype(output.stats)>(read_to_host(fields));
}

/// Per-token aggregation weights `m_bt · c_b` as a tensor of `dtype` on the mask's device:
/// `rlhf::row_weights` (loss_aggregation.hpp) on a CPU copy of the mask, so the composed path
/// aggregates exactly like the kernels (and through the same reducer).
template <class R>
torch::Tensor token_weights(std::string_view function, const torch::Tensor& mask_bool,
                            const aggregation_options& options, torch::Dtype dtype, R& reducer) {
    const torch::Tensor cpu_mask = mask_bool.to(torch::kCPU, torch::kUInt8).contiguous();
    const auto m = as_view<std::uint8_t>(cpu_mask, function, "mask");
    std::vector<double> weights(static_cast<std::size_t>(m.extent(0)));
    rlhf::detail::check_aggregation_options(function, "options.aggregation.", options);
    rlhf::detail::compute_row_weights(function, m, options, mut_view<double, 1>(weights.data(), {m.extent(0)}),
                                      reducer);
    const torch::Tensor c = torch::tensor(weights, torch::TensorOptions().dtype(torch::kFloat64))
                                .to(mask_bool.device(), dtype)
                                .unsqueeze(1);
    return torch::where(mask_bool, c, torch::zeros({}, c.options()));
}

/// `token_weights` without leaving the mask's device (deferred statistics, local reducer): the
/// counts of `rlhf::row_weights` as tensors. An empty mask is not refused (its weights are 0).
inline torch::Tensor device_token_weights(std::string_view function, const torch::Tensor& mask_bool,
                                          const aggregation_options& options, torch::Dtype dtype) {
    rlhf::detail::check_aggregation_options(function, "options.aggregation.", options);
    const auto f64 = torch::TensorOptions(torch::kFloat64).device(mask_bool.device());
    const torch::Tensor n = mask_bool.to(torch::kFloat64).sum(1, true);  // [B, 1]
    const auto given = [&](const std::optional<double>& count, const torch::Tensor& local) {
        return count ? torch::full({}, *count, f64) : local;
    };
    torch::Tensor c;
    switch (options.mode) {
        case loss_aggregation::token_mean:
            c = options.dp_size / given(options.global_token_count, n.sum()).expand_as(n);
            break;
        case loss_aggregation::seq_mean_token_sum:
        case loss_aggregation::seq_mean_token_mean: {
            const torch::Tensor rows = given(options.global_sequence_count, n.gt(0).sum().to(torch::kFloat64));
            const torch::Tensor per_row =
                options.mode == loss_aggregation::seq_mean_token_mean ? (n + options.token_count_epsilon) * rows : rows;
            c = torch::where(n.gt(0), options.dp_size / per_row, torch::zeros({}, f64));
            break;
        }
        case loss_aggregation::seq_mean_token_sum_norm:
            c = torch::full_like(
                n, 1.0 / (options.normalizer ? *options.normalizer : static_cast<double>(mask_bool.size(1))));
            break;
    }
    return torch::where(mask_bool, c.to(dtype), torch::zeros({}, torch::TensorOptions(dtype).device(c.device())));
}

/// The aggregation weights of a composed loss: on the device under `deferred` with a local
/// reducer, else `token_weights` (exact, through `reducer`).
template <class R>
torch::Tensor loss_weights(std::string_view function, const torch::Tensor& mask_bool,
                           const aggregation_options& options, torch::Dtype dtype, R& reducer,
                           statistics_readback readback) {
    if (readback == statistics_readback::deferred && std::is_same_v<std::decay_t<R>, local_reducer>)
        return device_token_weights(function, mask_bool, options, dtype);
    return token_weights(function, mask_bool, options, dtype, reducer);
}

/// The mask of a composed loss as bool: checked (`binary_mask`) unless `deferred`, where only
/// its shape, device and dtype are.
inline torch::Tensor loss_mask(std::string_view function, const torch::Tensor& mask, const torch::Tensor& values,
                               statistics_readback readback) {
    if (readback == statistics_readback::immediate) return binary_mask(function, mask, values);
    check_mask_like(function, mask, values);
    return mask.scalar_type() == torch::kBool ? mask : mask.ne(0);
}

}  // namespace detail

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
