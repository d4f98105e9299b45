// Quick start: one batch through the advantage pipelines of three frameworks, on plain buffers.
//
// Two responses of a toy policy (right-padded), their log-probs under the policy and the
// reference model, a critic's values and a reward-model score per response. Each preset shapes
// per-token rewards (KL penalty plus the score at that framework's slot), runs GAE with that
// framework's masking, and whitens the advantages the way it does.
#include <rlhf/rlhf.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr rlhf::index_t rows = 2, cols = 5;

void print_row(const char* label, const std::vector<double>& values, rlhf::index_t row) {
    std::printf("    %-11s", label);
    for (rlhf::index_t t = 0; t < cols; ++t) std::printf(" %8.4f", values[static_cast<std::size_t>(row * cols + t)]);
    std::printf("\n");
}

}  // namespace

int main() {
    const std::vector<double> log_probs{-0.9, -1.2, -0.4, -2.0, -0.7, -1.1, -0.3, -0.8, 0.0, 0.0};
    const std::vector<double> ref_log_probs{-1.0, -1.0, -0.5, -1.8, -0.9, -1.3, -0.4, -0.6, 0.0, 0.0};
    const std::vector<double> values{0.3, 0.4, 0.2, 0.1, 0.5, -0.2, 0.0, 0.1, 0.0, 0.0};
    const std::vector<std::uint8_t> mask{1, 1, 1, 1, 1, 1, 1, 1, 0, 0};  // the second response has 3 tokens
    const std::vector<double> scores{1.5, -0.5};

    const auto view = [](const auto& data) { return rlhf::make_view(data.data(), rows, cols); };
    std::vector<double> rewards(rows * cols), advantages(rows * cols), returns(rows * cols);
    const auto out = [](std::vector<double>& data) { return rlhf::make_mut_view(data.data(), rows, cols); };

    std::printf("rlhf %s quick start: B = %td responses, T = %td tokens\n", rlhf::version_string, rows, cols);
    for (const auto& preset : {rlhf::presets::trl_v0_11(), rlhf::presets::deepspeed_chat(), rlhf::presets::verl()}) {
        rlhf::kl_controller controller = rlhf::make_kl_controller(preset.kl_control);
        rlhf::compute_advantages(view(log_probs), view(ref_log_probs), view(mask),
                                 rlhf::make_view(std::span<const double>(scores)), view(values), out(rewards),
                                 out(advantages), out(returns), preset, controller.value());
        std::printf("\n%s (KL coefficient %.3g)\n", preset.framework.data(), controller.value());
        for (rlhf::index_t b = 0; b < rows; ++b) {
            std::printf("  response %td\n", b);
            print_row("rewards", rewards, b);
            print_row("advantages", advantages, b);
            print_row("returns", returns, b);
        }
    }

    // Bad input is an rlhf::error naming the argument, not a NaN three layers down.
    std::vector<std::uint8_t> empty_mask(rows * cols, 0);
    try {
        rlhf::compute_advantages(view(log_probs), view(ref_log_probs), view(empty_mask),
                                 rlhf::make_view(std::span<const double>(scores)), view(values), out(rewards),
                                 out(advantages), out(returns), rlhf::presets::trl_v0_11(), 0.2);
        return 1;
    } catch (const rlhf::error& e) {
        std::printf("\nan all-zero mask is refused:\n  %s\n", e.what());
    }
    return 0;
}
