// Scalar reference kernels: the plain definition every SIMD kernel is tested against.
#include "../kernels.h"

namespace franken {
namespace {

float dot_f32(const void* row, const float* x, int n) {
    const float* w = static_cast<const float*>(row);
    float s = 0.f;
    for (int i = 0; i < n; ++i) s += w[i] * x[i];
    return s;
}

float dot_f16(const void* row, const float* x, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    float s = 0.f;
    for (int i = 0; i < n; ++i) s += fp16_to_f32(w[i]) * x[i];
    return s;
}

float dot_bf16(const void* row, const float* x, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    float s = 0.f;
    for (int i = 0; i < n; ++i) s += bf16_to_f32(w[i]) * x[i];
    return s;
}

float dot_q8_0(const void* row, const float* x, int n) {
    const BlockQ8_0* b = static_cast<const BlockQ8_0*>(row);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        float bs = 0.f;
        for (int j = 0; j < kQK; ++j) bs += b[i].qs[j] * x[j];
        s += fp16_to_f32(b[i].d) * bs;
    }
    return s;
}

float dot_q4_0(const void* row, const float* x, int n) {
    const BlockQ4_0* b = static_cast<const BlockQ4_0*>(row);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        float bs = 0.f;
        for (int j = 0; j < kQK / 2; ++j) {
            bs += ((b[i].qs[j] & 0x0f) - 8) * x[j];
            bs += ((b[i].qs[j] >> 4) - 8) * x[j + kQK / 2];
        }
        s += fp16_to_f32(b[i].d) * bs;
    }
    return s;
}

float dot_q4_1(const void* row, const float* x, int n) {
    const BlockQ4_1* b = static_cast<const BlockQ4_1*>(row);
    float s = 0.f;
    for (int i = 0; i < n / kQK; ++i, x += kQK) {
        float qx = 0.f, sx = 0.f;  // sum(q * x) and sum(x): value = d*q + m
        for (int j = 0; j < kQK / 2; ++j) {
            qx += (b[i].qs[j] & 0x0f) * x[j] + (b[i].qs[j] >> 4) * x[j + kQK / 2];
            sx += x[j] + x[j + kQK / 2];
        }
        s += fp16_to_f32(b[i].d) * qx + fp16_to_f32(b[i].m) * sx;
    }
    return s;
}

void to_f32_f16(const void* row, float* out, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    for (int i = 0; i < n; ++i) out[i] = fp16_to_f32(w[i]);
}

void to_f32_bf16(const void* row, float* out, int n) {
    const uint16_t* w = static_cast<const uint16_t*>(row);
    for (int i = 0; i < n; ++i) out[i] = bf16_to_f32(w[i]);
}

void to_f32_q8_0(const void* row, float* out, int n) {
    const BlockQ8_0* b = static_cast<const BlockQ8_0*>(row);
    for (int i = 0; i < n / kQK; ++i, out += kQK) {
        const float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < kQK; ++j) out[j] = d * b[i].qs[j];
    }
}

void to_f32_q4_0(const void* row, float* out, int n) {
    const BlockQ4_0* b = static_cast<const BlockQ4_0*>(row);
    for (int i = 0; i < n / kQK; ++i, out += kQK) {
        const float d = fp16_to_f32(b[i].d);
        for (int j = 0; j < kQK / 2; ++j) {
            out[j] = d * ((b[i].qs[j] & 0x0f) - 8);
            out[j + kQK / 2] = d * ((b[i].qs[j] >> 4) - 8);
        }
    }
}

void to_f32_q4_1(const void* row, float* out, int n) {
    const BlockQ4_1* b = static_cast<const BlockQ4_1*>(row);
    for (int i = 0; i < n / kQK; ++i, out += kQK) {
        const float d = fp16_to_f32(b[i].d), m = fp16_to_f32(b[i].m);
        for (int j = 0; j < kQK / 2; ++j) {
            out[j] = d * (b[i].qs[j] & 0x0f) + m;
            out[j + kQK / 2] = d * (b[i].qs[j] >> 4) + m;
        }
    }
}

void axpy(float a, const float* x, float* y, int n) {
    for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

const KernelTable kTable = {
    "scalar",
    dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q4_0, dot_q4_1,
    to_f32_f16, to_f32_bf16, to_f32_q8_0, to_f32_q4_0, to_f32_q4_1,
    axpy,
};

}  // namespace

const KernelTable* scalar_kernels() { return &kTable; }

}  // namespace franken
