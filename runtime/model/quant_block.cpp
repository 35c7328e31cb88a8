// quant_block: GGUF block layouts and their scalar dequantization (see quant_block.h). Written from the block
// structs of ggml's GGUF spec; each weight is computed with the same float operations, in the same order, as the
// gguf PyPI package's dequantize (ggml's Python reference), so tests/data/quant's fixtures match bit for bit.
#include "runtime/model/quant_block.h"

#include "runtime/base/error.h"
#include "runtime/model/dtype.h"

namespace zt {
namespace {

constexpr QuantLayout kLayouts[] = {
    {32, 34, "Q8_0"}, {32, 18, "Q4_0"}, {32, 20, "Q4_1"}, {256, 144, "Q4_K"}, {256, 176, "Q5_K"}, {256, 210, "Q6_K"},
};

inline float half_at(const uint8_t * p) { return f16_to_f32(uint16_t(p[0] | (p[1] << 8))); }

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block's 12 scale bytes.
inline void scale_min_k4(int j, const uint8_t * s, int * sc, int * mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

void block_q8_0(const uint8_t * b, float * y) {
    const float d = half_at(b);
    for (int i = 0; i < 32; ++i) y[i] = float(int8_t(b[2 + i])) * d;
}
void block_q4_0(const uint8_t * b, float * y) {
    const float d = half_at(b);
    for (int j = 0; j < 16; ++j) {
        y[j] = d * float((b[2 + j] & 15) - 8);
        y[j + 16] = d * float((b[2 + j] >> 4) - 8);
    }
}
void block_q4_1(const uint8_t * b, float * y) {
    const float d = half_at(b), m = half_at(b + 2);
    for (int j = 0; j < 16; ++j) {
        y[j] = d * float(b[4 + j] & 15) + m;
        y[j + 16] = d * float(b[4 + j] >> 4) + m;
    }
}
// Q4_K and Q5_K: 8 sub-blocks of 32; sub-block 2c takes the low nibbles of qs[32c .. 32c+32), 2c+1 the high ones;
// Q5_K's 5th bit of weight l of sub-block s is bit s of qh[l].
void block_qk(const uint8_t * b, float * y, bool five_bits) {
    const float d = half_at(b), dmin = half_at(b + 2);
    const uint8_t * scales = b + 4;
    const uint8_t * qh = five_bits ? b + 16 : nullptr;
    const uint8_t * qs = five_bits ? b + 48 : b + 16;
    for (int s = 0; s < 8; ++s) {
        int sc = 0, mn = 0;
        scale_min_k4(s, scales, &sc, &mn);
        const float dl = d * float(sc), ml = dmin * float(mn);
        for (int l = 0; l < 32; ++l) {
            int q = (s % 2 == 0) ? (qs[32 * (s / 2) + l] & 15) : (qs[32 * (s / 2) + l] >> 4);
            if (qh) q |= ((qh[l] >> s) & 1) << 4;
            y[32 * s + l] = dl * float(q) - ml;
        }
    }
}
// Q6_K: two halves of 128; in half h, weight p (chunk c = p / 32, l = p % 32) has its low 4 bits in ql[64h + 32(c%2)
// + l] (low nibble for c < 2, high for c >= 2) and its high 2 bits at bit 2c of qh[32h + l]; scale p_global / 16.
void block_q6_k(const uint8_t * b, float * y) {
    const uint8_t * ql = b;
    const uint8_t * qh = b + 128;
    const int8_t * sc = reinterpret_cast<const int8_t *>(b + 192);
    const float d = half_at(b + 208);
    for (int h = 0; h < 2; ++h)
        for (int p = 0; p < 128; ++p) {
            const int c = p / 32, l = p % 32;
            const uint8_t lo = ql[64 * h + 32 * (c % 2) + l];
            const int q = ((c < 2 ? lo & 15 : lo >> 4) | (((qh[32 * h + l] >> (2 * c)) & 3) << 4)) - 32;
            const int i = 128 * h + p;
            y[i] = (d * float(sc[i / 16])) * float(q);
        }
}

}  // namespace

const QuantLayout & quant_layout(QuantType t) { return kLayouts[int(t)]; }

std::optional<QuantType> quant_type_from_name(const std::string & name) {
    for (int i = 0; i < int(sizeof kLayouts / sizeof kLayouts[0]); ++i)
        if (name == kLayouts[i].name) return QuantType(i);
    return std::nullopt;
}

double quant_bits_per_weight(QuantType t) {
    const QuantLayout & l = quant_layout(t);
    return 8.0 * l.block_bytes / l.block_weights;
}

int64_t quant_row_bytes(QuantType t, int64_t n) {
    const QuantLayout & l = quant_layout(t);
    ZT_CHECK(n >= 0 && n % l.block_weights == 0,
             "{} weights come in blocks of {}: a row of {} weights is not a whole number of blocks", l.name,
             l.block_weights, n);
    return n / l.block_weights * l.block_bytes;
}

void dequantize_row(QuantType t, const void * blocks, float * out, int64_t n) {
    const QuantLayout & l = quant_layout(t);
    const int64_t nb = quant_row_bytes(t, n) / l.block_bytes;
    const uint8_t * b = static_cast<const uint8_t *>(blocks);
    for (int64_t i = 0; i < nb; ++i, b += l.block_bytes, out += l.block_weights) {
        switch (t) {
            case QuantType::Q8_0: block_q8_0(b, out); break;
            case QuantType::Q4_0: block_q4_0(b, out); break;
            case QuantType::Q4_1: block_q4_1(b, out); break;
            case QuantType::Q4_K: block_qk(b, out, false); break;
            case QuantType::Q5_K: block_qk(b, out, true); break;
            case QuantType::Q6_K: block_q6_k(b, out); break;
        }
    }
}

}  // namespace zt
