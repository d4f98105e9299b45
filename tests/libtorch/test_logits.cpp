// Tests of rlhf/libtorch/logits.hpp: the autograd Functions over the kernels agree with the
// torch-op (composed) versions in value and in autograd gradient, float and double.
// Torch first, glog's CHECK dropped, then doctest (also the project's precompiled header).
#include "support/doctest_torch.hpp"

#include <cmath>
#include <limits>
#include <string>

#include "rlhf/libtorch/logits.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::expect_error;

namespace {

// The relative tolerance of a comparison in T.
template <class T>
constexpr double tol() {
    return rlhf_test::tolerance<T>(1e-5, 1e-11);
}

bool close(const torch::Tensor& a, const torch::Tensor& b, double tolerance) {
    return torch::allclose(a.to(torch::kFloat64), b.to(torch::kFloat64), tolerance, tolerance);
}

// Gradient of Σ w·f(x) w.r.t. x by autograd.
torch::Tensor grad_of(const torch::Tensor& out, const torch::Tensor& weights, const torch::Tensor& x) {
    return torch::autograd::grad({(out * weights).sum()}, {x})[0];
}

}  // namespace

TEST_CASE_TEMPLATE("libtorch logprobs/entropy: kernel Function equals composed / values and gradients" *
                       doctest::test_suite("gradient"),
                   T, float, double) {
    torch::manual_seed(3);
    const int64_t b = 3, t = 4, v = 700;  // v spans two chunks of the online log-sum-exp
    torch::Tensor base = torch::randn({b, t, v}, rlhf::libtorch::dtype_of<T>()) * 3;
    base.index_put_({1, 2, 5}, -std::numeric_limits<double>::infinity());
    base.index_put_({0, 0, 0}, 1e4);
    torch::Tensor tokens = torch::randint(0, v, {b, t}, torch::kInt64);
    tokens.index_put_({1, 2}, 6);
    const torch::Tensor mask = torch::tensor({1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0}, torch::kUInt8).reshape({b, t});
    const torch::Tensor w_lp = torch::randn({b, t}, rlhf::libtorch::dtype_of<T>()),
                        w_h = torch::randn({b, t}, rlhf::libtorch::dtype_of<T>());
    for (const double tau : {1.0, 0.7}) {
        for (const bool masked : {false, true}) {
            const torch::Tensor m = masked ? mask : torch::Tensor();
            torch::Tensor x1 = base.clone().requires_grad_(true), x2 = base.clone().requires_grad_(true);
            const auto k = rlhf::libtorch::logprobs_from_logits(x1, tokens, m, {.temperature = tau});
            const auto c = rlhf::libtorch::torch_ops::logprobs_from_logits(x2, tokens, m, {.temperature = tau});
            CHECK(close(k.logprobs, c.logprobs, tol<T>()));
            CHECK(close(k.entropy, c.entropy, tol<T>()));
            const torch::Tensor f1 = (k.logprobs * w_lp).sum() + (k.entropy * w_h).sum();
            const torch::Tensor f2 = (c.logprobs * w_lp).sum() + (c.entropy * w_h).sum();
            const torch::Tensor g1 = torch::autograd::grad({f1}, {x1})[0];
            const torch::Tensor g2 = torch::autograd::grad({f2}, {x2})[0];
            CHECK(g1.isfinite().all().item<bool>());
            CHECK(close(g1, g2, tol<T>()));
            // One output only: the other upstream gradient is undefined.
            torch::Tensor x3 = base.clone().requires_grad_(true), x4 = base.clone().requires_grad_(true);
            const torch::Tensor lp3 =
                rlhf::libtorch::logprobs_from_logits(x3, tokens, m, {.temperature = tau}).logprobs;
            const torch::Tensor lp4 =
                rlhf::libtorch::torch_ops::logprobs_from_logits(x4, tokens, m, {.temperature = tau}).logprobs;
            CHECK(close(grad_of(lp3, w_lp, x3), grad_of(lp4, w_lp, x4), tol<T>()));
            // Entropy on its own.
            torch::Tensor x5 = base.clone().requires_grad_(true), x6 = base.clone().requires_grad_(true);
            const torch::Tensor h5 = rlhf::libtorch::entropy_from_logits(x5, m, {.temperature = tau});
            const torch::Tensor h6 = rlhf::libtorch::torch_ops::entropy_from_logits(x6, m, {.temperature = tau});
            CHECK(close(h5, k.entropy, 0.0));
            CHECK(close(grad_of(h5, w_h, x5), grad_of(h6, w_h, x6), tol<T>()));
        }
    }
    // With a mask, the logits of masked positions are not read by either implementation.
    torch::Tensor poisoned = base.clone();
    poisoned.index_put_({0, 3}, std::numeric_limits<double>::quiet_NaN());
    tokens.index_put_({0, 3}, -100);
    torch::Tensor x1 = poisoned.clone().requires_grad_(true), x2 = poisoned.clone().requires_grad_(true);
    const auto k = rlhf::libtorch::logprobs_from_logits(x1, tokens, mask);
    const auto c = rlhf::libtorch::torch_ops::logprobs_from_logits(x2, tokens, mask);
    CHECK(close(k.logprobs, c.logprobs, tol<T>()));
    const torch::Tensor g1 = grad_of(k.logprobs, w_lp, x1), g2 = grad_of(c.logprobs, w_lp, x2);
    CHECK(g1.isfinite().all().item<bool>());
    CHECK(close(g1, g2, tol<T>()));
}

TEST_CASE_TEMPLATE("libtorch full KL: kernel Function equals composed" * doctest::test_suite("gradient"), T, float,
                   double) {
    torch::manual_seed(5);
    const int64_t b = 2, t = 3, v = 600;
    torch::Tensor p = torch::randn({b, t, v}, rlhf::libtorch::dtype_of<T>()) * 2,
                  q = torch::randn({b, t, v}, rlhf::libtorch::dtype_of<T>()) * 2;
    p.index_put_({0, 1, 3}, -std::numeric_limits<double>::infinity());
    const torch::Tensor mask = torch::tensor({true, true, false, true, true, true}).reshape({b, t});
    const torch::Tensor w = torch::randn({b, t}, rlhf::libtorch::dtype_of<T>());
    for (const double tau : {1.0, 1.5}) {
        for (const bool masked : {false, true}) {
            const torch::Tensor m = masked ? mask : torch::Tensor();
            torch::Tensor x1 = p.clone().requires_grad_(true), x2 = p.clone().requires_grad_(true);
            torch::Tensor r1 = q.clone().requires_grad_(true);
            const torch::Tensor k = rlhf::libtorch::full_kl_from_logits(x1, r1, m, {.temperature = tau});
            const torch::Tensor c = rlhf::libtorch::torch_ops::full_kl_from_logits(x2, q, m, {.temperature = tau});
            CHECK(close(k, c, tol<T>()));
            const auto grads = torch::autograd::grad({(k * w).sum()}, {x1, r1}, {}, false, false, true);
            CHECK(close(grads[0], grad_of(c, w, x2), tol<T>()));
            CHECK(!grads[1].defined());  // the reference gets no gradient
        }
    }
}

TEST_CASE_TEMPLATE("libtorch LM loss and reward-model losses: kernel Function equals composed" *
                       doctest::test_suite("gradient"),
                   T, float, double) {
    torch::manual_seed(7);
    const int64_t b = 2, t = 5, v = 11;
    const torch::Tensor logits = torch::randn({b, t, v}, rlhf::libtorch::dtype_of<T>());
    torch::Tensor tokens = torch::randint(0, v, {b, t}, torch::kInt64);
    tokens.index_put_({1, 4}, -100);
    const torch::Tensor mask = torch::tensor({1, 1, 1, 1, 0, 1, 1, 0, 1, 1}, torch::kInt32).reshape({b, t});
    for (const bool masked : {false, true}) {
        const torch::Tensor m = masked ? mask : torch::Tensor();
        torch::Tensor x1 = logits.clone().requires_grad_(true), x2 = logits.clone().requires_grad_(true);
        const torch::Tensor k = rlhf::libtorch::lm_loss(x1, tokens, m, {.temperature = 0.8});
        const torch::Tensor c = rlhf::libtorch::torch_ops::lm_loss(x2, tokens, m, {.temperature = 0.8});
        CHECK(k.dim() == 0);
        CHECK(close(k, c, tol<T>()));
        (k * 3.0).backward();
        (c * 3.0).backward();
        CHECK(close(x1.grad(), x2.grad(), tol<T>()));
    }
    // Nothing counted: 0 and a zero gradient in both.
    torch::Tensor x1 = logits.clone().requires_grad_(true), x2 = logits.clone().requires_grad_(true);
    const torch::Tensor none = torch::zeros({b, t}, torch::kBool);
    const torch::Tensor k0 = rlhf::libtorch::lm_loss(x1, tokens, none);
    const torch::Tensor c0 = rlhf::libtorch::torch_ops::lm_loss(x2, tokens, none);
    CHECK(k0.item<double>() == 0.0);
    CHECK(c0.item<double>() == 0.0);
    k0.backward();
    c0.backward();
    CHECK(x1.grad().abs().max().item<double>() == 0.0);
    CHECK(x2.grad().abs().max().item<double>() == 0.0);

    const torch::Tensor chosen = torch::randn({6}, rlhf::libtorch::dtype_of<T>()),
                        rejected = torch::randn({6}, rlhf::libtorch::dtype_of<T>());
    const torch::Tensor margin = torch::rand({6}, rlhf::libtorch::dtype_of<T>());
    const rlhf::pairwise_loss_options options{.margin = 0.3, .center_rewards_coefficient = 0.01};
    for (const bool with_margin : {false, true}) {
        torch::Tensor c1 = chosen.clone().requires_grad_(true), r1 = rejected.clone().requires_grad_(true);
        torch::Tensor c2 = chosen.clone().requires_grad_(true), r2 = rejected.clone().requires_grad_(true);
        const torch::Tensor m = with_margin ? margin : torch::Tensor();
        const torch::Tensor lk = rlhf::libtorch::pairwise_logsigmoid_loss(c1, r1, m, options);
        const torch::Tensor lc = rlhf::libtorch::torch_ops::pairwise_logsigmoid_loss(c2, r2, m, options);
        CHECK(close(lk, lc, tol<T>()));
        (lk * 2.0).backward();
        (lc * 2.0).backward();
        CHECK(close(c1.grad(), c2.grad(), tol<T>()));
        CHECK(close(r1.grad(), r2.grad(), tol<T>()));
    }
    torch::Tensor c1 = chosen.clone().requires_grad_(true), r1 = rejected.clone().requires_grad_(true);
    torch::Tensor c2 = chosen.clone().requires_grad_(true), r2 = rejected.clone().requires_grad_(true);
    const torch::Tensor ek = rlhf::libtorch::log_exp_loss(c1, r1);
    const torch::Tensor ec = rlhf::libtorch::torch_ops::log_exp_loss(c2, r2);
    CHECK(close(ek, ec, tol<T>()));
    ek.backward();
    ec.backward();
    CHECK(close(c1.grad(), c2.grad(), tol<T>()));
    CHECK(close(r1.grad(), r2.grad(), tol<T>()));
}

TEST_CASE("libtorch logits entry points: errors name the function and the argument" * doctest::test_suite("unit")) {
    const torch::Tensor logits = torch::randn({2, 3, 4}, torch::kFloat64);
    const torch::Tensor tokens = torch::zeros({2, 3}, torch::kInt64);
    auto e = expect_error([&] { (void)rlhf::libtorch::logprobs_from_logits(logits, tokens.to(torch::kInt32)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "tokens");
    CHECK(e.function() == "rlhf::libtorch::logprobs_from_logits");
    e = expect_error([&] { (void)rlhf::libtorch::logprobs_from_logits(logits.to(torch::kInt64), tokens); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "logits");
    e = expect_error([&] { (void)rlhf::libtorch::logprobs_from_logits(logits, tokens + 4); });
    CHECK(e.argument() == "tokens");
    CHECK(e.actual() == "4 at [0, 0]");
    e = expect_error([&] {
        (void)rlhf::libtorch::logprobs_from_logits(logits, tokens, torch::ones({2, 3}, torch::kFloat32));
    });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "mask");
    e = expect_error([&] { (void)rlhf::libtorch::logprobs_from_logits(logits.transpose(1, 2), tokens); });
    CHECK(e.argument() == "logits");
    e = expect_error([&] { (void)rlhf::libtorch::full_kl_from_logits(logits, logits.to(torch::kFloat32)); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "reference_logits");
    const torch::Tensor meta =
        torch::empty({2, 3, 4}, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kMeta));
    e = expect_error([&] { (void)rlhf::libtorch::cpu::entropy_from_logits(meta); });
    CHECK(e.kind() == rlhf::error_kind::device);
    CHECK(e.function() == "rlhf::libtorch::entropy_from_logits");
    torch::Tensor bad = logits.clone();
    bad.index_put_({1, 2, 3}, std::numeric_limits<double>::quiet_NaN());
    e = expect_error([&] { (void)rlhf::libtorch::lm_loss(bad, tokens); });
    CHECK(e.argument() == "logits");
    CHECK(e.actual() == "nan at [1, 2, 3]");
    e = expect_error([&] {
        (void)rlhf::libtorch::pairwise_logsigmoid_loss(torch::zeros({3}, torch::kFloat64),
                                                       torch::zeros({2}, torch::kFloat64));
    });
    CHECK(e.argument() == "rejected");
    CHECK(e.function() == "rlhf::libtorch::pairwise_logsigmoid_loss");
    e = expect_error([&] { (void)rlhf::libtorch::torch_ops::logprobs_from_logits(tokens, tokens); });
    CHECK(e.argument() == "logits");
    CHECK(e.kind() == rlhf::error_kind::shape);
}
