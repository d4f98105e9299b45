// The PPO trainer's hooks on the loop: learning-rate schedules (config and callback forms, kept by
// checkpoints) and the reference-model refresh (TRL `sync_ref_model`).
#include <doctest/doctest.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numbers>
#include <vector>

#include "ppo/toy_models.hpp"
#include "rlhf/ppo.hpp"
#include "support/test_helpers.hpp"

namespace {

using namespace rlhf_test::toys;
using rlhf::ppo::lr_scheduler_type;

/// One optimizer step per trainer step: 4 rows, one minibatch, one epoch.
rlhf::ppo::config one_step_config() {
    rlhf::ppo::config c = rlhf::ppo::presets::openrlhf();
    c.rollout_batch_size = 4;
    c.generation = {.max_new_tokens = 3};
    c.ppo_epochs = 1;
    c.seed = 3;
    return c;
}

/// A trainer over the toy models with SGD (policy LR 0.1, critic LR 0.2).
struct run {
    toy_policy policy{1};
    toy_critic critic{2};
    toy_policy reference{3};
    count_reward reward;
    torch::optim::SGD policy_optimizer{policy.parameters(), torch::optim::SGDOptions(0.1)};
    torch::optim::SGD critic_optimizer{critic.parameters(), torch::optim::SGDOptions(0.2)};
    rlhf::ppo::ppo_trainer<toy_policy, toy_critic, count_reward, toy_policy> trainer;
    explicit run(const rlhf::ppo::config& c)
        : trainer(c, {.policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
                  {.policy = &policy_optimizer, .critic = &critic_optimizer}) {}
};

std::string schedule_field(const rlhf::ppo::lr_schedule_options& o) {
    rlhf::ppo::config c = one_step_config();
    c.lr_schedule = o;
    return rlhf_test::expect_error([&] { rlhf::ppo::check_config(c); }).argument();
}

}  // namespace

TEST_CASE("ppo::lr_factor is the warm-up then constant linear or cosine decay of transformers and verl" *
          doctest::test_suite("unit")) {
    using rlhf::ppo::lr_factor;
    const rlhf::ppo::lr_schedule_options cosine{
        .type = lr_scheduler_type::cosine, .warmup_steps = 2, .total_steps = 10, .min_lr_ratio = 0.1};
    CHECK(lr_factor(cosine, 0) == 0.0);
    CHECK(lr_factor(cosine, 1) == 0.5);
    CHECK(lr_factor(cosine, 2) == 1.0);
    for (std::int64_t k = 2; k <= 12; ++k) {
        const double p = std::min(1.0, static_cast<double>(k - 2) / 8.0);
        CHECK(lr_factor(cosine, k) == doctest::Approx(0.1 + 0.9 * 0.5 * (1.0 + std::cos(std::numbers::pi * p))));
    }
    CHECK(lr_factor(cosine, 10) == doctest::Approx(0.1));
    CHECK(lr_factor(cosine, 50) == doctest::Approx(0.1));  // stays at the minimum after the run
    const rlhf::ppo::lr_schedule_options linear{
        .type = lr_scheduler_type::linear, .warmup_ratio = 0.25, .total_steps = 8};
    CHECK(rlhf::ppo::warmup_steps_of(linear) == 2);  // ceil(0.25 · 8), transformers / OpenRLHF
    CHECK(lr_factor(linear, 1) == 0.5);
    CHECK(lr_factor(linear, 5) == doctest::Approx(0.5));  // (8 − 5) / (8 − 2)
    CHECK(lr_factor(linear, 8) == 0.0);
    const rlhf::ppo::lr_schedule_options constant{.warmup_steps = 4};
    CHECK(lr_factor(constant, 3) == 0.75);
    CHECK(lr_factor(constant, 400) == 1.0);
    CHECK(rlhf::parse_option<lr_scheduler_type>("cosine_with_min_lr") == lr_scheduler_type::cosine);
    CHECK(rlhf::parse_option<lr_scheduler_type>("constant_with_warmup") == lr_scheduler_type::constant);

    // Errors name the field.
    CHECK(schedule_field({.type = lr_scheduler_type::cosine}) == "lr_schedule.total_steps");
    CHECK(schedule_field({.warmup_steps = -1}) == "lr_schedule.warmup_steps");
    CHECK(schedule_field({.warmup_steps = 5, .total_steps = 4}) == "lr_schedule.warmup_steps");
    CHECK(schedule_field({.warmup_ratio = 1.5, .total_steps = 4}) == "lr_schedule.warmup_ratio");
    CHECK(schedule_field({.total_steps = 4, .min_lr_ratio = 2.0}) == "lr_schedule.min_lr_ratio");
    CHECK(schedule_field({.total_steps = 4, .num_cycles = 0.0}) == "lr_schedule.num_cycles");
    rlhf::ppo::config c = one_step_config();
    c.critic_lr_schedule = rlhf::ppo::lr_schedule_options{.type = lr_scheduler_type::linear};
    rlhf_test::check_error([&] { rlhf::ppo::check_config(c); }, rlhf::error_kind::config,
                           "critic_lr_schedule.total_steps");
}

TEST_CASE("ppo_trainer: the LR of every optimizer step follows its schedule and a resumed run keeps it" *
          doctest::test_suite("unit")) {
    const std::filesystem::path path = std::filesystem::temp_directory_path() / "rlhf_lr_schedule_resume_test.pt";
    rlhf::ppo::config c = one_step_config();
    const rlhf::ppo::lr_schedule_options policy_schedule{
        .type = lr_scheduler_type::cosine, .warmup_steps = 2, .total_steps = 6, .min_lr_ratio = 0.1};
    const rlhf::ppo::lr_schedule_options critic_schedule{.type = lr_scheduler_type::linear, .total_steps = 6};
    c.lr_schedule = policy_schedule;
    c.critic_lr_schedule = critic_schedule;
    constexpr std::int64_t steps = 6;
    run uninterrupted(c);
    std::vector<rlhf::ppo::step_metrics> expected;
    for (std::int64_t k = 0; k < steps; ++k) {
        const auto m = uninterrupted.trainer.step(make_prompts(k, 4));
        REQUIRE(m.optimizer_steps == 1);
        CHECK(m.policy_lr == doctest::Approx(0.1 * rlhf::ppo::lr_factor(policy_schedule, k)).epsilon(1e-15));
        CHECK(m.critic_lr == doctest::Approx(0.2 * rlhf::ppo::lr_factor(critic_schedule, k)).epsilon(1e-15));
        CHECK(uninterrupted.policy_optimizer.param_groups()[0].options().get_lr() == m.policy_lr);
        expected.push_back(m);
    }
    CHECK(expected[0].policy_lr == 0.0);  // the first warm-up step
    CHECK(expected[2].policy_lr == doctest::Approx(0.1));

    {
        run first(c);
        for (std::int64_t k = 0; k < 3; ++k) (void)first.trainer.step(make_prompts(k, 4));
        first.trainer.save_checkpoint(path);
    }
    run resumed(c);
    resumed.trainer.load_checkpoint(path);
    for (std::int64_t k = 3; k < steps; ++k) {
        const auto m = resumed.trainer.step(make_prompts(k, 4));
        CHECK(m.policy_lr == expected[static_cast<std::size_t>(k)].policy_lr);
        CHECK(m.critic_lr == expected[static_cast<std::size_t>(k)].critic_lr);
        CHECK(m.policy_loss == expected[static_cast<std::size_t>(k)].policy_loss);
    }
    CHECK(max_difference(resumed.policy.parameters(), uninterrupted.policy.parameters()) == 0.0);
    CHECK(max_difference(resumed.critic.parameters(), uninterrupted.critic.parameters()) == 0.0);
    std::filesystem::remove(path);

    // The callback form (torch `LambdaLR`) replaces the config's schedule; no schedule leaves the LR alone.
    run custom(c);
    std::vector<std::int64_t> seen;
    custom.trainer.set_lr_lambda([&](std::int64_t k) {
        seen.push_back(k);
        return 1.0 / static_cast<double>(k + 1);
    });
    for (std::int64_t k = 0; k < 3; ++k) {
        const auto m = custom.trainer.step(make_prompts(k, 4));
        CHECK(m.policy_lr == doctest::Approx(0.1 / static_cast<double>(k + 1)).epsilon(1e-15));
        CHECK(m.critic_lr == doctest::Approx(0.2 * rlhf::ppo::lr_factor(critic_schedule, k)).epsilon(1e-15));
    }
    CHECK(seen == std::vector<std::int64_t>{0, 1, 2});
    run plain(one_step_config());
    for (std::int64_t k = 0; k < 2; ++k) CHECK(plain.trainer.step(make_prompts(k, 4)).policy_lr == 0.1);
}

TEST_CASE("ppo_trainer: sync_ref_model mixes the policy into the reference every N steps" *
          doctest::test_suite("unit")) {
    rlhf::ppo::config c = one_step_config();
    c.sync_ref_model = true;
    c.ref_model_sync_steps = 2;
    c.ref_model_mixup_alpha = 0.25;
    run r(c);
    const std::vector<torch::Tensor> initial = toy_policy(3).parameters();
    (void)r.trainer.step(make_prompts(0, 4));
    CHECK(max_difference(r.reference.parameters(), initial) == 0.0);  // not yet: step 1
    (void)r.trainer.step(make_prompts(1, 4));
    std::vector<torch::Tensor> expected;
    for (std::size_t i = 0; i < initial.size(); ++i)
        expected.push_back(initial[i] * 0.75 + r.policy.parameters()[i].detach() * 0.25);
    CHECK(max_difference(r.reference.parameters(), expected) < 1e-15);
    CHECK(max_difference(r.reference.parameters(), initial) > 1e-4);
    // The refreshed reference is in the checkpoint: a resumed run continues with it.
    const std::filesystem::path path = std::filesystem::temp_directory_path() / "rlhf_reference_refresh_test.pt";
    r.trainer.save_checkpoint(path);
    run resumed(c);
    resumed.trainer.load_checkpoint(path);
    CHECK(max_difference(resumed.reference.parameters(), r.reference.parameters()) == 0.0);
    std::filesystem::remove(path);

    // α = 1 is a copy (copy_parameters).
    c.ref_model_sync_steps = 1;
    c.ref_model_mixup_alpha = 1.0;
    run copied(c);
    (void)copied.trainer.step(make_prompts(0, 4));
    CHECK(max_difference(copied.reference.parameters(), copied.policy.parameters()) == 0.0);
}

namespace {

struct reference_without_parameters {
    toy_policy inner{3};
    torch::Tensor log_probs(const rollout& r) { return inner.log_probs(r); }
};

}  // namespace

TEST_CASE("ppo::check_config refuses a reference refresh without a reference with parameters" *
          doctest::test_suite("unit")) {
    rlhf::ppo::config c = rlhf::ppo::presets::grpo();
    c.kl = rlhf::ppo::kl_placement::none;
    c.sync_ref_model = true;
    toy_policy policy(1);
    count_reward reward;
    torch::optim::SGD optimizer(policy.parameters(), torch::optim::SGDOptions(0.1));
    auto e = rlhf_test::check_error(
        [&] {
            rlhf::ppo::ppo_trainer trainer(c, rlhf::ppo::trainer_models{.policy = &policy, .reward_model = &reward},
                                           {.policy = &optimizer});
        },
        rlhf::error_kind::config, "sync_ref_model");
    CHECK(e.actual() == "true, and no reference");
    reference_without_parameters frozen;
    e = rlhf_test::check_error(
        [&] {
            rlhf::ppo::ppo_trainer trainer(
                c, rlhf::ppo::trainer_models{.policy = &policy, .reward_model = &reward, .reference = &frozen},
                {.policy = &optimizer});
        },
        rlhf::error_kind::config, "sync_ref_model");
    CHECK(e.actual() == "true, and a reference without parameters()");
    c.ref_model_sync_steps = 0;
    rlhf_test::check_error([&] { rlhf::ppo::check_config(c); }, rlhf::error_kind::config, "ref_model_sync_steps");
    c.ref_model_sync_steps = 4;
    for (const double alpha : {0.0, -0.5, 1.5}) {
        c.ref_model_mixup_alpha = alpha;
        rlhf_test::check_error([&] { rlhf::ppo::check_config(c); }, rlhf::error_kind::config, "ref_model_mixup_alpha");
    }
}
