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
asio::awaitable<bool> connection<Stream>::write_stream(response& head, unsigned version, bool head_only,
                                                       bool& keep_alive)
{
    using clock = asio::steady_timer::clock_type;
    const auto st = st_->ex.stream;
    const bool chunked = version >= 11; // HTTP/1.0 has no chunks: the body ends with the connection

    ++core_->policy.stats.streams;
    st->attach([weak = std::weak_ptr<connection>(self()), ws = std::weak_ptr<stream_state>(st)](bool abort) {
        if (auto self = weak.lock())
            asio::post(self->strand(), [self, ws, abort] { self->on_stream_wake(ws, abort); });
    });
    watch_for_disconnect();

    auto reason = close_reason::closed;
    bool ok = true;   // nothing failed
    bool end = false; // the body's end is to be written
    beast::error_code ec;
    std::size_t n = 0;
    {
        auto& head_text = output().head;
        h1::write_stream_head(head_text, head, version, keep_alive, core_->options.server_name);
        const wire out{asio::buffer(head_text), {}, {}};
        arm(phase::write, write_deadline());
        std::tie(ec, n) = co_await asio::async_write(socket_, out, unbound());
        // A stream may stay open for hours: what only the head needed goes (its fields, its
        // text), and the read buffer while it is empty, as a parked request's (see park).
        head = response();
        std::string().swap(head_text);
        if (st_->buffer.size() == 0 && (io::waits_without_buffer || !read_ahead_pending()))
            st_->buffer.shrink_to_fit();
    }
    if (ec) {
        reason = write_failure(ec, *st);
        ok = false;
    }

    const auto heartbeat = st->heartbeat_text.empty() ? std::chrono::milliseconds(0) : st->options().heartbeat;
    auto last_write = clock::now();
    std::vector<stream_state::entry> batch; // what is being written
    std::vector<asio::const_buffer> buffers;
    std::optional<h1::chunk_size_line> size_line;
    while (ok && !head_only) {
        if (client_left()) {
            reason = close_reason::client_gone;
            ok = false;
            break;
        }
        if (const auto level = stop_level_now();
            level == stop_level::hard || (level == stop_level::graceful && st->ends_on_stop)) {
            reason = close_reason::server_stopping;
            end = true;
            break;
        }
        const auto taken = st->take(batch, 64 * 1024);
        if (taken == stream_state::take_result::aborted) {
            reason = fell_behind();
            ok = false;
            break;
        }
        if (taken == stream_state::take_result::ended) {
            end = true;
            break;
        }
        std::string_view beat;
        if (taken == stream_state::take_result::idle) {
            const auto due = heartbeat > heartbeat.zero() ? last_write + heartbeat : clock::time_point::max();
            if (clock::now() < due) {
                arm(phase::stream, {});
                co_await wait_for_nudge(due);
                continue;
            }
            beat = st->heartbeat_text;
        }
        std::size_t bytes = beat.size();
        for (const auto& e : batch)
            bytes += e.data.size();
        if (bytes == 0) { // only empty writes: an empty chunk would end the body
            st->written(batch, {});
            continue;
        }
        buffers.clear();
        if (chunked) {
            buffers.push_back(size_line.emplace(bytes).buffer());
        }
        if (!beat.empty())
            buffers.push_back(asio::buffer(beat));
        for (const auto& e : batch)
            if (!e.data.empty())
                buffers.push_back(asio::buffer(e.data));
        if (chunked)
            buffers.push_back(asio::buffer(h1::chunk_end));
        ec = co_await write_with_progress(buffers);
        st->written(batch, ec);
        if (ec) {
            reason = write_failure(ec, *st);
            ok = false;
            break;
        }
        last_write = clock::now();
    }
    if (ok && end && chunked) {
        const std::string last = h1::last_chunk(st->trailer());
        arm(phase::write, write_deadline());
        const wire out{asio::buffer(last), {}, {}};
        std::tie(ec, n) = co_await asio::async_write(socket_, out, unbound());
        if (ec) {
            reason = write_failure(ec, *st);
            ok = false;
        }
    }
    arm(phase::busy, {});
    st_->ex.stream.reset();
    stop_watching();
    --core_->policy.stats.streams;
    st->finish(reason); // on_close runs here, on the strand
    co_return ok;
}

template <class Stream>
asio::awaitable<beast::error_code> connection<Stream>::write_with_progress(std::vector<asio::const_buffer>& buffers)
{
    arm(phase::write, write_deadline());
    watch_progress_ = true;
    output().unsent = unsent_bytes();
    for (std::size_t first = 0; first < buffers.size();) {
        auto [ec, n] =
            co_await socket_.async_write_some(std::span(buffers).subspan(first), asio::as_tuple(asio::use_awaitable));
        if (ec)
            co_return ec;
        if (timed_out_) // it fired as these bytes went: the socket is already shut down
            co_return beast::error_code(asio::error::timed_out);
        for (; first < buffers.size() && n >= buffers[first].size(); ++first)
            n -= buffers[first].size();
        if (first < buffers.size())
            buffers[first] += n;
        if (!cutting_short())
            arm(phase::write, write_deadline());
        st_->output->unsent = unsent_bytes();
    }
    watch_progress_ = false;
    co_return beast::error_code{};
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
