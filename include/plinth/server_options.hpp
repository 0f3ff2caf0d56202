//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_SERVER_OPTIONS_HPP
#define PLINTH_SERVER_OPTIONS_HPP

#include <plinth/log.hpp>
#include <plinth/stream_options.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace plinth {

/// How a server listens and what it tolerates. Every limit has a default and a status; a zero
/// timeout means "none".
struct server_options {
    std::string address = "127.0.0.1";  ///< address to bind
    std::uint16_t port = 8080;          ///< port to bind; 0 picks a free one (see server::port)
    std::string server_name = "plinth"; ///< the `Server` header, unless the response has one

    /// Request line + headers; beyond: 431 and close (414 when the request line alone is longer).
    std::uint32_t max_header_bytes = 8 * 1024;
    /// Request body; beyond: 413 and close, before reading it when Content-Length announces it.
    std::uint64_t max_body_bytes = 1 << 20;
    /// The whole header block must arrive within this, from its first byte (or from the accept);
    /// a client that drips bytes does not extend it. Beyond: 408 and close.
    std::chrono::milliseconds header_timeout{10'000};
    /// The whole body must arrive within this, once the headers are in. Beyond: 408 and close.
    std::chrono::milliseconds body_timeout{30'000};
    /// A kept-alive connection waiting for its next request is closed after this. Never applies
    /// while a request is being handled, suspended or streamed.
    std::chrono::milliseconds idle_timeout{60'000};
    /// A kept-alive connection idle this long (up to twice as long) gives back what serving a
    /// request takes (its read buffer, its coroutine frame, the request's state) and waits for
    /// the next one holding almost nothing; a client that sends its next request sooner finds
    /// them ready. Zero: never.
    std::chrono::milliseconds idle_release{50};
    /// A response must be handed to the socket within this; a client that stops reading is dropped.
    std::chrono::milliseconds write_timeout{30'000};
    /// Connections open at once; a connection beyond it is answered 503 and closed, and the
    /// accepted ones are not disturbed.
    std::uint32_t max_connections = 10'000;

    /// Timeout given to every suspended request (its handler may change it); zero: none.
    std::chrono::milliseconds suspend_timeout{0};
    /// Requests suspended at once; a suspension beyond it is answered 503 at once.
    std::uint64_t max_suspended = 100'000;
    /// Bytes of pipelined requests read ahead while a request waits; beyond it the connection
    /// stops reading (and so stops noticing a disconnect) until the response is written.
    std::size_t max_read_ahead_bytes = 64 * 1024;

    /// Defaults of the streamed responses and event streams requests open: queue bounds, what a
    /// full queue does, the event streams' heartbeat. A stream is cut by `write_timeout` only
    /// when a write makes no progress for that long; idle and header timeouts do not apply.
    stream_options streams{};

    /// How long `server::stop` lets requests in flight finish before it answers every request
    /// still suspended or waiting 503 with `Retry-After: shutdown_retry_after`.
    std::chrono::milliseconds shutdown_grace{5'000};
    /// The `Retry-After` of the 503s a shutdown sends.
    std::chrono::seconds shutdown_retry_after{5};

    /// Set when one thread alone runs the io_context (`io_context::run` called from one thread):
    /// connections then run on the io_context's executor instead of a strand each, which spares
    /// every handler a lock and a type-erased hop (RESTinio's single-threaded traits do the same).
    /// `async_response`, streams and `stop` stay safe to use from any thread. Running the
    /// io_context on more than one thread with this set is a data race.
    bool single_threaded = false;

    /// Handler and callback exceptions and I/O errors go here; a client that leaves (EOF, reset,
    /// broken pipe) is not an error. Null: no logging.
    log_function log = log_to_stderr;
};

/// A snapshot of a server's counters.
struct server_stats {
    std::uint64_t connections = 0;  ///< open now
    std::uint64_t accepted = 0;     ///< accepted so far
    std::uint64_t requests = 0;     ///< requests answered so far (response produced)
    std::uint64_t suspended = 0;    ///< requests suspended now
    std::uint64_t resumed = 0;      ///< suspensions resumed (response or error)
    std::uint64_t cancelled = 0;    ///< suspensions cancelled (503)
    std::uint64_t timed_out = 0;    ///< suspensions timed out without a handler resolving them
    std::uint64_t disconnected = 0; ///< suspended requests whose client went away
    std::uint64_t completed = 0;    ///< suspensions completed (on_complete fired)
    std::uint64_t refused = 0;      ///< connections refused beyond max_connections (503)
    std::uint64_t rejected = 0;     ///< requests answered with an error before any handler ran (4xx/5xx)
    std::uint64_t timeouts = 0;     ///< connections closed by a header, body, idle or write timeout
    std::uint64_t streams = 0;      ///< streamed responses (chunked bodies, event streams) open now
};

} // namespace plinth

#endif
