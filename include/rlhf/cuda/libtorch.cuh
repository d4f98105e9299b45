#pragma once
/// @file
/// The CUDA kernels behind the LibTorch entry points: include this header in one translation
/// unit of the program compiled by nvcc (CUDA LibTorch, `rlhf::libtorch` and `rlhf::cuda`), and
/// from then on `rlhf::libtorch::policy_loss`, `value_loss`, `logprobs_from_logits`,
/// `entropy_from_logits`, `full_kl_from_logits` and the trainer's GAE, token KL, reward shaping and
/// masked whitening send CUDA tensors to the kernels of `rlhf/cuda/`
/// instead of the torch-op compositions — in every translation unit, including those the host
/// compiler builds (`rlhf::libtorch::cuda_implementation`, filled at static initialisation).
///
/// Each function here has the signature and the meaning of the `torch_ops::` function it
/// replaces; the conformance suite (rlhf/libtorch/conformance.hpp) runs on both. Kernels run on
/// the current CUDA stream of the tensor's device, allocate through LibTorch's caching allocator
/// and never synchronise; `statistics_readback::immediate` reads the statistics back (one copy)
/// and checks the values first, as the torch-op path does.

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include <cstdint>
#include <string_view>

#include "rlhf/cuda/gae.cuh"
#include "rlhf/cuda/logits.cuh"
#include "rlhf/cuda/masked_stats.cuh"
#include "rlhf/cuda/policy_loss.cuh"
#include "rlhf/cuda/reward_shaping.cuh"
#include "rlhf/cuda/value_loss.cuh"
#include "rlhf/libtorch.hpp"
#include "rlhf/ppo/advantage_stage.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda::libtorch_kernels {

/// The element type of the device kernels for a LibTorch element type (`at::Half` and
/// `at::BFloat16` share the layout of CUDA's `__half` and `__nv_bfloat16`).
template <class T>
struct device_element {
    using type = T;
};
template <>
struct device_element<at::Half> {
    using type = __half;
};
template <>
struct device_element<at::BFloat16> {
    using type = __nv_bfloat16;
};

/// Checks that `tensor` is a CUDA tensor of dtype `T` and rank `Rank` with a contiguous innermost
/// dimension; `rlhf::error` naming `argument` otherwise (the entry points' shared checks have
/// already matched the devices of the arguments).
template <class T, std::size_t Rank>
void check_cuda_tensor(const torch::Tensor& tensor, std::string_view function, std::string_view argument) {
    ::rlhf::libtorch::check_defined(tensor, function, argument);
    if (!tensor.is_cuda()) fail(error_kind::device, function, argument, "a CUDA tensor", tensor.device().str());
    const auto dtype = c10::CppTypeToScalarType<T>::value;
    if (tensor.scalar_type() != dtype)
        fail(error_kind::dtype, function, argument, ::rlhf::libtorch::dtype_name(dtype),
             ::rlhf::libtorch::dtype_name(tensor.scalar_type()));
    if (tensor.dim() != static_cast<int64_t>(Rank))
        fail(error_kind::shape, function, argument, std::to_string(Rank) + " dimensions",
             std::to_string(tensor.dim()) + " dimensions " + ::rlhf::libtorch::shape_string(tensor));
    if (tensor.size(-1) > 1 && tensor.stride(-1) != 1)
        fail(error_kind::shape, function, argument, "innermost stride 1 (call .contiguous())",
             "stride " + std::to_string(tensor.stride(-1)));
}

/// Read-only view of a CUDA tensor's device memory (no copy), as the kernels' element type.
template <class T, std::size_t Rank = 2>
[[nodiscard]] view<typename device_element<T>::type, Rank> in(const torch::Tensor& tensor, std::string_view function,
                                                              std::string_view argument) {
    check_cuda_tensor<T, Rank>(tensor, function, argument);
    using E = const typename device_element<T>::type;
    return ::rlhf::libtorch::detail::view_of<E, Rank>(tensor, reinterpret_cast<E*>(tensor.data_ptr<T>()));
}

/// Writable view of a CUDA tensor the caller allocated.
template <class T, std::size_t Rank = 2>
[[nodiscard]] mut_view<typename device_element<T>::type, Rank> out(const torch::Tensor& tensor,
                                                                   std::string_view function,
                                                                   std::string_view argument) {
    check_cuda_tensor<T, Rank>(tensor, function, argument);
    using E = typename device_element<T>::type;
    return ::rlhf::libtorch::detail::view_of<E, Rank>(tensor, reinterpret_cast<E*>(tensor.data_ptr<T>()));
}

/// The current stream of the tensor's device (LibTorch's, so the kernels order with torch ops).
[[nodiscard]] inline cudaStream_t stream_of(const torch::Tensor& tensor) {
    return at::cuda::getCurrentCUDAStream(tensor.device().index()).stream();
}

/// Uninitialised device bytes from LibTorch's caching allocator, on `like`'s device.
[[nodiscard]] inline torch::Tensor workspace(std::size_t bytes, const torch::Tensor& like) {
    return torch::empty({static_cast<int64_t>(bytes)}, like.options().dtype(torch::kUInt8).requires_grad(false));
}

/// `body(view<M>)` with the mask `[B, T]` on the device in its own element type (bool, uint8,
/// int32, int64 or `T`).
template <class T, class Body>
decltype(auto) with_mask(const torch::Tensor& mask, std::string_view function, Body&& body) {
    return ::rlhf::libtorch::dispatch_mask<T>(mask, function, "mask", [&](auto tag) -> decltype(auto) {
        return std::forward<Body>(body)(in<decltype(tag)>(mask, function, "mask"));
    });
}

/// A loss whose gradient a kernel wrote in the forward pass, on the device: `run(grad)` fills
/// `grad` (shaped like `input`; undefined when `input` needs no gradient) and returns the 0-dim
/// loss on the device; the backward is `grad · grad_output`. Not twice differentiable.
struct device_closed_form_loss : torch::autograd::Function<device_closed_form_loss> {
    template <class Run>
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, Run&& run) {
        torch::Tensor grad;
        if (input.requires_grad()) grad = torch::empty_like(input, torch::MemoryFormat::Contiguous);
        torch::Tensor loss = std::forward<Run>(run)(grad);
        ctx->save_for_backward({grad});
        return loss;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
        const torch::Tensor grad = ctx->get_saved_variables()[0];
        return {grad * grad_outputs[0], torch::Tensor()};
    }
};

/// Under `immediate` readback, the aggregation errors of the CPU rule (an empty mask, say) as on the
/// torch-op path (one copy of the mask to the host); the kernels give a loss of 0 there instead.
inline void check_aggregation(std::string_view function, const torch::Tensor& mask, const aggregation_options& options,
                              ::rlhf::libtorch::statistics_readback readback) {
    if (readback != ::rlhf::libtorch::statistics_readback::immediate) return;
    local_reducer reducer;
    (void)::rlhf::libtorch::detail::token_weights(function, mask != 0, options, torch::kFloat64, reducer);
}

/// The frame of the device losses on `x` (`[B, T]`, named `x_name`; its device, dtype and
/// gradient): a float64 `result` of `result_size` on the device and a workspace of
/// `workspace_bytes`; `launch(T{}, grad, result, workspace)` runs the loss kernel for `x`'s
/// element type `T` (`grad` undefined: no gradient). The loss is `result[0]` in `x`'s dtype, the
/// statistics the rest of `result`, read back as `readback` says.
template <class Output, class Launch>
Output device_loss(std::string_view function, const torch::Tensor& x, const char* x_name, int result_size,
                   std::size_t workspace_bytes, ::rlhf::libtorch::statistics_readback readback, Launch&& launch) {
    const c10::cuda::CUDAGuard guard(x.device());
    Output output;
    const torch::Tensor result = torch::empty({result_size}, x.options().dtype(torch::kFloat64).requires_grad(false));
    ::rlhf::libtorch::dispatch_floating(x, function, x_name, [&](auto tag) {
        const torch::Tensor scratch = workspace(workspace_bytes, x);
        output.loss = device_closed_form_loss::apply(x, [&](const torch::Tensor& grad) {
            launch(tag, grad, result.data_ptr<double>(), scratch.data_ptr<std::uint8_t>());
            return result[0].to(x.scalar_type());
        });
    });
    ::rlhf::libtorch::detail::set_statistics(output, result.slice(0, 1), readback);
    return output;
}

/// `rlhf::libtorch::torch_ops::policy_loss` on CUDA tensors (float32/float64), by
/// `rlhf::cuda::policy_loss`: the loss (0-dim, on the device), its gradient w.r.t. `log_probs`
/// computed in the same pass, the statistics on the device.
inline ::rlhf::libtorch::policy_loss_output policy_loss(const torch::Tensor& log_probs,
                                                        const torch::Tensor& old_log_probs,
                                                        const torch::Tensor& advantages, const torch::Tensor& mask,
                                                        const policy_loss_options& options,
                                                        ::rlhf::libtorch::statistics_readback readback) {
    constexpr std::string_view function = "rlhf::cuda::policy_loss";
    ::rlhf::libtorch::detail::check_policy_loss_tensors(function, log_probs, old_log_probs, advantages, mask, options,
                                                        readback);
    check_aggregation(function, mask, options.aggregation, readback);
    return device_loss<::rlhf::libtorch::policy_loss_output>(
        function, log_probs, "log_probs", policy_result_size,
        policy_loss_workspace_bytes(log_probs.size(0), log_probs.size(1)), readback,
        [&](auto tag, const torch::Tensor& grad, double* result, void* scratch) {
            using T = decltype(tag);
            with_mask<T>(mask, function, [&](auto m) {
                ::rlhf::cuda::policy_loss(in<T>(log_probs, function, "log_probs"),
                                          in<T>(old_log_probs, function, "old_log_probs"),
                                          in<T>(advantages, function, "advantages"), m,
                                          grad.defined() ? out<T>(grad, function, "grad") : mut_view<T>{},
                                          mut_view<T>{}, options, result, scratch, stream_of(log_probs));
            });
        });
}

/// `rlhf::libtorch::torch_ops::value_loss` (local statistics) on CUDA tensors, by
/// `rlhf::cuda::value_loss`.
inline ::rlhf::libtorch::value_loss_output value_loss(const torch::Tensor& values, const torch::Tensor& old_values,
                                                      const torch::Tensor& returns, const torch::Tensor& mask,
                                                      const value_loss_options& options, local_reducer&& /*reducer*/,
                                                      ::rlhf::libtorch::statistics_readback readback) {
    constexpr std::string_view function = "rlhf::cuda::value_loss";
    const torch::Tensor valid = ::rlhf::libtorch::detail::checked_value_loss_mask(function, values, old_values, returns,
                                                                                  mask, options, readback);
    check_aggregation(function, valid, options.aggregation, readback);
    return device_loss<::rlhf::libtorch::value_loss_output>(
        function, values, "values", value_result_size, value_loss_workspace_bytes(values.size(0), values.size(1)),
        readback, [&](auto tag, const torch::Tensor& grad, double* result, void* scratch) {
            using T = decltype(tag);
            ::rlhf::cuda::value_loss(in<T>(values, function, "values"), in<T>(old_values, function, "old_values"),
                                     in<T>(returns, function, "returns"), in<bool>(valid, function, "mask"),
                                     grad.defined() ? out<T>(grad, function, "grad") : mut_view<T>{}, mut_view<T>{},
                                     options, result, scratch, stream_of(values));
        });
}

/// `body(T{})` with `T` the LibTorch element type of the logits: float, double, `at::Half`,
/// `at::BFloat16`; any other dtype is an `rlhf::error` naming `logits`.
template <class Body>
decltype(auto) dispatch_logits(const torch::Tensor& logits, std::string_view function, Body&& body) {
    ::rlhf::libtorch::check_defined(logits, function, "logits");
    switch (logits.scalar_type()) {
        case torch::kFloat32:
            return std::forward<Body>(body)(float{});
        case torch::kFloat64:
            return std::forward<Body>(body)(double{});
        case torch::kFloat16:
            return std::forward<Body>(body)(at::Half{});
        case torch::kBFloat16:
            return std::forward<Body>(body)(at::BFloat16{});
        default:
            fail(error_kind::dtype, function, "logits", "float32, float64, float16 or bfloat16",
                 ::rlhf::libtorch::dtype_name(logits.scalar_type()));
    }
}

/// The dtype of the log-probs and entropies of logits of dtype `logits`: float32 for the 16-bit
/// types (the kernels accumulate in float32), else the logits' own.
[[nodiscard]] inline torch::Dtype output_dtype(torch::Dtype logits) {
    return logits == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

/// `body(mask_view_pointer)`: a `const view<M>*` of the mask on the device, nullptr when undefined.
template <class A, class Body>
decltype(auto) with_optional_mask(const torch::Tensor& mask, std::string_view function, Body&& body) {
    if (!mask.defined()) return std::forward<Body>(body)(static_cast<const view<bool>*>(nullptr));
    return with_mask<A>(mask, function, [&](auto m) -> decltype(auto) { return std::forward<Body>(body)(&m); });
}

/// The autograd state of the logits functions besides their saved tensors: the temperature and
/// whether a mask was given (the mask argument is saved either way, a placeholder without one).
inline void save_logits_state(torch::autograd::AutogradContext* ctx, double temperature, bool has_mask) {
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["has_mask"] = has_mask;
}
/// The mask saved at `saved[index]` by `forward`; undefined when none was given.
inline torch::Tensor saved_mask(torch::autograd::AutogradContext* ctx, const torch::autograd::variable_list& saved,
                                std::size_t index) {
    return ctx->saved_data["has_mask"].toBool() ? saved[index] : torch::Tensor();
}
/// The options `forward` ran with (`save_logits_state`).
inline logits_options saved_logits_options(torch::autograd::AutogradContext* ctx) {
    return {.temperature = ctx->saved_data["temperature"].toDouble()};
}

/// Log-probs and entropies of CUDA logits under autograd: the forward and backward kernels of
/// rlhf/cuda/logits.cuh (one pass over the vocabulary each; nothing `[B, T, V]`-sized but the
/// gradient).
struct logprobs_function : torch::autograd::Function<logprobs_function> {
    static constexpr std::string_view name = "rlhf::cuda::logprobs_from_logits";

    static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                                                  const torch::Tensor& tokens, const torch::Tensor& mask_arg,
                                                  bool has_mask, double temperature) {
        const torch::Tensor mask = has_mask ? mask_arg : torch::Tensor();
        const auto bt = logits.options().requires_grad(false);
        const auto dtype = output_dtype(logits.scalar_type());
        torch::Tensor lp = torch::empty({logits.size(0), logits.size(1)}, bt.dtype(dtype));
        torch::Tensor h = torch::empty_like(lp), lse = torch::empty_like(lp, bt.dtype(torch::kFloat64));
        const logits_options options{.temperature = temperature};
        dispatch_logits(logits, name, [&](auto tag) {
            using T = decltype(tag);
            using A = accumulate_t<T>;
            with_optional_mask<A>(mask, name, [&](auto m) {
                const auto z = in<T, 3>(logits, name, "logits");
                const auto y = in<std::int64_t>(tokens, name, "tokens");
                if (m != nullptr)
                    ::rlhf::cuda::logprobs_from_logits(z, y, *m, out<A>(lp, name, "logprobs"),
                                                       out<A>(h, name, "entropy"), out<double>(lse, name, "logsumexp"),
                                                       options, stream_of(logits));
                else
                    ::rlhf::cuda::logprobs_from_logits(z, y, out<A>(lp, name, "logprobs"), out<A>(h, name, "entropy"),
                                                       out<double>(lse, name, "logsumexp"), options, stream_of(logits));
            });
        });
        ctx->set_materialize_grads(false);
        ctx->save_for_backward({logits, tokens, mask_arg, lse, h});
        save_logits_state(ctx, temperature, mask.defined());
        return {lp, h};
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor& logits = saved[0];
        const torch::Tensor mask = saved_mask(ctx, saved, 2);
        const torch::Tensor g_lp = grads[0].defined() ? grads[0].contiguous() : grads[0];
        const torch::Tensor g_h = grads[1].defined() ? grads[1].contiguous() : grads[1];
        const torch::autograd::variable_list none{torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
                                                  torch::Tensor()};
        if (!g_lp.defined() && !g_h.defined()) return none;
        const c10::cuda::CUDAGuard guard(logits.device());
        torch::Tensor grad = torch::empty_like(logits, torch::MemoryFormat::Contiguous);
        const logits_options options = saved_logits_options(ctx);
        dispatch_logits(logits, name, [&](auto tag) {
            using T = decltype(tag);
            using A = accumulate_t<T>;
            const auto optional_in = [&](const torch::Tensor& t, std::string_view argument) {
                return t.defined() ? in<A>(t, name, argument) : view<A>{};
            };
            with_optional_mask<A>(mask, name, [&](auto m) {
                const auto z = in<T, 3>(logits, name, "logits");
                const auto y = in<std::int64_t>(saved[1], name, "tokens");
                const auto lse = in<double>(saved[3], name, "logsumexp");
                const auto h = in<A>(saved[4], name, "entropy");
                if (m != nullptr)
                    ::rlhf::cuda::logprobs_from_logits_backward(
                        z, y, *m, optional_in(g_lp, "grad_logprobs"), optional_in(g_h, "grad_entropy"), lse, h,
                        out<T, 3>(grad, name, "grad_logits"), options, stream_of(logits));
                else
                    ::rlhf::cuda::logprobs_from_logits_backward(
                        z, y, optional_in(g_lp, "grad_logprobs"), optional_in(g_h, "grad_entropy"), lse, h,
                        out<T, 3>(grad, name, "grad_logits"), options, stream_of(logits));
            });
        });
        auto result = none;
        result[0] = grad;
        return result;
    }
};

/// `rlhf::libtorch::torch_ops::logprobs_from_logits` on CUDA tensors: logits `[B, T, V]`
/// (float32, float64, float16, bfloat16), tokens `[B, T]` int64, mask optional; log-probs and
/// entropies in float32 (float64 for float64 logits), both differentiable w.r.t. the logits.
inline ::rlhf::libtorch::logprobs_result logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor& tokens,
                                                              const torch::Tensor& mask,
                                                              const logits_options& options) {
    constexpr std::string_view function = logprobs_function::name;
    ::rlhf::libtorch::check_defined(tokens, function, "tokens");
    const c10::cuda::CUDAGuard guard(logits.device());
    const auto outputs = logprobs_function::apply(logits, tokens, mask.defined() ? mask : torch::empty({0}),
                                                  mask.defined(), options.temperature);
    return {outputs[0], outputs[1]};
}

/// Entropies of CUDA logits under autograd (`entropy_from_logits` and its backward).
struct entropy_function : torch::autograd::Function<entropy_function> {
    static constexpr std::string_view name = "rlhf::cuda::entropy_from_logits";

    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                                 const torch::Tensor& mask_arg, bool has_mask, double temperature) {
        const torch::Tensor mask = has_mask ? mask_arg : torch::Tensor();
        const auto bt = logits.options().requires_grad(false);
        torch::Tensor h = torch::empty({logits.size(0), logits.size(1)}, bt.dtype(output_dtype(logits.scalar_type())));
        torch::Tensor lse = torch::empty_like(h, bt.dtype(torch::kFloat64));
        const logits_options options{.temperature = temperature};
        dispatch_logits(logits, name, [&](auto tag) {
            using T = decltype(tag);
            using A = accumulate_t<T>;
            const auto z = in<T, 3>(logits, name, "logits");
            with_optional_mask<A>(mask, name, [&](auto m) {
                if (m != nullptr)
                    ::rlhf::cuda::entropy_from_logits(z, *m, out<A>(h, name, "entropy"),
                                                      out<double>(lse, name, "logsumexp"), options, stream_of(logits));
                else
                    ::rlhf::cuda::entropy_from_logits(z, out<A>(h, name, "entropy"),
                                                      out<double>(lse, name, "logsumexp"), options, stream_of(logits));
            });
        });
        ctx->save_for_backward({logits, mask_arg, lse, h});
        save_logits_state(ctx, temperature, mask.defined());
        return h;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor& logits = saved[0];
        const torch::Tensor mask = saved_mask(ctx, saved, 1);
        const torch::Tensor g_h = grads[0].contiguous();
        const c10::cuda::CUDAGuard guard(logits.device());
        torch::Tensor grad = torch::empty_like(logits, torch::MemoryFormat::Contiguous);
        const logits_options options = saved_logits_options(ctx);
        dispatch_logits(logits, name, [&](auto tag) {
            using T = decltype(tag);
            using A = accumulate_t<T>;
            const auto z = in<T, 3>(logits, name, "logits");
            const auto lse = in<double>(saved[2], name, "logsumexp");
            const auto h = in<A>(saved[3], name, "entropy");
            with_optional_mask<A>(mask, name, [&](auto m) {
                if (m != nullptr)
                    ::rlhf::cuda::entropy_from_logits_backward(z, *m, in<A>(g_h, name, "grad_entropy"), lse, h,
                                                               out<T, 3>(grad, name, "grad_logits"), options,
                                                               stream_of(logits));
                else
                    ::rlhf::cuda::entropy_from_logits_backward(z, in<A>(g_h, name, "grad_entropy"), lse, h,
                                                               out<T, 3>(grad, name, "grad_logits"), options,
                                                               stream_of(logits));
            });
        });
        return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
};

/// `rlhf::libtorch::torch_ops::entropy_from_logits` on CUDA tensors (dtypes as
/// `logprobs_from_logits`).
inline torch::Tensor entropy_from_logits(const torch::Tensor& logits, const torch::Tensor& mask,
                                         const logits_options& options) {
    const c10::cuda::CUDAGuard guard(logits.device());
    return entropy_function::apply(logits, mask.defined() ? mask : torch::empty({0}), mask.defined(),
                                   options.temperature);
}

/// Full-vocabulary KL(p‖q) of CUDA logits under autograd (w.r.t. the policy logits).
struct full_kl_function : torch::autograd::Function<full_kl_function> {
    static constexpr std::string_view name = "rlhf::cuda::full_kl_from_logits";

    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& policy_logits,
                                 const torch::Tensor& reference_logits, const torch::Tensor& mask_arg, bool has_mask,
                                 double temperature) {
        const torch::Tensor mask = has_mask ? mask_arg : torch::Tensor();
        ::rlhf::libtorch::check_same_dtype(reference_logits, name, "reference_logits", policy_logits, "policy_logits");
        const auto bt = policy_logits.options().requires_grad(false);
        torch::Tensor kl = torch::empty({policy_logits.size(0), policy_logits.size(1)},
                                        bt.dtype(output_dtype(policy_logits.scalar_type())));
        const logits_options options{.temperature = temperature};
        dispatch_logits(policy_logits, name, [&](auto tag) {
            using T = decltype(tag);
            using A = accumulate_t<T>;
            const auto p = in<T, 3>(policy_logits, name, "policy_logits");
            const auto q = in<T, 3>(reference_logits, name, "reference_logits");
            with_optional_mask<A>(mask, name, [&](auto m) {
                if (m != nullptr)
                    ::rlhf::cuda::full_kl_from_logits(p, q, *m, out<A>(kl, name, "kl"), options,
                                                      stream_of(policy_logits));
                else
                    ::rlhf::cuda::full_kl_from_logits(p, q, out<A>(kl, name, "kl"), options, stream_of(policy_logits));
            });
        });
        ctx->save_for_backward({policy_logits, reference_logits, mask_arg});
        save_logits_state(ctx, temperature, mask.defined());
        return kl;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor mask = saved_mask(ctx, saved, 2);
        const torch::Tensor g = grads[0].contiguous();
        const c10::cuda::CUDAGuard guard(saved[0].device());
        torch::Tensor grad = torch::empty_like(saved[0], torch::MemoryFormat::Contiguous);
        const logits_options options = saved_logits_options(ctx);
        dispatch_logits(saved[0], name, [&](auto tag) {
            using T = decltype(tag);
            using A = accumulate_t<T>;
            const auto p = in<T, 3>(saved[0], name, "policy_logits");
            const auto q = in<T, 3>(saved[1], name, "reference_logits");
            with_optional_mask<A>(mask, name, [&](auto m) {
                if (m != nullptr)
                    ::rlhf::cuda::full_kl_from_logits_backward(p, q, *m, in<A>(g, name, "grad_kl"),
                                                               out<T, 3>(grad, name, "grad_policy_logits"), options,
                                                               stream_of(saved[0]));
                else
                    ::rlhf::cuda::full_kl_from_logits_backward(p, q, in<A>(g, name, "grad_kl"),
                                                               out<T, 3>(grad, name, "grad_policy_logits"), options,
                                                               stream_of(saved[0]));
            });
        });
        return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
};

/// `rlhf::libtorch::torch_ops::full_kl_from_logits` on CUDA tensors.
inline torch::Tensor full_kl_from_logits(const torch::Tensor& policy_logits, const torch::Tensor& reference_logits,
                                         const torch::Tensor& mask, const logits_options& options) {
    const c10::cuda::CUDAGuard guard(policy_logits.device());
    return full_kl_function::apply(policy_logits, reference_logits, mask.defined() ? mask : torch::empty({0}),
                                   mask.defined(), options.temperature);
}

/// `rlhf::libtorch::torch_ops::compute_gae` on CUDA tensors (float32/float64), by
/// `rlhf::cuda::compute_gae` (a parallel scan over each row); the value checks go to `checks` as
/// on the torch-op path (deferred: no device read here).
[[nodiscard]] inline advantages_and_returns<torch::Tensor> compute_gae(
    const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask,
    const torch::Tensor& bootstrap_values, const gae_options& options, ::rlhf::libtorch::deferred_checks* checks) {
    constexpr std::string_view function = "rlhf::cuda::compute_gae";
    namespace ops = ::rlhf::libtorch::detail::ops;
    const torch::Tensor valid = ops::checked_gae_mask(function, rewards, values, mask, bootstrap_values, options);
    const c10::cuda::CUDAGuard guard(rewards.device());
    return ops::with_checks(checks, [&](::rlhf::libtorch::deferred_checks& c) {
        ops::require_gae_values(c, function, rewards, values, valid, bootstrap_values, options);
        advantages_and_returns<torch::Tensor> result{torch::empty_like(rewards, torch::MemoryFormat::Contiguous),
                                                     torch::empty_like(rewards, torch::MemoryFormat::Contiguous)};
        ::rlhf::libtorch::dispatch_floating(rewards, function, "rewards", [&](auto tag) {
            using T = decltype(tag);
            const auto r = in<T>(rewards, function, "rewards");
            const auto v = in<T>(values, function, "values");
            const auto m = in<bool>(valid, function, "mask");
            const auto a = out<T>(result.advantages, function, "advantages");
            const auto g = out<T>(result.returns, function, "returns");
            if (bootstrap_values.defined())
                ::rlhf::cuda::compute_gae(r, v, m, in<T, 1>(bootstrap_values, function, "bootstrap_values"), a, g,
                                          options, stream_of(rewards));
            else
                ::rlhf::cuda::compute_gae(r, v, m, a, g, options, stream_of(rewards));
        });
        return result;
    });
}

/// `rlhf::libtorch::torch_ops::token_kl` on CUDA tensors (float32/float64), by `rlhf::cuda::token_kl`.
[[nodiscard]] inline torch::Tensor token_kl(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                            const torch::Tensor& mask, const kl_options& options,
                                            ::rlhf::libtorch::deferred_checks* checks) {
    constexpr std::string_view function = "rlhf::cuda::token_kl";
    namespace ops = ::rlhf::libtorch::detail::ops;
    ::rlhf::detail::check_kl_options(function, options);
    const torch::Tensor valid = ops::checked_log_prob_pair(function, log_probs, ref_log_probs, mask);
    const c10::cuda::CUDAGuard guard(log_probs.device());
    return ops::with_checks(checks, [&](::rlhf::libtorch::deferred_checks& c) {
        ops::require_finite_log_prob_pair(c, function, log_probs, ref_log_probs);
        torch::Tensor kl = torch::empty_like(log_probs, torch::MemoryFormat::Contiguous);
        ::rlhf::libtorch::dispatch_floating(log_probs, function, "log_probs", [&](auto tag) {
            using T = decltype(tag);
            ::rlhf::cuda::token_kl(in<T>(log_probs, function, "log_probs"),
                                   in<T>(ref_log_probs, function, "ref_log_probs"), in<bool>(valid, function, "mask"),
                                   out<T>(kl, function, "kl"), options, stream_of(log_probs));
        });
        return kl;
    });
}

/// `rlhf::libtorch::torch_ops::shape_rewards_from_logprobs` on CUDA tensors, by
/// `rlhf::cuda::shape_rewards_from_logprobs`. `empty_rows = raise` is a deferred check here (as on
/// the torch-op path); the kernel then runs with `drop_score`, which gives the same rewards when
/// no row is empty.
[[nodiscard]] inline torch::Tensor shape_rewards_from_logprobs(const torch::Tensor& log_probs,
                                                               const torch::Tensor& ref_log_probs,
                                                               const torch::Tensor& mask, const torch::Tensor& scores,
                                                               const reward_shaping_options& options,
                                                               ::rlhf::libtorch::deferred_checks* checks) {
    constexpr std::string_view function = "rlhf::cuda::shape_rewards_from_logprobs";
    namespace ops = ::rlhf::libtorch::detail::ops;
    const torch::Tensor valid = ops::checked_shaping_mask(function, log_probs, ref_log_probs, mask, scores, options);
    const c10::cuda::CUDAGuard guard(log_probs.device());
    return ops::with_checks(checks, [&](::rlhf::libtorch::deferred_checks& c) {
        ops::require_shaping_values(c, function, log_probs, ref_log_probs, valid, scores, options);
        reward_shaping_options on_device = options;
        if (on_device.empty_rows == empty_row_policy::raise) on_device.empty_rows = empty_row_policy::drop_score;
        torch::Tensor rewards = torch::empty_like(log_probs, torch::MemoryFormat::Contiguous);
        const torch::Tensor row_scores = scores.to(log_probs.scalar_type()).contiguous();
        ::rlhf::libtorch::dispatch_floating(log_probs, function, "log_probs", [&](auto tag) {
            using T = decltype(tag);
            ::rlhf::cuda::shape_rewards_from_logprobs(
                in<T>(log_probs, function, "log_probs"), in<T>(ref_log_probs, function, "ref_log_probs"),
                in<bool>(valid, function, "mask"), in<T, 1>(row_scores, function, "scores"),
                out<T>(rewards, function, "rewards"), on_device, stream_of(log_probs));
        });
        return rewards;
    });
}

/// `rlhf::libtorch::torch_ops::masked_whiten` on CUDA tensors, by `rlhf::cuda::masked_whiten`
/// (statistics in float64 on the device). `small_sample = raise` is a deferred check of the valid
/// counts (as on the torch-op path); the kernel then runs with `zero_variance`, which gives the
/// same values when no scope is small.
[[nodiscard]] inline torch::Tensor masked_whiten(const torch::Tensor& values, const torch::Tensor& mask,
                                                 const whiten_options& options,
                                                 ::rlhf::libtorch::deferred_checks* checks) {
    constexpr std::string_view function = "rlhf::cuda::masked_whiten";
    namespace ops = ::rlhf::libtorch::detail::ops;
    ::rlhf::detail::stats::check_whiten_options(function, options);
    const torch::Tensor valid = ops::mask_of(function, mask, values);
    const c10::cuda::CUDAGuard guard(values.device());
    return ops::with_checks(checks, [&](::rlhf::libtorch::deferred_checks& c) {
        ops::require_finite(c, function, "values", values);
        const bool per_row = options.scope == whiten_scope::per_row;
        const torch::Tensor count = per_row ? valid.sum(1) : valid.sum();
        ops::require_enough_samples(c, function, "mask",
                                    count < ::rlhf::detail::stats::needed(options.scale, options.variance), options);
        whiten_options on_device = options;
        if (on_device.small_sample == small_sample_policy::raise)
            on_device.small_sample = small_sample_policy::zero_variance;
        torch::Tensor whitened = torch::empty_like(values, torch::MemoryFormat::Contiguous);
        const torch::Tensor moments = torch::empty({per_row ? values.size(0) : 1, moments_slots},
                                                   values.options().dtype(torch::kFloat64).requires_grad(false));
        const torch::Tensor scratch = workspace(masked_stats_workspace_bytes(values.size(0), values.size(1)), values);
        ::rlhf::libtorch::dispatch_floating(values, function, "values", [&](auto tag) {
            using T = decltype(tag);
            ::rlhf::cuda::masked_whiten(in<T>(values, function, "values"), in<bool>(valid, function, "mask"),
                                        out<T>(whitened, function, "out"), out<double>(moments, function, "moments"),
                                        scratch.data_ptr<std::uint8_t>(), on_device, stream_of(values));
        });
        return whitened;
    });
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda::libtorch_kernels

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch::detail {

/// Fills the CUDA slots of the LibTorch entry points (`cuda_implementation`) with the kernels
/// above, once per program, at static initialisation of the first translation unit that
/// includes this header.
inline const bool cuda_kernels_registered = [] {
    namespace k = ::rlhf::cuda::libtorch_kernels;
    cuda_implementation<& torch_ops::policy_loss>::registered = &k::policy_loss;
    cuda_implementation<&torch_ops::value_loss<local_reducer>>::registered = &k::value_loss;
    cuda_implementation<& torch_ops::logprobs_from_logits>::registered = &k::logprobs_from_logits;
    cuda_implementation<& torch_ops::entropy_from_logits>::registered = &k::entropy_from_logits;
    cuda_implementation<& torch_ops::full_kl_from_logits>::registered = &k::full_kl_from_logits;
    cuda_implementation<& torch_ops::compute_gae_with_bootstrap>::registered = &k::compute_gae;
    return true;
}();

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch::detail
