// Whether the CUDA backend can be used here: the visible device count in every build, and in builds without
// CUDA (no nvcc at configure time) the backend's entry points, which say so.
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"

#ifdef ZT_HAVE_CUDA
#include "kernels/device_query.h"
#endif

namespace zt {

#ifdef ZT_HAVE_CUDA
int cuda_visible_device_count() { return cuda_device_count(); }
#else
int cuda_visible_device_count() { return 0; }

bool cuda_backend_compiled() { return false; }
std::string cuda_unavailable_reason() {
    return "this ztinfer was built without CUDA (no nvcc at configure time): install the CUDA toolkit and rebuild, "
           "or use \"device\": \"cpu\"";
}
std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions &) { ZT_FAIL("{}", cuda_unavailable_reason()); }
#endif

}  // namespace zt
