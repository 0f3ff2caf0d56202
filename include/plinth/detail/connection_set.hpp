//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_CONNECTION_SET_HPP
#define PLINTH_DETAIL_CONNECTION_SET_HPP

// The live connections of a server and how far its stop has gone: one stop level, raised from
// none to graceful to hard, that every connection reads, and the set that tells each of them
// when it rises and completes the stop when the last one goes.

#include <plinth/detail/deadline_queue.hpp>

#include <boost/asio/any_completion_handler.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace plinth::detail {

/// How far a server's stop has gone. It only rises.
enum class stop_level : unsigned char {
    none,     ///< serving
    graceful, ///< accepting no more; idle connections close, requests in flight finish
    hard      ///< the grace ran out: what still waits is answered 503, what is still read is dropped
};

/// The deadlines of a server's connections.
using deadline_queue = basic_deadline_queue<std::chrono::steady_clock>;

/// A connection as the server sees it, whatever its protocol and transport: it belongs to the
/// set of live connections, carries its deadline, and can be told that the stop rose.
class connection_base : public std::enable_shared_from_this<connection_base>, public deadline_queue::hook {
public:
    connection_base() = default;
    connection_base(const connection_base&) = delete;
    connection_base& operator=(const connection_base&) = delete;

    /// The server's stop rose to `level`. Thread-safe.
    virtual void stop(stop_level level) = 0;

    /// Its deadline passed (the deadline queue says so). Thread-safe.
    virtual void deadline_passed() = 0;

protected:
    ~connection_base() = default;

private:
    friend class connection_set;
    connection_base* prev_ = nullptr; // in the set, under its lock
    connection_base* next_ = nullptr;
    bool linked_ = false;
};

/// The live connections of one server. Thread-safe.
class connection_set {
public:
    /// What waits for a stop to complete.
    using waiter = boost::asio::any_completion_handler<void()>;

    /// `finish(waiters)` runs once, when the last connection goes after a stop began (or at the
    /// stop, when there is none): it completes the waiters and releases what the server kept for
    /// the stop.
    explicit connection_set(std::function<void(std::vector<waiter>)> finish)
        : finish_(std::move(finish))
    {
    }

    connection_set(const connection_set&) = delete;
    connection_set& operator=(const connection_set&) = delete;

    /// Counts a connection, from its construction: `size()` covers the ones not yet in the set.
    void opened() noexcept { ++open_; }

    /// Uncounts it, from its destruction (after `erase`): the last one to go during a stop
    /// completes the stop.
    void closed()
    {
        --open_;
        finish_if_empty();
    }

    /// Connections open now.
    std::uint64_t size() const noexcept { return open_.load(); }

    /// The stop's level now; a connection may read it from any thread.
    stop_level level() const noexcept { return level_.load(std::memory_order_acquire); }

    /// Adds `c`, unless a stop began (false: close it).
    bool insert(connection_base& c)
    {
        std::lock_guard lock(mutex_);
        if (level_.load(std::memory_order_relaxed) != stop_level::none)
            return false;
        c.next_ = std::exchange(head_, &c);
        if (c.next_)
            c.next_->prev_ = &c;
        c.linked_ = true;
        return true;
    }

    /// Removes `c` (from its destructor), if it was added.
    void erase(connection_base& c) noexcept
    {
        std::lock_guard lock(mutex_);
        if (!c.linked_)
            return;
        (c.prev_ ? c.prev_->next_ : head_) = c.next_;
        if (c.next_)
            c.next_->prev_ = c.prev_;
        c.linked_ = false;
    }

    /// Raises the stop to `to` and tells every connection in the set; `w` (may be empty)
    /// completes once every connection is gone. False when the level was `to` or higher already
    /// (`w` still completes with the stop).
    bool raise(stop_level to, waiter w = {})
    {
        std::vector<std::shared_ptr<connection_base>> open;
        bool raised = false;
        {
            std::lock_guard lock(mutex_);
            if (w)
                waiters_.push_back(std::move(w));
            if (level_.load(std::memory_order_relaxed) < to) {
                level_.store(to, std::memory_order_release);
                raised = true;
                open = live();
            }
        }
        for (const auto& c : open)
            c->stop(to);
        finish_if_empty();
        return raised;
    }

    /// True once a stop began and every connection went.
    bool stopped() const
    {
        std::lock_guard lock(mutex_);
        return finished_;
    }

private:
    // The connections open now (not those being destroyed). Under `mutex_`.
    std::vector<std::shared_ptr<connection_base>> live() const
    {
        std::vector<std::shared_ptr<connection_base>> open;
        for (auto* c = head_; c; c = c->next_)
            if (auto p = c->weak_from_this().lock()) // not one whose destructor waits for the lock
                open.push_back(std::move(p));
        return open;
    }

    void finish_if_empty()
    {
        std::vector<waiter> waiters;
        {
            std::lock_guard lock(mutex_);
            if (level_.load(std::memory_order_relaxed) == stop_level::none || open_.load() != 0)
                return;
            if (finished_ && waiters_.empty())
                return; // finished already, and no waiter came since
            finished_ = true;
            waiters.swap(waiters_);
        }
        finish_(std::move(waiters));
    }

    std::function<void(std::vector<waiter>)> finish_;
    std::atomic<std::uint64_t> open_{0};
    std::atomic<stop_level> level_{stop_level::none};
    mutable std::mutex mutex_; // guards what follows
    connection_base* head_ = nullptr;
    std::vector<waiter> waiters_;
    bool finished_ = false;
};

} // namespace plinth::detail

#endif
