// GPU rows through LibTorch (only with a LibTorch built with CUDA): the library's entry points on
// CUDA tensors (`rlhf_libtorch`: the kernels of rlhf/cuda, registered by including
// rlhf/cuda/libtorch.cuh) beside the peers' formulations as torch ops, in the same run:
//   logits   (N = 16,384 positions, V = 152,064, bf16) TRL `logprobs_from_logits`
//            (log_softmax + gather, log-probs only), verl's log-probs + entropy
//            (log_softmax + gather, softmax, logsumexp − Σ p·z), and the same chunked over 1,024
//            rows as OpenRLHF/verl do to bound memory; forward and forward + backward;
//   losses   the library's torch-op compositions (`torch_ops::policy_loss`, `value_loss`), which
//            follow TRL's/verl's formulas, forward + backward;
//   GAE      `torch_ops::compute_gae`, one small step per column as TRL and verl write it.
// Extra memory: the peak of LibTorch's CUDA allocator during a call beyond its outputs.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cuda_bench.cuh"
#include "rlhf/cuda/libtorch.cuh"

namespace rlhf_cuda_bench {
namespace {

namespace lt = rlhf::libtorch;
using torch::Tensor;

cudaStream_t current_stream() {
    return at::cuda::getCurrentCUDAStream().stream();
}

/// Bytes allocated by LibTorch's CUDA allocator at the peak of `call()` beyond what was
/// allocated before it, minus `outputs` (the bytes every implementation must return).
double extra_bytes(const std::function<void()>& call, double outputs) {
    namespace allocator = c10::cuda::CUDACachingAllocator;
    const int device = at::cuda::current_device();
    torch::cuda::synchronize();
    const auto aggregate = static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    const auto before = allocator::getDeviceStats(device).allocated_bytes[aggregate].current;
    allocator::resetPeakStats(device);
    call();
    torch::cuda::synchronize();
    const auto peak = allocator::getDeviceStats(device).allocated_bytes[aggregate].peak;
    return static_cast<double>(peak - before) - outputs;
}

/// A torch row: `call()` launches on the current stream; `extra` the extra-memory counter.
void add_torch_row(const std::string& name, double bytes, std::function<void()> call, double outputs) {
    add_row(name, [=](benchmark::State& state) {
        const double extra = extra_bytes(call, outputs);
        time_on_device(state, current_stream(), bytes, call);
        state.counters["extra_bytes"] = extra;
    });
}

struct logits_case {
    std::int64_t tokens = 16384, vocab = 152064;
    Tensor logits, ids, grad_lp, grad_h;
    logits_case() {
        const auto on = torch::TensorOptions().device(torch::kCUDA);
        logits = (torch::randn({1, tokens, vocab}, on.dtype(torch::kBFloat16)) * 2).requires_grad_(true);
        ids = torch::randint(vocab, {1, tokens}, on.dtype(torch::kInt64));
        grad_lp = torch::randn({1, tokens}, on.dtype(torch::kFloat32));
        grad_h = torch::full({1, tokens}, -0.01, on.dtype(torch::kFloat32));
    }
};

/// TRL: log_softmax in float32, gather.
Tensor trl_logprobs(const Tensor& z, const Tensor& y) {
    return torch::log_softmax(z.to(torch::kFloat32), -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
}

/// verl: log-probs by log_softmax + gather, entropy as logsumexp(z) − Σ softmax(z)·z.
std::pair<Tensor, Tensor> verl_logprobs_entropy(const Tensor& z, const Tensor& y) {
    const Tensor zf = z.to(torch::kFloat32);
    const Tensor lp = torch::log_softmax(zf, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1);
    const Tensor p = torch::softmax(zf, -1);
    return {lp, torch::logsumexp(zf, -1) - (p * zf).sum(-1)};
}

/// The verl formulation over chunks of 1,024 positions (OpenRLHF/verl's memory bound).
std::pair<Tensor, Tensor> chunked_logprobs_entropy(const Tensor& z, const Tensor& y) {
    std::vector<Tensor> lps, hs;
    for (std::int64_t at = 0; at < z.size(1); at += 1024) {
        const std::int64_t n = std::min<std::int64_t>(1024, z.size(1) - at);
        auto [lp, h] = verl_logprobs_entropy(z.narrow(1, at, n), y.narrow(1, at, n));
        lps.push_back(lp);
        hs.push_back(h);
    }
    return {torch::cat(lps, 1), torch::cat(hs, 1)};
}

void add_logits_rows() {
    static logits_case c;  // 5 GB of bf16 logits, made once
    const std::string size = std::to_string(c.tokens) + "x" + std::to_string(c.vocab) + ".bf16";
    const double z_bytes = static_cast<double>(c.logits.numel()) * 2.0;
    const double bt_out = static_cast<double>(c.tokens) * 4.0;
    const auto backward = [](const Tensor& lp, const Tensor& h) {
        auto loss = (lp * c.grad_lp).sum();
        if (h.defined()) loss = loss + (h * c.grad_h).sum();
        c.logits.mutable_grad().reset();
        loss.backward();
    };
    // Family `logits.forward`: log-probs and entropy (TRL's row: log-probs only); rows' yardstick
    // `device_read` (bench_cuda.cu). `logits.forward_backward`: yardstick `device_copy` (read z,
    // write dz).
    add_torch_row(
        "logits.forward/rlhf_libtorch/" + size, z_bytes,
        [] {
            torch::NoGradGuard no_grad;
            (void)lt::logprobs_from_logits(c.logits, c.ids);
        },
        2 * bt_out);
    add_torch_row(
        "logits.forward/trl_log_softmax_gather/" + size, z_bytes,
        [] {
            torch::NoGradGuard no_grad;
            (void)trl_logprobs(c.logits, c.ids);
        },
        bt_out);
    add_torch_row(
        "logits.forward/verl_torch_ops/" + size, z_bytes,
        [] {
            torch::NoGradGuard no_grad;
            (void)verl_logprobs_entropy(c.logits, c.ids);
        },
        2 * bt_out);
    add_torch_row(
        "logits.forward/chunked_1024/" + size, z_bytes,
        [] {
            torch::NoGradGuard no_grad;
            (void)chunked_logprobs_entropy(c.logits, c.ids);
        },
        2 * bt_out);
    // Forward + backward (the gradient of Σ g·lp + g_H·H w.r.t. the logits).
    const double grad_out = z_bytes;
    add_torch_row(
        "logits.forward_backward/rlhf_libtorch/" + size, 2 * z_bytes,
        [=] {
            const auto r = lt::logprobs_from_logits(c.logits, c.ids);
            backward(r.logprobs, r.entropy);
        },
        grad_out);
    add_torch_row(
        "logits.forward_backward/trl_log_softmax_gather/" + size, 2 * z_bytes,
        [=] { backward(trl_logprobs(c.logits, c.ids), Tensor()); }, grad_out);
    add_torch_row(
        "logits.forward_backward/verl_torch_ops/" + size, 2 * z_bytes,
        [=] {
            const auto [lp, h] = verl_logprobs_entropy(c.logits, c.ids);
            backward(lp, h);
        },
        grad_out);
    add_torch_row(
        "logits.forward_backward/chunked_1024/" + size, 2 * z_bytes,
        [=] {
            const auto [lp, h] = chunked_logprobs_entropy(c.logits, c.ids);
            backward(lp, h);
        },
        grad_out);
}

struct token_case {
    Tensor a, b, c, mask;
    token_case(std::int64_t rows, std::int64_t cols) {
        const auto on = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat32);
        a = torch::randn({rows, cols}, on) * 0.1;
        b = torch::randn({rows, cols}, on) * 0.1;
        c = torch::randn({rows, cols}, on);
        mask = torch::ones({rows, cols}, on.dtype(torch::kBool));
    }
};

void add_token_rows() {
    for (const auto [rows, cols] : {std::pair<std::int64_t, std::int64_t>{256, 2048}, {512, 4096}, {4096, 2048}}) {
        const std::string size = std::to_string(rows) + "x" + std::to_string(cols);
        const double n = static_cast<double>(rows * cols);
        auto data = std::make_shared<token_case>(rows, cols);
        for (const auto masking :
             {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
            const std::string family = std::string("gae.") + std::string(rlhf::to_string(masking));
            const rlhf::gae_options o{.gamma = 1.0, .lambda = 0.95, .masking = masking};
            add_torch_row(
                family + "/libtorch_composed/" + size, 20 * n,
                [=] { (void)lt::torch_ops::compute_gae(data->a, data->b, data->mask, Tensor(), o, nullptr); }, 8 * n);
            add_torch_row(
                family + "/rlhf_libtorch/" + size, 20 * n,
                [=] {
                    (void)lt::cuda_implementation<&lt::torch_ops::compute_gae_with_bootstrap>::registered(
                        data->a, data->b, data->mask, Tensor(), o, nullptr);
                },
                8 * n);
        }
        const auto loss_row = [&](const std::string& family, auto&& loss) {
            add_torch_row(
                family + "/libtorch_composed/" + size, 20 * n,
                [=] {
                    const Tensor x = data->a.detach().requires_grad_(true);
                    loss(x, true).backward();
                },
                4 * n);
            add_torch_row(
                family + "/rlhf_libtorch/" + size, 20 * n,
                [=] {
                    const Tensor x = data->a.detach().requires_grad_(true);
                    loss(x, false).backward();
                },
                4 * n);
        };
        constexpr auto deferred = lt::statistics_readback::deferred;
        loss_row("policy_loss", [data](const Tensor& x, bool composed) {
            return composed ? lt::torch_ops::policy_loss(x, data->b, data->c, data->mask, {}, deferred).loss
                            : lt::policy_loss(x, data->b, data->c, data->mask, {}, deferred).loss;
        });
        loss_row("value_loss", [data](const Tensor& x, bool composed) {
            const rlhf::value_loss_options o{.clip_range = 0.2};
            return composed
                       ? lt::torch_ops::value_loss(x, data->b, data->c, data->mask, o, rlhf::local_reducer{}, deferred)
                             .loss
                       : lt::value_loss(x, data->b, data->c, data->mask, o, rlhf::local_reducer{}, deferred).loss;
        });
    }
}

}  // namespace

void add_torch_rows() {
    add_logits_rows();
    add_token_rows();
}

}  // namespace rlhf_cuda_bench
