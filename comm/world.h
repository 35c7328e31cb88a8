// World discovery: which rank this process is, how many there are and which GPU it should use, from the
// variables launchers set: OpenMPI (OMPI_COMM_WORLD_RANK/_SIZE/_LOCAL_RANK), Slurm (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID), PMI (PMI_RANK, PMI_SIZE) and plain RANK / WORLD_SIZE / LOCAL_RANK (torchrun style). No
// variables: one rank. The first family present wins, in that order.
#pragma once
#include <functional>
#include <optional>
#include <string>

namespace zt {

struct WorldInfo {
    int rank = 0;
    int size = 1;
    int local_rank = 0;
    std::string source = "none";   // "openmpi", "slurm", "pmi", "env" or "none"
    bool via_mpi_launcher() const { return source == "openmpi" || source == "slurm" || source == "pmi"; }
};

// getenv is injectable for tests. Throws zt::Error naming the variable when a value is not a number or is out of
// range (rank >= size, size < 1).
WorldInfo discover_world(const std::function<std::optional<std::string>(const char *)> & getenv_fn);
WorldInfo discover_world();   // from the process environment

// The GPU a rank uses: local_rank % n_devices (n_devices > 0).
int device_for_local_rank(int local_rank, int n_devices);

}  // namespace zt
