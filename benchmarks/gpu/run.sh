#!/usr/bin/env bash
# The GPU checks in one run (under 8 minutes on one H200): builds the CUDA kernels, their tests
# and the GPU benchmark rows against the machine's LibTorch with CUDA, runs the tests (and
# compute-sanitizer's memcheck and racecheck on the kernel tests), then the benchmarks, and prints
# a table of ratios last.
#   bash benchmarks/gpu/run.sh DEPS [OUT]
# DEPS: doctest, Google Benchmark and nlohmann-json laid out like /usr (benchmarks/gpu/pack-deps.sh makes it on
# Debian 12). OUT (default build/gpu-results): logs, benchmark JSON, the table.
# Environment: RLHF_GPU_ARCH (default 90), RLHF_GPU_SKIP_SANITIZER=1 to leave out compute-sanitizer.
set -uo pipefail
cd "$(dirname "$0")/../.."
deps=$(realpath "${1:?usage: run.sh DEPS [OUT]}")
out=$(mkdir -p "${2:-build/gpu-results}" && realpath "${2:-build/gpu-results}")
build=build/gpu
start=$SECONDS
step() { echo "== $(( SECONDS - start )) s: $*"; }
failures=()

torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') || { echo "run.sh: python3 cannot import torch" >&2; exit 1; }
step "configure (LibTorch: $torch_prefix)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" -DRLHF_WITH_CUDA=ON -DRLHF_WITH_LIBTORCH=ON \
    -DRLHF_WITH_EIGEN=OFF -DRLHF_WITH_XTENSOR=OFF -DRLHF_BUILD_EXAMPLES=OFF -DRLHF_BUILD_BENCHMARKS=ON \
    -DRLHF_CUDA_ARCHITECTURES="${RLHF_GPU_ARCH:-90}" -DCMAKE_CUDA_ARCHITECTURES="${RLHF_GPU_ARCH:-90}" \
    > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
grep "rlhf" "$out/configure.log"

step "build"
targets=(rlhf_cuda_tests rlhf_cuda_benchmarks)
# The LibTorch glue's tests exist when this LibTorch has CUDA (see the configure log otherwise).
ninja -C "$build" -t targets all 2>/dev/null | grep -q '^rlhf_cuda_libtorch_tests:' && targets+=(rlhf_cuda_libtorch_tests)
cmake --build "$build" --target "${targets[@]}" -- -k 0 \
    > "$out/build.log" 2>&1 || { grep -B2 -A12 "error" "$out/build.log" | head -80; failures+=(build); }

step "tests"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
for t in rlhf_cuda_tests rlhf_cuda_libtorch_tests; do
    [ -x "$build/tests/$t" ] || continue
    timeout 240 "$build/tests/$t" > "$out/$t.log" 2>&1 || failures+=("$t")
    tail -4 "$out/$t.log"
done

if [ -z "${RLHF_GPU_SKIP_SANITIZER:-}" ] && [ -x "$build/tests/rlhf_cuda_tests" ] && command -v compute-sanitizer >/dev/null; then
    # memcheck over every kernel test; racecheck (shared memory) over the kernels with block-wide
    # reductions and scans. Each under a time cap so the run stays under 8 minutes.
    for run in "memcheck 120" "racecheck 90"; do
        set -- $run
        step "compute-sanitizer --tool $1"
        timeout "$2" compute-sanitizer --tool "$1" --error-exitcode 3 "$build/tests/rlhf_cuda_tests" \
            > "$out/sanitizer-$1.log" 2>&1 || failures+=("sanitizer-$1 (exit $?)")
        tail -3 "$out/sanitizer-$1.log"
    done
fi

if [ -x "$build/benchmarks/rlhf_cuda_benchmarks" ]; then
    step "benchmarks"
    timeout 200 "$build/benchmarks/rlhf_cuda_benchmarks" --benchmark_out="$out/cuda_benchmarks.json" \
        --benchmark_out_format=json > "$out/benchmarks.log" 2>&1 || failures+=(benchmarks)
    python3 benchmarks/gpu/report.py "$out/cuda_benchmarks.json" | tee "$out/table.md"
fi
step "done; failures: ${failures[*]:-none}"
[ ${#failures[@]} -eq 0 ]
