//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_HTTP_HPP
#define PLINTH_HTTP_HPP

// The HTTP meaning of the chain: request and response types, the context a request travels in,
// typed HTTP errors, and the adapters that turn plain handlers into interceptors.

#include <plinth/async_response.hpp>
#include <plinth/chain.hpp>
#include <plinth/detail/http_date.hpp>
#include <plinth/detail/stream_state.hpp>
#include <plinth/detail/uri.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/container/small_vector.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace plinth {

namespace beast = boost::beast;
namespace http = boost::beast::http;

/// A request as plinth reads it: Beast's message with a `std::string` body.
using request = http::request<http::string_body>;

/// A response as plinth writes it. Version, keep-alive, `Date`, `Server` and `Content-Length` are
/// filled in by the server; a handler sets status, headers and body.
using response = http::response<http::string_body>;

/// Where a context keeps its response: a `std::optional<response>` in what it offers (and
/// convertible to and from one), except that the response lives on the heap. A context without a
/// response (a request still in the chain, a suspended one above all) then carries a pointer
/// instead of the response's 128 B. The storage, once made, is kept for the next response:
/// `reset`, `= std::nullopt` and assigning a response keep it (a server reuses it for each
/// request of a connection), while assigning another `optional_response` (`= {}` included) takes
/// that one's storage. So a reference to the response lasts until the next such assignment, and
/// a moved-from `optional_response` is empty.
class optional_response {
public:
    optional_response() noexcept = default;
    optional_response(std::nullopt_t) noexcept {}
    optional_response(response r)
        : box_(std::make_unique<std::optional<response>>(std::move(r)))
    {
    }
    optional_response(std::optional<response> r)
    {
        if (r)
            box_ = std::make_unique<std::optional<response>>(std::move(r));
    }
    optional_response(const optional_response& other)
    {
        if (other)
            box_ = std::make_unique<std::optional<response>>(*other);
    }
    optional_response(optional_response&&) noexcept = default;
    ~optional_response() = default;

    optional_response& operator=(const optional_response& other)
    {
        if (!other)
            reset();
        else if (this != &other)
            *this = *other;
        return *this;
    }
    optional_response& operator=(optional_response&&) noexcept = default;
    optional_response& operator=(std::nullopt_t) noexcept
    {
        reset();
        return *this;
    }
    // A template, as std::optional's: `= {}` then empties it, and `= {status, version}` makes a
    // response.
    template <class R = response>
        requires(std::same_as<std::remove_cvref_t<R>, response>)
    optional_response& operator=(R&& r)
    {
        if (box_)
            *box_ = std::forward<R>(r);
        else
            box_ = std::make_unique<std::optional<response>>(std::forward<R>(r));
        return *this;
    }

    /// Makes the response in place from `args` (reusing the storage) and returns it.
    template <class... Args>
    response& emplace(Args&&... args)
    {
        if (!box_)
            box_ = std::make_unique<std::optional<response>>();
        return box_->emplace(std::forward<Args>(args)...);
    }

    /// Destroys the response, if any; the storage is kept for the next one.
    void reset() noexcept
    {
        if (box_)
            box_->reset();
    }

    /// Gives the storage back when there is no response (what a suspended request holds).
    void shrink_to_fit() noexcept
    {
        if (!has_value())
            box_.reset();
    }

    bool has_value() const noexcept { return box_ && box_->has_value(); }
    explicit operator bool() const noexcept { return has_value(); }

    response& operator*() & noexcept { return **box_; }
    const response& operator*() const& noexcept { return **box_; }
    response&& operator*() && noexcept { return std::move(**box_); }
    response* operator->() noexcept { return &**box_; }
    const response* operator->() const noexcept { return &**box_; }

    /// The response; throws `std::bad_optional_access` when there is none.
    response& value() &
    {
        check();
        return **box_;
    }
    const response& value() const&
    {
        check();
        return **box_;
    }
    response&& value() &&
    {
        check();
        return std::move(**box_);
    }

    /// The response, or `fallback` when there is none.
    response value_or(response fallback) const& { return has_value() ? **box_ : std::move(fallback); }
    response value_or(response fallback) && { return has_value() ? std::move(**box_) : std::move(fallback); }

    /// A copy as a `std::optional<response>`, or (from an rvalue) the response moved into one.
    operator std::optional<response>() const& { return has_value() ? std::optional<response>(**box_) : std::nullopt; }
    operator std::optional<response>() &&
    {
        return has_value() ? std::optional<response>(std::move(**box_)) : std::nullopt;
    }

    void swap(optional_response& other) noexcept { box_.swap(other.box_); }
    friend void swap(optional_response& a, optional_response& b) noexcept { a.swap(b); }

    friend bool operator==(const optional_response& r, std::nullopt_t) noexcept { return !r; }

private:
    void check() const
    {
        if (!has_value())
            throw std::bad_optional_access();
    }

    std::unique_ptr<std::optional<response>> box_;
};

/// An error that maps to an HTTP status. Its public message is what the client sees, so write it
/// for the client; never put internals there.
class http_error : public std::runtime_error {
public:
    /// `public_message` defaults to the status' reason phrase.
    explicit http_error(http::status status, std::string public_message = {})
        : std::runtime_error(public_message.empty() ? std::string(http::obsolete_reason(status))
                                                    : std::move(public_message))
        , status_(status)
    {
    }

    http::status status() const noexcept { return status_; }

    /// The body sent to the client.
    std::string_view public_message() const noexcept { return what(); }

private:
    http::status status_;
};

/// A response with `status`, a body and its content type.
inline response make_response(http::status status, std::string body = {},
                              std::string_view content_type = "text/plain; charset=utf-8")
{
    response res{status, 11};
    if (!body.empty() || status != http::status::no_content)
        res.set(http::field::content_type, content_type);
    res.body() = std::move(body);
    return res;
}

/// 200 with a plain-text body.
inline response text(std::string body, http::status status = http::status::ok)
{
    return make_response(status, std::move(body));
}

/// 200 with a JSON body (already serialised: plinth has no JSON dependency).
inline response json(std::string body, http::status status = http::status::ok)
{
    return make_response(status, std::move(body), "application/json");
}

/// The response for an error no stage handled: an `http_error` keeps its status and public
/// message; anything else is a 500 whose body says nothing about the exception.
inline response error_response(const std::exception_ptr& e)
{
    try {
        if (e)
            std::rethrow_exception(e);
    }
    catch (const http_error& he) {
        return text(std::string(he.public_message()), he.status());
    }
    catch (const service_unavailable&) {
        return text("Service Unavailable", http::status::service_unavailable);
    }
    catch (...) {
    }
    return text("Internal Server Error", http::status::internal_server_error);
}

/// The parameters a route's path template captured (`/users/{id}` -> `id`), percent-decoded.
class path_params {
public:
    /// The value of `name`, or nothing.
    std::optional<std::string_view> find(std::string_view name) const noexcept
    {
        for (const auto& [n, v] : items_)
            if (n == name)
                return std::string_view(v);
        return std::nullopt;
    }

    /// The value of `name`; throws `std::out_of_range` when the route has no such parameter.
    std::string_view at(std::string_view name) const
    {
        if (auto v = find(name))
            return *v;
        throw std::out_of_range("plinth::path_params: no parameter '" + std::string(name) + "'");
    }

    std::size_t size() const noexcept { return items_.size(); }
    bool empty() const noexcept { return items_.empty(); }
    auto begin() const noexcept { return items_.begin(); }
    auto end() const noexcept { return items_.end(); }

    /// Adds a parameter; `name` must outlive this object (the router's route table does).
    void add(std::string_view name, std::string value) { items_.emplace_back(name, std::move(value)); }
    void clear() noexcept { items_.clear(); }

private:
    // Room for one parameter inline: every request (suspended ones included) carries this, and
    // most routes have none or one (a second costs an allocation, 96 B).
    boost::container::small_vector<std::pair<std::string_view, std::string>, 1> items_;
};

/// A handle to a suspended HTTP request (see basic_async_response).
using async_response = basic_async_response<response>;

/// Counters of suspended requests, kept by a server.
struct suspension_stats {
    std::atomic<std::uint64_t> suspended{0};    ///< suspended now
    std::atomic<std::uint64_t> resumed{0};      ///< resumed (with a response or an error)
    std::atomic<std::uint64_t> cancelled{0};    ///< cancelled: 503
    std::atomic<std::uint64_t> timed_out{0};    ///< timed out and not resolved by a handler
    std::atomic<std::uint64_t> disconnected{0}; ///< the client went away first
    std::atomic<std::uint64_t> completed{0};    ///< on_complete fired
    std::atomic<std::uint64_t> streams{0};      ///< streamed responses (chunked, events) open now
};

struct exchange;

namespace detail {

/// What a server tells the requests it runs about suspension.
struct suspension_policy {
    std::chrono::steady_clock::duration default_timeout{}; ///< zero: none
    std::uint64_t max_suspended = std::numeric_limits<std::uint64_t>::max();
    /// Shared by every suspension (each would otherwise carry a copy); null: no log.
    std::shared_ptr<const log_function> log = std::make_shared<const log_function>(log_to_stderr);
    std::chrono::seconds shutdown_retry_after{5}; ///< of the 503 a shutdown answers with
    stream_options streams;                       ///< defaults of the streams requests open
    suspension_stats stats;
};

/// The connection behind an exchange, as the HTTP layer sees it.
class exchange_owner {
public:
    /// The request is about to wait: keep a read pending so a disconnect is noticed.
    virtual void watch_for_disconnect() = 0;

    /// The server's shutdown grace has run out: a new suspension is cancelled at once.
    virtual bool stopping() const noexcept = 0;

    /// `ex` is this owner's own exchange (not a copy of it), whose suspensions it completes or
    /// releases before the exchange goes: they may borrow from it (see begin_suspension).
    virtual bool owns(const plinth::exchange& ex) const noexcept = 0;

protected:
    ~exchange_owner() = default;
};

} // namespace detail

/// What belongs to one request and stays put while its context moves from stage to stage:
/// the connection owns it, the context points at it, so a throwing stage cannot lose it.
struct exchange {
    plinth::request request;
    path_params params;
    asio::any_io_executor executor; ///< the connection's strand

    /// The suspensions of this request, completed by the connection after the write.
    boost::container::small_vector<std::shared_ptr<detail::suspension<response>>, 1> suspensions;
    /// The streamed body this request opened, written by the connection after the head.
    std::shared_ptr<detail::stream_state> stream;
    /// Null outside a server. A server's connection completes or releases `suspensions` before
    /// the exchange and `policy` go: they borrow `executor` and the policy's log.
    detail::exchange_owner* owner = nullptr;
    detail::suspension_policy* policy = nullptr; ///< null outside a server
};

/// The context an HTTP request travels in through the chain.
class context : public chain_context<context> {
public:
    context() = default;

    explicit context(plinth::exchange& ex) noexcept
        : exchange_(&ex)
    {
    }

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
    const asio::any_io_executor& executor() const noexcept { return exchange_->executor; }

    /// The per-request data the context points at.
    plinth::exchange& exchange() const noexcept { return *exchange_; }

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
    plinth::exchange* exchange_ = nullptr;
};

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

/// The 503 a cancelled suspension answers with, `Retry-After` as the cancel call gave it.
inline response cancelled_response(const detail::cancellation& c)
{
    response res = text("Service Unavailable", http::status::service_unavailable);
    if (auto* s = std::get_if<std::chrono::seconds>(&c.retry_after))
        res.set(http::field::retry_after, std::to_string(std::max<std::int64_t>(0, s->count())));
    else if (auto* t = std::get_if<std::chrono::system_clock::time_point>(&c.retry_after))
        res.set(http::field::retry_after, detail::format_http_date(*t));
    return res;
}

namespace detail {

/// The first half of a suspension: counts it, makes the handle, lets `setup` have it. Beyond the
/// server's `max_suspended`, throws `http_error` 503.
template <class Setup>
std::shared_ptr<suspension<response>> begin_suspension(context& ctx, Setup& setup)
{
    auto& ex = ctx.exchange();
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
            state = std::make_shared<suspension<response>>(ex.executor, policy ? policy->log.get() : nullptr);
        else
            state =
                (policy ? async_response::make(ex.executor, policy->log) : async_response::make(ex.executor)).state();
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
    if (auto* policy = ctx.exchange().policy) {
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
    // The waiter keeps a plain pointer: the exchange holds the suspension until the request's
    // end (begin_suspension), and the waiter runs before that or not at all. 16 B less for each
    // suspended request.
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
