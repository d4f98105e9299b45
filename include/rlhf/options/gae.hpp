#pragma once
/// @file
/// Options of GAE (kernels/gae.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include "rlhf/core/options.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Options of `compute_gae` (RLHF defaults: TRL, DeepSpeed-Chat, ColossalChat v2 use γ=1, λ=0.95;
/// verl and OpenRLHF default to λ=1).
struct gae_options {
    double gamma = 1.0;    ///< discount, in [0, 1]
    double lambda = 0.95;  ///< GAE λ, in [0, 1]
    /// How positions with mask 0 enter the recursion:
    ///   - `zero_masked`: rewards and values are multiplied by the mask and the recursion runs over
    ///     every position; `returns = A + V·m`. Masked positions keep their raw advantage (non-zero
    ///     at left padding and holes). TRL v0.11 `PPOTrainer.compute_advantages`
    ///     (`trl/trainer/ppo_trainer.py`), OpenRLHF `get_advantages_and_returns`
    ///     (`openrlhf/trainer/ppo_utils/experience_maker.py`); with an all-ones mask it is the
    ///     plain recursion of ColossalChat v2 `calculate_advantage`
    ///     (`coati/experience_maker/naive.py`) and ChatLearn's old PPO.
    ///   - `skip_masked`: masked positions are transparent; the next value and the running
    ///     advantage are carried across them, and a masked position reports the carried advantage
    ///     (0 after the last valid token); `returns = A + V` everywhere, masked positions included.
    ///     verl `compute_gae_advantage_return` (`verl/trainer/ppo/core_algos.py`).
    ///   - `valid_range`: the recursion runs over each row's valid range only (from its first to
    ///     its last valid position); advantages and returns outside it are 0. The valid positions
    ///     must be contiguous (left and right padding only): an interior hole is an error (kind
    ///     `value`, argument `mask`), use `skip_masked` for holes. DeepSpeed-Chat
    ///     `get_advantages_and_returns` (`dschat/rlhf/ppo_trainer.py`) over the log-prob columns
    ///     `[start, S-1)` with the mask covering `[start, ends)`, `ends = start + Σ action_mask + 1`.
    gae_masking masking = gae_masking::zero_masked;
};

/// Options of `compute_gae_time_major` (Stable-Baselines3 / CleanRL defaults).
struct time_major_gae_options {
    double gamma = 0.99;   ///< discount, in [0, 1]
    double lambda = 0.95;  ///< GAE λ, in [0, 1]
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
