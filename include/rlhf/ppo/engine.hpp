#pragma once
/// @file
/// A ChatLearn-style engine: user flows over the models, composed into a learning loop.
///
/// - the **environment** flow makes the data of an episode: `environment(episode)` → `D`
///   (a rollout with its experience, say);
/// - the **trainer** flow learns from it: `trainer(D&&, episode)` → `Result` (metrics);
/// - the **evaluator** flow (optional) runs every `eval_every` episodes: `evaluator(episode)` →
///   `std::map<std::string, double>`;
/// - **parameter syncs** copy the weights of a trainer model into an inference model after every
///   trainer flow (and once before the first episode): any `ParameterSync`, by default
///   `copy_parameters`.
///
/// `engine::learn(n)` runs n episodes and returns their results. The PPO trainer is one such
/// composition: `make_ppo_engine` wires `ppo_trainer::make_experience` as the environment
/// (generating with an inference copy of the policy, kept in sync with the trained one) and
/// `ppo_trainer::train` as the trainer.
/// @note ChatLearn `chatlearn/runtime/engine.py` (`Engine(environment, trainer, evaluator)`,
/// `set_parameter_sync`, `learn`), `chatlearn/algorithm/grpo.py` (`GRPOEngine`: the policy
/// generates, the policy trainer gives the old log-probs, policy_trainer → policy sync).

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/ppo/concepts.hpp"
#include "rlhf/ppo/experience.hpp"
#include "rlhf/ppo/trainer.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

/// An environment flow: `environment(episode)` returns the episode's data.
template <class E>
concept EnvironmentFlow = requires(E& environment, std::int64_t episode) {
    {environment(episode)};
    requires !std::is_void_v<decltype(environment(episode))>;
};

/// A trainer flow over the data `D` of an environment: `trainer(std::move(data), episode)`.
template <class T, class D>
concept TrainerFlow = requires(T& trainer, D&& data, std::int64_t episode) {
    {trainer(std::forward<D>(data), episode)};
};

/// An evaluator flow: `evaluator(episode)` → named results.
template <class V>
concept EvaluatorFlow = requires(V& evaluator, std::int64_t episode) {
    { evaluator(episode) } -> std::convertible_to<std::map<std::string, double>>;
};

/// The absent evaluator.
struct no_evaluator {
    std::map<std::string, double> operator()(std::int64_t /*episode*/) const { return {}; }
};

/// Options of an `engine`.
struct engine_options {
    std::int64_t eval_every = 0;    ///< run the evaluator after every N-th episode (0: never)
    bool sync_before_first = true;  ///< run the parameter syncs once before the first episode
};

/// What one episode of `engine::learn` produced.
template <class Result>
struct episode_result {
    std::int64_t episode = 0;            ///< 0-based, counted over every `learn` call
    Result result{};                     ///< what the trainer flow returned
    std::map<std::string, double> eval;  ///< the evaluator's results (empty when not due)
    double environment_seconds = 0.0;
    double trainer_seconds = 0.0;
    double sync_seconds = 0.0;
};

/// Composes an environment, a trainer and an evaluator flow with parameter syncs (see the file
/// comment). The flows are held by value (wrap a model in a lambda capturing it by reference).
template <EnvironmentFlow Environment, class Trainer, EvaluatorFlow Evaluator = no_evaluator>
requires TrainerFlow<Trainer, std::invoke_result_t<Environment&, std::int64_t>>
class engine {
public:
    using data_type = std::invoke_result_t<Environment&, std::int64_t>;
    using result_type = std::decay_t<std::invoke_result_t<Trainer&, data_type&&, std::int64_t>>;
    using callback = std::function<void(const episode_result<result_type>&)>;

    engine(Environment environment, Trainer trainer, Evaluator evaluator = {}, engine_options options = {})
        : environment_(std::move(environment)),
          trainer_(std::move(trainer)),
          evaluator_(std::move(evaluator)),
          options_(options) {
        check_non_negative("rlhf::ppo::engine", "eval_every", options.eval_every);
    }

    /// Registers a sync of `from` (a trainer model) into `to` (an inference model), run after
    /// every trainer flow (`ParameterSync`; `copy_parameters` by default). Both must outlive the
    /// engine.
    template <class From, class To, class Sync = copy_parameters>
    requires ParameterSync<Sync, From, To>
    void set_parameter_sync(From& from, To& to, Sync sync = Sync{}) {
        syncs_.push_back([&from, &to, s = std::move(sync)]() mutable { sync_parameters(s, from, to); });
    }

    /// Runs every registered sync now.
    void sync_parameters_now() {
        for (auto& sync : syncs_) sync();
    }

    /// Adds a callback that receives every episode's result.
    void add_callback(callback c) { callbacks_.push_back(std::move(c)); }

    /// Runs `episodes` episodes (>= 0): environment, trainer, syncs, evaluator when due,
    /// callbacks. Errors: `episodes < 0` (kind config, `episodes`); whatever a flow throws.
    std::vector<episode_result<result_type>> learn(std::int64_t episodes) {
        check_non_negative("rlhf::ppo::engine::learn", "episodes", episodes);
        using clock = std::chrono::steady_clock;
        const auto seconds = [](clock::time_point start) {
            return std::chrono::duration<double>(clock::now() - start).count();
        };
        std::vector<episode_result<result_type>> results;
        results.reserve(static_cast<std::size_t>(episodes));
        if (options_.sync_before_first && episode_ == 0) sync_parameters_now();
        for (std::int64_t i = 0; i < episodes; ++i) {
            episode_result<result_type> r;
            r.episode = episode_;
            auto start = clock::now();
            data_type data = environment_(episode_);
            r.environment_seconds = seconds(start);
            start = clock::now();
            r.result = trainer_(std::move(data), episode_);
            r.trainer_seconds = seconds(start);
            start = clock::now();
            sync_parameters_now();
            r.sync_seconds = seconds(start);
            ++episode_;
            if (options_.eval_every > 0 && episode_ % options_.eval_every == 0) r.eval = evaluator_(episode_);
            for (const auto& c : callbacks_) c(r);
            results.push_back(std::move(r));
        }
        return results;
    }

    /// Episodes run so far.
    [[nodiscard]] std::int64_t episodes() const noexcept { return episode_; }

private:
    Environment environment_;
    Trainer trainer_;
    Evaluator evaluator_;
    engine_options options_;
    std::vector<std::function<void()>> syncs_;
    std::vector<callback> callbacks_;
    std::int64_t episode_ = 0;
};

/// The PPO trainer as an engine: the environment flow asks `trainer` for the step's rollout
/// request (`prepare_rollout(prompts(episode))`), generates with `generator` (an inference copy
/// of the policy) and builds the experience with the trainer's models (`make_experience`); the
/// trainer flow is `ppo_trainer::train`; `trainer.policy()` is synced into `generator` (with
/// `sync`, `copy_parameters` by default) before the first episode and after every step.
/// `prompts(episode)` → `prompt_batch`. With a `generator` in sync this reproduces
/// `trainer.step(prompts(episode))` exactly.
template <class Trainer, class Prompts, Policy Generator, class Evaluator = no_evaluator, class Sync = copy_parameters>
requires std::is_invocable_r_v<prompt_batch, Prompts&, std::int64_t>
[[nodiscard]] auto make_ppo_engine(Trainer& trainer, Prompts prompts, Generator& generator, Evaluator evaluator = {},
                                   engine_options options = {}, Sync sync = Sync{}) {
    auto environment = [&trainer, &generator, prompts = std::move(prompts)](std::int64_t episode) mutable {
        const rollout_request request = trainer.prepare_rollout(prompts(episode));
        rollout generated;
        {
            const torch::NoGradGuard no_grad;
            generated = generator.generate(request.prompts, request.generation);
        }
        return trainer.make_experience(request, generated);
    };
    auto train = [&trainer](step_experience&& data, std::int64_t /*episode*/) {
        return trainer.train(std::move(data));
    };
    engine<decltype(environment), decltype(train), Evaluator> result(std::move(environment), std::move(train),
                                                                     std::move(evaluator), options);
    result.set_parameter_sync(trainer.policy(), generator, std::move(sync));
    return result;
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
