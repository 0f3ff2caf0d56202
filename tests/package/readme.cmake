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
