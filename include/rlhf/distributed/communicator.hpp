#pragma once
/// @file
/// `rlhf::distributed::communicator`: what a data-parallel job exchanges — sums and maxima of
/// statistics (a `rlhf::Reducer`), averaged gradients in buckets, broadcasts of parameters and
/// rollouts. The PPO trainer takes one (`ppo_trainer::set_communicator`); the c10d implementation
/// (Gloo on CPU tensors, NCCL on CUDA tensors) is in `rlhf/distributed/c10d.hpp`. Every
/// collective must be called by every rank of the group, in the same order (docs/distributed.md).

#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::distributed {

/// The reduction of an all-reduce.
enum class reduce_op { sum, max };

/// A started collective; calling it waits for the collective to finish.
using completion = std::function<void()>;

/// The collectives of one process group (see the file comment). Implementations give the four
/// virtual members; the rest is built on them.
class communicator {
public:
    communicator() = default;
    communicator(const communicator&) = delete;
    communicator& operator=(const communicator&) = delete;
    virtual ~communicator() = default;

    [[nodiscard]] virtual int rank() const = 0;
    [[nodiscard]] virtual int world_size() const = 0;
    /// The device collectives run on: CPU for Gloo, the rank's CUDA device for NCCL.
    [[nodiscard]] virtual torch::Device device() const = 0;
    /// Starts reducing `tensor` (contiguous, on `device()`) in place across the group.
    [[nodiscard]] virtual completion start_all_reduce(torch::Tensor& tensor, reduce_op op) = 0;
    /// Starts copying rank `root`'s `tensor` into every rank's `tensor` (same shape and dtype).
    [[nodiscard]] virtual completion start_broadcast(torch::Tensor& tensor, int root) = 0;

    /// Reduces `tensor` in place (waits). A tensor on another device than `device()` goes
    /// through a copy there.
    void all_reduce(torch::Tensor& tensor, reduce_op op) {
        if (world_size() == 1) return;
        if (tensor.device() == device() && tensor.is_contiguous()) {
            start_all_reduce(tensor, op)();
            return;
        }
        torch::Tensor staged = tensor.to(device()).contiguous();
        start_all_reduce(staged, op)();
        tensor.copy_(staged);
    }

    /// `rlhf::Reducer`: sums `values` across the group, in place (one collective).
    void sum_all(std::span<double> values) { reduce_values(values, reduce_op::sum); }
    /// The element-wise maximum of `values` across the group, in place.
    void max_all(std::span<double> values) { reduce_values(values, reduce_op::max); }

    /// Copies rank `root`'s `tensor` into every rank's (waits; any device, see `all_reduce`).
    void broadcast(torch::Tensor& tensor, int root) {
        check_rank("rlhf::distributed::communicator::broadcast", "root", root);
        if (world_size() == 1) return;
        if (tensor.device() == device() && tensor.is_contiguous()) {
            start_broadcast(tensor, root)();
            return;
        }
        torch::Tensor staged = tensor.to(device()).contiguous();
        start_broadcast(staged, root)();
        tensor.copy_(staged);
    }

    /// Averages the gradients of `params` across the group (data parallelism, as DDP): the
    /// gradients are flattened into buckets of at most `bucket_bytes` per dtype and device, every
    /// bucket's all-reduce is started before the first is awaited, and the sums are divided by the
    /// world size. A parameter that requires a gradient but has none contributes zeros (and gets a
    /// zero gradient), so every rank reduces the same buckets; frozen parameters are skipped.
    /// Every rank must pass the same parameter list.
    void average_gradients(const std::vector<torch::Tensor>& params, std::size_t bucket_bytes = 25U << 20U) {
        if (world_size() == 1) return;
        std::map<std::pair<int, std::string>, std::vector<torch::Tensor>> by_kind;
        for (const auto& p : params) {
            if (!p.requires_grad()) continue;
            if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
            by_kind[{static_cast<int>(p.scalar_type()), p.device().str()}].push_back(p.grad());
        }
        std::vector<std::pair<std::vector<torch::Tensor>, torch::Tensor>> buckets;
        for (auto& [kind, grads] : by_kind) {
            std::vector<torch::Tensor> bucket;
            std::size_t bytes = 0;
            for (auto& g : grads) {
                const auto size = static_cast<std::size_t>(g.numel()) * static_cast<std::size_t>(g.element_size());
                if (!bucket.empty() && bytes + size > bucket_bytes) {
                    buckets.emplace_back(std::move(bucket), torch::Tensor());
                    bucket = {};
                    bytes = 0;
                }
                bucket.push_back(g);
                bytes += size;
            }
            if (!bucket.empty()) buckets.emplace_back(std::move(bucket), torch::Tensor());
        }
        std::vector<completion> pending;
        for (auto& [grads, flat] : buckets) {
            std::vector<torch::Tensor> parts;
            for (const auto& g : grads) parts.push_back(g.reshape({-1}));
            flat = torch::cat(parts).to(device());
            pending.push_back(start_all_reduce(flat, reduce_op::sum));
        }
        const double inverse = 1.0 / world_size();
        for (std::size_t b = 0; b < buckets.size(); ++b) {
            pending[b]();
            auto& [grads, flat] = buckets[b];
            std::int64_t offset = 0;
            for (auto& g : grads) {
                g.copy_(flat.narrow(0, offset, g.numel()).view_as(g).mul(inverse));
                offset += g.numel();
            }
        }
    }

    /// Copies rank `root`'s values of `tensors` into every rank's (parameters, buffers).
    void broadcast_tensors(const std::vector<torch::Tensor>& tensors, int root) {
        const torch::NoGradGuard no_grad;
        for (const auto& t : tensors) {
            torch::Tensor target = t;
            broadcast(target, root);
        }
    }

protected:
    void check_rank(std::string_view function, std::string_view argument, int rank) const {
        if (rank < 0 || rank >= world_size())
            fail(error_kind::value, function, argument, "a rank in [0, " + std::to_string(world_size()) + ")",
                 std::to_string(rank));
    }

private:
    void reduce_values(std::span<double> values, reduce_op op) {
        if (values.empty()) return;
        torch::Tensor host =
            torch::from_blob(values.data(), {static_cast<std::int64_t>(values.size())}, torch::kFloat64);
        all_reduce(host, op);
    }
};

static_assert(Reducer<communicator>);

/// The communicator of one process: every collective returns its input.
class single_process final : public communicator {
public:
    [[nodiscard]] int rank() const override { return 0; }
    [[nodiscard]] int world_size() const override { return 1; }
    [[nodiscard]] torch::Device device() const override { return torch::kCPU; }
    [[nodiscard]] completion start_all_reduce(torch::Tensor& /*tensor*/, reduce_op /*op*/) override {
        return [] {};
    }
    [[nodiscard]] completion start_broadcast(torch::Tensor& /*tensor*/, int /*root*/) override {
        return [] {};
    }
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::distributed
