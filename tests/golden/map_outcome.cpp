// Golden mappers for the critic-free (outcome) advantage estimators: GRPO, Dr.GRPO, RLOO, OPO,
// REINFORCE++, REINFORCE++-baseline, ReMax, and the cumulative returns they build on. See
// mapping.hpp. Each mapper reads shapes, masks, group ids and parameters from the case and calls the
// kernels on views over the golden tensors (in double); it returns std::nullopt for cases of other
// families that share its file.

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mapping.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"

namespace rlhf_golden {
namespace {

/// Group ids from a list of strings (uids) or numbers. Each distinct string gets an id that is
/// neither contiguous nor sorted (first seen: 7001, then 6988, 6975, ... below zero eventually), so
/// the mappers exercise arbitrary ids; numbers must be integral.
std::vector<std::int64_t> group_ids_of(const golden_case& c, const std::string& key) {
    if (!c.has_input(key)) throw std::runtime_error("golden: case " + c.name + " has no input '" + key + "'");
    std::vector<std::int64_t> ids;
    std::map<std::string, std::int64_t> seen;
    for (const json& item : c.inputs->at(key)) {
        if (item.is_string()) {
            const auto [at, inserted] =
                seen.emplace(item.get<std::string>(), 7001 - 13 * static_cast<std::int64_t>(seen.size()));
            ids.push_back(at->second);
        } else {
            const double value = parse_number(item);
            if (value != std::floor(value)) throw std::runtime_error("golden: non-integral group id in " + c.name);
            ids.push_back(static_cast<std::int64_t>(value));
        }
    }
    return ids;
}

rlhf::view<std::int64_t, 1> ids_view(const std::vector<std::int64_t>& ids) {
    return {ids.data(), {static_cast<rlhf::index_t>(ids.size())}};
}

rlhf::mut_view<double, 1> mut_vector_of(tensor& t) {
    return {t.data.data(), {static_cast<rlhf::index_t>(t.data.size())}};
}

mapped_outputs outputs(tensor advantages, std::optional<tensor> returns = std::nullopt) {
    mapped_outputs out;
    out.relative_tolerance = 1e-9;  // every peer here computes in float64
    out.outputs.emplace("returns", returns ? std::move(*returns) : advantages);
    out.outputs.emplace("advantages", std::move(advantages));
    return out;
}

// verl `verl/trainer/ppo/core_algos.py` outcome estimators, called as
// estimator(token_level_rewards, response_mask, index | config | reward_baselines) -> (adv, returns).
std::optional<mapped_outputs> verl_outcome(const golden_file&, const golden_case& c) {
    if (!c.has_param("estimator")) return std::nullopt;
    const auto estimator = c.param<std::string>("estimator");
    const tensor rewards = c.input("token_level_rewards");
    const tensor mask = c.input("response_mask");
    tensor advantages = tensor::zeros(rewards.shape);
    tensor returns = tensor::zeros(rewards.shape);
    const auto r = rewards.matrix();
    const auto m = mask.matrix();
    if (estimator == "reinforce_plus_plus") {
        rlhf::compute_reinforce_plus_plus_advantages(r, m, advantages.mut_matrix(), returns.mut_matrix(),
                                                     rlhf::reinforce_plus_plus_preset::verl(c.number_param("gamma")));
        return outputs(std::move(advantages), std::move(returns));
    }
    if (estimator == "remax") {
        const tensor baselines = c.input("reward_baselines");
        rlhf::compute_remax_advantages(r, m, baselines.vector(), advantages.mut_matrix(), returns.mut_matrix());
        return outputs(std::move(advantages), std::move(returns));
    }
    const auto ids = group_ids_of(c, "index");
    if (estimator == "grpo") {
        const bool normalize = c.param<bool>("norm_adv_by_std_in_grpo");
        rlhf::compute_grpo_advantages(r, m, ids_view(ids), advantages.mut_matrix(),
                                      {.epsilon = c.number_param("epsilon"), .normalize_by_std = normalize});
        auto out = outputs(std::move(advantages));
        // verl's singleton std is `torch.tensor(1.0)`, a float32 tensor, so it divides by
        // float32(1 + ε) = 1.00000095 (ε = 1e-6); the library divides by 1 + ε in double. Relative
        // difference 4.6e-8: the float32 tolerance applies to cases with a singleton group.
        std::map<std::int64_t, int> sizes;
        for (const auto id : ids) ++sizes[id];
        for (const auto& [id, size] : sizes)
            if (normalize && size == 1) out.relative_tolerance = 1e-7;
        return out;
    } else if (estimator == "rloo") {
        rlhf::compute_rloo_advantages(r, m, ids_view(ids), advantages.mut_matrix());
    } else if (estimator == "opo") {
        rlhf::compute_opo_advantages(r, m, ids_view(ids), advantages.mut_matrix());
        // A group whose rows are all empty has baseline 0 in the library (documented); verl divides
        // 0 by 0 (core_algos.py: compute_opo_outcome_advantage, the length-weighted baseline) and its
        // NaN survives the mask. Those rows are masked everywhere: they hold the peer's NaN here and
        // the case counts under the policy column, not as matched.
        std::map<std::int64_t, double> group_tokens;
        std::map<std::int64_t, int> group_rows;
        const rlhf::index_t cols = m.extent(1);
        for (rlhf::index_t b = 0; b < m.extent(0); ++b) {
            const auto id = ids[static_cast<std::size_t>(b)];
            ++group_rows[id];
            for (rlhf::index_t t = 0; t < cols; ++t) group_tokens[id] += m(b, t);
        }
        bool empty_group = false;
        for (rlhf::index_t b = 0; b < m.extent(0); ++b) {
            const auto id = ids[static_cast<std::size_t>(b)];
            if (group_rows[id] < 2 || group_tokens[id] != 0.0) continue;
            empty_group = true;
            for (rlhf::index_t t = 0; t < cols; ++t)
                advantages.data[static_cast<std::size_t>(b * cols + t)] = std::numeric_limits<double>::quiet_NaN();
        }
        auto out = outputs(std::move(advantages));
        if (empty_group) out.refused_non_finite = {"advantages", "returns"};
        return out;
    } else if (estimator == "reinforce_plus_plus_baseline") {
        rlhf::compute_reinforce_plus_plus_baseline_advantages(r, m, ids_view(ids), advantages.mut_matrix(),
                                                              returns.mut_matrix(),
                                                              rlhf::reinforce_plus_plus_baseline_preset::verl());
    } else {
        return std::nullopt;
    }
    return outputs(std::move(advantages));  // verl returns the advantages twice
}

// OpenRLHF `RemoteExperienceMaker.get_cumulative_returns(rewards, action_mask, gamma)`
// (`openrlhf/trainer/ppo_utils/experience_maker.py`). The GAE cases of the file (`lambd`, `values`)
// and the KL-controller cases are other families'.
std::optional<mapped_outputs> openrlhf_cumulative_returns(const golden_file&, const golden_case& c) {
    if (!c.has_param("gamma") || c.has_param("lambd") || c.has_input("values") || !c.has_input("rewards") ||
        !c.has_input("action_mask"))
        return std::nullopt;
    const tensor rewards = c.input("rewards");
    const tensor mask = c.input("action_mask");
    tensor returns = tensor::zeros(rewards.shape);
    rlhf::compute_cumulative_returns(rewards.matrix(), mask.matrix(), returns.mut_matrix(),
                                     {.gamma = c.number_param("gamma"), .masking = rlhf::return_masking::zero_masked});
    mapped_outputs out;
    out.outputs.emplace("returns", std::move(returns));
    return out;
}

// ChatLearn `AdvantageComputer(num_inference_per_prompt)` (`chatlearn/algorithm/grpo_utils/
// advantage_compute.py`): (r − np.mean) / (np.std + 1e-5) per prompt_uid over one call's buffer.
// The loss, legacy GAE and KL-controller cases of the file are other families'.
std::optional<mapped_outputs> chatlearn_grpo_advantage(const golden_file&, const golden_case& c) {
    if (!c.has_input("rule_reward") || !c.has_input("prompt_uid")) return std::nullopt;
    const tensor rewards = c.input("rule_reward");
    const auto ids = group_ids_of(c, "prompt_uid");
    tensor advantages = tensor::zeros(rewards.shape);
    rlhf::compute_grpo_advantages(rewards.vector(), ids_view(ids), mut_vector_of(advantages),
                                  rlhf::grpo_preset::chatlearn());
    return single_output("advantages", std::move(advantages));
}

}  // namespace

void register_outcome_mappers(mapper_registry& registry) {
    registry["verl__outcome_advantage_estimators"].push_back(verl_outcome);
    registry["openrlhf__gae_cumulative_returns_kl_ctl"].push_back(openrlhf_cumulative_returns);
    registry["chatlearn__grpo_loss_advantage_and_legacy_ppo_gae"].push_back(chatlearn_grpo_advantage);
}

}  // namespace rlhf_golden
