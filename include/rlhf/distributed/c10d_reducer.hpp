#pragma once
/// @file
/// A `rlhf::Reducer` over a c10d process group (Gloo on CPU, NCCL on GPU), so whitening,
/// running moments, token counts and KL-controller inputs are global across data-parallel ranks.

#include <torch/types.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <cstdint>
#include <span>
#include <utility>

#include "rlhf/core/check.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::distributed {

/// Sums with one `allreduce` per call. Every rank must call `sum_all` with the same number of
/// values, in the same order (as with any collective).
class c10d_reducer {
public:
    /// `device` is where the reduction runs: CPU for Gloo, the rank's CUDA device for NCCL.
    explicit c10d_reducer(c10::intrusive_ptr<c10d::ProcessGroup> group, torch::Device device = torch::kCPU)
        : group_(std::move(group)), device_(device) {
        if (!group_) fail(error_kind::value, "rlhf::distributed::c10d_reducer", "group", "a process group", "null");
    }

    /// All-reduces `values` (summing) in place.
    void sum_all(std::span<double> values) const {
        if (values.empty()) return;
        const torch::Tensor host =
            torch::from_blob(values.data(), {static_cast<std::int64_t>(values.size())}, torch::kFloat64);
        torch::Tensor buffer = device_.is_cpu() ? host : host.to(device_);
        sum_all(buffer);
        if (!device_.is_cpu()) host.copy_(buffer.cpu());
    }

    /// All-reduces a tensor (summing) in place; it must live on this reducer's device.
    void sum_all(torch::Tensor& tensor) const {
        if (tensor.device() != device_)
            fail(error_kind::device, "rlhf::distributed::c10d_reducer::sum_all", "tensor", device_.str(),
                 tensor.device().str());
        std::vector<torch::Tensor> tensors{tensor};
        group_->allreduce(tensors)->wait();
    }

    [[nodiscard]] int rank() const { return group_->getRank(); }
    [[nodiscard]] int world_size() const { return group_->getSize(); }

private:
    c10::intrusive_ptr<c10d::ProcessGroup> group_;
    torch::Device device_;
};

static_assert(Reducer<c10d_reducer>);

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::distributed
