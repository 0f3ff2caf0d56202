//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_SERVER_CORE_HPP
#define PLINTH_DETAIL_SERVER_CORE_HPP

// What a server shares with its connections, whatever their protocol: options, the chain,
// counters, the set of live connections with the stop's level, and the deadlines with the one
// timer that serves them.

#include <plinth/context.hpp>
#include <plinth/detail/connection_set.hpp>
#include <plinth/detail/deadline_queue.hpp>
#include <plinth/detail/exchange.hpp>
#include <plinth/detail/handler_slot.hpp>
#include <plinth/log.hpp>
#include <plinth/server_options.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace plinth::detail {

namespace asio = boost::asio;

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

/// What a server shares with its connections; they keep it alive until the last one is gone.
class server_core : public std::enable_shared_from_this<server_core> {
public:
    using clock = deadline_queue::clock;

    server_core(asio::any_io_executor ex, server_options o)
        : executor(std::move(ex))
        , options(std::move(o))
        , connections([this](std::vector<connection_set::waiter> w) { stopped(std::move(w)); })
    {
        policy.default_timeout = options.suspend_timeout;
        policy.max_suspended = options.max_suspended;
        policy.log = std::make_shared<const log_function>(options.log);
        policy.shutdown_retry_after = options.shutdown_retry_after;
        policy.streams = options.streams;
    }

    server_core(const server_core&) = delete;
    server_core& operator=(const server_core&) = delete;

    const asio::any_io_executor executor; // the acceptor's strand, where the timers below run
    const server_options options;
    suspension_policy policy;
    plinth::chain chain; // the server's interceptors, the router last

    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::uint64_t> rejected{0};
    std::atomic<std::uint64_t> timeouts{0};

    connection_set connections;
    deadline_queue deadlines;

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

    // -- stopping --

    /// Begins a graceful stop (a second call joins the first); `w` (may be empty) completes
    /// once every connection is gone. The grace, `grace` long, starts on `executor`; when it runs
    /// out, the stop turns hard.
    void stop(std::chrono::milliseconds grace, connection_set::waiter w)
    {
        if (!connections.raise(stop_level::graceful, std::move(w)))
            return; // the first call's grace runs
        asio::post(executor, [self = shared_from_this(), grace] {
            if (self->connections.stopped())
                return; // every connection went before the grace could start
            self->grace_.emplace(self->executor, grace);
            self->grace_->async_wait([self](beast::error_code ec) {
                if (!ec)
                    self->connections.raise(stop_level::hard);
            });
        });
    }

    // -- connection deadlines --
    //
    // One timer for all the connections rather than one each: a timer and its pending wait would
    // cost every connection, a suspended request's included, for as long as it lives. A
    // connection sets its deadline in `deadlines`; the timer wakes when the earliest is due and
    // tells each connection whose deadline passed. Wake-ups closer than `sweep_resolution` are
    // merged.

    static constexpr clock::duration sweep_resolution = std::chrono::milliseconds(5);

    /// Sets `c`'s deadline `d` from now (zero: none).
    void set_deadline(connection_base& c, std::chrono::milliseconds d)
    {
        if (d <= d.zero())
            return deadlines.cancel(c);
        if (deadlines.set(c, clock::now() + d))
            asio::post(executor, [self = shared_from_this()] { self->schedule_sweep(); });
    }

private:
    // On `executor`: the timer waits for the queue's next wake-up (a deadline set before it).
    void schedule_sweep()
    {
        const auto at = deadlines.next_wake();
        if (at < sweep_at_)
            wake_at(at);
    }

    // On `executor`, when the timer fires: tells each connection whose deadline passed, then
    // waits for the next deadline, but not sooner than `sweep_resolution` from now.
    void sweep()
    {
        sweep_at_ = clock::time_point::max(); // it waits for nothing now
        const auto now = clock::now();
        // Weak references under the queue's lock: a connection released there would take it.
        std::vector<std::weak_ptr<connection_base>> due;
        auto next = now + sweep_resolution; // what was not taken out is seen then
        try {
            const auto left = deadlines.pop_due(now, [&](deadline_queue::hook& h) {
                due.push_back(static_cast<connection_base&>(h).weak_from_this());
            });
            next = left == clock::time_point::max() ? left : std::max(left, next);
        }
        catch (const std::bad_alloc&) {
        }
        if (next != clock::time_point::max())
            wake_at(next);
        for (const auto& w : due)
            if (auto c = w.lock())
                c->deadline_passed();
    }

    // On `executor`: the timer fires at `at` (cancelling an earlier wait).
    void wake_at(clock::time_point at)
    {
        if (!sweeper_)
            sweeper_.emplace(executor);
        sweep_at_ = at;
        sweeper_->expires_at(at);
        sweeper_->async_wait(
            asio::bind_allocator(slot_allocator<void>(sweep_slot_), [self = shared_from_this()](beast::error_code ec) {
                if (!ec)
                    self->sweep();
            }));
    }

    // On any thread, once every connection went after a stop began: completes the waiters, on
    // `executor`, before the timers (perhaps the io_context's last work) are cancelled.
    void stopped(std::vector<connection_set::waiter> waiters)
    {
        asio::post(executor, [self = shared_from_this(), waiters = std::move(waiters)]() mutable {
            for (auto& w : waiters)
                asio::post(self->executor, std::move(w)); // through the server's executor, then its own
            if (self->grace_)
                self->grace_->cancel();
            self->sweep_at_ = clock::time_point::max();
            if (self->sweeper_)
                self->sweeper_->cancel();
        });
    }

    std::optional<asio::steady_timer> grace_;               // on `executor`
    handler_slot sweep_slot_;                               // the sweep's wait, in the steady state
    std::optional<asio::steady_timer> sweeper_;             // on `executor`...
    clock::time_point sweep_at_ = clock::time_point::max(); // ...and what it waits for
};

} // namespace plinth::detail

#endif
