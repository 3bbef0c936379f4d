// mproc: Python's multiprocessing for C++20 on Linux.
// Version macros and the versioned inline namespace every public name lives in.
// The three numbers below are the project's one version: CMakeLists.txt reads them for the CMake
// package, mproc.pc and the Debian package, and a test checks CHANGELOG.md against them.
#pragma once

#define MPROC_VERSION_MAJOR 0
#define MPROC_VERSION_MINOR 1
#define MPROC_VERSION_PATCH 0

#define MPROC_DETAIL_CAT2(a, b) a##b
#define MPROC_DETAIL_CAT(a, b) MPROC_DETAIL_CAT2(a, b)
#define MPROC_DETAIL_STR2(a) #a
#define MPROC_DETAIL_STR(a) MPROC_DETAIL_STR2(a)

// The ABI namespace follows the major version: a program that links two copies of mproc with
// different majors gets distinct symbols instead of silent ODR violations.
#define MPROC_ABI_NAMESPACE MPROC_DETAIL_CAT(v, MPROC_VERSION_MAJOR)

#define MPROC_NAMESPACE_BEGIN \
    namespace mproc {         \
    inline namespace MPROC_ABI_NAMESPACE {
#define MPROC_NAMESPACE_END \
    }                       \
    }

/// @namespace mproc
/// Every public name of mproc. The names live in an inline namespace named after the major
/// version (`mproc::v0`), which user code never spells; `mproc::detail` is the implementation.
MPROC_NAMESPACE_BEGIN

/// The library version as "major.minor.patch".
inline constexpr const char* version_string =
    MPROC_DETAIL_STR(MPROC_VERSION_MAJOR) "." MPROC_DETAIL_STR(MPROC_VERSION_MINOR) "." MPROC_DETAIL_STR(MPROC_VERSION_PATCH);

MPROC_NAMESPACE_END
