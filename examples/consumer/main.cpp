// A minimal program built against an installed plinth: it serves /hello on a free port,
// asks itself for it, and exits 0 when the answer is right.

#include <plinth/plinth.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <iostream>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

int main()
{
    asio::io_context ioc{1};
    plinth::server srv{ioc, {.port = 0}};
    srv.routes({{http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello, World!"); }}});
    srv.start();

    std::string body;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            beast::tcp_stream stream{ioc};
            co_await stream.async_connect(srv.local_endpoint(), asio::use_awaitable);
            http::request<http::empty_body> req{http::verb::get, "/hello", 11};
            req.set(http::field::host, "localhost"); // HTTP/1.1 requires it
            co_await http::async_write(stream, req, asio::use_awaitable);
            beast::flat_buffer buffer;
            http::response<http::string_body> res;
            co_await http::async_read(stream, buffer, res, asio::use_awaitable);
            body = res.body();
            srv.stop();
        },
        [](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
        });
    ioc.run();

    std::cout << "plinth-consumer got: " << body << "\n";
    return body == "Hello, World!" ? 0 : 1;
}
