#pragma once
/// @file
/// Reverse discounted returns as a composition of affine maps: the per-position coefficients behind
/// the row scans of `rlhf/cuda/outcome_advantages.cuh`. Plain C++ (no CUDA): host-device under
/// nvcc, so the CPU tests check that folding these maps reproduces `rlhf::compute_cumulative_returns`
/// for every `return_masking`.
///
/// The backward loop of a row carries one number, the running return R (0 after the row's end).
/// Position t maps the running return after it to the one at it, `R_t = a·R_{t+1} + e`, and writes
/// `G_t = α·R_{t+1} + β`; the maps compose associatively, so `R_{t+1}` of every position is an
/// exclusive scan of the maps from the row's end, seeded with the constant map 0.

#include "rlhf/core/options.hpp"
#include "rlhf/kernels/vector_math.hpp"  // RLHF_DETAIL_FORCE_INLINE
#include "rlhf/options/outcome_advantages.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::detail::return_scan {

/// `R -> a·R + e`.
struct affine {
    double a, e;
};

/// The map that changes nothing (padding of a scan).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine identity() noexcept {
    return {1.0, 0.0};
}

/// The constant map to `value` (the running return after a row's end: 0).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine constant(double value) noexcept {
    return {0.0, value};
}

/// `outer ∘ inner`: apply `inner` (the later positions), then `outer` (an earlier one).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine compose(const affine& outer, const affine& inner) noexcept {
    return {outer.a * inner.a, outer.a * inner.e + outer.e};
}

/// Scan operator of a backward scan: `accumulated` covers the positions after `next`.
struct backward_op {
    [[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine operator()(const affine& accumulated,
                                                             const affine& next) const noexcept {
        return compose(next, accumulated);
    }
};

/// Position t of a row: its map of the running return and its output `G_t = alpha·R_{t+1} + beta`.
struct step_maps {
    affine running;
    double alpha, beta;
};

/// The maps of position t under `masking` (`valid`: mask != 0), as `detail::reverse_returns`:
///   - `reset_at_masked`: `G = r + γ·R'`, `R = G` if valid else 0;
///   - `zero_masked`: `G = R = r·m + γ·R'`;
///   - `skip_masked`: valid `G = R = r + γ·R'`; masked `G = 0`, `R = R'`.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE step_maps step(return_masking masking, bool valid, double reward,
                                                      double gamma) noexcept {
    switch (masking) {
        case return_masking::reset_at_masked:
            return {valid ? affine{gamma, reward} : affine{0.0, 0.0}, gamma, reward};
        case return_masking::zero_masked: {
            const double counted = valid ? reward : 0.0;
            return {{gamma, counted}, gamma, counted};
        }
        case return_masking::skip_masked:
            break;
    }
    return valid ? step_maps{{gamma, reward}, gamma, reward} : step_maps{identity(), 0.0, 0.0};
}

/// `G_t` from `R_{t+1}`.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE double output(const step_maps& s, double next_running) noexcept {
    return s.alpha * next_running + s.beta;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::detail::return_scan
