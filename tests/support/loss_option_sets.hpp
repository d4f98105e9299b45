#pragma once
// Option sets that the value-loss and KL-loss tests (kernels and LibTorch) sweep.
#include <optional>
#include <vector>

#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"

namespace rlhf_test {

/// Every aggregation mode clipped and unclipped, OpenRL's Huber, Huber unclipped, ColossalChat v2's
/// returns from advantages, chatllama's clip range with TRL's coefficient.
inline std::vector<rlhf::value_loss_options> value_option_sets() {
    std::vector<rlhf::value_loss_options> sets;
    for (const auto mode :
         {rlhf::loss_aggregation::token_mean, rlhf::loss_aggregation::seq_mean_token_mean,
          rlhf::loss_aggregation::seq_mean_token_sum, rlhf::loss_aggregation::seq_mean_token_sum_norm}) {
        sets.push_back({.clip_range = 0.2, .aggregation = {.mode = mode}});
        sets.push_back({.clip_range = std::nullopt, .aggregation = {.mode = mode}});
    }
    sets.push_back({.clip_range = 0.3, .huber_delta = 1.5, .coef = 0.5});  // OpenRL
    sets.push_back({.clip_range = std::nullopt, .huber_delta = 0.7});      // Huber, unclipped
    sets.push_back({.clip_range = 0.2, .returns_from_advantages = true});  // ColossalChat v2
    sets.push_back({.clip_range = 0.5, .scale = 1.0, .coef = 0.1});        // chatllama, TRL coef
    return sets;
}

/// Every estimator under TRL's, verl's (coefficient `verl_coef`) and OpenRLHF's presets, with
/// both clamps, and straight-through; ChatLearn's preset.
inline std::vector<rlhf::kl_loss_options> kl_option_sets(double verl_coef) {
    std::vector<rlhf::kl_loss_options> sets;
    for (const auto e :
         {rlhf::kl_estimator::k1, rlhf::kl_estimator::abs, rlhf::kl_estimator::k2, rlhf::kl_estimator::k3}) {
        sets.push_back({.kl = rlhf::kl_preset::trl(e)});
        sets.push_back({.kl = rlhf::kl_preset::verl(e), .coef = verl_coef});
        sets.push_back(
            {.kl = rlhf::kl_preset::openrlhf(e), .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean}});
        sets.push_back({.kl = {.estimator = e, .log_ratio_clamp = 3.0, .value_clamp = 2.0},
                        .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_sum}});
        sets.push_back({.kl = rlhf::kl_preset::verl(e),
                        .straight_through = true,
                        .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_sum_norm}});
    }
    sets.push_back({.kl = rlhf::kl_preset::chatlearn(), .coef = 0.5});
    return sets;
}

}  // namespace rlhf_test
