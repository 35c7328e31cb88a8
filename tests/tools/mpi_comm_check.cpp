// mpi_comm_check: run under `mpirun -np N`; checks a communicator (all_gather out of place and in place, on the
// comm stream with backend (device) memory and with s == nullptr on host memory; several collectives queued on
// the stream at once; all_reduce_max; broadcast; gather_strings; barrier) and prints
// "mpi_comm_check: OK rank r of N" (exit 0), or what was wrong (exit 1).
//   --backend cpu|cuda  the backend (default cpu); cuda without a usable GPU prints "mpi_comm_check: SKIP ..."
//                       and exits 0
//   --comm mpi|nccl     the communicator (default mpi); nccl runs over the MPI one (one GPU per rank)
//   --staging         sets ZT_MPI_FORCE_STAGING=1 first: the MPI communicator stages stream collectives through
//                     pinned host memory even on the CPU backend (checked: pinned memory was allocated)
//   --race-delay-us U the CPU backend's race-hunting mode: each copy/comm task first sleeps 0..U µs (seeded)
//   --chunk-bytes B   sets ZT_MPI_CHUNK_BYTES=B (and ZT_NCCL_CHUNK_BYTES=B) first, so the > INT_MAX (chunked)
//                     paths run on small data
//   --big             only an in-place all_gather of INT_MAX + 4097 bytes per rank (needs ~4.3 GB per rank x N)
//   --hang-rank K     after a barrier, rank K hangs before the next collective (--hang-how sleep, the default)
//                     or SIGKILLs itself (--hang-how kill); the others must be taken down by the watchdog (or
//                     mpirun): the job exits non-zero. --timeout S is the collective timeout (default 300).
#include <algorithm>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/world.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "runtime/base/log.h"

namespace {

int g_failures = 0;
int g_rank = -1;

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            std::fprintf(stderr, "mpi_comm_check: rank %d: FAILED %s:%d: %s\n", g_rank, __FILE__, __LINE__, \
                         fmt::format(__VA_ARGS__).c_str());                                      \
            ++g_failures;                                                                         \
        }                                                                                         \
    } while (0)

unsigned char pattern(int rank, size_t i) { return static_cast<unsigned char>((rank * 131 + i * 7 + (i >> 8)) & 0xff); }

// Host <-> backend memory (device memory on CUDA), through the compute stream.
void upload(zt::Backend & be, void * dst, const void * src, size_t bytes) {
    if (bytes == 0) return;
    zt::Stream * s = be.stream(zt::StreamRole::compute);
    be.copy_async(dst, src, bytes, s);
    be.synchronize(s);
}
void download(zt::Backend & be, void * dst, const void * src, size_t bytes) { upload(be, dst, src, bytes); }

// The buffers of one all_gather: host vectors for s == nullptr, backend (device) memory for a stream.
struct GatherCase {
    size_t bytes = 0;
    bool in_place = false, on_stream = false;
    std::vector<unsigned char> host_full, host_own;
    zt::Buffer dev_full, dev_own;
    unsigned char * full = nullptr;
    const unsigned char * slice = nullptr;

    GatherCase(zt::Backend & be, int r, int n, size_t b, bool ip, bool os) : bytes(b), in_place(ip), on_stream(os) {
        host_full.assign(bytes * size_t(n), 0xEE);
        host_own.resize(bytes);
        for (size_t i = 0; i < bytes; ++i) host_own[i] = pattern(r, i);
        if (in_place) std::memcpy(host_full.data() + size_t(r) * bytes, host_own.data(), bytes);
        if (on_stream) {
            dev_full = be.alloc(host_full.size(), zt::MemKind::device, "mpi_comm_check");
            dev_own = be.alloc(bytes, zt::MemKind::device, "mpi_comm_check");
            upload(be, dev_full.data(), host_full.data(), host_full.size());
            upload(be, dev_own.data(), host_own.data(), bytes);
            full = static_cast<unsigned char *>(dev_full.data());
            slice = in_place ? full + size_t(r) * bytes : static_cast<const unsigned char *>(dev_own.data());
        } else {
            full = host_full.data();
            slice = in_place ? full + size_t(r) * bytes : host_own.data();
        }
    }

    // After the collective (and a synchronize of its stream): every rank's slice in place, the input untouched.
    void verify(zt::Backend & be, int r, int n, const char * how) {
        if (on_stream) {   // the host copies are not needed any more: read the results back into them
            download(be, host_full.data(), dev_full.data(), host_full.size());
            download(be, host_own.data(), dev_own.data(), bytes);
        }
        const std::vector<unsigned char> & got = host_full, & own = host_own;
        size_t bad = 0, first_bad = 0;
        for (int q = 0; q < n; ++q)
            for (size_t i = 0; i < bytes; ++i)
                if (got[size_t(q) * bytes + i] != pattern(q, i) && bad++ == 0) first_bad = size_t(q) * bytes + i;
        CHECK(bad == 0, "all_gather of {} bytes ({}, {}{}): {} wrong bytes, first at offset {} (slice of rank {})",
              bytes, in_place ? "in place" : "out of place", on_stream ? "on the comm stream" : "s == nullptr", how,
              bad, first_bad, first_bad / bytes);
        if (!in_place) {
            bool intact = true;
            for (size_t i = 0; i < bytes; ++i) intact &= own[i] == pattern(r, i);
            CHECK(intact, "all_gather changed its input slice");
        }
    }
};

void check_all_gather(zt::Communicator & comm, zt::Backend & be, size_t bytes, bool in_place, bool on_stream) {
    const int r = comm.rank(), n = comm.world_size();
    GatherCase c(be, r, n, bytes, in_place, on_stream);
    zt::Stream * s = on_stream ? be.stream(zt::StreamRole::comm) : nullptr;
    comm.all_gather(c.slice, c.full, bytes, s);
    if (s) {
        zt::Event e = be.record(s);
        be.wait(be.stream(zt::StreamRole::compute), e);
        be.synchronize(s);
    }
    c.verify(be, r, n, "");
}

int flag_value(int rank, size_t i) { return int((rank * 7 + int(i) * 3) % 11) - 5 + (rank == int(i) ? 100 : 0); }

void verify_flags(const std::vector<int> & flags, int n, const char * how) {
    for (size_t i = 0; i < flags.size(); ++i) {
        int want = flag_value(0, i);
        for (int q = 1; q < n; ++q) want = std::max(want, flag_value(q, i));
        CHECK(flags[i] == want, "all_reduce_max ({}) of {} flags, flag {}: got {}, want {}", how, flags.size(), i,
              flags[i], want);
    }
}

void check_all_reduce(zt::Communicator & comm, zt::Backend & be, size_t n_flags, bool on_stream) {
    const int r = comm.rank(), n = comm.world_size();
    std::vector<int> flags(n_flags);
    for (size_t i = 0; i < n_flags; ++i) flags[i] = flag_value(r, i);
    if (!on_stream) {
        comm.all_reduce_max(flags.data(), n_flags, nullptr);
    } else {   // backend (device) memory on the comm stream
        zt::Buffer dev = be.alloc(n_flags * sizeof(int), zt::MemKind::device, "mpi_comm_check");
        upload(be, dev.data(), flags.data(), n_flags * sizeof(int));
        zt::Stream * s = be.stream(zt::StreamRole::comm);
        comm.all_reduce_max(static_cast<int *>(dev.data()), n_flags, s);
        be.synchronize(s);
        download(be, flags.data(), dev.data(), n_flags * sizeof(int));
    }
    verify_flags(flags, n, on_stream ? "stream" : "now");
}

// Several collectives queued on the comm stream before anyone waits, in growing sizes (so a staging buffer grows
// while the earlier ones are still queued), then one synchronize.
void check_queued(zt::Communicator & comm, zt::Backend & be, size_t big) {
    const int r = comm.rank(), n = comm.world_size();
    zt::Stream * s = be.stream(zt::StreamRole::comm);
    std::vector<std::unique_ptr<GatherCase>> cases;
    const size_t n_flags = 5;
    std::vector<int> flags(n_flags);
    for (size_t i = 0; i < n_flags; ++i) flags[i] = flag_value(r, i);
    zt::Buffer dev_flags = be.alloc(n_flags * sizeof(int), zt::MemKind::device, "mpi_comm_check");
    upload(be, dev_flags.data(), flags.data(), n_flags * sizeof(int));
    size_t sizes[] = {3, 700, big, 11, big + 64};
    for (size_t k = 0; k < std::size(sizes); ++k)
        cases.push_back(std::make_unique<GatherCase>(be, r, n, sizes[k], k % 2 == 1, true));
    for (size_t k = 0; k < cases.size(); ++k) {
        comm.all_gather(cases[k]->slice, cases[k]->full, cases[k]->bytes, s);
        if (k == 1) comm.all_reduce_max(static_cast<int *>(dev_flags.data()), n_flags, s);
    }
    be.synchronize(s);
    for (auto & c : cases) c->verify(be, r, n, ", queued");
    download(be, flags.data(), dev_flags.data(), n_flags * sizeof(int));
    verify_flags(flags, n, "queued");
}

void check_broadcast(zt::Communicator & comm, size_t bytes, int root) {
    const int r = comm.rank();
    std::vector<unsigned char> buf(bytes);
    for (size_t i = 0; i < bytes; ++i) buf[i] = pattern(r + 1000, i);
    comm.broadcast(buf.data(), bytes, root);
    size_t bad = 0;
    for (size_t i = 0; i < bytes; ++i) bad += buf[i] != pattern(root + 1000, i);
    CHECK(bad == 0, "broadcast of {} bytes from rank {}: {} wrong bytes on rank {}", bytes, root, bad, r);
}

std::string string_of(int rank) {
    if (rank % 3 == 1) return "";   // empty strings must work too
    std::string s = fmt::format("rank {} says hello;", rank);
    for (int i = 0; i < rank * 500 + 3; ++i) s.push_back(char('a' + (i + rank) % 26));
    return s;
}

void check_gather_strings(zt::Communicator & comm) {
    const int r = comm.rank(), n = comm.world_size();
    auto got = comm.gather_strings(string_of(r));
    if (r == 0) {
        CHECK(int(got.size()) == n, "gather_strings on rank 0: got {} strings, want {}", got.size(), n);
        for (int q = 0; q < n && q < int(got.size()); ++q)
            CHECK(got[size_t(q)] == string_of(q), "gather_strings: string of rank {} is wrong ({} bytes, want {})", q,
                  got[size_t(q)].size(), string_of(q).size());
    } else {
        CHECK(got.empty(), "gather_strings on rank {}: got {} strings, want none", r, got.size());
    }
}

}  // namespace

int main(int argc, char ** argv) {
    int hang_rank = -1;
    double timeout = 300;
    std::string hang_how = "sleep";
    long chunk_bytes = 0, race_delay_us = 0;
    bool big = false, staging = false;
    std::string backend = "cpu", comm_kind = "mpi";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) { std::fprintf(stderr, "mpi_comm_check: %s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (a == "--hang-rank") hang_rank = std::atoi(next().c_str());
        else if (a == "--timeout") timeout = std::atof(next().c_str());
        else if (a == "--hang-how") hang_how = next();
        else if (a == "--big") big = true;
        else if (a == "--backend") backend = next();
        else if (a == "--race-delay-us") race_delay_us = std::atol(next().c_str());
        else if (a == "--comm") comm_kind = next();
        else if (a == "--staging") {
            staging = true;
            setenv("ZT_MPI_FORCE_STAGING", "1", 1);
        }
        else if (a == "--chunk-bytes") {
            chunk_bytes = std::atol(next().c_str());
            setenv("ZT_MPI_CHUNK_BYTES", std::to_string(chunk_bytes).c_str(), 1);
            setenv("ZT_NCCL_CHUNK_BYTES", std::to_string(chunk_bytes).c_str(), 1);
        }
        else {
            std::fprintf(stderr, "usage: mpi_comm_check [--backend cpu|cuda] [--comm mpi|nccl] [--staging] [--big] "
                                 "[--race-delay-us U] [--chunk-bytes B] [--hang-rank K [--hang-how sleep|kill]] [--timeout S]\n");
            return 2;
        }
    }
    if ((backend != "cpu" && backend != "cuda") || (comm_kind != "mpi" && comm_kind != "nccl")) {
        std::fprintf(stderr, "mpi_comm_check: --backend is cpu or cuda, --comm is mpi or nccl\n");
        return 2;
    }
    try {
        zt::WorldInfo world = zt::discover_world();
        zt::set_error_rank(world.rank);
        zt::log_init(world.rank);
        g_rank = world.rank;
        std::unique_ptr<zt::Backend> be;
        if (backend == "cuda") {
            std::string why = zt::cuda_unavailable_reason();
            if (!why.empty() || zt::cuda_visible_device_count() == 0) {
                std::printf("mpi_comm_check: SKIP rank %d: no usable GPU: %s\n", world.rank, why.c_str());
                return 0;
            }
            zt::CudaBackendOptions co;
            co.device = zt::device_for_local_rank(world.local_rank, zt::cuda_visible_device_count());
            be = zt::make_cuda_backend(co);
        } else {
            zt::CpuBackendOptions bo;
            bo.n_threads = 1;
            bo.race_delay_us = race_delay_us;
            bo.race_seed = uint64_t(world.rank) + 1;
            be = zt::make_cpu_backend(bo);
        }
        zt::MpiOptions opt;
        opt.collective_timeout_s = timeout;
        auto comm = zt::make_mpi_communicator(*be, opt);
        if (comm_kind == "nccl") comm = zt::make_nccl_communicator(*be, std::move(comm), opt);
        const int r = comm->rank(), n = comm->world_size();
        g_rank = r;
        CHECK(comm->name() == comm_kind, "name() is '{}', want '{}'", comm->name(), comm_kind);
        if (world.source != "none")
            CHECK(world.rank == r && world.size == n, "discover_world says rank {} of {} ({}), MPI says {} of {}",
                  world.rank, world.size, world.source, r, n);

        if (big) {   // a real slice over INT_MAX bytes, in place (2 ranks: about 4.3 GB per rank)
            check_all_gather(*comm, *be, size_t(INT_MAX) + 4097, true, true);
            if (g_failures) return 1;
            std::printf("mpi_comm_check: OK rank %d of %d (big)\n", r, n);
            return 0;
        }
        if (hang_rank >= 0) {
            comm->barrier();
            if (r == hang_rank) {
                std::fprintf(stderr, "mpi_comm_check: rank %d hangs now (%s)\n", r, hang_how.c_str());
                std::fflush(stderr);
                if (hang_how == "kill") raise(SIGKILL);
                for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
            }
            if (comm_kind == "nccl") {   // a collective queued on a stream: only the stream watchdog can see it hang
                GatherCase c(*be, r, n, 1024, false, true);
                zt::Stream * s = be->stream(zt::StreamRole::comm);
                comm->all_gather(c.slice, c.full, 1024, s);
                be->synchronize(s);
            } else {
                std::vector<char> slice(1024, 1), full(1024 * size_t(n));
                comm->all_gather(slice.data(), full.data(), slice.size(), nullptr);
            }
            comm->barrier();
            std::fprintf(stderr, "mpi_comm_check: rank %d: the collectives completed although rank %d hangs\n", r,
                         hang_rank);
            return 1;
        }

        // with --chunk-bytes C the big case is 2 C + 5 bytes: three chunks (a short last one) per slice
        size_t big = chunk_bytes > 0 ? 2 * size_t(chunk_bytes) + 5 : size_t(3 << 20) + 5;
        for (size_t bytes : {size_t(1), size_t(1000 + 7), big})
            for (bool in_place : {false, true})
                for (bool on_stream : {true, false}) check_all_gather(*comm, *be, bytes, in_place, on_stream);
        for (bool on_stream : {true, false}) {
            check_all_reduce(*comm, *be, 1, on_stream);
            check_all_reduce(*comm, *be, 67, on_stream);
        }
        check_queued(*comm, *be, big);
        for (int root : {0, n - 1, n / 2})
            for (size_t bytes : {size_t(0), size_t(1), size_t(4), size_t(1000 + 7), big}) check_broadcast(*comm, bytes, root);
        {   // a root outside the world is refused on every rank before any transfer
            int x = 0;
            bool threw = false;
            try {
                comm->broadcast(&x, sizeof x, n);
            } catch (const zt::Error & e) {
                threw = std::string(e.what()).find("broadcast of 4 B from rank") != std::string::npos;
            }
            CHECK(threw, "broadcast from rank {} (outside the world) did not throw the expected zt::Error", n);
        }
        if (staging) {
            zt::MemoryStats ms = be->memory_stats();
            CHECK(ms.pinned_in_use > 0, "--staging: no pinned host memory in use after the collectives on a stream, "
                  "so they were not staged (ZT_MPI_FORCE_STAGING ignored?)");
        }
        check_gather_strings(*comm);
        check_gather_strings(*comm);   // twice: per-step use
        comm->barrier();
        comm->all_gather(nullptr, nullptr, 0, nullptr);   // zero bytes: nothing to do
        comm->barrier();
        if (g_failures) {
            std::fprintf(stderr, "mpi_comm_check: rank %d of %d: %d check(s) FAILED\n", r, n, g_failures);
            return 1;
        }
        std::printf("mpi_comm_check: OK rank %d of %d\n", r, n);
        std::fflush(stdout);
        return 0;
    } catch (const std::exception & e) {
        std::fprintf(stderr, "mpi_comm_check: rank %d: error: %s\n", g_rank, e.what());
        return 1;
    }
}
