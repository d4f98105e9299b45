// Cost of the input checks that guard every kernel, as a ratio to a memcpy of the same bytes.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "rlhf/core/check.hpp"

namespace {

void bm_memcpy(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0) * state.range(1));
    std::vector<float> source(n, 1.0f), target(n);
    for (auto _ : state) {
        std::memcpy(target.data(), source.data(), n * sizeof(float));
        benchmark::DoNotOptimize(target.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                            static_cast<std::int64_t>(n * sizeof(float)));
}

void bm_check_finite(benchmark::State& state) {
    const auto rows = state.range(0), cols = state.range(1);
    std::vector<float> values(static_cast<std::size_t>(rows * cols), 1.0f);
    for (auto _ : state) {
        rlhf::check_finite("bench", "values", rlhf::make_view(values.data(), rows, cols));
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * rows * cols * std::int64_t{sizeof(float)});
}

void bm_check_binary_mask(benchmark::State& state) {
    const auto rows = state.range(0), cols = state.range(1);
    std::vector<float> mask(static_cast<std::size_t>(rows * cols), 1.0f);
    for (auto _ : state) {
        rlhf::check_binary_mask("bench", "mask", rlhf::make_view(mask.data(), rows, cols));
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * rows * cols * std::int64_t{sizeof(float)});
}

}  // namespace

BENCHMARK(bm_memcpy)->Args({64, 1024})->Args({512, 4096});
BENCHMARK(bm_check_finite)->Args({64, 1024})->Args({512, 4096});
BENCHMARK(bm_check_binary_mask)->Args({64, 1024})->Args({512, 4096});
