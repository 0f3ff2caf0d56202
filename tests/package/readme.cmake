# The server shown in README.md must be examples/hello/main.cpp, which the build compiles.
# Run as: cmake -DSOURCE_DIR=... -P readme.cmake
file(READ ${SOURCE_DIR}/README.md readme)
file(READ ${SOURCE_DIR}/examples/hello/main.cpp example)
string(FIND "${readme}" "```cpp\n${example}```" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md's example server differs from examples/hello/main.cpp: copy one into the other")
endif()
