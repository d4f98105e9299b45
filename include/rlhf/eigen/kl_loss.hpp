#pragma once
/// @file
/// KL-in-loss on Eigen matrices: `rlhf::kl_loss` over row-major Eigen objects, returning the
/// loss, its gradient w.r.t. the log-probs and the statistics.

#include <Eigen/Core>

#include <string_view>
#include <type_traits>

#include "rlhf/core/reducer.hpp"
#include "rlhf/eigen/view.hpp"
#include "rlhf/kernels/kl_loss.hpp"

namespace rlhf::eigen {

/// Loss, gradient and statistics of `rlhf::eigen::kl_loss`.
template <class T>
struct kl_loss_output {
    double loss = 0.0;
    /// d loss / d log_probs, `[B, T]` (0 on masked tokens).
    row_matrix<T> grad_log_probs;
    kl_loss_stats stats{};
};

/// `rlhf::kl_loss` (kl_loss.hpp: formula, options, framework presets, edge-case policies) on
/// Eigen objects. `log_probs`, `ref_log_probs`: `[B, T]` row-major, one scalar type (float or
/// double); `mask`: `[B, T]` row-major, bool, integer or floating, ∈ {0,1}.
template <class DL, class DR, class DM, Reducer R = local_reducer>
kl_loss_output<typename DL::Scalar> kl_loss(const Eigen::DenseBase<DL>& log_probs,
                                            const Eigen::DenseBase<DR>& ref_log_probs, const Eigen::DenseBase<DM>& mask,
                                            const kl_loss_options& options = {}, R&& reducer = R{}) {
    using T = typename DL::Scalar;
    static_assert(std::is_same_v<typename DR::Scalar, T>,
                  "rlhf::eigen::kl_loss: log_probs and ref_log_probs must have one scalar type");
    constexpr std::string_view function = "rlhf::eigen::kl_loss";
    const auto lp = as_view(log_probs, function, "log_probs");
    const auto ref = as_view(ref_log_probs, function, "ref_log_probs");
    const auto m = as_view(mask, function, "mask");
    kl_loss_output<T> out;
    out.grad_log_probs.resize(log_probs.rows(), log_probs.cols());
    const mut_view<T> g = as_mut_view(out.grad_log_probs, function, "grad_log_probs");
    const auto result = rlhf::kl_loss(lp, ref, m, options, g, mut_view<T>{}, reducer);
    out.loss = result.loss;
    out.stats = result.stats;
    return out;
}

/// Importance-weighted form (TRL `use_bias_correction_kl`): each token's term times
/// `exp(log_probs − old_log_probs)`, with gradient. `old_log_probs` as `log_probs`.
template <class DL, class DR, class DO, class DM, Reducer R = local_reducer>
kl_loss_output<typename DL::Scalar> kl_loss(const Eigen::DenseBase<DL>& log_probs,
                                            const Eigen::DenseBase<DR>& ref_log_probs,
                                            const Eigen::DenseBase<DO>& old_log_probs, const Eigen::DenseBase<DM>& mask,
                                            const kl_loss_options& options = {}, R&& reducer = R{}) {
    using T = typename DL::Scalar;
    static_assert(std::is_same_v<typename DR::Scalar, T> && std::is_same_v<typename DO::Scalar, T>,
                  "rlhf::eigen::kl_loss: log_probs, ref_log_probs and old_log_probs must have one scalar type");
    constexpr std::string_view function = "rlhf::eigen::kl_loss";
    const auto lp = as_view(log_probs, function, "log_probs");
    const auto ref = as_view(ref_log_probs, function, "ref_log_probs");
    const auto old = as_view(old_log_probs, function, "old_log_probs");
    const auto m = as_view(mask, function, "mask");
    kl_loss_output<T> out;
    out.grad_log_probs.resize(log_probs.rows(), log_probs.cols());
    const mut_view<T> g = as_mut_view(out.grad_log_probs, function, "grad_log_probs");
    const auto result = rlhf::kl_loss(lp, ref, old, m, options, g, mut_view<T>{}, reducer);
    out.loss = result.loss;
    out.stats = result.stats;
    return out;
}

}  // namespace rlhf::eigen
