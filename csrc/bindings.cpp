// The pybind11 boundary: the only file that knows Python. Every core exception is translated here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "kernels/kernels.h"
#include "model/model.h"
#include "model/sampler.h"
#include "runtime/error.h"
#include "runtime/mapped_file.h"
#include "runtime/thread_pool.h"
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

private:
    std::vector<int32_t> ids_;
};

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

// NaN or infinite values (or block scales) of one tensor, read from its mapped file.
int64_t nonfinite_count(const std::string& path, uint64_t offset, int dtype, uint64_t n_bytes) {
    if (!dtype_known(dtype)) throw Error("unknown dtype");
    const MappedFile f(path);
    if (offset > f.size() || n_bytes > f.size() - offset) throw Error("tensor runs past the end of " + path);
    py::gil_scoped_release release;
    return count_nonfinite(static_cast<DType>(dtype), f.data() + offset, n_bytes);  // unmapped on return
}

// The type of a raw row (or matrix rows) handed to a kernel entry point, checked: a known type (quantized if
// asked), n elements in whole blocks, and exactly the bytes that takes.
DType checked_row(int dtype, bool quantized, int64_t n, py::ssize_t row_size) {
    if (!dtype_known(dtype)) throw Error("unknown dtype");
    const DType t = static_cast<DType>(dtype);
    if (quantized && !dtype_quantized(t)) throw Error("not a quantized dtype");
    if (n < 0 || n % dtype_block_elems(t) || row_size != static_cast<py::ssize_t>(row_bytes(t, n)))
        throw Error("row size does not match the type and length");
    return t;
}

// Kernel entry points for tests and benchmarks: run one table's kernels on raw rows.
float kernel_dot(const std::string& table, int dtype, const ByteArray& row, const FloatArray& x) {
    const int n = static_cast<int>(x.size());
    const DType t = checked_row(dtype, false, n, row.size());
    return kernels_by_name(table).dot(t)(row.data(), x.data(), n);
}

// Quantize float activations with one table, then a quantized row times them with the same table.
float kernel_dotq(const std::string& table, int dtype, const ByteArray& row, const FloatArray& x) {
    const int n = static_cast<int>(x.size());
    const DType t = checked_row(dtype, true, n, row.size());
    const KernelTable& k = kernels_by_name(table);
    std::vector<BlockQ8A> act(n / kQK);
    k.quantize_act(x.data(), act.data(), n);
    return k.dotq(t)(row.data(), act.data(), n);
}

// Quantized matrix rows (rows x bytes, rows a multiple of 8) in the interleaved layout the model uses.
py::array_t<uint8_t> repack_x8_rows(int dtype, const ByteArray& w, int n) {
    const DType t = checked_row(dtype, true, n, w.ndim() == 2 ? w.shape(1) : -1);
    if (!dtype_interleaves(t) || w.ndim() != 2 || w.shape(0) % kX8)
        throw Error("need 2-D rows of a quantized type, a multiple of 8 of them");
    py::array_t<uint8_t> out({w.shape(0), w.shape(1)});
    const size_t stride = static_cast<size_t>(w.shape(1));
    for (py::ssize_t g = 0; g < w.shape(0) / kX8; ++g)
        repack_x8(t, w.data() + g * kX8 * stride, stride, n / kQK, out.mutable_data() + g * kX8 * stride);
    return out;
}

// The interleaved product over all groups of a repacked matrix (see repack_x8_rows).
void gemm_x8_rows(const KernelTable& k, DType t, const uint8_t* w, int rows, int n, const BlockQ8A* act, int n_act,
                  float* out) {
    k.gemmq_x8(t)(w, rows / kX8, n / kQK, act, n_act, out, rows);
}

void check_interleaved(const KernelTable& k, DType t, int rows) {
    if (!dtype_interleaves(t) || rows % kX8) throw Error("interleaved needs rows of a quantized type, a multiple of 8");
    if (!k.gemmq_x8(t)) throw Error(std::string("kernel path '") + k.name + "' has no interleaved kernel");
}

// A quantized matrix (rows x n, stored bytes) times activation rows (n_act x n, float), with one table's gemm.
// interleaved: the rows are repacked by repack_x8_rows, multiplied by the table's interleaved kernel.
py::array_t<float> kernel_gemmq(const std::string& table, int dtype, const ByteArray& w, const FloatArray& x,
                                bool interleaved) {
    if (w.ndim() != 2 || x.ndim() != 2) throw Error("need 2-D weights and activations");
    const int n = static_cast<int>(x.shape(1)), n_act = static_cast<int>(x.shape(0)), rows = static_cast<int>(w.shape(0));
    const DType t = checked_row(dtype, true, n, w.shape(1));
    const KernelTable& k = kernels_by_name(table);
    if (interleaved) check_interleaved(k, t, rows);
    std::vector<BlockQ8A> act(static_cast<size_t>(n_act) * (n / kQK));
    for (int r = 0; r < n_act; ++r) k.quantize_act(x.data() + static_cast<size_t>(r) * n, &act[r * (n / kQK)], n);
    py::array_t<float> out({n_act, rows});
    if (interleaved)
        gemm_x8_rows(k, t, w.data(), rows, n, act.data(), n_act, out.mutable_data());
    else
        k.gemmq(t)(w.data(), rows, row_bytes(t, n), act.data(), n_act, n, out.mutable_data(), rows);
    return out;
}

// A quantized matrix times one float vector, single-threaded, as a decode step does it (activations quantized
// once, one integer dot product per row): the benchmarks' matrix-vector product.
py::array_t<float> kernel_matvec(const std::string& table, int dtype, const ByteArray& w, const FloatArray& x,
                                 bool interleaved) {
    if (w.ndim() != 2) throw Error("need 2-D weights");
    const int n = static_cast<int>(x.size()), rows = static_cast<int>(w.shape(0));
    const DType t = checked_row(dtype, false, n, w.shape(1));
    const KernelTable& k = kernels_by_name(table);
    if (interleaved) check_interleaved(k, t, rows);
    py::array_t<float> out(rows);
    float* o = out.mutable_data();
    const uint8_t* base = w.data();
    const size_t stride = row_bytes(t, n);
    py::gil_scoped_release release;
    if (interleaved) {
        std::vector<BlockQ8A> act(n / kQK);
        k.quantize_act(x.data(), act.data(), n);
        gemm_x8_rows(k, t, base, rows, n, act.data(), 1, o);
    } else if (dtype_quantized(t)) {
        std::vector<BlockQ8A> act(n / kQK);
        k.quantize_act(x.data(), act.data(), n);
        const DotQFn dot = k.dotq(t);
        for (int i = 0; i < rows; ++i) o[i] = dot(base + i * stride, act.data(), n);
    } else {
        const DotFn dot = k.dot(t);
        for (int i = 0; i < rows; ++i) o[i] = dot(base + i * stride, x.data(), n);
    }
    return out;
}

// Activations quantized by one table, as (scales, sums, int8 values).
py::tuple kernel_quantize_act(const std::string& table, const FloatArray& x) {
    const int n = static_cast<int>(x.size());
    if (n % kQK) throw Error("length must be a multiple of 32");
    std::vector<BlockQ8A> act(n / kQK);
    kernels_by_name(table).quantize_act(x.data(), act.data(), n);
    py::array_t<float> d(n / kQK), s(n / kQK);
    py::array_t<int8_t> q(n);
    for (int i = 0; i < n / kQK; ++i) {
        d.mutable_data()[i] = act[i].d;
        s.mutable_data()[i] = act[i].s;
        std::copy(act[i].qs, act[i].qs + kQK, q.mutable_data() + i * kQK);
    }
    return py::make_tuple(d, s, q);
}

py::array_t<float> kernel_to_f32(const std::string& table, int dtype, const ByteArray& row, int n) {
    const DType t = checked_row(dtype, false, n, row.size());
    py::array_t<float> out(n);
    kernels_by_name(table).to_f32(t, row.data(), out.mutable_data(), n);
    return out;
}

// Read bandwidth of this machine in bytes/s: `threads` threads stream disjoint parts of a buffer of `bytes`
// (choose it far larger than the caches), best of `repeats`.
double memory_bandwidth(size_t bytes, int threads, int repeats) {
    if (bytes < (1u << 20) || threads < 1 || repeats < 1) throw Error("need >= 1 MiB, >= 1 thread, >= 1 repeat");
    std::vector<uint8_t> buf(bytes, 1);
    ThreadPool pool(threads);
    std::vector<int> found(threads);
    double best = 0;
    py::gil_scoped_release release;
    for (int r = 0; r < repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        // Each thread scans its slice for a byte that is not there: libc's memchr reads with the widest vector
        // loads the CPU has, as fast as a read can go, which a plain loop compiled for the baseline ISA is not.
        pool.parallel_for(threads, [&](int begin, int end, int) {
            for (int t = begin; t < end; ++t) {
                const size_t lo = bytes * t / threads, hi = bytes * (t + 1) / threads;
                found[t] = std::memchr(buf.data() + lo, 0, hi - lo) != nullptr;
            }
        });
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, static_cast<double>(bytes) / s);
    }
    if (std::count(found.begin(), found.end(), 1)) throw Error("bandwidth probe found a byte it never wrote");
    return best;
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
        .def_readwrite("n_batch", &Config::n_batch)
        .def_readwrite("n_threads", &Config::n_threads)
        .def_readwrite("float_activations", &Config::float_activations)
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
        .def("eval_sample", &eval_sample, py::arg("tokens"), py::arg("sampler"), py::arg("history"),
             "Run tokens (array('i')) after the cached ones and sample the next token from the last logits.")
        .def("advance", &advance, py::arg("tokens"), "Run tokens (array('i')) after the cached ones.")
        .def("truncate", &Model::truncate, py::arg("n"))
        .def_property_readonly("n_past", &Model::n_past)
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
             [](Sampler& s, const FloatArray& logits, const Int32Array& history) {
                 return s.sample(logits.data(), static_cast<int>(logits.size()), history.data(),
                                 static_cast<int>(history.size()));
             },
             py::arg("logits"), py::arg("history"));

    py::class_<ByteLevelBpe>(mod, "ByteLevelBpe")
        .def(py::init<const std::vector<int32_t>&, const std::vector<int32_t>&, bool>(), py::arg("byte_ids"),
             py::arg("merges"), py::arg("isolate_digits"),
             "byte_ids: the token of each byte (256); merges: flat (left, right, merged) ids in priority order.")
        .def("encode", &ByteLevelBpe::encode, py::arg("text"), py::call_guard<py::gil_scoped_release>(),
             "Token ids of text without special tokens: GPT-2's split pattern, then the merges.");

    mod.def("nonfinite_count", &nonfinite_count, py::arg("path"), py::arg("offset"), py::arg("dtype"),
            py::arg("n_bytes"), "NaN or infinite values (block scales of quantized types) of one tensor's bytes.");
    mod.def("available_kernels", &available_kernels, "Kernel paths this CPU can run, best first.");
    mod.def("default_kernels", [] { return std::string(kernels().name); });
    mod.def("physical_cores", &physical_cores);
    mod.def("memory_bandwidth", &memory_bandwidth, py::arg("bytes") = size_t(1) << 30, py::arg("threads") = 1,
            py::arg("repeats") = 3, "Read bandwidth (bytes/s) streaming a buffer with this many threads.");
    mod.def("kernel_dot", &kernel_dot, py::arg("table"), py::arg("dtype"), py::arg("row"), py::arg("x"));
    mod.def("kernel_dotq", &kernel_dotq, py::arg("table"), py::arg("dtype"), py::arg("row"), py::arg("x"));
    mod.def("kernel_matvec", &kernel_matvec, py::arg("table"), py::arg("dtype"), py::arg("w"), py::arg("x"),
            py::arg("interleaved") = false);
    mod.def("kernel_gemmq", &kernel_gemmq, py::arg("table"), py::arg("dtype"), py::arg("w"), py::arg("x"),
            py::arg("interleaved") = false);
    mod.def("kernel_interleaves", [](const std::string& table, int dtype) {
                return dtype_known(dtype) && kernels_by_name(table).gemmq_x8(static_cast<DType>(dtype)) != nullptr;
            }, py::arg("table"), py::arg("dtype"), "Whether a kernel path multiplies this type in the interleaved layout.");
    mod.def("model_interleaves", [](const std::string& table, int dtype) {
                return dtype_known(dtype) && kernels_by_name(table).runs_interleaved(static_cast<DType>(dtype));
            }, py::arg("table"), py::arg("dtype"),
            "Whether the model repacks this type's matrices for a kernel path (not for the scalar reference).");
    mod.def("repack_x8", &repack_x8_rows, py::arg("dtype"), py::arg("w"), py::arg("n"),
            "Quantized rows (a multiple of 8) in the interleaved layout the integer kernels read.");
    mod.def("kernel_quantize_act", &kernel_quantize_act, py::arg("table"), py::arg("x"));
    mod.def("kernel_to_f32", &kernel_to_f32, py::arg("table"), py::arg("dtype"), py::arg("row"), py::arg("n"));
}
