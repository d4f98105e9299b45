// ivalue.h first: clang in C++20 mode rejects LibTorch 1.13's headers otherwise (doctest_torch.hpp).
#include <ATen/core/ivalue.h>

#include <doctest/doctest.h>

#include <barrier>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rlhf/distributed/c10d.hpp"
#include "rlhf/distributed/launcher.hpp"
#include "support/test_helpers.hpp"

// The c10d headers bring glog's CHECK back after doctest's: the assertions are spelled DOCTEST_CHECK.

namespace {

namespace dist = rlhf::distributed;

// An in-process c10d group of `size` ranks on threads: collectives meet in shared memory.
struct shared_state {
    explicit shared_state(int size) : arrive(size), leave(size) {}
    std::barrier<> arrive;
    std::barrier<> leave;
    std::mutex lock;
    torch::Tensor total;
};

// The collective has finished by the time the call returns.
struct finished_work final : c10d::Work {
    bool isCompleted() override { return true; }
    bool wait(std::chrono::milliseconds /*timeout*/) override { return true; }
};

class thread_group final : public c10d::ProcessGroup {
public:
    thread_group(int rank, int size, shared_state& shared) : c10d::ProcessGroup(rank, size), shared_(shared) {}
    const std::string getBackendName() const override { return "rlhf_test_threads"; }

    c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                             const c10d::AllreduceOptions& options) override {
        const bool max = options.reduceOp == c10d::ReduceOp::MAX;
        {
            std::lock_guard<std::mutex> guard(shared_.lock);
            if (!shared_.total.defined())
                shared_.total = tensors[0].clone();
            else
                shared_.total = max ? torch::maximum(shared_.total, tensors[0]) : shared_.total + tensors[0];
        }
        return finish(tensors[0]);
    }

    c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                             const c10d::BroadcastOptions& options) override {
        if (getRank() == options.rootRank) {
            const std::lock_guard<std::mutex> guard(shared_.lock);
            shared_.total = tensors[0].clone();
        }
        return finish(tensors[0]);
    }

private:
    c10::intrusive_ptr<c10d::Work> finish(at::Tensor& tensor) {
        shared_.arrive.arrive_and_wait();
        tensor.copy_(shared_.total);
        shared_.leave.arrive_and_wait();
        if (getRank() == 0) shared_.total = torch::Tensor();
        shared_.arrive.arrive_and_wait();
        return c10::make_intrusive<finished_work>();
    }

    shared_state& shared_;
};

// Runs `body(communicator)` on `world` threads, one rank each.
template <class Body>
void on_ranks(int world, Body&& body) {
    shared_state shared(world);
    std::vector<std::thread> ranks;
    for (int rank = 0; rank < world; ++rank)
        ranks.emplace_back([&, rank] {
            dist::c10d_communicator<c10d::ProcessGroup> group(c10::make_intrusive<thread_group>(rank, world, shared));
            body(group);
        });
    for (auto& thread : ranks) thread.join();
}

// A model of a few tensors (`HasParameters`).
struct weights_model {
    std::vector<torch::Tensor> weights;
    [[nodiscard]] std::vector<torch::Tensor> parameters() const { return weights; }
};

// Sets the launch variables for the scope of one check, then clears them.
struct scoped_environment {
    explicit scoped_environment(std::vector<std::pair<const char*, const char*>> variables) {
        for (const char* name : names) ::unsetenv(name);
        for (const auto& [name, value] : variables) ::setenv(name, value, 1);
    }
    scoped_environment(const scoped_environment&) = delete;
    scoped_environment& operator=(const scoped_environment&) = delete;
    ~scoped_environment() {
        for (const char* name : names) ::unsetenv(name);
    }
    static constexpr const char* names[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"};
};

}  // namespace

TEST_CASE("communicator sums and maxima of values across ranks (a Reducer)" * doctest::test_suite("unit")) {
    constexpr int world = 3;
    std::vector<std::vector<double>> sums(world), maxima(world);
    on_ranks(world, [&](dist::communicator& group) {
        std::vector<double> values{1.0 + group.rank(), 10.0 * group.rank(), 0.5};
        group.sum_all(values);
        std::vector<double> largest{static_cast<double>(group.rank()), -static_cast<double>(group.rank())};
        group.max_all(largest);
        sums[static_cast<std::size_t>(group.rank())] = values;
        maxima[static_cast<std::size_t>(group.rank())] = largest;
    });
    for (int rank = 0; rank < world; ++rank) {
        DOCTEST_CHECK((sums[static_cast<std::size_t>(rank)] == std::vector<double>{6.0, 30.0, 1.5}));
        DOCTEST_CHECK((maxima[static_cast<std::size_t>(rank)] == std::vector<double>{2.0, 0.0}));
    }
}

TEST_CASE("communicator averages gradients in buckets and broadcasts parameters" * doctest::test_suite("unit")) {
    constexpr int world = 2;
    std::vector<std::vector<torch::Tensor>> grads(world), params(world);
    on_ranks(world, [&](dist::communicator& group) {
        const auto r = static_cast<float>(group.rank());
        // Three float32 parameters and a float64 one; buckets of 16 bytes force several collectives.
        std::vector<torch::Tensor> p{torch::full({3}, r, torch::requires_grad()),
                                     torch::full({2, 2}, r, torch::requires_grad()),
                                     torch::zeros({5}, torch::requires_grad()),
                                     torch::full({2}, r, torch::TensorOptions(torch::kFloat64).requires_grad(true)),
                                     torch::full({2}, r)};  // frozen: skipped
        p[0].mutable_grad() = torch::full({3}, 1.0F + r);
        p[1].mutable_grad() = torch::arange(4, torch::kFloat32).reshape({2, 2}) * (r + 1.0F);
        // p[2] has no gradient on rank 0, a gradient on rank 1.
        if (group.rank() == 1) p[2].mutable_grad() = torch::full({5}, 4.0F);
        p[3].mutable_grad() = torch::full({2}, 2.0 * static_cast<double>(r), torch::kFloat64);
        group.average_gradients(p, 16);
        group.broadcast_tensors(p, 1);
        for (const auto& t : p) grads[static_cast<std::size_t>(group.rank())].push_back(t.grad());
        params[static_cast<std::size_t>(group.rank())] = p;
    });
    for (int rank = 0; rank < world; ++rank) {
        const auto& g = grads[static_cast<std::size_t>(rank)];
        DOCTEST_CHECK(torch::equal(g[0], torch::full({3}, 1.5F)));
        DOCTEST_CHECK(torch::equal(g[1], torch::arange(4, torch::kFloat32).reshape({2, 2}) * 1.5F));
        DOCTEST_CHECK(torch::equal(g[2], torch::full({5}, 2.0F)));
        DOCTEST_CHECK(torch::equal(g[3], torch::full({2}, 1.0, torch::kFloat64)));
        DOCTEST_CHECK_FALSE(g[4].defined());
        const auto& p = params[static_cast<std::size_t>(rank)];
        DOCTEST_CHECK(torch::equal(p[0], torch::full({3}, 1.0F)));  // rank 1's values
        DOCTEST_CHECK(torch::equal(p[3], torch::full({2}, 1.0, torch::kFloat64)));
    }
}

TEST_CASE("c10d_communicator rejects a null group and a tensor on another device and a bad root" *
          doctest::test_suite("unit")) {
    rlhf_test::check_error(
        [] { dist::c10d_communicator<c10d::ProcessGroup> bad{c10::intrusive_ptr<c10d::ProcessGroup>()}; },
        rlhf::error_kind::value, "group");
    shared_state shared(1);
    dist::c10d_communicator<c10d::ProcessGroup> group(c10::make_intrusive<thread_group>(0, 1, shared));
    torch::Tensor meta = torch::empty({2}, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kMeta));
    rlhf_test::check_error([&] { (void)group.start_all_reduce(meta, dist::reduce_op::sum); }, rlhf::error_kind::device,
                           "tensor");
    torch::Tensor strided = torch::zeros({4, 4}).t();
    rlhf_test::check_error([&] { (void)group.start_broadcast(strided, 0); }, rlhf::error_kind::value, "tensor");
    torch::Tensor t = torch::zeros({2});
    rlhf_test::check_error([&] { group.broadcast(t, 1); }, rlhf::error_kind::value, "root");
    torch::Tensor undefined;
    rlhf_test::check_error([&] { group.broadcast_tensor(undefined, 0); }, rlhf::error_kind::shape, "tensor");
    rlhf_test::check_error([&] { group.broadcast_tensors({t}, -1); }, rlhf::error_kind::value, "root");
    weights_model none;
    rlhf_test::check_error([&] { dist::broadcast_parameters{}.sync(none, none); }, rlhf::error_kind::state, "group");
}

TEST_CASE("broadcast_tensor moves a tensor of any shape and dtype and broadcast_parameters syncs a model" *
          doctest::test_suite("unit")) {
    constexpr int world = 3;
    std::vector<torch::Tensor> received(world);
    std::vector<std::vector<torch::Tensor>> models(world);
    on_ranks(world, [&](dist::communicator& group) {
        const int rank = group.rank();
        torch::Tensor t;
        if (rank == 2) t = torch::arange(6, torch::kInt64).reshape({2, 3});
        group.broadcast_tensor(t, 2);
        received[static_cast<std::size_t>(rank)] = t;
        weights_model m{{torch::full({4}, static_cast<float>(rank)), torch::full({2}, static_cast<double>(rank))}};
        const std::shared_ptr<dist::communicator> shared(&group, [](dist::communicator*) {});
        dist::broadcast_parameters{shared, 1}.sync(m, m);
        models[static_cast<std::size_t>(rank)] = m.weights;
    });
    for (int rank = 0; rank < world; ++rank) {
        DOCTEST_CHECK(
            torch::equal(received[static_cast<std::size_t>(rank)], torch::arange(6, torch::kInt64).reshape({2, 3})));
        DOCTEST_CHECK(torch::equal(models[static_cast<std::size_t>(rank)][0], torch::full({4}, 1.0F)));
        DOCTEST_CHECK(torch::equal(models[static_cast<std::size_t>(rank)][1], torch::full({2}, 1.0, torch::kFloat64)));
    }
}

TEST_CASE("launch_environment reads torchrun's variables and names a bad one" * doctest::test_suite("unit")) {
    {
        const scoped_environment none({});
        const auto env = dist::launch_environment::read();
        DOCTEST_CHECK(env.rank == 0);
        DOCTEST_CHECK(env.world_size == 1);
    }
    {
        const scoped_environment set({{"RANK", "1"},
                                      {"WORLD_SIZE", "4"},
                                      {"LOCAL_RANK", "1"},
                                      {"MASTER_ADDR", "10.0.0.2"},
                                      {"MASTER_PORT", "29999"}});
        const auto env = dist::launch_environment::read();
        DOCTEST_CHECK(env.rank == 1);
        DOCTEST_CHECK(env.world_size == 4);
        DOCTEST_CHECK(env.local_rank == 1);
        DOCTEST_CHECK(env.master_addr == "10.0.0.2");
        DOCTEST_CHECK(env.master_port == 29999);
    }
    const auto refused = [](std::vector<std::pair<const char*, const char*>> variables, const char* argument) {
        const scoped_environment set(std::move(variables));
        rlhf_test::check_error([] { (void)dist::launch_environment::read(); }, rlhf::error_kind::config, argument);
    };
    refused({{"RANK", "0"}}, "WORLD_SIZE");
    refused({{"WORLD_SIZE", "2"}}, "RANK");
    refused({{"RANK", "2"}, {"WORLD_SIZE", "2"}}, "RANK");
    refused({{"RANK", "0"}, {"WORLD_SIZE", "0"}}, "WORLD_SIZE");
    refused({{"RANK", "x"}, {"WORLD_SIZE", "2"}}, "RANK");
    refused({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}, "MASTER_PORT");
}

TEST_CASE("launch_local starts the ranks with the variables and stops the job when one fails" *
          doctest::test_suite("unit")) {
    dist::local_launch_options three{.processes = 3};
    DOCTEST_CHECK(dist::launch_local({"/bin/sh", "-c",
                                      "test \"$WORLD_SIZE\" = 3 && test \"$RANK\" = \"$LOCAL_RANK\" && "
                                      "test \"$RANK\" -lt 3 && test -n \"$MASTER_PORT\""},
                                     three) == 0);
    // Rank 1 fails at once: the launcher returns its status and terminates the others (which
    // would sleep for a minute).
    const auto start = std::chrono::steady_clock::now();
    DOCTEST_CHECK(dist::launch_local({"/bin/sh", "-c", "if [ \"$RANK\" = 1 ]; then exit 3; fi; sleep 60"}, three) == 3);
    DOCTEST_CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(30));
    // A job past its limit is terminated with status 124.
    DOCTEST_CHECK(
        dist::launch_local({"/bin/sh", "-c", "sleep 60"}, {.processes = 2, .timeout = std::chrono::seconds(1)}) == 124);
    rlhf_test::check_error([] { (void)dist::launch_local({}); }, rlhf::error_kind::value, "command");
    rlhf_test::check_error([] { (void)dist::launch_local({"true"}, {.processes = 0}); }, rlhf::error_kind::config,
                           "processes");
    rlhf_test::check_error([] { (void)dist::launch_local({"true"}, {.master_port = 70000}); }, rlhf::error_kind::config,
                           "master_port");
}

TEST_CASE("Gloo jobs of real processes: collectives and subgroups" * doctest::test_suite("unit")) {
    DOCTEST_CHECK(dist::launch_local({RLHF_DISTRIBUTED_PROBE, "sum"},
                                     {.processes = 2, .timeout = std::chrono::seconds(120)}) == 0);
    DOCTEST_CHECK(dist::launch_local({RLHF_DISTRIBUTED_PROBE, "sum"},
                                     {.processes = 3, .timeout = std::chrono::seconds(120)}) == 0);
    DOCTEST_CHECK(dist::launch_local({RLHF_DISTRIBUTED_PROBE, "groups"},
                                     {.processes = 3, .timeout = std::chrono::seconds(120)}) == 0);
    DOCTEST_CHECK(dist::launch_local({RLHF_DISTRIBUTED_PROBE, "bad-groups"},
                                     {.processes = 2, .timeout = std::chrono::seconds(120)}) == 0);
}

TEST_CASE("a rank that dies makes the others fail with an rlhf::error instead of hanging" *
          doctest::test_suite("unit")) {
    // Status 3: rank 0's all-reduce failed with an rlhf::error of kind state (probe.cpp), well
    // before the job's limit.
    const auto start = std::chrono::steady_clock::now();
    DOCTEST_CHECK(dist::launch_local({RLHF_DISTRIBUTED_PROBE, "dead-peer"},
                                     {.processes = 2, .timeout = std::chrono::seconds(120)}) == 3);
    DOCTEST_CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(60));
}

TEST_CASE("the rlhf_launch program runs a job and reports a bad command line" * doctest::test_suite("unit")) {
    const std::string launch = RLHF_LAUNCH_PROGRAM;
    DOCTEST_CHECK(std::system((launch + " -n 2 -- /bin/sh -c 'test \"$WORLD_SIZE\" = 2'").c_str()) == 0);
    DOCTEST_CHECK(WEXITSTATUS(std::system((launch + " -n 2 -- /bin/sh -c 'exit 5'").c_str())) == 5);
    DOCTEST_CHECK(WEXITSTATUS(std::system((launch + " -n two -- true 2>/dev/null").c_str())) == 2);
    DOCTEST_CHECK(WEXITSTATUS(std::system((launch + " -n 2 2>/dev/null").c_str())) == 2);
}
