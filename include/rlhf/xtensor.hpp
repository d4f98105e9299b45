#pragma once
/// @file
/// Umbrella of the xtensor backend (link `rlhf::xtensor`).

#include "rlhf/rlhf.hpp"
#include "rlhf/xtensor/view.hpp"
