// RISC-V Vector (RVV 1.0) kernels: the hot loops of decode and prompts. Compiled with -march=rv64gcv where the
// compiler has the RVV intrinsics (clang 16 and newer; GCC 12 lacks riscv_vector.h), chosen at run time when the
// kernel reports the V extension. The scalar table fills every entry this file does not.
//
// RVV has no four-byte dot product per lane (no VPDPBUSD/SDOT), so the integer kernels keep rows as stored: a
// block's 32 weight bytes times 32 activation bytes by a widening multiply (int8 x int8 -> int16), summed by one
// widening reduction (int16 -> int32). The code needs VLEN >= 128 (every V implementation): 32 bytes fit an
// LMUL=2 byte register.
#include "../kernels.h"

#if defined(__riscv_vector)
#include <riscv_vector.h>

#include <algorithm>
#include <cmath>

namespace franken {
namespace {

// The float formats' dot products: one body, so that f16 and bf16 give the bits of dot_f32 over the decoded row
// (decoding them is exact): the model multiplies a token alone by the stored row and a prompt's tokens by the row
// decoded once, and a row's result must not depend on its batch. Strips are at most kStrip elements, so f16 and
// bf16 (no conversion instructions without Zvfhmin) decode a strip into a small buffer first.
constexpr size_t kStrip = 64;
inline const float* strip_f32(const float* w, float*, size_t) { return w; }
inline const float* strip_f16(const uint16_t* w, float* buf, size_t vl) {
    for (size_t j = 0; j < vl; ++j) buf[j] = fp16_to_f32(w[j]);
    return buf;
}
inline const float* strip_bf16(const uint16_t* w, float* buf, size_t vl) {
    for (size_t j = 0; j < vl; ++j) buf[j] = bf16_to_f32(w[j]);
    return buf;
}
template <class Elem, const float* (*strip)(const Elem*, float*, size_t)>
float dot_float(const void* row, const float* x, int n) {
    const Elem* w = static_cast<const Elem*>(row);
    const size_t vlmax = __riscv_vsetvlmax_e32m4();
    vfloat32m4_t acc = __riscv_vfmv_v_f_f32m4(0.f, vlmax);
    float buf[kStrip];
    for (int i = 0; i < n;) {
        const size_t vl = __riscv_vsetvl_e32m4(std::min(static_cast<size_t>(n - i), kStrip));
        const float* wf = strip(w + i, buf, vl);
        // tail-undisturbed: a short last strip leaves the other lanes' sums in place
        acc = __riscv_vfmacc_vv_f32m4_tu(acc, __riscv_vle32_v_f32m4(wf, vl), __riscv_vle32_v_f32m4(x + i, vl), vl);
        i += static_cast<int>(vl);
    }
    return __riscv_vfmv_f_s_f32m1_f32(__riscv_vfredusum_vs_f32m4_f32m1(acc, __riscv_vfmv_v_f_f32m1(0.f, 1), vlmax));
}
constexpr DotFn dot_f32 = dot_float<float, strip_f32>;
constexpr DotFn dot_f16 = dot_float<uint16_t, strip_f16>;
constexpr DotFn dot_bf16 = dot_float<uint16_t, strip_bf16>;

// Per block: scale by 127 / max|x|, round to nearest even (the default rounding mode, as the scalar twin's
// nearbyint), narrow to bytes; the byte sum for the Q4_1 minimum and the offset formats.
void quantize_act(const float* x, BlockQ8A* out, int n) {
    const size_t vl = __riscv_vsetvl_e32m8(kQK);  // 32 floats: LMUL=8 at VLEN=128
    const vfloat32m1_t zero = __riscv_vfmv_v_f_f32m1(0.f, 1);
    const vint32m1_t izero = __riscv_vmv_v_x_i32m1(0, 1);
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        const vfloat32m8_t v = __riscv_vle32_v_f32m8(x, vl);
        const float amax = __riscv_vfmv_f_s_f32m1_f32(__riscv_vfredmax_vs_f32m8_f32m1(__riscv_vfabs_v_f32m8(v, vl),
                                                                                      zero, vl));
        const float d = amax / 127.f, id = d > 0 ? 1.f / d : 0.f;
        const vint16m4_t q16 = __riscv_vfncvt_x_f_w_i16m4(__riscv_vfmul_vf_f32m8(v, id, vl), vl);
        __riscv_vse8_v_i8m2(out[i].qs, __riscv_vncvt_x_x_w_i8m2(q16, vl), vl);
        const int sum = __riscv_vmv_x_s_i32m1_i32(__riscv_vwredsum_vs_i16m4_i32m1(q16, izero, vl));
        out[i].d = d;
        out[i].s = d * static_cast<float>(sum);
    }
}

// sum over a block of w[j] * a[j], 32 signed bytes each.
inline int block_dot(vint8m2_t w, const BlockQ8A& a) {
    const size_t vl = kQK;
    const vint16m4_t p = __riscv_vwmul_vv_i16m4(w, __riscv_vle8_v_i8m2(a.qs, vl), vl);
    return __riscv_vmv_x_s_i32m1_i32(__riscv_vwredsum_vs_i16m4_i32m1(p, __riscv_vmv_v_x_i32m1(0, 1), vl));
}

// A Q4 block's codes minus `offset` times its activations: the low nibbles are elements 0-15, the high ones
// 16-31, so two 16-lane products accumulate into one (each sum at most 2 * 15 * 128 in magnitude: int16 holds it).
inline int nibble_dot(const uint8_t* qs, int8_t offset, const BlockQ8A& a) {
    const size_t vl = kQK / 2;
    const vuint8m1_t v = __riscv_vle8_v_u8m1(qs, vl);
    const vint8m1_t lo = __riscv_vsub_vx_i8m1(__riscv_vreinterpret_v_u8m1_i8m1(__riscv_vand_vx_u8m1(v, 0x0f, vl)),
                                              offset, vl);
    const vint8m1_t hi = __riscv_vsub_vx_i8m1(__riscv_vreinterpret_v_u8m1_i8m1(__riscv_vsrl_vx_u8m1(v, 4, vl)),
                                              offset, vl);
    vint16m2_t p = __riscv_vwmul_vv_i16m2(lo, __riscv_vle8_v_i8m1(a.qs, vl), vl);
    p = __riscv_vwmacc_vv_i16m2(p, hi, __riscv_vle8_v_i8m1(a.qs + vl, vl), vl);
    return __riscv_vmv_x_s_i32m1_i32(__riscv_vwredsum_vs_i16m2_i32m1(p, __riscv_vmv_v_x_i32m1(0, 1), vl));
}

// IQ4_NL: the nibbles (elements 0-15 low, 16-31 high) gather their levels from the sixteen-entry table (VRGATHER);
// two 16-lane products of at most 127 * 128 each fit int16 when added.
float dotq_iq4_nl(const void* row, const BlockQ8A* a, int n) {
    const BlockIQ4_NL* b = static_cast<const BlockIQ4_NL*>(row);
    const float* f16 = fp16_table();
    const size_t vl = kQK / 2;
    const vint8m1_t levels = __riscv_vle8_v_i8m1(kIQ4NLValues, vl);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i) {
        const vuint8m1_t v = __riscv_vle8_v_u8m1(b[i].qs, vl);
        const vint8m1_t lo = __riscv_vrgather_vv_i8m1(levels, __riscv_vand_vx_u8m1(v, 0x0f, vl), vl);
        const vint8m1_t hi = __riscv_vrgather_vv_i8m1(levels, __riscv_vsrl_vx_u8m1(v, 4, vl), vl);
        vint16m2_t p = __riscv_vwmul_vv_i16m2(lo, __riscv_vle8_v_i8m1(a[i].qs, vl), vl);
        p = __riscv_vwmacc_vv_i16m2(p, hi, __riscv_vle8_v_i8m1(a[i].qs + vl, vl), vl);
        const int sum = __riscv_vmv_x_s_i32m1_i32(__riscv_vwredsum_vs_i16m2_i32m1(p, __riscv_vmv_v_x_i32m1(0, 1), vl));
        s += f16[b[i].d] * a[i].d * static_cast<float>(sum);
    }
    return s;
}

float dotq_q8_0(const void* row, const BlockQ8A* a, int n) {
    const BlockQ8_0* b = static_cast<const BlockQ8_0*>(row);
    const float* f16 = fp16_table();
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i)
        s += f16[b[i].d] * a[i].d * static_cast<float>(block_dot(__riscv_vle8_v_i8m2(b[i].qs, kQK), a[i]));
    return s;
}

float dotq_q4_0(const void* row, const BlockQ8A* a, int n) {
    const BlockQ4_0* b = static_cast<const BlockQ4_0*>(row);
    const float* f16 = fp16_table();
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i)
        s += f16[b[i].d] * a[i].d * static_cast<float>(nibble_dot(b[i].qs, 8, a[i]));
    return s;
}

float dotq_q4_1(const void* row, const BlockQ8A* a, int n) {
    const BlockQ4_1* b = static_cast<const BlockQ4_1*>(row);
    const float* f16 = fp16_table();
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i)  // d dx sum(q qx) + m sum(x)
        s += f16[b[i].d] * a[i].d * static_cast<float>(nibble_dot(b[i].qs, 0, a[i])) + f16[b[i].m] * a[i].s;
    return s;
}

// Q3_0's codes by gathers: element j's low bits are byte j % 8 of qs shifted by 2 (j / 8), its high bit is byte
// j / 8 of qh shifted by j % 8.
alignas(32) constexpr uint8_t kLowByte[kQK] = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7,
                                               0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7};
alignas(32) constexpr uint8_t kLowShift[kQK] = {0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2,
                                                4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6};
alignas(32) constexpr uint8_t kHighByte[kQK] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};

// Q3_0, Q3_NL and Q2_NL: codes from the planes (Q2_NL has no high plane), then Q3_0's offset or the codebook's
// levels gathered (VRGATHER) as signed weights.
template <class Block>
float dotq_planes(const void* row, const BlockQ8A* a, int n) {
    constexpr bool kHigh = !std::is_same_v<Block, BlockQ2_NL>;
    const Block* b = static_cast<const Block*>(row);
    const float* f16 = fp16_table();
    const size_t vl = kQK;
    const vuint8m2_t low_byte = __riscv_vle8_v_u8m2(kLowByte, vl), low_shift = __riscv_vle8_v_u8m2(kLowShift, vl);
    const vuint8m2_t high_byte = __riscv_vle8_v_u8m2(kHighByte, vl);
    const vuint8m2_t high_shift = low_byte;  // j % 8
    vint8m2_t levels = __riscv_vmv_v_x_i8m2(0, vl);
    if constexpr (std::is_same_v<Block, BlockQ3_NL>) levels = __riscv_vle8_v_i8m2(kQ3NLValues, 8);
    if constexpr (std::is_same_v<Block, BlockQ2_NL>) levels = __riscv_vle8_v_i8m2(kQ2NLValues, 4);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i) {
        const vuint8m2_t qs = __riscv_vle8_v_u8m2(b[i].qs, 8);
        vuint8m2_t q = __riscv_vand_vx_u8m2(
            __riscv_vsrl_vv_u8m2(__riscv_vrgather_vv_u8m2(qs, low_byte, vl), low_shift, vl), 3, vl);
        if constexpr (kHigh) {
            const vuint8m2_t qh = __riscv_vle8_v_u8m2(b[i].qh, 4);
            const vuint8m2_t hi = __riscv_vand_vx_u8m2(
                __riscv_vsrl_vv_u8m2(__riscv_vrgather_vv_u8m2(qh, high_byte, vl), high_shift, vl), 1, vl);
            q = __riscv_vor_vv_u8m2(q, __riscv_vsll_vx_u8m2(hi, 2, vl), vl);
        }
        vint8m2_t w;
        if constexpr (std::is_same_v<Block, BlockQ3_0>)
            w = __riscv_vsub_vx_i8m2(__riscv_vreinterpret_v_u8m2_i8m2(q), 4, vl);
        else
            w = __riscv_vrgather_vv_i8m2(levels, q, vl);
        s += f16[b[i].d] * a[i].d * static_cast<float>(block_dot(w, a[i]));
    }
    return s;
}

KernelTable make_table() {
    // No per-lane four-byte dot product: rows stay as stored (scalar_based drops the interleaved twins).
    KernelTable t = scalar_based("rvv");
    t[DType::F32].dot = dot_f32;
    t[DType::F16].dot = dot_f16;
    t[DType::BF16].dot = dot_bf16;
    t.quantize_act = quantize_act;
    use_row_dot<DType::Q8_0, dotq_q8_0>(t);
    use_row_dot<DType::Q4_0, dotq_q4_0>(t);
    use_row_dot<DType::Q4_1, dotq_q4_1>(t);
    use_row_dot<DType::Q3_0, dotq_planes<BlockQ3_0>>(t);
    use_row_dot<DType::IQ4_NL, dotq_iq4_nl>(t);
    use_row_dot<DType::Q3_NL, dotq_planes<BlockQ3_NL>>(t);
    use_row_dot<DType::Q2_NL, dotq_planes<BlockQ2_NL>>(t);
    return t;
}

}  // namespace

const KernelTable* rvv_kernels() {
    static const KernelTable table = make_table();
    return &table;
}

}  // namespace franken

#else

namespace franken {
const KernelTable* rvv_kernels() { return nullptr; }  // built without the V extension
}  // namespace franken

#endif
