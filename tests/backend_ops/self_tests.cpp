// test_backend_ops: the harness's self-tests (SelfTest.*): a FaultyBackend (faulty_backend.h) in place of the
// backend under test; the harness must report each fault in every case of the op, a clean wrapper must pass, and
// the near-boundary rule for sampled ids must hold exactly where it should.
#include <cstdio>
#include <string>
#include <vector>

#include "tests/backend_ops/faulty_backend.h"
#include "tests/backend_ops/harness.h"

namespace zt::backend_ops {
namespace {

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
}  // namespace zt::backend_ops
