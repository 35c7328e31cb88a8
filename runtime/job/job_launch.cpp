// A rank's machinery for a job (see job.h): its backend (CPU, or CUDA on GPU local_rank mod visible devices), its
// communicator (TCP when asked or launched torchrun-style, else MPI; on GPUs NCCL when every rank has a GPU of its
// own, else device buffers staged through the host) and its CPU thread count.
#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "comm/communicator.h"
#include "comm/world.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/backend_cuda.h"
#include "runtime/base/error.h"
#include "runtime/base/host_name.h"
#include "runtime/job/job.h"
#ifdef ZT_HAVE_CUDA
#include "kernels/device_query.h"
#endif

namespace zt {

namespace {
// Which device a rank's backend runs on, to find ranks that share one: a GPU's UUID (the same physical GPU in
// every process, also when Slurm's --gpu-bind=single makes each task's GPU "cuda:0"), else "<host>:cuda:N", else
// "<host>:<backend>".
std::string device_identity(const Backend & backend) {
#ifdef ZT_HAVE_CUDA
    if (is_cuda_backend(backend)) {
        const int ordinal = cuda_device_of(backend);
        const std::string uuid = cuda_device_uuid(ordinal);
        return !uuid.empty() ? uuid : fmt::format("{}:cuda:{}", host_name(), ordinal);
    }
#endif
    return fmt::format("{}:{}", host_name(), backend.name());
}
}  // namespace

std::unique_ptr<Backend> make_job_backend(const JobConfig & cfg, const WorldInfo & world, int n_threads) {
    const StreamingConfig & st = cfg.streaming;
    const bool cuda_usable = cuda_backend_compiled() && cuda_unavailable_reason().empty();
    if (cfg.device == "cuda" || (cfg.device == "auto" && cuda_usable)) {
        ZT_CHECK(cuda_usable, "{}: \"ztinfer.device\" is \"cuda\" but {} (rank {})", cfg.config_path,
                 cuda_unavailable_reason(), world.rank);
        ZT_CHECK(st.test_link_gbps == 0 && st.test_race_delay_us == 0, "{}: ztinfer.test_link_gbps and "
                 "test_race_delay_us are CPU-backend test options: remove them for \"device\": \"cuda\"",
                 cfg.config_path);
        CudaBackendOptions co;
        co.device = device_for_local_rank(world.local_rank, cuda_visible_device_count());
        co.max_memory_bytes = cfg.gpu.max_memory_bytes;
        co.max_memory_fraction = cfg.gpu.max_memory_fraction;
        co.compute_dtype = cfg.gpu.compute_dtype;
        return make_cuda_backend(co);
    }
    CpuBackendOptions bo;
    bo.n_threads = n_threads;
    bo.link_gbps = st.test_link_gbps;
    bo.race_delay_us = st.test_race_delay_us;
    bo.race_seed = uint64_t(world.rank) + 1;
    return make_cpu_backend(bo);
}

std::unique_ptr<Communicator> make_job_communicator(const JobConfig & cfg, const WorldInfo & world, Backend & backend) {
    const int rank = world.rank, n_ranks = world.size;
    std::unique_ptr<Communicator> comm;
    // TCP (no MPI needed) when asked for, or when RANK/WORLD_SIZE (torchrun style, not an MPI launcher) started
    // the ranks and MASTER_ADDR says where rank 0 is
    const char * master = std::getenv("MASTER_ADDR");
    const bool tcp = n_ranks > 1 && (cfg.gpu.communicator == "tcp" ||
                                     (cfg.gpu.communicator == "auto" && world.source == "env" && master && *master));
    if (tcp) {
        comm = make_tcp_communicator(backend, tcp_options_from_env(rank, n_ranks, cfg.streaming.collective_timeout_s));
    } else if (n_ranks > 1 || world.via_mpi_launcher()) {
        ZT_CHECK(mpi_available() || n_ranks == 1, "{} ranks were launched ({}) but this build has no MPI: set "
                 "MASTER_ADDR (rank 0's host) and MASTER_PORT (a free port there) on every rank to use the TCP "
                 "communicator, or install libopenmpi-dev and rebuild", n_ranks, world.source);
        if (mpi_available()) comm = make_mpi_communicator(backend, MpiOptions{cfg.streaming.collective_timeout_s});
    }
    if (!comm) comm = make_local_communicator(&backend);
    ZT_CHECK(comm->world_size() == n_ranks && comm->rank() == rank, "the launcher says rank {} of {} ({}) but {} "
             "says rank {} of {}: launch with mpirun/srun, set MASTER_ADDR/MASTER_PORT (TCP), or unset "
             "RANK/WORLD_SIZE", rank, n_ranks, world.source, comm->name(), comm->rank(), comm->world_size());
    if (n_ranks == 1 || backend.host_can_access(MemKind::device) || cfg.gpu.communicator == "mpi") return comm;

    // GPU ranks: NCCL when every rank has a GPU of its own (MPI or TCP carries its unique id), else MPI or TCP with
    // device buffers staged through the host (several ranks sharing one GPU, as on a one-GPU test machine).
    // Every rank learns the same answer.
    const std::string where = device_identity(backend);
    const std::vector<std::string> all = comm->gather_strings(where);
    int shared = 0;
    if (rank == 0) shared = std::set<std::string>(all.begin(), all.end()).size() < all.size() ? 1 : 0;
    comm->broadcast(&shared, sizeof shared, 0);
    if (cfg.gpu.communicator == "nccl") {
        ZT_CHECK(!shared, "{}: \"ztinfer.communicator\" is \"nccl\" but several ranks share one GPU ({}), which NCCL "
                 "refuses: give each rank its own GPU or use \"mpi\"", cfg.config_path, where);
        return make_nccl_communicator(backend, std::move(comm), MpiOptions{cfg.streaming.collective_timeout_s});
    }
    if (shared || !nccl_available()) {
        if (rank == 0)
            spdlog::info("communicator: {} with device buffers staged through host memory ({})", tcp ? "TCP" : "MPI",
                         shared ? "several ranks share a GPU" : "this build has no NCCL");
        return comm;
    }
    return make_nccl_communicator(backend, std::move(comm), MpiOptions{cfg.streaming.collective_timeout_s});
}

int job_threads(const JobConfig & cfg, int rank) {
    const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
    if (cfg.threads <= 0) return cores;
    if (cfg.threads > cores) {
        if (rank == 0)
            spdlog::warn("{}: \"ztinfer.threads\" = {} but this machine has {} cores: using {} threads per rank",
                         cfg.config_path, cfg.threads, cores, cores);
        return cores;
    }
    return int(cfg.threads);
}


}  // namespace zt
