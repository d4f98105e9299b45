// OpenRL's NLP setup on a small byte-level GPT (OpenRL-Lab/openrl: examples/nlp/nlp_ppo.yaml,
// openrl/rewards/nlp_reward.py, openrl/envs/nlp/rewards/kl_penalty.py): a dialogue model answers
// "Q: <question> A:" prompts and learns from a learned reward plus a per-token KL penalty
// −α·(log π − log π_ref) whose α follows OpenRL's proportional controller
// (α ← α·(1 + 0.1·clip((KL − 0.05)/0.05, ±0.2)) once per rollout, α₀ = 0.2), with
// `rlhf::ppo::presets::openrl()` (GAE 0.99/0.95, clipped Huber value loss, entropy 0.01, 5 epochs).
//
// The dialogues: each question of Debian's fortunes followed by its answer ("Q: ... A: ..."
// riddles, two-speaker exchanges, jokes), about 640 of them, one in eight held out.
// The learned reward: OpenRL scores the generated turn with a dialogue-intent classifier (its
// `Intent`, weight 0.5, beside METEOR against the reference turn). Here it is the kit's reward
// model (stages.hpp `train_reward_model`: pairwise loss on sentiment preference pairs of the
// corpus), applied to the generated answer alone. It scores any English sentence; pairs built from
// the dialogues would be labelled by the same word list from far fewer texts, so the kit's model
// is kept (and `--from` reuses it). METEOR needs a reference answer per prompt and is left out.
// The SFT model is the kit's, then a few steps on the "Q: question A: answer" texts
// (--dialog-sft-steps) so the policy and the KL reference know the format.
//
//   rlhf_openrl_dialog [--out DIR] [--from DIR] [--ppo-steps N] [--seed S] ...   (--help lists every flag)
//
// Writes DIR/chart.png (learned reward train and held-out, KL penalty term, total reward, α, KL per
// token, value loss), DIR/reward_terms.jsonl (the reward's terms per step), ppo_metrics.jsonl,
// eval_metrics.jsonl, samples.md (before/after) and sft.pt, rm.pt, policy.pt.
#include <torch/optim/adam.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "common/stages.hpp"

namespace {

using namespace rlhf_examples;

// Questions and their answers from the fortune files, split into training and held-out parts.
struct dialogues {
    std::vector<std::string> train_prompts, held_out_prompts;  // "Q: <question> A:"
    std::vector<std::string> train_texts, held_out_texts;      // "Q: <question> A: <answer>"
};

std::string trimmed(const std::string& s) {
    const char* space = " \"'";
    const auto first = s.find_first_not_of(space);
    if (first == std::string::npos) return {};
    return s.substr(first, s.find_last_not_of(space) - first + 1);
}

// A sentence without its speaker mark ("Q:", "A:").
std::string unmarked(const std::string& s) {
    return s.size() > 2 && (s.starts_with("Q:") || s.starts_with("A:")) ? trimmed(s.substr(2)) : s;
}

// Reads every fortune file of `dir` (entries end at "%", attributions "-- ..." dropped,
// whitespace collapsed, ASCII only) and takes each question sentence with the sentence that
// answers it: "Q: ... A: ..." riddles, and exchanges or jokes where one line asks and the next
// replies. Keeps a question once, and only pairs whose prompt leaves room for `max_new_tokens`
// in `positions` tokens; one question in eight goes to the held-out part.
dialogues load_dialogues(const tokenizer& tokens, std::int64_t positions, std::int64_t max_new_tokens,
                         const std::filesystem::path& dir = default_corpus_dir) {
    dialogues d;
    std::set<std::string> seen;
    std::size_t count = 0;
    for (const auto& entry : fortune_entries(dir)) {
        if (!printable_ascii(entry)) continue;
        std::vector<std::string> sentences;
        for (const auto& sentence : sentences_of(entry))
            if (std::string t = trimmed(sentence); !t.empty()) sentences.push_back(std::move(t));
        for (std::size_t i = 0; i + 1 < sentences.size(); ++i) {
            const std::string question = unmarked(sentences[i]), answer = unmarked(sentences[i + 1]);
            const bool fits = question.size() >= 12 && question.size() <= 72 && question.back() == '?' &&
                              std::isupper(static_cast<unsigned char>(question[0])) != 0 && answer.size() >= 2 &&
                              answer.size() <= 64;
            if (!fits || seen.contains(question)) continue;
            const std::string prompt = "Q: " + question + " A:", text = prompt + " " + answer;
            const auto room = static_cast<std::size_t>(positions);
            if (tokens.encode(prompt).size() + static_cast<std::size_t>(max_new_tokens) > room ||
                tokens.encode(text).size() + 1 > room)
                continue;
            seen.insert(question);
            const bool held_out = ++count % 8 == 0;
            (held_out ? d.held_out_prompts : d.train_prompts).push_back(prompt);
            (held_out ? d.held_out_texts : d.train_texts).push_back(text);
        }
    }
    return d;
}

// A few SFT steps on the dialogue texts (the kit's SFT saw single sentences, never "Q: ... A:").
void dialogue_fine_tuning(gpt& model, const run_options& o, const run_text& text, const dialogues& d,
                          std::int64_t steps, double lr) {
    if (steps <= 0) return;
    std::vector<std::string> held_out = d.held_out_texts;
    held_out.resize(std::min<std::size_t>(256, held_out.size()));
    auto held_out_loss = [&] {
        const torch::NoGradGuard no_grad;
        return language_model_loss(model, text.tokens, held_out).item<double>();
    };
    const double before = held_out_loss();
    torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(lr));
    batch_sampler<std::string> sampler(d.train_texts, o.seed + 5);
    jsonl_writer metrics(o.out / "dialog_sft_metrics.jsonl");
    progress_bar bar("SFT dialogue", steps);
    for (std::int64_t step = 1; step <= steps; ++step) {
        optimizer.zero_grad();
        const torch::Tensor loss = language_model_loss(model, text.tokens, sampler.next(o.sft_batch));
        loss.backward();
        optimizer.step();
        metrics.write(step, {{"loss", loss.item<double>()}});
        bar.update(step, {{"loss", loss.item<double>()}});
    }
    std::printf("SFT on dialogues: held-out loss %.3f -> %.3f nats/token in %.0f s\n", before, held_out_loss(),
                bar.seconds());
}

// The learned reward of a turn: the reward model's score of the generated answer alone, as
// OpenRL's `Intent` reward classifies the generated turn; the question's own score would
// otherwise swamp the answer's (the RM learned single sentences).
struct answer_reward {
    gpt* model;
    const tokenizer* tokens;
    torch::Tensor score(const rlhf::ppo::rollout& r) const {
        const torch::NoGradGuard no_grad;
        const rlhf::ppo::prompt_batch answers = tokens->texts(tokens->responses(r), model->options().positions);
        return model->sequence_scores(answers.input_ids, answers.attention_mask);
    }
};

}  // namespace

int main(int argc, char** argv) try {
    run_options o;
    o.out = "openrl_dialog_run";
    std::int64_t dialog_sft_steps = 60;
    double dialog_sft_lr = 2e-3;
    o.actor_lr = 1e-3;  // measured to learn at this scale, as colossalchat_pipeline's (nlp_ppo.yaml: 1e-7 for GPT-2)
    o.critic_lr = 2e-3;
    // A default run within about 3 minutes: the learning test's SFT length, and 30 PPO steps (the
    // held-out reward has gained 0.7-1.6 by then for seeds 1-3; the test runs 60).
    o.sft_steps = 400;
    o.ppo_steps = 30;
    double expect_alpha_moved = std::nan("");
    command_line cli("rlhf_openrl_dialog",
                     "OpenRL's NLP PPO on a small GPT: questions from Debian's fortunes, a learned reward and a "
                     "KL penalty with a proportional controller.");
    cli.option("dialog-sft-steps", dialog_sft_steps, "SFT steps on the \"Q: question A: answer\" texts");
    cli.option("dialog-sft-lr", dialog_sft_lr, "learning rate of those steps (Adam)");
    add_run_flags(cli, o);
    cli.option("expect-alpha-moved", expect_alpha_moved, "check: |alpha_end / alpha_start - 1| at least this");
    if (!cli.parse(argc, argv)) return 0;
    start_run(o);

    const run_text text = load_run_text(o);
    const dialogues d = load_dialogues(text.tokens, o.model(text.tokens.vocab_size(), 0).positions, o.max_new_tokens);
    std::printf("dialogues: %zu training and %zu held-out questions, e.g. \"%s\"\n", d.train_prompts.size(),
                d.held_out_prompts.size(), d.train_texts.empty() ? "" : d.train_texts.front().c_str());
    if (d.train_prompts.size() < 400 || d.held_out_prompts.size() < 50)
        throw std::runtime_error("too few questions in " + default_corpus_dir.string());

    gpt sft = supervised_fine_tuning(o, text);
    const reward_model_result reward = train_reward_model(o, text, sft);
    dialogue_fine_tuning(sft, o, text, d, dialog_sft_steps, dialog_sft_lr);

    // OpenRL's policy and value networks are separate models: the kit's actor (SFT) and critic (RM).
    actor_critic_models m(sft, reward.model, o);
    // The preset as is, with this run's sizes (rollout, minibatch, sampling); the learning rates are
    // set above.
    const rlhf::ppo::config cfg = with_run_sizes(rlhf::ppo::presets::openrl(), o, text.tokens);
    answer_reward learned{&m.reward_model, &text.tokens};
    rlhf::ppo::ppo_trainer trainer(
        cfg,
        rlhf::ppo::trainer_models{
            .policy = &m.actor, .reward_model = &learned, .critic = &m.critic, .reference = &m.reference},
        m.optimizers());

    // The reward's terms per step. The trainer's reward_mean is the mean over rows of Σ_t r_t with
    // r_t = −α·KL_t (+ the score at the last token), so the penalty's row sum is reward_mean − score_mean;
    // per token it is −α·KL (kl is the token mean, the controller's input).
    const double alpha_start = rlhf::initial_kl_coef(cfg.kl_control);
    double alpha_end = alpha_start;
    jsonl_writer terms(o.out / "reward_terms.jsonl");
    trainer.add_callback([&](const rlhf::ppo::step_metrics& s) {
        alpha_end = s.kl_coef_next;
        terms.write(s.step, {{"score_mean", s.score_mean},
                             {"kl_penalty", s.reward_mean - s.score_mean},
                             {"kl_penalty_per_token", -s.kl_coef * s.kl},
                             {"reward_mean", s.reward_mean},
                             {"kl", s.kl},
                             {"kl_coef", s.kl_coef},
                             {"kl_coef_next", s.kl_coef_next}});
    });
    // Each held-out question several times (a sample each) up to --eval-prompts rows: 80 rows alone are too noisy.
    std::vector<std::string> held_out_rows;
    while (static_cast<std::int64_t>(held_out_rows.size()) < o.eval_prompts)
        held_out_rows.push_back(d.held_out_prompts[held_out_rows.size() % d.held_out_prompts.size()]);
    const ppo_run_extras extras{
        .train_prompts = d.train_prompts,
        .eval_prompts = held_out_rows,
        .bar_figures = [](const rlhf::ppo::step_metrics& s) -> std::vector<std::pair<std::string, double>> {
            return {{"alpha", s.kl_coef_next}};
        },
        .draw_chart = false};
    const ppo_outcome ppo = run_ppo(trainer, m.actor, learned, o, text, "openrl_dialog (OpenRL NLP PPO)", extras);
    std::printf("alpha (KL coefficient): %.4f -> %.4f, final KL %.3f per token (target %.3f)\n", alpha_start, alpha_end,
                ppo.final_kl, std::get<rlhf::proportional_kl_options>(cfg.kl_control).target);

    // The held-out evaluations under the training curve's key, for one panel with both.
    {
        std::ifstream in(o.out / "eval_metrics.jsonl");
        jsonl_writer held_out(o.out / "held_out_reward.jsonl");
        long long step = 0;
        double value = 0.0;
        for (std::string line; std::getline(in, line);)
            if (std::sscanf(line.c_str(), "{\"step\":%lld,\"reward\":%lf", &step, &value) == 2)
                held_out.write(step, {{"score_mean", value}});
    }
    const double target = std::get<rlhf::proportional_kl_options>(cfg.kl_control).target;
    if (draw_curves(
            o.out, "chart.png", "openrl_dialog: OpenRL NLP PPO (learned reward + proportional KL penalty)",
            {{.title = "learned reward (RM score)",
              .y = "score_mean",
              .curves = {{"reward_terms.jsonl", "train rollouts"}, {"held_out_reward.jsonl", "held-out"}}},
             {.title = "KL penalty term (row sum of -alpha*KL)",
              .y = "kl_penalty",
              .curves = {{"reward_terms.jsonl", "-alpha*KL"}}},
             {.title = "total reward (score + penalty)",
              .y = "reward_mean",
              .curves = {{"reward_terms.jsonl", "total"}}},
             {.title = "alpha (proportional controller)", .y = "kl_coef", .curves = {{"reward_terms.jsonl", "alpha"}}},
             {.title = "KL per token (target dashed)",
              .y = "kl",
              .curves = {{"reward_terms.jsonl", "KL"}},
              .reference = target},
             {.title = "value loss (clipped Huber)", .y = "value_loss", .curves = {{"ppo_metrics.jsonl", "critic"}}}}))
        std::printf("chart: %s\n", (o.out / "chart.png").c_str());

    bool ok = check_learning(o, ppo, reward.held_out_accuracy);
    if (!std::isnan(expect_alpha_moved)) {
        const double moved = std::abs(alpha_end / alpha_start - 1.0);
        const bool pass = moved >= expect_alpha_moved;
        ok = ok && pass;
        std::printf("check %-38s %8.3f >= %.3f  %s\n", "alpha moved |end/start - 1|", moved, expect_alpha_moved,
                    pass ? "ok" : "FAILED");
    }
    return ok ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "rlhf_openrl_dialog: %s\n", e.what());
    return 2;
}
