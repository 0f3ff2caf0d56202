//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_STREAM_HPP
#define PLINTH_STREAM_HPP

// A response whose body is written piece by piece, from any thread, after the handler returned:
// HTTP/1.1 chunked transfer coding (HTTP/1.0: the body ends when the connection closes). Like a
// suspended request, an open stream holds no thread.

#include <plinth/context.hpp>
#include <plinth/detail/stream_state.hpp>
#include <plinth/stream_options.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/http/fields.hpp>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace plinth {

namespace detail {

struct stream_access;

/// Attaches a new stream to the request of `ctx` and sets `head` as its response.
inline std::shared_ptr<stream_state> open_stream(context& ctx, response head, std::optional<stream_options> options)
{
    auto& ex = exchange_of(ctx);
    if (ex.stream)
        throw std::logic_error("plinth: this request already opened a stream");
    const auto* policy = ex.policy;
    auto state = std::make_shared<stream_state>(*ex.executor,
                                                options      ? *options
                                                    : policy ? policy->streams
                                                             : stream_options{},
                                                policy ? (policy->log ? *policy->log : log_function())
                                                       : log_function(log_to_stderr));
    head.body().clear();
    ctx.response = std::move(head); // ends the enter phase, like any response
    ex.stream = state;
    return state;
}

/// Queues `data` on `state` (which may be null), completing `handler` when it is written.
template <class Handler>
void push_with_handler(const std::shared_ptr<stream_state>& state, std::string data, Handler&& handler)
{
    if (state) {
        state->push(std::move(data), std::forward<Handler>(handler));
        return;
    }
    auto ex = asio::get_associated_executor(handler, asio::system_executor());
    asio::post(ex,
               [h = std::forward<Handler>(handler)]() mutable { std::move(h)(make_error_code(stream_errc::closed)); });
}

} // namespace detail

/// A handle to a streamed response body. Copies share the stream; every member is thread-safe.
///
/// Open it from a stage (or take it as a handler's second argument); the head goes out when the
/// chain has finished, then each write as a chunk, in order. `close` ends the body; the
/// connection may then serve its next request. Writes are queued (bounded by `stream_options`);
/// `async_write` completes when its data has been handed to the socket, so a producer that waits
/// for it follows the client's pace.
class response_stream {
public:
    /// An empty handle: writes fail with `stream_errc::closed`.
    response_stream() = default;

    /// Opens a streamed response for the request in `ctx`: `head` gives the status and headers
    /// (its body is ignored); `options` default to the server's `streams`.
    static response_stream open(context& ctx, response head = response{http::status::ok, 11},
                                std::optional<stream_options> options = std::nullopt)
    {
        return response_stream(detail::open_stream(ctx, std::move(head), options));
    }

    /// Queues `data` as the next piece of the body. False when the stream is closed or the
    /// queue overflowed with the close policy. An empty piece writes nothing.
    bool write(std::string data) const { return state_ && state_->push(std::move(data)); }

    /// Queues `data` and completes with `void(error_code)` once it has been handed to the socket:
    /// success, `stream_errc::closed` / `overflow` / `dropped`, `operation_aborted` when the
    /// operation was cancelled before the connection took it, or the socket's error. Supports
    /// per-operation cancellation (terminal, partial, total).
    template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code)) Token>
    auto async_write(std::string data, Token&& token) const
    {
        return asio::async_initiate<Token, void(boost::system::error_code)>(
            [](auto handler, std::shared_ptr<detail::stream_state> state, std::string d) {
                detail::push_with_handler(state, std::move(d), std::move(handler));
            },
            token, state_, std::move(data));
    }

    /// Ends the body after what is queued, with optional trailer fields. False when the stream
    /// was already closed. Throws `std::invalid_argument` for a trailer with CR or LF in it.
    bool close(const http::fields& trailers = {}) const
    {
        if (!state_)
            return false;
        std::string block;
        for (const auto& f : trailers) {
            if (f.name_string().find_first_of("\r\n:") != std::string_view::npos
                || f.value().find_first_of("\r\n") != std::string_view::npos)
                throw std::invalid_argument("plinth::response_stream::close: a trailer field has CR, LF or ':'");
            block.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
        }
        return state_->end(std::move(block));
    }

    /// `cb(reason)` runs once when the stream is over, on the connection's strand (at once, on
    /// this thread, when it already is). Several callbacks run in registration order.
    void on_close(std::function<void(close_reason)> cb) const
    {
        if (state_)
            state_->on_close(std::move(cb));
        else
            cb(close_reason::closed);
    }

    /// Whether writes are still accepted.
    bool is_open() const { return state_ && state_->is_open(); }

    /// Bytes queued and not yet handed to the socket.
    std::size_t queued_bytes() const { return state_ ? state_->queued_bytes() : 0; }

    /// Messages queued and not yet handed to the socket.
    std::size_t queued() const { return state_ ? state_->queued() : 0; }

    /// Messages discarded by the drop-oldest policy so far.
    std::uint64_t dropped() const { return state_ ? state_->dropped() : 0; }

    explicit operator bool() const noexcept { return state_ != nullptr; }

private:
    friend class sse_stream;
    friend struct detail::stream_access;
    explicit response_stream(std::shared_ptr<detail::stream_state> s)
        : state_(std::move(s))
    {
    }

    std::shared_ptr<detail::stream_state> state_;
};

namespace detail {

// The connection and tests reach a handle's state here.
struct stream_access {
    static const std::shared_ptr<stream_state>& state(const response_stream& s) noexcept { return s.state_; }
};

/// The state behind `s` (null for an empty handle).
inline const std::shared_ptr<stream_state>& state_of(const response_stream& s) noexcept
{
    return stream_access::state(s);
}

} // namespace detail

} // namespace plinth

#endif
