//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// Unit tests of server-sent events without sockets: the wire format (format_event), the
// sse_stream handle, and the streaming handler shapes run through a real plinth::chain over a
// context and its exchange (as tests/unit/http.cpp runs the other shapes). What the connection
// would write is read back from the exchange's stream state.

#include <plinth/handler.hpp>
#include <plinth/http.hpp>
#include <plinth/sse.hpp>
#include <plinth/stream.hpp>

#include "http_harness.hpp"

#include <catch2/catch.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using namespace std::chrono_literals;
using http::verb;
using plinth::close_reason;
using plinth::sse_event;
using plinth::stream_errc;
using plinth::detail::stream_state;
using plinth_test::harness;
using error_code = boost::system::error_code;
using strings = std::vector<std::string>;

constexpr auto patience = 10s;

sse_event event(std::string data, std::string name = {}, std::string id = {},
                std::optional<std::chrono::milliseconds> retry = std::nullopt)
{
    sse_event e;
    e.data = std::move(data);
    e.event = std::move(name);
    e.id = std::move(id);
    e.retry = retry;
    return e;
}

std::string format_data(std::string data)
{
    return plinth::format_event(event(std::move(data)));
}

// Everything queued on the exchange's stream, taken as the connection would.
strings drain(const std::shared_ptr<stream_state>& st)
{
    strings out;
    std::vector<stream_state::entry> batch;
    while (st->take(batch, 1 << 20) == stream_state::take_result::data) {
        for (const auto& e : batch)
            out.push_back(e.data);
        st->written(batch, {});
    }
    return out;
}

std::string header(const plinth::response& r, http::field f)
{
    auto it = r.find(f);
    return it == r.end() ? "<absent>" : std::string(it->value());
}

bool is_async(const plinth::interceptor& i)
{
    return i.enter.is_async();
}

} // namespace

// The streaming shapes the `handler` concept accepts.
static_assert(plinth::handler<void (*)(const plinth::request&, plinth::sse_stream)>);
static_assert(plinth::handler<void (*)(const plinth::context&, plinth::sse_stream)>);
static_assert(plinth::handler<void (*)(const plinth::request&, plinth::response_stream)>);
static_assert(plinth::handler<void (*)(const plinth::context&, plinth::response_stream)>);
static_assert(plinth::handler<void (*)(const plinth::request&, const plinth::sse_stream&)>);
static_assert(!plinth::handler<int (*)(const plinth::request&, plinth::sse_stream)>);
static_assert(!plinth::handler<void (*)(const plinth::request&, int)>);
static_assert(
    std::is_same_v<plinth::detail::handle_of<void (*)(const plinth::request&, plinth::sse_stream), plinth::request&>,
                   plinth::sse_stream>);
static_assert(std::is_same_v<
              plinth::detail::handle_of<void (*)(const plinth::context&, plinth::response_stream), plinth::context&>,
              plinth::response_stream>);

// =============================================================================================
// format_event
// =============================================================================================

TEST_CASE("format_event: data alone is one data line and a blank line", "[sse]")
{
    CHECK(format_data("hello") == "data: hello\n\n");
    CHECK(format_data("with: colon and  spaces ") == "data: with: colon and  spaces \n\n");
    CHECK(format_data(std::string("a\0b", 3)) == std::string("data: a\0b\n\n", 11)); // NUL in data is not a field
}

TEST_CASE("format_event: fields in the order event, id, retry, data; empty ones are left out", "[sse]")
{
    CHECK(plinth::format_event(event("d", "update", "7", 3000ms)) == "event: update\nid: 7\nretry: 3000\ndata: d\n\n");
    CHECK(plinth::format_event(event("d", "update")) == "event: update\ndata: d\n\n");
    CHECK(plinth::format_event(event("d", {}, "42")) == "id: 42\ndata: d\n\n");
    CHECK(plinth::format_event(event("d", {}, {}, 0ms)) == "retry: 0\ndata: d\n\n");
    CHECK(plinth::format_event(event("d", {}, "x", 1500ms)) == "id: x\nretry: 1500\ndata: d\n\n");
    CHECK(plinth::format_event(event("d", "e", {}, 10ms)) == "event: e\nretry: 10\ndata: d\n\n");
}

TEST_CASE("format_event: multi-line data becomes one data line per line", "[sse]")
{
    SECTION("LF")
    {
        CHECK(format_data("a\nb\nc") == "data: a\ndata: b\ndata: c\n\n");
    }
    SECTION("CRLF")
    {
        CHECK(format_data("a\r\nb\r\nc") == "data: a\ndata: b\ndata: c\n\n");
    }
    SECTION("CR")
    {
        CHECK(format_data("a\rb\rc") == "data: a\ndata: b\ndata: c\n\n");
    }
    SECTION("mixed")
    {
        CHECK(format_data("a\nb\r\nc\rd") == "data: a\ndata: b\ndata: c\ndata: d\n\n");
    }
    SECTION("LF then CR is two line breaks")
    {
        CHECK(format_data("a\n\rb") == "data: a\ndata: \ndata: b\n\n");
    }
    SECTION("blank lines are kept")
    {
        CHECK(format_data("a\n\nb") == "data: a\ndata: \ndata: b\n\n");
    }
    SECTION("a trailing line break leaves an empty last data line")
    {
        CHECK(format_data("a\n") == "data: a\ndata: \n\n");
        CHECK(format_data("a\r\n") == "data: a\ndata: \n\n");
        CHECK(format_data("a\r") == "data: a\ndata: \n\n");
    }
    SECTION("a leading line break")
    {
        CHECK(format_data("\na") == "data: \ndata: a\n\n");
        CHECK(format_data("\r\n") == "data: \ndata: \n\n");
    }
    SECTION("with the other fields")
    {
        CHECK(plinth::format_event(event("x\ny", "tick", "1")) == "event: tick\nid: 1\ndata: x\ndata: y\n\n");
    }
}

TEST_CASE("format_event: empty data is still an event", "[sse]")
{
    CHECK(format_data("") == "data: \n\n");
    CHECK(plinth::format_event(event("", "ping")) == "event: ping\ndata: \n\n");
}

TEST_CASE("format_event: an event name or id with CR or LF, or an id with NUL, is invalid_argument", "[sse]")
{
    for (std::string bad : {"a\nb", "a\rb", "a\r\nb", "\n", "\r", "trailing\n"}) {
        INFO(bad);
        CHECK_THROWS_AS(plinth::format_event(event("d", bad)), std::invalid_argument);
        CHECK_THROWS_AS(plinth::format_event(event("d", {}, bad)), std::invalid_argument);
    }
    CHECK_THROWS_AS(plinth::format_event(event("d", {}, std::string{'1', '\0', '2'})), std::invalid_argument);
    CHECK_THROWS_AS(plinth::format_event(event("d", {}, std::string(1, '\0'))), std::invalid_argument);
    CHECK_NOTHROW(plinth::format_event(event("d", "name with spaces: and colon", "id with spaces")));
}

// =============================================================================================
// sse_stream
// =============================================================================================

TEST_CASE("sse_stream: send and async_send queue the formatted event; an invalid one throws and queues nothing",
          "[sse]")
{
    harness hx(verb::get, "/events");
    auto ctx = hx.context();
    auto s = plinth::sse_stream::open(ctx);
    REQUIRE(hx.ex.stream);

    CHECK(s.send("plain"));
    CHECK(s.send(event("two\nlines", "named", "9", 2000ms)));
    CHECK_THROWS_AS(s.send(event("x", "bad\nname")), std::invalid_argument);
    CHECK_THROWS_AS(s.async_send(event("x", {}, "bad\rid"), [](error_code) {}), std::invalid_argument);
    CHECK(s.queued() == 2);

    std::optional<error_code> sent;
    s.async_send(event("async"), [&](error_code ec) { sent = ec; });
    CHECK(s.queued() == 3);
    CHECK(drain(hx.ex.stream)
          == strings{"data: plain\n\n", "event: named\nid: 9\nretry: 2000\ndata: two\ndata: lines\n\n",
                     "data: async\n\n"});
    hx.ioc.run_for(patience);
    CHECK(sent == std::optional<error_code>(error_code{}));
}

TEST_CASE("sse_stream::comment writes a comment line; line breaks become spaces", "[sse]")
{
    harness hx(verb::get, "/events");
    auto ctx = hx.context();
    auto s = plinth::sse_stream::open(ctx);

    CHECK(s.comment("keep alive"));
    CHECK(s.comment("a\nb\rc\r\nd"));
    CHECK(s.comment(""));
    CHECK(drain(hx.ex.stream) == strings{": keep alive\n\n", ": a b c  d\n\n", ": \n\n"});

    CHECK(s.close());
    CHECK_FALSE(s.comment("after close"));
}

TEST_CASE("sse_stream::close ends the stream after what is queued", "[sse]")
{
    harness hx(verb::get, "/events");
    auto ctx = hx.context();
    auto s = plinth::sse_stream::open(ctx);
    CHECK(s.send("last"));
    CHECK(s.close());
    CHECK_FALSE(s.is_open());
    CHECK_FALSE(s.close());
    CHECK_FALSE(s.send("too late"));

    std::vector<stream_state::entry> batch;
    REQUIRE(hx.ex.stream->take(batch, 1 << 20) == stream_state::take_result::data);
    CHECK(batch.size() == 1);
    CHECK(batch[0].data == "data: last\n\n");
    hx.ex.stream->written(batch, {});
    CHECK(hx.ex.stream->take(batch, 1 << 20) == stream_state::take_result::ended);
    CHECK(hx.ex.stream->trailer().empty());

    std::optional<close_reason> reason;
    s.on_close([&](close_reason r) { reason = r; });
    hx.ex.stream->finish(close_reason::closed);
    CHECK(reason == std::optional<close_reason>(close_reason::closed));
}

TEST_CASE("sse_stream: an empty handle refuses everything", "[sse]")
{
    asio::io_context ioc;
    plinth::sse_stream s;
    CHECK_FALSE(s);
    CHECK_FALSE(s.is_open());
    CHECK_FALSE(s.send("x"));
    CHECK_FALSE(s.send(event("x", "e", "1")));
    CHECK_FALSE(s.comment("x"));
    CHECK_FALSE(s.close());
    CHECK(s.last_event_id().empty());
    CHECK(s.queued() == 0);
    CHECK(s.queued_bytes() == 0);
    CHECK(s.dropped() == 0);
    std::optional<close_reason> reason;
    s.on_close([&](close_reason r) { reason = r; });
    CHECK(reason == std::optional<close_reason>(close_reason::closed));
    std::optional<error_code> sent;
    s.async_send(event("x"), asio::bind_executor(ioc, [&](error_code ec) { sent = ec; }));
    CHECK_FALSE(sent);
    ioc.run_for(patience);
    CHECK(sent == std::optional<error_code>(stream_errc::closed));
}

TEST_CASE("sse_stream::open: the event stream's head, heartbeat and options", "[sse]")
{
    SECTION("default options come from the server's policy")
    {
        plinth::detail::suspension_policy policy;
        policy.streams.heartbeat = 1234ms;
        policy.streams.max_queued = 17;
        harness hx(verb::get, "/events");
        hx.ex.policy = &policy;
        auto ctx = hx.context();
        auto s = plinth::sse_stream::open(ctx);
        REQUIRE(ctx.response.has_value());
        CHECK(ctx.response->result() == http::status::ok);
        CHECK(header(*ctx.response, http::field::content_type) == "text/event-stream");
        CHECK(header(*ctx.response, http::field::cache_control) == "no-cache");
        CHECK(ctx.response->body().empty());
        REQUIRE(hx.ex.stream);
        CHECK(hx.ex.stream->heartbeat_text == ": heartbeat\n\n");
        CHECK(hx.ex.stream->ends_on_stop);
        CHECK(hx.ex.stream->options().heartbeat == 1234ms);
        CHECK(hx.ex.stream->options().max_queued == 17);
    }
    SECTION("given options win")
    {
        plinth::stream_options o;
        o.overflow = plinth::stream_overflow::drop_oldest;
        o.max_queued = 2;
        harness hx(verb::get, "/events");
        auto ctx = hx.context();
        auto s = plinth::sse_stream::open(ctx, o);
        CHECK(s.send("1"));
        CHECK(s.send("2"));
        CHECK(s.send("3"));
        CHECK(s.dropped() == 1);
        CHECK(drain(hx.ex.stream) == strings{"data: 2\n\n", "data: 3\n\n"});
    }
}

TEST_CASE("sse_stream::last_event_id reflects the request's Last-Event-ID", "[sse]")
{
    std::string seen = "<not run>";
    plinth::chain chain{plinth::make_handler(
        "events", [&seen](const plinth::request&, plinth::sse_stream s) { seen = std::string(s.last_event_id()); })};

    SECTION("present")
    {
        harness hx(verb::get, "/events");
        hx.ex.request.set("Last-Event-ID", "msg-42");
        hx.run(chain);
        CHECK(seen == "msg-42");
    }
    SECTION("absent: a first connection")
    {
        harness hx(verb::get, "/events");
        hx.run(chain);
        CHECK(seen.empty());
    }
    SECTION("header names are case-insensitive")
    {
        harness hx(verb::get, "/events");
        hx.ex.request.set("last-event-id", "7");
        hx.run(chain);
        CHECK(seen == "7");
    }
    SECTION("the handle keeps its copy after the request changes")
    {
        harness hx(verb::get, "/events");
        hx.ex.request.set("Last-Event-ID", "5");
        auto ctx = hx.context();
        auto s = plinth::sse_stream::open(ctx);
        hx.ex.request.set("Last-Event-ID", "6");
        CHECK(s.last_event_id() == "5");
    }
}

// =============================================================================================
// The streaming handler shapes in a chain
// =============================================================================================

TEST_CASE("make_handler: void(const request&, sse_stream) sets the SSE head and attaches the stream", "[sse]")
{
    int calls = 0;
    plinth::sse_stream kept;
    auto h = plinth::make_handler("events", [&](const plinth::request& req, plinth::sse_stream s) {
        ++calls;
        CHECK(req.target() == "/events?x=1");
        CHECK(s.is_open());
        CHECK(s.send("hello"));
        kept = s;
    });
    CHECK(h.name == "events");
    CHECK_FALSE(is_async(h));

    bool later_ran = false;
    plinth::chain chain{h, plinth::interceptor{.name = "later", .enter = [&](plinth::context&) { later_ran = true; }}};
    harness hx(verb::get, "/events?x=1");
    auto c = hx.run(chain);

    CHECK(calls == 1);
    CHECK_FALSE(later_ran); // the head is a response: the enter phase ends
    CHECK(c.error() == nullptr);
    REQUIRE(c.response.has_value());
    CHECK(c.response->result() == http::status::ok);
    CHECK(header(*c.response, http::field::content_type) == "text/event-stream");
    CHECK(header(*c.response, http::field::cache_control) == "no-cache");
    CHECK(c.response->body().empty());
    REQUIRE(hx.ex.stream);
    CHECK(hx.ex.stream->heartbeat_text == ": heartbeat\n\n");
    CHECK(hx.ex.stream->ends_on_stop);

    // The handle the handler kept writes to the exchange's stream, after the chain finished.
    CHECK(kept.send("later"));
    CHECK(drain(hx.ex.stream) == strings{"data: hello\n\n", "data: later\n\n"});
}

TEST_CASE("make_handler: void(const context&, sse_stream) reaches path parameters", "[sse]")
{
    std::string room;
    auto h = plinth::make_handler("room events", [&](const plinth::context& c, plinth::sse_stream s) {
        room = std::string(c.param("room"));
        s.send(event(room, "joined"));
    });
    CHECK_FALSE(is_async(h));
    plinth::chain chain{h};
    harness hx(verb::get, "/rooms/blue/events");
    hx.ex.params.add("room", "blue");
    hx.ex.request.set("Last-Event-ID", "3");
    auto c = hx.run(chain);

    CHECK(room == "blue");
    CHECK(c.error() == nullptr);
    REQUIRE(c.response.has_value());
    CHECK(header(*c.response, http::field::content_type) == "text/event-stream");
    REQUIRE(hx.ex.stream);
    CHECK(hx.ex.stream->last_event_id == "3");
    CHECK(drain(hx.ex.stream) == strings{"event: joined\ndata: blue\n\n"});
}

TEST_CASE("make_handler: void(const request&, response_stream) sets the default head", "[sse]")
{
    plinth::response_stream kept;
    auto h = plinth::make_handler("download", [&](const plinth::request&, plinth::response_stream s) {
        CHECK(s.write("part 1,"));
        kept = s;
    });
    CHECK_FALSE(is_async(h));
    plinth::chain chain{h};
    harness hx(verb::get, "/download");
    auto c = hx.run(chain);

    CHECK(c.error() == nullptr);
    REQUIRE(c.response.has_value());
    CHECK(c.response->result() == http::status::ok);
    CHECK(c.response->version() == 11);
    CHECK(header(*c.response, http::field::content_type) == "<absent>");
    CHECK(header(*c.response, http::field::cache_control) == "<absent>");
    CHECK(c.response->body().empty());
    REQUIRE(hx.ex.stream);
    CHECK(hx.ex.stream == plinth::detail::state_of(kept));
    CHECK(hx.ex.stream->heartbeat_text.empty());
    CHECK_FALSE(hx.ex.stream->ends_on_stop);
    CHECK(hx.ex.stream->last_event_id.empty());
    CHECK(kept.write("part 2"));
    CHECK(kept.close());
    CHECK(drain(hx.ex.stream) == strings{"part 1,", "part 2"});
}

TEST_CASE("make_handler: void(const context&, response_stream) reaches the query; leave stages see the head", "[sse]")
{
    std::optional<std::string> format;
    auto h = plinth::make_handler("export", [&](const plinth::context& c, plinth::response_stream s) {
        format = c.query("format");
        s.write("a,b\n");
    });
    plinth::chain chain{plinth::interceptor{.name = "decorate",
                                            .leave =
                                                [](plinth::context& c) {
                                                    REQUIRE(c.response.has_value());
                                                    c.response->set(http::field::content_type, "text/csv");
                                                }},
                        h};
    harness hx(verb::get, "/export?format=csv");
    auto c = hx.run(chain);

    CHECK(format == std::optional<std::string>("csv"));
    REQUIRE(c.response.has_value());
    CHECK(header(*c.response, http::field::content_type) == "text/csv");
    REQUIRE(hx.ex.stream);
    CHECK(drain(hx.ex.stream) == strings{"a,b\n"});
}

TEST_CASE("make_handler: opening a second stream on one request throws logic_error", "[sse]")
{
    SECTION("a stream handler opening another")
    {
        std::shared_ptr<stream_state> first;
        bool after = false;
        plinth::chain chain{plinth::make_handler("twice", [&](const plinth::context& c, plinth::sse_stream) {
            first = plinth::detail::exchange_of(c).stream;
            plinth::response_stream::open(const_cast<plinth::context&>(c));
            after = true;
        })};
        harness hx(verb::get, "/events");
        auto c = hx.run(chain);
        CHECK_FALSE(after);
        REQUIRE(c.error() != nullptr);
        CHECK(c.error()->interceptor == "twice");
        CHECK_THROWS_AS(std::rethrow_exception(c.error()->exception), std::logic_error);
        CHECK(hx.ex.stream == first); // the first stream stays, for the connection to finish
    }
    SECTION("one stage opening two")
    {
        plinth::chain chain{plinth::interceptor{.name = "stage", .enter = [](plinth::context& c) {
                                                    plinth::sse_stream::open(c);
                                                    plinth::sse_stream::open(c);
                                                }}};
        harness hx(verb::get, "/events");
        auto c = hx.run(chain);
        REQUIRE(c.error() != nullptr);
        CHECK(c.error()->interceptor == "stage");
        CHECK_THROWS_AS(std::rethrow_exception(c.error()->exception), std::logic_error);
        CHECK(hx.ex.stream != nullptr);
    }
}

TEST_CASE("make_handler: a stream handler throwing after open takes the chain's error path", "[sse]")
{
    strings log;
    std::optional<close_reason> reason;
    plinth::chain chain{plinth::interceptor{.name = "outer",
                                            .leave = [&](plinth::context&) { log.push_back("outer:leave"); },
                                            .error =
                                                [&](plinth::context&, std::exception_ptr e) {
                                                    log.push_back("outer:error");
                                                    std::rethrow_exception(e);
                                                }},
                        plinth::make_handler("events", [&](const plinth::request&, plinth::sse_stream s) {
                            s.on_close([&](close_reason r) { reason = r; });
                            CHECK(s.send("queued before the throw"));
                            throw plinth::http_error(http::status::bad_request, "Last-Event-ID must be a message id");
                        })};
    harness hx(verb::get, "/events");
    hx.ex.request.set("Last-Event-ID", "abc");
    auto c = hx.run(chain);

    CHECK(log == strings{"outer:error"});
    REQUIRE(c.error() != nullptr);
    CHECK(c.error()->interceptor == "events");
    CHECK(c.error()->stage == plinth::stage::enter);
    auto res = plinth::error_response(c.error()->exception);
    CHECK(res.result() == http::status::bad_request);
    CHECK(res.body() == "Last-Event-ID must be a message id");

    // The stream never began: the connection finishes it as failed, which its on_close sees.
    REQUIRE(hx.ex.stream);
    CHECK_FALSE(reason);
    hx.ex.stream->finish(close_reason::failed);
    CHECK(reason == std::optional<close_reason>(close_reason::failed));
    CHECK(hx.ex.stream->queued() == 0);
}
