// Golden mappers of the logits family: token log-probs and entropy from logits, the
// full-vocabulary KL, and the pairwise reward-model losses. See mapping.hpp.
//
// Each mapper decides from the case's inputs and params whether the case is one of ours (files
// such as trl_v0114__core_masked_stats hold other families too) and returns std::nullopt
// otherwise.
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "mapping.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/reward_model_loss.hpp"

namespace rlhf_golden {
namespace {

// Token ids stored as doubles in the golden data.
std::vector<std::int64_t> token_ids(const tensor& labels) {
    std::vector<std::int64_t> ids(labels.data.size());
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(std::llround(labels.data[i]));
    return ids;
}

rlhf::view<std::int64_t> ids_view(const std::vector<std::int64_t>& ids, const tensor& logits) {
    return rlhf::make_view(ids.data(), logits.dim(0), logits.dim(1));
}

tensor bt_zeros(const tensor& logits) {
    return tensor::zeros({logits.dim(0), logits.dim(1)});
}

bool has_inputs(const golden_case& c, std::initializer_list<const char*> names) {
    for (const char* name : names)
        if (!c.has_input(name)) return false;
    return true;
}

// TRL trl/core.py (v0.11.4) entropy_from_logits(logits) and logprobs_from_logits(logits, labels).
std::optional<mapped_outputs> map_trl_logits(const golden_file&, const golden_case& c) {
    if (!has_inputs(c, {"logits", "labels"})) return std::nullopt;
    const tensor logits = c.input("logits");
    const auto ids = token_ids(c.input("labels"));
    tensor logprobs = bt_zeros(logits), entropy = bt_zeros(logits);
    rlhf::logprobs_from_logits(logits.cube(), ids_view(ids, logits), logprobs.mut_matrix(), entropy.mut_matrix());
    mapped_outputs out;
    out.outputs["logprobs_from_logits"] = logprobs;
    out.outputs["entropy_from_logits"] = entropy;
    return out;
}

// TRL PPOTrainer._kl_penalty(logprob, ref_logprob) with kl_penalty='full' on [B, T, V]
// log-distributions: log-probs are logits whose log-sum-exp is 0.
std::optional<mapped_outputs> map_trl_full_kl(const golden_file&, const golden_case& c) {
    if (c.param_or<std::string>("kl_penalty", "") != "full") return std::nullopt;
    const tensor policy = c.input("logprob");
    const tensor reference = c.input("ref_logprob");
    if (policy.rank() != 3) return std::nullopt;
    tensor kl = bt_zeros(policy);
    rlhf::full_kl_from_logits(policy.cube(), reference.cube(), kl.mut_matrix());
    mapped_outputs out;
    out.outputs["kl"] = kl;
    return out;
}

// DeepSpeed-Chat gather_log_probs(logits, labels).
std::optional<mapped_outputs> map_dschat_gather(const golden_file&, const golden_case& c) {
    if (!has_inputs(c, {"logits", "labels"})) return std::nullopt;
    const tensor logits = c.input("logits");
    const auto ids = token_ids(c.input("labels"));
    tensor logprobs = bt_zeros(logits);
    rlhf::logprobs_from_logits(logits.cube(), ids_view(ids, logits), logprobs.mut_matrix());
    mapped_outputs out;
    out.outputs["log_probs"] = logprobs;
    return out;
}

// verl compute_entropy_loss(logits, response_mask, loss_agg_mode) = agg_loss(entropy_from_logits(logits)).
// Its value-loss cases (no logits) belong to the losses family.
std::optional<mapped_outputs> map_verl_entropy(const golden_file&, const golden_case& c) {
    if (!has_inputs(c, {"logits", "response_mask"}) || !c.has_param("loss_agg_mode")) return std::nullopt;
    const tensor logits = c.input("logits");
    const tensor mask = c.input("response_mask");
    tensor entropy = bt_zeros(logits);
    rlhf::entropy_from_logits(logits.cube(), mask.matrix(), entropy.mut_matrix());
    // verl agg_loss with its defaults: local token / row counts, loss_scale_factor = T.
    const auto mode = rlhf::parse_option<rlhf::loss_aggregation>(c.param<std::string>("loss_agg_mode"));
    const double value = rlhf::aggregate(entropy.matrix(), mask.matrix(), {}, {.mode = mode});
    mapped_outputs out;
    out.outputs["entropy_loss"] = tensor::of_scalar(value);
    return out;
}

// Pairwise reward-model losses on chosen_reward / reject_reward [N].
struct rm_losses {
    double logsigmoid = 0.0;
    double log_exp = 0.0;
    /// The peers compute log(1 + exp(r - c)) literally, which is +inf once some r - c exceeds
    /// log(DBL_MAX); the library's stable form stays finite, so such a case compares only the
    /// other loss (OpenRLHF `openrlhf/models/loss.py: LogExpLoss`, ColossalChat `LogExpLoss`).
    bool peer_log_exp_overflows = false;
};

std::optional<rm_losses> reward_losses(const golden_case& c) {
    if (!has_inputs(c, {"chosen_reward", "reject_reward"})) return std::nullopt;
    const tensor chosen = c.input("chosen_reward");
    const tensor rejected = c.input("reject_reward");
    const double margin = c.has_param("margin") ? c.number_param("margin") : 0.0;
    rm_losses out;
    out.logsigmoid =
        rlhf::pairwise_logsigmoid_loss(chosen.vector(), rejected.vector(), {}, {}, {.margin = margin}).loss;
    out.log_exp = rlhf::log_exp_loss(chosen.vector(), rejected.vector()).loss;
    for (std::size_t i = 0; i < chosen.data.size(); ++i)
        out.peer_log_exp_overflows = out.peer_log_exp_overflows ||
                                     rejected.data[i] - chosen.data[i] > std::log(std::numeric_limits<double>::max());
    return out;
}

// OpenRLHF PairWiseLoss()(chosen, reject, margin) and LogExpLoss()(chosen, reject).
std::optional<mapped_outputs> map_openrlhf_rm(const golden_file&, const golden_case& c) {
    const auto losses = reward_losses(c);
    if (!losses) return std::nullopt;
    mapped_outputs out;
    out.outputs["pairwise_logsigmoid"] = tensor::of_scalar(losses->logsigmoid);
    if (losses->peer_log_exp_overflows)
        out.refused_non_finite.push_back("log_exp");
    else
        out.outputs["log_exp"] = tensor::of_scalar(losses->log_exp);
    return out;
}

// ColossalChat v1/v2 LogSigLoss()(chosen, reject) and LogExpLoss()(chosen, reject). v1's
// −log(σ(·)) equals the stable form wherever it is finite (every case in the files).
std::optional<mapped_outputs> map_colossal_rm(const golden_file&, const golden_case& c) {
    const auto losses = reward_losses(c);
    if (!losses) return std::nullopt;
    mapped_outputs out;
    out.outputs["LogSigLoss"] = tensor::of_scalar(losses->logsigmoid);
    if (losses->peer_log_exp_overflows)
        out.refused_non_finite.push_back("LogExpLoss");
    else
        out.outputs["LogExpLoss"] = tensor::of_scalar(losses->log_exp);
    return out;
}

}  // namespace

void register_logits_mappers(mapper_registry& registry) {
    registry["trl_v0114__core_masked_stats"].push_back(map_trl_logits);
    registry["trl_v0114__ppo_kl_penalty"].push_back(map_trl_full_kl);
    registry["dschat__ppo_trainer_math"].push_back(map_dschat_gather);
    registry["verl__value_and_entropy_loss"].push_back(map_verl_entropy);
    registry["openrlhf__reward_model_losses"].push_back(map_openrlhf_rm);
    registry["colossalchat_v1__coati_math"].push_back(map_colossal_rm);
    registry["colossalchat_v2__ppo_math"].push_back(map_colossal_rm);
}

}  // namespace rlhf_golden
