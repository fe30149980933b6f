// avx2.cpp again, with VPDPBUSD for the int8 products (compiled with -mavx512vl -mavx512vnni; used only where the
// CPU reports AVX512-VNNI).
#define FRANKEN_VNNI 1
#include "avx2.cpp"
