#pragma once
// A byte-pair-encoding tokenizer trained in the example on its corpus (Sennrich et al. 2016, with
// GPT-2's byte-level base and word split): ids 0–255 are bytes, then one id per learned merge,
// then padding and end-of-sequence. Word-sized tokens give the small model three to four times
// more text per step than bytes, and a reward the policy can reach one token at a time.
#include <torch/types.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rlhf/ppo/experience.hpp"

namespace rlhf_examples {

class tokenizer {
public:
    // Learns `merges` merges from `texts`: each step joins the most frequent adjacent pair of
    // tokens within words (ties: the smaller pair of ids), so the same texts give the same tokens.
    tokenizer(const std::vector<std::string>& texts, std::int64_t merges) {
        for (int b = 0; b < 256; ++b) pieces_.emplace_back(1, static_cast<char>(b));
        std::map<std::string, std::int64_t> counts;
        for (const auto& t : texts)
            for (auto& w : split_words(t)) ++counts[w];
        std::vector<std::pair<std::vector<std::int64_t>, std::int64_t>> words;
        for (const auto& [w, n] : counts) words.emplace_back(bytes_of(w), n);
        for (std::int64_t m = 0; m < merges; ++m) {
            std::unordered_map<std::uint64_t, std::int64_t> pairs;
            for (const auto& [ids, n] : words)
                for (std::size_t i = 0; i + 1 < ids.size(); ++i) pairs[key(ids[i], ids[i + 1])] += n;
            std::uint64_t best = 0;
            std::int64_t best_count = 0;
            for (const auto& [k, n] : pairs)
                if (n > best_count || (n == best_count && k < best)) best = k, best_count = n;
            if (best_count < 2) break;
            const auto left = static_cast<std::int64_t>(best >> 32);
            const auto right = static_cast<std::int64_t>(best & 0xffffffffU);
            const auto merged = static_cast<std::int64_t>(pieces_.size());
            ranks_[best] = merged;
            pieces_.push_back(pieces_[static_cast<std::size_t>(left)] + pieces_[static_cast<std::size_t>(right)]);
            for (auto& entry : words) merge(entry.first, left, right, merged);
        }
        pad_id_ = static_cast<std::int64_t>(pieces_.size());
        eos_id_ = pad_id_ + 1;
    }

    [[nodiscard]] std::int64_t vocab_size() const { return eos_id_ + 1; }
    [[nodiscard]] std::int64_t pad_id() const { return pad_id_; }
    [[nodiscard]] std::int64_t eos_id() const { return eos_id_; }

    // Applies the merges in the order they were learned, word by word.
    [[nodiscard]] std::vector<std::int64_t> encode(const std::string& text) const {
        std::vector<std::int64_t> out;
        for (const auto& w : split_words(text)) {
            auto cached = cache_.find(w);
            if (cached == cache_.end()) {
                std::vector<std::int64_t> ids = bytes_of(w);
                while (ids.size() > 1) {
                    std::int64_t rank = -1;
                    std::size_t at = 0;
                    for (std::size_t i = 0; i + 1 < ids.size(); ++i) {
                        const auto r = ranks_.find(key(ids[i], ids[i + 1]));
                        if (r != ranks_.end() && (rank < 0 || r->second < rank)) rank = r->second, at = i;
                    }
                    if (rank < 0) break;
                    merge(ids, ids[at], ids[at + 1], rank);
                }
                cached = cache_.emplace(w, std::move(ids)).first;
            }
            out.insert(out.end(), cached->second.begin(), cached->second.end());
        }
        return out;
    }

    // Tokens back to text; specials are dropped and decoding stops at the first end-of-sequence.
    [[nodiscard]] std::string decode(const std::vector<std::int64_t>& ids) const {
        std::string text;
        for (const std::int64_t id : ids) {
            if (id == eos_id_) break;
            if (id >= 0 && id < pad_id_) text += pieces_[static_cast<std::size_t>(id)];
        }
        return text;
    }

    // Prompts padded on the left (generation appends on the right), `[B, P]` ids and mask.
    [[nodiscard]] rlhf::ppo::prompt_batch prompts(const std::vector<std::string>& texts) const {
        std::vector<std::vector<std::int64_t>> rows;
        for (const auto& t : texts) rows.push_back(encode(t));
        return pad(rows, /*left=*/true);
    }

    // Whole texts padded on the right, each ended by end-of-sequence, cut to `max_length` tokens:
    // the layout of language-model and reward-model training batches.
    [[nodiscard]] rlhf::ppo::prompt_batch texts(const std::vector<std::string>& texts, std::int64_t max_length) const {
        std::vector<std::vector<std::int64_t>> rows;
        for (const auto& t : texts) {
            std::vector<std::int64_t> ids = encode(t);
            ids.push_back(eos_id_);
            ids.resize(std::min(ids.size(), static_cast<std::size_t>(max_length)));
            rows.push_back(std::move(ids));
        }
        return pad(rows, /*left=*/false);
    }

    // The response of every row of a rollout as text.
    [[nodiscard]] std::vector<std::string> responses(const rlhf::ppo::rollout& r) const {
        std::vector<std::string> out;
        const torch::Tensor seq = r.sequences.to(torch::kCPU).to(torch::kInt64).contiguous();
        for (std::int64_t row = 0; row < seq.size(0); ++row) {
            const std::int64_t start = r.response_start[row].item<std::int64_t>();
            const std::int64_t end = r.response_end[row].item<std::int64_t>();
            const auto* p = seq[row].data_ptr<std::int64_t>();
            out.push_back(decode(std::vector<std::int64_t>(p + start, p + end)));
        }
        return out;
    }

private:
    static std::uint64_t key(std::int64_t a, std::int64_t b) {
        return (static_cast<std::uint64_t>(a) << 32) | static_cast<std::uint64_t>(b);
    }

    static std::vector<std::int64_t> bytes_of(const std::string& w) {
        std::vector<std::int64_t> ids;
        for (const char c : w) ids.push_back(static_cast<unsigned char>(c));
        return ids;
    }

    static void merge(std::vector<std::int64_t>& ids, std::int64_t left, std::int64_t right, std::int64_t merged) {
        std::size_t out = 0;
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (i + 1 < ids.size() && ids[i] == left && ids[i + 1] == right) {
                ids[out++] = merged;
                ++i;
            } else {
                ids[out++] = ids[i];
            }
        }
        ids.resize(out);
    }

    // GPT-2's word split, simplified: a word is a run of letters, of digits or of other
    // characters, with the space before it; merges never cross words.
    static std::vector<std::string> split_words(const std::string& text) {
        auto kind = [](char c) {
            const auto u = static_cast<unsigned char>(c);
            return std::isalpha(u) != 0 ? 0 : std::isdigit(u) != 0 ? 1 : c == ' ' ? 3 : 2;
        };
        std::vector<std::string> words;
        std::string word;
        for (const char c : text) {
            const bool lone_space = word.size() == 1 && word[0] == ' ';
            if (!word.empty() && (c == ' ' || (kind(c) != kind(word.back()) && !lone_space))) {
                words.push_back(std::move(word));
                word.clear();
            }
            word.push_back(c);
        }
        if (!word.empty()) words.push_back(std::move(word));
        return words;
    }

    [[nodiscard]] rlhf::ppo::prompt_batch pad(const std::vector<std::vector<std::int64_t>>& rows, bool left) const {
        std::size_t width = 1;
        for (const auto& r : rows) width = std::max(width, r.size());
        const auto count = static_cast<std::int64_t>(rows.size()), w = static_cast<std::int64_t>(width);
        torch::Tensor ids = torch::full({count, w}, pad_id_, torch::kInt64);
        torch::Tensor mask = torch::zeros({count, w}, torch::kInt64);
        for (std::int64_t r = 0; r < count; ++r) {
            const auto& tokens = rows[static_cast<std::size_t>(r)];
            const auto n = static_cast<std::int64_t>(tokens.size());
            const std::int64_t at = left ? w - n : 0;
            ids[r].narrow(0, at, n).copy_(torch::tensor(tokens, torch::kInt64));
            mask[r].narrow(0, at, n).fill_(1);
        }
        return {ids, mask};
    }

    std::vector<std::string> pieces_;                        // the text of every id below pad_id_
    std::unordered_map<std::uint64_t, std::int64_t> ranks_;  // (left, right) → merged id
    mutable std::unordered_map<std::string, std::vector<std::int64_t>> cache_;
    std::int64_t pad_id_ = 0, eos_id_ = 0;
};

}  // namespace rlhf_examples
