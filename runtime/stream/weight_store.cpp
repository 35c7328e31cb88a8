// WeightStore (see weight_store.h): at start-up copies this rank's bytes out of the checkpoint into the offload
// tier ("none": whole units in backend memory; "cpu": own slices in one pinned host buffer; "nvme": own slices in
// <nvme_path>/ztinfer-rank<r>.weights plus a ring of pinned staging buffers), and queues slice fetches on a stream.
#include "runtime/stream/weight_store.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include <spdlog/spdlog.h>

#include "runtime/base/error.h"
#include "runtime/stream/nvme_file.h"

namespace zt {

namespace {

constexpr size_t kSliceAlign = NvmeFile::kAlign;   // own slices start 4096-aligned (in the pinned buffer and file)

size_t round_up(size_t x, size_t a) {
    const size_t r = x % a;
    ZT_CHECK(r == 0 || x <= SIZE_MAX - (a - r), "weight store: size {} overflows when rounded up to {}", x, a);
    return r == 0 ? x : x + (a - r);
}

// A host buffer aligned to 4096 (std::aligned_alloc), for start-up staging of the NVMe writes.
struct AlignedHost {
    void * p = nullptr;
    explicit AlignedHost(size_t bytes) {
        if (bytes == 0) return;
        p = std::aligned_alloc(kSliceAlign, round_up(bytes, kSliceAlign));
        ZT_CHECK(p != nullptr, "out of host memory allocating a {}-byte staging buffer for the NVMe weight file",
                 bytes);
    }
    ~AlignedHost() { std::free(p); }
    AlignedHost(const AlignedHost &) = delete;
    AlignedHost & operator=(const AlignedHost &) = delete;
};

std::string mib(size_t b) { return fmt::format("{:.1f} MiB", double(b) / (1024.0 * 1024.0)); }

}  // namespace

const char * offload_tier_name(OffloadTier t) {
    switch (t) {
        case OffloadTier::none: return "none";
        case OffloadTier::cpu: return "cpu";
        case OffloadTier::nvme: return "nvme";
    }
    return "?";
}

struct WeightStore::Impl {
    struct Unit {
        std::string name;
        bool streamed = false;
        size_t slice_bytes = 0;
        size_t slice_offset = 0;     // offset of this rank's slice in the pinned buffer ("cpu") or the file ("nvme")
        Buffer flat;                 // resident: the whole flat buffer (backend memory)
        Buffer persistent;           // the persistent block (backend memory)
    };

    Backend & backend;
    int rank = 0;
    WeightStoreOptions opt;
    std::vector<Unit> units;
    WeightMemory mem;

    Buffer slices;                   // "cpu": own slices back to back
    std::unique_ptr<NvmeFile> file;  // "nvme"
    std::string file_path;
    std::vector<Buffer> staging;     // "nvme": the ring (each holds max slice rounded to 4096, 4096-aligned inside)
    std::vector<uint8_t *> staging_ptr;
    size_t next_staging = 0;
    Stream * fetch_stream = nullptr; // "nvme": the one stream the ring is reused in order on
    std::mutex mu;

    Impl(Backend & b, int r, const WeightStoreOptions & o) : backend(b), rank(r), opt(o) {}

    // Fills a backend-memory buffer of `bytes` with `fill(host_ptr)` through a host temporary and copy_async
    // (device memory need not be host-visible).
    template <typename Fill>
    Buffer upload(size_t bytes, std::vector<uint8_t> & tmp, Fill fill) {
        Buffer buf = backend.alloc(bytes, MemKind::device, "resident weights");
        if (tmp.size() < bytes) tmp.resize(bytes);
        fill(tmp.data());
        Stream * s = backend.stream(StreamRole::copy);
        backend.copy_async(buf.data(), tmp.data(), bytes, s);
        backend.synchronize(s);
        return buf;
    }

    // A pinned host buffer whose first 4096-aligned byte has room for `bytes`.
    Buffer alloc_aligned_pinned(size_t bytes, uint8_t ** aligned) {
        Buffer b = backend.alloc(bytes, MemKind::pinned_host, "NVMe staging");
        uintptr_t p = reinterpret_cast<uintptr_t>(b.data());
        if (p % kSliceAlign != 0) {
            b = backend.alloc(bytes + kSliceAlign, MemKind::pinned_host, "NVMe staging");
            p = reinterpret_cast<uintptr_t>(b.data());
        }
        *aligned = reinterpret_cast<uint8_t *>(round_up(p, kSliceAlign));
        return b;
    }
};

WeightStore::WeightStore(const PartitionPlan & plan, int rank, Backend & backend, const WeightStoreOptions & options)
    : impl_(std::make_unique<Impl>(backend, rank, options)) {
    Impl & m = *impl_;
    ZT_CHECK(rank >= 0 && rank < plan.world, "weight store: rank {} is outside world size {}", rank, plan.world);
    ZT_CHECK(options.buffer_count >= 1, "offload_param.buffer_count must be >= 1, got {}", options.buffer_count);
    if (options.tier == OffloadTier::none) {
        for (const PartitionUnit & u : plan.units)
            ZT_CHECK(!u.streamed, "weight store: offload device \"none\" keeps every unit whole, but unit {} of the "
                     "partition plan is streamed (plan it with stream = false)", u.name);
    }
    if (options.tier == OffloadTier::nvme)
        ZT_CHECK(!options.nvme_path.empty(), "offload_param.device is \"nvme\" but offload_param.nvme_path is empty: "
                 "set it to a folder on a local NVMe disk");

    // Resident units and persistent blocks: whole in backend memory.
    std::vector<uint8_t> tmp;
    size_t own_total = 0, max_slice = 0, streamed_units = 0;
    m.units.resize(plan.units.size());
    for (size_t i = 0; i < plan.units.size(); ++i) {
        const PartitionUnit & u = plan.units[i];
        Impl::Unit & d = m.units[i];
        d.name = u.name;
        d.streamed = u.streamed;
        d.slice_bytes = u.slice_bytes;
        if (!u.streamed && u.flat_bytes > 0) {
            d.flat = m.upload(u.flat_bytes, tmp, [&](void * p) { copy_flat(u, p); });
            m.mem.resident += u.flat_bytes;
        }
        if (u.persistent_bytes > 0) {
            d.persistent = m.upload(u.persistent_bytes, tmp, [&](void * p) { copy_persistent(u, p); });
            m.mem.resident += u.persistent_bytes;
        }
        if (u.streamed) {
            d.slice_offset = own_total;
            own_total += round_up(u.slice_bytes, kSliceAlign);
            max_slice = std::max(max_slice, u.slice_bytes);
            ++streamed_units;
        }
    }
    tmp.clear();
    tmp.shrink_to_fit();

    if (streamed_units > 0 && options.tier == OffloadTier::cpu) {
        // One pinned buffer: | own slice of unit a | pad to 4096 | own slice of unit b | ...
        m.slices = backend.alloc(std::max<size_t>(own_total, 1), MemKind::pinned_host, "weight slices");
        uint8_t * base = static_cast<uint8_t *>(m.slices.data());
        for (size_t i = 0; i < plan.units.size(); ++i)
            if (plan.units[i].streamed) copy_slice(plan.units[i], rank, base + m.units[i].slice_offset);
        m.mem.slices = own_total;
    } else if (streamed_units > 0 && options.tier == OffloadTier::nvme) {
        std::error_code ec;
        std::filesystem::create_directories(options.nvme_path, ec);
        ZT_CHECK(!ec, "cannot create offload_param.nvme_path {}: {}: point it at a writable folder on a local NVMe "
                 "disk", options.nvme_path, ec.message());
        m.file_path = (std::filesystem::path(options.nvme_path) / fmt::format("ztinfer-rank{}.weights", rank)).string();
        NvmeFileOptions fo;
        fo.nvme_path = options.nvme_path;
        fo.block_size = options.aio_block_size;
        fo.queue_depth = options.aio_queue_depth;
        fo.max_retries = options.max_retries;
        m.file = std::make_unique<NvmeFile>(m.file_path, fo);
        m.file->reserve(own_total);
        {
            // One unit at a time through one reusable aligned temporary: peak memory stays ~one slice.
            AlignedHost w(max_slice);
            for (size_t i = 0; i < plan.units.size(); ++i) {
                const PartitionUnit & u = plan.units[i];
                if (!u.streamed) continue;
                copy_slice(u, rank, w.p);
                m.file->write(m.units[i].slice_offset, w.p, u.slice_bytes);
            }
        }
        m.file->finish_writes();
        const size_t stage_bytes = round_up(max_slice, kSliceAlign);   // reads cover the 4096 padding
        for (int k = 0; k < options.buffer_count; ++k) {
            uint8_t * p = nullptr;
            m.staging.push_back(m.alloc_aligned_pinned(stage_bytes, &p));
            m.staging_ptr.push_back(p);
            m.mem.staging += m.staging.back().bytes();
        }
    }

    const size_t streamed_bytes = plan.streamed_bytes();
    const char * tier = offload_tier_name(options.tier);
    if (options.tier == OffloadTier::nvme && m.file) {
        spdlog::info("weights: tier {}: {} streamed in {} units ({} own slices in {}, read with {}{}), {} resident; "
                     "staging {} x {}", tier, mib(streamed_bytes), streamed_units, mib(own_total), m.file_path,
                     m.file->uses_uring() ? "io_uring" : "pread", m.file->uses_direct() ? " + O_DIRECT" : " (buffered)",
                     mib(m.mem.resident), options.buffer_count, mib(m.staging.empty() ? 0 : m.staging[0].bytes()));
    } else {
        spdlog::info("weights: tier {}: {} streamed in {} units ({} own slices), {} resident", tier,
                     mib(streamed_bytes), streamed_units, mib(m.mem.slices), mib(m.mem.resident));
    }
}

WeightStore::~WeightStore() {
    if (!impl_) return;
    // Queued NVMe reads use the file and the staging ring: let them finish before both go away.
    if (impl_->fetch_stream) {
        try {
            impl_->backend.synchronize(impl_->fetch_stream);
        } catch (const std::exception & e) {
            spdlog::debug("weight store: a fetch failed before shutdown: {}", e.what());
        }
    }
    impl_->staging.clear();
    impl_->file.reset();   // closes and removes the file
}

const void * WeightStore::resident_flat(int unit) const {
    ZT_CHECK(unit >= 0 && size_t(unit) < impl_->units.size(), "weight store: no unit #{}", unit);
    const Impl::Unit & u = impl_->units[size_t(unit)];
    return u.streamed ? nullptr : u.flat.data();
}

const void * WeightStore::persistent(int unit) const {
    ZT_CHECK(unit >= 0 && size_t(unit) < impl_->units.size(), "weight store: no unit #{}", unit);
    return impl_->units[size_t(unit)].persistent.data();
}

void WeightStore::fetch_slice(int unit, void * dst, Stream * s) {
    Impl & m = *impl_;
    ZT_CHECK(unit >= 0 && size_t(unit) < m.units.size(), "weight store: no unit #{}", unit);
    const Impl::Unit & u = m.units[size_t(unit)];
    ZT_CHECK(u.streamed, "weight store: fetch_slice of {}, which is resident (not streamed)", u.name);
    if (u.slice_bytes == 0) return;
    if (m.opt.tier == OffloadTier::cpu) {
        m.backend.copy_async(dst, static_cast<const uint8_t *>(m.slices.data()) + u.slice_offset, u.slice_bytes, s);
        return;
    }
    ZT_CHECK(m.opt.tier == OffloadTier::nvme && m.file, "weight store: tier {} has no slice of {}",
             offload_tier_name(m.opt.tier), u.name);
    uint8_t * stage = nullptr;
    {
        std::lock_guard<std::mutex> lock(m.mu);
        // The ring is reused in stream order: staging[k] is overwritten only after the copy that read it ran.
        ZT_CHECK(m.fetch_stream == nullptr || m.fetch_stream == s, "weight store: NVMe slices must all be fetched "
                 "on one stream (the staging ring is reused in that stream's order); got a second stream");
        m.fetch_stream = s;
        stage = m.staging_ptr[m.next_staging];
        m.next_staging = (m.next_staging + 1) % m.staging_ptr.size();
    }
    NvmeFile * file = m.file.get();
    const size_t off = u.slice_offset, bytes = u.slice_bytes;
    m.backend.host_task(s, [file, off, stage, bytes] { file->read(off, stage, bytes); });
    m.backend.copy_async(dst, stage, bytes, s);
}

WeightMemory WeightStore::memory() const { return impl_->mem; }
OffloadTier WeightStore::tier() const { return impl_->opt.tier; }
const std::string & WeightStore::nvme_file() const { return impl_->file_path; }

}  // namespace zt
