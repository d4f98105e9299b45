// libFuzzer target: GAE in all its maskings (rlhf::compute_gae with and without bootstrap values,
// zero_masked / skip_masked / valid_range) and the time-major GAE with terminated/truncated flags
// (docs/fuzzing.md).
//
// Per input: a float32 call on contiguous buffers, one on strided views (bitwise equal; padding
// never written), one in place (outputs aliasing inputs where the documentation allows it:
// bitwise equal), one with another mask element type (bitwise equal), and the double reference on
// the same float-rounded inputs (float32 tolerance). Outputs overlapping inputs in a way the
// documentation forbids must throw.

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
#include "rlhf/kernels/gae.hpp"

namespace {

using rlhf::index_t;
using rlhf_fuzz::matrix;
using rlhf_fuzz::require;
using rlhf_fuzz::source;
using rlhf_fuzz::vector1;

/// How the outputs alias the inputs in the in-place run.
enum class aliasing {
    none,
    advantages_rewards,  ///< advantages is rewards' buffer
    advantages_values,   ///< advantages is values' buffer (compute_gae only)
    returns_rewards,     ///< returns is rewards' buffer
    returns_values,      ///< returns is values' buffer (compute_gae only)
    both,                ///< advantages is rewards', returns is values' (compute_gae only)
    crossed,             ///< advantages is values', returns is rewards' (compute_gae only)
    partial,             ///< advantages overlaps rewards shifted by one element: refused
};

struct problem {
    bool time_major = false;
    index_t rows = 0, cols = 0;
    std::vector<float> rewards, values, truncation_values;
    std::vector<float> bootstrap;  ///< compute_gae: [B] (when `with_bootstrap`); time-major: next_values [N]
    bool with_bootstrap = false;
    rlhf_fuzz::mask_values mask, truncated;  ///< compute_gae: mask; time-major: terminated, truncated
    std::size_t mask_type = 5, other_mask_type = 5;
    bool other_mask_ok = false;
    std::array<index_t, 7> pad{};
    aliasing alias = aliasing::none;
    double gamma = 1.0, lambda = 0.95;
    rlhf::gae_masking masking = rlhf::gae_masking::zero_masked;
};

std::string describe(const problem& p) {
    using rlhf_fuzz::list;
    return std::string(p.time_major ? "time-major" : "compute_gae") + " [" + std::to_string(p.rows) + ", " +
           std::to_string(p.cols) + "], rewards " + list(std::span<const float>(p.rewards)) + ", values " +
           list(std::span<const float>(p.values)) + ", mask " + list(std::span<const double>(p.mask.m)) +
           ", truncated " + list(std::span<const double>(p.truncated.m)) + ", truncation values " +
           list(std::span<const float>(p.truncation_values)) + ", bootstrap " +
           (p.with_bootstrap || p.time_major ? list(std::span<const float>(p.bootstrap)) : std::string("none")) +
           ", gamma " + rlhf_fuzz::num(p.gamma) + ", lambda " + rlhf_fuzz::num(p.lambda) + ", masking " +
           std::to_string(static_cast<int>(p.masking)) + ", mask type " + std::to_string(p.mask_type) + ", alias " +
           std::to_string(static_cast<int>(p.alias));
}

bool mask_fits(std::size_t type, const rlhf_fuzz::mask_values& m) {
    return rlhf_fuzz::with_mask_type(type, [&]<class M>(std::type_identity<M>) {
        return std::all_of(m.m.begin(), m.m.end(), [](double v) { return rlhf_fuzz::representable<M>(v); });
    });
}

problem decode(source& in) {
    problem p;
    p.time_major = in.chance(80);
    p.rows = in.extent(5, 9);
    p.cols = in.extent(12, 600);
    if (p.time_major) p.cols = std::min<index_t>(p.cols, 40);  // environments
    const auto n = static_cast<std::size_t>(p.rows * p.cols);
    p.rewards = rlhf_fuzz::to_float(in.values(n, -8, 4));
    p.values = rlhf_fuzz::to_float(in.values(n, -6, 6));
    p.mask = rlhf_fuzz::decode_mask(in, p.rows, p.cols);
    if (p.time_major) {
        p.truncated = rlhf_fuzz::decode_mask(in, p.rows, p.cols);
        p.truncation_values = rlhf_fuzz::to_float(in.values(n, -6, 6));
        p.bootstrap = rlhf_fuzz::to_float(in.values(static_cast<std::size_t>(p.cols), -6, 6));
    } else {
        p.with_bootstrap = in.flag();
        p.bootstrap = rlhf_fuzz::to_float(in.values(static_cast<std::size_t>(p.rows), -6, 6));
    }
    p.mask_type = in.pick(rlhf_fuzz::mask_type_count);
    if (!mask_fits(p.mask_type, p.mask) || (p.time_major && !mask_fits(p.mask_type, p.truncated))) p.mask_type = 5;
    p.other_mask_type = in.pick(rlhf_fuzz::mask_type_count);
    p.other_mask_ok = p.mask.binary && (!p.time_major || p.truncated.binary) && p.other_mask_type != p.mask_type;
    for (index_t& pad : p.pad) pad = in.integer<index_t>(0, 3);
    p.alias = static_cast<aliasing>(in.integer<int>(0, 7));
    if (p.time_major && p.alias != aliasing::advantages_rewards && p.alias != aliasing::returns_rewards &&
        p.alias != aliasing::partial)
        p.alias = aliasing::none;
    if (in.flag()) p.gamma = in.option({1.0, 0.99, 0.95, 0.0, 0.5});
    if (in.flag()) p.lambda = in.option({0.95, 1.0, 0.0, 0.5});
    p.masking = in.enumeration<rlhf::gae_masking>(3);
    return p;
}

/// Outputs of one call (logical, row-major).
template <class T>
struct gae_run {
    std::vector<T> advantages, returns;
};

enum class layout { contiguous, strided, in_place };

/// One call in `where`'s layout with values of T and masks of M.
template <class T, class M>
rlhf_fuzz::outcome<gae_run<T>> run(const problem& p, layout where) {
    const bool strided = where == layout::strided;
    const auto pad = [&](std::size_t k) { return strided ? p.pad[k] : index_t{0}; };
    const T sentinel = rlhf_fuzz::sentinel<T>();
    const M mask_padding = rlhf_fuzz::mask_padding<M>();
    auto rewards = matrix<T>::from(std::span<const float>(p.rewards), p.rows, p.cols, pad(0), sentinel);
    auto values = matrix<T>::from(std::span<const float>(p.values), p.rows, p.cols, pad(1), sentinel);
    const auto mask = matrix<M>::from(std::span<const double>(p.mask.m), p.rows, p.cols, pad(2), mask_padding);
    const auto truncated = matrix<M>::from(std::span<const double>(p.truncated.m), p.time_major ? p.rows : 0, p.cols,
                                           pad(3), mask_padding);
    const auto truncation_values = matrix<T>::from(std::span<const float>(p.truncation_values),
                                                   p.time_major ? p.rows : 0, p.cols, pad(4), sentinel);
    const auto bootstrap = vector1<T>::from(std::span<const float>(p.bootstrap));
    matrix<T> advantages(p.rows, p.cols, pad(5)), returns(p.rows, p.cols, pad(6));
    advantages.fill(sentinel);
    returns.fill(sentinel);
    rlhf::mut_view<T> adv = advantages.mut(), ret = returns.mut();
    if (where == layout::in_place) {
        switch (p.alias) {
            case aliasing::advantages_rewards:
                adv = rewards.mut();
                break;
            case aliasing::advantages_values:
                adv = values.mut();
                break;
            case aliasing::returns_rewards:
                ret = rewards.mut();
                break;
            case aliasing::returns_values:
                ret = values.mut();
                break;
            case aliasing::both:
                adv = rewards.mut();
                ret = values.mut();
                break;
            case aliasing::crossed:
                adv = values.mut();
                ret = rewards.mut();
                break;
            case aliasing::partial:
                // One element further into rewards' buffer, same extents: refused before any write
                // (were it written, ASan would report the element past the buffer).
                if (p.rows * p.cols >= 2) adv = rlhf::mut_view<T>(&rewards.at(0, 0) + 1, {p.rows, p.cols}, {p.cols, 1});
                break;
            case aliasing::none:
                break;
        }
    }
    const std::initializer_list<std::string_view> names =
        p.time_major
            ? std::initializer_list<std::string_view>{"rewards",
                                                      "values",
                                                      "terminated",
                                                      "truncated",
                                                      "truncation_values",
                                                      "next_values",
                                                      "advantages",
                                                      "returns",
                                                      "gamma",
                                                      "lambda"}
            : std::initializer_list<std::string_view>{"rewards", "values", "mask",   "bootstrap_values", "advantages",
                                                      "returns", "gamma",  "lambda", "masking"};
    auto out = rlhf_fuzz::attempt("gae", names, [&] {
        if (p.time_major) {
            rlhf::compute_gae_time_major(rewards.view(), values.view(), mask.view(), truncated.view(),
                                         truncation_values.view(), bootstrap.view(), adv, ret,
                                         rlhf::time_major_gae_options{.gamma = p.gamma, .lambda = p.lambda});
        } else {
            const rlhf::gae_options options{.gamma = p.gamma, .lambda = p.lambda, .masking = p.masking};
            if (p.with_bootstrap)
                rlhf::compute_gae(rewards.view(), values.view(), mask.view(), bootstrap.view(), adv, ret, options);
            else
                rlhf::compute_gae(rewards.view(), values.view(), mask.view(), adv, ret, options);
        }
        gae_run<T> r;
        // Read the outputs back through the views that were written.
        for (index_t b = 0; b < p.rows; ++b)
            for (index_t t = 0; t < p.cols; ++t) {
                r.advantages.push_back(adv(b, t));
                r.returns.push_back(ret(b, t));
            }
        return r;
    });
    if (where != layout::in_place)
        require(advantages.padding_intact(sentinel) && returns.padding_intact(sentinel),
                "gae: an output's padding was written");
    return out;
}

/// Bitwise equality of two float32 runs (`zero_sign_free`: see rlhf_fuzz::bitwise_equal).
void same_bits(const std::string& what, const gae_run<float>& a, const gae_run<float>& b, bool zero_sign_free = false) {
    rlhf_fuzz::bitwise_equal(what + " advantages", std::span<const float>(a.advantages),
                             std::span<const float>(b.advantages), zero_sign_free);
    rlhf_fuzz::bitwise_equal(what + " returns", std::span<const float>(a.returns), std::span<const float>(b.returns),
                             zero_sign_free);
}

void fuzz(source& in) {
    const problem p = decode(in);
    rlhf_fuzz::describe_input() = [&] { return describe(p); };
    const bool must_throw = std::isnan(p.gamma) || std::isnan(p.lambda) ||
                            (!p.time_major && static_cast<int>(p.masking) > 2) ||
                            (!p.time_major && static_cast<int>(p.masking) < 0);
    rlhf_fuzz::with_mask_type(p.mask_type, [&]<class M>(std::type_identity<M>) {
        auto f = run<float, M>(p, layout::contiguous);
        auto s = run<float, M>(p, layout::strided);
        auto d = run<double, M>(p, layout::contiguous);
        rlhf_fuzz::same_error("gae contiguous vs strided", f, s);
        rlhf_fuzz::same_error("gae float vs double", f, d);
        if (must_throw) require(f.threw, "gae: an invalid option (NaN, unknown masking) was accepted");
        if (p.alias != aliasing::none) {
            auto i = run<float, M>(p, layout::in_place);
            if (p.alias == aliasing::partial) {
                require(i.threw || p.rows * p.cols < 2, "gae: a partially overlapping output was accepted");
            } else {
                rlhf_fuzz::same_error("gae out of place vs in place", f, i);
                if (!f.threw) same_bits("gae out of place vs in place", *f.value, *i.value);
            }
        }
        if (f.threw) {
            require(f.kind != rlhf::error_kind::shape, "gae: a shape error for well-shaped arguments: " + f.message);
            return;
        }
        same_bits("gae contiguous vs strided", *f.value, *s.value);
        if (p.other_mask_ok)
            rlhf_fuzz::with_mask_type(p.other_mask_type, [&]<class M2>(std::type_identity<M2>) {
                auto o = run<float, M2>(p, layout::contiguous);
                require(!o.threw, "gae: another mask element type threw: " + o.message);
                same_bits("gae mask element types", *f.value, *o.value, true);
            });
        for (const auto* r : {&*f.value, &*s.value}) {
            rlhf_fuzz::no_nan("gae advantages", std::span<const float>(r->advantages));
            rlhf_fuzz::no_nan("gae returns", std::span<const float>(r->returns));
        }
        rlhf_fuzz::no_nan("gae double advantages", std::span<const double>(d.value->advantages));
        rlhf_fuzz::no_nan("gae double returns", std::span<const double>(d.value->returns));
        // The recursion state is double in both (compute_gae): float32 is the double result rounded.
        // The time-major kernel carries the advantage through its float32 output rows: a rounding
        // per step of the largest magnitude M involved.
        double floor = 0.0;
        if (p.time_major) {
            const double m = std::max({rlhf_fuzz::max_abs(std::span<const float>(p.rewards)),
                                       rlhf_fuzz::max_abs(std::span<const float>(p.values)),
                                       rlhf_fuzz::max_abs(std::span<const float>(p.truncation_values)),
                                       rlhf_fuzz::max_abs(std::span<const float>(p.bootstrap))});
            floor = 4.0 * m * static_cast<double>(p.rows + 1) * 0x1p-24 / rlhf_fuzz::float32_tolerance;
        }
        // Time-major: an advantage beyond float32's range is carried as +-inf into the earlier steps
        // of its environment (documented), which are then excused.
        std::vector<bool> excused(d.value->advantages.size(), false);
        if (p.time_major) {
            constexpr auto fmax = static_cast<double>(std::numeric_limits<float>::max());
            for (index_t n = 0; n < p.cols; ++n) {
                bool carried = false;
                for (index_t t = p.rows; t-- > 0;) {
                    const auto i = static_cast<std::size_t>(t * p.cols + n);
                    excused[i] = carried;
                    carried = carried || std::abs(d.value->advantages[i]) > fmax * (1.0 - 1e-5);
                }
            }
        }
        const auto compare = [&](const char* what, const std::vector<float>& c, const std::vector<double>& r) {
            std::vector<float> cc;
            std::vector<double> rr;
            for (std::size_t i = 0; i < r.size(); ++i)
                if (!excused[i]) {
                    cc.push_back(c[i]);
                    rr.push_back(r[i]);
                }
            rlhf_fuzz::expect_elements(what, cc, rr, rlhf_fuzz::float32_tolerance, floor);
        };
        compare("gae advantages vs double", f.value->advantages, d.value->advantages);
        compare("gae returns vs double", f.value->returns, d.value->returns);
    });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    source in(data, size);
    fuzz(in);
    rlhf_fuzz::describe_input() = nullptr;
    return 0;
}
