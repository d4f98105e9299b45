# The read-back test: rlhf_tensorboard_writer writes an events file, TensorBoard's own reader
# (read_events.py in TensorBoard's virtual environment) must find its scalars, values and text,
# and must reject copies with a flipped byte (so the CRCs it accepted were checked).
#   cmake -DWRITER=... -DPYTHON=... -DSCRIPT=... -DDIR=... -P read_back.cmake
if(NOT PYTHON)
  message(FATAL_ERROR "No Python with TensorBoard (RLHF_TENSORBOARD_PYTHON is empty): run "
                      "cmake/install-deps.sh, then configure again (or set RLHF_TENSORBOARD_PYTHON).")
endif()
file(REMOVE_RECURSE "${DIR}")

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${what}:\n${out}${err}")
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${what} failed (${result})")
  endif()
endfunction()

run_step("writer" "${WRITER}" "${DIR}/run")
run_step("TensorBoard's reader" "${PYTHON}" "${SCRIPT}" "${DIR}/run" --list --min-steps 4
  --expect-scalar policy_loss --expect-scalar kl --expect-scalar eval/accuracy --expect-scalar ratio_max
  --expect-value policy_loss 2 0.6666666666666666 --expect-value kl 2 -0.25 --expect-value eval/accuracy 4 1.0
  --expect-value ratio_max 1 0 --expect-value custom/reward 7 0.001
  --expect-value value_loss 1 0.5 --expect-absent value_loss 2 --expect-absent step 1
  --expect-text samples --expect-text-value samples 3 "**step 3**" --expect-text-value samples 4 "été")
run_step("TensorBoard's reader on corrupted copies" "${PYTHON}" "${SCRIPT}" "${DIR}/run"
  --check-corruption-detected "${DIR}/corrupt")
# The checks can fail: a value that was not written must be reported.
execute_process(COMMAND "${PYTHON}" "${SCRIPT}" "${DIR}/run" --expect-value policy_loss 2 0.6667
  RESULT_VARIABLE result OUTPUT_QUIET ERROR_QUIET)
if(result EQUAL 0)
  message(FATAL_ERROR "read_events.py accepted a wrong value")
endif()
