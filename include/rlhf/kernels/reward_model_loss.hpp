#pragma once
/// @file
/// Pairwise reward-model losses on the scalar rewards of chosen and rejected answers, with their
/// gradients: `mean(−log σ(c − r − margin))` (+ TRL's reward-centering term) and
/// `mean(log(1 + e^(r − c)))`.
///
/// Both are evaluated in the softplus form `softplus(r − c + margin)`, which is exact and finite
/// for any finite gap; `σ` in the gradient is evaluated without overflow too.

#include <cmath>
#include <string_view>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/options/reward_model_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Result of a pairwise reward-model loss.
struct pairwise_loss_result {
    double loss = 0.0;      ///< the mean loss over the pairs
    double accuracy = 0.0;  ///< fraction of pairs with `chosen > rejected` (TRL's reward accuracy)
};

namespace detail::reward_loss {

/// `log(1 + e^x)` without overflow or loss of precision.
[[nodiscard]] inline double softplus(double x) {
    return std::fmax(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
}

/// `1 / (1 + e^-x)` without overflow.
[[nodiscard]] inline double sigmoid(double x) {
    if (x >= 0.0) return 1.0 / (1.0 + std::exp(-x));
    const double e = std::exp(x);
    return e / (1.0 + e);
}

template <class T>
pairwise_loss_result loss(std::string_view function, const view<T, 1>& chosen, const view<T, 1>& rejected,
                          const view<T, 1>* margin, const mut_view<T, 1>& grad_chosen,
                          const mut_view<T, 1>& grad_rejected, double scalar_margin, double center) {
    if (!std::isfinite(scalar_margin))
        fail(error_kind::config, function, "margin", "a finite value", number_string(scalar_margin));
    check_non_negative(function, "center_rewards_coefficient", center);
    const index_t n = chosen.extent(0);
    if (n < 1) fail(error_kind::shape, function, "chosen", "at least one pair", shape_string(chosen.extents()));
    check_same_shape(function, "rejected", rejected, "chosen", chosen);
    check_finite(function, "chosen", chosen);
    check_finite(function, "rejected", rejected);
    if (margin != nullptr) {
        check_same_shape(function, "margin", *margin, "chosen", chosen);
        check_finite(function, "margin", *margin);
    }
    const bool want_c = grad_chosen.data() != nullptr;
    const bool want_r = grad_rejected.data() != nullptr;
    if (want_c) check_same_shape(function, "grad_chosen", grad_chosen, "chosen", chosen);
    if (want_r) check_same_shape(function, "grad_rejected", grad_rejected, "chosen", chosen);
    const double inv_n = 1.0 / static_cast<double>(n);
    double total = 0.0;
    index_t correct = 0;
    for (index_t i = 0; i < n; ++i) {
        const double c = static_cast<double>(chosen(i));
        const double r = static_cast<double>(rejected(i));
        const double m = scalar_margin + (margin != nullptr ? static_cast<double>((*margin)(i)) : 0.0);
        const double gap = r - c + m;  // loss_i = softplus(gap); d/dc = −σ(gap), d/dr = σ(gap)
        const double sum = c + r;      // centering term coef·(c + r)², d/dc = d/dr = 2·coef·(c + r)
        total += softplus(gap) + center * sum * sum;
        correct += c > r ? 1 : 0;
        const double s = sigmoid(gap);
        const double centre_grad = 2.0 * center * sum;
        if (want_c) grad_chosen(i) = static_cast<T>((centre_grad - s) * inv_n);
        if (want_r) grad_rejected(i) = static_cast<T>((centre_grad + s) * inv_n);
    }
    return {total * inv_n, static_cast<double>(correct) * inv_n};
}

}  // namespace detail::reward_loss

/// Pairwise log-sigmoid reward-model loss `mean_i(−log σ(c_i − r_i − margin)) +
/// coef·mean_i((c_i + r_i)²)` over `chosen [N]` and `rejected [N]` rewards (N ≥ 1, finite);
/// writes the gradients w.r.t. both into `grad_chosen [N]` and `grad_rejected [N]` when given
/// (`{}` skips), `(−σ(r − c + margin) + 2·coef·(c + r)) / N` and `(σ(r − c + margin) +
/// 2·coef·(c + r)) / N`.
/// @note Reproduces OpenRLHF `PairWiseLoss` (OpenRLHF/OpenRLHF, openrlhf/models/loss.py), TRL
///       `RewardTrainer.compute_loss` with `center_rewards_coefficient` (huggingface/trl,
///       trl/trainer/reward_trainer.py) and ColossalChat v2 `LogSigLoss` (hpcaitech/ColossalAI,
///       applications/ColossalChat/coati/models/loss.py, margin 0). ColossalChat v1 `LogSigLoss`
///       (applications/Chat/coati/models/loss.py) computes `−log(σ(c − r))`, which becomes +inf
///       once `σ` underflows (r − c ≳ 37 in float64, ≳ 17 in float32); this loss stays finite
///       there (it equals v1 wherever v1 is finite) and does not reproduce the overflow.
template <class T>
pairwise_loss_result pairwise_logsigmoid_loss(const view<T, 1>& chosen, const view<T, 1>& rejected,
                                              const mut_view<T, 1>& grad_chosen = {},
                                              const mut_view<T, 1>& grad_rejected = {},
                                              const pairwise_loss_options& options = {}) {
    return detail::reward_loss::loss<T>("rlhf::pairwise_logsigmoid_loss", chosen, rejected, nullptr, grad_chosen,
                                        grad_rejected, options.margin, options.center_rewards_coefficient);
}

/// `rlhf::pairwise_logsigmoid_loss` with a margin per pair, `margin [N]` (finite), added to
/// `options.margin` (TRL's per-example `margin` column; OpenRLHF's `margin` tensor).
template <class T>
pairwise_loss_result pairwise_logsigmoid_loss(const view<T, 1>& chosen, const view<T, 1>& rejected,
                                              const view<T, 1>& margin, const mut_view<T, 1>& grad_chosen,
                                              const mut_view<T, 1>& grad_rejected,
                                              const pairwise_loss_options& options = {}) {
    return detail::reward_loss::loss<T>("rlhf::pairwise_logsigmoid_loss", chosen, rejected, &margin, grad_chosen,
                                        grad_rejected, options.margin, options.center_rewards_coefficient);
}

/// Log-exp reward-model loss `mean_i(log(1 + e^(r_i − c_i)))` over `chosen [N]` and
/// `rejected [N]` (N ≥ 1, finite), with gradients `∓σ(r − c) / N` into `grad_chosen` /
/// `grad_rejected` when given. Mathematically equal to the log-sigmoid loss without margin;
/// evaluated as `softplus(r − c)`, finite where the peers' `log(1 + exp(·))` overflows
/// (r − c > ~709 in float64, ~88 in float32).
/// @note Reproduces OpenRLHF `LogExpLoss` (openrlhf/models/loss.py) and ColossalChat v1/v2
///       `LogExpLoss` (applications/Chat/coati/models/loss.py,
///       applications/ColossalChat/coati/models/loss.py).
template <class T>
pairwise_loss_result log_exp_loss(const view<T, 1>& chosen, const view<T, 1>& rejected,
                                  const mut_view<T, 1>& grad_chosen = {}, const mut_view<T, 1>& grad_rejected = {}) {
    return detail::reward_loss::loss<T>("rlhf::log_exp_loss", chosen, rejected, nullptr, grad_chosen, grad_rejected,
                                        0.0, 0.0);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
