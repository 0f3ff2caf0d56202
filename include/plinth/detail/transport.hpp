//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_TRANSPORT_HPP
#define PLINTH_DETAIL_TRANSPORT_HPP

// The seam between a connection and the bytes it reads and writes. A connection runs over any
// stream with Asio's AsyncReadStream and AsyncWriteStream concepts; transport<Stream> says how
// to do the rest with it: write at once without blocking, wait for bytes without a buffer, shut
// a direction down, cancel, close. The primary template serves a stream whose lowest layer is a
// socket (TLS over TCP), with the plain, always-correct answers; a stream that can do better
// (TCP itself, the tests' in-memory stream) specializes it.

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>
#if defined(__linux__)
#include <linux/sockios.h>
#include <sys/ioctl.h>
#endif

namespace plinth::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;

/// How a connection uses a stream of type `Stream` beyond reading and writing.
template <class Stream>
struct transport {
    /// False: the stream cannot wait for bytes without a buffer (async_wait_readable and
    /// read_now are absent), so the connection reads ahead into its buffer instead.
    static constexpr bool waits_without_buffer = false;

    /// Readies the stream for the connection.
    static void open(Stream&, beast::error_code& ec) { ec = {}; }

    /// Writes what the stream takes at once, without blocking: here nothing (0, no error), so
    /// every write is asynchronous.
    template <class ConstBufferSequence>
    static std::size_t write_now(Stream&, const ConstBufferSequence&, beast::error_code& ec)
    {
        ec = {};
        return 0;
    }

    /// Stops one or both directions of the stream's lowest layer.
    static void shutdown(Stream& s, asio::socket_base::shutdown_type what)
    {
        beast::error_code ignored;
        beast::get_lowest_layer(s).shutdown(what, ignored);
    }

    /// Cancels the stream's pending operations (they complete with operation_aborted).
    static void cancel(Stream& s)
    {
        beast::error_code ignored;
        beast::get_lowest_layer(s).cancel(ignored);
    }

    /// Closes the stream.
    static void close(Stream& s)
    {
        beast::error_code ignored;
        beast::get_lowest_layer(s).close(ignored);
    }

    /// Bytes written and not yet taken by the peer, or -1 when the stream cannot tell.
    static std::int64_t unsent_bytes(Stream&) noexcept { return -1; }
};

/// A TCP socket whose executor is the io_context's: an operation on it then keeps no executor of
/// its own, and a handler that must run on a connection's strand carries it.
using tcp_socket = asio::basic_stream_socket<asio::ip::tcp, asio::io_context::executor_type>;

/// TCP: non-blocking, so that what the kernel takes or holds moves at once; readable without a
/// buffer; its send queue shows a slow reader's progress.
template <>
struct transport<tcp_socket> {
    static constexpr bool waits_without_buffer = true;

    static void open(tcp_socket& s, beast::error_code& ec)
    {
        s.non_blocking(true, ec); // for read_now and write_now; asynchronous operations do not mind
    }

    template <class ConstBufferSequence>
    static std::size_t write_now(tcp_socket& s, const ConstBufferSequence& buffers, beast::error_code& ec)
    {
        const auto n = s.write_some(buffers, ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again)
            ec = {};
        return n;
    }

    /// Completes `handler(error_code)` once the socket has bytes to read, or its end.
    template <class Handler>
    static void async_wait_readable(tcp_socket& s, Handler&& handler)
    {
        s.async_wait(asio::socket_base::wait_read, std::forward<Handler>(handler));
    }

    /// Bytes that may be read at once.
    static std::size_t available(tcp_socket& s, beast::error_code& ec) { return s.available(ec); }

    /// Reads what has arrived, at once (would_block: nothing has).
    static std::size_t read_now(tcp_socket& s, asio::mutable_buffer b, beast::error_code& ec)
    {
        return s.read_some(b, ec);
    }

    static void shutdown(tcp_socket& s, asio::socket_base::shutdown_type what)
    {
        beast::error_code ignored;
        s.shutdown(what, ignored);
    }

    static void cancel(tcp_socket& s)
    {
        beast::error_code ignored;
        s.cancel(ignored);
    }

    static void close(tcp_socket& s)
    {
        beast::error_code ignored;
        s.close(ignored);
    }

    // Linux reports a full send buffer writable again only once a third of it is free, which a
    // slow reader may take longer than write_timeout to make: a shrinking queue is its progress.
    static std::int64_t unsent_bytes(tcp_socket& s) noexcept
    {
#if defined(__linux__)
        int n = 0;
        if (::ioctl(s.native_handle(), SIOCOUTQ, &n) == 0)
            return n;
#endif
        return -1;
    }
};

} // namespace plinth::detail

#endif
