// The avx2 table: the kernels of avx_kernels.h, compiled with -mavx2 -mfma -mf16c.
#include "avx_kernels.h"

namespace franken {

const KernelTable* avx2_kernels() {
    static const KernelTable table = avx_table("avx2");
    return &table;
}

}  // namespace franken
