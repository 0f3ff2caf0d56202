//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_HANDLER_HPP
#define PLINTH_HANDLER_HPP

// The shapes a route's handler may take, and the adapter that turns one into an interceptor.

#include <plinth/http.hpp>
#include <plinth/sse.hpp>
#include <plinth/stream.hpp>

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <string>
#include <type_traits>
#include <utility>

namespace plinth {

namespace detail {

template <class T>
struct is_response_awaitable : std::false_type {
};
template <>
struct is_response_awaitable<asio::awaitable<response>> : std::true_type {
};

template <class F, class Arg>
concept handler_of = std::is_invocable_v<F&, Arg> &&(
    std::is_same_v<std::invoke_result_t<F&, Arg>,
                   response> || is_response_awaitable<std::invoke_result_t<F&, Arg>>::value);

template <class F, class Arg, class Handle>
concept handle_handler_of =
    std::is_invocable_v<F&, Arg, Handle> && std::is_void_v<std::invoke_result_t<F&, Arg, Handle>>;

template <class F, class Arg>
concept suspended_handler_of = handle_handler_of<F, Arg, async_response>;

template <class F, class Arg>
concept sse_handler_of = handle_handler_of<F, Arg, sse_stream>;

template <class F, class Arg>
concept stream_handler_of = handle_handler_of<F, Arg, response_stream>;

/// The handle a handler of this shape takes after its request (void: none).
template <class F, class Arg>
using handle_of =
    std::conditional_t<suspended_handler_of<F, Arg>, async_response,
                       std::conditional_t<sse_handler_of<F, Arg>, sse_stream,
                                          std::conditional_t<stream_handler_of<F, Arg>, response_stream, void>>>;

template <class F, class Arg>
concept handle_handler = !std::is_void_v<handle_of<F, Arg>>;

} // namespace detail

/// A handler: something that turns a request (or the whole context) into a response.
/// Accepted shapes: `response(const request&)`, `asio::awaitable<response>(request)`, the
/// suspended style `void(const request&, async_response)` (answer later through the handle, from
/// any thread), the streaming styles `void(const request&, sse_stream)` (server-sent events) and
/// `void(const request&, response_stream)` (a chunked body), and the same taking `const context&`
/// (to reach path parameters). Streams opened this way take the server's `streams` options; a
/// stage may open one with other options (`sse_stream::open(ctx, options)`). A handler taking
/// `request` by value gets a copy; one taking `const request&` may keep the reference until its
/// coroutine completes or its handle is resolved.
template <class F>
concept handler = detail::handler_of<F, context&> || detail::handler_of<F, request&> || detail::handle_handler<
    F, context&> || detail::handle_handler<F, request&>;

/// Adapts a handler into an interceptor whose `enter` stores the response in the context.
template <handler F>
interceptor make_handler(std::string name, F f)
{
    constexpr bool takes_context = detail::handler_of<F, context&> || detail::handle_handler<F, context&>;
    using arg = std::conditional_t<takes_context, context&, request&>;
    auto input = [](context& c) -> arg {
        if constexpr (takes_context)
            return c;
        else
            return c.request();
    };
    interceptor i{.name = std::move(name)};
    using handle = detail::handle_of<F, arg>;
    if constexpr (std::is_same_v<handle, async_response>) // a callback stage: no frame while suspended
        i.enter = callback_stage{[f = std::move(f), input](context& c, stage_handler done) mutable {
            detail::suspend_then(
                c, [&](async_response ar) { std::invoke(f, input(c), std::move(ar)); }, std::move(done));
        }};
    else if constexpr (!std::is_void_v<handle>) // a stream: the head goes out when the chain ends
        i.enter = [f = std::move(f), input](context& c) mutable { std::invoke(f, input(c), handle::open(c)); };
    else if constexpr (std::is_same_v<std::invoke_result_t<F&, arg>, response>)
        i.enter = [f = std::move(f), input](context& c) mutable { c.response = std::invoke(f, input(c)); };
    else
        i.enter = [f = std::move(f), input](context& c) mutable -> asio::awaitable<void> {
            c.response = co_await std::invoke(f, input(c));
        };
    return i;
}

} // namespace plinth

#endif
