// Tests of rlhf/xtensor/logits.hpp: the xtensor entry points equal the kernels on the same data.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "rlhf/xtensor/logits.hpp"
#include "support/fixtures.hpp"
#include "support/xtensor_test_helpers.hpp"

using rlhf_test::container;
using rlhf_test::expect_error;
using rlhf_test::same_values;

TEST_CASE_TEMPLATE("xtensor logits entry points equal the kernels" * doctest::test_suite("unit"), T, float, double) {
    const rlhf_test::logits_batch<T> in(43, 2, 3, 9);
    const rlhf::index_t b = in.b, t = in.t, v = in.v;
    const std::size_t bt = static_cast<std::size_t>(b * t), btv = bt * static_cast<std::size_t>(v);
    const auto logits = container(in.logits, std::array<std::size_t, 3>{2, 3, 9});
    const auto reference = container(in.reference, std::array<std::size_t, 3>{2, 3, 9});
    const auto tokens = container(in.tokens, std::array<std::size_t, 2>{2, 3});
    xt::xtensor<bool, 2> mask = xt::xtensor<bool, 2>::from_shape({2, 3});
    for (std::size_t i = 0; i < bt; ++i) mask.data()[i] = i != 4;
    const auto g_lp = container(in.g_lp, std::array<std::size_t, 2>{2, 3});
    const auto g_h = container(in.g_h, std::array<std::size_t, 2>{2, 3});
    const rlhf::logits_options options{.temperature = 1.3};

    const auto z = in.z(), q = in.q();
    const auto y = in.y();
    const rlhf::view<bool> m(mask.data(), {b, t});
    std::vector<T> lp(bt), h(bt), kl(bt), grad(btv);

    rlhf::logprobs_from_logits(z, y, m, rlhf::mut_view<T>(lp.data(), {b, t}), rlhf::mut_view<T>(h.data(), {b, t}), {},
                               options);
    const auto r = rlhf::xtensor::logprobs_from_logits(logits, tokens, mask, options);
    CHECK(same_values(r.logprobs, lp));
    CHECK(same_values(r.entropy, h));
    rlhf::logprobs_from_logits(z, y, rlhf::mut_view<T>(lp.data(), {b, t}), rlhf::mut_view<T>(h.data(), {b, t}), {},
                               options);
    const auto r2 = rlhf::xtensor::logprobs_from_logits(logits, tokens, options);
    CHECK(same_values(r2.logprobs, lp));
    CHECK(same_values(r2.entropy, h));

    rlhf::logprobs_from_logits_backward(z, y, m, in.lp_grad(), in.h_grad(),
                                        rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), {}, {}, options);
    CHECK(same_values(rlhf::xtensor::logprobs_from_logits_backward(logits, tokens, mask, g_lp, g_h, options), grad));
    rlhf::logprobs_from_logits_backward(z, y, in.lp_grad(), rlhf::view<T>{},
                                        rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), {}, {}, options);
    CHECK(same_values(rlhf::xtensor::logprobs_from_logits_backward(logits, tokens, g_lp, xt::xtensor<T, 2>(), options),
                      grad));

    rlhf::entropy_from_logits(z, rlhf::mut_view<T>(h.data(), {b, t}), {}, options);
    CHECK(same_values(rlhf::xtensor::entropy_from_logits(logits, options), h));
    rlhf::entropy_from_logits(z, m, rlhf::mut_view<T>(h.data(), {b, t}), {}, options);
    CHECK(same_values(rlhf::xtensor::entropy_from_logits(logits, mask, options), h));
    rlhf::entropy_from_logits_backward(z, m, in.h_grad(), rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), {}, {},
                                       options);
    CHECK(same_values(rlhf::xtensor::entropy_from_logits_backward(logits, mask, g_h, options), grad));
    rlhf::entropy_from_logits_backward(z, in.h_grad(), rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), {}, {}, options);
    CHECK(same_values(rlhf::xtensor::entropy_from_logits_backward(logits, g_h, options), grad));

    rlhf::full_kl_from_logits(z, q, rlhf::mut_view<T>(kl.data(), {b, t}), options);
    CHECK(same_values(rlhf::xtensor::full_kl_from_logits(logits, reference, options), kl));
    rlhf::full_kl_from_logits(z, q, m, rlhf::mut_view<T>(kl.data(), {b, t}), options);
    CHECK(same_values(rlhf::xtensor::full_kl_from_logits(logits, reference, mask, options), kl));
    rlhf::full_kl_from_logits_backward(z, q, m, in.lp_grad(), rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), options);
    CHECK(same_values(rlhf::xtensor::full_kl_from_logits_backward(logits, reference, mask, g_lp, options), grad));
    rlhf::full_kl_from_logits_backward(z, q, in.lp_grad(), rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), options);
    CHECK(same_values(rlhf::xtensor::full_kl_from_logits_backward(logits, reference, g_lp, options), grad));

    const auto k = rlhf::lm_loss(z, y, m, rlhf::mut_view<T, 3>(grad.data(), {b, t, v}));
    const auto e = rlhf::xtensor::lm_loss(logits, tokens, mask);
    CHECK(e.loss == k.loss);
    CHECK(e.num_tokens == 5);
    CHECK(same_values(e.grad_logits, grad));
    const auto k2 = rlhf::lm_loss(z, y, rlhf::mut_view<T, 3>(grad.data(), {b, t, v}));
    const auto e2 = rlhf::xtensor::lm_loss(logits, tokens);
    CHECK(e2.loss == k2.loss);
    CHECK(same_values(e2.grad_logits, grad));

    const xt::xtensor<T, 1> c{T(1), T(-0.5), T(2)}, rj{T(0.5), T(0.5), T(-1)}, margin{T(0.1), T(0), T(0.3)};
    std::vector<T> gc(3), gr(3);
    const rlhf::pairwise_loss_options po{.margin = 0.25, .center_rewards_coefficient = 0.01};
    const auto kp = rlhf::pairwise_logsigmoid_loss(
        rlhf::view<T, 1>(c.data(), {3}), rlhf::view<T, 1>(rj.data(), {3}), rlhf::view<T, 1>(margin.data(), {3}),
        rlhf::mut_view<T, 1>(gc.data(), {3}), rlhf::mut_view<T, 1>(gr.data(), {3}), po);
    const auto xp = rlhf::xtensor::pairwise_logsigmoid_loss(c, rj, margin, po);
    CHECK(xp.loss == kp.loss);
    CHECK(xp.accuracy == kp.accuracy);
    CHECK(same_values(xp.grad_chosen, gc));
    CHECK(same_values(xp.grad_rejected, gr));
    CHECK(rlhf::xtensor::pairwise_logsigmoid_loss(c, rj, po).loss ==
          rlhf::pairwise_logsigmoid_loss(rlhf::view<T, 1>(c.data(), {3}), rlhf::view<T, 1>(rj.data(), {3}), {}, {}, po)
              .loss);
    const auto ke = rlhf::log_exp_loss(rlhf::view<T, 1>(c.data(), {3}), rlhf::view<T, 1>(rj.data(), {3}),
                                       rlhf::mut_view<T, 1>(gc.data(), {3}), rlhf::mut_view<T, 1>(gr.data(), {3}));
    const auto xe = rlhf::xtensor::log_exp_loss(c, rj);
    CHECK(xe.loss == ke.loss);
    CHECK(same_values(xe.grad_chosen, gc));
}

TEST_CASE("xtensor logits entry points: errors name the argument" * doctest::test_suite("unit")) {
    const xt::xtensor<double, 3> logits = xt::zeros<double>({2, 3, 4});
    const xt::xtensor<std::int64_t, 2> tokens = xt::zeros<std::int64_t>({2, 2});
    auto e = expect_error([&] { (void)rlhf::xtensor::logprobs_from_logits(logits, tokens); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "tokens");
    CHECK(e.function() == "rlhf::xtensor::logprobs_from_logits");
    const xt::xtensor<double, 2> flat = xt::zeros<double>({6, 4});
    e = expect_error([&] { (void)rlhf::xtensor::entropy_from_logits(flat); });
    CHECK(e.argument() == "logits");
    CHECK(e.actual() == "2 dimensions");
    xt::xtensor<double, 3> nan_logits = logits;
    nan_logits(1, 0, 2) = std::numeric_limits<double>::quiet_NaN();
    e = expect_error([&] { (void)rlhf::xtensor::full_kl_from_logits(logits, nan_logits); });
    CHECK(e.argument() == "reference_logits");
    CHECK(e.actual() == "nan at [1, 0, 2]");
}
