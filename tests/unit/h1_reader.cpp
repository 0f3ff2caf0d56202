//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// The HTTP/1 reader (detail/h1/reader.hpp) without sockets: bytes in, a request or a status out.
// The table holds the server requirements of RFC 9112 (sections 2 to 9) and RFC 9110 (fields,
// framing, request targets, Host) that reading a request decides, each with its section; the
// ones only a whole connection shows (pipelining, closing) are in
// tests/integration/rfc9112.cpp. Every row is read twice: in one piece, and a byte at a time.

#include <plinth/detail/h1/reader.hpp>

#include <catch2/catch.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace http = boost::beast::http;
namespace beast = boost::beast;
namespace h1 = plinth::detail::h1;

namespace {

struct read_result {
    h1::read_state state = h1::read_state::need_more;
    http::status status = http::status::unknown;
    std::optional<plinth::request> request;
    bool started = false;
};

// Reads `bytes` as a connection would: `piece` bytes at a time (0: all at once) into a buffer as
// large as a connection's, parsing after each.
read_result read(std::string_view bytes, std::size_t piece = 0, h1::read_limits limits = {})
{
    beast::flat_buffer in{std::max<std::size_t>(limits.header_bytes, 64 * 1024) + 64 * 1024};
    h1::request_reader reader{limits};
    read_result r;
    std::size_t at = 0;
    for (;;) {
        r.state = reader.parse(in);
        if (r.state == h1::read_state::message_ready || r.state == h1::read_state::refused)
            break;
        if (r.state == h1::read_state::header_ready) // the body may be buffered already
            continue;
        if (at == bytes.size())
            break;
        const auto n = piece == 0 ? bytes.size() - at : std::min(piece, bytes.size() - at);
        if (in.max_size() - in.size() < n) { // what the connection answers 400
            r.state = h1::read_state::refused;
            r.status = http::status::bad_request;
            return r;
        }
        auto b = in.prepare(n);
        std::memcpy(b.data(), bytes.data() + at, n);
        in.commit(n);
        at += n;
    }
    r.started = reader.started();
    if (r.state == h1::read_state::refused)
        r.status = reader.status();
    else if (r.state == h1::read_state::message_ready)
        r.request = reader.release();
    return r;
}

using request_check = std::function<void(const plinth::request&)>;

struct row {
    const char* section;                               // where the requirement is written
    const char* rule;                                  // what it requires, shortly
    std::string bytes;                                 // what the client sends
    http::status refused_with = http::status::unknown; // unknown: accepted
    request_check check = {};                          // on the accepted request
};

const std::string host = "Host: example.com\r\n";

std::vector<row> requirements()
{
    return {
        // RFC 9112 2.2: message parsing
        {"9112 2.2",
         "SHOULD ignore at least one empty line before the request-line",
         "\r\n\r\nGET / HTTP/1.1\r\n" + host + "\r\n",
         {},
         [](const plinth::request& r) { CHECK(r.target() == "/"); }},
        {"9112 2.2", "MUST reject (or consume) whitespace between the start-line and the first field",
         "GET / HTTP/1.1\r\n X: y\r\n" + host + "\r\n", http::status::bad_request},
        {"9112 2.2", "MUST treat a bare CR as invalid (or replace it with SP)",
         "GET / HTTP/1.1\r\n" + host + "X: a\rb\r\n\r\n", http::status::bad_request},
        // RFC 9112 3: request line
        {"9112 3", "SHOULD answer an invalid request-line with 400", "GET  / HTTP/1.1\r\n" + host + "\r\n",
         http::status::bad_request},
        {"9112 3", "SHOULD answer an invalid request-line with 400 (a space in the target)",
         "GET /a b HTTP/1.1\r\n" + host + "\r\n", http::status::bad_request},
        {"9112 3", "MUST answer 414 to a request-target longer than it parses",
         "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\n" + host + "\r\n", http::status::uri_too_long},
        {"9112 2.3, 9110 15.6.6", "a major version it does not speak: 505", "GET / HTTP/2.0\r\n" + host + "\r\n",
         http::status::http_version_not_supported},
        {"9112 2.3",
         "HTTP/1.0 is read as HTTP/1.0",
         "GET / HTTP/1.0\r\n\r\n",
         {},
         [](const plinth::request& r) { CHECK(r.version() == 10); }},
        // RFC 9112 3.2 and RFC 9110 7.2: Host
        {"9112 3.2", "MUST answer 400 to an HTTP/1.1 request without Host", "GET / HTTP/1.1\r\n\r\n",
         http::status::bad_request},
        {"9112 3.2", "MUST answer 400 to a request with two Host lines", "GET / HTTP/1.1\r\n" + host + host + "\r\n",
         http::status::bad_request},
        {"9112 3.2", "MUST answer 400 to two Host lines in HTTP/1.0 too", "GET / HTTP/1.0\r\n" + host + host + "\r\n",
         http::status::bad_request},
        {"9110 7.2", "MUST answer 400 to a Host with an invalid value", "GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n",
         http::status::bad_request},
        {"9110 7.2", "MUST answer 400 to a Host with an invalid value (a path in it)",
         "GET / HTTP/1.1\r\nHost: example.com/x\r\n\r\n", http::status::bad_request},
        {"9110 7.2", "MUST answer 400 to a Host with an invalid port", "GET / HTTP/1.1\r\nHost: example.com:8o\r\n\r\n",
         http::status::bad_request},
        {"9110 7.2",
         "a Host with a port, an IP literal or an empty value is valid",
         "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
         {},
         [](const plinth::request& r) { CHECK(r[http::field::host] == "[::1]:8080"); }},
        {"9110 7.2", "an empty Host is valid (a target without authority)", "GET / HTTP/1.1\r\nHost:\r\n\r\n"},
        // RFC 9112 3.2.x: request-target forms
        {"9112 3.2.2",
         "MUST accept the absolute-form",
         "GET http://example.com/users/7?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
         {},
         [](const plinth::request& r) { CHECK(r.target() == "/users/7?x=1"); }},
        {"9112 3.2.2",
         "MUST accept the absolute-form (no path: /)",
         "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
         {},
         [](const plinth::request& r) { CHECK(r.target() == "/"); }},
        {"9112 3.3",
         "MUST ignore the received Host for an absolute-form target, using the target's",
         "GET https://example.org:8443/a HTTP/1.1\r\nHost: other.example\r\n\r\n",
         {},
         [](const plinth::request& r) {
             CHECK(r[http::field::host] == "example.org:8443");
             CHECK(r.count(http::field::host) == 1);
         }},
        {"9112 3.2.3", "the authority-form is CONNECT's only: 400 for another method",
         "GET example.com:443 HTTP/1.1\r\n" + host + "\r\n", http::status::bad_request},
        {"9110 9.3.6", "CONNECT is not implemented by plinth (no tunnels): 501",
         "CONNECT example.com:443 HTTP/1.1\r\n" + host + "\r\n", http::status::not_implemented},
        {"9112 3.2.4", "the asterisk-form is OPTIONS's only", "GET * HTTP/1.1\r\n" + host + "\r\n",
         http::status::bad_request},
        {"9112 3.2.4",
         "OPTIONS * is read",
         "OPTIONS * HTTP/1.1\r\n" + host + "\r\n",
         {},
         [](const plinth::request& r) { CHECK(r.target() == "*"); }},
        {"9112 3.2", "a target that is no form at all: 400", "GET relative/path HTTP/1.1\r\n" + host + "\r\n",
         http::status::bad_request},
        // RFC 9112 5 and RFC 9110 5: fields
        {"9112 5.1", "MUST answer 400 to whitespace between a field name and its colon",
         "GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", http::status::bad_request},
        {"9112 5.1",
         "optional whitespace around a field value is not part of it",
         "GET / HTTP/1.1\r\n" + host + "X:  \t y \t \r\n\r\n",
         {},
         [](const plinth::request& r) { CHECK(r["X"] == "y"); }},
        {"9112 5.2",
         "MUST reject an obs-fold or replace it with SP",
         "GET / HTTP/1.1\r\n" + host + "X: a\r\n b\r\n\r\n",
         {},
         [](const plinth::request& r) { CHECK(r["X"].find_first_of("\r\n") == std::string_view::npos); }},
        {"9110 5.5", "MUST reject (or replace) a NUL in a field value",
         std::string("GET / HTTP/1.1\r\n" + host + "X: a") + '\0' + "b\r\n\r\n", http::status::bad_request},
        {"9110 5.4", "MUST answer 4xx to a header section larger than it processes (431)",
         "GET / HTTP/1.1\r\n" + host + "X: " + std::string(9000, 'a') + "\r\n\r\n",
         http::status::request_header_fields_too_large},
        {"9110 5.6.2", "a field name is a token", "GET / HTTP/1.1\r\n" + host + "X@Y: z\r\n\r\n",
         http::status::bad_request},
        // RFC 9112 6 and 7: framing
        {"9112 6.1", "MUST treat Transfer-Encoding in HTTP/1.0 as faulty framing (400, then close)",
         "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", http::status::bad_request},
        {"9112 6.1, 6.3", "Transfer-Encoding with Content-Length is refused (then the connection closes)",
         "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
         http::status::bad_request},
        {"9112 6.3", "MUST answer 400 (and close) when chunked is not the final coding",
         "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\nx", http::status::bad_request},
        {"9112 6.3", "MUST answer 400 (and close) when chunked is not the final coding (chunked, gzip)",
         "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", http::status::bad_request},
        {"9112 6.1", "SHOULD answer 501 to a transfer coding it does not understand",
         "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
         http::status::not_implemented},
        {"9112 6.1", "chunked applied twice is refused",
         "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
         http::status::bad_request},
        {"9112 6.3", "MUST answer 400 (and close) to an invalid Content-Length",
         "POST / HTTP/1.1\r\n" + host + "Content-Length: 1x\r\n\r\n", http::status::bad_request},
        {"9112 6.3", "MUST answer 400 to Content-Length values that differ",
         "POST / HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 2\r\n\r\nx", http::status::bad_request},
        {"9110 8.6", "MUST not overflow on a large Content-Length (refused, not misread)",
         "POST / HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999999\r\n\r\n", http::status::bad_request},
        {"9110 15.5.14", "a body larger than allowed: 413, before reading it",
         "POST / HTTP/1.1\r\n" + host + "Content-Length: 2000000\r\n\r\n", http::status::payload_too_large},
        {"9112 6.3",
         "without Content-Length or Transfer-Encoding, a request has no body",
         "POST / HTTP/1.1\r\n" + host + "\r\n",
         {},
         [](const plinth::request& r) { CHECK(r.body().empty()); }},
        {"9112 6.3",
         "Content-Length gives the body's length",
         "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\nabc",
         {},
         [](const plinth::request& r) { CHECK(r.body() == "abc"); }},
        {"9112 7.1",
         "MUST decode chunked",
         "POST / HTTP/1.1\r\n" + host
             + "Transfer-Encoding: chunked\r\n\r\n"
               "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
         {},
         [](const plinth::request& r) { CHECK(r.body() == "abcde"); }},
        {"9112 7.1",
         "MUST decode chunked: an empty body, the last chunk at once",
         "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         {},
         [](const plinth::request& r) { CHECK(r.body().empty()); }},
        {"9112 7.1.1",
         "MUST ignore unrecognized chunk extensions",
         "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n0\r\n\r\n",
         {},
         [](const plinth::request& r) { CHECK(r.body() == "abc"); }},
        {"9112 7.1", "MUST not overflow on a large chunk size (refused, not misread)",
         "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
         http::status::bad_request},
        {"9112 7.1.2, 9110 6.5",
         "trailer fields are not merged into the header",
         "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-Trailer: t\r\n\r\n",
         {},
         [](const plinth::request& r) {
             CHECK(r.count("X-Trailer") == 0);
             CHECK(r.body() == "x");
         }},
        // RFC 9110 10.1.1: Expect
        {"9112 7.1.2, 9110 6.5",
         "a trailer field named as a header field is not merged into the header either",
         "POST / HTTP/1.1\r\n" + host
             + "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nHost: evil\r\nX-Sum: 1\r\n\r\n",
         {},
         [](const plinth::request& r) {
             CHECK(r.count(http::field::host) == 1);
             CHECK(r[http::field::host] == "example.com");
             CHECK(r[http::field::transfer_encoding] == "chunked");
         }},
        {"9110 10.1.1", "an expectation other than 100-continue may be refused: 417",
         "GET / HTTP/1.1\r\n" + host + "Expect: tea\r\n\r\n", http::status::expectation_failed},
    };
}

} // namespace

TEST_CASE("h1 reader: the requirements of RFC 9112 and 9110 that reading a request decides", "[h1_reader][rfc]")
{
    for (const auto& r : requirements()) {
        for (std::size_t piece : {std::size_t(0), std::size_t(1)}) {
            INFO("RFC " << r.section << ": " << r.rule << (piece ? " (a byte at a time)" : ""));
            const auto got = read(r.bytes, piece);
            if (r.refused_with != http::status::unknown) {
                CHECK(got.state == h1::read_state::refused);
                CHECK(got.status == r.refused_with);
            }
            else {
                REQUIRE(got.state == h1::read_state::message_ready);
                REQUIRE(got.request);
                if (r.check)
                    r.check(*got.request);
            }
        }
    }
}

TEST_CASE("h1 reader: a header is ready before its body, so that 100-continue and refusals come first", "[h1_reader]")
{
    beast::flat_buffer in;
    h1::request_reader reader{{}};
    const std::string head = "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    auto b = in.prepare(head.size());
    std::memcpy(b.data(), head.data(), head.size());
    in.commit(head.size());
    REQUIRE(reader.parse(in) == h1::read_state::header_ready);
    CHECK(h1::expects_continue(reader.get()));
    CHECK(reader.parse(in) == h1::read_state::need_more);
    b = in.prepare(4);
    std::memcpy(b.data(), "body", 4);
    in.commit(4);
    REQUIRE(reader.parse(in) == h1::read_state::message_ready);
    CHECK(reader.release().body() == "body");
}

TEST_CASE("h1 reader: 100-continue is for HTTP/1.1 only (RFC 9110 10.1.1: ignored from HTTP/1.0)", "[h1_reader]")
{
    plinth::request r{http::verb::post, "/", 11};
    r.set(http::field::expect, "100-Continue");
    CHECK(h1::expects_continue(r));
    r.version(10);
    CHECK_FALSE(h1::expects_continue(r));
}

TEST_CASE("h1 reader: empty lines alone have not started a request; a first byte has", "[h1_reader]")
{
    CHECK_FALSE(read("\r\n\r\n\n").started);
    CHECK(read("G").started);
    CHECK(read("G").state == h1::read_state::need_more);
}

TEST_CASE("h1 reader: a pipelined request stays in the buffer for the next reader", "[h1_reader]")
{
    beast::flat_buffer in;
    const std::string two = "GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n";
    auto b = in.prepare(two.size());
    std::memcpy(b.data(), two.data(), two.size());
    in.commit(two.size());
    h1::request_reader first{{}};
    REQUIRE(first.parse(in) == h1::read_state::message_ready);
    CHECK(first.release().target() == "/1");
    CHECK(h1::holds_header({static_cast<const char*>(in.data().data()), in.size()}));
    h1::request_reader second{{}};
    REQUIRE(second.parse(in) == h1::read_state::message_ready);
    CHECK(second.release().target() == "/2");
    CHECK(in.size() == 0);
}

TEST_CASE("h1 reader: the status of a parse error, as a pure function", "[h1_reader]")
{
    struct row {
        beast::error_code ec;
        bool line_parsed;
        std::string_view buffered;
        http::status status;
    };
    const std::vector<row> table{
        {http::error::header_limit, false, "GET /aaaaaaaaaaaaaaaaaaaaaaaa", http::status::uri_too_long}, // in 20
        {http::error::header_limit, false, "GET / HTTP/1.1\r\nX: aaaa", http::status::request_header_fields_too_large},
        {http::error::header_limit, true, "X: aaaaaaaaaaaaaaaaaaaaaaaaaaa",
         http::status::request_header_fields_too_large},
        {http::error::body_limit, true, "", http::status::payload_too_large},
        {http::error::bad_version, false, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", http::status::http_version_not_supported},
        {http::error::bad_version, false, "GET / HTTP/1.x\r\n", http::status::bad_request},
        {http::error::bad_version, false, "GET / HTTP/2.0\n", http::status::bad_request}, // a bare LF: malformed
        {http::error::bad_method, false, "", http::status::bad_request},
        {http::error::bad_chunk, true, "", http::status::bad_request},
    };
    for (const auto& r : table) {
        INFO(r.ec.message() << " with '" << r.buffered << "'");
        CHECK(h1::status_for_parse_error(r.ec, r.line_parsed, r.buffered, 20) == r.status);
    }
}

TEST_CASE("h1 reader: what a failed read of the transport is answered with, as a pure function", "[h1_reader]")
{
    namespace asio = boost::asio;
    CHECK(h1::on_read_failure(asio::error::operation_aborted, true).answer == http::status::request_timeout);
    CHECK(h1::on_read_failure(http::error::buffer_overflow, false).answer == http::status::bad_request);
    for (beast::error_code ec : {beast::error_code(asio::error::eof), beast::error_code(asio::error::connection_reset),
                                 beast::error_code(asio::error::operation_aborted)}) {
        INFO(ec.message());
        const auto f = h1::on_read_failure(ec, false);
        CHECK_FALSE(f.answer);
        CHECK_FALSE(f.worth_logging); // the client left, or a stop: not an error
    }
    const auto f = h1::on_read_failure(asio::error::no_buffer_space, false);
    CHECK_FALSE(f.answer);
    CHECK(f.worth_logging);
}

TEST_CASE("h1 reader: valid and invalid Host values (RFC 9110 7.2, RFC 3986 3.2.2)", "[h1_reader]")
{
    for (std::string_view ok : {"", "example.com", "example.com:80", "127.0.0.1", "[::1]", "[::1]:8080",
                                "xn--bcher-kva.example", "a-b_c~d", "%41bc"})
        CHECK(h1::valid_host(ok));
    for (std::string_view bad : {"exa mple.com", "example.com/path", "user@example.com", "example.com:x", "[::1",
                                 "[::1]x", "a\"b", "%4", "%zz"})
        CHECK_FALSE(h1::valid_host(bad));
}

TEST_CASE("h1 reader: a chunked body cut anywhere, in pieces of any size, reads as in one piece", "[h1_reader]")
{
    // Beast 1.81 asserts when a last chunk is parsed again with fewer than five bytes ("0\r\n"
    // alone, then one byte more): the fuzzer found it.
    const std::string head = "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (std::string body : {"0\r\n\r\n", "0\r\nX-T: 1\r\n\r\n", "1\r\nx\r\n0\r\n\r\n", "0\r\nbad\r\n00\r\n\r\n",
                             "0\r\n\r", "2;e=1\r\nab\r\n0;f\r\nY: 2\r\n\r\n"}) {
        const auto whole = read(head + body);
        for (std::size_t piece = 1; piece <= 8; ++piece) {
            INFO("body '" << body << "' in pieces of " << piece);
            const auto cut = read(head + body, piece);
            CHECK(cut.state == whole.state);
            CHECK(cut.status == whole.status);
            if (whole.request && cut.request)
                CHECK(cut.request->body() == whole.request->body());
        }
    }
}

TEST_CASE("h1 reader: the header limit holds for the request line and fields together, however the bytes arrive",
          "[h1_reader]")
{
    // Beast 1.81 measures its limit from where each parse starts and consumes the lines it has
    // parsed, so a header cut in two could pass a limit it failed whole; the fuzzer found it.
    const h1::read_limits limits{.header_bytes = 256, .body_bytes = 4096};
    const std::string line = "GET /" + std::string(100, 'a') + " HTTP/1.1\r\n";
    const auto header = [&](std::size_t size) {
        std::string h = line + "Host: t\r\nX: ";
        h += std::string(size - h.size() - 4, 'x') + "\r\n\r\n";
        return h;
    };
    for (std::size_t piece : {0, 1, 7, 120, 130, 200, 255, 256, 257}) {
        INFO("in pieces of " << piece);
        CHECK(read(header(256), piece, limits).state == h1::read_state::message_ready);
        const auto over = read(header(257), piece, limits);
        CHECK(over.state == h1::read_state::refused);
        CHECK(over.status == http::status::request_header_fields_too_large);
        const auto far_over = read(header(400), piece, limits);
        CHECK(far_over.status == http::status::request_header_fields_too_large);
        const auto long_line = read("GET /" + std::string(300, 'a') + " HTTP/1.1\r\nHost: t\r\n\r\n", piece, limits);
        CHECK(long_line.status == http::status::uri_too_long);
    }
}
