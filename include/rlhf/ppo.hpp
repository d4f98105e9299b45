#pragma once
/// @file
/// Umbrella of the PPO layer (link `rlhf::libtorch`): model concepts, experience and its buffer,
/// the trainer's configuration and presets, metrics and their sinks, checkpoints, generation with a KV cache, the
/// trainer and the engine. docs/ppo.md describes the loop.

#include "rlhf/libtorch.hpp"
#include "rlhf/libtorch/kernel_concepts.hpp"
#include "rlhf/ppo/advantage_stage.hpp"
#include "rlhf/ppo/check_config.hpp"
#include "rlhf/ppo/checkpoint.hpp"
#include "rlhf/ppo/concepts.hpp"
#include "rlhf/ppo/config.hpp"
#include "rlhf/ppo/engine.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/experience_buffer.hpp"
#include "rlhf/ppo/generation.hpp"
#include "rlhf/ppo/loop_rules.hpp"
#include "rlhf/ppo/metrics.hpp"
#include "rlhf/ppo/model_outputs.hpp"
#include "rlhf/ppo/parameter_selection.hpp"
#include "rlhf/ppo/presets.hpp"
#include "rlhf/ppo/rollout_rewards.hpp"
#include "rlhf/ppo/schedule.hpp"
#include "rlhf/ppo/step_statistics.hpp"
#include "rlhf/ppo/trainer.hpp"
