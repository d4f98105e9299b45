#pragma once
// Real English text for the examples: the sentences of the fortune cookie files that Debian's
// `fortunes` package installs (/usr/share/games/fortunes), split into a training and a held-out
// part. From them the examples derive everything they learn from: SFT text, prompts (the first
// words of a sentence), sentiment labels (a word list marks a sentence positive or negative) and
// preference pairs (a positive sentence chosen over a negative one).
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rlhf_examples {

inline const std::filesystem::path default_corpus_dir = "/usr/share/games/fortunes";

// The sentiment of a sentence: +1 per word from the positive list, −1 per word from the negative.
inline int lexicon_sentiment(const std::string& sentence) {
    static const std::set<std::string> positive{
        "good",  "great",  "love",     "loved", "loves",  "happy",  "happiness", "joy",     "best",
        "kind",  "friend", "friends",  "hope",  "peace",  "nice",   "smile",     "laugh",   "beautiful",
        "wise",  "wisdom", "success",  "win",   "free",   "better", "wonderful", "fun",     "enjoy",
        "glad",  "gentle", "truth",    "heart", "bright", "sweet",  "warm",      "beauty",  "delight",
        "dream", "grace",  "pleasure", "true",  "like",   "right",  "well",      "friendly"};
    static const std::set<std::string> negative{
        "bad",   "hate",   "sad",     "death",    "die",     "dead",  "war",     "fear",  "evil",    "pain",
        "wrong", "fail",   "failure", "stupid",   "fool",    "never", "nothing", "worst", "worse",   "kill",
        "lose",  "lost",   "poor",    "hell",     "ugly",    "angry", "sick",    "lie",   "trouble", "enemy",
        "cruel", "misery", "sorrow",  "terrible", "problem", "alone", "cry",     "hurt",  "no",      "not"};
    int score = 0;
    std::string word;
    auto flush = [&] {
        if (positive.contains(word)) ++score;
        if (negative.contains(word)) --score;
        word.clear();
    };
    for (const char c : sentence) {
        if (std::isalpha(static_cast<unsigned char>(c)) != 0)
            word.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
        else
            flush();
    }
    flush();
    return score;
}

struct preference_pair {
    std::string chosen;
    std::string rejected;
};

struct corpus {
    std::vector<std::string> train;     // sentences to learn from
    std::vector<std::string> held_out;  // sentences kept for evaluation

    // The first `words` words of each sentence with more words, as prompts (the response's first
    // token brings its own space).
    [[nodiscard]] static std::vector<std::string> prompts_of(const std::vector<std::string>& sentences,
                                                             std::size_t words) {
        std::vector<std::string> prompts;
        for (const auto& s : sentences) {
            std::size_t end = 0, count = 0;
            while (count < words && end != std::string::npos) {
                end = s.find(' ', end + (count > 0 ? 1 : 0));
                ++count;
            }
            if (end != std::string::npos && end > 0) prompts.push_back(s.substr(0, end));
        }
        return prompts;
    }

    // Pairs of a positive and a negative sentence (by `lexicon_sentiment`), shuffled by `seed`.
    [[nodiscard]] static std::vector<preference_pair> preference_pairs(const std::vector<std::string>& sentences,
                                                                       std::uint64_t seed) {
        std::vector<std::string> positive, negative;
        for (const auto& s : sentences) {
            const int sentiment = lexicon_sentiment(s);
            if (sentiment > 0) positive.push_back(s);
            if (sentiment < 0) negative.push_back(s);
        }
        std::mt19937_64 engine(seed);
        std::shuffle(positive.begin(), positive.end(), engine);
        std::shuffle(negative.begin(), negative.end(), engine);
        std::vector<preference_pair> pairs;
        for (std::size_t i = 0; i < std::min(positive.size(), negative.size()); ++i)
            pairs.push_back({positive[i], negative[i]});
        return pairs;
    }
};

// The entries of every fortune file in `dir` (sorted file names; an entry ends at a line "%"),
// attributions "-- ..." dropped and whitespace collapsed into single spaces.
inline std::vector<std::string> fortune_entries(const std::filesystem::path& dir) {
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(dir))
        for (const auto& entry : std::filesystem::directory_iterator(dir))
            if (entry.is_regular_file() && !entry.is_symlink() && entry.path().extension().empty())
                files.push_back(entry.path());
    std::sort(files.begin(), files.end());  // directory order is not stable
    std::vector<std::string> entries;
    for (const auto& file : files) {
        std::ifstream in(file);
        std::string line, entry;
        while (std::getline(in, line)) {
            if (line == "%") {
                entries.push_back(std::move(entry));
                entry.clear();
                continue;
            }
            const auto first = line.find_first_not_of(" \t");
            if (first == std::string::npos || line.compare(first, 2, "--") == 0) continue;
            std::string collapsed;
            for (std::size_t i = first; i < line.size(); ++i) {
                const char c = line[i] == '\t' ? ' ' : line[i];
                if (c != ' ' || (!collapsed.empty() && collapsed.back() != ' ')) collapsed.push_back(c);
            }
            if (!entry.empty()) entry.push_back(' ');
            entry += collapsed;
        }
        entries.push_back(std::move(entry));
    }
    return entries;
}

// The sentences of an entry: each runs up to '.', '!' or '?' followed by a space (or to the end),
// leading spaces removed.
inline std::vector<std::string> sentences_of(const std::string& entry) {
    std::vector<std::string> sentences;
    std::string sentence;
    for (std::size_t i = 0; i < entry.size(); ++i) {
        sentence.push_back(entry[i]);
        const bool ends =
            (entry[i] == '.' || entry[i] == '!' || entry[i] == '?') && (i + 1 == entry.size() || entry[i + 1] == ' ');
        if (!ends && i + 1 != entry.size()) continue;
        const auto first = sentence.find_first_not_of(' ');
        if (first != std::string::npos) sentences.push_back(sentence.substr(first));
        sentence.clear();
    }
    return sentences;
}

inline bool printable_ascii(const std::string& text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return c >= 32 && c < 127; });
}

// Sentences of `min_chars`–`max_chars` printable ASCII characters from the fortune entries of
// `dir`, each once; one in `held_out_every` goes to the held-out part. Throws std::runtime_error
// naming the folder and the package when it holds no text.
inline corpus load_corpus(const std::filesystem::path& dir = default_corpus_dir, std::size_t min_chars = 24,
                          std::size_t max_chars = 96, std::size_t held_out_every = 10) {
    std::vector<std::string> sentences;
    std::set<std::string> seen;
    for (const auto& entry : fortune_entries(dir))
        for (const auto& sentence : sentences_of(entry))
            if (printable_ascii(sentence) && sentence.size() >= min_chars && sentence.size() <= max_chars &&
                std::isupper(static_cast<unsigned char>(sentence[0])) != 0 && seen.insert(sentence).second)
                sentences.push_back(sentence);
    if (sentences.empty())
        throw std::runtime_error("no English text in " + dir.string() +
                                 ": install Debian's 'fortunes' package (bash cmake/install-deps.sh)");
    corpus c;
    for (std::size_t i = 0; i < sentences.size(); ++i)
        (i % held_out_every == held_out_every - 1 ? c.held_out : c.train).push_back(sentences[i]);
    return c;
}

}  // namespace rlhf_examples
