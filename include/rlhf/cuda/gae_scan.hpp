#pragma once
/// @file
/// GAE as a composition of affine maps: the per-position coefficients behind the parallel scans
/// of `rlhf/cuda/gae.cuh`. Plain C++ (no CUDA): host-device under nvcc, so the CPU tests check
/// that scanning these maps reproduces `rlhf::compute_gae` and `rlhf::compute_gae_time_major`.
///
/// The backward recursion of a row carries a state `(A, N)`: `A` the running advantage and `N`
/// what enters the next δ besides the stored values (the next valid value under `skip_masked`, the
/// bootstrap not yet consumed under `zero_masked`). Position t maps the state after it to the
/// state at it, `(A_t, N_t) = (a·A_{t+1} + b·N_{t+1} + e, d·N_{t+1} + f)`; maps compose
/// associatively, so a row is a scan of them from its end, seeded with the constant map
/// `(0, bootstrap)`.

#include "rlhf/core/options.hpp"
#include "rlhf/kernels/vector_math.hpp"  // RLHF_DETAIL_FORCE_INLINE
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::detail::gae_scan {

/// `(A, N) -> (a·A + b·N + e, d·N + f)`.
struct affine {
    double a, b, d, e, f;
};

/// The map that changes nothing (a masked position under `skip_masked`; padding of a scan).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine identity() noexcept {
    return {1.0, 0.0, 1.0, 0.0, 0.0};
}

/// The constant map to `(advantage, carried)`: the state after a row's last position.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine constant(double advantage, double carried) noexcept {
    return {0.0, 0.0, 0.0, advantage, carried};
}

/// `outer ∘ inner`: apply `inner` (the later positions), then `outer` (an earlier one).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine compose(const affine& outer, const affine& inner) noexcept {
    return {outer.a * inner.a, outer.a * inner.b + outer.b * inner.d, outer.d * inner.d,
            outer.a * inner.e + outer.b * inner.f + outer.e, outer.d * inner.f + outer.f};
}

/// Scan operator of a backward scan: `accumulated` covers the positions after `next`.
struct backward_op {
    [[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine operator()(const affine& accumulated,
                                                             const affine& next) const noexcept {
        return compose(next, accumulated);
    }
};

/// The map of position t of a `compute_gae` row under `masking` (`valid`: mask != 0; `next_counted`:
/// `m_{t+1}·V_{t+1}`, 0 after the row's end, read by `zero_masked` only). Seeded with
/// `constant(0, bootstrap)` (bootstrap 0 without one):
///   - `zero_masked`: valid `A = r + γ·next_counted − V + γλ·A' + γ·N'`, `N = 0` (the bootstrap
///     enters at the last valid position); masked `A = γ·next_counted + γλ·A'`, `N = N'`;
///   - `skip_masked`, `valid_range`: valid `A = r + γ·N' − V + γλ·A'`, `N = V`; masked: identity.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine step(gae_masking masking, bool valid, double reward, double value,
                                                   double next_counted, double gamma, double gamma_lambda) noexcept {
    if (masking == gae_masking::zero_masked) {
        const double discounted = gamma * next_counted;
        return valid ? affine{gamma_lambda, gamma, 0.0, reward + discounted - value, 0.0}
                     : affine{gamma_lambda, 0.0, 1.0, discounted, 0.0};
    }
    return valid ? affine{gamma_lambda, gamma, 0.0, reward - value, value} : identity();
}

/// A position's outputs.
struct outputs {
    double advantage, ret;
};

/// Outputs of position t from its advantage `A_t`: `zero_masked` `(A, A + V·m)`, `skip_masked`
/// `(A, A + V)`, `valid_range` `(A, A + V)` at valid positions and `(0, 0)` at masked ones (for a
/// hole-free row, exactly the positions outside its valid range).
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE outputs output(gae_masking masking, bool valid, double advantage,
                                                      double value) noexcept {
    if (masking == gae_masking::zero_masked) return {advantage, valid ? advantage + value : advantage};
    if (masking == gae_masking::skip_masked || valid) return {advantage, advantage + value};
    return {0.0, 0.0};
}

/// The map of step t of `compute_gae_time_major` (state `A` only: `b = d = f = 0`):
/// `A_t = r + γ·bootstrap − V + c·A_{t+1}` with `bootstrap` 0 if terminated, else the truncation
/// value if truncated, else `next_value` (V_{t+1}, or `next_values` at the last step), and
/// `c = γλ` unless the step terminated or was truncated (then 0). Seeded with `constant(0, 0)`.
[[nodiscard]] RLHF_DETAIL_FORCE_INLINE affine time_major_step(bool terminated, bool truncated, double reward,
                                                              double value, double next_value, double truncation_value,
                                                              double gamma, double gamma_lambda) noexcept {
    const double bootstrap = terminated ? 0.0 : (truncated ? truncation_value : next_value);
    const double carry = terminated || truncated ? 0.0 : gamma_lambda;
    return {carry, 0.0, 0.0, reward + gamma * bootstrap - value, 0.0};
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::detail::gae_scan
