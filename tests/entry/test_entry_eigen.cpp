// The shared entry-point suite on Eigen matrices, and the layouts only Eigen has.
#include "entry/entry_suite.hpp"
#include "rlhf/eigen.hpp"

namespace {

struct eigen_containers {
    template <class E>
    static rlhf::eigen::row_matrix<E> matrix(const std::vector<E>& data, rlhf::index_t rows, rlhf::index_t cols) {
        return Eigen::Map<const rlhf::eigen::row_matrix<E>>(data.data(), rows, cols);
    }
    template <class E>
    static rlhf::eigen::vector<E> vector(const std::vector<E>& data) {
        return Eigen::Map<const rlhf::eigen::vector<E>>(data.data(), static_cast<Eigen::Index>(data.size()));
    }
    /// `[B, T, V]` as the `[B·T, V]` matrix Eigen entry points read.
    template <class E>
    static rlhf::eigen::row_matrix<E> cube(const std::vector<E>& data, rlhf::index_t b, rlhf::index_t t,
                                           rlhf::index_t v) {
        return matrix(data, b * t, v);
    }
    template <class E, class C>
    static std::vector<E> values(const C& c) {
        return std::vector<E>(c.data(), c.data() + c.size());
    }
    template <class E>
    static rlhf::eigen::row_matrix<E> none() {
        return {};
    }
};

}  // namespace

RLHF_ENTRY_SUITE(eigen_containers)

TEST_CASE("entry points read Eigen blocks and transposed column-major matrices without a copy" *
          doctest::test_suite("unit")) {
    // [B, P + T] sequences: the response columns are a block with an outer stride.
    rlhf::eigen::row_matrix<double> sequence(2, 5);
    sequence << 9, 1, 2, 3, 4, 9, 5, 6, 7, 8;
    const rlhf::eigen::row_matrix<double> response = sequence.rightCols(4);
    const rlhf::eigen::row_matrix<double> mask = rlhf::eigen::row_matrix<double>::Ones(2, 4);
    const auto from_block = rlhf::masked_whiten(sequence.rightCols(4), mask);
    CHECK(from_block == rlhf::masked_whiten(response, mask));
    // A column-major [T, B] matrix is the row-major [B, T] one through .transpose().
    const Eigen::MatrixXd time_major = response.transpose();
    CHECK(rlhf::masked_whiten(time_major.transpose(), mask) == from_block);
}
