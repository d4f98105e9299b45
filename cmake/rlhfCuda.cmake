# The CUDA kernels (include/rlhf/cuda/*.cuh): rlhf::cuda, for translation units compiled by nvcc.
#
# RLHF_WITH_CUDA decides: AUTO makes rlhf::cuda when a CUDA compiler is found, ON fails without
# one, OFF never makes it. Sets RLHF_HAS_CUDA. The project's CUDA targets build for
# RLHF_CUDA_ARCHITECTURES (default 90: SASS for Hopper plus PTX that later GPUs compile at load time).
# No GPU is needed to build: the tests that need one exit with 77 and ctest reports them skipped.
set(RLHF_WITH_CUDA AUTO CACHE STRING "Make rlhf::cuda: ON (required), OFF, or AUTO (when nvcc is found)")
set(RLHF_HAS_CUDA OFF)
if(RLHF_WITH_CUDA STREQUAL "OFF")
  message(STATUS "rlhf::cuda: off (RLHF_WITH_CUDA=OFF)")
  return()
endif()
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(RLHF_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "rlhf::cuda was requested (RLHF_WITH_CUDA=ON) but no CUDA compiler was found: "
                        "install the CUDA toolkit or set CMAKE_CUDA_COMPILER to its nvcc.")
  endif()
  message(STATUS "rlhf::cuda: not built (no CUDA compiler; install the CUDA toolkit)")
  return()
endif()
# The architectures of the project's own CUDA targets (tests, benchmarks); a consumer of
# rlhf::cuda chooses its own (CMAKE_CUDA_ARCHITECTURES). A CUDA LibTorch may have enabled the
# language, and fixed CMake's default architectures, before this file runs.
set(RLHF_CUDA_ARCHITECTURES 90 CACHE STRING "CUDA architectures of rlhf's tests and benchmarks (90: sm_90 + PTX)")
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES ${RLHF_CUDA_ARCHITECTURES})
endif()
if(NOT DEFINED CMAKE_CUDA_HOST_COMPILER AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(CMAKE_CUDA_HOST_COMPILER "${CMAKE_CXX_COMPILER}")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
add_library(rlhf_cuda INTERFACE)
add_library(rlhf::cuda ALIAS rlhf_cuda)
set_target_properties(rlhf_cuda PROPERTIES EXPORT_NAME cuda)
target_link_libraries(rlhf_cuda INTERFACE rlhf CUDA::cudart)
# C++20 as a flag: CMake 3.25 does not know nvcc 13's standard levels (cuda_std_20). The
# per-element math of rlhf/kernels is host-device; std::numeric_limits and std::bit_cast are
# constexpr host functions that device code may call with --expt-relaxed-constexpr.
target_compile_options(rlhf_cuda INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr>)
set(RLHF_HAS_CUDA ON)
message(STATUS "rlhf::cuda: enabled (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${RLHF_CUDA_ARCHITECTURES})")
