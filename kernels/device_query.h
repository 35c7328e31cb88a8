// Device discovery (CUDA builds only): visible device count, names and memory; 0 when no driver or device.
#pragma once
#include <cstddef>
#include <string>

namespace zt {
int cuda_device_count();
std::string cuda_device_name(int index);
size_t cuda_device_memory(int index);   // total bytes of device `index`; 0 when unknown
}  // namespace zt
