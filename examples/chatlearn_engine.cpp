// ChatLearn's custom model flows (alibaba/ChatLearn docs/en/programming.md and
// docs/en/tutorial/custom_model_flow.md, evaluator.md at 302cdc7e) on `rlhf::ppo::engine`: six
// models, as in ChatLearn's RLHF main file, composed by three flows and two parameter syncs.
//
//   environment   env_flow: policy (PolicyInference: generates, old log-probs) → reference
//                 (PolicyReference) → value (ValueInference) → reward (RewardInference)
//   trainer       trainer_flow: ppo_policy (PolicyTrainer) and ppo_value (ValueTrainer), each
//                 with its own Adam and grad clip 0.5 (`presets::chatlearn()`: k1 ÷ length with
//                 β = 0.02, score clip ±100, GAE γ 1 λ 0.95, whitening, value clip 0.1, 1 epoch)
//   evaluator     evaluator_flow: policy.eval_step → reward.eval_step on held-out prompts
//   syncs         ppo_policy → policy and ppo_value → value after every episode (and once before
//                 the first), ChatLearn's `set_parameter_sync`; counted and timed
//
// The policy is the examples' GPT after SFT on Debian's fortunes, the critic the reward model with
// a zero value head (examples/common/stages.hpp). The example checks that the environment flow's
// experience equals the trainer's own (`ppo_trainer::make_experience`) and that the inference
// copies hold the trained weights.
//
//   rlhf_chatlearn_engine [--out DIR] [--from DIR] [--ppo-steps N] [--seed S] ...   (--help lists every flag)
//
// Writes DIR/chart.png, DIR/samples.md (before/after), DIR/ppo_metrics.jsonl (the trainer's),
// DIR/eval_metrics.jsonl (the evaluator flow's), DIR/engine_metrics.jsonl (each flow's and the
// syncs' time), and sft.pt, rm.pt, policy.pt.
#include <torch/optim/adam.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "common/stages.hpp"

namespace {

using namespace rlhf_examples;
namespace ppo = rlhf::ppo;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// ChatLearn's ParameterSync from a trainer model to an inference model: the library's
// `copy_parameters`, counted and timed.
struct sync_log {
    std::int64_t count = 0;
    double seconds = 0.0;
};
struct counted_sync {
    sync_log* log;
    void sync(gpt& from, gpt& to) const {
        const auto start = clock_type::now();
        ppo::copy_parameters{}.sync(from, to);
        log->seconds += seconds_since(start);
        ++log->count;
    }
};

// Largest |a − b| over the parameters of two models of one architecture.
double max_difference(gpt& a, gpt& b) {
    const auto pa = a.parameters(), pb = b.parameters();
    double most = 0.0;
    for (std::size_t i = 0; i < pa.size(); ++i) most = std::max(most, (pa[i] - pb[i]).abs().max().item<double>());
    return most;
}

// What the environment flow hands to the trainer flow: one episode's rollout and every inference
// model's output on it (ChatLearn's StreamDataset of an episode).
struct episode_data {
    ppo::rollout_request request;  // the trainer's draw: prompts × samples, group ids, seed
    ppo::rollout generated;
    torch::Tensor mask;           // [B, T] bool, the response tokens
    torch::Tensor log_probs;      // policy (inference copy): the old log-probs
    torch::Tensor ref_log_probs;  // reference
    torch::Tensor values;         // value (inference copy)
    torch::Tensor scores;         // reward model, [B]
    ppo::rollout_kl kl;           // old policy vs reference, in the trainer's units
    double generate_seconds = 0.0, forward_seconds = 0.0;
};

// The float32, contiguous form the trainer's experience keeps.
torch::Tensor in_math(const torch::Tensor& t) {
    return t.to(torch::kFloat32).contiguous();
}

// The advantage stage of the trainer flow (ChatLearn computes GAE inside its policy and value
// trainers, policy_model.py / value_model.py `get_advantages_and_returns`): the k1 ÷ length KL
// and the clipped score shaped into per-token rewards, GAE, whitening over every element; then the
// step's experience as `ppo_trainer::make_experience` assembles it.
template <class Trainer>
ppo::step_experience experience_of(const episode_data& d, const Trainer& trainer) {
    const torch::NoGradGuard no_grad;
    const ppo::config& c = trainer.get_config();
    const ppo::advantage_inputs in{.log_probs = d.log_probs,
                                   .ref_log_probs = d.ref_log_probs,
                                   .mask = d.mask,
                                   .scores = d.scores,  // ChatLearn normalises no scores (score_norm none)
                                   .values = d.values,
                                   .group_ids = d.request.group_ids.to(torch::kInt64).contiguous()};
    ppo::step_experience out;
    ppo::step_metrics& m = out.metrics;
    m.step = trainer.steps() + 1;
    m.generation_seed = d.request.generation.seed;
    m.rows = d.generated.sequences.size(0);
    m.kl_coef = trainer.kl_coef();
    m.kl_unit = c.kl_metric;
    m.kl = d.kl.metric;
    out.controller_kl = d.kl.controller;
    out.has_kl = true;
    const ppo::advantage_outputs a = ppo::compute_advantage_stage(c, m.kl_coef, in);
    const torch::Tensor counts = in.mask.sum(1).to(torch::kFloat64).contiguous();
    out.action_tokens.assign(counts.data_ptr<double>(), counts.data_ptr<double>() + counts.numel());
    ppo::record_advantage_metrics(m, in.mask, in.scores, a, in.values);
    m.time.generate = d.generate_seconds;
    m.time.forward = d.forward_seconds;
    m.time.total = d.generate_seconds + d.forward_seconds;

    ppo::experience& e = out.batch;
    e.sequences = d.generated.sequences;
    e.attention_mask = d.generated.attention_mask;
    e.response_start = d.generated.response_start;
    e.response_end = d.generated.response_end;
    e.action_mask = in.mask;
    e.log_probs = in.log_probs;
    e.ref_log_probs = in.ref_log_probs;
    e.values = in.values;
    e.rewards = a.rewards;
    e.advantages = a.advantages;
    e.returns = a.returns;
    e.scores = in.scores;
    e.info["group"] = in.group_ids;
    return out;
}

// Whether two experiences agree on every tensor the trainer reads.
bool same_experience(const ppo::experience& a, const ppo::experience& b) {
    const auto same = [](const torch::Tensor& x, const torch::Tensor& y) {
        return x.defined() == y.defined() && (!x.defined() || torch::equal(x.to(y.dtype()), y));
    };
    return same(a.sequences, b.sequences) && same(a.action_mask, b.action_mask) && same(a.log_probs, b.log_probs) &&
           same(a.ref_log_probs, b.ref_log_probs) && same(a.values, b.values) && same(a.rewards, b.rewards) &&
           same(a.advantages, b.advantages) && same(a.returns, b.returns) && same(a.scores, b.scores);
}

}  // namespace

int main(int argc, char** argv) try {
    run_options o;
    o.out = "chatlearn_engine_run";
    bool check_flows = true;
    command_line cli("rlhf_chatlearn_engine",
                     "ChatLearn's PPO as custom flows on rlhf::ppo::engine: environment (policy, reference, value, "
                     "reward), trainer (ppo_policy, ppo_value), evaluator, parameter syncs.");
    add_run_flags(cli, o);
    cli.option("check-flows", check_flows,
               "check: the first episode's experience equals ppo_trainer::make_experience's, and the inference "
               "copies hold the trained weights at the end");
    if (!cli.parse(argc, argv)) return 0;
    start_run(o);

    const run_text text = load_run_text(o);
    const gpt sft = supervised_fine_tuning(o, text);
    reward_model_result rm = train_reward_model(o, text, sft);

    // The six models of ChatLearn's main file. Trainer side: ppo_policy (from SFT) and ppo_value
    // (from the RM, zero value head), an Adam each; the frozen reference and reward model.
    actor_critic_models trained(sft, rm.model, o);
    gpt& ppo_policy = trained.actor;
    gpt& ppo_value = trained.critic;
    gpt& reference = trained.reference;
    gpt& reward = trained.reward_model;
    // Inference side: the copies that generate and score, refreshed only by the parameter syncs.
    gpt policy = copy_of(ppo_policy, /*frozen=*/true);
    gpt value = copy_of(ppo_value, /*frozen=*/true);

    const ppo::config cfg = with_run_sizes(ppo::presets::chatlearn(), o, text.tokens);
    ppo::ppo_trainer trainer(cfg, trained.models(), trained.optimizers());
    trainer.add_callback(ppo::jsonl_sink(o.out / "ppo_metrics.jsonl"));

    const std::vector<std::string> train_prompts =
        corpus::prompts_of(text.sentences.train, static_cast<std::size_t>(o.prompt_words));
    const std::vector<std::string> eval_prompts = held_out_prompts(o, text);
    std::vector<std::string> sample_prompts = eval_prompts;
    sample_prompts.resize(std::min(sample_prompts.size(), static_cast<std::size_t>(o.samples)));
    batch_sampler<std::string> dataset(train_prompts, o.seed + 2);  // engine.set_dataset(train_prompts)

    // ---- The models' steps (ChatLearn's forward_step of each inference model) -----------------
    // policy.forward_step: generate from the episode's prompts, then the old log-probs.
    const auto policy_forward = [&](std::int64_t /*episode*/) {
        const torch::NoGradGuard no_grad;
        episode_data d;
        auto start = clock_type::now();
        d.request = trainer.prepare_rollout(text.tokens.prompts(dataset.next(o.rollout_batch)));
        d.generated = policy.generate(d.request.prompts, d.request.generation);
        d.generate_seconds = seconds_since(start);
        start = clock_type::now();
        d.mask = ppo::rollout_action_mask(d.generated, ppo::response_width(d.generated), "policy.forward_step");
        d.log_probs = in_math(policy.log_probs(d.generated));
        d.forward_seconds = seconds_since(start);
        return d;
    };
    // reference.forward_step: the reference log-probs, and the rollout KL they give.
    const auto reference_forward = [&](episode_data d) {
        const torch::NoGradGuard no_grad;
        const auto start = clock_type::now();
        d.ref_log_probs = in_math(reference.log_probs(d.generated));
        d.kl = ppo::measure_rollout_kl(cfg, d.log_probs, d.ref_log_probs, d.mask);
        d.forward_seconds += seconds_since(start);
        return d;
    };
    // value.forward_step: the critic's values.
    const auto value_forward = [&](episode_data d) {
        const torch::NoGradGuard no_grad;
        const auto start = clock_type::now();
        d.values = in_math(value.values(d.generated));
        d.forward_seconds += seconds_since(start);
        return d;
    };
    // reward.forward_step: the reward model's sequence scores.
    const auto reward_forward = [&](episode_data d) {
        const torch::NoGradGuard no_grad;
        const auto start = clock_type::now();
        d.scores = in_math(reward.score(d.generated));
        d.forward_seconds += seconds_since(start);
        return d;
    };

    // ---- The flows ---------------------------------------------------------------------------
    // env_flow, as ChatLearn's document writes it: each model's output feeds the next.
    const auto env_flow = [&](std::int64_t episode) {
        episode_data policy_out = policy_forward(episode);
        episode_data ref_out = reference_forward(std::move(policy_out));
        episode_data value_out = value_forward(std::move(ref_out));
        return reward_forward(std::move(value_out));
    };
    // trainer_flow: ppo_policy.train_step and ppo_value.train_step. One `ppo_trainer::train` runs
    // both on the same minibatches, each loss on its own model, optimizer and grad clip.
    bool flows_match = true;
    const auto trainer_flow = [&](episode_data&& data, std::int64_t episode) {
        ppo::step_experience experience = experience_of(data, trainer);
        if (check_flows && episode == 0)  // the inference copies are in sync: the trainer's own experience
            flows_match =
                same_experience(experience.batch, trainer.make_experience(data.request, data.generated).batch);
        return trainer.train(std::move(experience));
    };
    // evaluator_flow: policy.eval_step → reward.eval_step on the held-out prompts.
    const auto held_out_reward = [&] { return evaluate(policy, reward, text.tokens, eval_prompts, o).mean_reward; };
    const auto evaluator_flow = [&](std::int64_t /*episode*/) {
        return std::map<std::string, double>{{"reward", held_out_reward()}};
    };

    ppo::engine engine(env_flow, trainer_flow, evaluator_flow, {.eval_every = o.eval_every});
    sync_log policy_syncs, value_syncs;
    engine.set_parameter_sync(ppo_policy, policy, counted_sync{&policy_syncs});
    engine.set_parameter_sync(ppo_value, value, counted_sync{&value_syncs});

    // Before: the SFT policy (the inference copy equals it until the first sync).
    const evaluation before = evaluate(policy, reward, text.tokens, eval_prompts, o);
    const evaluation samples_before = evaluate(policy, reward, text.tokens, sample_prompts, o);
    jsonl_writer eval_metrics(o.out / "eval_metrics.jsonl");
    jsonl_writer engine_metrics(o.out / "engine_metrics.jsonl");
    eval_metrics.write(0, {{"reward", before.mean_reward}});
    ppo_outcome outcome{.reward_before = before.mean_reward, .best_reward = before.mean_reward};
    double last_eval = before.mean_reward;
    std::int64_t last_eval_episode = 0;
    std::vector<double> kls;
    progress_bar bar("PPO", o.ppo_steps);
    engine.add_callback([&](const ppo::episode_result<ppo::step_metrics>& r) {
        const std::int64_t episode = r.episode + 1;
        kls.push_back(r.result.kl);
        if (const auto found = r.eval.find("reward"); found != r.eval.end()) {
            last_eval = found->second;
            last_eval_episode = episode;
            eval_metrics.write(episode, {{"reward", last_eval}});
            outcome.best_reward = std::max(outcome.best_reward, last_eval);
        }
        engine_metrics.write(episode, {{"environment_s", r.environment_seconds},
                                       {"trainer_s", r.trainer_seconds},
                                       {"sync_ms", 1e3 * r.sync_seconds}});
        bar.update(episode, {{"reward", r.result.score_mean}, {"kl", r.result.kl}, {"held-out", last_eval}});
    });
    (void)engine.learn(o.ppo_steps);
    if (last_eval_episode != engine.episodes()) {  // the last episode was not an evaluation's
        last_eval = held_out_reward();
        eval_metrics.write(engine.episodes(), {{"reward", last_eval}});
        outcome.best_reward = std::max(outcome.best_reward, last_eval);
    }
    outcome.reward_after = last_eval;
    outcome.seconds = bar.seconds();
    finish_ppo_stage(outcome, kls, ppo_policy, reward, o, text, sample_prompts, samples_before);
    std::printf("parameter syncs: ppo_policy -> policy %lld in %.3f s, ppo_value -> value %lld in %.3f s\n",
                static_cast<long long>(policy_syncs.count), policy_syncs.seconds,
                static_cast<long long>(value_syncs.count), value_syncs.seconds);
    if (draw_curves(o.out, "chart.png", "chatlearn_engine (ChatLearn PPO flows on rlhf::ppo::engine)",
                    {{.title = "held-out reward (evaluator flow)",
                      .y = "reward",
                      .curves = {{"eval_metrics.jsonl", "held-out"}}},
                     {.title = "training score", .y = "score_mean", .curves = {{"ppo_metrics.jsonl", "score"}}},
                     {.title = "KL to the reference", .y = "kl", .curves = {{"ppo_metrics.jsonl", "kl"}}},
                     {.title = "policy loss", .y = "policy_loss", .curves = {{"ppo_metrics.jsonl", "policy"}}},
                     {.title = "value loss", .y = "value_loss", .curves = {{"ppo_metrics.jsonl", "value"}}},
                     {.title = "parameter sync per episode (ms)",
                      .y = "sync_ms",
                      .curves = {{"engine_metrics.jsonl", "sync"}}}}))
        std::printf("chart: %s\n", (o.out / "chart.png").c_str());
    std::printf("samples: %s\nmetrics: %s\n", (o.out / "samples.md").c_str(), (o.out / "ppo_metrics.jsonl").c_str());

    bool ok = check_learning(o, outcome, rm.held_out_accuracy);
    if (check_flows) {
        // Every episode synced both copies, plus the sync before the first.
        const double policy_gap = max_difference(policy, ppo_policy), value_gap = max_difference(value, ppo_value);
        gpt sft_copy = copy_of(sft);
        const double moved = max_difference(policy, sft_copy);
        const bool counted = policy_syncs.count == o.ppo_steps + 1 && value_syncs.count == o.ppo_steps + 1;
        const auto line = [&](const char* what, bool pass, double figure) {
            ok = ok && pass;
            std::printf("check %-38s %8.3g  %s\n", what, figure, pass ? "ok" : "FAILED");
        };
        line("env flow experience == trainer's", flows_match, flows_match ? 0.0 : 1.0);
        line("syncs: episodes + 1 per pair", counted, static_cast<double>(policy_syncs.count));
        line("policy copy == ppo_policy (max |diff|)", policy_gap == 0.0, policy_gap);
        line("value copy == ppo_value (max |diff|)", value_gap == 0.0, value_gap);
        line("policy copy moved from SFT (max |diff|)", moved > 0.0, moved);
    }
    return ok ? 0 : 1;
} catch (const std::exception& e) {
    std::fprintf(stderr, "rlhf_chatlearn_engine: %s\n", e.what());
    return 2;
}
