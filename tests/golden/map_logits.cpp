// Golden mappers: see mapping.hpp.
#include "mapping.hpp"

namespace rlhf_golden {

void register_logits_mappers(mapper_registry& /*registry*/) {}

}  // namespace rlhf_golden
