#pragma once
/// @file
/// Argument checks. Each one throws `rlhf::error` naming the function, the argument, what was
/// expected and what was given, so bad input never turns into UB or a silent NaN.

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "rlhf/core/error.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Throws `rlhf::error`; the single place errors are raised from.
[[noreturn]] inline void fail(error_kind kind, std::string_view function, std::string_view argument,
                              std::string_view expected, std::string_view actual = {}) {
    throw error(kind, function, argument, expected, actual);
}

/// Shortest text that round-trips `value` ("0.1", "nan", "-inf", "12").
template <class T>
requires std::is_arithmetic_v<T>
[[nodiscard]] std::string number_string(T value) {
    if constexpr (std::is_floating_point_v<T>) {
        if (std::isnan(value)) return "nan";
        if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    }
    char buffer[64];
    const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
    return {buffer, result.ptr};
}

/// `view` must have exactly `expected` extents.
template <class Element, std::size_t Rank>
void check_shape(std::string_view function, std::string_view argument, const basic_view<Element, Rank>& view,
                 const extents_t<Rank>& expected) {
    if (view.extents() != expected)
        fail(error_kind::shape, function, argument, shape_string(expected), shape_string(view.extents()));
}

/// `view` must have the extents of `reference` (named `reference_argument` in the message).
template <class Element, class OtherElement, std::size_t Rank>
void check_same_shape(std::string_view function, std::string_view argument, const basic_view<Element, Rank>& view,
                      std::string_view reference_argument, const basic_view<OtherElement, Rank>& reference) {
    if (view.extents() != reference.extents())
        fail(error_kind::shape, function, argument,
             shape_string(reference.extents()) + " (the shape of '" + std::string(reference_argument) + "')",
             shape_string(view.extents()));
}

/// A length (of a vector, or an extent) must equal `expected`; `what` says what it should match.
inline void check_length(std::string_view function, std::string_view argument, index_t actual, index_t expected,
                         std::string_view what) {
    if (actual != expected)
        fail(error_kind::shape, function, argument,
             "length " + std::to_string(expected) + " (" + std::string(what) + ")", "length " + std::to_string(actual));
}

/// Multi-index of the first element (row-major order) for which `predicate` holds, if any.
template <class Element, std::size_t Rank, class Predicate>
[[nodiscard]] std::optional<extents_t<Rank>> find_first(const basic_view<Element, Rank>& view, Predicate predicate) {
    if constexpr (Rank == 1) {
        for (index_t i = 0; i < view.extent(0); ++i)
            if (predicate(view(i))) return extents_t<1>{i};
    } else {
        for (index_t i = 0; i < view.extent(0); ++i) {
            if (const auto inner = find_first(view.slice(i), predicate)) {
                extents_t<Rank> at{i};
                std::copy(inner->begin(), inner->end(), at.begin() + 1);
                return at;
            }
        }
    }
    return std::nullopt;
}

namespace detail {

/// True when some element of the contiguous run `[x, x + n)` is NaN or +-Inf: an integer
/// max-reduction over the exponent bits, which the compiler vectorises.
template <class T>
requires std::is_floating_point_v<T>
[[nodiscard]] bool any_non_finite(const T* x, index_t n) noexcept {
    using bits_t = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    static_assert(sizeof(T) == sizeof(bits_t), "rlhf: float and double only");
    constexpr bits_t exponent = std::bit_cast<bits_t>(std::numeric_limits<T>::infinity());
    bits_t largest = 0;
    for (index_t i = 0; i < n; ++i) {
        const bits_t e = std::bit_cast<bits_t>(x[i]) & exponent;
        largest = e > largest ? e : largest;
    }
    return largest == exponent;
}

/// True when some element of `[m, m + n)` is neither 0 nor 1 (an OR-reduction, vectorised).
template <class M>
[[nodiscard]] bool any_non_binary(const M* m, index_t n) noexcept {
    unsigned bad = 0;
    for (index_t i = 0; i < n; ++i) bad |= static_cast<unsigned>((m[i] != M{0}) & (m[i] != M{1}));
    return bad != 0;
}

/// True when `row_test` holds for some innermost row of `view`.
template <class Element, std::size_t Rank, class RowTest>
[[nodiscard]] bool any_row(const basic_view<Element, Rank>& view, RowTest&& row_test) {
    if constexpr (Rank == 1) {
        return row_test(view.data(), view.extent(0));
    } else {
        for (index_t i = 0; i < view.extent(0); ++i)
            if (any_row(view.slice(i), row_test)) return true;
        return false;
    }
}

}  // namespace detail

/// Every element of `view` must be finite (no NaN, no +-Inf). The scan is vectorised; the
/// position of the first offender is looked up only when there is one.
template <class Element, std::size_t Rank>
requires std::is_floating_point_v<std::remove_cv_t<Element>>
void check_finite(std::string_view function, std::string_view argument, const basic_view<Element, Rank>& view) {
    using value_type = std::remove_cv_t<Element>;
    if (!detail::any_row(view, [](const value_type* x, index_t n) { return detail::any_non_finite(x, n); })) return;
    const auto at = find_first(view, [](auto x) { return !std::isfinite(x); });
    fail(error_kind::value, function, argument, "finite values",
         number_string(std::apply(view, *at)) + " at " + shape_string(*at));
}

/// Every element of a mask must be 0 or 1.
template <class Element, std::size_t Rank>
void check_binary_mask(std::string_view function, std::string_view argument, const basic_view<Element, Rank>& mask) {
    using value_type = std::remove_cv_t<Element>;
    if constexpr (!std::is_same_v<value_type, bool>) {
        if (!detail::any_row(mask, [](const value_type* m, index_t n) { return detail::any_non_binary(m, n); })) return;
        const auto at = find_first(mask, [](value_type m) { return m != value_type{0} && m != value_type{1}; });
        fail(error_kind::value, function, argument, "mask entries 0 or 1",
             number_string(std::apply(mask, *at)) + " at " + shape_string(*at));
    }
}

namespace detail {

/// First and one-past-last address a view touches (`{nullptr, nullptr}` when empty).
template <class Element, std::size_t Rank>
[[nodiscard]] std::pair<const void*, const void*> memory_range(const basic_view<Element, Rank>& v) noexcept {
    if (v.empty()) return {nullptr, nullptr};
    index_t last = 0;
    for (std::size_t d = 0; d < Rank; ++d) last += (v.extent(d) - 1) * v.stride(d);
    return {v.data(), v.data() + last + 1};
}

}  // namespace detail

/// True when two views touch a common address range (conservatively: their address spans overlap).
template <class A, std::size_t RankA, class B, std::size_t RankB>
[[nodiscard]] bool overlaps(const basic_view<A, RankA>& a, const basic_view<B, RankB>& b) noexcept {
    if (a.empty() || b.empty()) return false;
    const auto [a_begin, a_end] = detail::memory_range(a);
    const auto [b_begin, b_end] = detail::memory_range(b);
    const std::less<> less;  // a total order over pointers, unlike <
    return less(a_begin, b_end) && less(b_begin, a_end);
}

/// An output must share no memory with an input; an `rlhf::error` (kind `value`) names the output.
template <class Out, std::size_t RankOut, class In, std::size_t RankIn>
void check_disjoint(std::string_view function, std::string_view argument, const basic_view<Out, RankOut>& out,
                    std::string_view input_argument, const basic_view<In, RankIn>& input) {
    if (overlaps(out, input))
        fail(error_kind::value, function, argument, "no overlap with '" + std::string(input_argument) + "'",
             "overlapping memory");
}

/// An output may be exactly an input (in place) or share no memory with it; any other overlap
/// is an `rlhf::error` (kind `value`) naming the output.
template <class Out, class In, std::size_t Rank>
void check_same_or_disjoint(std::string_view function, std::string_view argument, const basic_view<Out, Rank>& out,
                            std::string_view input_argument, const basic_view<In, Rank>& input) {
    if (!overlaps(out, input)) return;
    const bool identical =
        static_cast<const void*>(out.data()) == static_cast<const void*>(input.data()) &&
        out.extents() == input.extents() && out.strides() == input.strides() &&
        sizeof(typename basic_view<Out, Rank>::value_type) == sizeof(typename basic_view<In, Rank>::value_type);
    if (!identical)
        fail(error_kind::value, function, argument,
             "the memory of '" + std::string(input_argument) + "' itself (in place) or no overlap with it",
             "a partial overlap");
}

/// An option must lie in `[low, high]` (bounds inclusive); reported as a configuration error.
template <class T>
requires std::is_arithmetic_v<T>
void check_in_range(std::string_view function, std::string_view argument, T value, T low, T high) {
    if (!(value >= low && value <= high))  // written so that NaN fails
        fail(error_kind::config, function, argument,
             "a value in [" + number_string(low) + ", " + number_string(high) + "]", number_string(value));
}

/// An option must be strictly positive and finite.
template <class T>
requires std::is_arithmetic_v<T>
void check_positive(std::string_view function, std::string_view argument, T value) {
    bool ok = value > T{0};
    if constexpr (std::is_floating_point_v<T>) ok = ok && std::isfinite(value);
    if (!ok) fail(error_kind::config, function, argument, "a positive finite value", number_string(value));
}

/// An option must be finite and not negative.
template <class T>
requires std::is_arithmetic_v<T>
void check_non_negative(std::string_view function, std::string_view argument, T value) {
    bool ok = value >= T{0};
    if constexpr (std::is_floating_point_v<T>) ok = ok && std::isfinite(value);
    if (!ok) fail(error_kind::config, function, argument, "a non-negative finite value", number_string(value));
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
