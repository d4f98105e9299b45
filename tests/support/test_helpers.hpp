#pragma once
// Helpers shared by the test files: error capture, vector-backed views and containers, seeded
// random data, mask builders, central finite differences and comparisons. Independent of the
// backends (LibTorch, Eigen, xtensor helpers live in their own headers next to this one).
#include <doctest/doctest.h>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/view.hpp"

namespace rlhf_test {

// ---- option names ----

/// Every canonical name of an option enum prints and parses back to its value.
template <rlhf::named_option E>
void check_option_round_trip() {
    for (const auto& [value, name] : rlhf::option_names<E>::values) {
        CHECK(rlhf::to_string(value) == name);
        CHECK(rlhf::parse_option<E>(name) == value);
    }
}

// ---- errors ----

/// Runs `call`, which must throw rlhf::error, and returns the error (FAILs if nothing is thrown).
template <class Call>
rlhf::error expect_error(Call&& call) {
    try {
        std::forward<Call>(call)();
    } catch (const rlhf::error& e) {
        return e;
    }
    FAIL("expected rlhf::error");
    throw;  // unreachable
}

/// expect_error, then checks the error's kind and argument name; returns it for further checks.
template <class Call>
rlhf::error check_error(Call&& call, rlhf::error_kind kind, std::string_view argument) {
    rlhf::error e = expect_error(std::forward<Call>(call));
    CHECK(e.kind() == kind);
    CHECK(e.argument() == argument);
    return e;
}

// ---- views over std::vector, conversions ----

/// A [rows, cols] row-major view of `data`.
template <class T>
rlhf::view<T> view_of(const std::vector<T>& data, std::integral auto rows, std::integral auto cols) {
    return rlhf::make_view(data.data(), static_cast<rlhf::index_t>(rows), static_cast<rlhf::index_t>(cols));
}
template <class T>
rlhf::mut_view<T> mut_view_of(std::vector<T>& data, std::integral auto rows, std::integral auto cols) {
    return rlhf::make_mut_view(data.data(), static_cast<rlhf::index_t>(rows), static_cast<rlhf::index_t>(cols));
}

/// The rank-1 view of a whole vector.
template <class T>
rlhf::view<T, 1> vec(const std::vector<T>& v) {
    return {v.data(), {static_cast<rlhf::index_t>(v.size())}};
}
template <class T>
rlhf::mut_view<T, 1> mut_vec(std::vector<T>& v) {
    return {v.data(), {static_cast<rlhf::index_t>(v.size())}};
}

/// Element-wise static_cast of a vector.
template <class T, class U>
std::vector<T> as(const std::vector<U>& x) {
    std::vector<T> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = static_cast<T>(x[i]);
    return out;
}

/// A mask stored as M, bool included (std::vector<bool> has no data()).
template <class M>
struct mask_buffer {
    std::unique_ptr<M[]> data;
    template <class U>
    explicit mask_buffer(const std::vector<U>& values) : data(std::make_unique<M[]>(values.size())) {
        for (std::size_t i = 0; i < values.size(); ++i) data[i] = static_cast<M>(values[i]);
    }
    [[nodiscard]] rlhf::view<M> view(std::integral auto rows, std::integral auto cols) const {
        return rlhf::make_view(static_cast<const M*>(data.get()), static_cast<rlhf::index_t>(rows),
                               static_cast<rlhf::index_t>(cols));
    }
};

/// A dense row-major [rows, cols] matrix with its views.
template <class T>
struct matrix {
    rlhf::index_t rows = 0, cols = 0;
    std::vector<T> data;
    matrix(rlhf::index_t r, rlhf::index_t c, T fill = T{0})
        : rows(r), cols(c), data(static_cast<std::size_t>(r * c), fill) {}
    matrix(rlhf::index_t r, rlhf::index_t c, std::vector<T> values) : rows(r), cols(c), data(std::move(values)) {
        data.resize(static_cast<std::size_t>(r * c));
    }
    T& operator()(rlhf::index_t i, rlhf::index_t j) { return data[static_cast<std::size_t>(i * cols + j)]; }
    T operator()(rlhf::index_t i, rlhf::index_t j) const { return data[static_cast<std::size_t>(i * cols + j)]; }
    [[nodiscard]] rlhf::view<T> view() const { return rlhf::make_view(data.data(), rows, cols); }
    [[nodiscard]] rlhf::mut_view<T> mut() { return rlhf::make_mut_view(data.data(), rows, cols); }
};

/// A dense [B, T, V] tensor with its views.
template <class T>
struct cube {
    rlhf::index_t b, t, v;
    std::vector<T> data;
    cube(rlhf::index_t batch, rlhf::index_t steps, rlhf::index_t vocab, T fill = T{0})
        : b(batch), t(steps), v(vocab), data(static_cast<std::size_t>(batch * steps * vocab), fill) {}
    T& operator()(rlhf::index_t i, rlhf::index_t j, rlhf::index_t k) {
        return data[static_cast<std::size_t>((i * t + j) * v + k)];
    }
    T operator()(rlhf::index_t i, rlhf::index_t j, rlhf::index_t k) const {
        return data[static_cast<std::size_t>((i * t + j) * v + k)];
    }
    [[nodiscard]] rlhf::view<T, 3> view() const { return {data.data(), {b, t, v}}; }
    [[nodiscard]] rlhf::mut_view<T, 3> mut() { return {data.data(), {b, t, v}}; }
};

// ---- random data (seeded std::mt19937) ----

/// n draws of N(mean, stddev), in order, from one distribution.
inline std::vector<double> random_normal(std::mt19937& rng, std::size_t n, double mean = 0.0, double stddev = 1.0) {
    std::normal_distribution<double> normal(mean, stddev);
    std::vector<double> out(n);
    for (double& x : out) x = normal(rng);
    return out;
}

/// A random [rows, cols] mask (entries kept with probability 0.7) with left padding (column 0),
/// right padding (the last column), columns 1 and 2 valid, holes, and row 1 empty when rows >= 3.
inline std::vector<int> random_padded_mask(std::mt19937& rng, std::size_t rows, std::size_t cols) {
    std::bernoulli_distribution keep(0.7);
    std::vector<int> m(rows * cols);
    for (int& x : m) x = keep(rng) ? 1 : 0;
    for (std::size_t r = 0; r < rows; ++r) {
        m[r * cols] = 0;
        m[r * cols + 1] = 1;
        m[r * cols + 2] = 1;
        m[r * cols + cols - 1] = 0;
    }
    if (rows >= 3)
        for (std::size_t c = 0; c < cols; ++c) m[cols + c] = 0;
    return m;
}

/// One contiguous run per row, [r % 3, cols - r % 2), and row 1 empty: the masks valid_range needs.
inline std::vector<int> range_mask(std::size_t rows, std::size_t cols) {
    std::vector<int> m(rows * cols);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c) m[r * cols + c] = r != 1 && c >= r % 3 && c + r % 2 < cols ? 1 : 0;
    return m;
}

/// Per-token random data with a random mask: for every element in row-major order `draw()` (which
/// draws the token's values from `rng`), then a mask entry kept with probability `keep`. Then row 1
/// is emptied when rows > 1 and element 0 is kept, so that the batch has a valid token.
template <class M, class Draw>
std::vector<M> random_token_mask(std::mt19937& rng, rlhf::index_t rows, rlhf::index_t cols, double keep, Draw&& draw) {
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    std::vector<M> mask;
    for (rlhf::index_t i = 0; i < rows * cols; ++i) {
        draw();
        mask.push_back(uniform(rng) < keep ? M{1} : M{0});
    }
    if (rows > 1)
        for (rlhf::index_t t = 0; t < cols; ++t) mask[static_cast<std::size_t>(cols + t)] = M{0};
    mask[0] = M{1};
    return mask;
}

// ---- mask builders ----

/// A [rows, cols] mask, all ones until rows are padded, holed or emptied:
/// `mask_pattern(6, 7).right_padding(1, 4).left_padding(2, 2).hole(3, 3, 5).empty_row(4).values<T>()`.
class mask_pattern {
public:
    mask_pattern(rlhf::index_t rows, rlhf::index_t cols) : cols_(cols), m_(static_cast<std::size_t>(rows * cols), 1) {}
    /// Row `row` keeps its first `valid` tokens.
    mask_pattern& right_padding(rlhf::index_t row, rlhf::index_t valid) { return zero(row, valid, cols_); }
    /// Row `row` loses its first `padding` tokens.
    mask_pattern& left_padding(rlhf::index_t row, rlhf::index_t padding) { return zero(row, 0, padding); }
    /// Row `row` loses the tokens [begin, end).
    mask_pattern& hole(rlhf::index_t row, rlhf::index_t begin, rlhf::index_t end) { return zero(row, begin, end); }
    mask_pattern& empty_row(rlhf::index_t row) { return zero(row, 0, cols_); }
    template <class M = int>
    [[nodiscard]] std::vector<M> values() const {
        return as<M>(m_);
    }

private:
    mask_pattern& zero(rlhf::index_t row, rlhf::index_t begin, rlhf::index_t end) {
        for (rlhf::index_t t = begin; t < end; ++t) m_[static_cast<std::size_t>(row * cols_ + t)] = 0;
        return *this;
    }
    rlhf::index_t cols_;
    std::vector<int> m_;
};

// ---- finite differences ----

/// (f(x + step·e_i) − f(x − step·e_i)) / (2·step), x[i] perturbed in place and restored. `f` is
/// called as f(x), or as f() when it reads x through views it holds.
template <class F>
double central_difference(F&& f, std::vector<double>& x, std::size_t i, double step) {
    const auto eval = [&] {
        if constexpr (std::is_invocable_v<F&, const std::vector<double>&>)
            return static_cast<double>(f(std::as_const(x)));
        else
            return static_cast<double>(f());
    };
    const double keep = x[i];
    x[i] = keep + step;
    const double up = eval();
    x[i] = keep - step;
    const double down = eval();
    x[i] = keep;
    return (up - down) / (2 * step);
}

// ---- comparisons ----

/// The relative tolerance of a comparison in T: `for_float` for float, `for_double` otherwise.
template <class T>
constexpr double tolerance(double for_float = 2e-5, double for_double = 1e-12) {
    return std::is_same_v<T, float> ? for_float : for_double;
}

/// Element-wise doctest::Approx with relative `epsilon`, sizes required equal.
inline void check_close(const std::vector<double>& actual, const std::vector<double>& expected,
                        double epsilon = 1e-14) {
    REQUIRE(actual.size() == expected.size());
    for (std::size_t i = 0; i < actual.size(); ++i) {
        CAPTURE(i);
        CHECK(actual[i] == doctest::Approx(expected[i]).epsilon(epsilon));
    }
}

/// Whether a contiguous container (data(), size(): std::vector, Eigen, xtensor) holds exactly `expected`.
template <class C, class T>
bool same_values(const C& actual, const std::vector<T>& expected) {
    if (static_cast<std::size_t>(actual.size()) != expected.size()) return false;
    for (std::size_t i = 0; i < expected.size(); ++i)
        if (actual.data()[i] != expected[i]) return false;
    return true;
}

/// Checks element by element that a contiguous container holds exactly `expected`.
template <class C, class T>
void check_same(const C& actual, const std::vector<T>& expected) {
    REQUIRE(static_cast<std::size_t>(actual.size()) == expected.size());
    for (std::size_t k = 0; k < expected.size(); ++k) CHECK(actual.data()[k] == expected[k]);
}

}  // namespace rlhf_test
