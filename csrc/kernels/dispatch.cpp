// Chooses the kernel table once per process from the CPU's features (or FRANKEN_KERNELS).
#include <cstdlib>
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif
#if defined(__riscv) && defined(__linux__)
#include <sys/auxv.h>
#endif

#include "../runtime/error.h"
#include "kernels.h"

namespace franken {

#if !(defined(__x86_64__) || defined(_M_X64))
const KernelTable* avx2_kernels() { return nullptr; }
const KernelTable* avx512_vnni_kernels() { return nullptr; }
#endif
#if !defined(__aarch64__)
const KernelTable* neon_kernels() { return nullptr; }
const KernelTable* neon_dotprod_kernels() { return nullptr; }
#endif
#if !defined(__riscv)
const KernelTable* rvv_kernels() { return nullptr; }  // riscv/rvv.cpp is built on RISC-V only
#endif

namespace {

bool cpu_runs(const std::string& name) {
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    if (name == "avx2")
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (name == "avx512_vnni")
        return cpu_runs("avx2") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
#if defined(__aarch64__)
    if (name == "neon") return true;  // Advanced SIMD is mandatory on AArch64
#if defined(__linux__)
    if (name == "neon_dotprod") return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
#endif
#if defined(__riscv) && defined(__linux__)
    // The kernel reports the single-letter extensions as HWCAP bits, 'V' at bit 'V' - 'A'.
    if (name == "rvv") return (getauxval(AT_HWCAP) & (1ul << ('V' - 'A'))) != 0;
#endif
    return name == "scalar";
}

const KernelTable* table_named(const std::string& name) {
    if (name == "scalar") return scalar_kernels();
    if (name == "avx2") return avx2_kernels();
    if (name == "avx512_vnni") return avx512_vnni_kernels();
    if (name == "neon") return neon_kernels();
    if (name == "neon_dotprod") return neon_dotprod_kernels();
    if (name == "rvv") return rvv_kernels();
    return nullptr;
}

const KernelTable& choose() {
    if (const char* forced = std::getenv("FRANKEN_KERNELS"); forced && *forced) return kernels_by_name(forced);
    return kernels_by_name(available_kernels().front());
}

}  // namespace

const float* fp16_table() {
    static const std::vector<float> table = [] {
        std::vector<float> t(1 << 16);
        for (uint32_t h = 0; h < t.size(); ++h) t[h] = fp16_to_f32(static_cast<uint16_t>(h));
        return t;
    }();
    return table.data();
}

DotFn KernelTable::dot(DType t) const {
    switch (t) {
        case DType::F32: return dot_f32;
        case DType::F16: return dot_f16;
        case DType::BF16: return dot_bf16;
        case DType::Q8_0: return dot_q8_0;
        case DType::Q4_0: return dot_q4_0;
        case DType::Q4_1: return dot_q4_1;
        case DType::Q3_0: return dot_q3_0;
    }
    return nullptr;
}

DotQFn KernelTable::dotq(DType t) const {
    switch (t) {
        case DType::Q8_0: return dotq_q8_0;
        case DType::Q4_0: return dotq_q4_0;
        case DType::Q4_1: return dotq_q4_1;
        case DType::Q3_0: return dotq_q3_0;
        default: return nullptr;
    }
}

GemmX8Fn KernelTable::gemmq_x8(DType t) const {
    switch (t) {
        case DType::Q4_0: return gemmq_q4_0x8;
        case DType::Q8_0: return gemmq_q8_0x8;
        case DType::Q4_1: return gemmq_q4_1x8;
        case DType::Q3_0: return gemmq_q3_0x8;
        default: return nullptr;
    }
}

bool KernelTable::runs_interleaved(DType t) const { return gemmq_x8(t) != nullptr && this != scalar_kernels(); }

GemmQFn KernelTable::gemmq(DType t) const {
    switch (t) {
        case DType::Q8_0: return gemmq_q8_0;
        case DType::Q4_0: return gemmq_q4_0;
        case DType::Q4_1: return gemmq_q4_1;
        case DType::Q3_0: return gemmq_q3_0;
        default: return nullptr;
    }
}

void KernelTable::to_f32(DType t, const void* row, float* out, int n) const {
    switch (t) {
        case DType::F32: {
            const float* src = static_cast<const float*>(row);
            for (int i = 0; i < n; ++i) out[i] = src[i];
            return;
        }
        case DType::F16: return to_f32_f16(row, out, n);
        case DType::BF16: return to_f32_bf16(row, out, n);
        case DType::Q8_0: return to_f32_q8_0(row, out, n);
        case DType::Q4_0: return to_f32_q4_0(row, out, n);
        case DType::Q4_1: return to_f32_q4_1(row, out, n);
        case DType::Q3_0: return to_f32_q3_0(row, out, n);
    }
}

std::vector<std::string> available_kernels() {
    std::vector<std::string> out;
    for (const char* name : {"avx512_vnni", "avx2", "neon_dotprod", "neon", "rvv", "scalar"})
        if (cpu_runs(name) && table_named(name)) out.emplace_back(name);  // a table is built only where it runs
    return out;
}

const KernelTable& kernels_by_name(const std::string& name) {
    // The CPU first: building a table (its static initializer) may already use the instructions it needs.
    const KernelTable* t = cpu_runs(name) ? table_named(name) : nullptr;
    if (!t) throw Error("kernel path '" + name + "' is not available on this CPU or build");
    return *t;
}

const KernelTable& kernels() {
    static const KernelTable& chosen = choose();  // the one piece of process-wide state: set once, read-only
    return chosen;
}

}  // namespace franken
