// A read-only memory mapping of a whole file (RAII). Weights are used in place from it, never copied.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace franken {

class MappedFile {
public:
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return static_cast<const uint8_t*>(addr_); }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }
    // Tells the kernel the pages wholly inside [p, p + n) are not needed (they were copied elsewhere): they leave
    // the process's resident memory, and would be read from the file again if touched.
    void release(const uint8_t* p, size_t n) const;

private:
    std::string path_;
    void* addr_ = nullptr;
    size_t size_ = 0;
};

}  // namespace franken
