//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// perf-httplib-server: cpp-httplib (Debian's libcpp-httplib-dev) as its users run it, with every
// default left alone: above all the thread pool (CPPHTTPLIB_THREAD_POOL_COUNT, max(8, cores - 1)),
// because what this peer shows is a thread-per-request server starving: GET /wait sleeps on a
// pool thread, where plinth's /wait suspends on a timer and holds no thread. --threads is
// accepted for a common command line and ignored.
//
//   perf-httplib-server --port P [--threads N]
//
// GET /hello        200 text/plain "Hello, World!"
// GET /wait?ms=N    200 "waited" after std::this_thread::sleep_for(N ms), holding a pool thread
// anything else     404 (httplib's own)

#include <httplib.h>

#include <sys/resource.h>

#include <charconv>
#include <chrono>
#include <csignal>
#include <iostream>
#include <string_view>
#include <thread>

namespace {

unsigned number(std::string_view text)
{
    unsigned v = 0;
    std::from_chars(text.data(), text.data() + text.size(), v);
    return v;
}

} // namespace

int main(int argc, char** argv)
{
    int port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string_view flag = argv[i];
        if (flag == "--port")
            port = static_cast<int>(number(argv[i + 1]));
    }

    // A thousand connections need more descriptors than the usual soft limit of 1024.
    if (rlimit lim{}; getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }

    // Blocked before httplib's threads start, so they inherit the mask and sigwait below gets them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    httplib::Server server;
    // The one setting changed, as plinth and the other peers set it: httplib sends a response's
    // header and body in separate writes, and without TCP_NODELAY the body waits on Nagle for
    // the client's delayed ACK, about 40 ms per request, which is not what this peer is for.
    server.set_tcp_nodelay(true);
    server.Get("/hello",
               [](const httplib::Request&, httplib::Response& res) { res.set_content("Hello, World!", "text/plain"); });
    server.Get("/wait", [](const httplib::Request& req, httplib::Response& res) {
        std::this_thread::sleep_for(std::chrono::milliseconds(number(req.get_param_value("ms"))));
        res.set_content("waited", "text/plain");
    });

    // bind_to_port also listens, so the line below is printed once connections are accepted.
    if (port == 0)
        port = server.bind_to_any_port("127.0.0.1");
    else if (!server.bind_to_port("127.0.0.1", port))
        port = -1;
    if (port < 0) {
        std::cerr << "perf-httplib-server: cannot listen on 127.0.0.1\n";
        return 1;
    }
    std::cout << "perf-httplib-server listening on 127.0.0.1:" << port << std::endl;

    std::thread listener{[&server] { server.listen_after_bind(); }};
    int signal = 0;
    sigwait(&stop_signals, &signal);
    server.stop();
    listener.join();
    return 0;
}
