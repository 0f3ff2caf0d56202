//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//

// The HTTP/1 writer (detail/h1/writer.hpp) without sockets: the response head's short way
// (write_head) must give the bytes the long way gives (finish_response through Beast's fields,
// then serialize_head), for every shape of response a handler can return; streamed heads, chunk
// framing and the batch of held answers.

#include <plinth/detail/h1/writer.hpp>

#include <catch2/catch.hpp>

#include <limits>
#include <string>
#include <vector>

namespace http = boost::beast::http;

namespace {

std::string long_way(plinth::response res, unsigned version, bool keep_alive, std::string_view name = "plinth")
{
    plinth::detail::h1::finish_response(res, version, keep_alive, name);
    std::string out;
    plinth::detail::h1::serialize_head(out, res);
    return out + res.body();
}

std::string short_way(plinth::response res, unsigned version, bool keep_alive, std::string_view name = "plinth")
{
    std::string out;
    plinth::detail::h1::write_head(out, res, version, keep_alive, name);
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
    plinth::detail::h1::write_head(out, res, 11, false, "plinth");
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

namespace {

namespace h1 = plinth::detail::h1;

// The head `h1::write_head` writes for `res`, Date replaced by a fixed one.
std::string head_of(plinth::response res, unsigned version = 11, bool keep_alive = true)
{
    std::string out;
    h1::write_head(out, res, version, keep_alive, "plinth");
    const auto at = out.find("Date: ");
    if (at != std::string::npos)
        out.replace(at + 6, 29, "<date>");
    return out + res.body();
}

} // namespace

TEST_CASE("h1 writer: what the server adds to each status, as bytes", "[h1_writer]")
{
    struct row {
        const char* what;
        plinth::response res;
        unsigned version;
        bool keep_alive;
        std::string bytes;
    };
    auto teapot = plinth::text("short and stout", http::status::conflict);
    teapot.set(http::field::server, "teapot");
    const std::vector<row> table{
        {"200 keeps its body and gets a length", plinth::text("hi"), 11, true,
         "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nServer: plinth\r\nDate: <date>\r\n"
         "Content-Length: 2\r\n\r\nhi"},
        {"204 has no body and no Content-Length (RFC 9110 8.6)", plinth::text("dropped", http::status::no_content), 11,
         true,
         "HTTP/1.1 204 No Content\r\nContent-Type: text/plain; charset=utf-8\r\nServer: plinth\r\nDate: "
         "<date>\r\n\r\n"},
        {"304 has no body and no Content-Length (RFC 9110 8.6, 15.4.5)",
         plinth::text("dropped", http::status::not_modified), 11, true,
         "HTTP/1.1 304 Not Modified\r\nContent-Type: text/plain; charset=utf-8\r\nServer: plinth\r\nDate: "
         "<date>\r\n\r\n"},
        {"HTTP/1.0 keep-alive is said; 1.1 close is said", plinth::text(""), 10, true,
         "HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nServer: plinth\r\nDate: "
         "<date>\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"},
        {"a handler's own Server stays", teapot, 11, false,
         "HTTP/1.1 409 Conflict\r\nContent-Type: text/plain; charset=utf-8\r\nServer: teapot\r\nDate: "
         "<date>\r\nContent-Length: 15\r\nConnection: close\r\n\r\nshort and stout"},
    };
    for (const auto& r : table) {
        INFO(r.what);
        CHECK(head_of(r.res, r.version, r.keep_alive) == r.bytes);
    }
}

TEST_CASE("h1 writer: a whole response never carries Transfer-Encoding, with Content-Length or without (RFC 9112 "
          "6.1, 6.2)",
          "[h1_writer]")
{
    for (const char* coding : {"chunked", "gzip", "gzip, chunked"}) {
        INFO(coding);
        auto res = plinth::text("body");
        res.set(http::field::transfer_encoding, coding);
        const auto head = head_of(res);
        CHECK(head.find("Transfer-Encoding") == std::string::npos);
        CHECK(head.find("Content-Length: 4\r\n") != std::string::npos);
    }
}

TEST_CASE("h1 writer: a streamed head is chunked for HTTP/1.1 and close-delimited for HTTP/1.0", "[h1_writer]")
{
    for (unsigned version : {11u, 10u}) {
        INFO("HTTP/" << version / 10 << "." << version % 10);
        plinth::response head{http::status::ok, 11};
        head.set(http::field::content_type, "text/event-stream");
        head.set(http::field::content_length, "12"); // a stream has no length
        bool keep_alive = true;
        std::string out;
        h1::write_stream_head(out, head, version, keep_alive, "plinth");
        CHECK(out.starts_with(version == 11 ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.0 200 OK\r\n"));
        CHECK(out.find("Content-Length") == std::string::npos);
        CHECK((out.find("Transfer-Encoding: chunked\r\n") != std::string::npos) == (version == 11));
        CHECK(keep_alive == (version == 11));
        CHECK(out.ends_with("\r\n\r\n"));
    }
}

TEST_CASE("h1 writer: chunk framing", "[h1_writer]")
{
    CHECK(h1::chunk_size_line(1).view() == "1\r\n");
    CHECK(h1::chunk_size_line(255).view() == "ff\r\n");
    CHECK(h1::chunk_size_line(65536).view() == "10000\r\n");
    CHECK(h1::chunk_size_line(std::numeric_limits<std::size_t>::max()).view() == "ffffffffffffffff\r\n");
    CHECK(h1::chunk_end == "\r\n");
    CHECK(h1::last_chunk("") == "0\r\n\r\n");
    CHECK(h1::last_chunk("X-Sum: 1\r\n") == "0\r\nX-Sum: 1\r\n\r\n");
}

TEST_CASE("h1 writer: a refusal is the reason phrase, closes the connection and says so", "[h1_writer]")
{
    for (auto status : {http::status::bad_request, http::status::request_timeout, http::status::payload_too_large,
                        http::status::uri_too_long, http::status::request_header_fields_too_large,
                        http::status::not_implemented, http::status::http_version_not_supported}) {
        const auto res = h1::refusal(status, "plinth");
        INFO(res.result_int());
        CHECK(res.result() == status);
        CHECK(res.body() == std::string(http::obsolete_reason(status)));
        CHECK_FALSE(res.keep_alive());
        CHECK(res[http::field::connection] == "close");
        CHECK(res[http::field::content_length] == std::to_string(res.body().size()));
        CHECK_FALSE(res[http::field::date].empty());
    }
}

TEST_CASE("h1 writer: the output batch holds answers in order up to its bound", "[h1_writer]")
{
    h1::output_batch batch;
    CHECK(batch.empty());
    batch.hold("H1", "B1");
    batch.hold("H2", "");
    CHECK(batch.bytes() == "H1B1H2");
    CHECK(batch.fits(h1::output_batch::max_bytes - batch.size()));
    CHECK_FALSE(batch.fits(h1::output_batch::max_bytes - batch.size() + 1));
    batch.clear();
    CHECK(batch.empty());
    CHECK(batch.fits(h1::output_batch::max_bytes));
}
