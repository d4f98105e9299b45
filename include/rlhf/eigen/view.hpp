#pragma once
/// @file
/// Eigen matrices and vectors as `rlhf` views, without copying.
///
/// Kernels read `[B, T]` rows contiguously, so a matrix must be row-major
/// (`rlhf::eigen::row_matrix<T>`, or a `Map`/`Ref`/block of one). A column-major `[T, B]`
/// matrix is the same memory as a row-major `[B, T]`: pass its `.transpose()`.

#include <Eigen/Core>

#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::eigen {

/// Row-major dynamic matrix: the layout the kernels read without a copy.
template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Dynamic column vector.
template <class T>
using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

namespace detail {
template <class Derived>
constexpr bool is_row_layout =
    bool(Derived::IsRowMajor) || Derived::ColsAtCompileTime == 1 || Derived::RowsAtCompileTime == 1;

template <class Derived>
void check_inner_stride(const Eigen::DenseBase<Derived>& matrix, std::string_view function, std::string_view argument) {
    if (matrix.size() > 1 && matrix.derived().innerStride() != 1)
        fail(error_kind::shape, function, argument, "inner stride 1",
             "inner stride " + std::to_string(matrix.derived().innerStride()));
}
}  // namespace detail

/// Read-only `[rows, cols]` view of a row-major Eigen expression with direct access.
template <class Derived>
[[nodiscard]] view<typename Derived::Scalar> as_view(const Eigen::DenseBase<Derived>& matrix, std::string_view function,
                                                     std::string_view argument) {
    static_assert(detail::is_row_layout<Derived>,
                  "rlhf::eigen::as_view: a matrix must be row-major; pass .transpose() of a column-major one");
    static_assert(bool(Eigen::internal::traits<Derived>::Flags & Eigen::DirectAccessBit),
                  "rlhf::eigen::as_view: the expression must have direct access (evaluate it first)");
    detail::check_inner_stride(matrix, function, argument);
    const index_t outer = matrix.rows() > 1 ? index_t{matrix.derived().outerStride()} : index_t{matrix.cols()};
    return {matrix.derived().data(), {index_t{matrix.rows()}, index_t{matrix.cols()}}, {outer, 1}};
}

/// Writable `[rows, cols]` view of a row-major Eigen object with direct access.
template <class Derived>
[[nodiscard]] mut_view<typename Derived::Scalar> as_mut_view(Eigen::DenseBase<Derived>& matrix,
                                                             std::string_view function, std::string_view argument) {
    static_assert(detail::is_row_layout<Derived>,
                  "rlhf::eigen::as_mut_view: a matrix must be row-major; pass .transpose() of a column-major one");
    detail::check_inner_stride(matrix, function, argument);
    const index_t outer = matrix.rows() > 1 ? index_t{matrix.derived().outerStride()} : index_t{matrix.cols()};
    return {matrix.derived().data(), {index_t{matrix.rows()}, index_t{matrix.cols()}}, {outer, 1}};
}

/// Read-only rank-1 view of an Eigen vector.
template <class Derived>
[[nodiscard]] view<typename Derived::Scalar, 1> as_vector_view(const Eigen::DenseBase<Derived>& vector,
                                                               std::string_view function, std::string_view argument) {
    static_assert(Derived::IsVectorAtCompileTime, "rlhf::eigen::as_vector_view: expected a vector");
    detail::check_inner_stride(vector, function, argument);
    return {vector.derived().data(), {index_t{vector.size()}}};
}

/// Writable rank-1 view of an Eigen vector.
template <class Derived>
[[nodiscard]] mut_view<typename Derived::Scalar, 1> as_mut_vector_view(Eigen::DenseBase<Derived>& vector,
                                                                       std::string_view function,
                                                                       std::string_view argument) {
    static_assert(Derived::IsVectorAtCompileTime, "rlhf::eigen::as_mut_vector_view: expected a vector");
    detail::check_inner_stride(vector, function, argument);
    return {vector.derived().data(), {index_t{vector.size()}}};
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::eigen
