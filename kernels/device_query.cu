// Device discovery for `ztinfer info`, `ztinfer plan` and the job's communicator choice: how many CUDA devices are
// visible, their names, memory and UUIDs.
#include <cuda_runtime.h>

#include <cstdio>

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

std::string cuda_device_uuid(int index) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) { cudaGetLastError(); return ""; }
    const unsigned char * u = reinterpret_cast<const unsigned char *>(prop.uuid.bytes);
    char text[64];
    std::snprintf(text, sizeof text, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                  u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    return text;
}

}  // namespace zt
