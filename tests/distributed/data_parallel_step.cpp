// The proof of data parallelism: the same global batch trained by W ranks (each on its rows,
// through a Gloo communicator) and by one process must give the same parameters and metrics.
// Run under a launcher (`rlhf_launch -n 2 -- ...`) or alone (W = 1).
//   rlhf_data_parallel_step MODE DIR           two steps; rank 0 writes DIR/<MODE>.ckpt after the first
//   rlhf_data_parallel_step MODE DIR --resume  loads DIR/<MODE>.ckpt and trains the second step
// MODE: ppo (verl's PPO loop on the fused CPU kernels), ppo_torch_ops (the same on the torch-op
// compositions: `advantage_ops = torch_ops`), grpo (verl's GRPO), reinforce_pp (REINFORCE++:
// batch whitening without a critic).
// Every rank checks that its parameters equal rank 0's bit for bit; rank 0 trains the one-process
// reference in-process (two steps from the start) and compares (float64 models): the largest
// parameter difference relative to the largest parameter must stay within 1e-6 (the reduction
// order differs, so not bit for bit), the metrics within 1e-6 relative. It prints both step times.
// ivalue.h first: clang in C++20 mode rejects LibTorch 1.13's headers otherwise (doctest_torch.hpp).
#include <ATen/core/ivalue.h>

#include <ATen/Parallel.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rlhf/distributed/c10d.hpp"
#include "rlhf/ppo.hpp"
#include "support/tiny_transformer.hpp"

namespace {

namespace ppo = rlhf::ppo;
using model_type = rlhf_test::tiny_transformer;

constexpr std::int64_t target_token = 3;
constexpr std::int64_t prompts_per_step = 4;
constexpr std::int64_t samples_per_prompt = 4;
constexpr std::int64_t global_rows = prompts_per_step * samples_per_prompt;

struct count_reward {
    [[nodiscard]] torch::Tensor score(const ppo::rollout& r) const {
        return ppo::gather_response(r.sequences, r)
            .eq(target_token)
            .logical_and(ppo::response_mask(r))
            .sum(1)
            .to(torch::kFloat32);
    }
};

rlhf_test::tiny_transformer_options model_options(std::uint64_t seed) {
    return {.vocab = 16, .width = 32, .heads = 2, .layers = 2, .positions = 32, .seed = seed};
}

enum class mode { ppo, ppo_torch_ops, grpo, reinforce_pp };

[[nodiscard]] bool has_critic(mode m) {
    return m == mode::ppo || m == mode::ppo_torch_ops;
}

// PPO: verl's loop (GAE, global token counts) with the KL in the reward under an adaptive
// controller, running score scaling, shuffled minibatches, 2 epochs; GRPO: verl's GRPO recipe;
// REINFORCE++: its preset. `minibatch_size` counts this rank's rows.
ppo::config make_config(mode m, int world) {
    ppo::config c = m == mode::grpo           ? ppo::presets::grpo()
                    : m == mode::reinforce_pp ? ppo::presets::reinforce_plus_plus()
                                              : ppo::presets::verl();
    c.samples_per_prompt = samples_per_prompt;
    c.generation = {.max_new_tokens = 8, .temperature = 1.0, .top_k = 12, .eos_token_id = {1}};
    c.minibatch_size = global_rows / world;
    c.micro_batch_size = 4;
    c.ppo_epochs = 2;
    c.seed = 7;
    c.world_size = world;
    c.critic_max_grad_norm.reset();  // the value head shares the policy's optimizer
    if (m == mode::ppo_torch_ops) c.advantage_ops = ppo::advantage_route::torch_ops;
    // REINFORCE++ averages micro-batch means (mean_of_micro_batches): the ranks' micro-batches
    // must be the one-process ones, so no shuffling.
    if (m == mode::reinforce_pp) c.shuffle = false;
    if (has_critic(m)) {
        c.kl = ppo::kl_placement::reward;
        c.kl_control = rlhf::adaptive_kl_options{
            .init_kl_coef = 0.05, .target = 6.0, .horizon = 1000.0, .measure = rlhf::kl_measure::seq_mean_token_mean};
        c.score_norm = ppo::score_normalization::scale;
        c.shuffle = true;
    }
    return c;
}

// The global batch of step `step`: the same on every rank, from a fixed generator model.
struct global_batch {
    ppo::rollout_request request;
    ppo::rollout rollout;
};

global_batch make_global_batch(const ppo::config& c, std::int64_t step) {
    static model_type generator(model_options(3));
    torch::Generator g = at::make_generator<at::CPUGeneratorImpl>(1000 + static_cast<std::uint64_t>(step));
    const torch::Tensor ids = torch::randint(2, 16, {prompts_per_step, 4}, g, torch::TensorOptions(torch::kInt64));
    std::mt19937_64 engine(static_cast<std::uint64_t>(step) + 11U);
    global_batch b;
    b.request = ppo::make_rollout_request(c, {ids, torch::ones_like(ids)}, engine);
    const torch::NoGradGuard no_grad;
    b.rollout = generator.generate(b.request.prompts, b.request.generation);
    return b;
}

// Rows [begin, begin + count) of a request and its rollout.
global_batch rows_of(const global_batch& b, std::int64_t begin, std::int64_t count) {
    const auto rows = [&](const torch::Tensor& t) { return t.narrow(0, begin, count); };
    global_batch part;
    part.request = {{rows(b.request.prompts.input_ids), rows(b.request.prompts.attention_mask)},
                    rows(b.request.group_ids),
                    b.request.generation};
    part.rollout = {rows(b.rollout.sequences), rows(b.rollout.attention_mask), rows(b.rollout.response_start),
                    rows(b.rollout.response_end)};
    return part;
}

struct run_result {
    std::vector<torch::Tensor> params;
    ppo::step_metrics last;
    double seconds_per_step = 0.0;
    std::uint64_t next_seed = 0;  // the generation seed of the next step's rollout request
};

// Trains steps [start, 2) (start = the checkpoint's step when `load`), on this rank's rows.
template <bool Critic>
run_result train(mode m, const std::shared_ptr<rlhf::distributed::communicator>& group,
                 const std::filesystem::path* load, const std::filesystem::path* save_after_first) {
    const int world = group ? group->world_size() : 1;
    const int rank = group ? group->rank() : 0;
    const ppo::config c = make_config(m, world);
    // float64: Adam turns the float32 rounding of a near-zero gradient element into a whole
    // step of the learning rate (float32 runs differ by ~2e-4 relative after two steps).
    model_type policy(model_options(1));
    model_type reference(model_options(1));
    policy.to(torch::kFloat64);
    reference.to(torch::kFloat64);
    count_reward reward;
    torch::optim::Adam optimizer(policy.parameters(), torch::optim::AdamOptions(1e-3));
    using critic_type = std::conditional_t<Critic, model_type, ppo::no_critic>;
    critic_type* critic = nullptr;
    if constexpr (Critic) critic = &policy;
    ppo::ppo_trainer<model_type, critic_type, count_reward, model_type> trainer(
        c, {.policy = &policy, .reward_model = &reward, .critic = critic, .reference = &reference},
        {.policy = &optimizer});
    if (group) trainer.set_communicator(group);
    if (load != nullptr) trainer.load_checkpoint(*load);
    run_result result;
    const auto start = std::chrono::steady_clock::now();
    const std::int64_t first = trainer.steps();
    while (trainer.steps() < 2) {
        const global_batch mine = rows_of(make_global_batch(make_config(m, 1), trainer.steps()),
                                          rank * (global_rows / world), global_rows / world);
        result.last = trainer.train(trainer.make_experience(mine.request, mine.rollout));
        if (save_after_first != nullptr && trainer.steps() == 1 && rank == 0)
            trainer.save_checkpoint(*save_after_first);
    }
    result.seconds_per_step = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
                              static_cast<double>(2 - first);
    for (const auto& p : policy.parameters()) result.params.push_back(p.detach().clone());
    result.next_seed = trainer.prepare_rollout(make_global_batch(c, 0).request.prompts).generation.seed;
    return result;
}

torch::Tensor flat(const std::vector<torch::Tensor>& params) {
    std::vector<torch::Tensor> parts;
    for (const auto& p : params) parts.push_back(p.reshape({-1}).to(torch::kFloat64));
    return torch::cat(parts);
}

int run(int argc, char** argv) {
    const std::vector<std::pair<std::string_view, mode>> modes{{"ppo", mode::ppo},
                                                               {"ppo_torch_ops", mode::ppo_torch_ops},
                                                               {"grpo", mode::grpo},
                                                               {"reinforce_pp", mode::reinforce_pp}};
    const auto named =
        argc < 3 ? modes.end()
                 : std::find_if(modes.begin(), modes.end(), [&](const auto& entry) { return entry.first == argv[1]; });
    if (named == modes.end()) {
        std::fprintf(stderr, "usage: %s ppo|ppo_torch_ops|grpo|reinforce_pp DIR [--resume]\n", argv[0]);
        return 2;
    }
    const std::string name = argv[1];
    const mode m = named->second;
    const bool resume = argc > 3 && std::string_view(argv[3]) == "--resume";
    const std::filesystem::path dir = argv[2];
    std::filesystem::create_directories(dir);
    const std::filesystem::path checkpoint = dir / (name + ".ckpt");

    const rlhf::distributed::launch_environment env = rlhf::distributed::launch_environment::read();
    std::shared_ptr<rlhf::distributed::communicator> group;
    std::unique_ptr<rlhf::distributed::c10d_job> job;
    if (env.world_size > 1) {
        job = std::make_unique<rlhf::distributed::c10d_job>(env, std::chrono::seconds(60));
        group = job->gloo();
    }
    const auto trained = [&](const std::shared_ptr<rlhf::distributed::communicator>& g,
                             const std::filesystem::path* load, const std::filesystem::path* save) {
        return has_critic(m) ? train<true>(m, g, load, save) : train<false>(m, g, load, save);
    };
    const run_result parallel = trained(group, resume ? &checkpoint : nullptr, resume ? nullptr : &checkpoint);

    // Every rank holds rank 0's parameters, bit for bit.
    const torch::Tensor mine = flat(parallel.params);
    double rank_difference = 0.0;
    if (group) {
        torch::Tensor of_rank0 = mine.clone();
        group->broadcast(of_rank0, 0);
        std::vector<double> difference{(of_rank0 - mine).abs().max().item<double>()};
        group->max_all(difference);
        rank_difference = difference[0];
    }
    // Every rank generates with a seed of its own (rlhf::ppo::detail::rank_seed).
    bool distinct_seeds = true;
    if (group) {
        torch::Tensor seeds = torch::zeros({env.world_size}, torch::kInt64);
        seeds[env.rank] = static_cast<std::int64_t>(parallel.next_seed);
        group->all_reduce(seeds, rlhf::distributed::reduce_op::sum);
        distinct_seeds = std::get<0>(torch::_unique(seeds)).numel() == env.world_size;
    }
    if (env.rank != 0) return rank_difference == 0.0 && distinct_seeds ? 0 : 1;

    const run_result single = trained(nullptr, nullptr, nullptr);
    const torch::Tensor reference = flat(single.params);
    const double largest_difference = (reference - mine).abs().max().item<double>();
    const double relative = largest_difference / reference.abs().max().item<double>();
    double metric_difference = 0.0;
    const auto compare = [&](const char* metric, double a, double b) {
        const double d = std::abs(a - b) / std::max(1.0, std::abs(b));
        metric_difference = std::max(metric_difference, d);
        std::printf("  %-16s %d rank(s) % .9e   1 process % .9e\n", metric, env.world_size, a, b);
    };
    using field = double ppo::step_metrics::*;
    constexpr std::array<std::pair<const char*, field>, 12> compared{{
        {"policy_loss", &ppo::step_metrics::policy_loss},
        {"value_loss", &ppo::step_metrics::value_loss},
        {"kl_loss", &ppo::step_metrics::kl_loss},
        {"advantage_mean", &ppo::step_metrics::advantage_mean},
        {"advantage_std", &ppo::step_metrics::advantage_std},
        {"score_mean", &ppo::step_metrics::score_mean},
        {"kl", &ppo::step_metrics::kl},
        {"kl_coef_next", &ppo::step_metrics::kl_coef_next},
        {"clip_fraction", &ppo::step_metrics::clip_fraction},
        {"approx_kl", &ppo::step_metrics::approx_kl},
        {"response_tokens", &ppo::step_metrics::response_tokens},
        {"grad_norm", &ppo::step_metrics::policy_grad_norm},
    }};
    for (const auto& [metric, member] : compared) compare(metric, parallel.last.*member, single.last.*member);
    std::printf(
        "%s world=%d resume=%s: parameters max |diff| %.3e (relative %.3e), ranks differ by %.1e, "
        "metrics max relative diff %.3e; seconds per step: %d rank(s) %.3f, 1 process %.3f\n",
        name.c_str(), env.world_size, resume ? "yes" : "no", largest_difference, relative, rank_difference,
        metric_difference, env.world_size, parallel.seconds_per_step, single.seconds_per_step);
    // Rank 0 draws the one-process seed: a one-rank job equals a plain run.
    const bool same_seed = parallel.next_seed == single.next_seed;
    std::printf("next generation seeds: distinct across ranks %s, rank 0 equal to one process %s\n",
                distinct_seeds ? "yes" : "no", same_seed ? "yes" : "no");
    const bool ok =
        relative <= 1e-6 && rank_difference == 0.0 && metric_difference <= 1e-6 && distinct_seeds && same_seed;
    if (!ok) std::printf("FAILED: the data-parallel step differs from the one-process step\n");
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    at::set_num_threads(1);  // one summation order, run after run
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
