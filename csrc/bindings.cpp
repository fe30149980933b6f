// The pybind11 boundary: the only file that knows Python. Every core exception is translated here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/kernels.h"
#include "model/model.h"
#include "model/sampler.h"
#include "runtime/error.h"
#include "runtime/mapped_file.h"
#include "runtime/thread_pool.h"
#include "testing.h"
#include "tokenizer/bpe.h"

namespace py = pybind11;
using namespace franken;

namespace {

using Int32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using ByteArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

py::array_t<float> eval(Model& m, const Int32Array& tokens, bool all_logits) {
    if (tokens.ndim() != 1) throw Error("tokens must be a 1-D array");
    const int n = static_cast<int>(tokens.shape(0));
    const int V = m.config().vocab_size;
    py::array_t<float> out({all_logits ? n : 1, V});
    float* dst = out.mutable_data();
    const int32_t* src = tokens.data();
    {
        py::gil_scoped_release release;
        m.forward(src, n, all_logits, dst);
    }
    return out;
}

py::array_t<float> score(Model& m, const Int32Array& tokens) {
    if (tokens.ndim() != 1) throw Error("tokens must be a 1-D array");
    const int n = static_cast<int>(tokens.shape(0));
    std::vector<float> nll(std::max(n, 1));
    {
        py::gil_scoped_release release;
        m.score(tokens.data(), n, nll.data());
    }
    py::array_t<float> out(std::max(n - 1, 0));
    std::copy(nll.begin(), nll.begin() + out.size(), out.mutable_data());
    return out;
}

// The residual stream at every block boundary: (2*depth+1, n, dim), see Model::trace.
py::array_t<float> trace(Model& m, const Int32Array& tokens) {
    if (tokens.ndim() != 1) throw Error("tokens must be a 1-D array");
    const int n = static_cast<int>(tokens.shape(0));
    if (n <= 0 || n > m.config().n_ctx - m.n_past()) throw Error("trace: need 1 .. n_ctx - n_past tokens");
    py::array_t<float> out({2 * m.depth() + 1, n, m.config().dim});
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        m.trace(tokens.data(), n, dst);
    }
    return out;
}

// Token ids as the generation path passes them: any 1-D buffer of 32-bit ints (array('i'), a numpy int32
// array). Unlike py::array_t this does not import numpy, which the runtime path does without. The ids are copied
// while the GIL is held: the model checks them and then runs without it, when another Python thread could
// otherwise change a checked id in the caller's buffer.
class Tokens {
public:
    explicit Tokens(const py::buffer& b) {
        const py::buffer_info info = b.request();
        const std::string& f = info.format;
        const char kind = f.empty() ? '?' : f.back(), order = f.size() > 1 ? f.front() : '@';
        if (info.ndim != 1 || info.itemsize != 4 || (kind != 'i' && kind != 'l') || order == '>' || order == '!')
            throw Error("tokens must be a 1-D buffer of 32-bit ints, such as array('i')");
        if (info.shape[0] > 1 && info.strides[0] != 4) throw Error("tokens must be contiguous");
        const auto* p = static_cast<const int32_t*>(info.ptr);
        ids_.assign(p, p + info.shape[0]);
    }
    const int32_t* data() const { return ids_.data(); }
    int size() const { return static_cast<int>(ids_.size()); }
    std::vector<int32_t> take() && { return std::move(ids_); }

private:
    std::vector<int32_t> ids_;
};

// How much each run of `shift` consecutive executed blocks turns the residual stream: entry l is the angle between
// block l's input and block l + shift's input (the final residual for the last), over pi, averaged over the
// positions after the first (whose attention sink behaves apart). Runs the tokens after the cached ones; a list,
// not an array, so the runtime path (a self-draft plan chosen at load) needs no numpy.
std::vector<double> block_distances(Model& m, const py::buffer& ids, int shift) {
    const Tokens tokens(ids);
    const int n = tokens.size(), depth = m.depth(), dim = m.config().dim;
    if (n < 2 || n > std::min(256, m.config().n_ctx - m.n_past()))
        throw Error("block_distances: need 2 .. min(256, n_ctx - n_past) tokens");
    if (shift < 1 || shift > depth) throw Error("block_distances: shift must be 1 .. depth");
    std::vector<float> trace(static_cast<size_t>(2 * depth + 1) * n * dim);
    py::gil_scoped_release release;
    m.trace(tokens.data(), n, trace.data());
    auto row = [&](int point, int t) { return trace.data() + (static_cast<size_t>(2 * point) * n + t) * dim; };
    std::vector<double> out(depth + 1 - shift, 0.0);
    for (int l = 0; l + shift <= depth; ++l) {
        for (int t = 1; t < n; ++t) {
            const float *a = row(l, t), *b = row(l + shift, t);
            double ab = 0, aa = 0, bb = 0;
            for (int i = 0; i < dim; ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
            const double c = aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 1.0;
            out[l] += std::acos(std::clamp(c, -1.0, 1.0)) / M_PI;
        }
        out[l] /= n - 1;
    }
    return out;
}

// Forward the tokens and draw the next one, without handing the logits to Python.
int eval_sample(Model& m, const py::buffer& tokens, Sampler& s, const py::buffer& history) {
    const Tokens t(tokens), h(history);
    py::gil_scoped_release release;
    const float* logits = m.forward_last(t.data(), t.size());
    return s.sample(logits, m.config().vocab_size, h.data(), h.size());
}

// Forward the tokens, keeping the last logits inside the core (speed measurements: no copy, no sampling).
void advance(Model& m, const py::buffer& tokens) {
    const Tokens t(tokens);
    py::gil_scoped_release release;
    m.forward_last(t.data(), t.size());
}

// The rows of several sequences in one pass (Model::forward_rows). tokens, seqs and want are 1-D buffers of 32-bit
// ints of one length.
struct Rows {
    Rows(const py::buffer& tokens_, const py::buffer& seqs_, const py::buffer& want_)
        : tokens(tokens_), seqs(seqs_) {
        const Tokens w(want_);
        if (seqs.size() != tokens.size() || w.size() != tokens.size())
            throw Error("tokens, seqs and want must have one length");
        want.assign(w.data(), w.data() + w.size());
        for (uint8_t& f : want) f = f != 0;
        n_want = static_cast<int>(std::count(want.begin(), want.end(), 1));
    }
    Tokens tokens, seqs;
    std::vector<uint8_t> want;
    int n_want = 0;
};

py::array_t<float> eval_rows(Model& m, const py::buffer& tokens, const py::buffer& seqs, const py::buffer& want) {
    const Rows rows(tokens, seqs, want);
    const int V = m.config().vocab_size;
    py::array_t<float> out({rows.n_want, V});
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        const float* logits = m.forward_rows(rows.tokens.data(), rows.seqs.data(), rows.tokens.size(), rows.want.data());
        std::copy(logits, logits + static_cast<size_t>(rows.n_want) * V, dst);
    }
    return out;
}

// Speculative decoding's check of one stream: rows[0 .. n_drafts] of logits, row i's draw checking drafts[i]
// (Sampler::sample's draft) until one is refused, each kept draft joining `history` (the repetition window). Returns
// the emitted tokens: the accepted drafts, then one more (the replacement, or the token after the last draft).
std::vector<int> checked_draws(Sampler& s, const float* logits, int V, std::vector<int32_t> history,
                               const int32_t* drafts, int n_drafts) {
    std::vector<int> out;
    for (int i = 0; i <= n_drafts; ++i) {
        const int draft = i < n_drafts ? drafts[i] : -1;
        const int token = s.sample(logits + static_cast<size_t>(i) * V, V, history.data(),
                                   static_cast<int>(history.size()), draft);
        out.push_back(token);
        if (token != draft) break;
        history.push_back(token);
    }
    return out;
}

// One step of a server's streams: the rows in one pass, then each stream's tokens drawn with its own sampler
// (samplers[i]) and the repetition window of histories[i]. Stream i owns sizes[i] consecutive wanted rows (default
// 1 each) of one sequence, the last rows of that sequence in the batch: its last token, then tokens drafted for it
// (speculative decoding), each row's draw checking the next row's token (Sampler::sample's draft) until one is
// refused; the stream's cache is then cut back past it. Returns each stream's emitted tokens: its accepted drafts,
// then one more. No logits cross into Python.
std::vector<std::vector<int>> step_rows(Model& m, const py::buffer& tokens, const py::buffer& seqs,
                                        const py::buffer& want, const py::list& samplers, const py::list& histories,
                                        std::vector<int> sizes) {
    const Rows rows(tokens, seqs, want);
    const int n_streams = static_cast<int>(samplers.size());
    if (sizes.empty()) sizes.assign(n_streams, 1);
    if (static_cast<int>(histories.size()) != n_streams || static_cast<int>(sizes.size()) != n_streams)
        throw Error("need one sampler, one history and one size per stream");
    std::vector<int> wanted;  // indices of the wanted rows
    for (int r = 0; r < rows.tokens.size(); ++r)
        if (rows.want[r]) wanted.push_back(r);
    std::vector<int> first(n_streams + 1, 0);  // stream i's wanted rows: wanted[first[i] .. first[i + 1])
    for (int i = 0; i < n_streams; ++i) {
        if (sizes[i] < 1) throw Error("a stream has at least one row");
        first[i + 1] = first[i] + sizes[i];
    }
    if (first[n_streams] != static_cast<int>(wanted.size())) throw Error("the sizes must add up to the wanted rows");
    const int32_t* seq = rows.seqs.data();
    for (int i = 0; i < n_streams; ++i) {  // consecutive rows of one sequence, its last in the batch
        const int a = wanted[first[i]], b = wanted[first[i + 1] - 1];
        if (b - a != sizes[i] - 1) throw Error("a stream's rows must be consecutive");
        for (int r = b + 1; r < rows.tokens.size(); ++r)
            if (seq[r] == seq[a]) throw Error("a stream's rows must be its sequence's last");
        for (int r = a; r <= b; ++r)
            if (seq[r] != seq[a]) throw Error("a stream's rows must be of one sequence");
    }
    std::vector<Sampler*> s;
    std::vector<std::vector<int32_t>> h;
    for (int i = 0; i < n_streams; ++i) {
        s.push_back(&samplers[i].cast<Sampler&>());
        h.push_back(Tokens(histories[i].cast<py::buffer>()).take());
    }
    std::vector<std::vector<int>> out(n_streams);
    py::gil_scoped_release release;
    const float* logits = m.forward_rows(rows.tokens.data(), rows.seqs.data(), rows.tokens.size(), rows.want.data());
    const int V = m.config().vocab_size;
    // Each stream's draws read its logits and write only its own sampler and history: the streams are drawn in
    // parallel (a pass over the vocabulary per row, ~0.2 ms: an eighth of a 4-row step if left to one thread).
    m.parallel_for(n_streams, [&](int begin, int end, int) {
        for (int i = begin; i < end; ++i)  // a stream's drafts are the tokens of its rows after the first
            out[i] = checked_draws(*s[i], logits + static_cast<size_t>(first[i]) * V, V, std::move(h[i]),
                                   rows.tokens.data() + wanted[first[i]] + 1, sizes[i] - 1);
    });
    for (int i = 0; i < n_streams; ++i) {
        const int refused = sizes[i] - static_cast<int>(out[i].size());  // drafts after the first refused one
        if (refused > 0) m.truncate(m.n_past(seq[wanted[first[i]]]) - refused, seq[wanted[first[i]]]);
    }
    return out;
}

// Speculative decoding's check, on sequence 0: `tokens` are the tokens its cache lacks, the last n_draft of them
// drafted. They run in one pass; then row by row the sampler keeps the draft (Sampler::sample's draft) or draws a
// replacement, which ends the walk, and the cache is cut back past the first rejected draft. Returns the emitted
// tokens: the accepted drafts, then one more (the replacement, or the token after the last draft).
std::vector<int> verify(Model& m, const py::buffer& tokens, int n_draft, Sampler& s, const py::buffer& history) {
    const Tokens t(tokens);
    std::vector<int32_t> hist = Tokens(history).take();
    const int n = t.size();
    if (n_draft < 0 || n_draft >= n) throw Error("verify: need at least one token before the drafted ones");
    const std::vector<int32_t> seqs(n, 0);
    std::vector<uint8_t> want(n, 0);
    std::fill(want.end() - (n_draft + 1), want.end(), 1);
    py::gil_scoped_release release;
    const float* logits = m.forward_rows(t.data(), seqs.data(), n, want.data());
    std::vector<int> out = checked_draws(s, logits, m.config().vocab_size, std::move(hist), t.data() + n - n_draft,
                                         n_draft);
    m.truncate(m.n_past(0) - (n_draft + 1 - static_cast<int>(out.size())), 0);  // drafts after the refused one
    return out;
}

// The likeliest token of one row of logits (the first of equals, as numpy's argmax).
int argmax(const float* row, size_t V) { return static_cast<int>(std::max_element(row, row + V) - row); }

// Greedy drafting with another plan of the same weights (a shallower one: cheaper per token), on sequence `seq`:
// run `tokens` (what that sequence's cache lacks), take the likeliest next token, run it, and so on: k tokens,
// the last not run.
std::vector<int> draft_greedy(Model& m, const py::buffer& tokens, int seq, const std::vector<int>& plan, int k) {
    const Tokens t(tokens);
    std::vector<int32_t> run(t.data(), t.data() + t.size());
    std::vector<int> out;
    py::gil_scoped_release release;
    const int V = m.config().vocab_size;
    while (static_cast<int>(out.size()) < k) {
        const std::vector<int32_t> seqs(run.size(), seq);
        std::vector<uint8_t> want(run.size(), 0);
        want.back() = 1;
        const float* logits = m.forward_rows(run.data(), seqs.data(), static_cast<int>(run.size()), want.data(), &plan);
        out.push_back(argmax(logits, V));
        run.assign(1, out.back());
    }
    return out;
}

// The likeliest next token after each of `tokens`, run on sequence `seq` after its cached tokens with `plan` (empty:
// the model's own): what a greedy drafter would propose at every position, to measure how often it agrees with the
// model before drafting with it. At most 256 tokens (their logits are held at once).
std::vector<int> greedy_tokens(Model& m, const py::buffer& tokens, int seq, const std::vector<int>& plan) {
    const Tokens t(tokens);
    const int n = t.size();
    if (n < 1 || n > 256) throw Error("greedy_tokens: need 1 .. 256 tokens");
    const std::vector<int32_t> seqs(n, seq);
    const std::vector<uint8_t> want(n, 1);
    std::vector<int> out(n);
    py::gil_scoped_release release;
    const float* logits = m.forward_rows(t.data(), seqs.data(), n, want.data(), plan.empty() ? nullptr : &plan);
    const size_t V = m.config().vocab_size;
    for (int r = 0; r < n; ++r) out[r] = argmax(logits + r * V, V);
    return out;
}

// The format table for Python (franken_rt/formats.py is held equal to it by a test).
py::list format_rows() {
    py::list out;
    for (const FormatInfo& f : kFormats) {
        py::dict row;
        row["id"] = static_cast<int>(f.id);
        row["name"] = f.name;
        row["block_elems"] = f.block_elems;
        row["block_bytes"] = f.block_bytes;
        row["header_halves"] = f.header_halves;
        row["header_at"] = f.header_at;
        row["codebook"] = std::vector<int>(f.codebook.values,
                                           f.codebook.values + f.codebook.entries * f.codebook.dim * f.codebook.tables);
        row["interleaves"] = f.repack_x8 != nullptr;
        out.append(row);
    }
    return out;
}

py::dict kernel_rows(const std::string& table) {
    const KernelTable& k = kernels_by_name(table);
    py::dict out;
    for (const FormatInfo& f : kFormats) {
        const FormatKernels& r = k[f.id];
        py::dict ops;
        ops["dot"] = r.dot != nullptr;
        ops["to_f32"] = r.to_f32 != nullptr;
        ops["dotq"] = r.dotq != nullptr;
        ops["gemmq"] = r.gemmq != nullptr;
        ops["gemm_x8"] = r.gemm_x8 != nullptr;
        ops["interleaved"] = k.runs_interleaved(f.id);
        out[f.name] = ops;
    }
    return out;
}

// NaN or infinite values (or block scales) of one tensor, read from its mapped file.
int64_t nonfinite_count(const std::string& path, uint64_t offset, int dtype, uint64_t n_bytes) {
    if (!dtype_known(dtype)) throw Error("unknown dtype");
    const MappedFile f(path);
    if (offset > f.size() || n_bytes > f.size() - offset) throw Error("tensor runs past the end of " + path);
    py::gil_scoped_release release;
    return count_nonfinite(static_cast<DType>(dtype), f.data() + offset, n_bytes);  // unmapped on return
}


}  // namespace

PYBIND11_MODULE(_core, mod) {
    mod.doc() = "franken-rt C++ core: LLaMA forward pass, KV cache, kernels, sampling";
    static py::exception<Error> core_error(mod, "CoreError", PyExc_ValueError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error& e) {
            py::set_error(core_error, e.what());
        }
    });

    py::class_<Config>(mod, "Config")
        .def(py::init<>())
        .def_readwrite("n_layers", &Config::n_layers)
        .def_readwrite("dim", &Config::dim)
        .def_readwrite("n_heads", &Config::n_heads)
        .def_readwrite("n_kv_heads", &Config::n_kv_heads)
        .def_readwrite("head_dim", &Config::head_dim)
        .def_readwrite("ffn_dim", &Config::ffn_dim)
        .def_readwrite("vocab_size", &Config::vocab_size)
        .def_readwrite("norm_eps", &Config::norm_eps)
        .def_readwrite("rope_interleaved", &Config::rope_interleaved)
        .def_readwrite("inv_freq", &Config::inv_freq)
        .def_readwrite("layer_plan", &Config::layer_plan)
        .def_readwrite("n_ctx", &Config::n_ctx)
        .def_readwrite("n_seq", &Config::n_seq)
        .def_readwrite("profile", &Config::profile)
        .def_readwrite("n_batch", &Config::n_batch)
        .def_readwrite("n_threads", &Config::n_threads)
        .def_readwrite("cpus", &Config::cpus)
        .def_readwrite("float_activations", &Config::float_activations)
        .def_readwrite("float_act_roles", &Config::float_act_roles)
        .def_readwrite("kv_type", &Config::kv_type);

    py::class_<TensorSpec>(mod, "TensorSpec")
        .def(py::init([](std::string name, int file, uint64_t offset, int dtype, std::vector<int64_t> shape) {
                 return TensorSpec{std::move(name), file, offset, dtype, std::move(shape)};
             }),
             py::arg("name"), py::arg("file"), py::arg("offset"), py::arg("dtype"), py::arg("shape"));

    py::class_<Model>(mod, "Model")
        .def(py::init<Config, const std::vector<std::string>&, const std::vector<TensorSpec>&, const std::string&>(),
             py::arg("config"), py::arg("files"), py::arg("tensors"), py::arg("kernels") = "",
             py::call_guard<py::gil_scoped_release>())
        .def("eval", &eval, py::arg("tokens"), py::arg("all_logits") = false,
             "Run tokens after the cached ones; logits of the last (or every) position.")
        .def("score", &score, py::arg("tokens"),
             "Run tokens after the cached ones; negative log-likelihood of each next token (n - 1 values).")
        .def("trace", &trace, py::arg("tokens"),
             "Run tokens after the cached ones; the residual stream (2*depth+1, n, dim): block s's input at 2s, "
             "its residual after attention at 2s+1, the final residual last.")
        .def("block_distances", &block_distances, py::arg("tokens"), py::arg("shift"),
             "Run tokens (array('i')) after the cached ones; per run of `shift` executed blocks, the mean angle "
             "(over pi) its output makes with its input.")
        .def("eval_sample", &eval_sample, py::arg("tokens"), py::arg("sampler"), py::arg("history"),
             "Run tokens (array('i')) after the cached ones and sample the next token from the last logits.")
        .def("advance", &advance, py::arg("tokens"), "Run tokens (array('i')) after the cached ones.")
        .def("eval_rows", &eval_rows, py::arg("tokens"), py::arg("seqs"), py::arg("want"),
             "Rows of several sequences in one pass (row i: tokens[i] appended to sequence seqs[i]); the logits of "
             "the rows with want[i] != 0, (n_want, vocab).")
        .def("step_rows", &step_rows, py::arg("tokens"), py::arg("seqs"), py::arg("want"), py::arg("samplers"),
             py::arg("histories"), py::arg("sizes") = std::vector<int>(),
             "eval_rows, then each stream's tokens drawn with its own sampler and history: sizes[i] wanted rows "
             "(default 1), the first its last token, the others drafts checked in turn; the emitted tokens of each.")
        .def("verify", &verify, py::arg("tokens"), py::arg("n_draft"), py::arg("sampler"), py::arg("history"),
             "Speculative decoding's check on sequence 0: run tokens (the last n_draft drafted), keep the drafts the "
             "sampler accepts, cut the cache back past the first rejected; the emitted tokens (accepted drafts + 1).")
        .def("draft_greedy", &draft_greedy, py::arg("tokens"), py::arg("seq"), py::arg("plan"), py::arg("k"),
             "Run tokens on sequence seq with another layer plan, then draft k tokens greedily (the last not run).")
        .def("greedy_tokens", &greedy_tokens, py::arg("tokens"), py::arg("seq"), py::arg("plan") = std::vector<int>(),
             "Run tokens (array('i')) on sequence seq with a layer plan (default the model's); the argmax token "
             "after each.")
        .def("profile_report", &Model::profile_report,
             "With Config.profile: time per stage of the forward passes so far, and the thread-pool hand-offs.")
        .def("truncate", &Model::truncate, py::arg("n"), py::arg("seq") = 0)
        .def("n_past_of", &Model::n_past, py::arg("seq"))
        .def_property_readonly("n_past", [](const Model& m) { return m.n_past(0); })
        .def_property_readonly("n_seq", &Model::n_seq)
        .def_property_readonly("n_ctx", [](const Model& m) { return m.config().n_ctx; })
        .def_property_readonly("n_threads", [](const Model& m) { return m.config().n_threads; })
        .def_property_readonly("kernels", &Model::kernel_name)
        .def_property_readonly("kv_cache_bytes", &Model::kv_cache_bytes)
        .def_property_readonly("layer_plan", [](const Model& m) { return m.config().layer_plan; });

    py::class_<SamplerParams>(mod, "SamplerParams")
        .def(py::init<>())
        .def_readwrite("temperature", &SamplerParams::temperature)
        .def_readwrite("top_k", &SamplerParams::top_k)
        .def_readwrite("top_p", &SamplerParams::top_p)
        .def_readwrite("min_p", &SamplerParams::min_p)
        .def_readwrite("repetition_penalty", &SamplerParams::repetition_penalty)
        .def_readwrite("repeat_last_n", &SamplerParams::repeat_last_n)
        .def_readwrite("seed", &SamplerParams::seed);

    py::class_<Sampler>(mod, "Sampler")
        .def(py::init<const SamplerParams&>(), py::arg("params"))
        .def("sample",
             [](Sampler& s, const FloatArray& logits, const Int32Array& history, int draft) {
                 return s.sample(logits.data(), static_cast<int>(logits.size()), history.data(),
                                 static_cast<int>(history.size()), draft);
             },
             py::arg("logits"), py::arg("history"), py::arg("draft") = -1,
             "The next token; with draft >= 0, speculative decoding's check of that drafted token (returned if "
             "accepted): one draw from the same distribution either way.");

    py::class_<ByteLevelBpe>(mod, "ByteLevelBpe")
        .def(py::init<const std::vector<int32_t>&, const std::vector<int32_t>&, bool>(), py::arg("byte_ids"),
             py::arg("merges"), py::arg("isolate_digits"),
             "byte_ids: the token of each byte (256); merges: flat (left, right, merged) ids in priority order.")
        .def("encode", &ByteLevelBpe::encode, py::arg("text"), py::call_guard<py::gil_scoped_release>(),
             "Token ids of text without special tokens: GPT-2's split pattern, then the merges.");

    mod.def("nonfinite_count", &nonfinite_count, py::arg("path"), py::arg("offset"), py::arg("dtype"),
            py::arg("n_bytes"), "NaN or infinite values (block scales of quantized types) of one tensor's bytes.");
    mod.def("formats", &format_rows,
            "The storage formats this core reads (formats.h's table): one dict per format, in table order.");
    mod.def("kernel_rows", &kernel_rows, py::arg("table"),
            "Which kernels a kernel path has for each format: {name: {operation: bool}} (false: not applicable).");
    mod.def("available_kernels", &available_kernels, "Kernel paths this CPU can run, best first.");
    mod.def("default_kernels", [] { return std::string(kernels().name); });
    bind_testing(mod);
}
