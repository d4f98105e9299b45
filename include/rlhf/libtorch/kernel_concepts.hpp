#pragma once
/// @file
/// What a loss kernel on LibTorch tensors must provide, as C++20 concepts, and the library's
/// two kernel sets that satisfy them.
///
/// A kernel is any type with the member functions below; the tensors may live on any device
/// (a user's CUDA kernel type dispatches to its own CUDA code and falls back to
/// `rlhf::libtorch::torch_ops_kernels` elsewhere). Code that trains with a loss is templated on
/// the concept (`template <PolicyLossKernel K> ...`), so a type that misses a member fails to
/// compile with a diagnostic naming the concept. Every member takes the library's option
/// structs and returns the library's output structs, so a kernel is a drop-in replacement of
/// the library's entry point with the same meaning of every option and statistic; the
/// conformance suite (rlhf/libtorch/conformance.hpp) checks that it is.
///
/// Global (data-parallel) token and sequence counts travel in `options.aggregation`
/// (`global_token_count`, `global_sequence_count`); a kernel does not take a reducer.

#include <torch/types.h>

#include <concepts>

#include "rlhf/core/options.hpp"
#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/libtorch/kl_loss.hpp"
#include "rlhf/libtorch/logits.hpp"
#include "rlhf/libtorch/policy_loss.hpp"
#include "rlhf/libtorch/value_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

/// A clipped policy-loss kernel:
/// `k.policy_loss(log_probs, old_log_probs, advantages, mask, options)` →
/// `rlhf::libtorch::policy_loss_output` (0-dim loss of `log_probs`' dtype, differentiable
/// w.r.t. `log_probs`; `rlhf::policy_loss_stats`). Tensors `[B, T]`, `mask` ∈ {0,1};
/// semantics of `rlhf::policy_loss` (rlhf/kernels/policy_loss.hpp).
template <class K>
concept PolicyLossKernel = requires(const K& kernel, const torch::Tensor& tensor,
                                    const rlhf::policy_loss_options& options) {
    { kernel.policy_loss(tensor, tensor, tensor, tensor, options) } -> std::convertible_to<policy_loss_output>;
};

/// A value-loss kernel: `k.value_loss(values, old_values, returns, mask, options)` →
/// `rlhf::libtorch::value_loss_output` (0-dim loss differentiable w.r.t. `values`;
/// `rlhf::value_loss_stats`). Tensors `[B, T]`, `mask` ∈ {0,1}; semantics of `rlhf::value_loss`.
template <class K>
concept ValueLossKernel = requires(const K& kernel, const torch::Tensor& tensor,
                                   const rlhf::value_loss_options& options) {
    { kernel.value_loss(tensor, tensor, tensor, tensor, options) } -> std::convertible_to<value_loss_output>;
};

/// A KL-in-loss kernel: `k.kl_loss(log_probs, ref_log_probs, mask, options)` →
/// `rlhf::libtorch::kl_loss_output` (0-dim loss differentiable w.r.t. `log_probs`;
/// `rlhf::kl_loss_stats`). Tensors `[B, T]`, `mask` ∈ {0,1}; semantics of `rlhf::kl_loss`.
template <class K>
concept KlLossKernel = requires(const K& kernel, const torch::Tensor& tensor, const rlhf::kl_loss_options& options) {
    { kernel.kl_loss(tensor, tensor, tensor, options) } -> std::convertible_to<kl_loss_output>;
};

/// A KL-in-loss kernel that also has the importance-weighted form (TRL
/// `use_bias_correction_kl`): `k.kl_loss(log_probs, ref_log_probs, old_log_probs, mask, options)`.
template <class K>
concept WeightedKlLossKernel = KlLossKernel<K> &&
    requires(const K& kernel, const torch::Tensor& tensor, const rlhf::kl_loss_options& options) {
    { kernel.kl_loss(tensor, tensor, tensor, tensor, options) } -> std::convertible_to<kl_loss_output>;
};

/// A log-prob kernel: `k.logprobs_from_logits(logits, tokens, mask, options)` →
/// `rlhf::libtorch::logprobs_result` (token log-probs and entropies `[B, T]`, both
/// differentiable w.r.t. `logits`). `logits [B, T, V]` float, `tokens [B, T]` int64, `mask`
/// `[B, T]` or an undefined tensor (no mask); semantics of `rlhf::logprobs_from_logits`.
template <class K>
concept LogProbKernel = requires(const K& kernel, const torch::Tensor& tensor, const rlhf::logits_options& options) {
    { kernel.logprobs_from_logits(tensor, tensor, tensor, options) } -> std::convertible_to<logprobs_result>;
};

/// Every kernel a PPO/GRPO step needs, in one type.
template <class K>
concept LossKernels = PolicyLossKernel<K> && ValueLossKernel<K> && KlLossKernel<K> && LogProbKernel<K>;

/// The library's kernels by device (`rlhf::libtorch::by_device`): on CPU tensors the autograd
/// Functions over the closed-form kernels of rlhf/kernels (`cpu::`: one pass, the kernel's
/// gradient as the backward); on CUDA tensors the kernels of rlhf/cuda when a translation unit
/// of the program includes rlhf/cuda/libtorch.cuh (the KL loss stays on torch ops); on any
/// other device the torch ops (`torch_ops_kernels`), whose
/// loss statistics stay on the device by default (`readback`; read them with
/// `read_statistics`), so a training step never waits for the GPU per micro-batch. The device
/// is that of the first tensor; bfloat16/float16 inputs are computed in float32.
struct default_kernels {
    /// When the torch-op losses (non-CPU tensors) read their statistics back.
    statistics_readback readback = statistics_readback::deferred;

    [[nodiscard]] policy_loss_output policy_loss(const torch::Tensor& log_probs, const torch::Tensor& old_log_probs,
                                                 const torch::Tensor& advantages, const torch::Tensor& mask,
                                                 const rlhf::policy_loss_options& options = {}) const {
        return ::rlhf::libtorch::policy_loss(log_probs, old_log_probs, advantages, mask, options, readback);
    }

    [[nodiscard]] value_loss_output value_loss(const torch::Tensor& values, const torch::Tensor& old_values,
                                               const torch::Tensor& returns, const torch::Tensor& mask,
                                               const rlhf::value_loss_options& options = {}) const {
        return ::rlhf::libtorch::value_loss(values, old_values, returns, mask, options, local_reducer{}, readback);
    }

    [[nodiscard]] kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                         const torch::Tensor& mask, const rlhf::kl_loss_options& options = {}) const {
        return ::rlhf::libtorch::kl_loss(log_probs, ref_log_probs, mask, options, local_reducer{}, readback);
    }

    [[nodiscard]] kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                         const torch::Tensor& old_log_probs, const torch::Tensor& mask,
                                         const rlhf::kl_loss_options& options = {}) const {
        return ::rlhf::libtorch::kl_loss(log_probs, ref_log_probs, old_log_probs, mask, options, local_reducer{},
                                         readback);
    }

    [[nodiscard]] logprobs_result logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor& tokens,
                                                       const torch::Tensor& mask = {},
                                                       const rlhf::logits_options& options = {}) const {
        return ::rlhf::libtorch::logprobs_from_logits(logits, tokens, mask, options);
    }
};

/// The library's torch-op kernels: the same losses written with torch ops, on any device,
/// differentiated by autograd (the GPU fallback). The log-prob kernel validates shapes only
/// (no value checks, which would synchronise a GPU) and forms `[B, T, V]` intermediates.
/// `readback = deferred` makes the losses do the same (`statistics_readback`).
struct torch_ops_kernels {
    /// When the losses check their values and read their statistics back.
    statistics_readback readback = statistics_readback::immediate;

    [[nodiscard]] policy_loss_output policy_loss(const torch::Tensor& log_probs, const torch::Tensor& old_log_probs,
                                                 const torch::Tensor& advantages, const torch::Tensor& mask,
                                                 const rlhf::policy_loss_options& options = {}) const {
        return ::rlhf::libtorch::torch_ops::policy_loss(log_probs, old_log_probs, advantages, mask, options, readback);
    }

    [[nodiscard]] value_loss_output value_loss(const torch::Tensor& values, const torch::Tensor& old_values,
                                               const torch::Tensor& returns, const torch::Tensor& mask,
                                               const rlhf::value_loss_options& options = {}) const {
        return ::rlhf::libtorch::torch_ops::value_loss(values, old_values, returns, mask, options, local_reducer{},
                                                       readback);
    }

    [[nodiscard]] kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                         const torch::Tensor& mask, const rlhf::kl_loss_options& options = {}) const {
        return ::rlhf::libtorch::torch_ops::kl_loss(log_probs, ref_log_probs, mask, options, local_reducer{}, readback);
    }

    [[nodiscard]] kl_loss_output kl_loss(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                         const torch::Tensor& old_log_probs, const torch::Tensor& mask,
                                         const rlhf::kl_loss_options& options = {}) const {
        return ::rlhf::libtorch::torch_ops::kl_loss(log_probs, ref_log_probs, old_log_probs, mask, options,
                                                    local_reducer{}, readback);
    }

    [[nodiscard]] logprobs_result logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor& tokens,
                                                       const torch::Tensor& mask = {},
                                                       const rlhf::logits_options& options = {}) const {
        return ::rlhf::libtorch::torch_ops::logprobs_from_logits(logits, tokens, mask, options);
    }
};

static_assert(LossKernels<default_kernels> && WeightedKlLossKernel<default_kernels>);
static_assert(LossKernels<torch_ops_kernels> && WeightedKlLossKernel<torch_ops_kernels>);

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
