// Tests of rlhf/eigen/logits.hpp: the Eigen entry points equal the kernels on the same data.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "rlhf/eigen/logits.hpp"
#include "support/eigen_test_helpers.hpp"
#include "support/fixtures.hpp"

using rlhf_test::expect_error;
using rlhf_test::matrix_of;
using rlhf_test::same_values;

namespace {

using tokens_matrix = Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace

TEST_CASE_TEMPLATE("eigen logits entry points equal the kernels" * doctest::test_suite("unit"), T, float, double) {
    const rlhf_test::logits_batch<T> in(41, 2, 3, 9);
    const rlhf::index_t b = in.b, t = in.t, v = in.v;
    const auto logits = matrix_of(in.logits, b * t, v), reference = matrix_of(in.reference, b * t, v);  // [B·T, V]
    const tokens_matrix tokens = matrix_of(in.tokens, b, t);
    Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> mask(b, t);
    mask << 1, 1, 0, 1, 1, 1;
    const auto g_lp = matrix_of(in.g_lp, b, t), g_h = matrix_of(in.g_h, b, t);
    const rlhf::logits_options options{.temperature = 0.8};

    const auto z = in.z(), q = in.q();
    const auto y = in.y();
    const rlhf::view<std::uint8_t> m(mask.data(), {b, t});
    const std::size_t bt = static_cast<std::size_t>(b * t), btv = bt * static_cast<std::size_t>(v);

    // log-probs and entropy, masked and not
    std::vector<T> lp(bt), h(bt);
    rlhf::logprobs_from_logits(z, y, m, rlhf::mut_view<T>(lp.data(), {b, t}), rlhf::mut_view<T>(h.data(), {b, t}), {},
                               options);
    const auto r = rlhf::eigen::logprobs_from_logits(logits, tokens, mask, options);
    CHECK(same_values(r.logprobs, lp));
    CHECK(same_values(r.entropy, h));
    rlhf::logprobs_from_logits(z, y, rlhf::mut_view<T>(lp.data(), {b, t}), rlhf::mut_view<T>(h.data(), {b, t}), {},
                               options);
    const auto r2 = rlhf::eigen::logprobs_from_logits(logits, tokens, options);
    CHECK(same_values(r2.logprobs, lp));
    CHECK(same_values(r2.entropy, h));

    std::vector<T> grad(btv);
    rlhf::logprobs_from_logits_backward(z, y, m, in.lp_grad(), in.h_grad(),
                                        rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), {}, {}, options);
    CHECK(same_values(rlhf::eigen::logprobs_from_logits_backward(logits, tokens, mask, g_lp, g_h, options), grad));
    // An empty upstream gradient: no gradient through that output.
    rlhf::logprobs_from_logits_backward(z, y, m, in.lp_grad(), rlhf::view<T>{},
                                        rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), {}, {}, options);
    CHECK(same_values(
        rlhf::eigen::logprobs_from_logits_backward(logits, tokens, mask, g_lp, rlhf::eigen::row_matrix<T>(), options),
        grad));

    // entropy
    rlhf::entropy_from_logits(z, m, rlhf::mut_view<T>(h.data(), {b, t}), {}, options);
    CHECK(same_values(rlhf::eigen::entropy_from_logits(logits, mask, options), h));
    rlhf::entropy_from_logits_backward(z, m, in.h_grad(), rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), {}, {},
                                       options);
    CHECK(same_values(rlhf::eigen::entropy_from_logits_backward(logits, mask, g_h, options), grad));

    // full KL
    std::vector<T> kl(bt);
    rlhf::full_kl_from_logits(z, q, m, rlhf::mut_view<T>(kl.data(), {b, t}), options);
    CHECK(same_values(rlhf::eigen::full_kl_from_logits(logits, reference, mask, options), kl));
    rlhf::full_kl_from_logits_backward(z, q, m, in.lp_grad(), rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), options);
    CHECK(same_values(rlhf::eigen::full_kl_from_logits_backward(logits, reference, mask, g_lp, options), grad));

    // LM loss
    const rlhf::lm_loss_options lm{.temperature = 1.2};
    const auto k = rlhf::lm_loss(z, y, m, rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), lm);
    const auto e = rlhf::eigen::lm_loss(logits, tokens, mask, lm);
    CHECK(e.loss == k.loss);
    CHECK(e.num_tokens == 5);
    CHECK(same_values(e.grad_logits, grad));
    const auto k2 = rlhf::lm_loss(z, y, rlhf::mut_view<T, 3>(grad.data(), {b, t, v}), lm);
    const auto e2 = rlhf::eigen::lm_loss(logits, tokens, lm);
    CHECK(e2.loss == k2.loss);
    CHECK(same_values(e2.grad_logits, grad));

    // reward-model losses
    rlhf::eigen::vector<T> c(4), rj(4), margin(4);
    c << T(1), T(-0.5), T(2), T(0);
    rj << T(0.5), T(0.5), T(-1), T(0);
    margin << T(0.1), T(0), T(0.3), T(-0.2);
    std::vector<T> gc(4), gr(4);
    const rlhf::pairwise_loss_options po{.margin = 0.25, .center_rewards_coefficient = 0.01};
    const auto kp = rlhf::pairwise_logsigmoid_loss(
        rlhf::view<T, 1>(c.data(), {4}), rlhf::view<T, 1>(rj.data(), {4}), rlhf::view<T, 1>(margin.data(), {4}),
        rlhf::mut_view<T, 1>(gc.data(), {4}), rlhf::mut_view<T, 1>(gr.data(), {4}), po);
    const auto ep = rlhf::eigen::pairwise_logsigmoid_loss(c, rj, margin, po);
    CHECK(ep.loss == kp.loss);
    CHECK(ep.accuracy == kp.accuracy);
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(ep.grad_chosen(static_cast<Eigen::Index>(i)) == gc[i]);
        CHECK(ep.grad_rejected(static_cast<Eigen::Index>(i)) == gr[i]);
    }
    CHECK(rlhf::eigen::pairwise_logsigmoid_loss(c, rj, po).loss ==
          rlhf::pairwise_logsigmoid_loss(rlhf::view<T, 1>(c.data(), {4}), rlhf::view<T, 1>(rj.data(), {4}), {}, {}, po)
              .loss);
    const auto ke = rlhf::log_exp_loss(rlhf::view<T, 1>(c.data(), {4}), rlhf::view<T, 1>(rj.data(), {4}),
                                       rlhf::mut_view<T, 1>(gc.data(), {4}), rlhf::mut_view<T, 1>(gr.data(), {4}));
    const auto ee = rlhf::eigen::log_exp_loss(c, rj);
    CHECK(ee.loss == ke.loss);
    CHECK(ee.grad_chosen(0) == gc[0]);
}

TEST_CASE("eigen logits entry points: errors name the argument" * doctest::test_suite("unit")) {
    const rlhf::eigen::row_matrix<double> logits = rlhf::eigen::row_matrix<double>::Zero(5, 3);
    const tokens_matrix tokens = tokens_matrix::Zero(2, 3);  // B·T = 6 rows expected
    auto e = expect_error([&] { (void)rlhf::eigen::logprobs_from_logits(logits, tokens); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "logits");
    CHECK(e.function() == "rlhf::eigen::logprobs_from_logits");
    CHECK(e.actual() == "[5, 3]");
    const rlhf::eigen::row_matrix<double> six = rlhf::eigen::row_matrix<double>::Zero(6, 3);
    tokens_matrix bad = tokens;
    bad(1, 2) = 3;
    e = expect_error([&] { (void)rlhf::eigen::lm_loss(six, bad); });
    CHECK(e.argument() == "tokens");
    CHECK(e.actual() == "3 at [1, 2]");
    CHECK(e.function() == "rlhf::eigen::lm_loss");
    const rlhf::eigen::row_matrix<double> mask = rlhf::eigen::row_matrix<double>::Constant(2, 3, 2.0);
    e = expect_error([&] { (void)rlhf::eigen::entropy_from_logits(six, mask); });
    CHECK(e.argument() == "mask");
    rlhf::eigen::vector<double> c(2), r(3);
    c.setZero();
    r.setZero();
    e = expect_error([&] { (void)rlhf::eigen::log_exp_loss(c, r); });
    CHECK(e.argument() == "rejected");
}
