// ColossalChat's three stages on a small byte-level GPT (applications/ColossalChat: train_sft.py,
// train_rm.py, train_ppo.py): SFT on English sentences (Debian's fortunes); a reward model from
// the SFT weights trained with the pairwise log-sigmoid loss (coati/models/loss.py `LogSigLoss`)
// on preference pairs derived from the text, with its held-out accuracy; PPO with the ColossalChat
// v2 preset (coati/trainer/ppo.py) — a critic initialised from the reward model, the reference
// the SFT model, and the PTX loss mixed into the actor's loss as `(1 − ptx_coef)·actor + ptx_coef·lm`.
//
//   rlhf_colossalchat_pipeline [--stage sft|rm|ppo|all] [--out DIR] ...   (--help lists every flag)
//
// Each stage writes its checkpoint to DIR (sft.pt, rm.pt, policy.pt); `--stage rm` starts from
// sft.pt and `--stage ppo` from sft.pt and rm.pt of the --from folder (default DIR). PPO writes
// chart.png and samples.md.
//
// `--loop chatllama` runs chatllama's actor/critic/reward-model loop on the same stages
// (nebuly-ai/nebuly: optimization/chatllama/chatllama/rlhf/{reward,trainer}.py): the reward model
// regresses the texts' scores by MSE instead of ranking pairs, and PPO uses `presets::chatllama()`
// (reward-to-go minus values, whitened; value loss without the ½; no PTX, no
// reference model). The rm stage then copies sft.pt into DIR, so DIR alone feeds the ppo stage.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "common/stages.hpp"

int main(int argc, char** argv) try {
    using namespace rlhf_examples;
    run_options o;
    o.out = "colossalchat_run";
    std::string stage = "all";
    std::string loop = "colossalchat";
    // ColossalChat's trainer defaults to 0.9; at this model size that weight holds the reward flat
    // (measured: held-out reward 0.59 -> 0.82 in 80 steps, against 0.59 -> 2.09 at 0.3).
    double ptx_coef = 0.3;
    std::int64_t ptx_rows = 8;
    o.actor_lr = 1e-3;  // measured to learn at this scale (ColossalChat's own are for 7B models)
    o.critic_lr = 2e-3;
    command_line cli("rlhf_colossalchat_pipeline",
                     "ColossalChat's SFT, reward-model and PPO stages on a small GPT trained on Debian's fortunes.");
    cli.option("stage", stage, "sft, rm, ppo or all");
    cli.option("loop", loop,
               "colossalchat (pairwise RM, ColossalChat v2 PPO + PTX) or chatllama (MSE RM, chatllama PPO)");
    cli.option("ptx-coef", ptx_coef, "PTX weight of the mixed actor loss (ColossalChat's trainer: 0.9)");
    cli.option("ptx-rows", ptx_rows, "corpus sentences per PTX batch");
    add_run_flags(cli, o);
    if (!cli.parse(argc, argv)) return 0;
    if (stage != "sft" && stage != "rm" && stage != "ppo" && stage != "all")
        throw std::invalid_argument("option '--stage': expected sft, rm, ppo or all, got '" + stage + "'");
    if (loop != "colossalchat" && loop != "chatllama")
        throw std::invalid_argument("option '--loop': expected colossalchat or chatllama, got '" + loop + "'");
    const bool chatllama = loop == "chatllama";
    if (chatllama) {
        o.rm_loss = run_options::reward_loss::score_mse;
        ptx_coef = 0.0;
    }
    start_run(o);
    const run_text text = load_run_text(o);

    // Each stage starts from the previous one's checkpoint: trained now (`all`), or in --from (default: --out).
    const bool all = stage == "all";
    const std::filesystem::path earlier = o.from.empty() ? o.out : o.from;
    const gpt sft = all || stage == "sft" ? supervised_fine_tuning(o, text) : load_stage(earlier, "sft.pt", "SFT");
    if (stage == "sft") return 0;
    if (stage == "rm") o.from.clear();  // train it
    if (stage == "ppo" && o.from.empty()) o.from = o.out;
    const reward_model_result reward = train_reward_model(o, text, sft);
    if (stage == "rm") {
        if (!std::filesystem::exists(o.out / "sft.pt")) save_gpt(sft, o.out / "sft.pt");
        return check_learning(o, {}, reward.held_out_accuracy) ? 0 : 1;
    }

    actor_critic_models m(sft, reward.model, o);
    if (chatllama) {
        const rlhf::ppo::config cfg = with_run_sizes(rlhf::ppo::presets::chatllama(), o, text.tokens);
        // chatllama's loop has no reference model: the actor, the critic and the reward model.
        rlhf::ppo::ppo_trainer trainer(
            cfg, rlhf::ppo::trainer_models{.policy = &m.actor, .reward_model = &m.reward_model, .critic = &m.critic},
            m.optimizers());
        const ppo_outcome ppo = run_ppo(trainer, m.actor, m.reward_model, o, text,
                                        "colossalchat_pipeline --loop chatllama (MSE reward model, chatllama PPO)");
        return check_learning(o, ppo, reward.held_out_accuracy) ? 0 : 1;
    }
    rlhf::ppo::config cfg =
        with_run_sizes(rlhf::ppo::presets::colossalchat_v2(/*with_ptx=*/ptx_coef > 0.0), o, text.tokens);
    cfg.ptx_coef = ptx_coef;
    rlhf::ppo::ppo_trainer trainer(cfg, m.models(), m.optimizers());
    if (ptx_coef > 0.0)
        trainer.set_ptx_source(corpus_ptx_source(text, ptx_rows, o.seed + 3, m.actor.options().positions));
    const ppo_outcome ppo =
        run_ppo(trainer, m.actor, m.reward_model, o, text, "colossalchat_pipeline (ColossalChat v2 PPO + PTX)");
    return check_learning(o, ppo, reward.held_out_accuracy) ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "rlhf_colossalchat_pipeline: %s\n", e.what());
    return 2;
}
