#include <dlfcn.h>
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "rlhf/libtorch.hpp"
#include "support/test_helpers.hpp"

TEST_CASE("libtorch::as_view maps a CPU tensor without copying" * doctest::test_suite("unit")) {
    const torch::Tensor t = torch::arange(12, torch::kFloat64).reshape({3, 4});
    const auto v = rlhf::libtorch::as_view<double>(t, "f", "x");
    CHECK(v.data() == t.data_ptr<double>());
    CHECK(v.extent(0) == 3);
    CHECK(v(2, 1) == 9.0);
    // A column range of a wider tensor keeps its row stride.
    const torch::Tensor response = t.slice(1, 1, 4);
    const auto r = rlhf::libtorch::as_view<double>(response, "f", "response");
    CHECK(r.stride(0) == 4);
    CHECK(r(1, 0) == 5.0);
    const torch::Tensor out = torch::zeros({2, 2}, torch::kFloat32);
    rlhf::libtorch::as_mut_view<float>(out, "f", "out")(1, 1) = 3.0f;
    CHECK(out[1][1].item<float>() == 3.0f);
}

TEST_CASE("libtorch::as_view rejects wrong dtype / rank / device / layout" * doctest::test_suite("unit")) {
    const torch::Tensor t = torch::zeros({2, 3}, torch::kFloat32);
    auto e = rlhf_test::expect_error([&] { (void)rlhf::libtorch::as_view<double>(t, "rlhf::g", "values"); });
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(std::string(e.what()) == "rlhf::g: argument 'values': expected dtype float64, got float32");
    e = rlhf_test::expect_error([&] { (void)rlhf::libtorch::as_view<float, 3>(t, "rlhf::g", "logits"); });
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.actual() == "2 dimensions [2, 3]");
    e = rlhf_test::expect_error([&] { (void)rlhf::libtorch::as_view<float>(t.t(), "rlhf::g", "mask"); });
    CHECK(e.argument() == "mask");
    CHECK(e.expected() == "innermost stride 1 (call .contiguous())");
    const torch::Tensor meta = torch::empty({2, 3}, torch::TensorOptions().dtype(torch::kFloat32).device(torch::kMeta));
    e = rlhf_test::expect_error([&] { (void)rlhf::libtorch::as_view<float>(meta, "rlhf::g", "logp"); });
    CHECK(e.kind() == rlhf::error_kind::device);
    CHECK(e.actual() == "meta");
    CHECK_THROWS_AS((void)rlhf::libtorch::as_view<float>(torch::Tensor(), "rlhf::g", "x"), rlhf::error);
}

TEST_CASE("libtorch::checked_mask validates once and returns the bool mask every call accepts unscanned" *
          doctest::test_suite("unit")) {
    const torch::Tensor mask = torch::tensor({1, 1, 0, 1, 0, 0}, torch::kInt64).reshape({2, 3});
    const torch::Tensor checked = rlhf::libtorch::checked_mask(mask);
    CHECK((checked.scalar_type() == torch::kBool));
    CHECK(torch::equal(checked, mask != 0));
    CHECK(rlhf::libtorch::checked_mask(checked).is_same(checked));  // bool: no copy, no scan
    const torch::Tensor values = torch::randn({2, 3}, torch::kFloat64);
    CHECK(rlhf::masked_mean(values, checked) == rlhf::masked_mean(values, mask));
    auto e =
        rlhf_test::check_error([&] { (void)rlhf::libtorch::checked_mask(mask * 2); }, rlhf::error_kind::value, "mask");
    CHECK(e.function() == "rlhf::libtorch::checked_mask");
    rlhf_test::check_error([&] { (void)rlhf::libtorch::checked_mask(mask.to(torch::kFloat16)); },
                           rlhf::error_kind::dtype, "mask");
    rlhf_test::check_error([&] { (void)rlhf::libtorch::checked_mask(torch::Tensor()); }, rlhf::error_kind::value,
                           "mask");
}

// LibTorch 2.x wheels export std::filesystem functions built against a newer libstdc++; a program
// whose calls bind to them crashes in remove_all (a null weak symbol on Debian 12). rlhf::libtorch
// names libstdc++ first on the link line, so the calls bind to the system's copies.
TEST_CASE("libtorch: a program linking rlhf::libtorch binds std::filesystem to the C++ library" *
          doctest::test_suite("unit")) {
#if defined(__GLIBCXX__)
    // The dynamic linker's choice for the program's own references: the first definition in
    // load order.
    void* const remove_all = dlsym(RTLD_DEFAULT, "_ZNSt10filesystem10remove_allERKNS_7__cxx114pathE");
    REQUIRE(remove_all != nullptr);
    Dl_info where{};
    REQUIRE(dladdr(remove_all, &where) != 0);
    CHECK(std::string(where.dli_fname).find("libstdc++") != std::string::npos);
#endif
    const std::filesystem::path root = std::filesystem::temp_directory_path() / "rlhf_test_remove_all";
    std::filesystem::create_directories(root / "nested" / "deeper");
    std::ofstream(root / "nested" / "file.bin") << "bytes";
    CHECK(std::filesystem::remove_all(root) == 4);
    CHECK_FALSE(std::filesystem::exists(root));
}
