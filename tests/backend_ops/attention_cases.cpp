// test_backend_ops: the cases of the ops over the sequences of a batch and its KV cache (ROPE, KV_STORE,
// ATTENTION, POOL), each a list of OpCase (harness.h).
#include "tests/backend_ops/harness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "runtime/backend/cpu_matmul.h"

namespace zt::backend_ops {

std::vector<OpCase> rope_cases(const Judge &) {
    std::vector<OpCase> cases;
    // per_row: a (T,D/2) table, each row its own theta (dynamic scaling); scaling: yarn's attention factor
    struct S { int64_t T, H, D; double theta; int32_t max_pos; bool per_row; float scaling; };
    const S shapes[] = {{1, 8, 128, 1e6, 40000, false, 1}, {19, 7, 24, 1e4, 4096, false, 1},
                        {333, 2, 64, 1e4, 333, false, 1},  {19, 3, 110, 5e5, 8192, false, 1},
                        {7, 4, 128, 1e4, 7, false, 1},     {19, 3, 64, 1e4, 4096, true, 1},
                        {19, 5, 128, 1e6, 40000, false, 1.1386294f}, {7, 2, 24, 1e4, 333, true, 1.2f}};
    for (const S & s : shapes) {
        OpCase c;
        c.op = "ROPE";
        c.desc = fmt::format("ROPE(T={},H={},D={},theta={:g},pos<{}{}{})", s.T, s.H, s.D, s.theta, s.max_pos,
                             s.per_row ? ",per-row" : "", s.scaling != 1 ? fmt::format(",scaling={:g}", s.scaling) : "");
        Rng r(seed_of(c.desc));
        std::vector<int32_t> pos(size_t(s.T));
        for (int64_t t = 0; t < s.T; ++t) pos[size_t(t)] = s.T == s.max_pos ? int32_t(t) : r.below(s.max_pos);
        const int64_t rows = s.per_row ? s.T : 1;
        std::vector<float> inv(size_t(rows * (s.D / 2)));
        for (int64_t t = 0; t < rows; ++t) {
            const double theta = s.theta * (1 + t);   // HF: 1 / theta ** (2i / D), in fp32
            for (int64_t i = 0; i < s.D / 2; ++i)
                inv[size_t(t * (s.D / 2) + i)] = 1.0f / std::pow(float(theta), float(2 * i) / float(s.D));
        }
        c.inputs = {host_i32({s.T}, pos), s.per_row ? host_f32({s.T, s.D / 2}, inv) : host_f32({s.D / 2}, inv)};
        c.outputs = {random_f32({s.T, s.H, s.D}, r)};   // in place
        const float scaling = s.scaling;
        c.run = [scaling](Backend & b, const Tensors & in, const Tensors & out) { b.rope(out[0], in[0], in[1], scaling); };
        cases.push_back(std::move(c));
    }
    return cases;
}

std::vector<OpCase> kv_store_cases(const Judge &) {
    std::vector<OpCase> cases;
    struct S { int32_t S_, M, KV, D; std::vector<std::pair<int32_t, int32_t>> n_past; };
    std::vector<S> shapes = {
        {3, 400, 2, 24, {{7, 0}, {1, 333}, {19, 50}}},
        {2, 400, 4, 64, {{333, 0}}},
        {4, 64, 1, 111, {{1, 0}, {5, 58}, {2, 7}}},
    };
    {   // decode: 19 sequences of one token each
        S d{21, 340, 2, 128, {}};
        Rng r(seed_of("KV_STORE decode"));
        for (int i = 0; i < 19; ++i) d.n_past.push_back({1, r.below(334)});
        shapes.push_back(d);
    }
    for (const S & s : shapes) {
        Rng r0(seed_of(fmt::format("slots {} {} {}", s.S_, s.M, s.n_past.size())));
        const auto seqs = make_seqs(s.n_past, shuffled_slots(int32_t(s.n_past.size()), s.S_, r0));
        const int64_t T = total_rows(seqs);
        OpCase c;
        c.op = "KV_STORE";
        c.desc = fmt::format("KV_STORE(S={},M={},KV={},D={},seqs={})", s.S_, s.M, s.KV, s.D, seqs_desc(seqs));
        Rng r(seed_of(c.desc));
        c.inputs = {random_f32({T, s.KV, s.D}, r), random_f32({T, s.KV, s.D}, r)};
        c.outputs = {random_f32({s.S_, s.M, s.KV, s.D}, r), random_f32({s.S_, s.M, s.KV, s.D}, r)};   // updated in place
        c.run = [seqs](Backend & b, const Tensors & in, const Tensors & out) {
            b.kv_store(out[0], out[1], in[0], in[1], seqs);
        };
        cases.push_back(std::move(c));
    }
    return cases;
}

std::vector<OpCase> attention_cases(const Judge & j) {
    std::vector<OpCase> cases;
    struct S {
        int32_t H, KV, D, M;
        std::vector<std::pair<int32_t, int32_t>> n_past;
        std::vector<bool> causal;
        int32_t window = 0;   // sliding window (0: none)
    };
    std::vector<S> shapes = {
        {4, 4, 24, 16, {{7, 0}}, {true, false}},                                               // MHA prefill
        {8, 2, 64, 400, {{7, 0}, {1, 333}, {19, 100}, {1, 0}, {3, 5}}, {true, false}},          // GQA, mixed batch
        {6, 2, 111, 400, {{7, 0}, {1, 333}, {19, 100}}, {true, false}},                         // odd D
        {4, 1, 64, 333, {{333, 0}}, {true}},                                                   // long prefill
        {2, 2, 24, 400, {{333, 40}}, {false}},                                                 // long, with past
        {16, 16, 128, 8, {{1, 0}}, {true}},                                                    // first token
        {8, 2, 64, 400, {{7, 0}, {1, 333}, {150, 100}, {1, 3}, {3, 5}}, {true, false}, 40},     // sliding window
        {4, 1, 128, 400, {{333, 0}, {1, 398}}, {true, false}, 100},                             // long, window 100
        {6, 2, 111, 400, {{19, 100}, {1, 20}}, {true}, 1},                                      // window 1: itself
    };
    for (int32_t D : {128, 111}) {   // decode: 19 sequences of one token each (flash-decoding path on CUDA)
        for (int32_t window : {0, 64}) {
            S d{8, D == 128 ? 2 : 1, D, 400, {}, {true}, window};
            Rng r(seed_of(fmt::format("ATTENTION decode {}", D)));
            for (int i = 0; i < 19; ++i) d.n_past.push_back({1, i == 0 ? 0 : i == 1 ? 399 : r.below(400)});
            if (window > 0) d.causal.push_back(false);
            shapes.push_back(d);
        }
    }
    for (const S & s : shapes)
        for (bool causal : s.causal) {
            const int32_t n_slots = int32_t(s.n_past.size()) + 1;   // one slot nobody uses
            Rng r0(seed_of(fmt::format("slots {} {}", n_slots, s.M)));
            const auto seqs = make_seqs(s.n_past, shuffled_slots(int32_t(s.n_past.size()), n_slots, r0));
            const int64_t T = total_rows(seqs);
            OpCase c;
            c.op = "ATTENTION";
            c.desc = fmt::format("ATTENTION(H={},KV={},D={},S={},M={},seqs={},{}{})", s.H, s.KV, s.D, n_slots, s.M,
                                 seqs_desc(seqs), causal ? "causal" : "non-causal",
                                 s.window > 0 ? fmt::format(",window={}", s.window) : "");
            c.max_nmse = j.attention_bound();
            Rng r(seed_of(c.desc));
            c.inputs = {random_f32({T, s.H, s.D}, r), random_f32({n_slots, s.M, s.KV, s.D}, r),
                        random_f32({n_slots, s.M, s.KV, s.D}, r)};
            c.outputs = {output(DType::F32, {T, s.H, s.D})};
            const int32_t window = s.window;
            c.run = [seqs, causal, window](Backend & b, const Tensors & in, const Tensors & out) {
                b.attention(out[0], in[0], in[1], in[2], seqs, causal, window);
            };
            cases.push_back(std::move(c));
        }
    return cases;
}

std::vector<OpCase> pool_cases(const Judge &) {
    std::vector<OpCase> cases;
    struct S { int64_t C; std::vector<int32_t> lens; };
    const std::vector<S> shapes = {{111, {1}}, {500, std::vector<int32_t>(19, 1)}, {111, {7, 1, 333, 19}}, {500, {333}}};
    for (const S & s : shapes)
        for (Pooling mode : {Pooling::last, Pooling::mean}) {
            std::vector<std::pair<int32_t, int32_t>> n_past;
            for (int32_t n : s.lens) n_past.push_back({n, 0});
            const auto seqs = make_seqs(n_past, std::vector<int32_t>(s.lens.size(), 0));
            const int64_t T = total_rows(seqs), B = int64_t(seqs.size());
            std::string lens;
            for (size_t i = 0; i < s.lens.size(); ++i) lens += fmt::format("{}{}", i ? "," : "", s.lens[i]);
            OpCase c;
            c.op = "POOL";
            c.desc = fmt::format("POOL({},C={},B={},lens=[{}])", mode == Pooling::last ? "last" : "mean", s.C, B,
                                 B > 4 ? fmt::format("{}x1", B) : lens);
            Rng r(seed_of(c.desc));
            c.inputs = {random_f32({T, s.C}, r)};
            c.outputs = {output(DType::F32, {B, s.C})};
            c.run = [seqs, mode](Backend & b, const Tensors & in, const Tensors & out) { b.pool(out[0], in[0], seqs, mode); };
            cases.push_back(std::move(c));
        }
    return cases;
}

}  // namespace zt::backend_ops

// ---- the CPU attention's fast paths (cpu_attention.h) against its reference loop ---------------------------------
namespace zt::backend_ops {
namespace {

// Odd sizes on top of attention_cases: D around and off the vector widths (1, 7, 17, 33, 80), 1 to 5 query heads
// per kv head, query rows 1, 3, 17 and 129 in one sequence, with and without a past, windows, causal or not.
std::vector<OpCase> attention_path_cases() {
    std::vector<OpCase> cases = attention_cases(Judge{});
    for (int32_t D : {1, 7, 17, 33, 80})
        for (int32_t G : {1, 3, 5})
            for (int32_t rows : {1, 3, 17, 129})
                for (int32_t window : {0, 9}) {
                    const int32_t KV = 2, H = KV * G, M = 400, past = rows == 1 ? 330 : rows % 7;
                    Rng r0(seed_of(fmt::format("paths slots {} {} {}", D, G, rows)));
                    const auto seqs = make_seqs({{rows, past}, {1, 5}}, shuffled_slots(2, 3, r0));
                    const int64_t T = total_rows(seqs);
                    for (bool causal : {true, false}) {
                        OpCase c;
                        c.op = "ATTENTION";
                        c.desc = fmt::format("ATTENTION(H={},KV={},D={},M={},seqs={},{}{})", H, KV, D, M,
                                             seqs_desc(seqs), causal ? "causal" : "non-causal",
                                             window ? fmt::format(",window={}", window) : "");
                        Rng r(seed_of(c.desc));
                        c.inputs = {random_f32({T, H, D}, r), random_f32({3, M, KV, D}, r),
                                    random_f32({3, M, KV, D}, r)};
                        c.outputs = {output(DType::F32, {T, H, D})};
                        c.run = [seqs, causal, window](Backend & b, const Tensors & in, const Tensors & out) {
                            b.attention(out[0], in[0], in[1], in[2], seqs, causal, window);
                        };
                        cases.push_back(std::move(c));
                    }
                }
    return cases;
}

// Every fast path this CPU supports (3 threads) against the reference loop (1 thread): fp32 rounding and exp's
// 1 ulp only (NMSE <= 1e-10), guards intact, every element written.
TEST(AttentionPaths, FastPathsMatchTheReferenceOnOddSizes) {
    auto ref = cpu_backend_on_path(CpuMatmulPath::reference, 1);
    const std::vector<OpCase> cases = attention_path_cases();
    int n_paths = 0;
    for (CpuMatmulPath path : cpu_matmul_supported_paths()) {
        if (path == CpuMatmulPath::reference) continue;
        ++n_paths;
        auto fast = cpu_backend_on_path(path, 3);
        int passed = 0;
        double worst = 0;
        for (OpCase c : cases) {
            c.max_nmse = 1e-10;
            const CaseResult res = evaluate(*fast, cpu_matmul_path_name(path), *ref, c, false);
            if (res.ok) ++passed;
            else ADD_FAILURE() << describe(res);
            const size_t at = res.line.find("NMSE = ");
            if (at != std::string::npos) worst = std::max(worst, std::atof(res.line.c_str() + at + 7));
        }
        std::printf("  attention %s vs reference: %d/%zu cases passed, worst NMSE %.1e\n",
                    cpu_matmul_path_name(path), passed, cases.size(), worst);
    }
    EXPECT_GE(n_paths, 1) << "the portable path is always supported";
}

// Batch invariance on each fast path: a sequence's rows computed alone equal, bit for bit, the same rows computed
// in a batch with other sequences (decode rows and a prefill chunk) and in two chunks, with 1 or 3 threads.
TEST(AttentionPaths, ASequencesRowsDoNotDependOnTheBatch) {
    // Alone, the decode rows with 5500 and 6000 keys (x 3 heads x 64 >= cpu_attention.cpp's kSplitMinWork) are
    // split over the threads; in the batch they are not.
    const int32_t H = 6, KV = 2, D = 64, M = 6008, S = 4;
    Rng r(seed_of("attention batch invariance"));
    HostTensor k = random_f32({S, M, KV, D}, r), v = random_f32({S, M, KV, D}, r);
    const auto batch = make_seqs({{1, 6000}, {37, 20}, {1, 5500}, {5, 0}}, {2, 0, 3, 1});
    const int64_t T = total_rows(batch);
    HostTensor q = random_f32({T, H, D}, r);
    auto f32 = [](HostTensor & h) { return reinterpret_cast<float *>(h.bytes.data()); };
    const Tensor kt(f32(k), DType::F32, k.shape), vt(f32(v), DType::F32, v.shape);
    for (CpuMatmulPath path : cpu_matmul_supported_paths()) {
        for (int threads : {1, 3}) {
            auto be = cpu_backend_on_path(path, threads);
            std::vector<float> all(size_t(T * H * D));
            be->attention(Tensor(all.data(), DType::F32, {T, H, D}), Tensor(f32(q), DType::F32, q.shape), kt, vt,
                          batch, true, 0);
            for (const AttentionSeq & sq : batch) {
                AttentionSeq alone = sq;
                alone.row0 = 0;
                std::vector<float> one(size_t(sq.n_tokens * H * D));
                be->attention(Tensor(one.data(), DType::F32, {sq.n_tokens, H, D}),
                              Tensor(f32(q) + int64_t(sq.row0) * H * D, DType::F32, {sq.n_tokens, H, D}), kt, vt,
                              {alone}, true, 0);
                EXPECT_EQ(0, std::memcmp(one.data(), all.data() + int64_t(sq.row0) * H * D, one.size() * 4))
                    << cpu_matmul_path_name(path) << ", " << threads << " threads, slot " << sq.slot;
                // and in two chunks (a prefill chunked differently: its rows fall in other blocks of rows)
                for (int32_t cut = 1; cut < sq.n_tokens; cut += 6) {
                    AttentionSeq first = alone, second = alone;
                    first.n_tokens = cut;
                    second.past_len = sq.past_len + cut;
                    second.n_tokens = sq.n_tokens - cut;
                    std::vector<float> two(one.size());
                    be->attention(Tensor(two.data(), DType::F32, {cut, H, D}),
                                  Tensor(f32(q) + int64_t(sq.row0) * H * D, DType::F32, {cut, H, D}), kt, vt, {first},
                                  true, 0);
                    be->attention(Tensor(two.data() + cut * H * D, DType::F32, {second.n_tokens, H, D}),
                                  Tensor(f32(q) + int64_t(sq.row0 + cut) * H * D, DType::F32, {second.n_tokens, H, D}),
                                  kt, vt, {second}, true, 0);
                    EXPECT_EQ(0, std::memcmp(one.data(), two.data(), one.size() * 4))
                        << cpu_matmul_path_name(path) << ", " << threads << " threads, slot " << sq.slot << ", cut "
                        << cut;
                }
            }
        }
    }
}

}  // namespace
}  // namespace zt::backend_ops
