// Kernel emulation shim: a stand-in for <cuda_runtime.h> that lets the kernels of kernels/*.cu run on the CPU
// (tests/kernel_emulation/kernel_emulation_test.cpp). No CUDA installation is needed or used.
//
// How it works. transform.py rewrites only three things a C++ compiler cannot take (a kernel launch
// `k<<<g, b, smem, s>>>(args)` -> `::emu::launch(k, g, b, smem, s)(args)`, `extern __shared__ T a[]` -> a pointer
// to the block's dynamic shared memory, and inline PTX `asm volatile(...)` -> a call of emu::ptx, which
// interprets the few instructions the kernels use: cp.async and its commit/wait groups). Everything else is this
// header: the CUDA types (dim3, float4, ...), the built-in variables (threadIdx, blockIdx, blockDim, gridDim), and
// the device functions (barriers, warp shuffles, atomics, __ldg, the _rn intrinsics, fp16 conversion).
//
// A launch runs the grid's blocks one after another. Each thread of a block is a fiber (its own stack, switched
// cooperatively by emu_runtime.cpp) that runs until it reaches __syncthreads, a warp collective (__shfl_*_sync,
// __ballot_sync, __syncwarp) or its end; the scheduler then completes the collective of each warp whose
// participating lanes have all arrived, or releases the block barrier once every live thread waits at it. So the
// barrier semantics are those of the hardware (exited threads do not count; a collective with an exited lane, a
// barrier some threads never reach, or a warp-level deadlock abort with a message). Threads are resumed in
// alternating order (0..n-1, then n-1..0) so a missing barrier shows as a wrong result. cp.async copies are queued
// per thread and performed at cp.async.wait_group (not at __syncthreads), as on the hardware. Dynamic shared
// memory starts as NaN (0xff bytes) in every block; __shared__ variables are static (one instance, the block's).
// Launch checks as the driver does: block size, grid limits, dynamic shared memory above 48 KB only after
// cudaFuncSetAttribute(MaxDynamicSharedMemorySize), up to 227 KB; a failed launch sets cudaGetLastError().
// Floating point: compile with -ffp-contract=off; fmaf is a true fused multiply-add, expf/exp are the host's
// (correctly rounded or within 1 ulp, as CUDA's precise functions are within 2 ulp), so results agree with the
// device up to the last bits.
#pragma once
#include <math.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---- qualifiers ---------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static
#define __align__(n) alignas(n)

// ---- vector types -------------------------------------------------------------------------------------------
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
inline float2 make_float2(float a, float b) { return float2{a, b}; }
inline uint2 make_uint2(unsigned a, unsigned b) { return uint2{a, b}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
inline int2 make_int2(int a, int b) { return int2{a, b}; }
inline int4 make_int4(int a, int b, int c, int d) { return int4{a, b, c, d}; }

// ---- runtime API (the part the launchers use) ----------------------------------------------------------------
typedef struct emu_stream_st * cudaStream_t;   // not CUstream_st: the emulated launchers never clash with real ones
enum cudaError_t : int {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoDevice = 100,
    cudaErrorLaunchOutOfResources = 701,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8, cudaFuncAttributePreferredSharedMemoryCarveout = 9 };
struct cudaDeviceProp { char name[256]; };
inline const char * cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }

namespace emu {

using u64 = unsigned long long;

// ---- state of the running block (emu_runtime.cpp) ----
struct Copy { unsigned char * dst; const unsigned char * src; int bytes, src_bytes; long group; };
enum class State { ready, block_bar, warp_op, done };
enum class WarpOp { shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, sync };
struct Fiber {
    void * sp = nullptr;          // saved stack pointer (x86-64 switch) or ucontext (fallback)
    void * ctx = nullptr;
    unsigned char * stack = nullptr;
    size_t stack_bytes = 0;
    uint3 tid{0, 0, 0};
    int linear = 0;
    State state = State::ready;
    WarpOp op = WarpOp::sync;
    unsigned mask = 0;
    u64 value = 0, result = 0;
    int param = 0, width = 32;
    std::vector<Copy> copies;     // cp.async not yet performed
    long next_group = 0;
};
extern Fiber * g_cur;
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;
extern unsigned char * g_dyn_smem;
extern size_t g_dyn_smem_bytes;

void yield_to_scheduler();
[[noreturn]] void fatal(const char * fmt, ...);
cudaError_t take_last_error();
cudaError_t peek_last_error();
void set_func_max_dyn_smem(const void * fn, int bytes);
// Runs `body` as every thread of every block of the grid (sets the last error and returns on a bad config).
void run_grid(const void * fn, dim3 grid, dim3 block, size_t smem, const std::function<void()> & body);
// Number of launches that ran, per kernel address (for the test's coverage check).
long launches_of(const void * fn);
long total_launches();

inline const uint3 & thread_idx() { return g_cur->tid; }

template <class T> inline u64 to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    u64 b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T> inline T from_bits(u64 b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
inline u64 warp_collective(WarpOp op, unsigned mask, u64 value, int param, int width) {
    Fiber * f = g_cur;
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0) fatal("warp collective with width %d", width);
    if (!((mask >> (f->linear & 31)) & 1u)) fatal("warp collective: lane %d is not in its own mask 0x%08x", f->linear & 31, mask);
    f->op = op;
    f->mask = mask;
    f->value = value;
    f->param = param;
    f->width = width;
    f->state = State::warp_op;
    yield_to_scheduler();
    return f->result;
}

// ---- dynamic shared memory, cp.async through PTX ----
template <class T> inline T * dyn_smem() { return reinterpret_cast<T *>(g_dyn_smem); }
inline unsigned cvta_to_shared(const void * p) {
    const unsigned char * c = static_cast<const unsigned char *>(p);
    if (c < g_dyn_smem || c > g_dyn_smem + g_dyn_smem_bytes)
        fatal("__cvta_generic_to_shared of %p, outside the dynamic shared memory (static __shared__ is not emulated "
              "as a shared address space)", p);
    return unsigned(c - g_dyn_smem);
}
template <class T> inline u64 ptx_operand(T v) {
    if constexpr (std::is_pointer_v<T>) return u64(reinterpret_cast<uintptr_t>(v));
    else return u64(v);
}
void ptx(const char * text, std::initializer_list<u64> operands);

// ---- launch ----
template <class... P>
struct Launch {
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;
    template <class... A>
    void operator()(A &&... a) const {
        static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
        const std::tuple<P...> args(std::forward<A>(a)...);   // converted to the parameter types, as CUDA does
        void (*k)(P...) = kernel;
        run_grid(reinterpret_cast<const void *>(k), grid, block, smem, [&args, k] { std::apply(k, args); });
    }
};
template <class... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
    return Launch<P...>{kernel, grid, block, smem};
}

}  // namespace emu

inline cudaError_t cudaGetLastError() { return emu::take_last_error(); }
inline cudaError_t cudaPeekAtLastError() { return emu::peek_last_error(); }
template <class T>
cudaError_t cudaFuncSetAttribute(T * fn, cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > 227 * 1024) return cudaErrorInvalidValue;
        emu::set_func_max_dyn_smem(reinterpret_cast<const void *>(fn), value);
    }
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int * n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp * p, int) {
    std::snprintf(p->name, sizeof p->name, "emulated device");
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

// ---- built-in variables ---------------------------------------------------------------------------------------
#define threadIdx (::emu::thread_idx())
#define blockIdx (static_cast<const uint3 &>(::emu::g_block_idx))
#define blockDim (static_cast<const dim3 &>(::emu::g_block_dim))
#define gridDim (static_cast<const dim3 &>(::emu::g_grid_dim))
constexpr int warpSize = 32;

// ---- synchronization and warp functions ---------------------------------------------------------------------
inline void __syncthreads() {
    emu::g_cur->state = emu::State::block_bar;
    emu::yield_to_scheduler();
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_collective(emu::WarpOp::sync, mask, 0, 0, 32); }
template <class T> T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return emu::from_bits<T>(emu::warp_collective(emu::WarpOp::shfl_idx, mask, emu::to_bits(v), src, width));
}
template <class T> T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return emu::from_bits<T>(emu::warp_collective(emu::WarpOp::shfl_up, mask, emu::to_bits(v), int(d), width));
}
template <class T> T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return emu::from_bits<T>(emu::warp_collective(emu::WarpOp::shfl_down, mask, emu::to_bits(v), int(d), width));
}
template <class T> T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
    return emu::from_bits<T>(emu::warp_collective(emu::WarpOp::shfl_xor, mask, emu::to_bits(v), m, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return unsigned(emu::warp_collective(emu::WarpOp::ballot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
    return (__ballot_sync(mask, pred) & mask) == (mask & __ballot_sync(mask, 1));
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// ---- atomics (threads switch only at barriers and collectives, so a read-modify-write is atomic) -------------
template <class T> T atomicAdd(T * p, T v) { T o = *p; *p = o + v; return o; }
template <class T> T atomicSub(T * p, T v) { T o = *p; *p = o - v; return o; }
template <class T> T atomicMax(T * p, T v) { T o = *p; *p = o < v ? v : o; return o; }
template <class T> T atomicMin(T * p, T v) { T o = *p; *p = v < o ? v : o; return o; }
template <class T> T atomicOr(T * p, T v) { T o = *p; *p = o | v; return o; }
template <class T> T atomicAnd(T * p, T v) { T o = *p; *p = o & v; return o; }
template <class T> T atomicXor(T * p, T v) { T o = *p; *p = o ^ v; return o; }
template <class T> T atomicExch(T * p, T v) { T o = *p; *p = v; return o; }
template <class T> T atomicCAS(T * p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }

// ---- loads, bit casts, intrinsics ---------------------------------------------------------------------------
template <class T> T __ldg(const T * p) { return *p; }
template <class T> T __ldcs(const T * p) { return *p; }
template <class T> void __stcs(T * p, T v) { *p = v; }
inline unsigned __float_as_uint(float f) { return emu::from_bits<unsigned>(emu::to_bits(f)); }
inline float __uint_as_float(unsigned u) { return emu::from_bits<float>(emu::to_bits(u)); }
inline int __float_as_int(float f) { return emu::from_bits<int>(emu::to_bits(f)); }
inline float __int_as_float(int u) { return emu::from_bits<float>(emu::to_bits(u)); }
inline long long __double_as_longlong(double d) { return emu::from_bits<long long>(emu::to_bits(d)); }
inline double __longlong_as_double(long long v) { return emu::from_bits<double>(emu::to_bits(v)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(unsigned v) { return v ? __builtin_clz(v) : 32; }
inline int __clzll(unsigned long long v) { return v ? __builtin_clzll(v) : 64; }
inline int __ffs(unsigned v) { return __builtin_ffs(int(v)); }
inline int __ffsll(unsigned long long v) { return __builtin_ffsll((long long)v); }
inline unsigned __brev(unsigned v) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
    return r;
}
inline size_t __cvta_generic_to_shared(const void * p) { return emu::cvta_to_shared(p); }

// CUDA's min/max are overloaded host/device functions; std's templates cover the same-type calls.
using std::max;
using std::min;
