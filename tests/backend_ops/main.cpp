// test_backend_ops's main(): parses -b / -o / -c (see harness.h for the program), hands the rest to GoogleTest,
// says once whether the CUDA op cases will skip, runs the tests and drops the backends before static destruction.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/backend_ops/harness.h"

namespace bo = zt::backend_ops;

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
    for (const std::string & op : bo::kOps) std::printf(" %s", op.c_str());
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
                    if (std::find(bo::kOps.begin(), bo::kOps.end(), op) == bo::kOps.end()) {
                        std::fprintf(stderr, "test_backend_ops: unknown op \"%s\" in -o\n", op.c_str());
                        usage(argv[0]);
                        return 2;
                    }
                    bo::g_opt.ops.insert(op);
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
            bo::g_opt.backend = v;
        } else if (value("-c", "--compute", v)) {
            if (v != "auto" && v != "fp32" && v != "bf16" && v != "fp16") {
                std::fprintf(stderr, "test_backend_ops: unknown compute dtype \"%s\" (auto, fp32, bf16, fp16)\n", v.c_str());
                return 2;
            }
            bo::g_opt.compute = v;
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
    if (!bo::g_opt.ops.empty() && user_filter == "*") {   // -o: only those ops (no self-tests)
        std::string filter;
        for (const std::string & op : bo::g_opt.ops) filter += (filter.empty() ? "" : ":") + ("BackendOps." + op);
#ifdef GTEST_FLAG_SET
        GTEST_FLAG_SET(filter, filter);
#else
        ::testing::GTEST_FLAG(filter) = filter;
#endif
    }
    std::printf("test_backend_ops: %s vs cpu%s\n", bo::g_opt.backend.c_str(),
                bo::g_opt.compute != "auto" ? (", compute " + bo::g_opt.compute).c_str() : "");
    if (bo::g_opt.backend.rfind("cuda", 0) == 0) {   // start it now, to say once whether the op cases will skip
        const bo::Backends & b = bo::backends();
        if (!b.test && b.start_error.empty())
            std::printf("test_backend_ops: cuda unavailable, op cases skip: %s\n", b.skip_reason.c_str());
    }
    std::fflush(stdout);
    const int rc = RUN_ALL_TESTS();
    bo::g_backends.reset();   // before static destruction (the CUDA runtime may be gone by then)
    return rc;
}
