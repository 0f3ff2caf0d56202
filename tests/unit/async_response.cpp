//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// Unit tests of the suspended request (spec/async-response.md), without sockets. The state
// machine is tested on the handle itself; where an outcome becomes HTTP (503, Retry-After, the
// error path) the request runs through a real plinth::chain on a strand, and the test plays the
// connection: it turns the chain's result into the response that would be written, then
// completes the request's suspensions, as detail/connection.hpp does. Races run on an io_context
// served by two threads, with foreign threads calling the handle, lined up by a barrier.

#include <plinth/handler.hpp>
#include <plinth/http.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using namespace std::chrono_literals;
using plinth::async_response;
using steady = std::chrono::steady_clock;
using outcome = plinth::detail::suspension<plinth::response>::outcome;
using strings = std::vector<std::string>;

// How long a test waits for something that must happen. Never reached unless a test fails.
constexpr auto patience = 10s;

// Rounds of each race test. Each round is one request, so this is also the number of requests.
constexpr int race_rounds = 2000;

// ---------------------------------------------------------------------------------------------
// Small tools
// ---------------------------------------------------------------------------------------------

template <class E>
bool holds(const std::exception_ptr& e)
{
    try {
        if (e)
            std::rethrow_exception(e);
    }
    catch (const E&) {
        return true;
    }
    catch (...) {
    }
    return false;
}

std::string describe(const std::exception_ptr& e)
{
    if (!e)
        return "none";
    try {
        std::rethrow_exception(e);
    }
    catch (const plinth::http_error& x) {
        return "http_error(" + std::to_string(static_cast<unsigned>(x.status())) + ", " + x.what() + ")";
    }
    catch (const plinth::service_unavailable&) {
        return "service_unavailable";
    }
    catch (const plinth::client_disconnected&) {
        return "client_disconnected";
    }
    catch (const std::exception& x) {
        return std::string("std::exception(") + x.what() + ")";
    }
    catch (...) {
        return "non-standard";
    }
}

std::string header(const plinth::response& r, http::field f)
{
    auto it = r.find(f);
    return it == r.end() ? "<absent>" : std::string(it->value());
}

// A log hook that keeps the lines, for any thread.
struct log_capture {
    std::shared_ptr<std::mutex> mutex = std::make_shared<std::mutex>();
    std::shared_ptr<strings> lines = std::make_shared<strings>();

    plinth::log_function hook() const
    {
        return [m = mutex, l = lines](plinth::log_level, std::string_view line) {
            std::lock_guard lock(*m);
            l->emplace_back(line);
        };
    }

    strings get() const
    {
        std::lock_guard lock(*mutex);
        return *lines;
    }
};

// Assertions made on the io_context's threads. Catch2 v2 assertions are not thread-safe, so
// there they are recorded here, and verify() checks them on the test thread.
class remote_checks {
public:
    void expect(bool ok, const char* what)
    {
        std::lock_guard lock(mutex_);
        ++made_;
        if (!ok)
            failures_.emplace_back(what);
    }

    // Every remote check passed, and at least `at_least` were made (they really ran).
    void verify(int at_least = 1) const
    {
        std::lock_guard lock(mutex_);
        CHECK(failures_ == strings{});
        CHECK(made_ >= at_least);
    }

private:
    mutable std::mutex mutex_;
    int made_ = 0;
    strings failures_;
};

// Expects `remote_checks remote;` in scope.
#define REMOTE_CHECK(...) remote.expect(static_cast<bool>(__VA_ARGS__), #__VA_ARGS__)

// Hands values from the io_context's threads to the test thread.
template <class T>
class handoff {
public:
    void push(T v)
    {
        {
            std::lock_guard lock(mutex_);
            items_.push_back(std::move(v));
        }
        ready_.notify_all();
    }

    std::optional<T> pop(std::chrono::nanoseconds timeout = patience)
    {
        std::unique_lock lock(mutex_);
        if (!ready_.wait_for(lock, timeout, [&] { return !items_.empty(); }))
            return std::nullopt;
        T v = std::move(items_.front());
        items_.pop_front();
        return v;
    }

private:
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<T> items_;
};

// ---------------------------------------------------------------------------------------------
// Playing the connection
// ---------------------------------------------------------------------------------------------

// One request through the chain, and what the connection would do with the result.
struct request_run {
    asio::any_io_executor executor; // as a connection keeps its strand
    plinth::detail::exchange ex;
    std::optional<asio::strand<asio::io_context::executor_type>> strand; // the "connection's" strand
    std::promise<void> finished_promise;
    std::shared_future<void> finished = finished_promise.get_future().share();

    // Written on the strand before `finished` becomes ready; read by the test after.
    std::exception_ptr failure;               // what async_execute itself reported (bad_alloc only)
    bool on_strand = false;                   // the completion ran on the request's strand
    std::optional<plinth::response> response; // what would be written
    std::exception_ptr unhandled;             // the error no stage handled (on_complete's argument)
    std::string error_from;                   // "<interceptor>/<stage>" of that error
    std::size_t completed = 0;                // suspensions the connection completed

    bool wait_done(std::chrono::nanoseconds timeout = patience) const
    {
        return finished.wait_for(timeout) == std::future_status::ready;
    }
    bool done() const { return wait_done(0s); }
};

// An io_context served by `threads` threads until destroyed; requests run on their own strand.
class server_loop {
public:
    explicit server_loop(int threads = 1)
        : work_(ioc_.get_executor())
    {
        for (int i = 0; i < threads; ++i)
            threads_.emplace_back([this] { ioc_.run(); });
    }
    server_loop(const server_loop&) = delete;
    server_loop& operator=(const server_loop&) = delete;
    ~server_loop() { stop(); }

    asio::io_context& ioc() noexcept { return ioc_; }

    // Runs `ch` over a fresh GET request, as a connection does, then completes its suspensions.
    // `prepare` sees the run before the chain starts.
    request_run& start(const plinth::chain& ch, plinth::detail::suspension_policy* policy = nullptr,
                       const std::function<void(request_run&)>& prepare = {})
    {
        auto& run = *runs_.emplace_back(std::make_unique<request_run>());
        auto strand = asio::make_strand(ioc_);
        run.strand = strand;
        if (prepare)
            prepare(run);
        run.ex.request = plinth::request{http::verb::get, "/suspended", 11};
        run.executor = strand;
        run.ex.executor = &run.executor;
        run.ex.policy = policy;
        ch.async_execute(strand, plinth::detail::make_context(run.ex),
                         [&run, strand](std::exception_ptr e, plinth::context c) {
                             run.on_strand = strand.running_in_this_thread();
                             run.failure = e;
                             if (const plinth::chain_error* err = c.error()) {
                                 run.unhandled = err->exception;
                                 run.error_from = err->interceptor + "/" + std::string(plinth::to_string(err->stage));
                                 run.response = plinth::error_response(err->exception);
                             }
                             else if (c.response)
                                 run.response = std::move(*c.response);
                             else
                                 run.response = plinth::text("Not Found", http::status::not_found);
                             // "The response was written": the connection completes the suspensions, on the strand.
                             for (const auto& s : run.ex.suspensions) {
                                 s->complete(run.unhandled);
                                 ++run.completed;
                             }
                             run.ex.suspensions.clear();
                             run.finished_promise.set_value();
                         });
        return run;
    }

    // Forgets a finished run (long races would otherwise keep thousands).
    void retire(request_run& run)
    {
        runs_.remove_if([&](const auto& p) { return p.get() == &run && run.done(); });
    }

    void stop()
    {
        work_.reset();
        ioc_.stop();
        for (auto& t : threads_)
            t.join();
        threads_.clear();
    }

private:
    asio::io_context ioc_;
    std::list<std::unique_ptr<request_run>> runs_; // destroyed after the threads stop, before ioc_
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
    std::vector<std::thread> threads_;
};

// A chain of `outer` interceptors, then a handler written in the suspended style that hands its
// handle to `setup`.
plinth::chain suspending_chain(std::function<void(async_response)> setup, std::vector<plinth::interceptor> outer = {})
{
    outer.push_back(plinth::make_handler(
        "h", [setup = std::move(setup)](const plinth::request&, async_response ar) { setup(std::move(ar)); }));
    return plinth::chain(std::move(outer));
}

// An outer interceptor that counts its leave and error calls and lets errors pass.
struct watcher {
    std::atomic<int> leaves{0};
    std::atomic<int> errors{0};

    plinth::interceptor interceptor()
    {
        return {.name = "watcher",
                .leave = [this](plinth::context&) { ++leaves; },
                .error =
                    [this](plinth::context&, std::exception_ptr e) {
                        ++errors;
                        std::rethrow_exception(e);
                    }};
    }
};

// N foreign threads; each round runs actions[i] on thread i, all released by one barrier.
class racers {
public:
    explicit racers(std::size_t n)
        : start_(static_cast<std::ptrdiff_t>(n) + 1)
        , end_(static_cast<std::ptrdiff_t>(n) + 1)
    {
        for (std::size_t i = 0; i < n; ++i)
            threads_.emplace_back([this, i] { loop(i); });
    }
    racers(const racers&) = delete;
    racers& operator=(const racers&) = delete;
    ~racers()
    {
        stopping_ = true;
        start_.arrive_and_wait();
        for (auto& t : threads_)
            t.join();
    }

    // Spins `delay` (to line up a timing scenario), releases every action at once, returns when
    // all have returned.
    void run(std::vector<std::function<void()>> actions, std::chrono::nanoseconds delay = 0ns)
    {
        actions_ = std::move(actions);
        const auto until = steady::now() + delay;
        while (steady::now() < until) {}
        start_.arrive_and_wait();
        end_.arrive_and_wait();
    }

private:
    void loop(std::size_t i)
    {
        for (;;) {
            start_.arrive_and_wait();
            if (stopping_)
                return;
            actions_[i]();
            end_.arrive_and_wait();
        }
    }

    std::barrier<> start_;
    std::barrier<> end_;
    std::vector<std::function<void()>> actions_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

// The waiter's side of a suspension, as http.hpp's suspend() runs it: waits, then hands the
// outcome to `sink` (a void coroutine, so co_spawn's handler needs no default outcome).
asio::awaitable<void> take_outcome(async_response ar, std::function<void(outcome)> sink)
{
    sink(co_await plinth::detail::state_of(ar)->wait());
}

struct boom : std::runtime_error {
    using std::runtime_error::runtime_error;
};

} // namespace

// =============================================================================================
// The state machine on the handle itself
// =============================================================================================

TEST_CASE("async_response: a fresh handle is suspended, not cancelled, not done", "[async_response]")
{
    asio::io_context ioc;
    auto ar = async_response::make(ioc.get_executor());
    CHECK(ar.is_suspended());
    CHECK_FALSE(ar.is_cancelled());
    CHECK_FALSE(ar.is_done());
    CHECK_FALSE(plinth::detail::state_of(ar)->timed_out());

    // Copies share the suspension; another handle is another suspension.
    async_response copy = ar;
    CHECK(copy == ar);
    CHECK_FALSE(async_response::make(ioc.get_executor()) == ar);
    CHECK(copy.resume(plinth::text("x")));
    CHECK(ar.is_done());
    CHECK_FALSE(ar.is_suspended());
}

// The suspension keeps its waiter itself (no pending timer wait), so it must stand in for a
// pending operation: outstanding work for run(), and destroyed uncalled by the shutdown.
TEST_CASE("async_response: a waiter keeps io_context::run from returning, as a pending operation does, until a "
          "resume from another thread wakes it",
          "[async_response]")
{
    asio::io_context ioc;
    auto ar = async_response::make(ioc.get_executor(), nullptr);
    std::optional<outcome> got;
    plinth::detail::state_of(ar)->async_wait([&](outcome o) { got = std::move(o); });
    ioc.poll();
    CHECK_FALSE(ioc.stopped()); // an io_context with no work left stops in poll()
    CHECK_FALSE(got.has_value());

    std::thread resumer([ar]() mutable { ar.resume(plinth::text("woken")); });
    ioc.run(); // returns only once the waiter ran: the posted wake-up is work before the waiter's is released
    resumer.join();
    REQUIRE(got.has_value());
    REQUIRE(std::holds_alternative<plinth::response>(*got));
    CHECK(std::get<plinth::response>(*got).body() == "woken");
    CHECK(ioc.stopped());
    plinth::detail::state_of(ar)->complete(nullptr);
}

TEST_CASE("async_response: a resume from outside the strand runs one handler there, and a second one to stop the "
          "timer only when a timeout was set",
          "[async_response]")
{
    // The wake-up is the waiter's handler; a suspension that never set a timeout has no timer to
    // cancel, and posting for it anyway cost every resume a second trip through the io_context.
    for (const bool timeout : {false, true}) {
        asio::io_context ioc;
        auto ar = async_response::make(ioc.get_executor(), nullptr);
        bool woken = false;
        plinth::detail::state_of(ar)->async_wait([&](outcome) { woken = true; });
        if (timeout) {
            CHECK(ar.set_timeout(600s));
            ioc.poll(); // arms the timer
            ioc.restart();
        }
        CHECK(ar.resume(plinth::text("x")));      // not inside run(): everything it starts is posted
        CHECK(ioc.poll() == (timeout ? 3u : 1u)); // (with a timer: its cancel, then the cancelled wait's handler)
        CHECK(woken);
        plinth::detail::state_of(ar)->complete(nullptr);
    }
}

namespace {
// The connection's side of an exchange, as begin_suspension sees it: it owns one exchange.
struct owner_of_one final : plinth::detail::response_sink {
    const plinth::detail::exchange* own = nullptr;
    void watch_for_disconnect() override {}
    bool stopping() const noexcept override { return false; }
    bool owns(const plinth::detail::exchange& ex) const noexcept override { return &ex == own; }
};
} // namespace

TEST_CASE("async_response: a suspension borrows the strand of its connection's own exchange only; one made over a "
          "copy of it owns its executor and outlives the copy",
          "[async_response]")
{
    using owning = plinth::detail::owning_suspension<plinth::response>;
    asio::io_context ioc;
    owner_of_one owner;
    asio::any_io_executor executor = ioc.get_executor();
    plinth::detail::exchange ex;
    ex.executor = &executor;
    ex.owner = &owner;
    owner.own = &ex;
    std::optional<async_response> kept;
    auto setup = [&](async_response ar) { kept = ar; };

    plinth::context ctx = plinth::detail::make_context(ex);
    auto borrowing = plinth::detail::begin_suspension(ctx, setup);
    CHECK(dynamic_cast<owning*>(borrowing.get()) == nullptr);
    borrowing->release(); // as the connection does before it goes
    ex.suspensions.clear();

    std::shared_ptr<plinth::detail::suspension<plinth::response>> state;
    {
        plinth::detail::exchange copy = ex; // same owner, but not the exchange it owns
        plinth::context inner = plinth::detail::make_context(copy);
        state = plinth::detail::begin_suspension(inner, setup);
        CHECK(dynamic_cast<owning*>(state.get()) != nullptr);
    } // the copy goes with the suspension still pending: nothing it lent may be used now
    bool woken = false;
    state->async_wait([&](outcome o) { woken = std::holds_alternative<plinth::response>(o); });
    CHECK(kept->resume(plinth::text("x"))); // ASan would see a borrowed executor used after the copy went
    ioc.poll();
    CHECK(woken);
    state->complete(nullptr);
}

namespace {
asio::awaitable<void> wait_owning(async_response ar, std::shared_ptr<int> /*owned*/, bool* called)
{
    co_await plinth::detail::state_of(ar)->wait();
    *called = true;
}
} // namespace

TEST_CASE("async_response: destroying the io_context destroys a waiter uncalled and frees what it owned (the "
          "suspension included); a handle kept after it answers false",
          "[async_response]")
{
    std::optional<async_response> kept_callback, kept_coroutine;
    std::weak_ptr<int> owned_by_callback, owned_by_coroutine;
    std::weak_ptr<plinth::detail::suspension<plinth::response>> callback_state, coroutine_state;
    bool callback_called = false, coroutine_called = false;
    {
        asio::io_context ioc;
        // The coroutine's slot, served by the suspension while it waits. Gone before the
        // io_context (declared after it), as is usual: the shutdown must not touch it.
        asio::cancellation_signal signal;
        // The callback owns its suspension, as a suspended handler's connection does: a cycle
        // that only the io_context's shutdown can break.
        auto a = async_response::make(ioc.get_executor(), nullptr);
        auto token = std::make_shared<int>(1);
        owned_by_callback = token;
        callback_state = plinth::detail::state_of(a);
        plinth::detail::state_of(a)->async_wait(
            [state = plinth::detail::state_of(a), token, &callback_called](outcome) { callback_called = true; });
        kept_callback = a;

        auto b = async_response::make(ioc.get_executor(), nullptr);
        auto other = std::make_shared<int>(2);
        owned_by_coroutine = other;
        coroutine_state = plinth::detail::state_of(b);
        asio::co_spawn(ioc, wait_owning(b, other, &coroutine_called),
                       asio::bind_cancellation_slot(signal.slot(), asio::detached));
        kept_coroutine = b;
        ioc.poll();
        CHECK_FALSE(ioc.stopped());
    }
    CHECK_FALSE(callback_called);
    CHECK_FALSE(coroutine_called);
    CHECK(owned_by_callback.expired());
    CHECK(owned_by_coroutine.expired());
    for (auto* kept : {&kept_callback, &kept_coroutine}) {
        CHECK((*kept)->is_done());
        CHECK_FALSE((*kept)->resume(plinth::text("too late")));
        CHECK_FALSE((*kept)->cancel());
        CHECK_FALSE((*kept)->set_timeout(1s));
    }
    kept_callback.reset();
    kept_coroutine.reset();
    CHECK(callback_state.expired());
    CHECK(coroutine_state.expired());
}

TEST_CASE("async_response: a waiter woken but not yet run when its io_context goes is destroyed uncalled, and its "
          "slot (gone with it) is not touched when the kept handle goes",
          "[async_response]")
{
    std::optional<async_response> kept;
    bool called = false;
    {
        asio::io_context ioc;
        asio::cancellation_signal signal; // destroyed before the io_context
        auto ar = async_response::make(ioc.get_executor(), nullptr);
        asio::co_spawn(ioc, wait_owning(ar, nullptr, &called),
                       asio::bind_cancellation_slot(signal.slot(), asio::detached));
        ioc.poll();                                        // waiting
        CHECK(ar.resume(plinth::text("never delivered"))); // the wake-up is posted, never run
        kept = ar;
    }
    CHECK_FALSE(called);
    CHECK(kept->is_done());
    CHECK_FALSE(kept->resume(plinth::text("too late")));
    kept.reset(); // the suspension goes here: under ASan, a slot cleared now would be a use after free
}

TEST_CASE("async_response: a second wait while one is pending throws std::logic_error and leaves the first waiting",
          "[async_response]")
{
    asio::io_context ioc;
    auto ar = async_response::make(ioc.get_executor(), nullptr);
    int first = 0, second = 0;
    plinth::detail::state_of(ar)->async_wait([&](outcome) { ++first; });
    CHECK_THROWS_AS(plinth::detail::state_of(ar)->async_wait([&](outcome) { ++second; }), std::logic_error);
    CHECK(ar.resume(plinth::text("once")));
    ioc.run();
    CHECK(first == 1);
    CHECK(second == 0);
    plinth::detail::state_of(ar)->complete(nullptr);
}
TEST_CASE("async_response: is_suspended / is_cancelled / is_done follow the table after resume, timeout and cancel",
          "[async_response]")
{
    asio::io_context ioc;
    auto strand = asio::make_strand(ioc);
    log_capture logs;

    // Each suspension's waiter, as the HTTP layer runs it.
    auto waited = std::make_shared<std::vector<outcome>>();
    auto await = [&](const async_response& ar) {
        asio::co_spawn(strand, take_outcome(ar, [waited](outcome o) { waited->push_back(std::move(o)); }),
                       [](std::exception_ptr e) { REQUIRE_FALSE(e); });
    };

    auto resumed = async_response::make(strand, logs.hook());
    auto timed_out = async_response::make(strand, logs.hook());
    auto cancelled = async_response::make(strand, logs.hook());
    await(resumed);
    await(timed_out);
    await(cancelled);

    CHECK(resumed.resume(plinth::text("resumed")));
    CHECK(timed_out.set_timeout(1ms));
    CHECK(cancelled.cancel());
    ioc.run_for(patience); // returns once every waiter has its outcome and the timer fired
    REQUIRE(ioc.stopped());
    REQUIRE(waited->size() == 3);

    // after resume: F/F/T
    CHECK_FALSE(resumed.is_suspended());
    CHECK_FALSE(resumed.is_cancelled());
    CHECK(resumed.is_done());
    // after timeout: F/F/T
    CHECK(plinth::detail::state_of(timed_out)->timed_out());
    CHECK_FALSE(timed_out.is_suspended());
    CHECK_FALSE(timed_out.is_cancelled());
    CHECK(timed_out.is_done());
    // after cancel: F/T/T
    CHECK_FALSE(cancelled.is_suspended());
    CHECK(cancelled.is_cancelled());
    CHECK(cancelled.is_done());

    // What the waiters got: the response, service_unavailable, a cancellation.
    std::size_t responses = 0, timeouts = 0, cancellations = 0;
    for (const auto& o : *waited) {
        if (auto* r = std::get_if<plinth::response>(&o)) {
            ++responses;
            CHECK(r->body() == "resumed");
        }
        else if (auto* e = std::get_if<std::exception_ptr>(&o)) {
            ++timeouts;
            CHECK(holds<plinth::service_unavailable>(*e));
        }
        else if (auto* c = std::get_if<plinth::detail::cancellation>(&o)) {
            ++cancellations;
            CHECK(std::holds_alternative<std::monostate>(c->retry_after));
        }
    }
    CHECK(responses == 1);
    CHECK(timeouts == 1);
    CHECK(cancellations == 1);

    // The rest of the table: resume / resume(error) / set_timeout after done are false, cancel
    // after resume or timeout false, cancel after cancel true; nothing changes.
    for (auto* ar : {&resumed, &timed_out}) {
        CHECK_FALSE(ar->resume(plinth::text("again")));
        CHECK_FALSE(ar->resume_error(std::runtime_error("again")));
        CHECK_FALSE(ar->cancel());
        CHECK_FALSE(ar->cancel(5s));
        CHECK_FALSE(ar->set_timeout(1s));
        CHECK_FALSE(ar->is_cancelled());
        CHECK(ar->is_done());
    }
    CHECK_FALSE(cancelled.resume(plinth::text("again")));
    CHECK_FALSE(cancelled.resume_error(std::runtime_error("again")));
    CHECK_FALSE(cancelled.set_timeout(1s));
    CHECK(cancelled.cancel());
    CHECK(cancelled.cancel(9s));
    CHECK(cancelled.is_cancelled());
    CHECK(cancelled.is_done());
    CHECK(logs.get().empty());

    for (auto* ar : {&resumed, &timed_out, &cancelled})
        plinth::detail::state_of(*ar)->complete(nullptr);
}

TEST_CASE("async_response: resume with a null exception_ptr throws std::invalid_argument and changes nothing",
          "[async_response]")
{
    asio::io_context ioc;
    auto ar = async_response::make(ioc.get_executor());
    CHECK_THROWS_AS(ar.resume(std::exception_ptr{}), std::invalid_argument);
    CHECK(ar.is_suspended());
    CHECK_FALSE(ar.is_done());
    CHECK_FALSE(ar.is_cancelled());
    // Still resumable, and the resume is what the waiter gets.
    CHECK(ar.resume(plinth::text("after the bad call")));
    std::optional<outcome> got;
    asio::co_spawn(ioc, take_outcome(ar, [&](outcome o) { got = std::move(o); }), asio::detached);
    ioc.run();
    REQUIRE(got.has_value());
    REQUIRE(std::holds_alternative<plinth::response>(*got));
    CHECK(std::get<plinth::response>(*got).body() == "after the bad call");
    // After done the null pointer is still rejected, not silently ignored.
    CHECK_THROWS_AS(ar.resume(std::exception_ptr{}), std::invalid_argument);
    plinth::detail::state_of(ar)->complete(nullptr);
}

namespace {
// A result that cannot be boxed: the suspension keeps a result on the heap until its waiter
// takes it, and this one's operator new always fails.
struct unboxable {
    int value = 0;
    static void* operator new(std::size_t) { throw std::bad_alloc(); }
    static void operator delete(void* p) noexcept { ::operator delete(p); }
};

asio::awaitable<void> wait_into(plinth::basic_async_response<unboxable> ar,
                                std::optional<plinth::detail::suspension<unboxable>::outcome>* got)
{
    *got = co_await plinth::detail::state_of(ar)->wait();
}
} // namespace

TEST_CASE("async_response: a resume with no memory left for its result still ends the suspension, with bad_alloc",
          "[async_response]")
{
    asio::io_context ioc;
    using handle = plinth::basic_async_response<unboxable>;
    auto ar = handle::make(ioc.get_executor(), nullptr);
    CHECK(ar.resume(unboxable{7})); // it won: the request goes down the error path, not nowhere
    CHECK(ar.is_done());
    CHECK_FALSE(ar.resume(unboxable{8})); // a late call boxes nothing and changes nothing
    std::optional<plinth::detail::suspension<unboxable>::outcome> got;
    asio::co_spawn(ioc, wait_into(ar, &got), asio::detached);
    ioc.run();
    REQUIRE(got.has_value());
    REQUIRE(std::holds_alternative<std::exception_ptr>(*got));
    CHECK(holds<std::bad_alloc>(std::get<std::exception_ptr>(*got)));
    plinth::detail::state_of(ar)->complete(nullptr);
}

TEST_CASE("async_response: cancel(time_point) carries the time point; cancel(seconds) the seconds", "[async_response]")
{
    asio::io_context ioc;
    const auto at = std::chrono::system_clock::time_point{std::chrono::seconds{784111777}};
    auto ar = async_response::make(ioc.get_executor());
    CHECK(ar.cancel(at));
    CHECK(ar.cancel(30s)); // the first Retry-After stays
    std::optional<outcome> got;
    asio::co_spawn(ioc, take_outcome(ar, [&](outcome o) { got = std::move(o); }), asio::detached);
    ioc.run();
    REQUIRE(got.has_value());
    auto* c = std::get_if<plinth::detail::cancellation>(&*got);
    REQUIRE(c != nullptr);
    auto* tp = std::get_if<std::chrono::system_clock::time_point>(&c->retry_after);
    REQUIRE(tp != nullptr);
    CHECK(*tp == at);
    CHECK(header(plinth::detail::cancelled_response(*c), http::field::retry_after) == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(header(plinth::detail::cancelled_response(plinth::detail::cancellation{42s}), http::field::retry_after)
          == "42");
    CHECK(header(plinth::detail::cancelled_response(plinth::detail::cancellation{}), http::field::retry_after)
          == "<absent>");
    plinth::detail::state_of(ar)->complete(nullptr);
}

TEST_CASE("async_response: on_complete fires once after complete(), in registration order; a throwing one is "
          "logged and the rest still run",
          "[async_response]")
{
    asio::io_context ioc;
    log_capture logs;
    auto ar = async_response::make(ioc.get_executor(), logs.hook());
    strings calls;
    std::vector<std::exception_ptr> args;
    CHECK(ar.on_complete([&](std::exception_ptr e) {
        calls.push_back("first");
        args.push_back(e);
    }));
    CHECK(ar.on_complete([&](std::exception_ptr) {
        calls.push_back("second throws");
        throw boom("second callback failed");
    }));
    CHECK(ar.on_complete([&](std::exception_ptr e) {
        calls.push_back("third");
        args.push_back(e);
    }));
    CHECK(ar.on_complete([&](std::exception_ptr) {
        calls.push_back("fourth throws an int");
        throw 42;
    }));
    CHECK(ar.on_complete([&](std::exception_ptr) {
        calls.push_back("fifth");
        // No lock is held while callbacks run: the handle can be used from inside one.
        CHECK(ar.is_done());
        CHECK_FALSE(ar.on_complete([](std::exception_ptr) {}));
        CHECK_FALSE(ar.resume(plinth::text("from a callback")));
    }));
    CHECK(ar.on_disconnect([&] { calls.push_back("disconnect"); }));

    CHECK(ar.resume_error(boom("unmapped")));
    CHECK(calls.empty()); // nothing fires before the response is written

    const auto error = std::make_exception_ptr(boom("unmapped"));
    plinth::detail::state_of(ar)->complete(error);
    CHECK(calls == strings{"first", "second throws", "third", "fourth throws an int", "fifth"});
    REQUIRE(args.size() == 2);
    CHECK(args[0] == error);
    CHECK(args[1] == error);
    const strings lines = logs.get();
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].find("on_complete") != std::string::npos);
    CHECK(lines[0].find("second callback failed") != std::string::npos);
    CHECK(lines[1].find("on_complete") != std::string::npos);
    CHECK(lines[1].find("non-standard") != std::string::npos);

    // Exactly once: a second complete, or a disconnect after it, fires nothing.
    plinth::detail::state_of(ar)->complete(nullptr);
    plinth::detail::state_of(ar)->disconnected(std::make_exception_ptr(std::runtime_error("late")));
    CHECK(calls.size() == 5);
    CHECK(logs.get().size() == 2);
}

TEST_CASE("async_response: callbacks registered after completion are refused and never run", "[async_response]")
{
    asio::io_context ioc;
    auto ar = async_response::make(ioc.get_executor());
    int runs = 0;
    CHECK(ar.cancel());
    // Done but not yet completed: still accepted, they fire at completion.
    CHECK(ar.on_complete([&](std::exception_ptr) { ++runs; }));
    plinth::detail::state_of(ar)->complete(nullptr);
    CHECK(runs == 1);
    CHECK_FALSE(ar.on_complete([&](std::exception_ptr) { runs += 100; }));
    CHECK_FALSE(ar.on_disconnect([&] { runs += 1000; }));
    plinth::detail::state_of(ar)->complete(nullptr);
    plinth::detail::state_of(ar)->disconnected(nullptr);
    CHECK(runs == 1);
}

TEST_CASE("async_response: disconnected() fires on_disconnect before on_complete(error); the waiter sees a "
          "disconnection and a later resume is false",
          "[async_response]")
{
    asio::io_context ioc;
    auto strand = asio::make_strand(ioc);
    log_capture logs;
    auto ar = async_response::make(strand, logs.hook());
    strings calls;
    CHECK(ar.on_complete([&](std::exception_ptr e) { calls.push_back("complete: " + describe(e)); }));
    CHECK(ar.on_disconnect([&] { calls.push_back("disconnect 1"); }));
    CHECK(ar.on_disconnect([&] { calls.push_back("disconnect 2"); }));
    CHECK(ar.set_timeout(600s));

    // The connection waits with a cancellation slot; the client going away cancels the wait.
    asio::cancellation_signal client_gone;
    std::optional<outcome> got;
    asio::co_spawn(strand, take_outcome(ar, [&](outcome o) { got = std::move(o); }),
                   asio::bind_cancellation_slot(client_gone.slot(), [&](std::exception_ptr e) {
                       REQUIRE_FALSE(e);
                       plinth::detail::state_of(ar)->disconnected(
                           std::make_exception_ptr(plinth::client_disconnected(asio::error::connection_reset)));
                   }));
    asio::steady_timer gone(strand, 10ms);
    gone.async_wait([&](boost::system::error_code ec) {
        REQUIRE_FALSE(ec);
        client_gone.emit(asio::cancellation_type::terminal);
    });
    ioc.run_for(patience); // stops as soon as no timer is left: the 600 s one was released
    REQUIRE(ioc.stopped());

    REQUIRE(got.has_value());
    CHECK(std::holds_alternative<plinth::detail::disconnection>(*got));
    CHECK(calls == strings{"disconnect 1", "disconnect 2", "complete: client_disconnected"});
    CHECK(ar.is_done());
    CHECK_FALSE(ar.is_cancelled());
    CHECK_FALSE(ar.resume(plinth::text("too late")));
    CHECK_FALSE(ar.cancel());
    CHECK_FALSE(ar.set_timeout(1s));
    CHECK(calls.size() == 3);
    CHECK(logs.get().empty());
}

TEST_CASE("async_response: completion releases the timer and the timeout handler at once", "[async_response]")
{
    asio::io_context ioc;
    auto strand = asio::make_strand(ioc);
    auto ar = async_response::make(strand);
    int handler_runs = 0;
    // The handler holds a copy of the handle: a cycle that completion must break.
    ar.on_timeout([&handler_runs, keep = ar](async_response) { ++handler_runs; });
    CHECK(ar.set_timeout(600s));
    ioc.poll(); // arms the timer on the strand
    CHECK(plinth::detail::state_of(ar).use_count() > 1);
    CHECK(ar.resume(plinth::text("done")));
    plinth::detail::state_of(ar)->complete(nullptr);
    ioc.restart();
    ioc.run_for(patience); // would wait 600 s for a timer that was kept
    REQUIRE(ioc.stopped());
    CHECK(plinth::detail::state_of(ar).use_count() == 1); // only this handle: timer, handler and waiter let go
    CHECK(handler_runs == 0);
}

TEST_CASE("async_response: a timeout handler set after completion is not kept (no cycle through the handle)",
          "[async_response]")
{
    asio::io_context ioc;
    auto ar = async_response::make(asio::make_strand(ioc));
    CHECK(ar.resume(plinth::text("done")));
    plinth::detail::state_of(ar)->complete(nullptr);
    ioc.run(); // lets the strand drop what it held
    REQUIRE(plinth::detail::state_of(ar).use_count() == 1);
    // A worker that still holds the handle registers a handler capturing it: completion has
    // released everything, so the handle must not start holding itself.
    ar.on_timeout([keep = ar](async_response) {});
    CHECK_FALSE(ar.set_timeout(1ms));
    CHECK(plinth::detail::state_of(ar).use_count() == 1);
}

// =============================================================================================
// Through the HTTP chain: a suspended handler, the connection played by the test
// =============================================================================================

TEST_CASE("async_response: resume(x) wins once, the client gets x; a second resume or resume(error) is false",
          "[async_response]")
{
    handoff<async_response> handles;
    std::atomic<int> completes{0};
    std::exception_ptr completed_with = std::make_exception_ptr(std::logic_error("not called"));
    watcher w;
    auto ch = suspending_chain(
        [&](async_response ar) {
            ar.on_complete([&](std::exception_ptr e) {
                ++completes;
                completed_with = e;
            });
            handles.push(ar);
        },
        {w.interceptor()});
    server_loop loop(1);
    auto& run = loop.start(ch);
    auto ar = handles.pop();
    REQUIRE(ar.has_value());
    CHECK(ar->is_suspended());
    CHECK_FALSE(run.done()); // suspended: the chain waits

    CHECK(ar->resume(plinth::text("first", http::status::accepted)));
    CHECK_FALSE(ar->resume(plinth::text("second")));
    CHECK_FALSE(ar->resume_error(plinth::http_error(http::status::conflict)));
    CHECK_FALSE(ar->resume(std::make_exception_ptr(std::runtime_error("third"))));

    REQUIRE(run.wait_done());
    CHECK_FALSE(run.failure);
    CHECK(run.on_strand);
    REQUIRE(run.response.has_value());
    CHECK(run.response->result() == http::status::accepted);
    CHECK(run.response->body() == "first");
    CHECK_FALSE(run.unhandled);
    CHECK(run.completed == 1);
    CHECK(completes == 1);
    CHECK_FALSE(completed_with);
    CHECK(w.leaves == 1);
    CHECK(w.errors == 0);
    // Once the connection is done with it, the handle answers false.
    CHECK_FALSE(ar->resume(plinth::text("after completion")));
    CHECK(ar->is_done());
}

TEST_CASE("async_response: plinth::suspend inside a stage of one's own: the stage goes on after the resume, "
          "and a cancel ends it with 503",
          "[async_response]")
{
    // make_handler's suspended style is a callback stage; a coroutine stage suspends through
    // plinth::suspend and is awaited like any other.
    handoff<async_response> handles;
    plinth::chain ch{{.name = "own", .enter = [&](plinth::context& c) -> asio::awaitable<void> {
                          co_await plinth::suspend(c, [&](async_response ar) { handles.push(ar); });
                          c.response->set("X-After", "the stage went on");
                      }}};
    server_loop loop(1);

    auto& resumed = loop.start(ch);
    auto ar = handles.pop();
    REQUIRE(ar.has_value());
    CHECK_FALSE(resumed.done());
    CHECK(ar->resume(plinth::text("resumed")));
    REQUIRE(resumed.wait_done());
    REQUIRE(resumed.response.has_value());
    CHECK(resumed.response->body() == "resumed");
    CHECK(std::string((*resumed.response)["X-After"]) == "the stage went on");
    CHECK(resumed.completed == 1);

    auto& cancelled = loop.start(ch);
    ar = handles.pop();
    REQUIRE(ar.has_value());
    CHECK(ar->cancel(std::chrono::seconds(7)));
    REQUIRE(cancelled.wait_done());
    REQUIRE(cancelled.response.has_value());
    CHECK(cancelled.response->result() == http::status::service_unavailable);
    CHECK(header(*cancelled.response, http::field::retry_after) == "7");
}

TEST_CASE("async_response: cancel() answers 503 without Retry-After; cancel(20s) then cancel(40s) are both true "
          "and Retry-After stays 20",
          "[async_response]")
{
    remote_checks remote;
    handoff<async_response> handles;
    std::atomic<int> completes{0};
    watcher w;
    auto ch = suspending_chain(
        [&](async_response ar) {
            ar.on_complete([&](std::exception_ptr e) {
                REMOTE_CHECK(!e);
                ++completes;
            });
            handles.push(ar);
        },
        {w.interceptor()});
    server_loop loop(1);

    SECTION("cancel()")
    {
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        CHECK(ar->cancel());
        CHECK(ar->is_cancelled());
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::service_unavailable);
        CHECK(header(*run.response, http::field::retry_after) == "<absent>");
        CHECK_FALSE(run.unhandled);
    }
    SECTION("cancel(20s) then cancel(40s)")
    {
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        CHECK(ar->cancel(20s));
        CHECK(ar->cancel(40s));
        CHECK(ar->cancel());
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::service_unavailable);
        CHECK(header(*run.response, http::field::retry_after) == "20");
        CHECK_FALSE(run.unhandled);
    }
    // A cancel passes through the leave stages, not the error stages.
    CHECK(w.leaves == 1);
    CHECK(w.errors == 0);
    CHECK(completes == 1);
    remote.verify();
}

TEST_CASE("async_response: cancel(time_point) sends Retry-After as an HTTP-date, correct to the second",
          "[async_response]")
{
    using sys = std::chrono::system_clock;
    handoff<async_response> handles;
    auto ch = suspending_chain([&](async_response ar) { handles.push(ar); });
    server_loop loop(1);

    auto [when, expected] = GENERATE(table<sys::time_point, std::string>({
        {sys::time_point{784111777s}, "Sun, 06 Nov 1994 08:49:37 GMT"},
        {sys::time_point{784111777s} + 999ms, "Sun, 06 Nov 1994 08:49:37 GMT"}, // truncated, not rounded up
        {sys::time_point{951868799s}, "Tue, 29 Feb 2000 23:59:59 GMT"},
        {sys::time_point{4102444800s}, "Fri, 01 Jan 2100 00:00:00 GMT"},
    }));
    CAPTURE(expected);
    auto& run = loop.start(ch);
    auto ar = handles.pop();
    REQUIRE(ar.has_value());
    CHECK(ar->cancel(when));
    CHECK(ar->cancel(sys::time_point{0s})); // the first Retry-After stays
    REQUIRE(run.wait_done());
    REQUIRE(run.response.has_value());
    CHECK(run.response->result() == http::status::service_unavailable);
    CHECK(header(*run.response, http::field::retry_after) == expected);
}

TEST_CASE("async_response: resume with an http_error keeps its status; an unmapped exception gives 500 and "
          "on_complete receives it",
          "[async_response]")
{
    handoff<async_response> handles;
    std::atomic<int> completes{0};
    std::exception_ptr completed_with;
    watcher w;
    auto ch = suspending_chain(
        [&](async_response ar) {
            ar.on_complete([&](std::exception_ptr e) {
                ++completes;
                completed_with = e;
            });
            handles.push(ar);
        },
        {w.interceptor()});
    server_loop loop(1);
    auto& run = loop.start(ch);
    auto ar = handles.pop();
    REQUIRE(ar.has_value());

    SECTION("http_error")
    {
        CHECK(ar->resume_error(plinth::http_error(http::status::not_found, "no such order")));
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::not_found);
        CHECK(run.response->body() == "no such order");
        CHECK(holds<plinth::http_error>(completed_with));
    }
    SECTION("an unmapped exception")
    {
        CHECK(ar->resume(std::make_exception_ptr(boom("database down"))));
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::internal_server_error);
        CHECK(run.response->body().find("database") == std::string::npos);
        REQUIRE(holds<boom>(completed_with));
        CHECK(describe(completed_with) == "std::exception(database down)");
    }
    // Like an exception thrown by the handler's stage: the error stages see it.
    CHECK(run.error_from == "h/enter");
    CHECK(run.unhandled == completed_with);
    CHECK(w.errors == 1);
    CHECK(w.leaves == 0);
    CHECK(completes == 1);
}

TEST_CASE("async_response: a timeout without handler answers 503; an error stage mapping service_unavailable "
          "to 408 is honoured",
          "[async_response]")
{
    remote_checks remote;
    handoff<async_response> handles;
    std::atomic<int> completes{0};
    std::exception_ptr completed_with;
    std::atomic<int> mapper_errors{0}, mapper_leaves{0};
    plinth::interceptor mapper{.name = "map timeouts to 408",
                               .leave = [&](plinth::context&) { ++mapper_leaves; },
                               .error =
                                   [&](plinth::context& c, std::exception_ptr e) {
                                       ++mapper_errors;
                                       try {
                                           std::rethrow_exception(e);
                                       }
                                       catch (const plinth::service_unavailable&) {
                                           c.response = plinth::text("timed out", http::status::request_timeout);
                                       }
                                   }};
    auto setup = [&](async_response ar) {
        ar.on_complete([&](std::exception_ptr e) {
            ++completes;
            completed_with = e;
        });
        REMOTE_CHECK(ar.set_timeout(30ms));
        handles.push(ar);
    };
    server_loop loop(1);

    SECTION("unmapped: 503")
    {
        auto ch = suspending_chain(setup);
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::service_unavailable);
        CHECK(header(*run.response, http::field::retry_after) == "<absent>");
        CHECK(holds<plinth::service_unavailable>(run.unhandled));
        CHECK(run.error_from == "h/enter");
        CHECK(holds<plinth::service_unavailable>(completed_with));
        CHECK(plinth::detail::state_of(*ar)->timed_out());
        CHECK_FALSE(ar->is_cancelled());
        CHECK(mapper_errors == 0);
    }
    SECTION("mapped to 408 by an error stage")
    {
        auto ch = suspending_chain(setup, {mapper});
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::request_timeout);
        CHECK(run.response->body() == "timed out");
        CHECK_FALSE(run.unhandled);
        CHECK_FALSE(completed_with);
        CHECK(plinth::detail::state_of(*ar)->timed_out());
        CHECK(mapper_errors == 1);
        CHECK(mapper_leaves == 0);
        loop.stop(); // the chain is local to this section
    }
    CHECK(completes == 1);
    remote.verify();
}

TEST_CASE("async_response: set_timeout replaces the earlier timer and counts from now; 0 disarms it for good",
          "[async_response]")
{
    remote_checks remote;
    handoff<async_response> handles;
    std::atomic<int> handler_runs{0};
    server_loop loop(1);

    SECTION("set_timeout(600s) then set_timeout(200ms) fires at about 200 ms")
    {
        auto ch = suspending_chain([&](async_response ar) {
            ar.on_timeout([&](async_response) { ++handler_runs; }); // does nothing: the default applies
            REMOTE_CHECK(ar.set_timeout(600s));
            REMOTE_CHECK(ar.set_timeout(200ms));
            handles.push(ar);
        });
        const auto t0 = steady::now();
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        REQUIRE(run.wait_done());
        const auto elapsed = steady::now() - t0;
        CHECK(handler_runs == 1);
        CHECK(plinth::detail::state_of(*ar)->timed_out());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::service_unavailable);
        CHECK(holds<plinth::service_unavailable>(run.unhandled));
        CHECK(elapsed >= 190ms);
        CHECK(elapsed < 5s);
        loop.stop();
    }
    SECTION("set_timeout(0) after set_timeout(100ms): never fires; a resume at 300 ms is what the client gets")
    {
        auto later = std::make_shared<asio::steady_timer>(loop.ioc());
        std::atomic<int> resumes{0};
        auto ch = suspending_chain([&](async_response ar) {
            ar.on_timeout([&](async_response) { ++handler_runs; });
            REMOTE_CHECK(ar.set_timeout(100ms));
            REMOTE_CHECK(ar.set_timeout(0ms));
            later->expires_after(300ms);
            later->async_wait([ar, &resumes](boost::system::error_code ec) mutable {
                if (!ec && ar.resume(plinth::text("resumed at 300 ms")))
                    ++resumes;
            });
            handles.push(ar);
        });
        const auto t0 = steady::now();
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        REQUIRE(run.wait_done());
        const auto elapsed = steady::now() - t0;
        CHECK(resumes == 1);
        CHECK(handler_runs == 0);
        CHECK_FALSE(plinth::detail::state_of(*ar)->timed_out());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::ok);
        CHECK(run.response->body() == "resumed at 300 ms");
        CHECK(elapsed >= 290ms);
        loop.stop();
    }
    SECTION("a negative duration also means never")
    {
        auto ch = suspending_chain([&](async_response ar) {
            ar.on_timeout([&](async_response) { ++handler_runs; });
            REMOTE_CHECK(ar.set_timeout(20ms));
            REMOTE_CHECK(ar.set_timeout(-5s));
            handles.push(ar);
        });
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        // Long enough for the disarmed 20 ms timer to have fired, had it been kept.
        asio::steady_timer probe(loop.ioc(), 100ms);
        std::promise<void> probed;
        probe.async_wait([&](boost::system::error_code) { probed.set_value(); });
        REQUIRE(probed.get_future().wait_for(patience) == std::future_status::ready);
        CHECK_FALSE(run.done());
        CHECK(ar->is_suspended());
        CHECK(ar->resume(plinth::text("resumed")));
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->body() == "resumed");
        CHECK(handler_runs == 0);
        loop.stop();
    }
    remote.verify();
}

TEST_CASE("async_response: set_timeout from another thread, then from the strand: the later call is in force",
          "[async_response]")
{
    remote_checks remote;
    handoff<async_response> handles;
    std::atomic<int> handler_runs{0};
    auto ch = suspending_chain([&](async_response ar) {
        ar.on_timeout([&](async_response) { ++handler_runs; });
        // A worker extends the deadline to 10 s and returns; then, later, the stage (on the
        // strand) sets 50 ms. The 50 ms call is the last one: it replaces the 10 s one.
        std::thread worker([&remote, ar]() mutable { REMOTE_CHECK(ar.set_timeout(10s)); });
        worker.join();
        REMOTE_CHECK(ar.set_timeout(50ms));
        handles.push(ar);
    });
    server_loop loop(1);
    const auto t0 = steady::now();
    auto& run = loop.start(ch);
    auto ar = handles.pop();
    REQUIRE(ar.has_value());
    const bool timed_out_in_time = run.wait_done(3s);
    CHECK(timed_out_in_time);
    if (!timed_out_in_time) { // the 50 ms timer was lost: finish the request, to end cleanly
        CHECK(ar->is_suspended());
        CHECK(ar->resume(plinth::text("rescued")));
        REQUIRE(run.wait_done());
    }
    else {
        CHECK(steady::now() - t0 < 5s);
        CHECK(handler_runs == 1);
        CHECK(plinth::detail::state_of(*ar)->timed_out());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::service_unavailable);
    }
    remote.verify(2);
}

TEST_CASE("async_response: set_timeout after done returns false and no handler runs", "[async_response]")
{
    remote_checks remote;
    handoff<async_response> handles;
    std::atomic<int> handler_runs{0};
    auto ch = suspending_chain([&](async_response ar) {
        ar.on_timeout([&](async_response) { ++handler_runs; });
        REMOTE_CHECK(ar.set_timeout(200ms)); // disarmed by the resume below
        handles.push(ar);
    });
    server_loop loop(1);
    auto& run = loop.start(ch);
    auto ar = handles.pop();
    REQUIRE(ar.has_value());
    CHECK(ar->resume(plinth::text("done")));
    CHECK_FALSE(ar->set_timeout(10ms));
    CHECK_FALSE(ar->set_timeout(1ms));
    REQUIRE(run.wait_done());
    CHECK_FALSE(ar->set_timeout(1ms)); // completed too

    asio::steady_timer probe(loop.ioc(), 300ms); // past every deadline ever set
    std::promise<void> probed;
    probe.async_wait([&](boost::system::error_code) { probed.set_value(); });
    REQUIRE(probed.get_future().wait_for(patience) == std::future_status::ready);
    CHECK(handler_runs == 0);
    REQUIRE(run.response.has_value());
    CHECK(run.response->body() == "done");
    CHECK_FALSE(plinth::detail::state_of(*ar)->timed_out());
    remote.verify();
}

TEST_CASE("async_response: a handler re-arming by 50 ms on every expiry keeps the request pending; a later resume "
          "delivers",
          "[async_response]")
{
    remote_checks remote;
    constexpr int expiries_wanted = 6;
    handoff<async_response> handles;
    std::atomic<int> expiries{0};
    std::promise<void> enough;
    request_run* current = nullptr;
    auto ch = suspending_chain([&](async_response ar) {
        ar.on_timeout([&](async_response h) {
            REMOTE_CHECK(current->strand->running_in_this_thread()); // on the connection's strand
            REMOTE_CHECK(h.set_timeout(50ms));
            if (++expiries == expiries_wanted)
                enough.set_value();
        });
        REMOTE_CHECK(ar.set_timeout(50ms));
        handles.push(ar);
    });
    server_loop loop(2); // two threads: running on the strand is not a given
    auto& run = loop.start(ch, nullptr, [&](request_run& r) { current = &r; });
    auto ar = handles.pop();
    REQUIRE(ar.has_value());
    REQUIRE(enough.get_future().wait_for(patience) == std::future_status::ready);
    CHECK_FALSE(run.done());
    CHECK(ar->is_suspended());
    CHECK(ar->resume(plinth::text("late but delivered")));
    REQUIRE(run.wait_done());
    REQUIRE(run.response.has_value());
    CHECK(run.response->result() == http::status::ok);
    CHECK(run.response->body() == "late but delivered");
    CHECK_FALSE(plinth::detail::state_of(*ar)->timed_out());
    const int seen = expiries.load();
    CHECK(seen >= expiries_wanted);

    // The last re-arm is disarmed: no handler runs after the resume.
    asio::steady_timer probe(loop.ioc(), 150ms);
    std::promise<void> probed;
    probe.async_wait([&](boost::system::error_code) { probed.set_value(); });
    REQUIRE(probed.get_future().wait_for(patience) == std::future_status::ready);
    CHECK(expiries == seen);
    remote.verify();
}

TEST_CASE("async_response: a timeout handler that cancels, resumes, does nothing or throws", "[async_response]")
{
    remote_checks remote;
    handoff<async_response> handles;
    std::atomic<int> handler_runs{0};
    std::atomic<int> completes{0};
    std::exception_ptr completed_with;
    watcher w;
    std::function<void(async_response)> handler;
    auto ch = suspending_chain(
        [&](async_response ar) {
            ar.on_timeout([&](async_response h) {
                ++handler_runs;
                handler(std::move(h));
            });
            ar.on_complete([&](std::exception_ptr e) {
                ++completes;
                completed_with = e;
            });
            REMOTE_CHECK(ar.set_timeout(20ms));
            handles.push(ar);
        },
        {w.interceptor()});

    server_loop loop(1);
    SECTION("cancels: 503, through the leave stages")
    {
        handler = [&](async_response h) { REMOTE_CHECK(h.cancel(3s)); };
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::service_unavailable);
        CHECK(header(*run.response, http::field::retry_after) == "3");
        CHECK(ar->is_cancelled());
        CHECK_FALSE(plinth::detail::state_of(*ar)->timed_out());
        CHECK_FALSE(completed_with);
        CHECK(w.leaves == 1);
        CHECK(w.errors == 0);
    }
    SECTION("resumes: its response")
    {
        handler = [&](async_response h) { REMOTE_CHECK(h.resume(plinth::text("from the timeout handler"))); };
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::ok);
        CHECK(run.response->body() == "from the timeout handler");
        CHECK_FALSE(ar->is_cancelled());
        CHECK_FALSE(completed_with);
        CHECK(w.leaves == 1);
        CHECK(w.errors == 0);
    }
    SECTION("does nothing: the default 503 down the error path")
    {
        handler = [](async_response) {};
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::service_unavailable);
        CHECK(holds<plinth::service_unavailable>(run.unhandled));
        CHECK(holds<plinth::service_unavailable>(completed_with));
        CHECK(plinth::detail::state_of(*ar)->timed_out());
        CHECK(w.leaves == 0);
        CHECK(w.errors == 1);
    }
    SECTION("throws: its exception down the error path, with its type")
    {
        handler = [](async_response) { throw boom("the timeout handler failed"); };
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::internal_server_error);
        REQUIRE(holds<boom>(run.unhandled));
        CHECK(describe(run.unhandled) == "std::exception(the timeout handler failed)");
        CHECK(run.error_from == "h/enter");
        CHECK(holds<boom>(completed_with));
        CHECK(ar->is_done());
        CHECK(w.leaves == 0);
        CHECK(w.errors == 1);
    }
    SECTION("throws an http_error: its status")
    {
        handler = [](async_response) { throw plinth::http_error(http::status::gateway_timeout, "upstream slow"); };
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        CHECK(run.response->result() == http::status::gateway_timeout);
        CHECK(run.response->body() == "upstream slow");
        CHECK(w.errors == 1);
    }
    CHECK(handler_runs == 1);
    CHECK(completes == 1);
    remote.verify();
}

TEST_CASE("async_response: inside a timeout handler, re-arming and replacing the handler runs the new one at the "
          "next expiry",
          "[async_response]")
{
    remote_checks remote;
    handoff<async_response> handles;
    strings calls; // touched on the strand only, read after the run
    auto ch = suspending_chain([&](async_response ar) {
        ar.on_timeout([&](async_response h) {
            calls.push_back("first handler");
            REMOTE_CHECK(h.set_timeout(30ms));
            h.on_timeout([&](async_response h2) {
                calls.push_back("second handler");
                REMOTE_CHECK(h2.resume(plinth::text("from the second handler")));
            });
        });
        REMOTE_CHECK(ar.set_timeout(30ms));
        handles.push(ar);
    });
    server_loop loop(1);
    auto& run = loop.start(ch);
    auto ar = handles.pop();
    REQUIRE(ar.has_value());
    REQUIRE(run.wait_done());
    CHECK(calls == strings{"first handler", "second handler"});
    REQUIRE(run.response.has_value());
    CHECK(run.response->body() == "from the second handler");
    CHECK_FALSE(plinth::detail::state_of(*ar)->timed_out());
    remote.verify();
}

TEST_CASE("async_response: on_complete fires exactly once, after the response, for resume, cancel and timeout; "
          "several in order, a throwing one does not stop the rest",
          "[async_response]")
{
    remote_checks remote;
    enum class ending { resume, cancel, timeout, timeout_with_handler_resuming };
    const ending how = GENERATE(ending::resume, ending::cancel, ending::timeout, ending::timeout_with_handler_resuming);
    CAPTURE(static_cast<int>(how));

    handoff<async_response> handles;
    log_capture logs;
    plinth::detail::suspension_policy policy;
    policy.log = std::make_shared<const plinth::log_function>(logs.hook());
    strings calls; // strand only
    request_run* current = nullptr;
    bool response_was_ready = false;
    auto ch = suspending_chain([&](async_response ar) {
        REMOTE_CHECK(ar.on_complete([&](std::exception_ptr) {
            calls.push_back("first");
            response_was_ready = current->response.has_value();
        }));
        REMOTE_CHECK(ar.on_complete([&](std::exception_ptr) {
            calls.push_back("second throws");
            throw boom("callback failure");
        }));
        REMOTE_CHECK(ar.on_complete([&](std::exception_ptr e) { calls.push_back("third: " + describe(e)); }));
        REMOTE_CHECK(ar.on_disconnect([&] { calls.push_back("disconnect"); }));
        if (how == ending::timeout)
            REMOTE_CHECK(ar.set_timeout(10ms));
        if (how == ending::timeout_with_handler_resuming) {
            ar.on_timeout([](async_response h) { h.resume(plinth::text("by handler")); });
            REMOTE_CHECK(ar.set_timeout(10ms));
        }
        handles.push(ar);
    });
    server_loop loop(1);
    auto& run = loop.start(ch, &policy, [&](request_run& r) { current = &r; });
    auto ar = handles.pop();
    REQUIRE(ar.has_value());
    if (how == ending::resume)
        CHECK(ar->resume(plinth::text("ok")));
    if (how == ending::cancel)
        CHECK(ar->cancel());
    REQUIRE(run.wait_done());
    REQUIRE(run.response.has_value());
    switch (how) {
    case ending::resume: CHECK(run.response->body() == "ok"); break;
    case ending::cancel: CHECK(run.response->result() == http::status::service_unavailable); break;
    case ending::timeout: CHECK(run.response->result() == http::status::service_unavailable); break;
    case ending::timeout_with_handler_resuming: CHECK(run.response->body() == "by handler"); break;
    }
    CHECK(run.completed == 1);
    CHECK(response_was_ready);
    const std::string third = how == ending::timeout ? "third: service_unavailable" : "third: none";
    CHECK(calls == strings{"first", "second throws", third});
    const strings lines = logs.get();
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("callback failure") != std::string::npos);
    // Already completed: a second completion (on the strand, as the connection would) fires
    // nothing, and nothing new is accepted.
    CHECK_FALSE(ar->on_complete([&](std::exception_ptr) { calls.push_back("late"); }));
    std::promise<void> again;
    asio::post(*run.ex.executor, [&] {
        plinth::detail::state_of(*ar)->complete(nullptr);
        plinth::detail::state_of(*ar)->disconnected(nullptr);
        again.set_value();
    });
    REQUIRE(again.get_future().wait_for(patience) == std::future_status::ready);
    CHECK(calls.size() == 3);
    CHECK(policy.stats.suspended == 0);
    remote.verify();
}

// =============================================================================================
// The stats and the limit of a server's policy
// =============================================================================================

TEST_CASE("async_response: beyond max_suspended a suspension gets 503 at once; the stats count every outcome",
          "[async_response]")
{
    handoff<async_response> handles;
    std::atomic<int> setups{0};
    plinth::detail::suspension_policy policy;
    policy.max_suspended = 1;
    log_capture logs;
    policy.log = std::make_shared<const plinth::log_function>(logs.hook());
    auto ch = suspending_chain([&](async_response ar) {
        ++setups;
        handles.push(ar);
    });
    server_loop loop(2);
    auto& stats = policy.stats;

    // One suspended request: the limit.
    auto& first = loop.start(ch, &policy);
    auto a1 = handles.pop();
    REQUIRE(a1.has_value());
    CHECK(stats.suspended == 1);

    // A second one at the same time is refused at once, before its setup runs.
    auto& second = loop.start(ch, &policy);
    REQUIRE(second.wait_done());
    REQUIRE(second.response.has_value());
    CHECK(second.response->result() == http::status::service_unavailable);
    CHECK(second.response->body() == "Too many suspended requests");
    REQUIRE(holds<plinth::http_error>(second.unhandled));
    CHECK(second.error_from == "h/enter");
    CHECK(second.completed == 0);
    CHECK(setups == 1);
    CHECK_FALSE(handles.pop(0s).has_value());
    CHECK(stats.suspended == 1);
    CHECK_FALSE(first.done());

    CHECK(a1->resume(plinth::text("one")));
    REQUIRE(first.wait_done());
    CHECK(first.response->body() == "one");
    CHECK(stats.suspended == 0);
    CHECK(stats.resumed == 1);

    // Below the limit again: accepted; each outcome counted where it belongs.
    auto one_request = [&](const std::function<void(async_response&)>& act) -> request_run& {
        auto& run = loop.start(ch, &policy);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        act(*ar);
        REQUIRE(run.wait_done());
        REQUIRE(run.response.has_value());
        return run;
    };
    CHECK(one_request([](async_response& ar) { ar.cancel(); }).response->result() == http::status::service_unavailable);
    CHECK(stats.cancelled == 1);
    CHECK(one_request([](async_response& ar) { ar.set_timeout(1ms); }).response->result()
          == http::status::service_unavailable);
    CHECK(stats.timed_out == 1);
    CHECK(one_request([](async_response& ar) {
              ar.on_timeout([](async_response h) { h.resume(plinth::text("T")); });
              ar.set_timeout(1ms);
          }).response->body()
          == "T"); // a handler that resumes: resumed, not timed out
    CHECK(one_request([](async_response& ar) {
              ar.resume_error(plinth::http_error(http::status::conflict));
          }).response->result()
          == http::status::conflict);
    policy.default_timeout = 20ms; // read when the next request suspends
    CHECK(one_request([](async_response&) {}).response->result() == http::status::service_unavailable);
    policy.default_timeout = {};

    CHECK(stats.suspended == 0);
    CHECK(stats.resumed == 3);
    CHECK(stats.cancelled == 1);
    CHECK(stats.timed_out == 2);
    CHECK(stats.disconnected == 0);
    CHECK(setups == 6);
    CHECK(logs.get().empty());
}

// =============================================================================================
// Races: an io_context served by two threads, foreign threads calling the handle
// =============================================================================================

TEST_CASE("async_response: 8 threads race resume(i): exactly one returns true and its response is delivered",
          "[async_response][race]")
{
    constexpr std::size_t contenders = 8;
    handoff<async_response> handles;
    std::atomic<int> completes{0};
    auto ch = suspending_chain([&](async_response ar) {
        ar.on_complete([&](std::exception_ptr) { ++completes; });
        handles.push(ar);
    });
    server_loop loop(2);
    racers threads(contenders);

    int problems = 0;
    std::string first_problem;
    std::array<int, contenders> wins{};
    for (int round = 0; round < race_rounds; ++round) {
        auto problem = [&](const std::string& what) {
            if (problems++ == 0)
                first_problem = "round " + std::to_string(round) + ": " + what;
        };
        completes = 0;
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        std::array<bool, contenders> won{};
        std::vector<std::function<void()>> actions;
        for (std::size_t i = 0; i < contenders; ++i)
            actions.push_back(
                [&won, i, h = *ar]() mutable { won[i] = h.resume(plinth::text("resumed by " + std::to_string(i))); });
        threads.run(std::move(actions));
        REQUIRE(run.wait_done());

        const auto winners = std::count(won.begin(), won.end(), true);
        if (winners != 1)
            problem(std::to_string(winners) + " resume calls returned true");
        else {
            const auto winner = static_cast<std::size_t>(std::find(won.begin(), won.end(), true) - won.begin());
            ++wins[winner];
            if (!run.response || run.response->body() != "resumed by " + std::to_string(winner))
                problem("thread " + std::to_string(winner) + " won but the client got '"
                        + (run.response ? run.response->body() : std::string("nothing")) + "'");
        }
        if (completes != 1 || run.completed != 1)
            problem("on_complete fired " + std::to_string(completes.load()) + " times");
        if (ar->resume(plinth::text("late")))
            problem("a resume after completion returned true");
        loop.retire(run);
    }
    INFO(first_problem);
    CHECK(problems == 0);
    std::string tally;
    for (std::size_t i = 0; i < contenders; ++i)
        tally += std::to_string(i) + ":" + std::to_string(wins[i]) + " ";
    INFO("wins by thread: " << tally);
    CHECK(std::accumulate(wins.begin(), wins.end(), 0) == race_rounds);
    // A real race: the winner was not always the same thread.
    CHECK(std::count_if(wins.begin(), wins.end(), [](int n) { return n > 0; }) > 1);
}

TEST_CASE("async_response: resume, cancel, a 1 ms timeout and another resume at the same instant: one winner, one "
          "response, callbacks once each",
          "[async_response][race]")
{
    enum winner { resume_a, cancel, resume_b, resume_error, timeout_handler, timeout_default, kinds };
    static const char* const names[] = {"resume A",      "cancel",          "resume B",
                                        "resume(error)", "timeout handler", "timeout default"};
    handoff<async_response> handles;
    plinth::detail::suspension_policy policy;
    log_capture logs;
    policy.log = std::make_shared<const plinth::log_function>(logs.hook());
    std::atomic<bool> with_handler{false};
    std::atomic<int> completes{0}, disconnects{0}, handler_runs{0}, handler_wins{0};
    std::exception_ptr completed_with; // strand only, read after the run
    auto ch = suspending_chain([&](async_response ar) {
        ar.on_complete([&](std::exception_ptr e) {
            ++completes;
            completed_with = e;
        });
        ar.on_disconnect([&] { ++disconnects; });
        if (with_handler)
            ar.on_timeout([&](async_response h) {
                ++handler_runs;
                if (h.resume(plinth::text("T")))
                    ++handler_wins;
            });
        ar.set_timeout(1ms);
        handles.push(ar);
    });
    server_loop loop(2);
    racers threads(4);

    int problems = 0;
    std::string first_problem;
    std::array<int, kinds> tally{};
    for (int round = 0; round < race_rounds; ++round) {
        auto problem = [&](const std::string& what) {
            if (problems++ == 0)
                first_problem = "round " + std::to_string(round) + ": " + what;
        };
        completes = disconnects = handler_runs = handler_wins = 0;
        with_handler = round % 2 == 1;
        auto& run = loop.start(ch, &policy);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        std::array<bool, 4> won{};
        async_response h = *ar;
        // The timer started when the request suspended; releasing the threads 0 to 1.5 ms later
        // makes each contender win some rounds.
        threads.run({[&won, h]() mutable { won[resume_a] = h.resume(plinth::text("A")); },
                     [&won, h]() mutable { won[cancel] = h.cancel(7s); },
                     [&won, h]() mutable { won[resume_b] = h.resume(plinth::text("B")); },
                     [&won, h]() mutable {
                         won[resume_error] = h.resume_error(plinth::http_error(http::status::conflict, "E"));
                     }},
                    std::chrono::microseconds((round % 11) * 150));
        REQUIRE(run.wait_done());

        std::vector<winner> winners;
        for (int k = resume_a; k <= resume_error; ++k)
            if (won[static_cast<std::size_t>(k)])
                winners.push_back(static_cast<winner>(k));
        if (handler_wins > 0)
            winners.push_back(timeout_handler);
        if (plinth::detail::state_of(*ar)->timed_out())
            winners.push_back(timeout_default);
        if (winners.size() != 1) {
            std::string who;
            for (auto w : winners)
                who += std::string(names[w]) + "; ";
            problem(std::to_string(winners.size()) + " winners: " + who);
            loop.retire(run);
            continue;
        }
        const winner w = winners.front();
        ++tally[w];

        const auto& res = run.response;
        const auto got = !res ? std::string("nothing")
                              : std::to_string(res->result_int()) + " '" + res->body() + "' Retry-After "
                + header(*res, http::field::retry_after) + ", error " + describe(run.unhandled);
        bool right = false;
        switch (w) {
        case resume_a: right = res && res->body() == "A" && !run.unhandled; break;
        case resume_b: right = res && res->body() == "B" && !run.unhandled; break;
        case timeout_handler: right = res && res->body() == "T" && !run.unhandled; break;
        case cancel:
            right = res && res->result() == http::status::service_unavailable
                && header(*res, http::field::retry_after) == "7" && !run.unhandled;
            break;
        case resume_error:
            right = res && res->result() == http::status::conflict && holds<plinth::http_error>(run.unhandled);
            break;
        case timeout_default:
            right = res && res->result() == http::status::service_unavailable
                && header(*res, http::field::retry_after) == "<absent>"
                && holds<plinth::service_unavailable>(run.unhandled);
            break;
        default: break;
        }
        if (!right)
            problem(std::string(names[w]) + " won but the client got " + got);
        if (completes != 1 || run.completed != 1)
            problem("on_complete fired " + std::to_string(completes.load()) + " times");
        if (completed_with != run.unhandled)
            problem("on_complete received " + describe(completed_with) + ", not the unhandled error");
        if (disconnects != 0)
            problem("on_disconnect fired");
        if (handler_runs > (with_handler ? 1 : 0))
            problem("the timeout handler ran " + std::to_string(handler_runs.load()) + " times");
        if (w == timeout_default && with_handler)
            problem("the default timeout won although a handler was set");
        loop.retire(run);
    }
    std::string counts;
    for (int k = 0; k < kinds; ++k)
        counts += std::string(names[k]) + ": " + std::to_string(tally[static_cast<std::size_t>(k)]) + "; ";
    INFO("wins: " << counts);
    INFO(first_problem);
    CHECK(problems == 0);
    // Every contender won at some point: the race was real.
    CHECK(tally[resume_a] + tally[resume_b] + tally[resume_error] + tally[cancel] > 0);
    CHECK(tally[timeout_handler] + tally[timeout_default] > 0);
    // The policy's counters agree with what was delivered.
    CHECK(policy.stats.suspended == 0);
    const int resumed = tally[resume_a] + tally[resume_b] + tally[resume_error] + tally[timeout_handler];
    CHECK(policy.stats.resumed == static_cast<std::uint64_t>(resumed));
    CHECK(policy.stats.cancelled == static_cast<std::uint64_t>(tally[cancel]));
    CHECK(policy.stats.timed_out == static_cast<std::uint64_t>(tally[timeout_default]));
    CHECK(logs.get().empty());
}

TEST_CASE("async_response: a re-arm racing the expiry: either it returns false (timed out) or the old timer has "
          "no effect",
          "[async_response][race]")
{
    handoff<async_response> handles;
    std::atomic<int> completes{0};
    auto ch = suspending_chain([&](async_response ar) {
        ar.on_complete([&](std::exception_ptr) { ++completes; });
        ar.set_timeout(1ms);
        handles.push(ar);
    });
    server_loop loop(2);
    racers threads(1);

    int problems = 0;
    std::string first_problem;
    int rearmed = 0, expired_first = 0;
    for (int round = 0; round < race_rounds; ++round) {
        auto problem = [&](const std::string& what) {
            if (problems++ == 0)
                first_problem = "round " + std::to_string(round) + ": " + what;
        };
        completes = 0;
        auto& run = loop.start(ch);
        auto ar = handles.pop();
        REQUIRE(ar.has_value());
        bool rearm = false;
        async_response h = *ar;
        threads.run({[&rearm, h]() mutable { rearm = h.set_timeout(10s); }},
                    std::chrono::microseconds((round % 8) * 200));
        if (rearm) {
            ++rearmed;
            // Re-armed to 10 s: the 1 ms timer must not end the request.
            if (!ar->resume(plinth::text("after re-arm")))
                problem("set_timeout(10s) returned true, yet the old 1 ms timer ended the request ("
                        + std::string(plinth::detail::state_of(*ar)->timed_out() ? "timed out" : "?") + ")");
            REQUIRE(run.wait_done());
            if (run.response && run.response->body() != "after re-arm" && problems == 0)
                problem("the client got " + run.response->body());
        }
        else {
            ++expired_first;
            REQUIRE(run.wait_done());
            if (!plinth::detail::state_of(*ar)->timed_out() || !run.response
                || run.response->result() != http::status::service_unavailable)
                problem("set_timeout returned false but the request did not time out");
        }
        if (completes != 1)
            problem("on_complete fired " + std::to_string(completes.load()) + " times");
        loop.retire(run);
    }
    INFO("re-armed in time: " << rearmed << ", expired first: " << expired_first);
    INFO(first_problem);
    CHECK(problems == 0);
    CHECK(rearmed > 0);
    CHECK(expired_first > 0);
}
