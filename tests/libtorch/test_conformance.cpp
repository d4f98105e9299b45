// The kernel concepts (rlhf/libtorch/kernel_concepts.hpp) and the conformance suite
// (rlhf/libtorch/conformance.hpp): the library's kernel sets pass every check, and kernels that
// are wrong in one known way fail exactly the checks that cover it (the suite can fail).
#include <doctest/doctest.h>

#include <torch/autograd.h>
#include <torch/types.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "rlhf/libtorch/conformance.hpp"
#include "rlhf/libtorch/kernel_concepts.hpp"

namespace {

namespace lt = rlhf::libtorch;
namespace cf = rlhf::libtorch::conformance;

// ---- concept satisfaction ------------------------------------------------------------------

static_assert(lt::PolicyLossKernel<lt::default_kernels> && lt::ValueLossKernel<lt::default_kernels> &&
              lt::KlLossKernel<lt::default_kernels> && lt::WeightedKlLossKernel<lt::default_kernels> &&
              lt::LogProbKernel<lt::default_kernels> && lt::LossKernels<lt::default_kernels>);
static_assert(lt::PolicyLossKernel<lt::torch_ops_kernels> && lt::ValueLossKernel<lt::torch_ops_kernels> &&
              lt::KlLossKernel<lt::torch_ops_kernels> && lt::WeightedKlLossKernel<lt::torch_ops_kernels> &&
              lt::LogProbKernel<lt::torch_ops_kernels> && lt::LossKernels<lt::torch_ops_kernels>);

// A policy-loss kernel only.
struct policy_only {
    lt::policy_loss_output policy_loss(const torch::Tensor& lp, const torch::Tensor& old, const torch::Tensor& adv,
                                       const torch::Tensor& mask, const rlhf::policy_loss_options& o) const {
        return lt::policy_loss(lp, old, adv, mask, o);
    }
};
static_assert(lt::PolicyLossKernel<policy_only>);
static_assert(!lt::ValueLossKernel<policy_only> && !lt::KlLossKernel<policy_only> && !lt::LogProbKernel<policy_only>);
static_assert(!lt::LossKernels<policy_only>);

// Missing the options parameter.
struct policy_without_options {
    lt::policy_loss_output policy_loss(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                       const torch::Tensor&) const {
        return {};
    }
};
static_assert(!lt::PolicyLossKernel<policy_without_options>);

// Returns a bare tensor (no statistics).
struct policy_returning_tensor {
    torch::Tensor policy_loss(const torch::Tensor& lp, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                              const rlhf::policy_loss_options&) const {
        return lp.sum();
    }
};
static_assert(!lt::PolicyLossKernel<policy_returning_tensor>);

// A non-const member: kernels are called through a const reference.
struct value_non_const {
    lt::value_loss_output value_loss(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                     const torch::Tensor&, const rlhf::value_loss_options&) {
        return {};
    }
};
static_assert(!lt::ValueLossKernel<value_non_const>);

// Value loss with the policy-loss options type.
struct value_wrong_options {
    lt::value_loss_output value_loss(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                     const torch::Tensor&, const rlhf::policy_loss_options&) const {
        return {};
    }
};
static_assert(!lt::ValueLossKernel<value_wrong_options>);

// KL without the importance-weighted overload: a KlLossKernel, not a WeightedKlLossKernel.
struct kl_unweighted {
    lt::kl_loss_output kl_loss(const torch::Tensor& lp, const torch::Tensor& ref, const torch::Tensor& mask,
                               const rlhf::kl_loss_options& o) const {
        return lt::kl_loss(lp, ref, mask, o);
    }
};
static_assert(lt::KlLossKernel<kl_unweighted> && !lt::WeightedKlLossKernel<kl_unweighted>);

// Log-probs without the entropy (returns one tensor).
struct logprob_without_entropy {
    torch::Tensor logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor&, const torch::Tensor&,
                                       const rlhf::logits_options&) const {
        return logits;
    }
};
static_assert(!lt::LogProbKernel<logprob_without_entropy>);

// ---- deliberately wrong kernels --------------------------------------------------------------

// Forgets the clip: the plain importance-weighted surrogate −ρ·A.
struct unclipped_policy {
    lt::policy_loss_output policy_loss(const torch::Tensor& lp, const torch::Tensor& old, const torch::Tensor& adv,
                                       const torch::Tensor& mask, rlhf::policy_loss_options o) const {
        o.clip_low = 1.0;
        o.clip_high = 1e12;
        return lt::policy_loss(lp, old, adv, mask, o);
    }
};

// Right value, gradient scaled by 2.
struct doubled_gradient_policy {
    lt::policy_loss_output policy_loss(const torch::Tensor& lp, const torch::Tensor& old, const torch::Tensor& adv,
                                       const torch::Tensor& mask, const rlhf::policy_loss_options& o) const {
        lt::policy_loss_output out = lt::policy_loss(lp, old, adv, mask, o);
        out.loss = 2.0 * out.loss - out.loss.detach();
        return out;
    }
};

// Replaces NaN/Inf by finite numbers instead of rejecting them.
struct nan_tolerant_policy {
    lt::policy_loss_output policy_loss(const torch::Tensor& lp, const torch::Tensor& old, const torch::Tensor& adv,
                                       const torch::Tensor& mask, const rlhf::policy_loss_options& o) const {
        return lt::policy_loss(torch::nan_to_num(lp, 0.0, 1.0, -1.0), torch::nan_to_num(old, 0.0, 1.0, -1.0),
                               torch::nan_to_num(adv, 0.0, 1.0, -1.0), mask, o);
    }
};

// Ignores `clip_range`.
struct unclipped_value {
    lt::value_loss_output value_loss(const torch::Tensor& v, const torch::Tensor& old, const torch::Tensor& ret,
                                     const torch::Tensor& mask, rlhf::value_loss_options o) const {
        o.clip_range = std::nullopt;
        return lt::value_loss(v, old, ret, mask, o);
    }
};

// Ignores `straight_through`: the value is right, the gradient is that of the estimator.
struct no_straight_through_kl {
    lt::kl_loss_output kl_loss(const torch::Tensor& lp, const torch::Tensor& ref, const torch::Tensor& mask,
                               rlhf::kl_loss_options o) const {
        o.straight_through = false;
        return lt::kl_loss(lp, ref, mask, o);
    }
};

// Ignores the temperature.
struct no_temperature_logprobs {
    lt::logprobs_result logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor& tokens,
                                             const torch::Tensor& mask, const rlhf::logits_options&) const {
        return lt::logprobs_from_logits(logits, tokens, mask, {});
    }
};

// Throws on every call.
struct throwing_value {
    lt::value_loss_output value_loss(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                     const torch::Tensor&, const rlhf::value_loss_options&) const {
        throw std::runtime_error("not implemented");
    }
};

static_assert(lt::PolicyLossKernel<unclipped_policy> && lt::PolicyLossKernel<doubled_gradient_policy> &&
              lt::PolicyLossKernel<nan_tolerant_policy> && lt::ValueLossKernel<unclipped_value> &&
              lt::KlLossKernel<no_straight_through_kl> && lt::LogProbKernel<no_temperature_logprobs> &&
              lt::ValueLossKernel<throwing_value>);

// Float64 only and no long cases: the wrong kernels fail in every dtype alike.
const cf::conformance_options quick{.dtypes = {torch::kFloat64}, .long_length = 0, .long_vocab = 0};

template <class Report>
void require_passed(const Report& report) {
    INFO(report.summary(/*failures_only=*/true));
    CHECK(report.failure_count() == 0);
    CHECK(report.passed());
}

}  // namespace

TEST_CASE_TEMPLATE("conformance: a library kernel set passes the policy-loss suite" * doctest::test_suite("unit"), K,
                   lt::default_kernels, lt::torch_ops_kernels) {
    const cf::conformance_report report = cf::check_policy_loss_kernel(K{});
    require_passed(report);
    // Every family of cases ran.
    for (const char* name :
         {"default/full/float32/loss", "default/left_padding/float64/grad", "clip_higher/interior_holes/float32/stats",
          "dual_clip/empty_rows/float64/grad", "verl/right_padding/float32/loss", "gspo/empty_rows/float64/grad",
          "agg_seq_mean_token_sum_norm/full/float64/loss", "long_row/right_padding/float32/grad",
          "extreme50_unclamped/interior_holes/float32/grad", "extreme30_trl_threshold/right_padding/float64/stats",
          "empty_mask_sum_norm/empty/float64/loss", "error/nan_log_probs/float32", "error/empty_mask/float64",
          "error/nan_at_masked_position/float64", "error/invalid_dual_clip/float32"})
        CHECK_MESSAGE(report.find(name) != nullptr, name);
}

TEST_CASE_TEMPLATE("conformance: a library kernel set passes the value-loss suite" * doctest::test_suite("unit"), K,
                   lt::default_kernels, lt::torch_ops_kernels) {
    const cf::conformance_report report = cf::check_value_loss_kernel(K{});
    require_passed(report);
    for (const char* name :
         {"default/full/float32/loss", "huber_clip/interior_holes/float64/grad",
          "returns_from_advantages/left_padding/float32/stats", "large_errors_huber/right_padding/float32/grad",
          "error/nan_returns/float64", "error/invalid_huber_delta/float32"})
        CHECK_MESSAGE(report.find(name) != nullptr, name);
}

TEST_CASE_TEMPLATE("conformance: a library kernel set passes the KL-loss suite" * doctest::test_suite("unit"), K,
                   lt::default_kernels, lt::torch_ops_kernels) {
    const cf::conformance_report report = cf::check_kl_loss_kernel(K{});
    require_passed(report);
    CHECK(report.notes.empty());  // the weighted overload is there
    for (const char* name :
         {"abs/full/float32/grad", "verl_k3_plus/empty_rows/float64/grad", "openrlhf_k2/left_padding/float64/grad",
          "weighted_k3/interior_holes/float32/grad", "extreme50_verl_k3/interior_holes/float32/loss",
          "error/weighted_nan_old_log_probs/float64"})
        CHECK_MESSAGE(report.find(name) != nullptr, name);
}

TEST_CASE_TEMPLATE("conformance: a library kernel set passes the log-prob suite" * doctest::test_suite("unit"), K,
                   lt::default_kernels, lt::torch_ops_kernels) {
    const cf::conformance_report report = cf::check_logprob_kernel(K{});
    require_passed(report);
    for (const char* name :
         {"plain/none/float32/grad", "temperature/left_padding/float64/entropy", "offset/full/float32/logprobs",
          "neg_inf/interior_holes/float64/grad", "masked_garbage/empty_rows/float32/grad",
          "long_vocab/right_padding/float32/grad", "error/logits_rank/float64"})
        CHECK_MESSAGE(report.find(name) != nullptr, name);
    CHECK(report.find("error/nan_logits/float64") == nullptr);  // strict checks are opt-in
}

TEST_CASE("conformance: strict log-prob errors - the fused kernel rejects bad values and the composed one does not" *
          doctest::test_suite("unit")) {
    cf::conformance_options strict = quick;
    strict.strict_logprob_errors = true;
    strict.require_rlhf_error = true;
    require_passed(cf::check_logprob_kernel(lt::default_kernels{}, strict));

    strict.require_rlhf_error = false;
    const cf::conformance_report composed = cf::check_logprob_kernel(lt::torch_ops_kernels{}, strict);
    CHECK_FALSE(composed.passed());
    CHECK(composed.has_failure("error/nan_logits/float64"));
    CHECK(composed.has_failure("error/invalid_temperature/float64"));
    CHECK(composed.passed_all("/logprobs"));
    CHECK(composed.passed_all("/grad"));
}

TEST_CASE("conformance: check_kernels runs every suite with prefixed names and rlhf::error required" *
          doctest::test_suite("unit")) {
    cf::conformance_options o = quick;
    o.require_rlhf_error = true;
    const cf::conformance_report report = cf::check_kernels(lt::default_kernels{}, o);
    require_passed(report);
    CHECK(report.find("policy_loss/default/full/float64/grad") != nullptr);
    CHECK(report.find("value_loss/error/empty_mask/float64") != nullptr);
    CHECK(report.find("kl_loss/k3/full/float64/loss") != nullptr);
    CHECK(report.find("logprobs/plain/none/float64/entropy") != nullptr);
    CHECK(report.kernel == "policy_loss, value_loss, kl_loss, logprobs");
}

TEST_CASE("conformance: a policy loss without the clip fails the clipped cases" * doctest::test_suite("unit")) {
    const cf::conformance_report report = cf::check_policy_loss_kernel(unclipped_policy{}, quick);
    CHECK_FALSE(report.passed());
    CHECK(report.has_failure("default/full/float64/loss"));
    CHECK(report.has_failure("default/full/float64/grad"));
    CHECK(report.has_failure("default/full/float64/stats"));  // clip_fraction is 0
    CHECK(report.has_failure("clip_higher/right_padding/float64/loss"));
    CHECK(report.has_failure("gspo/interior_holes/float64/loss"));
    // The error behaviour is the reference's, except for the clip option it overrides.
    CHECK(report.passed_all("error/nan_log_probs"));
    CHECK(report.passed_all("error/empty_mask"));
    CHECK(report.has_failure("error/invalid_clip_low/float64"));
    CHECK(report.passed_all("error/invalid_dual_clip"));
    const cf::check_result* c = report.find("default/full/float64/loss");
    REQUIRE(c != nullptr);
    CHECK(c->max_error > 1e-3);
    CHECK(c->detail.find("reference") != std::string::npos);
}

TEST_CASE("conformance: a policy loss with a doubled gradient fails exactly the gradient checks" *
          doctest::test_suite("unit")) {
    const cf::conformance_report report = cf::check_policy_loss_kernel(doubled_gradient_policy{}, quick);
    CHECK_FALSE(report.passed());
    CHECK(report.passed_all("/loss"));
    CHECK(report.passed_all("/stats"));
    CHECK(report.passed_all("error/"));
    CHECK(report.has_failure("default/full/float64/grad"));
    CHECK(report.has_failure("verl/left_padding/float64/grad"));
    const cf::check_result* c = report.find("default/full/float64/grad");
    REQUIRE(c != nullptr);
    CHECK(c->max_error == doctest::Approx(1.0).epsilon(1e-6));  // |2g − g| / max|g| at the largest entry
    // A zero gradient (the TRL threshold zeroes it) stays zero when doubled.
    CHECK(report.passed_all("extreme30_trl_threshold/right_padding/float64/grad"));
}

TEST_CASE("conformance: a policy loss that accepts NaN fails the error checks" * doctest::test_suite("unit")) {
    const cf::conformance_report report = cf::check_policy_loss_kernel(nan_tolerant_policy{}, quick);
    CHECK_FALSE(report.passed());
    CHECK(report.has_failure("error/nan_log_probs/float64"));
    CHECK(report.has_failure("error/inf_old_log_probs/float64"));
    CHECK(report.has_failure("error/nan_advantages/float64"));
    CHECK(report.has_failure("error/nan_at_masked_position/float64"));
    CHECK(report.failure_count() == 4);
    CHECK(report.find("error/nan_log_probs/float64")->detail.find("returned without an error") != std::string::npos);
    const std::string table = report.summary(/*failures_only=*/true);
    CHECK(table.find("FAIL    error/nan_advantages/float64") != std::string::npos);
    CHECK(table.find("pass ") == std::string::npos);
    CHECK(report.summary().find("pass    default/full/float64/loss") != std::string::npos);
}

TEST_CASE("conformance: a value loss that ignores clip_range fails the clipped cases only" *
          doctest::test_suite("unit")) {
    const cf::conformance_report report = cf::check_value_loss_kernel(unclipped_value{}, quick);
    CHECK_FALSE(report.passed());
    CHECK(report.has_failure("default/full/float64/loss"));
    CHECK(report.has_failure("verl/interior_holes/float64/grad"));
    CHECK(report.passed_all("no_clip/"));
    CHECK(report.passed_all("huber/"));
    CHECK(report.passed_all("chatllama_scale/"));
    CHECK(report.has_failure("error/invalid_clip_range/float64"));  // the option is never validated
}

TEST_CASE("conformance: a KL loss without the straight-through gradient fails those gradients only" *
          doctest::test_suite("unit")) {
    const cf::conformance_report report = cf::check_kl_loss_kernel(no_straight_through_kl{}, quick);
    CHECK_FALSE(report.passed());
    CHECK(report.has_failure("verl_k3_plus/full/float64/grad"));
    CHECK(report.has_failure("k1_plus/left_padding/float64/grad"));
    CHECK(report.passed_all("verl_k3_plus/full/float64/loss"));
    CHECK(report.passed_all("/loss"));
    CHECK(report.passed_all("k3/"));
    CHECK(report.find("weighted_k3/full/float64/loss") == nullptr);
    REQUIRE(report.notes.size() == 1);
    CHECK(report.notes[0].find("weighted") != std::string::npos);
}

TEST_CASE("conformance: a log-prob kernel that ignores the temperature fails those cases only" *
          doctest::test_suite("unit")) {
    const cf::conformance_report report = cf::check_logprob_kernel(no_temperature_logprobs{}, quick);
    CHECK_FALSE(report.passed());
    CHECK(report.has_failure("temperature/full/float64/logprobs"));
    CHECK(report.has_failure("temperature/none/float64/grad"));
    CHECK(report.passed_all("plain/"));
    CHECK(report.passed_all("offset/"));
    CHECK(report.passed_all("error/"));
}

TEST_CASE("conformance: a kernel that throws fails every value check with the message" * doctest::test_suite("unit")) {
    const cf::conformance_report report = cf::check_value_loss_kernel(throwing_value{}, quick);
    CHECK_FALSE(report.passed());
    CHECK(report.passed_all("error/"));  // throwing is the right answer there
    const cf::check_result* c = report.find("default/full/float64/grad");
    REQUIRE(c != nullptr);
    CHECK_FALSE(c->passed);
    CHECK(c->detail == "the kernel threw: not implemented");
}

TEST_CASE("conformance: report bookkeeping" * doctest::test_suite("unit")) {
    cf::conformance_report report;
    CHECK_FALSE(report.passed());  // nothing ran
    report.kernel = "k";
    report.checks.push_back({"a/loss", true, "", 0.0});
    report.checks.push_back({"b/grad", false, "worst: x", 0.5});
    CHECK_FALSE(report.passed());
    CHECK(report.failure_count() == 1);
    CHECK(report.failed_checks() == std::vector<std::string>{"b/grad"});
    CHECK(report.has_failure("b/"));
    CHECK_FALSE(report.has_failure("a/"));
    CHECK(report.passed_all("a/"));
    CHECK_FALSE(report.passed_all("b/"));
    CHECK_FALSE(report.passed_all("c/"));  // no such check
    CHECK(report.find("c") == nullptr);
    const std::string table = report.summary();
    CHECK(table.find("1 of 2 checks passed -- FAILED") != std::string::npos);
    CHECK(table.find("FAIL    b/grad") != std::string::npos);
}
