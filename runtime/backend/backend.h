// Wing runtime/backend/: where ops run. backend.h is the interface; backend_cpu is the readable reference,
// backend_cuda the GPU backend that must match it; op_checks holds the argument checks both share,
// memory_account the device-memory bookkeeping and cap, parallel_for the CPU thread pool.
//
// Backend: where memory lives, how work is ordered (streams, events), and the ops of the decoder forward pass.
// "cpu" (backend_cpu.cpp) is the readable reference; every other backend must match it.
// Ops take the output first, then inputs (llm.c order). Shapes are written outermost first, e.g. (T,C) =
// T rows of C contiguous elements. T = tokens in the step (all sequences of the batch, in batch order),
// C = hidden size, H = query heads, KV = key/value heads, D = head dim, I = intermediate size, V = vocab.
// Activations are fp32; weights (W in the comments) may be F32, F16, BF16 or, for matmul's w and embedding's table,
// a GGUF block type (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K; rows whole blocks along the last dim: quant_block.h), and
// are widened (dequantized, exactly: dequantize_row's values) to fp32. A backend that does not run block types
// says so (op_checks.h's check_weight_matrix); the CPU backend runs them all.
// Batch invariance (CPU backend): every op computes each output element in an order that depends only on that
// element's own inputs (never on T, on the other rows, or on the thread count): a sequence's results are
// bit-identical whatever else shares its batch. The CUDA backend is reproducible run to run for the same batch
// (same GEMM algorithm per shape, fixed reduction orders), but its GEMM algorithm may change with T, so its rows
// can differ in the last bits between batch compositions (and so between world sizes).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model/tensor.h"

namespace zt {

enum class MemKind { device, pinned_host, host };
enum class StreamRole { compute, copy, comm };
const char * mem_kind_name(MemKind k);

// An owning allocation (move-only). The backend that made it frees it.
class Buffer {
public:
    Buffer() = default;
    Buffer(void * data, size_t bytes, MemKind kind, std::function<void(void *)> free_fn)
        : data_(data), bytes_(bytes), kind_(kind), free_(std::move(free_fn)) {}
    Buffer(Buffer && o) noexcept { *this = std::move(o); }
    Buffer & operator=(Buffer && o) noexcept;
    Buffer(const Buffer &) = delete;
    Buffer & operator=(const Buffer &) = delete;
    ~Buffer() { reset(); }

    void reset();                                  // frees now
    void * data() const { return data_; }
    size_t bytes() const { return bytes_; }
    MemKind kind() const { return kind_; }
    explicit operator bool() const { return data_ != nullptr; }
    // A tensor view into this buffer at byte_offset; throws zt::Error when it does not fit.
    Tensor view(DType dtype, std::vector<int64_t> shape, size_t byte_offset = 0) const;

private:
    void * data_ = nullptr;
    size_t bytes_ = 0;
    MemKind kind_ = MemKind::host;
    std::function<void(void *)> free_;
};

// An in-order queue of work. Work on one stream runs in submission order; streams order against each other
// only through events.
class Stream {
public:
    explicit Stream(StreamRole role) : role_(role) {}
    virtual ~Stream() = default;
    StreamRole role() const { return role_; }
private:
    StreamRole role_;
};

// A point in a stream's work; opaque to callers (each backend keeps its own state behind `impl`).
struct Event {
    std::shared_ptr<void> impl;
};

// The key/value rows one sequence contributes to a step, for kv_store and attention:
// its new tokens are rows row0 .. row0 + n_tokens - 1 of q/k/v, at positions past_len .. past_len + n_tokens - 1
// of KV-cache slot `slot`, which already holds past_len positions.
struct AttentionSeq {
    int32_t slot = 0;
    int32_t past_len = 0;
    int32_t n_tokens = 0;
    int32_t row0 = 0;
};

// How pool() reduces a sequence's rows to one vector.
enum class Pooling { last, mean };

// One row of sample(): the request's sampling parameters and the uniform draw u in [0, 1) its own random stream
// gave for this step (Sampler::next_uniform; ignored when temperature == 0).
struct SampleRow {
    double temperature = 0;   // 0 = greedy (argmax, lowest id on ties)
    int64_t top_k = 0;        // 0 = off
    double top_p = 1.0;       // 1 = off
    double u = 0;
};

// Memory a backend has handed out and not yet freed, by kind, and device memory by purpose (the `purpose`
// given to alloc). Peaks are since the backend was made (or reset_peak()).
struct MemoryStats {
    size_t device_in_use = 0, device_peak = 0;
    size_t device_cap = 0;                            // 0 = no cap (CUDA: ztinfer.max_gpu_memory)
    size_t pinned_in_use = 0, pinned_peak = 0;       // pinned host memory (Backend::alloc pinned_host)
    size_t host_in_use = 0, host_peak = 0;           // pageable host memory (Backend::alloc host)
    std::map<std::string, size_t> device_by_purpose;  // bytes in use now
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;

    // --- memory, streams, events -------------------------------------------------------------------
    // Zero-filled; throws zt::Error when out of memory (or over the cap), naming `purpose` ("KV cache", "weight
    // ring", ...), the bytes asked for and what is in use. `purpose` must outlive the call only.
    virtual Buffer alloc(size_t bytes, MemKind kind, const char * purpose = "buffer") = 0;
    // Whether the host may read/write memory of this kind directly (CPU: every kind; CUDA: not `device`).
    virtual bool host_can_access(MemKind kind) const { return true; }
    virtual MemoryStats memory_stats() const = 0;
    virtual void reset_memory_peak() = 0;   // every peak (device, pinned, host) = its in_use from now on
    virtual Stream * stream(StreamRole role) = 0;                  // one stream per role, owned by the backend
    virtual void copy_async(void * dst, const void * src, size_t bytes, Stream * s) = 0;
    virtual Event record(Stream * s) = 0;                          // marks everything submitted to s so far
    virtual void wait(Stream * s, Event e) = 0;                    // later work on s waits for e
    virtual void synchronize(Stream * s) = 0;                      // host waits for everything on s (nullptr: all)
    // Runs fn on the host in s's order (after everything submitted to s before, before everything after), like
    // cudaLaunchHostFunc: the host-side steps of the pipeline (NVMe reads into staging, MPI collectives, trace
    // stamps) are ordered like any other work of the stream. fn must not call into the backend. An exception fn
    // throws is kept and rethrown (as zt::Error) by the next synchronize() or wait() that depends on it.
    virtual void host_task(Stream * s, std::function<void()> fn) = 0;

    // --- ops (all on stream s; s == nullptr means the compute stream) ------------------------------
    // out (T,C) f32 = table[tokens[t]] widened to fp32; tokens (T) i32, table (V,C) W (a quantized table: the row's
    // blocks dequantized).
    virtual void embedding(Tensor out, const Tensor & tokens, const Tensor & table, Stream * s = nullptr) = 0;

    // RMSNorm over the last dim: out (R,C) = w (C) * (x (R,C) * 1/sqrt(mean(x^2) + eps)), in HF's order.
    // x and out may be the same tensor; used per head (R = T*H, C = D) for qwen3's q/k norm. w is W.
    virtual void rmsnorm(Tensor out, const Tensor & x, const Tensor & w, float eps, Stream * s = nullptr) = 0;

    // out (T,N) = x (T,K) · w (N,K)^T [+ bias (N)]; w and bias are W (bias.data == nullptr: no bias); w may be
    // quantized (K whole blocks), bias is F32/F16/BF16.
    virtual void matmul(Tensor out, const Tensor & x, const Tensor & w, const Tensor & bias, Stream * s = nullptr) = 0;

    // Rotary embedding in place on x (T,H,D) (H may be the query or key/value heads), HF rotate_half
    // convention: for i < D/2, with a = positions[t] * f[i] (fp32), c = cos(a) * scaling, s = sin(a) * scaling:
    //   x[i] <- x[i]*c - x[i+D/2]*s,   x[i+D/2] <- x[i+D/2]*c + x[i]*s.
    // positions (T) i32; inv_freq f32 (see rope_inv_freq in rope.h): (D/2), f the same for every row, or (T,D/2),
    // f = row t's own (dynamic scaling: each sequence's frequencies follow its length). scaling: yarn's attention
    // factor (rope_attention_scaling), 1 otherwise (then c = cos a exactly).
    virtual void rope(Tensor x, const Tensor & positions, const Tensor & inv_freq, float scaling = 1.0f,
                      Stream * s = nullptr) = 0;

    // Writes the new keys/values of each sequence into the cache of one layer:
    // k_cache[seq.slot, seq.past_len + i] = k[seq.row0 + i], same for v.
    // k_cache, v_cache (S,M,KV,D) f32 (S slots of M positions); k, v (T,KV,D) f32.
    virtual void kv_store(Tensor k_cache, Tensor v_cache, const Tensor & k, const Tensor & v,
                          const std::vector<AttentionSeq> & seqs, Stream * s = nullptr) = 0;

    // Grouped-query attention of each sequence's new queries over its cache slot (past and new positions):
    // out[t,h] = sum_j softmax_j(q[t,h] · k[j,h/(H/KV)] / sqrt(D)) v[j,h/(H/KV)], softmax in fp32, where j runs
    // over the keys the query at position p = pos(t) sees: causal, 0 .. p; else all past_len + n_tokens positions
    // of the slot. window > 0 (sliding-window attention, HF masking_utils) narrows that: causal, to
    // p - window + 1 .. p (window keys); non-causal, to those within distance window of p (|p - j| <= window).
    // out (T,H,D) f32; q (T,H,D) f32; k_cache, v_cache (S,M,KV,D) f32 (after kv_store of this step).
    virtual void attention(Tensor out, const Tensor & q, const Tensor & k_cache, const Tensor & v_cache,
                           const std::vector<AttentionSeq> & seqs, bool causal, int32_t window = 0,
                           Stream * s = nullptr) = 0;

    // out (R,N) = silu(gate) * up, silu(g) = g / (1 + exp(-g)); gate, up (R,N) f32; out may alias gate.
    virtual void swiglu(Tensor out, const Tensor & gate, const Tensor & up, Stream * s = nullptr) = 0;

    // out = a + b elementwise (residual); all f32 of one shape; out may alias a or b.
    virtual void add(Tensor out, const Tensor & a, const Tensor & b, Stream * s = nullptr) = 0;

    // out (R,C) = x[rows[r]] (row gather, e.g. the last token of each sequence before the LM head).
    // rows (R) i32; x (T,C) f32.
    virtual void gather_rows(Tensor out, const Tensor & x, const Tensor & rows, Stream * s = nullptr) = 0;

    // out (B,C) f32: one vector per sequence b of x (T,C) f32, over its rows seqs[b].row0 .. + n_tokens - 1:
    // last = its last row; mean = the sum of its rows in row order (fp32), times 1/n_tokens.
    virtual void pool(Tensor out, const Tensor & x, const std::vector<AttentionSeq> & seqs, Pooling mode,
                      Stream * s = nullptr) = 0;

    // ids (R) i32: the token each row of logits (R,V) f32 picks under rows[r], the algorithm of sample_token()
    // in sampler.h (temperature 0: argmax; else the softmax at that temperature over the top-k, then the
    // smallest top-p nucleus in order of logit descending, ids ascending on ties, walked with u). The CPU result
    // equals Sampler's; another backend may sum in another order, so it agrees in distribution and, for a
    // given seed, is reproducible run to run.
    virtual void sample(Tensor ids, const Tensor & logits, const std::vector<SampleRow> & rows,
                        Stream * s = nullptr) = 0;
};

// Options of the CPU backend; the last two exist for tests and benchmarks only.
struct CpuBackendOptions {
    int n_threads = 0;                // compute threads; <= 0: one per hardware thread
    double link_gbps = 0;             // > 0: every copy_async on the copy stream takes bytes / (link_gbps·1e9) s in all,
                                      // a simulated PCIe/NVLink so a CPU run shows whether fetch overlaps compute
    int64_t race_delay_us = 0;        // > 0: race-hunting mode, every task on the copy and comm streams first sleeps a
                                      // random 0..race_delay_us µs (seeded by race_seed), to shake out ordering bugs
    uint64_t race_seed = 1;
    std::string kernel_path;          // which CPU kernels run the ops: "" = ZT_CPU_MATMUL or the fastest this CPU
                                      // supports; "reference" (the plain loops, the readable spec), "portable",
                                      // "avx2", "avx512" (cpu_matmul.h; tests compare each with "reference")
};

// The CPU reference backend. Memory of every kind is host memory (pinned_host: page-aligned and mlock'ed where
// the limit allows). The compute stream runs ops synchronously on the calling thread (so wait(compute, e) blocks
// the caller until e); the copy and comm streams each run their work in order on their own thread (a
// single-threaded Boost.Asio executor), so the pipeline's real concurrency (buffer reuse, event order) is
// exercised without a GPU.
std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions & options);
std::unique_ptr<Backend> make_cpu_backend(int n_threads = 0);

// Options of the CUDA backend (backend_cuda.cpp).
struct CudaBackendOptions {
    int device = 0;                     // CUDA device index (see device_for_local_rank in comm/world.h)
    size_t max_memory_bytes = 0;        // ztinfer.max_gpu_memory: device allocations past this fail (0 = the card)
    double max_memory_fraction = 0;     // or this share of the card's memory, in (0, 1] (0 = not set)
    std::string compute_dtype = "auto"; // matmul inputs: "auto" (the weights' dtype; quantized w: BF16), "fp32", "bf16",
                                        // "fp16"; a quantized w at T <= 8 always runs the fused fp32 GEMV
};

// True when this build has the CUDA backend. cuda_unavailable_reason() is empty when a CUDA device is usable,
// else says in one line why not (no CUDA in this build, no driver, no visible device).
bool cuda_backend_compiled();
std::string cuda_unavailable_reason();
int cuda_visible_device_count();   // 0 without CUDA, driver or device
// Throws zt::Error with cuda_unavailable_reason() when there is no usable device.
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions & options);

}  // namespace zt
