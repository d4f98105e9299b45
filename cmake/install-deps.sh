#!/usr/bin/env bash
# Installs what rlhf needs on Debian 12, and only what is missing; running it again does nothing.
#   bash cmake/install-deps.sh            # build, test and benchmark dependencies
# Set RLHF_DEPS_EXTRA="pkg ..." to add packages.
set -euo pipefail

packages=(
  cmake ninja-build g++ clang-format clang-tidy  # toolchain, the format and clang-tidy checks
  clang libclang-rt-14-dev  # the second compiler: sanitizer builds and the libFuzzer targets
  python3                                       # extracts the docs' code blocks for their test
  libtorch-dev libeigen3-dev xtensor-dev  # backends (rlhf::libtorch, rlhf::eigen, rlhf::xtensor)
  libgloo-dev           # gloo's headers, for c10d's Gloo process group (rlhf::distributed)
  libopenblas0-pthread  # an optimised BLAS for LibTorch's matmuls (an examples' SFT step: 2.9 s on the reference BLAS, 0.2 s)
  fortunes              # the English text of the language-model examples
  doctest-dev nlohmann-json3-dev        # tests and the golden runner
  libbenchmark-dev python3-matplotlib   # benchmarks and their chart
)
# shellcheck disable=SC2206
packages+=(${RLHF_DEPS_EXTRA:-})

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "rlhf: dependencies present"
  exit 0
fi

echo "rlhf: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "rlhf: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
