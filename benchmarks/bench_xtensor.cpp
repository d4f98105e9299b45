// xtensor baselines: each computation written as idiomatic xtensor expressions over `xt::adapt`s of
// the problem's buffers (vectorised through xsimd when it is installed, as xtensor recommends).
// They are comparison points, not library API: the library's xtensor entry points
// (rlhf/xtensor/*.hpp) run the fused kernels. Reductions that feed a scalar loss are accumulated
// in double, as the kernels do.
#if __has_include(<xtensor/containers/xadapt.hpp>)  // xtensor >= 0.26
#include <xtensor/containers/xadapt.hpp>
#include <xtensor/containers/xtensor.hpp>
#include <xtensor/core/xmath.hpp>
#include <xtensor/core/xnoalias.hpp>
#include <xtensor/misc/xsort.hpp>
#include <xtensor/views/xview.hpp>
#else
#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#endif
#include <benchmark/benchmark.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "harness.hpp"

namespace {

using rlhf_bench::gae_problem;
using rlhf_bench::grpo_problem;
using rlhf_bench::kl_reward_problem;
using rlhf_bench::logits_problem;
using rlhf_bench::policy_loss_problem;
using rlhf_bench::prepared_kernel;
using rlhf_bench::value_loss_problem;
using rlhf_bench::whiten_problem;
using count = rlhf_bench::index;  // (a bare `index` would meet POSIX ::index)
using xt::all;
using xt::newaxis;
using tensor1 = xt::xtensor<float, 1>;
using tensor2 = xt::xtensor<float, 2>;

std::size_t size(count n) {
    return static_cast<std::size_t>(n);
}

/// A [rows, cols] adaptor of a buffer (no copy). Inputs are only read through it.
auto matrix(const float* data, count rows, count cols) {
    return xt::adapt(const_cast<float*>(data), size(rows * cols), xt::no_ownership(),
                     std::array<std::size_t, 2>{size(rows), size(cols)});
}

auto vector(const float* data, count n) {
    return xt::adapt(const_cast<float*>(data), size(n), xt::no_ownership(), std::array<std::size_t, 1>{size(n)});
}

// -- GAE -----------------------------------------------------------------------------------------

void gae(const gae_problem& p) {
    const auto r = matrix(p.rewards, p.batch, p.steps), v = matrix(p.values, p.batch, p.steps);
    const auto m = matrix(p.mask, p.batch, p.steps);
    auto adv = matrix(p.advantages, p.batch, p.steps), ret = matrix(p.returns, p.batch, p.steps);
    const auto gamma = static_cast<float>(p.gamma), gl = static_cast<float>(p.gamma * p.lambda);
    const std::size_t steps = size(p.steps), last = steps - 1;
    if (p.masking == rlhf::gae_masking::skip_masked) {
        // Masked columns carry the next value and the running advantage across (verl).
        tensor1 next = xt::zeros<float>({size(p.batch)}), running = xt::zeros<float>({size(p.batch)});
        for (std::size_t k = steps; k-- > 0;) {
            const auto valid = xt::view(m, all(), k) > 0.5f;
            const auto vt = xt::view(v, all(), k);
            running = xt::where(valid, xt::view(r, all(), k) + gamma * next - vt + gl * running, running);
            next = xt::where(valid, vt, next);
            xt::view(adv, all(), k) = running;
        }
        xt::noalias(ret) = adv + v;
        return;
    }
    // δ for every position at once (ret holds V·m until the end), then the recursion by column.
    xt::noalias(ret) = v * m;
    xt::noalias(adv) = r * m - ret;
    xt::view(adv, all(), xt::range(0, last)) += gamma * xt::view(ret, all(), xt::range(1, steps));
    if (p.masking == rlhf::gae_masking::valid_range) {
        xt::view(adv, all(), last) *= xt::view(m, all(), last);
        for (std::size_t k = last; k-- > 0;)
            xt::view(adv, all(), k) =
                (xt::view(adv, all(), k) + gl * xt::view(adv, all(), k + 1)) * xt::view(m, all(), k);
    } else {
        for (std::size_t k = last; k-- > 0;) xt::view(adv, all(), k) += gl * xt::view(adv, all(), k + 1);
    }
    ret += adv;
}

RLHF_BENCH_KERNEL(gae_problem, "", "xtensor",
                  [](const gae_problem& p) { return prepared_kernel{.run = [p] { gae(p); }}; });

// -- whitening -----------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(whiten_problem, "whiten", "xtensor", [](const whiten_problem& p) {
    return prepared_kernel{.run = [p] {
        const auto x = matrix(p.values, p.batch, p.steps), m = matrix(p.mask, p.batch, p.steps);
        auto out = matrix(p.out, p.batch, p.steps);
        const double n = xt::sum<double>(m)();
        const double mean = xt::sum<double>(x * m)() / n;
        const double variance = xt::sum<double>(xt::square(xt::cast<double>(x) - mean) * m)() / (n - 1.0);
        xt::noalias(out) = (x - static_cast<float>(mean)) * static_cast<float>(1.0 / std::sqrt(variance + p.epsilon));
    }};
});

// -- KL estimator and reward shaping -------------------------------------------------------------

RLHF_BENCH_KERNEL(kl_reward_problem, "kl_reward", "xtensor", [](const kl_reward_problem& p) {
    return prepared_kernel{.run = [p] {
        const auto lp = matrix(p.log_probs, p.batch, p.steps), ref = matrix(p.ref_log_probs, p.batch, p.steps);
        const auto m = matrix(p.mask, p.batch, p.steps);
        auto rewards = matrix(p.rewards, p.batch, p.steps);
        const auto d = ref - lp;
        xt::noalias(rewards) = static_cast<float>(-p.kl_coef) * (xt::exp(d) - d - 1.0f) * m;
        const auto last = xt::eval(xt::argmax(m * xt::arange<float>(static_cast<float>(p.steps)), 1));
        for (std::size_t b = 0; b < size(p.batch); ++b) rewards(b, last(b)) += p.scores[b];
    }};
});

// -- policy loss ---------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(policy_loss_problem, "policy_loss", "xtensor", [](const policy_loss_problem& p) {
    return prepared_kernel{.run = [p] {
        const auto lp = matrix(p.log_probs, p.batch, p.steps), old = matrix(p.old_log_probs, p.batch, p.steps);
        const auto a = matrix(p.advantages, p.batch, p.steps), m = matrix(p.mask, p.batch, p.steps);
        auto grad = matrix(p.grad_log_probs, p.batch, p.steps);
        const tensor2 d = lp - old;
        const tensor2 ratio = xt::exp(d);
        const auto s1 = ratio * a;
        const auto s2 =
            xt::clip(ratio, static_cast<float>(1.0 - p.clip_low), static_cast<float>(1.0 + p.clip_high)) * a;
        const double n = xt::sum<double>(m)();
        *p.loss = -xt::sum<double>(xt::minimum(s1, s2) * m)() / n;
        xt::noalias(grad) = -xt::where(s1 <= s2, a, 0.0f) * ratio * m * static_cast<float>(1.0 / n);
        // The statistics the kernel returns with the loss.
        const double clip_fraction = xt::sum<double>(xt::cast<float>(s2 < s1) * m)() / n;
        const double approx_kl = 0.5 * xt::sum<double>(xt::square(d) * m)() / n;
        const double policy_kl = -xt::sum<double>(d * m)() / n;
        const double ratio_mean = xt::sum<double>(ratio * m)() / n;
        const float ratio_max = xt::amax(xt::where(m > 0.5f, ratio, 0.0f))();
        const double ratio_all = xt::mean<double>(ratio)();
        double statistics =
            clip_fraction + approx_kl + policy_kl + ratio_mean + static_cast<double>(ratio_max) + ratio_all;
        benchmark::DoNotOptimize(statistics);
    }};
});

// -- value loss ----------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(value_loss_problem, "value_loss", "xtensor", [](const value_loss_problem& p) {
    return prepared_kernel{.run = [p] {
        const auto v = matrix(p.values, p.batch, p.steps), old = matrix(p.old_values, p.batch, p.steps);
        const auto target = matrix(p.returns, p.batch, p.steps), m = matrix(p.mask, p.batch, p.steps);
        auto grad = matrix(p.grad_values, p.batch, p.steps);
        const auto c = static_cast<float>(p.clip_range);
        const auto low = old - c;
        const auto high = old + c;
        const tensor2 e1 = v - target;
        const tensor2 e2 = xt::minimum(xt::maximum(v, low), high) - target;
        const auto p1 = xt::square(e1);
        const auto p2 = xt::square(e2);
        const double n = xt::sum<double>(m)();
        *p.loss = 0.5 * xt::sum<double>(xt::maximum(p1, p2) * m)() / n;
        // torch.max splits the gradient on ties; torch.clamp passes it on its bounds.
        const auto g1 = 2.0f * e1;
        const auto g2 = xt::where((v >= low) && (v <= high), 2.0f * e2, 0.0f);
        xt::noalias(grad) =
            xt::where(p2 > p1, g2, xt::where(p1 > p2, g1, 0.5f * (g1 + g2))) * m * static_cast<float>(0.5 / n);
        const double clip_fraction = xt::sum<double>(xt::cast<float>(p2 > p1) * m)() / n;
        const double value_mean = xt::sum<double>(v * m)() / n;
        const double value_error = xt::sum<double>(p1 * m)() / n;
        const double return_mean = xt::sum<double>(target * m)() / n;
        const double residual_mean = -xt::sum<double>(e1 * m)() / n;
        const double target_variance = xt::sum<double>(xt::square(target) * m)() / n - return_mean * return_mean;
        const double explained = 1.0 - (value_error - residual_mean * residual_mean) / target_variance;
        double statistics = clip_fraction + value_mean + explained;
        benchmark::DoNotOptimize(statistics);
    }};
});

// -- log-probs and entropy from logits -----------------------------------------------------------

RLHF_BENCH_KERNEL(logits_problem, "", "xtensor", [](const logits_problem& p) {
    return prepared_kernel{.run = [p] {
        const count rows = p.batch * p.steps;
        const auto z = matrix(p.logits, rows, p.vocab);
        const auto m = vector(p.mask, rows);
        auto grad = matrix(p.grad_logits, rows, p.vocab);
        auto lp = vector(p.logprobs, rows);
        // log_softmax, as one [B·T, V] temporary.
        const tensor1 row_max = xt::amax(z, {1});
        tensor2 logp = z - xt::view(row_max, all(), newaxis());
        const tensor1 log_sum = xt::log(xt::sum(xt::exp(logp), {1}));
        logp -= xt::view(log_sum, all(), newaxis());
        for (std::size_t i = 0; i < size(rows); ++i) lp(i) = logp(i, size(p.tokens[i])) * m(i);
        const tensor1 g_lp = vector(p.grad_logprobs, rows) * m;
        if (p.entropy) {
            auto h = vector(p.entropy_out, rows);
            const tensor1 entropy = -xt::sum(xt::exp(logp) * logp, {1});
            xt::noalias(h) = entropy * m;
            const tensor1 g_h = vector(p.grad_entropy, rows) * m;
            // d(g_lp·lp + g_h·H)/dz = g_lp·(onehot − p) − g_h·p·(log p + H)
            xt::noalias(grad) =
                -xt::exp(logp) * ((logp + xt::view(entropy, all(), newaxis())) * xt::view(g_h, all(), newaxis()) +
                                  xt::view(g_lp, all(), newaxis()));
        } else {
            xt::noalias(grad) = -xt::exp(logp) * xt::view(g_lp, all(), newaxis());
        }
        for (std::size_t i = 0; i < size(rows); ++i) grad(i, size(p.tokens[i])) += g_lp(i);
    }};
});

// -- GRPO ----------------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(grpo_problem, "grpo", "xtensor", [](const grpo_problem& p) {
    return prepared_kernel{.run = [p] {
        const auto r = matrix(p.token_rewards, p.batch, p.steps), m = matrix(p.mask, p.batch, p.steps);
        tensor1 scores = xt::sum(r, {1});
        const auto grouped =
            xt::reshape_view(scores, std::array<std::size_t, 2>{size(p.batch / p.group_size), size(p.group_size)});
        const tensor1 mean = xt::mean(grouped, {1});
        const tensor2 centred = grouped - xt::view(mean, all(), newaxis());
        const tensor1 deviation = xt::sqrt(xt::sum(xt::square(centred), {1}) / static_cast<float>(p.group_size - 1)) +
                                  static_cast<float>(p.epsilon);
        tensor2 advantages = centred / xt::view(deviation, all(), newaxis());
        const auto flat = xt::reshape_view(advantages, std::array<std::size_t, 1>{size(p.batch)});
        auto out = matrix(p.advantages, p.batch, p.steps);
        xt::noalias(out) = m * xt::view(flat, all(), newaxis());
    }};
});

}  // namespace
