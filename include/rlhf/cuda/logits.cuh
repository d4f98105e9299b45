#pragma once
/// @file
/// The logits kernels of `rlhf/kernels/logits.hpp` (token log-probs, entropy, full-vocabulary KL
/// and their gradients) for logits `[B, T, V]` in device memory.
///
/// Layout: one thread block of `row_block_threads` (256) threads per position `(b, t)`; each
/// thread keeps an online log-sum-exp over a strided share of the row (running maximum `m` of
/// the logits, `Σ e^d`, `Σ e^d·d` with `d = (z − m)/τ`, rescaled when `m` grows, once per
/// vector), read in 16-byte vectors (4 float, 2 double, 8 half/bf16) with scalars before the
/// first 16-byte boundary and after the last whole vector; the threads' statistics are then
/// merged (block maximum, rescaled block sums, a fixed order: deterministic). A block per row
/// because RLHF vocabularies are 32k–256k: each thread streams 128–1000 elements and B·T rows
/// fill the GPU; a warp per row would only pay off below ~2k entries.
///
/// Logits `T` ∈ {float, double, __half, __nv_bfloat16}; statistics and the `[B, T]` outputs
/// are in `accumulate_t<T>` (double for double logits, float otherwise); `logsumexp` is double,
/// as in the CPU API: the backward splits `τ·logsumexp` into two floats, so `z − τ·logsumexp`
/// keeps the digits a float would lose at |z| ≈ 1e4. Gradients are written in `T`. Shifting `z`
/// by its maximum before dividing by `τ` keeps `d` within a rounding, also where `z / τ` alone
/// would overflow (the CPU kernel's error for a tiny `τ`; `logsumexp` is then ±inf).
///
/// Nothing is allocated and nothing synchronises: the launch is asynchronous on `stream`.
/// Shapes and options are checked on the host; values are not (that needs a device read), so
/// where the CPU kernel throws the CUDA kernel writes a defined value instead:
/// - a NaN or +inf logit, or a row of -inf only: NaN outputs at that position; the backward
///   writes a NaN row (and NaN at a NaN or +inf entry when it uses saved statistics);
/// - a token id outside `[0, V)`: a NaN log-prob, a NaN gradient row (`z[y]` is not read);
/// - a token whose logit is -inf: log-prob -inf (its gradient entry is `g_lp / τ`);
/// - a reference logit of -inf where the policy's is not: KL +inf, non-finite gradient entries;
/// - a mask entry other than 0: the position is valid (the CPU kernel requires {0, 1});
/// - non-finite upstream gradients or saved statistics propagate (saved ones: a NaN row).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>
#include <type_traits>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/cuda/support.cuh"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/options/logits.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda {

/// Logit element types of the CUDA logits kernels.
template <class T>
concept logit_type = std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, __half> ||
    std::is_same_v<T, __nv_bfloat16>;

/// Accumulation (and `[B, T]` output) type of logits `T`: double for double, float otherwise.
template <class T>
using accumulate_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

namespace detail::logits {

template <class A>
inline constexpr A neg_inf = -std::numeric_limits<A>::infinity();
template <class A>
inline constexpr A pos_inf = std::numeric_limits<A>::infinity();
template <class A>
inline constexpr A not_a_number = std::numeric_limits<A>::quiet_NaN();

/// Elements per 16-byte vector.
template <class T>
inline constexpr int lanes = static_cast<int>(16 / sizeof(T));

__device__ __forceinline__ float to_acc(float z) {
    return z;
}
__device__ __forceinline__ double to_acc(double z) {
    return z;
}
__device__ __forceinline__ float to_acc(__half z) {
    return __half2float(z);
}
__device__ __forceinline__ float to_acc(__nv_bfloat16 z) {
    return __bfloat162float(z);
}

template <class T, class A>
__device__ __forceinline__ T from_acc(A g) {
    if constexpr (std::is_same_v<T, __half>)
        return __float2half_rn(g);
    else if constexpr (std::is_same_v<T, __nv_bfloat16>)
        return __float2bfloat16_rn(g);
    else
        return g;
}

__device__ __forceinline__ float exp_of(float x) {
    return ::expf(x);
}
__device__ __forceinline__ double exp_of(double x) {
    return ::exp(x);
}
__device__ __forceinline__ float log_of(float x) {
    return ::logf(x);
}
__device__ __forceinline__ double log_of(double x) {
    return ::log(x);
}

template <class A>
__device__ __forceinline__ bool finite(A x) {
    return x > neg_inf<A> && x < pos_inf<A>;
}

/// Pointer and the two outer strides of a `[B, T]` or `[B, T, V]` view (innermost stride 1).
template <class E>
struct rows {
    E* data = nullptr;
    index_t s0 = 0, s1 = 0;

    [[nodiscard]] __device__ __forceinline__ E* at(index_t b, index_t t) const { return data + b * s0 + t * s1; }
    [[nodiscard]] __host__ __device__ __forceinline__ bool present() const { return data != nullptr; }
};

template <class E, std::size_t Rank>
[[nodiscard]] rows<E> rows_of(const basic_view<E, Rank>& v) {
    return {v.data(), v.stride(0), v.stride(1)};
}

/// Mask-less kernels get a null mask of this type.
using no_mask = bool;

template <class M>
[[nodiscard]] __device__ __forceinline__ bool masked_out(const rows<const M>& mask, index_t b, index_t t) {
    return mask.present() && *mask.at(b, t) == M{0};
}

/// A row of `vocab` elements as scalars `[0, head)`, `vectors` 16-byte vectors from `head`, and
/// scalars `[tail, vocab)`.
struct row_split {
    index_t head = 0, vectors = 0, tail = 0;
};

template <class T>
[[nodiscard]] __device__ __forceinline__ row_split split_row(const T* row, index_t vocab) {
    const auto misalign = static_cast<index_t>(reinterpret_cast<std::uintptr_t>(row) % 16);
    index_t head = misalign == 0 ? 0 : (16 - misalign) / static_cast<index_t>(sizeof(T));
    if (misalign % static_cast<index_t>(sizeof(T)) != 0) head = vocab;  // not element-aligned: all scalar
    head = head < vocab ? head : vocab;
    const index_t vectors = (vocab - head) / lanes<T>;
    return {head, vectors, head + vectors * lanes<T>};
}

/// Index of a thread's `k`-th scalar element (head first, then tail).
[[nodiscard]] __device__ __forceinline__ index_t scalar_index(const row_split& s, index_t k) {
    return k < s.head ? k : s.tail + (k - s.head);
}

template <class T>
__device__ __forceinline__ void load_vector(const T* p, T (&out)[lanes<T>]) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    std::memcpy(&out[0], &raw, sizeof(raw));
}

template <class T>
__device__ __forceinline__ void store_vector(T* p, const T (&in)[lanes<T>]) {
    uint4 raw;
    std::memcpy(&raw, &in[0], sizeof(raw));
    *reinterpret_cast<uint4*>(p) = raw;
}

/// Max, sum and sum over the block's `Threads` threads, the result in every thread (fixed order:
/// deterministic). `Threads` is the block size, a multiple of 32.
template <int Threads, class A, class Op>
[[nodiscard]] __device__ __forceinline__ A block_all_reduce(A value, Op op) {
    static_assert(Threads % 32 == 0 && Threads <= 1024, "rlhf::cuda: a block of whole warps");
    __shared__ A partial[Threads / 32];
    for (int offset = 16; offset > 0; offset /= 2) value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = value;
    __syncthreads();
    A total = partial[0];
    for (int w = 1; w < Threads / 32; ++w) total = op(total, partial[w]);
    __syncthreads();  // `partial` is reused by the next call
    return total;
}

struct max_op {
    template <class A>
    __device__ __forceinline__ A operator()(A a, A b) const {
        return b > a ? b : a;
    }
};
struct sum_op {
    template <class A>
    __device__ __forceinline__ A operator()(A a, A b) const {
        return a + b;
    }
};

/// Softmax statistics of `x = z·scale` over a row: the largest logit `max` (of `z`, not `x`),
/// `sum = Σ e^d`, `moment = Σ e^d·d` with `d = (z − max)·scale` (as
/// `rlhf::detail::logits::row_stats`, whose `max` is of `x`). Shifting `z` before scaling keeps
/// `d` exact to a rounding where `z·scale` in float would lose `|x|·2⁻²⁴`. `sum` is NaN when a NaN
/// or +inf was seen, 0 for a row of -inf only.
template <class A>
struct row_stats {
    A max = neg_inf<A>;
    A sum = 0;
    A moment = 0;

    [[nodiscard]] __device__ __forceinline__ bool valid() const { return sum > A{0}; }  // false for NaN
    /// `H = log Σ − moment / Σ` (both terms ≥ 0: no cancellation).
    [[nodiscard]] __device__ __forceinline__ A entropy() const { return log_of(sum) - moment / sum; }
};

/// Rescales running softmax sums from the maximum `from` to a maximum `to`: with
/// `shift = (from − to)·scale`, each `d` moves by `shift`, so `Σ e^d` becomes `e^shift·Σ e^d` and
/// `Σ e^d·d` becomes `e^shift·(Σ e^d·d + shift·Σ e^d)`. `sum` and `moment` in place.
template <class A>
__device__ __forceinline__ void rescale_sums(A from, A to, A scale, A& sum, A& moment) {
    const A shift = (from - to) * scale;
    const A factor = exp_of(shift);
    moment = factor * (moment + shift * sum);
    sum *= factor;
}

/// One thread's online statistics.
template <class A>
struct online_stats {
    row_stats<A> s;
    bool invalid = false;

    /// Adds `N` logits `z`: their maximum first (one rescale per group), then the terms.
    template <int N>
    __device__ __forceinline__ void add(const A (&z)[N], A scale) {
        A top = neg_inf<A>;
        bool bad = false;
        for (int k = 0; k < N; ++k) {
            top = z[k] > top ? z[k] : top;
            bad |= !(z[k] < pos_inf<A>);  // NaN or +inf
        }
        invalid |= bad;
        if (top > s.max) {
            if (s.max != neg_inf<A>) rescale_sums(s.max, top, scale, s.sum, s.moment);
            s.max = top;
        }
        if (s.max == neg_inf<A>) return;  // only -inf so far: no mass
        for (int k = 0; k < N; ++k) {
            const A d = (z[k] - s.max) * scale;
            const A e = exp_of(d);
            s.sum += e;
            s.moment += e > A{0} ? e * d : A{0};  // a -inf entry: e = 0, d = -inf
        }
    }
};

/// Softmax statistics of the row `z[0, vocab)` with `x = z·scale` (`scale > 0`), in every
/// thread of the block.
template <int Threads, class T, class A>
[[nodiscard]] __device__ row_stats<A> block_row_stats(const T* z, index_t vocab, A scale) {
    online_stats<A> o;
    const row_split split = split_row(z, vocab);
    for (index_t k = threadIdx.x; k < split.vectors; k += Threads) {
        T v[lanes<T>];
        load_vector(z + split.head + k * lanes<T>, v);
        A x[lanes<T>];
        for (int j = 0; j < lanes<T>; ++j) x[j] = to_acc(v[j]);
        o.add(x, scale);
    }
    const index_t scalars = split.head + (vocab - split.tail);
    for (index_t k = threadIdx.x; k < scalars; k += Threads) {
        const A x[1] = {to_acc(z[scalar_index(split, k)])};
        o.add(x, scale);
    }
    // Merge: rescale every thread's sums to the block maximum, then add them.
    row_stats<A> r;
    r.max = block_all_reduce<Threads>(o.s.max, max_op{});
    A sum = 0, moment = 0;
    if (o.s.sum > A{0}) {
        sum = o.s.sum;
        moment = o.s.moment;
        rescale_sums(o.s.max, r.max, scale, sum, moment);
    }
    if (o.invalid) sum = not_a_number<A>;
    r.sum = block_all_reduce<Threads>(sum, sum_op{});
    r.moment = block_all_reduce<Threads>(moment, sum_op{});
    return r;
}

/// Writes `value` into `out[0, vocab)` with the block's threads.
template <int Threads, class T>
__device__ void fill_row(T* out, index_t vocab, T value) {
    const row_split split = split_row(out, vocab);
    T v[lanes<T>];
    for (int j = 0; j < lanes<T>; ++j) v[j] = value;
    for (index_t k = threadIdx.x; k < split.vectors; k += Threads) store_vector(out + split.head + k * lanes<T>, v);
    const index_t scalars = split.head + (vocab - split.tail);
    for (index_t k = threadIdx.x; k < scalars; k += Threads) out[scalar_index(split, k)] = value;
}

/// The backward kernels' gradient row `out` at a masked-out `(b, t)`: every entry 0. True when
/// masked out (the kernel is then done with the row).
template <int Threads, class T, class M>
__device__ __forceinline__ bool zero_masked_row(const rows<const M>& mask, index_t b, index_t t, T* out,
                                                index_t vocab) {
    if (!masked_out(mask, b, t)) return false;
    fill_row<Threads>(out, vocab, from_acc<T>(accumulate_t<T>{0}));
    return true;
}

/// The backward kernels' gradient row `out` of a row whose statistics are not finite: every entry NaN.
template <int Threads, class T>
__device__ __forceinline__ void nan_row(T* out, index_t vocab) {
    fill_row<Threads>(out, vocab, from_acc<T>(not_a_number<accumulate_t<T>>));
}

/// Writes `out[j] = f(j, z_j)` for every `j` of the row, reading `z` and writing `out` in
/// 16-byte vectors when both rows have the same offset from a 16-byte boundary, else in scalars.
template <int Threads, class T, class F>
__device__ __forceinline__ void map_row(const T* z, T* out, index_t vocab, F f) {
    const row_split split = split_row(z, vocab);
    const bool vector_out = reinterpret_cast<std::uintptr_t>(z) % 16 == reinterpret_cast<std::uintptr_t>(out) % 16;
    for (index_t k = threadIdx.x; k < split.vectors; k += Threads) {
        const index_t first = split.head + k * lanes<T>;
        T v[lanes<T>];
        load_vector(z + first, v);
        T g[lanes<T>];
        for (int j = 0; j < lanes<T>; ++j) g[j] = f(first + j, to_acc(v[j]));
        if (vector_out) {
            store_vector(out + first, g);
        } else {
            for (int j = 0; j < lanes<T>; ++j) out[first + j] = g[j];
        }
    }
    const index_t scalars = split.head + (vocab - split.tail);
    for (index_t k = threadIdx.x; k < scalars; k += Threads) {
        const index_t i = scalar_index(split, k);
        out[i] = f(i, to_acc(z[i]));
    }
}

// -- token log-probs and entropy ------------------------------------------------------------

template <class T, class M>
struct forward_args {
    using A = accumulate_t<T>;
    rows<const T> logits;
    rows<const std::int64_t> tokens;
    rows<const M> mask;
    rows<A> logprobs, entropy;
    rows<double> logsumexp;
    index_t steps = 0, vocab = 0;
    A scale = 1;               // 1 / τ
    double inverse_tau = 1.0;  // 1 / τ, for logsumexp
};

template <int Threads, class T, class M>
__global__ void __launch_bounds__(Threads) forward_kernel(const forward_args<T, M> a) {
    using A = accumulate_t<T>;
    const index_t row = blockIdx.x, b = row / a.steps, t = row % a.steps;
    if (masked_out(a.mask, b, t)) {
        if (threadIdx.x == 0) {
            if (a.logprobs.present()) *a.logprobs.at(b, t) = A{0};
            if (a.entropy.present()) *a.entropy.at(b, t) = A{0};
            if (a.logsumexp.present()) *a.logsumexp.at(b, t) = 0.0;
        }
        return;
    }
    const T* z = a.logits.at(b, t);
    const row_stats<A> s = block_row_stats<Threads>(z, a.vocab, a.scale);
    if (threadIdx.x != 0) return;
    const bool valid = s.valid();
    if (a.entropy.present()) *a.entropy.at(b, t) = valid ? s.entropy() : not_a_number<A>;
    if (a.logsumexp.present())
        *a.logsumexp.at(b, t) = valid ? static_cast<double>(s.max) * a.inverse_tau + ::log(static_cast<double>(s.sum))
                                      : not_a_number<double>;
    if (a.logprobs.present()) {
        const std::int64_t y = *a.tokens.at(b, t);
        const bool in_range = y >= 0 && y < a.vocab;
        // (x_y − max x) − log Σ: the shifted form, as the CPU kernel.
        *a.logprobs.at(b, t) = valid && in_range ? (to_acc(z[y]) - s.max) * a.scale - log_of(s.sum) : not_a_number<A>;
    }
}

template <class T, class M>
struct backward_args {
    using A = accumulate_t<T>;
    rows<const T> logits;
    rows<const std::int64_t> tokens;
    rows<const M> mask;
    rows<const A> grad_logprobs, grad_entropy;
    rows<const double> logsumexp;
    rows<const A> entropy;
    rows<T> grad_logits;
    index_t steps = 0, vocab = 0;
    A scale = 1;         // 1 / τ
    double tau = 1.0;    // τ
    bool saved = false;  // use `logsumexp` (and `entropy` when there is a `grad_entropy`)
};

/// Gradient entry `j` of a row: `softmax_gradient(p_j, d_j, centre, g_lp, g_h)` (+ `g_lp` at the
/// token), over `τ`, with `d_j = (z_j − (hi + lo))·scale` and `p_j = e^(d_j − log_sum)`; NaN at
/// a NaN or +inf logit.
template <class T>
struct softmax_gradient_entry {
    using A = accumulate_t<T>;
    A scale, hi, lo, log_sum, centre, g_lp, g_h;
    std::int64_t y;

    [[nodiscard]] __device__ __forceinline__ T operator()(index_t j, A z) const {
        const A d = ((z - hi) - lo) * scale;
        const A p = exp_of(d - log_sum);
        A g = rlhf::detail::logits::softmax_gradient(p, d, centre, g_lp, g_h);
        if (j == y) g += g_lp;  // onehot(y)·g_lp
        return from_acc<T>(z < pos_inf<A> ? g * scale : not_a_number<A>);
    }
};

template <int Threads, class T, class M>
__global__ void __launch_bounds__(Threads) backward_kernel(const backward_args<T, M> a) {
    using A = accumulate_t<T>;
    const index_t row = blockIdx.x, b = row / a.steps, t = row % a.steps;
    T* out = a.grad_logits.at(b, t);
    if (zero_masked_row<Threads>(a.mask, b, t, out, a.vocab)) return;
    const T* z = a.logits.at(b, t);
    const A g_lp = a.grad_logprobs.present() ? *a.grad_logprobs.at(b, t) : A{0};
    const A g_h = a.grad_entropy.present() ? *a.grad_entropy.at(b, t) : A{0};
    std::int64_t y = -1;  // no token: no entry gets g_lp
    bool valid = true;
    if (a.tokens.present()) {
        y = *a.tokens.at(b, t);
        valid = y >= 0 && y < a.vocab;
    }
    // p_j = e^(d_j − log_sum), d_j = (z_j − (hi + lo))·scale, d_j − centre = x_j − Σp·x. Saved:
    // hi + lo = τ·logsumexp as two floats (z_j − hi is exact near the maximum), log_sum = 0,
    // centre = −H. Recomputed: hi = max z, log_sum = log Σ, centre = moment / Σ.
    A hi = 0, lo = 0, log_sum = 0, centre = 0;
    if (a.saved) {
        const double shift = *a.logsumexp.at(b, t) * a.tau;
        hi = static_cast<A>(shift);
        lo = static_cast<A>(shift - static_cast<double>(hi));
        centre = a.grad_entropy.present() ? -*a.entropy.at(b, t) : A{0};
        valid = valid && finite(hi) && finite(centre);
    } else {
        const row_stats<A> s = block_row_stats<Threads>(z, a.vocab, a.scale);
        valid = valid && s.valid();
        hi = s.max;
        log_sum = log_of(s.sum);
        centre = s.moment / s.sum;
    }
    if (!valid) {  // the same in every thread of the block
        nan_row<Threads>(out, a.vocab);
        return;
    }
    map_row<Threads>(z, out, a.vocab, softmax_gradient_entry<T>{a.scale, hi, lo, log_sum, centre, g_lp, g_h, y});
}

/// The checks of the token entry points (`forward`, `backward`): τ > 0, `logits [B, T, V]`,
/// `tokens` and `mask` `[B, T]` when given. Returns `[B, T]`.
template <class T, class M>
extents_t<2> check_token_inputs(std::string_view function, const view<T, 3>& logits, const view<std::int64_t>* tokens,
                                const view<M>* mask, const logits_options& options) {
    check_positive(function, "temperature", options.temperature);
    rlhf::detail::logits::check_logits(function, "logits", logits);
    const extents_t<2> bt{logits.extent(0), logits.extent(1)};
    if (tokens != nullptr) check_shape(function, "tokens", *tokens, bt);
    if (mask != nullptr) check_shape(function, "mask", *mask, bt);
    return bt;
}

/// B·T of `logits` (the argument `name`): one block per position, so at most 2^31 − 1 (else an
/// `rlhf::error`).
template <class T>
index_t checked_positions(std::string_view function, std::string_view name, const view<T, 3>& logits) {
    const index_t positions = logits.extent(0) * logits.extent(1);
    if (positions > INT_MAX)
        fail(error_kind::shape, function, name, "at most 2^31 − 1 positions (B·T, one block each)",
             shape_string(logits.extents()));
    return positions;
}

template <class T, class M>
void forward(std::string_view function, const view<T, 3>& logits, const view<std::int64_t>* tokens, const view<M>* mask,
             const mut_view<accumulate_t<T>>& logprobs, const mut_view<accumulate_t<T>>& entropy,
             const mut_view<double>& logsumexp, const logits_options& options, cudaStream_t stream) {
    using A = accumulate_t<T>;
    namespace cpu = rlhf::detail::logits;
    const extents_t<2> bt = check_token_inputs(function, logits, tokens, mask, options);
    const index_t steps = logits.extent(1), vocab = logits.extent(2);
    if (tokens != nullptr) cpu::check_optional_bt(function, "logprobs", logprobs, bt);
    cpu::check_optional_bt(function, "entropy", entropy, bt);
    cpu::check_optional_bt(function, "logsumexp", logsumexp, bt);
    const index_t positions = checked_positions(function, "logits", logits);
    forward_args<T, M> a;
    a.logits = rows_of(logits);
    if (tokens != nullptr && cpu::present(logprobs)) {
        a.tokens = rows_of(*tokens);
        a.logprobs = rows_of(logprobs);
    }
    if (mask != nullptr) a.mask = rows_of(*mask);
    if (cpu::present(entropy)) a.entropy = rows_of(entropy);
    if (cpu::present(logsumexp)) a.logsumexp = rows_of(logsumexp);
    a.steps = steps;
    a.vocab = vocab;
    a.scale = static_cast<A>(1.0 / options.temperature);
    a.inverse_tau = 1.0 / options.temperature;
    if (positions == 0 || !(a.logprobs.present() || a.entropy.present() || a.logsumexp.present())) return;
    forward_kernel<row_block_threads, T, M><<<static_cast<unsigned int>(positions), row_block_threads, 0, stream>>>(a);
    check_launch(function);
}

template <class T, class M>
void backward(std::string_view function, const view<T, 3>& logits, const view<std::int64_t>* tokens,
              const view<M>* mask, const view<accumulate_t<T>>& grad_logprobs,
              const view<accumulate_t<T>>& grad_entropy, const view<double>& logsumexp,
              const view<accumulate_t<T>>& entropy, const mut_view<T, 3>& grad_logits, const logits_options& options,
              cudaStream_t stream) {
    using A = accumulate_t<T>;
    namespace cpu = rlhf::detail::logits;
    const extents_t<2> bt = check_token_inputs(function, logits, tokens, mask, options);
    const index_t steps = logits.extent(1), vocab = logits.extent(2);
    const bool has_glp = tokens != nullptr && cpu::present(grad_logprobs);
    const bool has_gh = cpu::present(grad_entropy);
    if (has_glp) check_shape(function, "grad_logprobs", grad_logprobs, bt);
    if (has_gh) check_shape(function, "grad_entropy", grad_entropy, bt);
    check_same_shape(function, "grad_logits", grad_logits, "logits", logits);
    check_same_or_disjoint(function, "grad_logits", grad_logits, "logits", logits);
    cpu::check_optional_bt(function, "logsumexp", logsumexp, bt);
    cpu::check_optional_bt(function, "entropy", entropy, bt);
    const index_t positions = checked_positions(function, "logits", logits);
    backward_args<T, M> a;
    a.logits = rows_of(logits);
    if (tokens != nullptr) a.tokens = rows_of(*tokens);
    if (mask != nullptr) a.mask = rows_of(*mask);
    if (has_glp) a.grad_logprobs = rows_of(grad_logprobs);
    if (has_gh) a.grad_entropy = rows_of(grad_entropy);
    a.saved = cpu::present(logsumexp) && (!has_gh || cpu::present(entropy));
    if (a.saved) {
        a.logsumexp = rows_of(logsumexp);
        if (has_gh) a.entropy = rows_of(entropy);
    }
    a.grad_logits = rows_of(grad_logits);
    a.steps = steps;
    a.vocab = vocab;
    a.scale = static_cast<A>(1.0 / options.temperature);
    a.tau = options.temperature;
    if (positions == 0) return;
    backward_kernel<row_block_threads, T, M><<<static_cast<unsigned int>(positions), row_block_threads, 0, stream>>>(a);
    check_launch(function);
}

// -- full-vocabulary KL -----------------------------------------------------------------------

/// A split of three rows that is shared: 16-byte vectors only when every row has the same offset
/// from a 16-byte boundary, else every element a scalar. `c` may be null.
template <class T>
[[nodiscard]] __device__ __forceinline__ row_split split_rows(const T* a, const T* b, const T* c, index_t vocab) {
    const auto offset = reinterpret_cast<std::uintptr_t>(a) % 16;
    const bool same = reinterpret_cast<std::uintptr_t>(b) % 16 == offset &&
                      (c == nullptr || reinterpret_cast<std::uintptr_t>(c) % 16 == offset);
    return same ? split_row(a, vocab) : row_split{vocab, 0, vocab};
}

/// Two-row statistics (as `rlhf::detail::logits::kl_stats`, maxima of `z`): policy `max_p`,
/// `sum_p = Σ e^dx`, reference `max_q`, `sum_q = Σ e^dy`, `cross = Σ e^dx·(dx − dy)` with
/// `dx = (z_p − max_p)·scale`, `dy = (z_q − max_q)·scale`. `sum_p` is NaN after a NaN or +inf.
template <class A>
struct kl_stats {
    A max_p = neg_inf<A>, sum_p = 0, max_q = neg_inf<A>, sum_q = 0, cross = 0;

    [[nodiscard]] __device__ __forceinline__ bool valid() const { return sum_p > A{0} && sum_q > A{0}; }
    /// `KL = cross/Σp − log Σp + log Σq`.
    [[nodiscard]] __device__ __forceinline__ A kl() const { return cross / sum_p - log_of(sum_p) + log_of(sum_q); }
};

template <class A>
struct online_kl {
    kl_stats<A> s;
    bool invalid = false;

    template <int N>
    __device__ __forceinline__ void add(const A (&zp)[N], const A (&zq)[N], A scale) {
        A top_p = neg_inf<A>, top_q = neg_inf<A>;
        bool bad = false;
        for (int k = 0; k < N; ++k) {
            top_p = zp[k] > top_p ? zp[k] : top_p;
            top_q = zq[k] > top_q ? zq[k] : top_q;
            bad |= !(zp[k] < pos_inf<A>) || !(zq[k] < pos_inf<A>);
        }
        invalid |= bad;
        if (top_p > s.max_p) {
            if (s.max_p != neg_inf<A>) rescale_sums(s.max_p, top_p, scale, s.sum_p, s.cross);
            s.max_p = top_p;
        }
        if (top_q > s.max_q) {
            if (s.max_q != neg_inf<A>) {
                s.cross += (top_q - s.max_q) * scale * s.sum_p;  // −(y − my) grows by the shift
                s.sum_q *= exp_of((s.max_q - top_q) * scale);
            }
            s.max_q = top_q;
        }
        const bool has_p = s.max_p > neg_inf<A>, has_q = s.max_q > neg_inf<A>;
        for (int k = 0; k < N; ++k) {
            const A dx = (zp[k] - s.max_p) * scale;
            const A dy = has_q ? (zq[k] - s.max_q) * scale : neg_inf<A>;
            const A ep = has_p ? exp_of(dx) : A{0};
            s.sum_p += ep;
            s.sum_q += has_q ? exp_of(dy) : A{0};
            s.cross += ep > A{0} ? ep * (dx - dy) : A{0};  // +inf where the reference is -inf
        }
    }
};

/// KL statistics of the rows `zp`, `zq`, in every thread of the block.
template <int Threads, class T, class A>
[[nodiscard]] __device__ kl_stats<A> block_kl_stats(const T* zp, const T* zq, index_t vocab, A scale) {
    online_kl<A> o;
    const row_split split = split_rows(zp, zq, static_cast<const T*>(nullptr), vocab);
    for (index_t k = threadIdx.x; k < split.vectors; k += Threads) {
        const index_t first = split.head + k * lanes<T>;
        T vp[lanes<T>], vq[lanes<T>];
        load_vector(zp + first, vp);
        load_vector(zq + first, vq);
        A xp[lanes<T>], xq[lanes<T>];
        for (int j = 0; j < lanes<T>; ++j) {
            xp[j] = to_acc(vp[j]);
            xq[j] = to_acc(vq[j]);
        }
        o.add(xp, xq, scale);
    }
    const index_t scalars = split.head + (vocab - split.tail);
    for (index_t k = threadIdx.x; k < scalars; k += Threads) {
        const index_t i = scalar_index(split, k);
        const A xp[1] = {to_acc(zp[i])}, xq[1] = {to_acc(zq[i])};
        o.add(xp, xq, scale);
    }
    kl_stats<A> r;
    r.max_p = block_all_reduce<Threads>(o.s.max_p, max_op{});
    r.max_q = block_all_reduce<Threads>(o.s.max_q, max_op{});
    A sum_p = 0, sum_q = 0, cross = 0;
    if (o.s.sum_p > A{0}) {
        // Rescaled to the block's policy maximum, then to its reference maximum.
        sum_p = o.s.sum_p;
        cross = o.s.cross;
        rescale_sums(o.s.max_p, r.max_p, scale, sum_p, cross);
        if (sum_p > A{0})
            cross += (r.max_q - o.s.max_q) * scale * sum_p;
        else
            cross = 0;  // mass that underflows against the block's maximum
    }
    if (o.s.sum_q > A{0}) sum_q = o.s.sum_q * exp_of((o.s.max_q - r.max_q) * scale);
    if (o.invalid) sum_p = not_a_number<A>;
    r.sum_p = block_all_reduce<Threads>(sum_p, sum_op{});
    r.sum_q = block_all_reduce<Threads>(sum_q, sum_op{});
    r.cross = block_all_reduce<Threads>(cross, sum_op{});
    return r;
}

template <class T, class M>
struct kl_args {
    using A = accumulate_t<T>;
    rows<const T> policy, reference;
    rows<const M> mask;
    rows<A> kl;
    rows<const A> grad_kl;
    rows<T> grad_policy;
    index_t steps = 0, vocab = 0;
    A scale = 1;  // 1 / τ
};

template <int Threads, class T, class M>
__global__ void __launch_bounds__(Threads) kl_forward_kernel(const kl_args<T, M> a) {
    using A = accumulate_t<T>;
    const index_t row = blockIdx.x, b = row / a.steps, t = row % a.steps;
    if (masked_out(a.mask, b, t)) {
        if (threadIdx.x == 0) *a.kl.at(b, t) = A{0};
        return;
    }
    const kl_stats<A> s = block_kl_stats<Threads>(a.policy.at(b, t), a.reference.at(b, t), a.vocab, a.scale);
    if (threadIdx.x == 0) *a.kl.at(b, t) = s.valid() ? s.kl() : not_a_number<A>;
}

template <int Threads, class T, class M>
__global__ void __launch_bounds__(Threads) kl_backward_kernel(const kl_args<T, M> a) {
    using A = accumulate_t<T>;
    const index_t row = blockIdx.x, b = row / a.steps, t = row % a.steps;
    T* out = a.grad_policy.at(b, t);
    if (zero_masked_row<Threads>(a.mask, b, t, out, a.vocab)) return;
    const T* zp = a.policy.at(b, t);
    const T* zq = a.reference.at(b, t);
    const kl_stats<A> s = block_kl_stats<Threads>(zp, zq, a.vocab, a.scale);
    if (!s.valid()) {
        nan_row<Threads>(out, a.vocab);
        return;
    }
    // dKL/dx_j = p_j·(log p_j − log q_j − KL); log p_j = dx − log Σp, log q_j = dy − log Σq.
    const A kl = s.kl(), log_sp = log_of(s.sum_p), log_sq = log_of(s.sum_q), scale = a.scale;
    const A g = *a.grad_kl.at(b, t) * scale;
    const auto entry = [&](A xp, A xq) {
        const A dx = (xp - s.max_p) * scale, dy = (xq - s.max_q) * scale;
        const A p = exp_of(dx - log_sp);
        const A bracket = ((dx - log_sp) - (dy - log_sq)) - kl;
        const A value = rlhf::detail::logits::kl_gradient(g, p, bracket);
        return from_acc<T>(xp < pos_inf<A> && xq < pos_inf<A> ? value : not_a_number<A>);
    };
    const row_split split = split_rows(zp, zq, static_cast<const T*>(out), a.vocab);
    for (index_t k = threadIdx.x; k < split.vectors; k += Threads) {
        const index_t first = split.head + k * lanes<T>;
        T vp[lanes<T>], vq[lanes<T>], v[lanes<T>];
        load_vector(zp + first, vp);
        load_vector(zq + first, vq);
        for (int j = 0; j < lanes<T>; ++j) v[j] = entry(to_acc(vp[j]), to_acc(vq[j]));
        store_vector(out + first, v);
    }
    const index_t scalars = split.head + (a.vocab - split.tail);
    for (index_t k = threadIdx.x; k < scalars; k += Threads) {
        const index_t i = scalar_index(split, k);
        out[i] = entry(to_acc(zp[i]), to_acc(zq[i]));
    }
}

template <class T, class M>
kl_args<T, M> kl_inputs(std::string_view function, const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
                        const view<M>* mask, const logits_options& options) {
    check_positive(function, "temperature", options.temperature);
    rlhf::detail::logits::check_logits(function, "policy_logits", policy_logits);
    check_same_shape(function, "reference_logits", reference_logits, "policy_logits", policy_logits);
    if (mask != nullptr) check_shape(function, "mask", *mask, {policy_logits.extent(0), policy_logits.extent(1)});
    (void)checked_positions(function, "policy_logits", policy_logits);
    kl_args<T, M> a;
    a.policy = rows_of(policy_logits);
    a.reference = rows_of(reference_logits);
    if (mask != nullptr) a.mask = rows_of(*mask);
    a.steps = policy_logits.extent(1);
    a.vocab = policy_logits.extent(2);
    a.scale = static_cast<accumulate_t<T>>(1.0 / options.temperature);
    return a;
}

template <class T, class M>
void full_kl(std::string_view function, const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
             const view<M>* mask, const mut_view<accumulate_t<T>>& kl, const logits_options& options,
             cudaStream_t stream) {
    kl_args<T, M> a = kl_inputs(function, policy_logits, reference_logits, mask, options);
    check_shape(function, "kl", kl, {policy_logits.extent(0), policy_logits.extent(1)});
    a.kl = rows_of(kl);
    const index_t positions = policy_logits.extent(0) * policy_logits.extent(1);
    if (positions == 0) return;
    kl_forward_kernel<row_block_threads, T, M>
        <<<static_cast<unsigned int>(positions), row_block_threads, 0, stream>>>(a);
    check_launch(function);
}

template <class T, class M>
void full_kl_backward(std::string_view function, const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
                      const view<M>* mask, const view<accumulate_t<T>>& grad_kl,
                      const mut_view<T, 3>& grad_policy_logits, const logits_options& options, cudaStream_t stream) {
    kl_args<T, M> a = kl_inputs(function, policy_logits, reference_logits, mask, options);
    check_shape(function, "grad_kl", grad_kl, {policy_logits.extent(0), policy_logits.extent(1)});
    check_same_shape(function, "grad_policy_logits", grad_policy_logits, "policy_logits", policy_logits);
    check_same_or_disjoint(function, "grad_policy_logits", grad_policy_logits, "policy_logits", policy_logits);
    check_disjoint(function, "grad_policy_logits", grad_policy_logits, "reference_logits", reference_logits);
    a.grad_kl = rows_of(grad_kl);
    a.grad_policy = rows_of(grad_policy_logits);
    const index_t positions = policy_logits.extent(0) * policy_logits.extent(1);
    if (positions == 0) return;
    kl_backward_kernel<row_block_threads, T, M>
        <<<static_cast<unsigned int>(positions), row_block_threads, 0, stream>>>(a);
    check_launch(function);
}

}  // namespace detail::logits

// -- public API -------------------------------------------------------------------------------

/// Token log-probabilities `log softmax(z / τ)[y]`, entropy `H = logsumexp(x) − Σ softmax(x)·x`
/// and `logsumexp(x)` (`x = z / τ`) of device `logits [B, T, V]` at `tokens [B, T]`, one
/// streaming pass per row; as `rlhf::logprobs_from_logits`, with outputs in `accumulate_t<T>`
/// (`logsumexp` in double). `entropy`, `logsumexp` optional (`{}`); keep both for a one-pass
/// backward. Mask 0: not read, 0 in every output. Asynchronous on `stream`; values unchecked
/// (see the file comment).
template <logit_type T, class M>
void logprobs_from_logits(const view<T, 3>& logits, const view<std::int64_t>& tokens, const view<M>& mask,
                          const mut_view<accumulate_t<T>>& logprobs, const mut_view<accumulate_t<T>>& entropy = {},
                          const mut_view<double>& logsumexp = {}, const logits_options& options = {},
                          cudaStream_t stream = nullptr) {
    detail::logits::forward("rlhf::cuda::logprobs_from_logits", logits, &tokens, &mask, logprobs, entropy, logsumexp,
                            options, stream);
}

/// `rlhf::cuda::logprobs_from_logits` without a mask.
template <logit_type T>
void logprobs_from_logits(const view<T, 3>& logits, const view<std::int64_t>& tokens,
                          const mut_view<accumulate_t<T>>& logprobs, const mut_view<accumulate_t<T>>& entropy = {},
                          const mut_view<double>& logsumexp = {}, const logits_options& options = {},
                          cudaStream_t stream = nullptr) {
    detail::logits::forward<T, detail::logits::no_mask>("rlhf::cuda::logprobs_from_logits", logits, &tokens, nullptr,
                                                        logprobs, entropy, logsumexp, options, stream);
}

/// Gradient of `Σ g_lp·logprobs + g_H·entropy` w.r.t. `logits [B, T, V]` into `grad_logits`
/// (dtype `T`; may be `logits` itself): `(g_lp·(onehot(y) − p) − g_H·p·(x − Σp·x)) / τ`, as
/// `rlhf::logprobs_from_logits_backward`. Either upstream gradient may be `{}`. With the forward's
/// `logsumexp` (and `entropy` when `grad_entropy` is given) each row is read once
/// (`p = e^(x − logsumexp)`, `x − Σp·x = x − logsumexp + H`); without, the statistics are
/// recomputed first (two reads). Mask 0: a 0 row. Asynchronous on `stream`.
template <logit_type T, class M>
void logprobs_from_logits_backward(const view<T, 3>& logits, const view<std::int64_t>& tokens, const view<M>& mask,
                                   const view<accumulate_t<T>>& grad_logprobs,
                                   const view<accumulate_t<T>>& grad_entropy, const view<double>& logsumexp,
                                   const view<accumulate_t<T>>& entropy, const mut_view<T, 3>& grad_logits,
                                   const logits_options& options = {}, cudaStream_t stream = nullptr) {
    detail::logits::backward("rlhf::cuda::logprobs_from_logits_backward", logits, &tokens, &mask, grad_logprobs,
                             grad_entropy, logsumexp, entropy, grad_logits, options, stream);
}

/// `rlhf::cuda::logprobs_from_logits_backward` without a mask.
template <logit_type T>
void logprobs_from_logits_backward(const view<T, 3>& logits, const view<std::int64_t>& tokens,
                                   const view<accumulate_t<T>>& grad_logprobs,
                                   const view<accumulate_t<T>>& grad_entropy, const view<double>& logsumexp,
                                   const view<accumulate_t<T>>& entropy, const mut_view<T, 3>& grad_logits,
                                   const logits_options& options = {}, cudaStream_t stream = nullptr) {
    detail::logits::backward<T, detail::logits::no_mask>("rlhf::cuda::logprobs_from_logits_backward", logits, &tokens,
                                                         nullptr, grad_logprobs, grad_entropy, logsumexp, entropy,
                                                         grad_logits, options, stream);
}

/// Entropy `H = logsumexp(x) − Σ softmax(x)·x` (`x = z / τ`) of each position of device
/// `logits [B, T, V]` into `entropy [B, T]`, `logsumexp` optional; as `rlhf::entropy_from_logits`.
template <logit_type T, class M>
void entropy_from_logits(const view<T, 3>& logits, const view<M>& mask, const mut_view<accumulate_t<T>>& entropy,
                         const mut_view<double>& logsumexp = {}, const logits_options& options = {},
                         cudaStream_t stream = nullptr) {
    detail::logits::forward("rlhf::cuda::entropy_from_logits", logits, nullptr, &mask, mut_view<accumulate_t<T>>{},
                            entropy, logsumexp, options, stream);
}

/// `rlhf::cuda::entropy_from_logits` without a mask.
template <logit_type T>
void entropy_from_logits(const view<T, 3>& logits, const mut_view<accumulate_t<T>>& entropy,
                         const mut_view<double>& logsumexp = {}, const logits_options& options = {},
                         cudaStream_t stream = nullptr) {
    detail::logits::forward<T, detail::logits::no_mask>("rlhf::cuda::entropy_from_logits", logits, nullptr, nullptr,
                                                        mut_view<accumulate_t<T>>{}, entropy, logsumexp, options,
                                                        stream);
}

/// Gradient of `Σ g_H·entropy` w.r.t. `logits`: `−p·(x − Σp·x)/τ` into `grad_logits [B, T, V]`;
/// saved `logsumexp` and `entropy` optional, as in `rlhf::cuda::logprobs_from_logits_backward`.
/// As `rlhf::entropy_from_logits_backward`.
template <logit_type T, class M>
void entropy_from_logits_backward(const view<T, 3>& logits, const view<M>& mask,
                                  const view<accumulate_t<T>>& grad_entropy, const view<double>& logsumexp,
                                  const view<accumulate_t<T>>& entropy, const mut_view<T, 3>& grad_logits,
                                  const logits_options& options = {}, cudaStream_t stream = nullptr) {
    detail::logits::backward("rlhf::cuda::entropy_from_logits_backward", logits, nullptr, &mask,
                             view<accumulate_t<T>>{}, grad_entropy, logsumexp, entropy, grad_logits, options, stream);
}

/// `rlhf::cuda::entropy_from_logits_backward` without a mask.
template <logit_type T>
void entropy_from_logits_backward(const view<T, 3>& logits, const view<accumulate_t<T>>& grad_entropy,
                                  const view<double>& logsumexp, const view<accumulate_t<T>>& entropy,
                                  const mut_view<T, 3>& grad_logits, const logits_options& options = {},
                                  cudaStream_t stream = nullptr) {
    detail::logits::backward<T, detail::logits::no_mask>("rlhf::cuda::entropy_from_logits_backward", logits, nullptr,
                                                         nullptr, view<accumulate_t<T>>{}, grad_entropy, logsumexp,
                                                         entropy, grad_logits, options, stream);
}

/// Full-vocabulary `KL(p‖q) = Σ p·(log p − log q)` per position, `p = softmax(policy_logits / τ)`,
/// `q = softmax(reference_logits / τ)` (device, `[B, T, V]`), into `kl [B, T]`, one fused pass
/// over both rows; as `rlhf::full_kl_from_logits`. Mask 0: 0, not read. Where the reference is
/// -inf and the policy is not, KL is +inf (the CPU kernel throws). Asynchronous on `stream`.
template <logit_type T, class M>
void full_kl_from_logits(const view<T, 3>& policy_logits, const view<T, 3>& reference_logits, const view<M>& mask,
                         const mut_view<accumulate_t<T>>& kl, const logits_options& options = {},
                         cudaStream_t stream = nullptr) {
    detail::logits::full_kl("rlhf::cuda::full_kl_from_logits", policy_logits, reference_logits, &mask, kl, options,
                            stream);
}

/// `rlhf::cuda::full_kl_from_logits` without a mask.
template <logit_type T>
void full_kl_from_logits(const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
                         const mut_view<accumulate_t<T>>& kl, const logits_options& options = {},
                         cudaStream_t stream = nullptr) {
    detail::logits::full_kl<T, detail::logits::no_mask>("rlhf::cuda::full_kl_from_logits", policy_logits,
                                                        reference_logits, nullptr, kl, options, stream);
}

/// Gradient of `Σ g·KL` w.r.t. the policy logits, `p_j·(log p_j − log q_j − KL)·g/τ`, into
/// `grad_policy_logits [B, T, V]` (dtype `T`; may be `policy_logits` itself); two reads of each
/// row pair (statistics, then the gradient). As `rlhf::full_kl_from_logits_backward`. Mask 0: a
/// 0 row. Asynchronous on `stream`.
template <logit_type T, class M>
void full_kl_from_logits_backward(const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
                                  const view<M>& mask, const view<accumulate_t<T>>& grad_kl,
                                  const mut_view<T, 3>& grad_policy_logits, const logits_options& options = {},
                                  cudaStream_t stream = nullptr) {
    detail::logits::full_kl_backward("rlhf::cuda::full_kl_from_logits_backward", policy_logits, reference_logits, &mask,
                                     grad_kl, grad_policy_logits, options, stream);
}

/// `rlhf::cuda::full_kl_from_logits_backward` without a mask.
template <logit_type T>
void full_kl_from_logits_backward(const view<T, 3>& policy_logits, const view<T, 3>& reference_logits,
                                  const view<accumulate_t<T>>& grad_kl, const mut_view<T, 3>& grad_policy_logits,
                                  const logits_options& options = {}, cudaStream_t stream = nullptr) {
    detail::logits::full_kl_backward<T, detail::logits::no_mask>("rlhf::cuda::full_kl_from_logits_backward",
                                                                 policy_logits, reference_logits, nullptr, grad_kl,
                                                                 grad_policy_logits, options, stream);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda
