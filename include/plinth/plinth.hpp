//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_PLINTH_HPP
#define PLINTH_PLINTH_HPP

// Everything plinth offers, in one include.

#include <plinth/async_errors.hpp>
#include <plinth/async_response.hpp>
#include <plinth/chain.hpp>
#include <plinth/context.hpp>
#include <plinth/handler.hpp>
#include <plinth/http.hpp>
#include <plinth/log.hpp>
#include <plinth/message.hpp>
#include <plinth/path_params.hpp>
#include <plinth/router.hpp>
#include <plinth/server.hpp>
#include <plinth/server_options.hpp>
#include <plinth/sse.hpp>
#include <plinth/stage.hpp>
#include <plinth/stream.hpp>
#include <plinth/stream_options.hpp>
#include <plinth/version.hpp>

#endif
