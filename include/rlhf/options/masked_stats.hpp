#pragma once
/// @file
/// Options of the masked statistics, whitening and running moments (kernels/masked_stats.hpp).
/// Plain data with designated-initialiser defaults; the checks live with the kernels.

#include "rlhf/core/options.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// Where the whitening epsilon enters the inverse standard deviation.
enum class whiten_epsilon {
    add_to_variance,  ///< rsqrt(var + eps): TRL `masked_whiten`, verl `masked_whiten`, ChatLearn `whiten`
    clamp_variance,   ///< rsqrt(max(var, eps)): OpenRLHF `masked_normalize` and batch advantage normalisation
};

RLHF_OPTION_NAMES(whiten_epsilon, {whiten_epsilon::add_to_variance, "add_to_variance"},
                  {whiten_epsilon::clamp_variance, "clamp_variance"})

/// Options of the plain statistics (`masked_mean`, `masked_variance`, `compute_masked_moments`
/// and their per-row forms).
struct moments_options {
    /// Bessel-corrected (TRL, verl) or population (OpenRLHF) variance.
    variance_estimator variance = variance_estimator::unbiased;
    /// What a scope with too few valid elements yields (see the file comment).
    small_sample_policy small_sample = small_sample_policy::raise;
    /// Added to the valid count in every mean's denominator: verl `masked_mean` and ColossalChat
    /// `masked_mean` use 1e-8; TRL and OpenRLHF use 0. Must be finite and >= 0.
    double count_epsilon = 0.0;
};

/// Options of `masked_whiten` / `whiten`: `out = (x - mean) * rsqrt(var ⊕ epsilon) (+ mean)`.
///
/// Presets (each checked against the golden outputs):
///   - TRL `trl/core.py: masked_whiten` (v0.11.4) and `trl/experimental/ppo/ppo_trainer.py`:
///     the defaults (per-batch, unbiased, add_to_variance, 1e-8, whitened values written at
///     masked positions); rewards use `.shift_mean = false`.
///   - verl `verl/utils/torch_functional.py: masked_whiten`: the defaults plus
///     `.count_epsilon = 1e-8` (its mean divides by Σm + 1e-8); it raises for n ≤ 1 like `raise`.
///   - OpenRLHF batch advantage normalisation (`openrlhf/trainer/ppo_utils/experience_maker.py:
///     compute_advantages_and_returns`): `.variance = biased, .epsilon_mode = clamp_variance`
///     (`algo.advantage.no_std_norm` is `.scale = false`).
///   - OpenRLHF `openrlhf/models/utils.py: masked_normalize(dim=1)`: `.variance = biased,
///     .scope = per_row, .epsilon_mode = clamp_variance, .small_sample = zero_variance,
///     .zero_masked = true` (an empty row gives zeros, as its `clamp(min=1)` count does).
///   - ChatLearn old PPO `examples/megatron/models/utils.py: whiten` (commit 302cdc7e) and TRL
///     `trl/core.py: whiten`: `rlhf::whiten` (no mask) with the defaults.
struct whiten_options {
    bool shift_mean = true;  ///< false adds the mean back (TRL reward whitening keeps the reward's sign)
    variance_estimator variance = variance_estimator::unbiased;
    whiten_scope scope = whiten_scope::per_batch;
    double epsilon = 1e-8;  ///< must be positive and finite, so a zero variance never divides by 0
    whiten_epsilon epsilon_mode = whiten_epsilon::add_to_variance;  ///< rsqrt(var + eps) vs rsqrt(max(var, eps))
    small_sample_policy small_sample = small_sample_policy::raise;
    bool zero_masked = false;    ///< write 0 at mask == 0 positions (else the whitened value, as TRL does)
    bool scale = true;           ///< false: only centre, out = x - mean (OpenRLHF `no_std_norm`)
    double count_epsilon = 0.0;  ///< added to Σm in the mean's denominator (verl: 1e-8)
};

/// Options of `running_moments`.
struct running_moments_options {
    /// A batch of one element has no unbiased standard deviation (TRL returns NaN):
    /// `raise` throws before touching the state; `zero_variance` returns std 0 and updates the
    /// state; `skip` returns std 0 and leaves the state unchanged. An empty batch: `raise`
    /// throws, the others leave the state unchanged and return zeros. The same policy covers a
    /// state whose total count is still <= 1 (its unbiased std is then 0 unless `raise`).
    small_sample_policy small_sample = small_sample_policy::raise;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
