//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_H1_WRITER_HPP
#define PLINTH_DETAIL_H1_WRITER_HPP

// HTTP/1 responses as bytes: the head with the fields the server adds, chunked framing for
// streamed bodies, and the batch of answers held while a client pipelines. No I/O: the
// connection writes what these produce.

#include <plinth/detail/h1/reader.hpp>
#include <plinth/detail/http_date.hpp>
#include <plinth/message.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>

#include <array>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

namespace plinth::detail::h1 {

/// Whether a response with this status carries content: 1xx, 204 and 304 never do (RFC 9110
/// 6.4.1), whatever the handler put in the body. Nor do they get a Content-Length: 1xx and 204
/// may not (8.6), and a 304's would have to be the 200's, which the server cannot know.
constexpr bool has_content(unsigned status) noexcept
{
    return status >= 200 && status != 204 && status != 304;
}

/// The status line, replacing what `out` held.
inline void start_head(std::string& out, const response& res)
{
    out.clear();
    out.reserve(256); // one allocation for a typical head, not one per doubling as it grows
    out += res.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    const unsigned status = res.result_int();
    const char code[3] = {static_cast<char>('0' + status / 100 % 10), static_cast<char>('0' + status / 10 % 10),
                          static_cast<char>('0' + status % 10)};
    out.append(code, 3);
    out += ' ';
    out += res.reason();
    out += "\r\n";
}

inline void append_field(std::string& out, std::string_view name, std::string_view value)
{
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
}

/// A response head in HTTP/1.1 wire format (what Beast's serializer writes), into `out`, whose
/// capacity the caller keeps: the response then goes out in one gather write, with no serializer
/// allocated per response.
inline void serialize_head(std::string& out, const response& res)
{
    start_head(out, res);
    for (const auto& f : res)
        append_field(out, f.name_string(), f.value());
    out += "\r\n";
}

/// Empties the body of a response that may carry none.
inline void drop_forbidden_body(response& res)
{
    if (!has_content(res.result_int()))
        res.body().clear();
}

/// What every whole response gets before it goes out: the request's version, Server (unless it
/// names itself), Date, Content-Length (where the status allows one), no Transfer-Encoding (the
/// body goes whole), and the Connection tokens that say whether the connection stays.
inline void finish_response(response& res, unsigned version, bool keep_alive, std::string_view server_name)
{
    res.version(version);
    if (res.find(http::field::server) == res.end()) // a handler or interceptor may name itself
        res.set(http::field::server, server_name);
    res.set(http::field::date, current_http_date());
    drop_forbidden_body(res);
    res.erase(http::field::transfer_encoding);
    res.prepare_payload();
    if (!has_content(res.result_int()))
        res.erase(http::field::content_length);
    res.keep_alive(keep_alive);
}

/// finish_response() then serialize_head(), without adding to the response the fields the first
/// adds: each is an allocation and a tree insertion, then a free, on every request. The bytes are
/// the same. A response with Connection or Transfer-Encoding fields of its own takes the long
/// way, where Beast merges the tokens.
inline void write_head(std::string& out, response& res, unsigned version, bool keep_alive, std::string_view server_name)
{
    bool server = false;
    for (const auto& f : res) {
        const auto name = f.name();
        if (name == http::field::connection || name == http::field::transfer_encoding) {
            finish_response(res, version, keep_alive, server_name);
            return serialize_head(out, res);
        }
        server = server || name == http::field::server;
    }
    drop_forbidden_body(res);
    res.version(version);
    start_head(out, res);
    for (const auto& f : res)
        if (f.name() != http::field::date && f.name() != http::field::content_length)
            append_field(out, f.name_string(), f.value());
    if (!server)
        append_field(out, "Server", trim_blanks(server_name)); // as Beast's fields trim values
    append_field(out, "Date", current_http_date());
    if (has_content(res.result_int())) {
        char length[20];
        append_field(out, "Content-Length",
                     std::string_view(length, std::to_chars(length, length + sizeof length, res.body().size()).ptr));
    }
    if (version == 10 ? keep_alive : !keep_alive)
        append_field(out, "Connection", keep_alive ? "keep-alive" : "close");
    out += "\r\n";
}

/// The head of a streamed body: chunked for HTTP/1.1; for HTTP/1.0, which has no chunks, the
/// body ends with the connection, so `keep_alive` becomes false.
inline void write_stream_head(std::string& out, response& head, unsigned version, bool& keep_alive,
                              std::string_view server_name)
{
    const bool chunked = version >= 11;
    keep_alive = keep_alive && chunked;
    head.version(version);
    if (head.find(http::field::server) == head.end())
        head.set(http::field::server, server_name);
    head.set(http::field::date, current_http_date());
    head.erase(http::field::content_length);
    head.chunked(chunked);
    head.keep_alive(keep_alive);
    serialize_head(out, head);
}

/// The line before a chunk of `size` bytes (its size in hex, then CRLF).
class chunk_size_line {
public:
    explicit chunk_size_line(std::size_t size) noexcept
    {
        const auto r = std::to_chars(bytes_.data(), bytes_.data() + bytes_.size() - 2, size, 16);
        std::memcpy(r.ptr, "\r\n", 2);
        size_ = static_cast<std::size_t>(r.ptr + 2 - bytes_.data());
    }

    asio::const_buffer buffer() const noexcept { return {bytes_.data(), size_}; }
    std::string_view view() const noexcept { return {bytes_.data(), size_}; }

private:
    std::array<char, 20> bytes_;
    std::size_t size_;
};

/// What ends a chunk's data.
inline constexpr std::string_view chunk_end = "\r\n";

/// The last chunk and the trailer section (`trailer`: raw `Name: value\r\n` lines), which end a
/// chunked body.
inline std::string last_chunk(std::string_view trailer)
{
    std::string out = "0\r\n";
    out += trailer;
    out += "\r\n";
    return out;
}

/// What a client that sent `Expect: 100-continue` waits for before it sends the body.
inline constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";

/// The answer to a request the server refuses (a status of 400 and up): the reason phrase as a
/// plain-text body, then the connection closes.
inline response refusal(http::status status, std::string_view server_name)
{
    response res = text(std::string(http::obsolete_reason(status)), status);
    finish_response(res, 11, false, server_name);
    return res;
}

/// Answers held back while a client pipelines: when the next request is already buffered, this
/// one's answer waits for it, so that a batch of requests costs one write.
class output_batch {
public:
    /// How much may be held before it must go out.
    static constexpr std::size_t max_bytes = 16 * 1024;

    bool empty() const noexcept { return held_.empty(); }
    std::size_t size() const noexcept { return held_.size(); }

    /// Whether an answer of `bytes` more may be held.
    bool fits(std::size_t bytes) const noexcept { return held_.size() + bytes <= max_bytes; }

    /// Holds a head and its body.
    void hold(std::string_view head, std::string_view body)
    {
        held_ += head;
        held_ += body;
    }

    /// What is held, in order.
    const std::string& bytes() const noexcept { return held_; }

    /// Forgets what was held (it went out), keeping the storage.
    void clear() noexcept { held_.clear(); }

private:
    std::string held_;
};

} // namespace plinth::detail::h1

#endif
