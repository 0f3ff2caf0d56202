//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_SMALL_MUTEX_HPP
#define PLINTH_DETAIL_SMALL_MUTEX_HPP

#include <atomic>
#include <cstdint>

namespace plinth::detail {

/// A mutex in four bytes, for state there is one of per suspended request (std::mutex takes 40,
/// and a server holds tens of thousands of them). Uncontended, lock and unlock are one atomic
/// operation each; a contended lock sleeps (C++20 atomic wait: a futex on Linux, after the
/// library's own brief spin and yield, as std::mutex's pthread lock may too) until an unlock
/// wakes it. Drepper's "Futexes Are Tricky", mutex 3: the state says whether
/// anyone may be asleep, so an uncontended unlock makes no system call. Not recursive; meets
/// Lockable, for std::lock_guard and std::unique_lock.
class small_mutex {
public:
    small_mutex() noexcept = default;
    small_mutex(const small_mutex&) = delete;
    small_mutex& operator=(const small_mutex&) = delete;

    void lock() noexcept
    {
        std::uint32_t s = unlocked;
        if (state_.compare_exchange_strong(s, locked, std::memory_order_acquire, std::memory_order_relaxed))
            return;
        // Contended: say so, then wait until the state changes; whoever takes it from here
        // leaves it marked contended (there may be other sleepers), which costs one wake too many
        // at worst.
        if (s != contended)
            s = state_.exchange(contended, std::memory_order_acquire);
        while (s != unlocked) {
            state_.wait(contended, std::memory_order_relaxed);
            s = state_.exchange(contended, std::memory_order_acquire);
        }
    }

    bool try_lock() noexcept
    {
        std::uint32_t s = unlocked;
        return state_.compare_exchange_strong(s, locked, std::memory_order_acquire, std::memory_order_relaxed);
    }

    void unlock() noexcept
    {
        if (state_.exchange(unlocked, std::memory_order_release) == contended)
            state_.notify_one();
    }

private:
    static constexpr std::uint32_t unlocked = 0;
    static constexpr std::uint32_t locked = 1;    // and nobody waits
    static constexpr std::uint32_t contended = 2; // and somebody may wait
    std::atomic<std::uint32_t> state_{unlocked};
};

// Every suspended request carries one.
static_assert(sizeof(small_mutex) == sizeof(std::uint32_t));

} // namespace plinth::detail

#endif
