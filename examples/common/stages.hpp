#pragma once
// The stages the language-model examples share: supervised fine-tuning on the corpus, a reward
// model trained on preference pairs, held-out evaluation, and the PPO loop around an
// `rlhf::ppo::ppo_trainer` with its progress bar, metrics, samples and chart. Each stage writes a
// checkpoint to the run folder, so a later stage (or a later run with `--from`) starts from it.
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/optim/adam.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/corpus.hpp"
#include "common/gpt.hpp"
#include "common/report.hpp"
#include "common/tokenizer.hpp"
#include "rlhf/libtorch/logits.hpp"
#include "rlhf/ppo.hpp"

namespace rlhf_examples {

// Sizes, steps and learning rates of a run, and what its learning check demands; each is a flag.
struct run_options {
    std::filesystem::path out;
    std::uint64_t seed = 1;
    std::int64_t threads = 2;
    std::int64_t merges = 1024, width = 96, layers = 2, heads = 4;
    std::int64_t sft_steps = 600, sft_batch = 32;
    double sft_lr = 6e-3;
    std::int64_t rm_steps = 300, rm_batch = 32;
    double rm_lr = 1e-3;
    std::int64_t ppo_steps = 60, rollout_batch = 64, minibatch = 32, max_new_tokens = 12, prompt_words = 2;
    double actor_lr = 5e-4, critic_lr = 5e-4;
    std::int64_t eval_prompts = 256, eval_every = 10, samples = 8;
    // A critic made from the reward model starts with a zero value head, not with the score head
    // (DeepSpeed-Chat's and ColossalChat's start): the score head's outputs on partial responses
    // steered the actors away from the reward here (docs/examples.md has the figures).
    bool zero_value_head = true;
    // The reward model's loss: pairwise log-sigmoid on preference pairs, or (chatllama's) the
    // squared error to each text's score.
    enum class reward_loss { pairwise, score_mse } rm_loss = reward_loss::pairwise;
    std::filesystem::path from;  // load sft.pt and rm.pt from this earlier run instead of training them
    // The learning check (NaN: not checked): held-out reward gain, final KL, kept share of the
    // best gain, reward-model accuracy on held-out pairs.
    double expect_reward_gain = std::nan(""), expect_max_kl = std::nan(""), expect_kept_gain = std::nan("");
    double expect_rm_accuracy = std::nan("");

    [[nodiscard]] gpt_options model(std::int64_t vocab, std::uint64_t seed_offset) const {
        return {.vocab = vocab,
                .width = width,
                .heads = heads,
                .layers = layers,
                .positions = 64,
                .seed = seed * 1000 + seed_offset};
    }
};

inline void add_run_flags(command_line& cli, run_options& o) {
    cli.option("out", o.out, "run folder: checkpoints, metrics, chart.png, samples.md");
    cli.option("seed", o.seed, "seed of every random draw");
    cli.option("threads", o.threads, "LibTorch CPU threads");
    cli.option("merges", o.merges, "BPE merges learned from the corpus (0: bytes only)");
    cli.option("width", o.width, "model width");
    cli.option("layers", o.layers, "transformer blocks");
    cli.option("heads", o.heads, "attention heads");
    cli.option("sft-steps", o.sft_steps, "supervised fine-tuning steps");
    cli.option("sft-batch", o.sft_batch, "sentences per SFT step");
    cli.option("sft-lr", o.sft_lr, "SFT learning rate (Adam)");
    cli.option("rm-steps", o.rm_steps, "reward-model steps");
    cli.option("rm-batch", o.rm_batch, "preference pairs per reward-model step");
    cli.option("rm-lr", o.rm_lr, "reward-model learning rate (Adam)");
    cli.option("ppo-steps", o.ppo_steps, "PPO steps (rollout + update)");
    cli.option("rollout-batch", o.rollout_batch, "prompts per PPO step");
    cli.option("minibatch", o.minibatch, "rollout rows per optimizer step");
    cli.option("max-new-tokens", o.max_new_tokens, "response length limit (tokens)");
    cli.option("actor-lr", o.actor_lr, "policy learning rate (Adam)");
    cli.option("critic-lr", o.critic_lr, "critic learning rate (Adam; a separate critic only)");
    cli.option("zero-value-head", o.zero_value_head, "start a critic's value head at 0 (off: as the RM's score head)");
    cli.option("eval-prompts", o.eval_prompts, "held-out prompts of each evaluation");
    cli.option("eval-every", o.eval_every, "PPO steps between evaluations");
    cli.option("from", o.from, "load sft.pt and rm.pt from this earlier run's folder instead of training");
    cli.option("expect-reward-gain", o.expect_reward_gain, "check: held-out reward gain at least this");
    cli.option("expect-max-kl", o.expect_max_kl, "check: final KL to the reference at most this");
    cli.option("expect-kept-gain", o.expect_kept_gain, "check: final gain at least this share of the best");
    cli.option("expect-rm-accuracy", o.expect_rm_accuracy, "check: held-out reward-model accuracy at least this");
}

// Prepares a run: the thread count, the global seed (nothing should draw from it) and the folder.
// LibTorch's threads split the work; a threaded OpenBLAS under them would oversubscribe the
// cores (measured here: a third slower), so it runs single-threaded when it is the BLAS.
inline void start_run(std::int64_t threads, std::uint64_t seed, const std::filesystem::path& out) {
    using set_threads = void (*)(int);
    if (void* symbol = dlsym(RTLD_DEFAULT, "openblas_set_num_threads")) reinterpret_cast<set_threads>(symbol)(1);
    at::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(seed);
    std::filesystem::create_directories(out);
}
inline void start_run(const run_options& o) {
    start_run(o.threads, o.seed, o.out);
}

// The token-mean next-token loss of `sentences` (the library's PTX loss: an SFT step is a PTX step).
inline torch::Tensor language_model_loss(gpt& model, const tokenizer& tokens,
                                         const std::vector<std::string>& sentences) {
    const rlhf::ppo::prompt_batch batch = tokens.texts(sentences, model.options().positions);
    return rlhf::ppo::ptx_loss(model, {batch.input_ids, batch.attention_mask, {}}, {.ignore_index = {}},
                               "rlhf_examples::language_model_loss");
}

// The corpus and the tokenizer learned from its training sentences.
struct run_text {
    corpus sentences;
    tokenizer tokens;
};

// Loads the corpus, learns the tokenizer, and says what they hold.
inline run_text load_run_text(const run_options& o) {
    corpus sentences = load_corpus();
    tokenizer tokens(sentences.train, o.merges);
    std::printf("corpus: %zu training and %zu held-out sentences from %s; %td tokens in the vocabulary\n",
                sentences.train.size(), sentences.held_out.size(), default_corpus_dir.c_str(), tokens.vocab_size());
    return {std::move(sentences), std::move(tokens)};
}

// `count` items drawn without replacement (reshuffled when used up) by a seeded engine.
template <class T>
class batch_sampler {
public:
    batch_sampler(const std::vector<T>& items, std::uint64_t seed) : items_(items), engine_(seed) {}
    std::vector<T> next(std::int64_t count) {
        std::vector<T> batch;
        for (std::int64_t i = 0; i < count; ++i) {
            if (cursor_ == 0) std::shuffle(items_.begin(), items_.end(), engine_);
            batch.push_back(items_[cursor_]);
            cursor_ = (cursor_ + 1) % items_.size();
        }
        return batch;
    }

private:
    std::vector<T> items_;
    std::mt19937_64 engine_;
    std::size_t cursor_ = 0;
};

// A stage's checkpoint from the `--from` folder; says which stage writes it when it is missing.
inline gpt load_stage(const std::filesystem::path& dir, const char* file, const char* stage) {
    const std::filesystem::path path = dir / file;
    if (!std::filesystem::exists(path))
        throw std::runtime_error(path.string() + " is missing: run the " + stage + " stage into " + dir.string() +
                                 " first");
    std::printf("%s: loaded %s\n", stage, path.c_str());
    return load_gpt(path);
}

// A model of the same options with a copy of `model`'s weights; `frozen`: no gradients (a reference).
inline gpt copy_of(const gpt& model, bool frozen = false) {
    gpt copy(model.options());
    rlhf::ppo::copy_parameters{}.sync(model, copy);
    if (frozen)
        for (auto& p : copy.parameters()) p.requires_grad_(false);
    return copy;
}

// Stage 1, SFT: a fresh model learns the corpus sentences (next-token NLL); held-out loss before
// and after; writes sft.pt and sft_metrics.jsonl. With `--from DIR`, loads DIR/sft.pt instead.
inline gpt supervised_fine_tuning(const run_options& o, const run_text& text) {
    if (!o.from.empty()) return load_stage(o.from, "sft.pt", "SFT");
    gpt model(o.model(text.tokens.vocab_size(), 1));
    std::int64_t parameters = 0;
    for (const auto& p : model.parameters()) parameters += p.numel();
    std::vector<std::string> held_out = text.sentences.held_out;
    held_out.resize(std::min<std::size_t>(256, held_out.size()));
    auto held_out_loss = [&] {
        const torch::NoGradGuard no_grad;
        return language_model_loss(model, text.tokens, held_out).item<double>();
    };
    const double before = held_out_loss();
    torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(o.sft_lr));
    batch_sampler<std::string> sampler(text.sentences.train, o.seed);
    jsonl_writer metrics(o.out / "sft_metrics.jsonl");
    progress_bar bar("SFT", o.sft_steps);
    for (std::int64_t step = 1; step <= o.sft_steps; ++step) {
        optimizer.zero_grad();
        const torch::Tensor loss = language_model_loss(model, text.tokens, sampler.next(o.sft_batch));
        loss.backward();
        optimizer.step();
        const double value = loss.item<double>();
        metrics.write(step, {{"loss", value}});
        bar.update(step, {{"loss", value}});
    }
    const double after = held_out_loss();
    std::printf("SFT: %td parameters, held-out loss %.3f -> %.3f nats/token in %.0f s\n", parameters, before, after,
                bar.seconds());
    save_gpt(model, o.out / "sft.pt");
    return model;
}

// PTX batches for the trainer (`set_ptx_source`): `rows` training sentences per call, the
// pretraining-style text ColossalChat and DeepSpeed-Chat mix into the actor's update. `text`
// must outlive the trainer.
inline std::function<rlhf::ppo::ptx_batch(std::int64_t, std::int64_t)> corpus_ptx_source(const run_text& text,
                                                                                         std::int64_t rows,
                                                                                         std::uint64_t seed,
                                                                                         std::int64_t max_length) {
    auto sampler = std::make_shared<batch_sampler<std::string>>(text.sentences.train, seed);
    return [&text, sampler, rows, max_length](std::int64_t, std::int64_t) {
        const rlhf::ppo::prompt_batch batch = text.tokens.texts(sampler->next(rows), max_length);
        return rlhf::ppo::ptx_batch{batch.input_ids, batch.attention_mask, {}};
    };
}

struct reward_model_result {
    gpt model;
    double held_out_accuracy = 0.0;
};

// Share of pairs whose chosen text the model scores above the rejected one.
inline double pair_accuracy(gpt& model, const tokenizer& tokens, const std::vector<preference_pair>& pairs) {
    const torch::NoGradGuard no_grad;
    std::vector<std::string> chosen, rejected;
    for (const auto& p : pairs) chosen.push_back(p.chosen), rejected.push_back(p.rejected);
    const auto positions = model.options().positions;
    const rlhf::ppo::prompt_batch c = tokens.texts(chosen, positions);
    const rlhf::ppo::prompt_batch r = tokens.texts(rejected, positions);
    return model.sequence_scores(c.input_ids, c.attention_mask)
        .gt(model.sequence_scores(r.input_ids, r.attention_mask))
        .to(torch::kFloat64)
        .mean()
        .item<double>();
}

// Stage 2, the reward model: starts from the SFT weights and learns the preference pairs derived
// from the corpus with the pairwise loss −log σ(r_chosen − r_rejected) (ColossalChat `LogSigLoss`,
// DeepSpeed-Chat step 2), or with `reward_loss::score_mse` regresses both texts of each pair on
// their lexicon scores (chatllama/rlhf/reward.py: `torch.nn.MSELoss` on (text, score) items);
// reports held-out pair accuracy either way; writes rm.pt and rm_metrics.jsonl.
inline reward_model_result train_reward_model(const run_options& o, const run_text& text, const gpt& sft) {
    const std::vector<preference_pair> held_out = corpus::preference_pairs(text.sentences.held_out, o.seed);
    if (!o.from.empty()) {
        gpt model = load_stage(o.from, "rm.pt", "RM");
        const double accuracy = pair_accuracy(model, text.tokens, held_out);
        std::printf("RM: held-out accuracy %.3f\n", accuracy);
        return {std::move(model), accuracy};
    }
    gpt model = copy_of(sft);
    torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(o.rm_lr));
    batch_sampler<preference_pair> sampler(corpus::preference_pairs(text.sentences.train, o.seed), o.seed + 1);
    jsonl_writer metrics(o.out / "rm_metrics.jsonl");
    progress_bar bar("RM ", o.rm_steps);
    const double before = pair_accuracy(model, text.tokens, held_out);
    for (std::int64_t step = 1; step <= o.rm_steps; ++step) {
        std::vector<std::string> chosen, rejected;
        for (const auto& p : sampler.next(o.rm_batch)) chosen.push_back(p.chosen), rejected.push_back(p.rejected);
        const rlhf::ppo::prompt_batch c = text.tokens.texts(chosen, model.options().positions);
        const rlhf::ppo::prompt_batch r = text.tokens.texts(rejected, model.options().positions);
        const torch::Tensor chosen_scores = model.sequence_scores(c.input_ids, c.attention_mask);
        const torch::Tensor rejected_scores = model.sequence_scores(r.input_ids, r.attention_mask);
        optimizer.zero_grad();
        torch::Tensor loss;
        if (o.rm_loss == run_options::reward_loss::score_mse) {
            std::vector<float> targets;
            for (const auto* side : {&chosen, &rejected})
                for (const auto& sentence : *side) targets.push_back(static_cast<float>(lexicon_sentiment(sentence)));
            loss = torch::mse_loss(torch::cat({chosen_scores, rejected_scores}), torch::tensor(targets));
        } else {
            loss = rlhf::libtorch::pairwise_logsigmoid_loss(chosen_scores, rejected_scores);
        }
        loss.backward();
        optimizer.step();
        const double accuracy = chosen_scores.gt(rejected_scores).to(torch::kFloat64).mean().item<double>();
        metrics.write(step, {{"loss", loss.item<double>()}, {"accuracy", accuracy}});
        bar.update(step, {{"loss", loss.item<double>()}, {"acc", accuracy}});
    }
    const double accuracy = pair_accuracy(model, text.tokens, held_out);
    std::printf("RM: held-out accuracy %.3f -> %.3f on %zu pairs in %.0f s\n", before, accuracy, held_out.size(),
                bar.seconds());
    save_gpt(model, o.out / "rm.pt");
    return {std::move(model), accuracy};
}

// The sampling of the PPO rollouts and of every evaluation (TRL's: top-k 0, top-p 1, sampled).
inline rlhf::ppo::generation_options sampling(const run_options& o, const tokenizer& tokens) {
    return {.max_new_tokens = o.max_new_tokens, .eos_token_id = {tokens.eos_id()}, .pad_token_id = tokens.pad_id()};
}

// A framework preset with this run's sizes: rollout and minibatch rows, sampling, seed.
inline rlhf::ppo::config with_run_sizes(rlhf::ppo::config preset, const run_options& o, const tokenizer& tokens) {
    preset.rollout_batch_size = o.rollout_batch;
    preset.minibatch_size = o.minibatch;
    preset.micro_batch_size = o.minibatch;
    preset.generation = sampling(o, tokens);
    preset.seed = o.seed;
    return preset;
}

// The models and optimizers of an actor-critic PPO run from the SFT model and the reward model:
// the actor and the frozen reference start as the SFT model, the critic as the reward model (its
// value head zeroed or copied from the score head, `zero_value_head`), the reward model frozen;
// Adam for the actor and for the critic. Built in place: the trainer keeps pointers to them.
struct actor_critic_models {
    actor_critic_models(const gpt& sft, const gpt& reward, const run_options& o)
        : actor(copy_of(sft)),
          reference(copy_of(sft, /*frozen=*/true)),
          critic(copy_of(reward)),
          reward_model(copy_of(reward, /*frozen=*/true)),
          actor_optimizer(actor.parameters(), torch::optim::AdamOptions(o.actor_lr)),
          critic_optimizer(critic.parameters(), torch::optim::AdamOptions(o.critic_lr)) {
        critic.start_value_head(o.zero_value_head ? gpt::value_head_start::zero : gpt::value_head_start::score_head);
    }
    actor_critic_models(const actor_critic_models&) = delete;
    actor_critic_models& operator=(const actor_critic_models&) = delete;

    [[nodiscard]] rlhf::ppo::trainer_models<gpt, gpt, gpt, gpt> models() {
        return {.policy = &actor, .reward_model = &reward_model, .critic = &critic, .reference = &reference};
    }
    [[nodiscard]] rlhf::ppo::trainer_optimizers optimizers() {
        return {.policy = &actor_optimizer, .critic = &critic_optimizer};
    }

    gpt actor, reference, critic, reward_model;
    torch::optim::Adam actor_optimizer, critic_optimizer;
};

struct evaluation {
    double mean_reward = 0.0;
    std::vector<std::string> responses;
    std::vector<double> rewards;
};

// Responses to `prompts` sampled with a fixed seed, scored by the reward model (any `score(rollout)`).
template <class RewardModel>
evaluation evaluate(gpt& policy, RewardModel& reward_model, const tokenizer& tokens,
                    const std::vector<std::string>& prompts, const run_options& o) {
    const torch::NoGradGuard no_grad;
    rlhf::ppo::generation_options options = sampling(o, tokens);
    options.seed = o.seed + 77;
    const rlhf::ppo::rollout r = policy.generate(tokens.prompts(prompts), options);
    const torch::Tensor scores = reward_model.score(r).to(torch::kFloat64).contiguous();
    evaluation e{scores.mean().item<double>(), tokens.responses(r), {}};
    e.rewards.assign(scores.data_ptr<double>(), scores.data_ptr<double>() + scores.numel());
    return e;
}

// The held-out prompts of every evaluation: the first words of held-out sentences.
inline std::vector<std::string> held_out_prompts(const run_options& o, const run_text& text) {
    std::vector<std::string> prompts =
        corpus::prompts_of(text.sentences.held_out, static_cast<std::size_t>(o.prompt_words));
    prompts.resize(std::min(prompts.size(), static_cast<std::size_t>(o.eval_prompts)));
    return prompts;
}

struct ppo_outcome {
    double reward_before = 0.0, reward_after = 0.0, best_reward = 0.0;
    double final_kl = 0.0;  // mean KL to the reference over the last steps, the trainer's unit
    double seconds = 0.0;
};

// The end of a PPO stage: the final KL (mean of the last five steps' `kl`), the sample prompts
// answered after it beside before (samples.md), policy.pt and the summary lines.
template <class RewardModel>
void finish_ppo_stage(ppo_outcome& outcome, const std::vector<double>& kls, gpt& policy, RewardModel& reward_model,
                      const run_options& o, const run_text& text, const std::vector<std::string>& sample_prompts,
                      const evaluation& samples_before) {
    const std::size_t tail = std::min<std::size_t>(5, kls.size());
    outcome.final_kl = std::accumulate(kls.end() - static_cast<std::ptrdiff_t>(tail), kls.end(), 0.0) /
                       static_cast<double>(std::max<std::size_t>(1, tail));
    const evaluation samples_after = evaluate(policy, reward_model, text.tokens, sample_prompts, o);
    write_samples(o.out / "samples.md", sample_prompts, samples_before.responses, samples_after.responses,
                  samples_before.rewards, samples_after.rewards);
    save_gpt(policy, o.out / "policy.pt");
    std::printf("PPO: held-out reward %.3f -> %.3f (best %.3f), final KL %.3f, %.0f s\n", outcome.reward_before,
                outcome.reward_after, outcome.best_reward, outcome.final_kl, outcome.seconds);
    for (std::size_t i = 0; i < std::min<std::size_t>(3, sample_prompts.size()); ++i)
        std::printf("  \"%s\" before: \"%s\"  after: \"%s\"\n", sample_prompts[i].c_str(),
                    samples_before.responses[i].c_str(), samples_after.responses[i].c_str());
}

// What an example may change in `run_ppo` (the defaults keep its corpus prompts and chart): its
// own training and held-out prompts, figures added to the progress bar, and whether `run_ppo`
// draws chart.png (off: the example draws its own).
struct ppo_run_extras {
    std::vector<std::string> train_prompts{}, eval_prompts{};  // empty: the first words of corpus sentences
    std::function<std::vector<std::pair<std::string, double>>(const rlhf::ppo::step_metrics&)> bar_figures{};
    bool draw_chart = true;
};

// Stage 3, PPO: `ppo_steps` trainer steps on batches of corpus prompts, a held-out evaluation
// every `eval_every` steps; writes ppo_metrics.jsonl (the library's sink), eval_metrics.jsonl,
// samples.md (before/after), chart.png and policy.pt.
template <class Trainer, class RewardModel>
ppo_outcome run_ppo(Trainer& trainer, gpt& policy, RewardModel& reward_model, const run_options& o,
                    const run_text& text, const std::string& title, const ppo_run_extras& extras = {}) {
    const std::vector<std::string> train_prompts =
        extras.train_prompts.empty()
            ? corpus::prompts_of(text.sentences.train, static_cast<std::size_t>(o.prompt_words))
            : extras.train_prompts;
    std::vector<std::string> eval_prompts =
        extras.eval_prompts.empty() ? held_out_prompts(o, text) : extras.eval_prompts;
    eval_prompts.resize(std::min(eval_prompts.size(), static_cast<std::size_t>(o.eval_prompts)));
    std::vector<std::string> sample_prompts = eval_prompts;
    sample_prompts.resize(std::min(sample_prompts.size(), static_cast<std::size_t>(o.samples)));
    trainer.add_callback(rlhf::ppo::jsonl_sink(o.out / "ppo_metrics.jsonl"));
    jsonl_writer eval_metrics(o.out / "eval_metrics.jsonl");

    const evaluation before = evaluate(policy, reward_model, text.tokens, eval_prompts, o);
    const evaluation samples_before = evaluate(policy, reward_model, text.tokens, sample_prompts, o);
    eval_metrics.write(0, {{"reward", before.mean_reward}});
    ppo_outcome outcome{.reward_before = before.mean_reward, .best_reward = before.mean_reward};
    double last_eval = before.mean_reward;
    std::vector<double> kls;
    batch_sampler<std::string> prompts(train_prompts, o.seed + 2);
    progress_bar bar("PPO", o.ppo_steps);
    for (std::int64_t step = 1; step <= o.ppo_steps; ++step) {
        const rlhf::ppo::step_metrics m = trainer.step(text.tokens.prompts(prompts.next(o.rollout_batch)));
        kls.push_back(m.kl);
        if (step % o.eval_every == 0 || step == o.ppo_steps) {
            last_eval = evaluate(policy, reward_model, text.tokens, eval_prompts, o).mean_reward;
            eval_metrics.write(step, {{"reward", last_eval}});
            outcome.best_reward = std::max(outcome.best_reward, last_eval);
        }
        std::vector<std::pair<std::string, double>> figures{
            {"reward", m.score_mean}, {"kl", m.kl}, {"held-out", last_eval}};
        if (extras.bar_figures)
            for (auto& figure : extras.bar_figures(m)) figures.push_back(std::move(figure));
        bar.update(step, figures);
    }
    outcome.reward_after = last_eval;
    outcome.seconds = bar.seconds();
    finish_ppo_stage(outcome, kls, policy, reward_model, o, text, sample_prompts, samples_before);
    if (extras.draw_chart && draw_chart(o.out, title)) std::printf("chart: %s\n", (o.out / "chart.png").c_str());
    std::printf("samples: %s\nmetrics: %s\n", (o.out / "samples.md").c_str(), (o.out / "ppo_metrics.jsonl").c_str());
    return outcome;
}

// The learning check of a run: every expectation set on the command line, printed with its
// figure; false when one fails (the example then exits 1).
inline bool check_learning(const run_options& o, const ppo_outcome& ppo, double rm_accuracy) {
    bool ok = true;
    auto check = [&](const char* what, double figure, double bound, bool at_least) {
        if (std::isnan(bound)) return;
        const bool pass = at_least ? figure >= bound : figure <= bound;
        ok = ok && pass;
        std::printf("check %-38s %8.3f %s %.3f  %s\n", what, figure, at_least ? ">=" : "<=", bound,
                    pass ? "ok" : "FAILED");
    };
    const double gain = ppo.reward_after - ppo.reward_before, best_gain = ppo.best_reward - ppo.reward_before;
    check("held-out reward gain", gain, o.expect_reward_gain, true);
    check("final KL to the reference", ppo.final_kl, o.expect_max_kl, false);
    check("final gain / best gain (no collapse)", best_gain > 0.0 ? gain / best_gain : 0.0, o.expect_kept_gain, true);
    check("reward-model held-out accuracy", rm_accuracy, o.expect_rm_accuracy, true);
    return ok;
}

}  // namespace rlhf_examples
