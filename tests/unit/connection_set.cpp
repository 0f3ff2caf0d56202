//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// The set of live connections and the stop level (detail/connection_set.hpp), with connections
// that only record what they are told: no sockets, no io_context.

#include <plinth/detail/connection_set.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace {

using plinth::detail::connection_base;
using plinth::detail::connection_set;
using plinth::detail::stop_level;

// What finish() was given, each time it ran.
struct finishes {
    std::mutex mutex;
    std::vector<std::size_t> waiters; // how many waiters each call completed

    std::function<void(std::vector<connection_set::waiter>)> hook()
    {
        return [this](std::vector<connection_set::waiter> w) {
            std::lock_guard lock(mutex);
            waiters.push_back(w.size());
            for (auto& h : w)
                std::move(h)();
        };
    }
};

class fake_connection final : public connection_base {
public:
    explicit fake_connection(connection_set& set)
        : set_(set)
    {
        set_.opened();
    }

    ~fake_connection()
    {
        set_.erase(*this);
        set_.closed();
    }

    void stop(stop_level level) override
    {
        std::lock_guard lock(mutex_);
        told_.push_back(level);
    }

    void deadline_passed() override {}

    std::vector<stop_level> told()
    {
        std::lock_guard lock(mutex_);
        return told_;
    }

private:
    connection_set& set_;
    std::mutex mutex_;
    std::vector<stop_level> told_;
};

std::shared_ptr<fake_connection> open(connection_set& set)
{
    auto c = std::make_shared<fake_connection>(set);
    REQUIRE(set.insert(*c));
    return c;
}

} // namespace

TEST_CASE("connection set: counts connections from their construction to their destruction", "[connection_set]")
{
    finishes f;
    connection_set set{f.hook()};
    {
        auto a = open(set);
        auto b = std::make_shared<fake_connection>(set); // counted, not yet inserted
        CHECK(set.size() == 2);
    }
    CHECK(set.size() == 0);
    CHECK(set.level() == stop_level::none);
    CHECK(f.waiters.empty()); // no stop began: nothing finishes
}

TEST_CASE("connection set: the stop rises graceful then hard, telling each connection once per level, never lower",
          "[connection_set]")
{
    finishes f;
    connection_set set{f.hook()};
    auto a = open(set);
    auto b = open(set);
    CHECK(set.raise(stop_level::graceful));
    CHECK_FALSE(set.raise(stop_level::graceful)); // a second stop joins the first
    CHECK(set.level() == stop_level::graceful);
    CHECK(set.raise(stop_level::hard));
    CHECK_FALSE(set.raise(stop_level::graceful)); // never lower
    CHECK(set.level() == stop_level::hard);
    for (auto* c : {a.get(), b.get()})
        CHECK(c->told() == std::vector<stop_level>{stop_level::graceful, stop_level::hard});
}

TEST_CASE("connection set: once a stop began, no connection joins", "[connection_set]")
{
    finishes f;
    connection_set set{f.hook()};
    set.raise(stop_level::graceful);
    auto late = std::make_shared<fake_connection>(set);
    CHECK_FALSE(set.insert(*late));
    CHECK(late->told().empty());
}

TEST_CASE("connection set: the stop completes when the last connection goes, with every waiter, once",
          "[connection_set]")
{
    finishes f;
    connection_set set{f.hook()};
    auto a = open(set);
    auto b = open(set);
    int completed = 0;
    set.raise(stop_level::graceful, [&] { ++completed; });
    set.raise(stop_level::graceful, [&] { ++completed; }); // a second stop's waiter
    CHECK_FALSE(set.stopped());
    a.reset();
    CHECK(f.waiters.empty());
    b.reset();
    CHECK(set.stopped());
    CHECK(f.waiters == std::vector<std::size_t>{2});
    CHECK(completed == 2);

    // A waiter that comes after the stop completed completes at once, alone.
    set.raise(stop_level::hard, [&] { ++completed; });
    CHECK(f.waiters == std::vector<std::size_t>{2, 1});
    CHECK(completed == 3);
    set.raise(stop_level::hard); // nothing to complete
    CHECK(f.waiters.size() == 2);
}

TEST_CASE("connection set: a stop with no connection completes at once", "[connection_set]")
{
    finishes f;
    connection_set set{f.hook()};
    bool completed = false;
    set.raise(stop_level::graceful, [&] { completed = true; });
    CHECK(completed);
    CHECK(set.stopped());
}

TEST_CASE("connection set: connections coming and going on threads while the stop rises", "[connection_set]")
{
    finishes f;
    connection_set set{f.hook()};
    std::latch go{1};
    std::atomic<int> refused{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t)
        threads.emplace_back([&] {
            go.wait();
            for (int i = 0; i < 2000; ++i) {
                auto c = std::make_shared<fake_connection>(set);
                if (!set.insert(*c))
                    ++refused;
            }
        });
    go.count_down();
    set.raise(stop_level::graceful);
    set.raise(stop_level::hard);
    for (auto& t : threads)
        t.join();
    CHECK(set.size() == 0);
    CHECK(set.stopped());
    CHECK(f.waiters.size() == 1); // completed once, however the threads interleaved
}
