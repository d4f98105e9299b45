#pragma once
/// @file
/// xtensor containers (and `xt::adapt` of row-major buffers) as `rlhf` views, without copying.

#if __has_include(<xtensor/containers/xtensor.hpp>)
#include <xtensor/containers/xtensor.hpp>  // xtensor >= 0.26
#else
#include <xtensor/xtensor.hpp>
#endif

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::xtensor {

/// An xtensor container with direct access to row-major storage.
template <class E>
concept dense_container = requires(const E& e) {
    e.data();
    e.shape();
    e.strides();
    e.dimension();
};

namespace detail {
template <class Element, std::size_t Rank, class E>
[[nodiscard]] basic_view<Element, Rank> view_of(const E& container, Element* data, std::string_view function,
                                                std::string_view argument) {
    if (container.dimension() != Rank)
        fail(error_kind::shape, function, argument, std::to_string(Rank) + " dimensions",
             std::to_string(container.dimension()) + " dimensions");
    extents_t<Rank> extents{};
    extents_t<Rank> strides{};
    for (std::size_t d = 0; d < Rank; ++d) {
        extents[d] = static_cast<index_t>(container.shape()[d]);
        strides[d] = static_cast<index_t>(container.strides()[d]);
    }
    if (extents[Rank - 1] > 1 && strides[Rank - 1] != 1)
        fail(error_kind::shape, function, argument, "row-major layout (innermost stride 1)",
             "innermost stride " + std::to_string(strides[Rank - 1]));
    strides[Rank - 1] = 1;
    for (std::size_t d = 0; d + 1 < Rank; ++d)  // xtensor sets the stride of a size-1 axis to 0
        if (extents[d] == 1) strides[d] = extents[d + 1] * strides[d + 1];
    return {data, extents, strides};
}
}  // namespace detail

/// Read-only view of rank `Rank` (default 2) over an xtensor container.
template <std::size_t Rank = 2, dense_container E>
[[nodiscard]] auto as_view(const E& container, std::string_view function, std::string_view argument) {
    using value_type = std::remove_cv_t<std::remove_reference_t<decltype(*container.data())>>;
    return detail::view_of<const value_type, Rank>(container, container.data(), function, argument);
}

/// Writable view of rank `Rank` (default 2) over an xtensor container.
template <std::size_t Rank = 2, dense_container E>
[[nodiscard]] auto as_mut_view(E& container, std::string_view function, std::string_view argument) {
    using value_type = std::remove_cv_t<std::remove_reference_t<decltype(*container.data())>>;
    return detail::view_of<value_type, Rank>(container, container.data(), function, argument);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::xtensor
