#pragma once
/// @file
/// Argument checks. Each one throws `rlhf::error` naming the function, the argument, what was
/// expected and what was given, so bad input never turns into UB or a silent NaN.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

#include "rlhf/core/error.hpp"
#include "rlhf/core/view.hpp"

namespace rlhf {

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

/// Every element of `view` must be finite (no NaN, no +-Inf).
template <class Element, std::size_t Rank>
requires std::is_floating_point_v<std::remove_cv_t<Element>>
void check_finite(std::string_view function, std::string_view argument, const basic_view<Element, Rank>& view) {
    const auto at = find_first(view, [](auto x) { return !std::isfinite(x); });
    if (at)
        fail(error_kind::value, function, argument, "finite values",
             number_string(std::apply(view, *at)) + " at " + shape_string(*at));
}

/// Every element of a mask must be 0 or 1.
template <class Element, std::size_t Rank>
void check_binary_mask(std::string_view function, std::string_view argument, const basic_view<Element, Rank>& mask) {
    using value_type = std::remove_cv_t<Element>;
    if constexpr (!std::is_same_v<value_type, bool>) {
        const auto at = find_first(mask, [](value_type m) { return m != value_type{0} && m != value_type{1}; });
        if (at)
            fail(error_kind::value, function, argument, "mask entries 0 or 1",
                 number_string(std::apply(mask, *at)) + " at " + shape_string(*at));
    }
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

}  // namespace rlhf
