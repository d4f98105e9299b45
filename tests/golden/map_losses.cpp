// Golden mappers (see mapping.hpp) of the policy loss and loss aggregation
// (rlhf/kernels/{policy_loss,loss_aggregation}.hpp); a mapper returns std::nullopt for the
// cases of other families in the same file.
//
//
//   trl_v0114__ppo_loss              TRL v0.11.4 PPOTrainer.loss: pg_loss and the policy stats
//                                    (approxkl, policykl, clipfrac); token-mean, no clamp,
//                                    ratio_threshold skip. The value part is the value family's
//                                    (see map_trl_ppo_loss_value_part), merged into one answer.
//   verl__compute_policy_loss        verl compute_policy_loss / compute_policy_loss_vanilla:
//                                    ±20 log-ratio clamp, dual clip c = clip_ratio_c, agg_loss.
//                                    verl's metrics divide by (count + 1e-8): reproduced here.
//   verl__agg_loss                   verl agg_loss: every mode, dp_size, batch_num_tokens,
//                                    global_batch_size, loss_scale_factor.
//   openrlhf__policy_value_aggregate OpenRLHF PolicyLoss (ppo: ±20 clamp, optional dual clip;
//                                    gspo: sequence ratio, no clamp, seq-mean-token-mean) and
//                                    aggregate_loss (its 'loss'; masked_normalize is the
//                                    statistics family's). ValueLoss cases: value family.
//   dschat__ppo_trainer_math         DeepSpeed-Chat actor_loss_fn: masked log-ratio, token-mean.
//   colossalchat_v1__coati_math      Coati v1 PolicyLoss: masked log-ratio, per-row masked mean
//                                    (+1e-8) then the mean over all B rows.
//   colossalchat_v2__ppo_math        ColossalChat v2 PolicyLoss: masked log-ratio, ratio clamp
//                                    [0, 10], per-row masked mean without epsilon then the mean
//                                    over B rows, skip flag (mean over all positions > threshold),
//                                    ratio_.max() over all positions (padding has ratio 1); and
//                                    distributed GRPO PolicyLoss: clip-higher, + beta * the given
//                                    per_token_kl (no KL is computed here), sample_level =
//                                    seq-mean-token-mean over B rows, token_level = sum /
//                                    (total_effective_tokens + 1e-8).
//   chatlearn__grpo_loss_advantage_and_legacy_ppo_gae
//                                    ChatLearn calculate_grpo_loss: per-token loss, upper
//                                    log-ratio clamp (diff_clip_ratio), constant loss cap
//                                    (final_clip_ratio); advantages per row, built as float32
//                                    tensors by the peer (rounded to float here).
//
// Family "value loss": see its section at the end of the file.

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mapping.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "value_loss_mapping.hpp"

namespace rlhf_golden {
namespace {

using rlhf::index_t;

// =============================================================================================
// Family: policy loss and loss aggregation
// =============================================================================================

/// The four `[B, T]` inputs of a policy-loss call, read under the peer's names.
struct policy_inputs {
    tensor log_probs, old_log_probs, advantages, mask;
};

policy_inputs read_policy_inputs(const golden_case& c, const char* log_probs, const char* old_log_probs,
                                 const char* advantages, const char* mask) {
    return {c.input(log_probs), c.input(old_log_probs), c.input(advantages), c.input(mask)};
}

rlhf::policy_loss_result run_policy(const policy_inputs& in, const rlhf::policy_loss_options& options,
                                    tensor* token_losses = nullptr) {
    rlhf::mut_view<double> tokens{};
    if (token_losses != nullptr) {
        *token_losses = tensor::zeros(in.log_probs.shape);
        tokens = token_losses->mut_matrix();
    }
    return rlhf::policy_loss(in.log_probs.matrix(), in.old_log_probs.matrix(), in.advantages.matrix(), in.mask.matrix(),
                             rlhf::mut_view<double>{}, tokens, options);
}

/// Whether any position of the mask is 0 (padding: ratio 1 under a masked log-ratio).
bool has_padding(const tensor& mask) {
    return std::any_of(mask.data.begin(), mask.data.end(), [](double m) { return m == 0.0; });
}

/// verl's metrics are masked means with (count + 1e-8) in the denominator.
double verl_mean(double exact_mean, double count) {
    return exact_mean * count / (count + 1e-8);
}

// TRL v0.11.4 trl/trainer/ppo_trainer.py PPOTrainer.loss, policy part.
std::optional<mapped_outputs> map_trl_ppo_loss_policy(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("cliprange") || !c.has_input("logprobs")) return std::nullopt;
    const double clip = c.number_param("cliprange");
    const rlhf::policy_loss_options options{
        .clip_low = clip, .clip_high = clip, .ratio_threshold = c.number_param("ratio_threshold")};
    const auto r = run_policy(read_policy_inputs(c, "logprobs", "old_logprobs", "advantages", "mask"), options);
    mapped_outputs out;
    out.outputs["pg_loss"] = tensor::of_scalar(r.loss);
    out.outputs["stats.policy/approxkl"] = tensor::of_scalar(r.stats.approx_kl);
    out.outputs["stats.policy/policykl"] = tensor::of_scalar(r.stats.policy_kl);
    out.outputs["stats.policy/clipfrac"] = tensor::of_scalar(r.stats.clip_fraction);
    // TRL's policy/entropy: masked_mean(entropy_from_logits(logits), mask) = token-mean.
    if (c.has_input("logits")) {
        const tensor logits = c.input("logits");
        const tensor mask = c.input("mask");
        tensor entropy = tensor::zeros({logits.dim(0), logits.dim(1)});
        rlhf::entropy_from_logits(logits.cube(), mask.matrix(), entropy.mut_matrix());
        out.outputs["stats.policy/entropy"] = tensor::of_scalar(
            rlhf::aggregate(entropy.matrix(), mask.matrix(), {}, {.mode = rlhf::loss_aggregation::token_mean}));
    }
    // TRL zeroes the whole minibatch loss on a skip, value part included.
    out.outputs["policy_skipped"] = tensor::of_scalar(r.stats.ratio_threshold_exceeded ? 1.0 : 0.0);
    return out;
}

// Value part of TRL's PPOTrainer.loss (vf_loss_times_vf_coef, val/*, returns/*), merged below.
std::optional<mapped_outputs> map_trl_ppo_loss_value_part(const golden_file& file, const golden_case& c);

// One answer per TRL case: the policy part, plus the value part when it is mapped. On a skip
// (ratio_threshold) TRL multiplies both parts by 0; 'stats.loss/total' is their sum.
std::optional<mapped_outputs> map_trl_ppo_loss(const golden_file& file, const golden_case& c) {
    auto policy = map_trl_ppo_loss_policy(file, c);
    if (!policy) return std::nullopt;
    const bool skipped = policy->outputs.at("policy_skipped").scalar() != 0.0;
    policy->outputs.erase("policy_skipped");
    if (const auto value = map_trl_ppo_loss_value_part(file, c)) {
        for (const auto& [name, t] : value->outputs) policy->outputs[name] = t;
        policy->relative_tolerance = std::max(policy->relative_tolerance, value->relative_tolerance);
        const auto vf = value->outputs.find("vf_loss_times_vf_coef");
        if (vf != value->outputs.end()) {
            if (skipped) policy->outputs["vf_loss_times_vf_coef"] = tensor::of_scalar(0.0);
            policy->outputs["stats.loss/total"] = tensor::of_scalar(
                policy->outputs.at("pg_loss").scalar() + policy->outputs.at("vf_loss_times_vf_coef").scalar());
        }
    }
    // The value part leaves out val/var and returns/var under two valid tokens (the library
    // refuses the unbiased variance of one element; TRL gives NaN): report them as refused.
    for (const char* name : {"stats.val/var", "stats.returns/var"}) {
        const auto expected = c.outputs.find(name);
        if (policy->outputs.count(name) == 0 && expected != c.outputs.end()) {
            for (double x : expected->second.data)
                if (std::isfinite(x))
                    throw std::runtime_error(std::string("golden: ") + name + " not mapped for a finite peer value");
            policy->refused_non_finite.push_back(name);
        }
    }
    return policy;
}

// verl verl/trainer/ppo/core_algos.py compute_policy_loss (deprecated, explicit arguments) and
// compute_policy_loss_vanilla (config): clamp ±20, dual clip c (applied where A < 0), agg_loss.
std::optional<mapped_outputs> map_verl_policy_loss(const golden_file& /*file*/, const golden_case& c) {
    const std::string api = c.param_or<std::string>("api", "");
    double clip_low = 0.0, clip_high = 0.0;
    if (api == "compute_policy_loss") {
        const double clip = c.number_param("cliprange");
        clip_low = c.has_param("cliprange_low") ? c.number_param("cliprange_low") : clip;
        clip_high = c.has_param("cliprange_high") ? c.number_param("cliprange_high") : clip;
    } else if (api == "compute_policy_loss_vanilla") {
        const double clip = c.number_param("clip_ratio");
        clip_low = c.has_param("clip_ratio_low") ? c.number_param("clip_ratio_low") : clip;
        clip_high = c.has_param("clip_ratio_high") ? c.number_param("clip_ratio_high") : clip;
    } else {
        return std::nullopt;
    }
    const rlhf::policy_loss_options options{
        .clip_low = clip_low,
        .clip_high = clip_high,
        .dual_clip = c.has_param("clip_ratio_c") ? c.number_param("clip_ratio_c") : 3.0,
        .log_ratio_min = -20.0,
        .log_ratio_max = 20.0,
        .aggregation = {.mode = rlhf::parse_option<rlhf::loss_aggregation>(
                            c.param_or<std::string>("loss_agg_mode", "token-mean"), "loss_agg_mode")}};
    const auto r =
        run_policy(read_policy_inputs(c, "log_prob", "old_log_prob", "advantages", "response_mask"), options);
    const double n = r.stats.valid_tokens;
    const std::string prefix = api == "compute_policy_loss" ? "" : "metrics.actor/";
    mapped_outputs out;
    out.outputs["pg_loss"] = tensor::of_scalar(r.loss);
    out.outputs[prefix + "pg_clipfrac"] = tensor::of_scalar(verl_mean(r.stats.clip_fraction, n));
    out.outputs[prefix + "ppo_kl"] = tensor::of_scalar(verl_mean(r.stats.policy_kl_clamped, n));
    out.outputs[prefix + "pg_clipfrac_lower"] = tensor::of_scalar(verl_mean(r.stats.clip_fraction_lower, n));
    return out;
}

// verl agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size, batch_num_tokens,
// global_batch_size, loss_scale_factor).
std::optional<mapped_outputs> map_verl_agg_loss(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("loss_agg_mode") || !c.has_input("loss_mat")) return std::nullopt;
    rlhf::aggregation_options options{
        .mode = rlhf::parse_option<rlhf::loss_aggregation>(c.param<std::string>("loss_agg_mode"), "loss_agg_mode"),
        .dp_size = c.has_param("dp_size") ? c.number_param("dp_size") : 1.0};
    if (c.has_param("batch_num_tokens")) options.global_token_count = c.number_param("batch_num_tokens");
    if (c.has_param("global_batch_size")) options.global_sequence_count = c.number_param("global_batch_size");
    if (c.has_param("loss_scale_factor")) options.normalizer = c.number_param("loss_scale_factor");
    const tensor loss = c.input("loss_mat");
    const tensor mask = c.input("loss_mask");
    mapped_outputs out;
    out.outputs["loss"] = tensor::of_scalar(rlhf::aggregate(loss.matrix(), mask.matrix(), {}, options));
    return out;
}

// OpenRLHF openrlhf/models/loss.py PolicyLoss(clip_eps_low, clip_eps_high, dual_clip,
// token_level_loss, policy_loss_type)(log_probs, old_log_probs, advantages, action_mask).
std::optional<mapped_outputs> map_openrlhf_policy(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("clip_eps_low") || !c.has_input("log_probs")) return std::nullopt;
    const std::string type = c.param_or<std::string>("policy_loss_type", "ppo");
    const bool gspo = type == "gspo";
    if (!gspo && type != "ppo") return std::nullopt;
    const bool token_level = !gspo && c.param_or<bool>("token_level_loss", true);  // gspo forces False
    rlhf::policy_loss_options options{
        .clip_low = c.number_param("clip_eps_low"),
        .clip_high = c.number_param("clip_eps_high"),
        .level = gspo ? rlhf::importance_ratio_level::sequence : rlhf::importance_ratio_level::token,
        .aggregation = {.mode = token_level ? rlhf::loss_aggregation::token_mean
                                            : rlhf::loss_aggregation::seq_mean_token_mean}};
    if (c.has_param("dual_clip")) options.dual_clip = c.number_param("dual_clip");
    if (!gspo) {  // the gspo path computes the clamp and never uses it (OpenRLHF PR #1293)
        options.log_ratio_min = -20.0;
        options.log_ratio_max = 20.0;
    }
    const auto r =
        run_policy(read_policy_inputs(c, "log_probs", "old_log_probs", "advantages", "action_mask"), options);
    mapped_outputs out;
    out.outputs["loss"] = tensor::of_scalar(r.loss);
    out.outputs["clip_ratio"] = tensor::of_scalar(r.stats.clip_fraction);
    out.outputs["ppo_kl"] = tensor::of_scalar(r.stats.policy_kl);
    return out;
}

// OpenRLHF aggregate_loss(loss, loss_mask, token_level_loss): the masked mean over all tokens,
// or the mean over non-empty rows of the per-row mean (+1e-8).
std::optional<mapped_outputs> map_openrlhf_aggregate(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_input("loss") || !c.has_input("loss_mask") || c.has_param("clip_eps")) return std::nullopt;
    const bool token_level = c.param_or<bool>("token_level_loss", true);
    const rlhf::aggregation_options options{.mode = token_level ? rlhf::loss_aggregation::token_mean
                                                                : rlhf::loss_aggregation::seq_mean_token_mean};
    const tensor loss = c.input("loss");
    const tensor mask = c.input("loss_mask");
    mapped_outputs out;
    out.outputs["loss"] = tensor::of_scalar(rlhf::aggregate(loss.matrix(), mask.matrix(), {}, options));
    return out;
}

// DeepSpeed-Chat dschat/rlhf/ppo_trainer.py actor_loss_fn(logprobs, old_logprobs, advantages, mask):
// ratio = exp((lp - old) * mask), sum(max(pg1, pg2) * mask) / sum(mask).
std::optional<mapped_outputs> map_dschat_actor_loss(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("cliprange") || !c.has_input("logprobs")) return std::nullopt;
    const double clip = c.number_param("cliprange");
    const rlhf::policy_loss_options options{.clip_low = clip, .clip_high = clip, .mask_log_ratio = true};
    const auto r = run_policy(read_policy_inputs(c, "logprobs", "old_logprobs", "advantages", "mask"), options);
    mapped_outputs out;
    out.outputs["pg_loss"] = tensor::of_scalar(r.loss);
    return out;
}

// ColossalChat v1 applications/Chat/coati/models/loss.py PolicyLoss(clip_eps): masked log-ratio,
// masked_mean per row (sum / (count + 1e-8)), then .mean() over all B rows.
std::optional<mapped_outputs> map_colossalchat_v1_policy(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("clip_eps") || !c.has_input("old_log_probs")) return std::nullopt;
    const policy_inputs in = read_policy_inputs(c, "log_probs", "old_log_probs", "advantages", "action_mask");
    const double clip = c.number_param("clip_eps");
    const rlhf::policy_loss_options options{
        .clip_low = clip,
        .clip_high = clip,
        .mask_log_ratio = true,
        .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean,
                        .global_sequence_count = static_cast<double>(in.log_probs.dim(0))}};
    mapped_outputs out;
    out.outputs["loss"] = tensor::of_scalar(run_policy(in, options).loss);
    return out;
}

// ColossalChat v2 applications/ColossalChat/coati/models/loss.py PolicyLoss(clip_eps,
// skip_threshold) -> (loss, skip, ratio_.max()), and coati/distributed/loss.py
// PolicyLoss(clip_eps_low, clip_eps_high, beta, loss_variation) -> (loss, ratio.max()).
std::optional<mapped_outputs> map_colossalchat_v2_policy(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_input("old_log_probs") || !c.has_input("advantages")) return std::nullopt;
    const policy_inputs in = read_policy_inputs(c, "log_probs", "old_log_probs", "advantages", "action_mask");
    const double rows = static_cast<double>(in.log_probs.dim(0));
    // ratio_ = exp((lp - old) * mask) everywhere: padding positions have ratio exactly 1.
    const auto all_positions_max = [&](double valid_max) {
        return has_padding(in.mask) ? std::max(valid_max, 1.0) : valid_max;
    };
    mapped_outputs out;
    if (c.has_param("skip_threshold")) {
        const double clip = c.number_param("clip_eps");
        const rlhf::policy_loss_options options{.clip_low = clip,
                                                .clip_high = clip,
                                                .ratio_cap = 10.0,
                                                .mask_log_ratio = true,
                                                .skip_threshold = c.number_param("skip_threshold"),
                                                // coati/models/utils.py masked_mean at the pinned commit: sum / count,
                                                // no epsilon (an empty row is NaN there, 0 here).
                                                .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean,
                                                                .global_sequence_count = rows,
                                                                .token_count_epsilon = 0.0}};
        const auto r = run_policy(in, options);
        out.outputs["loss"] = tensor::of_scalar(r.loss);
        out.outputs["skip"] = tensor::of_scalar(r.stats.skip_threshold_exceeded ? 1.0 : 0.0);
        out.outputs["ratio_max"] = tensor::of_scalar(all_positions_max(r.stats.ratio_max));
        return out;
    }
    if (!c.has_param("loss_variation")) return std::nullopt;
    const std::string variation = c.param<std::string>("loss_variation");
    rlhf::aggregation_options aggregation;
    if (variation == "sample_level") {
        aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean, .global_sequence_count = rows};
    } else if (variation == "token_level") {
        aggregation = {.global_token_count = c.input("total_effective_tokens_in_batch").scalar() + 1e-8};
    } else {
        return std::nullopt;
    }
    const rlhf::policy_loss_options options{.clip_low = c.number_param("clip_eps_low"),
                                            .clip_high = c.number_param("clip_eps_high"),
                                            .mask_log_ratio = true,
                                            .aggregation = aggregation};
    const auto r = run_policy(in, options);
    double loss = r.loss;
    const double beta = c.number_param("beta");
    if (beta != 0.0) {  // + beta * per_token_kl (given), reduced like the surrogate
        const tensor kl = c.input("per_token_kl");
        loss += beta * rlhf::aggregate(kl.matrix(), in.mask.matrix(), {}, aggregation);
    }
    out.outputs["loss"] = tensor::of_scalar(loss);
    out.outputs["ratio_max"] = tensor::of_scalar(all_positions_max(r.stats.ratio_max));
    return out;
}

// ChatLearn chatlearn/algorithm/grpo_utils/loss_gallery.py calculate_grpo_loss(log_probs,
// old_log_probs, advantages[B], diff_clip_ratio=10, pos_clip_ratio=0.2, neg_clip_ratio=0.2,
// final_clip_ratio=3): the per-token loss at every position (no mask).
std::optional<mapped_outputs> map_chatlearn_grpo_loss(const golden_file& /*file*/, const golden_case& c) {
    if (c.outputs.count("per_token_loss") == 0) return std::nullopt;
    tensor lp = c.input("log_probs");
    const tensor old = c.input("old_log_probs");
    const tensor per_row = c.input("advantages");
    const index_t rows = lp.dim(0), cols = lp.dim(1);
    if (per_row.data.size() != static_cast<std::size_t>(rows))
        throw std::runtime_error("golden: ChatLearn advantages must hold one value per row");
    // The peer builds torch.tensor(advantages) from Python floats: float32, then promoted.
    tensor adv = tensor::zeros({rows, cols});
    for (index_t b = 0; b < rows; ++b)
        for (index_t t = 0; t < cols; ++t)
            adv.data[static_cast<std::size_t>(b * cols + t)] =
                static_cast<double>(static_cast<float>(per_row.data[static_cast<std::size_t>(b)]));
    tensor mask = tensor::zeros({rows, cols});
    std::fill(mask.data.begin(), mask.data.end(), 1.0);
    const rlhf::policy_loss_options options{
        .clip_low = c.has_param("neg_clip_ratio") ? c.number_param("neg_clip_ratio") : 0.2,
        .clip_high = c.has_param("pos_clip_ratio") ? c.number_param("pos_clip_ratio") : 0.2,
        .loss_cap = c.has_param("final_clip_ratio") ? c.number_param("final_clip_ratio") : 3.0,
        .log_ratio_max = c.has_param("diff_clip_ratio") ? c.number_param("diff_clip_ratio") : 10.0};
    tensor tokens;
    (void)run_policy({std::move(lp), old, adv, mask}, options, &tokens);
    mapped_outputs out;
    out.outputs["per_token_loss"] = std::move(tokens);
    return out;
}

void register_policy_and_aggregation_mappers(mapper_registry& registry) {
    registry["trl_v0114__ppo_loss"].push_back(map_trl_ppo_loss);
    registry["verl__compute_policy_loss"].push_back(map_verl_policy_loss);
    registry["verl__agg_loss"].push_back(map_verl_agg_loss);
    registry["openrlhf__policy_value_aggregate"].push_back(map_openrlhf_policy);
    registry["openrlhf__policy_value_aggregate"].push_back(map_openrlhf_aggregate);
    registry["dschat__ppo_trainer_math"].push_back(map_dschat_actor_loss);
    registry["colossalchat_v1__coati_math"].push_back(map_colossalchat_v1_policy);
    registry["colossalchat_v2__ppo_math"].push_back(map_colossalchat_v2_policy);
    registry["chatlearn__grpo_loss_advantage_and_legacy_ppo_gae"].push_back(map_chatlearn_grpo_loss);
}

// The value part comes from the value-loss family (map_value_losses.cpp).
std::optional<mapped_outputs> map_trl_ppo_loss_value_part(const golden_file& /*file*/, const golden_case& c) {
    auto outputs = trl_value_loss_outputs(c);
    if (outputs.empty()) return std::nullopt;
    mapped_outputs out;
    out.outputs = std::move(outputs);
    return out;
}

}  // namespace

void register_loss_mappers(mapper_registry& registry) {
    register_policy_and_aggregation_mappers(registry);
}

}  // namespace rlhf_golden
