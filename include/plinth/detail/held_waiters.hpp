//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_HELD_WAITERS_HPP
#define PLINTH_DETAIL_HELD_WAITERS_HPP

// A completion handler kept outside Asio's queues (a suspension keeps its waiter itself rather
// than in a pending timer wait, which costs a timer and an operation per suspended request) must
// be treated as Asio treats a pending operation's: it keeps io_context::run from returning, and
// the io_context's shutdown destroys it. The second matters because such a handler usually owns
// what owns it (waiter -> connection -> suspension -> waiter), a cycle nothing else would break.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/prefer.hpp>

#include <mutex>
#include <utility>

namespace plinth::detail {

/// Something that holds a waiter's handler while it is registered with a held_waiters service.
class held_waiter {
public:
    /// Destroys the held handler without calling it, for the io_context's shutdown. The object
    /// may be gone when this returns (the handler may have owned it).
    virtual void drop_waiter() noexcept = 0;

protected:
    held_waiter() = default;
    held_waiter(const held_waiter&) = delete;
    held_waiter& operator=(const held_waiter&) = delete;
    ~held_waiter() = default;

private:
    friend class held_waiters;
    // Linked when it is the list's head or has a predecessor: no flag, as every suspension
    // derives from this.
    held_waiter* prev_ = nullptr;
    held_waiter* next_ = nullptr;
};

/// The execution_context service that knows every held waiter of its context. Thread-safe.
class held_waiters : public boost::asio::execution_context::service {
public:
    inline static boost::asio::execution_context::id id;

    explicit held_waiters(boost::asio::execution_context& context)
        : service(context)
    {
    }

    /// `w` holds a handler from now until `remove(w)`; `executor` (of this context) stands for
    /// the outstanding work it represents.
    void add(held_waiter& w, const boost::asio::any_io_executor& executor)
    {
        // Made outside the lock, and only for the first waiter: one tracked executor for them all.
        boost::asio::any_io_executor work;
        std::unique_lock lock(mutex_);
        if (!work_) {
            lock.unlock();
            work = boost::asio::prefer(executor, boost::asio::execution::outstanding_work.tracked);
            lock.lock();
            if (!work_)
                work_.swap(work);
        }
        w.prev_ = nullptr;
        w.next_ = head_;
        if (head_)
            head_->prev_ = &w;
        head_ = &w;
    }

    /// `w` holds no handler any more (a no-op if the shutdown took it already).
    void remove(held_waiter& w) noexcept
    {
        boost::asio::any_io_executor work; // released after the lock
        std::lock_guard lock(mutex_);
        if (!w.prev_ && head_ != &w)
            return; // not linked
        unlink(w);
        if (!head_)
            work.swap(work_);
    }

private:
    void unlink(held_waiter& w) noexcept
    {
        (w.prev_ ? w.prev_->next_ : head_) = w.next_;
        if (w.next_)
            w.next_->prev_ = w.prev_;
        w.prev_ = w.next_ = nullptr;
    }

    // What the io_context's destruction (or shutdown) does with pending operations: destroy
    // their handlers uncalled. Dropping one may free objects that remove others.
    void shutdown() override
    {
        for (;;) {
            held_waiter* w = nullptr;
            {
                std::lock_guard lock(mutex_);
                if (!head_)
                    break;
                w = head_;
                unlink(*w);
            }
            w->drop_waiter();
        }
        boost::asio::any_io_executor work;
        std::lock_guard lock(mutex_);
        work.swap(work_);
    }

    std::mutex mutex_;
    held_waiter* head_ = nullptr;
    boost::asio::any_io_executor work_; // tracked while any waiter is held
};

} // namespace plinth::detail

#endif
