#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/kernels/presets.hpp"
#include "support/test_helpers.hpp"

namespace {

struct batch {
    static constexpr rlhf::index_t rows = 4, cols = 6;
    std::vector<double> log_probs, ref_log_probs, values, scores;
    std::vector<std::uint8_t> mask;
    explicit batch(unsigned seed) {
        std::mt19937 gen(seed);
        std::normal_distribution<double> normal;
        for (rlhf::index_t b = 0; b < rows; ++b) {
            for (rlhf::index_t t = 0; t < cols; ++t) {
                log_probs.push_back(-std::abs(normal(gen)));
                ref_log_probs.push_back(log_probs.back() + 0.2 * normal(gen));
                values.push_back(normal(gen));
                mask.push_back(t < cols - b ? 1 : 0);  // right padding, every row non-empty
            }
            scores.push_back(normal(gen));
        }
    }
    [[nodiscard]] auto view_of(const std::vector<double>& x) const { return rlhf::make_view(x.data(), rows, cols); }
    [[nodiscard]] auto mask_view() const { return rlhf::make_view(mask.data(), rows, cols); }
    [[nodiscard]] rlhf::view<double, 1> score_view() const { return rlhf::make_view(std::span<const double>(scores)); }
};

using matrix = std::vector<double>;

// The preset's steps called one by one.
void by_hand(const rlhf::advantage_preset& preset, double kl_coef, const batch& x, matrix& rewards, matrix& advantages,
             matrix& returns) {
    const auto out = [](matrix& m) { return rlhf::make_mut_view(m.data(), batch::rows, batch::cols); };
    auto shaping = preset.rewards;
    shaping.kl_coef = kl_coef;
    rlhf::shape_rewards_from_logprobs(x.view_of(x.log_probs), x.view_of(x.ref_log_probs), x.mask_view(), x.score_view(),
                                      out(rewards), shaping);
    if (preset.reward_whitening) {
        const matrix shaped = rewards;
        rlhf::masked_whiten(x.view_of(shaped), x.mask_view(), out(rewards), *preset.reward_whitening);
    }
    rlhf::compute_gae(x.view_of(rewards), x.view_of(x.values), x.mask_view(), out(advantages), out(returns),
                      preset.gae);
    if (!preset.advantage_whitening) return;
    const matrix raw = advantages;
    if (preset.whiten_unmasked)
        rlhf::whiten(x.view_of(raw), out(advantages), *preset.advantage_whitening);
    else
        rlhf::masked_whiten(x.view_of(raw), x.mask_view(), out(advantages), *preset.advantage_whitening);
}

}  // namespace

TEST_CASE("compute_advantages runs each preset's steps in order" * doctest::test_suite("unit")) {
    const batch x(7);
    auto reward_whitened = rlhf::presets::trl_v0_11();
    reward_whitened.reward_whitening = rlhf::whiten_options{.shift_mean = false};
    for (const auto& preset : {rlhf::presets::trl_v0_11(), rlhf::presets::trl(), rlhf::presets::deepspeed_chat(),
                               rlhf::presets::colossalchat_v2(), rlhf::presets::openrlhf(), rlhf::presets::verl(),
                               rlhf::presets::chatlearn(), reward_whitened}) {
        CAPTURE(preset.framework);
        const double kl_coef = 0.07;
        matrix rewards(24), advantages(24), returns(24), want_rewards(24), want_advantages(24), want_returns(24);
        rlhf::compute_advantages(x.view_of(x.log_probs), x.view_of(x.ref_log_probs), x.mask_view(), x.score_view(),
                                 x.view_of(x.values), rlhf::make_mut_view(rewards.data(), 4, 6),
                                 rlhf::make_mut_view(advantages.data(), 4, 6),
                                 rlhf::make_mut_view(returns.data(), 4, 6), preset, kl_coef);
        by_hand(preset, kl_coef, x, want_rewards, want_advantages, want_returns);
        CHECK(rewards == want_rewards);
        CHECK(advantages == want_advantages);
        CHECK(returns == want_returns);
    }
}

TEST_CASE("the DeepSpeed-Chat preset by hand" * doctest::test_suite("unit")) {
    // One row, T = 4, two valid tokens: k1 = lp - ref = 0.5 everywhere; the score 7 is clipped to 5
    // and lands at position min(2, 3) = 2, one past the last valid token; GAE (γ = 1, λ = 0.95)
    // runs over the valid range [0, 2) only.
    const std::vector<double> lp{-1.0, -1.0, -1.0, -1.0}, ref{-1.5, -1.5, -1.5, -1.5}, values{0.2, 0.4, 0.0, 0.0};
    const std::vector<double> scores{7.0};
    const std::vector<std::uint8_t> mask{1, 1, 0, 0};
    std::vector<double> rewards(4), advantages(4), returns(4);
    rlhf::compute_advantages(rlhf::make_view(lp.data(), 1, 4), rlhf::make_view(ref.data(), 1, 4),
                             rlhf::make_view(mask.data(), 1, 4), rlhf::make_view(std::span<const double>(scores)),
                             rlhf::make_view(values.data(), 1, 4), rlhf::make_mut_view(rewards.data(), 1, 4),
                             rlhf::make_mut_view(advantages.data(), 1, 4), rlhf::make_mut_view(returns.data(), 1, 4),
                             rlhf::presets::deepspeed_chat(), 0.1);
    CHECK(rewards[0] == doctest::Approx(-0.05));
    CHECK(rewards[2] == doctest::Approx(-0.05 + 5.0));
    // t = 1: δ = -0.05 + 0 - 0.4; t = 0: δ = -0.05 + 0.4 - 0.2, A0 = δ0 + 0.95·A1.
    const double a1 = -0.05 - 0.4;
    const double a0 = (-0.05 + 0.4 - 0.2) + 0.95 * a1;
    CHECK(advantages[1] == doctest::Approx(a1));
    CHECK(advantages[0] == doctest::Approx(a0));
    CHECK(advantages[2] == 0.0);
    CHECK(returns[0] == doctest::Approx(a0 + 0.2));
}

TEST_CASE("make_kl_controller starts each preset's controller" * doctest::test_suite("unit")) {
    auto trl = rlhf::make_kl_controller(rlhf::presets::trl_v0_11().kl_control);
    CHECK(trl.value() == 0.2);
    CHECK(std::holds_alternative<rlhf::adaptive_kl_controller>(trl.get()));
    // Above target: e = clip(12/6 - 1, ±0.2) = 0.2, β ← 0.2·(1 + 0.2·256/1e4).
    CHECK(trl.update({.value = 12.0, .measure = rlhf::kl_measure::seq_mean_token_sum}, 256) ==
          doctest::Approx(0.2 * (1.0 + 0.2 * 256.0 / 10000.0)));
    // The unit is part of the contract: a token-mean KL is refused by TRL's controller.
    CHECK_THROWS_AS(trl.update({.value = 12.0, .measure = rlhf::kl_measure::token_mean}, 256), rlhf::error);
    auto deepspeed = rlhf::make_kl_controller(rlhf::presets::deepspeed_chat().kl_control);
    CHECK(std::holds_alternative<rlhf::fixed_kl_controller>(deepspeed.get()));
    CHECK(deepspeed.value() == 0.1);
}

TEST_CASE("compute_advantages names the failing step's argument" * doctest::test_suite("unit")) {
    const batch x(3);
    std::vector<double> short_values(4 * 5), rewards(24), advantages(24), returns(24);
    rlhf_test::check_error(
        [&] {
            rlhf::compute_advantages(x.view_of(x.log_probs), x.view_of(x.ref_log_probs), x.mask_view(), x.score_view(),
                                     rlhf::make_view(short_values.data(), 4, 5),
                                     rlhf::make_mut_view(rewards.data(), 4, 6),
                                     rlhf::make_mut_view(advantages.data(), 4, 6),
                                     rlhf::make_mut_view(returns.data(), 4, 6), rlhf::presets::verl(), 0.0);
        },
        rlhf::error_kind::shape, "values");
}

TEST_CASE("the ColossalChat v1 sequence preset by hand" * doctest::test_suite("unit")) {
    // Two rows, T = 3. Row 0 has two valid tokens with log-ratios r = ref - lp of 0.5 and -0.2:
    // k3 = exp(r) - 1 - r; the mean divides by 2 + 1e-8. Row 1 is empty: KL 0, reward = score.
    const std::vector<double> lp{-1.0, -2.0, -3.0, -1.0, -1.0, -1.0}, ref{-0.5, -2.2, 9.0, 4.0, 4.0, 4.0};
    const std::vector<double> scores{1.5, -0.7}, values{0.25, 0.5};
    const std::vector<std::uint8_t> mask{1, 1, 0, 0, 0, 0};
    const auto preset = rlhf::presets::colossalchat_v1();
    CHECK(preset.rewards.kl_coef == 0.1);
    CHECK(std::holds_alternative<rlhf::fixed_kl_controller>(rlhf::make_kl_controller(preset.kl_control).get()));
    std::vector<double> rewards(2), advantages(2);
    rlhf::compute_sequence_advantages(
        rlhf::make_view(lp.data(), 2, 3), rlhf::make_view(ref.data(), 2, 3), rlhf::make_view(mask.data(), 2, 3),
        rlhf::make_view(std::span<const double>(scores)), rlhf::make_view(std::span<const double>(values)),
        rlhf::make_mut_view(std::span<double>(rewards)), rlhf::make_mut_view(std::span<double>(advantages)), preset,
        0.1);
    const auto k3 = [](double r) { return std::exp(r) - 1.0 - r; };
    const double mean_kl = (k3(0.5) + k3(-0.2)) / (2.0 + 1e-8);
    CHECK(rewards[0] == doctest::Approx(1.5 - 0.1 * mean_kl).epsilon(1e-15));
    CHECK(advantages[0] == doctest::Approx(1.5 - 0.1 * mean_kl - 0.25).epsilon(1e-15));
    CHECK(rewards[1] == -0.7);
    CHECK(advantages[1] == -0.7 - 0.5);
}

TEST_CASE("compute_sequence_advantages rejects bad values" * doctest::test_suite("unit")) {
    const batch x(5);
    std::vector<double> values{0.1, 0.2, 0.3, 0.4}, short_values{0.1, 0.2, 0.3}, rewards(4), advantages(4);
    const auto run = [&](std::span<const double> v, std::span<double> out_rewards, std::span<double> out_advantages) {
        rlhf::compute_sequence_advantages(x.view_of(x.log_probs), x.view_of(x.ref_log_probs), x.mask_view(),
                                          x.score_view(), rlhf::make_view(v), rlhf::make_mut_view(out_rewards),
                                          rlhf::make_mut_view(out_advantages), rlhf::presets::colossalchat_v1(), 0.1);
    };
    rlhf_test::check_error([&] { run(short_values, rewards, advantages); }, rlhf::error_kind::shape, "values");
    rlhf_test::check_error([&] { run(values, rewards, std::span<double>(advantages).first(3)); },
                           rlhf::error_kind::shape, "advantages");
    values[2] = std::nan("");
    rlhf_test::check_error([&] { run(values, rewards, advantages); }, rlhf::error_kind::value, "values");
    values[2] = 0.3;
    rlhf_test::check_error([&] { run(values, rewards, rewards); }, rlhf::error_kind::value, "advantages");
    // In place over the values is allowed: each advantage reads its own value first.
    std::vector<double> in_place = values;
    run(in_place, rewards, in_place);
    for (std::size_t b = 0; b < 4; ++b) CHECK(in_place[b] == rewards[b] - values[b]);
}
