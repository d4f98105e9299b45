# Test-case names become ctest names and doctest filters: a ';' splits a ctest name in two and
# a ',' hides the case's labels. This check fails on either in any TEST_CASE name.
file(GLOB_RECURSE sources "${SOURCE_DIR}/*.cpp")
set(bad "")
foreach(source IN LISTS sources)
  file(STRINGS "${source}" lines REGEX "TEST_CASE(_TEMPLATE)?\\(\"[^\"]*[,;][^\"]*\"")
  foreach(line IN LISTS lines)
    string(APPEND bad "\n  ${source}: ${line}")
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "test case names with ',' or ';':${bad}")
endif()
