// The kernel dispatch table: every hot loop of the model goes through one of these function pointers.
// A table has one row of kernels per storage format (indexed like kFormats in formats.h) and the format-free
// kernels. generic/scalar.cpp fills every row; each architecture file (x86/, arm/, riscv/) starts from a copy of
// the scalar rows and sets, by name, the entries it speeds up, so a format or operation without a SIMD kernel runs
// the scalar stored-row loop. dispatch.cpp picks one table at start-up from the CPU's features, or the one named by
// FRANKEN_KERNELS (scalar, avx2, avx512_vnni, neon, neon_dotprod, rvv) for tests and benchmarks.
#pragma once
#include <cstddef>
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
// (the format's repack_x8 layout, nb blocks each, group g at groups + g * nb blocks) times n_act activation rows:
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

// One format's kernels (null where the format has no such operation: the float types have no integer products).
struct FormatKernels {
    DotFn dot = nullptr;
    ToF32Fn to_f32 = nullptr;
    DotQFn dotq = nullptr;      // stored row times 8-bit activations
    GemmQFn gemmq = nullptr;    // stored rows times activation rows
    GemmX8Fn gemm_x8 = nullptr; // interleaved groups times activation rows; null: rows stay as stored
};

struct KernelTable {
    const char* name = "";
    FormatKernels formats[kNumFormats];
    // The element-wise exponentials of a block, vectorized (libm's expf, one value at a time, cost as much as the
    // block's norms and residuals together): gate[i] = silu(gate[i]) * up[i] (SwiGLU), and softmax's numerators
    // x[i] = exp(x[i] - max), returning their sum.
    void (*swiglu)(float* gate, const float* up, int n) = nullptr;
    float (*exp_sum)(float* x, int n, float max) = nullptr;
    // Activations to 8-bit blocks (n a multiple of 32), which the formats' dotq/gemmq/gemm_x8 multiply.
    void (*quantize_act)(const float* x, BlockQ8A* out, int n) = nullptr;
    // Attention's two passes over the cache (scores, then the weighted sum of values).
    KvScoresFn kv_scores = nullptr;
    KvMixFn kv_mix = nullptr;
    // The scalar table's interleaved kernels are reference twins (element by element, 1.1-4.5x slower than its
    // stored-row loops): tests compare against them, but a model on that table keeps rows as stored.
    bool reference = false;

    FormatKernels& operator[](DType t) { return formats[format_index(static_cast<int>(t))]; }
    const FormatKernels& operator[](DType t) const { return formats[format_index(static_cast<int>(t))]; }
    DotFn dot(DType t) const { return (*this)[t].dot; }
    DotQFn dotq(DType t) const { return (*this)[t].dotq; }  // null for float types
    GemmQFn gemmq(DType t) const { return (*this)[t].gemmq; }
    GemmX8Fn gemmq_x8(DType t) const { return (*this)[t].gemm_x8; }
    // Whether the model repacks type t's matrices for this table: it has an interleaved kernel that is faster than
    // its stored-row loops.
    bool runs_interleaved(DType t) const { return !reference && gemmq_x8(t) && format_of(t).repack_x8; }
    void to_f32(DType t, const void* row, float* out, int n) const { (*this)[t].to_f32(row, out, n); }
};

// The matrix-matrix product as a loop over dot products: the scalar definition, and the fallback of any table.
template <DotQFn dot>
void gemm_by_dots(const uint8_t* rows, int n_rows, size_t row_stride, const BlockQ8A* act, int n_act, int n,
                  float* out, size_t ldo) {
    for (int i = 0; i < n_rows; ++i)
        for (int t = 0; t < n_act; ++t) out[t * ldo + i] = dot(rows + i * row_stride, act + static_cast<size_t>(t) * (n / kQK), n);
}

// A format's integer products from a per-row dot product: dotq, and the prompt's gemmq as a loop over it (for
// tables without matrix-matrix kernels of their own).
template <DType T, DotQFn dot>
void use_row_dot(KernelTable& t) {
    t[T].dotq = dot;
    t[T].gemmq = gemm_by_dots<dot>;
}

// A decode step streams every matrix once, each thread a chunk of groups. The hardware prefetchers start slowly at
// each chunk and stop at each 4 KiB page, and a small model's groups are short (4.9 KB for a 576-wide Q8_0
// matrix): a stream never gets up to speed. So the interleaved kernels ask for the next group while multiplying one.
// Prompt tiles reuse each group for several tokens and need no help. Prefetches never fault and change no result.
inline void prefetch_bytes(const void* p, size_t n) {
    for (size_t at = 0; at < n; at += 64) __builtin_prefetch(static_cast<const char*>(p) + at, 0, 3);
}

// A gemm_x8 from a tile kernel that multiplies one group with kTile activation rows: consecutive groups, each in
// tiles of four tokens and then one at a time (the loop every architecture's interleaved kernels share).
template <class Block, void (*tile4)(const Block*, int, const BlockQ8A*, float*, size_t),
          void (*tile1)(const Block*, int, const BlockQ8A*, float*, size_t)>
void groups_by_tiles(const void* groups, int n_groups, int nb, const BlockQ8A* act, int n_act, float* out,
                     size_t ldo) {
    for (int g = 0; g < n_groups; ++g, out += kX8) {
        const Block* w = static_cast<const Block*>(groups) + static_cast<size_t>(g) * nb;
        if (n_act < 4 && g + 1 < n_groups) prefetch_bytes(w + nb, sizeof(Block) * nb);
        int t = 0;
        for (; t + 4 <= n_act; t += 4) tile4(w, nb, act + static_cast<size_t>(t) * nb, out + t * ldo, ldo);
        for (; t < n_act; ++t) tile1(w, nb, act + static_cast<size_t>(t) * nb, out + t * ldo, ldo);
    }
}

// Tables each architecture file provides (null when not compiled for this target).
const KernelTable* scalar_kernels();
const KernelTable* avx2_kernels();
const KernelTable* avx512_vnni_kernels();
const KernelTable* neon_kernels();
const KernelTable* neon_dotprod_kernels();
const KernelTable* rvv_kernels();

// The start of every architecture's table: the scalar rows, under a new name, without the scalar interleaved
// twins (a format the architecture does not interleave keeps its rows as stored and runs the scalar loops).
KernelTable scalar_based(const char* name);

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
