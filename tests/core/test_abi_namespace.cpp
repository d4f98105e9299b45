#include <doctest/doctest.h>

#include <string>
#include <type_traits>
#include <typeinfo>

#include "rlhf/rlhf.hpp"

#define RLHF_TEST_STRINGIFY_(x) #x
#define RLHF_TEST_STRINGIFY(x) RLHF_TEST_STRINGIFY_(x)

// The declarations live in the inline namespace rlhf::RLHF_ABI_NAMESPACE (rlhf::v0_1): a name
// resolves through it and through rlhf alike, to the same entity. Without `inline` the plain
// rlhf:: names would not exist, and without the namespace the qualified ones would not.
static_assert(std::is_same_v<rlhf::RLHF_ABI_NAMESPACE::view<float>, rlhf::view<float>>);
static_assert(std::is_same_v<rlhf::RLHF_ABI_NAMESPACE::error, rlhf::error>);
static_assert(std::is_same_v<rlhf::RLHF_ABI_NAMESPACE::gae_options, rlhf::gae_options>);
static_assert(std::is_same_v<rlhf::RLHF_ABI_NAMESPACE::kl_estimator, rlhf::kl_estimator>);

TEST_CASE("the library's declarations are in the inline ABI namespace" * doctest::test_suite("unit")) {
    CHECK(&rlhf::RLHF_ABI_NAMESPACE::version_string == &rlhf::version_string);
    CHECK(rlhf::RLHF_ABI_NAMESPACE::to_string(rlhf::kl_estimator::k3) == "k3");
    // The namespace is part of the mangled names, which is what keeps two versions apart.
    const std::string mangled = typeid(rlhf::gae_options).name();
    CHECK(mangled.find(RLHF_TEST_STRINGIFY(RLHF_ABI_NAMESPACE)) != std::string::npos);
}
