#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "support/test_helpers.hpp"

using rlhf_test::expect_error;

namespace {

// A [B, T] problem in double, row-major.
struct problem {
    int rows = 0, cols = 0;
    std::vector<double> lp, old, adv, mask;
    [[nodiscard]] rlhf::view<double> v(const std::vector<double>& x) const {
        return rlhf::make_view(x.data(), rows, cols);
    }
};

rlhf::policy_loss_result run(const problem& p, const rlhf::policy_loss_options& o, std::vector<double>* grad = nullptr,
                             std::vector<double>* tokens = nullptr) {
    rlhf::mut_view<double> g{};
    rlhf::mut_view<double> tl{};
    if (grad != nullptr) {
        grad->assign(p.lp.size(), -99.0);
        g = rlhf::make_mut_view(grad->data(), p.rows, p.cols);
    }
    if (tokens != nullptr) {
        tokens->assign(p.lp.size(), -99.0);
        tl = rlhf::make_mut_view(tokens->data(), p.rows, p.cols);
    }
    return rlhf::policy_loss(p.v(p.lp), p.v(p.old), p.v(p.adv), p.v(p.mask), g, tl, o);
}

// ---------------------------------------------------------------------------------------------
// Naive reference: the verl/OpenRLHF formulation written out with plain branches, then the
// aggregation by its literal formula (sums and divisions, no per-token weights).
struct reference_result {
    double loss = 0, clip_fraction = 0, clip_fraction_lower = 0, approx_kl = 0, policy_kl = 0, policy_kl_clamped = 0,
           ratio_mean = 0, ratio_max = 0;
};

double reference_token_loss(double d, double a, const rlhf::policy_loss_options& o, bool* clipped, bool* lower) {
    if (o.log_ratio_min && d < *o.log_ratio_min) d = *o.log_ratio_min;
    if (o.log_ratio_max && d > *o.log_ratio_max) d = *o.log_ratio_max;
    double r = std::exp(d);
    if (o.ratio_cap && r > *o.ratio_cap) r = *o.ratio_cap;
    const double clipped_ratio = std::clamp(r, 1.0 - o.clip_low, 1.0 + o.clip_high);
    const double l1 = -a * r;
    const double l2 = -a * clipped_ratio;
    *clipped = l2 > l1;
    double l = std::max(l1, l2);
    *lower = false;
    if (o.dual_clip && a < 0) {
        const double l3 = -a * *o.dual_clip;
        *lower = l > l3;
        l = std::min(l, l3);
    }
    if (o.loss_cap) l = std::min(l, *o.loss_cap);
    return l;
}

reference_result reference(const problem& p, const rlhf::policy_loss_options& o) {
    reference_result r;
    std::vector<double> row_sum(static_cast<std::size_t>(p.rows), 0.0), row_n(static_cast<std::size_t>(p.rows), 0.0);
    double n_total = 0, ratio_sum = 0;
    for (int b = 0; b < p.rows; ++b) {
        double seq = 0, n = 0;
        for (int t = 0; t < p.cols; ++t) {
            const auto i = static_cast<std::size_t>(b * p.cols + t);
            if (p.mask[i] != 0) {
                seq += p.lp[i] - p.old[i];
                n += 1;
            }
        }
        seq /= std::max(n, 1.0);
        for (int t = 0; t < p.cols; ++t) {
            const auto i = static_cast<std::size_t>(b * p.cols + t);
            if (p.mask[i] == 0) continue;
            const double raw = p.lp[i] - p.old[i];
            const double d = o.level == rlhf::importance_ratio_level::sequence ? seq : raw;
            bool clipped = false, lower = false;
            const double l = reference_token_loss(d, p.adv[i], o, &clipped, &lower);
            row_sum[static_cast<std::size_t>(b)] += l;
            r.clip_fraction += clipped ? 1 : 0;
            r.clip_fraction_lower += lower ? 1 : 0;
            r.approx_kl += 0.5 * raw * raw;
            r.policy_kl += -raw;
            double raw_clamped = raw;  // verl's ppo_kl: the clamped per-token log-ratio
            if (o.log_ratio_min) raw_clamped = std::max(raw_clamped, *o.log_ratio_min);
            if (o.log_ratio_max) raw_clamped = std::min(raw_clamped, *o.log_ratio_max);
            r.policy_kl_clamped += -raw_clamped;
            double dc = d;
            if (o.log_ratio_min) dc = std::max(dc, *o.log_ratio_min);
            if (o.log_ratio_max) dc = std::min(dc, *o.log_ratio_max);
            ratio_sum += std::exp(dc);
            r.ratio_max = std::max(r.ratio_max, std::exp(dc));
        }
        row_n[static_cast<std::size_t>(b)] = n;
        n_total += n;
    }
    r.clip_fraction /= n_total;
    r.clip_fraction_lower /= n_total;
    r.approx_kl /= n_total;
    r.policy_kl /= n_total;
    r.policy_kl_clamped /= n_total;
    r.ratio_mean = ratio_sum / n_total;
    const auto& ag = o.aggregation;
    double total = 0, rows_with_tokens = 0;
    for (int b = 0; b < p.rows; ++b) {
        const auto bb = static_cast<std::size_t>(b);
        if (row_n[bb] > 0) rows_with_tokens += 1;
        if (ag.mode == rlhf::loss_aggregation::seq_mean_token_mean && row_n[bb] > 0)
            total += row_sum[bb] / (row_n[bb] + ag.token_count_epsilon);
        else if (ag.mode != rlhf::loss_aggregation::seq_mean_token_mean)
            total += row_sum[bb];
    }
    switch (ag.mode) {
        case rlhf::loss_aggregation::token_mean:
            r.loss = total / ag.global_token_count.value_or(n_total) * ag.dp_size;
            break;
        case rlhf::loss_aggregation::seq_mean_token_sum:
        case rlhf::loss_aggregation::seq_mean_token_mean:
            r.loss = total / ag.global_sequence_count.value_or(rows_with_tokens) * ag.dp_size;
            break;
        case rlhf::loss_aggregation::seq_mean_token_sum_norm:
            r.loss = total / ag.normalizer.value_or(p.cols);
            break;
    }
    if (o.ratio_threshold && r.ratio_mean > *o.ratio_threshold) r.loss = 0;
    return r;
}

// ---------------------------------------------------------------------------------------------
// Random problems whose log-ratios stay at least 1e-3 away from every kink of the options.
bool near_kink(double d, double a, const rlhf::policy_loss_options& o) {
    const double delta = 1e-3;
    const auto near = [&](double x, double y) { return std::abs(x - y) < delta; };
    if (o.log_ratio_min && near(d, *o.log_ratio_min)) return true;
    if (o.log_ratio_max && near(d, *o.log_ratio_max)) return true;
    double dc = d;
    if (o.log_ratio_min) dc = std::max(dc, *o.log_ratio_min);
    if (o.log_ratio_max) dc = std::min(dc, *o.log_ratio_max);
    if (o.ratio_cap && near(dc, std::log(*o.ratio_cap))) return true;
    if (near(dc, std::log(1.0 - o.clip_low)) || near(dc, std::log(1.0 + o.clip_high))) return true;
    bool clipped = false, lower = false;
    rlhf::policy_loss_options no_caps = o;
    no_caps.dual_clip.reset();
    no_caps.loss_cap.reset();
    const double before_dual = reference_token_loss(d, a, no_caps, &clipped, &lower);
    if (o.dual_clip && a < 0 && near(before_dual, -a * *o.dual_clip)) return true;
    no_caps.dual_clip = o.dual_clip;
    const double before_cap = reference_token_loss(d, a, no_caps, &clipped, &lower);
    return o.loss_cap && near(before_cap, *o.loss_cap);
}

// Rows: full, right padding, left padding with an interior hole, and an empty row.
problem random_problem(const rlhf::policy_loss_options& o, unsigned seed, double spread = 0.8) {
    problem p;
    p.rows = 4;
    p.cols = 7;
    const std::vector<double> mask = rlhf_test::mask_pattern(4, 7)
                                         .right_padding(1, 4)
                                         .left_padding(2, 2)
                                         .hole(2, 4, 5)
                                         .empty_row(3)
                                         .values<double>();
    p.mask = mask;
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    const auto n = static_cast<std::size_t>(p.rows * p.cols);
    p.lp.resize(n);
    p.old.resize(n);
    p.adv.resize(n);
    for (int b = 0; b < p.rows; ++b) {
        for (int attempt = 0;; ++attempt) {
            REQUIRE(attempt < 1000);
            double seq = 0, count = 0;
            for (int t = 0; t < p.cols; ++t) {
                const auto i = static_cast<std::size_t>(b * p.cols + t);
                p.lp[i] = -std::abs(normal(gen)) * 1.5 - 0.05;
                p.old[i] = p.lp[i] - spread * normal(gen);
                p.adv[i] = 1.5 * normal(gen);
                if (mask[i] != 0) {
                    seq += p.lp[i] - p.old[i];
                    count += 1;
                }
            }
            seq /= std::max(count, 1.0);
            bool ok = true;
            for (int t = 0; t < p.cols && ok; ++t) {
                const auto i = static_cast<std::size_t>(b * p.cols + t);
                if (mask[i] == 0) continue;
                const double d = o.level == rlhf::importance_ratio_level::sequence ? seq : p.lp[i] - p.old[i];
                ok = !near_kink(d, p.adv[i], o);
            }
            if (ok) break;
        }
    }
    return p;
}

struct named_options {
    const char* name;
    rlhf::policy_loss_options options;
};

std::vector<named_options> policy_variants() {
    using rlhf::importance_ratio_level;
    return {
        {"vanilla", {}},
        {"clip-higher (DAPO)", {.clip_low = 0.2, .clip_high = 0.28}},
        {"verl: dual clip 3 and log-ratio clamp 20", {.dual_clip = 3.0, .log_ratio_min = -20.0, .log_ratio_max = 20.0}},
        {"active log-ratio clamp", {.log_ratio_min = -0.5, .log_ratio_max = 0.6}},
        {"OpenRL ratio cap", {.ratio_cap = 1.5}},
        {"ChatLearn: upper log-ratio clamp, loss cap", {.loss_cap = 1.0, .log_ratio_max = 0.9}},
        {"DeepSpeed-Chat: masked log-ratio", {.mask_log_ratio = true}},
        {"ColossalChat v2: ratio clamp, skip threshold",
         {.ratio_cap = 2.0, .mask_log_ratio = true, .skip_threshold = 20.0}},
        {"TRL: ratio threshold not exceeded", {.ratio_threshold = 10.0}},
        {"GSPO", {.level = importance_ratio_level::sequence}},
        {"GSPO with clamp and dual clip",
         {.dual_clip = 1.2, .log_ratio_min = -0.3, .log_ratio_max = 0.3, .level = importance_ratio_level::sequence}},
        {"everything",
         {.clip_low = 0.1,
          .clip_high = 0.3,
          .dual_clip = 2.0,
          .ratio_cap = 2.5,
          .loss_cap = 1.5,
          .log_ratio_min = -1.0,
          .log_ratio_max = 1.0}},
    };
}

std::vector<std::pair<const char*, rlhf::aggregation_options>> aggregation_variants() {
    using rlhf::loss_aggregation;
    return {
        {"token-mean", {}},
        {"token-mean global dp2", {.global_token_count = 50.0, .dp_size = 2.0}},
        {"seq-mean-token-mean", {.mode = loss_aggregation::seq_mean_token_mean}},
        {"seq-mean-token-sum global dp2",
         {.mode = loss_aggregation::seq_mean_token_sum, .global_sequence_count = 6.0, .dp_size = 2.0}},
        {"seq-mean-token-sum-norm", {.mode = loss_aggregation::seq_mean_token_sum_norm}},
        {"seq-mean-token-sum-norm 100", {.mode = loss_aggregation::seq_mean_token_sum_norm, .normalizer = 100.0}},
    };
}

// Every policy variant under every aggregation, named "<variant> / <aggregation>".
std::vector<std::pair<std::string, rlhf::policy_loss_options>> variant_grid() {
    std::vector<std::pair<std::string, rlhf::policy_loss_options>> grid;
    for (const auto& [name, base] : policy_variants())
        for (const auto& [agg_name, agg] : aggregation_variants()) {
            rlhf::policy_loss_options o = base;
            o.aggregation = agg;
            grid.emplace_back(std::string(name) + " / " + agg_name, o);
        }
    return grid;
}

}  // namespace

TEST_CASE("policy_loss: hand-computed values of each branch" * doctest::test_suite("unit")) {
    // lp - old = [ln 1.5, ln 0.5, 0, 5], A = [1, 1, -2, 7], the last token masked.
    problem p{1, 4, {std::log(1.5), std::log(0.5), 0.0, 5.0}, {0, 0, 0, 0}, {1, 1, -2, 7}, {1, 1, 1, 0}};
    std::vector<double> g, tokens;
    const auto r = run(p, {}, &g, &tokens);
    // t0: ratio 1.5 clipped at 1.2 -> L = -1.2, no gradient. t1: ratio 0.5 unclipped for A > 0
    // -> L = -0.5, dL/dlp = -0.5. t2: ratio 1 (tie of both branches) -> L = 2, dL/dlp = 2.
    CHECK(r.loss == doctest::Approx((-1.2 - 0.5 + 2.0) / 3.0).epsilon(1e-14));
    CHECK(g[0] == 0.0);
    CHECK(g[1] == doctest::Approx(-0.5 / 3.0).epsilon(1e-14));
    CHECK(g[2] == doctest::Approx(2.0 / 3.0).epsilon(1e-14));
    CHECK(g[3] == 0.0);
    CHECK(tokens[0] == doctest::Approx(-1.2).epsilon(1e-14));
    CHECK(tokens[3] == doctest::Approx(-1.2 * 7).epsilon(1e-14));  // written even where masked
    CHECK(r.stats.clip_fraction == doctest::Approx(1.0 / 3.0));
    CHECK(r.stats.clip_fraction_lower == 0.0);
    const double l15 = std::log(1.5), l05 = std::log(0.5);
    CHECK(r.stats.approx_kl == doctest::Approx(0.5 * (l15 * l15 + l05 * l05) / 3.0).epsilon(1e-14));
    CHECK(r.stats.policy_kl == doctest::Approx(-(l15 + l05) / 3.0).epsilon(1e-14));
    CHECK(r.stats.ratio_mean == doctest::Approx(1.0).epsilon(1e-14));
    CHECK(r.stats.ratio_max == doctest::Approx(1.5).epsilon(1e-14));
    CHECK(r.stats.ratio_mean_all_positions == doctest::Approx((3.0 + std::exp(5.0)) / 4.0).epsilon(1e-14));
    CHECK(r.stats.valid_tokens == 3.0);
    CHECK_FALSE(r.stats.ratio_threshold_exceeded);
    // Masked log-ratio (DeepSpeed-Chat, ColossalChat): the padding has ratio 1.
    const auto masked = run(p, {.mask_log_ratio = true, .skip_threshold = 1.0});
    CHECK(masked.loss == doctest::Approx(r.loss).epsilon(1e-14));
    CHECK(masked.stats.ratio_mean_all_positions == doctest::Approx(1.0).epsilon(1e-14));
    CHECK_FALSE(masked.stats.skip_threshold_exceeded);  // 1 is not > 1
    CHECK(run(p, {.skip_threshold = 20.0}).stats.skip_threshold_exceeded);
}

TEST_CASE("policy_loss: dual clip / ratio cap and loss cap at ratio 4 / A = -1" * doctest::test_suite("unit")) {
    problem p{1, 2, {std::log(4.0), std::log(4.0)}, {0, 0}, {-1, 1}, {1, 0}};
    std::vector<double> g;
    auto r = run(p, {}, &g);
    CHECK(r.loss == doctest::Approx(4.0).epsilon(1e-14));  // max(4, 1.2)
    CHECK(g[0] == doctest::Approx(4.0).epsilon(1e-14));    // -A * ratio
    r = run(p, {.dual_clip = 3.0}, &g);                    // Ye et al.: min(4, 3)
    CHECK(r.loss == doctest::Approx(3.0).epsilon(1e-14));
    CHECK(g[0] == 0.0);
    CHECK(r.stats.clip_fraction_lower == 1.0);
    r = run(p, {.loss_cap = 3.0}, &g);  // ChatLearn's constant cap
    CHECK(r.loss == doctest::Approx(3.0).epsilon(1e-14));
    CHECK(g[0] == 0.0);
    r = run(p, {.ratio_cap = 3.0}, &g);  // OpenRL: ratio 4 -> 3 before the clip
    CHECK(r.loss == doctest::Approx(3.0).epsilon(1e-14));
    CHECK(g[0] == 0.0);
    CHECK(r.stats.ratio_max == doctest::Approx(4.0));  // statistics see the ratio before the cap
    r = run(p, {.ratio_cap = 5.0}, &g);
    CHECK(g[0] == doctest::Approx(4.0).epsilon(1e-14));
    // A > 0 is never dual-clipped: the positive token (now valid) stays at -1.2.
    p.mask = {0, 1};
    r = run(p, {.dual_clip = 3.0}, &g);
    CHECK(r.loss == doctest::Approx(-1.2).epsilon(1e-14));
    CHECK(r.stats.clip_fraction_lower == 0.0);
    CHECK(r.stats.clip_fraction == 1.0);
}

TEST_CASE("policy_loss: ties follow torch (clamp inclusive / min/max split in halves)" *
          doctest::test_suite("gradient")) {
    // Ratio 1, A = -3: L = 3 exactly equals the loss cap 3 -> torch.min gives half the gradient.
    problem p{1, 1, {0.0}, {0.0}, {-3.0}, {1}};
    std::vector<double> g;
    (void)run(p, {.loss_cap = 3.0}, &g);
    CHECK(g[0] == doctest::Approx(1.5).epsilon(1e-15));
    // Log-ratio exactly on the clamp bound: torch.clamp passes the gradient.
    p.lp = {0.5};
    (void)run(p, {.clip_high = 1.0, .log_ratio_max = 0.5}, &g);
    CHECK(g[0] == doctest::Approx(3.0 * std::exp(0.5)).epsilon(1e-15));
}

TEST_CASE("policy_loss: GSPO sequence ratio and its gradient to every token of the row" * doctest::test_suite("unit")) {
    problem p{1, 3, {0.1, 0.3, 9.0}, {0, 0, 0}, {1, -1, 5}, {1, 1, 0}};
    std::vector<double> g;
    const auto r = run(p, {.level = rlhf::importance_ratio_level::sequence}, &g);
    const double rho = std::exp(0.2);  // > 1.2: clipped for A > 0, unclipped for A < 0
    CHECK(r.loss == doctest::Approx((-1.2 + rho) / 2.0).epsilon(1e-14));
    // d loss / d rho = (0 + rho) / 2 per unit log-ratio; d mean / d lp_t = 1/2 for each valid token.
    CHECK(g[0] == doctest::Approx(rho / 4.0).epsilon(1e-14));
    CHECK(g[1] == doctest::Approx(rho / 4.0).epsilon(1e-14));
    CHECK(g[2] == 0.0);
    CHECK(r.stats.ratio_mean == doctest::Approx(rho).epsilon(1e-14));
    CHECK(r.stats.policy_kl == doctest::Approx(-0.2).epsilon(1e-14));
}

TEST_CASE("policy_loss: TRL ratio threshold zeroes loss and gradient" * doctest::test_suite("unit")) {
    problem p{1, 2, {3.0, 3.0}, {0, 0}, {-1, 1}, {1, 1}};
    std::vector<double> g;
    auto r = run(p, {.ratio_threshold = 10.0}, &g);
    CHECK(r.stats.ratio_threshold_exceeded);
    CHECK(r.stats.ratio_mean == doctest::Approx(std::exp(3.0)));
    CHECK(r.loss == 0.0);
    CHECK(g == std::vector<double>{0.0, 0.0});
    r = run(p, {.ratio_threshold = 30.0}, &g);
    CHECK_FALSE(r.stats.ratio_threshold_exceeded);
    CHECK(r.loss != 0.0);
}

TEST_CASE("policy_loss: agrees with a naive reference for every option and aggregation" * doctest::test_suite("unit")) {
    unsigned seed = 1;
    for (const auto& entry : variant_grid()) {  // CAPTURE's lambda cannot name a structured binding in clang 14
        CAPTURE(entry.first);
        const rlhf::policy_loss_options& o = entry.second;
        const problem p = random_problem(o, seed++);
        const auto r = run(p, o);
        const auto ref = reference(p, o);
        CHECK(r.loss == doctest::Approx(ref.loss).epsilon(1e-12));
        CHECK(r.stats.clip_fraction == doctest::Approx(ref.clip_fraction).epsilon(1e-12));
        CHECK(r.stats.clip_fraction_lower == doctest::Approx(ref.clip_fraction_lower).epsilon(1e-12));
        CHECK(r.stats.approx_kl == doctest::Approx(ref.approx_kl).epsilon(1e-12));
        CHECK(r.stats.policy_kl == doctest::Approx(ref.policy_kl).epsilon(1e-12));
        CHECK(r.stats.policy_kl_clamped == doctest::Approx(ref.policy_kl_clamped).epsilon(1e-12));
        CHECK(r.stats.ratio_mean == doctest::Approx(ref.ratio_mean).epsilon(1e-12));
        CHECK(r.stats.ratio_max == doctest::Approx(ref.ratio_max).epsilon(1e-12));
    }
}

TEST_CASE("policy_loss: every gradient matches central finite differences" * doctest::test_suite("gradient")) {
    unsigned seed = 100;
    int lower_hits = 0, clip_hits = 0;
    for (const auto& entry : variant_grid()) {  // lambdas below capture `o`: no structured binding (clang 14)
        CAPTURE(entry.first);
        const rlhf::policy_loss_options& o = entry.second;
        problem p = random_problem(o, seed++);
        std::vector<double> g;
        const auto r = run(p, o, &g);
        if (r.stats.clip_fraction_lower > 0) ++lower_hits;
        if (r.stats.clip_fraction > 0) ++clip_hits;
        const auto loss = [&] { return run(p, o).loss; };
        for (std::size_t i = 0; i < p.lp.size(); ++i) {
            CAPTURE(i);
            const double fd = rlhf_test::central_difference(loss, p.lp, i, 1e-6);
            CHECK(std::abs(fd - g[i]) <= 1e-7 * std::max(1.0, std::abs(g[i])));
        }
    }
    CHECK(lower_hits > 0);  // the dual clip branch was exercised
    CHECK(clip_hits > 0);
}

TEST_CASE_TEMPLATE("policy_loss: float values and every mask type agree with double" * doctest::test_suite("unit"), M,
                   bool, std::uint8_t, std::int32_t, std::int64_t, float) {
    const rlhf::policy_loss_options o{.clip_high = 0.28, .dual_clip = 3.0, .log_ratio_min = -20, .log_ratio_max = 20};
    const problem p = random_problem(o, 7);
    std::vector<double> gd;
    const auto rd = run(p, o, &gd);
    const std::vector<float> lp(p.lp.begin(), p.lp.end()), old(p.old.begin(), p.old.end()),
        adv(p.adv.begin(), p.adv.end());
    const rlhf_test::mask_buffer<M> mask(p.mask);
    std::vector<float> gf(lp.size());
    const auto rf = rlhf::policy_loss(rlhf::make_view(lp.data(), 4, 7), rlhf::make_view(old.data(), 4, 7),
                                      rlhf::make_view(adv.data(), 4, 7), mask.view(4, 7),
                                      rlhf::make_mut_view(gf.data(), 4, 7), {}, o);
    CHECK(rf.loss == doctest::Approx(rd.loss).epsilon(1e-5));
    CHECK(rf.stats.clip_fraction == rd.stats.clip_fraction);
    for (std::size_t i = 0; i < gf.size(); ++i) CHECK(gf[i] == doctest::Approx(gd[i]).epsilon(1e-5));
}

TEST_CASE_TEMPLATE("policy_loss: extreme log-ratios never give NaN" * doctest::test_suite("unit"), T, float, double) {
    const std::vector<T> extremes{30, -30, 50, -50, 100, -100, 800, -800};
    for (const T d : extremes) {
        for (const T a : {T(-1.5), T(0), T(2)}) {
            CAPTURE(d);
            CAPTURE(a);
            const std::vector<T> lp{d, T(0)}, old{T(0), T(0)}, adv{a, T(1)};
            const std::vector<std::uint8_t> mask{1, 1};
            std::vector<T> g(2);
            const auto call = [&](const rlhf::policy_loss_options& o) {
                return rlhf::policy_loss(rlhf::make_view(lp.data(), 1, 2), rlhf::make_view(old.data(), 1, 2),
                                         rlhf::make_view(adv.data(), 1, 2), rlhf::make_view(mask.data(), 1, 2),
                                         rlhf::make_mut_view(g.data(), 1, 2), {}, o);
            };
            // With the verl/OpenRLHF clamp: finite loss and gradient; the clamped token has none.
            auto r = call({.log_ratio_min = -20, .log_ratio_max = 20});
            CHECK(std::isfinite(r.loss));
            CHECK(g[0] == T(0));
            CHECK(std::isfinite(g[1]));
            r = call({.dual_clip = 3.0, .log_ratio_min = -20, .log_ratio_max = 20});
            CHECK(std::isfinite(r.loss));
            if (d > 0 && a < 0) CHECK(r.loss == doctest::Approx((3.0 * 1.5 - 1.0) / 2.0));
            // ColossalChat v2 (masked log-ratio, ratio clamp 10) and ChatLearn (upper clamp 10,
            // loss cap 3): finite as well.
            r = call({.ratio_cap = 10.0, .mask_log_ratio = true, .skip_threshold = 20.0});
            CHECK(std::isfinite(r.loss));
            CHECK(std::isfinite(g[0]));
            CHECK(r.stats.skip_threshold_exceeded == (d >= 30));
            r = call({.loss_cap = 3.0, .log_ratio_max = 10.0});
            CHECK(std::isfinite(r.loss));
            CHECK(std::isfinite(g[0]));
            // No clamp: inf only where the unclipped branch of A < 0 is selected, never NaN.
            r = call({});
            CHECK_FALSE(std::isnan(r.loss));
            CHECK_FALSE(std::isnan(g[0]));
            const bool overflow = std::isinf(std::exp(d));
            if (overflow && a < 0) {
                CHECK(r.loss == std::numeric_limits<double>::infinity());
                CHECK(g[0] == std::numeric_limits<T>::infinity());
            } else {
                CHECK(std::isfinite(r.loss));
                CHECK(std::isfinite(g[0]));
            }
            // TRL: an overflowing mean ratio skips the step: 0 and 0, not inf * 0.
            r = call({.ratio_threshold = 10.0});
            CHECK_FALSE(std::isnan(r.loss));
            if (d > 0) {
                CHECK(r.stats.ratio_threshold_exceeded);
                CHECK(r.loss == 0.0);
                CHECK(g[0] == T(0));
            }
            // GSPO without clamp: the row ratio is exp(d / 2).
            r = call({.level = rlhf::importance_ratio_level::sequence});
            CHECK_FALSE(std::isnan(r.loss));
            CHECK_FALSE(std::isnan(g[0]));
            CHECK_FALSE(std::isnan(g[1]));
        }
    }
}

TEST_CASE("policy_loss: bad inputs and options name the argument" * doctest::test_suite("unit")) {
    problem p{2, 3, {-1, -1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1, -1}, {1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}};
    using rlhf_test::view_of;
    auto e = expect_error([&] {
        (void)rlhf::policy_loss(p.v(p.lp), view_of(p.old, 3, 2), p.v(p.adv), p.v(p.mask), rlhf::mut_view<double>{});
    });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "old_log_probs");
    CHECK(e.function() == "rlhf::policy_loss");
    e = expect_error([&] {
        (void)rlhf::policy_loss(p.v(p.lp), p.v(p.old), view_of(p.adv, 1, 6), p.v(p.mask), rlhf::mut_view<double>{});
    });
    CHECK(e.argument() == "advantages");
    e = expect_error([&] {
        (void)rlhf::policy_loss(p.v(p.lp), p.v(p.old), p.v(p.adv), view_of(p.mask, 3, 2), rlhf::mut_view<double>{});
    });
    CHECK(e.argument() == "mask");
    std::vector<double> small(4);
    e = expect_error([&] {
        (void)rlhf::policy_loss(p.v(p.lp), p.v(p.old), p.v(p.adv), p.v(p.mask),
                                rlhf::make_mut_view(small.data(), 2, 2));
    });
    CHECK(e.argument() == "grad_log_probs");
    e = expect_error([&] {
        (void)rlhf::policy_loss(p.v(p.lp), p.v(p.old), p.v(p.adv), p.v(p.mask), rlhf::mut_view<double>{},
                                rlhf::make_mut_view(small.data(), 1, 4));
    });
    CHECK(e.argument() == "token_losses");
    for (const char* which : {"log_probs", "old_log_probs", "advantages"}) {
        problem bad = p;
        std::vector<double>& x =
            std::string(which) == "log_probs" ? bad.lp : (std::string(which) == "old_log_probs" ? bad.old : bad.adv);
        x[5] = std::numeric_limits<double>::quiet_NaN();  // a masked position: still rejected
        e = expect_error([&] { (void)run(bad, {}); });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == which);
        CHECK(e.actual() == "nan at [1, 2]");
        x[5] = -std::numeric_limits<double>::infinity();
        e = expect_error([&] { (void)run(bad, {}); });
        CHECK(e.argument() == which);
    }
    problem bad_mask = p;
    bad_mask.mask[1] = 0.5;
    e = expect_error([&] { (void)run(bad_mask, {}); });
    CHECK(e.argument() == "mask");
    problem empty = p;
    empty.mask.assign(6, 0.0);
    for (const auto mode : {rlhf::loss_aggregation::token_mean, rlhf::loss_aggregation::seq_mean_token_mean}) {
        e = expect_error([&] { (void)run(empty, {.aggregation = {.mode = mode}}); });
        CHECK(e.kind() == rlhf::error_kind::value);
        CHECK(e.argument() == "mask");
        CHECK(e.function() == "rlhf::policy_loss");
    }
    // A positive global divisor: an empty local mask contributes 0 and a zero gradient.
    std::vector<double> g;
    const auto r = run(empty, {.aggregation = {.global_token_count = 12.0}}, &g);
    CHECK(r.loss == 0.0);
    CHECK(g == std::vector<double>(6, 0.0));
    CHECK(r.stats.valid_tokens == 0.0);
    CHECK(r.stats.ratio_mean == 0.0);

    const auto config_error = [&](const rlhf::policy_loss_options& o, const char* argument) {
        const auto err = expect_error([&] { (void)run(p, o); });
        CHECK(err.kind() == rlhf::error_kind::config);
        CHECK(err.argument() == argument);
    };
    config_error({.clip_low = -0.1}, "options.clip_low");
    config_error({.clip_low = 1.5}, "options.clip_low");
    config_error({.clip_high = -0.2}, "options.clip_high");
    config_error({.clip_high = std::numeric_limits<double>::infinity()}, "options.clip_high");
    config_error({.dual_clip = 1.0}, "options.dual_clip");
    config_error({.dual_clip = 0.5}, "options.dual_clip");
    config_error({.ratio_cap = 0.0}, "options.ratio_cap");
    config_error({.loss_cap = std::numeric_limits<double>::quiet_NaN()}, "options.loss_cap");
    config_error({.log_ratio_min = 1.0, .log_ratio_max = -1.0}, "options.log_ratio_max");
    config_error({.log_ratio_min = -std::numeric_limits<double>::infinity()}, "options.log_ratio_min");
    config_error({.skip_threshold = -1.0}, "options.skip_threshold");
    config_error({.ratio_threshold = 0.0}, "options.ratio_threshold");
    config_error({.aggregation = {.dp_size = 0.0}}, "options.aggregation.dp_size");
    config_error({.aggregation = {.normalizer = -3.0}}, "options.aggregation.normalizer");
}

TEST_CASE("importance_ratio_level names round-trip" * doctest::test_suite("unit")) {
    CHECK(rlhf::to_string(rlhf::importance_ratio_level::sequence) == "sequence");
    CHECK(rlhf::parse_option<rlhf::importance_ratio_level>("token") == rlhf::importance_ratio_level::token);
    CHECK(rlhf::parse_option<rlhf::importance_ratio_level>("gspo") == rlhf::importance_ratio_level::sequence);
}

TEST_CASE("policy_loss: verl's ppo_kl uses the clamped log-ratio" * doctest::test_suite("unit")) {
    // Log-ratios 50, -30 and 0.5 with the ±20 clamp: policy_kl = -(50 - 30 + 0.5) / 3, the clamped
    // statistic -(20 - 20 + 0.5) / 3; without a clamp both are equal.
    const std::vector<double> lp{0.0, -40.0, -1.0}, old{-50.0, -10.0, -1.5}, adv{1.0, -1.0, 0.5}, mask{1.0, 1.0, 1.0};
    const auto v = [](const std::vector<double>& x) { return rlhf::make_view(x.data(), 1, 3); };
    const rlhf::mut_view<double> none{};
    auto r = rlhf::policy_loss(v(lp), v(old), v(adv), v(mask), none, none, {.log_ratio_min = -20, .log_ratio_max = 20});
    CHECK(r.stats.policy_kl == doctest::Approx(-(50.0 - 30.0 + 0.5) / 3.0).epsilon(1e-15));
    CHECK(r.stats.policy_kl_clamped == doctest::Approx(-(20.0 - 20.0 + 0.5) / 3.0).epsilon(1e-15));
    r = rlhf::policy_loss(v(lp), v(old), v(adv), v(mask), none, none);
    CHECK(r.stats.policy_kl_clamped == r.stats.policy_kl);
}

TEST_CASE("policy_loss and value_loss: a bad input raises before any output is written" * doctest::test_suite("unit")) {
    // The checks run in one pass over the rows (with the mask counts) before the fused pass: the
    // outputs keep their contents, and the error names the first bad argument in argument order
    // even when a later argument goes bad in an earlier row.
    const rlhf::index_t b = 3, t = 300;
    std::vector<float> lp(b * t, -1.0f), old(b * t, -1.1f), adv(b * t, 0.5f), mask(b * t, 1.0f);
    std::vector<float> grad(b * t, 7.0f), tokens(b * t, 7.0f);
    const auto v = [&](const std::vector<float>& x) { return rlhf::make_view(x.data(), b, t); };
    const auto call_policy = [&] {
        (void)rlhf::policy_loss(v(lp), v(old), v(adv), v(mask), rlhf::make_mut_view(grad.data(), b, t),
                                rlhf::make_mut_view(tokens.data(), b, t));
    };
    const auto call_value = [&] {
        (void)rlhf::value_loss(v(lp), v(old), v(adv), v(mask), rlhf::make_mut_view(grad.data(), b, t),
                               rlhf::make_mut_view(tokens.data(), b, t));
    };
    const auto untouched = [&] {
        return std::all_of(grad.begin(), grad.end(), [](float x) { return x == 7.0f; }) &&
               std::all_of(tokens.begin(), tokens.end(), [](float x) { return x == 7.0f; });
    };
    mask[1] = 0.5f;                                           // row 0: the mask
    adv[t + 5] = std::numeric_limits<float>::infinity();      // row 1: the third input
    lp[2 * t + 9] = std::numeric_limits<float>::quiet_NaN();  // row 2: the first input
    auto e = expect_error(call_policy);
    CHECK(e.argument() == "log_probs");
    CHECK(e.actual() == "nan at [2, 9]");
    CHECK(untouched());
    CHECK(expect_error(call_value).argument() == "values");
    CHECK(untouched());
    lp[2 * t + 9] = -1.0f;
    CHECK(expect_error(call_policy).argument() == "advantages");
    CHECK(expect_error(call_value).argument() == "returns");
    CHECK(untouched());
    adv[t + 5] = 0.5f;
    e = expect_error(call_policy);
    CHECK(e.argument() == "mask");
    CHECK(e.actual() == "0.5 at [0, 1]");
    CHECK(expect_error(call_value).argument() == "mask");
    CHECK(untouched());
    mask[1] = 1.0f;
    call_policy();
    CHECK(!untouched());
}

// Found by tests/fuzz (docs/fuzzing.md): an unknown level acted as the token level; in float32 a
// weight beyond float's range times a zero gradient, lp − old beyond float's range at a masked
// token (statistics, mask_log_ratio) and a log-ratio clamp beyond float's range gave NaN.
TEST_CASE("policy_loss: unknown level is refused and float32 overflow never gives NaN" * doctest::test_suite("unit")) {
    const auto v = [](const std::vector<float>& x) { return rlhf::make_view(x.data(), 1, 2); };
    const std::vector<float> lp{-1.0f, -2.0f}, old{-1.1f, -1.9f}, adv{0.5f, 0.0f}, ones{1.0f, 1.0f};
    rlhf_test::check_error(
        [&] {
            (void)rlhf::policy_loss(v(lp), v(old), v(adv), v(ones), {}, {},
                                    {.level = static_cast<rlhf::importance_ratio_level>(5)});
        },
        rlhf::error_kind::config, "options.level");

    // dp_size 1e39: the token weight 5e38 is +inf in float; A = 0 at token 1 has gradient 0.
    std::vector<float> grad(2, -99.0f);
    (void)rlhf::policy_loss(v(lp), v(old), v(adv), v(ones), rlhf::make_mut_view(grad.data(), 1, 2), {},
                            {.aggregation = {.dp_size = 1e39}});
    CHECK(grad[1] == 0.0f);
    CHECK_FALSE(std::isnan(grad[0]));

    // lp − old = −4e38 at a masked token: −inf in float, 0·inf in the statistics.
    const std::vector<float> lp2{-1e38f, -1.0f}, old2{3e38f, -1.1f}, mask{0.0f, 1.0f};
    for (const bool mask_log_ratio : {false, true}) {
        const rlhf::policy_loss_result r = rlhf::policy_loss(
            v(lp2), v(old2), v(adv), v(mask), {}, {}, {.log_ratio_min = -1e39, .mask_log_ratio = mask_log_ratio});
        CHECK(r.stats.policy_kl == doctest::Approx(-0.1).epsilon(1e-6));
        CHECK(r.stats.policy_kl_clamped == doctest::Approx(-0.1).epsilon(1e-6));
        CHECK(std::isfinite(r.stats.approx_kl));
        if (mask_log_ratio)  // the masked token has ratio 1
            CHECK(r.stats.ratio_mean_all_positions == doctest::Approx((1.0 + std::exp(0.1)) / 2.0).epsilon(1e-6));
    }
}
