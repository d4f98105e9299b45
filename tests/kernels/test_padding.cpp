#include <doctest/doctest.h>

#include <cmath>
#include <span>
#include <vector>

#include "rlhf/kernels/padding.hpp"
#include "support/test_helpers.hpp"

namespace {

using rows_t = std::vector<std::span<const double>>;

std::vector<double> padded(const rows_t& rows, rlhf::index_t cols, rlhf::padding_side side, double pad = 0.0) {
    std::vector<double> out(rows.size() * static_cast<std::size_t>(cols), -99.0);
    rlhf::pad_sequences(std::span<const std::span<const double>>(rows),
                        rlhf::make_mut_view(out.data(), static_cast<rlhf::index_t>(rows.size()), cols), side, pad);
    return out;
}

}  // namespace

TEST_CASE("pad_sequences: right and left padding of ragged rows" * doctest::test_suite("unit")) {
    const std::vector<double> a{1.0, 2.0, 3.0}, b{4.0}, empty{};
    const rows_t rows{a, b, empty};
    CHECK(padded(rows, 3, rlhf::padding_side::right) == std::vector<double>{1, 2, 3, 4, 0, 0, 0, 0, 0});
    CHECK(padded(rows, 3, rlhf::padding_side::left) == std::vector<double>{1, 2, 3, 0, 0, 4, 0, 0, 0});
    // Wider than the longest row, another pad value; NaN is data and is copied.
    const std::vector<double> nan_row{std::nan("")};
    const auto wide = padded({a, nan_row}, 4, rlhf::padding_side::left, -1.0);
    CHECK(std::vector<double>(wide.begin(), wide.begin() + 4) == std::vector<double>{-1, 1, 2, 3});
    CHECK(wide[4] == -1.0);
    CHECK(std::isnan(wide[7]));
    CHECK(rlhf::parse_option<rlhf::padding_side>("left") == rlhf::padding_side::left);
}

TEST_CASE("pad_sequences: rejects a short output and overlapping memory" * doctest::test_suite("unit")) {
    std::vector<double> a{1.0, 2.0, 3.0}, out(6);
    const rows_t rows{a, a};
    rlhf_test::check_error(
        [&] {
            rlhf::pad_sequences(std::span<const std::span<const double>>(rows), rlhf::make_mut_view(out.data(), 2, 2),
                                rlhf::padding_side::right);
        },
        rlhf::error_kind::shape, "rows");
    rlhf_test::check_error(
        [&] {
            rlhf::pad_sequences(std::span<const std::span<const double>>(rows), rlhf::make_mut_view(out.data(), 1, 6),
                                rlhf::padding_side::right);
        },
        rlhf::error_kind::shape, "out");
    const rows_t inside{std::span<const double>(out).subspan(1, 2)};
    rlhf_test::check_error(
        [&] {
            rlhf::pad_sequences(std::span<const std::span<const double>>(inside), rlhf::make_mut_view(out.data(), 1, 3),
                                rlhf::padding_side::left);
        },
        rlhf::error_kind::value, "out");
}
