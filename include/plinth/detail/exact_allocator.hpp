//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_EXACT_ALLOCATOR_HPP
#define PLINTH_DETAIL_EXACT_ALLOCATOR_HPP

#include <boost/asio/bind_allocator.hpp>

#include <memory>
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

/// `handler`, allocated to size when it is a long wait's (see exact_allocator).
template <class Handler>
auto exactly_allocated(Handler&& handler)
{
    return boost::asio::bind_allocator(exact_allocator<void>(), std::forward<Handler>(handler));
}

} // namespace plinth::detail

#endif
