// test_backend_ops: the cases of the row-wise ops (EMBEDDING, RMSNORM, SWIGLU, ADD, GATHER_ROWS, SAMPLE), each a
// list of OpCase (harness.h) over a few shapes and weight dtypes; and RowPaths: the fast paths of the row-wise ops
// (cpu_rowwise.h: EMBEDDING, RMSNORM, ROPE, SWIGLU, ADD, POOL, SAMPLE) against the reference loops on odd sizes, and
// each fast path's batch invariance.
#include "tests/backend_ops/harness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/backend/cpu_matmul.h"

namespace zt::backend_ops {

std::vector<OpCase> embedding_cases(const Judge & j) {
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
    for (OpCase & c : quant_embedding_cases(j)) cases.push_back(std::move(c));   // quant_cases.cpp
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

namespace {

// ---- the fast paths of the row-wise ops against the reference loops (cpu_rowwise.h) -----------------------------
const int64_t kOddC[] = {1, 7, 15, 17, 33, 577};   // around and off the vector widths 8, 16
const int64_t kOddRows[] = {1, 3, 17, 129};

// A case and whether the fast paths must give the reference's bits (the ops without a reduction of their own) or may
// differ by rounding (rmsnorm's sum of squares in 16 lanes, swiglu's exp): NMSE <= 1e-10, as MatmulPaths.
struct PathCase {
    OpCase c;
    bool same_bits;
};
bool portable_bits(const PathCase & pc) { return pc.c.op != "SWIGLU"; }   // cpu_rowwise.h: portable swiglu = std::exp

std::vector<PathCase> odd_row_cases() {
    std::vector<PathCase> cases;
    auto push = [&](OpCase c, bool same_bits) {
        c.max_nmse = 1e-10;
        cases.push_back({std::move(c), same_bits});
    };
    for (DType dt : kWeightTypes)
        for (int64_t C : kOddC)
            for (int64_t R : kOddRows) {
                {   // EMBEDDING: V = 37 rows of C
                    OpCase c;
                    c.op = "EMBEDDING";
                    c.desc = fmt::format("EMBEDDING(V=37,C={},T={},table={})", C, R, dt_name(dt));
                    Rng r(seed_of(c.desc));
                    std::vector<int32_t> tok(static_cast<size_t>(R));
                    for (auto & t : tok) t = r.below(37);
                    tok[0] = 36;
                    c.inputs = {host_i32({R}, tok), host_weight({37, C}, dt, r.uniforms(37 * C))};
                    c.outputs = {output(DType::F32, {R, C})};
                    c.run = [](Backend & b, const Tensors & in, const Tensors & out) { b.embedding(out[0], in[0], in[1]); };
                    push(std::move(c), true);
                }
                for (bool in_place : {false, true}) {   // RMSNORM
                    if (in_place && R != 17) continue;
                    OpCase c;
                    c.op = "RMSNORM";
                    c.desc = fmt::format("RMSNORM(R={},C={},w={}{})", R, C, dt_name(dt), in_place ? ",in-place" : "");
                    Rng r(seed_of(c.desc));
                    HostTensor x = random_f32({R, C}, r, 3.0f);
                    c.inputs = {host_weight({C}, dt, r.uniforms(C))};
                    if (in_place) {
                        c.outputs = {x};
                        c.run = [](Backend & b, const Tensors & in, const Tensors & out) { b.rmsnorm(out[0], out[0], in[0], 1e-6f); };
                    } else {
                        c.inputs.push_back(x);
                        c.outputs = {output(DType::F32, {R, C})};
                        c.run = [](Backend & b, const Tensors & in, const Tensors & out) { b.rmsnorm(out[0], in[1], in[0], 1e-6f); };
                    }
                    push(std::move(c), false);
                }
            }
    // ROPE: D = 2 * half, a shared or a per-row frequency table; positions scattered (T = 1), consecutive (3: the
    // fast path's per-position table), per-row (17) or a batch of prefills (129: 3 sequences over 43 positions)
    for (int64_t half : kOddC)
        for (int64_t H : {1, 3})
            for (int64_t T : kOddRows) {
                const bool per_row = T == 17;
                OpCase c;
                c.op = "ROPE";
                c.desc = fmt::format("ROPE(T={},H={},D={}{})", T, H, 2 * half, per_row ? ",per-row" : "");
                Rng r(seed_of(c.desc));
                std::vector<int32_t> pos(static_cast<size_t>(T));
                for (int64_t t = 0; t < T; ++t)
                    pos[size_t(t)] = T == 3 ? int32_t(4000 + t) : T == 129 ? int32_t(100 + t % 43) : r.below(5000);
                const int64_t n_inv = (per_row ? T : 1) * half;
                std::vector<float> inv(static_cast<size_t>(n_inv));
                for (int64_t i = 0; i < n_inv; ++i) inv[size_t(i)] = 1.0f / std::pow(1e4f, float(2 * (i % half)) / float(2 * half));
                c.inputs = {host_i32({T}, pos), per_row ? host_f32({T, half}, inv) : host_f32({half}, inv)};
                c.outputs = {random_f32({T, H, 2 * half}, r)};   // in place
                c.run = [](Backend & b, const Tensors & in, const Tensors & out) { b.rope(out[0], in[0], in[1], 1.0f); };
                push(std::move(c), true);
            }
    for (int64_t C : kOddC)
        for (int64_t R : kOddRows) {
            for (int alias : {0, 1, 2}) {   // SWIGLU (gate up to +-100: exp's overflow and underflow) and ADD
                if (alias && R != 3) continue;
                for (bool is_add : {false, true}) {
                    OpCase c;
                    c.op = is_add ? "ADD" : "SWIGLU";
                    c.desc = fmt::format("{}(R={},C={}{})", c.op, R, C, alias == 1 ? ",out=first" : alias == 2 ? ",out=second" : "");
                    Rng r(seed_of(c.desc));
                    HostTensor a = random_f32({R, C}, r, is_add ? 1.0f : 100.0f), b = random_f32({R, C}, r);
                    auto op = [is_add](Backend & be, const Tensor & o, const Tensor & x, const Tensor & y) {
                        if (is_add) be.add(o, x, y);
                        else be.swiglu(o, x, y);
                    };
                    if (alias == 0) {
                        c.inputs = {a, b};
                        c.outputs = {output(DType::F32, {R, C})};
                        c.run = [op](Backend & be, const Tensors & in, const Tensors & out) { op(be, out[0], in[0], in[1]); };
                    } else {
                        c.inputs = {alias == 1 ? b : a};
                        c.outputs = {alias == 1 ? a : b};
                        c.run = [op, alias](Backend & be, const Tensors & in, const Tensors & out) {
                            if (alias == 1) op(be, out[0], out[0], in[0]);
                            else op(be, out[0], in[0], out[0]);
                        };
                    }
                    push(std::move(c), is_add);   // swiglu: the portable path's std::exp gives the reference's bits
                }
            }
        }
    for (int64_t C : kOddC)   // POOL: sequences of odd lengths
        for (const std::vector<int32_t> & lens : std::vector<std::vector<int32_t>>{{1}, {3, 1, 17}, {129, 7}})
            for (Pooling mode : {Pooling::last, Pooling::mean}) {
                std::vector<std::pair<int32_t, int32_t>> n_past;
                for (int32_t n : lens) n_past.push_back({n, 0});
                const auto seqs = make_seqs(n_past, std::vector<int32_t>(lens.size(), 0));
                const int64_t T = total_rows(seqs), B = int64_t(seqs.size());
                OpCase c;
                c.op = "POOL";
                c.desc = fmt::format("POOL({},C={},lens={})", mode == Pooling::last ? "last" : "mean", C, seqs_desc(seqs));
                Rng r(seed_of(c.desc));
                c.inputs = {random_f32({T, C}, r)};
                c.outputs = {output(DType::F32, {B, C})};
                c.run = [seqs, mode](Backend & b, const Tensors & in, const Tensors & out) { b.pool(out[0], in[0], seqs, mode); };
                push(std::move(c), true);
            }
    // SAMPLE: greedy (ties, NaN and -inf in places), temperature, top-k, top-p over odd V and the real 49152 (where the
    // fast path sorts integer keys: selections of 1024 and more, full radix sorts of a flat nucleus, ties of +-0)
    struct S { const char * name; double temperature; int64_t top_k; double top_p; };
    const S settings[] = {{"greedy", 0, 0, 1}, {"greedy,ties", 0, 0, 1}, {"greedy,nan", 0, 0, 1},
                          {"temp", 0.8, 0, 1}, {"top_k", 1.0, 5, 1},      {"top_p", 1.1, 0, 0.9},
                          {"top_k,top_p,ties", 0.9, 200, 0.95}, {"top_p,flat", 1.0, 0, 0.95},
                          {"top_k,top_p,nan", 1.0, 5, 0.9}, {"top_k=3000,ties", 1.0, 3000, 1},
                          {"top_p,flat,ties", 1.0, 0, 0.95}, {"top_k=2000,zeros", 1.0, 2000, 1}};
    for (int64_t V : {1, 7, 15, 17, 33, 577, 49152})
        for (const S & s : settings) {
            const int64_t R = V > 1000 ? 5 : 17;
            OpCase c;
            c.op = "SAMPLE";
            c.desc = fmt::format("SAMPLE(R={},V={},{})", R, V, s.name);
            Rng r(seed_of(c.desc));
            auto check = std::make_shared<SampleCheck>();
            check->V = V;
            check->logits = r.uniforms(R * V, 8.0f);
            const std::string name = s.name;
            for (int64_t i = 0; i < R; ++i) {
                float * row = check->logits.data() + i * V;
                if (name.find("ties") != std::string::npos) for (int64_t k = 0; k < V; ++k) row[k] = std::round(row[k]);
                if (name.find("zeros") != std::string::npos)   // all tied: -0 and +0 equal, ids ascending
                    for (int64_t k = 0; k < V; ++k) row[k] = std::copysign(0.0f, row[k]);
                if (name.find("flat") != std::string::npos) for (int64_t k = 0; k < V; ++k) row[k] *= 0.01f;   // a long nucleus: full sorts
                if (name.find("nan") != std::string::npos) {   // row 0: all -inf; row 1: NaN first; others: NaN and -inf scattered
                    for (int64_t k = 0; k < V; ++k) {
                        if (i == 0) row[k] = -INFINITY;
                        else if (r.below(3) == 0) row[k] = r.below(2) ? NAN : -INFINITY;
                    }
                    if (i == 1) row[0] = NAN;
                }
                if (i == 2 && V > 1) row[V - 1] = 100.0f;   // the maximum in the tail
                check->rows.push_back(SampleRow{s.temperature, s.top_k, s.top_p, s.temperature > 0 ? r.u01() : 0.0});
            }
            c.inputs = {host_f32({R, V}, check->logits)};
            c.outputs = {output(DType::I32, {R})};
            c.sample = check;
            c.run = [check](Backend & b, const Tensors & in, const Tensors & out) { b.sample(out[0], in[0], check->rows); };
            push(std::move(c), true);
        }
    return cases;
}

// Every fast path this CPU supports against the reference loops: the ops without a reduction of their own give the
// reference's bits (NMSE 0, the same ids), rmsnorm and swiglu fp32 rounding only (NMSE <= 1e-10); guards intact,
// every element written.
TEST(RowPaths, FastPathsMatchTheReferenceOnOddSizes) {
    const std::unique_ptr<Backend> ref = cpu_backend_on_path(CpuMatmulPath::reference, 3);
    const std::vector<PathCase> cases = odd_row_cases();
    int n_paths = 0;
    for (CpuMatmulPath path : cpu_matmul_supported_paths()) {
        if (path == CpuMatmulPath::reference) continue;
        ++n_paths;
        const std::unique_ptr<Backend> fast = cpu_backend_on_path(path, 3);
        int passed = 0;
        double worst = 0;
        for (const PathCase & pc : cases) {
            const CaseResult res = evaluate(*fast, cpu_matmul_path_name(path), *ref, pc.c, pc.same_bits);
            if (res.ok) ++passed;
            else ADD_FAILURE() << cpu_matmul_path_name(path) << ": " << describe(res);
            const size_t at = res.line.find("NMSE = ");
            if (at != std::string::npos) worst = std::max(worst, std::atof(res.line.c_str() + at + 7));
        }
        std::printf("  %s vs reference: %d/%zu cases passed, worst NMSE %.1e\n", cpu_matmul_path_name(path), passed,
                    cases.size(), worst);
    }
    EXPECT_GE(n_paths, 1) << "the portable path is always supported";
}

// The fast paths keep one per-element order (cpu_rowwise.h: the same 16-lane sum of squares, the same vector exp), so
// avx2 and avx512 give each other's bits on every case, and the portable path's on all but swiglu (std::exp there).
TEST(RowPaths, FastPathsGiveTheSameBits) {
    const std::vector<PathCase> cases = odd_row_cases();
    auto compare = [&](CpuMatmulPath a, CpuMatmulPath b) {
        const std::unique_ptr<Backend> ba = cpu_backend_on_path(a, 3), bb = cpu_backend_on_path(b, 3);
        const std::string name = fmt::format("{} vs {}", cpu_matmul_path_name(a), cpu_matmul_path_name(b));
        int passed = 0, total = 0;
        for (const PathCase & pc : cases) {
            if (b == CpuMatmulPath::portable && !portable_bits(pc)) continue;
            ++total;
            const CaseResult res = evaluate(*ba, cpu_matmul_path_name(a), *bb, pc.c, true);
            if (res.ok) ++passed;
            else ADD_FAILURE() << name << ": " << describe(res);
        }
        std::printf("  %s: %d/%d cases bit-identical\n", name.c_str(), passed, total);
    };
    const bool avx2 = cpu_matmul_path_supported(CpuMatmulPath::avx2), avx512 = cpu_matmul_path_supported(CpuMatmulPath::avx512);
    if (avx2) compare(CpuMatmulPath::avx2, CpuMatmulPath::portable);
    if (avx512) compare(CpuMatmulPath::avx512, CpuMatmulPath::portable);
    if (avx2 && avx512) compare(CpuMatmulPath::avx512, CpuMatmulPath::avx2);
}

// ---- batch invariance of each fast path: row r of a call with R rows == row r alone, bit for bit ------------------
Tensor f32_view(std::vector<float> & v, std::vector<int64_t> shape) { return Tensor(v.data(), DType::F32, std::move(shape)); }

// The rows `picked` of a (R, n) result equal the same rows computed alone (one(r) returns row r of a one-row call).
template <typename Elem, typename One>
void expect_rows_alone(const std::vector<Elem> & all, int64_t n, const std::vector<int64_t> & picked, One one,
                       const std::string & what) {
    for (int64_t r : picked) {
        const std::vector<Elem> alone = one(r);
        ASSERT_EQ(alone.size(), size_t(n));
        EXPECT_EQ(std::memcmp(alone.data(), all.data() + r * n, size_t(n) * sizeof(Elem)), 0)
            << what << ": row " << r << " differs from the same row computed alone";
    }
}

TEST(RowPaths, FastPathsAreBatchInvariant) {
    const int64_t R = 129, C = 577, H = 3, D = 66, V = 49152;
    const std::vector<int64_t> picked = {0, 1, 64, R - 1};
    for (CpuMatmulPath path : cpu_matmul_supported_paths()) {
        if (path == CpuMatmulPath::reference) continue;
        const std::unique_ptr<Backend> many = cpu_backend_on_path(path, 3), one_b = cpu_backend_on_path(path, 1);
        Backend & b1 = *one_b;
        const std::string name = cpu_matmul_path_name(path);
        Rng rng(seed_of("RowPaths.FastPathsAreBatchInvariant"));
        std::vector<float> x = rng.uniforms(R * C, 3.0f), y = rng.uniforms(R * C), out(size_t(R * C));
        for (DType dt : kWeightTypes) {   // RMSNORM and EMBEDDING, each weight dtype
            const HostTensor w = host_weight({C}, dt, rng.uniforms(C)), tab = host_weight({R, C}, dt, rng.uniforms(R * C));
            const Tensor wt(const_cast<uint8_t *>(w.bytes.data()), dt, {C}), tt(const_cast<uint8_t *>(tab.bytes.data()), dt, {R, C});
            many->rmsnorm(f32_view(out, {R, C}), f32_view(x, {R, C}), wt, 1e-6f);
            expect_rows_alone(out, C, picked, [&](int64_t r) {
                std::vector<float> xr(x.begin() + r * C, x.begin() + (r + 1) * C), o(static_cast<size_t>(C));
                b1.rmsnorm(f32_view(o, {1, C}), f32_view(xr, {1, C}), wt, 1e-6f);
                return o;
            }, name + " rmsnorm w=" + dt_name(dt));
            std::vector<int32_t> tok(static_cast<size_t>(R));
            for (auto & t : tok) t = rng.below(R);
            many->embedding(f32_view(out, {R, C}), Tensor(tok.data(), DType::I32, {R}), tt);
            expect_rows_alone(out, C, picked, [&](int64_t r) {
                std::vector<float> o(static_cast<size_t>(C));
                b1.embedding(f32_view(o, {1, C}), Tensor(&tok[size_t(r)], DType::I32, {1}), tt);
                return o;
            }, name + " embedding table=" + dt_name(dt));
        }
        for (bool is_add : {false, true}) {   // SWIGLU, ADD: a row is a range of elements
            std::vector<float> g = rng.uniforms(R * C, 10.0f);
            auto op = [&](Backend & b, std::vector<float> & o, std::vector<float> & gg, std::vector<float> & uu, int64_t rows) {
                if (is_add) b.add(f32_view(o, {rows, C}), f32_view(gg, {rows, C}), f32_view(uu, {rows, C}));
                else b.swiglu(f32_view(o, {rows, C}), f32_view(gg, {rows, C}), f32_view(uu, {rows, C}));
            };
            op(*many, out, g, y, R);
            expect_rows_alone(out, C, picked, [&](int64_t r) {
                std::vector<float> gr(g.begin() + r * C, g.begin() + (r + 1) * C), ur(y.begin() + r * C, y.begin() + (r + 1) * C);
                std::vector<float> o(static_cast<size_t>(C));
                op(b1, o, gr, ur, 1);
                return o;
            }, name + (is_add ? " add" : " swiglu"));
        }
        for (bool prefills : {false, true}) {   // ROPE: token rows of (H, D); positions scattered or 3 prefills
            std::vector<float> v = rng.uniforms(R * H * D), inv(size_t(D / 2));
            for (int64_t i = 0; i < D / 2; ++i) inv[size_t(i)] = 1.0f / std::pow(1e4f, float(2 * i) / float(D));
            std::vector<int32_t> pos(static_cast<size_t>(R));
            for (int64_t t = 0; t < R; ++t) pos[size_t(t)] = prefills ? int32_t(t % 43) : rng.below(8192);
            std::vector<float> all = v;
            many->rope(f32_view(all, {R, H, D}), Tensor(pos.data(), DType::I32, {R}), f32_view(inv, {D / 2}), 1.0f);
            expect_rows_alone(all, H * D, picked, [&](int64_t r) {
                std::vector<float> vr(v.begin() + r * H * D, v.begin() + (r + 1) * H * D);
                b1.rope(f32_view(vr, {1, H, D}), Tensor(&pos[size_t(r)], DType::I32, {1}), f32_view(inv, {D / 2}), 1.0f);
                return vr;
            }, name + (prefills ? " rope (prefills)" : " rope"));
        }
        {   // POOL (mean): each sequence alone
            const std::vector<std::pair<int32_t, int32_t>> n_past = {{1, 0}, {17, 0}, {3, 0}, {108, 0}};
            const auto seqs = make_seqs(n_past, std::vector<int32_t>(n_past.size(), 0));
            std::vector<float> pooled(seqs.size() * size_t(C));
            many->pool(f32_view(pooled, {int64_t(seqs.size()), C}), f32_view(x, {R, C}), seqs, Pooling::mean);
            expect_rows_alone(pooled, C, {0, 1, 2, 3}, [&](int64_t s) {
                const AttentionSeq & q = seqs[size_t(s)];
                std::vector<float> xs(x.begin() + int64_t(q.row0) * C, x.begin() + int64_t(q.row0 + q.n_tokens) * C), o(static_cast<size_t>(C));
                b1.pool(f32_view(o, {1, C}), f32_view(xs, {q.n_tokens, C}), {AttentionSeq{0, 0, q.n_tokens, 0}}, Pooling::mean);
                return o;
            }, name + " pool mean");
        }
        {   // SAMPLE: greedy and top-p rows over V = 49152
            const int64_t RS = 6;
            std::vector<float> logits = rng.uniforms(RS * V, 8.0f);
            std::vector<SampleRow> rows;
            for (int64_t i = 0; i < RS; ++i) rows.push_back(i % 2 ? SampleRow{0.9, 0, 0.9, rng.u01()} : SampleRow{});
            std::vector<int32_t> ids(static_cast<size_t>(RS));
            many->sample(Tensor(ids.data(), DType::I32, {RS}), f32_view(logits, {RS, V}), rows);
            expect_rows_alone(ids, 1, {0, 1, 2, 3, 4, 5}, [&](int64_t r) {
                std::vector<float> lr(logits.begin() + r * V, logits.begin() + (r + 1) * V);
                std::vector<int32_t> id(1);
                b1.sample(Tensor(id.data(), DType::I32, {1}), f32_view(lr, {1, V}), {rows[size_t(r)]});
                return id;
            }, name + " sample");
        }
    }
}

}  // namespace
}  // namespace zt::backend_ops
