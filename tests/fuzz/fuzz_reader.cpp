//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// plinth-fuzz-reader: arbitrary bytes into the HTTP/1 reader alone (detail/h1/reader.hpp), the
// body path above all: chunked framing, extensions, trailers. The input is read as one request
// in one piece, then again cut where byte 0 says (as in plinth-fuzz); both readings must agree,
// and an accepted request must hold what the checks promise (no trailer merged into the header,
// an origin-form target, a Host that is a host).

#include <plinth/detail/h1/reader.hpp>

#include <boost/beast/core/flat_buffer.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace h1 = plinth::detail::h1;
namespace http = boost::beast::http;

namespace {

[[noreturn]] void die(const char* what)
{
    std::fprintf(stderr, "plinth-fuzz-reader: %s\n", what);
    std::abort();
}

struct outcome {
    h1::read_state state;
    http::status status = http::status::unknown;
    std::optional<plinth::request> request;
};

outcome read(std::string_view bytes, std::uint8_t max_chunk)
{
    const h1::read_limits limits{.header_bytes = 1024, .body_bytes = 4096};
    boost::beast::flat_buffer in{limits.header_bytes + 4096};
    h1::request_reader reader{limits};
    std::uint32_t rng = max_chunk * 2654435761u | 1u;
    std::size_t at = 0;
    for (;;) {
        const auto state = reader.parse(in);
        if (state == h1::read_state::refused)
            return {state, reader.status(), {}};
        if (state == h1::read_state::message_ready)
            return {state, {}, reader.release()};
        if (state == h1::read_state::header_ready)
            continue;
        if (at == bytes.size())
            return {state, {}, {}};
        std::size_t n = bytes.size() - at;
        if (max_chunk != 0) {
            rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
            n = std::min<std::size_t>(n, 1 + rng % max_chunk);
        }
        if (in.max_size() - in.size() < n) // what the connection answers 400
            return {h1::read_state::refused, http::status::bad_request, {}};
        auto b = in.prepare(n);
        std::memcpy(b.data(), bytes.data() + at, n);
        in.commit(n);
        at += n;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0)
        return 0;
    const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
    const auto whole = read(bytes, 0);
    const auto cut = read(bytes, data[0]);
    // A request cut short is only "need more"; one that is whole reads the same in pieces,
    // unless the buffer filled first (a refusal both ways all the same).
    if (whole.state == h1::read_state::message_ready && cut.state == h1::read_state::message_ready) {
        if (whole.request->body() != cut.request->body() || whole.request->target() != cut.request->target())
            die("the request read in pieces differs from the one read whole");
    }
    else if (whole.state == h1::read_state::refused && cut.state == h1::read_state::message_ready)
        die("a request refused whole was accepted in pieces");
    if (whole.request) {
        const auto& r = *whole.request;
        if (!(r.target().starts_with('/') || (r.target() == "*" && r.method() == http::verb::options)))
            die("an accepted request's target is not in origin form");
        if (r.count(http::field::host) > 1 || !h1::valid_host(h1::trim_blanks(r[http::field::host])))
            die("an accepted request has two Hosts, or one that is not a host");
        if (r.chunked() && r.count(http::field::content_length) != 0)
            die("an accepted request is framed two ways");
    }
    return 0;
}
