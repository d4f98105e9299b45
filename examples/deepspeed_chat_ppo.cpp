// DeepSpeed-Chat's step 3 on a small byte-level GPT (training/step3_rlhf_finetuning/main.py,
// dschat/rlhf/ppo_trainer.py), after its steps 1 and 2 run here the same way (SFT on Debian's
// fortunes, a pairwise reward model from the SFT weights): reward shaping with the reward-model
// score clipped to ±5 and a KL penalty of 0.1 per token, its GAE (γ = 1, λ = 0.95), clipped
// actor and critic losses, one PPO epoch, gradient clipping 1.0, an EMA of the actor (β = 0.992,
// `--enable_ema`) and the unsupervised (PTX) loss as a separate step (`--unsupervised_dataset_name`,
// `unsup_coef` 27.8, with `--unsupervised`). The critic starts from the reward model.
//
//   rlhf_deepspeed_chat_ppo [--out DIR] [--from DIR] [--ppo-steps N] ...   (--help lists every flag)
//
// Writes DIR/chart.png, DIR/samples.md, the stages' JSON Lines, sft.pt, rm.pt, policy.pt and
// ema_policy.pt (the EMA actor, evaluated on the same held-out prompts).
#include <cstdio>
#include <exception>

#include "common/stages.hpp"

int main(int argc, char** argv) try {
    using namespace rlhf_examples;
    run_options o;
    o.out = "deepspeed_chat_run";
    bool unsupervised = false;  // DeepSpeed-Chat's default (no --unsupervised_dataset_name)
    // Sizes measured to learn at this scale (DeepSpeed-Chat's own are for 1.3B models): 4 actor and
    // critic steps per rollout, larger learning rates than the TRL example's.
    o.minibatch = 16;
    o.actor_lr = 1e-3;
    o.critic_lr = 2e-3;
    std::int64_t ptx_rows = 8;
    command_line cli("rlhf_deepspeed_chat_ppo",
                     "DeepSpeed-Chat step 3 (after steps 1 and 2) on a small GPT trained on Debian's fortunes.");
    cli.option("unsupervised", unsupervised, "add the unsupervised (PTX) step after each actor step (coef 27.8)");
    cli.option("ptx-rows", ptx_rows, "corpus sentences per unsupervised batch");
    add_run_flags(cli, o);
    if (!cli.parse(argc, argv)) return 0;
    start_run(o);
    const run_text text = load_run_text(o);

    const gpt sft = supervised_fine_tuning(o, text);                // step 1
    reward_model_result reward = train_reward_model(o, text, sft);  // step 2

    actor_critic_models m(sft, reward.model, o);
    rlhf::ppo::config cfg = with_run_sizes(rlhf::ppo::presets::deepspeed_chat(unsupervised), o, text.tokens);
    cfg.ema_beta = 0.992;
    rlhf::ppo::ppo_trainer trainer(cfg, m.models(), m.optimizers());
    if (unsupervised)
        trainer.set_ptx_source(corpus_ptx_source(text, ptx_rows, o.seed + 3, m.actor.options().positions));
    const ppo_outcome ppo =
        run_ppo(trainer, m.actor, m.reward_model, o, text, "deepspeed_chat_ppo (DeepSpeed-Chat step 3)");

    gpt ema_actor = copy_of(sft);
    trainer.copy_ema_to(ema_actor);
    save_gpt(ema_actor, o.out / "ema_policy.pt");
    std::printf("EMA actor: held-out reward %.3f (actor %.3f)\n",
                evaluate(ema_actor, m.reward_model, text.tokens, held_out_prompts(o, text), o).mean_reward,
                ppo.reward_after);
    return check_learning(o, ppo, reward.held_out_accuracy) ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "rlhf_deepspeed_chat_ppo: %s\n", e.what());
    return 2;
}
