#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../runtime/error.h"

namespace franken {

namespace {

void check_plan_blocks(const std::vector<int>& plan, int n_layers) {
    for (int b : plan)
        if (b < 0 || b >= n_layers) throw Error("layer plan names block " + std::to_string(b) + ", which is not stored");
}

void check_config(Config& c) {
    if (c.n_layers <= 0 || c.dim <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.ffn_dim <= 0 ||
        c.vocab_size <= 0)
        throw Error("model config: sizes must be positive");
    if (c.n_heads % c.n_kv_heads) throw Error("model config: heads must be a multiple of KV heads");
    // Every buffer size below is a product of these: bound them so no product overflows an int.
    const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
    if (c.dim > (1 << 20) || c.ffn_dim > (1 << 22) || c.vocab_size > (1 << 24) || q_dim > (1 << 22) ||
        c.n_layers > 4096)
        throw Error("model config: sizes out of range");
    if (c.head_dim % 2 || static_cast<int>(c.inv_freq.size()) != c.head_dim / 2)
        throw Error("model config: need head_dim/2 RoPE frequencies");
    if (c.n_ctx <= 0 || c.n_ctx > (1 << 22)) throw Error("context size out of range");
    if (c.n_seq <= 0 || c.n_seq > 256) throw Error("number of sequences out of range (1..256)");
    if (c.n_batch <= 0) c.n_batch = 64;
    if (c.n_threads <= 0) c.n_threads = physical_cores();
    if (c.layer_plan.empty())
        for (int l = 0; l < c.n_layers; ++l) c.layer_plan.push_back(l);
    check_plan_blocks(c.layer_plan, c.n_layers);
    const DType kv = static_cast<DType>(c.kv_type);
    if (kv != DType::F32 && kv != DType::F16 && kv != DType::Q8_0) throw Error("KV cache type must be F32, F16 or Q8_0");
    if (kv == DType::Q8_0 && c.head_dim % kQK) throw Error("a Q8_0 KV cache needs a head dim that is a multiple of 32");
}

const KernelTable* pick(const std::string& name) { return name.empty() ? &kernels() : &kernels_by_name(name); }

}  // namespace

Model::Model(Config cfg, const std::vector<std::string>& files, const std::vector<TensorSpec>& tensors,
             const std::string& kernel_name)
    : cfg_((check_config(cfg), std::move(cfg))),
      store_(cfg_, files, tensors),
      w_(store_.weights()),
      kern_(pick(kernel_name)),
      pool_(cfg_.n_threads, cfg_.cpus) {
    const Config& c = cfg_;
    if (c.profile) profile_.enable();
    // Integer kernels read quantized weights fastest interleaved (the float-activation reference path reads rows
    // as stored).
    if (!c.float_activations) store_.interleave(*kern_);
    const size_t kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    kv_type_ = static_cast<DType>(c.kv_type);
    kv_row_bytes_ = row_bytes(kv_type_, static_cast<int64_t>(kv_dim));
    const size_t cache = static_cast<size_t>(c.n_seq) * depth() * c.n_ctx * kv_row_bytes_;
    n_past_.assign(c.n_seq, 0);
    k_cache_ = ZeroedBuffer(cache);
    v_cache_ = ZeroedBuffer(cache);
    const size_t group = static_cast<size_t>(c.n_heads / c.n_kv_heads);
    q_scaled_.resize(pool_.size() * group * c.head_dim);
    fold_.resize(pool_.size() * group * (2 * static_cast<size_t>(c.head_dim) + 4));
    const size_t chunks = (static_cast<size_t>(c.n_ctx) + kKeyChunk - 1) / kKeyChunk;
    partials_.resize(std::min(c.n_batch, kSplitRows) * static_cast<size_t>(c.n_heads) * chunks * (c.head_dim + 2));
    const size_t B = c.n_batch, q_dim = static_cast<size_t>(c.n_heads) * c.head_dim;
    x_.resize(B * c.dim);
    xb_.resize(B * std::max<size_t>(c.dim, q_dim));
    q_.resize(B * q_dim);
    k_.resize(B * kv_dim);
    v_.resize(B * kv_dim);
    att_.resize(B * q_dim);
    hb_.resize(B * c.ffn_dim);
    hb2_.resize(B * c.ffn_dim);
    xq_.resize(B * std::max({c.dim, c.ffn_dim, static_cast<int>(q_dim)}) / kQK + 1);
    scores_.resize(pool_.size() * group * std::min(c.n_ctx, kKeyChunk));
    rows_f32_.resize(static_cast<size_t>(pool_.size()) * std::max({c.dim, c.ffn_dim, static_cast<int>(q_dim)}));
    cos_.resize(B * c.head_dim / 2);
    sin_.resize(B * c.head_dim / 2);
    seq_.resize(B);
    pos_.resize(B);
}

void Model::truncate(int n, int seq) {
    if (seq < 0 || seq >= cfg_.n_seq) throw Error("sequence id " + std::to_string(seq) + " is out of range");
    n_past_[seq] = std::clamp(n, 0, n_past_[seq]);
}

const float* Model::forward_last(const int32_t* tokens, int n) {
    last_logits_.resize(cfg_.vocab_size);
    forward(tokens, n, false, last_logits_.data());
    return last_logits_.data();
}

void Model::check_tokens(const int32_t* tokens, int n) const {
    if (n <= 0) throw Error("no tokens to evaluate");
    if (n > cfg_.n_ctx - n_past_[0])
        throw Error("context is full: " + std::to_string(n_past_[0]) + " + " + std::to_string(n) + " tokens exceed n_ctx = " +
                    std::to_string(cfg_.n_ctx));
    for (int i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= cfg_.vocab_size) throw Error("token id " + std::to_string(tokens[i]) + " is out of range");
}

void Model::forward(const int32_t* tokens, int n, bool all_logits, float* logits) {
    check_tokens(tokens, n);
    for (int done = 0; done < n;) {  // prompt in batches: each weight row is read once per batch, not per token
        const int b = std::min(cfg_.n_batch, n - done);
        const bool last = done + b == n;
        float* out = all_logits ? logits + static_cast<size_t>(done) * cfg_.vocab_size : logits;
        rows_of_sequence0(b, all_logits ? 0 : last ? b - 1 : b);
        forward_batch(tokens + done, b, static_cast<int>(out_rows_.size()), out, cfg_.layer_plan);
        done += b;
    }
}

void Model::rows_of_sequence0(int n, int first_out) {
    out_rows_.clear();
    for (int r = 0; r < n; ++r) {
        seq_[r] = 0;
        pos_[r] = n_past_[0] + r;
        if (r >= first_out) out_rows_.push_back(r);
    }
}

const float* Model::forward_rows(const int32_t* tokens, const int32_t* seqs, int n, const uint8_t* want,
                                 const std::vector<int>* plan) {
    if (n <= 0) throw Error("no tokens to evaluate");
    if (!plan) {
        plan = &cfg_.layer_plan;  // checked at construction
    } else {
        if (plan->empty() || plan->size() > cfg_.layer_plan.size())
            throw Error("a plan runs 1 to " + std::to_string(depth()) + " blocks (the model's depth)");
        check_plan_blocks(*plan, cfg_.n_layers);
    }
    const int V = cfg_.vocab_size;
    std::vector<int> next(n_past_);  // each sequence's next position (checked before anything runs)
    size_t n_want = 0;
    for (int i = 0; i < n; ++i) {
        if (seqs[i] < 0 || seqs[i] >= cfg_.n_seq) throw Error("sequence id " + std::to_string(seqs[i]) + " is out of range");
        if (tokens[i] < 0 || tokens[i] >= V) throw Error("token id " + std::to_string(tokens[i]) + " is out of range");
        if (++next[seqs[i]] > cfg_.n_ctx)
            throw Error("context is full: sequence " + std::to_string(seqs[i]) + " would exceed n_ctx = " + std::to_string(cfg_.n_ctx));
        n_want += want[i] != 0;
    }
    batch_logits_.resize(std::max<size_t>(n_want, 1) * V);
    size_t written = 0;
    for (int done = 0; done < n;) {
        const int b = std::min(cfg_.n_batch, n - done);
        out_rows_.clear();
        next = n_past_;
        for (int r = 0; r < b; ++r) {
            seq_[r] = seqs[done + r];
            pos_[r] = next[seq_[r]]++;
            if (want[done + r]) out_rows_.push_back(r);
        }
        forward_batch(tokens + done, b, static_cast<int>(out_rows_.size()), &batch_logits_[written * V], *plan);
        written += out_rows_.size();
        done += b;
    }
    return batch_logits_.data();
}

void Model::trace(const int32_t* tokens, int n, float* out) {
    check_tokens(tokens, n);
    trace_ = out;
    trace_n_ = n;
    try {
        for (int done = 0; done < n;) {
            const int b = std::min(cfg_.n_batch, n - done);
            trace_row_ = done;
            rows_of_sequence0(b, b);
            forward_batch(tokens + done, b, 0, nullptr, cfg_.layer_plan);
            done += b;
        }
    } catch (...) {
        trace_ = nullptr;
        throw;
    }
    trace_ = nullptr;
}

void Model::record(int point, int n) {
    if (!trace_) return;
    const size_t d = cfg_.dim;
    float* dst = trace_ + (static_cast<size_t>(point) * trace_n_ + trace_row_) * d;
    std::memcpy(dst, x_.data(), n * d * sizeof(float));
}

void Model::score(const int32_t* tokens, int n, float* nll) {
    check_tokens(tokens, n);
    const int V = cfg_.vocab_size;
    batch_logits_.resize(static_cast<size_t>(cfg_.n_batch) * V);
    for (int done = 0; done < n;) {
        const int b = std::min(cfg_.n_batch, n - done);
        rows_of_sequence0(b, 0);
        forward_batch(tokens + done, b, b, batch_logits_.data(), cfg_.layer_plan);
        pool_.parallel_for(b, [&](int begin, int end, int) {
            for (int r = begin; r < end; ++r) {
                const int pos = done + r;
                if (pos + 1 >= n) continue;
                const float* l = &batch_logits_[static_cast<size_t>(r) * V];
                const float mx = *std::max_element(l, l + V);
                double sum = 0;
                for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(l[v] - mx));
                nll[pos] = static_cast<float>(std::log(sum) + mx - l[tokens[pos + 1]]);
            }
        });
        done += b;
    }
}

// One batch of n tokens. Row r of each activation buffer belongs to token tokens[r] of sequence seq_[r] at
// position pos_[r].
void Model::forward_batch(const int32_t* tokens, int n, int n_out, float* logits, const std::vector<int>& plan) {
    const Config& c = cfg_;
    using P = Profile;
    profile_.count_pass(n);
    {
        const P::Scope timed(profile_, P::kEmbed);
        const Matrix& emb = w_.token_embd;
        for (int r = 0; r < n; ++r) {
            if (emb.x8)  // tied to the repacked output matrix
                format_of(emb.dtype).x8_row_to_f32(emb.group(tokens[r] / kX8), c.dim / kQK, tokens[r] % kX8, &x_[r * c.dim]);
            else
                kern_->to_f32(emb.dtype, emb.row(tokens[r]), &x_[r * c.dim], c.dim);
        }

        // The rotation angles of this batch's positions, shared by every block. Float32 throughout, as the reference.
        const int half = c.head_dim / 2;
        for (int r = 0; r < n; ++r)
            for (int i = 0; i < half; ++i) {
                const float angle = static_cast<float>(pos_[r]) * c.inv_freq[i];
                cos_[r * half + i] = std::cos(angle);
                sin_[r * half + i] = std::sin(angle);
            }
    }

    for (int slot = 0; slot < static_cast<int>(plan.size()); ++slot) {
        const Block& b = w_.blocks[plan[slot]];
        record(2 * slot, n);
        // Attention: x += Wo * attend(rope(Wq xn), rope(Wk xn), Wv xn)
        { const P::Scope timed(profile_, P::kNorm); rmsnorm(x_.data(), b.attn_norm, xb_.data(), n); }
        {
            const P::Scope timed(profile_, P::kQKV);
            project(xb_.data(), n, c.dim, {{&b.wq, q_.data()}, {&b.wk, k_.data()}, {&b.wv, v_.data()}}, kRoleQKV);
        }
        {
            const P::Scope timed(profile_, P::kRopeStore);
            each_row(n, [&](int r0, int r1, int) {
                rope(q_.data(), r0, r1, c.n_heads);
                rope(k_.data(), r0, r1, c.n_kv_heads);
                store_kv(slot, r0, r1);
            });
        }
        { const P::Scope timed(profile_, P::kAttention); attention(slot, n); }
        {
            const P::Scope timed(profile_, P::kAttnOut);
            project(att_.data(), n, c.n_heads * c.head_dim, {{&b.wo, xb_.data()}}, kRoleAttnOut);
        }
        { const P::Scope timed(profile_, P::kResidual); add_rows(x_.data(), xb_.data(), n); }
        record(2 * slot + 1, n);

        // Feed-forward (SwiGLU): x += W_down (silu(W_gate xn) * W_up xn)
        { const P::Scope timed(profile_, P::kNorm); rmsnorm(x_.data(), b.ffn_norm, xb_.data(), n); }
        {
            const P::Scope timed(profile_, P::kGateUp);
            project(xb_.data(), n, c.dim, {{&b.w_gate, hb_.data()}, {&b.w_up, hb2_.data()}}, kRoleGateUp);
        }
        {
            const P::Scope timed(profile_, P::kSwiglu);
            each_row(n, [&](int r0, int r1, int) {
                for (size_t at = static_cast<size_t>(r0) * c.ffn_dim; at < static_cast<size_t>(r1) * c.ffn_dim; at += c.ffn_dim)
                    kern_->swiglu(&hb_[at], &hb2_[at], c.ffn_dim);
            });
        }
        { const P::Scope timed(profile_, P::kDown); project(hb_.data(), n, c.ffn_dim, {{&b.w_down, xb_.data()}}, kRoleDown); }
        { const P::Scope timed(profile_, P::kResidual); add_rows(x_.data(), xb_.data(), n); }
    }
    record(2 * depth(), n);
    for (int r = 0; r < n; ++r) n_past_[seq_[r]] = std::max(n_past_[seq_[r]], pos_[r] + 1);

    if (n_out == 0) return;
    // Only the rows asked for go through the (vocab x dim) output matrix, the largest in a small model. They move
    // to the front of x_ (in order, so no row is overwritten before it moves), then are normed and projected.
    const P::Scope timed(profile_, P::kOutput);
    const size_t d = c.dim;
    for (int i = 0; i < n_out; ++i)
        if (out_rows_[i] != i) std::memcpy(&x_[i * d], &x_[out_rows_[i] * d], d * sizeof(float));
    rmsnorm(x_.data(), w_.output_norm, xb_.data(), n_out);
    project(xb_.data(), n_out, c.dim, {{&w_.output, logits}}, kRoleOutput);
}

// Row-wise work (norms, rotations, residuals, activation quantization) of a prompt's rows, split over the threads:
// left on one thread it would leave the others waiting for a sixth of a prompt's time. A decode step's single
// row runs on the calling thread, where waking the pool would cost more than the work.
template <class F>
void Model::each_row(int n_rows, F&& fn) {
    if (n_rows == 1)
        fn(0, 1, 0);
    else
        pool_.parallel_for(n_rows, fn);
}

void Model::rmsnorm(const float* x, const std::vector<float>& gain, float* out, int n_rows) {
    const int d = cfg_.dim;
    each_row(n_rows, [&](int r0, int r1, int) {
        for (int r = r0; r < r1; ++r) {
            const float* xr = x + static_cast<size_t>(r) * d;
            float ss = 0.f;
            for (int i = 0; i < d; ++i) ss += xr[i] * xr[i];
            const float scale = 1.f / std::sqrt(ss / d + cfg_.norm_eps);
            float* o = out + static_cast<size_t>(r) * d;
            for (int i = 0; i < d; ++i) o[i] = gain[i] * (xr[i] * scale);
        }
    });
}

// The residual connection: x += delta, for n_rows rows of dim.
void Model::add_rows(float* x, const float* delta, int n_rows) {
    const size_t d = cfg_.dim;
    each_row(n_rows, [&](int r0, int r1, int) {
        for (size_t i = r0 * d; i < r1 * d; ++i) x[i] += delta[i];
    });
}

// The rows of x as 8-bit blocks, for quantized weights (unless float activations were asked for).
Model::Act Model::activations(const float* x, int n_rows, int cols) {
    Act a{x, nullptr, n_rows, cols};
    if (cfg_.float_activations) return a;
    const int blocks = cols / kQK;  // quantized weights have whole blocks, so cols is a multiple of 32
    each_row(n_rows, [&](int r0, int r1, int) {
        for (int r = r0; r < r1; ++r) kern_->quantize_act(x + static_cast<size_t>(r) * cols, &xq_[r * blocks], cols);
    });
    a.q = xq_.data();
    return a;
}

// Products of several matrices with the same input (Q/K/V; gate/up) in one parallel loop over all their rows:
// one dispatch instead of several, and the threads balance over the group. Threads split the rows in units of
// eight when every matrix allows it, so interleaved groups are never cut.
void Model::project(const float* x, int n_rows, int cols, std::initializer_list<Product> products, int role) {
    int total = 0, unit = kX8;
    bool quantized = false;
    for (const Product& p : products) {
        total += p.w->rows;
        quantized |= format_of(p.w->dtype).quantized();
        if (p.w->rows % kX8) unit = 1;
    }
    if (cfg_.float_act_roles >> role & 1) quantized = false;  // this role's inputs stay in float (see Config)
    const Act act = quantized ? activations(x, n_rows, cols) : Act{x, nullptr, n_rows, cols};
    pool_.parallel_for(total / unit, [&](int begin, int end, int t) {
        begin *= unit;
        end *= unit;
        int base = 0;
        for (const Product& p : products) {
            const int lo = std::max(begin, base), hi = std::min(end, base + p.w->rows);
            if (lo < hi) rows_times(*p.w, act, p.out, lo - base, hi - base, t);
            base += p.w->rows;
        }
    });
}

// out[r][i] = dot(w.row(i), x[r]) for weight rows i in [begin, end) and every activation row r.
void Model::rows_times(const Matrix& w, const Act& x, float* out, int begin, int end, int thread) {
    const int cols = w.cols, rows = w.rows, n_rows = x.n_rows;
    const DotQFn dotq = x.q ? kern_->dotq(w.dtype) : nullptr;
    if (w.x8 && x.q) {  // interleaved, quantized activations: whole groups of eight rows
        const GemmX8Fn gemm = kern_->gemmq_x8(w.dtype);
        gemm(w.group(begin / kX8), (end - begin) / kX8, cols / kQK, x.q, n_rows, out + begin, rows);
    } else if (dotq && n_rows == 1) {  // decode: integer dot products, one per weight row
        for (int i = begin; i < end; ++i) out[i] = dotq(w.row(i), x.q, cols);
    } else if (dotq) {  // prompt: each weight row is decoded once and multiplied with every token
        kern_->gemmq(w.dtype)(w.row(begin), end - begin, w.row_stride, x.q, n_rows, cols, out + begin, rows);
    } else if (n_rows == 1 && !format_of(w.dtype).quantized()) {
        // Float weights, one token: the format's own dot product reads the stored row once. Every table writes the
        // float formats' dot products as dot_f32 over the decoded row, bit for bit (kernel_check holds it), so this
        // gives what the prompt path below gives: a row's result does not depend on its batch.
        const DotFn dot = kern_->dot(w.dtype);
        for (int i = begin; i < end; ++i) out[i] = dot(w.row(i), x.f, cols);
    } else {
        // Float activations: decode each weight row once, reuse it from L1 for every token. A single token of a
        // quantized format takes the same path (not the format's own dot product, whose sums run in another order)
        // so that a row's result does not depend on its batch.
        float* row = &rows_f32_[thread * (rows_f32_.size() / pool_.size())];
        const ToF32Fn to_f32 = (*kern_)[w.dtype].to_f32;
        const DotFn dot_f32 = kern_->dot(DType::F32);
        for (int i = begin; i < end; ++i) {
            if (w.x8)  // an interleaved matrix whose role keeps float inputs: its row decoded from its group
                format_of(w.dtype).x8_row_to_f32(w.group(i / kX8), cols / kQK, i % kX8, row);
            else
                to_f32(w.row(i), row, cols);
            for (int r = 0; r < n_rows; ++r)
                out[static_cast<size_t>(r) * rows + i] = dot_f32(row, x.f + static_cast<size_t>(r) * cols, cols);
        }
    }
}

// Rotates each head's (query or key) vector by its position's angles.
void Model::rope(float* vec, int r0, int r1, int n_heads) {
    const int hd = cfg_.head_dim, half = hd / 2;
    for (int r = r0; r < r1; ++r) {
        const float* cs = &cos_[r * half];
        const float* sn = &sin_[r * half];
        for (int h = 0; h < n_heads; ++h) {
            float* v = vec + (static_cast<size_t>(r) * n_heads + h) * hd;
            for (int i = 0; i < half; ++i) {
                // GGUF stores q/k permuted so that rotated pairs are adjacent; HF pairs i with i + half.
                const int a = cfg_.rope_interleaved ? 2 * i : i;
                const int b = cfg_.rope_interleaved ? 2 * i + 1 : i + half;
                const float x0 = v[a], x1 = v[b];
                v[a] = x0 * cs[i] - x1 * sn[i];
                v[b] = x0 * sn[i] + x1 * cs[i];
            }
        }
    }
}

// Writes rows [r0, r1) of the batch's keys and values (k_, v_) to their sequences' caches of block slot `slot`, at
// their positions, in the cache's type.
void Model::store_kv(int slot, int r0, int r1) {
    const int kv_dim = cfg_.n_kv_heads * cfg_.head_dim;
    for (int r = r0; r < r1; ++r) {
        const size_t at = kv_at(seq_[r], slot, pos_[r]);
        for (auto [src, cache] : {std::pair{&k_, &k_cache_}, std::pair{&v_, &v_cache_}}) {
            const float* x = src->data() + static_cast<size_t>(r) * kv_dim;
            uint8_t* dst = cache->data() + at;
            if (kv_type_ == DType::F32) {
                std::memcpy(dst, x, sizeof(float) * kv_dim);
            } else if (kv_type_ == DType::F16) {
                for (int i = 0; i < kv_dim; ++i) {
                    const uint16_t h = f32_to_fp16(x[i]);
                    std::memcpy(dst + 2 * i, &h, 2);
                }
            } else {
                quantize_row_q8_0(x, reinterpret_cast<BlockQ8_0*>(dst), kv_dim);
            }
        }
    }
}

// Causal attention of the batch's queries over the cache of block slot `slot`; GQA: query head h reads
// KV head h / group. A task is one row's group of query heads with their KV head, so each cached key and value is
// read and converted once for the whole group (kv_scores, kv_mix); when that gives the threads too few tasks (a
// decode step of a model with few KV heads), the group is split into the largest equal parts that give enough.
// One chunk of a row's keys, [k0, k1), for nq queries q (scaled) of one KV head: each query's scores' maximum m[i],
// the sum l[i] of exp(score - m[i]), and o[i] = that exp-weighted sum of the values, not yet divided.
void Model::attend_chunk(const uint8_t* kc, const uint8_t* vc, int k0, int k1, const float* q, int nq, float* scores,
                         float* m, float* l, float* o) const {
    const int n = k1 - k0, hd = cfg_.head_dim;
    const size_t at = static_cast<size_t>(k0) * kv_row_bytes_;
    kern_->kv_scores(kv_type_, kc + at, kv_row_bytes_, n, q, nq, hd, scores, n);
    for (int i = 0; i < nq; ++i) {
        float* si = scores + static_cast<size_t>(i) * n;
        m[i] = *std::max_element(si, si + n);
        l[i] = kern_->exp_sum(si, n, m[i]);
    }
    kern_->kv_mix(kv_type_, vc + at, kv_row_bytes_, n, scores, n, nq, hd, o);
}

namespace {

// Online softmax: folds a chunk's (m, l, o) into one query's running (M, L, O), the chunks in key order. One
// out-of-line function, so that both ways attention() folds give the same bits.
[[gnu::noinline]] void fold_chunk(float& M, float& L, float* O, float m, float l, const float* o, int hd, bool first) {
    if (first) {
        M = m, L = l;
        std::copy(o, o + hd, O);
        return;
    }
    const float top = std::max(M, m), a = std::exp(M - top), b = std::exp(m - top);
    for (int d = 0; d < hd; ++d) O[d] = O[d] * a + o[d] * b;
    L = L * a + l * b;
    M = top;
}

[[gnu::noinline]] void finish_softmax(const float* O, float L, float* out, int hd) {
    const float inv = 1.f / L;  // the softmax's denominator, applied once to the sum
    for (int d = 0; d < hd; ++d) out[d] = O[d] * inv;
}

}  // namespace

// Attention of n_rows rows over their sequences' caches at block `slot`. A row's keys are taken in chunks of
// kKeyChunk, each chunk's softmax kept apart (its maximum, sum and weighted values) and the chunks folded in key
// order. Rows enough to keep every thread busy (a prompt) run one task per row and KV head, folding as they go; a
// few rows (decoding) also split their keys, the chunks running in parallel and folded after (flash-decoding):
// a long context then spreads over the threads even though a small model has only a few KV heads. Both ways do the
// same arithmetic, so a row's result never depends on its batch; below kKeyChunk keys it is the plain softmax.
void Model::attention(int slot, int n_rows) {
    const Config& c = cfg_;
    const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
    int per_task = group;
    while (per_task > 1 && (group % per_task || n_rows * (c.n_heads / per_task) < pool_.size())) --per_task;
    const int tasks_per_row = c.n_heads / per_task;
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));
    auto chunks_of = [&](int r) { return (pos_[r] + kKeyChunk) / kKeyChunk; };  // pos_[r] + 1 keys
    int most = 0;
    for (int r = 0; r < n_rows; ++r) most = std::max(most, chunks_of(r));
    const bool split = n_rows <= kSplitRows && most > 1;
    const size_t fold_per_thread = static_cast<size_t>(group) * (2 * hd + 4);

    // A task's queries (heads h0.. of row r, adjacent in q_), scaled by 1/sqrt(hd) once instead of every score.
    auto scaled_queries = [&](int r, int h0, int t) {
        float* q = &q_scaled_[static_cast<size_t>(t) * group * hd];
        const float* q_in = &q_[(static_cast<size_t>(r) * c.n_heads + h0) * hd];
        for (int i = 0; i < per_task * hd; ++i) q[i] = q_in[i] * scale;
        return q;
    };
    auto cache_of = [&](int r, int h0, const ZeroedBuffer& cache) {
        return &cache[kv_at(seq_[r], slot, 0)] + row_bytes(kv_type_, static_cast<int64_t>(h0 / group) * hd);
    };

    if (!split) {
        pool_.parallel_for(n_rows * tasks_per_row, [&](int begin, int end, int t) {
            float* scores = &scores_[static_cast<size_t>(t) * group * std::min(c.n_ctx, kKeyChunk)];
            float* f = &fold_[t * fold_per_thread];
            float *o = f, *O = f + group * hd, *m = O + group * hd, *l = m + group, *M = l + group, *L = M + group;
            for (int task = begin; task < end; ++task) {
                const int r = task / tasks_per_row, h0 = task % tasks_per_row * per_task;
                const float* q = scaled_queries(r, h0, t);
                const uint8_t *kc = cache_of(r, h0, k_cache_), *vc = cache_of(r, h0, v_cache_);
                const int n_keys = pos_[r] + 1;  // causal: its own sequence's keys up to its own position
                for (int ch = 0; ch * kKeyChunk < n_keys; ++ch) {
                    attend_chunk(kc, vc, ch * kKeyChunk, std::min(n_keys, (ch + 1) * kKeyChunk), q, per_task, scores,
                                 m, l, o);
                    for (int i = 0; i < per_task; ++i)
                        fold_chunk(M[i], L[i], O + i * hd, m[i], l[i], o + i * hd, hd, ch == 0);
                }
                float* out = &att_[(static_cast<size_t>(r) * c.n_heads + h0) * hd];
                for (int i = 0; i < per_task; ++i) finish_softmax(O + i * hd, L[i], out + i * hd, hd);
            }
        });
        return;
    }

    // Split: tasks (row, KV-head task, chunk), each chunk's (m, l, o) kept in partials_ at
    // [((row * n_heads + head) * most + chunk) * (hd + 2)]: o, then m, then l.
    const size_t stride = hd + 2;
    auto partial = [&](int r, int h, int ch) {
        return &partials_[((static_cast<size_t>(r) * c.n_heads + h) * most + ch) * stride];
    };
    const int per_row = tasks_per_row * most;  // some tasks of a shorter row have no keys and do nothing
    pool_.parallel_for(n_rows * per_row, [&](int begin, int end, int t) {
        float* scores = &scores_[static_cast<size_t>(t) * group * std::min(c.n_ctx, kKeyChunk)];
        float* f = &fold_[t * fold_per_thread];
        float *o = f, *m = f + 2 * group * hd, *l = m + group;
        for (int task = begin; task < end; ++task) {
            const int r = task / per_row, h0 = task % per_row / most * per_task, ch = task % most;
            const int n_keys = pos_[r] + 1;
            if (ch * kKeyChunk >= n_keys) continue;
            const float* q = scaled_queries(r, h0, t);
            attend_chunk(cache_of(r, h0, k_cache_), cache_of(r, h0, v_cache_), ch * kKeyChunk,
                         std::min(n_keys, (ch + 1) * kKeyChunk), q, per_task, scores, m, l, o);
            for (int i = 0; i < per_task; ++i) {
                float* dst = partial(r, h0 + i, ch);
                std::copy(o + i * hd, o + (i + 1) * hd, dst);
                dst[hd] = m[i];
                dst[hd + 1] = l[i];
            }
        }
    });
    // The fold, on this thread: a few rows' heads times their chunks, a few microseconds (a hand-off would cost as
    // much).
    std::vector<float>& O = fold_;  // thread 0's scratch is free now
    for (int r = 0; r < n_rows; ++r)
        for (int h = 0; h < c.n_heads; ++h) {
            float M = 0.f, L = 0.f;
            for (int ch = 0; ch < chunks_of(r); ++ch) {
                const float* p = partial(r, h, ch);
                fold_chunk(M, L, O.data(), p[hd], p[hd + 1], p, hd, ch == 0);
            }
            finish_softmax(O.data(), L, &att_[(static_cast<size_t>(r) * c.n_heads + h) * hd], hd);
        }
}

}  // namespace franken
