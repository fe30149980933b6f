// neon.cpp again, with SDOT (compiled with -march=armv8.2-a+dotprod; used only where the CPU reports it).
#define FRANKEN_DOTPROD 1
#include "neon.cpp"
