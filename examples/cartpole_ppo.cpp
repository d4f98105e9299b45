// Classic PPO on CartPole-v1, environment and all in C++: the dynamics of Gymnasium's
// `gymnasium/envs/classic_control/cartpole.py` (Euler integration, termination at |x| > 2.4 or
// |θ| > 12°, truncation at 500 steps, reward 1 per step), vectorised over N environments that
// reset themselves, and the PPO of CleanRL's `cleanrl/ppo.py` (separate 64-64 tanh actor and
// critic with orthogonal init, one Adam, annealed learning rate, minibatch epochs, whitened
// minibatch advantages, clipped value loss, entropy bonus, grad-norm clip 0.5). The math is the
// library's: time-major GAE with separate terminated/truncated flags and the truncation
// bootstrap (`rlhf::compute_gae_time_major`), the clipped policy and value losses with their
// closed-form gradients (`rlhf::libtorch::policy_loss`, `value_loss`) and the whitening
// (`rlhf::whiten`). Stops once the mean return of the last 100 episodes reaches 475 (solved).
//
//   rlhf_cartpole_ppo [--out DIR] [--seed S] [--envs N] [--max-env-steps N] ...   (--help lists every flag)
//
// Writes DIR/metrics.jsonl (one line per update), DIR/chart.png and DIR/samples.md (the greedy
// policy from 5 fixed start states before and after training).
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/report.hpp"
#include "common/stages.hpp"
#include "rlhf/libtorch.hpp"

namespace {

using rlhf_examples::command_line;

// CartPole-v1 with Gymnasium's constants and Euler step (cartpole.py, kinematics_integrator "euler").
struct cartpole {
    static constexpr double gravity = 9.8, masscart = 1.0, masspole = 0.1, length = 0.5, force_mag = 10.0, tau = 0.02;
    static constexpr double total_mass = masscart + masspole, polemass_length = masspole * length;
    static constexpr double x_threshold = 2.4, theta_threshold = 12.0 * std::numbers::pi / 180.0;  // 0.2095 rad
    static constexpr std::int64_t max_steps = 500;  // CartPole-v1's TimeLimit

    std::array<double, 4> s{};  // x, x_dot, theta, theta_dot
    std::int64_t steps = 0;

    void reset(std::mt19937_64& rng) {
        std::uniform_real_distribution<double> start(-0.05, 0.05);
        for (double& v : s) v = start(rng);
        steps = 0;
    }

    // One step with action 0 (push left) or 1 (push right); returns whether the pole fell or
    // the cart left the track (terminated). The reward is 1 for every step, the last included.
    bool step(std::int64_t action) {
        const double force = action == 1 ? force_mag : -force_mag;
        const double cos_t = std::cos(s[2]), sin_t = std::sin(s[2]);
        const double temp = (force + polemass_length * s[3] * s[3] * sin_t) / total_mass;
        const double theta_acc =
            (gravity * sin_t - cos_t * temp) / (length * (4.0 / 3.0 - masspole * cos_t * cos_t / total_mass));
        const double x_acc = temp - polemass_length * theta_acc * cos_t / total_mass;
        s[0] += tau * s[1];
        s[1] += tau * x_acc;
        s[2] += tau * s[3];
        s[3] += tau * theta_acc;
        ++steps;
        return s[0] < -x_threshold || s[0] > x_threshold || s[2] < -theta_threshold || s[2] > theta_threshold;
    }

    [[nodiscard]] bool truncated() const { return steps >= max_steps; }
    void observe(float* out) const {
        for (std::size_t i = 0; i < 4; ++i) out[i] = static_cast<float>(s[i]);
    }
};

// N CartPoles that reset themselves when an episode ends (Gymnasium's vector autoreset as CleanRL
// uses it: the step that ends an episode returns the next episode's first observation, and the
// final observation is kept for the truncation bootstrap).
class cartpole_vector {
public:
    cartpole_vector(std::int64_t n, std::uint64_t seed)
        : envs_(static_cast<std::size_t>(n)), returns_(envs_.size()), rng_(seed) {
        for (auto& e : envs_) e.reset(rng_);
    }

    void observe(float* out) const {
        for (std::size_t i = 0; i < envs_.size(); ++i) envs_[i].observe(out + 4 * i);
    }

    // Steps every environment; fills the per-env flags and, for truncated ones, the final
    // observation; appends the returns of the episodes that ended.
    void step(const std::vector<std::int64_t>& actions, std::vector<std::uint8_t>& terminated,
              std::vector<std::uint8_t>& truncated, std::vector<float>& final_obs, std::vector<double>& finished) {
        for (std::size_t i = 0; i < envs_.size(); ++i) {
            cartpole& e = envs_[i];
            const bool ended = e.step(actions[i]);
            const bool cut = !ended && e.truncated();
            returns_[i] += 1.0;
            terminated[i] = ended ? 1 : 0;
            truncated[i] = cut ? 1 : 0;
            if (cut) e.observe(final_obs.data() + 4 * i);
            if (ended || cut) {
                finished.push_back(returns_[i]);
                returns_[i] = 0.0;
                e.reset(rng_);
            }
        }
    }

private:
    std::vector<cartpole> envs_;
    std::vector<double> returns_;
    std::mt19937_64 rng_;
};

// CleanRL's layer_init: orthogonal weights with gain `gain`, zero bias.
torch::nn::Linear layer(std::int64_t in, std::int64_t out, double gain) {
    torch::nn::Linear l(in, out);
    torch::NoGradGuard no_grad;
    torch::nn::init::orthogonal_(l->weight, gain);
    torch::nn::init::zeros_(l->bias);
    return l;
}

// 4 → 64 → 64 → out, tanh (CleanRL's actor: out 2, gain 0.01; critic: out 1, gain 1).
torch::nn::Sequential mlp(std::int64_t out, double out_gain) {
    const double hidden_gain = std::sqrt(2.0);
    return torch::nn::Sequential(layer(4, 64, hidden_gain), torch::nn::Tanh(), layer(64, 64, hidden_gain),
                                 torch::nn::Tanh(), layer(64, out, out_gain));
}

// One greedy (argmax) episode from `start`: its return and (x, θ) every 50 steps.
struct greedy_episode {
    double episode_return = 0.0;
    std::vector<std::array<double, 3>> trace;  // step, x, theta
};

greedy_episode run_greedy(torch::nn::Sequential& actor, const std::array<double, 4>& start) {
    torch::NoGradGuard no_grad;
    cartpole e;
    e.s = start;
    greedy_episode out;
    out.trace.push_back({0.0, e.s[0], e.s[2]});
    std::array<float, 4> obs{};
    bool ended = false;
    while (!ended && !e.truncated()) {
        e.observe(obs.data());
        const torch::Tensor logits = actor->forward(torch::from_blob(obs.data(), {1, 4}));
        ended = e.step(logits.argmax(1).item<std::int64_t>());
        out.episode_return += 1.0;
        if (ended || e.steps % 50 == 0) out.trace.push_back({static_cast<double>(e.steps), e.s[0], e.s[2]});
    }
    return out;
}

std::vector<greedy_episode> evaluate(torch::nn::Sequential& actor, const std::vector<std::array<double, 4>>& starts) {
    std::vector<greedy_episode> out;
    for (const auto& s : starts) out.push_back(run_greedy(actor, s));
    return out;
}

void write_samples(const std::filesystem::path& path, const std::vector<std::array<double, 4>>& starts,
                   const std::vector<greedy_episode>& before, const std::vector<greedy_episode>& after) {
    std::ofstream out(path);
    char line[160];
    out << "# Samples: the greedy policy from 5 fixed start states, before and after PPO\n\n";
    out << "| start (x, x_dot, theta, theta_dot) | return before | return after |\n|---|---:|---:|\n";
    for (std::size_t i = 0; i < starts.size(); ++i) {
        std::snprintf(line, sizeof line, "| (%+.3f, %+.3f, %+.3f, %+.3f) | %.0f | %.0f |\n", starts[i][0], starts[i][1],
                      starts[i][2], starts[i][3], before[i].episode_return, after[i].episode_return);
        out << line;
    }
    for (const auto& [name, runs] : {std::pair{"before", &before}, std::pair{"after", &after}}) {
        out << "\n## Trace of start 1 " << name
            << " training (x in m, theta in rad)\n\n| step | x | theta |\n|---:|---:|---:|\n";
        for (const auto& [t, x, theta] : (*runs)[0].trace) {
            std::snprintf(line, sizeof line, "| %.0f | %+.3f | %+.4f |\n", t, x, theta);
            out << line;
        }
    }
}

struct cartpole_options {
    std::filesystem::path out = "cartpole_ppo_run";
    std::uint64_t seed = 1;
    std::int64_t threads = 1, envs = 4, steps_per_rollout = 128, max_env_steps = 500000, epochs = 4, minibatches = 4;
    double lr = 2.5e-4, gamma = 0.99, gae_lambda = 0.95, clip = 0.2, value_clip = 0.2, ent_coef = 0.01, vf_coef = 0.5,
           max_grad_norm = 0.5, solved_return = 475.0;
    bool anneal_lr = true, expect_solved = false;
};

}  // namespace

int main(int argc, char** argv) try {
    using namespace rlhf_examples;
    cartpole_options o;
    command_line cli("rlhf_cartpole_ppo",
                     "PPO (CleanRL's ppo.py) on a C++ CartPole-v1 (Gymnasium's cartpole.py), with the library's GAE "
                     "and losses.");
    cli.option("out", o.out, "run folder (metrics.jsonl, chart.png, samples.md)");
    cli.option("seed", o.seed, "seed of the networks, the environments and the sampling");
    cli.option("threads", o.threads, "LibTorch intra-op threads");
    cli.option("envs", o.envs, "environments stepped together");
    cli.option("steps-per-rollout", o.steps_per_rollout, "steps of each environment per update");
    cli.option("max-env-steps", o.max_env_steps, "budget of environment steps (all environments)");
    cli.option("epochs", o.epochs, "PPO epochs over each rollout");
    cli.option("minibatches", o.minibatches, "minibatches per epoch");
    cli.option("lr", o.lr, "Adam learning rate (annealed linearly to 0 over the budget)");
    cli.option("anneal-lr", o.anneal_lr, "anneal the learning rate");
    cli.option("gamma", o.gamma, "discount");
    cli.option("gae-lambda", o.gae_lambda, "GAE lambda");
    cli.option("clip", o.clip, "policy ratio clip");
    cli.option("value-clip", o.value_clip, "value clip, in value units around the rollout's values");
    cli.option("ent-coef", o.ent_coef, "entropy bonus coefficient");
    cli.option("vf-coef", o.vf_coef, "value loss coefficient");
    cli.option("max-grad-norm", o.max_grad_norm, "gradient norm clip");
    cli.option("solved-return", o.solved_return, "mean return of the last 100 episodes that counts as solved");
    cli.option("expect-solved", o.expect_solved, "exit 1 unless the run solves within the budget");
    if (!cli.parse(argc, argv)) return 0;
    if (o.envs < 1 || o.steps_per_rollout < 1 || o.epochs < 1 || o.minibatches < 1 ||
        2 * o.minibatches > o.envs * o.steps_per_rollout || o.threads < 1)
        throw std::invalid_argument(
            "--envs, --steps-per-rollout, --epochs, --minibatches and --threads must be >= 1 "
            "(and minibatches of at least 2 samples)");

    start_run(o.threads, o.seed, o.out);  // also OpenBLAS on one thread: --threads is the whole story

    torch::nn::Sequential actor = mlp(2, 0.01), critic = mlp(1, 1.0);
    std::vector<torch::Tensor> parameters = actor->parameters();
    for (const auto& p : critic->parameters()) parameters.push_back(p);
    torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(o.lr).eps(1e-5));

    // 5 fixed start states (independent of --seed) for the greedy before/after samples.
    std::vector<std::array<double, 4>> starts(5);
    {
        std::mt19937_64 start_rng(2024);
        cartpole e;
        for (auto& s : starts) e.reset(start_rng), s = e.s;
    }
    const std::vector<greedy_episode> before = evaluate(actor, starts);

    const std::int64_t n = o.envs, steps = o.steps_per_rollout, batch = n * steps;
    const std::int64_t updates = std::max<std::int64_t>(1, o.max_env_steps / batch);
    cartpole_vector envs(n, o.seed * 7919 + 1);
    std::mt19937_64 rng(o.seed);
    std::uniform_real_distribution<float> uniform(0.0F, 1.0F);

    // Rollout storage, time-major [T, N].
    std::vector<float> obs(static_cast<std::size_t>(batch * 4)), next_obs(static_cast<std::size_t>(n * 4));
    std::vector<float> final_obs(static_cast<std::size_t>(n * 4));
    std::vector<std::int64_t> actions(static_cast<std::size_t>(batch));
    std::vector<float> log_probs(static_cast<std::size_t>(batch)), values(static_cast<std::size_t>(batch));
    std::vector<float> rewards(static_cast<std::size_t>(batch), 1.0F),
        truncation_values(static_cast<std::size_t>(batch));
    std::vector<std::uint8_t> terminated(static_cast<std::size_t>(batch)), truncated(static_cast<std::size_t>(batch));
    std::vector<std::uint8_t> term_now(static_cast<std::size_t>(n)), trunc_now(static_cast<std::size_t>(n));
    std::vector<std::int64_t> step_actions(static_cast<std::size_t>(n));
    std::vector<double> finished;
    std::deque<double> last_100;
    std::int64_t episodes = 0, env_steps = 0, solved_at = -1, solved_update = -1;
    envs.observe(next_obs.data());

    const auto u8 = [](std::vector<std::uint8_t>& v, std::int64_t rows, std::int64_t cols) {
        return torch::from_blob(v.data(), {rows, cols}, torch::kUInt8).to(torch::kBool);
    };
    const auto f32 = [](std::vector<float>& v, torch::IntArrayRef shape) { return torch::from_blob(v.data(), shape); };
    const auto mean_100 = [&] {
        return last_100.empty()
                   ? 0.0
                   : std::accumulate(last_100.begin(), last_100.end(), 0.0) / static_cast<double>(last_100.size());
    };

    jsonl_writer metrics(o.out / "metrics.jsonl");
    progress_bar bar("cartpole_ppo", updates);
    std::vector<std::int64_t> order(static_cast<std::size_t>(batch));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    for (std::int64_t update = 1; update <= updates; ++update) {
        if (o.anneal_lr) {  // CleanRL: lr · (1 − (update − 1) / updates)
            const double frac = 1.0 - static_cast<double>(update - 1) / static_cast<double>(updates);
            for (auto& group : optimizer.param_groups()) group.options().set_lr(frac * o.lr);
        }
        // Rollout: T steps of N environments, actions sampled from the policy.
        {
            torch::NoGradGuard no_grad;
            for (std::int64_t t = 0; t < steps; ++t) {
                float* o_t = obs.data() + t * n * 4;
                std::copy(next_obs.begin(), next_obs.end(), o_t);
                const torch::Tensor x = torch::from_blob(o_t, {n, 4});
                const torch::Tensor logp = torch::log_softmax(actor->forward(x), 1).contiguous();
                const torch::Tensor v = critic->forward(x).contiguous();
                const float* lp = logp.data_ptr<float>();
                const float* vp = v.data_ptr<float>();
                for (std::int64_t i = 0; i < n; ++i) {
                    const std::int64_t a = uniform(rng) < std::exp(lp[2 * i]) ? 0 : 1;
                    step_actions[static_cast<std::size_t>(i)] = a;
                    const auto k = static_cast<std::size_t>(t * n + i);
                    actions[k] = a;
                    log_probs[k] = lp[2 * i + a];
                    values[k] = vp[i];
                }
                envs.step(step_actions, term_now, trunc_now, final_obs, finished);
                envs.observe(next_obs.data());
                env_steps += n;
                bool any_truncated = false;
                for (std::int64_t i = 0; i < n; ++i) {
                    const auto k = static_cast<std::size_t>(t * n + i);
                    terminated[k] = term_now[static_cast<std::size_t>(i)];
                    truncated[k] = trunc_now[static_cast<std::size_t>(i)];
                    truncation_values[k] = 0.0F;
                    any_truncated = any_truncated || trunc_now[static_cast<std::size_t>(i)] != 0;
                }
                if (any_truncated) {  // V(final observation): the bootstrap of a time-limit cut
                    const torch::Tensor vf = critic->forward(torch::from_blob(final_obs.data(), {n, 4})).contiguous();
                    for (std::int64_t i = 0; i < n; ++i)
                        if (trunc_now[static_cast<std::size_t>(i)] != 0)
                            truncation_values[static_cast<std::size_t>(t * n + i)] = vf.data_ptr<float>()[i];
                }
                for (const double r : finished) {
                    last_100.push_back(r);
                    if (last_100.size() > 100) last_100.pop_front();
                    ++episodes;
                    if (solved_at < 0 && last_100.size() == 100 && mean_100() >= o.solved_return)
                        solved_at = env_steps, solved_update = update;
                }
                finished.clear();
            }
        }
        if (solved_at >= 0) {  // solved during this rollout: no further update
            metrics.write(update, {{"env_steps", static_cast<double>(env_steps)},
                                   {"mean_return_100", mean_100()},
                                   {"episodes", static_cast<double>(episodes)},
                                   {"wall_seconds", bar.seconds()}});
            bar.update(update, {{"return100", mean_100()}, {"episodes", static_cast<double>(episodes)}});
            break;
        }

        // Advantages: the library's time-major GAE (terminated: no bootstrap; truncated:
        // bootstrap with V(final observation)).
        torch::Tensor next_values;
        {
            torch::NoGradGuard no_grad;
            next_values = critic->forward(torch::from_blob(next_obs.data(), {n, 4})).reshape({n}).contiguous();
        }
        const auto gae = rlhf::compute_gae_time_major(
            f32(rewards, {steps, n}), f32(values, {steps, n}), u8(terminated, steps, n), u8(truncated, steps, n),
            f32(truncation_values, {steps, n}), next_values, {.gamma = o.gamma, .lambda = o.gae_lambda});

        const torch::Tensor b_obs = f32(obs, {batch, 4});
        const torch::Tensor b_actions = torch::from_blob(actions.data(), {batch, 1}, torch::kInt64);
        const torch::Tensor b_log_probs = f32(log_probs, {batch});
        const torch::Tensor b_values = f32(values, {batch});
        const torch::Tensor b_advantages = gae.advantages.reshape({batch});
        const torch::Tensor b_returns = gae.returns.reshape({batch});

        double policy_loss_sum = 0.0, value_loss_sum = 0.0, kl_sum = 0.0, clip_sum = 0.0, vclip_sum = 0.0,
               entropy_sum = 0.0, explained_sum = 0.0;
        std::int64_t minibatch_count = 0;
        const std::int64_t minibatch = batch / o.minibatches;
        for (std::int64_t epoch = 0; epoch < o.epochs; ++epoch) {
            std::shuffle(order.begin(), order.end(), rng);
            for (std::int64_t m = 0; m < o.minibatches; ++m) {
                const torch::Tensor index = torch::from_blob(order.data() + m * minibatch, {minibatch}, torch::kInt64);
                const torch::Tensor mb_obs = b_obs.index_select(0, index);
                const torch::Tensor all_logp = torch::log_softmax(actor->forward(mb_obs), 1);
                const torch::Tensor new_log_probs =
                    all_logp.gather(1, b_actions.index_select(0, index)).reshape({1, minibatch});
                const torch::Tensor entropy = -(all_logp.exp() * all_logp).sum(1).mean();
                const torch::Tensor new_values = critic->forward(mb_obs).reshape({1, minibatch});
                const torch::Tensor mask = torch::ones({1, minibatch}, torch::kBool);
                // Per-minibatch whitening: (A − mean) / sqrt(var + 1e-8), unbiased variance (CleanRL norm_adv).
                const torch::Tensor advantages =
                    rlhf::whiten(b_advantages.index_select(0, index).reshape({1, minibatch}));
                const auto policy = rlhf::libtorch::policy_loss(
                    new_log_probs, b_log_probs.index_select(0, index).reshape({1, minibatch}), advantages, mask,
                    {.clip_low = o.clip, .clip_high = o.clip});
                // ½·max((V − R)², (V_clip − R)²), V_clip = V_old + clamp(V − V_old, ±value_clip), times vf_coef.
                const auto value =
                    rlhf::libtorch::value_loss(new_values, b_values.index_select(0, index).reshape({1, minibatch}),
                                               b_returns.index_select(0, index).reshape({1, minibatch}), mask,
                                               {.clip_range = o.value_clip, .coef = o.vf_coef});
                const torch::Tensor loss = policy.loss + value.loss - o.ent_coef * entropy;
                optimizer.zero_grad();
                loss.backward();
                torch::nn::utils::clip_grad_norm_(parameters, o.max_grad_norm);
                optimizer.step();
                policy_loss_sum += policy.loss.item<double>();
                value_loss_sum += value.loss.item<double>();
                kl_sum += policy.stats.approx_kl;
                clip_sum += policy.stats.clip_fraction;
                vclip_sum += value.stats.clip_fraction;
                explained_sum += value.stats.explained_variance;
                entropy_sum += entropy.item<double>();
                ++minibatch_count;
            }
        }
        const auto mean = [&](double sum) { return sum / static_cast<double>(minibatch_count); };
        metrics.write(update, {{"env_steps", static_cast<double>(env_steps)},
                               {"mean_return_100", mean_100()},
                               {"episodes", static_cast<double>(episodes)},
                               {"policy_loss", mean(policy_loss_sum)},
                               {"value_loss", mean(value_loss_sum)},
                               {"approx_kl", mean(kl_sum)},
                               {"clip_fraction", mean(clip_sum)},
                               {"value_clip_fraction", mean(vclip_sum)},
                               {"explained_variance", mean(explained_sum)},
                               {"entropy", mean(entropy_sum)},
                               {"lr", optimizer.param_groups()[0].options().get_lr()},
                               {"wall_seconds", bar.seconds()}});
        bar.update(update, {{"return100", mean_100()}, {"episodes", static_cast<double>(episodes)}});
    }
    const double wall = bar.seconds();
    const std::vector<greedy_episode> after = evaluate(actor, starts);
    write_samples(o.out / "samples.md", starts, before, after);

    const auto panel = [](std::string title, std::string y, std::optional<double> reference = std::nullopt) {
        return chart_panel{.title = std::move(title),
                           .x = "env_steps",
                           .y = y,
                           .curves = {{"metrics.jsonl", y}},
                           .reference = reference};
    };
    draw_curves(
        o.out, "chart.png", "PPO on CartPole-v1 (seed " + std::to_string(o.seed) + ")",
        {panel("mean return, last 100 episodes", "mean_return_100", o.solved_return),
         panel("policy loss", "policy_loss"), panel("value loss", "value_loss"), panel("approx KL", "approx_kl"),
         panel("clip fraction", "clip_fraction"), panel("entropy", "entropy")});

    const auto mean_of = [](const std::vector<greedy_episode>& runs) {
        double s = 0.0;
        for (const auto& r : runs) s += r.episode_return;
        return s / static_cast<double>(runs.size());
    };
    std::printf("greedy return over 5 fixed starts: %.1f before, %.1f after\n", mean_of(before), mean_of(after));
    if (solved_at >= 0)
        std::printf(
            "solved: mean return of the last 100 episodes >= %.0f after %lld env steps (rollout %lld, after %lld "
            "PPO updates; %lld episodes) in %.1f s\n",
            o.solved_return, static_cast<long long>(solved_at), static_cast<long long>(solved_update),
            static_cast<long long>(solved_update - 1), static_cast<long long>(episodes), wall);
    else
        std::printf("not solved: mean return of the last 100 episodes %.1f after %lld env steps in %.1f s\n",
                    mean_100(), static_cast<long long>(env_steps), wall);
    std::printf("wrote %s/metrics.jsonl, chart.png, samples.md\n", o.out.string().c_str());
    return (o.expect_solved && solved_at < 0) ? 1 : 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "rlhf_cartpole_ppo: %s\n", e.what());
    return 2;
}
