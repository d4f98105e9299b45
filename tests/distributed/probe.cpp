// A small job for the communicator tests (test_communicator.cpp), run by launch_local:
//   rlhf_distributed_probe sum        every rank: a Gloo all-reduce (sum, max), a broadcast, gradient averaging
//   rlhf_distributed_probe groups     3 ranks: the world group, then a group of ranks {0, 2} (rank 1 not in it)
//   rlhf_distributed_probe bad-groups a group's rank list out of order or out of range (kind value), or
//                                     without this rank (kind state), is refused naming `ranks`
//   rlhf_distributed_probe dead-peer  rank 1 leaves after joining; rank 0's next all-reduce must fail
// Exit codes: 0 the results were right; 1 a wrong result; 3 an rlhf::error of kind state (the
// failed collective); 4 another error.
#include <ATen/core/ivalue.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "rlhf/distributed/c10d.hpp"

namespace {

int run(std::string_view mode) {
    namespace dist = rlhf::distributed;
    const dist::launch_environment env = dist::launch_environment::read();
    dist::c10d_job job(env, std::chrono::seconds(20));
    const auto world = job.gloo();
    const int rank = world->rank();
    const int size = world->world_size();
    if (mode == "sum") {
        std::vector<double> values{1.0 + rank, 10.0 * rank};
        world->sum_all(values);
        std::vector<double> largest{static_cast<double>(rank)};
        world->max_all(largest);
        torch::Tensor t = torch::full({3}, static_cast<double>(rank + 5));
        world->broadcast(t, size - 1);
        torch::Tensor weight = torch::zeros({2, 3}, torch::requires_grad());
        torch::Tensor bias = torch::zeros({4}, torch::requires_grad());
        weight.mutable_grad() = torch::full({2, 3}, static_cast<float>(rank));
        world->average_gradients({weight, bias}, 8);  // buckets of 2 floats
        const double n = size;
        const bool ok = values[0] == n * (n + 1) / 2 && values[1] == 10.0 * n * (n - 1) / 2 && largest[0] == n - 1 &&
                        t.eq(size - 1 + 5).all().item<bool>() && weight.grad().eq((n - 1) / 2).all().item<bool>() &&
                        bias.grad().eq(0).all().item<bool>();
        return ok ? 0 : 1;
    }
    if (mode == "groups") {
        std::vector<double> one{1.0};
        world->sum_all(one);
        if (one[0] != size) return 1;
        if (rank == 1) return 0;
        const auto pair = job.gloo_group({0, 2}, "pair");
        torch::Tensor t = torch::full({2}, static_cast<double>(rank));
        pair->broadcast(t, 0);
        return pair->world_size() == 2 && pair->rank() == rank / 2 && t.eq(0).all().item<bool>() ? 0 : 1;
    }
    if (mode == "bad-groups") {  // a list out of order, a group without this rank
        const auto kind_of = [&](const std::vector<int>& ranks) {
            try {
                (void)job.gloo_group(ranks, "bad");
            } catch (const rlhf::error& e) {
                return e.argument() == "ranks" ? static_cast<int>(e.kind()) : -1;
            }
            return -1;
        };
        const bool ok = kind_of({1, 0}) == static_cast<int>(rlhf::error_kind::value) &&
                        kind_of({size}) == static_cast<int>(rlhf::error_kind::value) &&
                        kind_of({(rank + 1) % size}) == static_cast<int>(rlhf::error_kind::state);
        return ok ? 0 : 1;
    }
    if (mode == "dead-peer") {
        if (rank == 1) std::_Exit(0);  // leaves without a word
        std::vector<double> values{1.0};
        world->sum_all(values);
        return 1;  // unreachable when the failure is reported
    }
    return 4;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) return 4;
    try {
        return run(argv[1]);
    } catch (const rlhf::error& e) {
        std::fprintf(stderr, "probe: %s\n", e.what());
        return e.kind() == rlhf::error_kind::state ? 3 : 4;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "probe: %s\n", e.what());
        return 4;
    }
}
