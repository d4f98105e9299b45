#pragma once
/// @file
/// LibTorch entry points of the per-token KL estimators and reward shaping (CPU tensors).
///
/// Each takes `[B, T]` tensors of one floating dtype (float32 or float64, innermost dimension
/// contiguous; a column range of a wider tensor is fine), a mask of dtype bool, uint8, int32,
/// int64 or the values' dtype, and scores `[B]` of the values' dtype; it allocates and returns
/// the result. A tensor of another dtype, rank or device is an `rlhf::error` naming it. Semantics, options and
/// policies: `rlhf/kernels/kl.hpp` and `rlhf/kernels/reward_shaping.hpp`.

#include <torch/types.h>

#include <string_view>

#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/view.hpp"

namespace rlhf::libtorch {

/// Per-token KL `[B, T]` of `log_probs` against `ref_log_probs` (see `rlhf::token_kl`).
inline torch::Tensor token_kl(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                              const kl_options& options = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::token_kl";
    return dispatch_floating(log_probs, fn, "log_probs", [&](auto tag) {
        using T = decltype(tag);
        const auto lp = as_view<T>(log_probs, fn, "log_probs");
        torch::Tensor out = torch::empty({lp.extent(0), lp.extent(1)}, log_probs.options());
        rlhf::token_kl(lp, as_view<T>(ref_log_probs, fn, "ref_log_probs"), as_mut_view<T>(out, fn, "kl"), options);
        return out;
    });
}

/// Masked per-token KL `[B, T]`: 0 where `mask` is 0 (see `rlhf::token_kl`).
inline torch::Tensor token_kl(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                              const torch::Tensor& mask, const kl_options& options = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::token_kl";
    return dispatch_floating(log_probs, fn, "log_probs", [&](auto tag) {
        using T = decltype(tag);
        return with_mask_view<T>(mask, fn, [&](const auto m) {
            const auto lp = as_view<T>(log_probs, fn, "log_probs");
            torch::Tensor out = torch::empty({lp.extent(0), lp.extent(1)}, log_probs.options());
            rlhf::token_kl(lp, as_view<T>(ref_log_probs, fn, "ref_log_probs"), m, as_mut_view<T>(out, fn, "kl"),
                           options);
            return out;
        });
    });
}

/// Per-token rewards `[B, T]` from a given KL `[B, T]`, a mask and scores `[B]` (see
/// `rlhf::shape_rewards`).
inline torch::Tensor shape_rewards(const torch::Tensor& kl, const torch::Tensor& mask, const torch::Tensor& scores,
                                   const reward_shaping_options& options = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::shape_rewards";
    return dispatch_floating(kl, fn, "kl", [&](auto tag) {
        using T = decltype(tag);
        return with_mask_view<T>(mask, fn, [&](const auto m) {
            const auto k = as_view<T>(kl, fn, "kl");
            torch::Tensor out = torch::empty({k.extent(0), k.extent(1)}, kl.options());
            rlhf::shape_rewards(k, m, as_view<T, 1>(scores, fn, "scores"), as_mut_view<T>(out, fn, "rewards"), options);
            return out;
        });
    });
}

/// Per-token rewards `[B, T]` with the KL computed from the log-probs in the same pass (see
/// `rlhf::shape_rewards_from_logprobs`).
inline torch::Tensor shape_rewards_from_logprobs(const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                                 const torch::Tensor& mask, const torch::Tensor& scores,
                                                 const reward_shaping_options& options = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::shape_rewards_from_logprobs";
    return dispatch_floating(log_probs, fn, "log_probs", [&](auto tag) {
        using T = decltype(tag);
        return with_mask_view<T>(mask, fn, [&](const auto m) {
            const auto lp = as_view<T>(log_probs, fn, "log_probs");
            torch::Tensor out = torch::empty({lp.extent(0), lp.extent(1)}, log_probs.options());
            rlhf::shape_rewards_from_logprobs(lp, as_view<T>(ref_log_probs, fn, "ref_log_probs"), m,
                                              as_view<T, 1>(scores, fn, "scores"), as_mut_view<T>(out, fn, "rewards"),
                                              options);
            return out;
        });
    });
}

}  // namespace rlhf::libtorch
