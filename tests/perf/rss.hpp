//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
// A process's resident set size: the benchmark servers' own, for their GET /stats, and any
// server's, read by the load generator.
#ifndef PLINTH_PERF_RSS_HPP
#define PLINTH_PERF_RSS_HPP

#include <cstdint>
#include <fstream>
#include <string>

/// The VmRSS of process `pid` ("self": this one), in KiB (0 if /proc says nothing).
inline std::uint64_t rss_kib(const std::string& pid = "self")
{
    std::ifstream status("/proc/" + pid + "/status");
    for (std::string line; std::getline(status, line);)
        if (line.starts_with("VmRSS:"))
            return std::stoull(line.substr(6));
    return 0;
}

#endif
