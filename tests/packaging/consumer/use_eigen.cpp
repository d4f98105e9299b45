#include <rlhf/eigen.hpp>

int main() {
    const rlhf::eigen::row_matrix<float> m = rlhf::eigen::row_matrix<float>::Constant(2, 3, 2.0f);
    return rlhf::eigen::as_view(m, "consumer", "m")(1, 2) == 2.0f ? 0 : 1;
}
