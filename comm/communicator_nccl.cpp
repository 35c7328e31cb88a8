// NcclCommunicator: NCCL collectives between GPU ranks (communicator.h). Always compiled; without ZT_HAVE_NCCL
// (no CUDA, or no nccl.h / libnccl at configure time) it only says that this build has no NCCL.
//
// Start-up. Rank 0 makes NCCL's unique id and the host communicator (MPI) broadcasts it; every rank then joins
// with ncclCommInitRank on the backend's device (one NCCL communicator for the job).
//
// Collectives. all_gather and all_reduce_max on a stream are queued as NCCL collectives on that stream's
// cudaStream_t (uint8 all-gather; int32 max all-reduce, in place). NCCL runs the collectives of one communicator
// in the order they were issued, whatever their streams: every rank must issue them in the same order. With
// s == nullptr they run now: on host memory through the host communicator, on device memory as NCCL collectives
// on the compute stream that this call waits for. gather_strings, broadcast and barrier are the host
// communicator's; abort calls ncclCommAbort, then the host communicator's abort (MPI_Abort).
//
// Huge slices. A slice larger than the chunk size (1 GiB; ZT_NCCL_CHUNK_BYTES overrides it, for tests) moves in
// chunks: for each chunk, one ncclGroup of broadcasts, one per rank, from that rank's slice into its place in
// `full` (an all-gather cannot place chunks a slice apart).
//
// Watchdog. NCCL collectives are asynchronous: a dead or hung peer leaves the kernel spinning on the GPU and the
// host never notices. So each collective queued on a stream is bracketed by two host tasks on the same stream
// (they run in stream order): the first arms a Watchdog guard, the second disarms it after the collective is
// done. A collective that has not finished collective_timeout_s after it started logs what it was, aborts the
// NCCL communicator and calls MPI_Abort through the host communicator, so the launcher ends every rank.
#include "comm/communicator.h"

#include <spdlog/spdlog.h>

#include "runtime/backend/backend.h"
#include "runtime/base/error.h"

#ifdef ZT_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "comm/watchdog.h"
#include "runtime/backend/backend_cuda.h"
#endif

namespace zt {

#ifndef ZT_HAVE_NCCL

bool nccl_available() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(Backend &, std::unique_ptr<Communicator>, const MpiOptions &) {
#ifdef ZT_HAVE_CUDA
    ZT_FAIL("this build has no NCCL: nccl.h and libnccl were not found at configure time; use \"ztinfer.communicator\": "
            "\"mpi\" (device buffers staged through host memory), or install NCCL (apt libnccl-dev, or pip install "
            "nvidia-nccl-cu13 and export NCCL_HOME=<site-packages>/nvidia/nccl) and reconfigure");
#else
    ZT_FAIL("this build has no NCCL: it was built without CUDA (no nvcc at configure time); use \"ztinfer.communicator\": "
            "\"mpi\", or install the CUDA toolkit and NCCL and rebuild");
#endif
}

#else

namespace {

std::string human_bytes(size_t b) {
    if (b >= (size_t(1) << 30)) return fmt::format("{:.2f} GiB", double(b) / double(size_t(1) << 30));
    if (b >= (size_t(1) << 20)) return fmt::format("{:.2f} MiB", double(b) / double(size_t(1) << 20));
    if (b >= (size_t(1) << 10)) return fmt::format("{:.2f} KiB", double(b) / 1024.0);
    return fmt::format("{} B", b);
}

// What to do about an NCCL error, by kind.
const char * nccl_hint(ncclResult_t rc) {
    switch (rc) {
        case ncclUnhandledCudaError:
            return "a CUDA call inside NCCL failed: check the GPU (nvidia-smi) and that each rank sees the device it "
                   "should (CUDA_VISIBLE_DEVICES)";
        case ncclSystemError:
            return "a system call or the network failed (in a container: too little /dev/shm, e.g. docker "
                   "--shm-size=1g; blocked sockets: set NCCL_SOCKET_IFNAME)";
        case ncclInternalError: return "NCCL hit an internal error";
        case ncclInvalidArgument: return "ztinfer passed NCCL an invalid argument (a bug: please report it with the log)";
        case ncclInvalidUsage:
            return "NCCL refuses this use; the usual cause is two ranks on one GPU, which NCCL cannot serve: give each "
                   "rank its own GPU, or use \"ztinfer.communicator\": \"mpi\"";
        case ncclRemoteError: return "a peer rank failed or died: see the other ranks' logs";
        default: return "see NCCL's log";
    }
}

[[noreturn]] void nccl_fail(const char * file, int line, const char * call, ncclResult_t rc) {
    const char * last = ncclGetLastError(nullptr);
    raise_error(file, line,
                fmt::format("{} failed: {}{}; {}; run with NCCL_DEBUG=INFO (and NCCL_DEBUG_SUBSYS=INIT,COLL) to see "
                            "NCCL's own log",
                            call, ncclGetErrorString(rc), last && *last ? fmt::format(" ({})", last) : std::string(),
                            nccl_hint(rc)));
}

[[noreturn]] void cuda_fail(const char * file, int line, const char * call, cudaError_t rc) {
    raise_error(file, line, fmt::format("{} failed: {} ({}); check the GPU (nvidia-smi) and CUDA_VISIBLE_DEVICES", call,
                                        cudaGetErrorString(rc), cudaGetErrorName(rc)));
}

// ZT_NCCL_CHECK(ncclFoo(...)): throws zt::Error with file:line, the rank, NCCL's message and what to do.
#define ZT_NCCL_CHECK(call)                                                         \
    do {                                                                            \
        ncclResult_t zt_nccl_rc_ = (call);                                          \
        if (zt_nccl_rc_ != ncclSuccess) nccl_fail(__FILE__, __LINE__, #call, zt_nccl_rc_); \
    } while (0)
#define ZT_CUDA_CHECK_HERE(call)                                                    \
    do {                                                                            \
        cudaError_t zt_cuda_rc_ = (call);                                           \
        if (zt_cuda_rc_ != cudaSuccess) cuda_fail(__FILE__, __LINE__, #call, zt_cuda_rc_); \
    } while (0)

// Device (or managed) memory, as opposed to host memory (pageable or pinned).
bool is_device_pointer(const void * p) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        (void)cudaGetLastError();   // older runtimes flag plain host pointers as an error: clear it
        return false;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// Rank 0's unique id (or why it has none), as the host communicator broadcasts it.
struct IdMessage {
    int32_t ok = 0;
    char why[500] = {};
    ncclUniqueId id{};
};

class NcclCommunicator final : public Communicator {
public:
    NcclCommunicator(Backend & be, std::unique_ptr<Communicator> host, const MpiOptions & opt)
        : be_(be), host_(std::move(host)), rank_(host_->rank()), size_(host_->world_size()) {
        ZT_CHECK(opt.collective_timeout_s > 0, "collective timeout {} s must be positive", opt.collective_timeout_s);
        if (const char * c = std::getenv("ZT_NCCL_CHUNK_BYTES")) {   // test knob: exercise the chunked path
            long long v = std::atoll(c);
            ZT_CHECK(v > 0, "ZT_NCCL_CHUNK_BYTES='{}' must be a positive number of bytes (or unset it)", c);
            chunk_ = size_t(v);
        }
        device_ = cuda_device_of(be_);
        ZT_CUDA_CHECK_HERE(cudaSetDevice(device_));
        wd_ = std::make_unique<Watchdog>(opt.collective_timeout_s,
                                         [this](const std::string & what, double secs) { on_timeout(what, secs); });

        // rank 0's unique id to every rank; a failure there becomes every rank's error rather than a hang
        IdMessage msg;
        if (rank_ == 0) {
            ncclResult_t rc = ncclGetUniqueId(&msg.id);
            msg.ok = rc == ncclSuccess;
            if (!msg.ok) {
                const char * last = ncclGetLastError(nullptr);
                std::snprintf(msg.why, sizeof msg.why, "%s%s%s%s; %s", ncclGetErrorString(rc),
                              last && *last ? " (" : "", last && *last ? last : "", last && *last ? ")" : "",
                              nccl_hint(rc));
            }
        }
        host_->broadcast(&msg, sizeof msg, 0);
        ZT_CHECK(msg.ok, "rank 0 could not create NCCL's unique id (ncclGetUniqueId): {}; run with NCCL_DEBUG=INFO to "
                 "see NCCL's own log", msg.why);
        {
            auto guard = wd_->arm(fmt::format("NCCL start-up (ncclCommInitRank) of {} ranks", size_));
            ncclComm_t c = nullptr;
            ZT_NCCL_CHECK(ncclCommInitRank(&c, size_, msg.id, rank_));
            comm_.store(c);
        }
        if (rank_ == 0) {
            int v = 0;
            if (ncclGetVersion(&v) != ncclSuccess) v = 0;
            spdlog::info("communicator: NCCL {}.{}.{} over {} rank(s) (rank 0 on GPU {})", v / 10000, v % 10000 / 100,
                         v % 100, size_, device_);
        }
    }

    ~NcclCommunicator() override {
        // the disarm tasks queued after the last collectives must have run before the watchdog goes
        std::vector<Stream *> used;
        {
            std::lock_guard<std::mutex> l(mu_);
            used = used_streams_;
        }
        for (Stream * s : used) {
            try {
                be_.synchronize(s);
            } catch (const std::exception & e) {
                spdlog::warn("rank {}: an error on a stream that ran NCCL collectives, seen while shutting down: {}",
                             rank_, e.what());
            }
        }
        ncclComm_t c = comm_.exchange(nullptr);
        if (c) {
            auto guard = wd_->arm("NCCL shutdown (ncclCommDestroy)");
            // a communicator that saw an error is aborted (ncclCommDestroy could wait on the failed operations)
            ncclResult_t async = ncclSuccess;
            const bool healthy = ncclCommGetAsyncError(c, &async) == ncclSuccess && async == ncclSuccess;
            ncclResult_t rc = healthy ? ncclCommDestroy(c) : ncclCommAbort(c);
            if (rc != ncclSuccess)
                spdlog::warn("rank {}: freeing the NCCL communicator failed: {}", rank_, ncclGetErrorString(rc));
        }
        wd_.reset();   // before host_: its handler uses host_
    }

    int rank() const override { return rank_; }
    int world_size() const override { return size_; }
    std::string name() const override { return "nccl"; }

    void all_gather(const void * slice, void * full, size_t bytes, Stream * s) override {
        if (bytes == 0) return;
        ZT_CHECK(slice && full, "all_gather of {} per rank got a null buffer", human_bytes(bytes));
        ZT_CHECK(bytes <= SIZE_MAX / size_t(size_), "all_gather of {} bytes per rank over {} ranks overflows", bytes,
                 size_);
        std::string what = fmt::format("all_gather of {} per rank over {} ranks (NCCL)", human_bytes(bytes), size_);
        if (!s && !is_device_pointer(full) && !is_device_pointer(slice)) {
            host_->all_gather(slice, full, bytes, nullptr);
            return;
        }
        run(s, std::move(what), [&](cudaStream_t cs) { enqueue_all_gather(slice, full, bytes, cs); });
    }

    void all_reduce_max(int * flags, size_t n, Stream * s) override {
        if (n == 0) return;
        ZT_CHECK(flags, "all_reduce_max of {} ints got a null buffer", n);
        if (!s && !is_device_pointer(flags)) {
            host_->all_reduce_max(flags, n, nullptr);
            return;
        }
        run(s, fmt::format("all_reduce_max of {} int(s) over {} ranks (NCCL)", n, size_), [&](cudaStream_t cs) {
            const size_t step = std::max<size_t>(1, chunk_ / sizeof(int));
            for (size_t off = 0; off < n; off += step)
                ZT_NCCL_CHECK(ncclAllReduce(flags + off, flags + off, std::min(step, n - off), ncclInt32, ncclMax,
                                            comm(), cs));
        });
    }

    std::vector<std::string> gather_strings(const std::string & mine) override { return host_->gather_strings(mine); }
    void broadcast(void * data, size_t bytes, int root) override { host_->broadcast(data, bytes, root); }
    void barrier() override { host_->barrier(); }

    [[noreturn]] void abort(int code) override {
        abort_nccl();
        host_->abort(code);
        std::_Exit(code);   // not reached: the host communicator's abort does not return
    }

private:
    ncclComm_t comm() const {
        ncclComm_t c = comm_.load();
        ZT_CHECK(c, "the NCCL communicator was aborted or freed: no collective can run on it any more");
        return c;
    }

    // Queues enqueue(cs) on s between the watchdog's arm and disarm tasks; s == nullptr: on the compute stream,
    // and waits for it (the guard then lives on this thread).
    template <class Enqueue>
    void run(Stream * s, std::string what, Enqueue enqueue) {
        ZT_CUDA_CHECK_HERE(cudaSetDevice(device_));
        cudaStream_t cs = cuda_stream_of(be_, s);
        if (!s) {
            auto guard = wd_->arm(std::move(what));
            enqueue(cs);
            ZT_CUDA_CHECK_HERE(cudaStreamSynchronize(cs));
            return;
        }
        note_stream(s);
        auto slot = std::make_shared<std::optional<Watchdog::Guard>>();
        Watchdog * wd = wd_.get();
        be_.host_task(s, [slot, wd, what] { slot->emplace(wd->arm(what)); });
        try {
            enqueue(cs);
        } catch (...) {
            be_.host_task(s, [slot] { slot->reset(); });
            throw;
        }
        be_.host_task(s, [slot] { slot->reset(); });
    }

    void enqueue_all_gather(const void * slice, void * full, size_t bytes, cudaStream_t cs) {
        if (bytes <= chunk_) {
            ZT_NCCL_CHECK(ncclAllGather(slice, full, bytes, ncclUint8, comm(), cs));
            return;
        }
        // chunk [off, off + len) of rank r's slice lands at full + r * bytes + off: one broadcast per rank, grouped
        // (in place when slice == full + rank * bytes: then the root's source is its destination)
        char * fullc = static_cast<char *>(full);
        const char * slicec = static_cast<const char *>(slice);
        ncclComm_t c = comm();
        for (size_t off = 0; off < bytes; off += chunk_) {
            const size_t len = std::min(chunk_, bytes - off);
            ZT_NCCL_CHECK(ncclGroupStart());
            ncclResult_t first = ncclSuccess;
            const char * failed = nullptr;
            for (int r = 0; r < size_ && first == ncclSuccess; ++r) {
                char * dst = fullc + size_t(r) * bytes + off;
                const void * src = r == rank_ ? static_cast<const void *>(slicec + off) : dst;
                first = ncclBroadcast(src, dst, len, ncclUint8, r, c, cs);
                if (first != ncclSuccess) failed = "ncclBroadcast (chunk of an all_gather)";
            }
            ncclResult_t end = ncclGroupEnd();
            if (first != ncclSuccess) nccl_fail(__FILE__, __LINE__, failed, first);
            if (end != ncclSuccess) nccl_fail(__FILE__, __LINE__, "ncclGroupEnd (chunk of an all_gather)", end);
        }
    }

    void note_stream(Stream * s) {
        std::lock_guard<std::mutex> l(mu_);
        if (std::find(used_streams_.begin(), used_streams_.end(), s) == used_streams_.end()) used_streams_.push_back(s);
    }

    // ncclCommAbort once (a watchdog firing while the host thread aborts too must not abort twice). NCCL's abort
    // may itself hang when the GPU is wedged: a timer ends the process regardless.
    void abort_nccl() {
        spdlog::default_logger()->flush();
        std::fflush(stderr);
        std::fflush(stdout);
        std::thread([] {
            std::this_thread::sleep_for(std::chrono::seconds(20));
            std::_Exit(1);
        }).detach();
        ncclComm_t c = comm_.exchange(nullptr);
        if (c) ncclCommAbort(c);
    }

    // The watchdog fired: say what hung (and any error NCCL has seen), then take the whole job down.
    void on_timeout(const std::string & what, double secs) {
        std::string nccl_says;
        if (ncclComm_t c = comm_.load()) {
            ncclResult_t async = ncclSuccess;
            if (ncclCommGetAsyncError(c, &async) == ncclSuccess && async != ncclSuccess)
                nccl_says = fmt::format(" (NCCL reports: {})", ncclGetErrorString(async));
        }
        spdlog::error("[rank {}] collective '{}' has not completed after {} s: a peer rank probably died or hangs "
                      "(check the other ranks' logs){}; aborting this rank so the launcher stops the job",
                      rank_, what, secs, nccl_says);
        abort(1);
    }

    Backend & be_;
    std::unique_ptr<Communicator> host_;   // MPI: the host-side collectives, the unique id, MPI_Abort
    int rank_ = 0, size_ = 1, device_ = 0;
    size_t chunk_ = size_t(1) << 30;       // largest slice one ncclAllGather moves (ZT_NCCL_CHUNK_BYTES, for tests)
    std::atomic<ncclComm_t> comm_{nullptr};
    std::mutex mu_;
    std::vector<Stream *> used_streams_;   // streams with queued collectives: synchronized before shutdown
    std::unique_ptr<Watchdog> wd_;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(Backend & backend, std::unique_ptr<Communicator> host,
                                                     const MpiOptions & options) {
    ZT_CHECK(host != nullptr, "the NCCL communicator needs a host communicator (MPI) for its start-up and the "
             "host-side collectives");
    ZT_CHECK(is_cuda_backend(backend), "the NCCL communicator needs the CUDA backend, not '{}': use "
             "\"ztinfer.communicator\": \"mpi\" for CPU ranks", backend.name());
    return std::make_unique<NcclCommunicator>(backend, std::move(host), options);
}

#endif  // ZT_HAVE_NCCL

}  // namespace zt
