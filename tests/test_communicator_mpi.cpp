// Communicators: the local one in process; the MPI one by running tools/mpi_comm_check under mpiexec with 1-4
// ranks (also with device buffers staged through pinned host memory, ZT_MPI_FORCE_STAGING), and a job where one
// rank dies (SIGKILL) or hangs mid-collective, which must end non-zero within 60 s. NCCL: what its absence (or a
// CPU backend) says everywhere; on a machine with a GPU, one NCCL rank in process and under mpiexec, and two MPI
// ranks staging real device buffers on one GPU.
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "test_support.h"

namespace {

struct CommandRun {
    int exit_code = -1;
    double seconds = 0;
    std::string output;   // stdout and stderr together
};

// Runs a shell command, capturing its output and exit code (coreutils `timeout` keeps a stuck job bounded).
CommandRun run_command(const std::string & cmd) {
    CommandRun r;
    auto t0 = std::chrono::steady_clock::now();
    FILE * p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) throw std::runtime_error("cannot run " + cmd);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    int status = pclose(p);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return r;
}

#ifdef ZT_MPIEXEC
void allow_mpirun_as_root() {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
}

std::string mpirun(int n, const std::string & args, int limit_s = 120) {
    allow_mpirun_as_root();
    return fmt::format("timeout -k 5 {} {} --oversubscribe -np {} {}/mpi_comm_check {}", limit_s, ZT_MPIEXEC, n,
                       ZT_TOOLS_DIR, args);
}

size_t count_of(const std::string & s, const std::string & sub) {
    size_t c = 0;
    for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + 1)) ++c;
    return c;
}
#endif

}  // namespace

TEST(LocalCommunicator, WorldOfOne) {
    auto be = zt::make_cpu_backend(1);
    auto comm = zt::make_local_communicator(be.get());
    EXPECT_EQ(comm->rank(), 0);
    EXPECT_EQ(comm->world_size(), 1);
    EXPECT_EQ(comm->name(), "local");
    std::vector<char> slice(100, 7), full(100, 0);
    comm->all_gather(slice.data(), full.data(), slice.size(), be->stream(zt::StreamRole::comm));
    be->synchronize(be->stream(zt::StreamRole::comm));
    EXPECT_EQ(full, slice);
    std::vector<char> full2(100, 0);
    comm->all_gather(slice.data(), full2.data(), slice.size(), nullptr);
    EXPECT_EQ(full2, slice);
    comm->all_gather(full2.data(), full2.data(), full2.size(), nullptr);   // in place: nothing to do
    EXPECT_EQ(full2, slice);
    int flags[3] = {0, 1, 5};
    comm->all_reduce_max(flags, 3, nullptr);
    EXPECT_EQ(flags[2], 5);
    EXPECT_EQ(comm->gather_strings("mine"), std::vector<std::string>{"mine"});
    int value = 42;
    comm->broadcast(&value, sizeof value, 0);   // rank 0 is the root already: nothing changes
    EXPECT_EQ(value, 42);
    try {
        comm->broadcast(&value, sizeof value, 1);
        FAIL() << "broadcast from rank 1 in a world of one must throw";
    } catch (const zt::Error & e) {
        EXPECT_HAS(std::string(e.what()), "broadcast of 4 bytes from rank 1 in a world of one rank");
    }
    comm->barrier();
    // without a backend everything runs now
    auto bare = zt::make_local_communicator();
    std::vector<char> full3(100, 0);
    bare->all_gather(slice.data(), full3.data(), slice.size(), nullptr);
    EXPECT_EQ(full3, slice);
}

TEST(MpiCommunicator, AvailabilityMatchesTheBuild) {
#ifdef ZT_HAVE_MPI
    EXPECT_TRUE(zt::mpi_available());
#else
    EXPECT_FALSE(zt::mpi_available());
    auto be = zt::make_cpu_backend(1);
    try {
        zt::make_mpi_communicator(*be, {});
        FAIL() << "make_mpi_communicator must throw without MPI";
    } catch (const zt::Error & e) {
        EXPECT_HAS(std::string(e.what()), "this build has no MPI: install libopenmpi-dev and rebuild");
    }
#endif
}

TEST(MpiCommunicator, CollectivesOnOneToFourRanks) {
#ifndef ZT_MPIEXEC
    GTEST_SKIP() << "this build has no MPI (ZT_MPIEXEC undefined): install libopenmpi-dev and reconfigure to run it";
#else
    for (int n = 1; n <= 4; ++n) {
        SCOPED_TRACE(fmt::format("{} rank(s)", n));
        CommandRun r = run_command(mpirun(n, ""));
        EXPECT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(count_of(r.output, "mpi_comm_check: OK rank"), size_t(n)) << r.output;
        for (int k = 0; k < n; ++k) EXPECT_HAS(r.output, fmt::format("OK rank {} of {}", k, n));
    }
#endif
}

TEST(MpiCommunicator, ChunkedPathsForHugeMessages) {
#ifndef ZT_MPIEXEC
    GTEST_SKIP() << "this build has no MPI (ZT_MPIEXEC undefined): install libopenmpi-dev and reconfigure to run it";
#else
    // ZT_MPI_CHUNK_BYTES shrinks the largest single MPI transfer, so the paths for slices and string totals over
    // INT_MAX bytes (resized-datatype chunks, point-to-point gather, chunked all-reduce) run on small data
    for (int chunk : {1, 100, 4096}) {
        SCOPED_TRACE(fmt::format("chunk {} bytes", chunk));
        CommandRun r = run_command(mpirun(3, fmt::format("--chunk-bytes {} --timeout 60", chunk)));
        EXPECT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(count_of(r.output, "mpi_comm_check: OK rank"), 3u) << r.output;
    }
#endif
}

TEST(MpiCommunicator, RankKilledMidCollectiveEndsTheJob) {
#ifndef ZT_MPIEXEC
    GTEST_SKIP() << "this build has no MPI (ZT_MPIEXEC undefined): install libopenmpi-dev and reconfigure to run it";
#else
    CommandRun r = run_command(mpirun(3, "--hang-rank 1 --hang-how kill --timeout 2", 90));
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_LT(r.seconds, 60.0) << r.output;
    EXPECT_HAS(r.output, "rank 1 hangs now (kill)");
    EXPECT_EQ(count_of(r.output, "mpi_comm_check: OK rank"), 0u) << r.output;
    EXPECT_EQ(count_of(r.output, "collectives completed although"), 0u) << r.output;
#endif
}

TEST(MpiCommunicator, HungRankIsCaughtByTheWatchdog) {
#ifndef ZT_MPIEXEC
    GTEST_SKIP() << "this build has no MPI (ZT_MPIEXEC undefined): install libopenmpi-dev and reconfigure to run it";
#else
    // rank 2 sleeps forever: nobody dies, so only the other ranks' watchdogs (2 s) can end the job
    CommandRun r = run_command(mpirun(4, "--hang-rank 2 --hang-how sleep --timeout 2", 90));
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_LT(r.seconds, 60.0) << r.output;
    EXPECT_NE(r.exit_code, 124) << "the job had to be killed by `timeout`: the watchdog did not end it\n" << r.output;
    EXPECT_HAS(r.output, "has not completed after 2 s: a peer rank probably died or hangs");
    EXPECT_HAS(r.output, "all_gather of 1.00 KiB per rank over 4 ranks");
#endif
}

TEST(MpiCommunicator, StagingThroughPinnedHostMemory) {
#ifndef ZT_MPIEXEC
    GTEST_SKIP() << "this build has no MPI (ZT_MPIEXEC undefined): install libopenmpi-dev and reconfigure to run it";
#else
    // ZT_MPI_FORCE_STAGING=1 (set by --staging) makes the CPU ranks take the path CUDA ranks take: device -> pinned
    // copy, MPI on the pinned buffer, pinned -> device copy, all on the stream; the tool checks pinned memory was used
    for (int n : {1, 3}) {
        SCOPED_TRACE(fmt::format("{} rank(s)", n));
        CommandRun r = run_command(mpirun(n, "--staging --timeout 60"));
        EXPECT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(count_of(r.output, "mpi_comm_check: OK rank"), size_t(n)) << r.output;
    }
    // with the chunked paths too (a staged slice of 2 * 100 + 5 bytes moves in three pieces), and with random
    // delays before every copy/comm task, so a copy that is not ordered with its collective shows
    for (const char * extra : {"--chunk-bytes 100", "--race-delay-us 300"}) {
        SCOPED_TRACE(extra);
        CommandRun r = run_command(mpirun(2, fmt::format("--staging --timeout 60 {}", extra)));
        EXPECT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(count_of(r.output, "mpi_comm_check: OK rank"), 2u) << r.output;
    }
#endif
}

TEST(NcclCommunicator, AvailabilityMatchesTheBuild) {
    auto be = zt::make_cpu_backend(1);
#ifdef ZT_HAVE_NCCL
    EXPECT_TRUE(zt::nccl_available());
    // NCCL needs the CUDA backend: a CPU one is refused before anything starts
    try {
        zt::make_nccl_communicator(*be, zt::make_local_communicator(be.get()), {});
        FAIL() << "make_nccl_communicator must refuse a CPU backend";
    } catch (const zt::Error & e) {
        EXPECT_HAS(std::string(e.what()), "the NCCL communicator needs the CUDA backend, not 'cpu'");
    }
#else
    EXPECT_FALSE(zt::nccl_available());
    try {
        zt::make_nccl_communicator(*be, zt::make_local_communicator(be.get()), {});
        FAIL() << "make_nccl_communicator must throw without NCCL";
    } catch (const zt::Error & e) {
        EXPECT_HAS(std::string(e.what()), "this build has no NCCL: ");
        EXPECT_HAS(std::string(e.what()), "\"ztinfer.communicator\": \"mpi\"");
    }
#endif
}

#ifdef ZT_HAVE_NCCL
namespace {
std::string no_gpu_reason() {
    std::string why = zt::cuda_unavailable_reason();
    if (why.empty() && zt::cuda_visible_device_count() == 0) why = "no visible CUDA device";
    return why;
}
}  // namespace
#endif

TEST(NcclCommunicator, OneRankOnOneGpu) {
#ifndef ZT_HAVE_NCCL
    GTEST_SKIP() << "this build has no NCCL";
#else
    if (std::string why = no_gpu_reason(); !why.empty()) GTEST_SKIP() << "no usable GPU: " << why;
    // a world of one (the local communicator as host): device buffers on the comm stream, in and out of place
    zt::CudaBackendOptions co;
    auto be = zt::make_cuda_backend(co);
    zt::MpiOptions opt;
    opt.collective_timeout_s = 60;
    auto comm = zt::make_nccl_communicator(*be, zt::make_local_communicator(be.get()), opt);
    EXPECT_EQ(comm->name(), "nccl");
    EXPECT_EQ(comm->rank(), 0);
    EXPECT_EQ(comm->world_size(), 1);
    zt::Stream * s = be->stream(zt::StreamRole::comm);
    zt::Stream * cs = be->stream(zt::StreamRole::compute);
    const size_t bytes = (size_t(1) << 20) + 3;
    std::vector<unsigned char> host(bytes), back(bytes);
    for (size_t i = 0; i < bytes; ++i) host[i] = static_cast<unsigned char>(i * 13 + 7);
    zt::Buffer slice = be->alloc(bytes, zt::MemKind::device, "test"), full = be->alloc(bytes, zt::MemKind::device, "test");
    be->copy_async(slice.data(), host.data(), bytes, cs);
    be->synchronize(cs);
    comm->all_gather(slice.data(), full.data(), bytes, s);   // out of place
    comm->all_gather(full.data(), full.data(), bytes, s);    // in place
    be->synchronize(s);
    be->copy_async(back.data(), full.data(), bytes, cs);
    be->synchronize(cs);
    EXPECT_EQ(back, host);
    std::vector<int> flags = {3, -1, 7};
    zt::Buffer dflags = be->alloc(flags.size() * sizeof(int), zt::MemKind::device, "test");
    be->copy_async(dflags.data(), flags.data(), flags.size() * sizeof(int), cs);
    be->synchronize(cs);
    comm->all_reduce_max(static_cast<int *>(dflags.data()), flags.size(), s);
    be->synchronize(s);
    std::vector<int> got(flags.size());
    be->copy_async(got.data(), dflags.data(), got.size() * sizeof(int), cs);
    be->synchronize(cs);
    EXPECT_EQ(got, flags);
    comm->all_reduce_max(flags.data(), flags.size(), nullptr);   // host ints, now: the host communicator
    EXPECT_EQ(flags, (std::vector<int>{3, -1, 7}));
    int value = 5;
    comm->broadcast(&value, sizeof value, 0);
    EXPECT_EQ(value, 5);
    EXPECT_EQ(comm->gather_strings("x"), std::vector<std::string>{"x"});
    comm->barrier();
#endif
}

TEST(NcclCommunicator, UnderMpiexecOnOneGpu) {
#if !defined(ZT_HAVE_NCCL) || !defined(ZT_MPIEXEC)
    GTEST_SKIP() << "this build has no NCCL or no MPI";
#else
    if (std::string why = no_gpu_reason(); !why.empty()) GTEST_SKIP() << "no usable GPU: " << why;
    // NCCL over MPI, one rank (one GPU cannot host two NCCL ranks); plain and chunked
    for (const char * extra : {"", " --chunk-bytes 4096"}) {
        SCOPED_TRACE(extra);
        CommandRun r = run_command(mpirun(1, std::string("--backend cuda --comm nccl --timeout 60") + extra));
        EXPECT_EQ(r.exit_code, 0) << r.output;
        EXPECT_EQ(count_of(r.output, "mpi_comm_check: OK rank"), 1u) << r.output;
    }
    // two MPI ranks sharing the GPU: device buffers staged through pinned host memory (the real staging path)
    CommandRun r = run_command(mpirun(2, "--backend cuda --comm mpi --timeout 60"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(count_of(r.output, "mpi_comm_check: OK rank"), 2u) << r.output;
#endif
}
