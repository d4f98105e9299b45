#pragma once
/// @file
/// Enums for every semantic on which the frameworks disagree, with their names.
/// `docs/semantics.md` says which framework each value reproduces.
///
/// Every enum `E` has `rlhf::to_string(E)` and `rlhf::parse_option<E>(text)`, which accepts the
/// names below (and the listed aliases the frameworks use) and otherwise throws `rlhf::error`.

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "rlhf/core/error.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// How GAE treats positions whose mask is 0.
enum class gae_masking {
    /// Values and rewards are multiplied by the mask, then the recursion runs over every position
    /// (TRL, OpenRLHF, ColossalChat v2). Correct for trailing padding only.
    zero_masked,
    /// Masked positions are transparent: the recursion carries the next value and advantage
    /// across them (verl, multi-turn observation tokens).
    skip_masked,
    /// The recursion runs over the valid range of each row; everything after it is zeroed
    /// (DeepSpeed-Chat).
    valid_range,
};

/// Variance (and standard deviation) estimator.
enum class variance_estimator {
    unbiased,  ///< divides by n - 1 (Bessel): TRL, verl, torch.std
    biased,    ///< divides by n (population): OpenRLHF, ChatLearn, numpy
};

/// Over which elements whitening statistics are taken.
enum class whiten_scope {
    per_row,    ///< one mean and variance per row
    per_batch,  ///< one mean and variance over every valid element of the batch
};

/// What a statistic does when it has too few valid elements (none for a mean; fewer than two
/// for an unbiased variance).
enum class small_sample_policy {
    raise,          ///< throw `rlhf::error` (verl)
    skip,           ///< leave the input unchanged (return it as is)
    zero_variance,  ///< treat the variance as 0 (the output becomes (x - mean) * rsqrt(eps))
};

/// Where a sequence-level score enters the per-token rewards.
enum class reward_slot {
    last_valid_token,   ///< the last position with mask 1 (TRL v0.11, OpenRLHF, verl)
    after_last_valid,   ///< position min(sum(mask), T - 1): one past the last valid token of a
                        ///< right-padded row, counted in tokens as DeepSpeed-Chat's `ends` is
    every_valid_token,  ///< added to every position before sum(mask) (ColossalChat v2)
    first_pad_slot,     ///< first position after the last valid one, or the last valid one if the
                        ///< row has no padding (current TRL PPO)
};

/// Per-token KL estimator between the policy (`lp`) and the reference (`ref`).
enum class kl_estimator {
    k1,   ///< lp - ref (aliases: kl)
    abs,  ///< |lp - ref|
    k2,   ///< (lp - ref)^2 / 2 (aliases: mse)
    k3,   ///< exp(ref - lp) - (ref - lp) - 1 (aliases: low_var_kl)
};

/// How per-token losses of a batch are reduced to one number.
enum class loss_aggregation {
    token_mean,               ///< sum(L*m) / sum(m)
    seq_mean_token_mean,      ///< mean over rows of sum_t(L*m) / sum_t(m)
    seq_mean_token_sum,       ///< mean over rows of sum_t(L*m)
    seq_mean_token_sum_norm,  ///< sum(L*m) / a constant (Dr.GRPO)
};

/// Critic-free or critic-based advantage estimator.
enum class advantage_estimator {
    gae,
    grpo,
    dr_grpo,
    rloo,
    reinforce_plus_plus,
    reinforce_plus_plus_baseline,
    remax,
    opo,
};

/// Which end of a row the padding goes to when ragged rows become a `[B, T]` matrix.
enum class padding_side {
    left,   ///< values end at the last column (decoder-only generation: prompts, ColossalChat's buffer)
    right,  ///< values start at column 0
};

/// Names an option enum: one table of {value, name} pairs, written in the enum's namespace
/// after the enum (it defines a function found by argument-dependent lookup):
///
///     RLHF_OPTION_NAMES(kl_estimator,
///                       {kl_estimator::k1, "k1"}, {kl_estimator::k3, "k3"},
///                       {kl_estimator::k3, "low_var_kl"})  // an alias: a value named again
///
/// The first name of a value is its canonical name (`to_string`); later names of the same value
/// are aliases a framework uses; `parse_option` accepts both. The enum's own name is the default
/// argument name in parse errors.
#define RLHF_OPTION_NAMES(E, ...)                                                                                     \
    constexpr auto rlhf_option_name_table(E) noexcept {                                                               \
        return ::rlhf::detail::make_option_table(#E,                                                                  \
                                                 ::std::to_array<::std::pair<E, ::std::string_view>>({__VA_ARGS__})); \
    }

namespace detail {

/// What `RLHF_OPTION_NAMES` returns: the enum's name and its {value, name} pairs.
template <class E, std::size_t N>
struct option_table {
    std::string_view type;
    std::array<std::pair<E, std::string_view>, N> entries;
};
template <class E, std::size_t N>
constexpr option_table<E, N> make_option_table(std::string_view type,
                                               const std::array<std::pair<E, std::string_view>, N>& entries) {
    return {type, entries};
}

/// Whether entry `i` names a value no earlier entry names (a canonical name, not an alias).
template <class E, std::size_t N>
constexpr bool first_name_of_value(const std::array<std::pair<E, std::string_view>, N>& entries, std::size_t i) {
    for (std::size_t j = 0; j < i; ++j)
        if (entries[j].first == entries[i].first) return false;
    return true;
}

/// The entries that are canonical names (`Canonical`) or aliases (`!Canonical`), in table order.
template <bool Canonical, std::size_t M, class E, std::size_t N>
constexpr std::array<std::pair<E, std::string_view>, M> select_names(
    const std::array<std::pair<E, std::string_view>, N>& entries) {
    std::array<std::pair<E, std::string_view>, M> out{};
    std::size_t k = 0;
    for (std::size_t i = 0; i < N; ++i)
        if (first_name_of_value(entries, i) == Canonical) out[k++] = entries[i];
    return out;
}

/// Whether two entries share a name (which would make parsing ambiguous).
template <class E, std::size_t N>
constexpr bool has_duplicate_name(const std::array<std::pair<E, std::string_view>, N>& entries) {
    for (std::size_t i = 0; i < N; ++i)
        for (std::size_t j = 0; j < i; ++j)
            if (entries[i].second == entries[j].second) return true;
    return false;
}

template <class E>
concept has_option_name_table = requires(E value) {
    rlhf_option_name_table(value);
};

}  // namespace detail

/// Name table of an option enum: `type` (the enum's name), `values` lists {value, canonical
/// name} and `aliases` the other names a framework uses for the same value. Made from
/// `RLHF_OPTION_NAMES`; an explicit specialisation with the same members also works.
template <class E>
struct option_names;

template <detail::has_option_name_table E>
struct option_names<E> {
private:
    static constexpr auto table_ = rlhf_option_name_table(E{});
    static constexpr std::size_t canonical_count_ = [] {
        std::size_t n = 0;
        for (std::size_t i = 0; i < table_.entries.size(); ++i) n += detail::first_name_of_value(table_.entries, i);
        return n;
    }();
    static_assert(!detail::has_duplicate_name(table_.entries), "RLHF_OPTION_NAMES: a name is given twice");

public:
    static constexpr std::string_view type = table_.type;
    static constexpr auto values = detail::select_names<true, canonical_count_>(table_.entries);
    static constexpr auto aliases =
        detail::select_names<false, table_.entries.size() - canonical_count_>(table_.entries);
};

RLHF_OPTION_NAMES(gae_masking, {gae_masking::zero_masked, "zero_masked"}, {gae_masking::skip_masked, "skip_masked"},
                  {gae_masking::valid_range, "valid_range"})

RLHF_OPTION_NAMES(variance_estimator, {variance_estimator::unbiased, "unbiased"},
                  {variance_estimator::biased, "biased"}, {variance_estimator::biased, "population"})

RLHF_OPTION_NAMES(whiten_scope, {whiten_scope::per_row, "per_row"}, {whiten_scope::per_batch, "per_batch"})

RLHF_OPTION_NAMES(small_sample_policy, {small_sample_policy::raise, "raise"}, {small_sample_policy::skip, "skip"},
                  {small_sample_policy::zero_variance, "zero_variance"})

RLHF_OPTION_NAMES(reward_slot, {reward_slot::last_valid_token, "last_valid_token"},
                  {reward_slot::after_last_valid, "after_last_valid"},
                  {reward_slot::every_valid_token, "every_valid_token"},
                  {reward_slot::first_pad_slot, "first_pad_slot"})

RLHF_OPTION_NAMES(kl_estimator, {kl_estimator::k1, "k1"}, {kl_estimator::abs, "abs"}, {kl_estimator::k2, "k2"},
                  {kl_estimator::k3, "k3"}, {kl_estimator::k1, "kl"}, {kl_estimator::k2, "mse"},
                  {kl_estimator::k3, "low_var_kl"})

RLHF_OPTION_NAMES(loss_aggregation, {loss_aggregation::token_mean, "token-mean"},
                  {loss_aggregation::seq_mean_token_mean, "seq-mean-token-mean"},
                  {loss_aggregation::seq_mean_token_sum, "seq-mean-token-sum"},
                  {loss_aggregation::seq_mean_token_sum_norm, "seq-mean-token-sum-norm"})

RLHF_OPTION_NAMES(padding_side, {padding_side::left, "left"}, {padding_side::right, "right"})

RLHF_OPTION_NAMES(advantage_estimator, {advantage_estimator::gae, "gae"}, {advantage_estimator::grpo, "grpo"},
                  {advantage_estimator::dr_grpo, "dr_grpo"}, {advantage_estimator::rloo, "rloo"},
                  {advantage_estimator::reinforce_plus_plus, "reinforce_plus_plus"},
                  {advantage_estimator::reinforce_plus_plus_baseline, "reinforce_plus_plus_baseline"},
                  {advantage_estimator::remax, "remax"}, {advantage_estimator::opo, "opo"},
                  {advantage_estimator::reinforce_plus_plus, "reinforce"},
                  {advantage_estimator::reinforce_plus_plus_baseline, "reinforce_baseline"})

/// An enum with an `option_names` table.
template <class E>
concept named_option = std::is_enum_v<E> && requires {
    option_names<E>::type;
    option_names<E>::values;
    option_names<E>::aliases;
};

/// Canonical name of an option value ("k3", "token-mean", ...).
template <named_option E>
[[nodiscard]] constexpr std::string_view to_string(E value) noexcept {
    for (const auto& [candidate, name] : option_names<E>::values)
        if (candidate == value) return name;
    return "unknown";
}

/// Parses a canonical name or an alias; throws `rlhf::error` (kind `config`) listing the
/// accepted names otherwise. `argument` names the option in the message.
template <named_option E>
[[nodiscard]] E parse_option(std::string_view text, std::string_view argument = option_names<E>::type) {
    for (const auto& [value, name] : option_names<E>::values)
        if (name == text) return value;
    for (const auto& [value, name] : option_names<E>::aliases)
        if (name == text) return value;
    std::string accepted = "one of";
    for (const auto& [value, name] : option_names<E>::values) accepted.append(" '").append(name).append("'");
    for (const auto& [value, name] : option_names<E>::aliases) accepted.append(" '").append(name).append("'");
    throw error(error_kind::config, "rlhf::parse_option", argument, accepted, "'" + std::string(text) + "'");
}

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
