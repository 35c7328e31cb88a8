// What other CUDA-aware code (the NCCL communicator, benchmarks) needs from the CUDA backend beyond Backend:
// the cudaStream_t behind a Stream and the device index. Only in CUDA builds.
#pragma once
#include "runtime/backend/backend.h"

#ifdef ZT_HAVE_CUDA
#include <cuda_runtime.h>

namespace zt {

// True when `backend` is a CUDA backend (made by make_cuda_backend).
bool is_cuda_backend(const Backend & backend);
// The CUDA stream behind s (nullptr: the compute stream); throws zt::Error when s is not this CUDA backend's.
cudaStream_t cuda_stream_of(Backend & backend, Stream * s);
// The device the backend runs on (it makes that device current on every thread that calls into it).
int cuda_device_of(const Backend & backend);

}  // namespace zt
#endif
