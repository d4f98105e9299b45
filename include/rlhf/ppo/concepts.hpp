#pragma once
/// @file
/// What the PPO loop asks of user models. Each concept is checked where a model enters the
/// library (`template <Policy P>`), so a model that misses a member fails with a diagnostic that
/// names the concept and the missing expression, not a backtrace from deep inside the trainer.
///
/// All model calls take a `rollout` (sequences `[B, S]`, attention mask, explicit response
/// ranges) and return tensors in the response layout `[B, T]`, `T = response_width(rollout)`,
/// column `t` ↔ token `sequences[b, response_start[b] + t]` (see experience.hpp).
/// Members may be non-const: models keep state (an RNG, a KV cache, training mode).

#include <torch/types.h>

#include <concepts>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/libtorch/kernel_concepts.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/parameter_selection.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// The policy (actor): generates responses, and scores given tokens.
/// - `policy.generate(prompts, options)` → `rollout`: sequences `[B, S]` holding each prompt and
///   its response, attention mask `[B, S]`, and `response_start`/`response_end` int64 `[B]`.
/// - `policy.log_probs(rollout)` → `[B, T]` log π(token | prefix) of the response tokens
///   (differentiable when the policy trains); padding columns are ignored by the loop.
template <class P>
concept Policy = requires(P& policy, const prompt_batch& prompts, const generation_options& options,
                          const rollout& sequences) {
    { policy.generate(prompts, options) } -> std::convertible_to<rollout>;
    { policy.log_probs(sequences) } -> std::convertible_to<torch::Tensor>;
};

/// A policy that also returns the entropy of its token distributions in the same forward pass
/// (for the entropy bonus): `policy.log_probs_and_entropy(rollout)` → `policy_output` `[B, T]`.
template <class P>
concept EntropyPolicy = Policy<P> && requires(P& policy, const rollout& sequences) {
    { policy.log_probs_and_entropy(sequences) } -> std::convertible_to<policy_output>;
};

/// A policy with a value head on its backbone: `policy.log_probs_and_values(rollout)` →
/// `policy_value_output` `[B, T]` in ONE forward. Given as both policy and critic of a trainer
/// (`.critic = &policy`), it saves the second backbone forward per micro-batch.
template <class P>
concept ValueHeadPolicy = Policy<P> && requires(P& policy, const rollout& sequences) {
    { policy.log_probs_and_values(sequences) } -> std::convertible_to<policy_value_output>;
};

/// The frozen reference model of the KL penalty: `reference.log_probs(rollout)` → `[B, T]`.
/// Every `Policy` is also a `ReferenceModel` (a frozen copy of the initial policy).
template <class R>
concept ReferenceModel = requires(R& reference, const rollout& sequences) {
    { reference.log_probs(sequences) } -> std::convertible_to<torch::Tensor>;
};

/// The value model: `critic.values(rollout)` → `[B, T]` value estimates V(prefix up to and
/// including response token t).
template <class C>
concept Critic = requires(C& critic, const rollout& sequences) {
    { critic.values(sequences) } -> std::convertible_to<torch::Tensor>;
};

/// A reward model that scores whole sequences: `reward_model.score(rollout)` → `[B]`.
template <class R>
concept SequenceRewardModel = requires(R& reward_model, const rollout& sequences) {
    { reward_model.score(sequences) } -> std::convertible_to<torch::Tensor>;
};

/// A reward model with dense rewards: `reward_model.token_rewards(rollout)` → `[B, T]`.
template <class R>
concept TokenRewardModel = requires(R& reward_model, const rollout& sequences) {
    { reward_model.token_rewards(sequences) } -> std::convertible_to<torch::Tensor>;
};

/// A reward model of either kind. A type that offers both is used as a `TokenRewardModel`.
template <class R>
concept RewardModel = SequenceRewardModel<R> || TokenRewardModel<R>;

/// Copies the trained weights of a trainer model `From` into an inference model `To` (an
/// engine's generation copy, a reference or EMA model): a type with a member
/// `sync.sync(from, to)`, or any callable `sync(from, to)`. Call it through `sync_parameters`.
template <class S, class From, class To>
concept ParameterSync = requires(S& sync, From& from, To& to) {
    sync.sync(from, to);
}
|| std::invocable<S&, From&, To&>;

/// Runs a `ParameterSync` in whichever form it has (the member `sync` is preferred).
template <class From, class To, ParameterSync<From, To> S>
void sync_parameters(S& sync, From& from, To& to) {
    if constexpr (requires { sync.sync(from, to); })
        sync.sync(from, to);
    else
        std::invoke(sync, from, to);
}

/// A model whose parameters (and, when present, buffers) are listed as tensors, in a
/// deterministic order: `torch::nn::Module` (pass `*holder` for a `ModuleHolder`).
template <class M>
concept HasParameters = requires(M& model) {
    { model.parameters() } -> std::convertible_to<std::vector<torch::Tensor>>;
};

/// The default `ParameterSync` for two models of the same architecture: copies every
/// parameter (then every buffer, when both list them) in order, under no-grad; `copy_` casts
/// dtype and device, so a float32 trainer can feed a bfloat16 or GPU inference copy.
/// With `alpha < 1` it mixes instead: `to ← α·from + (1 − α)·to`, parameters only (TRL
/// `SyncRefModelCallback._sync_target_model`: `mul_(1 − α).add_(from, alpha=α)`). With
/// `trainable_only` (parameter-efficient training) it copies only the parameters with
/// `requires_grad()` on each side, and no buffers: the frozen backbone is not sent again.
/// Errors: a different parameter count or shape (with `trainable_only`: a different trainable
/// set) → `rlhf::error` (kind shape, argument `to`).
struct copy_parameters {
    double alpha = 1.0;           ///< the weight of `from`; 1: a copy
    bool trainable_only = false;  ///< copy only the parameters with `requires_grad()`

    template <HasParameters From, HasParameters To>
    void sync(From& from, To& to) const {
        constexpr std::string_view function = "rlhf::ppo::copy_parameters::sync";
        copy_tensors(trainable_tensors(from.parameters(), trainable_only),
                     trainable_tensors(to.parameters(), trainable_only),
                     trainable_only ? "trainable parameters" : "parameters", function, "to", alpha);
        if constexpr (requires {
                          { from.buffers() } -> std::convertible_to<std::vector<torch::Tensor>>;
                          { to.buffers() } -> std::convertible_to<std::vector<torch::Tensor>>;
                      })
            if (!trainable_only && alpha == 1.0) copy_tensors(from.buffers(), to.buffers(), "buffers", function);
    }
};

// ---- What a trainer takes ------------------------------------------------------------------

/// Marks a trainer without a critic (critic-free estimators: GRPO, RLOO, REINFORCE++, ...).
struct no_critic {};

/// Marks a trainer without a reference model (no KL term).
struct no_reference {};

/// A policy that also gives next-token logits over a token batch, for PTX:
/// `policy.lm_logits(input_ids, attention_mask)` → `[B, S, V]`, position `p` predicting token `p + 1`.
template <class P>
concept LanguageModelPolicy = requires(P& policy, const torch::Tensor& input_ids, const torch::Tensor& mask) {
    { policy.lm_logits(input_ids, mask) } -> std::convertible_to<torch::Tensor>;
};

/// A policy the trainer can optimise: a `Policy` whose parameters it can list (for the EMA and
/// checkpoints).
template <class P>
concept TrainablePolicy = Policy<P> && HasParameters<P>;

/// `no_critic`, or a `Critic` whose parameters the trainer can list (checkpoints).
template <class C>
concept CriticOrNone = std::same_as<C, no_critic> ||(Critic<C>&& HasParameters<C>);

/// `no_reference`, or a `ReferenceModel`.
template <class R>
concept ReferenceOrNone = std::same_as<R, no_reference> || ReferenceModel<R>;

/// The loss kernels a trainer needs (rlhf/libtorch/kernel_concepts.hpp): the library's
/// `default_kernels` (by device: the CPU kernels, the CUDA kernels once rlhf/cuda/libtorch.cuh is
/// in the program, else torch ops) or `torch_ops_kernels`, or a user's kernel type.
template <class K>
concept TrainerKernels = libtorch::PolicyLossKernel<K> && libtorch::ValueLossKernel<K> && libtorch::KlLossKernel<K>;

/// The models of a trainer (non-owning; they must outlive it). Designated initialisers:
/// `rlhf::ppo::trainer_models{.policy = &policy, .reward_model = &rm, .critic = &critic, .reference = &ref}`;
/// leave `.critic` out for a critic-free estimator, `.reference` out for no KL.
template <class P, class R, class C = no_critic, class Ref = no_reference>
struct trainer_models {
    P* policy = nullptr;
    R* reward_model = nullptr;
    C* critic = nullptr;
    Ref* reference = nullptr;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
