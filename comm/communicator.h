// Communicator: the collectives ranks need: all_gather of layer slices, the per-step "all done" all-reduce,
// gathering finished records (and trace events) to rank 0, barrier. MPI for CPU ranks (communicator_mpi.cpp),
// NCCL for GPUs (communicator_nccl.cpp); LocalCommunicator is the world of one process.
// Collectives that take a Stream are queued on it (Backend::host_task on CPU ranks, the comm stream on GPUs)
// and are complete when an event recorded on it after them is; s == nullptr runs them now, blocking.
// Every collective runs under the host-side watchdog (watchdog.h): a peer that died turns a hang into an exit.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace zt {

class Backend;
class Stream;

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int world_size() const = 0;
    virtual std::string name() const = 0;   // "local", "mpi", "tcp", "nccl"
    // Every rank contributes slice_bytes at `slice`; `full` receives world_size slices in rank order.
    // In place is allowed: slice == full + rank * slice_bytes.
    virtual void all_gather(const void * slice, void * full, size_t slice_bytes, Stream * s) = 0;
    // Element-wise max over ranks, in place ("all done?" per step).
    virtual void all_reduce_max(int * flags, size_t n, Stream * s) = 0;
    // Rank 0 receives every rank's string in rank order (its own first); other ranks get an empty vector.
    // Blocking. Used each step for finished records, and once for trace events.
    virtual std::vector<std::string> gather_strings(const std::string & mine) = 0;
    // Every rank receives root's `bytes` at `data` (host memory). Blocking. (NCCL's unique id, at start-up.)
    virtual void broadcast(void * data, size_t bytes, int root) = 0;
    virtual void barrier() = 0;
    // Ends every rank now (after this rank's error was logged): MPI_Abort, so the launcher stops the job instead
    // of the other ranks waiting in a collective for this one. The local world just exits.
    [[noreturn]] virtual void abort(int code) = 0;
};

// World of one process: all_gather copies (on `backend`'s stream when one is given), all_reduce_max is the
// identity, gather_strings returns {mine}.
std::unique_ptr<Communicator> make_local_communicator(Backend * backend = nullptr);

struct MpiOptions {
    double collective_timeout_s = 300;   // watchdog: a collective that takes longer aborts every rank
};

// True when this build has the MPI communicator (ZT_HAVE_MPI).
bool mpi_available();

// MPI_COMM_WORLD over `backend`'s streams. Initialises MPI on first use (asks for MPI_THREAD_MULTIPLE, accepts
// SERIALIZED: every MPI call holds one process-wide lock) and finalises it when the last one is destroyed (MPI
// cannot be initialised again after that: keep one alive for the whole run). Each stream, and the host thread
// (s == nullptr, gather_strings, barrier), has its own duplicate of MPI_COMM_WORLD: collectives must be issued in
// the same order on every rank per stream (and per host thread), never interleaved differently across streams.
// Throws zt::Error when this build has no MPI. ZT_MPI_CHUNK_BYTES (tests only) shrinks the largest single transfer.
// With a backend whose device memory the host cannot touch (CUDA), collectives on a stream stage device buffers
// through pinned host memory (device -> host copy, MPI on the host, host -> device copy, all on that stream):
// correct on any MPI (no CUDA-aware build needed), e.g. several ranks sharing one GPU, but PCIe-bound.
// Tests only: ZT_MPI_FORCE_STAGING=1 stages even when the host can reach device memory (CPU ranks in CI).
std::unique_ptr<Communicator> make_mpi_communicator(Backend & backend, const MpiOptions & options);

struct TcpOptions {
    std::string master_addr = "127.0.0.1";   // MASTER_ADDR: rank 0's host (a name or an address)
    int master_port = 29500;                 // MASTER_PORT: rank 0 listens there (every interface)
    int rank = 0, world = 1;                 // RANK, WORLD_SIZE
    std::string job_id;                      // ZT_JOB_ID (optional): ranks of other jobs on the same port are refused
    double collective_timeout_s = 300;       // watchdog: a collective that takes longer stops every rank
    double connect_timeout_s = 60;           // every rank must have connected to rank 0 within this
};

// TcpOptions from MASTER_ADDR (required), MASTER_PORT (default 29500), ZT_JOB_ID and ZT_CONNECT_TIMEOUT_S; rank and
// world from the launcher (comm/world.h). Throws zt::Error naming the variable that is missing or malformed.
TcpOptions tcp_options_from_env(int rank, int world, double collective_timeout_s);

// Ranks over TCP sockets (Boost.Asio), no MPI needed: torchrun, srun without MPI, or plain `&` loops. Rank 0
// listens on MASTER_PORT, every other rank connects (retrying until connect_timeout_s) and says hello (magic,
// protocol version, job key, rank, world size); a wrong world size, a duplicate rank or a port already in use is a
// clear error on every rank. Star topology through rank 0 (all_gather = gather to 0, then broadcast; all-reduce
// likewise): bit-identical results to MPI's, bandwidth bound by rank 0's link. One connection per stream and one
// for the host thread, like MPI's duplicated communicators (same ordering rule), plus a control connection that
// a monitor thread watches: a peer that dies (closed socket) stops every rank at once, naming the dead rank, and
// rank 0 forwards abort() to the others. Collectives on streams of a backend whose device memory the host cannot
// touch stage it through pinned host memory, like MPI's (with one GPU per rank, TCP carries NCCL's unique id
// instead: make_nccl_communicator's host). ZT_TCP_FORCE_STAGING=1 (tests only) stages on CPU ranks too.
std::unique_ptr<Communicator> make_tcp_communicator(Backend & backend, const TcpOptions & options);

// True when this build has the NCCL communicator (CUDA and NCCL found at configure time).
bool nccl_available();

// NCCL over a CUDA backend: all_gather and all_reduce_max on a stream run as NCCL collectives on that stream's
// cudaStream_t (device buffers, NVLink/PCIe peer to peer); everything on the host (s == nullptr, gather_strings,
// broadcast, barrier, abort) goes to `host`, the MPI (or TCP) communicator, which also carries NCCL's unique id from rank
// 0 at start-up. Each rank must use its own GPU (NCCL refuses two ranks on one device: use the MPI communicator
// there). Collectives are watched like MPI's: one that takes longer than collective_timeout_s aborts the job.
// Throws zt::Error when this build has no NCCL or the backend is not CUDA. Tests only: ZT_NCCL_CHUNK_BYTES shrinks
// the largest single transfer.
std::unique_ptr<Communicator> make_nccl_communicator(Backend & backend, std::unique_ptr<Communicator> host,
                                                     const MpiOptions & options);

}  // namespace zt
