// The LLaMA forward pass over a KV cache. One Model owns its mapped weights, cache, scratch and threads.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "../kernels/kernels.h"
#include "../runtime/thread_pool.h"
#include "../runtime/zeroed_buffer.h"
#include "profile.h"
#include "weights.h"

namespace franken {

class Model {
public:
    // kernel_name: "" picks the best path for this CPU (or FRANKEN_KERNELS).
    Model(Config cfg, const std::vector<std::string>& files, const std::vector<TensorSpec>& tensors,
          const std::string& kernel_name = "");

    // Runs `n` tokens of sequence 0 at positions n_past() .. n_past()+n-1 and appends them to its KV cache.
    // Writes logits to `logits`: n rows of vocab_size if all_logits, else only the last token's row.
    void forward(const int32_t* tokens, int n, bool all_logits, float* logits);
    // One pass over the weights for rows of several sequences (a server's streams decoding together, or a prompt's
    // chunk beside them): row i appends tokens[i] to sequence seqs[i], at that sequence's next position (rows of one
    // sequence in order). For each row with want[i] != 0, in order, one row of logits goes to the model's buffer,
    // returned. A row's logits do not depend on the other rows of its batch: every kernel on this path computes
    // each activation row with the same operations in the same order whatever the batch (tests hold this).
    // `plan`: the blocks to run instead of the configured plan, no deeper than it (a shallower plan of the same
    // weights drafts tokens for speculative decoding; its sequence's cache fills the first plan->size() slots).
    const float* forward_rows(const int32_t* tokens, const int32_t* seqs, int n, const uint8_t* want,
                              const std::vector<int>* plan = nullptr);
    // forward() for the last token's logits only, into a buffer the model owns (the decode loop allocates nothing).
    const float* forward_last(const int32_t* tokens, int n);

    // Runs `n` tokens like forward() and writes, for each position i < n-1, the negative log-likelihood of
    // tokens[i+1]: perplexity without handing n x vocab logits to the caller.
    void score(const int32_t* tokens, int n, float* nll);

    // Runs `n` tokens like forward() (no logits) and records the residual stream: for each executed block s,
    // trace[2s] = its input and trace[2s+1] = the residual after its attention; trace[2*depth] = the final
    // residual before the output norm. `trace` holds (2*depth+1) x n x dim floats. For layer analysis and healing.
    void trace(const int32_t* tokens, int n, float* trace);

    // fn(begin, end, thread) over [0, n) on the model's threads (work between passes, such as drawing the tokens of
    // a batch's rows with their own samplers).
    template <class F>
    void parallel_for(int n, F&& fn) { pool_.parallel_for(n, std::forward<F>(fn)); }

    int n_past(int seq = 0) const { return n_past_.at(seq); }
    void truncate(int n, int seq = 0);  // forget sequence seq's cached positions >= n
    int n_seq() const { return cfg_.n_seq; }
    const Config& config() const { return cfg_; }
    const char* kernel_name() const { return kern_->name; }
    int depth() const { return static_cast<int>(cfg_.layer_plan.size()); }
    size_t kv_cache_bytes() const { return k_cache_.size() + v_cache_.size(); }
    // With Config::profile: time per stage of the forward passes so far, and the thread-pool hand-offs.
    std::string profile_report() const { return profile_.report(pool_.handoffs()); }

private:
    // The input of a group of matrix products: float rows and, when a quantized weight will read them,
    // the same rows as 8-bit blocks (quantized once, shared by Q/K/V or by gate/up).
    struct Act {
        const float* f;
        const BlockQ8A* q;
        int n_rows, cols;
    };
    struct Product {
        const Matrix* w;
        float* out;
    };
    Act activations(const float* x, int n_rows, int cols);
    // Which matrices a product group is (bit positions of Config::float_act_roles).
    enum Role { kRoleQKV, kRoleAttnOut, kRoleGateUp, kRoleDown, kRoleOutput };
    void project(const float* x, int n_rows, int cols, std::initializer_list<Product> products, int role);
    void rows_times(const Matrix& w, const Act& x, float* out, int begin, int end, int thread);
    void check_tokens(const int32_t* tokens, int n) const;
    // One batch of n <= n_batch rows; row r is token tokens[r] of sequence seq_[r] at position pos_[r]. Logits of
    // the rows listed in out_rows_ (n_out of them) go to `logits`, one row each.
    void forward_batch(const int32_t* tokens, int n, int n_out, float* logits, const std::vector<int>& plan);
    // seq_ and pos_ for n rows appended to sequence 0; out_rows_: rows first_out.. (n: none) give logits
    void rows_of_sequence0(int n, int first_out);
    template <class F>
    void each_row(int n_rows, F&& fn);
    void rmsnorm(const float* x, const std::vector<float>& gain, float* out, int n_rows);
    void add_rows(float* x, const float* delta, int n_rows);
    void rope(float* vec, int r0, int r1, int n_heads);  // rows [r0, r1); angles of the batch: cos_, sin_
    void attention(int slot, int n_rows);
    void attend_chunk(const uint8_t* kc, const uint8_t* vc, int k0, int k1, const float* q, int nq, float* scores,
                      float* m, float* l, float* o) const;
    // Attention takes a row's keys in chunks of this many (see attention()); batches of at most kSplitRows rows
    // (decoding) run a row's chunks in parallel.
    static constexpr int kKeyChunk = 256;
    static constexpr int kSplitRows = 8;

    Config cfg_;
    WeightStore store_;
    const Weights& w_;
    const KernelTable* kern_;
    ThreadPool pool_;
    Profile profile_;
    std::vector<int> n_past_;  // per sequence: cached positions
    // Set only during trace(): where forward_batch copies the residual stream, and the row of its first token.
    float* trace_ = nullptr;
    int trace_n_ = 0, trace_row_ = 0;
    void record(int point, int n);

    void store_kv(int slot, int r0, int r1);
    size_t kv_at(int seq, int slot, int pos) const {  // byte offset of a cache row
        return ((static_cast<size_t>(seq) * depth() + slot) * cfg_.n_ctx + pos) * kv_row_bytes_;
    }

    // KV cache: per sequence, per executed block (a repeated block has a cache per repeat), n_ctx rows of kv_dim
    // values, each row stored as kv_type.
    DType kv_type_;
    size_t kv_row_bytes_;
    ZeroedBuffer k_cache_, v_cache_;
    std::vector<float> q_scaled_;  // [n_threads][group][head_dim] a task's queries, scaled
    std::vector<float> fold_;      // [n_threads][group][2 head_dim + 4] a chunk's softmax and the running fold
    std::vector<float> partials_;  // [kSplitRows][n_heads][chunks][head_dim + 2] split chunks' (o, m, l)
    // Activations for one batch of n_batch tokens.
    std::vector<float> x_, xb_, q_, k_, v_, att_, hb_, hb2_;
    std::vector<BlockQ8A> xq_;    // quantized activations of one Act
    std::vector<float> scores_;   // [n_threads][group][kKeyChunk] a chunk's attention scores
    std::vector<float> rows_f32_; // [n_threads][max cols] a dequantized weight row, for matrix-matrix steps
    std::vector<float> cos_, sin_; // [n_batch][head_dim/2] rotation of the batch's positions
    std::vector<int> seq_, pos_;   // [n_batch] each row's sequence and position
    std::vector<int> out_rows_;    // rows whose logits are asked for, in order
    std::vector<float> batch_logits_; // [n_batch][vocab], for score()
    std::vector<float> last_logits_;  // [vocab], for forward_last()
};

}  // namespace franken
