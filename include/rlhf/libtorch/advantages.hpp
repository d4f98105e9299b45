#pragma once
/// @file
/// LibTorch entry points of GAE, masked statistics, whitening and running moments: CPU tensors
/// in, tensors (or doubles) out, computed by the kernels of `rlhf/kernels/gae.hpp` and
/// `rlhf/kernels/masked_stats.hpp` on views of the tensors (no copy of the inputs).
///
/// Values are float32 or float64 (every value tensor of a call has the same dtype); masks are
/// bool, uint8, int32, int64 or the values' dtype, with entries in {0,1}. Inputs must be CPU
/// tensors whose innermost dimension is contiguous (a column range of a wider tensor is fine;
/// a transposed one is an error, never a silent copy). Outputs are new contiguous tensors of the
/// values' dtype. Semantics, options and edge-case policies: see the kernels.

#include <torch/types.h>

#include <string_view>
#include <utility>

#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/view.hpp"

namespace rlhf::libtorch {

/// Advantages and returns of GAE, `[B, T]` (or `[T, N]` time-major), dtype of the rewards.
struct gae_result {
    torch::Tensor advantages;
    torch::Tensor returns;
};

namespace detail {
[[nodiscard]] inline torch::Tensor advantages_empty_like(const torch::Tensor& like) {
    return torch::empty(like.sizes(), like.options().memory_format(torch::MemoryFormat::Contiguous));
}
}  // namespace detail

/// GAE over `[B, T]` rows (`rlhf::compute_gae`): raw advantages and returns. `bootstrap_values`
/// `[B]` (optional: an undefined tensor means none, V = 0 after every row) is V of the state after
/// each row's last valid position.
/// @note Options per framework: `rlhf::gae_options::masking`.
[[nodiscard]] inline gae_result compute_gae(const torch::Tensor& rewards, const torch::Tensor& values,
                                            const torch::Tensor& mask, const gae_options& options = {},
                                            const torch::Tensor& bootstrap_values = {}) {
    constexpr std::string_view function = "rlhf::libtorch::compute_gae";
    return dispatch_floating(rewards, function, "rewards", [&](auto tag) {
        using T = decltype(tag);
        check_same_dtype(values, function, "values", rewards, "rewards");
        if (bootstrap_values.defined())
            check_same_dtype(bootstrap_values, function, "bootstrap_values", rewards, "rewards");
        gae_result result{detail::advantages_empty_like(rewards), detail::advantages_empty_like(rewards)};
        const auto r = as_view<T>(rewards, function, "rewards");
        const auto v = as_view<T>(values, function, "values");
        const auto a = as_mut_view<T>(result.advantages, function, "advantages");
        const auto ret = as_mut_view<T>(result.returns, function, "returns");
        with_mask_view<T>(mask, function, [&](const auto m) {
            if (bootstrap_values.defined())
                rlhf::compute_gae(r, v, m, as_view<T, 1>(bootstrap_values, function, "bootstrap_values"), a, ret,
                                  options);
            else
                rlhf::compute_gae(r, v, m, a, ret, options);
        });
        return result;
    });
}

/// Time-major GAE over `[T, N]` environment rollouts (`rlhf::compute_gae_time_major`):
/// `terminated` and `truncated` share one mask dtype; `next_values` is `[N]`.
[[nodiscard]] inline gae_result compute_gae_time_major(const torch::Tensor& rewards, const torch::Tensor& values,
                                                       const torch::Tensor& terminated, const torch::Tensor& truncated,
                                                       const torch::Tensor& truncation_values,
                                                       const torch::Tensor& next_values,
                                                       const time_major_gae_options& options = {}) {
    constexpr std::string_view function = "rlhf::libtorch::compute_gae_time_major";
    return dispatch_floating(rewards, function, "rewards", [&](auto tag) {
        using T = decltype(tag);
        check_same_dtype(values, function, "values", rewards, "rewards");
        check_same_dtype(truncation_values, function, "truncation_values", rewards, "rewards");
        check_same_dtype(next_values, function, "next_values", rewards, "rewards");
        check_same_dtype(truncated, function, "truncated", terminated, "terminated");
        gae_result result{detail::advantages_empty_like(rewards), detail::advantages_empty_like(rewards)};
        const auto a = as_mut_view<T>(result.advantages, function, "advantages");
        const auto ret = as_mut_view<T>(result.returns, function, "returns");
        dispatch_mask<T>(terminated, function, "terminated", [&](auto mask_tag) {
            using M = decltype(mask_tag);
            rlhf::compute_gae_time_major(
                as_view<T>(rewards, function, "rewards"), as_view<T>(values, function, "values"),
                as_view<M>(terminated, function, "terminated"), as_view<M>(truncated, function, "truncated"),
                as_view<T>(truncation_values, function, "truncation_values"),
                as_view<T, 1>(next_values, function, "next_values"), a, ret, options);
        });
        return result;
    });
}

/// Masked whitening of `values` `[B, T]` (`rlhf::masked_whiten`); a new tensor.
/// @note Options per framework: `rlhf::whiten_options`.
template <Reducer R = local_reducer>
[[nodiscard]] torch::Tensor masked_whiten(const torch::Tensor& values, const torch::Tensor& mask,
                                          const whiten_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::libtorch::masked_whiten";
    return dispatch_floating(values, function, "values", [&](auto tag) {
        using T = decltype(tag);
        torch::Tensor out = detail::advantages_empty_like(values);
        const auto v = as_view<T>(values, function, "values");
        const auto o = as_mut_view<T>(out, function, "out");
        with_mask_view<T>(mask, function, [&](const auto m) { rlhf::masked_whiten(v, m, o, options, reducer); });
        return out;
    });
}

/// Unmasked whitening of `values` `[B, T]` (`rlhf::whiten`: TRL `whiten`, ChatLearn's old PPO).
template <Reducer R = local_reducer>
[[nodiscard]] torch::Tensor whiten(const torch::Tensor& values, const whiten_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::libtorch::whiten";
    return dispatch_floating(values, function, "values", [&](auto tag) {
        using T = decltype(tag);
        torch::Tensor out = detail::advantages_empty_like(values);
        rlhf::whiten(as_view<T>(values, function, "values"), as_mut_view<T>(out, function, "out"), options, reducer);
        return out;
    });
}

/// Batch statistics of the valid elements of `values` `[B, T]` (`rlhf::compute_masked_moments`).
template <Reducer R = local_reducer>
[[nodiscard]] masked_moments compute_masked_moments(const torch::Tensor& values, const torch::Tensor& mask,
                                                    const moments_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::libtorch::compute_masked_moments";
    return dispatch_floating(values, function, "values", [&](auto tag) {
        using T = decltype(tag);
        const auto v = as_view<T>(values, function, "values");
        return with_mask_view<T>(mask, function,
                                 [&](const auto m) { return rlhf::compute_masked_moments(v, m, options, reducer); });
    });
}

/// Masked mean over the batch (`rlhf::masked_mean`).
template <Reducer R = local_reducer>
[[nodiscard]] double masked_mean(const torch::Tensor& values, const torch::Tensor& mask,
                                 const moments_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::libtorch::masked_mean";
    return dispatch_floating(values, function, "values", [&](auto tag) {
        using T = decltype(tag);
        const auto v = as_view<T>(values, function, "values");
        return with_mask_view<T>(mask, function,
                                 [&](const auto m) { return rlhf::masked_mean(v, m, options, reducer); });
    });
}

/// Masked variance over the batch (`rlhf::masked_variance`).
template <Reducer R = local_reducer>
[[nodiscard]] double masked_variance(const torch::Tensor& values, const torch::Tensor& mask,
                                     const moments_options& options = {}, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::libtorch::masked_variance";
    return dispatch_floating(values, function, "values", [&](auto tag) {
        using T = decltype(tag);
        const auto v = as_view<T>(values, function, "values");
        return with_mask_view<T>(mask, function,
                                 [&](const auto m) { return rlhf::masked_variance(v, m, options, reducer); });
    });
}

/// Per-row masked mean, `[B]` of the values' dtype (`rlhf::masked_mean_per_row`).
[[nodiscard]] inline torch::Tensor masked_mean_per_row(const torch::Tensor& values, const torch::Tensor& mask,
                                                       const moments_options& options = {}) {
    constexpr std::string_view function = "rlhf::libtorch::masked_mean_per_row";
    return dispatch_floating(values, function, "values", [&](auto tag) {
        using T = decltype(tag);
        const auto v = as_view<T>(values, function, "values");
        torch::Tensor out = torch::empty({values.size(0)}, values.options());
        with_mask_view<T>(mask, function, [&](const auto m) {
            rlhf::masked_mean_per_row(v, m, as_mut_view<T, 1>(out, function, "out"), options);
        });
        return out;
    });
}

/// Per-row masked variance, `[B]` of the values' dtype (`rlhf::masked_variance_per_row`).
[[nodiscard]] inline torch::Tensor masked_variance_per_row(const torch::Tensor& values, const torch::Tensor& mask,
                                                           const moments_options& options = {}) {
    constexpr std::string_view function = "rlhf::libtorch::masked_variance_per_row";
    return dispatch_floating(values, function, "values", [&](auto tag) {
        using T = decltype(tag);
        const auto v = as_view<T>(values, function, "values");
        torch::Tensor out = torch::empty({values.size(0)}, values.options());
        with_mask_view<T>(mask, function, [&](const auto m) {
            rlhf::masked_variance_per_row(v, m, as_mut_view<T, 1>(out, function, "out"), options);
        });
        return out;
    });
}

/// Adds a batch `values` `[n]` to `moments` (`rlhf::running_moments::update`).
template <Reducer R = local_reducer>
batch_moments update_running_moments(running_moments& moments, const torch::Tensor& values, R&& reducer = {}) {
    constexpr std::string_view function = "rlhf::libtorch::update_running_moments";
    return dispatch_floating(values, function, "values", [&](auto tag) {
        using T = decltype(tag);
        return moments.update(as_view<T, 1>(values, function, "values"), reducer);
    });
}

}  // namespace rlhf::libtorch
