#pragma once
/// @file
/// The value loss on Eigen matrices: `rlhf::value_loss` over row-major Eigen objects, returning
/// the loss, its gradient w.r.t. the values and the statistics.

#include <Eigen/Core>

#include <string_view>
#include <type_traits>

#include "rlhf/core/reducer.hpp"
#include "rlhf/eigen/view.hpp"
#include "rlhf/kernels/value_loss.hpp"

namespace rlhf::eigen {

/// Loss, gradient and statistics of `rlhf::eigen::value_loss`.
template <class T>
struct value_loss_output {
    double loss = 0.0;
    /// d loss / d values, `[B, T]` (0 on masked tokens).
    row_matrix<T> grad_values;
    value_loss_stats stats{};
};

/// `rlhf::value_loss` (value_loss.hpp: formula, options, framework presets, edge-case policies)
/// on Eigen objects. `values`, `old_values`, `returns`: `[B, T]` row-major matrices (or maps,
/// refs, blocks of one) of one scalar type, float or double; `mask`: `[B, T]` row-major, bool,
/// integer or floating, ∈ {0,1}. Errors: `rlhf::error` naming the argument.
template <class DV, class DO, class DR, class DM, Reducer R = local_reducer>
value_loss_output<typename DV::Scalar> value_loss(const Eigen::DenseBase<DV>& values,
                                                  const Eigen::DenseBase<DO>& old_values,
                                                  const Eigen::DenseBase<DR>& returns, const Eigen::DenseBase<DM>& mask,
                                                  const value_loss_options& options = {}, R&& reducer = R{}) {
    using T = typename DV::Scalar;
    static_assert(std::is_same_v<typename DO::Scalar, T> && std::is_same_v<typename DR::Scalar, T>,
                  "rlhf::eigen::value_loss: values, old_values and returns must have one scalar type");
    constexpr std::string_view function = "rlhf::eigen::value_loss";
    const auto v = as_view(values, function, "values");
    const auto old = as_view(old_values, function, "old_values");
    const auto ret = as_view(returns, function, "returns");
    const auto m = as_view(mask, function, "mask");
    value_loss_output<T> out;
    out.grad_values.resize(values.rows(), values.cols());
    const mut_view<T> g = as_mut_view(out.grad_values, function, "grad_values");
    const auto result = rlhf::value_loss(v, old, ret, m, options, g, mut_view<T>{}, reducer);
    out.loss = result.loss;
    out.stats = result.stats;
    return out;
}

}  // namespace rlhf::eigen
