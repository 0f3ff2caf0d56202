//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_VERSION_HPP
#define PLINTH_VERSION_HPP

/// plinth's version as major * 10000 + minor * 100 + patch.
#define PLINTH_VERSION 100
#define PLINTH_VERSION_STRING "0.1.0"

#endif
