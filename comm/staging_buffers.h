// StagingBuffers: the pinned host buffers through which a host-memory communicator (MPI, TCP) moves a stream's
// device buffers when the host cannot touch the backend's device memory (CUDA without NCCL, or several ranks
// sharing one GPU). One buffer per stream, allocated from the backend as pinned host memory and grown on demand:
//
//   all_gather on stream s:      copy_async(this rank's slice -> its place in pin) ; host_task(collective on pin) ;
//                                copy_async(pin -> full)                           -- all in s's order
//   all_reduce_max on stream s:  copy_async(flags -> pin) ; host_task(collective on pin) ; copy_async(pin -> flags)
//
// Consecutive collectives of one stream reuse its buffer (stream order keeps them apart); growing first
// synchronizes the stream, so no queued copy or collective still uses the old buffer. Only the thread that queues
// work on the streams calls for(); release() (at shutdown) waits for each stream's queued copies, then frees.
#pragma once
#include <cstddef>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/backend/backend.h"

namespace zt {

class StagingBuffers {
public:
    // `purpose` names the allocations and the shutdown warnings ("MPI staging").
    StagingBuffers(Backend & be, std::string purpose) : be_(be), purpose_(std::move(purpose)) {}
    ~StagingBuffers() = default;   // frees without waiting (release() first for a clean shutdown)
    StagingBuffers(const StagingBuffers &) = delete;
    StagingBuffers & operator=(const StagingBuffers &) = delete;

    // Stream s's pinned buffer, at least `bytes` long.
    char * for_stream(Stream * s, size_t bytes);

    // Queues on s a staged all_gather of `bytes` per rank: this rank's slice into its place in the pinned buffer,
    // queue_collective(mine, pin) (which must queue the host-memory all_gather, in place, on s), the result back.
    template <class QueueCollective>
    void all_gather(const void * slice, void * full, size_t bytes, int rank, int world, Stream * s,
                    QueueCollective queue_collective) {
        const size_t total = bytes * size_t(world);
        char * pin = for_stream(s, total);
        char * mine = pin + size_t(rank) * bytes;
        be_.copy_async(mine, slice, bytes, s);
        queue_collective(mine, pin);
        be_.copy_async(full, pin, total, s);
    }
    // Queues on s a staged all_reduce_max of n ints: flags -> pinned, queue_collective(pin), pinned -> flags.
    template <class QueueCollective>
    void all_reduce_max(int * flags, size_t n, Stream * s, QueueCollective queue_collective) {
        int * pin = reinterpret_cast<int *>(for_stream(s, n * sizeof(int)));
        be_.copy_async(pin, flags, n * sizeof(int), s);
        queue_collective(pin);
        be_.copy_async(flags, pin, n * sizeof(int), s);
    }
    // Synchronizes every stream that used a buffer (a stream's error is logged, not thrown) and frees the buffers.
    void release();

    // Whether to stage: the host cannot access the backend's device memory, or the test knob `force_env` (e.g.
    // "ZT_MPI_FORCE_STAGING") is "1" (the staged path on CPU ranks, for CI). Throws zt::Error for another value.
    static bool needed(const Backend & be, const char * force_env);

private:
    Backend & be_;
    std::string purpose_;
    std::mutex mu_;
    std::vector<std::pair<Stream *, Buffer>> buffers_;
};

}  // namespace zt
