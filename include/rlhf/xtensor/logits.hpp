#pragma once
/// @file
/// xtensor entry points of the logits kernels (token log-probs and entropy, full-vocabulary KL,
/// LM loss) and of the pairwise reward-model losses, returning values and gradients.
///
/// Layout: logits are a rank-3 row-major container `[B, T, V]` (`xt::xtensor<T, 3>`, or an
/// `xt::adapt` of a contiguous buffer); tokens `[B, T]` int64; masks `[B, T]` of any arithmetic
/// type; rewards rank 1. Results are `xt::xtensor<T, 2>` (`[B, T]`), `xt::xtensor<T, 3>` for
/// gradients w.r.t. logits, `xt::xtensor<T, 1>` for reward gradients. Values and policies are
/// those of the kernels (rlhf/kernels/logits.hpp, rlhf/kernels/reward_model_loss.hpp); errors are
/// named `rlhf::xtensor::<name>`.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/reward_model_loss.hpp"
#include "rlhf/xtensor/view.hpp"

namespace rlhf::xtensor {

/// Token log-probs and entropies, `[B, T]` each.
template <class T>
struct logprobs_result {
    xt::xtensor<T, 2> logprobs;
    xt::xtensor<T, 2> entropy;
};

/// LM loss and its gradient `[B, T, V]` w.r.t. the logits.
template <class T>
struct lm_loss_output {
    double loss = 0.0;
    index_t num_tokens = 0;
    xt::xtensor<T, 3> grad_logits;
};

/// A pairwise reward-model loss and its gradients `[N]` w.r.t. both rewards.
template <class T>
struct pairwise_loss_output {
    double loss = 0.0;
    double accuracy = 0.0;
    xt::xtensor<T, 1> grad_chosen;
    xt::xtensor<T, 1> grad_rejected;
};

namespace logits_detail {

template <class E>
using value_of = std::remove_cv_t<std::remove_reference_t<decltype(*std::declval<const E&>().data())>>;

template <class T>
xt::xtensor<T, 2> bt(index_t batch, index_t steps) {
    return xt::xtensor<T, 2>::from_shape({static_cast<std::size_t>(batch), static_cast<std::size_t>(steps)});
}

template <class T>
xt::xtensor<T, 3> cube_like(const view<T, 3>& logits) {
    return xt::xtensor<T, 3>::from_shape({static_cast<std::size_t>(logits.extent(0)),
                                          static_cast<std::size_t>(logits.extent(1)),
                                          static_cast<std::size_t>(logits.extent(2))});
}

template <class E>
view<std::int64_t> token_view(const E& tokens, std::string_view function) {
    static_assert(std::is_same_v<value_of<E>, std::int64_t>, "rlhf::xtensor: token ids must be int64 (std::int64_t)");
    return as_view<2>(tokens, function, "tokens");
}

/// Calls `body(mask_pointer)`: nullptr for `no_mask`, else a view of the container.
struct no_mask {};

template <class E, class Body>
decltype(auto) with_mask(const E& mask, std::string_view function, Body&& body) {
    if constexpr (std::is_same_v<E, no_mask>) {
        return body(static_cast<const view<bool>*>(nullptr));
    } else {
        const auto m = as_view<2>(mask, function, "mask");
        return body(&m);
    }
}

template <class EL, class EY, class EM>
auto logprobs(const EL& logits, const EY& tokens, const EM& mask, const logits_options& options) {
    using T = value_of<EL>;
    constexpr std::string_view name = "rlhf::xtensor::logprobs_from_logits";
    const auto z = as_view<3>(logits, name, "logits");
    const auto y = token_view(tokens, name);
    logprobs_result<T> out{bt<T>(z.extent(0), z.extent(1)), bt<T>(z.extent(0), z.extent(1))};
    with_mask(mask, name, [&](auto m) {
        rlhf::logits_detail::forward(name, z, &y, m, as_mut_view<2>(out.logprobs, name, "logprobs"),
                                     as_mut_view<2>(out.entropy, name, "entropy"), mut_view<double>{},
                                     options.temperature);
    });
    return out;
}

template <class EL, class EY, class EM, class EG, class EH>
auto logprobs_backward(const EL& logits, const EY& tokens, const EM& mask, const EG& grad_logprobs,
                       const EH& grad_entropy, const logits_options& options) {
    using T = value_of<EL>;
    constexpr std::string_view name = "rlhf::xtensor::logprobs_from_logits_backward";
    const auto z = as_view<3>(logits, name, "logits");
    const auto y = token_view(tokens, name);
    auto grad = cube_like(z);
    const view<T> g_lp = grad_logprobs.size() == 0 ? view<T>{} : as_view<2>(grad_logprobs, name, "grad_logprobs");
    const view<T> g_h = grad_entropy.size() == 0 ? view<T>{} : as_view<2>(grad_entropy, name, "grad_entropy");
    with_mask(mask, name, [&](auto m) {
        rlhf::logits_detail::backward(name, z, &y, m, g_lp, g_h, as_mut_view<3>(grad, name, "grad_logits"),
                                      view<double>{}, view<T>{}, options.temperature);
    });
    return grad;
}

template <class EL, class EM>
auto entropy(const EL& logits, const EM& mask, const logits_options& options) {
    using T = value_of<EL>;
    constexpr std::string_view name = "rlhf::xtensor::entropy_from_logits";
    const auto z = as_view<3>(logits, name, "logits");
    auto out = bt<T>(z.extent(0), z.extent(1));
    with_mask(mask, name, [&](auto m) {
        rlhf::logits_detail::forward(name, z, static_cast<const view<std::int64_t>*>(nullptr), m, mut_view<T>{},
                                     as_mut_view<2>(out, name, "entropy"), mut_view<double>{}, options.temperature);
    });
    return out;
}

template <class EL, class EM, class EH>
auto entropy_backward(const EL& logits, const EM& mask, const EH& grad_entropy, const logits_options& options) {
    using T = value_of<EL>;
    constexpr std::string_view name = "rlhf::xtensor::entropy_from_logits_backward";
    const auto z = as_view<3>(logits, name, "logits");
    auto grad = cube_like(z);
    with_mask(mask, name, [&](auto m) {
        rlhf::logits_detail::backward(name, z, static_cast<const view<std::int64_t>*>(nullptr), m, view<T>{},
                                      as_view<2>(grad_entropy, name, "grad_entropy"),
                                      as_mut_view<3>(grad, name, "grad_logits"), view<double>{}, view<T>{},
                                      options.temperature);
    });
    return grad;
}

template <class EP, class EQ, class EM>
auto full_kl(const EP& policy_logits, const EQ& reference_logits, const EM& mask, const logits_options& options) {
    using T = value_of<EP>;
    static_assert(std::is_same_v<T, value_of<EQ>>, "rlhf::xtensor::full_kl_from_logits: one value type");
    constexpr std::string_view name = "rlhf::xtensor::full_kl_from_logits";
    const auto p = as_view<3>(policy_logits, name, "policy_logits");
    const auto q = as_view<3>(reference_logits, name, "reference_logits");
    auto out = bt<T>(p.extent(0), p.extent(1));
    with_mask(mask, name, [&](auto m) {
        rlhf::logits_detail::full_kl(name, p, q, m, as_mut_view<2>(out, name, "kl"), options.temperature);
    });
    return out;
}

template <class EP, class EQ, class EM, class EG>
auto full_kl_backward(const EP& policy_logits, const EQ& reference_logits, const EM& mask, const EG& grad_kl,
                      const logits_options& options) {
    constexpr std::string_view name = "rlhf::xtensor::full_kl_from_logits_backward";
    const auto p = as_view<3>(policy_logits, name, "policy_logits");
    const auto q = as_view<3>(reference_logits, name, "reference_logits");
    auto grad = cube_like(p);
    with_mask(mask, name, [&](auto m) {
        rlhf::logits_detail::full_kl_backward(name, p, q, m, as_view<2>(grad_kl, name, "grad_kl"),
                                              as_mut_view<3>(grad, name, "grad_policy_logits"), options.temperature);
    });
    return grad;
}

template <class EL, class EY, class EM>
auto lm(const EL& logits, const EY& tokens, const EM& mask, const lm_loss_options& options) {
    using T = value_of<EL>;
    constexpr std::string_view name = "rlhf::xtensor::lm_loss";
    const auto z = as_view<3>(logits, name, "logits");
    const auto y = token_view(tokens, name);
    lm_loss_output<T> out{0.0, 0, cube_like(z)};
    const auto grad = as_mut_view<3>(out.grad_logits, name, "grad_logits");
    const auto r =
        with_mask(mask, name, [&](auto m) { return rlhf::logits_detail::lm_loss(name, z, y, m, &grad, 1.0, options); });
    out.loss = r.loss;
    out.num_tokens = r.num_tokens;
    return out;
}

template <class EC, class ER, class EM>
auto pairwise(std::string_view name, const EC& chosen, const ER& rejected, const EM* margin, double scalar_margin,
              double center) {
    using T = value_of<EC>;
    const auto c = as_view<1>(chosen, name, "chosen");
    const auto r = as_view<1>(rejected, name, "rejected");
    const auto n = static_cast<std::size_t>(c.extent(0));
    pairwise_loss_output<T> out{0.0, 0.0, xt::xtensor<T, 1>::from_shape({n}), xt::xtensor<T, 1>::from_shape({n})};
    view<T, 1> m{};
    if (margin != nullptr) m = as_view<1>(*margin, name, "margin");
    const auto result = rlhf::reward_loss_detail::loss<T>(
        name, c, r, margin != nullptr ? &m : nullptr, as_mut_view<1>(out.grad_chosen, name, "grad_chosen"),
        as_mut_view<1>(out.grad_rejected, name, "grad_rejected"), scalar_margin, center);
    out.loss = result.loss;
    out.accuracy = result.accuracy;
    return out;
}

}  // namespace logits_detail

/// Token log-probs and entropies of `logits [B, T, V]` at `tokens [B, T]` (int64), masked by
/// `mask [B, T]`. Policies: `rlhf::logprobs_from_logits`.
template <dense_container EL, dense_container EY, dense_container EM>
auto logprobs_from_logits(const EL& logits, const EY& tokens, const EM& mask, const logits_options& options = {}) {
    return logits_detail::logprobs(logits, tokens, mask, options);
}

/// `rlhf::xtensor::logprobs_from_logits` without a mask.
template <dense_container EL, dense_container EY>
auto logprobs_from_logits(const EL& logits, const EY& tokens, const logits_options& options = {}) {
    return logits_detail::logprobs(logits, tokens, logits_detail::no_mask{}, options);
}

/// Gradient `[B, T, V]` of `Σ g_lp·logprobs + g_H·entropy`; `grad_logprobs` / `grad_entropy`
/// `[B, T]`, an empty container meaning no gradient through that output. Policies:
/// `rlhf::logprobs_from_logits_backward` (statistics recomputed).
template <dense_container EL, dense_container EY, dense_container EM, dense_container EG, dense_container EH>
auto logprobs_from_logits_backward(const EL& logits, const EY& tokens, const EM& mask, const EG& grad_logprobs,
                                   const EH& grad_entropy, const logits_options& options = {}) {
    return logits_detail::logprobs_backward(logits, tokens, mask, grad_logprobs, grad_entropy, options);
}

/// `rlhf::xtensor::logprobs_from_logits_backward` without a mask.
template <dense_container EL, dense_container EY, dense_container EG, dense_container EH>
auto logprobs_from_logits_backward(const EL& logits, const EY& tokens, const EG& grad_logprobs, const EH& grad_entropy,
                                   const logits_options& options = {}) {
    return logits_detail::logprobs_backward(logits, tokens, logits_detail::no_mask{}, grad_logprobs, grad_entropy,
                                            options);
}

/// Entropy `[B, T]` of `logits [B, T, V]` masked by `mask [B, T]`. Policies: `rlhf::entropy_from_logits`.
template <dense_container EL, dense_container EM>
auto entropy_from_logits(const EL& logits, const EM& mask, const logits_options& options = {}) {
    return logits_detail::entropy(logits, mask, options);
}

/// `rlhf::xtensor::entropy_from_logits` without a mask.
template <dense_container EL>
auto entropy_from_logits(const EL& logits, const logits_options& options = {}) {
    return logits_detail::entropy(logits, logits_detail::no_mask{}, options);
}

/// Gradient `[B, T, V]` of `Σ g_H·entropy`, `grad_entropy [B, T]`. Policies:
/// `rlhf::entropy_from_logits_backward`.
template <dense_container EL, dense_container EM, dense_container EH>
auto entropy_from_logits_backward(const EL& logits, const EM& mask, const EH& grad_entropy,
                                  const logits_options& options = {}) {
    return logits_detail::entropy_backward(logits, mask, grad_entropy, options);
}

/// `rlhf::xtensor::entropy_from_logits_backward` without a mask.
template <dense_container EL, dense_container EH>
auto entropy_from_logits_backward(const EL& logits, const EH& grad_entropy, const logits_options& options = {}) {
    return logits_detail::entropy_backward(logits, logits_detail::no_mask{}, grad_entropy, options);
}

/// Full-vocabulary KL `[B, T]` between `policy_logits` and `reference_logits` `[B, T, V]`, masked by
/// `mask [B, T]`. Policies: `rlhf::full_kl_from_logits`.
template <dense_container EP, dense_container EQ, dense_container EM>
auto full_kl_from_logits(const EP& policy_logits, const EQ& reference_logits, const EM& mask,
                         const logits_options& options = {}) {
    return logits_detail::full_kl(policy_logits, reference_logits, mask, options);
}

/// `rlhf::xtensor::full_kl_from_logits` without a mask.
template <dense_container EP, dense_container EQ>
auto full_kl_from_logits(const EP& policy_logits, const EQ& reference_logits, const logits_options& options = {}) {
    return logits_detail::full_kl(policy_logits, reference_logits, logits_detail::no_mask{}, options);
}

/// Gradient `[B, T, V]` of `Σ g·KL` w.r.t. the policy logits, `grad_kl [B, T]`. Policies:
/// `rlhf::full_kl_from_logits_backward`.
template <dense_container EP, dense_container EQ, dense_container EM, dense_container EG>
auto full_kl_from_logits_backward(const EP& policy_logits, const EQ& reference_logits, const EM& mask,
                                  const EG& grad_kl, const logits_options& options = {}) {
    return logits_detail::full_kl_backward(policy_logits, reference_logits, mask, grad_kl, options);
}

/// `rlhf::xtensor::full_kl_from_logits_backward` without a mask.
template <dense_container EP, dense_container EQ, dense_container EG>
auto full_kl_from_logits_backward(const EP& policy_logits, const EQ& reference_logits, const EG& grad_kl,
                                  const logits_options& options = {}) {
    return logits_detail::full_kl_backward(policy_logits, reference_logits, logits_detail::no_mask{}, grad_kl, options);
}

/// LM loss of `logits [B, T, V]` at `tokens [B, T]` masked by `mask [B, T]`, with its gradient
/// `[B, T, V]`. Policies: `rlhf::lm_loss`.
template <dense_container EL, dense_container EY, dense_container EM>
auto lm_loss(const EL& logits, const EY& tokens, const EM& mask, const lm_loss_options& options = {}) {
    return logits_detail::lm(logits, tokens, mask, options);
}

/// `rlhf::xtensor::lm_loss` without a mask.
template <dense_container EL, dense_container EY>
auto lm_loss(const EL& logits, const EY& tokens, const lm_loss_options& options = {}) {
    return logits_detail::lm(logits, tokens, logits_detail::no_mask{}, options);
}

/// Pairwise log-sigmoid reward-model loss over `chosen [N]`, `rejected [N]` with gradients.
/// Policies: `rlhf::pairwise_logsigmoid_loss`.
template <dense_container EC, dense_container ER>
auto pairwise_logsigmoid_loss(const EC& chosen, const ER& rejected, const pairwise_loss_options& options = {}) {
    return logits_detail::pairwise("rlhf::xtensor::pairwise_logsigmoid_loss", chosen, rejected,
                                   static_cast<const EC*>(nullptr), options.margin, options.center_rewards_coefficient);
}

/// `rlhf::xtensor::pairwise_logsigmoid_loss` with a margin per pair, `margin [N]`.
template <dense_container EC, dense_container ER, dense_container EM>
auto pairwise_logsigmoid_loss(const EC& chosen, const ER& rejected, const EM& margin,
                              const pairwise_loss_options& options = {}) {
    return logits_detail::pairwise("rlhf::xtensor::pairwise_logsigmoid_loss", chosen, rejected, &margin, options.margin,
                                   options.center_rewards_coefficient);
}

/// Log-exp reward-model loss with gradients. Policies: `rlhf::log_exp_loss`.
template <dense_container EC, dense_container ER>
auto log_exp_loss(const EC& chosen, const ER& rejected) {
    return logits_detail::pairwise("rlhf::xtensor::log_exp_loss", chosen, rejected, static_cast<const EC*>(nullptr),
                                   0.0, 0.0);
}

}  // namespace rlhf::xtensor
