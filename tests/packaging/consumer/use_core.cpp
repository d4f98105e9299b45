// A malformed argument to a core check raises rlhf::error naming the argument.
#include <rlhf/rlhf.hpp>

#include <cstdio>
#include <string>
#include <vector>

int main() {
    std::vector<double> a(6), b(4);
    try {
        rlhf::check_same_shape("consumer", "values", rlhf::make_view(b.data(), 2, 2), "rewards",
                               rlhf::make_view(a.data(), 2, 3));
    } catch (const rlhf::error& e) {
        std::printf("%s (rlhf %s)\n", e.what(), rlhf::version_string);
        return e.argument() == "values" ? 0 : 1;
    }
    return 1;
}
