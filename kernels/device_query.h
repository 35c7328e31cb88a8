// Device discovery (CUDA builds only): visible device count, names, memory and UUIDs; 0 / "" when no driver or
// device.
#pragma once
#include <cstddef>
#include <string>

namespace zt {
int cuda_device_count();
std::string cuda_device_name(int index);
size_t cuda_device_memory(int index);   // total bytes of device `index`; 0 when unknown
// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (as nvidia-smi -L prints it): the same physical GPU has the same UUID
// in every process, whatever CUDA_VISIBLE_DEVICES renumbers it to; "" when unknown.
std::string cuda_device_uuid(int index);
}  // namespace zt
