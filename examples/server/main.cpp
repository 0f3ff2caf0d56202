// plinth-example: the bundled example server. Every route shows one way to write a handler:
// synchronous, awaitable, suspended (resumed later from another thread), or streaming; /chat is
// a chat page on server-sent events with a long-polling fallback.
//
//   plinth-example [--address 127.0.0.1] [--port 8080] [--threads N] [--sse-heartbeat-ms 15000] [limits...]
//
// Limits (defaults in parentheses; see the README's table): --max-header-bytes (8192)
// --max-body-bytes (1048576) --header-timeout-ms (10000) --body-timeout-ms (30000)
// --idle-timeout-ms (60000) --idle-release-ms (50) --write-timeout-ms (30000) --max-connections (10000)
// --max-suspended (100000) --shutdown-grace-ms (5000); a timeout of 0 means none.
//
// On SIGINT or SIGTERM it stops gracefully (requests in flight get the grace to finish, then
// the still-suspended ones get 503 + Retry-After) and exits 0.

#include "chat.hpp"
#include "chat_page.hpp" // chat.html, embedded by the build

#include <plinth/plinth.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

struct flags {
    plinth::server_options options;
    unsigned threads = std::max(1u, std::thread::hardware_concurrency());
};

template <class T>
T parse_number(std::string_view text, std::string_view what)
{
    T value{};
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size())
        throw std::invalid_argument("invalid " + std::string(what) + ": '" + std::string(text) + "'");
    return value;
}

flags parse_flags(int argc, char** argv)
{
    flags f;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        auto value = [&]() -> std::string_view {
            if (i + 1 >= argc)
                throw std::invalid_argument(std::string(arg) + " needs a value");
            return argv[++i];
        };
        auto ms = [&] { return std::chrono::milliseconds(parse_number<std::uint32_t>(value(), arg)); };
        auto& o = f.options;
        if (arg == "--address")
            o.address = value();
        else if (arg == "--port")
            o.port = parse_number<std::uint16_t>(value(), arg);
        else if (arg == "--threads")
            f.threads = std::clamp(parse_number<unsigned>(value(), arg), 1u, 256u);
        else if (arg == "--max-header-bytes")
            o.max_header_bytes = parse_number<std::uint32_t>(value(), arg);
        else if (arg == "--max-body-bytes")
            o.max_body_bytes = parse_number<std::uint64_t>(value(), arg);
        else if (arg == "--header-timeout-ms")
            o.header_timeout = ms();
        else if (arg == "--body-timeout-ms")
            o.body_timeout = ms();
        else if (arg == "--idle-timeout-ms")
            o.idle_timeout = ms();
        else if (arg == "--idle-release-ms")
            o.idle_release = ms();
        else if (arg == "--write-timeout-ms")
            o.write_timeout = ms();
        else if (arg == "--max-connections")
            o.max_connections = parse_number<std::uint32_t>(value(), arg);
        else if (arg == "--max-suspended")
            o.max_suspended = parse_number<std::uint64_t>(value(), arg);
        else if (arg == "--shutdown-grace-ms")
            o.shutdown_grace = ms();
        else if (arg == "--sse-heartbeat-ms")
            o.streams.heartbeat = ms();
        else
            throw std::invalid_argument("unknown flag " + std::string(arg)
                                        + " (see the comment atop examples/server/main.cpp)");
    }
    return f;
}

template <class T = unsigned>
T query_number(const plinth::context& ctx, std::string_view name, std::type_identity_t<T> fallback)
{
    auto v = ctx.query(name);
    if (!v)
        return fallback;
    try {
        return parse_number<T>(*v, name);
    }
    catch (const std::invalid_argument&) {
        throw plinth::http_error(http::status::bad_request, std::string(name) + " must be a whole number");
    }
}

// A thread of its own that resumes suspended requests later, as another service would.
class background_resumer {
public:
    background_resumer()
        : thread_([this] { ioc_.run(); })
    {
    }
    ~background_resumer()
    {
        work_.reset();
        ioc_.stop(); // pending resumes are dropped: their requests were cancelled by the server's stop
    }

    void resume_after(plinth::async_response ar, std::chrono::milliseconds delay)
    {
        auto timer = std::make_shared<asio::steady_timer>(ioc_, delay);
        timer->async_wait([timer, ar, delay](boost::system::error_code ec) mutable {
            if (!ec) // on this background thread, not the connection's
                ar.resume(plinth::text("resumed after " + std::to_string(delay.count()) + " ms"));
        });
    }

private:
    asio::io_context ioc_{1};
    asio::executor_work_guard<asio::io_context::executor_type> work_{ioc_.get_executor()};
    std::jthread thread_;
};

// GET /suspend?resume_ms=N&timeout_ms=T&on_timeout=default|resume|cancel|extend
// The JAX-RS style: suspend, let another thread resume; optionally a timeout and its handler.
auto suspend_route(background_resumer& resumer)
{
    return [&resumer](const plinth::context& ctx, plinth::async_response ar) {
        auto resume_ms = ctx.query("resume_ms");
        auto timeout_ms = query_number(ctx, "timeout_ms", 0);
        auto on_timeout = ctx.query("on_timeout").value_or("default");
        if (timeout_ms > 0) {
            std::chrono::milliseconds timeout{timeout_ms};
            if (on_timeout == "resume")
                ar.on_timeout(
                    [](plinth::async_response a) { a.resume(plinth::text("resumed by the timeout handler")); });
            else if (on_timeout == "cancel")
                ar.on_timeout([](plinth::async_response a) { a.cancel(); });
            else if (on_timeout == "extend")
                ar.on_timeout([timeout](plinth::async_response a) { a.set_timeout(timeout); });
            else if (on_timeout != "default")
                throw plinth::http_error(http::status::bad_request,
                                         "on_timeout must be default, resume, cancel or extend");
            ar.set_timeout(timeout);
        }
        if (resume_ms)
            resumer.resume_after(ar, std::chrono::milliseconds(query_number(ctx, "resume_ms", 0)));
    };
}

// GET /offload?ms=N: blocking work (here, sleeping N ms) belongs on a pool of its own; the pool
// resumes the request when done. The connection's threads never block.
auto offload_route(asio::thread_pool& workers)
{
    return [&workers](const plinth::context& ctx, plinth::async_response ar) {
        std::chrono::milliseconds ms{query_number(ctx, "ms", 0)};
        if (ms > std::chrono::minutes(1))
            throw plinth::http_error(http::status::bad_request, "ms must be at most 60000");
        asio::post(workers, [ar, ms]() mutable {
            std::this_thread::sleep_for(ms); // the blocking call this route stands for
            ar.resume(plinth::text("worked " + std::to_string(ms.count()) + " ms on the pool"));
        });
    };
}

// GET /delay?ms=N: waits on a timer, holding no thread.
asio::awaitable<plinth::response> delay(const plinth::context& ctx)
{
    auto ms = query_number(ctx, "ms", 0);
    if (ms > 60'000)
        throw plinth::http_error(http::status::bad_request, "ms must be at most 60000");
    asio::steady_timer timer{co_await asio::this_coro::executor, std::chrono::milliseconds(ms)};
    co_await timer.async_wait(asio::use_awaitable);
    co_return plinth::text("waited " + std::to_string(ms) + " ms");
}

// Ticks at the client's pace: each waits until the previous one was handed to the socket.
// Callbacks rather than a coroutine: a stream that waits for its next tick holds only this
// object and its timer's wait, where a coroutine would keep its frame.
class ticker : public std::enable_shared_from_this<ticker> {
public:
    ticker(plinth::sse_stream events, std::chrono::milliseconds interval, const asio::any_io_executor& executor)
        : events_(std::move(events))
        , interval_(interval)
        , timer_(executor)
    {
    }

    void start()
    {
        // The stream's end (on this strand) cancels the wait, so a stop need not wait for a tick.
        events_.on_close([weak = weak_from_this()](plinth::close_reason) {
            if (auto self = weak.lock())
                self->timer_.cancel();
        });
        wait();
    }

private:
    void wait()
    {
        timer_.expires_after(interval_);
        timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (!ec && self->events_.is_open())
                self->tick();
        });
    }

    void tick()
    {
        events_.async_send(plinth::sse_event{.data = std::to_string(++count_), .event = "tick", .id = {}, .retry = {}},
                           [self = shared_from_this()](boost::system::error_code ec) {
                               if (!ec)
                                   self->wait();
                           });
    }

    plinth::sse_stream events_;
    std::chrono::milliseconds interval_;
    asio::steady_timer timer_;
    std::uint64_t count_ = 0;
};

// GET /events?interval_ms=N&after=ID: server-sent events. A `tick` every N ms, and every chat
// message as a `message` event with its id; a reconnecting browser's Last-Event-ID (or `after`,
// for a page's first connection) replays the messages it missed.
auto events_route(example::chat_room& room)
{
    return [&room](const plinth::context& ctx, plinth::sse_stream events) {
        const std::chrono::milliseconds interval{query_number(ctx, "interval_ms", 1000)};
        if (interval < std::chrono::milliseconds(10) || interval > std::chrono::hours(1))
            throw plinth::http_error(http::status::bad_request, "interval_ms must be within 10..3600000");
        std::uint64_t after = query_number<std::uint64_t>(ctx, "after", 0);
        if (!events.last_event_id().empty()) { // a reconnection: the browser knows where it was
            try {
                after = parse_number<std::uint64_t>(events.last_event_id(), "Last-Event-ID");
            }
            catch (const std::invalid_argument&) {
                throw plinth::http_error(http::status::bad_request, "Last-Event-ID must be a message id");
            }
        }
        asio::co_spawn(ctx.executor(), room.subscribe(events, after), asio::detached);
        std::make_shared<ticker>(events, interval, ctx.executor())->start();
    };
}

// GET /chat/poll?after=ID&timeout_ms=T: long-polling. The messages after ID at once (200, a JSON
// array), or the next one when it comes (200), or 204 after T ms.
auto poll_route(example::chat_room& room)
{
    return [&room](const plinth::context& ctx, plinth::async_response ar) {
        const auto after = query_number<std::uint64_t>(ctx, "after", 0);
        const std::chrono::milliseconds timeout{query_number(ctx, "timeout_ms", 25'000)};
        if (timeout > std::chrono::minutes(10))
            throw plinth::http_error(http::status::bad_request, "timeout_ms must be at most 600000");
        room.poll(std::move(ar), after, timeout);
    };
}

// POST /chat/send: the body is the message; 201 with its id.
auto send_route(example::chat_room& room)
{
    return [&room](const plinth::request& req) {
        if (req.body().empty())
            throw plinth::http_error(http::status::bad_request, "the message is empty");
        if (req.body().size() > 4096)
            throw plinth::http_error(http::status::payload_too_large, "a message has at most 4096 bytes");
        const auto id = room.post(req.body());
        return plinth::json("{\"id\":" + std::to_string(id) + "}", http::status::created);
    };
}

std::string stats_json(const plinth::server_stats& s)
{
    std::string out = "{";
    auto field = [&](const char* name, std::uint64_t v) {
        if (out.size() > 1)
            out += ',';
        out += '"' + std::string(name) + "\":" + std::to_string(v);
    };
    field("connections", s.connections);
    field("accepted", s.accepted);
    field("requests", s.requests);
    field("suspended", s.suspended);
    field("resumed", s.resumed);
    field("cancelled", s.cancelled);
    field("timed_out", s.timed_out);
    field("disconnected", s.disconnected);
    field("completed", s.completed);
    field("refused", s.refused);
    field("rejected", s.rejected);
    field("timeouts", s.timeouts);
    field("streams", s.streams);
    return out + "}";
}

} // namespace

int main(int argc, char** argv)
{
    flags f;
    try {
        f = parse_flags(argc, argv);
    }
    catch (const std::exception& e) {
        std::cerr << "plinth-example: " << e.what() << "\n";
        return 2;
    }

    example::chat_room room; // outlives the io_context: streams and polls point at it
    asio::io_context ioc{f.threads == 1 ? 1 : static_cast<int>(f.threads)};
    asio::thread_pool workers{4};               // for /offload
    background_resumer resumer;                 // for /suspend?resume_ms=N
    f.options.single_threaded = f.threads == 1; // no strand per connection is needed then
    plinth::server srv{ioc, f.options};
    srv.routes({
        {http::verb::get, "/hello", [](const plinth::request&) { return plinth::text("Hello, World!"); }},
        {http::verb::get, "/delay", delay},
        {http::verb::get, "/users/{id}",
         [](const plinth::context& ctx) {
             return plinth::json("{\"id\":" + example::json_string(ctx.param("id")) + "}");
         }},
        {http::verb::post, "/echo",
         [](const plinth::request& req) {
             return plinth::make_response(http::status::ok, req.body(),
                                          req[http::field::content_type].empty()
                                              ? "application/octet-stream"
                                              : std::string_view(req[http::field::content_type]));
         }},
        {http::verb::get, "/stats", [&srv](const plinth::request&) { return plinth::json(stats_json(srv.stats())); }},
        {http::verb::get, "/suspend", suspend_route(resumer)},
        {http::verb::get, "/offload", offload_route(workers)},
        {http::verb::get, "/cancel",
         [](const plinth::context& ctx, plinth::async_response ar) {
             ar.cancel(std::chrono::seconds(query_number(ctx, "retry_after", 0)));
         }},
        {http::verb::get, "/chat",
         [](const plinth::request&) {
             return plinth::make_response(http::status::ok, std::string(example::chat_page),
                                          "text/html; charset=utf-8");
         }},
        {http::verb::get, "/events", events_route(room)},
        {http::verb::get, "/chat/poll", poll_route(room)},
        {http::verb::post, "/chat/send", send_route(room)},
    });

    try {
        srv.start();
    }
    catch (const std::exception& e) {
        std::cerr << "plinth-example: cannot listen on " << f.options.address << ":" << f.options.port << ": "
                  << e.what() << "\n";
        return 1;
    }

    asio::signal_set signals{asio::make_strand(ioc), SIGINT, SIGTERM};
    // The first signal stops gracefully; a second one, during the grace, stops at once.
    signals.async_wait([&](const boost::system::error_code& ec, int) {
        if (ec)
            return;
        room.close(f.options.shutdown_retry_after); // long-polls need not wait out the grace
        srv.async_stop(f.options.shutdown_grace, [&] {
            asio::post(signals.get_executor(), [&] { signals.cancel(); }); // run() may now return
        });
        signals.async_wait([&](const boost::system::error_code& ec, int) {
            if (!ec)
                ioc.stop();
        });
    });

    std::cout << "plinth-example listening on http://" << f.options.address << ":" << srv.port() << " with "
              << f.threads << " thread(s)" << std::endl;

    std::vector<std::jthread> pool;
    for (unsigned i = 1; i < f.threads; ++i)
        pool.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    pool.clear();
    workers.stop(); // an /offload still sleeping has nobody left to answer
    std::cout << "plinth-example stopped after " << srv.stats().requests << " request(s)" << std::endl;
    return 0;
}
