# Install rules: headers, one export set per component, the package config and its version file.
include(CMakePackageConfigHelpers)
set(RLHF_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_DATADIR}/cmake/rlhf")

install(TARGETS rlhf EXPORT rlhfTargets FILE_SET HEADERS DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT rlhfTargets NAMESPACE rlhf:: DESTINATION "${RLHF_CMAKE_INSTALL_DIR}")
export(EXPORT rlhfTargets NAMESPACE rlhf:: FILE "${PROJECT_BINARY_DIR}/rlhfTargets.cmake")

set(RLHF_INSTALLED_COMPONENTS "")
foreach(component libtorch distributed eigen xtensor cuda tensorboard)
  if(TARGET rlhf_${component})
    install(TARGETS rlhf_${component} EXPORT rlhf-${component}-targets)
    install(EXPORT rlhf-${component}-targets NAMESPACE rlhf:: DESTINATION "${RLHF_CMAKE_INSTALL_DIR}")
    list(APPEND RLHF_INSTALLED_COMPONENTS ${component})
  endif()
endforeach()

configure_package_config_file(cmake/rlhfConfig.cmake.in "${PROJECT_BINARY_DIR}/rlhfConfig.cmake"
  INSTALL_DESTINATION "${RLHF_CMAKE_INSTALL_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/rlhfConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/rlhfConfig.cmake" "${PROJECT_BINARY_DIR}/rlhfConfigVersion.cmake"
  DESTINATION "${RLHF_CMAKE_INSTALL_DIR}")
install(FILES LICENSE DESTINATION "${CMAKE_INSTALL_DOCDIR}")
