#pragma once
/// @file
/// Library version (kept in step with `project(rlhf VERSION ...)`, which reads it from here).

#define RLHF_VERSION_MAJOR 0
#define RLHF_VERSION_MINOR 1
#define RLHF_VERSION_PATCH 0

namespace rlhf {

/// "0.1.0"
inline constexpr const char* version_string = "0.1.0";

}  // namespace rlhf
