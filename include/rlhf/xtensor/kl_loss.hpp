#pragma once
/// @file
/// KL-in-loss on xtensor containers: `rlhf::kl_loss` over row-major `[B, T]` containers,
/// returning the loss, its gradient w.r.t. the log-probs and the statistics.

#include <cstddef>
#include <string_view>
#include <type_traits>

#include "rlhf/core/reducer.hpp"
#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/xtensor/view.hpp"

namespace rlhf::xtensor {

/// Loss, gradient and statistics of `rlhf::xtensor::kl_loss`.
template <class T>
struct kl_loss_output {
    double loss = 0.0;
    /// d loss / d log_probs, `[B, T]` (0 on masked tokens).
    xt::xtensor<T, 2> grad_log_probs;
    kl_loss_stats stats{};
};

namespace detail {
template <class T>
xt::xtensor<T, 2> gradient_like(const view<T>& v) {
    return xt::xtensor<T, 2>::from_shape(
        {static_cast<std::size_t>(v.extent(0)), static_cast<std::size_t>(v.extent(1))});
}
}  // namespace detail

/// `rlhf::kl_loss` (kl_loss.hpp: formula, options, framework presets, edge-case policies) on
/// xtensor containers. `log_probs`, `ref_log_probs`: `[B, T]` row-major, one value type (float
/// or double); `mask`: `[B, T]` row-major, bool, integer or floating, ∈ {0,1}.
template <dense_container EL, dense_container ER, dense_container EM, Reducer R = local_reducer>
auto kl_loss(const EL& log_probs, const ER& ref_log_probs, const EM& mask, const kl_loss_options& options = {},
             R&& reducer = R{}) {
    constexpr std::string_view function = "rlhf::xtensor::kl_loss";
    const auto lp = as_view(log_probs, function, "log_probs");
    const auto ref = as_view(ref_log_probs, function, "ref_log_probs");
    const auto m = as_view(mask, function, "mask");
    using T = typename decltype(lp)::value_type;
    static_assert(std::is_same_v<typename decltype(ref)::value_type, T>,
                  "rlhf::xtensor::kl_loss: log_probs and ref_log_probs must have one value type");
    kl_loss_output<T> out;
    out.grad_log_probs = detail::gradient_like<T>(lp);
    const auto g = as_mut_view(out.grad_log_probs, function, "grad_log_probs");
    const auto result = rlhf::kl_loss(lp, ref, m, options, g, mut_view<T>{}, reducer);
    out.loss = result.loss;
    out.stats = result.stats;
    return out;
}

/// Importance-weighted form (TRL `use_bias_correction_kl`): each token's term times
/// `exp(log_probs − old_log_probs)`, with gradient. `old_log_probs` as `log_probs`.
template <dense_container EL, dense_container ER, dense_container EO, dense_container EM, Reducer R = local_reducer>
auto kl_loss(const EL& log_probs, const ER& ref_log_probs, const EO& old_log_probs, const EM& mask,
             const kl_loss_options& options = {}, R&& reducer = R{}) {
    constexpr std::string_view function = "rlhf::xtensor::kl_loss";
    const auto lp = as_view(log_probs, function, "log_probs");
    const auto ref = as_view(ref_log_probs, function, "ref_log_probs");
    const auto old = as_view(old_log_probs, function, "old_log_probs");
    const auto m = as_view(mask, function, "mask");
    using T = typename decltype(lp)::value_type;
    static_assert(
        std::is_same_v<typename decltype(ref)::value_type, T> && std::is_same_v<typename decltype(old)::value_type, T>,
        "rlhf::xtensor::kl_loss: log_probs, ref_log_probs and old_log_probs must have one value type");
    kl_loss_output<T> out;
    out.grad_log_probs = detail::gradient_like<T>(lp);
    const auto g = as_mut_view(out.grad_log_probs, function, "grad_log_probs");
    const auto result = rlhf::kl_loss(lp, ref, old, m, options, g, mut_view<T>{}, reducer);
    out.loss = result.loss;
    out.stats = result.stats;
    return out;
}

}  // namespace rlhf::xtensor
