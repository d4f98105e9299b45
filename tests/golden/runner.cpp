// rlhf_golden_runner: replays golden-format reference outputs through the library.
//
//   rlhf_golden_runner [--require-mapped ID[,ID...]] [PATH...]
//
// PATH is a golden JSON file or a directory of them (default: $RLHF_GOLDEN_DIR, else the
// project's tests/data/golden). For each file it reports the cases matched, mismatched (with
// the largest error), expected-error cases the library rejected with an rlhf::error, cases the
// library refuses by a documented policy where the peer returned NaN, and the cases it cannot
// map. Exit status 1 on any mismatch, on an expected error the library
// accepted, or on an unmapped case of a golden_id named in --require-mapped.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "golden_data.hpp"
#include "mapping.hpp"
#include "rlhf/core/error.hpp"

namespace {

using namespace rlhf_golden;

struct file_report {
    int matched = 0, mismatched = 0, rejected = 0, refused_non_finite = 0, accepted_error = 0, unmapped = 0, failed = 0;
    double largest_error = 0.0;
    std::string largest_where;
    std::vector<std::string> details;
};

// Largest violation of |a - b| <= tol * max(1, |b|), as a multiple of the tolerance scale;
// NaN matches NaN and infinities match themselves.
double compare(const tensor& ours, const tensor& peer, double tolerance, std::string& why) {
    if (ours.data.size() != peer.data.size()) {
        why = "size " + std::to_string(ours.data.size()) + " vs " + std::to_string(peer.data.size());
        return std::numeric_limits<double>::infinity();
    }
    double worst = 0.0;
    for (std::size_t i = 0; i < ours.data.size(); ++i) {
        const double a = ours.data[i], b = peer.data[i];
        if (std::isnan(a) && std::isnan(b)) continue;
        if (std::isinf(b) || std::isinf(a)) {
            if (a != b) {
                why = "element " + std::to_string(i) + ": " + std::to_string(a) + " vs " + std::to_string(b);
                return std::numeric_limits<double>::infinity();
            }
            continue;
        }
        const double error = std::abs(a - b) / std::max(1.0, std::abs(b));
        if (std::isnan(error)) {
            why = "element " + std::to_string(i) + ": " + std::to_string(a) + " vs " + std::to_string(b);
            return std::numeric_limits<double>::infinity();
        }
        if (error > worst) {
            worst = error;
            if (error > tolerance) {
                std::ostringstream text;
                text.precision(17);
                text << "element " << i << ": " << a << " vs " << b;
                why = text.str();
            }
        }
    }
    return worst;
}

file_report run_file(const golden_file& file, const mapper_registry& registry) {
    file_report report;
    const auto found = registry.find(file.golden_id);
    for (const golden_case& c : file.cases) {
        // Every mapper of the golden_id may answer part of a case (a file can hold a loss and an
        // estimator); their outputs are merged, each compared at its mapper's tolerance.
        std::map<std::string, std::pair<tensor, double>> answered;
        std::vector<std::string> refused;
        std::optional<std::string> value_error;  // a mapper's rlhf::error of kind `value`
        bool any = false, rejected = false, failed = false;
        if (found != registry.end()) {
            for (const auto& mapper : found->second) {
                try {
                    if (auto result = mapper(file, c)) {
                        any = true;
                        for (auto& [name, value] : result->outputs)
                            answered.insert_or_assign(name, std::pair{std::move(value), result->relative_tolerance});
                        refused.insert(refused.end(), result->refused_non_finite.begin(),
                                       result->refused_non_finite.end());
                    }
                } catch (const rlhf::error& e) {
                    if (c.error) {
                        rejected = true;
                    } else if (e.kind() == rlhf::error_kind::value) {
                        value_error = e.what();
                        continue;
                    } else {
                        failed = true;
                        report.details.push_back(c.name + ": rejected valid input: " + e.what());
                    }
                    break;
                } catch (const std::exception& e) {
                    failed = true;
                    report.details.push_back(c.name + ": mapper failed: " + e.what());
                    break;
                }
            }
        }
        if (rejected) {
            ++report.rejected;
            continue;
        }
        if (value_error) {
            // The documented correspondence "peer NaN <-> library error": the library may refuse a
            // value (an empty mask, a single sample under the unbiased variance, a NaN input) only
            // where the peer returned NaN/Inf in an output the other mappers did not answer (a
            // loss whose diagnostics stay finite counts: the loss itself is the peer's NaN).
            std::vector<std::string> unanswered;
            for (const auto& [name, expected] : c.outputs)
                if (answered.count(name) == 0) unanswered.push_back(name);
            const bool peer_non_finite =
                std::any_of(unanswered.begin(), unanswered.end(), [&](const std::string& name) {
                    const auto& data = c.outputs.at(name).data;
                    return std::any_of(data.begin(), data.end(), [](double x) { return !std::isfinite(x); });
                });
            if (peer_non_finite) {
                any = true;
                refused.insert(refused.end(), unanswered.begin(), unanswered.end());
            } else {
                failed = true;
                report.details.push_back(c.name + ": rejected valid input: " + *value_error);
            }
        }
        if (failed) {
            ++report.failed;
            continue;
        }
        if (!any) {
            ++report.unmapped;
            continue;
        }
        if (c.error) {
            ++report.accepted_error;
            report.details.push_back(c.name + ": the peer raised (" + *c.error + ") but the library accepted");
            continue;
        }
        bool ok = true;
        int compared = 0;
        for (const auto& [name, answer] : answered) {
            const auto& [ours, tolerance] = answer;
            const auto expected = c.outputs.find(name);
            if (expected == c.outputs.end()) continue;
            ++compared;
            std::string why;
            const double error = compare(ours, expected->second, tolerance, why);
            if (error > report.largest_error || std::isinf(error)) {
                report.largest_error = std::max(report.largest_error, error);
                report.largest_where = c.name + " [" + name + "]";
            }
            if (error > tolerance) {
                ok = false;
                report.details.push_back(c.name + " [" + name + "]: " + why);
            }
        }
        if (!ok) {
            ++report.mismatched;
        } else if (!refused.empty()) {
            ++report.refused_non_finite;
        } else if (compared == 0) {
            ++report.unmapped;
        } else {
            ++report.matched;
        }
    }
    return report;
}

std::vector<std::filesystem::path> collect(const std::vector<std::string>& arguments) {
    std::vector<std::filesystem::path> files;
    for (const auto& argument : arguments) {
        const std::filesystem::path path(argument);
        if (std::filesystem::is_directory(path)) {
            for (const auto& entry : std::filesystem::directory_iterator(path))
                if (entry.path().extension() == ".json") files.push_back(entry.path());
        } else {
            files.push_back(path);
        }
    }
    std::sort(files.begin(), files.end());
    return files;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> paths;
    std::set<std::string> required;
    for (int i = 1; i < argc; ++i) {
        const std::string argument = argv[i];
        if (argument == "--require-mapped" && i + 1 < argc) {
            std::stringstream list(argv[++i]);
            for (std::string id; std::getline(list, id, ',');) required.insert(id);
        } else if (argument == "--help" || argument == "-h") {
            std::puts("usage: rlhf_golden_runner [--require-mapped ID[,ID...]] [FILE|DIR...]");
            return 0;
        } else {
            paths.push_back(argument);
        }
    }
    if (paths.empty()) {
        const char* env = std::getenv("RLHF_GOLDEN_DIR");
        paths.emplace_back(env != nullptr && *env != '\0' ? env : RLHF_TEST_DATA_DIR "/golden");
    }
    const mapper_registry registry = all_mappers();
    int total_matched = 0, total_mismatched = 0, total_rejected = 0, total_refused = 0, total_unmapped = 0,
        total_failed = 0;
    bool failed = false;
    const auto files = collect(paths);
    if (files.empty()) {
        std::fprintf(stderr, "rlhf_golden_runner: no golden files found\n");
        return 1;
    }
    for (const auto& path : files) {
        golden_file file;
        try {
            file = load_golden_file(path);
        } catch (const std::exception& e) {
            std::printf("%s: cannot read: %s\n", path.filename().c_str(), e.what());
            failed = true;
            continue;
        }
        const file_report r = run_file(file, registry);
        std::printf("%-56s %3d matched, %d mismatched, %d rejected as expected, %d peer NaN (policy), %d unmapped",
                    path.filename().c_str(), r.matched, r.mismatched, r.rejected, r.refused_non_finite, r.unmapped);
        if (r.matched + r.mismatched > 0)
            std::printf(" (largest error %.2e at %s)", r.largest_error, r.largest_where.c_str());
        std::printf("\n");
        for (const auto& line : r.details) std::printf("    %s\n", line.c_str());
        total_matched += r.matched;
        total_mismatched += r.mismatched;
        total_rejected += r.rejected;
        total_refused += r.refused_non_finite;
        total_unmapped += r.unmapped;
        total_failed += r.failed + r.accepted_error;
        if (r.mismatched > 0 || r.failed > 0 || r.accepted_error > 0) failed = true;
        if (r.unmapped > 0 && required.count(file.golden_id) != 0) {
            std::printf("    %d unmapped cases in a required golden_id\n", r.unmapped);
            failed = true;
        }
    }
    std::printf(
        "golden: %d matched, %d mismatched, %d rejected as expected, %d peer NaN (policy), %d unmapped, "
        "%d failed\n",
        total_matched, total_mismatched, total_rejected, total_refused, total_unmapped, total_failed);
    return failed ? 1 : 0;
}
