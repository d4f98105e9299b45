#pragma once
/// @file
/// Eigen entry points of the per-token KL estimators and reward shaping.
///
/// Matrices are `[B, T]` row-major expressions with direct access (`rlhf::eigen::row_matrix<T>`,
/// or a `Map`/`Ref`/block of one), values of type float or double, a mask of any arithmetic
/// element type with entries 0 or 1, scores a vector `[B]` of the values' type. Results are
/// returned as `rlhf::eigen::row_matrix<T>`. Semantics, options and policies:
/// `rlhf/kernels/kl.hpp` and `rlhf/kernels/reward_shaping.hpp`.

#include <Eigen/Core>

#include <string_view>
#include <type_traits>

#include "rlhf/eigen/view.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"

namespace rlhf::eigen {

/// Per-token KL `[B, T]` of `log_probs` against `ref_log_probs` (see `rlhf::token_kl`).
template <class Lp, class Ref>
[[nodiscard]] row_matrix<typename Lp::Scalar> token_kl(const Eigen::DenseBase<Lp>& log_probs,
                                                       const Eigen::DenseBase<Ref>& ref_log_probs,
                                                       const kl_options& options = {}) {
    using T = typename Lp::Scalar;
    static_assert(std::is_same_v<T, typename Ref::Scalar>, "rlhf::eigen::token_kl: log-probs of one scalar type");
    constexpr std::string_view fn = "rlhf::eigen::token_kl";
    row_matrix<T> out(log_probs.rows(), log_probs.cols());
    rlhf::token_kl(as_view(log_probs, fn, "log_probs"), as_view(ref_log_probs, fn, "ref_log_probs"),
                   as_mut_view(out, fn, "kl"), options);
    return out;
}

/// Masked per-token KL `[B, T]`: 0 where `mask` is 0 (see `rlhf::token_kl`).
template <class Lp, class Ref, class Mask>
[[nodiscard]] row_matrix<typename Lp::Scalar> token_kl(const Eigen::DenseBase<Lp>& log_probs,
                                                       const Eigen::DenseBase<Ref>& ref_log_probs,
                                                       const Eigen::DenseBase<Mask>& mask,
                                                       const kl_options& options = {}) {
    using T = typename Lp::Scalar;
    static_assert(std::is_same_v<T, typename Ref::Scalar>, "rlhf::eigen::token_kl: log-probs of one scalar type");
    constexpr std::string_view fn = "rlhf::eigen::token_kl";
    row_matrix<T> out(log_probs.rows(), log_probs.cols());
    rlhf::token_kl(as_view(log_probs, fn, "log_probs"), as_view(ref_log_probs, fn, "ref_log_probs"),
                   as_view(mask, fn, "mask"), as_mut_view(out, fn, "kl"), options);
    return out;
}

/// Per-token rewards `[B, T]` from a given KL, a mask and scores `[B]` (see `rlhf::shape_rewards`).
template <class Kl, class Mask, class Scores>
[[nodiscard]] row_matrix<typename Kl::Scalar> shape_rewards(const Eigen::DenseBase<Kl>& kl,
                                                            const Eigen::DenseBase<Mask>& mask,
                                                            const Eigen::DenseBase<Scores>& scores,
                                                            const reward_shaping_options& options = {}) {
    using T = typename Kl::Scalar;
    static_assert(std::is_same_v<T, typename Scores::Scalar>, "rlhf::eigen::shape_rewards: scores of the KL's type");
    constexpr std::string_view fn = "rlhf::eigen::shape_rewards";
    row_matrix<T> out(kl.rows(), kl.cols());
    rlhf::shape_rewards(as_view(kl, fn, "kl"), as_view(mask, fn, "mask"), as_vector_view(scores, fn, "scores"),
                        as_mut_view(out, fn, "rewards"), options);
    return out;
}

/// Per-token rewards `[B, T]` with the KL computed from the log-probs in the same pass (see
/// `rlhf::shape_rewards_from_logprobs`).
template <class Lp, class Ref, class Mask, class Scores>
[[nodiscard]] row_matrix<typename Lp::Scalar> shape_rewards_from_logprobs(const Eigen::DenseBase<Lp>& log_probs,
                                                                          const Eigen::DenseBase<Ref>& ref_log_probs,
                                                                          const Eigen::DenseBase<Mask>& mask,
                                                                          const Eigen::DenseBase<Scores>& scores,
                                                                          const reward_shaping_options& options = {}) {
    using T = typename Lp::Scalar;
    static_assert(std::is_same_v<T, typename Ref::Scalar> && std::is_same_v<T, typename Scores::Scalar>,
                  "rlhf::eigen::shape_rewards_from_logprobs: log-probs and scores of one scalar type");
    constexpr std::string_view fn = "rlhf::eigen::shape_rewards_from_logprobs";
    row_matrix<T> out(log_probs.rows(), log_probs.cols());
    rlhf::shape_rewards_from_logprobs(as_view(log_probs, fn, "log_probs"), as_view(ref_log_probs, fn, "ref_log_probs"),
                                      as_view(mask, fn, "mask"), as_vector_view(scores, fn, "scores"),
                                      as_mut_view(out, fn, "rewards"), options);
    return out;
}

}  // namespace rlhf::eigen
