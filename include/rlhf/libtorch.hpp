#pragma once
/// @file
/// Umbrella of the LibTorch backend (link `rlhf::libtorch`): core, kernels, the LibTorch adapter,
/// every container entry point (`rlhf::compute_gae(tensor, ...)`, ...) and the autograd losses of
/// `rlhf::libtorch` (CPU kernel or torch ops, by device).

#include "rlhf/entry.hpp"
#include "rlhf/libtorch/adapter.hpp"
#include "rlhf/libtorch/advantage_ops.hpp"
#include "rlhf/libtorch/dispatch.hpp"
#include "rlhf/libtorch/kl_loss.hpp"
#include "rlhf/libtorch/logits.hpp"
#include "rlhf/libtorch/loss_support.hpp"
#include "rlhf/libtorch/policy_loss.hpp"
#include "rlhf/libtorch/value_loss.hpp"
#include "rlhf/libtorch/view.hpp"
#include "rlhf/rlhf.hpp"
