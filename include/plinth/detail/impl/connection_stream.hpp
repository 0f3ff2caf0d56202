//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_IMPL_CONNECTION_STREAM_HPP
#define PLINTH_DETAIL_IMPL_CONNECTION_STREAM_HPP

// connection<Stream>'s streamed responses: the head, then each batch a producer queued, in
// chunks, with heartbeats, until the stream ends, its client leaves or falls behind, or the
// server stops.

#include <plinth/detail/connection.hpp>

namespace plinth::detail {

template <class Stream>
void connection<Stream>::open_stream(response& head, bool keep_alive, std::exception_ptr unhandled)
{
    auto& out = output();
    out.pump = std::make_unique<stream_pump>(); // (what fails before this, serve() reports)
    try {
        const auto& st = st_->ex.stream;
        ++core_->policy.stats.streams;
        st->attach([weak = std::weak_ptr<connection>(self()), ws = std::weak_ptr<stream_state>(st)](bool abort) {
            if (auto self = weak.lock())
                asio::post(self->strand(), [self, ws, abort] { self->on_stream_wake(ws, abort); });
        });
        watch_for_disconnect();

        auto& p = *out.pump;
        p.unhandled = std::move(unhandled);
        p.keep_alive = keep_alive;
        h1::write_stream_head(out.head, head, version_, p.keep_alive, core_->options.server_name);
        // A stream may stay open for hours: what only the head needed goes (its fields now, its
        // text once written), and the read buffer while it is empty, as a parked request's (see park).
        head = response();
        st_->ctx.response.shrink_to_fit();
        if (st_->buffer.size() == 0 && (io::waits_without_buffer || !read_ahead_pending()))
            st_->buffer.shrink_to_fit();
        p.buffers.assign(1, asio::buffer(out.head));
        arm(phase::write, write_deadline());
        write_stream_buffers();
    }
    catch (...) {
        fail_stream();
    }
}

template <class Stream>
void connection<Stream>::pump_stream()
{
    using clock = asio::steady_timer::clock_type;
    try {
        auto& p = *st_->output->pump;
        auto& st = *st_->ex.stream;
        if (head_only_)
            return end_stream(true);
        for (;;) {
            if (client_left()) {
                p.reason = close_reason::client_gone;
                return end_stream(false);
            }
            if (const auto level = stop_level_now();
                level == stop_level::hard || (level == stop_level::graceful && st.ends_on_stop)) {
                p.reason = close_reason::server_stopping;
                return write_last_chunk();
            }
            const auto taken = st.take(p.batch, 64 * 1024);
            if (taken == stream_state::take_result::aborted) {
                p.reason = fell_behind();
                return end_stream(false);
            }
            if (taken == stream_state::take_result::ended)
                return write_last_chunk();
            std::string_view beat;
            if (taken == stream_state::take_result::idle) {
                const auto heartbeat =
                    st.heartbeat_text.empty() ? std::chrono::milliseconds(0) : st.options().heartbeat;
                const auto due = heartbeat > heartbeat.zero() ? p.last_write + heartbeat : clock::time_point::max();
                if (const auto now = clock::now(); now < due) {
                    // Nothing of its own pending while it waits: a wake (see nudge) or the
                    // heartbeat's deadline, in the server's queue, steps it again. Meanwhile the
                    // read-ahead's wait owns the connection, as a parked request's does; when
                    // there is none (the client sent all that may be read ahead), a wait that
                    // never expires does.
                    p.waiting = true;
                    arm(phase::stream,
                        due == clock::time_point::max() ? std::chrono::milliseconds(0)
                                                        : std::chrono::ceil<std::chrono::milliseconds>(due - now));
                    if (!read_ahead_pending()) {
                        auto& keeper = st_->output->nudge;
                        if (!keeper)
                            keeper = std::make_unique<asio::steady_timer>(strand());
                        keeper->expires_at(clock::time_point::max());
                        keeper->async_wait([self = self()](beast::error_code) {});
                    }
                    return;
                }
                beat = st.heartbeat_text;
            }
            std::size_t bytes = beat.size();
            for (const auto& e : p.batch)
                bytes += e.data.size();
            if (bytes == 0) { // only empty writes: an empty chunk would end the body
                st.written(p.batch, {});
                continue;
            }
            p.buffers.clear();
            if (chunked())
                p.buffers.push_back(p.size_line.emplace(bytes).buffer());
            if (!beat.empty())
                p.buffers.push_back(asio::buffer(beat));
            for (const auto& e : p.batch)
                if (!e.data.empty())
                    p.buffers.push_back(asio::buffer(e.data));
            if (chunked())
                p.buffers.push_back(asio::buffer(h1::chunk_end));
            p.what = stream_pump::writing::body;
            p.first = 0;
            arm(phase::write, write_deadline());
            watch_progress_ = true;
            st_->output->unsent = unsent_bytes();
            return write_stream_buffers();
        }
    }
    catch (...) {
        fail_stream();
    }
}

template <class Stream>
void connection<Stream>::write_stream_buffers()
{
    const auto& p = *st_->output->pump;
    // Bound to the strand even when single-threaded: one instantiation of the write, whatever
    // the connection's threading (as start_flush).
    socket_.async_write_some(std::span(p.buffers).subspan(p.first),
                             asio::bind_executor(strand(), [self = self()](beast::error_code ec, std::size_t n) {
                                 self->on_stream_io(ec, n);
                             }));
}

template <class Stream>
void connection<Stream>::on_stream_io(beast::error_code ec, std::size_t n)
{
    try {
        auto& p = *st_->output->pump;
        if (!ec && timed_out_) // it fired as these bytes went: the socket is already shut down
            ec = asio::error::timed_out;
        if (!ec) {
            for (; p.first < p.buffers.size() && n >= p.buffers[p.first].size(); ++p.first)
                n -= p.buffers[p.first].size();
            if (p.first < p.buffers.size()) {
                p.buffers[p.first] += n;
                if (p.what == stream_pump::writing::body) { // bytes moved: the deadline restarts
                    if (!cutting_short())
                        arm(phase::write, write_deadline());
                    st_->output->unsent = unsent_bytes();
                }
                return write_stream_buffers();
            }
        }
        const auto what = p.what;
        if (what == stream_pump::writing::body) {
            st_->ex.stream->written(p.batch, ec);
            if (!ec)
                watch_progress_ = false;
        }
        else if (what == stream_pump::writing::head)
            std::string().swap(st_->output->head);
        if (ec) {
            p.reason = write_failure(ec, *st_->ex.stream);
            return end_stream(false);
        }
        if (what == stream_pump::writing::last)
            return end_stream(true);
        p.last_write = asio::steady_timer::clock_type::now();
    }
    catch (...) {
        return fail_stream();
    }
    pump_stream();
}

template <class Stream>
void connection<Stream>::write_last_chunk()
{
    auto& p = *st_->output->pump;
    if (!chunked())
        return end_stream(true);
    p.last = h1::last_chunk(st_->ex.stream->trailer());
    p.buffers.assign(1, asio::buffer(p.last));
    p.first = 0;
    p.what = stream_pump::writing::last;
    arm(phase::write, write_deadline());
    write_stream_buffers();
}

template <class Stream>
void connection<Stream>::end_stream(bool ok) noexcept
{
    const auto pump = std::move(st_->output->pump); // goes with this call
    const auto st = std::move(st_->ex.stream);
    --core_->policy.stats.streams;
    try {
        arm(phase::busy, {});
        stop_watching();
        st->finish(pump->reason); // on_close runs here, on the strand
        if (ok)
            finish_suspensions(false, pump->unhandled);
        else
            finish_suspensions(true, std::make_exception_ptr(client_disconnected(asio::error::connection_aborted)));
        if (ok && pump->keep_alive)
            return spawn(); // serve() reads the next request
    }
    catch (...) { // bad_alloc: this runs inside io_context::run, which must not see it
        try {
            core_->log(log_level::error, "a stream could not end properly: " + describe(std::current_exception()));
        }
        catch (...) {
        }
    }
    close();
}

template <class Stream>
void connection<Stream>::fail_stream() noexcept
{
    if (!st_->output || !st_->output->pump)
        return; // over already: end_stream throws nothing
    auto& p = *st_->output->pump;
    p.reason = close_reason::failed;
    try {
        core_->log(log_level::error, "a stream could not go on: " + describe(std::current_exception()));
        st_->ex.stream->written(p.batch, asio::error::operation_aborted); // their senders learn it
    }
    catch (...) {
    }
    end_stream(false);
}

template <class Stream>
close_reason connection<Stream>::write_failure(const beast::error_code& ec, const stream_state& st)
{
    const auto level = stop_level_now();
    if (level == stop_level::graceful && st.ends_on_stop) // the stop's short deadline
        return close_reason::server_stopping;
    if (timed_out_) {
        ++core_->timeouts;
        core_->log(log_level::info, "dropped a client that stopped reading its stream (write timeout)");
        return level == stop_level::hard ? close_reason::server_stopping : close_reason::slow_client;
    }
    if (st.aborted())
        return fell_behind();
    if (client_left() || h1::client_went_away(ec))
        return close_reason::client_gone;
    core_->log(log_level::warning, "stream write failed: " + ec.message());
    return close_reason::failed;
}

template <class Stream>
close_reason connection<Stream>::fell_behind() const
{
    core_->log(log_level::info, "dropped a client that fell behind its stream (queue full)");
    return close_reason::slow_client;
}

template <class Stream>
void connection<Stream>::on_stream_wake(const std::weak_ptr<stream_state>& ws, bool abort)
{
    auto s = ws.lock();
    if (!s || !st_ || s != st_->ex.stream)
        return; // that stream is over
    nudge();
    if (abort) // cut a write in progress short: the client is not reading
        io::cancel(socket_);
}

} // namespace plinth::detail

#endif
