#pragma once
// A small GPT-style causal transformer on LibTorch for the examples: token and position
// embeddings, pre-LN blocks (multi-head causal self-attention, GELU MLP), a final LayerNorm and
// three heads on the last hidden state — the language-model head (policy, reference, SFT), a
// value head (critic) and a scalar score head (reward model). It is the library's
// `CausalDecoder` (incremental forward with a KV cache), so sampling goes through
// `rlhf::ppo::generate`, and it models every concept of the PPO loop: `Policy`,
// `EntropyPolicy`, `ValueHeadPolicy`, `LanguageModelPolicy`, `Critic`, `ReferenceModel` and
// `SequenceRewardModel`. Checkpoints keep the options beside the weights (`save_gpt`/`load_gpt`).
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>
#include <torch/serialize.h>
#include <torch/types.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "rlhf/ppo/concepts.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/generation.hpp"

namespace rlhf_examples {

struct gpt_options {
    std::int64_t vocab = 259;  // the byte tokenizer's 256 bytes and 3 specials
    std::int64_t width = 128;  // model dimension
    std::int64_t heads = 4;
    std::int64_t layers = 3;
    std::int64_t positions = 160;  // longest sequence
    std::uint64_t seed = 0;
    // Standard deviation of the weight matrices (GPT-2: 0.02; residual projections / √(2·layers)).
    double init_std = 0.02;
};

// Keys and values of every layer, `[B, heads, past, head width]` each (undefined while empty).
struct kv_cache {
    std::vector<torch::Tensor> keys;
    std::vector<torch::Tensor> values;
    [[nodiscard]] std::int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
};

class gpt : public torch::nn::Module {
public:
    explicit gpt(const gpt_options& o = {}) : o_(o) {
        torch::Generator g = at::make_generator<at::CPUGeneratorImpl>(o.seed);
        const auto f = torch::TensorOptions(torch::kFloat32);
        const std::int64_t d = o.width;
        const double residual_std = o.init_std / std::sqrt(2.0 * static_cast<double>(o.layers));
        auto normal = [&](const std::string& name, std::vector<std::int64_t> shape, double std) {
            return register_parameter(name, torch::randn(shape, g, f) * std);
        };
        auto constant = [&](const std::string& name, std::vector<std::int64_t> shape, double value) {
            return register_parameter(name, torch::full(shape, value, f));
        };
        wte_ = normal("wte", {o.vocab, d}, o.init_std);
        wpe_ = normal("wpe", {o.positions, d}, o.init_std);
        for (std::int64_t l = 0; l < o.layers; ++l) {
            const std::string p = "h" + std::to_string(l) + "_";
            blocks_.push_back({constant(p + "ln1_w", {d}, 1.0), constant(p + "ln1_b", {d}, 0.0),
                               normal(p + "qkv_w", {d, 3 * d}, o.init_std), constant(p + "qkv_b", {3 * d}, 0.0),
                               normal(p + "proj_w", {d, d}, residual_std), constant(p + "proj_b", {d}, 0.0),
                               constant(p + "ln2_w", {d}, 1.0), constant(p + "ln2_b", {d}, 0.0),
                               normal(p + "fc_w", {d, 4 * d}, o.init_std), constant(p + "fc_b", {4 * d}, 0.0),
                               normal(p + "out_w", {4 * d, d}, residual_std), constant(p + "out_b", {d}, 0.0)});
        }
        lnf_w_ = constant("lnf_w", {d}, 1.0);
        lnf_b_ = constant("lnf_b", {d}, 0.0);
        head_w_ = normal("head_w", {d, o.vocab}, o.init_std);
        head_b_ = constant("head_b", {o.vocab}, 0.0);
        value_w_ = normal("value_w", {d, 1}, o.init_std);
        value_b_ = constant("value_b", {1}, 0.0);
        score_w_ = normal("score_w", {d, 1}, o.init_std);
        score_b_ = constant("score_b", {1}, 0.0);
    }

    [[nodiscard]] const gpt_options& options() const { return o_; }

    // Full-sequence backbone forwards so far (tests count them to prove one forward serves two heads).
    std::int64_t backbone_forwards = 0;

    // ---- CausalDecoder ----
    kv_cache new_cache(std::int64_t /*rows*/) const {
        return {std::vector<torch::Tensor>(static_cast<std::size_t>(o_.layers)),
                std::vector<torch::Tensor>(static_cast<std::size_t>(o_.layers))};
    }

    // ids [B, n], mask [B, past + n], positions [B, n] → logits [B, n, V]; appends to the cache.
    torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& positions,
                          kv_cache& cache) {
        return lm_head(hidden(ids, mask, positions, cache));
    }

    // ---- the policy and the reference ----
    rlhf::ppo::rollout generate(const rlhf::ppo::prompt_batch& prompts, const rlhf::ppo::generation_options& options) {
        return rlhf::ppo::generate(*this, prompts, options).rollout;
    }

    // Next-token logits [B, S, V] of a whole batch (no cache), position p predicting token p + 1.
    torch::Tensor lm_logits(const torch::Tensor& ids, const torch::Tensor& mask) {
        return lm_head(full_hidden(ids, mask));
    }

    rlhf::ppo::policy_output log_probs_and_entropy(const rlhf::ppo::rollout& r) {
        return rlhf::ppo::response_log_probs(lm_logits(r.sequences, r.attention_mask), r);
    }
    torch::Tensor log_probs(const rlhf::ppo::rollout& r) { return log_probs_and_entropy(r).log_probs; }

    // ---- the critic: V(prefix up to and including response token t), [B, T] ----
    torch::Tensor values(const rlhf::ppo::rollout& r) {
        return rlhf::ppo::gather_response(value_head(full_hidden(r.sequences, r.attention_mask)), r);
    }

    // Log-probs, entropies and values from ONE backbone forward (a value-head policy).
    rlhf::ppo::policy_value_output log_probs_and_values(const rlhf::ppo::rollout& r) {
        const torch::Tensor h = full_hidden(r.sequences, r.attention_mask);
        const rlhf::ppo::policy_output out = rlhf::ppo::response_log_probs(lm_head(h), r);
        return {out.log_probs, rlhf::ppo::gather_response(value_head(h), r), out.entropy};
    }

    // ---- the reward model: the score head at each row's last attended token, [B] ----
    torch::Tensor sequence_scores(const torch::Tensor& ids, const torch::Tensor& mask) {
        const torch::Tensor h = full_hidden(ids, mask);
        const torch::Tensor last = last_attended(mask);
        const torch::Tensor at_last = h.gather(1, last.view({-1, 1, 1}).expand({h.size(0), 1, h.size(2)})).squeeze(1);
        return (at_last.matmul(score_w_) + score_b_).squeeze(-1);
    }
    torch::Tensor score(const rlhf::ppo::rollout& r) { return sequence_scores(r.sequences, r.attention_mask); }

    // How a critic made from a reward model starts its value head: as a copy of the score head, so
    // its first values are the reward model's scores (DeepSpeed-Chat and ColossalChat build the
    // critic so), or at zero (values learned from the first returns).
    enum class value_head_start { score_head, zero };
    void start_value_head(value_head_start start) {
        const torch::NoGradGuard no_grad;
        const bool copy = start == value_head_start::score_head;
        value_w_.copy_(copy ? score_w_ : torch::zeros_like(score_w_));
        value_b_.copy_(copy ? score_b_ : torch::zeros_like(score_b_));
    }

private:
    struct block {
        torch::Tensor ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b;
    };

    // The last position with a non-zero mask entry of every row, [B] int64 (any padding side).
    static torch::Tensor last_attended(const torch::Tensor& mask) {
        const torch::Tensor index =
            torch::arange(mask.size(1), torch::TensorOptions(torch::kInt64).device(mask.device()));
        return (mask.ne(0).to(torch::kInt64) * (index + 1)).argmax(1);
    }

    torch::Tensor full_hidden(const torch::Tensor& ids, const torch::Tensor& mask) {
        ++backbone_forwards;
        kv_cache cache = new_cache(ids.size(0));
        return hidden(ids, mask, rlhf::ppo::position_ids(mask), cache);
    }

    torch::Tensor lm_head(const torch::Tensor& h) const { return h.matmul(head_w_) + head_b_; }
    torch::Tensor value_head(const torch::Tensor& h) const { return (h.matmul(value_w_) + value_b_).squeeze(-1); }

    torch::Tensor hidden(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& positions,
                         kv_cache& cache) {
        const std::int64_t rows = ids.size(0), n = ids.size(1), d = o_.width, heads = o_.heads, hd = d / heads;
        const std::int64_t past = cache.length();
        torch::Tensor x = wte_.index_select(0, ids.reshape({-1}).to(torch::kInt64)).reshape({rows, n, d}) +
                          wpe_.index_select(0, positions.reshape({-1}).to(torch::kInt64)).reshape({rows, n, d});
        // Query i (absolute position past + i) sees key j <= past + i whose mask entry is 1, and itself.
        const auto i64 = torch::TensorOptions(torch::kInt64).device(ids.device());
        const torch::Tensor query = torch::arange(past, past + n, i64).unsqueeze(1);
        const torch::Tensor key = torch::arange(past + n, i64).unsqueeze(0);
        const torch::Tensor allowed =
            mask.ne(0).unsqueeze(1).logical_and(key.le(query).unsqueeze(0)).logical_or(key.eq(query).unsqueeze(0));
        const torch::Tensor blocked = allowed.logical_not().unsqueeze(1);  // [B, 1, n, past + n]
        auto split = [&](const torch::Tensor& t) { return t.reshape({rows, n, heads, hd}).transpose(1, 2); };
        for (std::size_t l = 0; l < blocks_.size(); ++l) {
            const block& b = blocks_[l];
            const torch::Tensor h = torch::layer_norm(x, {d}, b.ln1_w, b.ln1_b);
            const std::vector<torch::Tensor> qkv = (h.matmul(b.qkv_w) + b.qkv_b).split(d, -1);
            torch::Tensor k = split(qkv[1]), v = split(qkv[2]);
            if (cache.keys[l].defined()) {
                k = torch::cat({cache.keys[l], k}, 2);
                v = torch::cat({cache.values[l], v}, 2);
            }
            cache.keys[l] = k;
            cache.values[l] = v;
            const torch::Tensor scores = split(qkv[0]).matmul(k.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd));
            const torch::Tensor attention =
                scores.masked_fill(blocked, -std::numeric_limits<double>::infinity()).softmax(-1).matmul(v);
            x = x + attention.transpose(1, 2).reshape({rows, n, d}).matmul(b.proj_w) + b.proj_b;
            const torch::Tensor m = torch::layer_norm(x, {d}, b.ln2_w, b.ln2_b);
            x = x + torch::gelu(m.matmul(b.fc_w) + b.fc_b).matmul(b.out_w) + b.out_b;
        }
        return torch::layer_norm(x, {d}, lnf_w_, lnf_b_);
    }

    gpt_options o_;
    torch::Tensor wte_, wpe_, lnf_w_, lnf_b_, head_w_, head_b_, value_w_, value_b_, score_w_, score_b_;
    std::vector<block> blocks_;
};

// Writes the weights and the options to `path` through a temporary file and a rename, so a
// crash never leaves a half-written checkpoint.
inline void save_gpt(const gpt& model, const std::filesystem::path& path) {
    const gpt_options& o = model.options();
    torch::serialize::OutputArchive archive;
    model.save(archive);
    archive.write("gpt_options", torch::tensor({o.vocab, o.width, o.heads, o.layers, o.positions}, torch::kInt64));
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    const std::filesystem::path partial = path.string() + ".partial";
    archive.save_to(partial.string());
    std::filesystem::rename(partial, path);
}

// The model `save_gpt` wrote: its options, then its weights.
inline gpt load_gpt(const std::filesystem::path& path) {
    torch::serialize::InputArchive archive;
    archive.load_from(path.string());
    torch::Tensor stored;
    archive.read("gpt_options", stored);
    const auto* v = stored.data_ptr<std::int64_t>();
    gpt model({.vocab = v[0], .width = v[1], .heads = v[2], .layers = v[3], .positions = v[4]});
    model.load(archive);
    return model;
}

}  // namespace rlhf_examples
