#pragma once
/// @file
/// Umbrella of the Eigen backend (link `rlhf::eigen`).

#include "rlhf/eigen/view.hpp"
#include "rlhf/rlhf.hpp"
