//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_HTTP_HPP
#define PLINTH_HTTP_HPP

// The HTTP meaning of the chain in one include: messages, path parameters and the context a
// request travels in.

#include <plinth/context.hpp>
#include <plinth/message.hpp>
#include <plinth/path_params.hpp>

#endif
