//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// perf-restinio-server: RESTinio 0.6 (Debian's librestinio-dev) on Boost.Asio, written the way
// its documentation and samples write a server: an express router, settings set through the
// fluent server_settings_t, the stock traits (single-threaded ones, without strands or locks,
// when --threads is 1, as restinio::on_this_thread() picks; the multi-threaded ones otherwise).
//
// Three things differ from the samples, each so the benchmark measures RESTinio rather than a
// default that would make it fail or misreport:
//  - max_pipelined_requests is 32, not the default 1. In 0.6.16 a pipeline more than a request
//    or two deeper than max_pipelined_requests is not answered in turn: with the response table
//    full RESTinio reads on anyway, fails with "response_context_table is full" and drops the
//    connection (with the default 1, any pipeline of three requests). wrk's depth 16 needs 16;
//    32 leaves room. concurrent_accepts_count is the thread count, as RESTinio advises for a
//    pool. The acceptor already listens with SOMAXCONN, and RESTinio has no connection limit
//    unless its traits ask for one.
//  - TCP_NODELAY is set on each connection, as plinth and the Beast peer set it.
//  - restinio::run_async instead of restinio::run: run() stops on SIGINT only, and says nothing
//    once it is listening. run_async returns once the server listens, so the "listening" line
//    is printed after listen(), and the main thread then waits for SIGINT or SIGTERM itself.
//
//   perf-restinio-server --port P [--threads 1]
//
// GET /hello        200 text/plain "Hello, World!"
// anything else     404

#ifndef RESTINIO_USE_BOOST_ASIO
#define RESTINIO_USE_BOOST_ASIO
#endif
#include <restinio/all.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string_view>

namespace {

unsigned number(std::string_view text)
{
    unsigned v = 0;
    std::from_chars(text.data(), text.data() + text.size(), v);
    return v;
}

using router_t = restinio::router::express_router_t<>;

std::unique_ptr<router_t> make_router()
{
    auto router = std::make_unique<router_t>();
    router->http_get("/hello", [](auto req, auto) {
        return req->create_response()
            .append_header(restinio::http_field::server, "restinio")
            .append_header(restinio::http_field::content_type, "text/plain")
            .set_body("Hello, World!")
            .done();
    });
    router->non_matched_request_handler([](auto req) {
        return req->create_response(restinio::status_not_found())
            .append_header(restinio::http_field::server, "restinio")
            .append_header(restinio::http_field::content_type, "text/plain")
            .set_body("Not Found")
            .done();
    });
    return router;
}

template <typename Traits>
int serve(std::uint16_t port, unsigned threads)
{
    std::uint16_t bound = port;
    auto server = restinio::run_async<Traits>(
        restinio::own_io_context(),
        restinio::server_settings_t<Traits>{}
            .address("127.0.0.1")
            .port(port)
            .request_handler(make_router())
            .max_pipelined_requests(32)
            .concurrent_accepts_count(threads)
            .socket_options_setter(
                [](auto& options) { options.set_option(restinio::asio_ns::ip::tcp::no_delay(true)); })
            .acceptor_post_bind_hook([&bound](auto& acceptor) { bound = acceptor.local_endpoint().port(); }),
        threads);
    std::cout << "perf-restinio-server listening on 127.0.0.1:" << bound << std::endl;

    // SIGINT and SIGTERM are blocked in every thread (the pool inherited the mask): take them here.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    int signal = 0;
    sigwait(&stop_signals, &signal);
    server->stop();
    server->wait();
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    std::uint16_t port = 0;
    unsigned threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view flag = argv[i];
        if (flag == "--port")
            port = static_cast<std::uint16_t>(number(argv[i + 1]));
        else if (flag == "--threads")
            threads = std::max(1u, number(argv[i + 1]));
    }

    // A thousand connections need more descriptors than the usual soft limit of 1024.
    if (rlimit lim{}; getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }

    // Blocked before the server's threads start, so they inherit the mask and sigwait gets them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    using single_thread_traits =
        restinio::single_thread_traits_t<restinio::asio_timer_manager_t, restinio::null_logger_t, router_t>;
    using pool_traits = restinio::traits_t<restinio::asio_timer_manager_t, restinio::null_logger_t, router_t>;
    return threads == 1 ? serve<single_thread_traits>(port, threads) : serve<pool_traits>(port, threads);
}
