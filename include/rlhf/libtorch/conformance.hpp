#pragma once
/// @file
/// A conformance suite for loss kernels on LibTorch tensors (rlhf/libtorch/kernel_concepts.hpp):
/// runs a candidate kernel — a user's CUDA kernel included — over a fixed, seeded set of cases
/// and compares its loss, statistics and gradient with the reference, the library's fused
/// kernel on the CPU in double. Independent of any test framework:
///
/// ```cpp
/// const auto report = rlhf::libtorch::conformance::check_policy_loss_kernel(my_kernel{},
///     {.device = torch::Device(torch::kCUDA)});
/// std::cout << report.summary(/*failures_only=*/true);
/// REQUIRE(report.passed());
/// ```
///
/// Cases: random inputs in each dtype of `conformance_options::dtypes`, every option variant
/// that changes the math (clip-higher, dual clip, log-ratio clamp, masked log-ratio, ratio cap,
/// loss cap, the TRL and ColossalChat thresholds, GSPO, each aggregation mode with and without
/// global counts), masks with right and left padding, interior holes and empty rows (masked
/// positions hold random values the kernel must ignore; the mask dtype cycles through
/// `conformance_options::mask_dtypes`), a long row, extreme log-ratios (±30, ±50) with and
/// without a clamp, and the error behaviour (NaN/Inf anywhere, empty masks, non-binary masks,
/// mismatched shapes and dtypes, invalid options: the candidate must throw where the reference
/// does). Each case gives up to three checks, named `<variant>/<mask>/<dtype>/<loss|stats|grad>`
/// (`error/<case>/<dtype>` for the error behaviour).
///
/// Comparison: a scalar `c` against the reference `r` passes when `|c − r| / max(|r|, 1)` is at
/// most the dtype's tolerance; a tensor (gradient, log-probs, entropy) when
/// `max_i |c_i − r_i| / max_i |r_i|` is (absolute when the reference is all zero); an infinite
/// reference entry must be matched exactly. The candidate computes in its dtype from the same
/// (rounded) inputs the reference reads in double, so the float32 tolerance measures float32
/// rounding only. The gradient is `torch::autograd::grad` of the candidate's loss w.r.t. its
/// differentiable input (log-probs, values or logits), on the candidate's device.

#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iomanip>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rlhf/core/error.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/libtorch/kernel_concepts.hpp"
#include "rlhf/libtorch/kl_loss.hpp"
#include "rlhf/libtorch/logits.hpp"
#include "rlhf/libtorch/policy_loss.hpp"
#include "rlhf/libtorch/value_loss.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch::conformance {

/// What the suite runs and how strictly it compares.
struct conformance_options {
    /// Device of the candidate's inputs (the reference always runs on the CPU in double).
    torch::Device device{torch::kCPU};
    /// Value dtypes of the candidate's inputs (float32 and/or float64).
    std::vector<torch::Dtype> dtypes{torch::kFloat32, torch::kFloat64};
    /// Mask dtypes, cycled over the mask patterns; a floating entry stands for the dtype of the
    /// values (the only floating mask dtype the library accepts).
    std::vector<torch::Dtype> mask_dtypes{torch::kBool, torch::kUInt8, torch::kInt32, torch::kInt64, torch::kFloat64};
    /// Tolerance of a float32 candidate (scaled error, see the file comment).
    double float32_tolerance = 1e-4;
    /// Tolerance of a float64 candidate.
    double float64_tolerance = 1e-9;
    /// Shape of the random cases `[batch, length]` (logits `[batch, length, vocab]`); batch ≥ 2, length ≥ 3.
    std::int64_t batch = 5;
    std::int64_t length = 9;
    std::int64_t vocab = 13;
    /// Row length of the long-row case and vocabulary of the long-vocabulary case (exercise
    /// block-wise reductions of a GPU kernel); 0 skips them.
    std::int64_t long_length = 1031;
    std::int64_t long_vocab = 4099;
    /// Run the error-behaviour cases.
    bool check_errors = true;
    /// Require the error cases to throw `rlhf::error` (otherwise any std::exception passes).
    bool require_rlhf_error = false;
    /// Log-prob kernels: also require the value errors of the fused reference (NaN/+inf logits,
    /// out-of-range tokens, a row of -inf, a non-positive temperature). Off by default: the
    /// composed kernel validates shapes only (value checks would synchronise a GPU), and an
    /// out-of-range token in an unchecked CUDA gather is a fatal device-side assert.
    bool strict_logprob_errors = false;
    /// Seed of the input generator (std::mt19937_64).
    std::uint64_t seed = 20240607;
};

/// One check: its name, whether it passed, what was found, and the largest scaled error.
struct check_result {
    std::string name;
    bool passed = false;
    std::string detail;
    double max_error = 0.0;
};

/// The outcome of a suite run.
struct conformance_report {
    /// Which concept was checked ("policy_loss", "value_loss", "kl_loss", "logprobs", or several).
    std::string kernel;
    std::vector<check_result> checks;
    /// Remarks that are not checks (e.g. an optional form the kernel does not provide).
    std::vector<std::string> notes;

    /// True when at least one check ran and every check passed.
    [[nodiscard]] bool passed() const {
        return !checks.empty() &&
               std::all_of(checks.begin(), checks.end(), [](const check_result& c) { return c.passed; });
    }
    [[nodiscard]] std::size_t failure_count() const {
        return static_cast<std::size_t>(
            std::count_if(checks.begin(), checks.end(), [](const check_result& c) { return !c.passed; }));
    }
    /// Names of the failed checks.
    [[nodiscard]] std::vector<std::string> failed_checks() const {
        std::vector<std::string> names;
        for (const check_result& c : checks)
            if (!c.passed) names.push_back(c.name);
        return names;
    }
    /// True when `name` contains `fragment` starting at a segment boundary (at the start, after
    /// a '/', or anywhere when `fragment` starts with '/'): "huber/" matches "huber/full/float32/loss"
    /// but not "large_errors_huber/full/float32/loss"; "/grad" matches every gradient check.
    [[nodiscard]] static bool matches(std::string_view name, std::string_view fragment) {
        for (std::size_t at = name.find(fragment); at != std::string_view::npos; at = name.find(fragment, at + 1))
            if (at == 0 || name[at - 1] == '/' || (!fragment.empty() && fragment.front() == '/')) return true;
        return false;
    }
    /// True when a failed check's name matches `fragment`.
    [[nodiscard]] bool has_failure(std::string_view fragment) const {
        return std::any_of(checks.begin(), checks.end(),
                           [&](const check_result& c) { return !c.passed && matches(c.name, fragment); });
    }
    /// True when every check whose name matches `fragment` passed (and there is one).
    [[nodiscard]] bool passed_all(std::string_view fragment) const {
        bool any = false;
        for (const check_result& c : checks) {
            if (!matches(c.name, fragment)) continue;
            any = true;
            if (!c.passed) return false;
        }
        return any;
    }
    /// The check named `name`, or nullptr.
    [[nodiscard]] const check_result* find(std::string_view name) const {
        for (const check_result& c : checks)
            if (c.name == name) return &c;
        return nullptr;
    }
    /// Appends the checks and notes of `other`.
    void merge(const conformance_report& other) {
        kernel = kernel.empty() ? other.kernel : kernel + ", " + other.kernel;
        checks.insert(checks.end(), other.checks.begin(), other.checks.end());
        notes.insert(notes.end(), other.notes.begin(), other.notes.end());
    }
    /// A table: one line per check (or per failed check), status, name, max scaled error, detail.
    [[nodiscard]] std::string summary(bool failures_only = false) const {
        std::size_t width = 5;
        for (const check_result& c : checks) width = std::max(width, c.name.size());
        std::ostringstream out;
        out << "conformance of " << kernel << ": " << checks.size() - failure_count() << " of " << checks.size()
            << " checks passed" << (passed() ? "" : " -- FAILED") << '\n';
        for (const std::string& note : notes) out << "note: " << note << '\n';
        out << "status  " << std::left << std::setw(static_cast<int>(width)) << "check"
            << "  max error  detail\n";
        for (const check_result& c : checks) {
            if (failures_only && c.passed) continue;
            std::ostringstream error;
            error << std::setprecision(2) << std::scientific << c.max_error;
            out << (c.passed ? "pass    " : "FAIL    ") << std::left << std::setw(static_cast<int>(width)) << c.name
                << "  " << std::setw(9) << error.str() << "  " << c.detail << '\n';
        }
        return out.str();
    }
};

namespace detail {

inline std::string dtype_label(torch::Dtype dtype) {
    return dtype == torch::kFloat32 ? "float32" : dtype == torch::kFloat64 ? "float64" : "other";
}

inline std::string format_number(double x) {
    std::ostringstream out;
    out << std::setprecision(10) << x;
    return out.str();
}

inline double tolerance_of(const conformance_options& options, torch::Dtype dtype) {
    return dtype == torch::kFloat64 ? options.float64_tolerance : options.float32_tolerance;
}

/// First line of an exception message (torch's messages carry a backtrace).
inline std::string first_line(const char* what) {
    const std::string text = what != nullptr ? what : "";
    const std::size_t end = text.find('\n');
    return end == std::string::npos ? text : text.substr(0, end);
}

/// The mask dtype of pattern `index` for values of `dtype`.
inline torch::Dtype mask_dtype(const conformance_options& options, std::size_t index, torch::Dtype dtype) {
    if (options.mask_dtypes.empty()) return dtype;
    const torch::Dtype m = options.mask_dtypes[index % options.mask_dtypes.size()];
    return (m == torch::kFloat32 || m == torch::kFloat64 || m == torch::kFloat16 || m == torch::kBFloat16) ? dtype : m;
}

/// Input generator: seeded std::mt19937_64, so the cases do not depend on torch's RNG state.
class generator {
public:
    explicit generator(std::uint64_t seed) : engine_(seed) {}

    double normal(double mean = 0.0, double sd = 1.0) { return std::normal_distribution<double>(mean, sd)(engine_); }
    double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(engine_); }
    std::int64_t integer(std::int64_t low, std::int64_t high) {  // [low, high]
        return std::uniform_int_distribution<std::int64_t>(low, high)(engine_);
    }

    /// `[rows, cols]` float64 CPU tensor of N(mean, sd) samples.
    torch::Tensor normal_matrix(std::int64_t rows, std::int64_t cols, double mean = 0.0, double sd = 1.0) {
        torch::Tensor out = torch::empty({rows, cols}, torch::kFloat64);
        double* p = out.data_ptr<double>();
        for (std::int64_t i = 0; i < rows * cols; ++i) p[i] = normal(mean, sd);
        return out;
    }

private:
    std::mt19937_64 engine_;
};

/// A named `[B, T]` 0/1 mask (float64, CPU).
struct named_mask {
    std::string name;
    torch::Tensor mask;
};

/// Full, right padding, left padding, interior holes, empty rows (every pattern but the last has
/// a valid token in each row; row 0 always has one).
inline std::vector<named_mask> mask_patterns(std::int64_t rows, std::int64_t cols, generator& gen) {
    std::vector<named_mask> masks;
    masks.push_back({"full", torch::ones({rows, cols}, torch::kFloat64)});
    torch::Tensor right = torch::zeros({rows, cols}, torch::kFloat64);
    torch::Tensor left = torch::zeros({rows, cols}, torch::kFloat64);
    torch::Tensor holes = torch::zeros({rows, cols}, torch::kFloat64);
    torch::Tensor empty_rows = torch::zeros({rows, cols}, torch::kFloat64);
    for (std::int64_t b = 0; b < rows; ++b) {
        const std::int64_t n = b == 0 ? cols : gen.integer(1, cols);
        const std::int64_t n2 = b == 0 ? cols - 1 : gen.integer(1, cols);
        for (std::int64_t t = 0; t < cols; ++t) {
            right[b][t] = t < n ? 1.0 : 0.0;
            left[b][t] = t >= cols - n ? 1.0 : 0.0;
            holes[b][t] = gen.uniform() < 0.65 ? 1.0 : 0.0;
            empty_rows[b][t] = (b % 2 == 1) ? 0.0 : (t < n2 ? 1.0 : 0.0);
        }
        holes[b][gen.integer(0, cols - 1)] = 1.0;  // at least one valid token per row
        if (cols > 2) holes[b][1] = 0.0;           // an interior hole in every row
    }
    masks.push_back({"right_padding", right});
    masks.push_back({"left_padding", left});
    masks.push_back({"interior_holes", holes});
    masks.push_back({"empty_rows", empty_rows});
    return masks;
}

/// Scaled comparison of two tensors (see the file comment); `scalar` selects the max(|r|, 1)
/// scale of scalars.
struct comparison {
    double max_error = 0.0;
    std::string worst;  // where and what, for the detail
};

inline std::string index_string(std::int64_t flat, c10::IntArrayRef sizes) {
    if (sizes.empty()) return "";
    std::vector<std::int64_t> index(sizes.size());
    for (std::size_t d = sizes.size(); d-- > 0;) {
        const std::int64_t extent = std::max<std::int64_t>(sizes[d], 1);
        index[d] = flat % extent;
        flat /= extent;
    }
    std::string out = " at [";
    for (std::size_t d = 0; d < index.size(); ++d) out += (d ? ", " : "") + std::to_string(index[d]);
    return out + "]";
}

inline comparison compare(const torch::Tensor& candidate, const torch::Tensor& reference, bool scalar) {
    const torch::Tensor c = candidate.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    const torch::Tensor r = reference.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    comparison out;
    if (!c.sizes().equals(r.sizes()) && !(scalar && c.numel() == 1 && r.numel() == 1)) {
        out.max_error = std::numeric_limits<double>::infinity();
        out.worst = "shape " + shape_string(c) + ", expected " + shape_string(r);
        return out;
    }
    const double* cp = c.data_ptr<double>();
    const double* rp = r.data_ptr<double>();
    const std::int64_t n = r.numel();
    double scale = scalar ? 1.0 : 0.0;
    for (std::int64_t i = 0; i < n; ++i)
        if (std::isfinite(rp[i])) scale = std::max(scale, std::abs(rp[i]));
    if (scale == 0.0) scale = 1.0;
    std::int64_t worst = -1;
    for (std::int64_t i = 0; i < n; ++i) {
        double e = 0.0;
        if (!std::isfinite(rp[i]) || !std::isfinite(cp[i]))
            e = cp[i] == rp[i] ? 0.0 : std::numeric_limits<double>::infinity();
        else
            e = std::abs(cp[i] - rp[i]) / (scalar ? std::max(std::abs(rp[i]), 1.0) : scale);
        if (worst < 0 || e > out.max_error) {
            out.max_error = e;
            worst = i;
        }
    }
    if (worst >= 0)
        out.worst = "candidate " + format_number(cp[worst]) + ", reference " + format_number(rp[worst]) +
                    (scalar ? std::string() : index_string(worst, r.sizes()));
    return out;
}

/// Records a tensor comparison as a check.
inline void record(conformance_report& report, std::string name, const torch::Tensor& candidate,
                   const torch::Tensor& reference, double tolerance, bool scalar, std::string prefix = {}) {
    const comparison c = compare(candidate, reference, scalar);
    const bool ok = c.max_error <= tolerance;
    report.checks.push_back({std::move(name), ok,
                             prefix + (ok ? "" : "worst: ") + c.worst + " (tolerance " + format_number(tolerance) + ")",
                             c.max_error});
}

/// Named statistic values, compared as scalars.
using stat_list = std::vector<std::pair<std::string_view, double>>;

inline stat_list stat_fields(const policy_loss_stats& s) {
    return {{"clip_fraction", s.clip_fraction},
            {"clip_fraction_lower", s.clip_fraction_lower},
            {"approx_kl", s.approx_kl},
            {"policy_kl", s.policy_kl},
            {"policy_kl_clamped", s.policy_kl_clamped},
            {"ratio_mean", s.ratio_mean},
            {"ratio_max", s.ratio_max},
            {"ratio_mean_all_positions", s.ratio_mean_all_positions},
            {"valid_tokens", s.valid_tokens},
            {"ratio_threshold_exceeded", s.ratio_threshold_exceeded ? 1.0 : 0.0},
            {"skip_threshold_exceeded", s.skip_threshold_exceeded ? 1.0 : 0.0}};
}

inline stat_list stat_fields(const value_loss_stats& s) {
    return {{"clip_fraction", s.clip_fraction},
            {"value_mean", s.value_mean},
            {"value_error", s.value_error},
            {"return_mean", s.return_mean},
            {"explained_variance", s.explained_variance},
            {"valid_tokens", s.valid_tokens},
            {"clipped_tokens", s.clipped_tokens}};
}

inline stat_list stat_fields(const kl_loss_stats& s) {
    return {{"kl_mean", s.kl_mean},
            {"kl_aggregated", s.kl_aggregated},
            {"clamp_fraction", s.clamp_fraction},
            {"ratio_mean", s.ratio_mean},
            {"valid_tokens", s.valid_tokens}};
}

inline void record_stats(conformance_report& report, std::string name, const stat_list& candidate,
                         const stat_list& reference, double tolerance) {
    double worst = 0.0;
    std::string where;
    for (std::size_t i = 0; i < reference.size(); ++i) {
        const double c = candidate[i].second;
        const double r = reference[i].second;
        double e = 0.0;
        if (!std::isfinite(r) || !std::isfinite(c))
            e = c == r ? 0.0 : std::numeric_limits<double>::infinity();
        else
            e = std::abs(c - r) / std::max(std::abs(r), 1.0);
        if (e > worst || (i == 0 && where.empty())) {
            worst = std::max(worst, e);
            where =
                std::string(reference[i].first) + ": candidate " + format_number(c) + ", reference " + format_number(r);
        }
    }
    const bool ok = worst <= tolerance;
    report.checks.push_back(
        {std::move(name), ok, (ok ? "" : "worst ") + where + " (tolerance " + format_number(tolerance) + ")", worst});
}

/// d loss / d input of the candidate (zeros where autograd reports no dependence).
inline torch::Tensor gradient_of(const torch::Tensor& loss, const torch::Tensor& input) {
    const torch::autograd::variable_list grads =
        torch::autograd::grad({loss}, {input}, /*grad_outputs=*/{}, /*retain_graph=*/false, /*create_graph=*/false,
                              /*allow_unused=*/true);
    return grads.empty() || !grads[0].defined() ? torch::zeros_like(input) : grads[0];
}

/// Runs one loss case: the reference (CPU, double) and the candidate, then compares the loss,
/// the statistics and the gradient w.r.t. the differentiable input.
/// `candidate(x)` / `reference(x)` take the differentiable input (a leaf that requires grad).
template <class Candidate, class Reference>
void run_loss_case(conformance_report& report, const std::string& prefix, double tolerance,
                   const torch::Tensor& candidate_input, const torch::Tensor& reference_input, Candidate&& candidate,
                   Reference&& reference) {
    const torch::Tensor x = candidate_input.detach().clone().requires_grad_(true);
    const torch::Tensor xr = reference_input.detach().clone().requires_grad_(true);
    auto ref = reference(xr);
    const torch::Tensor ref_grad = gradient_of(ref.loss, xr);
    const auto ref_stats = stat_fields(read_statistics(ref));

    decltype(ref) out;
    try {
        out = candidate(x);
    } catch (const std::exception& e) {
        const std::string detail = "the kernel threw: " + first_line(e.what());
        const double inf = std::numeric_limits<double>::infinity();
        report.checks.push_back({prefix + "/loss", false, detail, inf});
        report.checks.push_back({prefix + "/stats", false, detail, inf});
        report.checks.push_back({prefix + "/grad", false, detail, inf});
        return;
    }
    if (!out.loss.defined() || out.loss.numel() != 1) {
        report.checks.push_back(
            {prefix + "/loss", false, "the loss is not a one-element tensor", std::numeric_limits<double>::infinity()});
    } else if (out.loss.scalar_type() != candidate_input.scalar_type()) {
        report.checks.push_back({prefix + "/loss", false,
                                 "the loss has dtype " + dtype_name(out.loss.scalar_type()) + ", expected " +
                                     dtype_name(candidate_input.scalar_type()),
                                 std::numeric_limits<double>::infinity()});
    } else {
        record(report, prefix + "/loss", out.loss, ref.loss, tolerance, true);
    }
    record_stats(report, prefix + "/stats", stat_fields(read_statistics(out)), ref_stats, tolerance);
    if (!out.loss.defined() || !out.loss.requires_grad()) {
        report.checks.push_back({prefix + "/grad", false, "the loss does not require grad (no autograd graph)",
                                 std::numeric_limits<double>::infinity()});
        return;
    }
    try {
        record(report, prefix + "/grad", gradient_of(out.loss.sum(), x), ref_grad, tolerance, false);
    } catch (const std::exception& e) {
        report.checks.push_back({prefix + "/grad", false, "backward threw: " + first_line(e.what()),
                                 std::numeric_limits<double>::infinity()});
    }
}

/// Records whether `call` throws (the reference rejects the input).
template <class Call>
void expect_throw(conformance_report& report, std::string name, bool require_rlhf_error, Call&& call) {
    try {
        call();
    } catch (const ::rlhf::error& e) {
        report.checks.push_back(
            {std::move(name), true,
             "threw rlhf::error (" + std::string(to_string(e.kind())) + ", argument '" + e.argument() + "')", 0.0});
        return;
    } catch (const std::exception& e) {
        report.checks.push_back(
            {std::move(name), !require_rlhf_error,
             (require_rlhf_error ? "threw, but not rlhf::error: " : "threw: ") + first_line(e.what()),
             require_rlhf_error ? 1.0 : 0.0});
        return;
    }
    report.checks.push_back({std::move(name), false, "returned without an error (the reference throws)", 1.0});
}

/// The inputs of a `[B, T]` loss case, float64 on the CPU; the mask 0/1.
struct loss_inputs {
    torch::Tensor a, b, c, mask;
};

/// Candidate-side copies: values in `dtype` on `device`, the mask in `mask_type`.
inline torch::Tensor on(const torch::Tensor& t, const conformance_options& o, torch::Dtype dtype) {
    return t.to(dtype).to(o.device);
}

/// Reference-side copies: the candidate's (rounded) values in double on the CPU.
inline torch::Tensor ref_of(const torch::Tensor& t, torch::Dtype dtype) {
    return t.to(dtype).to(torch::kFloat64);
}

inline std::vector<std::pair<std::string, aggregation_options>> aggregation_modes(std::int64_t rows) {
    return {
        {"agg_token_mean_global", {.mode = loss_aggregation::token_mean, .global_token_count = 57.0, .dp_size = 2.0}},
        {"agg_seq_mean_token_sum", {.mode = loss_aggregation::seq_mean_token_sum}},
        {"agg_seq_mean_token_mean", {.mode = loss_aggregation::seq_mean_token_mean}},
        {"agg_seq_mean_token_mean_global",
         {.mode = loss_aggregation::seq_mean_token_mean,
          .global_sequence_count = static_cast<double>(rows) + 3.0,
          .dp_size = 4.0,
          .token_count_epsilon = 0.0}},
        {"agg_seq_mean_token_sum_norm", {.mode = loss_aggregation::seq_mean_token_sum_norm}},
        {"agg_seq_mean_token_sum_norm_normalizer",
         {.mode = loss_aggregation::seq_mean_token_sum_norm, .normalizer = 4.0}},
    };
}

inline void check_shape_options(const conformance_options& o) {
    constexpr std::string_view function = "rlhf::libtorch::conformance";
    if (o.batch < 2) fail(error_kind::config, function, "options.batch", "at least 2", std::to_string(o.batch));
    if (o.length < 3) fail(error_kind::config, function, "options.length", "at least 3", std::to_string(o.length));
    if (o.vocab < 3) fail(error_kind::config, function, "options.vocab", "at least 3", std::to_string(o.vocab));
    for (const torch::Dtype d : o.dtypes)
        if (d != torch::kFloat32 && d != torch::kFloat64)
            fail(error_kind::config, function, "options.dtypes", "float32 or float64", dtype_name(d));
}

/// Log-ratio offsets for the extreme cases: every third token ±`magnitude`, the rest N(0, 0.8).
inline torch::Tensor extreme_log_ratio(generator& gen, std::int64_t rows, std::int64_t cols, double magnitude) {
    torch::Tensor d = gen.normal_matrix(rows, cols, 0.0, 0.8);
    for (std::int64_t b = 0; b < rows; ++b)
        for (std::int64_t t = 0; t < cols; ++t)
            if ((b * cols + t) % 3 == 0) d[b][t] = ((b + t) % 2 == 0 ? magnitude : -magnitude);
    return d;
}

/// A tensor with `value` written at [b, t].
inline torch::Tensor with_value(const torch::Tensor& t, std::int64_t b, std::int64_t col, double value) {
    torch::Tensor out = t.clone();
    out[b][col] = value;
    return out;
}

/// The inputs of a log-prob case.
struct logits_case {
    torch::Tensor logits;  // [B, T, V] float64
    torch::Tensor tokens;  // [B, T] int64
    torch::Tensor mask;    // [B, T] float64 0/1 or undefined
};

/// A named option set of a loss suite; `float_tolerance` compares at the float32 tolerance in
/// every dtype.
template <class Options>
struct variant {
    std::string name;
    Options options;
    bool float_tolerance = false;
};

/// Every loss suite's case loop: `run(name, inputs(mask), variant, dtype, mask_index)` for each
/// variant, each mask from `first` in steps of `step`, each dtype, named `<variant>/<mask>/<dtype>`.
template <class Options, class Inputs, class Run>
void for_each_case(const conformance_options& o, const std::vector<variant<Options>>& variants,
                   const std::vector<named_mask>& masks, Inputs&& inputs, Run&& run, std::size_t first = 0,
                   std::size_t step = 1) {
    for (const variant<Options>& v : variants)
        for (std::size_t mi = first; mi < masks.size(); mi += step)
            for (const torch::Dtype dtype : o.dtypes)
                run(v.name + "/" + masks[mi].name + "/" + dtype_label(dtype), inputs(masks[mi].mask), v, dtype, mi);
}

/// The edge cases of every loss suite: `long_variants` on two rows of `o.long_length` tokens (masks
/// drawn from `long_seed`, right padding) and `empty_mask_sum_norm` on an all-zero mask (the
/// seq-mean-token-sum-norm aggregation accepts it: loss 0). `inputs(rows, cols, mask)`.
template <class Options, class Inputs, class Run>
void run_edge_cases(const conformance_options& o, std::uint64_t long_seed,
                    const std::vector<variant<Options>>& long_variants, Inputs&& inputs, Run&& run) {
    if (o.long_length > 0) {
        generator long_gen(long_seed);
        const auto long_masks = mask_patterns(2, o.long_length, long_gen);
        for (const torch::Dtype dtype : o.dtypes)
            for (const variant<Options>& v : long_variants)
                run(v.name + "/right_padding/" + dtype_label(dtype), inputs(2, o.long_length, long_masks[1].mask), v,
                    dtype, 1);
    }
    Options empty_norm{};
    empty_norm.aggregation = {.mode = loss_aggregation::seq_mean_token_sum_norm};
    for (const torch::Dtype dtype : o.dtypes)
        run("empty_mask_sum_norm/empty/" + dtype_label(dtype),
            inputs(o.batch, o.length, torch::zeros({o.batch, o.length}, torch::kFloat64)),
            variant<Options>{"empty", empty_norm}, dtype, 0);
}

/// The error cases every loss suite shares, on inputs `in` with the bool `mask`: an all-zero
/// mask, a mask entry of 2, `in.b` one column short and `in.b` in the other float dtype.
/// `call(a, b, c, mask, b_dtype)` returns the candidate's call.
template <class Call>
void expect_shared_errors(conformance_report& report, const std::string& suffix, bool strict, const loss_inputs& in,
                          const torch::Tensor& mask, torch::Dtype dtype, Call&& call) {
    expect_throw(report, "error/empty_mask" + suffix, strict, call(in.a, in.b, in.c, torch::zeros_like(mask), dtype));
    expect_throw(report, "error/non_binary_mask" + suffix, strict,
                 call(in.a, in.b, in.c, with_value(in.mask, 0, 0, 2.0).to(torch::kInt64), dtype));
    expect_throw(report, "error/shape_mismatch" + suffix, strict,
                 call(in.a, in.b.narrow(1, 0, in.b.size(1) - 1).contiguous(), in.c, mask, dtype));
    expect_throw(report, "error/dtype_mismatch" + suffix, strict,
                 call(in.a, in.b, in.c, mask, dtype == torch::kFloat32 ? torch::kFloat64 : torch::kFloat32));
}

/// The aggregation variants every loss suite runs, as `Options` with `base` and each aggregation.
template <class Options>
std::vector<variant<Options>> aggregation_variants(std::int64_t rows, Options base = {}) {
    std::vector<variant<Options>> out;
    for (auto& [name, aggregation] : aggregation_modes(rows)) {
        base.aggregation = aggregation;
        out.push_back({name, base});
    }
    return out;
}

/// A masked position of `mask` (mask 0), or (-1, -1).
inline std::pair<std::int64_t, std::int64_t> masked_position(const torch::Tensor& mask) {
    for (std::int64_t b = 0; b < mask.size(0); ++b)
        for (std::int64_t t = 0; t < mask.size(1); ++t)
            if (mask[b][t].item<double>() == 0.0) return {b, t};
    return {-1, -1};
}

}  // namespace detail

/// Runs a policy-loss kernel through the suite (see the file comment). Variants: `default`,
/// `clip_higher`, `dual_clip`, `verl` (dual clip + ±20 clamp), `log_ratio_clamp` (tight, ±0.4,
/// so that it acts), `mask_log_ratio`, `ratio_cap`, `loss_cap`, `colossal_v2`,
/// `trl_ratio_threshold` (not exceeded), `skip_threshold` (exceeded), `gspo`, `gspo_clamped`,
/// the aggregation variants `agg_*`, `long_row`, `extreme{30,50}_{verl,clamp,unclamped,
/// trl_threshold}` and `empty_mask_sum_norm` (seq-mean-token-sum-norm accepts an empty mask: 0).
template <PolicyLossKernel K>
conformance_report check_policy_loss_kernel(const K& kernel, const conformance_options& o = {}) {
    detail::check_shape_options(o);
    conformance_report report;
    report.kernel = "policy_loss";
    detail::generator gen(o.seed);
    const std::int64_t rows = o.batch;
    const std::int64_t cols = o.length;
    using variant = detail::variant<policy_loss_options>;

    std::vector<variant> variants{
        {"default", {}},
        {"clip_higher", {.clip_low = 0.2, .clip_high = 0.28}},
        {"dual_clip", {.dual_clip = 3.0}},
        {"verl", {.dual_clip = 3.0, .log_ratio_min = -20.0, .log_ratio_max = 20.0}},
        {"log_ratio_clamp", {.log_ratio_min = -0.4, .log_ratio_max = 0.4}},
        {"mask_log_ratio", {.mask_log_ratio = true}},
        {"ratio_cap", {.ratio_cap = 2.0}},
        {"loss_cap", {.loss_cap = 0.5}},
        {"colossal_v2",
         {.ratio_cap = 10.0,
          .mask_log_ratio = true,
          .skip_threshold = 20.0,
          .aggregation = {.mode = loss_aggregation::seq_mean_token_mean,
                          .global_sequence_count = static_cast<double>(rows),
                          .token_count_epsilon = 0.0}}},
        {"trl_ratio_threshold", {.ratio_threshold = 10.0}},
        {"skip_threshold", {.skip_threshold = 1.0}},
        {"gspo",
         {.level = importance_ratio_level::sequence, .aggregation = {.mode = loss_aggregation::seq_mean_token_mean}}},
        {"gspo_clamped",
         {.dual_clip = 3.0, .log_ratio_min = -0.15, .log_ratio_max = 0.15, .level = importance_ratio_level::sequence}},
    };
    for (variant& v : detail::aggregation_variants<policy_loss_options>(rows, {.clip_high = 0.28}))
        variants.push_back(std::move(v));

    const auto run = [&](const std::string& prefix, const detail::loss_inputs& in, const variant& v, torch::Dtype dtype,
                         std::size_t mask_index) {
        const torch::Tensor old = detail::on(in.b, o, dtype);
        const torch::Tensor adv = detail::on(in.c, o, dtype);
        const torch::Tensor mask = in.mask.to(detail::mask_dtype(o, mask_index, dtype)).to(o.device);
        const torch::Tensor old_r = detail::ref_of(in.b, dtype);
        const torch::Tensor adv_r = detail::ref_of(in.c, dtype);
        detail::run_loss_case(
            report, prefix, detail::tolerance_of(o, dtype), detail::on(in.a, o, dtype), detail::ref_of(in.a, dtype),
            [&](const torch::Tensor& lp) -> policy_loss_output {
                return kernel.policy_loss(lp, old, adv, mask, v.options);
            },
            [&](const torch::Tensor& lp) { return cpu::policy_loss(lp, old_r, adv_r, in.mask, v.options); });
    };
    // in.a = log_probs, in.b = old_log_probs = log_probs − log_ratio, in.c = advantages.
    const auto inputs_with = [&](std::int64_t r, std::int64_t c, const torch::Tensor& log_ratio,
                                 const torch::Tensor& mask) {
        const torch::Tensor lp = -(gen.normal_matrix(r, c).abs() * 1.5 + 0.05);
        return detail::loss_inputs{lp, lp - log_ratio, gen.normal_matrix(r, c), mask};
    };
    const auto inputs = [&](std::int64_t r, std::int64_t c, const torch::Tensor& mask) {
        return inputs_with(r, c, gen.normal_matrix(r, c, 0.0, 0.8), mask);
    };
    const auto batch_inputs = [&](const torch::Tensor& mask) { return inputs(rows, cols, mask); };

    const std::vector<detail::named_mask> masks = detail::mask_patterns(rows, cols, gen);
    detail::for_each_case(o, variants, masks, batch_inputs, run);
    detail::run_edge_cases<policy_loss_options>(
        o, o.seed + 1, {{"long_row", {}}, {"long_row_gspo", {.level = importance_ratio_level::sequence}}}, inputs, run);
    for (const double magnitude : {30.0, 50.0}) {
        const std::string tag = "extreme" + std::to_string(static_cast<int>(magnitude));
        const std::vector<variant> extreme{
            {tag + "_verl", {.dual_clip = 3.0, .log_ratio_min = -20.0, .log_ratio_max = 20.0}},
            {tag + "_clamp", {.log_ratio_min = -20.0, .log_ratio_max = 20.0}},
            {tag + "_unclamped", {}},
            {tag + "_trl_threshold", {.ratio_threshold = 10.0}},
        };
        detail::for_each_case(  // right padding, interior holes
            o, extreme, masks,
            [&](const torch::Tensor& mask) {
                return inputs_with(rows, cols, detail::extreme_log_ratio(gen, rows, cols, magnitude), mask);
            },
            run, 1, 2);
    }

    if (!o.check_errors) return report;
    for (const torch::Dtype dtype : o.dtypes) {
        const auto in = batch_inputs(masks[3].mask);
        const auto [hb, ht] = detail::masked_position(in.mask);
        const auto call = [&](const torch::Tensor& lp, const torch::Tensor& old, const torch::Tensor& adv,
                              const torch::Tensor& mask, torch::Dtype old_dtype,
                              const policy_loss_options& options = {}) {
            return [&kernel, x1 = detail::on(lp, o, dtype), x2 = detail::on(old, o, old_dtype),
                    x3 = detail::on(adv, o, dtype), m = mask.to(o.device),
                    options] { (void)kernel.policy_loss(x1, x2, x3, m, options); };
        };
        const std::string suffix = "/" + detail::dtype_label(dtype);
        const torch::Tensor mask = in.mask.to(torch::kBool);
        const double nan = std::numeric_limits<double>::quiet_NaN();
        const double inf = std::numeric_limits<double>::infinity();
        const bool strict = o.require_rlhf_error;
        detail::expect_throw(report, "error/nan_log_probs" + suffix, strict,
                             call(detail::with_value(in.a, 0, 0, nan), in.b, in.c, mask, dtype));
        detail::expect_throw(report, "error/inf_old_log_probs" + suffix, strict,
                             call(in.a, detail::with_value(in.b, 0, 0, inf), in.c, mask, dtype));
        detail::expect_throw(report, "error/nan_advantages" + suffix, strict,
                             call(in.a, in.b, detail::with_value(in.c, 0, 0, nan), mask, dtype));
        if (hb >= 0)
            detail::expect_throw(report, "error/nan_at_masked_position" + suffix, strict,
                                 call(detail::with_value(in.a, hb, ht, nan), in.b, in.c, mask, dtype));
        detail::expect_throw(report, "error/empty_mask_seq_mean" + suffix, strict,
                             call(in.a, in.b, in.c, torch::zeros_like(mask), dtype,
                                  {.aggregation = {.mode = loss_aggregation::seq_mean_token_mean}}));
        detail::expect_shared_errors(report, suffix, strict, in, mask, dtype,
                                     [&](const auto&... args) { return call(args...); });
        detail::expect_throw(report, "error/invalid_clip_low" + suffix, strict,
                             call(in.a, in.b, in.c, mask, dtype, {.clip_low = 1.5}));
        detail::expect_throw(report, "error/invalid_dual_clip" + suffix, strict,
                             call(in.a, in.b, in.c, mask, dtype, {.dual_clip = 0.5}));
    }
    return report;
}

/// Runs a value-loss kernel through the suite. Variants: `default` (clip 0.2), `no_clip`,
/// `zero_clip`, `huber`, `huber_clip`, `trl`, `verl`, `chatllama_scale`,
/// `returns_from_advantages`, the aggregation variants `agg_*`, `long_row`, `large_errors{,_huber}`
/// and `empty_mask_sum_norm`.
template <ValueLossKernel K>
conformance_report check_value_loss_kernel(const K& kernel, const conformance_options& o = {}) {
    detail::check_shape_options(o);
    conformance_report report;
    report.kernel = "value_loss";
    detail::generator gen(o.seed + 2);
    const std::int64_t rows = o.batch;
    const std::int64_t cols = o.length;
    using variant = detail::variant<value_loss_options>;

    std::vector<variant> variants{
        {"default", {}},
        {"no_clip", {.clip_range = std::nullopt}},
        {"zero_clip", {.clip_range = 0.0}},
        {"huber", {.clip_range = std::nullopt, .huber_delta = 1.0}},
        {"huber_clip", {.clip_range = 0.2, .huber_delta = 0.5}},
        {"trl", {.clip_range = 0.2, .coef = 0.1}},
        {"verl", {.clip_range = 0.5}},
        {"chatllama_scale", {.clip_range = std::nullopt, .scale = 1.0}},
        {"returns_from_advantages", {.clip_range = 0.2, .returns_from_advantages = true}},
    };
    for (variant& v : detail::aggregation_variants<value_loss_options>(rows, {.clip_range = 0.3}))
        variants.push_back(std::move(v));

    const auto run = [&](const std::string& prefix, const detail::loss_inputs& in, const variant& v, torch::Dtype dtype,
                         std::size_t mask_index) {
        const torch::Tensor old = detail::on(in.b, o, dtype);
        const torch::Tensor ret = detail::on(in.c, o, dtype);
        const torch::Tensor mask = in.mask.to(detail::mask_dtype(o, mask_index, dtype)).to(o.device);
        const torch::Tensor old_r = detail::ref_of(in.b, dtype);
        const torch::Tensor ret_r = detail::ref_of(in.c, dtype);
        detail::run_loss_case(
            report, prefix, detail::tolerance_of(o, dtype), detail::on(in.a, o, dtype), detail::ref_of(in.a, dtype),
            [&](const torch::Tensor& x) -> value_loss_output {
                return kernel.value_loss(x, old, ret, mask, v.options);
            },
            [&](const torch::Tensor& x) { return cpu::value_loss(x, old_r, ret_r, in.mask, v.options); });
    };
    // in.a = values, in.b = old_values, in.c = returns (`error_scale` away from the old values).
    const auto inputs_with = [&](std::int64_t r, std::int64_t c, double error_scale, const torch::Tensor& mask) {
        const torch::Tensor old = gen.normal_matrix(r, c);
        return detail::loss_inputs{old + gen.normal_matrix(r, c, 0.0, 0.3), old,
                                   old + gen.normal_matrix(r, c, 0.0, error_scale), mask};
    };
    const auto inputs = [&](std::int64_t r, std::int64_t c, const torch::Tensor& mask) {
        return inputs_with(r, c, 1.0, mask);
    };
    const auto batch_inputs = [&](const torch::Tensor& mask) { return inputs(rows, cols, mask); };

    const std::vector<detail::named_mask> masks = detail::mask_patterns(rows, cols, gen);
    detail::for_each_case(o, variants, masks, batch_inputs, run);
    detail::run_edge_cases<value_loss_options>(o, o.seed + 3, {{"long_row", {}}}, inputs, run);
    detail::for_each_case(  // right padding, interior holes
        o, std::vector<variant>{{"large_errors", {}}, {"large_errors_huber", {.clip_range = 0.2, .huber_delta = 1.0}}},
        masks, [&](const torch::Tensor& mask) { return inputs_with(rows, cols, 1e3, mask); }, run, 1, 2);

    if (!o.check_errors) return report;
    for (const torch::Dtype dtype : o.dtypes) {
        const auto in = batch_inputs(masks[3].mask);
        const auto [hb, ht] = detail::masked_position(in.mask);
        const auto call = [&](const torch::Tensor& v, const torch::Tensor& old, const torch::Tensor& ret,
                              const torch::Tensor& mask, torch::Dtype old_dtype,
                              const value_loss_options& options = {}) {
            return [&kernel, x1 = detail::on(v, o, dtype), x2 = detail::on(old, o, old_dtype),
                    x3 = detail::on(ret, o, dtype), m = mask.to(o.device),
                    options] { (void)kernel.value_loss(x1, x2, x3, m, options); };
        };
        const std::string suffix = "/" + detail::dtype_label(dtype);
        const torch::Tensor mask = in.mask.to(torch::kBool);
        const double nan = std::numeric_limits<double>::quiet_NaN();
        const double inf = std::numeric_limits<double>::infinity();
        const bool strict = o.require_rlhf_error;
        detail::expect_throw(report, "error/nan_values" + suffix, strict,
                             call(detail::with_value(in.a, 0, 0, nan), in.b, in.c, mask, dtype));
        detail::expect_throw(report, "error/inf_old_values" + suffix, strict,
                             call(in.a, detail::with_value(in.b, 0, 0, -inf), in.c, mask, dtype));
        detail::expect_throw(report, "error/nan_returns" + suffix, strict,
                             call(in.a, in.b, detail::with_value(in.c, 0, 0, nan), mask, dtype));
        if (hb >= 0)
            detail::expect_throw(report, "error/nan_at_masked_position" + suffix, strict,
                                 call(in.a, in.b, detail::with_value(in.c, hb, ht, nan), mask, dtype));
        detail::expect_shared_errors(report, suffix, strict, in, mask, dtype,
                                     [&](const auto&... args) { return call(args...); });
        detail::expect_throw(report, "error/invalid_clip_range" + suffix, strict,
                             call(in.a, in.b, in.c, mask, dtype, {.clip_range = -1.0}));
        detail::expect_throw(report, "error/invalid_huber_delta" + suffix, strict,
                             call(in.a, in.b, in.c, mask, dtype, {.huber_delta = 0.0}));
    }
    return report;
}

/// Runs a KL-in-loss kernel through the suite. Variants: `k1`, `abs`, `k2`, `k3`, `verl_k3`
/// (±20 / ±10 clamps), `verl_k3_plus` (straight-through), `k1_plus`, `openrlhf_k2` (float32
/// log-ratio; compared at the float32 tolerance, since autograd rounds the gradient through the
/// cast), `log_ratio_clamp`, `value_clamp` (tight, so that they act), `coef`, the aggregation
/// variants `agg_*`, `long_row`, `extreme{30,50}_{verl_k3,verl_k3_plus,k2}`, `empty_mask_sum_norm`
/// and, when the kernel satisfies `WeightedKlLossKernel`, `weighted_{k3,k1,verl_k3_plus}`.
template <KlLossKernel K>
conformance_report check_kl_loss_kernel(const K& kernel, const conformance_options& o = {}) {
    detail::check_shape_options(o);
    conformance_report report;
    report.kernel = "kl_loss";
    detail::generator gen(o.seed + 4);
    const std::int64_t rows = o.batch;
    const std::int64_t cols = o.length;
    using variant = detail::variant<kl_loss_options>;

    std::vector<variant> variants{
        {"k1", {.kl = {.estimator = kl_estimator::k1}}},
        {"abs", {.kl = {.estimator = kl_estimator::abs}}},
        {"k2", {.kl = {.estimator = kl_estimator::k2}}},
        {"k3", {.kl = {.estimator = kl_estimator::k3}}},
        {"verl_k3", {.kl = kl_preset::verl(kl_estimator::k3)}},
        {"verl_k3_plus", {.kl = kl_preset::verl(kl_estimator::k3), .straight_through = true}},
        {"k1_plus", {.kl = {.estimator = kl_estimator::k1}, .straight_through = true}},
        {"openrlhf_k2", {.kl = kl_preset::openrlhf(kl_estimator::k2)}, true},
        {"log_ratio_clamp", {.kl = {.estimator = kl_estimator::k2, .log_ratio_clamp = 0.3}}},
        {"value_clamp", {.kl = {.estimator = kl_estimator::k3, .value_clamp = 0.05}}},
        {"coef", {.coef = 0.001}},
    };
    for (variant& v : detail::aggregation_variants<kl_loss_options>(rows)) variants.push_back(std::move(v));

    // in.a = log_probs, in.b = ref_log_probs, in.c = old_log_probs (weighted form only).
    const auto run_form = [&](bool weighted) {
        return [&, weighted](const std::string& prefix, const detail::loss_inputs& in, const variant& v,
                             torch::Dtype dtype, std::size_t mask_index) {
            const torch::Tensor ref = detail::on(in.b, o, dtype);
            const torch::Tensor old = detail::on(in.c, o, dtype);
            const torch::Tensor mask = in.mask.to(detail::mask_dtype(o, mask_index, dtype)).to(o.device);
            const torch::Tensor ref_r = detail::ref_of(in.b, dtype);
            const torch::Tensor old_r = detail::ref_of(in.c, dtype);
            const double tolerance = v.float_tolerance ? o.float32_tolerance : detail::tolerance_of(o, dtype);
            detail::run_loss_case(
                report, prefix, tolerance, detail::on(in.a, o, dtype), detail::ref_of(in.a, dtype),
                [&](const torch::Tensor& lp) -> kl_loss_output {
                    if constexpr (WeightedKlLossKernel<K>) {
                        if (weighted) return kernel.kl_loss(lp, ref, old, mask, v.options);
                    }
                    return kernel.kl_loss(lp, ref, mask, v.options);
                },
                [&](const torch::Tensor& lp) {
                    return weighted ? cpu::kl_loss(lp, ref_r, old_r, in.mask, v.options)
                                    : cpu::kl_loss(lp, ref_r, in.mask, v.options);
                });
        };
    };
    const auto run = run_form(false);
    const auto inputs_with = [&](std::int64_t r, std::int64_t c, const torch::Tensor& log_ratio,
                                 const torch::Tensor& mask) {
        const torch::Tensor lp = -(gen.normal_matrix(r, c).abs() * 1.5 + 0.05);
        return detail::loss_inputs{lp, lp - log_ratio, lp - gen.normal_matrix(r, c, 0.0, 0.2), mask};
    };
    const auto inputs = [&](std::int64_t r, std::int64_t c, const torch::Tensor& mask) {
        return inputs_with(r, c, gen.normal_matrix(r, c, 0.0, 0.5), mask);
    };
    const auto batch_inputs = [&](const torch::Tensor& mask) { return inputs(rows, cols, mask); };

    const std::vector<detail::named_mask> masks = detail::mask_patterns(rows, cols, gen);
    detail::for_each_case(o, variants, masks, batch_inputs, run);
    if constexpr (WeightedKlLossKernel<K>) {
        const std::vector<variant> weighted{
            {"weighted_k3", {.kl = {.estimator = kl_estimator::k3}}},
            {"weighted_k1", {.kl = {.estimator = kl_estimator::k1}}},
            {"weighted_verl_k3_plus", {.kl = kl_preset::verl(kl_estimator::k3), .straight_through = true}},
        };
        detail::for_each_case(o, weighted, masks, batch_inputs, run_form(true));
    } else {
        report.notes.push_back(
            "the kernel has no importance-weighted kl_loss(log_probs, ref, old, mask, options): weighted cases "
            "skipped");
    }
    detail::run_edge_cases<kl_loss_options>(o, o.seed + 5, {{"long_row", variants[4].options}}, inputs, run);
    for (const double magnitude : {30.0, 50.0}) {
        const std::string tag = "extreme" + std::to_string(static_cast<int>(magnitude));
        const std::vector<variant> extreme{
            {tag + "_verl_k3", {.kl = kl_preset::verl(kl_estimator::k3)}},
            {tag + "_verl_k3_plus", {.kl = kl_preset::verl(kl_estimator::k3), .straight_through = true}},
            {tag + "_k2", {.kl = {.estimator = kl_estimator::k2}}},
        };
        detail::for_each_case(  // right padding, interior holes
            o, extreme, masks,
            [&](const torch::Tensor& mask) {
                return inputs_with(rows, cols, detail::extreme_log_ratio(gen, rows, cols, magnitude), mask);
            },
            run, 1, 2);
    }

    if (!o.check_errors) return report;
    for (const torch::Dtype dtype : o.dtypes) {
        const auto in = batch_inputs(masks[3].mask);
        const auto [hb, ht] = detail::masked_position(in.mask);
        const auto call = [&](const torch::Tensor& lp, const torch::Tensor& ref, const torch::Tensor& /*old*/,
                              const torch::Tensor& mask, torch::Dtype ref_dtype, const kl_loss_options& options = {}) {
            return [&kernel, x1 = detail::on(lp, o, dtype), x2 = detail::on(ref, o, ref_dtype), m = mask.to(o.device),
                    options] { (void)kernel.kl_loss(x1, x2, m, options); };
        };
        const std::string suffix = "/" + detail::dtype_label(dtype);
        const torch::Tensor mask = in.mask.to(torch::kBool);
        const double nan = std::numeric_limits<double>::quiet_NaN();
        const double inf = std::numeric_limits<double>::infinity();
        const bool strict = o.require_rlhf_error;
        detail::expect_throw(report, "error/nan_log_probs" + suffix, strict,
                             call(detail::with_value(in.a, 0, 0, nan), in.b, in.c, mask, dtype));
        detail::expect_throw(report, "error/inf_ref_log_probs" + suffix, strict,
                             call(in.a, detail::with_value(in.b, 0, 0, -inf), in.c, mask, dtype));
        if (hb >= 0)
            detail::expect_throw(report, "error/nan_at_masked_position" + suffix, strict,
                                 call(in.a, detail::with_value(in.b, hb, ht, nan), in.c, mask, dtype));
        detail::expect_shared_errors(report, suffix, strict, in, mask, dtype,
                                     [&](const auto&... args) { return call(args...); });
        detail::expect_throw(
            report, "error/invalid_log_ratio_clamp" + suffix, strict,
            call(in.a, in.b, in.c, mask, dtype, {.kl = {.estimator = kl_estimator::k3, .log_ratio_clamp = -1.0}}));
        if constexpr (WeightedKlLossKernel<K>) {
            detail::expect_throw(report, "error/weighted_nan_old_log_probs" + suffix, strict, [&] {
                (void)kernel.kl_loss(detail::on(in.a, o, dtype), detail::on(in.b, o, dtype),
                                     detail::on(detail::with_value(in.c, 0, 0, nan), o, dtype), mask.to(o.device),
                                     kl_loss_options{});
            });
        }
    }
    return report;
}

/// Runs a log-prob kernel through the suite: log-probs, entropies and the gradient of
/// `Σ g·logprobs + h·entropy` (random upstream weights) w.r.t. the logits. Variants (each with
/// every mask pattern and without a mask, `none`): `plain`, `temperature` (τ = 0.7), `offset`
/// (logits around 500: a kernel must subtract the maximum), `neg_inf` (some -inf logits, never
/// at the target token), `masked_garbage` (masked positions hold token -100 and logits 1e30),
/// `long_vocab`.
template <LogProbKernel K>
conformance_report check_logprob_kernel(const K& kernel, const conformance_options& o = {}) {
    detail::check_shape_options(o);
    conformance_report report;
    report.kernel = "logprobs";
    detail::generator gen(o.seed + 6);
    const std::int64_t rows = o.batch;
    const std::int64_t cols = o.length;

    const auto make = [&](std::int64_t r, std::int64_t c, std::int64_t v, double offset, double sd,
                          const torch::Tensor& mask) {
        detail::logits_case out;
        out.logits = torch::empty({r, c, v}, torch::kFloat64);
        out.tokens = torch::empty({r, c}, torch::kInt64);
        double* z = out.logits.data_ptr<double>();
        std::int64_t* y = out.tokens.data_ptr<std::int64_t>();
        for (std::int64_t i = 0; i < r * c * v; ++i) z[i] = offset + gen.normal(0.0, sd);
        for (std::int64_t i = 0; i < r * c; ++i) y[i] = gen.integer(0, v - 1);
        out.mask = mask;
        return out;
    };
    const auto run = [&](const std::string& prefix, const detail::logits_case& in, double temperature,
                         torch::Dtype dtype, std::size_t mask_index) {
        const double tolerance = detail::tolerance_of(o, dtype);
        const logits_options options{.temperature = temperature};
        const torch::Tensor z = in.logits.to(dtype).to(o.device).requires_grad_(true);
        const torch::Tensor zr = in.logits.to(dtype).to(torch::kFloat64).requires_grad_(true);
        const torch::Tensor tokens = in.tokens.to(o.device);
        const torch::Tensor mask =
            in.mask.defined() ? in.mask.to(detail::mask_dtype(o, mask_index, dtype)).to(o.device) : torch::Tensor();
        const torch::Tensor g_lp = gen.normal_matrix(in.tokens.size(0), in.tokens.size(1));
        const torch::Tensor g_h = gen.normal_matrix(in.tokens.size(0), in.tokens.size(1));

        const logprobs_result ref = ::rlhf::libtorch::logprobs_from_logits(zr, in.tokens, in.mask, options);
        const torch::Tensor ref_grad = detail::gradient_of((ref.logprobs * g_lp).sum() + (ref.entropy * g_h).sum(), zr);
        logprobs_result out;
        try {
            out = kernel.logprobs_from_logits(z, tokens, mask, options);
        } catch (const std::exception& e) {
            const std::string detail = "the kernel threw: " + detail::first_line(e.what());
            const double inf = std::numeric_limits<double>::infinity();
            for (const char* what : {"/logprobs", "/entropy", "/grad"})
                report.checks.push_back({prefix + what, false, detail, inf});
            return;
        }
        detail::record(report, prefix + "/logprobs", out.logprobs, ref.logprobs, tolerance, false);
        detail::record(report, prefix + "/entropy", out.entropy, ref.entropy, tolerance, false);
        try {
            const torch::Tensor objective = (out.logprobs * g_lp.to(out.logprobs.options())).sum() +
                                            (out.entropy * g_h.to(out.entropy.options())).sum();
            if (!objective.requires_grad()) {
                report.checks.push_back({prefix + "/grad", false, "the outputs do not require grad (no autograd graph)",
                                         std::numeric_limits<double>::infinity()});
                return;
            }
            detail::record(report, prefix + "/grad", detail::gradient_of(objective, z), ref_grad, tolerance, false);
        } catch (const std::exception& e) {
            report.checks.push_back({prefix + "/grad", false, "backward threw: " + detail::first_line(e.what()),
                                     std::numeric_limits<double>::infinity()});
        }
    };

    std::vector<detail::named_mask> masks = detail::mask_patterns(rows, cols, gen);
    masks.push_back({"none", torch::Tensor()});
    for (std::size_t mi = 0; mi < masks.size(); ++mi)
        for (const torch::Dtype dtype : o.dtypes) {
            const std::string suffix = "/" + masks[mi].name + "/" + detail::dtype_label(dtype);
            run("plain" + suffix, make(rows, cols, o.vocab, 0.0, 2.0, masks[mi].mask), 1.0, dtype, mi);
            run("temperature" + suffix, make(rows, cols, o.vocab, 0.0, 2.0, masks[mi].mask), 0.7, dtype, mi);
            run("offset" + suffix, make(rows, cols, o.vocab, 500.0, 3.0, masks[mi].mask), 1.0, dtype, mi);
            detail::logits_case with_inf = make(rows, cols, o.vocab, 0.0, 2.0, masks[mi].mask);
            for (std::int64_t b = 0; b < rows; ++b)
                for (std::int64_t t = 0; t < cols; ++t) {
                    const std::int64_t y = with_inf.tokens[b][t].item<std::int64_t>();
                    with_inf.logits[b][t][(y + 1 + b) % o.vocab] = -std::numeric_limits<double>::infinity();
                }
            run("neg_inf" + suffix, with_inf, 1.0, dtype, mi);
            if (masks[mi].mask.defined() && masks[mi].mask.min().item<double>() == 0.0) {
                detail::logits_case garbage = make(rows, cols, o.vocab, 0.0, 2.0, masks[mi].mask);
                const torch::Tensor invalid = masks[mi].mask == 0;
                garbage.tokens.masked_fill_(invalid, -100);
                garbage.logits.masked_fill_(invalid.unsqueeze(-1), 1e30);
                run("masked_garbage" + suffix, garbage, 1.0, dtype, mi);
            }
        }
    if (o.long_vocab > 0) {
        detail::generator long_gen(o.seed + 7);
        const auto long_masks = detail::mask_patterns(2, 3, long_gen);
        for (const torch::Dtype dtype : o.dtypes)
            run("long_vocab/right_padding/" + detail::dtype_label(dtype),
                make(2, 3, o.long_vocab, 0.0, 3.0, long_masks[1].mask), 0.9, dtype, 1);
    }

    if (!o.check_errors) return report;
    for (const torch::Dtype dtype : o.dtypes) {
        const detail::logits_case in = make(rows, cols, o.vocab, 0.0, 2.0, masks[0].mask);
        const std::string suffix = "/" + detail::dtype_label(dtype);
        const bool strict = o.require_rlhf_error;
        const auto call = [&](const torch::Tensor& logits, const torch::Tensor& tokens, double temperature = 1.0) {
            return [&kernel, z = logits.to(dtype).to(o.device), y = tokens.to(o.device), temperature] {
                (void)kernel.logprobs_from_logits(z, y, torch::Tensor(), logits_options{.temperature = temperature});
            };
        };
        detail::expect_throw(report, "error/logits_rank" + suffix, strict, call(in.logits.select(2, 0), in.tokens));
        detail::expect_throw(report, "error/tokens_rank" + suffix, strict, call(in.logits, in.tokens.unsqueeze(-1)));
        if (!o.strict_logprob_errors) continue;
        const double nan = std::numeric_limits<double>::quiet_NaN();
        torch::Tensor bad = in.logits.clone();
        bad[0][0][0] = nan;
        detail::expect_throw(report, "error/nan_logits" + suffix, strict, call(bad, in.tokens));
        bad = in.logits.clone();
        bad[0][1][1] = std::numeric_limits<double>::infinity();
        detail::expect_throw(report, "error/pos_inf_logits" + suffix, strict, call(bad, in.tokens));
        bad = in.logits.clone();
        bad[1][0].fill_(-std::numeric_limits<double>::infinity());
        detail::expect_throw(report, "error/all_neg_inf_row" + suffix, strict, call(bad, in.tokens));
        torch::Tensor tokens = in.tokens.clone();
        tokens[0][0] = o.vocab;
        detail::expect_throw(report, "error/token_out_of_range" + suffix, strict, call(in.logits, tokens));
        tokens = in.tokens.clone();
        tokens[0][0] = -1;
        detail::expect_throw(report, "error/negative_token" + suffix, strict, call(in.logits, tokens));
        detail::expect_throw(report, "error/invalid_temperature" + suffix, strict, call(in.logits, in.tokens, 0.0));
    }
    return report;
}

/// Runs every suite a `LossKernels` type qualifies for; check names are prefixed with
/// `policy_loss/`, `value_loss/`, `kl_loss/` and `logprobs/`.
template <LossKernels K>
conformance_report check_kernels(const K& kernel, const conformance_options& o = {}) {
    conformance_report all;
    const auto add = [&all](conformance_report part) {
        for (check_result& c : part.checks) c.name = part.kernel + "/" + c.name;
        all.merge(part);
    };
    add(check_policy_loss_kernel(kernel, o));
    add(check_value_loss_kernel(kernel, o));
    add(check_kl_loss_kernel(kernel, o));
    add(check_logprob_kernel(kernel, o));
    return all;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::libtorch::conformance
