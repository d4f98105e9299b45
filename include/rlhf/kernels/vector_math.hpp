#pragma once
/// @file
/// Branch-free `exp` and `expm1` in double that compilers vectorise, selects and lane reductions, for
/// the kernels' inner loops.
///
/// A call to the C library's `exp` keeps a loop scalar (without -ffast-math there is no vector
/// variant); these are plain arithmetic and bit operations on the value, so a loop over them
/// becomes SIMD code (x86-64 with SSE4.1 and up, e.g. -march=x86-64-v2; AArch64). A plain x86-64
/// build (SSE2) uses the C library's scalar functions instead (`RLHF_DETAIL_SCALAR_EXP`).
/// Accuracy: within 2 ulp of the exact result over the whole double range for `vexp` (Cody–Waite reduction by ln 2, a
/// degree-13 Taylor polynomial on |r| ≤ ln2/2, scaling by 2^k in two factors so that subnormal results and overflow are
/// exact), within 5 ulp for `vexpm1`. Special values: `exp(-inf) = 0`, `exp(+inf) = +inf`, NaN propagates; results
/// below the smallest subnormal are 0 and above the largest double +inf, as the C library's.

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "rlhf/version.hpp"

// Plain x86-64 (SSE2 only) cannot vectorise the bit selects below (no 64-bit compares); there the
// C library's exp, a scalar call either way, is the faster one.
#if !defined(RLHF_DETAIL_SCALAR_EXP)
#if defined(__x86_64__) && !defined(__SSE4_1__) && !defined(__AVX__)
#define RLHF_DETAIL_SCALAR_EXP 1
#else
#define RLHF_DETAIL_SCALAR_EXP 0
#endif
#endif

// Forced inlining: a call left in a loop keeps it scalar, and the compiler's size heuristics
// decline some of these (the polynomials are long) once several instantiations call them.
// Under nvcc they are host-device functions too: the CUDA kernels (rlhf/cuda/) call the same
// per-element math, so the CPU tests cover the formulas of both.
#if !defined(RLHF_DETAIL_FORCE_INLINE)
#if defined(__CUDACC__)
#define RLHF_DETAIL_FORCE_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define RLHF_DETAIL_FORCE_INLINE [[gnu::always_inline]] inline
#elif defined(_MSC_VER)
#define RLHF_DETAIL_FORCE_INLINE __forceinline
#else
#define RLHF_DETAIL_FORCE_INLINE inline
#endif
#endif

namespace rlhf::inline RLHF_ABI_NAMESPACE::detail {

/// 2^n for an integer-valued double n in [-1022, 1023].
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double power_of_two(double n) noexcept {
    constexpr double shifter = 0x1.8p52;  // adding it rounds to an integer held in the low bits
    const std::int64_t bits = std::bit_cast<std::int64_t>(n + shifter) - std::bit_cast<std::int64_t>(shifter);
    return std::bit_cast<double>(static_cast<std::uint64_t>(bits + 1023) << 52);
}

/// 2^n for an integer-valued float n in [-126, 127].
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE float power_of_two(float n) noexcept {
    constexpr float shifter = 0x1.8p23f;
    const std::int32_t bits = std::bit_cast<std::int32_t>(n + shifter) - std::bit_cast<std::int32_t>(shifter);
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits + 127) << 23);
}

/// `condition ? a : b` for float or double, as bit operations. A conditional expression whose arm
/// is computed only for it lets the compiler move that arithmetic under a branch, which it then may
/// not speculate (floating-point operations can trap): the loop stays scalar. (Plain x86-64 has no
/// 64-bit compares to build a double's mask from, so there it is the conditional expression.)
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE T bit_select(bool condition, T a, T b) noexcept {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "rlhf::detail::bit_select: float or double");
    using bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
#if RLHF_DETAIL_SCALAR_EXP
    if constexpr (sizeof(T) == 8) return condition ? a : b;
#endif
    const bits mask = bits{0} - static_cast<bits>(condition);
    return std::bit_cast<T>(static_cast<bits>((std::bit_cast<bits>(a) & mask) | (std::bit_cast<bits>(b) & ~mask)));
}

/// `std::min(a, b)` as a `bit_select` (same result, NaN included).
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE T bit_min(T a, T b) noexcept {
    return bit_select(b < a, b, a);
}

/// `std::max(a, b)` as a `bit_select` (same result, NaN included).
template <class T>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE T bit_max(T a, T b) noexcept {
    return bit_select(a < b, b, a);
}

/// Partial sums and maxima of row reductions: independent lanes that the compiler keeps in SIMD
/// registers (one running sum is a dependency chain that cannot be vectorised without reordering,
/// which IEEE arithmetic forbids it to do on its own).
inline constexpr std::size_t lanes = 8;

/// Σ f(v[i]) of `n` values, f taking and giving double, accumulated in `lanes` partial sums (so
/// a kernel can buffer a term in float and form its square or scaled value in double here).
template <class V, class F>
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double lane_sum(const V* v, std::size_t n, F f) noexcept {
    double partial[lanes] = {};
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes)
        for (std::size_t j = 0; j < lanes; ++j) partial[j] += f(static_cast<double>(v[i + j]));
    for (std::size_t j = 0; i < n; ++i, ++j) partial[j] += f(static_cast<double>(v[i]));
    double total = 0.0;
    for (const double x : partial) total += x;
    return total;
}

/// Σ v[i] of `n` values, accumulated in double in `lanes` partial sums.
template <class V>
[[nodiscard]] inline double lane_sum(const V* v, std::size_t n) noexcept {
    return lane_sum(v, n, [](double x) { return x; });
}

/// max(initial, max v[i]) of `n` values (NaN entries are ignored).
template <class V>
[[nodiscard]] inline V lane_max(const V* v, std::size_t n, V initial) noexcept {
    V partial[lanes];
    for (V& x : partial) x = initial;
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes)
        for (std::size_t j = 0; j < lanes; ++j) partial[j] = v[i + j] > partial[j] ? v[i + j] : partial[j];
    for (std::size_t j = 0; i < n; ++i, ++j) partial[j] = v[i] > partial[j] ? v[i] : partial[j];
    V top = initial;
    for (const V x : partial) top = x > top ? x : top;
    return top;
}

/// e^x, within 2 ulp, branch-free (see the file comment).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double vexp(double x) noexcept {
#if RLHF_DETAIL_SCALAR_EXP
    return std::exp(x);
#else
    constexpr double log2e = 0x1.71547652b82fep0;
    constexpr double ln2_hi = 0x1.62e42feep-1;  // 21 trailing zero bits: k·ln2_hi is exact
    constexpr double ln2_lo = 0x1.a39ef35793c76p-33;
    constexpr double shifter = 0x1.8p52;
    constexpr double max_log = 0x1.62e42fefa39efp9;  // ln(DBL_MAX)
    // Clamped to [-746, ln(DBL_MAX)]: below, the result rounds to 0 anyway; above, the select at
    // the end gives +inf. NaN fails every comparison and passes through.
    double xc = bit_select(x < -746.0, -746.0, x);
    xc = bit_select(xc > max_log, max_log, xc);
    const double k = (xc * log2e + shifter) - shifter;
    const double r = (xc - k * ln2_hi) - k * ln2_lo;
    double p = 1.0 / 6227020800.0;  // 1/13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^k = 2^k1 · 2^k2 with both factors normal for every k in [-1077, 1025] (no 64-bit shift
    // right or division: SSE has none).
    const double k1 = (k * 0.5 + shifter) - shifter;
    const double value = p * power_of_two(k1) * power_of_two(k - k1);
    return bit_select(x > max_log, std::numeric_limits<double>::infinity(), value);
#endif
}

/// e^x in float, within 2 ulp, branch-free: the same scheme in single precision (Cody–Waite with
/// Cephes' split of ln 2, a degree-7 Taylor polynomial). Vectorises on every x86-64 (SSE2 has the
/// 32-bit compares its selects need).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE float vexpf(float x) noexcept {
    constexpr float log2e = 0x1.715476p0f;
    constexpr float ln2_hi = 0x1.63p-1f;  // 0.693359375: 9 significant bits, k·ln2_hi is exact
    constexpr float ln2_lo = -0x1.bd0106p-13f;
    constexpr float shifter = 0x1.8p23f;
    constexpr float max_log = 0x1.62e42ep6f;         // ln(FLT_MAX)
    float xc = bit_select(x < -104.0f, -104.0f, x);  // below: 0 anyway
    xc = bit_select(xc > max_log, max_log, xc);
    const float k = (xc * log2e + shifter) - shifter;
    const float r = (xc - k * ln2_hi) - k * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const float k1 = (k * 0.5f + shifter) - shifter;
    const float value = p * power_of_two(k1) * power_of_two(k - k1);
    return bit_select(x > max_log, std::numeric_limits<float>::infinity(), value);
}

/// e^x − 1, within 5 ulp, branch-free: the Taylor series itself for |x| < 0.35 (no cancellation),
/// `vexp(x) − 1` beyond.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double vexpm1(double x) noexcept {
#if RLHF_DETAIL_SCALAR_EXP
    return std::expm1(x);
#else
    double p = 1.0 / 6227020800.0;  // x·(1 + x/2 + … + x^12/13!)
    p = p * x + 1.0 / 479001600.0;
    p = p * x + 1.0 / 39916800.0;
    p = p * x + 1.0 / 3628800.0;
    p = p * x + 1.0 / 362880.0;
    p = p * x + 1.0 / 40320.0;
    p = p * x + 1.0 / 5040.0;
    p = p * x + 1.0 / 720.0;
    p = p * x + 1.0 / 120.0;
    p = p * x + 1.0 / 24.0;
    p = p * x + 1.0 / 6.0;
    p = p * x + 0.5;
    p = p * x + 1.0;
    const double small = p * x;
    const double large = vexp(x) - 1.0;
    return bit_select((x > -0.35) & (x < 0.35), small, large);  // `&`: no branch
#endif
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::detail
