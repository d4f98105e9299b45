#pragma once
// Precompiled first in every LibTorch test (CMake target_precompile_headers): LibTorch pulls in
// glog, whose CHECK macros would silently replace doctest's. Torch first, glog's names dropped,
// then doctest defines its own; later includes of either are no-ops behind their include guards.
// ivalue.h before the rest: clang in C++20 mode rejects LibTorch 1.13's List.h when it is reached
// first through other headers (a std::vector<IValue> instantiated while IValue is incomplete).
#include <ATen/core/ivalue.h>
#include <torch/autograd.h>
#include <torch/types.h>

#undef CHECK
#undef CHECK_EQ
#undef CHECK_NE
#undef CHECK_LE
#undef CHECK_LT
#undef CHECK_GE
#undef CHECK_GT

#include <doctest/doctest.h>
