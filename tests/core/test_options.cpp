#include <doctest/doctest.h>

#include <string>

#include "rlhf/core/options.hpp"
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
