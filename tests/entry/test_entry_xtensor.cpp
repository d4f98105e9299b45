// The shared entry-point suite on xtensor containers.
#if __has_include(<xtensor/containers/xadapt.hpp>)
#include <xtensor/containers/xadapt.hpp>  // xtensor >= 0.26
#else
#include <xtensor/xadapt.hpp>
#endif

#include <algorithm>
#include <array>
#include <cstddef>

#include "entry/entry_suite.hpp"
#include "rlhf/xtensor.hpp"

namespace {

struct xtensor_containers {
    template <class E, std::size_t Rank>
    static xt::xtensor<E, Rank> filled(const std::vector<E>& data, std::array<std::size_t, Rank> shape) {
        auto out = xt::xtensor<E, Rank>::from_shape(shape);
        std::copy(data.begin(), data.end(), out.data());
        return out;
    }
    template <class E>
    static xt::xtensor<E, 2> matrix(const std::vector<E>& data, rlhf::index_t rows, rlhf::index_t cols) {
        return filled<E, 2>(data, {static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)});
    }
    template <class E>
    static xt::xtensor<E, 1> vector(const std::vector<E>& data) {
        return filled<E, 1>(data, {data.size()});
    }
    template <class E>
    static xt::xtensor<E, 3> cube(const std::vector<E>& data, rlhf::index_t b, rlhf::index_t t, rlhf::index_t v) {
        return filled<E, 3>(data,
                            {static_cast<std::size_t>(b), static_cast<std::size_t>(t), static_cast<std::size_t>(v)});
    }
    template <class E, class C>
    static std::vector<E> values(const C& c) {
        return std::vector<E>(c.data(), c.data() + c.size());
    }
    template <class E>
    static xt::xtensor<E, 2> none() {
        return xt::xtensor<E, 2>::from_shape({0, 0});
    }
};

}  // namespace

RLHF_ENTRY_SUITE(xtensor_containers)

TEST_CASE("entry points read xt::adapt of a caller's buffer" * doctest::test_suite("unit")) {
    std::vector<float> values{1, 2, 3, 4, 5, 6};
    const std::vector<std::uint8_t> mask{1, 1, 0, 1, 1, 1};
    const auto v = xt::adapt(values.data(), values.size(), xt::no_ownership(), std::array<std::size_t, 2>{2, 3});
    const auto m = xt::adapt(mask.data(), mask.size(), xt::no_ownership(), std::array<std::size_t, 2>{2, 3});
    const double mean = rlhf::masked_mean(v, m);
    CHECK(mean == doctest::Approx((1 + 2 + 4 + 5 + 6) / 5.0));
}
