#include <rlhf/xtensor.hpp>

int main() {
    const xt::xtensor<double, 2> m = {{1, 2, 3}, {4, 5, 6}};
    return rlhf::xtensor::as_view(m, "consumer", "m")(1, 2) == 6.0 ? 0 : 1;
}
