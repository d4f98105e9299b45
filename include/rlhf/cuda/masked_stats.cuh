#pragma once
/// @file
/// Masked statistics and whitening on the device: `rlhf::compute_masked_moments` (whole batch and
/// per row) and `rlhf::masked_whiten` / `rlhf::whiten` (`per_batch` and `per_row` scopes), with the
/// statistics left in a device array of doubles that the whitening reads on the device.
///
/// A scope's statistics are 4 doubles, `{count, sum, mean, variance}` (`masked_moments`), in a
/// `[S, 4]` view: S = 1 for the batch, B per row. Sums in double, two passes as on the CPU
/// (`{count, sum}`, then `Σ (x − mean)²·m` about that mean), finished by the CPU's own
/// `mean_of`/`variance_of` (`rlhf/cuda/stats_scope.hpp`).
///
/// Layout: per row, one block of 256 threads per row (block reductions, then the row's outputs);
/// per batch, a fixed grid of G blocks (`G` from the shape only, at most 1024) writes per-block
/// partial sums to a workspace, one block adds them in a fixed order (deterministic, no atomics),
/// for each pass; whitening is then one elementwise kernel. The batch functions take a workspace
/// of `masked_stats_workspace_bytes(B, T)` bytes (device memory, 8-byte aligned).
///
/// Launches on `stream`, never synchronises, allocates nothing. Shapes, options and overlaps are
/// checked on the host; values are not (no device read): non-finite values propagate (masked ones
/// included only where they are read: whitening writes every position), a non-binary mask entry
/// counts as valid. A scope with too few valid elements cannot raise without a device-to-host
/// read, so `small_sample_policy::raise` (the CPU default) is refused (kind `config`, argument
/// `small_sample`): choose `zero_variance` or `skip`, which behave as on the CPU.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/cuda/stats_scope.hpp"
#include "rlhf/cuda/support.cuh"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/options/masked_stats.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda {

/// Columns of a statistics view `[S, 4]`.
inline constexpr index_t moments_count = 0;
inline constexpr index_t moments_sum = 1;
inline constexpr index_t moments_mean = 2;
inline constexpr index_t moments_variance = 3;
inline constexpr index_t moments_slots = 4;

namespace detail::stats {

inline constexpr int threads = 256;
inline constexpr index_t max_batch_blocks = 1024;
inline constexpr index_t elements_per_thread = 8;  ///< of a batch block's share, at least

/// Blocks of the batch passes: one per `threads · elements_per_thread` elements, 1 to 1024.
[[nodiscard]] constexpr index_t batch_blocks(index_t rows, index_t cols) noexcept {
    const index_t n = rows * cols;
    const index_t per_block = threads * elements_per_thread;
    const index_t blocks = (n + per_block - 1) / per_block;
    return blocks < 1 ? 1 : (blocks > max_batch_blocks ? max_batch_blocks : blocks);
}

/// A `[B, T]` mask in device memory.
template <class M>
struct device_mask {
    const M* data;
    index_t stride;
    [[nodiscard]] __device__ __forceinline__ bool operator()(index_t b, index_t t) const {
        return data[b * stride + t] != M{0};
    }
};

/// No mask: every position valid (`rlhf::whiten`).
struct all_valid {
    [[nodiscard]] __device__ __forceinline__ bool operator()(index_t /*b*/, index_t /*t*/) const { return true; }
};

/// Values, mask and the optional output of the statistics kernels.
template <class T, class Mask>
struct arguments {
    const T* values;
    index_t values_stride;
    Mask mask;
    T* out;  ///< null: statistics only
    index_t out_stride;
    double* moments;  ///< `[S, 4]`
    index_t moments_stride;
    index_t rows, cols;
    moments_options moments_opts;
    whiten_options whiten_opts;
};

/// One block per row: `{count, sum}`, the mean, `Σ (x − mean)²`, the variance (written to the
/// row's statistics), then, with an output, the row whitened.
template <class T, class Mask>
__global__ void __launch_bounds__(threads) per_row_kernel(arguments<T, Mask> p) {
    namespace scope = rlhf::detail::stats_scope;
    __shared__ double shared_mean, shared_variance, shared_count;
    const index_t b = blockIdx.x;
    const T* x = p.values + b * p.values_stride;
    double count = 0.0, sum = 0.0;
    for (index_t t = threadIdx.x; t < p.cols; t += threads) {
        const bool valid = p.mask(b, t);
        count += valid ? 1.0 : 0.0;
        sum += valid ? static_cast<double>(x[t]) : 0.0;
    }
    count = block_sum<threads>(count);
    sum = block_sum<threads>(sum);
    if (threadIdx.x == 0) {
        shared_count = count;
        shared_mean = scope::mean(count, sum, p.moments_opts.count_epsilon);
    }
    __syncthreads();
    const double mean = shared_mean;
    double ssd = 0.0;
    for (index_t t = threadIdx.x; t < p.cols; t += threads) {
        const double d = static_cast<double>(x[t]) - mean;
        ssd += p.mask(b, t) ? d * d : 0.0;
    }
    ssd = block_sum<threads>(ssd);
    if (threadIdx.x == 0) {
        shared_variance = scope::variance(shared_count, ssd, p.moments_opts.count_epsilon, p.moments_opts.variance);
        double* m = p.moments + b * p.moments_stride;
        m[moments_count] = shared_count;
        m[moments_sum] = sum;
        m[moments_mean] = mean;
        m[moments_variance] = shared_variance;
    }
    __syncthreads();
    if (p.out == nullptr) return;
    const scope::whitening w = scope::whitening_of(shared_count, mean, shared_variance, p.whiten_opts);
    T* y = p.out + b * p.out_stride;
    for (index_t t = threadIdx.x; t < p.cols; t += threads)
        y[t] = static_cast<T>(scope::whitened(w, p.mask(b, t), static_cast<double>(x[t]), p.whiten_opts.zero_masked));
}

/// Pass 1 (`Second` false) or 2 of a batch: each block adds its grid-stride share of the flattened
/// `[B, T]` elements, `{count, sum}` or `{Σ (x − mean)², 0}` with the mean read from the
/// statistics, into `partial[2·block]`.
template <bool Second, class T, class Mask>
__global__ void __launch_bounds__(threads) batch_partial_kernel(arguments<T, Mask> p, double* partial) {
    const index_t n = p.rows * p.cols;
    const double mean = Second ? p.moments[moments_mean] : 0.0;
    double first = 0.0, second = 0.0;
    for (index_t i = static_cast<index_t>(blockIdx.x) * threads + threadIdx.x; i < n;
         i += static_cast<index_t>(gridDim.x) * threads) {
        const index_t b = i / p.cols, t = i - b * p.cols;
        const bool valid = p.mask(b, t);
        const double x = static_cast<double>(p.values[b * p.values_stride + t]);
        if constexpr (Second) {
            const double d = x - mean;
            first += valid ? d * d : 0.0;
        } else {
            first += valid ? 1.0 : 0.0;
            second += valid ? x : 0.0;
        }
    }
    first = block_sum<threads>(first);
    if constexpr (!Second) second = block_sum<threads>(second);
    if (threadIdx.x == 0) {
        partial[2 * blockIdx.x] = first;
        partial[2 * blockIdx.x + 1] = second;
    }
}

/// One block adds the `blocks` partials (each thread a fixed subset, then a block sum) and
/// finishes: pass 1 writes count, sum and mean, pass 2 the variance.
template <bool Second>
__global__ void __launch_bounds__(threads)
    batch_finish_kernel(const double* partial, int blocks, double* moments, moments_options options) {
    namespace scope = rlhf::detail::stats_scope;
    double first = 0.0, second = 0.0;
    for (int i = static_cast<int>(threadIdx.x); i < blocks; i += threads) {
        first += partial[2 * i];
        second += partial[2 * i + 1];
    }
    first = block_sum<threads>(first);
    if constexpr (!Second) second = block_sum<threads>(second);
    if (threadIdx.x != 0) return;
    if constexpr (Second) {
        moments[moments_variance] =
            scope::variance(moments[moments_count], first, options.count_epsilon, options.variance);
    } else {
        moments[moments_count] = first;
        moments[moments_sum] = second;
        moments[moments_mean] = scope::mean(first, second, options.count_epsilon);
    }
}

/// Whitens every element of the batch with the statistics at `p.moments`.
template <class T, class Mask>
__global__ void __launch_bounds__(threads) batch_whiten_kernel(arguments<T, Mask> p) {
    namespace scope = rlhf::detail::stats_scope;
    const scope::whitening w = scope::whitening_of(p.moments[moments_count], p.moments[moments_mean],
                                                   p.moments[moments_variance], p.whiten_opts);
    const index_t n = p.rows * p.cols;
    for (index_t i = static_cast<index_t>(blockIdx.x) * threads + threadIdx.x; i < n;
         i += static_cast<index_t>(gridDim.x) * threads) {
        const index_t b = i / p.cols, t = i - b * p.cols;
        const double x = static_cast<double>(p.values[b * p.values_stride + t]);
        p.out[b * p.out_stride + t] = static_cast<T>(scope::whitened(w, p.mask(b, t), x, p.whiten_opts.zero_masked));
    }
}

/// Refuses `raise` (see the file comment) after the CPU's checks of the options.
inline void check_device_policy(std::string_view function, small_sample_policy policy) {
    if (policy == small_sample_policy::raise)
        fail(error_kind::config, function, "small_sample",
             "'zero_variance' or 'skip' (raising needs a device-to-host read)", "'raise'");
}

inline void check_workspace(std::string_view function, const void* workspace) {
    if (workspace == nullptr || reinterpret_cast<std::uintptr_t>(workspace) % alignof(double) != 0)
        fail(error_kind::value, function, "workspace",
             "device memory of masked_stats_workspace_bytes(B, T) bytes, 8-byte aligned",
             workspace == nullptr ? "null" : "a misaligned pointer");
}

/// Statistics (and, with `p.out`, whitening) over `p`'s scope.
template <class T, class Mask>
void launch(std::string_view function, const arguments<T, Mask>& p, bool per_row, void* workspace,
            cudaStream_t stream) {
    if (per_row) {
        if (p.rows == 0) return;
        per_row_kernel<T, Mask><<<static_cast<unsigned int>(p.rows), threads, 0, stream>>>(p);
        check_launch(function);
        return;
    }
    const auto blocks = static_cast<unsigned int>(batch_blocks(p.rows, p.cols));
    auto* partial = static_cast<double*>(workspace);
    batch_partial_kernel<false, T, Mask><<<blocks, threads, 0, stream>>>(p, partial);
    check_launch(function);
    batch_finish_kernel<false><<<1, threads, 0, stream>>>(partial, static_cast<int>(blocks), p.moments, p.moments_opts);
    check_launch(function);
    batch_partial_kernel<true, T, Mask><<<blocks, threads, 0, stream>>>(p, partial);
    check_launch(function);
    batch_finish_kernel<true><<<1, threads, 0, stream>>>(partial, static_cast<int>(blocks), p.moments, p.moments_opts);
    check_launch(function);
    if (p.out == nullptr || p.rows * p.cols == 0) return;
    batch_whiten_kernel<T, Mask><<<blocks, threads, 0, stream>>>(p);
    check_launch(function);
}

inline void check_moments_view(std::string_view function, mut_view<double> moments, index_t scopes) {
    check_shape(function, "moments", moments, {scopes, moments_slots});
}

template <class T, class MaskElement>
void check_whiten(std::string_view function, view<T> values, const view<MaskElement>* mask, mut_view<T> out,
                  mut_view<double> moments, const void* workspace, const whiten_options& options) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda whitening: values must be float or double");
    if (mask != nullptr) check_same_shape(function, "mask", *mask, "values", values);
    check_same_shape(function, "out", out, "values", values);
    check_same_or_disjoint(function, "out", out, "values", values);
    rlhf::detail::stats::check_whiten_options(function, options);
    check_device_policy(function, options.small_sample);
    const bool per_row = options.scope == whiten_scope::per_row;
    check_moments_view(function, moments, per_row ? values.extent(0) : 1);
    check_disjoint(function, "moments", moments, "values", values);
    check_disjoint(function, "moments", moments, "out", out);
    if (mask != nullptr) {
        check_disjoint(function, "out", out, "mask", *mask);
        check_disjoint(function, "moments", moments, "mask", *mask);
    }
    if (!per_row) check_workspace(function, workspace);
    if (per_row && values.extent(0) > index_t{0x7fffffff})
        fail(error_kind::shape, function, "values", "at most 2^31 - 1 rows (one block per row)", "more");
}

template <class T, class Mask>
arguments<T, Mask> make_arguments(view<T> values, Mask mask, mut_view<T> out, bool with_out, mut_view<double> moments,
                                  const moments_options& moments_opts, const whiten_options& whiten_opts) {
    return {values.data(),
            values.stride(0),
            mask,
            with_out ? out.data() : nullptr,
            with_out ? out.stride(0) : 0,
            moments.data(),
            moments.stride(0),
            values.extent(0),
            values.extent(1),
            moments_opts,
            whiten_opts};
}

/// The moments options of a whitening (its estimator, count epsilon; `skip` as `zero_variance`).
[[nodiscard]] inline moments_options moments_of(const whiten_options& options) noexcept {
    return {options.variance, small_sample_policy::zero_variance, options.count_epsilon};
}

}  // namespace detail::stats

/// Bytes of the workspace of the batch statistics (`compute_masked_moments`, and whitening with
/// `whiten_scope::per_batch`) over `[rows, cols]` values: two doubles per block of the first pass.
[[nodiscard]] constexpr std::size_t masked_stats_workspace_bytes(index_t rows, index_t cols) noexcept {
    return static_cast<std::size_t>(2 * detail::stats::batch_blocks(rows, cols)) * sizeof(double);
}

/// `rlhf::compute_masked_moments` on the device: `{count, sum, mean, variance}` of the valid
/// elements of `values` `[B, T]` (`mask` `[B, T]`, `∈ {0,1}`) into `moments` `[1, 4]` (device
/// doubles): `mean = Σ x·m / (Σ m + count_epsilon)`, `variance = Σ (x − mean)²·m / (Σ m +
/// count_epsilon)`, times `n/(n−1)` when unbiased; too few valid elements give mean 0 (none) and
/// variance 0, as the CPU's `zero_variance` (`skip` behaves the same; `raise` is refused).
/// `workspace`: `masked_stats_workspace_bytes(B, T)` bytes of device memory. No reducer: the
/// statistics are this device's (all-reduce the count and sum, then the squared deviations, for
/// global ones).
template <class T, class M>
void compute_masked_moments(view<T> values, view<M> mask, mut_view<double> moments, void* workspace,
                            const moments_options& options, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::compute_masked_moments: values must be float or double");
    constexpr std::string_view function = "rlhf::cuda::compute_masked_moments";
    check_same_shape(function, "mask", mask, "values", values);
    rlhf::detail::stats::check_moments_options(function, options);
    detail::stats::check_device_policy(function, options.small_sample);
    detail::stats::check_moments_view(function, moments, 1);
    check_disjoint(function, "moments", moments, "values", values);
    check_disjoint(function, "moments", moments, "mask", mask);
    detail::stats::check_workspace(function, workspace);
    const detail::stats::device_mask<M> m{mask.data(), mask.stride(0)};
    detail::stats::launch(function,
                          detail::stats::make_arguments(values, m, mut_view<T>{}, false, moments, options, {}), false,
                          workspace, stream);
}

/// `rlhf::masked_mean_per_row` and `rlhf::masked_variance_per_row` on the device, together:
/// `{count, sum, mean, variance}` of each row's valid elements into `moments` `[B, 4]` (device
/// doubles); a row with too few valid elements as `compute_masked_moments` (per row). One block per row.
template <class T, class M>
void compute_masked_moments_per_row(view<T> values, view<M> mask, mut_view<double> moments,
                                    const moments_options& options, cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>,
                  "rlhf::cuda::compute_masked_moments_per_row: values must be float or double");
    constexpr std::string_view function = "rlhf::cuda::compute_masked_moments_per_row";
    check_same_shape(function, "mask", mask, "values", values);
    rlhf::detail::stats::check_moments_options(function, options);
    detail::stats::check_device_policy(function, options.small_sample);
    detail::stats::check_moments_view(function, moments, values.extent(0));
    check_disjoint(function, "moments", moments, "values", values);
    check_disjoint(function, "moments", moments, "mask", mask);
    const detail::stats::device_mask<M> m{mask.data(), mask.stride(0)};
    detail::stats::launch(function,
                          detail::stats::make_arguments(values, m, mut_view<T>{}, false, moments, options, {}), true,
                          nullptr, stream);
}

/// `rlhf::masked_whiten` on the device: `out = (x − mean)·rsqrt(var + ε)` (or `rsqrt(max(var, ε))`),
/// plus the mean unless `shift_mean`, 0 at masked positions under `zero_masked`; statistics over
/// the batch (`moments` `[1, 4]`) or each row (`[B, 4]`), written there and read back on the device.
/// `skip` copies a scope with too few valid elements; `zero_variance` whitens it with variance 0
/// (and mean 0 when empty); `raise` is refused. `out` may be `values` (in place). `workspace`
/// (per batch only; may be null per row): `masked_stats_workspace_bytes(B, T)` bytes.
template <class T, class M>
void masked_whiten(view<T> values, view<M> mask, mut_view<T> out, mut_view<double> moments, void* workspace,
                   const whiten_options& options, cudaStream_t stream) {
    constexpr std::string_view function = "rlhf::cuda::masked_whiten";
    detail::stats::check_whiten(function, values, &mask, out, moments, workspace, options);
    const detail::stats::device_mask<M> m{mask.data(), mask.stride(0)};
    detail::stats::launch(
        function,
        detail::stats::make_arguments(values, m, out, true, moments, detail::stats::moments_of(options), options),
        options.scope == whiten_scope::per_row, workspace, stream);
}

/// `rlhf::whiten` on the device: `masked_whiten` with every position valid (no mask).
template <class T>
void whiten(view<T> values, mut_view<T> out, mut_view<double> moments, void* workspace, const whiten_options& options,
            cudaStream_t stream) {
    constexpr std::string_view function = "rlhf::cuda::whiten";
    detail::stats::check_whiten<T, unsigned char>(function, values, nullptr, out, moments, workspace, options);
    detail::stats::launch(function,
                          detail::stats::make_arguments(values, detail::stats::all_valid{}, out, true, moments,
                                                        detail::stats::moments_of(options), options),
                          options.scope == whiten_scope::per_row, workspace, stream);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda
