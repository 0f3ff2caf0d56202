//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// Unit tests of the interceptor chain (spec/chain.md, test cases 1 to 16), over a tiny context
// that records what the stages did. No HTTP, no sockets.

#include "alloc_counter.hpp"

#include <plinth/chain.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------------------------
// The test context and its vocabulary
// ---------------------------------------------------------------------------------------------

struct test_ctx : plinth::chain_context<test_ctx> {
    std::vector<std::string> log;         // what the stages did, in order
    std::vector<std::exception_ptr> seen; // errors error stages were handed
    std::string request;                  // for the handler cases
    std::optional<std::string> response;  // set by a handler; a terminator may watch it
    bool stop = false;                    // a terminator may watch it
    int count = 0;                        // for the allocation case: a stage that does not allocate
};

using chain = plinth::basic_chain<test_ctx>;
using interceptor = plinth::basic_interceptor<test_ctx>;
using stage_fn = plinth::stage_fn<test_ctx>;
using error_fn = plinth::error_fn<test_ctx>;
using strings = std::vector<std::string>;
using body_fn = std::function<void(test_ctx&)>;
using then_fn = std::function<void(std::exception_ptr)>;

// Three unrelated exception types, one of them not even a std::exception, so a test can tell
// exactly which error arrived and that it was not wrapped.
struct first_error {
    int code;
};
struct second_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct third_error : std::logic_error {
    using std::logic_error::logic_error;
};

std::string describe(const std::exception_ptr& e)
{
    if (!e)
        return "no error";
    try {
        std::rethrow_exception(e);
    }
    catch (const first_error& x) {
        return "first_error(" + std::to_string(x.code) + ")";
    }
    catch (const second_error& x) {
        return std::string("second_error(") + x.what() + ")";
    }
    catch (const third_error& x) {
        return std::string("third_error(") + x.what() + ")";
    }
    catch (const std::exception& x) {
        return std::string("other std::exception(") + x.what() + ")";
    }
    catch (...) {
        return "unknown";
    }
}

std::string where(const plinth::chain_error& err)
{
    return err.interceptor + "/" + std::string(plinth::to_string(err.stage));
}

// The four stage shapes the chain accepts.
enum class kind { sync_value, sync_ref, async_value, async_ref };

std::string kind_name(kind k)
{
    switch (k) {
    case kind::sync_value: return "sync, by value";
    case kind::sync_ref: return "sync, by reference";
    case kind::async_value: return "async, by value";
    case kind::async_ref: return "async, by reference";
    }
    return "?";
}

// Suspends for real: a zero delay still goes through the executor's queue.
asio::awaitable<void> pause(std::chrono::milliseconds delay)
{
    auto ex = co_await asio::this_coro::executor;
    if (delay == 0ms) {
        co_await asio::post(ex, asio::use_awaitable);
    }
    else {
        asio::steady_timer timer(ex, delay);
        co_await timer.async_wait(asio::use_awaitable);
    }
}

asio::awaitable<test_ctx> run_async_value(test_ctx c, body_fn body, std::chrono::milliseconds delay)
{
    co_await pause(delay);
    body(c);
    co_return std::move(c);
}

asio::awaitable<void> run_async_ref(test_ctx& c, body_fn body, std::chrono::milliseconds delay)
{
    co_await pause(delay);
    body(c);
}

// An enter or leave stage of shape `k` that runs `body` (after suspending, for the async shapes).
stage_fn make_stage(kind k, body_fn body, std::chrono::milliseconds delay = 0ms)
{
    switch (k) {
    case kind::sync_value:
        return [body](test_ctx c) {
            body(c);
            return c;
        };
    case kind::sync_ref: return [body](test_ctx& c) { body(c); };
    case kind::async_value: return [body, delay](test_ctx c) { return run_async_value(std::move(c), body, delay); };
    case kind::async_ref: return [body, delay](test_ctx& c) { return run_async_ref(c, body, delay); };
    }
    throw std::logic_error("unknown stage kind");
}

body_fn say(std::string what)
{
    return [what](test_ctx& c) { c.log.push_back(what); };
}

body_fn say_then(std::string what, body_fn more)
{
    return [what, more](test_ctx& c) {
        c.log.push_back(what);
        more(c);
    };
}

stage_fn logs(kind k, std::string what, std::chrono::milliseconds delay = 0ms)
{
    return make_stage(k, say(std::move(what)), delay);
}

// What an error stage writes: the error it was handed, and the chain's record of it.
std::string error_entry(const std::string& name, const test_ctx& c, const std::exception_ptr& e)
{
    std::string s = "error " + name + ": " + describe(e);
    const plinth::chain_error* err = c.error();
    if (!err)
        return s + " (no record)";
    s += " from " + where(*err);
    if (err->exception != e)
        s += " (RECORD MISMATCH: " + describe(err->exception) + ")";
    for (const auto& p : err->suppressed)
        s += ", suppressing " + describe(p);
    return s;
}

// What an error stage does after logging: nothing (handled), rethrow, or throw something new.
void handle(std::exception_ptr) {}
void pass_on(std::exception_ptr e)
{
    std::rethrow_exception(std::move(e));
}

asio::awaitable<test_ctx> run_async_error_value(test_ctx c, std::exception_ptr e, std::string name, then_fn then,
                                                std::chrono::milliseconds delay)
{
    co_await pause(delay);
    c.log.push_back(error_entry(name, c, e));
    c.seen.push_back(e);
    then(e);
    co_return std::move(c);
}

asio::awaitable<void> run_async_error_ref(test_ctx& c, std::exception_ptr e, std::string name, then_fn then,
                                          std::chrono::milliseconds delay)
{
    co_await pause(delay);
    c.log.push_back(error_entry(name, c, e));
    c.seen.push_back(e);
    then(e);
}

// An error stage of shape `k` for interceptor `name`: logs what it sees, then `then`.
error_fn on_error(kind k, std::string name, then_fn then = handle, std::chrono::milliseconds delay = 0ms)
{
    switch (k) {
    case kind::sync_value:
        return [name, then](test_ctx c, std::exception_ptr e) {
            c.log.push_back(error_entry(name, c, e));
            c.seen.push_back(e);
            then(e);
            return c;
        };
    case kind::sync_ref:
        return [name, then](test_ctx& c, std::exception_ptr e) {
            c.log.push_back(error_entry(name, c, e));
            c.seen.push_back(e);
            then(e);
        };
    case kind::async_value:
        return [name, then, delay](test_ctx c, std::exception_ptr e) {
            return run_async_error_value(std::move(c), std::move(e), name, then, delay);
        };
    case kind::async_ref:
        return [name, then, delay](test_ctx& c, std::exception_ptr e) {
            return run_async_error_ref(c, std::move(e), name, then, delay);
        };
    }
    throw std::logic_error("unknown stage kind");
}

// An interceptor whose enter and leave log "enter <name>" and "leave <name>".
interceptor passthrough(const std::string& name, kind k)
{
    return {.name = name, .enter = logs(k, "enter " + name), .leave = logs(k, "leave " + name)};
}

// The by-reference shape of the same synchronicity as `k`: a stage that throws keeps the log.
kind by_ref(kind k)
{
    return (k == kind::sync_value || k == kind::sync_ref) ? kind::sync_ref : kind::async_ref;
}

bool contains(const strings& log, const std::string& entry)
{
    return std::find(log.begin(), log.end(), entry) != log.end();
}

// ---------------------------------------------------------------------------------------------
// Running a chain
// ---------------------------------------------------------------------------------------------

struct outcome {
    bool done = false;            // the completion handler ran
    std::exception_ptr exception; // what async_execute reported (only ever bad_alloc)
    test_ctx ctx;                 // the context the chain returned
};

outcome run(const chain& ch, test_ctx ctx = {})
{
    asio::io_context ioc;
    outcome out;
    ch.async_execute(ioc.get_executor(), std::move(ctx), [&out](std::exception_ptr e, test_ctx c) {
        out.done = true;
        out.exception = std::move(e);
        out.ctx = std::move(c);
    });
    ioc.run();
    return out;
}

// Runs `ch` and requires that it completed normally (errors travel in the context, never thrown).
test_ctx run_ok(const chain& ch, test_ctx ctx = {})
{
    outcome out = run(ch, std::move(ctx));
    REQUIRE(out.done);
    REQUIRE_FALSE(out.exception);
    REQUIRE_FALSE(out.ctx.executing());
    return std::move(out.ctx);
}

template <class F>
void try_enqueue(test_ctx& c, const std::string& what, F f)
{
    try {
        f();
        c.log.push_back("accepted " + what);
    }
    catch (const std::invalid_argument&) {
        c.log.push_back("rejected " + what);
    }
}

// Requires that `f` throws exactly std::logic_error (std::invalid_argument derives from it).
template <class F>
void require_exactly_logic_error(F f)
{
    bool thrown = false;
    try {
        f();
    }
    catch (const std::logic_error& e) {
        thrown = true;
        CHECK(typeid(e) == typeid(std::logic_error));
    }
    REQUIRE(thrown);
}

constexpr kind all_kinds[] = {kind::sync_value, kind::sync_ref, kind::async_value, kind::async_ref};

} // namespace

// ---------------------------------------------------------------------------------------------
// 1. a, b, c pass through
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: a, b, c enter in order and leave in reverse", "[chain]")
{
    SECTION("every stage of the same shape")
    {
        const kind k = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
        CAPTURE(kind_name(k));
        const stage_fn probe = logs(k, "x");
        CHECK(static_cast<bool>(probe));
        CHECK(probe.is_async() == (k == kind::async_value || k == kind::async_ref));

        chain ch{passthrough("a", k), passthrough("b", k), passthrough("c", k)};
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter b", "enter c", "leave c", "leave b", "leave a"});
        CHECK(r.error() == nullptr);
    }
    SECTION("shapes mixed, and interceptors with only some stages")
    {
        chain ch{
            {.name = "a", .enter = logs(kind::sync_value, "enter a"), .leave = logs(kind::async_ref, "leave a")},
            {.name = "b", .leave = logs(kind::sync_ref, "leave b")},
            {.name = "c", .enter = logs(kind::async_value, "enter c")},
            {.name = "d", .error = on_error(kind::sync_ref, "d")},
            {.name = "e", .enter = logs(kind::async_ref, "enter e"), .leave = logs(kind::sync_value, "leave e")},
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter c", "enter e", "leave e", "leave b", "leave a"});
        CHECK(r.error() == nullptr);
    }
    SECTION("the chain is reusable: a second run starts from a fresh queue")
    {
        chain ch{passthrough("a", kind::sync_ref), passthrough("b", kind::async_ref)};
        CHECK(run_ok(ch).log == strings{"enter a", "enter b", "leave b", "leave a"});
        CHECK(run_ok(ch).log == strings{"enter a", "enter b", "leave b", "leave a"});
    }
}

// ---------------------------------------------------------------------------------------------
// 2. enqueue, enqueue_front, invalid interceptors
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: enqueue appends after everything queued, enqueue_front puts an interceptor next, "
          "invalid interceptors are rejected",
          "[chain]")
{
    SECTION("enqueue appends after everything already queued, including earlier dynamic enqueues")
    {
        const kind k = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
        CAPTURE(kind_name(k));
        const body_fn enqueue_x = [](test_ctx& c) { plinth::enqueue(c, passthrough("x", kind::sync_ref)); };
        const body_fn enqueue_y = [](test_ctx& c) { plinth::enqueue(c, passthrough("y", kind::async_ref)); };
        chain ch{
            {.name = "a", .enter = make_stage(k, say_then("enter a", enqueue_x)), .leave = logs(k, "leave a")},
            {.name = "b", .enter = make_stage(k, say_then("enter b", enqueue_y)), .leave = logs(k, "leave b")},
            passthrough("c", k),
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log
              == strings{"enter a", "enter b", "enter c", "enter x", "enter y", "leave y", "leave x", "leave c",
                         "leave b", "leave a"});
    }
    SECTION("enqueue_front puts the interceptor next, before what was already queued")
    {
        const kind k = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
        CAPTURE(kind_name(k));
        const body_fn enqueue_x_then_front_y = [](test_ctx& c) {
            plinth::enqueue(c, passthrough("x", kind::sync_ref));
            plinth::enqueue_front(c, passthrough("y", kind::sync_value));
        };
        chain ch{
            {.name = "a",
             .enter = make_stage(k, say_then("enter a", enqueue_x_then_front_y)),
             .leave = logs(k, "leave a")},
            passthrough("b", k),
            passthrough("c", k),
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log
              == strings{"enter a", "enter y", "enter b", "enter c", "enter x", "leave x", "leave c", "leave b",
                         "leave y", "leave a"});
    }
    SECTION("each enqueue_front puts its interceptor next: the last one inserted is entered first")
    {
        const body_fn front_y_then_front_z = [](test_ctx& c) {
            plinth::enqueue_front(c, passthrough("y", kind::sync_ref));
            plinth::enqueue_front(c, passthrough("z", kind::async_ref));
        };
        chain ch{
            {.name = "a", .enter = make_stage(kind::sync_ref, say_then("enter a", front_y_then_front_z))},
            passthrough("b", kind::sync_ref),
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter z", "enter y", "enter b", "leave b", "leave y", "leave z"});
    }
    SECTION("enqueue_front inside the chain's own interceptors, then terminate: the rest of them is dropped, "
            "what was entered leaves in reverse")
    {
        const body_fn front_y = [](test_ctx& c) {
            plinth::enqueue_front(
                c,
                {.name = "y",
                 .enter = make_stage(kind::sync_ref, say_then("enter y", [](test_ctx& c) { plinth::terminate(c); })),
                 .leave = logs(kind::sync_ref, "leave y")});
            plinth::enqueue(c, passthrough("x", kind::sync_ref));
        };
        chain ch{
            passthrough("a", kind::sync_ref),
            {.name = "b",
             .enter = make_stage(kind::async_ref, say_then("enter b", front_y)),
             .leave = logs(kind::sync_ref, "leave b")},
            passthrough("c", kind::sync_ref),
            passthrough("d", kind::sync_ref),
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter b", "enter y", "leave y", "leave b", "leave a"});
    }
    SECTION("enqueue of a span copies in order; enqueue_ref appends without copying, in order")
    {
        const std::vector<interceptor> route{passthrough("r1", kind::sync_ref), passthrough("r2", kind::async_value)};
        const std::vector<interceptor> extra{passthrough("e1", kind::async_ref), passthrough("e2", kind::sync_value)};
        const body_fn hand_over = [&route, &extra](test_ctx& c) {
            plinth::enqueue_ref(c, std::span<const interceptor>(route));
            plinth::enqueue(c, std::span<const interceptor>(extra));
        };
        chain ch{
            {.name = "router", .enter = make_stage(kind::async_ref, say_then("enter router", hand_over))},
            passthrough("b", kind::sync_ref),
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log
              == strings{"enter router", "enter b", "enter r1", "enter r2", "enter e1", "enter e2", "leave e2",
                         "leave e1", "leave r2", "leave r1", "leave b"});
    }
    SECTION("an invalid interceptor is rejected by the chain's constructor and push_back")
    {
        REQUIRE_THROWS_AS(chain{interceptor{}}, std::invalid_argument);
        REQUIRE_THROWS_AS(chain{interceptor{.name = "stageless"}}, std::invalid_argument);
        REQUIRE_THROWS_AS(
            (chain{passthrough("ok", kind::sync_ref), interceptor{.name = "", .enter = logs(kind::sync_ref, "x")}}),
            std::invalid_argument);
        REQUIRE_THROWS_AS(chain(std::vector<interceptor>{passthrough("ok", kind::sync_ref), interceptor{.name = "x"}}),
                          std::invalid_argument);
        chain ch;
        REQUIRE_THROWS_AS(ch.push_back(interceptor{.name = "stageless"}), std::invalid_argument);
        REQUIRE_THROWS_AS(ch.push_back(interceptor{.name = "", .leave = logs(kind::sync_ref, "x")}),
                          std::invalid_argument);
        CHECK(ch.interceptors().empty());
        // One stage of any kind, with a name, is enough.
        REQUIRE_NOTHROW(chain{interceptor{.name = "leave only", .leave = logs(kind::sync_ref, "x")}});
        REQUIRE_NOTHROW(chain{interceptor{.name = "error only", .error = on_error(kind::sync_ref, "x")}});
    }
    SECTION("an invalid interceptor is rejected by enqueue, enqueue_front and enqueue_ref during an execution")
    {
        static const std::vector<interceptor> invalid_route{interceptor{.name = "stageless"}};
        const body_fn enqueue_invalid = [](test_ctx& c) {
            const interceptor empty{};
            const interceptor unnamed{.name = "", .enter = logs(kind::sync_ref, "entered unnamed")};
            const interceptor stageless{.name = "stageless"};
            const std::span<const interceptor> invalid_span(invalid_route);
            try_enqueue(c, "empty", [&] { plinth::enqueue(c, empty); });
            try_enqueue(c, "unnamed", [&] { plinth::enqueue(c, unnamed); });
            try_enqueue(c, "stageless", [&] { plinth::enqueue(c, stageless); });
            try_enqueue(c, "front stageless", [&] { plinth::enqueue_front(c, stageless); });
            try_enqueue(c, "front unnamed", [&] { plinth::enqueue_front(c, unnamed); });
            try_enqueue(c, "span", [&] { plinth::enqueue(c, invalid_span); });
            try_enqueue(c, "ref", [&] { plinth::enqueue_ref(c, invalid_span); });
        };
        chain ch{
            {.name = "a",
             .enter = make_stage(kind::sync_ref, say_then("enter a", enqueue_invalid)),
             .leave = logs(kind::sync_ref, "leave a")},
            passthrough("b", kind::sync_ref),
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log
              == strings{"enter a", "rejected empty", "rejected unnamed", "rejected stageless",
                         "rejected front stageless", "rejected front unnamed", "rejected span", "rejected ref",
                         "enter b", "leave b", "leave a"});
        CHECK(r.error() == nullptr);
    }
}

TEST_CASE("chain: an enqueue_front that cannot allocate leaves the walk's queue as it was", "[chain]")
{
    // The walk keeps spans of interceptors; putting one inside a span splits it, which may need
    // room for two more spans. Here: the chain's three, then a route's one, then x inserted after
    // the first. The room is made before anything changes.
    const int chain_own[3] = {}, route[1] = {}, x = 0;
    plinth::detail::walk_list<int> walk;
    walk.append(chain_own, 3);
    walk.append(route, 1);
    {
        plinth_test::failing_allocation fail(0);
        REQUIRE_THROWS_AS(walk.insert(1, &x), std::bad_alloc);
    }
    REQUIRE(walk.size() == 4);
    CHECK(walk[0] == &chain_own[0]);
    CHECK(walk[1] == &chain_own[1]);
    CHECK(walk[2] == &chain_own[2]);
    CHECK(walk[3] == &route[0]);

    walk.insert(1, &x);
    REQUIRE(walk.size() == 5);
    CHECK(walk[1] == &x);
    CHECK(walk[2] == &chain_own[1]);
    CHECK(walk[4] == &route[0]);
    walk.truncate(2); // terminate after x: the rest of the queue goes
    REQUIRE(walk.size() == 2);
    CHECK(walk[1] == &x);
}

TEST_CASE("chain: enqueue, enqueue_front, enqueue_ref and terminate outside an execution throw std::logic_error",
          "[chain]")
{
    const std::vector<interceptor> route{passthrough("r", kind::sync_ref)};

    SECTION("on a context that was never executed")
    {
        test_ctx c;
        CHECK_FALSE(c.executing());
        require_exactly_logic_error([&] { plinth::enqueue(c, passthrough("x", kind::sync_ref)); });
        require_exactly_logic_error([&] { plinth::enqueue(c, std::span<const interceptor>(route)); });
        require_exactly_logic_error([&] { plinth::enqueue_front(c, passthrough("x", kind::sync_ref)); });
        require_exactly_logic_error([&] { plinth::enqueue_ref(c, std::span<const interceptor>(route)); });
        require_exactly_logic_error([&] { plinth::terminate(c); });
    }
    SECTION("on the context a finished execution returned")
    {
        chain ch{passthrough("a", kind::sync_ref)};
        test_ctx r = run_ok(ch);
        REQUIRE(r.log == strings{"enter a", "leave a"});
        require_exactly_logic_error([&] { plinth::enqueue(r, passthrough("x", kind::sync_ref)); });
        require_exactly_logic_error([&] { plinth::enqueue_front(r, passthrough("x", kind::sync_ref)); });
        require_exactly_logic_error([&] { plinth::enqueue_ref(r, std::span<const interceptor>(route)); });
        require_exactly_logic_error([&] { plinth::terminate(r); });
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A throw in enter with no error stage anywhere
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: an error no stage handles is carried by the chain's result, not thrown", "[chain]")
{
    const kind k = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
    CAPTURE(kind_name(k));
    chain ch{
        passthrough("a", kind::sync_ref),
        {.name = "b",
         .enter = make_stage(k, say_then("enter b", [](test_ctx&) { throw first_error{3}; })),
         .leave = logs(kind::sync_ref, "leave b")},
        passthrough("c", kind::async_ref),
    };
    const outcome out = run(ch);
    REQUIRE(out.done);
    CHECK_FALSE(out.exception); // the completion handler is not handed the error
    const test_ctx& r = out.ctx;
    CHECK_FALSE(r.executing());

    const plinth::chain_error* err = r.error();
    REQUIRE(err != nullptr);
    CHECK(err->stage == plinth::stage::enter);
    CHECK(err->interceptor == "b");
    CHECK(err->suppressed.empty());
    CHECK(describe(err->exception) == "first_error(3)");

    // Nothing after the thrower is entered, and no leave runs while the error is unhandled.
    CHECK_FALSE(contains(r.log, "enter c"));
    CHECK_FALSE(contains(r.log, "leave a"));
    CHECK_FALSE(contains(r.log, "leave b"));
    if (k == kind::sync_ref || k == kind::async_ref) // a by-value stage that throws consumes the context
        CHECK(r.log == strings{"enter a", "enter b"});
}

// ---------------------------------------------------------------------------------------------
// 4. a, b, catcher c, d, e, thrower f, g
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: an error unwinds to the nearest error stage, then the rest of the stack leaves", "[chain]")
{
    const kind k = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
    const kind thrower = by_ref(k);
    CAPTURE(kind_name(k), kind_name(thrower));

    chain ch{
        passthrough("a", k),
        passthrough("b", k),
        {.name = "c", .enter = logs(k, "enter c"), .leave = logs(k, "leave c"), .error = on_error(k, "c")},
        passthrough("d", k),
        passthrough("e", k),
        {.name = "f",
         .enter = make_stage(thrower, say_then("enter f", [](test_ctx&) { throw first_error{4}; })),
         .leave = logs(k, "leave f")},
        passthrough("g", k),
    };
    const test_ctx r = run_ok(ch);
    CHECK(r.log
          == strings{"enter a", "enter b", "enter c", "enter d", "enter e", "enter f",
                     "error c: first_error(4) from f/enter", "leave b", "leave a"});
    CHECK(r.error() == nullptr); // handled
}

// ---------------------------------------------------------------------------------------------
// 5. The captured error names stage and interceptor, and rethrows as the original type
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: the captured error names its stage and interceptor and rethrows as the original type", "[chain]")
{
    const kind k = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
    CAPTURE(kind_name(k));
    const auto throw_second = [](test_ctx&) { throw second_error("boom"); };
    const auto throw_third = [](std::exception_ptr) { throw third_error("replaced"); };

    SECTION("thrown by an enter stage")
    {
        const interceptor x{.name = "x", .enter = make_stage(k, throw_second)};

        const test_ctx handled = run_ok(chain{{.name = "outer", .error = on_error(kind::sync_ref, "outer")}, x});
        REQUIRE(!handled.log.empty());
        CHECK(handled.log.back() == "error outer: second_error(boom) from x/enter");

        const test_ctx r = run_ok(chain{passthrough("a", kind::sync_ref), x});
        const plinth::chain_error* err = r.error();
        REQUIRE(err != nullptr);
        CHECK(err->stage == plinth::stage::enter);
        CHECK(err->interceptor == "x");
        CHECK(err->suppressed.empty());
        REQUIRE_THROWS_AS(std::rethrow_exception(err->exception), second_error);
        REQUIRE_THROWS_WITH(std::rethrow_exception(err->exception), "boom");
        REQUIRE_THROWS_AS(std::rethrow_exception(err->exception), std::runtime_error);
    }
    SECTION("thrown by a leave stage")
    {
        const interceptor x{.name = "x", .leave = make_stage(k, [](test_ctx&) { throw first_error{5}; })};

        const test_ctx handled = run_ok(chain{{.name = "outer", .error = on_error(kind::async_ref, "outer")}, x});
        REQUIRE(!handled.log.empty());
        CHECK(handled.log.back() == "error outer: first_error(5) from x/leave");

        const test_ctx r = run_ok(chain{passthrough("a", kind::sync_ref), x});
        const plinth::chain_error* err = r.error();
        REQUIRE(err != nullptr);
        CHECK(err->stage == plinth::stage::leave);
        CHECK(err->interceptor == "x");
        REQUIRE_THROWS_AS(std::rethrow_exception(err->exception), first_error);
        CHECK(describe(err->exception) == "first_error(5)");
    }
    SECTION("thrown by an error stage")
    {
        const interceptor x{.name = "x", .error = on_error(k, "x", throw_third)};
        const interceptor t{.name = "t", .enter = make_stage(kind::sync_ref, throw_second)};

        const test_ctx handled = run_ok(chain{{.name = "outer", .error = on_error(kind::sync_value, "outer")}, x, t});
        REQUIRE(!handled.log.empty());
        CHECK(handled.log.back() == "error outer: third_error(replaced) from x/error, suppressing second_error(boom)");

        const test_ctx r = run_ok(chain{x, t});
        const plinth::chain_error* err = r.error();
        REQUIRE(err != nullptr);
        CHECK(err->stage == plinth::stage::error);
        CHECK(err->interceptor == "x");
        REQUIRE_THROWS_AS(std::rethrow_exception(err->exception), third_error);
        REQUIRE_THROWS_WITH(std::rethrow_exception(err->exception), "replaced");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. An error stage that rethrows the same error
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: an error stage that rethrows the same error passes the original on, suppressing nothing", "[chain]")
{
    const kind outer_kind = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
    const kind inner_kind = GENERATE(kind::sync_ref, kind::async_ref);
    CAPTURE(kind_name(outer_kind), kind_name(inner_kind));

    // Both ways of rethrowing the same object: rethrow_exception, and `throw;` in a handler.
    const then_fn rethrow = GENERATE(as<then_fn>{}, pass_on, [](std::exception_ptr e) {
        try {
            std::rethrow_exception(e);
        }
        catch (...) {
            throw;
        }
    });

    chain ch{
        {.name = "root", .leave = logs(kind::sync_ref, "leave root")},
        {.name = "a", .error = on_error(outer_kind, "a")},
        {.name = "b", .leave = logs(kind::sync_ref, "leave b"), .error = on_error(inner_kind, "b", rethrow)},
        {.name = "c", .enter = make_stage(kind::sync_ref, [](test_ctx&) { throw first_error{6}; })},
    };
    const test_ctx r = run_ok(ch);
    CHECK(r.log
          == strings{"error b: first_error(6) from c/enter", "error a: first_error(6) from c/enter", "leave root"});
    REQUIRE(r.seen.size() == 2);
    CHECK(r.seen[0] == r.seen[1]); // the very same exception object
    CHECK(r.error() == nullptr);
}

// ---------------------------------------------------------------------------------------------
// 7. An error stage that throws a new error
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: an error stage that throws a new error passes the new one on, the original recorded as "
          "suppressed",
          "[chain]")
{
    const kind k = GENERATE(kind::sync_ref, kind::async_ref);
    CAPTURE(kind_name(k));
    const auto thrower = interceptor{.name = "c", .enter = make_stage(k, [](test_ctx&) { throw first_error{7}; })};

    SECTION("the outer handler sees the new error, the original in the suppressed list")
    {
        chain ch{
            {.name = "root", .leave = logs(k, "leave root")},
            {.name = "a", .error = on_error(k, "a")},
            {.name = "b", .error = on_error(k, "b", [](std::exception_ptr) { throw second_error("second"); })},
            thrower,
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log
              == strings{"error b: first_error(7) from c/enter",
                         "error a: second_error(second) from b/error, suppressing first_error(7)", "leave root"});
        CHECK(r.error() == nullptr);
    }
    SECTION("unhandled: the result keeps every replaced error, oldest first")
    {
        chain ch{
            {.name = "b2", .error = on_error(k, "b2", [](std::exception_ptr) { throw third_error("third"); })},
            {.name = "b", .error = on_error(k, "b", [](std::exception_ptr) { throw second_error("second"); })},
            thrower,
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log
              == strings{"error b: first_error(7) from c/enter",
                         "error b2: second_error(second) from b/error, suppressing first_error(7)"});
        const plinth::chain_error* err = r.error();
        REQUIRE(err != nullptr);
        CHECK(err->stage == plinth::stage::error);
        CHECK(err->interceptor == "b2");
        REQUIRE_THROWS_AS(std::rethrow_exception(err->exception), third_error);
        REQUIRE(err->suppressed.size() == 2);
        REQUIRE_THROWS_AS(std::rethrow_exception(err->suppressed[0]), first_error);
        CHECK(describe(err->suppressed[0]) == "first_error(7)");
        REQUIRE_THROWS_AS(std::rethrow_exception(err->suppressed[1]), second_error);
        CHECK(describe(err->suppressed[1]) == "second_error(second)");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. A throwing leave
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: a throwing leave stage has its own error stage tried first, then the outer ones", "[chain]")
{
    const kind k = GENERATE(kind::sync_ref, kind::async_ref);
    const kind error_kind = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
    CAPTURE(kind_name(k), kind_name(error_kind));

    const auto x = [&](then_fn then) {
        return interceptor{.name = "x",
                           .enter = logs(k, "enter x"),
                           .leave = make_stage(k, say_then("leave x", [](test_ctx&) { throw first_error{8}; })),
                           .error = on_error(by_ref(error_kind), "x", then)};
    };

    SECTION("its own error stage passes it on: the outer error stage gets it")
    {
        chain ch{
            {.name = "a", .leave = logs(k, "leave a"), .error = on_error(error_kind, "a")},
            x(pass_on),
            passthrough("y", k),
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log
              == strings{"enter x", "enter y", "leave y", "leave x", "error x: first_error(8) from x/leave",
                         "error a: first_error(8) from x/leave"});
        CHECK(r.error() == nullptr);
    }
    SECTION("its own error stage handles it: the outer interceptors get leave")
    {
        chain ch{
            {.name = "a", .leave = logs(k, "leave a"), .error = on_error(error_kind, "a")},
            x(handle),
            passthrough("y", k),
        };
        const test_ctx r = run_ok(ch);
        CHECK(
            r.log
            == strings{"enter x", "enter y", "leave y", "leave x", "error x: first_error(8) from x/leave", "leave a"});
        CHECK(r.error() == nullptr);
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Terminators
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: a terminator true after b stops the enter phase, b and a still leave", "[chain]")
{
    const kind k = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
    CAPTURE(kind_name(k));

    SECTION("terminate_when")
    {
        int checks = 0;
        chain ch{
            passthrough("a", kind::sync_ref),
            {.name = "b",
             .enter = make_stage(k, say_then("enter b", [](test_ctx& c) { c.stop = true; })),
             .leave = logs(k, "leave b")},
            passthrough("c", kind::sync_ref),
            passthrough("d", kind::async_ref),
        };
        ch.terminate_when([&checks](const test_ctx&) {
              ++checks;
              return false;
          }).terminate_when([](const test_ctx& c) { return c.stop; });
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter b", "leave b", "leave a"});
        CHECK(checks == 2); // after the enter of a and of b
    }
    SECTION("plinth::terminate from b")
    {
        chain ch{
            passthrough("a", kind::sync_ref),
            {.name = "b",
             .enter = make_stage(k, say_then("enter b", [](test_ctx& c) { plinth::terminate(c); })),
             .leave = logs(k, "leave b")},
            passthrough("c", kind::sync_ref),
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter b", "leave b", "leave a"});
    }
    SECTION("plinth::terminate during leave has no effect")
    {
        chain ch{
            passthrough("a", kind::sync_ref),
            {.name = "b",
             .enter = logs(k, "enter b"),
             .leave = make_stage(k, say_then("leave b", [](test_ctx& c) { plinth::terminate(c); }))},
            passthrough("c", k),
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter b", "enter c", "leave c", "leave b", "leave a"});
        CHECK(r.error() == nullptr);
    }
}

// ---------------------------------------------------------------------------------------------
// 10. An async enter that sets a response
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: an async enter that sets a response terminates the chain", "[chain]")
{
    const kind k = GENERATE(kind::async_value, kind::async_ref);
    CAPTURE(kind_name(k));
    chain ch{
        passthrough("a", kind::sync_ref),
        {.name = "b",
         .enter = make_stage(k, say_then("enter b", [](test_ctx& c) { c.response = "hello from b"; }), 5ms),
         .leave = make_stage(kind::sync_ref,
                             [](test_ctx& c) { c.log.push_back("leave b sees " + c.response.value_or("nothing")); })},
        passthrough("c", kind::sync_ref),
    };
    ch.terminate_when([](const test_ctx& c) { return c.response.has_value(); });
    const test_ctx r = run_ok(ch);
    CHECK(r.log == strings{"enter a", "enter b", "leave b sees hello from b", "leave a"});
    REQUIRE(r.response.has_value());
    CHECK(*r.response == "hello from b");
}

// ---------------------------------------------------------------------------------------------
// 11. Async order, and the strand
// ---------------------------------------------------------------------------------------------

namespace {

// Moves the coroutine onto `pool`, then records whether it really runs there.
asio::awaitable<void> hop_to(asio::thread_pool& pool, test_ctx& c, std::string what)
{
    co_await asio::post(asio::bind_executor(pool, asio::use_awaitable));
    c.log.push_back(what + (pool.get_executor().running_in_this_thread() ? " on pool" : " NOT on pool"));
}

asio::awaitable<test_ctx> hop_to_value(asio::thread_pool& pool, test_ctx c, std::string what)
{
    co_await hop_to(pool, c, std::move(what));
    co_return std::move(c);
}

asio::awaitable<void> hop_then_throw(asio::thread_pool& pool, test_ctx& c)
{
    co_await hop_to(pool, c, "enter hop_throw");
    throw first_error{11};
}

} // namespace

TEST_CASE("chain: async stages keep their order, and stages after an async one run on the chain's strand", "[chain]")
{
    SECTION("two async stages keep their order, whatever their durations")
    {
        chain ch{
            {.name = "a", .enter = logs(kind::async_ref, "enter a", 30ms), .leave = logs(kind::async_value, "leave a")},
            {.name = "b", .enter = logs(kind::async_value, "enter b"), .leave = logs(kind::async_ref, "leave b", 30ms)},
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter b", "leave b", "leave a"});
    }
    SECTION("stages after a stage that hopped to a pool run on the strand")
    {
        asio::io_context ioc{2};
        auto strand = asio::make_strand(ioc);
        asio::thread_pool pool{1};

        const auto on_strand = [strand](std::string what) {
            return [strand, what](test_ctx& c) {
                c.log.push_back(what + (strand.running_in_this_thread() ? " on strand" : " NOT on strand"));
            };
        };
        chain ch{
            {.name = "first",
             .enter = make_stage(kind::sync_ref, on_strand("enter first")),
             .leave = make_stage(kind::sync_value, on_strand("leave first")),
             .error =
                 [on_strand](test_ctx& c, std::exception_ptr e) {
                     on_strand("error first")(c);
                     c.log.push_back(describe(e));
                 }},
            {.name = "hop_ref",
             .enter = [&pool](test_ctx& c) { return hop_to(pool, c, "enter hop_ref"); },
             .leave = [&pool](test_ctx& c) { return hop_to(pool, c, "leave hop_ref"); }},
            {.name = "after_ref",
             .enter = make_stage(kind::sync_ref, on_strand("enter after_ref")),
             .leave = make_stage(kind::sync_value, on_strand("leave after_ref"))},
            {.name = "hop_value",
             .enter = [&pool](test_ctx c) { return hop_to_value(pool, std::move(c), "enter hop_value"); }},
            {.name = "after_value", .enter = make_stage(kind::sync_value, on_strand("enter after_value"))},
        };
        strings expected{"enter first on strand",   "enter hop_ref on pool",       "enter after_ref on strand",
                         "enter hop_value on pool", "enter after_value on strand", "leave after_ref on strand",
                         "leave hop_ref on pool",   "leave first on strand"};

        SECTION("no error") {}
        SECTION("an async stage hops to the pool and throws there: the error stage runs on the strand")
        {
            ch.push_back({.name = "hop_throw", .enter = [&pool](test_ctx& c) { return hop_then_throw(pool, c); }});
            expected = {"enter first on strand",       "enter hop_ref on pool",
                        "enter after_ref on strand",   "enter hop_value on pool",
                        "enter after_value on strand", "enter hop_throw on pool",
                        "error first on strand",       "first_error(11)"};
        }

        bool done = false;
        std::exception_ptr failure;
        test_ctx result;
        ch.async_execute(strand, test_ctx{}, [&](std::exception_ptr e, test_ctx c) {
            done = true;
            failure = std::move(e);
            result = std::move(c);
        });
        std::thread second([&ioc] { ioc.run(); });
        ioc.run();
        second.join();
        pool.join();

        REQUIRE(done);
        REQUIRE_FALSE(failure);
        CHECK(result.log == expected);
    }
}

// ---------------------------------------------------------------------------------------------
// 12. An async stage that throws after a co_await
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: an async stage that throws after a co_await reaches the error stages with its original type",
          "[chain]")
{
    const kind k = GENERATE(kind::async_value, kind::async_ref);
    CAPTURE(kind_name(k));

    SECTION("an enter stage throws after a timer")
    {
        chain ch{
            {.name = "a", .leave = logs(kind::sync_ref, "leave a"), .error = on_error(kind::async_ref, "a")},
            {.name = "b", .enter = make_stage(k, say_then("enter b", [](test_ctx&) { throw first_error{12}; }), 5ms)},
            passthrough("c", kind::sync_ref),
        };
        const test_ctx r = run_ok(ch);
        REQUIRE(!r.log.empty());
        CHECK(r.log.back() == "error a: first_error(12) from b/enter");
        CHECK_FALSE(contains(r.log, "enter c"));
        CHECK_FALSE(contains(r.log, "leave a"));
        if (k == kind::async_ref)
            CHECK(r.log == strings{"enter b", "error a: first_error(12) from b/enter"});
        REQUIRE(r.seen.size() == 1);
        REQUIRE_THROWS_AS(std::rethrow_exception(r.seen[0]), first_error);
    }
    SECTION("an async error stage throws a new error after a timer")
    {
        chain ch{
            {.name = "a", .error = on_error(kind::sync_ref, "a")},
            {.name = "b",
             .error = on_error(
                 k, "b", [](std::exception_ptr) { throw second_error("async"); }, 5ms)},
            {.name = "c", .enter = make_stage(kind::sync_ref, [](test_ctx&) { throw first_error{12}; })},
        };
        const test_ctx r = run_ok(ch);
        REQUIRE(!r.log.empty());
        CHECK(r.log.back() == "error a: second_error(async) from b/error, suppressing first_error(12)");
        REQUIRE(!r.seen.empty());
        REQUIRE_THROWS_AS(std::rethrow_exception(r.seen.back()), second_error);
    }
}

// ---------------------------------------------------------------------------------------------
// 13. Async leave and error stages
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: async leave and async error stages keep reverse order", "[chain]")
{
    // The innermost stage waits longest: were the stages not sequential, the outer ones would log first.
    SECTION("leave")
    {
        chain ch{
            {.name = "a", .leave = logs(kind::async_value, "leave a", 0ms)},
            {.name = "b", .leave = logs(kind::async_ref, "leave b", 15ms)},
            {.name = "c", .leave = logs(kind::async_value, "leave c", 30ms)},
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"leave c", "leave b", "leave a"});
    }
    SECTION("error")
    {
        chain ch{
            {.name = "a",
             .leave = logs(kind::sync_ref, "leave a"),
             .error = on_error(kind::async_value, "a", handle, 0ms)},
            {.name = "b", .error = on_error(kind::async_ref, "b", pass_on, 15ms)},
            {.name = "c", .error = on_error(kind::async_ref, "c", pass_on, 30ms)},
            {.name = "d", .enter = make_stage(kind::async_ref, [](test_ctx&) { throw first_error{13}; })},
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log
              == strings{"error c: first_error(13) from d/enter", "error b: first_error(13) from d/enter",
                         "error a: first_error(13) from d/enter"});
        CHECK(r.error() == nullptr);
    }
    SECTION("leave and error mixed: an async leave throws, async error stages take over")
    {
        chain ch{
            {.name = "a", .leave = logs(kind::async_ref, "leave a", 0ms)},
            {.name = "b",
             .leave = logs(kind::async_ref, "leave b", 0ms),
             .error = on_error(kind::async_ref, "b", handle, 10ms)},
            {.name = "c",
             .leave = logs(kind::async_ref, "leave c", 0ms),
             .error = on_error(kind::async_ref, "c", pass_on, 20ms)},
            {.name = "d",
             .leave = make_stage(kind::async_ref, say_then("leave d", [](test_ctx&) { throw first_error{13}; }), 30ms)},
        };
        const test_ctx r = run_ok(ch);
        CHECK(r.log
              == strings{"leave d", "error c: first_error(13) from d/leave", "error b: first_error(13) from d/leave",
                         "leave a"});
    }
}

// ---------------------------------------------------------------------------------------------
// 14. An async handler's response
// ---------------------------------------------------------------------------------------------

namespace {

// A plain asynchronous handler: request -> awaitable<response>.
asio::awaitable<std::string> echo_handler(std::string request)
{
    asio::steady_timer timer(co_await asio::this_coro::executor, 5ms);
    co_await timer.async_wait(asio::use_awaitable);
    co_return "echo: " + request;
}

using async_handler = std::function<asio::awaitable<std::string>(std::string)>;

asio::awaitable<void> store_response(test_ctx& c, async_handler h)
{
    c.response = co_await h(c.request);
}

// Adapts a handler into an interceptor whose enter stores the response in the context.
interceptor handler_interceptor(std::string name, async_handler h)
{
    return {.name = std::move(name), .enter = [h](test_ctx& c) { return store_response(c, h); }};
}

} // namespace

TEST_CASE("chain: an async handler's response reaches the client", "[chain]")
{
    // The "client" is whoever writes the response on the way out (the outermost leave) and the
    // completion handler of async_execute.
    chain ch{
        {.name = "writer",
         .leave = make_stage(kind::sync_ref,
                             [](test_ctx& c) { c.log.push_back("write " + c.response.value_or("<no response>")); })},
        passthrough("auth", kind::async_ref),
        handler_interceptor("echo", echo_handler),
        passthrough("never", kind::sync_ref),
    };
    ch.terminate_when([](const test_ctx& c) { return c.response.has_value(); });

    test_ctx request;
    request.request = "ping";
    const test_ctx r = run_ok(ch, std::move(request));
    REQUIRE(r.response.has_value());
    CHECK(*r.response == "echo: ping");
    CHECK(r.log == strings{"enter auth", "leave auth", "write echo: ping"});
    CHECK(r.error() == nullptr);
}

// ---------------------------------------------------------------------------------------------
// 15. Observers
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: observers see exactly the stages that exist, in order, sync and async alike", "[chain]")
{
    const kind k = GENERATE(from_range(std::begin(all_kinds), std::end(all_kinds)));
    const kind other = (k == kind::sync_value || k == kind::sync_ref) ? kind::async_ref : kind::sync_value;
    CAPTURE(kind_name(k));

    strings events;
    const auto observer = [&events](const test_ctx& c, plinth::stage st, std::string_view name,
                                    plinth::observe_point p) {
        events.push_back(std::string(p == plinth::observe_point::before ? "before " : "after ")
                         + std::string(plinth::to_string(st)) + " " + std::string(name) + " (log "
                         + std::to_string(c.log.size()) + ")");
    };

    SECTION("without error")
    {
        chain ch{
            {.name = "a", .enter = logs(k, "enter a"), .leave = logs(other, "leave a")},
            {.name = "b", .leave = logs(k, "leave b")},
            {.name = "c", .enter = logs(other, "enter c"), .error = on_error(k, "c")},
            {.name = "d", .enter = logs(k, "enter d"), .leave = logs(k, "leave d")},
            {.name = "e", .error = on_error(other, "e")},
        };
        ch.observe(observer);
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter c", "enter d", "leave d", "leave b", "leave a"});
        CHECK(events
              == strings{"before enter a (log 0)", "after enter a (log 1)", "before enter c (log 1)",
                         "after enter c (log 2)", "before enter d (log 2)", "after enter d (log 3)",
                         "before leave d (log 3)", "after leave d (log 4)", "before leave b (log 4)",
                         "after leave b (log 5)", "before leave a (log 5)", "after leave a (log 6)"});
    }
    SECTION("with an error handled on the way out")
    {
        chain ch{
            {.name = "a", .enter = logs(k, "enter a"), .leave = logs(other, "leave a")},
            {.name = "b", .leave = logs(k, "leave b"), .error = on_error(other, "b")},
            {.name = "c", .enter = logs(other, "enter c"), .leave = logs(k, "leave c")},
            {.name = "t",
             .enter = make_stage(by_ref(k), say_then("enter t", [](test_ctx&) { throw first_error{15}; }))},
            passthrough("never", k),
        };
        ch.observe(observer);
        const test_ctx r = run_ok(ch);
        CHECK(r.log == strings{"enter a", "enter c", "enter t", "error b: first_error(15) from t/enter", "leave a"});
        // Whether an observer hears "after" for the stage that threw is not specified: leave it out.
        strings seen = events;
        seen.erase(std::remove_if(seen.begin(), seen.end(),
                                  [](const std::string& e) { return e.rfind("after enter t ", 0) == 0; }),
                   seen.end());
        CHECK(seen
              == strings{"before enter a (log 0)", "after enter a (log 1)", "before enter c (log 1)",
                         "after enter c (log 2)", "before enter t (log 2)", "before error b (log 3)",
                         "after error b (log 4)", "before leave a (log 4)", "after leave a (log 5)"});
    }
}

// ---------------------------------------------------------------------------------------------
// 16. No allocation per synchronous stage
// ---------------------------------------------------------------------------------------------

namespace {

// The allocations of one whole run of `ch` on `ex` (co_spawn, the coroutine frames, the executor's
// operations, the completion), `drive` making it progress; every stage must have counted once.
template <class Executor, class Drive>
std::size_t allocations_of_one_run(const chain& ch, const Executor& ex, Drive drive, int stages)
{
    bool done = false;
    bool failed = true;
    int count = -1;
    std::size_t allocations = 0;
    {
        plinth_test::allocation_scope scope;
        ch.async_execute(ex, test_ctx{}, [&](std::exception_ptr e, test_ctx c) {
            done = true;
            failed = e || c.error() != nullptr;
            count = c.count;
        });
        drive();
        allocations = scope.allocations();
    }
    REQUIRE(done);
    REQUIRE_FALSE(failed);
    REQUIRE(count == stages);
    return allocations;
}

stage_fn counting(kind k)
{
    if (k == kind::sync_value)
        return [](test_ctx c) {
            ++c.count;
            return c;
        };
    return [](test_ctx& c) { ++c.count; };
}

chain counting_chain(int interceptors, kind enter, std::optional<kind> leave = std::nullopt)
{
    chain ch;
    for (int i = 0; i < interceptors; ++i) {
        interceptor x{.name = "s" + std::to_string(i), .enter = counting(enter)};
        if (leave)
            x.leave = counting(*leave);
        ch.push_back(std::move(x));
    }
    return ch;
}

// An executor that runs every function at once on the calling thread, outside any io_context.
// Asio recycles handler and coroutine-frame memory through a per-thread cache that exists only
// inside io_context::run; here that cache is out of play, so every Asio allocation is a fresh one
// the counter sees, and a coroutine frame per stage would cost one allocation per stage.
// (It claims to honour blocking.never without doing so: good enough for a run that never waits.)
class inline_executor {
public:
    explicit inline_executor(asio::execution_context& context) noexcept
        : context_(&context)
    {
    }

    asio::execution_context& query(asio::execution::context_t) const noexcept { return *context_; }
    static constexpr asio::execution::blocking_t query(asio::execution::blocking_t) noexcept
    {
        return asio::execution::blocking.always;
    }
    inline_executor require(asio::execution::blocking_t::never_t) const noexcept { return *this; }

    template <class F>
    void execute(F&& f) const
    {
        std::forward<F>(f)();
    }

    bool operator==(const inline_executor&) const noexcept = default;

private:
    asio::execution_context* context_;
};

struct allocation_costs {
    std::size_t one;
    std::size_t ten;
};

// Allocations of one run of `one` and of `ten`, after a warm-up run of each, on `ex`.
template <class Executor, class Drive>
allocation_costs measure(const chain& one, const chain& ten, int one_stages, int ten_stages, const Executor& ex,
                         Drive drive)
{
    allocations_of_one_run(one, ex, drive, one_stages); // warm-up
    allocations_of_one_run(ten, ex, drive, ten_stages); // warm-up
    const allocation_costs costs{allocations_of_one_run(one, ex, drive, one_stages),
                                 allocations_of_one_run(ten, ex, drive, ten_stages)};
    // The run itself allocates (co_spawn, the execute coroutine frame): the counter must see it,
    // or an equal count would prove nothing.
    REQUIRE(costs.one > 0);
    return costs;
}

} // namespace

TEST_CASE("chain: a fully synchronous chain of 10 stages allocates nothing per stage", "[chain]")
{
    // The counter itself works (a direct call cannot be elided).
    {
        plinth_test::allocation_scope scope;
        void* volatile p = ::operator new(32);
        ::operator delete(p);
        REQUIRE(scope.allocations() == 1);
    }

    // Two ways to run: on an io_context, as a server does; and on an inline executor, where Asio's
    // recycling cache is out of play (see inline_executor): within io_context::run a coroutine frame
    // per stage would reuse one recycled block and go unseen.
    asio::io_context ioc;
    const auto executor = ioc.get_executor();
    const auto drive_ioc = [&ioc] {
        ioc.run();
        ioc.restart();
    };
    asio::execution_context inline_context;
    const inline_executor inline_ex{inline_context};
    const auto drive_inline = [] {}; // on the inline executor, the run completes within async_execute

    const auto check = [&](const chain& one, const chain& ten, int one_stages, int ten_stages, bool same_shapes) {
        const auto on_ioc = measure(one, ten, one_stages, ten_stages, executor, drive_ioc);
        const auto on_inline = measure(one, ten, one_stages, ten_stages, inline_ex, drive_inline);
        CAPTURE(on_ioc.one, on_ioc.ten, on_inline.one, on_inline.ten);
        if (same_shapes) {
            REQUIRE(on_ioc.ten == on_ioc.one);
            REQUIRE(on_inline.ten == on_inline.one);
        }
        else {
            REQUIRE(on_ioc.ten <= on_ioc.one);
            REQUIRE(on_inline.ten <= on_inline.one);
        }
    };

    SECTION("stages by value: 10 stages cost as much as 1")
    {
        check(counting_chain(1, kind::sync_value), counting_chain(10, kind::sync_value), 1, 10, true);
    }
    SECTION("stages by reference: 10 stages cost as much as 1")
    {
        check(counting_chain(1, kind::sync_ref), counting_chain(10, kind::sync_ref), 1, 10, true);
    }
    SECTION("enter by value and leave by reference: 10 interceptors cost no more than 1")
    {
        check(counting_chain(1, kind::sync_value, kind::sync_ref), counting_chain(10, kind::sync_value, kind::sync_ref),
              2, 20, false);
    }
    SECTION("enter by reference and leave by value: 10 interceptors cost no more than 1")
    {
        check(counting_chain(1, kind::sync_ref, kind::sync_value), counting_chain(10, kind::sync_ref, kind::sync_value),
              2, 20, false);
    }
}

// ---------------------------------------------------------------------------------------------
// By-reference stages and a throw
// ---------------------------------------------------------------------------------------------

TEST_CASE("chain: a by-reference stage that throws leaves the context intact for the error stages", "[chain]")
{
    const kind k = GENERATE(kind::sync_ref, kind::async_ref);
    CAPTURE(kind_name(k));

    chain ch{
        {.name = "outer",
         .error =
             [](test_ctx& c, std::exception_ptr e) {
                 c.log.push_back("outer sees request '" + c.request + "'");
                 c.log.push_back(error_entry("outer", c, e));
             }},
        {.name = "inner",
         .error =
             [](test_ctx& c, std::exception_ptr e) {
                 // An error stage by reference that throws something new also keeps the context.
                 c.log.push_back("inner sees request '" + c.request + "' and " + describe(e));
                 throw second_error("inner");
             }},
        {.name = "t",
         .enter = make_stage(k,
                             [](test_ctx& c) {
                                 c.log.push_back("t changed the request");
                                 c.request = "changed by t";
                                 throw first_error{0};
                             })},
    };
    test_ctx ctx;
    ctx.request = "original";
    const test_ctx r = run_ok(ch, std::move(ctx));
    CHECK(r.request == "changed by t");
    CHECK(r.log
          == strings{"t changed the request", "inner sees request 'changed by t' and first_error(0)",
                     "outer sees request 'changed by t'",
                     "error outer: second_error(inner) from inner/error, suppressing first_error(0)"});
    CHECK(r.error() == nullptr);
}

TEST_CASE("chain: a by-value stage that forgets to return its context does not compile as a stage", "[chain]")
{
    auto forgetful = [](test_ctx c) { c.log.push_back("lost"); };
    auto forgetful_async = [](test_ctx) -> asio::awaitable<void> { co_return; };
    auto read_only = [](const test_ctx&) {};
    STATIC_REQUIRE_FALSE(std::is_constructible_v<stage_fn, decltype(forgetful)>);
    STATIC_REQUIRE_FALSE(std::is_constructible_v<stage_fn, decltype(forgetful_async)>);
    STATIC_REQUIRE_FALSE(std::is_constructible_v<stage_fn, decltype(read_only)>);
    STATIC_REQUIRE(std::is_constructible_v<stage_fn, void (*)(test_ctx&)>);
    STATIC_REQUIRE(std::is_constructible_v<stage_fn, test_ctx (*)(test_ctx)>);
}

TEST_CASE("chain: enqueueing a list with an invalid interceptor queues none of it", "[chain]")
{
    chain ch{{.name = "a", .enter = [](test_ctx& c) {
                  const interceptor list[] = {{.name = "ok", .enter = [](test_ctx& c) { c.log.push_back("enter ok"); }},
                                              {.name = "no stage"}};
                  try_enqueue(c, "copied list", [&] { plinth::enqueue(c, std::span<const interceptor>(list)); });
                  try_enqueue(c, "referenced list",
                              [&] { plinth::enqueue_ref(c, std::span<const interceptor>(list)); });
              }}};
    auto ctx = run_ok(ch);
    CHECK(ctx.log == strings{"rejected copied list", "rejected referenced list"});
}

TEST_CASE("chain: terminators are checked after interceptors without an enter stage too", "[chain]")
{
    chain ch{
        {.name = "a", .leave = [](test_ctx& c) { c.log.push_back("leave a"); }},
        {.name = "b", .enter = [](test_ctx& c) { c.log.push_back("enter b"); }},
    };
    ch.terminate_when([](const test_ctx& c) { return c.log.empty(); }); // true from the start
    auto ctx = run_ok(ch);
    CHECK(ctx.log == strings{"leave a"});
}

// ---------------------------------------------------------------------------------------------
// 17. Cancelling the chain mid-await
// ---------------------------------------------------------------------------------------------

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/system/system_error.hpp>

namespace {

// True when `e` is a boost::system::system_error carrying asio::error::operation_aborted.
bool is_operation_aborted(const std::exception_ptr& e)
{
    try {
        if (e)
            std::rethrow_exception(e);
    }
    catch (const boost::system::system_error& x) {
        return x.code() == asio::error::operation_aborted;
    }
    catch (...) {
    }
    return false;
}

// An async enter stage that waits 10 s on a timer, logging how the wait ended.
asio::awaitable<void> wait_ten_seconds(test_ctx& c)
{
    c.log.push_back("enter waiter");
    asio::steady_timer timer(co_await asio::this_coro::executor, 10s);
    try {
        co_await timer.async_wait(asio::use_awaitable);
    }
    catch (const boost::system::system_error& e) {
        c.log.push_back(e.code() == asio::error::operation_aborted ? "timer: operation_aborted"
                                                                   : "timer: " + e.code().message());
        throw;
    }
    c.log.push_back("timer expired");
}

// An error stage that logs whether it sees operation_aborted from the waiter's enter, then
// handles the error or passes it on.
error_fn abort_observer(std::string name, bool handles)
{
    return [name, handles](test_ctx& c, std::exception_ptr e) {
        const plinth::chain_error* err = c.error();
        c.log.push_back("error " + name + ": " + (is_operation_aborted(e) ? "operation_aborted" : describe(e))
                        + (err ? " from " + where(*err) : std::string(" (no record)")));
        c.seen.push_back(e);
        if (!handles)
            std::rethrow_exception(e);
        c.response = "aborted, handled by " + name;
    };
}

} // namespace

TEST_CASE("chain: cancelling the chain mid-await ends the awaited timer with operation_aborted, the error stages "
          "see it and the outer leave stages are not called",
          "[chain]")
{
    const bool outer_handles = GENERATE(false, true);
    CAPTURE(outer_handles);

    chain ch{
        {.name = "outer",
         .enter = logs(kind::sync_ref, "enter outer"),
         .leave = logs(kind::sync_ref, "leave outer"),
         .error = abort_observer("outer", outer_handles)},
        // An async error stage still runs normally after the cancellation.
        {.name = "middle",
         .enter = logs(kind::sync_value, "enter middle"),
         .leave = logs(kind::async_ref, "leave middle"),
         .error = on_error(kind::async_ref, "middle", pass_on, 1ms)},
        {.name = "waiter",
         .enter = [](test_ctx& c) { return wait_ten_seconds(c); },
         .leave = logs(kind::sync_ref, "leave waiter")},
        passthrough("after", kind::sync_ref),
    };

    asio::io_context ioc;
    auto strand = asio::make_strand(ioc);
    asio::cancellation_signal signal;
    outcome out;
    asio::co_spawn(strand, ch.execute(test_ctx{}),
                   asio::bind_cancellation_slot(signal.slot(), [&out](std::exception_ptr e, test_ctx c) {
                       out.done = true;
                       out.exception = std::move(e);
                       out.ctx = std::move(c);
                   }));
    // The client goes away 50 ms in: the connection emits a terminal cancellation, on the strand.
    bool emitted = false;
    asio::steady_timer disconnect(strand, 50ms);
    disconnect.async_wait([&](boost::system::error_code ec) {
        if (ec)
            return;
        emitted = true;
        signal.emit(asio::cancellation_type::terminal);
    });

    const auto t0 = std::chrono::steady_clock::now();
    ioc.run();
    const auto elapsed = std::chrono::steady_clock::now() - t0;

    REQUIRE(emitted);
    REQUIRE(out.done);
    REQUIRE_FALSE(out.exception);
    CHECK(elapsed < 5s); // well before the 10 s timer
    const test_ctx& r = out.ctx;
    CHECK_FALSE(r.executing());

    // The stage saw its timer aborted; the error stages, innermost first, saw operation_aborted
    // as a boost::system::system_error from waiter/enter; no leave stage ran; "after" never entered.
    REQUIRE(r.log.size() == 6);
    CHECK(r.log[0] == "enter outer");
    CHECK(r.log[1] == "enter middle");
    CHECK(r.log[2] == "enter waiter");
    CHECK(r.log[3] == "timer: operation_aborted");
    CHECK(r.log[4].rfind("error middle: ", 0) == 0);
    CHECK(r.log[4].find("from waiter/enter") != std::string::npos);
    CHECK(r.log[5] == "error outer: operation_aborted from waiter/enter");
    for (const auto* entry :
         {"leave outer", "leave middle", "leave waiter", "enter after", "leave after", "timer expired"})
        CHECK_FALSE(contains(r.log, entry));
    REQUIRE(r.seen.size() == 2);
    for (const auto& e : r.seen) {
        CHECK(is_operation_aborted(e));
        REQUIRE_THROWS_AS(std::rethrow_exception(e), boost::system::system_error);
    }
    CHECK(r.seen[0] == r.seen[1]); // passed on as the same exception object

    if (outer_handles) {
        // Handled: the result carries no error, and what the error stage decided.
        CHECK(r.error() == nullptr);
        CHECK(r.response == std::optional<std::string>("aborted, handled by outer"));
    }
    else {
        // Unhandled: the result carries the original error with where it came from.
        REQUIRE(r.error() != nullptr);
        CHECK(where(*r.error()) == "waiter/enter");
        CHECK(is_operation_aborted(r.error()->exception));
        CHECK(r.error()->suppressed.empty());
        CHECK_FALSE(r.response.has_value());
    }
}

TEST_CASE("chain: a cancellation that arrives between two stages starts no further async stage; error stages see "
          "operation_aborted",
          "[chain]")
{
    asio::io_context ioc;
    asio::cancellation_signal signal;
    std::optional<test_ctx> out;
    chain ch{
        {.name = "catcher",
         .error =
             [](test_ctx& c, std::exception_ptr e) {
                 try {
                     std::rethrow_exception(e);
                 }
                 catch (const boost::system::system_error& se) {
                     c.log.push_back(se.code() == asio::error::operation_aborted ? "error: aborted" : "error: other");
                 }
             }},
        // Emits while no operation is pending: nothing is there to be cancelled right now.
        {.name = "a",
         .enter = [&](test_ctx& c) -> asio::awaitable<void> {
             c.log.push_back("enter a");
             signal.emit(asio::cancellation_type::terminal);
             co_return;
         }},
        {.name = "b",
         .enter = [](test_ctx& c) -> asio::awaitable<void> {
             c.log.push_back("enter b");
             co_return;
         }},
    };
    asio::co_spawn(
        ioc, ch.execute(test_ctx{}),
        asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr, test_ctx c) { out = std::move(c); }));
    ioc.run();
    REQUIRE(out.has_value());
    CHECK(out->log == strings{"enter a", "error: aborted"});
    CHECK(out->error() == nullptr); // handled by the catcher
}

// ---------------------------------------------------------------------------------------------
// chain_walk: the stepping API a server's connection drives without a coroutine
// ---------------------------------------------------------------------------------------------

namespace {

// Drives `walk` over `ctx` with callbacks only: callback stages through start(), the rest (there
// are none in these tests) would need step(). Calls `done` once the walk is over.
void drive(plinth::chain_walk<test_ctx>& walk, test_ctx& ctx, std::function<void()> done)
{
    while (walk.advance(ctx)) {
        REQUIRE(walk.pending_is_callback());
        walk.start(ctx, [&walk, &ctx, done](std::exception_ptr e) mutable {
            walk.complete(ctx, std::move(e));
            drive(walk, ctx, std::move(done));
        });
        return;
    }
    done();
}

// A callback stage that logs `what` and ends later, through `ioc`, with `error` (may be null).
plinth::callback_stage<std::function<void(test_ctx&, plinth::stage_handler)>> later(asio::io_context& ioc,
                                                                                    std::string what,
                                                                                    std::exception_ptr error = nullptr)
{
    return {[&ioc, what, error](test_ctx& c, plinth::stage_handler h) {
        c.log.push_back(what);
        asio::post(ioc, [h = std::move(h), error]() mutable { std::move(h)(error); });
    }};
}

} // namespace

TEST_CASE("chain_walk: callback stages driven by start() keep Pedestal's order and error path, with no coroutine",
          "[chain][walk]")
{
    asio::io_context ioc;
    chain ch{
        {.name = "a", .enter = later(ioc, "enter a"), .leave = later(ioc, "leave a")},
        {.name = "b",
         .enter = later(ioc, "enter b"),
         .error = [](test_ctx& c, std::exception_ptr e) { c.log.push_back("error b: " + describe(e)); }},
        {.name = "c", .enter = later(ioc, "enter c", std::make_exception_ptr(second_error("c failed")))},
        {.name = "d", .enter = later(ioc, "enter d")},
    };
    test_ctx ctx;
    plinth::chain_walk<test_ctx> walk{ch};
    walk.begin(ctx);
    bool done = false;
    drive(walk, ctx, [&] { done = true; });
    CHECK_FALSE(done); // nothing ran inside start()
    ioc.run();
    REQUIRE(done);
    walk.end(ctx);
    CHECK(ctx.log == strings{"enter a", "enter b", "enter c", "error b: second_error(c failed)", "leave a"});
    CHECK(ctx.error() == nullptr); // handled by b
    CHECK_FALSE(ctx.executing());
}

TEST_CASE("chain_walk: once cancelled, no enter stage starts, synchronous ones included; leave and error stages "
          "still run",
          "[chain][walk]")
{
    asio::io_context ioc;
    plinth::chain_walk<test_ctx>* running = nullptr;
    chain ch{
        {.name = "outer",
         .leave = [](test_ctx& c) { c.log.push_back("leave outer"); },
         .error =
             [](test_ctx& c, std::exception_ptr e) {
                 c.log.push_back(std::string("error outer: ") + (is_operation_aborted(e) ? "aborted" : describe(e)));
             }},
        // The client leaves while this stage waits; the stage itself swallows it and ends normally.
        {.name = "waits", .enter = plinth::callback_stage{[&](test_ctx& c, plinth::stage_handler h) {
                              c.log.push_back("enter waits");
                              asio::post(ioc, [&running, h = std::move(h)]() mutable {
                                  running->cancel();
                                  std::move(h)(nullptr);
                              });
                          }}},
        {.name = "sync", .enter = [](test_ctx& c) { c.log.push_back("enter sync"); }},
        {.name = "later", .enter = later(ioc, "enter later")},
    };
    test_ctx ctx;
    plinth::chain_walk<test_ctx> walk{ch};
    running = &walk;
    walk.begin(ctx);
    bool done = false;
    drive(walk, ctx, [&] { done = true; });
    ioc.run();
    REQUIRE(done);
    walk.end(ctx);
    CHECK(walk.cancelled());
    CHECK(ctx.log == strings{"enter waits", "error outer: aborted"});
    REQUIRE(ctx.error() == nullptr); // outer handled it
}
