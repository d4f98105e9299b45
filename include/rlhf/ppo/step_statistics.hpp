#pragma once
/// @file
/// `rlhf::ppo::deferred_statistics`: a step's training statistics kept as tensors on the device
/// where they were computed (loss statistics, losses, entropy sums, gradient norms), read back
/// to the host once, when the step ends (one counted `libtorch::read_to_host` per device), and
/// replayed in order into a `train_statistics`. This is how the trainer runs its micro-batches
/// without waiting for a GPU (docs/ppo.md, "Device-resident steps").

#include <torch/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "rlhf/distributed/communicator.hpp"
#include "rlhf/libtorch/kl_loss.hpp"
#include "rlhf/libtorch/loss_support.hpp"
#include "rlhf/libtorch/policy_loss.hpp"
#include "rlhf/libtorch/value_loss.hpp"
#include "rlhf/ppo/metrics.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// Records a step's training statistics as tensors and replays them into a `train_statistics`
/// (see the file comment).
class deferred_statistics {
public:
    /// A micro-batch's policy-loss statistics (on the device, or the host `stats`).
    void add_policy(const libtorch::policy_loss_output& o) { record(event::policy, stats_tensor(o)); }
    /// A micro-batch's value-loss statistics.
    void add_value(const libtorch::value_loss_output& o) { record(event::value, stats_tensor(o)); }
    /// A micro-batch's entropy: its sum and its valid tokens (0-dim tensors).
    void add_entropy(const torch::Tensor& sum, const torch::Tensor& tokens) {
        record(event::entropy, torch::stack({sum.to(torch::kFloat64), tokens.to(torch::kFloat64)}));
    }
    /// A minibatch's losses (0-dim tensors, each the sum of its micro-batch losses as backpropagated).
    void add_minibatch(const torch::Tensor& policy, const torch::Tensor& value, const torch::Tensor& kl,
                       const torch::Tensor& entropy) {
        record(event::minibatch, torch::stack({policy, value, kl, entropy}).to(torch::kFloat64));
    }
    /// A PTX batch's LM loss (0-dim).
    void add_ptx(const torch::Tensor& loss) { record(event::ptx, loss.reshape({1}).to(torch::kFloat64)); }
    /// An actor or critic optimizer step with its gradient norm before clipping (0-dim).
    void add_policy_step(const torch::Tensor& norm) { record(event::policy_step, norm.reshape({1})); }
    void add_critic_step(const torch::Tensor& norm) { record(event::critic_step, norm.reshape({1})); }

    /// Reads everything back (one `read_to_host` per device) and adds it to `stats` in the order
    /// it was recorded; the accumulator is empty afterwards.
    void replay_into(train_statistics& stats) {
        std::map<std::string, std::vector<std::size_t>> by_device;
        for (std::size_t i = 0; i < events_.size(); ++i) by_device[events_[i].second.device().str()].push_back(i);
        std::vector<torch::Tensor> host(events_.size());
        for (const auto& [device, indices] : by_device) {
            std::vector<torch::Tensor> parts;
            std::vector<std::int64_t> sizes;
            for (const std::size_t i : indices) {
                parts.push_back(events_[i].second.to(torch::kFloat64));
                sizes.push_back(events_[i].second.numel());
            }
            const std::vector<torch::Tensor> split = libtorch::read_to_host(torch::cat(parts)).split_with_sizes(sizes);
            for (std::size_t k = 0; k < indices.size(); ++k) host[indices[k]] = split[k].contiguous();
        }
        for (std::size_t i = 0; i < events_.size(); ++i) {
            const double* p = host[i].data_ptr<double>();
            switch (events_[i].first) {
                case event::policy:
                    stats.add_policy(libtorch::stats_from_host<policy_loss_stats>(host[i]));
                    break;
                case event::value:
                    stats.add_value(libtorch::stats_from_host<value_loss_stats>(host[i]));
                    break;
                case event::entropy:
                    stats.add_entropy(p[0], p[1]);
                    break;
                case event::minibatch:
                    stats.add_minibatch(p[0], p[1], p[2], p[3]);
                    break;
                case event::ptx:
                    stats.add_ptx(p[0]);
                    break;
                case event::policy_step:
                    stats.add_policy_step(p[0]);
                    break;
                case event::critic_step:
                    stats.add_critic_step(p[0]);
                    break;
            }
        }
        events_.clear();
    }

private:
    enum class event { policy, value, entropy, minibatch, ptx, policy_step, critic_step };

    template <class Output>
    [[nodiscard]] static torch::Tensor stats_tensor(const Output& o) {
        return o.device_stats.defined() ? o.device_stats : libtorch::stats_to_tensor(o.stats);
    }

    void record(event kind, torch::Tensor values) { events_.emplace_back(kind, values.detach().reshape({-1})); }

    std::vector<std::pair<event, torch::Tensor>> events_;
};

/// What the loop rules read of a minibatch (`early_stop_kl`, the minibatch ratio threshold):
/// its valid tokens, token-weighted policy KL and Σ ρ, and its last micro-batch's policy KL
/// and tokens.
struct minibatch_policy_totals {
    double tokens = 0.0, policy_kl = 0.0, ratio_sum = 0.0;
    double last_policy_kl = 0.0, last_tokens = 0.0;
};

/// Accumulates `minibatch_policy_totals` on the loss's device over the micro-batches of a
/// minibatch; `read` makes the one host read.
class minibatch_policy_accumulator {
public:
    void add(const libtorch::policy_loss_output& o) {
        const torch::Tensor st = o.device_stats.defined() ? o.device_stats : libtorch::stats_to_tensor(o.stats);
        // `policy_loss_stats` fields: 3 policy_kl, 5 ratio_mean, 8 valid_tokens (`for_each_field`).
        const torch::Tensor sums = torch::stack({st[3] * st[8], st[5] * st[8], st[8]});
        sums_ = sums_.defined() ? sums_ + sums.to(sums_.device()) : sums;
        last_ = torch::stack({st[3], st[8]}).to(sums_.device());
    }

    /// With a `group` of several ranks, the totals are those of the minibatch on every rank (one
    /// collective; every rank calls it).
    [[nodiscard]] minibatch_policy_totals read(distributed::communicator* group = nullptr) const {
        if (group != nullptr && group->world_size() > 1) {
            std::array<double, 5> sums{};  // Σ kl·n, Σ ρ, Σ n, last kl·n, last n
            if (sums_.defined()) {
                const torch::Tensor host = libtorch::read_to_host(torch::cat({sums_, last_}));
                const double* p = host.data_ptr<double>();
                sums = {p[0], p[1], p[2], p[3] * p[4], p[4]};
            }
            group->sum_all(sums);
            const auto ratio = [](double a, double b) { return b > 0.0 ? a / b : 0.0; };
            return {.tokens = sums[2],
                    .policy_kl = ratio(sums[0], sums[2]),
                    .ratio_sum = sums[1],
                    .last_policy_kl = ratio(sums[3], sums[4]),
                    .last_tokens = sums[4]};
        }
        if (!sums_.defined()) return {};
        const torch::Tensor host = libtorch::read_to_host(torch::cat({sums_, last_}));
        const double* p = host.data_ptr<double>();
        return {.tokens = p[2],
                .policy_kl = p[2] > 0.0 ? p[0] / p[2] : 0.0,
                .ratio_sum = p[1],
                .last_policy_kl = p[3],
                .last_tokens = p[4]};
    }

private:
    torch::Tensor sums_, last_;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
