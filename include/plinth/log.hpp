//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_LOG_HPP
#define PLINTH_LOG_HPP

// The log hook: where handler exceptions and I/O errors go instead of the client.

#include <cstdio>
#include <functional>
#include <string_view>

namespace plinth {

/// How much a log line matters.
enum class log_level { debug, info, warning, error };

constexpr std::string_view to_string(log_level l) noexcept
{
    switch (l) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warning: return "warning";
    case log_level::error: return "error";
    }
    return "?";
}

/// A log hook. Called from any thread; it must be thread-safe and should not block for long.
using log_function = std::function<void(log_level, std::string_view message)>;

/// The default hook: warnings and errors, one line each on stderr.
inline void log_to_stderr(log_level level, std::string_view message)
{
    if (level < log_level::warning)
        return;
    // One fprintf per line, so lines from several threads do not interleave.
    std::fprintf(stderr, "plinth: %s: %.*s\n", to_string(level).data(), static_cast<int>(message.size()),
                 message.data());
}

} // namespace plinth

#endif
