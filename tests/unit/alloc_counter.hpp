//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_TESTS_ALLOC_COUNTER_HPP
#define PLINTH_TESTS_ALLOC_COUNTER_HPP

// Counts heap allocations made through the global operator new (every overload: plain, array,
// nothrow, aligned) and through C's aligned_alloc, which Asio's recycling allocator calls directly
// for its handlers, operations and awaitable coroutine frames: without it every Asio allocation
// would go unseen. For tests that assert a path does not allocate.
//
// Link alloc_counter.cpp into the test executable: it replaces the global operators and
// interposes aligned_alloc. The count is process-wide (all threads), so measure while no other
// thread is working. Inside io_context::run, Asio serves small blocks from a per-thread cache
// filled by earlier allocations: a recycled block is not a new allocation and is not counted.

#include <cstddef>

namespace plinth_test {

/// Allocations made through the global operator new or aligned_alloc since the program started.
std::size_t allocation_count() noexcept;

/// Counts the allocations made between its construction and each call to `allocations()`.
struct allocation_scope {
    allocation_scope() noexcept;
    allocation_scope(const allocation_scope&) = delete;
    allocation_scope& operator=(const allocation_scope&) = delete;

    /// Allocations since construction.
    std::size_t allocations() const noexcept;

private:
    std::size_t start_;
};

/// While it lives, the `n`th allocation through operator new from now on (0: the next) throws
/// std::bad_alloc, once: for tests of what a failed allocation leaves behind. Process-wide.
struct failing_allocation {
    explicit failing_allocation(std::size_t n) noexcept;
    failing_allocation(const failing_allocation&) = delete;
    failing_allocation& operator=(const failing_allocation&) = delete;
    ~failing_allocation();
};

} // namespace plinth_test

#endif
