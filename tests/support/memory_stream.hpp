//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_TESTS_MEMORY_STREAM_HPP
#define PLINTH_TESTS_MEMORY_STREAM_HPP

// An in-memory transport for plinth's connection, modelled on Beast's test::stream: a connected
// pair of byte streams on an io_context, where what one end writes the other reads. It does what
// the connection asks of TCP (writes at once, waits for bytes without a buffer, shuts a
// direction down, tells how much its peer has not read yet), and it fails on purpose: a
// fail_count makes its n-th operation fail, so that every failure point of a connection can be
// reached without a socket; a capacity makes writes block like a full socket buffer.

#include <plinth/detail/transport.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/system/error_code.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace plinth_test {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

/// The error an injected failure reports.
inline error_code injected_failure()
{
    return asio::error::make_error_code(asio::error::fault);
}

/// Counts a stream's operations and fails the n-th (0: the first), once; shared by both ends.
class fail_count {
public:
    explicit fail_count(std::size_t n = std::numeric_limits<std::size_t>::max())
        : left_(n)
    {
    }

    /// Counts an operation: true (and `ec` set) when it is the one to fail.
    bool fail(error_code& ec)
    {
        std::lock_guard lock(mutex_);
        ++operations_;
        if (left_ == std::numeric_limits<std::size_t>::max() || left_-- != 0)
            return false;
        ec = injected_failure();
        failed_ = true;
        return true;
    }

    /// Whether the failure happened (false: the run did fewer operations than n).
    bool failed() const
    {
        std::lock_guard lock(mutex_);
        return failed_;
    }

    /// Operations counted so far.
    std::size_t operations() const
    {
        std::lock_guard lock(mutex_);
        return operations_;
    }

private:
    mutable std::mutex mutex_;
    std::size_t left_;
    std::size_t operations_ = 0;
    bool failed_ = false;
};

/// One end of an in-memory connection. Both ends must be used from the io_context's threads or
/// from the test's; every member is thread-safe.
class memory_stream {
public:
    using executor_type = asio::io_context::executor_type;

    /// A connected pair on `ioc`: what the first writes the second reads, and the other way.
    /// `capacity`: bytes either direction holds before a write has to wait (a socket buffer).
    static std::pair<memory_stream, memory_stream> pair(asio::io_context& ioc, std::shared_ptr<fail_count> fc = nullptr,
                                                        std::size_t capacity = 1 << 20)
    {
        auto s = std::make_shared<shared>(ioc.get_executor(), std::move(fc), capacity);
        return {memory_stream(s, 0), memory_stream(s, 1)};
    }

    memory_stream(memory_stream&&) noexcept = default;
    memory_stream& operator=(memory_stream&&) noexcept = default;

    executor_type get_executor() const noexcept { return shared_->executor; }

    // -- Asio's AsyncReadStream and AsyncWriteStream --

    template <class MutableBufferSequence, class Token>
    auto async_read_some(const MutableBufferSequence& buffers, Token&& token)
    {
        return asio::async_initiate<Token, void(error_code, std::size_t)>(
            [this](auto handler, asio::mutable_buffer b) { start_read(b, posting(std::move(handler))); }, token,
            first_buffer(buffers));
    }

    template <class ConstBufferSequence, class Token>
    auto async_write_some(const ConstBufferSequence& buffers, Token&& token)
    {
        return asio::async_initiate<Token, void(error_code, std::size_t)>(
            [this](auto handler, std::string bytes) { start_write(std::move(bytes), posting(std::move(handler))); },
            token, gather(buffers));
    }

    // -- what the connection asks of a transport (see plinth::detail::transport) --

    /// Writes what the peer's side takes now; 0 and no error when it is full.
    template <class ConstBufferSequence>
    std::size_t write_now(const ConstBufferSequence& buffers, error_code& ec)
    {
        const auto bytes = gather(buffers);
        std::unique_lock lock(shared_->mutex);
        if (shared_->fc && shared_->fc->fail(ec))
            return 0;
        auto& out = outgoing();
        if (out.closed || out.reset) {
            ec = asio::error::broken_pipe;
            return 0;
        }
        ec = {};
        const auto n = std::min(bytes.size(), room(out));
        out.data.append(bytes, 0, n);
        wake(out, lock);
        return n;
    }

    /// Completes `handler(error_code)` once there is something to read, or the end.
    template <class Handler>
    void async_wait_readable(Handler&& handler)
    {
        std::unique_lock lock(shared_->mutex);
        error_code ec;
        auto& in = incoming();
        waiter w = posting(std::forward<Handler>(handler));
        if (shared_->fc && shared_->fc->fail(ec))
            return post(std::move(w), ec);
        if (!in.data.empty() || in.closed || in.reset)
            return post(std::move(w), error_code());
        set(in.wait, std::move(w));
        in.wait_pending = tracked();
    }

    std::size_t available(error_code& ec)
    {
        std::lock_guard lock(shared_->mutex);
        ec = {};
        return incoming().data.size();
    }

    /// Reads what has arrived; would_block when nothing has, eof after the end.
    std::size_t read_now(asio::mutable_buffer b, error_code& ec)
    {
        std::lock_guard lock(shared_->mutex);
        if (shared_->fc && shared_->fc->fail(ec))
            return 0;
        return take(incoming(), b, ec);
    }

    /// Stops one or both directions, as TCP's shutdown does.
    void shutdown(asio::socket_base::shutdown_type what)
    {
        std::unique_lock lock(shared_->mutex);
        if (what != asio::socket_base::shutdown_receive) {
            outgoing().closed = true; // the peer reads the end after what it has
            wake(outgoing(), lock);
            lock.lock();
        }
        if (what != asio::socket_base::shutdown_send) {
            incoming().closed = true;
            incoming().data.clear();
            wake(incoming(), lock);
        }
    }

    /// Completes this end's pending operations with operation_aborted.
    void cancel()
    {
        std::unique_lock lock(shared_->mutex);
        auto& in = incoming();
        auto read = std::move(in.read);
        auto wait = std::move(in.wait);
        work wait_work = std::move(in.wait_pending); // released once the completions are queued
        set(in.read.handler, {});
        set(in.wait, {});
        in.read.pending = {};
        in.wait_pending = {};
        auto write = std::move(outgoing().blocked);
        set(outgoing().blocked.handler, {});
        outgoing().blocked.pending = {};
        outgoing().blocked.bytes.clear();
        lock.unlock();
        if (read.handler)
            post(std::move(read.handler), asio::error::operation_aborted, 0);
        if (wait)
            post(std::move(wait), asio::error::operation_aborted);
        if (write.handler)
            post(std::move(write.handler), asio::error::operation_aborted, 0);
    }

    /// Closes this end: the peer reads the end, and its writes fail.
    void close()
    {
        {
            std::unique_lock lock(shared_->mutex);
            incoming().reset = true;
            incoming().data.clear();
            outgoing().closed = true;
            wake(outgoing(), lock);
        }
        cancel();
    }

    /// Bytes this end wrote that its peer has not read yet.
    std::int64_t unsent_bytes()
    {
        std::lock_guard lock(shared_->mutex);
        return static_cast<std::int64_t>(outgoing().data.size());
    }

    // -- for the test that holds the other end --

    /// Writes `bytes` at once (what does not fit waits in the pipe all the same).
    void write(std::string_view bytes)
    {
        std::unique_lock lock(shared_->mutex);
        auto& out = outgoing();
        out.data.append(bytes);
        wake(out, lock);
    }

    /// What has arrived, taken out.
    std::string read_all()
    {
        std::unique_lock lock(shared_->mutex);
        auto& in = incoming();
        std::string out = std::move(in.data);
        in.data.clear();
        if (in.blocked.handler) // room again for a write that waited
            wake_blocked(in, lock);
        return out;
    }

    /// True once the peer shut its sending side down or closed, and everything was read.
    bool at_end()
    {
        std::lock_guard lock(shared_->mutex);
        const auto& in = incoming();
        return in.data.empty() && (in.closed || in.reset);
    }

private:
    using read_handler = asio::any_completion_handler<void(error_code, std::size_t)>;
    using waiter = asio::any_completion_handler<void(error_code)>;

    // Keeps io_context::run going while an operation is pending, as a socket's does (empty: none).
    using work = asio::any_io_executor;

    // Boost 1.81's any_completion_handler move assignment wraps the handler in itself until the
    // stack overflows: swap instead.
    template <class Handler>
    static void set(Handler& to, Handler&& from)
    {
        Handler(std::move(from)).swap(to);
    }

    // One direction: what was written and not read yet, and who waits on it.
    struct pipe {
        std::string data;
        bool closed = false; // its writer shut down or closed: the end after `data`
        bool reset = false;  // its reader closed: writes fail
        struct {
            read_handler handler;
            asio::mutable_buffer buffer;
            work pending;
        } read;
        waiter wait;
        work wait_pending;
        struct {
            read_handler handler;
            std::string bytes; // what is left to write
            work pending;
        } blocked; // a write waiting for room
    };

    struct shared {
        shared(executor_type ex, std::shared_ptr<fail_count> f, std::size_t cap)
            : executor(ex)
            , fc(std::move(f))
            , capacity(cap)
        {
        }
        executor_type executor;
        std::shared_ptr<fail_count> fc;
        std::size_t capacity;
        std::mutex mutex;
        pipe pipes[2];
    };

    memory_stream(std::shared_ptr<shared> s, int end)
        : shared_(std::move(s))
        , end_(end)
    {
    }

    pipe& incoming() { return shared_->pipes[end_]; }
    pipe& outgoing() { return shared_->pipes[1 - end_]; }

    std::size_t room(const pipe& p) const
    {
        return p.data.size() >= shared_->capacity ? 0 : shared_->capacity - p.data.size();
    }

    template <class MutableBufferSequence>
    static asio::mutable_buffer first_buffer(const MutableBufferSequence& buffers)
    {
        for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers); ++it)
            if (it->size() != 0)
                return *it;
        return {};
    }

    template <class ConstBufferSequence>
    static std::string gather(const ConstBufferSequence& buffers)
    {
        std::string out;
        out.resize(asio::buffer_size(buffers));
        asio::buffer_copy(asio::buffer(out), buffers);
        return out;
    }

    // `handler` as kept: calling it posts the handler to its own executor (the connection's
    // strand, say), so that it never runs inside the call that completes it.
    template <class Handler>
    auto posting(Handler handler)
    {
        const auto ex = asio::get_associated_executor(handler, shared_->executor);
        return [ex, h = std::move(handler)](auto... args) mutable {
            asio::post(ex, [h = std::move(h), args...]() mutable { std::move(h)(args...); });
        };
    }

    // Completes a kept handler (which posts itself: see posting).
    template <class Handler, class... Args>
    static void post(Handler&& h, Args... args)
    {
        std::forward<Handler>(h)(args...);
    }

    // Outstanding work for the io_context while an operation is pending, as a socket's has.
    asio::any_io_executor tracked() const
    {
        return asio::prefer(shared_->executor, asio::execution::outstanding_work.tracked);
    }

    // Under the lock: moves what `p` holds into `b`.
    static std::size_t take(pipe& p, asio::mutable_buffer b, error_code& ec)
    {
        ec = {};
        if (p.data.empty()) {
            ec = p.closed || p.reset ? error_code(asio::error::eof) : error_code(asio::error::would_block);
            return 0;
        }
        const auto n = std::min(b.size(), p.data.size());
        std::memcpy(b.data(), p.data.data(), n);
        p.data.erase(0, n);
        return n;
    }

    void start_read(asio::mutable_buffer b, read_handler handler)
    {
        std::unique_lock lock(shared_->mutex);
        error_code ec;
        if (shared_->fc && shared_->fc->fail(ec))
            return post(std::move(handler), ec, std::size_t(0));
        auto& in = incoming();
        if (b.size() == 0)
            return post(std::move(handler), error_code(), std::size_t(0));
        const auto n = take(in, b, ec);
        if (ec != asio::error::would_block) {
            if (in.blocked.handler)
                wake_blocked(in, lock);
            return post(std::move(handler), ec, n);
        }
        set(in.read.handler, std::move(handler));
        in.read.buffer = b;
        in.read.pending = tracked();
    }

    void start_write(std::string bytes, read_handler handler)
    {
        std::unique_lock lock(shared_->mutex);
        error_code ec;
        if (shared_->fc && shared_->fc->fail(ec))
            return post(std::move(handler), ec, std::size_t(0));
        auto& out = outgoing();
        if (out.closed || out.reset)
            return post(std::move(handler), error_code(asio::error::broken_pipe), std::size_t(0));
        const auto n = std::min(bytes.size(), room(out));
        if (n == 0 && !bytes.empty()) { // full: wait for the peer to read
            set(out.blocked.handler, std::move(handler));
            out.blocked.bytes = std::move(bytes);
            out.blocked.pending = tracked();
            return;
        }
        out.data.append(bytes, 0, n);
        wake(out, lock);
        post(std::move(handler), error_code(), n);
    }

    // Under the lock, which it releases: completes a read or a wait pending on `p`.
    void wake(pipe& p, std::unique_lock<std::mutex>& lock)
    {
        read_handler read;
        std::size_t n = 0;
        error_code ec;
        if (p.read.handler && (!p.data.empty() || p.closed || p.reset)) {
            n = take(p, p.read.buffer, ec);
            set(read, std::move(p.read.handler));
            set(p.read.handler, {});
        }
        work read_work = std::move(p.read.pending); // released once the completion is queued
        p.read.pending = {};
        waiter wait;
        work wait_work;
        if (p.wait && (!p.data.empty() || p.closed || p.reset)) {
            set(wait, std::move(p.wait));
            set(p.wait, {});
            wait_work = std::move(p.wait_pending);
            p.wait_pending = {};
        }
        lock.unlock();
        if (read)
            post(std::move(read), ec, n);
        if (wait)
            post(std::move(wait), error_code());
    }

    // Under the lock, which it releases: a write that waited for room in `p` goes on.
    void wake_blocked(pipe& p, std::unique_lock<std::mutex>& lock)
    {
        auto& b = p.blocked;
        const auto n = std::min(b.bytes.size(), room(p));
        if (n == 0) {
            lock.unlock();
            return;
        }
        p.data.append(b.bytes, 0, n);
        read_handler handler;
        set(handler, std::move(b.handler));
        set(b.handler, {});
        work pending = std::move(b.pending); // released once the completion is queued
        b.bytes.clear();
        lock.unlock();
        post(std::move(handler), error_code(), n);
    }

    std::shared_ptr<shared> shared_;
    int end_;
};

} // namespace plinth_test

/// The connection's view of the in-memory stream: all it does, TCP's way.
template <>
struct plinth::detail::transport<plinth_test::memory_stream> {
    using stream = plinth_test::memory_stream;
    static constexpr bool waits_without_buffer = true;

    static void open(stream&, beast::error_code& ec) { ec = {}; }

    template <class ConstBufferSequence>
    static std::size_t write_now(stream& s, const ConstBufferSequence& buffers, beast::error_code& ec)
    {
        return s.write_now(buffers, ec);
    }

    template <class Handler>
    static void async_wait_readable(stream& s, Handler&& handler)
    {
        s.async_wait_readable(std::forward<Handler>(handler));
    }

    static std::size_t available(stream& s, beast::error_code& ec) { return s.available(ec); }
    static std::size_t read_now(stream& s, asio::mutable_buffer b, beast::error_code& ec) { return s.read_now(b, ec); }
    static void shutdown(stream& s, asio::socket_base::shutdown_type what) { s.shutdown(what); }
    static void cancel(stream& s) { s.cancel(); }
    static void close(stream& s) { s.close(); }
    static std::int64_t unsent_bytes(stream& s) { return s.unsent_bytes(); }
};

#endif
