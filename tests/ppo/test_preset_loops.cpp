// Every preset of rlhf::ppo::presets runs its framework's loop: one trainer step equals the step
// computed by hand, in the framework's order, from the kernels' public functions (float64 toy
// models, deterministic), to 1e-12. One hand computation serves every preset: it reads the
// preset's rules (shaping, whitening, estimator, minibatching, micro-batch scaling, ratio
// threshold, skip threshold, KL placement, early stop, grad clipping) from the config.
#include <doctest/doctest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "ppo/toy_models.hpp"
#include "rlhf/ppo.hpp"
#include "support/test_helpers.hpp"

namespace {

using namespace rlhf_test::toys;
using rlhf::advantage_estimator;
using rlhf::ppo::kl_placement;

constexpr double lr = 0.05;

/// A preset made small: 4 rows (2 prompts × 2 samples for the group estimators), 2 minibatches of
/// 2 rows, micro-batches of 1 row, 2 epochs, 4 new tokens.
rlhf::ppo::config small(rlhf::ppo::config c) {
    c.samples_per_prompt = c.estimator == advantage_estimator::gae ? 1 : 2;
    c.rollout_batch_size = 4;
    c.generation = {.max_new_tokens = 4};
    c.minibatch_size = 2;
    c.micro_batch_size = 1;
    c.ppo_epochs = 2;
    c.seed = 7;
    return c;
}

/// The hand computation has no entropy term (the toy policy gives none): presets with an entropy
/// bonus run here without it; the bonus has its own tests (test_trainer.cpp).
rlhf::ppo::config without_entropy(rlhf::ppo::config c) {
    c.entropy_coef = 0.0;
    return c;
}

/// What a step leaves: the parameters and the metrics the hand computation also gives.
struct step_outcome {
    std::vector<torch::Tensor> policy, critic;
    double policy_loss = 0.0, value_loss = 0.0, kl_loss = 0.0;
    std::int64_t optimizer_steps = 0, threshold_hits = 0, skipped = 0, epochs = 0;
    bool early_stopped = false;
    std::uint64_t generation_seed = 0;
};

/// The β of the step (the controller's initial value).
double beta_of(const rlhf::ppo::config& c) {
    return rlhf::initial_kl_coef(c.kl_control);
}

/// Rewards and advantages by hand, in the order of the framework: shaping (score at its slot,
/// −β·kl when the KL is in the reward), reward whitening, the estimator, advantage whitening.
struct hand_advantages {
    torch::Tensor advantages, returns;
};
hand_advantages advantages_by_hand(const rlhf::ppo::config& c, const torch::Tensor& old_lp, const torch::Tensor& ref_lp,
                                   const torch::Tensor& mask, const torch::Tensor& scores, const torch::Tensor& values,
                                   const torch::Tensor& groups) {
    rlhf::reward_shaping_options shaping = c.reward;
    shaping.kl_coef = c.kl == kl_placement::reward ? beta_of(c) : 0.0;
    const torch::Tensor rewards_before =
        rlhf::shape_rewards_from_logprobs(old_lp, shaping.kl_coef > 0.0 ? ref_lp : old_lp, mask, scores, shaping);
    const torch::Tensor rewards =
        c.reward_whitening ? rlhf::masked_whiten(rewards_before, mask, *c.reward_whitening) : rewards_before;
    hand_advantages out;
    switch (c.estimator) {
        case advantage_estimator::gae: {
            const auto g = rlhf::compute_gae(rewards, values, mask, c.gae);
            out = {g.advantages, g.returns};
            break;
        }
        case advantage_estimator::grpo:
            out.advantages = rlhf::compute_grpo_advantages(rewards, mask, groups, c.grpo);
            break;
        case advantage_estimator::rloo:
            out.advantages = rlhf::compute_rloo_advantages(rewards, mask, groups, c.rloo);
            break;
        case advantage_estimator::reinforce_plus_plus: {
            const auto r = rlhf::compute_reinforce_plus_plus_advantages(rewards, mask, c.reinforce_plus_plus);
            out = {r.advantages, r.returns};
            break;
        }
        default:
            FAIL("no preset uses this estimator");
    }
    if (!out.returns.defined()) out.returns = out.advantages.clone();
    if (c.advantage_whitening)
        out.advantages = c.whiten_unmasked ? rlhf::whiten(out.advantages, *c.advantage_whitening)
                                           : rlhf::masked_whiten(out.advantages, mask, *c.advantage_whitening);
    return out;
}

/// The aggregation of a micro-batch's loss: verl's global token count (`global_counts`) uses the
/// minibatch's counts; TRL / DeepSpeed / OpenRLHF accumulation aggregates each micro-batch alone.
rlhf::aggregation_options hand_aggregation(rlhf::aggregation_options a, const rlhf::ppo::config& c,
                                           const torch::Tensor& minibatch_mask) {
    if (c.scaling != rlhf::ppo::micro_batch_scaling::global_counts) return a;
    const torch::Tensor lengths = minibatch_mask.to(torch::kFloat64).sum(1);
    if (!a.global_token_count) a.global_token_count = lengths.sum().item<double>();
    if (!a.global_sequence_count) a.global_sequence_count = lengths.gt(0).sum().item<double>();
    if (!a.normalizer) a.normalizer = lengths.max().item<double>();
    return a;
}

void zero_grads(const std::vector<torch::Tensor>& params) {
    for (const auto& p : params)
        if (p.grad().defined()) p.mutable_grad().zero_();
}

void sgd_step(const std::vector<torch::Tensor>& params) {
    const torch::NoGradGuard no_grad;
    for (auto p : params)
        if (p.grad().defined()) p.add_(p.grad(), -lr);
}

/// One trainer step by hand: rollout, the models' outputs, `advantages_by_hand`, then the epochs
/// over the trainer's seeded minibatches (the trainer's generator: generation seed, then buffer
/// seed), micro-batches, losses from the kernels, the preset's ratio threshold / skip threshold /
/// early stop, grad clipping and SGD steps.
step_outcome step_by_hand(const rlhf::ppo::config& c, const prompt_batch& prompts, bool with_critic,
                          bool shared_value) {
    toy_policy policy(1);
    toy_critic critic(2);
    toy_policy reference(3);
    count_reward reward;
    std::seed_seq sequence{static_cast<std::uint32_t>(c.seed), static_cast<std::uint32_t>(c.seed >> 32U)};
    std::mt19937_64 engine(sequence);
    step_outcome out;
    out.generation_seed = engine();
    const std::uint64_t buffer_seed = engine();

    const std::int64_t n = c.samples_per_prompt;
    const prompt_batch expanded{prompts.input_ids.repeat_interleave(n, 0),
                                prompts.attention_mask.repeat_interleave(n, 0)};
    rlhf::ppo::generation_options generation = c.generation;
    generation.seed = out.generation_seed;
    const rollout r = policy.generate(expanded, generation);
    const torch::Tensor mask = rlhf::ppo::response_mask(r);
    const torch::Tensor groups = torch::arange(prompts.input_ids.size(0), torch::kInt64).repeat_interleave(n);
    torch::Tensor old_lp, ref_lp, values, scores;
    {
        const torch::NoGradGuard no_grad;
        old_lp = policy.log_probs(r);
        ref_lp = reference.log_probs(r);
        values = with_critic ? critic.values(r) : torch::Tensor();
        scores = reward.score(r);
    }
    const hand_advantages a = advantages_by_hand(c, old_lp, ref_lp, mask, scores, values, groups);

    rlhf::ppo::experience e;
    e.sequences = r.sequences;
    e.attention_mask = r.attention_mask;
    e.response_start = r.response_start;
    e.response_end = r.response_end;
    e.action_mask = mask;
    rlhf::ppo::experience_buffer buffer({.limit = 0, .seed = buffer_seed});
    buffer.append(e);
    const auto plan = buffer.plan({.minibatch_size = c.minibatch_size, .epochs = c.ppo_epochs, .shuffle = c.shuffle});

    const double beta = beta_of(c);
    std::vector<torch::Tensor> actor_params = policy.parameters();
    const std::vector<torch::Tensor> critic_params = critic.parameters();
    if (shared_value) actor_params.insert(actor_params.end(), critic_params.begin(), critic_params.end());
    double last_kl = 0.0, minibatches = 0.0;
    bool stop = false;
    for (std::size_t epoch = 0; epoch < plan.size() && !stop; ++epoch) {
        for (const auto& rows : plan[epoch]) {
            zero_grads(actor_params);
            zero_grads(critic_params);
            const torch::Tensor minibatch_rows = torch::tensor(rows, torch::kInt64);
            const torch::Tensor minibatch_mask = mask.index_select(0, minibatch_rows);
            rlhf::policy_loss_options po = c.policy_loss;
            const bool minibatch_scope = c.threshold_scope == rlhf::ppo::ratio_threshold_scope::minibatch;
            if (minibatch_scope) po.ratio_threshold.reset();
            po.aggregation = hand_aggregation(po.aggregation, c, minibatch_mask);
            rlhf::kl_loss_options ko = c.kl_loss;
            ko.coef = beta;
            ko.aggregation = hand_aggregation(ko.aggregation, c, minibatch_mask);
            rlhf::value_loss_options vo = c.value_loss;
            vo.aggregation = hand_aggregation(vo.aggregation, c, minibatch_mask);
            const auto parts = static_cast<std::int64_t>(rows.size()) / c.micro_batch_size;
            const double scale = c.scaling == rlhf::ppo::micro_batch_scaling::mean_of_micro_batches
                                     ? 1.0 / static_cast<double>(parts)
                                     : 1.0;
            double tokens = 0.0, ratio_sum = 0.0, kl_sum = 0.0;
            for (std::int64_t part = 0; part < parts; ++part) {
                const torch::Tensor idx = minibatch_rows.narrow(0, part * c.micro_batch_size, c.micro_batch_size);
                const rollout sub{r.sequences.index_select(0, idx), r.attention_mask.index_select(0, idx),
                                  r.response_start.index_select(0, idx), r.response_end.index_select(0, idx)};
                const std::int64_t width = rlhf::ppo::response_width(sub);
                const auto take = [&](const torch::Tensor& t) { return t.index_select(0, idx).narrow(1, 0, width); };
                const torch::Tensor lp = policy.log_probs(sub);
                const auto pg = rlhf::libtorch::policy_loss(lp, take(old_lp), take(a.advantages), take(mask), po);
                tokens += pg.stats.valid_tokens;
                ratio_sum += pg.stats.ratio_mean * pg.stats.valid_tokens;
                kl_sum += pg.stats.policy_kl * pg.stats.valid_tokens;
                last_kl = pg.stats.policy_kl;
                // TRL `loss()`: over the threshold, the forward batch's whole loss × 0.
                const double keep = pg.stats.ratio_threshold_exceeded ? 0.0 : 1.0;
                out.threshold_hits += pg.stats.ratio_threshold_exceeded ? 1 : 0;
                torch::Tensor actor = pg.loss;
                out.policy_loss += pg.loss.item<double>() * scale;
                if (c.kl == kl_placement::loss && beta != 0.0) {
                    const auto kl = rlhf::libtorch::kl_loss(lp, take(ref_lp), take(mask), ko);
                    actor = actor + kl.loss;
                    out.kl_loss += kl.loss.item<double>() * scale;
                }
                torch::Tensor value_part;
                if (with_critic) {
                    const torch::Tensor& targets = vo.returns_from_advantages ? a.advantages : a.returns;
                    const auto vl =
                        rlhf::libtorch::value_loss(critic.values(sub), take(values), take(targets), take(mask), vo);
                    value_part = vl.loss * (scale * keep);
                    out.value_loss += vl.loss.item<double>() * scale * keep;
                }
                // ColossalChat v2: over the skip threshold, the actor part is not backpropagated.
                const bool skip = pg.stats.skip_threshold_exceeded;
                out.skipped += skip ? 1 : 0;
                torch::Tensor total = skip ? torch::Tensor() : actor * (scale * keep);
                if (value_part.defined() && shared_value) total = total.defined() ? total + value_part : value_part;
                if (total.defined()) total.backward();
                if (value_part.defined() && !shared_value) value_part.backward();
            }
            ++minibatches;
            // The minibatch scope: the mean ratio over the minibatch's tokens; its gradients × 0.
            if (minibatch_scope && c.policy_loss.ratio_threshold &&
                ratio_sum / tokens > *c.policy_loss.ratio_threshold) {
                zero_grads(actor_params);
                zero_grads(critic_params);
                ++out.threshold_hits;
            }
            if (c.early_stop == rlhf::ppo::early_stop_rule::each_minibatch_before_step && c.early_stop_kl &&
                kl_sum / tokens > c.early_stop_factor * *c.early_stop_kl) {
                out.early_stopped = stop = true;
                break;
            }
            if (c.max_grad_norm) torch::nn::utils::clip_grad_norm_(actor_params, *c.max_grad_norm);
            sgd_step(actor_params);
            if (with_critic && !shared_value) {
                if (c.critic_max_grad_norm) torch::nn::utils::clip_grad_norm_(critic_params, *c.critic_max_grad_norm);
                sgd_step(critic_params);
            }
            ++out.optimizer_steps;
        }
        if (stop) break;
        ++out.epochs;
        // TRL: after the epoch, the policy KL of its last forward batch.
        if (c.early_stop == rlhf::ppo::early_stop_rule::after_epoch && c.early_stop_kl &&
            last_kl > c.early_stop_factor * *c.early_stop_kl)
            out.early_stopped = stop = true;
    }
    out.policy_loss /= minibatches;
    out.value_loss /= minibatches;
    out.kl_loss /= minibatches;
    out.policy = policy.parameters();
    out.critic = critic.parameters();
    return out;
}

/// The same step through `ppo_trainer` (SGD with the hand's learning rate; TRL's value head shares
/// the policy optimizer when `shared_value`).
template <class Critic>
step_outcome step_with_trainer(const rlhf::ppo::config& c, const prompt_batch& prompts, bool shared_value) {
    toy_policy policy(1);
    toy_critic critic(2);
    toy_policy reference(3);
    count_reward reward;
    constexpr bool with_critic = !std::is_same_v<Critic, rlhf::ppo::no_critic>;
    std::vector<torch::Tensor> actor_params = policy.parameters();
    if (with_critic && shared_value)
        for (const auto& p : critic.parameters()) actor_params.push_back(p);
    torch::optim::SGD policy_optimizer(actor_params, torch::optim::SGDOptions(lr));
    torch::optim::SGD critic_optimizer(critic.parameters(), torch::optim::SGDOptions(lr));
    rlhf::ppo::trainer_models<toy_policy, count_reward, Critic, toy_policy> models{
        .policy = &policy, .reward_model = &reward, .reference = &reference};
    if constexpr (with_critic) models.critic = &critic;
    rlhf::ppo::ppo_trainer<toy_policy, Critic, count_reward, toy_policy> trainer(
        c, models, {.policy = &policy_optimizer, .critic = with_critic && !shared_value ? &critic_optimizer : nullptr});
    const rlhf::ppo::step_metrics m = trainer.step(prompts);
    return {.policy = policy.parameters(),
            .critic = critic.parameters(),
            .policy_loss = m.policy_loss,
            .value_loss = m.value_loss,
            .kl_loss = m.kl_loss,
            .optimizer_steps = m.optimizer_steps,
            .threshold_hits = m.ratio_threshold_hits,
            .skipped = m.skipped_micro_batches,
            .epochs = m.epochs_completed,
            .early_stopped = m.early_stopped,
            .generation_seed = m.generation_seed};
}

struct preset_case {
    std::string name;
    rlhf::ppo::config config;
    bool shared_value = false;
};

/// Runs both and compares them; returns the trainer's outcome for further checks.
step_outcome check_preset(const preset_case& p) {
    CAPTURE(p.name);
    const prompt_batch prompts = make_prompts(0, p.config.rollout_batch_size / p.config.samples_per_prompt);
    const bool with_critic = p.config.estimator == advantage_estimator::gae;
    const step_outcome trained = with_critic ? step_with_trainer<toy_critic>(p.config, prompts, p.shared_value)
                                             : step_with_trainer<rlhf::ppo::no_critic>(p.config, prompts, false);
    const step_outcome hand = step_by_hand(p.config, prompts, with_critic, p.shared_value);
    CHECK(trained.generation_seed == hand.generation_seed);
    CHECK(trained.optimizer_steps == hand.optimizer_steps);
    CHECK(trained.threshold_hits == hand.threshold_hits);
    CHECK(trained.skipped == hand.skipped);
    CHECK(trained.epochs == hand.epochs);
    CHECK(trained.early_stopped == hand.early_stopped);
    CHECK(max_difference(trained.policy, hand.policy) < 1e-12);
    CHECK(max_difference(trained.critic, hand.critic) < 1e-12);
    CHECK(std::abs(trained.policy_loss - hand.policy_loss) < 1e-12);
    CHECK(std::abs(trained.value_loss - hand.value_loss) < 1e-12);
    CHECK(std::abs(trained.kl_loss - hand.kl_loss) < 1e-12);
    CHECK(max_difference(trained.policy, toy_policy(1).parameters()) > 1e-6);  // the step moved the policy
    return trained;
}

}  // namespace

TEST_CASE("ppo presets: one step of each preset equals its framework's loop computed by hand" *
          doctest::test_suite("unit")) {
    namespace presets = rlhf::ppo::presets;
    const std::vector<preset_case> cases{
        {"deepspeed_chat", small(presets::deepspeed_chat())},
        {"colossalchat_v2", small(presets::colossalchat_v2())},
        {"openrlhf", small(presets::openrlhf())},
        {"verl", small(presets::verl())},
        {"chatlearn", small(presets::chatlearn())},
        {"chatlearn_grpo", small(presets::chatlearn_grpo())},
        {"grpo", small(presets::grpo())},
        {"rloo", small(presets::rloo())},
        {"reinforce_plus_plus", small(presets::reinforce_plus_plus())},
        {"openrl", without_entropy(small(presets::openrl()))},
        {"chatllama", small(presets::chatllama())},
    };
    // The minibatch order of the frameworks: DeepSpeed-Chat's `MiniDataset` and verl's split keep
    // rollout order; the others draw a permutation per epoch.
    CHECK(!presets::deepspeed_chat().shuffle);
    CHECK(!presets::verl().shuffle);
    CHECK(presets::openrlhf().shuffle);
    for (const preset_case& p : cases) {
        const step_outcome m = check_preset(p);
        CHECK(m.optimizer_steps == 4);  // 2 epochs × 2 minibatches, no early stop by default
        CHECK(m.threshold_hits == 0);
    }
}

TEST_CASE("ppo presets: TRL v0.11 zeroes a forward batch's whole loss and stops after the epoch" *
          doctest::test_suite("unit")) {
    // TRL's value head shares the policy optimizer; the ratio threshold at 1 catches some of the
    // forward batches after the first step; the early stop judges each epoch's last forward batch.
    CHECK(rlhf::ppo::presets::trl_v0_11().threshold_scope == rlhf::ppo::ratio_threshold_scope::micro_batch);
    CHECK(rlhf::ppo::presets::trl_v0_11().early_stop == rlhf::ppo::early_stop_rule::after_epoch);
    rlhf::ppo::config c = small(rlhf::ppo::presets::trl_v0_11());
    c.ppo_epochs = 3;
    c.policy_loss.ratio_threshold = 1.0;
    c.early_stop_kl = 1e-9;
    const step_outcome trl = check_preset({"trl_v0_11", c, true});
    CHECK(trl.threshold_hits > 0);
    CHECK(trl.threshold_hits < 2 * trl.optimizer_steps);  // not every forward batch
    CHECK(trl.early_stopped);
    CHECK(trl.optimizer_steps == 2 * trl.epochs);  // every step of a stopped epoch was taken
    // Judged over the minibatch instead (`ratio_threshold_scope::minibatch`).
    c.threshold_scope = rlhf::ppo::ratio_threshold_scope::minibatch;
    c.early_stop_kl = std::nullopt;
    const step_outcome minibatch = check_preset({"trl_v0_11 minibatch scope", c, true});
    CHECK(minibatch.threshold_hits > 0);
    CHECK(minibatch.optimizer_steps == 6);
    // The default preset (no early stop, threshold 10) takes every step.
    const step_outcome plain = check_preset({"trl_v0_11 defaults", small(rlhf::ppo::presets::trl_v0_11()), true});
    CHECK(plain.optimizer_steps == 4);
    CHECK(!plain.early_stopped);
}

TEST_CASE("ppo::check_config refuses a second whitening of normalised advantages unless asked" *
          doctest::test_suite("unit")) {
    namespace presets = rlhf::ppo::presets;
    for (const auto& c : {presets::trl_v0_11(), presets::deepspeed_chat(), presets::colossalchat_v2(),
                          presets::openrlhf(), presets::verl(), presets::chatlearn(), presets::chatlearn_grpo(),
                          presets::grpo(), presets::rloo(), presets::reinforce_plus_plus()})
        CHECK_NOTHROW(rlhf::ppo::check_config(c));
    for (const auto estimator : {advantage_estimator::grpo, advantage_estimator::reinforce_plus_plus,
                                 advantage_estimator::reinforce_plus_plus_baseline}) {
        CAPTURE(rlhf::to_string(estimator));
        rlhf::ppo::config c = presets::grpo();
        c.estimator = estimator;
        c.advantage_whitening = rlhf::whiten_options{};
        const rlhf::error e = rlhf_test::check_error([&] { rlhf::ppo::check_config(c); }, rlhf::error_kind::config,
                                                     "advantage_whitening");
        CHECK(e.expected().find("allow_double_whitening") != std::string::npos);
        c.allow_double_whitening = true;
        CHECK_NOTHROW(rlhf::ppo::check_config(c));
    }
    // Estimators that do not normalise may be whitened (Dr.GRPO, RLOO, GRPO without the std).
    rlhf::ppo::config c = presets::grpo();
    c.advantage_whitening = rlhf::whiten_options{};
    c.grpo.normalize_by_std = false;
    CHECK_NOTHROW(rlhf::ppo::check_config(c));
    c = presets::rloo();
    c.advantage_whitening = rlhf::whiten_options{};
    CHECK_NOTHROW(rlhf::ppo::check_config(c));
}
