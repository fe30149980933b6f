// Byte-level BPE (GPT-2's scheme, as SmolLM and GPT-2 GGUF vocabularies use it): text is cut into pieces by
// GPT-2's split pattern, and each piece's bytes are merged pairwise in the order of the merge list.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace franken {

class ByteLevelBpe {
public:
    // byte_ids[b]: the token spelling the single byte b, or -1 if none (the byte is then dropped from the text). merges: (left, right, merged) token
    // ids in priority order (a later duplicate of a pair replaces the earlier one). isolate_digits: every digit
    // (Rust's is_numeric, as SmolLM's Digits pre-tokenizer) is a piece of its own, before the split pattern runs.
    ByteLevelBpe(const std::vector<int32_t>& byte_ids, const std::vector<int32_t>& merges, bool isolate_digits);

    // Token ids of UTF-8 text (no special tokens: the caller splits those out first).
    std::vector<int32_t> encode(const std::string& text) const;

private:
    struct Merge {
        uint32_t rank;
        int32_t merged;
    };
    static uint64_t key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }
    void encode_piece(const char* p, size_t n, std::vector<int32_t>& out) const;
    void split(const std::string& text, std::vector<std::pair<size_t, size_t>>& pieces) const;

    int32_t byte_ids_[256];
    std::unordered_map<uint64_t, Merge> merges_;
    bool isolate_digits_;
};

}  // namespace franken
