#pragma once
/// @file
/// xtensor entry points of the per-token KL estimators and reward shaping.
///
/// Inputs are row-major xtensor containers (`xt::xtensor<T, 2>`, `xt::xarray<T>` of rank 2, or
/// `xt::adapt` of a row-major buffer): values `[B, T]` of float or double, a mask `[B, T]` of any
/// arithmetic element type with entries 0 or 1, scores `[B]` of the values' type. Results are
/// returned as `xt::xtensor<T, 2>`. Semantics, options and policies: `rlhf/kernels/kl.hpp` and
/// `rlhf/kernels/reward_shaping.hpp`.

#include <array>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>

#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/xtensor/view.hpp"

namespace rlhf::xtensor {

namespace detail {
template <class E>
using value_t = std::remove_cv_t<std::remove_reference_t<decltype(*std::declval<const E&>().data())>>;

/// An uninitialised `[rows, cols]` result.
template <class T>
[[nodiscard]] xt::xtensor<T, 2> make_result(index_t rows, index_t cols) {
    const std::array<std::size_t, 2> shape{static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)};
    return xt::xtensor<T, 2>(shape);
}
}  // namespace detail

/// Per-token KL `[B, T]` of `log_probs` against `ref_log_probs` (see `rlhf::token_kl`).
template <dense_container Lp, dense_container Ref>
[[nodiscard]] xt::xtensor<detail::value_t<Lp>, 2> token_kl(const Lp& log_probs, const Ref& ref_log_probs,
                                                           const kl_options& options = {}) {
    using T = detail::value_t<Lp>;
    static_assert(std::is_same_v<T, detail::value_t<Ref>>, "rlhf::xtensor::token_kl: log-probs of one value type");
    constexpr std::string_view fn = "rlhf::xtensor::token_kl";
    const auto lp = as_view(log_probs, fn, "log_probs");
    auto out = detail::make_result<T>(lp.extent(0), lp.extent(1));
    rlhf::token_kl(lp, as_view(ref_log_probs, fn, "ref_log_probs"), as_mut_view(out, fn, "kl"), options);
    return out;
}

/// Masked per-token KL `[B, T]`: 0 where `mask` is 0 (see `rlhf::token_kl`).
template <dense_container Lp, dense_container Ref, dense_container Mask>
[[nodiscard]] xt::xtensor<detail::value_t<Lp>, 2> token_kl(const Lp& log_probs, const Ref& ref_log_probs,
                                                           const Mask& mask, const kl_options& options = {}) {
    using T = detail::value_t<Lp>;
    static_assert(std::is_same_v<T, detail::value_t<Ref>>, "rlhf::xtensor::token_kl: log-probs of one value type");
    constexpr std::string_view fn = "rlhf::xtensor::token_kl";
    const auto lp = as_view(log_probs, fn, "log_probs");
    auto out = detail::make_result<T>(lp.extent(0), lp.extent(1));
    rlhf::token_kl(lp, as_view(ref_log_probs, fn, "ref_log_probs"), as_view(mask, fn, "mask"),
                   as_mut_view(out, fn, "kl"), options);
    return out;
}

/// Per-token rewards `[B, T]` from a given KL, a mask and scores `[B]` (see `rlhf::shape_rewards`).
template <dense_container Kl, dense_container Mask, dense_container Scores>
[[nodiscard]] xt::xtensor<detail::value_t<Kl>, 2> shape_rewards(const Kl& kl, const Mask& mask, const Scores& scores,
                                                                const reward_shaping_options& options = {}) {
    using T = detail::value_t<Kl>;
    static_assert(std::is_same_v<T, detail::value_t<Scores>>, "rlhf::xtensor::shape_rewards: scores of the KL's type");
    constexpr std::string_view fn = "rlhf::xtensor::shape_rewards";
    const auto k = as_view(kl, fn, "kl");
    auto out = detail::make_result<T>(k.extent(0), k.extent(1));
    rlhf::shape_rewards(k, as_view(mask, fn, "mask"), as_view<1>(scores, fn, "scores"), as_mut_view(out, fn, "rewards"),
                        options);
    return out;
}

/// Per-token rewards `[B, T]` with the KL computed from the log-probs in the same pass (see
/// `rlhf::shape_rewards_from_logprobs`).
template <dense_container Lp, dense_container Ref, dense_container Mask, dense_container Scores>
[[nodiscard]] xt::xtensor<detail::value_t<Lp>, 2> shape_rewards_from_logprobs(
    const Lp& log_probs, const Ref& ref_log_probs, const Mask& mask, const Scores& scores,
    const reward_shaping_options& options = {}) {
    using T = detail::value_t<Lp>;
    static_assert(std::is_same_v<T, detail::value_t<Ref>> && std::is_same_v<T, detail::value_t<Scores>>,
                  "rlhf::xtensor::shape_rewards_from_logprobs: log-probs and scores of one value type");
    constexpr std::string_view fn = "rlhf::xtensor::shape_rewards_from_logprobs";
    const auto lp = as_view(log_probs, fn, "log_probs");
    auto out = detail::make_result<T>(lp.extent(0), lp.extent(1));
    rlhf::shape_rewards_from_logprobs(lp, as_view(ref_log_probs, fn, "ref_log_probs"), as_view(mask, fn, "mask"),
                                      as_view<1>(scores, fn, "scores"), as_mut_view(out, fn, "rewards"), options);
    return out;
}

}  // namespace rlhf::xtensor
