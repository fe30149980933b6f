// The model and sampler end to end without Python, for sanitizer builds (tools/sanitize.sh): a random tiny LLaMA is
// written to a temporary file in each weight type, then every kernel table runs a full-context generation through
// the KV cache, a plan with a repeated block, the batched scoring and trace paths, and the error paths a caller can
// reach. AddressSanitizer / UndefinedBehaviorSanitizer catch bad memory and arithmetic, LeakSanitizer leaks at exit.
// Prints one line per case and "N passed, N failed"; exits non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "model/model.h"
#include "model/sampler.h"
#include "runtime/error.h"

using namespace franken;

namespace {

int passed = 0, failed = 0;

void check(bool ok, const std::string& what) {
    (ok ? passed : failed)++;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
}

// Expects `f` to throw franken::Error (a caller's mistake must be an error, not a crash).
void expect_error(const std::function<void()>& f, const std::string& what) {
    try {
        f();
        check(false, what + " (no error)");
    } catch (const Error&) {
        check(true, what);
    }
}

struct TinyModel {
    Config cfg;
    std::string path;
    std::vector<TensorSpec> specs;
};

// Random weights of type `t` for every tensor the loader asks for, appended to one file.
TinyModel write_tiny(const std::string& path, DType t, std::mt19937& rng) {
    TinyModel m;
    Config& c = m.cfg;
    c.n_layers = 3;
    c.dim = 64;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 32;
    c.ffn_dim = 96;
    c.vocab_size = 80;
    c.n_ctx = 96;
    c.n_batch = 16;  // small, so prompts span several batches
    c.n_threads = 2;
    for (int i = 0; i < c.head_dim / 2; ++i) c.inv_freq.push_back(std::pow(10000.f, -2.f * i / c.head_dim));
    m.path = path;

    std::ofstream out(path, std::ios::binary);
    std::normal_distribution<float> normal(0.f, 0.3f);
    uint64_t offset = 0;
    auto add = [&](const std::string& name, std::vector<int64_t> shape, DType dt) {
        const int64_t cols = shape.back(), rows = shape.size() == 2 ? shape[0] : 1;
        std::vector<float> row(cols);
        std::vector<uint8_t> bytes;
        for (int64_t r = 0; r < rows; ++r) {
            for (auto& v : row) v = shape.size() == 1 ? 1.f + normal(rng) * 0.1f : normal(rng);
            std::vector<uint8_t> enc(row_bytes(dt, cols));
            if (dt == DType::F32) {
                std::memcpy(enc.data(), row.data(), enc.size());
            } else if (dt == DType::Q8_0) {
                quantize_row_q8_0(row.data(), reinterpret_cast<BlockQ8_0*>(enc.data()), static_cast<int>(cols));
            } else if (dt == DType::Q4_1) {  // d = (max - min) / 15, m = min
                auto* b = reinterpret_cast<BlockQ4_1*>(enc.data());
                for (int64_t k = 0; k < cols / kQK; ++k) {
                    const float* x = &row[k * kQK];
                    const float lo = *std::min_element(x, x + kQK), hi = *std::max_element(x, x + kQK);
                    const float d = (hi - lo) / 15.f, id = d ? 1.f / d : 0.f;
                    b[k].d = f32_to_fp16(d);
                    b[k].m = f32_to_fp16(lo);
                    auto code = [&](int j) { return std::clamp(static_cast<int>((x[j] - lo) * id + 0.5f), 0, 15); };
                    for (int j = 0; j < kQK / 2; ++j) b[k].qs[j] = static_cast<uint8_t>(code(j) | (code(j + 16) << 4));
                }
            } else if (dt == DType::Q3_0) {  // d = max|x| / 4, codes q - 4 in -4..3, in the format's bit planes
                auto* b = reinterpret_cast<BlockQ3_0*>(enc.data());
                for (int64_t k = 0; k < cols / kQK; ++k) {
                    const float* x = &row[k * kQK];
                    float amax = 0.f;
                    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
                    const float d = amax / 4.f, id = d ? 1.f / d : 0.f;
                    b[k] = BlockQ3_0{};
                    b[k].d = f32_to_fp16(d);
                    for (int j = 0; j < kQK; ++j) {
                        const int q = std::clamp(static_cast<int>(std::lround(x[j] * id)) + 4, 0, 7);
                        b[k].qs[j % 8] |= static_cast<uint8_t>((q & 3) << (2 * (j / 8)));
                        b[k].qh[j / 8] |= static_cast<uint8_t>((q >> 2) << (j % 8));
                    }
                }
            } else {  // Q4_0: scale from the largest magnitude, as the format's reference quantizer
                auto* b = reinterpret_cast<BlockQ4_0*>(enc.data());
                for (int64_t k = 0; k < cols / kQK; ++k) {
                    float amax = 0.f, maxv = 0.f;
                    for (int j = 0; j < kQK; ++j)
                        if (std::fabs(row[k * kQK + j]) > amax) amax = std::fabs(maxv = row[k * kQK + j]);
                    const float d = maxv / -8.f, id = d ? 1.f / d : 0.f;
                    b[k].d = f32_to_fp16(d);
                    for (int j = 0; j < kQK / 2; ++j) {
                        const int lo = std::min(15, static_cast<int>(row[k * kQK + j] * id + 8.5f));
                        const int hi = std::min(15, static_cast<int>(row[k * kQK + j + kQK / 2] * id + 8.5f));
                        b[k].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
                    }
                }
            }
            bytes.insert(bytes.end(), enc.begin(), enc.end());
        }
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        m.specs.push_back(TensorSpec{name, 0, offset, static_cast<int>(dt), shape});
        offset += bytes.size();
        while (offset % 32) {  // keep every tensor 32-byte aligned, as GGUF does
            out.put(0);
            ++offset;
        }
    };
    const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    add("token_embd.weight", {c.vocab_size, c.dim}, t);
    add("output_norm.weight", {c.dim}, DType::F32);
    for (int l = 0; l < c.n_layers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        add(p + "attn_norm.weight", {c.dim}, DType::F32);
        add(p + "attn_q.weight", {q_dim, c.dim}, t);
        add(p + "attn_k.weight", {kv_dim, c.dim}, t);
        add(p + "attn_v.weight", {kv_dim, c.dim}, t);
        add(p + "attn_output.weight", {c.dim, q_dim}, t);
        add(p + "ffn_norm.weight", {c.dim}, DType::F32);
        add(p + "ffn_gate.weight", {c.ffn_dim, c.dim}, t);
        add(p + "ffn_up.weight", {c.ffn_dim, c.dim}, t);
        add(p + "ffn_down.weight", {c.dim, c.ffn_dim}, t);
    }
    return m;
}

bool all_finite(const float* x, size_t n) {
    for (size_t i = 0; i < n; ++i)
        if (!std::isfinite(x[i])) return false;
    return true;
}

// Prompt, then sampled tokens one at a time until the context is full; then a context overflow must be an error.
void full_context_generation(const TinyModel& tm, Config cfg, const std::string& kern, const std::string& name) {
    Model m(cfg, {tm.path}, tm.specs, kern);
    Sampler s(SamplerParams{0.9f, 20, 0.9f, 0.02f, 1.1f, 16, 7});
    std::vector<int32_t> history;
    for (int i = 0; i < 21; ++i) history.push_back((i * 7 + 3) % cfg.vocab_size);
    const float* logits = m.forward_last(history.data(), static_cast<int>(history.size()));
    bool finite = all_finite(logits, cfg.vocab_size);
    while (m.n_past() < cfg.n_ctx) {
        const int32_t tok = s.sample(logits, cfg.vocab_size, history.data(), static_cast<int>(history.size()));
        history.push_back(tok);
        logits = m.forward_last(&history.back(), 1);
        finite &= all_finite(logits, cfg.vocab_size);
    }
    check(finite && m.n_past() == cfg.n_ctx, name + ": full-context generation, finite logits");
    expect_error([&] { m.forward_last(history.data(), 1); }, name + ": token past the context is an error");
}

// Batched prompt logits equal the same tokens fed one at a time through the KV cache.
void cache_consistency(const TinyModel& tm, Config cfg, const std::string& kern, const std::string& name) {
    Model m(cfg, {tm.path}, tm.specs, kern);
    const int n = 40, V = cfg.vocab_size;
    std::vector<int32_t> toks(n);
    for (int i = 0; i < n; ++i) toks[i] = (i * 13 + 5) % V;
    std::vector<float> all(static_cast<size_t>(n) * V), one(V);
    m.forward(toks.data(), n, true, all.data());
    m.truncate(0);
    float worst = 0.f;
    for (int i = 0; i < n; ++i) {
        m.forward(&toks[i], 1, false, one.data());
        for (int v = 0; v < V; ++v) worst = std::max(worst, std::fabs(one[v] - all[static_cast<size_t>(i) * V + v]));
    }
    check(worst < 2e-3f, name + ": batch == token by token (max diff " + std::to_string(worst) + ")");

    std::vector<float> nll(n), trace(static_cast<size_t>(2 * m.depth() + 1) * n * cfg.dim);
    m.truncate(0);
    m.score(toks.data(), n, nll.data());
    m.truncate(0);
    m.trace(toks.data(), n, trace.data());
    check(all_finite(nll.data(), n - 1) && all_finite(trace.data(), trace.size()), name + ": score and trace finite");
}

// Rows of several sequences in one pass (the server's slots): each sequence's logits are the same bits as when it
// runs alone, its prompt in one piece and then one token per pass, whatever shares its batches.
void sequences_batched(const TinyModel& tm, Config cfg, const std::string& kern, const std::string& name) {
    cfg.n_seq = 3;
    Model m(cfg, {tm.path}, tm.specs, kern);
    const int V = cfg.vocab_size, steps = 5;
    const std::vector<std::vector<int32_t>> prompts = {{3, 9, 27, 1, 5, 8, 13, 21, 34, 55, 9, 14, 23, 37, 60, 17, 2},
                                                       {7},
                                                       {11, 22, 33, 44, 55, 66, 77, 10}};
    const int n = static_cast<int>(prompts.size());
    std::vector<std::vector<float>> alone(n);  // (steps + 1) rows of logits per sequence
    for (int s = 0; s < n; ++s) {
        std::vector<int32_t> toks = prompts[s], seqs(toks.size(), 0);
        std::vector<uint8_t> want(toks.size(), 0);
        want.back() = 1;
        m.truncate(0, 0);
        for (int k = 0; k <= steps; ++k) {
            const float* l = m.forward_rows(toks.data(), seqs.data(), static_cast<int>(toks.size()), want.data());
            alone[s].insert(alone[s].end(), l, l + V);
            toks = {static_cast<int32_t>(std::max_element(l, l + V) - l)};
            seqs = {0};
            want = {1};
        }
    }
    // Together: prompts in chunks of 5 rows beside the sequences already decoding; batches of changing size.
    std::vector<std::vector<float>> got(n);
    std::vector<size_t> fed(n, 0);
    std::vector<int32_t> last(n, -1);
    for (int s = 0; s < n; ++s) m.truncate(0, s);
    while (true) {
        std::vector<int32_t> toks, seqs;
        std::vector<uint8_t> want;
        std::vector<int> who;
        for (int s = 0; s < n; ++s) {
            if (static_cast<int>(got[s].size()) / V > steps) continue;
            if (fed[s] < prompts[s].size()) {
                const size_t take = std::min<size_t>(5, prompts[s].size() - fed[s]);
                for (size_t i = 0; i < take; ++i) {
                    toks.push_back(prompts[s][fed[s] + i]);
                    seqs.push_back(s);
                    want.push_back(0);
                }
                fed[s] += take;
                if (fed[s] == prompts[s].size()) want.back() = 1, who.push_back(s);
            } else {
                toks.push_back(last[s]);
                seqs.push_back(s);
                want.push_back(1);
                who.push_back(s);
            }
        }
        if (toks.empty()) break;
        const float* l = m.forward_rows(toks.data(), seqs.data(), static_cast<int>(toks.size()), want.data());
        for (size_t i = 0; i < who.size(); ++i) {
            const float* row = l + i * V;
            got[who[i]].insert(got[who[i]].end(), row, row + V);
            last[who[i]] = static_cast<int32_t>(std::max_element(row, row + V) - row);
        }
    }
    bool same = true;
    for (int s = 0; s < n; ++s) same &= got[s] == alone[s];
    check(same, name + ": sequences batched == each alone, bit for bit");
    const int32_t tok = 1, bad_seq = 3;
    const uint8_t yes = 1;
    expect_error([&] { m.forward_rows(&tok, &bad_seq, 1, &yes); }, name + ": sequence id out of range");
}

void caller_errors(const TinyModel& tm, const std::string& kern) {
    Config cfg = tm.cfg;
    Model m(cfg, {tm.path}, tm.specs, kern);
    std::vector<int32_t> bad = {1, cfg.vocab_size};
    expect_error([&] { m.forward_last(bad.data(), 2); }, "token id out of range");
    expect_error([&] { m.forward_last(bad.data(), 0); }, "no tokens");
    Config plan = cfg;
    plan.layer_plan = {0, 5};
    expect_error([&] { Model(plan, {tm.path}, tm.specs, kern); }, "plan naming a block that is not stored");
    std::vector<TensorSpec> past_end = tm.specs;
    past_end.back().offset += 1u << 20;
    expect_error([&] { Model(cfg, {tm.path}, past_end, kern); }, "tensor past the end of the file");
    std::vector<TensorSpec> wrong_shape = tm.specs;
    wrong_shape[0].shape[1] += 32;
    expect_error([&] { Model(cfg, {tm.path}, wrong_shape, kern); }, "shape that does not fit the hyperparameters");
    expect_error([&] { Model(cfg, {tm.path + ".missing"}, tm.specs, kern); }, "missing file");
}

}  // namespace

int main(int argc, char** argv) {
    const std::string dir = argc > 1 ? argv[1] : ".";
    std::mt19937 rng(2024);
    for (DType t : {DType::F32, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q3_0}) {
        const TinyModel tm = write_tiny(dir + "/model_check_" + std::to_string(static_cast<int>(t)) + ".bin", t, rng);
        for (const std::string kern : available_kernels()) {
            const std::string base = std::string(format_of(t).name) + "/" + kern;
            for (int kv : {0, 1, 8}) {
                Config cfg = tm.cfg;
                cfg.kv_type = kv;
                full_context_generation(tm, cfg, kern, base + "/kv" + std::to_string(kv));
            }
            Config wide = tm.cfg;  // more threads than a decode step's KV heads: the query groups are split
            wide.n_threads = 4;
            full_context_generation(tm, wide, kern, base + "/4 threads");
            Config repeat = tm.cfg;
            repeat.layer_plan = {0, 1, 1, 2};
            full_context_generation(tm, repeat, kern, base + "/plan 0,1,1,2");
            Config exact = tm.cfg;
            exact.float_activations = true;
            exact.kv_type = 0;
            cache_consistency(tm, exact, kern, base);
            sequences_batched(tm, tm.cfg, kern, base);
            sequences_batched(tm, exact, kern, base + "/float activations");
            caller_errors(tm, kern);
        }
        std::remove(tm.path.c_str());
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
