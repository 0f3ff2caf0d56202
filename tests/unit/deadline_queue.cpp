//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// The deadline queue (detail/deadline_queue.hpp) on a fake clock: order, moves, cancels, what
// fired, a random walk against a model, and threads setting deadlines while another pops them.

#include <plinth/detail/deadline_queue.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

// A clock that only names its time points: the queue never reads a clock.
struct fake_clock {
    using duration = std::chrono::milliseconds;
    using rep = duration::rep;
    using period = duration::period;
    using time_point = std::chrono::time_point<fake_clock, duration>;
    static constexpr bool is_steady = true;
};

using queue = plinth::detail::basic_deadline_queue<fake_clock>;
using hook = queue::hook;

fake_clock::time_point at(long ms)
{
    return fake_clock::time_point(std::chrono::milliseconds(ms));
}

// The hooks `q` gives up at `now`, in order, as indices into `hooks`.
std::vector<int> due(queue& q, long now, const std::vector<std::unique_ptr<hook>>& hooks)
{
    std::vector<int> out;
    q.pop_due(at(now), [&](hook& h) {
        for (std::size_t i = 0; i < hooks.size(); ++i)
            if (hooks[i].get() == &h)
                out.push_back(static_cast<int>(i));
    });
    return out;
}

std::vector<std::unique_ptr<hook>> make_hooks(int n)
{
    std::vector<std::unique_ptr<hook>> hooks;
    for (int i = 0; i < n; ++i)
        hooks.push_back(std::make_unique<hook>());
    return hooks;
}

} // namespace

TEST_CASE("deadline queue: deadlines come due earliest first, and only once their time came", "[deadline_queue]")
{
    queue q;
    auto h = make_hooks(4);
    q.set(*h[0], at(30));
    q.set(*h[1], at(10));
    q.set(*h[2], at(20));
    q.set(*h[3], at(20));
    CHECK(q.size() == 4);
    CHECK(q.earliest() == at(10));
    CHECK(due(q, 9, h).empty());
    const auto first = due(q, 20, h);
    REQUIRE(first.size() == 3);
    CHECK(first[0] == 1);
    CHECK(((first[1] == 2 && first[2] == 3) || (first[1] == 3 && first[2] == 2)));
    CHECK(q.earliest() == at(30));
    CHECK(due(q, 1000, h) == std::vector<int>{0});
    CHECK(q.earliest() == fake_clock::time_point::max());
    CHECK(q.size() == 0);
}

TEST_CASE("deadline queue: set says when the timer must wake sooner than it was told, once per such deadline",
          "[deadline_queue]")
{
    queue q;
    auto h = make_hooks(4);
    CHECK(q.next_wake() == fake_clock::time_point::max()); // nothing to wake for
    CHECK(q.set(*h[0], at(50)));                           // the first: wake at 50
    CHECK(q.next_wake() == at(50));
    CHECK_FALSE(q.set(*h[1], at(60))); // after 50: the wake-up at 50 sees to it
    CHECK(q.set(*h[2], at(40)));       // before: wake at 40
    CHECK_FALSE(q.set(*h[2], at(70))); // moved later: waking at 40 early is harmless
    CHECK_FALSE(q.set(*h[3], at(45)));
    CHECK(q.next_wake() == at(40));
    // The wake-up at 40 finds nothing due; the next is 45, which becomes the next wake-up.
    CHECK(q.pop_due(at(40), [](hook&) {}) == at(45));
    CHECK(q.next_wake() == at(45));
    CHECK_FALSE(q.set(*h[1], at(46)));
    CHECK(q.set(*h[1], at(44)));
    q.pop_due(at(100), [](hook&) {});
    CHECK(q.next_wake() == fake_clock::time_point::max());
    CHECK(q.set(*h[0], at(500))); // empty again: the timer was told it need not wake
}

TEST_CASE("deadline queue: moving a deadline later or sooner, or cancelling it, is what counts", "[deadline_queue]")
{
    queue q;
    auto h = make_hooks(3);
    q.set(*h[0], at(10));
    q.set(*h[1], at(20));
    q.set(*h[2], at(30));
    q.set(*h[0], at(40)); // later
    q.set(*h[2], at(5));  // sooner
    q.cancel(*h[1]);
    q.cancel(*h[1]); // twice: nothing
    CHECK(due(q, 35, h) == std::vector<int>{2});
    CHECK(due(q, 45, h) == std::vector<int>{0});
    CHECK(q.size() == 0);
}

TEST_CASE("deadline queue: take_fired is true once after its deadline fired, and not after a new one was set",
          "[deadline_queue]")
{
    queue q;
    hook h;
    CHECK_FALSE(q.take_fired(h)); // never set
    q.set(h, at(10));
    CHECK_FALSE(q.take_fired(h)); // set, not due
    q.pop_due(at(10), [](hook&) {});
    CHECK(q.take_fired(h));
    CHECK_FALSE(q.take_fired(h)); // once

    q.set(h, at(20));
    q.pop_due(at(20), [](hook&) {});
    q.set(h, at(30)); // the owner moved on before it handled the one that fired
    CHECK_FALSE(q.take_fired(h));

    q.pop_due(at(30), [](hook&) {});
    q.cancel(h); // no deadline now: the one that fired no longer counts
    CHECK_FALSE(q.take_fired(h));
}

TEST_CASE("deadline queue: a hook whose handling throws stays queued, and the next pop gets it", "[deadline_queue]")
{
    queue q;
    auto h = make_hooks(2);
    q.set(*h[0], at(10));
    q.set(*h[1], at(20));
    CHECK_THROWS_AS(q.pop_due(at(30),
                              [&](hook& x) {
                                  if (&x == h[1].get())
                                      throw std::bad_alloc();
                              }),
                    std::bad_alloc);
    CHECK(q.size() == 1);
    CHECK(q.take_fired(*h[0]));
    CHECK(due(q, 30, h) == std::vector<int>{1});
}

TEST_CASE("deadline queue: a random walk of sets, cancels and pops agrees with a model", "[deadline_queue]")
{
    constexpr int n = 64;
    queue q;
    auto h = make_hooks(n);
    std::map<int, long> model; // hook -> deadline
    std::mt19937 rng{7};
    long now = 0;
    for (int step = 0; step < 20000; ++step) {
        const int i = static_cast<int>(rng() % n);
        switch (rng() % 4) {
        case 0:
        case 1: {
            const long t = now + static_cast<long>(rng() % 1000);
            q.set(*h[i], at(t));
            model[i] = t;
            break;
        }
        case 2:
            q.cancel(*h[i]);
            model.erase(i);
            break;
        default: {
            now += static_cast<long>(rng() % 300);
            long last = -1;
            std::vector<int> expected;
            for (const auto& [k, t] : model)
                if (t <= now)
                    expected.push_back(k);
            auto got = due(q, now, h);
            for (int k : got) { // earliest first, and each one due
                REQUIRE(model.count(k) == 1);
                CHECK(model[k] >= last);
                CHECK(model[k] <= now);
                last = model[k];
            }
            std::sort(got.begin(), got.end());
            REQUIRE(got == expected);
            for (int k : got)
                model.erase(k);
        }
        }
        REQUIRE(q.size() == model.size());
        long earliest = std::numeric_limits<long>::max();
        for (const auto& [k, t] : model)
            earliest = std::min(earliest, t);
        REQUIRE((model.empty() ? q.earliest() == fake_clock::time_point::max() : q.earliest() == at(earliest)));
        // Never told to wake after a queued deadline: none is missed.
        REQUIRE(!(at(earliest) < q.next_wake()));
    }
}

TEST_CASE("deadline queue: threads setting and cancelling their deadlines while another pops them", "[deadline_queue]")
{
    queue q;
    constexpr int per_thread = 32;
    auto h = make_hooks(2 * per_thread);
    std::atomic<bool> stop{false};
    std::atomic<long> fired{0};
    std::thread popper([&] {
        long now = 0;
        while (!stop.load()) {
            q.pop_due(at(now += 7), [&](hook&) { ++fired; });
        }
    });
    std::vector<std::thread> setters;
    for (int t = 0; t < 2; ++t)
        setters.emplace_back([&, t] {
            std::mt19937 rng{static_cast<unsigned>(t)};
            for (int step = 0; step < 20000; ++step) {
                auto& mine = *h[t * per_thread + static_cast<int>(rng() % per_thread)];
                if (rng() % 3 == 0)
                    q.cancel(mine);
                else
                    q.set(mine, at(static_cast<long>(rng() % 100000)));
                q.take_fired(mine);
            }
        });
    for (auto& s : setters)
        s.join();
    stop = true;
    popper.join();
    CHECK(q.size() <= h.size());
    q.pop_due(fake_clock::time_point::max(), [](hook&) {});
    CHECK(q.size() == 0);
}
