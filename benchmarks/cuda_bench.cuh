#pragma once
// The GPU rows' harness (rlhf_cuda_benchmarks): each call timed with CUDA events on one stream,
// after one untimed warm-up call; Google Benchmark's manual time, 5 repetitions, medians
// reported (benchmarks/gpu/report.py turns them into ratios against the device copy of the same
// bytes, measured in the same run). Rows are named `<family>/<implementation>/<size>`.

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

namespace rlhf_cuda_bench {

/// Aborts the benchmark binary on a CUDA error (a benchmark has no test framework to fail).
inline void ok(cudaError_t status, const char* what) {
    if (status == cudaSuccess) return;
    std::fprintf(stderr, "rlhf_cuda_benchmarks: %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
}

/// An owning device buffer of `bytes` bytes.
class device_bytes {
public:
    explicit device_bytes(std::size_t bytes) : bytes_(bytes) {
        ok(cudaMalloc(&data_, bytes > 0 ? bytes : 1), "cudaMalloc");
    }
    device_bytes(device_bytes&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
    device_bytes(const device_bytes&) = delete;
    device_bytes& operator=(const device_bytes&) = delete;
    device_bytes& operator=(device_bytes&&) = delete;
    ~device_bytes() { cudaFree(data_); }
    template <class T = void>
    [[nodiscard]] T* as() const noexcept {
        return static_cast<T*>(data_);
    }
    [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }

private:
    void* data_ = nullptr;
    std::size_t bytes_ = 0;
};

/// Times `call()` (which launches on `stream`) with CUDA events: one warm-up call, then one
/// event pair per iteration. `bytes_moved` is reported as bytes/s (reads + writes of the row).
template <class Call>
void time_on_device(benchmark::State& state, cudaStream_t stream, double bytes_moved, Call&& call) {
    cudaEvent_t start = nullptr, stop = nullptr;
    ok(cudaEventCreate(&start), "cudaEventCreate");
    ok(cudaEventCreate(&stop), "cudaEventCreate");
    call();
    ok(cudaStreamSynchronize(stream), "warm-up");
    for (auto _ : state) {
        ok(cudaEventRecord(start, stream), "cudaEventRecord");
        call();
        ok(cudaEventRecord(stop, stream), "cudaEventRecord");
        ok(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0.0F;
        ok(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        state.SetIterationTime(static_cast<double>(ms) * 1e-3);
    }
    ok(cudaGetLastError(), "kernel");
    state.counters["bytes_per_second"] = benchmark::Counter(bytes_moved, benchmark::Counter::kIsIterationInvariantRate);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
}

/// Registers a GPU row: manual time, milliseconds, 5 repetitions, aggregates only.
template <class Body>
void add_row(const std::string& name, Body&& body) {
    benchmark::RegisterBenchmark(name.c_str(), std::forward<Body>(body))
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Repetitions(5)
        ->ReportAggregatesOnly(true);
}

/// The device copy of `bytes` bytes (reads `bytes`, writes `bytes`): the yardstick of a row whose
/// inputs + outputs are `bytes`.
inline void add_device_copy_row(const std::string& family, const std::string& size, std::size_t bytes) {
    add_row(family + "/device_copy/" + size, [bytes](benchmark::State& state) {
        const device_bytes from(bytes), to(bytes);
        ok(cudaMemset(from.as(), 0, bytes), "cudaMemset");
        time_on_device(state, nullptr, 2.0 * static_cast<double>(bytes), [&] {
            ok(cudaMemcpyAsync(to.as(), from.as(), bytes, cudaMemcpyDeviceToDevice, nullptr), "copy");
        });
    });
}

/// Registers the rows of the GPU benchmark: `add_kernel_rows` (bench_cuda.cu, the kernels of
/// rlhf/cuda on raw buffers) and `add_torch_rows` (bench_cuda_torch.cu, the LibTorch entry points
/// and the peers' torch-op formulations; only with a CUDA LibTorch).
void add_kernel_rows();
void add_torch_rows();

}  // namespace rlhf_cuda_bench
