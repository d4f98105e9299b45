#pragma once
/// @file
/// The `communicator` over torch's c10d: `c10d_communicator` wraps a process group (LibTorch
/// 1.x `c10d::ProcessGroup`, 2.x `c10d::Backend`; Gloo for CPU tensors, NCCL for CUDA tensors),
/// `launch_environment` reads the variables torchrun, `srun`/`mpirun` wrappers and `rlhf_launch`
/// set, and `c10d_job` makes the job's rendezvous (a `c10d::TCPStore` on `MASTER_ADDR:MASTER_PORT`)
/// and its groups: every rank, or a subset (generation and training groups). No transport of our
/// own: every collective is c10d's. A failed collective (a rank that died, a timeout) becomes an
/// `rlhf::error` (kind state, argument `group`) carrying c10d's message.
/// @note torch `torch/distributed/run.py` (the variables), `distributed_c10d.py`
/// (`init_process_group`, `new_group` over a `PrefixStore`).

#include <torch/types.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(USE_C10D_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "rlhf/core/check.hpp"
#include "rlhf/distributed/communicator.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::distributed {

/// A `communicator` over a c10d group `Group` (anything with c10d's `allreduce`, `broadcast`,
/// `getRank`, `getSize`). `keep_alive` holds the store the group was made from.
template <class Group>
class c10d_communicator final : public communicator {
public:
    explicit c10d_communicator(c10::intrusive_ptr<Group> group, torch::Device device = torch::kCPU,
                               c10::intrusive_ptr<c10d::Store> keep_alive = {})
        : group_(std::move(group)), device_(device), store_(std::move(keep_alive)) {
        if (!group_)
            fail(error_kind::value, "rlhf::distributed::c10d_communicator", "group", "a process group", "null");
    }

    [[nodiscard]] int rank() const override { return group_->getRank(); }
    [[nodiscard]] int world_size() const override { return group_->getSize(); }
    [[nodiscard]] torch::Device device() const override { return device_; }

    [[nodiscard]] completion start_all_reduce(torch::Tensor& tensor, reduce_op op) override {
        check_tensor("rlhf::distributed::c10d_communicator::all_reduce", tensor);
        c10d::AllreduceOptions options;
        options.reduceOp = op == reduce_op::sum ? c10d::ReduceOp::SUM : c10d::ReduceOp::MAX;
        return started("rlhf::distributed::c10d_communicator::all_reduce", tensor,
                       [&](std::vector<torch::Tensor>& t) { return group_->allreduce(t, options); });
    }

    [[nodiscard]] completion start_broadcast(torch::Tensor& tensor, int root) override {
        check_tensor("rlhf::distributed::c10d_communicator::broadcast", tensor);
        check_rank("rlhf::distributed::c10d_communicator::broadcast", "root", root);
        c10d::BroadcastOptions options;
        options.rootRank = root;
        return started("rlhf::distributed::c10d_communicator::broadcast", tensor,
                       [&](std::vector<torch::Tensor>& t) { return group_->broadcast(t, options); });
    }

private:
    void check_tensor(std::string_view function, const torch::Tensor& tensor) const {
        if (tensor.device() != device_)
            fail(error_kind::device, function, "tensor", device_.str(), tensor.device().str());
        if (!tensor.is_contiguous()) fail(error_kind::value, function, "tensor", "a contiguous tensor", "strided");
    }

    /// Starts `collective` on `tensor`; the completion waits and turns c10d's failure into an
    /// `rlhf::error`.
    template <class Collective>
    [[nodiscard]] completion started(std::string_view function, torch::Tensor& tensor, Collective&& collective) {
        auto tensors = std::make_shared<std::vector<torch::Tensor>>(1, tensor);
        try {
            auto work = collective(*tensors);
            return [work, tensors, function] {
                try {
                    work->wait();
                } catch (const std::exception& e) {
                    failed(function, e);
                }
            };
        } catch (const std::exception& e) {
            failed(function, e);
        }
    }

    [[noreturn]] static void failed(std::string_view function, const std::exception& e) {
        std::string what = e.what();
        what = what.substr(0, what.find('\n'));  // c10d appends a C++ backtrace
        fail(error_kind::state, function, "group", "every rank of the group in the collective within the timeout",
             what);
    }

    c10::intrusive_ptr<Group> group_;
    torch::Device device_;
    c10::intrusive_ptr<c10d::Store> store_;
};

/// Where this process sits in the job, from the environment torchrun sets (`RANK`, `WORLD_SIZE`,
/// `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`).
struct launch_environment {
    int rank = 0;
    int world_size = 1;
    int local_rank = 0;                     ///< the rank on this machine (the CUDA device index)
    std::string master_addr = "127.0.0.1";  ///< where rank 0 serves the rendezvous store
    std::uint16_t master_port = 29500;

    /// Reads the variables. None set: one process (rank 0 of 1). Errors (`rlhf::error`, kind
    /// config, function `rlhf::distributed::launch_environment::read`, the variable as argument):
    /// `WORLD_SIZE` set without `RANK` or the reverse, a value that is not an integer, a world
    /// size below 1, a rank outside `[0, WORLD_SIZE)`, a port outside `[1, 65535]`.
    [[nodiscard]] static launch_environment read() {
        constexpr std::string_view fn = "rlhf::distributed::launch_environment::read";
        const char* rank = std::getenv("RANK");
        const char* world = std::getenv("WORLD_SIZE");
        launch_environment env;
        if (rank == nullptr && world == nullptr) return env;
        if (rank == nullptr) fail(error_kind::config, fn, "RANK", "set (WORLD_SIZE is)", "unset");
        if (world == nullptr) fail(error_kind::config, fn, "WORLD_SIZE", "set (RANK is)", "unset");
        env.world_size = integer(fn, "WORLD_SIZE", world, 1, 1 << 20);
        env.rank = integer(fn, "RANK", rank, 0, env.world_size - 1);
        if (const char* local = std::getenv("LOCAL_RANK"))
            env.local_rank = integer(fn, "LOCAL_RANK", local, 0, 1 << 20);
        if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') env.master_addr = addr;
        if (const char* port = std::getenv("MASTER_PORT"))
            env.master_port = static_cast<std::uint16_t>(integer(fn, "MASTER_PORT", port, 1, 65535));
        return env;
    }

private:
    static int integer(std::string_view fn, std::string_view name, std::string_view text, int low, int high) {
        int value = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || end != text.data() + text.size() || value < low || value > high)
            fail(error_kind::config, fn, name,
                 "an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]", text);
        return value;
    }
};

/// A job's rendezvous and its process groups (see the file comment). Rank 0 serves the store;
/// construction waits (up to `timeout`) until every rank has connected.
class c10d_job {
public:
    explicit c10d_job(launch_environment env, std::chrono::milliseconds timeout = std::chrono::minutes(5))
        : env_(std::move(env)), timeout_(timeout) {
        constexpr std::string_view fn = "rlhf::distributed::c10d_job";
        check_positive(fn, "timeout", static_cast<double>(timeout.count()));
        c10d::TCPStoreOptions options;
        options.port = env_.master_port;
        options.isServer = env_.rank == 0;
        options.numWorkers = static_cast<std::size_t>(env_.world_size);
        options.waitWorkers = true;
        options.timeout = timeout;
        try {
            store_ = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, options);
        } catch (const std::exception& e) {
            std::string what = e.what();
            fail(error_kind::state, fn, "MASTER_ADDR:MASTER_PORT",
                 "a rendezvous of all " + std::to_string(env_.world_size) + " ranks at " + env_.master_addr + ":" +
                     std::to_string(env_.master_port) + " within the timeout",
                 what.substr(0, what.find('\n')));
        }
    }

    [[nodiscard]] const launch_environment& environment() const noexcept { return env_; }
    [[nodiscard]] int rank() const noexcept { return env_.rank; }
    [[nodiscard]] int world_size() const noexcept { return env_.world_size; }

    /// Every rank, over Gloo (CPU tensors). Every rank calls it.
    [[nodiscard]] std::shared_ptr<communicator> gloo() { return gloo_group(all_ranks(), "world"); }

    /// The ranks `ranks` (sorted, distinct, within the job) under the name `name`, over Gloo;
    /// every member calls it with the same list and name (others need not), and gets the group's
    /// ranks in list order. Errors: a bad list (kind value, `ranks`); this rank not in it (kind
    /// state, `ranks`).
    [[nodiscard]] std::shared_ptr<communicator> gloo_group(const std::vector<int>& ranks, const std::string& name) {
#if defined(USE_C10D_GLOO)
        const int me = member_index("rlhf::distributed::c10d_job::gloo_group", ranks);
        auto options = c10d::ProcessGroupGloo::Options::create(timeout_);
        if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface != nullptr && *interface != '\0')
            options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
        else
            options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        auto store = c10::make_intrusive<c10d::PrefixStore>("rlhf/" + name, store_);
        return made([&] {
            return std::make_shared<c10d_communicator<c10d::ProcessGroupGloo>>(
                c10::make_intrusive<c10d::ProcessGroupGloo>(store, me, static_cast<int>(ranks.size()), options),
                torch::kCPU, store_);
        });
#else
        (void)ranks;
        (void)name;
        fail(error_kind::state, "rlhf::distributed::c10d_job::gloo_group", "backend",
             "a LibTorch built with Gloo (USE_C10D_GLOO)", "none");
#endif
    }

    /// Every rank, over NCCL on CUDA device `LOCAL_RANK` (a LibTorch built with NCCL).
    [[nodiscard]] std::shared_ptr<communicator> nccl() {
#if defined(USE_C10D_NCCL)
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = timeout_;
        auto store = c10::make_intrusive<c10d::PrefixStore>("rlhf/nccl", store_);
        const torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(env_.local_rank));
        return made([&] {
            return std::make_shared<c10d_communicator<c10d::ProcessGroupNCCL>>(
                c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env_.rank, env_.world_size, options), device,
                store_);
        });
#else
        fail(error_kind::state, "rlhf::distributed::c10d_job::nccl", "backend",
             "a LibTorch built with NCCL (USE_C10D_NCCL)", "none");
#endif
    }

private:
    [[nodiscard]] std::vector<int> all_ranks() const {
        std::vector<int> ranks(static_cast<std::size_t>(env_.world_size));
        for (int r = 0; r < env_.world_size; ++r) ranks[static_cast<std::size_t>(r)] = r;
        return ranks;
    }

    [[nodiscard]] int member_index(std::string_view fn, const std::vector<int>& ranks) const {
        const bool valid = !ranks.empty() && std::is_sorted(ranks.begin(), ranks.end()) &&
                           std::adjacent_find(ranks.begin(), ranks.end()) == ranks.end() && ranks.front() >= 0 &&
                           ranks.back() < env_.world_size;
        if (!valid)
            fail(error_kind::value, fn, "ranks",
                 "sorted distinct ranks in [0, " + std::to_string(env_.world_size) + ")", "another list");
        const auto at = std::find(ranks.begin(), ranks.end(), env_.rank);
        if (at == ranks.end())
            fail(error_kind::state, fn, "ranks", "a list holding this rank (" + std::to_string(env_.rank) + ")",
                 "a list without it");
        return static_cast<int>(at - ranks.begin());
    }

    template <class Make>
    [[nodiscard]] std::shared_ptr<communicator> made(Make&& make) {
        try {
            return make();
        } catch (const std::exception& e) {
            std::string what = e.what();
            fail(error_kind::state, "rlhf::distributed::c10d_job", "group", "every member joining within the timeout",
                 what.substr(0, what.find('\n')));
        }
    }

    launch_environment env_;
    std::chrono::milliseconds timeout_;
    c10::intrusive_ptr<c10d::Store> store_;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::distributed
