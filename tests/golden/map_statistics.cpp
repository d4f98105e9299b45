// Golden mappers: see mapping.hpp. Family: masked statistics, whitening, running moments.
//
//   trl_v0114__core_masked_stats        trl/core.py masked_mean/masked_var/masked_whiten/whiten
//   trl_head__ppo_masked_stats          trl/experimental/ppo/ppo_trainer.py (same API)
//   verl__torch_functional_masked_stats verl/utils/torch_functional.py (count + 1e-8 in means)
//   openrlhf__policy_value_aggregate    openrlhf/models/utils.py masked_normalize(dim=1)
//   trl_v0114__kl_controllers_running_moments  trl/trainer/utils.py RunningMoments
//
// Where the peer returns NaN for an input the library refuses by design (one valid element
// under the unbiased variance: TRL), the mapper checks that the library raises an rlhf::error
// (kind value, argument mask or values) and reports the output as refused: the runner counts the
// documented correspondence "peer NaN <-> library error" apart from matches.

#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "mapping.hpp"
#include "rlhf/kernels/masked_stats.hpp"

namespace rlhf_golden {
namespace {

using rlhf::index_t;

rlhf::view<std::uint8_t> mask_view(const std::vector<std::uint8_t>& bytes, const tensor& like) {
    const auto v = like.matrix();
    return rlhf::make_view(bytes.data(), v.extent(0), v.extent(1));
}

/// Runs `compute` into `out[name]`. If the library raises where the peer produced only
/// non-finite numbers, verifies the error is the documented small-sample refusal and reports the
/// output as refused; any other error propagates (an expected-error case, or a real failure).
template <class Compute>
void produce(const golden_case& c, mapped_outputs& out, const std::string& name, Compute&& compute) {
    try {
        out.outputs[name] = compute();
    } catch (const rlhf::error& e) {
        const auto expected = c.outputs.find(name);
        if (c.error || expected == c.outputs.end() || !all_non_finite(expected->second)) throw;
        if (e.kind() != rlhf::error_kind::value || (e.argument() != "mask" && e.argument() != "values"))
            throw std::runtime_error("golden: unexpected rlhf::error for a peer NaN: " + std::string(e.what()));
        out.refused_non_finite.push_back(name);  // peer NaN <-> library error (checked above)
    }
}

tensor whiten_tensor(const tensor& values, const std::vector<std::uint8_t>& mask, const rlhf::whiten_options& options) {
    const auto v = values.matrix();
    tensor out = tensor::zeros({v.extent(0), v.extent(1)});
    rlhf::masked_whiten(v, mask_view(mask, values), out.mut_matrix(), options);
    return out;
}

tensor whiten_unmasked_tensor(const tensor& values, const rlhf::whiten_options& options) {
    const auto v = values.matrix();
    tensor out = tensor::zeros({v.extent(0), v.extent(1)});
    rlhf::whiten(v, out.mut_matrix(), options);
    return out;
}

tensor per_row_mean(const tensor& values, const std::vector<std::uint8_t>& mask, const rlhf::moments_options& options) {
    const auto v = values.matrix();
    std::vector<double> means(static_cast<std::size_t>(v.extent(0)));
    rlhf::masked_mean_per_row(v, mask_view(mask, values), rlhf::make_mut_view(std::span<double>(means)), options);
    return {std::move(means), {v.extent(0)}};
}

/// Per-row mean computed one row at a time: TRL's masked_mean(axis=1) is 0/0 = NaN on an empty
/// row, where the library refuses that row (policy raise, kind value, argument mask). A refused
/// row must be non-finite at the peer; it is written as NaN (compared NaN == NaN) and the output
/// is reported as refused; the other rows are compared as usual.
void produce_per_row_mean(const golden_case& c, mapped_outputs& out, const std::string& name, const tensor& values,
                          const std::vector<std::uint8_t>& mask, const rlhf::moments_options& options) {
    const auto v = values.matrix();
    const index_t rows = v.extent(0), cols = v.extent(1);
    const auto expected = c.outputs.find(name);
    std::vector<double> means(static_cast<std::size_t>(rows));
    bool refused = false;
    for (index_t b = 0; b < rows; ++b) {
        const auto offset = static_cast<std::size_t>(b * cols);
        const auto row = rlhf::make_view(values.data.data() + offset, 1, cols);
        const auto row_mask = rlhf::make_view(mask.data() + offset, 1, cols);
        try {
            rlhf::masked_mean_per_row(
                row, row_mask, rlhf::make_mut_view(std::span<double>(&means[static_cast<std::size_t>(b)], 1)), options);
        } catch (const rlhf::error& e) {
            if (c.error || expected == c.outputs.end() || expected->second.data.size() != means.size() ||
                std::isfinite(expected->second.data[static_cast<std::size_t>(b)]))
                throw;
            if (e.kind() != rlhf::error_kind::value || e.argument() != "mask")
                throw std::runtime_error("golden: unexpected rlhf::error for a peer NaN row: " + std::string(e.what()));
            means[static_cast<std::size_t>(b)] = std::nan("");
            refused = true;
        }
    }
    out.outputs[name] = tensor{std::move(means), {rows}};
    if (refused) out.refused_non_finite.push_back(name);
}

// TRL v0.11.4 trl/core.py: masked_mean, masked_mean(axis=1), masked_var(unbiased),
// masked_whiten(shift_mean), whiten(shift_mean). Unbiased variance, +1e-8 inside rsqrt.
std::optional<mapped_outputs> map_trl_core(const golden_file& /*file*/, const golden_case& c) {
    const bool stats = c.has_param("unbiased");
    const bool whitening = c.has_param("shift_mean");
    if (!stats && !whitening) return std::nullopt;  // entropy / log-probs: the logits family
    const tensor values = c.input("values");
    const auto mask = mask_bytes(c.input("mask"));
    const auto v = values.matrix();
    const auto m = mask_view(mask, values);
    mapped_outputs out;
    if (stats) {
        const rlhf::moments_options options{.variance = c.param<bool>("unbiased") ? rlhf::variance_estimator::unbiased
                                                                                  : rlhf::variance_estimator::biased};
        produce(c, out, "masked_mean", [&] { return tensor::of_scalar(rlhf::masked_mean(v, m, options)); });
        produce_per_row_mean(c, out, "masked_mean_axis1", values, mask, options);
        produce(c, out, "masked_var", [&] { return tensor::of_scalar(rlhf::masked_variance(v, m, options)); });
    } else {
        const rlhf::whiten_options options{.shift_mean = c.param<bool>("shift_mean")};
        produce(c, out, "masked_whiten", [&] { return whiten_tensor(values, mask, options); });
        produce(c, out, "whiten_unmasked", [&] { return whiten_unmasked_tensor(values, options); });
    }
    return out;
}

// TRL HEAD trl/experimental/ppo/ppo_trainer.py: the same functions, masked_var unbiased.
std::optional<mapped_outputs> map_trl_head(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("shift_mean")) return std::nullopt;
    const tensor values = c.input("values");
    const auto mask = mask_bytes(c.input("mask"));
    const auto v = values.matrix();
    const auto m = mask_view(mask, values);
    mapped_outputs out;
    produce(c, out, "masked_mean", [&] { return tensor::of_scalar(rlhf::masked_mean(v, m)); });
    produce(c, out, "masked_var", [&] { return tensor::of_scalar(rlhf::masked_variance(v, m)); });
    const rlhf::whiten_options options{.shift_mean = c.param<bool>("shift_mean")};
    produce(c, out, "masked_whiten", [&] { return whiten_tensor(values, mask, options); });
    return out;
}

// verl verl/utils/torch_functional.py: masked_sum, masked_mean = sum / (Σm + 1e-8) (also per row
// on the last axis), masked_var (unbiased, raises for Σm in {0, 1}), masked_whiten.
std::optional<mapped_outputs> map_verl(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_param("shift_mean")) return std::nullopt;
    const tensor values = c.input("values");
    const auto mask = mask_bytes(c.input("mask"));
    const auto v = values.matrix();
    const auto m = mask_view(mask, values);
    // verl's means never raise (an empty mask gives 0 / 1e-8 = 0): zero_variance reproduces that.
    const rlhf::moments_options mean_options{.small_sample = rlhf::small_sample_policy::zero_variance,
                                             .count_epsilon = 1e-8};
    const rlhf::moments_options var_options{.count_epsilon = 1e-8};
    mapped_outputs out;
    produce(c, out, "masked_sum", [&] {
        return tensor::of_scalar(
            rlhf::compute_masked_moments(v, m, {.small_sample = rlhf::small_sample_policy::zero_variance}).sum);
    });
    produce(c, out, "masked_mean", [&] { return tensor::of_scalar(rlhf::masked_mean(v, m, mean_options)); });
    produce(c, out, "masked_mean_axis_last", [&] { return per_row_mean(values, mask, mean_options); });
    produce(c, out, "masked_var", [&] { return tensor::of_scalar(rlhf::masked_variance(v, m, var_options)); });
    const rlhf::whiten_options options{.shift_mean = c.param<bool>("shift_mean"), .count_epsilon = 1e-8};
    produce(c, out, "masked_whiten", [&] { return whiten_tensor(values, mask, options); });
    return out;
}

// OpenRLHF openrlhf/models/utils.py masked_normalize(loss, loss_mask, dim=1): per row, biased
// variance, rsqrt(clamp(var, 1e-8)), zeros at masked positions and in empty rows. (The
// aggregate_loss output of the same cases is the loss family's, map_losses.cpp.)
std::optional<mapped_outputs> map_openrlhf(const golden_file& /*file*/, const golden_case& c) {
    if (c.outputs.count("masked_normalize_dim1") == 0) return std::nullopt;  // policy/value losses
    const tensor advantages = c.input("loss");  // the per-token matrix both functions reduce
    const auto mask = mask_bytes(c.input("loss_mask"));
    mapped_outputs out;
    const rlhf::whiten_options normalize{.variance = rlhf::variance_estimator::biased,
                                         .scope = rlhf::whiten_scope::per_row,
                                         .epsilon_mode = rlhf::whiten_epsilon::clamp_variance,
                                         .small_sample = rlhf::small_sample_policy::zero_variance,
                                         .zero_masked = true};
    produce(c, out, "masked_normalize_dim1", [&] { return whiten_tensor(advantages, mask, normalize); });
    return out;
}

// TRL v0.11.4 trl/trainer/utils.py RunningMoments: a sequence of update(batch) calls; after each,
// the returned (batch mean, batch unbiased std) and the state (mean, std, var, count). Reported as
// "steps.<i>.<field>" (and "steps.<i>.returned_batch_mean_std"). TRL computes in float32.
std::optional<mapped_outputs> map_running_moments(const golden_file& /*file*/, const golden_case& c) {
    if (!c.has_input("batches")) return std::nullopt;  // KL controllers: the rewards family
    const json& batches = c.inputs->at("batches");
    rlhf::running_moments running(
        rlhf::running_moments_options{.small_sample = rlhf::small_sample_policy::zero_variance});
    mapped_outputs out;
    out.relative_tolerance = 2e-6;  // float32 peer
    const json* steps = c.raw_outputs.contains("steps") ? &c.raw_outputs.at("steps") : nullptr;
    std::size_t i = 0;
    for (const json& batch : batches) {
        std::vector<double> xs;
        for (const json& x : batch) xs.push_back(parse_number(x));
        const rlhf::view<double, 1> view{xs.data(), {static_cast<index_t>(xs.size())}};
        // The default policy refuses a single-element batch before touching the state ...
        rlhf::running_moments strict(running.state());
        bool refused = false;
        try {
            (void)strict.update(view);
        } catch (const rlhf::error& e) {
            if (e.kind() != rlhf::error_kind::value || e.argument() != "values") throw;
            refused = true;
        }
        // ... and zero_variance continues the stream (the state update is defined).
        const rlhf::batch_moments returned = running.update(view);
        const std::string prefix = "steps." + std::to_string(i) + ".";
        if (refused) {
            // peer NaN <-> library error: the peer's returned std must be non-finite.
            const double peer = steps != nullptr && steps->size() > i
                                    ? parse_number(steps->at(i).at("returned_batch_mean_std").at(1))
                                    : 0.0;
            if (std::isfinite(peer)) throw std::runtime_error("golden: the library refused a batch the peer accepted");
            out.refused_non_finite.push_back(prefix + "returned_batch_mean_std");
        } else {
            out.outputs[prefix + "returned_batch_mean_std"] = {{returned.mean, returned.std}, {2}};
        }
        out.outputs[prefix + "mean"] = tensor::of_scalar(running.mean());
        // TRL's state std divides by (count - 1) with count = 1e-24 + n: a first batch of one element
        // gives x / 0 = inf; the library's policy defines 0 there (raise would refuse).
        const double peer_std = steps != nullptr && steps->size() > i ? parse_number(steps->at(i).at("std")) : 0.0;
        if (running.count() <= 1.0 && !std::isfinite(peer_std)) {
            out.refused_non_finite.push_back(prefix + "std");
        } else {
            out.outputs[prefix + "std"] = tensor::of_scalar(running.std());
        }
        out.outputs[prefix + "var"] = tensor::of_scalar(running.var());
        out.outputs[prefix + "count"] = tensor::of_scalar(running.count());
        ++i;
    }
    return out;
}

}  // namespace

void register_statistics_mappers(mapper_registry& registry) {
    registry["trl_v0114__core_masked_stats"].push_back(map_trl_core);
    registry["trl_head__ppo_masked_stats"].push_back(map_trl_head);
    registry["verl__torch_functional_masked_stats"].push_back(map_verl);
    registry["openrlhf__policy_value_aggregate"].push_back(map_openrlhf);
    registry["trl_v0114__kl_controllers_running_moments"].push_back(map_running_moments);
}

}  // namespace rlhf_golden
