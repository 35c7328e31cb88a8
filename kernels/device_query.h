// Device discovery (CUDA builds only): visible device count and names; 0 when no driver or device.
#pragma once
#include <string>

namespace zt {
int cuda_device_count();
std::string cuda_device_name(int index);
}  // namespace zt
