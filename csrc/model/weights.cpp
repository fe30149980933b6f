#include "weights.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "../kernels/kernels.h"
#include "../runtime/error.h"

namespace franken {

WeightStore::WeightStore(const Config& c, const std::vector<std::string>& files,
                         const std::vector<TensorSpec>& tensors) {
    for (const auto& f : files) files_.push_back(std::make_unique<MappedFile>(f));
    for (const auto& t : tensors) specs_[t.name] = t;

    const int q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    w_.token_embd = matrix("token_embd.weight", c.vocab_size, c.dim);
    w_.output_norm = vector("output_norm.weight", c.dim);
    w_.output = specs_.count("output.weight") ? matrix("output.weight", c.vocab_size, c.dim) : w_.token_embd;
    for (int l = 0; l < c.n_layers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        Block b;
        b.attn_norm = vector(p + "attn_norm.weight", c.dim);
        b.wq = matrix(p + "attn_q.weight", q_dim, c.dim);
        b.wk = matrix(p + "attn_k.weight", kv_dim, c.dim);
        b.wv = matrix(p + "attn_v.weight", kv_dim, c.dim);
        b.wo = matrix(p + "attn_output.weight", c.dim, q_dim);
        b.ffn_norm = vector(p + "ffn_norm.weight", c.dim);
        b.w_gate = matrix(p + "ffn_gate.weight", c.ffn_dim, c.dim);
        b.w_up = matrix(p + "ffn_up.weight", c.ffn_dim, c.dim);
        b.w_down = matrix(p + "ffn_down.weight", c.dim, c.ffn_dim);
        w_.blocks.push_back(std::move(b));
    }
}

void WeightStore::interleave(const KernelTable& k) {
    // One buffer for every repacked matrix, in the order a token reads them (see PageBuffer); each starts on a
    // cache line.
    std::vector<std::pair<Matrix*, size_t>> todo;  // a matrix, its offset in the buffer
    size_t total = 0;
    auto add = [&](Matrix* m) {
        if (!interleavable(*m, k)) return;
        todo.emplace_back(m, total);
        total += (m->row_stride * m->rows + 63) / 64 * 64;
    };
    for (Block& b : w_.blocks)
        for (Matrix* m : {&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down}) add(m);
    add(&w_.output);
    if (todo.empty()) return;
    packed_ = std::make_unique<PageBuffer>(total);
    const bool tied = w_.token_embd.data == w_.output.data;
    for (const auto& [m, at] : todo) interleave(*m, packed_->data() + at);
    if (tied && w_.output.x8) w_.token_embd = w_.output;  // lookups read the copy: the original stays released
}

bool WeightStore::interleavable(const Matrix& m, const KernelTable& k) {
    return k.runs_interleaved(m.dtype) && !m.x8 && m.rows % kX8 == 0;
}

void WeightStore::interleave(Matrix& m, uint8_t* packed) {
    const size_t group_bytes = m.row_stride * kX8;
    const MappedFile* source = nullptr;
    for (const auto& f : files_)
        if (m.data >= f->data() && m.data < f->data() + f->size()) source = f.get();
    const int nb = m.cols / kQK;
    // The mapped original is released as the copy grows (released pages are read from the file again if touched,
    // as a tied embedding table's lookups do), so the two are never both resident: no peak at load.
    const int groups_per_step = std::max<int>(1, static_cast<int>((1u << 20) / group_bytes));
    for (int g = 0; g < m.rows / kX8; ++g) {
        format_of(m.dtype).repack_x8(m.row(g * kX8), m.row_stride, nb, packed + g * group_bytes);
        if (source && ((g + 1) % groups_per_step == 0 || g + 1 == m.rows / kX8))
            source->release(m.data, (g + 1) * group_bytes);
    }
    m.data = packed;
    m.x8 = true;
}

const uint8_t* WeightStore::bytes_of(const TensorSpec& t, size_t n) {
    if (t.file < 0 || t.file >= static_cast<int>(files_.size()))
        throw Error("tensor " + t.name + ": file index out of range");
    const MappedFile& f = *files_[t.file];
    if (t.offset > f.size() || n > f.size() - t.offset)
        throw Error("tensor " + t.name + ": data runs past the end of " + f.path());
    const uint8_t* p = f.data() + t.offset;
    const FormatInfo& fmt = format_of(static_cast<DType>(t.dtype));
    const size_t align = fmt.quantized() ? 2 : fmt.block_bytes;  // float elements, or the f16 words of a block
    if (reinterpret_cast<uintptr_t>(p) % align) {  // kernels load elements directly: give them an aligned copy
        owned_.emplace_back(p, p + n);
        p = owned_.back().data();
    }
    return p;
}

Matrix WeightStore::matrix(const std::string& name, int rows, int cols) {
    auto it = specs_.find(name);
    if (it == specs_.end()) throw Error("missing tensor " + name);
    const TensorSpec& t = it->second;
    if (!dtype_known(t.dtype)) throw Error("tensor " + name + ": unsupported type id " + std::to_string(t.dtype));
    const DType dt = static_cast<DType>(t.dtype);
    if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols)
        throw Error("tensor " + name + ": shape does not match the hyperparameters (expected " +
                    std::to_string(rows) + " x " + std::to_string(cols) + ")");
    if (cols % format_of(dt).block_elems) throw Error("tensor " + name + ": row length is not a whole number of blocks");
    Matrix m;
    m.dtype = dt;
    m.rows = rows;
    m.cols = cols;
    m.row_stride = row_bytes(dt, cols);
    m.data = bytes_of(t, m.row_stride * static_cast<size_t>(rows));
    return m;
}

std::vector<float> WeightStore::vector(const std::string& name, int n) {
    auto it = specs_.find(name);
    if (it == specs_.end()) throw Error("missing tensor " + name);
    const TensorSpec& t = it->second;
    if (!dtype_known(t.dtype)) throw Error("tensor " + name + ": unsupported type id " + std::to_string(t.dtype));
    const DType dt = static_cast<DType>(t.dtype);
    if (t.shape.size() != 1 || t.shape[0] != n || n % format_of(dt).block_elems)
        throw Error("tensor " + name + ": shape does not match the hyperparameters (expected " + std::to_string(n) + ")");
    // Norm gains are tiny and read by every token: keep them as floats.
    std::vector<float> out(n);
    kernels_by_name("scalar").to_f32(dt, bytes_of(t, row_bytes(dt, n)), out.data(), n);
    return out;
}

int64_t count_nonfinite(DType t, const uint8_t* data, size_t n_bytes) {
    // All exponent bits set marks NaN or infinity: f32 0x7F800000, bf16 0x7F80, f16 0x7C00.
    auto bad16 = [](const uint8_t* p, uint16_t mask) {
        uint16_t w;
        std::memcpy(&w, p, 2);
        return (w & mask) == mask;
    };
    int64_t count = 0;
    if (t == DType::F32) {
        for (size_t i = 0; i + 4 <= n_bytes; i += 4) {
            uint32_t w;
            std::memcpy(&w, data + i, 4);
            count += (w & 0x7F800000u) == 0x7F800000u;
        }
        return count;
    }
    if (t == DType::F16 || t == DType::BF16) {
        const uint16_t mask = t == DType::F16 ? 0x7C00 : 0x7F80;
        for (size_t i = 0; i + 2 <= n_bytes; i += 2) count += bad16(data + i, mask);
        return count;
    }
    const size_t block = format_of(t).block_bytes;
    const int scales = format_of(t).header_halves;  // the scale, and the minimum where the format has one
    const size_t at = static_cast<size_t>(format_of(t).header_at);
    for (size_t b = 0; b + block <= n_bytes; b += block)
        for (int s = 0; s < scales; ++s) count += bad16(data + b + at + 2 * s, 0x7C00);
    return count;
}

}  // namespace franken
