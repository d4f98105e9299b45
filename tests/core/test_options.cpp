#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <utility>

#include "rlhf/core/options.hpp"
#include "rlhf/options/kl_controller.hpp"
#include "rlhf/options/masked_stats.hpp"
#include "rlhf/options/outcome_advantages.hpp"
#include "rlhf/options/policy_loss.hpp"
#include "rlhf/options/reward_shaping.hpp"
#include "support/test_helpers.hpp"

TEST_CASE("every option name round-trips" * doctest::test_suite("unit")) {
    rlhf_test::check_option_round_trip<rlhf::gae_masking>();
    rlhf_test::check_option_round_trip<rlhf::variance_estimator>();
    rlhf_test::check_option_round_trip<rlhf::whiten_scope>();
    rlhf_test::check_option_round_trip<rlhf::small_sample_policy>();
    rlhf_test::check_option_round_trip<rlhf::reward_slot>();
    rlhf_test::check_option_round_trip<rlhf::kl_estimator>();
    rlhf_test::check_option_round_trip<rlhf::loss_aggregation>();
    rlhf_test::check_option_round_trip<rlhf::advantage_estimator>();
    rlhf_test::check_option_round_trip<rlhf::padding_side>();
}

TEST_CASE("framework aliases parse to the same option" * doctest::test_suite("unit")) {
    CHECK(rlhf::parse_option<rlhf::kl_estimator>("low_var_kl") == rlhf::kl_estimator::k3);
    CHECK(rlhf::parse_option<rlhf::kl_estimator>("mse") == rlhf::kl_estimator::k2);
    CHECK(rlhf::parse_option<rlhf::kl_estimator>("kl") == rlhf::kl_estimator::k1);
    CHECK(rlhf::parse_option<rlhf::advantage_estimator>("reinforce") == rlhf::advantage_estimator::reinforce_plus_plus);
}

TEST_CASE("an unknown option name is a configuration error listing the accepted names" * doctest::test_suite("unit")) {
    const auto e = rlhf_test::check_error([] { (void)rlhf::parse_option<rlhf::kl_estimator>("k4", "kl_penalty"); },
                                          rlhf::error_kind::config, "kl_penalty");
    CHECK(std::string(e.what()) ==
          "rlhf::parse_option: argument 'kl_penalty': expected one of 'k1' 'abs' 'k2' 'k3' 'kl' 'mse' "
          "'low_var_kl', got 'k4'");
}

namespace {

enum class tide { low, high, slack };
RLHF_OPTION_NAMES(tide, {tide::low, "low"}, {tide::high, "high"}, {tide::low, "ebb"}, {tide::slack, "slack"},
                  {tide::high, "flood"})

enum class unnamed_enum { a };

}  // namespace

static_assert(rlhf::named_option<tide>);
static_assert(!rlhf::named_option<unnamed_enum>);

TEST_CASE("RLHF_OPTION_NAMES: a value's first name is canonical and its later names are aliases" *
          doctest::test_suite("unit")) {
    using names = rlhf::option_names<tide>;
    CHECK(names::type == "tide");
    REQUIRE(names::values.size() == 3);
    CHECK(names::values[0].second == "low");
    CHECK(names::values[1].second == "high");
    CHECK(names::values[2].second == "slack");
    REQUIRE(names::aliases.size() == 2);
    CHECK(names::aliases[0] == std::pair{tide::low, std::string_view("ebb")});
    CHECK(names::aliases[1] == std::pair{tide::high, std::string_view("flood")});
    CHECK(rlhf::to_string(tide::high) == "high");
    CHECK(rlhf::parse_option<tide>("flood") == tide::high);
    rlhf_test::check_option_round_trip<tide>();
    const auto e =
        rlhf_test::check_error([] { (void)rlhf::parse_option<tide>("neap"); }, rlhf::error_kind::config, "tide");
    CHECK(std::string(e.what()) ==
          "rlhf::parse_option: argument 'tide': expected one of 'low' 'high' 'slack' 'ebb' 'flood', got 'neap'");
}

TEST_CASE("the kernels' option enums have names" * doctest::test_suite("unit")) {
    rlhf_test::check_option_round_trip<rlhf::whiten_epsilon>();
    rlhf_test::check_option_round_trip<rlhf::kl_measure>();
    rlhf_test::check_option_round_trip<rlhf::empty_row_policy>();
    rlhf_test::check_option_round_trip<rlhf::singleton_group_policy>();
    rlhf_test::check_option_round_trip<rlhf::return_masking>();
    rlhf_test::check_option_round_trip<rlhf::baseline_broadcast>();
    rlhf_test::check_option_round_trip<rlhf::importance_ratio_level>();
    CHECK(rlhf::parse_option<rlhf::importance_ratio_level>("gspo") == rlhf::importance_ratio_level::sequence);
    CHECK(rlhf::parse_option<rlhf::variance_estimator>("population") == rlhf::variance_estimator::biased);
}
