// World discovery: each launcher family, their precedence, the no-launcher default and bad values.
#include <map>

#include "comm/world.h"
#include "runtime/base/error.h"
#include "test_support.h"

namespace {

using Env = std::map<std::string, std::string>;

zt::WorldInfo world_of(const Env & env) {
    return zt::discover_world([&](const char * name) -> std::optional<std::string> {
        auto it = env.find(name);
        if (it == env.end()) return std::nullopt;
        return it->second;
    });
}

std::string error_of(const Env & env) {
    try {
        world_of(env);
    } catch (const zt::Error & e) {
        return e.what();
    }
    return "(no error)";
}

void expect_world(const zt::WorldInfo & w, int rank, int size, int local, const std::string & source) {
    EXPECT_EQ(w.rank, rank);
    EXPECT_EQ(w.size, size);
    EXPECT_EQ(w.local_rank, local);
    EXPECT_EQ(w.source, source);
}

}  // namespace

TEST(World, NoVariablesIsOneRank) {
    auto w = world_of({});
    expect_world(w, 0, 1, 0, "none");
    EXPECT_FALSE(w.via_mpi_launcher());
    // unrelated variables do not matter
    expect_world(world_of({{"HOME", "/root"}, {"OMPI_MCA_btl", "self"}}), 0, 1, 0, "none");
}

TEST(World, OpenMpi) {
    auto w = world_of({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                       {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
    expect_world(w, 3, 4, 1, "openmpi");
    EXPECT_TRUE(w.via_mpi_launcher());
}

TEST(World, Slurm) {
    auto w = world_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}});
    expect_world(w, 5, 8, 1, "slurm");
    EXPECT_TRUE(w.via_mpi_launcher());
    // older Slurm: SLURM_NPROCS
    expect_world(world_of({{"SLURM_PROCID", "1"}, {"SLURM_NPROCS", "2"}}), 1, 2, 0, "slurm");
}

TEST(World, Pmi) {
    expect_world(world_of({{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}}), 2, 3, 0, "pmi");
    expect_world(world_of({{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}, {"MPI_LOCALRANKID", "1"}}), 2, 3, 1, "pmi");
    expect_world(world_of({{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}, {"PMI_LOCAL_RANK", "2"}}), 2, 3, 2, "pmi");
    // MPI_LOCALRANKID (MPICH Hydra) wins over PMI_LOCAL_RANK
    expect_world(world_of({{"PMI_RANK", "0"}, {"PMI_SIZE", "3"}, {"MPI_LOCALRANKID", "1"}, {"PMI_LOCAL_RANK", "2"}}),
                 0, 3, 1, "pmi");
    EXPECT_TRUE(world_of({{"PMI_RANK", "0"}, {"PMI_SIZE", "1"}}).via_mpi_launcher());
}

TEST(World, TorchrunStyleEnv) {
    auto w = world_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}});
    expect_world(w, 1, 2, 1, "env");
    EXPECT_FALSE(w.via_mpi_launcher());
    expect_world(world_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}}), 0, 2, 0, "env");
}

TEST(World, PrecedenceOpenMpiSlurmPmiEnv) {
    Env all = {{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
               {"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "3"},
               {"PMI_RANK", "5"}, {"PMI_SIZE", "6"}, {"PMI_LOCAL_RANK", "5"},
               {"RANK", "6"}, {"WORLD_SIZE", "7"}, {"LOCAL_RANK", "6"}};
    expect_world(world_of(all), 1, 2, 1, "openmpi");
    for (auto v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"}) all.erase(v);
    expect_world(world_of(all), 3, 4, 3, "slurm");
    for (auto v : {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"}) all.erase(v);
    expect_world(world_of(all), 5, 6, 5, "pmi");
    for (auto v : {"PMI_RANK", "PMI_SIZE", "PMI_LOCAL_RANK"}) all.erase(v);
    expect_world(world_of(all), 6, 7, 6, "env");
    // a later family's bad value does not matter when an earlier one is present
    expect_world(world_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}, {"RANK", "x"}}), 0, 1, 0,
                 "openmpi");
}

TEST(World, BadValuesNameTheVariable) {
    auto e = error_of({{"OMPI_COMM_WORLD_RANK", "abc"}, {"OMPI_COMM_WORLD_SIZE", "2"}});
    EXPECT_HAS(e, "OMPI_COMM_WORLD_RANK='abc'");
    EXPECT_HAS(e, "not a number");
    e = error_of({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2x"}});
    EXPECT_HAS(e, "SLURM_NTASKS='2x'");
    e = error_of({{"RANK", "0"}, {"WORLD_SIZE", ""}});
    EXPECT_HAS(e, "WORLD_SIZE=''");
    e = error_of({{"RANK", "99999999999999999999"}, {"WORLD_SIZE", "2"}});
    EXPECT_HAS(e, "RANK='99999999999999999999'");
    e = error_of({{"PMI_RANK", "-1"}, {"PMI_SIZE", "2"}});
    EXPECT_HAS(e, "PMI_RANK=-1");
    EXPECT_HAS(e, "out of range");
    e = error_of({{"RANK", "0"}, {"WORLD_SIZE", "0"}});
    EXPECT_HAS(e, "WORLD_SIZE=0");
    EXPECT_HAS(e, "out of range");
    e = error_of({{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "4"}});
    EXPECT_HAS(e, "OMPI_COMM_WORLD_RANK=4");
    EXPECT_HAS(e, "below 4");
    e = error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "zero"}});
    EXPECT_HAS(e, "LOCAL_RANK='zero'");
    e = error_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "-3"}});
    EXPECT_HAS(e, "SLURM_LOCALID=-3");
    // blanks around a number are fine
    expect_world(world_of({{"RANK", " 1 "}, {"WORLD_SIZE", "2\n"}}), 1, 2, 0, "env");
}

TEST(World, HalfAFamilyIsAnError) {
    auto e = error_of({{"RANK", "1"}});
    EXPECT_HAS(e, "RANK is set but WORLD_SIZE is not");
    e = error_of({{"WORLD_SIZE", "2"}});
    EXPECT_HAS(e, "WORLD_SIZE is set but RANK is not");
    e = error_of({{"OMPI_COMM_WORLD_RANK", "0"}});
    EXPECT_HAS(e, "OMPI_COMM_WORLD_SIZE");
}

TEST(World, DeviceForLocalRank) {
    EXPECT_EQ(zt::device_for_local_rank(0, 1), 0);
    EXPECT_EQ(zt::device_for_local_rank(3, 4), 3);
    EXPECT_EQ(zt::device_for_local_rank(5, 4), 1);
    EXPECT_EQ(zt::device_for_local_rank(7, 8), 7);
    try {
        zt::device_for_local_rank(0, 0);
        FAIL() << "no devices must throw";
    } catch (const zt::Error & e) {
        EXPECT_HAS(std::string(e.what()), "no GPU");
    }
    EXPECT_THROW(zt::device_for_local_rank(-1, 2), zt::Error);
}

TEST(World, ProcessEnvironment) {
    // zt_tests itself runs without a launcher (or under one): discover_world() must agree with getenv
    auto w = zt::discover_world();
    EXPECT_GE(w.rank, 0);
    EXPECT_LT(w.rank, w.size);
}
