// Small helpers shared by the tests: temp folders, whole-file I/O, running a command, message checks.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

namespace zt::test {

// A fresh folder under the system temp dir: <tmp>/zt_<tag>_XXXXXX.
inline std::string make_temp_dir(const std::string & tag = "test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / ("zt_" + tag + "_XXXXXX")).string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
    return tmpl;
}

inline std::string read_file(const std::string & path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

inline void write_file(const std::string & path, const std::string & bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), std::streamsize(bytes.size()));
}

// stdout of a shell command.
inline std::string command_output(const std::string & cmd) {
    std::unique_ptr<FILE, int (*)(FILE *)> pipe(popen(cmd.c_str(), "r"), pclose);
    if (!pipe) throw std::runtime_error("cannot run " + cmd);
    std::string out;
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, pipe.get())) > 0) out.append(buf, n);
    return out;
}

}  // namespace zt::test

// EXPECT_HAS(message, "substring"): the message names what it should.
#define EXPECT_HAS(msg, sub) EXPECT_NE((msg).find(sub), std::string::npos) << "message: " << (msg)
