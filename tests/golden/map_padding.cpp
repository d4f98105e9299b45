// Golden mappers: see mapping.hpp. Family: ragged rows to a padded matrix.
//
//   colossalchat_v1__coati_math   ColossalChat v1 experience_buffer/utils.py:
//                                 _zero_pad_sequences(sequences, side): zeros on `side`, up to
//                                 the longest sequence

#include <algorithm>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mapping.hpp"
#include "rlhf/kernels/padding.hpp"

namespace rlhf_golden {
namespace {

std::optional<mapped_outputs> colossalchat_v1_zero_pad(const golden_file&, const golden_case& c) {
    if (!c.has_param("side") || !c.has_input("sequences")) return std::nullopt;
    const auto side = rlhf::parse_option<rlhf::padding_side>(c.param<std::string>("side"), "side");
    std::vector<tensor> sequences;  // ragged: one tensor per row
    for (const json& row : c.inputs->at("sequences")) sequences.push_back(parse_tensor(row));
    std::vector<std::span<const double>> rows;
    rlhf::index_t longest = 0;
    for (const tensor& row : sequences) {
        rows.emplace_back(row.data);
        longest = std::max(longest, static_cast<rlhf::index_t>(row.data.size()));
    }
    tensor padded = tensor::zeros({static_cast<rlhf::index_t>(rows.size()), longest});
    rlhf::pad_sequences(std::span<const std::span<const double>>(rows), padded.mut_matrix(), side);
    return single_output("padded", std::move(padded));
}

}  // namespace

void register_padding_mappers(mapper_registry& registry) {
    registry["colossalchat_v1__coati_math"].push_back(colossalchat_v1_zero_pad);
}

}  // namespace rlhf_golden
