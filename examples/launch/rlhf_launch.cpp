// rlhf_launch: runs a program as the ranks of a data-parallel job on this machine, with the
// variables torchrun sets (rlhf/distributed/launcher.hpp).
//   rlhf_launch -n 2 [--master-addr A] [--master-port P] [--timeout S] -- program args...
#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "rlhf/core/error.hpp"
#include "rlhf/distributed/launcher.hpp"

namespace {

constexpr std::string_view usage =
    "usage: rlhf_launch -n N [--master-addr ADDR] [--master-port PORT] [--timeout SECONDS] -- program args...\n";

bool parse_int(std::string_view text, int& value) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

int main(int argc, char** argv) {
    rlhf::distributed::local_launch_options options;
    std::vector<std::string> command;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--") {
            command.assign(argv + i + 1, argv + argc);
            break;
        }
        const bool takes_value = arg == "-n" || arg == "--nproc-per-node" || arg == "--master-addr" ||
                                 arg == "--master-port" || arg == "--timeout";
        int number = 0;
        if (!takes_value || i + 1 >= argc) {
            std::fprintf(stderr, "rlhf_launch: unknown or incomplete option '%s'\n%s", argv[i], usage.data());
            return 2;
        }
        const std::string_view value = argv[++i];
        if (arg == "--master-addr") {
            options.master_addr = value;
            continue;
        }
        if (!parse_int(value, number)) {
            std::fprintf(stderr, "rlhf_launch: %s takes an integer, not '%s'\n", arg.data(), value.data());
            return 2;
        }
        if (arg == "-n" || arg == "--nproc-per-node") options.processes = number;
        if (arg == "--master-port") options.master_port = number;
        if (arg == "--timeout") options.timeout = std::chrono::seconds(number);
    }
    if (command.empty()) {
        std::fprintf(stderr, "rlhf_launch: no program after '--'\n%s", usage.data());
        return 2;
    }
    try {
        return rlhf::distributed::launch_local(command, options);
    } catch (const rlhf::error& e) {
        std::fprintf(stderr, "rlhf_launch: %s\n", e.what());
        return 2;
    }
}
