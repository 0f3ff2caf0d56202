//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_WALK_LIST_HPP
#define PLINTH_DETAIL_WALK_LIST_HPP

#include <boost/container/small_vector.hpp>

#include <cstddef>

namespace plinth::detail {

/// The interceptors of one run, in order, kept as runs of consecutive addresses: a chain's own
/// interceptors and a route's (enqueue_ref) each take one entry however long they are, so a
/// request in flight carries a few spans rather than a pointer per interceptor.
template <class Interceptor>
class walk_list {
public:
    std::size_t size() const noexcept
    {
        std::size_t n = 0;
        for (const auto& s : spans_) // two, most often: cheaper to add up than to carry
            n += s.size;
        return n;
    }

    const Interceptor* operator[](std::size_t k) const noexcept
    {
        for (const auto& s : spans_) {
            if (k < s.size)
                return s.first + k;
            k -= s.size;
        }
        return nullptr; // past the end: never asked for
    }

    // Appends the `n` interceptors of one array, from `first` on. (Spans are never merged:
    // addresses that follow each other in two arrays are still two arrays.)
    void append(const Interceptor* first, std::size_t n)
    {
        if (n > 0)
            spans_.push_back({first, n});
    }

    void push_back(const Interceptor* p) { append(p, 1); }

    // Puts `p` before the element at `at` (at the end when `at == size()`). Strong guarantee:
    // the room is made before anything changes.
    void insert(std::size_t at, const Interceptor* p)
    {
        spans_.reserve(spans_.size() + 2);
        auto it = spans_.begin();
        for (; it != spans_.end() && at >= it->size; ++it)
            at -= it->size;
        if (it == spans_.end())
            return push_back(p);
        if (at > 0) { // split the span around the new element
            const span tail{it->first + at, it->size - at};
            it->size = at;
            it = spans_.insert(it + 1, tail);
        }
        spans_.insert(it, span{p, 1});
    }

    // Keeps the first `n` elements.
    void truncate(std::size_t n) noexcept
    {
        auto it = spans_.begin();
        for (; it != spans_.end() && n > 0; ++it) {
            if (n < it->size)
                it->size = n;
            n -= it->size;
        }
        spans_.erase(it, spans_.end());
    }

private:
    struct span {
        const Interceptor* first;
        std::size_t size;
    };
    boost::container::small_vector<span, 2> spans_; // a chain's and a route's
};

} // namespace plinth::detail

#endif
