// Writes a known events file for the read-back test (read_back.cmake): TensorBoard's own reader
// then checks these tags, steps and values (read_events.py).
//   rlhf_tensorboard_writer LOG_DIR
#include <cstdio>
#include <exception>
#include <limits>

#include "rlhf/ppo/tensorboard.hpp"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s LOG_DIR\n", argv[0]);
        return 2;
    }
    try {
        const rlhf::ppo::tensorboard_sink sink(argv[1]);
        for (int step = 1; step <= 4; ++step) {
            rlhf::ppo::step_metrics m;
            m.step = step;
            m.policy_loss = 1.0 / 3.0 * step;  // not exact in float: the check is to float precision
            m.kl = -0.125 * step;
            m.ratio_max = 0.0;  // a zero must still be written (simple_value has presence)
            // A non-finite metric is left out at its step.
            m.value_loss = step == 2 ? std::numeric_limits<double>::quiet_NaN() : 0.5;
            m.eval["accuracy"] = 0.25 * step;
            sink(m);
        }
        sink.add_scalar("custom/reward", 1e-3, 7);
        sink.add_text("samples", "**step 3**: `prompt` -> answer", 3);
        sink.add_text("samples", "unicode: \xc3\xa9t\xc3\xa9", 4);
        std::printf("%s\n", sink.path().string().c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "rlhf_tensorboard_writer: %s\n", e.what());
        return 1;
    }
    return 0;
}
