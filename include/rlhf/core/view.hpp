#pragma once
/// @file
/// Non-owning views over row-major data: the currency of every kernel.
///
/// `rlhf::view<T, Rank>` reads, `rlhf::mut_view<T, Rank>` writes. Shaped like `std::mdspan`
/// with a "padded rows" layout: the innermost dimension is contiguous (stride 1), the outer
/// dimensions may have any stride, so a view can cover a column range of a wider buffer
/// (the response part of a `[B, P + T]` sequence, say) without a copy.

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>

#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Signed index type of every extent and stride (as `std::ptrdiff_t`, like LibTorch's int64).
using index_t = std::ptrdiff_t;

/// Extents of a view, outermost first.
template <std::size_t Rank>
using extents_t = std::array<index_t, Rank>;

/// Strided, non-owning view of `Rank` dimensions whose innermost dimension is contiguous.
/// `Element` is `const T` for read-only views.
template <class Element, std::size_t Rank>
class basic_view {
    static_assert(Rank >= 1, "rlhf::basic_view needs at least one dimension");

public:
    using element_type = Element;
    using value_type = std::remove_cv_t<Element>;
    static constexpr std::size_t rank = Rank;

    constexpr basic_view() noexcept = default;

    /// Contiguous row-major view of `extents`.
    constexpr basic_view(Element* data, const extents_t<Rank>& extents) noexcept : data_(data), extents_(extents) {
        index_t stride = 1;
        for (std::size_t d = Rank; d-- > 0;) {
            strides_[d] = stride;
            stride *= extents_[d];
        }
    }

    /// Row-major view with explicit strides; `strides[Rank - 1]` must be 1.
    constexpr basic_view(Element* data, const extents_t<Rank>& extents, const extents_t<Rank>& strides) noexcept
        : data_(data), extents_(extents), strides_(strides) {}

    /// A writable view converts to a read-only one.
    template <class Other>
    requires(std::is_same_v<Element, const Other>) constexpr basic_view(
        const basic_view<Other, Rank>& other) noexcept  // NOLINT(google-explicit-constructor)
        : data_(other.data()), extents_(other.extents()), strides_(other.strides()) {}

    [[nodiscard]] constexpr Element* data() const noexcept { return data_; }
    [[nodiscard]] constexpr const extents_t<Rank>& extents() const noexcept { return extents_; }
    [[nodiscard]] constexpr const extents_t<Rank>& strides() const noexcept { return strides_; }
    [[nodiscard]] constexpr index_t extent(std::size_t dim) const noexcept { return extents_[dim]; }
    [[nodiscard]] constexpr index_t stride(std::size_t dim) const noexcept { return strides_[dim]; }

    /// Number of elements (product of the extents).
    [[nodiscard]] constexpr index_t size() const noexcept {
        index_t n = 1;
        for (index_t e : extents_) n *= e;
        return n;
    }
    [[nodiscard]] constexpr bool empty() const noexcept { return size() == 0; }

    /// True when the elements are one dense block (no padding between rows).
    [[nodiscard]] constexpr bool is_contiguous() const noexcept {
        index_t expected = 1;
        for (std::size_t d = Rank; d-- > 0;) {
            if (extents_[d] != 1 && strides_[d] != expected) return false;
            expected *= extents_[d];
        }
        return true;
    }

    /// Element access; `index` has one entry per dimension.
    template <class... Index>
    requires(sizeof...(Index) == Rank && (std::is_integral_v<Index> && ...)) [[nodiscard]] constexpr Element&
    operator()(Index... index) const noexcept {
        const std::array<index_t, Rank> at{static_cast<index_t>(index)...};
        index_t offset = 0;
        for (std::size_t d = 0; d < Rank; ++d) offset += at[d] * strides_[d];
        return data_[offset];
    }

    /// The innermost row at an outer index: for a `[B, T]` view, `row(b)` is a span of T.
    [[nodiscard]] constexpr std::span<Element> row(index_t outer) const noexcept requires(Rank == 2) {
        return {data_ + outer * strides_[0], static_cast<std::size_t>(extents_[1])};
    }

    /// The sub-view at an outer index: for `[B, T, V]`, `slice(b)` is `[T, V]`.
    [[nodiscard]] constexpr basic_view<Element, Rank - 1> slice(index_t outer) const noexcept requires(Rank >= 2) {
        extents_t<Rank - 1> extents{};
        extents_t<Rank - 1> strides{};
        for (std::size_t d = 1; d < Rank; ++d) {
            extents[d - 1] = extents_[d];
            strides[d - 1] = strides_[d];
        }
        return {data_ + outer * strides_[0], extents, strides};
    }

    /// The whole of a rank-1 view as a span.
    [[nodiscard]] constexpr std::span<Element> span() const noexcept requires(Rank == 1) {
        return {data_, static_cast<std::size_t>(extents_[0])};
    }

private:
    Element* data_ = nullptr;
    extents_t<Rank> extents_{};
    extents_t<Rank> strides_{};
};

/// Read-only view: `view<float>` is a `[rows, cols]` matrix, `view<float, 1>` a vector.
template <class T, std::size_t Rank = 2>
using view = basic_view<const T, Rank>;

/// Writable view.
template <class T, std::size_t Rank = 2>
using mut_view = basic_view<T, Rank>;

/// Contiguous read-only view over a buffer that holds `rows * cols` elements.
template <class T>
[[nodiscard]] constexpr view<T> make_view(const T* data, index_t rows, index_t cols) noexcept {
    return {data, {rows, cols}};
}

/// Contiguous writable view over a buffer that holds `rows * cols` elements.
template <class T>
[[nodiscard]] constexpr mut_view<T> make_mut_view(T* data, index_t rows, index_t cols) noexcept {
    return {data, {rows, cols}};
}

/// Read-only rank-1 view of a span.
template <class T>
[[nodiscard]] constexpr view<T, 1> make_view(std::span<const T> values) noexcept {
    return {values.data(), {static_cast<index_t>(values.size())}};
}

/// Writable rank-1 view of a span.
template <class T>
[[nodiscard]] constexpr mut_view<T, 1> make_mut_view(std::span<T> values) noexcept {
    return {values.data(), {static_cast<index_t>(values.size())}};
}

/// "[4, 7]": extents as they appear in error messages.
template <std::size_t Rank>
[[nodiscard]] std::string shape_string(const extents_t<Rank>& extents) {
    std::string text = "[";
    for (std::size_t d = 0; d < Rank; ++d) {
        if (d != 0) text += ", ";
        text += std::to_string(extents[d]);
    }
    text += "]";
    return text;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
