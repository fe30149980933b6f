#include "bpe.h"

#include <algorithm>
#include <functional>
#include <queue>

#include "../runtime/error.h"
#include "unicode_classes.h"

namespace franken {

namespace {

// The classes as the `tokenizers` library's regex engine has them (tools/gen_unicode_classes.py measures them):
// where the two disagree on a character, the tokens differ.
template <size_t N>
bool in(const CodeRange (&table)[N], uint32_t cp) {
    const CodeRange* it = std::upper_bound(table, table + N, cp, [](uint32_t c, const CodeRange& r) { return c < r.first; });
    return it != table && cp <= (it - 1)->last;
}

bool is_letter(uint32_t cp) { return cp < 0x80 ? ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') : in(kLetters, cp); }
bool is_number(uint32_t cp) { return cp < 0x80 ? (cp >= '0' && cp <= '9') : in(kNumbers, cp); }
// What SmolLM's Digits pre-tokenizer isolates (Rust's char::is_numeric): nearly \p{N}, but a few more characters.
bool is_isolated_digit(uint32_t cp) { return is_number(cp) || (cp >= 0x80 && in(kDigitsBeyondNumbers, cp)); }
bool is_space(uint32_t cp) { return cp < 0x80 ? (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) : in(kSpaces, cp); }

// A code point of valid UTF-8 (Python's str encodes to nothing else) and its byte offset.
struct Char {
    uint32_t cp;
    uint32_t at;  // texts are limited to 4 GiB, so that a character costs 8 bytes here
};

std::vector<Char> decode_utf8(const char* s, size_t n) {
    if (n >= (size_t(1) << 32)) throw Error("text too long to tokenize (4 GiB or more)");
    std::vector<Char> out;
    out.reserve(n);
    for (size_t i = 0; i < n;) {
        const auto b = static_cast<unsigned char>(s[i]);
        const int len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        if (i + len > n) throw Error("text is not valid UTF-8");
        uint32_t cp = len == 1 ? b : b & (0x3F >> (len - 1));
        for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
        out.push_back({cp, static_cast<uint32_t>(i)});
        i += len;
    }
    return out;
}

enum Kind { kLetter, kNumber, kSpace, kOther };

Kind kind_of(uint32_t cp) {
    return is_letter(cp) ? kLetter : is_number(cp) ? kNumber : is_space(cp) ? kSpace : kOther;
}

// GPT-2's split pattern, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+, over the
// characters [begin, end): the length in characters of the match at i, alternatives tried in the pattern's order.
size_t match_at(const std::vector<Char>& c, size_t i, size_t end) {
    if (c[i].cp == '\'' && i + 1 < end) {
        const uint32_t a = c[i + 1].cp, b = i + 2 < end ? c[i + 2].cp : 0;
        if (a == 's' || a == 't') return 2;
        if ((a == 'r' || a == 'v') && b == 'e') return 3;
        if (a == 'm') return 2;
        if (a == 'l' && b == 'l') return 3;
        if (a == 'd') return 2;
    }
    const size_t j = c[i].cp == ' ' && i + 1 < end ? i + 1 : i;  // the optional leading space
    const Kind k = kind_of(c[j].cp);
    if (k != kSpace) {  // a run of letters, of numbers, or of other characters
        size_t e = j + 1;
        while (e < end && kind_of(c[e].cp) == k) ++e;
        return e - i;
    }
    size_t e = i;  // whitespace: all of it at the end, else all but the last, which then prefixes what follows
    while (e < end && is_space(c[e].cp)) ++e;
    if (e == end || e - i == 1) return e - i;
    return e - i - 1;
}

}  // namespace

ByteLevelBpe::ByteLevelBpe(const std::vector<int32_t>& byte_ids, const std::vector<int32_t>& merges,
                           bool isolate_digits)
    : isolate_digits_(isolate_digits) {
    if (byte_ids.size() != 256) throw Error("byte-level BPE needs the token of each of the 256 bytes (or -1)");
    std::copy(byte_ids.begin(), byte_ids.end(), byte_ids_);
    if (merges.size() % 3) throw Error("merges must be (left, right, merged) triples");
    merges_.reserve(merges.size() / 3);
    for (size_t r = 0; r < merges.size() / 3; ++r)
        merges_[key(merges[3 * r], merges[3 * r + 1])] = Merge{static_cast<uint32_t>(r), merges[3 * r + 2]};
}

void ByteLevelBpe::split(const std::string& text, std::vector<std::pair<size_t, size_t>>& pieces) const {
    const std::vector<Char> c = decode_utf8(text.data(), text.size());
    auto byte_at = [&](size_t i) { return i < c.size() ? c[i].at : text.size(); };
    auto scan = [&](size_t begin, size_t end) {
        for (size_t i = begin; i < end;) {
            const size_t len = match_at(c, i, end);
            pieces.emplace_back(byte_at(i), byte_at(i + len) - byte_at(i));
            i += len;
        }
    };
    if (!isolate_digits_) return scan(0, c.size());
    size_t begin = 0;  // digits first: each number character alone, the pattern within the text between them
    for (size_t i = 0; i < c.size(); ++i)
        if (is_isolated_digit(c[i].cp)) {
            scan(begin, i);
            pieces.emplace_back(byte_at(i), byte_at(i + 1) - byte_at(i));
            begin = i + 1;
        }
    scan(begin, c.size());
}

// The bytes of one piece, merged: repeatedly the adjacent pair of lowest rank (leftmost among equals), with a
// heap of candidate merges whose stale entries (a side already merged away) are skipped when popped.
void ByteLevelBpe::encode_piece(const char* p, size_t n, std::vector<int32_t>& out) const {
    struct Sym {
        int32_t id;
        int prev, next;  // -1: none
        bool alive;
    };
    std::vector<Sym> s;
    s.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        const int32_t id = byte_ids_[static_cast<unsigned char>(p[i])];
        if (id < 0) continue;  // a byte without a token is dropped (tokenizers' BPE without an unknown token)
        const int at = static_cast<int>(s.size());
        s.push_back({id, at - 1, at + 1, true});
    }
    if (s.empty()) return;
    s.back().next = -1;
    n = s.size();
    struct Cand {
        uint32_t rank;
        int pos;
        int32_t merged;
        bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto consider = [&](int pos) {
        if (pos < 0 || s[pos].next < 0) return;
        const auto it = merges_.find(key(s[pos].id, s[s[pos].next].id));
        if (it != merges_.end()) heap.push({it->second.rank, pos, it->second.merged});
    };
    for (size_t i = 0; i + 1 < n; ++i) consider(static_cast<int>(i));
    while (!heap.empty()) {
        const Cand c = heap.top();
        heap.pop();
        Sym& a = s[c.pos];
        if (!a.alive || a.next < 0) continue;
        const auto it = merges_.find(key(a.id, s[a.next].id));
        if (it == merges_.end() || it->second.merged != c.merged || it->second.rank != c.rank) continue;  // stale
        Sym& b = s[a.next];
        a.id = c.merged;
        b.alive = false;
        a.next = b.next;
        if (b.next >= 0) s[b.next].prev = c.pos;
        consider(a.prev);
        consider(c.pos);
    }
    for (int i = 0; i >= 0; i = s[i].next) out.push_back(s[i].id);
}

std::vector<int32_t> ByteLevelBpe::encode(const std::string& text) const {
    std::vector<std::pair<size_t, size_t>> pieces;
    split(text, pieces);
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 1);
    for (const auto& [at, len] : pieces) encode_piece(text.data() + at, len, out);
    return out;
}

}  // namespace franken
