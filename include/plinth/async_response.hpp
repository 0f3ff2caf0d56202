//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_ASYNC_RESPONSE_HPP
#define PLINTH_ASYNC_RESPONSE_HPP

// JAX-RS's AsyncResponse over Asio: a handle to a suspended request that any thread may resume,
// cancel or time out, with exactly one winner. This layer knows Asio, not HTTP: the result type
// is a parameter and a cancellation is reported as such; the HTTP layer turns it into a 503.

#include <plinth/async_errors.hpp>
#include <plinth/detail/suspension.hpp>
#include <plinth/log.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <concepts>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace plinth {

/// A handle to a suspended request: cheap to copy, safe from any thread, and safe to keep after
/// the request ended (its calls then answer false).
///
/// Exactly one of resume, cancel, timeout and disconnect wins, whatever the threads: the call
/// that wins returns true, the others false (except a repeated cancel, which returns true and
/// changes nothing). Callbacks run on the connection's strand, never under a lock.
template <class Result>
class basic_async_response {
public:
    using result_type = Result;

    /// True while neither resumed, cancelled, timed out nor disconnected.
    bool is_suspended() const { return !state_->is_done(); }
    /// True once cancel() won.
    bool is_cancelled() const { return state_->is_cancelled(); }
    /// True once anything won.
    bool is_done() const { return state_->is_done(); }

    /// Answers with `r`.
    bool resume(Result r) { return state_->resolve(std::move(r)); }

    /// Sends `e` down the error path, as if a stage had thrown it. Throws
    /// `std::invalid_argument` for a null pointer, changing nothing.
    bool resume(std::exception_ptr e)
    {
        if (!e)
            throw std::invalid_argument("plinth::async_response::resume: null exception_ptr");
        return state_->resolve(std::move(e));
    }

    /// `resume(std::make_exception_ptr(e))`.
    template <class E>
        requires(std::derived_from<std::remove_cvref_t<E>, std::exception>)
    bool resume_error(E&& e) { return resume(std::make_exception_ptr(std::forward<E>(e))); }

    /// Cancels: 503 without Retry-After. Passes through leave stages, not error stages.
    bool cancel() { return state_->resolve(detail::cancellation{}, true); }

    /// Cancels: 503 with `Retry-After: <whole seconds>`.
    bool cancel(std::chrono::seconds retry_after) { return state_->resolve(detail::cancellation{retry_after}, true); }

    /// Cancels: 503 with `Retry-After: <HTTP-date>`.
    bool cancel(std::chrono::system_clock::time_point retry_at)
    {
        return state_->resolve(detail::cancellation{retry_at}, true);
    }

    /// (Re)arms the timeout `d` from now, replacing any earlier one; `d <= 0` means never.
    /// False once done.
    template <class Rep, class Period>
    bool set_timeout(std::chrono::duration<Rep, Period> d)
    {
        return state_->set_timeout(std::chrono::duration_cast<std::chrono::steady_clock::duration>(d));
    }

    /// What runs when the timeout expires: it may resume, cancel, re-arm, or do nothing (then the
    /// default applies: `service_unavailable` down the error path, 503 unless an error stage maps
    /// it). A handler that throws sends its exception down the error path. Replaces any earlier
    /// one; false (not kept) once done.
    bool on_timeout(std::function<void(basic_async_response)> handler)
    {
        return state_->on_timeout(std::move(handler));
    }

    /// Runs when the client goes away while the request is suspended or its response is being
    /// written, before on_complete. False (not registered) once completed.
    bool on_disconnect(std::function<void()> cb) { return state_->on_disconnect(std::move(cb)); }

    /// Runs once the response was written or could not be: with nothing on success, else the
    /// unhandled error or the write error. Several run in registration order; one that throws is
    /// logged and the others still run. False (not registered) once completed.
    bool on_complete(std::function<void(std::exception_ptr)> cb) { return state_->on_complete(std::move(cb)); }

    /// Same suspension.
    friend bool operator==(const basic_async_response& a, const basic_async_response& b) noexcept
    {
        return a.state_ == b.state_;
    }

    /// A fresh suspended handle whose callbacks and timers run on `executor`. Servers call this;
    /// unit tests may too.
    static basic_async_response make(asio::any_io_executor executor, log_function log = log_to_stderr)
    {
        return make(std::move(executor), log ? std::make_shared<const log_function>(std::move(log)) : nullptr);
    }

    /// The same with a log function shared by many handles (a server's; null: no log).
    static basic_async_response make(asio::any_io_executor executor, std::shared_ptr<const log_function> log)
    {
        return basic_async_response{
            std::make_shared<detail::owning_suspension<Result>>(std::move(executor), std::move(log))};
    }

    /// The same without a log.
    static basic_async_response make(asio::any_io_executor executor, std::nullptr_t)
    {
        return make(std::move(executor), std::shared_ptr<const log_function>());
    }

private:
    friend class detail::suspension<Result>;
    friend struct detail::suspension_access;

    explicit basic_async_response(std::shared_ptr<detail::suspension<Result>> s)
        : state_(std::move(s))
    {
    }

    std::shared_ptr<detail::suspension<Result>> state_;
};

namespace detail {

// The layers below the handle (the HTTP context, the server, tests) reach its state here.
struct suspension_access {
    template <class Result>
    static const std::shared_ptr<suspension<Result>>& state(const basic_async_response<Result>& h) noexcept
    {
        return h.state_;
    }
};

/// The shared state behind `h`: what a request's stage waits on.
template <class Result>
const std::shared_ptr<suspension<Result>>& state_of(const basic_async_response<Result>& h) noexcept
{
    return suspension_access::state(h);
}

} // namespace detail
} // namespace plinth

#endif
