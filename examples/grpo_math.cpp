// Critic-free RL on a verifiable task: a small GPT answers two-number additions ("37+48=") and
// earns 1 for the exact sum, 0 otherwise. After a short SFT on a quarter of the training problems,
// each selected algorithm trains its own copy of the SFT model with the same problems, samples
// and seed, and the held-out exact-match accuracy is measured before, during and after:
//   grpo                   verl's GRPO recipe (`presets::grpo()`: (s − mean)/(std + 1e-6), k3 KL
//                          in the loss with β = 0.001, dual clip 3, token-mean)
//   grpo_trl               TRL's GRPOTrainer defaults (trl/trainer/grpo_config.py: std ε 1e-4,
//                          β = 0, loss_type 'dapo' = token-mean over the batch)
//   dr_grpo                Dr.GRPO as verl runs it (norm_adv_by_std_in_grpo=False,
//                          loss_agg_mode=seq-mean-token-sum-norm, no KL)
//   rloo                   `presets::rloo()` (leave-one-out baseline, k1 KL in the reward)
//   reinforce_pp           `presets::reinforce_plus_plus()` (OpenRLHF `reinforce`)
//   reinforce_pp_baseline  OpenRLHF `reinforce_baseline` (group-mean baseline, then whitening)
//
//   rlhf_grpo_math [--algorithms grpo,rloo|all] [--out DIR] [--rl-steps N] [--seed S] ...   (--help)
//
// Writes DIR/chart.png (held-out accuracy, training reward and KL per algorithm on shared axes),
// DIR/samples.md (held-out problems answered before and after each algorithm), and per algorithm
// <name>_metrics.jsonl (the trainer's metrics) and <name>_eval.jsonl (held-out accuracy), and in
// DIR/tensorboard/<name>/ the same metrics, the accuracy and the answers as TensorBoard event files.
#include <cstdio>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "common/arithmetic.hpp"
#include "rlhf/ppo/tensorboard.hpp"

namespace {

using namespace rlhf_examples;
namespace ppo = rlhf::ppo;

const std::vector<std::string> all_algorithms = {"grpo", "grpo_trl",     "dr_grpo",
                                                 "rloo", "reinforce_pp", "reinforce_pp_baseline"};

// The trainer configuration of one algorithm, from the library's presets, with this run's sizes.
ppo::config algorithm_config(const std::string& name, const math_options& o, const tokenizer& tokens) {
    ppo::config c;
    if (name == "grpo") {
        c = ppo::presets::grpo();
    } else if (name == "grpo_trl") {
        c = ppo::presets::grpo();
        c.grpo = rlhf::grpo_preset::trl();
        c.kl = ppo::kl_placement::none;
        c.policy_loss.dual_clip = std::nullopt;
    } else if (name == "dr_grpo") {
        c = ppo::presets::grpo();
        c.estimator = rlhf::advantage_estimator::dr_grpo;
        c.kl = ppo::kl_placement::none;
        c.policy_loss.aggregation.mode = rlhf::loss_aggregation::seq_mean_token_sum_norm;
    } else if (name == "rloo") {
        c = ppo::presets::rloo();
    } else if (name == "reinforce_pp") {
        c = ppo::presets::reinforce_plus_plus();
    } else if (name == "reinforce_pp_baseline") {
        c = ppo::presets::reinforce_plus_plus();
        c.estimator = rlhf::advantage_estimator::reinforce_plus_plus_baseline;
        c.reinforce_plus_plus_baseline = rlhf::reinforce_plus_plus_baseline_preset::openrlhf();
    } else {
        throw std::invalid_argument(
            "'--algorithms': expected names among grpo, grpo_trl, dr_grpo, rloo, "
            "reinforce_pp, reinforce_pp_baseline (or all), got '" +
            name + "'");
    }
    c.samples_per_prompt = o.samples;
    c.rollout_batch_size = o.prompts_per_step * o.samples;
    c.minibatch_size = c.rollout_batch_size;
    c.micro_batch_size = c.rollout_batch_size;
    c.generation = {.max_new_tokens = 4, .eos_token_id = {tokens.eos_id()}, .pad_token_id = tokens.pad_id()};
    c.seed = o.seed;
    return c;
}

std::vector<std::string> parse_algorithms(const std::string& list) {
    if (list == "all") return all_algorithms;
    std::vector<std::string> names;
    std::stringstream in(list);
    for (std::string name; std::getline(in, name, ',');) names.push_back(name);
    return names;
}

// One algorithm from the SFT weights: its own policy copy, the SFT model as reference, the trainer.
method_result train_algorithm(const std::string& name, const gpt& sft, const math_options& o, const tokenizer& tokens,
                              const addition_problems& problems, const std::vector<addition>& shown) {
    gpt policy = copy_of(sft);
    gpt reference = copy_of(sft, /*frozen=*/true);
    exact_match_reward reward{&tokens};
    torch::optim::Adam optimizer(policy.parameters(), torch::optim::AdamOptions(o.lr));
    ppo::ppo_trainer<gpt, ppo::no_critic, exact_match_reward, gpt> trainer(
        algorithm_config(name, o, tokens), {.policy = &policy, .reward_model = &reward, .reference = &reference},
        {.policy = &optimizer});
    trainer.add_callback(ppo::jsonl_sink(o.out / (name + "_metrics.jsonl")));
    // TensorBoard: one run per algorithm under DIR/tensorboard (`tensorboard --logdir DIR/tensorboard`).
    const ppo::tensorboard_sink board(o.out / "tensorboard" / name);
    trainer.add_callback(board);
    batch_sampler<std::string> prompts = rl_prompt_sampler(o, problems);
    method_result result = train_with_evaluation(
        name, policy, o, tokens, problems, shown, o.prompts_per_step * o.samples,
        [&](std::int64_t) { return trainer.step(tokens.prompts(prompts.next(o.prompts_per_step))).score_mean; },
        [&](std::int64_t step, double accuracy) { board.add_scalar("eval/accuracy", accuracy, step); });
    board.add_text("samples", answer_table(shown, {{name, result}}), o.rl_steps);
    return result;
}

}  // namespace

int main(int argc, char** argv) try {
    math_options o;
    o.out = "grpo_math_run";
    std::string algorithms = "all";
    command_line cli("rlhf_grpo_math",
                     "GRPO, Dr.GRPO, RLOO and REINFORCE++ on exact-match addition: held-out accuracy per algorithm.");
    cli.option("algorithms", algorithms,
               "comma-separated: grpo, grpo_trl, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, or all");
    add_math_flags(cli, o);
    if (!cli.parse(argc, argv)) return 0;
    const std::vector<std::string> names = parse_algorithms(algorithms);
    for (const auto& name : names) (void)algorithm_config(name, o, tokenizer({}, 0));  // refuse bad names first
    start_run(o.threads, o.seed, o.out);

    const tokenizer tokens({}, 0);  // bytes: digits, '+', '='
    const addition_problems problems = make_addition_problems(o.max_operand, o.seed);
    std::printf("task: a+b with a, b in [0, %lld]: %zu training and %zu held-out problems\n",
                static_cast<long long>(o.max_operand), problems.train.size(), problems.held_out.size());
    const gpt sft = train_addition_sft(o, tokens, problems);
    const std::vector<addition> shown = shown_problems(problems);
    std::vector<std::pair<std::string, method_result>> runs;
    for (const auto& name : names) runs.emplace_back(name, train_algorithm(name, sft, o, tokens, problems, shown));
    const bool ok = report_runs(o, shown, runs);

    std::vector<curve> accuracy, reward;
    for (const auto& name : names) {
        accuracy.push_back({name + "_eval.jsonl", name});
        reward.push_back({name + "_metrics.jsonl", name});
    }
    if (draw_curves(o.out, "chart.png", "exact-match addition: critic-free estimators from one SFT model",
                    {{.title = "held-out exact-match accuracy", .y = "accuracy", .curves = accuracy},
                     {.title = "training reward (share correct)", .y = "score_mean", .curves = reward},
                     {.title = "KL to the SFT model", .y = "kl", .curves = reward},
                     {.title = "policy loss", .y = "policy_loss", .curves = reward}}))
        std::printf("chart: %s\n", (o.out / "chart.png").c_str());
    return ok ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "rlhf_grpo_math: %s\n", e.what());
    return 2;
}
