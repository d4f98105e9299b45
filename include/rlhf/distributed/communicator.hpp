#pragma once
/// @file
/// `rlhf::distributed::communicator`: what a data-parallel job exchanges — sums and maxima of
/// statistics (a `rlhf::Reducer`), averaged gradients in buckets, broadcasts of parameters
/// (`broadcast_parameters`, a `ParameterSync`) and of rollouts. The PPO trainer takes one
/// (`ppo_trainer::set_communicator`); the c10d implementation (Gloo on CPU tensors, NCCL on CUDA tensors) is in
/// `rlhf/distributed/c10d.hpp`. Every collective must be called by every rank of the group, in the same order
/// (docs/distributed.md).

#include <torch/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
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
        on_device(tensor, [&](torch::Tensor& t) { return start_all_reduce(t, op); });
    }

    /// `rlhf::Reducer`: sums `values` across the group, in place (one collective).
    void sum_all(std::span<double> values) { reduce_values(values, reduce_op::sum); }
    /// The element-wise maximum of `values` across the group, in place.
    void max_all(std::span<double> values) { reduce_values(values, reduce_op::max); }

    /// Copies rank `root`'s `tensor` into every rank's (waits; any device, see `all_reduce`).
    void broadcast(torch::Tensor& tensor, int root) {
        check_rank("rlhf::distributed::communicator::broadcast", "root", root);
        if (world_size() == 1) return;
        on_device(tensor, [&](torch::Tensor& t) { return start_broadcast(t, root); });
    }

    /// Averages the gradients of `params` across the group (data parallelism, as DDP): the
    /// gradients are flattened into buckets of at most `bucket_bytes` per dtype and device, every
    /// bucket's all-reduce is started before the first is awaited, and the sums are divided by the
    /// world size. A parameter that requires a gradient but has none contributes zeros (and gets a
    /// zero gradient), so every rank reduces the same buckets; frozen parameters are skipped.
    /// Every rank must pass the same parameter list.
    void average_gradients(const std::vector<torch::Tensor>& params, std::size_t bucket_bytes = default_bucket_bytes) {
        if (world_size() == 1) return;
        std::vector<torch::Tensor> grads;
        for (const auto& p : params) {
            if (!p.requires_grad()) continue;
            if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
            grads.push_back(p.grad());
        }
        const torch::NoGradGuard no_grad;
        bucketed(grads, bucket_bytes, 1.0 / world_size(),
                 [&](torch::Tensor& flat) { return start_all_reduce(flat, reduce_op::sum); });
    }

    /// Copies rank `root`'s values of `tensors` (parameters, buffers) into every rank's, in buckets
    /// as `average_gradients`.
    void broadcast_tensors(const std::vector<torch::Tensor>& tensors, int root,
                           std::size_t bucket_bytes = default_bucket_bytes) {
        check_rank("rlhf::distributed::communicator::broadcast_tensors", "root", root);
        if (world_size() == 1) return;
        const torch::NoGradGuard no_grad;
        bucketed(tensors, bucket_bytes, 1.0, [&](torch::Tensor& flat) { return start_broadcast(flat, root); });
    }

    /// Copies rank `root`'s `tensor`, whatever its shape and dtype, into every rank's `tensor`
    /// (replaced: a tensor of that shape and dtype on this communicator's device). Two broadcasts:
    /// the shape and dtype, then the values. Rollouts and requests of varying shapes travel so.
    void broadcast_tensor(torch::Tensor& tensor, int root) {
        check_rank("rlhf::distributed::communicator::broadcast_tensor", "root", root);
        constexpr std::int64_t max_dims = 8;
        torch::Tensor header = torch::zeros({max_dims + 2}, torch::kInt64);
        if (rank() == root) {
            if (!tensor.defined() || tensor.dim() > max_dims)
                fail(error_kind::shape, "rlhf::distributed::communicator::broadcast_tensor", "tensor",
                     "a defined tensor of at most 8 dimensions", tensor.defined() ? "more dimensions" : "undefined");
            header[0] = tensor.dim();
            header[1] = static_cast<std::int64_t>(tensor.scalar_type());
            for (std::int64_t d = 0; d < tensor.dim(); ++d) header[d + 2] = tensor.size(d);
        }
        broadcast(header, root);
        const auto* h = header.data_ptr<std::int64_t>();
        std::vector<std::int64_t> sizes(h + 2, h + 2 + h[0]);
        torch::Tensor values =
            rank() == root
                ? tensor.to(device()).contiguous()
                : torch::empty(sizes, torch::TensorOptions(device()).dtype(static_cast<torch::ScalarType>(h[1])));
        broadcast(values, root);
        tensor = values;
    }

    /// The bucket size of `average_gradients` and `broadcast_tensors` (DDP's default).
    static constexpr std::size_t default_bucket_bytes = 25U << 20U;

protected:
    void check_rank(std::string_view function, std::string_view argument, int rank) const {
        if (rank < 0 || rank >= world_size())
            fail(error_kind::value, function, argument, "a rank in [0, " + std::to_string(world_size()) + ")",
                 std::to_string(rank));
    }

private:
    /// Runs the collective `start` on `tensor`, through a contiguous copy on `device()` when it
    /// lives elsewhere or is strided, and waits.
    template <class Start>
    void on_device(torch::Tensor& tensor, Start&& start) {
        if (tensor.device() == device() && tensor.is_contiguous()) {
            start(tensor)();
            return;
        }
        torch::Tensor staged = tensor.to(device()).contiguous();
        start(staged)();
        tensor.copy_(staged);
    }

    /// Runs the collective `start` on flat buckets of `tensors` (at most `bucket_bytes` per dtype
    /// and device), every bucket started before the first is awaited, then copies the results
    /// back, times `scale` unless it is 1.
    template <class Start>
    void bucketed(const std::vector<torch::Tensor>& tensors, std::size_t bucket_bytes, double scale, Start&& start) {
        std::map<std::pair<int, std::string>, std::vector<torch::Tensor>> by_kind;
        for (const auto& t : tensors) by_kind[{static_cast<int>(t.scalar_type()), t.device().str()}].push_back(t);
        std::vector<std::vector<torch::Tensor>> buckets;
        for (auto& [kind, group] : by_kind) {
            std::size_t bytes = 0;
            for (auto& t : group) {
                const auto size = static_cast<std::size_t>(t.numel()) * static_cast<std::size_t>(t.element_size());
                if (buckets.empty() || bytes + size > bucket_bytes ||
                    buckets.back().front().scalar_type() != t.scalar_type() ||
                    buckets.back().front().device() != t.device()) {
                    buckets.emplace_back();
                    bytes = 0;
                }
                buckets.back().push_back(t);
                bytes += size;
            }
        }
        std::vector<torch::Tensor> flats;
        std::vector<completion> pending;
        for (const auto& bucket : buckets) {
            std::vector<torch::Tensor> parts;
            for (const auto& t : bucket) parts.push_back(t.reshape({-1}));
            flats.push_back(torch::cat(parts).to(device()));
            pending.push_back(start(flats.back()));
        }
        for (std::size_t b = 0; b < buckets.size(); ++b) {
            pending[b]();
            std::int64_t offset = 0;
            for (const auto& t : buckets[b]) {
                torch::Tensor part = flats[b].narrow(0, offset, t.numel()).view_as(t);
                torch::Tensor target = t;
                target.copy_(scale == 1.0 ? part : part.mul(scale));
                offset += t.numel();
            }
        }
    }

    void reduce_values(std::span<double> values, reduce_op op) {
        if (values.empty()) return;
        torch::Tensor host =
            torch::from_blob(values.data(), {static_cast<std::int64_t>(values.size())}, torch::kFloat64);
        all_reduce(host, op);
    }
};

static_assert(Reducer<communicator>);

/// A `ppo::ParameterSync` over a group (generation and training groups): `sync(from, to)` sends
/// `from`'s parameters, then its buffers when it lists them, from the group's rank `root`, and
/// receives them into `to` on every other member (`broadcast_tensors`). Each side passes its own
/// model as both arguments: `from` is read on the root, `to` written elsewhere.
/// @note ChatLearn `chatlearn/synchronizer/` (parameter sync from trainers to inference copies),
/// OpenRLHF `broadcast_to_vllm` (a broadcast from rank 0 of the training group).
struct broadcast_parameters {
    std::shared_ptr<communicator> group;
    int root = 0;

    template <class From, class To>
    void sync(From& from, To& to) const {
        if (!group)
            fail(error_kind::state, "rlhf::distributed::broadcast_parameters::sync", "group", "a communicator", "null");
        if (group->rank() == root)
            group->broadcast_tensors(tensors_of(from), root);
        else
            group->broadcast_tensors(tensors_of(to), root);
    }

private:
    template <class Model>
    [[nodiscard]] static std::vector<torch::Tensor> tensors_of(Model& model) {
        std::vector<torch::Tensor> tensors = model.parameters();
        if constexpr (requires { model.buffers(); })
            for (const auto& b : model.buffers()) tensors.push_back(b);
        return tensors;
    }
};

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
