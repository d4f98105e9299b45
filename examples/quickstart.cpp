// Quick start: views over plain buffers and the errors that guard every kernel.
#include <rlhf/rlhf.hpp>

#include <cstdio>
#include <vector>

int main() {
    std::vector<float> rewards{0, 0, 1, 0, 0, 0, 0, 0};
    std::vector<float> values{0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    const auto rewards_view = rlhf::make_view(rewards.data(), 2, 4);
    const auto values_view = rlhf::make_view(values.data(), 2, 3);
    std::printf("rlhf %s: rewards %s, values %s\n", rlhf::version_string,
                rlhf::shape_string(rewards_view.extents()).c_str(), rlhf::shape_string(values_view.extents()).c_str());
    try {
        rlhf::check_same_shape("quickstart", "values", values_view, "rewards", rewards_view);
    } catch (const rlhf::error& e) {
        std::printf("rejected: %s\n", e.what());
        return 0;
    }
    return 1;
}
