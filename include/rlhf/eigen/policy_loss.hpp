#pragma once
/// @file
/// The clipped policy loss on Eigen matrices: loss, gradient w.r.t. the log-probs, statistics.
/// Formula, options and presets: rlhf/kernels/policy_loss.hpp.

#include <Eigen/Core>

#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/eigen/view.hpp"
#include "rlhf/kernels/policy_loss.hpp"

namespace rlhf::eigen {

/// Loss, d loss / d log_probs (`[B, T]`, row-major) and statistics.
template <class T>
struct policy_loss_output {
    double loss = 0.0;
    row_matrix<T> grad_log_probs;
    policy_loss_stats stats{};
};

/// `rlhf::policy_loss` on row-major Eigen objects with direct access (`row_matrix<T>`, a
/// `Map`, `Ref` or block of one): `log_probs`, `old_log_probs`, `advantages` `[B, T]` of
/// scalar float or double; `mask` `[B, T]` ∈ {0,1} of scalar bool, uint8, int32, int64 or T.
/// Errors and edge-case policies are the kernel's.
template <class D1, class D2, class D3, class D4>
policy_loss_output<typename D1::Scalar> policy_loss(const Eigen::DenseBase<D1>& log_probs,
                                                    const Eigen::DenseBase<D2>& old_log_probs,
                                                    const Eigen::DenseBase<D3>& advantages,
                                                    const Eigen::DenseBase<D4>& mask,
                                                    const policy_loss_options& options = {}) {
    using T = typename D1::Scalar;
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "rlhf::eigen::policy_loss: log_probs must hold float or double");
    static_assert(std::is_same_v<typename D2::Scalar, T> && std::is_same_v<typename D3::Scalar, T>,
                  "rlhf::eigen::policy_loss: old_log_probs and advantages must have the scalar of log_probs");
    constexpr std::string_view function = "rlhf::eigen::policy_loss";
    policy_loss_output<T> out;
    out.grad_log_probs.resize(log_probs.rows(), log_probs.cols());
    const auto result = ::rlhf::policy_loss(
        as_view(log_probs, function, "log_probs"), as_view(old_log_probs, function, "old_log_probs"),
        as_view(advantages, function, "advantages"), as_view(mask, function, "mask"), options,
        as_mut_view(out.grad_log_probs, function, "grad_log_probs"));
    out.loss = result.loss;
    out.stats = result.stats;
    return out;
}

}  // namespace rlhf::eigen
