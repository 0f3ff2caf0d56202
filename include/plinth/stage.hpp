//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_STAGE_HPP
#define PLINTH_STAGE_HPP

// The stages an interceptor is made of, and the interceptor itself: what a chain runs. A stage is
// a plain call, a coroutine, or a callback stage (an Asio initiating function).

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/awaitable.hpp>

#include <concepts>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace plinth {

namespace asio = boost::asio;

/// The three stages of an interceptor.
enum class stage : unsigned char { enter, leave, error };

/// The stage's name, for logs and error reports.
constexpr std::string_view to_string(stage s) noexcept
{
    switch (s) {
    case stage::enter: return "enter";
    case stage::leave: return "leave";
    case stage::error: return "error";
    }
    return "?";
}

/// How an asynchronous stage reports its end: once, with what it threw or nothing. Its associated
/// cancellation slot, when it has one, is the walk's: a client gone, a shutdown's grace ended.
using stage_handler = asio::any_completion_handler<void(std::exception_ptr)>;

/// A stage written as an Asio initiating function rather than a coroutine: it starts its work and
/// returns; the handler is called later, never from inside the call. Nothing is held for it but
/// what the work itself keeps, so a driver can let go of every coroutine frame while it waits:
/// that is how a suspended request stays small. `f` is called as `f(context, handler)` (an error
/// stage: `f(context, error, handler)`).
template <class F>
struct callback_stage {
    F f;
};
template <class F>
callback_stage(F) -> callback_stage<F>; // clang 14 deduces no aggregate's arguments

template <class Context>
class chain_walk;

namespace detail {

enum class shape { none, sync_value, async_value, sync_ref, async_ref };

// Which of the accepted stage shapes `F` has (see basic_stage).
template <class F, class Context, class... Extra>
consteval shape stage_shape()
{
    if constexpr (std::is_invocable_v<F&, Context&&, Extra...>) {
        using r = std::invoke_result_t<F&, Context&&, Extra...>;
        if constexpr (std::is_same_v<r, Context>)
            return shape::sync_value;
        else if constexpr (std::is_same_v<r, asio::awaitable<Context>>)
            return shape::async_value;
    }
    // By reference only when an rvalue cannot bind: `[](Context c) {}` (a by-value stage that
    // forgot to return its context) must not compile as a by-reference stage losing its changes.
    if constexpr (std::is_invocable_v<F&, Context&, Extra...> && !std::is_invocable_v<F&, Context&&, Extra...>) {
        using r = std::invoke_result_t<F&, Context&, Extra...>;
        if constexpr (std::is_void_v<r>)
            return shape::sync_ref;
        else if constexpr (std::is_same_v<r, asio::awaitable<void>>)
            return shape::async_ref;
    }
    return shape::none;
}

// Converts to `Stage` as a stage of one of the accepted shapes (and is not a `Stage` already).
template <class F, class Stage, class Context, class... Extra>
concept stage_callable =
    !std::same_as<std::remove_cvref_t<F>, Stage> && stage_shape<F, Context, Extra...>() != shape::none;

} // namespace detail

/// One stage of an interceptor, type-erased once when the interceptor is built.
///
/// Accepts any callable of one of these shapes (`Extra...` is empty for enter and leave,
/// `std::exception_ptr` for error):
///  - `Context(Context, Extra...)` and `asio::awaitable<Context>(Context, Extra...)`: Pedestal's
///    shape; the context is moved in and returned. A stage of this shape that throws has
///    consumed its context: what the error stages then see is the moved-from object, which is
///    why `http::context` keeps the request behind a pointer.
///  - `void(Context&, Extra...)` and `asio::awaitable<void>(Context&, Extra...)`: the context is
///    updated in place and survives a throw intact. The reference must be non-const: a stage
///    taking `Context` or `const Context&` must return the context, so none loses its changes.
template <class Context, class... Extra>
class basic_stage {
public:
    /// An absent stage: the chain skips it.
    basic_stage() noexcept = default;

    /// A callback stage (see callback_stage).
    template <class F>
        requires(std::is_invocable_v<F&, Context&, Extra..., stage_handler>)
    basic_stage(callback_stage<F> s) // NOLINT(google-explicit-constructor)
        : callback_(std::move(s.f))
    {
    }

    template <class F>
        requires(detail::stage_callable<F, basic_stage, Context, Extra...>)
    basic_stage(F f) // NOLINT(google-explicit-constructor): any callable converts, as with std::function
    {
        constexpr auto s = detail::stage_shape<F, Context, Extra...>();
        if constexpr (s == detail::shape::sync_value)
            sync_ = [f = std::move(f)](Context& c, Extra... e) mutable { c = std::invoke(f, std::move(c), e...); };
        else if constexpr (s == detail::shape::async_value)
            async_ = [f = std::move(f)](Context& c, Extra... e) mutable -> asio::awaitable<void> {
                c = co_await std::invoke(f, std::move(c), e...);
            };
        else if constexpr (s == detail::shape::sync_ref)
            sync_ = std::move(f);
        else
            async_ = std::move(f);
    }

    /// True when the stage exists.
    explicit operator bool() const noexcept { return sync_ || async_ || callback_; }

    /// True when the stage is asynchronous: a coroutine or a callback stage.
    bool is_async() const noexcept { return async_ || callback_; }

    /// True for a callback stage (see callback_stage).
    bool is_callback() const noexcept { return static_cast<bool>(callback_); }

private:
    template <class>
    friend class chain_walk;

    std::function<void(Context&, Extra...)> sync_;
    std::function<asio::awaitable<void>(Context&, Extra...)> async_;
    std::function<void(Context&, Extra..., stage_handler)> callback_;
};

/// The `enter` or `leave` stage of an interceptor.
template <class Context>
using stage_fn = basic_stage<Context>;

/// The `error` stage of an interceptor: also receives the error.
template <class Context>
using error_fn = basic_stage<Context, std::exception_ptr>;

/// A named set of up to three stages. Build it with designated initializers:
/// `{.name = "auth", .enter = check_token, .error = map_errors}`.
template <class Context>
struct basic_interceptor {
    std::string name;          ///< required: it appears in error reports and observers
    stage_fn<Context> enter{}; ///< runs on the way in
    stage_fn<Context> leave{}; ///< runs on the way out, in reverse order
    error_fn<Context> error{}; ///< runs on the way out instead of leave while an error is pending

    /// A name and at least one stage.
    bool valid() const noexcept { return !name.empty() && (enter || leave || error); }
};

} // namespace plinth

#endif
