//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_DEADLINE_QUEUE_HPP
#define PLINTH_DETAIL_DEADLINE_QUEUE_HPP

// The deadlines of many objects on one clock, earliest first, so that one timer serves them all:
// a binary heap of hooks that the timed objects carry (as Asio's timer_queue keeps its
// per_timer_data), under a lock of its own. Setting, moving and cancelling a deadline cost
// O(log n); nothing scans every object.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

namespace plinth::detail {

/// Deadlines on `Clock` (a steady clock, or a test's own).
template <class Clock>
class basic_deadline_queue {
public:
    using clock = Clock;
    using time_point = typename Clock::time_point;

    /// What a timed object carries: its deadline, where it sits in the heap, and whether it fired
    /// since it was last set. Touched only under the queue's lock.
    class hook {
    public:
        hook() = default;
        hook(const hook&) = delete;
        hook& operator=(const hook&) = delete;

    private:
        friend class basic_deadline_queue;
        static constexpr std::uint32_t not_queued = std::numeric_limits<std::uint32_t>::max();

        time_point at_{};
        std::uint32_t index_ = not_queued;
        bool fired_ = false;
        // Whether it is queued or fired: written under the lock, read without it by `cancel`, so
        // that a phase without a deadline after one without costs no lock.
        std::atomic<bool> pending_{false};
    };

    basic_deadline_queue() = default;
    basic_deadline_queue(const basic_deadline_queue&) = delete;
    basic_deadline_queue& operator=(const basic_deadline_queue&) = delete;

    /// Sets `h`'s deadline to `t`, queued or not. True when the timer that serves the queue must
    /// wake sooner than it was told to (`next_wake`): the caller then has it wake at `t`. One
    /// caller is told so for each deadline that comes before the last wake-up set, however many
    /// threads set deadlines at once.
    bool set(hook& h, time_point t)
    {
        std::lock_guard lock(mutex_);
        h.fired_ = false;
        if (h.index_ == hook::not_queued) {
            heap_.push_back(&h); // (may throw, before anything changed)
            h.index_ = static_cast<std::uint32_t>(heap_.size() - 1);
            h.at_ = t;
            h.pending_.store(true, std::memory_order_relaxed);
            up(h.index_);
        }
        else {
            const bool sooner = t < h.at_;
            h.at_ = t;
            sooner ? up(h.index_) : down(h.index_);
        }
        if (!(t < wake_))
            return false;
        wake_ = t;
        return true;
    }

    /// Takes `h`'s deadline away (whether it was queued, fired or neither). Call it where `h`'s
    /// deadlines are set (one thread at a time).
    void cancel(hook& h) noexcept
    {
        // Only this caller makes `h` pending (set), and the lock makes it not pending: seen not
        // pending here, it cannot be pending now.
        if (!h.pending_.load(std::memory_order_acquire))
            return;
        std::lock_guard lock(mutex_);
        h.fired_ = false;
        remove(h);
        h.pending_.store(false, std::memory_order_release);
    }

    /// Takes out every deadline due at `now`, earliest first, marking each fired and calling
    /// `f(hook&)` for it under the lock (`f` may not touch the queue). Returns the earliest
    /// deadline left, or `time_point::max()`, which becomes `next_wake`: the caller has the timer
    /// wake then. When `f` throws, the hook it threw for stays queued (and `next_wake` as it was).
    template <class F>
    time_point pop_due(time_point now, F&& f)
    {
        std::lock_guard lock(mutex_);
        while (!heap_.empty() && !(now < heap_.front()->at_)) {
            hook& h = *heap_.front();
            f(h);
            remove(h);
            h.fired_ = true;
        }
        return wake_ = heap_.empty() ? time_point::max() : heap_.front()->at_;
    }

    /// When the timer that serves the queue is to wake: the earliest deadline the last pop left,
    /// or one set since that came before it. `time_point::max()`: it need not wake.
    time_point next_wake() const
    {
        std::lock_guard lock(mutex_);
        return wake_;
    }

    /// True, once, after `h` fired (pop_due) and was neither set nor cancelled since: its owner
    /// may act on the deadline that passed, not on one set afterwards.
    bool take_fired(hook& h) noexcept
    {
        std::lock_guard lock(mutex_);
        h.pending_.store(h.index_ != hook::not_queued, std::memory_order_release);
        return std::exchange(h.fired_, false);
    }

    /// The earliest deadline, or `time_point::max()` when none is queued.
    time_point earliest() const
    {
        std::lock_guard lock(mutex_);
        return heap_.empty() ? time_point::max() : heap_.front()->at_;
    }

    /// Deadlines queued.
    std::size_t size() const
    {
        std::lock_guard lock(mutex_);
        return heap_.size();
    }

private:
    void remove(hook& h) noexcept
    {
        const auto i = h.index_;
        if (i == hook::not_queued)
            return;
        h.index_ = hook::not_queued;
        hook* last = heap_.back();
        heap_.pop_back();
        if (last == &h)
            return;
        heap_[i] = last;
        last->index_ = i;
        if (i > 0 && last->at_ < heap_[(i - 1) / 2]->at_)
            up(i);
        else
            down(i);
    }

    void up(std::uint32_t i) noexcept
    {
        while (i > 0) {
            const auto parent = (i - 1) / 2;
            if (!(heap_[i]->at_ < heap_[parent]->at_))
                return;
            swap(i, parent);
            i = parent;
        }
    }

    void down(std::uint32_t i) noexcept
    {
        const auto n = heap_.size();
        for (;;) {
            auto child = std::size_t(i) * 2 + 1;
            if (child >= n)
                return;
            if (child + 1 < n && heap_[child + 1]->at_ < heap_[child]->at_)
                ++child;
            if (!(heap_[child]->at_ < heap_[i]->at_))
                return;
            swap(i, static_cast<std::uint32_t>(child));
            i = static_cast<std::uint32_t>(child);
        }
    }

    void swap(std::uint32_t a, std::uint32_t b) noexcept
    {
        std::swap(heap_[a], heap_[b]);
        heap_[a]->index_ = a;
        heap_[b]->index_ = b;
    }

    mutable std::mutex mutex_;
    std::vector<hook*> heap_;
    time_point wake_ = time_point::max(); // see next_wake
};

} // namespace plinth::detail

#endif
