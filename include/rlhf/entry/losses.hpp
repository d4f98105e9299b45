#pragma once
/// @file
/// Container entry points of the policy, value and KL losses (`rlhf/kernels/policy_loss.hpp`,
/// `value_loss.hpp`, `kl_loss.hpp`): `[B, T]` inputs of any backend in, the loss, its gradient
/// (a new container of that backend) and the statistics out. LibTorch users who want autograd
/// take `rlhf::libtorch::policy_loss` and its siblings, which wrap these.

#include "rlhf/core/reducer.hpp"
#include "rlhf/entry/backend.hpp"
#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// The policy loss, d loss / d log_probs `[B, T]` (0 on masked tokens) and statistics.
template <class C>
struct policy_loss_with_gradient {
    double loss = 0.0;
    C grad_log_probs;
    policy_loss_stats stats{};
};

/// The value loss, d loss / d values `[B, T]` (0 on masked tokens) and statistics.
template <class C>
struct value_loss_with_gradient {
    double loss = 0.0;
    C grad_values;
    value_loss_stats stats{};
};

/// The KL loss, d loss / d log_probs `[B, T]` (0 on masked tokens) and statistics.
template <class C>
struct kl_loss_with_gradient {
    double loss = 0.0;
    C grad_log_probs;
    kl_loss_stats stats{};
};

/// `rlhf::policy_loss` on containers: `log_probs`, `old_log_probs`, `advantages`, `mask` `[B, T]`.
template <backend_container L, backend_container O, backend_container A, backend_container M, Reducer R = local_reducer>
[[nodiscard]] auto policy_loss(const L& log_probs, const O& old_log_probs, const A& advantages, const M& mask,
                               const policy_loss_options& options = {}, R&& reducer = {}) {
    return detail::entry::on_values("rlhf::policy_loss", log_probs, "log_probs", [&](const auto& c) {
        const auto lp = c.in(log_probs, "log_probs");
        policy_loss_with_gradient<detail::entry::container_t<decltype(c), 2>> out{0.0,
                                                                                  c.template make<2>(lp.extents())};
        const auto result = c.with_mask(mask, [&](auto m) {
            return policy_loss(lp, c.in(old_log_probs, "old_log_probs"), c.in(advantages, "advantages"), m,
                               c.out(out.grad_log_probs, lp.extents()), {}, options, reducer);
        });
        out.loss = result.loss;
        out.stats = result.stats;
        return out;
    });
}

/// `rlhf::value_loss` on containers: `values`, `old_values`, `returns`, `mask` `[B, T]`.
template <backend_container V, backend_container O, backend_container Ret, backend_container M,
          Reducer R = local_reducer>
[[nodiscard]] auto value_loss(const V& values, const O& old_values, const Ret& returns, const M& mask,
                              const value_loss_options& options = {}, R&& reducer = {}) {
    return detail::entry::on_values("rlhf::value_loss", values, "values", [&](const auto& c) {
        const auto v = c.in(values, "values");
        value_loss_with_gradient<detail::entry::container_t<decltype(c), 2>> out{0.0, c.template make<2>(v.extents())};
        const auto result = c.with_mask(mask, [&](auto m) {
            return value_loss(v, c.in(old_values, "old_values"), c.in(returns, "returns"), m,
                              c.out(out.grad_values, v.extents()), {}, options, reducer);
        });
        out.loss = result.loss;
        out.stats = result.stats;
        return out;
    });
}

/// `rlhf::kl_loss` on containers: `log_probs`, `ref_log_probs`, `mask` `[B, T]`.
template <backend_container L, backend_container F, backend_container M, Reducer R = local_reducer>
[[nodiscard]] auto kl_loss(const L& log_probs, const F& ref_log_probs, const M& mask,
                           const kl_loss_options& options = {}, R&& reducer = {}) {
    return detail::entry::on_values("rlhf::kl_loss", log_probs, "log_probs", [&](const auto& c) {
        const auto lp = c.in(log_probs, "log_probs");
        kl_loss_with_gradient<detail::entry::container_t<decltype(c), 2>> out{0.0, c.template make<2>(lp.extents())};
        const auto result = c.with_mask(mask, [&](auto m) {
            return kl_loss(lp, c.in(ref_log_probs, "ref_log_probs"), m, c.out(out.grad_log_probs, lp.extents()), {},
                           options, reducer);
        });
        out.loss = result.loss;
        out.stats = result.stats;
        return out;
    });
}

/// The importance-weighted KL loss (TRL `use_bias_correction_kl`), `old_log_probs` `[B, T]`.
template <backend_container L, backend_container F, backend_container O, backend_container M, Reducer R = local_reducer>
[[nodiscard]] auto kl_loss(const L& log_probs, const F& ref_log_probs, const O& old_log_probs, const M& mask,
                           const kl_loss_options& options = {}, R&& reducer = {}) {
    return detail::entry::on_values("rlhf::kl_loss", log_probs, "log_probs", [&](const auto& c) {
        const auto lp = c.in(log_probs, "log_probs");
        kl_loss_with_gradient<detail::entry::container_t<decltype(c), 2>> out{0.0, c.template make<2>(lp.extents())};
        const auto result = c.with_mask(mask, [&](auto m) {
            return kl_loss(lp, c.in(ref_log_probs, "ref_log_probs"), c.in(old_log_probs, "old_log_probs"), m,
                           c.out(out.grad_log_probs, lp.extents()), {}, options, reducer);
        });
        out.loss = result.loss;
        out.stats = result.stats;
        return out;
    });
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
