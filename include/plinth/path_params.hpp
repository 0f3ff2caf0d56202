//
// Copyright (c) 2026 The plinth authors
// Distributed under the Boost Software License, Version 1.0.
// (See accompanying file LICENSE or copy at http://www.boost.org/LICENSE_1_0.txt)
//
#ifndef PLINTH_PATH_PARAMS_HPP
#define PLINTH_PATH_PARAMS_HPP

#include <boost/container/small_vector.hpp>

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace plinth {

/// The parameters a route's path template captured (`/users/{id}` -> `id`), percent-decoded.
class path_params {
public:
    /// The value of `name`, or nothing.
    std::optional<std::string_view> find(std::string_view name) const noexcept
    {
        for (const auto& [n, v] : items_)
            if (n == name)
                return std::string_view(v);
        return std::nullopt;
    }

    /// The value of `name`; throws `std::out_of_range` when the route has no such parameter.
    std::string_view at(std::string_view name) const
    {
        if (auto v = find(name))
            return *v;
        throw std::out_of_range("plinth::path_params: no parameter '" + std::string(name) + "'");
    }

    std::size_t size() const noexcept { return items_.size(); }
    bool empty() const noexcept { return items_.empty(); }
    auto begin() const noexcept { return items_.begin(); }
    auto end() const noexcept { return items_.end(); }

    /// Adds a parameter; `name` must outlive this object (the router's route table does).
    void add(std::string_view name, std::string value) { items_.emplace_back(name, std::move(value)); }
    void clear() noexcept { items_.clear(); }

private:
    // Room for one parameter inline: every request (suspended ones included) carries this, and
    // most routes have none or one (a second costs an allocation).
    boost::container::small_vector<std::pair<std::string_view, std::string>, 1> items_;
};

} // namespace plinth

#endif
