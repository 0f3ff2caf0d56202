//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_HANDLER_SLOT_HPP
#define PLINTH_DETAIL_HANDLER_SLOT_HPP

// Memory for the operation of a timer that re-arms itself from its own handler (the server's
// deadline sweep): Asio frees an operation before it calls the handler, so the next wait takes
// the same slot and the timer's steady state allocates nothing (Asio's handler-allocation
// example does the same). A wait started while the slot is taken goes to the heap.

#include <atomic>
#include <cstddef>
#include <new>

namespace plinth::detail {

/// Room for one operation at a time. Thread-safe: an operation may be freed on another thread
/// than the one that allocated it.
class handler_slot {
public:
    handler_slot() = default;
    handler_slot(const handler_slot&) = delete;
    handler_slot& operator=(const handler_slot&) = delete;

    void* allocate(std::size_t n)
    {
        if (n <= sizeof(storage_) && !taken_.exchange(true, std::memory_order_acquire))
            return storage_;
        return ::operator new(n);
    }

    void deallocate(void* p) noexcept
    {
        if (p == storage_)
            taken_.store(false, std::memory_order_release);
        else
            ::operator delete(p);
    }

private:
    alignas(std::max_align_t) unsigned char storage_[256];
    std::atomic<bool> taken_{false};
};

/// The allocator of a handler whose operations go into `slot`.
template <class T>
struct slot_allocator {
    using value_type = T;

    explicit slot_allocator(handler_slot& s) noexcept
        : slot(&s)
    {
    }
    template <class U>
    slot_allocator(const slot_allocator<U>& other) noexcept
        : slot(other.slot)
    {
    }

    T* allocate(std::size_t n) { return static_cast<T*>(slot->allocate(n * sizeof(T))); }
    void deallocate(T* p, std::size_t) noexcept { slot->deallocate(p); }

    template <class U>
    friend bool operator==(const slot_allocator& a, const slot_allocator<U>& b) noexcept
    {
        return a.slot == b.slot;
    }

    handler_slot* slot;
};

} // namespace plinth::detail

#endif
