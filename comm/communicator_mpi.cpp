// MpiCommunicator: MPI_COMM_WORLD for CPU ranks (communicator.h). Compiled always; without ZT_HAVE_MPI it only
// says that this build has no MPI.
//
// Threading. One process-wide mutex serialises every MPI call, so MPI_THREAD_SERIALIZED is enough. Collectives
// are non-blocking (MPI_I*) and completed by polling MPI_Test* with the mutex released in between, so a
// collective waiting for a slow peer never holds the lock: the comm stream's thread (all_gather of the next layer)
// and the host thread (gather_strings of this step's records) can both be inside a collective at once.
// Each of the backend's streams gets its own duplicate of MPI_COMM_WORLD and the host thread (s == nullptr,
// gather_strings, barrier) another, so MPI matches collectives per stream in that stream's order and two streams
// can never cross-match. Collectives queued on one stream must be issued in the same order on every rank.
//
// Every collective runs under a Watchdog guard (MpiOptions::collective_timeout_s): when one does not complete in
// time (a peer died or hangs) the rank logs what it was waiting for and calls MPI_Abort, which makes mpirun stop
// the whole job.
//
// Staging. When the host cannot touch the backend's device memory (CUDA), a collective queued on a stream moves
// its device buffers through a pinned host buffer of that stream (allocated from the backend, "MPI staging",
// grown on demand): copy_async device -> pinned (all_gather: only this rank's slice, into its place), host_task
// (the MPI collective, in place on the pinned buffer), copy_async pinned -> device (the whole result), all on
// that stream in order, so any MPI works (no CUDA-aware build needed). Consecutive collectives of one stream
// reuse its buffer (stream order keeps them apart); growing first synchronizes the stream so that no queued
// copy or collective still uses the old one. Collectives with s == nullptr, gather_strings and broadcast take
// host memory and are never staged. ZT_MPI_FORCE_STAGING=1 (tests only) stages even when the host can access
// device memory (the CPU backend), so CI runs the staged path on CPU ranks.
#include "comm/communicator.h"

#include <spdlog/spdlog.h>

#include "comm/staging_buffers.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"

#ifdef ZT_HAVE_MPI
#define OMPI_SKIP_MPICXX 1   // the C API only: the C++ bindings need libmpi_cxx
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <utility>

#include "comm/watchdog.h"
#endif

namespace zt {

#ifndef ZT_HAVE_MPI

bool mpi_available() { return false; }

std::unique_ptr<Communicator> make_mpi_communicator(Backend &, const MpiOptions &) {
    ZT_FAIL("this build has no MPI: install libopenmpi-dev and rebuild, or run one rank");
}

#else

namespace {

std::timed_mutex g_mpi;        // every MPI call holds it
int g_live = 0;                // MpiCommunicators alive (under g_mpi)
bool g_we_initialised = false; // MPI_Init_thread was ours, so MPI_Finalize is ours too

std::string mpi_error_string(int rc) {
    char buf[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return fmt::format("MPI error code {}", rc);
    return std::string(buf, size_t(len));
}

int world_rank_or_minus1() {
    int init = 0, fin = 0, r = -1;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
}

[[noreturn]] void mpi_fail(const char * file, int line, const char * call, int rc) {
    raise_error(file, line, fmt::format("{} failed on MPI rank {}: {}; check that every rank runs the same job "
                                        "and that no peer rank died (see the other ranks' logs)",
                                        call, world_rank_or_minus1(), mpi_error_string(rc)));
}

// ZT_MPI_CHECK(MPI_Foo(...)): throws zt::Error with file:line, the rank and MPI's own message.
#define ZT_MPI_CHECK(call)                                                      \
    do {                                                                        \
        int zt_mpi_rc_ = (call);                                                \
        if (zt_mpi_rc_ != MPI_SUCCESS) mpi_fail(__FILE__, __LINE__, #call, zt_mpi_rc_); \
    } while (0)

std::string human_bytes(size_t b) {
    if (b >= (size_t(1) << 30)) return fmt::format("{:.2f} GiB", double(b) / double(size_t(1) << 30));
    if (b >= (size_t(1) << 20)) return fmt::format("{:.2f} MiB", double(b) / double(size_t(1) << 20));
    if (b >= (size_t(1) << 10)) return fmt::format("{:.2f} KiB", double(b) / 1024.0);
    return fmt::format("{} B", b);
}

// Counts collectives queued on streams but not yet run (or dropped), so the destructor can wait for them. A
// token is released as soon as its collective has run, not when the task is destroyed: the CUDA backend destroys
// host tasks later, on one of its own calls, which a destructor waiting here might never make.
struct Pending {
    std::mutex m;
    std::condition_variable cv;
    int n = 0;
};
struct PendingToken {
    explicit PendingToken(std::shared_ptr<Pending> p) : p_(std::move(p)) {
        std::lock_guard<std::mutex> l(p_->m);
        ++p_->n;
    }
    ~PendingToken() { release(); }
    void release() {
        std::lock_guard<std::mutex> l(p_->m);
        if (released_) return;
        released_ = true;
        if (--p_->n == 0) p_->cv.notify_all();
    }
    std::shared_ptr<Pending> p_;
    bool released_ = false;
};

class MpiCommunicator final : public Communicator {
public:
    MpiCommunicator(Backend & be, const MpiOptions & opt) : be_(be), opt_(opt) {
        ZT_CHECK(opt.collective_timeout_s > 0, "collective timeout {} s must be positive", opt.collective_timeout_s);
        if (const char * c = std::getenv("ZT_MPI_CHUNK_BYTES")) {   // test knob: exercise the > INT_MAX paths
            long long v = std::atoll(c);
            ZT_CHECK(v > 0, "ZT_MPI_CHUNK_BYTES='{}' must be a positive number of bytes (or unset it)", c);
            chunk_ = size_t(v);
        }
        stage_ = StagingBuffers::needed(be, "ZT_MPI_FORCE_STAGING");   // test knob: the staged path on CPU ranks
        std::lock_guard<std::timed_mutex> lock(g_mpi);
        int init = 0, fin = 0, provided = 0;
        ZT_MPI_CHECK(MPI_Finalized(&fin));
        ZT_CHECK(!fin, "MPI was already finalised in this process (the last MPI communicator was destroyed): keep "
                       "one MPI communicator alive for the whole run");
        ZT_MPI_CHECK(MPI_Initialized(&init));
        if (!init) {
            ZT_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
            g_we_initialised = true;
        } else {
            ZT_MPI_CHECK(MPI_Query_thread(&provided));
        }
        ZT_CHECK(provided >= MPI_THREAD_SERIALIZED,
                 "this MPI library gives thread level {} but ztinfer needs MPI_THREAD_SERIALIZED or better (its comm "
                 "stream calls MPI from its own thread): use an MPI built with thread support (OpenMPI 4 is)",
                 provided);
        ZT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
        ZT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
        host_comm_ = dup_world();
        for (StreamRole role : {StreamRole::compute, StreamRole::copy, StreamRole::comm}) {
            Stream * s = be_.stream(role);
            bool seen = false;
            for (auto & sc : stream_comms_) seen |= sc.first == s;
            if (s && !seen) stream_comms_.emplace_back(s, dup_world());
        }
        ++g_live;
        int rank = rank_;
        wd_ = std::make_unique<Watchdog>(opt.collective_timeout_s, [rank](const std::string & what, double secs) {
            on_timeout(rank, what, secs);
        });
    }

    ~MpiCommunicator() override {
        {   // collectives still queued on streams reference this object. A CUDA context that hit an error never
            // runs its queued host functions (cudaLaunchHostFunc), so their tokens would never come back: let
            // the streams finish first, and when one of them failed, wait only briefly instead of forever.
            bool failed = false;
            for (auto & sc : stream_comms_) {
                try {
                    be_.synchronize(sc.first);
                } catch (const std::exception & e) {
                    failed = true;
                    spdlog::warn("rank {}: an error on a stream that ran MPI collectives, seen while shutting down: {}",
                                 rank_, e.what());
                }
            }
            std::unique_lock<std::mutex> l(pending_->m);
            const auto limit = failed ? std::chrono::duration<double>(5.0)
                                      : std::chrono::duration<double>(opt_.collective_timeout_s);
            if (!pending_->cv.wait_for(l, limit, [&] { return pending_->n == 0; })) {
                spdlog::error("rank {}: {} MPI collective(s) queued on streams never ran (a failed device?); shutting "
                              "down without them", rank_, pending_->n);
                return;   // they may still hold this object: leave MPI and the staging buffers alone
            }
        }
        staging_.release();   // the copies back from the staging buffers may still be queued behind the last one
        std::lock_guard<std::timed_mutex> lock(g_mpi);
        int fin = 0;
        MPI_Finalized(&fin);
        if (fin) return;
        for (auto & sc : stream_comms_) MPI_Comm_free(&sc.second);
        MPI_Comm_free(&host_comm_);
        if (--g_live == 0 && g_we_initialised) {
            int rc = MPI_Finalize();
            if (rc != MPI_SUCCESS) spdlog::warn("MPI_Finalize failed on rank {}: {}", rank_, mpi_error_string(rc));
        }
    }

    int rank() const override { return rank_; }
    int world_size() const override { return size_; }
    std::string name() const override { return "mpi"; }

    void all_gather(const void * slice, void * full, size_t bytes, Stream * s) override {
        if (bytes == 0) return;
        ZT_CHECK(slice && full, "all_gather of {} per rank got a null buffer", human_bytes(bytes));
        if (s && stage_) {
            ZT_CHECK(bytes <= SIZE_MAX / size_t(size_), "all_gather of {} bytes per rank over {} ranks overflows",
                     bytes, size_);
            staging_.all_gather(slice, full, bytes, rank_, size_, s, [&](char * mine, char * pin) {
                run_on(s, [this, mine, pin, bytes](MPI_Comm comm) { do_all_gather(mine, pin, bytes, comm); });
            });
            return;
        }
        run_on(s, [this, slice, full, bytes](MPI_Comm comm) { do_all_gather(slice, full, bytes, comm); });
    }

    void all_reduce_max(int * flags, size_t n, Stream * s) override {
        if (n == 0) return;
        ZT_CHECK(flags, "all_reduce_max of {} ints got a null buffer", n);
        if (s && stage_) {
            ZT_CHECK(n <= SIZE_MAX / sizeof(int), "all_reduce_max of {} ints overflows", n);
            staging_.all_reduce_max(flags, n, s, [&](int * pin) {
                run_on(s, [this, pin, n](MPI_Comm comm) { do_all_reduce_max(pin, n, comm); });
            });
            return;
        }
        run_on(s, [this, flags, n](MPI_Comm comm) { do_all_reduce_max(flags, n, comm); });
    }

    void broadcast(void * data, size_t bytes, int root) override {
        ZT_CHECK(root >= 0 && root < size_, "broadcast of {} from rank {}, but the ranks are 0 .. {}",
                 human_bytes(bytes), root, size_ - 1);
        if (bytes == 0) return;
        ZT_CHECK(data, "broadcast of {} from rank {} got a null buffer", human_bytes(bytes), root);
        auto guard = wd_->arm(fmt::format("broadcast of {} from rank {} over {} ranks", human_bytes(bytes), root,
                                          size_));
        char * p = static_cast<char *>(data);
        const size_t step = std::min<size_t>(chunk_, INT_MAX);
        constexpr size_t kWindow = 16;   // pieces in flight at once
        std::vector<MPI_Request> reqs;
        for (size_t off = 0; off < bytes;) {
            {
                std::lock_guard<std::timed_mutex> lock(g_mpi);
                for (; off < bytes && reqs.size() < kWindow; off += step) {
                    reqs.emplace_back();
                    ZT_MPI_CHECK(MPI_Ibcast(p + off, int(std::min(step, bytes - off)), MPI_BYTE, root, host_comm_,
                                            &reqs.back()));
                }
            }
            wait_all(reqs);
            reqs.clear();
        }
    }

    std::vector<std::string> gather_strings(const std::string & mine) override {
        auto guard = wd_->arm(fmt::format("gather_strings of {} from rank {} to rank 0 over {} ranks",
                                          human_bytes(mine.size()), rank_, size_));
        MPI_Comm comm = host_comm_;
        // every rank learns every size, so all take the same path below
        std::vector<uint64_t> sizes(size_t(size_), 0);
        uint64_t my = mine.size();
        {
            std::vector<MPI_Request> reqs(1);
            {
                std::lock_guard<std::timed_mutex> lock(g_mpi);
                ZT_MPI_CHECK(MPI_Iallgather(&my, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, comm, &reqs[0]));
            }
            wait_all(reqs);
        }
        uint64_t total = 0;
        for (uint64_t x : sizes) total += x;
        std::vector<std::string> out;
        if (rank_ == 0) {
            out.resize(size_t(size_));
            for (int r = 0; r < size_; ++r) out[size_t(r)].resize(size_t(sizes[size_t(r)]));
            out[0] = mine;
        }
        if (total == 0 || size_ == 1) return out;
        std::vector<MPI_Request> reqs;
        if (total <= std::min<uint64_t>(chunk_, INT_MAX)) {
            // one MPI_Gatherv into a contiguous buffer
            std::vector<char> buf;
            std::vector<int> counts, displs;
            if (rank_ == 0) {
                buf.resize(size_t(total));
                int d = 0;
                for (uint64_t x : sizes) { counts.push_back(int(x)); displs.push_back(d); d += int(x); }
            }
            reqs.emplace_back();
            {
                std::lock_guard<std::timed_mutex> lock(g_mpi);
                ZT_MPI_CHECK(MPI_Igatherv(mine.data(), int(my), MPI_CHAR, buf.data(), counts.data(), displs.data(),
                                          MPI_CHAR, 0, comm, &reqs.back()));
            }
            wait_all(reqs);
            if (rank_ == 0)
                for (int r = 1; r < size_; ++r)
                    out[size_t(r)].assign(buf.data() + displs[size_t(r)], size_t(counts[size_t(r)]));
            return out;
        }
        // too big for one int count: point-to-point in chunks, straight into the strings
        const int tag = 7001;
        size_t step = std::min<size_t>(chunk_, INT_MAX);
        {
            std::lock_guard<std::timed_mutex> lock(g_mpi);
            if (rank_ == 0) {
                for (int r = 1; r < size_; ++r)
                    for (size_t off = 0; off < sizes[size_t(r)]; off += step) {
                        reqs.emplace_back();
                        ZT_MPI_CHECK(MPI_Irecv(&out[size_t(r)][off], int(std::min<size_t>(step, sizes[size_t(r)] - off)),
                                               MPI_CHAR, r, tag, comm, &reqs.back()));
                    }
            } else {
                for (size_t off = 0; off < mine.size(); off += step) {
                    reqs.emplace_back();
                    ZT_MPI_CHECK(MPI_Isend(mine.data() + off, int(std::min(step, mine.size() - off)), MPI_CHAR, 0,
                                           tag, comm, &reqs.back()));
                }
            }
        }
        wait_all(reqs);
        return out;
    }

    void barrier() override {
        auto guard = wd_->arm(fmt::format("barrier over {} ranks", size_));
        std::vector<MPI_Request> reqs(1);
        {
            std::lock_guard<std::timed_mutex> lock(g_mpi);
            ZT_MPI_CHECK(MPI_Ibarrier(host_comm_, &reqs[0]));
        }
        wait_all(reqs);
    }

private:
    static MPI_Comm dup_world() {   // caller holds g_mpi
        MPI_Comm c = MPI_COMM_NULL;
        ZT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &c));
        ZT_MPI_CHECK(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN));
        return c;
    }

    [[noreturn]] void abort(int code) override { abort_world(code); }

    // The watchdog fired: say what hung, then take the whole job down.
    static void on_timeout(int rank, const std::string & what, double secs) {
        spdlog::error("[rank {}] collective '{}' has not completed after {} s: a peer rank probably died or hangs "
                      "(check the other ranks' logs); aborting this rank so the launcher stops the job",
                      rank, what, secs);
        abort_world(1);
    }

    // Flushes the logs and calls MPI_Abort (falling back to _Exit when the MPI runtime is wedged).
    [[noreturn]] static void abort_world(int code) {
        spdlog::default_logger()->flush();
        std::fflush(stderr);
        std::fflush(stdout);
        std::thread([] {   // MPI_Abort itself may hang when the runtime is wedged
            std::this_thread::sleep_for(std::chrono::seconds(10));
            std::_Exit(1);
        }).detach();
        // serialised like every MPI call when the lock comes free (it is only held for non-blocking calls)
        bool locked = g_mpi.try_lock_for(std::chrono::seconds(1));
        MPI_Abort(MPI_COMM_WORLD, code);
        if (locked) g_mpi.unlock();
        std::_Exit(code);
    }

    // Runs op(comm) now (s == nullptr, on the host communicator) or queued on s (on s's communicator).
    template <class Op>
    void run_on(Stream * s, Op op) {
        if (!s) { op(host_comm_); return; }
        MPI_Comm comm = stream_comms_.empty() ? host_comm_ : stream_comms_.back().second;
        for (auto & sc : stream_comms_)
            if (sc.first == s) comm = sc.second;
        auto token = std::make_shared<PendingToken>(pending_);
        be_.host_task(s, [op, comm, token] {
            struct Release {
                PendingToken & t;
                ~Release() { t.release(); }
            } release{*token};
            op(comm);
        });
    }

    void do_all_reduce_max(int * flags, size_t n, MPI_Comm comm) {
        auto guard = wd_->arm(fmt::format("all_reduce_max of {} int(s) over {} ranks", n, size_));
        std::vector<MPI_Request> reqs;
        size_t max_ints = std::max<size_t>(1, std::min<size_t>(chunk_, INT_MAX) / sizeof(int));
        {
            std::lock_guard<std::timed_mutex> lock(g_mpi);
            for (size_t off = 0; off < n; off += max_ints) {
                reqs.emplace_back();
                ZT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, flags + off, int(std::min(max_ints, n - off)), MPI_INT,
                                            MPI_MAX, comm, &reqs.back()));
            }
        }
        wait_all(reqs);
    }

    void do_all_gather(const void * slice, void * full, size_t bytes, MPI_Comm comm) {
        auto guard = wd_->arm(fmt::format("all_gather of {} per rank over {} ranks", human_bytes(bytes), size_));
        char * fullc = static_cast<char *>(full);
        bool in_place = static_cast<const char *>(slice) == fullc + size_t(rank_) * bytes;
        std::vector<MPI_Request> reqs;
        std::vector<MPI_Datatype> types;
        size_t step = std::min<size_t>(chunk_, INT_MAX);
        try {
            if (bytes <= step) {
                {
                    std::lock_guard<std::timed_mutex> lock(g_mpi);
                    reqs.emplace_back();
                    ZT_MPI_CHECK(MPI_Iallgather(in_place ? MPI_IN_PLACE : slice, int(bytes), MPI_BYTE, full,
                                                int(bytes), MPI_BYTE, comm, &reqs.back()));
                }
                wait_all(reqs);
            } else {
                // chunk [off, off+len) of every rank's slice: a type of len bytes whose extent is a whole slice, so
                // rank r's chunk lands at full + off + r * bytes. At most kWindow chunks are in flight at once.
                constexpr size_t kWindow = 16;
                MPI_Datatype full_t = MPI_DATATYPE_NULL, tail_t = MPI_DATATYPE_NULL;
                auto make = [&](size_t len) {   // caller holds g_mpi
                    MPI_Datatype c, t;
                    ZT_MPI_CHECK(MPI_Type_contiguous(int(len), MPI_BYTE, &c));
                    ZT_MPI_CHECK(MPI_Type_create_resized(c, 0, MPI_Aint(bytes), &t));
                    ZT_MPI_CHECK(MPI_Type_commit(&t));
                    MPI_Type_free(&c);
                    types.push_back(t);
                    return t;
                };
                for (size_t off = 0; off < bytes;) {
                    {
                        std::lock_guard<std::timed_mutex> lock(g_mpi);
                        for (; off < bytes && reqs.size() < kWindow; off += step) {
                            size_t len = std::min(step, bytes - off);
                            MPI_Datatype & t = len == step ? full_t : tail_t;
                            if (t == MPI_DATATYPE_NULL) t = make(len);
                            reqs.emplace_back();
                            const void * send = in_place ? MPI_IN_PLACE : static_cast<const char *>(slice) + off;
                            ZT_MPI_CHECK(MPI_Iallgather(send, int(len), MPI_BYTE, fullc + off, 1, t, comm, &reqs.back()));
                        }
                    }
                    wait_all(reqs);
                    reqs.clear();
                }
            }
        } catch (...) {
            free_types(types);
            throw;
        }
        free_types(types);
    }

    static void free_types(std::vector<MPI_Datatype> & types) {
        std::lock_guard<std::timed_mutex> lock(g_mpi);
        for (auto & t : types) MPI_Type_free(&t);
        types.clear();
    }

    // Polls until every request is complete, holding the MPI lock only for each MPI_Testall.
    static void wait_all(std::vector<MPI_Request> & reqs) {
        if (reqs.empty()) return;
        for (long spin = 0;; ++spin) {
            int done = 0;
            {
                std::lock_guard<std::timed_mutex> lock(g_mpi);
                ZT_MPI_CHECK(MPI_Testall(int(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE));
            }
            if (done) return;
            if (spin < 2000) std::this_thread::yield();
            else std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }

    Backend & be_;
    MpiOptions opt_;
    int rank_ = 0, size_ = 1;
    size_t chunk_ = size_t(1) << 30;   // largest piece one MPI call moves (ZT_MPI_CHUNK_BYTES overrides, for tests)
    bool stage_ = false;               // stage collectives on streams through pinned host memory (see the top)
    StagingBuffers staging_{be_, "MPI staging"};   // per stream; only the queueing thread asks for them
    MPI_Comm host_comm_ = MPI_COMM_NULL;
    std::vector<std::pair<Stream *, MPI_Comm>> stream_comms_;
    std::shared_ptr<Pending> pending_ = std::make_shared<Pending>();
    std::unique_ptr<Watchdog> wd_;
};

}  // namespace

bool mpi_available() { return true; }

std::unique_ptr<Communicator> make_mpi_communicator(Backend & backend, const MpiOptions & options) {
    return std::make_unique<MpiCommunicator>(backend, options);
}

#endif  // ZT_HAVE_MPI

}  // namespace zt
