#pragma once
/// @file
/// The Eigen backend: `rlhf::backend_adapter` for every Eigen dense object with direct access, so
/// each container entry point of `rlhf/entry/` takes Eigen matrices and vectors and returns
/// `rlhf::eigen::row_matrix<T>` (`[B, T]`, and `[B·T, V]` for `[B, T, V]`) or
/// `rlhf::eigen::vector<T>` (`[B]`). Element types are checked at compile time: values float or
/// double (one type per call), masks any arithmetic type, tokens and group ids `std::int64_t`.

#include <Eigen/Core>

#include <concepts>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/eigen/view.hpp"
#include "rlhf/entry/backend.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

namespace eigen {

/// Output factory of the Eigen backend.
struct backend {
    template <class T, std::size_t Rank>
    using container = std::conditional_t<Rank == 1, vector<T>, row_matrix<T>>;

    template <class T, std::size_t Rank, class Like>
    [[nodiscard]] static container<T, Rank> make(const extents_t<Rank>& extents, const Like& /*like*/) {
        if constexpr (Rank == 1)
            return vector<T>(extents[0]);
        else if constexpr (Rank == 2)
            return row_matrix<T>(extents[0], extents[1]);
        else
            return row_matrix<T>(extents[0] * extents[1], extents[2]);  // [B·T, V]
    }

    template <class T, std::size_t Rank>
    [[nodiscard]] static mut_view<T, Rank> output(container<T, Rank>& out, const extents_t<Rank>& extents) {
        if constexpr (Rank == 3)
            return {out.data(), extents, {extents[1] * extents[2], extents[2], 1}};
        else
            return {out.data(), extents};
    }
};

/// An Eigen dense object (matrix, vector, `Map`, `Ref`, block, transpose).
template <class X>
concept dense_object = std::derived_from<X, Eigen::DenseBase<X>>;

}  // namespace eigen

template <eigen::dense_object X>
struct backend_adapter<X> : static_element_dispatch<typename X::Scalar> {
    using backend = eigen::backend;
    using scalar = typename X::Scalar;

    template <class E, std::size_t Rank>
    [[nodiscard]] static view<E, Rank> input(const X& x, const call_site& site, std::string_view argument,
                                             const extents_t<2>& leading) {
        static_assert(std::is_same_v<scalar, E>,
                      "rlhf: every value argument must have one scalar type; tokens and group ids std::int64_t");
        if constexpr (Rank == 1) {
            return eigen::as_vector_view(x, site.function, argument);
        } else if constexpr (Rank == 2) {
            return eigen::as_view(x, site.function, argument);
        } else {
            const view<E> flat = eigen::as_view(x, site.function, argument);
            const index_t batch = leading[0] == 0 && leading[1] == 0 ? flat.extent(0) : leading[0];
            const index_t steps = leading[0] == 0 && leading[1] == 0 ? 1 : leading[1];
            if (flat.extent(0) != batch * steps)
                fail(error_kind::shape, site.function, argument,
                     "[" + std::to_string(batch * steps) + ", V] (B·T rows for [B, T] = " + shape_string(leading) + ")",
                     shape_string(flat.extents()));
            return {flat.data(), {batch, steps, flat.extent(1)}, {steps * flat.stride(0), flat.stride(0), 1}};
        }
    }

    [[nodiscard]] static bool absent(const X& x) { return x.size() == 0; }
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
