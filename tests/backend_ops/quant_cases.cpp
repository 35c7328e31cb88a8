// test_backend_ops: the MATMUL and EMBEDDING cases on weights of a GGUF block type (Q8_0 .. Q6_K; random valid
// blocks, random_blocks.h), appended to matmul_cases / embedding_cases, and QuantPaths: every fast path of the CPU
// backend this CPU supports against its reference path on quantized weights (matmul: fp32 rounding only, since the
// dequantized weights are exact; embedding: the same bits).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "tests/backend_ops/harness.h"
#include "tests/backend_ops/random_blocks.h"

namespace zt::backend_ops {

namespace {

// K of a few blocks for each block size: one block, a few, past the CPU's K block of 512, not a multiple of it.
std::vector<int64_t> ks_of(DType dt) {
    return dtype_block_weights(dt) == 32 ? std::vector<int64_t>{32, 96, 544, 1056} : std::vector<int64_t>{256, 768, 1280};
}

OpCase quant_matmul_case(int64_t T, int64_t K, int64_t N, DType dt, bool bias, double max_nmse) {
    OpCase c;
    c.op = "MATMUL";
    c.desc = fmt::format("MATMUL(T={},K={},N={},w={}{})", T, K, N, dt_name(dt), bias ? ",bias" : "");
    c.max_nmse = max_nmse;
    Rng r(seed_of(c.desc));
    c.inputs = {random_f32({T, K}, r), random_quant(N, K, dt, r)};
    if (bias) c.inputs.push_back(host_weight({N}, DType::BF16, r.uniforms(N)));
    c.outputs = {output(DType::F32, {T, N})};
    c.run = [](Backend & b, const Tensors & in, const Tensors & out) {
        b.matmul(out[0], in[0], in[1], in.size() > 2 ? in[2] : Tensor());
    };
    return c;
}

OpCase quant_embedding_case(int64_t V, int64_t C, int64_t T, DType dt) {
    OpCase c;
    c.op = "EMBEDDING";
    c.desc = fmt::format("EMBEDDING(V={},C={},T={},table={})", V, C, T, dt_name(dt));
    Rng r(seed_of(c.desc));
    std::vector<int32_t> tok(static_cast<size_t>(T));
    for (auto & t : tok) t = r.below(V);
    if (T > 1) { tok[0] = 0; tok[size_t(T - 1)] = int32_t(V - 1); }
    c.inputs = {host_i32({T}, tok), random_quant(V, C, dt, r)};
    c.outputs = {output(DType::F32, {T, C})};
    c.run = [](Backend & b, const Tensors & in, const Tensors & out) { b.embedding(out[0], in[0], in[1]); };
    return c;
}

}  // namespace

std::vector<OpCase> quant_matmul_cases(const Judge & j) {
    std::vector<OpCase> cases;
    for (DType dt : test_blocks::kQuantTypes)
        for (int64_t T : {1, 19, 333}) {
            const std::vector<int64_t> ks = ks_of(dt);
            cases.push_back(quant_matmul_case(T, ks[1], 111, dt, T == 19, j.matmul_bound(dt)));
            if (T != 333) cases.push_back(quant_matmul_case(T, ks.back(), 500, dt, false, j.matmul_bound(dt)));
        }
    return cases;
}

std::vector<OpCase> quant_embedding_cases(const Judge &) {
    std::vector<OpCase> cases;
    for (DType dt : test_blocks::kQuantTypes) {
        const std::vector<int64_t> ks = ks_of(dt);
        cases.push_back(quant_embedding_case(111, ks[0], 1, dt));
        cases.push_back(quant_embedding_case(500, ks[1], 333, dt));
    }
    return cases;
}

namespace {

// Every quantized type, odd N (around the tile widths 3..6) and T (1, around the tile heights and row blocks), K a
// few blocks; a BF16 bias on some. Every fast path this CPU supports against the reference (cpu_matmul.h): the
// weights are the same exact fp32 values on every path, so only the fp32 sums' order differs: the float paths'
// bound, NMSE <= 1e-10 (measured: <= 1e-12 but for single-element outputs, T = N = 1, with cancellation: 1.5e-11).
TEST(QuantPaths, MatmulFastPathsMatchTheReference) {
    const std::unique_ptr<Backend> ref = cpu_backend_on_path(CpuMatmulPath::reference, 3);
    int n_paths = 0;
    for (CpuMatmulPath path : cpu_matmul_supported_paths()) {
        if (path == CpuMatmulPath::reference) continue;
        ++n_paths;
        const std::unique_ptr<Backend> fast = cpu_backend_on_path(path, 3);
        int passed = 0, total = 0;
        double worst = 0;
        for (DType dt : test_blocks::kQuantTypes)
            for (int64_t K : ks_of(dt))
                for (int64_t N : {1, 5, 130})
                    for (int64_t T : {1, 3, 17, 129}) {
                        const OpCase c = quant_matmul_case(T, K, N, dt, T == 17 || N == 5, 1e-10);
                        const CaseResult res = evaluate(*fast, cpu_matmul_path_name(path), *ref, c, false);
                        ++total;
                        if (res.ok) ++passed;
                        else ADD_FAILURE() << describe(res);
                        const size_t at = res.line.find("NMSE = ");
                        if (at != std::string::npos) worst = std::max(worst, std::atof(res.line.c_str() + at + 7));
                    }
        std::printf("  %s vs reference on quantized weights: %d/%d cases passed, worst NMSE %.1e\n",
                    cpu_matmul_path_name(path), passed, total, worst);
    }
    EXPECT_GE(n_paths, 1) << "the portable path is always supported";
}

// A quantized table's rows are exact fp32 values: every fast path's embedding gives the reference's bits.
TEST(QuantPaths, EmbeddingFastPathsGiveTheReferenceBits) {
    const std::unique_ptr<Backend> ref = cpu_backend_on_path(CpuMatmulPath::reference, 3);
    for (CpuMatmulPath path : cpu_matmul_supported_paths()) {
        if (path == CpuMatmulPath::reference) continue;
        const std::unique_ptr<Backend> fast = cpu_backend_on_path(path, 3);
        for (DType dt : test_blocks::kQuantTypes)
            for (int64_t C : ks_of(dt)) {
                const CaseResult res = evaluate(*fast, cpu_matmul_path_name(path), *ref, quant_embedding_case(37, C, 19, dt), true);
                if (!res.ok) ADD_FAILURE() << describe(res);
            }
    }
}

// A quantized weight whose K is not whole blocks, or a quantized bias, is an error naming the op, the type and K.
TEST(QuantPaths, PartialBlocksAreAnErrorNamingTheTypeAndK) {
    const std::unique_ptr<Backend> cpu = cpu_backend_on_path(CpuMatmulPath::reference, 1);
    std::vector<float> x(300), out(300);
    std::vector<uint8_t> w(size_t(dtype_row_bytes(DType::Q4_K, 512)));
    const Tensor xt(x.data(), DType::F32, {1, 300}), ot(out.data(), DType::F32, {1, 1});
    const Tensor wt(w.data(), DType::Q4_K, {1, 300});
    try {
        cpu->matmul(ot, xt, wt, Tensor());
        ADD_FAILURE() << "no error";
    } catch (const std::exception & e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("matmul"), std::string::npos) << m;
        EXPECT_NE(m.find("Q4_K"), std::string::npos) << m;
        EXPECT_NE(m.find("K = 300"), std::string::npos) << m;
    }
    const Tensor xt2(x.data(), DType::F32, {1, 256}), wt2(w.data(), DType::Q4_K, {1, 256}), bt(w.data(), DType::Q8_0, {1});
    EXPECT_THROW(cpu->matmul(ot, xt2, wt2, bt), std::exception);   // bias: F32/F16/BF16 only
}

}  // namespace
}  // namespace zt::backend_ops
