// The shared entry-point suite on LibTorch tensors.
#include "entry/entry_suite.hpp"
#include "rlhf/libtorch.hpp"

namespace {

struct torch_containers {
    template <class E>
    static torch::Tensor filled(const std::vector<E>& data, std::vector<int64_t> shape) {
        return torch::from_blob(const_cast<E*>(data.data()), shape,
                                torch::TensorOptions().dtype(rlhf::libtorch::dtype_of<E>()))
            .clone();
    }
    template <class E>
    static torch::Tensor matrix(const std::vector<E>& data, rlhf::index_t rows, rlhf::index_t cols) {
        return filled(data, {rows, cols});
    }
    template <class E>
    static torch::Tensor vector(const std::vector<E>& data) {
        return filled(data, {static_cast<int64_t>(data.size())});
    }
    template <class E>
    static torch::Tensor cube(const std::vector<E>& data, rlhf::index_t b, rlhf::index_t t, rlhf::index_t v) {
        return filled(data, {b, t, v});
    }
    template <class E>
    static std::vector<E> values(const torch::Tensor& t) {
        CHECK((t.scalar_type() == rlhf::libtorch::dtype_of<E>()));
        const torch::Tensor c = t.contiguous();
        return std::vector<E>(c.data_ptr<E>(), c.data_ptr<E>() + c.numel());
    }
    template <class E>
    static torch::Tensor none() {
        return {};
    }
};

}  // namespace

RLHF_ENTRY_SUITE(torch_containers)
