# The package test: install plinth into a fresh prefix, then build and run examples/consumer
# against it with find_package, and once more through add_subdirectory.
# Run as: cmake -DSOURCE_DIR=... -DWORK_DIR=... -DCXX=... -P check.cmake

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/plinth -G Ninja -DCMAKE_CXX_COMPILER=${CXX}
    -DCMAKE_INSTALL_PREFIX=${prefix} -DPLINTH_BUILD_TESTS=OFF -DPLINTH_BUILD_EXAMPLES=OFF)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/plinth)

foreach(f include/plinth/plinth.hpp include/plinth/detail/connection.hpp)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "not installed: ${f}")
  endif()
endforeach()
file(GLOB_RECURSE config ${prefix}/*/plinthConfig.cmake)
file(GLOB_RECURSE config_version ${prefix}/*/plinthConfigVersion.cmake)
if(NOT config OR NOT config_version)
  message(FATAL_ERROR "plinthConfig.cmake or plinthConfigVersion.cmake not installed under ${prefix}")
endif()

# find_package(plinth CONFIG REQUIRED) from the installed prefix.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${WORK_DIR}/consumer -G Ninja
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer)
run(${WORK_DIR}/consumer/plinth-consumer)

# add_subdirectory: plinth's own tests and examples stay off.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/consumer -B ${WORK_DIR}/consumer-subdir -G Ninja
    -DCMAKE_CXX_COMPILER=${CXX} -DPLINTH_SOURCE_DIR=${SOURCE_DIR})
if(EXISTS ${WORK_DIR}/consumer-subdir/plinth/tests OR EXISTS ${WORK_DIR}/consumer-subdir/plinth/examples)
  message(FATAL_ERROR "add_subdirectory(plinth) configured plinth's tests or examples")
endif()
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-subdir)
run(${WORK_DIR}/consumer-subdir/plinth-consumer)
message(STATUS "package test passed")
