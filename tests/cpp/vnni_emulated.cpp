// The x86 kernels as the avx512_vnni table builds them (avx_kernels.h with FRANKEN_VNNI: VPDPBUSD on 256-bit
// registers), made runnable on an AVX2 CPU by an exact emulation of VPDPBUSD, for kernel_check
// (-DFRANKEN_EXTRA_TABLE): machines without AVX-512 check that code against the scalar twins too. The 512-bit tiles of
// avx512_vnni.cpp are not covered. Compiled with -mavx2 -mfma -mf16c only (tests/test_cross.py).
#include <immintrin.h>

namespace {

// VPDPBUSD: each 32-bit lane adds the four products of its unsigned bytes of a and signed bytes of b, exactly. The
// even and odd bytes widened to 16 bits (255 * -128 fits) and multiplied-and-paired by PMADDWD cover all four.
inline __m256i emulated_dpbusd(__m256i src, __m256i a, __m256i b) {
    const __m256i a_even = _mm256_and_si256(a, _mm256_set1_epi16(0x00ff)), a_odd = _mm256_srli_epi16(a, 8);
    const __m256i b_even = _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8), b_odd = _mm256_srai_epi16(b, 8);
    return _mm256_add_epi32(src, _mm256_add_epi32(_mm256_madd_epi16(a_even, b_even), _mm256_madd_epi16(a_odd, b_odd)));
}

}  // namespace

#undef _mm256_dpbusd_epi32  // a macro in some compilers' headers
#define _mm256_dpbusd_epi32 emulated_dpbusd
#define FRANKEN_VNNI 1
#include "kernels/x86/avx_kernels.h"

namespace franken {

const KernelTable* extra_kernels() {
    static const KernelTable table = avx_table("avx512_vnni (256-bit, emulated VPDPBUSD)");
    return &table;
}

}  // namespace franken
