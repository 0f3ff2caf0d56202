//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_IMPL_CONNECTION_SERVE_HPP
#define PLINTH_DETAIL_IMPL_CONNECTION_SERVE_HPP

// connection<Stream>'s request loop: serve() reads a request, walks it through the chain,
// parks the walk at a callback stage (park, unpark), and writes the response; with what it
// answers when reading fails, and how a walk ends (outcome, report, finish_suspensions).

#include <plinth/detail/connection.hpp>

namespace plinth::detail {

template <class Stream>
asio::awaitable<void> connection<Stream>::serve()
{
    // Every operation here reports errors through as_tuple; a cancellation (disconnect) must
    // not turn into an exception at the next co_await.
    co_await asio::this_coro::throw_if_cancelled(false);
    const server_options& opt = core_->options;
    for (;;) {
        const bool resumed = resuming_;
        resuming_ = false;
        if (!resumed) {
            while (read_ahead_pending()) // the parse needs the buffer: a cancelled read-ahead delivers first
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
                             && (opt.idle_timeout <= opt.idle_timeout.zero() || opt.idle_timeout > opt.idle_release))
                        idle_warm(opt.idle_release);
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
        if (opened && (failed || client_left())) { // the stream never began
            opened->finish(client_left() ? close_reason::client_gone : close_reason::failed);
            opened.reset();
        }
        if (!opened)
            stop_watching(); // a stream goes on watching: its client may leave at any time
        if (client_left()) { // nothing is written to a client that left
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
                finish_suspensions(true, std::make_exception_ptr(client_disconnected(asio::error::connection_aborted)));
                co_return close();
            }
            // serve() ends: the pump writes the stream, then spawns it again for the next request.
            auto signal = std::exchange(st_->cancel_request, nullptr); // (its completion handler has one)
            open_stream(res, keep_alive, std::move(unhandled));
            co_return;
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

template <class Stream>
asio::awaitable<beast::error_code> connection<Stream>::read_more()
{
    const auto room = beast::read_size(st_->buffer, 65536);
    if (room == 0)
        co_return beast::error_code(http::error::buffer_overflow);
    auto [ec, n] = co_await socket_.async_read_some(st_->buffer.prepare(room), unbound());
    st_->buffer.commit(n);
    co_return ec;
}

template <class Stream>
asio::awaitable<void> connection<Stream>::fail_read(const beast::error_code& ec)
{
    const auto failure = h1::on_read_failure(ec, timed_out_);
    if (failure.worth_logging)
        core_->log(log_level::warning, "read failed: " + ec.message());
    if (!failure.answer)
        co_return close();
    ++(*failure.answer == http::status::request_timeout ? core_->timeouts : core_->rejected);
    co_return co_await reject(*failure.answer);
}

template <class Stream>
asio::awaitable<void> connection<Stream>::reject(http::status status)
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

template <class Stream>
response connection<Stream>::outcome(context& ctx, std::exception_ptr& unhandled, bool& failed)
{
    if (const chain_error* err = ctx.error()) {
        failed = true;
        unhandled = err->exception;
        if (shutdown_cancelled_) { // the shutdown's grace ended what the request waited on
            core_->log(log_level::info, "a request still waiting at the end of the shutdown grace got 503");
            return cancelled_response(cancellation{core_->options.shutdown_retry_after});
        }
        if (!client_left())
            report(*err);
        return error_response(err->exception);
    }
    if (ctx.response)
        return std::move(*ctx.response);
    return text("Not Found", http::status::not_found);
}

template <class Stream>
void connection<Stream>::report(const chain_error& err) const
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

template <class Stream>
void connection<Stream>::park()
{
    // serve() ends: nothing of it is left to cancel (and parked() says so from here on).
    auto signal = std::exchange(st_->cancel_request, nullptr);
    // The read-ahead needs no buffer until bytes come (unless its stream reads into it): give
    // it back.
    if (st_->buffer.size() == 0 && (io::waits_without_buffer || !read_ahead_pending()))
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

template <class Stream>
void connection<Stream>::unpark(std::exception_ptr e)
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

template <class Stream>
void connection<Stream>::cancel_walk()
{
    if (st_->run)
        st_->run->cancel();
    if (!parked())
        st_->cancel_request->emit(asio::cancellation_type::terminal); // an awaitable stage in serve()
    else // a parked stage: its suspension ends as a disconnection (if nothing else won)
        for (const auto& s : st_->ex.suspensions)
            s->resolve(disconnection{});
}

template <class Stream>
bool connection<Stream>::write_at_once(wire& out, beast::error_code& ec)
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

template <class Stream>
void connection<Stream>::finish_suspensions(bool disconnected, const std::exception_ptr& error)
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

} // namespace plinth::detail

#endif
