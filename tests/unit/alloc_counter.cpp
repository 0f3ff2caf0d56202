//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// Replaces the global operator new and operator delete (all the replaceable overloads) with
// malloc-based ones that count allocations.

#include "alloc_counter.hpp"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <new>

namespace {

std::atomic<std::size_t> allocations{0};
std::atomic<long> fail_countdown{-1}; // see failing_allocation: -1 is off

// True for the allocation that failing_allocation picked (once).
bool fail_this_one() noexcept
{
    return fail_countdown.load(std::memory_order_relaxed) >= 0 && fail_countdown.fetch_sub(1) == 0;
}

// Plain new: retry through the new-handler, as the standard's operator new does.
void* allocate(std::size_t size)
{
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (fail_this_one())
        throw std::bad_alloc();
    if (size == 0)
        size = 1;
    for (;;) {
        if (void* p = std::malloc(size))
            return p;
        std::new_handler handler = std::get_new_handler();
        if (!handler)
            throw std::bad_alloc();
        handler();
    }
}

void* allocate(std::size_t size, std::align_val_t al)
{
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (fail_this_one())
        throw std::bad_alloc();
    auto alignment = static_cast<std::size_t>(al);
    if (alignment < sizeof(void*))
        alignment = sizeof(void*); // posix_memalign wants a multiple of sizeof(void*)
    if (size == 0)
        size = 1;
    for (;;) {
        void* p = nullptr;
        if (::posix_memalign(&p, alignment, size) == 0)
            return p;
        std::new_handler handler = std::get_new_handler();
        if (!handler)
            throw std::bad_alloc();
        handler();
    }
}

void* allocate_nothrow(std::size_t size) noexcept
{
    try {
        return allocate(size);
    }
    catch (...) {
        return nullptr;
    }
}

void* allocate_nothrow(std::size_t size, std::align_val_t al) noexcept
{
    try {
        return allocate(size, al);
    }
    catch (...) {
        return nullptr;
    }
}

} // namespace

namespace plinth_test {

std::size_t allocation_count() noexcept
{
    return allocations.load(std::memory_order_relaxed);
}

allocation_scope::allocation_scope() noexcept
    : start_(allocation_count())
{
}

std::size_t allocation_scope::allocations() const noexcept
{
    return allocation_count() - start_;
}

failing_allocation::failing_allocation(std::size_t n) noexcept
{
    fail_countdown.store(static_cast<long>(n));
}

failing_allocation::~failing_allocation()
{
    fail_countdown.store(-1);
}

} // namespace plinth_test

// Allocation.
void* operator new(std::size_t size)
{
    return allocate(size);
}
void* operator new[](std::size_t size)
{
    return allocate(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept
{
    return allocate_nothrow(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept
{
    return allocate_nothrow(size);
}
void* operator new(std::size_t size, std::align_val_t al)
{
    return allocate(size, al);
}
void* operator new[](std::size_t size, std::align_val_t al)
{
    return allocate(size, al);
}
void* operator new(std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept
{
    return allocate_nothrow(size, al);
}
void* operator new[](std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept
{
    return allocate_nothrow(size, al);
}

// Deallocation: malloc and posix_memalign memory both go back through free.
void operator delete(void* p) noexcept
{
    std::free(p);
}
void operator delete[](void* p) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept
{
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept
{
    std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept
{
    std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept
{
    std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept
{
    std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept
{
    std::free(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept
{
    std::free(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept
{
    std::free(p);
}

// Asio's recycling allocator (handlers, operations, awaitable coroutine frames) takes its memory
// from std::aligned_alloc, not from operator new: count it too, or every Asio allocation would go
// unseen. glibc lets a program interpose its allocation functions; this one hands back memory
// from posix_memalign, which free() releases as usual.
extern "C" void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept
{
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (alignment < sizeof(void*))
        alignment = sizeof(void*);
    void* p = nullptr;
    if (const int failed = ::posix_memalign(&p, alignment, size)) {
        errno = failed;
        return nullptr;
    }
    return p;
}
