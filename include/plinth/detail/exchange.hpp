//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_EXCHANGE_HPP
#define PLINTH_DETAIL_EXCHANGE_HPP

// What belongs to one request while it runs, and what a server tells it: the state the HTTP
// context points at, independent of the protocol that carries the request.

#include <plinth/detail/stream_state.hpp>
#include <plinth/detail/suspension.hpp>
#include <plinth/log.hpp>
#include <plinth/message.hpp>
#include <plinth/path_params.hpp>
#include <plinth/stream_options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/container/small_vector.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>

namespace plinth::detail {

/// Counters of suspended requests, kept by a server.
struct suspension_stats {
    std::atomic<std::uint64_t> suspended{0};    ///< suspended now
    std::atomic<std::uint64_t> resumed{0};      ///< resumed (with a response or an error)
    std::atomic<std::uint64_t> cancelled{0};    ///< cancelled: 503
    std::atomic<std::uint64_t> timed_out{0};    ///< timed out and not resolved by a handler
    std::atomic<std::uint64_t> disconnected{0}; ///< the client went away first
    std::atomic<std::uint64_t> completed{0};    ///< on_complete fired
    std::atomic<std::uint64_t> streams{0};      ///< streamed responses (chunked, events) open now
};

struct exchange;

/// What a server tells the requests it runs about suspension.
struct suspension_policy {
    std::chrono::steady_clock::duration default_timeout{}; ///< zero: none
    std::uint64_t max_suspended = std::numeric_limits<std::uint64_t>::max();
    /// Shared by every suspension (each would otherwise carry a copy); null: no log.
    std::shared_ptr<const log_function> log = std::make_shared<const log_function>(log_to_stderr);
    std::chrono::seconds shutdown_retry_after{5}; ///< of the 503 a shutdown answers with
    stream_options streams;                       ///< defaults of the streams requests open
    suspension_stats stats;
};

/// Where an exchange's response goes, as the HTTP layer sees it: an HTTP/1 connection, or (one
/// day) a stream of an HTTP/2 session. The sink knows the framing; the exchange knows none.
class response_sink {
public:
    /// The request is about to wait: notice the client leaving from now on.
    virtual void watch_for_disconnect() = 0;

    /// The server's shutdown grace has run out: a new suspension is cancelled at once.
    virtual bool stopping() const noexcept = 0;

    /// `ex` is this owner's own exchange (not a copy of it), whose suspensions it completes or
    /// releases before the exchange goes: they may borrow from it (see begin_suspension).
    virtual bool owns(const exchange& ex) const noexcept = 0;

protected:
    ~response_sink() = default;
};

/// What belongs to one request and stays put while its context moves from stage to stage:
/// the connection owns it, the context points at it, so a throwing stage cannot lose it.
struct exchange {
    plinth::request request;
    path_params params;
    /// The connection's strand, which outlives the exchange (the connection keeps it).
    const asio::any_io_executor* executor = nullptr;

    /// The suspensions of this request, completed by the connection after the write.
    boost::container::small_vector<std::shared_ptr<suspension<response>>, 1> suspensions;
    /// The streamed body this request opened, written by the connection after the head.
    std::shared_ptr<stream_state> stream;
    /// Null outside a server. A server's connection completes or releases `suspensions` before
    /// the exchange and `policy` go: they borrow `executor` and the policy's log.
    response_sink* owner = nullptr;
    suspension_policy* policy = nullptr; ///< null outside a server
};

} // namespace plinth::detail

#endif
