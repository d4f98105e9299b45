#pragma once
/// @file
/// Runtime dtype dispatch from LibTorch tensors to the templated kernels.

#include <torch/types.h>

#include <cstdint>
#include <string_view>
#include <utility>

#include "rlhf/core/check.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

/// Calls `body(T{})` with `T` = float or double, the dtype of `tensor`; any other dtype is an
/// `rlhf::error` naming `argument`.
template <class Body>
decltype(auto) dispatch_floating(const torch::Tensor& tensor, std::string_view function, std::string_view argument,
                                 Body&& body) {
    check_defined(tensor, function, argument);
    switch (tensor.scalar_type()) {
        case torch::kFloat32:
            return std::forward<Body>(body)(float{});
        case torch::kFloat64:
            return std::forward<Body>(body)(double{});
        default:
            fail(error_kind::dtype, function, argument, "float32 or float64", dtype_name(tensor.scalar_type()));
    }
}

/// Calls `body(M{})` with `M` the element type of a mask: bool, uint8, int32, int64, or the
/// floating type `T` of the values it masks. Any other dtype is an `rlhf::error`.
template <class T, class Body>
decltype(auto) dispatch_mask(const torch::Tensor& mask, std::string_view function, std::string_view argument,
                             Body&& body) {
    check_defined(mask, function, argument);
    switch (mask.scalar_type()) {
        case torch::kBool:
            return std::forward<Body>(body)(bool{});
        case torch::kUInt8:
            return std::forward<Body>(body)(std::uint8_t{});
        case torch::kInt32:
            return std::forward<Body>(body)(std::int32_t{});
        case torch::kInt64:
            return std::forward<Body>(body)(std::int64_t{});
        default:
            if (mask.scalar_type() == dtype_of<T>()) return std::forward<Body>(body)(T{});
            fail(error_kind::dtype, function, argument,
                 "bool, uint8, int32, int64 or " + dtype_name(dtype_of<T>()) + " (the dtype of the values)",
                 dtype_name(mask.scalar_type()));
    }
}

/// `dispatch_mask` on the argument "mask", then `body(view<M>)`: the mask `[B, T]` viewed in its
/// own element type, next to values of type `T`.
template <class T, class Body>
decltype(auto) with_mask_view(const torch::Tensor& mask, std::string_view function, Body&& body) {
    return dispatch_mask<T>(mask, function, "mask", [&](auto tag) -> decltype(auto) {
        return std::forward<Body>(body)(as_view<decltype(tag)>(mask, function, "mask"));
    });
}

/// The one device dispatch of the LibTorch layer: `cpu()` when `tensor` is a CPU tensor (or
/// undefined, so that the CPU path names it in its error), `torch_ops()` on any other device.
template <class Cpu, class TorchOps>
decltype(auto) by_device(const torch::Tensor& tensor, Cpu&& cpu, TorchOps&& torch_ops) {
    if (!tensor.defined() || tensor.device().is_cpu()) return std::forward<Cpu>(cpu)();
    return std::forward<TorchOps>(torch_ops)();
}

/// The CUDA implementation of the torch-op function `TorchOps` (a pointer to it: the slot has its
/// signature), or null. `rlhf/cuda/libtorch.cuh` fills the slots of the library's CUDA kernels
/// when a translation unit of the program, compiled by nvcc, includes it; until then CUDA
/// tensors take the torch-op path. One slot per program (an inline variable), so translation
/// units compiled by the host compiler dispatch to kernels compiled by nvcc.
template <auto TorchOps>
struct cuda_implementation {
    static inline decltype(TorchOps) registered = nullptr;
};

/// `by_device` with a CUDA slot: `cpu()` on CPU (or undefined) tensors; on a CUDA tensor the
/// kernel registered for `TorchOps` when there is one; else `TorchOps(args...)`. The CUDA kernel
/// and the torch-op function take the same arguments and have the same meaning.
template <auto TorchOps, class Cpu, class... Args>
decltype(auto) by_device(const torch::Tensor& tensor, Cpu&& cpu, Args&&... args) {
    if (!tensor.defined() || tensor.device().is_cpu()) return std::forward<Cpu>(cpu)();
    if (tensor.is_cuda() && cuda_implementation<TorchOps>::registered != nullptr)
        return cuda_implementation<TorchOps>::registered(std::forward<Args>(args)...);
    return TorchOps(std::forward<Args>(args)...);
}

/// A checked mask: `mask` (bool, uint8, int32, int64, float32 or float64, any device) validated
/// once, entries 0 or 1, and returned as a bool tensor (the same tensor when it is bool already).
/// Bool is the checked-mask type: every kernel and entry point takes it without scanning it
/// again, so a step that reuses one mask in several calls validates it once.
[[nodiscard]] inline torch::Tensor checked_mask(const torch::Tensor& mask,
                                                std::string_view function = "rlhf::libtorch::checked_mask",
                                                std::string_view argument = "mask") {
    check_defined(mask, function, argument);
    const auto type = mask.scalar_type();
    if (type == torch::kBool) return mask;
    if (type != torch::kUInt8 && type != torch::kInt32 && type != torch::kInt64 && type != torch::kFloat32 &&
        type != torch::kFloat64)
        fail(error_kind::dtype, function, argument, "bool, uint8, int32, int64, float32 or float64", dtype_name(type));
    if (!torch::logical_or(mask == 0, mask == 1).all().item<bool>())
        fail(error_kind::value, function, argument, "mask entries 0 or 1", "another value");
    return mask != 0;
}

namespace detail {

/// A model output in the precision of the RLHF math: bfloat16 and float16 become float32
/// (differentiably: the gradient flows back in the model's dtype); float32 and float64 stay.
[[nodiscard]] inline torch::Tensor in_compute_precision(const torch::Tensor& t) {
    if (t.defined() && (t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf))
        return t.to(torch::kFloat32);
    return t;
}

}  // namespace detail

/// Checks that `tensor` has the dtype of `reference` (named `reference_argument`).
inline void check_same_dtype(const torch::Tensor& tensor, std::string_view function, std::string_view argument,
                             const torch::Tensor& reference, std::string_view reference_argument) {
    if (tensor.scalar_type() != reference.scalar_type())
        fail(error_kind::dtype, function, argument,
             dtype_name(reference.scalar_type()) + " (the dtype of '" + std::string(reference_argument) + "')",
             dtype_name(tensor.scalar_type()));
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
