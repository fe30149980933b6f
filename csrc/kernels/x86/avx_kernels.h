// The AVX2 + FMA + F16C kernels of both x86 tables: avx2.cpp compiles them with those flags, avx512_vnni.cpp again
// with FRANKEN_VNNI and the AVX-512 flags, where the int8 products use VPDPBUSD (AVX512-VNNI on 256-bit registers,
// one instruction where AVX2 needs two) and adds its 512-bit interleaved tiles. dispatch.cpp only calls into a
// table after checking the CPU has its instructions, so one build runs on any x86-64.
// Included by exactly those two files (its definitions are in an unnamed namespace, one copy per build).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../kernels.h"

namespace franken {
namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// 8 signed bytes -> 8 floats
inline __m256 i8x8_to_ps(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
// 8 unsigned bytes (each 0..15) -> 8 floats
inline __m256 u8x8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }

inline __m256 bcast_f16(uint16_t h) { return _mm256_set1_ps(_cvtsh_ss(h)); }

// The float formats' dot products: one body, so that f16 and bf16 give the bits of dot_f32 over the decoded row
// (decoding them is exact). The model relies on it: a token alone multiplies the stored row, a prompt's tokens
// the row decoded once, and a row's result must not depend on its batch.
template <class Elem, __m256 (*load8)(const Elem*), float (*to_float)(Elem)>
float dot_float(const void* row, const float* x, int n) {
    const Elem* w = static_cast<const Elem*>(row);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(load8(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load8(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load8(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; ++i) s += to_float(w[i]) * x[i];
    return s;
}

inline __m256 load_f32x8(const float* p) { return _mm256_loadu_ps(p); }
inline float f32_of(float v) { return v; }
inline __m256 load_f16x8(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m256 load_bf16x8(const uint16_t* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
constexpr DotFn dot_f32 = dot_float<float, load_f32x8, f32_of>;
constexpr DotFn dot_f16 = dot_float<uint16_t, load_f16x8, fp16_to_f32>;
constexpr DotFn dot_bf16 = dot_float<uint16_t, load_bf16x8, bf16_to_f32>;

float dot_q8_0(const void* row, const float* x, int n) {
    const BlockQ8_0* b = static_cast<const BlockQ8_0*>(row);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        __m256 s = _mm256_mul_ps(i8x8_to_ps(b[i].qs), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(i8x8_to_ps(b[i].qs + 8), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(i8x8_to_ps(b[i].qs + 16), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(i8x8_to_ps(b[i].qs + 24), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(bcast_f16(b[i].d), s, acc);
    }
    return hsum(acc);
}

// Dot of 32 nibbles (unsigned 0..15, layout of Q4_0/Q4_1) with 32 floats; also returns sum(x) if asked.
inline __m256 nibbles_dot(const uint8_t* qs, const float* x) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(raw, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    __m256 s = _mm256_mul_ps(u8x8_to_ps(lo), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(u8x8_to_ps(hi), _mm256_loadu_ps(x + 16), s);
    s = _mm256_fmadd_ps(u8x8_to_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
    return s;
}
inline __m256 sum32(const float* x) {
    return _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8)),
                         _mm256_add_ps(_mm256_loadu_ps(x + 16), _mm256_loadu_ps(x + 24)));
}

float dot_q4_0(const void* row, const float* x, int n) {
    const BlockQ4_0* b = static_cast<const BlockQ4_0*>(row);
    __m256 acc = _mm256_setzero_ps();
    const __m256 eight = _mm256_set1_ps(8.f);
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        // d * sum((q - 8) * x) = d * (sum(q * x) - 8 * sum(x))
        const __m256 s = _mm256_fnmadd_ps(eight, sum32(x), nibbles_dot(b[i].qs, x));
        acc = _mm256_fmadd_ps(bcast_f16(b[i].d), s, acc);
    }
    return hsum(acc);
}

float dot_q4_1(const void* row, const float* x, int n) {
    const BlockQ4_1* b = static_cast<const BlockQ4_1*>(row);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        acc = _mm256_fmadd_ps(bcast_f16(b[i].d), nibbles_dot(b[i].qs, x), acc);
        acc = _mm256_fmadd_ps(bcast_f16(b[i].m), sum32(x), acc);
    }
    return hsum(acc);
}

void to_f32_f16(const void* row, float* out, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i))));
    for (; i < n; ++i) out[i] = fp16_to_f32(w[i]);
}

void to_f32_bf16(const void* row, float* out, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load_bf16x8(w + i));
    for (; i < n; ++i) out[i] = bf16_to_f32(w[i]);
}

void to_f32_q8_0(const void* row, float* out, int n) {
    const BlockQ8_0* b = static_cast<const BlockQ8_0*>(row);
    for (int i = 0; i < n / kQK; ++i, out += kQK) {
        const __m256 d = bcast_f16(b[i].d);
        for (int j = 0; j < kQK; j += 8) _mm256_storeu_ps(out + j, _mm256_mul_ps(d, i8x8_to_ps(b[i].qs + j)));
    }
}

inline void nibbles_to_f32(const uint8_t* qs, __m256 d, __m256 offset, float* out) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(raw, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    _mm256_storeu_ps(out, _mm256_fmadd_ps(d, u8x8_to_ps(lo), offset));
    _mm256_storeu_ps(out + 8, _mm256_fmadd_ps(d, u8x8_to_ps(_mm_srli_si128(lo, 8)), offset));
    _mm256_storeu_ps(out + 16, _mm256_fmadd_ps(d, u8x8_to_ps(hi), offset));
    _mm256_storeu_ps(out + 24, _mm256_fmadd_ps(d, u8x8_to_ps(_mm_srli_si128(hi, 8)), offset));
}

void to_f32_q4_0(const void* row, float* out, int n) {
    const BlockQ4_0* b = static_cast<const BlockQ4_0*>(row);
    for (int i = 0; i < n / kQK; ++i, out += kQK) {
        const float d = _cvtsh_ss(b[i].d);
        nibbles_to_f32(b[i].qs, _mm256_set1_ps(d), _mm256_set1_ps(-8.f * d), out);
    }
}

void to_f32_q4_1(const void* row, float* out, int n) {
    const BlockQ4_1* b = static_cast<const BlockQ4_1*>(row);
    for (int i = 0; i < n / kQK; ++i, out += kQK) nibbles_to_f32(b[i].qs, bcast_f16(b[i].d), bcast_f16(b[i].m), out);
}

// e^x of 8 floats as 2^n * e^r, n = round(x / ln 2), |r| <= ln(2)/2, e^r by Cephes' expf polynomial (about
// 1 ulp). x is clamped to [-87.3, 88] so that 2^n is a normal float built directly in the exponent bits; NaN
// passes through.
inline __m256 exp8(__m256 x) {
    // max/min return their second operand when one is NaN: x second, so a NaN stays NaN (as std::exp's does)
    x = _mm256_min_ps(_mm256_set1_ps(88.f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln 2 in two parts: r stays exact
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

void swiglu(float* gate, const float* up, int n) {
    const __m256 one = _mm256_set1_ps(1.f), zero = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, g))));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    scalar_kernels()->swiglu(gate + i, up + i, n - i);  // the tail: the scalar twin's formula
}

float exp_sum(float* x, int n, float max) {
    const __m256 m = _mm256_set1_ps(max);
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    const float sum = hsum(acc);
    return sum + scalar_kernels()->exp_sum(x + i, n - i, max);  // the tail: the scalar twin
}

// ---- integer kernels: weights times activations quantized to 8-bit blocks ----

void quantize_act(const float* x, BlockQ8A* out, int n) {
    const __m256 sign_mask = _mm256_set1_ps(-0.f);
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        for (int k = 0; k < 4; ++k) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_mask, v[k]));
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        const float d = _mm_cvtss_f32(m) / 127.f, id = d > 0 ? 1.f / d : 0.f;
        const __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], idv));  // round to nearest even
        const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_hadd_epi32(s4, s4);
        s4 = _mm_hadd_epi32(s4, s4);
        // int32 -> int8 with saturation; packs interleave 128-bit lanes, the permute restores the order
        const __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
        const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b),
                                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[i].qs), p8);
        out[i].d = d;
        out[i].s = d * static_cast<float>(_mm_cvtsi128_si32(s4));
    }
}

// 32 nibbles (Q4 layout) -> 32 bytes 0..15, elements in order. The 16 bytes are loaded into both lanes and the
// high lane shifted by 4: no cross-lane shuffle, which would compete with maddubs for port 5.
inline __m256i unpack_nibbles(const uint8_t* qs) {
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
    const __m256i shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f));
}

// A Q3_0 block's 32 codes (0..7) as bytes in element order. The low planes: the 8-byte word in each 64-bit lane,
// lane k shifted right by 2k, leaves element 8k+i's two bits at the bottom of byte i (the shift carries bits across
// bytes, but only into the bits the mask drops). The high plane: byte j takes byte j/8 of qh and tests bit j%8.
// Q2_NL's codes are the low planes alone.
inline __m256i unpack_low_planes(const uint8_t* qs) {
    uint64_t lo;
    std::memcpy(&lo, qs, 8);
    return _mm256_and_si256(_mm256_srlv_epi64(_mm256_set1_epi64x(static_cast<long long>(lo)),
                                              _mm256_setr_epi64x(0, 2, 4, 6)),
                            _mm256_set1_epi8(3));
}
// Bit j of the four bytes at `qh` (a little-endian 32-bit word) as byte j: `value` where set, else 0.
inline __m256i bits_to_bytes(const uint8_t* qh, char value) {
    uint32_t word;
    std::memcpy(&word, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(static_cast<int>(word)),
        _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
    const __m256i bits = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bits), bits);
    return _mm256_and_si256(set, _mm256_set1_epi8(value));
}
template <class Block>  // Q3_0 and Q3_NL
inline __m256i unpack_q3(const Block& b) {
    return _mm256_or_si256(unpack_low_planes(b.qs), bits_to_bytes(b.qh, 4));
}
template <class Block>  // Q5_0 and Q5_1: Q4_0's nibbles, the fifth bit from qh
inline __m256i unpack_q5(const Block& b) {
    return _mm256_or_si256(unpack_nibbles(b.qs), bits_to_bytes(b.qh, 0x10));
}

// Sum of products of 32 unsigned bytes u and 32 signed bytes s, as 8 int32 partial sums.
inline __m256i dot_u8s8(__m256i u, __m256i s) {
#if defined(FRANKEN_VNNI)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}
// The same for two signed operands: |a| * (b with a's sign).
inline __m256i dot_s8s8(__m256i a, __m256i b) { return dot_u8s8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)); }

inline __m256i load_act(const BlockQ8A& a) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs)); }

// Block scale d_w * d_x, both broadcast from memory (the half through the table).
inline __m256 scale(const float* f16, uint16_t dw, const BlockQ8A& a) {
    return _mm256_mul_ps(_mm256_broadcast_ss(&f16[dw]), _mm256_broadcast_ss(&a.d));
}

// Two accumulators, so consecutive blocks' FMAs do not wait on each other.
template <class Block, class BlockDot>
inline float dotq_blocks(const Block* b, const BlockQ8A* a, int nb, BlockDot block_dot) {
    const float* f16 = fp16_table();
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 2 <= nb; i += 2) {
        acc0 = _mm256_fmadd_ps(scale(f16, b[i].d, a[i]), _mm256_cvtepi32_ps(block_dot(b[i], a[i])), acc0);
        acc1 = _mm256_fmadd_ps(scale(f16, b[i + 1].d, a[i + 1]), _mm256_cvtepi32_ps(block_dot(b[i + 1], a[i + 1])), acc1);
    }
    if (i < nb) acc0 = _mm256_fmadd_ps(scale(f16, b[i].d, a[i]), _mm256_cvtepi32_ps(block_dot(b[i], a[i])), acc0);
    return hsum(_mm256_add_ps(acc0, acc1));
}

float dotq_q8_0(const void* row, const BlockQ8A* a, int n) {
    return dotq_blocks(static_cast<const BlockQ8_0*>(row), a, n / kQK, [](const BlockQ8_0& b, const BlockQ8A& x) {
        return dot_s8s8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)), load_act(x));
    });
}

// Blocks valued d * (q - kOffset) with unsigned codes q (Q4_0: 8, Q3_0: 4): d (q - k) x = d q x - k d x, so the
// codes stay unsigned (no sign fix-ups) and the offset comes from the activation block sums.
template <class Block, int kOffset, __m256i (*codes)(const Block&)>
float dotq_offset(const void* row, const BlockQ8A* a, int n) {
    const Block* b = static_cast<const Block*>(row);
    const float* f16 = fp16_table();
    float offset = 0.f;
    for (int i = 0; i < n / kQK; ++i) offset += f16[b[i].d] * a[i].s;
    return dotq_blocks(b, a, n / kQK, [](const Block& w, const BlockQ8A& x) {
        return dot_u8s8(codes(w), load_act(x));
    }) - static_cast<float>(kOffset) * offset;
}

inline __m256i codes_q4_0(const BlockQ4_0& b) { return unpack_nibbles(b.qs); }
constexpr DotQFn dotq_q4_0 = dotq_offset<BlockQ4_0, 8, codes_q4_0>;

// Blocks valued d * q + m (Q4_1, Q5_1): unsigned codes, the minimums times the activation block sums.
template <class Block, __m256i (*codes)(const Block&)>
float dotq_min(const void* row, const BlockQ8A* a, int n) {
    const Block* b = static_cast<const Block*>(row);
    const float* f16 = fp16_table();
    float mins = 0.f;  // sum over blocks of m * sum(x)
    for (int i = 0; i < n / kQK; ++i) mins += f16[b[i].m] * a[i].s;
    return mins + dotq_blocks(b, a, n / kQK, [](const Block& w, const BlockQ8A& x) {
        return dot_u8s8(codes(w), load_act(x));
    });
}
inline __m256i codes_q4_1(const BlockQ4_1& b) { return unpack_nibbles(b.qs); }
constexpr DotQFn dotq_q4_1 = dotq_min<BlockQ4_1, codes_q4_1>;

constexpr DotQFn dotq_q3_0 = dotq_offset<BlockQ3_0, 4, unpack_q3<BlockQ3_0>>;
constexpr DotQFn dotq_q5_0 = dotq_offset<BlockQ5_0, 16, unpack_q5<BlockQ5_0>>;
constexpr DotQFn dotq_q5_1 = dotq_min<BlockQ5_1, unpack_q5<BlockQ5_1>>;

// ---- the K-quants (formats.h): piece p of superblock i (32 codes, unsigned) meets activation block 8i + p ----

// Q4_K and Q5_K: pieces 2j and 2j + 1 are the low and high nibbles of one 32-byte load (Q5_K: the fifth bit of
// piece p is bit p of qh). Per piece d * sc * d_x times the integer sum, and the minimum dmin * mn times the
// activation block's sum, apart. Two accumulators: the pieces of a pair do not wait on each other.
template <class Block>
float dotq_k_nibbles(const void* row, const BlockQ8A* a, int n) {
    const Block* b = static_cast<const Block*>(row);
    const float* f16 = fp16_table();
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float mins = 0.f;
    for (int i = 0; i < n / kQK_K; ++i, a += kPiecesK) {
        const float d = f16[b[i].d], dmin = f16[b[i].dmin];
        uint8_t sc[kPiecesK], mn[kPiecesK];
        k_scales_mins(b[i].scales, sc, mn);
        __m256i qh = _mm256_setzero_si256();
        if constexpr (std::is_same_v<Block, BlockQ5_K>) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh));
        for (int j = 0; j < kPiecesK / 2; ++j) {
            const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * j));
            __m256i lo = _mm256_and_si256(raw, low4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
            if constexpr (std::is_same_v<Block, BlockQ5_K>) {
                const __m256i b0 = _mm256_set1_epi8(static_cast<char>(1 << (2 * j))), b1 = _mm256_slli_epi16(b0, 1);
                const __m256i five = _mm256_set1_epi8(0x10);
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b0), b0), five));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), b1), five));
            }
            const BlockQ8A &x0 = a[2 * j], &x1 = a[2 * j + 1];
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d * static_cast<float>(sc[2 * j]) * x0.d),
                                   _mm256_cvtepi32_ps(dot_u8s8(lo, load_act(x0))), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d * static_cast<float>(sc[2 * j + 1]) * x1.d),
                                   _mm256_cvtepi32_ps(dot_u8s8(hi, load_act(x1))), acc1);
            mins += dmin * (static_cast<float>(mn[2 * j]) * x0.s + static_cast<float>(mn[2 * j + 1]) * x1.s);
        }
    }
    return hsum(_mm256_add_ps(acc0, acc1)) - mins;
}

// Q6_K: six-bit codes (four from ql's nibbles, two from qh) valued q - 32, a scale per 16 elements. The unsigned
// codes' products less 32 times the activation sums (both per 32-bit lane), and each 128-bit half of the integer
// sums (elements 0-15 and 16-31 of the piece) takes its sub-block's scale.
float dotq_q6_k(const void* row, const BlockQ8A* a, int n) {
    const BlockQ6_K* b = static_cast<const BlockQ6_K*>(row);
    const float* f16 = fp16_table();
    const __m256i low4 = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int i = 0; i < n / kQK_K; ++i) {
        const float d = f16[b[i].d];
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = b[i].ql + 64 * h;
            const int8_t* sc = b[i].scales + 8 * h;
            const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qh + 32 * h));
            const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
            const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
            for (int k = 0; k < 4; ++k, ++a) {
                const __m256i l = k % 2 ? l1 : l0;
                const __m256i nib = k < 2 ? _mm256_and_si256(l, low4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), low4);
                const __m256i top = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), two);
                const __m256i q = _mm256_or_si256(nib, _mm256_slli_epi16(top, 4));
                const __m256i x = load_act(*a);
                const __m256i sums = _mm256_sub_epi32(dot_u8s8(q, x), dot_u8s8(k32, x));
                const __m256 scales = _mm256_setr_m128(_mm_set1_ps(d * static_cast<float>(sc[2 * k]) * a->d),
                                                       _mm_set1_ps(d * static_cast<float>(sc[2 * k + 1]) * a->d));
                if (k % 2) acc1 = _mm256_fmadd_ps(scales, _mm256_cvtepi32_ps(sums), acc1);
                else acc0 = _mm256_fmadd_ps(scales, _mm256_cvtepi32_ps(sums), acc0);
            }
        }
    }
    return hsum(_mm256_add_ps(acc0, acc1));
}

// The codebook formats whose levels are integers in -8..7 (Q3_NL, Q2_NL): their levels + 8 are nibbles, so one
// in-lane shuffle turns codes into Q4_0's unsigned codes, and every Q4_0 product (offset 8) serves them.
struct NibbleLevels {
    alignas(16) uint8_t v[16];
};
template <size_t N>
constexpr NibbleLevels nibble_levels(const int8_t (&values)[N]) {
    static_assert(N <= 16, "a shuffle table holds sixteen levels");
    NibbleLevels t{};
    for (size_t i = 0; i < N; ++i) t.v[i] = static_cast<uint8_t>(values[i] + 8);
    return t;
}
constexpr NibbleLevels kQ3NLNibbles = nibble_levels(kQ3NLValues);
constexpr NibbleLevels kQ2NLNibbles = nibble_levels(kQ2NLValues);

inline __m256i lut16(const void* table);
inline __m256i codes_q3_nl(const BlockQ3_NL& b) { return _mm256_shuffle_epi8(lut16(kQ3NLNibbles.v), unpack_q3(b)); }
inline __m256i codes_q2_nl(const BlockQ2_NL& b) {
    return _mm256_shuffle_epi8(lut16(kQ2NLNibbles.v), unpack_low_planes(b.qs));
}
constexpr DotQFn dotq_q3_nl = dotq_offset<BlockQ3_NL, 8, codes_q3_nl>;
constexpr DotQFn dotq_q2_nl = dotq_offset<BlockQ2_NL, 8, codes_q2_nl>;

// IQ4_NL's 32 levels in element order: the nibbles (unpack_nibbles) index the sixteen levels, duplicated in both
// 128-bit lanes, with one in-lane shuffle.
// A sixteen-byte table in both 128-bit lanes: PSHUFB with nibbles as indices looks it up.
inline __m256i lut16(const void* table) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(table)));
}

inline __m256i levels_iq4_nl(const BlockIQ4_NL& b) {
    return _mm256_shuffle_epi8(lut16(kIQ4NLValues), unpack_nibbles(b.qs));
}

float dotq_iq4_nl(const void* row, const BlockQ8A* a, int n) {
    return dotq_blocks(static_cast<const BlockIQ4_NL*>(row), a, n / kQK, [](const BlockIQ4_NL& b, const BlockQ8A& x) {
        return dot_s8s8(levels_iq4_nl(b), load_act(x));
    });
}

// 32 codes (bytes 0..7) -> four vectors of eight floats, in element order.
inline void codes_to_ps(__m256i q, __m256 out[4]) {
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    out[0] = u8x8_to_ps(lo);
    out[1] = u8x8_to_ps(_mm_srli_si128(lo, 8));
    out[2] = u8x8_to_ps(hi);
    out[3] = u8x8_to_ps(_mm_srli_si128(hi, 8));
}

float dot_q3_0(const void* row, const float* x, int n) {
    const BlockQ3_0* b = static_cast<const BlockQ3_0*>(row);
    __m256 acc = _mm256_setzero_ps();
    const __m256 four = _mm256_set1_ps(4.f);
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        __m256 q[4];
        codes_to_ps(unpack_q3(b[i]), q);
        __m256 s = _mm256_mul_ps(q[0], _mm256_loadu_ps(x));
        for (int k = 1; k < 4; ++k) s = _mm256_fmadd_ps(q[k], _mm256_loadu_ps(x + 8 * k), s);
        acc = _mm256_fmadd_ps(bcast_f16(b[i].d), _mm256_fnmadd_ps(four, sum32(x), s), acc);
    }
    return hsum(acc);
}

void to_f32_q3_0(const void* row, float* out, int n) {
    const BlockQ3_0* b = static_cast<const BlockQ3_0*>(row);
    for (int i = 0; i < n / kQK; ++i, out += kQK) {
        const float d = _cvtsh_ss(b[i].d);
        const __m256 dv = _mm256_set1_ps(d), off = _mm256_set1_ps(-4.f * d);
        __m256 q[4];
        codes_to_ps(unpack_q3(b[i]), q);
        for (int k = 0; k < 4; ++k) _mm256_storeu_ps(out + 8 * k, _mm256_fmadd_ps(dv, q[k], off));
    }
}

// ---- matrix-matrix: each weight row decoded once to bytes (0..15 or -128..127) and float scales, then
// multiplied with four activation rows at a time, sharing every weight load. ----

constexpr int kMaxBlocks = 1024;  // rows up to 32768 elements; longer rows fall back to dot products

// A weight row decoded for reuse: unsigned (Q4) or signed (Q8) bytes, the scale d and the per-block offset term
// m (the value is d*q + m; Q4_0's -8 offset becomes m = -8d, so all 4-bit kinds run unsigned x signed). Q6_K's
// blocks have a scale per 16-element half: d for the first, d2 for the second (kHalves).
struct DecodedRow {
    alignas(32) uint8_t q[kMaxBlocks * kQK];
    float d[kMaxBlocks];
    float m[kMaxBlocks];
    float d2[kMaxBlocks];
};

// Block b's weight scale, for the eight int32 lanes of an integer sum (lanes 0-3 hold elements 0-15).
template <bool kHalves>
inline __m256 weight_scale(const DecodedRow& w, int b) {
    if constexpr (kHalves) return _mm256_setr_m128(_mm_broadcast_ss(&w.d[b]), _mm_broadcast_ss(&w.d2[b]));
    return _mm256_broadcast_ss(&w.d[b]);
}

template <bool kSigned, bool kHalves = false>
inline void gemm_row(const DecodedRow& w, int nb, const BlockQ8A* act, int n_act, float* out, size_t ldo) {
    int t = 0;
    for (; t + 4 <= n_act; t += 4) {
        const BlockQ8A* a[4] = {act + (t + 0) * nb, act + (t + 1) * nb, act + (t + 2) * nb, act + (t + 3) * nb};
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        float mins[4] = {0, 0, 0, 0};
        for (int b = 0; b < nb; ++b) {
            const __m256i wq = _mm256_load_si256(reinterpret_cast<const __m256i*>(w.q + b * kQK));
            const __m256i wabs = kSigned ? _mm256_sign_epi8(wq, wq) : wq;
            const __m256 dw = weight_scale<kHalves>(w, b);
            for (int k = 0; k < 4; ++k) {
                const __m256i x = load_act(a[k][b]);
                const __m256i p = dot_u8s8(wabs, kSigned ? _mm256_sign_epi8(x, wq) : x);
                acc[k] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(&a[k][b].d)), _mm256_cvtepi32_ps(p), acc[k]);
                if (!kSigned) mins[k] += w.m[b] * a[k][b].s;
            }
        }
        for (int k = 0; k < 4; ++k) out[(t + k) * ldo] = hsum(acc[k]) + mins[k];
    }
    for (; t < n_act; ++t) {
        const BlockQ8A* a = act + t * nb;
        __m256 acc = _mm256_setzero_ps();
        float mins = 0;
        for (int b = 0; b < nb; ++b) {
            const __m256i wq = _mm256_load_si256(reinterpret_cast<const __m256i*>(w.q + b * kQK));
            const __m256i x = load_act(a[b]);
            const __m256i p = kSigned ? dot_s8s8(wq, x) : dot_u8s8(wq, x);
            acc = _mm256_fmadd_ps(_mm256_mul_ps(weight_scale<kHalves>(w, b), _mm256_broadcast_ss(&a[b].d)),
                                  _mm256_cvtepi32_ps(p), acc);
            if (!kSigned) mins += w.m[b] * a[b].s;
        }
        out[t * ldo] = hsum(acc) + mins;
    }
}

// Each row decoded whole by decode_row(row, nb, f16, w) (nb: 32-element blocks), then multiplied.
template <bool kSigned, bool kHalves, DotQFn kDot, class DecodeRow>
void gemm_rows_decoded(const uint8_t* rows, int n_rows, size_t row_stride, const BlockQ8A* act, int n_act, int n,
                       float* out, size_t ldo, DecodeRow decode_row) {
    const int nb = n / kQK;
    if (nb > kMaxBlocks) return gemm_by_dots<kDot>(rows, n_rows, row_stride, act, n_act, n, out, ldo);
    DecodedRow w;
    const float* f16 = fp16_table();
    for (int i = 0; i < n_rows; ++i) {
        decode_row(rows + i * row_stride, nb, f16, w);
        gemm_row<kSigned, kHalves>(w, nb, act, n_act, out + i, ldo);
    }
}

// Formats of 32-element blocks: decode(block, f16, codes, d, m) per block.
template <class Block, bool kSigned, class Decode, DotQFn kDot>
void gemm_decoded(const uint8_t* rows, int n_rows, size_t row_stride, const BlockQ8A* act, int n_act, int n,
                  float* out, size_t ldo, Decode decode) {
    gemm_rows_decoded<kSigned, false, kDot>(rows, n_rows, row_stride, act, n_act, n, out, ldo,
                                            [decode](const uint8_t* row, int nb, const float* f16, DecodedRow& w) {
        const Block* blocks = reinterpret_cast<const Block*>(row);
        for (int b = 0; b < nb; ++b) decode(blocks[b], f16, w.q + b * kQK, w.d[b], w.m[b]);
    });
}

void gemmq_q8_0(const uint8_t* rows, int n_rows, size_t stride, const BlockQ8A* act, int n_act, int n, float* out,
                size_t ldo) {
    auto decode = [](const BlockQ8_0& b, const float* f16, uint8_t* q, float& d, float& m) {
        std::memcpy(q, b.qs, kQK);
        d = f16[b.d];
        m = 0.f;
    };
    gemm_decoded<BlockQ8_0, true, decltype(decode), dotq_q8_0>(rows, n_rows, stride, act, n_act, n, out, ldo, decode);
}

void gemmq_q4_0(const uint8_t* rows, int n_rows, size_t stride, const BlockQ8A* act, int n_act, int n, float* out,
                size_t ldo) {
    auto decode = [](const BlockQ4_0& b, const float* f16, uint8_t* q, float& d, float& m) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(q), unpack_nibbles(b.qs));
        d = f16[b.d];
        m = -8.f * d;
    };
    gemm_decoded<BlockQ4_0, false, decltype(decode), dotq_q4_0>(rows, n_rows, stride, act, n_act, n, out, ldo, decode);
}

void gemmq_q4_1(const uint8_t* rows, int n_rows, size_t stride, const BlockQ8A* act, int n_act, int n, float* out,
                size_t ldo) {
    auto decode = [](const BlockQ4_1& b, const float* f16, uint8_t* q, float& d, float& m) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(q), unpack_nibbles(b.qs));
        d = f16[b.d];
        m = f16[b.m];
    };
    gemm_decoded<BlockQ4_1, false, decltype(decode), dotq_q4_1>(rows, n_rows, stride, act, n_act, n, out, ldo, decode);
}

void gemmq_q3_0(const uint8_t* rows, int n_rows, size_t stride, const BlockQ8A* act, int n_act, int n, float* out,
                size_t ldo) {
    auto decode = [](const BlockQ3_0& b, const float* f16, uint8_t* q, float& d, float& m) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(q), unpack_q3(b));
        d = f16[b.d];
        m = -4.f * d;
    };
    gemm_decoded<BlockQ3_0, false, decltype(decode), dotq_q3_0>(rows, n_rows, stride, act, n_act, n, out, ldo, decode);
}

// Q3_NL and Q2_NL: decoded to Q4_0's unsigned codes (see NibbleLevels).
template <class Block, __m256i (*codes)(const Block&), DotQFn kDot>
void gemmq_nibble_levels(const uint8_t* rows, int n_rows, size_t stride, const BlockQ8A* act, int n_act, int n,
                         float* out, size_t ldo) {
    auto decode = [](const Block& b, const float* f16, uint8_t* q, float& d, float& m) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(q), codes(b));
        d = f16[b.d];
        m = -8.f * d;
    };
    gemm_decoded<Block, false, decltype(decode), kDot>(rows, n_rows, stride, act, n_act, n, out, ldo, decode);
}

void gemmq_iq4_nl(const uint8_t* rows, int n_rows, size_t stride, const BlockQ8A* act, int n_act, int n, float* out,
                  size_t ldo) {
    auto decode = [](const BlockIQ4_NL& b, const float* f16, uint8_t* q, float& d, float& m) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(q), levels_iq4_nl(b));
        d = f16[b.d];
        m = 0.f;
    };
    gemm_decoded<BlockIQ4_NL, true, decltype(decode), dotq_iq4_nl>(rows, n_rows, stride, act, n_act, n, out, ldo,
                                                                   decode);
}

// Q5_0 and Q5_1: unsigned five-bit codes, Q5_0's offset of 16 as the minimum -16d.
template <class Block, DotQFn kDot>
void gemmq_q5(const uint8_t* rows, int n_rows, size_t stride, const BlockQ8A* act, int n_act, int n, float* out,
              size_t ldo) {
    auto decode = [](const Block& b, const float* f16, uint8_t* q, float& d, float& m) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(q), unpack_q5(b));
        d = f16[b.d];
        if constexpr (std::is_same_v<Block, BlockQ5_1>) m = f16[b.m];
        else m = -16.f * d;
    };
    gemm_decoded<Block, false, decltype(decode), kDot>(rows, n_rows, stride, act, n_act, n, out, ldo, decode);
}

// The K-quants: each superblock's eight pieces decoded as 32-element blocks (their scales and minimums through
// the scalar piece_codes, once per row for all the prompt's tokens).
template <class Block, bool kSigned, bool kHalves, DotQFn kDot>
void gemmq_k(const uint8_t* rows, int n_rows, size_t stride, const BlockQ8A* act, int n_act, int n, float* out,
             size_t ldo) {
    gemm_rows_decoded<kSigned, kHalves, kDot>(rows, n_rows, stride, act, n_act, n, out, ldo,
                                              [](const uint8_t* row, int nb, const float*, DecodedRow& w) {
        const Block* blocks = reinterpret_cast<const Block*>(row);
        float d[2], m[2];
        for (int b = 0; b < nb; ++b) {
            piece_codes(blocks[b / kPiecesK], b % kPiecesK, reinterpret_cast<int8_t*>(w.q + b * kQK), d, m);
            w.d[b] = d[0], w.d2[b] = d[1], w.m[b] = m[0];
        }
    });
}

// ---- interleaved Q4_0, Q4_1, Q3_0 (BlockQ4_0x8, ...): lane r of every vector belongs to weight row r ----

// Four activation bytes (elements 4i..4i+3 of a block) in every 32-bit lane.
inline __m256i bcast4(const BlockQ8A& a, int i) {
    int32_t v;
    std::memcpy(&v, a.qs + 4 * i, 4);
    return _mm256_set1_epi32(v);
}

// A block's unsigned codes as eight vectors: q[c] holds elements 4c..4c+3 of row r in lane r.
// The nibble layout (Q4_0x8's): the nibbles of 32-byte word c are chunks 2c (low) and 2c + 1 (high).
template <class Block>
inline void x8_nibbles(const Block& w, __m256i q[8]) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int c = 0; c < 4; ++c) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs + 32 * c));
        q[2 * c] = _mm256_and_si256(v, m4);
        q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
}
template <class Block>  // Q4_0 and Q4_1: the nibbles are the codes
inline void x8_codes(const Block& w, __m256i q[8]) {
    x8_nibbles(w, q);
}
// The 2-bit low planes (Q2_NL's codes; Q3_0's and Q3_NL's low bits): chunk c from a plane shifted right by
// 2 (c % 4). The 16-bit shifts carry bits across bytes, but only into bits the masks drop.
template <class Block>
inline void x8_low_planes(const Block& w, __m256i q[8]) {
    const __m256i m2 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.ql + 32 * h));
        q[4 * h] = _mm256_and_si256(v, m2);
        q[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 2), m2);
        q[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m2);
        q[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(v, 6), m2);
    }
}
// Q3_0 and Q3_NL: the low planes, and the third bit from bit c of the high plane moved to bit 2.
template <class Block>
inline void x8_q3_codes(const Block& w, __m256i q[8]) {
    x8_low_planes(w, q);
    const __m256i b2 = _mm256_set1_epi8(4);
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qh));
    const __m256i h[8] = {_mm256_slli_epi16(hi, 2), _mm256_slli_epi16(hi, 1), hi,  _mm256_srli_epi16(hi, 1),
                          _mm256_srli_epi16(hi, 2), _mm256_srli_epi16(hi, 3), _mm256_srli_epi16(hi, 4),
                          _mm256_srli_epi16(hi, 5)};
    for (int c = 0; c < 8; ++c) q[c] = _mm256_or_si256(q[c], _mm256_and_si256(h[c], b2));
}
// The fifth bits of Q5_0x8, Q5_1x8 and Q5_Kx8 (Q3_0x8's high-plane layout): bit c of the plane to bit 4 of chunk c.
inline void x8_fifth_bits(const uint8_t* qh, __m256i q[8]) {
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
    const __m256i b4 = _mm256_set1_epi8(0x10);
    const __m256i h[8] = {_mm256_slli_epi16(hi, 4), _mm256_slli_epi16(hi, 3), _mm256_slli_epi16(hi, 2),
                          _mm256_slli_epi16(hi, 1), hi, _mm256_srli_epi16(hi, 1),
                          _mm256_srli_epi16(hi, 2), _mm256_srli_epi16(hi, 3)};
    for (int c = 0; c < 8; ++c) q[c] = _mm256_or_si256(q[c], _mm256_and_si256(h[c], b4));
}
template <>
inline void x8_codes(const BlockQ5_0x8& w, __m256i q[8]) {
    x8_nibbles(w, q);
    x8_fifth_bits(w.qh, q);
}
template <>
inline void x8_codes(const BlockQ5_1x8& w, __m256i q[8]) {
    x8_nibbles(w, q);
    x8_fifth_bits(w.qh, q);
}
// Codes to levels + 8 (NibbleLevels: Q4_0's unsigned codes), one in-lane shuffle each.
inline void x8_lookup(const NibbleLevels& levels, __m256i q[8]) {
    const __m256i lut = lut16(levels.v);
    for (int c = 0; c < 8; ++c) q[c] = _mm256_shuffle_epi8(lut, q[c]);
}
template <>
inline void x8_codes(const BlockQ3_0x8& w, __m256i q[8]) {
    x8_q3_codes(w, q);
}
// Q3_NL and Q2_NL: their codes index levels + 8.
template <>
inline void x8_codes(const BlockQ3_NLx8& w, __m256i q[8]) {
    x8_q3_codes(w, q);
    x8_lookup(kQ3NLNibbles, q);
}
template <>
inline void x8_codes(const BlockQ2_NLx8& w, __m256i q[8]) {
    x8_low_planes(w, q);
    x8_lookup(kQ2NLNibbles, q);
}

// What each interleaved format adds to d_w d_x sum(q q_x) per block: kOffset q-offset (value d (q - k)) folded in
// as -k d_w s_x, or Q4_1's minimum, m_w s_x (s_x = d_x sum(q_x), the activation block's sum).
template <class Block> constexpr int kX8Offset = 0;
template <> constexpr int kX8Offset<BlockQ4_0x8> = 8;
template <> constexpr int kX8Offset<BlockQ3_0x8> = 4;
template <> constexpr int kX8Offset<BlockQ3_NLx8> = 8;
template <> constexpr int kX8Offset<BlockQ2_NLx8> = 8;
template <> constexpr int kX8Offset<BlockIQ4_NLx8> = 128;  // VNNI only: its levels + 128, see below
template <> constexpr int kX8Offset<BlockQ5_0x8> = 16;

// IQ4_NL's levels + 128 (1..241), unsigned bytes: VPDPBUSD sums their products with the activations exactly, so with
// VNNI IQ4_NL runs the unsigned tiles as Q4_0 does, the 128 taken off through the activation sums. PMADDUBSW's
// 16-bit pair sums would saturate on them (241 * 127 * 2 > 32767): without VNNI it runs the signed tile.
struct ShiftedLevels {
    alignas(16) uint8_t v[16];
};
constexpr ShiftedLevels shifted_iq4_nl_levels() {
    ShiftedLevels s{};
    for (int i = 0; i < 16; ++i) s.v[i] = static_cast<uint8_t>(kIQ4NLValues[i] + 128);
    return s;
}
constexpr ShiftedLevels kIQ4NLShifted = shifted_iq4_nl_levels();

#if defined(FRANKEN_VNNI)
template <>
inline void x8_codes(const BlockIQ4_NLx8& w, __m256i q[8]) {  // the nibbles index the shifted levels
    x8_nibbles(w, q);
    const __m256i lut = lut16(kIQ4NLShifted.v);
    for (int c = 0; c < 8; ++c) q[c] = _mm256_shuffle_epi8(lut, q[c]);
}
#endif
template <class Block>
constexpr bool kX8HasMin = std::is_same_v<Block, BlockQ4_1x8> || std::is_same_v<Block, BlockQ5_1x8>;
// The largest code of an interleaved format's unpacked bytes (x8_codes; sums_x8's bound): nibbles unless wider.
template <class Block> constexpr int kX8MaxCode = 15;
template <> constexpr int kX8MaxCode<BlockQ5_0x8> = 31;
template <> constexpr int kX8MaxCode<BlockQ5_1x8> = 31;
template <> constexpr int kX8MaxCode<BlockQ5_Kx8> = 31;
template <> constexpr int kX8MaxCode<BlockIQ4_NLx8> = 241;  // VNNI only: its levels + 128

// Integer sums over chunks [c0, c0 + n) of one block for eight rows: lane r = sum of q[r][j] * x[j] over those
// chunks' elements, the codes unsigned up to kMax. VPDPBUSD sums exactly; PMADDUBSW's lanes (at most
// 2 * kMax * 128 each) are added in 16 bits as many at a time as fit (eight for nibbles, four for five-bit codes,
// two for six-bit ones), then widened.
template <int kMax = 15>
inline __m256i sums_x8(const __m256i q[8], const BlockQ8A& a, int c0 = 0, int n = 8) {
#if defined(FRANKEN_VNNI)
    __m256i s = _mm256_setzero_si256();
    for (int c = c0; c < c0 + n; ++c) s = _mm256_dpbusd_epi32(s, q[c], bcast4(a, c));
    return s;
#else
    constexpr int kFit = 32767 / (2 * kMax * 128);
    static_assert(kFit >= 1, "codes too wide for PMADDUBSW's 16-bit sums");
    __m256i s = _mm256_setzero_si256();
    for (int c = c0; c < c0 + n; c += kFit) {
        __m256i s16 = _mm256_setzero_si256();
        for (int i = c; i < std::min(c + kFit, c0 + n); ++i)
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(q[i], bcast4(a, i)));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
    }
    return s;
#endif
}

// Eight rows times up to kTile activation rows. The codes of a block are unpacked once and reused by every
// activation row; the offset or minimum comes from the activation block sums (see kX8Offset).
template <class Block, int kTile>
inline void x8_tile(const Block* w, int nb, const BlockQ8A* act, float* out, size_t ldo) {
    __m256 acc[kTile], off[kTile];
    for (int k = 0; k < kTile; ++k) acc[k] = off[k] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
        __m256i q[8];
        x8_codes(w[b], q);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].d)));
        __m256 bias = dw;  // what s_x multiplies: d_w (times -kOffset at the end) or m_w
        if constexpr (kX8HasMin<Block>) bias = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].m)));
        for (int k = 0; k < kTile; ++k) {
            const BlockQ8A& a = act[static_cast<size_t>(k) * nb + b];
            const __m256 sums = _mm256_cvtepi32_ps(sums_x8<kX8MaxCode<Block>>(q, a));
            acc[k] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(&a.d)), sums, acc[k]);
            off[k] = _mm256_fmadd_ps(bias, _mm256_broadcast_ss(&a.s), off[k]);
        }
    }
    const __m256 k_off = _mm256_set1_ps(kX8HasMin<Block> ? 1.f : -static_cast<float>(kX8Offset<Block>));
    for (int k = 0; k < kTile; ++k) _mm256_storeu_ps(out + k * ldo, _mm256_fmadd_ps(k_off, off[k], acc[k]));
}

// Interleaved Q4_K and Q5_K (BlockQ4_Kx8, BlockQ5_Kx8): per piece, the eight rows' nibbles in Q4_0x8's layout (and
// Q5_K's fifth bits from Q3_0x8's high-plane layout) and their scales and minimums from one 12-byte group
// (k_scales_mins), times d and dmin of the eight rows.
struct Nibbles {
    const uint8_t* qs;
};
template <class Block, int kTile>
void kx8_tile(const Block* w, int nb, const BlockQ8A* act, float* out, size_t ldo) {
    __m256 acc[kTile], mins[kTile];
    for (int k = 0; k < kTile; ++k) acc[k] = mins[k] = _mm256_setzero_ps();
    for (int s = 0; s < nb / kPiecesK; ++s) {
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[s].d)));
        const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[s].dmin)));
        for (int p = 0; p < kPiecesK; ++p) {
            alignas(8) uint8_t sc[kX8], mn[kX8];
            k_scales_mins(w[s].scales[p], sc, mn);
            const __m256 dsc = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                                    reinterpret_cast<const __m128i*>(sc)))));
            const __m256 dmn = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                                       reinterpret_cast<const __m128i*>(mn)))));
            __m256i q[8];
            x8_nibbles(Nibbles{w[s].qs[p]}, q);
            if constexpr (std::is_same_v<Block, BlockQ5_Kx8>) x8_fifth_bits(w[s].qh[p], q);
            for (int k = 0; k < kTile; ++k) {
                const BlockQ8A& a = act[static_cast<size_t>(k) * nb + kPiecesK * s + p];
                const __m256 sums = _mm256_cvtepi32_ps(sums_x8<kX8MaxCode<Block>>(q, a));
                acc[k] = _mm256_fmadd_ps(_mm256_mul_ps(dsc, _mm256_broadcast_ss(&a.d)), sums, acc[k]);
                mins[k] = _mm256_fmadd_ps(dmn, _mm256_broadcast_ss(&a.s), mins[k]);
            }
        }
    }
    for (int k = 0; k < kTile; ++k) _mm256_storeu_ps(out + k * ldo, _mm256_sub_ps(acc[k], mins[k]));
}
// Groups of nb / 8 superblocks each.
template <class Block>
void gemmq_kx8(const void* groups, int n_groups, int nb, const BlockQ8A* act, int n_act, float* out, size_t ldo) {
    for (int g = 0; g < n_groups; ++g, out += kX8) {
        const Block* w = static_cast<const Block*>(groups) + static_cast<size_t>(g) * (nb / kPiecesK);
        int t = 0;
        for (; t + 4 <= n_act; t += 4) kx8_tile<Block, 4>(w, nb, act + static_cast<size_t>(t) * nb, out + t * ldo, ldo);
        for (; t < n_act; ++t) kx8_tile<Block, 1>(w, nb, act + static_cast<size_t>(t) * nb, out + t * ldo, ldo);
    }
}

// Interleaved Q6_K (BlockQ6_Kx8): per piece, the eight rows' six-bit codes (nibbles plus two bits from Q3_0x8's
// low-plane layout) and, per 16-element half, their int8 scales. The codes stay unsigned: a half's sum less
// 32 times the activations' sum over that half (`halves`, computed once per call for every activation block).
template <int kTile>
void q6_kx8_tile(const BlockQ6_Kx8* w, int nb, const BlockQ8A* act, const int32_t* halves, float* out,
                 size_t ldo) {
    __m256 acc[kTile];
    for (int k = 0; k < kTile; ++k) acc[k] = _mm256_setzero_ps();
    for (int s = 0; s < nb / kPiecesK; ++s) {
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[s].d)));
        for (int p = 0; p < kPiecesK; ++p) {
            __m256i q[8];
            x8_nibbles(Nibbles{w[s].ql[p]}, q);
            const __m256i m = _mm256_set1_epi8(0x30);  // chunk c's two bits moved straight to bits 4-5
            for (int h = 0; h < 2; ++h) {
                const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[s].qh[p] + 32 * h));
                q[4 * h] = _mm256_or_si256(q[4 * h], _mm256_and_si256(_mm256_slli_epi16(v, 4), m));
                q[4 * h + 1] = _mm256_or_si256(q[4 * h + 1], _mm256_and_si256(_mm256_slli_epi16(v, 2), m));
                q[4 * h + 2] = _mm256_or_si256(q[4 * h + 2], _mm256_and_si256(v, m));
                q[4 * h + 3] = _mm256_or_si256(q[4 * h + 3], _mm256_and_si256(_mm256_srli_epi16(v, 2), m));
            }
            __m256 scale[2];
            for (int h = 0; h < 2; ++h)
                scale[h] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                                                _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w[s].scales[p][h])))));
            for (int k = 0; k < kTile; ++k) {
                const size_t b = static_cast<size_t>(k) * nb + kPiecesK * s + p;
                const BlockQ8A& a = act[b];
                for (int h = 0; h < 2; ++h) {
                    const __m256i sum = sums_x8<63>(q, a, 4 * h, 4);  // the half's four chunks
                    const __m256i centered = _mm256_sub_epi32(sum, _mm256_set1_epi32(32 * halves[2 * b + h]));
                    acc[k] = _mm256_fmadd_ps(_mm256_mul_ps(scale[h], _mm256_broadcast_ss(&a.d)),
                                             _mm256_cvtepi32_ps(centered), acc[k]);
                }
            }
        }
    }
    for (int k = 0; k < kTile; ++k) _mm256_storeu_ps(out + k * ldo, acc[k]);
}
void gemmq_q6_kx8(const void* groups, int n_groups, int nb, const BlockQ8A* act, int n_act, float* out, size_t ldo) {
    std::vector<int32_t> halves(2 * static_cast<size_t>(n_act) * nb);  // sum of each half of each activation block
    for (size_t b = 0; b < static_cast<size_t>(n_act) * nb; ++b)
        for (int h = 0; h < 2; ++h) {
            int32_t sum = 0;
            for (int j = 16 * h; j < 16 * h + 16; ++j) sum += act[b].qs[j];
            halves[2 * b + h] = sum;
        }
    for (int g = 0; g < n_groups; ++g, out += kX8) {
        const BlockQ6_Kx8* w = static_cast<const BlockQ6_Kx8*>(groups) + static_cast<size_t>(g) * (nb / kPiecesK);
        int t = 0;
        for (; t + 4 <= n_act; t += 4)
            q6_kx8_tile<4>(w, nb, act + static_cast<size_t>(t) * nb, &halves[2 * static_cast<size_t>(t) * nb],
                           out + t * ldo, ldo);
        for (; t < n_act; ++t)
            q6_kx8_tile<1>(w, nb, act + static_cast<size_t>(t) * nb, &halves[2 * static_cast<size_t>(t) * nb],
                           out + t * ldo, ldo);
    }
}

// The interleaved 4-bit and 3-bit formats: groups one at a time, in tiles of four tokens (avx512_vnni.cpp takes
// two groups per 512-bit register where it can).
template <class Block>
constexpr GemmX8Fn gemmq_x8_codes = groups_by_tiles<Block, x8_tile<Block, 4>, x8_tile<Block, 1>>;

// Word c of an interleaved block as signed bytes: elements 4c..4c+3 of row r in lane r (the layout of Q8_0x8's
// words). IQ4_NL's nibbles (Q4_0x8's order: word c / 2, low nibbles for even c) index its levels with one shuffle.
inline __m256i signed_word(const BlockQ8_0x8& w, int c) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs + 32 * c));
}
inline __m256i signed_word(const BlockIQ4_NLx8& w, int c) {
    const __m256i levels = lut16(kIQ4NLValues);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs + 32 * (c / 2)));
    const __m256i nib = _mm256_and_si256(c % 2 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0f));
    return _mm256_shuffle_epi8(levels, nib);
}

// Eight rows of signed codes (Q8_0, IQ4_NL) times up to kTile activation rows. Both operands are signed; the integer dot product wants one
// unsigned. With VNNI the activation bytes are offset by 128 (x + 128 is unsigned) and 128 * sum(w) taken off
// again, the weight sums shared by the tile; without it, |w| times x with w's sign, as in dot_s8s8.
template <class Block, int kTile>
inline void signed_x8_tile(const Block* w, int nb, const BlockQ8A* act, float* out, size_t ldo) {
    __m256 acc[kTile];
    for (int k = 0; k < kTile; ++k) acc[k] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
        __m256i s[kTile];
        for (int k = 0; k < kTile; ++k) s[k] = _mm256_setzero_si256();
#if defined(FRANKEN_VNNI)
        __m256i wsum = _mm256_setzero_si256();
        const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi8(1);
#endif
        for (int c = 0; c < 8; ++c) {
            const __m256i wq = signed_word(w[b], c);
#if defined(FRANKEN_VNNI)
            wsum = _mm256_dpbusd_epi32(wsum, ones, wq);
            for (int k = 0; k < kTile; ++k)
                s[k] = _mm256_dpbusd_epi32(s[k], _mm256_xor_si256(bcast4(act[static_cast<size_t>(k) * nb + b], c), flip), wq);
#else
            const __m256i wabs = _mm256_sign_epi8(wq, wq);
            for (int k = 0; k < kTile; ++k) {
                const __m256i x = _mm256_sign_epi8(bcast4(act[static_cast<size_t>(k) * nb + b], c), wq);
                s[k] = _mm256_add_epi32(s[k], _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, x), _mm256_set1_epi16(1)));
            }
#endif
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].d)));
        for (int k = 0; k < kTile; ++k) {
            const BlockQ8A& a = act[static_cast<size_t>(k) * nb + b];
#if defined(FRANKEN_VNNI)
            s[k] = _mm256_sub_epi32(s[k], _mm256_slli_epi32(wsum, 7));
#endif
            acc[k] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(&a.d)), _mm256_cvtepi32_ps(s[k]), acc[k]);
        }
    }
    for (int k = 0; k < kTile; ++k) _mm256_storeu_ps(out + k * ldo, acc[k]);
}

template <class Block>
constexpr GemmX8Fn gemmq_signed_x8 = groups_by_tiles<Block, signed_x8_tile<Block, 4>, signed_x8_tile<Block, 1>>;

// ---- attention over the KV cache: rows read once for every query of the group ----

// Eight elements of a cache row from element d, as floats.
template <DType T>
inline __m256 kv_load8(const uint8_t* row, int d) {
    if constexpr (T == DType::F32) {
        return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + d);
    } else if constexpr (T == DType::F16) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * static_cast<size_t>(d))));
    } else {  // Q8_0
        const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(row)[d / kQK];
        return _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(b.d)), i8x8_to_ps(b.qs + d % kQK));
    }
}

// Scores of kNq queries (q[i] at q + i * hd) against every key: the key's eight-element pieces feed all of them.
template <DType T, int kNq>
void kv_scores_tile(const uint8_t* rows, size_t stride, int n, const float* q, int hd, float* out, size_t ld) {
    for (int j = 0; j < n; ++j) {
        const uint8_t* row = rows + static_cast<size_t>(j) * stride;
        __m256 acc[kNq];
        for (int i = 0; i < kNq; ++i) acc[i] = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 8) {
            const __m256 k = kv_load8<T>(row, d);
            for (int i = 0; i < kNq; ++i) acc[i] = _mm256_fmadd_ps(k, _mm256_loadu_ps(q + i * hd + d), acc[i]);
        }
        for (int i = 0; i < kNq; ++i) out[i * ld + j] = hsum(acc[i]);
    }
}

// The weighted sum for kNq queries, 32 elements at a time (4 registers per query, one cache line of F16 values
// per row and pass), every row of the pass accumulated in registers.
template <DType T, int kNq>
void kv_mix_tile(const uint8_t* rows, size_t stride, int n, const float* p, size_t ld, int hd, float* out) {
    for (int d = 0; d < hd; d += 32) {
        __m256 acc[kNq][4];
        for (int i = 0; i < kNq; ++i)
            for (int c = 0; c < 4; ++c) acc[i][c] = _mm256_setzero_ps();
        for (int j = 0; j < n; ++j) {
            const uint8_t* row = rows + static_cast<size_t>(j) * stride;
            __m256 v[4];
            for (int c = 0; c < 4; ++c) v[c] = kv_load8<T>(row, d + 8 * c);
            for (int i = 0; i < kNq; ++i) {
                const __m256 w = _mm256_broadcast_ss(p + i * ld + j);
                for (int c = 0; c < 4; ++c) acc[i][c] = _mm256_fmadd_ps(w, v[c], acc[i][c]);
            }
        }
        for (int i = 0; i < kNq; ++i)
            for (int c = 0; c < 4; ++c) _mm256_storeu_ps(out + i * hd + d + 8 * c, acc[i][c]);
    }
}

// Queries in tiles (as many as the registers hold), each tile one pass over the rows.
template <DType T>
void kv_scores_typed(const uint8_t* rows, size_t stride, int n, const float* q, int n_q, int hd, float* out,
                     size_t ld) {
    int i = 0;
    for (; i + 4 <= n_q; i += 4) kv_scores_tile<T, 4>(rows, stride, n, q + i * hd, hd, out + i * ld, ld);
    switch (n_q - i) {
        case 3: kv_scores_tile<T, 3>(rows, stride, n, q + i * hd, hd, out + i * ld, ld); break;
        case 2: kv_scores_tile<T, 2>(rows, stride, n, q + i * hd, hd, out + i * ld, ld); break;
        case 1: kv_scores_tile<T, 1>(rows, stride, n, q + i * hd, hd, out + i * ld, ld); break;
        default: break;
    }
}

template <DType T>
void kv_mix_typed(const uint8_t* rows, size_t stride, int n, const float* p, size_t ld, int n_q, int hd,
                  float* out) {
    // Three queries: 12 accumulators and 4 values (and the weight's broadcast: the AVX2 build's 16 registers are one
    // short, the AVX512 build has 32).
    int i = 0;
    for (; i + 3 <= n_q; i += 3) kv_mix_tile<T, 3>(rows, stride, n, p + i * ld, ld, hd, out + i * hd);
    if (n_q - i == 2) kv_mix_tile<T, 2>(rows, stride, n, p + i * ld, ld, hd, out + i * hd);
    if (n_q - i == 1) kv_mix_tile<T, 1>(rows, stride, n, p + i * ld, ld, hd, out + i * hd);
}

// The mix takes 32 elements per pass.
constexpr KvScoresFn kv_scores = kv_scores_by_type<32, kv_scores_typed<DType::F16>, kv_scores_typed<DType::F32>,
                                                   kv_scores_typed<DType::Q8_0>>;
constexpr KvMixFn kv_mix =
    kv_mix_by_type<32, kv_mix_typed<DType::F16>, kv_mix_typed<DType::F32>, kv_mix_typed<DType::Q8_0>>;

// The table both x86 builds share: the scalar rows, then every kernel of this file set by name.
KernelTable avx_table(const char* name) {
    KernelTable t = scalar_based(name);
    t[DType::F32].dot = dot_f32;
    t[DType::F16] = {dot_f16, to_f32_f16};
    t[DType::BF16] = {dot_bf16, to_f32_bf16};
    t[DType::Q8_0] = {dot_q8_0, to_f32_q8_0, dotq_q8_0, gemmq_q8_0, gemmq_signed_x8<BlockQ8_0x8>};
    t[DType::Q4_0] = {dot_q4_0, to_f32_q4_0, dotq_q4_0, gemmq_q4_0, gemmq_x8_codes<BlockQ4_0x8>};
    t[DType::Q4_1] = {dot_q4_1, to_f32_q4_1, dotq_q4_1, gemmq_q4_1, gemmq_x8_codes<BlockQ4_1x8>};
    t[DType::Q3_0] = {dot_q3_0, to_f32_q3_0, dotq_q3_0, gemmq_q3_0, gemmq_x8_codes<BlockQ3_0x8>};
    // Q5_0, Q5_1 and the K-quants, read as stored: integer products (float activations take the scalar loops)
    t[DType::Q5_0].dotq = dotq_q5_0;
    t[DType::Q5_0].gemmq = gemmq_q5<BlockQ5_0, dotq_q5_0>;
    t[DType::Q5_0].gemm_x8 = gemmq_x8_codes<BlockQ5_0x8>;
    t[DType::Q5_1].dotq = dotq_q5_1;
    t[DType::Q5_1].gemmq = gemmq_q5<BlockQ5_1, dotq_q5_1>;
    t[DType::Q5_1].gemm_x8 = gemmq_x8_codes<BlockQ5_1x8>;
    t[DType::Q4_K].dotq = dotq_k_nibbles<BlockQ4_K>;
    t[DType::Q4_K].gemmq = gemmq_k<BlockQ4_K, false, false, dotq_k_nibbles<BlockQ4_K>>;
    t[DType::Q4_K].gemm_x8 = gemmq_kx8<BlockQ4_Kx8>;
    t[DType::Q5_K].dotq = dotq_k_nibbles<BlockQ5_K>;
    t[DType::Q5_K].gemmq = gemmq_k<BlockQ5_K, false, false, dotq_k_nibbles<BlockQ5_K>>;
    t[DType::Q5_K].gemm_x8 = gemmq_kx8<BlockQ5_Kx8>;
    t[DType::Q6_K].dotq = dotq_q6_k;
    t[DType::Q6_K].gemmq = gemmq_k<BlockQ6_K, true, true, dotq_q6_k>;
    t[DType::Q6_K].gemm_x8 = gemmq_q6_kx8;
    // IQ4_NL: integer products (float activations, the reference-precision path, take the scalar loops)
    t[DType::IQ4_NL].dotq = dotq_iq4_nl;
    t[DType::IQ4_NL].gemmq = gemmq_iq4_nl;
#if defined(FRANKEN_VNNI)
    t[DType::IQ4_NL].gemm_x8 = gemmq_x8_codes<BlockIQ4_NLx8>;  // unsigned, as Q4_0 (see kIQ4NLShifted)
#else
    t[DType::IQ4_NL].gemm_x8 = gemmq_signed_x8<BlockIQ4_NLx8>;
#endif
    // Q3_NL and Q2_NL: Q4_0's integer products after a level lookup (float activations take the scalar loops)
    t[DType::Q3_NL].dotq = dotq_q3_nl;
    t[DType::Q3_NL].gemmq = gemmq_nibble_levels<BlockQ3_NL, codes_q3_nl, dotq_q3_nl>;
    t[DType::Q3_NL].gemm_x8 = gemmq_x8_codes<BlockQ3_NLx8>;
    t[DType::Q2_NL].dotq = dotq_q2_nl;
    t[DType::Q2_NL].gemmq = gemmq_nibble_levels<BlockQ2_NL, codes_q2_nl, dotq_q2_nl>;
    t[DType::Q2_NL].gemm_x8 = gemmq_x8_codes<BlockQ2_NLx8>;
    t.swiglu = swiglu;
    t.exp_sum = exp_sum;
    t.quantize_act = quantize_act;
    t.kv_scores = kv_scores;
    t.kv_mix = kv_mix;
    return t;
}

}  // namespace
}  // namespace franken
