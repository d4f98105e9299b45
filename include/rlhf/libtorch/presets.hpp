#pragma once
/// @file
/// LibTorch entry points of the framework presets (`rlhf/kernels/presets.hpp`): one call runs a
/// framework's reward shaping, reward whitening, GAE and advantage whitening
/// (`rlhf::compute_advantages`), or ColossalChat v1's sequence-level pipeline
/// (`rlhf::compute_sequence_advantages`), on CPU tensors, into new tensors of the log-probs'
/// dtype. Dtypes, masks and layout as in `rlhf/libtorch/advantages.hpp`.

#include <torch/types.h>

#include <string_view>
#include <utility>

#include "rlhf/core/reducer.hpp"
#include "rlhf/kernels/presets.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/view.hpp"

namespace rlhf::libtorch {

/// Per-token rewards, advantages and returns `[B, T]` of a preset.
struct preset_advantages {
    torch::Tensor rewards;
    torch::Tensor advantages;
    torch::Tensor returns;
};

/// Runs `preset` with the KL coefficient `kl_coef` (the controller's current value):
/// `log_probs`, `ref_log_probs`, `mask`, `values` `[B, T]`, `scores` `[B]`; see
/// `rlhf::compute_advantages`. `reducer` makes the whitening statistics global.
template <Reducer R = local_reducer>
[[nodiscard]] preset_advantages compute_advantages(const advantage_preset& preset, double kl_coef,
                                                   const torch::Tensor& log_probs, const torch::Tensor& ref_log_probs,
                                                   const torch::Tensor& mask, const torch::Tensor& scores,
                                                   const torch::Tensor& values, R&& reducer = {}) {
    constexpr std::string_view fn = "rlhf::libtorch::compute_advantages";
    return dispatch_floating(log_probs, fn, "log_probs", [&](auto tag) {
        using T = decltype(tag);
        const auto lp = as_view<T>(log_probs, fn, "log_probs");
        const auto like = torch::empty({lp.extent(0), lp.extent(1)}, log_probs.options());
        preset_advantages out{torch::empty_like(like), torch::empty_like(like), torch::empty_like(like)};
        with_mask_view<T>(mask, fn, [&](const auto m) {
            rlhf::compute_advantages(preset, kl_coef, lp, as_view<T>(ref_log_probs, fn, "ref_log_probs"), m,
                                     as_view<T, 1>(scores, fn, "scores"), as_view<T>(values, fn, "values"),
                                     as_mut_view<T>(out.rewards, fn, "rewards"),
                                     as_mut_view<T>(out.advantages, fn, "advantages"),
                                     as_mut_view<T>(out.returns, fn, "returns"), reducer);
        });
        return out;
    });
}

/// One reward and one advantage per sequence `[B]` of a sequence-level preset.
struct sequence_preset_advantages {
    torch::Tensor rewards;
    torch::Tensor advantages;
};

/// Runs a sequence-level preset (ColossalChat v1) with the KL coefficient `kl_coef`:
/// `log_probs`, `ref_log_probs`, `mask` `[B, T]`, `scores` and `values` `[B]`; see
/// `rlhf::compute_sequence_advantages`.
[[nodiscard]] inline sequence_preset_advantages compute_sequence_advantages(
    const sequence_advantage_preset& preset, double kl_coef, const torch::Tensor& log_probs,
    const torch::Tensor& ref_log_probs, const torch::Tensor& mask, const torch::Tensor& scores,
    const torch::Tensor& values) {
    constexpr std::string_view fn = "rlhf::libtorch::compute_sequence_advantages";
    return dispatch_floating(log_probs, fn, "log_probs", [&](auto tag) {
        using T = decltype(tag);
        const auto lp = as_view<T>(log_probs, fn, "log_probs");
        sequence_preset_advantages out{torch::empty({lp.extent(0)}, log_probs.options()),
                                       torch::empty({lp.extent(0)}, log_probs.options())};
        with_mask_view<T>(mask, fn, [&](const auto m) {
            rlhf::compute_sequence_advantages(preset, kl_coef, lp, as_view<T>(ref_log_probs, fn, "ref_log_probs"), m,
                                              as_view<T, 1>(scores, fn, "scores"), as_view<T, 1>(values, fn, "values"),
                                              as_mut_view<T, 1>(out.rewards, fn, "rewards"),
                                              as_mut_view<T, 1>(out.advantages, fn, "advantages"));
        });
        return out;
    });
}

}  // namespace rlhf::libtorch
