// test_backend_ops: every op of a Backend (-b, default "cuda") against the CPU reference backend on random
// inputs, in the manner of llama.cpp's test-backend-ops. Its own executable and main():
//
//   test_backend_ops [-b cuda|cuda:N|cpu-threads] [-o OP[,OP...]] [-c auto|fp32|bf16|fp16] [gtest flags]
//
//   -b, --backend  cuda (device 0; cuda:N for device N): the CUDA backend against the CPU backend. Without a
//                  usable GPU every op case is skipped with cuda_unavailable_reason().
//                  cpu-threads: the CPU backend with 3 threads against itself with 1 thread. The CPU backend is
//                  batch and thread invariant, so every NMSE must be exactly 0 and every sampled id equal: this
//                  proves the harness in CI, where there is no GPU.
//   -o, --op       only these ops (comma list, case-insensitive): EMBEDDING RMSNORM MATMUL ROPE KV_STORE
//                  ATTENTION SWIGLU ADD GATHER_ROWS POOL SAMPLE.
//   -c, --compute  CudaBackendOptions::compute_dtype (matmul inputs); "bf16"/"fp16" also loosen attention.
//
// Each op case builds its inputs on the host (uniform in [-1, 1] from a seed derived from the case's name, so a
// case sees the same inputs whatever else runs), copies them to each backend's device memory with copy_async
// (through pinned staging; the harness never dereferences backend memory: on CUDA host_can_access(device) is
// false), runs the op on both backends and copies the outputs back. Every output lives between two 256-byte
// guards filled with a byte pattern; an output the op must write entirely starts as a NaN pattern. A case
// fails on: guard bytes changed ("OP wrote N bytes past its output"), NaN/Inf in the output (or elements left
// at the NaN fill), NMSE = sum((a-b)^2)/sum(b^2) (b = CPU) above its bound (1e-7; 5e-4 for matmul/attention
// whose compute is bf16/fp16), sampled ids that differ (temperature sampling: unless the CPU's u lies within
// 1e-9 relative of a boundary of its cumulative distribution), or an exception. One line per case:
//   RMSNORM(R=19,C=111,w=f32): NMSE = 1.2e-15 <= 1e-07 OK
//
// SelfTest.* wrap the CPU backend in a deliberately faulty backend (a write one element past / before the
// output, a NaN, an unwritten element, a 1e-3 perturbation, a wrong id, a throw) and check the harness reports
// each fault; they run under every -b.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "runtime/backend/backend.h"
#include "runtime/backend/cpu_matmul.h"
#include "runtime/backend/op_checks.h"
#include "runtime/backend/parallel_for.h"
#include "runtime/model/dtype.h"
#include "runtime/base/error.h"
#include "runtime/job/sampler.h"

namespace zt {
namespace {

// ---- options ---------------------------------------------------------------------------------------------------
const std::vector<std::string> kOps = {"EMBEDDING", "RMSNORM", "MATMUL", "ROPE", "KV_STORE", "ATTENTION",
                                       "SWIGLU", "ADD", "GATHER_ROWS", "POOL", "SAMPLE"};

struct Options {
    std::string backend = "cuda";
    std::set<std::string> ops;          // empty: all
    std::string compute = "auto";       // CudaBackendOptions::compute_dtype
};
Options g_opt;

bool op_selected(const std::string & op) { return g_opt.ops.empty() || g_opt.ops.count(op) > 0; }

// ---- host tensors and random inputs ----------------------------------------------------------------------------
struct HostTensor {
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;   // empty for an output: start as the NaN fill (the op must write every element)

    int64_t numel() const { int64_t n = 1; for (int64_t d : shape) n *= d; return n; }
    size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
};

// A fixed, platform-independent stream of numbers (no std:: distributions, whose output is library-defined).
struct Rng {
    std::mt19937_64 g;
    explicit Rng(uint64_t seed) : g(seed) {}
    float uniform(float lo = -1.0f, float hi = 1.0f) { return lo + (hi - lo) * float(g() >> 40) * 0x1.0p-24f; }
    double u01() { return double(g() >> 11) * 0x1.0p-53; }   // [0, 1), like Sampler::next_uniform
    int32_t below(int64_t n) { return int32_t(g() % uint64_t(n)); }
    std::vector<float> uniforms(int64_t n, float scale = 1.0f) {
        std::vector<float> v(static_cast<size_t>(n));
        for (float & x : v) x = scale * uniform();
        return v;
    }
};

uint64_t seed_of(const std::string & s) {   // FNV-1a: a case's inputs depend on its name only
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) { h ^= c; h *= 1099511628211ull; }
    return h;
}

HostTensor host_f32(std::vector<int64_t> shape, const std::vector<float> & v) {
    HostTensor t{DType::F32, std::move(shape), {}};
    t.bytes.resize(v.size() * 4);
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    return t;
}
HostTensor host_weight(std::vector<int64_t> shape, DType dt, const std::vector<float> & v) {
    HostTensor t{dt, std::move(shape), {}};
    t.bytes.resize(v.size() * dtype_size(dt));
    convert_from_f32(t.bytes.data(), dt, v.data(), v.size());
    return t;
}
HostTensor host_i32(std::vector<int64_t> shape, const std::vector<int32_t> & v) {
    HostTensor t{DType::I32, std::move(shape), {}};
    t.bytes.resize(v.size() * 4);
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    return t;
}
HostTensor random_f32(std::vector<int64_t> shape, Rng & r, float scale = 1.0f) {
    HostTensor t{DType::F32, std::move(shape), {}};
    return host_f32(t.shape, r.uniforms(t.numel(), scale));
}
HostTensor output(DType dt, std::vector<int64_t> shape) { return HostTensor{dt, std::move(shape), {}}; }

const char * dt_name(DType d) {
    switch (d) {
        case DType::F32: return "f32";
        case DType::F16: return "f16";
        case DType::BF16: return "bf16";
        default: return dtype_name(d);
    }
}

// ---- op cases ------------------------------------------------------------------------------------------------
using Tensors = std::vector<Tensor>;

struct SampleCheck {   // what SAMPLE needs to judge ids (the host logits and per-row parameters)
    std::vector<float> logits;
    int64_t V = 0;
    std::vector<SampleRow> rows;
};

struct OpCase {
    std::string op;     // "RMSNORM"
    std::string desc;   // "RMSNORM(R=19,C=111,w=f32)"
    double max_nmse = 1e-7;
    std::vector<HostTensor> inputs;
    std::vector<HostTensor> outputs;   // bytes: initial contents (in-place ops), or empty = NaN fill
    std::function<void(Backend &, const Tensors & in, const Tensors & out)> run;
    std::shared_ptr<SampleCheck> sample;   // set for SAMPLE: outputs[0] are ids, compared as ids
};

// How a run is judged: exact (cpu-threads) wants NMSE == 0 and identical ids.
struct Judge {
    bool exact = false;
    std::string compute = "auto";
    bool low_precision_compute() const { return compute == "bf16" || compute == "fp16"; }
    double matmul_bound(DType w) const {
        if (compute == "fp32") return 1e-7;
        if (compute == "auto" && w == DType::F32) return 1e-7;
        return 5e-4;   // x narrowed to the weights' (or the compute) dtype on the GPU
    }
    double attention_bound() const { return low_precision_compute() ? 5e-4 : 1e-7; }
};

// -- sequences of a batch --
std::vector<AttentionSeq> make_seqs(const std::vector<std::pair<int32_t, int32_t>> & n_and_past,
                                    const std::vector<int32_t> & slots) {
    std::vector<AttentionSeq> seqs;
    int32_t row = 0;
    for (size_t i = 0; i < n_and_past.size(); ++i) {
        seqs.push_back(AttentionSeq{slots[i], n_and_past[i].second, n_and_past[i].first, row});
        row += n_and_past[i].first;
    }
    return seqs;
}
int32_t total_rows(const std::vector<AttentionSeq> & seqs) {
    int32_t t = 0;
    for (const AttentionSeq & s : seqs) t = std::max(t, s.row0 + s.n_tokens);
    return t;
}
// "[7+0,1+333,19+50]" (n_tokens + past_len), "decode:19" when every sequence has one token and there are many
std::string seqs_desc(const std::vector<AttentionSeq> & seqs) {
    bool decode = seqs.size() > 4;
    for (const AttentionSeq & s : seqs) decode = decode && s.n_tokens == 1;
    if (decode) return fmt::format("decode:{}", seqs.size());
    std::string d = "[";
    for (size_t i = 0; i < seqs.size(); ++i)
        d += fmt::format("{}{}+{}", i ? "," : "", seqs[i].n_tokens, seqs[i].past_len);
    return d + "]";
}
// n distinct slots out of S, shuffled
std::vector<int32_t> shuffled_slots(int32_t n, int32_t S, Rng & r) {
    std::vector<int32_t> all(static_cast<size_t>(S));
    for (int32_t i = 0; i < S; ++i) all[size_t(i)] = i;
    for (int32_t i = S - 1; i > 0; --i) std::swap(all[size_t(i)], all[size_t(r.below(i + 1))]);
    all.resize(size_t(n));
    return all;
}

const DType kWeightTypes[] = {DType::F32, DType::F16, DType::BF16};

std::vector<OpCase> embedding_cases(const Judge &) {
    std::vector<OpCase> cases;
    const int64_t shapes[][3] = {{111, 500, 1}, {500, 111, 19}, {500, 500, 333}};   // V, C, T
    for (DType dt : kWeightTypes)
        for (auto & s : shapes) {
            const int64_t V = s[0], C = s[1], T = s[2];
            OpCase c;
            c.op = "EMBEDDING";
            c.desc = fmt::format("EMBEDDING(V={},C={},T={},table={})", V, C, T, dt_name(dt));
            Rng r(seed_of(c.desc));
            std::vector<int32_t> tok(static_cast<size_t>(T));
            for (auto & t : tok) t = r.below(V);
            if (T > 1) { tok[0] = 0; tok[size_t(T - 1)] = int32_t(V - 1); }
            c.inputs = {host_i32({T}, tok), host_weight({V, C}, dt, r.uniforms(V * C))};
            c.outputs = {output(DType::F32, {T, C})};
            c.run = [](Backend & b, const Tensors & in, const Tensors & out) { b.embedding(out[0], in[0], in[1]); };
            cases.push_back(std::move(c));
        }
    return cases;
}

std::vector<OpCase> rmsnorm_cases(const Judge &) {
    std::vector<OpCase> cases;
    auto add_case = [&](std::vector<int64_t> xshape, int64_t C, DType dt, bool in_place, const std::string & desc) {
        OpCase c;
        c.op = "RMSNORM";
        c.desc = desc;
        Rng r(seed_of(c.desc));
        HostTensor x = random_f32(xshape, r);
        c.inputs = {host_weight({C}, dt, r.uniforms(C))};
        const float eps = 1e-6f;
        if (in_place) {   // out is x
            c.outputs = {x};
            c.run = [eps](Backend & b, const Tensors & in, const Tensors & out) { b.rmsnorm(out[0], out[0], in[0], eps); };
        } else {
            c.inputs.push_back(x);
            c.outputs = {output(DType::F32, xshape)};
            c.run = [eps](Backend & b, const Tensors & in, const Tensors & out) { b.rmsnorm(out[0], in[1], in[0], eps); };
        }
        cases.push_back(std::move(c));
    };
    const int64_t rc[][2] = {{1, 111}, {19, 111}, {19, 500}, {333, 500}};
    for (DType dt : kWeightTypes)
        for (auto & s : rc)
            add_case({s[0], s[1]}, s[1], dt, false, fmt::format("RMSNORM(R={},C={},w={})", s[0], s[1], dt_name(dt)));
    add_case({19, 500}, 500, DType::BF16, true, "RMSNORM(R=19,C=500,w=bf16,in-place)");
    // per head (qwen3's q/k norm): x (T,H,D) as R = T*H rows of C = D
    const int64_t thd[][3] = {{19, 7, 24}, {1, 16, 128}, {333, 2, 111}, {7, 5, 64}};
    for (auto & s : thd)
        for (DType dt : {DType::F32, DType::BF16})
            add_case({s[0], s[1], s[2]}, s[2], dt, false,
                     fmt::format("RMSNORM(R=T*H={}*{},C=D={},w={})", s[0], s[1], s[2], dt_name(dt)));
    add_case({19, 8, 128}, 128, DType::F32, true, "RMSNORM(R=T*H=19*8,C=D=128,w=f32,in-place)");
    return cases;
}

std::vector<OpCase> matmul_cases(const Judge & j) {
    std::vector<OpCase> cases;
    const int64_t kn[][2] = {{111, 500}, {500, 111}, {500, 500}};
    for (DType dt : kWeightTypes)
        for (int64_t T : {1, 19, 333})
            for (auto & s : kn)
                for (bool bias : {false, true}) {
                    const int64_t K = s[0], N = s[1];
                    if (T == 333 && K == 500 && N == 500 && bias) continue;   // enough big ones
                    OpCase c;
                    c.op = "MATMUL";
                    c.desc = fmt::format("MATMUL(T={},K={},N={},w={}{})", T, K, N, dt_name(dt), bias ? ",bias" : "");
                    c.max_nmse = j.matmul_bound(dt);
                    Rng r(seed_of(c.desc));
                    c.inputs = {random_f32({T, K}, r), host_weight({N, K}, dt, r.uniforms(N * K))};
                    if (bias) c.inputs.push_back(host_weight({N}, dt, r.uniforms(N)));
                    c.outputs = {output(DType::F32, {T, N})};
                    c.run = [](Backend & b, const Tensors & in, const Tensors & out) {
                        b.matmul(out[0], in[0], in[1], in.size() > 2 ? in[2] : Tensor());
                    };
                    cases.push_back(std::move(c));
                }
    return cases;
}

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

std::vector<OpCase> swiglu_cases(const Judge &) {
    std::vector<OpCase> cases;
    struct S { int64_t R, N; float scale; bool in_place; };
    const S shapes[] = {{1, 111, 1, false}, {19, 500, 1, false}, {333, 111, 1, false}, {19, 111, 1, true},
                        {19, 500, 20, false}};
    for (const S & s : shapes) {
        OpCase c;
        c.op = "SWIGLU";
        c.desc = fmt::format("SWIGLU(R={},N={}{}{})", s.R, s.N, s.scale != 1 ? fmt::format(",range={:g}", s.scale) : "",
                             s.in_place ? ",out=gate" : "");
        Rng r(seed_of(c.desc));
        HostTensor gate = random_f32({s.R, s.N}, r, s.scale), up = random_f32({s.R, s.N}, r);
        if (s.in_place) {
            c.inputs = {up};
            c.outputs = {gate};
            c.run = [](Backend & b, const Tensors & in, const Tensors & out) { b.swiglu(out[0], out[0], in[0]); };
        } else {
            c.inputs = {gate, up};
            c.outputs = {output(DType::F32, {s.R, s.N})};
            c.run = [](Backend & b, const Tensors & in, const Tensors & out) { b.swiglu(out[0], in[0], in[1]); };
        }
        cases.push_back(std::move(c));
    }
    return cases;
}

std::vector<OpCase> add_cases(const Judge &) {
    std::vector<OpCase> cases;
    const int64_t shapes[][2] = {{1, 111}, {19, 500}, {333, 111}};
    for (auto & s : shapes)
        for (int alias : {0, 1, 2}) {   // 0: out separate, 1: out = a, 2: out = b
            if (alias && s[0] != 19) continue;
            OpCase c;
            c.op = "ADD";
            c.desc = fmt::format("ADD(R={},C={}{})", s[0], s[1], alias == 1 ? ",out=a" : alias == 2 ? ",out=b" : "");
            Rng r(seed_of(c.desc));
            HostTensor a = random_f32({s[0], s[1]}, r), b = random_f32({s[0], s[1]}, r);
            if (alias == 0) {
                c.inputs = {a, b};
                c.outputs = {output(DType::F32, {s[0], s[1]})};
                c.run = [](Backend & be, const Tensors & in, const Tensors & out) { be.add(out[0], in[0], in[1]); };
            } else {
                c.inputs = {alias == 1 ? b : a};
                c.outputs = {alias == 1 ? a : b};
                c.run = [alias](Backend & be, const Tensors & in, const Tensors & out) {
                    if (alias == 1) be.add(out[0], out[0], in[0]);
                    else be.add(out[0], in[0], out[0]);
                };
            }
            cases.push_back(std::move(c));
        }
    return cases;
}

std::vector<OpCase> gather_rows_cases(const Judge &) {
    std::vector<OpCase> cases;
    const int64_t shapes[][3] = {{19, 111, 1}, {19, 500, 19}, {333, 500, 19}, {333, 111, 7}};   // T, C, R
    for (auto & s : shapes) {
        const int64_t T = s[0], C = s[1], R = s[2];
        OpCase c;
        c.op = "GATHER_ROWS";
        c.desc = fmt::format("GATHER_ROWS(T={},C={},R={})", T, C, R);
        Rng r(seed_of(c.desc));
        std::vector<int32_t> rows(static_cast<size_t>(R));
        for (auto & x : rows) x = r.below(T);   // repeats allowed
        rows[0] = int32_t(T - 1);
        c.inputs = {random_f32({T, C}, r), host_i32({R}, rows)};
        c.outputs = {output(DType::F32, {R, C})};
        c.run = [](Backend & b, const Tensors & in, const Tensors & out) { b.gather_rows(out[0], in[0], in[1]); };
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

std::vector<OpCase> sample_cases(const Judge &) {
    std::vector<OpCase> cases;
    struct S {
        std::string name;
        int64_t R, V;
        double temperature;
        int64_t top_k;
        double top_p;
        float scale;       // logits uniform in [-scale, scale]
        bool ties = false; // logits rounded to quarters (many ties: argmax must pick the lowest id)
        bool mixed = false;// every row draws its own parameters from the settings above
    };
    const std::vector<S> settings = {
        {"greedy", 1, 111, 0, 0, 1, 1},
        {"greedy", 19, 500, 0, 0, 1, 1},
        {"greedy,ties", 19, 500, 0, 0, 1, 1, true},
        {"temp", 64, 500, 0.7, 0, 1, 1},
        {"temp", 19, 111, 1.0, 0, 1, 8},
        {"top_k", 64, 500, 1.0, 40, 1, 1},
        {"top_k=1", 19, 500, 0.8, 1, 1, 1},
        {"top_p", 64, 500, 0.8, 0, 0.9, 1},
        {"top_p", 19, 111, 1.3, 0, 0.5, 8},
        {"top_k,top_p", 64, 500, 1.2, 50, 0.8, 1},
        {"top_k,top_p", 19, 5000, 0.9, 200, 0.95, 10},
        {"top_p", 4, 50000, 1.0, 0, 0.95, 10},
        {"mixed", 256, 500, 0, 0, 1, 4, false, true},
    };
    for (const S & s : settings) {
        OpCase c;
        c.op = "SAMPLE";
        if (s.mixed)
            c.desc = fmt::format("SAMPLE(R={},V={},mixed rows)", s.R, s.V);
        else
            c.desc = fmt::format("SAMPLE(R={},V={},{}{}{}{})", s.R, s.V,
                                 s.temperature == 0 ? std::string("greedy") : fmt::format("temp={:g}", s.temperature),
                                 s.top_k ? fmt::format(",top_k={}", s.top_k) : "",
                                 s.top_p < 1 ? fmt::format(",top_p={:g}", s.top_p) : "", s.ties ? ",ties" : "");
        Rng r(seed_of(c.desc));
        auto check = std::make_shared<SampleCheck>();
        check->V = s.V;
        check->logits = r.uniforms(s.R * s.V, s.scale);
        if (s.ties) for (float & x : check->logits) x = std::round(x * 4) / 4;
        for (int64_t i = 0; i < s.R; ++i) {
            SampleRow row{s.temperature, s.top_k, s.top_p, r.u01()};
            if (s.mixed) {
                const double temps[] = {0, 0.5, 1.0, 1.7};
                const int64_t ks[] = {0, 1, 10, 100, 500};
                const double ps[] = {1.0, 0.5, 0.9, 0.99};
                row.temperature = temps[r.below(4)];
                row.top_k = ks[r.below(5)];
                row.top_p = ps[r.below(4)];
            }
            if (row.temperature == 0) row.u = 0;
            if (i == 1 && s.R > 2 && row.temperature > 0) row.u = 0;                       // edges of [0, 1)
            if (i == 2 && s.R > 2 && row.temperature > 0) row.u = 1.0 - 0x1.0p-53;
            check->rows.push_back(row);
        }
        c.inputs = {host_f32({s.R, s.V}, check->logits)};
        c.outputs = {output(DType::I32, {s.R})};
        c.sample = check;
        c.run = [check](Backend & b, const Tensors & in, const Tensors & out) { b.sample(out[0], in[0], check->rows); };
        cases.push_back(std::move(c));
    }
    return cases;
}

std::vector<OpCase> make_cases(const std::string & op, const Judge & j) {
    if (op == "EMBEDDING") return embedding_cases(j);
    if (op == "RMSNORM") return rmsnorm_cases(j);
    if (op == "MATMUL") return matmul_cases(j);
    if (op == "ROPE") return rope_cases(j);
    if (op == "KV_STORE") return kv_store_cases(j);
    if (op == "ATTENTION") return attention_cases(j);
    if (op == "SWIGLU") return swiglu_cases(j);
    if (op == "ADD") return add_cases(j);
    if (op == "GATHER_ROWS") return gather_rows_cases(j);
    if (op == "POOL") return pool_cases(j);
    if (op == "SAMPLE") return sample_cases(j);
    ZT_FAIL("test_backend_ops: no cases for op {}", op);
}

// ---- running a case on one backend ------------------------------------------------------------------------------
constexpr size_t kGuard = 256;                 // bytes before and after every output (keeps outputs 256-aligned)
constexpr uint32_t kGuardWord = 0x7fa5a5a5u;   // the guards' byte pattern (a signalling NaN as f32)
constexpr uint32_t kFillWord = 0x7fc0beefu;    // an output the op must write starts as this quiet NaN

void fill_words(uint8_t * p, size_t bytes, uint32_t word) {
    for (size_t i = 0; i < bytes; ++i) p[i] = uint8_t(word >> (8 * (i % 4)));   // little-endian words
}

// Host <-> backend memory, on the compute stream, through pinned staging the host may touch.
class Transfer {
public:
    explicit Transfer(Backend & b) : b_(b), s_(b.stream(StreamRole::compute)) {}
    void to_device(void * dst, const void * src, size_t n) {
        if (n == 0) return;
        if (b_.host_can_access(MemKind::pinned_host)) {
            Buffer st = b_.alloc(n, MemKind::pinned_host, "test staging");
            std::memcpy(st.data(), src, n);
            b_.copy_async(dst, st.data(), n, s_);
            b_.synchronize(s_);
        } else {
            b_.copy_async(dst, src, n, s_);
            b_.synchronize(s_);
        }
    }
    std::vector<uint8_t> to_host(const void * src, size_t n) {
        std::vector<uint8_t> v(n);
        if (n == 0) return v;
        b_.synchronize(s_);
        if (b_.host_can_access(MemKind::pinned_host)) {
            Buffer st = b_.alloc(n, MemKind::pinned_host, "test staging");
            b_.copy_async(st.data(), src, n, s_);
            b_.synchronize(s_);
            std::memcpy(v.data(), st.data(), n);
        } else {
            b_.copy_async(v.data(), src, n, s_);
            b_.synchronize(s_);
        }
        return v;
    }
private:
    Backend & b_;
    Stream * s_;
};

// The outputs of one run, each with its guards: guard + out + guard bytes as they came back.
struct RunResult {
    std::vector<std::vector<uint8_t>> outputs;
    std::string error;   // an exception's message
};

RunResult run_on(Backend & b, const OpCase & c) {
    RunResult res;
    try {
        Transfer tr(b);
        std::vector<Buffer> bufs;
        Tensors in, out;
        for (const HostTensor & h : c.inputs) {
            bufs.push_back(b.alloc(std::max<size_t>(h.nbytes(), 1), MemKind::device, "test input"));
            tr.to_device(bufs.back().data(), h.bytes.data(), h.nbytes());
            in.emplace_back(bufs.back().data(), h.dtype, h.shape);
        }
        for (const HostTensor & h : c.outputs) {
            const size_t n = h.nbytes();
            std::vector<uint8_t> init(kGuard + n + kGuard);
            fill_words(init.data(), kGuard, kGuardWord);
            fill_words(init.data() + kGuard + n, kGuard, kGuardWord);
            if (h.bytes.empty()) fill_words(init.data() + kGuard, n, kFillWord);
            else std::memcpy(init.data() + kGuard, h.bytes.data(), n);
            bufs.push_back(b.alloc(init.size(), MemKind::device, "test output"));
            tr.to_device(bufs.back().data(), init.data(), init.size());
            out.emplace_back(static_cast<char *>(bufs.back().data()) + kGuard, h.dtype, h.shape);
        }
        c.run(b, in, out);
        b.synchronize(nullptr);
        for (size_t i = 0; i < c.outputs.size(); ++i)
            res.outputs.push_back(tr.to_host(static_cast<char *>(out[i].data) - kGuard, kGuard + c.outputs[i].nbytes() + kGuard));
    } catch (const std::exception & e) {
        res.error = e.what();
        res.outputs.clear();
    }
    return res;
}

// ---- judging -------------------------------------------------------------------------------------------------
struct CaseResult {
    bool ok = true;
    std::string line;                    // the table line
    std::vector<std::string> problems;   // why it failed
};

// Guard bytes an op changed, as problems ("OP wrote N bytes past its output").
void check_guards(const std::string & op, const std::string & who, const std::vector<uint8_t> & whole, size_t n,
                  const std::string & out_name, std::vector<std::string> & problems) {
    std::vector<uint8_t> guard(kGuard);
    fill_words(guard.data(), kGuard, kGuardWord);
    size_t first_before = kGuard;
    for (size_t i = 0; i < kGuard; ++i)
        if (whole[i] != guard[i]) { first_before = i; break; }
    if (first_before < kGuard)
        problems.push_back(fmt::format("{} wrote {} bytes before its output{} ({})", op, kGuard - first_before,
                                       out_name, who));
    size_t last_after = 0;
    bool after = false;
    for (size_t i = 0; i < kGuard; ++i)
        if (whole[kGuard + n + i] != guard[i]) { last_after = i; after = true; }
    if (after)
        problems.push_back(fmt::format("{} wrote {} bytes past its output{} ({})", op, last_after + 1, out_name, who));
}

// u within 1e-9 relative of a boundary of the CPU's cumulative distribution: a nudge of u changes the CPU's pick.
bool near_boundary(const SampleCheck & s, int64_t r, int32_t ref_id) {
    const SampleRow & p = s.rows[size_t(r)];
    if (p.temperature <= 0) return false;
    SampleScratch scratch;
    const float * row = s.logits.data() + r * s.V;
    for (double f : {1.0 - 1e-9, 1.0 + 1e-9}) {
        const double u = std::min(p.u * f, 1.0 - 0x1.0p-53);
        if (sample_token(row, s.V, p.temperature, p.top_k, p.top_p, u, scratch) != ref_id) return true;
    }
    return false;
}

CaseResult judge_ids(const OpCase & c, const std::string & test_name, const int32_t * got, const int32_t * ref,
                     bool exact) {
    CaseResult res;
    const SampleCheck & s = *c.sample;
    const int64_t R = int64_t(s.rows.size());
    int64_t differ = 0, tolerated = 0;
    for (int64_t r = 0; r < R; ++r) {
        const SampleRow & p = s.rows[size_t(r)];
        const std::string params = fmt::format("temp={:g} top_k={} top_p={:g} u={:.17g}", p.temperature, p.top_k,
                                               p.top_p, p.u);
        if (ref[r] < 0 || ref[r] >= s.V) {
            res.problems.push_back(fmt::format("row {}: the reference picked id {} outside [0, {})", r, ref[r], s.V));
            continue;
        }
        if (got[r] < 0 || got[r] >= s.V) {
            ++differ;
            if (res.problems.size() < 4)
                res.problems.push_back(fmt::format("row {}: {} wrote id {} outside [0, {}){} ({})", r, test_name, got[r],
                                                   s.V, uint32_t(got[r]) == kFillWord ? " (never written)" : "", params));
            continue;
        }
        if (got[r] == ref[r]) continue;
        if (!exact && near_boundary(s, r, ref[r])) { ++tolerated; continue; }
        ++differ;
        if (res.problems.size() < 4) {
            const float * row = s.logits.data() + r * s.V;
            res.problems.push_back(fmt::format("row {}: cpu picked {} (logit {}), {} picked {} (logit {}); {}", r, ref[r],
                                               row[ref[r]], test_name, got[r], row[got[r]], params));
        }
    }
    res.ok = differ == 0 && res.problems.empty();
    res.line = fmt::format("  {}: {}/{} ids differ{} {}", c.desc, differ, R,
                           tolerated ? fmt::format(" (+{} within 1e-9 of a boundary)", tolerated) : "",
                           res.ok ? "OK" : "FAIL");
    return res;
}

// Runs c on `test` and `ref` and compares.
CaseResult evaluate(Backend & test, const std::string & test_name, Backend & ref, const OpCase & c, bool exact) {
    const RunResult rr = run_on(ref, c);
    const RunResult tr = run_on(test, c);
    CaseResult res;
    if (!rr.error.empty() || !tr.error.empty()) {
        res.ok = false;
        const std::string what = fmt::format("{} threw: {}", !tr.error.empty() ? test_name : "cpu (reference)",
                                             !tr.error.empty() ? tr.error : rr.error);
        res.line = fmt::format("  {}: {} FAIL", c.desc, what);
        res.problems.push_back(what);
        return res;
    }
    std::vector<std::string> problems;
    for (size_t i = 0; i < c.outputs.size(); ++i) {
        const std::string out_name = c.outputs.size() > 1 ? fmt::format(" #{}", i) : "";
        check_guards(c.op, test_name, tr.outputs[i], c.outputs[i].nbytes(), out_name, problems);
        check_guards(c.op, "cpu (reference)", rr.outputs[i], c.outputs[i].nbytes(), out_name, problems);
    }
    if (c.sample) {
        res = judge_ids(c, test_name, reinterpret_cast<const int32_t *>(tr.outputs[0].data() + kGuard),
                        reinterpret_cast<const int32_t *>(rr.outputs[0].data() + kGuard), exact);
    } else {
        double num = 0, den = 0;
        for (size_t i = 0; i < c.outputs.size(); ++i) {
            const int64_t n = c.outputs[i].numel();
            const bool must_write = c.outputs[i].bytes.empty();
            const std::string out_name = c.outputs.size() > 1 ? fmt::format(" #{}", i) : "";
            int64_t bad = 0, unwritten = 0, bad_ref = 0, first_bad = -1;
            for (int64_t k = 0; k < n; ++k) {
                float a, b;
                std::memcpy(&a, tr.outputs[i].data() + kGuard + size_t(k) * 4, 4);
                std::memcpy(&b, rr.outputs[i].data() + kGuard + size_t(k) * 4, 4);
                if (!std::isfinite(b)) { ++bad_ref; continue; }
                if (!std::isfinite(a)) {
                    uint32_t bits;
                    std::memcpy(&bits, &a, 4);
                    if (must_write && bits == kFillWord) ++unwritten;
                    else ++bad;
                    if (first_bad < 0) first_bad = k;
                    continue;
                }
                num += (double(a) - double(b)) * (double(a) - double(b));
                den += double(b) * double(b);
            }
            if (bad_ref)
                problems.push_back(fmt::format("the reference output{} has {} NaN/Inf values", out_name, bad_ref));
            if (bad)
                problems.push_back(fmt::format("{} output{} has {} NaN/Inf values (first at element {})", test_name,
                                               out_name, bad, first_bad));
            if (unwritten)
                problems.push_back(fmt::format("{} left {} element(s) of its output{} unwritten (still the NaN fill; "
                                               "first at element {})", test_name, unwritten, out_name, first_bad));
        }
        const double nmse = den > 0 ? num / den : num;
        const double bound = exact ? 0.0 : c.max_nmse;
        const bool within = nmse <= bound;
        if (!within) problems.push_back(fmt::format("NMSE {:.3e} above {:g}", nmse, bound));
        res.ok = problems.empty();
        res.line = fmt::format("  {}: NMSE = {:.1e} {} {:g} {}", c.desc, nmse, within ? "<=" : ">", bound,
                               res.ok ? "OK" : "FAIL");
    }
    for (std::string & p : problems) res.problems.push_back(std::move(p));
    res.ok = res.ok && res.problems.empty();
    if (!res.ok && res.line.size() >= 2 && res.line.compare(res.line.size() - 2, 2, "OK") == 0)
        res.line.replace(res.line.size() - 2, 2, "FAIL");
    return res;
}

std::string describe(const CaseResult & r) {
    std::string s = r.line;
    for (const std::string & p : r.problems)
        if (r.line.find(p) == std::string::npos) s += "\n      " + p;
    return s;
}

// ---- the backends under test -------------------------------------------------------------------------------
struct Backends {
    std::unique_ptr<Backend> test, ref;
    std::string test_name;     // in messages: "cuda", "cpu(3 threads)"
    std::string skip_reason;   // set when test is null and there is no usable GPU
    std::string start_error;   // set when test is null although cuda_unavailable_reason() says a GPU is usable
    bool exact = false;
};
std::unique_ptr<Backends> g_backends;

Backends & backends() {
    if (g_backends) return *g_backends;
    g_backends = std::make_unique<Backends>();
    Backends & b = *g_backends;
    if (g_opt.backend == "cpu-threads") {
        b.test = make_cpu_backend(3);
        b.ref = make_cpu_backend(1);
        b.test_name = "cpu(3 threads)";
        b.exact = true;
        return b;
    }
    // "cuda" or "cuda:N"
    CudaBackendOptions o;
    if (g_opt.backend.size() > 5) o.device = std::stoi(g_opt.backend.substr(5));
    o.compute_dtype = g_opt.compute;
    b.test_name = g_opt.backend;
    if (!cuda_backend_compiled()) {
        b.skip_reason = cuda_unavailable_reason();
    } else {
        try {
            b.test = make_cuda_backend(o);
        } catch (const std::exception & e) {
            // no usable device: skip; a device that is there but whose backend does not start: fail
            const std::string why = cuda_unavailable_reason();
            if (why.empty()) b.start_error = fmt::format("make_cuda_backend failed with a usable device: {}", e.what());
            else b.skip_reason = why;
        }
    }
    if (b.test) b.ref = make_cpu_backend(0);
    return b;
}

void run_op_suite(const std::string & op) {
    if (!op_selected(op)) GTEST_SKIP() << "not selected by -o";
    Backends & b = backends();
    if (!b.start_error.empty()) FAIL() << b.start_error;
    if (!b.test) GTEST_SKIP() << b.skip_reason;
    Judge j;
    j.exact = b.exact;
    j.compute = g_opt.compute;
    const std::vector<OpCase> cases = make_cases(op, j);
    int passed = 0;
    for (const OpCase & c : cases) {
        const CaseResult r = evaluate(*b.test, b.test_name, *b.ref, c, b.exact);
        std::printf("%s\n", describe(r).c_str());
        std::fflush(stdout);
        if (r.ok) ++passed;
        else ADD_FAILURE() << describe(r);
    }
    std::printf("  %s: %d/%zu cases passed (%s vs cpu)\n", op.c_str(), passed, cases.size(), b.test_name.c_str());
}

TEST(BackendOps, EMBEDDING) { run_op_suite("EMBEDDING"); }
TEST(BackendOps, RMSNORM) { run_op_suite("RMSNORM"); }
TEST(BackendOps, MATMUL) { run_op_suite("MATMUL"); }
TEST(BackendOps, ROPE) { run_op_suite("ROPE"); }
TEST(BackendOps, KV_STORE) { run_op_suite("KV_STORE"); }
TEST(BackendOps, ATTENTION) { run_op_suite("ATTENTION"); }
TEST(BackendOps, SWIGLU) { run_op_suite("SWIGLU"); }
TEST(BackendOps, ADD) { run_op_suite("ADD"); }
TEST(BackendOps, GATHER_ROWS) { run_op_suite("GATHER_ROWS"); }
TEST(BackendOps, POOL) { run_op_suite("POOL"); }
TEST(BackendOps, SAMPLE) { run_op_suite("SAMPLE"); }

// ---- self-tests: a faulty backend the harness must catch ---------------------------------------------------------
enum class Fault { write_past, write_before, nan, unwritten, perturb, wrong_id, throw_error };

// Forwards everything to a CPU backend, then damages the output of the ops named in `faults` (host memory:
// the inner backend is the CPU one, so the wrapper may touch it).
class FaultyBackend : public Backend {
public:
    explicit FaultyBackend(std::map<std::string, Fault> faults) : inner_(make_cpu_backend(2)), faults_(std::move(faults)) {}
    std::string name() const override { return "faulty"; }
    Buffer alloc(size_t bytes, MemKind kind, const char * purpose) override { return inner_->alloc(bytes, kind, purpose); }
    bool host_can_access(MemKind kind) const override { return inner_->host_can_access(kind); }
    MemoryStats memory_stats() const override { return inner_->memory_stats(); }
    void reset_memory_peak() override { inner_->reset_memory_peak(); }
    Stream * stream(StreamRole role) override { return inner_->stream(role); }
    void copy_async(void * dst, const void * src, size_t bytes, Stream * s) override { inner_->copy_async(dst, src, bytes, s); }
    Event record(Stream * s) override { return inner_->record(s); }
    void wait(Stream * s, Event e) override { inner_->wait(s, std::move(e)); }
    void synchronize(Stream * s) override { inner_->synchronize(s); }
    void host_task(Stream * s, std::function<void()> fn) override { inner_->host_task(s, std::move(fn)); }

    void embedding(Tensor out, const Tensor & tokens, const Tensor & table, Stream * s) override {
        pre("EMBEDDING"); inner_->embedding(out, tokens, table, s); damage("EMBEDDING", out);
    }
    void rmsnorm(Tensor out, const Tensor & x, const Tensor & w, float eps, Stream * s) override {
        pre("RMSNORM"); inner_->rmsnorm(out, x, w, eps, s); damage("RMSNORM", out);
    }
    void matmul(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, Stream * s) override {
        pre("MATMUL"); inner_->matmul(out, x, w, bias, s); damage("MATMUL", out);
    }
    void rope(Tensor x, const Tensor & positions, const Tensor & inv_freq, float scaling, Stream * s) override {
        pre("ROPE"); inner_->rope(x, positions, inv_freq, scaling, s); damage("ROPE", x);
    }
    void kv_store(Tensor k_cache, Tensor v_cache, const Tensor & k, const Tensor & v,
                  const std::vector<AttentionSeq> & seqs, Stream * s) override {
        pre("KV_STORE"); inner_->kv_store(k_cache, v_cache, k, v, seqs, s); damage("KV_STORE", v_cache);
    }
    void attention(Tensor out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                   const std::vector<AttentionSeq> & seqs, bool causal, int32_t window, Stream * s) override {
        pre("ATTENTION"); inner_->attention(out, q, k_cache, v_cache, seqs, causal, window, s); damage("ATTENTION", out);
    }
    void swiglu(Tensor out, const Tensor & gate, const Tensor & up, Stream * s) override {
        pre("SWIGLU"); inner_->swiglu(out, gate, up, s); damage("SWIGLU", out);
    }
    void add(Tensor out, const Tensor & a, const Tensor & b, Stream * s) override {
        pre("ADD"); inner_->add(out, a, b, s); damage("ADD", out);
    }
    void gather_rows(Tensor out, const Tensor & x, const Tensor & rows, Stream * s) override {
        pre("GATHER_ROWS"); inner_->gather_rows(out, x, rows, s); damage("GATHER_ROWS", out);
    }
    void pool(Tensor out, const Tensor & x, const std::vector<AttentionSeq> & seqs, Pooling mode, Stream * s) override {
        pre("POOL"); inner_->pool(out, x, seqs, mode, s); damage("POOL", out);
    }
    void sample(Tensor ids, const Tensor & logits, const std::vector<SampleRow> & rows, Stream * s) override {
        pre("SAMPLE"); inner_->sample(ids, logits, rows, s); damage("SAMPLE", ids);
    }

private:
    void pre(const std::string & op) {
        auto it = faults_.find(op);
        if (it != faults_.end() && it->second == Fault::throw_error) ZT_FAIL("{}: injected failure", op);
    }
    void damage(const std::string & op, const Tensor & out) {
        auto it = faults_.find(op);
        if (it == faults_.end()) return;
        inner_->synchronize(nullptr);
        const int64_t n = out.numel();
        float * f = out.ptr<float>();
        const float nan = std::nanf("");
        switch (it->second) {
            case Fault::write_past: f[n] = 0.0f; break;          // one element past the end
            case Fault::write_before: f[-1] = 0.0f; break;       // one element before the start
            case Fault::nan: f[n / 2] = nan; break;
            case Fault::unwritten: std::memcpy(&f[n - 1], &kFillWord, 4); break;   // as if never written
            case Fault::perturb: for (int64_t i = 0; i < n; ++i) f[i] *= 1.0f + 1e-3f; break;
            case Fault::wrong_id: {
                int32_t * ids = out.ptr<int32_t>();
                ids[n - 1] = ids[n - 1] == 0 ? 1 : ids[n - 1] - 1;
                break;
            }
            case Fault::throw_error: break;
        }
    }
    std::unique_ptr<Backend> inner_;
    std::map<std::string, Fault> faults_;
};

// Every case of `op` on a backend with `fault`: each must fail, naming the fault.
void expect_caught(const std::string & op, Fault fault, const std::string & expected) {
    FaultyBackend faulty({{op, fault}});
    auto ref = make_cpu_backend(1);
    Judge j;   // the bounds a real backend gets (not exact): the fault must show even there
    const auto cases = make_cases(op, j);
    ASSERT_FALSE(cases.empty());
    int caught = 0;
    std::printf("  (fault injected into %s: every case below must FAIL)\n", op.c_str());
    for (const OpCase & c : cases) {
        const CaseResult r = evaluate(faulty, "faulty", *ref, c, false);
        bool named = false;
        for (const std::string & p : r.problems) named = named || p.find(expected) != std::string::npos;
        EXPECT_FALSE(r.ok) << "the harness missed the fault: " << describe(r);
        EXPECT_TRUE(named) << "expected a problem naming \"" << expected << "\": " << describe(r);
        if (!r.ok && named) ++caught;
        if (&c == &cases.front()) std::printf("%s\n", describe(r).c_str());
    }
    std::printf("  caught in %d/%zu %s cases\n", caught, cases.size(), op.c_str());
}

TEST(SelfTest, WriteOnePastTheOutputIsCaught) { expect_caught("ADD", Fault::write_past, "ADD wrote 4 bytes past its output"); }
TEST(SelfTest, WriteOneBeforeTheOutputIsCaught) {
    expect_caught("GATHER_ROWS", Fault::write_before, "GATHER_ROWS wrote 4 bytes before its output");
}
TEST(SelfTest, WritePastAnInPlaceOutputIsCaught) {
    expect_caught("KV_STORE", Fault::write_past, "KV_STORE wrote 4 bytes past its output #1");
}
TEST(SelfTest, NaNIsCaught) { expect_caught("SWIGLU", Fault::nan, "NaN/Inf values"); }
TEST(SelfTest, UnwrittenElementIsCaught) { expect_caught("POOL", Fault::unwritten, "left 1 element(s) of its output unwritten"); }
TEST(SelfTest, PerturbationIsCaught) { expect_caught("RMSNORM", Fault::perturb, "NMSE"); }
TEST(SelfTest, PerturbationOfAttentionIsCaught) { expect_caught("ATTENTION", Fault::perturb, "NMSE"); }
TEST(SelfTest, WrongSampledIdIsCaught) { expect_caught("SAMPLE", Fault::wrong_id, "faulty picked"); }
TEST(SelfTest, ExceptionIsCaught) { expect_caught("MATMUL", Fault::throw_error, "faulty threw"); }

// The wrapper without faults passes the first case of every op with NMSE exactly 0 (so the faults above are
// what the harness caught, not the wrapper itself).
TEST(SelfTest, CleanWrapperPasses) {
    FaultyBackend clean({});
    auto ref = make_cpu_backend(1);
    Judge j;
    for (const std::string & op : kOps) {
        const auto cases = make_cases(op, j);
        const CaseResult r = evaluate(clean, "clean", *ref, cases.front(), true);
        std::printf("%s\n", describe(r).c_str());
        EXPECT_TRUE(r.ok) << describe(r);
    }
}

// ---- the CPU matmul's paths against its sgemv reference -----------------------------------------------------------
// A CPU backend whose matmul runs one cpu_matmul path (cpu_matmul.h) with its own pool of 3 threads.
class MatmulPathBackend final : public FaultyBackend {
public:
    explicit MatmulPathBackend(CpuMatmulPath path) : FaultyBackend({}), path_(path), pool_(3) {}
    std::string name() const override { return cpu_matmul_path_name(path_); }
    void matmul(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, Stream *) override {
        const MatmulDims d = check_matmul(out, x, w, bias);
        cpu_matmul(path_, pool_, out.ptr<float>(), x.ptr<const float>(), w, bias, d.T, d.N, d.K);
    }

private:
    CpuMatmulPath path_;
    ThreadPool pool_;
};

// Odd sizes: K around and off the vector widths (8, 16, 32) and past the K block (1100 > 2 x 512), N around the
// tile widths (3..6), T = 1 and T around the tile heights and row blocks (4, 64); F32/F16/BF16 weights, with and without a bias. Every fast path this
// CPU supports against the reference: fp32 rounding only (NMSE <= 1e-10), guards intact, every element written.
TEST(MatmulPaths, FastPathsMatchTheReferenceOnOddSizes) {
    MatmulPathBackend ref(CpuMatmulPath::reference);
    int n_paths = 0;
    for (CpuMatmulPath path : cpu_matmul_supported_paths()) {
        if (path == CpuMatmulPath::reference) continue;
        ++n_paths;
        MatmulPathBackend fast(path);
        int passed = 0, total = 0;
        double worst = 0;
        for (DType dt : kWeightTypes)
            for (int64_t K : {1, 7, 15, 17, 33, 100, 577, 1100})
                for (int64_t N : {1, 5, 17, 130})
                    for (int64_t T : {1, 3, 17, 129})
                        for (bool bias : {false, true}) {
                            OpCase c;
                            c.op = "MATMUL";
                            c.desc = fmt::format("MATMUL(T={},K={},N={},w={}{})", T, K, N, dt_name(dt), bias ? ",bias" : "");
                            c.max_nmse = 1e-10;
                            Rng r(seed_of(c.desc));
                            c.inputs = {random_f32({T, K}, r), host_weight({N, K}, dt, r.uniforms(N * K))};
                            if (bias) c.inputs.push_back(host_weight({N}, dt, r.uniforms(N)));
                            c.outputs = {output(DType::F32, {T, N})};
                            c.run = [](Backend & b, const Tensors & in, const Tensors & out) {
                                b.matmul(out[0], in[0], in[1], in.size() > 2 ? in[2] : Tensor());
                            };
                            const CaseResult res = evaluate(fast, fast.name(), ref, c, false);
                            ++total;
                            if (res.ok) ++passed;
                            else ADD_FAILURE() << describe(res);
                            const size_t at = res.line.find("NMSE = ");
                            if (at != std::string::npos) worst = std::max(worst, std::atof(res.line.c_str() + at + 7));
                        }
        std::printf("  %s vs reference: %d/%d cases passed, worst NMSE %.1e\n", cpu_matmul_path_name(path), passed,
                    total, worst);
    }
    EXPECT_GE(n_paths, 1) << "the portable path is always supported";
}

// The near-boundary rule: a u a hair below a boundary of the cumulative distribution is tolerated only there.
TEST(SelfTest, SampleBoundaryRule) {
    const std::vector<float> logits(8, 0.0f);   // two rows of 4, uniform: boundaries at 0.25, 0.5, 0.75
    SampleCheck s;
    s.logits = logits;
    s.V = 4;
    s.rows = {SampleRow{1.0, 0, 1.0, 0.5 - 1e-12}, SampleRow{1.0, 0, 1.0, 0.4}};
    SampleScratch scratch;
    EXPECT_EQ(sample_token(logits.data(), 4, 1.0, 0, 1.0, s.rows[0].u, scratch), 1);
    EXPECT_TRUE(near_boundary(s, 0, 1));
    EXPECT_FALSE(near_boundary(s, 1, 1));
}

}  // namespace
}  // namespace zt

// ---- main: -o / -b / -c, the rest to GoogleTest -------------------------------------------------------------------
namespace {

std::string upper(std::string s) {
    for (char & ch : s) ch = char(std::toupper(static_cast<unsigned char>(ch)));
    return s;
}

void usage(const char * argv0) {
    std::printf("usage: %s [-b cuda|cuda:N|cpu-threads] [-o OP[,OP...]] [-c auto|fp32|bf16|fp16] [gtest flags]\n"
                "  -b, --backend  backend compared with the CPU backend (default cuda); cpu-threads: CPU with 3\n"
                "                 threads vs 1 (must agree exactly)\n"
                "  -o, --op       only these ops:", argv0);
    for (const std::string & op : zt::kOps) std::printf(" %s", op.c_str());
    std::printf("\n  -c, --compute  CUDA matmul compute dtype (CudaBackendOptions::compute_dtype, default auto)\n");
}

}  // namespace

int main(int argc, char ** argv) {
    std::vector<char *> rest = {argv[0]};
    bool help = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const std::string & shortf, const std::string & longf, std::string & out) {
            if ((a == shortf || a == longf) && i + 1 < argc) { out = argv[++i]; return true; }
            if (a.rfind(longf + "=", 0) == 0) { out = a.substr(longf.size() + 1); return true; }
            return false;
        };
        std::string v;
        if (value("-o", "--op", v)) {
            size_t p = 0;
            while (p <= v.size()) {
                const size_t q = std::min(v.find(',', p), v.size());
                const std::string op = upper(v.substr(p, q - p));
                if (!op.empty()) {
                    if (std::find(zt::kOps.begin(), zt::kOps.end(), op) == zt::kOps.end()) {
                        std::fprintf(stderr, "test_backend_ops: unknown op \"%s\" in -o\n", op.c_str());
                        usage(argv[0]);
                        return 2;
                    }
                    zt::g_opt.ops.insert(op);
                }
                p = q + 1;
            }
        } else if (value("-b", "--backend", v)) {
            const bool cuda_n = v.rfind("cuda:", 0) == 0 && v.size() > 5 &&
                                v.find_first_not_of("0123456789", 5) == std::string::npos;
            if (v != "cuda" && v != "cpu-threads" && !cuda_n) {
                std::fprintf(stderr, "test_backend_ops: unknown backend \"%s\" (cuda, cuda:N or cpu-threads)\n", v.c_str());
                return 2;
            }
            zt::g_opt.backend = v;
        } else if (value("-c", "--compute", v)) {
            if (v != "auto" && v != "fp32" && v != "bf16" && v != "fp16") {
                std::fprintf(stderr, "test_backend_ops: unknown compute dtype \"%s\" (auto, fp32, bf16, fp16)\n", v.c_str());
                return 2;
            }
            zt::g_opt.compute = v;
        } else {
            if (a == "-h" || a == "--help") help = true;
            rest.push_back(argv[i]);
        }
    }
    if (help) usage(argv[0]);
    int gargc = int(rest.size());
    rest.push_back(nullptr);
    ::testing::InitGoogleTest(&gargc, rest.data());
#ifdef GTEST_FLAG_SET   // googletest >= 1.12
    const std::string user_filter = GTEST_FLAG_GET(filter);
#else
    const std::string user_filter = ::testing::GTEST_FLAG(filter);
#endif
    if (!zt::g_opt.ops.empty() && user_filter == "*") {   // -o: only those ops (no self-tests)
        std::string filter;
        for (const std::string & op : zt::g_opt.ops) filter += (filter.empty() ? "" : ":") + ("BackendOps." + op);
#ifdef GTEST_FLAG_SET
        GTEST_FLAG_SET(filter, filter);
#else
        ::testing::GTEST_FLAG(filter) = filter;
#endif
    }
    std::printf("test_backend_ops: %s vs cpu%s\n", zt::g_opt.backend.c_str(),
                zt::g_opt.compute != "auto" ? (", compute " + zt::g_opt.compute).c_str() : "");
    if (zt::g_opt.backend.rfind("cuda", 0) == 0) {   // start it now, to say once whether the op cases will skip
        const zt::Backends & b = zt::backends();
        if (!b.test && b.start_error.empty())
            std::printf("test_backend_ops: cuda unavailable, op cases skip: %s\n", b.skip_reason.c_str());
    }
    std::fflush(stdout);
    const int rc = RUN_ALL_TESTS();
    zt::g_backends.reset();   // before static destruction (the CUDA runtime may be gone by then)
    return rc;
}
