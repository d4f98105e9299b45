// The benchmark harness: data, families, rows, verification, memory figures and main().
#include "harness.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rlhf_bench {

// -- registry ------------------------------------------------------------------------------------

namespace {

struct kernel_entry {
    std::type_index problem;
    std::string family;  // "" = every family of `problem`
    std::string impl;
    detail::erased_factory factory;
    kernel_options options;
};

std::vector<kernel_entry>& kernels() {
    static std::vector<kernel_entry> entries;
    return entries;
}

std::vector<std::function<void()>>& setup_hooks() {
    static std::vector<std::function<void()>> hooks;
    return hooks;
}

std::vector<std::pair<std::string, std::string>>& context_entries() {
    static std::vector<std::pair<std::string, std::string>> entries;
    return entries;
}

}  // namespace

bool detail::add_kernel(std::type_index problem, std::string family, std::string impl, erased_factory factory,
                        kernel_options options) {
    kernels().push_back({problem, std::move(family), std::move(impl), std::move(factory), options});
    return true;
}

bool register_setup(std::function<void()> hook) {
    setup_hooks().push_back(std::move(hook));
    return true;
}

void add_context(const std::string& key, const std::string& value) {
    context_entries().emplace_back(key, value);
}

// -- data ----------------------------------------------------------------------------------------

namespace {

/// splitmix64: a fast, seeded, reproducible stream (the distributions do not matter for timing,
/// only that the values are realistic in range and identical for every implementation).
class random_stream {
public:
    explicit random_stream(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() noexcept {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    /// Uniform in [0, 1).
    float uniform() noexcept { return static_cast<float>(next() >> 40) * 0x1.0p-24f; }
    /// Approximately standard normal (Irwin–Hall of 4 uniforms, rescaled).
    float normal() noexcept { return (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.7320508f; }
    index below(index n) noexcept { return static_cast<index>(next() % static_cast<std::uint64_t>(n)); }

private:
    std::uint64_t state_;
};

/// Inputs of the token-level families at one [B, T]: a contiguous valid range per row (a few
/// left-padding positions, right padding to a random length in [T/2, T]), so that every GAE
/// masking applies.
struct token_data {
    index batch, steps;
    std::vector<float> mask, rewards, values, old_values, returns, log_probs, old_log_probs, ref_log_probs, advantages,
        scores;
    std::vector<std::int64_t> group_ids;
};

const token_data& token_inputs(index batch, index steps) {
    static std::map<std::pair<index, index>, std::unique_ptr<token_data>> cache;
    auto& slot = cache[{batch, steps}];
    if (slot) return *slot;
    auto d = std::make_unique<token_data>();
    d->batch = batch;
    d->steps = steps;
    const auto n = static_cast<std::size_t>(batch * steps);
    random_stream rng(static_cast<std::uint64_t>(batch * 1000003 + steps));
    d->mask.assign(n, 0.0f);
    for (index b = 0; b < batch; ++b) {
        const index first = rng.below(std::max<index>(steps / 16, 1));
        const index end = steps / 2 + rng.below(steps - steps / 2) + 1;
        for (index t = first; t < end; ++t) d->mask[static_cast<std::size_t>(b * steps + t)] = 1.0f;
    }
    const auto fill = [&](std::vector<float>& v, auto make) {
        v.resize(n);
        for (float& x : v) x = make();
    };
    fill(d->rewards, [&] { return 0.1f * rng.normal(); });
    fill(d->values, [&] { return rng.normal(); });
    d->old_values.resize(n);
    d->returns.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        d->old_values[i] = d->values[i] + 0.3f * rng.normal();
        d->returns[i] = d->values[i] + rng.normal();
    }
    fill(d->log_probs, [&] { return -2.0f * std::abs(rng.normal()) - 0.05f; });
    d->old_log_probs.resize(n);
    d->ref_log_probs.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        d->old_log_probs[i] = d->log_probs[i] + 0.2f * rng.normal();
        d->ref_log_probs[i] = d->log_probs[i] + 0.2f * rng.normal();
    }
    fill(d->advantages, [&] { return rng.normal(); });
    d->scores.resize(static_cast<std::size_t>(batch));
    for (float& x : d->scores) x = rng.normal();
    d->group_ids.resize(static_cast<std::size_t>(batch));
    for (index b = 0; b < batch; ++b) d->group_ids[static_cast<std::size_t>(b)] = b / 8;
    slot = std::move(d);
    return *slot;
}

/// Inputs of the logits families at one [B, T, V] (one size cached at a time: they are large).
struct logits_data {
    index batch = 0, steps = 0, vocab = 0;
    std::vector<float> logits, mask, grad_logprobs, grad_entropy;
    std::vector<std::int64_t> tokens;
};

const logits_data& logits_inputs(index batch, index steps, index vocab) {
    static std::unique_ptr<logits_data> cache;
    if (cache && cache->batch == batch && cache->steps == steps && cache->vocab == vocab) return *cache;
    cache.reset();
    auto d = std::make_unique<logits_data>();
    d->batch = batch;
    d->steps = steps;
    d->vocab = vocab;
    const auto n = static_cast<std::size_t>(batch * steps);
    random_stream rng(static_cast<std::uint64_t>(vocab * 31 + steps));
    d->logits.resize(n * static_cast<std::size_t>(vocab));
    for (float& x : d->logits) x = 2.0f * rng.normal();
    const token_data& tokens = token_inputs(batch, steps);
    d->mask = tokens.mask;
    d->tokens.resize(n);
    for (auto& y : d->tokens) y = rng.below(vocab);
    d->grad_logprobs.assign(n, 1.0f);
    d->grad_entropy.assign(n, -0.01f);
    cache = std::move(d);
    return *cache;
}

// -- families ------------------------------------------------------------------------------------

struct shape {
    index batch = 0, steps = 0, vocab = 0;
    [[nodiscard]] index tokens() const { return batch * steps; }
    [[nodiscard]] std::string label() const {
        std::string text = std::to_string(batch) + "x" + std::to_string(steps);
        if (vocab > 0) text += "xV" + std::to_string(vocab);
        return text;
    }
};

/// The outputs of one call, named, NaN-filled so that an unwritten output fails verification.
struct output_set {
    std::vector<std::string> names;
    std::vector<std::vector<float>> arrays;
    std::deque<double> scalars;  // deque: stable addresses
    std::vector<std::string> scalar_names;

    float* add(std::string name, index count) {
        names.push_back(std::move(name));
        arrays.emplace_back(static_cast<std::size_t>(count), std::numeric_limits<float>::quiet_NaN());
        return arrays.back().data();
    }
    double* add_scalar(std::string name) {
        scalar_names.push_back(std::move(name));
        scalars.push_back(std::numeric_limits<double>::quiet_NaN());
        return &scalars.back();
    }
};

struct family {
    std::string name;
    std::type_index problem;
    std::vector<shape> shapes;
    std::size_t (*io_bytes)(const shape&);      // inputs + outputs of one call
    std::size_t (*output_bytes)(const shape&);  // the outputs alone
    std::function<std::shared_ptr<void>(const shape&, output_set&)> make;
    double tolerance = 2e-3;  // max |got − want| / max |want| per output
};

constexpr std::size_t f32 = sizeof(float);
constexpr std::size_t i64 = sizeof(std::int64_t);

std::size_t bt(const shape& s) {
    return static_cast<std::size_t>(s.tokens());
}
std::size_t btv(const shape& s) {
    return bt(s) * static_cast<std::size_t>(s.vocab);
}

const std::vector<shape>& token_shapes() {
    static const std::vector<shape> shapes{{8, 128, 0}, {64, 1024, 0}, {256, 2048, 0}, {512, 4096, 0}};
    return shapes;
}

const std::vector<shape>& logits_shapes() {
    static const std::vector<shape> shapes{{4, 256, 32768}, {4, 256, 131072}};
    return shapes;
}

template <class Problem, class Make>
family make_family(std::string name, std::vector<shape> shapes, std::size_t (*io)(const shape&),
                   std::size_t (*out)(const shape&), Make make) {
    family f{std::move(name), std::type_index(typeid(Problem)), std::move(shapes), io, out, {}};
    f.make = [make](const shape& s, output_set& outputs) -> std::shared_ptr<void> {
        return std::make_shared<Problem>(make(s, outputs));
    };
    return f;
}

family gae_family(rlhf::gae_masking masking) {
    return make_family<gae_problem>(
        "gae." + std::string(rlhf::to_string(masking)), token_shapes(), [](const shape& s) { return 20 * bt(s); },
        [](const shape& s) { return 8 * bt(s); },
        [masking](const shape& s, output_set& out) {
            const token_data& d = token_inputs(s.batch, s.steps);
            gae_problem p;
            p.batch = s.batch;
            p.steps = s.steps;
            p.masking = masking;
            p.rewards = d.rewards.data();
            p.values = d.values.data();
            p.mask = d.mask.data();
            p.advantages = out.add("advantages", s.tokens());
            p.returns = out.add("returns", s.tokens());
            return p;
        });
}

std::vector<family>& families() {
    static std::vector<family> all = [] {
        std::vector<family> f;
        f.push_back(gae_family(rlhf::gae_masking::zero_masked));
        f.push_back(gae_family(rlhf::gae_masking::skip_masked));
        f.push_back(gae_family(rlhf::gae_masking::valid_range));
        f.push_back(make_family<whiten_problem>(
            "whiten", token_shapes(), [](const shape& s) { return 12 * bt(s); },
            [](const shape& s) { return 4 * bt(s); },
            [](const shape& s, output_set& out) {
                const token_data& d = token_inputs(s.batch, s.steps);
                whiten_problem p;
                p.batch = s.batch;
                p.steps = s.steps;
                p.values = d.advantages.data();
                p.mask = d.mask.data();
                p.out = out.add("out", s.tokens());
                return p;
            }));
        f.push_back(make_family<kl_reward_problem>(
            "kl_reward", token_shapes(),
            [](const shape& s) { return 16 * bt(s) + f32 * static_cast<std::size_t>(s.batch); },
            [](const shape& s) { return 4 * bt(s); },
            [](const shape& s, output_set& out) {
                const token_data& d = token_inputs(s.batch, s.steps);
                kl_reward_problem p;
                p.batch = s.batch;
                p.steps = s.steps;
                p.log_probs = d.log_probs.data();
                p.ref_log_probs = d.ref_log_probs.data();
                p.mask = d.mask.data();
                p.scores = d.scores.data();
                p.rewards = out.add("rewards", s.tokens());
                return p;
            }));
        f.push_back(make_family<policy_loss_problem>(
            "policy_loss", token_shapes(), [](const shape& s) { return 20 * bt(s); },
            [](const shape& s) { return 4 * bt(s); },
            [](const shape& s, output_set& out) {
                const token_data& d = token_inputs(s.batch, s.steps);
                policy_loss_problem p;
                p.batch = s.batch;
                p.steps = s.steps;
                p.log_probs = d.log_probs.data();
                p.old_log_probs = d.old_log_probs.data();
                p.advantages = d.advantages.data();
                p.mask = d.mask.data();
                p.grad_log_probs = out.add("grad_log_probs", s.tokens());
                p.loss = out.add_scalar("loss");
                return p;
            }));
        f.push_back(make_family<value_loss_problem>(
            "value_loss", token_shapes(), [](const shape& s) { return 20 * bt(s); },
            [](const shape& s) { return 4 * bt(s); },
            [](const shape& s, output_set& out) {
                const token_data& d = token_inputs(s.batch, s.steps);
                value_loss_problem p;
                p.batch = s.batch;
                p.steps = s.steps;
                p.values = d.values.data();
                p.old_values = d.old_values.data();
                p.returns = d.returns.data();
                p.mask = d.mask.data();
                p.grad_values = out.add("grad_values", s.tokens());
                p.loss = out.add_scalar("loss");
                return p;
            }));
        f.push_back(make_family<grpo_problem>(
            "grpo", token_shapes(), [](const shape& s) { return 12 * bt(s) + i64 * static_cast<std::size_t>(s.batch); },
            [](const shape& s) { return 4 * bt(s); },
            [](const shape& s, output_set& out) {
                const token_data& d = token_inputs(s.batch, s.steps);
                grpo_problem p;
                p.batch = s.batch;
                p.steps = s.steps;
                p.token_rewards = d.rewards.data();
                p.mask = d.mask.data();
                p.group_ids = d.group_ids.data();
                p.advantages = out.add("advantages", s.tokens());
                return p;
            }));
        // The input checks every kernel starts with (formerly bench_checks.cpp): no output.
        for (const char* name : {"check.finite", "check.binary_mask"}) {
            f.push_back(make_family<check_problem>(
                name, token_shapes(), [](const shape& s) { return 4 * bt(s); },
                [](const shape&) { return std::size_t{0}; },
                [](const shape& s, output_set&) {
                    const token_data& d = token_inputs(s.batch, s.steps);
                    check_problem p;
                    p.batch = s.batch;
                    p.steps = s.steps;
                    p.values = d.mask.data();
                    return p;
                }));
        }
        for (const bool with_entropy : {false, true}) {
            family logits = make_family<logits_problem>(
                with_entropy ? "logprobs_entropy" : "logprobs", logits_shapes(),
                with_entropy ? +[](const shape& s) { return 8 * btv(s) + 28 * bt(s); }
                             : +[](const shape& s) { return 8 * btv(s) + 20 * bt(s); },
                with_entropy ? +[](const shape& s) { return 4 * btv(s) + 8 * bt(s); }
                             : +[](const shape& s) { return 4 * btv(s) + 4 * bt(s); },
                [with_entropy](const shape& s, output_set& out) {
                    const logits_data& d = logits_inputs(s.batch, s.steps, s.vocab);
                    logits_problem p;
                    p.batch = s.batch;
                    p.steps = s.steps;
                    p.vocab = s.vocab;
                    p.entropy = with_entropy;
                    p.logits = d.logits.data();
                    p.tokens = d.tokens.data();
                    p.mask = d.mask.data();
                    p.grad_logprobs = d.grad_logprobs.data();
                    p.logprobs = out.add("logprobs", s.tokens());
                    if (with_entropy) {
                        p.grad_entropy = d.grad_entropy.data();
                        p.entropy_out = out.add("entropy", s.tokens());
                    }
                    p.grad_logits = out.add("grad_logits", s.tokens() * s.vocab);
                    return p;
                });
            f.push_back(std::move(logits));
        }
        return f;
    }();
    return all;
}

// -- verification and memory ---------------------------------------------------------------------

/// "" when `got` matches `want`, else what differs.
std::string compare(const output_set& got, const output_set& want, double tolerance) {
    for (std::size_t k = 0; k < want.arrays.size(); ++k) {
        const auto& a = got.arrays[k];
        const auto& b = want.arrays[k];
        double scale = 0.0;
        for (const float x : b) scale = std::max(scale, std::abs(static_cast<double>(x)));
        double worst = 0.0;
        std::size_t at = 0;
        for (std::size_t i = 0; i < b.size(); ++i) {
            const double diff = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
            if (!(diff <= worst)) {  // NaN wins
                worst = std::isnan(diff) ? std::numeric_limits<double>::infinity() : diff;
                at = i;
                if (std::isnan(diff)) break;
            }
        }
        if (!(worst <= tolerance * std::max(scale, 1e-30)))
            return "mismatch in " + want.names[k] + " at flat index " + std::to_string(at) + ": " +
                   std::to_string(a[at]) + " vs fused " + std::to_string(b[at]);
    }
    for (std::size_t k = 0; k < want.scalars.size(); ++k) {
        const double a = got.scalars[k], b = want.scalars[k];
        if (!(std::abs(a - b) <= tolerance * std::max(std::abs(b), 1e-6)))
            return "mismatch in " + want.scalar_names[k] + ": " + std::to_string(a) + " vs fused " + std::to_string(b);
    }
    return {};
}

const kernel_entry* find_kernel(const family& f, const std::string& impl) {
    for (const kernel_entry& k : kernels())
        if (k.problem == f.problem && (k.family.empty() || k.family == f.name) && k.impl == impl) return &k;
    return nullptr;
}

/// The fused kernel's outputs for a family at a shape, computed once (the large logits outputs
/// of one shape at a time).
const output_set* reference(const family& f, const shape& s) {
    static std::map<std::string, std::unique_ptr<output_set>> cache;
    const std::string key = f.name + "/" + s.label();
    if (auto it = cache.find(key); it != cache.end()) return it->second.get();
    const kernel_entry* fused = find_kernel(f, "fused");
    if (fused == nullptr) return nullptr;
    if (s.vocab > 0)
        std::erase_if(cache, [&](const auto& entry) { return entry.first.find("xV") != std::string::npos; });
    auto out = std::make_unique<output_set>();
    const std::shared_ptr<void> problem = f.make(s, *out);
    prepared_kernel k = fused->factory(problem.get());
    if (!k.run) return nullptr;
    k.run();
    if (k.fetch) k.fetch();
    return (cache[key] = std::move(out)).get();
}

struct probe_result {
    std::string error;
    double peak_mib = -1.0;   // peak bytes live during one call, outputs included
    double extra_mib = -1.0;  // peak_mib minus the outputs: temporaries and scratch
};

constexpr double mib = 1024.0 * 1024.0;

/// Runs `k` twice before timing: the first call warms up (lazy initialisation) and is verified,
/// the second is the memory probe.
probe_result probe(const family& f, const shape& s, const kernel_entry& entry, prepared_kernel& k,
                   const output_set& outputs) {
    probe_result result;
    try {
        k.run();
        if (k.fetch) k.fetch();
        if (entry.impl != "fused") {
            if (const output_set* want = reference(f, s); want != nullptr)
                result.error = compare(outputs, *want, f.tolerance);
        }
        if (memory::enabled()) {
            if (k.release) k.release();
            const std::size_t base = memory::current();
            memory::reset_peak();
            k.run();
            const std::size_t allocated = memory::peak() - base;
            const std::size_t out = f.output_bytes(s);
            const std::size_t peak = allocated + k.scratch_bytes + (k.writes_problem_outputs ? out : 0);
            result.peak_mib = static_cast<double>(peak) / mib;
            result.extra_mib = static_cast<double>(peak > out ? peak - out : 0) / mib;
        }
    } catch (const std::exception& e) {
        result.error = std::string("exception: ") + e.what();
    }
    return result;
}

void set_counters(benchmark::State& state, const shape& s, std::size_t io_bytes, const probe_result* memory) {
    state.counters["tokens_per_second"] =
        benchmark::Counter(static_cast<double>(s.tokens()), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["io_bytes"] = benchmark::Counter(static_cast<double>(io_bytes));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(io_bytes));
    if (memory != nullptr && memory->peak_mib >= 0.0) {
        state.counters["peak_MiB"] = benchmark::Counter(memory->peak_mib);
        state.counters["extra_MiB"] = benchmark::Counter(memory->extra_mib);
    }
}

void run_row(benchmark::State& state, const family& f, const shape& s, const kernel_entry& entry) {
    static std::map<std::string, probe_result> probes;
    output_set outputs;
    std::shared_ptr<void> problem;
    prepared_kernel k;
    try {
        problem = f.make(s, outputs);
        k = entry.factory(problem.get());
    } catch (const std::exception& e) {
        state.SkipWithError((std::string("setup failed: ") + e.what()).c_str());
        return;
    }
    if (!k.run) {
        state.SkipWithError(k.skip_reason.empty() ? "not supported" : k.skip_reason.c_str());
        return;
    }
    const std::string key = f.name + "/" + entry.impl + "/" + s.label();
    auto found = probes.find(key);
    if (found == probes.end()) found = probes.emplace(key, probe(f, s, entry, k, outputs)).first;
    const probe_result& checked = found->second;
    if (!checked.error.empty()) {
        state.SkipWithError(checked.error.c_str());
        return;
    }
    for (auto _ : state) k.run();
    set_counters(state, s, f.io_bytes(s), &checked);
}

void run_memcpy(benchmark::State& state, const shape& s, std::size_t bytes) {
    std::vector<char> source(bytes, 1), target(bytes, 0);
    for (auto _ : state) {
        std::memcpy(target.data(), source.data(), bytes);
        benchmark::DoNotOptimize(target.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, s, bytes, nullptr);
}

void register_row(const family& f, const shape& s) {
    std::string suffix = "/";  // not "/" + label(): GCC 12 -Wrestrict false positive at -O3
    suffix += s.label();
    const std::size_t bytes = f.io_bytes(s);
    benchmark::RegisterBenchmark((f.name + "/memcpy" + suffix).c_str(),
                                 [s, bytes](benchmark::State& state) { run_memcpy(state, s, bytes); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    for (const kernel_entry& entry : kernels()) {
        if (entry.problem != f.problem || !(entry.family.empty() || entry.family == f.name)) continue;
        if (entry.options.max_tokens > 0 && s.tokens() > entry.options.max_tokens) continue;
        auto* row =
            benchmark::RegisterBenchmark((f.name + "/" + entry.impl + suffix).c_str(),
                                         [&f, s, &entry](benchmark::State& state) { run_row(state, f, s, entry); });
        row->UseRealTime()->Unit(benchmark::kMicrosecond);
        if (entry.options.min_time > 0.0) row->MinTime(entry.options.min_time);
    }
}

/// Token-level families one after the other, each through its sizes; the logits families size
/// by size (their inputs, one size at a time, are shared).
void register_rows() {
    for (const family& f : families())
        if (f.shapes.front().vocab == 0)
            for (const shape& s : f.shapes) register_row(f, s);
    for (const shape& s : logits_shapes())
        for (const family& f : families())
            if (f.shapes.front().vocab > 0) register_row(f, s);
}

/// Within a family and size: memcpy, fused, the LibTorch rows, Eigen, xtensor, then the others.
void order_kernels() {
    std::stable_sort(kernels().begin(), kernels().end(), [](const kernel_entry& a, const kernel_entry& b) {
        const auto rank = [](const std::string& impl) {
            if (impl == "fused") return 0;
            if (impl.rfind("libtorch", 0) == 0) return 1;
            if (impl == "eigen") return 2;
            if (impl == "xtensor") return 3;
            return 4;
        };
        return rank(a.impl) < rank(b.impl);
    });
}

void check_registrations() {
    for (const kernel_entry& k : kernels()) {
        if (k.family.empty()) continue;
        const bool known = std::any_of(families().begin(), families().end(),
                                       [&](const family& f) { return f.name == k.family && f.problem == k.problem; });
        if (!known) {
            std::fprintf(stderr, "rlhf_benchmarks: implementation '%s' names family '%s', which has no such problem\n",
                         k.impl.c_str(), k.family.c_str());
            std::exit(2);
        }
    }
}

}  // namespace
}  // namespace rlhf_bench

int main(int argc, char** argv) {
    using namespace rlhf_bench;
    for (const auto& hook : setup_hooks()) hook();
    check_registrations();
    order_kernels();
    register_rows();
    // A short default measuring time (the library's default is 0.5 s per row); a
    // --benchmark_min_time on the command line, which comes later, overrides it.
    std::vector<char*> args(argv, argv + argc);
    std::string min_time = "--benchmark_min_time=0.1";
    args.insert(args.begin() + 1, min_time.data());
    int count = static_cast<int>(args.size());
    benchmark::Initialize(&count, args.data());
    if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
    benchmark::AddCustomContext("rlhf_memory_counter", memory::enabled() ? "malloc interposer" : "unavailable");
    for (const auto& [key, value] : context_entries()) benchmark::AddCustomContext(key, value);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
