// AVX2 + FMA + F16C kernels. This file alone is compiled with those flags; dispatch.cpp only calls into it
// after checking the CPU has them, so one build runs on any x86-64.
#include <immintrin.h>

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

float dot_f32(const void* row, const float* x, int n) {
    const float* w = static_cast<const float*>(row);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; ++i) s += w[i] * x[i];
    return s;
}

float dot_f16(const void* row, const float* x, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    __m256 a0 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), a0);
    }
    float s = hsum(a0);
    for (; i < n; ++i) s += fp16_to_f32(w[i]) * x[i];
    return s;
}

inline __m256 load_bf16x8(const uint16_t* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

float dot_bf16(const void* row, const float* x, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    __m256 a0 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_bf16x8(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(a0);
    for (; i < n; ++i) s += bf16_to_f32(w[i]) * x[i];
    return s;
}

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

void axpy(float a, const float* x, float* y, int n) {
    const __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
}

const KernelTable kTable = {
    "avx2",
    dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q4_0, dot_q4_1,
    to_f32_f16, to_f32_bf16, to_f32_q8_0, to_f32_q4_0, to_f32_q4_1,
    axpy,
};

}  // namespace

const KernelTable* avx2_kernels() { return &kTable; }

}  // namespace franken
