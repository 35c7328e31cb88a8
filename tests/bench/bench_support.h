// bench_support: the helpers the job-running benchmark programs share (bench_block_schedule, bench_quant_stream):
// quoting for the shell, where the build dir and the source tree are, reading a job's metrics JSON and a log's tail.
#pragma once
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace bench {

namespace fs = std::filesystem;
using json = nlohmann::json;

inline std::string shell_quote(const std::string & s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

inline std::string exe_dir() {
    std::error_code ec;
    const fs::path p = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::current_path().string() : p.parent_path().string();
}

// The source tree of this build dir (CMakeCache.txt's CMAKE_HOME_DIRECTORY), for the tokenizer fixture.
inline std::string source_dir_of(const std::string & build_dir) {
    std::ifstream f(build_dir + "/CMakeCache.txt");
    std::string line;
    const std::string key = "CMAKE_HOME_DIRECTORY:INTERNAL=";
    while (std::getline(f, line))
        if (line.rfind(key, 0) == 0) return line.substr(key.size());
    return build_dir + "/..";
}

inline json read_json(const std::string & path) {
    std::ifstream f(path);
    if (!f.good()) throw std::runtime_error(path + ": cannot open");
    return json::parse(f);
}

inline std::string tail_of(const std::string & path, size_t n) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string s = ss.str();
    return s.size() > n ? s.substr(s.size() - n) : s;
}

}  // namespace bench
