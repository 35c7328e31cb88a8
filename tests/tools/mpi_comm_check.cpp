// mpi_comm_check: run under `mpirun -np N`; checks the MPI communicator on the CPU backend (all_gather out of
// place and in place, on the comm stream and with s == nullptr; all_reduce_max; gather_strings; barrier) and
// prints "mpi_comm_check: OK rank r of N" (exit 0), or what was wrong (exit 1).
//   --chunk-bytes B   sets ZT_MPI_CHUNK_BYTES=B first, so the > INT_MAX (chunked) paths run on small data
//   --big             only an in-place all_gather of INT_MAX + 4097 bytes per rank (needs ~4.3 GB per rank x N)
//   --hang-rank K     after a barrier, rank K hangs before the next collective (--hang-how sleep, the default)
//                     or SIGKILLs itself (--hang-how kill); the others must be taken down by the watchdog (or
//                     mpirun): the job exits non-zero. --timeout S is the collective timeout (default 300).
#include <algorithm>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/world.h"
#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/log.h"

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

void check_all_gather(zt::Communicator & comm, zt::Backend & be, size_t bytes, bool in_place, bool on_stream) {
    const int r = comm.rank(), n = comm.world_size();
    std::vector<unsigned char> full(bytes * size_t(n), 0xEE), own(bytes);
    for (size_t i = 0; i < bytes; ++i) own[i] = pattern(r, i);
    unsigned char * slice = own.data();
    if (in_place) {
        slice = full.data() + size_t(r) * bytes;
        std::memcpy(slice, own.data(), bytes);
    }
    zt::Stream * s = on_stream ? be.stream(zt::StreamRole::comm) : nullptr;
    comm.all_gather(slice, full.data(), bytes, s);
    if (s) {
        zt::Event e = be.record(s);
        be.wait(be.stream(zt::StreamRole::compute), e);
        be.synchronize(s);
    }
    size_t bad = 0, first_bad = 0;
    for (int q = 0; q < n; ++q)
        for (size_t i = 0; i < bytes; ++i)
            if (full[size_t(q) * bytes + i] != pattern(q, i) && bad++ == 0) first_bad = size_t(q) * bytes + i;
    CHECK(bad == 0, "all_gather of {} bytes ({}, {}): {} wrong bytes, first at offset {} (slice of rank {})", bytes,
          in_place ? "in place" : "out of place", on_stream ? "on the comm stream" : "s == nullptr", bad, first_bad,
          first_bad / bytes);
    if (!in_place) {
        bool intact = true;
        for (size_t i = 0; i < bytes; ++i) intact &= own[i] == pattern(r, i);
        CHECK(intact, "all_gather changed its input slice");
    }
}

void check_all_reduce(zt::Communicator & comm, zt::Backend & be, size_t n_flags, bool on_stream) {
    const int r = comm.rank(), n = comm.world_size();
    auto value = [](int rank, size_t i) { return int((rank * 7 + int(i) * 3) % 11) - 5 + (rank == int(i) ? 100 : 0); };
    std::vector<int> flags(n_flags);
    for (size_t i = 0; i < n_flags; ++i) flags[i] = value(r, i);
    zt::Stream * s = on_stream ? be.stream(zt::StreamRole::comm) : nullptr;
    comm.all_reduce_max(flags.data(), n_flags, s);
    if (s) be.synchronize(s);
    for (size_t i = 0; i < n_flags; ++i) {
        int want = value(0, i);
        for (int q = 1; q < n; ++q) want = std::max(want, value(q, i));
        CHECK(flags[i] == want, "all_reduce_max ({}) flag {}: got {}, want {}", on_stream ? "stream" : "now", i,
              flags[i], want);
    }
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
    long chunk_bytes = 0;
    bool big = false;
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
        else if (a == "--chunk-bytes") {
            chunk_bytes = std::atol(next().c_str());
            setenv("ZT_MPI_CHUNK_BYTES", std::to_string(chunk_bytes).c_str(), 1);
        }
        else {
            std::fprintf(stderr, "usage: mpi_comm_check [--big] [--chunk-bytes B] [--hang-rank K [--hang-how sleep|kill]] "
                                 "[--timeout S]\n");
            return 2;
        }
    }
    try {
        zt::WorldInfo world = zt::discover_world();
        zt::set_error_rank(world.rank);
        zt::log_init(world.rank);
        g_rank = world.rank;
        auto be = zt::make_cpu_backend(1);
        zt::MpiOptions opt;
        opt.collective_timeout_s = timeout;
        auto comm = zt::make_mpi_communicator(*be, opt);
        const int r = comm->rank(), n = comm->world_size();
        g_rank = r;
        CHECK(comm->name() == "mpi", "name() is '{}'", comm->name());
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
            std::vector<char> slice(1024, 1), full(1024 * size_t(n));
            comm->all_gather(slice.data(), full.data(), slice.size(), nullptr);
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
