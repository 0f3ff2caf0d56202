// Bad input and limits over loopback: one test per bad input and per limit. Each test also keeps a
// well-behaved keep-alive client (the bystander) connected from before the bad input until after
// it, and checks that it is served normally before, during and after the bad client's exchange.

#include "test_server.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <latch>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace plinth_test;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

// -- the application --

/// The routes every test serves, and what they let a test observe.
struct app {
    std::atomic<int> counted{0}; // GET /count: a smuggled request must never reach it

    std::mutex mutex;
    std::condition_variable cv;
    std::vector<plinth::async_response> parked; // GET /suspend leaves its handles here

    std::vector<plinth::route> routes()
    {
        return {
            {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello"); }},
            {http::verb::get, "/count",
             [this](const plinth::request&) {
                 ++counted;
                 return plinth::text("counted");
             }},
            {http::verb::post, "/echo", [](const plinth::request& r) { return plinth::text(r.body()); }},
            {http::verb::get, "/big", [](const plinth::request&) { return plinth::text(std::string(32 << 20, 'x')); }},
            {http::verb::get, "/suspend",
             [this](const plinth::request&, plinth::async_response ar) {
                 std::lock_guard lock(mutex);
                 parked.push_back(std::move(ar));
                 cv.notify_all();
             }},
        };
    }

    /// The first request parked by GET /suspend, once it is.
    plinth::async_response first_parked()
    {
        std::unique_lock lock(mutex);
        REQUIRE(cv.wait_for(lock, 10s, [&] { return !parked.empty(); }));
        return parked.front();
    }
};

// -- beyond the test client --

/// True when `c`'s socket has something to read (bytes, EOF or an error) within `limit`; reads
/// nothing.
bool readable_within(client& c, milliseconds limit)
{
    pollfd p{c.native_handle(), POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(limit.count())) > 0;
}

/// Writes `bytes`; false when the server had already closed (its answer may still be readable).
bool try_write(client& c, std::string_view bytes)
{
    try {
        c.write_raw(bytes);
        return true;
    }
    catch (const boost::system::system_error&) {
        return false;
    }
}

/// The time since `t0`.
milliseconds since(steady_clock::time_point t0)
{
    return std::chrono::duration_cast<milliseconds>(steady_clock::now() - t0);
}

/// True when `done()` holds within `limit` (a non-fatal wait_until, for CHECKs).
template <class F>
bool becomes(F done, milliseconds limit = 5s)
{
    const auto deadline = steady_clock::now() + limit;
    while (!done()) {
        if (steady_clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

// -- the well-behaved client --

/// GET /hello on `c`, which must answer 200 "Hello" and keep the connection; its latency.
std::chrono::duration<double, std::milli> get_hello(client& c, const std::string& who)
{
    INFO(who);
    const auto start = steady_clock::now();
    auto res = c.get("/hello");
    const std::chrono::duration<double, std::milli> took = steady_clock::now() - start;
    CHECK(res.result() == http::status::ok);
    CHECK(res.body() == "Hello");
    CHECK(res.keep_alive());
    return took;
}

/// A keep-alive client connected before the bad input is sent, served at once.
class bystander {
public:
    explicit bystander(std::uint16_t port)
        : c_(port)
    {
        served("before the bad client");
    }

    /// One GET /hello, answered normally; `when` names the moment, for failures.
    std::chrono::duration<double, std::milli> served(const std::string& when)
    {
        return get_hello(c_, "bystander, " + when);
    }

private:
    client c_;
};

// -- rejected requests --

/// A rejection: the status, `Connection: close`, and a short reason phrase for body that never
/// carries the parser's (or any exception's) message.
void check_rejection(const response& res, http::status expected)
{
    INFO("response:\n" << res);
    CHECK(res.result() == expected);
    CHECK(res[http::field::connection] == "close");
    CHECK_FALSE(res.keep_alive());
    CHECK_FALSE(res.body().empty());
    CHECK(res.body().size() <= 64);
    std::string leaked; // a Beast parse error's message, or an exception's
    for (int e = 1; e <= 40; ++e) {
        const auto what = http::make_error_code(static_cast<http::error>(e)).message();
        if (res.body().find(what) != std::string::npos)
            leaked = what;
    }
    if (res.body().find("exception") != std::string::npos)
        leaked = "exception";
    CHECK(leaked == "");
}

/// `c`'s next response is the rejection `expected`, and then the server closes the connection.
void check_rejected_and_closed(client& c, http::status expected)
{
    check_rejection(c.read(), expected);
    CHECK(c.closed_by_server());
}

/// Sends `bytes` on a new connection (the first half, then, once the bystander was served, the
/// rest): the answer must be the rejection `expected`, then the close, counted as rejected; no
/// handler ran (GET /count stayed untouched); the bystander is served before, during, after.
void check_rejected(std::string_view bytes, http::status expected, plinth::server_options options = {})
{
    app a;
    test_server srv{a.routes(), options};
    bystander b{srv.port()};
    client bad{srv.port()};
    wait_until([&] { return srv.server().stats().connections == 2; });
    const auto rejected = srv.server().stats().rejected;

    const auto half = bytes.size() / 2;
    REQUIRE(try_write(bad, bytes.substr(0, half)));
    b.served("while the bad request is half sent");
    try_write(bad, bytes.substr(half)); // the server may have rejected the first half already

    check_rejected_and_closed(bad, expected);
    CHECK(becomes([&] { return srv.server().stats().rejected == rejected + 1; }));
    CHECK(a.counted == 0);
    b.served("after the bad client was closed");
}

std::string smuggled()
{
    return "GET /count HTTP/1.1\r\nHost: x\r\n\r\n";
}

std::string hex(std::size_t n)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%zx", n);
    return buf;
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

} // namespace

// -- malformed request lines --

TEST_CASE("hardening: a request line with a method alone gets 400 and the connection closes", "[hardening]")
{
    check_rejected("GET\r\n\r\n", http::status::bad_request);
}

TEST_CASE("hardening: a request line with a fourth field gets 400 and the connection closes", "[hardening]")
{
    check_rejected("GET /hello HTTP/1.1 extra\r\n\r\n", http::status::bad_request);
}

TEST_CASE("hardening: binary garbage for a request line gets 400 and the connection closes", "[hardening]")
{
    check_rejected("\x01\x02garbage\r\n\r\n", http::status::bad_request);
}

TEST_CASE("hardening: a control byte in the target gets 400 and the connection closes", "[hardening]")
{
    check_rejected("GET /hel\x01lo HTTP/1.1\r\nHost: x\r\n\r\n", http::status::bad_request);
}

// -- malformed headers --

TEST_CASE("hardening: a header line without a colon gets 400 and the connection closes", "[hardening]")
{
    check_rejected("GET /hello HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", http::status::bad_request);
}

TEST_CASE("hardening: a NUL byte in a header value gets 400 and the connection closes", "[hardening]")
{
    using namespace std::string_literals;
    check_rejected("GET /hello HTTP/1.1\r\nHost: x\r\nX-Value: a\0b\r\n\r\n"s, http::status::bad_request);
}

TEST_CASE("hardening: a control byte in a header value gets 400 and the connection closes", "[hardening]")
{
    check_rejected("GET /hello HTTP/1.1\r\nHost: x\r\nX-Value: a\x01z\r\n\r\n", http::status::bad_request);
}

// -- Content-Length --

TEST_CASE("hardening: a non-numeric Content-Length gets 400 and the connection closes", "[hardening]")
{
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nabc", http::status::bad_request);
}

TEST_CASE("hardening: a negative Content-Length gets 400 and the connection closes", "[hardening]")
{
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nx", http::status::bad_request);
}

TEST_CASE("hardening: a Content-Length in exponent notation gets 400 and the connection closes", "[hardening]")
{
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\nx", http::status::bad_request);
}

TEST_CASE("hardening: two different Content-Length headers get 400 and the connection closes", "[hardening]")
{
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                   http::status::bad_request);
}

// -- request smuggling: Content-Length with Transfer-Encoding --

TEST_CASE("hardening: Content-Length then Transfer-Encoding: chunked gets 400 and the smuggled request never runs",
          "[hardening]")
{
    // A server that went by the chunked framing would end the body at "0" and run GET /count next.
    const std::string body = "0\r\n\r\n" + smuggled();
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size())
                       + "\r\nTransfer-Encoding: chunked\r\n\r\n" + body,
                   http::status::bad_request);
}

TEST_CASE("hardening: Transfer-Encoding: chunked then Content-Length gets 400 and the smuggled request never runs",
          "[hardening]")
{
    // A server that went by Content-Length would take "NN\r\n" for the body and run GET /count next.
    const std::string chunk = hex(smuggled().size());
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: "
                       + std::to_string(chunk.size() + 2) + "\r\n\r\n" + chunk + "\r\n" + smuggled() + "\r\n0\r\n\r\n",
                   http::status::bad_request);
}

TEST_CASE("hardening: Transfer-Encoding: gzip with Content-Length gets 400 and the smuggled request never runs",
          "[hardening]")
{
    // A server that ignored the coding and went by Content-Length would run GET /count next.
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"
                       + smuggled(),
                   http::status::bad_request);
}

// -- chunked framing --

TEST_CASE("hardening: a chunk size that is not hex gets 400 and the connection closes", "[hardening]")
{
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                   http::status::bad_request);
}

TEST_CASE("hardening: a chunk size that overflows gets 400 and the connection closes", "[hardening]")
{
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
                   http::status::bad_request);
}

TEST_CASE("hardening: chunk data without its CRLF gets 400 and the connection closes", "[hardening]")
{
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n",
                   http::status::bad_request);
}

TEST_CASE("hardening: a chunk extension longer than the connection's buffer gets 400 without waiting for the body "
          "timeout",
          "[hardening]")
{
    // No parser limit covers chunk extensions: the bounded read buffer does.
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;ext="
                       + std::string(200'000, 'a'),
                   http::status::bad_request);
}

TEST_CASE("hardening: trailer fields of a chunked body do not become request headers", "[hardening]")
{
    std::vector<plinth::route> routes{{http::verb::post, "/who", [](const plinth::request& r) {
                                           return plinth::text(std::string(r["X-User"]) + "|");
                                       }}};
    test_server srv{std::move(routes)};
    client c{srv.port()};
    c.write_raw("POST /who HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n0\r\nX-User: admin\r\n\r\n");
    auto res = c.read();
    CHECK(res.result() == http::status::ok);
    CHECK(res.body() == "|");
}

TEST_CASE("hardening: empty lines before a request are ignored", "[hardening]")
{
    app a;
    test_server srv{a.routes()};
    client c{srv.port()};
    c.write_raw("\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n"
                "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(c.read().body() == "hi");
    CHECK(c.read().body() == "Hello");
}

// -- unsupported codings and versions --

TEST_CASE("hardening: Transfer-Encoding gzip then chunked gets 501 and the connection closes", "[hardening]")
{
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                   http::status::not_implemented);
}

TEST_CASE("hardening: Transfer-Encoding: identity, where chunked is not the final coding, gets 400 and the "
          "connection closes",
          "[hardening]")
{
    // RFC 9112 6.3: MUST 400 when chunked is not the final coding (gzip before chunked: 501).
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nhello",
                   http::status::bad_request);
}

TEST_CASE("hardening: a transfer coding with parameters or junk after chunked gets 501", "[hardening]")
{
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;x=1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                   http::status::not_implemented);
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked x\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                   http::status::not_implemented);
}

TEST_CASE("hardening: an HTTP/1.1 request without Host or with two gets 400", "[hardening]")
{
    check_rejected("GET /hello HTTP/1.1\r\n\r\n", http::status::bad_request);
    check_rejected("GET /hello HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", http::status::bad_request);
}

TEST_CASE("hardening: a request line ended by a bare LF gets 400 even with an unknown version", "[hardening]")
{
    check_rejected("GET /hello HTTP/2.0\nHost: x\r\n\r\n", http::status::bad_request);
}

TEST_CASE("hardening: HTTP/2.0 in a request line gets 505 and the connection closes", "[hardening]")
{
    check_rejected("GET /hello HTTP/2.0\r\nHost: x\r\n\r\n", http::status::http_version_not_supported);
}

TEST_CASE("hardening: HTTP/3.0 in a request line gets 505 and the connection closes", "[hardening]")
{
    check_rejected("GET /hello HTTP/3.0\r\nHost: x\r\n\r\n", http::status::http_version_not_supported);
}

TEST_CASE("hardening: HTTP/0.9 in a request line gets 505 and the connection closes", "[hardening]")
{
    check_rejected("GET /hello HTTP/0.9\r\n\r\n", http::status::http_version_not_supported);
}

TEST_CASE("hardening: the HTTP/2 connection preface is refused and the connection closes", "[hardening]")
{
    app a;
    test_server srv{a.routes()};
    bystander b{srv.port()};
    client h2{srv.port()};
    wait_until([&] { return srv.server().stats().connections == 2; });
    b.served("with the HTTP/2 client connected");
    h2.write_raw("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

    // Either 505 then the close, or the close with nothing written.
    REQUIRE(readable_within(h2, 5s));
    char first;
    if (::recv(h2.native_handle(), &first, 1, MSG_PEEK) > 0)
        check_rejection(h2.read(), http::status::http_version_not_supported);
    CHECK(h2.closed_by_server());
    b.served("after the HTTP/2 client was closed");
}

// -- size limits --

TEST_CASE("hardening: a target longer than max_header_bytes gets 414 and the connection closes", "[hardening]")
{
    check_rejected("GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n", http::status::uri_too_long);
}

TEST_CASE("hardening: headers over max_header_bytes get 431 and the connection closes", "[hardening]")
{
    std::string req = "GET /hello HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 100; ++i) {
        std::string line = "X-Filler-" + std::to_string(100 + i) + ": ";
        line += std::string(98 - line.size(), 'f') + "\r\n"; // 100 bytes a line
        req += line;
    }
    check_rejected(req + "\r\n", http::status::request_header_fields_too_large);
}

TEST_CASE("hardening: headers over max_header_bytes sent after the request line get 431 and not 414", "[hardening]")
{
    app a;
    test_server srv{a.routes()};
    client c{srv.port()};
    c.write_raw("GET /hello HTTP/1.1\r\n");
    wait_until([&] { return srv.server().stats().connections == 1; });
    c.write_raw("Host: x\r\nX-Big: " + std::string(9000, 'b') + "\r\n\r\n");
    check_rejected_and_closed(c, http::status::request_header_fields_too_large);
}

TEST_CASE("hardening: a Content-Length over max_body_bytes gets 413 before any body is sent", "[hardening]")
{
    // No body follows: the 413 must come from the announced length alone.
    check_rejected("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",
                   http::status::payload_too_large);
}

TEST_CASE("hardening: a chunked body that grows over max_body_bytes gets 413 and the connection closes", "[hardening]")
{
    std::string req = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 8; ++i) // 2 KiB in 256-byte chunks
        req += "100\r\n" + std::string(256, static_cast<char>('a' + i)) + "\r\n";
    check_rejected(req + "0\r\n\r\n", http::status::payload_too_large, {.max_body_bytes = 1024});
}

// -- Expect: 100-continue --

TEST_CASE("hardening: Expect: 100-continue gets 100 Continue before the body is sent and then the response",
          "[hardening]")
{
    app a;
    test_server srv{a.routes()};
    bystander b{srv.port()};
    client c{srv.port()};
    c.write_raw("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    const std::string interim = "HTTP/1.1 100 Continue\r\n\r\n";
    CHECK(c.read_raw(interim.size()) == interim);
    b.served("while the client waits to send its body");

    c.write_raw("hello");
    auto res = c.read();
    CHECK(res.result() == http::status::ok);
    CHECK(res.body() == "hello");
    CHECK(res.keep_alive());
    b.served("after the exchange");
}

TEST_CASE("hardening: Expect: 100-continue with a Content-Length over the limit gets 413 and no 100 Continue",
          "[hardening]")
{
    app a;
    test_server srv{a.routes()};
    bystander b{srv.port()};
    client c{srv.port()};
    c.write_raw("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n");
    b.served("while the client waits for 100 Continue");

    // A 100 Continue would be read here, as its own response.
    check_rejected_and_closed(c, http::status::payload_too_large);
    b.served("after the client was closed");
}

// -- timeouts --

TEST_CASE("hardening: a client that drips its headers still gets 408 at header_timeout", "[hardening]")
{
    app a;
    test_server srv{a.routes(), {.header_timeout = 300ms}};
    bystander b{srv.port()};
    client slow{srv.port()};

    const auto start = steady_clock::now();
    slow.write_raw("GET /hello HTTP/1.1\r\nHost: x\r\n");
    const std::string drip = "X-Drip: " + std::string(200, 'd');
    bool answered = false;
    int sent = 0;
    // One byte every 50 ms (the poll is the pacing) for up to 3 s, until the server answers or
    // closes. A server that restarted its deadline at every byte would never answer.
    while (steady_clock::now() - start < 3s) {
        if (readable_within(slow, 50ms)) {
            answered = true;
            break;
        }
        if (!try_write(slow, drip.substr(static_cast<std::size_t>(sent) % drip.size(), 1)))
            break;
        if (++sent == 3)
            b.served("while the slow client drips");
    }
    const auto took = since(start);
    INFO("dripped " << sent << " bytes; the server answered after " << took.count() << " ms");
    CHECK(answered);
    CHECK(took < 2s);

    check_rejected_and_closed(slow, http::status::request_timeout);
    CHECK(becomes([&] { return srv.server().stats().timeouts == 1; }));
    b.served("after the slow client was closed");
}

TEST_CASE("hardening: a connection that sends nothing is closed at header_timeout without a response", "[hardening]")
{
    app a;
    test_server srv{a.routes(), {.header_timeout = 300ms}};
    bystander b{srv.port()};

    const auto start = steady_clock::now();
    client silent{srv.port()};
    wait_until([&] { return srv.server().stats().connections == 2; });
    b.served("with the silent client connected");

    CHECK(silent.closed_by_server()); // EOF or reset, and not one byte before it
    const auto took = since(start);
    INFO("closed after " << took.count() << " ms");
    CHECK(took < 2s);
    CHECK(becomes([&] { return srv.server().stats().timeouts == 1; }));
    b.served("after the silent client was closed");
}

// The connections' deadlines share one timer (server_core::sweep): each must still be held to
// its own, never to an earlier one's, and the timer must wake again for the later one.
TEST_CASE("hardening: connections opened 200 ms apart are each closed at their own header_timeout, not at the "
          "first one's",
          "[hardening]")
{
    app a;
    test_server srv{a.routes(), {.header_timeout = 400ms}};
    const auto first_opened = steady_clock::now();
    client first{srv.port()};
    CHECK_FALSE(readable_within(first, 200ms)); // the pacing, and nothing is sent meanwhile
    const auto second_opened = steady_clock::now();
    client second{srv.port()};

    CHECK(first.closed_by_server());
    const auto first_took = since(first_opened);
    CHECK(second.closed_by_server());
    const auto second_took = since(second_opened);
    INFO("closed " << first_took.count() << " and " << second_took.count() << " ms after they opened");
    // The server's deadline runs from its accept, after the client's clock started: never less.
    CHECK(first_took >= 400ms);
    CHECK(second_took >= 400ms);
    CHECK(first_took < 2s);
    CHECK(second_took < 2s);
    CHECK(becomes([&] { return srv.server().stats().timeouts == 2; }));
}

TEST_CASE("hardening: a body that stops short gets 408 at body_timeout and the connection closes", "[hardening]")
{
    app a;
    test_server srv{a.routes(), {.body_timeout = 300ms}};
    bystander b{srv.port()};
    client slow{srv.port()};

    const auto start = steady_clock::now();
    slow.write_raw("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
    b.served("while the body is 90 bytes short");

    auto res = slow.read();
    const auto took = since(start);
    INFO("answered after " << took.count() << " ms");
    check_rejection(res, http::status::request_timeout);
    CHECK(took < 3s);
    CHECK(slow.closed_by_server());
    CHECK(becomes([&] { return srv.server().stats().timeouts == 1; }));
    b.served("after the slow client was closed");
}

TEST_CASE("hardening: a kept-alive connection left idle is closed at idle_timeout while a busy one is not",
          "[hardening]")
{
    app a;
    test_server srv{a.routes(), {.idle_timeout = 300ms}};
    bystander b{srv.port()};
    client idle{srv.port()};
    get_hello(idle, "the client about to idle");

    // The bystander asks every ~100 ms, well within the idle timeout, while the other one idles.
    const auto start = steady_clock::now();
    int asked = 0;
    while (!readable_within(idle, 100ms) && steady_clock::now() - start < 5s)
        b.served("request " + std::to_string(++asked) + " while the other connection idles");
    const auto took = since(start);
    INFO("closed after " << took.count() << " ms idle");
    CHECK(idle.closed_by_server()); // nothing written before the close
    CHECK(took < 3s);
    CHECK(becomes([&] { return srv.server().stats().timeouts == 1; }));
    b.served("after the idle connection was closed");
}

TEST_CASE("hardening: a request suspended for longer than idle_timeout is not cut by it", "[hardening]")
{
    app a;
    test_server srv{a.routes(), {.idle_timeout = 300ms}};
    bystander b{srv.port()};
    client c{srv.port()};
    c.write_raw("GET /suspend HTTP/1.1\r\nHost: x\r\n\r\n");
    auto ar = a.first_parked();

    // Suspended for 800 ms; the bystander keeps its own connection busy meanwhile.
    const auto start = steady_clock::now();
    while (steady_clock::now() - start < 800ms) {
        std::this_thread::sleep_for(100ms);
        b.served("while the other request is suspended");
    }
    CHECK(ar.resume(plinth::text("resumed")));

    auto res = c.read();
    CHECK(res.result() == http::status::ok);
    CHECK(res.body() == "resumed");
    CHECK(res.keep_alive());
    get_hello(c, "the resumed connection, once more");
    CHECK(srv.server().stats().timeouts == 0);
    b.served("after the suspended request");
}

TEST_CASE("hardening: a client that stops reading a large response is dropped at write_timeout", "[hardening]")
{
    app a;
    test_server srv{a.routes(), {.write_timeout = 300ms}};
    bystander b{srv.port()};
    client stuck{srv.port()};
    const int small = 4096; // set after the connect: it still keeps the window small
    ::setsockopt(stuck.native_handle(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);

    stuck.write_raw("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); // 32 MiB it never reads
    b.served("while the server writes to a client that does not read");
    wait_until([&] {
        auto s = srv.server().stats();
        return s.timeouts >= 1 && s.connections == 1; // the bystander's alone
    });
    b.served("after the stuck client was dropped");
}

// -- connection limit --

TEST_CASE("hardening: beyond max_connections a connection gets 503 and closes while the accepted ones are served",
          "[hardening]")
{
    app a;
    test_server srv{a.routes(), {.max_connections = 4}};
    bystander b{srv.port()}; // the first of the four
    std::vector<std::unique_ptr<client>> others;
    for (int i = 0; i < 3; ++i) {
        others.push_back(std::make_unique<client>(srv.port()));
        get_hello(*others.back(), "accepted client " + std::to_string(i + 2));
    }
    wait_until([&] { return srv.server().stats().connections == 4; });

    client fifth{srv.port()};
    try_write(fifth, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"); // the server may answer before reading it
    check_rejected_and_closed(fifth, http::status::service_unavailable);
    CHECK(becomes([&] { return srv.server().stats().refused == 1; }));

    b.served("after the fifth was refused");
    for (std::size_t i = 0; i < others.size(); ++i)
        get_hello(*others[i], "accepted client " + std::to_string(i + 2) + ", after the fifth was refused");

    others.back()->close();
    others.pop_back();
    wait_until([&] { return srv.server().stats().connections == 3; });
    client fresh{srv.port()};
    get_hello(fresh, "a new client once one of the four left");
    CHECK(srv.server().stats().refused == 1);
    b.served("at the end");
}

// -- garbage flood --

TEST_CASE("hardening: 200 connections sending garbage do not stop a well-behaved client from being served",
          "[hardening]")
{
    app a;
    test_server srv{a.routes(), {.log = nullptr}}; // thousands of rejections
    const auto port = srv.port();
    bystander b{port};
    constexpr int requests = 200;
    constexpr int flooders = 200;

    auto gets = [&](const char* when) {
        std::vector<double> ms;
        for (int i = 0; i < requests; ++i)
            ms.push_back(b.served(when).count());
        return ms;
    };
    const auto quiet = gets("request without the flood");

    // The flood: 200 non-blocking connections, each sent random bytes in turn, reconnected when closed.
    std::atomic<bool> stop{false};
    std::atomic<long> sent{0}, reconnects{0};
    std::latch connected{1};
    std::thread flood([&] {
        asio::io_context ioc;
        std::mt19937 rng{42};
        auto open = [&] {
            auto s = std::make_unique<tcp::socket>(ioc);
            beast::error_code ec;
            s->connect({asio::ip::make_address("127.0.0.1"), port}, ec);
            if (!ec)
                s->non_blocking(true, ec);
            return s;
        };
        std::vector<std::unique_ptr<tcp::socket>> sockets;
        for (int i = 0; i < flooders; ++i)
            sockets.push_back(open());
        connected.count_down();
        const auto start = steady_clock::now();
        std::string garbage;
        while (!stop || steady_clock::now() - start < 1500ms) {
            if (steady_clock::now() - start > 10s)
                break;
            for (auto& s : sockets) {
                garbage.resize(1 + rng() % 512);
                for (auto& ch : garbage)
                    ch = static_cast<char>(rng());
                beast::error_code ec;
                s->write_some(asio::buffer(garbage), ec);
                if (!ec)
                    ++sent;
                else if (ec != asio::error::would_block) {
                    s = open();
                    ++reconnects;
                }
            }
        }
    });
    connected.wait();
    const auto flood_start = steady_clock::now();
    std::vector<double> flooded;
    try {
        flooded = gets("request during the flood");
    }
    catch (...) {
        stop = true;
        flood.join();
        throw;
    }
    const auto gets_took = since(flood_start);
    stop = true;
    flood.join();

    CHECK(flooded.size() == static_cast<std::size_t>(requests));
    char report[400];
    std::snprintf(report, sizeof report,
                  "bystander GET /hello x%d: without flood median %.2f ms, max %.2f ms; with %d garbage connections "
                  "median %.2f ms, max %.2f ms (its %d requests took %lld ms; flood sent %ld writes, "
                  "%ld reconnects; server rejected %llu)",
                  requests, median(quiet), *std::max_element(quiet.begin(), quiet.end()), flooders, median(flooded),
                  *std::max_element(flooded.begin(), flooded.end()), requests,
                  static_cast<long long>(gets_took.count()), sent.load(), reconnects.load(),
                  static_cast<unsigned long long>(srv.server().stats().rejected));
    WARN(report);
    b.served("after the flood");
}
