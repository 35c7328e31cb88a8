// StagingBuffers (see staging_buffers.h): per-stream pinned host buffers for host-memory communicators.
#include "comm/staging_buffers.h"

#include <cstdlib>
#include <exception>

#include <spdlog/spdlog.h>

#include "runtime/base/error.h"

namespace zt {

char * StagingBuffers::for_stream(Stream * s, size_t bytes) {
    std::lock_guard<std::mutex> l(mu_);
    Buffer * buf = nullptr;
    for (auto & b : buffers_)
        if (b.first == s) buf = &b.second;
    if (!buf) {
        buffers_.emplace_back(s, Buffer());
        buf = &buffers_.back().second;
    }
    if (buf->bytes() < bytes) {
        if (*buf) {   // its queued copies and collectives may still use the old buffer
            be_.synchronize(s);
            buf->reset();
        }
        *buf = be_.alloc(bytes, MemKind::pinned_host, purpose_.c_str());
    }
    return static_cast<char *>(buf->data());
}

void StagingBuffers::release() {
    std::lock_guard<std::mutex> l(mu_);
    for (auto & b : buffers_) {
        try {
            be_.synchronize(b.first);   // the copies back from the buffer may still be queued behind a collective
        } catch (const std::exception & e) {
            spdlog::warn("an error on a stream that used {}, seen while shutting down: {}", purpose_, e.what());
        }
        b.second.reset();
    }
    buffers_.clear();
}

bool StagingBuffers::needed(const Backend & be, const char * force_env) {
    bool stage = !be.host_can_access(MemKind::device);
    if (const char * f = std::getenv(force_env)) {
        const std::string v = f;
        ZT_CHECK(v == "0" || v == "1" || v.empty(), "{}='{}' must be 1 (stage device buffers through pinned host memory "
                 "even when the host can access them; for tests) or 0 (or unset it)", force_env, v);
        stage = stage || v == "1";
    }
    return stage;
}

}  // namespace zt
