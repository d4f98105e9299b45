#pragma once
/// @file
/// `rlhf::ppo::tensorboard_sink`: a metrics sink that writes TensorBoard event files (scalars and
/// text samples). Target `rlhf::tensorboard` (protobuf). The event schema is built at run time
/// with protobuf's descriptor API, so the header needs no generated code and no protoc.

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

#include "rlhf/core/check.hpp"
#include "rlhf/core/error.hpp"
#include "rlhf/ppo/metrics.hpp"
#include "rlhf/version.hpp"

namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo {

namespace detail {

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord framing.
/// Table-driven: Debian 12 packages no CRC-32C library, and a metrics file is small.
inline constexpr std::array<std::uint32_t, 256> crc32c_table = [] {
    std::array<std::uint32_t, 256> table{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t crc = i;
        for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) != 0 ? 0x82F63B78u : 0u);
        table[i] = crc;
    }
    return table;
}();

[[nodiscard]] constexpr std::uint32_t crc32c(std::string_view data) noexcept {
    std::uint32_t crc = 0xFFFFFFFFu;
    for (const char c : data) crc = crc32c_table[(crc ^ static_cast<unsigned char>(c)) & 0xFFu] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

/// The CRC as TFRecord stores it: rotated and offset, so that a CRC of data holding CRCs stays
/// a good checksum.
[[nodiscard]] constexpr std::uint32_t masked_crc32c(std::string_view data) noexcept {
    const std::uint32_t crc = crc32c(data);
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

/// One TFRecord: the data's length (uint64, little-endian), the masked CRC of those 8 bytes, the
/// data, the masked CRC of the data.
[[nodiscard]] inline std::string tfrecord(std::string_view data) {
    const auto put = [](std::string& out, std::uint64_t value, int bytes) {
        for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFFu));
    };
    std::string out;
    out.reserve(data.size() + 16);
    put(out, data.size(), 8);
    put(out, masked_crc32c(out), 4);
    out.append(data);
    put(out, masked_crc32c(data), 4);
    return out;
}

/// The subset of TensorBoard's event schema the sink writes (tensorboard/compat/proto/event.proto,
/// summary.proto, tensor.proto, tensor_shape.proto, types.proto): the same field numbers and wire
/// types, so TensorBoard reads the messages; the package name is ours (it never reaches the wire).
/// The oneofs give `simple_value` and `file_version` presence, so a 0 is still written.
inline constexpr std::string_view tensorboard_schema_text = R"pb(
    name: "rlhf/tensorboard_events.proto"
    package: "rlhf.tensorboard"
    syntax: "proto3"
    message_type {
      name: "Event"
      field { name: "wall_time" number: 1 label: LABEL_OPTIONAL type: TYPE_DOUBLE }
      field { name: "step" number: 2 label: LABEL_OPTIONAL type: TYPE_INT64 }
      field { name: "file_version" number: 3 label: LABEL_OPTIONAL type: TYPE_STRING oneof_index: 0 }
      field {
        name: "summary"
        number: 5
        label: LABEL_OPTIONAL
        type: TYPE_MESSAGE
        type_name: ".rlhf.tensorboard.Summary"
        oneof_index: 0
      }
      oneof_decl { name: "what" }
    }
    message_type {
      name: "Summary"
      field {
        name: "value"
        number: 1
        label: LABEL_REPEATED
        type: TYPE_MESSAGE
        type_name: ".rlhf.tensorboard.Summary.Value"
      }
      nested_type {
        name: "Value"
        field { name: "tag" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
        field { name: "simple_value" number: 2 label: LABEL_OPTIONAL type: TYPE_FLOAT oneof_index: 0 }
        field {
          name: "tensor"
          number: 8
          label: LABEL_OPTIONAL
          type: TYPE_MESSAGE
          type_name: ".rlhf.tensorboard.TensorProto"
          oneof_index: 0
        }
        field {
          name: "metadata"
          number: 9
          label: LABEL_OPTIONAL
          type: TYPE_MESSAGE
          type_name: ".rlhf.tensorboard.SummaryMetadata"
        }
        oneof_decl { name: "value" }
      }
    }
    message_type {
      name: "SummaryMetadata"
      field {
        name: "plugin_data"
        number: 1
        label: LABEL_OPTIONAL
        type: TYPE_MESSAGE
        type_name: ".rlhf.tensorboard.SummaryMetadata.PluginData"
      }
      nested_type {
        name: "PluginData"
        field { name: "plugin_name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
        field { name: "content" number: 2 label: LABEL_OPTIONAL type: TYPE_BYTES }
      }
    }
    message_type {
      name: "TensorShapeProto"
      field {
        name: "dim"
        number: 2
        label: LABEL_REPEATED
        type: TYPE_MESSAGE
        type_name: ".rlhf.tensorboard.TensorShapeProto.Dim"
      }
      nested_type {
        name: "Dim"
        field { name: "size" number: 1 label: LABEL_OPTIONAL type: TYPE_INT64 }
      }
    }
    message_type {
      name: "TensorProto"
      field { name: "dtype" number: 1 label: LABEL_OPTIONAL type: TYPE_ENUM type_name: ".rlhf.tensorboard.DataType" }
      field {
        name: "tensor_shape"
        number: 2
        label: LABEL_OPTIONAL
        type: TYPE_MESSAGE
        type_name: ".rlhf.tensorboard.TensorShapeProto"
      }
      field { name: "string_val" number: 8 label: LABEL_REPEATED type: TYPE_BYTES }
    }
    enum_type {
      name: "DataType"
      value { name: "DT_INVALID" number: 0 }
      value { name: "DT_STRING" number: 7 }
    }
)pb";

/// Serialises TensorBoard events through protobuf's reflection over `tensorboard_schema_text`.
/// Not thread-safe; `tensorboard_sink` serialises its calls.
class tensorboard_events {
public:
    tensorboard_events() {
        google::protobuf::FileDescriptorProto file;
        if (!google::protobuf::TextFormat::ParseFromString(std::string(tensorboard_schema_text), &file) ||
            pool_.BuildFile(file) == nullptr)
            fail(error_kind::state, "rlhf::ppo::tensorboard_sink", "schema", "TensorBoard's event schema to build",
                 "a protobuf descriptor error");
        event_ = message("Event");
        summary_ = message("Summary");
        value_ = message("Summary.Value");
        metadata_ = message("SummaryMetadata");
        plugin_data_ = message("SummaryMetadata.PluginData");
        tensor_ = message("TensorProto");
        prototype_ = factory_.GetPrototype(event_);
    }
    tensorboard_events(const tensorboard_events&) = delete;
    tensorboard_events& operator=(const tensorboard_events&) = delete;

    /// The first event of a file: its format version.
    [[nodiscard]] std::string file_version(double wall_time) const {
        const auto event = new_event(wall_time, 0);
        event->GetReflection()->SetString(event.get(), field(event_, "file_version"), "brain.Event:2");
        return event->SerializeAsString();
    }

    /// One event of scalars (`simple_value`) at `step`.
    [[nodiscard]] std::string scalars(double wall_time, std::int64_t step,
                                      const std::vector<std::pair<std::string, float>>& values) const {
        const auto event = new_event(wall_time, step);
        google::protobuf::Message* summary = mutable_summary(*event);
        for (const auto& [tag, number] : values) {
            google::protobuf::Message* value = add_value(*summary, tag);
            value->GetReflection()->SetFloat(value, field(value_, "simple_value"), number);
        }
        return event->SerializeAsString();
    }

    /// One event of a text sample: what TensorBoard's text plugin reads, a rank-0 DT_STRING
    /// tensor whose metadata names the plugin "text".
    [[nodiscard]] std::string text(double wall_time, std::int64_t step, const std::string& tag,
                                   const std::string& markdown) const {
        const auto event = new_event(wall_time, step);
        google::protobuf::Message* value = add_value(*mutable_summary(*event), tag);
        const google::protobuf::Reflection* reflection = value->GetReflection();

        google::protobuf::Message* metadata = reflection->MutableMessage(value, field(value_, "metadata"), &factory_);
        google::protobuf::Message* plugin =
            metadata->GetReflection()->MutableMessage(metadata, field(metadata_, "plugin_data"), &factory_);
        plugin->GetReflection()->SetString(plugin, field(plugin_data_, "plugin_name"), "text");

        google::protobuf::Message* tensor = reflection->MutableMessage(value, field(value_, "tensor"), &factory_);
        const google::protobuf::Reflection* tensor_reflection = tensor->GetReflection();
        tensor_reflection->SetEnumValue(tensor, field(tensor_, "dtype"), 7);  // DT_STRING
        // An empty shape message: rank 0, a single string.
        tensor_reflection->MutableMessage(tensor, field(tensor_, "tensor_shape"), &factory_);
        tensor_reflection->AddString(tensor, field(tensor_, "string_val"), markdown);
        return event->SerializeAsString();
    }

    /// An empty `Event` of the run-time schema (for parsing records back).
    [[nodiscard]] std::unique_ptr<google::protobuf::Message> new_message() const {
        return std::unique_ptr<google::protobuf::Message>(prototype_->New());
    }

private:
    [[nodiscard]] const google::protobuf::Descriptor* message(const std::string& name) const {
        const google::protobuf::Descriptor* descriptor = pool_.FindMessageTypeByName("rlhf.tensorboard." + name);
        if (descriptor == nullptr)
            fail(error_kind::state, "rlhf::ppo::tensorboard_sink", "schema", "message " + name, "none");
        return descriptor;
    }
    [[nodiscard]] static const google::protobuf::FieldDescriptor* field(const google::protobuf::Descriptor* message,
                                                                        const std::string& name) {
        const google::protobuf::FieldDescriptor* descriptor = message->FindFieldByName(name);
        if (descriptor == nullptr)
            fail(error_kind::state, "rlhf::ppo::tensorboard_sink", "schema", "field " + name, "none");
        return descriptor;
    }
    [[nodiscard]] std::unique_ptr<google::protobuf::Message> new_event(double wall_time, std::int64_t step) const {
        auto event = new_message();
        const google::protobuf::Reflection* reflection = event->GetReflection();
        reflection->SetDouble(event.get(), field(event_, "wall_time"), wall_time);
        reflection->SetInt64(event.get(), field(event_, "step"), step);
        return event;
    }
    [[nodiscard]] google::protobuf::Message* mutable_summary(google::protobuf::Message& event) const {
        return event.GetReflection()->MutableMessage(&event, field(event_, "summary"), &factory_);
    }
    [[nodiscard]] google::protobuf::Message* add_value(google::protobuf::Message& summary,
                                                       const std::string& tag) const {
        google::protobuf::Message* value =
            summary.GetReflection()->AddMessage(&summary, field(summary_, "value"), &factory_);
        value->GetReflection()->SetString(value, field(value_, "tag"), tag);
        return value;
    }

    google::protobuf::DescriptorPool pool_;
    // Builds the messages of `pool_`; declared after it, so destroyed before it.
    mutable google::protobuf::DynamicMessageFactory factory_{&pool_};
    const google::protobuf::Descriptor* event_ = nullptr;
    const google::protobuf::Descriptor* summary_ = nullptr;
    const google::protobuf::Descriptor* value_ = nullptr;
    const google::protobuf::Descriptor* metadata_ = nullptr;
    const google::protobuf::Descriptor* plugin_data_ = nullptr;
    const google::protobuf::Descriptor* tensor_ = nullptr;
    const google::protobuf::Message* prototype_ = nullptr;
};

[[nodiscard]] inline double unix_seconds() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

[[nodiscard]] inline std::string host_name() {
#if __has_include(<unistd.h>)
    std::array<char, 256> name{};
    if (gethostname(name.data(), name.size() - 1) == 0 && name[0] != '\0') return {name.data()};
#endif
    return "localhost";
}

}  // namespace detail

/// Writes TensorBoard event files: every finite numeric field of `for_each_metric` as a scalar at
/// the step (not `step`, the x axis, nor `generation_seed`, an identifier a float would round,
/// nor the `kl_unit` string), and each `eval` result as `eval/<name>`; plus scalars and Markdown
/// text samples of your own (`add_scalar`, `add_text`). Scalars are stored as 32-bit floats, as
/// TensorBoard's `simple_value` is. The constructor creates `log_dir` and the file
/// `events.out.tfevents.<unix seconds>.<host name>` in it (`.<n>` appended if that name is
/// taken), whose first record is the file version. Every write is flushed. Copyable (copies share
/// the file; calls are serialised), so it can be a trainer callback.
/// Errors: a directory that cannot be created or written → `rlhf::error` (kind state, argument
/// `log_dir`); an empty tag → `rlhf::error` (kind value, argument `tag`).
class tensorboard_sink {
public:
    explicit tensorboard_sink(const std::filesystem::path& log_dir) : state_(std::make_shared<state>()) {
        constexpr std::string_view function = "rlhf::ppo::tensorboard_sink";
        std::error_code ec;
        std::filesystem::create_directories(log_dir, ec);
        if (ec || !std::filesystem::is_directory(log_dir))
            fail(error_kind::state, function, "log_dir", "a directory that can be created",
                 log_dir.string() + (ec ? " (" + ec.message() + ")" : std::string(" (not a directory)")));
        const double now = detail::unix_seconds();
        const std::string name =
            "events.out.tfevents." + std::to_string(static_cast<std::int64_t>(now)) + "." + detail::host_name();
        state_->path = log_dir / name;
        for (int n = 1; std::filesystem::exists(state_->path); ++n)
            state_->path = log_dir / (name + "." + std::to_string(n));
        state_->out.open(state_->path, std::ios::binary | std::ios::trunc);
        if (!state_->out)
            fail(error_kind::state, function, "log_dir", "a writable directory",
                 log_dir.string() + " (cannot create " + state_->path.filename().string() + ")");
        write(function, state_->events.file_version(now));
    }

    /// Writes the scalars of one step's metrics (one event at `m.step`).
    void operator()(const step_metrics& m) const {
        std::vector<std::pair<std::string, float>> values;
        for_each_metric(m, [&](std::string_view name, const auto& value) {
            using V = std::decay_t<decltype(value)>;
            if constexpr (std::is_arithmetic_v<V>) {
                if (name == "step" || name == "generation_seed") return;
                const auto number = static_cast<double>(value);
                if (std::isfinite(number)) values.emplace_back(std::string(name), static_cast<float>(number));
            }
        });
        for (const auto& [name, value] : m.eval)
            if (std::isfinite(value)) values.emplace_back("eval/" + name, static_cast<float>(value));
        const std::lock_guard lock(state_->mutex);
        write("rlhf::ppo::tensorboard_sink", state_->events.scalars(detail::unix_seconds(), m.step, values));
    }

    /// Writes one scalar (stored as a float; NaN and infinities are written as they are).
    void add_scalar(std::string_view tag, double value, std::int64_t step) const {
        constexpr std::string_view function = "rlhf::ppo::tensorboard_sink::add_scalar";
        check_tag(function, tag);
        const std::lock_guard lock(state_->mutex);
        write(function,
              state_->events.scalars(detail::unix_seconds(), step, {{std::string(tag), static_cast<float>(value)}}));
    }

    /// Writes one text sample, shown as Markdown by TensorBoard's Text tab.
    void add_text(std::string_view tag, std::string_view markdown, std::int64_t step) const {
        constexpr std::string_view function = "rlhf::ppo::tensorboard_sink::add_text";
        check_tag(function, tag);
        const std::lock_guard lock(state_->mutex);
        write(function, state_->events.text(detail::unix_seconds(), step, std::string(tag), std::string(markdown)));
    }

    /// The events file this sink writes.
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return state_->path; }

private:
    struct state {
        detail::tensorboard_events events;
        std::filesystem::path path;
        std::ofstream out;
        std::mutex mutex;
    };

    static void check_tag(std::string_view function, std::string_view tag) {
        if (tag.empty()) fail(error_kind::value, function, "tag", "a non-empty tag", "\"\"");
    }

    void write(std::string_view function, const std::string& event) const {
        const std::string record = detail::tfrecord(event);
        state_->out.write(record.data(), static_cast<std::streamsize>(record.size()));
        state_->out.flush();
        // A full disk or a removed directory: say so instead of losing the run's curves.
        if (!state_->out) fail(error_kind::state, function, "log_dir", "a writable events file", state_->path.string());
    }

    std::shared_ptr<state> state_;
};

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE::ppo
