// The fused kernels (rlhf::...) on views of the problem's buffers: the reference every other row
// is verified against. Outputs go straight into the problem's buffers (no allocation per call
// except the kernels' own documented scratch).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "harness.hpp"
#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/kernels/value_loss.hpp"

namespace {

using namespace rlhf_bench;

template <class T>
rlhf::view<T> in(const T* data, index rows, index cols) {
    return rlhf::make_view(data, rows, cols);
}

rlhf::mut_view<float> out(float* data, index rows, index cols) {
    return rlhf::make_mut_view(data, rows, cols);
}

RLHF_BENCH_KERNEL(gae_problem, "", "fused", [](const gae_problem& p) {
    return prepared_kernel{.run = [p] {
        rlhf::compute_gae(in(p.rewards, p.batch, p.steps), in(p.values, p.batch, p.steps), in(p.mask, p.batch, p.steps),
                          out(p.advantages, p.batch, p.steps), out(p.returns, p.batch, p.steps),
                          {.gamma = p.gamma, .lambda = p.lambda, .masking = p.masking});
    }};
});

RLHF_BENCH_KERNEL(whiten_problem, "whiten", "fused", [](const whiten_problem& p) {
    return prepared_kernel{.run = [p] {
        rlhf::masked_whiten(in(p.values, p.batch, p.steps), in(p.mask, p.batch, p.steps), out(p.out, p.batch, p.steps),
                            {.epsilon = p.epsilon});
    }};
});

RLHF_BENCH_KERNEL(kl_reward_problem, "kl_reward", "fused", [](const kl_reward_problem& p) {
    return prepared_kernel{.run = [p] {
        rlhf::shape_rewards_from_logprobs(in(p.log_probs, p.batch, p.steps), in(p.ref_log_probs, p.batch, p.steps),
                                          in(p.mask, p.batch, p.steps), rlhf::view<float, 1>(p.scores, {p.batch}),
                                          out(p.rewards, p.batch, p.steps),
                                          {.kl_coef = p.kl_coef,
                                           .slot = rlhf::reward_slot::last_valid_token,
                                           .mask_kl = true,
                                           .kl = {.estimator = rlhf::kl_estimator::k3}});
    }};
});

RLHF_BENCH_KERNEL(policy_loss_problem, "policy_loss", "fused", [](const policy_loss_problem& p) {
    return prepared_kernel{.run =
                               [p] {
                                   const auto result = rlhf::policy_loss(
                                       in(p.log_probs, p.batch, p.steps), in(p.old_log_probs, p.batch, p.steps),
                                       in(p.advantages, p.batch, p.steps), in(p.mask, p.batch, p.steps),
                                       out(p.grad_log_probs, p.batch, p.steps), {},
                                       {.clip_low = p.clip_low, .clip_high = p.clip_high});
                                   *p.loss = result.loss;
                               },
                           .scratch_bytes = static_cast<std::size_t>(p.batch) * sizeof(double)};
});

RLHF_BENCH_KERNEL(value_loss_problem, "value_loss", "fused", [](const value_loss_problem& p) {
    return prepared_kernel{.run = [p] {
        const auto result = rlhf::value_loss(in(p.values, p.batch, p.steps), in(p.old_values, p.batch, p.steps),
                                             in(p.returns, p.batch, p.steps), in(p.mask, p.batch, p.steps),
                                             out(p.grad_values, p.batch, p.steps), {}, {.clip_range = p.clip_range});
        *p.loss = result.loss;
    }};
});

RLHF_BENCH_KERNEL(grpo_problem, "grpo", "fused", [](const grpo_problem& p) {
    return prepared_kernel{.run = [p] {
        rlhf::compute_grpo_advantages(in(p.token_rewards, p.batch, p.steps), in(p.mask, p.batch, p.steps),
                                      rlhf::view<std::int64_t, 1>(p.group_ids, {p.batch}),
                                      out(p.advantages, p.batch, p.steps), {.epsilon = p.epsilon});
    }};
});

// Forward (log-probs, entropy, log-sum-exp) then the closed-form backward from the saved
// log-sum-exp: each vocabulary row is read twice in all, nothing [B, T, V]-sized but the gradient.
RLHF_BENCH_KERNEL(logits_problem, "", "fused", [](const logits_problem& p) {
    auto lse = std::make_shared<std::vector<double>>(static_cast<std::size_t>(p.batch * p.steps));
    return prepared_kernel{
        .run =
            [p, lse] {
                const rlhf::view<float, 3> z(p.logits, {p.batch, p.steps, p.vocab});
                const auto y = in(p.tokens, p.batch, p.steps);
                const auto m = in(p.mask, p.batch, p.steps);
                const auto saved = rlhf::make_mut_view(lse->data(), p.batch, p.steps);
                const auto h = p.entropy ? out(p.entropy_out, p.batch, p.steps) : rlhf::mut_view<float>{};
                rlhf::logprobs_from_logits(z, y, m, out(p.logprobs, p.batch, p.steps), h, saved);
                rlhf::logprobs_from_logits_backward(
                    z, y, m, in(p.grad_logprobs, p.batch, p.steps),
                    p.entropy ? in(p.grad_entropy, p.batch, p.steps) : rlhf::view<float>{}, rlhf::view<double>(saved),
                    rlhf::view<float>(h), rlhf::mut_view<float, 3>(p.grad_logits, {p.batch, p.steps, p.vocab}));
            },
        .scratch_bytes = lse->size() * sizeof(double)};
});

RLHF_BENCH_KERNEL(check_problem, "check.finite", "fused", [](const check_problem& p) {
    return prepared_kernel{.run = [p] { rlhf::check_finite("bench", "values", in(p.values, p.batch, p.steps)); }};
});

RLHF_BENCH_KERNEL(check_problem, "check.binary_mask", "fused", [](const check_problem& p) {
    return prepared_kernel{.run = [p] { rlhf::check_binary_mask("bench", "mask", in(p.values, p.batch, p.steps)); }};
});

}  // namespace
