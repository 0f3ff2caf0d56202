//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_SUSPENSION_HPP
#define PLINTH_DETAIL_SUSPENSION_HPP

// The state machine behind an async_response: one winner among resume, cancel, timeout and
// disconnect, whatever the threads; the waiter that the request's stage leaves behind; and the
// completion callbacks. Knows Asio, not HTTP: the result type is a parameter.

#include <plinth/async_errors.hpp>
#include <plinth/detail/exact_allocator.hpp>
#include <plinth/detail/held_waiters.hpp>
#include <plinth/detail/small_mutex.hpp>
#include <plinth/log.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace plinth {

namespace asio = boost::asio;

template <class Result>
class basic_async_response;

namespace detail {

struct suspension_access;

/// How a suspension ended, as its waiter sees it.
struct cancellation {
    std::variant<std::monostate, std::chrono::seconds, std::chrono::system_clock::time_point> retry_after;
};
struct disconnection {};

/// The shared state behind every copy of a handle. All state changes happen under `mutex_`;
/// callbacks, the waiter and the timer run on `*executor_` (the connection's strand), never
/// under the lock.
///
/// The executor and the log function are borrowed, not copied (every suspended request would
/// carry the copies): whoever makes a suspension keeps both alive until it is completed or released.
/// A server's connection does (it releases its requests' suspensions before it goes); a
/// standalone handle's state owns them (see owning_suspension).
template <class Result>
class suspension : public std::enable_shared_from_this<suspension<Result>>, private held_waiter {
public:
    using handle = basic_async_response<Result>;
    using outcome = std::variant<std::monostate, Result, std::exception_ptr, cancellation, disconnection>;

    // `log` may be null (no log).
    suspension(const asio::any_io_executor& executor, const log_function* log) noexcept
        : executor_(&executor)
        , log_(log)
    {
    }
    suspension(asio::any_io_executor&&, const log_function*) = delete; // borrowed: not a temporary

    /// A handle to `s`.
    static handle handle_of(std::shared_ptr<suspension> s) noexcept { return handle{std::move(s)}; }

    ~suspension() { release(); } // a waiter that owned no reference to it (a unit test's)

    // -- the handle's operations (any thread) --

    bool resolve(outcome o, bool cancel_call = false)
    {
        {
            std::lock_guard lock(mutex_);
            if (done_) // a late call: nothing to box
                return cancel_call && cancelled_;
        }
        stored s;
        try {
            s = box(std::move(o)); // before the lock: it may allocate
        }
        catch (...) { // no memory for the result: the request still ends, down the error path (500)
            s = std::current_exception();
        }
        std::unique_lock lock(mutex_);
        if (done_)
            return cancel_call && cancelled_; // a second cancel succeeds and changes nothing
        win(lock, std::move(s), cancel_call, false);
        return true;
    }

    bool set_timeout(std::chrono::steady_clock::duration d)
    {
        std::unique_lock lock(mutex_);
        if (done_)
            return false;
        const auto generation = ++generation_;                      // disarms any earlier timer
        const auto deadline = std::chrono::steady_clock::now() + d; // counts from the call
        asio::any_io_executor executor = *executor_;
        timer_used_ = timer_used_ || d > d.zero();
        lock.unlock();
        // From another thread this runs later, maybe after a newer set_timeout ran inline on the
        // strand: only the newest generation may touch the timer.
        asio::dispatch(executor,
                       [self = this->shared_from_this(), executor, deadline, generation, never = d <= d.zero()] {
                           {
                               std::lock_guard lock(self->mutex_);
                               if (generation != self->generation_) // a newer one, or done (released included)
                                   return;
                           }
                           if (never) {
                               if (self->timer_)
                                   self->timer_->cancel();
                               return;
                           }
                           if (!self->timer_)
                               self->timer_ = std::make_unique<asio::steady_timer>(executor);
                           self->timer_->expires_at(deadline);
                           self->timer_->async_wait(exactly_allocated([self, generation](boost::system::error_code ec) {
                               if (!ec)
                                   self->expired(generation);
                           }));
                       });
        return true;
    }

    bool on_timeout(std::function<void(handle)> h)
    {
        std::lock_guard lock(mutex_);
        if (done_)
            return false; // kept, it could hold its own handle forever
        registered().on_timeout = std::move(h);
        return true;
    }

    bool on_disconnect(std::function<void()> cb)
    {
        std::lock_guard lock(mutex_);
        if (completed_)
            return false;
        registered().on_disconnect.push_back(std::move(cb));
        return true;
    }

    bool on_complete(std::function<void(std::exception_ptr)> cb)
    {
        std::lock_guard lock(mutex_);
        if (completed_)
            return false;
        registered().on_complete.push_back(std::move(cb));
        return true;
    }

    bool is_done() const
    {
        std::lock_guard lock(mutex_);
        return done_;
    }

    bool is_cancelled() const
    {
        std::lock_guard lock(mutex_);
        return cancelled_;
    }

    bool timed_out() const
    {
        std::lock_guard lock(mutex_);
        return timed_out_;
    }

    // -- the connection's side (on the strand) --

    /// Waits until the suspension is resolved and takes its outcome. A wait cancelled through
    /// per-operation cancellation (the client went away) resolves it as a disconnection.
    asio::awaitable<outcome> wait() { co_return co_await async_wait(asio::use_awaitable); }

    /// Completes with the outcome (`void(outcome)`) once the suspension is resolved: through
    /// `executor_` (the strand) and then the handler's own executor, never inside this call. A
    /// cancellation through the handler's slot (the client went away) resolves it as a
    /// disconnection. Only the handler is kept meanwhile, in an allocation of its own size: a
    /// request suspended this way holds no coroutine frame, timer or pending operation. Like a
    /// pending operation's, the handler keeps `io_context::run` from returning, and the
    /// io_context's shutdown destroys it uncalled (see held_waiters). One wait at a time: a second
    /// one while the first is pending throws `std::logic_error`.
    template <class CompletionToken>
    auto async_wait(CompletionToken&& token)
    {
        return asio::async_initiate<CompletionToken, void(outcome)>(
            [this](auto handler) { start_wait(std::move(handler)); }, token);
    }

    /// The response was written (or writing failed with `error`): fire on_complete once, in
    /// registration order, and release everything the handle held.
    void complete(std::exception_ptr error) { finish(false, std::move(error)); }

    /// The client went away while suspended or while the response was written.
    void disconnected(std::exception_ptr error) { finish(true, std::move(error)); }

    /// Marks the suspension done without an outcome (the handler that received it threw).
    void abandon() { resolve(disconnection{}); }

    /// The connection is being destroyed without having completed this suspension (its
    /// io_context is going away): done, no callbacks, and nothing left that refers to the
    /// io_context, so a handle kept by the application stays safe.
    void release() noexcept
    {
        detached d;                    // destroyed last: its handler may own this suspension
        std::unique_ptr<callbacks> cb; // destroyed outside the lock: they may own handles
        stored o;                      // likewise (a result may)
        {
            std::lock_guard lock(mutex_);
            done_ = completed_ = true;
            ++generation_;
            o.swap(outcome_);
            cb.swap(callbacks_);
            executor_ = nullptr; // it may be gone once this returns
            detach_waiter(d);
        }
        if (d.registry)
            d.registry->remove(*this);
        timer_.reset();
        // Forgotten, not cleared: a waiter destroyed uncalled leaves its slot to its owner, whose
        // signal may be gone already (as an Asio operation's would). Its cancellation handler
        // holds a weak reference only.
        waiter_slot_ = asio::cancellation_slot();
    }

private:
    using waiter = asio::any_completion_handler<void(outcome)>;

    // The io_context is being shut down with the waiter still held.
    void drop_waiter() noexcept override { release(); }

    template <class Handler>
    void start_wait(Handler handler)
    {
        // The handler's slot is served here. Type-erased with it, the handler would get a
        // cancellation state (an allocation) forwarding to a slot of its own.
        auto slot = asio::get_associated_cancellation_slot(handler);
        auto wrapped = wrap_waiter(std::move(handler));
        asio::any_io_executor executor;
        {
            std::lock_guard lock(mutex_);
            if (!done_) {
                if (waiter_)
                    throw std::logic_error("plinth: a suspension is waited on once at a time");
                hold(std::move(wrapped), slot);
                return; // win() wakes it
            }
            if (executor_)
                executor = *executor_;
        }
        // Resolved already (a handler may resume before its stage returned): nothing to keep.
        if (executor)
            asio::post(executor, [self = this->shared_from_this(), w = std::move(wrapped)]() mutable {
                std::move(w)(self->take_outcome());
            });
    }

    // Under mutex_: keeps the waiter, registered, with its slot served. Throws (bad_alloc) having
    // changed nothing.
    template <class Wrapped>
    void hold(Wrapped wrapped, asio::cancellation_slot slot)
    {
        waiter w{exactly_allocated(std::move(wrapped))};
        auto& registry = asio::use_service<held_waiters>(asio::query(*executor_, asio::execution::context));
        if (slot.is_connected())
            slot.template emplace<waiter_cancellation>(this->weak_from_this());
        try {
            registry.add(*this, *executor_);
        }
        catch (...) {
            if (slot.is_connected())
                slot.clear();
            throw;
        }
        registry_ = &registry;
        waiter_slot_ = slot;
        w.swap(waiter_); // (not operator=: Asio 1.81's wraps the handler in itself, forever)
    }

    // The waiter as kept: without the handler's slot (see start_wait), and dispatched to the
    // handler's own executor if it has one (the strand is where it is called from).
    template <class Handler>
    static auto wrap_waiter(Handler handler)
    {
        if constexpr (is_slot_binder<Handler>::value) // its slot is served already: not kept
            return wrap_waiter(std::move(handler.get()));
        else if constexpr (std::is_same_v<asio::associated_executor_t<Handler, asio::system_executor>,
                                          asio::system_executor>)
            return [h = std::move(handler)](outcome o) mutable { std::move(h)(std::move(o)); };
        else
            return [ex = asio::get_associated_executor(handler), h = std::move(handler)](outcome o) mutable {
                asio::dispatch(ex, [h = std::move(h), o = std::move(o)]() mutable { std::move(h)(std::move(o)); });
            };
    }

    template <class T>
    struct is_slot_binder : std::false_type {
    };
    template <class T, class S>
    struct is_slot_binder<asio::cancellation_slot_binder<T, S>> : std::true_type {
    };

    // What a cancellation of the waiter's slot does: the client went away (or the server's grace
    // ended), unless something else won first. win() then wakes the waiter.
    struct waiter_cancellation {
        // (A constructor: clang 14 has no parenthesized aggregate initialization, which emplace uses.)
        explicit waiter_cancellation(std::weak_ptr<suspension> s) noexcept
            : self(std::move(s))
        {
        }
        std::weak_ptr<suspension> self;
        void operator()(asio::cancellation_type) const
        {
            if (auto s = self.lock())
                s->resolve(disconnection{});
        }
    };

    // Before the waiter runs (its signal is alive until then); disconnected too, as the signal
    // may be gone afterwards.
    void clear_waiter_slot() noexcept
    {
        if (waiter_slot_.is_connected()) {
            waiter_slot_.clear();
            waiter_slot_ = asio::cancellation_slot();
        }
    }

    // The waiter and where it is registered, taken out (under mutex_) to be woken or dropped.
    struct detached {
        waiter handler;
        held_waiters* registry = nullptr;
    };
    void detach_waiter(detached& d) noexcept // (swaps: see start_wait)
    {
        d.registry = std::exchange(registry_, nullptr);
        d.handler.swap(waiter_);
    }

    // Hands `w` its outcome through `executor`, so never inside the call that resolved (a
    // timeout handler's, a cancellation's). Its slot is cleared there, before the call: not here,
    // where the slot's own cancellation handler may be running. It is unregistered once posted,
    // so that the io_context always has work meanwhile.
    void wake(const asio::any_io_executor& executor, waiter w, held_waiters* registry)
    {
        if (w && executor)
            asio::post(executor, [self = this->shared_from_this(), w = std::move(w)]() mutable {
                self->clear_waiter_slot();
                std::move(w)(self->take_outcome());
            });
        if (registry)
            registry->remove(*this);
    }

    // The waiter's side once its wait ended: a wait that ended unresolved (cancelled: the client
    // went away) resolves as a disconnection.
    outcome take_outcome()
    {
        resolve(disconnection{}); // no effect when something else won
        stored s;
        {
            std::lock_guard lock(mutex_);
            s = std::exchange(outcome_, std::monostate{});
        }
        return std::visit(
            [](auto& v) -> outcome {
                using T = std::decay_t<decltype(v)>;
                if constexpr (std::is_same_v<T, std::unique_ptr<Result>>)
                    return std::move(*v);
                else if constexpr (std::is_same_v<T, cancelled>)
                    return cancellation{};
                else if constexpr (std::is_same_v<T, cancelled_after>)
                    return cancellation{v.seconds};
                else if constexpr (std::is_same_v<T, cancelled_at>)
                    return cancellation{v.time};
                else
                    return std::move(v);
            },
            s);
    }

    // What won, as kept until the waiter takes it. A result is boxed, so that a suspended request
    // holds a pointer for it while it waits rather than a whole Result; a cancellation is
    // flattened into alternatives no larger than the pointer (its own variant would be larger, and
    // boxing it would let a cancel fail for want of memory).
    struct cancelled {};
    struct cancelled_after {
        std::chrono::seconds seconds;
    };
    struct cancelled_at {
        std::chrono::system_clock::time_point time;
    };
    using stored = std::variant<std::monostate, std::unique_ptr<Result>, std::exception_ptr, disconnection, cancelled,
                                cancelled_after, cancelled_at>;

    static stored box(outcome o)
    {
        return std::visit(
            [](auto& v) -> stored {
                using T = std::decay_t<decltype(v)>;
                if constexpr (std::is_same_v<T, Result>)
                    return std::make_unique<Result>(std::move(v));
                else if constexpr (std::is_same_v<T, cancellation>)
                    return std::visit(
                        [](const auto& r) -> stored {
                            using R = std::decay_t<decltype(r)>;
                            if constexpr (std::is_same_v<R, std::chrono::seconds>)
                                return cancelled_after{r};
                            else if constexpr (std::is_same_v<R, std::chrono::system_clock::time_point>)
                                return cancelled_at{r};
                            else
                                return cancelled{};
                        },
                        v.retry_after);
                else
                    return std::move(v);
            },
            o);
    }

    // The timer of `generation` fired (on the strand).
    void expired(std::uint32_t generation)
    {
        std::function<void(handle)> h;
        {
            std::lock_guard lock(mutex_);
            if (done_ || generation != generation_)
                return;
            if (callbacks_)
                h = callbacks_->on_timeout;
        }
        if (h) {
            try {
                h(handle{this->shared_from_this()});
            }
            catch (...) { // a throwing timeout handler: its exception goes down the error path
                resolve_timeout(generation, std::current_exception());
                return;
            }
        }
        resolve_timeout(generation, std::make_exception_ptr(service_unavailable{}));
    }

    // The default outcome of a timeout, unless the handler resolved or re-armed meanwhile: the
    // check and the win are one critical section, or a resume could win in between.
    void resolve_timeout(std::uint32_t generation, std::exception_ptr e)
    {
        std::unique_lock lock(mutex_);
        if (done_ || generation != generation_)
            return;
        win(lock, std::move(e), false, true);
    }

    // Records the winning outcome (under `lock`, which it releases) and wakes the waiter.
    void win(std::unique_lock<small_mutex>& lock, stored o, bool cancelled, bool timed_out)
    {
        done_ = true;
        cancelled_ = cancelled;
        timed_out_ = timed_out;
        outcome_ = std::move(o);
        ++generation_;                               // disarms the timeout
        asio::any_io_executor executor = *executor_; // (not done yet: it is there)
        const bool timer_used = timer_used_;
        detached d;
        detach_waiter(d);
        lock.unlock();
        wake(executor, std::move(d.handler), d.registry);
        if (timer_used) // no post for the many that never set one
            asio::dispatch(executor, [self = this->shared_from_this()] {
                if (self->timer_)
                    self->timer_->cancel();
            });
    }

    void finish(bool disconnected, std::exception_ptr error)
    {
        std::unique_ptr<callbacks> cb;
        asio::any_io_executor executor;
        detached d;
        stored o; // destroyed outside the lock, as in release()
        {
            std::lock_guard lock(mutex_);
            if (completed_)
                return;
            completed_ = true;
            done_ = true;
            ++generation_;
            o.swap(outcome_);
            cb.swap(callbacks_);
            // A handle may outlive the io_context: keep nothing that refers to it.
            if (executor_)
                executor = *std::exchange(executor_, nullptr);
            detach_waiter(d);
        }
        wake(executor, std::move(d.handler), d.registry); // only if a waiter is left, which the connection never does
        // Release the timer now rather than at some deadline (Jersey #2861).
        timer_.reset();
        if (!cb)
            return;
        if (disconnected)
            for (auto& f : cb->on_disconnect)
                guarded("on_disconnect", [&] { f(); });
        for (auto& f : cb->on_complete)
            guarded("on_complete", [&] { f(error); });
    }

    template <class F>
    void guarded(const char* what, F&& f) const noexcept
    {
        try {
            f();
        }
        catch (const std::exception& e) {
            log(std::string("an ") + what + " callback threw: " + e.what());
        }
        catch (...) {
            log(std::string("an ") + what + " callback threw a non-standard exception");
        }
    }

    // (Only before completion, or while finish() runs: the log is borrowed.)
    void log(const std::string& line) const noexcept
    {
        if (!log_ || !*log_)
            return;
        try {
            (*log_)(log_level::error, line);
        }
        catch (...) {
        }
    }

    mutable small_mutex mutex_; // a word rather than std::mutex: see small_mutex
    bool done_ = false;
    bool cancelled_ = false;
    bool timed_out_ = false;
    bool completed_ = false;
    bool timer_used_ = false;      // set_timeout was called: a win cancels the timer
    std::uint32_t generation_ = 0; // (wrapping would take 2^32 set_timeouts during one wait)
    stored outcome_;
    struct callbacks {
        std::function<void(handle)> on_timeout;
        std::vector<std::function<void()>> on_disconnect;
        std::vector<std::function<void(std::exception_ptr)>> on_complete;
    };
    // Made by the first registration (under mutex_): most suspensions register none, and each
    // suspended request would otherwise carry room for them.
    std::unique_ptr<callbacks> callbacks_;
    callbacks& registered()
    {
        if (!callbacks_)
            callbacks_ = std::make_unique<callbacks>();
        return *callbacks_;
    }

    const asio::any_io_executor* executor_; // guarded by mutex_; null from completion on
    const log_function* const log_;
    waiter waiter_;                       // guarded by mutex_; see async_wait
    held_waiters* registry_ = nullptr;    // guarded by mutex_: set while waiter_ is held
    asio::cancellation_slot waiter_slot_; // the waiter's; touched on the strand
    // Touched on the strand only; reset at completion.
    std::unique_ptr<asio::steady_timer> timer_; // made by the first set_timeout: many never time out
};

// What a standalone suspension owns (a base, so that it is made before the suspension that
// borrows it and goes after).
struct suspension_resources {
    asio::any_io_executor executor;
    std::shared_ptr<const log_function> log;
};

/// A suspension that owns its executor and log function, for a handle made outside a server.
template <class Result>
class owning_suspension final : private suspension_resources, public suspension<Result> {
public:
    owning_suspension(asio::any_io_executor executor, std::shared_ptr<const log_function> log)
        : suspension_resources{std::move(executor), std::move(log)}
        , suspension<Result>(suspension_resources::executor, suspension_resources::log.get())
    {
    }
};

} // namespace detail
} // namespace plinth

#endif
