// AlignedScratch: a 64-byte aligned, growable scratch buffer of floats, kept per thread by the CPU backend's ops
// (backend_cpu_ops.cpp) and matmul (cpu_matmul.cpp), e.g. `thread_local AlignedScratch buf; float * p = buf.get(n);`.
#pragma once
#include <cstddef>
#include <cstdlib>

#include "runtime/base/error.h"

namespace zt {

// 64-byte aligned scratch of n floats (contents kept until the next call with a larger n).
struct AlignedScratch {
    float * p = nullptr;
    size_t cap = 0;

    AlignedScratch() = default;
    AlignedScratch(const AlignedScratch &) = delete;
    AlignedScratch & operator=(const AlignedScratch &) = delete;
    ~AlignedScratch() { std::free(p); }

    float * get(size_t n) {
        if (n > cap) {
            std::free(p);
            p = nullptr;
            cap = 0;   // set only once the new block exists: after a failed allocation the next call retries
            ZT_CHECK(n <= (size_t(-1) / sizeof(float) - 15), "scratch of {} floats does not fit in memory", n);
            const size_t want = (n + 15) & ~size_t(15);
            p = static_cast<float *>(std::aligned_alloc(64, want * sizeof(float)));
            ZT_CHECK(p != nullptr, "out of host memory allocating {} bytes of scratch", want * sizeof(float));
            cap = want;
        }
        return p;
    }
};

}  // namespace zt
