#pragma once
// One body per family for the backends' agreement tests (Eigen, xtensor, LibTorch): every entry
// point of a backend equals the kernel on the same data.
#include <cstddef>
#include <utility>
#include <vector>

#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "support/fixtures.hpp"

/// A static member `name` of the enclosing struct that forwards to `ns::name`.
#define RLHF_TEST_FORWARD(ns, name)                   \
    template <class... Args>                          \
    static decltype(auto) name(Args&&... args) {      \
        return ns::name(std::forward<Args>(args)...); \
    }

/// `struct name` whose static members are the outcome entry points of the backend in namespace `ns`.
#define RLHF_TEST_OUTCOME_BACKEND(name, ns)                                    \
    struct name {                                                              \
        RLHF_TEST_FORWARD(ns, compute_grpo_advantages)                         \
        RLHF_TEST_FORWARD(ns, compute_dr_grpo_advantages)                      \
        RLHF_TEST_FORWARD(ns, compute_rloo_advantages)                         \
        RLHF_TEST_FORWARD(ns, compute_opo_advantages)                          \
        RLHF_TEST_FORWARD(ns, compute_cumulative_returns)                      \
        RLHF_TEST_FORWARD(ns, compute_reinforce_plus_plus_advantages)          \
        RLHF_TEST_FORWARD(ns, compute_reinforce_plus_plus_baseline_advantages) \
        RLHF_TEST_FORWARD(ns, compute_remax_advantages)                        \
    }

/// `struct name` whose static members are the reward entry points of the backend in namespace `ns`.
#define RLHF_TEST_REWARD_BACKEND(name, ns)                 \
    struct name {                                          \
        RLHF_TEST_FORWARD(ns, token_kl)                    \
        RLHF_TEST_FORWARD(ns, shape_rewards_from_logprobs) \
        RLHF_TEST_FORWARD(ns, shape_rewards)               \
    }

namespace rlhf_test {

/// Every outcome estimator of `Backend` (RLHF_TEST_OUTCOME_BACKEND) equals the kernel on the data
/// of `b`, held in the backend's containers `rewards`, `mask`, `ids`, `scores` and `baselines`;
/// `check(result, expected)` compares a backend result with the kernel's output element by element.
/// `grpo` and `cumulative` are the options of the GRPO and cumulative-return calls.
template <class Backend, class T, class R, class M, class G, class S, class Check>
void check_outcome_agreement(const outcome_batch<T>& b, const R& rewards, const M& mask, const G& ids, const S& scores,
                             const S& baselines, Check check, const rlhf::grpo_options& grpo,
                             const rlhf::cumulative_return_options& cumulative) {
    constexpr rlhf::index_t rows = outcome_batch<T>::rows, cols = outcome_batch<T>::cols;
    std::vector<T> a(static_cast<std::size_t>(rows * cols)), g(a.size()), s(static_cast<std::size_t>(rows));
    const auto av = rlhf::make_mut_view(a.data(), rows, cols);
    const auto gv = rlhf::make_mut_view(g.data(), rows, cols);
    const auto sv = mut_vec(s);

    rlhf::compute_grpo_advantages(b.r(), b.m(), b.g(), av, grpo);
    check(Backend::compute_grpo_advantages(rewards, mask, ids, grpo), a);
    rlhf::compute_grpo_advantages(b.s(), b.g(), sv);
    check(Backend::compute_grpo_advantages(scores, ids), s);
    rlhf::compute_dr_grpo_advantages(b.r(), b.m(), b.g(), av);
    check(Backend::compute_dr_grpo_advantages(rewards, mask, ids), a);
    rlhf::compute_dr_grpo_advantages(b.s(), b.g(), sv);
    check(Backend::compute_dr_grpo_advantages(scores, ids), s);
    rlhf::compute_rloo_advantages(b.r(), b.m(), b.g(), av);
    check(Backend::compute_rloo_advantages(rewards, mask, ids), a);
    rlhf::compute_rloo_advantages(b.s(), b.g(), sv);
    check(Backend::compute_rloo_advantages(scores, ids), s);
    rlhf::compute_opo_advantages(b.r(), b.m(), b.g(), av);
    check(Backend::compute_opo_advantages(rewards, mask, ids), a);

    rlhf::compute_cumulative_returns(b.r(), b.m(), gv, cumulative);
    check(Backend::compute_cumulative_returns(rewards, mask, cumulative), g);

    for (const auto& options :
         {rlhf::reinforce_plus_plus_preset::verl(0.99), rlhf::reinforce_plus_plus_preset::openrlhf(1.0)}) {
        rlhf::compute_reinforce_plus_plus_advantages(b.r(), b.m(), av, gv, options);
        const auto result = Backend::compute_reinforce_plus_plus_advantages(rewards, mask, options);
        check(result.advantages, a);
        check(result.returns, g);
    }
    for (const auto& options :
         {rlhf::reinforce_plus_plus_baseline_preset::verl(),
          rlhf::reinforce_plus_plus_baseline_options{.broadcast = rlhf::baseline_broadcast::cumulative_returns}}) {
        rlhf::compute_reinforce_plus_plus_baseline_advantages(b.r(), b.m(), b.g(), av, gv, options);
        const auto result = Backend::compute_reinforce_plus_plus_baseline_advantages(rewards, mask, ids, options);
        check(result.advantages, a);
        check(result.returns, g);
    }
    rlhf::compute_remax_advantages(b.r(), b.m(), b.b(), av, gv);
    const auto remax = Backend::compute_remax_advantages(rewards, mask, baselines);
    check(remax.advantages, a);
    check(remax.returns, g);
}

/// token_kl, shape_rewards_from_logprobs and shape_rewards of `Backend` (RLHF_TEST_REWARD_BACKEND)
/// equal the kernels on the data of `d`, held in the backend's containers `lp`, `ref` and `scores`;
/// token_kl is checked without a mask and with each of `kl_masks`, the shaping with `shaping_mask`
/// and `kl_shaping_mask`; `same(result, expected)` says whether a backend result holds exactly the
/// kernel's output.
template <class Backend, class T, class L, class S, class M1, class M2, class Same, class... Masks>
void check_reward_agreement(const reward_batch<T>& d, const L& lp, const L& ref, const S& scores,
                            const M1& kl_shaping_mask, const M2& shaping_mask, Same same, const Masks&... kl_masks) {
    std::vector<T> expected(static_cast<std::size_t>(d.rows * d.cols));
    const auto out = rlhf::make_mut_view(expected.data(), d.rows, d.cols);
    for (const auto& kl_opts :
         {rlhf::kl_preset::trl(rlhf::kl_estimator::k1), rlhf::kl_preset::verl(rlhf::kl_estimator::k3),
          rlhf::kl_preset::openrlhf(rlhf::kl_estimator::k2)}) {
        rlhf::token_kl(d.lp_view(), d.ref_view(), out, kl_opts);
        CHECK(same(Backend::token_kl(lp, ref, kl_opts), expected));
        rlhf::token_kl(d.lp_view(), d.ref_view(), d.mask_view(), out, kl_opts);
        const auto check_masked = [&](const auto& mask) {
            CHECK(same(Backend::token_kl(lp, ref, mask, kl_opts), expected));
        };
        (check_masked(kl_masks), ...);
    }
    for (const auto slot : {rlhf::reward_slot::last_valid_token, rlhf::reward_slot::after_last_valid,
                            rlhf::reward_slot::every_valid_token, rlhf::reward_slot::first_pad_slot}) {
        const rlhf::reward_shaping_options o{.kl_coef = 0.1,
                                             .slot = slot,
                                             .mask_kl = true,
                                             .score_clip = 1.5,
                                             .empty_rows = rlhf::empty_row_policy::peer_slot,
                                             .kl = rlhf::kl_preset::verl(rlhf::kl_estimator::k3)};
        rlhf::shape_rewards_from_logprobs(d.lp_view(), d.ref_view(), d.mask_view(), d.scores_view(), out, o);
        CHECK(same(Backend::shape_rewards_from_logprobs(lp, ref, kl_shaping_mask, scores, o), expected));
        rlhf::shape_rewards(d.lp_view(), d.mask_view(), d.scores_view(), out, o);  // log-probs standing in for a KL
        CHECK(same(Backend::shape_rewards(lp, shaping_mask, scores, o), expected));
    }
}

}  // namespace rlhf_test
