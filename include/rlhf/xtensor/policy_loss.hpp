#pragma once
/// @file
/// The clipped policy loss on xtensor containers: loss, gradient w.r.t. the log-probs,
/// statistics. Formula, options and presets: rlhf/kernels/policy_loss.hpp.

#include <array>
#include <cstddef>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/xtensor/view.hpp"

namespace rlhf::xtensor {

/// Loss, d loss / d log_probs (`[B, T]`) and statistics.
template <class T>
struct policy_loss_output {
    double loss = 0.0;
    xt::xtensor<T, 2> grad_log_probs;
    policy_loss_stats stats{};
};

/// `rlhf::policy_loss` on row-major xtensor containers (`xt::xtensor`, `xt::xarray`,
/// `xt::adapt` of a buffer): `log_probs`, `old_log_probs`, `advantages` `[B, T]` of float or
/// double; `mask` `[B, T]` ∈ {0,1} of bool, uint8, int32, int64 or the value type.
/// Errors and edge-case policies are the kernel's.
template <dense_container E1, dense_container E2, dense_container E3, dense_container E4>
auto policy_loss(const E1& log_probs, const E2& old_log_probs, const E3& advantages, const E4& mask,
                 const policy_loss_options& options = {}) {
    constexpr std::string_view function = "rlhf::xtensor::policy_loss";
    const auto lp = as_view(log_probs, function, "log_probs");
    using T = typename decltype(lp)::value_type;
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "rlhf::xtensor::policy_loss: log_probs must hold float or double");
    const auto old = as_view(old_log_probs, function, "old_log_probs");
    const auto adv = as_view(advantages, function, "advantages");
    static_assert(
        std::is_same_v<typename decltype(old)::value_type, T> && std::is_same_v<typename decltype(adv)::value_type, T>,
        "rlhf::xtensor::policy_loss: old_log_probs and advantages must have the value type of log_probs");
    policy_loss_output<T> out;
    out.grad_log_probs = xt::xtensor<T, 2>::from_shape(
        std::array<std::size_t, 2>{static_cast<std::size_t>(lp.extent(0)), static_cast<std::size_t>(lp.extent(1))});
    const auto result = ::rlhf::policy_loss(lp, old, adv, as_view(mask, function, "mask"), options,
                                            as_mut_view(out.grad_log_probs, function, "grad_log_probs"));
    out.loss = result.loss;
    out.stats = result.stats;
    return out;
}

}  // namespace rlhf::xtensor
