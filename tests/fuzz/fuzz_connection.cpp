// plinth-fuzz: arbitrary bytes into a real plinth connection, as a TCP client would send them.
//
// Input: byte 0 chooses how the rest is cut into write() calls: 0 sends it in one write; n > 0
// sends chunks of 1..n bytes whose sizes come from a xorshift PRNG seeded by n. Mutating that one
// byte moves every split point while the rest stays a readable HTTP byte stream (the seeds in
// tests/fuzz/corpus/ start with it). Each input gets its own connection: connect, write the
// chunks, shut down the write side, read until the server closes. No response, or one that
// starts with "HTTP/1.", is fine; a server that has not closed after 5 s is a hang (abort).
//
// Why loopback TCP and not an in-memory stream: plinth's connection is written against
// asio::ip::tcp::socket, so the fuzzer drives the exact code a client reaches. One server (one
// io_context thread) starts in LLVMFuzzerInitialize and stops at exit, so LeakSanitizer sees no
// leak. tests/fuzz/http.dict gives the mutator HTTP tokens and the routes below.

#include <plinth/plinth.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

namespace asio = boost::asio;
namespace http = boost::beast::http;
using namespace std::chrono_literals;

namespace {

[[noreturn]] void die(const char* what)
{
    std::fprintf(stderr, "plinth-fuzz: %s (errno %d: %s)\n", what, errno, std::strerror(errno));
    std::abort(); // libFuzzer reports it and saves the input
}

// GET /wait: an awaitable handler that holds no thread while it waits.
asio::awaitable<plinth::response> wait_a_little(const plinth::request&)
{
    asio::steady_timer timer{co_await asio::this_coro::executor, 1ms};
    co_await timer.async_wait(asio::use_awaitable);
    co_return plinth::text("waited");
}

// GET /suspend?resume=now|thread|race|cancel: resolved inline, from another thread, racing its own
// 5 ms timeout from another thread, cancelled; anything else lets the timeout answer 503.
auto suspend_route(asio::thread_pool& resumer)
{
    return [&resumer](const plinth::context& ctx, plinth::async_response ar) {
        ar.set_timeout(5ms);
        auto how = ctx.query("resume").value_or("");
        if (how == "now")
            ar.resume(plinth::text("resumed"));
        else if (how == "thread")
            asio::post(resumer, [ar]() mutable { ar.resume(plinth::text("resumed on another thread")); });
        else if (how == "race") {
            auto timer = std::make_shared<asio::steady_timer>(resumer, 5ms);
            timer->async_wait([timer, ar](boost::system::error_code) mutable { ar.resume(plinth::text("raced")); });
        }
        else if (how == "cancel")
            ar.cancel(std::chrono::seconds(1));
    };
}

plinth::server_options fuzz_options()
{
    plinth::server_options o;
    o.port = 0;
    // Small limits, so that short inputs reach them.
    o.max_header_bytes = 1024;
    o.max_body_bytes = 4096;
    o.max_read_ahead_bytes = 4096;
    o.suspend_timeout = 10ms;
    // Far below the 5 s hang deadline: a timeout that fires is an answer, not a hang.
    o.header_timeout = o.body_timeout = o.idle_timeout = o.write_timeout = 1000ms;
    o.log = nullptr; // keeps the fuzzer's output readable
    return o;
}

// One server for the whole run; destroyed at exit (stop, join) so that nothing leaks.
struct fuzz_server {
    asio::io_context ioc{1};
    asio::thread_pool resumer{1}; // "another thread" for suspended requests
    plinth::server srv{ioc, fuzz_options()};
    std::thread runner;

    fuzz_server()
    {
        srv.use({.name = "fuzz-interceptor",
                 .enter =
                     [](plinth::context& c) {
                         if (!c.request()["X-Deny"].empty())
                             c.response = plinth::text("denied", http::status::forbidden);
                     },
                 .leave =
                     [](plinth::context& c) {
                         if (c.response)
                             c.response->set("X-Fuzz", "left");
                     }});
        srv.routes({
            {http::verb::get, "/hi", [](const plinth::request&) { return plinth::text("hi"); }},
            {http::verb::get, "/users/{id}",
             [](const plinth::context& c) { return plinth::text(std::string(c.param("id"))); }},
            {http::verb::post, "/echo",
             [](const plinth::request& req) { return plinth::make_response(http::status::ok, req.body()); }},
            {http::verb::get, "/wait", wait_a_little},
            {http::verb::get, "/suspend", suspend_route(resumer)},
            {http::verb::get, "/throw",
             [](const plinth::request&) -> plinth::response { throw std::runtime_error("handler threw"); }},
            // Streams that end on their own: events (one from another thread) echoing
            // Last-Event-ID, and a chunked body closed with a trailer from another thread.
            {http::verb::get, "/events",
             [this](const plinth::request&, plinth::sse_stream s) {
                 s.send(plinth::sse_event{
                     .data = "a\nb", .event = "e", .id = std::string(s.last_event_id()), .retry = {}});
                 asio::post(resumer, [s] {
                     s.send("from another thread");
                     s.close();
                 });
             }},
            {http::verb::get, "/stream",
             [this](const plinth::request&, plinth::response_stream s) {
                 s.write("chunk");
                 s.write("");
                 asio::post(resumer, [s] {
                     s.write("more");
                     http::fields trailers;
                     trailers.set("X-Trailer", "t");
                     s.close(trailers);
                 });
             }},
        });
        srv.start();
        runner = std::thread([this] { ioc.run(); });
    }

    ~fuzz_server()
    {
        srv.stop(0ms);
        runner.join(); // run() returns once every connection is gone
        resumer.join();
    }
};

fuzz_server* server = nullptr;

// libFuzzer's SIGALRM (its -timeout watchdog) can interrupt a blocking connect(). The connection
// then goes on in the background (POSIX: EINTR, not a failure): wait for it and read its result.
void connect_or_die(int fd, const sockaddr_in& addr)
{
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0)
        return;
    if (errno != EINTR)
        die("connect");
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left <= 0ms)
            die("connect: not established within 5 s");
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, static_cast<int>(left.count()) + 1) > 0)
            break; // else timed out or interrupted again: the deadline decides
    }
    int error = 0;
    socklen_t len = sizeof error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0 || error != 0) {
        errno = error;
        die("connect");
    }
}

} // namespace

// Started before the first input, so that no input pays for (or is blamed for) its allocations.
extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    static fuzz_server instance; // destroyed at exit: the server stops and its thread is joined
    server = &instance;
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;

    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server->srv.port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect_or_die(fd, addr);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); // one segment per write()
    timeval send_limit{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_limit, sizeof send_limit);

    const std::size_t max_chunk = data[0];
    std::uint32_t rng = data[0] * 2654435761u | 1u;
    for (std::size_t at = 1; at < size;) {
        std::size_t n = size - at;
        if (max_chunk != 0) {
            rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
            n = std::min<std::size_t>(n, 1 + rng % max_chunk);
        }
        ssize_t sent = ::send(fd, data + at, n, MSG_NOSIGNAL);
        if (sent >= 0)
            at += static_cast<std::size_t>(sent);
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            die("hang: the server stopped reading for 5 s");
        else if (errno != EINTR)
            break; // EPIPE, ECONNRESET: the server already answered and closed
    }
    ::shutdown(fd, SHUT_WR);

    // Poll against one deadline rather than SO_RCVTIMEO: libFuzzer's SIGALRM interrupts recv.
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    char buf[4096];
    std::string head;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left <= 0ms)
            die("hang: the server did not close the connection within 5 s");
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count()) + 1) <= 0)
            continue; // timed out or interrupted: the deadline decides
        ssize_t got = ::recv(fd, buf, sizeof buf, 0);
        if (got > 0) {
            if (head.size() < 7)
                head.append(buf, std::min<std::size_t>(static_cast<std::size_t>(got), 7 - head.size()));
            continue;
        }
        if (got == 0 || errno == ECONNRESET)
            break;
        if (errno != EINTR)
            die("recv");
    }
    ::close(fd);
    // A barrier, not a sleep: what the server queued before closing (the connection's teardown)
    // runs before the next input, so a crash there is blamed on this input.
    std::promise<void> drained;
    asio::post(server->ioc, [&drained] { drained.set_value(); });
    drained.get_future().wait();
    if (!head.empty() && head != std::string_view("HTTP/1.").substr(0, head.size()))
        die("the server sent something that is not an HTTP response");
    return 0;
}
