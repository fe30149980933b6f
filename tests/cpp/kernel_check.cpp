// Every kernel table this CPU runs, against the scalar table, on random data and odd sizes. A standalone program
// so the same check runs natively and, cross-compiled, under qemu (tests/test_cross.py).
// Prints one line per table and a closing "N passed, N failed"; exits non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

using namespace franken;

#if defined(FRANKEN_EXTRA_TABLE)
namespace franken {
// A table built only for this check (vnni_emulated.cpp: the VNNI kernels with VPDPBUSD emulated), checked as well.
const KernelTable* extra_kernels();
}  // namespace franken
#endif

namespace {

std::mt19937 rng(12345);

float randn() { return std::normal_distribution<float>(0.f, 1.f)(rng); }
uint16_t f16_of(float f) {  // simple truncating encoder: any half value is a valid test input
    uint32_t b;
    std::memcpy(&b, &f, 4);
    const int e = static_cast<int>((b >> 23) & 0xff) - 127 + 15;
    if (e <= 0) return static_cast<uint16_t>((b >> 16) & 0x8000);
    return static_cast<uint16_t>(((b >> 16) & 0x8000) | (std::min(e, 30) << 10) | ((b >> 13) & 0x3ff));
}

std::vector<uint8_t> random_row(DType t, int n) {
    std::vector<uint8_t> row(row_bytes(t, n));
    for (auto& byte : row) byte = static_cast<uint8_t>(rng());
    const int bb = format_of(t).block_bytes;
    for (size_t off = 0; off < row.size(); off += bb) {  // sane scales (random bits could be NaN/inf)
        if (t == DType::F32) {
            const float v = randn();
            std::memcpy(&row[off], &v, 4);
        } else if (t == DType::F16 || t == DType::BF16) {
            const float v = randn();
            uint32_t b;
            std::memcpy(&b, &v, 4);
            const uint16_t h = t == DType::F16 ? f16_of(v) : static_cast<uint16_t>(b >> 16);
            std::memcpy(&row[off], &h, 2);
        } else {
            const uint16_t d = f16_of(0.01f + 0.05f * std::fabs(randn())), m = f16_of(-0.3f * std::fabs(randn()));
            const size_t at = off + static_cast<size_t>(format_of(t).header_at);
            std::memcpy(&row[at], &d, 2);
            if (format_of(t).header_halves > 1) std::memcpy(&row[at + 2], &m, 2);  // a minimum
        }
    }
    return row;
}

bool close(double a, double b, double scale) { return std::fabs(a - b) <= 1e-4 * (1 + scale); }

}  // namespace

// Arguments: the tables to check, of those this CPU has (default: all it has). The scalar table does not depend on a
// vector length, so a run per RISC-V vector length need not check it again.
int main(int argc, char** argv) {
    const std::vector<std::string> wanted(argv + 1, argv + argc);
    int passed = 0, failed = 0;
    const KernelTable& ref = *scalar_kernels();
    auto check = [&](bool ok, const std::string& what) {
        ok ? ++passed : ++failed;
        if (!ok) std::printf("FAIL %s\n", what.c_str());
    };
    std::vector<const KernelTable*> tables;
    std::printf("available:");
    for (const std::string& name : available_kernels()) {
        std::printf(" %s", name.c_str());
        if (wanted.empty() || std::find(wanted.begin(), wanted.end(), name) != wanted.end())
            tables.push_back(&kernels_by_name(name));
    }
    std::printf("\n");
#if defined(FRANKEN_EXTRA_TABLE)
    tables.push_back(extra_kernels());
#endif
    for (const KernelTable* table : tables) {
        const KernelTable& k = *table;
        const std::string name = k.name;
        for (int n : {32, 64, 96, 256, 576, 1536, 4128}) {
            std::vector<float> x(n);
            for (auto& v : x) v = randn();
            std::vector<BlockQ8A> qa(n / kQK), qr(n / kQK);
            k.quantize_act(x.data(), qa.data(), n);
            ref.quantize_act(x.data(), qr.data(), n);
            check(std::memcmp(qa.data(), qr.data(), qa.size() * sizeof(BlockQ8A)) == 0, name + " quantize_act n=" + std::to_string(n));
            for (const FormatInfo& f : kFormats) {  // every format of the table
                const DType t = f.id;
                if (n % f.block_elems) continue;  // superblock formats: whole 256-element blocks
                const int len = !f.quantized() && n > 64 ? n - 7 : n;  // float rows: odd lengths too
                const auto row = random_row(t, len);
                std::vector<float> a(len), b(len);
                k.to_f32(t, row.data(), a.data(), len);
                ref.to_f32(t, row.data(), b.data(), len);
                double mag = 0;
                for (int i = 0; i < len; ++i) mag += std::fabs(b[i] * x[i]);
                check(a == b, name + " to_f32 " + format_of(t).name + " n=" + std::to_string(len));
                check(close(k.dot(t)(row.data(), x.data(), len), ref.dot(t)(row.data(), x.data(), len), mag),
                      name + " dot " + format_of(t).name + " n=" + std::to_string(len));
                if (!f.quantized()) {  // the model's decode and prompt paths must agree bit for bit (batch invariance)
                    const float direct = k.dot(t)(row.data(), x.data(), len);
                    const float decoded = k.dot(DType::F32)(a.data(), x.data(), len);
                    check(std::memcmp(&direct, &decoded, 4) == 0,
                          name + " dot " + format_of(t).name + " == dot_f32 of to_f32, n=" + std::to_string(len));
                    continue;
                }
                check(close(k.dotq(t)(row.data(), qr.data(), n), ref.dotq(t)(row.data(), qr.data(), n), mag),
                      name + " dotq " + format_of(t).name + " n=" + std::to_string(n));
                // matrix-matrix: 3 rows (this one three times) x 5 activation rows
                std::vector<uint8_t> rows;
                for (int r = 0; r < 3; ++r) rows.insert(rows.end(), row.begin(), row.end());
                std::vector<BlockQ8A> acts;
                for (int r = 0; r < 5; ++r) acts.insert(acts.end(), qr.begin(), qr.end());
                std::vector<float> g(15), h(15);
                k.gemmq(t)(rows.data(), 3, row.size(), acts.data(), 5, n, g.data(), 3);
                ref.gemmq(t)(rows.data(), 3, row.size(), acts.data(), 5, n, h.data(), 3);
                bool ok = true;
                for (int i = 0; i < 15; ++i) ok &= close(g[i], h[i], mag);
                check(ok, name + " gemmq " + format_of(t).name + " n=" + std::to_string(n));
            }
            // Interleaved formats: three groups of eight distinct random rows repacked (a kernel may pair
            // groups: a pair and a single), times 1, 6 and 13 activation rows (tiles of eight and four, and the
            // rest), against the scalar twin and the scalar dot product of each stored row.
            constexpr int kGroups = 3, kRows = kGroups * kX8;
            for (const FormatInfo& f : kFormats) {
                const DType t = f.id;
                if (!k.gemmq_x8(t) || n % f.block_elems) continue;
                std::vector<uint8_t> rows8;
                for (int r = 0; r < kRows; ++r) {
                    const auto row = random_row(t, n);
                    rows8.insert(rows8.end(), row.begin(), row.end());
                }
                const size_t stride = row_bytes(t, n);
                std::vector<uint8_t> packed(rows8.size());
                for (int g = 0; g < kGroups; ++g)
                    f.repack_x8(rows8.data() + g * kX8 * stride, stride, n / kQK, packed.data() + g * kX8 * stride);
                for (int n_act : {1, 6, 13}) {
                    std::vector<BlockQ8A> acts;
                    for (int r = 0; r < n_act; ++r) {
                        std::vector<float> xr(n);
                        for (auto& v : xr) v = randn();
                        std::vector<BlockQ8A> q(n / kQK);
                        ref.quantize_act(xr.data(), q.data(), n);
                        acts.insert(acts.end(), q.begin(), q.end());
                    }
                    constexpr int kLdo = kRows + 1;  // outputs need not be contiguous
                    std::vector<float> g(n_act * kLdo), h(n_act * kLdo);
                    k.gemmq_x8(t)(packed.data(), kGroups, n / kQK, acts.data(), n_act, g.data(), kLdo);
                    ref.gemmq_x8(t)(packed.data(), kGroups, n / kQK, acts.data(), n_act, h.data(), kLdo);
                    bool twin = true, dots = true;
                    for (int a = 0; a < n_act; ++a)
                        for (int r = 0; r < kRows; ++r) {
                            const double d = ref.dotq(t)(rows8.data() + r * stride, &acts[a * (n / kQK)], n);
                            twin &= close(g[a * kLdo + r], h[a * kLdo + r], std::fabs(d) + n);
                            dots &= close(h[a * kLdo + r], d, std::fabs(d) + n);
                        }
                    const std::string what = std::string(" gemmq_x8 ") + format_of(t).name + " n=" + std::to_string(n) +
                                             " acts=" + std::to_string(n_act);
                    check(twin, name + what + " vs scalar");
                    check(dots, name + what + " vs stored rows");
                }
            }
        }
        // The exponentials: SwiGLU and softmax numerators over the range a model meets (and past the clamp),
        // lengths with and without a vector tail.
        for (int n : {7, 64, 1539}) {
            std::vector<float> g(n), u(n), g2, x(n), x2;
            for (int i = 0; i < n; ++i) {
                g[i] = 12.f * randn();
                u[i] = randn();
                x[i] = i == 0 ? -200.f : 15.f * randn();
            }
            g2 = g;
            x2 = x;
            k.swiglu(g.data(), u.data(), n);
            ref.swiglu(g2.data(), u.data(), n);
            bool ok = true;
            for (int i = 0; i < n; ++i) ok &= std::fabs(g[i] - g2[i]) <= 1e-6f * (1.f + std::fabs(g2[i]));
            check(ok, name + " swiglu n=" + std::to_string(n));
            const float max = *std::max_element(x.begin(), x.end());
            const float sa = k.exp_sum(x.data(), n, max), sb = ref.exp_sum(x2.data(), n, max);
            ok = std::fabs(sa - sb) <= 1e-5f * sb;
            for (int i = 0; i < n; ++i) ok &= std::fabs(x[i] - x2[i]) <= 1e-6f * x2[i] + 1e-30f;
            check(ok, name + " exp_sum n=" + std::to_string(n));
        }
        {  // NaN propagates as through std::exp: a broken score or activation shows, it is not averaged away
            std::vector<float> x(64, 0.5f), g(64, 0.5f), u(64, 1.f);
            x[3] = g[5] = NAN;
            const float sum = k.exp_sum(x.data(), 64, 1.f);
            k.swiglu(g.data(), u.data(), 64);
            check(std::isnan(sum) && std::isnan(x[3]) && std::isnan(g[5]) && !std::isnan(g[4]),
                  name + " exp_sum/swiglu NaN");
        }
        // Attention's passes over a cache slice: each KV type, head dims with and without a SIMD path (48), one to
        // nine queries (tiles and their rest), rows at a stride with the head's slice at an offset, as in the model.
        for (DType t : {DType::F16, DType::F32, DType::Q8_0})
            for (int hd : {32, 48, 64, 128})
                for (int n_q : {1, 3, 4, 9}) {
                    if (t == DType::Q8_0 && hd % kQK) continue;  // a Q8_0 cache needs whole blocks per head
                    const int n = 37, n_heads = 3, head = 1;
                    std::vector<uint8_t> cache;
                    for (int j = 0; j < n; ++j) {
                        const auto row = random_row(t, n_heads * hd);
                        cache.insert(cache.end(), row.begin(), row.end());
                    }
                    const size_t stride = row_bytes(t, n_heads * hd), off = row_bytes(t, head * hd);
                    std::vector<float> q(n_q * hd), p(n_q * n), sa(n_q * n), sb(n_q * n);
                    for (auto& v : q) v = randn();
                    for (auto& v : p) v = std::fabs(randn());
                    k.kv_scores(t, cache.data() + off, stride, n, q.data(), n_q, hd, sa.data(), n);
                    ref.kv_scores(t, cache.data() + off, stride, n, q.data(), n_q, hd, sb.data(), n);
                    std::vector<float> ma(n_q * hd, NAN), mb(n_q * hd, NAN);  // overwritten, not accumulated
                    k.kv_mix(t, cache.data() + off, stride, n, p.data(), n, n_q, hd, ma.data());
                    ref.kv_mix(t, cache.data() + off, stride, n, p.data(), n, n_q, hd, mb.data());
                    bool ok = true;
                    for (size_t i = 0; i < sa.size(); ++i) ok &= close(sa[i], sb[i], std::fabs(sb[i]) + hd);
                    for (size_t i = 0; i < ma.size(); ++i) ok &= close(ma[i], mb[i], std::fabs(mb[i]) + n);
                    check(ok, name + " kv_scores/kv_mix " + format_of(t).name + " hd=" + std::to_string(hd) +
                                  " queries=" + std::to_string(n_q));
                }
        std::printf("%s: checked against scalar\n", name.c_str());
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
