//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_STREAM_STATE_HPP
#define PLINTH_DETAIL_STREAM_STATE_HPP

// The state behind a streamed response (chunked body, server-sent events): a bounded queue that
// producers on any thread fill and the connection drains on its strand. Like a suspension, a
// stream holds no thread: the connection waits on a timer until a producer wakes it. This layer
// knows bytes, not HTTP framing; the connection frames them.

#include <plinth/log.hpp>
#include <plinth/stream_options.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/system/error_code.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace plinth::detail {

namespace asio = boost::asio;

/// The shared state of a stream. Producers (any thread) queue messages; the connection, on its
/// strand, takes them, writes them and reports back. All state changes happen under `mutex_`;
/// completion handlers and `on_close` callbacks run outside it.
class stream_state : public std::enable_shared_from_this<stream_state> {
public:
    using handler_type = asio::any_completion_handler<void(boost::system::error_code)>;

    /// A queued message and whoever waits for it to be written.
    struct entry {
        std::string data;
        handler_type done;          // may be empty
        asio::any_io_executor work; // `done`'s executor, counted as outstanding work
        std::uint64_t seq = 0;

        entry() = default;
        entry(std::string d, handler_type h, asio::any_io_executor w, std::uint64_t n)
            : data(std::move(d))
            , done(std::move(h))
            , work(std::move(w))
            , seq(n)
        {
        }
        entry(entry&&) noexcept = default;
        // Boost 1.81's any_completion_handler move assignment recurses until the stack
        // overflows (it passes `other` as an lvalue to its converting constructor): swap instead.
        entry& operator=(entry&& o) noexcept
        {
            data = std::move(o.data);
            handler_type(std::move(o.done)).swap(done);
            work = std::move(o.work);
            seq = o.seq;
            return *this;
        }
    };

    /// What `take` found.
    enum class take_result {
        data,   ///< messages to write
        idle,   ///< nothing yet: a push will wake the connection
        ended,  ///< nothing more: the application closed the stream
        aborted ///< the queue overflowed with the close policy: drop the connection
    };

    stream_state(asio::any_io_executor executor, stream_options options, log_function log)
        : executor_(std::move(executor))
        , options_(options)
        , log_(std::move(log))
    {
    }

    stream_state(const stream_state&) = delete;
    stream_state& operator=(const stream_state&) = delete;

    const stream_options& options() const noexcept { return options_; }

    // -- set up by the opener, before any producer sees the stream --

    /// What goes out after `heartbeat` without a write (nothing: no heartbeat).
    std::string heartbeat_text;
    /// Whether a graceful stop ends the stream at once (an event stream never ends on its own),
    /// rather than at the end of the grace.
    bool ends_on_stop = false;
    /// The request's `Last-Event-ID` (server-sent events).
    std::string last_event_id;

    // -- producers (any thread) --

    /// Queues `data`. False when the stream is closed or the message made it overflow.
    bool push(std::string data) { return push(std::move(data), {}, {}); }

    /// Queues `data`; `done` completes on `work` (its associated executor, or this stream's when
    /// it has none) once the data is handed to the socket, or with an error.
    template <class Handler>
    bool push(std::string data, Handler&& done)
    {
        asio::any_io_executor work;
        {
            std::lock_guard lock(mutex_);
            work = asio::prefer(asio::get_associated_executor(done, fallback_executor()),
                                asio::execution::outstanding_work.tracked);
        }
        return push(std::move(data), handler_type(std::forward<Handler>(done)), std::move(work));
    }

    bool push(std::string data, handler_type done, asio::any_io_executor work)
    {
        std::vector<entry> failed;
        boost::system::error_code ec;
        bool accepted = true;
        {
            std::lock_guard lock(mutex_);
            entry e{std::move(data), std::move(done), std::move(work), ++seq_};
            if (finished_ || aborted_ || ended_) {
                failed.push_back(std::move(e));
                ec = stream_errc::closed;
                accepted = false;
            }
            else if (!fits(e.data.size())) {
                if (options_.overflow == stream_overflow::close) {
                    // The connection drops the client; a producer learns it here.
                    aborted_ = true;
                    failed.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
                    failed.push_back(std::move(e));
                    queue_.clear();
                    queued_bytes_ = 0;
                    ec = stream_errc::overflow;
                    accepted = false;
                    wake_locked(true);
                }
                else {
                    while (!queue_.empty() && !fits(e.data.size())) {
                        queued_bytes_ -= queue_.front().data.size();
                        failed.push_back(std::move(queue_.front()));
                        queue_.pop_front();
                        ++dropped_;
                    }
                    ec = stream_errc::dropped;
                }
            }
            if (accepted) {
                watch_cancellation(e);
                queued_bytes_ += e.data.size();
                queue_.push_back(std::move(e));
                wake_locked(false);
            }
        }
        for (auto& f : failed)
            complete(f, ec);
        return accepted;
    }

    /// Ends the stream after what is queued; `trailer` (raw `Name: value\r\n` lines) goes after
    /// the last chunk. False when it had already ended.
    bool end(std::string trailer = {})
    {
        std::lock_guard lock(mutex_);
        if (finished_ || aborted_ || ended_)
            return false;
        ended_ = true;
        trailer_ = std::move(trailer);
        wake_locked(false);
        return true;
    }

    /// `cb(reason)` runs once, when the stream is over (at once, on this thread, if it is).
    void on_close(std::function<void(close_reason)> cb)
    {
        close_reason reason;
        {
            std::lock_guard lock(mutex_);
            if (!finished_) {
                on_close_.push_back(std::move(cb));
                return;
            }
            reason = reason_;
        }
        run_callback(cb, reason);
    }

    bool is_open() const
    {
        std::lock_guard lock(mutex_);
        return !finished_ && !aborted_ && !ended_;
    }

    std::size_t queued_bytes() const
    {
        std::lock_guard lock(mutex_);
        return queued_bytes_;
    }

    std::size_t queued() const
    {
        std::lock_guard lock(mutex_);
        return queue_.size();
    }

    std::uint64_t dropped() const
    {
        std::lock_guard lock(mutex_);
        return dropped_;
    }

    // -- the connection (its strand) --

    /// How the connection is woken when the queue changes (a post to its strand). `abort` tells
    /// it the queue overflowed: a write in progress must be cut short.
    void attach(std::function<void(bool abort)> wake)
    {
        std::lock_guard lock(mutex_);
        if (!finished_)
            wake_ = std::move(wake);
    }

    /// Moves queued messages to `out` (up to about `max_bytes`); when there are none, the next
    /// push wakes the connection.
    take_result take(std::vector<entry>& out, std::size_t max_bytes)
    {
        std::lock_guard lock(mutex_);
        if (aborted_)
            return take_result::aborted;
        std::size_t bytes = 0;
        while (!queue_.empty() && (out.empty() || bytes + queue_.front().data.size() <= max_bytes)) {
            bytes += queue_.front().data.size();
            queued_bytes_ -= queue_.front().data.size();
            out.push_back(std::move(queue_.front()));
            queue_.pop_front();
        }
        if (!out.empty())
            return take_result::data;
        if (ended_)
            return take_result::ended;
        waiting_ = true;
        return take_result::idle;
    }

    /// The trailer given to `end`.
    std::string trailer() const
    {
        std::lock_guard lock(mutex_);
        return trailer_;
    }

    /// Whether the queue overflowed with the close policy.
    bool aborted() const
    {
        std::lock_guard lock(mutex_);
        return aborted_;
    }

    /// Completes the handlers of messages that were written (or failed to be).
    void written(std::vector<entry>& batch, boost::system::error_code ec)
    {
        for (auto& e : batch)
            complete(e, ec);
        batch.clear();
    }

    /// The stream is over: queued messages fail with `closed`, `on_close` callbacks run once.
    /// `run_callbacks` false (the io_context is being torn down) destroys them instead.
    void finish(close_reason reason, bool run_callbacks = true)
    {
        std::list<entry> queued;
        std::vector<std::function<void(close_reason)>> callbacks;
        {
            std::lock_guard lock(mutex_);
            if (finished_)
                return;
            finished_ = true;
            reason_ = reason;
            queued.swap(queue_);
            queued_bytes_ = 0;
            callbacks.swap(on_close_);
            wake_ = nullptr;
            executor_ = asio::any_io_executor(); // a handle may outlive the io_context
        }
        if (!run_callbacks)
            return;
        for (auto& e : queued)
            complete(e, stream_errc::closed);
        for (auto& cb : callbacks)
            run_callback(cb, reason);
    }

    bool finished() const
    {
        std::lock_guard lock(mutex_);
        return finished_;
    }

private:
    bool fits(std::size_t bytes) const noexcept
    {
        // A message larger than the whole bound still goes out, alone.
        if (queue_.empty())
            return true;
        return queue_.size() < options_.max_queued && queued_bytes_ + bytes <= options_.max_queued_bytes;
    }

    void wake_locked(bool abort)
    {
        if (!wake_ || !(waiting_ || abort))
            return;
        waiting_ = false; // one wake per wait: a burst of pushes posts once
        wake_(abort);
    }

    asio::any_io_executor fallback_executor() const
    {
        if (executor_)
            return executor_;
        return asio::system_executor(); // the stream is over: only a failure is left to report
    }

    // Per-operation cancellation: a message not yet taken by the connection is removed and its
    // handler completes with operation_aborted. One already being written is past recall.
    void watch_cancellation(entry& e)
    {
        if (!e.done)
            return;
        auto slot = asio::get_associated_cancellation_slot(e.done);
        if (!slot.is_connected())
            return;
        slot.template emplace<canceller>(weak_from_this(), e.seq);
    }

    struct canceller {
        canceller(std::weak_ptr<stream_state> s, std::uint64_t n)
            : state(std::move(s))
            , seq(n)
        {
        }

        std::weak_ptr<stream_state> state;
        std::uint64_t seq;
        void operator()(asio::cancellation_type type)
        {
            if (type == asio::cancellation_type::none)
                return;
            if (auto s = state.lock())
                s->cancel(seq);
        }
    };

    void cancel(std::uint64_t seq)
    {
        entry e;
        {
            std::lock_guard lock(mutex_);
            auto it = std::find_if(queue_.begin(), queue_.end(), [seq](const entry& x) { return x.seq == seq; });
            if (it == queue_.end())
                return;
            queued_bytes_ -= it->data.size();
            e = std::move(*it);
            queue_.erase(it);
        }
        complete(e, asio::error::operation_aborted);
    }

    static void complete(entry& e, boost::system::error_code ec)
    {
        if (!e.done)
            return;
        auto slot = asio::get_associated_cancellation_slot(e.done);
        if (slot.is_connected())
            slot.clear();
        // Posted, never run inline: a producer may hold its own locks around a write.
        asio::post(e.work, [h = std::move(e.done), ec]() mutable { std::move(h)(ec); });
        e.work = asio::any_io_executor();
    }

    void run_callback(std::function<void(close_reason)>& cb, close_reason reason) const
    {
        try {
            cb(reason);
        }
        catch (...) {
            if (log_)
                try {
                    log_(log_level::error, "a stream's on_close callback threw");
                }
                catch (...) {
                }
        }
    }

    mutable std::mutex mutex_;
    asio::any_io_executor executor_; // the connection's strand, until the stream is over
    const stream_options options_;
    const log_function log_;
    std::list<entry> queue_; // a list: an empty one holds no memory, and most streams idle
    std::size_t queued_bytes_ = 0;
    std::uint64_t seq_ = 0;
    std::uint64_t dropped_ = 0;
    std::string trailer_;
    std::vector<std::function<void(close_reason)>> on_close_;
    std::function<void(bool)> wake_;
    close_reason reason_ = close_reason::closed;
    bool waiting_ = false;  // the connection found nothing and waits for a wake
    bool ended_ = false;    // the application closed the stream: write what is queued, then the end
    bool aborted_ = false;  // overflowed with the close policy
    bool finished_ = false; // over: on_close ran
};

} // namespace plinth::detail

#endif
