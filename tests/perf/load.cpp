//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// plinth-perf-load: the benchmark suite's load generator for what wrk cannot do: hold up to
// 19,000 suspended requests on one server and time each of their answers. It drives the routes
// of plinth-perf-server (GET /park, POST /resume, GET /stats, GET /wait); waits also runs
// against the peers.
//
//   plinth-perf-load capacity --port P --n N
//       GET /park on N connections; polls GET /stats until N are suspended and reports the
//       server's RSS per held request; then POST /resume?rate=0 and expects N 200s.
//   plinth-perf-load latency --port P --n N [--rate R]
//       GET /park on N connections, then POST /resume?rate=R (0: as fast as possible); each
//       answer's latency is the client's steady clock at its last byte minus the server's
//       steady clock in its body (both CLOCK_MONOTONIC), so it includes this client's cost.
//   plinth-perf-load timeouts --port P --n N --timeout-ms T [--rate R]
//       connects N first, then sends GET /park?timeout_ms=T on each, R per second (20000);
//       reports how late each 503 came: arrival - send - T.
//   plinth-perf-load waits --port P --n N [--target /wait?ms=1000]
//       GET <target> with Connection: close on N connections at once; expects N 200s.
//   plinth-perf-load hold --port P --n N --pid PID [--target /hello] [--head-only]
//       GET <target> on N keep-alive connections, reads each answer (or, with --head-only, its
//       head: an event stream's), then holds them all open and idle; reports the RSS of process
//       PID (the server, or nginx's worker) per connection held, read from /proc.
//   plinth-perf-load stalls [--seconds S]
//       no server: reads the clock in a loop for S seconds (2) and reports the gaps over 20 µs,
//       when this thread did not run (an interrupt, the hypervisor). Run on the server's CPU, it
//       tells how much of a latency tail the machine itself makes.
//
// Common flags: --timeout-s S (120) overall limit; --per-address A (5000) connections per
// source address, 127.0.0.2 upwards; --connect-concurrency C (500) connects in flight (a server
// that accepts slowly behind a small listen backlog, like cpp-httplib's 5, needs far fewer);
// --dump FILE writes one line per connection, "index ok sent_ns arrived_ns body_ns", to plot.
//
// Human progress goes to stderr; the last line on stdout is the result, "key=value ...". Exits 0
// only if every request got its expected answer within --timeout-s (1 otherwise, 2 on usage).

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "rss.hpp"

#include <netinet/in.h>
#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using boost::system::error_code;
using namespace std::chrono_literals;

namespace {

// Errors come back as values: a failed connection is counted, not thrown through a coroutine.
const auto use_tuple = asio::as_tuple(asio::use_awaitable);

// The kernel picks the source port at connect time, per 4-tuple, instead of at bind time from
// the address's whole ephemeral range (which would cap each address at ~28,000 sockets in all).
using bind_address_no_port = asio::detail::socket_option::boolean<IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT>;

constexpr int max_connect_attempts = 5;
constexpr std::size_t buffer_limit = 8192; // the answers are a few hundred bytes
constexpr std::size_t reported_errors = 5; // the first few, then only counted

enum class mode { capacity, latency, timeouts, waits, hold };

struct options {
    mode what = mode::capacity;
    unsigned short port = 0;
    std::size_t n = 1000;
    std::optional<unsigned> rate;
    unsigned timeout_ms = 1000;
    std::string target = "/wait?ms=1000";
    unsigned timeout_s = 120;
    std::size_t per_address = 5000;
    std::size_t connect_concurrency = 500;
    std::string dump; // a file for every connection's raw timings
    std::string pid;  // hold: the process whose memory is measured
    bool head_only = false; // hold: read the answer's head only (it is a stream)
};

std::int64_t now_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count();
}

double ms_since(clock_type::time_point start)
{
    return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

template <class T>
std::optional<T> number(std::string_view text)
{
    T v{};
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size())
        return std::nullopt;
    return v;
}

// The value of "key":123 in /stats' one-line JSON.
std::optional<std::uint64_t> json_number(std::string_view body, std::string_view key)
{
    const std::string quoted = "\"" + std::string(key) + "\":";
    const auto at = body.find(quoted);
    if (at == std::string_view::npos)
        return std::nullopt;
    body.remove_prefix(at + quoted.size());
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
    if (ec != std::errc{})
        return std::nullopt;
    return v;
}

std::uint64_t peak_rss_kib()
{
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.starts_with("VmHWM:"))
            return std::strtoull(line.c_str() + 6, nullptr, 10);
    return 0;
}

// Nearest rank: the smallest value with at least a fraction p of all values at or below it.
double percentile(const std::vector<double>& sorted, double p)
{
    if (sorted.empty())
        return 0;
    const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
    return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

// Worth another try: the listen backlog or the ports of a source address were momentarily full.
bool transient(const error_code& ec)
{
    return ec == asio::error::connection_refused || ec == asio::error::connection_reset || ec == asio::error::timed_out
        || ec == asio::error::try_again || ec == asio::error::address_in_use || ec == asio::error::no_buffer_space
        || ec == boost::system::errc::address_not_available;
}

struct server_stats {
    std::uint64_t suspended = 0;
    std::uint64_t connections = 0;
    std::uint64_t rss_kib = 0;
};

// One keep-alive connection from 127.0.0.1 for /stats and /resume, apart from the load.
class control_connection {
public:
    control_connection(asio::io_context& ioc, tcp::endpoint server)
        : socket_(ioc)
        , server_(server)
    {
    }

    // The response, or nullopt if the exchange failed (the next call reconnects).
    asio::awaitable<std::optional<http::response<http::string_body>>> request(http::verb verb, std::string target)
    {
        if (!socket_.is_open()) {
            auto [ec] = co_await socket_.async_connect(server_, use_tuple);
            if (ec) {
                std::cerr << "plinth-perf-load: control connect: " << ec.message() << "\n";
                socket_.close(ec);
                co_return std::nullopt;
            }
        }
        http::request<http::empty_body> req{verb, target, 11};
        req.set(http::field::host, "load");
        req.prepare_payload();
        auto [wec, wn] = co_await http::async_write(socket_, req, use_tuple);
        http::response<http::string_body> res;
        error_code rec;
        if (!wec)
            std::tie(rec, std::ignore) = co_await http::async_read(socket_, buffer_, res, use_tuple);
        if (wec || rec) {
            std::cerr << "plinth-perf-load: control " << target << ": " << (wec ? wec : rec).message() << "\n";
            error_code ignored;
            socket_.close(ignored);
            buffer_.clear();
            co_return std::nullopt;
        }
        co_return res;
    }

private:
    tcp::socket socket_;
    tcp::endpoint server_;
    beast::flat_buffer buffer_{buffer_limit};
};

// One load connection: what the results need, nothing per request beyond the socket.
struct connection {
    explicit connection(asio::io_context& ioc)
        : socket(ioc)
    {
    }
    tcp::socket socket;
    std::int64_t sent_ns = 0;    // the request was handed to the kernel
    std::int64_t arrived_ns = 0; // the response's last byte was parsed
    std::int64_t body_ns = 0;    // latency: the server's clock just before the resume
    bool ok = false;             // the expected answer arrived
};

class load_test {
public:
    load_test(asio::io_context& ioc, options opt)
        : ioc_(ioc)
        , opt_(std::move(opt))
        , server_(asio::ip::address_v4::loopback(), opt_.port)
        , control_(ioc, server_)
        , wake_(ioc)
        , ticker_(ioc)
    {
        std::string target = "/park";
        expected_status_ = http::status::ok;
        if (opt_.what == mode::timeouts) {
            target = "/park?timeout_ms=" + std::to_string(opt_.timeout_ms);
            expected_status_ = http::status::service_unavailable;
        }
        else if (opt_.what == mode::waits || opt_.what == mode::hold)
            target = opt_.target;
        // One request text for every connection: nothing to serialize per request.
        request_ = "GET " + target + " HTTP/1.1\r\nHost: load\r\n";
        if (opt_.what == mode::waits)
            request_ += "Connection: close\r\n";
        request_ += "\r\n";
        for (std::size_t i = 0; i < opt_.n; ++i)
            conns_.emplace_back(ioc_);
    }

    // The whole test, up to the last answer; report() then says how it went.
    asio::awaitable<void> run()
    {
        started_ = clock_type::now();
        asio::co_spawn(ioc_, tick(), asio::detached);
        switch (opt_.what) {
        case mode::capacity:
        case mode::latency: co_await run_park(); break;
        case mode::timeouts: co_await run_timeouts(); break;
        case mode::waits: co_await run_waits(); break;
        case mode::hold: co_await run_hold(); break;
        }
        done_ = true;
        ticker_.cancel();
    }

    // The result line, from whatever has completed (all of it unless timed out).
    bool report(bool timed_out)
    {
        const bool all_answered = answered_ == opt_.n && failed_ == 0 && connect_failed_ == 0;
        bool ok = all_answered && !timed_out && !aborted_;
        std::string line;
        char field[128];
        auto add = [&](const char* format, auto... values) {
            std::snprintf(field, sizeof field, format, values...);
            line += line.empty() ? "" : " ";
            line += field;
        };
        switch (opt_.what) {
        case mode::capacity: {
            add("mode=capacity n=%zu held=%llu", opt_.n, static_cast<unsigned long long>(held_));
            add("rss_before_kib=%llu rss_held_kib=%llu", static_cast<unsigned long long>(rss_before_kib_),
                static_cast<unsigned long long>(rss_held_kib_));
            const auto grown = static_cast<double>(rss_held_kib_) - static_cast<double>(rss_before_kib_);
            add("bytes_per_request=%.0f", opt_.n ? grown * 1024 / static_cast<double>(opt_.n) : 0.0);
            ok = ok && held_ == opt_.n;
            break;
        }
        case mode::latency: {
            std::vector<double> us;
            std::int64_t first_resume = INT64_MAX, last_arrival = 0;
            for (const auto& c : conns_)
                if (c.ok) {
                    us.push_back(static_cast<double>(c.arrived_ns - c.body_ns) / 1e3);
                    first_resume = std::min(first_resume, c.body_ns);
                    last_arrival = std::max(last_arrival, c.arrived_ns);
                }
            std::sort(us.begin(), us.end());
            add("mode=latency n=%zu rate=%u", opt_.n, opt_.rate.value_or(0));
            add("p50_us=%.1f p99_us=%.1f p999_us=%.1f", percentile(us, 0.5), percentile(us, 0.99),
                percentile(us, 0.999));
            add("max_us=%.1f min_us=%.1f", us.empty() ? 0.0 : us.back(), us.empty() ? 0.0 : us.front());
            // How long the resume took, first resume to last byte: R per second, if kept up.
            add("resume_ms=%.1f", us.empty() ? 0.0 : static_cast<double>(last_arrival - first_resume) / 1e6);
            break;
        }
        case mode::timeouts: {
            std::vector<double> late;
            for (const auto& c : conns_)
                if (c.ok)
                    late.push_back(static_cast<double>(c.arrived_ns - c.sent_ns) / 1e6 - opt_.timeout_ms);
            std::sort(late.begin(), late.end());
            const double lo = late.empty() ? 0 : late.front(), hi = late.empty() ? 0 : late.back();
            add("mode=timeouts n=%zu timeout_ms=%u rate=%u", opt_.n, opt_.timeout_ms, opt_.rate.value_or(0));
            add("p0_ms=%.2f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f spread_ms=%.2f", lo, percentile(late, 0.5),
                percentile(late, 0.99), hi, hi - lo);
            add("send_ms=%.1f", send_ms_);
            break;
        }
        case mode::hold: {
            add("mode=hold n=%zu target=%s", opt_.n, opt_.target.c_str());
            add("rss_before_kib=%llu rss_held_kib=%llu", static_cast<unsigned long long>(rss_before_kib_),
                static_cast<unsigned long long>(rss_held_kib_));
            const auto grown = static_cast<double>(rss_held_kib_) - static_cast<double>(rss_before_kib_);
            add("bytes_per_connection=%.0f", opt_.n ? grown * 1024 / static_cast<double>(opt_.n) : 0.0);
            break;
        }
        case mode::waits: {
            double lo = 0, hi = 0;
            std::int64_t last_arrival = 0;
            bool first = true;
            for (const auto& c : conns_)
                if (c.ok) {
                    const double ms = static_cast<double>(c.arrived_ns - c.sent_ns) / 1e6;
                    lo = first ? ms : std::min(lo, ms);
                    hi = first ? ms : std::max(hi, ms);
                    first = false;
                    last_arrival = std::max(last_arrival, c.arrived_ns);
                }
            const auto start_ns =
                std::chrono::duration_cast<std::chrono::nanoseconds>(started_.time_since_epoch()).count();
            // Until the last answer; a timed-out run counts until now.
            const double elapsed =
                timed_out || !all_answered ? ms_since(started_) : static_cast<double>(last_arrival - start_ns) / 1e6;
            add("mode=waits n=%zu elapsed_ms=%.1f min_ms=%.1f max_ms=%.1f", opt_.n, elapsed, lo, hi);
            break;
        }
        }
        add("answered=%zu failed=%zu connect_failed=%zu connect_retries=%zu", answered_, failed_, connect_failed_,
            connect_retries_);
        add("connect_ms=%.1f total_ms=%.1f client_peak_rss_kib=%llu timed_out=%d", connect_ms_, ms_since(started_),
            static_cast<unsigned long long>(peak_rss_kib()), timed_out ? 1 : 0);
        std::cout << line << std::endl;
        if (!opt_.dump.empty())
            dump();
        return ok;
    }

private:
    void dump() const
    {
        std::ofstream out(opt_.dump);
        std::size_t i = 0;
        for (const auto& c : conns_)
            out << i++ << ' ' << c.ok << ' ' << c.sent_ns << ' ' << c.arrived_ns << ' ' << c.body_ns << '\n';
        if (!out)
            std::cerr << "plinth-perf-load: could not write " << opt_.dump << "\n";
    }

    // capacity and latency: park N requests, see them all suspended, resume them, time the answers.
    asio::awaitable<void> run_park()
    {
        auto before = co_await stats();
        if (!before)
            co_return abort("no /stats from the server");
        rss_before_kib_ = before->rss_kib;
        co_await open_all(true);
        co_await until([this] { return writes_done_ == spawned_; });
        connect_ms_ = ms_since(started_);
        std::cerr << "plinth-perf-load: " << written_ << " requests written in " << static_cast<long>(connect_ms_)
                  << " ms\n";
        // Every written request has its read posted (exchange() reads right after writing), so
        // nothing on this side is late to the answers once the server has them all suspended.
        for (;;) {
            auto s = co_await stats();
            if (!s)
                co_return abort("no /stats from the server");
            held_ = s->suspended;
            rss_held_kib_ = s->rss_kib;
            if (held_ >= spawned_ - failed_)
                break;
            co_await sleep(50ms);
        }
        std::cerr << "plinth-perf-load: " << held_ << " suspended, server rss " << rss_held_kib_ << " KiB (was "
                  << rss_before_kib_ << ")\n";
        const unsigned rate = opt_.what == mode::latency ? opt_.rate.value_or(0) : 0;
        auto res = co_await control_.request(http::verb::post, "/resume?rate=" + std::to_string(rate));
        if (!res || res->result() != http::status::accepted)
            co_return abort("POST /resume was not answered 202");
        resume_sent_ = true;
        co_await until([this] { return answered_ + failed_ == spawned_; });
    }

    // timeouts: connect everything first so the sends can be paced exactly.
    asio::awaitable<void> run_timeouts()
    {
        co_await open_all(false);
        connect_ms_ = ms_since(started_);
        std::cerr << "plinth-perf-load: " << connected_ << " connected in " << static_cast<long>(connect_ms_)
                  << " ms\n";
        const unsigned rate = opt_.rate.value_or(0);
        const auto send_start = clock_type::now();
        asio::steady_timer timer{ioc_};
        std::size_t k = 0;
        for (std::size_t i = 0; i < opt_.n; ++i) {
            if (!conns_[i].socket.is_open())
                continue; // its connect failed, already counted
            if (rate != 0) {
                const auto due = send_start
                    + std::chrono::nanoseconds(static_cast<std::int64_t>(static_cast<double>(k++) * 1e9 / rate));
                if (clock_type::now() < due) { // otherwise send everything due, then sleep again
                    timer.expires_at(due);
                    co_await timer.async_wait(use_tuple);
                }
            }
            spawn_exchange(i);
        }
        co_await until([this] { return writes_done_ == spawned_; });
        send_ms_ = ms_since(send_start);
        std::cerr << "plinth-perf-load: " << written_ << " requests written in " << static_cast<long>(send_ms_)
                  << " ms\n";
        co_await until([this] { return answered_ + failed_ == spawned_; });
    }

    // hold: N answered connections held open and idle; the server's memory before and after.
    asio::awaitable<void> run_hold()
    {
        rss_before_kib_ = rss_kib(opt_.pid);
        if (rss_before_kib_ == 0)
            co_return abort("no memory figure for process " + opt_.pid);
        co_await open_all(true);
        co_await until([this] { return answered_ + failed_ + connect_failed_ == opt_.n; });
        connect_ms_ = ms_since(started_);
        co_await sleep(1s); // what the answers freed settles
        rss_held_kib_ = rss_kib(opt_.pid);
        std::cerr << "plinth-perf-load: " << answered_ << " connections held, server rss " << rss_held_kib_
                  << " KiB (was " << rss_before_kib_ << ")\n";
    }

    // waits: everything at once, each request written as soon as its connection is up.
    asio::awaitable<void> run_waits()
    {
        co_await open_all(true);
        co_await until([this] { return writes_done_ == spawned_; });
        connect_ms_ = ms_since(started_);
        std::cerr << "plinth-perf-load: " << written_ << " requests written in " << static_cast<long>(connect_ms_)
                  << " ms\n";
        co_await until([this] { return answered_ + failed_ == spawned_; });
    }

    // Connects every connection, at most connect_concurrency at a time: more would overrun the
    // server's listen backlog, and a dropped SYN costs a one-second retransmission.
    asio::awaitable<void> open_all(bool send)
    {
        const auto openers = std::max<std::size_t>(1, std::min(opt_.connect_concurrency, opt_.n));
        openers_ = openers;
        for (std::size_t k = 0; k < openers; ++k)
            asio::co_spawn(ioc_, opener(send), asio::detached);
        co_await until([this] { return openers_ == 0; });
    }

    asio::awaitable<void> opener(bool send)
    {
        while (next_ < opt_.n) {
            const std::size_t i = next_++;
            if (co_await connect(i) && send)
                spawn_exchange(i);
        }
        --openers_;
        notify();
    }

    asio::awaitable<bool> connect(std::size_t i)
    {
        auto& socket = conns_[i].socket;
        // 127.0.0.2 upwards, per_address each: one address has only ~28,000 ports to one server port.
        const tcp::endpoint source{asio::ip::address_v4(static_cast<std::uint32_t>(
                                       0x7F000002 + i / std::max<std::size_t>(1, opt_.per_address))),
                                   0};
        for (int attempt = 1;; ++attempt) {
            error_code ec;
            socket.open(tcp::v4(), ec);
            if (!ec)
                socket.set_option(bind_address_no_port(true), ec);
            if (!ec)
                socket.bind(source, ec);
            if (!ec)
                std::tie(ec) = co_await socket.async_connect(server_, use_tuple);
            if (!ec) {
                ++connected_;
                co_return true;
            }
            error_code ignored;
            socket.close(ignored);
            if (attempt == max_connect_attempts || !transient(ec)) {
                if (connect_failed_++ < reported_errors)
                    std::cerr << "plinth-perf-load: connect " << i << " from " << source.address() << " failed after "
                              << attempt << " attempts: " << ec.message() << "\n";
                notify();
                co_return false;
            }
            ++connect_retries_;
            co_await sleep(std::chrono::milliseconds(20 * attempt));
        }
    }

    void spawn_exchange(std::size_t i)
    {
        ++spawned_;
        asio::co_spawn(ioc_, exchange(i), asio::detached);
    }

    // Writes the request and reads its answer. The socket stays open until the process ends:
    // closing it now would hand the server (sharing these two cores) work during the answers.
    asio::awaitable<void> exchange(std::size_t i)
    {
        auto& c = conns_[i];
        // A request this small goes out in one send on a fresh socket: send it here, so sent_ns
        // is when it left rather than when a queued completion got to run. Stamped before the
        // send: the server cannot start on the request earlier, while the send's wakeup of the
        // server may preempt this thread before it could read the clock afterwards.
        error_code wec;
        c.socket.non_blocking(true, wec);
        c.sent_ns = now_ns();
        std::size_t sent = wec ? 0 : c.socket.write_some(asio::buffer(request_), wec);
        if (wec == asio::error::would_block)
            wec = {};
        if (!wec && sent < request_.size())
            std::tie(wec, std::ignore) = co_await asio::async_write(
                c.socket, asio::buffer(request_.data() + sent, request_.size() - sent), use_tuple);
        ++writes_done_;
        if (wec) {
            fail(i, "write", wec.message());
            co_return;
        }
        ++written_;
        notify();
        // Per connection only while the answer is outstanding: a small buffer and parser.
        beast::flat_buffer buffer{buffer_limit};
        http::response_parser<http::string_body> parser;
        parser.header_limit(buffer_limit);
        parser.body_limit(buffer_limit);
        error_code rec;
        if (opt_.head_only)
            std::tie(rec, std::ignore) = co_await http::async_read_header(c.socket, buffer, parser, use_tuple);
        else
            std::tie(rec, std::ignore) = co_await http::async_read(c.socket, buffer, parser, use_tuple);
        c.arrived_ns = now_ns();
        if (rec) {
            fail(i, "read", rec.message());
            co_return;
        }
        const auto& res = parser.get();
        if (res.result() != expected_status_) {
            fail(i, "status", std::to_string(res.result_int()));
            co_return;
        }
        if (opt_.what == mode::latency) {
            auto body = number<std::int64_t>(res.body());
            if (!body) {
                fail(i, "body", res.body());
                co_return;
            }
            c.body_ns = *body;
        }
        c.ok = true;
        ++answered_;
        notify();
    }

    void fail(std::size_t i, std::string_view what, std::string_view detail)
    {
        if (failed_++ < reported_errors)
            std::cerr << "plinth-perf-load: connection " << i << ": " << what << ": " << detail << "\n";
        notify();
    }

    void abort(const std::string& why)
    {
        std::cerr << "plinth-perf-load: " << why << "\n";
        aborted_ = true;
    }

    asio::awaitable<std::optional<server_stats>> stats()
    {
        auto res = co_await control_.request(http::verb::get, "/stats");
        if (!res || res->result() != http::status::ok)
            co_return std::nullopt;
        auto suspended = json_number(res->body(), "suspended");
        auto connections = json_number(res->body(), "connections");
        auto rss = json_number(res->body(), "rss_kib");
        if (!suspended || !connections || !rss)
            co_return std::nullopt;
        last_stats_ = {*suspended, *connections, *rss};
        co_return last_stats_;
    }

    asio::awaitable<void> sleep(clock_type::duration d)
    {
        asio::steady_timer timer{ioc_, d};
        co_await timer.async_wait(use_tuple);
    }

    // The main coroutine sleeps here; every counter change cancels its timer to recheck.
    template <class Pred>
    asio::awaitable<void> until(Pred done)
    {
        while (!done()) {
            wake_.expires_at(clock_type::time_point::max());
            co_await wake_.async_wait(use_tuple);
        }
    }

    void notify() { wake_.cancel(); }

    asio::awaitable<void> tick()
    {
        while (!done_) {
            ticker_.expires_after(1s);
            co_await ticker_.async_wait(use_tuple);
            if (done_)
                break;
            std::fprintf(stderr,
                         "plinth-perf-load: %6.1fs connected %zu/%zu (failed %zu, retries %zu) written %zu "
                         "suspended %llu answered %zu failed %zu%s\n",
                         ms_since(started_) / 1e3, connected_, opt_.n, connect_failed_, connect_retries_, written_,
                         static_cast<unsigned long long>(last_stats_.suspended), answered_, failed_,
                         resume_sent_ ? " (resumed)" : "");
        }
    }

    asio::io_context& ioc_;
    options opt_;
    tcp::endpoint server_;
    control_connection control_;
    asio::steady_timer wake_;
    asio::steady_timer ticker_;
    std::string request_;
    http::status expected_status_;
    std::deque<connection> conns_; // a deque: stable addresses, no 19,000-element reallocation

    clock_type::time_point started_;
    std::size_t next_ = 0, openers_ = 0;
    std::size_t connected_ = 0, connect_failed_ = 0, connect_retries_ = 0;
    std::size_t spawned_ = 0, writes_done_ = 0, written_ = 0, answered_ = 0, failed_ = 0;
    server_stats last_stats_;
    std::uint64_t held_ = 0, rss_before_kib_ = 0, rss_held_kib_ = 0;
    double connect_ms_ = 0, send_ms_ = 0;
    bool resume_sent_ = false, done_ = false, aborted_ = false;
};

// The stalls subcommand: spins on purpose (it measures when it is not running).
int measure_stalls(unsigned seconds)
{
    constexpr double threshold_us = 20;
    std::vector<double> gaps;
    const auto start = clock_type::now();
    const auto end = start + std::chrono::seconds(seconds);
    for (auto last = start;;) {
        const auto now = clock_type::now();
        if (now >= end)
            break;
        if (const double gap = std::chrono::duration<double, std::micro>(now - last).count(); gap > threshold_us)
            gaps.push_back(gap);
        last = now;
    }
    std::sort(gaps.begin(), gaps.end());
    double total_us = 0, over_100 = 0;
    for (double g : gaps) {
        total_us += g;
        over_100 += g > 100;
    }
    std::printf("mode=stalls seconds=%u stalls_per_s=%.1f over_100us_per_s=%.1f stalled_ms_per_s=%.2f "
                "p50_us=%.1f max_us=%.1f\n",
                seconds, static_cast<double>(gaps.size()) / seconds, over_100 / seconds, total_us / 1000 / seconds,
                gaps.empty() ? 0.0 : gaps[gaps.size() / 2], gaps.empty() ? 0.0 : gaps.back());
    return 0;
}

int usage(const char* message)
{
    std::cerr << "plinth-perf-load: " << message << "\n"
              << "usage: plinth-perf-load capacity|latency|timeouts|waits|hold --port P --n N [--rate R]\n"
              << "       [--timeout-ms T] [--target /wait?ms=1000] [--timeout-s 120] [--per-address 5000]\n"
              << "       [--connect-concurrency 500] [--dump FILE] [--pid PID] [--head-only]\n"
              << "   or: plinth-perf-load stalls [--seconds 2]\n";
    return 2;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 2)
        return usage("no subcommand");
    options opt;
    const std::string_view what = argv[1];
    if (what == "stalls") {
        unsigned seconds = 2;
        if (argc == 4 && std::string_view(argv[2]) == "--seconds" && number<unsigned>(argv[3]))
            seconds = std::max(1u, *number<unsigned>(argv[3]));
        else if (argc != 2)
            return usage("stalls takes --seconds S only");
        return measure_stalls(seconds);
    }
    if (what == "capacity")
        opt.what = mode::capacity;
    else if (what == "latency")
        opt.what = mode::latency;
    else if (what == "timeouts")
        opt.what = mode::timeouts;
    else if (what == "waits")
        opt.what = mode::waits;
    else if (what == "hold") {
        opt.what = mode::hold;
        opt.target = "/hello";
    }
    else
        return usage("unknown subcommand");
    for (int i = 2; i < argc; i += 2) {
        const std::string_view flag = argv[i];
        if (flag == "--head-only") {
            opt.head_only = true;
            --i; // a flag without a value
            continue;
        }
        if (i + 1 >= argc)
            return usage("a flag without its value");
        const std::string_view value = argv[i + 1];
        auto unsigned_value = number<unsigned>(value);
        if (flag == "--target" || flag == "--dump" || flag == "--pid") {
            (flag == "--target" ? opt.target : flag == "--dump" ? opt.dump : opt.pid) = value;
            continue;
        }
        if (!unsigned_value)
            return usage("a flag's value is not a number");
        if (flag == "--port")
            opt.port = static_cast<unsigned short>(*unsigned_value);
        else if (flag == "--n")
            opt.n = *unsigned_value;
        else if (flag == "--rate")
            opt.rate = *unsigned_value;
        else if (flag == "--timeout-ms")
            opt.timeout_ms = *unsigned_value;
        else if (flag == "--timeout-s")
            opt.timeout_s = *unsigned_value;
        else if (flag == "--per-address")
            opt.per_address = std::max(1u, *unsigned_value);
        else if (flag == "--connect-concurrency")
            opt.connect_concurrency = std::max(1u, *unsigned_value);
        else
            return usage("unknown flag");
    }
    if (opt.port == 0)
        return usage("--port is required");
    if (opt.what == mode::hold && opt.pid.empty())
        return usage("hold needs --pid");
    if (!opt.rate)
        opt.rate = opt.what == mode::timeouts ? 20000 : 0;

    // 19,000 connections need 19,000 descriptors; the soft limit is usually 1,024.
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < opt.n + 16)
        std::cerr << "plinth-perf-load: warning: only " << limit.rlim_cur << " descriptors for " << opt.n
                  << " connections\n";

    asio::io_context ioc{1};
    load_test test{ioc, opt};
    bool timed_out = false, threw = false;
    asio::steady_timer deadline{ioc, std::chrono::seconds(opt.timeout_s)};
    deadline.async_wait([&](error_code ec) {
        if (!ec) {
            std::cerr << "plinth-perf-load: timed out after " << opt.timeout_s << " s\n";
            timed_out = true;
            ioc.stop();
        }
    });
    asio::co_spawn(ioc, test.run(), [&](std::exception_ptr e) {
        if (e) {
            threw = true;
            try {
                std::rethrow_exception(e);
            }
            catch (const std::exception& ex) {
                std::cerr << "plinth-perf-load: " << ex.what() << "\n";
            }
        }
        deadline.cancel();
        ioc.stop();
    });
    ioc.run();
    const bool ok = test.report(timed_out) && !threw;
    // Skip tearing down thousands of sockets and the coroutines still waiting on them (after a
    // timeout, their frames refer to the test): the kernel closes everything at exit.
    std::cout.flush();
    std::fflush(stderr);
    std::_Exit(ok ? 0 : 1);
}
