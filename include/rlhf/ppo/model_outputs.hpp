#pragma once
/// @file
/// The trained models' outputs for one batch, the way the trainer asks for them: one forward of a
/// policy with a value head (`ValueHeadPolicy` given as both policy and critic), else the policy
/// (with entropy when it is an `EntropyPolicy`) and the critic apart. Shapes are checked; the
/// outputs keep the models' dtype (the losses compute bfloat16/float16 in float32).

#include <torch/types.h>

#include <concepts>
#include <cstdint>
#include <string_view>

#include "rlhf/ppo/concepts.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// Whether `critic` is `policy` itself, a `ValueHeadPolicy` used for both (one forward).
template <class P, class C>
[[nodiscard]] bool is_value_head_of(const P* policy, const C* critic) noexcept {
    if constexpr (ValueHeadPolicy<P> && std::same_as<P, C>)
        return policy != nullptr && policy == critic;
    else
        return false;
}

/// Log-probs, entropy (undefined when the policy gives none) and values (undefined without a
/// critic) of a batch, `[rows, width]` each.
struct model_outputs {
    torch::Tensor log_probs;
    torch::Tensor entropy;
    torch::Tensor values;
};

/// The outputs of `policy` and `critic` (nullptr: none) over `batch`; errors name the model call
/// (`policy.log_probs`, `critic.values`, ...) as `detail::check_model_output` does.
template <class P, class C>
[[nodiscard]] model_outputs forward_models(P& policy, C* critic, const rollout& batch, std::int64_t rows,
                                           std::int64_t width, bool with_entropy, std::string_view function) {
    model_outputs out;
    if constexpr (ValueHeadPolicy<P> && std::same_as<P, C>) {
        if (is_value_head_of(&policy, critic)) {
            policy_value_output o = policy.log_probs_and_values(batch);
            detail::check_model_output(o.log_probs, rows, width, function, "policy.log_probs_and_values");
            detail::check_model_output(o.values, rows, width, function, "policy.log_probs_and_values");
            if (o.entropy.defined())
                detail::check_model_output(o.entropy, rows, width, function, "policy.log_probs_and_values");
            return {o.log_probs, with_entropy ? o.entropy : torch::Tensor{}, o.values};
        }
    }
    if constexpr (EntropyPolicy<P>) {
        if (with_entropy) {
            policy_output o = policy.log_probs_and_entropy(batch);
            detail::check_model_output(o.entropy, rows, width, function, "policy.log_probs_and_entropy");
            out.log_probs = o.log_probs;
            out.entropy = o.entropy;
        }
    }
    if (!out.log_probs.defined()) out.log_probs = policy.log_probs(batch);
    detail::check_model_output(out.log_probs, rows, width, function, "policy.log_probs");
    if constexpr (!std::same_as<C, no_critic>) {
        if (critic != nullptr) {
            out.values = critic->values(batch);
            detail::check_model_output(out.values, rows, width, function, "critic.values");
        }
    }
    return out;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
