#pragma once
/// @file
/// Building blocks of PPO checkpoints on LibTorch's archives (`torch::serialize::OutputArchive`
/// / `InputArchive`, the format of `torch::save`): atomic writes (a temporary file renamed over
/// the target, so a crash never leaves a torn checkpoint), tensor lists (a model's parameters
/// and buffers, an EMA copy), optimizer state (`torch::optim::Optimizer::save` / `load`, which
/// key the per-parameter state by position), and the text state of a `std::mt19937_64`.
/// `rlhf::ppo::ppo_trainer::save_checkpoint` composes them.

#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/concepts.hpp"

namespace rlhf::ppo::checkpoint {

/// Saves `archive` to `path` atomically: written to `path` + ".tmp", then renamed over `path`.
/// Errors: a file that cannot be written or renamed → `rlhf::error` (kind state, argument
/// `path`); the temporary file is removed.
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
    std::error_code code;
    std::filesystem::rename(temporary, path, code);
    if (code) {
        std::error_code ignored;
        std::filesystem::remove(temporary, ignored);
        fail(error_kind::state, function, "path", "a file that can replace '" + path.string() + "'", code.message());
    }
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

/// Copies `source` (as read) into `target` (a model's live tensors) under no-grad; the count and
/// every shape must match, else `rlhf::error` (kind value, argument `path`) naming `what`.
inline void copy_into(const std::vector<torch::Tensor>& source, const std::vector<torch::Tensor>& target,
                      std::string_view what, std::string_view function) {
    if (source.size() != target.size())
        fail(error_kind::value, function, "path",
             std::to_string(target.size()) + " tensors for " + std::string(what) + " (the model's)",
             std::to_string(source.size()) + " in the checkpoint");
    for (std::size_t i = 0; i < source.size(); ++i)
        if (source[i].sizes() != target[i].sizes())
            fail(error_kind::value, function, "path",
                 libtorch::shape_string(target[i]) + " for " + std::string(what) + "[" + std::to_string(i) + "]",
                 libtorch::shape_string(source[i]) + " in the checkpoint");
    const c10::AutoGradMode no_grad(false);
    for (std::size_t i = 0; i < source.size(); ++i) {
        torch::Tensor destination = target[i];
        destination.copy_(source[i]);
    }
}

/// A model's parameters, then (when it lists them) its buffers, in their deterministic order.
template <HasParameters M>
[[nodiscard]] std::vector<torch::Tensor> model_tensors(M& model) {
    std::vector<torch::Tensor> tensors = model.parameters();
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

}  // namespace rlhf::ppo::checkpoint
