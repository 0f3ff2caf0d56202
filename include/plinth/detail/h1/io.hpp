//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_H1_IO_HPP
#define PLINTH_DETAIL_H1_IO_HPP

// An HTTP/1 connection's own reads and writes over its transport, and how it ends: lingering
// close, and the refusal of a connection beyond the server's limit.

#include <plinth/detail/h1/writer.hpp>
#include <plinth/detail/server_core.hpp>
#include <plinth/detail/transport.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <chrono>
#include <memory>
#include <string>

namespace plinth::detail {

// The completion token of a connection's own reads and writes: errors as values, and no
// cancellation slot. Deadlines and stops reach these through the socket (cancel, shutdown); the
// coroutine's slot is for what a request waits on, and an operation tied to it costs an
// allocation every time it starts.
inline auto unbound()
{
    return asio::bind_cancellation_slot(asio::cancellation_slot(), asio::as_tuple(asio::use_awaitable));
}

// Up to three buffers: every write of the connection's own (a head and a body, what pipelined
// requests held back, a chunk) goes through this one instantiation of async_write and of its
// completion token, which keeps what including plinth costs a build down.
using wire = std::array<asio::const_buffer, 3>;

/// Closing a socket with unread bytes makes the kernel send a reset, which can destroy a
/// response before the client reads it: stop sending, then drain for up to a second (nginx's
/// lingering close). The caller closes the stream.
template <class Stream>
asio::awaitable<void> linger(Stream& stream)
{
    using io = transport<Stream>;
    io::shutdown(stream, asio::socket_base::shutdown_send);
    beast::error_code ec;
    // The timer's handler and this coroutine share the coroutine's strand; `done` tells a handler
    // that expired just as the drain ended not to touch a stream that may be gone.
    auto done = std::make_shared<bool>(false);
    asio::steady_timer limit{co_await asio::this_coro::executor, std::chrono::seconds(1)};
    limit.async_wait([&stream, done](beast::error_code e) {
        if (!e && !*done) { // shut down too: a read that completed just before would start another
            io::shutdown(stream, asio::socket_base::shutdown_receive);
            io::cancel(stream);
        }
    });
    std::array<char, 4096> sink;
    std::size_t drained = 0;
    while (!ec && drained < 1024 * 1024) {
        std::size_t n = 0;
        std::tie(ec, n) = co_await stream.async_read_some(asio::buffer(sink), unbound());
        drained += n;
    }
    *done = true;
}

/// Answers a connection beyond `max_connections` 503 and closes it, at the cost of a socket and
/// a coroutine for at most a second: the connections already accepted are not disturbed.
template <class Stream>
asio::awaitable<void> refuse(std::shared_ptr<server_core> core, Stream stream)
{
    response res = h1::refusal(http::status::service_unavailable, core->options.server_name);
    res.set(http::field::retry_after, "1");
    std::string head;
    h1::serialize_head(head, res);
    const wire out{asio::buffer(head), asio::buffer(res.body()), {}};
    auto [ec, n] = co_await asio::async_write(stream, out, unbound());
    if (!ec)
        co_await linger(stream);
    transport<Stream>::close(stream);
}

} // namespace plinth::detail

#endif
