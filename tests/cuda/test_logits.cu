// rlhf/cuda/logits.cuh against the CPU kernels of rlhf/kernels/logits.hpp on host copies of the
// same data (16-bit logits: the CPU float kernel on the same values converted to float).
//
// Every output is poisoned before each call (NaN / -1 bytes), outputs and logits live in padded
// buffers (row strides wider than the rows, so rows start at every offset from a 16-byte
// boundary), and the padding must still hold the poison afterwards.
//
// Tolerances, |gpu − cpu| ≤ rtol·|cpu| + atol:
// - double logits (double accumulation on both sides): rtol 1e-11, atol 1e-12. The two differ in
//   the exponential (CPU vexp ≤ 2 ulp, CUDA exp ≤ 1 ulp) and the order of ≤ 50257 additions.
// - float, half, bf16 logits (float accumulation on the GPU, double on the CPU): rtol 1e-4,
//   atol 1e-5. A GPU thread adds ≤ 197 terms of a 50257 row and the block adds 256 partials, so
//   Σ e^d is within about 200·2⁻²⁴ ≈ 1.2e-5 relative (worst case, typically 1e-6), which is the
//   absolute error of log Σ; `d = (z − max)/τ` is within a rounding of d. log-prob and entropy
//   are sums of two terms of one sign (no cancellation), so the relative error stays of that size.
// - gradients: the same rtol, plus the rounding to the gradient's type (half 2⁻¹⁰, bf16 2⁻⁷
//   relative: one unit in the last place, since both sides round slightly different values; half
//   also 2⁻²⁴ absolute, its subnormal spacing), and atol = c·(|g_lp| + |g_H|·(1 + H))/τ with c
//   = 1e-5 (float) or 1e-12 (double): the bracket g_lp + g_H·(d − centre) cancels, its terms are
//   bounded by that since p·|d| ≤ 1/e.
// A lost vocabulary entry changes Σ by about 1/V; the "single spike" cases make each entry near a
// vector boundary decisive, so a skipped or doubled element fails by O(1).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/cuda_test_support.cuh"
#include "rlhf/cuda/logits.cuh"
#include "rlhf/kernels/logits.hpp"

namespace {

using rlhf::index_t;
using rlhf_test::device_array;

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan_value = std::numeric_limits<double>::quiet_NaN();

template <class T>
using acc_t = rlhf::cuda::accumulate_t<T>;

template <class T>
double to_double(T v) {
    if constexpr (std::is_same_v<T, __half>)
        return static_cast<double>(__half2float(v));
    else if constexpr (std::is_same_v<T, __nv_bfloat16>)
        return static_cast<double>(__bfloat162float(v));
    else
        return static_cast<double>(v);
}

template <class T>
T from_double(double v) {
    if constexpr (std::is_same_v<T, __half>)
        return __float2half_rn(static_cast<float>(v));
    else if constexpr (std::is_same_v<T, __nv_bfloat16>)
        return __float2bfloat16_rn(static_cast<float>(v));
    else
        return static_cast<T>(v);
}

/// A poisoned byte pattern (the device_array's poison) in a host value.
template <class T>
bool is_poison(const T& v) {
    unsigned char bytes[sizeof(T)];
    std::memcpy(bytes, &v, sizeof(T));
    for (unsigned char c : bytes)
        if (c != 0xFF) return false;
    return true;
}

/// A host array (std::vector<bool> has no data()).
template <class T>
class host_buffer {
public:
    host_buffer(std::size_t n, T fill) : data_(new T[n]), size_(n) {
        for (std::size_t i = 0; i < n; ++i) data_[i] = fill;
    }
    [[nodiscard]] T* data() const noexcept { return data_.get(); }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    T& operator[](std::size_t i) const noexcept { return data_[i]; }

private:
    std::unique_ptr<T[]> data_;
    std::size_t size_;
};

/// Copies a host buffer of the same size to the device.
template <class T>
void upload(device_array<T>& out, const host_buffer<T>& host) {
    REQUIRE(out.size() == host.size());
    rlhf_test::cuda_ok(cudaMemcpy(out.data(), host.data(), out.bytes(), cudaMemcpyHostToDevice));
}

struct tolerance {
    double rtol, atol;
};

template <class T>
tolerance output_tolerance() {
    return std::is_same_v<T, double> ? tolerance{1e-11, 1e-12} : tolerance{1e-4, 1e-5};
}

/// Relative rounding of the gradient type (one unit in the last place) and its absolute floor.
template <class T>
tolerance storage_tolerance() {
    if constexpr (std::is_same_v<T, __half>) return {0x1p-10, 0x1p-24};
    if constexpr (std::is_same_v<T, __nv_bfloat16>) return {0x1p-7, 0.0};
    return {0.0, 0.0};
}

bool close(double got, double want, double rtol, double atol) {
    if (std::isinf(want) || std::isinf(got)) return got == want;
    return std::fabs(got - want) <= rtol * std::fabs(want) + atol;  // false for NaN
}

/// Counts mismatches and reports the first few (one CHECK per comparison would flood the log).
struct mismatches {
    int count = 0;
    void add(const std::string& what) {
        if (count++ < 8) MESSAGE(what);
    }
};

/// What the rows of a case hold.
enum class content { normal, large, very_negative, spikes };

struct shape {
    index_t b, t, v;
    index_t pad_v = 0;  // extra elements between rows (misaligns every row)
    double tau = 1.0;
    content kind = content::normal;
    double neg_inf_fraction = 0.0;  // vocabulary entries set to -inf (never the token's)
    bool mask_rows = true;          // mask some positions, and the whole of row b = 0 when b > 1
};

/// A case's shape for the INFO of its checks.
std::ostream& operator<<(std::ostream& os, const shape& s) {
    return os << "V = " << s.v << ", B = " << s.b << ", T = " << s.t << ", tau = " << s.tau << ", pad = " << s.pad_v
              << ", kind = " << static_cast<int>(s.kind);
}

/// Host data of a case: logits `[B, T, V]` (row stride V + pad_v, batch stride with 5 more),
/// tokens `[B, T]` (stride T + 2), mask `[B, T]` (stride T + 1). Masked positions hold NaN logits
/// and token -100.
template <class T, class M>
struct case_data {
    shape s;
    index_t s1, s0;
    std::vector<T> logits;
    std::vector<double> exact;  // the logits as double (the values of `logits`)
    std::vector<std::int64_t> tokens;
    host_buffer<M> mask{1, M{1}};
    std::vector<bool> valid;  // [B·T] contiguous

    index_t at(index_t b, index_t t, index_t j) const { return b * s0 + t * s1 + j; }
    index_t tok(index_t b, index_t t) const { return b * (s.t + 2) + t; }
    index_t msk(index_t b, index_t t) const { return b * (s.t + 1) + t; }

    rlhf::view<T, 3> logits_view(const T* data) const { return {data, {s.b, s.t, s.v}, {s0, s1, 1}}; }
    rlhf::view<std::int64_t> tokens_view(const std::int64_t* data) const { return {data, {s.b, s.t}, {s.t + 2, 1}}; }
    rlhf::view<M> mask_view(const M* data) const { return {data, {s.b, s.t}, {s.t + 1, 1}}; }
};

template <class T, class M>
case_data<T, M> make_case(const shape& s, std::mt19937& gen) {
    case_data<T, M> c;
    c.s = s;
    c.s1 = s.v + s.pad_v;
    c.s0 = s.t * c.s1 + 5;
    const auto total = static_cast<std::size_t>(s.b * c.s0);
    c.exact.assign(total, nan_value);  // padding: NaN, never to be read
    c.tokens.assign(static_cast<std::size_t>(s.b * (s.t + 2)), -7);
    c.mask = host_buffer<M>(static_cast<std::size_t>(s.b * (s.t + 1)), M{1});
    c.valid.assign(static_cast<std::size_t>(s.b * s.t), true);
    std::normal_distribution<double> normal(0.0, 3.0);
    std::uniform_real_distribution<double> uniform(-1e4, 1e4), unit(0.0, 1.0);
    std::uniform_int_distribution<index_t> pick(0, s.v - 1);
    index_t row = 0;
    for (index_t b = 0; b < s.b; ++b) {
        for (index_t t = 0; t < s.t; ++t, ++row) {
            const bool masked = s.mask_rows && ((s.b > 1 && b == 0) || unit(gen) < 0.25);
            if (masked) {
                c.valid[static_cast<std::size_t>(b * s.t + t)] = false;
                c.mask[static_cast<std::size_t>(c.msk(b, t))] = M{0};
                c.tokens[static_cast<std::size_t>(c.tok(b, t))] = -100;
                continue;  // logits stay NaN
            }
            // A spike row puts the token at a position near the start, a vector boundary or the end.
            index_t spike = 0;
            if (s.kind == content::spikes) {
                const index_t near_end = s.v - 1 - (row % 17);
                spike = row % 2 == 0 ? (row / 2) % 17 : near_end;
                spike = spike < 0 ? 0 : (spike >= s.v ? s.v - 1 : spike);
            }
            const index_t y = s.kind == content::spikes ? spike : pick(gen);
            c.tokens[static_cast<std::size_t>(c.tok(b, t))] = y;
            for (index_t j = 0; j < s.v; ++j) {
                double z = 0.0;
                switch (s.kind) {
                    case content::normal:
                        z = normal(gen);
                        break;
                    case content::large:
                        z = uniform(gen);
                        break;
                    case content::very_negative:
                        z = -3e4 + normal(gen);
                        break;
                    case content::spikes:
                        z = j == spike ? 12.0 : normal(gen) * 0.1;
                        break;
                }
                if (j != y && unit(gen) < s.neg_inf_fraction) z = -inf;
                c.exact[static_cast<std::size_t>(c.at(b, t, j))] = z;
            }
        }
    }
    c.logits.resize(total);
    for (std::size_t i = 0; i < total; ++i) {
        c.logits[i] = from_double<T>(c.exact[i]);
        c.exact[i] = to_double(c.logits[i]);  // what the kernels see
    }
    return c;
}

/// The CPU reference's copy of the logits: double for double, float otherwise.
template <class T>
std::vector<acc_t<T>> reference_logits(const std::vector<double>& exact) {
    std::vector<acc_t<T>> out(exact.size());
    for (std::size_t i = 0; i < exact.size(); ++i) out[i] = static_cast<acc_t<T>>(exact[i]);
    return out;
}

/// `[B, T]` output buffers of stride T + 3 (3 poisoned pad entries per row).
template <class E>
rlhf::mut_view<E> bt_view(E* data, index_t b, index_t t) {
    return {data, {b, t}, {t + 3, 1}};
}
template <class E>
rlhf::view<E> bt_cview(const E* data, index_t b, index_t t) {
    return {data, {b, t}, {t + 3, 1}};
}

template <class E>
void check_padding(const std::vector<E>& got, index_t rows, index_t cols, index_t stride, index_t row_pad,
                   mismatches& bad, const char* what) {
    for (index_t i = 0; i < static_cast<index_t>(got.size()); ++i) {
        const index_t in_row = i % stride;
        const bool inside = i / stride < rows && in_row < cols;
        (void)row_pad;
        if (!inside && !is_poison(got[static_cast<std::size_t>(i)]))
            bad.add(std::string(what) + ": padding written at " + std::to_string(i));
    }
}

enum class masking { none, mask };

/// `make_case` of shape `s`, without masked positions under `masking::none`.
template <class T, class M>
case_data<T, M> make_case(shape s, masking use_mask, std::mt19937& gen) {
    if (use_mask == masking::none) s.mask_rows = false;
    return make_case<T, M>(s, gen);
}

/// Forward: log-probs (or entropy only), entropy, logsumexp against the CPU kernel.
template <class T, class M>
void check_forward(const shape& s, masking use_mask, bool with_tokens, unsigned seed) {
    using A = acc_t<T>;
    INFO(s << ", tokens = " << with_tokens);
    std::mt19937 gen(seed);
    const auto c = make_case<T, M>(s, use_mask, gen);
    device_array<T> d_logits(c.logits);
    device_array<std::int64_t> d_tokens(c.tokens);
    device_array<M> d_mask(c.mask.size());
    upload(d_mask, c.mask);
    const index_t out_size = s.b * (s.t + 3);
    device_array<A> d_lp(static_cast<std::size_t>(out_size)), d_h(static_cast<std::size_t>(out_size));
    device_array<double> d_lse(static_cast<std::size_t>(out_size));
    d_lp.poison();
    d_h.poison();
    d_lse.poison();
    const rlhf::logits_options options{.temperature = s.tau};
    const auto logits = c.logits_view(d_logits.data());
    const auto lp = bt_view(d_lp.data(), s.b, s.t);
    const auto h = bt_view(d_h.data(), s.b, s.t);
    const auto lse = bt_view(d_lse.data(), s.b, s.t);
    if (with_tokens) {
        if (use_mask == masking::mask)
            rlhf::cuda::logprobs_from_logits(logits, c.tokens_view(d_tokens.data()), c.mask_view(d_mask.data()), lp, h,
                                             lse, options, nullptr);
        else
            rlhf::cuda::logprobs_from_logits(logits, c.tokens_view(d_tokens.data()), lp, h, lse, options, nullptr);
    } else {
        if (use_mask == masking::mask)
            rlhf::cuda::entropy_from_logits(logits, c.mask_view(d_mask.data()), h, lse, options, nullptr);
        else
            rlhf::cuda::entropy_from_logits(logits, h, lse, options, nullptr);
    }
    const auto got_lp = d_lp.download(), got_h = d_h.download();
    const auto got_lse = d_lse.download();

    // CPU reference on the same layout.
    const auto ref_z = reference_logits<T>(c.exact);
    const rlhf::view<A, 3> ref_logits(ref_z.data(), {s.b, s.t, s.v}, {c.s0, c.s1, 1});
    std::vector<A> ref_lp(static_cast<std::size_t>(out_size)), ref_h(static_cast<std::size_t>(out_size));
    std::vector<double> ref_lse(static_cast<std::size_t>(out_size));
    const auto mask_view = c.mask_view(c.mask.data());
    if (with_tokens)
        rlhf::logprobs_from_logits(ref_logits, c.tokens_view(c.tokens.data()), mask_view,
                                   bt_view(ref_lp.data(), s.b, s.t), bt_view(ref_h.data(), s.b, s.t),
                                   bt_view(ref_lse.data(), s.b, s.t), options);
    else
        rlhf::entropy_from_logits(ref_logits, mask_view, bt_view(ref_h.data(), s.b, s.t),
                                  bt_view(ref_lse.data(), s.b, s.t), options);

    const tolerance tol = output_tolerance<T>();
    mismatches bad;
    for (index_t b = 0; b < s.b; ++b) {
        for (index_t t = 0; t < s.t; ++t) {
            const auto i = static_cast<std::size_t>(b * (s.t + 3) + t);
            const bool valid = c.valid[static_cast<std::size_t>(b * s.t + t)];
            const std::string at = " at (" + std::to_string(b) + ", " + std::to_string(t) + ")";
            if (!valid) {
                if (with_tokens && got_lp[i] != A{0}) bad.add("logprob not 0 at a masked position" + at);
                if (got_h[i] != A{0}) bad.add("entropy not 0 at a masked position" + at);
                if (got_lse[i] != 0.0) bad.add("logsumexp not 0 at a masked position" + at);
                continue;
            }
            if (with_tokens && !close(got_lp[i], ref_lp[i], tol.rtol, tol.atol))
                bad.add("logprob " + std::to_string(got_lp[i]) + " vs " + std::to_string(ref_lp[i]) + at);
            if (!close(got_h[i], ref_h[i], tol.rtol, tol.atol))
                bad.add("entropy " + std::to_string(got_h[i]) + " vs " + std::to_string(ref_h[i]) + at);
            if (!close(got_lse[i], ref_lse[i], tol.rtol, tol.atol))
                bad.add("logsumexp " + std::to_string(got_lse[i]) + " vs " + std::to_string(ref_lse[i]) + at);
        }
    }
    if (with_tokens) check_padding(got_lp, s.b, s.t, s.t + 3, 3, bad, "logprobs");
    if (!with_tokens)
        for (const A v : got_lp)
            if (!is_poison(v)) bad.add("entropy_from_logits wrote log-probs");
    check_padding(got_h, s.b, s.t, s.t + 3, 3, bad, "entropy");
    check_padding(got_lse, s.b, s.t, s.t + 3, 3, bad, "logsumexp");
    CHECK(bad.count == 0);
}

enum class saved_stats { none, logsumexp_only, both };

/// Backward (token log-probs and/or entropy, or entropy only) against the CPU kernel.
template <class T, class M>
void check_backward(const shape& s, masking use_mask, bool with_tokens, bool with_glp, bool with_gh, saved_stats saved,
                    unsigned seed, bool in_place = false) {
    using A = acc_t<T>;
    INFO(s << ", tokens = " << with_tokens << ", g_lp = " << with_glp << ", g_H = " << with_gh
           << ", saved = " << static_cast<int>(saved) << ", in place = " << in_place);
    std::mt19937 gen(seed);
    const auto c = make_case<T, M>(s, use_mask, gen);
    const index_t bt = s.b * s.t;
    std::vector<A> g_lp(static_cast<std::size_t>(bt)), g_h(static_cast<std::size_t>(bt));
    std::normal_distribution<double> normal(0.0, 1.0);
    for (auto& g : g_lp) g = static_cast<A>(normal(gen));
    for (auto& g : g_h) g = static_cast<A>(normal(gen));
    device_array<T> d_logits(c.logits);
    device_array<std::int64_t> d_tokens(c.tokens);
    device_array<M> d_mask(c.mask.size());
    upload(d_mask, c.mask);
    device_array<A> d_glp(g_lp), d_gh(g_h);
    const index_t out_size = s.b * (s.t + 3);
    device_array<A> d_lp(static_cast<std::size_t>(out_size)), d_h(static_cast<std::size_t>(out_size));
    device_array<double> d_lse(static_cast<std::size_t>(out_size));
    device_array<T> d_grad(c.logits.size());
    d_grad.poison();
    d_lp.poison();
    d_h.poison();
    d_lse.poison();
    const rlhf::logits_options options{.temperature = s.tau};
    const auto logits = c.logits_view(d_logits.data());
    const auto tokens = c.tokens_view(d_tokens.data());
    const auto mask = c.mask_view(d_mask.data());
    T* grad_data = in_place ? d_logits.data() : d_grad.data();
    const rlhf::mut_view<T, 3> grad(grad_data, {s.b, s.t, s.v}, {c.s0, c.s1, 1});
    const rlhf::view<A> glp = with_glp ? rlhf::make_view(d_glp.data(), s.b, s.t) : rlhf::view<A>{};
    const rlhf::view<A> gh = with_gh ? rlhf::make_view(d_gh.data(), s.b, s.t) : rlhf::view<A>{};
    // The forward's statistics from the CUDA forward (what a training step would keep).
    if (saved != saved_stats::none) {
        const auto h_out = saved == saved_stats::both ? bt_view(d_h.data(), s.b, s.t) : rlhf::mut_view<A>{};
        if (use_mask == masking::mask)
            rlhf::cuda::entropy_from_logits(logits, mask, h_out, bt_view(d_lse.data(), s.b, s.t), options, nullptr);
        else
            rlhf::cuda::entropy_from_logits(logits, h_out, bt_view(d_lse.data(), s.b, s.t), options, nullptr);
    }
    const rlhf::view<double> lse = saved != saved_stats::none ? bt_cview(d_lse.data(), s.b, s.t) : rlhf::view<double>{};
    const rlhf::view<A> h = saved == saved_stats::both ? bt_cview(d_h.data(), s.b, s.t) : rlhf::view<A>{};
    if (with_tokens) {
        if (use_mask == masking::mask)
            rlhf::cuda::logprobs_from_logits_backward(logits, tokens, mask, glp, gh, lse, h, grad, options, nullptr);
        else
            rlhf::cuda::logprobs_from_logits_backward(logits, tokens, glp, gh, lse, h, grad, options, nullptr);
    } else {
        if (use_mask == masking::mask)
            rlhf::cuda::entropy_from_logits_backward(logits, mask, gh, lse, h, grad, options, nullptr);
        else
            rlhf::cuda::entropy_from_logits_backward(logits, gh, lse, h, grad, options, nullptr);
    }
    const auto got = in_place ? d_logits.download() : d_grad.download();

    // CPU reference (statistics recomputed by the CPU kernel).
    const auto ref_z = reference_logits<T>(c.exact);
    const rlhf::view<A, 3> ref_logits(ref_z.data(), {s.b, s.t, s.v}, {c.s0, c.s1, 1});
    std::vector<A> ref_grad(ref_z.size(), A{0});
    const rlhf::mut_view<A, 3> ref_grad_view(ref_grad.data(), {s.b, s.t, s.v}, {c.s0, c.s1, 1});
    const rlhf::view<A> ref_glp = with_glp ? rlhf::make_view(g_lp.data(), s.b, s.t) : rlhf::view<A>{};
    const rlhf::view<A> ref_gh = with_gh ? rlhf::make_view(g_h.data(), s.b, s.t) : rlhf::view<A>{};
    const auto mask_view = c.mask_view(c.mask.data());
    if (with_tokens)
        rlhf::logprobs_from_logits_backward(ref_logits, c.tokens_view(c.tokens.data()), mask_view, ref_glp, ref_gh,
                                            rlhf::view<double>{}, rlhf::view<A>{}, ref_grad_view, options);
    else
        rlhf::entropy_from_logits_backward(ref_logits, mask_view, ref_gh, rlhf::view<double>{}, rlhf::view<A>{},
                                           ref_grad_view, options);
    // Entropies for the tolerance.
    std::vector<A> ref_h(static_cast<std::size_t>(bt));
    rlhf::entropy_from_logits(ref_logits, mask_view, rlhf::make_mut_view(ref_h.data(), s.b, s.t),
                              rlhf::mut_view<double>{}, options);

    const tolerance out_tol = output_tolerance<T>();
    const tolerance store = storage_tolerance<T>();
    const double c_abs = std::is_same_v<T, double> ? 1e-12 : 1e-5;
    mismatches bad;
    for (index_t b = 0; b < s.b; ++b) {
        for (index_t t = 0; t < s.t; ++t) {
            const auto k = static_cast<std::size_t>(b * s.t + t);
            const bool valid = c.valid[k];
            const double glp_v = with_glp && with_tokens ? static_cast<double>(g_lp[k]) : 0.0;
            const double gh_v = with_gh ? static_cast<double>(g_h[k]) : 0.0;
            const double atol =
                c_abs * (std::fabs(glp_v) + std::fabs(gh_v) * (1.0 + static_cast<double>(ref_h[k]))) / s.tau +
                store.atol;
            for (index_t j = 0; j < s.v; ++j) {
                const auto i = static_cast<std::size_t>(c.at(b, t, j));
                const double g = to_double(got[i]);
                const std::string at =
                    " at (" + std::to_string(b) + ", " + std::to_string(t) + ", " + std::to_string(j) + ")";
                if (!valid) {
                    if (g != 0.0) bad.add("gradient not 0 in a masked row" + at);
                    continue;
                }
                const double want = static_cast<double>(ref_grad[i]);
                if (!close(g, want, out_tol.rtol + store.rtol, atol))
                    bad.add("gradient " + std::to_string(g) + " vs " + std::to_string(want) + at);
            }
        }
    }
    if (!in_place) {  // the gaps between rows are not written
        for (std::size_t i = 0; i < got.size(); ++i) {
            const auto r = static_cast<index_t>(i);
            const index_t b = r / c.s0, in_batch = r % c.s0;
            const bool inside = b < s.b && in_batch < s.t * c.s1 && in_batch % c.s1 < s.v;
            if (!inside && !is_poison(got[i])) bad.add("gradient padding written at " + std::to_string(i));
        }
    }
    CHECK(bad.count == 0);
}

/// The vocabulary sizes, paddings and temperatures of the sweep (V not a multiple of any block
/// or vector size; paddings that start rows at every 2-, 4- and 8-byte offset).
std::vector<shape> sweep_shapes() {
    return {
        {2, 3, 1, 1, 1.0},     {3, 5, 7, 0, 1.0},    {2, 4, 33, 3, 0.7},    {4, 3, 1000, 1, 1.0}, {2, 3, 4099, 5, 1.3},
        {2, 2, 50257, 1, 1.0}, {1, 1, 4099, 0, 0.7}, {3, 1, 50257, 2, 1.0}, {1, 2, 1000, 7, 2.5},
    };
}

template <class T, class M>
void forward_sweep(unsigned seed) {
    for (shape s : sweep_shapes()) {
        for (const content kind : {content::normal, content::large, content::very_negative, content::spikes}) {
            s.kind = kind;
            s.neg_inf_fraction = kind == content::normal ? 0.1 : 0.0;
            check_forward<T, M>(s, masking::mask, true, seed++);
        }
        check_forward<T, M>(s, masking::none, true, seed++);
        check_forward<T, M>(s, masking::mask, false, seed++);
        check_forward<T, M>(s, masking::none, false, seed++);
    }
}

template <class T, class M>
void backward_sweep(unsigned seed) {
    for (shape s : sweep_shapes()) {
        s.kind = content::normal;
        s.neg_inf_fraction = 0.1;
        check_backward<T, M>(s, masking::mask, true, true, true, saved_stats::both, seed++);
        check_backward<T, M>(s, masking::mask, true, true, true, saved_stats::none, seed++);
        check_backward<T, M>(s, masking::mask, true, true, true, saved_stats::logsumexp_only, seed++);
        check_backward<T, M>(s, masking::none, true, true, false, saved_stats::both, seed++);
        check_backward<T, M>(s, masking::mask, true, false, true, saved_stats::none, seed++);
        check_backward<T, M>(s, masking::mask, false, false, true, saved_stats::both, seed++);
        check_backward<T, M>(s, masking::none, false, false, true, saved_stats::none, seed++);
        s.neg_inf_fraction = 0.0;
        for (const content kind : {content::large, content::very_negative, content::spikes}) {
            s.kind = kind;
            check_backward<T, M>(s, masking::mask, true, true, true, saved_stats::both, seed++);
            check_backward<T, M>(s, masking::mask, true, true, true, saved_stats::none, seed++);
        }
    }
}

/// Full KL forward and backward against the CPU kernel. The reference logits are the policy's
/// plus noise (or independent for the large and very negative cases); -inf only where the policy
/// is -inf too (else the KL is infinite), and finite at some of the policy's -inf entries.
template <class T, class M>
void check_kl(const shape& s, masking use_mask, unsigned seed, bool in_place = false) {
    using A = acc_t<T>;
    INFO(s << ", in place = " << in_place);
    std::mt19937 gen(seed);
    const auto c = make_case<T, M>(s, use_mask, gen);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uniform(-1e4, 1e4), unit(0.0, 1.0);
    std::vector<double> ref_exact(c.exact.size(), nan_value);
    for (index_t b = 0; b < s.b; ++b)
        for (index_t t = 0; t < s.t; ++t) {
            if (!c.valid[static_cast<std::size_t>(b * s.t + t)]) continue;
            for (index_t j = 0; j < s.v; ++j) {
                const auto i = static_cast<std::size_t>(c.at(b, t, j));
                double q = 0.0;
                switch (s.kind) {
                    case content::large:
                        q = uniform(gen);
                        break;
                    case content::very_negative:
                        q = -3e4 + 3.0 * normal(gen);
                        break;
                    default:
                        q = c.exact[i] + normal(gen);
                        break;
                }
                if (c.exact[i] == -inf) q = unit(gen) < 0.5 ? -inf : normal(gen);
                ref_exact[i] = q;
            }
        }
    std::vector<T> ref_logits_t(ref_exact.size());
    for (std::size_t i = 0; i < ref_exact.size(); ++i) {
        ref_logits_t[i] = from_double<T>(ref_exact[i]);
        ref_exact[i] = to_double(ref_logits_t[i]);
    }
    const index_t bt = s.b * s.t;
    std::vector<A> g_kl(static_cast<std::size_t>(bt));
    for (auto& g : g_kl) g = static_cast<A>(normal(gen));

    device_array<T> d_p(c.logits), d_q(ref_logits_t), d_grad(c.logits.size());
    device_array<M> d_mask(c.mask.size());
    upload(d_mask, c.mask);
    device_array<A> d_kl(static_cast<std::size_t>(s.b * (s.t + 3))), d_g(g_kl);
    d_kl.poison();
    d_grad.poison();
    const rlhf::logits_options options{.temperature = s.tau};
    const auto policy = c.logits_view(d_p.data());
    const auto reference = c.logits_view(d_q.data());
    const auto mask = c.mask_view(d_mask.data());
    const auto kl = bt_view(d_kl.data(), s.b, s.t);
    const auto g = rlhf::make_view(d_g.data(), s.b, s.t);
    T* grad_data = in_place ? d_p.data() : d_grad.data();
    const rlhf::mut_view<T, 3> grad(grad_data, {s.b, s.t, s.v}, {c.s0, c.s1, 1});
    if (use_mask == masking::mask) {
        rlhf::cuda::full_kl_from_logits(policy, reference, mask, kl, options, nullptr);
        rlhf::cuda::full_kl_from_logits_backward(policy, reference, mask, g, grad, options, nullptr);
    } else {
        rlhf::cuda::full_kl_from_logits(policy, reference, kl, options, nullptr);
        rlhf::cuda::full_kl_from_logits_backward(policy, reference, g, grad, options, nullptr);
    }
    const auto got_kl = d_kl.download();
    const auto got = in_place ? d_p.download() : d_grad.download();

    const auto ref_p = reference_logits<T>(c.exact), ref_q = reference_logits<T>(ref_exact);
    const rlhf::view<A, 3> cpu_p(ref_p.data(), {s.b, s.t, s.v}, {c.s0, c.s1, 1});
    const rlhf::view<A, 3> cpu_q(ref_q.data(), {s.b, s.t, s.v}, {c.s0, c.s1, 1});
    const auto mask_view = c.mask_view(c.mask.data());
    std::vector<A> want_kl(static_cast<std::size_t>(s.b * (s.t + 3))), want_grad(ref_p.size(), A{0});
    rlhf::full_kl_from_logits(cpu_p, cpu_q, mask_view, bt_view(want_kl.data(), s.b, s.t), options);
    rlhf::full_kl_from_logits_backward(cpu_p, cpu_q, mask_view, rlhf::make_view(g_kl.data(), s.b, s.t),
                                       rlhf::mut_view<A, 3>(want_grad.data(), {s.b, s.t, s.v}, {c.s0, c.s1, 1}),
                                       options);

    // KL = cross/Σp − log Σp + log Σq cancels: its absolute error is that of terms up to
    // |KL| + 2·log V each (the logs of sums of at most V terms of at most 1).
    const tolerance tol = output_tolerance<T>();
    const tolerance store = storage_tolerance<T>();
    const double log_v = std::log(static_cast<double>(s.v));
    mismatches bad;
    for (index_t b = 0; b < s.b; ++b) {
        for (index_t t = 0; t < s.t; ++t) {
            const auto k = static_cast<std::size_t>(b * (s.t + 3) + t);
            const bool valid = c.valid[static_cast<std::size_t>(b * s.t + t)];
            const std::string at = " at (" + std::to_string(b) + ", " + std::to_string(t) + ")";
            const double want = static_cast<double>(want_kl[k]);
            const double kl_atol = 2.0 * tol.atol * (1.0 + 4.0 * log_v + std::fabs(want));
            if (!valid) {
                if (got_kl[k] != A{0}) bad.add("KL not 0 at a masked position" + at);
            } else if (!close(got_kl[k], want, tol.rtol, kl_atol)) {
                bad.add("KL " + std::to_string(got_kl[k]) + " vs " + std::to_string(want) + at);
            }
            const double gk = std::fabs(static_cast<double>(g_kl[static_cast<std::size_t>(b * s.t + t)]));
            const double atol = gk / s.tau * kl_atol + store.atol;
            for (index_t j = 0; j < s.v; ++j) {
                const auto i = static_cast<std::size_t>(c.at(b, t, j));
                const double gj = to_double(got[i]);
                if (!valid) {
                    if (gj != 0.0) bad.add("KL gradient not 0 in a masked row" + at);
                    continue;
                }
                const double wj = static_cast<double>(want_grad[i]);
                if (!close(gj, wj, tol.rtol + store.rtol, atol))
                    bad.add("KL gradient " + std::to_string(gj) + " vs " + std::to_string(wj) + at + " entry " +
                            std::to_string(j));
            }
        }
    }
    check_padding(got_kl, s.b, s.t, s.t + 3, 3, bad, "kl");
    if (!in_place)
        for (std::size_t i = 0; i < got.size(); ++i) {
            const auto r = static_cast<index_t>(i);
            const index_t in_batch = r % c.s0;
            const bool inside = in_batch < s.t * c.s1 && in_batch % c.s1 < s.v;
            if (!inside && !is_poison(got[i])) bad.add("KL gradient padding written at " + std::to_string(i));
        }
    CHECK(bad.count == 0);
}

template <class T, class M>
void kl_sweep(unsigned seed) {
    for (shape s : sweep_shapes()) {
        for (const content kind : {content::normal, content::large, content::very_negative, content::spikes}) {
            s.kind = kind;
            s.neg_inf_fraction = kind == content::normal ? 0.1 : 0.0;
            check_kl<T, M>(s, masking::mask, seed++);
        }
        s.kind = content::normal;
        check_kl<T, M>(s, masking::none, seed++);
    }
}

/// A device buffer for the error tests (never read: the checks throw first).
template <class T>
struct scratch {
    device_array<T> data{64};
    rlhf::view<T, 3> cube(index_t b, index_t t, index_t v) const { return {data.data(), {b, t, v}}; }
    rlhf::mut_view<T, 3> mut_cube(index_t b, index_t t, index_t v) const { return {data.data(), {b, t, v}}; }
    rlhf::view<T> matrix(index_t b, index_t t) const { return rlhf::make_view(data.data(), b, t); }
    rlhf::mut_view<T> mut_matrix(index_t b, index_t t) const { return rlhf::make_mut_view(data.data(), b, t); }
};

template <class F>
void expect_error(F&& call, rlhf::error_kind kind, const std::string& argument) {
    try {
        call();
    } catch (const rlhf::error& e) {
        CHECK(e.kind() == kind);
        CHECK(e.argument() == argument);
        return;
    }
    FAIL("expected an rlhf::error naming " << argument);
}

}  // namespace

TEST_SUITE("cuda") {
    TEST_CASE("cuda logprobs_from_logits and entropy_from_logits match the CPU kernel: float") {
        forward_sweep<float, bool>(100);
        forward_sweep<float, float>(200);
        check_forward<float, std::uint8_t>({2, 3, 4099, 1, 0.7}, masking::mask, true, 300);
        check_forward<float, std::int32_t>({2, 3, 1000, 3, 1.0}, masking::mask, true, 301);
        check_forward<float, std::int64_t>({2, 3, 33, 0, 1.0}, masking::mask, true, 302);
    }

    TEST_CASE("cuda logprobs_from_logits and entropy_from_logits match the CPU kernel: double") {
        forward_sweep<double, bool>(400);
        check_forward<double, double>({2, 3, 4099, 1, 0.7}, masking::mask, true, 500);
        check_forward<double, std::int64_t>({2, 3, 1000, 3, 1.0}, masking::mask, false, 501);
    }

    TEST_CASE("cuda logprobs_from_logits and entropy_from_logits match the CPU kernel: half") {
        forward_sweep<__half, std::uint8_t>(600);
        check_forward<__half, float>({2, 3, 4099, 1, 0.7}, masking::mask, true, 700);
    }

    TEST_CASE("cuda logprobs_from_logits and entropy_from_logits match the CPU kernel: bfloat16") {
        forward_sweep<__nv_bfloat16, std::int32_t>(800);
        check_forward<__nv_bfloat16, bool>({2, 3, 4099, 1, 0.7}, masking::mask, true, 900);
    }

    TEST_CASE("cuda logprobs_from_logits_backward and entropy_from_logits_backward match the CPU kernel: float") {
        backward_sweep<float, bool>(1000);
        check_backward<float, std::int64_t>({2, 3, 4099, 1, 0.7}, masking::mask, true, true, true, saved_stats::both,
                                            1100);
        check_backward<float, float>({2, 3, 1000, 2, 1.0}, masking::mask, true, true, false, saved_stats::none, 1101);
    }

    TEST_CASE("cuda logprobs_from_logits_backward and entropy_from_logits_backward match the CPU kernel: double") {
        backward_sweep<double, std::uint8_t>(1200);
    }

    TEST_CASE("cuda logprobs_from_logits_backward and entropy_from_logits_backward match the CPU kernel: half") {
        backward_sweep<__half, bool>(1300);
    }

    TEST_CASE("cuda logprobs_from_logits_backward and entropy_from_logits_backward match the CPU kernel: bfloat16") {
        backward_sweep<__nv_bfloat16, float>(1400);
    }

    TEST_CASE("cuda logprobs_from_logits_backward in place overwrites the logits with their gradient") {
        check_backward<float, bool>({2, 3, 4099, 1, 0.7}, masking::mask, true, true, true, saved_stats::both, 1500,
                                    true);
        check_backward<__nv_bfloat16, bool>({2, 2, 1000, 3, 1.0}, masking::mask, true, true, true, saved_stats::both,
                                            1501, true);
    }

    TEST_CASE("cuda logits kernels: every position masked and an empty batch") {
        // Every position masked: only zeros, nothing read (the logits are NaN).
        const index_t b = 2, t = 3, v = 70;
        std::vector<float> z(static_cast<std::size_t>(b * t * v), static_cast<float>(nan_value));
        std::vector<std::int64_t> y(static_cast<std::size_t>(b * t), -100);
        std::vector<std::uint8_t> m(static_cast<std::size_t>(b * t), 0);
        device_array<float> d_z(z), d_lp(static_cast<std::size_t>(b * t)), d_h(static_cast<std::size_t>(b * t));
        device_array<std::int64_t> d_y(y);
        device_array<std::uint8_t> d_m(m);
        device_array<double> d_lse(static_cast<std::size_t>(b * t));
        device_array<float> d_grad(z.size());
        d_lp.poison();
        d_h.poison();
        d_lse.poison();
        d_grad.poison();
        const rlhf::view<float, 3> logits(d_z.data(), {b, t, v});
        rlhf::cuda::logprobs_from_logits(logits, rlhf::make_view(d_y.data(), b, t), rlhf::make_view(d_m.data(), b, t),
                                         rlhf::make_mut_view(d_lp.data(), b, t), rlhf::make_mut_view(d_h.data(), b, t),
                                         rlhf::make_mut_view(d_lse.data(), b, t));
        rlhf::cuda::logprobs_from_logits_backward(
            logits, rlhf::make_view(d_y.data(), b, t), rlhf::make_view(d_m.data(), b, t),
            rlhf::make_view(d_lp.data(), b, t), rlhf::make_view(d_h.data(), b, t), rlhf::view<double>{},
            rlhf::view<float>{}, rlhf::mut_view<float, 3>(d_grad.data(), {b, t, v}));
        for (const float x : d_lp.download()) CHECK(x == 0.0f);
        for (const float x : d_h.download()) CHECK(x == 0.0f);
        for (const double x : d_lse.download()) CHECK(x == 0.0);
        for (const float x : d_grad.download()) CHECK(x == 0.0f);

        // B = 0: nothing launched, nothing written, no error.
        d_lp.poison();
        rlhf::cuda::logprobs_from_logits(rlhf::view<float, 3>(d_z.data(), {0, t, v}), rlhf::make_view(d_y.data(), 0, t),
                                         rlhf::make_mut_view(d_lp.data(), 0, t));
        for (const float x : d_lp.download()) CHECK(is_poison(x));
    }

    TEST_CASE("cuda logits kernels: values the CPU kernel rejects give the documented NaN and -inf") {
        // Rows: 0 finite; 1 a NaN logit; 2 all -inf; 3 token out of range; 4 token at a -inf logit;
        // 5 a +inf logit.
        const index_t b = 1, t = 6, v = 37;
        std::vector<float> z(static_cast<std::size_t>(t * v), 0.5f);
        for (index_t j = 0; j < v; ++j) z[static_cast<std::size_t>(j)] = 0.1f * static_cast<float>(j);
        z[static_cast<std::size_t>(1 * v + 20)] = static_cast<float>(nan_value);
        for (index_t j = 0; j < v; ++j) z[static_cast<std::size_t>(2 * v + j)] = static_cast<float>(-inf);
        z[static_cast<std::size_t>(4 * v + 3)] = static_cast<float>(-inf);
        z[static_cast<std::size_t>(5 * v + 30)] = static_cast<float>(inf);
        const std::vector<std::int64_t> y{2, 2, 2, v, 3, 2};
        const std::vector<float> ones(static_cast<std::size_t>(t), 1.0f);
        device_array<float> d_z(z), d_lp(static_cast<std::size_t>(t)), d_h(static_cast<std::size_t>(t)), d_g(ones);
        device_array<double> d_lse(static_cast<std::size_t>(t));
        device_array<std::int64_t> d_y(y);
        device_array<float> d_grad(z.size());
        d_lp.poison();
        d_h.poison();
        d_lse.poison();
        d_grad.poison();
        const rlhf::view<float, 3> logits(d_z.data(), {b, t, v});
        const auto tokens = rlhf::make_view(d_y.data(), b, t);
        rlhf::cuda::logprobs_from_logits(logits, tokens, rlhf::make_mut_view(d_lp.data(), b, t),
                                         rlhf::make_mut_view(d_h.data(), b, t),
                                         rlhf::make_mut_view(d_lse.data(), b, t));
        const auto lp = d_lp.download(), h = d_h.download();
        const auto lse = d_lse.download();
        CHECK(std::isfinite(lp[0]));
        CHECK(std::isfinite(h[0]));
        for (const std::size_t r : {1u, 2u, 5u}) {
            CHECK(std::isnan(lp[r]));
            CHECK(std::isnan(h[r]));
            CHECK(std::isnan(lse[r]));
        }
        CHECK(std::isnan(lp[3]));
        CHECK(std::isfinite(h[3]));
        CHECK(lp[4] == -std::numeric_limits<float>::infinity());
        CHECK(std::isfinite(h[4]));

        rlhf::cuda::logprobs_from_logits_backward(
            logits, tokens, rlhf::make_view(d_g.data(), b, t), rlhf::make_view(d_g.data(), b, t), rlhf::view<double>{},
            rlhf::view<float>{}, rlhf::mut_view<float, 3>(d_grad.data(), {b, t, v}));
        const auto grad = d_grad.download();
        const auto g = [&](index_t row, index_t j) { return grad[static_cast<std::size_t>(row * v + j)]; };
        for (index_t j = 0; j < v; ++j) {
            CHECK(std::isfinite(g(0, j)));
            CHECK(std::isnan(g(2, j)));  // no distribution
            CHECK(std::isnan(g(3, j)));  // token out of range
            CHECK(std::isfinite(g(4, j)));
        }
        CHECK(std::isnan(g(1, 20)));             // the NaN entry (its row's statistics are NaN too: all NaN)
        CHECK(g(4, 3) == doctest::Approx(1.0));  // the -inf token: g_lp·onehot, p = 0
    }

    TEST_CASE("cuda logits kernels: shape and option errors name the argument before any launch") {
        using kind = rlhf::error_kind;
        scratch<float> f;
        scratch<std::int64_t> y;
        scratch<bool> m;
        scratch<double> d;
        const auto logits = f.cube(2, 3, 5);
        const auto tokens = y.matrix(2, 3);
        const auto out = f.mut_matrix(2, 3);
        expect_error([&] { rlhf::cuda::logprobs_from_logits(logits, y.matrix(3, 2), out); }, kind::shape, "tokens");
        expect_error([&] { rlhf::cuda::logprobs_from_logits(logits, tokens, m.matrix(2, 2), out); }, kind::shape,
                     "mask");
        expect_error([&] { rlhf::cuda::logprobs_from_logits(logits, tokens, f.mut_matrix(2, 4)); }, kind::shape,
                     "logprobs");
        expect_error([&] { rlhf::cuda::logprobs_from_logits(logits, tokens, out, f.mut_matrix(1, 3)); }, kind::shape,
                     "entropy");
        expect_error([&] { rlhf::cuda::logprobs_from_logits(logits, tokens, out, {}, d.mut_matrix(2, 1)); },
                     kind::shape, "logsumexp");
        for (const double tau : {0.0, -1.0, inf, nan_value})
            expect_error([&] { rlhf::cuda::logprobs_from_logits(logits, tokens, out, {}, {}, {.temperature = tau}); },
                         kind::config, "temperature");
        expect_error([&] { rlhf::cuda::entropy_from_logits(f.cube(2, 3, 0), out); }, kind::shape, "logits");
        expect_error([&] { rlhf::cuda::entropy_from_logits(logits, f.mut_matrix(3, 3)); }, kind::shape, "entropy");

        scratch<float> g;
        const auto grad = g.mut_cube(2, 3, 5);
        const auto gm = f.matrix(2, 3);
        expect_error(
            [&] { rlhf::cuda::logprobs_from_logits_backward(logits, tokens, gm, gm, {}, {}, g.mut_cube(2, 3, 4)); },
            kind::shape, "grad_logits");
        expect_error(
            [&] { rlhf::cuda::logprobs_from_logits_backward(logits, tokens, f.matrix(2, 2), gm, {}, {}, grad); },
            kind::shape, "grad_logprobs");
        expect_error(
            [&] { rlhf::cuda::logprobs_from_logits_backward(logits, tokens, gm, f.matrix(3, 3), {}, {}, grad); },
            kind::shape, "grad_entropy");
        expect_error(
            [&] { rlhf::cuda::logprobs_from_logits_backward(logits, tokens, gm, gm, d.matrix(2, 2), {}, grad); },
            kind::shape, "logsumexp");
        expect_error(
            [&] {
                rlhf::cuda::logprobs_from_logits_backward(logits, tokens, gm, gm, d.matrix(2, 3), f.matrix(1, 1), grad);
            },
            kind::shape, "entropy");
        expect_error(
            [&] {
                rlhf::cuda::logprobs_from_logits_backward(logits, tokens, gm, gm, {}, {}, grad, {.temperature = 0.0});
            },
            kind::config, "temperature");
        // grad_logits overlapping the logits other than exactly (in place is allowed).
        const rlhf::mut_view<float, 3> shifted(f.data.data() + 1, {2, 3, 5});
        expect_error([&] { rlhf::cuda::logprobs_from_logits_backward(logits, tokens, gm, gm, {}, {}, shifted); },
                     kind::value, "grad_logits");
        expect_error([&] { rlhf::cuda::entropy_from_logits_backward(logits, gm, {}, {}, g.mut_cube(2, 2, 5)); },
                     kind::shape, "grad_logits");
    }
    TEST_CASE("cuda full_kl_from_logits and its backward match the CPU kernel: float and double") {
        kl_sweep<float, bool>(2000);
        kl_sweep<double, std::int64_t>(2100);
        check_kl<float, float>({2, 3, 4099, 1, 0.7}, masking::mask, 2200, true);
    }

    TEST_CASE("cuda full_kl_from_logits and its backward match the CPU kernel: half and bfloat16") {
        kl_sweep<__half, std::uint8_t>(2300);
        kl_sweep<__nv_bfloat16, std::int32_t>(2400);
        check_kl<__nv_bfloat16, bool>({2, 2, 1000, 3, 1.0}, masking::mask, 2500, true);
    }

    TEST_CASE("cuda full_kl_from_logits: a -inf reference logit under policy mass gives +inf and a NaN gives NaN") {
        const index_t t = 3, v = 19;
        std::vector<float> zp(static_cast<std::size_t>(t * v), 0.25f), zq(static_cast<std::size_t>(t * v), -0.5f);
        zq[static_cast<std::size_t>(0 * v + 4)] = static_cast<float>(-inf);  // row 0: unsupported
        zp[static_cast<std::size_t>(1 * v + 4)] = static_cast<float>(-inf);  // row 1: legal, both -inf
        zq[static_cast<std::size_t>(1 * v + 4)] = static_cast<float>(-inf);
        zq[static_cast<std::size_t>(2 * v + 7)] = static_cast<float>(nan_value);  // row 2: NaN
        device_array<float> d_p(zp), d_q(zq), d_kl(static_cast<std::size_t>(t));
        d_kl.poison();
        rlhf::cuda::full_kl_from_logits(rlhf::view<float, 3>(d_p.data(), {1, t, v}),
                                        rlhf::view<float, 3>(d_q.data(), {1, t, v}),
                                        rlhf::make_mut_view(d_kl.data(), 1, t));
        const auto kl = d_kl.download();
        CHECK(kl[0] == std::numeric_limits<float>::infinity());
        CHECK(kl[1] == doctest::Approx(0.0).scale(1.0).epsilon(1e-6));
        CHECK(std::isnan(kl[2]));
    }

    TEST_CASE("cuda full_kl_from_logits: shape and option errors name the argument before any launch") {
        using kind = rlhf::error_kind;
        scratch<float> f, r, g;
        scratch<bool> m;
        const auto p = f.cube(2, 3, 5);
        const auto q = r.cube(2, 3, 5);
        expect_error([&] { rlhf::cuda::full_kl_from_logits(p, r.cube(2, 3, 4), g.mut_matrix(2, 3)); }, kind::shape,
                     "reference_logits");
        expect_error([&] { rlhf::cuda::full_kl_from_logits(p, q, g.mut_matrix(3, 2)); }, kind::shape, "kl");
        expect_error([&] { rlhf::cuda::full_kl_from_logits(p, q, m.matrix(2, 2), g.mut_matrix(2, 3)); }, kind::shape,
                     "mask");
        expect_error([&] { rlhf::cuda::full_kl_from_logits(p, q, g.mut_matrix(2, 3), {.temperature = -2.0}); },
                     kind::config, "temperature");
        expect_error([&] { rlhf::cuda::full_kl_from_logits(f.cube(2, 3, 0), r.cube(2, 3, 0), g.mut_matrix(2, 3)); },
                     kind::shape, "policy_logits");
        expect_error([&] { rlhf::cuda::full_kl_from_logits_backward(p, q, g.matrix(2, 2), g.mut_cube(2, 3, 5)); },
                     kind::shape, "grad_kl");
        scratch<float> out;
        expect_error([&] { rlhf::cuda::full_kl_from_logits_backward(p, q, g.matrix(2, 3), out.mut_cube(2, 3, 6)); },
                     kind::shape, "grad_policy_logits");
        expect_error([&] { rlhf::cuda::full_kl_from_logits_backward(p, q, g.matrix(2, 3), r.mut_cube(2, 3, 5)); },
                     kind::value, "grad_policy_logits");
    }
}
