// quant_kernels_test: the quantized-weight launchers of kernels/quant_*.cu (dequantize_rows, embedding_quant,
// quant_gemv), run by the kernel emulator (see kernel_emulation_test.cpp), against the scalar reference
// zt::dequantize_row (runtime/model/quant_block.h) for Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K on random blocks
// (random bytes, finite f16 scales, some subnormal), odd row counts, one to three blocks per row and 2304 weights:
//  - dequantize_rows to f32 is bit-identical to dequantize_row; to f16 / bf16 it is that value rounded by
//    dtype.h's f32_to_f16 / f32_to_bf16, bit for bit; rows by index (embedding) or a range (GEMM tiles);
//  - quant_gemv (T = 1, 3, 8, 17) is within NMSE 1e-6 of the double-precision dot of the dequantized weights
//    (fp32 accumulation), bit-identical when run again, and row t's result is the same bits as running row t
//    alone (the reduction order depends on K only);
//  - the CPU backend's quantized matmul / embedding (the ops' spec) agree: NMSE <= 1e-7, the same bits;
//  - bad sizes (K not whole blocks) are refused with cudaErrorInvalidValue.
// Outputs start as NaN between guard bytes that must stay intact. Prints the largest GEMV NMSE per type.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/backend/backend.h"
#include "runtime/model/dtype.h"
#include "runtime/model/quant_block.h"
#include "tests/kernel_emulation/emu_test_support.h"

namespace {

namespace zk = zt::kernels;
using namespace emu_test;
using zt::QuantType;

const QuantType kTypes[] = {QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1,
                            QuantType::Q4_K, QuantType::Q5_K, QuantType::Q6_K};

zk::QType qtype(QuantType q) { return zk::QType(int(q)); }   // same order (kernels.h)
const char * qname(QuantType q) { return zt::quant_layout(q).name; }

// Row lengths: one, two and three blocks (K = 32, 64, 96 or 256, 512, 768).
std::vector<int64_t> ks(QuantType q) {
    const int64_t b = zt::quant_layout(q).block_weights;
    return {b, 2 * b, 3 * b};
}

// A random f16 scale: mostly |d| < 0.1, sometimes a subnormal.
uint16_t random_scale() {
    if (irand(0, 15) == 0) return uint16_t(irand(1, 0x3ff) | (irand(0, 1) << 15));
    return zt::f32_to_f16(frand(-0.1f, 0.1f));
}

// R rows of K weights of type q: random bytes, then every f16 field of every block a finite scale.
std::vector<unsigned char> random_blocks(QuantType q, int64_t R, int64_t K) {
    const zt::QuantLayout & l = zt::quant_layout(q);
    const int64_t nb = R * (K / l.block_weights);
    std::vector<unsigned char> b(size_t(nb * l.block_bytes));
    for (auto & c : b) c = static_cast<unsigned char>(irand(0, 255));
    std::vector<int> halves;   // byte offsets of the f16 fields in a block
    switch (q) {
        case QuantType::Q8_0: case QuantType::Q4_0: halves = {0}; break;
        case QuantType::Q4_1: case QuantType::Q4_K: case QuantType::Q5_K: halves = {0, 2}; break;
        case QuantType::Q6_K: halves = {208}; break;
    }
    for (int64_t i = 0; i < nb; ++i)
        for (int off : halves) {
            const uint16_t h = random_scale();
            std::memcpy(&b[size_t(i * l.block_bytes + off)], &h, 2);
        }
    return b;
}

// The reference: the R x K weights as dequantize_row gives them.
std::vector<float> reference_rows(QuantType q, const unsigned char * w, int64_t R, int64_t K) {
    std::vector<float> out(size_t(R * K));
    const int64_t row_bytes = zt::quant_row_bytes(q, K);
    for (int64_t r = 0; r < R; ++r) zt::dequantize_row(q, w + r * row_bytes, &out[size_t(r * K)], K);
    return out;
}

// ---- dequantize_rows ---------------------------------------------------------------------------------------------
// out (R,K) of type ot against the reference, bit for bit; `indexed`: rows by an index array, else a range row0..
void dequant_case(QuantType q, zk::WType ot, int64_t R, int64_t K, bool indexed, size_t off) {
    const char * on = ot == zk::WType::f32 ? "f32" : ot == zk::WType::f16 ? "f16" : "bf16";
    const std::string what = std::string(qname(q)) + "->" + on + cfg({{"R", R}, {"K", K}, {"indexed", indexed},
                                                                       {"off", off}});
    const int64_t V = R + 5, row_bytes = zt::quant_row_bytes(q, K);
    const std::vector<unsigned char> w = random_blocks(q, V, K);
    Buf<unsigned char> wb(w.size(), 1);   // blocks need no alignment
    wb.set(w);
    Buf<int32_t> rows(static_cast<size_t>(R));
    const int64_t row0 = indexed ? 0 : irand(0, 5);
    for (int64_t r = 0; r < R; ++r) rows[size_t(r)] = indexed ? irand(0, int(V) - 1) : int32_t(row0 + r);
    const size_t es = ot == zk::WType::f32 ? 4 : 2;
    Buf<unsigned char> out(size_t(R * K) * es, off);
    out.fill_nan();
    ASSERT_EQ(zk::dequantize_rows(out.p, ot, wb.p, qtype(q), indexed ? rows.p : nullptr, row0, R, K, nullptr),
              cudaSuccess) << what;
    std::vector<unsigned char> want(size_t(R * K) * es);
    std::vector<float> ref(static_cast<size_t>(K));
    for (int64_t r = 0; r < R; ++r) {
        zt::dequantize_row(q, w.data() + rows[size_t(r)] * row_bytes, ref.data(), K);
        for (int64_t k = 0; k < K; ++k) {
            unsigned char * dst = &want[size_t(r * K + k) * es];
            if (ot == zk::WType::f32) {
                std::memcpy(dst, &ref[size_t(k)], 4);
            } else {
                const uint16_t h = ot == zk::WType::f16 ? zt::f32_to_f16(ref[size_t(k)]) : zt::f32_to_bf16(ref[size_t(k)]);
                std::memcpy(dst, &h, 2);
            }
        }
    }
    size_t differ = 0;
    for (size_t i = 0; i < want.size(); i += es) differ += std::memcmp(out.p + i, &want[i], es) != 0;
    EXPECT_EQ(differ, 0u) << "dequantize_rows " << what << ": " << differ << " of " << R * K
                          << " weights differ from dequantize_row";
    EXPECT_TRUE(out.guards_ok()) << "dequantize_rows wrote outside its output " << what;
}

TEST(KernelEmulationQuant, DequantizeRowsIsBitExact) {
    for (QuantType q : kTypes)
        for (int64_t K : ks(q))
            for (int64_t R : {1, 3, 17})
                for (zk::WType ot : {zk::WType::f32, zk::WType::f16, zk::WType::bf16}) {
                    dequant_case(q, ot, R, K, R != 3, 0);
                    if (K == ks(q)[1]) dequant_case(q, ot, R, K, R == 3, ot == zk::WType::f32 ? 4 : 2);   // misaligned out
                }
    for (QuantType q : kTypes)   // 288 groups a row: two blocks of threads along the row
        for (zk::WType ot : {zk::WType::f32, zk::WType::bf16}) dequant_case(q, ot, 3, 2304, true, 0);
}

TEST(KernelEmulationQuant, EmbeddingIsBitExact) {
    for (QuantType q : kTypes)
        for (int64_t C : ks(q))
            for (int64_t T : {1, 3, 17})
                for (size_t off : {0, 4}) {
                    const std::string what = std::string(qname(q)) + cfg({{"T", T}, {"C", C}, {"off", off}});
                    const int64_t V = 11;
                    const std::vector<unsigned char> table = random_blocks(q, V, C);
                    Buf<unsigned char> tb(table.size(), 3);
                    tb.set(table);
                    Buf<int32_t> tok(static_cast<size_t>(T));
                    for (int64_t t = 0; t < T; ++t) tok[size_t(t)] = irand(0, int(V) - 1);
                    Buf<float> out(size_t(T * C), off);
                    out.fill_nan();
                    ASSERT_EQ(zk::embedding_quant(out.p, tok.p, tb.p, qtype(q), T, C, nullptr), cudaSuccess) << what;
                    const std::vector<float> all = reference_rows(q, table.data(), V, C);
                    size_t differ = 0;
                    for (int64_t t = 0; t < T; ++t)
                        differ += std::memcmp(out.p + t * C, &all[size_t(tok[size_t(t)] * C)], size_t(C) * 4) != 0;
                    EXPECT_EQ(differ, 0u) << "embedding_quant " << what << ": " << differ << " rows differ";
                    EXPECT_TRUE(out.guards_ok()) << "embedding_quant wrote outside its output " << what;
                }
}

// ---- quant_gemv ----------------------------------------------------------------------------------------------------
std::map<std::string, double> & gemv_nmse_max() {
    static std::map<std::string, double> m;
    return m;
}

void gemv_case(QuantType q, int64_t T, int64_t N, int64_t K, size_t off) {
    const std::string what = std::string(qname(q)) + cfg({{"T", T}, {"N", N}, {"K", K}, {"off", off}});
    const std::vector<unsigned char> w = random_blocks(q, N, K);
    Buf<unsigned char> wb(w.size(), 1);
    wb.set(w);
    const std::vector<float> x = randv(size_t(T * K), -2, 2);
    Buf<float> xb(x.size(), off), out(size_t(T * N), off), again(size_t(T * N));
    xb.set(x);
    out.fill_nan();
    again.fill_nan();
    ASSERT_EQ(zk::quant_gemv(out.p, xb.p, wb.p, qtype(q), T, N, K, nullptr), cudaSuccess) << what;
    // reference: the dequantized weights, a double dot
    const std::vector<float> wf = reference_rows(q, w.data(), N, K);
    double num = 0, den = 0;
    size_t bad = 0;
    for (int64_t t = 0; t < T; ++t)
        for (int64_t n = 0; n < N; ++n) {
            double ref = 0;
            for (int64_t k = 0; k < K; ++k) ref += double(wf[size_t(n * K + k)]) * double(x[size_t(t * K + k)]);
            const float got = out.p[t * N + n];
            bad += !std::isfinite(got);
            num += (double(got) - ref) * (double(got) - ref);
            den += ref * ref;
        }
    const double nmse = den > 0 ? num / den : (num == 0 ? 0 : INFINITY);
    EXPECT_EQ(bad, 0u) << "quant_gemv " << what << ": " << bad << " non-finite outputs (NaN: element not written?)";
    EXPECT_LE(nmse, 1e-6) << "quant_gemv " << what;
    double & m = gemv_nmse_max()[qname(q)];
    m = std::max(m, bad ? INFINITY : nmse);
    EXPECT_TRUE(out.guards_ok()) << "quant_gemv wrote outside its output " << what;
    // run to run: the same bits
    ASSERT_EQ(zk::quant_gemv(again.p, xb.p, wb.p, qtype(q), T, N, K, nullptr), cudaSuccess) << what;
    EXPECT_EQ(std::memcmp(out.p, again.p, out.n * 4), 0) << "quant_gemv not reproducible " << what;
    // a row alone gives the bits it gets in the batch (the last row: another chunk of rows when T > 8)
    if (T > 1) {
        Buf<float> one(static_cast<size_t>(N));
        one.fill_nan();
        ASSERT_EQ(zk::quant_gemv(one.p, xb.p + (T - 1) * K, wb.p, qtype(q), 1, N, K, nullptr), cudaSuccess) << what;
        EXPECT_EQ(std::memcmp(one.p, out.p + (T - 1) * N, size_t(N) * 4), 0)
            << "quant_gemv: row " << T - 1 << " alone differs from the batch " << what;
    }
}

TEST(KernelEmulationQuant, GemvMatchesTheDequantizedDot) {
    for (QuantType q : kTypes)
        for (int64_t K : ks(q))
            for (int64_t N : {1, 7, 67})
                for (int64_t T : {1, 3, 8, 17}) {
                    if (N == 67 && K == ks(q)[2] && T != 17) continue;   // keep it quick
                    gemv_case(q, T, N, K, 0);
                    if (N == 7) gemv_case(q, T, N, K, 4);   // misaligned x and out
                }
    for (QuantType q : kTypes) gemv_case(q, 3, 5, 2304, 0);   // 288 groups a row: 9 per lane
    for (const auto & [name, m] : gemv_nmse_max()) std::printf("quant_gemv NMSE max %-5s %.3g\n", name.c_str(), m);
}

// The CPU backend (the spec of every op) on the same quantized weights: quant_gemv within NMSE 1e-7 of its matmul
// (both fp32 sums, in other orders), embedding_quant the same bits as its embedding.
TEST(KernelEmulationQuant, AgreesWithTheCpuBackend) {
    auto cpu = zt::make_cpu_backend(1);
    for (QuantType q : kTypes) {
        const int64_t T = 3, N = 19, K = ks(q)[1];
        const std::string what = std::string(qname(q)) + cfg({{"T", T}, {"N", N}, {"K", K}});
        std::vector<unsigned char> w = random_blocks(q, N, K);
        const std::vector<float> x = randv(size_t(T * K), -2, 2);
        std::vector<float> got(size_t(T * N)), ref(size_t(T * N));
        ASSERT_EQ(zk::quant_gemv(got.data(), x.data(), w.data(), qtype(q), T, N, K, nullptr), cudaSuccess) << what;
        cpu->matmul(zt::Tensor(ref.data(), zt::DType::F32, {T, N}),
                    zt::Tensor(const_cast<float *>(x.data()), zt::DType::F32, {T, K}),
                    zt::Tensor(w.data(), zt::dtype_of(q), {N, K}), zt::Tensor());
        double num = 0, den = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
            num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
            den += double(ref[i]) * ref[i];
        }
        EXPECT_LE(den > 0 ? num / den : num, 1e-7) << "quant_gemv vs the CPU backend's matmul " << what;
        std::vector<int32_t> tok = {int32_t(N - 1), 0, 5};
        std::vector<float> eg(size_t(3 * K)), er(size_t(3 * K));
        ASSERT_EQ(zk::embedding_quant(eg.data(), tok.data(), w.data(), qtype(q), 3, K, nullptr), cudaSuccess) << what;
        cpu->embedding(zt::Tensor(er.data(), zt::DType::F32, {3, K}), zt::Tensor(tok.data(), zt::DType::I32, {3}),
                       zt::Tensor(w.data(), zt::dtype_of(q), {N, K}));
        EXPECT_EQ(std::memcmp(eg.data(), er.data(), eg.size() * 4), 0) << "embedding_quant vs the CPU backend " << what;
    }
}

TEST(KernelEmulationQuant, BadSizesAreRefused) {
    float f[64] = {};
    unsigned char b[256] = {};
    int32_t tok[1] = {0};
    for (QuantType q : kTypes) {
        const int64_t K = zt::quant_layout(q).block_weights + 8;   // not whole blocks
        EXPECT_EQ(zk::quant_gemv(f, f, b, qtype(q), 1, 1, K, nullptr), cudaErrorInvalidValue) << qname(q);
        EXPECT_EQ(zk::dequantize_rows(f, zk::WType::f32, b, qtype(q), nullptr, 0, 1, K, nullptr), cudaErrorInvalidValue)
            << qname(q);
        EXPECT_EQ(zk::embedding_quant(f, tok, b, qtype(q), 1, K, nullptr), cudaErrorInvalidValue) << qname(q);
        EXPECT_EQ(zk::embedding_quant(f, nullptr, b, qtype(q), 1, 32 * 8, nullptr), cudaErrorInvalidValue) << qname(q);
    }
    EXPECT_EQ(zk::quant_gemv(f, f, b, zk::QType(9), 1, 1, 32, nullptr), cudaErrorInvalidValue);
    EXPECT_EQ(zk::quant_gemv(f, f, b, zk::QType::q8_0, 0, 1, 32, nullptr), cudaSuccess);   // no rows: nothing to do
}

}  // namespace
