#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "rlhf/version.hpp"

#define RLHF_TEST_STRINGIFY_(x) #x
#define RLHF_TEST_STRINGIFY(x) RLHF_TEST_STRINGIFY_(x)

TEST_CASE("the version string is the version macros and the CMake project version" * doctest::test_suite("unit")) {
    const std::string from_macros = std::to_string(RLHF_VERSION_MAJOR) + "." + std::to_string(RLHF_VERSION_MINOR) +
                                    "." + std::to_string(RLHF_VERSION_PATCH);
    CHECK(std::string(rlhf::version_string) == from_macros);
    CHECK(std::string(rlhf::version_string) == RLHF_TEST_PROJECT_VERSION);
}

TEST_CASE("the ABI namespace is v<major>_<minor>" * doctest::test_suite("unit")) {
    const std::string expected = "v" + std::to_string(RLHF_VERSION_MAJOR) + "_" + std::to_string(RLHF_VERSION_MINOR);
    CHECK(std::string_view(RLHF_TEST_STRINGIFY(RLHF_ABI_NAMESPACE)) == expected);
}
