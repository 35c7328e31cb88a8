// Helpers the kernel emulation tests share (kernel_emulation_test.cpp, quant_kernels_test.cpp): guarded host
// buffers (every output lies between guard bytes that must stay intact; outputs that must be written entirely
// start as NaN), the seeded random numbers, and the one-line description of a case, "(T=3,K=96)".
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace emu_test {

constexpr size_t kGuard = 64;              // bytes checked before and after every buffer
constexpr unsigned char kGuardByte = 0xa5;

// n elements of T at byte offset `off` (4: a misaligned float pointer) from a 64-byte aligned base, between guards.
template <class T>
struct Buf {
    size_t n, off;
    std::unique_ptr<unsigned char, void (*)(void *)> mem{nullptr, std::free};
    T * p = nullptr;
    explicit Buf(size_t n_, size_t off_ = 0) : n(n_), off(off_) {
        const size_t bytes = (kGuard + off + n * sizeof(T) + kGuard + 63) / 64 * 64;
        mem.reset(static_cast<unsigned char *>(std::aligned_alloc(64, bytes)));
        std::memset(mem.get(), kGuardByte, bytes);
        p = reinterpret_cast<T *>(mem.get() + kGuard + off);
        std::memset(static_cast<void *>(p), 0, n * sizeof(T));
    }
    Buf(const Buf &) = delete;
    T & operator[](size_t i) { return p[i]; }
    void fill_nan() { std::memset(static_cast<void *>(p), 0xff, n * sizeof(T)); }
    void set(const std::vector<T> & v) { std::memcpy(static_cast<void *>(p), v.data(), n * sizeof(T)); }
    std::vector<T> vec() const { return std::vector<T>(p, p + n); }
    bool guards_ok() const {
        const unsigned char * b = reinterpret_cast<const unsigned char *>(p);
        for (size_t i = 1; i <= kGuard + off; ++i)
            if (b[-ptrdiff_t(i)] != kGuardByte) return false;
        for (size_t i = 0; i < kGuard; ++i)
            if (b[n * sizeof(T) + i] != kGuardByte) return false;
        return true;
    }
};

inline std::mt19937 & rng() {
    static std::mt19937 g(20261122);
    return g;
}
inline float frand(float a = -1.0f, float b = 1.0f) { return std::uniform_real_distribution<float>(a, b)(rng()); }
inline int irand(int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng()); }
inline std::vector<float> randv(size_t n, float a = -1.0f, float b = 1.0f) {
    std::vector<float> v(n);
    for (auto & x : v) x = frand(a, b);
    return v;
}

inline std::string cfg(std::initializer_list<std::pair<const char *, long long>> kv) {
    std::string s = "(";
    for (auto & [k, v] : kv) s += std::string(s.size() > 1 ? "," : "") + k + "=" + std::to_string(v);
    return s + ")";
}


}  // namespace emu_test
