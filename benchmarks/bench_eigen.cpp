// Eigen baselines: each computation written as idiomatic Eigen array expressions over Maps of
// the problem's buffers (whole-array expressions where the math allows, a loop over columns
// where it is a recursion, temporaries where Eigen code would name one). They are comparison
// points, not library API: the library's Eigen entry points (rlhf/eigen/*.hpp) run the fused
// kernels. Reductions that feed a scalar loss are accumulated in double, as the kernels do.
#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <memory>

#include "harness.hpp"

namespace {

using namespace rlhf_bench;
using array = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using column = Eigen::Array<float, Eigen::Dynamic, 1>;
using in_map = Eigen::Map<const array>;
using out_map = Eigen::Map<array>;
using in_column = Eigen::Map<const column>;
using out_column = Eigen::Map<column>;

// -- GAE -----------------------------------------------------------------------------------------

void gae(const gae_problem& p) {
    const in_map r(p.rewards, p.batch, p.steps), v(p.values, p.batch, p.steps), m(p.mask, p.batch, p.steps);
    out_map adv(p.advantages, p.batch, p.steps), ret(p.returns, p.batch, p.steps);
    const auto gamma = static_cast<float>(p.gamma), gl = static_cast<float>(p.gamma * p.lambda);
    const Eigen::Index last = p.steps - 1;
    if (p.masking == rlhf::gae_masking::skip_masked) {
        // Masked columns carry the next value and the running advantage across (verl).
        column next = column::Zero(p.batch), running = column::Zero(p.batch);
        for (Eigen::Index t = last; t >= 0; --t) {
            const auto valid = m.col(t) > 0.5f;
            running = valid.select(r.col(t) + gamma * next - v.col(t) + gl * running, running);
            next = valid.select(v.col(t), next);
            adv.col(t) = running;
        }
        ret = adv + v;
        return;
    }
    // δ for every position at once (ret holds V·m until the end), then the recursion by column.
    ret = v * m;
    adv = r * m - ret;
    adv.leftCols(last) += gamma * ret.rightCols(last);
    if (p.masking == rlhf::gae_masking::valid_range) {
        adv.col(last) *= m.col(last);
        for (Eigen::Index t = last - 1; t >= 0; --t) adv.col(t) = (adv.col(t) + gl * adv.col(t + 1)) * m.col(t);
    } else {
        for (Eigen::Index t = last - 1; t >= 0; --t) adv.col(t) += gl * adv.col(t + 1);
    }
    ret += adv;
}

RLHF_BENCH_KERNEL(gae_problem, "", "eigen",
                  [](const gae_problem& p) { return prepared_kernel{.run = [p] { gae(p); }}; });

// -- whitening -----------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(whiten_problem, "whiten", "eigen", [](const whiten_problem& p) {
    return prepared_kernel{.run = [p] {
        const in_map x(p.values, p.batch, p.steps), m(p.mask, p.batch, p.steps);
        out_map out(p.out, p.batch, p.steps);
        const double n = m.cast<double>().sum();
        const double mean = (x * m).cast<double>().sum() / n;
        const double variance = ((x.cast<double>() - mean).square() * m.cast<double>()).sum() / (n - 1.0);
        out = (x - static_cast<float>(mean)) * static_cast<float>(1.0 / std::sqrt(variance + p.epsilon));
    }};
});

// -- KL estimator and reward shaping -------------------------------------------------------------

RLHF_BENCH_KERNEL(kl_reward_problem, "kl_reward", "eigen", [](const kl_reward_problem& p) {
    auto positions = std::make_shared<Eigen::Array<float, 1, Eigen::Dynamic>>(
        Eigen::Array<float, 1, Eigen::Dynamic>::LinSpaced(p.steps, 0.0f, static_cast<float>(p.steps - 1)));
    return prepared_kernel{.run = [p, positions] {
        const in_map lp(p.log_probs, p.batch, p.steps), ref(p.ref_log_probs, p.batch, p.steps);
        const in_map m(p.mask, p.batch, p.steps);
        out_map rewards(p.rewards, p.batch, p.steps);
        const auto d = ref - lp;
        rewards = static_cast<float>(-p.kl_coef) * (d.exp() - d - 1.0f) * m;
        for (Eigen::Index b = 0; b < p.batch; ++b) {
            Eigen::Index at = 0;
            (m.row(b) * *positions).maxCoeff(&at);
            rewards(b, at) += p.scores[b];
        }
    }};
});

// -- policy loss ---------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(policy_loss_problem, "policy_loss", "eigen", [](const policy_loss_problem& p) {
    return prepared_kernel{.run = [p] {
        const in_map lp(p.log_probs, p.batch, p.steps), old(p.old_log_probs, p.batch, p.steps);
        const in_map a(p.advantages, p.batch, p.steps), m(p.mask, p.batch, p.steps);
        out_map grad(p.grad_log_probs, p.batch, p.steps);
        const array d = lp - old;
        const array ratio = d.exp();
        const auto s1 = ratio * a;
        const auto s2 = ratio.max(static_cast<float>(1.0 - p.clip_low)).min(static_cast<float>(1.0 + p.clip_high)) * a;
        const double n = m.cast<double>().sum();
        *p.loss = -(s1.min(s2) * m).cast<double>().sum() / n;
        grad = -(s1 <= s2).select(a, 0.0f) * ratio * m * static_cast<float>(1.0 / n);
        // The statistics the kernel returns with the loss.
        const double clip_fraction = ((s2 < s1).cast<float>() * m).cast<double>().sum() / n;
        const double approx_kl = 0.5 * (d.square() * m).cast<double>().sum() / n;
        const double policy_kl = -(d * m).cast<double>().sum() / n;
        const double ratio_mean = (ratio * m).cast<double>().sum() / n;
        const float ratio_max = (m > 0.5f).select(ratio, 0.0f).maxCoeff();
        const double ratio_all = ratio.cast<double>().mean();
        double statistics =
            clip_fraction + approx_kl + policy_kl + ratio_mean + static_cast<double>(ratio_max) + ratio_all;
        benchmark::DoNotOptimize(statistics);
    }};
});

// -- value loss ----------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(value_loss_problem, "value_loss", "eigen", [](const value_loss_problem& p) {
    return prepared_kernel{.run = [p] {
        const in_map v(p.values, p.batch, p.steps), old(p.old_values, p.batch, p.steps);
        const in_map target(p.returns, p.batch, p.steps), m(p.mask, p.batch, p.steps);
        out_map grad(p.grad_values, p.batch, p.steps);
        const auto c = static_cast<float>(p.clip_range);
        const auto low = old - c;
        const auto high = old + c;
        const array e1 = v - target;
        const array e2 = v.max(low).min(high) - target;
        const auto p1 = e1.square();
        const auto p2 = e2.square();
        const double n = m.cast<double>().sum();
        *p.loss = 0.5 * (p1.max(p2) * m).cast<double>().sum() / n;
        // torch.max splits the gradient on ties; torch.clamp passes it on its bounds.
        const auto g1 = 2.0f * e1;
        const auto g2 = (v >= low && v <= high).select(2.0f * e2, 0.0f);
        grad = (p2 > p1).select(g2, (p1 > p2).select(g1, 0.5f * (g1 + g2))) * m * static_cast<float>(0.5 / n);
        const double clip_fraction = ((p2 > p1).cast<float>() * m).cast<double>().sum() / n;
        const double value_mean = (v * m).cast<double>().sum() / n;
        const double value_error = (p1 * m).cast<double>().sum() / n;
        const double return_mean = (target * m).cast<double>().sum() / n;
        const double residual_mean = -(e1 * m).cast<double>().sum() / n;
        const double target_variance = (target.square() * m).cast<double>().sum() / n - return_mean * return_mean;
        const double explained = 1.0 - (value_error - residual_mean * residual_mean) / target_variance;
        double statistics = clip_fraction + value_mean + explained;
        benchmark::DoNotOptimize(statistics);
    }};
});

// -- log-probs and entropy from logits -----------------------------------------------------------

RLHF_BENCH_KERNEL(logits_problem, "", "eigen", [](const logits_problem& p) {
    const Eigen::Index rows = p.batch * p.steps;
    return prepared_kernel{.run = [p, rows] {
        const in_map z(p.logits, rows, p.vocab);
        const in_column m(p.mask, rows);
        out_map grad(p.grad_logits, rows, p.vocab);
        out_column lp(p.logprobs, rows);
        // log_softmax, as one [B·T, V] temporary.
        array logp = z.colwise() - z.rowwise().maxCoeff();
        const column log_sum = logp.exp().rowwise().sum().log();
        logp.colwise() -= log_sum;
        for (Eigen::Index i = 0; i < rows; ++i) lp(i) = logp(i, p.tokens[i]) * m(i);
        const column g_lp = in_column(p.grad_logprobs, rows) * m;
        if (p.entropy) {
            out_column h(p.entropy_out, rows);
            const column entropy = -(logp.exp() * logp).rowwise().sum();
            h = entropy * m;
            const column g_h = in_column(p.grad_entropy, rows) * m;
            // d(g_lp·lp + g_h·H)/dz = g_lp·(onehot − p) − g_h·p·(log p + H)
            grad = -logp.exp() * (((logp.colwise() + entropy).colwise() * g_h).colwise() + g_lp);
        } else {
            grad = -(logp.exp().colwise() * g_lp);
        }
        for (Eigen::Index i = 0; i < rows; ++i) grad(i, p.tokens[i]) += g_lp(i);
    }};
});

// -- GRPO ----------------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(grpo_problem, "grpo", "eigen", [](const grpo_problem& p) {
    return prepared_kernel{.run = [p] {
        const in_map r(p.token_rewards, p.batch, p.steps), m(p.mask, p.batch, p.steps);
        const column scores = r.rowwise().sum();
        const in_map grouped(scores.data(), p.batch / p.group_size, p.group_size);
        const array centred = grouped.colwise() - grouped.rowwise().mean();
        const column deviation = (centred.square().rowwise().sum() / static_cast<float>(p.group_size - 1)).sqrt();
        const array advantages = centred.colwise() / (deviation + static_cast<float>(p.epsilon));
        out_map(p.advantages, p.batch, p.steps) = m.colwise() * in_column(advantages.data(), p.batch);
    }};
});

}  // namespace
