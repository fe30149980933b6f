// Zero-filled memory that becomes resident only where it is written (RAII).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace franken {

// A KV cache is sized for the whole context but filled a token at a time. std::vector would write every byte at
// construction, making all of it resident at once; calloc takes a large block straight from fresh (zero) pages
// of the kernel, so a generation costs only the pages its tokens have filled.
class ZeroedBuffer {
public:
    ZeroedBuffer() = default;
    explicit ZeroedBuffer(size_t n) : data_(static_cast<uint8_t*>(std::calloc(n ? n : 1, 1))), size_(n) {
        if (!data_) throw std::bad_alloc();
    }
    uint8_t* data() { return data_.get(); }
    const uint8_t* data() const { return data_.get(); }
    size_t size() const { return size_; }
    uint8_t& operator[](size_t i) { return data_.get()[i]; }
    const uint8_t& operator[](size_t i) const { return data_.get()[i]; }

private:
    struct Free {
        void operator()(uint8_t* p) const { std::free(p); }
    };
    std::unique_ptr<uint8_t, Free> data_;
    size_t size_ = 0;
};

}  // namespace franken
