// libFuzzer target: the logits kernels (docs/fuzzing.md): token log-probs and entropy with their
// backward (with the forward's saved statistics and without), the entropy alone, the
// full-vocabulary KL with its backward, and the LM loss with its backward; masked and unmasked
// overloads, temperature, -inf logits (legal), NaN/+inf logits, out-of-range tokens.
//
// Per input: a float32 call on contiguous buffers, one on strided views (padded vocabulary rows
// and time slices: bitwise equal, padding never written), one with another mask element type
// (bitwise equal), and the double reference on the same float-rounded inputs (float32
// tolerance); the backward with saved statistics equals the one that recomputes them.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "rlhf/kernels/logits.hpp"

namespace {

using rlhf::index_t;
using rlhf_fuzz::matrix;
using rlhf_fuzz::require;
using rlhf_fuzz::source;
using rlhf_fuzz::tensor3;

enum op : int { logprobs = 0, entropy = 1, full_kl = 2, lm_loss = 3 };

struct problem {
    int op = logprobs;
    bool masked = true;
    index_t b = 0, t = 0, v = 0;
    std::vector<float> logits, reference;  // [B, T, V]
    std::vector<std::int64_t> tokens;      // [B, T]
    rlhf_fuzz::mask_values mask;
    std::size_t mask_type = 5, other_mask_type = 5;
    bool other_mask_ok = false;
    std::vector<float> g_lp, g_h;  // upstream gradients [B, T] (full_kl: g_h is grad_kl)
    bool has_g_lp = true, has_g_h = true, want_entropy = true, want_lse = true;
    double temperature = 1.0, grad_loss = 1.0;
    std::optional<std::int64_t> ignore_index = -100;
    std::array<index_t, 12> pad{};
};

std::string describe(const problem& p) {
    using rlhf_fuzz::list;
    return "op " + std::to_string(p.op) + (p.masked ? " masked" : " unmasked") + " [" + std::to_string(p.b) + ", " +
           std::to_string(p.t) + ", " + std::to_string(p.v) + "], logits " + list(std::span<const float>(p.logits)) +
           ", reference " + list(std::span<const float>(p.reference)) + ", tokens " +
           list(std::span<const std::int64_t>(p.tokens)) + ", mask " + list(std::span<const double>(p.mask.m)) +
           ", g_lp " + (p.has_g_lp ? list(std::span<const float>(p.g_lp)) : "none") + ", g_h " +
           (p.has_g_h ? list(std::span<const float>(p.g_h)) : "none") + ", entropy out " +
           std::to_string(p.want_entropy) + ", lse out " + std::to_string(p.want_lse) + ", temperature " +
           rlhf_fuzz::num(p.temperature) + ", grad_loss " + rlhf_fuzz::num(p.grad_loss) + ", ignore " +
           (p.ignore_index ? std::to_string(*p.ignore_index) : "none") + ", mask type " + std::to_string(p.mask_type);
}

bool mask_fits(std::size_t type, const rlhf_fuzz::mask_values& m) {
    return rlhf_fuzz::with_mask_type(type, [&]<class M>(std::type_identity<M>) {
        return std::all_of(m.m.begin(), m.m.end(), [](double x) { return rlhf_fuzz::representable<M>(x); });
    });
}

/// Logits with some entries -inf (a vocabulary entry masked out: legal), at `density` / 256.
std::vector<float> decode_logits(source& in, std::size_t n) {
    std::vector<double> x = in.values(n, -4, 7);
    const unsigned density = in.pick({0U, 0U, 24U, 160U, 256U});
    if (density != 0)
        for (double& e : x)
            if (in.bit(density)) e = -std::numeric_limits<double>::infinity();
    return rlhf_fuzz::to_float(x);
}

problem decode(source& in) {
    problem p;
    p.op = in.integer<int>(0, 3);
    p.masked = in.integer<int>(0, 3) != 0;
    p.b = in.extent(3, 5);
    p.t = in.extent(3, 5);
    p.v = in.extent(8, 1100);
    while (p.b * p.t * p.v > 12000) p.v /= 2;  // keep an input fast
    const auto bt = static_cast<std::size_t>(p.b * p.t);
    const auto n = bt * static_cast<std::size_t>(p.v);
    p.logits = decode_logits(in, n);
    if (p.op == full_kl) p.reference = in.flag() ? p.logits : decode_logits(in, n);
    p.tokens.resize(bt);
    for (std::int64_t& y : p.tokens) {
        if (in.chance(6)) {
            y = in.pick<std::int64_t>({-1, -100, 0x7fffffffffffffff, -0x7fffffffffffffff});
            if (in.flag()) y = p.v;
        } else {
            y = in.integer<index_t>(0, std::max<index_t>(p.v - 1, 0));
        }
    }
    p.mask = rlhf_fuzz::decode_mask(in, p.b, p.t);
    p.mask_type = in.pick(rlhf_fuzz::mask_type_count);
    if (!mask_fits(p.mask_type, p.mask)) p.mask_type = 5;
    p.other_mask_type = in.pick(rlhf_fuzz::mask_type_count);
    p.other_mask_ok = p.masked && p.mask.binary && p.other_mask_type != p.mask_type;
    p.g_lp = rlhf_fuzz::to_float(in.values(bt, -4, 4));
    p.g_h = rlhf_fuzz::to_float(in.values(bt, -4, 4));
    p.has_g_lp = !in.chance(40);
    p.has_g_h = !in.chance(40);
    p.want_entropy = in.flag();
    p.want_lse = in.flag();
    if (in.flag()) p.temperature = in.option({1.0, 0.7, 2.0, 1e-3, 0.5});
    if (in.chance(64)) p.grad_loss = in.option({1.0, 0.5, -2.0});
    if (in.chance(64)) p.ignore_index = in.pick<std::optional<std::int64_t>>({std::nullopt, 0, -1});
    for (index_t& pad : p.pad) pad = in.integer<index_t>(0, 3);
    return p;
}

/// What one call produced (logical, row-major).
template <class T>
struct logits_run {
    std::vector<T> out, h;       // logprobs / kl, entropy
    std::vector<double> lse;     // logsumexp
    std::vector<T> grad, grad2;  // backward with saved statistics (or from lm_loss), recomputing
    double loss = 0.0;           // lm_loss
    index_t count = 0;           // lm_loss
};

enum class layout { contiguous, strided };

template <class T, class M>
rlhf_fuzz::outcome<logits_run<T>> run(const problem& p, layout where) {
    const bool strided = where == layout::strided;
    const auto pad = [&](std::size_t k) { return strided ? p.pad[k] : index_t{0}; };
    const T s = rlhf_fuzz::sentinel<T>();
    const M mask_padding = rlhf_fuzz::mask_padding<M>();
    const auto z = tensor3<T>::from(std::span<const float>(p.logits), p.b, p.t, p.v, pad(0), pad(1), s);
    const auto zq =
        tensor3<T>::from(std::span<const float>(p.reference), p.op == full_kl ? p.b : 0, p.t, p.v, pad(2), pad(3), s);
    const auto tokens =
        matrix<std::int64_t>::from(std::span<const std::int64_t>(p.tokens), p.b, p.t, pad(4), std::int64_t{-7});
    const auto mask = matrix<M>::from(std::span<const double>(p.mask.m), p.b, p.t, pad(5), mask_padding);
    const auto g_lp = matrix<T>::from(std::span<const float>(p.g_lp), p.b, p.t, pad(6), s);
    const auto g_h = matrix<T>::from(std::span<const float>(p.g_h), p.b, p.t, pad(7), s);
    matrix<T> out(p.b, p.t, pad(8)), h(p.b, p.t, pad(9));
    matrix<double> lse(p.b, p.t, pad(10));
    tensor3<T> grad(p.b, p.t, p.v, pad(11), pad(0)), grad2(p.b, p.t, p.v, pad(1), pad(11));
    out.fill(s);
    h.fill(s);
    lse.fill(rlhf_fuzz::sentinel<double>());
    grad.fill(s);
    grad2.fill(s);
    const rlhf::logits_options options{.temperature = p.temperature};
    const rlhf::mut_view<T> h_out = p.want_entropy ? h.mut() : rlhf::mut_view<T>{};
    const rlhf::mut_view<double> lse_out = p.want_lse ? lse.mut() : rlhf::mut_view<double>{};
    const rlhf::view<T> glp = p.has_g_lp ? g_lp.view() : rlhf::view<T>{};
    const rlhf::view<T> gh = p.has_g_h ? g_h.view() : rlhf::view<T>{};
    const std::initializer_list<std::string_view> names = {
        "logits",        "tokens",           "mask",         "logprobs",    "entropy",
        "logsumexp",     "grad_logprobs",    "grad_entropy", "grad_logits", "temperature",
        "policy_logits", "reference_logits", "kl",           "grad_kl",     "grad_policy_logits",
        "grad_loss"};
    auto result = rlhf_fuzz::attempt("logits", names, [&] {
        logits_run<T> r;
        switch (p.op) {
            case logprobs:
                if (p.masked) {
                    rlhf::logprobs_from_logits(z.view(), tokens.view(), mask.view(), out.mut(), h_out, lse_out,
                                               options);
                    rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), mask.view(), glp, gh,
                                                        rlhf::view<double>(lse_out), rlhf::view<T>(h_out), grad.mut(),
                                                        options);
                    rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), mask.view(), glp, gh, {}, {},
                                                        grad2.mut(), options);
                } else {
                    rlhf::logprobs_from_logits(z.view(), tokens.view(), out.mut(), h_out, lse_out, options);
                    rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), glp, gh, rlhf::view<double>(lse_out),
                                                        rlhf::view<T>(h_out), grad.mut(), options);
                    rlhf::logprobs_from_logits_backward(z.view(), tokens.view(), glp, gh, {}, {}, grad2.mut(), options);
                }
                break;
            case entropy:
                if (p.masked) {
                    rlhf::entropy_from_logits(z.view(), mask.view(), h.mut(), lse_out, options);
                    rlhf::entropy_from_logits_backward(z.view(), mask.view(), gh, rlhf::view<double>(lse_out),
                                                       rlhf::view<T>(h.view()), grad.mut(), options);
                    rlhf::entropy_from_logits_backward(z.view(), mask.view(), gh, {}, {}, grad2.mut(), options);
                } else {
                    rlhf::entropy_from_logits(z.view(), h.mut(), lse_out, options);
                    rlhf::entropy_from_logits_backward(z.view(), gh, rlhf::view<double>(lse_out),
                                                       rlhf::view<T>(h.view()), grad.mut(), options);
                    rlhf::entropy_from_logits_backward(z.view(), gh, {}, {}, grad2.mut(), options);
                }
                break;
            case full_kl:
                if (p.masked) {
                    rlhf::full_kl_from_logits(z.view(), zq.view(), mask.view(), out.mut(), options);
                    rlhf::full_kl_from_logits_backward(z.view(), zq.view(), mask.view(), g_h.view(), grad.mut(),
                                                       options);
                } else {
                    rlhf::full_kl_from_logits(z.view(), zq.view(), out.mut(), options);
                    rlhf::full_kl_from_logits_backward(z.view(), zq.view(), g_h.view(), grad.mut(), options);
                }
                break;
            default: {
                const rlhf::lm_loss_options lm{.temperature = p.temperature, .ignore_index = p.ignore_index};
                const rlhf::lm_loss_result l = p.masked
                                                   ? rlhf::lm_loss(z.view(), tokens.view(), mask.view(), grad.mut(), lm)
                                                   : rlhf::lm_loss(z.view(), tokens.view(), grad.mut(), lm);
                r.loss = l.loss;
                r.count = l.num_tokens;
                if (p.masked)
                    rlhf::lm_loss_backward(z.view(), tokens.view(), mask.view(), p.grad_loss, grad2.mut(), lm);
                else
                    rlhf::lm_loss_backward(z.view(), tokens.view(), p.grad_loss, grad2.mut(), lm);
                break;
            }
        }
        if (p.op == logprobs || p.op == full_kl) r.out = out.logical();
        if (p.op == entropy || (p.op == logprobs && p.want_entropy)) r.h = h.logical();
        if ((p.op == logprobs || p.op == entropy) && p.want_lse) r.lse = lse.logical();
        r.grad = grad.logical();
        if (p.op != full_kl) r.grad2 = grad2.logical();
        return r;
    });
    require(out.padding_intact(s) && h.padding_intact(s) && lse.padding_intact(rlhf_fuzz::sentinel<double>()) &&
                grad.padding_intact(s) && grad2.padding_intact(s),
            "logits: an output's padding was written");
    return result;
}

/// Whether the input must be refused, by the documented policies: a temperature that is not
/// positive and finite, and at a position that is read (mask 1 or no mask; for lm_loss also not
/// `ignore_index`): NaN or +inf logits, a row of -inf, a token id outside [0, V) or with a -inf logit.
std::string must_throw(const problem& p) {
    if (!(p.temperature > 0.0 && std::isfinite(p.temperature))) return "temperature " + rlhf_fuzz::num(p.temperature);
    if (p.v == 0) return {};  // the shape error (with B·T > 0) or nothing to read
    for (index_t i = 0; i < p.b * p.t; ++i) {
        const auto at = static_cast<std::size_t>(i);
        if (p.masked && p.mask.m[at] == 0.0) continue;
        if (!p.mask.binary) continue;  // refused as a mask anyway
        const std::int64_t y = p.tokens[at];
        if (p.op == lm_loss && p.ignore_index && y == *p.ignore_index) continue;
        for (const std::vector<float>* z : {&p.logits, &p.reference}) {
            if (z->empty()) continue;
            bool all_minus_inf = true;
            for (index_t k = 0; k < p.v; ++k) {
                const float x = (*z)[at * static_cast<std::size_t>(p.v) + static_cast<std::size_t>(k)];
                if (std::isnan(x) || x == std::numeric_limits<float>::infinity()) return "a NaN or +inf logit";
                all_minus_inf = all_minus_inf && x == -std::numeric_limits<float>::infinity();
            }
            if (all_minus_inf) return "a row of -inf logits";
        }
        if (p.op == logprobs || p.op == lm_loss) {
            if (y < 0 || y >= p.v) return "token " + std::to_string(y);
            if (p.logits[at * static_cast<std::size_t>(p.v) + static_cast<std::size_t>(y)] ==
                -std::numeric_limits<float>::infinity())
                return "a token with logit -inf";
        }
    }
    return {};
}

template <class T>
void same_bits(const std::string& what, const logits_run<T>& a, const logits_run<T>& b) {
    rlhf_fuzz::bitwise_equal(what + " out", std::span<const T>(a.out), std::span<const T>(b.out));
    rlhf_fuzz::bitwise_equal(what + " entropy", std::span<const T>(a.h), std::span<const T>(b.h));
    rlhf_fuzz::bitwise_equal(what + " logsumexp", std::span<const double>(a.lse), std::span<const double>(b.lse));
    rlhf_fuzz::bitwise_equal(what + " grad", std::span<const T>(a.grad), std::span<const T>(b.grad));
    rlhf_fuzz::bitwise_equal(what + " grad (recomputed)", std::span<const T>(a.grad2), std::span<const T>(b.grad2));
    rlhf_fuzz::bitwise_equal(what + " loss", a.loss, b.loss);
    require(a.count == b.count, what + ": token counts differ");
}

template <class T>
void no_nan(const std::string& what, const logits_run<T>& r) {
    rlhf_fuzz::no_nan(what + " out", std::span<const T>(r.out));
    rlhf_fuzz::no_nan(what + " entropy", std::span<const T>(r.h));
    rlhf_fuzz::no_nan(what + " logsumexp", std::span<const double>(r.lse));
    rlhf_fuzz::no_nan(what + " grad", std::span<const T>(r.grad));
    rlhf_fuzz::no_nan(what + " grad (recomputed)", std::span<const T>(r.grad2));
    rlhf_fuzz::no_nan(what + " loss", r.loss);
}

void fuzz(source& in) {
    const problem p = decode(in);
    rlhf_fuzz::describe_input() = [&] { return describe(p); };
    const std::string refused = must_throw(p);
    rlhf_fuzz::with_mask_type(p.mask_type, [&]<class M>(std::type_identity<M>) {
        auto f = run<float, M>(p, layout::contiguous);
        auto s = run<float, M>(p, layout::strided);
        auto d = run<double, M>(p, layout::contiguous);
        rlhf_fuzz::same_error("logits contiguous vs strided", f, s);
        rlhf_fuzz::same_error("logits float vs double", f, d);
        if (!refused.empty()) require(f.threw, "logits: an input the documentation refuses was accepted: " + refused);
        if (f.threw) return;
        no_nan("logits float", *f.value);
        no_nan("logits double", *d.value);
        same_bits("logits contiguous vs strided", *f.value, *s.value);
        if (p.other_mask_ok)
            rlhf_fuzz::with_mask_type(p.other_mask_type, [&]<class M2>(std::type_identity<M2>) {
                auto o = run<float, M2>(p, layout::contiguous);
                require(!o.threw, "logits: another mask element type threw: " + o.message);
                same_bits("logits mask element types", *f.value, *o.value);
            });
        constexpr double eps = rlhf_fuzz::float32_tolerance;
        // Statistics are double in both: float32 is the double result rounded, except where the
        // saved entropy (rounded to T) centres the entropy gradient: |g_H|·ulp(H)/τ per entry.
        double floor = 0.0;
        if (p.has_g_h && (p.op == entropy || p.want_entropy) && p.want_lse)
            floor = rlhf_fuzz::max_abs(std::span<const float>(p.g_h)) *
                    (rlhf_fuzz::max_abs(std::span<const double>(d.value->h)) + 1.0) * 0x1p-21 / p.temperature / eps;
        // Known limitation (docs/fuzzing.md): the saved logsumexp is one double, max + log Σ, so
        // beyond |z/τ| ≈ 1e10 it has lost log Σ to rounding and the backward that reads it is off.
        double largest = 0.0;
        for (const float x : p.logits)
            if (std::isfinite(x)) largest = std::max(largest, std::abs(static_cast<double>(x)) / p.temperature);
        const bool saved_exact = largest <= 1e10 || !p.want_lse;
        rlhf_fuzz::expect_elements("logits out vs double", f.value->out, d.value->out);
        rlhf_fuzz::expect_elements("logits entropy vs double", f.value->h, d.value->h);
        for (std::size_t i = 0; i < d.value->lse.size(); ++i)
            rlhf_fuzz::expect_close("logits logsumexp vs double", f.value->lse[i], d.value->lse[i], eps);
        if (saved_exact || p.op == full_kl || p.op == lm_loss)
            rlhf_fuzz::expect_elements("logits grad vs double", f.value->grad, d.value->grad, eps, floor);
        rlhf_fuzz::expect_elements("logits recomputed grad vs double", f.value->grad2, d.value->grad2, eps);
        rlhf_fuzz::expect_close("lm_loss vs double", f.value->loss, d.value->loss, eps);
        require(f.value->count == d.value->count, "lm_loss: token counts differ from double");
        // The backward with the forward's statistics equals the one that recomputes them.
        if ((p.op == logprobs || p.op == entropy) && saved_exact) {
            std::vector<double> recomputed(d.value->grad2.begin(), d.value->grad2.end());
            rlhf_fuzz::expect_elements("logits saved vs recomputed grad", f.value->grad, recomputed, eps, floor);
        }
        if (p.op == lm_loss && p.grad_loss == 1.0)
            rlhf_fuzz::bitwise_equal("lm_loss grad vs lm_loss_backward(1)", std::span<const float>(f.value->grad),
                                     std::span<const float>(f.value->grad2));
    });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    source in(data, size);
    fuzz(in);
    rlhf_fuzz::describe_input() = nullptr;
    return 0;
}
