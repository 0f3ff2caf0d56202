//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//

// The HTTP layer without sockets: handler adapters, http_error and error_response, the context's
// path and query, percent-decoding, and the chain's HTTP terminator.

#include <plinth/handler.hpp>
#include <plinth/http.hpp>

#include "alloc_counter.hpp"
#include "http_harness.hpp"

#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using Catch::Matchers::Contains;
using http::verb;

using plinth_test::harness;

plinth::response sync_handler(const plinth::request& req)
{
    return plinth::text("sync " + std::string(req.target()));
}

asio::awaitable<plinth::response> async_handler(plinth::request req)
{
    co_return plinth::text("async " + req.body());
}

plinth::response context_handler(const plinth::context& c)
{
    return plinth::text("context " + std::string(c.path()));
}

struct not_a_response {};

} // namespace

// The shapes the `handler` concept accepts, and some it must not.
static_assert(plinth::handler<decltype(&sync_handler)>);
static_assert(plinth::handler<decltype(&async_handler)>);
static_assert(plinth::handler<decltype(&context_handler)>);
static_assert(plinth::handler<asio::awaitable<plinth::response> (*)(const plinth::context&)>);
static_assert(plinth::handler<plinth::response (*)(plinth::request)>);
static_assert(!plinth::handler<int (*)(const plinth::request&)>);
static_assert(!plinth::handler<not_a_response (*)(const plinth::request&)>);
static_assert(!plinth::handler<asio::awaitable<void> (*)(const plinth::request&)>);
static_assert(!plinth::handler<plinth::response (*)(int)>);

// ---------------------------------------------------------------------------------------------
// make_handler

TEST_CASE("a context's optional_response acts as an optional; its storage outlives reset, shrink_to_fit frees it",
          "[http]")
{
    plinth::context c;
    CHECK_FALSE(c.response);
    CHECK(c.response == std::nullopt);
    CHECK_THROWS_AS(c.response.value(), std::bad_optional_access);
    CHECK(c.response.value_or(plinth::text("none")).body() == "none");

    c.response = plinth::text("one");
    REQUIRE(c.response.has_value());
    CHECK(c.response->body() == "one");
    const plinth::context copy = c; // a deep copy
    CHECK(copy.response->body() == "one");
    c.response->body() = "changed";
    CHECK(copy.response->body() == "one");
    plinth::context moved = std::move(c); // the storage goes with it: the source is empty
    CHECK_FALSE(c.response);
    CHECK(moved.response->body() == "changed");

    // reset keeps the storage: the next response moves in without an allocation.
    plinth::response next = plinth::text("two");
    moved.response.reset();
    CHECK_FALSE(moved.response);
    {
        plinth_test::allocation_scope scope;
        moved.response = std::move(next);
        CHECK(scope.allocations() == 0);
    }
    CHECK(moved.response.value().body() == "two");

    // shrink_to_fit leaves a response alone, and gives empty storage back.
    moved.response.shrink_to_fit();
    CHECK(moved.response->body() == "two");
    moved.response = {};
    CHECK_FALSE(moved.response);
    moved.response.shrink_to_fit();
    plinth::response third = plinth::text("three");
    {
        plinth_test::allocation_scope scope;
        moved.response = std::move(third);
        CHECK(scope.allocations() == 1);
    }
    CHECK(moved.response.emplace(http::status::accepted, 11).result() == http::status::accepted);

    // What code written for std::optional<response> does still compiles and works.
    moved.response = {http::status::created, 11};
    CHECK(moved.response->result() == http::status::created);
    const std::optional<plinth::response> as_optional = moved.response;
    REQUIRE(as_optional.has_value());
    CHECK(as_optional->result() == http::status::created);
    moved.response = std::optional<plinth::response>{};
    CHECK_FALSE(moved.response);
    moved.response = std::optional<plinth::response>{plinth::text("from an optional")};
    CHECK(moved.response->body() == "from an optional");
    plinth::context other;
    swap(moved.response, other.response);
    CHECK_FALSE(moved.response);
    CHECK(other.response->body() == "from an optional");
}

TEST_CASE("make_handler adapts response(const request&) into an interceptor that sets the response", "[http]")
{
    int calls = 0;
    auto h = plinth::make_handler("sync", [&calls](const plinth::request& req) {
        ++calls;
        CHECK(req.method() == verb::get);
        return sync_handler(req);
    });
    CHECK(h.name == "sync");
    CHECK(static_cast<bool>(h.enter));
    CHECK_FALSE(h.enter.is_async());

    plinth::chain chain{h};
    harness hx(verb::get, "/hello?x=1");
    auto c = hx.run(chain);

    CHECK(calls == 1);
    CHECK(c.error() == nullptr);
    REQUIRE(c.response.has_value());
    CHECK(c.response->result() == http::status::ok);
    CHECK(c.response->body() == "sync /hello?x=1");
}

TEST_CASE("make_handler adapts a plain function pointer", "[http]")
{
    plinth::chain chain{plinth::make_handler("fn", &sync_handler)};
    harness hx(verb::get, "/fn");
    auto c = hx.run(chain);
    REQUIRE(c.response.has_value());
    CHECK(c.response->body() == "sync /fn");
}

TEST_CASE("make_handler adapts awaitable<response>(request) taking the request by value", "[http]")
{
    int calls = 0;
    auto h = plinth::make_handler("async", [&calls](plinth::request req) -> asio::awaitable<plinth::response> {
        ++calls;
        // Really suspend, so the adapter's co_await is exercised.
        asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
        co_await timer.async_wait(asio::use_awaitable);
        co_await asio::post(asio::use_awaitable);
        // A copy: changing it leaves the exchange's request alone.
        req.body() += " changed";
        req.target("/elsewhere");
        co_return plinth::json("{\"body\":\"" + req.body() + "\"}", http::status::created);
    });
    CHECK(h.enter.is_async());

    plinth::chain chain{h};
    harness hx(verb::post, "/things", "payload");
    auto c = hx.run(chain);

    CHECK(calls == 1);
    CHECK(c.error() == nullptr);
    REQUIRE(c.response.has_value());
    CHECK(c.response->result() == http::status::created);
    CHECK(c.response->body() == "{\"body\":\"payload changed\"}");
    CHECK(std::string((*c.response)[http::field::content_type]) == "application/json");
    CHECK(hx.ex.request.body() == "payload");
    CHECK(std::string(hx.ex.request.target()) == "/things");
}

TEST_CASE("make_handler adapts an awaitable function taking the request by value", "[http]")
{
    plinth::chain chain{plinth::make_handler("async fn", &async_handler)};
    harness hx(verb::put, "/x", "data");
    auto c = hx.run(chain);
    REQUIRE(c.response.has_value());
    CHECK(c.response->body() == "async data");
}

TEST_CASE("make_handler adapts response(const context&), which reaches path parameters and query", "[http]")
{
    int calls = 0;
    auto h = plinth::make_handler("ctx", [&calls](const plinth::context& c) {
        ++calls;
        return plinth::text(std::string(c.param("id")) + " " + std::string(c.path()) + " "
                            + c.query("q").value_or("none"));
    });
    plinth::chain chain{h};
    harness hx(verb::get, "/users/7?q=a+b");
    hx.ex.params.add("id", "7");
    auto c = hx.run(chain);

    CHECK(calls == 1);
    REQUIRE(c.response.has_value());
    CHECK(c.response->body() == "7 /users/7 a b");
}

TEST_CASE("make_handler adapts awaitable<response>(const context&)", "[http]")
{
    int calls = 0;
    auto h = plinth::make_handler("async ctx", [&calls](const plinth::context& c) -> asio::awaitable<plinth::response> {
        ++calls;
        co_await asio::post(asio::use_awaitable);
        co_return plinth::text(std::string(c.param("name")));
    });
    CHECK(h.enter.is_async());
    plinth::chain chain{h};
    harness hx(verb::get, "/n");
    hx.ex.params.add("name", "zed");
    auto c = hx.run(chain);

    CHECK(calls == 1);
    REQUIRE(c.response.has_value());
    CHECK(c.response->body() == "zed");
}

TEST_CASE("make_handler with a context handler: a missing path parameter is an error", "[http]")
{
    bool reached = false;
    plinth::chain chain{plinth::make_handler("ctx", [&reached](const plinth::context& c) {
        auto v = c.param("absent");
        reached = true;
        return plinth::text(std::string(v));
    })};
    harness hx(verb::get, "/");
    auto c = hx.run(chain);
    CHECK_FALSE(reached);
    CHECK_FALSE(c.response.has_value());
    REQUIRE(c.error() != nullptr);
    CHECK_THROWS_AS(std::rethrow_exception(c.error()->exception), std::out_of_range);
    CHECK(plinth::error_response(c.error()->exception).result() == http::status::internal_server_error);
}

// ---------------------------------------------------------------------------------------------
// Responses and errors

TEST_CASE("make_response, text and json set status, body and content type", "[http]")
{
    auto t = plinth::text("hi");
    CHECK(t.result() == http::status::ok);
    CHECK(t.body() == "hi");
    CHECK(std::string(t[http::field::content_type]) == "text/plain; charset=utf-8");

    auto j = plinth::json("{}", http::status::accepted);
    CHECK(j.result() == http::status::accepted);
    CHECK(j.body() == "{}");
    CHECK(std::string(j[http::field::content_type]) == "application/json");

    auto r = plinth::make_response(http::status::bad_gateway, "<p/>", "text/html");
    CHECK(r.result() == http::status::bad_gateway);
    CHECK(r.body() == "<p/>");
    CHECK(std::string(r[http::field::content_type]) == "text/html");

    auto none = plinth::make_response(http::status::no_content);
    CHECK(none.result() == http::status::no_content);
    CHECK(none.body().empty());
    CHECK(none.find(http::field::content_type) == none.end());
}

TEST_CASE("http_error keeps its status and public message", "[http]")
{
    plinth::http_error e(http::status::conflict, "That name is taken");
    CHECK(e.status() == http::status::conflict);
    CHECK(e.public_message() == "That name is taken");
    CHECK(std::string(e.what()) == "That name is taken");

    // Caught as std::runtime_error, it is still an http_error.
    try {
        throw plinth::http_error(http::status::forbidden, "No");
    }
    catch (const std::runtime_error& base) {
        auto* typed = dynamic_cast<const plinth::http_error*>(&base);
        REQUIRE(typed != nullptr);
        CHECK(typed->status() == http::status::forbidden);
    }
}

TEST_CASE("http_error without a message uses the status' reason phrase", "[http]")
{
    plinth::http_error e(http::status::not_found);
    CHECK(e.status() == http::status::not_found);
    CHECK(e.public_message() == "Not Found");
}

TEST_CASE("error_response for an http_error keeps its status and public message", "[http]")
{
    auto res = plinth::error_response(std::make_exception_ptr(
        plinth::http_error(http::status::unprocessable_entity, "Field 'age' must be a number")));
    CHECK(res.result() == http::status::unprocessable_entity);
    CHECK(res.body() == "Field 'age' must be a number");
    CHECK(std::string(res[http::field::content_type]) == "text/plain; charset=utf-8");
}

TEST_CASE("error_response for any other exception is a 500 without the exception text", "[http]")
{
    SECTION("std::runtime_error")
    {
        auto res = plinth::error_response(std::make_exception_ptr(std::runtime_error("secret details")));
        CHECK(res.result() == http::status::internal_server_error);
        CHECK_FALSE(res.body().empty());
        CHECK_THAT(res.body(), !Contains("secret") && !Contains("details"));
    }
    SECTION("std::logic_error")
    {
        auto res = plinth::error_response(std::make_exception_ptr(std::out_of_range("secret index 42")));
        CHECK(res.result() == http::status::internal_server_error);
        CHECK_THAT(res.body(), !Contains("secret") && !Contains("42"));
    }
    SECTION("not a std::exception")
    {
        auto res = plinth::error_response(std::make_exception_ptr(std::string("secret string")));
        CHECK(res.result() == http::status::internal_server_error);
        CHECK_THAT(res.body(), !Contains("secret"));
    }
}

TEST_CASE("error_response for no exception is a 500", "[http]")
{
    auto res = plinth::error_response(nullptr);
    CHECK(res.result() == http::status::internal_server_error);
    CHECK_FALSE(res.body().empty());
}

TEST_CASE("A handler throwing std::runtime_error leaves an unhandled error that maps to a generic 500", "[http]")
{
    std::vector<std::string> log;
    bool threw = false;
    plinth::chain chain{
        plinth::interceptor{.name = "outer",
                            .leave = [&log](plinth::context&) { log.push_back("outer:leave"); },
                            .error =
                                [&log](plinth::context&, std::exception_ptr e) {
                                    log.push_back("outer:error");
                                    std::rethrow_exception(e); // observe, do not handle
                                }},
        plinth::make_handler("boom",
                             [&threw](const plinth::request&) -> plinth::response {
                                 threw = true;
                                 throw std::runtime_error("secret details");
                             }),
    };
    harness hx(verb::get, "/boom");
    auto c = hx.run(chain);

    CHECK(threw);
    CHECK(log == std::vector<std::string>{"outer:error"});
    CHECK_FALSE(c.response.has_value());
    const plinth::chain_error* err = c.error();
    REQUIRE(err != nullptr);
    CHECK(err->interceptor == "boom");
    CHECK(err->stage == plinth::stage::enter);
    CHECK_THROWS_AS(std::rethrow_exception(err->exception), std::runtime_error);

    auto res = plinth::error_response(err->exception);
    CHECK(res.result() == http::status::internal_server_error);
    CHECK_THAT(res.body(), !Contains("secret"));
}

TEST_CASE("An async handler throwing std::runtime_error also maps to a generic 500", "[http]")
{
    bool threw = false;
    plinth::chain chain{
        plinth::make_handler("async boom", [&threw](plinth::request) -> asio::awaitable<plinth::response> {
            co_await asio::post(asio::use_awaitable);
            threw = true;
            throw std::runtime_error("secret details");
        })};
    harness hx(verb::get, "/boom");
    auto c = hx.run(chain);

    CHECK(threw);
    REQUIRE(c.error() != nullptr);
    CHECK(c.error()->interceptor == "async boom");
    auto res = plinth::error_response(c.error()->exception);
    CHECK(res.result() == http::status::internal_server_error);
    CHECK_THAT(res.body(), !Contains("secret"));
}

TEST_CASE("A handler throwing http_error maps to its status and public message", "[http]")
{
    bool threw = false;
    plinth::chain chain{plinth::make_handler("payment", [&threw](const plinth::request&) -> plinth::response {
        threw = true;
        throw plinth::http_error(http::status::payment_required, "Your plan does not include exports");
    })};
    harness hx(verb::get, "/export");
    auto c = hx.run(chain);

    CHECK(threw);
    REQUIRE(c.error() != nullptr);
    auto res = plinth::error_response(c.error()->exception);
    CHECK(res.result() == http::status::payment_required);
    CHECK(res.body() == "Your plan does not include exports");
}

// ---------------------------------------------------------------------------------------------
// The context's path and query

TEST_CASE("context::path is the target without query and fragment", "[http]")
{
    auto path_of = [](std::string_view target) {
        harness hx(verb::get, target);
        return std::string(hx.context().path());
    };
    CHECK(path_of("/a/b") == "/a/b");
    CHECK(path_of("/a/b?x=1") == "/a/b");
    CHECK(path_of("/a/b#frag") == "/a/b");
    CHECK(path_of("/a/b?x=1#frag") == "/a/b");
    CHECK(path_of("/a%20b") == "/a%20b"); // not decoded: the router decodes segment by segment
    CHECK(path_of("/?") == "/");
}

TEST_CASE("context::query decodes percent-escapes and '+', finds the first value", "[http]")
{
    harness hx(verb::get, "/search?q=hello+world&lang=en%2Dgb&dup=1&dup=2&empty=&caf%C3%A9=yes&a%2Bb=plus");
    auto c = hx.context();
    CHECK(c.query("q") == std::optional<std::string>("hello world"));
    CHECK(c.query("lang") == std::optional<std::string>("en-gb"));
    CHECK(c.query("dup") == std::optional<std::string>("1"));
    CHECK(c.query("empty") == std::optional<std::string>(""));
    CHECK(c.query("caf\xC3\xA9") == std::optional<std::string>("yes"));
    CHECK(c.query("a+b") == std::optional<std::string>("plus"));
}

TEST_CASE("context::query: a missing key is nothing, a bare key is an empty string", "[http]")
{
    harness hx(verb::get, "/p?flag&x=1");
    auto c = hx.context();
    CHECK_FALSE(c.query("missing").has_value());
    CHECK_FALSE(c.query("fla").has_value());
    REQUIRE(c.query("flag").has_value());
    CHECK(c.query("flag")->empty());
    CHECK(c.query("x") == std::optional<std::string>("1"));

    harness none(verb::get, "/p");
    CHECK_FALSE(none.context().query("x").has_value());
    CHECK_FALSE(none.context().query("").has_value());
}

TEST_CASE("context::query drops the fragment", "[http]")
{
    harness hx(verb::get, "/p?a=1&b=2#b=3&c=4");
    auto c = hx.context();
    CHECK(c.query("a") == std::optional<std::string>("1"));
    CHECK(c.query("b") == std::optional<std::string>("2"));
    CHECK_FALSE(c.query("c").has_value());

    harness before(verb::get, "/p#frag?a=1");
    CHECK(before.context().path() == "/p");
    CHECK_FALSE(before.context().query("a").has_value());
}

// ---------------------------------------------------------------------------------------------
// percent_decode

TEST_CASE("percent_decode decodes escapes in either case, and '+' only for queries", "[http]")
{
    using plinth::detail::percent_decode;
    CHECK(percent_decode("") == std::optional<std::string>(""));
    CHECK(percent_decode("plain") == std::optional<std::string>("plain"));
    CHECK(percent_decode("a%20b") == std::optional<std::string>("a b"));
    CHECK(percent_decode("%41%62%2f%2F") == std::optional<std::string>("Ab//"));
    CHECK(percent_decode("%41") == std::optional<std::string>("A"));
    CHECK(percent_decode("x%41") == std::optional<std::string>("xA"));
    CHECK(percent_decode("%2541") == std::optional<std::string>("%41")); // decoded once only
    CHECK(percent_decode("a+b") == std::optional<std::string>("a+b"));
    CHECK(percent_decode("a+b", true) == std::optional<std::string>("a b"));
    CHECK(percent_decode("%2B", true) == std::optional<std::string>("+"));
    CHECK(percent_decode("%00") == std::optional<std::string>(std::string(1, '\0')));
}

TEST_CASE("percent_decode rejects malformed escapes", "[http]")
{
    using plinth::detail::percent_decode;
    for (std::string_view in : {"%", "%4", "%zz", "%4z", "%z4", "a%", "a%4", "%%41", "ok%2", "%G0"}) {
        INFO(in);
        CHECK_FALSE(percent_decode(in).has_value());
        CHECK_FALSE(percent_decode(in, true).has_value());
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP chain's terminator

TEST_CASE("HTTP chain: once a response is set, later enter stages are skipped but leave stages run", "[http]")
{
    std::vector<std::string> log;
    auto step = [&log](std::string name, bool respond) {
        return plinth::interceptor{.name = name,
                                   .enter =
                                       [&log, name, respond](plinth::context& c) {
                                           log.push_back(name + ":enter");
                                           if (respond)
                                               c.response = plinth::text("from " + name, http::status::unauthorized);
                                       },
                                   .leave = [&log, name](plinth::context&) { log.push_back(name + ":leave"); }};
    };
    bool handler_ran = false;
    plinth::chain chain{step("a", false), step("auth", true), step("c", false),
                        plinth::make_handler("handler", [&handler_ran](const plinth::request&) {
                            handler_ran = true;
                            return plinth::text("handler");
                        })};
    harness hx(verb::get, "/");
    auto c = hx.run(chain);

    CHECK_FALSE(handler_ran);
    CHECK(log == std::vector<std::string>{"a:enter", "auth:enter", "auth:leave", "a:leave"});
    CHECK(c.error() == nullptr);
    REQUIRE(c.response.has_value());
    CHECK(c.response->result() == http::status::unauthorized);
    CHECK(c.response->body() == "from auth");
}

TEST_CASE("HTTP chain: a handler's response ends the enter phase, leave stages see it", "[http]")
{
    std::vector<std::string> log;
    plinth::chain chain{
        plinth::interceptor{.name = "decorate",
                            .leave =
                                [&log](plinth::context& c) {
                                    log.push_back("decorate:leave");
                                    REQUIRE(c.response.has_value());
                                    c.response->set("X-Decorated", "yes");
                                }},
        plinth::make_handler("handler",
                             [&log](const plinth::request&) {
                                 log.push_back("handler");
                                 return plinth::text("body");
                             }),
        plinth::interceptor{.name = "late", .enter = [&log](plinth::context&) { log.push_back("late:enter"); }},
    };
    harness hx(verb::get, "/");
    auto c = hx.run(chain);

    CHECK(log == std::vector<std::string>{"handler", "decorate:leave"});
    REQUIRE(c.response.has_value());
    CHECK(c.response->body() == "body");
    CHECK(std::string((*c.response)["X-Decorated"]) == "yes");
}

TEST_CASE("HTTP chain: without a response every enter stage runs", "[http]")
{
    std::vector<std::string> log;
    auto step = [&log](std::string name) {
        return plinth::interceptor{.name = name, .enter = [&log, name](plinth::context&) { log.push_back(name); }};
    };
    plinth::chain chain{step("a"), step("b"), step("c")};
    CHECK_FALSE(plinth::chain::has_response(plinth::context{}));
    harness hx(verb::get, "/");
    auto c = hx.run(chain);
    CHECK(log == std::vector<std::string>{"a", "b", "c"});
    CHECK_FALSE(c.response.has_value());
    CHECK(c.error() == nullptr);
}
