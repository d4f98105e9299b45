#pragma once
/// @file
/// Umbrella of the LibTorch backend (link `rlhf::libtorch`).

#include "rlhf/libtorch/view.hpp"
#include "rlhf/rlhf.hpp"
