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

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>

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

// A TCP port for a test's MASTER_PORT: random in [20000, 32000), below Linux's ephemeral range (32768..60999), so
// that no outgoing connection of a test running beside it can take it as its source port between the pick and the
// listen (the kernel's own pick, port 0, is an ephemeral port and can); checked bindable on 127.0.0.1 and 0.0.0.0.
inline int free_tcp_port() {
    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<int> pick(20000, 31999);
    for (int attempt = 0; attempt < 200; ++attempt) {
        const int port = pick(rng);
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) break;
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(uint16_t(port));
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        const bool ok = ::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
        ::close(fd);
        if (ok) return port;
    }
    ADD_FAILURE() << "no free TCP port in [20000, 32000)";
    return 29500;
}

}  // namespace zt::test

// EXPECT_HAS(message, "substring"): the message names what it should.
#define EXPECT_HAS(msg, sub) EXPECT_NE((msg).find(sub), std::string::npos) << "message: " << (msg)
