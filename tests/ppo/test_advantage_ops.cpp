// The advantage stage's torch-op compositions (rlhf/libtorch/advantage_ops.hpp) against the fused
// CPU kernels, on CPU tensors: random shapes (single columns, a long row), the conformance masks
// (full, right and left padding, interior holes, empty rows) plus one valid token per row, float32
// and float64, every option that changes the math. Outputs agree within the scaled error of the
// conformance suite (max |c − r| / max |r|): 1e-5 in float32, 1e-12 in float64. Where the kernel
// throws, the composition throws an `rlhf::error` of the same kind naming the same argument.

#include <doctest/doctest.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "rlhf/entry/advantages.hpp"
#include "rlhf/entry/outcome_advantages.hpp"
#include "rlhf/entry/rewards.hpp"
#include "rlhf/libtorch/advantage_ops.hpp"
#include "rlhf/libtorch/conformance.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/advantage_stage.hpp"
#include "rlhf/ppo/presets.hpp"
#include "support/test_helpers.hpp"

namespace {

namespace ops = rlhf::libtorch::torch_ops;
namespace conf = rlhf::libtorch::conformance::detail;
using Tensor = torch::Tensor;

double tolerance(torch::Dtype dtype) {
    return dtype == torch::kFloat32 ? 1e-5 : 1e-12;
}

struct counts {
    int compared = 0;
    int both_threw = 0;
};

// Runs the kernel and the composition; both throw alike, or their outputs agree within `tol`.
void agree(counts& n, const std::string& name, double tol, const std::function<Tensor()>& fused,
           const std::function<Tensor()>& composed) {
    CAPTURE(name);
    std::optional<rlhf::error> fused_error, composed_error;
    Tensor expected, got;
    try {
        expected = fused();
    } catch (const rlhf::error& e) {
        fused_error = e;
    }
    try {
        got = composed();
    } catch (const rlhf::error& e) {
        composed_error = e;
    }
    REQUIRE(fused_error.has_value() == composed_error.has_value());
    if (fused_error) {
        CHECK(fused_error->kind() == composed_error->kind());
        CHECK(fused_error->argument() == composed_error->argument());
        ++n.both_threw;
        return;
    }
    CHECK((got.scalar_type() == expected.scalar_type()));
    const conf::comparison c = conf::compare(got, expected, false);
    CAPTURE(c.worst);
    CHECK(c.max_error <= tol);
    ++n.compared;
}

Tensor pair(const auto& result) {
    return torch::stack({result.advantages, result.returns});
}

struct batch {
    std::string name;
    Tensor mask;  // bool
    Tensor a, b, values, scores, boot, groups;
};

// Every (shape, mask pattern, dtype) case.
std::vector<batch> batches(torch::Dtype dtype) {
    std::vector<batch> out;
    conf::generator gen(2026);
    for (const auto& [rows, cols] :
         std::vector<std::pair<std::int64_t, std::int64_t>>{{6, 7}, {4, 1}, {3, 300}, {1, 5}}) {
        std::vector<conf::named_mask> masks = conf::mask_patterns(rows, cols, gen);
        Tensor single = torch::zeros({rows, cols}, torch::kFloat64);
        for (std::int64_t r = 0; r < rows; ++r) single[r][gen.integer(0, cols - 1)] = 1.0;
        masks.push_back({"single_token", single});
        for (const conf::named_mask& m : masks) {
            std::vector<std::int64_t> ids;
            for (std::int64_t r = 0; r < rows; ++r) ids.push_back(r < rows - 1 || rows == 1 ? r / 2 : 99);
            out.push_back({m.name + "/" + std::to_string(rows) + "x" + std::to_string(cols), m.mask.ne(0),
                           (-gen.normal_matrix(rows, cols).abs() * 2.0).to(dtype),
                           (-gen.normal_matrix(rows, cols).abs() * 2.0).to(dtype),
                           gen.normal_matrix(rows, cols).to(dtype),
                           gen.normal_matrix(rows, 1).squeeze(1).mul(3.0).to(dtype),
                           gen.normal_matrix(rows, 1).squeeze(1).to(dtype), torch::tensor(ids, torch::kInt64)});
        }
    }
    return out;
}

// Calls `body(batch, tolerance, name)` for every batch in float32 and float64.
void for_each_batch(const std::function<void(const batch&, double, const std::string&)>& body) {
    for (const torch::Dtype dtype : {torch::kFloat32, torch::kFloat64})
        for (const batch& x : batches(dtype))
            body(x, tolerance(dtype), x.name + (dtype == torch::kFloat32 ? "/f32" : "/f64"));
}

}  // namespace

TEST_CASE("torch_ops advantage stage: KL shaping and whitening agree with the fused kernels" *
          doctest::test_suite("unit")) {
    counts n;
    for_each_batch([&](const batch& x, double tol, const std::string& at) {
        for (const rlhf::kl_options& kl :
             {rlhf::kl_preset::trl(), rlhf::kl_preset::trl(rlhf::kl_estimator::abs),
              rlhf::kl_preset::trl(rlhf::kl_estimator::k2), rlhf::kl_preset::verl(rlhf::kl_estimator::k3),
              rlhf::kl_preset::openrlhf(rlhf::kl_estimator::k3), rlhf::kl_preset::chatlearn()}) {
            agree(
                n, "token_kl/" + at, tol, [&] { return rlhf::token_kl(x.a, x.b, x.mask, kl); },
                [&] { return ops::token_kl(x.a, x.b, x.mask, kl); });
        }
        std::vector<rlhf::reward_shaping_options> shapings;
        for (const rlhf::advantage_preset& p :
             {rlhf::presets::trl_v0_11(), rlhf::presets::trl(), rlhf::presets::deepspeed_chat(),
              rlhf::presets::colossalchat_v2(), rlhf::presets::openrlhf(), rlhf::presets::chatlearn()})
            shapings.push_back(p.rewards);
        shapings.push_back({.kl_coef = 0.3, .empty_rows = rlhf::empty_row_policy::drop_score});
        shapings.push_back({.kl_coef = 0.3,
                            .slot = rlhf::reward_slot::every_valid_token,
                            .empty_rows = rlhf::empty_row_policy::drop_score});
        shapings.push_back({.kl_coef = 0.3,
                            .slot = rlhf::reward_slot::first_pad_slot,
                            .empty_rows = rlhf::empty_row_policy::peer_slot,
                            .kl = rlhf::kl_preset::verl(rlhf::kl_estimator::k3)});
        for (const rlhf::reward_shaping_options& s : shapings)
            agree(
                n, "shape_rewards/" + at, tol,
                [&] { return rlhf::shape_rewards_from_logprobs(x.a, x.b, x.mask, x.scores, s); },
                [&] { return ops::shape_rewards_from_logprobs(x.a, x.b, x.mask, x.scores, s); });
        for (const rlhf::whiten_options& w : std::vector<rlhf::whiten_options>{
                 {},
                 {.shift_mean = false},
                 {.variance = rlhf::variance_estimator::biased, .epsilon_mode = rlhf::whiten_epsilon::clamp_variance},
                 {.variance = rlhf::variance_estimator::biased,
                 .scope = rlhf::whiten_scope::per_row,
                 .epsilon_mode = rlhf::whiten_epsilon::clamp_variance,
                 .small_sample = rlhf::small_sample_policy::zero_variance,
                 .zero_masked = true},
                 {.scope = rlhf::whiten_scope::per_row, .small_sample = rlhf::small_sample_policy::skip},
                 {.small_sample = rlhf::small_sample_policy::skip, .zero_masked = true, .count_epsilon = 1e-8},
                 {.scale = false}}) {
            agree(
                n, "masked_whiten/" + at, tol, [&] { return rlhf::masked_whiten(x.values, x.mask, w); },
                [&] { return ops::masked_whiten(x.values, x.mask, w); });
            agree(
                n, "whiten/" + at, tol, [&] { return rlhf::whiten(x.values, w); },
                [&] { return ops::whiten(x.values, w); });
        }
    });
    CHECK(n.compared > 1000);
    CHECK(n.both_threw > 20);  // empty rows under raise, one token under an unbiased variance
}

TEST_CASE("torch_ops advantage stage: GAE and the outcome estimators agree with the fused kernels" *
          doctest::test_suite("unit")) {
    counts n;
    for_each_batch([&](const batch& x, double tol, const std::string& at) {
        for (const rlhf::gae_masking masking :
             {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
            for (const double lambda : {0.95, 1.0}) {
                const rlhf::gae_options g{.gamma = 0.99, .lambda = lambda, .masking = masking};
                agree(
                    n, "gae/" + at, tol, [&] { return pair(rlhf::compute_gae(x.a, x.values, x.mask, g)); },
                    [&] { return pair(ops::compute_gae(x.a, x.values, x.mask, g)); });
                agree(
                    n, "gae_bootstrap/" + at, tol,
                    [&] { return pair(rlhf::compute_gae(x.a, x.values, x.mask, x.boot, g)); },
                    [&] { return pair(ops::compute_gae(x.a, x.values, x.mask, x.boot, g)); });
            }
        }
        const Tensor r = x.a;  // token rewards
        for (const rlhf::singleton_group_policy single :
             {rlhf::singleton_group_policy::raw_score, rlhf::singleton_group_policy::zero,
              rlhf::singleton_group_policy::raise}) {
            for (const rlhf::grpo_options& o :
                 {rlhf::grpo_options{.singleton = single},
                  rlhf::grpo_options{
                      .epsilon = 1e-5, .std_estimator = rlhf::variance_estimator::biased, .singleton = single},
                  rlhf::grpo_options{.normalize_by_std = false, .singleton = single}})
                agree(
                    n, "grpo/" + at, tol, [&] { return rlhf::compute_grpo_advantages(r, x.mask, x.groups, o); },
                    [&] { return ops::compute_grpo_advantages(r, x.mask, x.groups, o); });
            agree(
                n, "dr_grpo/" + at, tol,
                [&] { return rlhf::compute_dr_grpo_advantages(r, x.mask, x.groups, {.singleton = single}); },
                [&] { return ops::compute_dr_grpo_advantages(r, x.mask, x.groups, {.singleton = single}); });
            agree(
                n, "rloo/" + at, tol,
                [&] { return rlhf::compute_rloo_advantages(r, x.mask, x.groups, {.singleton = single}); },
                [&] { return ops::compute_rloo_advantages(r, x.mask, x.groups, {.singleton = single}); });
            agree(
                n, "opo/" + at, tol,
                [&] { return rlhf::compute_opo_advantages(r, x.mask, x.groups, {.singleton = single}); },
                [&] { return ops::compute_opo_advantages(r, x.mask, x.groups, {.singleton = single}); });
        }
        for (const rlhf::reinforce_plus_plus_options& o :
             {rlhf::reinforce_plus_plus_preset::verl(0.9), rlhf::reinforce_plus_plus_preset::openrlhf(0.9),
              rlhf::reinforce_plus_plus_options{.masking = rlhf::return_masking::skip_masked}})
            agree(
                n, "reinforce_pp/" + at, tol,
                [&] { return pair(rlhf::compute_reinforce_plus_plus_advantages(r, x.mask, o)); },
                [&] { return pair(ops::compute_reinforce_plus_plus_advantages(r, x.mask, o)); });
        for (const rlhf::reinforce_plus_plus_baseline_options& o :
             {rlhf::reinforce_plus_plus_baseline_preset::verl(), rlhf::reinforce_plus_plus_baseline_preset::openrlhf()})
            agree(
                n, "reinforce_pp_baseline/" + at, tol,
                [&] { return pair(rlhf::compute_reinforce_plus_plus_baseline_advantages(r, x.mask, x.groups, o)); },
                [&] { return pair(ops::compute_reinforce_plus_plus_baseline_advantages(r, x.mask, x.groups, o)); });
        agree(
            n, "remax/" + at, tol, [&] { return pair(rlhf::compute_remax_advantages(r, x.mask, x.scores)); },
            [&] { return pair(ops::compute_remax_advantages(r, x.mask, x.scores)); });
    });
    CHECK(n.compared > 800);
    CHECK(n.both_threw > 20);  // holes under valid_range, singleton groups under raise, small samples
}

TEST_CASE("torch_ops advantage stage: deferred checks throw once at verify and name the argument" *
          doctest::test_suite("unit")) {
    const Tensor mask = torch::tensor({1, 0, 1, 1}, torch::kBool).reshape({1, 4});
    const Tensor x = torch::randn({1, 4}, torch::kFloat64);
    rlhf::libtorch::deferred_checks checks;
    // The hole under valid_range is recorded, not thrown, until verify.
    const auto out = ops::compute_gae(x, x, mask, {.masking = rlhf::gae_masking::valid_range}, &checks);
    CHECK(out.advantages.defined());
    CHECK(checks.size() > 0);
    const rlhf::error e = rlhf_test::expect_error([&] { checks.verify(); });
    CHECK(e.argument() == "mask");
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(checks.size() == 0);
    checks.verify();  // cleared: nothing left to throw
    // A NaN value is named too.
    Tensor bad = x.clone();
    bad[0][2] = std::nan("");
    CHECK(rlhf_test::expect_error([&] { (void)ops::masked_whiten(bad, mask); }).argument() == "values");
}

namespace {

rlhf::ppo::advantage_inputs stage_inputs(torch::Dtype dtype, const Tensor& mask, std::uint64_t seed) {
    conf::generator gen(seed);
    const std::int64_t rows = mask.size(0), cols = mask.size(1);
    return {.log_probs = (-gen.normal_matrix(rows, cols).abs()).to(dtype),
            .ref_log_probs = (-gen.normal_matrix(rows, cols).abs()).to(dtype),
            .mask = mask,
            .scores = gen.normal_matrix(rows, 1).squeeze(1).to(dtype),
            .values = gen.normal_matrix(rows, cols).to(dtype),
            .group_ids = torch::arange(rows, torch::kInt64).div(2, "floor"),
            .baseline = gen.normal_matrix(rows, 1).squeeze(1).to(dtype)};
}

std::vector<rlhf::ppo::config> stage_configs() {
    std::vector<rlhf::ppo::config> configs;
    rlhf::advantage_preset whitened = rlhf::presets::trl_v0_11();
    whitened.reward_whitening = rlhf::whiten_options{.shift_mean = false};
    for (const rlhf::advantage_preset& p :
         {rlhf::presets::trl_v0_11(), rlhf::presets::deepspeed_chat(), rlhf::presets::colossalchat_v2(),
          rlhf::presets::openrlhf(), rlhf::presets::verl(), rlhf::presets::chatlearn(), whitened})
        configs.push_back(rlhf::ppo::from_advantage_preset(p));
    for (const rlhf::advantage_estimator e :
         {rlhf::advantage_estimator::grpo, rlhf::advantage_estimator::dr_grpo, rlhf::advantage_estimator::rloo,
          rlhf::advantage_estimator::opo, rlhf::advantage_estimator::reinforce_plus_plus,
          rlhf::advantage_estimator::reinforce_plus_plus_baseline, rlhf::advantage_estimator::remax}) {
        rlhf::ppo::config c;
        c.estimator = e;
        c.samples_per_prompt = 2;
        c.reward.score_clip = 1.0;
        configs.push_back(c);
    }
    namespace pp = rlhf::ppo::presets;
    for (const rlhf::ppo::config& c :
         {pp::trl_v0_11(), pp::deepspeed_chat(), pp::colossalchat_v2(), pp::openrlhf(), pp::verl(),
          pp::chatlearn_grpo(), pp::chatlearn(), pp::grpo(), pp::rloo(), pp::reinforce_plus_plus()})
        configs.push_back(c);
    return configs;
}

}  // namespace

TEST_CASE("ppo::compute_advantage_stage: the torch_ops route equals the fused route on every preset" *
          doctest::test_suite("unit")) {
    const Tensor mask = torch::arange(9, torch::kInt64).unsqueeze(0).lt(torch::tensor({9, 4, 1, 7}).unsqueeze(1));
    int compared = 0;
    for (const torch::Dtype dtype : {torch::kFloat32, torch::kFloat64}) {
        const rlhf::ppo::advantage_inputs in = stage_inputs(dtype, mask, 11);
        for (rlhf::ppo::config c : stage_configs()) {
            CAPTURE(rlhf::to_string(c.estimator));
            c.advantage_ops = rlhf::ppo::advantage_route::by_device;
            const auto fused = rlhf::ppo::compute_advantage_stage(c, 0.05, in);
            c.advantage_ops = rlhf::ppo::advantage_route::torch_ops;
            const auto composed = rlhf::ppo::compute_advantage_stage(c, 0.05, in);
            for (const auto& [got, expected] :
                 {std::pair{composed.shaped_rewards, fused.shaped_rewards}, std::pair{composed.rewards, fused.rewards},
                  std::pair{composed.advantages, fused.advantages}, std::pair{composed.returns, fused.returns}}) {
                const conf::comparison cmp = conf::compare(got, expected, false);
                CAPTURE(cmp.worst);
                CHECK((got.scalar_type() == dtype));
                CHECK(cmp.max_error <= tolerance(dtype));
                ++compared;
            }
            const auto kl_fused = rlhf::ppo::measure_rollout_kl(c, in.log_probs, in.ref_log_probs, in.mask);
            c.advantage_ops = rlhf::ppo::advantage_route::by_device;
            const auto kl_composed = rlhf::ppo::measure_rollout_kl(c, in.log_probs, in.ref_log_probs, in.mask);
            CHECK(kl_composed.metric == doctest::Approx(kl_fused.metric).epsilon(tolerance(dtype)));
            CHECK(kl_composed.controller.value == doctest::Approx(kl_fused.controller.value).epsilon(tolerance(dtype)));
        }
    }
    CHECK(compared > 60);
}

TEST_CASE("ppo::compute_advantage_stage: bfloat16 and float16 inputs compute in float32" *
          doctest::test_suite("unit")) {
    const Tensor mask = torch::arange(6, torch::kInt64).unsqueeze(0).lt(torch::tensor({6, 3, 5, 2}).unsqueeze(1));
    for (const torch::Dtype low : {torch::kBFloat16, torch::kFloat16}) {
        const rlhf::ppo::advantage_inputs raw = stage_inputs(torch::kFloat32, mask, 5);
        rlhf::ppo::advantage_inputs half = raw;
        for (Tensor* t : {&half.log_probs, &half.ref_log_probs, &half.values, &half.scores}) *t = t->to(low);
        rlhf::ppo::advantage_inputs widened = half;
        for (Tensor* t : {&widened.log_probs, &widened.ref_log_probs, &widened.values, &widened.scores})
            *t = t->to(torch::kFloat32);
        for (const rlhf::ppo::advantage_route route :
             {rlhf::ppo::advantage_route::by_device, rlhf::ppo::advantage_route::torch_ops}) {
            rlhf::ppo::config c = rlhf::ppo::from_advantage_preset(rlhf::presets::openrlhf());
            c.advantage_ops = route;
            const auto got = rlhf::ppo::compute_advantage_stage(c, 0.1, half);
            const auto expected = rlhf::ppo::compute_advantage_stage(c, 0.1, widened);
            CHECK((got.advantages.scalar_type() == torch::kFloat32));
            CHECK(torch::equal(got.advantages, expected.advantages));
            CHECK(torch::equal(got.returns, expected.returns));
            rlhf::ppo::step_metrics m;
            rlhf::ppo::record_advantage_metrics(m, half.mask, half.scores, got, half.values);
            CHECK(m.response_tokens == doctest::Approx(16.0));
        }
    }
}
