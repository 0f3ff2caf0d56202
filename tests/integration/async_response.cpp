// Suspended requests over real loopback sockets: resume from another thread, cancel, timeout,
// disconnect while suspended, pipelining behind a suspended request, write failure, races,
// 10,000 suspended at once, stop.

#include "test_server.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace plinth_test;
using namespace std::chrono_literals;

namespace {

/// Where the /park route leaves its handles, with what their callbacks reported.
struct parking_lot {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<plinth::async_response> handles;
    std::vector<std::string> events; // "disconnect", "complete", "complete: <error>"
    std::vector<std::promise<std::exception_ptr>> completions;

    plinth::route route(std::string path = "/park")
    {
        return {http::verb::get, std::move(path), [this](const plinth::request&, plinth::async_response ar) {
                    std::lock_guard lock(mutex);
                    auto& done = completions.emplace_back();
                    ar.on_disconnect([this] { record("disconnect"); });
                    ar.on_complete([this, &done](std::exception_ptr e) {
                        record(e ? "complete: error" : "complete");
                        done.set_value(e);
                    });
                    handles.push_back(ar);
                    cv.notify_all();
                }};
    }

    void record(std::string e)
    {
        std::lock_guard lock(mutex);
        events.push_back(std::move(e));
    }

    /// Sends `GET /park` (then `more`, pipelined) on `c` and waits for the request's handle.
    plinth::async_response park(client& c, std::string_view more = {})
    {
        std::size_t n;
        {
            std::lock_guard lock(mutex);
            n = handles.size();
        }
        c.write_raw("GET /park HTTP/1.1\r\nHost: t\r\n\r\n" + std::string(more));
        return wait_for(n);
    }

    /// The n-th handle, once parked.
    plinth::async_response wait_for(std::size_t n, std::chrono::seconds timeout = 10s)
    {
        std::unique_lock lock(mutex);
        REQUIRE(cv.wait_for(lock, timeout, [&] { return handles.size() > n; }));
        return handles[n];
    }

    std::exception_ptr completion(std::size_t n)
    {
        std::future<std::exception_ptr> f;
        {
            std::lock_guard lock(mutex);
            f = completions.at(n).get_future();
        }
        REQUIRE(f.wait_for(10s) == std::future_status::ready);
        return f.get();
    }

    std::vector<std::string> recorded()
    {
        std::lock_guard lock(mutex);
        return events;
    }

    // Keep promises stable: reserve once, before any request arrives.
    parking_lot() { completions.reserve(20'000); }
};

std::vector<plinth::route> routes_with(parking_lot& lot)
{
    return {
        lot.route(),
        {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello, World!"); }},
    };
}

void reset_connection(client& c)
{
    // SO_LINGER 0: close sends a reset, as a crashed client would.
    linger l{1, 0};
    ::setsockopt(c.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    c.close();
}

} // namespace

TEST_CASE("async_response: resumed from another thread, the client gets that response, then on_complete fires",
          "[async_response]")
{
    parking_lot lot;
    test_server srv{routes_with(lot)};
    client c{srv.port()};
    auto ar = lot.park(c);
    CHECK(ar.is_suspended());
    CHECK(srv.server().stats().suspended == 1);

    bool won = false;
    std::thread([&] { won = ar.resume(plinth::text("resumed elsewhere")); }).join();
    CHECK(won);
    auto res = c.read();
    CHECK(res.result() == http::status::ok);
    CHECK(res.body() == "resumed elsewhere");
    CHECK(lot.completion(0) == nullptr);
    CHECK_FALSE(ar.resume(plinth::text("again")));
    CHECK(ar.is_done());

    // The connection is still good for the next request.
    CHECK(c.get("/hello").body() == "Hello, World!");
    auto s = srv.server().stats();
    CHECK(s.suspended == 0);
    CHECK(s.resumed == 1);
    CHECK(s.completed == 1);
}

TEST_CASE("async_response: cancel(20s) answers 503 with Retry-After: 20 and completes", "[async_response]")
{
    parking_lot lot;
    test_server srv{routes_with(lot)};
    client c{srv.port()};
    auto ar = lot.park(c);
    CHECK(ar.cancel(20s));
    CHECK(ar.cancel(40s)); // a second cancel succeeds and changes nothing
    auto res = c.read();
    CHECK(res.result() == http::status::service_unavailable);
    CHECK(res[http::field::retry_after] == "20");
    CHECK(lot.completion(0) == nullptr);
    CHECK(ar.is_cancelled());
    CHECK(srv.server().stats().cancelled == 1);
}

TEST_CASE("async_response: the server's default timeout answers 503 and counts as timed out", "[async_response]")
{
    parking_lot lot;
    plinth::server_options options;
    options.suspend_timeout = 100ms;
    test_server srv{routes_with(lot), options};
    client c{srv.port()};
    auto res = c.get("/park");
    CHECK(res.result() == http::status::service_unavailable);
    CHECK(lot.completion(0) != nullptr); // the unmapped service_unavailable
    CHECK(srv.server().stats().timed_out == 1);
    CHECK(srv.server().stats().suspended == 0);
}

TEST_CASE("async_response: a client that disconnects while suspended: on_disconnect, then on_complete(error); "
          "resume then answers false",
          "[async_response]")
{
    parking_lot lot;
    test_server srv{routes_with(lot)};
    client c{srv.port()};
    auto ar = lot.park(c);
    CHECK(ar.set_timeout(10min));
    c.close();

    auto error = lot.completion(0);
    REQUIRE(error != nullptr);
    CHECK_THROWS_AS(std::rethrow_exception(error), plinth::client_disconnected);
    CHECK(lot.recorded() == std::vector<std::string>{"disconnect", "complete: error"});
    CHECK(ar.is_done());
    CHECK_FALSE(ar.resume(plinth::text("too late")));
    CHECK_FALSE(ar.set_timeout(1s)); // the timer is gone with the request
    auto s = srv.server().stats();
    CHECK(s.disconnected == 1);
    CHECK(s.suspended == 0);
    wait_until([&] { return srv.server().stats().connections == 0; });
}

TEST_CASE("async_response: a pipelined request behind a suspended one is not a disconnect; both are answered in order",
          "[async_response]")
{
    parking_lot lot;
    test_server srv{routes_with(lot)};
    client c{srv.port()};
    auto ar = lot.park(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    std::this_thread::sleep_for(100ms); // give the server time to read the second request ahead
    CHECK(ar.is_suspended());
    CHECK(ar.resume(plinth::text("first")));
    CHECK(c.read().body() == "first");
    CHECK(c.read().body() == "Hello, World!");
    CHECK(lot.completion(0) == nullptr);
    CHECK(lot.recorded() == std::vector<std::string>{"complete"});
}

TEST_CASE("async_response: a write that fails on resume (client gone): on_disconnect, then on_complete(write error)",
          "[async_response]")
{
    parking_lot lot;
    plinth::server_options options;
    options.max_read_ahead_bytes = 1; // the server stops watching after one byte: it cannot see the reset
    test_server srv{routes_with(lot), options};
    client c{srv.port()};
    auto ar = lot.park(c, "X");
    std::this_thread::sleep_for(50ms); // the read-ahead takes the byte and stops
    reset_connection(c);
    std::this_thread::sleep_for(50ms);                         // the reset reaches the server's socket
    CHECK(ar.resume(plinth::text(std::string(1 << 20, 'x')))); // the handle won; the write cannot

    auto error = lot.completion(0);
    REQUIRE(error != nullptr);
    CHECK_THROWS_AS(std::rethrow_exception(error), plinth::client_disconnected);
    CHECK(lot.recorded() == std::vector<std::string>{"disconnect", "complete: error"});
}

TEST_CASE("async_response: 8 threads race to resume; exactly one wins and the client gets its body",
          "[async_response][race]")
{
    parking_lot lot;
    test_server srv{routes_with(lot)};
    for (int round = 0; round < 20; ++round) {
        client c{srv.port()};
        auto ar = lot.park(c);
        std::atomic<int> winners{0};
        std::atomic<int> winner{-1};
        std::barrier start{8};
        std::vector<std::thread> threads;
        for (int i = 0; i < 8; ++i)
            threads.emplace_back([&, i] {
                start.arrive_and_wait();
                if (ar.resume(plinth::text(std::to_string(i)))) {
                    ++winners;
                    winner = i;
                }
            });
        for (auto& t : threads)
            t.join();
        CHECK(winners == 1);
        CHECK(c.read().body() == std::to_string(winner.load()));
    }
}

TEST_CASE("async_response: disconnect racing resume: callbacks fire once each, the server keeps serving",
          "[async_response][race]")
{
    parking_lot lot;
    test_server srv{routes_with(lot)};
    constexpr int rounds = 200;
    for (int round = 0; round < rounds; ++round) {
        client c{srv.port()};
        auto ar = lot.park(c);
        std::barrier start{2};
        std::thread resumer([&] {
            start.arrive_and_wait();
            ar.resume(plinth::text("maybe"));
        });
        start.arrive_and_wait();
        if (round % 2)
            reset_connection(c);
        else
            c.close();
        resumer.join();
        lot.completion(static_cast<std::size_t>(round)); // exactly once: a promise set twice would throw
    }
    auto events = lot.recorded();
    CHECK(std::count(events.begin(), events.end(), "disconnect") <= rounds);
    CHECK(std::count_if(events.begin(), events.end(), [](auto& e) { return e.starts_with("complete"); }) == rounds);
    CHECK(srv.server().stats().suspended == 0);
    client c{srv.port()};
    CHECK(c.get("/hello").result() == http::status::ok);
}

TEST_CASE("async_response: an awaitable in flight is cancelled when its client leaves; error stages see it",
          "[async_response]")
{
    std::promise<boost::system::error_code> seen;
    std::promise<void> entered;
    plinth::interceptor catcher{.name = "catcher", .error = [&](plinth::context& c, std::exception_ptr e) {
                                    try {
                                        std::rethrow_exception(e);
                                    }
                                    catch (const boost::system::system_error& se) {
                                        seen.set_value(se.code());
                                    }
                                    c.response = plinth::text("never sent");
                                }};
    std::vector<plinth::route> routes{
        {http::verb::get, "/sleep", {catcher}, [&](plinth::request) -> asio::awaitable<plinth::response> {
             asio::steady_timer t{co_await asio::this_coro::executor, 10min};
             entered.set_value();
             co_await t.async_wait(asio::use_awaitable);
             co_return plinth::text("woke");
         }}};
    test_server srv{std::move(routes)};
    client c{srv.port()};
    c.write_raw("GET /sleep HTTP/1.1\r\nHost: t\r\n\r\n");
    REQUIRE(entered.get_future().wait_for(5s) == std::future_status::ready);
    c.close();
    auto f = seen.get_future();
    REQUIRE(f.wait_for(5s) == std::future_status::ready);
    CHECK(f.get() == asio::error::operation_aborted);
    wait_until([&] { return srv.server().stats().connections == 0; });
    CHECK(srv.server().stats().requests == 0); // nothing was written
}

TEST_CASE("async_response: beyond max_suspended a suspension is answered 503 at once", "[async_response]")
{
    parking_lot lot;
    plinth::server_options options;
    options.max_suspended = 1;
    test_server srv{routes_with(lot), options};
    client first{srv.port()};
    auto ar = lot.park(first);
    client second{srv.port()};
    CHECK(second.get("/park").result() == http::status::service_unavailable);
    CHECK(ar.resume(plinth::text("ok")));
    CHECK(first.read().body() == "ok");
    lot.park(second); // room again: parked this time (the stop at the end answers it)
}

TEST_CASE("async_response: a throwing callback is logged, the others still run, the server keeps serving",
          "[async_response]")
{
    log_capture log;
    std::promise<void> last_ran;
    std::vector<plinth::route> routes{
        {http::verb::get, "/cb",
         [&](const plinth::request&, plinth::async_response ar) {
             ar.on_complete([](std::exception_ptr) { throw std::runtime_error("callback exploded"); });
             ar.on_complete([&](std::exception_ptr) { last_ran.set_value(); });
             ar.resume(plinth::text("fine"));
         }},
        {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello, World!"); }},
    };
    plinth::server_options options;
    options.log = log.hook();
    test_server srv{std::move(routes), options};
    client c{srv.port()};
    CHECK(c.get("/cb").body() == "fine");
    REQUIRE(last_ran.get_future().wait_for(5s) == std::future_status::ready);
    CHECK(log.contains("callback exploded"));
    CHECK(c.get("/hello").result() == http::status::ok);
}

TEST_CASE("async_response: a request still suspended when the stop's grace ends gets 503 and its on_complete fires",
          "[async_response]")
{
    parking_lot lot;
    test_server srv{routes_with(lot)};
    client c{srv.port()};
    lot.park(c);
    srv.server().stop(100ms);
    CHECK(c.read().result() == http::status::service_unavailable);
    CHECK(lot.completion(0) == nullptr);
    CHECK(srv.join_within(5s));
}

TEST_CASE("async_response: 10,000 requests suspended at once on one thread are all answered from a worker pool",
          "[async_response][capacity]")
{
    constexpr int n = 10'000;
    // The server holds n sockets; the client (another process) the other n.
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    REQUIRE(limit.rlim_cur >= n + 100);

    parking_lot lot;
    test_server srv{routes_with(lot), {}, {}, 1};
    std::string command = std::string(PLINTH_LOAD_CLIENT) + " --port " + std::to_string(srv.port()) + " --connections "
        + std::to_string(n) + " --target /park 2>&1";
    auto load = std::async(std::launch::async, [&] {
        std::string out;
        FILE* p = ::popen(command.c_str(), "r");
        char buf[256];
        while (p && std::fgets(buf, sizeof buf, p))
            out += buf;
        int status = p ? ::pclose(p) : -1;
        return std::make_pair(status, out);
    });

    lot.wait_for(n - 1, 120s);
    CHECK(srv.server().stats().suspended == n);

    asio::thread_pool workers{4};
    for (int i = 0; i < n; ++i)
        asio::post(workers, [ar = lot.handles[static_cast<std::size_t>(i)], i]() mutable {
            ar.resume(plinth::text("resumed " + std::to_string(i)));
        });
    workers.join();

    REQUIRE(load.wait_for(120s) == std::future_status::ready);
    auto [status, output] = load.get();
    INFO(output);
    CHECK(status == 0);
    CHECK(output.find("status_200 10000 failed 0") != std::string::npos);
    wait_until([&] { return srv.server().stats().completed == n; });
    auto s = srv.server().stats();
    CHECK(s.suspended == 0);
    CHECK(s.resumed == n);
    for (const auto& ar : lot.handles)
        CHECK_FALSE(ar.is_suspended());
}

TEST_CASE("async_response: a request that suspends after the stop's grace ended is cancelled at once",
          "[async_response]")
{
    std::promise<void> entered;
    plinth::interceptor slow{.name = "slow", .enter = [&](plinth::context&) -> asio::awaitable<void> {
                                 entered.set_value();
                                 // Not cancellable, so the end of the grace cannot cut this stage short.
                                 asio::steady_timer t{co_await asio::this_coro::executor, 200ms};
                                 co_await t.async_wait(
                                     asio::bind_cancellation_slot(asio::cancellation_slot(), asio::use_awaitable));
                             }};
    std::vector<plinth::route> routes{
        {http::verb::get, "/late", {slow}, [](const plinth::request&, plinth::async_response) { /* never resumed */ }}};
    test_server srv{std::move(routes)};
    client c{srv.port()};
    c.write_raw("GET /late HTTP/1.1\r\nHost: t\r\n\r\n");
    REQUIRE(entered.get_future().wait_for(5s) == std::future_status::ready);
    srv.server().stop(0ms); // the request is in its awaitable stage, not suspended yet
    CHECK(c.read().result() == http::status::service_unavailable);
    CHECK(srv.join_within(5s));
}

TEST_CASE("async_response: a handle kept after its io_context is gone answers false, and the request's connection "
          "and suspension are freed",
          "[async_response]")
{
    // What a suspended request holds is owned, in the end, by an operation the io_context owns:
    // destroying the io_context destroys it, which frees the connection, which releases the
    // suspension. (A waiter kept outside the io_context once made this a reference cycle: the
    // connection leaked and resume() returned true into a dead io_context.)
    std::optional<plinth::async_response> kept;
    std::weak_ptr<plinth::detail::suspension<plinth::response>> state;
    {
        asio::io_context ioc{1};
        plinth::server srv{ioc, {.address = "127.0.0.1", .port = 0}};
        srv.routes({{http::verb::get, "/park", [&](const plinth::request&, plinth::async_response ar) { kept = ar; }}});
        srv.start();
        tcp::socket c{ioc};
        c.connect({asio::ip::make_address("127.0.0.1"), srv.port()});
        asio::write(c, asio::buffer(std::string_view("GET /park HTTP/1.1\r\nHost: t\r\n\r\n")));
        for (int i = 0; i < 500 && !kept; ++i)
            ioc.run_for(std::chrono::milliseconds(10));
        REQUIRE(kept);
        state = plinth::detail::state_of(*kept);
        CHECK(kept->is_suspended());
    }                              // the server, then the io_context, with the request still suspended
    CHECK(state.use_count() == 1); // only the kept handle
    CHECK(kept->is_done());
    CHECK_FALSE(kept->resume(plinth::text("too late")));
    CHECK_FALSE(kept->cancel());
    // The suspension borrowed the connection's strand and the server's log: nothing may reach
    // them now (ASan would see it).
    CHECK_FALSE(kept->set_timeout(std::chrono::milliseconds(1)));
    CHECK_FALSE(kept->on_timeout([](plinth::async_response) {}));
    CHECK_FALSE(kept->on_complete([](std::exception_ptr) {}));
    CHECK_FALSE(kept->on_disconnect([] {}));
}
