// Kernel emulation runtime (see cuda/cuda_runtime.h for the design): the fibers that are a block's threads, the
// scheduler that completes barriers and warp collectives, the launch checks and the PTX subset (cp.async).
// Context switch: a few lines of x86-64 assembly (callee-saved registers + stack pointer); elsewhere ucontext.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace emu {

Fiber * g_cur = nullptr;
uint3 g_block_idx{0, 0, 0};
dim3 g_block_dim, g_grid_dim;
unsigned char * g_dyn_smem = nullptr;
size_t g_dyn_smem_bytes = 0;

namespace {

cudaError_t g_last_error = cudaSuccess;
std::map<const void *, int> g_max_dyn_smem;   // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
std::map<const void *, long> g_launches;
long g_total_launches = 0;
std::vector<Fiber> g_fibers;
std::vector<float4> g_smem_store;             // 16-byte aligned dynamic shared memory
const std::function<void()> * g_body = nullptr;
constexpr size_t kStackBytes = 256 * 1024;

#if defined(__x86_64__)
extern "C" void emu_switch_stack(void ** save_sp, void * new_sp);
asm(R"(
.text
.globl emu_switch_stack
.type emu_switch_stack,@function
emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch_stack, .-emu_switch_stack
.section .note.GNU-stack,"",@progbits
.text
)");
void * g_sched_sp = nullptr;
#else
ucontext_t g_sched_ctx;
#endif

void complete_copies(Fiber & f, long upto_group) {   // performs the queued copies of groups <= upto_group
    std::vector<Copy> keep;
    for (const Copy & c : f.copies) {
        if (c.group >= 0 && c.group <= upto_group) {
            if (c.src_bytes > 0) std::memcpy(c.dst, c.src, size_t(c.src_bytes));
            if (c.bytes > c.src_bytes) std::memset(c.dst + c.src_bytes, 0, size_t(c.bytes - c.src_bytes));
        } else {
            keep.push_back(c);
        }
    }
    f.copies.swap(keep);
}

[[noreturn]] void fiber_main() {
    (*g_body)();
    Fiber & f = *g_cur;
    for (Copy & c : f.copies) c.group = 0;   // copies still in flight at exit land anyway
    complete_copies(f, 0);
    f.state = State::done;
    yield_to_scheduler();
    std::abort();   // never resumed
}

#if !defined(__x86_64__)
void fiber_entry() { fiber_main(); }
#endif

void start_fiber(Fiber & f) {
    if (!f.stack) {
        const size_t page = size_t(sysconf(_SC_PAGESIZE));
        void * p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) fatal("mmap of a fiber stack failed");
        mprotect(p, page, PROT_NONE);   // guard page: a stack overflow faults instead of corrupting memory
        f.stack = static_cast<unsigned char *>(p) + page;
        f.stack_bytes = kStackBytes;
    }
#if defined(__x86_64__)
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + f.stack_bytes) & ~uintptr_t(15);
    void ** sp = reinterpret_cast<void **>(top);
    *--sp = nullptr;                                        // fake return address of fiber_main
    *--sp = reinterpret_cast<void *>(&fiber_main);          // popped by ret
    for (int r = 0; r < 6; ++r) *--sp = nullptr;            // rbp rbx r12 r13 r14 r15
    f.sp = sp;
#else
    if (!f.ctx) f.ctx = new ucontext_t;
    ucontext_t * c = static_cast<ucontext_t *>(f.ctx);
    getcontext(c);
    c->uc_stack.ss_sp = f.stack;
    c->uc_stack.ss_size = f.stack_bytes;
    c->uc_link = nullptr;
    makecontext(c, fiber_entry, 0);
#endif
}

void resume(Fiber & f) {
    g_cur = &f;
#if defined(__x86_64__)
    emu_switch_stack(&g_sched_sp, f.sp);
#else
    swapcontext(&g_sched_ctx, static_cast<ucontext_t *>(f.ctx));
#endif
    g_cur = nullptr;
}

const char * op_name(WarpOp op) {
    switch (op) {
        case WarpOp::shfl_idx: return "__shfl_sync";
        case WarpOp::shfl_up: return "__shfl_up_sync";
        case WarpOp::shfl_down: return "__shfl_down_sync";
        case WarpOp::shfl_xor: return "__shfl_xor_sync";
        case WarpOp::ballot: return "__ballot_sync";
        case WarpOp::sync: return "__syncwarp";
    }
    return "?";
}

// Completes the collective of warp w if every lane its mask names has arrived; returns whether it did.
bool try_warp(int w, int n) {
    const int lo = 32 * w, hi = std::min(n, lo + 32);
    Fiber * first = nullptr;
    for (int t = lo; t < hi; ++t)
        if (g_fibers[t].state == State::warp_op) { first = &g_fibers[t]; break; }
    if (!first) return false;
    const unsigned mask = first->mask;
    for (int t = lo; t < hi; ++t) {
        const Fiber & f = g_fibers[t];
        if (!((mask >> (t - lo)) & 1u)) continue;
        if (f.state == State::done)
            fatal("block (%u,%u,%u): %s with mask 0x%08x, but lane %d of warp %d has exited", g_block_idx.x,
                  g_block_idx.y, g_block_idx.z, op_name(first->op), mask, t - lo, w);
        if (f.state != State::warp_op) return false;   // not yet arrived
        if (f.op != first->op || f.mask != mask || f.width != first->width)
            fatal("block (%u,%u,%u) warp %d: lanes in different warp collectives (%s mask 0x%08x / %s mask 0x%08x)",
                  g_block_idx.x, g_block_idx.y, g_block_idx.z, w, op_name(first->op), mask, op_name(f.op), f.mask);
    }
    u64 ballot = 0;
    for (int t = lo; t < hi; ++t)
        if (((mask >> (t - lo)) & 1u) && g_fibers[t].value) ballot |= 1ull << (t - lo);
    for (int t = lo; t < hi; ++t) {
        Fiber & f = g_fibers[t];
        if (!((mask >> (t - lo)) & 1u)) continue;
        const int lane = t - lo, wd = f.width, seg = lane / wd * wd;
        int src = lane;
        bool own = false;
        switch (f.op) {
            case WarpOp::shfl_idx: src = seg + ((f.param % wd) + wd) % wd; break;
            case WarpOp::shfl_up: src = lane - f.param; own = src < seg; break;
            case WarpOp::shfl_down: src = lane + f.param; own = src >= seg + wd; break;
            case WarpOp::shfl_xor: src = lane ^ f.param; own = src >= seg + wd; break;
            case WarpOp::ballot: f.result = ballot; break;
            case WarpOp::sync: f.result = 0; break;
        }
        if (f.op == WarpOp::ballot || f.op == WarpOp::sync) continue;
        if (own) {
            f.result = f.value;
        } else if (src < 0 || src >= 32 || lo + src >= hi || !((mask >> src) & 1u)) {
            f.result = ~0ull;   // reading a lane that does not take part: undefined; all ones (NaN, -1) shows it
        } else {
            f.result = g_fibers[lo + src].value;
        }
    }
    for (int t = lo; t < hi; ++t)
        if ((mask >> (t - lo)) & 1u) g_fibers[t].state = State::ready;
    return true;
}

void run_block(int n) {
    for (int t = 0; t < n; ++t) {
        Fiber & f = g_fibers[t];
        f.linear = t;
        f.tid = uint3{unsigned(t) % g_block_dim.x, unsigned(t) / g_block_dim.x % g_block_dim.y,
                      unsigned(t) / (g_block_dim.x * g_block_dim.y)};
        f.state = State::ready;
        f.copies.clear();
        f.next_group = 0;
        start_fiber(f);
    }
    bool forward = true;
    for (;;) {
        for (int i = 0; i < n; ++i) {
            Fiber & f = g_fibers[forward ? i : n - 1 - i];
            if (f.state == State::ready) resume(f);
        }
        forward = !forward;
        bool live = false, progress = false;
        for (int t = 0; t < n; ++t) live |= g_fibers[t].state != State::done;
        if (!live) return;
        for (int w = 0; w * 32 < n; ++w) progress |= try_warp(w, n);
        if (progress) continue;
        bool all_at_bar = true;
        for (int t = 0; t < n; ++t)
            if (g_fibers[t].state != State::done && g_fibers[t].state != State::block_bar) all_at_bar = false;
        if (!all_at_bar) {
            int at_bar = 0, at_warp = 0;
            for (int t = 0; t < n; ++t) {
                at_bar += g_fibers[t].state == State::block_bar;
                at_warp += g_fibers[t].state == State::warp_op;
            }
            fatal("block (%u,%u,%u): deadlock: %d threads wait at __syncthreads, %d in warp collectives that never "
                  "complete", g_block_idx.x, g_block_idx.y, g_block_idx.z, at_bar, at_warp);
        }
        for (int t = 0; t < n; ++t)
            if (g_fibers[t].state == State::block_bar) g_fibers[t].state = State::ready;
    }
}

long parse_operand(const std::string & tok, std::initializer_list<u64> ops, const char * text) {
    std::string s;
    for (char c : tok)
        if (c != ' ' && c != '\t' && c != '[' && c != ']' && c != ';' && c != '\n') s += c;
    if (s.size() >= 2 && s[0] == '%') {
        const size_t k = size_t(std::atoi(s.c_str() + 1));
        if (k >= ops.size()) fatal("PTX operand %s out of range in \"%s\"", s.c_str(), text);
        return long(ops.begin()[k]);
    }
    char * end = nullptr;
    const long v = std::strtol(s.c_str(), &end, 0);
    if (s.empty() || *end) fatal("PTX operand \"%s\" not understood in \"%s\"", s.c_str(), text);
    return v;
}

}  // namespace

void yield_to_scheduler() {
    Fiber & f = *g_cur;
#if defined(__x86_64__)
    emu_switch_stack(&f.sp, g_sched_sp);
#else
    swapcontext(static_cast<ucontext_t *>(f.ctx), &g_sched_ctx);
#endif
}

void fatal(const char * fmt, ...) {
    std::fprintf(stderr, "kernel emulation: ");
    va_list ap;
    va_start(ap, fmt);
    std::vfprintf(stderr, fmt, ap);
    va_end(ap);
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
    std::abort();
}

cudaError_t take_last_error() {
    const cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}
cudaError_t peek_last_error() { return g_last_error; }
void set_func_max_dyn_smem(const void * fn, int bytes) { g_max_dyn_smem[fn] = bytes; }
long launches_of(const void * fn) {
    auto it = g_launches.find(fn);
    return it == g_launches.end() ? 0 : it->second;
}
long total_launches() { return g_total_launches; }

void run_grid(const void * fn, dim3 grid, dim3 block, size_t smem, const std::function<void()> & body) {
    if (g_cur) fatal("a kernel launch from device code is not emulated");
    const unsigned long long threads = 1ull * block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
        grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
        std::fprintf(stderr, "kernel emulation: invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u)\n",
                     grid.x, grid.y, grid.z, block.x, block.y, block.z);
        g_last_error = cudaErrorInvalidConfiguration;
        return;
    }
    auto it = g_max_dyn_smem.find(fn);
    const size_t limit = size_t(it == g_max_dyn_smem.end() ? 48 * 1024 : std::max(48 * 1024, it->second));
    if (smem > limit) {
        std::fprintf(stderr, "kernel emulation: %zu bytes of dynamic shared memory over the limit %zu\n", smem, limit);
        g_last_error = cudaErrorInvalidValue;
        return;
    }
    ++g_launches[fn];
    ++g_total_launches;
    const int n = int(threads);
    if (int(g_fibers.size()) < n) g_fibers.resize(size_t(n));   // stacks are kept (stack == nullptr: new)
    g_smem_store.resize(std::max(g_smem_store.size(), smem / sizeof(float4) + 1));
    g_dyn_smem = reinterpret_cast<unsigned char *>(g_smem_store.data());
    g_dyn_smem_bytes = smem;
    g_grid_dim = grid;
    g_block_dim = block;
    g_body = &body;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                g_block_idx = uint3{bx, by, bz};
                std::memset(g_dyn_smem, 0xff, smem);   // uninitialized shared memory reads as NaN
                run_block(n);
            }
    g_body = nullptr;
}

void ptx(const char * text, std::initializer_list<u64> ops) {
    std::string s(text);
    const size_t b = s.find_first_not_of(" \t\n");
    s = b == std::string::npos ? std::string() : s.substr(b);
    const size_t sp = s.find_first_of(" \t;");
    const std::string op = s.substr(0, sp);
    std::vector<std::string> args;
    if (sp != std::string::npos) {
        std::string rest = s.substr(sp);
        const size_t semi = rest.find(';');
        if (semi != std::string::npos) rest = rest.substr(0, semi);
        size_t start = 0;
        for (size_t i = 0; i <= rest.size(); ++i)
            if (i == rest.size() || rest[i] == ',') {
                std::string a = rest.substr(start, i - start);
                if (a.find_first_not_of(" \t\n") != std::string::npos) args.push_back(a);
                start = i + 1;
            }
    }
    Fiber & f = *g_cur;
    if (op == "cp.async.commit_group") {
        for (Copy & c : f.copies)
            if (c.group < 0) c.group = f.next_group;
        ++f.next_group;
    } else if (op == "cp.async.wait_group" && args.size() == 1) {
        const long keep = parse_operand(args[0], ops, text);   // the newest `keep` committed groups may stay
        complete_copies(f, f.next_group - 1 - keep);
    } else if (op == "cp.async.wait_all") {
        for (Copy & c : f.copies)
            if (c.group < 0) c.group = f.next_group;
        ++f.next_group;
        complete_copies(f, f.next_group);
    } else if ((op == "cp.async.ca.shared.global" || op == "cp.async.cg.shared.global") &&
               (args.size() == 3 || args.size() == 4)) {
        const long dst = parse_operand(args[0], ops, text);
        const long src = parse_operand(args[1], ops, text);
        const long bytes = parse_operand(args[2], ops, text);
        const long src_bytes = args.size() == 4 ? parse_operand(args[3], ops, text) : bytes;
        if (!(bytes == 4 || bytes == 8 || bytes == 16) || (op == "cp.async.cg.shared.global" && bytes != 16))
            fatal("cp.async of %ld bytes is not a valid size (%s)", bytes, text);
        if (src_bytes < 0 || src_bytes > bytes) fatal("cp.async src-size %ld of %ld bytes", src_bytes, bytes);
        if (dst % bytes != 0 || (src_bytes > 0 && src % bytes != 0))
            fatal("cp.async of %ld bytes: misaligned shared offset %ld or global address 0x%lx", bytes, dst, src);
        if (dst < 0 || size_t(dst + bytes) > g_dyn_smem_bytes)
            fatal("cp.async writes shared bytes [%ld, %ld) outside the %zu bytes of dynamic shared memory", dst,
                  dst + bytes, g_dyn_smem_bytes);
        f.copies.push_back(Copy{g_dyn_smem + dst, reinterpret_cast<const unsigned char *>(uintptr_t(src)), int(bytes),
                                int(src_bytes), -1});
    } else {
        fatal("PTX not emulated: \"%s\"", text);
    }
}

}  // namespace emu
