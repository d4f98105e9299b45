// TRL's quick start on a small byte-level GPT trained here: supervised fine-tuning on English
// sentences (Debian's fortunes), a sentiment reward model learned from labelled pairs the example
// derives from the same text, then PPO with TRL v0.11's classic configuration
// (trl/trainer/ppo_config.py, ppo_trainer.py: adaptive KL 0.2 → target 6 over 10,000 samples,
// γ = 1, λ = 0.95, whitened advantages, value head on the policy with vf_coef 0.1, 4 PPO epochs).
// The reward rises while the KL to the SFT reference stays near its target.
//
//   rlhf_trl_sentiment [--out DIR] [--from DIR] [--ppo-steps N] [--seed S] ...   (--help lists every flag)
//
// Writes DIR/chart.png (reward, KL and losses per step), DIR/samples.md (the same prompts before
// and after PPO), the JSON Lines metrics of each stage, and sft.pt, rm.pt, policy.pt.
#include <torch/optim/adam.h>
#include <cstdio>
#include <exception>

#include "common/stages.hpp"

int main(int argc, char** argv) try {
    using namespace rlhf_examples;
    run_options o;
    o.out = "trl_sentiment_run";
    command_line cli("rlhf_trl_sentiment",
                     "TRL v0.11 PPO on a small GPT: SFT on Debian's fortunes, a sentiment reward model, PPO.");
    add_run_flags(cli, o);
    if (!cli.parse(argc, argv)) return 0;
    start_run(o);

    const run_text text = load_run_text(o);
    gpt policy = supervised_fine_tuning(o, text);
    reward_model_result reward = train_reward_model(o, text, policy);

    gpt reference = copy_of(policy, /*frozen=*/true);  // the SFT model

    const rlhf::ppo::config cfg = with_run_sizes(rlhf::ppo::presets::trl_v0_11(), o, text.tokens);
    // TRL's value head lives on the policy and shares its optimizer: the policy is its own critic.
    torch::optim::Adam optimizer(policy.parameters(), torch::optim::AdamOptions(o.actor_lr));
    rlhf::ppo::ppo_trainer trainer(
        cfg,
        rlhf::ppo::trainer_models{
            .policy = &policy, .reward_model = &reward.model, .critic = &policy, .reference = &reference},
        {.policy = &optimizer});
    const ppo_outcome ppo = run_ppo(trainer, policy, reward.model, o, text, "trl_sentiment (TRL v0.11 PPO)");
    return check_learning(o, ppo, reward.held_out_accuracy) ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "rlhf_trl_sentiment: %s\n", e.what());
    return 2;
}
