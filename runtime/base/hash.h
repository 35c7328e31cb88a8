// Stable 64-bit hashes (the same value in every process, build and machine): FNV-1a 64 and the splitmix64
// finalizer. Used for what must agree across ranks or runs: checkpoint identities, NVMe slice tags and file names,
// per-request seeds, the cross-rank check of the request queue. Not for hash tables (std::hash is enough there).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace zt {

constexpr uint64_t kFnv64Offset = 1469598103934665603ull;

// FNV-1a 64 of `n` bytes, continuing from `h` (chain calls to hash several pieces).
inline uint64_t fnv1a64(const void * data, size_t n, uint64_t h = kFnv64Offset) {
    const unsigned char * p = static_cast<const unsigned char *>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
inline uint64_t fnv1a64(const std::string & s, uint64_t h = kFnv64Offset) { return fnv1a64(s.data(), s.size(), h); }

// splitmix64's finalizer: spreads every input bit over the output.
inline uint64_t mix64(uint64_t h) {
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27; h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

// FNV-1a 64 of `s` from `seed`, finished with mix64 (two seeds make a 128-bit identity).
inline uint64_t hash64(const std::string & s, uint64_t seed) { return mix64(fnv1a64(s, kFnv64Offset ^ seed)); }

}  // namespace zt
