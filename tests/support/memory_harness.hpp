//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_TESTS_MEMORY_HARNESS_HPP
#define PLINTH_TESTS_MEMORY_HARNESS_HPP

// Plinth's HTTP/1 connection over the in-memory transport: what a server would set up (its
// shared core, the chain with a router), without an acceptor or a socket. Shared by the unit
// tests of the connection and by the fuzzer.

#include "memory_stream.hpp"

#include <plinth/detail/connection.hpp>
#include <plinth/router.hpp>

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <memory>
#include <utility>
#include <vector>

namespace plinth_test {

/// Connections over memory streams, served by one io_context that the caller runs.
class memory_server {
public:
    explicit memory_server(std::vector<plinth::route> routes, plinth::server_options options = {},
                           std::vector<plinth::interceptor> interceptors = {})
        : router_(std::make_shared<const plinth::router>(std::move(routes)))
    {
        core_ = std::make_shared<plinth::detail::server_core>(ioc_.get_executor(), std::move(options));
        interceptors.push_back(
            {.name = "plinth::router", .enter = [r = router_](plinth::context& c) { r->route_request(c); }});
        core_->chain = plinth::chain(std::move(interceptors));
    }

    memory_server(const memory_server&) = delete;
    memory_server& operator=(const memory_server&) = delete;

    ~memory_server()
    {
        stop();
        ioc_.run_for(std::chrono::seconds(5));
    }

    asio::io_context& ioc() noexcept { return ioc_; }
    plinth::detail::server_core& core() noexcept { return *core_; }

    /// Opens a connection and returns the client's end of it.
    memory_stream connect(std::shared_ptr<fail_count> fc = nullptr, std::size_t capacity = 1 << 20)
    {
        auto [client, server] = memory_stream::pair(ioc_, std::move(fc), capacity);
        auto c = std::make_shared<connection>(core_, std::move(server), ioc_.get_executor());
        c->start();
        last_ = c;
        return std::move(client);
    }

    /// The connection `connect` opened last, while it lives.
    std::shared_ptr<plinth::detail::connection<memory_stream>> last_connection() const { return last_.lock(); }

    /// Runs the io_context until `done()` holds (true) or `limit` passed (false).
    template <class Done>
    bool run_until(Done&& done, std::chrono::steady_clock::duration limit = std::chrono::seconds(5))
    {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        while (!done()) {
            if (std::chrono::steady_clock::now() >= deadline)
                return false;
            if (ioc_.run_one_for(std::chrono::milliseconds(10)) == 0 && ioc_.stopped())
                ioc_.restart();
        }
        return true;
    }

    /// Connections open now.
    std::uint64_t connections() const noexcept { return core_->connections.size(); }

    /// Stops the server's connections gracefully, with no grace.
    void stop() { core_->stop(std::chrono::milliseconds(0), {}); }

private:
    using connection = plinth::detail::connection<memory_stream>;

    asio::io_context ioc_{1};
    std::weak_ptr<connection> last_;
    std::shared_ptr<const plinth::router> router_;
    std::shared_ptr<plinth::detail::server_core> core_;
};

} // namespace plinth_test

#endif
