#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "rlhf/ppo/concepts.hpp"
#include "support/test_helpers.hpp"

namespace {

using rlhf_test::expect_error;

using rlhf::ppo::generation_options;
using rlhf::ppo::policy_output;
using rlhf::ppo::prompt_batch;
using rlhf::ppo::rollout;

// Conforming models (declarations suffice for the concepts).
struct good_policy {
    rollout generate(const prompt_batch& prompts, const generation_options& options);
    torch::Tensor log_probs(const rollout& sequences);
};
struct good_entropy_policy : good_policy {
    policy_output log_probs_and_entropy(const rollout& sequences);
};
struct good_critic {
    torch::Tensor values(const rollout& sequences) const;
};
struct good_sequence_rm {
    torch::Tensor score(const rollout& sequences);
};
struct good_token_rm {
    torch::Tensor token_rewards(const rollout& sequences);
};
struct good_reference {
    torch::Tensor log_probs(const rollout& sequences);
};

// Non-conforming ones.
struct policy_without_log_probs {
    rollout generate(const prompt_batch& prompts, const generation_options& options);
};
struct policy_without_generate {
    torch::Tensor log_probs(const rollout& sequences);
};
struct policy_generate_returns_tensor {
    torch::Tensor generate(const prompt_batch& prompts, const generation_options& options);
    torch::Tensor log_probs(const rollout& sequences);
};
struct policy_log_probs_returns_double {
    rollout generate(const prompt_batch& prompts, const generation_options& options);
    double log_probs(const rollout& sequences);
};
struct policy_generate_without_options {
    rollout generate(const prompt_batch& prompts);
    torch::Tensor log_probs(const rollout& sequences);
};
struct critic_returns_int {
    int values(const rollout& sequences);
};
struct critic_wrong_name {
    torch::Tensor value(const rollout& sequences);
};
struct rm_returns_void {
    void score(const rollout& sequences);
};
struct nothing {};

static_assert(rlhf::ppo::Policy<good_policy>);
static_assert(rlhf::ppo::Policy<good_entropy_policy>);
static_assert(rlhf::ppo::EntropyPolicy<good_entropy_policy>);
static_assert(!rlhf::ppo::EntropyPolicy<good_policy>);
static_assert(!rlhf::ppo::Policy<policy_without_log_probs>);
static_assert(!rlhf::ppo::Policy<policy_without_generate>);
static_assert(!rlhf::ppo::Policy<policy_generate_returns_tensor>);
static_assert(!rlhf::ppo::Policy<policy_log_probs_returns_double>);
static_assert(!rlhf::ppo::Policy<policy_generate_without_options>);
static_assert(!rlhf::ppo::Policy<nothing>);

static_assert(rlhf::ppo::ReferenceModel<good_reference>);
static_assert(rlhf::ppo::ReferenceModel<good_policy>);  // a frozen policy is a reference
static_assert(!rlhf::ppo::Policy<good_reference>);      // but a reference cannot generate
static_assert(!rlhf::ppo::ReferenceModel<policy_log_probs_returns_double>);
static_assert(!rlhf::ppo::ReferenceModel<nothing>);

static_assert(rlhf::ppo::Critic<good_critic>);
static_assert(rlhf::ppo::Critic<const good_critic>);
static_assert(!rlhf::ppo::Critic<critic_returns_int>);
static_assert(!rlhf::ppo::Critic<critic_wrong_name>);
static_assert(!rlhf::ppo::Critic<good_policy>);

static_assert(rlhf::ppo::SequenceRewardModel<good_sequence_rm>);
static_assert(!rlhf::ppo::TokenRewardModel<good_sequence_rm>);
static_assert(rlhf::ppo::TokenRewardModel<good_token_rm>);
static_assert(!rlhf::ppo::SequenceRewardModel<good_token_rm>);
static_assert(rlhf::ppo::RewardModel<good_sequence_rm>);
static_assert(rlhf::ppo::RewardModel<good_token_rm>);
static_assert(!rlhf::ppo::RewardModel<rm_returns_void>);
static_assert(!rlhf::ppo::RewardModel<good_critic>);

// Parameter sync: member form, callable form, neither.
struct trainer_model {
    std::vector<torch::Tensor> params;
    std::vector<torch::Tensor> parameters() const { return params; }
};
struct inference_model {
    std::vector<torch::Tensor> params;
    std::vector<torch::Tensor> bufs;
    std::vector<torch::Tensor> parameters() const { return params; }
    std::vector<torch::Tensor> buffers() const { return bufs; }
};
struct member_sync {
    int calls = 0;
    void sync(trainer_model&, inference_model&) { ++calls; }
};
struct not_a_sync {
    void sync(inference_model&, trainer_model&);  // the wrong direction
};
inline auto callable_sync = [](trainer_model&, inference_model&) {};

static_assert(rlhf::ppo::ParameterSync<member_sync, trainer_model, inference_model>);
static_assert(rlhf::ppo::ParameterSync<decltype(callable_sync), trainer_model, inference_model>);
static_assert(!rlhf::ppo::ParameterSync<not_a_sync, trainer_model, inference_model>);
static_assert(!rlhf::ppo::ParameterSync<nothing, trainer_model, inference_model>);
static_assert(rlhf::ppo::ParameterSync<rlhf::ppo::copy_parameters, trainer_model, inference_model>);
static_assert(!rlhf::ppo::ParameterSync<rlhf::ppo::copy_parameters, trainer_model, nothing>);
static_assert(rlhf::ppo::HasParameters<trainer_model>);
static_assert(!rlhf::ppo::HasParameters<nothing>);

// The boundary form the trainer uses: a constrained template.
template <rlhf::ppo::Policy P>
constexpr bool accepts_policy(P*) {
    return true;
}
template <class T>
concept boundary_accepts = requires(T* t) {
    accepts_policy(t);
};
static_assert(boundary_accepts<good_policy>);
static_assert(!boundary_accepts<policy_without_generate>);

rollout make_rollout() {
    // Row 0: left-padded prompt [pad, 5, 6] + response [7, 8]; row 1: prompt [1, 2, 3] + response [4].
    return {torch::tensor({0, 5, 6, 7, 8, 1, 2, 3, 4, 0}, torch::kInt64).reshape({2, 5}),
            torch::tensor({0, 1, 1, 1, 1, 1, 1, 1, 1, 0}, torch::kInt64).reshape({2, 5}),
            torch::tensor({3, 3}, torch::kInt64), torch::tensor({5, 4}, torch::kInt64)};
}

}  // namespace

TEST_CASE("ppo::sync_parameters calls the member or the callable form" * doctest::test_suite("unit")) {
    trainer_model from;
    inference_model to;
    member_sync member;
    rlhf::ppo::sync_parameters(member, from, to);
    CHECK(member.calls == 1);
    int calls = 0;
    auto counting = [&calls](trainer_model&, inference_model&) { ++calls; };
    rlhf::ppo::sync_parameters(counting, from, to);
    CHECK(calls == 1);
}

TEST_CASE("ppo::copy_parameters copies parameters and buffers / casting dtype" * doctest::test_suite("unit")) {
    inference_model from{{torch::arange(6, torch::kFloat32).reshape({2, 3}), torch::full({3}, 2.5)},
                         {torch::tensor({7.0})}};
    inference_model to{{torch::zeros({2, 3}, torch::kFloat64), torch::zeros({3})}, {torch::zeros({1})}};
    to.params[0].requires_grad_(true);
    rlhf::ppo::copy_parameters sync;
    rlhf::ppo::sync_parameters(sync, from, to);
    CHECK(torch::equal(to.params[0], torch::arange(6, torch::kFloat64).reshape({2, 3})));
    CHECK(torch::equal(to.params[1], torch::full({3}, 2.5)));
    CHECK(to.bufs[0].item<double>() == 7.0);

    trainer_model only_params{{torch::ones({2, 3}), torch::ones({3})}};
    rlhf::ppo::sync_parameters(sync, only_params, to);  // no buffers on one side: parameters only
    CHECK(to.params[1].sum().item<double>() == 3.0);
    CHECK(to.bufs[0].item<double>() == 7.0);

    trainer_model fewer{{torch::ones({2, 3})}};
    auto e = expect_error([&] { rlhf::ppo::sync_parameters(sync, fewer, to); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "to");
    CHECK(e.expected() == "1 parameters (as 'from')");
    trainer_model wrong_shape{{torch::ones({3, 2}), torch::ones({3})}};
    e = expect_error([&] { rlhf::ppo::sync_parameters(sync, wrong_shape, to); });
    CHECK(e.argument() == "to");
    CHECK(e.expected() == "[3, 2] for parameters[0] (as 'from')");
    CHECK(e.actual() == "[2, 3]");
}

TEST_CASE("ppo::response_mask and gather_response use the response layout" * doctest::test_suite("unit")) {
    const rollout r = make_rollout();
    CHECK(rlhf::ppo::response_width(r) == 2);
    const torch::Tensor mask = rlhf::ppo::response_mask(r);
    CHECK((mask.scalar_type() == torch::kBool));
    CHECK(torch::equal(mask, torch::tensor({true, true, true, false}).reshape({2, 2})));
    CHECK((rlhf::ppo::response_mask(r, 3, torch::kFloat32).sizes() == std::vector<std::int64_t>{2, 3}));

    torch::Tensor per_position = torch::arange(10, torch::kFloat64).reshape({2, 5}).requires_grad_(true);
    const torch::Tensor gathered = rlhf::ppo::gather_response(per_position, r);
    // Row 0: positions 3, 4; row 1: position 3, then padding.
    CHECK(torch::equal(gathered.detach(), torch::tensor({3.0, 4.0, 8.0, 0.0}, torch::kFloat64).reshape({2, 2})));
    gathered.sum().backward();
    CHECK(torch::equal(per_position.grad(),
                       torch::tensor({0., 0., 0., 1., 1., 0., 0., 0., 1., 0.}, torch::kFloat64).reshape({2, 5})));

    // Ranges ending at the last column; a wider response layout pads with 0.
    const rollout tail{torch::zeros({1, 3}, torch::kInt64), torch::ones({1, 3}, torch::kInt64),
                       torch::tensor({1}, torch::kInt64), torch::tensor({3}, torch::kInt64)};
    CHECK(torch::equal(rlhf::ppo::gather_response(torch::tensor({{10.0, 11.0, 12.0}}), tail, 4),
                       torch::tensor({{11.0, 12.0, 0.0, 0.0}})));
}

TEST_CASE("ppo::check_rollout names the offending argument" * doctest::test_suite("unit")) {
    constexpr const char* f = "rlhf::test";
    CHECK_NOTHROW(rlhf::ppo::check_rollout(make_rollout(), f));
    rollout r = make_rollout();
    r.response_start = torch::tensor({3.0, 3.0});
    auto e = expect_error([&] { rlhf::ppo::check_rollout(r, f); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "response_start");
    CHECK(e.expected() == "int64");
    CHECK(e.actual() == "float32");

    r = make_rollout();
    r.response_end = torch::tensor({5, 6}, torch::kInt64);
    e = expect_error([&] { rlhf::ppo::check_rollout(r, f); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "response_end");
    CHECK(e.actual() == "response_start[1] = 3, response_end[1] = 6");

    r = make_rollout();
    r.response_start = torch::tensor({3, 5}, torch::kInt64);
    e = expect_error([&] { rlhf::ppo::check_rollout(r, f); });
    CHECK(e.argument() == "response_start");

    r = make_rollout();
    r.response_end = torch::tensor({5, 4, 4}, torch::kInt64);
    e = expect_error([&] { rlhf::ppo::check_rollout(r, f); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "response_end");
    CHECK(e.expected() == "2 rows (the rows of 'sequences')");

    r = make_rollout();
    r.attention_mask = torch::ones({2, 4}, torch::kInt64);
    e = expect_error([&] { rlhf::ppo::check_rollout(r, f); });
    CHECK(e.argument() == "attention_mask");
    CHECK(e.kind() == rlhf::error_kind::shape);

    r = make_rollout();
    r.attention_mask = torch::full({2, 5}, 2, torch::kInt64);
    e = expect_error([&] { rlhf::ppo::check_rollout(r, f); });
    CHECK(e.argument() == "attention_mask");
    CHECK(e.kind() == rlhf::error_kind::value);

    r = make_rollout();
    r.sequences = r.sequences.to(torch::kFloat32);
    e = expect_error([&] { rlhf::ppo::check_rollout(r, f); });
    CHECK(e.argument() == "sequences");
    CHECK(e.kind() == rlhf::error_kind::dtype);
}

TEST_CASE("ppo::check_generation_options rejects out-of-range options" * doctest::test_suite("unit")) {
    constexpr const char* f = "rlhf::test";
    CHECK_NOTHROW(rlhf::ppo::check_generation_options({}, f));
    CHECK_NOTHROW(rlhf::ppo::check_generation_options({.temperature = 0.0, .greedy = true}, f));
    CHECK(expect_error([&] { rlhf::ppo::check_generation_options({.max_new_tokens = 0}, f); }).argument() ==
          "max_new_tokens");
    CHECK(expect_error([&] { rlhf::ppo::check_generation_options({.temperature = 0.0}, f); }).argument() ==
          "temperature");
    CHECK(expect_error([&] { rlhf::ppo::check_generation_options({.top_k = -1}, f); }).argument() == "top_k");
    const auto e = expect_error([&] { rlhf::ppo::check_generation_options({.top_p = 1.5}, f); });
    CHECK(e.argument() == "top_p");
    CHECK(e.kind() == rlhf::error_kind::config);
}
