// World discovery (world.h): rank, size and local rank from the launcher's environment variables.
#include "comm/world.h"

#include <cerrno>
#include <cstdlib>
#include <climits>
#include <utility>
#include <vector>

#include "runtime/base/error.h"

namespace zt {

namespace {

using GetEnv = std::function<std::optional<std::string>(const char *)>;

// A whole-string decimal integer (surrounding blanks allowed) within [lo, INT_MAX].
int parse_int(const char * var, const std::string & value, long lo, const char * what) {
    const char * b = value.c_str();
    while (*b == ' ' || *b == '\t') ++b;
    char * end = nullptr;
    errno = 0;
    long v = std::strtol(b, &end, 10);
    const char * e = end;
    while (e && (*e == ' ' || *e == '\t' || *e == '\n')) ++e;
    bool ok = *b != '\0' && end != b && e && *e == '\0' && errno == 0 && v <= INT_MAX;
    ZT_CHECK(ok, "{}='{}' is not a number: it should be {}; fix or unset it (the launcher sets it for each rank)",
             var, value, what);
    ZT_CHECK(v >= lo, "{}={} is out of range: it should be {} (>= {}); fix or unset it", var, value, what, lo);
    return int(v);
}

struct Family {
    const char * source;
    const char * rank_var;
    std::vector<const char *> size_vars;    // first one present is used
    std::vector<const char *> local_vars;   // first one present is used; none: 0
};

}  // namespace

WorldInfo discover_world(const GetEnv & getenv_fn) {
    static const Family families[] = {
        {"openmpi", "OMPI_COMM_WORLD_RANK", {"OMPI_COMM_WORLD_SIZE"}, {"OMPI_COMM_WORLD_LOCAL_RANK"}},
        {"slurm", "SLURM_PROCID", {"SLURM_NTASKS", "SLURM_NPROCS"}, {"SLURM_LOCALID"}},
        {"pmi", "PMI_RANK", {"PMI_SIZE"}, {"MPI_LOCALRANKID", "PMI_LOCAL_RANK"}},
        {"env", "RANK", {"WORLD_SIZE"}, {"LOCAL_RANK"}},
    };
    auto first = [&](const std::vector<const char *> & vars) -> std::pair<const char *, std::optional<std::string>> {
        for (const char * v : vars)
            if (auto x = getenv_fn(v)) return {v, x};
        return {nullptr, std::nullopt};
    };
    for (const Family & f : families) {
        auto rank_s = getenv_fn(f.rank_var);
        auto [size_var, size_s] = first(f.size_vars);
        if (!rank_s && !size_s) continue;   // this launcher family is not present
        ZT_CHECK(rank_s, "{} is set but {} is not: set both (or neither) so this process knows its rank", size_var,
                 f.rank_var);
        ZT_CHECK(size_s, "{} is set but {} is not: set both (or neither) so this process knows the world size",
                 f.rank_var, f.size_vars.front());
        WorldInfo w;
        w.source = f.source;
        w.size = parse_int(size_var, *size_s, 1, "the number of ranks");
        w.rank = parse_int(f.rank_var, *rank_s, 0, "this process's rank");
        ZT_CHECK(w.rank < w.size, "{}={} is out of range: the world has {}={} ranks, so it must be below {}",
                 f.rank_var, *rank_s, size_var, w.size, w.size);
        auto [local_var, local_s] = first(f.local_vars);
        if (local_s) w.local_rank = parse_int(local_var, *local_s, 0, "this process's rank on its node");
        return w;
    }
    return WorldInfo{};
}

WorldInfo discover_world() {
    return discover_world([](const char * name) -> std::optional<std::string> {
        if (const char * v = std::getenv(name)) return std::string(v);
        return std::nullopt;
    });
}

int device_for_local_rank(int local_rank, int n_devices) {
    ZT_CHECK(n_devices > 0, "no GPU is visible to this rank (local rank {}): check CUDA_VISIBLE_DEVICES and the "
             "driver, or run on the CPU backend", local_rank);
    ZT_CHECK(local_rank >= 0, "local rank {} is negative: check the launcher's LOCAL_RANK variable", local_rank);
    return local_rank % n_devices;
}

}  // namespace zt
