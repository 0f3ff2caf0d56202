//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_CHAIN_HPP
#define PLINTH_CHAIN_HPP

// The interceptor chain: Pedestal's enter/leave/error model over any context type.
// This layer knows nothing of HTTP or sockets.

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/container/small_vector.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <exception>
#include <forward_list>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace plinth {

namespace asio = boost::asio;

/// The three stages of an interceptor.
enum class stage { enter, leave, error };

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

/// Whether an observer is called before or after a stage.
enum class observe_point { before, after };

/// An error caught by the chain, with where it came from.
///
/// `exception` is the original exception object: `std::rethrow_exception` gives back
/// its own type. The metadata travels beside it rather than wrapping it.
struct chain_error {
    std::exception_ptr exception;               ///< what was thrown
    plinth::stage stage = stage::enter;         ///< the stage that threw it
    std::string interceptor;                    ///< the name of the interceptor that threw it
    std::vector<std::exception_ptr> suppressed; ///< earlier errors replaced by this one, oldest first
};

template <class Context>
class basic_chain;
template <class Context>
class chain_context;

namespace detail {

template <class Context>
struct execution;

/// How a callback stage (below) reports its end: once, with what it threw or nothing. Its
/// associated cancellation slot, if it has one, is the request's: a client gone, a shutdown's
/// grace ended. (A server's connection gives it none: it ends a parked suspended handler through
/// the request's suspension instead.)
using stage_handler = asio::any_completion_handler<void(std::exception_ptr)>;

/// A stage written as an Asio initiating function rather than a coroutine: it starts its work and
/// returns; the handler is called later (never from inside the call). Nothing is held for it but
/// what the work itself keeps, so a server can let go of every coroutine frame while it waits:
/// that is how a suspended request stays small. Only plinth builds these (make_handler).
template <class F>
struct callback_stage {
    F f;
};
template <class F>
callback_stage(F) -> callback_stage<F>; // clang 14 deduces no aggregate's arguments

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

    /// A callback stage (see detail::callback_stage).
    template <class F>
        requires(std::is_invocable_v<F&, Context&, Extra..., detail::stage_handler>)
    basic_stage(detail::callback_stage<F> s) // NOLINT(google-explicit-constructor)
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

    /// True when the stage is asynchronous: a coroutine, or one of plinth's callback stages.
    bool is_async() const noexcept { return async_ || callback_; }

    /// True for a callback stage (see detail::callback_stage).
    bool is_callback() const noexcept { return static_cast<bool>(callback_); }

private:
    template <class>
    friend struct detail::execution;

    std::function<void(Context&, Extra...)> sync_;
    std::function<asio::awaitable<void>(Context&, Extra...)> async_;
    std::function<void(Context&, Extra..., detail::stage_handler)> callback_;
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

/// The base every chain context derives from (`struct my_ctx : plinth::chain_context<my_ctx>`).
///
/// A context may also define `void on_suspend()`: the chain calls it before every asynchronous
/// stage (the HTTP context starts watching its socket for a disconnect then).
///
/// It links the context to the execution that runs it, so a stage can `enqueue` or `terminate`,
/// and after the execution it carries the unhandled error, if any. Copies and moves keep the link.
template <class Context>
class chain_context {
public:
    /// The error being handled (inside an error stage), or after the execution the error no stage
    /// handled; null when there is none.
    const chain_error* error() const noexcept;

    /// True while a chain is executing this context.
    bool executing() const noexcept { return execution_ != nullptr; }

private:
    template <class>
    friend struct detail::execution;
    template <class>
    friend class basic_chain;

    detail::execution<Context>* execution_ = nullptr;
    std::shared_ptr<const chain_error> unhandled_;
};

namespace detail {

/// The interceptors of one run, in order, kept as runs of consecutive addresses: a chain's own
/// interceptors and a route's (enqueue_ref) each take one entry however long they are, so a
/// request in flight carries a few spans rather than a pointer per interceptor.
template <class Interceptor>
class walk_list {
public:
    std::size_t size() const noexcept
    {
        std::size_t n = 0;
        for (const auto& s : spans_) // two, most often: cheaper to add up than to carry
            n += s.size;
        return n;
    }

    const Interceptor* operator[](std::size_t k) const noexcept
    {
        for (const auto& s : spans_) {
            if (k < s.size)
                return s.first + k;
            k -= s.size;
        }
        return nullptr; // past the end: never asked for
    }

    // Appends the `n` interceptors of one array, from `first` on. (Spans are never merged:
    // addresses that follow each other in two arrays are still two arrays.)
    void append(const Interceptor* first, std::size_t n)
    {
        if (n > 0)
            spans_.push_back({first, n});
    }

    void push_back(const Interceptor* p) { append(p, 1); }

    // Puts `p` before the element at `at` (at the end when `at == size()`). Strong guarantee:
    // the room is made before anything changes.
    void insert(std::size_t at, const Interceptor* p)
    {
        spans_.reserve(spans_.size() + 2);
        auto it = spans_.begin();
        for (; it != spans_.end() && at >= it->size; ++it)
            at -= it->size;
        if (it == spans_.end())
            return push_back(p);
        if (at > 0) { // split the span around the new element
            const span tail{it->first + at, it->size - at};
            it->size = at;
            it = spans_.insert(it + 1, tail);
        }
        spans_.insert(it, span{p, 1});
    }

    // Keeps the first `n` elements.
    void truncate(std::size_t n) noexcept
    {
        auto it = spans_.begin();
        for (; it != spans_.end() && n > 0; ++it) {
            if (n < it->size)
                it->size = n;
            n -= it->size;
        }
        spans_.erase(it, spans_.end());
    }

private:
    struct span {
        const Interceptor* first;
        std::size_t size;
    };
    boost::container::small_vector<span, 2> spans_; // a chain's and a route's
};

/// The state of one run of a chain: it lives in the frame of `basic_chain::execute`, or with
/// whoever drives the walk itself (a server's connection: begin, advance, then only if a stage is
/// asynchronous `finish_async`, then end), so that a run whose stages are all synchronous needs no
/// coroutine frame at all.
template <class Context>
struct execution {
    using interceptor_type = basic_interceptor<Context>;

    explicit execution(const basic_chain<Context>& c)
        : chain(c)
    {
    }
    execution(const execution&) = delete;
    execution& operator=(const execution&) = delete;

    const basic_chain<Context>& chain;
    // One list for the stack and the queue, since entering an interceptor moves it from the
    // queue's front to the stack's top: [0, head) is the stack (its top at head - 1), [head, end)
    // the queue while entering (while leaving, what lies past head is never entered). A chain of
    // any length runs without allocating for it (chain spec 16).
    walk_list<interceptor_type> walk;
    std::size_t head = 0;
    std::forward_list<interceptor_type> owned; // interceptors enqueued by value, at stable addresses
    std::unique_ptr<chain_error> error;        // boxed: rare, and every request in flight carries the pointer
    bool leaving = false;

    // Where the walk is: the next enter stage, the leave stage of the next interceptor on the
    // stack, or the error stage of the one just left.
    enum class step : unsigned char { enter, leave, error_of_current };
    step next = step::enter;
    stage pending_stage = stage::enter;        // which stage of `pending` (beside the flags: 8 B less)
    const interceptor_type* current = nullptr; // popped off the stack, on the way out
    const interceptor_type* pending = nullptr; // the asynchronous stage advance() stopped at...
    std::exception_ptr pending_error;          // ...and, for an error stage, its argument
    execution* outer = nullptr;                // a stage may run a nested chain over its context

    // Links `ctx` to this run and queues the chain's interceptors.
    void begin(Context& ctx)
    {
        walk.append(chain.interceptors_.data(), chain.interceptors_.size());
        auto& link = static_cast<chain_context<Context>&>(ctx);
        outer = link.execution_;
        link.execution_ = this;
        link.unhandled_.reset();
    }

    // Unlinks `ctx`, leaving it the error no stage handled.
    void end(Context& ctx)
    {
        auto& link = static_cast<chain_context<Context>&>(ctx);
        link.execution_ = outer;
        if (error)
            link.unhandled_ = std::move(error);
    }

    // Runs stages until the walk is over (false) or reaches an asynchronous stage (true: call
    // `await_pending`, then `complete`, then advance again).
    bool advance(Context& ctx);

    // Records how the stage at `pending` ended (advance calls it for synchronous stages too).
    void complete(Context& ctx, std::exception_ptr thrown);

    // The asynchronous stage advance() stopped at, called (an enter stage only if `ctx`'s walk
    // was not cancelled meanwhile: see finish_async).
    asio::awaitable<std::exception_ptr> await_pending(Context& ctx) const
    {
        switch (pending_stage) {
        case stage::enter: return call_async(pending->enter, ctx);
        case stage::leave: return call_async(pending->leave, ctx);
        default: return call_async(pending->error, ctx, pending_error);
        }
    }

    // True when the stage advance() stopped at is a callback stage: its driver may then start it
    // with `start_pending` and hold no coroutine while it runs.
    bool pending_is_callback() const noexcept
    {
        switch (pending_stage) {
        case stage::enter: return pending->enter.is_callback();
        case stage::leave: return pending->leave.is_callback();
        default: return pending->error.is_callback();
        }
    }

    // Starts the callback stage advance() stopped at; `h` gets its end, to pass to `complete`.
    void start_pending(Context& ctx, stage_handler h) const
    {
        if constexpr (requires { ctx.on_suspend(); })
            ctx.on_suspend();
        switch (pending_stage) {
        case stage::enter: return pending->enter.callback_(ctx, std::move(h));
        case stage::leave: return pending->leave.callback_(ctx, std::move(h));
        default: return pending->error.callback_(ctx, pending_error, std::move(h));
        }
    }

    // What an enter stage not started because the walk was cancelled ends with.
    static std::exception_ptr cancelled_error()
    {
        return std::make_exception_ptr(
            boost::system::system_error(asio::error::operation_aborted, "plinth: the chain was cancelled"));
    }

    static execution& of(chain_context<Context>& ctx, const char* what)
    {
        if (!ctx.execution_)
            throw std::logic_error(std::string(what) + ": the context is not being executed by a chain");
        return *ctx.execution_;
    }

    static void check(const interceptor_type& i, const char* what)
    {
        if (!i.valid())
            throw std::invalid_argument(std::string(what) + ": an interceptor needs a name and at least one stage"
                                        + (i.name.empty() ? std::string() : " ('" + i.name + "' has none)"));
    }

    const interceptor_type* own(interceptor_type i)
    {
        check(i, "plinth::enqueue");
        return &owned.emplace_front(std::move(i));
    }

    void drop_queue() noexcept { walk.truncate(head); }

    template <class... Extra>
    static std::exception_ptr call_sync(const basic_stage<Context, Extra...>& s, Context& ctx, Extra... e) noexcept
    {
        try {
            s.sync_(ctx, e...);
            return nullptr;
        }
        catch (...) {
            return std::current_exception();
        }
    }

    template <class... Extra>
    static asio::awaitable<std::exception_ptr> call_async(const basic_stage<Context, Extra...>& s, Context& ctx,
                                                          Extra... e)
    {
        if constexpr (requires { ctx.on_suspend(); })
            ctx.on_suspend();
        std::exception_ptr thrown;
        try {
            if (s.callback_) // the awaitable's handler rethrows what the stage reports
                co_await asio::async_initiate<const asio::use_awaitable_t<>, void(std::exception_ptr)>(
                    [&](auto handler) { s.callback_(ctx, e..., stage_handler(std::move(handler))); },
                    asio::use_awaitable);
            else
                co_await s.async_(ctx, e...);
        }
        catch (...) {
            thrown = std::current_exception();
        }
        // A stage may have hopped to another executor (bind_executor to a pool): come back, so
        // later stages run on the chain's executor, the connection's strand (Pedestal #550).
        co_await asio::dispatch(asio::use_awaitable);
        co_return thrown;
    }

    void observe(const Context& ctx, stage st, const interceptor_type& i, observe_point p) const;
    bool terminated(const Context& ctx) const;

    // Records an exception thrown by `st` of `i`; an error stage that rethrows the error it was
    // given keeps the original record, one that throws something new supersedes it.
    void fail(std::exception_ptr e, stage st, const interceptor_type& i)
    {
        if (error && error->exception == e)
            return;
        chain_error next{std::move(e), st, i.name, {}};
        if (error) {
            next.suppressed = std::move(error->suppressed);
            next.suppressed.push_back(std::move(error->exception));
        }
        error = std::make_unique<chain_error>(std::move(next));
    }
};

} // namespace detail

/// A sequence of interceptors run over a context, Pedestal-style.
///
/// `execute` pops each interceptor off the queue onto the stack and calls its `enter`; when the
/// queue is empty (or a terminator says so) it walks the stack back calling `leave`, or `error`
/// while an error is pending. Synchronous stages are plain calls; an awaitable stage suspends the
/// run without holding a thread and resumes on the coroutine's executor. The chain must outlive
/// every execution it runs.
template <class Context>
class basic_chain {
public:
    using context_type = Context;
    using interceptor_type = basic_interceptor<Context>;
    /// Ends the enter phase early when it returns true (checked after every enter stage).
    using terminator = std::function<bool(const Context&)>;
    /// Called before and after every stage that exists.
    using observer = std::function<void(const Context&, stage, std::string_view interceptor, observe_point)>;

    basic_chain() = default;

    /// A chain that runs `interceptors` in order. Throws `std::invalid_argument` for an interceptor
    /// without a name or without any stage.
    basic_chain(std::vector<interceptor_type> interceptors)
        : interceptors_(std::move(interceptors))
    {
        for (const auto& i : interceptors_)
            detail::execution<Context>::check(i, "plinth::basic_chain");
    }

    basic_chain(std::initializer_list<interceptor_type> interceptors)
        : basic_chain(std::vector<interceptor_type>(interceptors))
    {
    }

    /// Appends an interceptor to the chain's initial queue.
    basic_chain& push_back(interceptor_type i)
    {
        detail::execution<Context>::check(i, "plinth::basic_chain::push_back");
        interceptors_.push_back(std::move(i));
        return *this;
    }

    /// Adds a terminator.
    basic_chain& terminate_when(terminator t)
    {
        terminators_.push_back(std::move(t));
        return *this;
    }

    /// Sets the observer (one per chain; unset costs nothing).
    basic_chain& observe(observer o)
    {
        observer_ = std::move(o);
        return *this;
    }

    const std::vector<interceptor_type>& interceptors() const noexcept { return interceptors_; }

    /// Runs the chain over `ctx` and returns it. Errors no stage handled are reported through
    /// `result.error()`, never thrown.
    asio::awaitable<Context> execute(Context ctx) const;

    /// `execute` with any completion token; the handler signature is
    /// `void(std::exception_ptr, Context)` (the exception is only ever set for `std::bad_alloc`).
    template <class Executor, class CompletionToken>
    auto async_execute(const Executor& ex, Context ctx, CompletionToken&& token) const
    {
        return asio::co_spawn(ex, execute(std::move(ctx)), std::forward<CompletionToken>(token));
    }

private:
    friend struct detail::execution<Context>;

    std::vector<interceptor_type> interceptors_;
    std::vector<terminator> terminators_;
    observer observer_;
};

template <class Context>
const chain_error* chain_context<Context>::error() const noexcept
{
    if (execution_)
        return execution_->error.get();
    return unhandled_.get();
}

namespace detail {

template <class Context>
void execution<Context>::observe(const Context& ctx, stage st, const interceptor_type& i, observe_point p) const
{
    if (chain.observer_)
        chain.observer_(ctx, st, i.name, p);
}

template <class Context>
bool execution<Context>::terminated(const Context& ctx) const
{
    for (const auto& t : chain.terminators_)
        if (t(ctx))
            return true;
    return false;
}

} // namespace detail

// g++ 12 mistakes the coroutine frame's operator delete for a mismatch (a false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
template <class Context>
bool detail::execution<Context>::advance(Context& ctx)
{
    for (;;) {
        switch (next) {
        case step::enter: {
            if (error || head >= walk.size()) { // the enter phase is over
                drop_queue();
                leaving = true;
                next = step::leave;
                continue;
            }
            const auto& i = *walk[head++]; // now on top of the stack
            if (i.enter) {
                observe(ctx, stage::enter, i, observe_point::before);
                pending = &i;
                pending_stage = stage::enter;
                if (i.enter.is_async())
                    return true;
                complete(ctx, call_sync(i.enter, ctx)); // what follows a stage, sync or not
            }
            else if (terminated(ctx)) // checked after every interceptor, as Pedestal does
                drop_queue();
            continue;
        }
        case step::leave: { // leave stages in reverse, or error stages while an error is pending
            if (head == 0)
                return false;
            current = walk[--head];
            next = step::error_of_current;
            const auto& i = *current;
            if (!error && i.leave) {
                observe(ctx, stage::leave, i, observe_point::before);
                pending = &i;
                pending_stage = stage::leave;
                if (i.leave.is_async())
                    return true;
                complete(ctx, call_sync(i.leave, ctx)); // on failure its own error stage is tried next
            }
            continue;
        }
        case step::error_of_current: {
            next = step::leave;
            const auto& i = *current;
            if (error && i.error) {
                observe(ctx, stage::error, i, observe_point::before);
                pending = &i;
                pending_stage = stage::error;
                pending_error = error->exception;
                if (i.error.is_async())
                    return true;
                complete(ctx, call_sync(i.error, ctx, pending_error));
            }
            continue;
        }
        }
    }
}

template <class Context>
void detail::execution<Context>::complete(Context& ctx, std::exception_ptr thrown)
{
    const auto& i = *pending;
    pending = nullptr;
    pending_error = nullptr;
    switch (pending_stage) {
    case stage::enter:
        if (thrown) {
            fail(std::move(thrown), stage::enter, i);
            return;
        }
        observe(ctx, stage::enter, i, observe_point::after);
        if (terminated(ctx))
            drop_queue();
        return;
    case stage::leave:
        if (thrown)
            fail(std::move(thrown), stage::leave, i);
        else
            observe(ctx, stage::leave, i, observe_point::after);
        return;
    default:
        if (thrown)
            fail(std::move(thrown), stage::error, i);
        else {
            error.reset(); // handled: the rest of the stack gets leave
            observe(ctx, stage::error, i, observe_point::after);
        }
    }
}

namespace detail {

/// Finishes a walk that `advance` stopped at an asynchronous stage: awaits it and every later one.
/// Cancellation (a client gone) reaches the stage in flight as operation_aborted and then the error
/// stages; it does not abort the walk itself, which the caller ensures with throw_if_cancelled(false).
template <class Context>
asio::awaitable<void> finish_async(execution<Context>& ex, Context& ctx)
{
    do {
        bool cancelled = false;
        if (ex.pending_stage == stage::enter) {
            auto state = co_await asio::this_coro::cancellation_state;
            cancelled = state.cancelled() != asio::cancellation_type::none;
        }
        std::exception_ptr thrown;
        if (cancelled) // while no operation was pending (between two stages): start no more
            thrown = execution<Context>::cancelled_error();
        else
            thrown = co_await ex.await_pending(ctx);
        ex.complete(ctx, std::move(thrown));
    } while (ex.advance(ctx));
}

} // namespace detail

template <class Context>
asio::awaitable<Context> basic_chain<Context>::execute(Context ctx) const
{
    detail::execution<Context> ex{*this};
    ex.begin(ctx);
    if (ex.advance(ctx)) {
        // Cancellation must reach the stage in flight, not abort the walk at our next co_await;
        // restored on the way out.
        const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
        co_await asio::this_coro::throw_if_cancelled(false);
        co_await detail::finish_async(ex, ctx);
        co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
    }
    ex.end(ctx);
    co_return std::move(ctx);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// Appends a copy of `i` to the queue of the running execution.
/// Throws `std::invalid_argument` for an invalid interceptor, `std::logic_error` outside an execution.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void enqueue(Context& ctx, basic_interceptor<Context> i)
{
    auto& ex = detail::execution<Context>::of(ctx, "plinth::enqueue");
    ex.walk.push_back(ex.own(std::move(i)));
}

/// Appends copies of `is` to the queue, in order.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void enqueue(Context& ctx, std::span<const basic_interceptor<Context>> is)
{
    auto& ex = detail::execution<Context>::of(ctx, "plinth::enqueue");
    for (const auto& i : is) // all or nothing
        detail::execution<Context>::check(i, "plinth::enqueue");
    for (const auto& i : is)
        ex.walk.push_back(ex.own(i));
}

/// Appends `is` by reference, without copying: they must outlive the execution (a route table
/// that lives as long as the server does). This is how a router hands over a route at no cost.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void enqueue_ref(Context& ctx, std::span<const basic_interceptor<Context>> is)
{
    auto& ex = detail::execution<Context>::of(ctx, "plinth::enqueue_ref");
    for (const auto& i : is) // all or nothing
        detail::execution<Context>::check(i, "plinth::enqueue_ref");
    ex.walk.append(is.data(), is.size());
}

/// Inserts a copy of `i` at the front of the queue: it is entered next.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void enqueue_front(Context& ctx, basic_interceptor<Context> i)
{
    auto& ex = detail::execution<Context>::of(ctx, "plinth::enqueue_front");
    const auto* p = ex.own(std::move(i));
    ex.walk.insert(ex.head, p);
}

/// Drops the rest of the queue: the leave phase starts after the current stage.
/// No effect during the leave phase.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void terminate(Context& ctx)
{
    auto& ex = detail::execution<Context>::of(ctx, "plinth::terminate");
    if (!ex.leaving)
        ex.drop_queue();
}

} // namespace plinth

#endif
