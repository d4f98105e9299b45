#pragma once
// Shared machinery of the libFuzzer targets (docs/fuzzing.md): decoding shapes, values, masks,
// strided buffers and options from the fuzzer's bytes, running a kernel under the error policy,
// and the properties every target checks.
//
// The property of one input: either every run throws `rlhf::error` naming an argument (and the
// runs agree on which), or the outputs hold no NaN, the float32 outputs equal the library's own
// double path on the same (float-rounded) inputs within a float32 tolerance, and a call on
// strided views (padded rows) is bitwise equal to a call on contiguous copies. A violation prints
// what failed to stderr and traps, so that libFuzzer saves the input.

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlhf/core/error.hpp"
#include "rlhf/core/view.hpp"

namespace rlhf_fuzz {

using rlhf::index_t;

/// "1.5" with enough digits to reproduce a double.
inline std::string num(double x) {
    char buffer[48];
    std::snprintf(buffer, sizeof(buffer), "%.9g", x);
    return buffer;
}

/// "[1, 2.5, nan]" (at most `limit` entries).
template <class T>
std::string list(std::span<const T> x, std::size_t limit = 64) {
    std::string out = "[";
    for (std::size_t i = 0; i < x.size() && i < limit; ++i) out += (i ? ", " : "") + num(static_cast<double>(x[i]));
    return out + (x.size() > limit ? ", ...]" : "]");
}
inline std::string opt(const std::optional<double>& x) {
    return x ? num(*x) : std::string("unset");
}

// ---- property violations ------------------------------------------------------------------------

/// What the current input decoded to, printed with a violation (set by each target, lazily).
inline std::function<std::string()>& describe_input() {
    static std::function<std::string()> describe;
    return describe;
}

/// Reports a violated property and traps (libFuzzer then writes the crashing input).
[[noreturn]] inline void violation(std::string_view what) {
    std::fprintf(stderr, "\n==== rlhf fuzz: property violated: %.*s\n", static_cast<int>(what.size()), what.data());
    if (describe_input()) std::fprintf(stderr, "==== input: %s\n", describe_input()().c_str());
    std::fflush(stderr);
    __builtin_trap();
}

inline void require(bool ok, std::string_view what) {
    if (!ok) violation(what);
}

// ---- decoding -----------------------------------------------------------------------------------

/// splitmix64: fills what the fuzzer's bytes do not cover, from a seed the bytes choose.
class filler {
public:
    explicit filler(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }

private:
    std::uint64_t state_;
};

/// How extreme the decoded values of one input are.
struct value_regime {
    unsigned special_per_256 = 0;  ///< chance (of 256) that a value is a special one
    bool non_finite = false;       ///< specials include NaN and +-inf
};

/// The fuzzer's bytes as a stream of decisions. Once the bytes run out, values come from a
/// seeded generator (so long rows are cheap to express) and decisions from FuzzedDataProvider's
/// zeros (the first choice).
class source {
public:
    source(const std::uint8_t* data, std::size_t size) : p_(data, size), fill_(p_.ConsumeIntegral<std::uint64_t>()) {
        const auto r = p_.ConsumeIntegral<std::uint8_t>();
        static constexpr unsigned rates[4] = {0, 6, 40, 160};
        regime_.special_per_256 = rates[r & 3U];
        regime_.non_finite = (r & 4U) != 0;
    }

    [[nodiscard]] bool exhausted() { return p_.remaining_bytes() == 0; }
    [[nodiscard]] const value_regime& regime() const { return regime_; }

    bool flag() { return p_.ConsumeBool(); }
    /// True with probability about `per_256` / 256; false once the bytes run out.
    bool chance(unsigned per_256) { return 256U - p_.ConsumeIntegral<std::uint8_t>() <= per_256; }
    template <class I>
    I integer(I low, I high) {
        return p_.ConsumeIntegralInRange<I>(low, high);
    }
    /// An index into a list of `n` choices.
    std::size_t pick(std::size_t n) { return p_.ConsumeIntegralInRange<std::size_t>(0, n - 1); }
    template <class T>
    T pick(std::initializer_list<T> choices) {
        return *(choices.begin() + static_cast<std::ptrdiff_t>(pick(choices.size())));
    }

    /// An extent: mostly small (0..`small`), sometimes up to `large` (block boundaries).
    index_t extent(index_t small, index_t large) {
        if (!chance(24)) return integer<index_t>(0, small);
        return integer<index_t>(0, large);
    }

    /// A special value: signed zeros, ones, float32 range limits, subnormals, overflow points of
    /// exp (88.7 in float, 709.8 in double), huge magnitudes, and (when allowed) NaN and +-inf.
    double special() {
        constexpr auto fmax = static_cast<double>(std::numeric_limits<float>::max());
        constexpr auto fmin = static_cast<double>(std::numeric_limits<float>::min());
        constexpr auto fsub = static_cast<double>(std::numeric_limits<float>::denorm_min());
        static constexpr double finite[] = {
            0.0,      -0.0,   1.0,           -1.0,          0.5,     2.0,      fmin,  -fmin, fsub,   -fsub,
            3 * fsub, 1e-40,  fmax,          -fmax,         1e38,    -1e38,    1e30,  -1e30, 1.9e19, -1.9e19,
            1e10,     88.72,  89.0,          -88.72,        -89.0,   -104.0,   709.0, 20.0,  -20.0,  1e-7,
            1e-30,    -1e-30, 1.0 + 0x1p-23, 1.0 - 0x1p-24, 0x1p-30, -0x1p-30, 100.0, -100.0};
        constexpr std::size_t n_finite = sizeof(finite) / sizeof(finite[0]);
        const std::size_t n = n_finite + (regime_.non_finite ? 3 : 0) + 1;
        const std::size_t k = pick(n);
        if (k < n_finite) return finite[k];
        if (k == n_finite) {  // any float32 magnitude: sign, 23-bit mantissa, exponent
            const auto bits = p_.ConsumeIntegral<std::uint32_t>();
            return static_cast<double>(std::bit_cast<float>(bits & 0xff7fffffU));  // exponent never all ones
        }
        switch (k - n_finite - 1) {
            case 0:
                return std::numeric_limits<double>::quiet_NaN();
            case 1:
                return std::numeric_limits<double>::infinity();
            default:
                return -std::numeric_limits<double>::infinity();
        }
    }

    /// A value: special with the regime's probability, else a multiple of 2^-12 scaled by
    /// 2^`exponent` in [-8·2^e, 8·2^e) (`offset` added), or from the generator once the bytes run out.
    double value(int exponent, double offset = 0.0) {
        if (exhausted()) {
            const auto r = static_cast<std::int16_t>(fill_.next() & 0xffffU);
            return std::ldexp(static_cast<double>(r), exponent - 12) + offset;
        }
        if (regime_.special_per_256 != 0 && chance(regime_.special_per_256)) return special();
        return std::ldexp(static_cast<double>(p_.ConsumeIntegral<std::int16_t>()), exponent - 12) + offset;
    }

    /// `n` values of one array, with its own scale.
    std::vector<double> values(std::size_t n, int low_exponent, int high_exponent, double offset = 0.0) {
        const int e = integer<int>(low_exponent, high_exponent);
        std::vector<double> out(n);
        for (double& x : out) x = value(e, offset);
        return out;
    }

    /// A random bit from the bytes, or the generator once they run out.
    bool bit(unsigned per_256) {
        if (exhausted()) return (fill_.next() & 0xffU) < per_256;
        return p_.ConsumeIntegral<std::uint8_t>() < per_256;
    }

    /// An option value: one of `typical` most of the time, otherwise a value out of any range
    /// (negative, zero, subnormal, huge, NaN, +-inf) or a special.
    double option(std::initializer_list<double> typical) {
        if (!chance(40)) return pick(typical);
        static constexpr double odd[] = {0.0,
                                         -0.0,
                                         -1.0,
                                         -1e-300,
                                         5e-324,
                                         1e-300,
                                         1e-30,
                                         1e300,
                                         1e39,
                                         std::numeric_limits<double>::max(),
                                         std::numeric_limits<double>::quiet_NaN(),
                                         std::numeric_limits<double>::infinity(),
                                         -std::numeric_limits<double>::infinity(),
                                         1.0,
                                         1.0 + 1e-12,
                                         0.5,
                                         2.0,
                                         1e-8};
        const std::size_t k = pick(sizeof(odd) / sizeof(odd[0]) + 1);
        if (k < sizeof(odd) / sizeof(odd[0])) return odd[k];
        return special();
    }
    /// An optional option: unset about half the time.
    std::optional<double> optional_option(std::initializer_list<double> typical) {
        if (flag()) return std::nullopt;
        return option(typical);
    }

    /// An enum value: one of the `count` valid ones, rarely an out-of-range one.
    template <class E>
    E enumeration(int count) {
        if (chance(8)) return static_cast<E>(pick({count, count + 1, 127, -1}));
        return static_cast<E>(integer<int>(0, count - 1));
    }

    FuzzedDataProvider& provider() { return p_; }

private:
    FuzzedDataProvider p_;
    filler fill_;
    value_regime regime_{};
};

// ---- masks --------------------------------------------------------------------------------------

/// A `[rows, cols]` mask as doubles (0/1, or a non-binary entry when `binary` is false).
struct mask_values {
    std::vector<double> m;
    bool binary = true;
};

/// Mask patterns: full, empty, random density, right padding, left padding, interior holes,
/// alternate empty rows; then possibly one non-binary entry (2, -1, 0.5, NaN, 255, 1e-45) or a
/// -0.0 (a valid 0).
inline mask_values decode_mask(source& in, index_t rows, index_t cols, bool allow_non_binary = true) {
    mask_values out;
    const auto n = static_cast<std::size_t>(rows * cols);
    out.m.assign(n, 0.0);
    const auto at = [cols](index_t b, index_t t) { return static_cast<std::size_t>(b * cols + t); };
    const std::size_t pattern = in.pick(7);
    const unsigned density = in.pick({128U, 16U, 240U, 200U});
    for (index_t b = 0; b < rows; ++b) {
        const index_t len = cols == 0 ? 0 : in.integer<index_t>(0, cols);
        for (index_t t = 0; t < cols; ++t) {
            double v = 0.0;
            switch (pattern) {
                case 0:
                    v = 1.0;
                    break;
                case 1:
                    v = 0.0;
                    break;
                case 2:
                    v = in.bit(density) ? 1.0 : 0.0;
                    break;
                case 3:
                    v = t < len ? 1.0 : 0.0;
                    break;
                case 4:
                    v = t >= cols - len ? 1.0 : 0.0;
                    break;
                case 5:
                    v = (t < len && (t % 3 != 1 || in.bit(64))) ? 1.0 : 0.0;
                    break;
                default:
                    v = (b % 2 == 0 && t < len) ? 1.0 : 0.0;
                    break;
            }
            out.m[at(b, t)] = v;
        }
    }
    if (n > 0 && in.chance(20)) {
        const auto i = in.integer<std::size_t>(0, n - 1);
        const double odd = in.pick({-0.0, 2.0, -1.0, 0.5, std::numeric_limits<double>::quiet_NaN(), 255.0, 1e-45});
        if (allow_non_binary || odd == 0.0) out.m[i] = odd;
    }
    for (const double v : out.m) out.binary = out.binary && (v == 0.0 || v == 1.0);
    return out;
}

/// Whether `M` can hold `v` exactly (a bool mask holds 0/1 only; integers no fractions or NaN).
template <class M>
bool representable(double v) {
    if constexpr (std::is_same_v<M, bool>) {
        return v == 0.0 || v == 1.0;
    } else if constexpr (std::is_integral_v<M>) {
        return std::isfinite(v) && v == std::floor(v) && v >= static_cast<double>(std::numeric_limits<M>::min()) &&
               v <= static_cast<double>(std::numeric_limits<M>::max());
    } else {
        return true;
    }
}

/// The element types a mask may have: bool, uint8, int32, int64, float, double.
inline constexpr std::size_t mask_type_count = 6;

template <class Body>
decltype(auto) with_mask_type(std::size_t k, Body&& body) {
    switch (k % mask_type_count) {
        case 0:
            return body(std::type_identity<bool>{});
        case 1:
            return body(std::type_identity<std::uint8_t>{});
        case 2:
            return body(std::type_identity<std::int32_t>{});
        case 3:
            return body(std::type_identity<std::int64_t>{});
        case 4:
            return body(std::type_identity<float>{});
        default:
            return body(std::type_identity<double>{});
    }
}

// ---- buffers ------------------------------------------------------------------------------------

/// A `[rows, cols]` matrix in an allocation of its own that ends at its last element (so ASan sees
/// an over-read), with a row stride of `cols + pad`. The allocation is never null, even when empty.
template <class T>
class matrix {
public:
    matrix() : matrix(0, 0, 0) {}
    matrix(index_t rows, index_t cols, index_t pad)
        : rows_(rows), cols_(cols), stride_(cols + pad), size_(rows == 0 ? 0 : (rows - 1) * (cols + pad) + cols) {
        data_ = std::unique_ptr<T[]>(new T[static_cast<std::size_t>(size_)]);
    }

    /// From row-major `values` (converted to T), padding filled with `padding`.
    template <class U>
    static matrix from(std::span<const U> values, index_t rows, index_t cols, index_t pad, T padding) {
        matrix out(rows, cols, pad);
        out.fill(padding);
        for (index_t b = 0; b < rows; ++b)
            for (index_t t = 0; t < cols; ++t)
                out.at(b, t) = static_cast<T>(values[static_cast<std::size_t>(b * cols + t)]);
        return out;
    }

    void fill(T x) { std::fill(data_.get(), data_.get() + size_, x); }
    T& at(index_t b, index_t t) { return data_[static_cast<std::size_t>(b * stride_ + t)]; }
    const T& at(index_t b, index_t t) const { return data_[static_cast<std::size_t>(b * stride_ + t)]; }
    [[nodiscard]] index_t rows() const { return rows_; }
    [[nodiscard]] index_t cols() const { return cols_; }
    [[nodiscard]] rlhf::view<T> view() const { return {data_.get(), {rows_, cols_}, {stride_, 1}}; }
    [[nodiscard]] rlhf::mut_view<T> mut() { return {data_.get(), {rows_, cols_}, {stride_, 1}}; }
    /// The logical elements, row-major (as T).
    [[nodiscard]] std::vector<T> logical() const {
        std::vector<T> out;
        out.reserve(static_cast<std::size_t>(rows_ * cols_));
        for (index_t b = 0; b < rows_; ++b)
            for (index_t t = 0; t < cols_; ++t) out.push_back(at(b, t));
        return out;
    }
    /// True when every element of the allocation (padding included) still has the bits of `x`.
    [[nodiscard]] bool untouched(T x) const {
        for (index_t i = 0; i < size_; ++i)
            if (std::memcmp(&data_[static_cast<std::size_t>(i)], &x, sizeof(T)) != 0) return false;
        return true;
    }
    /// True when every padding element still has the bits of `padding`.
    [[nodiscard]] bool padding_intact(T padding) const {
        for (index_t b = 0; b < rows_; ++b)
            for (index_t t = cols_; t < stride_ && b * stride_ + t < size_; ++t)
                if (std::memcmp(&at(b, t), &padding, sizeof(T)) != 0) return false;
        return true;
    }

private:
    index_t rows_, cols_, stride_, size_;
    std::unique_ptr<T[]> data_;
};

/// A `[B, T, V]` tensor in an allocation of its own that ends at its last element, with padding
/// after each vocabulary row (`pad_v`) and after each `[T, V]` slice (`pad_t`).
template <class T>
class tensor3 {
public:
    tensor3() : tensor3(0, 0, 0, 0, 0) {}
    tensor3(index_t b, index_t t, index_t v, index_t pad_v, index_t pad_t)
        : b_(b), t_(t), v_(v), st_(v + pad_v), sb_(t * (v + pad_v) + pad_t) {
        size_ = (b == 0 || t == 0) ? 0 : (b - 1) * sb_ + (t - 1) * st_ + v;
        data_ = std::unique_ptr<T[]>(new T[static_cast<std::size_t>(size_)]);
    }
    template <class U>
    static tensor3 from(std::span<const U> values, index_t b, index_t t, index_t v, index_t pad_v, index_t pad_t,
                        T padding) {
        tensor3 out(b, t, v, pad_v, pad_t);
        out.fill(padding);
        for (index_t i = 0; i < b; ++i)
            for (index_t j = 0; j < t; ++j)
                for (index_t k = 0; k < v; ++k)
                    out.at(i, j, k) = static_cast<T>(values[static_cast<std::size_t>((i * t + j) * v + k)]);
        return out;
    }
    void fill(T x) { std::fill(data_.get(), data_.get() + size_, x); }
    T& at(index_t i, index_t j, index_t k) { return data_[static_cast<std::size_t>(i * sb_ + j * st_ + k)]; }
    const T& at(index_t i, index_t j, index_t k) const {
        return data_[static_cast<std::size_t>(i * sb_ + j * st_ + k)];
    }
    [[nodiscard]] rlhf::view<T, 3> view() const { return {data_.get(), {b_, t_, v_}, {sb_, st_, 1}}; }
    [[nodiscard]] rlhf::mut_view<T, 3> mut() { return {data_.get(), {b_, t_, v_}, {sb_, st_, 1}}; }
    [[nodiscard]] std::vector<T> logical() const {
        std::vector<T> out;
        out.reserve(static_cast<std::size_t>(b_ * t_ * v_));
        for (index_t i = 0; i < b_; ++i)
            for (index_t j = 0; j < t_; ++j)
                for (index_t k = 0; k < v_; ++k) out.push_back(at(i, j, k));
        return out;
    }
    /// True when every element outside the logical ones still has the bits of `x`.
    [[nodiscard]] bool padding_intact(T x) const {
        std::vector<bool> logical(static_cast<std::size_t>(size_), false);
        for (index_t i = 0; i < b_; ++i)
            for (index_t j = 0; j < t_; ++j)
                for (index_t k = 0; k < v_; ++k) logical[static_cast<std::size_t>(i * sb_ + j * st_ + k)] = true;
        for (index_t n = 0; n < size_; ++n)
            if (!logical[static_cast<std::size_t>(n)] &&
                std::memcmp(&data_[static_cast<std::size_t>(n)], &x, sizeof(T)) != 0)
                return false;
        return true;
    }

private:
    index_t b_, t_, v_, st_, sb_, size_ = 0;
    std::unique_ptr<T[]> data_;
};

/// A vector in an allocation of its own (never null).
template <class T>
class vector1 {
public:
    vector1() : vector1(0) {}
    explicit vector1(index_t n) : n_(n), data_(new T[static_cast<std::size_t>(n)]) {}
    template <class U>
    static vector1 from(std::span<const U> values) {
        vector1 out(static_cast<index_t>(values.size()));
        for (std::size_t i = 0; i < values.size(); ++i) out.data_[i] = static_cast<T>(values[i]);
        return out;
    }
    void fill(T x) { std::fill(data_.get(), data_.get() + n_, x); }
    T& operator[](index_t i) { return data_[static_cast<std::size_t>(i)]; }
    const T& operator[](index_t i) const { return data_[static_cast<std::size_t>(i)]; }
    [[nodiscard]] index_t size() const { return n_; }
    [[nodiscard]] rlhf::view<T, 1> view() const { return {data_.get(), {n_}}; }
    [[nodiscard]] rlhf::mut_view<T, 1> mut() { return {data_.get(), {n_}}; }
    [[nodiscard]] std::vector<T> logical() const { return {data_.get(), data_.get() + n_}; }

private:
    index_t n_;
    std::unique_ptr<T[]> data_;
};

/// Rounds decoded values to float32: the inputs of every run (the double reference reads them too).
inline std::vector<float> to_float(const std::vector<double>& x) {
    std::vector<float> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(x[i]);
    return out;
}
template <class T>
std::vector<T> as(std::span<const float> x) {
    return {x.begin(), x.end()};
}

/// A quiet NaN with a payload: what unwritten outputs and padding hold.
template <class T>
T sentinel() {
    if constexpr (std::is_same_v<T, float>)
        return std::bit_cast<float>(0x7fc0beefU);
    else
        return std::bit_cast<double>(0x7ff800000000beefULL);
}

/// What a mask's padding holds (never read by a kernel, so one that is read shows up): the
/// sentinel for a floating mask, a non-binary value for an integer one, 1 for bool.
template <class M>
[[nodiscard]] M mask_padding() {
    if constexpr (std::is_floating_point_v<M>)
        return sentinel<M>();
    else
        return static_cast<M>(std::is_same_v<M, bool> ? 1 : 7);
}

// ---- runs under the error policy ----------------------------------------------------------------

/// What a call did: returned `value`, or threw `rlhf::error` (other exceptions escape: libFuzzer
/// reports them as crashes).
template <class R>
struct outcome {
    std::optional<R> value;
    bool threw = false;
    rlhf::error_kind kind{};
    std::string argument;
    std::string message;
};

struct none {};

/// Runs `call`; an `rlhf::error` must name an argument from `arguments` (a name ending in '.'
/// admits every name with that prefix, e.g. "options.").
template <class Call>
auto attempt(std::string_view what, std::initializer_list<std::string_view> arguments, Call&& call) {
    using raw = decltype(call());
    using R = std::conditional_t<std::is_void_v<raw>, none, raw>;
    outcome<R> out;
    try {
        if constexpr (std::is_void_v<raw>) {
            call();
            out.value = none{};
        } else {
            out.value = call();
        }
    } catch (const rlhf::error& e) {
        out.threw = true;
        out.kind = e.kind();
        out.argument = e.argument();
        out.message = e.what();
        require(!e.argument().empty(), std::string(what) + ": rlhf::error without an argument name: " + e.what());
        bool known = false;
        for (const std::string_view name : arguments) {
            const bool prefix = !name.empty() && name.back() == '.';
            known = known || (prefix ? std::string_view(e.argument()).starts_with(name) : e.argument() == name);
        }
        require(known, std::string(what) + ": rlhf::error names an argument the function does not have: '" +
                           e.argument() + "' (" + e.what() + ")");
    }
    return out;
}

/// Two runs on the same data must agree on throwing, and on the argument and kind named.
template <class A, class B>
void same_error(std::string_view what, const outcome<A>& a, const outcome<B>& b) {
    require(a.threw == b.threw,
            std::string(what) + ": one run threw and the other did not: " + (a.threw ? a.message : b.message));
    if (a.threw)
        require(a.argument == b.argument && a.kind == b.kind,
                std::string(what) + ": the runs threw different errors: '" + a.message + "' vs '" + b.message + "'");
}

// ---- comparisons --------------------------------------------------------------------------------

/// Bitwise equality of two runs' outputs (layout invariance). With `zero_sign_free`, +0 and -0
/// count as equal (a -0.0 mask entry, a valid 0, may flip the sign of a zero output).
template <class T>
void bitwise_equal(std::string_view what, std::span<const T> a, std::span<const T> b, bool zero_sign_free = false) {
    require(a.size() == b.size(), std::string(what) + ": sizes differ");
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0 && !(zero_sign_free && a[i] == T{0} && b[i] == T{0}))
            violation(std::string(what) + ": not bitwise equal at " + std::to_string(i) + ": " +
                      num(static_cast<double>(a[i])) + " vs " + num(static_cast<double>(b[i])));
}
inline void bitwise_equal(std::string_view what, double a, double b) {
    if (std::memcmp(&a, &b, sizeof(double)) != 0)
        violation(std::string(what) + ": not bitwise equal: " + num(a) + " vs " + num(b));
}

template <class T>
bool any_nan(std::span<const T> x) {
    return std::any_of(x.begin(), x.end(), [](T v) { return std::isnan(v); });
}
template <class T>
void no_nan(std::string_view what, std::span<const T> x) {
    for (std::size_t i = 0; i < x.size(); ++i)
        if (std::isnan(x[i])) violation(std::string(what) + ": NaN at " + std::to_string(i));
}
inline void no_nan(std::string_view what, double x) {
    require(!std::isnan(x), std::string(what) + ": NaN");
}

/// The float32 tolerance of include/rlhf/libtorch/conformance.hpp.
inline constexpr double float32_tolerance = 1e-4;

/// The scale of an element-wise comparison against `r`: its largest finite magnitude within the
/// float32 range, at least `floor` (1 when everything is 0).
inline double element_scale(std::span<const double> r, double floor = 0.0) {
    double scale = 0.0;
    for (const double x : r)
        if (std::isfinite(x) && std::abs(x) <= static_cast<double>(std::numeric_limits<float>::max()))
            scale = std::max(scale, std::abs(x));
    scale = std::max(scale, floor);
    return scale == 0.0 ? 1.0 : scale;
}

/// Float32's smallest steps: below 2^-126 it has fewer digits, so a result that passes through a
/// subnormal float32 intermediate is off by a few of these, times the other factors.
inline constexpr double subnormal_slack = 8.0 * static_cast<double>(std::numeric_limits<float>::denorm_min());

/// One float32 entry `c` against its double reference `r` (see `compare_elements`), with an
/// absolute `slack` besides; `overflow` is set when `r` lies beyond the float32 range.
inline bool element_ok(double c, double r, double tolerance, double scale, bool& overflow,
                       double slack = subnormal_slack) {
    constexpr auto fmax = static_cast<double>(std::numeric_limits<float>::max());
    overflow = false;
    if (std::isnan(c) || std::isnan(r)) return false;
    if (!std::isfinite(r)) return c == r;
    if (std::abs(r) > fmax * (1.0 - 1e-5)) {
        overflow = true;
        return (std::isinf(c) && std::signbit(c) == std::signbit(r)) ||
               (std::isfinite(c) && std::abs(c - r) <= tolerance * std::abs(r));
    }
    return std::isfinite(c) && std::abs(c - r) <= tolerance * scale + slack;
}

/// What `compare_elements` found: whether some reference entry lies beyond the float32 range (its
/// float32 result may then be infinite), and the first failure.
struct comparison {
    bool ok = true;
    bool overflow = false;
    std::string detail;
};

/// A float32 result `c` against the double reference `r`, entry by entry, as conformance.hpp
/// compares tensors: `max_i |c_i − r_i| / max_i |r_i|` within `tolerance` (absolute when the
/// reference is all zero), an infinite reference matched exactly. Extended for float32 range: a
/// reference beyond float32's largest value may come out as the same-signed infinity; `floor`
/// raises the scale (the rounding of float32 intermediates, for kernels that compute in T).
inline comparison compare_elements(std::span<const float> c, std::span<const double> r, double tolerance,
                                   double floor = 0.0) {
    comparison out;
    const double scale = element_scale(r, floor);
    for (std::size_t i = 0; i < r.size(); ++i) {
        bool overflow = false;
        const double ci = static_cast<double>(c[i]);
        if (!element_ok(ci, r[i], tolerance, scale, overflow)) {
            out.ok = false;
            out.detail = "at " + std::to_string(i) + ": " + num(ci) + " vs reference " + num(r[i]) + " (scale " +
                         num(scale) + ")";
            return out;
        }
        out.overflow = out.overflow || overflow;
    }
    return out;
}

/// A scalar result against its reference: `|c − r| / max(|r|, scale)` within `tolerance`
/// (conformance.hpp uses max(|r|, 1); `scale` is at least 1 and, for a sum, the sum of the
/// magnitudes of its terms).
inline bool close_scalar(double c, double r, double tolerance, double scale = 1.0) {
    if (std::isnan(c) || std::isnan(r)) return false;
    if (!std::isfinite(r) || !std::isfinite(c)) return c == r;
    return std::abs(c - r) <= tolerance * std::max({std::abs(r), scale, 1.0});
}

inline void expect_close(std::string_view what, double c, double r, double tolerance, double scale = 1.0) {
    if (!close_scalar(c, r, tolerance, scale))
        violation(std::string(what) + ": " + num(c) + " vs reference " + num(r) + " (scale " + num(scale) + ")");
}

inline void expect_elements(std::string_view what, std::span<const float> c, std::span<const double> r,
                            double tolerance = float32_tolerance, double floor = 0.0) {
    const comparison cmp = compare_elements(c, r, tolerance, floor);
    if (!cmp.ok) violation(std::string(what) + ": " + cmp.detail);
}

/// Whether every entry is finite.
template <class T>
bool all_finite(std::span<const T> x) {
    return std::all_of(x.begin(), x.end(), [](T v) { return std::isfinite(v); });
}

/// The largest magnitude of `x` (0 when empty).
template <class T>
double max_abs(std::span<const T> x) {
    double m = 0.0;
    for (const T v : x) m = std::max(m, std::abs(static_cast<double>(v)));
    return m;
}

}  // namespace rlhf_fuzz
