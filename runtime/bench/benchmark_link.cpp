// The link tables of `ztinfer bench` (see benchmark.h): 1. h2d, pinned host -> device copies on the copy stream;
// 2. nvme, NvmeFile reads of a test file; 3. allgather on the comm stream. Each sweeps a size range and verifies
// the bytes it moved against the pattern written.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/bench/benchmark_impl.h"
#include "runtime/stream/nvme_file.h"

namespace zt::bench_detail {

// --- 1. pinned host -> device copies -------------------------------------------------------------------------

void table_h2d(Bench & b) {
    b.say("#\n# h2d: pinned host -> device copies on the copy stream, {} warm-up, then the fastest of {} rounds of {} "
          "iterations; time of one copy\n", b.opt.warmup, kCopyRounds, b.opt.iters);
    b.say("# {:>12}  {:>12}  {:>9}  {:>7}\n", "size(B)", "time(us)", "GB/s", "#wrong");
    Buffer src = b.be.alloc(b.max_bytes, MemKind::pinned_host, "bench h2d source");
    Buffer dst = b.be.alloc(b.max_bytes, MemKind::device, "bench h2d destination");
    Stream * s = b.be.stream(StreamRole::copy);
    json rows = json::array();
    for (size_t bytes : size_sweep(b.min_bytes, b.max_bytes)) {
        const uint64_t seed = bytes;   // a new pattern per size: data left over from another size fails the check
        fill_pattern(src.data(), bytes, 0, seed);
        b.comm.barrier();
        RowResult r;
        r.seconds = time_copies(b.be, dst.data(), src.data(), bytes, s, b.opt.warmup, b.opt.iters);
        std::memset(src.data(), 0, bytes);   // verify: copy the device buffer back over the cleared source
        b.be.copy_async(src.data(), dst.data(), bytes, s);
        b.be.synchronize(s);
        r.wrong = count_wrong(src.data(), bytes, 0, seed);
        r = across_ranks(b.comm, r);
        b.row_done(r);
        const double gbps = double(bytes) / r.seconds / 1e9;
        b.h2d_gbps.emplace_back(bytes, gbps);
        b.say("  {:>12}  {:>12.2f}  {:>9.2f}  {:>7}\n", bytes, r.seconds * 1e6, gbps, r.wrong);
        rows.push_back({{"bytes", bytes}, {"time_us", r.seconds * 1e6}, {"gbps", gbps}, {"wrong", r.wrong}});
    }
    b.figures["h2d"] = {{"iters", b.opt.iters}, {"rounds", kCopyRounds}, {"warmup", b.opt.warmup}, {"rows", rows}};
}

// --- 2. NVMe reads ---------------------------------------------------------------------------------------------

void table_nvme(Bench & b) {
    if (b.opt.nvme_path.empty()) {
        b.say("#\n# nvme: skipped (no --nvme-path: give a folder on the NVMe drive to measure its read rate)\n");
        b.figures["nvme"] = {{"skipped", "no --nvme-path"}};
        return;
    }
    namespace fs = std::filesystem;
    ZT_CHECK(fs::is_directory(b.opt.nvme_path), "--nvme-path {} is not a folder: create it on the NVMe drive, or fix "
             "the path", b.opt.nvme_path);
    NvmeFileOptions no;
    no.nvme_path = b.opt.nvme_path;
    no.block_size = b.block_size;
    no.queue_depth = b.opt.aio_queue_depth;
    const size_t file_bytes = round_up(b.nvme_bytes, NvmeFile::kAlign);
    const size_t max_read = std::min(file_bytes, round_up(std::max(b.max_bytes, b.block_size), NvmeFile::kAlign));
    const std::string path = (fs::path(b.opt.nvme_path) / fmt::format("ztinfer-bench-rank{}.nvme", b.comm.rank())).string();
    const uint64_t seed = 0x5eed;
    NvmeFile file(path, no);   // removed again when it goes out of scope
    file.reserve(file_bytes);
    Buffer buf = b.be.alloc(max_read, MemKind::pinned_host, "bench NVMe staging");
    for (size_t off = 0; off < file_bytes; off += max_read) {
        const size_t n = std::min(max_read, file_bytes - off);
        fill_pattern(buf.data(), n, off / 4, seed);
        file.write(off, buf.data(), n);
    }
    file.finish_writes();
    b.say("#\n# nvme: reads of {} ({} B per rank) into pinned memory, block_size {} B, queue_depth {}, {}, {}; each "
          "row reads the whole file once in reads of `size`; time of one read\n", path, file_bytes, no.block_size,
          no.queue_depth, file.uses_uring() ? "io_uring" : "pread loop (no io_uring)",
          file.uses_direct() ? "O_DIRECT" : "buffered (page cache: not the drive's rate)");
    b.say("# {:>12}  {:>12}  {:>9}  {:>7}\n", "size(B)", "time(us)", "GB/s", "#wrong");
    std::vector<size_t> sizes;
    for (size_t s = round_up(b.block_size, NvmeFile::kAlign); s < max_read; s *= 4) sizes.push_back(s);
    sizes.push_back(max_read);
    json rows = json::array();
    for (size_t size : sizes) {
        b.comm.barrier();
        RowResult r;
        size_t reads = 0;
        for (size_t off = 0; off < file_bytes; off += size, ++reads) {
            const size_t n = std::min(size, file_bytes - off);
            std::memset(buf.data(), 0, n);
            const auto t0 = Clock::now();
            file.read(off, buf.data(), n);
            r.seconds += seconds_since(t0);
            r.wrong += count_wrong(buf.data(), n, off / 4, seed);
        }
        r = across_ranks(b.comm, r);
        b.row_done(r);
        const double gbps = double(file_bytes) / r.seconds / 1e9;
        b.say("  {:>12}  {:>12.2f}  {:>9.2f}  {:>7}\n", size, r.seconds / double(reads) * 1e6, gbps, r.wrong);
        rows.push_back({{"bytes", size}, {"time_us", r.seconds / double(reads) * 1e6}, {"gbps", gbps}, {"wrong", r.wrong}});
    }
    b.figures["nvme"] = {{"path", b.opt.nvme_path}, {"file_bytes", file_bytes}, {"block_size", no.block_size},
                         {"queue_depth", no.queue_depth}, {"io_uring", file.uses_uring()},
                         {"o_direct", file.uses_direct()}, {"rows", rows}};
}

// --- 3. all-gather ---------------------------------------------------------------------------------------------

void table_allgather(Bench & b) {
    const int n = b.comm.world_size(), rank = b.comm.rank();
    struct Size { size_t total, slice; };
    std::vector<Size> sizes;
    for (size_t bytes : size_sweep(b.min_bytes, b.max_bytes)) {
        const size_t slice = std::max<size_t>(4, bytes / size_t(n) / 4 * 4);
        sizes.push_back({slice * size_t(n), slice});
    }
    if (sizes.empty()) return;
    b.say("#\n# allgather: {} rank(s) over {}, in place on the comm stream, {} iterations after {} warm-up; size = "
          "the gathered bytes, time of one all-gather; busbw = algbw * (n-1)/n\n", n, b.comm.name(), b.opt.iters,
          b.opt.warmup);
    if (n == 1) b.say("# (one rank: the all-gather moves nothing, so algbw is meaningless and busbw is 0)\n");
    b.say("# {:>12}  {:>12}  {:>12}  {:>9}  {:>9}  {:>7}\n", "size(B)", "slice(B)", "time(us)", "algbw", "busbw", "#wrong");
    b.say("# {:>12}  {:>12}  {:>12}  {:>9}  {:>9}  {:>7}\n", "", "", "", "(GB/s)", "(GB/s)", "");
    const size_t max_total = sizes.back().total, max_slice = sizes.back().slice;
    Buffer full = b.be.alloc(max_total, MemKind::device, "bench all-gather buffer");
    Buffer mine = b.be.alloc(max_slice, MemKind::pinned_host, "bench all-gather slice");
    Buffer check = b.be.alloc(max_total, MemKind::pinned_host, "bench all-gather check");
    Stream * s = b.be.stream(StreamRole::comm);
    json rows = json::array();
    for (const Size & sz : sizes) {
        auto seed = [&](int r) { return uint64_t(sz.total) * 1009 + uint64_t(r); };   // per size and rank
        char * at = static_cast<char *>(full.data()) + size_t(rank) * sz.slice;
        fill_pattern(mine.data(), sz.slice, 0, seed(rank));
        b.be.copy_async(at, mine.data(), sz.slice, s);
        for (int i = 0; i < b.opt.warmup; ++i) b.comm.all_gather(at, full.data(), sz.slice, s);
        b.be.synchronize(s);
        b.comm.barrier();
        RowResult r;
        const auto t0 = Clock::now();
        for (int i = 0; i < b.opt.iters; ++i) b.comm.all_gather(at, full.data(), sz.slice, s);
        b.be.synchronize(s);
        r.seconds = seconds_since(t0) / b.opt.iters;
        b.be.copy_async(check.data(), full.data(), sz.total, s);   // verify every rank's slice
        b.be.synchronize(s);
        for (int q = 0; q < n; ++q)
            r.wrong += count_wrong(static_cast<char *>(check.data()) + size_t(q) * sz.slice, sz.slice, 0, seed(q));
        r = across_ranks(b.comm, r);
        b.row_done(r);
        const double algbw = double(sz.total) / r.seconds / 1e9, busbw = algbw * double(n - 1) / double(n);
        b.say("  {:>12}  {:>12}  {:>12.2f}  {:>9.2f}  {:>9.2f}  {:>7}\n", sz.total, sz.slice, r.seconds * 1e6, algbw,
              busbw, r.wrong);
        rows.push_back({{"bytes", sz.total}, {"slice_bytes", sz.slice}, {"time_us", r.seconds * 1e6},
                        {"algbw_gbps", algbw}, {"busbw_gbps", busbw}, {"wrong", r.wrong}});
    }
    b.figures["allgather"] = {{"ranks", n}, {"communicator", b.comm.name()}, {"iters", b.opt.iters}, {"rows", rows}};
}

}  // namespace zt::bench_detail
