#pragma once
// The examples' GPT (examples/common/gpt.hpp) at test size: about 7k parameters, initialised with
// a wide spread (std 0.3) so that a few sampled tokens already differ between rows. A
// `CausalDecoder` and every model concept of the PPO loop; runs in float32, float64 and bfloat16.
#include <cstdint>

#include "common/gpt.hpp"

namespace rlhf_test {

struct tiny_transformer_options {
    std::int64_t vocab = 16;
    std::int64_t width = 16;
    std::int64_t heads = 2;
    std::int64_t layers = 2;
    std::int64_t positions = 48;
    std::uint64_t seed = 0;
};

class tiny_transformer : public rlhf_examples::gpt {
public:
    explicit tiny_transformer(const tiny_transformer_options& o = {})
        : gpt({.vocab = o.vocab,
               .width = o.width,
               .heads = o.heads,
               .layers = o.layers,
               .positions = o.positions,
               .seed = o.seed,
               .init_std = 0.3}) {}
};

}  // namespace rlhf_test
