//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_SERVER_HPP
#define PLINTH_SERVER_HPP

// The HTTP/1.1 server: an acceptor and its connections on the user's io_context, one strand per
// connection. The server owns no thread: run the io_context on as many threads as you like.

#include <plinth/detail/connection.hpp>
#include <plinth/http.hpp>
#include <plinth/router.hpp>
#include <plinth/server_options.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <vector>

namespace plinth {

/// An HTTP/1.0 and 1.1 server: keep-alive, pipelining, `Date` and `Server` headers, 400 and close
/// for a malformed request, graceful stop.
///
/// ```
/// asio::io_context ioc{1};
/// plinth::server srv{ioc, {.port = 8080}};
/// srv.routes({{http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello"); }}});
/// srv.start();
/// ioc.run();
/// ```
class server {
public:
    /// A server that will run on `ioc`. Nothing is bound until `start`.
    explicit server(asio::io_context& ioc, server_options options = {})
        : ioc_(ioc)
        , acceptor_(std::make_shared<asio::ip::tcp::acceptor>(asio::make_strand(ioc)))
    {
        core_ = std::make_shared<detail::server_core>(acceptor_->get_executor(), std::move(options));
    }

    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Stops accepting; connections still open finish on their own (see `stop`).
    ~server() { stop(); }

    /// Sets the route table. Throws `std::invalid_argument` for conflicting or malformed routes.
    /// Call before `start`.
    server& routes(std::vector<route> table) { return routes(router(std::move(table))); }

    /// Sets the route table. Call before `start`.
    server& routes(router r)
    {
        before_start("routes");
        router_ = std::make_shared<const router>(std::move(r));
        return *this;
    }

    /// Adds an interceptor that every request passes through before the router, in the order
    /// added. Call before `start`.
    server& use(interceptor i)
    {
        before_start("use");
        if (!i.valid())
            throw std::invalid_argument("plinth::server::use: an interceptor needs a name and at least one stage");
        global_.push_back(std::move(i));
        return *this;
    }

    /// Binds, listens and starts accepting. Throws `boost::system::system_error` when the address
    /// cannot be bound.
    void start()
    {
        before_start("start");
        std::vector<interceptor> all = global_;
        // The chain keeps the route table alive for as long as a connection may run it.
        all.push_back({.name = "plinth::router", .enter = [r = router_](context& c) { r->route_request(c); }});
        core_->chain = chain(std::move(all));

        asio::ip::tcp::endpoint endpoint{asio::ip::make_address(core_->options.address), core_->options.port};
        acceptor_->open(endpoint.protocol());
        acceptor_->set_option(asio::socket_base::reuse_address(true));
        acceptor_->bind(endpoint);
        acceptor_->listen(asio::socket_base::max_listen_connections);
        endpoint_ = acceptor_->local_endpoint();
        started_ = true;
        asio::co_spawn(acceptor_->get_executor(), accept(core_, acceptor_, ioc_), [core = core_](std::exception_ptr e) {
            if (e)
                core->log(log_level::error, "accept loop ended by an exception: " + detail::describe(e));
        });
    }

    /// Stops gracefully, from any thread, with `options().shutdown_grace`; see `async_stop`.
    void stop() { stop(core_->options.shutdown_grace); }

    /// Stops gracefully, from any thread; see `async_stop`. `io_context::run` returns once all
    /// is done.
    void stop(std::chrono::milliseconds grace) { begin_stop(core_, acceptor_, grace, {}); }

    /// Stops gracefully, from any thread, and completes (`void()`) once every connection is gone:
    /// accepting stops at once and idle connections close; requests in flight have `grace` to
    /// finish (their responses carry `Connection: close`); then every request still suspended or
    /// waiting is answered 503 with `Retry-After: options().shutdown_retry_after` (on_complete
    /// fires) and connections still reading a request are closed. A second call does not restart
    /// the grace; it completes with the first. Like any Asio operation it completes through the
    /// io_context, which must be running (or run again after `restart`). From a thread that does
    /// not run the io_context: `srv.async_stop(5s, asio::use_future).wait()`.
    template <class CompletionToken = asio::default_completion_token_t<asio::any_io_executor>>
    auto async_stop(std::chrono::milliseconds grace, CompletionToken&& token = {})
    {
        return asio::async_initiate<CompletionToken, void()>(
            [core = core_, acceptor = acceptor_, grace](auto handler) {
                begin_stop(core, acceptor, grace, asio::any_completion_handler<void()>(std::move(handler)));
            },
            token);
    }

    /// The bound endpoint (after `start`; it stays readable after `stop`).
    asio::ip::tcp::endpoint local_endpoint() const noexcept { return endpoint_; }

    /// The bound port (after `start`): the one the OS picked when `port` was 0.
    std::uint16_t port() const noexcept { return endpoint_.port(); }

    /// The counters, now.
    server_stats stats() const noexcept
    {
        const auto& s = core_->policy.stats;
        return {core_->connections.size(), core_->accepted.load(), core_->requests.load(), s.suspended.load(),
                s.resumed.load(),          s.cancelled.load(),     s.timed_out.load(),     s.disconnected.load(),
                s.completed.load(),        core_->refused.load(),  core_->rejected.load(), core_->timeouts.load(),
                s.streams.load()};
    }

    const server_options& options() const noexcept { return core_->options; }

private:
    // Static: a deferred async_stop may be launched after the server object is gone.
    static void begin_stop(const std::shared_ptr<detail::server_core>& core,
                           const std::shared_ptr<asio::ip::tcp::acceptor>& acceptor, std::chrono::milliseconds grace,
                           asio::any_completion_handler<void()> handler) // may be empty
    {
        asio::post(acceptor->get_executor(), [acceptor] {
            beast::error_code ignored;
            acceptor->close(ignored);
        });
        core->stop(grace, std::move(handler));
    }

    void before_start(const char* what) const
    {
        if (started_)
            throw std::logic_error(std::string("plinth::server::") + what + ": the server has already started");
    }

    static asio::awaitable<void> accept(std::shared_ptr<detail::server_core> core,
                                        std::shared_ptr<asio::ip::tcp::acceptor> acceptor, asio::io_context& ioc)
    {
        for (;;) {
            // One strand per connection, unless one thread runs everything anyway.
            const asio::any_io_executor ex = core->options.single_threaded
                ? asio::any_io_executor(ioc.get_executor())
                : asio::any_io_executor(asio::make_strand(ioc));
            // The socket's executor is the io_context's: see detail::tcp_socket.
            auto [ec, socket] =
                co_await acceptor->async_accept(ioc.get_executor(), asio::as_tuple(asio::use_awaitable));
            if (!acceptor->is_open())
                co_return;
            if (ec) {
                if (ec == asio::error::operation_aborted)
                    co_return;
                // Out of descriptors and the like: back off briefly instead of spinning on accept.
                core->log(log_level::warning, "accept failed: " + ec.message());
                asio::steady_timer backoff{acceptor->get_executor(), std::chrono::milliseconds(50)};
                co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
                continue;
            }
            ++core->accepted;
            beast::error_code ignored;
            socket.set_option(asio::ip::tcp::no_delay(true), ignored);
            if (core->connections.size() >= core->options.max_connections) {
                ++core->refused;
                asio::co_spawn(ex, detail::refuse(core, std::move(socket)), asio::detached);
                continue;
            }
            std::make_shared<detail::connection<detail::tcp_socket>>(core, std::move(socket), ex)->start();
        }
    }

    asio::io_context& ioc_;
    std::shared_ptr<asio::ip::tcp::acceptor> acceptor_;
    std::shared_ptr<detail::server_core> core_;
    std::vector<interceptor> global_;
    std::shared_ptr<const router> router_ = std::make_shared<const router>();
    asio::ip::tcp::endpoint endpoint_;
    bool started_ = false;
};

} // namespace plinth

#endif
