# Shared by the packaging consumers: one program for the core target and one per component
# in `components`; each runs as a test of the consumer project.
enable_testing()
add_executable(use_core "${CMAKE_CURRENT_LIST_DIR}/use_core.cpp")
target_link_libraries(use_core PRIVATE rlhf::rlhf)
add_test(NAME use_core COMMAND use_core)
foreach(component IN LISTS components)
  add_executable(use_${component} "${CMAKE_CURRENT_LIST_DIR}/use_${component}.cpp")
  target_link_libraries(use_${component} PRIVATE rlhf::${component})
  add_test(NAME use_${component} COMMAND use_${component})
endforeach()
