#include <ATen/CPUGeneratorImpl.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "common/tokenizer.hpp"
#include "rlhf/ppo/concepts.hpp"
#include "rlhf/ppo/generation.hpp"
#include "support/test_helpers.hpp"
#include "support/tiny_transformer.hpp"
#include "support/torch_test_helpers.hpp"

namespace {

using rlhf::error_kind;
using rlhf::ppo::generation_options;
using rlhf::ppo::prompt_batch;
using rlhf::ppo::rollout;
using rlhf_test::check_error;
using rlhf_test::tensor_of;
using rlhf_test::tiny_transformer;
using rlhf_test::to_vector;

static_assert(rlhf::ppo::CausalDecoder<tiny_transformer>);
static_assert(rlhf::ppo::TrainablePolicy<tiny_transformer>);
static_assert(rlhf::ppo::EntropyPolicy<tiny_transformer>);
static_assert(rlhf::ppo::ValueHeadPolicy<tiny_transformer>);
static_assert(rlhf::ppo::Critic<tiny_transformer>);
static_assert(rlhf::ppo::LanguageModelPolicy<tiny_transformer>);
static_assert(!rlhf::ppo::CausalDecoder<rlhf_examples::kv_cache>);

constexpr std::int64_t vocab = 16;

torch::Tensor longs(const std::vector<std::int64_t>& values, std::vector<std::int64_t> shape) {
    return tensor_of(values, std::move(shape));
}

torch::Tensor doubles(const std::vector<double>& values) {
    return tensor_of(values, {1, static_cast<std::int64_t>(values.size())});
}

// Three left-padded prompts of lengths 3, 5 and 1.
prompt_batch left_padded_prompts() {
    return {longs({0, 0, 3, 5, 7, 2, 4, 6, 8, 9, 0, 0, 0, 0, 11}, {3, 5}),
            longs({0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1}, {3, 5})};
}

// The same prompts right-padded (padding ids 13, which generate must not read).
prompt_batch right_padded_prompts() {
    return {longs({3, 5, 7, 13, 13, 2, 4, 6, 8, 9, 11, 13, 13, 13, 13}, {3, 5}),
            longs({1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0}, {3, 5})};
}

struct reference_output {
    torch::Tensor sequences, attention_mask, log_probs;
};

// Generation without a cache: the full forward over prompt + response at every step, the
// public processing and sampling steps, the same uniforms (one CPU generator seeded with
// options.seed, [B] float64 per step), EOS handled by hand.
reference_output reference_generate(tiny_transformer& model, const prompt_batch& prompts,
                                    const generation_options& options) {
    const torch::NoGradGuard no_grad;
    const std::int64_t rows = prompts.input_ids.size(0);
    torch::Tensor mask = prompts.attention_mask.clone();
    torch::Tensor sequences = torch::where(mask.ne(0), prompts.input_ids, torch::full_like(mask, options.pad_token_id));
    torch::Tensor alive = torch::ones({rows}, torch::kBool);
    torch::Generator g = at::make_generator<at::CPUGeneratorImpl>(options.seed);
    std::vector<torch::Tensor> log_probs;
    const double temperature = options.greedy ? 1.0 : options.temperature;
    for (std::int64_t t = 0; t < options.max_new_tokens; ++t) {
        const torch::Tensor logits = model.lm_logits(sequences, mask).select(1, sequences.size(1) - 1);
        const torch::Tensor processed =
            rlhf::ppo::process_logits(logits, options, rlhf::ppo::seen_tokens(sequences, mask, vocab));
        const torch::Tensor uniforms = torch::rand({rows}, g, torch::TensorOptions(torch::kFloat64));
        torch::Tensor next = options.greedy ? processed.argmax(1) : rlhf::ppo::sample_tokens(processed, uniforms);
        next = torch::where(alive, next, torch::full_like(next, options.pad_token_id));
        const torch::Tensor lp = torch::log_softmax(logits / temperature, 1).gather(1, next.unsqueeze(1)).squeeze(1);
        log_probs.push_back(torch::where(alive, lp, torch::zeros_like(lp)));
        sequences = torch::cat({sequences, next.unsqueeze(1)}, 1);
        mask = torch::cat({mask, alive.to(torch::kInt64).unsqueeze(1)}, 1);
        for (const std::int64_t eos : options.eos_token_id) alive = alive.logical_and(next.ne(eos));
        if (!alive.any().item<bool>()) break;
    }
    return {sequences, mask, torch::stack(log_probs, 1)};
}

// Emits a fixed script of response tokens per row (logit 10 on the scripted token, 0 elsewhere).
struct scripted_decoder {
    std::vector<std::vector<std::int64_t>> script;
    std::int64_t vocab = 10;
    struct cache {
        std::size_t step = 0;
    };
    [[nodiscard]] cache new_cache(std::int64_t /*rows*/) const { return {}; }
    torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& /*mask*/, const torch::Tensor& /*positions*/,
                          cache& c) const {
        torch::Tensor logits = torch::zeros({ids.size(0), ids.size(1), vocab}, torch::kFloat64);
        for (std::size_t b = 0; b < script.size(); ++b) {
            const auto& row = script[b];
            logits[static_cast<std::int64_t>(b)][ids.size(1) - 1][row[std::min(c.step, row.size() - 1)]] = 10.0;
        }
        ++c.step;
        return logits;
    }
};

// A decoder whose output is wrong in the way `make` says.
template <class Make>
struct broken_decoder {
    Make make;
    [[nodiscard]] int new_cache(std::int64_t /*rows*/) const { return 0; }
    torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor&, const torch::Tensor&, int&) const {
        return make(ids);
    }
};

std::vector<std::int64_t> row_of(const torch::Tensor& t, std::int64_t row) {
    return to_vector<std::int64_t>(t[row].to(torch::kInt64));
}

double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace

TEST_CASE("ppo::generate with a KV cache equals the full forward at every step" * doctest::test_suite("unit")) {
    tiny_transformer model({.seed = 3});
    model.to(torch::kFloat64);
    const prompt_batch prompts = left_padded_prompts();
    const std::vector<generation_options> settings = {
        {.max_new_tokens = 12,
         .temperature = 0.8,
         .top_k = 8,
         .top_p = 0.95,
         .seed = 5,
         .repetition_penalty = 1.3,
         .eos_token_id = {1, 2},
         .pad_token_id = 15},
        {.max_new_tokens = 9, .greedy = true, .repetition_penalty = 1.5, .eos_token_id = {4}},
        {.max_new_tokens = 10, .temperature = 1.2, .seed = 11, .min_p = 0.1, .eos_token_id = {0}},
    };
    bool some_row_ended_early = false;
    for (const generation_options& options : settings) {
        CAPTURE(options.seed);
        const auto result = rlhf::ppo::generate(model, prompts, options);
        const reference_output expected = reference_generate(model, prompts, options);
        const rollout& r = result.rollout;
        REQUIRE((r.sequences.sizes() == expected.sequences.sizes()));
        CHECK(torch::equal(r.sequences, expected.sequences));
        CHECK(torch::equal(r.attention_mask, expected.attention_mask));
        // float64 throughout: the cached and the full attention differ by summation order only.
        CHECK(max_abs(result.log_probs, expected.log_probs) < 1e-10);
        const torch::Tensor lengths = expected.attention_mask.narrow(1, 5, r.sequences.size(1) - 5).sum(1);
        CHECK(torch::equal(r.response_end - r.response_start, lengths));
        CHECK(torch::equal(r.response_start, torch::full({3}, 5, torch::kInt64)));
        some_row_ended_early |= lengths.min().item<std::int64_t>() < options.max_new_tokens;
    }
    CHECK(some_row_ended_early);
}

TEST_CASE("ppo::generate left-aligns right-padded prompts" * doctest::test_suite("unit")) {
    tiny_transformer model({.seed = 4});
    model.to(torch::kFloat64);
    const generation_options options{.max_new_tokens = 6, .seed = 9};
    const auto left = rlhf::ppo::generate(model, left_padded_prompts(), options);
    const auto right = rlhf::ppo::generate(model, right_padded_prompts(), options);
    CHECK(torch::equal(left.rollout.sequences, right.rollout.sequences));
    CHECK(torch::equal(left.rollout.attention_mask, right.rollout.attention_mask));
    CHECK(max_abs(left.log_probs, right.log_probs) < 1e-12);
    CHECK(row_of(right.rollout.sequences, 0).front() == 0);  // padding is pad_token_id, not 13
}

TEST_CASE("ppo::process_logits top-k keeps exactly k tokens" * doctest::test_suite("unit")) {
    const torch::Tensor logits = tensor_of(std::vector<double>{0.5, 3.0, -1.0, 2.0, 2.0, 0.0, 1.0, 2.0}, {1, 8});
    for (std::int64_t k = 1; k < 8; ++k) {
        CAPTURE(k);
        const torch::Tensor out = rlhf::ppo::process_logits(logits, {.top_k = k});
        CHECK(torch::isfinite(out).sum().item<std::int64_t>() == k);
        // The kept tokens are the k largest: no removed logit exceeds a kept one.
        const torch::Tensor kept = torch::isfinite(out);
        CHECK(logits.masked_select(kept).min().item<double>() >=
              logits.masked_select(kept.logical_not()).max().item<double>());
    }
    // Exactly k with ties at the threshold (the three 2.0 entries).
    CHECK(torch::isfinite(rlhf::ppo::process_logits(logits, {.top_k = 2})).sum().item<std::int64_t>() == 2);
}

TEST_CASE("ppo::process_logits top-p keeps the smallest set reaching p" * doctest::test_suite("unit")) {
    const torch::Tensor logits = doubles({std::log(0.2), std::log(0.4), std::log(0.1), std::log(0.3)});
    auto kept = [&](double p) {
        return to_vector<std::uint8_t>(
            torch::isfinite(rlhf::ppo::process_logits(logits, {.top_p = p})).to(torch::kUInt8));
    };
    CHECK(kept(0.3) == std::vector<std::uint8_t>{0, 1, 0, 0});   // 0.4 >= 0.3
    CHECK(kept(0.45) == std::vector<std::uint8_t>{0, 1, 0, 1});  // 0.4 < 0.45 <= 0.4 + 0.3
    CHECK(kept(0.65) == std::vector<std::uint8_t>{0, 1, 0, 1});  // 0.4 + 0.3 >= 0.65
    CHECK(kept(0.85) == std::vector<std::uint8_t>{1, 1, 0, 1});  // 0.4 + 0.3 + 0.2 >= 0.85
    CHECK(kept(1.0) == std::vector<std::uint8_t>{1, 1, 1, 1});
    // Kept logits are unchanged (renormalisation is the softmax's).
    const torch::Tensor out = rlhf::ppo::process_logits(logits, {.top_p = 0.65});
    CHECK(out[0][1].item<double>() == doctest::Approx(std::log(0.4)));
}

TEST_CASE("ppo::process_logits min-p temperature and repetition penalty follow their definitions" *
          doctest::test_suite("unit")) {
    const torch::Tensor logits = doubles({std::log(0.5), std::log(0.25), std::log(0.15), std::log(0.1)});
    // min-p: keep p >= min_p * max p = 0.25 * 0.5 = 0.125.
    CHECK(to_vector<std::uint8_t>(
              torch::isfinite(rlhf::ppo::process_logits(logits, {.min_p = 0.25})).to(torch::kUInt8)) ==
          std::vector<std::uint8_t>{1, 1, 1, 0});
    CHECK(
        to_vector<std::uint8_t>(torch::isfinite(rlhf::ppo::process_logits(logits, {.min_p = 0.6})).to(torch::kUInt8)) ==
        std::vector<std::uint8_t>{1, 0, 0, 0});
    // temperature divides the logits.
    const torch::Tensor raw = doubles({2.0, -2.0, 1.0, -1.0});
    CHECK(max_abs(rlhf::ppo::process_logits(raw, {.temperature = 0.5}), raw / 0.5) == 0.0);
    // repetition penalty 2 on tokens 0 and 1: 2 → 1, -2 → -4; unseen tokens unchanged.
    const torch::Tensor seen = tensor_of(std::vector<std::uint8_t>{1, 1, 0, 0}, {1, 4}).to(torch::kBool);
    CHECK(to_vector<double>(rlhf::ppo::process_logits(raw, {.repetition_penalty = 2.0}, seen)) ==
          std::vector<double>{1.0, -4.0, 1.0, -1.0});
    // seen_tokens counts only tokens under the mask.
    const torch::Tensor s = rlhf::ppo::seen_tokens(longs({3, 1, 2}, {1, 3}), longs({0, 1, 1}, {1, 3}), 4);
    CHECK(to_vector<std::uint8_t>(s.to(torch::kUInt8)) == std::vector<std::uint8_t>{0, 1, 1, 0});
    // float32 processing for bfloat16 logits.
    CHECK((rlhf::ppo::process_logits(raw.to(torch::kBFloat16), {}).scalar_type() == torch::kFloat32));
}

TEST_CASE("ppo::sample_tokens is the inverse CDF of the processed distribution" * doctest::test_suite("unit")) {
    // Probabilities 0.5, 0, 0.5: token 1 is never drawn.
    const torch::Tensor processed = doubles({0.0, -std::numeric_limits<double>::infinity(), 0.0}).expand({4, 3});
    const torch::Tensor u = tensor_of(std::vector<double>{0.0, 0.25, 0.5, 0.999}, {4});
    CHECK(to_vector<std::int64_t>(rlhf::ppo::sample_tokens(processed.contiguous(), u)) ==
          std::vector<std::int64_t>{0, 0, 2, 2});
    // Empirical frequencies of 20000 draws match softmax(logits / 2) (4 standard errors).
    const torch::Tensor logits = doubles({0.0, 1.0, 2.0, 3.0});
    const generation_options options{.temperature = 2.0};
    const torch::Tensor rows = rlhf::ppo::process_logits(logits, options).expand({20000, 4}).contiguous();
    torch::Generator g = at::make_generator<at::CPUGeneratorImpl>(7);
    const torch::Tensor draws = rlhf::ppo::sample_tokens(rows, torch::rand({20000}, g, torch::kFloat64));
    const torch::Tensor expected = torch::softmax(logits / 2.0, 1)[0];
    for (std::int64_t v = 0; v < 4; ++v) {
        const double p = expected[v].item<double>();
        CHECK(std::abs(draws.eq(v).to(torch::kFloat64).mean().item<double>() - p) <
              4.0 * std::sqrt(p * (1 - p) / 20000));
    }
}

TEST_CASE("ppo::generate greedy is the argmax and seeds decide the samples" * doctest::test_suite("unit")) {
    tiny_transformer model({.seed = 6});
    model.to(torch::kFloat64);
    const prompt_batch prompts = left_padded_prompts();
    const auto greedy = rlhf::ppo::generate(model, prompts, {.max_new_tokens = 5, .greedy = true});
    const rollout& r = greedy.rollout;
    const torch::Tensor logits = model.lm_logits(r.sequences, r.attention_mask);
    for (std::int64_t t = 0; t < 5; ++t)
        CHECK(torch::equal(logits.select(1, 4 + t).argmax(1), r.sequences.select(1, 5 + t)));
    CHECK(greedy.sampling_log_probs.abs().max().item<double>() == 0.0);

    const generation_options a{.max_new_tokens = 8, .seed = 1};
    generation_options b = a;
    b.seed = 2;
    const auto first = rlhf::ppo::generate(model, prompts, a);
    CHECK(torch::equal(first.rollout.sequences, rlhf::ppo::generate(model, prompts, a).rollout.sequences));
    CHECK_FALSE(torch::equal(first.rollout.sequences, rlhf::ppo::generate(model, prompts, b).rollout.sequences));
}

TEST_CASE("ppo::generate ends rows at EOS and stop sequences with their ranges" * doctest::test_suite("unit")) {
    const prompt_batch prompts{longs({0, 2, 7, 2, 2, 3}, {3, 2}), longs({0, 1, 1, 1, 1, 1}, {3, 2})};
    scripted_decoder decoder{{{3, 4, 1, 5}, {5, 6, 7, 8, 6}, {8, 3}}};
    const generation_options options{.max_new_tokens = 6,
                                     .greedy = true,
                                     .eos_token_id = {1},
                                     .stop_sequences = {{7, 8}, {2, 2, 2}},
                                     .pad_token_id = 9};
    const auto result = rlhf::ppo::generate(decoder, prompts, options);
    const rollout& r = result.rollout;
    CHECK(row_of(r.sequences, 0) == std::vector<std::int64_t>{9, 2, 3, 4, 1, 9, 9, 9});  // EOS is part of the response
    CHECK(row_of(r.sequences, 1) == std::vector<std::int64_t>{7, 2, 5, 6, 7, 8, 9, 9});  // the stop sequence too
    CHECK(row_of(r.sequences, 2) == std::vector<std::int64_t>{2, 3, 8, 3, 3, 3, 3, 3});  // "7 8" spans no prompt
    CHECK(row_of(r.attention_mask, 0) == std::vector<std::int64_t>{0, 1, 1, 1, 1, 0, 0, 0});
    CHECK(to_vector<std::int64_t>(r.response_start) == std::vector<std::int64_t>{2, 2, 2});
    CHECK(to_vector<std::int64_t>(r.response_end) == std::vector<std::int64_t>{5, 6, 8});
    CHECK(to_vector<bool>(result.finished_by_eos) == std::vector<bool>{true, false, false});
    CHECK(to_vector<bool>(result.truncated) == std::vector<bool>{false, false, true});
    CHECK((result.log_probs.sizes() == torch::IntArrayRef{3, 6}));
    CHECK(result.log_probs[0][3].item<double>() == 0.0);  // beyond row 0's three tokens
    CHECK(result.log_probs[0][2].item<double>() < 0.0);

    // All rows ended → early exit; EOS on the last allowed token is not a truncation.
    scripted_decoder short_script{{{1}, {4, 1}, {7, 8}}};
    const auto early = rlhf::ppo::generate(
        short_script, prompts, {.max_new_tokens = 10, .greedy = true, .eos_token_id = {1}, .stop_sequences = {{7, 8}}});
    CHECK(early.rollout.sequences.size(1) == 4);
    CHECK(to_vector<std::int64_t>(early.rollout.response_end) == std::vector<std::int64_t>{3, 4, 4});
    CHECK(to_vector<bool>(early.truncated) == std::vector<bool>{false, false, false});
    const auto last =
        rlhf::ppo::generate(short_script, prompts, {.max_new_tokens = 2, .greedy = true, .eos_token_id = {1}});
    CHECK(to_vector<bool>(last.truncated) == std::vector<bool>{false, false, true});
    CHECK(to_vector<bool>(last.finished_by_eos) == std::vector<bool>{true, true, false});
}

TEST_CASE("ppo::generate log-probs equal the policy log-probs of the rollout" * doctest::test_suite("unit")) {
    tiny_transformer model({.seed = 8});
    model.to(torch::kFloat64);
    const auto result = rlhf::ppo::generate(model, left_padded_prompts(),
                                            {.max_new_tokens = 7, .top_k = 5, .seed = 3, .eos_token_id = {2}});
    const rollout& r = result.rollout;
    const torch::Tensor valid = rlhf::ppo::response_mask(r, result.log_probs.size(1));
    const torch::Tensor model_log_probs = model.log_probs(r);
    CHECK(max_abs(result.log_probs, model_log_probs) < 1e-10);
    // Renormalised over the top 5, the sampling distribution gives each sampled token more mass.
    CHECK((result.sampling_log_probs - result.log_probs).masked_select(valid).min().item<double>() > 0.0);
    // At temperature 0.7 the old log-probs are those of logits / 0.7 (TRL).
    const auto hot = rlhf::ppo::generate(model, left_padded_prompts(), {.max_new_tokens = 7, .temperature = 0.7});
    const torch::Tensor scaled =
        rlhf::ppo::response_log_probs(model.lm_logits(hot.rollout.sequences, hot.rollout.attention_mask), hot.rollout,
                                      0.7)
            .log_probs;
    CHECK(max_abs(hot.log_probs, scaled) < 1e-10);
    // One backbone forward gives the policy's log-probs, entropies and the critic's values.
    const auto joint = model.log_probs_and_values(r);
    CHECK(max_abs(joint.log_probs, model_log_probs) == 0.0);
    CHECK(max_abs(joint.values, model.values(r)) == 0.0);
    CHECK(max_abs(joint.entropy, model.log_probs_and_entropy(r).entropy) == 0.0);
    CHECK((joint.values.sizes() == result.log_probs.sizes()));
}

TEST_CASE("ppo::generate runs float32 and bfloat16 models" * doctest::test_suite("unit")) {
    // Cached vs full-forward log-probs agree to the precision of the model's dtype.
    for (const auto& [dtype, tolerance] : {std::pair{torch::kFloat32, 1e-4}, std::pair{torch::kBFloat16, 0.1}}) {
        const torch::Dtype model_dtype = dtype;  // CAPTURE's lambda cannot name a structured binding in clang 14
        CAPTURE(model_dtype);
        tiny_transformer model({.seed = 2});
        model.to(dtype);
        const auto result = rlhf::ppo::generate(model, left_padded_prompts(),
                                                {.max_new_tokens = 6, .top_p = 0.9, .seed = 4, .eos_token_id = {3}});
        const rollout& r = result.rollout;
        CHECK((result.log_probs.scalar_type() == torch::kFloat32));
        CHECK(r.sequences.max().item<std::int64_t>() < vocab);
        CHECK(torch::isfinite(result.log_probs).all().item<bool>());
        CHECK(result.log_probs.max().item<double>() <= 0.0);
        const torch::Tensor scored = model.log_probs(r);
        CHECK((scored.scalar_type() == torch::kFloat32));
        CHECK(max_abs(result.log_probs, scored) < tolerance);
        CHECK((model.values(r).scalar_type() == dtype));
    }
}

TEST_CASE("ppo::generate and the sampling steps name every bad argument" * doctest::test_suite("unit")) {
    tiny_transformer model({.seed = 1});
    const prompt_batch good = left_padded_prompts();
    auto options_error = [&](const generation_options& options, const char* name) {
        CAPTURE(name);
        check_error([&] { (void)rlhf::ppo::generate(model, good, options); }, error_kind::config, name);
    };
    options_error({.max_new_tokens = 0}, "max_new_tokens");
    options_error({.temperature = 0.0}, "temperature");
    options_error({.top_k = -1}, "top_k");
    options_error({.top_p = 0.0}, "top_p");
    options_error({.min_p = 1.5}, "min_p");
    options_error({.repetition_penalty = 0.0}, "repetition_penalty");
    options_error({.eos_token_id = {-1}}, "eos_token_id");
    options_error({.stop_sequences = {{}}}, "stop_sequences");
    options_error({.stop_sequences = {{1, -2}}}, "stop_sequences");
    options_error({.pad_token_id = -1}, "pad_token_id");
    options_error({.pad_token_id = vocab}, "pad_token_id");  // beyond the vocabulary
    options_error({.eos_token_id = {vocab}}, "eos_token_id");
    options_error({.stop_sequences = {{vocab + 3}}}, "stop_sequences");

    auto prompt_error = [&](const prompt_batch& prompts, error_kind kind, const char* name) {
        CAPTURE(name);
        check_error([&] { (void)rlhf::ppo::generate(model, prompts, {}); }, kind, name);
    };
    prompt_error({torch::Tensor(), good.attention_mask}, error_kind::value, "input_ids");
    prompt_error({good.input_ids.reshape({-1}), good.attention_mask}, error_kind::shape, "input_ids");
    prompt_error({good.input_ids.to(torch::kFloat32), good.attention_mask}, error_kind::dtype, "input_ids");
    prompt_error({good.input_ids - 5, good.attention_mask}, error_kind::value, "input_ids");
    prompt_error({good.input_ids, torch::Tensor()}, error_kind::value, "attention_mask");
    prompt_error({good.input_ids, good.attention_mask.narrow(1, 0, 4)}, error_kind::shape, "attention_mask");
    prompt_error({good.input_ids, good.attention_mask.to(torch::kFloat16)}, error_kind::dtype, "attention_mask");
    prompt_error({good.input_ids, good.attention_mask * 2}, error_kind::value, "attention_mask");
    const rlhf::error empty = check_error(
        [&] {
            (void)rlhf::ppo::generate(
                model, {good.input_ids, good.attention_mask * torch::tensor({1, 0, 1}).unsqueeze(1)}, {});
        },
        error_kind::value, "attention_mask");
    CHECK(std::string(empty.what()).find("row 1") != std::string::npos);

    auto flat = [](const torch::Tensor& ids) { return torch::zeros({ids.size(0), 4}); };
    broken_decoder<decltype(flat)> rank_two{flat};
    check_error([&] { (void)rlhf::ppo::generate(rank_two, good, {}); }, error_kind::shape, "decoder.forward");
    auto integers = [](const torch::Tensor& ids) { return torch::zeros({ids.size(0), ids.size(1), 4}, torch::kInt64); };
    broken_decoder<decltype(integers)> integer_logits{integers};
    check_error([&] { (void)rlhf::ppo::generate(integer_logits, good, {}); }, error_kind::dtype, "decoder.forward");
    auto short_rows = [](const torch::Tensor& ids) { return torch::zeros({ids.size(0) - 1, ids.size(1), 4}); };
    broken_decoder<decltype(short_rows)> missing_row{short_rows};
    check_error([&] { (void)rlhf::ppo::generate(missing_row, good, {}); }, error_kind::shape, "decoder.forward");

    const torch::Tensor logits = torch::zeros({2, 4});
    check_error([&] { (void)rlhf::ppo::process_logits(logits.reshape({-1}), {}); }, error_kind::shape, "logits");
    check_error([&] { (void)rlhf::ppo::process_logits(logits.to(torch::kInt64), {}); }, error_kind::dtype, "logits");
    check_error([&] { (void)rlhf::ppo::process_logits(logits, {.top_p = 2.0}); }, error_kind::config, "top_p");
    check_error(
        [&] {
            (void)rlhf::ppo::process_logits(logits, {}, torch::zeros({2, 3}, torch::kBool));
        },
        error_kind::shape, "seen");
    check_error([&] { (void)rlhf::ppo::sample_tokens(logits, torch::rand({3}, torch::kFloat64)); }, error_kind::shape,
                "uniforms");
    const rollout r{longs({1, 2, 3}, {1, 3}), longs({1, 1, 1}, {1, 3}), longs({1}, {1}), longs({3}, {1})};
    check_error([&] { (void)rlhf::ppo::response_log_probs(torch::zeros({1, 2, 4}), r); }, error_kind::shape, "logits");
}

// ---- The examples' model kit (examples/common/) ----

TEST_CASE("model kit: the BPE tokenizer round-trips text and is the same for the same corpus" *
          doctest::test_suite("unit")) {
    const std::vector<std::string> corpus{"The cat sat on the mat.", "The dog sat on the log!",
                                          "A cat and a dog: 42 friends.", "Nothing is what it seems."};
    const rlhf_examples::tokenizer bytes(corpus, 0);
    const rlhf_examples::tokenizer bpe(corpus, 40);
    CHECK(bytes.vocab_size() == 258);
    CHECK(bpe.vocab_size() > 258);
    CHECK(bpe.vocab_size() <= 258 + 40);
    for (const std::string text : {"The cat sat on the log.", "unseen words, 7 digits & symbols ~", "", " a  b "}) {
        CAPTURE(text);
        CHECK(bpe.decode(bpe.encode(text)) == text);
        CHECK(bytes.encode(text).size() == text.size());
    }
    // Merges shorten frequent words; a second tokenizer from the same corpus gives the same ids.
    CHECK(bpe.encode("The cat sat on the mat.").size() < bytes.encode("The cat sat on the mat.").size());
    CHECK(rlhf_examples::tokenizer(corpus, 40).encode("the dog sat") == bpe.encode("the dog sat"));
    // Decoding stops at end-of-sequence and skips padding.
    std::vector<std::int64_t> ids = bpe.encode("The cat");
    ids.push_back(bpe.eos_id());
    ids.push_back(bpe.encode("x")[0]);
    CHECK(bpe.decode(ids) == "The cat");

    // Prompts are left-padded, texts right-padded and ended by end-of-sequence.
    const prompt_batch prompts = bpe.prompts({"The cat", "A"});
    CHECK(to_vector<std::int64_t>(prompts.attention_mask.select(0, 1)).back() == 1);
    CHECK(to_vector<std::int64_t>(prompts.attention_mask.select(0, 1)).front() == 0);
    CHECK(prompts.input_ids[1][0].item<std::int64_t>() == bpe.pad_id());
    const prompt_batch texts = bpe.texts({"The cat", "A"}, 64);
    const std::int64_t a_length = texts.attention_mask[1].sum().item<std::int64_t>();
    CHECK(texts.input_ids[1][a_length - 1].item<std::int64_t>() == bpe.eos_id());
    CHECK(texts.attention_mask[1][0].item<std::int64_t>() == 1);
    CHECK(bpe.texts({"The cat sat on the mat."}, 3).input_ids.size(1) == 3);  // cut to the length limit
}

TEST_CASE("model kit: a GPT checkpoint restores options and weights and scores the last attended token" *
          doctest::test_suite("unit")) {
    rlhf_examples::gpt model({.vocab = 20, .width = 16, .heads = 2, .layers = 2, .positions = 12, .seed = 5});
    const std::filesystem::path path = std::filesystem::temp_directory_path() / "rlhf_model_kit_test" / "gpt.pt";
    rlhf_examples::save_gpt(model, path);
    CHECK_FALSE(std::filesystem::exists(path.string() + ".partial"));
    rlhf_examples::gpt loaded = rlhf_examples::load_gpt(path);
    CHECK(loaded.options().width == 16);
    CHECK(loaded.options().vocab == 20);
    const torch::Tensor ids = torch::tensor({3, 4, 5, 6, 7, 8, 0, 1}, torch::kInt64).reshape({2, 4});
    const torch::Tensor mask = torch::tensor({1, 1, 1, 1, 0, 1, 1, 0}, torch::kInt64).reshape({2, 4});
    const torch::NoGradGuard no_grad;
    CHECK(torch::equal(loaded.lm_logits(ids, mask), model.lm_logits(ids, mask)));
    // Row 1 ends at position 2: its score is the score of the same row cut after that position.
    const torch::Tensor scores = model.sequence_scores(ids, mask);
    const torch::Tensor cut = model.sequence_scores(ids.narrow(1, 0, 3), mask.narrow(1, 0, 3));
    CHECK(scores[1].item<double>() == doctest::Approx(cut[1].item<double>()).epsilon(1e-6));
    // A critic from a reward model starts with the score head, or with zero values.
    const rollout r{ids, torch::ones_like(ids), torch::full({2}, 2, torch::kInt64), torch::full({2}, 4, torch::kInt64)};
    model.start_value_head(rlhf_examples::gpt::value_head_start::score_head);
    CHECK(torch::allclose(model.values(r).select(1, 1), model.score(r)));  // the last token's value is the score
    model.start_value_head(rlhf_examples::gpt::value_head_start::zero);
    CHECK(model.values(r).abs().max().item<double>() == 0.0);
    std::filesystem::remove_all(path.parent_path());
}
