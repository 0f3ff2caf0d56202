// Helpers for loopback tests: a server on port 0 run by its own threads, a blocking Beast
// client with a receive timeout (so no test can hang), a log capture.
#ifndef PLINTH_TESTS_TEST_SERVER_HPP
#define PLINTH_TESTS_TEST_SERVER_HPP

#include <plinth/plinth.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <sys/socket.h>
#include <sys/time.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace plinth_test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using response = http::response<http::string_body>;

/// A plinth server on 127.0.0.1:0 whose io_context runs on `threads` threads of its own.
class test_server {
public:
    explicit test_server(std::vector<plinth::route> routes, plinth::server_options options = {},
                         const std::function<void(plinth::server&)>& setup = {}, unsigned threads = 2)
        : ioc_(threads == 1 ? 1 : static_cast<int>(threads))
    {
        options.address = "127.0.0.1";
        options.port = 0;
        server_.emplace(ioc_, std::move(options));
        server_->routes(std::move(routes));
        if (setup)
            setup(*server_);
        server_->start();
        for (unsigned i = 0; i < threads; ++i)
            threads_.emplace_back([this] {
                ioc_.run();
                std::lock_guard lock(mutex_);
                ++finished_;
                done_.notify_all();
            });
    }

    test_server(const test_server&) = delete;
    test_server& operator=(const test_server&) = delete;

    ~test_server()
    {
        server_->stop();
        if (!join_within(std::chrono::seconds(10)))
            ioc_.stop(); // a test left something hanging; do not hang the suite too
        for (auto& t : threads_)
            t.join();
    }

    plinth::server& server() { return *server_; }
    std::uint16_t port() const { return server_->port(); }

    /// True when every thread's io_context::run returned within `d`.
    bool join_within(std::chrono::steady_clock::duration d)
    {
        std::unique_lock lock(mutex_);
        return done_.wait_for(lock, d, [this] { return finished_ == threads_.size(); });
    }

private:
    asio::io_context ioc_;
    std::optional<plinth::server> server_;
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable done_;
    std::size_t finished_ = 0;
};

/// A blocking HTTP/1.1 client on one connection; every read gives up (and fails the test) after 10 s.
class client {
public:
    explicit client(std::uint16_t port)
        : socket_(ioc_)
    {
        socket_.connect({asio::ip::make_address("127.0.0.1"), port});
    }

    void write_raw(std::string_view bytes) { asio::write(socket_, asio::buffer(bytes)); }

    /// Reads one response; `head_request` when it answers a HEAD (no body follows).
    response read(bool head_request = false)
    {
        http::response_parser<http::string_body> parser;
        parser.skip(head_request);
        parser.body_limit(boost::none);
        // Asynchronously, so the read can time out (Asio's blocking reads retry past SO_RCVTIMEO).
        beast::error_code ec = asio::error::would_block;
        http::async_read(socket_, buffer_, parser, [&](beast::error_code e, std::size_t) { ec = e; });
        run_for_a_while();
        if (ec)
            throw beast::system_error(ec);
        return parser.release();
    }

    response request(http::verb method, std::string target, std::string body = {})
    {
        http::request<http::string_body> req{method, target, 11};
        req.set(http::field::host, "test");
        req.body() = std::move(body);
        req.prepare_payload();
        http::write(socket_, req);
        return read(method == http::verb::head);
    }

    response get(std::string target) { return request(http::verb::get, std::move(target)); }

    /// True when the server closed the connection (EOF or reset) with nothing more to read.
    bool closed_by_server()
    {
        if (buffer_.size() != 0)
            return false;
        char byte;
        beast::error_code ec = asio::error::would_block;
        socket_.async_read_some(asio::buffer(&byte, 1), [&](beast::error_code e, std::size_t) { ec = e; });
        run_for_a_while();
        return ec == asio::error::eof || ec == asio::error::connection_reset;
    }

    /// Exactly `n` bytes as they arrive, outside any response (an interim "100 Continue", part of
    /// a body); gives up like read().
    std::string read_raw(std::size_t n)
    {
        if (buffer_.size() < n) {
            beast::error_code ec = asio::error::would_block;
            asio::async_read(socket_, buffer_.prepare(n - buffer_.size()), [&](beast::error_code e, std::size_t got) {
                ec = e;
                buffer_.commit(got);
            });
            run_for_a_while();
            if (ec)
                throw beast::system_error(ec);
        }
        std::string bytes(static_cast<const char*>(buffer_.data().data()), n);
        buffer_.consume(n);
        return bytes;
    }

    /// Closes the connection from this side.
    void close()
    {
        beast::error_code ignored;
        socket_.close(ignored);
    }

    int native_handle() { return socket_.native_handle(); }

private:
    // Runs the pending read for up to 10 s; one that is still pending then is cancelled and
    // fails the test.
    void run_for_a_while()
    {
        ioc_.restart();
        ioc_.run_for(std::chrono::seconds(10));
        if (!ioc_.stopped()) {
            socket_.cancel();
            ioc_.restart();
            ioc_.run();
            FAIL_CHECK("no answer from the server within 10 s");
        }
    }

    asio::io_context ioc_;
    tcp::socket socket_;
    beast::flat_buffer buffer_;
};

/// Waits (up to 10 s) until `done()` holds; the test fails otherwise.
template <class F>
void wait_until(F done)
{
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done()) {
        REQUIRE(std::chrono::steady_clock::now() < deadline);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

/// True when a TCP connection to the port is accepted.
inline bool can_connect(std::uint16_t port)
{
    asio::io_context ioc;
    tcp::socket s{ioc};
    beast::error_code ec;
    s.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
    return !ec;
}

/// `n` GETs of `target`, all at once, each on its own connection; their statuses (0 = failed).
inline std::vector<int> concurrent_gets(std::uint16_t port, const std::string& target, int n)
{
    asio::io_context ioc;
    std::vector<int> statuses(static_cast<std::size_t>(n), 0);
    for (int i = 0; i < n; ++i)
        asio::co_spawn(
            ioc,
            [&, i]() -> asio::awaitable<void> {
                beast::tcp_stream stream{co_await asio::this_coro::executor};
                stream.expires_after(std::chrono::seconds(30));
                co_await stream.async_connect({asio::ip::make_address("127.0.0.1"), port}, asio::use_awaitable);
                http::request<http::string_body> req{http::verb::get, target, 11};
                req.set(http::field::host, "test");
                co_await http::async_write(stream, req, asio::use_awaitable);
                beast::flat_buffer buffer;
                response res;
                co_await http::async_read(stream, buffer, res, asio::use_awaitable);
                statuses[static_cast<std::size_t>(i)] = static_cast<int>(res.result_int());
            },
            asio::detached);
    ioc.run();
    return statuses;
}

/// Collects what a server logs, with the level of each line.
class log_capture {
public:
    struct line {
        plinth::log_level level;
        std::string text;
    };

    plinth::log_function hook()
    {
        return [this](plinth::log_level level, std::string_view text) {
            std::lock_guard lock(mutex_);
            lines_.push_back({level, std::string(text)});
        };
    }

    /// A line, at any level, contains `text`.
    bool contains(std::string_view text) const
    {
        std::lock_guard lock(mutex_);
        for (const auto& l : lines_)
            if (l.text.find(text) != std::string::npos)
                return true;
        return false;
    }

    /// A line at exactly `level` contains `text`.
    bool contains(plinth::log_level level, std::string_view text) const
    {
        std::lock_guard lock(mutex_);
        for (const auto& l : lines_)
            if (l.level == level && l.text.find(text) != std::string::npos)
                return true;
        return false;
    }

    /// How many lines were logged at `level` or above.
    std::size_t count_at_least(plinth::log_level level) const
    {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& l : lines_)
            if (l.level >= level)
                ++n;
        return n;
    }

    /// Every line so far, in order.
    std::vector<line> lines() const
    {
        std::lock_guard lock(mutex_);
        return lines_;
    }

    /// Every line so far, "level: text" one a line (for INFO in a failing test).
    std::string dump() const
    {
        std::lock_guard lock(mutex_);
        std::string out;
        for (const auto& l : lines_)
            out += std::string(plinth::to_string(l.level)) + ": " + l.text + "\n";
        return out;
    }

private:
    mutable std::mutex mutex_;
    std::vector<line> lines_;
};

} // namespace plinth_test

#endif
