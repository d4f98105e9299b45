#pragma once
// A verifiable task for the critic-free examples: two-number addition ("37+48=") answered by a
// small byte-level GPT, rewarded 1 for the exact sum and 0 otherwise (the rule-based rewards of
// verl's GSM8K recipe and TRL's GRPO quick start, on a task 2 CPU cores learn in a minute). Its
// SFT stage learns from a share of the training problems only, so RL starts from a model that
// is right some of the time and has room to improve on the held-out problems.
#include <torch/optim/adam.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/report.hpp"
#include "common/stages.hpp"
#include "rlhf/ppo.hpp"

namespace rlhf_examples {

struct addition {
    int a = 0, b = 0;
    [[nodiscard]] std::string prompt() const { return std::to_string(a) + "+" + std::to_string(b) + "="; }
    [[nodiscard]] std::string answer() const { return std::to_string(a + b); }
};

// Every pair of operands in [0, max_operand], shuffled by `seed` and split into training and
// held-out problems (a fifth held out).
struct addition_problems {
    std::vector<addition> train, held_out;
};

inline addition_problems make_addition_problems(std::int64_t max_operand, std::uint64_t seed) {
    std::vector<addition> all;
    for (int a = 0; a <= max_operand; ++a)
        for (int b = 0; b <= max_operand; ++b) all.push_back({a, b});
    std::mt19937_64 engine(seed);
    std::shuffle(all.begin(), all.end(), engine);
    const auto held = static_cast<std::ptrdiff_t>(all.size() / 5);
    return {{all.begin() + held, all.end()}, {all.begin(), all.begin() + held}};
}

// Reads "a+b=" back from a row's prompt tokens; false when the text is not of that form.
inline bool parse_addition(const std::string& prompt, addition& out) {
    const auto plus = prompt.find('+');
    if (plus == std::string::npos || plus == 0 || prompt.size() < plus + 3 || prompt.back() != '=') return false;
    const std::string a = prompt.substr(0, plus), b = prompt.substr(plus + 1, prompt.size() - plus - 2);
    const auto digits = [](const std::string& s) {
        return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    if (!digits(a) || !digits(b)) return false;
    out = {std::stoi(a), std::stoi(b)};
    return true;
}

// The exact-match reward, a `SequenceRewardModel`: 1 when a row's response is the sum of the two
// numbers in its prompt, else 0. It reads the prompt from the rollout itself, so it needs no side
// channel from the prompts to the answers.
struct exact_match_reward {
    const tokenizer* tokens;

    [[nodiscard]] std::vector<double> correct(const rlhf::ppo::rollout& r) const {
        const torch::Tensor seq = r.sequences.to(torch::kCPU).to(torch::kInt64).contiguous();
        const std::vector<std::string> responses = tokens->responses(r);
        std::vector<double> out;
        for (std::int64_t row = 0; row < seq.size(0); ++row) {
            const auto* p = seq[row].data_ptr<std::int64_t>();
            std::vector<std::int64_t> prompt;
            for (std::int64_t t = 0; t < r.response_start[row].item<std::int64_t>(); ++t)
                if (p[t] < tokens->pad_id()) prompt.push_back(p[t]);
            addition problem;
            const bool parsed = parse_addition(tokens->decode(prompt), problem);
            out.push_back(parsed && responses[static_cast<std::size_t>(row)] == problem.answer() ? 1.0 : 0.0);
        }
        return out;
    }
    [[nodiscard]] torch::Tensor score(const rlhf::ppo::rollout& r) const {
        return torch::tensor(correct(r), torch::kFloat32);
    }
};

// Sizes and steps of the arithmetic examples; each is a flag.
struct math_options {
    std::filesystem::path out;
    std::uint64_t seed = 1;
    // One thread: the model's ops are too small to split (2 threads measured slower here).
    std::int64_t threads = 1;
    std::int64_t max_operand = 49;
    std::int64_t width = 64, layers = 2, heads = 4;
    std::int64_t sft_steps = 400, sft_batch = 64;
    double sft_lr = 3e-3;
    double sft_share = 0.25;  // share of the training problems the SFT stage sees
    std::int64_t rl_steps = 80, prompts_per_step = 32, samples = 8;
    double lr = 5e-4;
    std::int64_t eval_every = 5;
    double expect_accuracy_gain = std::nan(""), expect_kept_gain = std::nan("");

    [[nodiscard]] gpt_options model() const {
        return {.vocab = 259, .width = width, .heads = heads, .layers = layers, .positions = 16, .seed = seed * 1000};
    }
};

inline void add_math_flags(command_line& cli, math_options& o) {
    cli.option("out", o.out, "run folder: metrics, chart.png, samples.md, sft.pt");
    cli.option("seed", o.seed, "seed of every random draw");
    cli.option("threads", o.threads, "LibTorch CPU threads");
    cli.option("max-operand", o.max_operand, "problems a+b with a, b in [0, this]");
    cli.option("width", o.width, "model width");
    cli.option("layers", o.layers, "transformer blocks");
    cli.option("heads", o.heads, "attention heads");
    cli.option("sft-steps", o.sft_steps, "supervised steps before RL");
    cli.option("sft-batch", o.sft_batch, "problems per SFT step");
    cli.option("sft-lr", o.sft_lr, "SFT learning rate (Adam)");
    cli.option("sft-share", o.sft_share, "share of the training problems SFT sees");
    cli.option("rl-steps", o.rl_steps, "RL steps (rollout + update) per algorithm");
    cli.option("prompts", o.prompts_per_step, "problems per RL step");
    cli.option("samples", o.samples, "responses sampled per problem");
    cli.option("lr", o.lr, "RL learning rate (Adam)");
    cli.option("eval-every", o.eval_every, "RL steps between held-out evaluations");
    cli.option("expect-accuracy-gain", o.expect_accuracy_gain,
               "check: held-out exact-match accuracy gain (after - before RL) at least this, every algorithm");
    cli.option("expect-kept-gain", o.expect_kept_gain,
               "check: final gain at least this share of the best evaluated gain (no collapse)");
}

inline std::vector<std::string> prompts_of(const std::vector<addition>& problems) {
    std::vector<std::string> out;
    for (const auto& p : problems) out.push_back(p.prompt());
    return out;
}

// Greedy answers to `problems`, the share exactly right, and the answers themselves.
struct exact_match_evaluation {
    double accuracy = 0.0;
    std::vector<std::string> answers;
    std::vector<double> correct;
};

inline exact_match_evaluation evaluate_exact_match(gpt& policy, const tokenizer& tokens,
                                                   const std::vector<addition>& problems) {
    const torch::NoGradGuard no_grad;
    const rlhf::ppo::rollout r = policy.generate(
        tokens.prompts(prompts_of(problems)),
        {.max_new_tokens = 4, .greedy = true, .eos_token_id = {tokens.eos_id()}, .pad_token_id = tokens.pad_id()});
    exact_match_evaluation e{0.0, tokens.responses(r), exact_match_reward{&tokens}.correct(r)};
    for (const double c : e.correct) e.accuracy += c;
    e.accuracy /= static_cast<double>(std::max<std::size_t>(1, e.correct.size()));
    return e;
}

// The SFT stage: next-token loss on "a+b=sum" for a share of the training problems; writes
// sft.pt and sft_metrics.jsonl, and prints the held-out accuracy it reaches.
inline gpt train_addition_sft(const math_options& o, const tokenizer& tokens, const addition_problems& problems) {
    gpt model(o.model());
    std::vector<std::string> texts;
    const auto seen = static_cast<std::size_t>(o.sft_share * static_cast<double>(problems.train.size()));
    for (std::size_t i = 0; i < std::max<std::size_t>(1, seen); ++i)
        texts.push_back(problems.train[i].prompt() + problems.train[i].answer());
    torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(o.sft_lr));
    batch_sampler<std::string> sampler(texts, o.seed);
    jsonl_writer metrics(o.out / "sft_metrics.jsonl");
    progress_bar bar("SFT", o.sft_steps);
    for (std::int64_t step = 1; step <= o.sft_steps; ++step) {
        optimizer.zero_grad();
        const torch::Tensor loss = language_model_loss(model, tokens, sampler.next(o.sft_batch));
        loss.backward();
        optimizer.step();
        metrics.write(step, {{"loss", loss.item<double>()}});
        bar.update(step, {{"loss", loss.item<double>()}});
    }
    std::printf("SFT: %zu problems seen, %.0f s\n", texts.size(), bar.seconds());
    save_gpt(model, o.out / "sft.pt");
    return model;
}

// The next-token loss of `responses` after their `prompts`, the prompt tokens not counted (label
// −100 there and at padding: `lm_loss_options::ignore_index`, the Hugging Face convention).
inline torch::Tensor response_loss(gpt& model, const tokenizer& tokens, const std::vector<std::string>& prompts,
                                   const std::vector<std::string>& responses) {
    std::vector<std::string> texts;
    for (std::size_t i = 0; i < prompts.size(); ++i) texts.push_back(prompts[i] + responses[i]);
    const rlhf::ppo::prompt_batch batch = tokens.texts(texts, model.options().positions);
    torch::Tensor labels = batch.input_ids.masked_fill(batch.attention_mask.eq(0), -100);
    for (std::size_t i = 0; i < prompts.size(); ++i)
        labels[static_cast<std::int64_t>(i)].narrow(0, 0, std::ssize(tokens.encode(prompts[i]))).fill_(-100);
    return rlhf::ppo::ptx_loss(model, {batch.input_ids, batch.attention_mask, labels}, {},
                               "rlhf_examples::response_loss");
}

// The training prompts of RL steps: every training problem (SFT saw only a share), reshuffled.
inline batch_sampler<std::string> rl_prompt_sampler(const math_options& o, const addition_problems& problems) {
    return {prompts_of(problems.train), o.seed + 2};
}

// Held-out accuracy before and after RL, and the best evaluation in between.
struct accuracy_curve {
    double before = 0.0, after = 0.0, best = 0.0;
    double seconds = 0.0;
};

// One method's run: its accuracy curve and its greedy answers to the shown problems before and after.
struct method_result {
    accuracy_curve curve;
    exact_match_evaluation shown_before, shown_after;
};

// Runs `update(step)` (one RL step of a method; returns the step's training reward) `rl_steps`
// times on `policy`, evaluating held-out accuracy every `eval_every` steps into
// DIR/<name>_eval.jsonl, with the responses sampled so far (`samples_per_step` a step), and into
// `on_evaluation(step, accuracy)` when given.
template <class Update>
method_result train_with_evaluation(const std::string& name, gpt& policy, const math_options& o,
                                    const tokenizer& tokens, const addition_problems& problems,
                                    const std::vector<addition>& shown, std::int64_t samples_per_step, Update&& update,
                                    const std::function<void(std::int64_t, double)>& on_evaluation = {}) {
    jsonl_writer eval(o.out / (name + "_eval.jsonl"));
    method_result result;
    result.shown_before = evaluate_exact_match(policy, tokens, shown);
    result.curve.before = result.curve.best = evaluate_exact_match(policy, tokens, problems.held_out).accuracy;
    eval.write(0, {{"samples", 0.0}, {"accuracy", result.curve.before}});
    if (on_evaluation) on_evaluation(0, result.curve.before);
    double last = result.curve.before;
    progress_bar bar(name, o.rl_steps);
    for (std::int64_t step = 1; step <= o.rl_steps; ++step) {
        const double reward = update(step);
        if (step % o.eval_every == 0 || step == o.rl_steps) {
            last = evaluate_exact_match(policy, tokens, problems.held_out).accuracy;
            eval.write(step, {{"samples", static_cast<double>(step * samples_per_step)}, {"accuracy", last}});
            if (on_evaluation) on_evaluation(step, last);
            result.curve.best = std::max(result.curve.best, last);
        }
        bar.update(step, {{"reward", reward}, {"held-out", last}});
    }
    result.curve.after = last;
    result.curve.seconds = bar.seconds();
    result.shown_after = evaluate_exact_match(policy, tokens, shown);
    std::printf("%s: held-out exact match %.3f -> %.3f (best %.3f) in %.0f s\n", name.c_str(), result.curve.before,
                result.curve.after, result.curve.best, result.curve.seconds);
    return result;
}

// The shown held-out problems, the SFT model's answers and each method's after it (Markdown).
inline std::string answer_table(const std::vector<addition>& shown,
                                const std::vector<std::pair<std::string, method_result>>& runs) {
    std::ostringstream out;
    out << "| problem | sum | SFT |";
    for (const auto& run : runs) out << " " << run.first << " |";
    out << "\n|---|---|---|";
    for (std::size_t i = 0; i < runs.size(); ++i) out << "---|";
    out << "\n";
    const auto cell = [](const exact_match_evaluation& e, std::size_t i) {
        return (e.answers[i].empty() ? std::string("(empty)") : e.answers[i]) + (e.correct[i] > 0.0 ? " ✓" : " ✗");
    };
    for (std::size_t i = 0; i < shown.size(); ++i) {
        out << "| " << shown[i].prompt() << " | " << shown[i].answer() << " | "
            << cell(runs.front().second.shown_before, i) << " |";
        for (const auto& run : runs) out << " " << cell(run.second.shown_after, i) << " |";
        out << "\n";
    }
    return out.str();
}

inline void write_answer_table(const std::filesystem::path& path, const std::vector<addition>& shown,
                               const std::vector<std::pair<std::string, method_result>>& runs) {
    std::ofstream(path) << "# Held-out problems answered greedily by the SFT model and after each method\n\n"
                        << answer_table(shown, runs);
}

// The held-out problems whose answers samples.md shows.
inline std::vector<addition> shown_problems(const addition_problems& problems) {
    return {problems.held_out.begin(),
            problems.held_out.begin() + std::min<std::ptrdiff_t>(8, std::ssize(problems.held_out))};
}

// The learning check of one method's run: accuracy gain and kept share of the best gain.
inline bool check_accuracy(const math_options& o, const std::string& name, const accuracy_curve& c) {
    bool ok = true;
    auto check = [&](const char* what, double figure, double bound) {
        if (std::isnan(bound)) return;
        const bool pass = figure >= bound;
        ok = ok && pass;
        std::printf("check %-24s %-40s %7.3f >= %.3f  %s\n", name.c_str(), what, figure, bound, pass ? "ok" : "FAILED");
    };
    const double gain = c.after - c.before, best_gain = c.best - c.before;
    check("held-out accuracy gain", gain, o.expect_accuracy_gain);
    check("final gain / best gain (no collapse)", best_gain > 0.0 ? gain / best_gain : 0.0, o.expect_kept_gain);
    return ok;
}

// A summary table of the runs, samples.md, then the learning check of each; false when one fails.
inline bool report_runs(const math_options& o, const std::vector<addition>& shown,
                        const std::vector<std::pair<std::string, method_result>>& runs) {
    std::printf("\n%-22s %8s %8s %8s %7s\n", "method", "before", "after", "best", "s");
    for (const auto& [name, run] : runs)
        std::printf("%-22s %8.3f %8.3f %8.3f %7.0f\n", name.c_str(), run.curve.before, run.curve.after, run.curve.best,
                    run.curve.seconds);
    bool ok = true;
    for (const auto& [name, run] : runs) ok = check_accuracy(o, name, run.curve) && ok;
    write_answer_table(o.out / "samples.md", shown, runs);
    std::printf("samples: %s\n", (o.out / "samples.md").c_str());
    return ok;
}

}  // namespace rlhf_examples
