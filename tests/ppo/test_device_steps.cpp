// Device-resident training steps: deferred loss statistics, counted host reads, sync-free
// gradient clipping and loss scaling (docs/ppo.md, "Device-resident steps" and "Mixed precision").
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ppo/toy_models.hpp"
#include "rlhf/libtorch/host_reads.hpp"
#include "rlhf/libtorch/kernel_concepts.hpp"
#include "rlhf/ppo.hpp"
#include "support/doctest_torch.hpp"
#include "support/test_helpers.hpp"

namespace {

using namespace rlhf_test::toys;
using rlhf::libtorch::statistics_readback;

struct loss_inputs {
    torch::Tensor lp, old, adv, ref, values, old_values, returns, mask;
};

loss_inputs random_inputs(std::uint64_t seed) {
    auto g = seeded(seed);
    const auto o = torch::TensorOptions(torch::kFloat64);
    loss_inputs in;
    in.lp = (torch::randn({5, 7}, g, o) * 0.5 - 1.0).requires_grad_(true);
    in.old = in.lp.detach() + torch::randn({5, 7}, g, o) * 0.3;
    in.adv = torch::randn({5, 7}, g, o);
    in.ref = in.lp.detach() + torch::randn({5, 7}, g, o) * 0.2;
    in.values = torch::randn({5, 7}, g, o).requires_grad_(true);
    in.old_values = in.values.detach() + torch::randn({5, 7}, g, o) * 0.3;
    in.returns = torch::randn({5, 7}, g, o);
    in.mask = torch::rand({5, 7}, g, o).gt(0.3);
    in.mask.index_put_({3}, false);  // an empty row
    return in;
}

template <class Stats>
void check_same_stats(Stats a, Stats b) {
    std::vector<double> x, y;
    rlhf::libtorch::for_each_field(a, [&](const auto& f) { x.push_back(static_cast<double>(f)); });
    rlhf::libtorch::for_each_field(b, [&](const auto& f) { y.push_back(static_cast<double>(f)); });
    REQUIRE(x.size() == y.size());
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(x[i] == y[i]);
}

// The gae config of the trainer tests, with the micro-batch size given.
rlhf::ppo::config step_config(std::int64_t micro_batch_size) {
    return {
        .rollout_batch_size = 8,
        .samples_per_prompt = 2,
        .generation = {.max_new_tokens = 5},
        .reward = {.slot = rlhf::reward_slot::last_valid_token, .kl = {.estimator = rlhf::kl_estimator::k1}},
        .kl_control = rlhf::fixed_kl_options{.kl_coef = 0.1},
        .gae = {.gamma = 1.0, .lambda = 0.95},
        .policy_loss = {.clip_low = 0.2, .clip_high = 0.2},
        .value_loss = {.clip_range = 0.2, .coef = 0.5},
        .entropy_coef = 0.01,
        .ppo_epochs = 2,
        .minibatch_size = 4,
        .micro_batch_size = micro_batch_size,
        .max_grad_norm = 0.5,
        .critic_max_grad_norm = 1.0,
        .seed = 42,
    };
}

struct models {
    toy_policy policy{7};
    toy_policy reference{7};
    toy_critic critic{8};
    count_reward reward;
    torch::optim::Adam policy_optimizer{policy.parameters(), torch::optim::AdamOptions(1e-2)};
    torch::optim::Adam critic_optimizer{critic.parameters(), torch::optim::AdamOptions(1e-2)};
};

template <class K = rlhf::libtorch::default_kernels>
auto make_trainer(models& m, const rlhf::ppo::config& c, K kernels = K{}) {
    return rlhf::ppo::ppo_trainer(
        c,
        rlhf::ppo::trainer_models{
            .policy = &m.policy, .reward_model = &m.reward, .critic = &m.critic, .reference = &m.reference},
        {.policy = &m.policy_optimizer, .critic = &m.critic_optimizer}, kernels);
}

// Host reads made by `train` for one step.
template <class Trainer>
std::int64_t reads_of_train(Trainer& trainer, std::int64_t step) {
    rlhf::ppo::step_experience data = trainer.make_experience(make_prompts(step, 4));
    const std::int64_t before = rlhf::libtorch::host_reads();
    (void)trainer.train(std::move(data));
    return rlhf::libtorch::host_reads() - before;
}

}  // namespace

TEST_CASE("torch_ops losses: deferred statistics equal the immediate ones and read nothing back" *
          doctest::test_suite("unit")) {
    const loss_inputs in = random_inputs(3);
    namespace ops = rlhf::libtorch::torch_ops;
    const rlhf::policy_loss_options po{.clip_low = 0.2, .clip_high = 0.28, .dual_clip = 3.0};
    const rlhf::value_loss_options vo{.clip_range = 0.2};
    const rlhf::kl_loss_options ko{.kl = {.estimator = rlhf::kl_estimator::k3}, .coef = 0.1};

    const auto immediate_policy = ops::policy_loss(in.lp, in.old, in.adv, in.mask, po);
    const auto immediate_value = ops::value_loss(in.values, in.old_values, in.returns, in.mask, vo);
    const auto immediate_kl = ops::kl_loss(in.lp, in.ref, in.mask, ko);
    const std::int64_t before = rlhf::libtorch::host_reads();
    const auto deferred_policy = ops::policy_loss(in.lp, in.old, in.adv, in.mask, po, statistics_readback::deferred);
    const auto deferred_value = ops::value_loss(in.values, in.old_values, in.returns, in.mask, vo,
                                                rlhf::local_reducer{}, statistics_readback::deferred);
    const auto deferred_kl =
        ops::kl_loss(in.lp, in.ref, in.mask, ko, rlhf::local_reducer{}, statistics_readback::deferred);
    CHECK(rlhf::libtorch::host_reads() == before);
    CHECK(deferred_policy.loss.item<double>() == immediate_policy.loss.item<double>());
    CHECK(deferred_value.loss.item<double>() == immediate_value.loss.item<double>());
    CHECK(deferred_kl.loss.item<double>() == immediate_kl.loss.item<double>());
    CHECK(immediate_policy.stats.valid_tokens > 0.0);
    CHECK(immediate_value.stats.clip_fraction > 0.0);
    check_same_stats(rlhf::libtorch::read_statistics(deferred_policy), immediate_policy.stats);
    check_same_stats(rlhf::libtorch::read_statistics(deferred_value), immediate_value.stats);
    check_same_stats(rlhf::libtorch::read_statistics(deferred_kl), immediate_kl.stats);
    CHECK(rlhf::libtorch::host_reads() == before + 3);

    // The same gradients, and TRL's ratio threshold decided on the device.
    const torch::Tensor g_deferred = torch::autograd::grad({deferred_policy.loss}, {in.lp})[0];
    const torch::Tensor g_immediate = torch::autograd::grad({immediate_policy.loss}, {in.lp})[0];
    CHECK(torch::equal(g_deferred, g_immediate));
    rlhf::policy_loss_options threshold = po;
    threshold.ratio_threshold = 0.5;
    const auto zeroed = ops::policy_loss(in.lp, in.old, in.adv, in.mask, threshold, statistics_readback::deferred);
    CHECK(zeroed.loss.item<double>() == 0.0);
    CHECK(torch::autograd::grad({zeroed.loss}, {in.lp})[0].abs().max().item<double>() == 0.0);
    CHECK(rlhf::libtorch::read_statistics(zeroed).ratio_threshold_exceeded);

    // The deferred path skips the value checks (the caller made them); the immediate one names them.
    const torch::Tensor bad = in.lp.detach().clone().index_put_({0, 0}, std::numeric_limits<double>::quiet_NaN());
    (void)rlhf_test::check_error([&] { (void)ops::policy_loss(bad, in.old, in.adv, in.mask, po); },
                                 rlhf::error_kind::value, "log_probs");
    CHECK_NOTHROW((void)ops::policy_loss(bad, in.old, in.adv, in.mask, po, statistics_readback::deferred));
    // Shapes and dtypes are still checked there (no host read needed).
    (void)rlhf_test::check_error(
        [&] {
            (void)ops::value_loss(in.values, in.old_values, in.returns, in.mask.to(torch::kFloat32), vo,
                                  rlhf::local_reducer{}, statistics_readback::deferred);
        },
        rlhf::error_kind::dtype, "mask");
    (void)rlhf_test::check_error(
        [&] {
            (void)ops::kl_loss(in.lp, in.ref, in.mask.narrow(1, 0, 3), ko, rlhf::local_reducer{},
                               statistics_readback::deferred);
        },
        rlhf::error_kind::shape, "mask");
}

TEST_CASE("ppo_trainer: the host reads of a step do not grow with its micro-batches" * doctest::test_suite("unit")) {
    // The device path (torch ops with deferred statistics) and the fused CPU kernels alike: the
    // statistics of every micro-batch come back in one read at the end of the step.
    const rlhf::libtorch::torch_ops_kernels device_path{.readback = statistics_readback::deferred};
    for (const std::int64_t micro : {std::int64_t{4}, std::int64_t{1}}) {
        models a, b;
        auto fused = make_trainer(a, step_config(micro));
        auto composed = make_trainer(b, step_config(micro), device_path);
        CAPTURE(micro);
        CHECK(reads_of_train(fused, 0) == 1);
        CHECK(reads_of_train(composed, 0) == 1);
    }
    // A config that needs a scalar decision per micro-batch pays one read for each: ColossalChat's
    // skip threshold (2 epochs × 2 minibatches × 4 micro-batches, plus the final read).
    models m;
    rlhf::ppo::config c = step_config(1);
    c.policy_loss.skip_threshold = 20.0;
    auto trainer = make_trainer(m, c, device_path);
    CHECK(reads_of_train(trainer, 0) == 2 * 2 * 4 + 1);
}

TEST_CASE("ppo_trainer: the device path gives the fused step" * doctest::test_suite("unit")) {
    models a, b;
    auto fused = make_trainer(a, step_config(2));
    auto composed =
        make_trainer(b, step_config(2), rlhf::libtorch::torch_ops_kernels{.readback = statistics_readback::deferred});
    for (std::int64_t step = 0; step < 2; ++step) {
        const rlhf::ppo::step_metrics x = fused.step(make_prompts(step, 4));
        const rlhf::ppo::step_metrics y = composed.step(make_prompts(step, 4));
        CHECK(y.policy_loss == doctest::Approx(x.policy_loss).epsilon(1e-12));
        CHECK(y.value_loss == doctest::Approx(x.value_loss).epsilon(1e-12));
        CHECK(y.clip_fraction == doctest::Approx(x.clip_fraction).epsilon(1e-12));
        CHECK(y.policy_grad_norm == doctest::Approx(x.policy_grad_norm).epsilon(1e-12));
        CHECK(x.optimizer_steps == 4);
    }
    CHECK(max_difference(a.policy.parameters(), b.policy.parameters()) < 1e-12);
    CHECK(max_difference(a.critic.parameters(), b.critic.parameters()) < 1e-12);
}

TEST_CASE("ppo::clip_gradients equals clip_grad_norm_ without a host read" * doctest::test_suite("unit")) {
    for (const std::size_t count : {std::size_t{1}, std::size_t{3}}) {
        auto g = seeded(11);
        std::vector<torch::Tensor> ours, theirs;
        for (std::size_t i = 0; i < count; ++i) {
            const torch::Tensor p = torch::randn({4, 3}, g, torch::kFloat32).requires_grad_(true);
            const torch::Tensor grad = torch::randn({4, 3}, g, torch::kFloat32) * 3.0;
            ours.push_back(p.detach().clone().requires_grad_(true));
            theirs.push_back(p.detach().clone().requires_grad_(true));
            ours.back().mutable_grad() = grad.clone();
            theirs.back().mutable_grad() = grad.clone();
        }
        const std::int64_t before = rlhf::libtorch::host_reads();
        const torch::Tensor norm = rlhf::ppo::clip_gradients(ours, 0.5);
        CHECK(rlhf::libtorch::host_reads() == before);
        const double expected = torch::nn::utils::clip_grad_norm_(theirs, 0.5);
        CHECK(norm.item<double>() == expected);
        for (std::size_t i = 0; i < count; ++i) CHECK(torch::equal(ours[i].grad(), theirs[i].grad()));
    }
    CHECK(rlhf::ppo::clip_gradients({torch::zeros({2}).requires_grad_(true)}, 1.0).item<double>() == 0.0);
}

TEST_CASE("ppo::loss_scaler skips non-finite steps and grows the scale" * doctest::test_suite("unit")) {
    rlhf::ppo::loss_scaler scaler({.initial_scale = 8.0, .growth_interval = 2});
    const torch::Tensor p = torch::zeros({2}).requires_grad_(true);
    p.mutable_grad() = torch::full({2}, 16.0);
    CHECK(scaler.unscale({p}));
    CHECK(p.grad()[0].item<double>() == 2.0);
    CHECK(scaler.scale() == 8.0);
    p.mutable_grad() = torch::full({2}, 16.0);
    CHECK(scaler.unscale({p}));
    CHECK(scaler.scale() == 16.0);  // two finite steps in a row
    p.mutable_grad() = torch::full({2}, std::numeric_limits<float>::infinity());
    CHECK_FALSE(scaler.unscale({p}));
    CHECK(scaler.scale() == 8.0);
    rlhf::ppo::loss_scaler fixed({.initial_scale = 4.0, .dynamic = false});
    CHECK_FALSE(fixed.unscale({p}));
    CHECK(fixed.scale() == 4.0);
}

TEST_CASE("ppo_trainer: loss scaling by a power of two leaves the step unchanged and skips overflows" *
          doctest::test_suite("unit")) {
    models a, b, c;
    rlhf::ppo::config scaled = step_config(2);
    scaled.loss_scaling = rlhf::ppo::loss_scaling_options{.initial_scale = 1024.0};
    auto plain_trainer = make_trainer(a, step_config(2));
    auto scaled_trainer = make_trainer(b, scaled);
    const rlhf::ppo::step_metrics x = plain_trainer.step(make_prompts(0, 4));
    const rlhf::ppo::step_metrics y = scaled_trainer.step(make_prompts(0, 4));
    CHECK(bitwise_equal(a.policy.parameters(), b.policy.parameters()));
    CHECK(bitwise_equal(a.critic.parameters(), b.critic.parameters()));
    CHECK(x.policy_loss == y.policy_loss);
    CHECK(y.overflow_skipped_steps == 0);

    // A policy whose gradients overflow (a float16 model under too large a scale): every step is
    // skipped and counted, the dynamic scale backs off once per skip, nothing moves.
    toy_policy policy{7};
    policy.head_b.register_hook(
        [](const torch::Tensor& grad) { return grad * std::numeric_limits<double>::infinity(); });
    toy_policy reference{7};
    toy_critic critic{8};
    count_reward reward;
    torch::optim::Adam policy_optimizer{policy.parameters(), torch::optim::AdamOptions(1e-2)};
    torch::optim::Adam critic_optimizer{critic.parameters(), torch::optim::AdamOptions(1e-2)};
    rlhf::ppo::config overflowing = step_config(2);
    overflowing.loss_scaling = rlhf::ppo::loss_scaling_options{.initial_scale = 1024.0};
    auto overflow_trainer = rlhf::ppo::ppo_trainer(
        overflowing,
        rlhf::ppo::trainer_models{
            .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
        {.policy = &policy_optimizer, .critic = &critic_optimizer});
    const std::vector<torch::Tensor> start = toy_policy(7).parameters();
    const rlhf::ppo::step_metrics z = overflow_trainer.step(make_prompts(0, 4));
    CHECK(z.overflow_skipped_steps == 4);
    CHECK(z.optimizer_steps == 0);
    CHECK(bitwise_equal(policy.parameters(), start));
    CHECK(bitwise_equal(critic.parameters(), toy_critic(8).parameters()));
}

TEST_CASE("libtorch losses take bfloat16 and float16 model outputs and compute in float32" *
          doctest::test_suite("unit")) {
    const loss_inputs in = random_inputs(9);
    for (const torch::Dtype low : {torch::kBFloat16, torch::kHalf}) {
        const torch::Tensor lp = in.lp.detach().to(low).requires_grad_(true);
        const torch::Tensor lp32 = lp.detach().to(torch::kFloat32).requires_grad_(true);
        const rlhf::policy_loss_options po{.clip_low = 0.2, .clip_high = 0.2};
        const auto reduced = rlhf::libtorch::policy_loss(lp, in.old.to(low), in.adv.to(low), in.mask, po);
        const auto reference = rlhf::libtorch::policy_loss(lp32, in.old.to(low).to(torch::kFloat32),
                                                           in.adv.to(low).to(torch::kFloat32), in.mask, po);
        CHECK((reduced.loss.scalar_type() == torch::kFloat32));
        CHECK(reduced.loss.item<double>() == reference.loss.item<double>());  // the same float32 arithmetic
        const torch::Tensor g = torch::autograd::grad({reduced.loss}, {lp})[0];
        const torch::Tensor g32 = torch::autograd::grad({reference.loss}, {lp32})[0];
        CHECK((g.scalar_type() == low));  // the gradient flows back in the model's dtype
        CHECK(torch::equal(g, g32.to(low)));
        const auto value = rlhf::libtorch::value_loss(in.values.detach().to(low), in.old_values.to(low),
                                                      in.returns.to(low), in.mask, rlhf::value_loss_options{});
        const auto kl = rlhf::libtorch::kl_loss(lp, in.ref.to(low), in.mask, rlhf::kl_loss_options{});
        CHECK((value.loss.scalar_type() == torch::kFloat32));
        CHECK((kl.loss.scalar_type() == torch::kFloat32));
    }
}
