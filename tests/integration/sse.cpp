// Server-sent events over real loopback sockets: the head, the wire format, heartbeats,
// Last-Event-ID and replay, slow clients (close and drop-oldest policies), disconnects, a server
// stop, the application closing the stream, a handler that throws, HTTP/1.0, and a producer
// coroutine that follows the client's pace through async_send.
//
// The client side is a raw socket read bit by bit (wire, below): a head, then chunk by chunk,
// then event by event, every read with a deadline.

#include "stream_wire.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <sys/socket.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
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

// -- server-sent events, parsed --

struct event {
    std::string raw;
    std::string name, id, retry;
    std::vector<std::string> data;
    std::vector<std::string> comments;

    bool is_heartbeat() const { return raw == ": heartbeat\n\n"; }
};

event parse_event(std::string raw)
{
    event e;
    e.raw = std::move(raw);
    std::string_view rest = e.raw;
    while (!rest.empty()) {
        const auto eol = rest.find('\n');
        const auto line = rest.substr(0, eol);
        rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
        if (line.empty())
            continue;
        if (line.front() == ':') {
            e.comments.emplace_back(line.substr(line.size() > 1 && line[1] == ' ' ? 2 : 1));
            continue;
        }
        const auto colon = line.find(':');
        const auto field = line.substr(0, colon);
        auto value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
        if (value.starts_with(' '))
            value.remove_prefix(1);
        if (field == "data")
            e.data.emplace_back(value);
        else if (field == "event")
            e.name = value;
        else if (field == "id")
            e.id = value;
        else if (field == "retry")
            e.retry = value;
    }
    return e;
}

int id_of(const event& e)
{
    int id = -1;
    std::from_chars(e.id.data(), e.id.data() + e.id.size(), id);
    return id;
}

/// An event-stream client: sends the request, reads the head, then reads events.
class sse_client {
public:
    explicit sse_client(std::uint16_t port, std::string target = "/events", std::string extra_headers = {},
                        int rcvbuf = 0)
        : w(port, rcvbuf)
    {
        sent_at = steady::now();
        w.send("GET " + target + " HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n" + extra_headers + "\r\n");
        head = w.head();
        body.emplace(w, head.chunked());
    }

    /// The next block (event or comment); nothing at the end of the body or after `timeout`.
    std::optional<event> next(milliseconds timeout = 10s)
    {
        auto raw = body->next_block(timeout);
        if (!raw)
            return std::nullopt;
        return parse_event(std::move(*raw));
    }

    /// The next event that is not a heartbeat.
    std::optional<event> next_event(milliseconds timeout = 10s)
    {
        const auto deadline = steady::now() + timeout;
        for (;;) {
            auto e =
                next(std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(deadline - steady::now())));
            if (!e || !e->is_heartbeat())
                return e;
        }
    }

    wire w;
    steady::time_point sent_at;
    http::response<http::empty_body> head;
    std::optional<body_reader> body;
};

// -- the server side --

using sse_hub = hub<plinth::sse_stream>;

plinth::route sse_route(sse_hub& h, std::string path = "/events")
{
    return {http::verb::get, std::move(path),
            [&h](const plinth::request&, plinth::sse_stream s) { h.add(s, std::string(s.last_event_id())); }};
}

/// Waits until the stream's queue has not changed for 300 ms (at most 10 s): the size it settled
/// at. With a client that does not read, a non-zero size means the server's write is stuck.
std::size_t settled_queue(const plinth::sse_stream& s)
{
    auto seen = s.queued();
    auto last_change = steady::now();
    const auto give_up = steady::now() + 10s;
    while (steady::now() - last_change < 300ms && steady::now() < give_up) {
        std::this_thread::sleep_for(10ms);
        if (auto now = s.queued(); now != seen) {
            seen = now;
            last_change = steady::now();
        }
    }
    return seen;
}

/// Options under which a client that does not read leaves the server's write stuck: a queue that
/// never overflows.
plinth::server_options without_overflow()
{
    plinth::server_options o;
    o.streams.max_queued_bytes = std::size_t(1) << 30;
    o.streams.max_queued = 1'000'000;
    return o;
}

/// Sends far more than the socket buffers hold (12.8 MB) to a client that does not read, and
/// waits until the server's write is stuck.
void stick_the_write(const plinth::sse_stream& s)
{
    const std::string payload(64 * 1024, 'x');
    for (int i = 1; i <= 200; ++i)
        REQUIRE(s.send(plinth::sse_event{.data = payload, .id = std::to_string(i)}));
    REQUIRE(settled_queue(s) > 0);
}

plinth::server_options with_streams(plinth::stream_options streams)
{
    plinth::server_options o;
    o.streams = streams;
    return o;
}

} // namespace

// -- the head and the wire format --

TEST_CASE("sse: the head (200, text/event-stream, no-cache, chunked, keep-alive) arrives before any event is sent",
          "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h), hello_route()}};
    sse_client c{srv.port()}; // reads the head; nothing has been sent on the stream yet
    auto s = h.wait_open(0);

    CHECK(c.head.version() == 11);
    CHECK(c.head.result() == http::status::ok);
    CHECK(c.head[http::field::content_type] == "text/event-stream");
    CHECK(c.head[http::field::cache_control] == "no-cache");
    CHECK(c.head[http::field::transfer_encoding] == "chunked");
    CHECK(c.head.count(http::field::content_length) == 0);
    CHECK(c.head.keep_alive());
    CHECK(c.w.buffered() == 0); // the head alone
    CHECK(s.is_open());
    CHECK(srv.server().stats().streams == 1);

    CHECK(s.send("first"));
    auto e = c.next();
    REQUIRE(e);
    CHECK(e->raw == "data: first\n\n");
    CHECK(s.close());
    CHECK_FALSE(c.next());
    CHECK(c.body->ended());
}

TEST_CASE("sse: event, id, retry and data fields are written in the event-stream format; multi-line data (LF, CRLF, "
          "CR) is one data line per line; an empty payload still sends 'data: '",
          "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h)}};
    sse_client c{srv.port()};
    auto s = h.wait_open(0);

    CHECK(s.send(plinth::sse_event{.data = "hello", .event = "greet", .id = "7", .retry = 1500ms}));
    CHECK(s.send("a\nb\r\nc\rd"));
    CHECK(s.send(""));
    CHECK(s.send("ends with a newline\n"));
    CHECK(s.send(plinth::sse_event{.data = "x", .id = "8"}));
    CHECK(s.send(plinth::sse_event{.data = "y", .event = "only-name"}));
    CHECK(s.send("caf\xc3\xa9 : colon: inside"));
    CHECK(s.comment("a comment\r\nsplit"));

    const std::vector<std::string> expected = {
        "event: greet\nid: 7\nretry: 1500\ndata: hello\n\n",
        "data: a\ndata: b\ndata: c\ndata: d\n\n",
        "data: \n\n",
        "data: ends with a newline\ndata: \n\n",
        "id: 8\ndata: x\n\n",
        "event: only-name\ndata: y\n\n",
        "data: caf\xc3\xa9 : colon: inside\n\n",
        ": a comment  split\n\n",
    };
    for (const auto& want : expected) {
        auto e = c.next();
        REQUIRE(e);
        CHECK(e->raw == want);
    }

    // What a browser could not read is refused before anything is queued; the stream goes on.
    CHECK_THROWS_AS(s.send(plinth::sse_event{.data = "x", .id = "1\n2"}), std::invalid_argument);
    CHECK_THROWS_AS(s.send(plinth::sse_event{.data = "x", .event = "a\rb"}), std::invalid_argument);
    CHECK_THROWS_AS(s.send(plinth::sse_event{.data = "x",
                                             .id = std::string("1\0"
                                                               "2",
                                                               3)}),
                    std::invalid_argument);
    CHECK(s.is_open());
    CHECK(s.send("after the refused ones"));
    auto e = c.next();
    REQUIRE(e);
    CHECK(e->raw == "data: after the refused ones\n\n");
    CHECK(s.close());
    CHECK_FALSE(c.next());
    CHECK(c.body->ended());
}

TEST_CASE("sse: events sent from a std::thread and from a thread_pool strand arrive complete and in order; "
          "concurrent producers keep each one's order",
          "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h)}, with_streams({.max_queued = 1'000'000})};
    sse_client c{srv.port()};
    auto s = h.wait_open(0);

    // One producer thread: 1..500.
    std::jthread producer([s] {
        for (int i = 1; i <= 500; ++i)
            s.send(plinth::sse_event{.data = "t" + std::to_string(i), .id = std::to_string(i)});
    });
    for (int i = 1; i <= 500; ++i) {
        auto e = c.next_event();
        REQUIRE(e);
        REQUIRE(id_of(*e) == i);
        REQUIRE(e->data == std::vector<std::string>{"t" + std::to_string(i)});
    }
    producer.join();

    // A thread_pool, serialized by a strand: 501..1000, posted one by one.
    asio::thread_pool pool{4};
    auto strand = asio::make_strand(pool);
    for (int i = 501; i <= 1000; ++i)
        asio::post(strand,
                   [s, i] { s.send(plinth::sse_event{.data = "p" + std::to_string(i), .id = std::to_string(i)}); });
    for (int i = 501; i <= 1000; ++i) {
        auto e = c.next_event();
        REQUIRE(e);
        REQUIRE(id_of(*e) == i);
    }

    // Four producers at once on the pool: each one's events in its order, none lost.
    constexpr int per_producer = 250;
    for (int p = 0; p < 4; ++p)
        asio::post(pool, [s, p] {
            for (int k = 0; k < per_producer; ++k)
                s.send(plinth::sse_event{.data = std::to_string(k), .event = "p" + std::to_string(p)});
        });
    std::vector<int> next_of(4, 0);
    for (int n = 0; n < 4 * per_producer; ++n) {
        auto e = c.next_event();
        REQUIRE(e);
        REQUIRE(e->name.size() == 2);
        const int p = e->name[1] - '0';
        REQUIRE(p >= 0);
        REQUIRE(p < 4);
        REQUIRE(e->data == std::vector<std::string>{std::to_string(next_of[p])});
        ++next_of[p];
    }
    CHECK(next_of == std::vector<int>(4, per_producer));
    pool.join();
    CHECK(s.close());
    CHECK_FALSE(c.next());
    CHECK(c.body->ended());
}

// -- heartbeats --

TEST_CASE("sse: an idle stream gets ': heartbeat' comments every heartbeat (100 ms)", "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h)}, with_streams({.heartbeat = 100ms})};
    sse_client c{srv.port()};
    auto s = h.wait_open(0);

    for (int i = 1; i <= 3; ++i) {
        auto e = c.next(5s);
        REQUIRE(e);
        CHECK(e->raw == ": heartbeat\n\n");
    }
    // Three heartbeats cannot come sooner than three periods after the head was written (which
    // was after the request was sent).
    CHECK(ms_between(c.sent_at) >= 300);

    // An event still goes out normally between heartbeats.
    CHECK(s.send("news"));
    auto e = c.next_event();
    REQUIRE(e);
    CHECK(e->raw == "data: news\n\n");
    CHECK(s.is_open());
    CHECK(s.close());
}

TEST_CASE("sse: no heartbeat goes out while events flow more often than the heartbeat", "[sse]")
{
    constexpr auto heartbeat = 100ms;
    sse_hub h;
    test_server srv{{sse_route(h)}, with_streams({.heartbeat = heartbeat})};
    sse_client c{srv.port()};
    auto s = h.wait_open(0);

    // An event every 20 ms; the producer notes when it sent each (before and after send()).
    constexpr int events = 40;
    std::vector<steady::time_point> before(events + 1), after(events + 1);
    std::jthread producer([&] {
        for (int i = 1; i <= events; ++i) {
            before[i] = steady::now();
            s.send(plinth::sse_event{.data = "e", .id = std::to_string(i)});
            after[i] = steady::now();
            std::this_thread::sleep_for(20ms);
        }
    });
    // The blocks, each tagged with the id of the last event seen before it.
    std::vector<int> heartbeat_after; // the event a heartbeat followed
    int last = 0;
    while (last < events) {
        auto e = c.next(5s);
        REQUIRE(e);
        if (e->is_heartbeat()) {
            heartbeat_after.push_back(last);
            continue;
        }
        REQUIRE(id_of(*e) == last + 1);
        last = id_of(*e);
    }
    producer.join();

    // A heartbeat between events i and i+1 is only allowed when the producer itself paused for
    // about a heartbeat (a descheduled thread): the server saw no write for that long.
    for (int i : heartbeat_after) {
        if (i == 0)
            continue; // before the first event: the producer started after the head
        INFO("a heartbeat between events " << i << " and " << i + 1);
        CHECK(ms_between(before[i], after[i + 1]) >= std::chrono::duration_cast<milliseconds>(heartbeat).count() / 2);
    }
    CHECK(s.close());
}

TEST_CASE("sse: heartbeat 0 sends no heartbeat at all, and a silent stream outlives idle_timeout and header_timeout",
          "[sse]")
{
    sse_hub h;
    plinth::server_options o;
    o.streams.heartbeat = 0ms;
    o.idle_timeout = 200ms;
    o.header_timeout = 200ms;
    test_server srv{{sse_route(h)}, o};
    sse_client c{srv.port()};
    auto s = h.wait_open(0);

    CHECK_FALSE(c.next(600ms)); // six periods of a 100 ms heartbeat, three idle timeouts: nothing
    CHECK_FALSE(c.body->ended());
    CHECK(c.body->unparsed().empty());
    CHECK(s.is_open());
    CHECK(s.send("still alive"));
    auto e = c.next();
    REQUIRE(e);
    CHECK(e->raw == "data: still alive\n\n");
    CHECK(srv.server().stats().timeouts == 0);
    CHECK(s.close());
}

TEST_CASE("sse: a stage that opens the stream with its own options overrides the server's (a 100 ms heartbeat "
          "instead of 15 s)",
          "[sse]")
{
    sse_hub h;
    plinth::interceptor opener{.name = "fast-heartbeat", .enter = [&h](plinth::context& ctx) {
                                   h.add(plinth::sse_stream::open(ctx, plinth::stream_options{.heartbeat = 100ms}));
                               }};
    test_server srv{{sse_route(h), {http::verb::get, "/fast", std::vector<plinth::interceptor>{opener}}}};
    sse_client fast{srv.port(), "/fast"};
    auto e = fast.next(5s);
    REQUIRE(e);
    CHECK(e->is_heartbeat());
    CHECK(fast.head[http::field::content_type] == "text/event-stream");
    CHECK(h.wait_open(0).close());
}

// -- Last-Event-ID --

TEST_CASE("sse: the handler sees the request's Last-Event-ID through last_event_id(); empty without one", "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h)}};
    sse_client first{srv.port()};
    sse_client again{srv.port(), "/events", "Last-Event-ID: 42\r\n"};
    auto s0 = h.wait_open(0);
    auto s1 = h.wait_open(1);
    CHECK(h.last_event_id(0).empty());
    CHECK(h.last_event_id(1) == "42");
    CHECK(s0.last_event_id().empty());
    CHECK(s1.last_event_id() == "42"); // still there after the handler returned
    CHECK(plinth::sse_stream().last_event_id().empty());
    CHECK(s0.close());
    CHECK(s1.close());
}

namespace {

/// An application that keeps its events and replays what a reconnecting client missed.
struct replaying_feed {
    std::mutex mutex;
    std::vector<std::pair<int, std::string>> history;
    std::vector<plinth::sse_stream> live;
    sse_hub h;

    plinth::route route()
    {
        return {http::verb::get, "/feed", [this](const plinth::request&, plinth::sse_stream s) {
                    // Replay and join the live set under one lock: nothing is missed or doubled.
                    std::lock_guard lock(mutex);
                    int after = 0;
                    const auto id = s.last_event_id();
                    std::from_chars(id.data(), id.data() + id.size(), after);
                    for (const auto& [n, data] : history)
                        if (n > after)
                            s.send(plinth::sse_event{.data = data, .id = std::to_string(n)});
                    live.push_back(s);
                    h.add(s, std::string(id));
                }};
    }

    void publish(std::string data)
    {
        std::lock_guard lock(mutex);
        const int n = static_cast<int>(history.size()) + 1;
        history.emplace_back(n, data);
        for (const auto& s : live)
            s.send(plinth::sse_event{.data = data, .id = std::to_string(n)});
    }
};

std::vector<int> ids_of_next(sse_client& c, int count)
{
    std::vector<int> ids;
    for (int i = 0; i < count; ++i) {
        auto e = c.next_event();
        REQUIRE(e);
        ids.push_back(id_of(*e));
    }
    return ids;
}

} // namespace

TEST_CASE("sse: a reconnect with Last-Event-ID: 3 is replayed events 4.. only, then gets the live ones", "[sse]")
{
    replaying_feed feed;
    test_server srv{{feed.route()}};
    for (int i = 1; i <= 6; ++i)
        feed.publish("event " + std::to_string(i));

    sse_client first{srv.port(), "/feed"};
    CHECK(ids_of_next(first, 6) == std::vector<int>{1, 2, 3, 4, 5, 6});

    sse_client reconnected{srv.port(), "/feed", "Last-Event-ID: 3\r\n"};
    CHECK(ids_of_next(reconnected, 3) == std::vector<int>{4, 5, 6});
    feed.h.wait_open(1);
    CHECK(feed.h.last_event_id(1) == "3");

    sse_client up_to_date{srv.port(), "/feed", "Last-Event-ID: 6\r\n"};
    feed.h.wait_open(2);

    feed.publish("event 7");
    for (auto* c : {&first, &reconnected, &up_to_date}) {
        auto e = c->next_event();
        REQUIRE(e);
        CHECK(id_of(*e) == 7);
        CHECK(e->data == std::vector<std::string>{"event 7"});
    }
    for (auto& s : feed.h.handles())
        CHECK(s.close());
}

// -- slow clients --

TEST_CASE("sse: a client that never reads, close policy: the queue stays bounded, send() turns false, on_close "
          "(slow_client) fires once, the client is dropped and the server serves others",
          "[sse]")
{
    constexpr std::size_t max_bytes = 256 * 1024;
    constexpr std::size_t event_size = 64 * 1024;
    log_capture log;
    sse_hub h;
    plinth::server_options o;
    o.streams.max_queued_bytes = max_bytes;
    o.log = log.hook();
    test_server srv{{sse_route(h), hello_route()}, o};
    sse_client c{srv.port(), "/events", {}, 4096}; // reads the head, then nothing
    auto s = h.wait_open(0);

    const std::string payload(event_size, 'x');
    const auto one_event = plinth::format_event(plinth::sse_event{.data = payload, .id = "100000"}).size();
    std::size_t most_queued = 0;
    int sent = 0;
    bool refused = false;
    for (int i = 1; i <= 10'000 && !refused; ++i) {
        refused = !s.send(plinth::sse_event{.data = payload, .id = std::to_string(i)});
        most_queued = std::max(most_queued, s.queued_bytes());
        if (!refused)
            ++sent;
    }
    INFO(sent << " events accepted, at most " << most_queued << " bytes queued");
    REQUIRE(refused);
    CHECK(most_queued <= max_bytes + one_event);

    CHECK(h.wait_closed(0) == plinth::close_reason::slow_client);
    CHECK_FALSE(s.is_open());
    CHECK_FALSE(s.send("too late"));
    CHECK(c.w.drain_until_closed()); // what was in the socket buffers, then the close
    wait_until([&] {
        auto st = srv.server().stats();
        return st.connections == 0 && st.streams == 0;
    });
    client other{srv.port()};
    CHECK(other.get("/hello").body() == "Hello");
    CHECK(h.close_count(0) == 1);
    CHECK(log.contains("fell behind"));
}

TEST_CASE("sse: a client that never reads, drop_oldest policy: the stream stays open, dropped() grows, queued() "
          "stays bounded; once it reads it sees increasing ids with gaps, ending with the newest",
          "[sse]")
{
    constexpr std::size_t max_queued = 8;
    constexpr int total = 300; // 64 KiB each: far more than the socket buffers hold
    sse_hub h;
    test_server srv{{sse_route(h)},
                    with_streams({.max_queued_bytes = std::size_t(1) << 30,
                                  .max_queued = max_queued,
                                  .overflow = plinth::stream_overflow::drop_oldest})};
    sse_client c{srv.port(), "/events", {}, 4096};
    auto s = h.wait_open(0);

    const std::string payload(64 * 1024, 'x');
    std::size_t most_queued = 0;
    for (int i = 1; i <= total; ++i) {
        REQUIRE(s.send(plinth::sse_event{.data = payload, .id = std::to_string(i)}));
        most_queued = std::max(most_queued, s.queued());
    }
    CHECK(most_queued <= max_queued);
    CHECK(s.dropped() > 0);
    CHECK(s.is_open());
    CHECK(srv.server().stats().streams == 1);

    // Now the client reads: ids only increase, some are missing, the newest arrives.
    std::vector<int> ids;
    while (ids.empty() || ids.back() != total) {
        auto e = c.next_event();
        REQUIRE(e);
        REQUIRE(e->data == std::vector<std::string>{payload});
        if (!ids.empty())
            REQUIRE(id_of(*e) > ids.back());
        ids.push_back(id_of(*e));
    }
    INFO(ids.size() << " of " << total << " received, " << s.dropped() << " dropped");
    CHECK(ids.size() < static_cast<std::size_t>(total));
    CHECK(ids.size() + s.dropped() == static_cast<std::size_t>(total)); // each was written or dropped
    CHECK(s.is_open());
    CHECK(s.close());
    CHECK_FALSE(c.next());
    CHECK(c.body->ended());
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
}

// -- the client leaves --

TEST_CASE("sse: a client that sends more than may be read ahead behind its stream keeps the stream: later events "
          "arrive, then its end",
          "[sse]")
{
    sse_hub h;
    plinth::server_options o;
    o.max_read_ahead_bytes = 1024;
    test_server srv{{sse_route(h)}, o};
    sse_client c{srv.port()};
    auto s = h.wait_open(0);
    // A pipelined request larger than the read-ahead's limit: the server reads 1 KiB of it and
    // stops reading, so that no read is pending while the stream waits for its producer.
    c.w.send("GET /next HTTP/1.1\r\nHost: test\r\nX-Pad: " + std::string(4000, 'x') + "\r\n\r\n");
    std::this_thread::sleep_for(200ms); // (were the connection let go meanwhile, nothing below arrives)
    CHECK(s.send("still here"));
    const auto e = c.next_event(5s);
    REQUIRE(e);
    CHECK(e->data == std::vector<std::string>{"still here"});
    CHECK(srv.server().stats().streams == 1);
    s.close();
    CHECK_FALSE(c.next(5s)); // the body's end
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);
}

TEST_CASE("sse: a client that closes its socket while the stream is idle: on_close(client_gone) within 1 s, "
          "not at the next heartbeat",
          "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h)}}; // the default heartbeat: 15 s
    sse_client c{srv.port()};
    auto s = h.wait_open(0);
    CHECK(s.send("hello"));
    REQUIRE(c.next_event()); // the stream is established and idle again

    const auto t0 = steady::now();
    c.w.close();
    CHECK(h.wait_closed(0) == plinth::close_reason::client_gone);
    const auto took = ms_between(t0, h.closed_at(0));
    INFO("noticed after " << took << " ms");
    CHECK(took < 1000);
    CHECK_FALSE(s.is_open());
    CHECK_FALSE(s.send("nobody listens"));
    wait_until([&] {
        auto st = srv.server().stats();
        return st.connections == 0 && st.streams == 0;
    });
    CHECK(h.close_count(0) == 1);
}

TEST_CASE("sse: a client that resets its connection (SO_LINGER 0) while the stream is idle: on_close(client_gone) "
          "within 1 s",
          "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h), hello_route()}};
    sse_client c{srv.port()};
    auto s = h.wait_open(0);
    CHECK(s.send("hello"));
    REQUIRE(c.next_event());

    const auto t0 = steady::now();
    c.w.reset();
    CHECK(h.wait_closed(0) == plinth::close_reason::client_gone);
    const auto took = ms_between(t0, h.closed_at(0));
    INFO("noticed after " << took << " ms");
    CHECK(took < 1000);
    wait_until([&] {
        auto st = srv.server().stats();
        return st.connections == 0 && st.streams == 0;
    });
    client other{srv.port()};
    CHECK(other.get("/hello").result() == http::status::ok);
    CHECK(h.close_count(0) == 1);
}

TEST_CASE("sse: a client that stopped reading and then resets, while the server is stuck writing to it: "
          "on_close(client_gone) within 1 s",
          "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h), hello_route()}, without_overflow()};
    sse_client c{srv.port(), "/events", {}, 4096};
    auto s = h.wait_open(0);
    stick_the_write(s);

    const auto t0 = steady::now();
    c.w.reset();
    CHECK(h.wait_closed(0) == plinth::close_reason::client_gone);
    const auto took = ms_between(t0, h.closed_at(0));
    INFO("noticed after " << took << " ms");
    CHECK(took < 1000);
    wait_until([&] {
        auto st = srv.server().stats();
        return st.connections == 0 && st.streams == 0;
    });
    client other{srv.port()};
    CHECK(other.get("/hello").result() == http::status::ok);
}

TEST_CASE("sse: a client that stopped reading and then ends its side (FIN), while the server is stuck writing to "
          "it: on_close(client_gone) within 1 s, not the write timeout",
          "[sse]")
{
    sse_hub h;
    auto o = without_overflow();
    o.write_timeout = std::chrono::seconds(30);
    test_server srv{{sse_route(h)}, o};
    sse_client c{srv.port(), "/events", {}, 4096};
    auto s = h.wait_open(0);
    stick_the_write(s);

    const auto t0 = steady::now();
    c.w.shutdown_send(); // its receive window stays full: only the read-ahead sees it leave
    CHECK(h.wait_closed(0) == plinth::close_reason::client_gone);
    const auto took = ms_between(t0, h.closed_at(0));
    INFO("noticed after " << took << " ms");
    CHECK(took < 1000);
    CHECK(srv.server().stats().timeouts == 0);
}

// -- the server stops --

TEST_CASE("sse: a graceful stop ends an event stream at once: on_close(server_stopping), the body ends with its "
          "last chunk, the connection closes, and the stop completes well before the grace",
          "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h)}};
    sse_client c{srv.port()};
    auto s = h.wait_open(0);
    CHECK(s.send("before the stop"));
    REQUIRE(c.next_event());

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(5000ms, asio::use_future);
    CHECK(h.wait_closed(0) == plinth::close_reason::server_stopping);
    CHECK_FALSE(c.next()); // "0\r\n\r\n": the body's proper end...
    CHECK(c.body->ended());
    CHECK(c.body->trailer().empty());
    CHECK(c.w.closed_by_server()); // ...then the close
    const bool stop_done = stopped.wait_for(10s) == std::future_status::ready;
    INFO("connections: " << srv.server().stats().connections
                         << "; the io_context's threads returned from run(): " << srv.join_within(0s));
    REQUIRE(stop_done);
    const auto took = ms_between(t0);
    INFO("the stop took " << took << " ms");
    CHECK(took < 2000);
    CHECK_FALSE(s.send("after the stop"));
    CHECK(srv.server().stats().streams == 0);
}

TEST_CASE("sse: a graceful stop ends an event stream at once even while the server is stuck writing to a client "
          "that does not read",
          "[sse]")
{
    constexpr auto grace = 3000ms;
    sse_hub h;
    test_server srv{{sse_route(h)}, without_overflow()};
    sse_client c{srv.port(), "/events", {}, 4096};
    auto s = h.wait_open(0);
    stick_the_write(s);

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(grace, asio::use_future);
    CHECK(h.wait_closed(0) == plinth::close_reason::server_stopping);
    const auto ended_after = ms_between(t0, h.closed_at(0));
    INFO("the stream ended " << ended_after << " ms after the stop began (grace: 3000 ms)");
    CHECK(ended_after < 1000);
    REQUIRE(stopped.wait_for(10s) == std::future_status::ready);
    CHECK(ms_between(t0) < 2000);
    CHECK(c.w.drain_until_closed());
}

TEST_CASE("sse: 100 clients at once each get every broadcast event in order; a stop ends all their streams at once",
          "[sse]")
{
    constexpr int clients = 100;
    constexpr int events = 20;
    sse_hub h;
    test_server srv{{sse_route(h)}};
    std::vector<std::unique_ptr<sse_client>> cs;
    for (int i = 0; i < clients; ++i)
        cs.push_back(std::make_unique<sse_client>(srv.port()));
    for (int i = 0; i < clients; ++i)
        h.wait_open(i);
    CHECK(srv.server().stats().streams == clients);

    std::jthread broadcaster([&] {
        const auto all = h.handles();
        for (int n = 1; n <= events; ++n)
            for (const auto& s : all)
                s.send(plinth::sse_event{.data = "news " + std::to_string(n), .id = std::to_string(n)});
    });
    for (auto& c : cs)
        for (int n = 1; n <= events; ++n) {
            auto e = c->next_event();
            REQUIRE(e);
            REQUIRE(id_of(*e) == n);
        }
    broadcaster.join();

    const auto t0 = steady::now();
    auto stopped = srv.server().async_stop(5000ms, asio::use_future);
    REQUIRE(stopped.wait_for(10s) == std::future_status::ready);
    CHECK(ms_between(t0) < 2000);
    for (int i = 0; i < clients; ++i)
        CHECK(h.wait_closed(i) == plinth::close_reason::server_stopping);
    for (auto& c : cs) {
        CHECK_FALSE(c->next());
        CHECK(c->body->ended());
    }
    CHECK(srv.server().stats().streams == 0);
}

// -- the application ends the stream --

TEST_CASE("sse: close() by the application ends the body with its last chunk, on_close(closed) fires once, a send "
          "after it fails, and the kept-alive connection serves the next request",
          "[sse]")
{
    sse_hub h;
    test_server srv{{sse_route(h), hello_route()}};
    sse_client c{srv.port()};
    auto s = h.wait_open(0);
    CHECK(s.send("last words"));
    CHECK(s.close());
    CHECK_FALSE(s.close());
    CHECK_FALSE(s.send("after close"));
    CHECK_FALSE(s.is_open());

    auto e = c.next();
    REQUIRE(e);
    CHECK(e->raw == "data: last words\n\n");
    CHECK_FALSE(c.next());
    REQUIRE(c.body->ended());
    CHECK(c.body->trailer().empty());
    CHECK(h.wait_closed(0) == plinth::close_reason::closed);

    c.w.send("GET /hello HTTP/1.1\r\nHost: test\r\n\r\n"); // the same socket
    auto [head, body] = c.w.response_with_body();
    CHECK(head.result() == http::status::ok);
    CHECK(body == "Hello");
    CHECK(h.close_count(0) == 1);
    CHECK(srv.server().stats().streams == 0);

    // A callback registered once the stream is over runs at once, on this thread, with the reason.
    std::optional<plinth::close_reason> late;
    std::thread::id ran_on;
    s.on_close([&](plinth::close_reason r) {
        late = r;
        ran_on = std::this_thread::get_id();
    });
    CHECK(late == plinth::close_reason::closed);
    CHECK(ran_on == std::this_thread::get_id());
}

TEST_CASE("sse: a handler that throws after opening its stream: the client gets a 500, not a stream; "
          "on_close(failed)",
          "[sse]")
{
    log_capture log;
    sse_hub h;
    plinth::server_options o;
    o.log = log.hook();
    test_server srv{{{http::verb::get, "/throws",
                      [&h](const plinth::request&, plinth::sse_stream s) {
                          h.add(s);
                          s.send("never seen");
                          throw std::runtime_error("the feed is broken");
                      }},
                     hello_route()},
                    o};
    client c{srv.port()};
    auto res = c.get("/throws");
    CHECK(res.result() == http::status::internal_server_error);
    CHECK(res[http::field::content_type] != "text/event-stream");
    CHECK(res.body().find("never seen") == std::string::npos);
    CHECK(h.wait_closed(0) == plinth::close_reason::failed);
    CHECK_FALSE(h.wait_open(0).is_open());
    CHECK_FALSE(h.wait_open(0).send("after the failure"));
    CHECK(log.contains("the feed is broken"));
    CHECK(c.get("/hello").body() == "Hello"); // the connection goes on
    CHECK(srv.server().stats().streams == 0);
    CHECK(h.close_count(0) == 1);
}

// -- HTTP/1.0 --

TEST_CASE("sse: over HTTP/1.0 the events go out without chunks or keep-alive; the close ends the body", "[sse]")
{
    for (const std::string connection : {"", "Connection: keep-alive\r\n"}) {
        INFO("request headers: '" << connection << "'");
        sse_hub h;
        test_server srv{{sse_route(h), hello_route()}};
        wire w{srv.port()};
        w.send("GET /events HTTP/1.0\r\n" + connection + "\r\n");
        auto head = w.head();
        CHECK(head.version() == 10);
        CHECK(head.result() == http::status::ok);
        CHECK(head[http::field::content_type] == "text/event-stream");
        CHECK_FALSE(head.chunked());
        CHECK(head.count(http::field::transfer_encoding) == 0);
        CHECK(head.count(http::field::content_length) == 0);
        CHECK_FALSE(head.keep_alive());

        auto s = h.wait_open(0);
        CHECK(s.send("one"));
        CHECK(s.send(plinth::sse_event{.data = "two", .id = "2"}));
        body_reader body{w, false};
        auto first = body.next_block();
        REQUIRE(first);
        CHECK(*first == "data: one\n\n");
        CHECK(s.close());
        CHECK(body.read_to_end());
        CHECK(body.unparsed() == "id: 2\ndata: two\n\n"); // no chunk framing, nothing after
        CHECK(h.wait_closed(0) == plinth::close_reason::closed);
    }
}

// -- async_send: a producer that follows the client --

TEST_CASE("sse: a coroutine on another io_context awaiting async_send(use_awaitable) stalls while the client does "
          "not read and finishes once it reads; its completions run on its own io_context",
          "[sse]")
{
    constexpr int total = 200;
    sse_hub h;
    test_server srv{{sse_route(h)}};
    sse_client c{srv.port(), "/events", {}, 4096};
    auto s = h.wait_open(0);

    asio::io_context producer_ioc;
    std::atomic<int> completed{0};
    std::atomic<bool> on_producer_thread{true};
    std::string failure;
    std::thread::id producer_thread;
    const std::string payload(64 * 1024, 'x');
    asio::co_spawn(
        producer_ioc,
        [&]() -> asio::awaitable<void> {
            for (int i = 1; i <= total; ++i) {
                // A named event: GCC 12 mishandles an aggregate temporary that lives across a co_await.
                const plinth::sse_event e{.data = payload, .id = std::to_string(i)};
                try {
                    co_await s.async_send(e, asio::use_awaitable);
                }
                catch (const boost::system::system_error& e) {
                    failure = e.what();
                    co_return;
                }
                if (std::this_thread::get_id() != producer_thread)
                    on_producer_thread = false;
                ++completed;
            }
        },
        asio::detached);
    std::jthread runner([&] {
        producer_thread = std::this_thread::get_id();
        producer_ioc.run();
    });

    // Not reading: the producer stalls (its count stops moving), far below the total.
    int stalled_at = -1;
    {
        auto last_change = steady::now();
        int seen = completed;
        const auto give_up = steady::now() + 10s;
        while (steady::now() - last_change < 300ms && steady::now() < give_up) {
            std::this_thread::sleep_for(10ms);
            if (completed != seen) {
                seen = completed;
                last_change = steady::now();
            }
        }
        stalled_at = seen;
    }
    INFO("the producer stalled after " << stalled_at << " of " << total << " events");
    CHECK(stalled_at < total);
    CHECK(stalled_at < total / 2);

    // Reading lets it go on: every event, in order, then the producer finishes.
    for (int i = 1; i <= total; ++i) {
        auto e = c.next_event();
        REQUIRE(e);
        REQUIRE(id_of(*e) == i);
        REQUIRE(e->data.size() == 1);
        REQUIRE(e->data[0].size() == payload.size());
    }
    runner.join();
    CHECK(failure.empty());
    CHECK(completed == total);
    CHECK(on_producer_thread);
    CHECK(s.close());
}
