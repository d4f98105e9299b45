// The CUDA kernels behind the LibTorch entry points: registered by including
// rlhf/cuda/libtorch.cuh, and conformant (rlhf/libtorch/conformance.hpp) on CUDA tensors.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "rlhf/cuda/libtorch.cuh"
#include "rlhf/libtorch/conformance.hpp"

namespace {

namespace lt = rlhf::libtorch;

lt::conformance::conformance_options on_cuda() {
    lt::conformance::conformance_options o;
    o.device = torch::Device(torch::kCUDA);
    o.require_rlhf_error = true;
    return o;
}

torch::Tensor random_bt(std::int64_t rows, std::int64_t cols, torch::Dtype dtype) {
    return torch::randn({rows, cols}, torch::TensorOptions().dtype(dtype));
}

}  // namespace

TEST_SUITE("cuda") {
    TEST_CASE("cuda libtorch: including rlhf/cuda/libtorch.cuh fills the CUDA slots of the entry points") {
        CHECK(static_cast<bool>(lt::cuda_implementation<&lt::torch_ops::policy_loss>::registered));
        CHECK(static_cast<bool>(lt::cuda_implementation<&lt::torch_ops::value_loss<rlhf::local_reducer>>::registered));
        CHECK(static_cast<bool>(lt::cuda_implementation<&lt::torch_ops::logprobs_from_logits>::registered));
        CHECK(static_cast<bool>(lt::cuda_implementation<&lt::torch_ops::entropy_from_logits>::registered));
        CHECK(static_cast<bool>(lt::cuda_implementation<&lt::torch_ops::full_kl_from_logits>::registered));
        CHECK(static_cast<bool>(lt::cuda_implementation<&lt::torch_ops::compute_gae_with_bootstrap>::registered));
    }

    TEST_CASE("cuda libtorch: the policy loss on CUDA tensors passes the conformance suite") {
        const auto report = lt::conformance::check_policy_loss_kernel(
            lt::default_kernels{.readback = lt::statistics_readback::immediate}, on_cuda());
        INFO(report.summary(true));
        CHECK(report.passed());
    }

    TEST_CASE("cuda libtorch: the value loss on CUDA tensors passes the conformance suite") {
        const auto report = lt::conformance::check_value_loss_kernel(
            lt::default_kernels{.readback = lt::statistics_readback::immediate}, on_cuda());
        INFO(report.summary(true));
        CHECK(report.passed());
    }

    TEST_CASE("cuda libtorch: log-probs and entropies of CUDA logits pass the conformance suite") {
        auto options = on_cuda();
        options.require_rlhf_error = false;  // value errors of logits are not checked on the device
        const auto report = lt::conformance::check_logprob_kernel(lt::default_kernels{}, options);
        INFO(report.summary(true));
        CHECK(report.passed());
    }

    TEST_CASE("cuda libtorch: entropy and full-vocabulary KL of CUDA logits equal the CPU path with gradients") {
        for (const auto dtype : {torch::kFloat32, torch::kFloat64}) {
            const auto p = torch::randn({3, 5, 4099}, torch::TensorOptions().dtype(dtype)) * 3;
            const auto q = torch::randn({3, 5, 4099}, torch::TensorOptions().dtype(dtype)) * 3;
            auto mask = torch::ones({3, 5}, torch::kBool);
            mask[1][2] = false;
            const rlhf::logits_options options{.temperature = 0.7};
            const auto pc = p.clone().requires_grad_(true), pg = p.cuda().requires_grad_(true);
            const auto h_cpu = lt::entropy_from_logits(pc, mask, options);
            const auto h_gpu = lt::entropy_from_logits(pg, mask.cuda(), options);
            CHECK(torch::allclose(h_gpu.cpu(), h_cpu, 1e-4, 1e-5));
            const auto kl_cpu = lt::full_kl_from_logits(pc, q, mask, options);
            const auto kl_gpu = lt::full_kl_from_logits(pg, q.cuda(), mask.cuda(), options);
            CHECK(torch::allclose(kl_gpu.cpu(), kl_cpu, 1e-4, 1e-4));
            (h_cpu.sum() + kl_cpu.sum()).backward();
            (h_gpu.sum() + kl_gpu.sum()).backward();
            CHECK(torch::allclose(pg.grad().cpu(), pc.grad(), 1e-4, 1e-6));
        }
    }

    TEST_CASE("cuda libtorch: deferred statistics stay on the device until read") {
        const auto lp = random_bt(4, 33, torch::kFloat32).cuda().requires_grad_(true);
        const auto old = random_bt(4, 33, torch::kFloat32).cuda();
        const auto adv = random_bt(4, 33, torch::kFloat32).cuda();
        const auto mask = torch::ones({4, 33}, torch::kBool).cuda();
        const auto out = lt::policy_loss(lp, old, adv, mask, {}, lt::statistics_readback::deferred);
        REQUIRE(out.device_stats.defined());
        CHECK(out.device_stats.is_cuda());
        const auto cpu = lt::policy_loss(lp.detach().cpu(), old.cpu(), adv.cpu(), mask.cpu());
        CHECK(lt::read_statistics(out).clip_fraction == doctest::Approx(cpu.stats.clip_fraction).epsilon(1e-6));
        CHECK(out.loss.item<double>() == doctest::Approx(cpu.loss.item<double>()).epsilon(1e-5));
    }

    TEST_CASE("cuda libtorch: GAE on CUDA tensors equals the CPU kernel under each masking") {
        REQUIRE(static_cast<bool>(lt::cuda_implementation<&lt::torch_ops::compute_gae_with_bootstrap>::registered));
        for (const auto masking :
             {rlhf::gae_masking::zero_masked, rlhf::gae_masking::skip_masked, rlhf::gae_masking::valid_range}) {
            for (const std::int64_t cols : {1, 7, 2048, 5000}) {
                CAPTURE(cols);
                const auto rewards = random_bt(6, cols, torch::kFloat32), values = random_bt(6, cols, torch::kFloat32);
                // Contiguous valid ranges (left and right padding) so that every masking applies.
                auto mask = torch::zeros({6, cols}, torch::kBool);
                for (std::int64_t b = 0; b < 6; ++b)
                    mask[b]
                        .narrow(0, std::min<std::int64_t>(b, cols - 1), std::max<std::int64_t>(cols - 2 * b, 1))
                        .fill_(true);
                const rlhf::gae_options options{.gamma = 0.99, .lambda = 0.95, .masking = masking};
                const auto on_gpu = lt::cuda_implementation<&lt::torch_ops::compute_gae_with_bootstrap>::registered(
                    rewards.cuda(), values.cuda(), mask.cuda(), torch::Tensor(), options, nullptr);
                const auto on_cpu = rlhf::compute_gae(rewards, values, mask, options);
                CHECK(torch::allclose(on_gpu.advantages.cpu(), on_cpu.advantages, 1e-5, 1e-5));
                CHECK(torch::allclose(on_gpu.returns.cpu(), on_cpu.returns, 1e-5, 1e-5));
            }
        }
    }

    TEST_CASE("cuda libtorch: token KL reward shaping and whitening of CUDA tensors equal the CPU kernels") {
        constexpr auto kl_slot = &lt::torch_ops::token_kl;
        constexpr auto shaping_slot = &lt::torch_ops::shape_rewards_from_logprobs;
        constexpr auto whiten_slot = &lt::torch_ops::masked_whiten;
        REQUIRE(static_cast<bool>(lt::cuda_implementation<kl_slot>::registered));
        REQUIRE(static_cast<bool>(lt::cuda_implementation<shaping_slot>::registered));
        REQUIRE(static_cast<bool>(lt::cuda_implementation<whiten_slot>::registered));
        const auto lp = random_bt(5, 300, torch::kFloat64), ref = random_bt(5, 300, torch::kFloat64);
        auto mask = torch::ones({5, 300}, torch::kBool);
        mask.narrow(1, 250, 50).fill_(false);
        const auto scores = torch::randn({5}, torch::kFloat64);
        const rlhf::kl_options kl{.estimator = rlhf::kl_estimator::k3};
        CHECK(torch::allclose(
            lt::cuda_implementation<kl_slot>::registered(lp.cuda(), ref.cuda(), mask.cuda(), kl, nullptr).cpu(),
            rlhf::token_kl(lp, ref, mask, kl), 1e-10, 1e-12));
        // empty_rows = raise (the default) runs on the device once checked: no empty row here.
        const rlhf::reward_shaping_options shaping{.kl_coef = 0.05};
        CHECK(torch::allclose(lt::cuda_implementation<shaping_slot>::registered(lp.cuda(), ref.cuda(), mask.cuda(),
                                                                                scores.cuda(), shaping, nullptr)
                                  .cpu(),
                              rlhf::shape_rewards_from_logprobs(lp, ref, mask, scores, shaping), 1e-10, 1e-12));
        for (const auto scope : {rlhf::whiten_scope::per_batch, rlhf::whiten_scope::per_row}) {
            const rlhf::whiten_options whiten{.scope = scope};
            CHECK(torch::allclose(
                lt::cuda_implementation<whiten_slot>::registered(lp.cuda(), mask.cuda(), whiten, nullptr).cpu(),
                rlhf::masked_whiten(lp, mask, whiten), 1e-9, 1e-11));
        }
        auto empty_row = mask.clone();
        empty_row[2].fill_(false);
        CHECK_THROWS_WITH_AS(lt::cuda_implementation<shaping_slot>::registered(lp.cuda(), ref.cuda(), empty_row.cuda(),
                                                                               scores.cuda(), shaping, nullptr),
                             doctest::Contains("mask"), rlhf::error);
    }

    TEST_CASE("cuda libtorch: a hole under valid_range masking is an rlhf::error naming mask on CUDA tensors") {
        REQUIRE(static_cast<bool>(lt::cuda_implementation<&lt::torch_ops::compute_gae_with_bootstrap>::registered));
        const auto rewards = random_bt(2, 8, torch::kFloat32).cuda(), values = random_bt(2, 8, torch::kFloat32).cuda();
        auto mask = torch::ones({2, 8}, torch::kBool);
        mask[0][3] = false;
        CHECK_THROWS_WITH_AS(
            lt::cuda_implementation<&lt::torch_ops::compute_gae_with_bootstrap>::registered(
                rewards, values, mask.cuda(), torch::Tensor(), {.masking = rlhf::gae_masking::valid_range}, nullptr),
            doctest::Contains("mask"), rlhf::error);
    }
}
