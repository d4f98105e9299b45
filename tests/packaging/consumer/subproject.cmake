# Shared by the consumers that build rlhf as a subproject (add_subdirectory, FetchContent): rlhf
# then builds none of its own tests, benchmarks or examples; then the consumer programs.
foreach(target rlhf_core_tests rlhf_doctest_main)
  if(TARGET ${target})
    message(FATAL_ERROR "rlhf built its own target ${target} as a subproject")
  endif()
endforeach()
string(REPLACE "," ";" components "${RLHF_COMPONENTS}")

include("${CMAKE_CURRENT_LIST_DIR}/consumer.cmake")
