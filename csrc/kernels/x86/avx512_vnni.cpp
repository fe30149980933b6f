// avx2.cpp again, with VPDPBUSD for the int8 products (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni;
// used only where the CPU reports them). The interleaved Q4_0, Q4_1 and Q3_0 products also take two groups per
// 512-bit register.
#define FRANKEN_VNNI 1
#include "avx2.cpp"
