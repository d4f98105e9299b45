#!/usr/bin/env bash
# Installs what rlhf needs on Debian 12, and only what is missing; running it again does nothing.
#   bash cmake/install-deps.sh            # build, test and benchmark dependencies
# Set RLHF_DEPS_EXTRA="pkg ..." to add packages. It also makes the virtual environment of
# TensorBoard's reader (below); RLHF_TENSORBOARD_VENV=off skips it.
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
  libprotobuf-dev  # rlhf::tensorboard: the event schema is built at run time, so no protoc
  python3-venv     # the virtual environment of TensorBoard's reader, for the event files' read-back test
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
else
  echo "rlhf: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "rlhf: run as root or install sudo" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# TensorBoard's own reader checks the event files of rlhf::tensorboard (tests/tensorboard). Debian
# 12 does not package TensorBoard: a pinned one from PyPI, in a virtual environment of Debian's
# Python that CMake finds at configure time (RLHF_TENSORBOARD_PYTHON). About 10 s and 180 MB.
tensorboard_version=2.20.0
venv="${RLHF_TENSORBOARD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/rlhf/tensorboard-venv}"
if [ "$venv" = off ]; then
  exit 0
fi
if "$venv/bin/python" -c "import sys, tensorboard; sys.exit(tensorboard.__version__ != '$tensorboard_version')" 2>/dev/null; then
  echo "rlhf: tensorboard $tensorboard_version present in $venv"
else
  echo "rlhf: installing tensorboard $tensorboard_version into $venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "tensorboard==$tensorboard_version"
fi
