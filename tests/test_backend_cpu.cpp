// CPU backend ops against naive double-precision references on random inputs (NMSE < 1e-7), weights in
// F32/F16/BF16, with sentinels after every output to catch out-of-bounds writes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/backend/aligned_scratch.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "runtime/model/model_config.h"
#include "runtime/model/rope.h"

namespace zt {
namespace {

constexpr int kSentinels = 16;
constexpr uint32_t kSentinelBits = 0x7fc0beefu;   // a NaN pattern no op writes

// An fp32 output with sentinels after it.
struct Out {
    std::vector<float> buf;
    int64_t n;
    explicit Out(int64_t count) : buf(size_t(count + kSentinels)), n(count) {
        for (int i = 0; i < kSentinels; ++i) std::memcpy(&buf[size_t(n + i)], &kSentinelBits, 4);
    }
    Tensor tensor(std::vector<int64_t> shape) { return Tensor(buf.data(), DType::F32, std::move(shape)); }
    bool sentinels_intact() const {
        for (int i = 0; i < kSentinels; ++i)
            if (std::memcmp(&buf[size_t(n + i)], &kSentinelBits, 4) != 0) return false;
        return true;
    }
    std::vector<double> values() const { return std::vector<double>(buf.begin(), buf.begin() + n); }
};

std::vector<float> randn(size_t n, std::mt19937 & g, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float & x : v) x = d(g);
    return v;
}

// A weight tensor in `dtype` plus its exact fp32 widening (what the reference sees).
struct Weight {
    std::vector<uint8_t> storage;
    std::vector<double> widened;
    Tensor t;
    Weight(const std::vector<float> & values, DType dtype, std::vector<int64_t> shape) {
        storage.resize(values.size() * dtype_size(dtype));
        convert_from_f32(storage.data(), dtype, values.data(), values.size());
        std::vector<float> back(values.size());
        convert_to_f32(back.data(), storage.data(), dtype, values.size());
        widened.assign(back.begin(), back.end());
        t = Tensor(storage.data(), dtype, std::move(shape));
    }
};

double nmse(const std::vector<double> & got, const std::vector<double> & ref) {
    EXPECT_EQ(got.size(), ref.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); ++i) { num += (got[i] - ref[i]) * (got[i] - ref[i]); den += ref[i] * ref[i]; }
    return den > 0 ? num / den : num;
}

class BackendCpu : public ::testing::Test {
protected:
    std::unique_ptr<Backend> be = make_cpu_backend(2);
    std::mt19937 g{1234};
};

const DType kWeightTypes[] = {DType::F32, DType::F16, DType::BF16};

TEST_F(BackendCpu, Embedding) {
    const int64_t V = 50, C = 24, T = 9;
    for (DType dt : kWeightTypes) {
        Weight table(randn(size_t(V * C), g), dt, {V, C});
        std::vector<int32_t> tok = {0, 49, 3, 3, 17, 8, 0, 22, 41};
        Out out(T * C);
        be->embedding(out.tensor({T, C}), Tensor(tok.data(), DType::I32, {T}), table.t);
        std::vector<double> ref;
        for (int32_t t : tok) for (int64_t c = 0; c < C; ++c) ref.push_back(table.widened[size_t(t * C + c)]);
        EXPECT_EQ(out.values(), ref) << dtype_name(dt);
        EXPECT_TRUE(out.sentinels_intact());
    }
    std::vector<int32_t> bad = {50};
    Weight table(randn(size_t(V * C), g), DType::F32, {V, C});
    Out out(C);
    EXPECT_THROW(be->embedding(out.tensor({1, C}), Tensor(bad.data(), DType::I32, {1}), table.t), Error);
}

TEST_F(BackendCpu, RmsNorm) {
    for (DType dt : kWeightTypes) {
        for (auto [R, C] : {std::pair<int64_t, int64_t>{7, 64}, {24, 16}, {1, 33}}) {
            std::vector<float> x = randn(size_t(R * C), g, 3.0f);
            Weight w(randn(size_t(C), g), dt, {C});
            const float eps = 1e-6f;
            Out out(R * C);
            be->rmsnorm(out.tensor({R, C}), Tensor(x.data(), DType::F32, {R, C}), w.t, eps);
            std::vector<double> ref;
            for (int64_t r = 0; r < R; ++r) {
                double ss = 0;
                for (int64_t c = 0; c < C; ++c) ss += double(x[size_t(r * C + c)]) * x[size_t(r * C + c)];
                const double inv = 1.0 / std::sqrt(ss / double(C) + eps);
                for (int64_t c = 0; c < C; ++c) ref.push_back(w.widened[size_t(c)] * x[size_t(r * C + c)] * inv);
            }
            EXPECT_LT(nmse(out.values(), ref), 1e-7) << dtype_name(dt) << " R=" << R << " C=" << C;
            EXPECT_TRUE(out.sentinels_intact());
            // in place (qwen3's per-head q/k norm)
            be->rmsnorm(Tensor(x.data(), DType::F32, {R, C}), Tensor(x.data(), DType::F32, {R, C}), w.t, eps);
            EXPECT_EQ(0, std::memcmp(x.data(), out.buf.data(), size_t(R * C) * 4));
        }
    }
}

TEST_F(BackendCpu, Matmul) {
    for (DType dt : kWeightTypes) {
        for (int64_t T : {1, 5, 70}) {
            for (auto [N, K] : {std::pair<int64_t, int64_t>{48, 64}, {130, 100}, {600, 96}}) {
                for (bool with_bias : {false, true}) {
                    std::vector<float> x = randn(size_t(T * K), g);
                    Weight w(randn(size_t(N * K), g, 0.1f), dt, {N, K});
                    Weight b(randn(size_t(N), g), dt, {N});
                    Out out(T * N);
                    be->matmul(out.tensor({T, N}), Tensor(x.data(), DType::F32, {T, K}), w.t, with_bias ? b.t : Tensor());
                    std::vector<double> ref;
                    for (int64_t t = 0; t < T; ++t)
                        for (int64_t n = 0; n < N; ++n) {
                            double acc = with_bias ? b.widened[size_t(n)] : 0.0;
                            for (int64_t k = 0; k < K; ++k) acc += double(x[size_t(t * K + k)]) * w.widened[size_t(n * K + k)];
                            ref.push_back(acc);
                        }
                    EXPECT_LT(nmse(out.values(), ref), 1e-7) << dtype_name(dt) << " T=" << T << " N=" << N << " K=" << K;
                    EXPECT_TRUE(out.sentinels_intact());
                }
            }
        }
    }
}

// The row-wise GEMM path: a row's output bits do not depend on T or on the other rows.
TEST_F(BackendCpu, MatmulRowsAreBatchInvariant) {
    const int64_t N = 300, K = 136;
    for (DType dt : kWeightTypes) {
        Weight w(randn(size_t(N * K), g, 0.1f), dt, {N, K});
        std::vector<float> row = randn(size_t(K), g);
        std::vector<float> alone(static_cast<size_t>(N));
        be->matmul(Tensor(alone.data(), DType::F32, {1, N}), Tensor(row.data(), DType::F32, {1, K}), w.t, Tensor());
        for (int64_t T : {2, 3, 7, 16, 33, 65, 130}) {
            std::vector<float> x = randn(size_t(T * K), g);
            const int64_t at = (T * 7) % T;
            std::memcpy(&x[size_t(at * K)], row.data(), size_t(K) * 4);
            std::vector<float> out(size_t(T * N));
            be->matmul(Tensor(out.data(), DType::F32, {T, N}), Tensor(x.data(), DType::F32, {T, K}), w.t, Tensor());
            EXPECT_EQ(0, std::memcmp(&out[size_t(at * N)], alone.data(), size_t(N) * 4)) << dtype_name(dt) << " T=" << T;
        }
    }
}

TEST_F(BackendCpu, Rope) {
    ModelConfig cfg;
    cfg.head_dim = 16;
    cfg.rope_theta = 10000.0;
    const std::vector<float> inv = rope_inv_freq(cfg);
    ASSERT_EQ(inv.size(), 8u);
    for (size_t i = 0; i < inv.size(); ++i)
        EXPECT_NEAR(inv[i], 1.0 / std::pow(10000.0, double(2 * i) / 16.0), 1e-7 * inv[i]);
    const int64_t T = 6, H = 3, D = 16, half = D / 2;
    std::vector<float> x = randn(size_t(T * H * D), g);
    std::vector<int32_t> pos = {0, 1, 2, 7, 300, 4097};
    Out out(T * H * D);
    std::memcpy(out.buf.data(), x.data(), x.size() * 4);
    be->rope(out.tensor({T, H, D}), Tensor(pos.data(), DType::I32, {T}), Tensor(const_cast<float *>(inv.data()), DType::F32, {half}));
    std::vector<double> ref(x.size());
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < half; ++i) {
                const double a = double(float(pos[size_t(t)]) * inv[size_t(i)]);   // the angle is fp32 (HF)
                const double x0 = x[size_t((t * H + h) * D + i)], x1 = x[size_t((t * H + h) * D + i + half)];
                ref[size_t((t * H + h) * D + i)] = x0 * std::cos(a) - x1 * std::sin(a);
                ref[size_t((t * H + h) * D + i + half)] = x1 * std::cos(a) + x0 * std::sin(a);
            }
    EXPECT_LT(nmse(out.values(), ref), 1e-7);
    EXPECT_TRUE(out.sentinels_intact());
}

TEST_F(BackendCpu, RopeScaling) {
    ModelConfig cfg;
    cfg.head_dim = 64;
    cfg.rope_theta = 500000.0;
    const std::vector<float> base = rope_inv_freq(cfg);
    cfg.rope_scaling.type = RopeScaling::Type::linear;
    cfg.rope_scaling.factor = 4.0;
    const std::vector<float> linear = rope_inv_freq(cfg);
    for (size_t i = 0; i < base.size(); ++i) EXPECT_EQ(linear[i], base[i] / 4.0f);
    cfg.rope_scaling = RopeScaling();
    cfg.rope_scaling.type = RopeScaling::Type::llama3;
    cfg.rope_scaling.factor = 8.0;
    cfg.rope_scaling.low_freq_factor = 1.0;
    cfg.rope_scaling.high_freq_factor = 4.0;
    cfg.rope_scaling.original_max_position_embeddings = 64;
    const std::vector<float> l3 = rope_inv_freq(cfg);
    int same = 0, scaled = 0, smoothed = 0;
    for (size_t i = 0; i < base.size(); ++i) {
        const double wavelen = 2 * M_PI / base[i];
        if (wavelen < 16) { EXPECT_EQ(l3[i], base[i]); ++same; }                         // high frequency: kept
        else if (wavelen > 64) { EXPECT_EQ(l3[i], base[i] / 8.0f); ++scaled; }          // low frequency: / factor
        else { EXPECT_LT(l3[i], base[i]); EXPECT_GT(l3[i], base[i] / 8.0f); ++smoothed; }
    }
    EXPECT_GT(same, 0); EXPECT_GT(scaled, 0); EXPECT_GT(smoothed, 0);
}

// kv_store then attention over a cache with two sequences (one with past tokens), causal and bidirectional.
TEST_F(BackendCpu, KvStoreAndAttention) {
    const int64_t S = 3, M = 20, KV = 2, H = 6, D = 8;
    std::vector<AttentionSeq> seqs = {{2, 5, 3, 0}, {0, 0, 4, 3}};
    const int64_t T = 7;
    std::vector<float> kc = randn(size_t(S * M * KV * D), g), vc = randn(size_t(S * M * KV * D), g);
    std::vector<float> k = randn(size_t(T * KV * D), g), v = randn(size_t(T * KV * D), g), q = randn(size_t(T * H * D), g);
    Tensor kct(kc.data(), DType::F32, {S, M, KV, D}), vct(vc.data(), DType::F32, {S, M, KV, D});
    be->kv_store(kct, vct, Tensor(k.data(), DType::F32, {T, KV, D}), Tensor(v.data(), DType::F32, {T, KV, D}), seqs);
    for (const AttentionSeq & s : seqs)
        for (int32_t i = 0; i < s.n_tokens; ++i) {
            const size_t dst = size_t(((s.slot * M) + s.past_len + i) * KV * D), src = size_t((s.row0 + i) * KV * D);
            EXPECT_EQ(0, std::memcmp(&kc[dst], &k[src], size_t(KV * D) * 4));
            EXPECT_EQ(0, std::memcmp(&vc[dst], &v[src], size_t(KV * D) * 4));
        }
    for (bool causal : {true, false}) {
        Out out(T * H * D);
        be->attention(out.tensor({T, H, D}), Tensor(q.data(), DType::F32, {T, H, D}), kct, vct, seqs, causal);
        std::vector<double> ref(size_t(T * H * D));
        for (const AttentionSeq & s : seqs)
            for (int32_t i = 0; i < s.n_tokens; ++i)
                for (int64_t h = 0; h < H; ++h) {
                    const int64_t t = s.row0 + i, kvh = h / (H / KV);
                    const int64_t n_keys = causal ? s.past_len + i + 1 : s.past_len + s.n_tokens;
                    std::vector<double> sc(static_cast<size_t>(n_keys));
                    double mx = -1e300, sum = 0;
                    for (int64_t j = 0; j < n_keys; ++j) {
                        double dot = 0;
                        for (int64_t d = 0; d < D; ++d)
                            dot += double(q[size_t((t * H + h) * D + d)]) * kc[size_t(((s.slot * M + j) * KV + kvh) * D + d)];
                        sc[size_t(j)] = dot / std::sqrt(double(D));
                        mx = std::max(mx, sc[size_t(j)]);
                    }
                    for (double & x : sc) { x = std::exp(x - mx); sum += x; }
                    for (int64_t d = 0; d < D; ++d) {
                        double acc = 0;
                        for (int64_t j = 0; j < n_keys; ++j)
                            acc += sc[size_t(j)] / sum * vc[size_t(((s.slot * M + j) * KV + kvh) * D + d)];
                        ref[size_t((t * H + h) * D + d)] = acc;
                    }
                }
        EXPECT_LT(nmse(out.values(), ref), 1e-7) << "causal=" << causal;
        EXPECT_TRUE(out.sentinels_intact());
    }
    // a sequence that does not fit its slot is an error, not a write past the cache
    std::vector<AttentionSeq> bad = {{1, 18, 3, 0}};
    EXPECT_THROW(be->kv_store(kct, vct, Tensor(k.data(), DType::F32, {T, KV, D}), Tensor(v.data(), DType::F32, {T, KV, D}), bad), Error);
}

TEST_F(BackendCpu, SwigluAddGather) {
    const int64_t R = 9, N = 37;
    std::vector<float> a = randn(size_t(R * N), g, 4.0f), b = randn(size_t(R * N), g);
    Out sw(R * N), sum(R * N);
    be->swiglu(sw.tensor({R, N}), Tensor(a.data(), DType::F32, {R, N}), Tensor(b.data(), DType::F32, {R, N}));
    be->add(sum.tensor({R, N}), Tensor(a.data(), DType::F32, {R, N}), Tensor(b.data(), DType::F32, {R, N}));
    std::vector<double> ref_sw, ref_sum;
    for (size_t i = 0; i < a.size(); ++i) {
        ref_sw.push_back(double(a[i]) / (1.0 + std::exp(-double(a[i]))) * b[i]);
        ref_sum.push_back(double(a[i]) + b[i]);
    }
    EXPECT_LT(nmse(sw.values(), ref_sw), 1e-7);
    EXPECT_LT(nmse(sum.values(), ref_sum), 1e-7);
    EXPECT_TRUE(sw.sentinels_intact());
    EXPECT_TRUE(sum.sentinels_intact());
    std::vector<int32_t> rows = {8, 0, 3};
    Out gat(3 * N);
    be->gather_rows(gat.tensor({3, N}), Tensor(a.data(), DType::F32, {R, N}), Tensor(rows.data(), DType::I32, {3}));
    for (int i = 0; i < 3; ++i) EXPECT_EQ(0, std::memcmp(&gat.buf[size_t(i * N)], &a[size_t(rows[size_t(i)] * N)], size_t(N) * 4));
    EXPECT_TRUE(gat.sentinels_intact());
}

TEST_F(BackendCpu, MemoryAndStreams) {
    Buffer b = be->alloc(100, MemKind::device);
    ASSERT_TRUE(b);
    for (size_t i = 0; i < 100; ++i) EXPECT_EQ(static_cast<uint8_t *>(b.data())[i], 0);
    EXPECT_NO_THROW(b.view(DType::F32, {25}));
    EXPECT_THROW(b.view(DType::F32, {26}), Error);
    EXPECT_THROW(b.view(DType::F32, {1}, 97), Error);
    Buffer c = be->alloc(100, MemKind::pinned_host);
    std::memset(c.data(), 7, 100);
    Stream * copy = be->stream(StreamRole::copy);
    EXPECT_EQ(copy->role(), StreamRole::copy);
    be->copy_async(b.data(), c.data(), 100, copy);
    Event e = be->record(copy);
    be->wait(be->stream(StreamRole::compute), e);
    be->synchronize(nullptr);
    EXPECT_EQ(0, std::memcmp(b.data(), c.data(), 100));
    Buffer moved = std::move(b);
    EXPECT_FALSE(b);
    EXPECT_TRUE(moved);
}

// Every kind has its peak: it stays after a free, and reset_memory_peak() sets each to what is in use then.
TEST_F(BackendCpu, MemoryPeaksOfEveryKind) {
    const MemoryStats base = be->memory_stats();
    {
        Buffer d = be->alloc(1000, MemKind::device, "KV cache");
        Buffer p = be->alloc(3000, MemKind::pinned_host, "weight slices");
        Buffer h = be->alloc(500, MemKind::host, "scratch");
        const MemoryStats s = be->memory_stats();
        EXPECT_EQ(s.device_in_use, base.device_in_use + 1000);
        EXPECT_EQ(s.pinned_in_use, base.pinned_in_use + 3000);
        EXPECT_EQ(s.host_in_use, base.host_in_use + 500);
        EXPECT_EQ(s.device_by_purpose.at("KV cache"), 1000u);
        Buffer p2 = be->alloc(100, MemKind::pinned_host, "NVMe staging");
        p.reset();   // pinned in use drops to 100 above the base; its peak stays at 3100
    }
    MemoryStats s = be->memory_stats();
    EXPECT_EQ(s.device_in_use, base.device_in_use);
    EXPECT_EQ(s.pinned_in_use, base.pinned_in_use);
    EXPECT_EQ(s.host_in_use, base.host_in_use);
    EXPECT_GE(s.device_peak, base.device_in_use + 1000);
    EXPECT_GE(s.pinned_peak, base.pinned_in_use + 3100);
    EXPECT_GE(s.host_peak, base.host_in_use + 500);
    EXPECT_EQ(s.device_by_purpose.count("KV cache"), 0u);
    be->reset_memory_peak();
    Buffer keep = be->alloc(64, MemKind::host, "scratch");
    s = be->memory_stats();
    EXPECT_EQ(s.device_peak, s.device_in_use);
    EXPECT_EQ(s.pinned_peak, s.pinned_in_use);
    EXPECT_EQ(s.host_peak, s.host_in_use);
    EXPECT_EQ(s.host_in_use, base.host_in_use + 64);
}

}  // namespace
}  // namespace zt

// A scratch buffer whose growth failed (out of memory) must not remember the size it could not get: the next,
// smaller request allocates again instead of handing back a null pointer.
TEST(AlignedScratch, FailedGrowthIsRetriedNotRemembered) {
    zt::AlignedScratch s;
    EXPECT_THROW(s.get(size_t(1) << 60), zt::Error);
    float * p = s.get(100);
    ASSERT_NE(p, nullptr);
    p[99] = 1.0f;
    EXPECT_EQ(s.get(50), p);
    EXPECT_THROW(s.get(size_t(-1)), zt::Error);   // n * sizeof(float) would overflow
    EXPECT_NE(s.get(16), nullptr);
}
