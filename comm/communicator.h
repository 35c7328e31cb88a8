// Communicator: the collectives ranks need (all_gather of layer slices, the per-step "all done" all-reduce,
// barrier). MPI for CPU ranks and NCCL for GPUs join with weight streaming; LocalCommunicator is world size 1.
#pragma once
#include <cstddef>
#include <memory>

namespace zt {

struct Stream;

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int world_size() const = 0;
    // Every rank contributes slice_bytes at `slice`; `full` receives world_size slices in rank order.
    virtual void all_gather(const void * slice, void * full, size_t slice_bytes, Stream * s) = 0;
    // Element-wise max over ranks, in place ("all done?" per step).
    virtual void all_reduce_max(int * flags, size_t n, Stream * s) = 0;
    virtual void barrier() = 0;
};

// World of one process: all_gather copies, all_reduce_max is the identity.
std::unique_ptr<Communicator> make_local_communicator();

}  // namespace zt
