# A translation unit that only defines handlers and routes (tests/perf/routes_only.cpp) must not
# include the connection, the server, the HTTP/1 reader or sockets:
#   cmake -DSOURCE_DIR=<plinth> -DCXX=<compiler> -P routes_only.cmake
cmake_minimum_required(VERSION 3.25)
execute_process(
  COMMAND ${CXX} -std=c++20 -I${SOURCE_DIR}/include -M ${SOURCE_DIR}/tests/perf/routes_only.cpp
  OUTPUT_VARIABLE deps RESULT_VARIABLE failed)
if(failed)
  message(FATAL_ERROR "routes_only: ${CXX} -M failed")
endif()
set(offences "")
foreach(forbidden plinth/detail/connection.hpp plinth/server.hpp plinth/detail/h1/reader.hpp
        boost/asio/ip/tcp.hpp boost/beast/http/parser.hpp)
  string(FIND "${deps}" "${forbidden}" at)
  if(NOT at EQUAL -1)
    list(APPEND offences ${forbidden})
  endif()
endforeach()
if(offences)
  message(FATAL_ERROR "routes_only: a routes-only translation unit includes ${offences}")
endif()
string(REGEX MATCHALL "[^ \\\n]+\\.hpp" headers "${deps}")
list(LENGTH headers count)
message(STATUS "routes_only: ${count} headers, none of the connection's")
