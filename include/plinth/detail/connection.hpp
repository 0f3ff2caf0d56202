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

#include <plinth/detail/http_date.hpp>
#include <plinth/http.hpp>
#include <plinth/router.hpp>
#include <plinth/server_options.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>

#include <atomic>
#include <exception>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace plinth::detail {

class connection;

/// What a server shares with its connections; they keep it alive until the last one is gone.
struct server_core : std::enable_shared_from_this<server_core> {
    server_core(asio::any_io_executor ex, server_options o) : executor(std::move(ex)), options(std::move(o))
    {
        policy.default_timeout = options.suspend_timeout;
        policy.max_suspended = options.max_suspended;
        policy.log = options.log;
        policy.shutdown_retry_after = options.shutdown_retry_after;
    }

    asio::any_io_executor executor; // the acceptor's strand
    server_options options;
    suspension_policy policy;
    plinth::router router;
    plinth::chain chain;

    std::atomic<std::uint64_t> open_connections{0};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::uint64_t> rejected{0};
    std::atomic<std::uint64_t> timeouts{0};

    std::mutex mutex; // guards what follows
    std::list<std::weak_ptr<connection>> live;
    bool stopping = false; // stop began
    bool stopped = false;  // ...and every connection is gone
    std::vector<asio::any_completion_handler<void()>> stop_waiters;
    std::optional<asio::steady_timer> grace; // on the acceptor's strand

    void log(log_level level, std::string_view message) const noexcept
    {
        if (!options.log)
            return;
        try {
            options.log(level, message);
        }
        catch (...) { // a broken log hook must not take a connection down
        }
    }

    // -- shutdown --

    // On the acceptor's strand, once: the grace starts; when it runs out, whatever still waits
    // is answered 503.
    void arm_grace(const asio::any_io_executor& strand, std::chrono::milliseconds d);

    // After stop began and whenever a connection goes: completes the stop once none is left.
    void check_stopped()
    {
        std::vector<asio::any_completion_handler<void()>> waiters;
        {
            std::lock_guard lock(mutex);
            if (!stopping || stopped || open_connections.load() != 0)
                return;
            stopped = true;
            waiters.swap(stop_waiters);
            if (grace) // the grace is no longer needed: it must not keep io_context::run busy
                asio::post(grace->get_executor(), [self = shared_from_this()] { self->grace->cancel(); });
        }
        for (auto& w : waiters)
            complete_stop_waiter(std::move(w));
    }

    // Through the waiter's own executor when it has one (post honours it), else the server's.
    void complete_stop_waiter(asio::any_completion_handler<void()> w) { asio::post(executor, std::move(w)); }
};

/// A one-line description of an exception, for the log only.
inline std::string describe(const std::exception_ptr& e)
{
    try {
        std::rethrow_exception(e);
    }
    catch (const std::exception& x) {
        return x.what();
    }
    catch (...) {
        return "a non-standard exception";
    }
}

/// True for the ways a client leaves that are not worth logging as errors.
inline bool client_went_away(const beast::error_code& ec)
{
    return ec == http::error::end_of_stream || ec == http::error::partial_message || ec == asio::error::eof
        || ec == asio::error::connection_reset || ec == asio::error::broken_pipe
        || ec == asio::error::operation_aborted || ec == beast::error::timeout;
}

class connection : public std::enable_shared_from_this<connection>, private exchange_owner {
public:
    connection(std::shared_ptr<server_core> core, asio::ip::tcp::socket socket)
        : core_(std::move(core)), stream_(std::move(socket))
    {
        ++core_->open_connections;
    }

    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    ~connection()
    {
        for (const auto& s : exchange_.suspensions) // only when the io_context is torn down mid-request
            s->release();
        {
            std::lock_guard lock(core_->mutex);
            if (registered_)
                core_->live.erase(self_in_live_);
        }
        --core_->open_connections;
        core_->check_stopped();
    }

    /// Registers with the server and starts the connection's coroutine on its strand.
    void start()
    {
        {
            std::lock_guard lock(core_->mutex);
            if (core_->stopping)
                return; // the server stopped between accept and now: just close
            self_in_live_ = core_->live.insert(core_->live.end(), weak_from_this());
            registered_ = true;
        }
        auto core = core_;
        // The slot lets a disconnect cancel whatever the request is waiting on.
        asio::co_spawn(stream_.get_executor(), run(shared_from_this()),
                       asio::bind_cancellation_slot(cancel_request_.slot(), [core](std::exception_ptr e) {
                           if (e)
                               core->log(log_level::error, "connection ended by an exception: " + describe(e));
                       }));
    }

    /// Asks the connection to finish: an idle one closes now, a busy one after its response,
    /// a suspended request is cancelled (503). Thread-safe.
    void request_stop()
    {
        asio::post(stream_.get_executor(), [self = shared_from_this()] {
            self->stopping_ = true;
            if (self->idle_)
                self->stream_.cancel();
            for (const auto& s : self->exchange_.suspensions)
                s->resolve(cancellation{}, true);
        });
    }

    /// The shutdown grace ran out: whatever still waits is answered 503, a request still being
    /// read is dropped. Thread-safe.
    void stop_now()
    {
        asio::post(stream_.get_executor(), [self = shared_from_this()] {
            self->hard_stop_ = true;
            for (const auto& s : self->exchange_.suspensions)
                s->resolve(cancellation{self->core_->options.shutdown_retry_after}, true);
        });
    }

private:
    static asio::awaitable<void> run(std::shared_ptr<connection> self) { co_await self->serve(); }

    asio::awaitable<void> serve()
    {
        // Every operation here reports errors through as_tuple; a cancellation (disconnect) must
        // not turn into an exception at the next co_await.
        co_await asio::this_coro::throw_if_cancelled(false);
        exchange_.executor = stream_.get_executor();
        exchange_.owner = this;
        exchange_.policy = &core_->policy;
        for (;;) {
            co_await join_watch();
            http::request_parser<http::string_body> parser;
            parser.header_limit(core_->options.max_header_bytes);
            parser.body_limit(core_->options.max_body_bytes);

            beast::error_code ec;
            for (;;) {
                idle_ = buffer_.size() == 0 && !parser.got_some();
                if (stopping_ && idle_)
                    co_return close();
                std::tie(ec, std::ignore) =
                    co_await http::async_read(stream_, buffer_, parser, asio::as_tuple(asio::use_awaitable));
                idle_ = false;
                // A stop cancels a read that waited for a new request; if bytes of one arrived
                // meanwhile, the request is in flight: finish reading it and answer it.
                if (ec != asio::error::operation_aborted || !stopping_ || !parser.got_some())
                    break;
            }
            if (ec) {
                co_await reject(ec);
                co_return;
            }

            exchange_.request = parser.release();
            exchange_.params.clear();
            const unsigned version = exchange_.request.version();
            const bool head = exchange_.request.method() == http::verb::head;
            bool keep_alive = exchange_.request.keep_alive();

            std::exception_ptr unhandled;
            response res = co_await respond(unhandled);
            stop_watching();
            if (disconnected_) { // nothing is written to a client that left
                finish_suspensions(true, std::make_exception_ptr(client_disconnected(disconnect_error_)));
                co_return close();
            }
            if (http::token_list{res[http::field::connection]}.exists("close"))
                keep_alive = false;
            keep_alive = keep_alive && !stopping_;
            finish(res, version, keep_alive);
            ++core_->requests; // counted before the write, so a client that has its answer sees it

            if (head) {
                http::response_serializer<http::string_body> sr{res};
                std::tie(ec, std::ignore) =
                    co_await http::async_write_header(stream_, sr, asio::as_tuple(asio::use_awaitable));
            }
            else
                std::tie(ec, std::ignore) =
                    co_await http::async_write(stream_, res, asio::as_tuple(asio::use_awaitable));
            if (ec) {
                if (!client_went_away(ec))
                    core_->log(log_level::warning, "write failed: " + ec.message());
                finish_suspensions(true, std::make_exception_ptr(client_disconnected(ec)));
                co_return close();
            }
            finish_suspensions(false, unhandled);
            if (!keep_alive)
                co_return close();
        }
    }

    // Fires the completion callbacks of the request's suspensions, after the write.
    void finish_suspensions(bool disconnected, const std::exception_ptr& error)
    {
        for (const auto& s : exchange_.suspensions) {
            if (disconnected)
                s->disconnected(error);
            else
                s->complete(error);
            ++core_->policy.stats.completed;
        }
        exchange_.suspensions.clear();
    }

    // -- disconnect detection while a request waits --
    //
    // While the chain waits (an awaitable stage, a suspension), a read stays pending so that EOF
    // or a reset is noticed at once: the request's pending operation is then cancelled through
    // the coroutine's cancellation slot. Bytes that arrive meanwhile are a pipelined request, not
    // a disconnect: they stay in the buffer (up to max_read_ahead_bytes) for the next parse.

    bool stopping() const noexcept override { return stopping_; }

    void watch_for_disconnect() override
    {
        if (watching_ || disconnected_)
            return;
        watching_ = true;
        if (!watch_pending_)
            read_ahead();
    }

    void read_ahead()
    {
        const std::size_t limit = core_->options.max_read_ahead_bytes;
        if (buffer_.size() >= limit) {
            watching_ = false; // bounded: stop reading until the response is written
            return;
        }
        watch_pending_ = true;
        stream_.socket().async_read_some(
            buffer_.prepare(std::min<std::size_t>(limit - buffer_.size(), 4096)),
            [self = shared_from_this()](beast::error_code ec, std::size_t n) { self->on_read_ahead(ec, n); });
    }

    void on_read_ahead(beast::error_code ec, std::size_t n)
    {
        watch_pending_ = false;
        buffer_.commit(n);
        if (join_)
            join_->cancel(); // serve() may be waiting for this read to finish
        if (!watching_)
            return; // stopped: the request already has its response
        if (ec) {
            watching_ = false;
            if (ec == asio::error::operation_aborted)
                return;
            disconnected_ = true;
            disconnect_error_ = ec;
            cancel_request_.emit(asio::cancellation_type::terminal);
            return;
        }
        read_ahead();
    }

    void stop_watching()
    {
        watching_ = false;
        if (watch_pending_) {
            beast::error_code ignored;
            stream_.socket().cancel(ignored);
        }
    }

    // The next parse needs the buffer: wait until a cancelled read-ahead has delivered its bytes.
    asio::awaitable<void> join_watch()
    {
        while (watch_pending_) {
            if (!join_)
                join_.emplace(stream_.get_executor(), asio::steady_timer::time_point::max());
            co_await join_->async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }

    // Runs the request through the chain and turns the outcome into a response; `unhandled` gets
    // the error no stage handled, for on_complete.
    asio::awaitable<response> respond(std::exception_ptr& unhandled)
    {
        context ctx{exchange_};
        try {
            ctx = co_await core_->chain.execute(std::move(ctx));
        }
        catch (...) { // execute reports stage errors in ctx; this is bad_alloc and the like
            core_->log(log_level::error, "request failed outside any stage: " + describe(std::current_exception()));
            co_return error_response(nullptr);
        }
        if (const chain_error* err = ctx.error()) {
            unhandled = err->exception;
            if (!disconnected_)
                report(*err);
            co_return error_response(err->exception);
        }
        if (ctx.response)
            co_return std::move(*ctx.response);
        co_return text("Not Found", http::status::not_found);
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
        const auto& req = exchange_.request;
        core_->log(level, std::string(req.method_string()) + " " + std::string(req.target()) + ": "
                              + std::string(to_string(err.stage)) + " stage of '" + err.interceptor
                              + "' threw: " + describe(err.exception));
    }

    void finish(response& res, unsigned version, bool keep_alive) const
    {
        res.version(version);
        res.set(http::field::server, core_->options.server_name);
        res.set(http::field::date, current_http_date());
        const unsigned status = res.result_int();
        if (status < 200 || status == 204 || status == 304)
            res.body().clear(); // these never carry a body
        res.prepare_payload();
        res.keep_alive(keep_alive);
    }

    // Answers a request that could not be read, then closes; a client that left gets nothing.
    asio::awaitable<void> reject(const beast::error_code& ec)
    {
        const bool parse_error = ec.category() == beast::error_code(http::error::bad_method).category();
        if (!parse_error || client_went_away(ec)) {
            if (!client_went_away(ec))
                core_->log(log_level::warning, "read failed: " + ec.message());
            co_return close();
        }
        http::status status = http::status::bad_request;
        if (ec == http::error::header_limit)
            status = http::status::request_header_fields_too_large;
        else if (ec == http::error::body_limit)
            status = http::status::payload_too_large;
        core_->log(log_level::debug, "rejected a request: " + ec.message());

        response res = text(std::string(http::obsolete_reason(status)), status);
        finish(res, 11, false);
        co_await http::async_write(stream_, res, asio::as_tuple(asio::use_awaitable));
        close();
    }

    void close()
    {
        beast::error_code ignored;
        stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
        stream_.socket().close(ignored);
    }

    std::shared_ptr<server_core> core_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    exchange exchange_;
    asio::cancellation_signal cancel_request_;  // emitted when the client leaves mid-request
    std::optional<asio::steady_timer> join_;    // wakes serve() when a read-ahead finishes
    beast::error_code disconnect_error_;
    bool idle_ = false;          // waiting for the first byte of a request
    bool stopping_ = false;      // the server is stopping: finish the current request, then close
    bool watching_ = false;      // a request is waiting: read ahead to notice a disconnect
    bool watch_pending_ = false; // a read-ahead is in flight
    bool disconnected_ = false;  // the client left while a request was waiting
    bool registered_ = false;
    bool hard_stop_ = false;     // the shutdown grace ran out
    std::list<std::weak_ptr<connection>>::iterator self_in_live_;
};

inline void server_core::arm_grace(const asio::any_io_executor& strand, std::chrono::milliseconds d)
{
    {
        std::lock_guard lock(mutex);
        if (stopped)
            return;
        grace.emplace(strand, d);
    }
    grace->async_wait([self = shared_from_this()](beast::error_code ec) {
        if (ec)
            return; // every connection went before the grace ran out
        std::vector<std::shared_ptr<connection>> open;
        {
            std::lock_guard lock(self->mutex);
            for (const auto& w : self->live)
                if (auto c = w.lock())
                    open.push_back(std::move(c));
        }
        for (const auto& c : open)
            c->stop_now();
    });
}

} // namespace plinth::detail

#endif
