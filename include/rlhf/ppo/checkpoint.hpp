#pragma once
/// @file
/// PPO checkpoints on LibTorch's archives (`torch::serialize::OutputArchive` / `InputArchive`,
/// the format of `torch::save`): atomic writes (a temporary file renamed over the target, so a
/// crash never leaves a torn file), format tags, tensor lists (a model's parameters and buffers,
/// an EMA copy), optimizer state (`torch::optim::Optimizer::save` / `load`, which key the
/// per-parameter state by position), the text state of a `std::mt19937_64`, and the state of a
/// PPO trainer (`save_trainer`, `load_trainer`). The experience buffer's files use them too.

#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#endif

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/concepts.hpp"
#include "rlhf/ppo/parameter_selection.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo::checkpoint {

namespace detail {

/// Flushes a file or directory to the storage device (POSIX `fsync`; a no-op elsewhere), so that
/// a rename published after it never names bytes a power loss could still drop.
inline void flush_to_storage(const std::filesystem::path& path) {
#if defined(__unix__) || defined(__APPLE__)
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return;
    (void)::fsync(fd);
    (void)::close(fd);
#else
    (void)path;
#endif
}

}  // namespace detail

/// Saves `archive` to `path` atomically: written to `path` + ".tmp", flushed to storage, then
/// renamed over `path` (and the directory flushed): a process killed at any point leaves either
/// the old file or the new one, never a torn one. Errors: a file that cannot be written or
/// renamed → `rlhf::error` (kind state, argument `path`); the temporary file is removed.
inline void write_atomically(torch::serialize::OutputArchive& archive, const std::filesystem::path& path,
                             std::string_view function) {
    std::filesystem::path temporary = path;
    temporary += ".tmp";
    try {
        archive.save_to(temporary.string());
    } catch (const std::exception& e) {
        std::error_code ignored;
        std::filesystem::remove(temporary, ignored);
        fail(error_kind::state, function, "path", "a writable file", temporary.string() + " (" + e.what() + ")");
    }
    detail::flush_to_storage(temporary);
    std::error_code code;
    std::filesystem::rename(temporary, path, code);
    if (code) {
        std::error_code ignored;
        std::filesystem::remove(temporary, ignored);
        fail(error_kind::state, function, "path", "a file that can replace '" + path.string() + "'", code.message());
    }
    detail::flush_to_storage(path.has_parent_path() ? path.parent_path() : std::filesystem::path("."));
}

/// Loads the archive at `path`. Errors: a missing or unreadable file → `rlhf::error` (kind
/// state, argument `path`); a file that is not a LibTorch archive → kind value.
inline void read_file(torch::serialize::InputArchive& archive, const std::filesystem::path& path,
                      std::string_view function) {
    if (!std::filesystem::is_regular_file(path))
        fail(error_kind::state, function, "path", "a readable file", path.string());
    try {
        archive.load_from(path.string(), torch::Device(torch::kCPU));
    } catch (const c10::Error& e) {
        fail(error_kind::value, function, "path", "a LibTorch archive",
             path.string() + " (" + e.what_without_backtrace() + ")");
    }
}

/// Writes the format tag `format` (a string under "format").
inline void write_format(torch::serialize::OutputArchive& archive, std::string_view format) {
    archive.write("format", c10::IValue(std::string(format)));
}

/// Reads the format tag; another tag or none → `rlhf::error` (kind value, argument `path`).
inline void read_format(torch::serialize::InputArchive& archive, std::string_view format,
                        const std::filesystem::path& path, std::string_view function) {
    c10::IValue value;
    if (!archive.try_read("format", value) || !value.isString() || value.toStringRef() != format)
        fail(error_kind::value, function, "path", "an rlhf archive of format " + std::string(format), path.string());
}

/// Writes `tensors` under `key` as a nested archive: "count" and "0", "1", ... (detached).
inline void write_tensors(torch::serialize::OutputArchive& archive, const std::string& key,
                          const std::vector<torch::Tensor>& tensors) {
    torch::serialize::OutputArchive nested(archive.compilation_unit());
    nested.write("count", c10::IValue(static_cast<std::int64_t>(tensors.size())));
    for (std::size_t i = 0; i < tensors.size(); ++i) nested.write(std::to_string(i), tensors[i].detach(), true);
    archive.write(key, nested);
}

/// Reads the tensors `write_tensors` wrote under `key` (on the CPU).
inline std::vector<torch::Tensor> read_tensors(torch::serialize::InputArchive& archive, const std::string& key) {
    torch::serialize::InputArchive nested;
    archive.read(key, nested);
    c10::IValue count;
    nested.read("count", count);
    std::vector<torch::Tensor> tensors(static_cast<std::size_t>(count.toInt()));
    for (std::size_t i = 0; i < tensors.size(); ++i) nested.read(std::to_string(i), tensors[i], true);
    return tensors;
}

/// Checks that `saved` (as read) has the count and shapes of `live`, else `rlhf::error` (kind
/// value, argument `path`) naming `what`.
inline void check_same_shapes(const std::vector<torch::Tensor>& saved, const std::vector<torch::Tensor>& live,
                              std::string_view what, std::string_view function) {
    if (saved.size() != live.size())
        fail(error_kind::value, function, "path",
             std::to_string(live.size()) + " tensors for " + std::string(what) + " (the model's)",
             std::to_string(saved.size()) + " in the checkpoint");
    for (std::size_t i = 0; i < saved.size(); ++i)
        if (saved[i].sizes() != live[i].sizes())
            fail(error_kind::value, function, "path",
                 libtorch::shape_string(live[i]) + " for " + std::string(what) + "[" + std::to_string(i) + "]",
                 libtorch::shape_string(saved[i]) + " in the checkpoint");
}

/// Copies `source` (as read) into `target` (a model's live tensors) under no-grad, after
/// `check_same_shapes`.
inline void copy_into(const std::vector<torch::Tensor>& source, const std::vector<torch::Tensor>& target,
                      std::string_view what, std::string_view function) {
    check_same_shapes(source, target, what, function);
    const c10::AutoGradMode no_grad(false);
    for (std::size_t i = 0; i < source.size(); ++i) {
        torch::Tensor destination = target[i];
        destination.copy_(source[i]);
    }
}

/// A model's parameters, then (when it lists them) its buffers, in their deterministic order.
/// With `trainable_only` (parameter-efficient training), only the parameters with `requires_grad()`.
template <HasParameters M>
[[nodiscard]] std::vector<torch::Tensor> model_tensors(M& model, bool trainable_only = false) {
    std::vector<torch::Tensor> tensors = trainable_tensors(model.parameters(), trainable_only);
    if (trainable_only) return tensors;
    if constexpr (requires {
                      { model.buffers() } -> std::convertible_to<std::vector<torch::Tensor>>;
                  }) {
        const std::vector<torch::Tensor> buffers = model.buffers();
        tensors.insert(tensors.end(), buffers.begin(), buffers.end());
    }
    return tensors;
}

/// Writes an optimizer's state (`Optimizer::save`) under `key`.
inline void write_optimizer(torch::serialize::OutputArchive& archive, const std::string& key,
                            const torch::optim::Optimizer& optimizer) {
    torch::serialize::OutputArchive nested(archive.compilation_unit());
    optimizer.save(nested);
    archive.write(key, nested);
}

/// Restores an optimizer's state saved by `write_optimizer` (`Optimizer::load`: the state of
/// the i-th saved parameter goes to the optimizer's i-th parameter).
inline void read_optimizer(torch::serialize::InputArchive& archive, const std::string& key,
                           torch::optim::Optimizer& optimizer) {
    torch::serialize::InputArchive nested;
    archive.read(key, nested);
    optimizer.load(nested);
}

/// The full state of a `std::mt19937_64` as text (the standard's `operator<<` format).
[[nodiscard]] inline std::string engine_state(const std::mt19937_64& engine) {
    std::ostringstream out;
    out << engine;
    return out.str();
}

/// Restores a state written by `engine_state`. Errors: malformed text → `rlhf::error` (kind
/// value, argument `path`).
inline void set_engine_state(std::mt19937_64& engine, const std::string& state, std::string_view function) {
    std::istringstream in(state);
    std::mt19937_64 restored;
    in >> restored;
    if (!in) fail(error_kind::value, function, "path", "a std::mt19937_64 state", "malformed text");
    engine = restored;
}

/// The format tag of a trainer checkpoint.
inline constexpr std::string_view trainer_format = "rlhf.ppo.trainer/1";

/// A trainer's state besides its models and optimizers.
struct trainer_state {
    std::int64_t step = 0;                  ///< completed steps
    std::mt19937_64 engine{};               ///< the trainer's generator
    double kl_coef = 0.0;                   ///< β of the KL controller
    running_moments_state score_moments{};  ///< the running score moments
    /// Optimizer steps the policy's and the critic's LR schedules have counted (schedule.hpp: a
    /// schedule's whole position); 0 when read from a checkpoint written before schedules.
    std::array<std::int64_t, 2> lr_steps{};
};

/// The live tensors and optimizers a trainer checkpoint saves and restores (non-owning).
struct trainer_parts {
    std::vector<torch::Tensor> policy{};                    ///< `model_tensors(policy)`
    std::optional<std::vector<torch::Tensor>> critic{};     ///< `model_tensors(critic)`, with a critic
    std::vector<torch::Tensor> ema{};                       ///< the EMA copy (empty without one)
    std::optional<std::vector<torch::Tensor>> reference{};  ///< a refreshed reference (`sync_ref_model`)
    torch::optim::Optimizer* policy_optimizer = nullptr;    ///< not null
    torch::optim::Optimizer* critic_optimizer = nullptr;    ///< null without one
};

/// Writes a trainer's state, models and optimizers into `archive` (`save_trainer`'s content).
inline void write_trainer(torch::serialize::OutputArchive& archive, const trainer_state& state,
                          const trainer_parts& parts) {
    write_format(archive, trainer_format);
    archive.write("step", c10::IValue(state.step));
    archive.write("rng", c10::IValue(engine_state(state.engine)));
    archive.write("kl_coef", c10::IValue(state.kl_coef));
    archive.write("score_mean", c10::IValue(state.score_moments.mean));
    archive.write("score_std", c10::IValue(state.score_moments.std));
    archive.write("score_var", c10::IValue(state.score_moments.var));
    archive.write("score_count", c10::IValue(state.score_moments.count));
    archive.write("policy_lr_steps", c10::IValue(state.lr_steps[0]));
    archive.write("critic_lr_steps", c10::IValue(state.lr_steps[1]));
    if (parts.reference) write_tensors(archive, "reference", *parts.reference);
    write_tensors(archive, "policy", parts.policy);
    if (parts.critic) write_tensors(archive, "critic", *parts.critic);
    write_optimizer(archive, "policy_optimizer", *parts.policy_optimizer);
    if (parts.critic_optimizer != nullptr) write_optimizer(archive, "critic_optimizer", *parts.critic_optimizer);
    write_tensors(archive, "ema", parts.ema);
}

/// Writes a trainer checkpoint to `path` atomically (`write_atomically`). Errors: an unwritable
/// path (kind state, argument `path`).
inline void save_trainer(const std::filesystem::path& path, const trainer_state& state, const trainer_parts& parts,
                         std::string_view function) {
    torch::serialize::OutputArchive archive;
    write_trainer(archive, state, parts);
    write_atomically(archive, path, function);
}

/// Reads what `write_trainer` wrote into `archive` into `parts` and returns the state, with
/// `load_trainer`'s checks and errors (`path`: where the archive came from, for the messages).
[[nodiscard]] inline trainer_state read_trainer(torch::serialize::InputArchive& archive, const trainer_parts& parts,
                                                const std::filesystem::path& path, std::string_view function) {
    read_format(archive, trainer_format, path, function);
    try {
        trainer_state state;
        c10::IValue value;
        const auto read_double = [&](const char* key) {
            archive.read(key, value);
            return value.toDouble();
        };
        archive.read("step", value);
        state.step = value.toInt();
        archive.read("rng", value);
        set_engine_state(state.engine, value.toStringRef(), function);
        state.kl_coef = read_double("kl_coef");
        state.score_moments = {.mean = read_double("score_mean"),
                               .std = read_double("score_std"),
                               .var = read_double("score_var"),
                               .count = read_double("score_count")};
        const std::vector<torch::Tensor> policy = read_tensors(archive, "policy");
        check_same_shapes(policy, parts.policy, "policy", function);
        std::vector<torch::Tensor> critic;
        if (parts.critic) {
            critic = read_tensors(archive, "critic");
            check_same_shapes(critic, *parts.critic, "critic", function);
        }
        const std::vector<torch::Tensor> ema = read_tensors(archive, "ema");
        check_same_shapes(ema, parts.ema, "ema", function);
        if (archive.try_read("policy_lr_steps", value)) state.lr_steps[0] = value.toInt();
        if (archive.try_read("critic_lr_steps", value)) state.lr_steps[1] = value.toInt();
        std::vector<torch::Tensor> reference;
        if (parts.reference) {
            reference = read_tensors(archive, "reference");
            check_same_shapes(reference, *parts.reference, "reference", function);
        }

        // Everything read and checked: commit.
        copy_into(policy, parts.policy, "policy", function);
        if (parts.critic) copy_into(critic, *parts.critic, "critic", function);
        copy_into(ema, parts.ema, "ema", function);
        if (parts.reference) copy_into(reference, *parts.reference, "reference", function);
        read_optimizer(archive, "policy_optimizer", *parts.policy_optimizer);
        if (parts.critic_optimizer != nullptr) read_optimizer(archive, "critic_optimizer", *parts.critic_optimizer);
        return state;
    } catch (const c10::Error& e) {
        fail(error_kind::value, function, "path", "an rlhf PPO trainer checkpoint with every entry",
             path.string() + " (" + e.what_without_backtrace() + ")");
    }
}

/// Reads a checkpoint written by `save_trainer` into `parts` (built as the saved ones were) and
/// returns the state. Every entry is read and every tensor list's shapes checked before
/// anything changes. Errors: a missing file (kind state, argument `path`); not a trainer
/// checkpoint, a missing entry, or a model or EMA whose parameter count or shapes differ (kind
/// value, argument `path`).
[[nodiscard]] inline trainer_state load_trainer(const std::filesystem::path& path, const trainer_parts& parts,
                                                std::string_view function) {
    torch::serialize::InputArchive archive;
    read_file(archive, path, function);
    return read_trainer(archive, parts, path, function);
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo::checkpoint
