// What the stream tests share: a raw loopback client that reads a streamed response bit by
// bit (wire), a chunked-body decoder (body_reader), and a hub that collects the handles a
// route's handler receives, with their on_close reasons.

#ifndef PLINTH_TEST_STREAM_WIRE_HPP
#define PLINTH_TEST_STREAM_WIRE_HPP

#include "test_server.hpp"

#include <sys/socket.h>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace plinth_test {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

inline long long ms_between(steady::time_point from, steady::time_point to = steady::now())
{
    return std::chrono::duration_cast<milliseconds>(to - from).count();
}

// -- the client side: a raw socket read bit by bit --

/// A raw HTTP client for streamed responses: the head, then the body chunk by chunk (or, without
/// chunks, as the bytes arrive). Every read has a deadline: nothing here can hang a test.
class wire {
public:
    /// Connects to `port`; `rcvbuf` > 0 sets the receive buffer before the connect, so the TCP
    /// window stays that small and a client that does not read holds little.
    explicit wire(std::uint16_t port, int rcvbuf = 0)
        : socket_(ioc_)
    {
        socket_.open(tcp::v4());
        if (rcvbuf > 0)
            ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        socket_.connect({asio::ip::make_address("127.0.0.1"), port});
    }

    void send(std::string_view bytes) { asio::write(socket_, asio::buffer(bytes)); }

    enum class status { data, timeout, closed };

    /// Reads what arrives, at most `max` bytes, waiting up to `timeout`.
    status fill(milliseconds timeout, std::size_t max = 64 * 1024)
    {
        if (closed_)
            return status::closed;
        compact();
        const std::size_t old = buf_.size();
        buf_.resize(old + max);
        beast::error_code ec = asio::error::would_block;
        std::size_t got = 0;
        socket_.async_read_some(asio::buffer(buf_.data() + old, max), [&](beast::error_code e, std::size_t n) {
            ec = e;
            got = n;
        });
        ioc_.restart();
        ioc_.run_for(std::max(timeout, milliseconds(0)));
        if (!ioc_.stopped()) {
            socket_.cancel();
            ioc_.restart();
            ioc_.run();
        }
        buf_.resize(old + got);
        if (got > 0)
            return status::data;
        if (ec == asio::error::operation_aborted)
            return status::timeout;
        closed_ = true;
        close_error_ = ec;
        return status::closed;
    }

    /// The bytes up to and including `delim`; nothing when the deadline passes or the peer closes.
    std::optional<std::string> until(std::string_view delim, steady::time_point deadline)
    {
        std::size_t from = pos_;
        for (;;) {
            const auto at = buf_.find(delim, from);
            if (at != std::string::npos)
                return take(at + delim.size() - pos_);
            from = std::max(pos_, buf_.size() - std::min(buf_.size(), delim.size() - 1));
            from -= pos_;
            if (fill(remaining(deadline)) != status::data)
                return std::nullopt;
            from += pos_;
        }
    }

    /// Exactly `n` bytes; nothing when the deadline passes or the peer closes first.
    std::optional<std::string> exactly(std::size_t n, steady::time_point deadline)
    {
        while (buffered() < n)
            if (fill(remaining(deadline), std::max<std::size_t>(n - buffered(), 64 * 1024)) != status::data)
                return std::nullopt;
        return take(n);
    }

    /// A response's head, parsed by Beast (the body, if any, stays unread).
    http::response<http::empty_body> head(milliseconds timeout = 10s)
    {
        auto raw = until("\r\n\r\n", steady::now() + timeout);
        if (!raw)
            throw std::runtime_error("no response head within the timeout");
        http::response_parser<http::empty_body> parser;
        beast::error_code ec;
        parser.put(asio::buffer(*raw), ec);
        if (ec && ec != http::error::need_more)
            throw std::runtime_error("a malformed response head: " + ec.message() + "\n" + *raw);
        if (!parser.is_header_done())
            throw std::runtime_error("an incomplete response head:\n" + *raw);
        return parser.release();
    }

    /// A whole response with a Content-Length body: its head and its body.
    std::pair<http::response<http::empty_body>, std::string> response_with_body(milliseconds timeout = 10s)
    {
        auto h = head(timeout);
        std::size_t length = 0;
        const auto cl = h[http::field::content_length];
        std::from_chars(cl.data(), cl.data() + cl.size(), length);
        auto body = exactly(length, steady::now() + timeout);
        if (!body)
            throw std::runtime_error("no complete body within the timeout");
        return {std::move(h), std::move(*body)};
    }

    struct chunk {
        std::string data;
        bool last = false;
        std::string trailer; // the last chunk's trailer lines, each with its CRLF
    };

    /// The next chunk of a chunked body, strictly framed (a framing error throws); nothing when
    /// the deadline passes or the peer closes first.
    std::optional<chunk> next_chunk(steady::time_point deadline)
    {
        auto line = until("\r\n", deadline);
        if (!line)
            return std::nullopt;
        std::size_t size = 0;
        const char* end = line->data() + line->size() - 2;
        const auto [ptr, ec] = std::from_chars(line->data(), end, size, 16);
        if (ec != std::errc() || ptr != end)
            throw std::runtime_error("a malformed chunk-size line: '" + *line + "'");
        chunk c;
        if (size == 0) {
            c.last = true;
            for (;;) {
                auto t = until("\r\n", deadline);
                if (!t)
                    return std::nullopt;
                if (*t == "\r\n")
                    return c;
                c.trailer += *t;
            }
        }
        auto data = exactly(size + 2, deadline);
        if (!data)
            return std::nullopt;
        if (!data->ends_with("\r\n"))
            throw std::runtime_error("chunk data not followed by CRLF");
        data->resize(size);
        c.data = std::move(*data);
        return c;
    }

    /// Reads and discards until the peer closes (EOF or reset): true when it did within `timeout`.
    bool drain_until_closed(milliseconds timeout = 10s)
    {
        const auto deadline = steady::now() + timeout;
        for (;;) {
            pos_ = buf_.size();
            switch (fill(remaining(deadline))) {
            case status::closed: return true;
            case status::timeout: return false;
            case status::data: break;
            }
        }
    }

    /// True when the peer closed with nothing more to read, within `timeout`.
    bool closed_by_server(milliseconds timeout = 10s)
    {
        if (buffered() != 0)
            return false;
        return fill(timeout, 1) == status::closed;
    }

    std::size_t buffered() const { return buf_.size() - pos_; }

    /// Everything read and not taken yet.
    std::string take_all() { return take(buffered()); }

    void close()
    {
        beast::error_code ignored;
        socket_.close(ignored);
    }

    /// Ends what the client sends (a FIN) and keeps its receiving side open.
    void shutdown_send()
    {
        beast::error_code ignored;
        socket_.shutdown(asio::socket_base::shutdown_send, ignored);
    }

    /// Closes with a reset (SO_LINGER 0), as a crashed client would.
    void reset()
    {
        linger l{1, 0};
        ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close();
    }

private:
    static milliseconds remaining(steady::time_point deadline)
    {
        return std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(deadline - steady::now()));
    }

    std::string take(std::size_t n)
    {
        std::string out = buf_.substr(pos_, n);
        pos_ += n;
        return out;
    }

    void compact()
    {
        if (pos_ > 0 && (pos_ == buf_.size() || pos_ > 256 * 1024)) {
            buf_.erase(0, pos_);
            pos_ = 0;
        }
    }

    asio::io_context ioc_;
    tcp::socket socket_;
    std::string buf_;
    std::size_t pos_ = 0;
    bool closed_ = false;
    beast::error_code close_error_;
};

/// A streamed body as it arrives, chunked or (HTTP/1.0) ended by the close.
class body_reader {
public:
    body_reader(wire& w, bool chunked)
        : w_(w)
        , chunked_(chunked)
    {
    }

    /// Reads the next piece of the body: false at its end or when the deadline passes.
    bool pull(steady::time_point deadline)
    {
        if (ended_)
            return false;
        if (chunked_) {
            auto c = w_.next_chunk(deadline);
            if (!c)
                return false;
            if (c->last) {
                ended_ = true;
                trailer_ = std::move(c->trailer);
                return false;
            }
            if (c->data.empty())
                throw std::runtime_error("an empty chunk that is not the last");
            ++chunks_;
            body_ += c->data;
            return true;
        }
        if (w_.buffered() == 0) {
            const auto st =
                w_.fill(std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(deadline - steady::now())));
            if (st == wire::status::closed)
                ended_ = true;
            if (st != wire::status::data)
                return false;
        }
        body_ += w_.take_all();
        return true;
    }

    /// The next event-stream block (an event or a comment) with its blank line; nothing at the
    /// end of the body or when `timeout` passes.
    std::optional<std::string> next_block(milliseconds timeout = 10s)
    {
        const auto deadline = steady::now() + timeout;
        for (;;) {
            const auto at = body_.find("\n\n", scan_);
            if (at != std::string::npos) {
                std::string block = body_.substr(0, at + 2);
                body_.erase(0, at + 2);
                scan_ = 0;
                return block;
            }
            scan_ = body_.empty() ? 0 : body_.size() - 1;
            if (!pull(deadline))
                return std::nullopt;
        }
    }

    /// The rest of the body, up to its end (false when the deadline passed first).
    bool read_to_end(milliseconds timeout = 10s)
    {
        const auto deadline = steady::now() + timeout;
        while (pull(deadline))
            ;
        return ended_;
    }

    bool ended() const { return ended_; }
    const std::string& trailer() const { return trailer_; }
    const std::string& unparsed() const { return body_; }
    std::size_t chunks() const { return chunks_; }

private:
    wire& w_;
    bool chunked_;
    bool ended_ = false;
    std::string body_;
    std::size_t scan_ = 0;
    std::string trailer_;
    std::size_t chunks_ = 0;
};

/// Where stream handlers leave their handles, with what their on_close callbacks reported.
template <class Handle>
class hub {
public:
    struct entry {
        Handle handle;
        std::string last_event_id;
        std::vector<plinth::close_reason> closes;
        steady::time_point closed_at{};
    };

    /// Records a stream just opened (from its handler) and watches its on_close.
    std::size_t add(Handle h, std::string last_event_id = {})
    {
        std::size_t n;
        {
            std::lock_guard lock(mutex_);
            entries_.push_back({h, std::move(last_event_id), {}, {}});
            n = entries_.size() - 1;
        }
        h.on_close([this, n](plinth::close_reason r) {
            std::lock_guard lock(mutex_);
            entries_[n].closes.push_back(r);
            entries_[n].closed_at = steady::now();
            cv_.notify_all();
        });
        std::lock_guard lock(mutex_);
        cv_.notify_all();
        return n;
    }

    /// The n-th stream, once opened.
    Handle wait_open(std::size_t n)
    {
        std::unique_lock lock(mutex_);
        REQUIRE(cv_.wait_for(lock, 10s, [&] { return entries_.size() > n; }));
        return entries_[n].handle;
    }

    /// Why the n-th stream closed, once it did.
    plinth::close_reason wait_closed(std::size_t n)
    {
        std::unique_lock lock(mutex_);
        REQUIRE(cv_.wait_for(lock, 10s, [&] { return entries_.size() > n && !entries_[n].closes.empty(); }));
        return entries_[n].closes.front();
    }

    steady::time_point closed_at(std::size_t n)
    {
        std::lock_guard lock(mutex_);
        return entries_.at(n).closed_at;
    }

    std::size_t close_count(std::size_t n)
    {
        std::lock_guard lock(mutex_);
        return entries_.at(n).closes.size();
    }

    std::string last_event_id(std::size_t n)
    {
        std::lock_guard lock(mutex_);
        return entries_.at(n).last_event_id;
    }

    std::vector<Handle> handles()
    {
        std::lock_guard lock(mutex_);
        std::vector<Handle> out;
        for (const auto& e : entries_)
            out.push_back(e.handle);
        return out;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<entry> entries_;
};

inline plinth::route hello_route()
{
    return {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello"); }};
}

} // namespace plinth_test

#endif
