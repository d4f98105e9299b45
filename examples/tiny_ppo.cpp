// Tiny PPO: trains a bigram "language model" over a 12-token vocabulary to emit a target token,
// with rlhf::ppo::ppo_trainer and one framework's preset.
//
//   rlhf_tiny_ppo [trl | deepspeed-chat | colossalchat]     (default: trl)
//
// The models are plain LibTorch tensors: a bigram policy (embedding + linear head), a critic
// (embedding + linear value), a frozen reference copy of the initial policy and a reward model
// that counts target tokens. The trainer does the rest: rollout, rewards with the KL penalty,
// GAE, PPO epochs. Prints one line per step and writes every metric to tiny_ppo_metrics.jsonl.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adam.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "rlhf/ppo.hpp"

namespace {

using rlhf::ppo::generation_options;
using rlhf::ppo::prompt_batch;
using rlhf::ppo::rollout;

constexpr std::int64_t vocab = 12;  // token 0 is padding, 1 is end-of-sequence
constexpr std::int64_t hidden = 8;
constexpr std::int64_t eos = 1;
constexpr std::int64_t target_token = 5;  // the reward model wants as many of these as possible
constexpr std::int64_t max_new_tokens = 8;
constexpr std::int64_t batch = 32;  // rollout rows per step
constexpr std::int64_t steps = 30;

// Every random draw comes from an explicitly seeded generator: the run is reproducible.
torch::Generator seeded(std::uint64_t seed) {
    return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// Policy: logits of the next token = embed[previous token] · head_w + head_b.
struct bigram_policy {
    torch::Tensor embed;   // [V, H]
    torch::Tensor head_w;  // [H, V]
    torch::Tensor head_b;  // [V]

    explicit bigram_policy(std::uint64_t seed) {
        auto g = seeded(seed);
        embed = torch::randn({vocab, hidden}, g).requires_grad_(true);
        // A small head: the initial policy is close to uniform, so it rarely emits the target.
        head_w = (torch::randn({hidden, vocab}, g) * 0.1).requires_grad_(true);
        head_b = torch::zeros({vocab}).requires_grad_(true);
    }

    [[nodiscard]] std::vector<torch::Tensor> parameters() const { return {embed, head_w, head_b}; }

    // [B, L] tokens → [B, L, V] next-token logits.
    [[nodiscard]] torch::Tensor logits_of(const torch::Tensor& tokens) const {
        return embed.index({tokens}).matmul(head_w) + head_b;
    }

    // Samples up to max_new_tokens after each prompt with the step's seed; a row stops at EOS
    // (the EOS is part of the response) and is padded with 0 afterwards.
    rollout generate(const prompt_batch& prompts, const generation_options& options) {
        const torch::NoGradGuard no_grad;
        auto g = seeded(options.seed);
        const std::int64_t b = prompts.input_ids.size(0), p = prompts.input_ids.size(1);
        const std::int64_t n = options.max_new_tokens;
        torch::Tensor sequences = torch::zeros({b, p + n}, torch::kInt64);
        torch::Tensor attention = torch::zeros({b, p + n}, torch::kInt64);
        sequences.narrow(1, 0, p).copy_(prompts.input_ids);
        attention.narrow(1, 0, p).copy_(prompts.attention_mask);
        torch::Tensor alive = torch::ones({b}, torch::kBool);
        torch::Tensor lengths = torch::zeros({b}, torch::kInt64);
        torch::Tensor last = prompts.input_ids.select(1, p - 1);
        for (std::int64_t i = 0; i < n; ++i) {
            const torch::Tensor probs = torch::softmax(logits_of(last) / options.temperature, -1);
            const torch::Tensor next = torch::multinomial(probs, 1, false, g).squeeze(1);
            sequences.select(1, p + i).copy_(torch::where(alive, next, torch::zeros_like(next)));
            attention.select(1, p + i).copy_(alive.to(torch::kInt64));
            lengths += alive.to(torch::kInt64);
            alive = alive.logical_and(next.ne(eos));
            last = next;
        }
        // Explicit response ranges: [p, p + length) of every row.
        return {sequences, attention, torch::full({b}, p, torch::kInt64), lengths + p};
    }

    // log π(token | previous token) of the response tokens, in the response layout [B, T].
    torch::Tensor log_probs(const rollout& r) {
        const std::int64_t s = r.sequences.size(1);
        const torch::Tensor logits = logits_of(r.sequences.narrow(1, 0, s - 1));
        const torch::Tensor next = r.sequences.narrow(1, 1, s - 1);
        const torch::Tensor lp = torch::log_softmax(logits, -1).gather(2, next.unsqueeze(2)).squeeze(2);
        // Position 0 has no predecessor: pad a column so column j scores token j.
        return rlhf::ppo::gather_response(torch::cat({torch::zeros({lp.size(0), 1}), lp}, 1), r);
    }
};

// Critic: V(prefix ending at token t) = embed_c[token t] · w + b, in the response layout.
struct token_critic {
    torch::Tensor embed;  // [V, H]
    torch::Tensor w;      // [H]
    torch::Tensor b;      // [1]

    explicit token_critic(std::uint64_t seed) {
        auto g = seeded(seed);
        embed = (torch::randn({vocab, hidden}, g) * 0.1).requires_grad_(true);
        w = (torch::randn({hidden}, g) * 0.1).requires_grad_(true);
        b = torch::zeros({1}).requires_grad_(true);
    }
    [[nodiscard]] std::vector<torch::Tensor> parameters() const { return {embed, w, b}; }
    torch::Tensor values(const rollout& r) const {
        return rlhf::ppo::gather_response(embed.index({r.sequences}).matmul(w) + b, r);
    }
};

// Reward model: the number of target tokens in each response, one score per row ([B]).
struct count_reward {
    torch::Tensor score(const rollout& r) const {
        const torch::Tensor tokens = rlhf::ppo::gather_response(r.sequences, r);
        return tokens.eq(target_token).logical_and(rlhf::ppo::response_mask(r)).sum(1).to(torch::kFloat32);
    }
};

// Two random non-special tokens per prompt; a function of the step, so runs are reproducible.
prompt_batch make_prompts(std::int64_t step) {
    auto g = seeded(1000 + static_cast<std::uint64_t>(step));
    const torch::Tensor ids = torch::randint(2, vocab, {batch, 2}, g, torch::kInt64);
    return {ids, torch::ones_like(ids)};
}

// The preset named on the command line, sized for this toy problem.
rlhf::ppo::config make_config(const std::string& name) {
    rlhf::ppo::config cfg;
    if (name == "trl")
        cfg = rlhf::ppo::presets::trl_v0_11();
    else if (name == "deepspeed-chat")
        cfg = rlhf::ppo::presets::deepspeed_chat();
    else if (name == "colossalchat")
        cfg = rlhf::ppo::presets::colossalchat_v2();
    else
        throw std::invalid_argument("unknown preset '" + name + "' (trl, deepspeed-chat, colossalchat)");
    // Presets fix the algorithm, not the sizes: those are ours.
    cfg.rollout_batch_size = batch;
    cfg.minibatch_size = 8;
    cfg.micro_batch_size = 4;
    cfg.generation = {.max_new_tokens = max_new_tokens};
    cfg.seed = 2024;
    return cfg;
}

}  // namespace

int main(int argc, char** argv) try {
    const std::string preset = argc > 1 ? argv[1] : "trl";
    const rlhf::ppo::config cfg = make_config(preset);
    torch::manual_seed(0);  // nothing should use the global generator; pin it anyway

    bigram_policy policy(21);
    bigram_policy reference(0);
    rlhf::ppo::copy_parameters{}.sync(policy, reference);            // the reference is the initial policy
    for (auto& p : reference.parameters()) p.requires_grad_(false);  // frozen
    token_critic critic(22);
    count_reward reward;

    // TRL v0.11's value head shares the policy's optimizer (the value loss joins the actor loss);
    // DeepSpeed-Chat and ColossalChat train the critic with its own optimizer.
    const bool shared_optimizer = preset == "trl";
    std::vector<torch::Tensor> actor_parameters = policy.parameters();
    if (shared_optimizer)
        for (const auto& p : critic.parameters()) actor_parameters.push_back(p);
    torch::optim::Adam policy_optimizer(actor_parameters, torch::optim::AdamOptions(0.03));
    torch::optim::Adam critic_optimizer(critic.parameters(), torch::optim::AdamOptions(0.03));

    rlhf::ppo::ppo_trainer trainer(
        cfg,
        rlhf::ppo::trainer_models{
            .policy = &policy, .reward_model = &reward, .critic = &critic, .reference = &reference},
        {.policy = &policy_optimizer, .critic = shared_optimizer ? nullptr : &critic_optimizer});
    trainer.add_callback(rlhf::ppo::jsonl_sink("tiny_ppo_metrics.jsonl"));

    std::printf("tiny PPO, preset %s: %td rows/step, vocabulary %td, reward = #token %td per response\n",
                preset.c_str(), batch, vocab, target_token);
    const std::string kl_header = "kl(" + std::string(rlhf::to_string(cfg.kl_metric)) + ")";
    std::printf("%4s %8s %22s %12s %11s %9s\n", "step", "reward", kl_header.c_str(), "policy_loss", "value_loss",
                "clip_frac");
    double first_reward = 0.0, last_reward = 0.0;
    for (std::int64_t step = 0; step < steps; ++step) {
        const rlhf::ppo::step_metrics m = trainer.step(make_prompts(step));
        if (step == 0) first_reward = m.score_mean;
        last_reward = m.score_mean;
        std::printf("%4td %8.3f %22.4f %12.5f %11.5f %9.3f\n", m.step, m.score_mean, m.kl, m.policy_loss, m.value_loss,
                    m.clip_fraction);
    }
    std::printf("mean reward (target tokens per response): first step %.3f, last step %.3f\n", first_reward,
                last_reward);
    std::printf("metrics written to tiny_ppo_metrics.jsonl\n");
    return last_reward > first_reward ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "rlhf_tiny_ppo: %s\n", e.what());
    return 2;
}
