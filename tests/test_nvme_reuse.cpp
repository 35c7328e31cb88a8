// Reusable NVMe slice files (ztinfer.nvme_reuse, issue 16 item 5: fast restarts):
//  - a second store of the same model and plan reuses the file its first run wrote (same inode and mtime), reads
//    no slice from the checkpoint (a streamed tensor changed in the checkpoint behind an unchanged mtime does not
//    reach its logits) and computes logits bit-identical to the resident run;
//  - a changed checkpoint mtime, a truncated file, garbage in a slice tag or the header, a symlink at the name
//    (its target untouched) each make the store write a new file, with a log line saying why;
//  - other world sizes and ranks get files of their own names;
//  - a process killed while it writes leaves no file under the final name; a half-written fallback name is
//    removed once nobody holds it and it is old, never while its writer lives;
//  - two processes use one file at once and both compute the resident logits;
//  - bytes written into a reused file while it is in use are an error on read, never weights;
//  - files of other models that nobody holds are listed in a log line, never deleted.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/base/error.h"
#include "runtime/model/checkpoint.h"
#include "runtime/model/model_config.h"
#include "runtime/model/synthetic_model.h"
#include "runtime/stream/forward.h"
#include "runtime/stream/layer_partition.h"
#include "runtime/stream/nvme_file.h"
#include "runtime/stream/schedule.h"
#include "runtime/stream/slice_file_reuse.h"
#include "runtime/stream/slice_header.h"
#include "runtime/stream/weight_store.h"
#include "tests/nvme_slices.h"
#include "tests/test_support.h"

using namespace zt;
using namespace zt::test;
namespace fs = std::filesystem;

namespace {

// A fresh random llama model in its own folder (tests change its files' mtimes and bytes).
std::string make_model(const std::string & root, uint64_t seed = 5) {
    const std::string tok = root + "/tok", dir = root + "/model";
    fs::create_directories(tok);
    const std::string src = std::string(ZT_TEST_DATA) + "/tokenizers/llama2/";
    EXPECT_EQ(std::system(("xz -dc " + src + "tokenizer.json.xz > " + tok + "/tokenizer.json").c_str()), 0);
    fs::copy_file(src + "tokenizer_config.json", tok + "/tokenizer_config.json");
    SynthOptions o;
    o.arch = "llama"; o.layers = 2; o.hidden = 32; o.heads = 4; o.kv_heads = 2; o.intermediate = 64;
    o.max_position_embeddings = 64; o.dtype = "fp32"; o.seed = seed; o.tokenizer_dir = tok;
    o.out_dir = dir;
    synthesize_model(o);
    return dir;
}

struct Loaded {
    std::string dir;
    ModelConfig cfg;
    Checkpoint ckpt;
    ModelWeights w;
    PartitionPlan plan;
    Loaded(const std::string & d, int world = 1, int resident_layers = 0)
        : dir(d), cfg(ModelConfig::load(d)), ckpt(d), w(bind_weights(ckpt, cfg)),
          plan(plan_partition(cfg, w, options(world, resident_layers))) {}
    static PartitionOptions options(int world, int resident_layers) {
        PartitionOptions po;
        po.world = world;
        po.persistence_threshold = 1000;
        po.partition_embeddings = true;
        po.resident_layers = resident_layers;
        return po;
    }
};

WeightStoreOptions reuse_options(const std::string & nvme, const Loaded & m) {
    WeightStoreOptions o;
    o.tier = OffloadTier::nvme;
    o.nvme_path = nvme;
    o.aio_block_size = 8192;
    o.buffer_count = 2;
    o.checkpoint = m.ckpt.identity();
    o.nvme_reuse = true;
    o.model = m.dir;
    return o;
}

// Logits of one 4-token prompt (Llama 2 ids).
std::vector<float> prompt_logits(Forward & f) {
    std::vector<int32_t> prompt = {1, 15043, 3186, 29892};
    f.reserve(1, 16);
    std::vector<SequenceStep> batch{{0, 0, prompt.data(), int32_t(prompt.size())}};
    std::vector<float> logits;
    f.step(batch, logits);
    return logits;
}

std::vector<float> resident_logits(const Loaded & m, Backend & be) {
    Forward f(m.cfg, m.w, be);
    return prompt_logits(f);
}

std::vector<float> streamed_logits(const Loaded & m, WeightStore & store, Backend & be) {
    auto comm = make_local_communicator(&be);
    Schedule schedule(m.plan, store, be, *comm, ScheduleOptions{});
    Forward f(m.cfg, m.plan, schedule, be);
    return prompt_logits(f);
}

bool bit_identical(const std::vector<float> & x, const std::vector<float> & y) {
    return !x.empty() && x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// Everything the default logger writes while it lives.
struct LogCapture {
    std::ostringstream out;
    std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    spdlog::level::level_enum level = spdlog::default_logger()->level();
    LogCapture() {
        spdlog::default_logger()->sinks().push_back(sink);
        spdlog::default_logger()->set_level(spdlog::level::info);
    }
    ~LogCapture() {
        spdlog::default_logger()->set_level(level);
        auto & s = spdlog::default_logger()->sinks();
        s.erase(std::remove(s.begin(), s.end(), std::static_pointer_cast<spdlog::sinks::sink>(sink)), s.end());
    }
    std::string text() { sink->flush(); return out.str(); }
};

struct stat stat_of(const std::string & path) {
    struct stat st{};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st;
}

// Sets a file's mtime (and atime) to `sec`.`nsec`.
void set_mtime(const std::string & path, const timespec & t) {
    const timespec times[2] = {t, t};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

// Overwrites `bytes` at `offset` of `path` in place (no truncation).
void patch_file(const std::string & path, uint64_t offset, const std::string & bytes) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), off_t(offset)), ssize_t(bytes.size()));
    ::close(fd);
}

// A store of `m` on `nvme`: whether it reused its file, and the log lines it wrote.
struct Built {
    bool reused = false;
    std::string file, log;
};
Built build_store(const Loaded & m, const std::string & nvme, Backend & be, int rank = 0) {
    LogCapture cap;
    WeightStore store(m.plan, rank, be, reuse_options(nvme, m));
    return {store.nvme_file_reused(), store.nvme_file(), cap.text()};
}

int first_streamed(const PartitionPlan & p) {
    for (size_t i = 0; i < p.units.size(); ++i)
        if (p.units[i].streamed && p.units[i].slice_bytes > 0) return int(i);
    return -1;
}

}  // namespace

TEST(NvmeReuse, SecondStoreReusesTheFileReadsNoSliceFromTheCheckpointAndComputesTheResidentLogits) {
    const std::string root = make_temp_dir("reuse_same");
    const std::string dir = make_model(root), nvme = root + "/nvme";
    auto be = make_cpu_backend(1);
    const std::string path = slice_file_path(nvme, dir, 0, 1);
    std::vector<float> ref;
    {
        const Loaded m(dir);
        ref = resident_logits(m, *be);
        LogCapture cap;
        WeightStore first(m.plan, 0, *be, reuse_options(nvme, m));
        EXPECT_FALSE(first.nvme_file_reused());
        EXPECT_EQ(first.nvme_file(), path);
        EXPECT_HAS(cap.text(), "writing " + path);
        EXPECT_HAS(cap.text(), "no file yet");
        EXPECT_HAS(cap.text(), "wrote " + path);
        EXPECT_TRUE(bit_identical(streamed_logits(m, first, *be), ref));
    }
    ASSERT_TRUE(fs::is_regular_file(path)) << "the file stays for the next job";
    EXPECT_EQ(stat_of(path).st_mode & 0777, 0600u);
    EXPECT_EQ(folder_names(nvme), std::vector<std::string>{fs::path(path).filename().string()})
        << "nothing else is left in nvme_path";
    const struct stat before = stat_of(path);
    {
        const Loaded m(dir);
        LogCapture cap;
        WeightStore second(m.plan, 0, *be, reuse_options(nvme, m));
        EXPECT_TRUE(second.nvme_file_reused());
        EXPECT_HAS(cap.text(), "reused " + path);
        EXPECT_TRUE(bit_identical(streamed_logits(m, second, *be), ref)) << "the reused file computed other logits";
    }
    const struct stat after = stat_of(path);
    EXPECT_EQ(after.st_ino, before.st_ino) << "the reused file was replaced";
    EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
    EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec) << "the reused file was written";

    // No slice comes from the checkpoint: change a streamed tensor's bytes behind an unchanged mtime (the
    // checkpoint identity stays the same); the reused file still gives the old logits, the checkpoint new ones.
    const std::string st_path = dir + "/model.safetensors";
    const struct stat ckpt_st = stat_of(st_path);
    {
        const Loaded m(dir);
        const int u = first_streamed(m.plan);
        ASSERT_GE(u, 0);
        const PackedTensor * victim = nullptr;
        for (const PackedTensor & t : m.plan.units[size_t(u)].tensors)
            if (!t.persistent && t.bytes >= 256) victim = &t;
        ASSERT_NE(victim, nullptr);
        const std::string bytes = read_file(st_path);
        const std::string needle(static_cast<const char *>(victim->source.data), 256);
        const size_t at = bytes.find(needle);
        ASSERT_NE(at, std::string::npos);
        patch_file(st_path, at, std::string(256, '\x3f'));
    }
    set_mtime(st_path, ckpt_st.st_mtim);
    {
        const Loaded m(dir);
        EXPECT_FALSE(bit_identical(resident_logits(m, *be), ref)) << "the patch must change the model";
        WeightStore third(m.plan, 0, *be, reuse_options(nvme, m));
        EXPECT_TRUE(third.nvme_file_reused());
        EXPECT_TRUE(bit_identical(streamed_logits(m, third, *be), ref)) << "a slice was read from the checkpoint";
    }
    fs::remove_all(root);
}

TEST(NvmeReuse, ChangedCheckpointMtimeTruncationGarbageOrHeaderRewriteTheFileSayingWhy) {
    const std::string root = make_temp_dir("reuse_why");
    const std::string dir = make_model(root), nvme = root + "/nvme";
    auto be = make_cpu_backend(1);
    const std::string path = slice_file_path(nvme, dir, 0, 1);
    const Loaded first(dir);
    const std::vector<float> ref = resident_logits(first, *be);
    ASSERT_FALSE(build_store(first, nvme, *be).reused);
    ASSERT_TRUE(build_store(first, nvme, *be).reused);
    const uint64_t size = fs::file_size(path);

    // The checkpoint's mtime changes (the model was rewritten): a new identity, a new file.
    timespec t = stat_of(dir + "/model.safetensors").st_mtim;
    t.tv_sec += 10;
    set_mtime(dir + "/model.safetensors", t);
    {
        const Loaded m(dir);
        Built b = build_store(m, nvme, *be);
        EXPECT_FALSE(b.reused);
        EXPECT_HAS(b.log, "rewriting " + path);
        EXPECT_HAS(b.log, "checkpoint changed");
        EXPECT_TRUE(build_store(m, nvme, *be).reused) << "the rewritten file is reused next time";
    }
    const Loaded m(dir);
    auto rewritten_because = [&](const std::string & why) {
        Built b = build_store(m, nvme, *be);
        EXPECT_FALSE(b.reused) << why;
        EXPECT_HAS(b.log, why);
        EXPECT_EQ(fs::file_size(path), size);
        EXPECT_TRUE(build_store(m, nvme, *be).reused) << "after " << why;
    };
    fs::resize_file(path, size / 2);
    rewritten_because(fmt::format("truncated: {} of {} bytes", size / 2, size));

    const int u = first_streamed(m.plan);
    ASSERT_GE(u, 0);
    // The tag of the first slice: the last 64 bytes of its extent (the extent starts after the header page).
    const uint64_t tag_at = kSliceHeaderBytes + slice_extent(m.plan.units[size_t(u)].slice_bytes) - kSliceTagBytes;
    patch_file(path, tag_at, std::string(kSliceTagBytes, 'g'));
    rewritten_because("has no valid tag");

    patch_file(path, 0, std::string(64, 'x'));
    rewritten_because("not a ztinfer slice file");

    fs::remove(path);
    write_file(path, std::string(size_t(size), '\0'));
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
    rewritten_because("not a ztinfer slice file");

    // Another partition (one resident layer): another layout, same name.
    {
        const Loaded other(dir, 1, 1);
        Built b = build_store(other, nvme, *be);
        EXPECT_FALSE(b.reused);
        EXPECT_HAS(b.log, "another partition layout");
    }
    rewritten_because("another partition layout");

    fs::permissions(path, fs::perms::group_write, fs::perm_options::add);
    rewritten_because("writable by group or others");
    {
        WeightStore store(m.plan, 0, *be, reuse_options(nvme, m));
        EXPECT_TRUE(bit_identical(streamed_logits(m, store, *be), ref));
    }
    fs::remove_all(root);
}

TEST(NvmeReuse, SymlinkAtTheNameIsNotFollowedAndBecomesARealFile) {
    const std::string root = make_temp_dir("reuse_link");
    const std::string dir = make_model(root), nvme = root + "/nvme", victim = root + "/victim.txt";
    auto be = make_cpu_backend(1);
    const Loaded m(dir);
    const std::string path = slice_file_path(nvme, dir, 0, 1);
    fs::create_directories(nvme);
    write_file(victim, "precious bytes of someone else");
    fs::create_symlink(victim, path);
    Built b = build_store(m, nvme, *be);
    EXPECT_FALSE(b.reused);
    EXPECT_HAS(b.log, "symbolic link");
    EXPECT_EQ(read_file(victim), "precious bytes of someone else") << "the store wrote through the link";
    EXPECT_FALSE(fs::is_symlink(path));
    EXPECT_TRUE(fs::is_regular_file(path));
    EXPECT_TRUE(build_store(m, nvme, *be).reused);
    EXPECT_EQ(read_file(victim), "precious bytes of someone else");

    // A folder at the name: the store cannot give its file that name, works nameless and says so.
    fs::remove(path);
    fs::create_directories(path);
    b = build_store(m, nvme, *be);
    EXPECT_FALSE(b.reused);
    EXPECT_HAS(b.log, "not a regular file");
    EXPECT_HAS(b.log, "next start writes it again");
    EXPECT_TRUE(fs::is_directory(path));
    fs::remove_all(root);
}

TEST(NvmeReuse, OtherWorldSizesAndRanksHaveTheirOwnFiles) {
    const std::string root = make_temp_dir("reuse_world");
    const std::string dir = make_model(root), nvme = root + "/nvme";
    auto be = make_cpu_backend(1);
    const Loaded one(dir, 1), two(dir, 2);
    EXPECT_FALSE(build_store(one, nvme, *be, 0).reused);
    EXPECT_FALSE(build_store(two, nvme, *be, 0).reused);
    Built r1 = build_store(two, nvme, *be, 1);
    EXPECT_FALSE(r1.reused);
    EXPECT_EQ(r1.file, slice_file_path(nvme, dir, 1, 2));
    EXPECT_NE(slice_file_path(nvme, dir, 0, 2), slice_file_path(nvme, dir, 0, 1));
    EXPECT_NE(slice_file_path(nvme, dir, 0, 2), slice_file_path(nvme, root + "/other-model", 0, 2));
    EXPECT_EQ(folder_names(nvme).size(), 3u);
    EXPECT_TRUE(build_store(one, nvme, *be, 0).reused);
    EXPECT_TRUE(build_store(two, nvme, *be, 0).reused);
    EXPECT_TRUE(build_store(two, nvme, *be, 1).reused);

    // A file moved to another rank's name: its header says whose it is.
    fs::rename(slice_file_path(nvme, dir, 1, 2), slice_file_path(nvme, dir, 0, 2));
    Built b = build_store(two, nvme, *be, 0);
    EXPECT_FALSE(b.reused);
    EXPECT_HAS(b.log, "written for rank 1 of world 2, this is rank 0 of world 2");
    fs::remove_all(root);
}

TEST(NvmeReuse, KilledWhileWritingLeavesNoFileUnderTheFinalName) {
    const std::string root = make_temp_dir("reuse_kill");
    const std::string nvme = root + "/nvme", final_path = nvme + "/ztinfer-0123456789abcdef-rank0-of1.slices";
    fs::create_directories(nvme);
    for (bool tmpfile : {true, false}) {
        SCOPED_TRACE(tmpfile ? "O_TMPFILE" : "fallback name");
        int ready[2];
        ASSERT_EQ(::pipe(ready), 0);
        const pid_t child = ::fork();
        ASSERT_GE(child, 0);
        if (child == 0) {   // a job writing its file, killed half-way
            ::close(ready[0]);
            try {
                NvmeFileOptions o;
                o.nvme_path = nvme;
                o.use_tmpfile = tmpfile;
                o.publishable = true;
                NvmeFile f(final_path, o);
                const std::string page(4096, 'w');
                f.write(0, page.data(), page.size());
                if (::write(ready[1], "1", 1) != 1) ::_exit(3);
                while (true) ::pause();
            } catch (...) {
                ::_exit(2);
            }
        }
        ::close(ready[1]);
        char c = 0;
        const bool writing = ::read(ready[0], &c, 1) == 1;
        ::close(ready[0]);
        std::vector<std::string> names = folder_names(nvme);
        if (tmpfile) {
            EXPECT_EQ(names, std::vector<std::string>{}) << "the file has no name while it is written";
        } else {   // the fallback writes under a temporary name; a new writer leaves it alone while it lives
            ASSERT_EQ(names.size(), 1u);
            EXPECT_HAS(names[0], ".zt-writing-");
            const timespec old{::time(nullptr) - 3600, 0};
            set_mtime(nvme + "/" + names[0], old);
            NvmeFileOptions o;
            o.nvme_path = nvme;
            NvmeFile other(nvme + "/x", o);
            EXPECT_EQ(folder_names(nvme), names) << "the name of a live writer was removed";
        }
        ::kill(child, SIGKILL);
        int status = 0;
        ::waitpid(child, &status, 0);
        ASSERT_TRUE(writing);
        EXPECT_FALSE(fs::exists(final_path)) << "a half-written file under the final name";
        if (!tmpfile) {
            EXPECT_EQ(folder_names(nvme).size(), 1u) << "the killed writer's temporary name stays until cleaned";
            NvmeFileOptions o;
            o.nvme_path = nvme;
            NvmeFile cleaner(nvme + "/x", o);   // an hour old and nobody holds it: removed
        }
        EXPECT_EQ(folder_names(nvme), std::vector<std::string>{});
    }
    fs::remove_all(root);
}

TEST(NvmeReuse, TwoProcessesUseOneFileAtOnceAndBothComputeTheResidentLogits) {
    const std::string root = make_temp_dir("reuse_two");
    const std::string dir = make_model(root), nvme = root + "/nvme";
    std::vector<float> ref;
    {
        auto be = make_cpu_backend(1);
        const Loaded m(dir);
        ref = resident_logits(m, *be);
        ASSERT_FALSE(build_store(m, nvme, *be).reused);
    }   // no backend threads live across the fork
    int ready[2], done[2];
    ASSERT_EQ(::pipe(ready), 0);
    ASSERT_EQ(::pipe(done), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::close(ready[0]);
        ::close(done[1]);
        int rc = 0;
        try {
            auto be = make_cpu_backend(1);
            const Loaded m(dir);
            WeightStore store(m.plan, 0, *be, reuse_options(nvme, m));
            if (!store.nvme_file_reused()) rc = 4;
            if (::write(ready[1], "1", 1) != 1) ::_exit(3);
            char c = 0;
            if (::read(done[0], &c, 1) != 1) ::_exit(3);   // the parent computes with the file meanwhile
            if (!bit_identical(streamed_logits(m, store, *be), ref)) rc = 5;
        } catch (...) {
            rc = 2;
        }
        ::_exit(rc);
    }
    ::close(ready[1]);
    ::close(done[0]);
    char c = 0;
    ASSERT_EQ(::read(ready[0], &c, 1), 1);
    {
        auto be = make_cpu_backend(1);
        const Loaded m(dir);
        WeightStore store(m.plan, 0, *be, reuse_options(nvme, m));
        EXPECT_TRUE(store.nvme_file_reused());
        EXPECT_TRUE(bit_identical(streamed_logits(m, store, *be), ref));
        ASSERT_EQ(::write(done[1], "1", 1), 1);
        EXPECT_TRUE(bit_identical(streamed_logits(m, store, *be), ref));
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
    ::close(ready[0]);
    ::close(done[1]);
    fs::remove_all(root);
}

TEST(NvmeReuse, BytesWrittenIntoAReusedFileWhileInUseAreAnErrorNotWeights) {
    const std::string root = make_temp_dir("reuse_foreign");
    const std::string dir = make_model(root), nvme = root + "/nvme";
    auto be = make_cpu_backend(1);
    const Loaded m(dir);
    ASSERT_FALSE(build_store(m, nvme, *be).reused);
    const std::string path = slice_file_path(nvme, dir, 0, 1);
    WeightStore store(m.plan, 0, *be, reuse_options(nvme, m));
    ASSERT_TRUE(store.nvme_file_reused());
    const int u = first_streamed(m.plan);
    ASSERT_GE(u, 0);
    const PartitionUnit & pu = m.plan.units[size_t(u)];
    // Someone rewrites the slice's whole extent (its tag included) with other bytes.
    patch_file(path, kSliceHeaderBytes, std::string(slice_extent(pu.slice_bytes), 'z'));
    Buffer dst = be->alloc(pu.slice_bytes, MemKind::device);
    Stream * s = be->stream(StreamRole::copy);
    std::string err;
    try {
        store.fetch_slice(u, dst.data(), s);
        be->synchronize(s);
    } catch (const std::exception & e) {
        err = e.what();
    }
    EXPECT_HAS(err, path);
    EXPECT_HAS(err, pu.name);
    EXPECT_HAS(err, "slice tag");
    fs::remove_all(root);
}

TEST(NvmeReuse, UnusedFilesOfOtherModelsAreListedNeverDeleted) {
    const std::string root = make_temp_dir("reuse_scan");
    const std::string dir = make_model(root), nvme = root + "/nvme";
    fs::create_directories(nvme);
    const std::string stale = nvme + "/ztinfer-00000000deadbeef-rank0-of2.slices";
    const std::string held = nvme + "/ztinfer-00000000cafef00d-rank0-of1.slices";
    write_file(stale, std::string(8192, 's'));
    write_file(held, std::string(4096, 'h'));
    write_file(nvme + "/notes.txt", "the user's");
    const int fd = ::open(held.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_SH), 0);   // a running job holds this one
    auto be = make_cpu_backend(1);
    const Loaded m(dir);
    Built b = build_store(m, nvme, *be);
    const size_t at = b.log.find("that no running job uses");
    ASSERT_NE(at, std::string::npos) << b.log;
    const std::string line = b.log.substr(at, b.log.find('\n', at) - at);
    EXPECT_HAS(line, "ztinfer-00000000deadbeef-rank0-of2.slices (0.0 MiB)");
    EXPECT_EQ(line.find("cafef00d"), std::string::npos) << "a file in use was listed as unused";
    EXPECT_EQ(line.find(fs::path(b.file).filename().string()), std::string::npos) << "its own file listed";
    EXPECT_EQ(line.find("notes.txt"), std::string::npos);
    EXPECT_TRUE(fs::exists(stale));
    EXPECT_TRUE(fs::exists(held));
    EXPECT_EQ(read_file(nvme + "/notes.txt"), "the user's");
    ::close(fd);
    fs::remove_all(root);
}

TEST(NvmeReuse, LayoutIdentityFollowsThePlanRankAndWorld) {
    const std::string root = make_temp_dir("reuse_layout");
    const std::string dir = make_model(root);
    const Loaded one(dir, 1), two(dir, 2), res(dir, 1, 1);
    const std::vector<uint64_t> none;
    const std::string a = slice_layout_identity(one.plan, 0, none);
    EXPECT_EQ(a.size(), 32u);
    EXPECT_EQ(a, slice_layout_identity(Loaded(dir, 1).plan, 0, none)) << "deterministic";
    EXPECT_NE(a, slice_layout_identity(two.plan, 0, none));
    EXPECT_NE(slice_layout_identity(two.plan, 0, none), slice_layout_identity(two.plan, 1, none));
    EXPECT_NE(a, slice_layout_identity(res.plan, 0, none));
    EXPECT_NE(a, slice_layout_identity(one.plan, 0, std::vector<uint64_t>(one.plan.units.size(), 4096)));
    fs::remove_all(root);
}
