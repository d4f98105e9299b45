# One short fuzzing run of a libFuzzer target (the ctest tests labelled `fuzz`):
#   cmake -DFUZZER=<exe> -DWORK_DIR=<dir> -DSEEDS=<corpus dir> -DSECONDS=<n> -P run_fuzzer.cmake
# WORK_DIR/corpus starts empty and receives the new inputs; the committed SEEDS are only read.
# A crash input is written to WORK_DIR/ (crash-<sha1>), and the test fails.
foreach(var FUZZER WORK_DIR SEEDS SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${var}=... is missing")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}/corpus")
file(MAKE_DIRECTORY "${WORK_DIR}/corpus")
set(seed_dirs "")
if(IS_DIRECTORY "${SEEDS}")
  set(seed_dirs "${SEEDS}")
endif()
execute_process(
  COMMAND "${FUZZER}" "${WORK_DIR}/corpus" ${seed_dirs} -max_total_time=${SECONDS} -rss_limit_mb=2048 -timeout=30
    -print_final_stats=1 "-artifact_prefix=${WORK_DIR}/"
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (exit ${result}); the input that failed is in ${WORK_DIR}/")
endif()
