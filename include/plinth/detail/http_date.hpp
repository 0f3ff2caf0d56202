//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_DETAIL_HTTP_DATE_HPP
#define PLINTH_DETAIL_HTTP_DATE_HPP

// IMF-fixdate (RFC 9110 5.6.7), e.g. "Sun, 06 Nov 1994 08:49:37 GMT".

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace plinth::detail {

// Writes the date into `out` (29 characters and a NUL) and returns it.
inline std::string_view format_http_date(std::chrono::system_clock::time_point tp, char (&out)[32])
{
    std::time_t t = std::chrono::system_clock::to_time_t(tp);
    std::tm tm{};
    gmtime_r(&t, &tm);
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const int n = std::snprintf(out, sizeof out, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
                                months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return std::string_view(out, n > 0 ? static_cast<std::size_t>(n) : 0);
}

inline std::string format_http_date(std::chrono::system_clock::time_point tp)
{
    char buf[32];
    return std::string(format_http_date(tp, buf));
}

/// The current date, formatted at most once a second per thread, into a buffer of its own: no
/// allocation, ever (the fast path's tests count them).
inline std::string_view current_http_date()
{
    thread_local std::time_t cached_second = -1;
    thread_local char cached[32];
    thread_local std::string_view text;
    auto now = std::chrono::system_clock::now();
    std::time_t second = std::chrono::system_clock::to_time_t(now);
    if (second != cached_second) {
        text = format_http_date(now, cached);
        cached_second = second;
    }
    return text;
}

} // namespace plinth::detail

#endif
