#include <rlhf/libtorch.hpp>

int main() {
    const torch::Tensor t = torch::ones({2, 3}, torch::kFloat64);
    return rlhf::libtorch::as_view<double>(t, "consumer", "t")(1, 2) == 1.0 ? 0 : 1;
}
