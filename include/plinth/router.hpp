//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_ROUTER_HPP
#define PLINTH_ROUTER_HPP

// Routes of method + path template + interceptors, matched segment by segment, literal segments
// before parameters. The router is itself an interceptor: it enqueues the matched route.

#include <plinth/handler.hpp>
#include <plinth/http.hpp>

#include <boost/beast/http/verb.hpp>
#include <boost/container/small_vector.hpp>

#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace plinth {

/// One route: a method, a path template such as `/users/{id}`, and the interceptors it runs,
/// the handler last.
class route {
public:
    /// A route answered by `h` alone.
    template <handler H>
    route(http::verb method, std::string path, H h)
        : route(method, std::move(path), {}, std::move(h))
    {
    }

    /// A route running `interceptors`; one of them (usually the last) sets the response.
    route(http::verb method, std::string path, std::vector<interceptor> interceptors)
        : method_(method)
        , path_(std::move(path))
        , interceptors_(std::move(interceptors))
    {
        for (const auto& i : interceptors_)
            if (!i.valid())
                throw std::invalid_argument("plinth::route " + name() + ": interceptor '" + i.name
                                            + "' needs a name and at least one stage");
    }

    /// A route running `interceptors`, then handler `h`.
    template <handler H>
    route(http::verb method, std::string path, std::vector<interceptor> interceptors, H h)
        : route(method, std::move(path), std::move(interceptors))
    {
        interceptors_.push_back(make_handler(name(), std::move(h)));
    }

    http::verb method() const noexcept { return method_; }
    const std::string& path() const noexcept { return path_; }
    const std::vector<interceptor>& interceptors() const noexcept { return interceptors_; }

    /// "GET /users/{id}": how errors and logs name the route.
    std::string name() const { return std::string(http::to_string(method_)) + " " + path_; }

private:
    http::verb method_;
    std::string path_;
    std::vector<interceptor> interceptors_;
};

/// A route table. Built once, then read concurrently by every connection.
///
/// Matching: a request path is split into segments, each percent-decoded; a literal segment of a
/// template beats a `{param}` at the same position, and the first route (by that order) that has
/// the request's method wins. A path that some route matches but not with this method gets 405
/// with `Allow`; no match at all gets 404. HEAD is served by the GET route when there is no HEAD
/// route (the server drops the body).
class router {
public:
    /// Outcome of `match`.
    struct match_result {
        const plinth::route* route = nullptr; ///< the route, when one matched path and method
        path_params params;                   ///< its captured parameters
        std::string allow;                    ///< the Allow header, when the method was wrong
    };

    router() = default;

    /// Builds the table. Throws `std::invalid_argument` for a malformed template or for two routes
    /// that match the same requests, naming both.
    explicit router(std::vector<route> routes)
        : routes_(std::move(routes))
        , root_(std::make_unique<node>())
    {
        for (std::size_t i = 0; i < routes_.size(); ++i)
            insert(i);
    }

    router(router&&) noexcept = default;
    router& operator=(router&&) noexcept = default;

    const std::vector<route>& routes() const noexcept { return routes_; }

    /// Finds the route for `method` and `path` (a path, without query). Throws `http_error` 400
    /// for a malformed percent-escape.
    match_result match(http::verb method, std::string_view path) const
    {
        match_result result;
        if (!root_ || path.empty() || path.front() != '/')
            return result;

        segment_list segments;
        for (auto rest = path.substr(1);;) {
            auto slash = rest.find('/');
            auto decoded = detail::percent_decode(rest.substr(0, slash));
            if (!decoded)
                throw http_error(http::status::bad_request, "Malformed percent-encoding in the path");
            segments.push_back(std::move(*decoded));
            if (slash == std::string_view::npos)
                break;
            rest = rest.substr(slash + 1);
        }

        value_list values;
        unsigned allowed = 0; // bit per verb index in method_order
        const route* found = nullptr;
        value_list found_values;
        visit(*root_, segments, 0, values, [&](const node& n, const value_list& v) {
            if (auto r = n.find(method, method == http::verb::head)) {
                found = &routes_[*r];
                found_values = v;
                return true;
            }
            for (const auto& [verb, index] : n.methods)
                allowed |= 1u << order_of(verb);
            return false;
        });

        if (found) {
            result.route = found;
            const auto& names = names_of_[static_cast<std::size_t>(found - routes_.data())];
            for (std::size_t i = 0; i < names.size(); ++i)
                result.params.add(names[i], *found_values[i]);
        }
        else if (allowed) {
            if (allowed & (1u << order_of(http::verb::get)))
                allowed |= 1u << order_of(http::verb::head);
            for (std::size_t i = 0; i < method_order.size(); ++i)
                if (allowed & (1u << i)) {
                    if (!result.allow.empty())
                        result.allow += ", ";
                    result.allow += http::to_string(method_order[i]);
                }
        }
        return result;
    }

    /// The router as an interceptor: on enter it matches the request, stores the path parameters
    /// and enqueues the route's interceptors, or sets a 404/405 response. The router must outlive
    /// every execution that uses the interceptor (the server owns it).
    interceptor as_interceptor() const
    {
        return {.name = "plinth::router", .enter = [this](context& c) { route_request(c); }};
    }

    /// What `as_interceptor` does on enter. A method no route may use (an extension method, or
    /// one Beast does not know) is answered 501 (RFC 9110 9.1).
    void route_request(context& c) const
    {
        const auto method = c.request().method();
        if (std::find(method_order.begin(), method_order.end(), method) == method_order.end()) {
            c.response = text("Not Implemented", http::status::not_implemented);
            return;
        }
        auto m = match(method, c.path());
        if (m.route) {
            c.params() = std::move(m.params);
            enqueue_ref(c, std::span<const interceptor>(m.route->interceptors()));
        }
        else if (!m.allow.empty()) {
            c.response = text("Method Not Allowed", http::status::method_not_allowed);
            c.response->set(http::field::allow, m.allow);
        }
        else
            c.response = text("Not Found", http::status::not_found);
    }

private:
    // A path's decoded segments and the parameter values among them: inline up to 8, so matching
    // a request allocates nothing.
    using segment_list = boost::container::small_vector<std::string, 8>;
    using value_list = boost::container::small_vector<const std::string*, 8>;

    // Every method a route may use, in the order Allow lists them.
    static constexpr std::array method_order{http::verb::get,     http::verb::head,  http::verb::post,
                                             http::verb::put,     http::verb::patch, http::verb::delete_,
                                             http::verb::options, http::verb::trace, http::verb::connect};

    static unsigned order_of(http::verb v)
    {
        auto it = std::find(method_order.begin(), method_order.end(), v);
        return static_cast<unsigned>(it - method_order.begin());
    }

    struct node {
        std::vector<std::pair<std::string, std::unique_ptr<node>>> literals;
        std::unique_ptr<node> param;
        std::vector<std::pair<http::verb, std::size_t>> methods; // verb -> index into routes_

        std::optional<std::size_t> find(http::verb v, bool head_falls_back_to_get) const
        {
            for (const auto& [verb, index] : methods)
                if (verb == v)
                    return index;
            if (head_falls_back_to_get)
                return find(http::verb::get, false);
            return std::nullopt;
        }
    };

    template <class F>
    static bool visit(const node& n, const segment_list& segments, std::size_t at, value_list& values, F&& f)
    {
        if (at == segments.size())
            return !n.methods.empty() && f(n, values);
        const auto& seg = segments[at];
        for (const auto& [literal, child] : n.literals)
            if (literal == seg && visit(*child, segments, at + 1, values, f))
                return true;
        if (n.param && !seg.empty()) {
            values.push_back(&seg);
            if (visit(*n.param, segments, at + 1, values, f))
                return true;
            values.pop_back();
        }
        return false;
    }

    void insert(std::size_t index)
    {
        const route& r = routes_[index];
        const std::string& path = r.path();
        auto fail = [&](const std::string& why) {
            throw std::invalid_argument("plinth::router: route '" + r.name() + "': " + why);
        };
        if (path.empty() || path.front() != '/')
            fail("the path must start with '/'");
        if (std::find(method_order.begin(), method_order.end(), r.method()) == method_order.end())
            fail("unsupported method");
        if (r.interceptors().empty())
            fail("no interceptor or handler");

        std::vector<std::string_view> names;
        node* n = root_.get();
        for (std::string_view rest = std::string_view(path).substr(1);;) {
            auto slash = rest.find('/');
            auto seg = rest.substr(0, slash);
            if (seg.size() >= 2 && seg.front() == '{' && seg.back() == '}') {
                auto name = seg.substr(1, seg.size() - 2);
                if (name.empty() || name.find_first_of("{}") != std::string_view::npos)
                    fail("malformed parameter '" + std::string(seg) + "'");
                if (std::find(names.begin(), names.end(), name) != names.end())
                    fail("parameter '" + std::string(name) + "' appears twice");
                names.push_back(name);
                if (!n->param)
                    n->param = std::make_unique<node>();
                n = n->param.get();
            }
            else {
                if (seg.find_first_of("{}") != std::string_view::npos)
                    fail("a parameter must be a whole segment, as in /users/{id}");
                auto it =
                    std::find_if(n->literals.begin(), n->literals.end(), [&](const auto& l) { return l.first == seg; });
                if (it == n->literals.end()) {
                    n->literals.emplace_back(std::string(seg), std::make_unique<node>());
                    it = std::prev(n->literals.end());
                }
                n = it->second.get();
            }
            if (slash == std::string_view::npos)
                break;
            rest = rest.substr(slash + 1);
        }
        if (auto other = n->find(r.method(), false))
            fail("conflicts with route '" + routes_[*other].name() + "': both match the same requests");
        n->methods.emplace_back(r.method(), index);
        names_of_.push_back(std::move(names));
    }

    std::vector<route> routes_;
    std::vector<std::vector<std::string_view>> names_of_; // parameter names per route, views into routes_
    std::unique_ptr<node> root_;
};

} // namespace plinth

#endif
