#pragma once
// What every example shows while and after it runs: a command line with `--help`, a progress
// bar (step, figures, ETA), JSON Lines of each stage's metrics, a PNG chart drawn from them
// (plot_metrics.py beside this header, with Debian's python3-matplotlib) and sample generations.
#include <unistd.h>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace rlhf_examples {

// A small command line: `--name value` options bound to variables, `--flag`/`--no-flag` switches, `--help`.
class command_line {
public:
    using target = std::variant<std::int64_t*, std::uint64_t*, double*, std::string*, std::filesystem::path*, bool*>;

    command_line(std::string program, std::string description)
        : program_(std::move(program)), description_(std::move(description)) {}

    template <class T>
    void option(const std::string& name, T& value, const std::string& help) {
        options_.push_back({name, target(&value), help});
    }

    // False when `--help` was asked for (the usage is printed). Throws std::invalid_argument on an
    // unknown option or a value that does not parse.
    [[nodiscard]] bool parse(int argc, char** argv) const {
        for (int i = 1; i < argc; ++i) {
            const std::string arg = argv[i];
            if (arg == "--help" || arg == "-h") {
                print_usage();
                return false;
            }
            const entry* found = nullptr;
            bool negated = false;  // `--no-name` turns a switch off
            for (const auto& e : options_) {
                if ("--" + e.name == arg) found = &e;
                if ("--no-" + e.name == arg && std::holds_alternative<bool*>(e.value)) found = &e, negated = true;
            }
            if (found == nullptr) throw std::invalid_argument("unknown option '" + arg + "' (see --help)");
            if (std::holds_alternative<bool*>(found->value)) {
                *std::get<bool*>(found->value) = !negated;
                continue;
            }
            if (i + 1 == argc) throw std::invalid_argument("option '" + arg + "' needs a value");
            assign(found->value, arg, argv[++i]);
        }
        return true;
    }

    void print_usage() const {
        std::printf("%s\n\nusage: %s [options]\n\n", description_.c_str(), program_.c_str());
        for (const auto& e : options_) {
            const std::string shown = std::visit([](auto* p) { return current(*p); }, e.value);
            const bool is_switch = std::holds_alternative<bool*>(e.value);
            std::printf("  %-24s %s%s\n", ((is_switch ? "--[no-]" : "--") + e.name + (is_switch ? "" : " V")).c_str(),
                        e.help.c_str(), shown.empty() ? "" : (" (default " + shown + ")").c_str());
        }
    }

private:
    struct entry {
        std::string name;
        target value;
        std::string help;
    };

    static std::string current(const bool& v) { return v ? "on" : ""; }
    static std::string current(const std::string& v) { return v; }
    static std::string current(const std::filesystem::path& v) { return v.string(); }
    static std::string current(const double& v) {
        if (std::isnan(v)) return "off";
        char buffer[32];
        std::snprintf(buffer, sizeof buffer, "%g", v);
        return buffer;
    }
    template <class T>
    static std::string current(const T& v) {
        return std::to_string(v);
    }

    static void assign(const target& t, const std::string& name, const std::string& text) {
        try {
            std::size_t used = 0;
            if (auto* p = std::get_if<std::int64_t*>(&t))
                **p = std::stoll(text, &used);
            else if (auto* u = std::get_if<std::uint64_t*>(&t))
                **u = std::stoull(text, &used);
            else if (auto* d = std::get_if<double*>(&t))
                **d = std::stod(text, &used);
            else if (auto* s = std::get_if<std::string*>(&t))
                **s = text, used = text.size();
            else if (auto* f = std::get_if<std::filesystem::path*>(&t))
                **f = text, used = text.size();
            if (used != text.size()) throw std::invalid_argument(text);
        } catch (const std::logic_error&) {
            throw std::invalid_argument("option '" + name + "': cannot read '" + text + "'");
        }
    }

    std::string program_, description_;
    std::vector<entry> options_;
};

// One line redrawn in place on a terminal (a line per tenth of the run otherwise): a bar,
// step/total, the figures given, elapsed time and the ETA from the mean step time.
class progress_bar {
public:
    progress_bar(std::string label, std::int64_t total)
        : label_(std::move(label)),
          total_(total),
          start_(std::chrono::steady_clock::now()),
          terminal_(isatty(fileno(stderr)) != 0) {}

    void update(std::int64_t done, const std::vector<std::pair<std::string, double>>& figures) {
        const double elapsed = seconds();
        const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total_ - done) : 0.0;
        const std::int64_t tenth = std::max<std::int64_t>(1, total_ / 10);
        if (!terminal_ && done % tenth != 0 && done != total_) return;
        constexpr int width = 24;
        const int filled = static_cast<int>(width * done / std::max<std::int64_t>(1, total_));
        std::string line = label_ + " [" + std::string(static_cast<std::size_t>(filled), '=') +
                           std::string(static_cast<std::size_t>(width - filled), ' ') + "] " + std::to_string(done) +
                           "/" + std::to_string(total_);
        char buffer[64];
        for (const auto& [name, value] : figures) {
            std::snprintf(buffer, sizeof buffer, "  %s %.3f", name.c_str(), value);
            line += buffer;
        }
        std::snprintf(buffer, sizeof buffer, "  %s elapsed, ETA %s", clock(elapsed).c_str(), clock(eta).c_str());
        line += buffer;
        std::fprintf(stderr, terminal_ ? "\r%s\033[K" : "%s\n", line.c_str());
        if (terminal_ && done == total_) std::fputc('\n', stderr);
    }

    [[nodiscard]] double seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }

private:
    static std::string clock(double s) {
        char buffer[48];
        const auto total = static_cast<long>(s + 0.5);
        std::snprintf(buffer, sizeof buffer, "%ld:%02ld", total / 60, total % 60);
        return buffer;
    }

    std::string label_;
    std::int64_t total_;
    std::chrono::steady_clock::time_point start_;
    bool terminal_;
};

// Appends `{"step": s, "<name>": value, ...}` lines to a JSON Lines file (the SFT and RM stages;
// the PPO stage uses the library's rlhf::ppo::jsonl_sink).
class jsonl_writer {
public:
    explicit jsonl_writer(const std::filesystem::path& path) : out_(path) {
        if (!out_) throw std::runtime_error("cannot write " + path.string());
    }
    void write(std::int64_t step, const std::map<std::string, double>& values) {
        out_ << "{\"step\":" << step;
        for (const auto& [name, value] : values) out_ << ",\"" << name << "\":" << value;
        out_ << "}\n";
        out_.flush();
    }

private:
    std::ofstream out_;
};

// The prompts and the responses before and after training, side by side, as Markdown.
inline void write_samples(const std::filesystem::path& path, const std::vector<std::string>& prompts,
                          const std::vector<std::string>& before, const std::vector<std::string>& after,
                          const std::vector<double>& reward_before, const std::vector<double>& reward_after) {
    std::ofstream out(path);
    out << "# Samples: the same prompts and seed before and after PPO\n\n";
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        char line[96];
        out << "**" << prompts[i] << "**\n\n";
        std::snprintf(line, sizeof line, "- before (reward %+.2f): ", reward_before[i]);
        out << line << prompts[i] << before[i] << "\n";
        std::snprintf(line, sizeof line, "- after  (reward %+.2f): ", reward_after[i]);
        out << line << prompts[i] << after[i] << "\n\n";
    }
}

// Runs a plotting script of examples/common/ with `arguments`; returns whether it drew (a missing
// python3-matplotlib is reported, not fatal).
inline bool run_plot_script(const std::string& script_name, const std::string& arguments) {
    const std::filesystem::path script = std::filesystem::path(RLHF_EXAMPLES_COMMON_DIR) / script_name;
    // Debian's interpreter first: python3-matplotlib belongs to it, whatever python3 PATH finds.
    const std::string python = std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
    const std::string command = python + " \"" + script.string() + "\" " + arguments;
    if (std::system(command.c_str()) == 0) return true;
    std::fprintf(stderr, "chart not drawn: `%s` failed (python3-matplotlib missing?)\n", command.c_str());
    return false;
}

// Draws `chart.png` in `run_dir` from the language-model stages' JSON Lines (plot_metrics.py).
inline bool draw_chart(const std::filesystem::path& run_dir, const std::string& title) {
    return run_plot_script("plot_metrics.py", "\"" + run_dir.string() + "\" \"" + title + "\"");
}

// One curve of a chart panel: the JSON Lines file (relative to the run folder) and its legend.
struct curve {
    std::string file{}, label{};
};

// A chart panel: `y` against `x` from each curve's file; `reference` draws a dashed level.
struct chart_panel {
    std::string title{}, x = "step", y{};
    std::vector<curve> curves{};
    std::optional<double> reference{};
};

// Draws `run_dir/out` with plot_curves.py from a JSON spec it writes beside the chart.
inline bool draw_curves(const std::filesystem::path& run_dir, const std::string& out, const std::string& title,
                        const std::vector<chart_panel>& panels) {
    const auto quoted = [](const std::string& s) {
        std::string q = "\"";
        for (const char c : s) q += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
        return q + "\"";
    };
    const std::filesystem::path spec = run_dir / (std::filesystem::path(out).stem().string() + ".json");
    std::ofstream json(spec);
    json << "{\"out\": " << quoted(out) << ", \"title\": " << quoted(title) << ", \"panels\": [";
    for (std::size_t p = 0; p < panels.size(); ++p) {
        const chart_panel& panel = panels[p];
        json << (p ? ", " : "") << "{\"title\": " << quoted(panel.title) << ", \"x\": " << quoted(panel.x)
             << ", \"y\": " << quoted(panel.y) << ", \"series\": [";
        for (std::size_t c = 0; c < panel.curves.size(); ++c)
            json << (c ? ", " : "") << "{\"file\": " << quoted(panel.curves[c].file)
                 << ", \"label\": " << quoted(panel.curves[c].label) << "}";
        json << "]";
        if (panel.reference) json << ", \"hline\": " << *panel.reference;
        json << "}";
    }
    json << "]}\n";
    json.close();
    return run_plot_script("plot_curves.py", "\"" + spec.string() + "\"");
}

}  // namespace rlhf_examples
