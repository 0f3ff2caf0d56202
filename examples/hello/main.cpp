#include <plinth/plinth.hpp>
#include <boost/asio/steady_timer.hpp>
namespace asio = boost::asio;
namespace http = boost::beast::http;

int main() {
    asio::io_context ioc{1};
    plinth::server srv{ioc, {.address = "127.0.0.1", .port = 8080}};
    plinth::interceptor timing{.name = "timing", .leave = [](plinth::context& c) {
        if (c.response) c.response->set("X-Served-By", "plinth"); }};
    srv.routes({
        {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello"); }},
        {http::verb::get, "/users/{id}", {timing}, [](const plinth::context& c) {
            return plinth::json("{\"id\":\"" + std::string(c.param("id")) + "\"}"); }},
        {http::verb::get, "/slow", [](plinth::request) -> asio::awaitable<plinth::response> {
            asio::steady_timer t{co_await asio::this_coro::executor, std::chrono::seconds(1)};
            co_await t.async_wait(asio::use_awaitable);   // waits without holding a thread
            co_return plinth::text("done"); }},
    });
    srv.start();
    ioc.run();
}
