// AArch64 Advanced SIMD kernels, built twice: plain (int8 products by widening multiplies) and with the
// dot-product extension (FRANKEN_DOTPROD: SDOT, four int8 products summed per lane in one instruction).
// Entries without an ARM-specific version come from the scalar table.
#include <arm_neon.h>

#include <cstring>

#include "../kernels.h"

namespace franken {
namespace {

// The float formats' dot products: one body, so that f16 and bf16 give the bits of dot_f32 over the decoded row
// (decoding them is exact): the model multiplies a token alone by the stored row and a prompt's tokens by the row
// decoded once, and a row's result must not depend on its batch.
template <class Elem, float32x4_t (*load4)(const Elem*), float (*to_float)(Elem)>
float dot_float(const void* row, const float* x, int n) {
    const Elem* w = static_cast<const Elem*>(row);
    float32x4_t a0 = vdupq_n_f32(0.f), a1 = vdupq_n_f32(0.f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 = vfmaq_f32(a0, load4(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, load4(w + i + 4), vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; ++i) s += to_float(w[i]) * x[i];
    return s;
}

inline float32x4_t load_f32x4(const float* p) { return vld1q_f32(p); }
inline float f32_of(float v) { return v; }
inline float32x4_t load_f16x4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
inline float32x4_t load_bf16x4(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
constexpr DotFn dot_f32 = dot_float<float, load_f32x4, f32_of>;
constexpr DotFn dot_f16 = dot_float<uint16_t, load_f16x4, fp16_to_f32>;
constexpr DotFn dot_bf16 = dot_float<uint16_t, load_bf16x4, bf16_to_f32>;

// ---- attention over the KV cache, as the AVX2 file's ----

template <DType T>
inline float32x4_t kv_load4(const uint8_t* row, int d) {
    if constexpr (T == DType::F32) {
        return vld1q_f32(reinterpret_cast<const float*>(row) + d);
    } else if constexpr (T == DType::F16) {
        return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(row) + d)));
    } else {  // Q8_0: four bytes of a block (read as one word: a wider load could pass the cache's end)
        const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(row)[d / kQK];
        int32_t w;
        std::memcpy(&w, b.qs + d % kQK, 4);
        const int16x8_t q16 = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w)));
        return vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(q16))), fp16_to_f32(b.d));
    }
}

// Scores of kNq queries against every key, the key's four-element pieces feeding all of them.
template <DType T, int kNq>
void kv_scores_tile(const uint8_t* rows, size_t stride, int n, const float* q, int hd, float* out, size_t ld) {
    for (int j = 0; j < n; ++j) {
        const uint8_t* row = rows + static_cast<size_t>(j) * stride;
        float32x4_t acc[kNq];
        for (int i = 0; i < kNq; ++i) acc[i] = vdupq_n_f32(0.f);
        for (int d = 0; d < hd; d += 4) {
            const float32x4_t k = kv_load4<T>(row, d);
            for (int i = 0; i < kNq; ++i) acc[i] = vfmaq_f32(acc[i], k, vld1q_f32(q + i * hd + d));
        }
        for (int i = 0; i < kNq; ++i) out[i * ld + j] = vaddvq_f32(acc[i]);
    }
}

// The weighted sum for kNq queries, 16 elements at a time, every row accumulated in registers.
template <DType T, int kNq>
void kv_mix_tile(const uint8_t* rows, size_t stride, int n, const float* p, size_t ld, int hd, float* out) {
    for (int d = 0; d < hd; d += 16) {
        float32x4_t acc[kNq][4];
        for (int i = 0; i < kNq; ++i)
            for (int c = 0; c < 4; ++c) acc[i][c] = vdupq_n_f32(0.f);
        for (int j = 0; j < n; ++j) {
            const uint8_t* row = rows + static_cast<size_t>(j) * stride;
            float32x4_t v[4];
            for (int c = 0; c < 4; ++c) v[c] = kv_load4<T>(row, d + 4 * c);
            for (int i = 0; i < kNq; ++i)
                for (int c = 0; c < 4; ++c) acc[i][c] = vfmaq_n_f32(acc[i][c], v[c], p[i * ld + j]);
        }
        for (int i = 0; i < kNq; ++i)
            for (int c = 0; c < 4; ++c) vst1q_f32(out + i * hd + d + 4 * c, acc[i][c]);
    }
}

template <DType T>
void kv_scores_typed(const uint8_t* rows, size_t stride, int n, const float* q, int n_q, int hd, float* out,
                     size_t ld) {
    int i = 0;
    for (; i + 4 <= n_q; i += 4) kv_scores_tile<T, 4>(rows, stride, n, q + i * hd, hd, out + i * ld, ld);
    for (; i < n_q; ++i) kv_scores_tile<T, 1>(rows, stride, n, q + i * hd, hd, out + i * ld, ld);
}

template <DType T>
void kv_mix_typed(const uint8_t* rows, size_t stride, int n, const float* p, size_t ld, int n_q, int hd,
                  float* out) {
    int i = 0;  // four queries: 16 accumulators and 4 values of the 32 registers
    for (; i + 4 <= n_q; i += 4) kv_mix_tile<T, 4>(rows, stride, n, p + i * ld, ld, hd, out + i * hd);
    for (; i < n_q; ++i) kv_mix_tile<T, 1>(rows, stride, n, p + i * ld, ld, hd, out + i * hd);
}

// The mix takes 16 elements per pass.
constexpr KvScoresFn kv_scores = kv_scores_by_type<16, kv_scores_typed<DType::F16>, kv_scores_typed<DType::F32>,
                                                   kv_scores_typed<DType::Q8_0>>;
constexpr KvMixFn kv_mix =
    kv_mix_by_type<16, kv_mix_typed<DType::F16>, kv_mix_typed<DType::F32>, kv_mix_typed<DType::Q8_0>>;

// e^x of 4 floats: the AVX2 file's exp8 (2^n * e^r, Cephes' expf polynomial), lane for lane.
inline float32x4_t exp4(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.f));
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.f)), p, vmulq_f32(r, r));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

void swiglu(float* gate, const float* up, int n) {
    const float32x4_t one = vdupq_n_f32(1.f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t g = vld1q_f32(gate + i);
        const float32x4_t silu = vdivq_f32(g, vaddq_f32(one, exp4(vnegq_f32(g))));
        vst1q_f32(gate + i, vmulq_f32(silu, vld1q_f32(up + i)));
    }
    scalar_kernels()->swiglu(gate + i, up + i, n - i);  // the tail: the scalar twin's formula
}

float exp_sum(float* x, int n, float max) {
    const float32x4_t m = vdupq_n_f32(max);
    float32x4_t acc = vdupq_n_f32(0.f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), m));
        vst1q_f32(x + i, e);
        acc = vaddq_f32(acc, e);
    }
    const float sum = vaddvq_f32(acc);
    return sum + scalar_kernels()->exp_sum(x + i, n - i, max);  // the tail: the scalar twin
}

void quantize_act(const float* x, BlockQ8A* out, int n) {
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        float32x4_t v[8];
        float32x4_t amax = vdupq_n_f32(0.f);
        for (int k = 0; k < 8; ++k) {
            v[k] = vld1q_f32(x + 4 * k);
            amax = vmaxq_f32(amax, vabsq_f32(v[k]));
        }
        const float d = vmaxvq_f32(amax) / 127.f, id = d > 0 ? 1.f / d : 0.f;
        int32x4_t sum = vdupq_n_s32(0);
        for (int k = 0; k < 8; k += 2) {
            const int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[k], id));  // round to nearest, ties to even
            const int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(v[k + 1], id));
            sum = vaddq_s32(sum, vaddq_s32(q0, q1));
            const int16x8_t q16 = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
            vst1_s8(out[i].qs + 4 * k, vqmovn_s16(q16));
        }
        out[i].d = d;
        out[i].s = d * static_cast<float>(vaddvq_s32(sum));
    }
}

// Sum of the products of 16 + 16 int8 pairs, accumulated into four int32 lanes.
inline int32x4_t dot_s8(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(FRANKEN_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    const int16x8_t hi = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    return vpadalq_s16(vpadalq_s16(acc, lo), hi);
#endif
}

// One block's integer sum: the 32 weights as two int8x16 halves (elements 0..15, 16..31) times activations.
inline float block_sum(int8x16_t w0, int8x16_t w1, const BlockQ8A& a) {
    int32x4_t acc = dot_s8(vdupq_n_s32(0), w0, vld1q_s8(a.qs));
    acc = dot_s8(acc, w1, vld1q_s8(a.qs + 16));
    return static_cast<float>(vaddvq_s32(acc));
}

float dotq_q8_0(const void* row, const BlockQ8A* a, int n) {
    const BlockQ8_0* b = static_cast<const BlockQ8_0*>(row);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i)
        s += fp16_to_f32(b[i].d) * a[i].d * block_sum(vld1q_s8(b[i].qs), vld1q_s8(b[i].qs + 16), a[i]);
    return s;
}

float dotq_q4_0(const void* row, const BlockQ8A* a, int n) {
    const BlockQ4_0* b = static_cast<const BlockQ4_0*>(row);
    const uint8x16_t mask = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i) {
        const uint8x16_t raw = vld1q_u8(b[i].qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, mask)), eight);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight);
        s += fp16_to_f32(b[i].d) * a[i].d * block_sum(lo, hi, a[i]);
    }
    return s;
}

// IQ4_NL: the nibbles (Q4_0's order) index its sixteen levels with one table lookup each half.
float dotq_iq4_nl(const void* row, const BlockQ8A* a, int n) {
    const BlockIQ4_NL* b = static_cast<const BlockIQ4_NL*>(row);
    const int8x16_t levels = vld1q_s8(kIQ4NLValues);
    const uint8x16_t mask = vdupq_n_u8(0x0f);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i) {
        const uint8x16_t raw = vld1q_u8(b[i].qs);
        const int8x16_t lo = vqtbl1q_s8(levels, vandq_u8(raw, mask)), hi = vqtbl1q_s8(levels, vshrq_n_u8(raw, 4));
        s += fp16_to_f32(b[i].d) * a[i].d * block_sum(lo, hi, a[i]);
    }
    return s;
}

float dotq_q4_1(const void* row, const BlockQ8A* a, int n) {
    const BlockQ4_1* b = static_cast<const BlockQ4_1*>(row);
    const uint8x16_t mask = vdupq_n_u8(0x0f);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i) {
        const uint8x16_t raw = vld1q_u8(b[i].qs);
        const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(raw, mask));  // 0..15 fits int8
        const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
        s += fp16_to_f32(b[i].d) * a[i].d * block_sum(lo, hi, a[i]) + fp16_to_f32(b[i].m) * a[i].s;
    }
    return s;
}

// Bits first..first+15 of the little-endian word at qh as bytes: `value` where set, else 0 (Q5_0/Q5_1's fifth bits).
inline uint8x16_t bits_to_bytes(const uint8_t* qh, int first, uint8_t value) {
    uint32_t word;
    std::memcpy(&word, qh, 4);
    static constexpr uint8_t kByteOf[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    static constexpr uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t spread = vqtbl1q_u8(vreinterpretq_u8_u32(vdupq_n_u32(word >> first)), vld1q_u8(kByteOf));
    return vandq_u8(vtstq_u8(spread, vld1q_u8(kBit)), vdupq_n_u8(value));
}

// Q5_0 (kMin false: codes less 16) and Q5_1 (codes unsigned, the minimum times the activation sum).
template <class Block, bool kMin>
float dotq_q5(const void* row, const BlockQ8A* a, int n) {
    const Block* b = static_cast<const Block*>(row);
    const uint8x16_t mask = vdupq_n_u8(0x0f);
    const int8x16_t offset = vdupq_n_s8(kMin ? 0 : 16);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i) {
        const uint8x16_t raw = vld1q_u8(b[i].qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(raw, mask), bits_to_bytes(b[i].qh, 0, 16))), offset);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(raw, 4), bits_to_bytes(b[i].qh, 16, 16))), offset);
        s += fp16_to_f32(b[i].d) * a[i].d * block_sum(lo, hi, a[i]);
        if constexpr (kMin) s += fp16_to_f32(b[i].m) * a[i].s;
    }
    return s;
}

// Q4_K and Q5_K (formats.h): pieces 2j and 2j + 1 are the low and high nibbles of qs[32j..32j+31] (Q5_K: the fifth
// bit of piece p is bit p of qh[l]); piece p of superblock i meets activation block 8i + p.
template <class Block>
float dotq_k_nibbles(const void* row, const BlockQ8A* a, int n) {
    const Block* b = static_cast<const Block*>(row);
    const uint8x16_t mask = vdupq_n_u8(0x0f);
    float s = 0.f;
    for (int i = 0; i < n / kQK_K; ++i, a += kPiecesK) {
        const float d = fp16_to_f32(b[i].d), dmin = fp16_to_f32(b[i].dmin);
        uint8_t sc[kPiecesK], mn[kPiecesK];
        k_scales_mins(b[i].scales, sc, mn);
        for (int j = 0; j < kPiecesK / 2; ++j) {
            const uint8x16_t r0 = vld1q_u8(b[i].qs + 32 * j), r1 = vld1q_u8(b[i].qs + 32 * j + 16);
            uint8x16_t lo0 = vandq_u8(r0, mask), lo1 = vandq_u8(r1, mask), hi0 = vshrq_n_u8(r0, 4), hi1 = vshrq_n_u8(r1, 4);
            if constexpr (std::is_same_v<Block, BlockQ5_K>) {
                const uint8x16_t h0 = vld1q_u8(b[i].qh), h1 = vld1q_u8(b[i].qh + 16), five = vdupq_n_u8(16);
                const uint8x16_t bl = vdupq_n_u8(static_cast<uint8_t>(1 << (2 * j)));
                const uint8x16_t bh = vdupq_n_u8(static_cast<uint8_t>(2 << (2 * j)));
                lo0 = vorrq_u8(lo0, vandq_u8(vtstq_u8(h0, bl), five)), lo1 = vorrq_u8(lo1, vandq_u8(vtstq_u8(h1, bl), five));
                hi0 = vorrq_u8(hi0, vandq_u8(vtstq_u8(h0, bh), five)), hi1 = vorrq_u8(hi1, vandq_u8(vtstq_u8(h1, bh), five));
            }
            const BlockQ8A &x0 = a[2 * j], &x1 = a[2 * j + 1];  // codes 0..31 fit int8
            s += d * (static_cast<float>(sc[2 * j]) * x0.d *
                          block_sum(vreinterpretq_s8_u8(lo0), vreinterpretq_s8_u8(lo1), x0) +
                      static_cast<float>(sc[2 * j + 1]) * x1.d *
                          block_sum(vreinterpretq_s8_u8(hi0), vreinterpretq_s8_u8(hi1), x1));
            s -= dmin * (static_cast<float>(mn[2 * j]) * x0.s + static_cast<float>(mn[2 * j + 1]) * x1.s);
        }
    }
    return s;
}

// Q6_K: piece k of half h takes ql[64h + 32(k % 2) + l]'s low (k < 2) or high nibble and bits 2k, 2k+1 of
// qh[32h + l]; codes less 32 are signed bytes; each 16-element half of a piece has its own scale.
float dotq_q6_k(const void* row, const BlockQ8A* a, int n) {
    const BlockQ6_K* b = static_cast<const BlockQ6_K*>(row);
    const uint8x16_t mask = vdupq_n_u8(0x0f), three = vdupq_n_u8(3);
    const int8x16_t k32 = vdupq_n_s8(32);
    float s = 0.f;
    for (int i = 0; i < n / kQK_K; ++i) {
        const float d = fp16_to_f32(b[i].d);
        for (int h = 0; h < 2; ++h)
            for (int k = 0; k < 4; ++k, ++a) {
                const uint8_t* ql = b[i].ql + 64 * h + 32 * (k % 2);
                const uint8_t* qh = b[i].qh + 32 * h;
                const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(-2 * k));
                int8x16_t w[2];
                for (int half = 0; half < 2; ++half) {
                    const uint8x16_t l = vld1q_u8(ql + 16 * half);
                    const uint8x16_t nib = k < 2 ? vandq_u8(l, mask) : vshrq_n_u8(l, 4);
                    const uint8x16_t top = vandq_u8(vshlq_u8(vld1q_u8(qh + 16 * half), shift), three);
                    w[half] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(nib, vshlq_n_u8(top, 4))), k32);
                }
                const int8_t* sc = b[i].scales + 8 * h + 2 * k;
                const float s0 = static_cast<float>(vaddvq_s32(dot_s8(vdupq_n_s32(0), w[0], vld1q_s8(a->qs))));
                const float s1 = static_cast<float>(vaddvq_s32(dot_s8(vdupq_n_s32(0), w[1], vld1q_s8(a->qs + 16))));
                s += d * a->d * (static_cast<float>(sc[0]) * s0 + static_cast<float>(sc[1]) * s1);
            }
    }
    return s;
}

// A codebook's levels in a sixteen-byte table for TBL (entries past the level count are zero, never indexed).
struct Levels16 {
    int8_t v[16];
};
template <size_t N>
constexpr Levels16 levels16(const int8_t (&values)[N]) {
    static_assert(N <= 16, "TBL reads sixteen bytes");
    Levels16 t{};
    for (size_t i = 0; i < N; ++i) t.v[i] = values[i];
    return t;
}
constexpr Levels16 kQ3NLLevels = levels16(kQ3NLValues), kQ2NLLevels = levels16(kQ2NLValues);

// The signed weights of 16 codes of a 3-bit (Q3_0, Q3_NL) or 2-bit (Q2_NL) block: Q3_0's codes minus 4, the
// codebook formats' levels looked up (TBL).
template <class Block>
inline int8x16_t code_values(uint8x16_t q) {
    if constexpr (std::is_same_v<Block, BlockQ3_0> || std::is_same_v<Block, BlockQ3_0x8>)
        return vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(4));
    else if constexpr (std::is_same_v<Block, BlockQ3_NL> || std::is_same_v<Block, BlockQ3_NLx8>)
        return vqtbl1q_s8(vld1q_s8(kQ3NLLevels.v), q);
    else
        return vqtbl1q_s8(vld1q_s8(kQ2NLLevels.v), q);
}
template <class Block> constexpr bool kHighPlane = !std::is_same_v<Block, BlockQ2_NL> && !std::is_same_v<Block, BlockQ2_NLx8>;

// Q3_0, Q3_NL, Q2_NL: the low planes are one 8-byte word; shifting it by 0/2 (elements 0-15) and 4/6 (16-31) per
// half and masking gives two bits per byte; the high bit of element j (3-bit formats) is bit j of qh, tested
// against a per-byte mask after copying qh's byte j/8 into byte j. code_values makes them signed weights for the
// same block sum.
template <class Block>
float dotq_planes(const void* row, const BlockQ8A* a, int n) {
    const Block* b = static_cast<const Block*>(row);
    const int8x16_t shift01 = {0, 0, 0, 0, 0, 0, 0, 0, -2, -2, -2, -2, -2, -2, -2, -2};
    const int8x16_t shift23 = {-4, -4, -4, -4, -4, -4, -4, -4, -6, -6, -6, -6, -6, -6, -6, -6};
    const uint8x16_t bit = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t idx01 = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
    const uint8x16_t idx23 = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
    const uint8x16_t three = vdupq_n_u8(3), four = vdupq_n_u8(4);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i) {
        const uint8x8_t lo = vld1_u8(b[i].qs);
        const uint8x16_t lo2 = vcombine_u8(lo, lo);
        uint8x16_t q0 = vandq_u8(vshlq_u8(lo2, shift01), three), q1 = vandq_u8(vshlq_u8(lo2, shift23), three);
        if constexpr (kHighPlane<Block>) {
            uint32_t h;
            std::memcpy(&h, b[i].qh, 4);
            const uint8x16_t hv = vreinterpretq_u8_u32(vdupq_n_u32(h));
            q0 = vorrq_u8(q0, vandq_u8(vtstq_u8(vqtbl1q_u8(hv, idx01), bit), four));
            q1 = vorrq_u8(q1, vandq_u8(vtstq_u8(vqtbl1q_u8(hv, idx23), bit), four));
        }
        s += fp16_to_f32(b[i].d) * a[i].d * block_sum(code_values<Block>(q0), code_values<Block>(q1), a[i]);
    }
    return s;
}

#if defined(FRANKEN_DOTPROD)
// ---- interleaved formats (BlockQ4_0x8, BlockQ8_0x8, BlockQ4_1x8, BlockQ3_0x8), with SDOT only: SDOT sums four
// products per lane, so a 16-byte load of four elements of rows 0-3 (or 4-7) times four activation bytes copied to
// every lane leaves row r's partial sum in lane r. (Plain NEON has no per-lane four-product sum: it keeps rows as stored.) ----

// Four activation bytes (elements i..i+3 of a block) in every lane.
inline int8x16_t bcast4(const BlockQ8A& a, int i) {
    int32_t v;
    std::memcpy(&v, a.qs + i, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

inline void load_scales(const uint16_t* d, float32x4_t& d0, float32x4_t& d1) {
    d0 = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(d)));
    d1 = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(d + 4)));
}

// Eight rows times kTile activation rows; `block_sums(b, a, s0, s1)` adds block b's integer sums (rows 0-3, 4-7).
// `mins`, when given, names the rows' minimums (Q4_1), added times the activation block sums.
using HalvesOf = const uint16_t* (*)(const void*, int);
template <int kTile, class BlockSums>
inline void x8_tile(HalvesOf scales, HalvesOf mins, const void* w, int nb, const BlockQ8A* act, float* out,
                    size_t ldo, BlockSums block_sums) {
    float32x4_t acc[kTile][2];
    for (int k = 0; k < kTile; ++k) acc[k][0] = acc[k][1] = vdupq_n_f32(0.f);
    for (int b = 0; b < nb; ++b) {
        int32x4_t s[kTile][2];
        for (int k = 0; k < kTile; ++k) s[k][0] = s[k][1] = vdupq_n_s32(0);
        block_sums(b, act, nb, s);
        float32x4_t d0, d1;
        load_scales(scales(w, b), d0, d1);
        for (int k = 0; k < kTile; ++k) {
            const float dx = act[static_cast<size_t>(k) * nb + b].d;
            acc[k][0] = vfmaq_f32(acc[k][0], vmulq_n_f32(d0, dx), vcvtq_f32_s32(s[k][0]));
            acc[k][1] = vfmaq_f32(acc[k][1], vmulq_n_f32(d1, dx), vcvtq_f32_s32(s[k][1]));
        }
        if (mins) {
            float32x4_t m0, m1;
            load_scales(mins(w, b), m0, m1);
            for (int k = 0; k < kTile; ++k) {
                const float sx = act[static_cast<size_t>(k) * nb + b].s;
                acc[k][0] = vfmaq_n_f32(acc[k][0], m0, sx);
                acc[k][1] = vfmaq_n_f32(acc[k][1], m1, sx);
            }
        }
    }
    for (int k = 0; k < kTile; ++k) {
        vst1q_f32(out + k * ldo, acc[k][0]);
        vst1q_f32(out + k * ldo + 4, acc[k][1]);
    }
}

template <int kTile>
void q4_0x8_tile(const BlockQ4_0x8* w, int nb, const BlockQ8A* act, float* out, size_t ldo) {
    auto sums = [w](int b, const BlockQ8A* a, int nbk, int32x4_t (*s)[2]) {
        const uint8x16_t m4 = vdupq_n_u8(0x0f);
        const int8x16_t eight = vdupq_n_s8(8);
        for (int c = 0; c < 4; ++c)
            for (int h = 0; h < 2; ++h) {
                const uint8x16_t v = vld1q_u8(w[b].qs + 32 * c + 16 * h);
                const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, m4)), eight);
                const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
                for (int k = 0; k < kTile; ++k) {
                    const BlockQ8A& x = a[static_cast<size_t>(k) * nbk + b];
                    s[k][h] = vdotq_s32(vdotq_s32(s[k][h], lo, bcast4(x, 8 * c)), hi, bcast4(x, 8 * c + 4));
                }
            }
    };
    x8_tile<kTile>([](const void* p, int b) { return static_cast<const BlockQ4_0x8*>(p)[b].d; }, nullptr, w, nb, act,
                   out, ldo, sums);
}

// IQ4_NL: the same nibbles, each half looked up in the level table (TBL) instead of offset by 8.
template <int kTile>
void iq4_nlx8_tile(const BlockIQ4_NLx8* w, int nb, const BlockQ8A* act, float* out, size_t ldo) {
    auto sums = [w](int b, const BlockQ8A* a, int nbk, int32x4_t (*s)[2]) {
        const uint8x16_t m4 = vdupq_n_u8(0x0f);
        const int8x16_t levels = vld1q_s8(kIQ4NLValues);
        for (int c = 0; c < 4; ++c)
            for (int h = 0; h < 2; ++h) {
                const uint8x16_t v = vld1q_u8(w[b].qs + 32 * c + 16 * h);
                const int8x16_t lo = vqtbl1q_s8(levels, vandq_u8(v, m4)), hi = vqtbl1q_s8(levels, vshrq_n_u8(v, 4));
                for (int k = 0; k < kTile; ++k) {
                    const BlockQ8A& x = a[static_cast<size_t>(k) * nbk + b];
                    s[k][h] = vdotq_s32(vdotq_s32(s[k][h], lo, bcast4(x, 8 * c)), hi, bcast4(x, 8 * c + 4));
                }
            }
    };
    x8_tile<kTile>([](const void* p, int b) { return static_cast<const BlockIQ4_NLx8*>(p)[b].d; }, nullptr, w, nb,
                   act, out, ldo, sums);
}

// Q4_1: the same nibbles, unsigned (0..15 fit SDOT's signed bytes), and the minimums added apart.
template <int kTile>
void q4_1x8_tile(const BlockQ4_1x8* w, int nb, const BlockQ8A* act, float* out, size_t ldo) {
    auto sums = [w](int b, const BlockQ8A* a, int nbk, int32x4_t (*s)[2]) {
        const uint8x16_t m4 = vdupq_n_u8(0x0f);
        for (int c = 0; c < 4; ++c)
            for (int h = 0; h < 2; ++h) {
                const uint8x16_t v = vld1q_u8(w[b].qs + 32 * c + 16 * h);
                const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, m4));
                const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
                for (int k = 0; k < kTile; ++k) {
                    const BlockQ8A& x = a[static_cast<size_t>(k) * nbk + b];
                    s[k][h] = vdotq_s32(vdotq_s32(s[k][h], lo, bcast4(x, 8 * c)), hi, bcast4(x, 8 * c + 4));
                }
            }
    };
    x8_tile<kTile>([](const void* p, int b) { return static_cast<const BlockQ4_1x8*>(p)[b].d; },
                   [](const void* p, int b) { return static_cast<const BlockQ4_1x8*>(p)[b].m; }, w, nb, act, out,
                   ldo, sums);
}

// Q3_0, Q3_NL, Q2_NL: chunk c's two low bits from the low plane shifted right by 2 (c % 4), a 3-bit format's third
// from bit c of the high plane moved to bit 2 (NEON's per-byte shifts carry nothing across bytes), then the
// codes' signed values (code_values).
template <class Block, int kTile>
void planes_x8_tile(const Block* w, int nb, const BlockQ8A* act, float* out, size_t ldo) {
    auto sums = [w](int b, const BlockQ8A* a, int nbk, int32x4_t (*s)[2]) {
        const uint8x16_t m2 = vdupq_n_u8(3), b2 = vdupq_n_u8(4);
        for (int h = 0; h < 2; ++h) {
            uint8x16_t hi = vdupq_n_u8(0);
            if constexpr (kHighPlane<Block>) hi = vld1q_u8(w[b].qh + 16 * h);
            for (int c = 0; c < 8; ++c) {
                const uint8x16_t lo = vld1q_u8(w[b].ql + 32 * (c / 4) + 16 * h);
                uint8x16_t code = vandq_u8(vshlq_u8(lo, vdupq_n_s8(static_cast<int8_t>(-2 * (c % 4)))), m2);
                if constexpr (kHighPlane<Block>)
                    code = vorrq_u8(code, vandq_u8(vshlq_u8(hi, vdupq_n_s8(static_cast<int8_t>(2 - c))), b2));
                const int8x16_t q = code_values<Block>(code);
                for (int k = 0; k < kTile; ++k)
                    s[k][h] = vdotq_s32(s[k][h], q, bcast4(a[static_cast<size_t>(k) * nbk + b], 4 * c));
            }
        }
    };
    x8_tile<kTile>([](const void* p, int b) { return static_cast<const Block*>(p)[b].d; }, nullptr, w, nb, act,
                   out, ldo, sums);
}

template <int kTile>
void q8_0x8_tile(const BlockQ8_0x8* w, int nb, const BlockQ8A* act, float* out, size_t ldo) {
    auto sums = [w](int b, const BlockQ8A* a, int nbk, int32x4_t (*s)[2]) {
        for (int c = 0; c < 8; ++c)
            for (int h = 0; h < 2; ++h) {
                const int8x16_t v = vld1q_s8(w[b].qs + 32 * c + 16 * h);
                for (int k = 0; k < kTile; ++k)
                    s[k][h] = vdotq_s32(s[k][h], v, bcast4(a[static_cast<size_t>(k) * nbk + b], 4 * c));
            }
    };
    x8_tile<kTile>([](const void* p, int b) { return static_cast<const BlockQ8_0x8*>(p)[b].d; }, nullptr, w, nb, act,
                   out, ldo, sums);
}

constexpr GemmX8Fn gemmq_q4_0x8 = groups_by_tiles<BlockQ4_0x8, q4_0x8_tile<4>, q4_0x8_tile<1>>;
constexpr GemmX8Fn gemmq_q8_0x8 = groups_by_tiles<BlockQ8_0x8, q8_0x8_tile<4>, q8_0x8_tile<1>>;
constexpr GemmX8Fn gemmq_q4_1x8 = groups_by_tiles<BlockQ4_1x8, q4_1x8_tile<4>, q4_1x8_tile<1>>;
template <class Block>
constexpr GemmX8Fn gemmq_planes_x8 = groups_by_tiles<Block, planes_x8_tile<Block, 4>, planes_x8_tile<Block, 1>>;
constexpr GemmX8Fn gemmq_iq4_nlx8 = groups_by_tiles<BlockIQ4_NLx8, iq4_nlx8_tile<4>, iq4_nlx8_tile<1>>;
#endif

KernelTable make_table() {
#if defined(FRANKEN_DOTPROD)
    KernelTable t = scalar_based("neon_dotprod");
#else
    KernelTable t = scalar_based("neon");
#endif
    t[DType::F32].dot = dot_f32;
    t[DType::F16].dot = dot_f16;
    t[DType::BF16].dot = dot_bf16;
    t.swiglu = swiglu;
    t.exp_sum = exp_sum;
    t.kv_scores = kv_scores;
    t.kv_mix = kv_mix;
    t.quantize_act = quantize_act;
    use_row_dot<DType::Q8_0, dotq_q8_0>(t);
    use_row_dot<DType::Q4_0, dotq_q4_0>(t);
    use_row_dot<DType::Q4_1, dotq_q4_1>(t);
    use_row_dot<DType::Q3_0, dotq_planes<BlockQ3_0>>(t);
    use_row_dot<DType::IQ4_NL, dotq_iq4_nl>(t);
    use_row_dot<DType::Q3_NL, dotq_planes<BlockQ3_NL>>(t);
    use_row_dot<DType::Q2_NL, dotq_planes<BlockQ2_NL>>(t);
    use_row_dot<DType::Q5_0, dotq_q5<BlockQ5_0, false>>(t);
    use_row_dot<DType::Q5_1, dotq_q5<BlockQ5_1, true>>(t);
    use_row_dot<DType::Q4_K, dotq_k_nibbles<BlockQ4_K>>(t);
    use_row_dot<DType::Q5_K, dotq_k_nibbles<BlockQ5_K>>(t);
    use_row_dot<DType::Q6_K, dotq_q6_k>(t);
#if defined(FRANKEN_DOTPROD)  // plain NEON keeps rows as stored (see above)
    t[DType::Q4_0].gemm_x8 = gemmq_q4_0x8;
    t[DType::Q8_0].gemm_x8 = gemmq_q8_0x8;
    t[DType::Q4_1].gemm_x8 = gemmq_q4_1x8;
    t[DType::Q3_0].gemm_x8 = gemmq_planes_x8<BlockQ3_0x8>;
    t[DType::IQ4_NL].gemm_x8 = gemmq_iq4_nlx8;
    t[DType::Q3_NL].gemm_x8 = gemmq_planes_x8<BlockQ3_NLx8>;
    t[DType::Q2_NL].gemm_x8 = gemmq_planes_x8<BlockQ2_NLx8>;
#endif
    return t;
}

}  // namespace

#if defined(FRANKEN_DOTPROD)
const KernelTable* neon_dotprod_kernels() {
#else
const KernelTable* neon_kernels() {
#endif
    static const KernelTable table = make_table();
    return &table;
}

}  // namespace franken
