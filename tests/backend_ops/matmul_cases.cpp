// test_backend_ops: the MATMUL cases (shapes, weight dtypes, bias; bounds from the compute dtype), and
// MatmulPaths: every fast path of the CPU matmul (cpu_matmul.h) this CPU supports against its sgemv reference.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/backend/cpu_matmul.h"
#include "runtime/backend/op_checks.h"
#include "runtime/backend/parallel_for.h"
#include "tests/backend_ops/faulty_backend.h"
#include "tests/backend_ops/harness.h"

namespace zt::backend_ops {

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
    for (OpCase & c : quant_matmul_cases(j)) cases.push_back(std::move(c));   // quant_cases.cpp
    return cases;
}

namespace {

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

}  // namespace
}  // namespace zt::backend_ops
