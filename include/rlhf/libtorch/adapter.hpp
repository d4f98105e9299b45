#pragma once
/// @file
/// The LibTorch backend: `rlhf::backend_adapter<torch::Tensor>`, so each container entry point of
/// `rlhf/entry/` takes CPU tensors and returns new contiguous tensors of the values' dtype (on the
/// inputs' device). Dtypes are dispatched at run time: values float32 or float64 (one dtype per
/// call), masks bool, uint8, int32, int64 or the values' dtype, tokens and group ids int64. A
/// tensor whose innermost dimension is not contiguous is an error, never a silent copy.

#include <torch/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/entry/backend.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

namespace libtorch {

/// Output factory of the LibTorch backend: tensors of dtype `T` on the device of `like`.
struct backend {
    template <class T, std::size_t Rank>
    using container = torch::Tensor;

    template <class T, std::size_t Rank>
    [[nodiscard]] static torch::Tensor make(const extents_t<Rank>& extents, const torch::Tensor& like) {
        return torch::empty(torch::IntArrayRef(extents.data(), Rank), like.options().dtype(dtype_of<T>()));
    }

    template <class T, std::size_t Rank>
    [[nodiscard]] static mut_view<T, Rank> output(const torch::Tensor& out, const extents_t<Rank>& /*extents*/) {
        return as_mut_view<T, Rank>(out, "rlhf::libtorch::backend::output", "out");
    }
};

}  // namespace libtorch

template <>
struct backend_adapter<torch::Tensor> {
    using backend = libtorch::backend;

    template <class Body>
    static decltype(auto) dispatch_floating(const torch::Tensor& x, std::string_view function,
                                            std::string_view argument, Body&& body) {
        return libtorch::dispatch_floating(x, function, argument, [&](auto tag) -> decltype(auto) {
            return std::forward<Body>(body)(std::type_identity<decltype(tag)>{});
        });
    }

    template <class T, class Body>
    static decltype(auto) dispatch_mask(const torch::Tensor& x, std::string_view function, std::string_view argument,
                                        Body&& body) {
        return libtorch::dispatch_mask<T>(x, function, argument, [&](auto tag) -> decltype(auto) {
            return std::forward<Body>(body)(std::type_identity<decltype(tag)>{});
        });
    }

    /// A view of `x` after checking it: defined, on the CPU, of dtype `E` (that of
    /// `site.dtype_source` for values), rank `Rank`, innermost stride 1.
    template <class E, std::size_t Rank>
    [[nodiscard]] static view<E, Rank> input(const torch::Tensor& x, const call_site& site, std::string_view argument,
                                             const extents_t<2>& /*leading*/) {
        libtorch::check_defined(x, site.function, argument);
        if (x.scalar_type() != libtorch::dtype_of<E>() && !site.dtype_source.empty() && argument != site.dtype_source)
            fail(error_kind::dtype, site.function, argument,
                 libtorch::dtype_name(libtorch::dtype_of<E>()) + " (the dtype of '" + std::string(site.dtype_source) +
                     "')",
                 libtorch::dtype_name(x.scalar_type()));
        return libtorch::as_view<E, Rank>(x, site.function, argument);
    }

    [[nodiscard]] static bool absent(const torch::Tensor& x) { return !x.defined() || x.numel() == 0; }
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
