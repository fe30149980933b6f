// The core's one exception type for bad input; bindings.cpp translates it to a Python exception.
#pragma once
#include <stdexcept>
#include <string>

namespace franken {

struct Error : std::runtime_error {
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace franken
