#pragma once
/// @file
/// Eigen entry points of GAE, masked statistics and whitening: row-major Eigen expressions with
/// direct access in (`rlhf::eigen::row_matrix<T>`, a `Map`/`Ref`/block of one, or the
/// `.transpose()` of a column-major matrix), `rlhf::eigen::row_matrix<T>` out, computed by the
/// kernels of `rlhf/kernels/gae.hpp` and `rlhf/kernels/masked_stats.hpp` without copying the
/// inputs. Values are float or double; masks any arithmetic type with entries in {0,1}.
/// Semantics, options and edge-case policies: see the kernels.

#include <Eigen/Core>

#include <string_view>
#include <type_traits>

#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/eigen/view.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/masked_stats.hpp"

namespace rlhf::eigen {

/// Advantages and returns of GAE.
template <class T>
struct gae_result {
    row_matrix<T> advantages;
    row_matrix<T> returns;
};

/// GAE over `[B, T]` rows (`rlhf::compute_gae`).
template <class DR, class DV, class DM>
[[nodiscard]] gae_result<typename DR::Scalar> compute_gae(const Eigen::DenseBase<DR>& rewards,
                                                          const Eigen::DenseBase<DV>& values,
                                                          const Eigen::DenseBase<DM>& mask,
                                                          const gae_options& options = {}) {
    using T = typename DR::Scalar;
    static_assert(std::is_same_v<T, typename DV::Scalar>,
                  "rlhf::eigen::compute_gae: values must have the rewards' scalar");
    constexpr std::string_view function = "rlhf::eigen::compute_gae";
    gae_result<T> result{row_matrix<T>(rewards.rows(), rewards.cols()), row_matrix<T>(rewards.rows(), rewards.cols())};
    rlhf::compute_gae(as_view(rewards, function, "rewards"), as_view(values, function, "values"),
                      as_view(mask, function, "mask"), as_mut_view(result.advantages, function, "advantages"),
                      as_mut_view(result.returns, function, "returns"), options);
    return result;
}

/// GAE over `[B, T]` rows with a bootstrap value per row, `bootstrap_values` `[B]`.
template <class DR, class DV, class DM, class DB>
[[nodiscard]] gae_result<typename DR::Scalar> compute_gae(const Eigen::DenseBase<DR>& rewards,
                                                          const Eigen::DenseBase<DV>& values,
                                                          const Eigen::DenseBase<DM>& mask,
                                                          const Eigen::DenseBase<DB>& bootstrap_values,
                                                          const gae_options& options = {}) {
    using T = typename DR::Scalar;
    static_assert(std::is_same_v<T, typename DV::Scalar> && std::is_same_v<T, typename DB::Scalar>,
                  "rlhf::eigen::compute_gae: values and bootstrap_values must have the rewards' scalar");
    constexpr std::string_view function = "rlhf::eigen::compute_gae";
    gae_result<T> result{row_matrix<T>(rewards.rows(), rewards.cols()), row_matrix<T>(rewards.rows(), rewards.cols())};
    rlhf::compute_gae(as_view(rewards, function, "rewards"), as_view(values, function, "values"),
                      as_view(mask, function, "mask"), as_vector_view(bootstrap_values, function, "bootstrap_values"),
                      as_mut_view(result.advantages, function, "advantages"),
                      as_mut_view(result.returns, function, "returns"), options);
    return result;
}

/// Time-major GAE over `[T, N]` rollouts (`rlhf::compute_gae_time_major`); `next_values` `[N]`.
template <class DR, class DV, class DTerm, class DTrunc, class DF, class DN>
[[nodiscard]] gae_result<typename DR::Scalar> compute_gae_time_major(
    const Eigen::DenseBase<DR>& rewards, const Eigen::DenseBase<DV>& values, const Eigen::DenseBase<DTerm>& terminated,
    const Eigen::DenseBase<DTrunc>& truncated, const Eigen::DenseBase<DF>& truncation_values,
    const Eigen::DenseBase<DN>& next_values, const time_major_gae_options& options = {}) {
    using T = typename DR::Scalar;
    static_assert(std::is_same_v<typename DTerm::Scalar, typename DTrunc::Scalar>,
                  "rlhf::eigen::compute_gae_time_major: terminated and truncated must share a scalar type");
    constexpr std::string_view function = "rlhf::eigen::compute_gae_time_major";
    gae_result<T> result{row_matrix<T>(rewards.rows(), rewards.cols()), row_matrix<T>(rewards.rows(), rewards.cols())};
    rlhf::compute_gae_time_major(as_view(rewards, function, "rewards"), as_view(values, function, "values"),
                                 as_view(terminated, function, "terminated"), as_view(truncated, function, "truncated"),
                                 as_view(truncation_values, function, "truncation_values"),
                                 as_vector_view(next_values, function, "next_values"),
                                 as_mut_view(result.advantages, function, "advantages"),
                                 as_mut_view(result.returns, function, "returns"), options);
    return result;
}

/// Masked whitening of `values` `[B, T]` (`rlhf::masked_whiten`).
template <class DV, class DM, Reducer R = local_reducer>
[[nodiscard]] row_matrix<typename DV::Scalar> masked_whiten(const Eigen::DenseBase<DV>& values,
                                                            const Eigen::DenseBase<DM>& mask,
                                                            const whiten_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::eigen::masked_whiten";
    row_matrix<typename DV::Scalar> out(values.rows(), values.cols());
    rlhf::masked_whiten(as_view(values, function, "values"), as_view(mask, function, "mask"),
                        as_mut_view(out, function, "out"), options, reducer);
    return out;
}

/// Unmasked whitening of `values` `[B, T]` (`rlhf::whiten`).
template <class DV, Reducer R = local_reducer>
[[nodiscard]] row_matrix<typename DV::Scalar> whiten(const Eigen::DenseBase<DV>& values,
                                                     const whiten_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::eigen::whiten";
    row_matrix<typename DV::Scalar> out(values.rows(), values.cols());
    rlhf::whiten(as_view(values, function, "values"), as_mut_view(out, function, "out"), options, reducer);
    return out;
}

/// Batch statistics of the valid elements (`rlhf::compute_masked_moments`).
template <class DV, class DM, Reducer R = local_reducer>
[[nodiscard]] masked_moments compute_masked_moments(const Eigen::DenseBase<DV>& values,
                                                    const Eigen::DenseBase<DM>& mask,
                                                    const moments_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::eigen::compute_masked_moments";
    return rlhf::compute_masked_moments(as_view(values, function, "values"), as_view(mask, function, "mask"), options,
                                        reducer);
}

/// Masked mean over the batch (`rlhf::masked_mean`).
template <class DV, class DM, Reducer R = local_reducer>
[[nodiscard]] double masked_mean(const Eigen::DenseBase<DV>& values, const Eigen::DenseBase<DM>& mask,
                                 const moments_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::eigen::masked_mean";
    return rlhf::masked_mean(as_view(values, function, "values"), as_view(mask, function, "mask"), options, reducer);
}

/// Masked variance over the batch (`rlhf::masked_variance`).
template <class DV, class DM, Reducer R = local_reducer>
[[nodiscard]] double masked_variance(const Eigen::DenseBase<DV>& values, const Eigen::DenseBase<DM>& mask,
                                     const moments_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::eigen::masked_variance";
    return rlhf::masked_variance(as_view(values, function, "values"), as_view(mask, function, "mask"), options,
                                 reducer);
}

/// Per-row masked mean, `[B]` (`rlhf::masked_mean_per_row`).
template <class DV, class DM>
[[nodiscard]] vector<typename DV::Scalar> masked_mean_per_row(const Eigen::DenseBase<DV>& values,
                                                              const Eigen::DenseBase<DM>& mask,
                                                              const moments_options& options = {}) {
    constexpr std::string_view function = "rlhf::eigen::masked_mean_per_row";
    vector<typename DV::Scalar> out(values.rows());
    rlhf::masked_mean_per_row(as_view(values, function, "values"), as_view(mask, function, "mask"),
                              as_mut_vector_view(out, function, "out"), options);
    return out;
}

/// Per-row masked variance, `[B]` (`rlhf::masked_variance_per_row`).
template <class DV, class DM>
[[nodiscard]] vector<typename DV::Scalar> masked_variance_per_row(const Eigen::DenseBase<DV>& values,
                                                                  const Eigen::DenseBase<DM>& mask,
                                                                  const moments_options& options = {}) {
    constexpr std::string_view function = "rlhf::eigen::masked_variance_per_row";
    vector<typename DV::Scalar> out(values.rows());
    rlhf::masked_variance_per_row(as_view(values, function, "values"), as_view(mask, function, "mask"),
                                  as_mut_vector_view(out, function, "out"), options);
    return out;
}

}  // namespace rlhf::eigen
