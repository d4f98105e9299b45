#pragma once
/// @file
/// Umbrella of the xtensor backend (link `rlhf::xtensor`): core, kernels, the xtensor adapter and
/// every container entry point (`rlhf::compute_gae(xtensor, ...)`, ...).

#include "rlhf/entry.hpp"
#include "rlhf/rlhf.hpp"
#include "rlhf/xtensor/adapter.hpp"
#include "rlhf/xtensor/view.hpp"
