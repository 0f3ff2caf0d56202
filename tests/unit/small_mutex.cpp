//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//

// The four-byte mutex a suspension is guarded by (its races run under ThreadSanitizer too).

#include <plinth/detail/small_mutex.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

using plinth::detail::small_mutex;

TEST_CASE("small_mutex: four bytes; try_lock fails while it is held and succeeds once it is released", "[small_mutex]")
{
    static_assert(sizeof(small_mutex) == 4);
    small_mutex m;
    REQUIRE(m.try_lock());
    CHECK_FALSE(m.try_lock());
    std::thread other([&] { CHECK_FALSE(m.try_lock()); });
    other.join();
    m.unlock();
    CHECK(m.try_lock());
    m.unlock();
}

TEST_CASE("small_mutex: threads contending for it exclude each other, and a waiting lock is woken by the unlock",
          "[small_mutex]")
{
    small_mutex m;
    std::uint64_t counter = 0; // not atomic: the mutex is all that guards it
    std::atomic<int> inside{0};
    bool overlapped = false;
    constexpr int threads = 4;
    constexpr int rounds = 20000;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&] {
            for (int i = 0; i < rounds; ++i) {
                std::lock_guard lock(m);
                if (inside.fetch_add(1) != 0)
                    overlapped = true;
                ++counter;
                inside.fetch_sub(1);
            }
        });
    for (auto& t : pool)
        t.join();
    CHECK_FALSE(overlapped);
    CHECK(counter == std::uint64_t{threads} * rounds);

    // A lock taken while it is held waits for the unlock (asleep, if the holder is slow enough).
    std::unique_lock held(m);
    std::atomic<bool> acquired{false};
    std::thread waiter([&] {
        std::lock_guard lock(m);
        acquired = true;
    });
    std::this_thread::yield();
    CHECK_FALSE(acquired.load());
    held.unlock();
    waiter.join();
    CHECK(acquired.load());
}
