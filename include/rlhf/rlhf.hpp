#pragma once
/// @file
/// Umbrella header of the dependency-free part of the library: core and kernels.
/// It never includes a backend; see `rlhf/libtorch.hpp`, `rlhf/eigen.hpp`, `rlhf/xtensor.hpp`.

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/version.hpp"
