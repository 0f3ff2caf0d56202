//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_H1_READER_HPP
#define PLINTH_DETAIL_H1_READER_HPP

// HTTP/1 requests from bytes: Beast's parser, the server's limits, and the RFC 9112 and 9110
// rules Beast leaves to the server, each failure mapped to the status that answers it. No I/O:
// whoever owns the transport feeds the bytes in.

#include <plinth/message.hpp>

#include <boost/asio/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/container/small_vector.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

namespace plinth::detail::h1 {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace asio = boost::asio;

/// Without leading and trailing spaces and tabs (HTTP's optional whitespace).
inline std::string_view trim_blanks(std::string_view s)
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

/// True for the ways a client leaves that are not worth logging as errors.
inline bool client_went_away(const beast::error_code& ec)
{
    return ec == http::error::end_of_stream || ec == http::error::partial_message || ec == asio::error::eof
        || ec == asio::error::connection_reset || ec == asio::error::broken_pipe
        || ec == asio::error::operation_aborted;
}

// RFC 3986's unreserved and sub-delims characters: what a reg-name (and an IP literal, with ':')
// is made of. A table, as every request's Host goes through it.
inline constexpr auto host_chars = [] {
    std::array<bool, 256> table{};
    for (unsigned char c :
         std::string_view("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;="))
        table[c] = true;
    return table;
}();

/// RFC 3986's host [":" port], the value a Host field may take (RFC 9110 7.2); empty is valid.
inline bool valid_host(std::string_view host)
{
    const auto name_char = [](char c) { return host_chars[static_cast<unsigned char>(c)]; };
    const auto digits = [](std::string_view s) {
        for (char c : s)
            if (c < '0' || c > '9')
                return false;
        return true;
    };
    if (host.starts_with('[')) { // an IP literal: IPv6 or IPvFuture, then an optional port
        const auto close = host.find(']');
        if (close == std::string_view::npos)
            return false;
        for (char c : host.substr(1, close - 1))
            if (!name_char(c) && c != ':')
                return false;
        const auto after = host.substr(close + 1);
        return after.empty() || (after.starts_with(':') && digits(after.substr(1)));
    }
    // The common case, a name of plain characters and a port, in one pass.
    auto p = host.begin();
    while (p != host.end() && name_char(*p))
        ++p;
    if (p == host.end())
        return true;
    if (*p == ':')
        return digits(host.substr(static_cast<std::size_t>(p - host.begin()) + 1));
    const auto colon = host.find(':');
    const auto name = host.substr(0, colon);
    const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); };
    for (std::size_t i = 0; i < name.size(); ++i) {
        if (name_char(name[i]))
            continue;
        if (name[i] != '%' || i + 2 >= name.size() || !hex(name[i + 1]) || !hex(name[i + 2]))
            return false;
        i += 2; // a percent-encoded octet
    }
    return colon == std::string_view::npos || digits(host.substr(colon + 1));
}

/// Rewrites an absolute-form target (`GET http://host/path HTTP/1.1`, RFC 9112 3.2.2) to origin
/// form, its authority replacing the Host field (3.3: the server ignores the received Host). The
/// status to refuse the target with: 400 for a form the method may not use or a malformed one,
/// 501 for CONNECT (plinth opens no tunnels).
inline std::optional<http::status> normalize_target(request& req)
{
    if (req.method() == http::verb::connect)
        return http::status::not_implemented;
    const std::string_view target = req.target();
    if (target.starts_with('/'))
        return std::nullopt;
    if (target == "*")
        return req.method() == http::verb::options ? std::nullopt : std::optional(http::status::bad_request);
    const auto scheme_end = target.find("://");
    if (scheme_end == std::string_view::npos)
        return http::status::bad_request; // authority-form is CONNECT's alone (3.2.3)
    const auto scheme = target.substr(0, scheme_end);
    if (!beast::iequals(scheme, "http") && !beast::iequals(scheme, "https"))
        return http::status::bad_request;
    auto rest = target.substr(scheme_end + 3);
    const auto path_at = rest.find_first_of("/?#");
    const auto authority = rest.substr(0, path_at);
    if (authority.empty() || authority.find('@') != std::string_view::npos || !valid_host(authority))
        return http::status::bad_request;
    std::string origin = path_at == std::string_view::npos || rest[path_at] != '/' ? "/" : "";
    if (path_at != std::string_view::npos)
        origin += rest.substr(path_at);
    if (const auto fragment = origin.find('#'); fragment != std::string::npos)
        origin.resize(fragment);
    req.set(http::field::host, authority);
    req.target(origin);
    return std::nullopt;
}

/// Checks a parsed header for what Beast's parser lets through: the status to refuse it with.
inline std::optional<http::status> check_header(const request& req)
{
    if (req.version() / 10 != 1) // Beast 1.81 refuses these already (see well_formed_version)
        return http::status::http_version_not_supported;
    // One pass over the fields rather than a lookup per name: a request has few fields, and
    // each lookup in Beast's tree compares names case-insensitively.
    unsigned hosts = 0, content_lengths = 0, te_fields = 0, chunked = 0;
    bool unknown_coding = false, chunked_last = false, expected = false, bad_host = false;
    std::string_view expect;
    for (const auto& f : req) {
        switch (f.name()) {
        case http::field::host:
            ++hosts;
            bad_host = bad_host || !valid_host(trim_blanks(f.value()));
            break;
        case http::field::content_length: ++content_lengths; break;
        case http::field::expect:
            if (!expected) // the first one, as req[field::expect] gives
                expect = f.value();
            expected = true;
            break;
        case http::field::transfer_encoding: {
            ++te_fields;
            // Each element exactly "chunked", once: Beast's token_list stops quietly at a
            // syntax error ("chunked;x", "chunked x"), which a proxy in front may read otherwise.
            std::string_view list = f.value();
            while (!list.empty()) {
                const auto comma = list.find(',');
                auto coding = trim_blanks(list.substr(0, comma));
                list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
                if (coding.empty())
                    continue;
                const auto name = trim_blanks(coding.substr(0, coding.find_first_of("; \t")));
                chunked_last = beast::iequals(name, "chunked");
                if (!beast::iequals(coding, "chunked"))
                    unknown_coding = true;
                else
                    ++chunked;
            }
            break;
        }
        default: break;
        }
    }
    if (hosts > 1 || (req.version() == 11 && hosts == 0) || bad_host)
        return http::status::bad_request; // RFC 9112 3.2, RFC 9110 7.2
    if (te_fields != 0) {
        // A request framed two ways is how requests are smuggled: refuse rather than choose.
        if (req.version() == 10 || content_lengths != 0)
            return http::status::bad_request;
        if (!chunked_last || chunked > 1) // RFC 9112 6.3: its length cannot be told
            return http::status::bad_request;
        if (unknown_coding)
            return http::status::not_implemented;
    }
    if (!expect.empty() && !beast::iequals(expect, "100-continue"))
        return http::status::expectation_failed;
    return std::nullopt;
}

/// Whether the client waits for `100 Continue` before it sends the body (RFC 9110 10.1.1: never
/// an HTTP/1.0 client).
inline bool expects_continue(const request& req)
{
    return req.version() >= 11 && beast::iequals(req[http::field::expect], "100-continue");
}

/// Drops the empty lines a client may send before a request (RFC 9112 2.2: some send a CRLF
/// after a body).
inline void skip_empty_lines(beast::flat_buffer& in)
{
    for (;;) {
        const std::string_view data(static_cast<const char*>(in.data().data()), in.size());
        if (data.starts_with("\r\n"))
            in.consume(2);
        else if (data.starts_with("\n"))
            in.consume(1);
        else
            return;
    }
}

/// Whether `buffered` (after empty lines) holds a whole header: the next request can be parsed
/// without reading.
inline bool holds_header(std::string_view buffered)
{
    while (buffered.starts_with("\r\n") || buffered.starts_with("\n"))
        buffered.remove_prefix(buffered.front() == '\r' ? 2 : 1);
    return buffered.find("\r\n\r\n") != std::string_view::npos;
}

/// Beast refuses every version but 1.0 and 1.1 as malformed; a well-formed other one (HTTP/2's
/// preface "PRI * HTTP/2.0" included) deserves 505. `buffered` starts with the request line.
inline bool well_formed_version(std::string_view buffered)
{
    const auto eol = buffered.find("\r\n");
    if (eol == std::string_view::npos)
        return false; // a bare LF is malformed, whatever the version
    const auto line = buffered.substr(0, eol);
    const auto space = line.rfind(' ');
    if (space == std::string_view::npos)
        return false;
    const auto v = line.substr(space + 1);
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    return v.size() == 8 && v.substr(0, 5) == "HTTP/" && digit(v[5]) && v[5] != '1' && v[6] == '.' && digit(v[7]);
}

/// The status that answers a parse error. `line_parsed`: Beast had parsed the request line (it
/// consumes lines as it parses them); else `buffered` still starts with it.
inline http::status status_for_parse_error(const beast::error_code& ec, bool line_parsed, std::string_view buffered,
                                           std::size_t header_limit)
{
    if (ec == http::error::header_limit) // 414 when the request line alone is too long
        return line_parsed || buffered.substr(0, header_limit).find('\n') != std::string_view::npos
            ? http::status::request_header_fields_too_large
            : http::status::uri_too_long;
    if (ec == http::error::body_limit)
        return http::status::payload_too_large;
    if (ec == http::error::bad_version && !line_parsed && well_formed_version(buffered))
        return http::status::http_version_not_supported;
    return http::status::bad_request;
}

/// How a connection ends when reading a request from its transport fails.
struct read_failure {
    std::optional<http::status> answer; ///< the status to answer (a deadline passed: 408), if any
    bool worth_logging = false;         ///< an I/O error, not a client leaving or a stop
};

/// What a failed read means while a request is read: a deadline that passed is answered 408, a
/// request too long for the connection's buffer (a chunk extension or a trailer: what no limit
/// of the parser covers) 400; a client that left, or a stop that cancelled the read, closes the
/// connection without a word.
inline read_failure on_read_failure(const beast::error_code& ec, bool timed_out)
{
    if (timed_out)
        return {http::status::request_timeout, false};
    if (ec == http::error::buffer_overflow)
        return {http::status::bad_request, false};
    return {std::nullopt, !client_went_away(ec)};
}

/// Limits a reader enforces.
struct read_limits {
    std::uint32_t header_bytes = 8 * 1024; ///< request line and fields; beyond: 431 (414)
    std::uint64_t body_bytes = 1 << 20;    ///< body; beyond: 413, before reading it
};

/// What `request_reader::parse` found.
enum class read_state {
    need_more,     ///< read more bytes, then parse again
    header_ready,  ///< the header is in and passed its checks; the body is still to come
    message_ready, ///< the whole request is in: take it with `release`
    refused        ///< the request is refused with `status()`; nothing more is read
};

/// One request, from bytes: feed it what arrives (`parse`) until it has the whole message or
/// refuses it. The header must fit the buffer whole: Beast parses it in one go.
class request_reader {
public:
    explicit request_reader(read_limits limits)
        : header_limit_(limits.header_bytes)
    {
        parser_.header_limit(limits.header_bytes);
        parser_.body_limit(limits.body_bytes);
    }

    /// Parses what `in` holds, consuming it, and says how far the request got.
    read_state parse(beast::flat_buffer& in)
    {
        if (refused_)
            return read_state::refused;
        if (!parser_.is_header_done()) {
            if (!started_) {
                skip_empty_lines(in);
                if (in.size() == 0 || buffered(in) == "\r") // an empty line's CR may come alone
                    return read_state::need_more;
                started_ = true;
            }
            // Beast measures its header limit from where each call starts, and it consumes the
            // lines it has parsed: fed in pieces, a header could pass the limit whole. It sees
            // only what is left of the limit, so the limit holds however the bytes arrive.
            const auto room = header_limit_ - header_seen_;
            const auto window = std::min<std::size_t>(in.size(), room);
            beast::error_code ec;
            const auto used = parser_.put(asio::const_buffer(in.data().data(), window), ec);
            in.consume(used);
            header_seen_ += static_cast<std::uint32_t>(used);
            if (ec == http::error::need_more && window == room)
                ec = http::error::header_limit;
            if (ec == http::error::need_more)
                return read_state::need_more;
            if (ec)
                return refuse(status_for_parse_error(ec, !parser_.get().target().empty(), buffered(in), header_limit_),
                              ec);
            if (auto status = check_header(parser_.get()); status || (status = normalize_target(parser_.get())))
                return refuse(*status);
            if (parser_.chunked()) // its trailer may add fields: remember which came first
                for (const auto& f : parser_.get())
                    header_fields_.push_back(&f);
            if (!parser_.is_done())
                return read_state::header_ready;
            return read_state::message_ready;
        }
        // Beast 1.81 asserts (and reads out of bounds without assertions) when a chunked body
        // is parsed again with fewer than five bytes once its last chunk began: a chunked body
        // always ends with at least five ("0\r\n\r\n"), so wait for them.
        while (!parser_.is_done() && in.size() != 0 && (!parser_.chunked() || in.size() >= 5)) {
            beast::error_code ec;
            in.consume(parser_.put(in.data(), ec));
            if (ec == http::error::need_more)
                break;
            if (ec)
                return refuse(status_for_parse_error(ec, !parser_.get().target().empty(), buffered(in), header_limit_),
                              ec);
        }
        if (!parser_.is_done())
            return read_state::need_more;
        // Beast adds a chunked body's trailer fields to the header (a field whose name the header
        // has goes next to it, not last); a trailer must not pass for a header that was checked
        // (or that a proxy in front saw), so they go.
        auto& req = parser_.get();
        for (auto it = req.begin(); !header_fields_.empty() && it != req.end();)
            if (std::find(header_fields_.begin(), header_fields_.end(), &*it) != header_fields_.end())
                ++it;
            else
                it = req.erase(it);
        return read_state::message_ready;
    }

    /// The end of the stream before the request was whole: the client left (nothing is answered).
    bool started() const noexcept { return started_; }

    /// The status a refused request is answered with.
    http::status status() const noexcept { return status_; }

    /// Why the parser refused it, for the log (none when a check after the parser did).
    const beast::error_code& error() const noexcept { return error_; }

    /// The request (its header, once `header_ready`).
    const request& get() const noexcept { return parser_.get(); }

    /// The whole request (after `message_ready`).
    request release() { return parser_.release(); }

private:
    static std::string_view buffered(const beast::flat_buffer& in)
    {
        return {static_cast<const char*>(in.data().data()), in.size()};
    }

    read_state refuse(http::status s, beast::error_code ec = {})
    {
        refused_ = true;
        status_ = s;
        error_ = ec;
        return read_state::refused;
    }

    http::request_parser<http::string_body> parser_;
    std::uint32_t header_limit_;
    std::uint32_t header_seen_ = 0; // header bytes the parser has consumed
    // A chunked request's header fields, before any trailer's.
    boost::container::small_vector<const request::value_type*, 16> header_fields_;
    http::status status_ = http::status::bad_request;
    beast::error_code error_;
    bool started_ = false;
    bool refused_ = false;
};

} // namespace plinth::detail::h1

#endif
