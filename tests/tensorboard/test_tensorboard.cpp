// rlhf::ppo::tensorboard_sink: CRC-32C, the TFRecord framing, the wire bytes of the events (encoded
// by hand from TensorBoard's field numbers, independently of the run-time schema), the files the
// sink writes read back, and its errors. TensorBoard's own reader checks the files in read_back.cmake.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "rlhf/ppo/tensorboard.hpp"

namespace {

namespace fs = std::filesystem;
using rlhf::ppo::tensorboard_sink;
namespace detail = rlhf::ppo::detail;

std::string bytes(std::initializer_list<int> values) {
    std::string out;
    for (const int v : values) out.push_back(static_cast<char>(v));
    return out;
}

// A fresh folder per test case under the system's temporary folder.
fs::path scratch(const std::string& name) {
    fs::path dir = fs::temp_directory_path() / ("rlhf_tensorboard_test_" + name);
    fs::remove_all(dir);
    return dir;
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::uint64_t little_endian(const std::string& data, std::size_t at, int size) {
    std::uint64_t value = 0;
    for (int i = size - 1; i >= 0; --i)
        value = (value << 8) | static_cast<unsigned char>(data[at + static_cast<std::size_t>(i)]);
    return value;
}

// The records of a file, each CRC checked; fails the test case on bad framing.
std::vector<std::string> records(const fs::path& path) {
    const std::string data = read_file(path);
    std::vector<std::string> out;
    std::size_t at = 0;
    while (at < data.size()) {
        REQUIRE(at + 12 <= data.size());
        const std::uint64_t length = little_endian(data, at, 8);
        CHECK(little_endian(data, at + 8, 4) == detail::masked_crc32c(std::string_view(data).substr(at, 8)));
        REQUIRE(at + 12 + length + 4 <= data.size());
        const std::string record = data.substr(at + 12, length);
        CHECK(little_endian(data, at + 12 + length, 4) == detail::masked_crc32c(record));
        out.push_back(record);
        at += 12 + length + 4;
    }
    return out;
}

struct decoded_event {
    std::int64_t step = 0;
    std::string file_version;
    std::map<std::string, float> scalars;
    std::map<std::string, std::string> texts;  // tag → text, for values of the text plugin
};

// Reads an event back through the run-time schema's reflection.
decoded_event decode(const detail::tensorboard_events& events, const std::string& record) {
    auto event = events.new_message();
    REQUIRE(event->ParseFromString(record));
    const auto field = [](const google::protobuf::Message& m, const char* name) {
        const auto* f = m.GetDescriptor()->FindFieldByName(name);
        REQUIRE(f != nullptr);
        return f;
    };
    decoded_event out;
    const auto* reflection = event->GetReflection();
    out.step = reflection->GetInt64(*event, field(*event, "step"));
    out.file_version = reflection->GetString(*event, field(*event, "file_version"));
    if (!reflection->HasField(*event, field(*event, "summary"))) return out;
    const auto& summary = reflection->GetMessage(*event, field(*event, "summary"));
    const auto* values = field(summary, "value");
    for (int i = 0; i < summary.GetReflection()->FieldSize(summary, values); ++i) {
        const auto& value = summary.GetReflection()->GetRepeatedMessage(summary, values, i);
        const auto* r = value.GetReflection();
        const std::string tag = r->GetString(value, field(value, "tag"));
        if (r->HasField(value, field(value, "simple_value")))
            out.scalars[tag] = r->GetFloat(value, field(value, "simple_value"));
        if (r->HasField(value, field(value, "tensor"))) {
            const auto& metadata = r->GetMessage(value, field(value, "metadata"));
            const auto& plugin = metadata.GetReflection()->GetMessage(metadata, field(metadata, "plugin_data"));
            CHECK(plugin.GetReflection()->GetString(plugin, field(plugin, "plugin_name")) == "text");
            const auto& tensor = r->GetMessage(value, field(value, "tensor"));
            REQUIRE(tensor.GetReflection()->FieldSize(tensor, field(tensor, "string_val")) == 1);
            out.texts[tag] = tensor.GetReflection()->GetRepeatedString(tensor, field(tensor, "string_val"), 0);
        }
    }
    return out;
}

template <class F>
rlhf::error error_of(F&& f) {
    try {
        f();
    } catch (const rlhf::error& e) {
        return e;
    }
    FAIL("no rlhf::error thrown");
    return {rlhf::error_kind::value, "", "", "", ""};
}

}  // namespace

TEST_CASE("tensorboard: CRC-32C matches the published check values" * doctest::test_suite("unit")) {
    static_assert(detail::crc32c("123456789") == 0xE3069283u);  // the CRC catalogue's check value
    CHECK(detail::crc32c("") == 0u);
    CHECK(detail::crc32c(std::string(32, '\0')) == 0x8A9136AAu);    // RFC 3720 B.4
    CHECK(detail::crc32c(std::string(32, '\xff')) == 0x62A8AB43u);  // RFC 3720 B.4
    const std::uint32_t crc = 0xE3069283u;
    CHECK(detail::masked_crc32c("123456789") == static_cast<std::uint32_t>(((crc >> 15) | (crc << 17)) + 0xA282EAD8u));
}

TEST_CASE("tensorboard: a record is length and CRC then data and CRC" * doctest::test_suite("unit")) {
    const std::string record = detail::tfrecord("abc");
    REQUIRE(record.size() == 8 + 4 + 3 + 4);
    CHECK(little_endian(record, 0, 8) == 3u);
    CHECK(little_endian(record, 8, 4) == detail::masked_crc32c(record.substr(0, 8)));
    CHECK(record.substr(12, 3) == "abc");
    CHECK(little_endian(record, 15, 4) == detail::masked_crc32c("abc"));
}

TEST_CASE("tensorboard: events have TensorBoard's wire bytes" * doctest::test_suite("unit")) {
    const detail::tensorboard_events events;
    // wall_time 1.5: field 1 fixed64; step 3: field 2 varint.
    const std::string head = bytes({0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x10, 0x03});
    SUBCASE("file version: field 3 string") {
        const std::string expected =
            bytes({0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x1a, 13}) + "brain.Event:2";  // step 0 not written (proto3)
        CHECK(events.file_version(1.5) == expected);
    }
    SUBCASE("scalar: summary 5 → value 1 → tag 1 and simple_value 2 (float)") {
        const std::string value = bytes({0x0a, 0x01, 'a', 0x15, 0, 0, 0, 0x3f});  // tag "a", 0.5f
        const std::string zero = bytes({0x0a, 0x01, 'z', 0x15, 0, 0, 0, 0});      // a 0 is still written
        const std::string summary = bytes({0x0a, 8}) + value + bytes({0x0a, 8}) + zero;
        CHECK(events.scalars(1.5, 3, {{"a", 0.5f}, {"z", 0.0f}}) == head + bytes({0x2a, 20}) + summary);
    }
    SUBCASE("text: tensor 8 (DT_STRING 7 and rank 0 and string_val 8) and metadata 9 (plugin text)") {
        const std::string tensor = bytes({0x08, 0x07, 0x12, 0x00, 0x42, 0x02}) + "hi";
        const std::string metadata = bytes({0x0a, 0x06, 0x0a, 0x04}) + "text";
        const std::string value = bytes({0x0a, 0x01, 't', 0x42, 8}) + tensor + bytes({0x4a, 8}) + metadata;
        CHECK(events.text(1.5, 3, "t", "hi") == head + bytes({0x2a, 25, 0x0a, 23}) + value);
    }
}

TEST_CASE("tensorboard: the sink writes the file version then one event per call" * doctest::test_suite("unit")) {
    const fs::path dir = scratch("sink") / "nested" / "run";
    const tensorboard_sink sink(dir);
    const std::string name = sink.path().filename().string();
    CHECK(sink.path().parent_path() == dir);
    CHECK(name.rfind("events.out.tfevents.", 0) == 0);
    CHECK(name.size() > std::string("events.out.tfevents.1700000000.").size());

    rlhf::ppo::step_metrics m;
    m.step = 5;
    m.policy_loss = 0.25;
    m.kl = 1.0 / 3.0;
    m.value_loss = std::numeric_limits<double>::quiet_NaN();
    m.ratio_max = std::numeric_limits<double>::infinity();
    m.early_stopped = true;
    m.optimizer_steps = 4;
    m.eval["reward"] = 2.5;
    m.eval["broken"] = std::numeric_limits<double>::quiet_NaN();
    // A copy, as a trainer keeps its callbacks: it writes to the same file as `sink`.
    const std::function<void(const rlhf::ppo::step_metrics&)> callback = sink;
    callback(m);
    sink.add_scalar("custom/x", -7.0, 9);
    sink.add_text("samples", "**bold**", 5);

    const detail::tensorboard_events events;
    const auto all = records(sink.path());
    REQUIRE(all.size() == 4);
    const decoded_event version = decode(events, all[0]);
    CHECK(version.file_version == "brain.Event:2");

    const decoded_event metrics = decode(events, all[1]);
    CHECK(metrics.step == 5);
    CHECK(metrics.scalars.at("policy_loss") == 0.25f);
    CHECK(metrics.scalars.at("kl") == static_cast<float>(1.0 / 3.0));
    CHECK(metrics.scalars.at("early_stopped") == 1.0f);
    CHECK(metrics.scalars.at("optimizer_steps") == 4.0f);
    CHECK(metrics.scalars.at("eval/reward") == 2.5f);
    CHECK(metrics.scalars.count("score_mean") == 1);  // zeros are written
    // Left out: non-finite values, the step itself, the seed, the string kl_unit.
    for (const char* tag : {"value_loss", "ratio_max", "eval/broken", "step", "generation_seed", "kl_unit"})
        CHECK_MESSAGE(metrics.scalars.count(tag) == 0, tag);
    std::size_t numeric = 0;
    rlhf::ppo::for_each_metric(m, [&](std::string_view, const auto& value) {
        numeric += std::is_arithmetic_v<std::decay_t<decltype(value)>> ? 1 : 0;
    });
    CHECK(metrics.scalars.size() == numeric - 4 + 1);  // - step, seed, value_loss, ratio_max + eval/reward

    const decoded_event scalar = decode(events, all[2]);
    CHECK(scalar.step == 9);
    CHECK(scalar.scalars == std::map<std::string, float>{{"custom/x", -7.0f}});
    const decoded_event text = decode(events, all[3]);
    CHECK(text.step == 5);
    CHECK(text.texts == std::map<std::string, std::string>{{"samples", "**bold**"}});
    fs::remove_all(scratch("sink"));
}

TEST_CASE("tensorboard: two sinks on one folder write two files" * doctest::test_suite("unit")) {
    const fs::path dir = scratch("two");
    const tensorboard_sink a(dir);
    const tensorboard_sink b(dir);
    CHECK(a.path() != b.path());
    a.add_scalar("x", 1.0, 1);
    b.add_scalar("x", 2.0, 1);
    CHECK(records(a.path()).size() == 2);
    CHECK(records(b.path()).size() == 2);
    fs::remove_all(dir);
}

TEST_CASE("tensorboard: errors name log_dir and tag" * doctest::test_suite("unit")) {
    const fs::path dir = scratch("errors");
    fs::create_directories(dir);
    { std::ofstream(dir / "file") << "x"; }
    SUBCASE("a log_dir under a file") {
        const rlhf::error e = error_of([&] { tensorboard_sink sink(dir / "file" / "run"); });
        CHECK(e.kind() == rlhf::error_kind::state);
        CHECK(e.argument() == "log_dir");
        CHECK(e.function() == "rlhf::ppo::tensorboard_sink");
    }
    SUBCASE("a log_dir that is a file") {
        const rlhf::error e = error_of([&] { tensorboard_sink sink(dir / "file"); });
        CHECK(e.argument() == "log_dir");
    }
    SUBCASE("an empty tag") {
        const tensorboard_sink sink(dir / "run");
        const rlhf::error scalar = error_of([&] { sink.add_scalar("", 1.0, 0); });
        CHECK(scalar.kind() == rlhf::error_kind::value);
        CHECK(scalar.argument() == "tag");
        CHECK(scalar.function() == "rlhf::ppo::tensorboard_sink::add_scalar");
        const rlhf::error text = error_of([&] { sink.add_text("", "x", 0); });
        CHECK(text.argument() == "tag");
        CHECK(records(sink.path()).size() == 1);  // nothing written but the version
    }
    fs::remove_all(dir);
}
