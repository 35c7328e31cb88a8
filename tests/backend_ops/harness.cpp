// The harness of test_backend_ops (see harness.h): options, host tensors, running a case on a backend through
// guarded device buffers, judging it against the CPU backend (NMSE, NaN/Inf, unwritten elements, guard bytes,
// sampled ids), the backends of -b, and the BackendOps.* tests (one per op).
#include "tests/backend_ops/harness.h"

#include "tests/backend_ops/random_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace zt::backend_ops {

// ---- options ---------------------------------------------------------------------------------------------------
Options g_opt;

bool op_selected(const std::string & op) { return g_opt.ops.empty() || g_opt.ops.count(op) > 0; }

// ---- host tensors and random inputs ----------------------------------------------------------------------------
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
HostTensor random_quant(int64_t rows, int64_t K, DType dt, Rng & r) {
    return HostTensor{dt, {rows, K}, test_blocks::random_rows(dt, rows, K, r.g)};
}
HostTensor random_f32(std::vector<int64_t> shape, Rng & r, float scale) {
    HostTensor t{DType::F32, std::move(shape), {}};
    return host_f32(t.shape, r.uniforms(t.numel(), scale));
}
HostTensor output(DType dt, std::vector<int64_t> shape) { return HostTensor{dt, std::move(shape), {}}; }

std::unique_ptr<Backend> cpu_backend_on_path(CpuMatmulPath path, int threads) {
    CpuBackendOptions o;
    o.n_threads = threads;
    o.kernel_path = cpu_matmul_path_name(path);
    return make_cpu_backend(o);
}

const char * dt_name(DType d) {
    switch (d) {
        case DType::F32: return "f32";
        case DType::F16: return "f16";
        case DType::BF16: return "bf16";
        default: return dtype_name(d);
    }
}

// ---- sequences of a batch ----------------------------------------------------------------------------------------
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
namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

// ---- one test per op ---------------------------------------------------------------------------------------------
namespace {

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

}  // namespace

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

}  // namespace zt::backend_ops
