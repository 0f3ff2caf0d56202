//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_IMPL_CONNECTION_OUTPUT_HPP
#define PLINTH_DETAIL_IMPL_CONNECTION_OUTPUT_HPP

// connection<Stream> while a request waits: the read-ahead that notices a client leaving, and the
// pipelined answers held back and written together (see the sections in detail/connection.hpp).

#include <plinth/detail/connection.hpp>

namespace plinth::detail {

template <class Stream>
void connection<Stream>::watch_for_disconnect()
{
    start_flush();                           // the request goes asynchronous: earlier answers must not wait for it
    if (read_ahead_ == read_ahead::draining) // the read still in flight serves again
        read_ahead_ = read_ahead::reading;
    if (read_ahead_ == read_ahead::off)
        start_read_ahead();
}

template <class Stream>
void connection<Stream>::start_read_ahead()
{
    const std::size_t limit = core_->options.max_read_ahead_bytes;
    if (st_->buffer.size() >= limit) {
        read_ahead_ = read_ahead::off; // bounded: stop reading until the response is written
        return;
    }
    read_ahead_ = read_ahead::reading;
    if constexpr (io::waits_without_buffer) {
        // Wait for bytes (or the end) without a buffer, and read them only once they are
        // there: a waiting request's client rarely sends more, and a parked request gives its
        // empty buffer back meanwhile (see park).
        auto on_readable = [self = self()](beast::error_code ec) {
            std::size_t n = 0;
            if (!ec)
                n = self->read_available(ec);
            if (ec == asio::error::would_block || ec == asio::error::try_again)
                ec = {}; // readable was stale: wait again
            self->on_read_ahead(ec, n);
        };
        const auto wait = [this](auto h) { io::async_wait_readable(socket_, std::move(h)); };
        if (parked()) // it may wait for minutes (an awaitable stage's rarely does)
            on_strand(exactly_allocated(std::move(on_readable)), wait);
        else
            on_strand(std::move(on_readable), wait);
    }
    else { // a stream that cannot wait without a buffer reads into it (see park)
        auto on_read = [self = self()](beast::error_code ec, std::size_t n) { self->on_read_ahead(ec, n); };
        const auto read = [this, limit](auto h) {
            socket_.async_read_some(st_->buffer.prepare(std::min<std::size_t>(limit - st_->buffer.size(), 4096)),
                                    std::move(h));
        };
        on_strand(std::move(on_read), read);
    }
}

template <class Stream>
std::size_t connection<Stream>::read_available(beast::error_code& ec)
{
    const std::size_t available = io::available(socket_, ec);
    if (ec)
        return 0;
    const std::size_t room = core_->options.max_read_ahead_bytes - st_->buffer.size();
    return io::read_now(socket_, st_->buffer.prepare(std::clamp<std::size_t>(available, 1, room)), ec);
}

template <class Stream>
void connection<Stream>::on_read_ahead(beast::error_code ec, std::size_t n)
{
    const bool watched = read_ahead_ == read_ahead::reading;
    read_ahead_ = read_ahead::off;
    st_->buffer.commit(n);
    nudge(); // serve() may be waiting for this read to finish
    if (!watched)
        return; // stopped: the request already has its response
    if (ec) {
        if (ec == asio::error::operation_aborted)
            return;
        read_ahead_ = read_ahead::gone;
        failure_ = ec;
        cancel_walk();
        if (st_->output && st_->output->pump) // a stream's write in progress ends now, not at its timeout
            io::cancel(socket_);
        return;
    }
    start_read_ahead();
}

template <class Stream>
void connection<Stream>::stop_watching()
{
    if (read_ahead_pending()) {
        read_ahead_ = read_ahead::draining;
        io::cancel(socket_);
    }
}

template <class Stream>
asio::awaitable<std::tuple<beast::error_code>> connection<Stream>::wait_for_nudge(asio::steady_timer::time_point until)
{
    auto& nudge = output().nudge;
    if (!nudge)
        nudge = std::make_unique<asio::steady_timer>(strand());
    nudge->expires_at(until);
    return nudge->async_wait(asio::as_tuple(asio::use_awaitable));
}

template <class Stream>
bool connection<Stream>::deferrable(bool keep_alive, std::size_t body_size)
{
    if (!keep_alive || !st_->ex.suspensions.empty() || read_ahead_pending() || flushing_ || failure_)
        return false;
    if (!st_->output->held.fits(st_->output->head.size() + body_size)) // (write_head made the head)
        return false;
    return h1::holds_header({static_cast<const char*>(st_->buffer.data().data()), st_->buffer.size()});
}

template <class Stream>
void connection<Stream>::start_flush()
{
    if (!st_->output || st_->output->held.empty() || flushing_)
        return;
    flushing_ = true; // (which keeps st_->output: see park)
    // Bound to the strand even when single-threaded: one instantiation of async_write's
    // composed operation rather than two (compile time), for a write that rarely happens.
    asio::async_write(socket_, asio::buffer(st_->output->held.bytes()),
                      asio::bind_executor(strand(), [self = self()](beast::error_code ec, std::size_t) {
                          self->flushing_ = false;
                          self->st_->output->held.clear();
                          if (ec)
                              self->failure_ = ec;
                          self->nudge(); // serve() may be waiting for this write
                      }));
}

template <class Stream>
asio::awaitable<bool> connection<Stream>::flush_deferred()
{
    if (!flushing_ && (!st_->output || st_->output->held.empty()))
        co_return !failure_;
    arm(phase::write, write_deadline()); // a client that does not read is not waited for
    while (flushing_)
        co_await wait_for_nudge();
    if (failure_)
        co_return false;
    auto& held = output().held; // (waiting may have made it)
    if (held.empty())
        co_return true;
    const wire out{asio::buffer(held.bytes()), {}, {}};
    auto [ec, n] = co_await asio::async_write(socket_, out, unbound());
    held.clear();
    co_return !ec;
}

} // namespace plinth::detail

#endif
