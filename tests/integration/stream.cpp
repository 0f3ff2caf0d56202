// Chunked streaming (response_stream) over real loopback sockets: chunks from another thread,
// a stage's custom head, trailers, backpressure through async_write, empty writes, write_timeout
// (a client that stops reading, one that reads slowly), per-operation cancellation, a server
// stop's grace, HEAD, keep-alive and pipelining, stats().streams.
//
// The client side is a raw socket read bit by bit (wire, below): a head, then chunk by chunk,
// every read with a deadline; some tests use Beast's parser (client, in test_server.hpp) instead.

#include "stream_wire.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <sys/socket.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace plinth_test;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

namespace {

// -- the server side --

using stream_hub = hub<plinth::response_stream>;

/// A route whose handler takes the stream (the default head: 200).
plinth::route chunks_route(stream_hub& h, std::string path = "/chunks")
{
    return {http::verb::get, std::move(path), [&h](const plinth::request&, plinth::response_stream s) { h.add(s); }};
}

/// A route whose stage opens the stream with a head of its own: 206 and a header.
plinth::route partial_route(stream_hub& h)
{
    plinth::interceptor opener{.name = "partial", .enter = [&h](plinth::context& ctx) {
                                   plinth::response head{http::status::partial_content, 11};
                                   head.set(http::field::content_type, "application/octet-stream");
                                   head.set("X-Stream", "custom");
                                   head.body() = "this body is ignored";
                                   h.add(plinth::response_stream::open(ctx, std::move(head)));
                               }};
    return {http::verb::get, "/partial", std::vector<plinth::interceptor>{opener}};
}

/// The i-th piece of a test body: sizes and bytes vary, so a lost or reordered piece shows.
std::string piece(int i)
{
    return std::string(1 + static_cast<std::size_t>(i * 37) % 5000, static_cast<char>('a' + i % 26));
}

/// Sends a GET on `w` and reads the head, which must be a chunked 200 (or `status`).
http::response<http::empty_body> open_stream(wire& w, std::string_view target = "/chunks")
{
    w.send("GET " + std::string(target) + " HTTP/1.1\r\nHost: test\r\n\r\n");
    auto head = w.head();
    REQUIRE(head.result() == http::status::ok);
    REQUIRE(head.chunked());
    return head;
}

/// Waits until `value()` has not changed for `quiet` (at most 10 s): the value it settled at.
template <class F>
auto settled(F value, milliseconds quiet = 300ms)
{
    auto seen = value();
    auto last_change = steady::now();
    const auto give_up = steady::now() + 10s;
    while (steady::now() - last_change < quiet && steady::now() < give_up) {
        std::this_thread::sleep_for(10ms);
        if (auto now = value(); now != seen) {
            seen = now;
            last_change = steady::now();
        }
    }
    return seen;
}

/// The outcome of `s.async_write(data)`, waited for (at most 10 s). Not through use_future: its
/// rethrown exception_ptr crosses threads inside uninstrumented libstdc++, which ThreadSanitizer
/// reports as a race.
boost::system::error_code write_outcome(const plinth::response_stream& s, std::string data)
{
    auto done = std::make_shared<std::promise<boost::system::error_code>>();
    auto f = done->get_future();
    s.async_write(std::move(data), [done](boost::system::error_code ec) { done->set_value(ec); });
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    return f.get();
}

/// An io_context on a thread of its own, for producers that are not the server's.
struct producer_thread {
    asio::io_context ioc;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{ioc.get_executor()};
    std::thread thread{[this] { ioc.run(); }};

    ~producer_thread() { join(); }

    void join()
    {
        work.reset();
        if (thread.joinable())
            thread.join();
    }
};

} // namespace

// -- the body, the head, the trailers --

TEST_CASE("stream: chunks written from another thread arrive as a valid chunked body equal to their concatenation; "
          "close(trailers) sends the trailers",
          "[stream]")
{
    stream_hub h;
    test_server srv{{chunks_route(h), hello_route()}};
    client c{srv.port()};
    c.write_raw("GET /chunks HTTP/1.1\r\nHost: test\r\n\r\n");
    auto s = h.wait_open(0);

    std::string expected;
    for (int i = 0; i < 100; ++i)
        expected += piece(i);
    std::jthread producer([s] {
        for (int i = 0; i < 100; ++i)
            s.write(piece(i));
        http::fields trailers;
        trailers.set("X-Checksum", "c0ffee");
        s.close(trailers);
    });
    auto res = c.read(); // Beast's parser: a framing error fails here
    producer.join();
    CHECK(res.result() == http::status::ok);
    CHECK(res.chunked());
    CHECK(res.count(http::field::content_length) == 0);
    CHECK(res.body().size() == expected.size());
    CHECK(res.body() == expected);
    CHECK(res["X-Checksum"] == "c0ffee");
    CHECK(res.keep_alive());
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
    CHECK(c.get("/hello").body() == "Hello"); // the same connection
}

TEST_CASE("stream: a stage's head (206, its headers) is respected, its body ignored; trailers come after the last "
          "chunk",
          "[stream]")
{
    stream_hub h;
    test_server srv{{partial_route(h)}};
    wire w{srv.port()};
    w.send("GET /partial HTTP/1.1\r\nHost: test\r\n\r\n");
    auto head = w.head();
    CHECK(head.result() == http::status::partial_content);
    CHECK(head["X-Stream"] == "custom");
    CHECK(head[http::field::content_type] == "application/octet-stream");
    CHECK(head.chunked());
    CHECK(head.count(http::field::content_length) == 0);
    CHECK(head.count(http::field::date) == 1);

    auto s = h.wait_open(0);
    CHECK(s.write("first,"));
    CHECK(s.write("second"));
    http::fields trailers;
    trailers.set("X-Checksum", "abc");
    trailers.set("X-Count", "2");
    CHECK(s.close(trailers));
    body_reader body{w, true};
    CHECK(body.read_to_end());
    CHECK(body.unparsed() == "first,second");
    CHECK(body.trailer() == "X-Checksum: abc\r\nX-Count: 2\r\n");
    CHECK(w.buffered() == 0); // nothing after the trailer's blank line
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
}

TEST_CASE("stream: a handler that writes and closes before returning still sends the head, the body and its end",
          "[stream]")
{
    stream_hub h;
    test_server srv{{{http::verb::get, "/at-once",
                      [&h](const plinth::request&, plinth::response_stream s) {
                          h.add(s);
                          s.write("all ");
                          s.write("at once");
                          s.close();
                      }},
                     hello_route()}};
    client c{srv.port()};
    auto res = c.get("/at-once");
    CHECK(res.result() == http::status::ok);
    CHECK(res.body() == "all at once");
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
    CHECK(c.get("/hello").body() == "Hello");
}

TEST_CASE("stream: close() with a trailer holding CR, LF or ':' in its name throws and leaves the stream open",
          "[stream]")
{
    stream_hub h;
    test_server srv{{chunks_route(h)}};
    wire w{srv.port()};
    open_stream(w);
    auto s = h.wait_open(0);
    http::fields bad;
    bad.set("X-Bad", "a\r\nInjected: yes");
    CHECK_THROWS_AS(s.close(bad), std::invalid_argument);
    CHECK(s.is_open());
    CHECK(s.write("still open"));
    CHECK(s.close());
    body_reader body{w, true};
    CHECK(body.read_to_end());
    CHECK(body.unparsed() == "still open");
    CHECK(body.trailer().empty());
}

// -- backpressure --

TEST_CASE("stream: a producer awaiting async_write of 64 KiB chunks stalls while the client does not read, far below "
          "its 200 writes, then completes them all once it reads; the bytes are right",
          "[stream]")
{
    constexpr int total = 200; // 12.8 MB
    constexpr std::size_t size = 64 * 1024;
    stream_hub h;
    test_server srv{{chunks_route(h)}};
    wire w{srv.port(), 4096};
    open_stream(w);
    auto s = h.wait_open(0);

    producer_thread producer;
    std::atomic<int> completed{0};
    std::atomic<bool> failed{false};
    asio::co_spawn(
        producer.ioc,
        [&]() -> asio::awaitable<void> {
            for (int i = 0; i < total; ++i) {
                // Named: GCC 12 mishandles a temporary with a destructor that lives across a co_await.
                std::string chunk(size, static_cast<char>('a' + i % 26));
                auto [ec] = co_await s.async_write(std::move(chunk), asio::as_tuple(asio::use_awaitable));
                if (ec) {
                    failed = true;
                    co_return;
                }
                ++completed;
            }
            s.close();
        },
        asio::detached);

    std::this_thread::sleep_for(500ms); // the client does not read (the brief's 500 ms)
    const int stalled_at = settled([&] { return completed.load(); });
    INFO("the producer stalled after " << stalled_at << " of " << total << " writes");
    CHECK(stalled_at < total / 2);
    CHECK(s.queued() <= 1); // the producer waits: nothing piles up

    body_reader body{w, true};
    REQUIRE(body.read_to_end(60s));
    producer.join();
    CHECK_FALSE(failed);
    CHECK(completed == total);
    REQUIRE(body.unparsed().size() == total * size);
    bool bytes_right = true;
    for (int i = 0; i < total && bytes_right; ++i)
        bytes_right = body.unparsed().find_first_not_of(static_cast<char>('a' + i % 26), i * size) >= (i + 1) * size;
    CHECK(bytes_right);
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
}

TEST_CASE("stream: an empty write writes nothing and does not end the body; an empty async_write succeeds", "[stream]")
{
    stream_hub h;
    test_server srv{{chunks_route(h)}};
    wire w{srv.port()};
    open_stream(w);
    auto s = h.wait_open(0);
    body_reader body{w, true};

    CHECK(s.write("a"));
    CHECK(s.write(""));
    CHECK(s.write("b"));
    REQUIRE(body.pull(steady::now() + 10s));
    while (body.unparsed().size() < 2)
        REQUIRE(body.pull(steady::now() + 10s));
    CHECK(body.unparsed() == "ab");

    // Alone on an idle stream: nothing goes out (no zero-size chunk, which would end the body).
    CHECK(s.write(""));
    CHECK_FALSE(write_outcome(s, ""));
    CHECK_FALSE(body.pull(steady::now() + 300ms));
    CHECK_FALSE(body.ended());
    CHECK(w.buffered() == 0);

    CHECK(s.write("c"));
    CHECK(s.close());
    CHECK(body.read_to_end());
    CHECK(body.unparsed() == "abc"); // body_reader throws on an empty chunk that is not the last
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
}

TEST_CASE("stream: a single write larger than max_queued_bytes goes out whole", "[stream]")
{
    stream_hub h;
    plinth::server_options o;
    o.streams.max_queued_bytes = 64 * 1024;
    test_server srv{{chunks_route(h)}, o};
    wire w{srv.port()};
    open_stream(w);
    auto s = h.wait_open(0);
    const std::string big(1 << 20, 'B');
    CHECK(s.write(big));
    CHECK(s.close());
    body_reader body{w, true};
    CHECK(body.read_to_end());
    CHECK(body.unparsed() == big);
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
}

// -- write_timeout --

TEST_CASE("stream: write_timeout drops a client that stops reading a stream: on_close(slow_client), timeouts + 1",
          "[stream]")
{
    log_capture log;
    stream_hub h;
    plinth::server_options o;
    o.write_timeout = 300ms;
    o.log = log.hook();
    test_server srv{{chunks_route(h), hello_route()}, o};
    wire w{srv.port(), 4096};
    open_stream(w);
    auto s = h.wait_open(0);

    // A producer that follows the client's pace: the queue never overflows, only the write stalls.
    producer_thread producer;
    std::atomic<int> completed{0};
    std::promise<boost::system::error_code> ended;
    asio::co_spawn(
        producer.ioc,
        [&]() -> asio::awaitable<void> {
            for (;;) {
                std::string chunk(64 * 1024, 'x');
                auto [ec] = co_await s.async_write(std::move(chunk), asio::as_tuple(asio::use_awaitable));
                if (ec) {
                    ended.set_value(ec);
                    co_return;
                }
                ++completed;
            }
        },
        asio::detached);

    CHECK(h.wait_closed(0) == plinth::close_reason::slow_client);
    auto f = ended.get_future();
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    const auto ec = f.get();
    INFO("the producer's last write: " << ec.message() << "; " << completed << " completed before");
    CHECK(ec);
    CHECK(srv.server().stats().timeouts == 1);
    CHECK(log.contains("write timeout"));
    CHECK(w.drain_until_closed());
    wait_until([&] {
        auto st = srv.server().stats();
        return st.connections == 0 && st.streams == 0;
    });
    client other{srv.port()};
    CHECK(other.get("/hello").body() == "Hello");
}

TEST_CASE("stream: a client that reads slowly but steadily (16 KiB every 100 ms) is not dropped by a 300 ms "
          "write_timeout",
          "[stream]")
{
    log_capture log;
    stream_hub h;
    plinth::server_options o;
    o.write_timeout = 300ms;
    o.log = log.hook();
    test_server srv{{chunks_route(h)}, o};
    wire w{srv.port(), 4096};
    open_stream(w);
    auto s = h.wait_open(0);

    producer_thread producer;
    std::atomic<bool> stop{false};
    std::atomic<std::size_t> written{0};
    std::promise<boost::system::error_code> ended;
    asio::co_spawn(
        producer.ioc,
        [&]() -> asio::awaitable<void> {
            while (!stop) {
                std::string chunk(16 * 1024, 'x');
                auto [ec] = co_await s.async_write(std::move(chunk), asio::as_tuple(asio::use_awaitable));
                if (ec) {
                    ended.set_value(ec);
                    co_return;
                }
                written += 16 * 1024;
            }
            s.close();
            ended.set_value({});
        },
        asio::detached);

    // 3 s of steady, slow reading: the server's buffers fill at once, then it can only go at the
    // client's pace.
    std::size_t read = 0;
    const auto start = steady::now();
    while (steady::now() - start < 3s) {
        std::this_thread::sleep_for(100ms);
        if (w.fill(1s, 16 * 1024) == wire::status::data)
            read = w.buffered(); // left in the wire's buffer, parsed at the end
        else
            break;
    }
    INFO("read " << read << " bytes in 3 s; the producer wrote " << written << "; log:\n" << log.dump());
    stop = true;
    CHECK(s.is_open());
    CHECK(srv.server().stats().timeouts == 0);
    body_reader body{w, true};
    CHECK(body.read_to_end(60s));
    auto f = ended.get_future();
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    CHECK_FALSE(f.get());
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
    CHECK(body.unparsed().size() == written);
}

TEST_CASE("stream: a stream that lasts longer than write_timeout is not cut by it while its client reads", "[stream]")
{
    stream_hub h;
    plinth::server_options o;
    o.write_timeout = 300ms;
    test_server srv{{chunks_route(h)}, o};
    wire w{srv.port()};
    open_stream(w);
    auto s = h.wait_open(0);
    std::jthread producer([s] {
        for (int i = 0; i < 20; ++i) { // about a second: three write timeouts
            s.write(piece(i));
            std::this_thread::sleep_for(50ms);
        }
        s.close();
    });
    body_reader body{w, true};
    CHECK(body.read_to_end());
    producer.join();
    std::string expected;
    for (int i = 0; i < 20; ++i)
        expected += piece(i);
    CHECK(body.unparsed() == expected);
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
    CHECK(srv.server().stats().timeouts == 0);
}

// -- per-operation cancellation --

TEST_CASE("stream: an async_write bound to a cancellation slot and cancelled (terminal) while queued behind a stuck "
          "write completes with operation_aborted, and its data never reaches the client",
          "[stream][cancel]")
{
    stream_hub h;
    plinth::server_options o;
    o.streams.max_queued_bytes = std::size_t(1) << 30;
    o.streams.max_queued = 100'000;
    test_server srv{{chunks_route(h)}, o};
    wire w{srv.port(), 4096};
    open_stream(w);
    auto s = h.wait_open(0);

    // The client does not read: far more than the socket buffers hold stays queued.
    constexpr int fillers = 200;
    const std::string filler(64 * 1024, 'f');
    for (int i = 0; i < fillers; ++i)
        REQUIRE(s.write(filler));
    REQUIRE(settled([&] { return s.queued(); }) >= 2); // the socket buffers are full: the writes are stuck

    asio::cancellation_signal signal;
    std::promise<boost::system::error_code> done;
    s.async_write("CANCELLED", asio::bind_cancellation_slot(signal.slot(), [&done](boost::system::error_code ec) {
                      done.set_value(ec);
                  }));
    const auto queued_before = s.queued();
    INFO(queued_before << " writes queued when the cancellation was emitted");
    CHECK(queued_before >= 2); // it waits behind others
    signal.emit(asio::cancellation_type::terminal);
    auto f = done.get_future();
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    CHECK(f.get() == asio::error::operation_aborted);
    CHECK(s.queued() <= queued_before - 1); // it left the queue

    CHECK(s.write("END"));
    CHECK(s.close());
    body_reader body{w, true};
    REQUIRE(body.read_to_end(60s));
    CHECK(body.unparsed().size() == fillers * filler.size() + 3);
    CHECK(body.unparsed().find("CANCELLED") == std::string::npos);
    CHECK(body.unparsed().ends_with("END"));
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
}

// -- the server stops --

TEST_CASE("stream: a graceful stop does not end a chunked stream at its start (it gets the grace) but ends it when "
          "the grace runs out: on_close(server_stopping), last chunk, close",
          "[stream]")
{
    constexpr auto grace = 1500ms;
    stream_hub h;
    test_server srv{{chunks_route(h)}};
    wire w{srv.port()};
    open_stream(w);
    auto s = h.wait_open(0);
    body_reader body{w, true};
    CHECK(s.write("before the stop;"));
    REQUIRE(body.pull(steady::now() + 10s));

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(grace, asio::use_future);
    // The stop reached the connection first (same strand, posted before this write's wake).
    CHECK(s.write("during the grace"));
    while (body.unparsed().size() < std::string_view("before the stop;during the grace").size())
        REQUIRE(body.pull(steady::now() + 10s));
    CHECK(body.unparsed() == "before the stop;during the grace");
    CHECK(s.is_open());

    CHECK(h.wait_closed(0) == plinth::close_reason::server_stopping);
    const auto ended_after = ms_between(t0, h.closed_at(0));
    INFO("ended " << ended_after << " ms after the stop began");
    CHECK(ended_after >= std::chrono::duration_cast<milliseconds>(grace).count());
    CHECK(ended_after < std::chrono::duration_cast<milliseconds>(grace).count() + 3000);
    CHECK(body.read_to_end());
    CHECK(body.unparsed() == "before the stop;during the grace");
    CHECK(w.closed_by_server());
    REQUIRE(stopped.wait_for(10s) == std::future_status::ready);
    CHECK_FALSE(s.write("after the stop"));
}

// -- HEAD, keep-alive, pipelining --

TEST_CASE("stream: HEAD on a stream route sends only the head, and the connection stays usable", "[stream]")
{
    stream_hub h;
    test_server srv{{{http::verb::get, "/eager",
                      [&h](const plinth::request&, plinth::response_stream s) {
                          h.add(s);
                          s.write("must not be sent to a HEAD");
                      }},
                     hello_route()}};
    wire w{srv.port()};
    w.send("HEAD /eager HTTP/1.1\r\nHost: test\r\n\r\n");
    auto head = w.head();
    CHECK(head.result() == http::status::ok);
    CHECK(head.keep_alive());
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
    CHECK_FALSE(h.wait_open(0).write("later"));

    w.send("GET /hello HTTP/1.1\r\nHost: test\r\n\r\n"); // a body would show up here instead
    auto [res, text] = w.response_with_body();
    CHECK(res.result() == http::status::ok);
    CHECK(text == "Hello");
    CHECK(w.buffered() == 0);
    CHECK(srv.server().stats().streams == 0);
}

TEST_CASE("stream: two pipelined requests, a stream the application closes after a few chunks then GET /hello, are "
          "both answered in order on one connection",
          "[stream]")
{
    stream_hub h;
    test_server srv{{chunks_route(h), hello_route()}};
    client c{srv.port()};
    c.write_raw("GET /chunks HTTP/1.1\r\nHost: test\r\n\r\nGET /hello HTTP/1.1\r\nHost: test\r\n\r\n");
    auto s = h.wait_open(0);
    std::jthread producer([s] {
        s.write("one,");
        s.write("two,");
        s.write("three");
        s.close();
    });
    auto first = c.read();
    auto second = c.read();
    producer.join();
    CHECK(first.result() == http::status::ok);
    CHECK(first.chunked());
    CHECK(first.body() == "one,two,three");
    CHECK(second.result() == http::status::ok);
    CHECK(second.body() == "Hello");
    CHECK(srv.server().stats().accepted == 1);
    CHECK(c.get("/hello").body() == "Hello");
}

TEST_CASE("stream: a request with Connection: close gets its stream, then the connection closes after the last chunk",
          "[stream]")
{
    stream_hub h;
    test_server srv{{chunks_route(h)}};
    wire w{srv.port()};
    w.send("GET /chunks HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    auto head = w.head();
    CHECK(head.chunked());
    CHECK_FALSE(head.keep_alive());
    auto s = h.wait_open(0);
    CHECK(s.write("bye"));
    CHECK(s.close());
    body_reader body{w, true};
    CHECK(body.read_to_end());
    CHECK(body.unparsed() == "bye");
    CHECK(w.closed_by_server());
}

// -- the client leaves --

TEST_CASE("stream: after the client left, on_close(client_gone) fires, write() is false and async_write completes "
          "with stream_errc::closed",
          "[stream]")
{
    stream_hub h;
    test_server srv{{chunks_route(h)}};
    wire w{srv.port()};
    open_stream(w);
    auto s = h.wait_open(0);
    w.close();
    CHECK(h.wait_closed(0) == plinth::close_reason::client_gone);
    CHECK_FALSE(s.is_open());
    CHECK_FALSE(s.write("nobody"));
    CHECK(write_outcome(s, "nobody") == plinth::stream_errc::closed);
    CHECK(h.close_count(0) == 1);
}

TEST_CASE("stream: a handle that outlives its server: write() is false, async_write completes with "
          "stream_errc::closed, on_close runs at once with the reason",
          "[stream]")
{
    stream_hub h;
    plinth::response_stream kept;
    std::optional<wire> w; // outlives the server: the client does not leave first
    {
        plinth::server_options o;
        o.shutdown_grace = 200ms;
        test_server srv{{chunks_route(h)}, o};
        w.emplace(srv.port());
        open_stream(*w);
        kept = h.wait_open(0);
    } // the server stops (the stream ends at the grace's end), its io_context is gone
    CHECK(h.wait_closed(0) == plinth::close_reason::server_stopping);
    CHECK_FALSE(kept.is_open());
    CHECK_FALSE(kept.write("late"));
    CHECK(write_outcome(kept, "late") == plinth::stream_errc::closed);
    std::optional<plinth::close_reason> reason;
    kept.on_close([&](plinth::close_reason r) { reason = r; });
    CHECK(reason == plinth::close_reason::server_stopping);
}

// -- counting --

TEST_CASE("stream: stats().streams counts the open streams (chunked and event streams) and returns to 0", "[stream]")
{
    stream_hub h;
    hub<plinth::sse_stream> events;
    test_server srv{
        {chunks_route(h),
         {http::verb::get, "/events", [&events](const plinth::request&, plinth::sse_stream s) { events.add(s); }}}};
    CHECK(srv.server().stats().streams == 0);
    wire a{srv.port()}, b{srv.port()}, e{srv.port()};
    open_stream(a);
    open_stream(b);
    e.send("GET /events HTTP/1.1\r\nHost: test\r\n\r\n");
    e.head();
    auto sa = h.wait_open(0);
    auto sb = h.wait_open(1);
    auto se = events.wait_open(0);
    wait_until([&] { return srv.server().stats().streams == 3; });

    CHECK(sa.close()); // the application ends one
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
    wait_until([&] { return srv.server().stats().streams == 2; });

    b.close(); // a client leaves
    CHECK(h.wait_closed(1) == plinth::close_reason::client_gone);
    wait_until([&] { return srv.server().stats().streams == 1; });

    CHECK(se.close());
    CHECK(events.wait_closed(0) == plinth::close_reason::closed);
    wait_until([&] { return srv.server().stats().streams == 0; });
    wait_until([&] { return srv.server().stats().connections == 2; }); // a and e are kept alive
}
