#!/usr/bin/env bash
# Copies the Debian packages the GPU run needs besides LibTorch and the CUDA toolkit (doctest,
# Google Benchmark, nlohmann-json for the test tree's configure step) into DIR, laid out like /usr,
# for a GPU machine that has none of them:
#   bash benchmarks/gpu/pack-deps.sh build/gpu-deps      # on Debian 12, after cmake/install-deps.sh
#   bash benchmarks/gpu/run.sh build/gpu-deps            # on the GPU machine, with DIR copied along
set -euo pipefail
out=${1:?usage: pack-deps.sh DIR}
mkdir -p "$out"
for package in doctest-dev libbenchmark-dev libbenchmark1debian nlohmann-json3-dev; do
    dpkg -s "$package" >/dev/null 2>&1 || { echo "pack-deps: $package is not installed (apt-get install $package)" >&2; exit 1; }
    dpkg -L "$package" | while read -r path; do
        [ -f "$path" ] || [ -L "$path" ] || continue
        case "$path" in /usr/share/doc/*|/usr/share/man/*) continue ;; esac
        mkdir -p "$out$(dirname "$path")"
        cp -P "$path" "$out$path"
    done
done
echo "pack-deps: $(find "$out" -type f | wc -l) files in $out"
