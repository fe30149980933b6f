// Scalar reference kernels: the plain definition every SIMD kernel is tested against.
#include <algorithm>
#include <cmath>

#include "../kernels.h"

namespace franken {
namespace {

// The float formats' dot products: one body, so that f16 and bf16 give the bits of dot_f32 over the decoded row
// (decoding them is exact), as the model's batch invariance needs (every table's float dots keep this).
template <class Elem, float (*to_float)(Elem)>
float dot_float(const void* row, const float* x, int n) {
    const Elem* w = static_cast<const Elem*>(row);
    float s = 0.f;
    for (int i = 0; i < n; ++i) s += to_float(w[i]) * x[i];
    return s;
}
inline float f32_of(float v) { return v; }
constexpr DotFn dot_f32 = dot_float<float, f32_of>;
constexpr DotFn dot_f16 = dot_float<uint16_t, fp16_to_f32>;
constexpr DotFn dot_bf16 = dot_float<uint16_t, bf16_to_f32>;

// The quantized formats, block by block through their element accessors (formats.h): value = d * q + m, so a
// block contributes d * sum(q x) + m * sum(x).
template <class Block>
float dot_blocks(const void* row, const float* x, int n) {
    const Block* b = static_cast<const Block*>(row);
    float s = 0.f;
    int8_t q[kQK];
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        float d, m, qx = 0.f, sx = 0.f;
        block_codes(b[i], q, d, m);
        for (int j = 0; j < kQK; ++j) qx += q[j] * x[j], sx += x[j];
        s += d * qx + m * sx;
    }
    return s;
}

void to_f32_f32(const void* row, float* out, int n) {
    const float* w = static_cast<const float*>(row);
    for (int i = 0; i < n; ++i) out[i] = w[i];
}

void to_f32_f16(const void* row, float* out, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    for (int i = 0; i < n; ++i) out[i] = fp16_to_f32(w[i]);
}

void to_f32_bf16(const void* row, float* out, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    for (int i = 0; i < n; ++i) out[i] = bf16_to_f32(w[i]);
}

template <class Block>
void to_f32_blocks(const void* row, float* out, int n) {
    const Block* b = static_cast<const Block*>(row);
    int8_t q[kQK];
    for (int i = 0; i < n / kQK; ++i, out += kQK) {
        float d, m;
        block_codes(b[i], q, d, m);
        for (int j = 0; j < kQK; ++j) out[j] = d * q[j] + m;
    }
}

void swiglu(float* gate, const float* up, int n) {
    for (int i = 0; i < n; ++i) gate[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

float exp_sum(float* x, int n, float max) {
    float sum = 0.f;
    for (int i = 0; i < n; ++i) sum += x[i] = std::exp(x[i] - max);
    return sum;
}

void quantize_act(const float* x, BlockQ8A* out, int n) {
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        float amax = 0.f;
        for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.f, id = d > 0 ? 1.f / d : 0.f;
        int sum = 0;
        for (int j = 0; j < kQK; ++j) {
            const int q = static_cast<int>(std::nearbyint(x[j] * id));  // round half to even, as SIMD does
            out[i].qs[j] = static_cast<int8_t>(q);
            sum += q;
        }
        out[i].d = d;
        out[i].s = d * static_cast<float>(sum);
    }
}

// sum((d q + m) x) = d d_x sum(q q_x) + m s_x, s_x = d_x sum(q_x) (the activation block's sum).
template <class Block>
float dotq_blocks(const void* row, const BlockQ8A* a, int n) {
    const Block* b = static_cast<const Block*>(row);
    float s = 0.f;
    int8_t q[kQK];
    for (int i = 0; i < n / kQK; ++i) {
        float d, m;
        block_codes(b[i], q, d, m);
        int acc = 0;
        for (int j = 0; j < kQK; ++j) acc += q[j] * a[i].qs[j];
        s += d * a[i].d * static_cast<float>(acc) + m * a[i].s;
    }
    return s;
}

// The K-quants' superblocks, piece by piece (piece_codes in formats.h): value = d[h] * q + m[h] per half h.
template <class Block>
float dot_pieces(const void* row, const float* x, int n) {
    const Block* b = static_cast<const Block*>(row);
    float s = 0.f;
    int8_t q[kQK];
    float d[2], m[2];
    for (int i = 0; i < n / kQK_K; ++i)
        for (int p = 0; p < kPiecesK; ++p, x += kQK) {
            piece_codes(b[i], p, q, d, m);
            for (int h = 0; h < 2; ++h) {
                float qx = 0.f, sx = 0.f;
                for (int j = 16 * h; j < 16 * h + 16; ++j) qx += q[j] * x[j], sx += x[j];
                s += d[h] * qx + m[h] * sx;
            }
        }
    return s;
}

template <class Block>
void to_f32_pieces(const void* row, float* out, int n) {
    const Block* b = static_cast<const Block*>(row);
    int8_t q[kQK];
    float d[2], m[2];
    for (int i = 0; i < n / kQK_K; ++i)
        for (int p = 0; p < kPiecesK; ++p, out += kQK) {
            piece_codes(b[i], p, q, d, m);
            for (int j = 0; j < kQK; ++j) out[j] = d[j / 16] * q[j] + m[j / 16];
        }
}

// Piece p of superblock i meets activation block 8i + p: d_x (d[h] sum(q q_x) + m[h] sum(q_x)) per half.
template <class Block>
float dotq_pieces(const void* row, const BlockQ8A* a, int n) {
    const Block* b = static_cast<const Block*>(row);
    float s = 0.f;
    int8_t q[kQK];
    float d[2], m[2];
    for (int i = 0; i < n / kQK_K; ++i)
        for (int p = 0; p < kPiecesK; ++p, ++a) {
            piece_codes(b[i], p, q, d, m);
            for (int h = 0; h < 2; ++h) {
                int acc = 0, sum = 0;
                for (int j = 16 * h; j < 16 * h + 16; ++j) acc += q[j] * a->qs[j], sum += a->qs[j];
                s += a->d * (d[h] * static_cast<float>(acc) + m[h] * static_cast<float>(sum));
            }
        }
    return s;
}

// The interleaved layouts read element by element through formats.h's accessors (q4_0x8_code, x8_min, ...):
// d_w d_x sum(q q_x) + m_w s_x per block, the minimum term only for Q4_1.
template <class Block, int (*code)(const Block&, int, int)>
void gemmq_x8(const void* groups, int n_groups, int nb, const BlockQ8A* act, int n_act, float* out, size_t ldo) {
    for (int g = 0; g < n_groups; ++g) {
        const Block* w = static_cast<const Block*>(groups) + static_cast<size_t>(g) * nb;
        for (int t = 0; t < n_act; ++t) {
            const BlockQ8A* a = act + static_cast<size_t>(t) * nb;
            for (int r = 0; r < kX8; ++r) {
                float s = 0.f;
                for (int b = 0; b < nb; ++b) {
                    int acc = 0;
                    for (int k = 0; k < kQK; ++k) acc += code(w[b], r, k) * a[b].qs[k];
                    s += fp16_to_f32(w[b].d[r]) * a[b].d * static_cast<float>(acc) + x8_min(w[b], r) * a[b].s;
                }
                out[t * ldo + kX8 * g + r] = s;
            }
        }
    }
}

// The interleaved K-quants (one superblock of eight rows per block), piece by piece through their accessor:
// d_x (d[h] sum(q q_x) + m[h] sum(q_x)) per half, as dotq_pieces reads the stored rows.
template <class Block>
void gemmq_kx8(const void* groups, int n_groups, int nb, const BlockQ8A* act, int n_act, float* out, size_t ldo) {
    const int n_sb = nb / kPiecesK;
    int8_t q[kQK];
    float d[2], m[2];
    for (int g = 0; g < n_groups; ++g) {
        const Block* w = static_cast<const Block*>(groups) + static_cast<size_t>(g) * n_sb;
        for (int t = 0; t < n_act; ++t) {
            const BlockQ8A* a = act + static_cast<size_t>(t) * nb;
            for (int r = 0; r < kX8; ++r) {
                float s = 0.f;
                for (int b = 0; b < nb; ++b) {
                    kx8_piece(w[b / kPiecesK], r, b % kPiecesK, q, d, m);
                    for (int h = 0; h < 2; ++h) {
                        int acc = 0, sum = 0;
                        for (int k = 16 * h; k < 16 * h + 16; ++k) acc += q[k] * a[b].qs[k], sum += a[b].qs[k];
                        s += a[b].d * (d[h] * static_cast<float>(acc) + m[h] * static_cast<float>(sum));
                    }
                }
                out[t * ldo + kX8 * g + r] = s;
            }
        }
    }
}

// Elements [d0, d0 + m) of a cache row (m <= 32, d0 a multiple of 32) as floats: a Q8_0 block's scale once.
void kv_piece(DType t, const uint8_t* row, int d0, int m, float* out) {
    if (t == DType::Q8_0) {
        const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(row)[d0 / kQK];
        const float d = fp16_to_f32(b.d);
        for (int k = 0; k < m; ++k) out[k] = d * static_cast<float>(b.qs[k]);
    } else {
        for (int k = 0; k < m; ++k) out[k] = kv_elem(t, row, d0 + k);
    }
}

// Each row is converted once, a 32-element piece at a time, for all the queries.
void kv_scores(DType t, const uint8_t* rows, size_t stride, int n, const float* q, int n_q, int hd, float* out,
               size_t ld) {
    float piece[kQK];
    for (int j = 0; j < n; ++j) {
        const uint8_t* row = rows + static_cast<size_t>(j) * stride;
        for (int i = 0; i < n_q; ++i) out[i * ld + j] = 0.f;
        for (int d0 = 0; d0 < hd; d0 += kQK) {
            const int m = std::min(kQK, hd - d0);
            kv_piece(t, row, d0, m, piece);
            for (int i = 0; i < n_q; ++i) {
                float s = 0.f;
                for (int k = 0; k < m; ++k) s += piece[k] * q[i * hd + d0 + k];
                out[i * ld + j] += s;
            }
        }
    }
}

void kv_mix(DType t, const uint8_t* rows, size_t stride, int n, const float* p, size_t ld, int n_q, int hd,
            float* out) {
    std::fill(out, out + static_cast<size_t>(n_q) * hd, 0.f);
    float piece[kQK];
    for (int j = 0; j < n; ++j) {
        const uint8_t* row = rows + static_cast<size_t>(j) * stride;
        for (int d0 = 0; d0 < hd; d0 += kQK) {
            const int m = std::min(kQK, hd - d0);
            kv_piece(t, row, d0, m, piece);
            for (int i = 0; i < n_q; ++i)
                for (int k = 0; k < m; ++k) out[i * hd + d0 + k] += p[i * ld + j] * piece[k];
        }
    }
}

// A quantized format's scalar row: stored-row kernels through its element accessor, the interleaved twin through
// its interleaved layout's accessor.
template <class Block, class X8, int (*code)(const X8&, int, int)>
FormatKernels quantized_row() {
    return {dot_blocks<Block>, to_f32_blocks<Block>, dotq_blocks<Block>, gemm_by_dots<dotq_blocks<Block>>,
            gemmq_x8<X8, code>};
}

// A K-quant's scalar row: stored-row kernels piece by piece, the interleaved twin through its piece accessor.
template <class Block, class X8>
FormatKernels superblock_row() {
    return {dot_pieces<Block>, to_f32_pieces<Block>, dotq_pieces<Block>, gemm_by_dots<dotq_pieces<Block>>,
            gemmq_kx8<X8>};
}

KernelTable make_table() {
    KernelTable t;
    t.name = "scalar";
    t.reference = true;
    t[DType::F32] = {dot_f32, to_f32_f32};
    t[DType::F16] = {dot_f16, to_f32_f16};
    t[DType::BF16] = {dot_bf16, to_f32_bf16};
    t[DType::Q8_0] = quantized_row<BlockQ8_0, BlockQ8_0x8, q8_0x8_code>();
    t[DType::Q4_0] = quantized_row<BlockQ4_0, BlockQ4_0x8, q4_0x8_code>();
    t[DType::Q4_1] = quantized_row<BlockQ4_1, BlockQ4_1x8, q4_1x8_code>();
    t[DType::Q3_0] = quantized_row<BlockQ3_0, BlockQ3_0x8, q3_0x8_code>();
    t[DType::IQ4_NL] = quantized_row<BlockIQ4_NL, BlockIQ4_NLx8, iq4_nlx8_code>();
    t[DType::Q3_NL] = quantized_row<BlockQ3_NL, BlockQ3_NLx8, q3_nlx8_code>();
    t[DType::Q2_NL] = quantized_row<BlockQ2_NL, BlockQ2_NLx8, q2_nlx8_code>();
    t[DType::Q5_0] = quantized_row<BlockQ5_0, BlockQ5_0x8, q5_0x8_code>();
    t[DType::Q5_1] = quantized_row<BlockQ5_1, BlockQ5_1x8, q5_1x8_code>();
    t[DType::Q4_K] = superblock_row<BlockQ4_K, BlockQ4_Kx8>();
    t[DType::Q5_K] = superblock_row<BlockQ5_K, BlockQ5_Kx8>();
    t[DType::Q6_K] = superblock_row<BlockQ6_K, BlockQ6_Kx8>();
    t.swiglu = swiglu;
    t.exp_sum = exp_sum;
    t.quantize_act = quantize_act;
    t.kv_scores = kv_scores;
    t.kv_mix = kv_mix;
    return t;
}

}  // namespace

const KernelTable* scalar_kernels() {
    static const KernelTable table = make_table();
    return &table;
}

KernelTable scalar_based(const char* name) {
    KernelTable t = *scalar_kernels();
    t.name = name;
    t.reference = false;
    for (FormatKernels& f : t.formats) f.gemm_x8 = nullptr;
    return t;
}

}  // namespace franken
