#pragma once
/// @file
/// Container entry points of GAE, the masked statistics, whitening, running moments and the
/// framework presets: any backend's containers in (`rlhf/entry/backend.hpp`), new containers of
/// that backend out, computed by the kernels of `rlhf/kernels/gae.hpp`,
/// `rlhf/kernels/masked_stats.hpp` and `rlhf/kernels/presets.hpp` on views (no copy of the inputs).
///
/// Values are float or double (every value argument of a call has one type); masks are bool,
/// an integer type or the values' type, with entries in {0,1}. Semantics, options and edge-case
/// policies are the kernels'; errors name the argument.

#include "rlhf/core/reducer.hpp"
#include "rlhf/entry/backend.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/presets.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Advantages and returns `[B, T]` (or `[T, N]` time-major) in the backend's container `C`.
template <class C>
struct advantages_and_returns {
    C advantages;
    C returns;
};

/// Per-token rewards, advantages and returns `[B, T]` of a preset.
template <class C>
struct preset_advantages {
    C rewards;
    C advantages;
    C returns;
};

/// One reward and one advantage per sequence, `[B]`, of a sequence-level preset.
template <class C>
struct sequence_preset_advantages {
    C rewards;
    C advantages;
};

namespace detail::entry {
/// An `advantages_and_returns` of two new `[B, T]` containers shaped like `extents`.
template <class Call>
[[nodiscard]] auto make_advantages(const Call& c, const extents_t<2>& extents) {
    return advantages_and_returns<container_t<Call, 2>>{c.template make<2>(extents), c.template make<2>(extents)};
}
}  // namespace detail::entry

/// GAE over `[B, T]` rows (`rlhf::compute_gae`).
template <backend_container R, backend_container V, backend_container M>
[[nodiscard]] auto compute_gae(const R& rewards, const V& values, const M& mask, const gae_options& options = {}) {
    return detail::entry::on_values("rlhf::compute_gae", rewards, "rewards", [&](const auto& c) {
        const auto r = c.in(rewards, "rewards");
        auto result = detail::entry::make_advantages(c, r.extents());
        c.with_mask(mask, [&](auto m) {
            compute_gae(r, c.in(values, "values"), m, c.out(result.advantages, r.extents()),
                        c.out(result.returns, r.extents()), options);
        });
        return result;
    });
}

/// GAE over `[B, T]` rows with a bootstrap value per row, `bootstrap_values` `[B]`.
template <backend_container R, backend_container V, backend_container M, backend_container B>
[[nodiscard]] auto compute_gae(const R& rewards, const V& values, const M& mask, const B& bootstrap_values,
                               const gae_options& options = {}) {
    return detail::entry::on_values("rlhf::compute_gae", rewards, "rewards", [&](const auto& c) {
        const auto r = c.in(rewards, "rewards");
        auto result = detail::entry::make_advantages(c, r.extents());
        c.with_mask(mask, [&](auto m) {
            compute_gae(r, c.in(values, "values"), m, c.template in<1>(bootstrap_values, "bootstrap_values"),
                        c.out(result.advantages, r.extents()), c.out(result.returns, r.extents()), options);
        });
        return result;
    });
}

/// Time-major GAE over `[T, N]` rollouts (`rlhf::compute_gae_time_major`): `terminated` and
/// `truncated` share one mask type; `next_values` `[N]`.
template <backend_container R, backend_container V, backend_container D, backend_container U, backend_container F,
          backend_container N>
[[nodiscard]] auto compute_gae_time_major(const R& rewards, const V& values, const D& terminated, const U& truncated,
                                          const F& truncation_values, const N& next_values,
                                          const time_major_gae_options& options = {}) {
    return detail::entry::on_values("rlhf::compute_gae_time_major", rewards, "rewards", [&](const auto& c) {
        const auto r = c.in(rewards, "rewards");
        auto result = detail::entry::make_advantages(c, r.extents());
        c.with_mask(
            terminated,
            [&]<class M>(view<M> done) {
                compute_gae_time_major(
                    r, c.in(values, "values"), done, c.template in<2, M>(truncated, "truncated"),
                    c.in(truncation_values, "truncation_values"), c.template in<1>(next_values, "next_values"),
                    c.out(result.advantages, r.extents()), c.out(result.returns, r.extents()), options);
            },
            "terminated");
        return result;
    });
}

/// Masked whitening of `values` `[B, T]` (`rlhf::masked_whiten`).
template <backend_container V, backend_container M, Reducer R = local_reducer>
[[nodiscard]] auto masked_whiten(const V& values, const M& mask, const whiten_options& options = {}, R&& reducer = {}) {
    return detail::entry::on_values("rlhf::masked_whiten", values, "values", [&](const auto& c) {
        const auto v = c.in(values, "values");
        auto out = c.template make<2>(v.extents());
        c.with_mask(mask, [&](auto m) { masked_whiten(v, m, c.out(out, v.extents()), options, reducer); });
        return out;
    });
}

/// Unmasked whitening of `values` `[B, T]` (`rlhf::whiten`).
template <backend_container V, Reducer R = local_reducer>
[[nodiscard]] auto whiten(const V& values, const whiten_options& options = {}, R&& reducer = {}) {
    return detail::entry::on_values("rlhf::whiten", values, "values", [&](const auto& c) {
        const auto v = c.in(values, "values");
        auto out = c.template make<2>(v.extents());
        whiten(v, c.out(out, v.extents()), options, reducer);
        return out;
    });
}

/// Batch statistics of the valid elements of `values` `[B, T]` (`rlhf::compute_masked_moments`).
template <backend_container V, backend_container M, Reducer R = local_reducer>
[[nodiscard]] masked_moments compute_masked_moments(const V& values, const M& mask, const moments_options& options = {},
                                                    R&& reducer = {}) {
    return detail::entry::on_values("rlhf::compute_masked_moments", values, "values", [&](const auto& c) {
        return c.with_mask(mask,
                           [&](auto m) { return compute_masked_moments(c.in(values, "values"), m, options, reducer); });
    });
}

/// Masked mean over the batch (`rlhf::masked_mean`).
template <backend_container V, backend_container M, Reducer R = local_reducer>
[[nodiscard]] double masked_mean(const V& values, const M& mask, const moments_options& options = {},
                                 R&& reducer = {}) {
    return detail::entry::on_values("rlhf::masked_mean", values, "values", [&](const auto& c) {
        return c.with_mask(mask, [&](auto m) { return masked_mean(c.in(values, "values"), m, options, reducer); });
    });
}

/// Masked variance over the batch (`rlhf::masked_variance`).
template <backend_container V, backend_container M, Reducer R = local_reducer>
[[nodiscard]] double masked_variance(const V& values, const M& mask, const moments_options& options = {},
                                     R&& reducer = {}) {
    return detail::entry::on_values("rlhf::masked_variance", values, "values", [&](const auto& c) {
        return c.with_mask(mask, [&](auto m) { return masked_variance(c.in(values, "values"), m, options, reducer); });
    });
}

/// Per-row masked mean `[B]` (`rlhf::masked_mean_per_row`).
template <backend_container V, backend_container M>
[[nodiscard]] auto masked_mean_per_row(const V& values, const M& mask, const moments_options& options = {}) {
    return detail::entry::on_values("rlhf::masked_mean_per_row", values, "values", [&](const auto& c) {
        const auto v = c.in(values, "values");
        const extents_t<1> rows{v.extent(0)};
        auto out = c.template make<1>(rows);
        c.with_mask(mask, [&](auto m) { masked_mean_per_row(v, m, c.out(out, rows), options); });
        return out;
    });
}

/// Per-row masked variance `[B]` (`rlhf::masked_variance_per_row`).
template <backend_container V, backend_container M>
[[nodiscard]] auto masked_variance_per_row(const V& values, const M& mask, const moments_options& options = {}) {
    return detail::entry::on_values("rlhf::masked_variance_per_row", values, "values", [&](const auto& c) {
        const auto v = c.in(values, "values");
        const extents_t<1> rows{v.extent(0)};
        auto out = c.template make<1>(rows);
        c.with_mask(mask, [&](auto m) { masked_variance_per_row(v, m, c.out(out, rows), options); });
        return out;
    });
}

/// Adds the batch `values` `[n]` to `moments` (`rlhf::running_moments::update`).
template <backend_container V, Reducer R = local_reducer>
batch_moments update_running_moments(running_moments& moments, const V& values, R&& reducer = {}) {
    return detail::entry::on_values("rlhf::update_running_moments", values, "values", [&](const auto& c) {
        return moments.update(c.template in<1>(values, "values"), reducer);
    });
}

/// Runs `preset` with the KL coefficient `kl_coef` (`rlhf::compute_advantages`): `log_probs`,
/// `ref_log_probs`, `mask`, `values` `[B, T]`, `scores` `[B]`, then `preset`, `kl_coef` and
/// `reducer` (which makes the whitening global).
template <backend_container L, backend_container F, backend_container M, backend_container S, backend_container V,
          Reducer R = local_reducer>
[[nodiscard]] auto compute_advantages(const L& log_probs, const F& ref_log_probs, const M& mask, const S& scores,
                                      const V& values, const advantage_preset& preset, double kl_coef,
                                      R&& reducer = {}) {
    return detail::entry::on_values("rlhf::compute_advantages", log_probs, "log_probs", [&](const auto& c) {
        const auto lp = c.in(log_probs, "log_probs");
        using C = detail::entry::container_t<decltype(c), 2>;
        preset_advantages<C> out{c.template make<2>(lp.extents()), c.template make<2>(lp.extents()),
                                 c.template make<2>(lp.extents())};
        c.with_mask(mask, [&](auto m) {
            compute_advantages(lp, c.in(ref_log_probs, "ref_log_probs"), m, c.template in<1>(scores, "scores"),
                               c.in(values, "values"), c.out(out.rewards, lp.extents()),
                               c.out(out.advantages, lp.extents()), c.out(out.returns, lp.extents()), preset, kl_coef,
                               reducer);
        });
        return out;
    });
}

/// Runs a sequence-level preset (`rlhf::compute_sequence_advantages`): `log_probs`,
/// `ref_log_probs`, `mask` `[B, T]`, `scores` and `values` `[B]`, then `preset` and `kl_coef`.
template <backend_container L, backend_container F, backend_container M, backend_container S, backend_container V>
[[nodiscard]] auto compute_sequence_advantages(const L& log_probs, const F& ref_log_probs, const M& mask,
                                               const S& scores, const V& values,
                                               const sequence_advantage_preset& preset, double kl_coef) {
    return detail::entry::on_values("rlhf::compute_sequence_advantages", log_probs, "log_probs", [&](const auto& c) {
        const auto lp = c.in(log_probs, "log_probs");
        const extents_t<1> rows{lp.extent(0)};
        using C = detail::entry::container_t<decltype(c), 1>;
        sequence_preset_advantages<C> out{c.template make<1>(rows), c.template make<1>(rows)};
        c.with_mask(mask, [&](auto m) {
            compute_sequence_advantages(lp, c.in(ref_log_probs, "ref_log_probs"), m, c.template in<1>(scores, "scores"),
                                        c.template in<1>(values, "values"), c.out(out.rewards, rows),
                                        c.out(out.advantages, rows), preset, kl_coef);
        });
        return out;
    });
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
