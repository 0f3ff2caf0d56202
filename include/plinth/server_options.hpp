//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_SERVER_OPTIONS_HPP
#define PLINTH_SERVER_OPTIONS_HPP

#include <plinth/log.hpp>

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
    log_function log = log_to_stderr;          ///< handler exceptions and I/O errors go here
};

/// A snapshot of a server's counters.
struct server_stats {
    std::uint64_t connections = 0; ///< open now
    std::uint64_t accepted = 0;    ///< accepted so far
    std::uint64_t requests = 0;    ///< requests answered so far (response produced)
};

} // namespace plinth

#endif
