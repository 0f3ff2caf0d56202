# The example programs shown in README.md must be the files the build compiles.
# Run as: cmake -DSOURCE_DIR=... -P readme.cmake
file(READ ${SOURCE_DIR}/README.md readme)
foreach(example examples/hello/main.cpp examples/sse/main.cpp examples/long_poll/main.cpp)
  file(READ ${SOURCE_DIR}/${example} code)
  string(FIND "${readme}" "```cpp\n${code}```" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "README.md's copy of ${example} differs from the file: copy one into the other")
  endif()
endforeach()

# The benchmark figures in README.md are tests/perf/results.md as tests/perf/run wrote them.
file(READ ${SOURCE_DIR}/tests/perf/results.md results)
string(REPLACE "](results.png)" "](tests/perf/results.png)" results "${results}")
string(STRIP "${results}" results)
string(FIND "${readme}" "results.md -->\n${results}\n<!-- end of tests/perf/run's results -->" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md's benchmark figures differ from tests/perf/results.md: tests/perf/run writes both")
endif()
