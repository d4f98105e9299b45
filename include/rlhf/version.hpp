#pragma once
/// @file
/// The library's version: the one place it is written (`project(rlhf VERSION ...)` in
/// CMakeLists.txt reads it from here), and the inline namespace that carries it.

#define RLHF_VERSION_MAJOR 0
#define RLHF_VERSION_MINOR 1
#define RLHF_VERSION_PATCH 0

#define RLHF_DETAIL_STRINGIFY_(x) #x
#define RLHF_DETAIL_STRINGIFY(x) RLHF_DETAIL_STRINGIFY_(x)
#define RLHF_DETAIL_VERSION_STRING            \
    RLHF_DETAIL_STRINGIFY(RLHF_VERSION_MAJOR) \
    "." RLHF_DETAIL_STRINGIFY(RLHF_VERSION_MINOR) "." RLHF_DETAIL_STRINGIFY(RLHF_VERSION_PATCH)
#define RLHF_DETAIL_ABI_NAMESPACE_(major, minor) v##major##_##minor
#define RLHF_DETAIL_ABI_NAMESPACE(major, minor) RLHF_DETAIL_ABI_NAMESPACE_(major, minor)

/// The inline namespace every declaration of the library lives in, `v<MAJOR>_<MINOR>` (`v0_1`):
/// `rlhf::view` is `rlhf::v0_1::view`. Versions that may differ in layout or behaviour get
/// different mangled names, so two of them in one program never share a definition. It follows
/// the package's compatibility rule (`SameMinorVersion`): patch releases share it.
#define RLHF_ABI_NAMESPACE RLHF_DETAIL_ABI_NAMESPACE(RLHF_VERSION_MAJOR, RLHF_VERSION_MINOR)

namespace rlhf::inline RLHF_ABI_NAMESPACE {

/// "MAJOR.MINOR.PATCH", from the macros above ("0.1.0").
inline constexpr const char* version_string = RLHF_DETAIL_VERSION_STRING;

}  // namespace rlhf::inline RLHF_ABI_NAMESPACE
