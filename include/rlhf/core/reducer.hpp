#pragma once
/// @file
/// The `Reducer` concept: how statistics become global across data-parallel ranks.
///
/// Whitening, running moments and loss aggregation accumulate a few sums (count, sum, sum of
/// squares) locally, hand them to a reducer, and finish with the reduced sums. With
/// `local_reducer` (the default) the statistics are those of this process; a reducer that
/// all-reduces (the c10d one in `rlhf/distributed/`) makes them those of the whole job.

#include <concepts>
#include <span>

#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// A type that sums a few doubles across participants, in place: after `r.sum_all(values)`
/// every participant holds the element-wise sum of everyone's `values`.
template <class R>
concept Reducer = requires(R& reducer, std::span<double> values) {
    { reducer.sum_all(values) } -> std::same_as<void>;
};

/// The single-process reducer: the sums stay as they are.
struct local_reducer {
    void sum_all(std::span<double> /*values*/) const noexcept {}
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
