// The format table (formats.h): one row per storage type, in this baseline-ISA file alone.
#include "formats.h"

#include <cstddef>

namespace franken {

// Unsized here: a row count other than kNumFormats conflicts with the declaration in formats.h.
const FormatInfo kFormats[] = {
    {DType::F32, "F32", 1, 4, 0, 0, {}, nullptr, nullptr},
    {DType::F16, "F16", 1, 2, 0, 0, {}, nullptr, nullptr},
    {DType::BF16, "BF16", 1, 2, 0, 0, {}, nullptr, nullptr},
    {DType::Q8_0, "Q8_0", kQK, sizeof(BlockQ8_0), 1, 0, {},
     repack_rows_x8<BlockQ8_0, BlockQ8_0x8, repack_q8_0x8>, x8_row_to_f32<BlockQ8_0x8, q8_0x8_code>},
    {DType::Q4_0, "Q4_0", kQK, sizeof(BlockQ4_0), 1, 0, {},
     repack_rows_x8<BlockQ4_0, BlockQ4_0x8, repack_nibbles_x8<BlockQ4_0, BlockQ4_0x8>>,
     x8_row_to_f32<BlockQ4_0x8, q4_0x8_code>},
    {DType::Q4_1, "Q4_1", kQK, sizeof(BlockQ4_1), 2, 0, {},
     repack_rows_x8<BlockQ4_1, BlockQ4_1x8, repack_nibbles_x8<BlockQ4_1, BlockQ4_1x8>>,
     x8_row_to_f32<BlockQ4_1x8, q4_1x8_code>},
    {DType::IQ4_NL, "IQ4_NL", kQK, sizeof(BlockIQ4_NL), 1, 0, {kIQ4NLValues, 16, 1, 1},
     repack_rows_x8<BlockIQ4_NL, BlockIQ4_NLx8, repack_nibbles_x8<BlockIQ4_NL, BlockIQ4_NLx8>>,
     x8_row_to_f32<BlockIQ4_NLx8, iq4_nlx8_code>},
    // read only (llama.cpp's files)
    {DType::Q5_0, "Q5_0", kQK, sizeof(BlockQ5_0), 1, 0, {},
     repack_rows_x8<BlockQ5_0, BlockQ5_0x8, repack_q5_x8<BlockQ5_0, BlockQ5_0x8>>,
     x8_row_to_f32<BlockQ5_0x8, q5_0x8_code>},
    {DType::Q5_1, "Q5_1", kQK, sizeof(BlockQ5_1), 2, 0, {},
     repack_rows_x8<BlockQ5_1, BlockQ5_1x8, repack_q5_x8<BlockQ5_1, BlockQ5_1x8>>,
     x8_row_to_f32<BlockQ5_1x8, q5_1x8_code>},
    {DType::Q4_K, "Q4_K", kQK_K, sizeof(BlockQ4_K), 2, 0, {},
     repack_rows_x8<BlockQ4_K, BlockQ4_Kx8, repack_kx8<BlockQ4_K, BlockQ4_Kx8>>, kx8_row_to_f32<BlockQ4_Kx8>},
    {DType::Q5_K, "Q5_K", kQK_K, sizeof(BlockQ5_K), 2, 0, {},
     repack_rows_x8<BlockQ5_K, BlockQ5_Kx8, repack_kx8<BlockQ5_K, BlockQ5_Kx8>>, kx8_row_to_f32<BlockQ5_Kx8>},
    {DType::Q6_K, "Q6_K", kQK_K, sizeof(BlockQ6_K), 1, static_cast<int>(offsetof(BlockQ6_K, d)), {},
     repack_rows_x8<BlockQ6_K, BlockQ6_Kx8, repack_q6_kx8>, kx8_row_to_f32<BlockQ6_Kx8>},
    {DType::Q3_0, "Q3_0", kQK, sizeof(BlockQ3_0), 1, 0, {},
     repack_rows_x8<BlockQ3_0, BlockQ3_0x8, repack_q3_0x8>, x8_row_to_f32<BlockQ3_0x8, q3_0x8_code>},
    {DType::Q3_NL, "Q3_NL", kQK, sizeof(BlockQ3_NL), 1, 0, {kQ3NLValues, 8, 1, 1},
     repack_rows_x8<BlockQ3_NL, BlockQ3_NLx8, repack_planes_x8<BlockQ3_NL, BlockQ3_NLx8>>,
     x8_row_to_f32<BlockQ3_NLx8, q3_nlx8_code>},
    {DType::Q2_NL, "Q2_NL", kQK, sizeof(BlockQ2_NL), 1, 0, {kQ2NLValues, 4, 1, 1},
     repack_rows_x8<BlockQ2_NL, BlockQ2_NLx8, repack_planes_x8<BlockQ2_NL, BlockQ2_NLx8>>,
     x8_row_to_f32<BlockQ2_NLx8, q2_nlx8_code>},
};

int format_index(int id) {
    for (int i = 0; i < kNumFormats; ++i)
        if (static_cast<int>(kFormats[i].id) == id) return i;
    return -1;
}

}  // namespace franken
