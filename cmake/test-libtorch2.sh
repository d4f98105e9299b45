#!/usr/bin/env bash
# Builds rlhf's tests against LibTorch 2.x taken from PyTorch's wheel on PyPI and runs them
# (CMake preset libtorch2). The wheel goes to a virtual environment under build/, reused by
# later runs.
#   bash cmake/test-libtorch2.sh                 # torch 2.11.0
#   RLHF_TORCH_VERSION=2.9.1 bash cmake/test-libtorch2.sh
# PyPI's Linux wheels are CUDA builds: their CMake configuration needs the CUDA toolkit (nvcc),
# and their libraries load with the toolkit's cuBLAS/cuDNN/NCCL or with NVIDIA's wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${RLHF_TORCH_VERSION:-2.11.0}"
venv="build/torch-${version}"

bash cmake/install-deps.sh
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-deps "torch==${version}"
  "$venv/bin/pip" install -q typing_extensions sympy filelock networkx jinja2 fsspec
  # A machine with the CUDA toolkit lacks only these of the wheel's libraries.
  "$venv/bin/pip" install -q --no-deps nvidia-cufile nvidia-cusparselt-cu13 nvidia-nvshmem-cu13 || true
  if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    "$venv/bin/pip" install -q "torch==${version}"  # every CUDA library from NVIDIA's wheels
  fi
fi
RLHF_LIBTORCH2_PREFIX="$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)"
export RLHF_LIBTORCH2_PREFIX
echo "rlhf: LibTorch $("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null) from $RLHF_LIBTORCH2_PREFIX"
cmake --workflow --preset libtorch2
