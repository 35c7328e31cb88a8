// test_backend_ops: the cases of the row-wise ops (EMBEDDING, RMSNORM, SWIGLU, ADD, GATHER_ROWS, SAMPLE), each a
// list of OpCase (harness.h) over a few shapes and weight dtypes.
#include "tests/backend_ops/harness.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace zt::backend_ops {

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

}  // namespace zt::backend_ops
