#pragma once
/// @file
/// Container entry points of the per-token KL estimators and reward shaping
/// (`rlhf/kernels/kl.hpp`, `rlhf/kernels/reward_shaping.hpp`): `[B, T]` log-probs and masks and
/// `[B]` scores of any backend in, new containers of that backend out.

#include "rlhf/entry/backend.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Per-token KL `[B, T]` of `log_probs` against `ref_log_probs` (`rlhf::token_kl`).
template <backend_container L, backend_container F>
[[nodiscard]] auto token_kl(const L& log_probs, const F& ref_log_probs, const kl_options& options = {}) {
    return detail::entry::on_values("rlhf::token_kl", log_probs, "log_probs", [&](const auto& c) {
        const auto lp = c.in(log_probs, "log_probs");
        auto out = c.template make<2>(lp.extents());
        token_kl(lp, c.in(ref_log_probs, "ref_log_probs"), c.out(out, lp.extents()), options);
        return out;
    });
}

/// Masked per-token KL `[B, T]`: 0 where `mask` is 0 (`rlhf::token_kl`).
template <backend_container L, backend_container F, backend_container M>
[[nodiscard]] auto token_kl(const L& log_probs, const F& ref_log_probs, const M& mask, const kl_options& options = {}) {
    return detail::entry::on_values("rlhf::token_kl", log_probs, "log_probs", [&](const auto& c) {
        const auto lp = c.in(log_probs, "log_probs");
        auto out = c.template make<2>(lp.extents());
        c.with_mask(mask, [&](auto m) {
            token_kl(lp, c.in(ref_log_probs, "ref_log_probs"), m, c.out(out, lp.extents()), options);
        });
        return out;
    });
}

/// Per-token rewards `[B, T]` from a given `kl` `[B, T]`, a mask and `scores` `[B]`
/// (`rlhf::shape_rewards`).
template <backend_container K, backend_container M, backend_container S>
[[nodiscard]] auto shape_rewards(const K& kl, const M& mask, const S& scores,
                                 const reward_shaping_options& options = {}) {
    return detail::entry::on_values("rlhf::shape_rewards", kl, "kl", [&](const auto& c) {
        const auto k = c.in(kl, "kl");
        auto out = c.template make<2>(k.extents());
        c.with_mask(mask, [&](auto m) {
            shape_rewards(k, m, c.template in<1>(scores, "scores"), c.out(out, k.extents()), options);
        });
        return out;
    });
}

/// Per-token rewards `[B, T]` with the KL computed from the log-probs in the same pass
/// (`rlhf::shape_rewards_from_logprobs`).
template <backend_container L, backend_container F, backend_container M, backend_container S>
[[nodiscard]] auto shape_rewards_from_logprobs(const L& log_probs, const F& ref_log_probs, const M& mask,
                                               const S& scores, const reward_shaping_options& options = {}) {
    return detail::entry::on_values("rlhf::shape_rewards_from_logprobs", log_probs, "log_probs", [&](const auto& c) {
        const auto lp = c.in(log_probs, "log_probs");
        auto out = c.template make<2>(lp.extents());
        c.with_mask(mask, [&](auto m) {
            shape_rewards_from_logprobs(lp, c.in(ref_log_probs, "ref_log_probs"), m, c.template in<1>(scores, "scores"),
                                        c.out(out, lp.extents()), options);
        });
        return out;
    });
}

/// Per-token KL rewards `−kl_coef · KL` `[B, T]`, no score (`rlhf::kl_rewards`).
template <backend_container L, backend_container F>
[[nodiscard]] auto kl_rewards(const L& log_probs, const F& ref_log_probs, double kl_coef, const kl_options& kl = {}) {
    return detail::entry::on_values("rlhf::kl_rewards", log_probs, "log_probs", [&](const auto& c) {
        const auto lp = c.in(log_probs, "log_probs");
        auto out = c.template make<2>(lp.extents());
        kl_rewards(lp, c.in(ref_log_probs, "ref_log_probs"), c.out(out, lp.extents()), kl_coef, kl);
        return out;
    });
}

/// One reward per sequence `[B]`: `score − β·mean KL` (`rlhf::sequence_rewards`, ColossalChat v1).
template <backend_container S, backend_container L, backend_container F, backend_container M>
[[nodiscard]] auto sequence_rewards(const S& scores, const L& log_probs, const F& ref_log_probs, const M& mask,
                                    const sequence_reward_options& options = {}) {
    return detail::entry::on_values("rlhf::sequence_rewards", scores, "scores", [&](const auto& c) {
        const auto s = c.template in<1>(scores, "scores");
        auto out = c.template make<1>(s.extents());
        c.with_mask(mask, [&](auto m) {
            sequence_rewards(s, c.in(log_probs, "log_probs"), c.in(ref_log_probs, "ref_log_probs"), m,
                             c.out(out, s.extents()), options);
        });
        return out;
    });
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
