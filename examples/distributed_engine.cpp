// Generation and training in separate process groups (ChatLearn's engine with parameter sync,
// OpenRLHF's and verl's rollout and training workers), on torch's c10d with Gloo.
//
//   rlhf_launch -n 2 -- rlhf_distributed_engine --layout colocated --out DIR
//       2 trainer ranks, each generating with its own inference copy of the policy
//   rlhf_launch -n 3 -- rlhf_distributed_engine --layout split --out DIR
//       ranks 0 and 1 train (a data-parallel group), rank 2 generates for both; after every
//       step rank 0 broadcasts the policy to the generation rank (broadcast_parameters)
//
// The policy: the examples' GPT (examples/common/gpt.hpp) on the byte-pair tokens of Debian's
// fortunes; GRPO (ChatLearn's preset) rewarded by a sentiment lexicon. Every rank reads the same
// text and builds the same models. Rank 0 writes the trained policy's bytes to
// DIR/<layout>.bin: both layouts give the same bytes (the ctest example.distributed_engine
// compares them) because the generation rank receives exactly the trainer's parameters and the
// request's seed.
#include <ATen/core/ivalue.h>

#include <ATen/Parallel.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/corpus.hpp"
#include "common/gpt.hpp"
#include "common/tokenizer.hpp"
#include "rlhf/distributed/c10d.hpp"
#include "rlhf/ppo.hpp"

namespace {

namespace ppo = rlhf::ppo;
namespace dist = rlhf::distributed;
using rlhf_examples::gpt;

constexpr std::int64_t prompts_per_rank = 4;
constexpr int trainer_ranks = 2;

// Each row's decoded response: its lexicon sentiment plus the share of its characters that are
// letters or spaces (an untrained model emits punctuation and digits too: a signal from the start).
struct sentiment_reward {
    const rlhf_examples::tokenizer* tokens;
    [[nodiscard]] torch::Tensor score(const ppo::rollout& r) const {
        const torch::Tensor ids = ppo::gather_response(r.sequences, r).cpu();
        const torch::Tensor mask = ppo::response_mask(r).cpu();
        std::vector<float> scores;
        for (std::int64_t b = 0; b < ids.size(0); ++b) {
            std::vector<std::int64_t> row;
            for (std::int64_t t = 0; t < ids.size(1); ++t)
                if (mask[b][t].item<bool>() && ids[b][t].item<std::int64_t>() < tokens->pad_id())
                    row.push_back(ids[b][t].item<std::int64_t>());
            const std::string text = tokens->decode(row);
            const auto letters = std::count_if(text.begin(), text.end(), [](char ch) {
                return std::isalpha(static_cast<unsigned char>(ch)) != 0 || ch == ' ';
            });
            const double share = text.empty() ? 0.0 : static_cast<double>(letters) / static_cast<double>(text.size());
            scores.push_back(static_cast<float>(rlhf_examples::lexicon_sentiment(text) + share));
        }
        return torch::tensor(scores);
    }
};

// Rank `rank`'s prompts of episode `episode`: consecutive sentence beginnings of the corpus.
ppo::prompt_batch prompts_of(const rlhf_examples::tokenizer& tokens, const std::vector<std::string>& prompts,
                             std::int64_t episode, int rank) {
    std::vector<std::string> mine;
    for (std::int64_t i = 0; i < prompts_per_rank; ++i)
        mine.push_back(prompts[static_cast<std::size_t>((episode * trainer_ranks + rank) * prompts_per_rank + i) %
                               prompts.size()]);
    return tokens.prompts(mine);
}

// The request of trainer `source` travels to every rank (the generation rank uses it).
ppo::rollout_request exchange_request(dist::communicator& world, const ppo::config& c, int source,
                                      const ppo::rollout_request* mine) {
    ppo::rollout_request r;
    if (mine != nullptr) r = *mine;
    torch::Tensor seed = torch::tensor({static_cast<std::int64_t>(r.generation.seed)}, torch::kInt64);
    world.broadcast_tensor(r.prompts.input_ids, source);
    world.broadcast_tensor(r.prompts.attention_mask, source);
    world.broadcast_tensor(r.group_ids, source);
    world.broadcast_tensor(seed, source);
    r.generation = c.generation;
    r.generation.seed = static_cast<std::uint64_t>(seed.item<std::int64_t>());
    return r;
}

// The rollout generated on rank `source` travels to every rank.
ppo::rollout exchange_rollout(dist::communicator& world, int source, ppo::rollout r) {
    world.broadcast_tensor(r.sequences, source);
    world.broadcast_tensor(r.attention_mask, source);
    world.broadcast_tensor(r.response_start, source);
    world.broadcast_tensor(r.response_end, source);
    return r;
}

int run(int argc, char** argv) {
    std::string layout = "colocated";
    std::filesystem::path out = "distributed_engine_run";
    std::int64_t episodes = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        if (flag == "--layout")
            layout = argv[i + 1];
        else if (flag == "--out")
            out = argv[i + 1];
        else if (flag == "--episodes")
            episodes = std::stoll(argv[i + 1]);
        else
            throw std::runtime_error("unknown option '" + flag +
                                     "' (--layout colocated|split, --out DIR, --episodes N)");
    }
    const bool split = layout == "split";
    if (!split && layout != "colocated") throw std::runtime_error("--layout takes colocated or split");
    at::set_num_threads(1);  // the same summation order in every process

    const dist::launch_environment env = dist::launch_environment::read();
    const int expected = split ? trainer_ranks + 1 : trainer_ranks;
    if (env.world_size != expected)
        throw std::runtime_error(layout + " runs in " + std::to_string(expected) + " processes (rlhf_launch -n " +
                                 std::to_string(expected) + "), not " + std::to_string(env.world_size));
    dist::c10d_job job(env, std::chrono::seconds(120));
    const int rank = env.rank;
    const bool generator_rank = split && rank == trainer_ranks;

    const rlhf_examples::corpus text = rlhf_examples::load_corpus();
    const rlhf_examples::tokenizer tokens(text.train, 200);
    const std::vector<std::string> prompts = rlhf_examples::corpus::prompts_of(text.train, 3);
    const rlhf_examples::gpt_options model{
        .vocab = tokens.vocab_size(), .width = 48, .heads = 2, .layers = 2, .positions = 64, .seed = 5};
    ppo::config c = ppo::presets::chatlearn_grpo();
    c.samples_per_prompt = 4;
    c.generation = {.max_new_tokens = 10,
                    .temperature = 1.0,
                    .top_k = 40,
                    .eos_token_id = {tokens.eos_id()},
                    .pad_token_id = tokens.pad_id()};
    c.pad_token_id = tokens.pad_id();
    c.minibatch_size = prompts_per_rank * c.samples_per_prompt;  // this rank's rows
    c.micro_batch_size = 8;
    c.seed = 11;
    const auto world = job.gloo();
    // The groups: trainers {0, 1} (gradients, statistics); in the split layout the sync group
    // {0, 2} (trainer rank 0 → the generation rank).
    std::shared_ptr<dist::communicator> trainers, sync;
    if (!generator_rank) trainers = job.gloo_group({0, 1}, "train");
    if (split && (rank == 0 || generator_rank)) sync = job.gloo_group({0, trainer_ranks}, "sync");

    gpt policy(model);
    if (generator_rank) {
        // The generation rank: receives the policy, then serves both trainers' requests, every episode.
        auto serve = [&](std::int64_t) {
            for (int source = 0; source < trainer_ranks; ++source) {
                const ppo::rollout_request request = exchange_request(*world, c, source, nullptr);
                ppo::rollout generated;
                {
                    const torch::NoGradGuard no_grad;
                    generated = policy.generate(request.prompts, request.generation);
                }
                (void)exchange_rollout(*world, trainer_ranks, generated);
            }
            return 0;
        };
        ppo::engine engine(serve, [](int, std::int64_t) { return 0; });
        engine.set_parameter_sync(policy, policy, dist::broadcast_parameters{sync, 0});
        (void)engine.learn(episodes);
        return 0;
    }

    gpt reference(model);
    sentiment_reward reward{&tokens};
    torch::optim::Adam optimizer(policy.parameters(), torch::optim::AdamOptions(3e-3));
    ppo::ppo_trainer<gpt, ppo::no_critic, sentiment_reward, gpt> trainer(
        c, {.policy = &policy, .reward_model = &reward, .reference = &reference}, {.policy = &optimizer});
    trainer.set_communicator(trainers);
    const auto prompts_of_episode = [&](std::int64_t episode) { return prompts_of(tokens, prompts, episode, rank); };
    const auto report = [&](const auto& r) {
        if (rank == 0)
            std::printf(
                "episode %lld: score %.3f, policy loss %.4f (environment %.2f s, trainer %.2f s, sync %.3f s)\n",
                static_cast<long long>(r.episode), r.result.score_mean, r.result.policy_loss, r.environment_seconds,
                r.trainer_seconds, r.sync_seconds);
    };
    if (split) {
        auto environment = [&](std::int64_t episode) {
            const ppo::rollout_request request = trainer.prepare_rollout(prompts_of_episode(episode));
            ppo::rollout mine;
            for (int source = 0; source < trainer_ranks; ++source) {
                (void)exchange_request(*world, c, source, source == rank ? &request : nullptr);
                ppo::rollout received = exchange_rollout(*world, trainer_ranks, {});
                if (source == rank) mine = received;
            }
            return trainer.make_experience(request, mine);
        };
        auto train = [&](ppo::step_experience&& data, std::int64_t) { return trainer.train(std::move(data)); };
        ppo::engine engine(environment, train);
        if (rank == 0) engine.set_parameter_sync(policy, policy, dist::broadcast_parameters{sync, 0});
        engine.add_callback(report);
        (void)engine.learn(episodes);
    } else {
        gpt generator(model);  // this rank's inference copy, synced after every step
        auto engine = ppo::make_ppo_engine(trainer, prompts_of_episode, generator);
        engine.add_callback(report);
        (void)engine.learn(episodes);
    }
    const torch::Tensor moved = torch::stack([&] {
                                    std::vector<torch::Tensor> norms;
                                    const gpt initial(model);
                                    const auto now = policy.parameters();
                                    const auto before = initial.parameters();
                                    for (std::size_t i = 0; i < now.size(); ++i)
                                        norms.push_back((now[i] - before[i]).norm());
                                    return norms;
                                }())
                                    .norm();
    if (rank == 0) {
        std::printf("the policy moved by |delta theta| = %.4f\n", moved.item<double>());
        if (moved.item<double>() == 0.0) throw std::runtime_error("the policy did not change: no learning signal");
        std::filesystem::create_directories(out);
        std::ofstream bytes(out / (layout + ".bin"), std::ios::binary);
        for (const auto& p : policy.parameters()) {
            const torch::Tensor t = p.detach().contiguous();
            bytes.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
        }
        std::printf("%s: the policy after %lld episodes is in %s\n", layout.c_str(), static_cast<long long>(episodes),
                    (out / (layout + ".bin")).c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "rlhf_distributed_engine: %s\n", e.what());
        return 1;
    }
}
