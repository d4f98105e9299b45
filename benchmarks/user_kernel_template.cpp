// User kernel slot: copy this file to add your own kernel to rlhf_benchmarks and get its row next
// to ours (fused, libtorch_fused, libtorch_composed, eigen, xtensor), verified against the fused
// kernel and timed against a memcpy of the same bytes, in the same run.
//
// 1. Copy this file anywhere (e.g. my_gae.cpp, or my_gae.cu for CUDA).
// 2. Pick a family and its problem struct from benchmarks/harness.hpp:
//      gae.zero_masked / gae.skip_masked / gae.valid_range   rlhf_bench::gae_problem
//      whiten                                              rlhf_bench::whiten_problem
//      kl_reward                                           rlhf_bench::kl_reward_problem
//      policy_loss                                         rlhf_bench::policy_loss_problem
//      value_loss                                          rlhf_bench::value_loss_problem
//      logprobs / logprobs_entropy                         rlhf_bench::logits_problem
//      grpo                                                rlhf_bench::grpo_problem
//    The struct documents the math, the shapes (host, row-major, float32) and the outputs.
// 3. Write a factory: it receives the problem, does the untimed setup (allocate, copy the inputs
//    to the device) and returns a `prepared_kernel` whose `run` is one timed call. A device kernel
//    must synchronise in `run`, and provide `fetch` to copy its results into the problem's host
//    outputs (the harness calls it once, untimed, to verify them against the fused kernel).
// 4. Register it with RLHF_BENCH_KERNEL(Problem, "family", "impl name", factory) ("" as the family:
//    every family of that problem).
// 5. Build with your file:
//      cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release
//            -DRLHF_BENCH_USER_SOURCES=/path/to/my_gae.cu -DRLHF_BENCH_USER_LIBRARIES=CUDA::cudart
//      (one command line)
//      cmake --build build/bench --target rlhf_benchmarks
//      ./build/bench/benchmarks/rlhf_benchmarks --benchmark_filter='gae.zero_masked/'
//    Rows are named <family>/<impl>/<size>; benchmarks/report.py puts yours in the tables.
//
// This file itself is compiled into rlhf_benchmarks (so that it stays correct): it registers
// "user_template", a plain two-loop CPU GAE for `gae.zero_masked`.

#include <vector>

#include "harness.hpp"

namespace {

using rlhf_bench::gae_problem;
using rlhf_bench::index;
using rlhf_bench::prepared_kernel;

/// TRL's zero-masked GAE, written as plainly as possible: per row, from the last column back.
void plain_gae(const gae_problem& p) {
    const auto g = static_cast<float>(p.gamma);
    const auto gl = static_cast<float>(p.gamma * p.lambda);
    for (index b = 0; b < p.batch; ++b) {
        const index row = b * p.steps;
        float next_value = 0.0f, running = 0.0f;
        for (index t = p.steps - 1; t >= 0; --t) {
            const float m = p.mask[row + t];
            const float value = p.values[row + t] * m;
            const float delta = p.rewards[row + t] * m + g * next_value - value;
            running = delta + gl * running;
            p.advantages[row + t] = running;
            p.returns[row + t] = running + value;
            next_value = value;
        }
    }
}

prepared_kernel make_plain_gae(const gae_problem& p) {
    if (p.masking != rlhf::gae_masking::zero_masked) return {.run = {}, .skip_reason = "zero_masked only"};
    // Untimed setup goes here. For a CUDA kernel, for example:
    //   float *d_rewards, *d_values, *d_mask, *d_adv, *d_ret;    (cudaMalloc each, n = B·T floats)
    //   cudaMemcpy(d_rewards, p.rewards, n * sizeof(float), cudaMemcpyHostToDevice);  (and values, mask)
    //   auto run = [=] { my_gae_kernel<<<grid, block>>>(d_rewards, ..., p.batch, p.steps, p.gamma, p.lambda);
    //                    cudaDeviceSynchronize(); };               <- the device sync belongs in run
    //   auto fetch = [=] { cudaMemcpy(p.advantages, d_adv, n * sizeof(float), cudaMemcpyDeviceToHost);
    //                      cudaMemcpy(p.returns, d_ret, n * sizeof(float), cudaMemcpyDeviceToHost); };
    //   return {.run = run, .fetch = fetch, .writes_problem_outputs = false};
    // (free the device buffers in a std::shared_ptr deleter captured by run.)
    return {.run = [p] { plain_gae(p); }};
}

RLHF_BENCH_KERNEL(gae_problem, "gae.zero_masked", "user_template", make_plain_gae);

}  // namespace
