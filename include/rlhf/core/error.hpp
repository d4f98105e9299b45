#pragma once
/// @file
/// `rlhf::error`: the one exception type of the library, and the kinds of misuse it reports.

#include <stdexcept>
#include <string>
#include <string_view>

#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// What was wrong with an argument (or, for `state`, with the object used).
enum class error_kind {
    shape,   ///< wrong rank, extents, or mismatched lengths
    dtype,   ///< wrong element type
    device,  ///< tensor on a device the call cannot use
    value,   ///< a value out of its domain: NaN/Inf, a mask entry not in {0,1}, an empty mask
    config,  ///< an option out of range or options that contradict each other
    state,   ///< an object used in a state that does not allow the call
};

/// Name of an error kind, as used in messages ("shape", "dtype", ...).
[[nodiscard]] constexpr std::string_view to_string(error_kind kind) noexcept {
    switch (kind) {
        case error_kind::shape:
            return "shape";
        case error_kind::dtype:
            return "dtype";
        case error_kind::device:
            return "device";
        case error_kind::value:
            return "value";
        case error_kind::config:
            return "config";
        case error_kind::state:
            return "state";
    }
    return "unknown";
}

/// The exception every `rlhf` check throws. It names the function, the argument, and what
/// was expected versus what was given:
/// `rlhf::compute_gae: argument 'values': expected shape [4, 7], got [4, 6]`.
class error : public std::invalid_argument {
public:
    error(error_kind kind, std::string_view function, std::string_view argument, std::string_view expected,
          std::string_view actual)
        : std::invalid_argument(format(kind, function, argument, expected, actual)),
          kind_(kind),
          function_(function),
          argument_(argument),
          expected_(expected),
          actual_(actual) {}

    [[nodiscard]] error_kind kind() const noexcept { return kind_; }
    /// The public function that rejected the input, e.g. `rlhf::compute_gae`.
    [[nodiscard]] const std::string& function() const noexcept { return function_; }
    /// The parameter name as documented, e.g. `values`.
    [[nodiscard]] const std::string& argument() const noexcept { return argument_; }
    [[nodiscard]] const std::string& expected() const noexcept { return expected_; }
    [[nodiscard]] const std::string& actual() const noexcept { return actual_; }

private:
    static std::string format(error_kind kind, std::string_view function, std::string_view argument,
                              std::string_view expected, std::string_view actual) {
        std::string message;
        message.reserve(function.size() + argument.size() + expected.size() + actual.size() + 48);
        message.append(function).append(": argument '").append(argument).append("': expected ");
        if (kind == error_kind::shape) message.append("shape ");
        if (kind == error_kind::dtype) message.append("dtype ");
        if (kind == error_kind::device) message.append("device ");
        message.append(expected);
        if (!actual.empty()) message.append(", got ").append(actual);
        return message;
    }

    error_kind kind_;
    std::string function_;
    std::string argument_;
    std::string expected_;
    std::string actual_;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
