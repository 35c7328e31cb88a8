// FaultyBackend: a CPU backend that damages the outputs of chosen ops (a write past / before the output, a NaN,
// an unwritten element, a perturbation, a wrong id, a throw), for the harness's self-tests (self_tests.cpp); with
// no faults, a plain forwarding wrapper (MatmulPaths in matmul_cases.cpp overrides its matmul).
#pragma once
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "tests/backend_ops/harness.h"

namespace zt::backend_ops {

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


}  // namespace zt::backend_ops
