//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//

// The connection's response head (detail/connection.hpp) without sockets: the short way
// (write_head) must give the bytes the long way gives (finish_response through Beast's fields,
// then serialize_head), for every shape of response a handler can return.

#include <plinth/detail/connection.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace http = boost::beast::http;

namespace {

std::string long_way(plinth::response res, unsigned version, bool keep_alive, std::string_view name = "plinth")
{
    plinth::detail::finish_response(res, version, keep_alive, name);
    std::string out;
    plinth::detail::serialize_head(out, res);
    return out + res.body();
}

std::string short_way(plinth::response res, unsigned version, bool keep_alive, std::string_view name = "plinth")
{
    std::string out;
    plinth::detail::write_head(out, res, version, keep_alive, name);
    return out + res.body();
}

std::vector<plinth::response> shapes()
{
    std::vector<plinth::response> all;
    all.push_back(plinth::text("Hello, World!"));
    all.push_back(plinth::text("", http::status::no_content));
    all.push_back(plinth::text("not empty, yet a 304 has no body", http::status::not_modified));
    all.push_back(plinth::text("conflict", http::status::conflict));
    auto named = plinth::text("x");
    named.set(http::field::server, "mine");
    named.set("X-Custom", "1");
    all.push_back(named);
    auto dated = plinth::text("x");
    dated.set(http::field::date, "Thu, 01 Jan 1970 00:00:00 GMT"); // the server's Date wins
    dated.set(http::field::content_length, "999");                 // ...and the real length
    dated.set(http::field::cache_control, "no-store");
    all.push_back(dated);
    auto reason = plinth::text("x", http::status::ok);
    reason.reason("Fine");
    all.push_back(reason);
    auto upgrade = plinth::text("x"); // the long way: Beast merges the tokens
    upgrade.set(http::field::connection, "upgrade");
    all.push_back(upgrade);
    auto chunked = plinth::text("x");
    chunked.set(http::field::transfer_encoding, "chunked");
    all.push_back(chunked);
    auto numbered = plinth::json(std::string(12345, 'x'));
    all.push_back(numbered);
    return all;
}

} // namespace

TEST_CASE("response head: written without touching the fields, it is byte for byte what Beast's fields give",
          "[response_head]")
{
    for (unsigned version : {10u, 11u})
        for (bool keep_alive : {false, true})
            for (const auto& res : shapes()) {
                INFO("HTTP/" << version / 10 << "." << version % 10 << (keep_alive ? " keep-alive" : " close") << ", "
                             << res.result_int());
                // Date has a resolution of a second: retry once if one passed in between.
                auto a = long_way(res, version, keep_alive);
                auto b = short_way(res, version, keep_alive);
                if (a != b)
                    a = long_way(res, version, keep_alive);
                CHECK(a == b);
            }
}

TEST_CASE("response head: a plain response gets Server, Date and Content-Length, and its fields are left as they were",
          "[response_head]")
{
    auto res = plinth::text("Hello");
    const auto fields = std::distance(res.begin(), res.end());
    std::string out;
    plinth::detail::write_head(out, res, 11, false, "plinth");
    CHECK(out.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nServer: plinth\r\nDate: "));
    CHECK(out.ends_with("\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"));
    CHECK(std::distance(res.begin(), res.end()) == fields);
}

TEST_CASE("response head: the configured server name is trimmed as Beast's fields trim it", "[response_head]")
{
    for (std::string_view name : {" padded\t", "", "  ", "plain"}) {
        INFO("server_name '" << name << "'");
        auto a = long_way(plinth::text("x"), 11, true, name);
        auto b = short_way(plinth::text("x"), 11, true, name);
        if (a != b) // Date has a resolution of a second
            a = long_way(plinth::text("x"), 11, true, name);
        CHECK(a == b);
    }
}
