# Runs delayopt_pipeline on the threads transport and under MPI with the same arguments and requires
# bit-identical results: the loss of every step, the staleness every stage measured and every
# stage's final weights (hashes). Lists use '|' as separator (add_test splits on ';').
#   -DPIPELINE=<exe> -DMPI_LAUNCH=mpiexec|-n|4|... -DARGS=--stages|4|... -DWORK=<dir> -DEXPECT_STALENESS=[3,2,1,0]
foreach(v PIPELINE MPI_LAUNCH ARGS WORK EXPECT_STALENESS)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "compare_transports.cmake: -D${v}=... is missing")
  endif()
endforeach()
string(REPLACE "|" ";" launch "${MPI_LAUNCH}")
string(REPLACE "|" ";" args "${ARGS}")
file(MAKE_DIRECTORY "${WORK}")
file(REMOVE "${WORK}/threads.json" "${WORK}/mpi.json")

execute_process(COMMAND "${PIPELINE}" --transport threads ${args} --json "${WORK}/threads.json"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "threads run failed (${rc}):\n${out}\n${err}")
endif()
execute_process(COMMAND ${launch} "${PIPELINE}" --transport mpi ${args} --json "${WORK}/mpi.json"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "MPI run failed (${rc}):\n${out}\n${err}")
endif()

file(READ "${WORK}/threads.json" threads)
file(READ "${WORK}/mpi.json" mpi)
foreach(field loss staleness param_hash staleness_max)
  string(JSON a GET "${threads}" ${field})
  string(JSON b GET "${mpi}" ${field})
  if(NOT a STREQUAL b)
    message(FATAL_ERROR "'${field}' differs between the threads and MPI transports:\nthreads: ${a}\nmpi:     ${b}")
  endif()
endforeach()
string(JSON staleness GET "${threads}" staleness)
string(REGEX REPLACE "[ \t\n]" "" staleness "${staleness}")
if(NOT staleness STREQUAL EXPECT_STALENESS)
  message(FATAL_ERROR "measured staleness ${staleness}, expected ${EXPECT_STALENESS}")
endif()
string(JSON steps LENGTH "${threads}" loss)
message(STATUS "threads and MPI agree bit for bit over ${steps} steps; staleness ${staleness}")
