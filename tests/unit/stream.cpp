//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// Unit tests of streamed responses without sockets: detail::stream_state (the bounded queue
// producers fill and the connection drains) and response_stream (the handle). The test plays
// the connection: it attaches a wake callback, takes what is queued, reports it written and
// finishes the stream, as detail/connection.hpp does. Completions are posted to an io_context
// that the test polls, so nothing here depends on timing.

#include <plinth/http.hpp>
#include <plinth/stream.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using namespace std::chrono_literals;
using plinth::close_reason;
using plinth::stream_errc;
using plinth::stream_options;
using plinth::stream_overflow;
using plinth::detail::stream_state;
using error_code = boost::system::error_code;
using strings = std::vector<std::string>;
using take_result = stream_state::take_result;

// How long a test waits for something that must happen. Never reached unless a test fails.
constexpr auto patience = 10s;

std::shared_ptr<stream_state> make_state(asio::io_context& ioc, stream_options options = {},
                                         plinth::log_function log = {})
{
    return std::make_shared<stream_state>(ioc.get_executor(), options, std::move(log));
}

stream_options bounded(std::size_t bytes, std::size_t count, stream_overflow policy = stream_overflow::close)
{
    stream_options o;
    o.max_queued_bytes = bytes;
    o.max_queued = count;
    o.overflow = policy;
    return o;
}

// Runs what is ready on `ioc` (posted completions) without blocking.
void poll(asio::io_context& ioc)
{
    ioc.restart();
    ioc.poll();
}

// The data of a batch, in order.
strings data_of(const std::vector<stream_state::entry>& batch)
{
    strings out;
    for (const auto& e : batch)
        out.push_back(e.data);
    return out;
}

// Completion handlers that record (label, error) in the order they ran.
struct completions {
    std::vector<std::pair<std::string, error_code>> got;

    auto handler(std::string label)
    {
        return [this, label = std::move(label)](error_code ec) { got.emplace_back(label, ec); };
    }

    std::optional<error_code> of(std::string_view label) const
    {
        for (const auto& [l, ec] : got)
            if (l == label)
                return ec;
        return std::nullopt;
    }

    int count(std::string_view label) const
    {
        int n = 0;
        for (const auto& [l, ec] : got)
            n += l == label;
        return n;
    }
};

// The connection's wake callback, recorded.
struct wakes {
    std::vector<bool> calls; // the `abort` argument of each call

    std::function<void(bool)> hook()
    {
        return [this](bool abort) { calls.push_back(abort); };
    }
};

// A log hook that keeps the lines.
struct log_capture {
    std::shared_ptr<std::mutex> mutex = std::make_shared<std::mutex>();
    std::shared_ptr<std::vector<std::pair<plinth::log_level, std::string>>> lines =
        std::make_shared<std::vector<std::pair<plinth::log_level, std::string>>>();

    plinth::log_function hook() const
    {
        return [m = mutex, l = lines](plinth::log_level level, std::string_view line) {
            std::lock_guard lock(*m);
            l->emplace_back(level, std::string(line));
        };
    }

    std::vector<std::pair<plinth::log_level, std::string>> get() const
    {
        std::lock_guard lock(*mutex);
        return *lines;
    }
};

// A request's exchange on an io_context, as a connection would set it up (no server policy).
struct exchange_on {
    asio::any_io_executor executor; // as a connection keeps its strand
    plinth::detail::exchange ex;

    explicit exchange_on(asio::io_context& ioc, std::string_view target = "/stream")
        : executor(ioc.get_executor())
    {
        ex.request = plinth::request{http::verb::get, target, 11};
        ex.executor = &executor;
    }

    plinth::context context() { return plinth::detail::make_context(ex); }
};

// Checks made in a child process, reported to the parent as text.
class expectations {
public:
    void operator()(bool ok, const char* what)
    {
        if (!ok)
            failures_ += std::string(what) + "; ";
    }
    const std::string& failures() const { return failures_; }

private:
    std::string failures_;
};

// Runs `scenario` in a forked child and returns its failed expectations, or how it died: a
// crash there fails the calling test instead of ending the whole test run.
std::string run_isolated(const std::function<void(expectations&)>& scenario)
{
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[0]);
        // Die as the signal says, silently: Catch2's crash handler and a sanitizer's report would
        // otherwise print a second test report into the parent's.
        for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT})
            std::signal(sig, SIG_DFL);
        // A small stack: runaway recursion then dies at once (sanitizers make deep stacks slow).
        if (rlimit limit{}; ::getrlimit(RLIMIT_STACK, &limit) == 0) {
            limit.rlim_cur = std::min<rlim_t>(limit.rlim_cur, 1 << 20);
            ::setrlimit(RLIMIT_STACK, &limit);
        }
        if (const int null = ::open("/dev/null", O_WRONLY); null >= 0) {
            ::dup2(null, STDOUT_FILENO);
            ::dup2(null, STDERR_FILENO);
        }
        expectations expect;
        try {
            scenario(expect);
        }
        catch (const std::exception& e) {
            expect(false, e.what());
        }
        catch (...) {
            expect(false, "a non-standard exception");
        }
        const std::string& out = expect.failures();
        std::size_t written = 0;
        while (written < out.size()) {
            const auto n = ::write(fds[1], out.data() + written, out.size() - written);
            if (n <= 0)
                break;
            written += static_cast<std::size_t>(n);
        }
        ::close(fds[1]);
        std::_Exit(0);
    }
    ::close(fds[1]);
    std::string out;
    char buf[512];
    for (;;) {
        const auto n = ::read(fds[0], buf, sizeof buf);
        if (n <= 0)
            break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status))
        out += "the child process died of signal " + std::to_string(WTERMSIG(status)) + " ("
            + ::strsignal(WTERMSIG(status)) + ")";
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        out += "the child process exited with status " + std::to_string(WEXITSTATUS(status));
    return out;
}

} // namespace

// =============================================================================================
// The queue
// =============================================================================================

TEST_CASE("stream_state: push and take keep the order; queued() and queued_bytes() follow", "[stream]")
{
    asio::io_context ioc;
    auto st = make_state(ioc);
    CHECK(st->is_open());
    CHECK(st->queued() == 0);
    CHECK(st->queued_bytes() == 0);

    CHECK(st->push("one"));
    CHECK(st->push("two!"));
    CHECK(st->push(""));
    CHECK(st->push("three"));
    CHECK(st->queued() == 4);
    CHECK(st->queued_bytes() == 12);

    std::vector<stream_state::entry> batch;
    REQUIRE(st->take(batch, 1 << 20) == take_result::data);
    CHECK(data_of(batch) == strings{"one", "two!", "", "three"});
    CHECK(st->queued() == 0);
    CHECK(st->queued_bytes() == 0);
    st->written(batch, {});
    CHECK(batch.empty());

    CHECK(st->take(batch, 1 << 20) == take_result::idle);
    CHECK(batch.empty());
    CHECK(st->push("four"));
    CHECK(st->queued() == 1);
    CHECK(st->queued_bytes() == 4);
    REQUIRE(st->take(batch, 1 << 20) == take_result::data);
    CHECK(data_of(batch) == strings{"four"});
    CHECK(st->is_open());
}

TEST_CASE("stream_state: take stops at max_bytes but always takes at least one message", "[stream]")
{
    asio::io_context ioc;
    auto st = make_state(ioc);
    for (auto s : {"aaaa", "bbbb", "cc", "dddddddddd", "e"})
        REQUIRE(st->push(s));
    CHECK(st->queued_bytes() == 21);

    std::vector<stream_state::entry> batch;
    REQUIRE(st->take(batch, 9) == take_result::data); // 4 + 4 fit, + 2 would not
    CHECK(data_of(batch) == strings{"aaaa", "bbbb"});
    CHECK(st->queued() == 3);
    CHECK(st->queued_bytes() == 13);
    st->written(batch, {});

    REQUIRE(st->take(batch, 1) == take_result::data); // larger than max_bytes: still one
    CHECK(data_of(batch) == strings{"cc"});
    st->written(batch, {});

    REQUIRE(st->take(batch, 0) == take_result::data);
    CHECK(data_of(batch) == strings{"dddddddddd"});
    st->written(batch, {});

    REQUIRE(st->take(batch, 10) == take_result::data); // exactly at the bound: taken
    CHECK(data_of(batch) == strings{"e"});
    CHECK(st->queued() == 0);
    CHECK(st->queued_bytes() == 0);
}

TEST_CASE("stream_state: with the close policy, overflowing the byte bound aborts the stream", "[stream]")
{
    asio::io_context ioc;
    auto st = make_state(ioc, bounded(10, 100));
    wakes w;
    st->attach(w.hook());
    completions done;

    CHECK(st->push("12345", done.handler("a")));
    CHECK(st->push("123", done.handler("b"))); // 8 bytes: fits
    CHECK(st->push("12", done.handler("c")));  // exactly 10: fits
    CHECK(st->queued_bytes() == 10);
    CHECK_FALSE(st->aborted());
    CHECK(w.calls.empty()); // the connection has not waited yet

    CHECK_FALSE(st->push("x", done.handler("d"))); // 11 bytes: overflow
    CHECK(st->aborted());
    CHECK_FALSE(st->is_open());
    CHECK(w.calls == std::vector<bool>{true}); // the connection is told to abort, even mid-write
    CHECK(st->queued() == 0);
    CHECK(st->queued_bytes() == 0);

    CHECK(done.got.empty()); // posted, not run inside push
    poll(ioc);
    REQUIRE(done.got.size() == 4);
    for (auto label : {"a", "b", "c", "d"}) {
        INFO(label);
        CHECK(done.of(label) == std::optional<error_code>(stream_errc::overflow));
    }

    std::vector<stream_state::entry> batch;
    CHECK(st->take(batch, 1 << 20) == take_result::aborted);
    CHECK(batch.empty());

    // Later writes fail as closed; end() reports it was over.
    CHECK_FALSE(st->push("late", done.handler("late")));
    CHECK_FALSE(st->end());
    poll(ioc);
    CHECK(done.of("late") == std::optional<error_code>(stream_errc::closed));
    CHECK(w.calls.size() == 1);
}

TEST_CASE("stream_state: with the close policy, overflowing the message count aborts the stream", "[stream]")
{
    asio::io_context ioc;
    auto st = make_state(ioc, bounded(1 << 20, 3));
    wakes w;
    st->attach(w.hook());
    completions done;
    std::vector<stream_state::entry> batch;
    CHECK(st->take(batch, 1 << 20) == take_result::idle); // the connection waits

    CHECK(st->push("a", done.handler("a")));
    CHECK(st->push("b", done.handler("b")));
    CHECK(st->push("c", done.handler("c")));
    CHECK(w.calls == std::vector<bool>{false}); // one wake for the wait
    CHECK(st->queued() == 3);

    CHECK_FALSE(st->push("d", done.handler("d")));
    CHECK(st->aborted());
    CHECK(w.calls == std::vector<bool>{false, true});
    poll(ioc);
    REQUIRE(done.got.size() == 4);
    for (const auto& [label, ec] : done.got) {
        INFO(label);
        CHECK(ec == stream_errc::overflow);
    }
    CHECK(st->take(batch, 1 << 20) == take_result::aborted);

    // finish() after an abort still runs on_close once (the connection reports slow_client).
    std::vector<close_reason> reasons;
    st->on_close([&](close_reason r) { reasons.push_back(r); });
    st->finish(close_reason::slow_client);
    CHECK(reasons == std::vector<close_reason>{close_reason::slow_client});
}

TEST_CASE("stream_state: drop_oldest discards the oldest messages, counts them and keeps the bound", "[stream]")
{
    asio::io_context ioc;
    completions done;
    std::vector<stream_state::entry> batch;

    SECTION("by count")
    {
        auto st = make_state(ioc, bounded(1 << 20, 3, stream_overflow::drop_oldest));
        for (auto s : {"1", "2", "3", "4", "5"}) {
            CHECK(st->push(s, done.handler(s))); // accepted: the stream goes on
            CHECK(st->queued() <= 3);
        }
        CHECK(st->dropped() == 2);
        CHECK_FALSE(st->aborted());
        CHECK(st->is_open());
        CHECK(st->queued() == 3);
        poll(ioc);
        CHECK(done.got
              == std::vector<std::pair<std::string, error_code>>{{"1", stream_errc::dropped},
                                                                 {"2", stream_errc::dropped}});
        REQUIRE(st->take(batch, 1 << 20) == take_result::data);
        CHECK(data_of(batch) == strings{"3", "4", "5"});
        st->written(batch, {});
        poll(ioc);
        REQUIRE(done.got.size() == 5);
        for (auto s : {"3", "4", "5"})
            CHECK(done.of(s) == std::optional<error_code>(error_code{}));
    }
    SECTION("by bytes")
    {
        auto st = make_state(ioc, bounded(10, 100, stream_overflow::drop_oldest));
        CHECK(st->push("aaaa", done.handler("a")));
        CHECK(st->push("bbbb", done.handler("b")));
        CHECK(st->push("cc", done.handler("c"))); // exactly 10
        CHECK(st->dropped() == 0);
        CHECK(st->push("ddd", done.handler("d"))); // 13: "aaaa" goes
        CHECK(st->dropped() == 1);
        CHECK(st->queued_bytes() == 9);
        CHECK(st->push("eeeeeeee", done.handler("e"))); // 17: "bbbb", "cc" go -> 11, "ddd" too -> 8
        CHECK(st->dropped() == 4);
        CHECK(st->queued_bytes() == 8);
        CHECK(st->queued_bytes() <= 10);
        poll(ioc);
        CHECK(done.got
              == std::vector<std::pair<std::string, error_code>>{{"a", stream_errc::dropped},
                                                                 {"b", stream_errc::dropped},
                                                                 {"c", stream_errc::dropped},
                                                                 {"d", stream_errc::dropped}});
        REQUIRE(st->take(batch, 1 << 20) == take_result::data);
        CHECK(data_of(batch) == strings{"eeeeeeee"});
    }
    SECTION("what the connection already took is not dropped")
    {
        auto st = make_state(ioc, bounded(1 << 20, 2, stream_overflow::drop_oldest));
        CHECK(st->push("1", done.handler("1")));
        REQUIRE(st->take(batch, 1 << 20) == take_result::data); // "1" is being written
        CHECK(st->push("2", done.handler("2")));
        CHECK(st->push("3", done.handler("3")));
        CHECK(st->push("4", done.handler("4"))); // drops "2"
        CHECK(st->dropped() == 1);
        st->written(batch, {});
        poll(ioc);
        CHECK(done.of("1") == std::optional<error_code>(error_code{}));
        CHECK(done.of("2") == std::optional<error_code>(stream_errc::dropped));
        REQUIRE(st->take(batch, 1 << 20) == take_result::data);
        CHECK(data_of(batch) == strings{"3", "4"});
    }
}

TEST_CASE("stream_state: a message larger than the whole bound is accepted when the queue is empty", "[stream]")
{
    asio::io_context ioc;
    const std::string big(100, 'x');
    std::vector<stream_state::entry> batch;

    SECTION("close policy")
    {
        auto st = make_state(ioc, bounded(10, 1));
        CHECK(st->push(big));
        CHECK_FALSE(st->aborted());
        CHECK(st->queued_bytes() == 100);
        REQUIRE(st->take(batch, 16) == take_result::data);
        CHECK(data_of(batch) == strings{big});
        st->written(batch, {});
        CHECK(st->push(big));       // empty again
        CHECK_FALSE(st->push("y")); // but nothing may join it
        CHECK(st->aborted());
    }
    SECTION("drop_oldest")
    {
        completions done;
        auto st = make_state(ioc, bounded(10, 4, stream_overflow::drop_oldest));
        CHECK(st->push("abc", done.handler("abc")));
        CHECK(st->push(big, done.handler("big"))); // drops "abc", then goes in alone
        CHECK(st->dropped() == 1);
        CHECK(st->queued() == 1);
        CHECK(st->queued_bytes() == 100);
        CHECK(st->push("z", done.handler("z"))); // drops the big one
        CHECK(st->dropped() == 2);
        CHECK(st->queued_bytes() == 1);
        poll(ioc);
        CHECK(done.of("abc") == std::optional<error_code>(stream_errc::dropped));
        CHECK(done.of("big") == std::optional<error_code>(stream_errc::dropped));
        CHECK(done.count("z") == 0);
    }
}

TEST_CASE("stream_state: the connection is woken once per wait, not once per push", "[stream]")
{
    asio::io_context ioc;
    auto st = make_state(ioc);
    wakes w;
    st->attach(w.hook());
    std::vector<stream_state::entry> batch;

    CHECK(st->push("before the first take"));
    CHECK(w.calls.empty()); // the connection will take it anyway
    REQUIRE(st->take(batch, 1 << 20) == take_result::data);
    batch.clear();
    CHECK(w.calls.empty());

    REQUIRE(st->take(batch, 1 << 20) == take_result::idle); // arms the wake
    CHECK(w.calls.empty());
    for (int i = 0; i < 10; ++i)
        CHECK(st->push("burst " + std::to_string(i)));
    CHECK(w.calls == std::vector<bool>{false}); // a burst wakes once

    REQUIRE(st->take(batch, 1 << 20) == take_result::data);
    CHECK(batch.size() == 10);
    batch.clear();
    CHECK(st->push("no wait armed"));
    CHECK(w.calls.size() == 1);
    REQUIRE(st->take(batch, 1 << 20) == take_result::data);
    batch.clear();

    REQUIRE(st->take(batch, 1 << 20) == take_result::idle);
    REQUIRE(st->take(batch, 1 << 20) == take_result::idle); // a second idle take: still one wake
    CHECK(st->push("again"));
    CHECK(st->push("and again"));
    CHECK(w.calls == std::vector<bool>{false, false});

    // end() wakes a waiting connection too.
    REQUIRE(st->take(batch, 1 << 20) == take_result::data);
    batch.clear();
    REQUIRE(st->take(batch, 1 << 20) == take_result::idle);
    CHECK(st->end());
    CHECK(w.calls == std::vector<bool>{false, false, false});

    // After finish() nothing wakes the connection any more.
    st->finish(close_reason::closed);
    CHECK_FALSE(st->push("after"));
    CHECK(w.calls.size() == 3);
}

TEST_CASE("stream_state: end() drains the queue, then take reports ended; the trailer is kept", "[stream]")
{
    asio::io_context ioc;
    auto st = make_state(ioc);
    completions done;
    CHECK(st->push("a", done.handler("a")));
    CHECK(st->push("b", done.handler("b")));
    CHECK(st->end("X-Checksum: 42\r\n"));
    CHECK_FALSE(st->is_open());
    CHECK_FALSE(st->aborted());
    CHECK(st->trailer() == "X-Checksum: 42\r\n");

    CHECK_FALSE(st->push("late", done.handler("late")));
    CHECK_FALSE(st->end("X-Other: 1\r\n")); // already ended: the first trailer stays
    CHECK(st->trailer() == "X-Checksum: 42\r\n");
    CHECK(st->queued() == 2);

    std::vector<stream_state::entry> batch;
    REQUIRE(st->take(batch, 1) == take_result::data);
    CHECK(data_of(batch) == strings{"a"});
    st->written(batch, {});
    REQUIRE(st->take(batch, 1 << 20) == take_result::data);
    CHECK(data_of(batch) == strings{"b"});
    st->written(batch, {});
    CHECK(st->take(batch, 1 << 20) == take_result::ended);
    CHECK(st->take(batch, 1 << 20) == take_result::ended);

    poll(ioc);
    CHECK(done.of("a") == std::optional<error_code>(error_code{}));
    CHECK(done.of("b") == std::optional<error_code>(error_code{}));
    CHECK(done.of("late") == std::optional<error_code>(stream_errc::closed));

    std::vector<close_reason> reasons;
    st->on_close([&](close_reason r) { reasons.push_back(r); });
    CHECK(reasons.empty()); // ended is not finished: the end of the body is still to be written
    st->finish(close_reason::closed);
    CHECK(reasons == std::vector<close_reason>{close_reason::closed});
    CHECK(st->trailer() == "X-Checksum: 42\r\n");
}

TEST_CASE("stream_state: finish(reason) runs on_close callbacks once with the reason and fails what is queued",
          "[stream]")
{
    asio::io_context ioc;
    auto st = make_state(ioc);
    completions done;
    strings order;
    std::vector<close_reason> reasons;
    st->on_close([&](close_reason r) {
        order.push_back("first");
        reasons.push_back(r);
    });
    st->on_close([&](close_reason r) {
        order.push_back("second");
        reasons.push_back(r);
    });
    CHECK(st->push("queued", done.handler("queued")));
    CHECK(st->push("x"));
    CHECK(st->queued() == 2);

    CHECK_FALSE(st->finished());
    st->finish(close_reason::client_gone);
    CHECK(st->finished());
    CHECK_FALSE(st->is_open());
    CHECK(order == strings{"first", "second"});
    CHECK(reasons == std::vector<close_reason>{close_reason::client_gone, close_reason::client_gone});
    CHECK(st->queued() == 0);
    CHECK(st->queued_bytes() == 0);

    // Registered after: runs at once, on this thread, with the same reason.
    bool late = false;
    st->on_close([&](close_reason r) {
        late = true;
        CHECK(r == close_reason::client_gone);
    });
    CHECK(late);

    // A second finish is harmless: nothing runs again, the reason stays.
    st->finish(close_reason::server_stopping);
    CHECK(order.size() == 2);
    std::optional<close_reason> again;
    st->on_close([&](close_reason r) { again = r; });
    CHECK(again == std::optional<close_reason>(close_reason::client_gone));

    CHECK(done.got.empty()); // posted
    poll(ioc);
    CHECK(done.got == std::vector<std::pair<std::string, error_code>>{{"queued", stream_errc::closed}});

    // A push after finish fails as closed, its handler too (on its own executor).
    CHECK_FALSE(st->push("after", asio::bind_executor(ioc, done.handler("after"))));
    poll(ioc);
    CHECK(done.of("after") == std::optional<error_code>(stream_errc::closed));
}

TEST_CASE("stream_state: finish(reason, false) runs no callback", "[stream]")
{
    asio::io_context ioc;
    auto st = make_state(ioc);
    completions done;
    int calls = 0;
    st->on_close([&](close_reason) { ++calls; });
    CHECK(st->push("queued", done.handler("queued")));
    st->finish(close_reason::server_stopping, false);
    CHECK(st->finished());
    CHECK(calls == 0);
    poll(ioc);
    CHECK(done.got.empty());          // destroyed, not completed
    st->finish(close_reason::closed); // and a later finish does not bring them back
    CHECK(calls == 0);
}

TEST_CASE("stream_state: an on_close callback that throws is logged and does not stop the others", "[stream]")
{
    asio::io_context ioc;
    log_capture logs;
    auto st = make_state(ioc, {}, logs.hook());
    strings ran;
    st->on_close([&](close_reason) { ran.push_back("before"); });
    st->on_close([&](close_reason) -> void {
        ran.push_back("thrower");
        throw std::runtime_error("callback failure");
    });
    st->on_close([&](close_reason) -> void {
        ran.push_back("non-standard");
        throw 42;
    });
    st->on_close([&](close_reason) { ran.push_back("after"); });

    CHECK_NOTHROW(st->finish(close_reason::failed));
    CHECK(ran == strings{"before", "thrower", "non-standard", "after"});
    auto lines = logs.get();
    REQUIRE(lines.size() == 2);
    for (const auto& [level, text] : lines) {
        CHECK(level == plinth::log_level::error);
        CHECK(text.find("on_close") != std::string::npos);
    }

    // One registered after the end throws too: logged, not thrown at the caller.
    CHECK_NOTHROW(st->on_close([](close_reason) { throw std::runtime_error("late"); }));
    CHECK(logs.get().size() == 3);
}

TEST_CASE("stream_state: a log hook that throws is swallowed too", "[stream]")
{
    asio::io_context ioc;
    auto st = make_state(ioc, {}, [](plinth::log_level, std::string_view) { throw std::runtime_error("log"); });
    bool second = false;
    st->on_close([](close_reason) { throw std::runtime_error("cb"); });
    st->on_close([&](close_reason) { second = true; });
    CHECK_NOTHROW(st->finish(close_reason::closed));
    CHECK(second);
}

// =============================================================================================
// async_write: completion, work, cancellation
// =============================================================================================

TEST_CASE("async_write: completes on the handler's associated executor, never inline", "[stream]")
{
    asio::io_context ioc;
    exchange_on on(ioc);
    auto ctx = on.context();
    auto rs = plinth::response_stream::open(ctx);
    auto strand = asio::make_strand(ioc);
    const auto& st = plinth::detail::state_of(rs);

    struct outcome {
        bool ran = false;
        bool on_strand = false;
        error_code ec;
    };
    outcome written, closed, overflowed;
    auto record = [&](outcome& o) {
        return asio::bind_executor(strand, [&o, strand](error_code ec) {
            o.ran = true;
            o.on_strand = strand.running_in_this_thread();
            o.ec = ec;
        });
    };

    rs.async_write("data", record(written));
    CHECK_FALSE(written.ran);
    std::vector<stream_state::entry> batch;
    REQUIRE(st->take(batch, 1 << 20) == take_result::data);
    st->written(batch, {});
    CHECK_FALSE(written.ran); // not inline inside written() either
    poll(ioc);
    CHECK(written.ran);
    CHECK(written.on_strand);
    CHECK_FALSE(written.ec);

    // A failure is posted too: the producer may hold its own lock around the call.
    SECTION("closed")
    {
        CHECK(rs.close());
        rs.async_write("late", record(closed));
        CHECK_FALSE(closed.ran);
        poll(ioc);
        CHECK(closed.ran);
        CHECK(closed.on_strand);
        CHECK(closed.ec == stream_errc::closed);
    }
    SECTION("overflow")
    {
        exchange_on other(ioc);
        auto octx = other.context();
        auto small = plinth::response_stream::open(octx, plinth::response{http::status::ok, 11}, bounded(4, 10));
        outcome first;
        small.async_write("1234", record(first));
        small.async_write("5", record(overflowed));
        CHECK_FALSE(first.ran);
        CHECK_FALSE(overflowed.ran);
        CHECK_FALSE(small.is_open());
        poll(ioc);
        CHECK(first.on_strand);
        CHECK(first.ec == stream_errc::overflow);
        CHECK(overflowed.on_strand);
        CHECK(overflowed.ec == stream_errc::overflow);
    }
    SECTION("a handler without an executor completes on the stream's executor")
    {
        auto thread = std::this_thread::get_id();
        std::optional<std::thread::id> ran_on;
        rs.async_write("plain", [&](error_code) { ran_on = std::this_thread::get_id(); });
        st->take(batch, 1 << 20);
        st->written(batch, {});
        CHECK_FALSE(ran_on);
        poll(ioc);
        CHECK(ran_on == std::optional<std::thread::id>(thread));
    }
}

TEST_CASE("async_write: a pending write is outstanding work for its executor", "[stream]")
{
    asio::io_context ioc;
    exchange_on on(ioc);
    auto ctx = on.context();
    auto rs = plinth::response_stream::open(ctx);

    // Control: with the stream open and nothing pending, run() has nothing to wait for.
    ioc.run_for(patience);
    CHECK(ioc.stopped());

    bool done = false;
    rs.async_write("pending", [&](error_code ec) {
        done = true;
        CHECK_FALSE(ec);
    });
    ioc.restart();
    ioc.run_for(100ms); // does not return early: the write is outstanding work
    CHECK_FALSE(ioc.stopped());
    CHECK_FALSE(done);

    std::vector<stream_state::entry> batch;
    REQUIRE(plinth::detail::state_of(rs)->take(batch, 1 << 20) == take_result::data);
    plinth::detail::state_of(rs)->written(batch, {});
    const auto t0 = std::chrono::steady_clock::now();
    ioc.run_for(patience); // now it returns as soon as the completion ran
    CHECK(done);
    CHECK(ioc.stopped());
    CHECK(std::chrono::steady_clock::now() - t0 < patience / 2);
}

TEST_CASE("async_write: a handler's associated executor is kept busy until the completion", "[stream]")
{
    // The handler's own io_context (not the stream's) is the one whose run() must wait.
    asio::io_context stream_ioc;
    asio::io_context handler_ioc;
    exchange_on on(stream_ioc);
    auto ctx = on.context();
    auto rs = plinth::response_stream::open(ctx);
    bool done = false;
    rs.async_write("x", asio::bind_executor(handler_ioc, [&](error_code) { done = true; }));
    handler_ioc.run_for(100ms);
    CHECK_FALSE(handler_ioc.stopped());
    plinth::detail::state_of(rs)->finish(close_reason::client_gone);
    handler_ioc.restart();
    handler_ioc.run_for(patience);
    CHECK(done);
    CHECK(handler_ioc.stopped());
}

TEST_CASE("async_write: per-operation cancellation before the connection takes the data", "[stream]")
{
    // Run in a child process, so that a crash fails this test and not the whole run: removing a
    // queued entry once recursed without end (Boost 1.81's any_completion_handler move
    // assignment calls itself), a stack overflow.
    const auto type =
        GENERATE(asio::cancellation_type::terminal, asio::cancellation_type::partial, asio::cancellation_type::total);
    INFO("cancellation type " << static_cast<int>(type));

    for (const char* position : {"middle", "last", "only"}) {
        INFO("the cancelled write is " << position << " in the queue");
        const std::string failures = run_isolated([type, position](expectations& expect) {
            asio::io_context ioc;
            exchange_on on(ioc);
            auto ctx = on.context();
            auto rs = plinth::response_stream::open(ctx);
            const auto& st = plinth::detail::state_of(rs);
            completions done;
            asio::cancellation_signal sig;
            const std::string_view where = position;

            strings kept;
            if (where != "only") {
                rs.async_write("keep-1", done.handler("keep-1"));
                kept.push_back("keep-1");
            }
            rs.async_write("cancel-me", asio::bind_cancellation_slot(sig.slot(), done.handler("cancelled")));
            if (where == "middle") {
                rs.async_write("keep-2", done.handler("keep-2"));
                kept.push_back("keep-2");
            }
            const std::size_t kept_bytes = 6 * kept.size();
            expect(rs.queued() == kept.size() + 1, "queued() counts the write before the cancellation");

            sig.emit(type);
            expect(rs.queued() == kept.size(), "queued() drops the cancelled write at once");
            expect(rs.queued_bytes() == kept_bytes, "queued_bytes() drops the cancelled write at once");
            expect(done.got.empty(), "the completion is posted, not run inside emit");
            poll(ioc);
            expect(
                done.got
                    == std::vector<std::pair<std::string, error_code>>{{"cancelled", asio::error::operation_aborted}},
                "the cancelled write completes with operation_aborted");

            std::vector<stream_state::entry> batch;
            const auto r = st->take(batch, 1 << 20);
            if (kept.empty())
                expect(r == take_result::idle, "nothing is left to take");
            else {
                expect(r == take_result::data, "the other writes are still queued");
                expect(data_of(batch) == kept, "the cancelled data is gone, the rest in order");
            }
            st->written(batch, {});
            poll(ioc);
            expect(done.got.size() == kept.size() + 1, "the other writes complete normally");
            sig.emit(type); // the slot was cleared on completion
            poll(ioc);
            expect(done.count("cancelled") == 1, "the cancelled write completed exactly once");
        });
        CHECK(failures == "");
    }
}

TEST_CASE("async_write: per-operation cancellation after the connection took the data does nothing", "[stream]")
{
    asio::io_context ioc;
    exchange_on on(ioc);
    auto ctx = on.context();
    auto rs = plinth::response_stream::open(ctx);
    const auto& st = plinth::detail::state_of(rs);
    completions done;

    const auto type =
        GENERATE(asio::cancellation_type::terminal, asio::cancellation_type::partial, asio::cancellation_type::total);
    INFO("cancellation type " << static_cast<int>(type));

    asio::cancellation_signal sig;
    rs.async_write("taken", asio::bind_cancellation_slot(sig.slot(), done.handler("taken")));
    std::vector<stream_state::entry> batch;
    REQUIRE(st->take(batch, 1 << 20) == take_result::data);
    CHECK(data_of(batch) == strings{"taken"});
    sig.emit(type); // past recall
    poll(ioc);
    CHECK(done.got.empty());
    st->written(batch, {});
    poll(ioc);
    CHECK(done.got == std::vector<std::pair<std::string, error_code>>{{"taken", error_code{}}});

    // The slot was cleared on completion: emitting again touches nothing.
    sig.emit(type);
    poll(ioc);
    CHECK(done.got.size() == 1);
}

TEST_CASE("async_write: cancellation after the stream was over does nothing", "[stream]")
{
    asio::io_context ioc;
    exchange_on on(ioc);
    auto ctx = on.context();
    auto rs = plinth::response_stream::open(ctx);
    completions done;
    asio::cancellation_signal sig;
    rs.async_write("x", asio::bind_cancellation_slot(sig.slot(), done.handler("x")));
    plinth::detail::state_of(rs)->finish(close_reason::client_gone);
    sig.emit(asio::cancellation_type::terminal);
    poll(ioc);
    CHECK(done.got == std::vector<std::pair<std::string, error_code>>{{"x", stream_errc::closed}});
}

TEST_CASE("response_stream: an empty default-constructed handle", "[stream]")
{
    asio::io_context ioc;
    plinth::response_stream rs;
    CHECK_FALSE(rs);
    CHECK_FALSE(rs.is_open());
    CHECK_FALSE(rs.write("x"));
    CHECK_FALSE(rs.close());
    CHECK(rs.queued() == 0);
    CHECK(rs.queued_bytes() == 0);
    CHECK(rs.dropped() == 0);
    CHECK(plinth::detail::state_of(rs) == nullptr);

    std::optional<close_reason> reason;
    rs.on_close([&](close_reason r) { reason = r; });
    CHECK(reason == std::optional<close_reason>(close_reason::closed));

    std::optional<error_code> result;
    rs.async_write("x", asio::bind_executor(ioc, [&](error_code ec) { result = ec; }));
    CHECK_FALSE(result); // posted
    ioc.run_for(patience);
    CHECK(result == std::optional<error_code>(stream_errc::closed));
}

TEST_CASE("response_stream::open sets the head, attaches the stream and refuses a second one", "[stream]")
{
    asio::io_context ioc;
    exchange_on on(ioc);
    auto ctx = on.context();

    plinth::response head{http::status::accepted, 11};
    head.set(http::field::content_type, "text/csv");
    head.body() = "ignored";
    auto rs = plinth::response_stream::open(ctx, head);
    REQUIRE(rs);
    CHECK(rs.is_open());
    REQUIRE(ctx.response.has_value());
    CHECK(ctx.response->result() == http::status::accepted);
    CHECK((*ctx.response)[http::field::content_type] == "text/csv");
    CHECK(ctx.response->body().empty());
    CHECK(on.ex.stream == plinth::detail::state_of(rs));
    CHECK(plinth::detail::state_of(rs)->heartbeat_text.empty()); // heartbeats are for event streams
    CHECK_FALSE(plinth::detail::state_of(rs)->ends_on_stop);

    CHECK(rs.write("abc"));
    CHECK(on.ex.stream->queued() == 1); // copies and the exchange share the stream
    auto copy = rs;
    CHECK(copy.queued_bytes() == 3);

    CHECK_THROWS_AS(plinth::response_stream::open(ctx), std::logic_error);
    CHECK(on.ex.stream == plinth::detail::state_of(rs));
    CHECK(ctx.response->result() == http::status::accepted);
}

TEST_CASE("response_stream::open takes its options from the server's policy unless given", "[stream]")
{
    asio::io_context ioc;
    plinth::detail::suspension_policy policy;
    policy.streams = bounded(123, 7, stream_overflow::drop_oldest);
    log_capture logs;
    policy.log = std::make_shared<const plinth::log_function>(logs.hook());

    exchange_on a(ioc);
    a.ex.policy = &policy;
    auto actx = a.context();
    auto from_policy = plinth::response_stream::open(actx);
    CHECK(plinth::detail::state_of(from_policy)->options().max_queued_bytes == 123);
    CHECK(plinth::detail::state_of(from_policy)->options().max_queued == 7);
    CHECK(plinth::detail::state_of(from_policy)->options().overflow == stream_overflow::drop_oldest);
    from_policy.on_close([](close_reason) { throw std::runtime_error("x"); });
    plinth::detail::state_of(from_policy)->finish(close_reason::closed);
    CHECK(logs.get().size() == 1); // the server's log hook

    exchange_on b(ioc);
    b.ex.policy = &policy;
    auto bctx = b.context();
    auto given = plinth::response_stream::open(bctx, plinth::response{http::status::ok, 11}, bounded(5, 2));
    CHECK(plinth::detail::state_of(given)->options().max_queued_bytes == 5);
    CHECK(plinth::detail::state_of(given)->options().max_queued == 2);
    CHECK(plinth::detail::state_of(given)->options().overflow == stream_overflow::close);
}

TEST_CASE("response_stream::close passes trailer fields and rejects CR or LF in them", "[stream]")
{
    asio::io_context ioc;
    exchange_on on(ioc);
    auto ctx = on.context();
    auto rs = plinth::response_stream::open(ctx);

    SECTION("well-formed")
    {
        http::fields trailers;
        trailers.set("X-Checksum", "abc");
        trailers.set("X-Count", "3");
        CHECK(rs.write("data"));
        CHECK(rs.close(trailers));
        CHECK_FALSE(rs.is_open());
        CHECK(plinth::detail::state_of(rs)->trailer() == "X-Checksum: abc\r\nX-Count: 3\r\n");
        CHECK_FALSE(rs.close());
        CHECK_FALSE(rs.write("more"));
    }
    SECTION("a value with a line break")
    {
        for (auto bad : {"a\r\nX-Injected: 1", "a\nb", "a\rb"}) {
            http::fields trailers;
            trailers.set("X-Checksum", bad);
            CHECK_THROWS_AS(rs.close(trailers), std::invalid_argument);
        }
        CHECK(rs.is_open()); // nothing ended
        CHECK(rs.close());
        CHECK(plinth::detail::state_of(rs)->trailer().empty());
    }
}

// =============================================================================================
// Threads
// =============================================================================================

TEST_CASE("stream_state: producers on several threads, one consumer: every message once, in order per producer",
          "[stream]")
{
    constexpr int producers = 4;
    constexpr int per_producer = 2000;
    asio::io_context ioc; // completions run here, on a thread of its own
    auto work = asio::make_work_guard(ioc);
    std::thread runner([&] { ioc.run(); });

    auto st = make_state(ioc, bounded(std::size_t(1) << 30, std::size_t(1) << 30));
    std::mutex m;
    std::condition_variable cv;
    bool woken = false;
    st->attach([&](bool) { // called under the stream's lock
        std::lock_guard lock(m);
        woken = true;
        cv.notify_all();
    });

    std::atomic<int> completed{0};
    std::atomic<int> failed{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            for (int i = 0; i < per_producer; ++i)
                st->push(std::to_string(p) + ":" + std::to_string(i), [&](error_code ec) {
                    if (ec)
                        ++failed;
                    ++completed;
                });
        });

    // The connection: take, "write", wait for a wake when idle.
    std::vector<int> next(producers, 0);
    bool in_order = true;
    int received = 0;
    bool stalled = false;
    std::vector<stream_state::entry> batch;
    while (received < producers * per_producer && !stalled) {
        const auto r = st->take(batch, 512);
        if (r == take_result::data) {
            for (const auto& e : batch) {
                const auto colon = e.data.find(':');
                const int p = std::stoi(e.data.substr(0, colon));
                const int i = std::stoi(e.data.substr(colon + 1));
                in_order = in_order && i == next[static_cast<std::size_t>(p)];
                next[static_cast<std::size_t>(p)] = i + 1;
                ++received;
            }
            st->written(batch, {});
            continue;
        }
        REQUIRE(r == take_result::idle);
        std::unique_lock lock(m);
        stalled = !cv.wait_for(lock, patience, [&] { return woken; });
        woken = false;
    }
    for (auto& t : threads)
        t.join();
    CHECK_FALSE(stalled);
    CHECK(in_order);
    CHECK(received == producers * per_producer);
    st->finish(close_reason::closed);

    work.reset();
    runner.join(); // run() returns once every completion ran: they were tracked work
    CHECK(completed == producers * per_producer);
    CHECK(failed == 0);
}

TEST_CASE("stream_state: pushes racing finish either succeed or fail closed, each handler completes once", "[stream]")
{
    constexpr int producers = 3;
    constexpr int per_producer = 500;
    asio::io_context ioc;
    auto work = asio::make_work_guard(ioc);
    std::thread runner([&] { ioc.run(); });

    auto st = make_state(ioc, bounded(std::size_t(1) << 30, std::size_t(1) << 30));
    std::atomic<int> ok{0}, closed{0}, other{0};
    std::atomic<int> accepted{0};
    std::atomic<int> callbacks{0};
    st->on_close([&](close_reason) { ++callbacks; });
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p)
        threads.emplace_back([&] {
            while (!go) {}
            for (int i = 0; i < per_producer; ++i)
                // Bound to ioc: after finish() a handler without an executor would complete on
                // the system executor, which runner.join() does not wait for.
                accepted += st->push("m", asio::bind_executor(ioc, [&](error_code ec) {
                                         if (!ec)
                                             ++ok;
                                         else if (ec == stream_errc::closed)
                                             ++closed;
                                         else
                                             ++other;
                                     }));
        });
    std::thread finisher([&] {
        while (!go) {}
        std::vector<stream_state::entry> batch;
        for (int i = 0; i < 50; ++i) {
            if (st->take(batch, 64) == take_result::data)
                st->written(batch, {});
        }
        st->finish(close_reason::client_gone);
    });
    go = true;
    for (auto& t : threads)
        t.join();
    finisher.join();
    st->finish(close_reason::closed);

    work.reset();
    runner.join();
    CHECK(callbacks == 1);
    CHECK(other == 0);
    CHECK(ok + closed == producers * per_producer);
    CHECK(ok <= accepted);
}
