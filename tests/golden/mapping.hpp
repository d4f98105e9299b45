#pragma once
// How the golden runner maps a case of a golden file to the library call that reproduces it.
// Each family of peer functions has a `map_<family>.cpp` that registers its mappers per
// golden_id; the mapper reads the case's params and inputs (any shape, any mask pattern) and
// returns the library's outputs under the peer's output names.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "golden_data.hpp"

namespace rlhf_golden {

/// The library's answer to one case.
struct mapped_outputs {
    std::map<std::string, tensor> outputs;  // compared with the case's outputs of the same name
    double relative_tolerance = 1e-9;       // |ours - peer| <= tol * max(1, |peer|)
    /// Outputs where the peer returned NaN/Inf and the library, by a documented policy, raises an
    /// rlhf::error (an empty mask, one sample under the unbiased variance) or returns its defined
    /// value (a stable log(1 + exp) where the peer overflows); the runner counts such a case apart
    /// from the matched ones ("peer NaN (policy)").
    std::vector<std::string> refused_non_finite;
};

/// A 0/1 mask as bytes, so the kernels see an integer mask as the peers' bool masks.
inline std::vector<std::uint8_t> mask_bytes(const tensor& mask) {
    std::vector<std::uint8_t> bytes(mask.data.size());
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        const double m = mask.data[i];
        if (m != 0.0 && m != 1.0) throw std::runtime_error("golden: mask entry not in {0,1}");
        bytes[i] = m != 0.0 ? 1 : 0;
    }
    return bytes;
}

/// True when a reference output holds only NaN/Inf.
inline bool all_non_finite(const tensor& t) {
    return !t.data.empty() && std::none_of(t.data.begin(), t.data.end(), [](double x) { return std::isfinite(x); });
}

/// A mapper's answer with one output.
inline mapped_outputs single_output(const std::string& name, tensor value, double relative_tolerance = 1e-9) {
    mapped_outputs out;
    out.outputs.emplace(name, std::move(value));
    out.relative_tolerance = relative_tolerance;
    return out;
}

/// Returns the library's outputs, std::nullopt when the case is not one the library maps
/// (unknown params or symbol), or throws rlhf::error when the library rejects the input.
using case_mapper = std::function<std::optional<mapped_outputs>(const golden_file&, const golden_case&)>;

/// golden_id -> mappers. Every mapper is asked about every case of its golden_id; the outputs
/// of those that answer are merged (a file can hold several peer functions, and one case can
/// carry outputs of two families, such as a loss and a normalisation).
using mapper_registry = std::map<std::string, std::vector<case_mapper>>;

// One registration function per family; each adds the golden_ids it maps.
void register_statistics_mappers(mapper_registry& registry);  // masked stats, whitening, running moments
void register_gae_mappers(mapper_registry& registry);         // GAE and returns
void register_outcome_mappers(mapper_registry& registry);     // critic-free estimators
void register_reward_mappers(mapper_registry& registry);      // KL estimators, reward shaping, KL controllers
void register_loss_mappers(mapper_registry& registry);        // policy loss and aggregation
void register_logits_mappers(mapper_registry& registry);      // log-probs, entropy, KL from logits, LM and RM losses
void register_value_mappers(mapper_registry& registry);       // value losses (map_value_losses.cpp)
void register_padding_mappers(mapper_registry& registry);     // ragged rows to a padded matrix

/// Every mapper the runner knows.
inline mapper_registry all_mappers() {
    mapper_registry registry;
    register_statistics_mappers(registry);
    register_gae_mappers(registry);
    register_outcome_mappers(registry);
    register_reward_mappers(registry);
    register_loss_mappers(registry);
    register_logits_mappers(registry);
    register_value_mappers(registry);
    register_padding_mappers(registry);
    return registry;
}

}  // namespace rlhf_golden
