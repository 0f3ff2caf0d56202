//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_ASYNC_ERRORS_HPP
#define PLINTH_ASYNC_ERRORS_HPP

// The errors a suspended request may end with, whatever its result type.

#include <boost/system/system_error.hpp>

#include <stdexcept>

namespace plinth {

/// What a suspension's timeout sends down the error path when its handler neither resumed,
/// cancelled nor re-armed it (or there is no handler). Unmapped, HTTP answers it with 503.
class service_unavailable : public std::runtime_error {
public:
    service_unavailable()
        : std::runtime_error("the suspended request timed out")
    {
    }
};

/// What `on_complete` receives when the client went away: the socket's error.
class client_disconnected : public boost::system::system_error {
public:
    using boost::system::system_error::system_error;
};

} // namespace plinth

#endif
