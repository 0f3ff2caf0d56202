//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_URI_HPP
#define PLINTH_DETAIL_URI_HPP

// The little URI handling plinth needs: split a request target, percent-decode, find a query value.

#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace plinth::detail {

/// Splits an origin-form target into path and query (without the '?'); a fragment is dropped.
inline std::pair<std::string_view, std::string_view> split_target(std::string_view target) noexcept
{
    if (auto hash = target.find('#'); hash != std::string_view::npos)
        target = target.substr(0, hash);
    auto q = target.find('?');
    if (q == std::string_view::npos)
        return {target, {}};
    return {target.substr(0, q), target.substr(q + 1)};
}

inline int hex_value(char c) noexcept
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/// Percent-decodes `in`; `plus_is_space` for query components. Nothing on a malformed escape.
inline std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space = false)
{
    std::string out;
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= in.size())
                return std::nullopt;
            int hi = hex_value(in[i + 1]);
            int lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0)
                return std::nullopt;
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        }
        else if (c == '+' && plus_is_space)
            out.push_back(' ');
        else
            out.push_back(c);
    }
    return out;
}

/// The decoded value of the first `name=value` pair in `query`; an empty string for a bare `name`.
inline std::optional<std::string> query_value(std::string_view query, std::string_view name)
{
    while (!query.empty()) {
        auto amp = query.find('&');
        auto pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        auto eq = pair.find('=');
        auto key = percent_decode(pair.substr(0, eq), true);
        if (key && *key == name)
            return eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1), true);
    }
    return std::nullopt;
}

} // namespace plinth::detail

#endif
