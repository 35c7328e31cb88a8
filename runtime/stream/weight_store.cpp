// WeightStore (see weight_store.h): at start-up copies this rank's bytes out of the checkpoint into the offload
// tier ("none": whole units in backend memory; "cpu": own slices in one pinned host buffer; "nvme": own slices in
// an NVMe file with a header page and a tag per slice (slice_header.h), reused from an earlier job when it
// matches (slice_file_reuse.h) or else written (nameless, then published under its name unless nvme_reuse is
// off), plus a ring of pinned staging buffers), and queues slice fetches on a stream (NVMe: read the slice's
// extent, check its tag, copy).
#include "runtime/stream/weight_store.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <random>

#include <spdlog/spdlog.h>

#include "runtime/base/error.h"
#include "runtime/stream/nvme_file.h"
#include "runtime/stream/slice_file_reuse.h"
#include "runtime/stream/slice_header.h"

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
        size_t slice_offset = 0;     // offset of this rank's slice in the pinned buffer ("cpu") or of its extent in
                                     // the file ("nvme")
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
    std::string file_path;           // its name, or its label when it has none
    bool reused = false;             // "nvme": the file is an earlier job's (nothing was written)
    SliceFileHeader header;          // "nvme": what page 0 of the file says
    std::vector<Buffer> staging;     // "nvme": the ring (each holds max slice rounded to 4096, 4096-aligned inside)
    std::vector<uint8_t *> staging_ptr;
    size_t next_staging = 0;
    Stream * fetch_stream = nullptr; // "nvme": the one stream the ring is reused in order on
    std::mutex mu;

    Impl(Backend & b, int r, const WeightStoreOptions & o) : backend(b), rank(r), opt(o) {}

    // The tag that ends unit u's extent in the NVMe file.
    SliceTag tag_of(size_t u) const {
        SliceTag t;
        t.nonce = header.nonce;
        t.checkpoint = slice_checkpoint_hash(header.checkpoint);
        t.unit = uint32_t(u);
        t.rank = uint32_t(rank);
        t.offset = units[u].slice_offset;
        t.bytes = units[u].slice_bytes;
        return t;
    }

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

    // "nvme": this rank's file: an earlier job's when it can be reused (nvme_reuse), else a new one written from
    // the checkpoint (header, then each streamed slice + padding + tag, one unit at a time through one aligned
    // temporary, so peak memory stays ~one extent) and, with nvme_reuse, published under the slot's name.
    void open_nvme(const PartitionPlan & plan, size_t own_total, size_t max_extent, size_t streamed_units);

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

void WeightStore::Impl::open_nvme(const PartitionPlan & plan, size_t own_total, size_t max_extent,
                                  size_t streamed_units) {
    std::error_code ec;
    std::filesystem::create_directories(opt.nvme_path, ec);
    ZT_CHECK(!ec, "cannot create offload_param.nvme_path {}: {}: point it at a writable folder on a local NVMe disk",
             opt.nvme_path, ec.message());
    const std::string label =
        (std::filesystem::path(opt.nvme_path) / fmt::format("ztinfer-rank{}.weights", rank)).string();
    struct stat st{};
    if (::lstat(label.c_str(), &st) == 0)   // older ztinfer versions wrote (and left) a file under this name
        spdlog::warn("{} is {} that this ztinfer never reads or writes (older versions kept rank {}'s weights there "
                     "and left the file behind when killed): delete it once no job of an older ztinfer uses {}", label,
                     S_ISLNK(st.st_mode) ? "a symbolic link" : "a file of " + mib(size_t(st.st_size)), rank,
                     opt.nvme_path);
    NvmeFileOptions fo;
    fo.nvme_path = opt.nvme_path;
    fo.block_size = opt.aio_block_size;
    fo.queue_depth = opt.aio_queue_depth;
    fo.max_retries = opt.max_retries;
    header.checkpoint = opt.checkpoint;
    header.rank = uint32_t(rank);
    header.world = uint32_t(plan.world);
    header.units = uint32_t(streamed_units);
    header.data_bytes = own_total - kSliceHeaderBytes;
    std::vector<uint64_t> offsets(units.size(), 0);
    for (size_t i = 0; i < units.size(); ++i)
        if (units[i].streamed) offsets[i] = units[i].slice_offset;
    header.layout = slice_layout_identity(plan, rank, offsets);

    std::string final_path;
    if (opt.nvme_reuse) {
        ZT_CHECK(!opt.model.empty(), "weight store: nvme_reuse needs the model path (it names the NVMe slice file)");
        final_path = slice_file_path(opt.nvme_path, opt.model, rank, plan.world);
        std::vector<ExpectedSlice> expect;
        for (size_t i = 0; i < units.size(); ++i)
            if (units[i].streamed) expect.push_back({tag_of(i), units[i].name});
        ReusableFile r = open_reusable_slice_file(final_path, header, own_total, expect);
        if (r.fd >= 0) {
            header.nonce = r.header.nonce;
            file = NvmeFile::adopt(r.fd, final_path, own_total, fo);
            file_path = file->path();
            // The header once more through the read path (O_DIRECT): reads of this file work.
            AlignedHost page(kSliceHeaderBytes);
            file->read(0, page.p, kSliceHeaderBytes);
            check_slice_header(page.p, header, file_path);
            reused = true;
            spdlog::info("NVMe slice file: reused {} ({}, {} slices; header and slice tags match): no slice read from "
                         "the checkpoint", final_path, mib(own_total), streamed_units);
        } else if (r.missing) {
            spdlog::info("NVMe slice file: writing {} ({}): {}", final_path, mib(own_total), r.why);
        } else {
            const bool freed = remove_unused_slice_file(final_path);   // room for the new one
            spdlog::warn("NVMe slice file: rewriting {} ({}): not reusable: {}{}", final_path, mib(own_total), r.why,
                         freed ? " (the old file is removed first: no job uses it)" : "");
        }
        log_unused_slice_files(opt.nvme_path, slice_file_prefix(opt.model), plan.world);
        if (reused) return;
    }

    const auto t0 = std::chrono::steady_clock::now();
    fo.publishable = opt.nvme_reuse;
    file = std::make_unique<NvmeFile>(opt.nvme_reuse ? final_path : label, fo);
    file_path = file->path();
    header.nonce = (uint64_t(std::random_device{}()) << 32) ^ uint64_t(std::random_device{}());
    file->reserve(own_total);
    {
        // One unit at a time through one reusable aligned temporary: peak memory stays ~one slice.
        AlignedHost w(max_extent);
        uint8_t * p = static_cast<uint8_t *>(w.p);
        encode_slice_header(header, p);
        file->write(0, p, kSliceHeaderBytes);
        for (size_t i = 0; i < plan.units.size(); ++i) {
            const PartitionUnit & u = plan.units[i];
            if (!u.streamed) continue;
            const size_t extent = slice_extent(u.slice_bytes);
            copy_slice(u, rank, p);
            std::memset(p + u.slice_bytes, 0, extent - u.slice_bytes);
            encode_slice_tag(tag_of(i), p + extent - kSliceTagBytes);
            file->write(units[i].slice_offset, p, extent);
        }
        file->finish_writes();
        // Read the header back through the read path (O_DIRECT): the file is this job's and reads work.
        file->read(0, p, kSliceHeaderBytes);
        check_slice_header(p, header, file_path);
    }
    if (!opt.nvme_reuse) return;
    const std::string err = file->publish(final_path);
    file_path = file->path();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (err.empty())
        spdlog::info("NVMe slice file: wrote {} ({}) in {:.1f} s; a rerun of this job reuses it", final_path,
                     mib(own_total), secs);
    else
        spdlog::warn("NVMe slice file: wrote {} in {:.1f} s but {}: this job reads it without a name and the next "
                     "start writes it again", file_path, secs, err);
}

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
    const bool nvme = options.tier == OffloadTier::nvme;
    // own_total: the pinned buffer ("cpu") or the file ("nvme": header page + one extent per slice)
    size_t own_total = nvme ? kSliceHeaderBytes : 0, max_extent = kSliceHeaderBytes, streamed_units = 0;
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
            const size_t extent = nvme ? slice_extent(u.slice_bytes) : round_up(u.slice_bytes, kSliceAlign);
            own_total += extent;
            max_extent = std::max(max_extent, extent);
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
        m.open_nvme(plan, own_total, max_extent, streamed_units);
        const size_t stage_bytes = max_extent;   // a read covers the slice's whole extent (padding and tag)
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
        spdlog::info("weights: tier {}: {} streamed in {} units ({} own slices in {} ({}), read with {}{}), {} "
                     "resident; staging {} x {}", tier, mib(streamed_bytes), streamed_units, mib(own_total), m.file_path,
                     m.reused ? "reused" : "written now",
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
    impl_->file.reset();   // closes the file (a nameless one is freed; a named one stays for the next job)
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
    const size_t off = u.slice_offset, bytes = u.slice_bytes, extent = slice_extent(bytes);
    m.backend.host_task(s, [file, off, stage, extent, tag = m.tag_of(size_t(unit)), label = m.file_path,
                            name = u.name] {
        file->read(off, stage, extent);
        check_slice_tag(stage + extent - kSliceTagBytes, tag, label, name);   // this job's slice, or an error
    });
    m.backend.copy_async(dst, stage, bytes, s);
}

WeightMemory WeightStore::memory() const { return impl_->mem; }
OffloadTier WeightStore::tier() const { return impl_->opt.tier; }
const std::string & WeightStore::nvme_file() const { return impl_->file_path; }
bool WeightStore::nvme_file_reused() const { return impl_->reused; }
uint64_t WeightStore::nvme_file_bytes() const { return impl_->file ? impl_->file->size() : 0; }

}  // namespace zt
