#pragma once
/// @file
/// The backend-adapter protocol behind the container entry points (`rlhf/entry/*.hpp`).
///
/// Every public operation exists twice in namespace `rlhf`: as a kernel on views, writing into
/// outputs the caller provides (`rlhf/kernels/`), and as an entry point on containers, returning
/// new containers (`rlhf/entry/`). An entry point is written once, for every backend: it asks the
/// adapter of each argument for a view of it, asks the backend for outputs shaped like an input,
/// and calls the kernel. A backend is therefore nothing but a specialisation of
/// `rlhf::backend_adapter` for its container types (`rlhf/libtorch/adapter.hpp`,
/// `rlhf/eigen/adapter.hpp`, `rlhf/xtensor/adapter.hpp`). An adapter provides:
///
/// | member | meaning |
/// |---|---|
/// | `using backend` | the backend's output factory: `backend::container<T, Rank>`, `backend::make<T, Rank>(extents,
/// like)`, `backend::output<T, Rank>(container, extents)` | | `dispatch_floating(x, function, argument, body)` |
/// `body(std::type_identity<T>{})` with `T` float or double, the element type of `x` (compile time or run time) | |
/// `dispatch_mask<T>(x, function, argument, body)` | the same for a mask next to values of type `T` (bool, integer or
/// `T`) | | `input<E, Rank>(x, site, argument, leading)` | a view of element type `E`, checked (dtype, rank, layout,
/// device); `leading` gives `[B, T]` to a backend that stores `[B, T, V]` as `[B·T, V]` | | `absent(x)` | whether `x`
/// stands for "no tensor" (an undefined tensor, an empty matrix) |
///
/// A device backend (CUDA tensors) joins the same way: its adapter hands out views of device
/// memory, and overload resolution on those views picks the device kernel of the same name.

#include <concepts>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>

#include "rlhf/core/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Specialised by each backend for its container types; the primary template is never defined.
template <class Container>
struct backend_adapter;

/// A container some backend adapts (a LibTorch tensor, an Eigen matrix, an xtensor container).
template <class X>
concept backend_container = requires {
    typename backend_adapter<std::remove_cvref_t<X>>::backend;
};

/// The adapter of a container type.
template <class X>
using adapter_of = backend_adapter<std::remove_cvref_t<X>>;

/// Where an argument is checked: the entry point's name, and the argument whose dtype every other
/// value argument must share (named in dtype errors).
struct call_site {
    std::string_view function;
    std::string_view dtype_source;
};

/// The dtype dispatch of a backend whose element type is a compile-time property of the container
/// (Eigen, xtensor): adapters inherit it; a wrong element type is a compile error.
template <class Scalar>
struct static_element_dispatch {
    template <class Body>
    static decltype(auto) dispatch_floating(const auto& /*x*/, std::string_view /*function*/,
                                            std::string_view /*argument*/, Body&& body) {
        static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                      "rlhf: values must hold float or double");
        return std::forward<Body>(body)(std::type_identity<Scalar>{});
    }

    template <class T, class Body>
    static decltype(auto) dispatch_mask(const auto& /*x*/, std::string_view /*function*/, std::string_view /*argument*/,
                                        Body&& body) {
        static_assert(std::is_arithmetic_v<Scalar>, "rlhf: a mask must hold bool, an integer type or T");
        return std::forward<Body>(body)(std::type_identity<Scalar>{});
    }
};

namespace detail::entry {

/// The state of one entry-point call with value type `T`: `in` views an argument, `make` and `out`
/// create an output of the backend and view it, `with_mask` views a mask in its own element type.
template <class T, class Like>
struct call {
    using value_type = T;
    using backend = typename adapter_of<Like>::backend;
    template <std::size_t Rank>
    using container = typename backend::template container<T, Rank>;

    call_site site;
    const Like& like;

    template <std::size_t Rank = 2, class E = T, class X>
    [[nodiscard]] view<E, Rank> in(const X& x, std::string_view argument, extents_t<2> leading = {}) const {
        // Only value arguments share the dtype of `site.dtype_source`; masks and ids have their own.
        const call_site checked_at = std::is_same_v<E, T> ? site : call_site{site.function, {}};
        return adapter_of<X>::template input<E, Rank>(x, checked_at, argument, leading);
    }

    /// `x` viewed, or an empty view when `x` is absent (an optional input).
    template <std::size_t Rank = 2, class E = T, class X>
    [[nodiscard]] view<E, Rank> optional_in(const X& x, std::string_view argument, extents_t<2> leading = {}) const {
        if (adapter_of<X>::absent(x)) return {};
        return in<Rank, E>(x, argument, leading);
    }

    template <std::size_t Rank>
    [[nodiscard]] container<Rank> make(const extents_t<Rank>& extents) const {
        return backend::template make<T, Rank>(extents, like);
    }

    template <std::size_t Rank>
    [[nodiscard]] mut_view<T, Rank> out(container<Rank>& output, const extents_t<Rank>& extents) const {
        return backend::template output<T, Rank>(output, extents);
    }

    /// `body(view<M>)`: the mask `[B, T]` in its own element type `M`.
    template <class X, class Body>
    decltype(auto) with_mask(const X& mask, Body&& body, std::string_view argument = "mask") const {
        return adapter_of<X>::template dispatch_mask<T>(mask, site.function, argument,
                                                        [&]<class M>(std::type_identity<M>) -> decltype(auto) {
                                                            return std::forward<Body>(body)(in<2, M>(mask, argument));
                                                        });
    }
};

/// Runs `body(call<T, X>)` with `T` the floating type of `x` (named `argument`): the skeleton of
/// every entry point.
template <class X, class Body>
decltype(auto) on_values(std::string_view function, const X& x, std::string_view argument, Body&& body) {
    return adapter_of<X>::dispatch_floating(x, function, argument,
                                            [&]<class T>(std::type_identity<T>) -> decltype(auto) {
                                                return std::forward<Body>(body)(call<T, X>{{function, argument}, x});
                                            });
}

/// The container type a call `C` returns for rank `Rank`.
template <class C, std::size_t Rank>
using container_t = typename std::remove_cvref_t<C>::template container<Rank>;

}  // namespace detail::entry

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
