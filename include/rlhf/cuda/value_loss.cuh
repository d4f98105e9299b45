#pragma once
/// @file
/// The (clipped) value loss on CUDA: `rlhf::value_loss` (kernels/value_loss.hpp) on device
/// memory, forward and backward in one fused pass, with the same options and the same per-token
/// function (`rlhf::detail::value_loss_at`, host-device under nvcc).
///
/// Launches on `stream`, in order (all asynchronous, none reads back to the host):
/// 1. one block per row: n_b;
/// 2. one block: the aggregation divisor and c_b (`rlhf::detail::row_weight`);
/// 3. the fused pass, one block per (row, 1024 tokens): per token the loss, the gradient
///    `coef·c_b·m·dL/dV`, the token loss; per block the partial sums of the loss and the
///    statistics in double, written to the workspace (no atomics: the sums are deterministic);
/// 4. one block: the partial sums in a fixed order, the statistics, `result`.

#include <cuda_runtime.h>

#include <cstddef>
#include <limits>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/cuda/loss_aggregation.cuh"
#include "rlhf/cuda/support.cuh"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/options/value_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda {

/// Layout of the `result` array of `rlhf::cuda::value_loss` (float64, device): the loss, then
/// the fields of `rlhf::value_loss_stats` in the order of `for_each_field` in
/// rlhf/libtorch/loss_support.hpp.
enum value_result_index : int {
    value_result_loss = 0,
    value_result_clip_fraction,
    value_result_value_mean,
    value_result_value_error,
    value_result_return_mean,
    value_result_explained_variance,
    value_result_valid_tokens,
    value_result_clipped_tokens,
};

/// Length of the `result` array of `rlhf::cuda::value_loss`: 8 doubles.
inline constexpr int value_result_size = value_result_clipped_tokens + 1;

namespace detail {

/// Partial sums of one block of the fused pass (`partials[block · value_fields + field]`).
enum value_field : int {
    vf_loss = 0,   // c_b · Σ m·L (0 on rows with c_b = 0)
    vf_clipped,    // Σ m·[ψ(V_clip − R) > ψ(V − R)]
    vf_value,      // Σ m·V
    vf_sq_error,   // Σ (m·R − m·V)²
    vf_target,     // Σ m·R
    vf_sq_target,  // Σ (m·R)²
    vf_residual,   // Σ (m·R − m·V)
    value_fields
};

/// Per-row arrays of the value workspace: counts, weights.
inline constexpr index_t value_row_arrays = 2;

/// The arguments of the value kernels (device pointers, row strides in elements).
template <class T, class M>
struct value_args {
    const T* values;
    index_t values_stride;
    const T* old;
    index_t old_stride;
    const T* returns;
    index_t returns_stride;
    const M* mask;
    index_t mask_stride;
    T* grad;  // null: no gradient
    index_t grad_stride;
    T* tokens;  // null: no token losses
    index_t tokens_stride;
    index_t rows, cols, chunks;
    ::rlhf::detail::value_loss_params<T> params;
    bool from_advantages;
    double coef;
};

/// Launch (3): the fused pass over the tokens of one (row, chunk) per block; the per-token terms
/// are those of `rlhf::value_loss`.
template <int Threads, int Tokens, class T, class M>
__global__ void __launch_bounds__(Threads)
    value_tokens_kernel(value_args<T, M> a, const double* weights, double* partials) {
    using ::rlhf::detail::bit_select;
    const index_t block = blockIdx.x;
    const index_t row = block / a.chunks;
    if (row >= a.rows) return;  // the idle block of a launch with B = 0 (no partials to write)
    const index_t start = (block % a.chunks) * Tokens;
    const double c_row = weights[row];
    const T wc = static_cast<T>(a.coef * c_row);  // the product in double: each factor may overflow T
    const double old_weight = a.from_advantages ? 1.0 : 0.0;
    const T* v = a.values + row * a.values_stride;
    const T* old = a.old + row * a.old_stride;
    const T* ret = a.returns + row * a.returns_stride;
    const M* msk = a.mask + row * a.mask_stride;
    T* g = a.grad != nullptr ? a.grad + row * a.grad_stride : nullptr;
    T* tl = a.tokens != nullptr ? a.tokens + row * a.tokens_stride : nullptr;
    double s[value_fields] = {};
    long long clipped = 0;
    for (index_t k = threadIdx.x; k < Tokens; k += Threads) {
        const index_t t = start + k;
        if (t >= a.cols) break;
        const T m = static_cast<T>(msk[t]);
        const bool valid = m != T{0};
        const T target = ret[t] + bit_select(a.from_advantages, old[t], T{0});
        const auto p = ::rlhf::detail::value_loss_at(v[t], old[t], target, a.params);
        if (tl != nullptr) tl[t] = p.loss;
        if (g != nullptr) g[t] = bit_select(valid & (wc != T{0}) & (p.grad != T{0}), wc * p.grad, T{0});
        s[vf_loss] += static_cast<double>(bit_select(valid, p.loss, T{0}));
        const double value = static_cast<double>(m * v[t]);
        const double target_d =
            static_cast<double>(m) * (static_cast<double>(ret[t]) + old_weight * static_cast<double>(old[t]));
        const double e = target_d - value;
        s[vf_value] += value;
        s[vf_target] += target_d;
        s[vf_sq_target] += target_d * target_d;
        s[vf_residual] += e;
        s[vf_sq_error] += e * e;
        clipped += static_cast<long long>(valid & (p.clipped != T{0}));
    }
    s[vf_clipped] = static_cast<double>(clipped);
    block_sums<Threads>(s);
    if (threadIdx.x == 0) {
        s[vf_loss] = c_row != 0.0 ? c_row * s[vf_loss] : 0.0;  // a weightless row adds 0, even if L overflowed
        store_partials(s, block, partials);
    }
}

/// Launch (4): the statistics of `rlhf::value_loss` from the partial sums (one block; the
/// blocks' sums in a fixed order), written to `result` (`value_result_index`).
template <int Threads>
__global__ void __launch_bounds__(Threads)
    value_finalize_kernel(index_t blocks, double coef, const double* header, const double* partials, double* result) {
    double s[value_fields] = {};
    sum_partials<Threads>(partials, blocks, s);
    if (threadIdx.x != 0) return;
    const double n = header[0];
    double r[value_result_size] = {};
    r[value_result_loss] = coef == 0.0 ? 0.0 : coef * s[vf_loss];
    r[value_result_valid_tokens] = n;
    if (n > 0.0) {
        r[value_result_clipped_tokens] = s[vf_clipped];
        r[value_result_clip_fraction] = s[vf_clipped] / n;
        r[value_result_value_mean] = s[vf_value] / n;
        r[value_result_value_error] = s[vf_sq_error] / n;
        r[value_result_return_mean] = s[vf_target] / n;
        const double return_mean = r[value_result_return_mean];
        const double residual_mean = s[vf_residual] / n;
        const auto at_least_0 = [](double x) { return x < 0.0 ? 0.0 : x; };  // std::max(x, 0.0)
        const double var_target = at_least_0(s[vf_sq_target] / n - return_mean * return_mean);
        const double var_residual = at_least_0(s[vf_sq_error] / n - residual_mean * residual_mean);
        r[value_result_explained_variance] = var_target > 0.0 ? 1.0 - var_residual / var_target : 0.0;
    }
#pragma unroll
    for (int i = 0; i < value_result_size; ++i) result[i] = r[i];
}

}  // namespace detail

/// Bytes of the workspace of `rlhf::cuda::value_loss` for `[rows, cols]` inputs:
/// `8 · (2·B + 4 + 7·B·max(⌈T / 1024⌉, 1))` (per-row counts and weights, a header, the partial sums of
/// each block of the fused pass).
[[nodiscard]] constexpr std::size_t value_loss_workspace_bytes(index_t rows, index_t cols) noexcept {
    return sizeof(double) * static_cast<std::size_t>(
                                detail::workspace_doubles(rows, cols, detail::value_row_arrays, detail::value_fields));
}

/// `rlhf::value_loss` on device memory: the loss, d loss / d values and the statistics.
///
/// Inputs and outputs as `rlhf::value_loss` (`[B, T]` views of device memory, any row stride,
/// mask bool/integer/floating; `grad_values` and `token_losses` optional: an empty view skips
/// one), every option of `rlhf::value_loss_options`. `result`: `value_result_size` doubles of
/// device memory, [loss, `value_loss_stats` in `for_each_field` order] (`value_result_index`).
/// `workspace`: `value_loss_workspace_bytes(B, T)` bytes of device memory, 8-byte aligned (its
/// contents on entry do not matter). Every output is written on `stream`; nothing is read back,
/// allocated or synchronised.
///
/// Differences from the CPU kernel: the values are not checked (non-finite inputs or mask entries
/// other than 0/1 give what the formulas give; the CPU raises an error); the aggregation divisor
/// is the option's global count or this call's count (no reducer), and one that is not positive
/// (no valid token: the CPU's error) gives weights 0 and a loss of 0, as the torch-op path with
/// deferred statistics. Sums run in another order (different rounding).
/// Host checks (`rlhf::error` naming the argument): shapes, options (`rlhf::value_loss`'s, the
/// value-type checks included), null `result` / `workspace`; CUDA launch errors.
template <class T, class M>
void value_loss(view<T> values, view<T> old_values, view<T> returns, view<M> mask, mut_view<T> grad_values,
                mut_view<T> token_losses, const value_loss_options& options, double* result, void* workspace,
                cudaStream_t stream) {
    static_assert(std::is_floating_point_v<T>, "rlhf::cuda::value_loss: values must be float or double");
    constexpr std::string_view function = "rlhf::cuda::value_loss";
    ::rlhf::detail::check_value_loss_call(function, values, old_values, returns, mask, grad_values, token_losses,
                                          options);
    const bool want_grad = grad_values.data() != nullptr;
    const bool want_tokens = token_losses.data() != nullptr;
    const auto params = ::rlhf::detail::make_value_loss_params<T>(options);
    ::rlhf::detail::check_value_loss_params(function, options, params);
    const index_t rows = values.extent(0);
    const index_t cols = values.extent(1);
    detail::check_loss_buffers(function, result, workspace, rows, cols);

    const detail::loss_workspace ws = detail::split_workspace(workspace, rows, detail::value_row_arrays);
    detail::launch_row_weights<T>(function, mask, nullptr, 0, nullptr, 0, options.aggregation, ws, stream);

    const detail::value_args<T, M> args{values.data(),
                                        values.stride(0),
                                        old_values.data(),
                                        old_values.stride(0),
                                        returns.data(),
                                        returns.stride(0),
                                        mask.data(),
                                        mask.stride(0),
                                        grad_values.data(),
                                        want_grad ? grad_values.stride(0) : 0,
                                        token_losses.data(),
                                        want_tokens ? token_losses.stride(0) : 0,
                                        rows,
                                        cols,
                                        detail::loss_chunks(cols),
                                        params,
                                        options.returns_from_advantages,
                                        options.coef};
    constexpr int threads = detail::loss_block_threads;
    constexpr int tokens = detail::loss_block_tokens;
    const index_t blocks = rows * args.chunks;
    detail::value_tokens_kernel<threads, tokens, T, M>
        <<<static_cast<unsigned int>(blocks > 0 ? blocks : 1), threads, 0, stream>>>(args, ws.weights, ws.partials);
    check_launch(function);
    detail::value_finalize_kernel<threads>
        <<<1, threads, 0, stream>>>(blocks, options.coef, ws.header, ws.partials, result);
    check_launch(function);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda
