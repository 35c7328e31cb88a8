// MachineProfile (see machine_profile.h): the matmul-time lookup (interpolated tables by weight dtype), the
// all-gather lookup by world size, the conservative default figures (a roofline per dtype), and the JSON file a
// profile lives in, validated as the user input it is: every figure must be a finite number in a plausible range,
// or loading fails naming the file, the key and what to do.
#include "runtime/job/machine_profile.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <unistd.h>

#include "runtime/base/error.h"
#include "runtime/base/json_input.h"

namespace zt {

namespace {

using json = nlohmann::json;
using Table = std::vector<std::pair<int64_t, double>>;

// --- matmul tables -----------------------------------------------------------------------------------------------

// Seconds per weight of `t` (points sorted by T, strictly increasing) at T: the first point's value below it,
// linear between points, the last segment's slope beyond the last point (never below the last value).
double interpolate(const Table & t, int64_t T) {
    if (T <= t.front().first || t.size() == 1) return t.front().second;
    for (size_t i = 1; i < t.size(); ++i) {
        if (T <= t[i].first) {
            const auto & [t0, s0] = t[i - 1];
            const auto & [t1, s1] = t[i];
            return s0 + (s1 - s0) * double(T - t0) / double(t1 - t0);
        }
    }
    const auto & [t0, s0] = t[t.size() - 2];
    const auto & [t1, s1] = t.back();
    const double slope = (s1 - s0) / double(t1 - t0);
    return std::max(s1, s1 + slope * double(T - t1));
}

double bits_of_key(const std::string & key) {
    std::string upper = key;
    for (char & c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
    const auto d = dtype_from_name(upper);
    return d ? dtype_bits_per_weight(*d) : 16.0;
}

// --- default figures ------------------------------------------------------------------------------------------

// One backend's conservative figures; default_profile() builds the profile and its `source` from them.
struct Defaults {
    double h2d_gbps, memcpy_gbps, nvme_gbps, allgather_gbps, memory_gbps;
    double float16_flops, f32_flops, quant_flops;   // peak FLOP/s of bf16/f16, f32 and quantized weights
    double matmul_fixed_s;                           // per matmul (launch / thread hand-off), in the tables per
                                                     // weight of a kRefWeights matmul
    double decode_gflops, prefill_gflops, step_s, unit_s;
    const char * what;                               // "GPU" / "CPU"
};
constexpr double kRefWeights = 4096.0 * 4096.0;
// cuda: PCIe 4 x16 pinned copies reach ~25 GB/s, 12 is safe; HBM ~2-3 TB/s; bf16 dense peak ~1 PFLOP/s on
// H100 (300 TFLOP/s is what a 4k GEMM reaches on older parts too).
constexpr Defaults kCuda = {12, 5, 2, 100, 2000, 300e12, 50e12, 150e12, 5e-6, 2000, 30000, 50e-6, 20e-6, "GPU"};
// cpu: a few cores of a server or laptop (the "device" is host memory, so H2D is a memcpy).
constexpr Defaults kCpu = {5, 5, 2, 5, 10, 50e9, 50e9, 25e9, 10e-6, 5, 10, 200e-6, 20e-6, "CPU"};

const Defaults & defaults_of(const std::string & device) {
    ZT_CHECK(device == "cpu" || device == "cuda", "machine profile device \"{}\": use \"cpu\" or \"cuda\"", device);
    return device == "cuda" ? kCuda : kCpu;
}

// Seconds per weight of a matmul at T on the roofline: the weight read from memory, or 2 T flops per weight at the
// peak, whichever is slower, plus the fixed cost spread over a kRefWeights matmul.
Table roofline(const Defaults & d, double bits_per_weight, double peak_flops) {
    Table t;
    for (int64_t T = 1; T <= 512; T *= 2) {
        const double mem = bits_per_weight / 8.0 / (d.memory_gbps * 1e9);
        const double compute = 2.0 * double(T) / peak_flops;
        t.emplace_back(T, std::max(mem, compute) + d.matmul_fixed_s / kRefWeights);
    }
    return t;
}

const DType kWeightDTypes[] = {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0,
                               DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// --- JSON validation ---------------------------------------------------------------------------------------------

struct Reader {
    const std::string & what;   // the file (or "--profile ...") for messages

    [[noreturn]] void fail(const std::string & key, const std::string & problem) const {
        ZT_FAIL("{}: machine profile key \"{}\" {}; fix the file or rerun `ztinfer bench --profile {}`", what, key,
                problem, what);
    }
    // A finite number in [lo, hi] (lo_open: > lo).
    double number(const json & v, const std::string & key, double lo, double hi, bool lo_open = true) const {
        if (!v.is_number()) fail(key, fmt::format("must be a number, not {}", quote_json(v)));
        const double x = v.get<double>();
        if (!std::isfinite(x) || (lo_open ? x <= lo : x < lo) || x > hi)
            fail(key, fmt::format("is {}: it must be a finite number {} {} and <= {}", quote_json(v),
                                  lo_open ? ">" : ">=", lo, hi));
        return x;
    }
    int64_t integer(const json & v, const std::string & key, int64_t lo, int64_t hi) const {
        if (!v.is_number_integer()) fail(key, fmt::format("must be a whole number, not {}", quote_json(v)));
        if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
            fail(key, fmt::format("is {}: it must be between {} and {}", quote_json(v), lo, hi));
        const int64_t x = v.get<int64_t>();
        if (x < lo || x > hi) fail(key, fmt::format("is {}: it must be between {} and {}", x, lo, hi));
        return x;
    }
    std::string string(const json & v, const std::string & key) const {
        if (!v.is_string()) fail(key, fmt::format("must be a string, not {}", quote_json(v)));
        return v.get<std::string>();
    }
    const json & object(const json & v, const std::string & key) const {
        if (!v.is_object()) fail(key, fmt::format("must be an object, not {}", quote_json(v)));
        return v;
    }
};

// Plausible ranges: wider than any machine, narrow enough that a typo or a hostile 1e300 is caught.
constexpr double kMaxGbps = 1e5;             // 100 TB/s
constexpr double kMaxGflops = 1e7;           // 10 PFLOP/s
constexpr double kMinSecondsPerWeight = 1e-18;
constexpr double kMaxSecondsPerWeight = 1;   // one weight, one second: nothing is that slow
constexpr double kMaxOverheadS = 10;
constexpr int64_t kMaxT = int64_t(1) << 24;

Table read_table(const Reader & r, const json & v, const std::string & key) {
    if (!v.is_array() || v.empty())
        r.fail(key, fmt::format("must be a non-empty array of [T, seconds per weight] pairs, not {}", quote_json(v)));
    Table t;
    for (size_t i = 0; i < v.size(); ++i) {
        const std::string at = fmt::format("{}[{}]", key, i);
        if (!v[i].is_array() || v[i].size() != 2)
            r.fail(at, fmt::format("must be a [T, seconds per weight] pair, not {}", quote_json(v[i])));
        const int64_t T = r.integer(v[i][0], at + "[0] (T)", 1, kMaxT);
        const double s = r.number(v[i][1], at + "[1] (seconds per weight)", kMinSecondsPerWeight, kMaxSecondsPerWeight,
                                  false);
        if (!t.empty() && T <= t.back().first)
            r.fail(at, fmt::format("has T {} after T {}: the points must be in increasing T", T, t.back().first));
        t.emplace_back(T, s);
    }
    return t;
}

}  // namespace

std::string profile_dtype_key(DType t) {
    std::string key = dtype_name(t);
    for (char & c : key) c = char(std::tolower(static_cast<unsigned char>(c)));
    return key;
}

// --- lookups ---------------------------------------------------------------------------------------------------

double MachineProfile::reuse_factor_at(size_t distance, int64_t T) const {
    if (reuse_factor.empty() || distance == 0) return 1.0;
    auto at = [&](const Table & t) { return std::clamp(interpolate(t, T), 0.0, 1.0); };
    const auto hi = reuse_factor.lower_bound(distance);
    if (hi == reuse_factor.begin()) return at(hi->second);
    if (hi == reuse_factor.end()) return at(std::prev(hi)->second);
    const auto lo = std::prev(hi);
    const double f = std::log(double(distance) / double(lo->first)) / std::log(double(hi->first) / double(lo->first));
    return at(lo->second) + f * (at(hi->second) - at(lo->second));
}

double MachineProfile::matmul_seconds(DType dtype, int64_t T, int64_t N, int64_t K, size_t reuse_distance) const {
    ZT_CHECK(T >= 1 && N >= 1 && K >= 1, "internal: matmul_seconds of T {} N {} K {}", T, N, K);
    if (reuse_distance > 0) return matmul_seconds(dtype, T, N, K) * reuse_factor_at(reuse_distance, T);
    const double weights = double(N) * double(K);
    auto usable = [&](const std::string & key) {
        const auto it = matmul.find(key);
        return it != matmul.end() && !it->second.empty() ? &it->second : nullptr;
    };
    const std::string key = profile_dtype_key(dtype);
    if (const Table * t = usable(key)) return interpolate(*t, T) * weights;
    // not measured: a measured table scaled by bits per weight (bf16's first, else any)
    const double bits = dtype_bits_per_weight(dtype);
    if (const Table * t = usable("bf16")) return interpolate(*t, T) * bits / 16.0 * weights;
    for (const auto & [k, t] : matmul)
        if (!t.empty()) return interpolate(t, T) * bits / bits_of_key(k) * weights;
    ZT_FAIL("machine profile ({}) has no matmul table: rerun `ztinfer bench --profile FILE`", source);
}

double MachineProfile::allgather_gbps(int world) const {
    const auto exact = allgather_busbw_gbps.find(world);
    if (exact != allgather_busbw_gbps.end()) return exact->second;
    double best = 0;
    int best_dist = std::numeric_limits<int>::max();
    for (const auto & [w, gbps] : allgather_busbw_gbps) {   // nearest world; a tie goes to the larger one (slower)
        const int dist = std::abs(w - world);
        if (dist <= best_dist) { best_dist = dist; best = gbps; }
    }
    if (best > 0) return best;
    return defaults_of(device == "cuda" ? "cuda" : "cpu").allgather_gbps;
}

// --- defaults ----------------------------------------------------------------------------------------------------

MachineProfile default_profile(const std::string & device) {
    const Defaults & d = defaults_of(device);
    MachineProfile p;
    p.device = device;
    p.device_name = fmt::format("unknown {} (default figures)", d.what);
    p.threads = 0;
    p.cores = int(std::thread::hardware_concurrency());
    p.h2d_gbps = d.h2d_gbps;
    p.memcpy_gbps = d.memcpy_gbps;
    p.nvme_gbps = d.nvme_gbps;
    p.memory_gbps = d.memory_gbps;
    for (DType t : kWeightDTypes) {
        const double peak = t == DType::F32 ? d.f32_flops : dtype_is_quantized(t) ? d.quant_flops : d.float16_flops;
        p.matmul[profile_dtype_key(t)] = roofline(d, dtype_bits_per_weight(t), peak);
    }
    p.attention_decode_gflops = d.decode_gflops;
    p.attention_prefill_gflops = d.prefill_gflops;
    p.step_overhead_s = d.step_s;
    p.unit_overhead_s = d.unit_s;
    p.copy_latency_s = 10e-6;                             // a cudaMemcpyAsync / a copy-thread hand-off
    p.paced_copy_latency_s = device == "cpu" ? 60e-6 : 0;  // Linux's 50 us timer slack + the wake-up
    const bool gpu = device == "cuda";
    p.source = fmt::format(
        "defaults (no --profile): H2D {} GB/s{}, host memcpy {} GB/s, NVMe {} GB/s, all-gather {} GB/s busbw (any "
        "world), memory {} GB/s, {} matmul roofline: bf16/f16 {} GFLOP/s, f32 {} GFLOP/s, quantized {} GFLOP/s, "
        "weights read at the memory rate, + {} us per matmul; attention decode {} GFLOP/s, prefill {} GFLOP/s; "
        "step overhead {} us, unit overhead {} us, 10 us per copy",
        d.h2d_gbps, gpu ? " (conservative PCIe 4 pinned)" : " (a memcpy: the CPU backend's device is host memory)",
        d.memcpy_gbps, d.nvme_gbps, d.allgather_gbps, d.memory_gbps, d.what, d.float16_flops / 1e9,
        d.f32_flops / 1e9, d.quant_flops / 1e9, d.matmul_fixed_s * 1e6, d.decode_gflops, d.prefill_gflops,
        d.step_s * 1e6, d.unit_s * 1e6);
    return p;
}

// --- JSON ----------------------------------------------------------------------------------------------------------

nlohmann::json profile_to_json(const MachineProfile & p) {
    json ag = json::object();
    for (const auto & [w, gbps] : p.allgather_busbw_gbps) ag[std::to_string(w)] = gbps;
    json mm = json::object();
    for (const auto & [key, t] : p.matmul) {
        json rows = json::array();
        for (const auto & [T, s] : t) rows.push_back({T, s});
        mm[key] = rows;
    }
    json mm_reuse = json::object();
    for (const auto & [bytes, t] : p.reuse_factor) {
        json rows = json::array();
        for (const auto & [T, f] : t) rows.push_back({T, f});
        mm_reuse[std::to_string(bytes)] = rows;
    }
    return {{"version", p.version}, {"source", p.source}, {"device", p.device}, {"device_name", p.device_name},
            {"threads", p.threads}, {"cores", p.cores}, {"h2d_gbps", p.h2d_gbps}, {"memcpy_gbps", p.memcpy_gbps},
            {"nvme_gbps", p.nvme_gbps}, {"nvme_block_size", p.nvme_block_size},
            {"nvme_queue_depth", p.nvme_queue_depth}, {"allgather_busbw_gbps", ag}, {"memory_gbps", p.memory_gbps},
            {"matmul", mm}, {"reuse_factor", mm_reuse}, {"copy_latency_s", p.copy_latency_s},
            {"paced_copy_latency_s", p.paced_copy_latency_s},
            {"attention", {{"decode_gflops", p.attention_decode_gflops},
                           {"prefill_gflops", p.attention_prefill_gflops}}},
            {"overhead", {{"step_s", p.step_overhead_s}, {"unit_s", p.unit_overhead_s}}}};
}

MachineProfile profile_from_json(const nlohmann::json & j, const std::string & what) {
    const Reader r{what};
    if (!j.is_object()) r.fail("(top level)", fmt::format("must be a JSON object, not {}", quote_json(j)));
    if (j.contains("version") && r.integer(j["version"], "version", 0, std::numeric_limits<int>::max()) != 1)
        r.fail("version", fmt::format("is {}: this ztinfer reads version 1 profiles", j["version"].get<int64_t>()));
    const std::string device = j.contains("device") ? r.string(j["device"], "device") : "cpu";
    if (device != "cpu" && device != "cuda") r.fail("device", fmt::format("is \"{}\": use \"cpu\" or \"cuda\"", device));
    // a missing key keeps the default's value
    MachineProfile p = default_profile(device);
    p.source = j.contains("source") ? r.string(j["source"], "source") : what + " (it has no \"source\")";
    if (j.contains("device_name")) p.device_name = r.string(j["device_name"], "device_name");
    if (j.contains("threads")) p.threads = int(r.integer(j["threads"], "threads", 0, 1 << 20));
    if (j.contains("cores")) p.cores = int(r.integer(j["cores"], "cores", 0, 1 << 20));
    if (j.contains("h2d_gbps")) p.h2d_gbps = r.number(j["h2d_gbps"], "h2d_gbps", 0, kMaxGbps);
    if (j.contains("memcpy_gbps")) p.memcpy_gbps = r.number(j["memcpy_gbps"], "memcpy_gbps", 0, kMaxGbps);
    if (j.contains("nvme_gbps"))   // 0: not measured
        p.nvme_gbps = r.number(j["nvme_gbps"], "nvme_gbps", 0, kMaxGbps, false);
    if (j.contains("nvme_block_size"))
        p.nvme_block_size = size_t(r.integer(j["nvme_block_size"], "nvme_block_size", 1, int64_t(1) << 32));
    if (j.contains("nvme_queue_depth"))
        p.nvme_queue_depth = int(r.integer(j["nvme_queue_depth"], "nvme_queue_depth", 1, 1 << 16));
    if (j.contains("allgather_busbw_gbps")) {
        p.allgather_busbw_gbps.clear();
        for (const auto & [w, v] : r.object(j["allgather_busbw_gbps"], "allgather_busbw_gbps").items()) {
            const std::string key = "allgather_busbw_gbps." + w;
            size_t used = 0;
            long world = 0;
            try { world = std::stol(w, &used); } catch (const std::exception &) { used = 0; }
            if (used != w.size() || world < 2 || world > (1 << 20))
                r.fail(key, "is not a world size: the keys are rank counts >= 2 (\"2\", \"4\", ...)");
            p.allgather_busbw_gbps[int(world)] = r.number(v, key, 0, kMaxGbps);
        }
    }
    if (j.contains("memory_gbps")) p.memory_gbps = r.number(j["memory_gbps"], "memory_gbps", 0, kMaxGbps);
    if (j.contains("matmul")) {
        const json & mm = r.object(j["matmul"], "matmul");
        if (mm.empty()) r.fail("matmul", "has no table: it needs at least one dtype (\"bf16\": [[1, 1e-9], ...])");
        p.matmul.clear();
        for (const auto & [key, v] : mm.items()) {
            std::string upper = key;
            for (char & c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
            const auto d = dtype_from_name(upper);
            if (!d || std::find(std::begin(kWeightDTypes), std::end(kWeightDTypes), *d) == std::end(kWeightDTypes) ||
                key != profile_dtype_key(*d))
                r.fail("matmul." + key, "is not a weight dtype: use bf16, f16, f32, q8_0, q4_0, q4_1, q4_k, q5_k, q6_k");
            p.matmul[key] = read_table(r, v, "matmul." + key);
        }
    }
    if (j.contains("reuse_factor")) {
        p.reuse_factor.clear();
        for (const auto & [key, v] : r.object(j["reuse_factor"], "reuse_factor").items()) {
            size_t used = 0;
            long long bytes = 0;
            try { bytes = std::stoll(key, &used); } catch (const std::exception &) { used = 0; }
            if (used != key.size() || bytes < 1 || bytes > (1LL << 40))
                r.fail("reuse_factor." + key, "is not a ring size: the keys are bytes (\"4194304\", ...)");
            p.reuse_factor[size_t(bytes)] = read_table(r, v, "reuse_factor." + key);   // factors in (0, 1]
        }
    }
    if (j.contains("copy_latency_s"))
        p.copy_latency_s = r.number(j["copy_latency_s"], "copy_latency_s", 0, kMaxOverheadS, false);
    if (j.contains("paced_copy_latency_s"))
        p.paced_copy_latency_s = r.number(j["paced_copy_latency_s"], "paced_copy_latency_s", 0, kMaxOverheadS, false);
    if (j.contains("attention")) {
        const json & a = r.object(j["attention"], "attention");
        if (a.contains("decode_gflops"))
            p.attention_decode_gflops = r.number(a["decode_gflops"], "attention.decode_gflops", 0, kMaxGflops);
        if (a.contains("prefill_gflops"))
            p.attention_prefill_gflops = r.number(a["prefill_gflops"], "attention.prefill_gflops", 0, kMaxGflops);
    }
    if (j.contains("overhead")) {
        const json & o = r.object(j["overhead"], "overhead");
        if (o.contains("step_s")) p.step_overhead_s = r.number(o["step_s"], "overhead.step_s", 0, kMaxOverheadS, false);
        if (o.contains("unit_s")) p.unit_overhead_s = r.number(o["unit_s"], "overhead.unit_s", 0, kMaxOverheadS, false);
    }
    return p;
}

void save_profile(const std::string & path, const MachineProfile & p) {
    const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());   // same folder: rename is atomic
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        ZT_CHECK(f.good(), "cannot write the machine profile {}: check that its folder exists and is writable", tmp);
        f << profile_to_json(p).dump(2) << '\n';
        f.flush();
        if (!f.good()) {
            std::remove(tmp.c_str());
            ZT_FAIL("cannot write the machine profile {} (disk full?)", tmp);
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        ZT_FAIL("cannot rename {} to the machine profile {}: check that the folder is writable", tmp, path);
    }
}

MachineProfile load_profile(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    ZT_CHECK(f.good(), "cannot read the machine profile {}: check the path, or write it with `ztinfer bench --profile "
             "{}`", path, path);
    std::ostringstream ss;
    ss << f.rdbuf();
    json j;
    try {
        j = parse_json_file(ss.str(), path);
    } catch (const Error & e) {
        ZT_FAIL("{}; rerun `ztinfer bench --profile {}`", e.message(), path);
    }
    return profile_from_json(j, path);
}

}  // namespace zt
