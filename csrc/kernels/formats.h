// Storage formats of weights: the one definition of each block layout, shared by every kernel.
// The numbers and byte layouts are those of GGUF/ggml, so files interoperate with llama.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace franken {

// GGUF's ggml_type ids for the types we read; ids from 1000 up are franken-rt's own (ggml has no 3-bit type
// with 32-element blocks, and 576-wide rows rule out its 256-element Q3_K), so llama.cpp refuses those files.
enum class DType : int {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14,
    IQ4_NL = 20, BF16 = 30, Q3_0 = 1003, Q3_NL = 1004, Q2_NL = 1005
};

constexpr int kQK = 32;  // elements per quantization block

// Q8_0: one f16 scale, 32 signed bytes. value = d * q
struct BlockQ8_0 {
    uint16_t d;
    int8_t qs[kQK];
};
// Q4_0: one f16 scale, 32 nibbles. Element j is the low nibble of qs[j], element j+16 its high nibble.
// value = d * (q - 8)
struct BlockQ4_0 {
    uint16_t d;
    uint8_t qs[kQK / 2];
};
// Q4_1: f16 scale and f16 minimum, nibbles as Q4_0. value = d * q + m
struct BlockQ4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[kQK / 2];
};
// Q5_0: one f16 scale, the low four bits of each code as Q4_0's nibbles, the fifth bit of element j in bit j of
// qh (a little-endian 32-bit word). value = d * (q - 16)
struct BlockQ5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[kQK / 2];
};
// Q5_1: f16 scale and f16 minimum, codes as Q5_0's. value = d * q + m
struct BlockQ5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "Q5_0 and Q5_1 blocks are 22 and 24 bytes");

// ---- llama.cpp's K-quants: 256-element superblocks of eight (Q4_K, Q5_K) or sixteen (Q6_K) sub-blocks, each
// with its own integer scale (and minimum) times the superblock's f16 ones. The kernels read a superblock as eight
// 32-element pieces (piece_codes below), the size of an activation block. ----
constexpr int kQK_K = 256;
constexpr int kPiecesK = kQK_K / kQK;
// Q4_K: value = d * sc[p] * q - dmin * mn[p] in piece p, q a nibble; the eight 6-bit scales and minimums are
// packed in 12 bytes (k_scales_mins). Pieces 2i and 2i+1 are the low and high nibbles of qs[32i..32i+31].
struct BlockQ4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[kQK_K / 2];
};
// Q5_K: Q4_K with a fifth bit: element l of piece p has it in bit p of qh[l].
struct BlockQ5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[kQK_K / 8];
    uint8_t qs[kQK_K / 2];
};
// Q6_K: value = d * sc[s] * (q - 32) with 16-element sub-blocks s and int8 scales; the scale d comes last. In
// each 128-element half h, piece k (0..3) takes its low four bits from the low (k = 0, 1) or high (k = 2, 3)
// nibbles of ql[64h + 32(k % 2) + l] and its top two bits from bits 2k, 2k+1 of qh[32h + l].
struct BlockQ6_K {
    uint8_t ql[kQK_K / 2];
    uint8_t qh[kQK_K / 4];
    int8_t scales[kQK_K / 16];
    uint16_t d;
};
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210,
              "K-quant superblocks are 144, 176 and 210 bytes");

// The eight 6-bit scales (bytes of sc) and minimums (bytes of mn) of a Q4_K/Q5_K superblock, a 32-bit word at a
// time: those of pieces 0-3 are the low six bits of bytes j and j + 4; those of pieces 4-7 the low and high
// nibbles of byte j + 4 (j = 4..7), with their top two bits in the spare bits of bytes j - 4 and j.
inline void k_scales_mins(const uint8_t* s, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t w[3];
    std::memcpy(w, s, 12);
    const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, top2 = 0x03030303u;
    const uint32_t out[4] = {w[0] & low6, (w[2] & low4) | (((w[0] >> 6) & top2) << 4),
                             w[1] & low6, ((w[2] >> 4) & low4) | (((w[1] >> 6) & top2) << 4)};
    std::memcpy(sc, out, 8);
    std::memcpy(mn, out + 2, 8);
}
// The inverse: eight 6-bit scales and minimums into the 12-byte packing k_scales_mins reads.
inline void k_pack_scales_mins(const uint8_t sc[8], const uint8_t mn[8], uint8_t* s) {
    for (int j = 0; j < 4; ++j) {
        s[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4));
    }
}

// Q3_0 (franken-rt's): f16 scale, 32 three-bit codes split in planes. value = d * (q - 4), q = 0..7.
// The low two bits of element j are bits 2*(j/8)..2*(j/8)+1 of qs[j % 8], so one 64-bit word shifted by 0, 2, 4 and
// 6 yields elements 0-7, 8-15, 16-23, 24-31 in byte order; the high bit of element j is bit j of qh (little
// endian). 14 bytes per 32 elements: 3.5 bits per weight, against Q4_0's 4.5.
struct BlockQ3_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[8];
};
// Element j (0..31) of a Q3_0 (or Q3_NL) block, as its 3-bit code.
template <class Block>
inline int q3_code(const Block& b, int j) {
    return ((b.qs[j % 8] >> (2 * (j / 8))) & 3) | (((b.qh[j / 8] >> (j % 8)) & 1) << 2);
}
inline int q3_0_code(const BlockQ3_0& b, int j) { return q3_code(b, j); }

// IQ4_NL (ggml's): f16 scale, 32 four-bit indices into a fixed non-linear level set, nibbles as Q4_0.
// value = d * kIQ4NLValues[q]: the levels are denser near zero, where most weights are.
constexpr int8_t kIQ4NLValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
struct BlockIQ4_NL {
    uint16_t d;
    uint8_t qs[kQK / 2];
};

static_assert(sizeof(BlockIQ4_NL) == 18, "IQ4_NL block is 18 bytes");

// Q3_NL (franken-rt's): Q3_0's block layout, its eight codes indexing a non-linear level set denser near zero.
// value = d * kQ3NLValues[q]. The levels were fitted to the demo model's blocks (Lloyd iterations under the
// converter's scale search, then the best set of integers in -8..7 nearby): 8% less squared error than Q3_0's
// uniform levels on those blocks, 7% on Gaussian and 20% on Laplacian blocks. Integers in -8..7 keep the
// kernels' integer products those of Q4_0 (levels + 8 are unsigned nibbles).
constexpr int8_t kQ3NLValues[8] = {-5, -3, -2, -1, 0, 1, 2, 4};
struct BlockQ3_NL {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[8];
};
// Q2_NL (franken-rt's): f16 scale and 32 two-bit codes laid out as Q3_0's low planes (element j at bits
// 2*(j/8) of qs[j % 8]), indexing four levels: 10 bytes per 32 elements, 2.5 bits per weight.
// value = d * kQ2NLValues[q]. Fitted as Q3_NL's: 4% less squared error than uniform levels on the demo's blocks,
// 4% on Gaussian and 3% on Laplacian ones (four levels leave little room for shape).
constexpr int8_t kQ2NLValues[4] = {-5, -2, 0, 3};
struct BlockQ2_NL {
    uint16_t d;
    uint8_t qs[8];
};
static_assert(sizeof(BlockQ3_NL) == 14 && sizeof(BlockQ2_NL) == 10, "Q3_NL and Q2_NL blocks are 14 and 10 bytes");
inline int q2_code(const BlockQ2_NL& b, int j) { return (b.qs[j % 8] >> (2 * (j / 8))) & 3; }
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 &&
              sizeof(BlockQ3_0) == 14, "block sizes are GGUF's (Q3_0: ours)");

// Activations, quantized on the fly (never stored in files): a float scale, the block's sum d * sum(q) for the
// minimum term of Q4_1 weights, and 32 signed bytes. value = d * q
struct BlockQ8A {
    float d;
    float s;
    int8_t qs[kQK];
};
// Q4_0 rows interleaved eight at a time (never stored in files: the model repacks Q4_0 matrices into it at load,
// for kernels that have it). Block b of an eight-row group holds block b of each row, reordered so that one 32-byte
// load gives four consecutive elements of each of the eight rows: a SIMD lane per row, so an integer dot product
// fills lane r with row r's partial sum and no horizontal reduction or shuffle is needed. Byte 32c + 4r + j of qs
// holds row r's element 8c + j in its low nibble and element 8c + 4 + j in its high nibble (c = 0..3, j = 0..3).
// Same 144 bytes as eight Q4_0 blocks: value = d[r] * (q - 8).
constexpr int kX8 = 8;
struct BlockQ4_0x8 {
    uint16_t d[kX8];
    uint8_t qs[kX8 * kQK / 2];
};
static_assert(sizeof(BlockQ4_0x8) == 8 * 18, "Q4_0x8 block is eight Q4_0 blocks");

// Q8_0 rows interleaved the same way: byte 32c + 4r + j of qs is row r's element 4c + j (c = 0..7, j = 0..3).
// Same 272 bytes as eight Q8_0 blocks: value = d[r] * q.
struct BlockQ8_0x8 {
    uint16_t d[kX8];
    int8_t qs[kX8 * kQK];
};
static_assert(sizeof(BlockQ8_0x8) == 8 * 34, "Q8_0x8 block is eight Q8_0 blocks");

// Q4_1 rows interleaved as Q4_0 (same nibble order), with the eight rows' minimums: value = d[r] * q + m[r].
// Same 160 bytes as eight Q4_1 blocks.
struct BlockQ4_1x8 {
    uint16_t d[kX8];
    uint16_t m[kX8];
    uint8_t qs[kX8 * kQK / 2];
};
static_assert(sizeof(BlockQ4_1x8) == 8 * 20, "Q4_1x8 block is eight Q4_1 blocks");

// Q3_0 rows interleaved: row r's element k = 4c + j (c = 0..7, j = 0..3) has its low two bits at bits
// 2 (c % 4) of ql[32 (c / 4) + 4r + j] and its high bit at bit c of qh[4r + j]. One 32-byte vector shifted right
// by 2 (c % 4) and masked gives chunk c of all eight rows, lane r holding row r's four elements, as in Q4_0x8.
// Same 112 bytes as eight Q3_0 blocks: value = d[r] * (q - 4).
struct BlockQ3_0x8 {
    uint16_t d[kX8];
    uint8_t ql[kX8 * kQK / 4];
    uint8_t qh[kX8 * kQK / 8];
};
// Q3_NL rows interleaved as Q3_0's: value = d[r] * kQ3NLValues[q].
struct BlockQ3_NLx8 {
    uint16_t d[kX8];
    uint8_t ql[kX8 * kQK / 4];
    uint8_t qh[kX8 * kQK / 8];
};
// Q2_NL rows interleaved as Q3_0's low planes (no high plane): value = d[r] * kQ2NLValues[q].
struct BlockQ2_NLx8 {
    uint16_t d[kX8];
    uint8_t ql[kX8 * kQK / 4];
};
static_assert(sizeof(BlockQ3_NLx8) == 8 * 14 && sizeof(BlockQ2_NLx8) == 8 * 10, "eight blocks each");
// IQ4_NL rows interleaved with Q4_0's nibble order: value = d[r] * kIQ4NLValues[q].
struct BlockIQ4_NLx8 {
    uint16_t d[kX8];
    uint8_t qs[kX8 * kQK / 2];
};
static_assert(sizeof(BlockIQ4_NLx8) == 8 * 18, "IQ4_NLx8 block is eight IQ4_NL blocks");
// Q5_0 and Q5_1 rows interleaved as Q4_0's and Q4_1's (the low four bits in the nibble layout), with the fifth bits
// in Q3_0x8's high-plane layout: row r's element 4c + j at bit c of qh[4r + j]. Same 176 and 192 bytes as eight
// blocks: value = d[r] * (q - 16), d[r] * q + m[r].
struct BlockQ5_0x8 {
    uint16_t d[kX8];
    uint8_t qh[kX8 * kQK / 8];
    uint8_t qs[kX8 * kQK / 2];
};
struct BlockQ5_1x8 {
    uint16_t d[kX8];
    uint16_t m[kX8];
    uint8_t qh[kX8 * kQK / 8];
    uint8_t qs[kX8 * kQK / 2];
};
static_assert(sizeof(BlockQ5_0x8) == 8 * sizeof(BlockQ5_0) && sizeof(BlockQ5_1x8) == 8 * sizeof(BlockQ5_1),
              "Q5_0x8 and Q5_1x8 blocks are eight blocks each");

// Q4_K rows interleaved, one superblock of eight rows: piece p's nibbles in Q4_0x8's layout at qs + 128p, and the
// rows' 6-bit scales and minimums regrouped by piece: scales[p] packs piece p's eight rows (k_pack_scales_mins,
// row r where Q4_K has sub-block j), so one k_scales_mins gives the eight rows' scales of a piece.
// Same 1152 bytes as eight Q4_K superblocks: value = d[r] * sc[p][r] * q - dmin[r] * mn[p][r].
struct BlockQ4_Kx8 {
    uint16_t d[kX8];
    uint16_t dmin[kX8];
    uint8_t scales[kPiecesK][12];
    uint8_t qs[kPiecesK][kX8 * kQK / 2];
};
static_assert(sizeof(BlockQ4_Kx8) == 8 * sizeof(BlockQ4_K), "Q4_Kx8 block is eight Q4_K superblocks");
// Q5_K rows interleaved as Q4_K's, with piece p's fifth bits at qh[p] in Q3_0x8's high-plane layout (row r's
// element 4c + j at bit c of byte 4r + j). Same 1408 bytes as eight Q5_K superblocks.
struct BlockQ5_Kx8 {
    uint16_t d[kX8];
    uint16_t dmin[kX8];
    uint8_t scales[kPiecesK][12];
    uint8_t qs[kPiecesK][kX8 * kQK / 2];
    uint8_t qh[kPiecesK][kX8 * kQK / 8];
};
static_assert(sizeof(BlockQ5_Kx8) == 8 * sizeof(BlockQ5_K), "Q5_Kx8 block is eight Q5_K superblocks");

// Q6_K rows interleaved, one superblock of eight rows: piece p's low four bits in Q4_0x8's nibble layout at ql[p],
// its top two bits in Q3_0x8's low-plane layout at qh[p] (row r's element 4c + j at bits 2 (c % 4) of byte
// 32 (c / 4) + 4r + j), and the rows' scales of piece p's two 16-element halves at scales[p][h][r].
// Same 1680 bytes as eight Q6_K superblocks: value = d[r] * scales[p][h][r] * (q - 32).
struct BlockQ6_Kx8 {
    uint16_t d[kX8];
    int8_t scales[kPiecesK][2][kX8];
    uint8_t ql[kPiecesK][kX8 * kQK / 2];
    uint8_t qh[kPiecesK][kX8 * kQK / 4];
};
static_assert(sizeof(BlockQ6_Kx8) == 8 * sizeof(BlockQ6_K), "Q6_Kx8 block is eight Q6_K superblocks");

// The interleaved layouts, element by element: row r's element k (0..31) of a block of eight rows. The nibble
// layout (Q4_0x8's): the low or high nibble of byte 32 (k / 8) + 4r + k % 4. The two-bit plane (Q3_0x8's low
// planes): bits 2 (c % 4) of byte 32 (c / 4) + 4r + k % 4, c = k / 4. The one-bit plane (Q3_0x8's high plane): bit
// c of byte 4r + k % 4. The repackers write these (into zeroed bytes), the scalar twins read them.
inline int nibble_x8(const uint8_t* qs, int r, int k) {
    const uint8_t byte = qs[32 * (k / 8) + 4 * r + k % 4];
    return k % 8 < 4 ? byte & 0x0f : byte >> 4;
}
inline void put_nibble_x8(uint8_t* qs, int r, int k, int code) {
    qs[32 * (k / 8) + 4 * r + k % 4] |= static_cast<uint8_t>((code & 0x0f) << (k % 8 < 4 ? 0 : 4));
}
inline int two_bits_x8(const uint8_t* ql, int r, int k) {
    return (ql[32 * (k / 16) + 4 * r + k % 4] >> (2 * (k / 4 % 4))) & 3;
}
inline void put_two_bits_x8(uint8_t* ql, int r, int k, int bits) {
    ql[32 * (k / 16) + 4 * r + k % 4] |= static_cast<uint8_t>((bits & 3) << (2 * (k / 4 % 4)));
}
inline int bit_x8(const uint8_t* qh, int r, int k) { return (qh[4 * r + k % 4] >> (k / 4)) & 1; }
inline void put_bit_x8(uint8_t* qh, int r, int k, int bit) {
    qh[4 * r + k % 4] |= static_cast<uint8_t>((bit & 1) << (k / 4));
}

// Eight Q6_K rows (nb 32-element blocks each) -> nb / 8 interleaved superblocks.
inline void piece_codes(const BlockQ6_K& b, int p, int8_t q[kQK], float d[2], float m[2]);
inline void repack_q6_kx8(const uint8_t* rows, size_t row_stride, int nb, BlockQ6_Kx8* out) {
    for (int s = 0; s < nb / kPiecesK; ++s) {
        BlockQ6_Kx8& w = out[s];
        std::memset(&w, 0, sizeof w);
        for (int r = 0; r < kX8; ++r) {
            const BlockQ6_K& src = reinterpret_cast<const BlockQ6_K*>(rows + r * row_stride)[s];
            w.d[r] = src.d;
            for (int p = 0; p < kPiecesK; ++p) {
                int8_t q[kQK];
                float d[2], m[2];
                piece_codes(src, p, q, d, m);
                for (int h = 0; h < 2; ++h) w.scales[p][h][r] = src.scales[8 * (p / 4) + 2 * (p % 4) + h];
                for (int k = 0; k < kQK; ++k) {
                    put_nibble_x8(w.ql[p], r, k, q[k] + 32);
                    put_two_bits_x8(w.qh[p], r, k, (q[k] + 32) >> 4);
                }
            }
        }
    }
}

// Eight Q4_K or Q5_K rows (nb 32-element blocks each) -> nb / 8 interleaved superblocks.
template <class Block>
inline void piece_codes(const Block& b, int p, int8_t q[kQK], float d[2], float m[2]);
template <class Src, class Dst>
inline void repack_kx8(const uint8_t* rows, size_t row_stride, int nb, Dst* out) {
    for (int s = 0; s < nb / kPiecesK; ++s) {
        Dst& w = out[s];
        std::memset(&w, 0, sizeof w);
        uint8_t sc[kX8][kPiecesK], mn[kX8][kPiecesK];  // [row][piece]
        for (int r = 0; r < kX8; ++r) {
            const Src& src = reinterpret_cast<const Src*>(rows + r * row_stride)[s];
            w.d[r] = src.d, w.dmin[r] = src.dmin;
            k_scales_mins(src.scales, sc[r], mn[r]);
            for (int p = 0; p < kPiecesK; ++p) {
                int8_t q[kQK];
                float d[2], m[2];
                piece_codes(src, p, q, d, m);
                for (int k = 0; k < kQK; ++k) {
                    put_nibble_x8(w.qs[p], r, k, q[k]);
                    if constexpr (std::is_same_v<Dst, BlockQ5_Kx8>) put_bit_x8(w.qh[p], r, k, q[k] >> 4);
                }
            }
        }
        for (int p = 0; p < kPiecesK; ++p) {
            uint8_t psc[kX8], pmn[kX8];
            for (int r = 0; r < kX8; ++r) psc[r] = sc[r][p], pmn[r] = mn[r][p];
            k_pack_scales_mins(psc, pmn, w.scales[p]);
        }
    }
}
static_assert(sizeof(BlockQ3_0x8) == 8 * 14, "Q3_0x8 block is eight Q3_0 blocks");

// Element j (0..31) of a Q4_0 or Q4_1 block (the same nibble order), as its 4-bit code.
template <class Block>
inline int nibble_code(const Block& b, int j) { return j < kQK / 2 ? b.qs[j] & 0x0f : b.qs[j - kQK / 2] >> 4; }

// Eight Q4_0 rows (row r at rows + r * row_stride, nb blocks each) -> nb interleaved blocks; Q4_1 (Src BlockQ4_1,
// Dst BlockQ4_1x8) the same, with the minimums.
template <class Src, class Dst>
inline void repack_nibbles_x8(const uint8_t* rows, size_t row_stride, int nb, Dst* out) {
    for (int b = 0; b < nb; ++b)
        for (int r = 0; r < kX8; ++r) {
            const Src& src = reinterpret_cast<const Src*>(rows + r * row_stride)[b];
            out[b].d[r] = src.d;
            if constexpr (std::is_same_v<Src, BlockQ4_1>) out[b].m[r] = src.m;
            for (int c = 0; c < 4; ++c)
                for (int j = 0; j < 4; ++j)
                    out[b].qs[32 * c + 4 * r + j] =
                        static_cast<uint8_t>(nibble_code(src, 8 * c + j) | (nibble_code(src, 8 * c + 4 + j) << 4));
        }
}

// Eight Q5_0 (Q5_1) rows -> nb interleaved blocks.
inline int q5_code(const uint8_t qh[4], const uint8_t* qs, int j);
template <class Src, class Dst>
inline void repack_q5_x8(const uint8_t* rows, size_t row_stride, int nb, Dst* out) {
    for (int b = 0; b < nb; ++b) {
        Dst& w = out[b];
        std::memset(&w, 0, sizeof w);
        for (int r = 0; r < kX8; ++r) {
            const Src& src = reinterpret_cast<const Src*>(rows + r * row_stride)[b];
            w.d[r] = src.d;
            if constexpr (std::is_same_v<Src, BlockQ5_1>) w.m[r] = src.m;
            for (int k = 0; k < kQK; ++k) {
                const int code = q5_code(src.qh, src.qs, k);
                put_nibble_x8(w.qs, r, k, code);
                put_bit_x8(w.qh, r, k, code >> 4);
            }
        }
    }
}

// Eight Q3_0 (Q3_NL, Q2_NL) rows -> nb interleaved blocks.
template <class Src, class Dst>
inline void repack_planes_x8(const uint8_t* rows, size_t row_stride, int nb, Dst* out) {
    constexpr bool kHigh = !std::is_same_v<Src, BlockQ2_NL>;
    for (int b = 0; b < nb; ++b) {
        Dst& w = out[b];
        std::memset(&w, 0, sizeof w);
        for (int r = 0; r < kX8; ++r) {
            const Src& src = reinterpret_cast<const Src*>(rows + r * row_stride)[b];
            w.d[r] = src.d;
            for (int k = 0; k < kQK; ++k) {
                int q;
                if constexpr (kHigh) q = q3_code(src, k);
                else q = q2_code(src, k);
                put_two_bits_x8(w.ql, r, k, q);
                if constexpr (kHigh) put_bit_x8(w.qh, r, k, q >> 2);
            }
        }
    }
}
inline void repack_q3_0x8(const uint8_t* rows, size_t row_stride, int nb, BlockQ3_0x8* out) {
    repack_planes_x8<BlockQ3_0, BlockQ3_0x8>(rows, row_stride, nb, out);
}

// Eight Q8_0 rows -> nb interleaved blocks.
inline void repack_q8_0x8(const uint8_t* rows, size_t row_stride, int nb, BlockQ8_0x8* out) {
    for (int b = 0; b < nb; ++b)
        for (int r = 0; r < kX8; ++r) {
            const BlockQ8_0& src = reinterpret_cast<const BlockQ8_0*>(rows + r * row_stride)[b];
            out[b].d[r] = src.d;
            for (int c = 0; c < 8; ++c)
                for (int j = 0; j < 4; ++j) out[b].qs[32 * c + 4 * r + j] = src.qs[4 * c + j];
        }
}

// Row r's element k (0..31) of an interleaved block, as its signed value before scaling: the layouts above read
// element by element (the scalar twins use these; the SIMD kernels read whole vectors).
inline int q4_0x8_code(const BlockQ4_0x8& w, int r, int k) { return nibble_x8(w.qs, r, k) - 8; }
inline int q8_0x8_code(const BlockQ8_0x8& w, int r, int k) { return w.qs[32 * (k / 4) + 4 * r + k % 4]; }
inline int q4_1x8_code(const BlockQ4_1x8& w, int r, int k) {  // unsigned: the minimum is added apart
    return nibble_x8(w.qs, r, k);
}
inline int iq4_nlx8_code(const BlockIQ4_NLx8& w, int r, int k) { return kIQ4NLValues[nibble_x8(w.qs, r, k)]; }
template <class Block>  // Q5_0x8 and Q5_1x8: the five-bit code
inline int q5x8_bits(const Block& w, int r, int k) {
    return nibble_x8(w.qs, r, k) | (bit_x8(w.qh, r, k) << 4);
}
inline int q5_0x8_code(const BlockQ5_0x8& w, int r, int k) { return q5x8_bits(w, r, k) - 16; }
inline int q5_1x8_code(const BlockQ5_1x8& w, int r, int k) { return q5x8_bits(w, r, k); }  // the minimum apart
template <class Block>  // Q3_0x8 and Q3_NLx8: the 3-bit code
inline int q3x8_bits(const Block& w, int r, int k) {
    return two_bits_x8(w.ql, r, k) | (bit_x8(w.qh, r, k) << 2);
}
inline int q3_0x8_code(const BlockQ3_0x8& w, int r, int k) { return q3x8_bits(w, r, k) - 4; }
inline int q3_nlx8_code(const BlockQ3_NLx8& w, int r, int k) { return kQ3NLValues[q3x8_bits(w, r, k)]; }
inline int q2_nlx8_code(const BlockQ2_NLx8& w, int r, int k) { return kQ2NLValues[two_bits_x8(w.ql, r, k)]; }

// Piece p of row r of an interleaved K-quant superblock, as piece_codes reads a stored one: its 32 codes and, per
// 16-element half h, value = d[h] * q + m[h].
template <class Block>
inline void kx8_piece(const Block& w, int r, int p, int8_t q[kQK], float d[2], float m[2]);

// ---- Element accessors: value[j] = d * q[j] + m for the 32 codes of a block. The scalar kernels read every
// quantized format through these (one definition of what a block means); the SIMD kernels read whole vectors. ----

inline float fp16_to_f32(uint16_t h);  // defined below

inline void block_codes(const BlockQ8_0& b, int8_t q[kQK], float& d, float& m) {
    for (int j = 0; j < kQK; ++j) q[j] = b.qs[j];
    d = fp16_to_f32(b.d), m = 0.f;
}
inline void block_codes(const BlockQ4_0& b, int8_t q[kQK], float& d, float& m) {
    for (int j = 0; j < kQK; ++j) q[j] = static_cast<int8_t>(nibble_code(b, j) - 8);
    d = fp16_to_f32(b.d), m = 0.f;
}
inline void block_codes(const BlockQ4_1& b, int8_t q[kQK], float& d, float& m) {  // unsigned codes, minimum apart
    for (int j = 0; j < kQK; ++j) q[j] = static_cast<int8_t>(nibble_code(b, j));
    d = fp16_to_f32(b.d), m = fp16_to_f32(b.m);
}
inline void block_codes(const BlockIQ4_NL& b, int8_t q[kQK], float& d, float& m) {
    for (int j = 0; j < kQK; ++j) q[j] = kIQ4NLValues[nibble_code(b, j)];
    d = fp16_to_f32(b.d), m = 0.f;
}
inline void block_codes(const BlockQ3_0& b, int8_t q[kQK], float& d, float& m) {
    for (int j = 0; j < kQK; ++j) q[j] = static_cast<int8_t>(q3_0_code(b, j) - 4);
    d = fp16_to_f32(b.d), m = 0.f;
}
inline void block_codes(const BlockQ3_NL& b, int8_t q[kQK], float& d, float& m) {
    for (int j = 0; j < kQK; ++j) q[j] = kQ3NLValues[q3_code(b, j)];
    d = fp16_to_f32(b.d), m = 0.f;
}
inline void block_codes(const BlockQ2_NL& b, int8_t q[kQK], float& d, float& m) {
    for (int j = 0; j < kQK; ++j) q[j] = kQ2NLValues[q2_code(b, j)];
    d = fp16_to_f32(b.d), m = 0.f;
}

inline int q5_code(const uint8_t qh[4], const uint8_t* qs, int j) {  // Q5_0/Q5_1 element j, 0..31
    return (j < kQK / 2 ? qs[j] & 0x0f : qs[j - kQK / 2] >> 4) | (((qh[j / 8] >> (j % 8)) & 1) << 4);
}
inline void block_codes(const BlockQ5_0& b, int8_t q[kQK], float& d, float& m) {
    for (int j = 0; j < kQK; ++j) q[j] = static_cast<int8_t>(q5_code(b.qh, b.qs, j) - 16);
    d = fp16_to_f32(b.d), m = 0.f;
}
inline void block_codes(const BlockQ5_1& b, int8_t q[kQK], float& d, float& m) {  // unsigned codes, minimum apart
    for (int j = 0; j < kQK; ++j) q[j] = static_cast<int8_t>(q5_code(b.qh, b.qs, j));
    d = fp16_to_f32(b.d), m = fp16_to_f32(b.m);
}

// Piece p (0..7) of a K-quant superblock: its 32 codes and, per 16-element half h, value = d[h] * q + m[h]
// (Q4_K/Q5_K: unsigned codes, one scale and minimum for the piece; Q6_K: codes minus 32, a scale per half).
template <class Block>  // Q4_K and Q5_K (Q5_K: the fifth bit of element l of piece p is bit p of qh[l])
inline void piece_codes(const Block& b, int p, int8_t q[kQK], float d[2], float m[2]) {
    static_assert(std::is_same_v<Block, BlockQ4_K> || std::is_same_v<Block, BlockQ5_K>, "Q4_K or Q5_K");
    uint8_t sc[kPiecesK], mn[kPiecesK];
    k_scales_mins(b.scales, sc, mn);
    const uint8_t* qs = b.qs + 32 * (p / 2);
    for (int l = 0; l < kQK; ++l) {
        int code = p % 2 ? qs[l] >> 4 : qs[l] & 0x0f;
        if constexpr (std::is_same_v<Block, BlockQ5_K>) code |= ((b.qh[l] >> p) & 1) << 4;
        q[l] = static_cast<int8_t>(code);
    }
    d[0] = d[1] = fp16_to_f32(b.d) * static_cast<float>(sc[p]);
    m[0] = m[1] = -fp16_to_f32(b.dmin) * static_cast<float>(mn[p]);
}
inline void piece_codes(const BlockQ6_K& b, int p, int8_t q[kQK], float d[2], float m[2]) {
    const int h = p / 4, k = p % 4;
    const uint8_t* ql = b.ql + 64 * h + 32 * (k % 2);
    const uint8_t* qh = b.qh + 32 * h;
    for (int l = 0; l < kQK; ++l)
        q[l] = static_cast<int8_t>(((k < 2 ? ql[l] & 0x0f : ql[l] >> 4) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32);
    const float dd = fp16_to_f32(b.d);
    d[0] = dd * static_cast<float>(b.scales[8 * h + 2 * k]);
    d[1] = dd * static_cast<float>(b.scales[8 * h + 2 * k + 1]);
    m[0] = m[1] = 0.f;
}

template <class Block>  // Q4_Kx8 and Q5_Kx8
inline void kx8_piece(const Block& w, int r, int p, int8_t q[kQK], float d[2], float m[2]) {
    uint8_t sc[kX8], mn[kX8];
    k_scales_mins(w.scales[p], sc, mn);
    for (int k = 0; k < kQK; ++k) {
        int code = nibble_x8(w.qs[p], r, k);
        if constexpr (std::is_same_v<Block, BlockQ5_Kx8>) code |= bit_x8(w.qh[p], r, k) << 4;
        q[k] = static_cast<int8_t>(code);
    }
    d[0] = d[1] = fp16_to_f32(w.d[r]) * static_cast<float>(sc[r]);
    m[0] = m[1] = -fp16_to_f32(w.dmin[r]) * static_cast<float>(mn[r]);
}
template <>
inline void kx8_piece(const BlockQ6_Kx8& w, int r, int p, int8_t q[kQK], float d[2], float m[2]) {
    for (int k = 0; k < kQK; ++k)
        q[k] = static_cast<int8_t>((nibble_x8(w.ql[p], r, k) | (two_bits_x8(w.qh[p], r, k) << 4)) - 32);
    for (int h = 0; h < 2; ++h) d[h] = fp16_to_f32(w.d[r]) * static_cast<float>(w.scales[p][h][r]), m[h] = 0.f;
}
// Row r of an interleaved K-quant group as floats.
template <class Block>
inline void kx8_row_to_f32(const void* group, int nb, int r, float* out) {
    const Block* w = static_cast<const Block*>(group);
    int8_t q[kQK];
    float d[2], m[2];
    for (int b = 0; b < nb; ++b, out += kQK) {
        kx8_piece(w[b / kPiecesK], r, b % kPiecesK, q, d, m);
        for (int k = 0; k < kQK; ++k) out[k] = d[k / 16] * q[k] + m[k / 16];
    }
}

// Row r's minimum in an interleaved block: the m of Q4_1, zero for the formats without one.
template <class Block>
inline float x8_min(const Block&, int) { return 0.f; }
template <>
inline float x8_min(const BlockQ4_1x8& w, int r) { return fp16_to_f32(w.m[r]); }
template <>
inline float x8_min(const BlockQ5_1x8& w, int r) { return fp16_to_f32(w.m[r]); }

// Row r (0..7) of an interleaved group of nb blocks, decoded to floats (a tied embedding's lookup, once the
// output matrix it shares has been repacked).
template <class Block, int (*code)(const Block&, int, int)>
void x8_row_to_f32(const void* group, int nb, int r, float* out) {
    const Block* w = static_cast<const Block*>(group);
    for (int b = 0; b < nb; ++b, out += kQK) {
        const float d = fp16_to_f32(w[b].d[r]), m = x8_min(w[b], r);
        for (int k = 0; k < kQK; ++k) out[k] = d * static_cast<float>(code(w[b], r, k)) + m;
    }
}

// Eight stored rows -> nb interleaved blocks, with the type-erased signature of the format table.
template <class Src, class Dst, void (*repack)(const uint8_t*, size_t, int, Dst*)>
void repack_rows_x8(const uint8_t* rows, size_t row_stride, int nb, void* out) {
    repack(rows, row_stride, nb, static_cast<Dst*>(out));
}

// ---- The format table: one row per storage type, everything the loader, the model and the bindings need to
// know about it. A kernel row per architecture (kernels.h) completes it. ----

// The value table(s) of a codebook format: a code indexes `entries` vectors of `dim` signed levels, one of
// `tables` tables chosen per block (entries * dim values each). Affine formats (d * (q - k), d * q + m) have none.
struct Codebook {
    const int8_t* values = nullptr;
    int entries = 0, dim = 0, tables = 0;
};

struct FormatInfo {
    DType id;            // GGUF's ggml_type id (ours from 1000 up)
    const char* name;
    int block_elems;     // 1 for the float types
    int block_bytes;
    int header_halves;   // f16 words of the block's header (scale, minimum): checked finite at load
    int header_at;       // the header's byte offset in the block (Q6_K's scale comes last)
    Codebook codebook;
    // The interleaved eight-row layout the integer kernels read (null: rows stay as stored): eight stored rows of
    // nb blocks -> nb interleaved blocks of eight times block_bytes, and one row of a group read back as floats.
    void (*repack_x8)(const uint8_t* rows, size_t row_stride, int nb, void* out);
    void (*x8_row_to_f32)(const void* group, int nb, int r, float* out);

    constexpr bool quantized() const { return block_elems > 1; }
};

// The table itself is defined once, in formats.cpp (compiled for the baseline ISA): defined here, every file that
// includes this one would emit its own copy of the repackers it points to, and an architecture file's copy (built
// with AVX2, say) could be the one the linker keeps for the whole program.
constexpr int kNumFormats = 15;
extern const FormatInfo kFormats[kNumFormats];

// Position of a type id in kFormats (the index of every per-format table), -1 if unknown.
int format_index(int id);
inline bool dtype_known(int id) { return format_index(id) >= 0; }
// The row of a known type (ids from files are checked with dtype_known first).
inline const FormatInfo& format_of(DType t) { return kFormats[format_index(static_cast<int>(t))]; }

// Bytes of one row of n elements (n must be a multiple of the block size).
inline size_t row_bytes(DType t, int64_t n) {
    const FormatInfo& f = format_of(t);
    return static_cast<size_t>(n / f.block_elems) * f.block_bytes;
}

// IEEE half and bfloat16 to float, portable bit manipulation (the SIMD kernels use hardware conversion).
inline float fp16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: renormalize
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) { mant <<= 1; --exp; }
            bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
// float -> IEEE half, rounding to nearest even (overflow to infinity, underflow through subnormals).
inline uint16_t f32_to_fp16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t abs = x & 0x7fffffffu;
    if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
    if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds beyond the largest half
    if (abs < 0x38800000u) {  // subnormal half: scale into the integer range and round
        float a;
        const uint32_t ab = abs;
        std::memcpy(&a, &ab, 4);
        return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.f)));
    }
    const uint32_t mant_round = abs + 0xfffu + ((abs >> 13) & 1u);  // round half to even at bit 13
    return static_cast<uint16_t>(sign | ((mant_round - 0x38000000u) >> 13));
}

// Element d of a KV cache row of type t (F32, F16 or Q8_0), element by element (the scalar twins read this way).
inline float kv_elem(DType t, const uint8_t* row, int d) {
    if (t == DType::F32) {
        float v;
        std::memcpy(&v, row + 4 * static_cast<size_t>(d), 4);
        return v;
    }
    if (t == DType::F16) {
        uint16_t h;
        std::memcpy(&h, row + 2 * static_cast<size_t>(d), 2);
        return fp16_to_f32(h);
    }
    const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(row)[d / kQK];
    return fp16_to_f32(b.d) * static_cast<float>(b.qs[d % kQK]);
}

// A float row as Q8_0 blocks (round to nearest), as ggml's reference quantizer.
inline void quantize_row_q8_0(const float* x, BlockQ8_0* out, int n) {
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        float amax = 0.f;
        for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        const float d = amax / 127.f, id = d > 0 ? 1.f / d : 0.f;
        out[i].d = f32_to_fp16(d);
        for (int j = 0; j < kQK; ++j) out[i].qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));
    }
}

// All 65536 half values as floats (256 KiB, built once, read-only): a kernel reads a block scale with one
// load that can broadcast straight into a vector, instead of a convert that competes for the shuffle port.
const float* fp16_table();

inline float bf16_to_f32(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

}  // namespace franken
