// plinth-example: the bundled example server. Every route shows one way to write a handler.
//
//   plinth-example [--address 127.0.0.1] [--port 8080] [--threads N]
//
// Exits 0 after a graceful stop on SIGINT or SIGTERM.

#include <plinth/plinth.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

struct flags {
    std::string address = "127.0.0.1";
    std::uint16_t port = 8080;
    unsigned threads = std::max(1u, std::thread::hardware_concurrency());
};

template <class T>
T parse_number(std::string_view text, std::string_view what)
{
    T value{};
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size())
        throw std::invalid_argument("invalid " + std::string(what) + ": '" + std::string(text) + "'");
    return value;
}

flags parse_flags(int argc, char** argv)
{
    flags f;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        auto value = [&]() -> std::string_view {
            if (i + 1 >= argc)
                throw std::invalid_argument(std::string(arg) + " needs a value");
            return argv[++i];
        };
        if (arg == "--address")
            f.address = value();
        else if (arg == "--port")
            f.port = parse_number<std::uint16_t>(value(), "--port");
        else if (arg == "--threads")
            f.threads = std::max(1u, parse_number<unsigned>(value(), "--threads"));
        else
            throw std::invalid_argument("unknown flag " + std::string(arg)
                                        + " (flags: --address A --port P --threads N)");
    }
    return f;
}

std::string json_string(std::string_view s)
{
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\')
            (out += '\\') += c;
        else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        }
        else
            out += c;
    }
    return out + '"';
}

// GET /delay?ms=N: waits on a timer, holding no thread.
asio::awaitable<plinth::response> delay(const plinth::context& ctx)
{
    auto ms = parse_number<unsigned>(ctx.query("ms").value_or("0"), "ms");
    if (ms > 60'000)
        throw plinth::http_error(http::status::bad_request, "ms must be at most 60000");
    asio::steady_timer timer{co_await asio::this_coro::executor, std::chrono::milliseconds(ms)};
    co_await timer.async_wait(asio::use_awaitable);
    co_return plinth::text("waited " + std::to_string(ms) + " ms");
}

} // namespace

int main(int argc, char** argv)
{
    flags f;
    try {
        f = parse_flags(argc, argv);
    }
    catch (const std::exception& e) {
        std::cerr << "plinth-example: " << e.what() << "\n";
        return 2;
    }

    asio::io_context ioc{f.threads == 1 ? 1 : static_cast<int>(f.threads)};
    plinth::server srv{ioc, {.address = f.address, .port = f.port}};
    srv.routes({
        {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello, World!"); }},
        {http::verb::get, "/delay", delay},
        {http::verb::get, "/users/{id}",
         [](const plinth::context& ctx) { return plinth::json("{\"id\":" + json_string(ctx.param("id")) + "}"); }},
        {http::verb::post, "/echo",
         [](const plinth::request& req) {
             return plinth::make_response(http::status::ok, req.body(),
                                          req[http::field::content_type].empty()
                                              ? "application/octet-stream"
                                              : std::string_view(req[http::field::content_type]));
         }},
        {http::verb::get, "/stats",
         [&srv](const plinth::request&) {
             auto s = srv.stats();
             return plinth::json("{\"connections\":" + std::to_string(s.connections) + ",\"accepted\":"
                                 + std::to_string(s.accepted) + ",\"requests\":" + std::to_string(s.requests) + "}");
         }},
    });

    try {
        srv.start();
    }
    catch (const std::exception& e) {
        std::cerr << "plinth-example: cannot listen on " << f.address << ":" << f.port << ": " << e.what() << "\n";
        return 1;
    }

    asio::signal_set signals{ioc, SIGINT, SIGTERM};
    signals.async_wait([&](const boost::system::error_code& ec, int) {
        if (!ec)
            srv.stop();
    });

    std::cout << "plinth-example listening on http://" << f.address << ":" << srv.port() << " with " << f.threads
              << " thread(s)" << std::endl;

    std::vector<std::jthread> pool;
    for (unsigned i = 1; i < f.threads; ++i)
        pool.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    pool.clear();
    std::cout << "plinth-example stopped after " << srv.stats().requests << " request(s)" << std::endl;
    return 0;
}
