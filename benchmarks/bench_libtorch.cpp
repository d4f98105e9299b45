// LibTorch rows, one translation unit (LibTorch headers are slow to compile):
//   libtorch_fused     the library's LibTorch entry points (the fused kernels on tensor views,
//                      autograd Functions with the closed-form backward where differentiable); CPU.
//   libtorch_composed  the same math composed of torch ops, differentiated by autograd: the
//                      library's `*_composed` functions where they exist, else written here the
//                      way the peers write them (TRL's GAE loop, TRL's masked_whiten, ...).
//   libtorch_log_softmax_gather  `log_softmax(z).gather(y)` with autograd (family `logprobs`).
// The composed rows run on the device named by RLHF_BENCH_DEVICE (default cpu; e.g. cuda, cuda:1),
// synchronising it at the end of every call. LibTorch runs on one thread (torch::set_num_threads(1)).
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/autograd.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/version.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "harness.hpp"
#include "rlhf/libtorch.hpp"

namespace {

using namespace rlhf_bench;
using torch::Tensor;

const torch::Device& device() {
    static const torch::Device chosen = [] {
        const char* name = std::getenv("RLHF_BENCH_DEVICE");
        return torch::Device(name != nullptr && *name != '\0' ? name : "cpu");
    }();
    return chosen;
}

[[maybe_unused]] const bool configured = register_setup([] {
    at::set_num_threads(1);
    at::set_num_interop_threads(1);
    add_context("torch_version", TORCH_VERSION);
    add_context("torch_threads", std::to_string(at::get_num_threads()));
    add_context("torch_device", device().str());
    // "CPU capability usage: AVX2": the ISA level of LibTorch's CPU kernels, to set beside ours.
    const std::string config = at::show_config();
    const std::string key = "CPU capability usage: ";
    if (const auto at = config.find(key); at != std::string::npos)
        add_context("torch_cpu_capability", config.substr(at + key.size(), config.find('\n', at) - at - key.size()));
});

void sync() {
    if (device().is_cuda()) torch::cuda::synchronize();
}

/// A host buffer as a CPU tensor (no copy; never written through).
Tensor host(const void* data, std::vector<std::int64_t> sizes, torch::Dtype dtype = torch::kFloat32) {
    return torch::from_blob(const_cast<void*>(data), sizes, torch::TensorOptions().dtype(dtype));
}

/// The same on the benchmark device (a copy when it is not the CPU; untimed, in the factory).
Tensor on_device(const void* data, std::vector<std::int64_t> sizes, torch::Dtype dtype = torch::kFloat32) {
    return host(data, std::move(sizes), dtype).to(device());
}

void copy_out(const Tensor& tensor, float* target) {
    const Tensor cpu = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    std::memcpy(target, cpu.data_ptr<float>(), static_cast<std::size_t>(cpu.numel()) * sizeof(float));
}

prepared_kernel cpu_only() {
    return {.run = {}, .skip_reason = "the fused LibTorch entry points take CPU tensors"};
}

/// Outputs a torch row keeps between `run` and `fetch`.
struct kept {
    Tensor a, b, c;
    double loss = 0.0;
};

// -- GAE -----------------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(gae_problem, "", "libtorch_fused", [](const gae_problem& p) {
    if (!device().is_cpu()) return cpu_only();
    const Tensor r = host(p.rewards, {p.batch, p.steps}), v = host(p.values, {p.batch, p.steps});
    const Tensor m = host(p.mask, {p.batch, p.steps});
    auto out = std::make_shared<kept>();
    return prepared_kernel{.run =
                               [=] {
                                   auto result = rlhf::compute_gae(
                                       r, v, m, {.gamma = p.gamma, .lambda = p.lambda, .masking = p.masking});
                                   out->a = result.advantages;
                                   out->b = result.returns;
                               },
                           .fetch =
                               [=] {
                                   copy_out(out->a, p.advantages);
                                   copy_out(out->b, p.returns);
                               },
                           .release = [=] { *out = kept{}; },
                           .writes_problem_outputs = false};
});

/// GAE as the peers write it in PyTorch: a reverse loop over the columns (TRL v0.11
/// `compute_advantages`, verl `compute_gae_advantage_return` for skip_masked; valid_range zeroes
/// the recursion outside the mask, as DeepSpeed-Chat's loop over the response range does).
RLHF_BENCH_KERNEL(gae_problem, "", "libtorch_composed", [](const gae_problem& p) {
    const Tensor r = on_device(p.rewards, {p.batch, p.steps}), v = on_device(p.values, {p.batch, p.steps});
    const Tensor m = on_device(p.mask, {p.batch, p.steps});
    auto out = std::make_shared<kept>();
    return prepared_kernel{.run =
                               [=] {
                                   const double gamma = p.gamma, gl = p.gamma * p.lambda;
                                   std::vector<Tensor> columns(static_cast<std::size_t>(p.steps));
                                   Tensor next_value = torch::zeros({p.batch}, r.options());
                                   Tensor gae = torch::zeros({p.batch}, r.options());
                                   if (p.masking == rlhf::gae_masking::skip_masked) {
                                       for (std::int64_t t = p.steps - 1; t >= 0; --t) {
                                           const Tensor mt = m.select(1, t), vt = v.select(1, t);
                                           const Tensor delta = r.select(1, t) + gamma * next_value - vt;
                                           const Tensor candidate = delta + gl * gae;
                                           next_value = vt * mt + (1.0 - mt) * next_value;
                                           gae = candidate * mt + (1.0 - mt) * gae;
                                           columns[static_cast<std::size_t>(t)] = gae;
                                       }
                                       out->a = torch::stack(columns, 1);
                                       out->b = out->a + v;
                                   } else {
                                       const Tensor rm = r * m, vm = v * m;
                                       const bool range = p.masking == rlhf::gae_masking::valid_range;
                                       for (std::int64_t t = p.steps - 1; t >= 0; --t) {
                                           const Tensor vt = vm.select(1, t);
                                           const Tensor delta = rm.select(1, t) + gamma * next_value - vt;
                                           gae = delta + gl * gae;
                                           if (range) gae = gae * m.select(1, t);
                                           columns[static_cast<std::size_t>(t)] = gae;
                                           next_value = vt;
                                       }
                                       out->a = torch::stack(columns, 1);
                                       out->b = out->a + vm;
                                   }
                                   sync();
                               },
                           .fetch =
                               [=] {
                                   copy_out(out->a, p.advantages);
                                   copy_out(out->b, p.returns);
                               },
                           .release = [=] { *out = kept{}; },
                           .writes_problem_outputs = false};
});

// -- whitening -----------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(whiten_problem, "whiten", "libtorch_fused", [](const whiten_problem& p) {
    if (!device().is_cpu()) return cpu_only();
    const Tensor x = host(p.values, {p.batch, p.steps}), m = host(p.mask, {p.batch, p.steps});
    auto out = std::make_shared<kept>();
    return prepared_kernel{.run = [=] { out->a = rlhf::masked_whiten(x, m, {.epsilon = p.epsilon}); },
                           .fetch = [=] { copy_out(out->a, p.out); },
                           .release = [=] { *out = kept{}; },
                           .writes_problem_outputs = false};
});

/// TRL `masked_whiten` (trl/core.py): masked mean, masked variance with Bessel's correction.
RLHF_BENCH_KERNEL(whiten_problem, "whiten", "libtorch_composed", [](const whiten_problem& p) {
    const Tensor x = on_device(p.values, {p.batch, p.steps}), m = on_device(p.mask, {p.batch, p.steps});
    auto out = std::make_shared<kept>();
    return prepared_kernel{.run =
                               [=] {
                                   const Tensor n = m.sum();
                                   const Tensor mean = (x * m).sum() / n;
                                   const Tensor centred = x - mean;
                                   const Tensor variance = (centred * centred * m).sum() / n * (n / (n - 1));
                                   out->a = centred * torch::rsqrt(variance + p.epsilon);
                                   sync();
                               },
                           .fetch = [=] { copy_out(out->a, p.out); },
                           .release = [=] { *out = kept{}; },
                           .writes_problem_outputs = false};
});

// -- KL estimator and reward shaping -------------------------------------------------------------

rlhf::reward_shaping_options shaping_options(const kl_reward_problem& p) {
    return {.kl_coef = p.kl_coef,
            .slot = rlhf::reward_slot::last_valid_token,
            .mask_kl = true,
            .kl = {.estimator = rlhf::kl_estimator::k3}};
}

RLHF_BENCH_KERNEL(kl_reward_problem, "kl_reward", "libtorch_fused", [](const kl_reward_problem& p) {
    if (!device().is_cpu()) return cpu_only();
    const Tensor lp = host(p.log_probs, {p.batch, p.steps}), ref = host(p.ref_log_probs, {p.batch, p.steps});
    const Tensor m = host(p.mask, {p.batch, p.steps}), scores = host(p.scores, {p.batch});
    auto out = std::make_shared<kept>();
    return prepared_kernel{
        .run = [=] { out->a = rlhf::shape_rewards_from_logprobs(lp, ref, m, scores, shaping_options(p)); },
        .fetch = [=] { copy_out(out->a, p.rewards); },
        .release = [=] { *out = kept{}; },
        .writes_problem_outputs = false};
});

/// verl's low_var_kl (k3) times the mask, the score added on the last valid token (scatter_add).
RLHF_BENCH_KERNEL(kl_reward_problem, "kl_reward", "libtorch_composed", [](const kl_reward_problem& p) {
    const Tensor lp = on_device(p.log_probs, {p.batch, p.steps}), ref = on_device(p.ref_log_probs, {p.batch, p.steps});
    const Tensor m = on_device(p.mask, {p.batch, p.steps}), scores = on_device(p.scores, {p.batch});
    auto out = std::make_shared<kept>();
    return prepared_kernel{.run =
                               [=] {
                                   const Tensor d = ref - lp;
                                   const Tensor kl = d.exp() - d - 1.0;
                                   Tensor rewards = -p.kl_coef * kl * m;
                                   const Tensor positions = torch::arange(p.steps, m.options());
                                   const Tensor last = (m * positions).argmax(-1, true);
                                   rewards.scatter_add_(1, last, scores.unsqueeze(1));
                                   out->a = rewards;
                                   sync();
                               },
                           .fetch = [=] { copy_out(out->a, p.rewards); },
                           .release = [=] { *out = kept{}; },
                           .writes_problem_outputs = false};
});

// -- policy and value losses ----------------------------------------------------------------------

template <class Loss>
prepared_kernel loss_row(const float* differentiable, const float* a, const float* b, const float* mask,
                         rlhf_bench::index batch, rlhf_bench::index steps, float* grad, double* loss, bool cpu,
                         Loss compute) {
    if (cpu && !device().is_cpu()) return cpu_only();
    const auto make = [&](const float* data) {
        return cpu ? host(data, {batch, steps}) : on_device(data, {batch, steps});
    };
    Tensor x = make(differentiable).requires_grad_(true);
    const Tensor ta = make(a), tb = make(b), m = make(mask);
    auto out = std::make_shared<kept>();
    return prepared_kernel{.run =
                               [=]() mutable {
                                   x.mutable_grad().reset();  // zero_grad(set_to_none=True)
                                   const Tensor value = compute(x, ta, tb, m);
                                   value.backward();
                                   out->a = value;
                                   sync();
                               },
                           .fetch =
                               [=] {
                                   copy_out(x.grad(), grad);
                                   *loss = out->a.item<double>();
                               },
                           .release =
                               [=] {
                                   *out = kept{};
                                   x.mutable_grad().reset();
                               },
                           .writes_problem_outputs = false};
}

RLHF_BENCH_KERNEL(policy_loss_problem, "policy_loss", "libtorch_fused", [](const policy_loss_problem& p) {
    const rlhf::policy_loss_options options{.clip_low = p.clip_low, .clip_high = p.clip_high};
    return loss_row(p.log_probs, p.old_log_probs, p.advantages, p.mask, p.batch, p.steps, p.grad_log_probs, p.loss,
                    true, [options](const Tensor& lp, const Tensor& old, const Tensor& adv, const Tensor& m) {
                        return rlhf::libtorch::cpu::policy_loss(lp, old, adv, m, options).loss;
                    });
});

RLHF_BENCH_KERNEL(policy_loss_problem, "policy_loss", "libtorch_composed", [](const policy_loss_problem& p) {
    const rlhf::policy_loss_options options{.clip_low = p.clip_low, .clip_high = p.clip_high};
    return loss_row(p.log_probs, p.old_log_probs, p.advantages, p.mask, p.batch, p.steps, p.grad_log_probs, p.loss,
                    false, [options](const Tensor& lp, const Tensor& old, const Tensor& adv, const Tensor& m) {
                        return rlhf::libtorch::torch_ops::policy_loss(lp, old, adv, m, options).loss;
                    });
});

RLHF_BENCH_KERNEL(value_loss_problem, "value_loss", "libtorch_fused", [](const value_loss_problem& p) {
    const rlhf::value_loss_options options{.clip_range = p.clip_range};
    return loss_row(p.values, p.old_values, p.returns, p.mask, p.batch, p.steps, p.grad_values, p.loss, true,
                    [options](const Tensor& v, const Tensor& old, const Tensor& ret, const Tensor& m) {
                        return rlhf::libtorch::value_loss(v, old, ret, m, options).loss;
                    });
});

RLHF_BENCH_KERNEL(value_loss_problem, "value_loss", "libtorch_composed", [](const value_loss_problem& p) {
    const rlhf::value_loss_options options{.clip_range = p.clip_range};
    return loss_row(p.values, p.old_values, p.returns, p.mask, p.batch, p.steps, p.grad_values, p.loss, false,
                    [options](const Tensor& v, const Tensor& old, const Tensor& ret, const Tensor& m) {
                        return rlhf::libtorch::torch_ops::value_loss(v, old, ret, m, options).loss;
                    });
});

// -- log-probs and entropy from logits -------------------------------------------------------------

/// Forward, then autograd backward with the problem's upstream gradients.
template <class Forward>
prepared_kernel logits_row(const logits_problem& p, bool cpu, Forward forward) {
    if (cpu && !device().is_cpu()) return cpu_only();
    const std::vector<std::int64_t> bt{p.batch, p.steps};
    const auto make = [&](const void* data, std::vector<std::int64_t> sizes, torch::Dtype dtype) {
        return cpu ? host(data, std::move(sizes), dtype) : on_device(data, std::move(sizes), dtype);
    };
    Tensor z = make(p.logits, {p.batch, p.steps, p.vocab}, torch::kFloat32).requires_grad_(true);
    const Tensor y = make(p.tokens, bt, torch::kInt64), m = make(p.mask, bt, torch::kFloat32);
    const Tensor g_lp = make(p.grad_logprobs, bt, torch::kFloat32);
    const Tensor g_h = p.entropy ? make(p.grad_entropy, bt, torch::kFloat32) : Tensor();
    auto out = std::make_shared<kept>();
    return prepared_kernel{.run =
                               [=]() mutable {
                                   z.mutable_grad().reset();
                                   const rlhf::libtorch::logprobs_result r = forward(z, y, m);
                                   if (p.entropy)
                                       torch::autograd::backward({r.logprobs, r.entropy}, {g_lp, g_h});
                                   else
                                       torch::autograd::backward({r.logprobs}, {g_lp});
                                   out->a = r.logprobs;
                                   out->b = r.entropy;
                                   sync();
                               },
                           .fetch =
                               [=] {
                                   copy_out(out->a, p.logprobs);
                                   if (p.entropy) copy_out(out->b, p.entropy_out);
                                   copy_out(z.grad(), p.grad_logits);
                               },
                           .release =
                               [=] {
                                   *out = kept{};
                                   z.mutable_grad().reset();
                               },
                           .writes_problem_outputs = false};
}

RLHF_BENCH_KERNEL(logits_problem, "", "libtorch_fused", [](const logits_problem& p) {
    return logits_row(p, true, [](const Tensor& z, const Tensor& y, const Tensor& m) {
        return rlhf::libtorch::logprobs_from_logits(z, y, m);
    });
});

RLHF_BENCH_KERNEL(logits_problem, "logprobs_entropy", "libtorch_composed", [](const logits_problem& p) {
    return logits_row(p, false, [](const Tensor& z, const Tensor& y, const Tensor& m) {
        return rlhf::libtorch::torch_ops::logprobs_from_logits(z, y, m);
    });
});

/// The usual PyTorch log-probs (TRL `logprobs_from_logits`, DeepSpeed-Chat `gather_log_probs`):
/// the [B, T, V] log-softmax, a gather, the mask applied to the result.
RLHF_BENCH_KERNEL(logits_problem, "logprobs", "libtorch_log_softmax_gather", [](const logits_problem& p) {
    return logits_row(p, false, [](const Tensor& z, const Tensor& y, const Tensor& m) {
        const Tensor lp = torch::log_softmax(z, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1) * m;
        return rlhf::libtorch::logprobs_result{lp, Tensor()};
    });
});

// -- GRPO ------------------------------------------------------------------------------------------

RLHF_BENCH_KERNEL(grpo_problem, "grpo", "libtorch_fused", [](const grpo_problem& p) {
    if (!device().is_cpu()) return cpu_only();
    const Tensor r = host(p.token_rewards, {p.batch, p.steps}), m = host(p.mask, {p.batch, p.steps});
    const Tensor ids = host(p.group_ids, {p.batch}, torch::kInt64);
    auto out = std::make_shared<kept>();
    return prepared_kernel{.run = [=] { out->a = rlhf::compute_grpo_advantages(r, m, ids, {.epsilon = p.epsilon}); },
                           .fetch = [=] { copy_out(out->a, p.advantages); },
                           .release = [=] { *out = kept{}; },
                           .writes_problem_outputs = false};
});

/// TRL's GRPO layout: scores viewed as [B / G, G], group mean and unbiased std, broadcast back.
RLHF_BENCH_KERNEL(grpo_problem, "grpo", "libtorch_composed", [](const grpo_problem& p) {
    const Tensor r = on_device(p.token_rewards, {p.batch, p.steps}), m = on_device(p.mask, {p.batch, p.steps});
    auto out = std::make_shared<kept>();
    return prepared_kernel{
        .run =
            [=] {
                const Tensor scores = r.sum(-1);
                const Tensor grouped = scores.view({-1, p.group_size});
                const Tensor mean = grouped.mean(1, true);
                const Tensor centred = grouped - mean;
                const Tensor std = ((centred * centred).sum(1, true) / static_cast<double>(p.group_size - 1)).sqrt();
                const Tensor advantages = (centred / (std + p.epsilon)).reshape({-1, 1});
                out->a = advantages * m;
                sync();
            },
        .fetch = [=] { copy_out(out->a, p.advantages); },
        .release = [=] { *out = kept{}; },
        .writes_problem_outputs = false};
});

}  // namespace
