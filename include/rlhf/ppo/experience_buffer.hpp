#pragma once
/// @file
/// `rlhf::ppo::experience_buffer`: rows of experience between rollout and PPO epochs. Appending
/// splits a batch into rows (each trimmed to its own tokens), optionally offloaded to the CPU,
/// with a FIFO limit; a plan of seeded minibatch permutations across PPO epochs; micro-batches
/// for gradient accumulation (optionally token-balanced); collate back into a padded batch
/// with left or right padding that carries the response ranges; save/load as LibTorch archives
/// with the checkpoint helpers' atomic writes (rlhf/ppo/checkpoint.hpp).

#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/checkpoint.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// Where `collate` puts the padding of the sequence layout `[B, S]` (`rlhf::padding_side`: left =
/// tokens end at column S - 1, as TRL and OpenRLHF prompts; right = tokens start at column 0). The
/// response layout `[B, T]` is the same for both sides (response tokens from column 0).
using rlhf::padding_side;

/// What `experience_buffer::plan` does when the minibatch size does not divide the row count.
enum class remainder_policy {
    error,          ///< `rlhf::error` (kind config, argument `minibatch_size`)
    drop_last,      ///< drop the last `rows % minibatch_size` rows of each epoch's permutation
    allow_partial,  ///< keep them as a smaller last minibatch
};

// Names for configs read from text (`rlhf::parse_option`), with the frameworks' spellings as aliases.
RLHF_OPTION_NAMES(remainder_policy, {remainder_policy::error, "error"}, {remainder_policy::drop_last, "drop_last"},
                  {remainder_policy::allow_partial, "allow_partial"})

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// Options of an `experience_buffer`.
struct buffer_options {
    std::int64_t limit = 0;    ///< FIFO capacity in rows (oldest rows dropped beyond it); 0 = unbounded
    bool cpu_offload = false;  ///< move every appended tensor to the CPU (collate can move it back)
    std::uint64_t seed = 0;    ///< seed of the minibatch permutations
};

/// Options of `experience_buffer::plan`.
struct minibatch_options {
    std::int64_t minibatch_size = 0;  ///< rows per minibatch (> 0)
    std::int64_t epochs = 1;          ///< PPO epochs over the buffer (> 0), a new permutation each
    bool shuffle = true;              ///< false: rows in buffer order every epoch (draws no permutation)
    remainder_policy remainder = remainder_policy::error;
};

/// Options of `experience_buffer::micro_batches`.
struct micro_batch_options {
    std::int64_t micro_batch_size = 0;  ///< rows per micro-batch at most (> 0)
    bool token_balanced = false;        ///< balance the token counts of the micro-batches (see `micro_batches`)
};

/// Options of `experience_buffer::collate`.
struct collate_options {
    padding_side padding = padding_side::right;
    std::int64_t pad_token_id = 0;                       ///< fills the padding of `sequences` (other fields: 0)
    std::optional<torch::Device> device = std::nullopt;  ///< device of the batch; default: where the rows are
};

/// Row indices into an `experience_buffer` (0 = oldest row).
using row_indices = std::vector<std::int64_t>;

/// `plan[e][m]`: the rows of minibatch `m` of PPO epoch `e`.
using minibatch_plan = std::vector<std::vector<row_indices>>;

/// A FIFO store of experience rows (see the file comment).
///
/// Storage: each row keeps its sequence-layout tensors trimmed to `[lo, hi)`, the smallest
/// span holding its attention-mask ones and its response range, and its response-layout tensors
/// trimmed to its response length; tensors are detached and copied (never views of the
/// appended batch). The set of fields and their dtypes is fixed by the first append after
/// construction or `clear()`; every row lives on one device (the CPU with `cpu_offload`).
class experience_buffer {
public:
    /// Errors: `limit < 0` → `rlhf::error` (kind config, argument `limit`).
    explicit experience_buffer(const buffer_options& options = {}) : options_(options) {
        check_non_negative("rlhf::ppo::experience_buffer", "limit", options.limit);
    }

    /// Appends the `B` rows of `batch` (validated by `check_experience`), then drops the oldest
    /// rows beyond `limit`. A missing `action_mask` is stored as the response mask (dtype bool,
    /// or that of the stored rows). `B = 0` is a no-op. Strong guarantee: on error nothing changes.
    /// Errors (`rlhf::error`, argument = field name): those of `check_experience`; a field present
    /// in the batch but not in the stored rows or vice versa (kind value); a dtype differing from
    /// the stored rows' (kind dtype); a device differing from theirs (kind device, `sequences`).
    void append(const experience& batch) {
        constexpr std::string_view function = "rlhf::ppo::experience_buffer::append";
        const std::int64_t batch_rows = check_experience(batch, function);
        if (batch_rows == 0) return;

        // The batch's fields, in schema order, with a synthesized action mask.
        std::vector<field_spec> schema;
        std::vector<torch::Tensor> tensors;
        std::int64_t response_columns = -1;
        for (const auto& field : detail::member_fields) {
            const torch::Tensor& tensor = batch.*field.member;
            if (tensor.defined() && field.layout == field_layout::response) response_columns = tensor.size(1);
        }
        for (const auto& [key, tensor] : batch.extras) response_columns = tensor.size(1);
        for (const auto& field : detail::member_fields) {
            torch::Tensor tensor = batch.*field.member;
            if (!tensor.defined() && field.name == "action_mask") {
                const field_spec* stored = find(field_group::member, "action_mask");
                const torch::Dtype dtype = stored != nullptr ? stored->dtype : torch::kBool;
                tensor = response_mask(as_rollout(batch), response_columns, dtype);
            }
            if (!tensor.defined()) continue;
            schema.push_back({field_group::member, std::string(field.name), field.layout, tensor.scalar_type()});
            tensors.push_back(tensor);
        }
        for (const auto& [key, tensor] : batch.extras) {
            schema.push_back({field_group::extras, key, field_layout::response, tensor.scalar_type()});
            tensors.push_back(tensor);
        }
        for (const auto& [key, tensor] : batch.info) {
            schema.push_back({field_group::info, key, field_layout::row, tensor.scalar_type()});
            tensors.push_back(tensor);
        }
        const torch::Device target = options_.cpu_offload ? torch::Device(torch::kCPU) : batch.sequences.device();
        if (!rows_.empty()) check_same_schema(schema, target, function);

        for (auto& tensor : tensors) tensor = tensor.detach().to(target);
        const torch::Tensor start_cpu = batch.response_start.to(torch::kCPU).contiguous();
        const torch::Tensor end_cpu = batch.response_end.to(torch::kCPU).contiguous();
        const torch::Tensor attended = batch.attention_mask.ne(0).to(torch::kCPU).contiguous();
        const std::int64_t width = batch.sequences.size(1);
        const bool* attention = attended.data_ptr<bool>();

        std::vector<stored_row> added;
        added.reserve(static_cast<std::size_t>(batch_rows));
        for (std::int64_t b = 0; b < batch_rows; ++b) {
            const std::int64_t start = start_cpu.data_ptr<std::int64_t>()[b];
            const std::int64_t end = end_cpu.data_ptr<std::int64_t>()[b];
            std::int64_t first = -1;
            std::int64_t last = -1;
            std::int64_t tokens = 0;
            for (std::int64_t s = 0; s < width; ++s) {
                if (!attention[b * width + s]) continue;
                if (first < 0) first = s;
                last = s;
                ++tokens;
            }
            const std::int64_t lo = first < 0 ? start : std::min(first, start);
            const std::int64_t hi = first < 0 ? end : std::max(last + 1, end);
            stored_row row{{}, hi - lo, start - lo, end - lo, tokens};
            row.fields.reserve(schema.size());
            for (std::size_t f = 0; f < schema.size(); ++f) {
                const torch::Tensor& tensor = tensors[f];
                switch (schema[f].layout) {
                    case field_layout::sequence:
                        row.fields.push_back(tensor.select(0, b).narrow(0, lo, hi - lo).clone());
                        break;
                    case field_layout::response:
                        row.fields.push_back(tensor.select(0, b).narrow(0, 0, end - start).clone());
                        break;
                    case field_layout::row:
                        row.fields.push_back(tensor.narrow(0, b, 1).clone());
                        break;
                }
            }
            added.push_back(std::move(row));
        }

        if (rows_.empty()) {
            schema_ = std::move(schema);
            device_ = target;
        }
        for (auto& row : added) rows_.push_back(std::move(row));
        if (options_.limit > 0)
            while (static_cast<std::int64_t>(rows_.size()) > options_.limit) rows_.pop_front();
    }

    /// Rows stored.
    [[nodiscard]] std::int64_t size() const noexcept { return static_cast<std::int64_t>(rows_.size()); }
    [[nodiscard]] bool empty() const noexcept { return rows_.empty(); }
    [[nodiscard]] const buffer_options& options() const noexcept { return options_; }

    /// Attention-mask ones of a row: the weight of token-balanced micro-batches.
    [[nodiscard]] std::int64_t row_tokens(std::int64_t row) const {
        return rows_[checked_row(row, "rlhf::ppo::experience_buffer::row_tokens")].tokens;
    }
    /// Response length `response_end - response_start` of a row.
    [[nodiscard]] std::int64_t response_length(std::int64_t row) const {
        const stored_row& r = rows_[checked_row(row, "rlhf::ppo::experience_buffer::response_length")];
        return r.end - r.start;
    }

    /// Permutations drawn so far (the shuffling state; not reset by `clear`).
    [[nodiscard]] std::uint64_t permutations_drawn() const noexcept { return drawn_; }

    /// Draws the next permutation of `[0, size())`. The k-th draw (k = `permutations_drawn()`)
    /// is a Fisher–Yates shuffle driven by `std::mt19937_64` seeded with
    /// `std::seed_seq{seed_lo, seed_hi, k_lo, k_hi}` (32-bit halves) and unbiased rejection
    /// sampling, so the order depends only on (seed, k, size) on every platform.
    [[nodiscard]] row_indices permutation() {
        const std::uint64_t draw = drawn_++;
        std::seed_seq sequence{static_cast<std::uint32_t>(options_.seed),
                               static_cast<std::uint32_t>(options_.seed >> 32U), static_cast<std::uint32_t>(draw),
                               static_cast<std::uint32_t>(draw >> 32U)};
        std::mt19937_64 generator(sequence);
        row_indices order(rows_.size());
        std::iota(order.begin(), order.end(), std::int64_t{0});
        for (std::size_t i = order.size(); i > 1; --i) {
            const auto bound = static_cast<std::uint64_t>(i);
            const std::uint64_t threshold = (std::uint64_t{0} - bound) % bound;  // 2^64 mod bound
            std::uint64_t draw_value = generator();
            while (draw_value < threshold) draw_value = generator();
            std::swap(order[i - 1], order[static_cast<std::size_t>(draw_value % bound)]);
        }
        return order;
    }

    /// Minibatches of `options.epochs` PPO epochs: each epoch draws a new `permutation()` (or
    /// keeps buffer order when `shuffle` is false) and cuts it into `minibatch_size` rows.
    /// Every row appears exactly once per epoch, except the rows dropped by `drop_last`.
    /// Errors (`rlhf::error`): an empty buffer (kind state, argument `buffer`); `epochs < 1`
    /// (config, `epochs`); `minibatch_size < 1` (config, `minibatch_size`); a `minibatch_size`
    /// that does not divide `size()` under `remainder_policy::error`, or exceeds it under
    /// `drop_last` (config, `minibatch_size`).
    /// @note Across epochs a fresh permutation as TRL (trl/trainer/ppo_trainer.py: `np.random.permutation`
    ///   per epoch) and OpenRLHF (DataLoader shuffle per epoch).
    [[nodiscard]] minibatch_plan plan(const minibatch_options& options) {
        constexpr std::string_view function = "rlhf::ppo::experience_buffer::plan";
        if (rows_.empty()) fail(error_kind::state, function, "buffer", "a non-empty buffer", "0 rows");
        check_positive(function, "epochs", options.epochs);
        check_positive(function, "minibatch_size", options.minibatch_size);
        const std::int64_t rows = size();
        const std::int64_t remainder = rows % options.minibatch_size;
        if (remainder != 0 && options.remainder == remainder_policy::error)
            fail(error_kind::config, function, "minibatch_size",
                 "a divisor of the row count " + std::to_string(rows) +
                     " (or remainder_policy::drop_last / allow_partial)",
                 std::to_string(options.minibatch_size));
        if (options.minibatch_size > rows && options.remainder == remainder_policy::drop_last)
            fail(error_kind::config, function, "minibatch_size",
                 "at most the row count " + std::to_string(rows) + " under remainder_policy::drop_last",
                 std::to_string(options.minibatch_size));
        const std::int64_t kept = options.remainder == remainder_policy::drop_last ? rows - remainder : rows;

        minibatch_plan result;
        result.reserve(static_cast<std::size_t>(options.epochs));
        for (std::int64_t epoch = 0; epoch < options.epochs; ++epoch) {
            row_indices order;
            if (options.shuffle) {
                order = permutation();
            } else {
                order.resize(rows_.size());
                std::iota(order.begin(), order.end(), std::int64_t{0});
            }
            std::vector<row_indices> minibatches;
            for (std::int64_t begin = 0; begin < kept; begin += options.minibatch_size) {
                const std::int64_t end = std::min(begin + options.minibatch_size, kept);
                minibatches.emplace_back(order.begin() + begin, order.begin() + end);
            }
            result.push_back(std::move(minibatches));
        }
        return result;
    }

    /// Splits `rows` (a minibatch) into `ceil(n / micro_batch_size)` micro-batches of at most
    /// `micro_batch_size` rows, for gradient accumulation. Plain: consecutive chunks of `rows`
    /// (the last may be smaller). Token-balanced: greedy longest-first (LPT) partition on the
    /// rows' token counts (`row_tokens`): rows by decreasing tokens (ties: earlier first) go to
    /// the micro-batch with the fewest tokens that still has room (ties: fewer rows, then lower
    /// index); no micro-batch is empty; within a micro-batch rows keep their order in `rows`.
    /// (Without the row cap, LPT's largest load is at most 4/3 of the optimal largest load.)
    /// Errors: `micro_batch_size < 1` (config, `micro_batch_size`); empty `rows` or an index
    /// outside `[0, size())` (value, `rows`).
    /// @note Token balancing as verl's dynamic batch size (verl/utils/seqlen_balancing.py:
    ///   `greedy_partition`; verl defaults to Karmarkar–Karp, which we do not use).
    [[nodiscard]] std::vector<row_indices> micro_batches(std::span<const std::int64_t> rows,
                                                         const micro_batch_options& options) const {
        constexpr std::string_view function = "rlhf::ppo::experience_buffer::micro_batches";
        check_positive(function, "micro_batch_size", options.micro_batch_size);
        check_rows(rows, function);
        const auto count = static_cast<std::int64_t>(rows.size());
        const std::int64_t parts = (count + options.micro_batch_size - 1) / options.micro_batch_size;
        std::vector<row_indices> result(static_cast<std::size_t>(parts));
        if (!options.token_balanced) {
            for (std::int64_t i = 0; i < count; ++i)
                result[static_cast<std::size_t>(i / options.micro_batch_size)].push_back(
                    rows[static_cast<std::size_t>(i)]);
            return result;
        }
        std::vector<std::size_t> order(rows.size());
        std::iota(order.begin(), order.end(), std::size_t{0});
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
            return rows_[static_cast<std::size_t>(rows[a])].tokens > rows_[static_cast<std::size_t>(rows[b])].tokens;
        });
        std::vector<std::int64_t> load(result.size(), 0);
        std::vector<std::vector<std::size_t>> members(result.size());
        for (const std::size_t position : order) {
            std::size_t best = result.size();
            for (std::size_t p = 0; p < result.size(); ++p) {
                if (static_cast<std::int64_t>(members[p].size()) >= options.micro_batch_size) continue;
                if (best == result.size() || load[p] < load[best] ||
                    (load[p] == load[best] && members[p].size() < members[best].size()))
                    best = p;
            }
            load[best] += rows_[static_cast<std::size_t>(rows[position])].tokens;
            members[best].push_back(position);
        }
        for (std::size_t p = 0; p < result.size(); ++p) {
            std::sort(members[p].begin(), members[p].end());
            for (const std::size_t position : members[p]) result[p].push_back(rows[position]);
        }
        return result;
    }

    /// Collates `rows` into one `experience` batch of `n` rows: sequence layout `[n, S]` with
    /// `S` the longest stored row, each row's tokens at columns `[0, L)` (right padding) or
    /// `[S - L, S)` (left padding), `response_start`/`response_end` giving its response there;
    /// response layout `[n, T]`, `T` the longest response, identical for both sides; padding is
    /// `pad_token_id` in `sequences` and 0 everywhere else. Fields absent from the stored rows
    /// stay undefined (`action_mask` is always present). On the rows' device, or `options.device`.
    /// Errors: empty `rows` or an index outside `[0, size())` (value, `rows`).
    [[nodiscard]] experience collate(std::span<const std::int64_t> rows, const collate_options& options = {}) const {
        constexpr std::string_view function = "rlhf::ppo::experience_buffer::collate";
        check_rows(rows, function);
        const auto count = static_cast<std::int64_t>(rows.size());
        std::int64_t columns = 0;
        std::int64_t responses = 0;
        for (const std::int64_t r : rows) {
            const stored_row& row = rows_[static_cast<std::size_t>(r)];
            columns = std::max(columns, row.length);
            responses = std::max(responses, row.end - row.start);
        }
        const torch::Device device = options.device.value_or(device_);
        experience batch;
        for (std::size_t f = 0; f < schema_.size(); ++f) {
            const field_spec& spec = schema_[f];
            const torch::TensorOptions tensor_options = torch::TensorOptions(spec.dtype).device(device_);
            torch::Tensor out;
            switch (spec.layout) {
                case field_layout::sequence: {
                    const bool tokens = spec.group == field_group::member && spec.key == "sequences";
                    out = torch::full({count, columns}, tokens ? options.pad_token_id : 0, tensor_options);
                    for (std::int64_t i = 0; i < count; ++i) {
                        const stored_row& row = rows_[static_cast<std::size_t>(rows[static_cast<std::size_t>(i)])];
                        const std::int64_t offset = options.padding == padding_side::left ? columns - row.length : 0;
                        out.select(0, i).narrow(0, offset, row.length).copy_(row.fields[f]);
                    }
                    break;
                }
                case field_layout::response:
                    out = torch::zeros({count, responses}, tensor_options);
                    for (std::int64_t i = 0; i < count; ++i) {
                        const stored_row& row = rows_[static_cast<std::size_t>(rows[static_cast<std::size_t>(i)])];
                        out.select(0, i).narrow(0, 0, row.end - row.start).copy_(row.fields[f]);
                    }
                    break;
                case field_layout::row: {
                    std::vector<torch::Tensor> parts;
                    parts.reserve(rows.size());
                    for (const std::int64_t r : rows) parts.push_back(rows_[static_cast<std::size_t>(r)].fields[f]);
                    out = torch::cat(parts);
                    break;
                }
            }
            slot(batch, spec) = out.to(device);
        }
        torch::Tensor start = torch::empty({count}, torch::kInt64);
        torch::Tensor end = torch::empty({count}, torch::kInt64);
        for (std::int64_t i = 0; i < count; ++i) {
            const stored_row& row = rows_[static_cast<std::size_t>(rows[static_cast<std::size_t>(i)])];
            const std::int64_t offset = options.padding == padding_side::left ? columns - row.length : 0;
            start.data_ptr<std::int64_t>()[i] = offset + row.start;
            end.data_ptr<std::int64_t>()[i] = offset + row.end;
        }
        batch.response_start = start.to(device);
        batch.response_end = end.to(device);
        return batch;
    }

    /// `collate` of every row, oldest first. Errors: an empty buffer (kind state, `buffer`).
    [[nodiscard]] experience collate_all(const collate_options& options = {}) const {
        if (rows_.empty())
            fail(error_kind::state, "rlhf::ppo::experience_buffer::collate_all", "buffer", "a non-empty buffer",
                 "0 rows");
        row_indices all(rows_.size());
        std::iota(all.begin(), all.end(), std::int64_t{0});
        return collate(all, options);
    }

    /// Writes the rows and the shuffling state (seed, permutations drawn) to `path` as a LibTorch
    /// archive, atomically (`checkpoint::write_atomically`: a temporary file renamed over `path`):
    /// the right-padded `collate_all()` on the CPU, field by field, with the response ranges.
    /// Errors: a path that cannot be written or renamed → `rlhf::error` (kind state, argument
    /// `path`); the temporary file is removed.
    void save(const std::filesystem::path& path) const {
        torch::serialize::OutputArchive archive;
        checkpoint::write_format(archive, file_format);
        archive.write("seed", c10::IValue(static_cast<std::int64_t>(options_.seed)));
        archive.write("drawn", c10::IValue(static_cast<std::int64_t>(drawn_)));
        archive.write("rows", c10::IValue(size()));
        std::vector<torch::Tensor> tensors;
        if (!rows_.empty()) {
            experience all = collate_all({.device = torch::Device(torch::kCPU)});
            std::vector<field_spec> fields = schema_;
            fields.push_back({field_group::member, "response_start", field_layout::row, torch::kInt64});
            fields.push_back({field_group::member, "response_end", field_layout::row, torch::kInt64});
            for (std::size_t f = 0; f < fields.size(); ++f) {
                archive.write("group_" + std::to_string(f), c10::IValue(static_cast<std::int64_t>(fields[f].group)));
                archive.write("key_" + std::to_string(f), c10::IValue(fields[f].key));
                tensors.push_back(slot(all, fields[f]));
            }
        }
        checkpoint::write_tensors(archive, "fields", tensors);
        checkpoint::write_atomically(archive, path, "rlhf::ppo::experience_buffer::save");
    }

    /// Replaces the rows and the shuffling state (seed, permutations drawn) by those saved in
    /// `path`; `limit` and `cpu_offload` stay as constructed (rows load onto the CPU, then
    /// `limit` applies). Strong guarantee. Errors: a missing file (kind state, argument `path`);
    /// not a buffer file, a missing entry, a truncated file (kind value, `path`).
    void load(const std::filesystem::path& path) {
        constexpr std::string_view function = "rlhf::ppo::experience_buffer::load";
        torch::serialize::InputArchive archive;
        checkpoint::read_file(archive, path, function);
        checkpoint::read_format(archive, file_format, path, function);
        buffer_options restored = options_;
        experience batch;
        std::int64_t rows = 0;
        std::uint64_t drawn = 0;
        try {
            c10::IValue value;
            archive.read("seed", value);
            restored.seed = static_cast<std::uint64_t>(value.toInt());
            archive.read("drawn", value);
            drawn = static_cast<std::uint64_t>(value.toInt());
            archive.read("rows", value);
            rows = value.toInt();
            const std::vector<torch::Tensor> tensors = checkpoint::read_tensors(archive, "fields");
            for (std::size_t f = 0; f < tensors.size(); ++f) {
                archive.read("group_" + std::to_string(f), value);
                const std::int64_t group = value.toInt();
                archive.read("key_" + std::to_string(f), value);
                const std::string key = value.toStringRef();
                if (group == static_cast<std::int64_t>(field_group::extras)) {
                    batch.extras[key] = tensors[f];
                } else if (group == static_cast<std::int64_t>(field_group::info)) {
                    batch.info[key] = tensors[f];
                } else {
                    torch::Tensor* target = member_slot(batch, key);
                    if (group != static_cast<std::int64_t>(field_group::member) || target == nullptr)
                        corrupt_file(function, path, "an unknown field '" + key + "'");
                    *target = tensors[f];
                }
            }
        } catch (const c10::Error& e) {
            corrupt_file(function, path, e.what_without_backtrace());
        }
        experience_buffer loaded(restored);
        if (rows != 0) {
            if (!batch.sequences.defined() || batch.sequences.size(0) != rows)
                corrupt_file(function, path, "a row count that does not match 'sequences'");
            loaded.append(batch);
        }
        loaded.drawn_ = drawn;
        *this = std::move(loaded);
    }

    /// Drops every row and the field schema; keeps the options and the shuffling state.
    void clear() noexcept {
        rows_.clear();
        schema_.clear();
        device_ = torch::Device(torch::kCPU);
    }

private:
    struct field_spec {
        field_group group;
        std::string key;
        field_layout layout;
        torch::Dtype dtype;
    };
    struct stored_row {
        std::vector<torch::Tensor> fields;  // one per schema_ entry, 1-D
        std::int64_t length;                // sequence-layout columns kept
        std::int64_t start;                 // response range within them
        std::int64_t end;
        std::int64_t tokens;  // attention-mask ones
    };

    static constexpr std::string_view file_format = "rlhf.ppo.experience_buffer/1";

    [[noreturn]] static void corrupt_file(std::string_view function, const std::filesystem::path& path,
                                          std::string_view what) {
        fail(error_kind::value, function, "path", "an rlhf experience buffer file (" + std::string(file_format) + ")",
             std::string(what) + " in " + path.string());
    }

    static torch::Tensor* member_slot(experience& batch, std::string_view key) {
        if (key == "response_start") return &batch.response_start;
        if (key == "response_end") return &batch.response_end;
        for (const auto& field : detail::member_fields)
            if (field.name == key) return &(batch.*field.member);
        return nullptr;
    }

    static torch::Tensor& slot(experience& batch, const field_spec& spec) {
        switch (spec.group) {
            case field_group::extras:
                return batch.extras[spec.key];
            case field_group::info:
                return batch.info[spec.key];
            case field_group::member:
                break;
        }
        return *member_slot(batch, spec.key);
    }

    [[nodiscard]] const field_spec* find(field_group group, std::string_view key) const {
        for (const field_spec& spec : schema_)
            if (spec.group == group && spec.key == key) return &spec;
        return nullptr;
    }

    void check_same_schema(const std::vector<field_spec>& schema, const torch::Device& device,
                           std::string_view function) const {
        if (device != device_)
            fail(error_kind::device, function, "sequences", device_.str() + " (the device of the stored rows)",
                 device.str());
        for (const field_spec& spec : schema) {
            const field_spec* stored = find(spec.group, spec.key);
            if (stored == nullptr)
                fail(error_kind::value, function, field_name(spec.group, spec.key),
                     "absent, as in the rows already in the buffer", "a defined tensor");
            if (stored->dtype != spec.dtype)
                fail(error_kind::dtype, function, field_name(spec.group, spec.key),
                     libtorch::dtype_name(stored->dtype) + " (the dtype of the rows already in the buffer)",
                     libtorch::dtype_name(spec.dtype));
        }
        for (const field_spec& stored : schema_) {
            const bool present = std::any_of(schema.begin(), schema.end(), [&](const field_spec& spec) {
                return spec.group == stored.group && spec.key == stored.key;
            });
            if (!present)
                fail(error_kind::value, function, field_name(stored.group, stored.key),
                     "a defined tensor, as in the rows already in the buffer", "an undefined tensor");
        }
    }

    [[nodiscard]] std::size_t checked_row(std::int64_t row, std::string_view function) const {
        if (row < 0 || row >= size())
            fail(error_kind::value, function, "row", "an index in [0, " + std::to_string(size()) + ")",
                 std::to_string(row));
        return static_cast<std::size_t>(row);
    }

    void check_rows(std::span<const std::int64_t> rows, std::string_view function) const {
        if (rows.empty()) fail(error_kind::value, function, "rows", "at least one row index", "none");
        for (std::size_t i = 0; i < rows.size(); ++i)
            if (rows[i] < 0 || rows[i] >= size())
                fail(error_kind::value, function, "rows", "indices in [0, " + std::to_string(size()) + ")",
                     "rows[" + std::to_string(i) + "] = " + std::to_string(rows[i]));
    }

    buffer_options options_;
    std::vector<field_spec> schema_;
    torch::Device device_{torch::kCPU};
    std::deque<stored_row> rows_;
    std::uint64_t drawn_ = 0;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
