// plinth-load: opens N connections to a server, sends one GET on each, all at once, and waits
// for every response. It lives in its own process so that a test holding 10,000 connections
// does not need 20,000 descriptors in one process (the limit here is 20,000).
//
//   plinth-load --port P --connections N --target /path [--timeout-s S]
//
// Prints "connected N", once every connection is up and its request written, then
// "answered A status_200 B failed F" and exits 0 when every request got a 200.

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

int main(int argc, char** argv)
{
    unsigned short port = 0;
    int connections = 1;
    std::string target = "/";
    int timeout_s = 60;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view flag = argv[i];
        if (flag == "--port")
            port = static_cast<unsigned short>(std::atoi(argv[i + 1]));
        else if (flag == "--connections")
            connections = std::atoi(argv[i + 1]);
        else if (flag == "--target")
            target = argv[i + 1];
        else if (flag == "--timeout-s")
            timeout_s = std::atoi(argv[i + 1]);
    }

    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);

    asio::io_context ioc{1};
    int connected = 0, answered = 0, ok = 0, failed = 0;
    const asio::ip::tcp::endpoint server{asio::ip::make_address("127.0.0.1"), port};
    for (int i = 0; i < connections; ++i)
        asio::co_spawn(
            ioc,
            [&]() -> asio::awaitable<void> {
                beast::tcp_stream stream{ioc};
                stream.expires_after(std::chrono::seconds(timeout_s));
                try {
                    co_await stream.async_connect(server, asio::use_awaitable);
                    http::request<http::empty_body> req{http::verb::get, target, 11};
                    req.set(http::field::host, "load");
                    co_await http::async_write(stream, req, asio::use_awaitable);
                    if (++connected == connections)
                        std::cout << "connected " << connected << std::endl;
                    beast::flat_buffer buffer;
                    http::response<http::string_body> res;
                    co_await http::async_read(stream, buffer, res, asio::use_awaitable);
                    ++answered;
                    if (res.result() == http::status::ok)
                        ++ok;
                }
                catch (const std::exception& e) {
                    if (failed++ == 0)
                        std::cerr << "plinth-load: " << e.what() << "\n";
                }
            },
            asio::detached);
    ioc.run();
    std::cout << "answered " << answered << " status_200 " << ok << " failed " << failed << std::endl;
    return ok == connections ? 0 : 1;
}
