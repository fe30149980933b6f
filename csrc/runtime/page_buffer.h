// Memory that every decode step reads from start to end (the repacked weights), in one anonymous mapping asked for
// in huge pages (RAII).
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>

namespace franken {

// A token streams every weight once. In 4 KiB pages that is a TLB miss per 4 KiB, each a page walk (under a
// hypervisor, a walk of the guest's tables and the host's); where the kernel offers transparent huge pages, one
// mapping aligned to 2 MiB and advised MADV_HUGEPAGE takes one per 2 MiB. The advice may be ignored (THP off, no
// Linux): the buffer then works as plain pages. Pages become resident as they are written, as with calloc.
class PageBuffer {
public:
    static constexpr size_t kHuge = size_t{2} << 20;

    explicit PageBuffer(size_t n) {
        if (n == 0) return;
        const size_t want = (n + kHuge - 1) / kHuge * kHuge;
        void* p = ::mmap(nullptr, want + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        // Keep the 2 MiB-aligned `want` bytes inside the over-allocation; give back the head (if any) and the tail.
        const auto raw = reinterpret_cast<uintptr_t>(p);
        const uintptr_t start = (raw + kHuge - 1) / kHuge * kHuge;
        if (start > raw) ::munmap(p, start - raw);
        ::munmap(reinterpret_cast<void*>(start + want), raw + kHuge - start);  // > 0: start < raw + kHuge
        data_ = reinterpret_cast<uint8_t*>(start);
        mapped_ = want;
#ifdef MADV_HUGEPAGE
        ::madvise(data_, mapped_, MADV_HUGEPAGE);  // advice: refused, the pages are 4 KiB ones
#endif
    }
    ~PageBuffer() {
        if (data_) ::munmap(data_, mapped_);
    }
    PageBuffer(const PageBuffer&) = delete;
    PageBuffer& operator=(const PageBuffer&) = delete;

    uint8_t* data() { return data_; }

private:
    uint8_t* data_ = nullptr;
    size_t mapped_ = 0;
};

}  // namespace franken
