#pragma once
/// @file
/// `rlhf::distributed::launch_local`: starts the ranks of a job on this machine the way torchrun
/// does (`torchrun --standalone --nproc-per-node N`): N copies of a command, each with `RANK`,
/// `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` set. When a
/// rank fails (non-zero exit, a signal), the others are terminated (SIGTERM, then SIGKILL after
/// a grace period) and the launcher returns the failure's status, so a job never hangs on a dead
/// rank; each rank runs in a process group of its own, so terminating it reaches its children,
/// and a SIGINT or SIGTERM to the launcher terminates the job. POSIX only; no LibTorch. The `rlhf_launch` program is
/// this function with a command line.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::distributed {

/// Options of `launch_local`.
struct local_launch_options {
    int processes = 1;                      ///< ranks to start (WORLD_SIZE)
    std::string master_addr = "127.0.0.1";  ///< MASTER_ADDR
    int master_port = 0;                    ///< MASTER_PORT; 0: a free port chosen by the system
    /// A whole-job limit: past it every rank is terminated and the launcher returns 124 (0: none).
    std::chrono::seconds timeout{0};
    std::chrono::seconds grace{10};  ///< between SIGTERM and SIGKILL when terminating ranks
};

namespace detail::launch {

/// A TCP port that was free a moment ago (bound to port 0, then released).
[[nodiscard]] inline int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) fail(error_kind::state, "rlhf::distributed::launch_local", "master_port", "a socket", "none");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof(address);
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
    ::close(fd);
    if (!ok) fail(error_kind::state, "rlhf::distributed::launch_local", "master_port", "a free port", "none");
    return ntohs(address.sin_port);
}

/// Set by SIGINT/SIGTERM while `launch_local` waits: the launcher then terminates the ranks.
[[nodiscard]] inline volatile std::sig_atomic_t& interrupted() noexcept {
    static volatile std::sig_atomic_t signal = 0;
    return signal;
}

/// The exit status of a waited child as a shell reports it (128 + signal).
[[nodiscard]] inline int exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

}  // namespace detail::launch

/// Runs `command` (program and arguments; the program is looked up in `PATH`) as
/// `options.processes` ranks and waits for them (see the file comment). Returns 0 when every rank
/// exits 0, else the status of the first rank that failed (124 past `timeout`). Errors
/// (`rlhf::error`, function `rlhf::distributed::launch_local`): an empty command (kind value,
/// `command`), fewer than 1 process (kind config, `processes`), a port outside [0, 65535].
inline int launch_local(const std::vector<std::string>& command, const local_launch_options& options = {}) {
    constexpr std::string_view fn = "rlhf::distributed::launch_local";
    if (command.empty()) fail(error_kind::value, fn, "command", "a program to run", "nothing");
    if (options.processes < 1) fail(error_kind::config, fn, "processes", ">= 1", std::to_string(options.processes));
    if (options.master_port < 0 || options.master_port > 65535)
        fail(error_kind::config, fn, "master_port", "a port in [0, 65535]", std::to_string(options.master_port));
    const int port = options.master_port != 0 ? options.master_port : detail::launch::free_port();

    std::vector<pid_t> ranks;
    for (int rank = 0; rank < options.processes; ++rank) {
        const pid_t pid = ::fork();
        if (pid < 0) break;  // the ranks started so far are terminated below
        if (pid == 0) {
            ::setpgid(0, 0);  // a process group per rank: terminating a rank reaches its children
            ::setenv("RANK", std::to_string(rank).c_str(), 1);
            ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
            ::setenv("WORLD_SIZE", std::to_string(options.processes).c_str(), 1);
            ::setenv("LOCAL_WORLD_SIZE", std::to_string(options.processes).c_str(), 1);
            ::setenv("MASTER_ADDR", options.master_addr.c_str(), 1);
            ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
            std::vector<char*> argv;
            for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            ::execvp(argv[0], argv.data());
            std::fprintf(stderr, "rlhf_launch: cannot run %s\n", argv[0]);
            std::_Exit(127);
        }
        ::setpgid(pid, pid);  // also here: the child may not have run yet when it is terminated
        ranks.push_back(pid);
    }

    // Ctrl-C or a SIGTERM to the launcher terminates the job (the ranks have process groups of
    // their own, so the terminal's signal does not reach them).
    detail::launch::interrupted() = 0;
    struct sigaction forward {
    }, old_int{}, old_term{};
    forward.sa_handler = [](int signal) { detail::launch::interrupted() = signal; };
    ::sigemptyset(&forward.sa_mask);
    ::sigaction(SIGINT, &forward, &old_int);
    ::sigaction(SIGTERM, &forward, &old_term);

    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    std::vector<bool> running(ranks.size(), true);
    std::size_t alive = ranks.size();
    int result = ranks.size() == static_cast<std::size_t>(options.processes) ? 0 : 1;
    std::chrono::steady_clock::time_point terminated_at{};
    bool terminating = result != 0;
    const auto terminate_all = [&](int signal) {
        for (std::size_t i = 0; i < ranks.size(); ++i)
            if (running[i]) ::kill(-ranks[i], signal);
    };
    if (terminating) {
        terminate_all(SIGTERM);
        terminated_at = clock::now();
    }
    while (alive > 0) {
        for (std::size_t i = 0; i < ranks.size(); ++i) {
            int status = 0;
            if (!running[i] || ::waitpid(ranks[i], &status, WNOHANG) != ranks[i]) continue;
            running[i] = false;
            --alive;
            const int code = detail::launch::exit_code(status);
            if (code != 0 && !terminating) {
                std::fprintf(stderr, "rlhf_launch: rank %zu exited with status %d; terminating the others\n", i, code);
                result = code;
                terminating = true;
                terminate_all(SIGTERM);
                terminated_at = clock::now();
            }
        }
        if (!terminating && detail::launch::interrupted() != 0) {
            result = 128 + detail::launch::interrupted();
            terminating = true;
            terminate_all(SIGTERM);
            terminated_at = clock::now();
        }
        if (!terminating && options.timeout.count() > 0 && clock::now() - start > options.timeout) {
            std::fprintf(stderr, "rlhf_launch: the job ran past %llds; terminating it\n",
                         static_cast<long long>(options.timeout.count()));
            result = 124;
            terminating = true;
            terminate_all(SIGTERM);
            terminated_at = clock::now();
        }
        if (terminating && clock::now() - terminated_at > options.grace) terminate_all(SIGKILL);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGTERM, &old_term, nullptr);
    return result;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::distributed
