// test_backend_ops: the cases of the ops over the sequences of a batch and its KV cache (ROPE, KV_STORE,
// ATTENTION, POOL), each a list of OpCase (harness.h).
#include "tests/backend_ops/harness.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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
