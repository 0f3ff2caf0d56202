//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_EXACT_ALLOCATOR_HPP
#define PLINTH_DETAIL_EXACT_ALLOCATOR_HPP

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/system_executor.hpp>

#include <memory>
#include <type_traits>
#include <utility>

namespace plinth::detail {

/// `std::allocator` under another name, for the operations a suspended request keeps pending.
///
/// Asio allocates an operation whose handler has the default allocator from a per-thread cache
/// of recycled blocks, which hands out whatever freed block is big enough: an operation of 100
/// bytes may hold a 336-byte block (an accept's) for as long as the request waits. That is the
/// right trade for short operations; for thousands of requests suspended for minutes, an
/// allocation of the exact size is.
template <class T>
struct exact_allocator : std::allocator<T> {
    using value_type = T;

    exact_allocator() noexcept = default;
    template <class U>
    exact_allocator(const exact_allocator<U>&) noexcept
    {
    }

    template <class U>
    struct rebind {
        using other = exact_allocator<U>;
    };

    template <class U>
    friend bool operator==(const exact_allocator&, const exact_allocator<U>&) noexcept
    {
        return true;
    }
};

/// A handler with exact_allocator as its associated allocator. Unlike `asio::bind_allocator`,
/// whose empty allocator member still takes room, the wrapper is the handler's size: each
/// suspended request keeps three such handlers, and a few bytes decide which malloc bin holds
/// them. The handler may have no associated executor or cancellation slot of its own (they
/// would be hidden): the handlers wrapped here are lambdas.
template <class Handler>
class exact_handler {
public:
    using allocator_type = exact_allocator<void>;

    explicit exact_handler(Handler h) noexcept(std::is_nothrow_move_constructible_v<Handler>)
        : handler_(std::move(h))
    {
    }

    allocator_type get_allocator() const noexcept { return {}; }

    template <class... Args>
    decltype(auto) operator()(Args&&... args) &&
    {
        return std::move(handler_)(std::forward<Args>(args)...);
    }

    template <class... Args>
    decltype(auto) operator()(Args&&... args) &
    {
        return handler_(std::forward<Args>(args)...);
    }

private:
    Handler handler_;
};

/// `handler`, allocated to size when it is a long wait's (see exact_allocator).
template <class Handler>
auto exactly_allocated(Handler&& handler)
{
    using plain = std::decay_t<Handler>;
    static_assert(std::is_same_v<boost::asio::associated_executor_t<plain, boost::asio::system_executor>,
                                 boost::asio::system_executor>,
                  "exactly_allocated would hide the handler's executor");
    static_assert(std::is_same_v<boost::asio::associated_cancellation_slot_t<plain>, boost::asio::cancellation_slot>,
                  "exactly_allocated would hide the handler's cancellation slot");
    static_assert(sizeof(exact_handler<plain>) == sizeof(plain), "the wrapper adds nothing to the handler");
    return exact_handler<plain>(std::forward<Handler>(handler));
}

} // namespace plinth::detail

#endif
