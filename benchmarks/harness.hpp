#pragma once
/// @file
/// The benchmark harness: the problem of each benchmark family, the registry of implementations
/// (ours, the baselines and a user's own kernel take the same path), setup hooks and the
/// allocation counter behind the peak-memory figures.
///
/// A family (`gae.zero_masked`, `policy_loss`, ...) is one computation on one `Problem` type, at a
/// list of sizes. For every size the harness registers a `memcpy` row that copies the family's
/// input + output bytes, then one row per registered implementation. An implementation is a
/// factory: given the problem (host inputs, host output buffers) it does its untimed setup and
/// returns a `prepared_kernel` whose `run` is timed. Before timing, the harness calls `run` once,
/// copies the results back with `fetch` (for device kernels) and compares them with the fused
/// kernel's; a mismatch turns the row into an error, so a row never times a wrong answer.
///
/// Everything is float32, row-major, contiguous; masks are float32 in {0, 1}.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <typeindex>
#include <utility>

#include "rlhf/core/options.hpp"

namespace rlhf_bench {

using index = std::int64_t;

/// GAE over `[B, T]` rows (`rlhf::compute_gae`); families `gae.zero_masked`, `gae.skip_masked`,
/// `gae.valid_range` (the masking is in `masking`).
struct gae_problem {
    index batch = 0, steps = 0;
    rlhf::gae_masking masking = rlhf::gae_masking::zero_masked;
    double gamma = 1.0, lambda = 0.95;
    const float* rewards = nullptr;  ///< [B, T]
    const float* values = nullptr;   ///< [B, T]
    const float* mask = nullptr;     ///< [B, T], contiguous valid range per row (left and right padding)
    float* advantages = nullptr;     ///< [B, T] output
    float* returns = nullptr;        ///< [B, T] output
};

/// Masked whitening over the batch (`rlhf::masked_whiten` defaults, TRL `masked_whiten`):
/// `out = (x − mean) · rsqrt(var + ε)`, unbiased variance of the valid elements, written everywhere.
struct whiten_problem {
    index batch = 0, steps = 0;
    double epsilon = 1e-8;
    const float* values = nullptr;  ///< [B, T]
    const float* mask = nullptr;    ///< [B, T]
    float* out = nullptr;           ///< [B, T] output
};

/// k3 KL estimator and reward shaping (`rlhf::shape_rewards_from_logprobs`):
/// `rewards = −kl_coef · k3(lp − ref) · mask`, plus `scores[b]` on the last valid token of row b.
struct kl_reward_problem {
    index batch = 0, steps = 0;
    double kl_coef = 0.05;
    const float* log_probs = nullptr;      ///< [B, T]
    const float* ref_log_probs = nullptr;  ///< [B, T]
    const float* mask = nullptr;           ///< [B, T]
    const float* scores = nullptr;         ///< [B]
    float* rewards = nullptr;              ///< [B, T] output
};

/// Clipped PPO policy loss, forward + backward (`rlhf::policy_loss`, token-mean):
/// `loss = Σ m·(−min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A)) / Σ m`, `ρ = exp(lp − old)`, and its
/// gradient w.r.t. `log_probs`. Ours and the baselines also compute the usual statistics.
struct policy_loss_problem {
    index batch = 0, steps = 0;
    double clip_low = 0.2, clip_high = 0.2;
    const float* log_probs = nullptr;      ///< [B, T]
    const float* old_log_probs = nullptr;  ///< [B, T]
    const float* advantages = nullptr;     ///< [B, T]
    const float* mask = nullptr;           ///< [B, T]
    float* grad_log_probs = nullptr;       ///< [B, T] output: d loss / d log_probs
    double* loss = nullptr;                ///< output
};

/// Clipped value loss, forward + backward (`rlhf::value_loss`, token-mean):
/// `loss = ½ Σ m·max((V − R)², (clamp(V, V_old ± c) − R)²) / Σ m` and its gradient w.r.t. `values`.
struct value_loss_problem {
    index batch = 0, steps = 0;
    double clip_range = 0.2;
    const float* values = nullptr;      ///< [B, T]
    const float* old_values = nullptr;  ///< [B, T]
    const float* returns = nullptr;     ///< [B, T]
    const float* mask = nullptr;        ///< [B, T]
    float* grad_values = nullptr;       ///< [B, T] output: d loss / d values
    double* loss = nullptr;             ///< output
};

/// Token log-probs (and entropy) from logits, forward + backward (`rlhf::logprobs_from_logits` and
/// `rlhf::logprobs_from_logits_backward`). Family `logprobs`: `entropy` false, the backward of
/// `Σ g_lp·lp`; family `logprobs_entropy`: the backward of `Σ g_lp·lp + g_H·H`. Masked positions
/// get 0 outputs and a 0 gradient row.
struct logits_problem {
    index batch = 0, steps = 0, vocab = 0;
    bool entropy = false;
    const float* logits = nullptr;         ///< [B, T, V]
    const std::int64_t* tokens = nullptr;  ///< [B, T] in [0, V)
    const float* mask = nullptr;           ///< [B, T]
    const float* grad_logprobs = nullptr;  ///< [B, T] upstream gradient of the log-probs
    const float* grad_entropy = nullptr;   ///< [B, T] upstream gradient of the entropy (entropy only)
    float* logprobs = nullptr;             ///< [B, T] output
    float* entropy_out = nullptr;          ///< [B, T] output (entropy only)
    float* grad_logits = nullptr;          ///< [B, T, V] output
};

/// GRPO advantages (`rlhf::compute_grpo_advantages`, verl defaults): `s_b = Σ_t token_rewards`,
/// `A = (s − mean_g) / (std_g + ε) · mask` over groups of `group_size` consecutive rows
/// (`group_ids[b] = b / group_size`; the fused kernel takes any ids, the baselines use the
/// TRL `view(-1, G)` layout).
struct grpo_problem {
    index batch = 0, steps = 0, group_size = 8;
    double epsilon = 1e-6;
    const float* token_rewards = nullptr;     ///< [B, T]
    const float* mask = nullptr;              ///< [B, T]
    const std::int64_t* group_ids = nullptr;  ///< [B]
    float* advantages = nullptr;              ///< [B, T] output
};

/// The input checks every kernel starts with, alone (families `check.finite` and
/// `check.binary_mask`, on the mask): no output.
struct check_problem {
    index batch = 0, steps = 0;
    const float* values = nullptr;  ///< [B, T]
};

/// What an implementation's factory returns.
struct prepared_kernel {
    /// One complete call, timed. A device kernel synchronises the device before it returns
    /// (e.g. `cudaDeviceSynchronize()`), or the time is that of the launch only.
    std::function<void()> run;
    /// Untimed: copies the results of the last `run` into the problem's host outputs. Leave it
    /// empty when `run` writes them itself (a CPU kernel).
    std::function<void()> fetch{};
    /// Untimed: drops what the last `run` allocated and keeps (its outputs), so that the memory
    /// probe of the next call starts from the inputs alone. Leave it empty when `run` keeps nothing.
    std::function<void()> release{};
    /// Memory accounting: true when `run` writes into the problem's output buffers (the harness
    /// counts them as live); false when it allocates its own outputs (LibTorch ops).
    bool writes_problem_outputs = true;
    /// Bytes of scratch the prepared state holds for `run` (allocated in the factory, so the
    /// allocation counter does not see them during the call).
    std::size_t scratch_bytes = 0;
    /// When `run` is empty: why the row is skipped (an unsupported size or option, no device).
    std::string skip_reason{};
};

/// Optional per-implementation settings.
struct kernel_options {
    /// Minimum measuring time of each row, seconds; 0 takes the harness default. Slow baselines
    /// use a smaller one so that the default run stays short.
    double min_time = 0.0;
    /// Rows of more than this many tokens (B·T) are not registered; 0: no limit.
    index max_tokens = 0;
};

template <class Problem>
using kernel_factory = std::function<prepared_kernel(const Problem&)>;

namespace detail {
using erased_factory = std::function<prepared_kernel(const void*)>;
bool add_kernel(std::type_index problem, std::string family, std::string impl, erased_factory factory,
                kernel_options options);
}  // namespace detail

/// Registers an implementation `impl` of `family` ("" registers it for every family whose problem
/// is `Problem`). Call before `main` runs the benchmarks, e.g. through `RLHF_BENCH_KERNEL`.
/// Returns true so that it can initialise a static.
template <class Problem>
bool register_kernel(std::string family, std::string impl, kernel_factory<Problem> factory,
                     kernel_options options = {}) {
    return detail::add_kernel(
        std::type_index(typeid(Problem)), std::move(family), std::move(impl),
        [factory = std::move(factory)](const void* problem) { return factory(*static_cast<const Problem*>(problem)); },
        options);
}

/// Runs `hook` at the start of `main`, before any benchmark (thread counts, device setup).
bool register_setup(std::function<void()> hook);

/// Adds a key/value pair to the "context" of the JSON output and the console header.
void add_context(const std::string& key, const std::string& value);

/// Counts the bytes the process holds from malloc and friends (the executable interposes them).
namespace memory {
[[nodiscard]] bool enabled() noexcept;
[[nodiscard]] std::size_t current() noexcept;
[[nodiscard]] std::size_t peak() noexcept;
/// Sets the peak to the current level.
void reset_peak() noexcept;
}  // namespace memory

}  // namespace rlhf_bench

#define RLHF_BENCH_CONCAT_INNER(a, b) a##b
#define RLHF_BENCH_CONCAT(a, b) RLHF_BENCH_CONCAT_INNER(a, b)

/// `RLHF_BENCH_KERNEL(rlhf_bench::gae_problem, "gae.zero_masked", "my_kernel", factory[, options])`
/// registers an implementation from namespace scope of any translation unit of the benchmark.
#define RLHF_BENCH_KERNEL(Problem, family, impl, ...)                                        \
    [[maybe_unused]] static const bool RLHF_BENCH_CONCAT(rlhf_bench_registered_, __LINE__) = \
        ::rlhf_bench::register_kernel<Problem>(family, impl, __VA_ARGS__)
