#pragma once
/// @file
/// The xtensor backend: `rlhf::backend_adapter` for row-major xtensor containers (`xt::xtensor`,
/// `xt::xarray`, `xt::adapt` of a buffer), so each container entry point of `rlhf/entry/` takes
/// them and returns `xt::xtensor<T, Rank>`. Element types are checked at compile time: values float
/// or double (one type per call), masks any arithmetic type, tokens and group ids `std::int64_t`.

#include <array>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>

#include "rlhf/core/view.hpp"
#include "rlhf/entry/backend.hpp"
#include "rlhf/version.hpp"
#include "rlhf/xtensor/view.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

namespace xtensor {

/// Output factory of the xtensor backend.
struct backend {
    template <class T, std::size_t Rank>
    using container = xt::xtensor<T, Rank>;

    template <class T, std::size_t Rank, class Like>
    [[nodiscard]] static container<T, Rank> make(const extents_t<Rank>& extents, const Like& /*like*/) {
        std::array<std::size_t, Rank> shape{};
        for (std::size_t d = 0; d < Rank; ++d) shape[d] = static_cast<std::size_t>(extents[d]);
        return container<T, Rank>::from_shape(shape);
    }

    template <class T, std::size_t Rank>
    [[nodiscard]] static mut_view<T, Rank> output(container<T, Rank>& out, const extents_t<Rank>& extents) {
        return {out.data(), extents};
    }
};

}  // namespace xtensor

namespace xtensor {
/// The element type of a container.
template <class X>
using element_of = std::remove_cv_t<std::remove_reference_t<decltype(*std::declval<const X&>().data())>>;
}  // namespace xtensor

template <xtensor::dense_container X>
struct backend_adapter<X> : static_element_dispatch<xtensor::element_of<X>> {
    using backend = xtensor::backend;
    using scalar = xtensor::element_of<X>;

    template <class E, std::size_t Rank>
    [[nodiscard]] static view<E, Rank> input(const X& x, const call_site& site, std::string_view argument,
                                             const extents_t<2>& /*leading*/) {
        static_assert(std::is_same_v<scalar, E>,
                      "rlhf: every value argument must have one value type; tokens and group ids std::int64_t");
        return xtensor::as_view<Rank>(x, site.function, argument);
    }

    [[nodiscard]] static bool absent(const X& x) { return x.size() == 0; }
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
