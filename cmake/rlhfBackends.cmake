# rlhf_add_backend(<name> PACKAGE <pkg> [VERSION <v>] [ARGS ...] DEBIAN <deb> LINK <target>
#                  [LINK_BEFORE <libs...>])
#
# Makes the INTERFACE target rlhf_<name> (exported as rlhf::<name>) when <pkg> is found.
# RLHF_WITH_<NAME> decides: AUTO makes it when found, ON fails with a message naming the
# Debian package when not found, OFF never makes it. Sets RLHF_HAS_<NAME>. LINK_BEFORE names
# libraries that must come before <target> on a consumer's link line.
function(rlhf_add_backend name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "PACKAGE;VERSION;DEBIAN;LINK" "ARGS;LINK_BEFORE")
  string(TOUPPER "${name}" upper)
  set(mode "${RLHF_WITH_${upper}}")
  set(RLHF_HAS_${upper} OFF PARENT_SCOPE)
  if(mode STREQUAL "OFF")
    message(STATUS "rlhf::${name}: off (RLHF_WITH_${upper}=OFF)")
    return()
  endif()
  find_package(${arg_PACKAGE} ${arg_VERSION} ${arg_ARGS} QUIET)
  if(NOT ${arg_PACKAGE}_FOUND OR NOT TARGET ${arg_LINK})
    if(mode STREQUAL "ON")
      message(FATAL_ERROR
        "rlhf::${name} was requested (RLHF_WITH_${upper}=ON) but ${arg_PACKAGE} was not found. "
        "On Debian 12: apt-get install ${arg_DEBIAN}; elsewhere set ${arg_PACKAGE}_DIR.")
    endif()
    message(STATUS "rlhf::${name}: not built (${arg_PACKAGE} not found; apt-get install ${arg_DEBIAN})")
    return()
  endif()
  if(NOT PROJECT_IS_TOP_LEVEL)
    # Under add_subdirectory the parent project links rlhf::<name>; the dependency's imported
    # targets (torch -> torch_cpu, ...) must then be visible outside this directory.
    get_property(imported DIRECTORY PROPERTY IMPORTED_TARGETS)
    foreach(target IN LISTS imported)
      get_property(is_global TARGET ${target} PROPERTY IMPORTED_GLOBAL)
      if(NOT is_global)
        set_property(TARGET ${target} PROPERTY IMPORTED_GLOBAL TRUE)
      endif()
    endforeach()
  endif()
  add_library(rlhf_${name} INTERFACE)
  add_library(rlhf::${name} ALIAS rlhf_${name})
  set_target_properties(rlhf_${name} PROPERTIES EXPORT_NAME ${name})
  target_link_libraries(rlhf_${name} INTERFACE rlhf ${arg_LINK_BEFORE} ${arg_LINK})
  set(RLHF_HAS_${upper} ON PARENT_SCOPE)
  message(STATUS "rlhf::${name}: enabled (${arg_PACKAGE} ${${arg_PACKAGE}_VERSION})")
endfunction()
