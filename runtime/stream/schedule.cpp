// Schedule (see schedule.h): the ZeRO-Inference loop of one forward step, written out. With depth d and a ring
// of d+1 full-unit buffers, for the k-th streamed unit:
//
//   for unit u in plan order:                      # embed, layer 0 .. L-1, head
//       if u is resident: compute(u, its whole buffer)                          # compute stream
//       else (u is the k-th streamed unit):
//           issue(k + d) if not yet issued:                                      # slot (k+d) % (d+1) = slot of k-1
//               copy stream:  wait(freed[slot]); fetch this rank's slice -> ring[slot] + rank·slice
//               comm stream:  wait(fetched);     all_gather in place -> ring[slot];  gathered[slot] = record
//           compute stream: wait(gathered[k % (d+1)]); compute(u, ring[k % (d+1)]); freed[slot] = record
//
// so fetch and all-gather of unit k+d run while unit k computes. The streamed units of successive steps form one
// endless sequence (g = step * S + k): near the end of a step the next step's first units are fetched already,
// since weights do not depend on the step's data, and every rank issues the same all-gathers in the same order.
// overlap = false issues each unit just before
// its compute and synchronises after every stage: the same calls, one at a time (the reference). On the CPU
// backend the copy and comm streams are threads; on CUDA they are streams; the loop is the same.
#include "runtime/stream/schedule.h"

#include <fmt/format.h>

#include "comm/communicator.h"
#include "runtime/base/error.h"
#include "runtime/base/trace.h"
#include "runtime/stream/weight_store.h"

namespace zt {

Schedule::Schedule(const PartitionPlan & plan, WeightStore & store, Backend & backend, Communicator & comm,
                   const ScheduleOptions & options, Tracer * tracer)
    : plan_(plan), store_(store), be_(backend), comm_(comm), opt_(options), tracer_(tracer) {
    ZT_CHECK(opt_.prefetch_depth >= 0 && opt_.prefetch_depth <= 64,
             "ztinfer.prefetch_depth = {} must be in [0, 64] (2 is usually enough)", opt_.prefetch_depth);
    ZT_CHECK(plan.world == comm.world_size(), "the partition plan is for {} ranks but the communicator has {}",
             plan.world, comm.world_size());
    depth_ = opt_.overlap ? opt_.prefetch_depth : 0;
    for (size_t u = 0; u < plan.units.size(); ++u)
        if (plan.units[u].streamed) streamed_.push_back(int(u));
    if (!streamed_.empty()) {
        const size_t n = size_t(depth_) + 1;   // slot of unit g + d (issued before g computes) = slot of g - 1
        for (size_t i = 0; i < n; ++i) ring_.push_back(be_.alloc(plan.max_flat_bytes(), MemKind::device, "weight ring"));
        gathered_.resize(n);
        freed_.resize(n);
    }
}

Schedule::~Schedule() {
    // Normally every stream is idle here; after an error in run() queued fetches / all-gathers may still write
    // into the ring. Wait for them; their errors were reported already (or are moot while unwinding).
    try {
        be_.synchronize(nullptr);
    } catch (const std::exception &) {
    }
}

size_t Schedule::ring_bytes() const {
    size_t b = 0;
    for (const auto & r : ring_) b += r.bytes();
    return b;
}

void Schedule::issue(size_t g) {
    const size_t slot = g % ring_.size();
    const int u = streamed_[g % streamed_.size()];
    const PartitionUnit & unit = plan_.units[size_t(u)];
    char * full = static_cast<char *>(ring_[slot].data());
    char * mine = full + size_t(comm_.rank()) * unit.slice_bytes;
    Stream * copy = be_.stream(StreamRole::copy);
    Stream * comm = be_.stream(StreamRole::comm);
    const bool trace = tracer_ != nullptr;   // stage times are always summed; spans kept only with --trace

    // fetch: this rank's slice -> its place in the ring buffer (copy stream), once compute is done with the slot
    if (freed_[slot].impl) be_.wait(copy, freed_[slot]);
    auto t_fetch = trace ? std::make_shared<double>(0) : nullptr;   // stamps only with a tracer (the job always has one)
    if (trace) be_.host_task(copy, [this, t_fetch] { *t_fetch = tracer_->now_us(); });
    store_.fetch_slice(u, mine, copy);
    if (trace) be_.host_task(copy, [this, t_fetch, &unit] {
        tracer_->add("fetch " + unit.name, "fetch", "copy", *t_fetch, tracer_->now_us(),
                     tracer_->enabled() ? fmt::format("{{\"bytes\": {}}}", unit.slice_bytes) : std::string());
    });
    const Event fetched = be_.record(copy);
    if (!opt_.overlap) be_.synchronize(copy);

    // all-gather: every rank's slice -> the full unit (comm stream), after the fetch
    be_.wait(comm, fetched);
    auto t_gather = trace ? std::make_shared<double>(0) : nullptr;
    if (trace) be_.host_task(comm, [this, t_gather] { *t_gather = tracer_->now_us(); });
    comm_.all_gather(mine, full, unit.slice_bytes, comm);
    if (trace) be_.host_task(comm, [this, t_gather, &unit] {
        tracer_->add("all_gather " + unit.name, "all_gather", "comm", *t_gather, tracer_->now_us(),
                     tracer_->enabled() ? fmt::format("{{\"bytes\": {}}}", unit.flat_bytes) : std::string());
    });
    gathered_[slot] = be_.record(comm);
    if (!opt_.overlap) be_.synchronize(comm);
}

void Schedule::run(const ComputeFn & compute) {
    Stream * cs = be_.stream(StreamRole::compute);
    const bool trace = tracer_ != nullptr;
    for (size_t u = 0; u < plan_.units.size(); ++u) {
        const PartitionUnit & unit = plan_.units[u];
        const void * flat = nullptr;
        const size_t g = computed_;   // this unit's place in the endless sequence of streamed units
        if (unit.streamed) {
            while (issued_ <= g + size_t(depth_)) issue(issued_++);   // may run into the next step's units
            be_.wait(cs, gathered_[g % ring_.size()]);   // rethrows an error of the fetch or all-gather (e.g. NVMe)
            flat = ring_[g % ring_.size()].data();
        } else {
            flat = store_.resident_flat(int(u));
        }
        const double t0 = trace ? tracer_->now_us() : 0;
        compute(int(u), flat, store_.persistent(int(u)));
        if (!opt_.overlap) be_.synchronize(cs);
        if (trace) tracer_->add("compute " + unit.name, "compute", "compute", t0, tracer_->now_us());
        if (unit.streamed) {
            freed_[computed_++ % ring_.size()] = be_.record(cs);
            bytes_fetched_ += unit.slice_bytes;
        }
    }
}

}  // namespace zt
