#pragma once
/// @file
/// Eigen entry points of the logits kernels (token log-probs and entropy, full-vocabulary KL,
/// LM loss) and of the pairwise reward-model losses, returning values and gradients.
///
/// Layout: Eigen has no rank-3 dense type, so `[B, T, V]` logits are a row-major `[B·T, V]`
/// matrix (row `b·T + t` is position (b, t); a `Map` of a contiguous `[B, T, V]` buffer is
/// exactly that). B and T come from the `[B, T]` tokens or mask, which every entry point takes;
/// `[B, T, V]` gradients are returned in the same `[B·T, V]` layout. Tokens are an int64 matrix.
/// Values and policies are those of the kernels (rlhf/kernels/logits.hpp,
/// rlhf/kernels/reward_model_loss.hpp); errors are named `rlhf::eigen::<name>`.

#include <Eigen/Core>

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/eigen/view.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/reward_model_loss.hpp"

namespace rlhf::eigen {

/// Token log-probs and entropies, `[B, T]` each.
template <class T>
struct logprobs_result {
    row_matrix<T> logprobs;
    row_matrix<T> entropy;
};

/// LM loss and its gradient `[B·T, V]` w.r.t. the logits.
template <class T>
struct lm_loss_output {
    double loss = 0.0;
    index_t num_tokens = 0;
    row_matrix<T> grad_logits;
};

/// A pairwise reward-model loss and its gradients `[N]` w.r.t. both rewards.
template <class T>
struct pairwise_loss_output {
    double loss = 0.0;
    double accuracy = 0.0;
    vector<T> grad_chosen;
    vector<T> grad_rejected;
};

namespace logits_detail {

/// `[B·T, V]` rows as a `[B, T, V]` view.
template <class Derived>
view<typename Derived::Scalar, 3> as_cube(const Eigen::DenseBase<Derived>& logits, index_t batch, index_t steps,
                                          std::string_view function, std::string_view argument) {
    const auto flat = as_view(logits, function, argument);
    if (flat.extent(0) != batch * steps)
        fail(error_kind::shape, function, argument,
             "[" + std::to_string(batch * steps) +
                 ", V] (B·T rows for the [B, T] = " + shape_string(extents_t<2>{batch, steps}) + " tokens/mask)",
             shape_string(flat.extents()));
    return {flat.data(), {batch, steps, flat.extent(1)}, {steps * flat.stride(0), flat.stride(0), 1}};
}

template <class Derived>
view<std::int64_t> token_view(const Eigen::DenseBase<Derived>& tokens, std::string_view function) {
    static_assert(std::is_same_v<typename Derived::Scalar, std::int64_t>,
                  "rlhf::eigen: token ids must be an int64 (std::int64_t) matrix");
    return as_view(tokens, function, "tokens");
}

template <class Derived>
row_matrix<typename Derived::Scalar> gradient_like(const Eigen::DenseBase<Derived>& logits) {
    return row_matrix<typename Derived::Scalar>(logits.rows(), logits.cols());
}

/// `[B, T]` upstream gradient, or an empty view when the matrix is empty (no gradient).
template <class Derived>
view<typename Derived::Scalar> optional_view(const Eigen::DenseBase<Derived>& matrix, std::string_view function,
                                             std::string_view argument) {
    if (matrix.size() == 0) return {};
    return as_view(matrix, function, argument);
}

}  // namespace logits_detail

/// Token log-probs and entropies of `logits [B·T, V]` at `tokens [B, T]` (int64), masked by
/// `mask [B, T]`. Policies: `rlhf::logprobs_from_logits`.
template <class DL, class DY, class DM>
logprobs_result<typename DL::Scalar> logprobs_from_logits(const Eigen::DenseBase<DL>& logits,
                                                          const Eigen::DenseBase<DY>& tokens,
                                                          const Eigen::DenseBase<DM>& mask,
                                                          const logits_options& options = {}) {
    using T = typename DL::Scalar;
    constexpr std::string_view name = "rlhf::eigen::logprobs_from_logits";
    const auto y = logits_detail::token_view(tokens, name);
    const auto z = logits_detail::as_cube(logits, y.extent(0), y.extent(1), name, "logits");
    const auto m = as_view(mask, name, "mask");
    logprobs_result<T> out{row_matrix<T>(y.extent(0), y.extent(1)), row_matrix<T>(y.extent(0), y.extent(1))};
    rlhf::logits_detail::forward(name, z, &y, &m, as_mut_view(out.logprobs, name, "logprobs"),
                                 as_mut_view(out.entropy, name, "entropy"), mut_view<double>{}, options.temperature);
    return out;
}

/// `rlhf::eigen::logprobs_from_logits` without a mask.
template <class DL, class DY>
logprobs_result<typename DL::Scalar> logprobs_from_logits(const Eigen::DenseBase<DL>& logits,
                                                          const Eigen::DenseBase<DY>& tokens,
                                                          const logits_options& options = {}) {
    using T = typename DL::Scalar;
    constexpr std::string_view name = "rlhf::eigen::logprobs_from_logits";
    const auto y = logits_detail::token_view(tokens, name);
    const auto z = logits_detail::as_cube(logits, y.extent(0), y.extent(1), name, "logits");
    logprobs_result<T> out{row_matrix<T>(y.extent(0), y.extent(1)), row_matrix<T>(y.extent(0), y.extent(1))};
    rlhf::logits_detail::forward<T, bool>(name, z, &y, nullptr, as_mut_view(out.logprobs, name, "logprobs"),
                                          as_mut_view(out.entropy, name, "entropy"), mut_view<double>{},
                                          options.temperature);
    return out;
}

/// Gradient `[B·T, V]` of `Σ g_lp·logprobs + g_H·entropy` w.r.t. `logits [B·T, V]`;
/// `grad_logprobs` / `grad_entropy` `[B, T]`, an empty matrix meaning no gradient through that
/// output. Policies: `rlhf::logprobs_from_logits_backward` (statistics recomputed).
template <class DL, class DY, class DM, class DG, class DH>
row_matrix<typename DL::Scalar> logprobs_from_logits_backward(const Eigen::DenseBase<DL>& logits,
                                                              const Eigen::DenseBase<DY>& tokens,
                                                              const Eigen::DenseBase<DM>& mask,
                                                              const Eigen::DenseBase<DG>& grad_logprobs,
                                                              const Eigen::DenseBase<DH>& grad_entropy,
                                                              const logits_options& options = {}) {
    constexpr std::string_view name = "rlhf::eigen::logprobs_from_logits_backward";
    const auto y = logits_detail::token_view(tokens, name);
    const auto z = logits_detail::as_cube(logits, y.extent(0), y.extent(1), name, "logits");
    const auto m = as_view(mask, name, "mask");
    auto grad = logits_detail::gradient_like(logits);
    auto g = as_mut_view(grad, name, "grad_logits");
    rlhf::logits_detail::backward(name, z, &y, &m, logits_detail::optional_view(grad_logprobs, name, "grad_logprobs"),
                                  logits_detail::optional_view(grad_entropy, name, "grad_entropy"),
                                  mut_view<typename DL::Scalar, 3>{g.data(), z.extents()}, view<double>{},
                                  view<typename DL::Scalar>{}, options.temperature);
    return grad;
}

/// Entropy `[B, T]` of `logits [B·T, V]` masked by `mask [B, T]` (pass a matrix of ones for no
/// mask: it also gives B and T). Policies: `rlhf::entropy_from_logits`.
template <class DL, class DM>
row_matrix<typename DL::Scalar> entropy_from_logits(const Eigen::DenseBase<DL>& logits,
                                                    const Eigen::DenseBase<DM>& mask,
                                                    const logits_options& options = {}) {
    using T = typename DL::Scalar;
    constexpr std::string_view name = "rlhf::eigen::entropy_from_logits";
    const auto m = as_view(mask, name, "mask");
    const auto z = logits_detail::as_cube(logits, m.extent(0), m.extent(1), name, "logits");
    row_matrix<T> entropy(m.extent(0), m.extent(1));
    rlhf::logits_detail::forward(name, z, static_cast<const view<std::int64_t>*>(nullptr), &m, mut_view<T>{},
                                 as_mut_view(entropy, name, "entropy"), mut_view<double>{}, options.temperature);
    return entropy;
}

/// Gradient `[B·T, V]` of `Σ g_H·entropy`, `grad_entropy [B, T]`. Policies:
/// `rlhf::entropy_from_logits_backward`.
template <class DL, class DM, class DH>
row_matrix<typename DL::Scalar> entropy_from_logits_backward(const Eigen::DenseBase<DL>& logits,
                                                             const Eigen::DenseBase<DM>& mask,
                                                             const Eigen::DenseBase<DH>& grad_entropy,
                                                             const logits_options& options = {}) {
    using T = typename DL::Scalar;
    constexpr std::string_view name = "rlhf::eigen::entropy_from_logits_backward";
    const auto m = as_view(mask, name, "mask");
    const auto z = logits_detail::as_cube(logits, m.extent(0), m.extent(1), name, "logits");
    auto grad = logits_detail::gradient_like(logits);
    auto g = as_mut_view(grad, name, "grad_logits");
    rlhf::logits_detail::backward(name, z, static_cast<const view<std::int64_t>*>(nullptr), &m, view<T>{},
                                  as_view(grad_entropy, name, "grad_entropy"), mut_view<T, 3>{g.data(), z.extents()},
                                  view<double>{}, view<T>{}, options.temperature);
    return grad;
}

/// Full-vocabulary KL `[B, T]` between `policy_logits` and `reference_logits` `[B·T, V]`, masked by
/// `mask [B, T]` (ones for no mask). Policies: `rlhf::full_kl_from_logits`.
template <class DP, class DQ, class DM>
row_matrix<typename DP::Scalar> full_kl_from_logits(const Eigen::DenseBase<DP>& policy_logits,
                                                    const Eigen::DenseBase<DQ>& reference_logits,
                                                    const Eigen::DenseBase<DM>& mask,
                                                    const logits_options& options = {}) {
    using T = typename DP::Scalar;
    static_assert(std::is_same_v<T, typename DQ::Scalar>, "rlhf::eigen::full_kl_from_logits: one scalar type");
    constexpr std::string_view name = "rlhf::eigen::full_kl_from_logits";
    const auto m = as_view(mask, name, "mask");
    const auto p = logits_detail::as_cube(policy_logits, m.extent(0), m.extent(1), name, "policy_logits");
    const auto q = logits_detail::as_cube(reference_logits, m.extent(0), m.extent(1), name, "reference_logits");
    row_matrix<T> kl(m.extent(0), m.extent(1));
    rlhf::logits_detail::full_kl(name, p, q, &m, as_mut_view(kl, name, "kl"), options.temperature);
    return kl;
}

/// Gradient `[B·T, V]` of `Σ g·KL` w.r.t. the policy logits, `grad_kl [B, T]`. Policies:
/// `rlhf::full_kl_from_logits_backward`.
template <class DP, class DQ, class DM, class DG>
row_matrix<typename DP::Scalar> full_kl_from_logits_backward(const Eigen::DenseBase<DP>& policy_logits,
                                                             const Eigen::DenseBase<DQ>& reference_logits,
                                                             const Eigen::DenseBase<DM>& mask,
                                                             const Eigen::DenseBase<DG>& grad_kl,
                                                             const logits_options& options = {}) {
    using T = typename DP::Scalar;
    constexpr std::string_view name = "rlhf::eigen::full_kl_from_logits_backward";
    const auto m = as_view(mask, name, "mask");
    const auto p = logits_detail::as_cube(policy_logits, m.extent(0), m.extent(1), name, "policy_logits");
    const auto q = logits_detail::as_cube(reference_logits, m.extent(0), m.extent(1), name, "reference_logits");
    auto grad = logits_detail::gradient_like(policy_logits);
    auto g = as_mut_view(grad, name, "grad_policy_logits");
    rlhf::logits_detail::full_kl_backward(name, p, q, &m, as_view(grad_kl, name, "grad_kl"),
                                          mut_view<T, 3>{g.data(), p.extents()}, options.temperature);
    return grad;
}

/// LM loss of `logits [B·T, V]` at `tokens [B, T]` masked by `mask [B, T]`, with its gradient
/// `[B·T, V]`. Policies: `rlhf::lm_loss`.
template <class DL, class DY, class DM>
lm_loss_output<typename DL::Scalar> lm_loss(const Eigen::DenseBase<DL>& logits, const Eigen::DenseBase<DY>& tokens,
                                            const Eigen::DenseBase<DM>& mask, const lm_loss_options& options = {}) {
    using T = typename DL::Scalar;
    constexpr std::string_view name = "rlhf::eigen::lm_loss";
    const auto y = logits_detail::token_view(tokens, name);
    const auto z = logits_detail::as_cube(logits, y.extent(0), y.extent(1), name, "logits");
    const auto m = as_view(mask, name, "mask");
    lm_loss_output<T> out{0.0, 0, logits_detail::gradient_like(logits)};
    auto g = as_mut_view(out.grad_logits, name, "grad_logits");
    const mut_view<T, 3> grad{g.data(), z.extents()};
    const auto r = rlhf::logits_detail::lm_loss(name, z, y, &m, &grad, 1.0, options);
    out.loss = r.loss;
    out.num_tokens = r.num_tokens;
    return out;
}

/// `rlhf::eigen::lm_loss` without a mask (positions excluded through `ignore_index` only).
template <class DL, class DY>
lm_loss_output<typename DL::Scalar> lm_loss(const Eigen::DenseBase<DL>& logits, const Eigen::DenseBase<DY>& tokens,
                                            const lm_loss_options& options = {}) {
    using T = typename DL::Scalar;
    constexpr std::string_view name = "rlhf::eigen::lm_loss";
    const auto y = logits_detail::token_view(tokens, name);
    const auto z = logits_detail::as_cube(logits, y.extent(0), y.extent(1), name, "logits");
    lm_loss_output<T> out{0.0, 0, logits_detail::gradient_like(logits)};
    auto g = as_mut_view(out.grad_logits, name, "grad_logits");
    const mut_view<T, 3> grad{g.data(), z.extents()};
    const auto r = rlhf::logits_detail::lm_loss<T, bool>(name, z, y, nullptr, &grad, 1.0, options);
    out.loss = r.loss;
    out.num_tokens = r.num_tokens;
    return out;
}

namespace logits_detail {
template <class DC, class DR>
pairwise_loss_output<typename DC::Scalar> pairwise(std::string_view name, const Eigen::DenseBase<DC>& chosen,
                                                   const Eigen::DenseBase<DR>& rejected,
                                                   const view<typename DC::Scalar, 1>* margin, double scalar_margin,
                                                   double center) {
    using T = typename DC::Scalar;
    pairwise_loss_output<T> out{0.0, 0.0, vector<T>(chosen.size()), vector<T>(chosen.size())};
    const auto r = rlhf::reward_loss_detail::loss<T>(
        name, as_vector_view(chosen, name, "chosen"), as_vector_view(rejected, name, "rejected"), margin,
        as_mut_vector_view(out.grad_chosen, name, "grad_chosen"),
        as_mut_vector_view(out.grad_rejected, name, "grad_rejected"), scalar_margin, center);
    out.loss = r.loss;
    out.accuracy = r.accuracy;
    return out;
}
}  // namespace logits_detail

/// Pairwise log-sigmoid reward-model loss over `chosen [N]`, `rejected [N]` with gradients.
/// Policies: `rlhf::pairwise_logsigmoid_loss`.
template <class DC, class DR>
pairwise_loss_output<typename DC::Scalar> pairwise_logsigmoid_loss(const Eigen::DenseBase<DC>& chosen,
                                                                   const Eigen::DenseBase<DR>& rejected,
                                                                   const pairwise_loss_options& options = {}) {
    return logits_detail::pairwise("rlhf::eigen::pairwise_logsigmoid_loss", chosen, rejected, nullptr, options.margin,
                                   options.center_rewards_coefficient);
}

/// `rlhf::eigen::pairwise_logsigmoid_loss` with a margin per pair, `margin [N]`.
template <class DC, class DR, class DM>
pairwise_loss_output<typename DC::Scalar> pairwise_logsigmoid_loss(const Eigen::DenseBase<DC>& chosen,
                                                                   const Eigen::DenseBase<DR>& rejected,
                                                                   const Eigen::DenseBase<DM>& margin,
                                                                   const pairwise_loss_options& options = {}) {
    constexpr std::string_view name = "rlhf::eigen::pairwise_logsigmoid_loss";
    const auto m = as_vector_view(margin, name, "margin");
    return logits_detail::pairwise(name, chosen, rejected, &m, options.margin, options.center_rewards_coefficient);
}

/// Log-exp reward-model loss with gradients. Policies: `rlhf::log_exp_loss`.
template <class DC, class DR>
pairwise_loss_output<typename DC::Scalar> log_exp_loss(const Eigen::DenseBase<DC>& chosen,
                                                       const Eigen::DenseBase<DR>& rejected) {
    return logits_detail::pairwise("rlhf::eigen::log_exp_loss", chosen, rejected, nullptr, 0.0, 0.0);
}

}  // namespace rlhf::eigen
