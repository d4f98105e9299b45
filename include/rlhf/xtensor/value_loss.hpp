#pragma once
/// @file
/// The value loss on xtensor containers: `rlhf::value_loss` over row-major `[B, T]` containers
/// (or `xt::adapt` of row-major buffers), returning the loss, its gradient w.r.t. the values and
/// the statistics.

#include <cstddef>
#include <string_view>
#include <type_traits>

#include "rlhf/core/reducer.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/xtensor/view.hpp"

namespace rlhf::xtensor {

/// Loss, gradient and statistics of `rlhf::xtensor::value_loss`.
template <class T>
struct value_loss_output {
    double loss = 0.0;
    /// d loss / d values, `[B, T]` (0 on masked tokens).
    xt::xtensor<T, 2> grad_values;
    value_loss_stats stats{};
};

/// `rlhf::value_loss` (value_loss.hpp: formula, options, framework presets, edge-case policies)
/// on xtensor containers. `values`, `old_values`, `returns`: `[B, T]` row-major, one value type
/// (float or double); `mask`: `[B, T]` row-major, bool, integer or floating, ∈ {0,1}.
template <dense_container EV, dense_container EO, dense_container ER, dense_container EM, Reducer R = local_reducer>
auto value_loss(const EV& values, const EO& old_values, const ER& returns, const EM& mask,
                const value_loss_options& options = {}, R&& reducer = R{}) {
    constexpr std::string_view function = "rlhf::xtensor::value_loss";
    const auto v = as_view(values, function, "values");
    const auto old = as_view(old_values, function, "old_values");
    const auto ret = as_view(returns, function, "returns");
    const auto m = as_view(mask, function, "mask");
    using T = typename decltype(v)::value_type;
    static_assert(
        std::is_same_v<typename decltype(old)::value_type, T> && std::is_same_v<typename decltype(ret)::value_type, T>,
        "rlhf::xtensor::value_loss: values, old_values and returns must have one value type");
    value_loss_output<T> out;
    out.grad_values =
        xt::xtensor<T, 2>::from_shape({static_cast<std::size_t>(v.extent(0)), static_cast<std::size_t>(v.extent(1))});
    const auto g = as_mut_view(out.grad_values, function, "grad_values");
    const auto result = rlhf::value_loss(v, old, ret, m, options, g, mut_view<T>{}, reducer);
    out.loss = result.loss;
    out.stats = result.stats;
    return out;
}

}  // namespace rlhf::xtensor
