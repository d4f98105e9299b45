#pragma once
/// @file
/// xtensor entry points of GAE, masked statistics and whitening: row-major xtensor containers
/// (`xt::xtensor`, `xt::xarray`, `xt::adapt` of a buffer) in, `xt::xtensor<T, 2>` out, computed by
/// the kernels of `rlhf/kernels/gae.hpp` and `rlhf/kernels/masked_stats.hpp` without copying the
/// inputs. Values are float or double; masks any arithmetic type with entries in {0,1}.
/// Semantics, options and edge-case policies: see the kernels.

#include <array>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>

#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/xtensor/view.hpp"

namespace rlhf::xtensor {

/// Advantages and returns of GAE.
template <class T>
struct gae_result {
    xt::xtensor<T, 2> advantages;
    xt::xtensor<T, 2> returns;
};

namespace detail {
/// The value type of a container.
template <class E>
using value_of = std::remove_cv_t<std::remove_reference_t<decltype(*std::declval<const E&>().data())>>;

/// A new `[rows, cols]` tensor shaped like `view`.
template <class T, class Element>
[[nodiscard]] xt::xtensor<T, 2> advantages_empty_like(const basic_view<Element, 2>& view) {
    return xt::xtensor<T, 2>::from_shape(
        std::array<std::size_t, 2>{static_cast<std::size_t>(view.extent(0)), static_cast<std::size_t>(view.extent(1))});
}
}  // namespace detail

/// GAE over `[B, T]` rows (`rlhf::compute_gae`).
template <dense_container ER, dense_container EV, dense_container EM>
[[nodiscard]] gae_result<detail::value_of<ER>> compute_gae(const ER& rewards, const EV& values, const EM& mask,
                                                           const gae_options& options = {}) {
    using T = detail::value_of<ER>;
    constexpr std::string_view function = "rlhf::xtensor::compute_gae";
    const auto r = as_view(rewards, function, "rewards");
    gae_result<T> result{detail::advantages_empty_like<T>(r), detail::advantages_empty_like<T>(r)};
    rlhf::compute_gae(r, as_view(values, function, "values"), as_view(mask, function, "mask"),
                      as_mut_view(result.advantages, function, "advantages"),
                      as_mut_view(result.returns, function, "returns"), options);
    return result;
}

/// GAE over `[B, T]` rows with a bootstrap value per row, `bootstrap_values` `[B]`.
template <dense_container ER, dense_container EV, dense_container EM, dense_container EB>
[[nodiscard]] gae_result<detail::value_of<ER>> compute_gae(const ER& rewards, const EV& values, const EM& mask,
                                                           const EB& bootstrap_values,
                                                           const gae_options& options = {}) {
    using T = detail::value_of<ER>;
    constexpr std::string_view function = "rlhf::xtensor::compute_gae";
    const auto r = as_view(rewards, function, "rewards");
    gae_result<T> result{detail::advantages_empty_like<T>(r), detail::advantages_empty_like<T>(r)};
    rlhf::compute_gae(r, as_view(values, function, "values"), as_view(mask, function, "mask"),
                      as_view<1>(bootstrap_values, function, "bootstrap_values"),
                      as_mut_view(result.advantages, function, "advantages"),
                      as_mut_view(result.returns, function, "returns"), options);
    return result;
}

/// Time-major GAE over `[T, N]` rollouts (`rlhf::compute_gae_time_major`); `next_values` `[N]`.
template <dense_container ER, dense_container EV, dense_container ETerm, dense_container ETrunc, dense_container EF,
          dense_container EN>
[[nodiscard]] gae_result<detail::value_of<ER>> compute_gae_time_major(const ER& rewards, const EV& values,
                                                                      const ETerm& terminated, const ETrunc& truncated,
                                                                      const EF& truncation_values,
                                                                      const EN& next_values,
                                                                      const time_major_gae_options& options = {}) {
    using T = detail::value_of<ER>;
    static_assert(std::is_same_v<detail::value_of<ETerm>, detail::value_of<ETrunc>>,
                  "rlhf::xtensor::compute_gae_time_major: terminated and truncated must share a value type");
    constexpr std::string_view function = "rlhf::xtensor::compute_gae_time_major";
    const auto r = as_view(rewards, function, "rewards");
    gae_result<T> result{detail::advantages_empty_like<T>(r), detail::advantages_empty_like<T>(r)};
    rlhf::compute_gae_time_major(
        r, as_view(values, function, "values"), as_view(terminated, function, "terminated"),
        as_view(truncated, function, "truncated"), as_view(truncation_values, function, "truncation_values"),
        as_view<1>(next_values, function, "next_values"), as_mut_view(result.advantages, function, "advantages"),
        as_mut_view(result.returns, function, "returns"), options);
    return result;
}

/// Masked whitening of `values` `[B, T]` (`rlhf::masked_whiten`).
template <dense_container EV, dense_container EM, Reducer R = local_reducer>
[[nodiscard]] xt::xtensor<detail::value_of<EV>, 2> masked_whiten(const EV& values, const EM& mask,
                                                                 const whiten_options& options = {}, R&& reducer = {}) {
    using T = detail::value_of<EV>;
    constexpr std::string_view function = "rlhf::xtensor::masked_whiten";
    const auto v = as_view(values, function, "values");
    auto out = detail::advantages_empty_like<T>(v);
    rlhf::masked_whiten(v, as_view(mask, function, "mask"), as_mut_view(out, function, "out"), options, reducer);
    return out;
}

/// Unmasked whitening of `values` `[B, T]` (`rlhf::whiten`).
template <dense_container EV, Reducer R = local_reducer>
[[nodiscard]] xt::xtensor<detail::value_of<EV>, 2> whiten(const EV& values, const whiten_options& options = {},
                                                          R&& reducer = {}) {
    using T = detail::value_of<EV>;
    constexpr std::string_view function = "rlhf::xtensor::whiten";
    const auto v = as_view(values, function, "values");
    auto out = detail::advantages_empty_like<T>(v);
    rlhf::whiten(v, as_mut_view(out, function, "out"), options, reducer);
    return out;
}

/// Batch statistics of the valid elements (`rlhf::compute_masked_moments`).
template <dense_container EV, dense_container EM, Reducer R = local_reducer>
[[nodiscard]] masked_moments compute_masked_moments(const EV& values, const EM& mask,
                                                    const moments_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::xtensor::compute_masked_moments";
    return rlhf::compute_masked_moments(as_view(values, function, "values"), as_view(mask, function, "mask"), options,
                                        reducer);
}

/// Masked mean over the batch (`rlhf::masked_mean`).
template <dense_container EV, dense_container EM, Reducer R = local_reducer>
[[nodiscard]] double masked_mean(const EV& values, const EM& mask, const moments_options& options = {},
                                 R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::xtensor::masked_mean";
    return rlhf::masked_mean(as_view(values, function, "values"), as_view(mask, function, "mask"), options, reducer);
}

/// Masked variance over the batch (`rlhf::masked_variance`).
template <dense_container EV, dense_container EM, Reducer R = local_reducer>
[[nodiscard]] double masked_variance(const EV& values, const EM& mask, const moments_options& options = {},
                                     R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::xtensor::masked_variance";
    return rlhf::masked_variance(as_view(values, function, "values"), as_view(mask, function, "mask"), options,
                                 reducer);
}

/// Per-row masked mean, `[B]` (`rlhf::masked_mean_per_row`).
template <dense_container EV, dense_container EM>
[[nodiscard]] xt::xtensor<detail::value_of<EV>, 1> masked_mean_per_row(const EV& values, const EM& mask,
                                                                       const moments_options& options = {}) {
    using T = detail::value_of<EV>;
    constexpr std::string_view function = "rlhf::xtensor::masked_mean_per_row";
    const auto v = as_view(values, function, "values");
    auto out = xt::xtensor<T, 1>::from_shape(std::array<std::size_t, 1>{static_cast<std::size_t>(v.extent(0))});
    rlhf::masked_mean_per_row(v, as_view(mask, function, "mask"), as_mut_view<1>(out, function, "out"), options);
    return out;
}

/// Per-row masked variance, `[B]` (`rlhf::masked_variance_per_row`).
template <dense_container EV, dense_container EM>
[[nodiscard]] xt::xtensor<detail::value_of<EV>, 1> masked_variance_per_row(const EV& values, const EM& mask,
                                                                           const moments_options& options = {}) {
    using T = detail::value_of<EV>;
    constexpr std::string_view function = "rlhf::xtensor::masked_variance_per_row";
    const auto v = as_view(values, function, "values");
    auto out = xt::xtensor<T, 1>::from_shape(std::array<std::size_t, 1>{static_cast<std::size_t>(v.extent(0))});
    rlhf::masked_variance_per_row(v, as_view(mask, function, "mask"), as_mut_view<1>(out, function, "out"), options);
    return out;
}

}  // namespace rlhf::xtensor
