//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// perf-beast-server: the minimal HTTP/1.1 server a competent Boost.Beast user writes by hand,
// the floor plinth's per-request cost is measured against. It follows Beast's
// http_server_awaitable and advanced_server examples: C++20 coroutines, one io_context run by
// --threads threads, a strand per connection (make_strand on accept), and a flat_buffer kept for
// the life of the connection, so requests a client pipelines are parsed from what one read
// already brought in. No router, no interceptors, no Date header; TCP_NODELAY as plinth sets it.
// Nothing clever beyond that: a fresh request and response per exchange, as the examples do.
//
//   perf-beast-server --port P [--threads 1]
//
// GET /hello        200 text/plain "Hello, World!"
// GET /wait?ms=N    200 "waited" after an N ms steady_timer (no thread held)
// GET /park         held until POST /resume: the session's coroutine waits on a timer that never
//                   expires (Asio's usual event), which the resume cancels on its strand
// POST /resume?rate=R  202 at once; a worker thread then resumes every parked request, R per
//                   second (0: as fast as it can), each body the steady clock (CLOCK_MONOTONIC,
//                   ns) read just before its resume, as plinth's benchmark server does
// GET /stats        {"suspended":S,"connections":C,"rss_kib":K}
// anything else     404
//
// The park and resume are the floor for plinth's suspended requests: the same hand-off from a
// worker thread to a connection's strand, and what a coroutine frame per waiting request costs.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../rss.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

unsigned number(std::string_view text)
{
    unsigned v = 0;
    std::from_chars(text.data(), text.data() + text.size(), v);
    return v;
}

// The value of `name` in the target's query string, or 0.
unsigned query(std::string_view target, std::string_view name)
{
    auto q = target.find('?');
    if (q == std::string_view::npos)
        return 0;
    for (std::string_view rest = target.substr(q + 1); !rest.empty();) {
        auto amp = rest.find('&');
        std::string_view pair = rest.substr(0, amp);
        if (pair.size() > name.size() && pair.starts_with(name) && pair[name.size()] == '=')
            return number(pair.substr(name.size() + 1));
        rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    }
    return 0;
}

http::response<http::string_body> text(http::status status, const http::request<http::string_body>& req,
                                       std::string_view body)
{
    http::response<http::string_body> res{status, req.version()};
    res.set(http::field::server, "beast");
    res.set(http::field::content_type, "text/plain");
    res.keep_alive(req.keep_alive());
    res.body() = body;
    res.prepare_payload();
    return res;
}

// A parked request: its session waits on `wake` until a worker has set `body` and cancelled it.
struct parked {
    explicit parked(const asio::any_io_executor& strand)
        : wake(strand, asio::steady_timer::time_point::max())
    {
    }
    asio::steady_timer wake;
    std::string body;
};

// Parked requests, resumed by a worker thread at a steady rate; and what /stats reports.
class parking_lot {
public:
    void park(std::shared_ptr<parked> p)
    {
        std::lock_guard lock(mutex_);
        parked_.push_back(std::move(p));
    }

    void resume_all(unsigned rate)
    {
        std::vector<std::shared_ptr<parked>> batch;
        std::lock_guard lock(mutex_);
        batch.swap(parked_);
        workers_.emplace_back([batch = std::move(batch), rate] {
            const auto start = std::chrono::steady_clock::now();
            std::size_t i = 0;
            for (const auto& p : batch) {
                if (rate != 0)
                    std::this_thread::sleep_until(start + i++ * std::chrono::nanoseconds(1'000'000'000 / rate));
                const auto now = std::chrono::steady_clock::now().time_since_epoch();
                p->body = std::to_string(std::chrono::nanoseconds(now).count());
                asio::post(p->wake.get_executor(), [p] { p->wake.cancel(); });
            }
        });
    }

    std::atomic<std::size_t> suspended{0};
    std::atomic<std::size_t> connections{0};

private:
    std::mutex mutex_;
    std::vector<std::shared_ptr<parked>> parked_;
    std::vector<std::jthread> workers_;
};

asio::awaitable<http::response<http::string_body>> handle(const http::request<http::string_body>& req, parking_lot& lot)
{
    std::string_view target = req.target();
    std::string_view path = target.substr(0, target.find('?'));
    if (req.method() == http::verb::get && path == "/hello")
        co_return text(http::status::ok, req, "Hello, World!");
    if (req.method() == http::verb::get && path == "/wait") {
        asio::steady_timer timer{co_await asio::this_coro::executor, std::chrono::milliseconds(query(target, "ms"))};
        co_await timer.async_wait(use_tuple);
        co_return text(http::status::ok, req, "waited");
    }
    if (req.method() == http::verb::get && path == "/park") {
        auto p = std::make_shared<parked>(co_await asio::this_coro::executor);
        ++lot.suspended;
        lot.park(p);
        co_await p->wake.async_wait(use_tuple); // cancelled by the resume
        --lot.suspended;
        co_return text(http::status::ok, req, p->body);
    }
    if (req.method() == http::verb::post && path == "/resume") {
        lot.resume_all(query(target, "rate"));
        co_return text(http::status::accepted, req, "resuming");
    }
    if (req.method() == http::verb::get && path == "/stats") {
        auto res =
            text(http::status::ok, req,
                 "{\"suspended\":" + std::to_string(lot.suspended.load()) + ",\"connections\":"
                     + std::to_string(lot.connections.load()) + ",\"rss_kib\":" + std::to_string(rss_kib()) + "}");
        res.set(http::field::content_type, "application/json");
        co_return res;
    }
    co_return text(http::status::not_found, req, "Not Found");
}

asio::awaitable<void> session(beast::tcp_stream stream, parking_lot& lot)
{
    ++lot.connections;
    // Kept across requests: a read may bring in several pipelined requests, and the ones after
    // the first are parsed from here by the next async_read without touching the socket.
    beast::flat_buffer buffer;
    for (;;) {
        stream.expires_after(30s);
        http::request<http::string_body> req;
        auto [ec, read] = co_await http::async_read(stream, buffer, req, use_tuple);
        if (ec) // end_of_stream, a reset, the timeout, or a request Beast could not parse
            break;
        stream.expires_never(); // a parked request waits as long as it is parked
        auto res = co_await handle(req, lot);
        auto [wec, written] = co_await http::async_write(stream, res, use_tuple);
        if (wec || !res.keep_alive())
            break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    --lot.connections;
}

asio::awaitable<void> listen(tcp::acceptor acceptor, parking_lot& lot)
{
    auto& ioc = static_cast<asio::io_context&>(acceptor.get_executor().context());
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(ioc), use_tuple);
        if (ec == asio::error::operation_aborted)
            co_return;
        if (ec) { // out of descriptors and the like: back off rather than spin
            asio::steady_timer backoff{acceptor.get_executor(), 50ms};
            co_await backoff.async_wait(use_tuple);
            continue;
        }
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        auto ex = socket.get_executor();
        asio::co_spawn(ex, session(beast::tcp_stream(std::move(socket)), lot), asio::detached);
    }
}

} // namespace

int main(int argc, char** argv)
{
    unsigned short port = 0;
    unsigned threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view flag = argv[i];
        if (flag == "--port")
            port = static_cast<unsigned short>(number(argv[i + 1]));
        else if (flag == "--threads")
            threads = std::max(1u, number(argv[i + 1]));
    }

    // A thousand connections need more descriptors than the usual soft limit of 1024.
    if (rlimit lim{}; getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }

    asio::io_context ioc{static_cast<int>(threads)};
    parking_lot lot; // goes first: its workers are joined, and its timers go, while the io_context still exists
    tcp::acceptor acceptor{ioc};
    tcp::endpoint endpoint{asio::ip::make_address_v4("127.0.0.1"), port};
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);
    std::cout << "perf-beast-server listening on 127.0.0.1:" << acceptor.local_endpoint().port() << std::endl;
    asio::co_spawn(ioc, listen(std::move(acceptor), lot), asio::detached);

    asio::signal_set signals{ioc, SIGINT, SIGTERM};
    signals.async_wait([&](auto, int) { ioc.stop(); });
    std::vector<std::jthread> pool;
    for (unsigned i = 1; i < threads; ++i)
        pool.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    return 0;
}
