// Schedule: the weight-streaming loop of one forward step (see schedule.cpp, where the loop is written out).
// For every unit of the PartitionPlan in order it makes the unit's full flat buffer available on this rank and
// calls compute(unit, flat, persistent): resident units straight from the WeightStore, streamed units through a
// ring of prefetch_depth + 1 buffers, fetched (copy stream) and all-gathered (comm stream) ahead of compute.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/stream/layer_partition.h"

namespace zt {

class Communicator;
class Tracer;
class WeightStore;

struct ScheduleOptions {
    int prefetch_depth = 2;   // ztinfer.prefetch_depth: streamed units fetched ahead of the one computing
    bool overlap = true;      // ztinfer.overlap: false runs the same calls one after another (the reference)
};

class Schedule {
public:
    Schedule(const PartitionPlan & plan, WeightStore & store, Backend & backend, Communicator & comm,
             const ScheduleOptions & options, Tracer * tracer = nullptr);
    ~Schedule();   // waits for the copy/comm work still queued (after an error) before the ring is freed
    Schedule(const Schedule &) = delete;
    Schedule & operator=(const Schedule &) = delete;

    // compute(unit, flat, persistent): run on the compute stream once the unit's weights are here; flat is its
    // full flat buffer, persistent its persistent block (nullptr when none).
    using ComputeFn = std::function<void(int unit, const void * flat, const void * persistent)>;

    // One forward step over every unit. Collective: every rank calls run() for every step, also with nothing to
    // compute (compute may then do nothing), so the all-gathers match. Returns when this step's compute is
    // done (the next step's first units may be on their way already); an error of a fetch or all-gather (e.g.
    // an NVMe read that failed after its retries) is rethrown here, by the compute stream's wait on it.
    void run(const ComputeFn & compute);

    const ScheduleOptions & options() const { return opt_; }
    size_t ring_bytes() const;   // memory of the ring buffers
    size_t ring_buffers() const { return ring_.size(); }   // depth + 1, or 0 when nothing is streamed
    // Weight bytes this rank fetched for the units computed so far (its slice of each streamed unit, every step).
    uint64_t bytes_fetched() const { return bytes_fetched_; }

private:
    void issue(size_t g);        // fetch + all-gather of streamed unit g (endless sequence) into slot g % (depth + 1)

    const PartitionPlan & plan_;
    WeightStore & store_;
    Backend & be_;
    Communicator & comm_;
    ScheduleOptions opt_;
    Tracer * tracer_;
    int depth_;                          // effective prefetch depth (0 when overlap is off)
    std::vector<int> streamed_;          // indices of streamed units, in compute order
    std::vector<Buffer> ring_;           // depth + 1 buffers of max_flat_bytes (device memory)
    std::vector<Event> gathered_;        // per ring slot: its all-gather is done
    std::vector<Event> freed_;           // per ring slot: compute is done reading it
    size_t issued_ = 0;                  // streamed units issued so far, counting across steps
    size_t computed_ = 0;                // streamed units computed so far, counting across steps
    uint64_t bytes_fetched_ = 0;
};

}  // namespace zt
