//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// The benchmark servers' own resident set size, for their GET /stats.
#ifndef PLINTH_PERF_RSS_HPP
#define PLINTH_PERF_RSS_HPP

#include <cstdint>
#include <fstream>
#include <string>

/// This process's VmRSS, in KiB (0 if /proc says nothing).
inline std::uint64_t rss_kib()
{
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.starts_with("VmRSS:"))
            return std::stoull(line.substr(6));
    return 0;
}

#endif
