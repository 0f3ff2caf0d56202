//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_CONTEXT_HPP
#define PLINTH_CONTEXT_HPP

// The context an HTTP request travels in through the chain, the HTTP chain itself, and how a
// stage suspends its request.

#include <plinth/async_response.hpp>
#include <plinth/chain.hpp>
#include <plinth/detail/exchange.hpp>
#include <plinth/detail/http_date.hpp>
#include <plinth/detail/uri.hpp>
#include <plinth/message.hpp>
#include <plinth/path_params.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace plinth {

/// A handle to a suspended HTTP request (see basic_async_response).
using async_response = basic_async_response<response>;

namespace detail {
struct context_access;
} // namespace detail

/// The context an HTTP request travels in through the chain.
class context : public chain_context<context> {
public:
    context() = default;

    /// The request. Interceptors may change it (parse a body, rewrite a header).
    plinth::request& request() const noexcept { return exchange_->request; }

    /// The request target's path, without the query.
    std::string_view path() const noexcept { return detail::split_target(exchange_->request.target()).first; }

    /// The percent-decoded value of query parameter `name`, or nothing.
    std::optional<std::string> query(std::string_view name) const
    {
        return detail::query_value(detail::split_target(exchange_->request.target()).second, name);
    }

    /// The path parameters of the matched route.
    const path_params& params() const noexcept { return exchange_->params; }
    path_params& params() noexcept { return exchange_->params; }

    /// The path parameter `name`; throws `std::out_of_range` (a 500) when the route has none.
    std::string_view param(std::string_view name) const { return exchange_->params.at(name); }

    /// The executor stages run on: the connection's strand.
    const asio::any_io_executor& executor() const noexcept { return *exchange_->executor; }

    /// Called by the chain before an asynchronous stage: from now on the connection watches for
    /// the client going away.
    void on_suspend() const
    {
        if (exchange_ && exchange_->owner)
            exchange_->owner->watch_for_disconnect();
    }

    /// The response; once set, the enter phase ends (the server's terminator).
    optional_response response;

private:
    friend struct detail::context_access;

    explicit context(detail::exchange& ex) noexcept
        : exchange_(&ex)
    {
    }

    detail::exchange* exchange_ = nullptr;
};

namespace detail {

// The server and the HTTP layer's internals reach a context's exchange here.
struct context_access {
    static context make(exchange& ex) noexcept { return context{ex}; }
    static exchange& of(const context& c) noexcept { return *c.exchange_; }
};

/// A context over `ex`, as a connection makes one for each request.
inline context make_context(exchange& ex) noexcept
{
    return context_access::make(ex);
}

/// The exchange `c` points at.
inline exchange& exchange_of(const context& c) noexcept
{
    return context_access::of(c);
}

} // namespace detail

/// An interceptor over the HTTP context.
using interceptor = basic_interceptor<context>;

/// A chain over the HTTP context, ending its enter phase once a response is set.
class chain : public basic_chain<context> {
public:
    chain() { terminate_when(has_response); }

    chain(std::vector<interceptor> interceptors)
        : basic_chain<context>(std::move(interceptors))
    {
        terminate_when(has_response);
    }

    chain(std::initializer_list<interceptor> interceptors)
        : chain(std::vector<interceptor>(interceptors))
    {
    }

    /// The HTTP terminator: a response is present.
    static bool has_response(const context& c) noexcept { return c.response.has_value(); }
};

namespace detail {

/// The 503 a cancelled suspension answers with, `Retry-After` as the cancel call gave it.
inline response cancelled_response(const cancellation& c)
{
    response res = text("Service Unavailable", http::status::service_unavailable);
    if (auto* s = std::get_if<std::chrono::seconds>(&c.retry_after))
        res.set(http::field::retry_after, std::to_string(std::max<std::int64_t>(0, s->count())));
    else if (auto* t = std::get_if<std::chrono::system_clock::time_point>(&c.retry_after))
        res.set(http::field::retry_after, detail::format_http_date(*t));
    return res;
}

/// The first half of a suspension: counts it, makes the handle, lets `setup` have it. Beyond the
/// server's `max_suspended`, throws `http_error` 503.
template <class Setup>
std::shared_ptr<suspension<response>> begin_suspension(context& ctx, Setup& setup)
{
    auto& ex = exchange_of(ctx);
    auto* policy = ex.policy;
    if (policy && ++policy->stats.suspended > policy->max_suspended) {
        --policy->stats.suspended;
        throw http_error(http::status::service_unavailable, "Too many suspended requests");
    }
    std::shared_ptr<suspension<response>> state;
    try {
        // A server's connection releases its suspensions before it goes: they borrow its
        // strand and the server's log (see suspension).
        if (ex.owner && ex.owner->owns(ex))
            state = std::make_shared<suspension<response>>(*ex.executor, policy ? policy->log.get() : nullptr);
        else
            state =
                state_of(policy ? async_response::make(*ex.executor, policy->log) : async_response::make(*ex.executor));
        ex.suspensions.push_back(state);
    }
    catch (...) { // bad_alloc: not suspended after all
        if (policy)
            --policy->stats.suspended;
        throw;
    }
    auto handle = suspension<response>::handle_of(state);
    if (policy && policy->default_timeout > policy->default_timeout.zero())
        handle.set_timeout(policy->default_timeout);
    try {
        setup(handle);
    }
    catch (...) {
        state->abandon(); // whoever got the handle now gets false
        if (policy)
            --policy->stats.suspended;
        throw;
    }
    if (ex.owner && ex.owner->stopping()) // the stop already cancelled the others; this one came too late
        handle.cancel(policy ? policy->shutdown_retry_after : std::chrono::seconds(5));
    return state;
}

/// The second half: counts how it ended and puts that in the context (or throws it).
inline void end_suspension(context& ctx, const suspension<response>& state, suspension<response>::outcome& outcome)
{
    if (auto* policy = exchange_of(ctx).policy) {
        --policy->stats.suspended;
        auto& st = policy->stats;
        if (std::holds_alternative<cancellation>(outcome))
            ++st.cancelled;
        else if (std::holds_alternative<disconnection>(outcome))
            ++st.disconnected;
        else if (state.timed_out())
            ++st.timed_out;
        else
            ++st.resumed;
    }
    if (auto* r = std::get_if<response>(&outcome))
        ctx.response = std::move(*r);
    else if (auto* e = std::get_if<std::exception_ptr>(&outcome))
        std::rethrow_exception(*e);
    else if (auto* c = std::get_if<cancellation>(&outcome))
        ctx.response = cancelled_response(*c);
    else
        throw client_disconnected(asio::error::connection_reset, "the client went away while suspended");
}

/// `suspend` as a callback stage (what make_handler builds for a suspended handler): no
/// coroutine waits, only the suspension's stored waiter holds `done`. `done` always runs later, on
/// the strand, even when `setup` resolved or threw.
template <class Setup>
void suspend_then(context& ctx, Setup setup, stage_handler done)
{
    // `done` runs on the strand. (A chain that awaits this stage from a coroutine on another
    // executor goes back to it at once: see call_async.)
    std::shared_ptr<suspension<response>> state;
    try {
        state = begin_suspension(ctx, setup);
    }
    catch (...) {
        asio::post(ctx.executor(),
                   [done = std::move(done), e = std::current_exception()]() mutable { std::move(done)(std::move(e)); });
        return;
    }
    // The waiter keeps a plain pointer, not a shared one: the exchange holds the suspension until
    // the request's end (begin_suspension), and the waiter runs before that or not at all.
    auto slot = asio::get_associated_cancellation_slot(done);
    auto* state_ptr = state.get();
    state_ptr->async_wait(asio::bind_cancellation_slot(
        slot, [&ctx, state_ptr, done = std::move(done)](suspension<response>::outcome o) mutable {
            std::exception_ptr thrown;
            try {
                end_suspension(ctx, *state_ptr, o);
            }
            catch (...) {
                thrown = std::current_exception();
            }
            std::move(done)(std::move(thrown));
        }));
}

} // namespace detail

/// Suspends the request inside a stage: `setup` receives the handle (store it, hand it to another
/// thread, set a timeout); the stage then waits, holding no thread, until the handle is resumed
/// (the response is set, or the error goes down the error path), cancelled (503), timed out, or
/// the client leaves (`client_disconnected` down the error path; nothing is written).
/// Beyond the server's `max_suspended`, throws `http_error` 503 at once. Call it where stages
/// run, on the context's executor (the connection's strand).
template <class Setup>
    requires(std::invocable<Setup&, async_response>)
asio::awaitable<void> suspend(context& ctx, Setup setup)
{
    auto state = detail::begin_suspension(ctx, setup);
    auto cancellation = co_await asio::this_coro::cancellation_state;
    if (cancellation.cancelled() != asio::cancellation_type::none)
        state->abandon(); // the client left before the wait began: nothing would cancel the wait
    auto outcome = co_await state->wait();
    detail::end_suspension(ctx, *state, outcome);
}

} // namespace plinth

#endif
