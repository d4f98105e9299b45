#pragma once
// Float64 toy models of the PPO trainer tests (deterministic, seeded): a bigram policy, a critic,
// sequence and token reward models, prompts, and comparisons of parameter lists.

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "rlhf/ppo.hpp"

namespace rlhf_test::toys {

using rlhf::ppo::generation_options;
using rlhf::ppo::policy_output;
using rlhf::ppo::prompt_batch;
using rlhf::ppo::rollout;

inline constexpr std::int64_t vocab = 8;
inline constexpr std::int64_t hidden = 6;
inline constexpr std::int64_t eos = 1;
inline constexpr std::int64_t target_token = 3;

inline torch::Generator seeded(std::uint64_t seed) {
    return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// A bigram policy: the logits of the next token are head(embed(previous token)). It samples with
// its own seeded generator, stops a row at EOS, and computes log-probs and entropies with the
// library's log-prob kernel (rlhf::libtorch::default_kernels::logprobs_from_logits).
struct toy_policy {
    torch::Tensor embed;   // [V, H]
    torch::Tensor head_w;  // [H, V]
    torch::Tensor head_b;  // [V]

    explicit toy_policy(std::uint64_t seed, double scale = 0.3) {
        auto g = seeded(seed);
        const auto o = torch::TensorOptions(torch::kFloat64);
        embed = torch::randn({vocab, hidden}, g, o).requires_grad_(true);
        head_w = (torch::randn({hidden, vocab}, g, o) * scale).requires_grad_(true);
        head_b = torch::zeros({vocab}, o).requires_grad_(true);
    }

    [[nodiscard]] std::vector<torch::Tensor> parameters() const { return {embed, head_w, head_b}; }

    [[nodiscard]] torch::Tensor logits_of(const torch::Tensor& tokens) const {
        return embed.index_select(0, tokens.reshape({-1}))
                   .reshape({tokens.size(0), tokens.size(1), hidden})
                   .matmul(head_w) +
               head_b;
    }

    rollout generate(const prompt_batch& prompts, const generation_options& options) {
        const torch::NoGradGuard no_grad;
        auto g = seeded(options.seed);
        const std::int64_t b = prompts.input_ids.size(0);
        const std::int64_t p = prompts.input_ids.size(1);
        const std::int64_t n = options.max_new_tokens;
        torch::Tensor sequences = torch::zeros({b, p + n}, torch::kInt64);
        torch::Tensor attention = torch::zeros({b, p + n}, torch::kInt64);
        sequences.narrow(1, 0, p).copy_(prompts.input_ids);
        attention.narrow(1, 0, p).copy_(prompts.attention_mask);
        torch::Tensor alive = torch::ones({b}, torch::kBool);
        torch::Tensor lengths = torch::zeros({b}, torch::kInt64);
        torch::Tensor last = prompts.input_ids.select(1, p - 1);
        for (std::int64_t i = 0; i < n; ++i) {
            const torch::Tensor logits = logits_of(last.unsqueeze(1)).squeeze(1) / options.temperature;
            const torch::Tensor next = options.greedy
                                           ? logits.argmax(1)
                                           : torch::multinomial(torch::softmax(logits, 1), 1, false, g).squeeze(1);
            sequences.select(1, p + i).copy_(torch::where(alive, next, torch::zeros_like(next)));
            attention.select(1, p + i).copy_(alive.to(torch::kInt64));
            lengths += alive.to(torch::kInt64);
            alive = alive.logical_and(next.ne(eos));
            last = next;
        }
        return {sequences, attention, torch::full({b}, p, torch::kInt64), lengths + p};
    }

    policy_output log_probs_and_entropy(const rollout& r) {
        const std::int64_t s = r.sequences.size(1);
        const torch::Tensor logits = logits_of(r.sequences.narrow(1, 0, s - 1));
        const torch::Tensor tokens = r.sequences.narrow(1, 1, s - 1);
        const torch::Tensor mask = r.attention_mask.narrow(1, 1, s - 1).ne(0);
        const auto out = rlhf::libtorch::default_kernels{}.logprobs_from_logits(logits, tokens, mask);
        const torch::Tensor pad = torch::zeros({r.sequences.size(0), 1}, logits.options());
        return {rlhf::ppo::gather_response(torch::cat({pad, out.logprobs}, 1), r),
                rlhf::ppo::gather_response(torch::cat({pad, out.entropy}, 1), r)};
    }

    torch::Tensor log_probs(const rollout& r) { return log_probs_and_entropy(r).log_probs; }

    torch::Tensor lm_logits(const torch::Tensor& input_ids, const torch::Tensor& /*attention_mask*/) {
        return logits_of(input_ids);
    }
};

// The same policy without entropy or LM logits (a plain Policy).
struct plain_policy {
    toy_policy inner;
    explicit plain_policy(std::uint64_t seed) : inner(seed) {}
    [[nodiscard]] std::vector<torch::Tensor> parameters() const { return inner.parameters(); }
    rollout generate(const prompt_batch& prompts, const generation_options& options) {
        return inner.generate(prompts, options);
    }
    torch::Tensor log_probs(const rollout& r) { return inner.log_probs(r); }
};

// V(prefix up to token t) = w · embed_c(token t) + b.
struct toy_critic {
    torch::Tensor embed;  // [V, H]
    torch::Tensor w;      // [H]
    torch::Tensor b;      // [1]

    explicit toy_critic(std::uint64_t seed) {
        auto g = seeded(seed);
        const auto o = torch::TensorOptions(torch::kFloat64);
        embed = (torch::randn({vocab, hidden}, g, o) * 0.3).requires_grad_(true);
        w = (torch::randn({hidden}, g, o) * 0.3).requires_grad_(true);
        b = torch::zeros({1}, o).requires_grad_(true);
    }
    [[nodiscard]] std::vector<torch::Tensor> parameters() const { return {embed, w, b}; }
    torch::Tensor values(const rollout& r) const {
        const torch::Tensor per_position = embed.index_select(0, r.sequences.reshape({-1}))
                                               .reshape({r.sequences.size(0), r.sequences.size(1), hidden})
                                               .matmul(w) +
                                           b;
        return rlhf::ppo::gather_response(per_position, r);
    }
};

// Score: the number of target tokens in the response.
struct count_reward {
    torch::Tensor score(const rollout& r) const {
        const torch::Tensor mask = rlhf::ppo::response_mask(r);
        const torch::Tensor tokens =
            rlhf::ppo::gather_response(r.sequences.to(torch::kFloat64), r).eq(static_cast<double>(target_token));
        return (tokens.logical_and(mask)).sum(1).to(torch::kFloat64);
    }
};

// Dense reward: 1 at every target token.
struct token_count_reward {
    torch::Tensor token_rewards(const rollout& r) const {
        return rlhf::ppo::gather_response(r.sequences.to(torch::kFloat64), r)
            .eq(static_cast<double>(target_token))
            .logical_and(rlhf::ppo::response_mask(r))
            .to(torch::kFloat64);
    }
};

inline prompt_batch make_prompts(std::int64_t step, std::int64_t count) {
    auto g = seeded(1000 + static_cast<std::uint64_t>(step));
    const torch::Tensor ids = torch::randint(2, vocab, {count, 2}, g, torch::TensorOptions(torch::kInt64));
    return {ids, torch::ones_like(ids)};
}

inline double max_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    double worst = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i)
        worst = std::max(worst, (a[i].detach() - b[i].detach()).abs().max().item<double>());
    return worst;
}

inline bool bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (!torch::equal(a[i].detach(), b[i].detach())) return false;
    return true;
}

inline rollout select_rows(const rollout& r, std::int64_t begin, std::int64_t count) {
    return {r.sequences.narrow(0, begin, count), r.attention_mask.narrow(0, begin, count),
            r.response_start.narrow(0, begin, count), r.response_end.narrow(0, begin, count)};
}

inline torch::Tensor block(const torch::Tensor& t, std::int64_t begin, std::int64_t count, std::int64_t width) {
    return t.narrow(0, begin, count).narrow(1, 0, width).contiguous();
}

}  // namespace rlhf_test::toys
