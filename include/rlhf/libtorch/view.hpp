#pragma once
/// @file
/// LibTorch tensors as `rlhf` views, without copying. The checks name the argument and say
/// what was expected: a CPU tensor of the kernel's dtype, of the kernel's rank, whose
/// innermost dimension is contiguous.

#include <torch/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

/// The LibTorch dtype of a C++ element type.
template <class T>
[[nodiscard]] constexpr torch::Dtype dtype_of() noexcept {
    if constexpr (std::is_same_v<T, float>)
        return torch::kFloat32;
    else if constexpr (std::is_same_v<T, double>)
        return torch::kFloat64;
    else if constexpr (std::is_same_v<T, bool>)
        return torch::kBool;
    else if constexpr (std::is_same_v<T, std::uint8_t>)
        return torch::kUInt8;
    else if constexpr (std::is_same_v<T, std::int32_t>)
        return torch::kInt32;
    else if constexpr (std::is_same_v<T, std::int64_t>)
        return torch::kInt64;
    else
        static_assert(sizeof(T) == 0, "rlhf::libtorch::dtype_of: unsupported element type");
}

/// "float32", "int64", ...: the name a dtype has in messages (Python's spelling).
[[nodiscard]] inline std::string dtype_name(torch::Dtype dtype) {
    switch (dtype) {
        case torch::kFloat32:
            return "float32";
        case torch::kFloat64:
            return "float64";
        case torch::kFloat16:
            return "float16";
        case torch::kBFloat16:
            return "bfloat16";
        case torch::kBool:
            return "bool";
        case torch::kUInt8:
            return "uint8";
        case torch::kInt32:
            return "int32";
        case torch::kInt64:
            return "int64";
        default:
            return std::string(c10::toString(dtype));
    }
}

/// Extents of a tensor as the text of an error message: "[4, 7]".
[[nodiscard]] inline std::string shape_string(const torch::Tensor& tensor) {
    std::string text = "[";
    for (int64_t d = 0; d < tensor.dim(); ++d) {
        if (d != 0) text += ", ";
        text += std::to_string(tensor.size(d));
    }
    return text + "]";
}

/// Checks that `tensor` is defined (not a default-constructed `torch::Tensor`); the one place
/// every LibTorch path checks it.
inline void check_defined(const torch::Tensor& tensor, std::string_view function, std::string_view argument) {
    if (!tensor.defined()) fail(error_kind::value, function, argument, "a defined tensor", "an undefined tensor");
}

/// Checks that `tensor` is defined, on the CPU, of dtype `T` and rank `Rank`, with a
/// contiguous innermost dimension; throws `rlhf::error` naming `argument` otherwise.
template <class T, std::size_t Rank>
void check_cpu_tensor(const torch::Tensor& tensor, std::string_view function, std::string_view argument) {
    check_defined(tensor, function, argument);
    if (!tensor.device().is_cpu()) fail(error_kind::device, function, argument, "cpu", tensor.device().str());
    if (tensor.scalar_type() != dtype_of<T>())
        fail(error_kind::dtype, function, argument, dtype_name(dtype_of<T>()), dtype_name(tensor.scalar_type()));
    if (tensor.dim() != static_cast<int64_t>(Rank))
        fail(error_kind::shape, function, argument, std::to_string(Rank) + " dimensions",
             std::to_string(tensor.dim()) + " dimensions " + shape_string(tensor));
    if (tensor.size(-1) > 1 && tensor.stride(-1) != 1)
        fail(error_kind::shape, function, argument, "innermost stride 1 (call .contiguous())",
             "stride " + std::to_string(tensor.stride(-1)));
}

namespace detail {
template <class Element, std::size_t Rank>
[[nodiscard]] basic_view<Element, Rank> view_of(const torch::Tensor& tensor, Element* data) {
    extents_t<Rank> extents{};
    extents_t<Rank> strides{};
    for (std::size_t d = 0; d < Rank; ++d) {
        extents[d] = tensor.size(static_cast<int64_t>(d));
        strides[d] = tensor.stride(static_cast<int64_t>(d));
    }
    strides[Rank - 1] = 1;
    return {data, extents, strides};
}
}  // namespace detail

/// Read-only view of a CPU tensor (no copy). `function`/`argument` name it in errors.
template <class T, std::size_t Rank = 2>
[[nodiscard]] view<T, Rank> as_view(const torch::Tensor& tensor, std::string_view function, std::string_view argument) {
    check_cpu_tensor<T, Rank>(tensor, function, argument);
    return detail::view_of<const T, Rank>(tensor, tensor.data_ptr<T>());
}

/// Writable view of a CPU tensor (no copy). The tensor must not require grad tracking of
/// in-place writes: pass outputs allocated by the caller.
template <class T, std::size_t Rank = 2>
[[nodiscard]] mut_view<T, Rank> as_mut_view(const torch::Tensor& tensor, std::string_view function,
                                            std::string_view argument) {
    check_cpu_tensor<T, Rank>(tensor, function, argument);
    return detail::view_of<T, Rank>(tensor, tensor.data_ptr<T>());
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
