#include <plinth/plinth.hpp>
namespace asio = boost::asio;
namespace http = boost::beast::http;

asio::awaitable<void> clock(plinth::sse_stream events) {   // one event a second, at the client's pace
    asio::steady_timer timer{co_await asio::this_coro::executor};
    for (int n = 1; events.is_open(); ++n) {
        plinth::sse_event tick{.data = "tick " + std::to_string(n), .id = std::to_string(n)};
        co_await events.async_send(tick, asio::use_awaitable);  // (g++ 12: no temporaries in co_await)
        timer.expires_after(std::chrono::seconds(1));
        co_await timer.async_wait(asio::use_awaitable);
    }
}

int main() {
    asio::io_context ioc{1};
    plinth::server srv{ioc, {.address = "127.0.0.1", .port = 8080}};
    srv.routes({{http::verb::get, "/clock", [](const plinth::context& ctx, plinth::sse_stream events) {
        asio::co_spawn(ctx.executor(), clock(events), asio::detached); }}});   // holds no thread
    srv.start();
    ioc.run();
}
