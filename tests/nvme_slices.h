// Test helpers for NVMe slice files, which have no name (O_TMPFILE / unlinked): the files a process holds open
// in a folder, found through /proc/<pid>/fd (readlink says "<folder>/#<inode> (deleted)" or "<folder>/<name>
// (deleted)"), and the names a folder lists.
#pragma once
#include <sys/types.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

namespace zt::test {

// "/proc/<pid>/fd/<n>" of every descriptor of `pid` open on a file directly in `folder` (named or unlinked); such
// a path opens, truncates or stats the file itself.
inline std::vector<std::string> open_files_in(pid_t pid, const std::string & folder) {
    namespace fs = std::filesystem;
    std::vector<std::string> out;
    std::error_code ec;
    const std::string dir = fs::canonical(folder, ec).string();
    if (ec) return out;
    const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
    for (const auto & e : fs::directory_iterator(fd_dir, ec)) {
        const std::string target = fs::read_symlink(e.path(), ec).string();
        if (ec || target.rfind(dir + "/", 0) != 0) continue;
        if (target.find('/', dir.size() + 1) != std::string::npos) continue;   // deeper than the folder
        out.push_back(e.path().string());
    }
    return out;
}

// The names in `folder` (empty when it does not exist).
inline std::vector<std::string> folder_names(const std::string & folder) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto & e : std::filesystem::directory_iterator(folder, ec)) out.push_back(e.path().filename().string());
    return out;
}

}  // namespace zt::test
