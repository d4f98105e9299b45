#pragma once
/// @file
/// Container entry points of the logits kernels (`rlhf/kernels/logits.hpp`: token log-probs and
/// entropy, full-vocabulary KL, LM loss, their gradients) and of the pairwise reward-model losses
/// (`rlhf/kernels/reward_model_loss.hpp`).
///
/// Logits are `[B, T, V]`; a backend without rank-3 containers (Eigen) stores them as a row-major
/// `[B·T, V]` matrix, B and T coming from the `[B, T]` tokens or mask (without either, each row is
/// one position: `[B·T, 1, V]`); `[B, T, V]` gradients come back in the same layout. Tokens are
/// int64. A mask is optional wherever the kernel's is: each function has an unmasked overload.

#include <cstdint>
#include <string_view>
#include <type_traits>

#include "rlhf/entry/backend.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/reward_model_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Token log-probs and entropies, `[B, T]` each.
template <class C>
struct logprobs_and_entropy {
    C logprobs;
    C entropy;
};

/// The LM loss, the number of counted tokens and d loss / d logits (`[B, T, V]`).
template <class C>
struct lm_loss_with_gradient {
    double loss = 0.0;
    index_t num_tokens = 0;
    C grad_logits;
};

/// A pairwise reward-model loss, the accuracy and the gradients `[N]` w.r.t. both rewards.
template <class C>
struct pairwise_loss_with_gradient {
    double loss = 0.0;
    double accuracy = 0.0;
    C grad_chosen;
    C grad_rejected;
};

namespace detail::entry {

/// Stands for "no mask" in the shared bodies of the masked and unmasked overloads.
struct no_mask {};

/// `body(mask view...)`: with the mask viewed in its own type, or with no argument for `no_mask`.
template <class Call, class M, class Body>
decltype(auto) with_optional_mask(const Call& c, const M& mask, Body&& body) {
    if constexpr (std::is_same_v<M, no_mask>)
        return std::forward<Body>(body)();
    else
        return c.with_mask(mask, std::forward<Body>(body));
}

/// `[B, T]` of a mask (or `{}` for none), the leading extents of logits stored as `[B·T, V]`.
template <class Call, class M>
[[nodiscard]] extents_t<2> leading_of(const Call& c, const M& mask) {
    if constexpr (std::is_same_v<M, no_mask>)
        return {};
    else
        return c.with_mask(mask, [](auto m) { return m.extents(); });
}

template <class L, class Y, class M>
[[nodiscard]] auto logprobs(const L& logits, const Y& tokens, const M& mask, const logits_options& options) {
    return on_values("rlhf::logprobs_from_logits", logits, "logits", [&](const auto& c) {
        const auto y = c.template in<2, std::int64_t>(tokens, "tokens");
        const auto z = c.template in<3>(logits, "logits", y.extents());
        auto out = logprobs_and_entropy<container_t<decltype(c), 2>>{c.template make<2>(y.extents()),
                                                                     c.template make<2>(y.extents())};
        with_optional_mask(c, mask, [&](const auto&... m) {
            logprobs_from_logits(z, y, m..., c.out(out.logprobs, y.extents()), c.out(out.entropy, y.extents()), {},
                                 options);
        });
        return out;
    });
}

template <class L, class Y, class M, class GL, class GH>
[[nodiscard]] auto logprobs_backward(const L& logits, const Y& tokens, const M& mask, const GL& grad_logprobs,
                                     const GH& grad_entropy, const logits_options& options) {
    return on_values("rlhf::logprobs_from_logits_backward", logits, "logits", [&](const auto& c) {
        const auto y = c.template in<2, std::int64_t>(tokens, "tokens");
        const auto z = c.template in<3>(logits, "logits", y.extents());
        auto grad = c.template make<3>(z.extents());
        with_optional_mask(c, mask, [&](const auto&... m) {
            logprobs_from_logits_backward(z, y, m..., c.optional_in(grad_logprobs, "grad_logprobs"),
                                          c.optional_in(grad_entropy, "grad_entropy"), {}, {}, c.out(grad, z.extents()),
                                          options);
        });
        return grad;
    });
}

template <class L, class M>
[[nodiscard]] auto entropy(const L& logits, const M& mask, const logits_options& options) {
    return on_values("rlhf::entropy_from_logits", logits, "logits", [&](const auto& c) {
        const auto z = c.template in<3>(logits, "logits", leading_of(c, mask));
        const extents_t<2> bt{z.extent(0), z.extent(1)};
        auto out = c.template make<2>(bt);
        with_optional_mask(c, mask,
                           [&](const auto&... m) { entropy_from_logits(z, m..., c.out(out, bt), {}, options); });
        return out;
    });
}

template <class L, class M, class GH>
[[nodiscard]] auto entropy_backward(const L& logits, const M& mask, const GH& grad_entropy,
                                    const logits_options& options) {
    return on_values("rlhf::entropy_from_logits_backward", logits, "logits", [&](const auto& c) {
        const auto z = c.template in<3>(logits, "logits", leading_of(c, mask));
        auto grad = c.template make<3>(z.extents());
        with_optional_mask(c, mask, [&](const auto&... m) {
            entropy_from_logits_backward(z, m..., c.in(grad_entropy, "grad_entropy"), {}, {}, c.out(grad, z.extents()),
                                         options);
        });
        return grad;
    });
}

template <class P, class Q, class M>
[[nodiscard]] auto full_kl(const P& policy_logits, const Q& reference_logits, const M& mask,
                           const logits_options& options) {
    return on_values("rlhf::full_kl_from_logits", policy_logits, "policy_logits", [&](const auto& c) {
        const extents_t<2> leading = leading_of(c, mask);
        const auto p = c.template in<3>(policy_logits, "policy_logits", leading);
        const extents_t<2> bt{p.extent(0), p.extent(1)};
        auto out = c.template make<2>(bt);
        with_optional_mask(c, mask, [&](const auto&... m) {
            full_kl_from_logits(p, c.template in<3>(reference_logits, "reference_logits", leading), m...,
                                c.out(out, bt), options);
        });
        return out;
    });
}

template <class P, class Q, class M, class G>
[[nodiscard]] auto full_kl_backward(const P& policy_logits, const Q& reference_logits, const M& mask, const G& grad_kl,
                                    const logits_options& options) {
    return on_values("rlhf::full_kl_from_logits_backward", policy_logits, "policy_logits", [&](const auto& c) {
        const extents_t<2> leading = leading_of(c, mask);
        const auto p = c.template in<3>(policy_logits, "policy_logits", leading);
        auto grad = c.template make<3>(p.extents());
        with_optional_mask(c, mask, [&](const auto&... m) {
            full_kl_from_logits_backward(p, c.template in<3>(reference_logits, "reference_logits", leading), m...,
                                         c.in(grad_kl, "grad_kl"), c.out(grad, p.extents()), options);
        });
        return grad;
    });
}

template <class L, class Y, class M>
[[nodiscard]] auto lm(const L& logits, const Y& tokens, const M& mask, const lm_loss_options& options) {
    return on_values("rlhf::lm_loss", logits, "logits", [&](const auto& c) {
        const auto y = c.template in<2, std::int64_t>(tokens, "tokens");
        const auto z = c.template in<3>(logits, "logits", y.extents());
        lm_loss_with_gradient<container_t<decltype(c), 3>> out{0.0, 0, c.template make<3>(z.extents())};
        const lm_loss_result r = with_optional_mask(c, mask, [&](const auto&... m) {
            return lm_loss(z, y, m..., c.out(out.grad_logits, z.extents()), options);
        });
        out.loss = r.loss;
        out.num_tokens = r.num_tokens;
        return out;
    });
}

/// `kernel(chosen, rejected, grad_chosen, grad_rejected)` over `[N]` rewards, with its gradients.
template <class Cn, class Rj, class Kernel>
[[nodiscard]] auto pairwise(std::string_view function, const Cn& chosen, const Rj& rejected, Kernel&& kernel) {
    return on_values(function, chosen, "chosen", [&](const auto& c) {
        const auto ch = c.template in<1>(chosen, "chosen");
        pairwise_loss_with_gradient<container_t<decltype(c), 1>> out{0.0, 0.0, c.template make<1>(ch.extents()),
                                                                     c.template make<1>(ch.extents())};
        const pairwise_loss_result r =
            kernel(c, ch, c.template in<1>(rejected, "rejected"), c.out(out.grad_chosen, ch.extents()),
                   c.out(out.grad_rejected, ch.extents()));
        out.loss = r.loss;
        out.accuracy = r.accuracy;
        return out;
    });
}

}  // namespace detail::entry

/// Token log-probs and entropies `[B, T]` of `logits` at `tokens` masked by `mask`
/// (`rlhf::logprobs_from_logits`).
template <backend_container L, backend_container Y, backend_container M>
[[nodiscard]] auto logprobs_from_logits(const L& logits, const Y& tokens, const M& mask,
                                        const logits_options& options = {}) {
    return detail::entry::logprobs(logits, tokens, mask, options);
}

/// `rlhf::logprobs_from_logits` without a mask.
template <backend_container L, backend_container Y>
[[nodiscard]] auto logprobs_from_logits(const L& logits, const Y& tokens, const logits_options& options = {}) {
    return detail::entry::logprobs(logits, tokens, detail::entry::no_mask{}, options);
}

/// Gradient `[B, T, V]` of `Σ g_lp·logprobs + g_H·entropy` w.r.t. `logits`; an absent
/// `grad_logprobs` / `grad_entropy` (undefined tensor, empty container) means no gradient through
/// that output (`rlhf::logprobs_from_logits_backward`).
template <backend_container L, backend_container Y, backend_container M, backend_container GL, backend_container GH>
[[nodiscard]] auto logprobs_from_logits_backward(const L& logits, const Y& tokens, const M& mask,
                                                 const GL& grad_logprobs, const GH& grad_entropy,
                                                 const logits_options& options = {}) {
    return detail::entry::logprobs_backward(logits, tokens, mask, grad_logprobs, grad_entropy, options);
}

/// `rlhf::logprobs_from_logits_backward` without a mask.
template <backend_container L, backend_container Y, backend_container GL, backend_container GH>
[[nodiscard]] auto logprobs_from_logits_backward(const L& logits, const Y& tokens, const GL& grad_logprobs,
                                                 const GH& grad_entropy, const logits_options& options = {}) {
    return detail::entry::logprobs_backward(logits, tokens, detail::entry::no_mask{}, grad_logprobs, grad_entropy,
                                            options);
}

/// Entropy `[B, T]` of `logits` masked by `mask` (`rlhf::entropy_from_logits`).
template <backend_container L, backend_container M>
[[nodiscard]] auto entropy_from_logits(const L& logits, const M& mask, const logits_options& options = {}) {
    return detail::entry::entropy(logits, mask, options);
}

/// `rlhf::entropy_from_logits` without a mask.
template <backend_container L>
[[nodiscard]] auto entropy_from_logits(const L& logits, const logits_options& options = {}) {
    return detail::entry::entropy(logits, detail::entry::no_mask{}, options);
}

/// Gradient `[B, T, V]` of `Σ g_H·entropy`, `grad_entropy` `[B, T]` (`rlhf::entropy_from_logits_backward`).
template <backend_container L, backend_container M, backend_container GH>
[[nodiscard]] auto entropy_from_logits_backward(const L& logits, const M& mask, const GH& grad_entropy,
                                                const logits_options& options = {}) {
    return detail::entry::entropy_backward(logits, mask, grad_entropy, options);
}

/// Full-vocabulary KL `[B, T]` between `policy_logits` and `reference_logits` masked by `mask`
/// (`rlhf::full_kl_from_logits`).
template <backend_container P, backend_container Q, backend_container M>
[[nodiscard]] auto full_kl_from_logits(const P& policy_logits, const Q& reference_logits, const M& mask,
                                       const logits_options& options = {}) {
    return detail::entry::full_kl(policy_logits, reference_logits, mask, options);
}

/// `rlhf::full_kl_from_logits` without a mask.
template <backend_container P, backend_container Q>
[[nodiscard]] auto full_kl_from_logits(const P& policy_logits, const Q& reference_logits,
                                       const logits_options& options = {}) {
    return detail::entry::full_kl(policy_logits, reference_logits, detail::entry::no_mask{}, options);
}

/// Gradient `[B, T, V]` of `Σ g·KL` w.r.t. the policy logits, `grad_kl` `[B, T]`
/// (`rlhf::full_kl_from_logits_backward`).
template <backend_container P, backend_container Q, backend_container M, backend_container G>
[[nodiscard]] auto full_kl_from_logits_backward(const P& policy_logits, const Q& reference_logits, const M& mask,
                                                const G& grad_kl, const logits_options& options = {}) {
    return detail::entry::full_kl_backward(policy_logits, reference_logits, mask, grad_kl, options);
}

/// LM loss of `logits` at `tokens` masked by `mask`, with its gradient (`rlhf::lm_loss`).
template <backend_container L, backend_container Y, backend_container M>
[[nodiscard]] auto lm_loss(const L& logits, const Y& tokens, const M& mask, const lm_loss_options& options = {}) {
    return detail::entry::lm(logits, tokens, mask, options);
}

/// `rlhf::lm_loss` without a mask (positions excluded through `ignore_index` only).
template <backend_container L, backend_container Y>
[[nodiscard]] auto lm_loss(const L& logits, const Y& tokens, const lm_loss_options& options = {}) {
    return detail::entry::lm(logits, tokens, detail::entry::no_mask{}, options);
}

/// Pairwise log-sigmoid reward-model loss over `chosen` and `rejected` `[N]`, with gradients
/// (`rlhf::pairwise_logsigmoid_loss`).
template <backend_container Cn, backend_container Rj>
[[nodiscard]] auto pairwise_logsigmoid_loss(const Cn& chosen, const Rj& rejected,
                                            const pairwise_loss_options& options = {}) {
    return detail::entry::pairwise(
        "rlhf::pairwise_logsigmoid_loss", chosen, rejected,
        [&](const auto&, auto c, auto r, auto gc, auto gr) { return pairwise_logsigmoid_loss(c, r, gc, gr, options); });
}

/// `rlhf::pairwise_logsigmoid_loss` with a margin per pair, `margin` `[N]`.
template <backend_container Cn, backend_container Rj, backend_container Mg>
[[nodiscard]] auto pairwise_logsigmoid_loss(const Cn& chosen, const Rj& rejected, const Mg& margin,
                                            const pairwise_loss_options& options = {}) {
    return detail::entry::pairwise(
        "rlhf::pairwise_logsigmoid_loss", chosen, rejected, [&](const auto& call, auto c, auto r, auto gc, auto gr) {
            return pairwise_logsigmoid_loss(c, r, call.template in<1>(margin, "margin"), gc, gr, options);
        });
}

/// Log-exp reward-model loss over `chosen` and `rejected` `[N]`, with gradients (`rlhf::log_exp_loss`).
template <backend_container Cn, backend_container Rj>
[[nodiscard]] auto log_exp_loss(const Cn& chosen, const Rj& rejected) {
    return detail::entry::pairwise(
        "rlhf::log_exp_loss", chosen, rejected,
        [](const auto&, auto c, auto r, auto gc, auto gr) { return log_exp_loss(c, r, gc, gr); });
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
