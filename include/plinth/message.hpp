//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_MESSAGE_HPP
#define PLINTH_MESSAGE_HPP

// HTTP messages as plinth reads and writes them: Beast's request and response with string
// bodies, the optional response a context carries, typed HTTP errors, and response builders.

#include <plinth/async_errors.hpp>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include <concepts>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace plinth {

namespace beast = boost::beast;
namespace http = boost::beast::http;

/// A request as plinth reads it: Beast's message with a `std::string` body.
using request = http::request<http::string_body>;

/// A response as plinth writes it. Version, keep-alive, `Date`, `Server` and `Content-Length` are
/// filled in by the server; a handler sets status, headers and body.
using response = http::response<http::string_body>;

/// Where a context keeps its response: a `std::optional<response>` in what it offers (and
/// convertible to and from one), except that the response lives on the heap. A context without a
/// response (a request still in the chain, a suspended one above all) then carries a pointer
/// instead of a whole response. The storage, once made, is kept for the next response:
/// `reset`, `= std::nullopt` and assigning a response keep it (a server reuses it for each
/// request of a connection), while assigning another `optional_response` (`= {}` included) takes
/// that one's storage. So a reference to the response lasts until the next such assignment, and
/// a moved-from `optional_response` is empty.
class optional_response {
public:
    optional_response() noexcept = default;
    optional_response(std::nullopt_t) noexcept {}
    optional_response(response r)
        : box_(std::make_unique<std::optional<response>>(std::move(r)))
    {
    }
    optional_response(std::optional<response> r)
    {
        if (r)
            box_ = std::make_unique<std::optional<response>>(std::move(r));
    }
    optional_response(const optional_response& other)
    {
        if (other)
            box_ = std::make_unique<std::optional<response>>(*other);
    }
    optional_response(optional_response&&) noexcept = default;
    ~optional_response() = default;

    optional_response& operator=(const optional_response& other)
    {
        if (!other)
            reset();
        else if (this != &other)
            *this = *other;
        return *this;
    }
    optional_response& operator=(optional_response&&) noexcept = default;
    optional_response& operator=(std::nullopt_t) noexcept
    {
        reset();
        return *this;
    }
    // A template, as std::optional's: `= {}` then empties it, and `= {status, version}` makes a
    // response.
    template <class R = response>
        requires(std::same_as<std::remove_cvref_t<R>, response>)
    optional_response& operator=(R&& r)
    {
        if (box_)
            *box_ = std::forward<R>(r);
        else
            box_ = std::make_unique<std::optional<response>>(std::forward<R>(r));
        return *this;
    }

    /// Makes the response in place from `args` (reusing the storage) and returns it.
    template <class... Args>
    response& emplace(Args&&... args)
    {
        if (!box_)
            box_ = std::make_unique<std::optional<response>>();
        return box_->emplace(std::forward<Args>(args)...);
    }

    /// Destroys the response, if any; the storage is kept for the next one.
    void reset() noexcept
    {
        if (box_)
            box_->reset();
    }

    /// Gives the storage back when there is no response (what a suspended request holds).
    void shrink_to_fit() noexcept
    {
        if (!has_value())
            box_.reset();
    }

    bool has_value() const noexcept { return box_ && box_->has_value(); }
    explicit operator bool() const noexcept { return has_value(); }

    response& operator*() & noexcept { return **box_; }
    const response& operator*() const& noexcept { return **box_; }
    response&& operator*() && noexcept { return std::move(**box_); }
    response* operator->() noexcept { return &**box_; }
    const response* operator->() const noexcept { return &**box_; }

    /// The response; throws `std::bad_optional_access` when there is none.
    response& value() &
    {
        check();
        return **box_;
    }
    const response& value() const&
    {
        check();
        return **box_;
    }
    response&& value() &&
    {
        check();
        return std::move(**box_);
    }

    /// The response, or `fallback` when there is none.
    response value_or(response fallback) const& { return has_value() ? **box_ : std::move(fallback); }
    response value_or(response fallback) && { return has_value() ? std::move(**box_) : std::move(fallback); }

    /// A copy as a `std::optional<response>`, or (from an rvalue) the response moved into one.
    operator std::optional<response>() const& { return has_value() ? std::optional<response>(**box_) : std::nullopt; }
    operator std::optional<response>() &&
    {
        return has_value() ? std::optional<response>(std::move(**box_)) : std::nullopt;
    }

    void swap(optional_response& other) noexcept { box_.swap(other.box_); }
    friend void swap(optional_response& a, optional_response& b) noexcept { a.swap(b); }

    friend bool operator==(const optional_response& r, std::nullopt_t) noexcept { return !r; }

private:
    void check() const
    {
        if (!has_value())
            throw std::bad_optional_access();
    }

    std::unique_ptr<std::optional<response>> box_;
};

// A context carries one for every request, a suspended one included: a pointer, no more.
static_assert(sizeof(optional_response) == sizeof(void*));

/// An error that maps to an HTTP status. Its public message is what the client sees, so write it
/// for the client; never put internals there.
class http_error : public std::runtime_error {
public:
    /// `public_message` defaults to the status' reason phrase.
    explicit http_error(http::status status, std::string public_message = {})
        : std::runtime_error(public_message.empty() ? std::string(http::obsolete_reason(status))
                                                    : std::move(public_message))
        , status_(status)
    {
    }

    http::status status() const noexcept { return status_; }

    /// The body sent to the client.
    std::string_view public_message() const noexcept { return what(); }

private:
    http::status status_;
};

/// A response with `status`, a body and its content type.
inline response make_response(http::status status, std::string body = {},
                              std::string_view content_type = "text/plain; charset=utf-8")
{
    response res{status, 11};
    if (!body.empty() || status != http::status::no_content)
        res.set(http::field::content_type, content_type);
    res.body() = std::move(body);
    return res;
}

/// 200 with a plain-text body.
inline response text(std::string body, http::status status = http::status::ok)
{
    return make_response(status, std::move(body));
}

/// 200 with a JSON body (already serialised: plinth has no JSON dependency).
inline response json(std::string body, http::status status = http::status::ok)
{
    return make_response(status, std::move(body), "application/json");
}

/// The response for an error no stage handled: an `http_error` keeps its status and public
/// message; anything else is a 500 whose body says nothing about the exception.
inline response error_response(const std::exception_ptr& e)
{
    try {
        if (e)
            std::rethrow_exception(e);
    }
    catch (const http_error& he) {
        return text(std::string(he.public_message()), he.status());
    }
    catch (const service_unavailable&) {
        return text("Service Unavailable", http::status::service_unavailable);
    }
    catch (...) {
    }
    return text("Internal Server Error", http::status::internal_server_error);
}

} // namespace plinth

#endif
