#pragma once
/// @file
/// Umbrella of the eigen backend (link `rlhf::eigen`): core, kernels and every `rlhf::eigen` entry point.

#include "rlhf/eigen/advantages.hpp"
#include "rlhf/eigen/kl_loss.hpp"
#include "rlhf/eigen/logits.hpp"
#include "rlhf/eigen/outcome_advantages.hpp"
#include "rlhf/eigen/policy_loss.hpp"
#include "rlhf/eigen/rewards.hpp"
#include "rlhf/eigen/value_loss.hpp"
#include "rlhf/eigen/view.hpp"
#include "rlhf/rlhf.hpp"
