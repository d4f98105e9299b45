#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/eigen/kl_loss.hpp"
#include "rlhf/eigen/value_loss.hpp"
#include "support/eigen_test_helpers.hpp"

namespace {

template <class T, class Derived>
rlhf::view<T> view_of(const Eigen::DenseBase<Derived>& m) {
    return rlhf::eigen::as_view(m, "test", "m");
}

}  // namespace

TEST_CASE_TEMPLATE("eigen::value_loss and eigen::kl_loss equal the kernels" * doctest::test_suite("unit"), T, float,
                   double) {
    std::mt19937 gen(17);
    const auto old = rlhf_test::random_values<T>(gen, 3, 6, 0.0, 1.0);
    const rlhf::eigen::row_matrix<T> values = old + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 0.4);
    const rlhf::eigen::row_matrix<T> returns = old + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 3.0);
    // An interior hole and an empty row.
    const auto mask =
        rlhf_test::matrix_of(rlhf_test::mask_pattern(3, 6).hole(0, 2, 3).empty_row(1).values<std::uint8_t>(), 3, 6);
    const rlhf::value_loss_options options{.clip_range = 0.2,
                                           .aggregation = {.mode = rlhf::loss_aggregation::seq_mean_token_mean}};
    const auto out = rlhf::eigen::value_loss(values, old, returns, mask, options);
    std::vector<T> grad(18);
    const auto direct =
        rlhf::value_loss(view_of<T>(values), view_of<T>(old), view_of<T>(returns),
                         rlhf::eigen::as_view(mask, "test", "mask"), options, rlhf::make_mut_view(grad.data(), 3, 6));
    CHECK(out.loss == direct.loss);
    CHECK(out.stats.clip_fraction == direct.stats.clip_fraction);
    for (Eigen::Index i = 0; i < 18; ++i) CHECK(out.grad_values.data()[i] == grad[static_cast<std::size_t>(i)]);

    // A block of a wider matrix (the response columns of [B, P + T]) is read in place.
    rlhf::eigen::row_matrix<T> wide = rlhf::eigen::row_matrix<T>::Zero(3, 8);
    wide.rightCols(6) = values;
    const auto block = rlhf::eigen::value_loss(wide.rightCols(6), old, returns, mask, options);
    CHECK(block.loss == direct.loss);

    const rlhf::eigen::row_matrix<T> lp = rlhf_test::random_values<T>(gen, 3, 6, -2.0, 1.0);
    const rlhf::eigen::row_matrix<T> ref = lp + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 1.0);
    const rlhf::eigen::row_matrix<T> old_lp = lp + rlhf_test::random_values<T>(gen, 3, 6, 0.0, 0.3);
    const rlhf::kl_loss_options kl{.kl = rlhf::kl_preset::verl(rlhf::kl_estimator::k3), .coef = 0.1};
    for (const bool weighted : {false, true}) {
        const auto k =
            weighted ? rlhf::eigen::kl_loss(lp, ref, old_lp, mask, kl) : rlhf::eigen::kl_loss(lp, ref, mask, kl);
        const auto m = rlhf::eigen::as_view(mask, "test", "mask");
        const auto g = rlhf::make_mut_view(grad.data(), 3, 6);
        const auto d = weighted ? rlhf::kl_loss(view_of<T>(lp), view_of<T>(ref), view_of<T>(old_lp), m, kl, g)
                                : rlhf::kl_loss(view_of<T>(lp), view_of<T>(ref), m, kl, g);
        CHECK(k.loss == d.loss);
        CHECK(k.stats.kl_mean == d.stats.kl_mean);
        for (Eigen::Index i = 0; i < 18; ++i) CHECK(k.grad_log_probs.data()[i] == grad[static_cast<std::size_t>(i)]);
    }
}

TEST_CASE("eigen value and KL losses: errors name the argument" * doctest::test_suite("unit")) {
    const rlhf::eigen::row_matrix<double> a = rlhf::eigen::row_matrix<double>::Zero(2, 3);
    const rlhf::eigen::row_matrix<double> b = rlhf::eigen::row_matrix<double>::Zero(2, 4);
    const rlhf::eigen::row_matrix<double> m = rlhf::eigen::row_matrix<double>::Ones(2, 3);
    rlhf_test::check_error([&] { (void)rlhf::eigen::value_loss(a, a, b, m); }, rlhf::error_kind::shape, "returns");
    auto e = rlhf_test::expect_error([&] { (void)rlhf::eigen::kl_loss(a, a, b, m); });
    CHECK(e.argument() == "old_log_probs");
    e = rlhf_test::expect_error([&] {
        const rlhf::eigen::row_matrix<double> zero_mask = rlhf::eigen::row_matrix<double>::Zero(2, 3);
        (void)rlhf::eigen::kl_loss(a, a, zero_mask);
    });
    CHECK(e.argument() == "mask");
}
