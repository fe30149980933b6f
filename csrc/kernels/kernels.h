// The kernel dispatch table: every hot loop of the model goes through one of these function pointers.
// Each architecture file (generic/, x86/, arm/, riscv/) fills a table; dispatch.cpp picks one at start-up from the
// CPU's features, or the one named by FRANKEN_KERNELS (scalar, avx2, avx512_vnni, neon, neon_dotprod, rvv) for
// tests and benchmarks.
#pragma once
#include <string>
#include <vector>

#include "formats.h"

namespace franken {

// dot(row, x, n): one stored row of n elements (in its storage format) times a float vector.
using DotFn = float (*)(const void* row, const float* x, int n);
// to_f32(row, out, n): decode n elements of a stored row.
using ToF32Fn = void (*)(const void* row, float* out, int n);
// dot_q(row, act, n): one quantized row times activations quantized to 8-bit blocks (integer products).
using DotQFn = float (*)(const void* row, const BlockQ8A* act, int n);
// gemm_q(rows, n_rows, row_stride, act, n_act, n, out, ldo): out[t * ldo + i] = dot_q(row i, act row t) for
// n_rows weight rows and n_act activation rows of n elements: the prompt's matrix-matrix product, which decodes
// each weight row once for all activation rows.
using GemmQFn = void (*)(const uint8_t* rows, int n_rows, size_t row_stride, const BlockQ8A* act, int n_act, int n,
                         float* out, size_t ldo);

// gemm_x8(groups, n_groups, nb, act, n_act, out, ldo): n_groups consecutive interleaved groups of eight rows
// (BlockQ4_0x8, BlockQ8_0x8, BlockQ4_1x8 or BlockQ3_0x8, nb blocks each, group g at groups + g * nb blocks) times n_act activation rows:
// row r of group g goes to out[t * ldo + 8 * g + r]. Serves decode (n_act = 1) and prompts alike; a kernel may
// take two groups at once (AVX512: one 512-bit register holds sixteen rows' lanes).
using GemmX8Fn = void (*)(const void* groups, int n_groups, int nb, const BlockQ8A* act, int n_act, float* out,
                          size_t ldo);

// Attention over one KV head's slice of the cache: n rows (keys or values) of hd elements in type t (F32, F16 or
// Q8_0), row j at rows + j * stride, shared by n_q queries (GQA: the query heads of that KV head), so each row is
// read and converted once for all of them.
// kv_scores: out[i * ld + j] = dot(key j, q + i * hd).
// kv_mix:    out[i * hd + d] = sum_j p[i * ld + j] * value_j[d] (out is overwritten).
using KvScoresFn = void (*)(DType t, const uint8_t* rows, size_t stride, int n, const float* q, int n_q, int hd,
                            float* out, size_t ld);
using KvMixFn = void (*)(DType t, const uint8_t* rows, size_t stride, int n, const float* p, size_t ld, int n_q,
                         int hd, float* out);

struct KernelTable {
    const char* name;
    DotFn dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q4_0, dot_q4_1, dot_q3_0;
    ToF32Fn to_f32_f16, to_f32_bf16, to_f32_q8_0, to_f32_q4_0, to_f32_q4_1, to_f32_q3_0;
    // The element-wise exponentials of a block, vectorized (libm's expf, one value at a time, cost as much as the
    // block's norms and residuals together): gate[i] = silu(gate[i]) * up[i] (SwiGLU), and softmax's numerators
    // x[i] = exp(x[i] - max), returning their sum.
    void (*swiglu)(float* gate, const float* up, int n);
    float (*exp_sum)(float* x, int n, float max);
    // Activations to 8-bit blocks (n a multiple of 32), and quantized weight rows times them.
    void (*quantize_act)(const float* x, BlockQ8A* out, int n);
    DotQFn dotq_q8_0, dotq_q4_0, dotq_q4_1, dotq_q3_0;
    GemmQFn gemmq_q8_0, gemmq_q4_0, gemmq_q4_1, gemmq_q3_0;
    // Interleaved products (BlockQ4_0x8, BlockQ8_0x8, BlockQ4_1x8, BlockQ3_0x8); null in a table without them,
    // and then the model keeps that format's rows as stored.
    GemmX8Fn gemmq_q4_0x8, gemmq_q8_0x8, gemmq_q4_1x8, gemmq_q3_0x8;
    // Attention's two passes over the cache (scores, then the weighted sum of values).
    KvScoresFn kv_scores;
    KvMixFn kv_mix;

    DotFn dot(DType t) const;
    DotQFn dotq(DType t) const;  // null for float types
    GemmQFn gemmq(DType t) const;
    GemmX8Fn gemmq_x8(DType t) const;  // null unless a quantized type with an interleaved kernel
    // Whether the model repacks type t's matrices for this table: it has an interleaved kernel that is faster than
    // its stored-row loops. The scalar table's interleaved kernels are reference twins (element by element, 1.1-4.5x
    // slower than its stored-row loops), so a CPU on the scalar table keeps rows as stored.
    bool runs_interleaved(DType t) const;
    void to_f32(DType t, const void* row, float* out, int n) const;
};

// The matrix-matrix product as a loop over dot products: the scalar definition, and the fallback of any table.
template <DotQFn dot>
void gemm_by_dots(const uint8_t* rows, int n_rows, size_t row_stride, const BlockQ8A* act, int n_act, int n,
                  float* out, size_t ldo) {
    for (int i = 0; i < n_rows; ++i)
        for (int t = 0; t < n_act; ++t) out[t * ldo + i] = dot(rows + i * row_stride, act + static_cast<size_t>(t) * (n / kQK), n);
}

// A gemm_x8 from a tile kernel that multiplies one group with kTile activation rows: consecutive groups, each in
// tiles of four tokens and then one at a time (the loop every architecture's interleaved kernels share).
template <class Block, void (*tile4)(const Block*, int, const BlockQ8A*, float*, size_t),
          void (*tile1)(const Block*, int, const BlockQ8A*, float*, size_t)>
void groups_by_tiles(const void* groups, int n_groups, int nb, const BlockQ8A* act, int n_act, float* out,
                     size_t ldo) {
    for (int g = 0; g < n_groups; ++g, out += kX8) {
        const Block* w = static_cast<const Block*>(groups) + static_cast<size_t>(g) * nb;
        int t = 0;
        for (; t + 4 <= n_act; t += 4) tile4(w, nb, act + static_cast<size_t>(t) * nb, out + t * ldo, ldo);
        for (; t < n_act; ++t) tile1(w, nb, act + static_cast<size_t>(t) * nb, out + t * ldo, ldo);
    }
}

// A table's integer products from its own per-row dot products: dotq_*, and the prompt's gemmq_* as loops over them
// (for tables without matrix-matrix kernels of their own).
template <DotQFn q8_0, DotQFn q4_0, DotQFn q4_1, DotQFn q3_0>
void use_row_dots(KernelTable& t) {
    t.dotq_q8_0 = q8_0;
    t.dotq_q4_0 = q4_0;
    t.dotq_q4_1 = q4_1;
    t.dotq_q3_0 = q3_0;
    t.gemmq_q8_0 = gemm_by_dots<q8_0>;
    t.gemmq_q4_0 = gemm_by_dots<q4_0>;
    t.gemmq_q4_1 = gemm_by_dots<q4_1>;
    t.gemmq_q3_0 = gemm_by_dots<q3_0>;
}

// Tables each architecture file provides (null when not compiled for this target).
const KernelTable* scalar_kernels();
const KernelTable* avx2_kernels();
const KernelTable* avx512_vnni_kernels();
const KernelTable* neon_kernels();
const KernelTable* neon_dotprod_kernels();
const KernelTable* rvv_kernels();

// The table chosen for this process (decided once, at first use).
const KernelTable& kernels();
// Names of the tables this CPU can run, best first.
std::vector<std::string> available_kernels();
// A named table, if this CPU can run it; throws Error otherwise.
const KernelTable& kernels_by_name(const std::string& name);

// kv_scores / kv_mix from an architecture's kernels for one cache type each (F16, F32, Q8_0), which step through a
// head kStep elements at a time: other head dims take the scalar twin (the one place that rule is written).
using KvScoresTyped = void (*)(const uint8_t* rows, size_t stride, int n, const float* q, int n_q, int hd,
                               float* out, size_t ld);
using KvMixTyped = void (*)(const uint8_t* rows, size_t stride, int n, const float* p, size_t ld, int n_q, int hd,
                            float* out);
template <int kStep, KvScoresTyped f16, KvScoresTyped f32, KvScoresTyped q8_0>
void kv_scores_by_type(DType t, const uint8_t* rows, size_t stride, int n, const float* q, int n_q, int hd,
                       float* out, size_t ld) {
    if (hd % kStep) return scalar_kernels()->kv_scores(t, rows, stride, n, q, n_q, hd, out, ld);
    (t == DType::F16 ? f16 : t == DType::F32 ? f32 : q8_0)(rows, stride, n, q, n_q, hd, out, ld);
}
template <int kStep, KvMixTyped f16, KvMixTyped f32, KvMixTyped q8_0>
void kv_mix_by_type(DType t, const uint8_t* rows, size_t stride, int n, const float* p, size_t ld, int n_q, int hd,
                    float* out) {
    if (hd % kStep) return scalar_kernels()->kv_mix(t, rows, stride, n, p, ld, n_q, hd, out);
    (t == DType::F16 ? f16 : t == DType::F32 ? f32 : q8_0)(rows, stride, n, p, ld, n_q, hd, out);
}

}  // namespace franken
