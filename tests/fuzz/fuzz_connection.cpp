//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// plinth-fuzz: arbitrary bytes into a real plinth connection, over the in-memory transport
// (tests/support/memory_stream.hpp), so that no socket, kernel or second thread slows a run.
//
// Input: byte 0 chooses how the rest is cut into writes: 0 sends it in one write; n > 0 sends
// chunks of 1..n bytes whose sizes come from a xorshift PRNG seeded by n, the server reading
// between them. Mutating that one byte moves every split point while the rest stays a readable
// HTTP byte stream (the seeds in tests/fuzz/corpus/ start with it). Each input gets its own
// connection: the client writes the chunks, shuts its sending side down, and the server must
// close the connection within 5 s (else: a hang, abort). What it sends must be nothing, or start
// with "HTTP/1.". tests/fuzz/http.dict gives the mutator HTTP tokens and the routes below.

#include "../support/memory_harness.hpp"

#include <plinth/plinth.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace asio = boost::asio;
namespace http = boost::beast::http;
using namespace std::chrono_literals;

namespace {

[[noreturn]] void die(const char* what)
{
    std::fprintf(stderr, "plinth-fuzz: %s\n", what);
    std::abort(); // libFuzzer reports it and saves the input
}

// GET /wait: an awaitable handler that holds no thread while it waits.
asio::awaitable<plinth::response> wait_a_little(const plinth::request&)
{
    asio::steady_timer timer{co_await asio::this_coro::executor, 20us};
    co_await timer.async_wait(asio::use_awaitable);
    co_return plinth::text("waited");
}

// GET /suspend?resume=now|thread|race|cancel: resolved inline, from another thread, racing its own
// timeout from another thread, cancelled; anything else lets the timeout answer 503. The waits are
// microseconds long: a run waits for them in real time.
auto suspend_route(asio::thread_pool& resumer)
{
    return [&resumer](const plinth::context& ctx, plinth::async_response ar) {
        ar.set_timeout(50us);
        auto how = ctx.query("resume").value_or("");
        if (how == "now")
            ar.resume(plinth::text("resumed"));
        else if (how == "thread")
            asio::post(resumer, [ar]() mutable { ar.resume(plinth::text("resumed on another thread")); });
        else if (how == "race") {
            auto timer = std::make_shared<asio::steady_timer>(resumer, 50us);
            timer->async_wait([timer, ar](boost::system::error_code) mutable { ar.resume(plinth::text("raced")); });
        }
        else if (how == "cancel")
            ar.cancel(std::chrono::seconds(1));
    };
}

plinth::server_options fuzz_options()
{
    plinth::server_options o;
    // Small limits, so that short inputs reach them.
    o.max_header_bytes = 1024;
    o.max_body_bytes = 4096;
    o.max_read_ahead_bytes = 4096;
    o.suspend_timeout = 1ms;
    // Far below the 5 s hang deadline: a timeout that fires is an answer, not a hang.
    o.header_timeout = o.body_timeout = o.idle_timeout = o.write_timeout = 1000ms;
    o.single_threaded = true;
    o.log = nullptr; // keeps the fuzzer's output readable
    return o;
}

std::vector<plinth::route> fuzz_routes(asio::thread_pool& resumer)
{
    return {
        {http::verb::get, "/hi", [](const plinth::request&) { return plinth::text("hi"); }},
        {http::verb::get, "/users/{id}", [](const plinth::context& c) { return plinth::text(std::string(c.param("id"))); }},
        {http::verb::post, "/echo",
         [](const plinth::request& req) { return plinth::make_response(http::status::ok, req.body()); }},
        {http::verb::get, "/wait", wait_a_little},
        {http::verb::get, "/suspend", suspend_route(resumer)},
        {http::verb::get, "/throw", [](const plinth::request&) -> plinth::response { throw std::runtime_error("threw"); }},
        // Streams that end on their own: events (one from another thread) echoing
        // Last-Event-ID, and a chunked body closed with a trailer from another thread.
        {http::verb::get, "/events",
         [&resumer](const plinth::request&, plinth::sse_stream s) {
             s.send(plinth::sse_event{.data = "a\nb", .event = "e", .id = std::string(s.last_event_id()), .retry = {}});
             asio::post(resumer, [s] {
                 s.send("from another thread");
                 s.close();
             });
         }},
        {http::verb::get, "/stream",
         [&resumer](const plinth::request&, plinth::response_stream s) {
             s.write("chunk");
             s.write("");
             asio::post(resumer, [s] {
                 s.write("more");
                 http::fields trailers;
                 trailers.set("X-Trailer", "t");
                 s.close(trailers);
             });
         }},
    };
}

std::vector<plinth::interceptor> fuzz_interceptors()
{
    return {{.name = "fuzz-interceptor",
             .enter =
                 [](plinth::context& c) {
                     if (!c.request()["X-Deny"].empty())
                         c.response = plinth::text("denied", http::status::forbidden);
                 },
             .leave =
                 [](plinth::context& c) {
                     if (c.response)
                         c.response->set("X-Fuzz", "left");
                 }}};
}

// One server for the whole run; destroyed at exit, so that LeakSanitizer sees nothing left.
struct fuzz_server {
    asio::thread_pool resumer{1}; // "another thread" for suspended requests and streams
    plinth_test::memory_server server{fuzz_routes(resumer), fuzz_options(), fuzz_interceptors()};

    ~fuzz_server() { resumer.join(); }
};

fuzz_server* instance = nullptr;

} // namespace

// Made before the first input, so that no input pays for (or is blamed for) its allocations.
extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    static fuzz_server server;
    instance = &server;
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    auto& srv = instance->server;
    auto client = srv.connect();
    const std::size_t max_chunk = data[0];
    std::uint32_t rng = data[0] * 2654435761u | 1u;
    std::string got;
    for (std::size_t at = 1; at < size;) {
        std::size_t n = size - at;
        if (max_chunk != 0) {
            rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
            n = std::min<std::size_t>(n, 1 + rng % max_chunk);
        }
        client.write({reinterpret_cast<const char*>(data) + at, n});
        at += n;
        srv.ioc().poll(); // the server reads this piece before the next comes
        got += client.read_all();
    }
    client.shutdown(asio::socket_base::shutdown_send);
    if (!srv.run_until(
            [&] {
                got += client.read_all();
                return srv.connections() == 0;
            },
            5s))
        die("hang: the connection was not closed within 5 s of the client's end");
    got += client.read_all();
    if (!got.empty() && !std::string_view(got).starts_with(std::string_view("HTTP/1.").substr(0, got.size())))
        die("the server sent something that is not an HTTP response");
    return 0;
}
