// The log hook over real loopback sockets: what is logged at which level (handler exceptions,
// callback exceptions), what is not (clients that leave), no hook, a throwing hook, and the
// default hook's output on stderr.

#include "test_server.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace plinth_test;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t big_size = 16u << 20; // 16 MiB: more than the socket buffers hold

/// True when `done()` holds within `timeout` (a wait for a condition, not a sleep).
template <class F>
bool eventually(F done, std::chrono::milliseconds timeout = 5000ms)
{
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

/// A line at `level` containing every one of `texts`.
bool logged(const log_capture& log, plinth::log_level level, std::initializer_list<std::string_view> texts)
{
    auto lines = log.lines();
    return std::any_of(lines.begin(), lines.end(), [&](const log_capture::line& l) {
        return l.level == level
            && std::all_of(texts.begin(), texts.end(), [&](auto t) { return l.text.find(t) != std::string::npos; });
    });
}

/// Requests the routes below leave suspended, and the completions they saw.
struct suspended_requests {
    std::atomic<int> parked{0};
    std::atomic<int> completed{0};
    std::vector<plinth::async_response> handles; // touched under mutex
    std::mutex mutex;
};

std::vector<plinth::route> log_routes(suspended_requests& s)
{
    return {
        {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello, World!"); }},
        {http::verb::get, "/throw",
         [](const plinth::request&) -> plinth::response { throw std::runtime_error("secret database password"); }},
        {http::verb::get, "/throw-async",
         [](plinth::request) -> asio::awaitable<plinth::response> {
             co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
             throw std::logic_error("secret internal state");
         }},
        {http::verb::get, "/complete-throws",
         [](const plinth::request&, plinth::async_response ar) {
             ar.on_complete([](std::exception_ptr) { throw std::runtime_error("on_complete exploded"); });
             ar.resume(plinth::text("fine"));
         }},
        {http::verb::get, "/timeout-throws",
         [](const plinth::request&, plinth::async_response ar) {
             ar.on_timeout([](plinth::async_response) { throw std::runtime_error("timeout handler exploded"); });
             ar.set_timeout(50ms);
         }},
        {http::verb::get, "/park",
         [&s](const plinth::request&, plinth::async_response ar) {
             ar.on_complete([&s](std::exception_ptr) { ++s.completed; });
             std::lock_guard lock(s.mutex);
             s.handles.push_back(std::move(ar));
             ++s.parked;
         }},
        {http::verb::get, "/big", [](const plinth::request&) { return plinth::text(std::string(big_size, 'x')); }},
    };
}

plinth::server_options with_log(plinth::log_function f)
{
    plinth::server_options o;
    o.log = std::move(f);
    return o;
}

void reset_connection(client& c)
{
    // SO_LINGER 0: close sends a reset, as a crashed client would.
    linger l{1, 0};
    ::setsockopt(c.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    c.close();
}

/// Sends GET /big and reads some of the response, so that the server is in the middle of writing it.
void start_big_response(client& c)
{
    c.write_raw("GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    REQUIRE_FALSE(c.read_raw(4096).empty());
}

/// What `f` writes to file descriptor 2.
template <class F>
std::string capture_stderr(F f)
{
    std::fflush(stderr);
    FILE* tmp = std::tmpfile();
    REQUIRE(tmp);
    const int saved = ::dup(2);
    REQUIRE(saved >= 0);
    ::dup2(::fileno(tmp), 2);
    f();
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    std::string out;
    std::rewind(tmp);
    char buf[512];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, tmp))
        out.append(buf, n);
    std::fclose(tmp);
    return out;
}

} // namespace

TEST_CASE("log: a handler exception is logged at error level with the request and the exception text; "
          "the client gets a 500 that does not contain it",
          "[log]")
{
    log_capture log;
    suspended_requests s;
    test_server srv{log_routes(s), with_log(log.hook())};
    client c{srv.port()};

    auto res = c.get("/throw?id=42");
    CHECK(res.result() == http::status::internal_server_error);
    CHECK(res.body().find("secret") == std::string::npos);
    CHECK(eventually([&] {
        return logged(log, plinth::log_level::error, {"GET /throw", "secret database password"});
    }));

    res = c.get("/throw-async");
    CHECK(res.result() == http::status::internal_server_error);
    CHECK(res.body().find("secret") == std::string::npos);
    CHECK(eventually([&] {
        return logged(log, plinth::log_level::error, {"GET /throw-async", "secret internal state"});
    }));
    INFO(log.dump());
    CHECK(c.get("/hello").result() == http::status::ok);
}

TEST_CASE("log: an exception from an on_complete callback is logged at error level; the client has its response",
          "[log]")
{
    log_capture log;
    suspended_requests s;
    test_server srv{log_routes(s), with_log(log.hook())};
    client c{srv.port()};
    auto res = c.get("/complete-throws");
    CHECK(res.result() == http::status::ok);
    CHECK(res.body() == "fine");
    CHECK(eventually([&] { return log.contains(plinth::log_level::error, "on_complete exploded"); }));
    INFO(log.dump());
    CHECK(c.get("/hello").result() == http::status::ok);
}

TEST_CASE("log: an on_timeout handler that throws: the client gets a 500 and the exception is logged at error level",
          "[log]")
{
    log_capture log;
    suspended_requests s;
    test_server srv{log_routes(s), with_log(log.hook())};
    client c{srv.port()};
    auto res = c.get("/timeout-throws");
    CHECK(res.result() == http::status::internal_server_error);
    CHECK(res.body().find("exploded") == std::string::npos);
    CHECK(eventually([&] { return log.contains(plinth::log_level::error, "timeout handler exploded"); }));
    INFO(log.dump());
    CHECK(c.get("/hello").result() == http::status::ok);
}

TEST_CASE("log: a client that closes while its request is suspended is not logged as a warning or error", "[log]")
{
    log_capture log;
    suspended_requests s;
    test_server srv{log_routes(s), with_log(log.hook())};
    {
        client c{srv.port()};
        c.write_raw("GET /park HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_until([&] { return s.parked == 1; });
        c.close();
    }
    wait_until([&] { return s.completed == 1 && srv.server().stats().connections == 0; });
    CHECK(srv.server().stats().disconnected == 1);
    INFO(log.dump());
    CHECK(log.count_at_least(plinth::log_level::warning) == 0);
}

TEST_CASE("log: a client that resets its connection mid-request is not logged as a warning or error", "[log]")
{
    log_capture log;
    suspended_requests s;
    test_server srv{log_routes(s), with_log(log.hook())};
    {
        client reading{srv.port()}; // reset while the server reads its request
        reading.write_raw("GET /hello HTTP/1.1\r\nHo");
        client suspended{srv.port()}; // reset while its request is suspended
        suspended.write_raw("GET /park HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_until([&] { return s.parked == 1 && srv.server().stats().accepted == 2; });
        reset_connection(reading);
        reset_connection(suspended);
    }
    wait_until([&] { return s.completed == 1 && srv.server().stats().connections == 0; });
    INFO(log.dump());
    CHECK(log.count_at_least(plinth::log_level::warning) == 0);
}

TEST_CASE("log: a client that closes its idle keep-alive connection is not logged as a warning or error", "[log]")
{
    log_capture log;
    suspended_requests s;
    test_server srv{log_routes(s), with_log(log.hook())};
    {
        client c{srv.port()};
        REQUIRE(c.get("/hello").result() == http::status::ok);
        REQUIRE(c.get("/hello").result() == http::status::ok);
        c.close();
    }
    wait_until([&] { return srv.server().stats().connections == 0; });
    INFO(log.dump());
    CHECK(log.count_at_least(plinth::log_level::warning) == 0);
}

TEST_CASE("log: a client that leaves while a 16 MiB response is written (broken pipe, reset) is not logged as a "
          "warning or error",
          "[log]")
{
    log_capture log;
    suspended_requests s;
    test_server srv{log_routes(s), with_log(log.hook())};
    {
        client closes{srv.port()}; // close with unread data: the kernel sends a reset
        start_big_response(closes);
        closes.close();
        wait_until([&] { return srv.server().stats().connections == 0; });

        client resets{srv.port()};
        start_big_response(resets);
        reset_connection(resets);
        wait_until([&] { return srv.server().stats().connections == 0; });
    }
    INFO(log.dump());
    CHECK(log.count_at_least(plinth::log_level::warning) == 0);
    client c{srv.port()};
    CHECK(c.get("/hello").result() == http::status::ok);
}

TEST_CASE("log: an I/O error that is not a client leaving (accept: too many open files) is logged as a warning; "
          "the server recovers",
          "[log]")
{
    log_capture log;
    suspended_requests s;
    test_server srv{log_routes(s), with_log(log.hook())};
    asio::io_context ioc;
    tcp::socket socket{ioc};
    socket.open(tcp::v4()); // before the limit: connecting needs no new descriptor on this side
    {
        // No descriptor can be created while the limit is the lowest free descriptor number.
        struct fd_limit_guard {
            rlimit saved{};
            fd_limit_guard()
            {
                getrlimit(RLIMIT_NOFILE, &saved);
                const int lowest_free = ::open("/dev/null", O_RDONLY);
                REQUIRE(lowest_free >= 0);
                ::close(lowest_free);
                rlimit low{static_cast<rlim_t>(lowest_free), saved.rlim_max};
                REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
            }
            ~fd_limit_guard() { setrlimit(RLIMIT_NOFILE, &saved); }
        } guard;
        beast::error_code ec;
        socket.connect({asio::ip::make_address("127.0.0.1"), srv.port()}, ec); // waits in the backlog
        REQUIRE_FALSE(ec);
        CHECK(eventually([&] { return log.count_at_least(plinth::log_level::warning) >= 1; }));
    }
    INFO(log.dump());
    CHECK(log.contains(plinth::log_level::warning, "accept"));
    // The limit is back: the server accepts the waiting connection and answers it.
    asio::write(socket, asio::buffer(std::string_view("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")));
    pollfd p{socket.native_handle(), POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10'000) == 1);
    beast::flat_buffer buffer;
    response res;
    http::read(socket, buffer, res);
    CHECK(res.result() == http::status::ok);
}

TEST_CASE("log: with no log hook, errors still happen and nothing crashes", "[log]")
{
    suspended_requests s;
    test_server srv{log_routes(s), with_log({})};
    client c{srv.port()};
    CHECK(c.get("/throw").result() == http::status::internal_server_error);
    CHECK(c.get("/throw-async").result() == http::status::internal_server_error);
    CHECK(c.get("/complete-throws").body() == "fine");
    CHECK(c.get("/timeout-throws").result() == http::status::internal_server_error);
    {
        client leaves{srv.port()};
        leaves.write_raw("GET /park HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_until([&] { return s.parked == 1; });
        reset_connection(leaves);
        client big{srv.port()};
        start_big_response(big);
        big.close();
    }
    wait_until([&] { return s.completed == 1 && srv.server().stats().connections == 1; });
    CHECK(c.get("/hello").result() == http::status::ok);
}

TEST_CASE("log: the default hook is log_to_stderr, which prints warnings and errors only, one 'plinth: ' line each",
          "[log]")
{
    using fn = void (*)(plinth::log_level, std::string_view);
    plinth::server_options defaults;
    REQUIRE(defaults.log.target<fn>() != nullptr);
    CHECK(*defaults.log.target<fn>() == &plinth::log_to_stderr);

    // Each message is a view into a longer string: only the view may be printed.
    auto out = capture_stderr([&] {
        for (auto level : {plinth::log_level::debug, plinth::log_level::info, plinth::log_level::warning,
                           plinth::log_level::error}) {
            std::string text = "message at " + std::string(plinth::to_string(level)) + "|not part of the message";
            plinth::log_to_stderr(level, std::string_view(text).substr(0, text.find('|')));
        }
    });
    INFO("stderr: [" << out << "]");
    std::vector<std::string> lines;
    std::istringstream in(out);
    for (std::string l; std::getline(in, l);)
        lines.push_back(l);
    CHECK(!out.empty());
    CHECK(out.back() == '\n');
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].starts_with("plinth: "));
    CHECK(lines[1].starts_with("plinth: "));
    CHECK(lines[0].find("message at warning") != std::string::npos);
    CHECK(lines[1].find("message at error") != std::string::npos);
    CHECK(out.find("debug") == std::string::npos);
    CHECK(out.find("info") == std::string::npos);
    CHECK(out.find("not part of the message") == std::string::npos);
}

TEST_CASE("log: a log hook that throws does not take the server down", "[log]")
{
    std::atomic<int> calls{0};
    suspended_requests s;
    test_server srv{log_routes(s), with_log([&calls](plinth::log_level, std::string_view) {
                        ++calls;
                        throw std::runtime_error("the log hook is broken");
                    })};
    client c{srv.port()};
    auto res = c.get("/throw");
    CHECK(res.result() == http::status::internal_server_error);
    CHECK(c.get("/complete-throws").body() == "fine");
    CHECK(c.get("/timeout-throws").result() == http::status::internal_server_error);
    CHECK(eventually([&] { return calls >= 3; })); // the handler, the callback, the timeout handler
    CHECK(c.get("/hello").result() == http::status::ok);
    client other{srv.port()};
    CHECK(other.get("/hello").result() == http::status::ok);
}
