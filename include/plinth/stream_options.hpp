//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_STREAM_OPTIONS_HPP
#define PLINTH_STREAM_OPTIONS_HPP

// What a streamed response (a chunked body, an event stream) may be told and tells back: its
// buffering options, why it ended, and the errors its writes complete with.

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

namespace plinth {

/// What a stream does when its client falls behind and the queue is full.
enum class stream_overflow {
    close,      ///< end the stream (`close_reason::slow_client`); what is queued is discarded
    drop_oldest ///< discard the oldest queued messages to make room; the stream goes on
};

/// Why a stream ended, as `on_close` reports it.
enum class close_reason {
    closed,          ///< the application closed it (and the end of the body was written)
    client_gone,     ///< the client went away
    server_stopping, ///< the server is stopping
    slow_client,     ///< the client fell behind: the queue overflowed, or a write timed out
    failed           ///< a write failed, or the request failed before the stream began
};

constexpr std::string_view to_string(close_reason r) noexcept
{
    switch (r) {
    case close_reason::closed: return "closed";
    case close_reason::client_gone: return "client_gone";
    case close_reason::server_stopping: return "server_stopping";
    case close_reason::slow_client: return "slow_client";
    case close_reason::failed: return "failed";
    }
    return "?";
}

/// How a stream buffers for a slow client. A server's defaults are `server_options::streams`.
struct stream_options {
    /// Bytes queued and not yet handed to the socket; beyond: `overflow`.
    std::size_t max_queued_bytes = 1 << 20;
    /// Messages (chunks, events) queued and not yet handed to the socket; beyond: `overflow`.
    std::size_t max_queued = 1024;
    /// What a full queue does.
    stream_overflow overflow = stream_overflow::close;
    /// Server-sent events only: a comment line goes out after this long without a write, so
    /// proxies keep the connection and a vanished peer is noticed. Zero: none.
    std::chrono::milliseconds heartbeat{15'000};
};

/// Errors a stream's write operations complete with.
enum class stream_errc {
    closed = 1, ///< the stream had ended (or ended before the message was written)
    overflow,   ///< the queue overflowed and the stream was closed (`stream_overflow::close`)
    dropped     ///< discarded to make room (`stream_overflow::drop_oldest`)
};

/// The category of `stream_errc`.
inline const boost::system::error_category& stream_category() noexcept
{
    struct category final : boost::system::error_category {
        const char* name() const noexcept override { return "plinth.stream"; }
        std::string message(int e) const override
        {
            switch (static_cast<stream_errc>(e)) {
            case stream_errc::closed: return "the stream is closed";
            case stream_errc::overflow: return "the stream's queue overflowed: the client is too slow";
            case stream_errc::dropped: return "dropped from the stream's queue to make room";
            }
            return "unknown stream error";
        }
    };
    static const category instance;
    return instance;
}

inline boost::system::error_code make_error_code(stream_errc e) noexcept
{
    return {static_cast<int>(e), stream_category()};
}

} // namespace plinth

template <>
struct boost::system::is_error_code_enum<plinth::stream_errc> : std::true_type {
};

#endif
