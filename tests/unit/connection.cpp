//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// The HTTP/1 connection (detail/connection.hpp) over the in-memory transport: no socket, one
// io_context run by the test. Its exchanges, a client that leaves, and a failure injected into
// each operation of the transport in turn, after which the connection must end cleanly: its
// suspensions resolved as disconnects, nothing left open, nothing leaked (ASan).

#include "../support/memory_harness.hpp"

#include <plinth/plinth.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/post.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

using namespace plinth_test;
namespace http = boost::beast::http;
using namespace std::chrono_literals;

namespace {

// What the routes below saw.
struct seen {
    int suspended = 0;
    int completed = 0;      // on_complete ran
    int disconnected = 0;   // on_disconnect ran
    int streams_closed = 0; // on_close ran
    std::vector<plinth::async_response> held;
};

std::vector<plinth::route> routes(seen& s)
{
    return {
        {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello"); }},
        {http::verb::post, "/echo", [](const plinth::request& r) { return plinth::text(r.body()); }},
        {http::verb::get, "/await",
         [](plinth::request) -> boost::asio::awaitable<plinth::response> { co_return plinth::text("awaited"); }},
        // Resumed later, through the io_context.
        {http::verb::get, "/suspend",
         [&s](const plinth::context& ctx, plinth::async_response ar) {
             ++s.suspended;
             ar.on_complete([&s](std::exception_ptr) { ++s.completed; });
             ar.on_disconnect([&s] { ++s.disconnected; });
             boost::asio::post(ctx.executor(), [ar]() mutable { ar.resume(plinth::text("resumed")); });
         }},
        // Held until the test resumes it.
        {http::verb::get, "/park",
         [&s](const plinth::context&, plinth::async_response ar) {
             ++s.suspended;
             ar.on_complete([&s](std::exception_ptr) { ++s.completed; });
             ar.on_disconnect([&s] { ++s.disconnected; });
             s.held.push_back(ar);
         }},
        {http::verb::get, "/events",
         [&s](const plinth::context& ctx, plinth::sse_stream events) {
             events.on_close([&s](plinth::close_reason) { ++s.streams_closed; });
             events.send("one");
             boost::asio::post(ctx.executor(), [events] {
                 events.send("two");
                 events.close();
             });
         }},
    };
}

// The responses in `bytes`, parsed (an incomplete last one is left out).
std::vector<http::response<http::string_body>> responses(std::string_view bytes)
{
    std::vector<http::response<http::string_body>> out;
    while (!bytes.empty()) {
        http::response_parser<http::string_body> p;
        p.eager(true);
        boost::beast::error_code ec;
        const auto used = p.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
        if (ec || !p.is_done())
            break;
        out.push_back(p.release());
        bytes.remove_prefix(used);
    }
    return out;
}

// Runs `srv` until the client's end has `n` whole responses (or the server closed); returns
// what arrived.
std::string read_responses(memory_server& srv, memory_stream& client, std::size_t n)
{
    std::string got;
    srv.run_until([&] {
        got += client.read_all();
        return responses(got).size() >= n || client.at_end();
    });
    return got;
}

} // namespace

TEST_CASE("connection over memory: a request is answered and the connection kept alive", "[connection]")
{
    seen s;
    memory_server srv{routes(s)};
    auto client = srv.connect();
    client.write("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    std::string got;
    REQUIRE(srv.run_until([&] { return (got += client.read_all()).find("Hello") != std::string::npos; }));
    CHECK(got.starts_with("HTTP/1.1 200 OK\r\n"));
    client.write("GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    got.clear();
    REQUIRE(srv.run_until([&] { return (got += client.read_all()), client.at_end(); }));
    CHECK(got.find("Connection: close\r\n") != std::string::npos);
    REQUIRE(srv.run_until([&] { return srv.connections() == 0; }));
}

TEST_CASE("connection over memory: pipelined requests are answered in order", "[connection]")
{
    seen s;
    memory_server srv{routes(s)};
    auto client = srv.connect();
    client.write(
        "GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /await HTTP/1.1\r\nHost: t\r\n\r\n"
        "GET /suspend HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    const auto got = responses(read_responses(srv, client, 4));
    REQUIRE(got.size() == 4);
    CHECK(got[0].body() == "Hello");
    CHECK(got[1].body() == "awaited");
    CHECK(got[2].body() == "resumed");
    CHECK(got[3].body() == "hi");
    CHECK(s.completed == 1);
}

TEST_CASE("connection over memory: 100-continue before the body, then the answer", "[connection]")
{
    seen s;
    memory_server srv{routes(s)};
    auto client = srv.connect();
    client.write("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    std::string got;
    REQUIRE(srv.run_until([&] { return (got += client.read_all()).size() >= 25; }));
    CHECK(got == "HTTP/1.1 100 Continue\r\n\r\n");
    client.write("body");
    const auto answer = responses(read_responses(srv, client, 1));
    REQUIRE(answer.size() == 1);
    CHECK(answer[0].body() == "body");
}

TEST_CASE("connection over memory: a client that leaves while its request is suspended resolves it as a disconnect",
          "[connection]")
{
    seen s;
    memory_server srv{routes(s)};
    {
        auto client = srv.connect();
        client.write("GET /park HTTP/1.1\r\nHost: t\r\n\r\n");
        REQUIRE(srv.run_until([&] { return s.held.size() == 1; }));
        client.close();
        REQUIRE(srv.run_until([&] { return s.completed == 1; }));
    }
    CHECK(s.disconnected == 1);
    CHECK_FALSE(s.held[0].resume(plinth::text("too late")));
    CHECK(srv.run_until([&] { return srv.connections() == 0; }));
}

TEST_CASE("connection over memory: an event stream's events, then its end", "[connection]")
{
    seen s;
    memory_server srv{routes(s)};
    auto client = srv.connect();
    client.write("GET /events HTTP/1.1\r\nHost: t\r\n\r\n");
    std::string got;
    REQUIRE(srv.run_until([&] { return (got += client.read_all()).find("\r\n0\r\n\r\n") != std::string::npos; }));
    CHECK(got.find("Transfer-Encoding: chunked") != std::string::npos);
    CHECK(got.find("data: one") < got.find("data: two"));
    CHECK(srv.run_until([&] { return s.streams_closed == 1; })); // once the last chunk is written
}

TEST_CASE("connection over memory: a stop answers a parked request 503 once the grace is over", "[connection]")
{
    seen s;
    memory_server srv{routes(s)};
    auto client = srv.connect();
    client.write("GET /park HTTP/1.1\r\nHost: t\r\n\r\n");
    REQUIRE(srv.run_until([&] { return s.held.size() == 1; }));
    srv.stop();
    const auto got = responses(read_responses(srv, client, 1));
    REQUIRE(got.size() == 1);
    CHECK(got[0].result() == http::status::service_unavailable);
    CHECK(got[0][http::field::retry_after] == "5");
    CHECK(srv.run_until([&] { return srv.connections() == 0; }));
    CHECK(s.completed == 1);
}

namespace {

// One exchange of a connection, run with the transport failing at its `fail_at`-th operation
// (none: it does not fail): the client sends `request`, reads until `answers` responses came (or
// a parked request is held), then leaves. The connection must end, and every suspension it
// opened complete; without a failure, every answer comes. Returns the operations the transport
// counted.
// With `pause`, the client sends the first `pause` bytes, reads one answer and waits until
// the connection gave its request state back (idle_release) before sending the rest.
std::size_t run_scenario(const std::string& name, const std::string& request, std::size_t answers,
                         std::optional<std::size_t> fail_at, std::size_t pause = 0)
{
    seen s;
    plinth::server_options options;
    options.log = nullptr;
    options.shutdown_grace = 0ms;
    options.idle_release = pause ? 1ms : 60s;
    memory_server srv{routes(s), options};
    auto fc = std::make_shared<fail_count>(fail_at.value_or(std::numeric_limits<std::size_t>::max()));
    INFO(name << ", failing at operation " << (fail_at ? std::to_string(*fail_at) : "none"));
    {
        auto client = srv.connect(fc, 64);
        std::string got;
        if (pause) {
            client.write(std::string_view(request).substr(0, pause));
            auto c = srv.last_connection();
            CHECK(srv.run_until([&] {
                got += client.read_all();
                return (responses(got).size() == 1 && !c->warm()) || client.at_end() || srv.connections() == 0;
            }));
            if (!fail_at)
                CHECK_FALSE(c->warm());
        }
        client.write(std::string_view(request).substr(pause));
        const bool answered = srv.run_until([&] {
            got += client.read_all();
            return responses(got).size() >= answers || !s.held.empty() || client.at_end() || srv.connections() == 0;
        });
        CHECK(answered);
        if (!fail_at)
            CHECK(responses(got).size() == answers);
        client.close(); // the client leaves
        CHECK(srv.run_until([&] { return srv.connections() == 0; }));
        for (auto& ar : s.held) // resolved as a disconnect: a late resume changes nothing
            CHECK_FALSE(ar.resume(plinth::text("late")));
        CHECK(srv.run_until([&] { return s.completed == s.suspended; }));
    }
    if (fail_at) // the failure did happen: the run reached its operation
        CHECK(fc->failed());
    return fc->operations();
}

} // namespace

TEST_CASE("connection over memory: a failure injected into any operation of the transport ends the connection "
          "cleanly",
          "[connection][fail]")
{
    struct scenario {
        std::string name;
        std::string request;
        std::size_t answers;
        std::size_t pause = 0; // see run_scenario
    };
    const std::string get = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    const std::vector<scenario> scenarios{
        {"a keep-alive pair", get + get, 2},
        {"a body with 100-continue",
         "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 70\r\n\r\n" + std::string(70, 'x'),
         2}, // 100 Continue, then the answer
        {"a chunked body",
         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1},
        {"a suspended request", "GET /suspend HTTP/1.1\r\nHost: t\r\n\r\n" + get, 2},
        {"a parked request the client leaves", "GET /park HTTP/1.1\r\nHost: t\r\n\r\n", 0},
        {"an awaitable handler", "GET /await HTTP/1.1\r\nHost: t\r\n\r\n", 1},
        {"an event stream", "GET /events HTTP/1.1\r\nHost: t\r\n\r\n", 1},
        {"a pipelined batch",
         get + "GET /await HTTP/1.1\r\nHost: t\r\n\r\nGET /suspend HTTP/1.1\r\nHost: t\r\n\r\n" + get, 4},
        {"a bad request", "GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n", 1},
        {"a keep-alive pair with an idle pause", get + get, 2, get.size()},
    };
    for (const auto& sc : scenarios) {
        const auto operations = run_scenario(sc.name, sc.request, sc.answers, std::nullopt, sc.pause);
        UNSCOPED_INFO(sc.name << ": " << operations << " operations");
        CHECK(operations > 0);
        for (std::size_t n = 0; n < operations; ++n)
            run_scenario(sc.name, sc.request, sc.answers, n, sc.pause);
    }
}

// -- a connection idle past idle_release --

namespace {

plinth::server_options cooling_options()
{
    plinth::server_options o;
    o.idle_release = 2ms;
    o.idle_timeout = 10s;
    return o;
}

// Sends GET /hello on `client` and runs `srv` until its answer came.
void hello(memory_server& srv, memory_stream& client)
{
    client.write("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    const auto got = responses(read_responses(srv, client, 1));
    REQUIRE(got.size() == 1);
    CHECK(got[0].body() == "Hello");
}

} // namespace

TEST_CASE("connection over memory: a keep-alive connection idle past idle_release gives its request state back, "
          "then serves the next request",
          "[connection][idle]")
{
    seen s;
    memory_server srv{routes(s), cooling_options()};
    auto client = srv.connect();
    auto c = srv.last_connection();
    for (int round = 0; round < 3; ++round) {
        hello(srv, client);
        CHECK(srv.run_until([&] { return !c->warm(); }));
    }
    client.write("GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(responses(read_responses(srv, client, 2)).size() == 2); // pipelined into a cold connection
}

TEST_CASE("connection over memory: a connection keeps its request state while a request is under way",
          "[connection][idle]")
{
    seen s;
    memory_server srv{routes(s), cooling_options()};
    auto client = srv.connect();
    auto c = srv.last_connection();
    hello(srv, client);
    client.write("GET /hello HTTP/1.1\r\n"); // part of a header: its deadline runs, not idle_release
    CHECK_FALSE(srv.run_until([&] { return !c->warm(); }, 50ms));
    client.write("GET /park HTTP/1.1\r\nHost: t\r\n\r\n"); // not a header: 400 ...
    client.write("Host: t\r\n\r\n");
    CHECK(responses(read_responses(srv, client, 1)).size() == 1);
    auto parked = srv.connect(); // ... and a parked request
    auto p = srv.last_connection();
    parked.write("GET /park HTTP/1.1\r\nHost: t\r\n\r\n");
    REQUIRE(srv.run_until([&] { return s.held.size() == 1; }));
    CHECK_FALSE(srv.run_until([&] { return !p->warm(); }, 50ms));
    s.held[0].resume(plinth::text("late"));
    CHECK(responses(read_responses(srv, parked, 1)).size() == 1);
    CHECK(srv.run_until([&] { return !p->warm(); }));
}

TEST_CASE("connection over memory: a cold connection closes at its idle timeout, at a stop, and when the client leaves",
          "[connection][idle]")
{
    seen s;
    auto options = cooling_options();
    options.idle_timeout = 30ms;
    memory_server srv{routes(s), options};
    {
        auto client = srv.connect();
        auto c = srv.last_connection();
        hello(srv, client);
        REQUIRE(srv.run_until([&] { return !c->warm(); }));
        c.reset(); // (a connection counts until it is gone)
        CHECK(srv.run_until([&] { return client.at_end() && srv.connections() == 0; }));
    }
    options.idle_timeout = 10s;
    memory_server other{routes(s), options};
    auto leaving = other.connect();
    auto l = other.last_connection();
    hello(other, leaving);
    auto staying = other.connect();
    auto st = other.last_connection();
    hello(other, staying);
    REQUIRE(other.run_until([&] { return !l->warm() && !st->warm(); }));
    l.reset();
    st.reset();
    leaving.close();
    CHECK(other.run_until([&] { return other.connections() == 1; }));
    other.stop();
    CHECK(other.run_until([&] { return staying.at_end() && other.connections() == 0; }));
}
