// Must NOT compile: the model's generate() takes no generation options. The ctest
// ppo.compile_fail.policy checks that the diagnostic names the concept rlhf::ppo::Policy.
#include "rlhf/ppo/concepts.hpp"

namespace {

struct policy_without_options {
    rlhf::ppo::rollout generate(const rlhf::ppo::prompt_batch& prompts);
    torch::Tensor log_probs(const rlhf::ppo::rollout& sequences);
};

template <rlhf::ppo::Policy P>
void train(P& policy) {
    (void)policy;
}

}  // namespace

void use_policy(policy_without_options& policy) {
    train(policy);
}
