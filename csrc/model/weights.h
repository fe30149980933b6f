// The model's parts as views into the mapped files: the structs name what the LLaMA forward pass reads.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../kernels/kernels.h"
#include "../runtime/mapped_file.h"
#include "../runtime/page_buffer.h"

namespace franken {

// Hyperparameters the forward pass needs (the Python side reads them from config.json or GGUF metadata).
struct Config {
    int n_layers = 0;  // stored decoder blocks
    int dim = 0;
    int n_heads = 0;
    int n_kv_heads = 0;
    int head_dim = 0;
    int ffn_dim = 0;
    int vocab_size = 0;
    float norm_eps = 1e-5f;
    bool rope_interleaved = true;   // GGUF pairs dims (2i, 2i+1); Hugging Face pairs (i, i + head_dim/2)
    std::vector<float> inv_freq;    // head_dim/2 RoPE frequencies, any scaling already applied
    std::vector<int> layer_plan;    // stored block run at each depth; empty means 0..n_layers-1
    int n_ctx = 2048;               // KV cache capacity in tokens, per sequence
    int n_seq = 1;                  // independent sequences (a server's slots), each with its own KV cache
    int n_batch = 64;               // prompt tokens processed per matrix-matrix step
    int n_threads = 0;              // 0: physical cores
    std::vector<int> cpus;          // CPU of each thread (thread t on cpus[t % size]); empty: not pinned
    // Quantized weights multiply 8-bit activations (integer kernels) unless this asks for float activations,
    // the reference-precision path that matches a float implementation to ~1e-5.
    bool float_activations = false;
    // Per role, float inputs to the integer path's matrices (bit 0 Q/K/V, 1 attention output, 2 gate/up, 3 down,
    // 4 the output matrix): for measuring which matrices' inputs are sensitive to 8-bit rounding. Default none.
    int float_act_roles = 0;
    // Storage of the KV cache: F32 (reference precision), F16 (default) or Q8_0 (half of F16's memory).
    int kv_type = static_cast<int>(DType::F16);
    // Time each stage of the forward pass (Model::profile_report; FRANKEN_PROFILE=1 in the Python API).
    bool profile = false;
};

// Where one tensor's bytes are: file index, byte offset, type and shape (outermost first).
struct TensorSpec {
    std::string name;
    int file = 0;
    uint64_t offset = 0;
    int dtype = 0;
    std::vector<int64_t> shape;
};

// A 2-D weight: `rows` rows of `cols` elements, each row stored contiguously in its format.
// Or, when `x8` is set (quantized rows repacked at load for the kernels, see BlockQ4_0x8), rows/8 groups of eight
// interleaved rows; row() is then meaningless and group() gives group g.
struct Matrix {
    DType dtype = DType::F32;
    int rows = 0, cols = 0;
    const uint8_t* data = nullptr;
    size_t row_stride = 0;
    bool x8 = false;
    const uint8_t* row(int r) const { return data + static_cast<size_t>(r) * row_stride; }
    const void* group(int g) const { return data + static_cast<size_t>(g) * kX8 * row_stride; }
};

struct Block {
    std::vector<float> attn_norm, ffn_norm;
    Matrix wq, wk, wv, wo;          // attention projections
    Matrix w_gate, w_up, w_down;    // SwiGLU feed-forward
};

struct Weights {
    Matrix token_embd;
    std::vector<float> output_norm;
    Matrix output;                  // == token_embd when embeddings are tied
    std::vector<Block> blocks;
};

// Maps the files and builds the views, checking every tensor's bounds, type and shape first.
class WeightStore {
public:
    WeightStore(const Config& cfg, const std::vector<std::string>& files, const std::vector<TensorSpec>& tensors);
    const Weights& weights() const { return w_; }
    // Repacks every quantized matrix whose rows come in whole groups of eight into the interleaved layout, for
    // kernel tables that have it, releasing the mapped original: the same bytes, resident once. The output
    // matrix is repacked apart from the embedding table it may share, whose rows are looked up one at a time.
    void interleave(const KernelTable& k);

private:
    Matrix matrix(const std::string& name, int rows, int cols);
    std::vector<float> vector(const std::string& name, int n);
    const uint8_t* bytes_of(const TensorSpec& t, size_t n);

    std::vector<std::unique_ptr<MappedFile>> files_;
    std::map<std::string, TensorSpec> specs_;
    static bool interleavable(const Matrix& m, const KernelTable& k);
    void interleave(Matrix& m, uint8_t* packed);

    std::vector<std::vector<uint8_t>> owned_;  // copies of misaligned tensors
    std::unique_ptr<PageBuffer> packed_;       // the repacked matrices
    Weights w_;
};

// How many values (float types) or block scales and minimums (block types) in `n_bytes` of `t` are NaN or
// infinite. The packed integers of a block cannot be, so only its f16 header words are read.
int64_t count_nonfinite(DType t, const uint8_t* data, size_t n_bytes);

}  // namespace franken
