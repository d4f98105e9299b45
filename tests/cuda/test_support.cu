#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "cuda/cuda_test_support.cuh"
#include "rlhf/cuda/support.cuh"

namespace {

template <int Threads>
__global__ void sum_rows(const double* x, std::int64_t cols, double* out) {
    double partial = 0.0;
    for (std::int64_t c = threadIdx.x; c < cols; c += Threads) partial += x[blockIdx.x * cols + c];
    const double total = rlhf::cuda::block_sum<Threads>(partial);
    if (threadIdx.x == 0) out[blockIdx.x] = total;
}

}  // namespace

TEST_SUITE("cuda") {
    TEST_CASE("cuda support: block_sum adds every thread's value and a bad launch is an rlhf::error naming CUDA") {
        constexpr std::int64_t rows = 3, cols = 1000;
        std::vector<double> x(rows * cols);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<double>(i % 17);
        rlhf_test::device_array<double> dx(x), out(rows);
        out.poison();
        sum_rows<rlhf::cuda::row_block_threads><<<rows, rlhf::cuda::row_block_threads>>>(dx.data(), cols, out.data());
        rlhf::cuda::check_launch("test");
        const auto got = out.download();
        for (std::int64_t r = 0; r < rows; ++r) {
            double expected = 0.0;
            for (std::int64_t c = 0; c < cols; ++c) expected += x[static_cast<std::size_t>(r * cols + c)];
            CHECK(got[static_cast<std::size_t>(r)] == expected);
        }
        sum_rows<rlhf::cuda::row_block_threads><<<rows, 4096>>>(dx.data(), cols, out.data());  // > 1024 threads
        CHECK_THROWS_WITH_AS(rlhf::cuda::check_launch("test"), doctest::Contains("CUDA"), rlhf::error);
    }
}
