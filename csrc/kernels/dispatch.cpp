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
