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
#include <plinth/detail/h1/io.hpp>
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

    // The read that notices a client leaving while a request waits (see watch_for_disconnect).
    // `reading`: one is in flight and watched; `draining`: one is in flight, no longer watched
    // (the request has its response), and serve() waits for it to deliver before it parses;
    // `gone`: it found the client gone, which ends the connection.
    enum class read_ahead : unsigned char { off, reading, draining, gone };

    bool read_ahead_pending() const noexcept
    {
        return read_ahead_ == read_ahead::reading || read_ahead_ == read_ahead::draining;
    }
    bool client_left() const noexcept { return read_ahead_ == read_ahead::gone; }

    // Whether the connection may give back its request state now: nothing of a request is left.
    bool may_cool_down() const noexcept
    {
        return io::waits_without_buffer && st_->buffer.size() == 0 && !read_ahead_pending() && !flushing_
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
    void park();

    // A callback stage runs and serve() does not (see park).
    bool parked() const noexcept { return !st_->cancel_request; }

    void unpark(std::exception_ptr e);

    // The client left, or the shutdown's grace ended: what the walk waits on is cancelled, and
    // no later enter stage starts.
    void cancel_walk();

    asio::awaitable<void> serve();

    // Writes what the socket takes now (the socket is non-blocking): a response usually fits in
    // the socket's send buffer, and then needs no asynchronous write, no deadline and no trip
    // through the scheduler. True when done (or failed); false with `out` trimmed to what is left,
    // for async_write.
    bool write_at_once(wire& out, beast::error_code& ec);

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
    asio::awaitable<beast::error_code> read_more();

    // Reading a request failed: answer what can be answered, then close.
    asio::awaitable<void> fail_read(const beast::error_code& ec);

    // Answers a request that will not be handled, then closes without losing the answer.
    asio::awaitable<void> reject(http::status status);

    // -- the connection's deadline --
    //
    // A phase sets its deadline in the server's deadline queue: no timer of its own. When the
    // deadline passes, the server's sweep calls deadline_passed, which posts on_deadline to this
    // strand: the pending read or write is cancelled and `timed_out_` tells serve() why.

    void arm(phase p, std::chrono::milliseconds d)
    {
        phase_ = p;
        timed_out_ = false;
        if (d == d.zero() && (p == phase::busy || p == phase::stream) && warm_queued_)
            return; // the warm deadline stays queued for the next idle time (see idle_warm)
        warm_queued_ = false;
        core_->set_deadline(*this, d);
    }

    // Between requests, with what serving needs at hand: given back once idle for `release` (to
    // twice that; see cool_down). A warm deadline set before the last request serves again, and
    // on_deadline gives it another `release` when a request came since: a busy connection takes
    // the queue's lock once per `release`, not twice per request, and reads no clock.
    void idle_warm(std::chrono::milliseconds release)
    {
        phase_ = phase::warm;
        timed_out_ = false;
        if (warm_queued_) {
            warm_renewed_ = true;
            return;
        }
        core_->set_deadline(*this, release);
        warm_queued_ = true;
        warm_renewed_ = false;
    }

    void on_deadline()
    {
        if (closed_ || !core_->deadlines.take_fired(*this))
            return; // a phase began meanwhile, with its own deadline (or none)
        warm_queued_ = false;
        if (phase_ == phase::busy)
            return; // the warm deadline, kept while a request was handled (see arm)
        if (phase_ == phase::stream)
            return nudge();          // an open stream's heartbeat is due
        if (phase_ == phase::warm) { // idle long enough to give back what serving needs?
            if (warm_renewed_)       // a request came since it was set: once more
                return idle_warm(core_->options.idle_release);
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
    void finish_suspensions(bool disconnected, const std::exception_ptr& error);

    // -- disconnect detection while a request waits --
    //
    // While the chain waits (an awaitable stage, a suspension), a read stays pending so that EOF
    // or a reset is noticed at once: the request's pending operation is then cancelled through
    // the coroutine's cancellation slot, or a parked stage's suspension resolved as a
    // disconnection (see cancel_walk). Bytes that arrive meanwhile are a pipelined request, not
    // a disconnect: they stay in the buffer (up to max_read_ahead_bytes) for the next parse.

    bool stopping() const noexcept override { return stop_level_now() == stop_level::hard; }

    bool owns(const exchange& ex) const noexcept override { return st_ && &ex == &st_->ex; }

    void watch_for_disconnect() override;

    void start_read_ahead();

    // Reads what the kernel holds for the connection, up to the read-ahead limit, without
    // blocking (the socket is non-blocking: see start). Readable with nothing to read is the end
    // of the stream, which the read reports.
    std::size_t read_available(beast::error_code& ec);

    void on_read_ahead(beast::error_code ec, std::size_t n);

    void stop_watching();

    // Wakes whatever serve() waits on in wait_for_nudge, or a stream's pump that waits. Each
    // waiter checks what it waits for before and after waiting, so a nudge meant for another (or
    // for nobody) is harmless. The pump steps later, once the caller has set what woke it.
    void nudge()
    {
        if (!st_ || !st_->output)
            return;
        if (auto& pump = st_->output->pump; pump && pump->waiting) {
            try {
                asio::post(strand(), [self = self()] { self->pump_stream(); });
                pump->waiting = false;
            }
            catch (...) { // bad_alloc: it stays waiting, for the next wake or heartbeat to try again
            }
        }
        if (st_->output->nudge)
            st_->output->nudge->cancel();
    }

    asio::awaitable<std::tuple<beast::error_code>> wait_for_nudge(
        asio::steady_timer::time_point until = asio::steady_timer::time_point::max());

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
    bool deferrable(bool keep_alive, std::size_t body_size);

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
    void start_flush();

    // Writes the held answers now; false when that failed.
    asio::awaitable<bool> flush_deferred();

    // The response for a request whose walk ended; `unhandled` gets the error no stage handled,
    // for on_complete.
    response outcome(context& ctx, std::exception_ptr& unhandled, bool& failed);

    // -- streamed responses --
    //
    // Once the chain is done, serve() hands the stream to a pump and ends: an open stream holds
    // no coroutine frame. The pump writes the head, then whatever producers queued, each write
    // started from the last one's completion. In between it waits with nothing of its own
    // pending until a producer wakes it (a post to this strand), its heartbeat's deadline passes,
    // the client leaves (the read-ahead nudges it) or the server stops. Each write is bounded by
    // write_timeout, so a client that stops reading is dropped while one that reads slowly is
    // not. When the body ends, the connection reads its next request (spawn) or closes.

    // What the pump keeps between its steps, in output_state while the stream is open.
    struct stream_pump {
        enum class writing : unsigned char { head, body, last };
        std::exception_ptr unhandled;            // for the request's on_complete, after the stream
        std::vector<stream_state::entry> batch;  // what is being written
        std::vector<asio::const_buffer> buffers; // ...as buffers; [first, end) are left to write
        std::size_t first = 0;
        std::optional<h1::chunk_size_line> size_line;
        std::string last; // the last chunk and its trailer
        asio::steady_timer::time_point last_write{};
        close_reason reason = close_reason::closed;
        writing what = writing::head;
        bool keep_alive = false;
        bool waiting = false; // for a wake or the heartbeat: see nudge
    };

    // From serve(), which ends right after: the stream this request opened starts with `head`.
    void open_stream(response& head, bool keep_alive, std::exception_ptr unhandled);

    // One step: end the stream, write what producers queued (or a heartbeat), or wait for them.
    void pump_stream();

    // Writes the pump's buffers from `first` on; on_stream_io continues when some went out.
    void write_stream_buffers();
    void on_stream_io(beast::error_code ec, std::size_t n);

    // The body's end: its last chunk (chunked), then end_stream.
    void write_last_chunk();

    // HTTP/1.0 has no chunks: the body ends with the connection. (version_ and head_only_ stay
    // the stream's request's while it is open: serve() reads no other meanwhile.)
    bool chunked() const noexcept { return version_ >= 11; }

    // The stream is over (`ok`: its body ended properly): on_close, then the next request or
    // the connection's end.
    void end_stream(bool ok) noexcept;

    // What the pump did threw (bad_alloc and the like, inside io_context::run, which must not see
    // it): the stream ends as failed and the connection closes. Call from a catch block.
    void fail_stream() noexcept;

    // Bytes the kernel still holds for the client (-1: unknown). Linux reports a full send
    // buffer writable again only once a third of it is free, which a slow reader may take longer
    // than write_timeout to make: a shrinking queue is the progress to look for.
    std::int64_t unsent_bytes() { return io::unsent_bytes(socket_); }

    // Why a stream's write failed, logged as a response's would be.
    close_reason write_failure(const beast::error_code& ec, const stream_state& st);

    // The stream's queue overflowed with the close policy: its client is dropped.
    close_reason fell_behind() const;

    // A producer queued something (or overflowed the queue) while this connection streams.
    void on_stream_wake(const std::weak_ptr<stream_state>& ws, bool abort);

    void report(const chain_error& err) const;

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
        std::int64_t unsent = -1;          // a stream's write (watch_progress_): the kernel's queue then
        std::unique_ptr<stream_pump> pump; // while a stream is open
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
    read_ahead read_ahead_ = read_ahead::off;
    bool head_only_ : 1 = false;          // ...a HEAD request
    bool keep_alive_ : 1 = false;         // ...which asked to keep the connection
    bool resuming_ : 1 = false;           // serve() goes on with a parked walk
    bool first_ : 1 = true;               // no request read yet
    bool flushing_ : 1 = false;           // start_flush is writing the held answers
    bool timed_out_ : 1 = false;          // the current phase's deadline passed
    bool shutdown_cancelled_ : 1 = false; // ...and cancelled what the request waited on
    bool closed_ : 1 = false;
    bool cooling_ : 1 = false;        // the warm phase's deadline passed: give the request state back
    bool warm_queued_ : 1 = false;    // the deadline queued is a warm phase's (see idle_warm)
    bool warm_renewed_ : 1 = false;   // ...and a request came since it was set
    bool watch_progress_ : 1 = false; // a stream's write: a shrinking kernel queue is progress
    // Why the connection cannot go on: held answers failed to go out (start_flush), or the client
    // left while a request waited (read_ahead::gone). Either ends it, so one code serves both.
    beast::error_code failure_;
};

} // namespace plinth::detail

#include <plinth/detail/impl/connection_output.hpp>
#include <plinth/detail/impl/connection_serve.hpp>
#include <plinth/detail/impl/connection_stream.hpp>

#endif
