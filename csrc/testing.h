// _core.testing, the test and benchmark entry points (testing.cpp), added to the module by bindings.cpp.
#pragma once
#include <pybind11/pybind11.h>

void bind_testing(pybind11::module_& parent);
