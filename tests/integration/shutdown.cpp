// Graceful shutdown over real loopback sockets: the grace, the 503s with Retry-After that end it,
// in-flight work that finishes within it, idle connections, refused connections, repeated stops,
// io_context::run returning.

#include "test_server.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <dirent.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace plinth_test;
using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

/// The Retry-After every test configures, so a 503 from the shutdown is told from any other.
constexpr std::chrono::seconds retry_after{7};

plinth::server_options shutdown_options(std::chrono::milliseconds grace = 5000ms)
{
    plinth::server_options o;
    o.shutdown_grace = grace;
    o.shutdown_retry_after = retry_after;
    return o;
}

long long ms_since(steady::time_point t0, steady::time_point t = steady::now())
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(t - t0).count();
}

/// True when `done()` holds within `timeout` (a wait for a condition, not a sleep).
template <class F>
bool eventually(F done, std::chrono::milliseconds timeout = 5000ms)
{
    const auto deadline = steady::now() + timeout;
    while (!done()) {
        if (steady::now() >= deadline)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

/// Reads `c`'s answer, which the end of the grace must have cut short: 503 with the Retry-After
/// configured above, `earliest` to `latest` after the stop began at `t0`.
void check_503_at_end_of_grace(client& c, steady::time_point t0, std::chrono::milliseconds earliest,
                               std::chrono::milliseconds latest)
{
    auto res = c.read();
    const auto answered_ms = ms_since(t0);
    INFO("answered after " << answered_ms << " ms");
    CHECK(res.result() == http::status::service_unavailable);
    CHECK(res[http::field::retry_after] == "7");
    CHECK(answered_ms >= earliest.count());
    CHECK(answered_ms < latest.count());
}

/// Where the /park route leaves its handles, and how many completed.
struct parking_lot {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<plinth::async_response> handles;
    std::atomic<int> completed{0};            // on_complete fired
    std::atomic<int> completed_with_error{0}; // ...with an exception

    parking_lot() { handles.reserve(2'000); }

    plinth::route route(std::string path = "/park", std::vector<plinth::interceptor> before = {})
    {
        return {http::verb::get, std::move(path), std::move(before),
                [this](const plinth::request&, plinth::async_response ar) {
                    ar.on_complete([this](std::exception_ptr e) {
                        if (e)
                            ++completed_with_error;
                        ++completed;
                    });
                    std::lock_guard lock(mutex);
                    handles.push_back(std::move(ar));
                    cv.notify_all();
                }};
    }

    /// Sends `GET /park` on `c` and waits for its handle.
    plinth::async_response park(client& c)
    {
        std::size_t n;
        {
            std::lock_guard lock(mutex);
            n = handles.size();
        }
        c.write_raw("GET /park HTTP/1.1\r\nHost: t\r\n\r\n");
        return wait_for(n);
    }

    /// The n-th handle, once parked.
    plinth::async_response wait_for(std::size_t n, std::chrono::seconds timeout = 10s)
    {
        std::unique_lock lock(mutex);
        REQUIRE(cv.wait_for(lock, timeout, [&] { return handles.size() > n; }));
        return handles[n];
    }

    /// Drops the handles, keeping only weak references to their states: once the requests are
    /// over, nothing else should hold them.
    std::vector<std::weak_ptr<plinth::detail::suspension<plinth::response>>> release()
    {
        std::lock_guard lock(mutex);
        std::vector<std::weak_ptr<plinth::detail::suspension<plinth::response>>> weak;
        for (const auto& h : handles)
            weak.push_back(plinth::detail::state_of(h));
        handles.clear();
        return weak;
    }
};

/// An awaitable handler: waits `?ms=` on a timer; `entered` counts the requests that started waiting.
asio::awaitable<plinth::response> delay(const plinth::context& ctx, std::atomic<int>& entered)
{
    auto ms = std::stoi(ctx.query("ms").value_or("0"));
    asio::steady_timer timer{co_await asio::this_coro::executor, std::chrono::milliseconds(ms)};
    ++entered;
    co_await timer.async_wait(asio::use_awaitable);
    co_return plinth::text("waited " + std::to_string(ms));
}

/// The /delay route, and how many of its requests started waiting.
struct awaitable_work {
    std::atomic<int> entered{0};

    plinth::route route()
    {
        return {http::verb::get, "/delay", [this](const plinth::context& c) { return delay(c, entered); }};
    }

    /// Sends `GET /delay?ms=` on `c` and waits until its handler is waiting.
    void start(client& c, std::chrono::milliseconds ms)
    {
        const int before = entered;
        c.write_raw("GET /delay?ms=" + std::to_string(ms.count()) + " HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_until([&] { return entered > before; });
    }
};

plinth::route hello_route()
{
    return {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello, World!"); }};
}

/// What one of many concurrent clients got.
struct reply {
    int status = 0; // 0: no response
    std::string retry_after;
    std::string connection;
    std::string error;
    steady::time_point at{};
};

/// `n` GETs of `target`, all at once, each on its own connection, from a client io_context on a
/// thread of its own (the test thread stays free); every operation gives up after 20 s.
std::future<std::vector<reply>> start_gets(std::uint16_t port, std::string target, int n)
{
    return std::async(std::launch::async, [port, target = std::move(target), n] {
        asio::io_context ioc{1};
        std::vector<reply> replies(static_cast<std::size_t>(n));
        for (auto& r : replies)
            asio::co_spawn(
                ioc,
                [&r, &target, port]() -> asio::awaitable<void> {
                    beast::tcp_stream stream{co_await asio::this_coro::executor};
                    stream.expires_after(20s);
                    co_await stream.async_connect({asio::ip::make_address("127.0.0.1"), port}, asio::use_awaitable);
                    http::request<http::string_body> req{http::verb::get, target, 11};
                    req.set(http::field::host, "test");
                    co_await http::async_write(stream, req, asio::use_awaitable);
                    beast::flat_buffer buffer;
                    response res;
                    co_await http::async_read(stream, buffer, res, asio::use_awaitable);
                    r.at = steady::now();
                    r.status = static_cast<int>(res.result_int());
                    r.retry_after = std::string(res[http::field::retry_after]);
                    r.connection = std::string(res[http::field::connection]);
                },
                [&r](std::exception_ptr e) {
                    if (e)
                        r.error = plinth::detail::describe(e); // the server's own one-line description
                });
        ioc.run();
        return replies;
    });
}

/// Raises the soft descriptor limit to the hard one; returns it.
rlim_t raise_fd_limit()
{
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
    return limit.rlim_cur;
}

std::uint16_t local_port(int fd)
{
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0 || a.sin_family != AF_INET)
        return 0;
    return ntohs(a.sin_port);
}

std::uint16_t peer_port(int fd)
{
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0 || a.sin_family != AF_INET)
        return 0;
    return ntohs(a.sin_port);
}

/// The server's end of `c`'s connection: the server runs in this process, so its socket is one of
/// our descriptors. -1 until the server accepted it.
int server_end_of(client& c, std::uint16_t server_port)
{
    const std::uint16_t client_port = local_port(c.native_handle());
    int found = -1;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (dirent* e = ::readdir(d)) {
            char* end = nullptr;
            long fd = std::strtol(e->d_name, &end, 10);
            if (end == e->d_name || *end != '\0' || fd == c.native_handle())
                continue;
            if (local_port(static_cast<int>(fd)) == server_port && peer_port(static_cast<int>(fd)) == client_port) {
                found = static_cast<int>(fd);
                break;
            }
        }
        ::closedir(d);
    }
    return found;
}

/// Bytes the kernel holds for `fd` that nobody has read yet.
int unread_bytes(int fd)
{
    int n = -1;
    ::ioctl(fd, FIONREAD, &n);
    return n;
}

} // namespace

TEST_CASE("shutdown: 1,000 suspended requests and a stop: each gets 503 with Retry-After when the grace ends, "
          "the stop completes within the grace, nothing is left behind",
          "[shutdown][capacity]")
{
    constexpr int n = 1000;
    REQUIRE(raise_fd_limit() >= 2 * n + 100); // the server's n sockets and the clients' n

    parking_lot lot;
    test_server srv{{lot.route()}, shutdown_options()};
    auto gets = start_gets(srv.port(), "/park", n);
    lot.wait_for(n - 1, 30s); // every handler has run (stats count a suspension just before it)
    auto states = lot.release();
    REQUIRE(states.size() == n);

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(500ms, asio::use_future);
    REQUIRE(stopped.wait_for(500ms + 3s) == std::future_status::ready);
    const auto stop_ms = ms_since(t0);
    INFO("the stop completed after " << stop_ms << " ms");
    CHECK(stop_ms >= 400); // the suspended requests had the grace

    REQUIRE(gets.wait_for(10s) == std::future_status::ready);
    auto replies = gets.get();
    std::map<std::string, int> outcomes; // "503 Retry-After: 7 after the grace" should count n
    for (const auto& r : replies) {
        std::string key;
        if (r.status == 0)
            key = "no response: " + r.error;
        else
            key = std::to_string(r.status) + " Retry-After: '" + r.retry_after + "' "
                + (ms_since(t0, r.at) >= 400 ? "after the grace" : "before the grace");
        ++outcomes[key];
    }
    for (const auto& [what, count] : outcomes)
        UNSCOPED_INFO(count << " x " << what);
    CHECK(outcomes["503 Retry-After: '7' after the grace"] == n);

    CHECK(lot.completed == n);
    CHECK(lot.completed_with_error == 0);
    auto s = srv.server().stats();
    CHECK(s.connections == 0);
    CHECK(s.suspended == 0);
    CHECK(s.cancelled == n);
    CHECK(s.completed == n);
    // No leak: every suspension's state is gone with its request, and run() has nothing left.
    CHECK(eventually(
        [&] { return std::all_of(states.begin(), states.end(), [](const auto& w) { return w.expired(); }); }));
    CHECK(srv.join_within(3s));
}

TEST_CASE("shutdown: in-flight awaitable work that finishes within the grace gets its response, with "
          "Connection: close, and the stop completes without waiting out the grace",
          "[shutdown]")
{
    awaitable_work work;
    test_server srv{{work.route()}, shutdown_options()};
    client c{srv.port()};
    work.start(c, 200ms);

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(2s, asio::use_future);
    auto res = c.read();
    CHECK(res.result() == http::status::ok);
    CHECK(res.body() == "waited 200");
    CHECK(res[http::field::connection] == "close");
    CHECK(c.closed_by_server());
    REQUIRE(stopped.wait_for(5s) == std::future_status::ready);
    CHECK(ms_since(t0) < 1500);
    CHECK(srv.server().stats().connections == 0);
}

TEST_CASE("shutdown: in-flight awaitable work that outlasts the grace is answered 503 with Retry-After when "
          "the grace ends",
          "[shutdown]")
{
    awaitable_work work;
    test_server srv{{work.route()}, shutdown_options()};
    client c{srv.port()};
    work.start(c, 30000ms);

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(300ms, asio::use_future);
    check_503_at_end_of_grace(c, t0, 250ms, 3000ms);
    CHECK(stopped.wait_for(3s) == std::future_status::ready);
    CHECK(srv.server().stats().connections == 0);
}

TEST_CASE("shutdown: a suspended request resumed during the grace gets its response", "[shutdown]")
{
    parking_lot lot;
    test_server srv{{lot.route()}, shutdown_options()};
    client c{srv.port()};
    auto ar = lot.park(c);

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(2s, asio::use_future);
    wait_until([&] { return !can_connect(srv.port()); }); // the stop is under way
    CHECK(ar.resume(plinth::text("resumed during the grace")));
    auto res = c.read();
    CHECK(res.result() == http::status::ok);
    CHECK(res.body() == "resumed during the grace");
    CHECK(res[http::field::connection] == "close");
    REQUIRE(stopped.wait_for(5s) == std::future_status::ready);
    CHECK(ms_since(t0) < 1500); // done once the last connection went, not at the end of the grace
    CHECK(lot.completed == 1);
    CHECK(lot.completed_with_error == 0);
    auto s = srv.server().stats();
    CHECK(s.resumed == 1);
    CHECK(s.cancelled == 0);
}

TEST_CASE("shutdown: idle keep-alive connections are closed at once and, with nothing in flight, the stop "
          "completes promptly",
          "[shutdown]")
{
    test_server srv{{hello_route()}, shutdown_options()}; // a 5 s grace
    client used{srv.port()};
    REQUIRE(used.get("/hello").result() == http::status::ok);
    client silent{srv.port()}; // connected, never sent a byte
    wait_until([&] { return srv.server().stats().connections == 2; });

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(srv.server().options().shutdown_grace, asio::use_future);
    CHECK(used.closed_by_server());
    CHECK(silent.closed_by_server());
    CHECK(ms_since(t0) < 1000);
    const bool done = stopped.wait_for(5s) == std::future_status::ready;
    INFO("connections still open: " << srv.server().stats().connections);
    REQUIRE(done);
    CHECK(ms_since(t0) < 1000);
    CHECK(srv.server().stats().connections == 0);
}

TEST_CASE("shutdown: new connections are refused once the stop began, and after it completed", "[shutdown]")
{
    parking_lot lot;
    test_server srv{{lot.route()}, shutdown_options()};
    client c{srv.port()};
    lot.park(c);

    auto stopped = srv.server().async_stop(1s, asio::use_future);
    wait_until([&] { return !can_connect(srv.port()); });
    CHECK(stopped.wait_for(0s) == std::future_status::timeout); // still within the grace
    CHECK(c.read().result() == http::status::service_unavailable);
    REQUIRE(stopped.wait_for(5s) == std::future_status::ready);
    CHECK_FALSE(can_connect(srv.port()));
    CHECK(srv.server().stats().connections == 0);
}

TEST_CASE("shutdown: stop() without arguments uses options.shutdown_grace", "[shutdown]")
{
    parking_lot lot;
    test_server srv{{lot.route()}, shutdown_options(300ms)};
    client c{srv.port()};
    lot.park(c);

    const auto t0 = steady::now();
    srv.server().stop();
    check_503_at_end_of_grace(c, t0, 250ms, 3000ms);
    CHECK(srv.join_within(3s));
}

TEST_CASE("shutdown: an async_stop after the stop completed completes at once, through the io_context", "[shutdown]")
{
    asio::io_context ioc{1};
    auto options = shutdown_options();
    options.port = 0;
    plinth::server srv{ioc, options};
    srv.start();
    auto first = srv.async_stop(300ms, asio::use_future);
    ioc.run(); // returns once the stop is done
    REQUIRE(first.wait_for(0s) == std::future_status::ready);

    // Like any Asio operation's, its completion goes through the io_context: run it again.
    const auto t0 = steady::now();
    auto second = srv.async_stop(10s, asio::use_future);
    ioc.restart();
    ioc.run();
    REQUIRE(second.wait_for(0s) == std::future_status::ready);
    CHECK(ms_since(t0) < 500);
    CHECK_NOTHROW(second.get());
}

TEST_CASE("shutdown: two async_stops in flight both complete, and the second does not restart or extend the grace",
          "[shutdown]")
{
    parking_lot lot;
    test_server srv{{lot.route()}, shutdown_options()};
    client c{srv.port()};
    lot.park(c);

    const auto t0 = steady::now();
    auto first = srv.server().async_stop(300ms, asio::use_future);
    auto second = srv.server().async_stop(10s, asio::use_future);
    auto res = c.read();
    CHECK(res.result() == http::status::service_unavailable);
    CHECK(res[http::field::retry_after] == "7");
    CHECK(first.wait_for(3s) == std::future_status::ready);
    CHECK(second.wait_for(3s) == std::future_status::ready);
    CHECK(ms_since(t0) < 3000);
}

TEST_CASE("shutdown: a request whose handler suspends after the stop began is answered 503 with Retry-After "
          "when the grace ends",
          "[shutdown]")
{
    std::promise<void> entered;
    plinth::interceptor slow{.name = "slow", .enter = [&](plinth::context&) -> asio::awaitable<void> {
                                 entered.set_value();
                                 asio::steady_timer t{co_await asio::this_coro::executor, 200ms};
                                 co_await t.async_wait(asio::use_awaitable);
                             }};
    parking_lot lot;
    test_server srv{{lot.route("/late", {slow})}, shutdown_options()};
    client c{srv.port()};
    c.write_raw("GET /late HTTP/1.1\r\nHost: t\r\n\r\n");
    REQUIRE(entered.get_future().wait_for(5s) == std::future_status::ready);

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(1s, asio::use_future);
    lot.wait_for(0);                                 // the handler ran, ~200 ms into the grace
    check_503_at_end_of_grace(c, t0, 900ms, 4000ms); // not when it suspended
    CHECK(stopped.wait_for(3s) == std::future_status::ready);
    CHECK(lot.completed == 1);
}

TEST_CASE("shutdown: an awaitable stage that runs after the request's suspension finished is still cut at the end "
          "of the grace",
          "[shutdown]")
{
    std::promise<void> leaving;
    plinth::interceptor slow_leave{.name = "slow-leave", .leave = [&](plinth::context&) -> asio::awaitable<void> {
                                       leaving.set_value();
                                       asio::steady_timer t{co_await asio::this_coro::executor, 30s};
                                       co_await t.async_wait(asio::use_awaitable);
                                   }};
    std::vector<plinth::route> routes{
        {http::verb::get, "/p", {slow_leave}, [](const plinth::request&, plinth::async_response ar) {
             ar.resume(plinth::text("resumed"));
         }}};
    test_server srv{std::move(routes), shutdown_options()};
    client c{srv.port()};
    c.write_raw("GET /p HTTP/1.1\r\nHost: t\r\n\r\n");
    REQUIRE(leaving.get_future().wait_for(5s) == std::future_status::ready);

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(300ms, asio::use_future);
    check_503_at_end_of_grace(c, t0, 250ms, 4000ms);
    CHECK(stopped.wait_for(3s) == std::future_status::ready);
}

TEST_CASE("shutdown: a request that arrives during the grace on a connection already reading it is answered "
          "503 with Retry-After when the grace ends",
          "[shutdown]")
{
    parking_lot lot;
    test_server srv{{lot.route()}, shutdown_options()};
    client c{srv.port()};
    c.write_raw("GET /park HTTP/1.1\r\n"); // the request has begun: the connection is not idle
    int server_end = -1;
    wait_until([&] { return (server_end = server_end_of(c, srv.port())) >= 0; });
    wait_until([&] { return unread_bytes(server_end) == 0; }); // the server has read those bytes

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(1s, asio::use_future);
    wait_until([&] { return !can_connect(srv.port()); }); // the stop is under way
    c.write_raw("Host: t\r\n\r\n");
    lot.wait_for(0);
    check_503_at_end_of_grace(c, t0, 900ms, 4000ms);
    CHECK(stopped.wait_for(3s) == std::future_status::ready);
    CHECK(lot.completed == 1);
}

TEST_CASE("shutdown: io_context::run returns after stop once nothing is left, without waiting out the grace",
          "[shutdown]")
{
    SECTION("a plinth::server on an io_context the test runs itself")
    {
        asio::io_context ioc{1};
        plinth::server_options options = shutdown_options(); // a 5 s grace
        options.port = 0;
        plinth::server srv{ioc, options};
        srv.routes({hello_route()});
        srv.start();
        std::promise<void> ran;
        auto returned = ran.get_future();
        std::thread runner([&] {
            ioc.run();
            ran.set_value();
        });
        struct join_guard {
            asio::io_context& ioc;
            std::future<void>& returned;
            std::thread& runner;
            ~join_guard()
            {
                if (returned.wait_for(0s) != std::future_status::ready)
                    ioc.stop(); // the test failed; do not hang the suite
                runner.join();
            }
        } guard{ioc, returned, runner};

        client c{srv.port()};
        CHECK(c.get("/hello").result() == http::status::ok); // kept alive, idle when the stop comes
        const auto t0 = steady::now();
        srv.stop();
        CHECK(returned.wait_for(3s) == std::future_status::ready);
        CHECK(ms_since(t0) < 1000);
        CHECK(c.closed_by_server());
    }
    SECTION("after a suspended request was answered at the end of the grace")
    {
        parking_lot lot;
        test_server srv{{lot.route()}, shutdown_options(300ms)};
        client c{srv.port()};
        lot.park(c);
        srv.server().stop();
        CHECK(c.read().result() == http::status::service_unavailable);
        CHECK(srv.join_within(3s));
    }
}
