#pragma once
// Reading the golden-format JSON files: reference outputs of peer frameworks' own functions.
// Layout (tests/data/golden/README.md): metadata, `input_sets` and `cases`, each case with
// `params`, `input_set` and either `outputs` or `error`. Tensors are nested lists of numbers,
// with "nan", "inf", "-inf" as strings.

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "rlhf/core/view.hpp"

namespace rlhf_golden {

using json = nlohmann::json;
using rlhf::index_t;

/// A dense row-major tensor of doubles read from JSON; a scalar has an empty shape.
struct tensor {
    std::vector<double> data;
    std::vector<index_t> shape;

    [[nodiscard]] index_t rank() const { return static_cast<index_t>(shape.size()); }
    [[nodiscard]] index_t dim(std::size_t d) const { return shape.at(d); }
    [[nodiscard]] double scalar() const {
        if (data.size() != 1) throw std::runtime_error("golden: expected a scalar");
        return data.front();
    }
    /// `[rows, cols]` view; a rank-1 tensor is one row.
    [[nodiscard]] rlhf::view<double> matrix() const {
        if (shape.size() == 2) return rlhf::make_view(data.data(), shape[0], shape[1]);
        if (shape.size() == 1) return rlhf::make_view(data.data(), 1, shape[0]);
        throw std::runtime_error("golden: expected a rank-1 or rank-2 tensor");
    }
    [[nodiscard]] rlhf::mut_view<double> mut_matrix() {
        if (shape.size() != 2) throw std::runtime_error("golden: expected a rank-2 tensor");
        return rlhf::make_mut_view(data.data(), shape[0], shape[1]);
    }
    [[nodiscard]] rlhf::view<double, 1> vector() const { return {data.data(), {static_cast<index_t>(data.size())}}; }
    [[nodiscard]] rlhf::view<double, 3> cube() const {
        if (shape.size() != 3) throw std::runtime_error("golden: expected a rank-3 tensor");
        return {data.data(), {shape[0], shape[1], shape[2]}};
    }

    static tensor zeros(std::vector<index_t> shape) {
        index_t n = 1;
        for (index_t e : shape) n *= e;
        return {std::vector<double>(static_cast<std::size_t>(n), 0.0), std::move(shape)};
    }
    static tensor of_scalar(double value) { return {{value}, {}}; }
};

/// A JSON number, or one of the strings "nan", "inf", "-inf".
inline double parse_number(const json& value) {
    if (value.is_number()) return value.get<double>();
    if (value.is_boolean()) return value.get<bool>() ? 1.0 : 0.0;
    if (value.is_string()) {
        const auto text = value.get<std::string>();
        if (text == "nan") return std::numeric_limits<double>::quiet_NaN();
        if (text == "inf") return std::numeric_limits<double>::infinity();
        if (text == "-inf") return -std::numeric_limits<double>::infinity();
    }
    throw std::runtime_error("golden: not a number: " + value.dump());
}

namespace detail {
inline void flatten(const json& value, std::size_t depth, tensor& out) {
    if (!value.is_array()) {
        out.data.push_back(parse_number(value));
        return;
    }
    const auto n = static_cast<index_t>(value.size());
    if (out.shape.size() <= depth)
        out.shape.push_back(n);
    else if (out.shape[depth] != n)
        throw std::runtime_error("golden: ragged nested list");
    for (const auto& item : value) flatten(item, depth + 1, out);
}
}  // namespace detail

/// Parses a number or a nested list into a tensor.
inline tensor parse_tensor(const json& value) {
    tensor out;
    detail::flatten(value, 0, out);
    return out;
}

/// True when `value` is numeric data (a number, a numeric string, or a nested list of them).
inline bool is_numeric(const json& value) {
    if (value.is_number() || value.is_boolean()) return true;
    if (value.is_string()) {
        const auto text = value.get<std::string>();
        return text == "nan" || text == "inf" || text == "-inf";
    }
    if (value.is_array()) {
        for (const auto& item : value)
            if (!is_numeric(item)) return false;
        return true;
    }
    return false;
}

/// Flattens numeric outputs into "name" or "name.key" entries (nested dicts such as TRL's stats).
inline void flatten_outputs(const json& value, const std::string& prefix, std::map<std::string, tensor>& out) {
    if (value.is_object()) {
        for (const auto& [key, item] : value.items())
            flatten_outputs(item, prefix.empty() ? key : prefix + "." + key, out);
    } else if (is_numeric(value)) {
        out[prefix] = parse_tensor(value);
    } else if (value.is_array()) {  // a list of records (per-step states): "steps.0.mean", ...
        for (std::size_t i = 0; i < value.size(); ++i) flatten_outputs(value[i], prefix + "." + std::to_string(i), out);
    }
}

/// One case of a golden file.
struct golden_case {
    std::string name;
    json params;                            // the peer call's keyword arguments
    const json* inputs = nullptr;           // the input set: name -> nested list / number
    std::optional<std::string> error;       // "<Type>: <message>" when the peer raised
    std::map<std::string, tensor> outputs;  // flattened expected outputs
    json raw_outputs;                       // as stored, for non-numeric fields

    [[nodiscard]] bool has_input(const std::string& key) const { return inputs->contains(key); }
    [[nodiscard]] tensor input(const std::string& key) const {
        if (!inputs->contains(key)) throw std::runtime_error("golden: case " + name + " has no input '" + key + "'");
        return parse_tensor(inputs->at(key));
    }
    [[nodiscard]] bool has_param(const std::string& key) const {
        return params.contains(key) && !params[key].is_null();
    }
    template <class T>
    [[nodiscard]] T param(const std::string& key) const {
        if (!params.contains(key)) throw std::runtime_error("golden: case " + name + " has no param '" + key + "'");
        return params.at(key).get<T>();
    }
    template <class T>
    [[nodiscard]] T param_or(const std::string& key, T fallback) const {
        return has_param(key) ? params.at(key).get<T>() : fallback;
    }
    [[nodiscard]] double number_param(const std::string& key) const { return parse_number(params.at(key)); }
};

/// A golden file: provenance and cases.
struct golden_file {
    std::filesystem::path path;
    std::string golden_id, peer, commit, source_path, call, notes;
    json document;  // owns the input sets the cases point into
    std::vector<golden_case> cases;
};

inline golden_file load_golden_file(const std::filesystem::path& path) {
    std::ifstream stream(path);
    if (!stream) throw std::runtime_error("golden: cannot open " + path.string());
    golden_file file;
    file.path = path;
    file.document = json::parse(stream);
    const json& doc = file.document;
    file.golden_id = doc.value("golden_id", path.stem().string());
    file.peer = doc.value("peer", "");
    file.commit = doc.value("commit", "");
    file.source_path = doc.value("source_path", "");
    file.call = doc.value("call", "");
    file.notes = doc.value("notes", "");
    for (const json& item : doc.at("cases")) {
        golden_case c;
        c.name = item.value("name", "");
        c.params = item.value("params", json::object());
        c.inputs = &doc.at("input_sets").at(item.at("input_set").get<std::string>());
        if (item.contains("error")) c.error = item.at("error").get<std::string>();
        if (item.contains("outputs")) {
            c.raw_outputs = item.at("outputs");
            flatten_outputs(c.raw_outputs, "", c.outputs);
        }
        file.cases.push_back(std::move(c));
    }
    return file;
}

}  // namespace rlhf_golden
