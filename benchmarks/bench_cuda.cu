// rlhf_cuda_benchmarks: the kernels of rlhf/cuda on raw device buffers, each beside the device
// copy of its bytes (or, for forward-only logits rows, a device read of the logits) measured in
// the same run. Sizes are the goals' (benchmarks/README.md, "GPU"): GAE at 256×2048 and
// 4096×2048, the losses at 512×4096, logits N = 16,384 positions at V = 152,064 in bf16.
// With a CUDA LibTorch, bench_cuda_torch.cu adds the LibTorch entry points and the peers' rows.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda_bench.cuh"
#include "rlhf/cuda/gae.cuh"
#include "rlhf/cuda/logits.cuh"
#include "rlhf/cuda/policy_loss.cuh"
#include "rlhf/cuda/value_loss.cuh"

namespace rlhf_cuda_bench {
namespace {

/// Uploads `host` into a new device buffer.
template <class T>
device_bytes upload(const std::vector<T>& host) {
    device_bytes d(host.size() * sizeof(T));
    ok(cudaMemcpy(d.as(), host.data(), d.bytes(), cudaMemcpyHostToDevice), "upload");
    return d;
}

std::vector<float> normal_values(std::size_t n, std::uint32_t seed, float scale = 1.0F) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> normal(0.0F, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = normal(gen);
    return v;
}

/// Masks with a contiguous valid range per row (a few left-padding positions, right padding to a
/// random length in [T/2, T]), so that every GAE masking applies: as the CPU benchmarks'.
std::vector<float> padded_mask(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
    std::mt19937 gen(seed);
    std::vector<float> m(static_cast<std::size_t>(rows * cols), 0.0F);
    for (std::int64_t b = 0; b < rows; ++b) {
        const std::int64_t begin = std::uniform_int_distribution<std::int64_t>(0, 3)(gen) % cols;
        const std::int64_t end =
            std::uniform_int_distribution<std::int64_t>(std::max<std::int64_t>(cols / 2, begin + 1), cols)(gen);
        for (std::int64_t t = begin; t < end; ++t) m[static_cast<std::size_t>(b * cols + t)] = 1.0F;
    }
    return m;
}

std::string shape(std::int64_t rows, std::int64_t cols) {
    return std::to_string(rows) + "x" + std::to_string(cols);
}

void add_gae_rows() {
    for (const auto [rows, cols] : {std::pair<std::int64_t, std::int64_t>{256, 2048}, {4096, 2048}}) {
        const auto n = static_cast<std::size_t>(rows * cols);
        for (const auto masking :
             {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
            const std::string family = "gae." + std::string(rlhf::to_string(masking));
            add_device_copy_row(family, shape(rows, cols), 20 * n);  // rewards, values, mask in; A, R out
            add_row(family + "/cuda/" + shape(rows, cols), [=](benchmark::State& state) {
                const auto r = upload(normal_values(n, 1)), v = upload(normal_values(n, 2)),
                           m = upload(padded_mask(rows, cols, 3));
                const device_bytes a(n * sizeof(float)), g(n * sizeof(float));
                const rlhf::extents_t<2> e{rows, cols};
                const rlhf::gae_options o{.gamma = 1.0, .lambda = 0.95, .masking = masking};
                time_on_device(state, nullptr, 20.0 * static_cast<double>(n), [&] {
                    rlhf::cuda::compute_gae(rlhf::view<float>(r.as<float>(), e), rlhf::view<float>(v.as<float>(), e),
                                            rlhf::view<float>(m.as<float>(), e),
                                            rlhf::mut_view<float>(a.as<float>(), e),
                                            rlhf::mut_view<float>(g.as<float>(), e), o, nullptr);
                });
            });
        }
    }
}

/// Policy and value loss, forward + backward with the statistics: log-probs (values), old
/// log-probs (old values), advantages (returns) and the mask in, the gradient out (16 + 4 bytes
/// per token; the mask as float32, as in the CPU benchmarks).
void add_loss_rows() {
    for (const auto [rows, cols] : {std::pair<std::int64_t, std::int64_t>{256, 2048}, {512, 4096}}) {
        const auto n = static_cast<std::size_t>(rows * cols);
        for (const std::string family : {"policy_loss", "value_loss"}) {
            add_device_copy_row(family, shape(rows, cols), 20 * n);
            add_row(family + "/cuda/" + shape(rows, cols), [=](benchmark::State& state) {
                const auto x = upload(normal_values(n, 4, 0.1F)), old = upload(normal_values(n, 5, 0.1F)),
                           y = upload(normal_values(n, 6)), m = upload(padded_mask(rows, cols, 7));
                const device_bytes grad(n * sizeof(float)), result(16 * sizeof(double));
                const rlhf::extents_t<2> e{rows, cols};
                const auto in = [&](const device_bytes& d) { return rlhf::view<float>(d.as<float>(), e); };
                const rlhf::mut_view<float> g(grad.as<float>(), e);
                if (family == "policy_loss") {
                    const device_bytes ws(rlhf::cuda::policy_loss_workspace_bytes(rows, cols));
                    time_on_device(state, nullptr, 20.0 * static_cast<double>(n), [&] {
                        rlhf::cuda::policy_loss(in(x), in(old), in(y), in(m), g, rlhf::mut_view<float>{}, {},
                                                result.as<double>(), ws.as(), nullptr);
                    });
                } else {
                    const device_bytes ws(rlhf::cuda::value_loss_workspace_bytes(rows, cols));
                    time_on_device(state, nullptr, 20.0 * static_cast<double>(n), [&] {
                        rlhf::cuda::value_loss(in(x), in(old), in(y), in(m), g, rlhf::mut_view<float>{},
                                               {.clip_range = 0.2}, result.as<double>(), ws.as(), nullptr);
                    });
                }
            });
        }
    }
}

/// Sums `n` bf16 values (each read once, 16-byte loads) into `out`: the read yardstick of the
/// forward logits rows.
__global__ void read_all(const uint4* data, std::int64_t vectors, float* out) {
    float sum = 0.0F;
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < vectors;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        const uint4 v = data[i];
        sum += __uint_as_float(v.x) + __uint_as_float(v.y) + __uint_as_float(v.z) + __uint_as_float(v.w);
    }
    if (sum == 12345.0F) *out = sum;  // keeps the loads; never true for the benchmark's data
}

constexpr std::int64_t logits_positions = 16384, logits_vocab = 152064;

/// Log-probs and entropy of bf16 logits: forward (log-probs, entropy, log-sum-exp) and
/// forward + backward (the gradient of Σ g·lp + g_H·H, written in bf16).
void add_logits_rows() {
    const std::string size = shape(logits_positions, logits_vocab) + ".bf16";
    const auto elements = static_cast<std::size_t>(logits_positions * logits_vocab);
    const double z_bytes = 2.0 * static_cast<double>(elements);
    add_row("logits.forward/cuda/" + size, [=](benchmark::State& state) {
        const device_bytes z(elements * 2), ids(logits_positions * 8), lp(logits_positions * 4),
            h(logits_positions * 4), lse(logits_positions * 8);
        ok(cudaMemset(z.as(), 0, z.bytes()), "cudaMemset");
        ok(cudaMemset(ids.as(), 0, ids.bytes()), "cudaMemset");
        const rlhf::view<__nv_bfloat16, 3> logits(z.as<__nv_bfloat16>(), {1, logits_positions, logits_vocab});
        const rlhf::extents_t<2> bt{1, logits_positions};
        time_on_device(state, nullptr, z_bytes, [&] {
            rlhf::cuda::logprobs_from_logits(
                logits, rlhf::view<std::int64_t>(ids.as<std::int64_t>(), bt), rlhf::mut_view<float>(lp.as<float>(), bt),
                rlhf::mut_view<float>(h.as<float>(), bt), rlhf::mut_view<double>(lse.as<double>(), bt), {}, nullptr);
        });
    });
    add_row("logits.forward_backward/cuda/" + size, [=](benchmark::State& state) {
        const device_bytes z(elements * 2), dz(elements * 2), ids(logits_positions * 8), lp(logits_positions * 4),
            h(logits_positions * 4), lse(logits_positions * 8), g(logits_positions * 4);
        ok(cudaMemset(z.as(), 0, z.bytes()), "cudaMemset");
        ok(cudaMemset(ids.as(), 0, ids.bytes()), "cudaMemset");
        ok(cudaMemset(g.as(), 0, g.bytes()), "cudaMemset");
        const rlhf::extents_t<3> btv{1, logits_positions, logits_vocab};
        const rlhf::view<__nv_bfloat16, 3> logits(z.as<__nv_bfloat16>(), btv);
        const rlhf::extents_t<2> bt{1, logits_positions};
        const rlhf::view<std::int64_t> tokens(ids.as<std::int64_t>(), bt);
        time_on_device(state, nullptr, 2.0 * z_bytes, [&] {
            rlhf::cuda::logprobs_from_logits(logits, tokens, rlhf::mut_view<float>(lp.as<float>(), bt),
                                             rlhf::mut_view<float>(h.as<float>(), bt),
                                             rlhf::mut_view<double>(lse.as<double>(), bt), {}, nullptr);
            rlhf::cuda::logprobs_from_logits_backward(
                logits, tokens, rlhf::view<float>(g.as<float>(), bt), rlhf::view<float>(g.as<float>(), bt),
                rlhf::view<double>(lse.as<double>(), bt), rlhf::view<float>(h.as<float>(), bt),
                rlhf::mut_view<__nv_bfloat16, 3>(dz.as<__nv_bfloat16>(), btv), {}, nullptr);
        });
    });
}

void add_logits_yardsticks() {
    const std::string size = shape(logits_positions, logits_vocab) + ".bf16";
    const std::size_t bytes = static_cast<std::size_t>(logits_positions * logits_vocab) * 2;
    add_device_copy_row("logits.forward_backward", size, bytes);  // read z, write dz
    add_row("logits.forward/device_read/" + size, [=](benchmark::State& state) {
        const device_bytes z(bytes), out(sizeof(float));
        ok(cudaMemset(z.as(), 0, bytes), "cudaMemset");
        int sms = 0;
        ok(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "attribute");
        time_on_device(state, nullptr, static_cast<double>(bytes), [&] {
            read_all<<<static_cast<unsigned>(sms) * 8U, 512>>>(z.as<const uint4>(),
                                                               static_cast<std::int64_t>(bytes / 16), out.as<float>());
        });
    });
}

}  // namespace

void add_kernel_rows() {
    add_gae_rows();
    add_loss_rows();
    add_logits_yardsticks();
    add_logits_rows();
}

}  // namespace rlhf_cuda_bench

int main(int argc, char** argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::fputs("rlhf_cuda_benchmarks: no CUDA device\n", stderr);
        return 1;
    }
    rlhf_cuda_bench::add_kernel_rows();
#if defined(RLHF_CUDA_BENCH_TORCH)
    rlhf_cuda_bench::add_torch_rows();
#endif
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
