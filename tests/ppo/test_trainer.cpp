#include <ATen/CPUGeneratorImpl.h>
#include <doctest/doctest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "ppo/toy_models.hpp"
#include "rlhf/ppo.hpp"
#include "support/test_helpers.hpp"

namespace {

using namespace rlhf_test::toys;
using rlhf_test::expect_error;

// Concept checks at the API boundary: a type that misses a member cannot name a trainer.
struct policy_without_generate {
    torch::Tensor log_probs(const rollout&);
    std::vector<torch::Tensor> parameters() const;
};
struct policy_without_parameters {
    rollout generate(const prompt_batch&, const generation_options&);
    torch::Tensor log_probs(const rollout&);
};
struct critic_without_values {
    std::vector<torch::Tensor> parameters() const;
};
struct reward_without_score {
    torch::Tensor scores(const rollout&);
};
struct kernels_without_value_loss {
    rlhf::libtorch::policy_loss_output policy_loss(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                                   const torch::Tensor&, const rlhf::policy_loss_options&) const;
    rlhf::libtorch::kl_loss_output kl_loss(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                           const rlhf::kl_loss_options&) const;
};

template <class P, class C, class R, class Ref, class K = rlhf::libtorch::default_kernels>
concept names_trainer = requires {
    typename rlhf::ppo::ppo_trainer<P, C, R, Ref, K>;
};

using rlhf::ppo::no_critic;
using rlhf::ppo::no_reference;
static_assert(names_trainer<toy_policy, toy_critic, count_reward, toy_policy>);
static_assert(names_trainer<toy_policy, no_critic, token_count_reward, no_reference>);
static_assert(names_trainer<toy_policy, toy_critic, count_reward, toy_policy, rlhf::libtorch::torch_ops_kernels>);
static_assert(!names_trainer<policy_without_generate, toy_critic, count_reward, toy_policy>);
static_assert(!names_trainer<policy_without_parameters, toy_critic, count_reward, toy_policy>);
static_assert(!names_trainer<toy_policy, critic_without_values, count_reward, toy_policy>);
static_assert(!names_trainer<toy_policy, toy_critic, reward_without_score, toy_policy>);
static_assert(!names_trainer<toy_policy, toy_critic, count_reward, count_reward>);  // not a reference model
static_assert(!names_trainer<toy_policy, toy_critic, count_reward, toy_policy, kernels_without_value_loss>);
static_assert(rlhf::ppo::LanguageModelPolicy<toy_policy>);
static_assert(!rlhf::ppo::LanguageModelPolicy<plain_policy>);
static_assert(rlhf::ppo::EntropyPolicy<toy_policy>);
static_assert(rlhf::ppo::TrainerKernels<rlhf::libtorch::torch_ops_kernels>);
static_assert(!rlhf::ppo::TrainerKernels<kernels_without_value_loss>);

// The config of the hand-computed step and of the resume test.
rlhf::ppo::config gae_config() {
    return {
        .rollout_batch_size = 8,
        .samples_per_prompt = 2,
        .generation = {.max_new_tokens = 5},
        .reward = {.slot = rlhf::reward_slot::last_valid_token, .kl = {.estimator = rlhf::kl_estimator::k1}},
        .kl = rlhf::ppo::kl_placement::reward,
        .kl_control =
            rlhf::adaptive_kl_options{
                .init_kl_coef = 0.1, .target = 1.0, .horizon = 100.0, .measure = rlhf::kl_measure::seq_mean_token_sum},
        .estimator = rlhf::advantage_estimator::gae,
        .gae = {.gamma = 1.0, .lambda = 0.95},
        .advantage_whitening = rlhf::whiten_options{},
        .policy_loss = {.clip_low = 0.2, .clip_high = 0.2},
        .value_loss = {.clip_range = 0.2, .coef = 0.5},
        .entropy_coef = 0.01,
        .ppo_epochs = 1,
        .minibatch_size = 4,
        .micro_batch_size = 2,
        .shuffle = false,
        .max_grad_norm = 0.5,
        .critic_max_grad_norm = 1.0,
        .seed = 42,
    };
}

}  // namespace

TEST_CASE("ppo_trainer: one step equals the step computed by hand from the kernels" * doctest::test_suite("unit")) {
    constexpr double lr = 0.1;
    toy_policy policy(1);
    toy_critic critic(2);
    toy_policy reference(3);
    count_reward reward;
    toy_policy hand_policy(1);
    toy_critic hand_critic(2);
    torch::optim::SGD policy_optimizer(policy.parameters(), torch::optim::SGDOptions(lr));
    torch::optim::SGD critic_optimizer(critic.parameters(), torch::optim::SGDOptions(lr));
    const rlhf::ppo::config cfg = gae_config();
    rlhf::ppo::ppo_trainer trainer(
        cfg,
        rlhf::ppo::trainer_models{
            .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
        {.policy = &policy_optimizer, .critic = &critic_optimizer});
    const prompt_batch prompts = make_prompts(0, 4);
    const rlhf::ppo::step_metrics m = trainer.step(prompts);
    CHECK(m.step == 1);
    CHECK(m.rows == 8);
    CHECK(m.micro_batches == 4);
    CHECK(m.optimizer_steps == 2);

    // By hand: the same rollout (the trainer's generation seed), the kernels' entry points.
    const prompt_batch expanded{prompts.input_ids.repeat_interleave(2, 0),
                                prompts.attention_mask.repeat_interleave(2, 0)};
    const rollout r = hand_policy.generate(expanded, {.max_new_tokens = 5, .seed = m.generation_seed});
    torch::Tensor old_lp, ref_lp, values, scores;
    {
        const torch::NoGradGuard no_grad;
        old_lp = hand_policy.log_probs(r);
        ref_lp = reference.log_probs(r);
        values = hand_critic.values(r);
        scores = reward.score(r);
    }
    const torch::Tensor mask = rlhf::ppo::response_mask(r);
    const torch::Tensor rewards = rlhf::shape_rewards_from_logprobs(
        old_lp, ref_lp, mask, scores, {.kl_coef = 0.1, .slot = rlhf::reward_slot::last_valid_token});
    const auto gae = rlhf::compute_gae(rewards, values, mask, {.gamma = 1.0, .lambda = 0.95});
    const torch::Tensor advantages = rlhf::masked_whiten(gae.advantages, mask);
    CHECK(m.score_mean == doctest::Approx(scores.mean().item<double>()).epsilon(1e-12));
    CHECK(m.reward_mean == doctest::Approx(rewards.sum(1).mean().item<double>()).epsilon(1e-12));
    CHECK(m.reward_std == doctest::Approx(rewards.sum(1).std(false).item<double>()).epsilon(1e-12));
    CHECK(m.score_std == doctest::Approx(scores.std(false).item<double>()).epsilon(1e-12));

    std::vector<double> policy_losses, value_losses;
    for (std::int64_t begin = 0; begin < 8; begin += 4) {
        const rollout sub = select_rows(r, begin, 4);
        const std::int64_t width = rlhf::ppo::response_width(sub);
        const torch::Tensor sub_mask = block(mask, begin, 4, width);
        const policy_output out = hand_policy.log_probs_and_entropy(sub);
        const auto pg = rlhf::libtorch::policy_loss(out.log_probs, block(old_lp, begin, 4, width),
                                                    block(advantages, begin, 4, width), sub_mask,
                                                    {.clip_low = 0.2, .clip_high = 0.2});
        const torch::Tensor valid = sub_mask.to(torch::kFloat64);
        const torch::Tensor entropy_mean = (out.entropy * valid).sum() / valid.sum();
        (pg.loss - 0.01 * entropy_mean).backward();
        const auto vl =
            rlhf::libtorch::value_loss(hand_critic.values(sub), block(values, begin, 4, width),
                                       block(gae.returns, begin, 4, width), sub_mask, {.clip_range = 0.2, .coef = 0.5});
        vl.loss.backward();
        policy_losses.push_back(pg.loss.item<double>());
        value_losses.push_back(vl.loss.item<double>());
        torch::nn::utils::clip_grad_norm_(hand_policy.parameters(), 0.5);
        torch::nn::utils::clip_grad_norm_(hand_critic.parameters(), 1.0);
        const torch::NoGradGuard no_grad;
        for (auto p : hand_policy.parameters()) {
            p.add_(p.grad(), -lr);
            p.mutable_grad().zero_();
        }
        for (auto p : hand_critic.parameters()) {
            p.add_(p.grad(), -lr);
            p.mutable_grad().zero_();
        }
    }
    CHECK(max_difference(policy.parameters(), hand_policy.parameters()) < 1e-12);
    CHECK(max_difference(critic.parameters(), hand_critic.parameters()) < 1e-12);
    CHECK(max_difference(policy.parameters(), toy_policy(1).parameters()) > 1e-4);  // it did move
    CHECK(m.policy_loss == doctest::Approx((policy_losses[0] + policy_losses[1]) / 2).epsilon(1e-10));
    CHECK(m.value_loss == doctest::Approx((value_losses[0] + value_losses[1]) / 2).epsilon(1e-10));

    // The adaptive controller, fed the per-sequence KL sum (k1) of the rollout with n_steps = 8.
    const torch::Tensor kl = ((old_lp - ref_lp) * mask.to(torch::kFloat64)).sum(1).mean();
    const double error = std::clamp(kl.item<double>() / 1.0 - 1.0, -0.2, 0.2);
    CHECK(m.kl == doctest::Approx(kl.item<double>()).epsilon(1e-12));
    CHECK(m.kl_coef == 0.1);
    CHECK(m.kl_coef_next == doctest::Approx(0.1 * (1.0 + error * 8.0 / 100.0)).epsilon(1e-14));
    CHECK(trainer.kl_coef() == m.kl_coef_next);

    // The same step with `whiten_unmasked` (ChatLearn's older PPO): every element of the padded
    // batch is whitened; the reported statistics are over the valid tokens.
    toy_policy unmasked_policy(1);
    toy_critic unmasked_critic(2);
    torch::optim::SGD unmasked_policy_optimizer(unmasked_policy.parameters(), torch::optim::SGDOptions(lr));
    torch::optim::SGD unmasked_critic_optimizer(unmasked_critic.parameters(), torch::optim::SGDOptions(lr));
    rlhf::ppo::config unmasked_cfg = cfg;
    unmasked_cfg.whiten_unmasked = true;
    rlhf::ppo::ppo_trainer unmasked_trainer(
        unmasked_cfg,
        rlhf::ppo::trainer_models{
            .policy = &unmasked_policy, .reward_model = &reward, .critic = &unmasked_critic, .reference = &reference},
        {.policy = &unmasked_policy_optimizer, .critic = &unmasked_critic_optimizer});
    const rlhf::ppo::step_metrics unmasked_m = unmasked_trainer.step(prompts);
    REQUIRE(unmasked_m.generation_seed == m.generation_seed);
    const torch::Tensor whitened = rlhf::whiten(gae.advantages);
    const torch::Tensor valid = mask.to(torch::kFloat64);
    const double mean = ((whitened * valid).sum() / valid.sum()).item<double>();
    const double std = (((whitened - mean).square() * valid).sum() / valid.sum()).sqrt().item<double>();
    CHECK(unmasked_m.advantage_mean == doctest::Approx(mean).epsilon(1e-12));
    CHECK(unmasked_m.advantage_std == doctest::Approx(std).epsilon(1e-12));
    CHECK(std::abs(unmasked_m.advantage_mean - m.advantage_mean) > 1e-6);  // not the masked whitening
}

namespace {

// A user's kernel type: the composed torch ops (any device), with call counters.
struct counting_kernels {
    mutable int policy_calls = 0;
    mutable int value_calls = 0;
    mutable int kl_calls = 0;
    rlhf::libtorch::policy_loss_output policy_loss(const torch::Tensor& lp, const torch::Tensor& old,
                                                   const torch::Tensor& adv, const torch::Tensor& mask,
                                                   const rlhf::policy_loss_options& o) const {
        ++policy_calls;
        return rlhf::libtorch::torch_ops_kernels{}.policy_loss(lp, old, adv, mask, o);
    }
    rlhf::libtorch::value_loss_output value_loss(const torch::Tensor& v, const torch::Tensor& old,
                                                 const torch::Tensor& ret, const torch::Tensor& mask,
                                                 const rlhf::value_loss_options& o) const {
        ++value_calls;
        return rlhf::libtorch::torch_ops_kernels{}.value_loss(v, old, ret, mask, o);
    }
    rlhf::libtorch::kl_loss_output kl_loss(const torch::Tensor& lp, const torch::Tensor& ref, const torch::Tensor& mask,
                                           const rlhf::kl_loss_options& o) const {
        ++kl_calls;
        return rlhf::libtorch::torch_ops_kernels{}.kl_loss(lp, ref, mask, o);
    }
};

}  // namespace

TEST_CASE("ppo_trainer: a user kernel type plugs in and gives the fused kernels' step" * doctest::test_suite("unit")) {
    toy_policy fused_policy(1), user_policy(1);
    toy_critic fused_critic(2), user_critic(2);
    toy_policy reference(3);
    count_reward reward;
    torch::optim::SGD fp(fused_policy.parameters(), torch::optim::SGDOptions(0.1));
    torch::optim::SGD fc(fused_critic.parameters(), torch::optim::SGDOptions(0.1));
    torch::optim::SGD up(user_policy.parameters(), torch::optim::SGDOptions(0.1));
    torch::optim::SGD uc(user_critic.parameters(), torch::optim::SGDOptions(0.1));
    rlhf::ppo::ppo_trainer fused(
        gae_config(),
        rlhf::ppo::trainer_models{
            .policy = &fused_policy, .reward_model = &reward, .critic = &fused_critic, .reference = &reference},
        {.policy = &fp, .critic = &fc});
    rlhf::ppo::ppo_trainer user(
        gae_config(),
        rlhf::ppo::trainer_models{
            .policy = &user_policy, .reward_model = &reward, .critic = &user_critic, .reference = &reference},
        {.policy = &up, .critic = &uc}, counting_kernels{});
    for (std::int64_t step = 0; step < 2; ++step) {
        const auto a = fused.step(make_prompts(step, 4));
        const auto b = user.step(make_prompts(step, 4));
        CHECK(b.policy_loss == doctest::Approx(a.policy_loss).epsilon(1e-10));
        CHECK(b.clip_fraction == a.clip_fraction);
    }
    CHECK(max_difference(fused_policy.parameters(), user_policy.parameters()) < 1e-10);
    CHECK(max_difference(fused_critic.parameters(), user_critic.parameters()) < 1e-10);
    CHECK(user.kernels().policy_calls == 8);  // 2 steps × 4 micro-batches
    CHECK(user.kernels().value_calls == 8);
    CHECK(user.kernels().kl_calls == 0);  // the KL is in the reward
}

TEST_CASE("ppo_trainer: GRPO with KL in the loss equals the kernels by hand" * doctest::test_suite("unit")) {
    // Critic-free: group advantages, k3 KL in the loss, micro-batches averaged (mean_of_micro_batches).
    constexpr double lr = 0.2;
    toy_policy policy(11);
    toy_policy reference(12);
    toy_policy hand_policy(11);
    count_reward reward;
    torch::optim::SGD optimizer(policy.parameters(), torch::optim::SGDOptions(lr));
    rlhf::ppo::config cfg = rlhf::ppo::presets::grpo();
    cfg.samples_per_prompt = 4;
    cfg.generation = {.max_new_tokens = 4};
    cfg.kl_control = rlhf::fixed_kl_options{.kl_coef = 0.05};
    cfg.minibatch_size = 8;
    cfg.micro_batch_size = 4;
    cfg.shuffle = false;
    cfg.scaling = rlhf::ppo::micro_batch_scaling::mean_of_micro_batches;
    cfg.max_grad_norm = std::nullopt;
    cfg.seed = 5;
    rlhf::ppo::ppo_trainer trainer(
        cfg, rlhf::ppo::trainer_models{.policy = &policy, .reward_model = &reward, .reference = &reference},
        {.policy = &optimizer});
    const prompt_batch prompts = make_prompts(3, 2);
    const auto m = trainer.step(prompts);
    CHECK(m.optimizer_steps == 1);

    const prompt_batch expanded{prompts.input_ids.repeat_interleave(4, 0),
                                prompts.attention_mask.repeat_interleave(4, 0)};
    const rollout r = hand_policy.generate(expanded, {.max_new_tokens = 4, .seed = m.generation_seed});
    torch::Tensor old_lp, ref_lp;
    {
        const torch::NoGradGuard no_grad;
        old_lp = hand_policy.log_probs(r);
        ref_lp = reference.log_probs(r);
    }
    const torch::Tensor mask = rlhf::ppo::response_mask(r);
    const torch::Tensor rewards =
        rlhf::shape_rewards(torch::zeros_like(old_lp), mask, reward.score(r), {.kl_coef = 0.0});
    const torch::Tensor groups = torch::tensor({0, 0, 0, 0, 1, 1, 1, 1}, torch::kInt64);
    const torch::Tensor advantages = rlhf::compute_grpo_advantages(rewards, mask, groups, rlhf::grpo_preset::verl());
    // Group advantages by hand: (s − mean_g) / (std_g + 1e-6) on every valid token.
    const torch::Tensor s = reward.score(r);
    for (std::int64_t row = 0; row < 8; ++row) {
        const torch::Tensor g = s.narrow(0, row / 4 * 4, 4);
        const double expected = (s[row].item<double>() - g.mean().item<double>()) / (g.std().item<double>() + 1e-6);
        CHECK(advantages[row][0].item<double>() == doctest::Approx(expected).epsilon(1e-12));
    }
    double policy_total = 0.0, kl_total = 0.0;
    for (std::int64_t begin = 0; begin < 8; begin += 4) {
        const rollout sub = select_rows(r, begin, 4);
        const std::int64_t width = rlhf::ppo::response_width(sub);
        const torch::Tensor sub_mask = block(mask, begin, 4, width);
        const torch::Tensor lp = hand_policy.log_probs(sub);
        const auto pg = rlhf::libtorch::policy_loss(lp, block(old_lp, begin, 4, width),
                                                    block(advantages, begin, 4, width), sub_mask, cfg.policy_loss);
        rlhf::kl_loss_options ko = cfg.kl_loss;
        ko.coef = 0.05;
        const auto kl = rlhf::libtorch::kl_loss(lp, block(ref_lp, begin, 4, width), sub_mask, ko);
        ((pg.loss + kl.loss) * 0.5).backward();
        policy_total += pg.loss.item<double>() * 0.5;
        kl_total += kl.loss.item<double>() * 0.5;
    }
    {
        const torch::NoGradGuard no_grad;
        for (auto p : hand_policy.parameters()) p.add_(p.grad(), -lr);
    }
    CHECK(max_difference(policy.parameters(), hand_policy.parameters()) < 1e-12);
    CHECK(m.policy_loss == doctest::Approx(policy_total).epsilon(1e-10));
    CHECK(m.kl_loss == doctest::Approx(kl_total).epsilon(1e-10));
    CHECK(m.kl_loss > 0.0);
    CHECK(m.value_loss == 0.0);
}

TEST_CASE("ppo_trainer: training raises the toy reward while the KL stays bounded" * doctest::test_suite("learning")) {
    toy_policy policy(21, 0.1);
    toy_policy reference(21, 0.1);
    toy_critic critic(22);
    count_reward reward;
    torch::optim::Adam policy_optimizer(policy.parameters(), torch::optim::AdamOptions(0.03));
    torch::optim::Adam critic_optimizer(critic.parameters(), torch::optim::AdamOptions(0.03));
    rlhf::ppo::config cfg = rlhf::ppo::presets::trl_v0_11();
    cfg.rollout_batch_size = 32;
    cfg.generation = {.max_new_tokens = 6};
    cfg.kl_control = rlhf::fixed_kl_options{.kl_coef = 0.5};
    cfg.value_loss.coef = 1.0;
    cfg.minibatch_size = 8;
    cfg.ppo_epochs = 2;
    cfg.max_grad_norm = 1.0;
    cfg.critic_max_grad_norm = 1.0;
    cfg.seed = 2024;
    rlhf::ppo::ppo_trainer trainer(
        cfg,
        rlhf::ppo::trainer_models{
            .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
        {.policy = &policy_optimizer, .critic = &critic_optimizer});
    constexpr std::int64_t steps = 40;
    std::vector<double> scores, kls;
    for (std::int64_t step = 0; step < steps; ++step) {
        const auto m = trainer.step(make_prompts(step, 32));
        scores.push_back(m.score_mean);
        kls.push_back(m.kl);
    }
    const auto mean_of = [](const std::vector<double>& v, std::size_t begin, std::size_t end) {
        double sum = 0.0;
        for (std::size_t i = begin; i < end; ++i) sum += v[i];
        return sum / static_cast<double>(end - begin);
    };
    const double before = mean_of(scores, 0, 3);
    const double after = mean_of(scores, steps - 5, steps);
    const double kl_after = mean_of(kls, steps - 5, steps);
    double kl_max = 0.0;
    for (const double k : kls) kl_max = std::max(kl_max, k);
    MESSAGE("toy reward (target tokens per response) before "
            << before << ", after " << after << "; KL (seq-sum) after " << kl_after << ", max " << kl_max);
    CHECK(after > before + 1.0);
    CHECK(kl_after < 4.0);
    CHECK(kl_max < 6.0);
}

TEST_CASE("ppo_trainer: a resumed run continues bit for bit like an uninterrupted one" * doctest::test_suite("unit")) {
    const std::filesystem::path path = std::filesystem::temp_directory_path() / "rlhf_trainer_resume_test.pt";
    rlhf::ppo::config cfg = gae_config();
    cfg.shuffle = true;
    cfg.ppo_epochs = 2;
    cfg.score_norm = rlhf::ppo::score_normalization::scale_and_shift;
    cfg.ema_beta = 0.9;
    cfg.token_balanced = true;
    cfg.cpu_offload = true;

    struct run {
        toy_policy policy;
        toy_critic critic;
        toy_policy reference{3};
        count_reward reward;
        torch::optim::Adam policy_optimizer;
        torch::optim::Adam critic_optimizer;
        rlhf::ppo::ppo_trainer<toy_policy, toy_critic, count_reward, toy_policy> trainer;
        run(const rlhf::ppo::config& c, std::uint64_t seed)
            : policy(seed),
              critic(seed + 1),
              policy_optimizer(policy.parameters(), torch::optim::AdamOptions(0.01)),
              critic_optimizer(critic.parameters(), torch::optim::AdamOptions(0.01)),
              trainer(c, {.policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
                      {.policy = &policy_optimizer, .critic = &critic_optimizer}) {}
    };

    run uninterrupted(cfg, 1);
    std::vector<rlhf::ppo::step_metrics> expected;
    for (std::int64_t step = 0; step < 4; ++step) expected.push_back(uninterrupted.trainer.step(make_prompts(step, 4)));

    {
        run first(cfg, 1);
        for (std::int64_t step = 0; step < 2; ++step) (void)first.trainer.step(make_prompts(step, 4));
        first.trainer.save_checkpoint(path);
    }
    CHECK(std::filesystem::exists(path));
    CHECK(!std::filesystem::exists(path.string() + ".tmp"));
    run resumed(cfg, 77);  // other initial weights: the checkpoint must overwrite them
    CHECK(!bitwise_equal(resumed.policy.parameters(), uninterrupted.policy.parameters()));
    resumed.trainer.load_checkpoint(path);
    CHECK(resumed.trainer.steps() == 2);
    for (std::int64_t step = 2; step < 4; ++step) {
        const auto m = resumed.trainer.step(make_prompts(step, 4));
        const auto& e = expected[static_cast<std::size_t>(step)];
        CHECK(m.step == e.step);
        CHECK(m.generation_seed == e.generation_seed);
        CHECK(m.policy_loss == e.policy_loss);
        CHECK(m.value_loss == e.value_loss);
        CHECK(m.kl_coef == e.kl_coef);
        CHECK(m.score_mean == e.score_mean);
        CHECK(m.reward_mean == e.reward_mean);
    }
    CHECK(bitwise_equal(resumed.policy.parameters(), uninterrupted.policy.parameters()));
    CHECK(bitwise_equal(resumed.critic.parameters(), uninterrupted.critic.parameters()));
    CHECK(bitwise_equal(resumed.trainer.ema_parameters(), uninterrupted.trainer.ema_parameters()));
    CHECK(resumed.trainer.kl_coef() == uninterrupted.trainer.kl_coef());
    CHECK(resumed.trainer.score_moments().mean() == uninterrupted.trainer.score_moments().mean());
    CHECK(resumed.trainer.score_moments().count() == uninterrupted.trainer.score_moments().count());

    // A checkpoint of another architecture, a missing file.
    struct wide_critic : toy_critic {
        wide_critic() : toy_critic(5) { w = torch::zeros({hidden + 1}, torch::kFloat64).requires_grad_(true); }
    };
    {
        toy_policy p(1);
        wide_critic c;
        toy_policy ref(3);
        count_reward rm;
        torch::optim::Adam po(p.parameters(), torch::optim::AdamOptions(0.01));
        torch::optim::Adam co(c.parameters(), torch::optim::AdamOptions(0.01));
        rlhf::ppo::ppo_trainer other(
            cfg, rlhf::ppo::trainer_models{.policy = &p, .reward_model = &rm, .critic = &c, .reference = &ref},
            {.policy = &po, .critic = &co});
        auto e = expect_error([&] { other.load_checkpoint(path); });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "path");
        CHECK(e.expected() == "[7] for critic[1]");
        e = expect_error([&] { other.load_checkpoint(path.string() + ".missing"); });
        CHECK(e.kind() == rlhf::error_kind::state);
        CHECK(e.argument() == "path");
    }
    std::filesystem::remove(path);
}

TEST_CASE("ppo::check_config names the offending field" * doctest::test_suite("unit")) {
    const auto field_of = [](const rlhf::ppo::config& c) {
        const auto e = expect_error([&] { rlhf::ppo::check_config(c); });
        CHECK(e.kind() == rlhf::error_kind::config);
        CHECK(e.function() == "rlhf::ppo::check_config");
        return e.argument();
    };
    CHECK_NOTHROW(rlhf::ppo::check_config(gae_config()));
    rlhf::ppo::config c = gae_config();
    c.minibatch_size = 3;  // does not divide rollout_batch_size 8
    CHECK(field_of(c) == "minibatch_size");
    c = gae_config();
    c.policy_loss.clip_low = -0.1;
    CHECK(field_of(c) == "policy_loss.clip_low");
    c = gae_config();
    c.value_loss.clip_range = -0.2;
    CHECK(field_of(c) == "value_loss.clip_range");
    c = gae_config();
    c.micro_batch_size = 8;
    CHECK(field_of(c) == "micro_batch_size");
    c = gae_config();
    c.kl_control = rlhf::adaptive_kl_options{};  // the KL unit must be named
    CHECK(field_of(c) == "kl_control.measure");
    c = gae_config();
    c.kl_control = rlhf::adaptive_kl_options{.target = -1.0, .measure = rlhf::kl_measure::token_mean};
    CHECK(field_of(c) == "kl_control.target");
    c = gae_config();
    c.estimator = rlhf::advantage_estimator::grpo;
    c.samples_per_prompt = 1;
    CHECK(field_of(c) == "samples_per_prompt");
    c = gae_config();
    c.value_loss.returns_from_advantages = true;  // with whitened advantages
    CHECK(field_of(c) == "value_loss.returns_from_advantages");
    c = gae_config();
    c.gae.lambda = 1.5;
    CHECK(field_of(c) == "gae.lambda");
    c = gae_config();
    c.advantage_whitening->epsilon = 0.0;
    CHECK(field_of(c) == "advantage_whitening.epsilon");
    c = gae_config();
    c.reward.score_clip = -5.0;
    CHECK(field_of(c) == "reward.score_clip");
    c = gae_config();
    c.kl = rlhf::ppo::kl_placement::loss;
    c.kl_loss.kl.value_clamp = 0.0;
    CHECK(field_of(c) == "kl_loss.kl.value_clamp");
    c = gae_config();
    c.ptx = rlhf::ppo::ptx_mode::mixed;
    c.ptx_coef = 1.5;
    CHECK(field_of(c) == "ptx_coef");
    c = gae_config();
    c.ema_beta = 1.5;
    CHECK(field_of(c) == "ema_beta");
    c = gae_config();
    c.ppo_epochs = 0;
    CHECK(field_of(c) == "ppo_epochs");
    c = gae_config();
    c.generation.top_p = 0.0;
    CHECK(field_of(c) == "generation.top_p");
    c = gae_config();
    c.max_grad_norm = 0.0;
    CHECK(field_of(c) == "max_grad_norm");
    c = gae_config();
    c.kl_metric = rlhf::kl_measure::unspecified;
    CHECK(field_of(c) == "kl_metric");

    // Every preset is valid on its own.
    for (const auto& preset :
         {rlhf::ppo::presets::trl_v0_11(), rlhf::ppo::presets::deepspeed_chat(),
          rlhf::ppo::presets::deepspeed_chat(true), rlhf::ppo::presets::colossalchat_v2(),
          rlhf::ppo::presets::colossalchat_v2(true), rlhf::ppo::presets::openrlhf(), rlhf::ppo::presets::verl(),
          rlhf::ppo::presets::chatlearn_grpo(), rlhf::ppo::presets::chatlearn(), rlhf::ppo::presets::grpo(),
          rlhf::ppo::presets::rloo(), rlhf::ppo::presets::reinforce_plus_plus(), rlhf::ppo::presets::openrl(),
          rlhf::ppo::presets::chatllama()})
        CHECK_NOTHROW(rlhf::ppo::check_config(preset));

    // The loop's options parse from their names (configs read from text).
    rlhf_test::check_option_round_trip<rlhf::ppo::kl_placement>();
    rlhf_test::check_option_round_trip<rlhf::ppo::ptx_mode>();
    rlhf_test::check_option_round_trip<rlhf::ppo::micro_batch_scaling>();
    rlhf_test::check_option_round_trip<rlhf::ppo::score_normalization>();
    rlhf_test::check_option_round_trip<rlhf::ppo::remainder_policy>();
    CHECK(rlhf::parse_option<rlhf::ppo::kl_placement>("use_kl_loss") == rlhf::ppo::kl_placement::loss);
    CHECK(rlhf::parse_option<rlhf::ppo::score_normalization>("use_score_norm") ==
          rlhf::ppo::score_normalization::scale_and_shift);

    // The GAE presets carry the kernel presets' reward pipeline (docs/semantics.md, golden-checked).
    const auto same_pipeline = [](const rlhf::ppo::config& trainer_config, const rlhf::advantage_preset& p) {
        CAPTURE(p.framework);
        CHECK(trainer_config.estimator == rlhf::advantage_estimator::gae);
        CHECK(trainer_config.gae.gamma == p.gae.gamma);
        CHECK(trainer_config.gae.lambda == p.gae.lambda);
        CHECK(trainer_config.gae.masking == p.gae.masking);
        CHECK(trainer_config.reward.score_clip == p.rewards.score_clip);
        CHECK(trainer_config.reward.score_clip_range == p.rewards.score_clip_range);
        CHECK(trainer_config.reward.mask_kl == p.rewards.mask_kl);
        CHECK(trainer_config.reward.divide_kl_by_length == p.rewards.divide_kl_by_length);
        CHECK(trainer_config.reward.kl.estimator == p.rewards.kl.estimator);
        CHECK(trainer_config.advantage_whitening.has_value() == p.advantage_whitening.has_value());
        CHECK(trainer_config.whiten_unmasked == p.whiten_unmasked);
        CHECK(rlhf::initial_kl_coef(trainer_config.kl_control) == rlhf::initial_kl_coef(p.kl_control));
    };
    same_pipeline(rlhf::ppo::presets::trl_v0_11(), rlhf::presets::trl_v0_11());
    same_pipeline(rlhf::ppo::presets::deepspeed_chat(), rlhf::presets::deepspeed_chat());
    same_pipeline(rlhf::ppo::presets::colossalchat_v2(), rlhf::presets::colossalchat_v2());
    same_pipeline(rlhf::ppo::presets::openrlhf(), rlhf::presets::openrlhf());
    same_pipeline(rlhf::ppo::presets::chatlearn(), rlhf::presets::chatlearn());
    CHECK(rlhf::ppo::presets::verl().gae.masking == rlhf::presets::verl().gae.masking);
    CHECK(rlhf::ppo::presets::verl().kl == rlhf::ppo::kl_placement::none);
    CHECK(rlhf::ppo::presets::deepspeed_chat().reward.slot == rlhf::reward_slot::last_valid_token);
}

TEST_CASE("ppo::check_config against the models / minibatch_rows / advantage_preset_of" * doctest::test_suite("unit")) {
    using rlhf::ppo::trainer_capabilities;
    const auto field_of = [](const rlhf::ppo::config& c, const trainer_capabilities& models) {
        const auto e = expect_error([&] { rlhf::ppo::check_config(c, models); });
        CHECK(e.kind() == rlhf::error_kind::config);
        CHECK(e.function() == "rlhf::ppo::check_config");
        return e.argument();
    };
    const trainer_capabilities fits{
        .critic = true, .critic_optimizer = true, .reference = true, .entropy_policy = true, .sequence_rewards = true};
    CHECK_NOTHROW(rlhf::ppo::check_config(gae_config(), fits));
    rlhf::ppo::config c = gae_config();
    c.score_norm = rlhf::ppo::score_normalization::scale;
    CHECK_NOTHROW(rlhf::ppo::check_config(c, fits));
    trainer_capabilities dense = fits;
    dense.sequence_rewards = false;
    dense.token_rewards = true;
    CHECK(field_of(c, dense) == "score_norm");
    c.estimator = rlhf::advantage_estimator::remax;
    CHECK(field_of(c, fits) == "score_norm");  // the greedy baseline is not normalised
    trainer_capabilities shared = fits;
    shared.critic_optimizer = false;
    c = gae_config();
    c.critic_max_grad_norm = std::nullopt;
    CHECK(field_of(c, shared) == "optimizers.critic");
    shared.policy_optimizer_holds_critic = true;
    CHECK_NOTHROW(rlhf::ppo::check_config(c, shared));
    trainer_capabilities critic_free = fits;
    critic_free.critic = false;
    CHECK(field_of(rlhf::ppo::presets::grpo(), critic_free) == "optimizers.critic");

    // Rows that a minibatch does not divide are a config error too.
    c = gae_config();
    c.rollout_batch_size = 0;
    c.minibatch_size = 3;
    CHECK(rlhf::ppo::minibatch_rows(c, 9) == 3);
    const auto e = expect_error([&] { (void)rlhf::ppo::minibatch_rows(c, 8); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "minibatch_size");
    c.minibatch_size = 0;
    CHECK(rlhf::ppo::minibatch_rows(c, 8) == 8);

    // advantage_preset_of inverts from_advantage_preset.
    for (const rlhf::advantage_preset& p : {rlhf::presets::trl_v0_11(), rlhf::presets::chatlearn()}) {
        const rlhf::advantage_preset back = rlhf::ppo::advantage_preset_of(rlhf::ppo::from_advantage_preset(p));
        CHECK(back.rewards.slot == p.rewards.slot);
        CHECK(back.rewards.score_clip == p.rewards.score_clip);
        CHECK(back.rewards.divide_kl_by_length == p.rewards.divide_kl_by_length);
        CHECK(back.gae.lambda == p.gae.lambda);
        CHECK(back.advantage_whitening.has_value() == p.advantage_whitening.has_value());
        CHECK(back.whiten_unmasked == p.whiten_unmasked);
        CHECK(rlhf::initial_kl_coef(back.kl_control) == rlhf::initial_kl_coef(p.kl_control));
    }
}

TEST_CASE("ppo_trainer: models that do not fit the config are refused with the field's name" *
          doctest::test_suite("unit")) {
    toy_policy policy(1);
    toy_policy reference(3);
    toy_critic critic(2);
    count_reward reward;
    torch::optim::SGD po(policy.parameters(), torch::optim::SGDOptions(0.1));
    torch::optim::SGD co(critic.parameters(), torch::optim::SGDOptions(0.1));

    // KL on without a reference model.
    auto e = expect_error([&] {
        rlhf::ppo::ppo_trainer t(
            gae_config(), rlhf::ppo::trainer_models{.policy = &policy, .reward_model = &reward, .critic = &critic},
            {.policy = &po, .critic = &co});
    });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "reference");
    CHECK(e.actual() == "no reference model");
    // A critic-free estimator given a critic, and GAE without one.
    rlhf::ppo::config grpo = rlhf::ppo::presets::grpo();
    e = expect_error([&] {
        rlhf::ppo::ppo_trainer t(
            grpo,
            rlhf::ppo::trainer_models{
                .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po, .critic = &co});
    });
    CHECK(e.argument() == "estimator");
    CHECK(e.actual() == "'grpo' (critic-free)");
    e = expect_error([&] {
        rlhf::ppo::ppo_trainer t(
            gae_config(),
            rlhf::ppo::trainer_models{.policy = &policy, .reward_model = &reward, .reference = &reference},
            {.policy = &po});
    });
    CHECK(e.argument() == "estimator");
    // A critic nobody optimises.
    rlhf::ppo::config no_critic_clip = gae_config();
    no_critic_clip.critic_max_grad_norm = std::nullopt;
    e = expect_error([&] {
        rlhf::ppo::ppo_trainer t(
            no_critic_clip,
            rlhf::ppo::trainer_models{
                .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po});
    });
    CHECK(e.argument() == "optimizers.critic");
    // An entropy bonus without an EntropyPolicy; PTX without lm_logits.
    plain_policy plain(1);
    torch::optim::SGD plain_optimizer(plain.parameters(), torch::optim::SGDOptions(0.1));
    e = expect_error([&] {
        rlhf::ppo::ppo_trainer t(
            gae_config(),
            rlhf::ppo::trainer_models{
                .policy = &plain, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &plain_optimizer, .critic = &co});
    });
    CHECK(e.argument() == "entropy_coef");
    rlhf::ppo::config ptx = gae_config();
    ptx.entropy_coef = 0.0;
    ptx.ptx = rlhf::ppo::ptx_mode::mixed;
    ptx.ptx_coef = 0.5;
    e = expect_error([&] {
        rlhf::ppo::ppo_trainer t(
            ptx,
            rlhf::ppo::trainer_models{
                .policy = &plain, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &plain_optimizer, .critic = &co});
    });
    CHECK(e.argument() == "ptx");
    // Null pointers.
    e = expect_error([&] {
        rlhf::ppo::ppo_trainer t(
            gae_config(),
            rlhf::ppo::trainer_models<toy_policy, count_reward, toy_critic, toy_policy>{
                .policy = nullptr, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po, .critic = &co});
    });
    CHECK(e.argument() == "models.policy");
    CHECK(e.kind() == rlhf::error_kind::value);

    // At run time: the rows do not fit the sizes, PTX without a source, a policy of the wrong shape.
    rlhf::ppo::config sizes = gae_config();
    sizes.rollout_batch_size = 0;
    sizes.minibatch_size = 3;
    {
        rlhf::ppo::ppo_trainer t(
            sizes,
            rlhf::ppo::trainer_models{
                .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po, .critic = &co});
        e = expect_error([&] { (void)t.step(make_prompts(0, 4)); });  // 8 rows
        CHECK(e.kind() == rlhf::error_kind::config);
        CHECK(e.argument() == "minibatch_size");
        // Data parallelism without a communicator.
        e = expect_error([&] { t.set_communicator(nullptr); });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "communicator");
    }
    {
        rlhf::ppo::ppo_trainer t(
            gae_config(),
            rlhf::ppo::trainer_models{
                .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po, .critic = &co});
        e = expect_error([&] { (void)t.step(make_prompts(0, 3)); });  // rollout_batch_size is 8
        CHECK(e.kind() == rlhf::error_kind::shape);
        CHECK(e.argument() == "prompts");
    }
    ptx.ptx_coef = 0.5;
    {
        rlhf::ppo::ppo_trainer t(
            ptx,
            rlhf::ppo::trainer_models{
                .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po, .critic = &co});
        e = expect_error([&] { (void)t.step(make_prompts(0, 4)); });
        CHECK(e.kind() == rlhf::error_kind::state);
        CHECK(e.argument() == "ptx_source");
    }
    struct short_policy : toy_policy {
        short_policy() : toy_policy(1) {}
        torch::Tensor log_probs(const rollout& r) { return toy_policy::log_probs(r).narrow(1, 0, 1); }
    };
    short_policy wrong;
    torch::optim::SGD wrong_optimizer(wrong.parameters(), torch::optim::SGDOptions(0.1));
    rlhf::ppo::config plain_cfg = gae_config();
    plain_cfg.entropy_coef = 0.0;
    {
        rlhf::ppo::ppo_trainer t(
            plain_cfg,
            rlhf::ppo::trainer_models{
                .policy = &wrong, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &wrong_optimizer, .critic = &co});
        e = expect_error([&] { (void)t.step(make_prompts(0, 4)); });
        CHECK(e.kind() == rlhf::error_kind::shape);
        CHECK(e.argument() == "policy.log_probs");
    }
}

TEST_CASE("ppo_trainer: the ratio threshold zeroes the whole loss and the skip threshold the actor's" *
          doctest::test_suite("unit")) {
    enum class mode { threshold_micro_batch, threshold_minibatch, skip };
    for (const mode which : {mode::threshold_micro_batch, mode::threshold_minibatch, mode::skip}) {
        CAPTURE(static_cast<int>(which));
        toy_policy policy(1);
        toy_policy reference(3);
        toy_critic critic(2);
        count_reward reward;
        torch::optim::SGD po(policy.parameters(), torch::optim::SGDOptions(0.1));
        torch::optim::SGD co(critic.parameters(), torch::optim::SGDOptions(0.1));
        rlhf::ppo::config cfg = gae_config();
        if (which == mode::skip) {
            cfg.policy_loss.skip_threshold = 1e-6;  // ColossalChat v2
        } else {
            cfg.policy_loss.ratio_threshold = 1e-6;  // TRL: every batch's mean ratio (1) exceeds it
            if (which == mode::threshold_minibatch) cfg.threshold_scope = rlhf::ppo::ratio_threshold_scope::minibatch;
        }
        rlhf::ppo::ppo_trainer trainer(
            cfg,
            rlhf::ppo::trainer_models{
                .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po, .critic = &co});
        const auto m = trainer.step(make_prompts(0, 4));
        CHECK(m.optimizer_steps == 2);  // the optimizer still steps, with zero gradients
        CHECK(bitwise_equal(policy.parameters(), toy_policy(1).parameters()));
        if (which == mode::skip) {
            CHECK(!bitwise_equal(critic.parameters(), toy_critic(2).parameters()));  // the critic still learns
            CHECK(m.skipped_micro_batches == m.micro_batches);
        } else {
            CHECK(bitwise_equal(critic.parameters(), toy_critic(2).parameters()));  // TRL: value loss × 0 too
            CHECK(m.ratio_threshold_hits == (which == mode::threshold_minibatch ? 2 : m.micro_batches));
            CHECK(m.value_loss == (which == mode::threshold_minibatch ? m.value_loss : 0.0));
        }
    }
}

TEST_CASE("ppo_trainer: early stop on the policy KL ends the epochs" * doctest::test_suite("unit")) {
    using rule = rlhf::ppo::early_stop_rule;
    const auto run = [](std::optional<double> target, rule when = rule::each_minibatch_before_step) {
        toy_policy policy(1);
        toy_policy reference(3);
        toy_critic critic(2);
        count_reward reward;
        torch::optim::SGD po(policy.parameters(), torch::optim::SGDOptions(1.0));
        torch::optim::SGD co(critic.parameters(), torch::optim::SGDOptions(0.1));
        rlhf::ppo::config cfg = gae_config();
        cfg.ppo_epochs = 4;
        cfg.early_stop_kl = target;
        cfg.early_stop = when;
        rlhf::ppo::ppo_trainer trainer(
            cfg,
            rlhf::ppo::trainer_models{
                .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po, .critic = &co});
        return trainer.step(make_prompts(0, 4));
    };
    const auto free_run = run(std::nullopt);
    CHECK(!free_run.early_stopped);
    CHECK(free_run.optimizer_steps == 8);
    CHECK(free_run.epochs_completed == 4);
    const auto stopped = run(1e-9);
    CHECK(stopped.early_stopped);
    CHECK(run(1e9).optimizer_steps == 8);
    // Judged before every step: the first minibatch (KL 0) steps, the second's step is dropped.
    CHECK(stopped.optimizer_steps == 1);
    CHECK(stopped.epochs_completed == 0);
    // TRL: judged after the epoch, whose steps were all taken.
    const auto after_epoch = run(1e-9, rule::after_epoch);
    CHECK(after_epoch.early_stopped);
    CHECK(after_epoch.epochs_completed == 1);
    CHECK(after_epoch.optimizer_steps == 2);
    CHECK(!run(1e9, rule::after_epoch).early_stopped);
}

TEST_CASE("ppo_trainer: PTX mixing and the EMA actor" * doctest::test_suite("unit")) {
    const prompt_batch ptx_tokens = make_prompts(99, 3);
    const torch::Tensor ptx_ids = torch::cat({ptx_tokens.input_ids, ptx_tokens.input_ids.flip(1)}, 1);  // [3, 4]
    const auto make = [&](rlhf::ppo::ptx_mode mode, double coef, std::optional<double> ema) {
        rlhf::ppo::config cfg = gae_config();
        cfg.ptx = mode;
        cfg.ptx_coef = coef;
        cfg.ema_beta = ema;
        cfg.minibatch_size = 8;
        cfg.max_grad_norm = std::nullopt;
        return cfg;
    };
    // ColossalChat form with ptx_coef = 1: the actor loss has weight 0, so the policy moves by
    // exactly one SGD step on the LM loss of the PTX batch.
    {
        toy_policy policy(1);
        toy_policy reference(3);
        toy_critic critic(2);
        count_reward reward;
        toy_policy hand(1);
        torch::optim::SGD po(policy.parameters(), torch::optim::SGDOptions(0.1));
        torch::optim::SGD co(critic.parameters(), torch::optim::SGDOptions(0.1));
        rlhf::ppo::config cfg = make(rlhf::ppo::ptx_mode::mixed, 1.0, 0.5);
        cfg.entropy_coef = 0.0;
        rlhf::ppo::ppo_trainer trainer(
            cfg,
            rlhf::ppo::trainer_models{
                .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po, .critic = &co});
        std::vector<std::int64_t> calls;
        trainer.set_ptx_source([&](std::int64_t step, std::int64_t minibatch) {
            calls.push_back(step * 100 + minibatch);
            return rlhf::ppo::ptx_batch{ptx_ids, torch::ones_like(ptx_ids), {}};
        });
        const auto m = trainer.step(make_prompts(0, 4));
        CHECK(calls == std::vector<std::int64_t>{0});
        const torch::Tensor lm = rlhf::libtorch::lm_loss(hand.logits_of(ptx_ids).narrow(1, 0, 3),
                                                         ptx_ids.narrow(1, 1, 3), torch::ones({3, 3}, torch::kInt64));
        CHECK(m.ptx_loss == doctest::Approx(lm.item<double>()).epsilon(1e-12));
        lm.backward();
        {
            const torch::NoGradGuard no_grad;
            for (auto p : hand.parameters()) p.add_(p.grad(), -0.1);
        }
        CHECK(max_difference(policy.parameters(), hand.parameters()) < 1e-12);
        // EMA with β = 0.5 after one step: ema = θ1 + 0.5 (θ0 − θ1).
        const auto theta0 = toy_policy(1).parameters();
        const auto theta1 = policy.parameters();
        std::vector<torch::Tensor> expected;
        for (std::size_t i = 0; i < theta0.size(); ++i)
            expected.push_back(torch::lerp(theta1[i].detach(), theta0[i], 0.5));
        CHECK(max_difference(trainer.ema_parameters(), expected) < 1e-15);
        toy_policy target(50);
        trainer.copy_ema_to(target);
        CHECK(bitwise_equal(target.parameters(), trainer.ema_parameters()));
    }
    // DeepSpeed-Chat form: a separate LM step after the actor's; a different update than without PTX.
    {
        toy_policy with_ptx(1), without(1);
        toy_policy reference(3);
        toy_critic c1(2), c2(2);
        count_reward reward;
        torch::optim::SGD p1(with_ptx.parameters(), torch::optim::SGDOptions(0.1));
        torch::optim::SGD p2(without.parameters(), torch::optim::SGDOptions(0.1));
        torch::optim::SGD o1(c1.parameters(), torch::optim::SGDOptions(0.1));
        torch::optim::SGD o2(c2.parameters(), torch::optim::SGDOptions(0.1));
        rlhf::ppo::ppo_trainer a(
            make(rlhf::ppo::ptx_mode::separate_step, 2.0, std::nullopt),
            rlhf::ppo::trainer_models{
                .policy = &with_ptx, .reward_model = &reward, .critic = &c1, .reference = &reference},
            {.policy = &p1, .critic = &o1});
        rlhf::ppo::ppo_trainer b(
            make(rlhf::ppo::ptx_mode::none, 0.0, std::nullopt),
            rlhf::ppo::trainer_models{
                .policy = &without, .reward_model = &reward, .critic = &c2, .reference = &reference},
            {.policy = &p2, .critic = &o2});
        a.set_ptx_source([&](std::int64_t, std::int64_t) { return rlhf::ppo::ptx_batch{ptx_ids, {}, {}}; });
        const auto ma = a.step(make_prompts(0, 4));
        const auto mb = b.step(make_prompts(0, 4));
        CHECK(ma.policy_loss == mb.policy_loss);  // the same actor step first
        CHECK(ma.ptx_loss > 0.0);
        CHECK(max_difference(with_ptx.parameters(), without.parameters()) > 1e-6);
        CHECK(bitwise_equal(c1.parameters(), c2.parameters()));
    }
}

TEST_CASE("ppo_trainer: critic-free estimators and token reward models run" * doctest::test_suite("unit")) {
    using rlhf::advantage_estimator;
    for (const auto estimator : {advantage_estimator::grpo, advantage_estimator::dr_grpo, advantage_estimator::rloo,
                                 advantage_estimator::opo, advantage_estimator::reinforce_plus_plus,
                                 advantage_estimator::reinforce_plus_plus_baseline, advantage_estimator::remax}) {
        CAPTURE(rlhf::to_string(estimator));
        toy_policy policy(1);
        toy_policy reference(3);
        count_reward reward;
        torch::optim::SGD po(policy.parameters(), torch::optim::SGDOptions(0.1));
        rlhf::ppo::config cfg = rlhf::ppo::presets::rloo();
        cfg.estimator = estimator;
        cfg.samples_per_prompt = 2;
        cfg.generation = {.max_new_tokens = 4};
        cfg.token_balanced = true;
        cfg.micro_batch_size = 3;
        rlhf::ppo::ppo_trainer trainer(
            cfg, rlhf::ppo::trainer_models{.policy = &policy, .reward_model = &reward, .reference = &reference},
            {.policy = &po});
        const auto m = trainer.step(make_prompts(0, 4));
        CHECK(std::isfinite(m.policy_loss));
        CHECK(m.micro_batches == 3);
        CHECK(m.kl_coef == 0.05);
    }
    // A dense reward model with KL in the reward: rewards = token rewards − β·kl.
    toy_policy policy(1);
    toy_policy reference(3);
    token_count_reward reward;
    torch::optim::SGD po(policy.parameters(), torch::optim::SGDOptions(0.1));
    rlhf::ppo::config cfg = rlhf::ppo::presets::reinforce_plus_plus();
    cfg.generation = {.max_new_tokens = 4};
    rlhf::ppo::ppo_trainer trainer(
        cfg, rlhf::ppo::trainer_models{.policy = &policy, .reward_model = &reward, .reference = &reference},
        {.policy = &po});
    auto experience = trainer.make_experience(make_prompts(0, 4));
    const rlhf::ppo::experience& batch = experience.batch;
    const torch::Tensor mask = batch.action_mask.to(torch::kFloat64);
    const torch::Tensor kl =
        rlhf::token_kl(batch.log_probs, batch.ref_log_probs, batch.action_mask, rlhf::kl_preset::openrlhf());
    const rollout r = rlhf::ppo::as_rollout(batch);
    const torch::Tensor expected = reward.token_rewards(r) - 0.01 * kl;
    CHECK(max_difference({batch.rewards * mask}, {expected * mask}) < 1e-12);
    CHECK(experience.metrics.score_mean == doctest::Approx(reward.token_rewards(r).sum(1).mean().item<double>()));
    const auto m = trainer.train(std::move(experience));
    CHECK(std::isfinite(m.policy_loss));
}

TEST_CASE("ppo_trainer: metrics go to callbacks and the JSONL and CSV sinks" * doctest::test_suite("unit")) {
    const std::filesystem::path dir = std::filesystem::temp_directory_path();
    const std::filesystem::path jsonl = dir / "rlhf_trainer_metrics.jsonl";
    const std::filesystem::path csv = dir / "rlhf_trainer_metrics.csv";
    toy_policy policy(1);
    toy_policy reference(3);
    toy_critic critic(2);
    count_reward reward;
    torch::optim::SGD po(policy.parameters(), torch::optim::SGDOptions(0.1));
    torch::optim::SGD co(critic.parameters(), torch::optim::SGDOptions(0.1));
    rlhf::ppo::config cfg = gae_config();
    cfg.eval_every = 2;
    rlhf::ppo::ppo_trainer trainer(
        cfg,
        rlhf::ppo::trainer_models{
            .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
        {.policy = &po, .critic = &co});
    std::vector<std::int64_t> seen;
    trainer.add_callback([&](const rlhf::ppo::step_metrics& m) { seen.push_back(m.step); });
    trainer.add_callback(rlhf::ppo::jsonl_sink(jsonl));
    trainer.add_callback(rlhf::ppo::csv_sink(csv));
    std::vector<std::int64_t> evaluated;
    trainer.set_evaluator([&](std::int64_t step) {
        evaluated.push_back(step);
        return std::map<std::string, double>{{"greedy_reward", 1.5}};
    });
    for (std::int64_t step = 0; step < 3; ++step) (void)trainer.step(make_prompts(step, 4));
    CHECK(seen == std::vector<std::int64_t>{1, 2, 3});
    CHECK(evaluated == std::vector<std::int64_t>{2});

    std::ifstream in(jsonl);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0].rfind("{\"step\":1,\"generation_seed\":", 0) == 0);
    CHECK(lines[0].find("\"kl_unit\":\"seq-mean-token-sum\"") != std::string::npos);
    CHECK(lines[0].find("\"early_stopped\":false") != std::string::npos);
    CHECK(lines[0].find("\"eval\"") == std::string::npos);
    CHECK(lines[1].find(",\"eval\":{\"greedy_reward\":1.5}}") != std::string::npos);
    CHECK(lines[2].back() == '}');

    std::ifstream csv_in(csv);
    std::vector<std::string> rows;
    for (std::string line; std::getline(csv_in, line);) rows.push_back(line);
    REQUIRE(rows.size() == 4);
    CHECK(rows[0].rfind("step,generation_seed,rows,response_tokens,", 0) == 0);
    CHECK(rows[1].rfind("1,", 0) == 0);
    const auto columns = [](const std::string& s) { return std::count(s.begin(), s.end(), ',') + 1; };
    CHECK(columns(rows[0]) == columns(rows[3]));
    CHECK(rows[0].find("kl_unit") != std::string::npos);
    std::filesystem::remove(jsonl);
    std::filesystem::remove(csv);

    const auto e = expect_error([&] { rlhf::ppo::jsonl_sink bad(dir / "no_such_dir" / "m.jsonl"); });
    CHECK(e.kind() == rlhf::error_kind::state);
    CHECK(e.argument() == "path");
}

TEST_CASE("ppo::engine: flows with parameter sync reproduce the trainer's steps" * doctest::test_suite("unit")) {
    // Reference run: the trainer generates with its own policy.
    toy_policy direct_policy(1);
    toy_policy reference(3);
    toy_critic direct_critic(2);
    count_reward reward;
    torch::optim::SGD dp(direct_policy.parameters(), torch::optim::SGDOptions(0.1));
    torch::optim::SGD dc(direct_critic.parameters(), torch::optim::SGDOptions(0.1));
    rlhf::ppo::ppo_trainer direct(
        gae_config(),
        rlhf::ppo::trainer_models{
            .policy = &direct_policy, .reward_model = &reward, .critic = &direct_critic, .reference = &reference},
        {.policy = &dp, .critic = &dc});
    for (std::int64_t step = 0; step < 3; ++step) (void)direct.step(make_prompts(step, 4));

    // Engine: an inference copy generates (other initial weights: the first sync fixes them).
    const auto run_engine = [&](bool sync, std::vector<torch::Tensor>& final_params) {
        toy_policy policy(1);
        toy_critic critic(2);
        toy_policy inference(99);
        torch::optim::SGD po(policy.parameters(), torch::optim::SGDOptions(0.1));
        torch::optim::SGD co(critic.parameters(), torch::optim::SGDOptions(0.1));
        rlhf::ppo::ppo_trainer trainer(
            gae_config(),
            rlhf::ppo::trainer_models{
                .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
            {.policy = &po, .critic = &co});
        std::vector<std::int64_t> evaluated;
        auto evaluator = [&](std::int64_t episode) {
            evaluated.push_back(episode);
            return std::map<std::string, double>{{"episode", static_cast<double>(episode)}};
        };
        std::int64_t synced = 0;
        auto counting_sync = [&synced, sync](toy_policy& from, toy_policy& to) {
            ++synced;
            if (sync) rlhf::ppo::copy_parameters{}.sync(from, to);
        };
        auto engine = rlhf::ppo::make_ppo_engine(
            trainer, [](std::int64_t episode) { return make_prompts(episode, 4); }, inference, evaluator,
            {.eval_every = 2}, counting_sync);
        std::vector<std::int64_t> callbacks;
        engine.add_callback([&](const auto& r) { callbacks.push_back(r.result.step); });
        const auto results = engine.learn(3);
        CHECK(results.size() == 3);
        CHECK(results[2].result.step == 3);
        CHECK(results[1].eval.at("episode") == 2.0);
        CHECK(evaluated == std::vector<std::int64_t>{2});
        CHECK(callbacks == std::vector<std::int64_t>{1, 2, 3});
        CHECK(synced == 4);  // before the first episode, then after each
        CHECK(engine.episodes() == 3);
        final_params = policy.parameters();
        if (sync) CHECK(bitwise_equal(inference.parameters(), policy.parameters()));
    };
    std::vector<torch::Tensor> synced_params, stale_params;
    run_engine(true, synced_params);
    CHECK(bitwise_equal(synced_params, direct_policy.parameters()));
    run_engine(false, stale_params);  // generating with stale weights: another run
    CHECK(!bitwise_equal(stale_params, direct_policy.parameters()));

    // A generic engine: plain callables as flows.
    std::vector<int> trained;
    rlhf::ppo::engine plain([](std::int64_t episode) { return static_cast<int>(episode) * 10; },
                            [&](int&& data, std::int64_t) {
                                trained.push_back(data);
                                return data + 1;
                            });
    const auto out = plain.learn(2);
    CHECK(trained == std::vector<int>{0, 10});
    CHECK(out[1].result == 11);
    const auto e = expect_error([&] { (void)plain.learn(-1); });
    CHECK(e.argument() == "episodes");
}

TEST_CASE("ppo_trainer: the torch_ops advantage route gives the fused route's steps on the CPU" *
          doctest::test_suite("unit")) {
    // The device path (the composed advantage stage) run on CPU tensors: equal to the fused
    // stage within float64 rounding, step after step.
    struct run {
        toy_policy policy{1};
        toy_critic critic{2};
        toy_policy reference{3};
        count_reward reward;
        torch::optim::Adam policy_optimizer{policy.parameters(), torch::optim::AdamOptions(0.01)};
        torch::optim::Adam critic_optimizer{critic.parameters(), torch::optim::AdamOptions(0.01)};
        rlhf::ppo::ppo_trainer<toy_policy, toy_critic, count_reward, toy_policy> trainer;
        explicit run(const rlhf::ppo::config& c)
            : trainer(c, {.policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
                      {.policy = &policy_optimizer, .critic = &critic_optimizer}) {}
    };
    for (rlhf::ppo::config cfg : {gae_config(), rlhf::ppo::from_advantage_preset(rlhf::presets::verl(), gae_config()),
                                  rlhf::ppo::from_advantage_preset(rlhf::presets::openrlhf(), gae_config())}) {
        run fused(cfg);
        cfg.advantage_ops = rlhf::ppo::advantage_route::torch_ops;
        run composed(cfg);
        for (std::int64_t step = 0; step < 3; ++step) {
            const auto a = fused.trainer.step(make_prompts(step, 4));
            const auto b = composed.trainer.step(make_prompts(step, 4));
            CHECK(b.generation_seed == a.generation_seed);
            CHECK(b.kl == doctest::Approx(a.kl).epsilon(1e-12));
            CHECK(b.advantage_mean == doctest::Approx(a.advantage_mean).epsilon(1e-12));
            CHECK(b.advantage_std == doctest::Approx(a.advantage_std).epsilon(1e-12));
            CHECK(b.return_mean == doctest::Approx(a.return_mean).epsilon(1e-12));
            CHECK(b.reward_mean == doctest::Approx(a.reward_mean).epsilon(1e-12));
            CHECK(b.policy_loss == doctest::Approx(a.policy_loss).epsilon(1e-10));
            CHECK(b.value_loss == doctest::Approx(a.value_loss).epsilon(1e-10));
        }
        CHECK(max_difference(composed.policy.parameters(), fused.policy.parameters()) < 1e-10);
        CHECK(max_difference(composed.critic.parameters(), fused.critic.parameters()) < 1e-10);
    }
}

namespace {

// A frozen backbone (embedding and head weights, requires_grad false) with a small trainable
// adapter (the head's bias): parameter-efficient training.
struct adapted_policy : toy_policy {
    explicit adapted_policy(std::uint64_t backbone_seed, double adapter_value = 0.0) : toy_policy(backbone_seed) {
        embed.requires_grad_(false);
        head_w.requires_grad_(false);
        head_b = torch::full({vocab}, adapter_value, torch::kFloat64).requires_grad_(true);
    }
};

std::vector<torch::Tensor> trainable(const adapted_policy& p) {
    return rlhf::ppo::trainable_tensors(p.parameters(), true);
}

}  // namespace

TEST_CASE("ppo_trainer: trainable_parameters_only keeps saves and syncs the adapter alone" *
          doctest::test_suite("unit")) {
    const std::filesystem::path path = std::filesystem::temp_directory_path() / "rlhf_trainer_adapter_test.pt";
    rlhf::ppo::config cfg = gae_config();
    cfg.ema_beta = 0.9;
    cfg.trainable_parameters_only = true;
    struct run {
        adapted_policy policy;
        toy_critic critic{2};
        toy_policy reference{3};
        count_reward reward;
        torch::optim::Adam policy_optimizer;
        torch::optim::Adam critic_optimizer{critic.parameters(), torch::optim::AdamOptions(0.01)};
        rlhf::ppo::ppo_trainer<adapted_policy, toy_critic, count_reward, toy_policy> trainer;
        run(const rlhf::ppo::config& c, double adapter_value)
            : policy(1, adapter_value),
              policy_optimizer(trainable(policy), torch::optim::AdamOptions(0.05)),
              trainer(c, {.policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
                      {.policy = &policy_optimizer, .critic = &critic_optimizer}) {}
    };

    run uninterrupted(cfg, 0.0);
    // The EMA clones the adapter only.
    REQUIRE(uninterrupted.trainer.ema_parameters().size() == 1);
    CHECK(uninterrupted.trainer.ema_parameters()[0].sizes() == uninterrupted.policy.head_b.sizes());
    for (std::int64_t step = 0; step < 4; ++step) (void)uninterrupted.trainer.step(make_prompts(step, 4));
    CHECK(bitwise_equal({uninterrupted.policy.embed, uninterrupted.policy.head_w},
                        {adapted_policy(1).embed, adapted_policy(1).head_w}));  // the backbone did not move
    CHECK(max_difference({uninterrupted.policy.head_b}, {adapted_policy(1).head_b}) > 1e-6);

    {
        run first(cfg, 0.0);
        for (std::int64_t step = 0; step < 2; ++step) (void)first.trainer.step(make_prompts(step, 4));
        first.trainer.save_checkpoint(path);
    }
    // The file holds the adapter alone (policy and EMA), the critic whole.
    {
        torch::serialize::InputArchive archive;
        archive.load_from(path.string());
        CHECK(rlhf::ppo::checkpoint::read_tensors(archive, "policy").size() == 1);
        CHECK(rlhf::ppo::checkpoint::read_tensors(archive, "ema").size() == 1);
        CHECK(rlhf::ppo::checkpoint::read_tensors(archive, "critic").size() == 3);
    }
    run resumed(cfg, 0.7);  // another adapter: the checkpoint must overwrite it
    resumed.trainer.load_checkpoint(path);
    for (std::int64_t step = 2; step < 4; ++step) (void)resumed.trainer.step(make_prompts(step, 4));
    CHECK(bitwise_equal(resumed.policy.parameters(), uninterrupted.policy.parameters()));
    CHECK(bitwise_equal(resumed.critic.parameters(), uninterrupted.critic.parameters()));
    CHECK(bitwise_equal(resumed.trainer.ema_parameters(), uninterrupted.trainer.ema_parameters()));

    // The sync copies the adapter only; the target's backbone stays its own.
    adapted_policy target(9, 0.3);
    const torch::Tensor own_embed = target.embed.clone();
    rlhf::ppo::copy_parameters{.trainable_only = true}.sync(uninterrupted.policy, target);
    CHECK(torch::equal(target.head_b, uninterrupted.policy.head_b));
    CHECK(torch::equal(target.embed, own_embed));
    adapted_policy ema_target(9, 0.3);
    uninterrupted.trainer.copy_ema_to(ema_target);
    CHECK(torch::equal(ema_target.head_b, uninterrupted.trainer.ema_parameters()[0]));
    CHECK(torch::equal(ema_target.embed, own_embed));

    // A different trainable set is an error naming the argument: the sync's target, the
    // checkpoint's path, the policy's parameters at the next EMA update.
    adapted_policy wider(9);
    wider.head_w.requires_grad_(true);
    auto e =
        expect_error([&] { rlhf::ppo::copy_parameters{.trainable_only = true}.sync(uninterrupted.policy, wider); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "to");
    {
        run other(cfg, 0.0);
        other.policy.head_w.requires_grad_(true);
        e = expect_error([&] { other.trainer.load_checkpoint(path); });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "path");
        e = expect_error([&] { (void)other.trainer.step(make_prompts(0, 4)); });
        CHECK(e.kind() == rlhf::error_kind::shape);
        CHECK(e.argument() == "policy.parameters");
    }
    std::filesystem::remove(path);
}

namespace {

// A critic whose `values` call number `poison_call` (0-based, counting every call) returns
// `poison` at row 0, column 0 (an action position: every response has a first token).
struct poisoned_critic : toy_critic {
    using toy_critic::toy_critic;
    std::int64_t calls = 0;
    std::int64_t poison_call = -1;
    double poison = std::numeric_limits<double>::quiet_NaN();
    torch::Tensor values(const rollout& r) {
        torch::Tensor v = toy_critic::values(r);
        if (calls++ == poison_call) {
            v = v.detach().clone();
            v.index_put_({0, 0}, poison);
        }
        return v;
    }
};

struct poisoned_run {
    toy_policy policy{1};
    poisoned_critic critic{2};
    toy_policy reference{3};
    count_reward reward;
    torch::optim::Adam policy_optimizer{policy.parameters(), torch::optim::AdamOptions(0.01)};
    torch::optim::Adam critic_optimizer{critic.parameters(), torch::optim::AdamOptions(0.01)};
    rlhf::ppo::ppo_trainer<toy_policy, poisoned_critic, count_reward, toy_policy> trainer;
    explicit poisoned_run(const rlhf::ppo::config& c)
        : trainer(c, {.policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
                  {.policy = &policy_optimizer, .critic = &critic_optimizer}) {}
    [[nodiscard]] std::vector<torch::Tensor> weights() const {
        std::vector<torch::Tensor> all;
        for (const auto& p : policy.parameters()) all.push_back(p.detach().clone());
        for (const auto& p : critic.parameters()) all.push_back(p.detach().clone());
        return all;
    }
};

std::string file_bytes(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE(
    "ppo_trainer: a NaN or Inf in a model's output stops the step naming the output and the step and the "
    "trainer continues" *
    doctest::test_suite("unit")) {
    const std::filesystem::path path = std::filesystem::temp_directory_path() / "rlhf_trainer_nan_test.pt";
    rlhf::ppo::config cfg = gae_config();

    // Default checks (the rollout's outputs): the step stops in make_experience, before any update.
    poisoned_run run(cfg);
    (void)run.trainer.step(make_prompts(0, 4));
    run.trainer.save_checkpoint(path);
    const std::string checkpoint = file_bytes(path);
    const std::vector<torch::Tensor> before = run.weights();
    run.critic.poison_call = run.critic.calls;  // the next call: step 2's rollout values
    auto e = expect_error([&] { (void)run.trainer.step(make_prompts(1, 4)); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.function() == "rlhf::ppo::ppo_trainer::make_experience");
    CHECK(e.argument() == "critic.values");
    CHECK(e.expected() == "finite values on the action positions of step 2");
    CHECK(e.actual() == "NaN at [0, 0]");
    CHECK(bitwise_equal(run.weights(), before));
    CHECK(run.trainer.steps() == 1);
    CHECK(file_bytes(path) == checkpoint);
    run.critic.poison = std::numeric_limits<double>::infinity();
    run.critic.poison_call = run.critic.calls;
    e = expect_error([&] { (void)run.trainer.step(make_prompts(1, 4)); });
    CHECK(e.actual() == "+Inf at [0, 0]");
    const rlhf::ppo::step_metrics continued = run.trainer.step(make_prompts(1, 4));  // the trainer goes on
    CHECK(continued.step == 2);
    CHECK(std::isfinite(continued.policy_loss));

    // Every forward checked and the step restored on error: a NaN in the training forward after
    // the first minibatch's optimizer step (1 rollout call + 2 micro-batches, then the third)
    // leaves no trace; the retried step equals the step of a run that never failed.
    cfg.check_finite = rlhf::ppo::finite_checks::every_forward;
    cfg.restore_on_error = true;
    poisoned_run failing(cfg);
    poisoned_run clean(cfg);
    (void)failing.trainer.step(make_prompts(0, 4));
    (void)clean.trainer.step(make_prompts(0, 4));
    const std::vector<torch::Tensor> start = failing.weights();
    failing.critic.poison_call = failing.critic.calls + 3;
    e = expect_error([&] { (void)failing.trainer.step(make_prompts(1, 4)); });
    CHECK(e.function() == "rlhf::ppo::ppo_trainer::train");
    CHECK(e.argument() == "critic.values");
    CHECK(e.expected() == "finite values on the action positions of step 2");
    CHECK(bitwise_equal(failing.weights(), start));
    CHECK(failing.trainer.steps() == 1);
    const rlhf::ppo::step_metrics retried = failing.trainer.step(make_prompts(1, 4));
    const rlhf::ppo::step_metrics expected = clean.trainer.step(make_prompts(1, 4));
    CHECK(retried.generation_seed == expected.generation_seed);
    CHECK(retried.policy_loss == expected.policy_loss);
    CHECK(bitwise_equal(failing.weights(), clean.weights()));
    CHECK(failing.trainer.kl_coef() == clean.trainer.kl_coef());

    // Without the restore, the updates of the minibatches before the failure stay.
    cfg.restore_on_error = false;
    poisoned_run kept(cfg);
    (void)kept.trainer.step(make_prompts(0, 4));
    const std::vector<torch::Tensor> kept_start = kept.weights();
    kept.critic.poison_call = kept.critic.calls + 3;
    CHECK_THROWS_AS((void)kept.trainer.step(make_prompts(1, 4)), rlhf::error);
    CHECK_FALSE(bitwise_equal(kept.weights(), kept_start));
    std::filesystem::remove(path);
}
