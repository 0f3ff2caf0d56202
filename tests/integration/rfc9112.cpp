//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// The server requirements of RFC 9112 and RFC 9110 that only a whole exchange shows: what the
// server answers, in which order, and whether the connection stays. Each row names its section.
// What reading alone decides is in tests/unit/h1_reader.cpp, what writing alone decides in
// tests/unit/h1_writer.cpp.

#include "test_server.hpp"

#include <plinth/plinth.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

using namespace plinth_test;

namespace {

struct counting_app {
    std::atomic<int> counted{0};

    std::vector<plinth::route> routes()
    {
        return {
            {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello"); }},
            {http::verb::get, "/host",
             [](const plinth::request& r) { return plinth::text(std::string(r[http::field::host])); }},
            {http::verb::get, "/count",
             [this](const plinth::request&) { return plinth::text(std::to_string(++counted)); }},
            {http::verb::post, "/ignore", [](const plinth::request&) { return plinth::text("ignored"); }},
            {http::verb::post, "/echo", [](const plinth::request& r) { return plinth::text(r.body()); }},
            {http::verb::get, "/empty",
             [](const plinth::request&) { return plinth::text("dropped", http::status::no_content); }},
            {http::verb::get, "/unchanged",
             [](const plinth::request&) { return plinth::text("dropped", http::status::not_modified); }},
        };
    }
};

using response_check = std::function<void(const response&)>;

struct row {
    const char* section;
    const char* rule;
    std::string bytes;                   // what the client sends, at once
    std::vector<response_check> answers; // one per response expected, in order
    bool closes = false;                 // the server closes the connection after them
    bool head_request = false;           // the answers have no body (HEAD)
};

response_check status_is(http::status s)
{
    return [s](const response& r) { CHECK(r.result() == s); };
}

response_check body_is(std::string b)
{
    return [b](const response& r) {
        CHECK(r.result() == http::status::ok);
        CHECK(r.body() == b);
    };
}

const std::string host = "Host: t\r\n";

std::vector<row> requirements()
{
    return {
        {"9112 3.2.2",
         "MUST accept the absolute-form: it is routed by its path",
         "GET http://example.com/hello HTTP/1.1\r\nHost: example.com\r\n\r\n",
         {body_is("Hello")}},
        {"9112 3.3",
         "MUST ignore the Host received with an absolute-form target",
         "GET http://example.com:81/host HTTP/1.1\r\nHost: elsewhere\r\n\r\n",
         {body_is("example.com:81")}},
        {"9110 7.2",
         "MUST answer 400 to a Host with an invalid value",
         "GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n",
         {status_is(http::status::bad_request)},
         true},
        {"9110 8.6",
         "MUST NOT send Content-Length in a 204; the connection goes on",
         "GET /empty HTTP/1.1\r\n" + host + "\r\nGET /hello HTTP/1.1\r\n" + host + "\r\n",
         {[](const response& r) {
              CHECK(r.result() == http::status::no_content);
              CHECK(r.count(http::field::content_length) == 0);
              CHECK(r.body().empty());
          },
          body_is("Hello")}},
        {"9110 8.6, 15.4.5",
         "a 304 has no content and no Content-Length it cannot know",
         "GET /unchanged HTTP/1.1\r\n" + host + "\r\nGET /hello HTTP/1.1\r\n" + host + "\r\n",
         {[](const response& r) {
              CHECK(r.result() == http::status::not_modified);
              CHECK(r.count(http::field::content_length) == 0);
          },
          body_is("Hello")}},
        {"9110 9.3.2, 8.6",
         "HEAD: no content, and the Content-Length a GET would have",
         "HEAD /hello HTTP/1.1\r\n" + host + "\r\n",
         {[](const response& r) {
             CHECK(r.result() == http::status::ok);
             CHECK(r[http::field::content_length] == "5");
         }},
         false,
         true},
        {"9110 15.5.6",
         "MUST send Allow with a 405",
         "DELETE /hello HTTP/1.1\r\n" + host + "\r\n",
         {[](const response& r) {
             CHECK(r.result() == http::status::method_not_allowed);
             CHECK(r[http::field::allow] == "GET, HEAD");
         }}},
        {"9110 9.1",
         "SHOULD answer 501 to a method it does not implement",
         "BREW /hello HTTP/1.1\r\n" + host + "\r\n",
         {status_is(http::status::not_implemented)}},
        {"9110 6.6.1",
         "MUST send Date in 2xx, 3xx and 4xx responses",
         "GET /hello HTTP/1.1\r\n" + host + "\r\nGET /nowhere HTTP/1.1\r\n" + host + "\r\n",
         {[](const response& r) { CHECK_FALSE(r[http::field::date].empty()); },
          [](const response& r) {
              CHECK(r.result() == http::status::not_found);
              CHECK_FALSE(r[http::field::date].empty());
          }}},
        {"9112 9.3.2",
         "MUST answer pipelined requests in the order received",
         "GET /count HTTP/1.1\r\n" + host + "\r\nGET /hello HTTP/1.1\r\n" + host + "\r\nGET /count HTTP/1.1\r\n" + host
             + "\r\n",
         {body_is("1"), body_is("Hello"), body_is("2")}},
        {"9112 9.6",
         "MUST close after answering a request with Connection: close, processing no further request",
         "GET /hello HTTP/1.1\r\n" + host + "Connection: close\r\n\r\nGET /count HTTP/1.1\r\n" + host + "\r\n",
         {[](const response& r) {
             CHECK(r.body() == "Hello");
             CHECK_FALSE(r.keep_alive());
         }},
         true},
        {"9112 9.3",
         "MUST read the whole body (or close) before the next request",
         "POST /ignore HTTP/1.1\r\n" + host
             + "Content-Length: 23\r\n\r\nGET /count HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n" + host + "\r\n",
         {body_is("ignored"), body_is("Hello")}},
        {"9112 6.3, 11.2",
         "Transfer-Encoding with Content-Length: refused, closed, nothing smuggled through",
         "POST /echo HTTP/1.1\r\n" + host
             + "Content-Length: 38\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET "
               "/count HTTP/1.1\r\n"
             + host + "\r\n",
         {status_is(http::status::bad_request)},
         true},
        {"9112 6.3",
         "MUST answer 400 and close when chunked is not the final coding",
         "POST /echo HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\nGET /count HTTP/1.1\r\n" + host + "\r\n",
         {status_is(http::status::bad_request)},
         true},
        {"9112 6.3",
         "MUST answer 400 and close to an invalid Content-Length",
         "POST /echo HTTP/1.1\r\n" + host + "Content-Length: 4x\r\n\r\nbody",
         {status_is(http::status::bad_request)},
         true},
        {"9110 15.2, 10.1.1",
         "MUST NOT send 1xx to HTTP/1.0: its 100-continue is ignored",
         "POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
         {[](const response& r) {
             CHECK(r.version() == 10);
             CHECK(r.body() == "hi");
         }},
         true},
        {"9112 2.3",
         "SHOULD answer with the highest 1.x it speaks: plinth answers an HTTP/1.0 client in HTTP/1.0 "
         "(deliberately: a 1.0 client reads it without surprise)",
         "GET /hello HTTP/1.0\r\n\r\n",
         {[](const response& r) { CHECK(r.version() == 10); }},
         true},
    };
}

} // namespace

TEST_CASE("rfc 9112: the requirements only a whole exchange shows, over a connection", "[rfc]")
{
    counting_app app;
    test_server srv{app.routes()};
    for (const auto& r : requirements()) {
        INFO("RFC " << r.section << ": " << r.rule);
        client c{srv.port()};
        c.write_raw(r.bytes);
        for (const auto& check : r.answers)
            check(c.read(r.head_request));
        if (r.closes)
            CHECK(c.closed_by_server());
    }
    CHECK(app.counted == 2); // only the pipelined row's two; nothing smuggled or sent after a close ran
}

TEST_CASE("rfc 9110 10.1.1: a 100-continue request gets 100 Continue before it sends the body, then the answer",
          "[rfc]")
{
    counting_app app;
    test_server srv{app.routes()};
    client c{srv.port()};
    c.write_raw("POST /echo HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    CHECK(c.read_raw(25) == "HTTP/1.1 100 Continue\r\n\r\n");
    c.write_raw("body");
    CHECK(c.read().body() == "body");
}
