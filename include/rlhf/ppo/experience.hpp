#pragma once
/// @file
/// The data of the PPO loop: prompts, generation options, rollouts and experience, each row
/// with an EXPLICIT response range `[response_start, response_end)` into its sequence, so no
/// code ever guesses a padding side. Plus the checks and small helpers over them.
///
/// Two layouts, used everywhere in `rlhf::ppo`:
/// - sequence layout `[B, S]`: prompt and response tokens as the model sees them (any padding
///   side, holes allowed); row `b`'s response is `sequences[b, response_start[b] : response_end[b]]`.
/// - response layout `[B, T]`, `T >= max_b (response_end[b] - response_start[b])`: column `t`
///   of row `b` belongs to the token `sequences[b, response_start[b] + t]`; columns
///   `t >= response_end[b] - response_start[b]` are padding (0). Log-probs, values, rewards,
///   advantages, returns and the action mask use it.
/// @note The response layout is the one of TRL (trl/trainer/ppo_trainer.py), OpenRLHF
///   (openrlhf/trainer/ppo_utils/experience_maker.py: `action_mask`) and verl (`responses`,
///   `response_mask`), where responses are right-padded after the prompt block.

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/libtorch/host_reads.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// Options of `Policy::generate` (and of `rlhf::ppo::generate`, rlhf/ppo/generation.hpp).
/// Validated by `check_generation_options`. The sampling distribution is built in the order of
/// Hugging Face `generate` (transformers/generation/utils.py: `_get_logits_processor`):
/// repetition penalty, temperature, top-k, top-p, min-p.
struct generation_options {
    std::int64_t max_new_tokens = 128;         ///< response tokens to generate at most (> 0)
    double temperature = 1.0;                  ///< softmax temperature (> 0; ignored when `greedy`)
    std::int64_t top_k = 0;                    ///< keep the k most likely tokens; 0 keeps all
    double top_p = 1.0;                        ///< nucleus mass in (0, 1]; 1 keeps all
    bool greedy = false;                       ///< argmax decoding
    std::uint64_t seed = 0;                    ///< sampling seed: same seed, same prompts → same rollout
    double min_p = 0.0;                        ///< keep tokens with p >= min_p · max p, in [0, 1]; 0 keeps all
    double repetition_penalty = 1.0;           ///< CTRL penalty (> 0) on tokens already in the row; 1: none
    std::vector<std::int64_t> eos_token_id{};  ///< ids (>= 0) that end a row; empty: none
    std::vector<std::vector<std::int64_t>> stop_sequences{};  ///< non-empty id sequences that end a row
    std::int64_t pad_token_id = 0;  ///< id (>= 0) written after a row's end and in prompt padding
};

/// Prompts to generate from: token ids `[B, P]` and their attention mask `[B, P]` (any padding side).
struct prompt_batch {
    torch::Tensor input_ids;       ///< `[B, P]` integer token ids
    torch::Tensor attention_mask;  ///< `[B, P]`, entries in {0, 1}
};

/// What to generate for one step: the prompts repeated `samples_per_prompt` times, the group of
/// each row, and the generation options with the step's seed (`make_rollout_request`).
struct rollout_request {
    prompt_batch prompts;
    torch::Tensor group_ids;  ///< `[B]` int64: the index of the row's prompt
    generation_options generation;
};

/// A generated (or given) batch of sequences with explicit per-row response ranges.
struct rollout {
    torch::Tensor sequences;       ///< `[B, S]` integer token ids, prompt and response
    torch::Tensor attention_mask;  ///< `[B, S]`, entries in {0, 1} (bool, uint8, int32, int64, float, double)
    torch::Tensor response_start;  ///< `[B]` int64, first response position of each row
    torch::Tensor response_end;    ///< `[B]` int64, one past the last response position
    /// Optional `[B, T]` mask ∈ {0,1} in the response layout: the response tokens the policy
    /// chose. 0 at tokens it did not (the observations or tool outputs between the turns of a
    /// multi-turn rollout), which then neither train nor count; undefined: every response token.
    torch::Tensor action_mask{};
    /// Optional `[B]` bool: the row was cut at the length limit, not ended by the policy
    /// (`config::bootstrap_truncated` bootstraps its return); undefined: no row was.
    torch::Tensor truncated{};
};

/// Per-token outputs of a policy forward pass in the response layout `[B, T]`.
struct policy_output {
    torch::Tensor log_probs;  ///< `[B, T]` log-probabilities of the response tokens
    torch::Tensor entropy;    ///< `[B, T]` entropy of the token distribution at each response position
};

/// Outputs of one forward of a policy with a value head on its backbone (TRL's
/// `AutoModelForCausalLMWithValueHead`), in the response layout `[B, T]`.
struct policy_value_output {
    torch::Tensor log_probs;  ///< `[B, T]` log-probabilities of the response tokens
    torch::Tensor values;     ///< `[B, T]` the value head's estimates
    torch::Tensor entropy;    ///< `[B, T]` token entropy; undefined when the model does not compute it
};

/// One batch of experience; every tensor has `B` rows. Undefined tensors are absent fields.
/// Required: `sequences`, `attention_mask`, `response_start`, `response_end`. Optional: all
/// other fields; `extras` are further response-layout tensors, `info` further per-row scalars
/// (e.g. a group id for group estimators, a per-row KL for metrics).
struct experience {
    torch::Tensor sequences;       ///< `[B, S]` integer token ids
    torch::Tensor attention_mask;  ///< `[B, S]` mask ∈ {0,1}
    torch::Tensor response_start;  ///< `[B]` int64
    torch::Tensor response_end;    ///< `[B]` int64
    torch::Tensor action_mask;     ///< `[B, T]` mask ∈ {0,1}: response tokens that count; 0 beyond each row's length
    torch::Tensor log_probs;       ///< `[B, T]` floating: behaviour-policy log-probs
    torch::Tensor ref_log_probs;   ///< `[B, T]` floating: reference-model log-probs
    torch::Tensor values;          ///< `[B, T]` floating: critic values
    torch::Tensor rewards;         ///< `[B, T]` floating: per-token (shaped) rewards
    torch::Tensor advantages;      ///< `[B, T]` floating
    torch::Tensor returns;         ///< `[B, T]` floating
    torch::Tensor scores;          ///< `[B]` floating: sequence-level reward-model scores
    std::map<std::string, torch::Tensor> extras;  ///< `[B, T]` response-layout tensors, any dtype
    std::map<std::string, torch::Tensor> info;    ///< `[B]` per-row scalars, any dtype
};

/// Layout of a field of `experience` (see the file comment).
enum class field_layout {
    sequence,  ///< `[B, S]`
    response,  ///< `[B, T]`
    row,       ///< `[B]`
};

/// Which part of `experience` a field lives in.
enum class field_group {
    member,  ///< a named member (`log_probs`, ...)
    extras,  ///< `experience::extras[key]`
    info,    ///< `experience::info[key]`
};

/// Name of a field as used in error messages: `log_probs`, `extras["kl"]`, `info["group"]`.
[[nodiscard]] inline std::string field_name(field_group group, std::string_view key) {
    switch (group) {
        case field_group::member:
            return std::string(key);
        case field_group::extras:
            return "extras[\"" + std::string(key) + "\"]";
        case field_group::info:
            return "info[\"" + std::string(key) + "\"]";
    }
    return std::string(key);
}

namespace detail {

struct member_field {
    std::string_view name;
    torch::Tensor experience::*member;
    field_layout layout;
    bool floating;  // values must be float16/bfloat16/float32/float64
};

// Every member except the response ranges, which are not tensors of rows but row metadata.
inline constexpr member_field member_fields[] = {
    {"sequences", &experience::sequences, field_layout::sequence, false},
    {"attention_mask", &experience::attention_mask, field_layout::sequence, false},
    {"action_mask", &experience::action_mask, field_layout::response, false},
    {"log_probs", &experience::log_probs, field_layout::response, true},
    {"ref_log_probs", &experience::ref_log_probs, field_layout::response, true},
    {"values", &experience::values, field_layout::response, true},
    {"rewards", &experience::rewards, field_layout::response, true},
    {"advantages", &experience::advantages, field_layout::response, true},
    {"returns", &experience::returns, field_layout::response, true},
    {"scores", &experience::scores, field_layout::row, true},
};

[[nodiscard]] inline std::string tensor_shape(const torch::Tensor& t) {
    return libtorch::shape_string(t);
}

[[nodiscard]] inline std::string dtype_text(torch::Dtype dtype) {
    return libtorch::dtype_name(dtype);
}

[[nodiscard]] inline bool is_mask_dtype(torch::Dtype d) {
    return d == torch::kBool || d == torch::kUInt8 || d == torch::kInt32 || d == torch::kInt64 ||
           d == torch::kFloat32 || d == torch::kFloat64;
}

[[nodiscard]] inline bool is_floating_dtype(torch::Dtype d) {
    return d == torch::kFloat32 || d == torch::kFloat64 || d == torch::kFloat16 || d == torch::kBFloat16;
}

[[nodiscard]] inline bool is_token_dtype(torch::Dtype d) {
    return d == torch::kInt64 || d == torch::kInt32 || d == torch::kInt16 || d == torch::kUInt8 || d == torch::kInt8;
}

inline void require_rank(const torch::Tensor& t, std::int64_t rank, std::string_view function,
                         std::string_view argument) {
    if (t.dim() != rank)
        fail(error_kind::shape, function, argument, std::to_string(rank) + " dimensions",
             std::to_string(t.dim()) + " dimensions " + tensor_shape(t));
}

inline void require_rows(const torch::Tensor& t, std::int64_t rows, std::string_view function,
                         std::string_view argument) {
    if (t.size(0) != rows)
        fail(error_kind::shape, function, argument, std::to_string(rows) + " rows (the rows of 'sequences')",
             tensor_shape(t));
}

inline void require_device(const torch::Tensor& t, const torch::Device& device, std::string_view function,
                           std::string_view argument) {
    if (t.device() != device)
        fail(error_kind::device, function, argument, device.str() + " (the device of 'sequences')", t.device().str());
}

// Entries of a mask must be 0 or 1.
inline void require_binary(const torch::Tensor& mask, std::string_view function, std::string_view argument) {
    if (mask.scalar_type() == torch::kBool || mask.numel() == 0) return;
    const torch::Tensor bad = mask.ne(0).logical_and(mask.ne(1));
    if (bad.any().item<bool>())
        fail(error_kind::value, function, argument, "mask entries 0 or 1",
             "an entry " + std::to_string(mask.masked_select(bad)[0].item<double>()));
}

/// A model output must be a floating `[rows, cols]` tensor (`[rows]` when `cols < 0`); `name`
/// names the model call.
inline void check_model_output(const torch::Tensor& t, std::int64_t rows, std::int64_t cols, std::string_view function,
                               std::string_view name) {
    libtorch::check_defined(t, function, name);
    if (!is_floating_dtype(t.scalar_type()))
        fail(error_kind::dtype, function, name, "a floating dtype", libtorch::dtype_name(t.scalar_type()));
    const bool ok =
        cols < 0 ? (t.dim() == 1 && t.size(0) == rows) : (t.dim() == 2 && t.size(0) == rows && t.size(1) == cols);
    if (!ok)
        fail(error_kind::shape, function, name,
             cols < 0 ? "[" + std::to_string(rows) + "]"
                      : "[" + std::to_string(rows) + ", " + std::to_string(cols) + "] (rows, response width)",
             libtorch::shape_string(t));
}

/// A model output and the name errors give it (`check_finite_outputs`).
struct named_output {
    const torch::Tensor* tensor = nullptr;  ///< `[B, T]` per token or `[B]` per row; undefined: skipped
    std::string_view name;
};

/// Checks that every output in `outputs` is finite on the action positions of `mask` (`[B, T]`;
/// a `[B]` output is checked whole), with one host read for all of them. A NaN or ±Inf →
/// `rlhf::error` (kind value, argument: the output's name) naming the first such position and
/// the step.
inline void check_finite_outputs(std::initializer_list<named_output> outputs, const torch::Tensor& mask,
                                 std::int64_t step, std::string_view function) {
    const auto non_finite = [&](const torch::Tensor& t, const torch::Tensor& valid) {
        const torch::Tensor bad = torch::isfinite(t).logical_not();
        return t.dim() == 2 ? bad.logical_and(valid) : bad;
    };
    std::vector<torch::Tensor> found;
    const torch::Tensor valid = mask.ne(0);
    for (const named_output& o : outputs)
        found.push_back(o.tensor->defined() ? non_finite(o.tensor->detach(), valid).any().to(valid.device())
                                            : torch::zeros({}, valid.options()));
    const torch::Tensor any = libtorch::read_to_host(torch::stack(found));
    std::size_t i = 0;
    for (const named_output& o : outputs) {
        if (any[static_cast<std::int64_t>(i++)].item<double>() == 0.0) continue;
        // The error path only: find the first bad position on the host.
        const torch::Tensor values = libtorch::read_to_host(*o.tensor);
        const std::int64_t flat = non_finite(values, valid.cpu()).reshape({-1}).nonzero()[0][0].item<std::int64_t>();
        const double x = values.reshape({-1})[flat].item<double>();
        const std::string position =
            values.dim() == 2 ? std::to_string(flat / values.size(1)) + ", " + std::to_string(flat % values.size(1))
                              : std::to_string(flat);
        fail(error_kind::value, function, o.name,
             "finite values on the action positions of step " + std::to_string(step),
             std::string(std::isnan(x) ? "NaN"
                         : x > 0       ? "+Inf"
                                       : "-Inf") +
                 " at [" + position + "]");
    }
}

}  // namespace detail

/// Checks a rollout's tensors: `sequences` `[B, S]` integer; `attention_mask` `[B, S]` mask ∈ {0,1};
/// `response_start`, `response_end` int64 `[B]` with `0 <= response_start <= response_end <= S`;
/// all on the device of `sequences`. Throws `rlhf::error` naming the argument. `B = 0` is valid.
inline void check_rollout(const rollout& batch, std::string_view function) {
    libtorch::check_defined(batch.sequences, function, "sequences");
    detail::require_rank(batch.sequences, 2, function, "sequences");
    if (!detail::is_token_dtype(batch.sequences.scalar_type()))
        fail(error_kind::dtype, function, "sequences", "an integer dtype (int64, int32, int16, int8, uint8)",
             detail::dtype_text(batch.sequences.scalar_type()));
    const std::int64_t rows = batch.sequences.size(0);
    const std::int64_t width = batch.sequences.size(1);
    const torch::Device device = batch.sequences.device();

    libtorch::check_defined(batch.attention_mask, function, "attention_mask");
    if (batch.attention_mask.sizes() != batch.sequences.sizes())
        fail(error_kind::shape, function, "attention_mask",
             detail::tensor_shape(batch.sequences) + " (the shape of 'sequences')",
             detail::tensor_shape(batch.attention_mask));
    if (!detail::is_mask_dtype(batch.attention_mask.scalar_type()))
        fail(error_kind::dtype, function, "attention_mask", "bool, uint8, int32, int64, float32 or float64",
             detail::dtype_text(batch.attention_mask.scalar_type()));
    detail::require_device(batch.attention_mask, device, function, "attention_mask");
    detail::require_binary(batch.attention_mask, function, "attention_mask");

    for (const auto& [tensor, name] : {std::pair{&batch.response_start, std::string_view("response_start")},
                                       std::pair{&batch.response_end, std::string_view("response_end")}}) {
        libtorch::check_defined(*tensor, function, name);
        if (tensor->scalar_type() != torch::kInt64)
            fail(error_kind::dtype, function, name, "int64", detail::dtype_text(tensor->scalar_type()));
        detail::require_rank(*tensor, 1, function, name);
        detail::require_rows(*tensor, rows, function, name);
        detail::require_device(*tensor, device, function, name);
    }
    if (batch.truncated.defined()) {
        if (batch.truncated.scalar_type() != torch::kBool)
            fail(error_kind::dtype, function, "truncated", "bool", detail::dtype_text(batch.truncated.scalar_type()));
        detail::require_rank(batch.truncated, 1, function, "truncated");
        detail::require_rows(batch.truncated, rows, function, "truncated");
        detail::require_device(batch.truncated, device, function, "truncated");
    }
    if (batch.action_mask.defined()) {
        if (!detail::is_mask_dtype(batch.action_mask.scalar_type()))
            fail(error_kind::dtype, function, "action_mask", "bool, uint8, int32, int64, float32 or float64",
                 detail::dtype_text(batch.action_mask.scalar_type()));
        detail::require_rank(batch.action_mask, 2, function, "action_mask");
        detail::require_rows(batch.action_mask, rows, function, "action_mask");
        detail::require_device(batch.action_mask, device, function, "action_mask");
        detail::require_binary(batch.action_mask, function, "action_mask");
    }
    if (rows == 0) return;
    const torch::Tensor start = batch.response_start.to(torch::kCPU).contiguous();
    const torch::Tensor end = batch.response_end.to(torch::kCPU).contiguous();
    const std::int64_t* s = start.data_ptr<std::int64_t>();
    const std::int64_t* e = end.data_ptr<std::int64_t>();
    for (std::int64_t b = 0; b < rows; ++b) {
        const auto at = static_cast<std::size_t>(b);
        if (s[at] < 0 || s[at] > e[at] || e[at] > width) {
            const std::string got = "response_start[" + std::to_string(b) + "] = " + std::to_string(s[at]) +
                                    ", response_end[" + std::to_string(b) + "] = " + std::to_string(e[at]);
            const std::string expected =
                "0 <= response_start <= response_end <= " + std::to_string(width) + " (the width of 'sequences')";
            fail(error_kind::value, function, (s[at] < 0 || s[at] > e[at]) ? "response_start" : "response_end",
                 expected, got);
        }
    }
}

/// Checks generation options: `max_new_tokens > 0`, `temperature > 0` and finite (unless
/// `greedy`), `top_k >= 0`, `top_p ∈ (0, 1]`, `min_p ∈ [0, 1]`, `repetition_penalty > 0` and
/// finite, `eos_token_id` entries >= 0, `stop_sequences` non-empty with entries >= 0,
/// `pad_token_id >= 0`. Throws `rlhf::error` (kind config) naming the option.
inline void check_generation_options(const generation_options& options, std::string_view function) {
    check_positive(function, "max_new_tokens", options.max_new_tokens);
    if (!options.greedy) check_positive(function, "temperature", options.temperature);
    check_non_negative(function, "top_k", options.top_k);
    if (!(options.top_p > 0.0 && options.top_p <= 1.0))
        fail(error_kind::config, function, "top_p", "a value in (0, 1]", number_string(options.top_p));
    if (!(options.min_p >= 0.0 && options.min_p <= 1.0))
        fail(error_kind::config, function, "min_p", "a value in [0, 1]", number_string(options.min_p));
    check_positive(function, "repetition_penalty", options.repetition_penalty);
    for (const std::int64_t id : options.eos_token_id)
        if (id < 0) fail(error_kind::config, function, "eos_token_id", "token ids >= 0", std::to_string(id));
    for (std::size_t i = 0; i < options.stop_sequences.size(); ++i) {
        const auto& sequence = options.stop_sequences[i];
        const std::string at = "stop_sequences[" + std::to_string(i) + "]";
        if (sequence.empty())
            fail(error_kind::config, function, "stop_sequences", "non-empty sequences", at + " empty");
        for (const std::int64_t id : sequence)
            if (id < 0)
                fail(error_kind::config, function, "stop_sequences", "token ids >= 0",
                     at + " holds " + std::to_string(id));
    }
    check_non_negative(function, "pad_token_id", options.pad_token_id);
}

/// The rollout part of an experience batch (shares the tensors, no copy).
[[nodiscard]] inline rollout as_rollout(const experience& batch) {
    return {batch.sequences, batch.attention_mask, batch.response_start, batch.response_end};
}

/// Width `T` of the response layout of a rollout: `max_b (response_end[b] - response_start[b])`, 0 when `B = 0`.
[[nodiscard]] inline std::int64_t response_width(const rollout& batch) {
    if (batch.response_start.numel() == 0) return 0;
    return (batch.response_end - batch.response_start).max().item<std::int64_t>();
}

/// Response mask `[B, T]` (T = `width`, or `response_width(batch)` when negative) in the
/// response layout: 1 where `t < response_end[b] - response_start[b]`. On the device of the ranges.
[[nodiscard]] inline torch::Tensor response_mask(const rollout& batch, std::int64_t width = -1,
                                                 torch::Dtype dtype = torch::kBool) {
    if (width < 0) width = response_width(batch);
    const torch::Tensor lengths = (batch.response_end - batch.response_start).unsqueeze(1);
    const torch::Tensor columns = torch::arange(width, torch::TensorOptions(torch::kInt64).device(lengths.device()));
    return columns.unsqueeze(0).lt(lengths).to(dtype);
}

/// Gathers a per-position tensor `[B, S]` of the sequence layout into the response layout
/// `[B, T]`: `out[b, t] = per_position[b, response_start[b] + t]` for `t` below the row's response
/// length, 0 beyond. Differentiable (gather + where), so a policy can compute per-position
/// log-probs `lp[b, p] = log π(x_p | x_<p)` over `[B, S]` and return `gather_response(lp, batch)`.
[[nodiscard]] inline torch::Tensor gather_response(const torch::Tensor& per_position, const rollout& batch,
                                                   std::int64_t width = -1) {
    constexpr std::string_view function = "rlhf::ppo::gather_response";
    libtorch::check_defined(per_position, function, "per_position");
    detail::require_rank(per_position, 2, function, "per_position");
    detail::require_rows(per_position, batch.response_start.size(0), function, "per_position");
    if (width < 0) width = response_width(batch);
    const std::int64_t rows = per_position.size(0);
    const torch::Tensor mask = response_mask(batch, width).to(per_position.device());
    if (width == 0 || per_position.size(1) == 0) return torch::zeros({rows, width}, per_position.options());
    const torch::Tensor columns =
        torch::arange(width, torch::TensorOptions(torch::kInt64).device(per_position.device()));
    const torch::Tensor index = (batch.response_start.to(per_position.device()).unsqueeze(1) + columns.unsqueeze(0))
                                    .clamp_max(per_position.size(1) - 1);
    const torch::Tensor gathered = per_position.gather(1, index);
    return torch::where(mask, gathered, torch::zeros_like(gathered));
}

/// Checks an experience batch and returns its row count `B`: the rollout fields as in
/// `check_rollout`; response-layout fields (`action_mask`, `log_probs`, ..., `extras`) `[B, T]`
/// with one common `T >= response_width`; `action_mask` ∈ {0,1} and 0 beyond each row's
/// response length; floating dtypes for `log_probs`, `ref_log_probs`, `values`, `rewards`,
/// `advantages`, `returns`, `scores`; `scores` and `info` `[B]`; all on the device of `sequences`.
inline std::int64_t check_experience(const experience& batch, std::string_view function) {
    check_rollout(as_rollout(batch), function);
    const std::int64_t rows = batch.sequences.size(0);
    const torch::Device device = batch.sequences.device();
    const std::int64_t needed = response_width(as_rollout(batch));

    const torch::Tensor* width_reference = nullptr;
    std::string width_reference_name;
    auto check_field = [&](const torch::Tensor& tensor, const std::string& name, field_layout layout, bool floating) {
        if (!tensor.defined() || layout == field_layout::sequence) return;
        if (floating && !detail::is_floating_dtype(tensor.scalar_type()))
            fail(error_kind::dtype, function, name, "a floating dtype (float32, float64, float16, bfloat16)",
                 detail::dtype_text(tensor.scalar_type()));
        detail::require_rank(tensor, layout == field_layout::row ? 1 : 2, function, name);
        detail::require_rows(tensor, rows, function, name);
        detail::require_device(tensor, device, function, name);
        if (layout != field_layout::response) return;
        if (width_reference == nullptr) {
            if (tensor.size(1) < needed)
                fail(error_kind::shape, function, name,
                     "at least " + std::to_string(needed) + " columns (the longest response)",
                     detail::tensor_shape(tensor));
            width_reference = &tensor;
            width_reference_name = name;
        } else if (tensor.size(1) != width_reference->size(1)) {
            fail(error_kind::shape, function, name,
                 detail::tensor_shape(*width_reference) + " (the shape of '" + width_reference_name + "')",
                 detail::tensor_shape(tensor));
        }
    };
    for (const auto& field : detail::member_fields)
        check_field(batch.*field.member, std::string(field.name), field.layout, field.floating);
    for (const auto& [key, tensor] : batch.extras) {
        libtorch::check_defined(tensor, function, field_name(field_group::extras, key));
        check_field(tensor, field_name(field_group::extras, key), field_layout::response, false);
    }
    for (const auto& [key, tensor] : batch.info) {
        libtorch::check_defined(tensor, function, field_name(field_group::info, key));
        check_field(tensor, field_name(field_group::info, key), field_layout::row, false);
    }

    if (batch.action_mask.defined()) {
        if (!detail::is_mask_dtype(batch.action_mask.scalar_type()))
            fail(error_kind::dtype, function, "action_mask", "bool, uint8, int32, int64, float32 or float64",
                 detail::dtype_text(batch.action_mask.scalar_type()));
        detail::require_binary(batch.action_mask, function, "action_mask");
        const torch::Tensor outside = batch.action_mask.ne(0).logical_and(
            response_mask(as_rollout(batch), batch.action_mask.size(1)).logical_not());
        if (outside.numel() != 0 && outside.any().item<bool>()) {
            const torch::Tensor where = outside.nonzero()[0].to(torch::kCPU);
            fail(error_kind::value, function, "action_mask",
                 "0 beyond each row's response length (response_end - response_start)",
                 "1 at [" + std::to_string(where[0].item<std::int64_t>()) + ", " +
                     std::to_string(where[1].item<std::int64_t>()) + "]");
        }
    }
    return rows;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
