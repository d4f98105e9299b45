// Golden mappers for the reward family: per-token KL estimators, reward shaping, sequence-level
// rewards and KL controllers. See mapping.hpp. Each mapper reads shapes, masks and parameters from
// the case and calls the library on views over the golden tensors (in double); it returns
// std::nullopt for cases of other families that share its file.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "mapping.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/presets.hpp"
#include "rlhf/kernels/reward_shaping.hpp"

namespace rlhf_golden {
namespace {

tensor zeros_like(const tensor& t) {
    return tensor::zeros(t.shape);
}

rlhf::view<double, 1> vector_of(const tensor& t) {
    return t.vector();
}

rlhf::mut_view<double, 1> mut_vector_of(tensor& t) {
    return {t.data.data(), {static_cast<rlhf::index_t>(t.data.size())}};
}

/// Columns [first, last) of a [B, C] view.
template <class Element>
rlhf::basic_view<Element, 2> columns(const rlhf::basic_view<Element, 2>& v, rlhf::index_t first, rlhf::index_t last) {
    return {v.data() + first, {v.extent(0), last - first}, {v.stride(0), 1}};
}

/// Replays a sequence of measured KLs through `controller`, collecting the value after each update
/// under `name`. The library refuses a NaN measurement (an rlhf::error) where the peers carry NaN
/// into every later value: from that step on the output is NaN and reported as refused.
template <class Controller>
void replay(mapped_outputs& out, const std::string& name, Controller& controller, const tensor& sequence,
            rlhf::kl_measure measure, rlhf::index_t n_steps) {
    tensor values = zeros_like(sequence);
    for (std::size_t i = 0; i < sequence.data.size(); ++i) {
        const rlhf::measured_kl current{.value = sequence.data[i], .measure = measure};
        if (std::isnan(current.value)) {
            try {
                (void)controller.update(current, n_steps);
                throw std::runtime_error("the library accepted a NaN measured KL");
            } catch (const rlhf::error& e) {
                if (e.kind() != rlhf::error_kind::value || e.argument() != "current_kl") throw;
            }
            std::fill(values.data.begin() + static_cast<std::ptrdiff_t>(i), values.data.end(),
                      std::numeric_limits<double>::quiet_NaN());
            out.refused_non_finite.push_back(name);
            break;
        }
        values.data[i] = controller.update(current, n_steps);
    }
    out.outputs.emplace(name, std::move(values));
}

/// An adaptive controller (Ziegler et al.) from a case, its β parameter named `init_name` and its
/// target `target_name` (each framework names them), replayed over "current_kl_sequence" into `out`.
void replay_adaptive(mapped_outputs& out, const golden_case& c, const std::string& init_name,
                     const std::string& target_name, rlhf::kl_measure measure) {
    rlhf::adaptive_kl_controller adaptive({.init_kl_coef = c.number_param(init_name),
                                           .target = c.number_param(target_name),
                                           .horizon = c.number_param("horizon"),
                                           .measure = measure});
    replay(out, "adaptive_values_after_each_update", adaptive, c.input("current_kl_sequence"), measure,
           c.param<rlhf::index_t>("n_steps"));
}

// TRL v0.11 PPOTrainer._kl_penalty: kl/abs/mse per token. "full" works on [B, T, V]
// log-distributions: the logits family maps it.
std::optional<mapped_outputs> trl_kl_penalty(const golden_file&, const golden_case& c) {
    if (!c.has_param("kl_penalty")) return std::nullopt;
    const auto name = c.param<std::string>("kl_penalty");
    if (name == "full") return std::nullopt;
    const auto estimator = rlhf::parse_option<rlhf::kl_estimator>(name, "kl_penalty");
    const tensor lp = c.input("logprob"), ref = c.input("ref_logprob");
    tensor kl = zeros_like(lp);
    rlhf::token_kl(lp.matrix(), ref.matrix(), kl.mut_matrix(), rlhf::kl_preset::trl(estimator));
    return single_output("kl", std::move(kl));
}

// TRL v0.11 PPOTrainer.compute_rewards: score at the last valid token, KL not masked; an empty
// row raises (IndexError in TRL).
std::optional<mapped_outputs> trl_compute_rewards(const golden_file&, const golden_case& c) {
    if (!c.has_param("kl_ctl_value")) return std::nullopt;
    const auto name = c.param_or<std::string>("kl_penalty", "kl");
    if (name == "full") return std::nullopt;
    const auto kl_opts = rlhf::kl_preset::trl(rlhf::parse_option<rlhf::kl_estimator>(name, "kl_penalty"));
    const double beta = c.number_param("kl_ctl_value");
    const tensor lp = c.input("logprobs"), ref = c.input("ref_logprobs"), mask = c.input("masks");
    const tensor scores = c.input("scores");
    tensor kls = zeros_like(lp), non_score = zeros_like(lp), rewards = zeros_like(lp);
    rlhf::token_kl(lp.matrix(), ref.matrix(), kls.mut_matrix(), kl_opts);
    rlhf::kl_rewards(lp.matrix(), ref.matrix(), non_score.mut_matrix(), beta, kl_opts);
    auto options = rlhf::presets::trl_v0_11().rewards;  // the preset, with the case's β and estimator
    options.kl_coef = beta;
    options.kl = kl_opts;
    rlhf::shape_rewards_from_logprobs(lp.matrix(), ref.matrix(), mask.matrix(), vector_of(scores), rewards.mut_matrix(),
                                      options);
    mapped_outputs out;
    out.outputs.emplace("kls", std::move(kls));
    out.outputs.emplace("non_score_rewards", std::move(non_score));
    out.outputs.emplace("rewards", std::move(rewards));
    return out;
}

// TRL v0.11 AdaptiveKLController / FixedKLController; PPOTrainer feeds the batch mean of the
// per-sequence KL sums. RunningMoments cases belong to the statistics family.
std::optional<mapped_outputs> trl_kl_controllers(const golden_file&, const golden_case& c) {
    if (!c.has_param("init_kl_coef") || !c.has_param("horizon")) return std::nullopt;
    constexpr auto measure = rlhf::kl_measure::seq_mean_token_sum;
    const tensor sequence = c.input("current_kl_sequence");
    const auto n_steps = c.param<rlhf::index_t>("n_steps");
    rlhf::fixed_kl_controller fixed(c.number_param("init_kl_coef"));
    mapped_outputs out;
    replay_adaptive(out, c, "init_kl_coef", "target", measure);
    // A fixed coefficient never reads its measurement; the library still refuses a NaN one.
    for (const double kl : sequence.data)
        if (!std::isnan(kl)) fixed.update({.value = kl, .measure = measure}, n_steps);
    out.outputs.emplace("fixed_value", tensor::of_scalar(fixed.value()));
    return out;
}

// verl core_algos: kl_penalty per token (k3 with its clamps), compute_rewards, AdaptiveKLController.
// Names verl rejects ("k3+", "low_var_kl+" at this snapshot, "full") are rejected by parse_option.
std::optional<mapped_outputs> verl_kl(const golden_file&, const golden_case& c) {
    if (c.has_param("kl_penalty")) {
        const auto estimator = rlhf::parse_option<rlhf::kl_estimator>(c.param<std::string>("kl_penalty"), "kl_penalty");
        const tensor lp = c.input("logprob"), ref = c.input("ref_logprob");
        tensor kl = zeros_like(lp);
        rlhf::token_kl(lp.matrix(), ref.matrix(), kl.mut_matrix(), rlhf::kl_preset::verl(estimator));
        return single_output("kl", std::move(kl));
    }
    if (c.has_param("kl_ratio")) {
        const tensor scores = c.input("token_level_scores"), old = c.input("old_log_prob"),
                     ref = c.input("ref_log_prob");
        tensor rewards = zeros_like(scores);
        (void)rlhf::apply_kl_penalty(scores.matrix(), old.matrix(), ref.matrix(), rewards.mut_matrix(),
                                     c.number_param("kl_ratio"), rlhf::kl_preset::verl(rlhf::kl_estimator::k1));
        return single_output("token_level_rewards", std::move(rewards));
    }
    if (c.has_param("target_kl") && c.has_param("horizon")) {
        constexpr auto measure = rlhf::kl_measure::seq_mean_token_mean;  // apply_kl_penalty's current_kl
        mapped_outputs out;
        replay_adaptive(out, c, "kl_coef", "target_kl", measure);
        return out;
    }
    return std::nullopt;
}

// OpenRLHF models/utils.py: compute_approx_kl (float32 log-ratio, clamp +-10) and compute_reward
// (score at the last valid token, KL not masked, an all-zero row puts the score at T-1).
std::optional<mapped_outputs> openrlhf_kl_and_reward(const golden_file&, const golden_case& c) {
    if (c.has_param("kl_estimator")) {
        const auto estimator =
            rlhf::parse_option<rlhf::kl_estimator>(c.param<std::string>("kl_estimator"), "kl_estimator");
        const tensor lp = c.input("log_probs"), ref = c.input("log_probs_base");
        tensor kl = zeros_like(lp);
        rlhf::token_kl(lp.matrix(), ref.matrix(), kl.mut_matrix(), rlhf::kl_preset::openrlhf(estimator));
        return single_output("kl", std::move(kl), 1e-6);  // the peer's outputs are float32
    }
    if (c.params.contains("kl_coef") && c.params.contains("reward_clip_range")) {
        auto options = rlhf::presets::openrlhf().rewards;            // the preset, with the case's
        options.kl_coef = std::max(0.0, c.number_param("kl_coef"));  // β (<= 0 -> 0) and clip range
        options.score_clip_range = std::nullopt;
        if (c.has_param("reward_clip_range")) {
            const auto& range = c.params.at("reward_clip_range");
            if (!range.empty())
                options.score_clip_range = std::pair{parse_number(range.at(0)), parse_number(range.at(1))};
        }
        const tensor r = c.input("r"), kl = c.input("kl"), mask = c.input("action_mask");
        tensor reward = zeros_like(kl);
        rlhf::shape_rewards(kl.matrix(), mask.matrix(), vector_of(r), reward.mut_matrix(), options);
        return single_output("reward", std::move(reward));
    }
    return std::nullopt;
}

// OpenRLHF ppo_utils/kl_controller.py: AdaptiveKLController, fed status["kl"] (per-sample token means).
std::optional<mapped_outputs> openrlhf_kl_controller(const golden_file&, const golden_case& c) {
    if (!c.has_param("init_coef") || !c.has_param("horizon")) return std::nullopt;
    constexpr auto measure = rlhf::kl_measure::seq_mean_token_mean;
    mapped_outputs out;
    replay_adaptive(out, c, "init_coef", "target", measure);
    return out;
}

// ChatLearn (302cdc7e) examples/megatron/models/policy_trainer.py: AdaptiveKLController, fed
// the policy's `policy/approx_kl` statistic (a token mean).
std::optional<mapped_outputs> chatlearn_kl_controller(const golden_file&, const golden_case& c) {
    if (!c.has_param("init_kl_coef") || !c.has_param("horizon")) return std::nullopt;
    constexpr auto measure = rlhf::kl_measure::token_mean;
    mapped_outputs out;
    replay_adaptive(out, c, "init_kl_coef", "target", measure);
    return out;
}

// DeepSpeed-Chat DeepSpeedPPOTrainer.compute_rewards on [B, S-1] full sequences: -kl_ctl * (lp - ref)
// on every column (prompt included), the clipped score at start + sum(action_mask[:, start:]) (with
// start = P - 1), clamped to the last column by Python's slicing: `after_last_valid` on the
// response columns.
std::optional<mapped_outputs> dschat_compute_rewards(const golden_file&, const golden_case& c) {
    if (!c.has_param("kl_ctl") || !c.has_param("clip_reward_value")) return std::nullopt;
    const double beta = c.number_param("kl_ctl");
    const tensor lp = c.input("log_probs"), ref = c.input("ref_log_probs"), mask = c.input("action_mask");
    const tensor score = c.input("reward_score");
    const auto start = static_cast<rlhf::index_t>(c.input("prompt_len_P").scalar()) - 1;
    const rlhf::index_t width = lp.dim(1);
    tensor rewards = zeros_like(lp);
    auto options = rlhf::presets::deepspeed_chat().rewards;  // the preset, with the case's β and clip
    options.kl_coef = beta;
    options.score_clip = c.number_param("clip_reward_value");
    rlhf::kl_rewards(columns(lp.matrix(), 0, start), columns(ref.matrix(), 0, start),
                     columns(rewards.mut_matrix(), 0, start), beta, options.kl);
    rlhf::shape_rewards_from_logprobs(columns(lp.matrix(), start, width), columns(ref.matrix(), start, width),
                                      columns(mask.matrix(), start, width), vector_of(score),
                                      columns(rewards.mut_matrix(), start, width), options);
    return single_output("rewards", std::move(rewards));
}

// ColossalChat v1 (Coati) models/utils.py: compute_reward = r - kl_coef * masked_mean(k3) with
// masked_mean's +1e-8; kl_coef <= 0 returns r.
std::optional<mapped_outputs> colossalchat_v1_reward(const golden_file&, const golden_case& c) {
    if (!c.has_param("kl_coef") || c.outputs.count("reward") == 0) return std::nullopt;
    const tensor r = c.input("r"), lp = c.input("log_probs"), base = c.input("log_probs_base"),
                 mask = c.input("action_mask");
    tensor reward = zeros_like(r);
    // The preset's options; ColossalChat returns r unchanged for kl_coef <= 0, as kl_coef = 0 does.
    auto options = rlhf::presets::colossalchat_v1().rewards;
    options.kl_coef = std::max(0.0, c.number_param("kl_coef"));
    rlhf::sequence_rewards(vector_of(r), lp.matrix(), base.matrix(), mask.matrix(), mut_vector_of(reward), options);
    return single_output("reward", std::move(reward));
}

// ColossalChat v2 models/utils.py: compute_reward: masked k1 penalty, clip(r, +-reward_eps) added to
// every index < sum(mask), indices >= sum(mask) zeroed; every row must have an action (assert).
// The second output is a k3 of the reversed log-ratio, exp(lr) - 1 - lr with lr = lp - base, which
// ColossalChat computes as exp(lr * [lr < 10]) - 1 - lr: compared only where every masked lr < 10.
std::optional<mapped_outputs> colossalchat_v2_reward(const golden_file&, const golden_case& c) {
    if (!c.has_param("kl_coef") || !c.has_param("reward_eps")) return std::nullopt;
    const tensor r = c.input("r"), lp = c.input("log_probs"), base = c.input("log_probs_base"),
                 mask = c.input("action_mask");
    tensor reward = zeros_like(lp);
    auto options = rlhf::presets::colossalchat_v2().rewards;  // the preset, with the case's β and clip
    options.kl_coef = c.number_param("kl_coef");
    options.score_clip = c.number_param("reward_eps");
    rlhf::shape_rewards_from_logprobs(lp.matrix(), base.matrix(), mask.matrix(), vector_of(r), reward.mut_matrix(),
                                      options);
    mapped_outputs out;
    out.outputs.emplace("reward", std::move(reward));
    bool below_ten = true;
    for (std::size_t i = 0; i < lp.data.size(); ++i)
        below_ten = below_ten && (mask.data[i] == 0.0 || lp.data[i] - base.data[i] < 10.0);
    if (below_ten) {
        tensor k3 = zeros_like(lp);
        // Reference and policy swapped: k3(base | lp) = exp(lp - base) - (lp - base) - 1.
        rlhf::token_kl(base.matrix(), lp.matrix(), mask.matrix(), k3.mut_matrix(),
                       rlhf::kl_preset::trl(rlhf::kl_estimator::k3));
        out.outputs.emplace("k3_kl", std::move(k3));
    }
    return out;
}

// OpenRL envs/nlp/rewards/kl_penalty.py: KLPenalty.update_alpha, fed the mean per-step KL.
std::optional<mapped_outputs> openrl_alpha(const golden_file&, const golden_case& c) {
    if (!c.has_param("alpha") || !c.has_param("update_rate")) return std::nullopt;
    constexpr auto measure = rlhf::kl_measure::token_mean;
    rlhf::proportional_kl_controller controller({.init_kl_coef = c.number_param("alpha"),
                                                 .target = c.number_param("target_kl"),
                                                 .update_rate = c.number_param("update_rate"),
                                                 .error_clip = c.number_param("clip_coef"),
                                                 .measure = measure});
    mapped_outputs out;
    replay(out, "alpha_after_each_update", controller, c.input("kl_div_sequence"), measure, 0);
    return out;
}

}  // namespace

void register_reward_mappers(mapper_registry& registry) {
    registry["trl_v0114__ppo_kl_penalty"].push_back(trl_kl_penalty);
    registry["trl_v0114__ppo_compute_rewards"].push_back(trl_compute_rewards);
    registry["trl_v0114__kl_controllers_running_moments"].push_back(trl_kl_controllers);
    registry["verl__kl_penalty_and_controllers"].push_back(verl_kl);
    registry["openrlhf__approx_kl_and_compute_reward"].push_back(openrlhf_kl_and_reward);
    registry["openrlhf__gae_cumulative_returns_kl_ctl"].push_back(openrlhf_kl_controller);
    registry["chatlearn__grpo_loss_advantage_and_legacy_ppo_gae"].push_back(chatlearn_kl_controller);
    registry["dschat__ppo_trainer_math"].push_back(dschat_compute_rewards);
    registry["colossalchat_v1__coati_math"].push_back(colossalchat_v1_reward);
    registry["colossalchat_v2__ppo_math"].push_back(colossalchat_v2_reward);
    registry["openrl__kl_penalty_alpha"].push_back(openrl_alpha);
}

}  // namespace rlhf_golden
