#pragma once
/// @file
/// Umbrella of the libtorch backend (link `rlhf::libtorch`): core, kernels and every `rlhf::libtorch` entry point.

#include "rlhf/libtorch/advantages.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/kl_loss.hpp"
#include "rlhf/libtorch/logits.hpp"
#include "rlhf/libtorch/loss_support.hpp"
#include "rlhf/libtorch/outcome_advantages.hpp"
#include "rlhf/libtorch/policy_loss.hpp"
#include "rlhf/libtorch/presets.hpp"
#include "rlhf/libtorch/rewards.hpp"
#include "rlhf/libtorch/value_loss.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/rlhf.hpp"
