//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// A translation unit that only defines handlers and routes, as an application's route files do:
// tests/perf/run times its compilation beside the minimal Beast server's. It must not need the
// connection (a test checks that it does not include it).

#include <plinth/router.hpp>

#include <boost/asio/steady_timer.hpp>

#include <string>
#include <vector>

namespace http = boost::beast::http;

std::vector<plinth::route> application_routes()
{
    plinth::interceptor timing{.name = "timing", .leave = [](plinth::context& c) {
                                   if (c.response)
                                       c.response->set("X-Served-By", "plinth");
                               }};
    return {
        {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello"); }},
        {http::verb::get, "/users/{id}", {timing},
         [](const plinth::context& c) { return plinth::json("{\"id\":\"" + std::string(c.param("id")) + "\"}"); }},
        {http::verb::get, "/slow",
         [](plinth::request) -> boost::asio::awaitable<plinth::response> {
             boost::asio::steady_timer t{co_await boost::asio::this_coro::executor, std::chrono::seconds(1)};
             co_await t.async_wait(boost::asio::use_awaitable);
             co_return plinth::text("done");
         }},
        {http::verb::get, "/later", [](const plinth::request&, plinth::async_response ar) { ar.cancel(); }},
        {http::verb::get, "/events", [](const plinth::request&, plinth::sse_stream s) { s.close(); }},
    };
}
