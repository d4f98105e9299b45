#pragma once
/// @file
/// Umbrella of the Eigen backend (link `rlhf::eigen`): core, kernels, the Eigen adapter and every
/// container entry point (`rlhf::compute_gae(matrix, ...)`, ...).

#include "rlhf/eigen/adapter.hpp"
#include "rlhf/eigen/view.hpp"
#include "rlhf/entry.hpp"
#include "rlhf/rlhf.hpp"
