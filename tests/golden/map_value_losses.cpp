// Golden mappers of the value-loss family (rlhf/kernels/value_loss.hpp): see mapping.hpp.
//
//   verl__value_and_entropy_loss     verl compute_value_loss: clip_by_value, ½·agg_loss(max),
//                                    every loss_agg_mode; vf_clipfrac is verl's masked_mean,
//                                    which divides by (Σm + 1e-8): reproduced here. The entropy
//                                    cases are the logits family's (std::nullopt here).
//   openrlhf__policy_value_aggregate OpenRLHF ValueLoss: clip_eps (None: unclipped), ½,
//                                    token_level_loss → token-mean / seq-mean-token-mean.
//   dschat__ppo_trainer_math         DeepSpeed-Chat critic_loss_fn: clamp(values, old ± c),
//                                    ½·Σ max·m / Σm.
//   colossalchat_v1__coati_math      Coati v1 ValueLoss: per-sequence values [B], ½·mean(max).
//   colossalchat_v2__ppo_math        ColossalChat v2 ValueLoss: returns = advantage + old_values
//                                    inside, ½·Σ(max / Σm · m) (token-mean over the batch).
//   trl_v0114__ppo_loss              not registered here: the policy family's TRL mapper answers
//                                    the case and merges trl_value_loss_outputs (value_loss_mapping.hpp).
//
// No value case exists in the ChatLearn golden file.

#include <optional>
#include <string>

#include "mapping.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "value_loss_mapping.hpp"

namespace rlhf_golden {
namespace {

/// Runs the kernel in double on golden tensors (rank 2, or rank 1 as one row); a missing mask
/// means every position is valid.
rlhf::value_loss_result run_value(const tensor& values, const tensor& old_values, const tensor& returns,
                                  const tensor* mask, const rlhf::value_loss_options& options) {
    const auto v = values.matrix();
    tensor ones;
    if (mask == nullptr) {
        ones = tensor::zeros({v.extent(0), v.extent(1)});
        for (double& x : ones.data) x = 1.0;
        mask = &ones;
    }
    return rlhf::value_loss(v, old_values.matrix(), returns.matrix(), mask->matrix(), rlhf::mut_view<double>{}, {},
                            options);
}

mapped_outputs scalar_output(const std::string& name, double value) {
    mapped_outputs out;
    out.outputs[name] = tensor::of_scalar(value);
    return out;
}

// verl verl/trainer/ppo/core_algos.py: compute_value_loss(vpreds, returns, values, response_mask,
// cliprange_value, loss_agg_mode) -> (vf_loss, vf_clipfrac).
std::optional<mapped_outputs> map_verl_value_loss(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("cliprange_value") || !c.has_input("vpreds")) return std::nullopt;
    const tensor mask = c.input("response_mask");
    const rlhf::value_loss_options options{
        .clip_range = c.number_param("cliprange_value"),
        .aggregation = {.mode = rlhf::parse_option<rlhf::loss_aggregation>(
                            c.param_or<std::string>("loss_agg_mode", "token-mean"), "loss_agg_mode")}};
    const auto r = run_value(c.input("vpreds"), c.input("values"), c.input("returns"), &mask, options);
    mapped_outputs out = scalar_output("vf_loss", r.loss);
    // verl's masked_mean divides by Σm + 1e-8.
    out.outputs["vf_clipfrac"] = tensor::of_scalar(r.stats.clipped_tokens / (r.stats.valid_tokens + 1e-8));
    return out;
}

// OpenRLHF openrlhf/models/loss.py: ValueLoss(clip_eps, token_level_loss)(values, old_values,
// returns, action_mask).
std::optional<mapped_outputs> map_openrlhf_value_loss(const golden_file& /*file*/, const golden_case& c) {
    if (!c.params.contains("clip_eps") || !c.has_input("old_values")) return std::nullopt;
    const tensor mask = c.input("action_mask");
    const bool token_level = c.param_or<bool>("token_level_loss", true);
    const rlhf::value_loss_options options{
        .clip_range = c.has_param("clip_eps") ? std::optional<double>(c.number_param("clip_eps")) : std::nullopt,
        .aggregation = {.mode = token_level ? rlhf::loss_aggregation::token_mean
                                            : rlhf::loss_aggregation::seq_mean_token_mean}};
    const auto r = run_value(c.input("values"), c.input("old_values"), c.input("returns"), &mask, options);
    return scalar_output("loss", r.loss);
}

// DeepSpeed-Chat dschat/rlhf/ppo_trainer.py: critic_loss_fn(values, old_values, returns, mask).
std::optional<mapped_outputs> map_dschat_critic_loss(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("cliprange_value") || !c.has_input("old_values")) return std::nullopt;
    const tensor mask = c.input("mask");
    const auto r = run_value(c.input("values"), c.input("old_values"), c.input("returns"), &mask,
                             {.clip_range = c.number_param("cliprange_value")});
    return scalar_output("vf_loss", r.loss);
}

// ColossalChat v1 applications/Chat/coati/models/loss.py: ValueLoss(clip_eps)(values[B],
// old_values[B], reward[B]) = ½·mean(max(...)): one step per sequence, every row valid.
std::optional<mapped_outputs> map_colossalchat_v1_value_loss(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("clip_eps") || !c.has_input("old_values") || !c.has_input("reward")) return std::nullopt;
    const auto r = run_value(c.input("values"), c.input("old_values"), c.input("reward"), nullptr,
                             {.clip_range = c.number_param("clip_eps")});
    return scalar_output("loss", r.loss);
}

// ColossalChat v2 applications/ColossalChat/coati/models/loss.py: ValueLoss(clip_eps)(values,
// old_values, advantage, action_mask), returns = advantage + old_values inside.
std::optional<mapped_outputs> map_colossalchat_v2_value_loss(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("clip_eps") || !c.has_input("old_values") || !c.has_input("advantage")) return std::nullopt;
    const tensor mask = c.input("action_mask");
    const auto r = run_value(c.input("values"), c.input("old_values"), c.input("advantage"), &mask,
                             {.clip_range = c.number_param("clip_eps"), .returns_from_advantages = true});
    return scalar_output("loss", r.loss);
}

}  // namespace

// TRL v0.11.4 trl/trainer/ppo_trainer.py: PPOTrainer.loss (value part): clip_by_value(vpreds,
// values ± cliprange_value), vf_coef·½·masked_mean(max), and its val/* and returns/* stats.
std::map<std::string, tensor> trl_value_loss_outputs(const golden_case& c) {
    std::map<std::string, tensor> out;
    if (!c.has_param("cliprange_value") || !c.has_input("vpreds")) return out;
    const tensor mask = c.input("mask");
    const tensor values = c.input("values");
    const tensor returns = c.input("returns");
    const auto r = run_value(c.input("vpreds"), values, returns, &mask,
                             {.clip_range = c.number_param("cliprange_value"), .coef = c.number_param("vf_coef")});
    out["vf_loss_times_vf_coef"] = tensor::of_scalar(r.loss);
    out["stats.val/clipfrac"] = tensor::of_scalar(r.stats.clip_fraction);
    out["stats.val/error"] = tensor::of_scalar(r.stats.value_error);
    // TRL's val/mean and val/var describe the rollout values (`values`), not the predictions.
    const rlhf::moments_options stats{.small_sample = rlhf::small_sample_policy::zero_variance};
    const auto value_moments = rlhf::compute_masked_moments(values.matrix(), mask.matrix(), stats);
    const auto return_moments = rlhf::compute_masked_moments(returns.matrix(), mask.matrix(), stats);
    out["stats.val/mean"] = tensor::of_scalar(value_moments.mean);
    out["stats.returns/mean"] = tensor::of_scalar(return_moments.mean);
    if (value_moments.count >= 2.0) {
        out["stats.val/var"] = tensor::of_scalar(value_moments.variance);
        out["stats.returns/var"] = tensor::of_scalar(return_moments.variance);
    }
    return out;
}

void register_value_mappers(mapper_registry& registry) {
    registry["verl__value_and_entropy_loss"].push_back(map_verl_value_loss);
    registry["openrlhf__policy_value_aggregate"].push_back(map_openrlhf_value_loss);
    registry["dschat__ppo_trainer_math"].push_back(map_dschat_critic_loss);
    registry["colossalchat_v1__coati_math"].push_back(map_colossalchat_v1_value_loss);
    registry["colossalchat_v2__ppo_math"].push_back(map_colossalchat_v2_value_loss);
}

}  // namespace rlhf_golden
