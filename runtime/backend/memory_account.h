// MemoryAccount: what a backend has allocated and not yet freed, by kind, and device memory by purpose, with the
// peak of each kind (device, pinned host, host) since the start or the last reset_peak(), and an optional cap on
// device memory (ztinfer.max_gpu_memory). Thread-safe; shared by a backend and the free functions of its Buffers
// (which may outlive the call that made them).
#pragma once
#include <cstddef>
#include <mutex>
#include <string>

#include "runtime/backend/backend.h"

namespace zt {

class MemoryAccount {
public:
    explicit MemoryAccount(size_t device_cap = 0) { stats_.device_cap = device_cap; }

    // Counts an allocation; for device memory over the cap, throws zt::Error naming the purpose, the size asked
    // for, the cap and the largest users in use (counts nothing then).
    void add(MemKind kind, const std::string & purpose, size_t bytes);
    void remove(MemKind kind, const std::string & purpose, size_t bytes);
    MemoryStats stats() const;
    void reset_peak();   // every peak = its in_use now
    // "KV cache 3.2 GiB, weight ring 1.1 GiB, ..." (device memory in use, largest first)
    std::string describe_device_use() const;

private:
    std::string describe_locked() const;
    mutable std::mutex mu_;
    MemoryStats stats_;
};

// "1.50 GiB", "12.0 MiB", "512 B"
std::string format_bytes(size_t bytes);

}  // namespace zt
