#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/kernels/presets.hpp"
#include "rlhf/ppo/advantage_stage.hpp"
#include "support/test_helpers.hpp"

namespace {

using rlhf::ppo::advantage_inputs;
using rlhf::ppo::advantage_outputs;
using rlhf::ppo::compute_advantage_stage;
using rlhf_test::check_error;
using rlhf_test::expect_error;

template <class Call>
void expect_error_of_kind(Call&& call, rlhf::error_kind kind) {
    CHECK(expect_error(std::forward<Call>(call)).kind() == kind);
}

constexpr std::string_view test_fn = "test_advantage_stage";

// Four rows of response lengths 5, 3, 1 and 4 in a [4, 5] response layout.
torch::Tensor lengths_mask() {
    const torch::Tensor lengths = torch::tensor({5, 3, 1, 4}, torch::kInt64).unsqueeze(1);
    return torch::arange(5, torch::kInt64).unsqueeze(0).lt(lengths);
}

// A seeded batch in dtype `dtype`: log-probs, reference, values, scores, two groups of two rows.
advantage_inputs make_inputs(torch::Dtype dtype, std::uint64_t seed = 7) {
    torch::manual_seed(seed);
    const auto o = torch::TensorOptions(dtype);
    return {.log_probs = -torch::rand({4, 5}, o) * 2.0,
            .ref_log_probs = -torch::rand({4, 5}, o) * 2.0,
            .mask = lengths_mask(),
            .scores = torch::randn({4}, o) * 2.0,
            .values = torch::randn({4, 5}, o),
            .group_ids = torch::tensor({0, 0, 1, 1}, torch::kInt64)};
}

template <class T>
rlhf::view<T> v(const torch::Tensor& t) {
    return rlhf::libtorch::as_view<T>(t, test_fn, "tensor");
}

template <class T>
rlhf::mut_view<T> out_view(torch::Tensor& t) {
    return rlhf::mut_view<T>(t.data_ptr<T>(), {t.size(0), t.size(1)});
}

// The kernel preset's pipeline on the same inputs (`rlhf::compute_advantages`).
template <class T>
advantage_outputs kernel_preset(const rlhf::advantage_preset& preset, double beta, const advantage_inputs& in) {
    advantage_outputs out{.rewards = torch::empty_like(in.log_probs),
                          .advantages = torch::empty_like(in.log_probs),
                          .returns = torch::empty_like(in.log_probs)};
    rlhf::compute_advantages(v<T>(in.log_probs), v<T>(in.ref_log_probs), v<bool>(in.mask),
                             rlhf::libtorch::as_view<T, 1>(in.scores, test_fn, "scores"), v<T>(in.values),
                             out_view<T>(out.rewards), out_view<T>(out.advantages), out_view<T>(out.returns), preset,
                             beta);
    return out;
}

// `shaped_rewards` is `rlhf::shape_rewards_from_logprobs` with β.
template <class T>
void reward_shaping_check(const rlhf::ppo::config& c, double beta, const advantage_inputs& in,
                          const advantage_outputs& got) {
    torch::Tensor shaped = torch::empty_like(in.log_probs);
    rlhf::reward_shaping_options shaping = c.reward;
    shaping.kl_coef = beta;
    rlhf::shape_rewards_from_logprobs(v<T>(in.log_probs), v<T>(in.ref_log_probs), v<bool>(in.mask),
                                      rlhf::libtorch::as_view<T, 1>(in.scores, test_fn, "scores"), out_view<T>(shaped),
                                      shaping);
    CHECK(torch::equal(got.shaped_rewards, shaped));
    CHECK(torch::equal(got.shaped_rewards, got.rewards) == !c.reward_whitening.has_value());
}

template <class T>
void check_presets(torch::Dtype dtype) {
    rlhf::advantage_preset whitened = rlhf::presets::trl_v0_11();
    whitened.reward_whitening = rlhf::whiten_options{.shift_mean = false};
    for (const rlhf::advantage_preset& preset :
         {rlhf::presets::trl_v0_11(), rlhf::presets::deepspeed_chat(), rlhf::presets::colossalchat_v2(),
          rlhf::presets::openrlhf(), rlhf::presets::verl(), rlhf::presets::chatlearn(), whitened}) {
        CAPTURE(preset.framework);
        const double beta = 0.07;
        const advantage_inputs in = make_inputs(dtype);
        const rlhf::ppo::config c = rlhf::ppo::from_advantage_preset(preset);
        const advantage_outputs got = compute_advantage_stage(c, beta, in);
        const advantage_outputs expected = kernel_preset<T>(preset, beta, in);
        CHECK((got.advantages.scalar_type() == dtype));
        CHECK(torch::equal(got.rewards, expected.rewards));
        CHECK(torch::equal(got.advantages, expected.advantages));
        CHECK(torch::equal(got.returns, expected.returns));
        // The shaped rewards are those before reward whitening.
        reward_shaping_check<T>(c, beta, in, got);
    }
}

}  // namespace

TEST_CASE("ppo::compute_advantage_stage: a GAE config gives its kernel preset's outputs" *
          doctest::test_suite("unit")) {
    SUBCASE("float") {
        check_presets<float>(torch::kFloat32);
    }
    SUBCASE("double") {
        check_presets<double>(torch::kFloat64);
    }
}

TEST_CASE("ppo::compute_advantage_stage: critic-free estimators / KL placement / the mask" *
          doctest::test_suite("unit")) {
    for (const torch::Dtype dtype : {torch::kFloat32, torch::kFloat64}) {
        CAPTURE(rlhf::libtorch::dtype_name(dtype));
        const advantage_inputs in = make_inputs(dtype);
        // GRPO with the KL in the loss: the rewards are the scores alone, whatever β.
        rlhf::ppo::config c = rlhf::ppo::presets::grpo();
        const advantage_outputs grpo = compute_advantage_stage(c, 0.5, in);
        const torch::Tensor valid = in.mask.to(dtype);
        CHECK(torch::allclose(grpo.shaped_rewards.sum(1), in.scores));
        torch::Tensor per_row = torch::empty({4}, torch::kFloat64);
        const torch::Tensor scores = in.scores.to(torch::kFloat64);
        rlhf::compute_grpo_advantages(rlhf::libtorch::as_view<double, 1>(scores, test_fn, "scores"),
                                      rlhf::libtorch::as_view<std::int64_t, 1>(in.group_ids, test_fn, "groups"),
                                      rlhf::mut_view<double, 1>(per_row.data_ptr<double>(), {4}), c.grpo);
        const torch::Tensor expected = per_row.to(dtype).unsqueeze(1) * valid;
        CHECK(torch::allclose(grpo.advantages, expected, 1e-5, 1e-6));
        CHECK(torch::equal(grpo.returns, grpo.advantages));  // no value target, no whitening

        // KL in the reward: β moves the rewards by −β·kl on every token (k1, unmasked).
        c.kl = rlhf::ppo::kl_placement::reward;
        const advantage_outputs with_kl = compute_advantage_stage(c, 0.5, in);
        const torch::Tensor kl = in.log_probs - in.ref_log_probs;
        CHECK(torch::allclose(with_kl.shaped_rewards - grpo.shaped_rewards, -0.5 * kl, 1e-5, 1e-6));
        // β = 0 needs no reference.
        advantage_inputs no_reference = in;
        no_reference.ref_log_probs = torch::Tensor();
        CHECK(torch::equal(compute_advantage_stage(c, 0.0, no_reference).advantages, grpo.advantages));

        // A mask of another dtype is checked once and gives the same outputs.
        advantage_inputs int_mask = in;
        int_mask.mask = in.mask.to(torch::kInt64);
        CHECK(torch::equal(compute_advantage_stage(c, 0.5, int_mask).advantages, with_kl.advantages));

        // A token reward model: its rewards minus β·kl on the valid tokens, 0 elsewhere.
        advantage_inputs dense = in;
        dense.scores = torch::Tensor();
        dense.token_rewards = torch::randn({4, 5}, torch::TensorOptions(dtype)) * valid;
        c = rlhf::ppo::presets::reinforce_plus_plus();
        const advantage_outputs token = compute_advantage_stage(c, 0.25, dense);
        const torch::Tensor masked_kl = rlhf::token_kl(in.log_probs, in.ref_log_probs, in.mask, c.reward.kl);
        CHECK(torch::allclose(token.shaped_rewards, dense.token_rewards - 0.25 * masked_kl, 1e-5, 1e-6));
        CHECK(torch::equal(token.shaped_rewards * (1 - valid), torch::zeros_like(valid)));
    }
}

TEST_CASE("ppo::compute_advantage_stage: a missing input or a bad mask names the argument" *
          doctest::test_suite("unit")) {
    using rlhf::error_kind;
    const advantage_inputs in = make_inputs(torch::kFloat64);
    const rlhf::ppo::config gae = rlhf::ppo::presets::trl_v0_11();
    const auto stage = [](const rlhf::ppo::config& c, double beta, const advantage_inputs& inputs) {
        return [=] { (void)compute_advantage_stage(c, beta, inputs); };
    };
    advantage_inputs missing = in;
    missing.values = torch::Tensor();
    check_error(stage(gae, 0.1, missing), error_kind::value, "values");
    missing = in;
    missing.ref_log_probs = torch::Tensor();
    check_error(stage(gae, 0.1, missing), error_kind::value, "ref_log_probs");
    missing = in;
    missing.scores = torch::Tensor();
    check_error(stage(gae, 0.1, missing), error_kind::value, "scores");
    missing = in;
    missing.group_ids = torch::Tensor();
    check_error(stage(rlhf::ppo::presets::grpo(), 0.0, missing), error_kind::value, "group_ids");
    rlhf::ppo::config remax = rlhf::ppo::presets::rloo();
    remax.estimator = rlhf::advantage_estimator::remax;
    const rlhf::error e = check_error(stage(remax, 0.1, in), error_kind::value, "baseline");
    CHECK(e.function() == "rlhf::ppo::compute_advantage_stage");
    advantage_inputs half = in;
    half.mask = in.mask.to(torch::kFloat64) * 0.5;
    check_error(stage(gae, 0.1, half), error_kind::value, "mask");
    // Floating inputs of another dtype are cast to the stage's; an integer one is refused.
    advantage_inputs other_dtype = in;
    other_dtype.values = in.values.to(torch::kFloat32);
    CHECK(torch::equal(compute_advantage_stage(gae, 0.1, other_dtype).advantages,
                       compute_advantage_stage(gae, 0.1,
                                               {.log_probs = in.log_probs,
                                                .ref_log_probs = in.ref_log_probs,
                                                .mask = in.mask,
                                                .scores = in.scores,
                                                .values = other_dtype.values.to(torch::kFloat64)})
                           .advantages));
    other_dtype.values = in.values.to(torch::kInt64);
    check_error(stage(gae, 0.1, other_dtype), error_kind::dtype, "values");
}

TEST_CASE("ppo::compute_advantage_stage: ReMax's baseline is clipped as the scores" * doctest::test_suite("unit")) {
    advantage_inputs in = make_inputs(torch::kFloat64);
    rlhf::ppo::config c = rlhf::ppo::presets::rloo();
    c.estimator = rlhf::advantage_estimator::remax;
    c.reward.score_clip = 1.0;
    in.baseline = torch::full({4}, 5.0, torch::kFloat64);
    const advantage_outputs clipped = compute_advantage_stage(c, 0.0, in);
    in.baseline = torch::ones({4}, torch::kFloat64);
    const advantage_outputs at_clip = compute_advantage_stage(c, 0.0, in);
    CHECK(torch::equal(clipped.advantages, at_clip.advantages));
    in.baseline = torch::zeros({4}, torch::kFloat64);
    CHECK_FALSE(torch::equal(compute_advantage_stage(c, 0.0, in).advantages, at_clip.advantages));
}

TEST_CASE("ppo::normalize_scores and measure_rollout_kl" * doctest::test_suite("unit")) {
    const advantage_inputs in = make_inputs(torch::kFloat32);
    rlhf::ppo::config c;
    rlhf::running_moments moments;
    CHECK(torch::equal(rlhf::ppo::normalize_scores(c, moments, in.scores), in.scores));
    c.score_norm = rlhf::ppo::score_normalization::scale_and_shift;
    const torch::Tensor normalized = rlhf::ppo::normalize_scores(c, moments, in.scores);
    const torch::Tensor s = in.scores.to(torch::kFloat64);
    const double mean = s.mean().item<double>();
    const double std = s.std(true).item<double>();  // the running moments' first update: unbiased
    CHECK((normalized.scalar_type() == torch::kFloat32));
    CHECK(torch::allclose(normalized.to(torch::kFloat64), (s - mean) / (std + c.score_norm_epsilon), 1e-5, 1e-6));

    c.kl_metric = rlhf::kl_measure::token_mean;
    c.kl_control = rlhf::adaptive_kl_options{.measure = rlhf::kl_measure::seq_mean_token_sum};
    const rlhf::ppo::rollout_kl kl = rlhf::ppo::measure_rollout_kl(c, in.log_probs, in.ref_log_probs, in.mask);
    const torch::Tensor valid = in.mask.to(torch::kFloat64);
    const torch::Tensor k1 = (in.log_probs - in.ref_log_probs).to(torch::kFloat64) * valid;
    CHECK(kl.metric == doctest::Approx(k1.sum().item<double>() / valid.sum().item<double>()).epsilon(1e-6));
    CHECK(kl.controller.value == doctest::Approx(k1.sum(1).mean().item<double>()).epsilon(1e-6));
}
