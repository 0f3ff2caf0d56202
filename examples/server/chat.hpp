// The example server's chat: a bounded history of messages, pushed to event streams as they
// arrive and handed to long-polls waiting for them. Any thread may post; nothing here blocks.

#ifndef PLINTH_EXAMPLE_CHAT_HPP
#define PLINTH_EXAMPLE_CHAT_HPP

#include <plinth/plinth.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace example {

/// `s` as a JSON string literal.
inline std::string json_string(std::string_view s)
{
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\')
            (out += '\\') += c;
        else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        }
        else
            out += c;
    }
    return out + '"';
}

struct message {
    std::uint64_t id;
    std::string text;

    std::string json() const { return "{\"id\":" + std::to_string(id) + ",\"text\":" + json_string(text) + "}"; }

    plinth::sse_event event() const
    {
        plinth::sse_event e;
        e.event = "message";
        e.id = std::to_string(id);
        e.data = json();
        return e;
    }
};

class chat_room {
public:
    explicit chat_room(std::size_t history = 1000)
        : capacity_(history)
    {
    }

    chat_room(const chat_room&) = delete;
    chat_room& operator=(const chat_room&) = delete;

    /// Adds a message, sends it to every event stream and answers every long-poll; its id.
    std::uint64_t post(std::string text)
    {
        std::lock_guard lock(mutex_);
        const message& m = history_.emplace_back(message{++last_id_, std::move(text)});
        if (history_.size() > capacity_)
            history_.pop_front();
        // Under the lock, so that every subscriber sees messages in id order. send() and
        // resume() only queue: neither runs a callback here.
        const auto event = m.event();
        for (const auto& s : streams_)
            s.send(event);
        for (auto& p : polls_)
            if (p.after < m.id)
                p.handle.resume(plinth::json("[" + m.json() + "]"));
        return m.id;
    }

    /// Sends `s` the messages after `after` (those still in the history) at the client's pace,
    /// then each new one. A long history does not overflow the stream's queue: the replay
    /// waits for each batch to be written, and subscribes under the lock once it has caught up,
    /// so that nothing is missed or sent twice.
    boost::asio::awaitable<void> subscribe(plinth::sse_stream s, std::uint64_t after)
    {
        std::list<plinth::sse_stream>::iterator it;
        for (;;) {
            std::vector<plinth::sse_event> batch;
            {
                std::lock_guard lock(mutex_);
                for (const auto& m : history_)
                    if (m.id > after && batch.size() < 64)
                        batch.push_back(m.event());
                if (batch.empty()) {
                    it = streams_.insert(streams_.end(), s);
                    break;
                }
            }
            for (const auto& e : batch) {
                auto [ec] = co_await s.async_send(e, boost::asio::as_tuple(boost::asio::use_awaitable));
                if (ec)
                    co_return; // the stream is over
            }
            after = std::stoull(batch.back().id);
        }
        s.on_close([this, it](plinth::close_reason) {
            std::lock_guard lock(mutex_);
            streams_.erase(it);
        });
    }

    /// Answers at once with the messages after `after`; without any, waits for the next one
    /// (200) or for `timeout` (204).
    void poll(plinth::async_response ar, std::uint64_t after, std::chrono::milliseconds timeout)
    {
        std::list<waiting_poll>::iterator it;
        {
            std::lock_guard lock(mutex_);
            std::string array;
            for (const auto& m : history_)
                if (m.id > after)
                    (array += array.empty() ? "[" : ",") += m.json();
            if (!array.empty()) {
                ar.resume(plinth::json(array + "]"));
                return;
            }
            if (timeout <= timeout.zero()) {
                ar.resume(plinth::make_response(plinth::http::status::no_content));
                return;
            }
            it = polls_.insert(polls_.end(), waiting_poll{after, ar});
        }
        ar.on_timeout(
            [](plinth::async_response a) { a.resume(plinth::make_response(plinth::http::status::no_content)); });
        ar.set_timeout(timeout);
        auto forget = [this, it](std::exception_ptr) {
            std::lock_guard lock(mutex_);
            polls_.erase(it);
        };
        if (!ar.on_complete(forget)) // already over (the client left): forget it now
            forget(nullptr);
    }

    /// The server is stopping: long-polls get 503 + Retry-After now rather than at the end of
    /// the grace (event streams end on their own).
    void close(std::chrono::seconds retry_after)
    {
        std::lock_guard lock(mutex_);
        for (auto& p : polls_)
            p.handle.cancel(retry_after);
    }

private:
    struct waiting_poll {
        std::uint64_t after;
        plinth::async_response handle;
    };

    std::mutex mutex_;
    const std::size_t capacity_;
    std::uint64_t last_id_ = 0;
    std::deque<message> history_;
    std::list<plinth::sse_stream> streams_;
    std::list<waiting_poll> polls_;
};

} // namespace example

#endif
