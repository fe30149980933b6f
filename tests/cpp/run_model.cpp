// The core without Python, for a board where the Python package cannot run (Debian 12 has no riscv64 packages) or
// is not built: loads a real model file as the Python side describes it and prints the tokens it produces, so that
// tests/test_cross.py can run the demo model under qemu-user and compare with x86.
//
//   run_model SPEC greedy N      reference precision (float activations, f32 KV cache): the prompt, then N greedy
//                                tokens
//   run_model SPEC top1          the default path (8-bit activations, f16 KV cache), teacher-forced: the text's
//                                tokens in one pass, and the most likely next token after each
//
// SPEC is a text file written by the test: "config" with the hyperparameters, "inv_freq", "plan", "file" (one per
// mapped file), "tensor" (name, file index, offset, type, dims), "prompt" and "text" (token ids). Prints one line,
// "tokens: id id ...", and the kernel table used; exits non-zero with a message on any error.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/model.h"

using namespace franken;

namespace {

struct Spec {
    Config cfg;
    std::vector<std::string> files;
    std::vector<TensorSpec> tensors;
    std::vector<int32_t> prompt, text;
};

template <class T>
std::vector<T> rest_of(std::istringstream& in) {
    std::vector<T> v;
    for (T x; in >> x;) v.push_back(x);
    return v;
}

Spec read_spec(const std::string& path) {
    std::ifstream f(path);
    if (!f) throw std::runtime_error("cannot open " + path);
    Spec s;
    Config& c = s.cfg;
    for (std::string line; std::getline(f, line);) {
        std::istringstream in(line);
        std::string key;
        in >> key;
        if (key == "config") {
            in >> c.n_layers >> c.dim >> c.n_heads >> c.n_kv_heads >> c.head_dim >> c.ffn_dim >> c.vocab_size >>
                c.norm_eps >> c.rope_interleaved >> c.n_ctx >> c.n_threads;
            if (!in) throw std::runtime_error("config: expected 11 values: " + line);
        } else if (key == "inv_freq") {
            c.inv_freq = rest_of<float>(in);
        } else if (key == "plan") {
            c.layer_plan = rest_of<int>(in);
        } else if (key == "file") {
            std::string p;
            std::getline(in >> std::ws, p);
            s.files.push_back(p);
        } else if (key == "tensor") {
            TensorSpec t;
            if (!(in >> t.name >> t.file >> t.offset >> t.dtype)) throw std::runtime_error("tensor: " + line);
            t.shape = rest_of<int64_t>(in);
            s.tensors.push_back(t);
        } else if (key == "prompt") {
            s.prompt = rest_of<int32_t>(in);
        } else if (key == "text") {
            s.text = rest_of<int32_t>(in);
        } else if (!key.empty()) {
            throw std::runtime_error("unknown spec line: " + key);
        }
    }
    return s;
}

int argmax(const float* row, int n) {
    int best = 0;
    for (int i = 1; i < n; ++i)
        if (row[i] > row[best]) best = i;
    return best;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::string mode = argc > 2 ? argv[2] : "";
        if (argc < 3 || (mode != "greedy" && mode != "top1") || (mode == "greedy" && argc < 4)) {
            std::fprintf(stderr, "usage: run_model SPEC greedy N | run_model SPEC top1\n");
            return 2;
        }
        Spec s = read_spec(argv[1]);
        std::vector<int32_t> out;
        if (mode == "greedy") {
            s.cfg.float_activations = true;
            s.cfg.kv_type = static_cast<int>(DType::F32);
            Model m(s.cfg, s.files, s.tensors);
            std::printf("kernels: %s\n", m.kernel_name());
            const float* logits = m.forward_last(s.prompt.data(), static_cast<int>(s.prompt.size()));
            for (int i = 0, n = std::atoi(argv[3]); i < n; ++i) {
                out.push_back(argmax(logits, s.cfg.vocab_size));
                logits = m.forward_last(&out.back(), 1);
            }
        } else {
            Model m(s.cfg, s.files, s.tensors);
            std::printf("kernels: %s\n", m.kernel_name());
            const int n = static_cast<int>(s.text.size());
            std::vector<float> logits(static_cast<size_t>(n) * s.cfg.vocab_size);
            m.forward(s.text.data(), n, true, logits.data());
            for (int i = 0; i < n; ++i) out.push_back(argmax(&logits[static_cast<size_t>(i) * s.cfg.vocab_size],
                                                             s.cfg.vocab_size));
        }
        std::printf("tokens:");
        for (int32_t t : out) std::printf(" %d", t);
        std::printf("\n");
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "run_model: %s\n", e.what());
        return 1;
    }
}
