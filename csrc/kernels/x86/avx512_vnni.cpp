// The avx512_vnni table: avx_kernels.h compiled again with FRANKEN_VNNI (VPDPBUSD for the int8 products; this file
// alone gets -mavx512f -mavx512bw -mavx512vl -mavx512vnni), plus the 512-bit interleaved tiles below, which take
// two groups of eight rows at once for the 4-bit and 3-bit formats.
#define FRANKEN_VNNI 1
#include "avx_kernels.h"

namespace franken {
namespace {

// GCC 12's 512-bit intrinsics pass an "undefined" source to their masked builtins and then warn about it.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Two consecutive groups at once in 512-bit registers: lanes 0-7 are group A's rows, lanes 8-15 group B's, so each
// broadcast activation word feeds sixteen rows (twice the work per VPDPBUSD of the 256-bit tile) and a prompt runs
// at the width the CPU's integer units have. A prompt takes eight tokens per pass (eight accumulators and the eight
// unpacked code vectors fit the 32 registers): each unpacked block serves twice the tokens of the 256-bit tile,
// 12% faster on a 64-token 4096x4096 Q4_0 product than tiles of four. Otherwise the same sums as x8_tile.
inline __m512i bcast4_512(const BlockQ8A& a, int i) {
    int32_t v;
    std::memcpy(&v, a.qs + 4 * i, 4);
    return _mm512_set1_epi32(v);
}

// Two 32-byte words, A's in the low half.
inline __m512i load_pair(const uint8_t* a, const uint8_t* b) {
    return _mm512_inserti64x4(_mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), 1);
}
// Two blocks' eight scales (or minimums), A's in the low half.
inline __m512 load_halves_pair(const uint16_t* a, const uint16_t* b) {
    return _mm512_cvtph_ps(_mm256_inserti128_si256(
        _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1));
}

template <class Block>  // the nibble layout, as x8_nibbles
inline void x16_nibbles(const Block& wa, const Block& wb, __m512i q[8]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int c = 0; c < 4; ++c) {
        const __m512i v = load_pair(wa.qs + 32 * c, wb.qs + 32 * c);
        q[2 * c] = _mm512_and_si512(v, m4);
        q[2 * c + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
}
template <class Block>  // Q4_0 and Q4_1: the nibbles are the codes
inline void x16_codes(const Block& wa, const Block& wb, __m512i q[8]) {
    x16_nibbles(wa, wb, q);
}
template <class Block>  // Q3_0 and Q3_NL
inline void x16_q3_codes(const Block& wa, const Block& wb, __m512i q[8]) {
    const __m512i m2 = _mm512_set1_epi8(3), b2 = _mm512_set1_epi8(4);
    const __m512i lo[2] = {load_pair(wa.ql, wb.ql), load_pair(wa.ql + 32, wb.ql + 32)};
    const __m512i hi = load_pair(wa.qh, wb.qh);
    for (int c = 0; c < 8; ++c) {
        const __m512i l = _mm512_srli_epi16(lo[c / 4], 2 * (c % 4));
        const __m512i h = c < 2 ? _mm512_slli_epi16(hi, 2 - c) : _mm512_srli_epi16(hi, c - 2);
        q[c] = _mm512_or_si512(_mm512_and_si512(l, m2), _mm512_and_si512(h, b2));
    }
}

template <>
inline void x16_codes(const BlockQ3_0x8& wa, const BlockQ3_0x8& wb, __m512i q[8]) {
    x16_q3_codes(wa, wb, q);
}
// Q3_NL and Q2_NL: codes to levels + 8 (NibbleLevels), one in-lane shuffle each.
inline void x16_lookup(const NibbleLevels& levels, __m512i q[8]) {
    const __m512i lut = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(levels.v)));
    for (int c = 0; c < 8; ++c) q[c] = _mm512_shuffle_epi8(lut, q[c]);
}
template <>
inline void x16_codes(const BlockQ3_NLx8& wa, const BlockQ3_NLx8& wb, __m512i q[8]) {
    x16_q3_codes(wa, wb, q);
    x16_lookup(kQ3NLNibbles, q);
}
template <>
inline void x16_codes(const BlockQ2_NLx8& wa, const BlockQ2_NLx8& wb, __m512i q[8]) {
    const __m512i m2 = _mm512_set1_epi8(3);
    const __m512i lo[2] = {load_pair(wa.ql, wb.ql), load_pair(wa.ql + 32, wb.ql + 32)};
    for (int c = 0; c < 8; ++c) q[c] = _mm512_and_si512(_mm512_srli_epi16(lo[c / 4], 2 * (c % 4)), m2);
    x16_lookup(kQ2NLNibbles, q);
}

template <>  // IQ4_NL: the nibbles index its levels + 128 (kIQ4NLShifted), one in-lane shuffle each
inline void x16_codes(const BlockIQ4_NLx8& wa, const BlockIQ4_NLx8& wb, __m512i q[8]) {
    x16_nibbles(wa, wb, q);
    const __m512i lut = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kIQ4NLShifted.v)));
    for (int c = 0; c < 8; ++c) q[c] = _mm512_shuffle_epi8(lut, q[c]);
}

template <class Block, int kTile>
inline void x16_tile(const Block* wa, const Block* wb, int nb, const BlockQ8A* act, float* out, size_t ldo) {
    __m512 acc[kTile];
    for (int k = 0; k < kTile; ++k) acc[k] = _mm512_setzero_ps();
    for (int b = 0; b < nb; ++b) {
        __m512i q[8];
        x16_codes(wa[b], wb[b], q);
        const __m512 dw = load_halves_pair(wa[b].d, wb[b].d);
        __m512 mw = dw;
        if constexpr (kX8HasMin<Block>) mw = load_halves_pair(wa[b].m, wb[b].m);
        for (int k = 0; k < kTile; ++k) {
            const BlockQ8A& a = act[static_cast<size_t>(k) * nb + b];
            __m512i s = _mm512_setzero_si512();
            for (int c = 0; c < 8; ++c) s = _mm512_dpbusd_epi32(s, q[c], bcast4_512(a, c));
            if constexpr (kX8HasMin<Block>) {  // d_w d_x sum + m_w s_x
                acc[k] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.s), acc[k]);
                acc[k] = _mm512_fmadd_ps(dw, _mm512_mul_ps(_mm512_set1_ps(a.d), _mm512_cvtepi32_ps(s)), acc[k]);
            } else {  // d_w (d_x sum - k s_x): the offset of q - k from the block's activation sum
                const __m512 t = _mm512_fmsub_ps(_mm512_set1_ps(a.d), _mm512_cvtepi32_ps(s),
                                                 _mm512_set1_ps(static_cast<float>(kX8Offset<Block>) * a.s));
                acc[k] = _mm512_fmadd_ps(dw, t, acc[k]);
            }
        }
    }
    for (int k = 0; k < kTile; ++k) _mm512_storeu_ps(out + k * ldo, acc[k]);
}

// Pairs of groups through the 512-bit tiles (eight tokens, then four, then one at a time), an odd last group
// through the 256-bit tile.
template <class Block>
void gemmq_x16_codes(const void* groups, int n_groups, int nb, const BlockQ8A* act, int n_act, float* out,
                     size_t ldo) {
    const Block* w = static_cast<const Block*>(groups);
    int g = 0;
    for (; g + 2 <= n_groups; g += 2) {
        const Block *wa = w + static_cast<size_t>(g) * nb, *wb = wa + nb;
        if (n_act < 4 && g + 2 < n_groups) prefetch_bytes(wb + nb, sizeof(Block) * nb * std::min(2, n_groups - g - 2));
        int t = 0;
        for (; t + 8 <= n_act; t += 8)
            x16_tile<Block, 8>(wa, wb, nb, act + static_cast<size_t>(t) * nb, out + t * ldo + kX8 * g, ldo);
        for (; t + 4 <= n_act; t += 4)
            x16_tile<Block, 4>(wa, wb, nb, act + static_cast<size_t>(t) * nb, out + t * ldo + kX8 * g, ldo);
        for (; t < n_act; ++t)
            x16_tile<Block, 1>(wa, wb, nb, act + static_cast<size_t>(t) * nb, out + t * ldo + kX8 * g, ldo);
    }
    gemmq_x8_codes<Block>(w + static_cast<size_t>(g) * nb, n_groups - g, nb, act, n_act, out + kX8 * g, ldo);
}

KernelTable make_table() {
    KernelTable t = avx_table("avx512_vnni");
    t[DType::Q4_0].gemm_x8 = gemmq_x16_codes<BlockQ4_0x8>;
    t[DType::Q4_1].gemm_x8 = gemmq_x16_codes<BlockQ4_1x8>;
    t[DType::Q3_0].gemm_x8 = gemmq_x16_codes<BlockQ3_0x8>;
    t[DType::IQ4_NL].gemm_x8 = gemmq_x16_codes<BlockIQ4_NLx8>;
    t[DType::Q3_NL].gemm_x8 = gemmq_x16_codes<BlockQ3_NLx8>;
    t[DType::Q2_NL].gemm_x8 = gemmq_x16_codes<BlockQ2_NLx8>;
    return t;
}

}  // namespace

const KernelTable* avx512_vnni_kernels() {
    static const KernelTable table = make_table();
    return &table;
}

}  // namespace franken
