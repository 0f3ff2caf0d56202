// The example server's chat, as a user runs the binary: POST /chat/send, the long-poll
// GET /chat/poll, the event stream GET /events (ticks, messages, Last-Event-ID replay,
// heartbeats), the page GET /chat, the stream count in /stats, and SIGTERM with a stream and a
// poll open. Each test spawns its own plinth-example, so message ids start at 1.

#include "test_server.hpp"

#include "example_process.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace plinth_test;

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// How long a test waits for something that must happen. Never reached unless a test fails.
constexpr auto patience = 10s;

// ---------------------------------------------------------------------------------------------
// A little JSON: the chat's messages are [{"id":N,"text":"..."}, ...]
// ---------------------------------------------------------------------------------------------

struct chat_message {
    std::uint64_t id = 0;
    std::string text;
    bool operator==(const chat_message&) const = default;
};

std::ostream& operator<<(std::ostream& os, const chat_message& m)
{
    return os << "{" << m.id << ", \"" << m.text << "\"}";
}

class json_reader {
public:
    explicit json_reader(std::string_view s)
        : s_(s)
    {
    }

    std::vector<chat_message> messages()
    {
        std::vector<chat_message> out;
        expect('[');
        if (peek() == ']') {
            ++i_;
        }
        else {
            for (;;) {
                out.push_back(message());
                if (peek() == ',') {
                    ++i_;
                    continue;
                }
                expect(']');
                break;
            }
        }
        done();
        return out;
    }

    chat_message single()
    {
        auto m = message();
        done();
        return m;
    }

    std::uint64_t id_object() // {"id":N}
    {
        expect('{');
        if (string() != "id")
            fail("expected \"id\"");
        expect(':');
        auto id = number();
        expect('}');
        done();
        return id;
    }

private:
    chat_message message()
    {
        chat_message m;
        bool id = false, text = false;
        expect('{');
        for (;;) {
            const auto key = string();
            expect(':');
            if (key == "id") {
                m.id = number();
                id = true;
            }
            else if (key == "text") {
                m.text = string();
                text = true;
            }
            else
                fail("unexpected key " + key);
            if (peek() == ',') {
                ++i_;
                continue;
            }
            expect('}');
            break;
        }
        if (!id || !text)
            fail("a message without id or text");
        return m;
    }

    std::uint64_t number()
    {
        skip_ws();
        std::size_t start = i_;
        while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_])))
            ++i_;
        if (start == i_)
            fail("expected a number");
        return std::stoull(std::string(s_.substr(start, i_ - start)));
    }

    std::string string()
    {
        expect('"');
        std::string out;
        for (;;) {
            if (i_ >= s_.size())
                fail("unterminated string");
            const char c = s_[i_++];
            if (c == '"')
                return out;
            if (static_cast<unsigned char>(c) < 0x20)
                fail("a raw control character in a string");
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i_ >= s_.size())
                fail("unterminated escape");
            const char e = s_[i_++];
            switch (e) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                if (i_ + 4 > s_.size())
                    fail("short \\u escape");
                const unsigned cp = static_cast<unsigned>(std::stoul(std::string(s_.substr(i_, 4)), nullptr, 16));
                i_ += 4;
                if (cp < 0x80)
                    out += static_cast<char>(cp);
                else if (cp < 0x800) {
                    out += static_cast<char>(0xC0 | (cp >> 6));
                    out += static_cast<char>(0x80 | (cp & 0x3F));
                }
                else {
                    out += static_cast<char>(0xE0 | (cp >> 12));
                    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
                    out += static_cast<char>(0x80 | (cp & 0x3F));
                }
                break;
            }
            default: fail(std::string("bad escape \\") + e);
            }
        }
    }

    void skip_ws()
    {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t'))
            ++i_;
    }
    char peek()
    {
        skip_ws();
        return i_ < s_.size() ? s_[i_] : '\0';
    }
    void expect(char c)
    {
        if (peek() != c)
            fail(std::string("expected '") + c + "'");
        ++i_;
    }
    void done()
    {
        if (peek() != '\0')
            fail("trailing characters");
    }
    [[noreturn]] void fail(const std::string& what) const
    {
        throw std::runtime_error("bad JSON at " + std::to_string(i_) + ": " + what + " in " + std::string(s_));
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

std::vector<chat_message> parse_messages(std::string_view json)
{
    return json_reader(json).messages();
}

std::vector<std::uint64_t> ids_of(const std::vector<chat_message>& ms)
{
    std::vector<std::uint64_t> out;
    for (const auto& m : ms)
        out.push_back(m.id);
    return out;
}

std::vector<std::uint64_t> range(std::uint64_t first, std::uint64_t last)
{
    std::vector<std::uint64_t> out;
    for (auto i = first; i <= last; ++i)
        out.push_back(i);
    return out;
}

// POST /chat/send; the new message's id.
std::uint64_t post(client& c, const std::string& text)
{
    auto res = c.request(http::verb::post, "/chat/send", text);
    REQUIRE(res.result() == http::status::created);
    return json_reader(res.body()).id_object();
}

std::string stats(client& c)
{
    return c.get("/stats").body();
}

bool has(const std::string& text, std::string_view part)
{
    return text.find(part) != std::string::npos;
}

long long ms_since(steady::time_point t0)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0).count();
}

// ---------------------------------------------------------------------------------------------
// An event-stream client: reads the head, then decodes the chunked body as it arrives and
// splits it into events (blocks ended by a blank line). Every read gives up after its timeout.
// ---------------------------------------------------------------------------------------------

struct sse_block {
    std::string event;
    std::string id;
    std::string data;
    std::vector<std::string> comments;
    bool has_data = false;
    steady::time_point arrived;
};

class event_client {
public:
    /// Sends `GET target` with `extra_headers` ("Name: value\r\n" lines) and reads the head.
    event_client(std::uint16_t port, const std::string& target, const std::string& extra_headers = {})
        : socket_(ioc_)
    {
        socket_.connect({asio::ip::make_address("127.0.0.1"), port});
        const std::string req = "GET " + target + " HTTP/1.1\r\nHost: test\r\n" + extra_headers + "\r\n";
        asio::write(socket_, asio::buffer(req));
        read_head();
    }

    int status() const { return status_; }

    /// A header of the response (lower-case name), or "<absent>".
    std::string header(const std::string& lower_name) const
    {
        auto it = headers_.find(lower_name);
        return it == headers_.end() ? "<absent>" : it->second;
    }

    /// The next event or comment block, or nothing when none came within `timeout` or the body ended.
    std::optional<sse_block> next(std::chrono::steady_clock::duration timeout = patience)
    {
        const auto deadline = steady::now() + timeout;
        for (;;) {
            decode();
            const auto end = body_.find("\n\n");
            if (end != std::string::npos) {
                auto block = parse(body_.substr(0, end));
                body_.erase(0, end + 2);
                return block;
            }
            if (ended_ || eof_)
                return std::nullopt;
            if (!fill(deadline))
                return std::nullopt;
        }
    }

    /// The next `event: message` block, skipping ticks and comments.
    std::optional<sse_block> next_message(std::chrono::steady_clock::duration timeout = patience)
    {
        const auto deadline = steady::now() + timeout;
        while (auto b = next(deadline - steady::now()))
            if (b->event == "message")
                return b;
        return std::nullopt;
    }

    /// The next `event: tick` block, skipping the rest.
    std::optional<sse_block> next_tick(std::chrono::steady_clock::duration timeout = patience)
    {
        const auto deadline = steady::now() + timeout;
        while (auto b = next(deadline - steady::now()))
            if (b->event == "tick")
                return b;
        return std::nullopt;
    }

    /// Reads until the chunked body's last chunk (true) or EOF / `timeout` (false).
    bool wait_end(std::chrono::steady_clock::duration timeout = patience)
    {
        const auto deadline = steady::now() + timeout;
        for (;;) {
            decode();
            if (ended_)
                return true;
            if (eof_ || !fill(deadline))
                return false;
        }
    }

    bool eof() const { return eof_; }

    void close()
    {
        beast::error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_both, ignored);
        socket_.close(ignored);
    }

private:
    void read_head()
    {
        const auto deadline = steady::now() + patience;
        std::size_t end;
        while ((end = raw_.find("\r\n\r\n")) == std::string::npos) {
            REQUIRE_FALSE(eof_);
            REQUIRE(fill(deadline));
        }
        const std::string head = raw_.substr(0, end + 2);
        raw_.erase(0, end + 4);
        REQUIRE(head.starts_with("HTTP/1.1 "));
        status_ = std::stoi(head.substr(9, 3));
        std::size_t pos = head.find("\r\n") + 2;
        while (pos < head.size()) {
            const auto eol = head.find("\r\n", pos);
            const auto line = head.substr(pos, eol - pos);
            pos = eol + 2;
            const auto colon = line.find(':');
            if (colon == std::string::npos)
                continue;
            std::string name = line.substr(0, colon);
            std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
            std::string value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ')
                value.erase(0, 1);
            headers_[name] = value;
        }
        chunked_ = has(header("transfer-encoding"), "chunked");
    }

    // Moves what arrived from raw_ to body_, undoing the chunked coding.
    void decode()
    {
        if (!chunked_) {
            body_ += raw_;
            raw_.clear();
            return;
        }
        while (!ended_) {
            if (chunk_left_ == 0) {
                if (need_crlf_) {
                    if (raw_.size() < 2)
                        return;
                    REQUIRE(raw_.compare(0, 2, "\r\n") == 0);
                    raw_.erase(0, 2);
                    need_crlf_ = false;
                }
                const auto eol = raw_.find("\r\n");
                if (eol == std::string::npos)
                    return;
                const auto size = std::stoul(raw_.substr(0, eol), nullptr, 16);
                raw_.erase(0, eol + 2);
                if (size == 0) {
                    ended_ = true; // what follows is the trailer
                    return;
                }
                chunk_left_ = size;
            }
            const auto n = std::min(chunk_left_, raw_.size());
            if (n == 0)
                return;
            body_.append(raw_, 0, n);
            raw_.erase(0, n);
            chunk_left_ -= n;
            if (chunk_left_ == 0)
                need_crlf_ = true;
        }
    }

    // Reads what arrives before `deadline`; false when nothing did.
    bool fill(steady::time_point deadline)
    {
        if (eof_)
            return false;
        std::array<char, 16384> buf;
        beast::error_code ec = asio::error::would_block;
        std::size_t got = 0;
        socket_.async_read_some(asio::buffer(buf), [&](beast::error_code e, std::size_t n) {
            ec = e;
            got = n;
        });
        ioc_.restart();
        ioc_.run_until(deadline);
        if (!ioc_.stopped()) {
            socket_.cancel();
            ioc_.restart();
            ioc_.run();
        }
        raw_.append(buf.data(), got);
        if (ec && ec != asio::error::operation_aborted)
            eof_ = true;
        return got > 0;
    }

    static sse_block parse(const std::string& text)
    {
        sse_block b;
        b.arrived = steady::now();
        std::size_t pos = 0;
        while (pos <= text.size()) {
            auto eol = text.find('\n', pos);
            if (eol == std::string::npos)
                eol = text.size();
            const std::string line = text.substr(pos, eol - pos);
            pos = eol + 1;
            if (line.starts_with(":")) {
                b.comments.push_back(line.substr(line.size() > 1 && line[1] == ' ' ? 2 : 1));
                continue;
            }
            const auto colon = line.find(':');
            const std::string field = line.substr(0, colon);
            std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
            if (value.starts_with(" "))
                value.erase(0, 1);
            if (field == "event")
                b.event = value;
            else if (field == "id")
                b.id = value;
            else if (field == "data") {
                if (b.has_data)
                    b.data += '\n';
                b.data += value;
                b.has_data = true;
            }
        }
        return b;
    }

    asio::io_context ioc_;
    tcp::socket socket_;
    std::string raw_;
    std::string body_;
    int status_ = 0;
    std::map<std::string, std::string> headers_;
    bool chunked_ = false;
    std::size_t chunk_left_ = 0;
    bool need_crlf_ = false;
    bool ended_ = false;
    bool eof_ = false;
};

// A message block's data, parsed; also checks that its id: line matches.
chat_message message_of(const sse_block& b)
{
    CHECK(b.event == "message");
    auto m = json_reader(b.data).single();
    CHECK(b.id == std::to_string(m.id));
    return m;
}

} // namespace

// =============================================================================================
// POST /chat/send
// =============================================================================================

TEST_CASE("example chat: POST /chat/send answers 201 with increasing ids; empty is 400, over 4096 bytes 413",
          "[example-chat]")
{
    example_process example;
    client c{example.port()};

    auto first = c.request(http::verb::post, "/chat/send", "hello");
    CHECK(first.result() == http::status::created);
    CHECK(first[http::field::content_type] == "application/json");
    CHECK(first.body() == R"({"id":1})");
    CHECK(post(c, "second") == 2);

    auto empty = c.request(http::verb::post, "/chat/send", "");
    CHECK(empty.result() == http::status::bad_request);
    CHECK(empty.body() == "the message is empty");

    auto big = c.request(http::verb::post, "/chat/send", std::string(5000, 'x'));
    CHECK(big.result() == http::status::payload_too_large);
    CHECK(big.body() == "a message has at most 4096 bytes");

    // Rejected posts take no id; exactly 4096 bytes is allowed.
    CHECK(post(c, std::string(4096, 'y')) == 3);
    CHECK(post(c, "fourth") == 4);

    auto all = parse_messages(c.get("/chat/poll?after=0&timeout_ms=0").body());
    CHECK(ids_of(all) == range(1, 4));
}

// =============================================================================================
// GET /chat/poll
// =============================================================================================

TEST_CASE("example chat: /chat/poll answers at once with the messages after `after`", "[example-chat]")
{
    example_process example;
    client c{example.port()};
    post(c, "first");
    post(c, "second");

    const auto t0 = steady::now();
    auto res = c.get("/chat/poll?after=0&timeout_ms=10000");
    CHECK(ms_since(t0) < 3000); // well before the timeout
    CHECK(res.result() == http::status::ok);
    CHECK(res[http::field::content_type] == "application/json");
    CHECK(res.body() == R"([{"id":1,"text":"first"},{"id":2,"text":"second"}])");
    CHECK(parse_messages(res.body()) == std::vector<chat_message>{{1, "first"}, {2, "second"}});

    auto later = c.get("/chat/poll?after=1&timeout_ms=10000");
    CHECK(later.result() == http::status::ok);
    CHECK(parse_messages(later.body()) == std::vector<chat_message>{{2, "second"}});

    auto bad = c.get("/chat/poll?after=x");
    CHECK(bad.result() == http::status::bad_request);
}

TEST_CASE("example chat: /chat/poll with nothing new waits, and a message from another connection wakes it",
          "[example-chat]")
{
    example_process example;
    client poster{example.port()};
    const auto last = post(poster, "already there");

    client waiting{example.port()};
    const auto asked = steady::now();
    waiting.write_raw("GET /chat/poll?after=" + std::to_string(last) + "&timeout_ms=10000 HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_until([&] { return has(stats(poster), "\"suspended\":1"); }); // it waits at the server

    std::this_thread::sleep_for(200ms); // the scenario: a message comes 200 ms later
    const auto posted_at = steady::now();
    const auto id = post(poster, "wake up");
    auto res = waiting.read();
    const auto after_post = ms_since(posted_at);

    CHECK(res.result() == http::status::ok);
    CHECK(parse_messages(res.body()) == std::vector<chat_message>{{id, "wake up"}});
    CHECK(after_post < 2000);      // woken by the post, not by the 10 s timeout
    CHECK(ms_since(asked) >= 200); // it did wait
    CHECK(ms_since(asked) < 5000);
    wait_until([&] { return has(stats(poster), "\"suspended\":0"); });
}

TEST_CASE("example chat: /chat/poll with no message answers 204 after its timeout", "[example-chat]")
{
    example_process example;
    client c{example.port()};

    auto t0 = steady::now();
    auto res = c.get("/chat/poll?after=0&timeout_ms=300");
    auto waited = ms_since(t0);
    CHECK(res.result() == http::status::no_content);
    CHECK(res.body().empty());
    CHECK(waited >= 250);
    CHECK(waited < 3000);

    // The same with messages that are all older than `after`.
    const auto last = post(c, "old news");
    t0 = steady::now();
    res = c.get("/chat/poll?after=" + std::to_string(last) + "&timeout_ms=300");
    waited = ms_since(t0);
    CHECK(res.result() == http::status::no_content);
    CHECK(waited >= 250);
    CHECK(waited < 3000);

    // timeout_ms=0: at once.
    t0 = steady::now();
    CHECK(c.get("/chat/poll?after=" + std::to_string(last) + "&timeout_ms=0").result() == http::status::no_content);
    CHECK(ms_since(t0) < 2000);
}

TEST_CASE("example chat: message text is escaped as JSON: quotes, backslash, newline, control characters, '<'",
          "[example-chat]")
{
    example_process example;
    client c{example.port()};
    const std::string text = "He said \"hi\" \\ back\\slash\nnew line\r\ttab\x01 </script><b>&amp; caf\xC3\xA9";
    const auto id = post(c, text);

    auto body = c.get("/chat/poll?after=0&timeout_ms=0").body();
    INFO(body);
    CHECK(has(body, R"(He said \"hi\" \\ back\\slash)"));
    CHECK_FALSE(has(body, "\n")); // no raw line break: the JSON is one line
    CHECK_FALSE(has(body, "\r"));
    CHECK(parse_messages(body) == std::vector<chat_message>{{id, text}}); // valid JSON, same text back

    // The event stream carries the same JSON on a single data line.
    event_client events{example.port(), "/events?after=0&interval_ms=3600000"};
    auto m = events.next_message();
    REQUIRE(m);
    CHECK_FALSE(has(m->data, "\n"));
    CHECK(message_of(*m) == chat_message{id, text});
}

// =============================================================================================
// GET /events
// =============================================================================================

TEST_CASE("example chat: /events is an event stream with a tick about every interval_ms", "[example-chat]")
{
    example_process example;
    const auto asked = steady::now(); // before the request: the bounds below hold however slow this side is
    event_client events{example.port(), "/events?interval_ms=100"};
    CHECK(events.status() == 200);
    CHECK(events.header("content-type") == "text/event-stream");
    CHECK(events.header("cache-control") == "no-cache");
    CHECK(events.header("transfer-encoding") == "chunked");
    CHECK(events.header("content-length") == "<absent>");

    steady::time_point last;
    for (int n = 1; n <= 6; ++n) {
        auto tick = events.next_tick();
        REQUIRE(tick);
        CHECK(tick->data == std::to_string(n));
        CHECK(tick->id.empty());
        last = tick->arrived;
    }
    // Each tick waits interval_ms after the previous one was written: the sixth comes after 600 ms.
    CHECK(last - asked >= 590ms);
    CHECK(last - asked < 4s);
}

TEST_CASE("example chat: a message posted while /events is open arrives as event: message with its id",
          "[example-chat]")
{
    example_process example;
    event_client events{example.port(), "/events?interval_ms=100"};
    REQUIRE(events.next_tick()); // streaming

    client c{example.port()};
    const auto posted_at = steady::now();
    const auto id = post(c, "hello, stream");
    auto m = events.next_message();
    REQUIRE(m);
    CHECK(m->arrived - posted_at < 2s);
    CHECK(m->event == "message");
    CHECK(m->id == std::to_string(id));
    CHECK(m->data == R"({"id":1,"text":"hello, stream"})");

    const auto second = post(c, "and another");
    auto m2 = events.next_message();
    REQUIRE(m2);
    CHECK(message_of(*m2) == chat_message{second, "and another"});

    // Ticks go on between messages.
    REQUIRE(events.next_tick());
}

TEST_CASE("example chat: reconnecting with Last-Event-ID replays exactly the messages after it, then new ones",
          "[example-chat]")
{
    example_process example;
    client c{example.port()};
    std::vector<std::uint64_t> ids;
    for (int i = 1; i <= 5; ++i)
        ids.push_back(post(c, "message " + std::to_string(i)));
    REQUIRE(ids == range(1, 5));

    auto replayed = [&](event_client& events, std::size_t n) {
        std::vector<chat_message> got;
        for (std::size_t i = 0; i < n; ++i) {
            auto m = events.next_message();
            REQUIRE(m);
            got.push_back(message_of(*m));
        }
        return got;
    };

    SECTION("Last-Event-ID")
    {
        event_client events{example.port(), "/events?interval_ms=3600000", "Last-Event-ID: 2\r\n"};
        CHECK(events.status() == 200);
        CHECK(replayed(events, 3) == std::vector<chat_message>{{3, "message 3"}, {4, "message 4"}, {5, "message 5"}});
        const auto fresh = post(c, "fresh");
        CHECK(replayed(events, 1) == std::vector<chat_message>{{fresh, "fresh"}}); // nothing in between
    }
    SECTION("?after= for a first connection")
    {
        event_client events{example.port(), "/events?interval_ms=3600000&after=2"};
        CHECK(replayed(events, 3) == std::vector<chat_message>{{3, "message 3"}, {4, "message 4"}, {5, "message 5"}});
        const auto fresh = post(c, "fresh");
        CHECK(replayed(events, 1) == std::vector<chat_message>{{fresh, "fresh"}});
    }
    SECTION("Last-Event-ID wins over ?after= (EventSource reconnects to the same URL)")
    {
        event_client events{example.port(), "/events?interval_ms=3600000&after=0", "Last-Event-ID: 4\r\n"};
        CHECK(replayed(events, 1) == std::vector<chat_message>{{5, "message 5"}});
        const auto fresh = post(c, "fresh");
        CHECK(replayed(events, 1) == std::vector<chat_message>{{fresh, "fresh"}});
    }
    SECTION("the last id: nothing replayed")
    {
        event_client events{example.port(), "/events?interval_ms=3600000", "Last-Event-ID: 5\r\n"};
        const auto fresh = post(c, "fresh");
        CHECK(replayed(events, 1) == std::vector<chat_message>{{fresh, "fresh"}});
    }
    SECTION("no Last-Event-ID and no ?after=: the whole history")
    {
        event_client events{example.port(), "/events?interval_ms=3600000"};
        CHECK(ids_of(replayed(events, 5)) == range(1, 5));
    }
}

TEST_CASE("example chat: a non-numeric Last-Event-ID, or a bad interval_ms, is 400", "[example-chat]")
{
    example_process example;
    client c{example.port()};
    c.write_raw("GET /events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: abc\r\n\r\n");
    auto res = c.read();
    CHECK(res.result() == http::status::bad_request);
    CHECK(res.body() == "Last-Event-ID must be a message id");
    CHECK(res[http::field::content_type] != "text/event-stream");

    c.write_raw("GET /events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 12x\r\n\r\n");
    CHECK(c.read().result() == http::status::bad_request);

    CHECK(c.get("/events?interval_ms=5").result() == http::status::bad_request);
    CHECK(c.get("/events?after=x").result() == http::status::bad_request);

    // The connection goes on, and no stream was left open.
    CHECK(c.get("/hello").result() == http::status::ok);
    wait_until([&] { return has(stats(c), "\"streams\":0"); });
}

TEST_CASE("example chat: the history keeps the last 1000 messages", "[example-chat]")
{
    example_process example;
    client c{example.port()};
    for (int i = 1; i <= 1005; ++i)
        REQUIRE(post(c, "m" + std::to_string(i)) == static_cast<std::uint64_t>(i));

    auto polled = parse_messages(c.get("/chat/poll?after=0&timeout_ms=0").body());
    REQUIRE(polled.size() == 1000);
    CHECK(polled.front() == chat_message{6, "m6"});
    CHECK(polled.back() == chat_message{1005, "m1005"});
    CHECK(ids_of(polled) == range(6, 1005));

    event_client events{example.port(), "/events?after=0&interval_ms=3600000"};
    std::vector<std::uint64_t> streamed;
    for (int i = 0; i < 1000; ++i) {
        auto m = events.next_message();
        REQUIRE(m);
        streamed.push_back(message_of(*m).id);
    }
    CHECK(streamed == range(6, 1005));
}

TEST_CASE("example chat: a new /events subscriber gets the whole history, even one larger than a stream's queue",
          "[example-chat]")
{
    // 300 messages of 4096 bytes: about 1.2 MB of events, more than the default 1 MiB queue of a
    // stream. The history is well within its 1000 messages.
    example_process example;
    client c{example.port()};
    for (int i = 1; i <= 300; ++i)
        REQUIRE(post(c, std::string(4096, 'x')) == static_cast<std::uint64_t>(i));

    event_client events{example.port(), "/events?after=0&interval_ms=3600000"};
    CHECK(events.status() == 200);
    std::vector<std::uint64_t> streamed;
    while (streamed.size() < 300) {
        auto m = events.next_message();
        if (!m)
            break;
        streamed.push_back(message_of(*m).id);
    }
    INFO("the stream " << (events.eof() ? "was cut by the server" : "stalled") << " after " << streamed.size()
                       << " of 300 messages");
    CHECK(streamed == range(1, 300));
}

TEST_CASE("example chat: --sse-heartbeat-ms sends a heartbeat comment about that often", "[example-chat]")
{
    example_process example{{"--sse-heartbeat-ms", "200"}};
    const auto asked = steady::now(); // before the request: the bounds below hold however slow this side is
    event_client events{example.port(), "/events?interval_ms=3600000"};
    steady::time_point last;
    for (int i = 0; i < 5; ++i) {
        auto b = events.next();
        REQUIRE(b);
        CHECK(b->comments == std::vector<std::string>{"heartbeat"});
        CHECK_FALSE(b->has_data);
        CHECK(b->event.empty());
        last = b->arrived;
    }
    // Each heartbeat follows 200 ms without a write: the fifth comes after 1 s, and not much later.
    CHECK(last - asked >= 990ms);
    CHECK(last - asked < 5s);
}

// =============================================================================================
// The page, /stats, and stopping
// =============================================================================================

TEST_CASE("example chat: GET /chat is the page, on EventSource with a long-poll fallback", "[example-chat]")
{
    example_process example;
    client c{example.port()};
    auto res = c.get("/chat");
    CHECK(res.result() == http::status::ok);
    CHECK(res[http::field::content_type] == "text/html; charset=utf-8");
    CHECK(has(res.body(), "EventSource"));
    CHECK(has(res.body(), "/chat/poll"));
    CHECK(has(res.body(), "/chat/send"));
    CHECK(has(res.body(), "/events"));
}

TEST_CASE("example chat: /stats counts the open event streams", "[example-chat]")
{
    example_process example;
    client c{example.port()};
    CHECK(has(stats(c), "\"streams\":0"));

    {
        event_client events{example.port(), "/events?interval_ms=100"};
        REQUIRE(events.next_tick());
        CHECK(has(stats(c), "\"streams\":1"));
        event_client second{example.port(), "/events?interval_ms=100"};
        REQUIRE(second.next_tick());
        CHECK(has(stats(c), "\"streams\":2"));
        second.close();
        wait_until([&] { return has(stats(c), "\"streams\":1"); });
        events.close();
    }
    wait_until([&] { return has(stats(c), "\"streams\":0"); }); // noticed without waiting for a write
}

TEST_CASE("example chat: SIGTERM ends an open event stream and answers a waiting poll 503 early, exit 0",
          "[example-chat]")
{
    example_process example; // the default grace: 5 s
    event_client events{example.port(), "/events?interval_ms=100"};
    REQUIRE(events.next_tick());
    client waiting{example.port()};
    waiting.write_raw("GET /chat/poll?after=0&timeout_ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n");
    {
        client c{example.port()};
        wait_until([&] {
            const auto s = stats(c);
            return has(s, "\"suspended\":1") && has(s, "\"streams\":1");
        });
    }

    const auto t0 = steady::now();
    const auto status = example.stop_within(SIGTERM, 3s);
    const auto took = ms_since(t0);
    INFO("exit after " << took << " ms");
    CHECK(status == std::optional<int>(0)); // within 3 s, so before the 5 s grace ran out

    CHECK(events.wait_end()); // the body ended with its last chunk, not a cut connection
    auto res = waiting.read();
    CHECK(res.result() == http::status::service_unavailable);
    CHECK(res[http::field::retry_after] == "5");
}
