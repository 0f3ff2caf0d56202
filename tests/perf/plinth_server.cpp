// plinth-perf-server: plinth built in Release with the routes the benchmarks need. Every
// benchmarked server (this one and the peers in peers/) takes the same flags and answers
// GET /hello with "Hello, World!".
//
//   plinth-perf-server --port P [--threads 1] [--idle-release-ms M]
//
// GET /hello                 200 "Hello, World!" through the router and one interceptor
// GET /wait?ms=N             200 after N ms, on an awaitable timer (no thread held)
// GET /park[?timeout_ms=N]   suspends; held until POST /resume (or 503 after the timeout)
// POST /resume?rate=R        202 at once; a worker thread then resumes every parked request, R
//                            per second (0: as fast as it can). Each body is the steady clock
//                            (CLOCK_MONOTONIC, in ns) read just before its resume call, so a
//                            client on this machine can measure resume-to-last-byte latency.
// GET /stats                 {"suspended":S,"connections":C,"rss_kib":K}

#include <plinth/plinth.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "rss.hpp"

namespace asio = boost::asio;
namespace http = boost::beast::http;
using namespace std::chrono_literals;

namespace {

unsigned number(std::string_view text)
{
    unsigned v = 0;
    std::from_chars(text.data(), text.data() + text.size(), v);
    return v;
}

unsigned query(const plinth::context& ctx, std::string_view name)
{
    auto v = ctx.query(name);
    return v ? number(*v) : 0;
}

// Requests suspended by /park, resumed by a worker thread at a steady rate.
class parking_lot {
public:
    void park(plinth::async_response ar)
    {
        std::lock_guard lock(mutex_);
        parked_.push_back(std::move(ar));
    }

    void resume_all(unsigned rate)
    {
        std::vector<plinth::async_response> batch;
        {
            std::lock_guard lock(mutex_);
            batch.swap(parked_);
        }
        std::lock_guard lock(mutex_);
        workers_.emplace_back([batch = std::move(batch), rate]() mutable {
            const auto start = std::chrono::steady_clock::now();
            std::size_t i = 0;
            for (auto& ar : batch) {
                if (rate != 0) // pacing a load generator, not waiting for a result
                    std::this_thread::sleep_until(start + i++ * std::chrono::nanoseconds(1'000'000'000 / rate));
                const auto now = std::chrono::steady_clock::now().time_since_epoch();
                ar.resume(plinth::text(std::to_string(std::chrono::nanoseconds(now).count())));
            }
        });
    }

private:
    std::mutex mutex_;
    std::vector<plinth::async_response> parked_;
    std::vector<std::jthread> workers_;
};

} // namespace

int main(int argc, char** argv)
{
    plinth::server_options options{.address = "127.0.0.1"};
    options.max_connections = 100'000;
    options.idle_timeout = 0ms; // the load generators hold idle connections on purpose
    unsigned threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view flag = argv[i];
        if (flag == "--port")
            options.port = static_cast<unsigned short>(number(argv[i + 1]));
        else if (flag == "--threads")
            threads = std::max(1u, number(argv[i + 1]));
        else if (flag == "--idle-release-ms")
            options.idle_release = std::chrono::milliseconds(number(argv[i + 1]));
    }

    options.single_threaded = threads == 1; // as the RESTinio peer's single-threaded traits
    asio::io_context ioc{static_cast<int>(threads)};
    plinth::server srv{ioc, options};
    parking_lot lot; // goes first: its workers are joined while the io_context still exists
    srv.use({.name = "server-header", .leave = [](plinth::context& c) {
                 if (c.response)
                     c.response->set(http::field::server, "plinth");
             }});
    srv.routes({
        {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello, World!"); }},
        {http::verb::get, "/wait",
         [](const plinth::context& ctx) -> asio::awaitable<plinth::response> {
             asio::steady_timer t{co_await asio::this_coro::executor, std::chrono::milliseconds(query(ctx, "ms"))};
             co_await t.async_wait(asio::use_awaitable);
             co_return plinth::text("waited");
         }},
        {http::verb::get, "/park",
         [&lot](const plinth::context& ctx, plinth::async_response ar) {
             if (auto ms = query(ctx, "timeout_ms"))
                 ar.set_timeout(std::chrono::milliseconds(ms));
             lot.park(std::move(ar));
         }},
        {http::verb::post, "/resume",
         [&lot](const plinth::context& ctx) {
             lot.resume_all(query(ctx, "rate"));
             return plinth::text("resuming", http::status::accepted);
         }},
        {http::verb::get, "/stats",
         [&srv](const plinth::request&) {
             auto s = srv.stats();
             return plinth::json("{\"suspended\":" + std::to_string(s.suspended) + ",\"connections\":"
                                 + std::to_string(s.connections) + ",\"rss_kib\":" + std::to_string(rss_kib()) + "}");
         }},
    });
    srv.start();
    std::cout << "plinth-perf-server listening on 127.0.0.1:" << srv.port() << std::endl;

    asio::signal_set signals{ioc, SIGINT, SIGTERM};
    signals.async_wait([&](auto, int) { srv.stop(0ms); });
    std::vector<std::jthread> pool;
    for (unsigned i = 1; i < threads; ++i)
        pool.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
}
