// A PPO run that a test kills (SIGKILL) at random points and resumes: it trains a small causal
// transformer (tests/support/tiny_transformer.hpp, its own value head as critic) for `steps`
// steps, writes a trainer checkpoint after every step, starts from the checkpoint when one
// exists, and at the end writes every parameter's bytes to `final.bin`. tests/crash/kill_and_resume.py
// drives it.
//   rlhf_kill_resume_trainer DIR STEPS
// ivalue.h first: clang in C++20 mode rejects LibTorch 1.13's headers otherwise (doctest_torch.hpp).
#include <ATen/core/ivalue.h>

#include <ATen/Parallel.h>
#include <torch/optim/adam.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "rlhf/ppo.hpp"
#include "support/tiny_transformer.hpp"

namespace {

constexpr std::int64_t target_token = 3;

struct count_reward {
    [[nodiscard]] torch::Tensor score(const rlhf::ppo::rollout& r) const {
        return rlhf::ppo::gather_response(r.sequences, r)
            .eq(target_token)
            .logical_and(rlhf::ppo::response_mask(r))
            .sum(1)
            .to(torch::kFloat32);
    }
};

rlhf::ppo::prompt_batch prompts_of_step(std::int64_t step) {
    torch::Generator g = at::make_generator<at::CPUGeneratorImpl>(1000 + static_cast<std::uint64_t>(step));
    const torch::Tensor ids = torch::randint(2, 64, {8, 4}, g, torch::TensorOptions(torch::kInt64));
    return {ids, torch::ones_like(ids)};
}

// Large enough (≈0.8M parameters, a 10 MB checkpoint with Adam's moments) that a checkpoint
// write lasts long enough to be killed in the middle of.
rlhf_test::tiny_transformer_options model_options(std::uint64_t seed) {
    return {.vocab = 64, .width = 128, .heads = 4, .layers = 4, .positions = 32, .seed = seed};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s DIR STEPS\n", argv[0]);
        return 2;
    }
    const std::filesystem::path dir = argv[1];
    const std::int64_t steps = std::stoll(argv[2]);
    at::set_num_threads(1);  // one summation order, run after run
    try {
        rlhf_test::tiny_transformer model(model_options(1));
        rlhf_test::tiny_transformer reference(model_options(1));
        count_reward reward;
        torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(1e-3));
        rlhf::ppo::config config{
            .samples_per_prompt = 2,
            .generation = {.max_new_tokens = 8, .temperature = 1.0, .top_k = 20, .eos_token_id = {1}},
            .kl_control = rlhf::adaptive_kl_options{.init_kl_coef = 0.05,
                                                    .target = 6.0,
                                                    .horizon = 1000.0,
                                                    .measure = rlhf::kl_measure::seq_mean_token_sum},
            .value_loss = {.clip_range = 0.2, .coef = 0.1},
            .ppo_epochs = 2,
            .minibatch_size = 8,
            .max_grad_norm = 1.0,
            .seed = 7,
        };
        // The types spelled out: clang before 17 deduces no aggregate's template arguments.
        using model_type = rlhf_test::tiny_transformer;
        rlhf::ppo::ppo_trainer<model_type, model_type, count_reward, model_type> trainer(
            config, {.policy = &model, .reward_model = &reward, .critic = &model, .reference = &reference},
            {.policy = &optimizer});
        const std::filesystem::path checkpoint = dir / "checkpoint.pt";
        if (std::filesystem::exists(checkpoint)) trainer.load_checkpoint(checkpoint);
        std::printf("start %lld\n", static_cast<long long>(trainer.steps()));
        std::fflush(stdout);
        while (trainer.steps() < steps) {
            (void)trainer.step(prompts_of_step(trainer.steps()));
            trainer.save_checkpoint(checkpoint);
        }
        std::ofstream out(dir / "final.bin", std::ios::binary);
        for (const torch::Tensor& p : model.parameters()) {
            const torch::Tensor bytes = p.detach().contiguous();
            out.write(static_cast<const char*>(bytes.data_ptr()), static_cast<std::streamsize>(bytes.nbytes()));
        }
        return out ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
