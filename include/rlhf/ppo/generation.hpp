#pragma once
/// @file
/// Generation for causal language models with a KV cache: the `CausalDecoder` concept, the
/// sampling steps (repetition penalty, temperature, top-k, top-p, min-p, greedy) and
/// `generate`, which turns prompts into a `rollout` plus the log-probs PPO needs.
///
/// Randomness: one CPU `torch::Generator` seeded with `generation_options::seed`; step `t` draws
/// `torch::rand({B}, generator, float64)` and samples by inverse CDF on the logits' device, so
/// the same seed and prompts give the same tokens on any device. Sampling runs in float32
/// (float64 for float64 logits), also for bfloat16/float16 logits.
/// @note Order of the logits processors as Hugging Face `generate`
///   (transformers/generation/utils.py: `_get_logits_processor`); old log-probs under
///   `logits / temperature` as TRL v0.11 (trl/trainer/ppo_trainer.py: `logits /= temperature`).

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlhf/core/error.hpp"
#include "rlhf/libtorch/logits.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The cache type of a decoder: what `decoder.new_cache(rows)` returns.
template <class D>
using decoder_cache_t = std::remove_cvref_t<decltype(std::declval<D&>().new_cache(std::int64_t{}))>;

/// A causal LM with a KV cache, as `generate` drives it:
/// - `decoder.new_cache(rows)` → an empty cache of the model's own type for `rows` sequences;
/// - `decoder.forward(input_ids [B, n], attention_mask [B, past + n], position_ids [B, n], cache)`
///   → logits `[B, n, V]` (floating, on the device of `input_ids`): the `n` new tokens attend
///   causally to the `past` cached ones and to each other, never to a key whose mask entry is 0;
///   the call appends the new keys/values to `cache`. A query whose keys are all masked (a
///   padding position) must stay finite (let it attend to itself).
template <class D>
concept CausalDecoder = requires(D& decoder, std::int64_t rows) {
    decoder.new_cache(rows);
}
&&requires(D& decoder, decoder_cache_t<D>& cache, const torch::Tensor& tensor) {
    { decoder.forward(tensor, tensor, tensor, cache) } -> std::convertible_to<torch::Tensor>;
};

/// Position ids `[B, S]` int64 of a (left-padded) mask: `cumsum(mask) - 1`, 0 on leading padding.
/// @note As Hugging Face `prepare_inputs_for_generation` (`attention_mask.cumsum(-1) - 1`).
[[nodiscard]] inline torch::Tensor position_ids(const torch::Tensor& attention_mask) {
    return (attention_mask.ne(0).to(torch::kInt64).cumsum(1) - 1).clamp_min(0);
}

/// `[B, V]` bool: token `v` occurs among row `b`'s tokens whose mask entry is 1 (the set the
/// repetition penalty acts on; padding does not count).
[[nodiscard]] inline torch::Tensor seen_tokens(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                               std::int64_t vocab) {
    const torch::Tensor valid = attention_mask.ne(0);
    const torch::Tensor ids = torch::where(valid, input_ids.to(torch::kInt64), torch::zeros_like(valid, torch::kInt64));
    torch::Tensor counts =
        torch::zeros({input_ids.size(0), vocab}, torch::TensorOptions(torch::kInt64).device(input_ids.device()));
    return counts.scatter_add_(1, ids, valid.to(torch::kInt64)).gt(0);
}

namespace detail::generation {

inline constexpr double neg_inf = -std::numeric_limits<double>::infinity();

[[nodiscard]] inline torch::Dtype compute_dtype(torch::Dtype dtype) {
    return dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// The processors on validated inputs: logits [B, V] floating, seen [B, V] bool or undefined.
[[nodiscard]] inline torch::Tensor process(const torch::Tensor& logits, const generation_options& options,
                                           const torch::Tensor& seen) {
    torch::Tensor x = logits.to(compute_dtype(logits.scalar_type()));
    if (options.repetition_penalty != 1.0 && seen.defined()) {
        const double r = options.repetition_penalty;
        x = torch::where(seen, torch::where(x.gt(0), x / r, x * r), x);
    }
    if (options.greedy) return x;
    if (options.temperature != 1.0) x = x / options.temperature;
    if (options.top_k > 0 && options.top_k < x.size(1)) {
        const torch::Tensor kept =
            torch::zeros_like(x, torch::kBool).scatter_(1, std::get<1>(x.topk(options.top_k, 1)), true);
        x = x.masked_fill(kept.logical_not(), neg_inf);
    }
    if (options.top_p < 1.0) {
        const auto [sorted, order] = x.sort(1, /*descending=*/true);
        const torch::Tensor p = sorted.softmax(1);
        const torch::Tensor dropped = (p.cumsum(1) - p).ge(options.top_p);  // mass before the token already >= top_p
        x = x.masked_fill(torch::zeros_like(dropped).scatter_(1, order, dropped), neg_inf);
    }
    if (options.min_p > 0.0) {
        const torch::Tensor p = x.softmax(1);
        x = x.masked_fill(p.lt(p.amax(1, true) * options.min_p), neg_inf);
    }
    return x;
}

// Inverse CDF on the processed logits [B, V] with uniforms [B] in [0, 1), in float64.
[[nodiscard]] inline torch::Tensor inverse_cdf(const torch::Tensor& processed, const torch::Tensor& uniforms) {
    const torch::Tensor cdf = processed.softmax(1).to(torch::kFloat64).cumsum(1);
    const std::int64_t vocab = processed.size(1);
    const torch::Tensor target =
        uniforms.to(processed.device(), torch::kFloat64).unsqueeze(1) * cdf.narrow(1, vocab - 1, 1);
    return cdf.le(target).sum(1).clamp_max(vocab - 1);
}

inline void check_logits(const torch::Tensor& logits, std::int64_t dim, std::string_view function,
                         std::string_view argument) {
    libtorch::check_defined(logits, function, argument);
    if (!ppo::detail::is_floating_dtype(logits.scalar_type()))
        fail(error_kind::dtype, function, argument, "a floating dtype (float32, float64, float16, bfloat16)",
             libtorch::dtype_name(logits.scalar_type()));
    if (logits.dim() != dim || logits.size(-1) == 0)
        fail(error_kind::shape, function, argument, dim == 2 ? "[B, V] with V > 0" : "[B, n, V] with V > 0",
             libtorch::shape_string(logits));
}

// The last-position logits [B, V] of a decoder call, after checking its output [rows, n, vocab].
[[nodiscard]] inline torch::Tensor last_logits(const torch::Tensor& logits, std::int64_t rows, std::int64_t n,
                                               std::int64_t vocab, const torch::Device& device,
                                               std::string_view function) {
    constexpr std::string_view argument = "decoder.forward";
    check_logits(logits, 3, function, argument);
    if (logits.size(0) != rows || logits.size(1) != n || (vocab > 0 && logits.size(2) != vocab))
        fail(error_kind::shape, function, argument,
             "[" + std::to_string(rows) + ", " + std::to_string(n) + ", " +
                 (vocab > 0 ? std::to_string(vocab) : std::string("V")) + "] (rows, new tokens, vocabulary)",
             libtorch::shape_string(logits));
    if (logits.device() != device)
        fail(error_kind::device, function, argument, device.str() + " (the device of 'input_ids')",
             logits.device().str());
    return logits.select(1, n - 1).to(compute_dtype(logits.scalar_type())).contiguous();
}

inline void check_prompts(const prompt_batch& prompts, std::string_view function) {
    const torch::Tensor& ids = prompts.input_ids;
    const torch::Tensor& mask = prompts.attention_mask;
    libtorch::check_defined(ids, function, "input_ids");
    ppo::detail::require_rank(ids, 2, function, "input_ids");
    if (!ppo::detail::is_token_dtype(ids.scalar_type()))
        fail(error_kind::dtype, function, "input_ids", "an integer dtype (int64, int32, int16, int8, uint8)",
             libtorch::dtype_name(ids.scalar_type()));
    libtorch::check_defined(mask, function, "attention_mask");
    if (mask.sizes() != ids.sizes())
        fail(error_kind::shape, function, "attention_mask", libtorch::shape_string(ids) + " (the shape of 'input_ids')",
             libtorch::shape_string(mask));
    if (!ppo::detail::is_mask_dtype(mask.scalar_type()))
        fail(error_kind::dtype, function, "attention_mask", "bool, uint8, int32, int64, float32 or float64",
             libtorch::dtype_name(mask.scalar_type()));
    if (mask.device() != ids.device())
        fail(error_kind::device, function, "attention_mask", ids.device().str() + " (the device of 'input_ids')",
             mask.device().str());
    ppo::detail::require_binary(mask, function, "attention_mask");
    if (ids.size(0) == 0) return;
    const torch::Tensor empty = mask.ne(0).sum(1).eq(0);
    if (empty.any().item<bool>())
        fail(error_kind::value, function, "attention_mask", "at least one prompt token (mask 1) in every row",
             "no token in row " + std::to_string(empty.nonzero()[0][0].item<std::int64_t>()));
    const torch::Tensor negative = ids.to(torch::kInt64).lt(0).logical_and(mask.ne(0));
    if (negative.any().item<bool>())
        fail(error_kind::value, function, "input_ids", "token ids >= 0",
             std::to_string(ids.to(torch::kInt64).masked_select(negative)[0].item<std::int64_t>()));
}

// The ids of the options must index the vocabulary the decoder returned.
inline void check_ids_in_vocabulary(const generation_options& options, std::int64_t vocab, std::string_view function) {
    const std::string expected = "token ids < " + std::to_string(vocab) + " (the vocabulary of 'decoder.forward')";
    if (options.pad_token_id >= vocab)
        fail(error_kind::config, function, "pad_token_id", expected, std::to_string(options.pad_token_id));
    for (const std::int64_t id : options.eos_token_id)
        if (id >= vocab) fail(error_kind::config, function, "eos_token_id", expected, std::to_string(id));
    for (const auto& sequence : options.stop_sequences)
        for (const std::int64_t id : sequence)
            if (id >= vocab) fail(error_kind::config, function, "stop_sequences", expected, std::to_string(id));
}

}  // namespace detail::generation

/// The sampling distribution's logits `[B, V]` (float32; float64 for float64 input; `-inf` for
/// removed tokens) from next-token logits `[B, V]`, in Hugging Face's order:
/// 1. repetition penalty (CTRL, Keskar et al. 2019): on tokens with `seen[b, v]`, a positive logit
///    is divided by `repetition_penalty`, a negative one multiplied (`seen` undefined: skipped);
/// 2. `greedy`: stop here (the argmax is taken of this);
/// 3. `logits / temperature`;
/// 4. top-k: exactly the `top_k` largest stay (ties broken by `topk`);
/// 5. top-p: the smallest set of most likely tokens whose probability reaches `top_p`;
/// 6. min-p: tokens with probability `< min_p · max probability` are removed.
/// `seen` `[B, V]` bool, e.g. `seen_tokens(prompt_and_response, mask, V)`.
/// @note transformers/generation/logits_process.py: `RepetitionPenaltyLogitsProcessor`,
///   `TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`, `MinPLogitsWarper`.
[[nodiscard]] inline torch::Tensor process_logits(const torch::Tensor& logits, const generation_options& options,
                                                  const torch::Tensor& seen = {}) {
    constexpr std::string_view function = "rlhf::ppo::process_logits";
    check_generation_options(options, function);
    detail::generation::check_logits(logits, 2, function, "logits");
    if (seen.defined() && (seen.sizes() != logits.sizes() || seen.scalar_type() != torch::kBool))
        fail(error_kind::shape, function, "seen", libtorch::shape_string(logits) + " bool (the shape of 'logits')",
             libtorch::shape_string(seen) + " " + libtorch::dtype_name(seen.scalar_type()));
    return detail::generation::process(logits, options, seen);
}

/// Samples one token per row `[B]` int64 from processed logits `[B, V]` by inverse CDF:
/// the first token whose cumulative probability exceeds `uniforms[b] ∈ [0, 1)` (float64 `[B]`,
/// any device). Tokens of probability 0 are never drawn.
[[nodiscard]] inline torch::Tensor sample_tokens(const torch::Tensor& processed, const torch::Tensor& uniforms) {
    constexpr std::string_view function = "rlhf::ppo::sample_tokens";
    detail::generation::check_logits(processed, 2, function, "processed");
    libtorch::check_defined(uniforms, function, "uniforms");
    if (uniforms.dim() != 1 || uniforms.size(0) != processed.size(0))
        fail(error_kind::shape, function, "uniforms",
             "[" + std::to_string(processed.size(0)) + "] (the rows of 'processed')", libtorch::shape_string(uniforms));
    return detail::generation::inverse_cdf(processed, uniforms);
}

/// What `generate` returns. `T` is the longest response (at most `max_new_tokens`).
struct generation_result {
    ppo::rollout rollout;  ///< sequences `[B, P + T]`: left-aligned prompt, then the response, then `pad_token_id`
    torch::Tensor
        log_probs;  ///< `[B, T]` log softmax(logits / temperature) of each sampled token (temperature 1 when greedy)
    torch::Tensor
        sampling_log_probs;   ///< `[B, T]` log-prob under the processed distribution (0 when greedy: a point mass)
    torch::Tensor truncated;  ///< `[B]` bool: reached `max_new_tokens` without EOS or stop sequence
    torch::Tensor finished_by_eos;  ///< `[B]` bool: ended by a token of `eos_token_id`
};

/// Generates responses to `prompts` with a KV cache. Prompts may use any padding (left, right,
/// holes): each row's tokens (mask 1) are first moved, in order, to the right end of the `P`
/// prompt columns, padding to the left filled with `pad_token_id`. Then one forward over the
/// prompt (`past = 0`, position ids `position_ids(mask)`) and one per new token. A row ends at
/// a token of `eos_token_id` or when its response ends with one of `stop_sequences` (matched
/// within the response); that token is part of the response. Later columns hold `pad_token_id`
/// with mask 0 (finished rows keep being fed `pad_token_id`, masked). All rows ended → early exit.
///
/// Returns `rollout` with `response_start = P`, `response_end = P + length`, attention mask
/// int64; `log_probs`, `sampling_log_probs` `[B, T]` float32 (float64 for float64 logits), 0
/// beyond each row's length; `truncated`, `finished_by_eos` `[B]` bool. No autograd graph.
/// Errors (`rlhf::error`, naming the argument): `options` (as `check_generation_options`; token
/// ids beyond the vocabulary), `input_ids` (rank, integer dtype, ids >= 0), `attention_mask`
/// (shape, dtype, device, {0,1}, a row without a token), `decoder.forward` (not `[B, n, V]`
/// floating on the device of `input_ids`).
template <CausalDecoder D>
[[nodiscard]] generation_result generate(D& decoder, const prompt_batch& prompts, const generation_options& options) {
    constexpr std::string_view function = "rlhf::ppo::generate";
    namespace gen = detail::generation;
    check_generation_options(options, function);
    gen::check_prompts(prompts, function);
    const torch::NoGradGuard no_grad;
    const std::int64_t rows = prompts.input_ids.size(0);
    const std::int64_t width = prompts.input_ids.size(1);
    const std::int64_t pad = options.pad_token_id;
    const torch::Device device = prompts.input_ids.device();
    const auto int64 = torch::TensorOptions(torch::kInt64).device(device);

    // Left-align: a stable sort of the mask moves padding (0) before the tokens (1), in order.
    const torch::Tensor order =
        std::get<1>(torch::sort(prompts.attention_mask.ne(0).to(torch::kInt64), c10::optional<bool>(true), 1, false));
    const torch::Tensor prompt_mask = prompts.attention_mask.ne(0).to(torch::kInt64).gather(1, order);
    // Padding is fed as token 0 until the vocabulary is known, returned as pad_token_id.
    const torch::Tensor prompt_ids = torch::where(
        prompt_mask.ne(0), prompts.input_ids.to(torch::kInt64).gather(1, order), torch::zeros_like(prompt_mask));
    const std::int64_t total = width + options.max_new_tokens;
    torch::Tensor sequences = torch::full({rows, total}, pad, int64);
    torch::Tensor mask = torch::zeros({rows, total}, int64);
    sequences.narrow(1, 0, width).copy_(torch::where(prompt_mask.ne(0), prompt_ids, torch::full_like(prompt_ids, pad)));
    mask.narrow(1, 0, width).copy_(prompt_mask);

    torch::Tensor alive = torch::ones({rows}, int64.dtype(torch::kBool));
    torch::Tensor by_eos = torch::zeros_like(alive);
    torch::Tensor lengths = torch::zeros({rows}, int64);
    std::vector<torch::Tensor> log_probs, sampling_log_probs;
    std::int64_t steps = 0;
    if (rows > 0) {
        auto cache = decoder.new_cache(rows);
        torch::Tensor logits =
            gen::last_logits(decoder.forward(prompt_ids, prompt_mask, position_ids(prompt_mask), cache), rows, width,
                             -1, device, function);
        const std::int64_t vocab = logits.size(1);
        gen::check_ids_in_vocabulary(options, vocab, function);
        torch::Tensor seen =
            options.repetition_penalty != 1.0 ? seen_tokens(prompt_ids, prompt_mask, vocab) : torch::Tensor();
        const torch::Tensor eos = torch::tensor(options.eos_token_id, torch::kInt64).to(device);
        std::vector<torch::Tensor> stops;
        for (const auto& stop : options.stop_sequences) stops.push_back(torch::tensor(stop, torch::kInt64).to(device));
        torch::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
        const double temperature = options.greedy ? 1.0 : options.temperature;

        for (std::int64_t t = 0; t < options.max_new_tokens; ++t) {
            const torch::Tensor processed = gen::process(logits, options, seen);
            torch::Tensor next;
            if (options.greedy) {
                next = processed.argmax(1);
            } else {
                const torch::Tensor uniforms = torch::rand({rows}, generator, torch::TensorOptions(torch::kFloat64));
                next = gen::inverse_cdf(processed, uniforms);
            }
            next = torch::where(alive, next, torch::full_like(next, pad));
            const torch::Tensor step_mask = alive.unsqueeze(1);
            log_probs.push_back(libtorch::logprobs_from_logits(logits.unsqueeze(1), next.unsqueeze(1), step_mask,
                                                               {.temperature = temperature})
                                    .logprobs.squeeze(1));
            sampling_log_probs.push_back(
                options.greedy ? torch::zeros_like(log_probs.back())
                               : libtorch::logprobs_from_logits(processed.unsqueeze(1), next.unsqueeze(1), step_mask)
                                     .logprobs.squeeze(1));
            sequences.select(1, width + t).copy_(next);
            mask.select(1, width + t).copy_(alive.to(torch::kInt64));
            lengths += alive.to(torch::kInt64);
            if (seen.defined())
                seen = seen.logical_or(torch::zeros_like(seen).scatter_(1, next.unsqueeze(1), step_mask));
            torch::Tensor ended = torch::zeros_like(alive);
            if (eos.numel() > 0) {
                const torch::Tensor hit = next.unsqueeze(1).eq(eos.unsqueeze(0)).any(1).logical_and(alive);
                by_eos = by_eos.logical_or(hit);
                ended = ended.logical_or(hit);
            }
            for (const torch::Tensor& stop : stops) {
                const std::int64_t n = stop.size(0);
                if (n > t + 1) continue;  // alive rows hold t + 1 response tokens
                const torch::Tensor tail = sequences.narrow(1, width + t + 1 - n, n);
                ended = ended.logical_or(tail.eq(stop.unsqueeze(0)).all(1).logical_and(alive));
            }
            alive = alive.logical_and(ended.logical_not());
            steps = t + 1;
            if (steps == options.max_new_tokens || !alive.any().item<bool>()) break;
            const torch::Tensor past_mask = mask.narrow(1, 0, width + t + 1).contiguous();
            const torch::Tensor positions = (past_mask.sum(1, true) - 1).clamp_min(0);
            logits = gen::last_logits(decoder.forward(next.unsqueeze(1), past_mask, positions, cache), rows, 1, vocab,
                                      device, function);
        }
    }
    const auto stacked = [&](const std::vector<torch::Tensor>& columns) {
        return columns.empty() ? torch::zeros({rows, 0}, int64.dtype(torch::kFloat32)) : torch::stack(columns, 1);
    };
    return {
        .rollout = {.sequences = sequences.narrow(1, 0, width + steps).contiguous(),
                    .attention_mask = mask.narrow(1, 0, width + steps).contiguous(),
                    .response_start = torch::full({rows}, width, int64),
                    .response_end = lengths + width},
        .log_probs = stacked(log_probs),
        .sampling_log_probs = stacked(sampling_log_probs),
        .truncated = alive,
        .finished_by_eos = by_eos,
    };
}

/// Log-probs and entropies of a rollout's response tokens from a model's logits over the whole
/// sequence `[B, S, V]` (position `p` predicting token `p + 1`), in the response layout `[B, T]`
/// (0 beyond each row's length; a token at position 0 has none). Differentiable; float16 and
/// bfloat16 logits are computed in float32. The log-prob half of a policy's `log_probs`.
[[nodiscard]] inline policy_output response_log_probs(const torch::Tensor& logits, const rollout& batch,
                                                      double temperature = 1.0) {
    constexpr std::string_view function = "rlhf::ppo::response_log_probs";
    detail::generation::check_logits(logits, 3, function, "logits");
    const std::int64_t rows = batch.sequences.size(0);
    const std::int64_t length = batch.sequences.size(1);
    if (logits.size(0) != rows || logits.size(1) != length)
        fail(error_kind::shape, function, "logits",
             "[" + std::to_string(rows) + ", " + std::to_string(length) + ", V] (the shape of 'sequences')",
             libtorch::shape_string(logits));
    const auto options = logits.options().dtype(detail::generation::compute_dtype(logits.scalar_type()));
    if (length < 2) {
        const torch::Tensor zeros = torch::zeros({rows, length}, options);
        return {gather_response(zeros, batch), gather_response(zeros, batch)};
    }
    const auto out = libtorch::logprobs_from_logits(logits.narrow(1, 0, length - 1).to(options.dtype().toScalarType()),
                                                    batch.sequences.narrow(1, 1, length - 1).to(torch::kInt64),
                                                    batch.attention_mask.narrow(1, 1, length - 1).ne(0),
                                                    {.temperature = temperature});
    const torch::Tensor first = torch::zeros({rows, 1}, options);
    return {gather_response(torch::cat({first, out.logprobs}, 1), batch),
            gather_response(torch::cat({first, out.entropy}, 1), batch)};
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
