# rlhf_warnings: the warning set of the library's own tests, benchmarks and examples.
# Never exported: consumers choose their own warnings.
add_library(rlhf_warnings INTERFACE)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(rlhf_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Wdouble-promotion -Wimplicit-fallthrough>)
  if(RLHF_WARNINGS_AS_ERRORS)
    target_compile_options(rlhf_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 13)
      # g++ 13 reports -Warray-bounds in libstdc++ code inlined from torch's and xtensor's headers
      # at the caller's line, where SYSTEM include directories do not silence it: a warning only.
      target_compile_options(rlhf_warnings INTERFACE -Wno-error=array-bounds)
    endif()
  endif()
  # nvcc: its own diagnostics (device code, host-device calls) as errors; the host compiler's
  # warning set would judge nvcc's generated stubs.
  if(RLHF_WARNINGS_AS_ERRORS)
    target_compile_options(rlhf_warnings INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>)
  endif()
elseif(MSVC)
  target_compile_options(rlhf_warnings INTERFACE /W4 /permissive-)
  if(RLHF_WARNINGS_AS_ERRORS)
    target_compile_options(rlhf_warnings INTERFACE /WX)
  endif()
endif()
