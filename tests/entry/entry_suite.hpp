#pragma once
// One test suite for the container entry points (rlhf/entry/), run once per backend: every entry
// point, on containers of the backend, returns exactly what its kernel writes on views of the same
// data, in float and double; shape errors name the argument. A backend's test file defines a
// `Containers` struct (how to build its containers from row-major vectors and read them back) and
// expands RLHF_ENTRY_SUITE(Containers).
//
// Containers::matrix<E>(data, rows, cols), vector<E>(data), cube<E>(data, B, T, V): new containers;
// Containers::values<E>(container): the elements in row-major order; Containers::none<E>(): an
// absent container; Containers::name: the backend's name.

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "rlhf/entry.hpp"
#include "rlhf/rlhf.hpp"
#include "support/test_helpers.hpp"

namespace rlhf_test::entry {

constexpr rlhf::index_t rows = 4, cols = 6, vocab = 5;

/// Seeded inputs of every entry point, as row-major vectors and kernel views.
template <class T>
struct batch {
    std::vector<T> a, b, c, d, scores, baselines, logits, ref_logits;
    std::vector<std::uint8_t> mask =
        mask_pattern(rows, cols).right_padding(1, 4).left_padding(2, 2).hole(3, 1, 3).values<std::uint8_t>();
    std::vector<std::uint8_t> range_mask =  // contiguous valid positions (DeepSpeed-Chat's GAE range)
        mask_pattern(rows, cols).right_padding(1, 4).left_padding(2, 2).values<std::uint8_t>();
    std::vector<std::int64_t> ids{7, -1, 7, -1};
    std::vector<std::int64_t> tokens;
    explicit batch(unsigned seed) {
        std::mt19937 rng(seed);
        std::normal_distribution<double> normal;
        std::uniform_int_distribution<std::int64_t> token(0, vocab - 1);
        for (rlhf::index_t i = 0; i < rows * cols; ++i) {
            a.push_back(static_cast<T>(-std::abs(normal(rng))));
            b.push_back(static_cast<T>(static_cast<double>(a.back()) + 0.2 * normal(rng)));
            c.push_back(static_cast<T>(normal(rng)));
            d.push_back(static_cast<T>(normal(rng)));
            tokens.push_back(token(rng));
        }
        for (rlhf::index_t i = 0; i < rows; ++i) {
            scores.push_back(static_cast<T>(normal(rng)));
            baselines.push_back(static_cast<T>(normal(rng)));
        }
        for (rlhf::index_t i = 0; i < rows * cols * vocab; ++i) {
            logits.push_back(static_cast<T>(2.0 * normal(rng)));
            ref_logits.push_back(static_cast<T>(2.0 * normal(rng)));
        }
    }
    [[nodiscard]] static rlhf::extents_t<3> cube_extents() { return {rows, cols, vocab}; }
    [[nodiscard]] rlhf::view<T, 3> cube_view(const std::vector<T>& v) const {
        return {v.data(), cube_extents(), {cols * vocab, vocab, 1}};
    }
};

/// A zero-filled row-major buffer for a kernel to write.
template <class T>
std::vector<T> zeros(rlhf::index_t n) {
    return std::vector<T>(static_cast<std::size_t>(n));
}

template <class C, class T>
void check_advantages(unsigned seed) {
    const batch<T> x(seed);
    auto adv = zeros<T>(rows * cols), ret = zeros<T>(rows * cols), out = zeros<T>(rows * cols);
    const auto A = C::template matrix<T>(x.a, rows, cols), B = C::template matrix<T>(x.b, rows, cols);
    const auto Cc = C::template matrix<T>(x.c, rows, cols);
    const auto S = C::template vector<T>(x.scores);

    for (const auto masking :
         {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
        const rlhf::gae_options o{.gamma = 0.9, .lambda = 0.8, .masking = masking};
        const auto& mask = masking == rlhf::gae_masking::valid_range ? x.range_mask : x.mask;
        const auto m = view_of(mask, rows, cols);
        const auto M = C::template matrix<std::uint8_t>(mask, rows, cols);
        const auto Mt = C::template matrix<T>(as<T>(mask), rows, cols);  // a mask of the values' type
        rlhf::compute_gae(view_of(x.c, rows, cols), view_of(x.d, rows, cols), m, mut_view_of(adv, rows, cols),
                          mut_view_of(ret, rows, cols), o);
        const auto r = rlhf::compute_gae(Cc, C::template matrix<T>(x.d, rows, cols), M, o);
        CHECK(C::template values<T>(r.advantages) == adv);
        CHECK(C::template values<T>(r.returns) == ret);
        rlhf::compute_gae(view_of(x.c, rows, cols), view_of(x.d, rows, cols), m, vec(x.scores),
                          mut_view_of(adv, rows, cols), mut_view_of(ret, rows, cols), o);
        const auto rb = rlhf::compute_gae(Cc, C::template matrix<T>(x.d, rows, cols), Mt, S, o);
        CHECK(C::template values<T>(rb.advantages) == adv);
        CHECK(C::template values<T>(rb.returns) == ret);
    }
    const auto m = view_of(x.mask, rows, cols);
    const auto M = C::template matrix<std::uint8_t>(x.mask, rows, cols);
    const auto Mt = C::template matrix<T>(as<T>(x.mask), rows, cols);  // a mask of the values' type
    {  // time-major [T, N] = [rows, cols] with terminated/truncated flags
        std::vector<std::uint8_t> done(static_cast<std::size_t>(rows * cols)), cut(done.size());
        for (std::size_t i = 0; i < done.size(); ++i) {
            done[i] = i % 7 == 3 ? 1 : 0;
            cut[i] = i % 5 == 1 && done[i] == 0 ? 1 : 0;
        }
        const std::vector<T> next(x.a.begin(), x.a.begin() + cols);
        rlhf::compute_gae_time_major(view_of(x.c, rows, cols), view_of(x.d, rows, cols), view_of(done, rows, cols),
                                     view_of(cut, rows, cols), view_of(x.b, rows, cols), vec(next),
                                     mut_view_of(adv, rows, cols), mut_view_of(ret, rows, cols), {.gamma = 0.95});
        const auto r = rlhf::compute_gae_time_major(
            Cc, C::template matrix<T>(x.d, rows, cols), C::template matrix<std::uint8_t>(done, rows, cols),
            C::template matrix<std::uint8_t>(cut, rows, cols), B, C::template vector<T>(next), {.gamma = 0.95});
        CHECK(C::template values<T>(r.advantages) == adv);
        CHECK(C::template values<T>(r.returns) == ret);
    }
    {  // statistics and whitening
        const rlhf::whiten_options w{.shift_mean = false, .count_epsilon = 1e-8};
        rlhf::masked_whiten(view_of(x.c, rows, cols), m, mut_view_of(out, rows, cols), w);
        CHECK(C::template values<T>(rlhf::masked_whiten(Cc, M, w)) == out);
        rlhf::whiten(view_of(x.c, rows, cols), mut_view_of(out, rows, cols), w);
        CHECK(C::template values<T>(rlhf::whiten(Cc, w)) == out);
        const rlhf::moments_options mo{.count_epsilon = 1e-8};
        const auto moments = rlhf::compute_masked_moments(view_of(x.c, rows, cols), m, mo);
        const auto got = rlhf::compute_masked_moments(Cc, M, mo);
        CHECK(got.mean == moments.mean);
        CHECK(got.variance == moments.variance);
        CHECK(rlhf::masked_mean(Cc, Mt, mo) == rlhf::masked_mean(view_of(x.c, rows, cols), m, mo));
        CHECK(rlhf::masked_variance(Cc, M, mo) == rlhf::masked_variance(view_of(x.c, rows, cols), m, mo));
        auto per_row = zeros<T>(rows);
        rlhf::masked_mean_per_row(view_of(x.c, rows, cols), m, mut_vec(per_row), mo);
        CHECK(C::template values<T>(rlhf::masked_mean_per_row(Cc, M, mo)) == per_row);
        rlhf::masked_variance_per_row(view_of(x.c, rows, cols), m, mut_vec(per_row), mo);
        CHECK(C::template values<T>(rlhf::masked_variance_per_row(Cc, M, mo)) == per_row);
        rlhf::running_moments kernel_moments, entry_moments;
        (void)kernel_moments.update(vec(x.scores));
        (void)rlhf::update_running_moments(entry_moments, S);
        CHECK(entry_moments.mean() == kernel_moments.mean());
        CHECK(entry_moments.std() == kernel_moments.std());
    }
    {  // the framework presets
        auto rew = zeros<T>(rows * cols);
        const auto preset = rlhf::presets::openrlhf();
        rlhf::compute_advantages(view_of(x.a, rows, cols), view_of(x.b, rows, cols), m, vec(x.scores),
                                 view_of(x.d, rows, cols), mut_view_of(rew, rows, cols), mut_view_of(adv, rows, cols),
                                 mut_view_of(ret, rows, cols), preset, 0.05);
        const auto r = rlhf::compute_advantages(A, B, M, S, C::template matrix<T>(x.d, rows, cols), preset, 0.05);
        CHECK(C::template values<T>(r.rewards) == rew);
        CHECK(C::template values<T>(r.advantages) == adv);
        CHECK(C::template values<T>(r.returns) == ret);
        auto seq_rew = zeros<T>(rows), seq_adv = zeros<T>(rows);
        rlhf::compute_sequence_advantages(view_of(x.a, rows, cols), view_of(x.b, rows, cols), m, vec(x.scores),
                                          vec(x.baselines), mut_vec(seq_rew), mut_vec(seq_adv),
                                          rlhf::presets::colossalchat_v1(), 0.1);
        const auto s = rlhf::compute_sequence_advantages(A, B, M, S, C::template vector<T>(x.baselines),
                                                         rlhf::presets::colossalchat_v1(), 0.1);
        CHECK(C::template values<T>(s.rewards) == seq_rew);
        CHECK(C::template values<T>(s.advantages) == seq_adv);
    }
}

template <class C, class T>
void check_rewards(unsigned seed) {
    const batch<T> x(seed);
    const auto m = view_of(x.mask, rows, cols);
    auto out = zeros<T>(rows * cols);
    const auto A = C::template matrix<T>(x.a, rows, cols), B = C::template matrix<T>(x.b, rows, cols);
    const auto M = C::template matrix<std::uint8_t>(x.mask, rows, cols);
    const auto S = C::template vector<T>(x.scores);
    for (const auto& kl :
         {rlhf::kl_preset::trl(rlhf::kl_estimator::k1), rlhf::kl_preset::verl(rlhf::kl_estimator::k3)}) {
        rlhf::token_kl(view_of(x.a, rows, cols), view_of(x.b, rows, cols), mut_view_of(out, rows, cols), kl);
        CHECK(C::template values<T>(rlhf::token_kl(A, B, kl)) == out);
        rlhf::token_kl(view_of(x.a, rows, cols), view_of(x.b, rows, cols), m, mut_view_of(out, rows, cols), kl);
        CHECK(C::template values<T>(rlhf::token_kl(A, B, M, kl)) == out);
        rlhf::kl_rewards(view_of(x.a, rows, cols), view_of(x.b, rows, cols), mut_view_of(out, rows, cols), 0.2, kl);
        CHECK(C::template values<T>(rlhf::kl_rewards(A, B, 0.2, kl)) == out);
    }
    for (const auto slot : {rlhf::reward_slot::last_valid_token, rlhf::reward_slot::every_valid_token}) {
        const rlhf::reward_shaping_options o{.kl_coef = 0.1, .slot = slot, .score_clip = 1.5};
        rlhf::shape_rewards_from_logprobs(view_of(x.a, rows, cols), view_of(x.b, rows, cols), m, vec(x.scores),
                                          mut_view_of(out, rows, cols), o);
        CHECK(C::template values<T>(rlhf::shape_rewards_from_logprobs(A, B, M, S, o)) == out);
        rlhf::shape_rewards(view_of(x.c, rows, cols), m, vec(x.scores), mut_view_of(out, rows, cols), o);
        CHECK(C::template values<T>(rlhf::shape_rewards(C::template matrix<T>(x.c, rows, cols), M, S, o)) == out);
    }
    auto seq = zeros<T>(rows);
    rlhf::sequence_rewards(vec(x.scores), view_of(x.a, rows, cols), view_of(x.b, rows, cols), m, mut_vec(seq));
    CHECK(C::template values<T>(rlhf::sequence_rewards(S, A, B, M)) == seq);
}

template <class C, class T>
void check_outcome(unsigned seed) {
    const batch<T> x(seed);
    const auto m = view_of(x.mask, rows, cols);
    const auto r = view_of(x.c, rows, cols);
    auto adv = zeros<T>(rows * cols), ret = zeros<T>(rows * cols), s = zeros<T>(rows);
    const auto a = mut_view_of(adv, rows, cols), g = mut_view_of(ret, rows, cols);
    const auto R = C::template matrix<T>(x.c, rows, cols);
    const auto M = C::template matrix<std::uint8_t>(x.mask, rows, cols);
    const auto G = C::template vector<std::int64_t>(x.ids);
    const auto S = C::template vector<T>(x.scores);
    const auto values = [](const auto& container) { return C::template values<T>(container); };

    rlhf::compute_grpo_advantages(r, m, vec(x.ids), a, {.epsilon = 1e-4});
    CHECK(values(rlhf::compute_grpo_advantages(R, M, G, {.epsilon = 1e-4})) == adv);
    rlhf::compute_grpo_advantages(vec(x.scores), vec(x.ids), mut_vec(s));
    CHECK(values(rlhf::compute_grpo_advantages(S, G)) == s);
    rlhf::compute_dr_grpo_advantages(r, m, vec(x.ids), a);
    CHECK(values(rlhf::compute_dr_grpo_advantages(R, M, G)) == adv);
    rlhf::compute_dr_grpo_advantages(vec(x.scores), vec(x.ids), mut_vec(s));
    CHECK(values(rlhf::compute_dr_grpo_advantages(S, G)) == s);
    rlhf::compute_rloo_advantages(r, m, vec(x.ids), a);
    CHECK(values(rlhf::compute_rloo_advantages(R, M, G)) == adv);
    rlhf::compute_rloo_advantages(vec(x.scores), vec(x.ids), mut_vec(s));
    CHECK(values(rlhf::compute_rloo_advantages(S, G)) == s);
    rlhf::compute_opo_advantages(r, m, vec(x.ids), a);
    CHECK(values(rlhf::compute_opo_advantages(R, M, G)) == adv);
    rlhf::compute_cumulative_returns(r, m, g, {.gamma = 0.9});
    CHECK(values(rlhf::compute_cumulative_returns(R, M, {.gamma = 0.9})) == ret);
    rlhf::compute_reinforce_plus_plus_advantages(r, m, a, g, rlhf::reinforce_plus_plus_preset::openrlhf(0.99));
    const auto rpp =
        rlhf::compute_reinforce_plus_plus_advantages(R, M, rlhf::reinforce_plus_plus_preset::openrlhf(0.99));
    CHECK(values(rpp.advantages) == adv);
    CHECK(values(rpp.returns) == ret);
    rlhf::compute_reinforce_plus_plus_baseline_advantages(r, m, vec(x.ids), a, g);
    const auto base = rlhf::compute_reinforce_plus_plus_baseline_advantages(R, M, G);
    CHECK(values(base.advantages) == adv);
    CHECK(values(base.returns) == ret);
    rlhf::compute_remax_advantages(r, m, vec(x.baselines), a, g);
    const auto remax = rlhf::compute_remax_advantages(R, M, C::template vector<T>(x.baselines));
    CHECK(values(remax.advantages) == adv);
    CHECK(values(remax.returns) == ret);
}

template <class C, class T>
void check_losses(unsigned seed) {
    const batch<T> x(seed);
    const auto m = view_of(x.mask, rows, cols);
    auto grad = zeros<T>(rows * cols);
    const auto g = mut_view_of(grad, rows, cols);
    const auto A = C::template matrix<T>(x.a, rows, cols), B = C::template matrix<T>(x.b, rows, cols);
    const auto Cc = C::template matrix<T>(x.c, rows, cols);
    const auto M = C::template matrix<std::uint8_t>(x.mask, rows, cols);

    const rlhf::policy_loss_options po{.clip_low = 0.2, .clip_high = 0.28, .dual_clip = 3.0};
    const auto p =
        rlhf::policy_loss(view_of(x.a, rows, cols), view_of(x.b, rows, cols), view_of(x.c, rows, cols), m, g, {}, po);
    const auto pe = rlhf::policy_loss(A, B, Cc, M, po);
    CHECK(pe.loss == p.loss);
    CHECK(pe.stats.clip_fraction == p.stats.clip_fraction);
    CHECK(C::template values<T>(pe.grad_log_probs) == grad);

    const rlhf::value_loss_options vo{.clip_range = 0.2};
    const auto v =
        rlhf::value_loss(view_of(x.c, rows, cols), view_of(x.d, rows, cols), view_of(x.a, rows, cols), m, g, {}, vo);
    const auto ve = rlhf::value_loss(Cc, C::template matrix<T>(x.d, rows, cols), A, M, vo);
    CHECK(ve.loss == v.loss);
    CHECK(ve.stats.clip_fraction == v.stats.clip_fraction);
    CHECK(C::template values<T>(ve.grad_values) == grad);

    const rlhf::kl_loss_options ko{.coef = 0.1};
    const auto k = rlhf::kl_loss(view_of(x.a, rows, cols), view_of(x.b, rows, cols), m, g, {}, ko);
    const auto ke = rlhf::kl_loss(A, B, M, ko);
    CHECK(ke.loss == k.loss);
    CHECK(C::template values<T>(ke.grad_log_probs) == grad);
    const auto kw =
        rlhf::kl_loss(view_of(x.a, rows, cols), view_of(x.b, rows, cols), view_of(x.d, rows, cols), m, g, {}, ko);
    const auto kwe = rlhf::kl_loss(A, B, C::template matrix<T>(x.d, rows, cols), M, ko);
    CHECK(kwe.loss == kw.loss);
    CHECK(C::template values<T>(kwe.grad_log_probs) == grad);
}

template <class C, class T>
void check_logits(unsigned seed) {
    const batch<T> x(seed);
    const auto m = view_of(x.mask, rows, cols);
    const auto y = view_of(x.tokens, rows, cols);
    const auto z = x.cube_view(x.logits), q = x.cube_view(x.ref_logits);
    auto lp = zeros<T>(rows * cols), h = zeros<T>(rows * cols), grad = zeros<T>(rows * cols * vocab);
    const rlhf::mut_view<T, 3> g{grad.data(), batch<T>::cube_extents(), {cols * vocab, vocab, 1}};
    const auto Z = C::template cube<T>(x.logits, rows, cols, vocab),
               Q = C::template cube<T>(x.ref_logits, rows, cols, vocab);
    const auto Y = C::template matrix<std::int64_t>(x.tokens, rows, cols);
    const auto M = C::template matrix<std::uint8_t>(x.mask, rows, cols);
    const auto GA = C::template matrix<T>(x.a, rows, cols), GC = C::template matrix<T>(x.c, rows, cols);
    const rlhf::logits_options o{.temperature = 0.7};

    rlhf::logprobs_from_logits(z, y, m, mut_view_of(lp, rows, cols), mut_view_of(h, rows, cols), {}, o);
    const auto r = rlhf::logprobs_from_logits(Z, Y, M, o);
    CHECK(C::template values<T>(r.logprobs) == lp);
    CHECK(C::template values<T>(r.entropy) == h);
    rlhf::logprobs_from_logits(z, y, mut_view_of(lp, rows, cols), mut_view_of(h, rows, cols), {}, o);
    const auto ru = rlhf::logprobs_from_logits(Z, Y, o);
    CHECK(C::template values<T>(ru.logprobs) == lp);
    CHECK(C::template values<T>(ru.entropy) == h);

    rlhf::logprobs_from_logits_backward(z, y, m, view_of(x.a, rows, cols), rlhf::view<T>{}, {}, {}, g, o);
    CHECK(C::template values<T>(rlhf::logprobs_from_logits_backward(Z, Y, M, GA, C::template none<T>(), o)) == grad);
    rlhf::logprobs_from_logits_backward(z, y, view_of(x.a, rows, cols), view_of(x.c, rows, cols), {}, {}, g, o);
    CHECK(C::template values<T>(rlhf::logprobs_from_logits_backward(Z, Y, GA, GC, o)) == grad);

    rlhf::entropy_from_logits(z, m, mut_view_of(h, rows, cols), {}, o);
    CHECK(C::template values<T>(rlhf::entropy_from_logits(Z, M, o)) == h);
    rlhf::entropy_from_logits(z, mut_view_of(h, rows, cols), {}, o);
    CHECK(C::template values<T>(rlhf::entropy_from_logits(Z, o)) == h);  // element order is [B, T] either way
    rlhf::entropy_from_logits_backward(z, m, view_of(x.c, rows, cols), {}, {}, g, o);
    CHECK(C::template values<T>(rlhf::entropy_from_logits_backward(Z, M, GC, o)) == grad);

    rlhf::full_kl_from_logits(z, q, m, mut_view_of(h, rows, cols), o);
    CHECK(C::template values<T>(rlhf::full_kl_from_logits(Z, Q, M, o)) == h);
    rlhf::full_kl_from_logits(z, q, mut_view_of(h, rows, cols), o);
    CHECK(C::template values<T>(rlhf::full_kl_from_logits(Z, Q, o)) == h);
    rlhf::full_kl_from_logits_backward(z, q, m, view_of(x.c, rows, cols), g, o);
    CHECK(C::template values<T>(rlhf::full_kl_from_logits_backward(Z, Q, M, GC, o)) == grad);

    const rlhf::lm_loss_options lo{.temperature = 0.7};
    const auto l = rlhf::lm_loss(z, y, m, g, lo);
    const auto le = rlhf::lm_loss(Z, Y, M, lo);
    CHECK(le.loss == l.loss);
    CHECK(le.num_tokens == l.num_tokens);
    CHECK(C::template values<T>(le.grad_logits) == grad);
    const auto lu = rlhf::lm_loss(z, y, g, lo);
    const auto lue = rlhf::lm_loss(Z, Y, lo);
    CHECK(lue.loss == lu.loss);
    CHECK(C::template values<T>(lue.grad_logits) == grad);

    auto gc = zeros<T>(rows), gr = zeros<T>(rows);
    const auto Sc = C::template vector<T>(x.scores), Sr = C::template vector<T>(x.baselines);
    const rlhf::pairwise_loss_options po{.margin = 0.1, .center_rewards_coefficient = 0.01};
    const auto pw = rlhf::pairwise_logsigmoid_loss(vec(x.scores), vec(x.baselines), mut_vec(gc), mut_vec(gr), po);
    const auto pwe = rlhf::pairwise_logsigmoid_loss(Sc, Sr, po);
    CHECK(pwe.loss == pw.loss);
    CHECK(pwe.accuracy == pw.accuracy);
    CHECK(C::template values<T>(pwe.grad_chosen) == gc);
    CHECK(C::template values<T>(pwe.grad_rejected) == gr);
    const std::vector<T> margin(x.a.begin(), x.a.begin() + rows);
    const auto pm =
        rlhf::pairwise_logsigmoid_loss(vec(x.scores), vec(x.baselines), vec(margin), mut_vec(gc), mut_vec(gr), po);
    const auto pme = rlhf::pairwise_logsigmoid_loss(Sc, Sr, C::template vector<T>(margin), po);
    CHECK(pme.loss == pm.loss);
    CHECK(C::template values<T>(pme.grad_chosen) == gc);
    const auto le2 = rlhf::log_exp_loss(vec(x.scores), vec(x.baselines), mut_vec(gc), mut_vec(gr));
    const auto le2e = rlhf::log_exp_loss(Sc, Sr);
    CHECK(le2e.loss == le2.loss);
    CHECK(C::template values<T>(le2e.grad_rejected) == gr);
}

/// Shape errors are the kernels', raised through every backend with the argument's name.
template <class C, class T>
void check_errors() {
    const batch<T> x(5);
    const std::vector<T> short_values(x.a.begin(), x.a.begin() + (rows - 1) * cols);
    const auto A = C::template matrix<T>(x.a, rows, cols);
    const auto M = C::template matrix<std::uint8_t>(x.mask, rows, cols);
    check_error([&] { (void)rlhf::compute_gae(A, C::template matrix<T>(short_values, rows - 1, cols), M); },
                rlhf::error_kind::shape, "values");
    check_error(
        [&] {
            (void)rlhf::masked_whiten(
                A, C::template matrix<std::uint8_t>(std::vector<std::uint8_t>(static_cast<std::size_t>(rows * cols)),
                                                    rows, cols));
        },
        rlhf::error_kind::value, "mask");  // an all-zero mask has no statistics
    check_error(
        [&] {
            (void)rlhf::compute_grpo_advantages(C::template vector<T>(x.scores),
                                                C::template vector<std::int64_t>(std::vector<std::int64_t>{1, 2}));
        },
        rlhf::error_kind::shape, "group_ids");
    std::vector<std::int64_t> bad_tokens = x.tokens;
    bad_tokens[0] = vocab;  // out of the vocabulary at an unmasked position
    check_error(
        [&] {
            (void)rlhf::logprobs_from_logits(C::template cube<T>(x.logits, rows, cols, vocab),
                                             C::template matrix<std::int64_t>(bad_tokens, rows, cols));
        },
        rlhf::error_kind::value, "tokens");
}

}  // namespace rlhf_test::entry

/// The suite's test cases for the backend whose containers `Containers` builds.
#define RLHF_ENTRY_SUITE(Containers)                                                                                  \
    TEST_CASE_TEMPLATE(                                                                                               \
        "entry points on " #Containers " equal the GAE and statistics kernels" * doctest::test_suite("unit"), T,      \
        float, double) {                                                                                              \
        rlhf_test::entry::check_advantages<Containers, T>(11);                                                        \
    }                                                                                                                 \
    TEST_CASE_TEMPLATE(                                                                                               \
        "entry points on " #Containers " equal the KL and reward kernels" * doctest::test_suite("unit"), T, float,    \
        double) {                                                                                                     \
        rlhf_test::entry::check_rewards<Containers, T>(12);                                                           \
    }                                                                                                                 \
    TEST_CASE_TEMPLATE("entry points on " #Containers " equal the critic-free kernels" * doctest::test_suite("unit"), \
                       T, float, double) {                                                                            \
        rlhf_test::entry::check_outcome<Containers, T>(13);                                                           \
    }                                                                                                                 \
    TEST_CASE_TEMPLATE("entry points on " #Containers " equal the loss kernels" * doctest::test_suite("unit"), T,     \
                       float, double) {                                                                               \
        rlhf_test::entry::check_losses<Containers, T>(14);                                                            \
    }                                                                                                                 \
    TEST_CASE_TEMPLATE("entry points on " #Containers " equal the logits kernels" * doctest::test_suite("unit"), T,   \
                       float, double) {                                                                               \
        rlhf_test::entry::check_logits<Containers, T>(15);                                                            \
    }                                                                                                                 \
    TEST_CASE_TEMPLATE(                                                                                               \
        "entry points on " #Containers " raise the kernels' errors by argument" * doctest::test_suite("unit"), T,     \
        float, double) {                                                                                              \
        rlhf_test::entry::check_errors<Containers, T>();                                                              \
    }
