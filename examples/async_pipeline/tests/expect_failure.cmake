# Runs a command that must fail: nonzero exit within 60 s (no hang) and output matching EXPECT.
#   -DCOMMAND=exe|arg|... ('|' separates arguments) -DEXPECT=<regex>
string(REPLACE "|" ";" cmd "${COMMAND}")
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
if(rc MATCHES "timeout")
  message(FATAL_ERROR "the command hung (killed after 60 s):\n${out}\n${err}")
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "the command succeeded but should have failed:\n${out}\n${err}")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "exit status ${rc}, but the output does not match '${EXPECT}':\n${out}\n${err}")
endif()
message(STATUS "failed as expected (exit status ${rc})")
