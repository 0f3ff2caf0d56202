//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_SSE_HPP
#define PLINTH_SSE_HPP

// Server-sent events (the WHATWG `text/event-stream` format) over a streamed response: a
// handle any thread may send events to, with heartbeats, a bounded queue and the request's
// Last-Event-ID for replay.

#include <plinth/stream.hpp>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace plinth {

/// One server-sent event. Only `data` is required.
struct sse_event {
    std::string data{};  ///< the payload; each line becomes its own `data:` line
    std::string event{}; ///< the event's name (`event:`); empty: the browser's default, "message"
    std::string id{};    ///< `id:`, which the browser sends back as `Last-Event-ID` when it reconnects
    std::optional<std::chrono::milliseconds> retry{}; ///< `retry:`, the browser's reconnection delay
};

/// `e` in the wire format. Multi-line data (LF, CRLF or CR) becomes one `data:` line per line.
/// Throws `std::invalid_argument` for an `event` or `id` with CR or LF, or an `id` with NUL
/// (the browser would ignore it).
inline std::string format_event(const sse_event& e)
{
    auto single_line = [](std::string_view field, std::string_view what) {
        if (field.find_first_of("\r\n") != std::string_view::npos)
            throw std::invalid_argument("plinth::sse_event: " + std::string(what) + " has a line break");
    };
    single_line(e.event, "event");
    single_line(e.id, "id");
    if (e.id.find('\0') != std::string::npos)
        throw std::invalid_argument("plinth::sse_event: id has a NUL");

    std::string out;
    out.reserve(e.data.size() + e.event.size() + e.id.size() + 32);
    if (!e.event.empty())
        out.append("event: ").append(e.event).append("\n");
    if (!e.id.empty())
        out.append("id: ").append(e.id).append("\n");
    if (e.retry)
        out.append("retry: ").append(std::to_string(e.retry->count())).append("\n");
    std::string_view data = e.data;
    for (;;) { // at least one data line, so that an empty payload is still an event
        const auto eol = data.find_first_of("\r\n");
        out.append("data: ").append(data.substr(0, eol)).append("\n");
        if (eol == std::string_view::npos)
            break;
        data.remove_prefix(eol + (data.compare(eol, 2, "\r\n") == 0 ? 2 : 1));
    }
    out += '\n';
    return out;
}

/// A handle to a server-sent event stream. Copies share the stream; every member is thread-safe.
///
/// The response is 200 with `Content-Type: text/event-stream` and `Cache-Control: no-cache`.
/// After `heartbeat` without a write, a comment line goes out. When the client falls behind and
/// the queue is full, the stream is closed or the oldest events dropped (`stream_options`). A
/// graceful server stop ends event streams at once (browsers reconnect elsewhere), with
/// `close_reason::server_stopping`. The client going away is noticed at once, not at the next
/// heartbeat.
class sse_stream {
public:
    /// An empty handle: sends fail.
    sse_stream() = default;

    /// Opens an event stream for the request in `ctx`; `options` default to the server's `streams`.
    static sse_stream open(context& ctx, std::optional<stream_options> options = std::nullopt)
    {
        response head{http::status::ok, 11};
        head.set(http::field::content_type, "text/event-stream");
        head.set(http::field::cache_control, "no-cache");
        auto state = detail::open_stream(ctx, std::move(head), options);
        state->heartbeat_text = ": heartbeat\n\n";
        state->ends_on_stop = true;
        state->last_event_id = std::string(ctx.request()["Last-Event-ID"]);
        return sse_stream(std::move(state));
    }

    /// Queues `e`. False when the stream is closed or the queue overflowed with the close policy.
    bool send(const sse_event& e) const { return stream_.write(format_event(e)); }

    /// Queues an event with `data` alone.
    bool send(std::string data) const
    {
        sse_event e;
        e.data = std::move(data);
        return send(e);
    }

    /// Queues `e` and completes with `void(error_code)` once it has been handed to the socket
    /// (see `response_stream::async_write`): a producer that waits follows the client's pace.
    template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code)) Token>
    auto async_send(const sse_event& e, Token&& token) const
    {
        return stream_.async_write(format_event(e), std::forward<Token>(token));
    }

    /// Queues a comment line (`: text`), which browsers ignore. Line breaks become spaces.
    bool comment(std::string_view text) const
    {
        std::string line = ": ";
        for (char c : text)
            line += c == '\r' || c == '\n' ? ' ' : c;
        line += "\n\n";
        return stream_.write(std::move(line));
    }

    /// Ends the stream after what is queued. Browsers reconnect after their retry delay unless
    /// the page closes its EventSource. False when it was already closed.
    bool close() const { return stream_.close(); }

    /// `cb(reason)` runs once when the stream is over (see `response_stream::on_close`).
    void on_close(std::function<void(close_reason)> cb) const { stream_.on_close(std::move(cb)); }

    /// The request's `Last-Event-ID`: the id of the last event the browser saw before it
    /// reconnected, empty on a first connection. Send what it missed.
    std::string_view last_event_id() const noexcept
    {
        return stream_ ? std::string_view(stream_.state_->last_event_id) : std::string_view();
    }

    bool is_open() const { return stream_.is_open(); }
    std::size_t queued_bytes() const { return stream_.queued_bytes(); }
    std::size_t queued() const { return stream_.queued(); }
    std::uint64_t dropped() const { return stream_.dropped(); }
    explicit operator bool() const noexcept { return static_cast<bool>(stream_); }

private:
    explicit sse_stream(std::shared_ptr<detail::stream_state> s)
        : stream_(std::move(s))
    {
    }

    response_stream stream_;
};

} // namespace plinth

#endif
