#pragma once
/// @file
/// PTX (pretraining) data mixed into the actor's update, and its language-model loss on a
/// `LanguageModelPolicy` (the `ptx` options of `rlhf::ppo::config`).

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/libtorch/logits.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/concepts.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// A batch of PTX (pretraining) data: `[B, S]` tokens; `labels` default to `input_ids`; a label
/// of `ptx_loss.ignore_index` (or a 0 in the attention mask) is not counted. The loss is the
/// token-mean next-token NLL: logits of positions `[0, S − 1)` against labels `[1, S)`.
struct ptx_batch {
    torch::Tensor input_ids;
    torch::Tensor attention_mask;
    torch::Tensor labels;
};

/// The token-mean next-token NLL of `batch` under `policy`: `policy.lm_logits` of positions
/// `[0, S − 1)` against the labels `[1, S)` (`rlhf::libtorch::lm_loss` on the CPU, the composed
/// ops elsewhere). Errors (`rlhf::error`, kind shape): `input_ids` not `[B, S]` with `S ≥ 2`
/// (argument `ptx_source`); logits not `[B, S, V]` (argument `policy.lm_logits`).
template <LanguageModelPolicy P>
[[nodiscard]] torch::Tensor ptx_loss(P& policy, const ptx_batch& batch, const lm_loss_options& options,
                                     std::string_view function) {
    if (!batch.input_ids.defined() || batch.input_ids.dim() != 2 || batch.input_ids.size(1) < 2)
        fail(error_kind::shape, function, "ptx_source", "input_ids [B, S] with S >= 2",
             batch.input_ids.defined() ? libtorch::shape_string(batch.input_ids) : "undefined");
    const torch::Tensor attention =
        batch.attention_mask.defined() ? batch.attention_mask : torch::ones_like(batch.input_ids);
    const torch::Tensor labels = batch.labels.defined() ? batch.labels : batch.input_ids;
    const torch::Tensor logits = policy.lm_logits(batch.input_ids, attention);
    const std::int64_t s = batch.input_ids.size(1);
    if (logits.dim() != 3 || logits.size(0) != batch.input_ids.size(0) || logits.size(1) != s)
        fail(error_kind::shape, function, "policy.lm_logits",
             "[" + std::to_string(batch.input_ids.size(0)) + ", " + std::to_string(s) + ", V]",
             libtorch::shape_string(logits));
    const torch::Tensor predicting = logits.narrow(1, 0, s - 1);
    const torch::Tensor tokens = labels.narrow(1, 1, s - 1).to(torch::kInt64);
    const torch::Tensor mask = attention.narrow(1, 1, s - 1);
    if (predicting.device().is_cpu()) return libtorch::lm_loss(predicting, tokens, mask, options);
    return libtorch::torch_ops::lm_loss(predicting, tokens, mask, options);
}

/// Backpropagates `coef · ptx_loss(policy, batch)` into the policy's gradients and returns the LM
/// loss (before `coef`, detached, on the model's device: no host read). Errors: those of
/// `ptx_loss` (function `rlhf::ppo::ppo_trainer::train`).
template <LanguageModelPolicy P>
torch::Tensor backward_ptx(P& policy, const ptx_batch& batch, double coef, const lm_loss_options& options) {
    const torch::Tensor lm = ptx_loss(policy, batch, options, "rlhf::ppo::ppo_trainer::train");
    (lm * coef).backward();
    return lm.detach();
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
