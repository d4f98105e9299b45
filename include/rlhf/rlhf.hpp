#pragma once
/// @file
/// Umbrella header of the dependency-free part of the library: core and kernels.
/// It never includes a backend; see `rlhf/libtorch.hpp`, `rlhf/eigen.hpp`, `rlhf/xtensor.hpp`.

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/core/options.hpp"
#include "rlhf/core/reducer.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/kernels/gae.hpp"
#include "rlhf/kernels/kl.hpp"
#include "rlhf/kernels/kl_controller.hpp"
#include "rlhf/kernels/kl_loss.hpp"
#include "rlhf/kernels/logits.hpp"
#include "rlhf/kernels/loss_aggregation.hpp"
#include "rlhf/kernels/masked_stats.hpp"
#include "rlhf/kernels/outcome_advantages.hpp"
#include "rlhf/kernels/padding.hpp"
#include "rlhf/kernels/policy_loss.hpp"
#include "rlhf/kernels/presets.hpp"
#include "rlhf/kernels/reward_model_loss.hpp"
#include "rlhf/kernels/reward_shaping.hpp"
#include "rlhf/kernels/value_loss.hpp"
#include "rlhf/version.hpp"
