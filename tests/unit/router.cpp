//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//

// The router without sockets: matching, 404/405, HEAD, conflicts, malformed templates, and the
// router running as an interceptor inside a plinth::chain.

#include <plinth/router.hpp>

#include "http_harness.hpp"

#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using Catch::Matchers::Contains;
using http::verb;

/// A route whose handler answers with the route's own name ("GET /users/{id}").
plinth::route named(verb method, std::string path)
{
    std::string name = std::string(http::to_string(method)) + " " + path;
    return plinth::route(method, std::move(path), [name](const plinth::request&) { return plinth::text(name); });
}

/// The name of the route `method path` matched; fails the test when none matched.
std::string matched(const plinth::router& r, verb method, std::string_view path)
{
    auto m = r.match(method, path);
    INFO(std::string(http::to_string(method)) << " " << path);
    REQUIRE(m.route != nullptr);
    CHECK(m.allow.empty());
    return m.route->name();
}

/// What `plinth::router` construction threw as `std::invalid_argument`; fails when it did not throw.
std::string construction_error(std::vector<plinth::route> routes)
{
    try {
        plinth::router r(std::move(routes));
    }
    catch (const std::invalid_argument& e) {
        return e.what();
    }
    FAIL("plinth::router accepted the table");
    return {};
}

using plinth_test::harness;

} // namespace

// ---------------------------------------------------------------------------------------------
// match()

TEST_CASE("A literal path matches its route and no other", "[router]")
{
    plinth::router r({named(verb::get, "/"), named(verb::get, "/users"), named(verb::get, "/users/list"),
                      named(verb::post, "/users")});
    CHECK(matched(r, verb::get, "/") == "GET /");
    CHECK(matched(r, verb::get, "/users") == "GET /users");
    CHECK(matched(r, verb::post, "/users") == "POST /users");
    CHECK(matched(r, verb::get, "/users/list") == "GET /users/list");

    auto m = r.match(verb::get, "/users");
    REQUIRE(m.route == &r.routes()[1]);
    CHECK(m.params.empty());

    CHECK(r.match(verb::get, "/user").route == nullptr);
    CHECK(r.match(verb::get, "/users/lists").route == nullptr);
    CHECK(r.match(verb::get, "/users/list/more").route == nullptr);
}

TEST_CASE("A parameter segment captures one segment", "[router]")
{
    plinth::router r({named(verb::get, "/users/{id}")});
    auto m = r.match(verb::get, "/users/42");
    REQUIRE(m.route != nullptr);
    CHECK(m.route->name() == "GET /users/{id}");
    REQUIRE(m.params.size() == 1);
    CHECK(m.params.at("id") == "42");
    CHECK(m.params.find("id") == std::optional<std::string_view>("42"));
    CHECK_FALSE(m.params.find("name").has_value());
    CHECK_THROWS_AS(m.params.at("name"), std::out_of_range);

    // One segment only: the parameter does not swallow the rest of the path.
    CHECK(r.match(verb::get, "/users/42/posts").route == nullptr);
}

TEST_CASE("Several parameters are captured by name, in template order", "[router]")
{
    plinth::router r({named(verb::get, "/users/{user}/posts/{post}/comments/{comment}")});
    auto m = r.match(verb::get, "/users/alice/posts/7/comments/c-3");
    REQUIRE(m.route != nullptr);
    REQUIRE(m.params.size() == 3);
    CHECK(m.params.at("user") == "alice");
    CHECK(m.params.at("post") == "7");
    CHECK(m.params.at("comment") == "c-3");

    std::vector<std::pair<std::string, std::string>> in_order;
    for (const auto& [name, value] : m.params)
        in_order.emplace_back(std::string(name), value);
    CHECK(in_order
          == std::vector<std::pair<std::string, std::string>>{{"user", "alice"}, {"post", "7"}, {"comment", "c-3"}});
}

TEST_CASE("A parameter value is percent-decoded", "[router]")
{
    plinth::router r({named(verb::get, "/files/{name}")});

    auto m = r.match(verb::get, "/files/a%20b");
    REQUIRE(m.route != nullptr);
    CHECK(m.params.at("name") == "a b");

    // An encoded slash stays inside its segment: the path is split before decoding.
    m = r.match(verb::get, "/files/dir%2Ffile.txt");
    REQUIRE(m.route != nullptr);
    CHECK(m.params.at("name") == "dir/file.txt");

    // '+' is a plain character in a path.
    m = r.match(verb::get, "/files/a+b");
    REQUIRE(m.route != nullptr);
    CHECK(m.params.at("name") == "a+b");
}

TEST_CASE("A literal path is matched against the percent-decoded request path", "[router]")
{
    plinth::router r({named(verb::get, "/users/me")});
    CHECK(matched(r, verb::get, "/users/%6De") == "GET /users/me");
    CHECK(matched(r, verb::get, "/%75sers/me") == "GET /users/me");
}

TEST_CASE("A literal segment beats a parameter at the same position, whatever the route order", "[router]")
{
    auto check = [](const plinth::router& r) {
        auto me = r.match(verb::get, "/users/me");
        REQUIRE(me.route != nullptr);
        CHECK(me.route->name() == "GET /users/me");
        CHECK(me.params.empty());

        auto other = r.match(verb::get, "/users/42");
        REQUIRE(other.route != nullptr);
        CHECK(other.route->name() == "GET /users/{id}");
        CHECK(other.params.at("id") == "42");
    };
    SECTION("parameter route first")
    {
        check(plinth::router({named(verb::get, "/users/{id}"), named(verb::get, "/users/me")}));
    }
    SECTION("literal route first")
    {
        check(plinth::router({named(verb::get, "/users/me"), named(verb::get, "/users/{id}")}));
    }
}

TEST_CASE("Matching backtracks to a parameter route when the literal route lacks the method", "[router]")
{
    plinth::router r({named(verb::get, "/users/me"), named(verb::post, "/users/{id}")});

    CHECK(matched(r, verb::get, "/users/me") == "GET /users/me");

    auto m = r.match(verb::post, "/users/me");
    REQUIRE(m.route != nullptr);
    CHECK(m.route->name() == "POST /users/{id}");
    CHECK(m.params.at("id") == "me");
    CHECK(m.allow.empty());

    // Neither has DELETE: 405, and Allow is what either would accept.
    auto d = r.match(verb::delete_, "/users/me");
    CHECK(d.route == nullptr);
    CHECK(d.allow == "GET, HEAD, POST");
}

TEST_CASE("Matching backtracks out of a literal subtree that dead-ends deeper", "[router]")
{
    plinth::router r({named(verb::get, "/a/b/c"), named(verb::get, "/a/{x}/d")});
    CHECK(matched(r, verb::get, "/a/b/c") == "GET /a/b/c");

    auto m = r.match(verb::get, "/a/b/d");
    REQUIRE(m.route != nullptr);
    CHECK(m.route->name() == "GET /a/{x}/d");
    REQUIRE(m.params.size() == 1);
    CHECK(m.params.at("x") == "b");
}

TEST_CASE("No route for the path: no route and an empty Allow (404)", "[router]")
{
    plinth::router r({named(verb::get, "/users/{id}"), named(verb::post, "/users")});
    for (std::string_view path : {"/nothing", "/users/1/2", "/", "/Users"}) {
        INFO(path);
        auto m = r.match(verb::get, path);
        CHECK(m.route == nullptr);
        CHECK(m.allow.empty());
        CHECK(m.params.empty());
    }
    // Not an origin-form path at all.
    CHECK(r.match(verb::get, "").route == nullptr);
    CHECK(r.match(verb::get, "users").route == nullptr);
    CHECK(r.match(verb::options, "*").allow.empty());

    // An empty router finds nothing either.
    plinth::router empty;
    auto m = empty.match(verb::get, "/");
    CHECK(m.route == nullptr);
    CHECK(m.allow.empty());
}

TEST_CASE("Wrong method: no route and Allow lists the path's methods, HEAD when GET exists (405)", "[router]")
{
    plinth::router r({named(verb::post, "/items/{id}"), named(verb::get, "/items/{id}"),
                      named(verb::delete_, "/items/{id}"), named(verb::put, "/only-put"), named(verb::get, "/other")});

    auto m = r.match(verb::patch, "/items/3");
    CHECK(m.route == nullptr);
    CHECK(m.params.empty());
    CHECK(m.allow == "GET, HEAD, POST, DELETE");

    // No GET route: no HEAD in Allow, and HEAD itself is a wrong method.
    auto p = r.match(verb::get, "/only-put");
    CHECK(p.route == nullptr);
    CHECK(p.allow == "PUT");
    auto h = r.match(verb::head, "/only-put");
    CHECK(h.route == nullptr);
    CHECK(h.allow == "PUT");
}

TEST_CASE("Allow lists GET, HEAD and POST in that order, once each", "[router]")
{
    plinth::router r({named(verb::post, "/x"), named(verb::head, "/x"), named(verb::get, "/x")});
    auto m = r.match(verb::put, "/x");
    CHECK(m.route == nullptr);
    CHECK(m.allow == "GET, HEAD, POST");
}

TEST_CASE("HEAD falls back to the GET route", "[router]")
{
    plinth::router r({named(verb::get, "/users/{id}"), named(verb::post, "/users/{id}")});
    auto m = r.match(verb::head, "/users/9");
    REQUIRE(m.route != nullptr);
    CHECK(m.route->name() == "GET /users/{id}");
    CHECK(m.route->method() == verb::get);
    CHECK(m.params.at("id") == "9");
    CHECK(m.allow.empty());
}

TEST_CASE("An explicit HEAD route wins over the GET route", "[router]")
{
    auto check = [](const plinth::router& r) {
        CHECK(matched(r, verb::head, "/status") == "HEAD /status");
        CHECK(matched(r, verb::get, "/status") == "GET /status");
    };
    SECTION("GET listed first")
    {
        check(plinth::router({named(verb::get, "/status"), named(verb::head, "/status")}));
    }
    SECTION("HEAD listed first")
    {
        check(plinth::router({named(verb::head, "/status"), named(verb::get, "/status")}));
    }
}

TEST_CASE("A trailing slash makes a different path", "[router]")
{
    plinth::router only_bare({named(verb::get, "/users")});
    CHECK(matched(only_bare, verb::get, "/users") == "GET /users");
    auto m = only_bare.match(verb::get, "/users/");
    CHECK(m.route == nullptr);
    CHECK(m.allow.empty());

    plinth::router only_slash({named(verb::get, "/users/")});
    CHECK(matched(only_slash, verb::get, "/users/") == "GET /users/");
    CHECK(only_slash.match(verb::get, "/users").route == nullptr);

    // Both may coexist: they do not conflict.
    plinth::router both({named(verb::get, "/users"), named(verb::get, "/users/")});
    CHECK(matched(both, verb::get, "/users") == "GET /users");
    CHECK(matched(both, verb::get, "/users/") == "GET /users/");
}

TEST_CASE("A parameter never matches an empty segment", "[router]")
{
    plinth::router r({named(verb::get, "/users/{id}"), named(verb::get, "/users/{id}/posts")});
    for (std::string_view path : {"/users/", "/users//posts"}) {
        INFO(path);
        auto m = r.match(verb::get, path);
        CHECK(m.route == nullptr);
        CHECK(m.allow.empty());
    }
    // Sanity: the same routes do match a non-empty segment.
    CHECK(matched(r, verb::get, "/users/1/posts") == "GET /users/{id}/posts");
}

TEST_CASE("A malformed percent-escape in a request path throws http_error 400", "[router]")
{
    plinth::router r({named(verb::get, "/files/{name}"), named(verb::get, "/static")});
    for (std::string_view path : {"/files/%", "/files/%4", "/files/%zz", "/files/a%g1", "/%zz/static", "/static/%"}) {
        INFO(path);
        try {
            (void)r.match(verb::get, path);
            FAIL_CHECK("no exception");
        }
        catch (const plinth::http_error& e) {
            CHECK(e.status() == http::status::bad_request);
            CHECK_FALSE(e.public_message().empty());
        }
    }
}

TEST_CASE("Conflicting routes are rejected, naming both", "[router]")
{
    SECTION("same method, parameters with different names")
    {
        auto what = construction_error({named(verb::get, "/users/{id}"), named(verb::get, "/users/{name}")});
        CHECK_THAT(what, Contains("GET /users/{id}") && Contains("GET /users/{name}"));
    }
    SECTION("same method, parameter in the middle")
    {
        auto what =
            construction_error({named(verb::get, "/a/{x}/b"), named(verb::get, "/c"), named(verb::get, "/a/{y}/b")});
        CHECK_THAT(what, Contains("GET /a/{x}/b") && Contains("GET /a/{y}/b"));
        CHECK_THAT(what, !Contains("GET /c"));
    }
    SECTION("the same literal route twice")
    {
        auto what = construction_error({named(verb::delete_, "/x/y"), named(verb::delete_, "/x/y")});
        CHECK_THAT(what, Contains("DELETE /x/y"));
    }
}

TEST_CASE("The same path with different methods is not a conflict", "[router]")
{
    plinth::router r(
        {named(verb::get, "/users/{id}"), named(verb::post, "/users/{name}"), named(verb::head, "/users/{key}")});
    REQUIRE(r.routes().size() == 3);

    auto g = r.match(verb::get, "/users/1");
    REQUIRE(g.route != nullptr);
    CHECK(g.route->name() == "GET /users/{id}");
    CHECK(g.params.at("id") == "1");

    // Each route's captures carry its own parameter names.
    auto p = r.match(verb::post, "/users/bob");
    REQUIRE(p.route != nullptr);
    CHECK(p.route->name() == "POST /users/{name}");
    CHECK(p.params.at("name") == "bob");
    CHECK_FALSE(p.params.find("id").has_value());

    auto h = r.match(verb::head, "/users/k");
    REQUIRE(h.route != nullptr);
    CHECK(h.params.at("key") == "k");
}

TEST_CASE("Malformed path templates are rejected", "[router]")
{
    SECTION("no leading slash")
    {
        CHECK_THAT(construction_error({named(verb::get, "users/{id}")}), Contains("users/{id}"));
        CHECK_FALSE(construction_error({named(verb::get, "")}).empty());
    }
    SECTION("an empty parameter name")
    {
        CHECK_THAT(construction_error({named(verb::get, "/users/{}")}), Contains("/users/{}"));
    }
    SECTION("a parameter that is only part of a segment")
    {
        CHECK_THAT(construction_error({named(verb::get, "/a{b}")}), Contains("/a{b}"));
        CHECK_FALSE(construction_error({named(verb::get, "/{b}c")}).empty());
        CHECK_FALSE(construction_error({named(verb::get, "/x/{b")}).empty());
        CHECK_FALSE(construction_error({named(verb::get, "/x/b}")}).empty());
        CHECK_FALSE(construction_error({named(verb::get, "/x/{{b}}")}).empty());
    }
    SECTION("a parameter name used twice")
    {
        CHECK_THAT(construction_error({named(verb::get, "/users/{id}/posts/{id}")}), Contains("id"));
    }
    SECTION("one bad template among good ones")
    {
        CHECK_THAT(construction_error({named(verb::get, "/ok"), named(verb::get, "/bad/{}")}), Contains("/bad/{}"));
    }
}

TEST_CASE("A moved router still matches and captures", "[router]")
{
    plinth::router original({named(verb::get, "/u/{id}")});
    plinth::router moved(std::move(original));
    auto m = moved.match(verb::get, "/u/5");
    REQUIRE(m.route != nullptr);
    CHECK(m.params.at("id") == "5");

    plinth::router assigned;
    assigned = std::move(moved);
    m = assigned.match(verb::get, "/u/6");
    REQUIRE(m.route != nullptr);
    CHECK(m.params.at("id") == "6");
}

// ---------------------------------------------------------------------------------------------
// The router as an interceptor

TEST_CASE("Router interceptor: route interceptors run in order, then the handler, with path parameters", "[router]")
{
    std::vector<std::string> log;
    auto step = [&log](std::string name) {
        return plinth::interceptor{.name = name,
                                   .enter = [&log, name](plinth::context&) { log.push_back(name + ":enter"); },
                                   .leave = [&log, name](plinth::context&) { log.push_back(name + ":leave"); }};
    };

    plinth::router r({
        plinth::route(verb::get, "/users/{id}/posts/{post}", {step("auth"), step("load")},
                      [&log](const plinth::context& c) {
                          log.push_back("handler");
                          return plinth::text(std::string(c.param("id")) + "/" + std::string(c.param("post")));
                      }),
        plinth::route(verb::get, "/users/me", {step("other")},
                      [&log](const plinth::request&) {
                          log.push_back("wrong handler");
                          return plinth::text("me");
                      }),
    });
    plinth::chain chain{step("outer"), r.as_interceptor()};

    harness h(verb::get, "/users/a%20b/posts/7?x=1");
    auto c = h.run(chain);

    CHECK(c.error() == nullptr);
    CHECK(log
          == std::vector<std::string>{"outer:enter", "auth:enter", "load:enter", "handler", "load:leave", "auth:leave",
                                      "outer:leave"});
    REQUIRE(c.response.has_value());
    CHECK(c.response->result() == http::status::ok);
    CHECK(c.response->body() == "a b/7");
    CHECK(c.param("id") == "a b");
    CHECK(c.params().size() == 2);
}

TEST_CASE("Router interceptor: HEAD runs the GET route's handler", "[router]")
{
    bool ran = false;
    plinth::router r({plinth::route(verb::get, "/ping", [&ran](const plinth::request& req) {
        ran = true;
        CHECK(req.method() == verb::head);
        return plinth::text("pong");
    })});
    plinth::chain chain{r.as_interceptor()};

    harness h(verb::head, "/ping");
    auto c = h.run(chain);
    CHECK(ran);
    REQUIRE(c.response.has_value());
    CHECK(c.response->result() == http::status::ok);
}

TEST_CASE("Router interceptor: no route sets a 404 response", "[router]")
{
    bool handler_ran = false;
    std::vector<std::string> log;
    plinth::router r({plinth::route(verb::get, "/users/{id}", [&handler_ran](const plinth::request&) {
        handler_ran = true;
        return plinth::text("user");
    })});
    plinth::chain chain{
        plinth::interceptor{.name = "outer", .leave = [&log](plinth::context&) { log.push_back("outer:leave"); }},
        r.as_interceptor(),
        plinth::interceptor{.name = "after", .enter = [&log](plinth::context&) { log.push_back("after:enter"); }}};

    harness h(verb::get, "/nope?users/1");
    auto c = h.run(chain);

    CHECK_FALSE(handler_ran);
    CHECK(c.error() == nullptr);
    REQUIRE(c.response.has_value());
    CHECK(c.response->result() == http::status::not_found);
    CHECK(c.response->find(http::field::allow) == c.response->end());
    CHECK(c.response->body() == "Not Found");
    // The response ends the enter phase; leave stages still run.
    CHECK(log == std::vector<std::string>{"outer:leave"});
}

TEST_CASE("Router interceptor: a wrong method sets a 405 response with Allow", "[router]")
{
    bool handler_ran = false;
    auto handler = [&handler_ran](const plinth::request&) {
        handler_ran = true;
        return plinth::text("x");
    };
    plinth::router r(
        {plinth::route(verb::post, "/items/{id}", handler), plinth::route(verb::get, "/items/{id}", handler)});
    plinth::chain chain{r.as_interceptor()};

    harness h(verb::delete_, "/items/3");
    auto c = h.run(chain);

    CHECK_FALSE(handler_ran);
    CHECK(c.error() == nullptr);
    REQUIRE(c.response.has_value());
    CHECK(c.response->result() == http::status::method_not_allowed);
    auto allow = c.response->find(http::field::allow);
    REQUIRE(allow != c.response->end());
    CHECK(std::string(allow->value()) == "GET, HEAD, POST");
}

TEST_CASE("Router interceptor: a malformed escape in the path becomes a 400 error", "[router]")
{
    bool handler_ran = false;
    plinth::router r({plinth::route(verb::get, "/files/{name}", [&handler_ran](const plinth::request&) {
        handler_ran = true;
        return plinth::text("x");
    })});
    plinth::chain chain{r.as_interceptor()};

    harness h(verb::get, "/files/%zz");
    auto c = h.run(chain);

    CHECK_FALSE(handler_ran);
    CHECK_FALSE(c.response.has_value());
    REQUIRE(c.error() != nullptr);
    CHECK(c.error()->interceptor == "plinth::router");
    auto res = plinth::error_response(c.error()->exception);
    CHECK(res.result() == http::status::bad_request);
}
