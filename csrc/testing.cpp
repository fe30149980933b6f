// _core.testing: the kernel entry points of the tests and benchmarks (one table's kernels on raw rows, the
// interleaved repacking, the memory-bandwidth probe). Not part of the runtime API; bindings.cpp adds the submodule.
#include "testing.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "kernels/kernels.h"
#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace py = pybind11;
using namespace franken;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using ByteArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

// The type of a raw row (or matrix rows) handed to a kernel entry point, checked: a known type (quantized if
// asked), n elements in whole blocks, and exactly the bytes that takes.
DType checked_row(int dtype, bool quantized, int64_t n, py::ssize_t row_size) {
    if (!dtype_known(dtype)) throw Error("unknown dtype");
    const DType t = static_cast<DType>(dtype);
    const FormatInfo& f = format_of(t);
    if (quantized && !f.quantized()) throw Error("not a quantized dtype");
    if (n < 0 || n % f.block_elems || row_size != static_cast<py::ssize_t>(row_bytes(t, n)))
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
    if (!format_of(t).repack_x8 || w.ndim() != 2 || w.shape(0) % kX8)
        throw Error("need 2-D rows of an interleaving type, a multiple of 8 of them");
    py::array_t<uint8_t> out({w.shape(0), w.shape(1)});
    const size_t stride = static_cast<size_t>(w.shape(1));
    for (py::ssize_t g = 0; g < w.shape(0) / kX8; ++g)
        format_of(t).repack_x8(w.data() + g * kX8 * stride, stride, n / kQK, out.mutable_data() + g * kX8 * stride);
    return out;
}

// The interleaved product over all groups of a repacked matrix (see repack_x8_rows).
void gemm_x8_rows(const KernelTable& k, DType t, const uint8_t* w, int rows, int n, const BlockQ8A* act, int n_act,
                  float* out) {
    k.gemmq_x8(t)(w, rows / kX8, n / kQK, act, n_act, out, rows);
}

void check_interleaved(const KernelTable& k, DType t, int rows) {
    if (!format_of(t).repack_x8 || rows % kX8) throw Error("interleaved needs rows of an interleaving type, a multiple of 8");
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
    } else if (format_of(t).quantized()) {
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

void bind_testing(py::module_& parent) {
    py::module_ mod = parent.def_submodule("testing", "Kernel entry points for tests and benchmarks.");
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
