// Device discovery for `ztinfer info` and `ztinfer plan`: how many CUDA devices are visible, their names and memory.
#include <cuda_runtime.h>

#include "kernels/device_query.h"

namespace zt {

int cuda_device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n;
}

std::string cuda_device_name(int index) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) { cudaGetLastError(); return "unknown"; }
    return prop.name;
}

size_t cuda_device_memory(int index) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) { cudaGetLastError(); return 0; }
    return prop.totalGlobalMem;
}

}  // namespace zt
