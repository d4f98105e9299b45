// The doctest main of the CUDA tests: without a CUDA device it runs nothing and exits with 77,
// which ctest reports as skipped (SKIP_RETURN_CODE); listing the test cases needs no device.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <string_view>

int main(int argc, char** argv) {
    bool listing = false;
    for (int i = 1; i < argc; ++i) listing = listing || std::string_view(argv[i]).starts_with("--list");
    int devices = 0;
    if (!listing && (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)) {
        std::puts("rlhf CUDA tests: no CUDA device, skipped");
        return 77;
    }
    doctest::Context context(argc, argv);
    return context.run();
}
