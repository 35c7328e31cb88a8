// quantize_block: fp32 -> GGUF blocks (see quantize_block.h). Q8_0/Q4_0/Q4_1 repeat the gguf package's float
// operations in its order (float32 throughout, and a*b+c rounded twice as numpy does: FMA contraction is off below,
// for builds where the target has FMA, e.g. aarch64). The K types are this file's own scheme, described at each
// function.
#include "runtime/model/quantize_block.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/base/error.h"
#include "runtime/model/dtype.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace zt {
namespace {

inline void put_half(uint8_t * p, float v) {
    const uint16_t h = f32_to_f16(v);
    p[0] = uint8_t(h & 0xff);
    p[1] = uint8_t(h >> 8);
}
// The fp32 value an fp16 field holding v reads back as.
inline float half_round(float v) { return f16_to_f32(f32_to_f16(v)); }

// numpy's np_roundf of the gguf package: round half away from zero, as floor(a) + floor(2 (a - floor(a))).
inline float round_away(float v) {
    const float a = std::fabs(v), f = std::floor(a);
    const float b = f + std::floor(2.0f * (a - f));
    return v < 0 ? -b : (v > 0 ? b : 0.0f);
}
inline int nearest_int(float v) { return int(std::lrint(v)); }

// ---- the reference round-to-nearest types (32 weights a block) ----

// d = max|x| / 127, q = round(x / d) (as x * (1/d), rounded half away from zero).
void block_q8_0(const float * x, uint8_t * b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = d == 0 ? 0.0f : 1.0f / d;
    put_half(b, d);
    for (int i = 0; i < 32; ++i) b[2 + i] = uint8_t(int8_t(round_away(x[i] * id)));
}

// d = -(the weight of largest |x|, first one) / 8, q = trunc(x / d + 8.5) clamped to 0..15; weight j in the low
// nibble of qs[j], weight j+16 in the high one.
void block_q4_0(const float * x, uint8_t * b) {
    int imax = 0;
    for (int i = 1; i < 32; ++i)
        if (std::fabs(x[i]) > std::fabs(x[imax])) imax = i;
    const float d = x[imax] / -8.0f;
    const float id = d == 0 ? 0.0f : 1.0f / d;
    put_half(b, d);
    uint8_t q[32];
    for (int i = 0; i < 32; ++i) q[i] = uint8_t(std::clamp(int(std::trunc(x[i] * id + 8.5f)), 0, 15));
    for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(q[j] | (q[j + 16] << 4));
}

// d = (max - min) / 15, m = min, q = trunc((x - min) / d + 0.5) clamped to 0..15.
void block_q4_1(const float * x, uint8_t * b) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < 32; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
    const float d = (hi - lo) / 15.0f;
    const float id = d == 0 ? 0.0f : 1.0f / d;
    put_half(b, d);
    put_half(b + 2, lo);
    uint8_t q[32];
    for (int i = 0; i < 32; ++i) q[i] = uint8_t(std::clamp(int(std::trunc((x[i] - lo) * id + 0.5f)), 0, 15));
    for (int j = 0; j < 16; ++j) b[4 + j] = uint8_t(q[j] | (q[j + 16] << 4));
}

// ---- the K types: sub-block fits, then 6/8-bit sub-block scales under fp16 super-scales ----

// Least-squares fit of x[0, n) ~ a * q - m with q in 0..nmax and m >= 0 (the offset is the sub-block's min, never
// above 0, as Q4_K/Q5_K store it as dmin * mn with mn >= 0). Candidate grids: the [min(x, 0), max x] range mapped
// onto nmax - 1 .. nmax + 1 steps (21 tries); for each, q rounded onto the grid, then (a, -m) the least-squares line
// through (q, x) and the squared error measured; the best fit is refined twice (re-round q, refit).
void fit_scale_min(const float * x, int n, int nmax, float * scale, float * min_out) {
    float lo = 0, hi = x[0];
    for (int i = 0; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
    if (!(hi > lo)) {   // every weight equal (and >= 0 only if all zero)
        *scale = 0;
        *min_out = -lo;
        return;
    }
    int q[32];
    // fits a, b of x ~ a q + b for the current q (b <= 0); returns the squared error
    auto fit = [&](float & a, float & b) {
        double sq = 0, sqq = 0, sx = 0, sqx = 0;
        for (int i = 0; i < n; ++i) sq += q[i], sqq += double(q[i]) * q[i], sx += x[i], sqx += double(q[i]) * x[i];
        const double det = n * sqq - sq * sq;
        double da = 0, db = 0;
        if (det > 0) {
            da = (n * sqx - sq * sx) / det;
            db = (sqq * sx - sq * sqx) / det;
        }
        if (det <= 0 || db > 0) {   // the min must not be positive: fit through the origin
            db = 0;
            da = sqq > 0 ? sqx / sqq : 0;
        }
        a = float(da), b = float(db);
        double err = 0;
        for (int i = 0; i < n; ++i) {
            const double e = double(a) * q[i] + b - x[i];
            err += e * e;
        }
        return err;
    };
    double best = INFINITY;
    float best_a = (hi - lo) / float(nmax), best_b = lo;
    for (int step = -10; step <= 10; ++step) {
        const float iscale = (float(nmax) + 0.1f * float(step)) / (hi - lo);
        for (int i = 0; i < n; ++i) q[i] = std::clamp(nearest_int(iscale * (x[i] - lo)), 0, nmax);
        float a = 0, b = 0;
        const double err = fit(a, b);
        if (a > 0 && err < best) best = err, best_a = a, best_b = b;
    }
    for (int round = 0; round < 2; ++round) {
        for (int i = 0; i < n; ++i) q[i] = std::clamp(nearest_int((x[i] - best_b) / best_a), 0, nmax);
        float a = 0, b = 0;
        const double err = fit(a, b);
        if (a > 0 && err < best) best = err, best_a = a, best_b = b;
    }
    *scale = best_a;
    *min_out = -best_b;
}

// Least-squares fit of x[0, n) ~ s * q with q in -32..31 (Q6_K): the weight of largest |x| is put at -32 (the
// side with one more level) or near it, 19 grids between, each refit as s = sum(q x) / sum(q q); the least error wins.
float fit_scale_sym(const float * x, int n) {
    float vmax = 0;
    for (int i = 0; i < n; ++i)
        if (std::fabs(x[i]) > std::fabs(vmax)) vmax = x[i];
    if (vmax == 0) return 0;
    double best = INFINITY;
    float best_s = vmax / -32.0f;
    for (int step = -9; step <= 9; ++step) {
        const float iscale = -(32.0f + 0.1f * float(step)) / vmax;
        double sqq = 0, sqx = 0;
        int q[16];
        for (int i = 0; i < n; ++i) {
            q[i] = std::clamp(nearest_int(iscale * x[i]), -32, 31);
            sqq += double(q[i]) * q[i], sqx += double(q[i]) * x[i];
        }
        if (sqq <= 0) continue;
        const float s = float(sqx / sqq);
        double err = 0;
        for (int i = 0; i < n; ++i) {
            const double e = double(s) * q[i] - x[i];
            err += e * e;
        }
        if (err < best) best = err, best_s = s;
    }
    return best_s;
}

// Q4_K (five_bits false) / Q5_K: 8 sub-blocks of 32 fitted by fit_scale_min; d = max scale / 63 and dmin = max min
// / 63 stored as fp16, each sub-block's 6-bit sc and mn the best of round(scale / d) +-1 and round(min / dmin) +-1
// against the fp16 values, then every q = round((x + dmin mn) / (d sc)) on the grid as it reads back.
void block_qk(const float * x, uint8_t * b, bool five_bits) {
    const int nmax = five_bits ? 31 : 15;
    float scale[8], mins[8], max_scale = 0, max_min = 0;
    for (int s = 0; s < 8; ++s) {
        fit_scale_min(x + 32 * s, 32, nmax, &scale[s], &mins[s]);
        max_scale = std::max(max_scale, scale[s]);
        max_min = std::max(max_min, mins[s]);
    }
    const float d = half_round(max_scale / 63.0f), dmin = half_round(max_min / 63.0f);
    put_half(b, d);
    put_half(b + 2, dmin);
    uint8_t * scales = b + 4;
    uint8_t * qh = five_bits ? b + 16 : nullptr;
    uint8_t * qs = five_bits ? b + 48 : b + 16;
    std::memset(scales, 0, 12);
    if (qh) std::memset(qh, 0, 32);
    std::memset(qs, 0, 128);
    for (int s = 0; s < 8; ++s) {
        const float * xs = x + 32 * s;
        // the 6-bit sc, mn nearest the fit, and their neighbours: the pair whose grid (as read back) fits best
        const int sc0 = d > 0 ? std::clamp(nearest_int(scale[s] / d), 0, 63) : 0;
        const int mn0 = dmin > 0 ? std::clamp(nearest_int(mins[s] / dmin), 0, 63) : 0;
        int sc = sc0, mn = mn0;
        double best = INFINITY;
        for (int a = std::max(0, sc0 - 1); a <= std::min(63, sc0 + 1); ++a)
            for (int m = std::max(0, mn0 - 1); m <= std::min(63, mn0 + 1); ++m) {
                const float dl = d * float(a), ml = dmin * float(m);
                double err = 0;
                for (int l = 0; l < 32; ++l) {
                    const int q = dl > 0 ? std::clamp(nearest_int((xs[l] + ml) / dl), 0, nmax) : 0;
                    const double e = double(dl * float(q) - ml) - xs[l];
                    err += e * e;
                }
                if (err < best) best = err, sc = a, mn = m;
            }
        // the 12 scale bytes: sub-blocks 0..3 in the low 6 bits of bytes 0..3 (sc) and 4..7 (mn); 4..7 split into a
        // nibble of bytes 8..11 (sc low, mn high) and 2 bits at the top of bytes 0..3 (sc) and 4..7 (mn)
        if (s < 4) {
            scales[s] |= uint8_t(sc);
            scales[s + 4] |= uint8_t(mn);
        } else {
            scales[s + 4] = uint8_t((sc & 15) | ((mn & 15) << 4));
            scales[s - 4] |= uint8_t((sc >> 4) << 6);
            scales[s] |= uint8_t((mn >> 4) << 6);
        }
        const float dl = d * float(sc), ml = dmin * float(mn);
        for (int l = 0; l < 32; ++l) {
            const int q = dl > 0 ? std::clamp(nearest_int((xs[l] + ml) / dl), 0, nmax) : 0;
            qs[32 * (s / 2) + l] |= uint8_t((q & 15) << (s % 2 == 0 ? 0 : 4));
            if (qh) qh[l] |= uint8_t(((q >> 4) & 1) << s);
        }
    }
}

// Q6_K: 16 sub-blocks of 16 fitted by fit_scale_sym; d = max |scale| / 127 stored as fp16, each int8 scale the best
// of round(scale / d) +-1, then q = round(x / (d sc)) + 32 in 0..63 (low 4 bits in ql, high 2 in qh; quant_block.cpp).
void block_q6_k(const float * x, uint8_t * b) {
    float scale[16], amax = 0;
    for (int s = 0; s < 16; ++s) {
        scale[s] = fit_scale_sym(x + 16 * s, 16);
        amax = std::max(amax, std::fabs(scale[s]));
    }
    const float d = half_round(amax / 127.0f);
    uint8_t * ql = b;
    uint8_t * qh = b + 128;
    int8_t * sc = reinterpret_cast<int8_t *>(b + 192);
    std::memset(b, 0, 192);
    put_half(b + 208, d);
    for (int s = 0; s < 16; ++s) {   // the int8 scale nearest the fit, or a neighbour when its grid fits better
        const int s0 = d > 0 ? std::clamp(nearest_int(scale[s] / d), -127, 127) : 0;
        double best = INFINITY;
        sc[s] = int8_t(s0);
        for (int a = std::max(-127, s0 - 1); a <= std::min(127, s0 + 1); ++a) {
            const float step = d * float(a);
            double err = 0;
            for (int l = 0; l < 16; ++l) {
                const int q = step != 0 ? std::clamp(nearest_int(x[16 * s + l] / step), -32, 31) : 0;
                const double e = double(step * float(q)) - x[16 * s + l];
                err += e * e;
            }
            if (err < best) best = err, sc[s] = int8_t(a);
        }
    }
    for (int h = 0; h < 2; ++h)
        for (int p = 0; p < 128; ++p) {
            const int i = 128 * h + p, c = p / 32, l = p % 32;
            const float step = d * float(sc[i / 16]);
            const int q = (step != 0 ? std::clamp(nearest_int(x[i] / step), -32, 31) : 0) + 32;
            ql[64 * h + 32 * (c % 2) + l] |= uint8_t((q & 15) << (c < 2 ? 0 : 4));
            qh[32 * h + l] |= uint8_t((q >> 4) << (2 * c));
        }
}

}  // namespace

void quantize_row(QuantType t, const float * x, void * out, int64_t n) {
    const QuantLayout & l = quant_layout(t);
    const int64_t nb = quant_row_bytes(t, n) / l.block_bytes;
    uint8_t * b = static_cast<uint8_t *>(out);
    for (int64_t i = 0; i < nb; ++i, b += l.block_bytes, x += l.block_weights) {
        switch (t) {
            case QuantType::Q8_0: block_q8_0(x, b); break;
            case QuantType::Q4_0: block_q4_0(x, b); break;
            case QuantType::Q4_1: block_q4_1(x, b); break;
            case QuantType::Q4_K: block_qk(x, b, false); break;
            case QuantType::Q5_K: block_qk(x, b, true); break;
            case QuantType::Q6_K: block_q6_k(x, b); break;
        }
    }
}

}  // namespace zt
