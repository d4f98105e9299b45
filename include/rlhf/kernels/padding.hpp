#pragma once
/// @file
/// Ragged rows to a padded `[B, T]` matrix, the layout every other kernel takes: a rollout
/// buffer's variable-length responses, log-probs or values batched for a loss.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Writes row b of `rows` into row b of `out`, from column 0 (`padding_side::right`) or ending at
/// the last column (`padding_side::left`), and `pad` everywhere else; a mask of the same layout is
/// the same call on rows of ones.
///
/// Shapes: `out` `[B, T]` with B = `rows.size()` and T at least the longest row. The values are
/// copied as they are (NaN included: padding moves data, it computes nothing).
/// @note ColossalChat v1 `coati/experience_buffer/utils.py: _zero_pad_sequences(sequences, side)`
///       is `pad = 0` with T = the longest row.
template <class T>
void pad_sequences(std::span<const std::span<const T>> rows, mut_view<T> out, padding_side side, T pad = T{0}) {
    constexpr std::string_view fn = "rlhf::pad_sequences";
    check_length(fn, "out", out.extent(0), static_cast<index_t>(rows.size()), "one row per sequence of 'rows'");
    const index_t cols = out.extent(1);
    for (std::size_t b = 0; b < rows.size(); ++b) {
        const auto length = static_cast<index_t>(rows[b].size());
        if (length > cols)
            fail(error_kind::shape, fn, "rows",
                 "rows of at most " + std::to_string(cols) + " values (the columns of 'out')",
                 "row " + std::to_string(b) + " of " + std::to_string(length) + " values");
        check_disjoint(fn, "out", out, "rows", view<T, 1>{rows[b].data(), {length}});
    }
    for (std::size_t b = 0; b < rows.size(); ++b) {
        const auto length = static_cast<index_t>(rows[b].size());
        T* row = out.row(static_cast<index_t>(b)).data();
        const index_t first = side == padding_side::left ? cols - length : 0;
        std::fill(row, row + first, pad);
        std::copy(rows[b].begin(), rows[b].end(), row + first);
        std::fill(row + first + length, row + cols, pad);
    }
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
