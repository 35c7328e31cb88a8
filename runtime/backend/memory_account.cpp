// MemoryAccount (see memory_account.h).
#include "runtime/backend/memory_account.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "runtime/base/error.h"

namespace zt {

std::string format_bytes(size_t bytes) {
    const double b = double(bytes);
    if (b >= double(1ull << 30)) return fmt::format("{:.2f} GiB", b / double(1ull << 30));
    if (b >= double(1ull << 20)) return fmt::format("{:.1f} MiB", b / double(1ull << 20));
    if (b >= double(1ull << 10)) return fmt::format("{:.1f} KiB", b / double(1ull << 10));
    return fmt::format("{} B", bytes);
}

void MemoryAccount::add(MemKind kind, const std::string & purpose, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    switch (kind) {
        case MemKind::device: {
            const size_t cap = stats_.device_cap;
            if (cap && (bytes > cap || stats_.device_in_use > cap - bytes))
                ZT_FAIL("GPU memory cap (ztinfer.max_gpu_memory = {}) exceeded: the {} needs {} more, with {} in use "
                        "({}). Raise ztinfer.max_gpu_memory, or lower batch_size / micro_batches / the context "
                        "length, or offload more (offload_param.device \"cpu\", fewer resident_layers)",
                        format_bytes(cap), purpose, format_bytes(bytes), format_bytes(stats_.device_in_use),
                        describe_locked());
            stats_.device_in_use += bytes;
            stats_.device_peak = std::max(stats_.device_peak, stats_.device_in_use);
            stats_.device_by_purpose[purpose] += bytes;
            break;
        }
        case MemKind::pinned_host:
            stats_.pinned_in_use += bytes;
            stats_.pinned_peak = std::max(stats_.pinned_peak, stats_.pinned_in_use);
            break;
        case MemKind::host:
            stats_.host_in_use += bytes;
            stats_.host_peak = std::max(stats_.host_peak, stats_.host_in_use);
            break;
    }
}

void MemoryAccount::remove(MemKind kind, const std::string & purpose, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    switch (kind) {
        case MemKind::device: {
            stats_.device_in_use -= std::min(bytes, stats_.device_in_use);
            auto it = stats_.device_by_purpose.find(purpose);
            if (it != stats_.device_by_purpose.end()) {
                it->second -= std::min(bytes, it->second);
                if (it->second == 0) stats_.device_by_purpose.erase(it);
            }
            break;
        }
        case MemKind::pinned_host: stats_.pinned_in_use -= std::min(bytes, stats_.pinned_in_use); break;
        case MemKind::host: stats_.host_in_use -= std::min(bytes, stats_.host_in_use); break;
    }
}

MemoryStats MemoryAccount::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
}

void MemoryAccount::reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.device_peak = stats_.device_in_use;
    stats_.pinned_peak = stats_.pinned_in_use;
    stats_.host_peak = stats_.host_in_use;
}

std::string MemoryAccount::describe_device_use() const {
    std::lock_guard<std::mutex> lock(mu_);
    return describe_locked();
}

std::string MemoryAccount::describe_locked() const {
    std::vector<std::pair<std::string, size_t>> users(stats_.device_by_purpose.begin(), stats_.device_by_purpose.end());
    std::sort(users.begin(), users.end(), [](const auto & a, const auto & b) { return a.second > b.second; });
    if (users.empty()) return "nothing";
    std::string s;
    for (size_t i = 0; i < users.size() && i < 6; ++i)
        s += fmt::format("{}{} {}", i ? ", " : "", users[i].first, format_bytes(users[i].second));
    if (users.size() > 6) s += fmt::format(", {} more", users.size() - 6);
    return s;
}

}  // namespace zt
