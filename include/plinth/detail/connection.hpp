//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_CONNECTION_HPP
#define PLINTH_DETAIL_CONNECTION_HPP

// One HTTP/1.x connection: a coroutine on its own strand that reads a request, runs it through
// the chain, writes the response, and loops while the connection is kept alive. Requests are
// handled one after the other, so pipelined requests are answered in order.

#include <plinth/context.hpp>
#include <plinth/detail/connection_set.hpp>
#include <plinth/detail/exchange.hpp>
#include <plinth/detail/h1/reader.hpp>
#include <plinth/detail/h1/writer.hpp>
#include <plinth/detail/http_date.hpp>
#include <plinth/detail/server_core.hpp>
#include <plinth/detail/transport.hpp>
#include <plinth/server_options.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/rfc7230.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <vector>

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

/// One HTTP/1.x connection over `Stream`, any stream with Asio's AsyncReadStream and
/// AsyncWriteStream concepts (see transport). Its handlers run on its strand; the stream's
/// executor is best the io_context's own, so that its operations keep no executor of their own.
template <class Stream>
class connection final : public connection_base, private response_sink {
    using io = transport<Stream>;

public:
    /// A connection over `stream` whose handlers run on `strand`.
    connection(std::shared_ptr<server_core> core, Stream stream, asio::any_io_executor strand)
        : core_(std::move(core))
        , socket_(std::move(stream))
        , strand_(std::move(strand))
    {
        core_->connections.opened();
    }

    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    ~connection()
    {
        if (st_) {
            for (const auto& s : st_->ex.suspensions) // only when the io_context is torn down mid-request
                s->release();
            if (st_->ex.stream) // likewise: no callback may run now
                st_->ex.stream->finish(close_reason::server_stopping, false);
        }
        core_->connections.erase(*this);
        core_->deadlines.cancel(*this);
        core_->connections.closed();
    }

    /// Registers with the server and starts the connection's coroutine on its strand.
    void start()
    {
        // Set up before the connection is in the set, where a stop may reach it.
        beast::error_code ec;
        io::open(socket_, ec);
        if (ec) {
            core_->log(log_level::warning, "a connection could not be opened: " + ec.message());
            return; // closed with the connection
        }
        warm_up();
        if (!core_->connections.insert(*this))
            return; // the server stopped between accept and now: just close
        spawn();
    }

    /// The server's stop rose: see stop_gracefully and stop_now. Thread-safe.
    void stop(stop_level level) override
    {
        if (level == stop_level::graceful)
            stop_gracefully();
        else
            stop_now();
    }

    /// From the server's deadline sweep: the deadline passed. Thread-safe.
    void deadline_passed() override
    {
        asio::post(strand(), [self = self()] { self->on_deadline(); });
    }

    /// Whether it holds what serving requests takes: false while it idles past idle_release.
    /// Call on its strand.
    bool warm() const noexcept { return st_ != nullptr; }

private:
    // A shutdown began: an idle connection closes now, a busy one after its response (which
    // carries `Connection: close`).
    void stop_gracefully()
    {
        asio::post(strand(), [self = self()] {
            if (self->phase_ == phase::idle || self->phase_ == phase::warm)
                io::cancel(self->socket_);
            else if (self->phase_ == phase::stream) // an event stream ends now, a body at the grace's end
                self->nudge();
            else if (self->phase_ == phase::write && self->cutting_short()) // an event stream's write:
                self->arm(phase::write, self->write_deadline());            // it may not take long
        });
    }

    // The shutdown's grace ran out: a suspended or waiting request is answered 503 with
    // Retry-After, a request still being read is dropped.
    void stop_now()
    {
        asio::post(strand(), [self = self()] {
            const auto retry_after = self->core_->options.shutdown_retry_after;
            bool resolved = false; // a suspension that already finished leaves the stage to cancel
            if (self->st_)
                for (const auto& s : self->st_->ex.suspensions)
                    resolved = s->resolve(cancellation{retry_after}, true) || resolved;
            if (resolved)
                return;
            switch (self->phase_) {
            case phase::busy: // an awaitable stage: cancel what it waits on
                self->shutdown_cancelled_ = true;
                self->cancel_walk();
                break;
            case phase::write: // the response (or a 503) goes out, but not slowly
                self->arm(phase::write, self->write_deadline());
                break;
            case phase::stream: // a stream waiting for its producer: end it
                self->nudge();
                break;
            default: { // still reading a request: drop it
                io::shutdown(self->socket_, asio::socket_base::shutdown_both);
                io::cancel(self->socket_);
            }
            }
        });
    }

    // What the connection is doing, for its deadline and for a stop. `warm`: idle between
    // requests, with what serving needs still at hand; `idle`: the same, without (see cool_down,
    // and server_options::idle_release).
    enum class phase : unsigned char { idle, warm, header, body, busy, write, stream };

    // Whether the connection may give back its request state now: nothing of a request is left.
    bool may_cool_down() const noexcept
    {
        return io::waits_without_buffer && st_->buffer.size() == 0 && !watch_pending_ && !flushing_
            && st_->ex.suspensions.empty() && !st_->ex.stream && (!st_->output || st_->output->held.empty());
    }

    // From serve(), which ends right after: the connection idled `idle_release` between requests.
    // What serving requests needs goes (the buffer, the exchange, the walk, what writing needs),
    // and the connection waits for bytes without a buffer or a coroutine frame, as a suspended
    // request does; the rest of the idle timeout still runs.
    void cool_down()
    {
        const auto idle = core_->options.idle_timeout;
        const auto warm = core_->options.idle_release;
        arm(phase::idle, idle > idle.zero() ? std::max(idle - warm, std::chrono::milliseconds(1)) : idle);
        // The wait first: its operation, which stays, is not then carved out of the memory the
        // request state gives back (that would keep the pages it spans from being reused whole).
        on_strand(exactly_allocated([self = self()](beast::error_code ec) { self->on_bytes_while_idle(ec); }),
                  [this](auto h) {
                      if constexpr (io::waits_without_buffer)
                          io::async_wait_readable(socket_, std::move(h));
                  });
        st_.reset();
    }

    // Bytes came to an idle connection (or its end, or its deadline, or a stop).
    void on_bytes_while_idle(beast::error_code ec)
    {
        if (timed_out_ || ec || stop_level_now() != stop_level::none) {
            if (timed_out_)
                ++core_->timeouts; // nothing was sent: nothing to answer
            else if (ec && !h1::client_went_away(ec))
                core_->log(log_level::warning, "read failed: " + ec.message());
            return close();
        }
        try {
            warm_up();
            spawn(); // serve() reads what came
        }
        catch (...) { // bad_alloc: this runs inside io_context::run, which must not see it
            core_->log(log_level::error, "an idle connection could not go on: " + describe(std::current_exception()));
            close();
        }
    }

    // Makes what serving requests needs (the buffer is bounded, so that what no parser limit
    // covers, chunk extensions and trailers, cannot grow it: Beast then fails the read with
    // buffer_overflow, answered 400).
    void warm_up()
    {
        const auto& o = core_->options;
        st_ = std::make_unique<request_state>(std::max<std::size_t>(o.max_header_bytes, o.max_read_ahead_bytes)
                                              + 64 * 1024);
        st_->ex.executor = &strand_;
        st_->ex.owner = this;
        st_->ex.policy = &core_->policy;
    }

    // Starts serve() on the strand: when the connection opens, and when a parked walk goes on.
    // Each run gets a signal of its own, through which a disconnect (or the end of a shutdown's
    // grace) cancels what the request waits on; a finished run's signal stays with its
    // completion handler, which Asio may still be about to call when the next run starts.
    void spawn()
    {
        auto signal = std::make_shared<asio::cancellation_signal>();
        st_->cancel_request = signal;
        asio::co_spawn(strand(), serve(),
                       asio::bind_cancellation_slot(signal->slot(), [signal, self = self()](std::exception_ptr e) {
                           if (e)
                               self->core_->log(log_level::error, "connection ended by an exception: " + describe(e));
                       }));
    }

    // The walk reached a callback stage (a suspended handler): start it and let serve() end, so
    // that no coroutine frame is held while the request waits; the stage's end spawns it again.
    void park()
    {
        // serve() ends: nothing of it is left to cancel (and parked() says so from here on).
        auto signal = std::exchange(st_->cancel_request, nullptr);
        // The read-ahead needs no buffer until bytes come (unless its stream reads into it): give
        // it back.
        if (st_->buffer.size() == 0 && (io::waits_without_buffer || !watch_pending_))
            st_->buffer.shrink_to_fit();
        st_->ctx.response.shrink_to_fit(); // no response yet, most likely: its storage goes too
        if (st_->output && st_->output->held.empty() && !flushing_)
            st_->output.reset(); // and what writing needs (a long-poll's last head among it)
        // No cancellation slot: the stage waits on a suspension of this request (the only
        // callback stage is a suspended handler's), which cancel_walk resolves directly: a slot
        // would cost two cancellation handlers for each suspended request.
        try {
            st_->run->start(st_->ctx,
                            exactly_allocated([self = self()](std::exception_ptr e) { self->unpark(std::move(e)); }));
        }
        catch (...) { // bad_alloc: serve() goes on to answer 500, and is not parked
            st_->cancel_request = std::move(signal);
            throw;
        }
    }

    // A callback stage runs and serve() does not (see park).
    bool parked() const noexcept { return !st_->cancel_request; }

    void unpark(std::exception_ptr e)
    {
        st_->parked_result = std::move(e);
        resuming_ = true;
        try {
            spawn();
        }
        catch (...) { // bad_alloc: this handler runs inside io_context::run, which must not see it
            core_->log(log_level::error, "a parked request could not go on: " + describe(std::current_exception()));
            finish_suspensions(false, std::current_exception()); // on_complete learns why
            close();
        }
    }

    // The client left, or the shutdown's grace ended: what the walk waits on is cancelled, and
    // no later enter stage starts.
    void cancel_walk()
    {
        if (st_->run)
            st_->run->cancel();
        if (!parked())
            st_->cancel_request->emit(asio::cancellation_type::terminal); // an awaitable stage in serve()
        else // a parked stage: its suspension ends as a disconnection (if nothing else won)
            for (const auto& s : st_->ex.suspensions)
                s->resolve(disconnection{});
    }

    asio::awaitable<void> serve()
    {
        // Every operation here reports errors through as_tuple; a cancellation (disconnect) must
        // not turn into an exception at the next co_await.
        co_await asio::this_coro::throw_if_cancelled(false);
        const server_options& opt = core_->options;
        for (;;) {
            const bool resumed = resuming_;
            resuming_ = false;
            if (!resumed) {
                while (watch_pending_) // the parse needs the buffer: a cancelled read-ahead delivers first
                    co_await wait_for_nudge();
                h1::request_reader reader{{opt.max_header_bytes, opt.max_body_bytes}};

                // The first byte: a kept-alive connection may idle, a new one must send its header.
                auto state = reader.parse(st_->buffer);
                bool waited = false;
                while (!reader.started()) {
                    if (stop_level_now() != stop_level::none)
                        co_return close();
                    if (!waited) { // a new connection's header deadline runs from the accept
                        if (first_)
                            arm(phase::idle, opt.header_timeout);
                        else if (opt.idle_release > opt.idle_release.zero() && may_cool_down()
                                 && (opt.idle_timeout <= opt.idle_timeout.zero()
                                     || opt.idle_timeout > opt.idle_release))
                            arm(phase::warm, opt.idle_release);
                        else
                            arm(phase::idle, opt.idle_timeout);
                    }
                    waited = true;
                    auto [ec, n] = co_await socket_.async_read_some(
                        st_->buffer.prepare(beast::read_size(st_->buffer, 65536)), unbound());
                    st_->buffer.commit(n);
                    if (phase_ == phase::warm && cooling_) { // idle for idle_release: wait without a frame
                        cooling_ = false;
                        if (n == 0) {
                            auto signal = std::move(st_->cancel_request); // (its completion handler has one)
                            co_return cool_down();
                        }
                        arm(phase::idle, opt.idle_timeout); // bytes came just then: stay
                    }
                    if (ec || timed_out_) {
                        if (timed_out_)
                            ++core_->timeouts; // nothing (but empty lines) was sent: nothing to answer
                        else if (!h1::client_went_away(ec))
                            core_->log(log_level::warning, "read failed: " + ec.message());
                        co_return close();
                    }
                    state = reader.parse(st_->buffer);
                }
                // Usually the whole header came with its first byte; when it did not, the rest has
                // header_timeout from that byte (a new connection's, from the accept).
                if (state == h1::read_state::need_more && !(first_ && waited))
                    arm(phase::header, opt.header_timeout);
                else
                    phase_ = phase::header;
                first_ = false;
                while (state == h1::read_state::need_more) {
                    if (auto failed = co_await read_more())
                        co_return co_await fail_read(failed);
                    state = reader.parse(st_->buffer);
                }
                if (state == h1::read_state::header_ready) {
                    if (!co_await flush_deferred()) // the body may need reads: nothing may wait behind them
                        co_return close();
                    arm(phase::body, opt.body_timeout);
                    if (h1::expects_continue(reader.get())) {
                        const wire out{asio::buffer(h1::continue_line), {}, {}};
                        auto [ec, n] = co_await asio::async_write(socket_, out, unbound());
                        if (ec)
                            co_return co_await fail_read(ec);
                    }
                    while ((state = reader.parse(st_->buffer)) == h1::read_state::need_more)
                        if (auto failed = co_await read_more())
                            co_return co_await fail_read(failed);
                }
                if (state == h1::read_state::refused) {
                    ++core_->rejected;
                    core_->log(log_level::debug,
                               "rejected a request: " + std::to_string(static_cast<unsigned>(reader.status()))
                                   + (reader.error() ? " (" + reader.error().message() + ")" : std::string()));
                    co_return co_await reject(reader.status());
                }
                st_->ex.request = reader.release();
                arm(phase::busy, {}); // no timeout while the request is handled, suspended or streamed
                st_->ex.params.clear();
                version_ = static_cast<std::uint8_t>(st_->ex.request.version()); // (check_header: HTTP/1.x)
                head_only_ = st_->ex.request.method() == http::verb::head;
                keep_alive_ = st_->ex.request.keep_alive();
                auto storage = std::move(st_->ctx.response); // the last response's, empty: reused
                st_->ctx = make_context(st_->ex);
                st_->ctx.response = std::move(storage);
                shutdown_cancelled_ = false; // per request (a cancelled one closes anyway)
            }

            // The chain's walk runs here rather than in a coroutine of its own: synchronous stages
            // are plain calls, an awaitable stage is awaited, and a callback stage (a suspended
            // handler) parks the walk: serve() ends, and the stage's end starts it again here.
            bool failed_walk = true; // until the walk ends; a throw here is bad_alloc and the like
            try {
                if (resumed) // the parked stage ended
                    st_->run->complete(st_->ctx, std::exchange(st_->parked_result, nullptr));
                else
                    st_->run.emplace(core_->chain).begin(st_->ctx);
                bool more = st_->run->advance(st_->ctx);
                for (auto& run = *st_->run; more; more = run.advance(st_->ctx)) {
                    if (run.pending_is_callback()) {
                        park();
                        co_return;
                    }
                    auto thrown = co_await run.step(st_->ctx);
                    run.complete(st_->ctx, std::move(thrown));
                }
                st_->run->end(st_->ctx);
                st_->run.reset(); // what stages enqueued by value goes with the request
                failed_walk = false;
            }
            catch (...) { // stage errors are in st_->ctx, not thrown
                core_->log(log_level::error, "request failed outside any stage: " + describe(std::current_exception()));
            }

            std::exception_ptr unhandled;
            bool failed = failed_walk;
            response res = failed_walk ? error_response(nullptr) : outcome(st_->ctx, unhandled, failed);
            st_->ctx.response.reset();
            bool keep_alive = keep_alive_;
            if (flushing_) { // held answers started out when the request went asynchronous
                // Before stop_watching, whose socket cancel would cancel this write too; and
                // before a client that half-closed is let go, so it still gets them.
                arm(phase::write, write_deadline());
                while (flushing_)
                    co_await wait_for_nudge();
            }
            // The stream this request opened, if any, stays in st_->ex.stream while it is
            // written (write_stream), and goes before the next request.
            auto& opened = st_->ex.stream;
            if (opened && (failed || disconnected_)) { // the stream never began
                opened->finish(disconnected_ ? close_reason::client_gone : close_reason::failed);
                opened.reset();
            }
            if (!opened)
                stop_watching(); // a stream goes on watching: its client may leave at any time
            if (disconnected_) { // nothing is written to a client that left
                finish_suspensions(true, std::make_exception_ptr(client_disconnected(failure_)));
                co_return close();
            }
            if (http::token_list{res[http::field::connection]}.exists("close"))
                keep_alive = false;
            keep_alive = keep_alive && stop_level_now() == stop_level::none;
            ++core_->requests; // counted before the write, so a client that has its answer sees it

            if (opened) {
                if (!co_await flush_deferred()) { // the stream never began
                    opened->finish(close_reason::client_gone);
                    opened.reset();
                    finish_suspensions(true,
                                       std::make_exception_ptr(client_disconnected(asio::error::connection_aborted)));
                    co_return close();
                }
                if (!co_await write_stream(res, version_, head_only_, keep_alive)) {
                    finish_suspensions(true,
                                       std::make_exception_ptr(client_disconnected(asio::error::connection_aborted)));
                    co_return close();
                }
                finish_suspensions(false, unhandled);
                if (!keep_alive)
                    co_return close();
                continue;
            }
            write_head(res, version_, keep_alive);
            const std::string_view body = head_only_ ? std::string_view() : std::string_view(res.body());
            if (deferrable(keep_alive, body.size())) {
                st_->output->held.hold(st_->output->head, body);
                continue; // no suspension: nothing waits for the write
            }

            beast::error_code ec;
            if (failure_) // held answers that went out while the request waited failed
                ec = failure_;
            else {
                // What earlier pipelined requests deferred, then this response, in one write.
                wire out{asio::buffer(st_->output->held.bytes()), asio::buffer(st_->output->head), asio::buffer(body)};
                if (!write_at_once(out, ec)) {
                    arm(phase::write, write_deadline());
                    std::size_t n = 0;
                    std::tie(ec, n) = co_await asio::async_write(socket_, out, unbound());
                }
                st_->output->held.clear();
            }
            if (ec) {
                if (timed_out_) {
                    ++core_->timeouts;
                    core_->log(log_level::info, "dropped a client that stopped reading (write timeout)");
                }
                else if (!h1::client_went_away(ec))
                    core_->log(log_level::warning, "write failed: " + ec.message());
                finish_suspensions(true, std::make_exception_ptr(client_disconnected(ec)));
                co_return close();
            }
            finish_suspensions(false, unhandled);
            if (!keep_alive)
                co_return close();
        }
    }

    // Writes what the socket takes now (the socket is non-blocking): a response usually fits in
    // the socket's send buffer, and then needs no asynchronous write, no deadline and no trip
    // through the scheduler. True when done (or failed); false with `out` trimmed to what is left,
    // for async_write.
    bool write_at_once(wire& out, beast::error_code& ec)
    {
        std::size_t n = io::write_now(socket_, out, ec);
        if (ec)
            return true;
        for (auto& b : out) {
            const auto step = std::min(n, b.size());
            b += step;
            n -= step;
        }
        return asio::buffer_size(out) == 0;
    }

    // After the shutdown's grace a response may not take long to write either, nor an event
    // stream once a stop began (what is left to write is its last chunk).
    bool cutting_short() const noexcept
    {
        const auto level = stop_level_now();
        return level == stop_level::hard
            || (level == stop_level::graceful && st_->ex.stream && st_->ex.stream->ends_on_stop);
    }

    std::chrono::milliseconds write_deadline() const
    {
        const auto d = core_->options.write_timeout;
        if (!cutting_short())
            return d;
        const std::chrono::milliseconds cap{stop_level_now() == stop_level::hard ? 1000 : 250};
        return d > d.zero() ? std::min(d, cap) : cap;
    }

    // Reads what the client sends next into the buffer: the error, if the read failed (a buffer
    // that is full, with a chunk extension or a trailer too long for it, is buffer_overflow).
    asio::awaitable<beast::error_code> read_more()
    {
        const auto room = beast::read_size(st_->buffer, 65536);
        if (room == 0)
            co_return beast::error_code(http::error::buffer_overflow);
        auto [ec, n] = co_await socket_.async_read_some(st_->buffer.prepare(room), unbound());
        st_->buffer.commit(n);
        co_return ec;
    }

    // Reading a request failed: answer what can be answered, then close.
    asio::awaitable<void> fail_read(const beast::error_code& ec)
    {
        const auto failure = h1::on_read_failure(ec, timed_out_);
        if (failure.worth_logging)
            core_->log(log_level::warning, "read failed: " + ec.message());
        if (!failure.answer)
            co_return close();
        ++(*failure.answer == http::status::request_timeout ? core_->timeouts : core_->rejected);
        co_return co_await reject(*failure.answer);
    }

    // Answers a request that will not be handled, then closes without losing the answer.
    asio::awaitable<void> reject(http::status status)
    {
        if (!co_await flush_deferred()) // earlier pipelined requests' answers go first
            co_return close();
        const response res = h1::refusal(status, core_->options.server_name);
        arm(phase::write, write_deadline());
        auto& head = output().head;
        h1::serialize_head(head, res);
        const wire out{asio::buffer(head), asio::buffer(res.body()), {}};
        auto [ec, n] = co_await asio::async_write(socket_, out, unbound());
        if (!ec)
            co_await linger(socket_);
        close();
    }

    // -- the connection's deadline --
    //
    // A phase sets its deadline in the server's deadline queue: no timer of its own. When the
    // deadline passes, the server's sweep calls deadline_passed, which posts on_deadline to this
    // strand: the pending read or write is cancelled and `timed_out_` tells serve() why.

    void arm(phase p, std::chrono::milliseconds d)
    {
        phase_ = p;
        timed_out_ = false;
        core_->set_deadline(*this, d);
    }

    void on_deadline()
    {
        if (closed_ || !core_->deadlines.take_fired(*this))
            return;                  // a phase began meanwhile, with its own deadline (or none)
        if (phase_ == phase::warm) { // idle long enough to give back what serving needs
            cooling_ = true;
            io::cancel(socket_);
            return;
        }
        if (phase_ == phase::write && watch_progress_ && !cutting_short()) {
            const auto unsent = unsent_bytes();
            if (unsent >= 0 && unsent < st_->output->unsent) { // a stream's client reads, slowly: not stuck
                st_->output->unsent = unsent;
                return core_->set_deadline(*this, write_deadline());
            }
        }
        timed_out_ = true;
        // Shut down as well as cancel: a read or write that completed just before this handler
        // ran would otherwise start its next step with no deadline. A read phase keeps the send
        // side for its 408.
        io::shutdown(socket_,
                     phase_ == phase::header || phase_ == phase::body ? asio::socket_base::shutdown_receive
                                                                      : asio::socket_base::shutdown_both);
        io::cancel(socket_);
    }

    // The stop's level now (the server's: it may rise while this strand runs).
    stop_level stop_level_now() const noexcept { return core_->connections.level(); }

    std::shared_ptr<connection> self() { return std::static_pointer_cast<connection>(shared_from_this()); }

    // Fires the completion callbacks of the request's suspensions, after the write.
    void finish_suspensions(bool disconnected, const std::exception_ptr& error)
    {
        for (const auto& s : st_->ex.suspensions) {
            if (disconnected)
                s->disconnected(error);
            else
                s->complete(error);
            ++core_->policy.stats.completed;
        }
        st_->ex.suspensions.clear();
    }

    // -- disconnect detection while a request waits --
    //
    // While the chain waits (an awaitable stage, a suspension), a read stays pending so that EOF
    // or a reset is noticed at once: the request's pending operation is then cancelled through
    // the coroutine's cancellation slot, or a parked stage's suspension resolved as a
    // disconnection (see cancel_walk). Bytes that arrive meanwhile are a pipelined request, not
    // a disconnect: they stay in the buffer (up to max_read_ahead_bytes) for the next parse.

    bool stopping() const noexcept override { return stop_level_now() == stop_level::hard; }

    bool owns(const exchange& ex) const noexcept override { return st_ && &ex == &st_->ex; }

    void watch_for_disconnect() override
    {
        start_flush(); // the request goes asynchronous: earlier answers must not wait for it
        if (watching_ || disconnected_)
            return;
        watching_ = true;
        if (!watch_pending_)
            read_ahead();
    }

    void read_ahead()
    {
        const std::size_t limit = core_->options.max_read_ahead_bytes;
        if (st_->buffer.size() >= limit) {
            watching_ = false; // bounded: stop reading until the response is written
            return;
        }
        watch_pending_ = true;
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

    // Reads what the kernel holds for the connection, up to the read-ahead limit, without
    // blocking (the socket is non-blocking: see start). Readable with nothing to read is the end
    // of the stream, which the read reports.
    std::size_t read_available(beast::error_code& ec)
    {
        const std::size_t available = io::available(socket_, ec);
        if (ec)
            return 0;
        const std::size_t room = core_->options.max_read_ahead_bytes - st_->buffer.size();
        return io::read_now(socket_, st_->buffer.prepare(std::clamp<std::size_t>(available, 1, room)), ec);
    }

    void on_read_ahead(beast::error_code ec, std::size_t n)
    {
        watch_pending_ = false;
        st_->buffer.commit(n);
        nudge(); // serve() may be waiting for this read to finish
        if (!watching_)
            return; // stopped: the request already has its response
        if (ec) {
            watching_ = false;
            if (ec == asio::error::operation_aborted)
                return;
            disconnected_ = true;
            failure_ = ec;
            cancel_walk();
            return;
        }
        read_ahead();
    }

    void stop_watching()
    {
        watching_ = false;
        if (watch_pending_)
            io::cancel(socket_);
    }

    // Wakes whatever serve() waits on in wait_for_nudge. Each waiter checks what it waits for
    // before and after waiting, so a nudge meant for another (or for nobody) is harmless.
    void nudge()
    {
        if (st_ && st_->output && st_->output->nudge)
            st_->output->nudge->cancel();
    }

    asio::awaitable<std::tuple<beast::error_code>> wait_for_nudge(
        asio::steady_timer::time_point until = asio::steady_timer::time_point::max())
    {
        auto& nudge = output().nudge;
        if (!nudge)
            nudge = std::make_unique<asio::steady_timer>(strand());
        nudge->expires_at(until);
        return nudge->async_wait(asio::as_tuple(asio::use_awaitable));
    }

    // -- pipelined answers, written together --
    //
    // When a client pipelines, the next request's header is often already in the buffer. Its
    // answer is then held back (output_state::held) and written with the next one, so that a
    // batch of pipelined requests costs one write, not one per request. Nothing may wait behind
    // held answers: they go out before any read that may block (a body), before a stream or a
    // rejection, and as soon as a request goes asynchronous (start_flush, from
    // watch_for_disconnect).

    // Whether this answer may wait for the next one: the next request can be parsed from the
    // buffer alone, and nothing (a suspension's on_complete, a read-ahead) waits for this write.
    bool deferrable(bool keep_alive, std::size_t body_size)
    {
        if (!keep_alive || !st_->ex.suspensions.empty() || watch_pending_ || flushing_ || failure_)
            return false;
        if (!st_->output->held.fits(st_->output->head.size() + body_size)) // (write_head made the head)
            return false;
        return h1::holds_header({static_cast<const char*>(st_->buffer.data().data()), st_->buffer.size()});
    }

    // Starts `initiate(handler)`, an operation on socket_ (whose executor is the io_context's),
    // with `handler` bound to the strand unless the connection has none (single-threaded).
    template <class Handler, class Initiate>
    void on_strand(Handler handler, Initiate initiate)
    {
        if (core_->options.single_threaded)
            initiate(std::move(handler));
        else
            initiate(asio::bind_executor(strand(), std::move(handler)));
    }

    // The connection's strand (the io_context's executor when single-threaded): where serve(),
    // the handlers of its operations and the callbacks of its requests run.
    const asio::any_io_executor& strand() const noexcept { return strand_; }

    // Starts writing the held answers; on the strand, while the chain waits.
    void start_flush()
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

    // Writes the held answers now; false when that failed.
    asio::awaitable<bool> flush_deferred()
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

    // The response for a request whose walk ended; `unhandled` gets the error no stage handled,
    // for on_complete.
    response outcome(context& ctx, std::exception_ptr& unhandled, bool& failed)
    {
        if (const chain_error* err = ctx.error()) {
            failed = true;
            unhandled = err->exception;
            if (shutdown_cancelled_) { // the shutdown's grace ended what the request waited on
                core_->log(log_level::info, "a request still waiting at the end of the shutdown grace got 503");
                return cancelled_response(cancellation{core_->options.shutdown_retry_after});
            }
            if (!disconnected_)
                report(*err);
            return error_response(err->exception);
        }
        if (ctx.response)
            return std::move(*ctx.response);
        return text("Not Found", http::status::not_found);
    }

    // -- streamed responses --
    //
    // The head goes out once the chain is done; then the connection waits (wait_for_nudge) until
    // a producer wakes it (a post to this strand), the heartbeat is due, the client leaves (the
    // read-ahead cancels the wait through the request's cancellation slot) or the server stops.
    // Each write is bounded by write_timeout, so a client that stops reading is dropped while
    // one that reads slowly is not.

    // True when the body ended properly: the connection may go on if `keep_alive`.
    asio::awaitable<bool> write_stream(response& head, unsigned version, bool head_only, bool& keep_alive)
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
            if (disconnected_) {
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

    // Writes `buffers` whole. The deadline restarts whenever bytes move, so a stream's client
    // that reads slowly keeps its connection and one that stops reading loses it after
    // write_timeout. After the shutdown's grace it no longer restarts.
    asio::awaitable<beast::error_code> write_with_progress(std::vector<asio::const_buffer>& buffers)
    {
        arm(phase::write, write_deadline());
        watch_progress_ = true;
        output().unsent = unsent_bytes();
        for (std::size_t first = 0; first < buffers.size();) {
            auto [ec, n] = co_await socket_.async_write_some(std::span(buffers).subspan(first),
                                                             asio::as_tuple(asio::use_awaitable));
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

    // Bytes the kernel still holds for the client (-1: unknown). Linux reports a full send
    // buffer writable again only once a third of it is free, which a slow reader may take longer
    // than write_timeout to make: a shrinking queue is the progress to look for.
    std::int64_t unsent_bytes() { return io::unsent_bytes(socket_); }

    // Why a stream's write failed, logged as a response's would be.
    close_reason write_failure(const beast::error_code& ec, const stream_state& st)
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
        if (disconnected_ || h1::client_went_away(ec))
            return close_reason::client_gone;
        core_->log(log_level::warning, "stream write failed: " + ec.message());
        return close_reason::failed;
    }

    // The stream's queue overflowed with the close policy: its client is dropped.
    close_reason fell_behind() const
    {
        core_->log(log_level::info, "dropped a client that fell behind its stream (queue full)");
        return close_reason::slow_client;
    }

    // A producer queued something (or overflowed the queue) while this connection streams.
    void on_stream_wake(const std::weak_ptr<stream_state>& ws, bool abort)
    {
        auto s = ws.lock();
        if (!s || !st_ || s != st_->ex.stream)
            return; // that stream is over
        nudge();
        if (abort) // cut a write in progress short: the client is not reading
            io::cancel(socket_);
    }

    void report(const chain_error& err) const
    {
        auto level = log_level::error;
        try {
            std::rethrow_exception(err.exception);
        }
        catch (const http_error& e) {
            if (static_cast<unsigned>(e.status()) < 500)
                level = log_level::debug; // the client's fault, and the client was told
        }
        catch (const service_unavailable&) {
            level = log_level::info; // a suspension timed out: expected, and answered 503
        }
        catch (...) {
        }
        const auto& req = st_->ex.request;
        core_->log(level,
                   std::string(req.method_string()) + " " + std::string(req.target()) + ": "
                       + std::string(to_string(err.stage)) + " stage of '" + err.interceptor
                       + "' threw: " + describe(err.exception));
    }

    void write_head(response& res, unsigned version, bool keep_alive)
    {
        h1::write_head(output().head, res, version, keep_alive, core_->options.server_name);
    }

    void close()
    {
        closed_ = true;
        core_->deadlines.cancel(*this);
        io::shutdown(socket_, asio::socket_base::shutdown_send);
        io::close(socket_);
    }

    std::shared_ptr<server_core> core_;
    Stream socket_;
    const asio::any_io_executor strand_; // see strand()
    // What writing needs, made by the first response and given back while a request is parked
    // (see park): a suspended request carries a pointer for it.
    struct output_state {
        std::string head;      // the response head being written; see serialize_head
        h1::output_batch held; // answers held back while a pipelined batch is parsed; see deferrable
        // What serve() waits on for a read-ahead or a write to finish, or a stream for its
        // producers; made on first use (most connections never wait so).
        std::unique_ptr<asio::steady_timer> nudge;
        std::int64_t unsent = -1; // a stream's write (watch_progress_): the kernel's queue then
    };
    // What a connection needs while it serves requests: made when bytes come, given back once it
    // idled for a while (see warm_up and cool_down), so that an idle connection holds little.
    struct request_state {
        explicit request_state(std::size_t buffer_limit)
            : buffer(buffer_limit)
        {
        }
        beast::flat_buffer buffer;
        std::unique_ptr<output_state> output;
        std::optional<chain_walk<context>> run;                    // the request's walk through the chain; see serve
        context ctx;                                               // ...and the context it walks
        std::exception_ptr parked_result;                          // how a parked stage ended; see park
        exchange ex;                                               // the request being served
        std::shared_ptr<asio::cancellation_signal> cancel_request; // cancels serve()'s current wait; see spawn
    };
    std::unique_ptr<request_state> st_;
    output_state& output()
    {
        if (!st_->output)
            st_->output = std::make_unique<output_state>();
        return *st_->output;
    }
    // The flags are bits, with the phase and the version in the same word: every connection,
    // suspended ones included, carries them. Bits sharing a byte must not be written from two
    // threads: all are written on the strand.
    std::uint8_t version_ = 11; // of the request being handled (HTTP/x.y is 10x + y)
    phase phase_ = phase::header;
    bool head_only_ : 1 = false;          // ...a HEAD request
    bool keep_alive_ : 1 = false;         // ...which asked to keep the connection
    bool resuming_ : 1 = false;           // serve() goes on with a parked walk
    bool first_ : 1 = true;               // no request read yet
    bool flushing_ : 1 = false;           // start_flush is writing the held answers
    bool timed_out_ : 1 = false;          // the current phase's deadline passed
    bool shutdown_cancelled_ : 1 = false; // ...and cancelled what the request waited on
    bool watching_ : 1 = false;           // a request is waiting: read ahead to notice a disconnect
    bool watch_pending_ : 1 = false;      // a read-ahead is in flight
    bool disconnected_ : 1 = false;       // the client left while a request was waiting
    bool closed_ : 1 = false;
    bool cooling_ : 1 = false;        // the warm phase's deadline passed: give the request state back
    bool watch_progress_ : 1 = false; // a stream's write: a shrinking kernel queue is progress
    // Why the connection cannot go on: held answers failed to go out (start_flush), or the client
    // left while a request waited (disconnected_). Either ends it, so one code serves both.
    beast::error_code failure_;
};

} // namespace plinth::detail

#endif
