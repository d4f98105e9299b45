#pragma once
/// @file
/// Dense group ids for the device's group estimators (`rlhf/cuda/outcome_advantages.cuh`), which
/// take ids in [0, G) with G given: maps arbitrary int64 ids (the CPU kernels' convention) to
/// [0, G) on the host. Plain C++ (no CUDA), checked by the CPU tests.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/view.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda {

/// Writes to `dense` the rank of each of `ids` among the distinct ids (equal ids get the same
/// dense id, the smallest id gets 0) and returns the number of distinct ids G: the rows form the
/// same groups, now with ids in [0, G), as `groups` = G of the device estimators needs. Host
/// memory, `[B]` each; `dense` may be `ids` (in place). O(B log B), one allocation of B ids.
inline index_t dense_group_ids(view<std::int64_t, 1> ids, mut_view<std::int64_t, 1> dense) {
    constexpr std::string_view function = "rlhf::cuda::dense_group_ids";
    check_length(function, "dense", dense.extent(0), ids.extent(0), "one per element of 'ids'");
    check_same_or_disjoint(function, "dense", dense, "ids", ids);
    std::vector<std::int64_t> distinct(ids.data(), ids.data() + ids.extent(0));
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    for (index_t i = 0; i < ids.extent(0); ++i)
        dense(i) = std::lower_bound(distinct.begin(), distinct.end(), ids(i)) - distinct.begin();
    return static_cast<index_t>(distinct.size());
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::cuda
