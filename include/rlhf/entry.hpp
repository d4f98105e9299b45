#pragma once
/// @file
/// Every container entry point (`rlhf/entry/*.hpp`); a backend umbrella (`rlhf/libtorch.hpp`,
/// `rlhf/eigen.hpp`, `rlhf/xtensor.hpp`) includes it with the backend's adapter.

#include "rlhf/entry/advantages.hpp"
#include "rlhf/entry/backend.hpp"
#include "rlhf/entry/logits.hpp"
#include "rlhf/entry/losses.hpp"
#include "rlhf/entry/outcome_advantages.hpp"
#include "rlhf/entry/rewards.hpp"
