//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_CHAIN_HPP
#define PLINTH_CHAIN_HPP

// The interceptor chain: Pedestal's enter/leave/error model over any context type, and the one
// stepping API (chain_walk) that both basic_chain::execute and a server's connection drive it
// with. This layer knows nothing of HTTP or sockets.

#include <plinth/detail/walk_list.hpp>
#include <plinth/stage.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <forward_list>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace plinth {

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

namespace detail {
struct walk_access;
} // namespace detail

/// The base every chain context derives from (`struct my_ctx : plinth::chain_context<my_ctx>`).
///
/// A context may also define `void on_suspend()`: the chain calls it before every asynchronous
/// stage (the HTTP context starts watching its socket for a disconnect then).
///
/// It links the context to the walk that runs it, so a stage can `enqueue` or `terminate`, and
/// after the walk it carries the unhandled error, if any. Copies and moves keep the link.
template <class Context>
class chain_context {
public:
    /// The error being handled (inside an error stage), or after the walk the error no stage
    /// handled; null when there is none.
    const chain_error* error() const noexcept;

    /// True while a chain is walking this context.
    bool executing() const noexcept { return walk_ != nullptr; }

private:
    template <class>
    friend class chain_walk;
    friend struct detail::walk_access;

    chain_walk<Context>* walk_ = nullptr;
    std::shared_ptr<const chain_error> unhandled_;
};

/// One run of a chain over a context, stepped by whoever drives it: `basic_chain::execute`, or a
/// server's connection that holds no coroutine while a stage waits.
///
/// ```
/// chain_walk<C> walk{chain};
/// walk.begin(ctx);
/// while (walk.advance(ctx))                  // runs synchronous stages; true at an asynchronous one
///     walk.complete(ctx, co_await walk.step(ctx));   // or start(ctx, executor, handler)
/// walk.end(ctx);
/// ```
///
/// One cancellation rule, whoever drives: once `cancel` is called (a client gone, a shutdown's
/// grace ended), no enter stage starts: each ends at once with `operation_aborted`, as if it had
/// thrown it, and the leave and error stages run as usual. The stage in flight learns of it
/// through its own cancellation slot, which the driver connects.
///
/// A chain of any length walks without allocating: the walk keeps the chain's interceptors and a
/// route's as spans. The walk must stay put while it runs (the context points at it).
template <class Context>
class chain_walk {
public:
    using interceptor_type = basic_interceptor<Context>;

    explicit chain_walk(const basic_chain<Context>& chain)
        : chain_(chain)
    {
    }
    chain_walk(const chain_walk&) = delete;
    chain_walk& operator=(const chain_walk&) = delete;

    /// Links `ctx` to this walk and queues the chain's interceptors.
    void begin(Context& ctx)
    {
        walk_.append(chain_.interceptors_.data(), chain_.interceptors_.size());
        auto& link = static_cast<chain_context<Context>&>(ctx);
        outer_ = link.walk_;
        link.walk_ = this;
        link.unhandled_.reset();
    }

    /// Runs stages until the walk is over (false) or reaches an asynchronous stage (true: `step`
    /// or `start` it, then `complete` it, then advance again).
    bool advance(Context& ctx);

    /// True when the stage `advance` stopped at is a callback stage: `start` runs it without a
    /// coroutine frame.
    bool pending_is_callback() const noexcept
    {
        switch (pending_stage_) {
        case stage::enter: return pending_->enter.is_callback();
        case stage::leave: return pending_->leave.is_callback();
        default: return pending_->error.is_callback();
        }
    }

    /// Runs the asynchronous stage `advance` stopped at, in this coroutine; what it threw, or
    /// null. A cancellation of this coroutine reaches the stage in flight.
    asio::awaitable<std::exception_ptr> step(Context& ctx)
    {
        switch (pending_stage_) {
        case stage::enter: return call_async(pending_->enter, ctx);
        case stage::leave: return call_async(pending_->leave, ctx);
        default: return call_async(pending_->error, ctx, error_->exception);
        }
    }

    /// Starts the callback stage `advance` stopped at; `handler(std::exception_ptr)` gets its end
    /// (never inside this call), and its associated cancellation slot reaches the stage. What
    /// starting the stage throws (`std::bad_alloc`) propagates, and `handler` is then not called.
    void start(Context& ctx, stage_handler handler)
    {
        if constexpr (requires { ctx.on_suspend(); })
            ctx.on_suspend();
        switch (pending_stage_) {
        case stage::enter: return pending_->enter.callback_(ctx, std::move(handler));
        case stage::leave: return pending_->leave.callback_(ctx, std::move(handler));
        default: return pending_->error.callback_(ctx, error_->exception, std::move(handler));
        }
    }

    /// Records how the stage `advance` stopped at ended: null, or what it threw.
    void complete(Context& ctx, std::exception_ptr thrown);

    /// No enter stage starts from now on (see the class comment). Call it on the walk's executor.
    void cancel() noexcept { cancelled_ = true; }

    /// True once `cancel` was called.
    bool cancelled() const noexcept { return cancelled_; }

    /// Unlinks `ctx`, leaving it the error no stage handled.
    void end(Context& ctx)
    {
        auto& link = static_cast<chain_context<Context>&>(ctx);
        link.walk_ = outer_;
        if (error_)
            link.unhandled_ = std::move(error_);
    }

    /// What an enter stage that a cancelled walk does not start ends with.
    static std::exception_ptr cancelled_error()
    {
        return std::make_exception_ptr(
            boost::system::system_error(asio::error::operation_aborted, "plinth: the chain was cancelled"));
    }

private:
    template <class>
    friend class chain_context;
    template <class>
    friend class basic_chain;
    friend struct detail::walk_access;

    static void check(const interceptor_type& i, const char* what)
    {
        if (!i.valid())
            throw std::invalid_argument(std::string(what) + ": an interceptor needs a name and at least one stage"
                                        + (i.name.empty() ? std::string() : " ('" + i.name + "' has none)"));
    }

    const interceptor_type* own(interceptor_type i)
    {
        check(i, "plinth::enqueue");
        return &owned_.emplace_front(std::move(i));
    }

    void drop_queue() noexcept { walk_.truncate(head_); }

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
        if (error_ && error_->exception == e)
            return;
        chain_error next{std::move(e), st, i.name, {}};
        if (error_) {
            next.suppressed = std::move(error_->suppressed);
            next.suppressed.push_back(std::move(error_->exception));
        }
        error_ = std::make_unique<chain_error>(std::move(next));
    }

    const basic_chain<Context>& chain_;
    // One list for the stack and the queue, since entering an interceptor moves it from the
    // queue's front to the stack's top: [0, head_) is the stack (its top at head_ - 1),
    // [head_, end) the queue while entering (while leaving, what lies past head_ is never
    // entered).
    detail::walk_list<interceptor_type> walk_;
    std::forward_list<interceptor_type> owned_; // interceptors enqueued by value, at stable addresses
    std::unique_ptr<chain_error> error_;        // boxed: rare, and every request in flight carries the pointer
    std::uint32_t head_ = 0;

    // Where the walk is: the next enter stage, the leave stage of the next interceptor on the
    // stack, or the error stage of the one just left. (Beside head_: every request carries them.)
    enum class next_step : unsigned char { enter, leave, error_of_current };
    next_step next_ = next_step::enter;
    stage pending_stage_ = stage::enter; // which stage of `pending_`
    bool leaving_ = false;
    bool cancelled_ = false;
    const interceptor_type* current_ = nullptr; // popped off the stack, on the way out
    const interceptor_type* pending_ = nullptr; // the asynchronous stage advance() stopped at (an error
                                                // stage's argument is error_'s exception)
    chain_walk* outer_ = nullptr;               // a stage may run a nested chain over its context
};

/// A sequence of interceptors run over a context, Pedestal-style.
///
/// `execute` pops each interceptor off the queue onto the stack and calls its `enter`; when the
/// queue is empty (or a terminator says so) it walks the stack back calling `leave`, or `error`
/// while an error is pending. Synchronous stages are plain calls; an awaitable stage suspends the
/// run without holding a thread and resumes on the coroutine's executor. The chain must outlive
/// every walk it runs.
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
            chain_walk<Context>::check(i, "plinth::basic_chain");
    }

    basic_chain(std::initializer_list<interceptor_type> interceptors)
        : basic_chain(std::vector<interceptor_type>(interceptors))
    {
    }

    /// Appends an interceptor to the chain's initial queue.
    basic_chain& push_back(interceptor_type i)
    {
        chain_walk<Context>::check(i, "plinth::basic_chain::push_back");
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
    /// `result.error()`, never thrown. A cancellation of this coroutine cancels the walk (see
    /// chain_walk).
    asio::awaitable<Context> execute(Context ctx) const;

    /// `execute` with any completion token; the handler signature is
    /// `void(std::exception_ptr, Context)` (the exception is only ever set for `std::bad_alloc`).
    template <class Executor, class CompletionToken>
    auto async_execute(const Executor& ex, Context ctx, CompletionToken&& token) const
    {
        return asio::co_spawn(ex, execute(std::move(ctx)), std::forward<CompletionToken>(token));
    }

private:
    friend class chain_walk<Context>;

    std::vector<interceptor_type> interceptors_;
    std::vector<terminator> terminators_;
    observer observer_;
};

template <class Context>
const chain_error* chain_context<Context>::error() const noexcept
{
    if (walk_)
        return walk_->error_.get();
    return unhandled_.get();
}

template <class Context>
void chain_walk<Context>::observe(const Context& ctx, stage st, const interceptor_type& i, observe_point p) const
{
    if (chain_.observer_)
        chain_.observer_(ctx, st, i.name, p);
}

template <class Context>
bool chain_walk<Context>::terminated(const Context& ctx) const
{
    for (const auto& t : chain_.terminators_)
        if (t(ctx))
            return true;
    return false;
}

template <class Context>
bool chain_walk<Context>::advance(Context& ctx)
{
    for (;;) {
        switch (next_) {
        case next_step::enter: {
            if (error_ || head_ >= walk_.size()) { // the enter phase is over
                drop_queue();
                leaving_ = true;
                next_ = next_step::leave;
                continue;
            }
            const auto& i = *walk_[head_++]; // now on top of the stack
            if (i.enter) {
                observe(ctx, stage::enter, i, observe_point::before);
                pending_ = &i;
                pending_stage_ = stage::enter;
                if (cancelled_)
                    complete(ctx, cancelled_error());
                else if (i.enter.is_async())
                    return true;
                else
                    complete(ctx, call_sync(i.enter, ctx)); // what follows a stage, sync or not
            }
            else if (terminated(ctx)) // checked after every interceptor, as Pedestal does
                drop_queue();
            continue;
        }
        case next_step::leave: { // leave stages in reverse, or error stages while an error is pending
            if (head_ == 0)
                return false;
            current_ = walk_[--head_];
            next_ = next_step::error_of_current;
            const auto& i = *current_;
            if (!error_ && i.leave) {
                observe(ctx, stage::leave, i, observe_point::before);
                pending_ = &i;
                pending_stage_ = stage::leave;
                if (i.leave.is_async())
                    return true;
                complete(ctx, call_sync(i.leave, ctx)); // on failure its own error stage is tried next
            }
            continue;
        }
        case next_step::error_of_current: {
            next_ = next_step::leave;
            const auto& i = *current_;
            if (error_ && i.error) {
                observe(ctx, stage::error, i, observe_point::before);
                pending_ = &i;
                pending_stage_ = stage::error;
                if (i.error.is_async())
                    return true;
                complete(ctx, call_sync(i.error, ctx, error_->exception));
            }
            continue;
        }
        }
    }
}

template <class Context>
void chain_walk<Context>::complete(Context& ctx, std::exception_ptr thrown)
{
    const auto& i = *pending_;
    pending_ = nullptr;
    switch (pending_stage_) {
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
            error_.reset(); // handled: the rest of the stack gets leave
            observe(ctx, stage::error, i, observe_point::after);
        }
    }
}

// g++ 12 mistakes the coroutine frame's operator delete for a mismatch (a false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
template <class Context>
asio::awaitable<Context> basic_chain<Context>::execute(Context ctx) const
{
    chain_walk<Context> walk{*this};
    walk.begin(ctx);
    // A cancellation must reach the stage in flight, not abort the walk at our next co_await;
    // restored on the way out.
    const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
    co_await asio::this_coro::throw_if_cancelled(false);
    for (;;) {
        const auto state = co_await asio::this_coro::cancellation_state;
        if (state.cancelled() != asio::cancellation_type::none)
            walk.cancel();
        if (!walk.advance(ctx))
            break;
        auto thrown = co_await walk.step(ctx);
        walk.complete(ctx, std::move(thrown));
    }
    co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
    walk.end(ctx);
    co_return std::move(ctx);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace detail {

// The free functions below reach the walk that runs a context here.
struct walk_access {
    template <class Context>
    static chain_walk<Context>& of(chain_context<Context>& ctx, const char* what)
    {
        if (!ctx.walk_)
            throw std::logic_error(std::string(what) + ": the context is not being executed by a chain");
        return *ctx.walk_;
    }

    template <class Context>
    static void check(const basic_interceptor<Context>& i, const char* what)
    {
        chain_walk<Context>::check(i, what);
    }

    template <class Context>
    static void enqueue(chain_walk<Context>& w, basic_interceptor<Context> i)
    {
        w.walk_.push_back(w.own(std::move(i)));
    }

    template <class Context>
    static void enqueue_ref(chain_walk<Context>& w, std::span<const basic_interceptor<Context>> is)
    {
        w.walk_.append(is.data(), is.size());
    }

    template <class Context>
    static void enqueue_front(chain_walk<Context>& w, basic_interceptor<Context> i)
    {
        const auto* p = w.own(std::move(i));
        w.walk_.insert(w.head_, p);
    }

    template <class Context>
    static void terminate(chain_walk<Context>& w) noexcept
    {
        if (!w.leaving_)
            w.drop_queue();
    }
};

} // namespace detail

/// Appends a copy of `i` to the queue of the running walk.
/// Throws `std::invalid_argument` for an invalid interceptor, `std::logic_error` outside a walk.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void enqueue(Context& ctx, basic_interceptor<Context> i)
{
    detail::walk_access::enqueue(detail::walk_access::of<Context>(ctx, "plinth::enqueue"), std::move(i));
}

/// Appends copies of `is` to the queue, in order.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void enqueue(Context& ctx, std::span<const basic_interceptor<Context>> is)
{
    auto& walk = detail::walk_access::of<Context>(ctx, "plinth::enqueue");
    for (const auto& i : is) // all or nothing
        detail::walk_access::check(i, "plinth::enqueue");
    for (const auto& i : is)
        detail::walk_access::enqueue(walk, i);
}

/// Appends `is` by reference, without copying: they must outlive the walk (a route table that
/// lives as long as the server does). This is how a router hands over a route at no cost.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void enqueue_ref(Context& ctx, std::span<const basic_interceptor<Context>> is)
{
    auto& walk = detail::walk_access::of<Context>(ctx, "plinth::enqueue_ref");
    for (const auto& i : is) // all or nothing
        detail::walk_access::check(i, "plinth::enqueue_ref");
    detail::walk_access::enqueue_ref(walk, is);
}

/// Inserts a copy of `i` at the front of the queue: it is entered next.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void enqueue_front(Context& ctx, basic_interceptor<Context> i)
{
    detail::walk_access::enqueue_front(detail::walk_access::of<Context>(ctx, "plinth::enqueue_front"), std::move(i));
}

/// Drops the rest of the queue: the leave phase starts after the current stage.
/// No effect during the leave phase.
template <class Context>
    requires(std::derived_from<Context, chain_context<Context>>)
void terminate(Context& ctx)
{
    detail::walk_access::terminate(detail::walk_access::of<Context>(ctx, "plinth::terminate"));
}

} // namespace plinth

#endif
