#include <doctest/doctest.h>

#include <barrier>
#include <mutex>
#include <thread>
#include <vector>

#include "rlhf/distributed/c10d_reducer.hpp"
#include "support/test_helpers.hpp"

namespace {

// An in-process c10d group of `size` ranks on threads: allreduce sums through shared memory.
struct shared_sum {
    explicit shared_sum(int size) : arrive(size), leave(size) {}
    std::barrier<> arrive;
    std::barrier<> leave;
    std::mutex lock;
    torch::Tensor total;
};

// The collective has finished by the time allreduce returns.
struct finished_work final : c10d::Work {
    bool isCompleted() override { return true; }
    bool wait(std::chrono::milliseconds /*timeout*/) override { return true; }
};

class thread_group final : public c10d::ProcessGroup {
public:
    thread_group(int rank, int size, shared_sum& shared) : c10d::ProcessGroup(rank, size), shared_(shared) {}
    const std::string getBackendName() const override { return "rlhf_test_threads"; }

    c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                             const c10d::AllreduceOptions& /*options*/) override {
        {
            std::lock_guard<std::mutex> guard(shared_.lock);
            if (!shared_.total.defined()) shared_.total = torch::zeros_like(tensors[0]);
            shared_.total += tensors[0];
        }
        shared_.arrive.arrive_and_wait();
        tensors[0].copy_(shared_.total);
        shared_.leave.arrive_and_wait();
        if (getRank() == 0) shared_.total = torch::Tensor();
        shared_.arrive.arrive_and_wait();
        return c10::make_intrusive<finished_work>();
    }

private:
    shared_sum& shared_;
};

}  // namespace

TEST_CASE("c10d_reducer sums values across the ranks of a process group" * doctest::test_suite("unit")) {
    constexpr int world = 3;
    shared_sum shared(world);
    std::vector<std::vector<double>> results(world);
    std::vector<std::thread> ranks;
    for (int rank = 0; rank < world; ++rank) {
        ranks.emplace_back([&, rank] {
            const rlhf::distributed::c10d_reducer reducer(c10::make_intrusive<thread_group>(rank, world, shared));
            std::vector<double> values{1.0 + rank, 10.0 * rank, 0.5};
            reducer.sum_all(std::span<double>(values));
            results[static_cast<std::size_t>(rank)] = values;
        });
    }
    for (auto& thread : ranks) thread.join();
    for (const auto& values : results) {
        CHECK(values[0] == 6.0);   // 1 + 2 + 3
        CHECK(values[1] == 30.0);  // 0 + 10 + 20
        CHECK(values[2] == 1.5);
    }
}

TEST_CASE("c10d_reducer rejects a null group and a tensor on another device" * doctest::test_suite("unit")) {
    CHECK_THROWS_AS(rlhf::distributed::c10d_reducer(c10::intrusive_ptr<c10d::ProcessGroup>()), rlhf::error);
    shared_sum shared(1);
    const rlhf::distributed::c10d_reducer reducer(c10::make_intrusive<thread_group>(0, 1, shared));
    torch::Tensor meta = torch::empty({2}, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kMeta));
    rlhf_test::check_error([&] { reducer.sum_all(meta); }, rlhf::error_kind::device, "tensor");
}
