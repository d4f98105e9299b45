// ivalue.h first: clang in C++20 mode rejects LibTorch 1.13's headers otherwise.
#include <ATen/core/ivalue.h>

#include <rlhf/distributed/c10d.hpp>

#include <vector>

int main() {
    // One process: no launch variables, and a communicator whose collectives keep their input.
    rlhf::distributed::single_process group;
    std::vector<double> values{1.0, 2.0};
    group.sum_all(values);
    return rlhf::distributed::launch_environment::read().world_size == 1 && values[1] == 2.0 ? 0 : 1;
}
