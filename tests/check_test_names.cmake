# Test-case names become ctest names and doctest filters: a ';' splits a ctest name in two, a ','
# hides the case's labels, and a '[' without its ']' makes CMake's list of discovered tests swallow
# the cases after it. This check fails on any of them in any TEST_CASE name.
file(GLOB_RECURSE sources "${SOURCE_DIR}/*.cpp" "${SOURCE_DIR}/*.cu" "${SOURCE_DIR}/*.hpp" "${SOURCE_DIR}/*.cuh")
set(bad "")
foreach(source IN LISTS sources)
  file(STRINGS "${source}" lines REGEX "TEST_CASE(_TEMPLATE)?\\(\"([^\"]*[,;][^\"]*|[^\"]*\\[[^]\"]*)\"")
  foreach(line IN LISTS lines)
    string(APPEND bad "\n  ${source}: ${line}")
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "test case names with ',', ';' or an unclosed '[':${bad}")
endif()
