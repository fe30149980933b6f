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

private:
    std::string path_;
    void* addr_ = nullptr;
    size_t size_ = 0;
};

}  // namespace franken
