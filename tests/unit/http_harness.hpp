// One HTTP request run through a plinth::chain on an io_context, without sockets: shared by
// the unit tests of the HTTP layer and the router.
#ifndef PLINTH_TESTS_HTTP_HARNESS_HPP
#define PLINTH_TESTS_HTTP_HARNESS_HPP

#include <plinth/http.hpp>

#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>

#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace plinth_test {

/// One request run through a plinth::chain on an io_context.
struct harness {
    boost::asio::io_context ioc;
    boost::asio::any_io_executor executor = ioc.get_executor(); // as a connection keeps its strand
    plinth::detail::exchange ex;

    harness(boost::beast::http::verb method, std::string_view target, std::string body = {})
    {
        ex.request = plinth::request{method, target, 11};
        ex.request.body() = std::move(body);
        ex.executor = &executor;
    }

    plinth::context context() { return plinth::detail::make_context(ex); }

    plinth::context run(const plinth::chain& chain)
    {
        std::optional<plinth::context> out;
        std::exception_ptr failure;
        chain.async_execute(ioc.get_executor(), plinth::detail::make_context(ex),
                            [&](std::exception_ptr e, plinth::context c) {
                                failure = e;
                                out = std::move(c);
                            });
        ioc.run();
        ioc.restart();
        REQUIRE_FALSE(failure);
        REQUIRE(out.has_value());
        return std::move(*out);
    }
};

} // namespace plinth_test

#endif
