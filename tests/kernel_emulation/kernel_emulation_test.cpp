// kernel_emulation_test: every launcher of kernels/kernels.h, built from the current kernels/*.cu by transform.py
// and run on the CPU by the emulator of this directory (cuda/cuda_runtime.h: one fiber per CUDA thread, real
// barrier and warp-shuffle semantics, cp.async queued until its wait, NaN-filled dynamic shared memory), against
// the CPU backend (runtime/backend/backend.h, make_cpu_backend) on small odd sizes: NMSE = sum((a-b)^2)/sum(b^2) <= 1e-7
// (b = CPU), sampled ids equal, widen/narrow bit-exact against runtime/model/dtype.h, add_bias exact against a loop.
// Every output lies between guard bytes that must stay intact, and outputs that must be written entirely start
// as NaN. No GPU and no CUDA installation are needed; CI runs it as the ctest `kernel_emulation`.
// The largest NMSE per op is printed at the end ("NMSE max ...").
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/backend/backend.h"
#include "runtime/model/dtype.h"
#include "tests/kernel_emulation/emu_test_support.h"

namespace {

namespace zk = zt::kernels;
using namespace emu_test;
using zt::DType;
using zt::Tensor;

constexpr double kMaxNmse = 1e-7;

std::map<std::string, double> & nmse_max() {
    static std::map<std::string, double> m;
    return m;
}

zt::Backend & cpu() {
    static std::unique_ptr<zt::Backend> be = zt::make_cpu_backend(1);
    return *be;
}

// NMSE of a against the reference b; NaN/Inf in a fails.
void expect_close(const std::string & op, const std::string & what, const float * a, const float * b, size_t n) {
    double num = 0, den = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(a[i]) && std::isfinite(b[i])) ++bad;
        const double d = double(a[i]) - double(b[i]);
        num += d * d;
        den += double(b[i]) * double(b[i]);
    }
    const double nmse = den > 0 ? num / den : (num == 0 ? 0.0 : INFINITY);
    EXPECT_EQ(bad, 0u) << op << " " << what << ": " << bad << " non-finite outputs (NaN: element not written?)";
    EXPECT_LE(nmse, kMaxNmse) << op << " " << what;
    double & m = nmse_max()[op];
    m = std::max(m, bad ? INFINITY : nmse);
}

// ---- weights ---------------------------------------------------------------------------------------------------
const zk::WType kWTypes[] = {zk::WType::f32, zk::WType::f16, zk::WType::bf16};
DType dtype_of(zk::WType w) { return w == zk::WType::f32 ? DType::F32 : w == zk::WType::f16 ? DType::F16 : DType::BF16; }
const char * wname(zk::WType w) { return w == zk::WType::f32 ? "f32" : w == zk::WType::f16 ? "f16" : "bf16"; }
// n weights of type w (random in [-1, 1]) as raw bytes in a guarded buffer, byte offset off
struct Weights {
    zk::WType wt;
    Buf<unsigned char> bytes;
    Weights(zk::WType w, size_t n, size_t off = 0) : wt(w), bytes(n * (w == zk::WType::f32 ? 4 : 2), off) {
        for (size_t i = 0; i < n; ++i) {
            const float f = frand();
            if (w == zk::WType::f32) {
                std::memcpy(bytes.p + 4 * i, &f, 4);
            } else {
                const uint16_t h = w == zk::WType::f16 ? zt::f32_to_f16(f) : zt::f32_to_bf16(f);
                std::memcpy(bytes.p + 2 * i, &h, 2);
            }
        }
    }
    float at(size_t i) const {
        if (wt == zk::WType::f32) { float f; std::memcpy(&f, bytes.p + 4 * i, 4); return f; }
        uint16_t h;
        std::memcpy(&h, bytes.p + 2 * i, 2);
        return wt == zk::WType::f16 ? zt::f16_to_f32(h) : zt::bf16_to_f32(h);
    }
    Tensor tensor(std::vector<int64_t> shape) const { return Tensor(bytes.p, dtype_of(wt), std::move(shape)); }
};

// ---- the emulator itself ---------------------------------------------------------------------------------------
// A 2-D block of 96 threads: per-warp inclusive scan by __shfl_up_sync, warp totals through static shared memory
// and __syncthreads, __shfl_xor_sync butterfly, __ballot_sync; out[t] = (scan, block total, ballot) per thread.
__global__ void selftest_kernel(int * out, const int * in) {
    __shared__ int s_tot[4];
    const int t = int(threadIdx.y * blockDim.x + threadIdx.x), lane = t & 31, warp = t >> 5;
    const int v = in[blockIdx.x * 96 + t];
    int incl = v;
    for (int o = 1; o < 32; o <<= 1) {
        const int n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
    }
    if (lane == 31) s_tot[warp] = incl;
    __syncthreads();
    int before = 0;
    for (int w = 0; w < warp; ++w) before += s_tot[w];
    int all = v;
    for (int o = 16; o > 0; o >>= 1) all += __shfl_xor_sync(0xffffffffu, all, o);
    const unsigned odd = __ballot_sync(0xffffffffu, v & 1);
    __syncthreads();   // s_tot is read before the next block (static shared memory) rewrites it
    out[(blockIdx.x * 96 + t) * 3 + 0] = before + incl;
    out[(blockIdx.x * 96 + t) * 3 + 1] = all;
    out[(blockIdx.x * 96 + t) * 3 + 2] = int(odd);
}

TEST(KernelEmulation, EmulatorSelfTest) {
    std::vector<int> in(2 * 96), out(2 * 96 * 3, -1);
    for (auto & x : in) x = irand(0, 100);
    emu::launch(selftest_kernel, dim3(2), dim3(32, 3), 0, nullptr)(out.data(), in.data());
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    for (int b = 0; b < 2; ++b) {
        int run = 0;
        for (int t = 0; t < 96; ++t) {
            const int i = b * 96 + t, w0 = b * 96 + (t & ~31);
            run += in[size_t(i)];
            int wsum = 0;
            unsigned odd = 0;
            for (int l = 0; l < 32; ++l) {
                wsum += in[size_t(w0 + l)];
                odd |= unsigned(in[size_t(w0 + l)] & 1) << l;
            }
            EXPECT_EQ(out[size_t(i) * 3 + 0], run) << "scan, thread " << t;
            EXPECT_EQ(out[size_t(i) * 3 + 1], wsum) << "xor butterfly, thread " << t;
            EXPECT_EQ(unsigned(out[size_t(i) * 3 + 2]), odd) << "ballot, thread " << t;
        }
    }
    // launch checks: too many threads, dynamic shared memory over 48 KB without the attribute
    emu::launch(selftest_kernel, dim3(1), dim3(1025), 0, nullptr)(out.data(), in.data());
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
    emu::launch(selftest_kernel, dim3(1), dim3(96), 64 * 1024, nullptr)(out.data(), in.data());
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// ---- ops -------------------------------------------------------------------------------------------------------
TEST(KernelEmulation, Embedding) {
    for (zk::WType wt : kWTypes)
        for (int64_t C : {1, 111, 112})
            for (int64_t T : {1, 7, 19})
                for (size_t off : {0, 4}) {
                    const int64_t V = 13;
                    const std::string what = cfg({{"T", T}, {"C", C}, {"off", off}}) + wname(wt);
                    Weights table(wt, size_t(V * C), off);
                    Buf<int32_t> tok(static_cast<size_t>(T));
                    for (int64_t t = 0; t < T; ++t) tok[t] = irand(0, int(V) - 1);
                    Buf<float> out(size_t(T * C), off), ref(size_t(T * C));
                    out.fill_nan();
                    ASSERT_EQ(zk::embedding(out.p, tok.p, table.bytes.p, wt, T, C, nullptr), cudaSuccess) << what;
                    cpu().embedding(Tensor(ref.p, DType::F32, {T, C}), Tensor(tok.p, DType::I32, {T}),
                                    table.tensor({V, C}));
                    expect_close("embedding", what, out.p, ref.p, out.n);
                    EXPECT_TRUE(out.guards_ok()) << "embedding wrote outside its output " << what;
                }
}

TEST(KernelEmulation, RmsNorm) {
    for (zk::WType wt : kWTypes)
        for (int64_t C : {1, 111, 112, 1031, 1100})   // <= 1024: warp per row; above: block per row
            for (int64_t R : {1, 7, 19})
                for (bool in_place : {false, true}) {
                    if (C > 1024 && R == 19) continue;   // keep it quick
                    const std::string what = cfg({{"R", R}, {"C", C}, {"in_place", in_place}}) + wname(wt);
                    Weights w(wt, size_t(C));
                    const std::vector<float> x = randv(size_t(R * C), -3, 3);
                    Buf<float> xin(x.size()), out(x.size()), ref(x.size());
                    xin.set(x);
                    out.fill_nan();
                    float * o = in_place ? xin.p : out.p;
                    ASSERT_EQ(zk::rmsnorm(o, xin.p, w.bytes.p, wt, R, C, 1e-6f, nullptr), cudaSuccess) << what;
                    Buf<float> xr(x.size());
                    xr.set(x);
                    cpu().rmsnorm(Tensor(ref.p, DType::F32, {R, C}), Tensor(xr.p, DType::F32, {R, C}),
                                  w.tensor({C}), 1e-6f);
                    expect_close("rmsnorm", what, o, ref.p, ref.n);
                    EXPECT_TRUE(out.guards_ok() && xin.guards_ok()) << "rmsnorm wrote outside its output " << what;
                }
}

// per_row: a (T,D/2) frequency table (dynamic scaling), each row its own theta, and yarn's cos/sin scaling.
void rope_case(int64_t T, int64_t H, int64_t D, bool per_row) {
    const float scaling = per_row ? 1.1386294f : 1.0f;
    const std::string what = cfg({{"T", T}, {"H", H}, {"D", D}, {"per_row", per_row}});
    const int64_t rows = per_row ? T : 1;
    std::vector<float> inv(size_t(rows * (D / 2)));
    for (int64_t t = 0; t < rows; ++t)
        for (int64_t i = 0; i < D / 2; ++i)
            inv[size_t(t * (D / 2) + i)] = float(1.0 / std::pow(10000.0 * double(1 + t), double(2 * i) / double(D)));
    Buf<float> invb(inv.size());
    invb.set(inv);
    Buf<int32_t> pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) pos[t] = irand(0, 5000);
    const std::vector<float> x = randv(size_t(T * H * D));
    Buf<float> xk(x.size()), xr(x.size());
    xk.set(x);
    xr.set(x);
    ASSERT_EQ(zk::rope(xk.p, pos.p, invb.p, per_row ? D / 2 : 0, scaling, T, H, D, nullptr), cudaSuccess) << what;
    cpu().rope(Tensor(xr.p, DType::F32, {T, H, D}), Tensor(pos.p, DType::I32, {T}),
               Tensor(invb.p, DType::F32, {rows, D / 2}), scaling);
    expect_close("rope", what, xk.p, xr.p, xr.n);
    EXPECT_TRUE(xk.guards_ok()) << "rope wrote outside its tensor " << what;
}

TEST(KernelEmulation, Rope) {
    for (int64_t D : {2, 24, 110, 128})
        for (int64_t H : {1, 3, 5})
            for (int64_t T : {1, 7, 19})
                for (bool per_row : {false, true}) rope_case(T, H, D, per_row);
}

// Sequences of different lengths over shuffled slots, rows packed in order (gaps: some rows no sequence covers).
std::vector<zt::AttentionSeq> make_seqs(int n_seqs, int S, int max_past, int max_tok, bool gaps, int64_t * T, int64_t * M) {
    std::vector<int> slots(static_cast<size_t>(S));
    for (int i = 0; i < S; ++i) slots[size_t(i)] = i;
    std::shuffle(slots.begin(), slots.end(), rng());
    std::vector<zt::AttentionSeq> seqs(static_cast<size_t>(n_seqs));
    int64_t rows = 0, m = 1;
    for (int i = 0; i < n_seqs; ++i) {
        auto & q = seqs[size_t(i)];
        q.slot = slots[size_t(i)];
        q.past_len = irand(0, max_past);
        q.n_tokens = irand(1, max_tok);
        if (gaps) rows += irand(0, 2);
        q.row0 = int32_t(rows);
        rows += q.n_tokens;
        m = std::max<int64_t>(m, q.past_len + q.n_tokens);
    }
    if (gaps) rows += 2;
    *T = rows;
    *M = m + irand(0, 2);
    return seqs;
}
std::vector<zk::AttnSeq> to_kernel(const std::vector<zt::AttentionSeq> & s) {
    std::vector<zk::AttnSeq> k(s.size());
    for (size_t i = 0; i < s.size(); ++i) k[i] = zk::AttnSeq{s[i].slot, s[i].past_len, s[i].n_tokens, s[i].row0};
    return k;
}

TEST(KernelEmulation, KvStore) {
    for (int64_t D : {1, 24, 111})
        for (int64_t KV : {1, 2})
            for (size_t off : {0, 4}) {
                int64_t T = 0, M = 0;
                const int S = 4;
                const auto seqs = make_seqs(3, S, 9, 8, true, &T, &M);
                const std::string what = cfg({{"T", T}, {"KV", KV}, {"D", D}, {"M", M}, {"off", off}});
                const size_t cache_n = size_t(S * M * KV * D);
                const std::vector<float> kc0 = randv(cache_n), vc0 = randv(cache_n);
                const std::vector<float> k = randv(size_t(T * KV * D)), v = randv(size_t(T * KV * D));
                Buf<float> kc(cache_n, off), vc(cache_n, off), kcr(cache_n), vcr(cache_n), kb(k.size(), off),
                    vb(v.size(), off);
                kc.set(kc0), vc.set(vc0), kcr.set(kc0), vcr.set(vc0), kb.set(k), vb.set(v);
                Buf<int32_t> dest(static_cast<size_t>(T));   // as the CUDA backend builds it: -1 for rows no sequence covers
                for (int64_t t = 0; t < T; ++t) dest[size_t(t)] = -1;
                for (const auto & q : seqs)
                    for (int i = 0; i < q.n_tokens; ++i) dest[size_t(q.row0 + i)] = int32_t(q.slot * M + q.past_len + i);
                ASSERT_EQ(zk::kv_store(kc.p, vc.p, kb.p, vb.p, dest.p, T, KV * D, nullptr), cudaSuccess) << what;
                // the CPU backend takes the tokens' rows of k/v as a (T,KV,D) tensor; rows in gaps are not stored
                cpu().kv_store(Tensor(kcr.p, DType::F32, {S, M, KV, D}), Tensor(vcr.p, DType::F32, {S, M, KV, D}),
                               Tensor(kb.p, DType::F32, {T, KV, D}), Tensor(vb.p, DType::F32, {T, KV, D}), seqs);
                expect_close("kv_store", what + " k", kc.p, kcr.p, cache_n);
                expect_close("kv_store", what + " v", vc.p, vcr.p, cache_n);
                EXPECT_TRUE(kc.guards_ok() && vc.guards_ok()) << "kv_store wrote outside the caches " << what;
            }
}

void attention_case(bool decode, int n_seqs, int64_t H, int64_t KV, int64_t D, int max_past, int max_tok, bool causal,
                    bool gaps, size_t off, int32_t window = 0) {
    int64_t T = 0, M = 0;
    const int S = n_seqs + 1;
    auto seqs = make_seqs(n_seqs, S, max_past, decode ? 1 : max_tok, gaps && !decode, &T, &M);
    if (decode) {   // row b of q/out belongs to a shuffled sequence
        std::vector<int> perm(static_cast<size_t>(n_seqs));
        for (int i = 0; i < n_seqs; ++i) perm[size_t(i)] = i;
        std::shuffle(perm.begin(), perm.end(), rng());
        for (int i = 0; i < n_seqs; ++i) seqs[size_t(i)].row0 = perm[size_t(i)];
        T = n_seqs;
        if (window == 0) causal = true;   // without a window a lone new token sees every key either way
    }
    const std::string what = cfg({{"seqs", n_seqs}, {"T", T}, {"H", H}, {"KV", KV}, {"D", D}, {"M", M},
                                  {"causal", causal}, {"gaps", gaps}, {"off", off}, {"window", window}});
    const size_t cache_n = size_t(S * M * KV * D), qn = size_t(T * H * D);
    const std::vector<float> kc0 = randv(cache_n, -2, 2), vc0 = randv(cache_n), q0 = randv(qn, -2, 2);
    Buf<float> kc(cache_n, off), vc(cache_n, off), q(qn, off), out(qn, off), ref(qn);
    kc.set(kc0), vc.set(vc0), q.set(q0);
    out.fill_nan();
    const auto ks = to_kernel(seqs);
    Buf<zk::AttnSeq> kseqs(ks.size() ? ks.size() : 1);
    if (!ks.empty()) kseqs.set(ks);
    const cudaError_t e =
        decode ? zk::attention_decode(out.p, q.p, kc.p, vc.p, kseqs.p, n_seqs, H, KV, D, M, causal, window, nullptr)
               : zk::attention_prefill(out.p, q.p, kc.p, vc.p, kseqs.p, n_seqs, T, H, KV, D, M, causal, window, nullptr);
    ASSERT_EQ(e, cudaSuccess) << what;
    cpu().attention(Tensor(ref.p, DType::F32, {T, H, D}), Tensor(q.p, DType::F32, {T, H, D}),
                    Tensor(kc.p, DType::F32, {S, M, KV, D}), Tensor(vc.p, DType::F32, {S, M, KV, D}), seqs, causal,
                    window);
    const std::string op = decode ? "attention_decode" : "attention_prefill";
    expect_close(op, what, out.p, ref.p, qn);
    EXPECT_TRUE(out.guards_ok()) << op << " wrote outside its output " << what;
}

TEST(KernelEmulation, AttentionPrefill) {
    for (int64_t D : {1, 24, 111, 128, 130, 256})
        for (bool causal : {true, false}) attention_case(false, 3, 4, 2, D, 9, 8, causal, D == 111, D == 24 ? 4 : 0);
    attention_case(false, 1, 3, 1, 24, 0, 19, true, false, 0);     // one sequence, no past, GQA 3:1
    attention_case(false, 2, 2, 2, 64, 70, 70, true, false, 0);    // several key tiles and query tiles
    attention_case(false, 4, 2, 1, 111, 5, 3, false, true, 4);     // misaligned, gaps, non-causal
    attention_case(false, 2, 2, 1, 128, 300, 100, true, false, 0);  // long past: many key tiles
}

// Sliding windows: smaller than a query tile (with D > 128 the key tiles are 32 wide, so some rows' windows begin
// past the tile loop's first tile), larger than a key tile, 1 (each query sees itself only), causal and not, with
// past and gaps.
TEST(KernelEmulation, AttentionPrefillSlidingWindow) {
    for (bool causal : {true, false}) {
        attention_case(false, 2, 2, 1, 24, 70, 70, causal, false, 0, 8);
        attention_case(false, 3, 4, 2, 111, 9, 8, causal, true, 4, 3);
        attention_case(false, 2, 2, 2, 64, 100, 130, causal, false, 0, 70);
        attention_case(false, 1, 2, 1, 128, 0, 40, causal, false, 0, 1);
        attention_case(false, 2, 2, 1, 256, 30, 70, causal, false, 0, 8);   // 32-key tiles: rows start past tile 1
        attention_case(false, 2, 3, 1, 130, 5, 66, causal, true, 0, 20);
    }
}

TEST(KernelEmulation, AttentionDecodeSlidingWindow) {
    for (bool causal : {true, false}) {
        attention_case(true, 3, 4, 2, 24, 40, 1, causal, false, 0, 8);
        attention_case(true, 5, 12, 1, 111, 300, 1, causal, false, 4, 100);
        attention_case(true, 2, 2, 2, 64, 20, 1, causal, false, 0, 1);
    }
}

TEST(KernelEmulation, AttentionDecode) {
    for (int64_t D : {1, 3, 24, 111, 128, 130, 256}) attention_case(true, 3, 4, 2, D, 40, 1, true, false, D == 24 ? 4 : 0);
    attention_case(true, 5, 12, 1, 24, 70, 1, true, false, 0);     // GQA 12:1 (head chunks)
    attention_case(true, 1, 2, 2, 111, 300, 1, true, false, 4);
    attention_case(true, 40, 8, 2, 64, 20, 1, true, false, 0);     // many sequences
}

void elementwise_case(const char * op, int64_t n, size_t off, int alias) {
    const std::string what = cfg({{"n", n}, {"off", off}, {"alias", alias}});
    const std::vector<float> a = randv(size_t(n), -4, 4), b = randv(size_t(n), -4, 4);
    Buf<float> ab(size_t(n), off), bb(size_t(n), off), out(size_t(n), off), ar(static_cast<size_t>(n)), br(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
    ab.set(a), bb.set(b), ar.set(a), br.set(b);
    out.fill_nan();
    float * o = alias == 1 ? ab.p : alias == 2 ? bb.p : out.p;
    const bool is_add = std::string(op) == "add";
    ASSERT_EQ(is_add ? zk::add(o, ab.p, bb.p, n, nullptr) : zk::swiglu(o, ab.p, bb.p, n, nullptr), cudaSuccess) << what;
    const Tensor tr(ref.p, DType::F32, {n}), ta(ar.p, DType::F32, {n}), tb(br.p, DType::F32, {n});
    if (is_add) cpu().add(tr, ta, tb);
    else cpu().swiglu(tr, ta, tb);
    expect_close(op, what, o, ref.p, size_t(n));
    EXPECT_TRUE(out.guards_ok() && ab.guards_ok() && bb.guards_ok()) << op << " wrote outside its output " << what;
}

TEST(KernelEmulation, SwiGLU) {
    for (int64_t n : {1, 7, 111, 1111, 2053})
        for (size_t off : {0, 4})
            for (int alias : {0, 1}) elementwise_case("swiglu", n, off, alias);
}

TEST(KernelEmulation, Add) {
    for (int64_t n : {1, 7, 111, 1111, 2053})
        for (size_t off : {0, 4})
            for (int alias : {0, 1, 2}) elementwise_case("add", n, off, alias);
}

TEST(KernelEmulation, AddBias) {
    for (zk::WType wt : kWTypes)
        for (int64_t N : {1, 111, 112, 300})
            for (int64_t R : {1, 7, 19})
                for (size_t off : {0, 4}) {
                    const std::string what = cfg({{"R", R}, {"N", N}, {"off", off}}) + wname(wt);
                    Weights bias(wt, size_t(N), off);
                    const std::vector<float> x = randv(size_t(R * N), -4, 4);
                    Buf<float> out(x.size(), off);
                    out.set(x);
                    ASSERT_EQ(zk::add_bias(out.p, bias.bytes.p, wt, R, N, nullptr), cudaSuccess) << what;
                    std::vector<float> ref(x);
                    for (int64_t r = 0; r < R; ++r)
                        for (int64_t c = 0; c < N; ++c) ref[size_t(r * N + c)] += bias.at(static_cast<size_t>(c));
                    expect_close("add_bias", what, out.p, ref.data(), ref.size());
                    EXPECT_EQ(std::memcmp(out.p, ref.data(), ref.size() * 4), 0) << "add_bias not exact " << what;
                    EXPECT_TRUE(out.guards_ok()) << "add_bias wrote outside its output " << what;
                }
}

TEST(KernelEmulation, GatherRows) {
    for (int64_t C : {1, 111, 112})
        for (int64_t R : {1, 7, 19})
            for (size_t off : {0, 4}) {
                const int64_t T = 11;
                const std::string what = cfg({{"R", R}, {"C", C}, {"off", off}});
                const std::vector<float> x = randv(size_t(T * C));
                Buf<float> xb(x.size(), off), out(size_t(R * C), off), ref(size_t(R * C));
                xb.set(x);
                out.fill_nan();
                Buf<int32_t> rows(static_cast<size_t>(R));
                for (int64_t r = 0; r < R; ++r) rows[size_t(r)] = irand(0, int(T) - 1);
                ASSERT_EQ(zk::gather_rows(out.p, xb.p, rows.p, R, C, nullptr), cudaSuccess) << what;
                cpu().gather_rows(Tensor(ref.p, DType::F32, {R, C}), Tensor(xb.p, DType::F32, {T, C}),
                                  Tensor(rows.p, DType::I32, {R}));
                expect_close("gather_rows", what, out.p, ref.p, ref.n);
                EXPECT_TRUE(out.guards_ok()) << "gather_rows wrote outside its output " << what;
            }
}

// Values that exercise the rounding of narrow: specials, subnormals, halfway cases, overflow.
std::vector<float> conversion_inputs(size_t n) {
    std::vector<float> v = randv(n, -3, 3);
    const uint32_t bits[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f800000u, 0xff800000u, 0x80000000u, 0x00000000u,
                             0x00000001u, 0x33000000u, 0x33000001u, 0x38800000u, 0x387fffffu, 0x477fefffu, 0x477ff000u,
                             0x3f801000u, 0x3f803000u, 0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0xc77ff000u};
    for (size_t i = 0; i < n && i < sizeof bits / 4; ++i) std::memcpy(&v[i * 3 % n], &bits[i], 4);
    for (size_t i = 0; i < n; i += 5) v[i] *= std::ldexp(1.0f, irand(-30, 30));
    return v;
}

TEST(KernelEmulation, WidenNarrow) {
    for (int64_t n : {1, 7, 111, 1000, 1027})
        for (size_t off : {0, 2, 4}) {
            const std::string what = cfg({{"n", n}, {"off", off}});
            const std::vector<float> x = conversion_inputs(static_cast<size_t>(n));
            for (zk::WType wt : kWTypes) {
                // narrow: f32 -> W, bit for bit as dtype.h
                const size_t es = wt == zk::WType::f32 ? 4 : 2;
                Buf<float> in(size_t(n), off % 4 ? 4 : off);
                in.set(x);
                Buf<unsigned char> nar(size_t(n) * es, wt == zk::WType::f32 && off == 2 ? 4 : off);
                nar.fill_nan();
                ASSERT_EQ(zk::narrow(nar.p, wt, in.p, n, nullptr), cudaSuccess) << what << wname(wt);
                std::vector<unsigned char> want(size_t(n) * es);
                for (int64_t i = 0; i < n; ++i) {
                    if (wt == zk::WType::f32) {
                        std::memcpy(&want[size_t(i) * 4], &x[size_t(i)], 4);
                    } else {
                        const uint16_t h = wt == zk::WType::f16 ? zt::f32_to_f16(x[size_t(i)]) : zt::f32_to_bf16(x[size_t(i)]);
                        std::memcpy(&want[size_t(i) * 2], &h, 2);
                    }
                }
                EXPECT_EQ(std::memcmp(nar.p, want.data(), want.size()), 0) << "narrow " << wname(wt) << " " << what;
                EXPECT_TRUE(nar.guards_ok()) << "narrow wrote outside its output " << what;
                nmse_max()["narrow"] += 0;
                // widen: W -> f32, exact
                Buf<float> wid(size_t(n), off % 4 ? 4 : off);
                wid.fill_nan();
                ASSERT_EQ(zk::widen(wid.p, nar.p, wt, n, nullptr), cudaSuccess) << what << wname(wt);
                std::vector<float> wref(static_cast<size_t>(n));
                for (int64_t i = 0; i < n; ++i) {
                    if (wt == zk::WType::f32) {
                        std::memcpy(&wref[size_t(i)], &want[size_t(i) * 4], 4);
                    } else {
                        uint16_t h;
                        std::memcpy(&h, &want[size_t(i) * 2], 2);
                        wref[size_t(i)] = wt == zk::WType::f16 ? zt::f16_to_f32(h) : zt::bf16_to_f32(h);
                    }
                }
                EXPECT_EQ(std::memcmp(wid.p, wref.data(), wref.size() * 4), 0) << "widen " << wname(wt) << " " << what;
                EXPECT_TRUE(wid.guards_ok()) << "widen wrote outside its output " << what;
                nmse_max()["widen"] += 0;
            }
        }
}

TEST(KernelEmulation, Pool) {
    for (int64_t C : {1, 111, 112})
        for (int n_seqs : {1, 3, 5})
            for (size_t off : {0, 4})
                for (zt::Pooling mode : {zt::Pooling::mean, zt::Pooling::last}) {
                    int64_t T = 0, M = 0;
                    const auto seqs = make_seqs(n_seqs, n_seqs, 0, 19, true, &T, &M);
                    const bool mean = mode == zt::Pooling::mean;
                    const std::string what = cfg({{"B", n_seqs}, {"T", T}, {"C", C}, {"off", off}});
                    const std::vector<float> x = randv(size_t(T * C), -2, 2);
                    Buf<float> xb(x.size(), off), out(size_t(n_seqs * C), off), ref(size_t(n_seqs * C));
                    xb.set(x);
                    out.fill_nan();
                    const auto ks = to_kernel(seqs);
                    Buf<zk::AttnSeq> kseqs(ks.size());
                    kseqs.set(ks);
                    ASSERT_EQ(mean ? zk::pool_mean(out.p, xb.p, kseqs.p, n_seqs, C, nullptr)
                                   : zk::pool_last(out.p, xb.p, kseqs.p, n_seqs, C, nullptr),
                              cudaSuccess) << what;
                    cpu().pool(Tensor(ref.p, DType::F32, {n_seqs, C}), Tensor(xb.p, DType::F32, {T, C}), seqs, mode);
                    const char * op = mean ? "pool_mean" : "pool_last";
                    expect_close(op, what, out.p, ref.p, ref.n);
                    EXPECT_TRUE(out.guards_ok()) << op << " wrote outside its output " << what;
                }
}

TEST(KernelEmulation, Sample) {
    struct P { double t; int64_t k; double p; };
    const P params[] = {{0.0, 0, 1.0}, {0.8, 0, 1.0}, {1.0, 5, 1.0}, {0.7, 0, 0.9}, {1.3, 50, 0.5}, {1.0, 3, 0.999}};
    int rows_total = 0, mismatches = 0;
    for (int64_t V : {1, 2, 7, 111, 3001, 40000})
        for (int kind = 0; kind < 3; ++kind)
            for (const P & pp : params) {
                const int64_t R = 3;
                const std::string what = cfg({{"R", R}, {"V", V}, {"kind", kind}, {"top_k", pp.k}}) +
                                         " T=" + std::to_string(pp.t) + " p=" + std::to_string(pp.p);
                Buf<float> logits(size_t(R * V));
                for (int64_t i = 0; i < R * V; ++i)
                    logits[size_t(i)] = kind == 0 ? frand(-8, 8) : kind == 1 ? float(irand(-3, 3))   // many ties
                                                                 : (i % 10 == 3 ? -INFINITY : frand(-1, 1));
                std::vector<zk::SampleParams> kp(static_cast<size_t>(R));
                std::vector<zt::SampleRow> rows(static_cast<size_t>(R));
                for (int64_t r = 0; r < R; ++r) {
                    const double u = r == 0 ? 0.0 : std::uniform_real_distribution<double>(0, 1)(rng());
                    kp[size_t(r)] = zk::SampleParams{pp.t, pp.k, pp.p, u};
                    rows[size_t(r)] = zt::SampleRow{pp.t, pp.k, pp.p, u};
                }
                Buf<zk::SampleParams> kpb(kp.size());
                kpb.set(kp);
                Buf<int32_t> ids(static_cast<size_t>(R)), ref(static_cast<size_t>(R));
                for (int64_t r = 0; r < R; ++r) ids[size_t(r)] = -7;
                ASSERT_EQ(zk::sample(ids.p, logits.p, kpb.p, R, V, nullptr), cudaSuccess) << what;
                cpu().sample(Tensor(ref.p, DType::I32, {R}), Tensor(logits.p, DType::F32, {R, V}), rows);
                for (int64_t r = 0; r < R; ++r) {
                    ++rows_total;
                    if (ids[size_t(r)] == ref[size_t(r)]) continue;
                    ++mismatches;
                    ADD_FAILURE() << "sample row " << r << " " << what << ": kernel id " << ids[size_t(r)] << ", CPU id "
                                  << ref[size_t(r)] << " (u = " << rows[size_t(r)].u << ")";
                }
                EXPECT_TRUE(ids.guards_ok()) << "sample wrote outside its output " << what;
            }
    std::printf("sample: %d rows, %d ids differ\n", rows_total, mismatches);
    nmse_max()["sample (ids differing)"] = mismatches;
}

// Runs last (gtest keeps the order of definition): the launch count and the largest NMSE per op so far.
TEST(KernelEmulation, Summary) {
    std::printf("kernel launches emulated: %ld\n", emu::total_launches());
    for (const auto & [op, m] : nmse_max()) std::printf("NMSE max %-24s %.3g\n", op.c_str(), m);
}

}  // namespace
