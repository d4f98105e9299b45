#pragma once
/// @file
/// Options of loss aggregation (kernels/loss_aggregation.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include <optional>

#include "rlhf/core/options.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Options of loss aggregation (designated initialisers:
/// `rlhf::aggregation_options{.mode = rlhf::loss_aggregation::seq_mean_token_mean}`).
struct aggregation_options {
    /// Which reduction (see the table in this file's comment).
    loss_aggregation mode = loss_aggregation::token_mean;
    /// Token count of the global batch for `token_mean` (verl/OpenRLHF `batch_num_tokens`).
    /// Unset: `Σ m` summed by the reducer.
    std::optional<double> global_token_count{};
    /// Row count of the global batch for the `seq_mean_*` modes (verl/OpenRLHF
    /// `global_batch_size`). Unset: the number of rows with a valid token, summed by the reducer.
    std::optional<double> global_sequence_count{};
    /// Constant divisor of `seq_mean_token_sum_norm` (verl `loss_scale_factor`). Unset: T, the
    /// mask's column count (verl's default; it depends on the padding width).
    std::optional<double> normalizer{};
    /// Data-parallel world size; multiplies every mode except `seq_mean_token_sum_norm` (verl).
    double dp_size = 1.0;
    /// ε added to each row's token count in `seq_mean_token_mean` (verl, OpenRLHF, ColossalChat: 1e-8).
    double token_count_epsilon = 1e-8;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
