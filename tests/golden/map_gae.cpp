// Golden mappers: see mapping.hpp. Family: GAE and its whitening pipelines.
//
//   trl_v0114__ppo_compute_advantages        TRL PPOTrainer.compute_advantages: zero_masked GAE,
//                                            optional reward whitening (shift_mean=false) before,
//                                            masked whitening of the advantages after
//   verl__compute_gae_advantage_return       verl: skip_masked GAE, then masked_whiten (+1e-8 count)
//   openrlhf__gae_cumulative_returns_kl_ctl  OpenRLHF get_advantages_and_returns: zero_masked, raw
//   dschat__ppo_trainer_math                 DeepSpeed-Chat get_advantages_and_returns(values,
//                                            rewards, start): columns [start, S-1), valid_range
//   colossalchat_v2__ppo_math                ColossalChat v2 calculate_advantage: first num_actions
//                                            columns, plain recursion
//   chatlearn__grpo_loss_advantage_and_legacy_ppo_gae  ChatLearn old PPO get_advantages_and_returns
//                                            (commit 302cdc7e): plain recursion, unmasked whiten
//
// The column ranges are strided views of the golden tensors (no copy). Where the peer returns
// NaN for an input the library refuses by design (whitening one valid element under the
// unbiased variance), the mapper checks the library raises and reports the outputs as refused.

#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mapping.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/presets.hpp"

namespace rlhf_golden {
namespace {

using rlhf::index_t;

/// Columns [begin, end) of a `[B, S]` tensor as a strided view (no copy).
rlhf::view<double> columns(const tensor& t, index_t begin, index_t end) {
    const auto full = t.matrix();
    if (begin < 0 || end > full.extent(1) || begin > end)
        throw std::runtime_error("golden: column range out of bounds");
    return {full.data() + begin, {full.extent(0), end - begin}, {full.stride(0), 1}};
}

struct gae_tensors {
    tensor advantages, returns;
};

template <class M>
gae_tensors run_gae(rlhf::view<double> rewards, rlhf::view<double> values, rlhf::view<M> mask,
                    const rlhf::gae_options& options) {
    gae_tensors out{tensor::zeros({rewards.extent(0), rewards.extent(1)}),
                    tensor::zeros({rewards.extent(0), rewards.extent(1)})};
    rlhf::compute_gae(rewards, values, mask, out.advantages.mut_matrix(), out.returns.mut_matrix(), options);
    return out;
}

/// Runs a pipeline that fills `out`; if the library refuses the input (an rlhf::error) where
/// the peer produced only non-finite numbers for every output the pipeline did not reach, reports
/// those outputs as refused (the documented correspondence "peer NaN <-> library error"). Any other
/// error propagates: an expected-error case, or a real failure.
template <class Pipeline>
void run_pipeline(const golden_case& c, mapped_outputs& out, Pipeline&& pipeline) {
    try {
        pipeline();
    } catch (const rlhf::error& e) {
        if (c.error) throw;
        if (e.kind() != rlhf::error_kind::value || (e.argument() != "mask" && e.argument() != "values")) throw;
        bool substituted = false;
        for (const auto& [name, expected] : c.outputs) {
            if (out.outputs.count(name) != 0) continue;
            if (!all_non_finite(expected)) throw;  // the peer had a number: a real failure
            out.refused_non_finite.push_back(name);
            substituted = true;
        }
        if (!substituted) throw;
    }
}

/// A preset's GAE (its masking) with the case's γ and λ (`lambda_name`: "lam" or OpenRLHF's "lambd").
rlhf::gae_options gae_of(const rlhf::advantage_preset& preset, const golden_case& c,
                         const std::string& lambda_name = "lam") {
    rlhf::gae_options options = preset.gae;
    options.gamma = c.number_param("gamma");
    options.lambda = c.number_param(lambda_name);
    return options;
}

// TRL v0.11.4 trl/trainer/ppo_trainer.py PPOTrainer.compute_advantages(values, rewards, mask):
// values·m and rewards·m; if whiten_rewards, masked_whiten(rewards, m, shift_mean=False), whose
// whitened value at masked positions enters the recursion (TRL does not re-mask); the recursion
// over every position; returns = A + values·m; advantages = masked_whiten(A, m).
std::optional<mapped_outputs> map_trl(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("lam")) return std::nullopt;
    const tensor mask_t = c.input("mask");
    const auto mask = mask_bytes(mask_t);
    const tensor rewards = c.input("rewards");
    const tensor values = c.input("values");
    const index_t rows = rewards.matrix().extent(0), cols = rewards.matrix().extent(1);
    const auto m = rlhf::make_view(mask.data(), rows, cols);
    const auto preset = rlhf::presets::trl_v0_11();
    const rlhf::gae_options options = gae_of(preset, c);
    mapped_outputs out;
    tensor masked_values = values;
    for (std::size_t i = 0; i < masked_values.data.size(); ++i) masked_values.data[i] *= mask_t.data[i];
    out.outputs["values"] = masked_values;
    run_pipeline(c, out, [&] {
        gae_tensors gae;
        if (c.param_or<bool>("whiten_rewards", false)) {
            tensor whitened = rewards;
            for (std::size_t i = 0; i < whitened.data.size(); ++i) whitened.data[i] *= mask_t.data[i];
            rlhf::masked_whiten(whitened.matrix(), m, whitened.mut_matrix(), {.shift_mean = false});
            // Every position already holds TRL's recursion input: an all-valid mask keeps it as is.
            const std::vector<std::uint8_t> ones(mask.size(), 1);
            gae = run_gae(whitened.matrix(), masked_values.matrix(), rlhf::make_view(ones.data(), rows, cols), options);
        } else {
            gae = run_gae(rewards.matrix(), values.matrix(), m, options);
        }
        out.outputs["returns"] = gae.returns;
        rlhf::masked_whiten(gae.advantages.matrix(), m, gae.advantages.mut_matrix(), *preset.advantage_whitening);
        out.outputs["advantages"] = gae.advantages;
    });
    return out;
}

// verl verl/trainer/ppo/core_algos.py compute_gae_advantage_return(token_level_rewards, values,
// response_mask, gamma, lam): skip_masked recursion, returns = A + values everywhere, then
// verl_F.masked_whiten(A, response_mask) (mean over Σm + 1e-8, raises for Σm <= 1).
std::optional<mapped_outputs> map_verl(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("lam")) return std::nullopt;
    const tensor rewards = c.input("token_level_rewards");
    const tensor values = c.input("values");
    const auto mask = mask_bytes(c.input("response_mask"));
    const auto m = rlhf::make_view(mask.data(), rewards.matrix().extent(0), rewards.matrix().extent(1));
    mapped_outputs out;
    run_pipeline(c, out, [&] {
        const auto preset = rlhf::presets::verl();
        gae_tensors gae = run_gae(rewards.matrix(), values.matrix(), m, gae_of(preset, c));
        out.outputs["returns"] = gae.returns;
        rlhf::masked_whiten(gae.advantages.matrix(), m, gae.advantages.mut_matrix(), *preset.advantage_whitening);
        out.outputs["advantages"] = gae.advantages;
    });
    return out;
}

// OpenRLHF openrlhf/trainer/ppo_utils/experience_maker.py get_advantages_and_returns(values,
// rewards, action_mask, gamma, lambd): zero_masked recursion, raw advantages (OpenRLHF whitens
// later over the whole batch).
std::optional<mapped_outputs> map_openrlhf(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("lambd")) return std::nullopt;  // cumulative returns, KL controller: other families
    const tensor rewards = c.input("rewards");
    const tensor values = c.input("values");
    const auto mask = mask_bytes(c.input("action_mask"));
    const auto m = rlhf::make_view(mask.data(), rewards.matrix().extent(0), rewards.matrix().extent(1));
    gae_tensors gae = run_gae(rewards.matrix(), values.matrix(), m, gae_of(rlhf::presets::openrlhf(), c, "lambd"));
    mapped_outputs out;
    out.outputs["advantages"] = gae.advantages;
    out.outputs["returns"] = gae.returns;
    return out;
}

// DeepSpeed-Chat dschat/rlhf/ppo_trainer.py get_advantages_and_returns(values, rewards, start):
// the recursion over log-prob columns [start, S-1) (no mask: train_rlhf zeroes rewards and values
// from `ends` on beforehand), returns = A + values[:, start:]. As a valid_range over the columns
// with every position valid.
std::optional<mapped_outputs> map_dschat(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("start") || !c.has_param("lam")) return std::nullopt;
    const tensor rewards = c.input("rewards");
    const tensor values = c.input("values");
    const index_t start = c.param<index_t>("start");
    const index_t end = rewards.matrix().extent(1);
    const auto r = columns(rewards, start, end);
    const auto v = columns(values, start, end);
    const std::vector<std::uint8_t> ones(static_cast<std::size_t>(r.size()), 1);
    gae_tensors gae = run_gae(r, v, rlhf::make_view(ones.data(), r.extent(0), r.extent(1)),
                              gae_of(rlhf::presets::deepspeed_chat(), c));
    mapped_outputs out;
    out.outputs["advantages"] = gae.advantages;
    out.outputs["returns"] = gae.returns;
    return out;
}

// ColossalChat v2 coati/experience_maker/naive.py calculate_advantage(value, reward, num_actions):
// the plain recursion over the first num_actions columns (value is pre-masked by the caller).
std::optional<mapped_outputs> map_colossalchat(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("num_actions")) return std::nullopt;
    const tensor reward = c.input("reward");
    const tensor value = c.input("value");
    const index_t actions = c.param<index_t>("num_actions");
    const auto r = columns(reward, 0, actions);
    const auto v = columns(value, 0, actions);
    const std::vector<std::uint8_t> ones(static_cast<std::size_t>(r.size()), 1);
    gae_tensors gae = run_gae(r, v, rlhf::make_view(ones.data(), r.extent(0), r.extent(1)),
                              gae_of(rlhf::presets::colossalchat_v2(), c));
    mapped_outputs out;
    out.outputs["advantages"] = gae.advantages;
    return out;
}

// ChatLearn old PPO examples/megatron/models/utils.py get_advantages_and_returns(config, values,
// rewards, response_length, use_whitening) at commit 302cdc7e: the plain recursion over all
// columns, returns = A + values, then whiten(A) over all elements (torch.var_mean, unbiased).
std::optional<mapped_outputs> map_chatlearn(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("use_whitening")) return std::nullopt;  // GRPO loss / advantages: other families
    const tensor rewards = c.input("rewards");
    const tensor values = c.input("values");
    const auto r = rewards.matrix();
    const std::vector<std::uint8_t> ones(static_cast<std::size_t>(r.size()), 1);
    mapped_outputs out;
    run_pipeline(c, out, [&] {
        const auto preset = rlhf::presets::chatlearn();  // `whiten_unmasked`: every element
        gae_tensors gae =
            run_gae(r, values.matrix(), rlhf::make_view(ones.data(), r.extent(0), r.extent(1)), gae_of(preset, c));
        out.outputs["returns"] = gae.returns;
        if (c.param<bool>("use_whitening"))
            rlhf::whiten(gae.advantages.matrix(), gae.advantages.mut_matrix(), *preset.advantage_whitening);
        out.outputs["advantages"] = gae.advantages;
    });
    return out;
}

}  // namespace

void register_gae_mappers(mapper_registry& registry) {
    registry["trl_v0114__ppo_compute_advantages"].push_back(map_trl);
    registry["verl__compute_gae_advantage_return"].push_back(map_verl);
    registry["openrlhf__gae_cumulative_returns_kl_ctl"].push_back(map_openrlhf);
    registry["dschat__ppo_trainer_math"].push_back(map_dschat);
    registry["colossalchat_v2__ppo_math"].push_back(map_colossalchat);
    registry["chatlearn__grpo_loss_advantage_and_legacy_ppo_gae"].push_back(map_chatlearn);
}

}  // namespace rlhf_golden
