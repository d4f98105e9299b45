#pragma once
/// @file
/// LibTorch entry points of the logits kernels (token log-probs and entropy, full-vocabulary KL,
/// LM loss) and of the pairwise reward-model losses.
///
/// Two implementations of each, and one that picks by device:
/// - `rlhf::libtorch::cpu::<name>`: a `torch::autograd::Function` whose forward runs the CPU
///   kernel (one streaming pass per vocabulary row, nothing `[B, T, V]`-sized but the gradient) and
///   whose backward returns the kernel's closed-form gradient. CPU tensors; values and policies
///   exactly those of the kernels in rlhf/kernels/logits.hpp and rlhf/kernels/reward_model_loss.hpp.
/// - `rlhf::libtorch::torch_ops::<name>`: the same math composed of torch ops (log_softmax +
///   gather, ...), any device, differentiated by autograd. It validates shapes only (no value
///   checks, which would synchronise a GPU) and materialises `[B, T, V]` intermediates.
/// - `rlhf::libtorch::<name>`: `cpu::<name>` on CPU tensors, `torch_ops::<name>` elsewhere.
///
/// Shapes: logits `[B, T, V]` float32/float64; tokens `[B, T]` int64; mask `[B, T]` (bool,
/// uint8, int32, int64 or the logits' dtype, entries 0/1), an undefined tensor meaning "no mask".
/// Rewards `[N]`.

#include <torch/autograd.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/reward_model_loss.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch {

/// Token log-probs and entropy `[B, T]` each.
struct logprobs_result {
    torch::Tensor logprobs;
    torch::Tensor entropy;
};

namespace detail::logits {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// Calls `body(mask_pointer)` with a `const rlhf::view<M>*` of the mask (nullptr when undefined).
template <class T, class Body>
decltype(auto) with_mask(const torch::Tensor& mask, std::string_view function, Body&& body) {
    if (!mask.defined()) return body(static_cast<const view<bool>*>(nullptr));
    return dispatch_mask<T>(mask, function, "mask", [&](auto tag) -> decltype(auto) {
        using M = decltype(tag);
        const view<M> m = as_view<M>(mask, function, "mask");
        return body(&m);
    });
}

/// An upstream gradient as a view-able tensor (autograd may hand over expanded, stride-0 grads).
inline torch::Tensor dense(const torch::Tensor& grad) {
    return grad.defined() ? grad.contiguous() : grad;
}

template <class T>
view<T> optional_view(const torch::Tensor& tensor, std::string_view function, std::string_view argument) {
    return tensor.defined() ? as_view<T>(tensor, function, argument) : view<T>{};
}

/// LibTorch 1.13's Function::apply rejects undefined tensor arguments: an absent optional
/// tensor travels as an empty placeholder next to a `present` flag.
inline torch::Tensor placeholder(const torch::Tensor& tensor) {
    return tensor.defined() ? tensor : torch::empty({0});
}

inline torch::Tensor bt_empty(const torch::Tensor& logits, std::optional<torch::Dtype> dtype = std::nullopt) {
    return torch::empty({logits.size(0), logits.size(1)}, logits.options().dtype(dtype.value_or(logits.scalar_type())));
}

inline void check_rank(const torch::Tensor& tensor, std::string_view function, std::string_view argument,
                       int64_t rank) {
    check_defined(tensor, function, argument);
    if (tensor.dim() != rank)
        fail(error_kind::shape, function, argument, std::to_string(rank) + " dimensions",
             std::to_string(tensor.dim()) + " dimensions " + shape_string(tensor));
}

struct logprobs_function : torch::autograd::Function<logprobs_function> {
    static constexpr std::string_view name = "rlhf::libtorch::logprobs_from_logits";

    static variable_list forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& tokens,
                                 const torch::Tensor& mask_arg, bool has_mask, double temperature) {
        const torch::Tensor mask = has_mask ? mask_arg : torch::Tensor();
        torch::Tensor lp = bt_empty(logits), h = bt_empty(logits), lse = bt_empty(logits, torch::kFloat64);
        dispatch_floating(logits, name, "logits", [&](auto tag) {
            using T = decltype(tag);
            const auto z = as_view<T, 3>(logits, name, "logits");
            const auto y = as_view<std::int64_t>(tokens, name, "tokens");
            with_mask<T>(mask, name, [&](auto m) {
                rlhf::detail::logits::forward(name, z, &y, m, as_mut_view<T>(lp, name, "logprobs"),
                                              as_mut_view<T>(h, name, "entropy"),
                                              as_mut_view<double>(lse, name, "logsumexp"), temperature);
            });
        });
        ctx->set_materialize_grads(false);
        ctx->save_for_backward({logits, tokens, mask_arg, lse, h});
        ctx->saved_data["temperature"] = temperature;
        ctx->saved_data["has_mask"] = mask.defined();
        return {lp, h};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor& logits = saved[0];
        const torch::Tensor mask = ctx->saved_data["has_mask"].toBool() ? saved[2] : torch::Tensor();
        const torch::Tensor g_lp = dense(grads[0]), g_h = dense(grads[1]);
        if (!g_lp.defined() && !g_h.defined())
            return {torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
        torch::Tensor grad = torch::empty_like(logits, torch::MemoryFormat::Contiguous);
        const double temperature = ctx->saved_data["temperature"].toDouble();
        dispatch_floating(logits, name, "logits", [&](auto tag) {
            using T = decltype(tag);
            const auto y = as_view<std::int64_t>(saved[1], name, "tokens");
            with_mask<T>(mask, name, [&](auto m) {
                rlhf::detail::logits::backward(
                    name, as_view<T, 3>(logits, name, "logits"), &y, m, optional_view<T>(g_lp, name, "grad_logprobs"),
                    optional_view<T>(g_h, name, "grad_entropy"), as_mut_view<T, 3>(grad, name, "grad_logits"),
                    as_view<double>(saved[3], name, "logsumexp"), as_view<T>(saved[4], name, "entropy"), temperature);
            });
        });
        return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
};

struct entropy_function : torch::autograd::Function<entropy_function> {
    static constexpr std::string_view name = "rlhf::libtorch::entropy_from_logits";

    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& mask_arg,
                                 bool has_mask, double temperature) {
        const torch::Tensor mask = has_mask ? mask_arg : torch::Tensor();
        torch::Tensor h = bt_empty(logits), lse = bt_empty(logits, torch::kFloat64);
        dispatch_floating(logits, name, "logits", [&](auto tag) {
            using T = decltype(tag);
            const auto z = as_view<T, 3>(logits, name, "logits");
            with_mask<T>(mask, name, [&](auto m) {
                rlhf::detail::logits::forward(name, z, static_cast<const view<std::int64_t>*>(nullptr), m,
                                              mut_view<T>{}, as_mut_view<T>(h, name, "entropy"),
                                              as_mut_view<double>(lse, name, "logsumexp"), temperature);
            });
        });
        ctx->save_for_backward({logits, mask_arg, lse, h});
        ctx->saved_data["temperature"] = temperature;
        ctx->saved_data["has_mask"] = mask.defined();
        return h;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor& logits = saved[0];
        const torch::Tensor mask = ctx->saved_data["has_mask"].toBool() ? saved[1] : torch::Tensor();
        const torch::Tensor g_h = dense(grads[0]);
        torch::Tensor grad = torch::empty_like(logits, torch::MemoryFormat::Contiguous);
        const double temperature = ctx->saved_data["temperature"].toDouble();
        dispatch_floating(logits, name, "logits", [&](auto tag) {
            using T = decltype(tag);
            with_mask<T>(mask, name, [&](auto m) {
                rlhf::detail::logits::backward(
                    name, as_view<T, 3>(logits, name, "logits"), static_cast<const view<std::int64_t>*>(nullptr), m,
                    view<T>{}, as_view<T>(g_h, name, "grad_entropy"), as_mut_view<T, 3>(grad, name, "grad_logits"),
                    as_view<double>(saved[2], name, "logsumexp"), as_view<T>(saved[3], name, "entropy"), temperature);
            });
        });
        return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
};

struct full_kl_function : torch::autograd::Function<full_kl_function> {
    static constexpr std::string_view name = "rlhf::libtorch::full_kl_from_logits";

    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& policy_logits,
                                 const torch::Tensor& reference_logits, const torch::Tensor& mask_arg, bool has_mask,
                                 double temperature) {
        const torch::Tensor mask = has_mask ? mask_arg : torch::Tensor();
        check_same_dtype(reference_logits, name, "reference_logits", policy_logits, "policy_logits");
        torch::Tensor kl = bt_empty(policy_logits);
        dispatch_floating(policy_logits, name, "policy_logits", [&](auto tag) {
            using T = decltype(tag);
            const auto p = as_view<T, 3>(policy_logits, name, "policy_logits");
            const auto q = as_view<T, 3>(reference_logits, name, "reference_logits");
            with_mask<T>(mask, name, [&](auto m) {
                rlhf::detail::logits::full_kl(name, p, q, m, as_mut_view<T>(kl, name, "kl"), temperature);
            });
        });
        ctx->save_for_backward({policy_logits, reference_logits, mask_arg});
        ctx->saved_data["temperature"] = temperature;
        ctx->saved_data["has_mask"] = mask.defined();
        return kl;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor mask = ctx->saved_data["has_mask"].toBool() ? saved[2] : torch::Tensor();
        const torch::Tensor g = dense(grads[0]);
        torch::Tensor grad = torch::empty_like(saved[0], torch::MemoryFormat::Contiguous);
        const double temperature = ctx->saved_data["temperature"].toDouble();
        dispatch_floating(saved[0], name, "policy_logits", [&](auto tag) {
            using T = decltype(tag);
            with_mask<T>(mask, name, [&](auto m) {
                rlhf::detail::logits::full_kl_backward(
                    name, as_view<T, 3>(saved[0], name, "policy_logits"),
                    as_view<T, 3>(saved[1], name, "reference_logits"), m, as_view<T>(g, name, "grad_kl"),
                    as_mut_view<T, 3>(grad, name, "grad_policy_logits"), temperature);
            });
        });
        return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
};

struct lm_loss_function : torch::autograd::Function<lm_loss_function> {
    static constexpr std::string_view name = "rlhf::libtorch::lm_loss";

    static lm_loss_options options_of(AutogradContext* ctx) {
        lm_loss_options options{.temperature = ctx->saved_data["temperature"].toDouble(), .ignore_index = {}};
        if (ctx->saved_data["has_ignore"].toBool()) options.ignore_index = ctx->saved_data["ignore_index"].toInt();
        return options;
    }

    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& tokens,
                                 const torch::Tensor& mask_arg, bool has_mask, double temperature, bool has_ignore,
                                 int64_t ignore_index) {
        const torch::Tensor mask = has_mask ? mask_arg : torch::Tensor();
        ctx->saved_data["temperature"] = temperature;
        ctx->saved_data["has_ignore"] = has_ignore;
        ctx->saved_data["ignore_index"] = ignore_index;
        ctx->saved_data["has_mask"] = mask.defined();
        const lm_loss_options options = options_of(ctx);
        const double loss = dispatch_floating(logits, name, "logits", [&](auto tag) {
            using T = decltype(tag);
            const auto z = as_view<T, 3>(logits, name, "logits");
            const auto y = as_view<std::int64_t>(tokens, name, "tokens");
            return with_mask<T>(mask, name, [&](auto m) {
                return rlhf::detail::logits::lm_loss(name, z, y, m, static_cast<const mut_view<T, 3>*>(nullptr), 1.0,
                                                     options)
                    .loss;
            });
        });
        ctx->save_for_backward({logits, tokens, mask_arg});
        return torch::scalar_tensor(loss, logits.options());
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor mask = ctx->saved_data["has_mask"].toBool() ? saved[2] : torch::Tensor();
        const double g = grads[0].item<double>();
        torch::Tensor grad = torch::empty_like(saved[0], torch::MemoryFormat::Contiguous);
        const lm_loss_options options = options_of(ctx);
        dispatch_floating(saved[0], name, "logits", [&](auto tag) {
            using T = decltype(tag);
            const auto y = as_view<std::int64_t>(saved[1], name, "tokens");
            const auto out = as_mut_view<T, 3>(grad, name, "grad_logits");
            with_mask<T>(mask, name, [&](auto m) {
                (void)rlhf::detail::logits::lm_loss(name, as_view<T, 3>(saved[0], name, "logits"), y, m, &out, g,
                                                    options);
            });
        });
        return {grad,           torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
                torch::Tensor()};
    }
};

struct pairwise_function : torch::autograd::Function<pairwise_function> {
    static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& chosen, const torch::Tensor& rejected,
                                 const torch::Tensor& margin_arg, bool has_margin, double scalar_margin, double center,
                                 bool log_exp) {
        const torch::Tensor margin = has_margin ? margin_arg : torch::Tensor();
        const std::string_view name =
            log_exp ? "rlhf::libtorch::log_exp_loss" : "rlhf::libtorch::pairwise_logsigmoid_loss";
        check_same_dtype(rejected, name, "rejected", chosen, "chosen");
        if (margin.defined()) check_same_dtype(margin, name, "margin", chosen, "chosen");
        torch::Tensor grad_c = torch::empty_like(chosen, torch::MemoryFormat::Contiguous);
        torch::Tensor grad_r = torch::empty_like(chosen, torch::MemoryFormat::Contiguous);
        const double loss = dispatch_floating(chosen, name, "chosen", [&](auto tag) {
            using T = decltype(tag);
            const auto c = as_view<T, 1>(chosen, name, "chosen");
            const auto r = as_view<T, 1>(rejected, name, "rejected");
            const view<T, 1> m = margin.defined() ? as_view<T, 1>(margin, name, "margin") : view<T, 1>{};
            return rlhf::detail::reward_loss::loss<T>(
                       name, c, r, margin.defined() ? &m : nullptr, as_mut_view<T, 1>(grad_c, name, "grad_chosen"),
                       as_mut_view<T, 1>(grad_r, name, "grad_rejected"), scalar_margin, center)
                .loss;
        });
        ctx->save_for_backward({grad_c, grad_r});
        return torch::scalar_tensor(loss, chosen.options());
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const torch::Tensor& g = grads[0];
        return {saved[0] * g,    saved[1] * g,    torch::Tensor(), torch::Tensor(),
                torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
};

}  // namespace detail::logits

namespace cpu {

/// Token log-probs `log softmax(z/τ)[y]` and entropies of `logits [B, T, V]` at `tokens [B, T]`
/// (CPU; differentiable w.r.t. `logits` through both outputs, closed-form backward in one pass per
/// row from the saved log-sum-exp). `mask` optional: masked positions are not read and get 0 and
/// a 0 gradient. Policies: `rlhf::logprobs_from_logits`.
/// @note Reproduces TRL `logprobs_from_logits` / `entropy_from_logits` (trl/core.py), DeepSpeed-Chat
///       `gather_log_probs` (dschat/rlhf/ppo_trainer.py), verl `logprobs_from_logits` /
///       `entropy_from_logits` (verl/utils/torch_functional.py).
inline logprobs_result logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor& tokens,
                                            const torch::Tensor& mask = {}, const logits_options& options = {}) {
    auto out = detail::logits::logprobs_function::apply(logits, tokens, detail::logits::placeholder(mask),
                                                        mask.defined(), options.temperature);
    return {out[0], out[1]};
}

/// Entropy `[B, T]` of `logits [B, T, V]` (CPU, differentiable). Policies: `rlhf::entropy_from_logits`.
inline torch::Tensor entropy_from_logits(const torch::Tensor& logits, const torch::Tensor& mask = {},
                                         const logits_options& options = {}) {
    return detail::logits::entropy_function::apply(logits, detail::logits::placeholder(mask), mask.defined(),
                                                   options.temperature);
}

/// Full-vocabulary `KL(softmax(policy/τ) ‖ softmax(reference/τ))` per position, `[B, T]` (CPU,
/// differentiable w.r.t. `policy_logits`; no gradient flows to `reference_logits`).
/// Policies: `rlhf::full_kl_from_logits`.
/// @note TRL classic `kl_penalty='full'` (trl/trainer/ppo_trainer.py, v0.11.4).
inline torch::Tensor full_kl_from_logits(const torch::Tensor& policy_logits, const torch::Tensor& reference_logits,
                                         const torch::Tensor& mask = {}, const logits_options& options = {}) {
    return detail::logits::full_kl_function::apply(policy_logits, reference_logits, detail::logits::placeholder(mask),
                                                   mask.defined(), options.temperature);
}

/// Token-mean LM (PTX/SFT) loss, a 0-dim tensor (CPU, differentiable w.r.t. `logits`).
/// Policies: `rlhf::lm_loss` (no counted token → 0).
/// @note ColossalChat / OpenRLHF `GPTLMLoss`, DeepSpeed-Chat's unsupervised loss (see `rlhf::lm_loss`).
inline torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& tokens, const torch::Tensor& mask = {},
                             const lm_loss_options& options = {}) {
    return detail::logits::lm_loss_function::apply(logits, tokens, detail::logits::placeholder(mask), mask.defined(),
                                                   options.temperature, options.ignore_index.has_value(),
                                                   options.ignore_index.value_or(0));
}

/// Pairwise log-sigmoid reward-model loss over `chosen [N]`, `rejected [N]` (CPU, differentiable
/// w.r.t. both), a 0-dim tensor; `margin [N]` optional, added to `options.margin`.
/// Policies: `rlhf::pairwise_logsigmoid_loss`.
inline torch::Tensor pairwise_logsigmoid_loss(const torch::Tensor& chosen, const torch::Tensor& rejected,
                                              const torch::Tensor& margin = {},
                                              const pairwise_loss_options& options = {}) {
    return detail::logits::pairwise_function::apply(chosen, rejected, detail::logits::placeholder(margin),
                                                    margin.defined(), options.margin,
                                                    options.center_rewards_coefficient, false);
}

/// Log-exp reward-model loss `mean(log(1 + e^(r − c)))` (CPU, differentiable). Policies:
/// `rlhf::log_exp_loss`.
inline torch::Tensor log_exp_loss(const torch::Tensor& chosen, const torch::Tensor& rejected) {
    return detail::logits::pairwise_function::apply(chosen, rejected, detail::logits::placeholder({}), false, 0.0, 0.0,
                                                    true);
}

}  // namespace cpu

/// Torch-op implementations: any device, autograd gradients, shape checks only.
namespace torch_ops {

namespace logits_ops {
// Logits divided by τ with masked rows zeroed (so that nothing there reaches the outputs or the
// gradients, whatever the logits hold), and the boolean mask `[B, T]` (or undefined).
inline torch::Tensor scaled(const torch::Tensor& logits, const torch::Tensor& valid, double temperature) {
    torch::Tensor x = temperature == 1.0 ? logits : logits / temperature;
    if (valid.defined()) x = torch::where(valid.unsqueeze(-1), x, torch::zeros_like(x));
    return x;
}
inline torch::Tensor valid_of(const torch::Tensor& mask) {
    return mask.defined() ? mask != 0 : torch::Tensor();
}
inline torch::Tensor zero_masked(const torch::Tensor& value, const torch::Tensor& valid) {
    return valid.defined() ? torch::where(valid, value, torch::zeros_like(value)) : value;
}
// −Σ p·log p with p = 0 entries (−inf logits) contributing 0 in value and gradient.
inline torch::Tensor entropy(const torch::Tensor& logp) {
    const torch::Tensor p = logp.exp();
    const torch::Tensor safe = torch::where(p > 0, logp, torch::zeros_like(logp));
    return -(p * safe).sum(-1);
}
}  // namespace logits_ops

/// `rlhf::libtorch::logprobs_from_logits` composed of `log_softmax` + `gather`.
inline logprobs_result logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor& tokens,
                                            const torch::Tensor& mask = {}, const logits_options& options = {}) {
    constexpr std::string_view name = "rlhf::libtorch::torch_ops::logprobs_from_logits";
    detail::logits::check_rank(logits, name, "logits", 3);
    detail::logits::check_rank(tokens, name, "tokens", 2);
    const torch::Tensor valid = logits_ops::valid_of(mask);
    const torch::Tensor logp = torch::log_softmax(logits_ops::scaled(logits, valid, options.temperature), -1);
    const torch::Tensor ids = valid.defined() ? torch::where(valid, tokens, torch::zeros_like(tokens)) : tokens;
    const torch::Tensor lp = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1);
    return {logits_ops::zero_masked(lp, valid), logits_ops::zero_masked(logits_ops::entropy(logp), valid)};
}

/// `rlhf::libtorch::entropy_from_logits` composed of torch ops.
inline torch::Tensor entropy_from_logits(const torch::Tensor& logits, const torch::Tensor& mask = {},
                                         const logits_options& options = {}) {
    detail::logits::check_rank(logits, "rlhf::libtorch::torch_ops::entropy_from_logits", "logits", 3);
    const torch::Tensor valid = logits_ops::valid_of(mask);
    const torch::Tensor logp = torch::log_softmax(logits_ops::scaled(logits, valid, options.temperature), -1);
    return logits_ops::zero_masked(logits_ops::entropy(logp), valid);
}

/// `rlhf::libtorch::full_kl_from_logits` composed of torch ops (the reference is detached).
inline torch::Tensor full_kl_from_logits(const torch::Tensor& policy_logits, const torch::Tensor& reference_logits,
                                         const torch::Tensor& mask = {}, const logits_options& options = {}) {
    constexpr std::string_view name = "rlhf::libtorch::torch_ops::full_kl_from_logits";
    detail::logits::check_rank(policy_logits, name, "policy_logits", 3);
    detail::logits::check_rank(reference_logits, name, "reference_logits", 3);
    const torch::Tensor valid = logits_ops::valid_of(mask);
    const torch::Tensor logp = torch::log_softmax(logits_ops::scaled(policy_logits, valid, options.temperature), -1);
    const torch::Tensor logq =
        torch::log_softmax(logits_ops::scaled(reference_logits.detach(), valid, options.temperature), -1);
    const torch::Tensor p = logp.exp();
    const torch::Tensor diff = torch::where(p > 0, logp - logq, torch::zeros_like(logp));
    return logits_ops::zero_masked((p * diff).sum(-1), valid);
}

/// `rlhf::libtorch::lm_loss` composed of torch ops (0 when no token counts).
inline torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& tokens, const torch::Tensor& mask = {},
                             const lm_loss_options& options = {}) {
    constexpr std::string_view name = "rlhf::libtorch::torch_ops::lm_loss";
    detail::logits::check_rank(logits, name, "logits", 3);
    detail::logits::check_rank(tokens, name, "tokens", 2);
    torch::Tensor valid = mask.defined() ? mask != 0 : torch::ones_like(tokens, tokens.options().dtype(torch::kBool));
    if (options.ignore_index) valid = valid & (tokens != *options.ignore_index);
    const torch::Tensor logp = torch::log_softmax(logits_ops::scaled(logits, valid, options.temperature), -1);
    const torch::Tensor ids = torch::where(valid, tokens, torch::zeros_like(tokens));
    const torch::Tensor lp = logits_ops::zero_masked(logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1), valid);
    const torch::Tensor count = valid.sum().clamp_min(1).to(logits.scalar_type());
    return -lp.sum() / count;
}

/// `rlhf::libtorch::pairwise_logsigmoid_loss` composed of torch ops (`−log_sigmoid`).
inline torch::Tensor pairwise_logsigmoid_loss(const torch::Tensor& chosen, const torch::Tensor& rejected,
                                              const torch::Tensor& margin = {},
                                              const pairwise_loss_options& options = {}) {
    torch::Tensor gap = chosen - rejected - options.margin;
    if (margin.defined()) gap = gap - margin;
    torch::Tensor loss = -torch::log_sigmoid(gap).mean();
    if (options.center_rewards_coefficient != 0.0)
        loss = loss + options.center_rewards_coefficient * (chosen + rejected).pow(2).mean();
    return loss;
}

/// `rlhf::libtorch::log_exp_loss` composed of torch ops (softplus form, as `−log_sigmoid(c − r)`).
inline torch::Tensor log_exp_loss(const torch::Tensor& chosen, const torch::Tensor& rejected) {
    return -torch::log_sigmoid(chosen - rejected).mean();
}

}  // namespace torch_ops

/// Log-probs and entropies by device: `cpu::logprobs_from_logits` on CPU tensors, the CUDA
/// kernel on CUDA tensors when registered (rlhf/cuda/libtorch.cuh),
/// `torch_ops::logprobs_from_logits` elsewhere.
inline logprobs_result logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor& tokens,
                                            const torch::Tensor& mask = {}, const logits_options& options = {}) {
    return by_device<&torch_ops::logprobs_from_logits>(
        logits, [&] { return cpu::logprobs_from_logits(logits, tokens, mask, options); }, logits, tokens, mask,
        options);
}

/// Entropy by device (`cpu::entropy_from_logits`, the registered CUDA kernel,
/// `torch_ops::entropy_from_logits`).
inline torch::Tensor entropy_from_logits(const torch::Tensor& logits, const torch::Tensor& mask = {},
                                         const logits_options& options = {}) {
    return by_device<&torch_ops::entropy_from_logits>(
        logits, [&] { return cpu::entropy_from_logits(logits, mask, options); }, logits, mask, options);
}

/// Full-vocabulary KL by device (`cpu::full_kl_from_logits`, the registered CUDA kernel,
/// `torch_ops::full_kl_from_logits`).
inline torch::Tensor full_kl_from_logits(const torch::Tensor& policy_logits, const torch::Tensor& reference_logits,
                                         const torch::Tensor& mask = {}, const logits_options& options = {}) {
    return by_device<&torch_ops::full_kl_from_logits>(
        policy_logits, [&] { return cpu::full_kl_from_logits(policy_logits, reference_logits, mask, options); },
        policy_logits, reference_logits, mask, options);
}

/// LM loss by device (`cpu::lm_loss`, `torch_ops::lm_loss`).
inline torch::Tensor lm_loss(const torch::Tensor& logits, const torch::Tensor& tokens, const torch::Tensor& mask = {},
                             const lm_loss_options& options = {}) {
    return by_device(
        logits, [&] { return cpu::lm_loss(logits, tokens, mask, options); },
        [&] { return torch_ops::lm_loss(logits, tokens, mask, options); });
}

/// Pairwise log-sigmoid loss by device (`cpu::pairwise_logsigmoid_loss`, `torch_ops::pairwise_logsigmoid_loss`).
inline torch::Tensor pairwise_logsigmoid_loss(const torch::Tensor& chosen, const torch::Tensor& rejected,
                                              const torch::Tensor& margin = {},
                                              const pairwise_loss_options& options = {}) {
    return by_device(
        chosen, [&] { return cpu::pairwise_logsigmoid_loss(chosen, rejected, margin, options); },
        [&] { return torch_ops::pairwise_logsigmoid_loss(chosen, rejected, margin, options); });
}

/// Log-exp loss by device (`cpu::log_exp_loss`, `torch_ops::log_exp_loss`).
inline torch::Tensor log_exp_loss(const torch::Tensor& chosen, const torch::Tensor& rejected) {
    return by_device(
        chosen, [&] { return cpu::log_exp_loss(chosen, rejected); },
        [&] { return torch_ops::log_exp_loss(chosen, rejected); });
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch
