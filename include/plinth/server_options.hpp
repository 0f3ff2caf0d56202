//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_SERVER_OPTIONS_HPP
#define PLINTH_SERVER_OPTIONS_HPP

#include <plinth/log.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace plinth {

/// How a server listens and what it tolerates. Every limit has a default and a status.
struct server_options {
    std::string address = "127.0.0.1";        ///< address to bind
    std::uint16_t port = 8080;                 ///< port to bind; 0 picks a free one (see server::port)
    std::string server_name = "plinth";        ///< the `Server` header
    std::uint32_t max_header_bytes = 8 * 1024; ///< request line + headers; beyond: 431 and close
    std::uint64_t max_body_bytes = 1 << 20;    ///< request body; beyond: 413 and close
    /// Timeout given to every suspended request (its handler may change it); zero: none.
    std::chrono::milliseconds suspend_timeout{0};
    /// Requests suspended at once; a suspension beyond it is answered 503 at once.
    std::uint64_t max_suspended = 100'000;
    /// Bytes of pipelined requests read ahead while a request waits; beyond it the connection
    /// stops reading (and so stops noticing a disconnect) until the response is written.
    std::size_t max_read_ahead_bytes = 64 * 1024;
    log_function log = log_to_stderr;          ///< handler exceptions and I/O errors go here
};

/// A snapshot of a server's counters.
struct server_stats {
    std::uint64_t connections = 0; ///< open now
    std::uint64_t accepted = 0;    ///< accepted so far
    std::uint64_t requests = 0;    ///< requests answered so far (response produced)
    std::uint64_t suspended = 0;    ///< requests suspended now
    std::uint64_t resumed = 0;      ///< suspensions resumed (response or error)
    std::uint64_t cancelled = 0;    ///< suspensions cancelled (503)
    std::uint64_t timed_out = 0;    ///< suspensions timed out without a handler resolving them
    std::uint64_t disconnected = 0; ///< suspended requests whose client went away
    std::uint64_t completed = 0;    ///< suspensions completed (on_complete fired)
};

} // namespace plinth

#endif
