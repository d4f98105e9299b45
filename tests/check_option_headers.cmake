# The option headers (include/rlhf/options/) are plain data: a configuration that includes them
# must not compile a kernel. This check fails when one of them includes anything of rlhf but
# core/, options/ or version.hpp.
file(GLOB headers "${SOURCE_DIR}/include/rlhf/options/*.hpp")
if(NOT headers)
  message(FATAL_ERROR "no option headers under ${SOURCE_DIR}/include/rlhf/options")
endif()
set(bad "")
foreach(header IN LISTS headers)
  file(STRINGS "${header}" lines REGEX "^#include \"rlhf/")
  foreach(line IN LISTS lines)
    if(NOT line MATCHES "^#include \"rlhf/(core/|options/|version\\.hpp)")
      string(APPEND bad "\n  ${header}: ${line}")
    endif()
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "option headers that include more than core/, options/ and version.hpp:${bad}")
endif()
