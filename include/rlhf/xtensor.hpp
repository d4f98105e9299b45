#pragma once
/// @file
/// Umbrella of the xtensor backend (link `rlhf::xtensor`): core, kernels and every `rlhf::xtensor` entry point.

#include "rlhf/rlhf.hpp"
#include "rlhf/xtensor/advantages.hpp"
#include "rlhf/xtensor/kl_loss.hpp"
#include "rlhf/xtensor/logits.hpp"
#include "rlhf/xtensor/outcome_advantages.hpp"
#include "rlhf/xtensor/policy_loss.hpp"
#include "rlhf/xtensor/rewards.hpp"
#include "rlhf/xtensor/value_loss.hpp"
#include "rlhf/xtensor/view.hpp"
