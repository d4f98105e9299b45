#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "rlhf/ppo/experience_buffer.hpp"
#include "support/test_helpers.hpp"

namespace {

using rlhf_test::expect_error;

namespace ppo = rlhf::ppo;

// A batch in the TRL/OpenRLHF layout: prompts left-padded into [0, P), responses right-padded
// into [P, P + R). Row b has id `first_id + b`; its token at column s is 1000 * id + s, its
// response-layout values are id + t / 100 and -7 in the padding (which the buffer must drop).
ppo::experience make_batch(const std::vector<std::int64_t>& prompts, const std::vector<std::int64_t>& responses,
                           std::int64_t first_id = 0) {
    const auto rows = static_cast<std::int64_t>(prompts.size());
    const std::int64_t p_max = *std::max_element(prompts.begin(), prompts.end());
    const std::int64_t r_max = *std::max_element(responses.begin(), responses.end());
    const std::int64_t width = p_max + r_max;
    ppo::experience e;
    e.sequences = torch::zeros({rows, width}, torch::kInt64);
    e.attention_mask = torch::zeros({rows, width}, torch::kInt64);
    e.log_probs = torch::full({rows, r_max}, -7.0, torch::kFloat32);
    e.advantages = torch::full({rows, r_max}, -7.0, torch::kFloat64);
    e.scores = torch::zeros({rows}, torch::kFloat32);
    e.response_start = torch::full({rows}, p_max, torch::kInt64);
    e.response_end = torch::zeros({rows}, torch::kInt64);
    torch::Tensor id = torch::zeros({rows}, torch::kInt64);
    for (std::int64_t b = 0; b < rows; ++b) {
        const auto at = static_cast<std::size_t>(b);
        const std::int64_t row_id = first_id + b;
        id[b] = row_id;
        e.scores[b] = static_cast<double>(row_id) * 0.5;
        e.response_end[b] = p_max + responses[at];
        for (std::int64_t s = p_max - prompts[at]; s < p_max + responses[at]; ++s) {
            e.sequences[b][s] = 1000 * row_id + s;
            e.attention_mask[b][s] = 1;
        }
        for (std::int64_t t = 0; t < responses[at]; ++t) {
            e.log_probs[b][t] = static_cast<double>(row_id) + static_cast<double>(t) / 100.0;
            e.advantages[b][t] = -static_cast<double>(row_id) - static_cast<double>(t) / 100.0;
        }
    }
    e.info["id"] = id;
    return e;
}

std::vector<std::int64_t> ids_of(const ppo::experience& batch) {
    const torch::Tensor id = batch.info.at("id").contiguous();
    return {id.data_ptr<std::int64_t>(), id.data_ptr<std::int64_t>() + id.numel()};
}

std::vector<std::int64_t> ids_of(const ppo::experience_buffer& buffer) {
    return ids_of(buffer.collate_all());
}

bool same_experience(const ppo::experience& a, const ppo::experience& b) {
    auto same = [](const torch::Tensor& x, const torch::Tensor& y) {
        if (x.defined() != y.defined()) return false;
        return !x.defined() || (x.scalar_type() == y.scalar_type() && torch::equal(x, y));
    };
    bool ok = same(a.sequences, b.sequences) && same(a.attention_mask, b.attention_mask) &&
              same(a.response_start, b.response_start) && same(a.response_end, b.response_end) &&
              same(a.action_mask, b.action_mask) && same(a.log_probs, b.log_probs) &&
              same(a.ref_log_probs, b.ref_log_probs) && same(a.values, b.values) && same(a.rewards, b.rewards) &&
              same(a.advantages, b.advantages) && same(a.returns, b.returns) && same(a.scores, b.scores) &&
              a.extras.size() == b.extras.size() && a.info.size() == b.info.size();
    for (const auto& [key, tensor] : a.extras) ok = ok && b.extras.count(key) == 1 && same(tensor, b.extras.at(key));
    for (const auto& [key, tensor] : a.info) ok = ok && b.info.count(key) == 1 && same(tensor, b.info.at(key));
    return ok;
}

}  // namespace

TEST_CASE("ppo::experience_buffer splits batches into trimmed rows and collates them back" *
          doctest::test_suite("unit")) {
    ppo::experience_buffer buffer;
    buffer.append(make_batch({2, 3}, {3, 1}, 0));
    buffer.append(make_batch({1}, {2}, 2));
    REQUIRE(buffer.size() == 3);
    CHECK(buffer.row_tokens(0) == 5);
    CHECK(buffer.row_tokens(1) == 4);
    CHECK(buffer.row_tokens(2) == 3);
    CHECK(buffer.response_length(1) == 1);

    const ppo::experience all = buffer.collate_all();  // right padding by default
    // Hand-written expectation: row 0 = prompt 2 + response 3 (original columns 1..5 of width 6).
    const torch::Tensor sequences = torch::tensor({1, 2, 3, 4, 5,              //
                                                   1000, 1001, 1002, 1003, 0,  //
                                                   2000, 2001, 2002, 0, 0},
                                                  torch::kInt64)
                                        .reshape({3, 5});
    CHECK(torch::equal(all.sequences, sequences));
    CHECK(torch::equal(all.attention_mask, sequences.ne(0).to(torch::kInt64)));
    CHECK(torch::equal(all.response_start, torch::tensor({2, 3, 1}, torch::kInt64)));
    CHECK(torch::equal(all.response_end, torch::tensor({5, 4, 3}, torch::kInt64)));
    CHECK(torch::equal(all.log_probs,
                       torch::tensor({0.0f, 0.01f, 0.02f, 1.0f, 0.0f, 0.0f, 2.0f, 2.01f, 0.0f}).reshape({3, 3})));
    CHECK((all.advantages.scalar_type() == torch::kFloat64));
    CHECK(torch::equal(all.action_mask,
                       torch::tensor({true, true, true, true, false, false, true, true, false}).reshape({3, 3})));
    CHECK(torch::equal(all.scores, torch::tensor({0.0f, 0.5f, 1.0f})));
    CHECK((ids_of(all) == std::vector<std::int64_t>{0, 1, 2}));
    CHECK_FALSE(all.values.defined());
    CHECK(all.extras.empty());

    // A subset in a given order.
    const std::vector<std::int64_t> rows{2, 0};
    const ppo::experience some = buffer.collate(rows, {.pad_token_id = -1});
    CHECK((ids_of(some) == std::vector<std::int64_t>{2, 0}));
    CHECK(torch::equal(some.sequences[0], torch::tensor({2000, 2001, 2002, -1, -1}, torch::kInt64)));
}

TEST_CASE("ppo::experience_buffer keeps the rows of an explicit range / holes and attention gaps" *
          doctest::test_suite("unit")) {
    // Row 0: attention ones at 1..2, response range [4, 6) beyond them (no attention): kept.
    // Row 1: attention with an interior hole; response [2, 3).
    ppo::experience e;
    e.sequences = torch::tensor({9, 1, 2, 9, 3, 4, 5, 6, 7, 8, 9, 9}, torch::kInt64).reshape({2, 6});
    e.attention_mask = torch::tensor({0, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0, 0}, torch::kUInt8).reshape({2, 6});
    e.response_start = torch::tensor({4, 2}, torch::kInt64);
    e.response_end = torch::tensor({6, 3}, torch::kInt64);
    e.action_mask = torch::tensor({1, 0, 1, 0}, torch::kFloat32).reshape({2, 2});
    ppo::experience_buffer buffer;
    buffer.append(e);
    CHECK(buffer.row_tokens(0) == 2);
    CHECK(buffer.row_tokens(1) == 3);
    const ppo::experience all = buffer.collate_all();
    CHECK(torch::equal(all.sequences, torch::tensor({1, 2, 9, 3, 4, 5, 6, 7, 8, 0}, torch::kInt64).reshape({2, 5})));
    CHECK(
        torch::equal(all.attention_mask, torch::tensor({1, 1, 0, 0, 0, 1, 0, 1, 1, 0}, torch::kUInt8).reshape({2, 5})));
    CHECK(torch::equal(all.response_start, torch::tensor({3, 2}, torch::kInt64)));
    CHECK(torch::equal(all.response_end, torch::tensor({5, 3}, torch::kInt64)));
    CHECK(torch::equal(all.action_mask, torch::tensor({1, 0, 1, 0}, torch::kFloat32).reshape({2, 2})));
}

TEST_CASE("ppo::experience_buffer drops the oldest rows beyond its limit" * doctest::test_suite("unit")) {
    ppo::experience_buffer buffer({.limit = 4});
    buffer.append(make_batch({1, 1, 1}, {1, 1, 1}, 0));
    CHECK((ids_of(buffer) == std::vector<std::int64_t>{0, 1, 2}));
    buffer.append(make_batch({1, 2}, {1, 2}, 3));
    CHECK((ids_of(buffer) == std::vector<std::int64_t>{1, 2, 3, 4}));
    buffer.append(make_batch({1, 1, 1, 1, 1}, {1, 1, 1, 1, 1}, 5));
    CHECK((ids_of(buffer) == std::vector<std::int64_t>{6, 7, 8, 9}));
    buffer.append(make_batch({1}, {1}, 10));
    CHECK((ids_of(buffer) == std::vector<std::int64_t>{7, 8, 9, 10}));

    ppo::experience_buffer offloaded({.cpu_offload = true});
    offloaded.append(make_batch({2}, {2}, 0));
    CHECK(offloaded.collate_all().sequences.device().is_cpu());

    const auto e = expect_error([] { ppo::experience_buffer bad({.limit = -1}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "limit");
}

TEST_CASE("ppo::experience_buffer plans are seeded / deterministic / and cover every row once per epoch" *
          doctest::test_suite("unit")) {
    std::vector<std::int64_t> lengths(24, 2);
    auto filled = [&](std::uint64_t seed) {
        ppo::experience_buffer buffer({.seed = seed});
        buffer.append(make_batch(lengths, lengths, 0));
        return buffer;
    };
    ppo::experience_buffer a = filled(7);
    ppo::experience_buffer b = filled(7);
    ppo::experience_buffer c = filled(8);
    const ppo::minibatch_options options{.minibatch_size = 6, .epochs = 3};
    const ppo::minibatch_plan plan_a = a.plan(options);
    CHECK(a.permutations_drawn() == 3);
    CHECK(plan_a == b.plan(options));
    CHECK(plan_a != c.plan(options));
    // A second call draws new permutations.
    CHECK(a.plan(options) != plan_a);
    CHECK(a.permutations_drawn() == 6);

    REQUIRE(plan_a.size() == 3);
    for (const auto& epoch : plan_a) {
        REQUIRE(epoch.size() == 4);
        std::vector<std::int64_t> seen;
        for (const auto& minibatch : epoch) {
            CHECK(minibatch.size() == 6);
            seen.insert(seen.end(), minibatch.begin(), minibatch.end());
        }
        std::sort(seen.begin(), seen.end());
        std::vector<std::int64_t> expected(24);
        for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = static_cast<std::int64_t>(i);
        CHECK(seen == expected);
    }
    // Each epoch has its own order, and it is not the identity.
    CHECK(plan_a[0] != plan_a[1]);
    CHECK(plan_a[1] != plan_a[2]);
    std::vector<std::int64_t> first_epoch;
    for (const auto& minibatch : plan_a[0]) first_epoch.insert(first_epoch.end(), minibatch.begin(), minibatch.end());
    CHECK_FALSE(std::is_sorted(first_epoch.begin(), first_epoch.end()));

    // No shuffling: buffer order, no permutation drawn.
    const auto ordered = b.plan({.minibatch_size = 12, .shuffle = false});
    CHECK(ordered[0][0].front() == 0);
    CHECK(ordered[0][1].back() == 23);
    CHECK(b.permutations_drawn() == 3);
}

TEST_CASE("ppo::experience_buffer minibatch remainders follow the remainder policy" * doctest::test_suite("unit")) {
    ppo::experience_buffer buffer({.seed = 3});
    buffer.append(make_batch(std::vector<std::int64_t>(10, 1), std::vector<std::int64_t>(10, 1)));
    auto e = expect_error([&] { (void)buffer.plan({.minibatch_size = 4}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "minibatch_size");
    CHECK(e.actual() == "4");
    e = expect_error([&] { (void)buffer.plan({.minibatch_size = 0}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "minibatch_size");
    e = expect_error([&] { (void)buffer.plan({.minibatch_size = 5, .epochs = 0}); });
    CHECK(e.argument() == "epochs");
    e = expect_error([&] { (void)buffer.plan({.minibatch_size = 11, .remainder = ppo::remainder_policy::drop_last}); });
    CHECK(e.argument() == "minibatch_size");
    CHECK(buffer.permutations_drawn() == 0);  // failed calls draw nothing

    const auto dropped = buffer.plan({.minibatch_size = 4, .epochs = 2, .remainder = ppo::remainder_policy::drop_last});
    for (const auto& epoch : dropped) {
        REQUIRE(epoch.size() == 2);
        std::set<std::int64_t> seen;
        for (const auto& minibatch : epoch) {
            CHECK(minibatch.size() == 4);
            seen.insert(minibatch.begin(), minibatch.end());
        }
        CHECK(seen.size() == 8);
    }
    const auto partial = buffer.plan({.minibatch_size = 4, .remainder = ppo::remainder_policy::allow_partial});
    REQUIRE(partial[0].size() == 3);
    CHECK(partial[0][2].size() == 2);
    std::set<std::int64_t> seen;
    for (const auto& minibatch : partial[0]) seen.insert(minibatch.begin(), minibatch.end());
    CHECK(seen.size() == 10);

    ppo::experience_buffer empty;
    e = expect_error([&] { (void)empty.plan({.minibatch_size = 1}); });
    CHECK(e.kind() == rlhf::error_kind::state);
    CHECK(e.argument() == "buffer");
    e = expect_error([&] { (void)empty.collate_all(); });
    CHECK(e.kind() == rlhf::error_kind::state);
}

TEST_CASE("ppo::experience_buffer micro-batches / plain and token-balanced" * doctest::test_suite("unit")) {
    // Skewed token counts (prompt 1 + response r): 50, 40, 30, 20, 10, 10, 5, 5.
    const std::vector<std::int64_t> responses{49, 39, 29, 19, 9, 9, 4, 4};
    ppo::experience_buffer buffer;
    buffer.append(make_batch(std::vector<std::int64_t>(8, 1), responses));
    const std::vector<std::int64_t> rows{0, 1, 2, 3, 4, 5, 6, 7};
    auto loads = [&](const std::vector<ppo::row_indices>& parts) {
        std::vector<std::int64_t> result;
        for (const auto& part : parts) {
            std::int64_t sum = 0;
            for (const std::int64_t r : part) sum += buffer.row_tokens(r);
            result.push_back(sum);
        }
        return result;
    };
    auto ratio = [](const std::vector<std::int64_t>& l) {
        return static_cast<double>(*std::max_element(l.begin(), l.end())) /
               static_cast<double>(*std::min_element(l.begin(), l.end()));
    };

    const auto plain = buffer.micro_batches(rows, {.micro_batch_size = 4});
    REQUIRE(plain.size() == 2);
    CHECK((plain[0] == ppo::row_indices{0, 1, 2, 3}));
    CHECK((loads(plain) == std::vector<std::int64_t>{140, 30}));
    CHECK(ratio(loads(plain)) > 4.0);

    const auto balanced = buffer.micro_batches(rows, {.micro_batch_size = 4, .token_balanced = true});
    REQUIRE(balanced.size() == 2);
    CHECK((loads(balanced) == std::vector<std::int64_t>{85, 85}));
    CHECK((balanced[0] == ppo::row_indices{0, 3, 4, 6}));  // rows keep their minibatch order

    // A larger skewed case: every row once, the row cap holds, and the loads are close.
    std::vector<std::int64_t> skewed;
    for (std::int64_t i = 0; i < 48; ++i) skewed.push_back(i % 7 == 0 ? 60 + i : 1 + (i * 13) % 9);
    ppo::experience_buffer large;
    large.append(make_batch(std::vector<std::int64_t>(48, 1), skewed));
    std::vector<std::int64_t> order;
    for (std::int64_t i = 47; i >= 0; --i) order.push_back(i);
    const auto parts = large.micro_batches(order, {.micro_batch_size = 8, .token_balanced = true});
    REQUIRE(parts.size() == 6);
    std::multiset<std::int64_t> seen;
    std::vector<std::int64_t> part_loads;
    for (const auto& part : parts) {
        CHECK(part.size() <= 8);
        CHECK_FALSE(part.empty());
        CHECK(std::is_sorted(part.rbegin(), part.rend()));  // order of `order` (descending) kept
        seen.insert(part.begin(), part.end());
        std::int64_t sum = 0;
        for (const std::int64_t r : part) sum += large.row_tokens(r);
        part_loads.push_back(sum);
    }
    CHECK(seen.size() == 48);
    CHECK(std::set<std::int64_t>(seen.begin(), seen.end()).size() == 48);
    // Seven long rows (62..103 tokens) among 41 short ones, six full micro-batches: the long
    // rows cannot be split evenly, so the bound is loose; the largest load stays within 6% of
    // the mean (827 / 6) and the max/min ratio within 1.15 (plain chunking: see below).
    const auto [low, high] = std::minmax_element(part_loads.begin(), part_loads.end());
    CHECK(static_cast<double>(*high) <= 1.06 * 827.0 / 6.0);
    CHECK(static_cast<double>(*high) / static_cast<double>(*low) < 1.15);
    const auto unbalanced = large.micro_batches(order, {.micro_batch_size = 8});
    std::vector<std::int64_t> unbalanced_loads;
    for (const auto& part : unbalanced) {
        std::int64_t sum = 0;
        for (const std::int64_t r : part) sum += large.row_tokens(r);
        unbalanced_loads.push_back(sum);
    }
    CHECK(ratio(unbalanced_loads) > 1.3);  // 1.40: the long rows land where they are
    CHECK(std::accumulate(part_loads.begin(), part_loads.end(), std::int64_t{0}) == 827);

    // Fewer rows than the micro-batch size: one micro-batch.
    CHECK(buffer.micro_batches(std::vector<std::int64_t>{5, 2}, {.micro_batch_size = 4}).size() == 1);

    auto e = expect_error([&] { (void)buffer.micro_batches(rows, {.micro_batch_size = 0}); });
    CHECK(e.kind() == rlhf::error_kind::config);
    CHECK(e.argument() == "micro_batch_size");
    e = expect_error([&] { (void)buffer.micro_batches(std::vector<std::int64_t>{0, 8}, {.micro_batch_size = 2}); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "rows");
    CHECK(e.actual() == "rows[1] = 8");
    e = expect_error([&] { (void)buffer.collate(std::vector<std::int64_t>{}); });
    CHECK(e.argument() == "rows");
}

TEST_CASE("ppo::experience_buffer left and right collate agree on every valid token" * doctest::test_suite("unit")) {
    ppo::experience_buffer buffer;
    const ppo::experience original = make_batch({3, 1, 2, 4}, {2, 5, 1, 3});
    buffer.append(original);
    const ppo::experience right = buffer.collate_all({.padding = ppo::padding_side::right});
    const ppo::experience left = buffer.collate_all({.padding = ppo::padding_side::left, .pad_token_id = 77});
    const std::int64_t width = right.sequences.size(1);
    REQUIRE(left.sequences.size(1) == width);
    CHECK(width == 7);  // the longest row: prompt 4 + response 3 (or 2 + 5)
    for (std::int64_t b = 0; b < 4; ++b) {
        const std::int64_t rs = right.response_start[b].item<std::int64_t>();
        const std::int64_t re = right.response_end[b].item<std::int64_t>();
        const std::int64_t ls = left.response_start[b].item<std::int64_t>();
        const std::int64_t le = left.response_end[b].item<std::int64_t>();
        const std::int64_t os = original.response_start[b].item<std::int64_t>();
        const std::int64_t oe = original.response_end[b].item<std::int64_t>();
        CHECK(re - rs == oe - os);
        CHECK(le - ls == oe - os);
        // Responses: same tokens as the original at the documented positions.
        CHECK(torch::equal(right.sequences[b].slice(0, rs, re), original.sequences[b].slice(0, os, oe)));
        CHECK(torch::equal(left.sequences[b].slice(0, ls, le), original.sequences[b].slice(0, os, oe)));
        // Valid tokens: right padding puts them at [0, L), left padding at [width - L, width).
        const torch::Tensor valid = original.sequences[b].masked_select(original.attention_mask[b].ne(0));
        const std::int64_t length = valid.size(0);
        CHECK(torch::equal(right.sequences[b].slice(0, 0, length), valid));
        CHECK(torch::equal(left.sequences[b].slice(0, width - length, width), valid));
        CHECK(right.attention_mask[b].sum().item<std::int64_t>() == length);
        CHECK(left.attention_mask[b].slice(0, width - length, width).sum().item<std::int64_t>() == length);
        CHECK((left.sequences[b].slice(0, 0, width - length) == 77).all().item<bool>());
        CHECK((right.sequences[b].slice(0, length, width) == 0).all().item<bool>());
        CHECK(le == width);  // responses end the row
    }
    // The response layout does not depend on the padding side.
    CHECK(torch::equal(left.log_probs, right.log_probs));
    CHECK(torch::equal(left.action_mask, right.action_mask));
    CHECK(torch::equal(right.log_probs.slice(1, 0, 5),
                       torch::where(original.log_probs.eq(-7.0), torch::zeros({}), original.log_probs)));
}

TEST_CASE("ppo::experience_buffer save and load round-trip rows and shuffling state" * doctest::test_suite("unit")) {
    const std::filesystem::path directory = std::filesystem::temp_directory_path() / "rlhf_test_experience_buffer";
    std::filesystem::create_directories(directory);
    const std::filesystem::path file = directory / "buffer.bin";

    ppo::experience_buffer buffer({.seed = 42});
    ppo::experience batch = make_batch({2, 3, 1}, {3, 1, 2});
    batch.values = torch::randn({3, 3}, torch::kFloat32);
    batch.extras["kl"] = torch::arange(9, torch::kFloat64).reshape({3, 3});
    batch.info["weight"] = torch::tensor({0.25f, 0.5f, 1.0f});
    buffer.append(batch);
    ppo::experience more = make_batch({4, 1}, {2, 3}, 3);
    more.values = torch::randn({2, 3}, torch::kFloat32);
    more.extras["kl"] = torch::ones({2, 3}, torch::kFloat64);
    more.info["weight"] = torch::tensor({2.0f, 3.0f});
    buffer.append(more);
    (void)buffer.plan({.minibatch_size = 5, .epochs = 2});
    buffer.save(file);
    CHECK(std::filesystem::exists(file));
    CHECK_FALSE(std::filesystem::exists(directory / "buffer.bin.tmp"));

    ppo::experience_buffer loaded({.seed = 1});
    loaded.load(file);
    CHECK(loaded.size() == 5);
    CHECK(loaded.options().seed == 42);
    CHECK(loaded.permutations_drawn() == 2);
    CHECK(same_experience(loaded.collate_all(), buffer.collate_all()));
    CHECK(same_experience(loaded.collate_all({.padding = ppo::padding_side::left}),
                          buffer.collate_all({.padding = ppo::padding_side::left})));
    for (std::int64_t r = 0; r < 5; ++r) CHECK(loaded.row_tokens(r) == buffer.row_tokens(r));
    // The loaded buffer continues exactly like the saved one.
    CHECK(loaded.plan({.minibatch_size = 5, .epochs = 2}) == buffer.plan({.minibatch_size = 5, .epochs = 2}));

    // An empty buffer round-trips its shuffling state.
    ppo::experience_buffer empty({.seed = 9});
    (void)empty.permutation();
    empty.save(file);
    loaded.load(file);
    CHECK(loaded.empty());
    CHECK(loaded.permutations_drawn() == 1);
    CHECK(loaded.options().seed == 9);

    // Unwritable path: kind state, argument path.
    auto e = expect_error([&] { buffer.save(directory / "missing_directory" / "buffer.bin"); });
    CHECK(e.kind() == rlhf::error_kind::state);
    CHECK(e.argument() == "path");
    e = expect_error([&] { loaded.load(directory / "missing.bin"); });
    CHECK(e.kind() == rlhf::error_kind::state);
    CHECK(e.argument() == "path");
    // Not a buffer file, truncated file: kind value; the buffer is unchanged.
    {
        std::ofstream junk(directory / "junk.bin", std::ios::binary);
        junk << "not a buffer";
    }
    e = expect_error([&] { loaded.load(directory / "junk.bin"); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "path");
    // A LibTorch archive of another kind (a trainer checkpoint's format tag): kind value.
    {
        torch::serialize::OutputArchive other;
        rlhf::ppo::checkpoint::write_format(other, rlhf::ppo::checkpoint::trainer_format);
        other.save_to((directory / "other.pt").string());
    }
    e = expect_error([&] { loaded.load(directory / "other.pt"); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "path");
    buffer.save(file);
    std::filesystem::resize_file(file, std::filesystem::file_size(file) - 3);
    e = expect_error([&] { loaded.load(file); });
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(loaded.permutations_drawn() == 1);
    std::filesystem::remove_all(directory);
}

TEST_CASE("ppo::experience_buffer append rejects bad batches / naming the field" * doctest::test_suite("unit")) {
    ppo::experience_buffer buffer;
    auto append_error = [&](const ppo::experience& batch) { return expect_error([&] { buffer.append(batch); }); };

    ppo::experience batch = make_batch({2, 2}, {2, 2});
    batch.log_probs = torch::zeros({3, 2});
    auto e = append_error(batch);
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "log_probs");
    CHECK(e.expected() == "2 rows (the rows of 'sequences')");

    batch = make_batch({2, 2}, {2, 2});
    batch.info["id"] = torch::zeros({3});
    e = append_error(batch);
    CHECK(e.argument() == "info[\"id\"]");

    batch = make_batch({2, 2}, {2, 2});
    batch.response_start = batch.response_start.to(torch::kFloat32);
    e = append_error(batch);
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "response_start");

    batch = make_batch({2, 2}, {2, 2});
    batch.response_end = torch::tensor({4, 5}, torch::kInt64);
    e = append_error(batch);
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "response_end");
    CHECK(e.expected() == "0 <= response_start <= response_end <= 4 (the width of 'sequences')");

    batch = make_batch({2, 2}, {2, 2});
    batch.advantages = torch::zeros({2, 1}, torch::kFloat64);
    e = append_error(batch);
    CHECK(e.kind() == rlhf::error_kind::shape);
    CHECK(e.argument() == "advantages");
    CHECK(e.expected() == "[2, 2] (the shape of 'log_probs')");

    batch = make_batch({2, 2}, {2, 2});
    batch.log_probs = torch::zeros({2, 1});
    batch.advantages = torch::Tensor();
    e = append_error(batch);
    CHECK(e.argument() == "log_probs");
    CHECK(e.expected() == "at least 2 columns (the longest response)");

    batch = make_batch({2, 2}, {2, 1});
    batch.action_mask = torch::ones({2, 2}, torch::kBool);
    e = append_error(batch);
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "action_mask");
    CHECK(e.actual() == "1 at [1, 1]");

    batch = make_batch({2, 2}, {2, 2});
    batch.values = torch::zeros({2, 2}, torch::kInt64);
    e = append_error(batch);
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "values");

    batch = make_batch({2, 2}, {2, 2});
    batch.extras["kl"] = torch::Tensor();
    e = append_error(batch);
    CHECK(e.argument() == "extras[\"kl\"]");
    CHECK(buffer.empty());

    // Fields and dtypes must match the stored rows.
    buffer.append(make_batch({2, 2}, {2, 2}));
    batch = make_batch({1}, {1});
    batch.values = torch::zeros({1, 1});
    e = append_error(batch);
    CHECK(e.kind() == rlhf::error_kind::value);
    CHECK(e.argument() == "values");
    batch = make_batch({1}, {1});
    batch.log_probs = torch::Tensor();
    e = append_error(batch);
    CHECK(e.argument() == "log_probs");
    batch = make_batch({1}, {1});
    batch.log_probs = batch.log_probs.to(torch::kFloat64);
    e = append_error(batch);
    CHECK(e.kind() == rlhf::error_kind::dtype);
    CHECK(e.argument() == "log_probs");
    CHECK(e.expected() == "float32 (the dtype of the rows already in the buffer)");
    CHECK(buffer.size() == 2);

    // An empty batch is a no-op; clear() resets the schema but not the shuffling state.
    ppo::experience empty = make_batch({1}, {1});
    for (torch::Tensor* t : {&empty.sequences, &empty.attention_mask, &empty.log_probs, &empty.advantages,
                             &empty.response_start, &empty.response_end, &empty.scores, &empty.info["id"]})
        *t = t->narrow(0, 0, 0);
    buffer.append(empty);
    CHECK(buffer.size() == 2);
    (void)buffer.permutation();
    buffer.clear();
    CHECK(buffer.empty());
    CHECK(buffer.permutations_drawn() == 1);
    batch = make_batch({1}, {1});
    batch.values = torch::zeros({1, 1});
    buffer.append(batch);
    CHECK(buffer.collate_all().values.defined());
}
