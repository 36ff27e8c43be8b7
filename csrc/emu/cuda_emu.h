// The CUDA execution model on the CPU: pyneural's .cu files compiled as C++ with this header
// forced in front (g++ -include cuda_emu.h -DPN_CUDA_EMULATOR), run by pyneural/cuda/emulator.
//
// What it emulates, and how:
//  * Threads are fibers (own stacks, a 20-instruction context switch below): the threads of a
//    block truly interleave. A block runs all its fibers on the calling OS thread until every
//    one has exited; blocks run one after another. __syncthreads parks a fiber until every live
//    thread of the block has arrived; warp collectives (__shfl_*_sync, __ballot_sync, __any_sync,
//    __syncwarp, ldmatrix, mma.sync) park it until every lane named in the mask has arrived, and
//    the last arriver computes the result for all of them. Nothing else switches fibers, so a
//    thread runs from one barrier to the next in one go -- the race mode below finds the code
//    that would only be correct with that luck.
//  * __shared__ variables are `static thread_local`: one block at a time per OS thread, so the
//    module's TLS segment *is* the block's shared memory (static variables plus the dynamic area
//    `pn_emu_dynamic_smem`), one contiguous window whose offsets are the 32-bit shared addresses
//    that __cvta_generic_to_shared and the ldmatrix / ld.shared twins use. It is filled with 0xFF
//    (NaN for every float type) before each block.
//  * cp.async copies are recorded per thread and group; they land at the matching
//    cp.async.wait_group / wait_all. Until then the destination holds poison.
//  * Checked mode (the default; compiled with -fsanitize=thread but linked against the callbacks
//    below instead of ThreadSanitizer's runtime, the way the Linux kernel's KCSAN uses the same
//    compiler pass): every load and store of kernel code reports its address and width here. A
//    global access inside the 256-byte redzone around an array argument, a shared access outside
//    the static variables or past the launch's dynamic size, a 8/16-byte access that is not
//    naturally aligned, a read of a cp.async destination before its wait, and a shared read of a word
//    no thread of the block has written yet (compute-sanitizer's initcheck) are faults.
//    Race mode adds a shadow word per 4 bytes of shared memory (last writer, last reader, barrier
//    epoch): a write and another thread's read or write of the same word with no __syncthreads
//    (or, within a warp, __syncwarp / warp collective) between them is a fault.
//  * A fault stops the launch (its fibers are abandoned) and comes back as a message naming the
//    kernel, block, thread and address; pyneural raises it as pyneural.cuda.KernelFault.
#pragma once
#define PN_CUDA_EMULATOR 1

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>

#include <math.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// ---- CUDA keywords -------------------------------------------------------------------------
#ifndef __global__
#define __global__
#endif
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
// Each __shared__ variable is preceded by a 64-byte redzone variable (pn_rz_N): an access running
// off the end of a variable lands in one (the compiler lays a function's statics out in reverse).
#define PN_EMU_CAT2(a, b) a##b
#define PN_EMU_CAT(a, b) PN_EMU_CAT2(a, b)
#define __shared__ \
  static thread_local __attribute__((used)) unsigned char PN_EMU_CAT(pn_rz_, __COUNTER__)[64]; static thread_local
#define PN_EMU_RT __attribute__((no_sanitize_thread, noinline))
#define PN_EMU_API extern "C" __attribute__((visibility("default"), no_sanitize_thread, noinline))

// ---- vector types ------------------------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- math and bit intrinsics -------------------------------------------------------------
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; std::memcpy(&v, &f, 4); return v; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned v; std::memcpy(&v, &f, 4); return v; }
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32); }
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
inline int __ffs(int v) { return __builtin_ffs(v); }
template <class T> inline T __ldg(const T* p) { return *p; }
// CUDA's min / max are overloaded for every arithmetic type; mixed types promote as a ? : does.
template <class A, class B> inline typename std::common_type<A, B>::type min(A a, B b) { return b < a ? b : a; }
template <class A, class B> inline typename std::common_type<A, B>::type max(A a, B b) { return a < b ? b : a; }

namespace pn_emu {

typedef long long i64;
constexpr int MAX_THREADS = 1024;
constexpr unsigned DYNAMIC_SMEM_MAX = 232448;  // 227 KiB: the opt-in maximum of sm_90
constexpr uintptr_t REDZONE = 256;             // bytes around each array argument that fault
constexpr int MAX_RANGES = 64;

// ---- fibers: a minimal x86-64 System V context switch (callee-saved registers, MXCSR, x87 CW)
extern "C" void pn_emu_switch(void** save_sp, void* new_sp);
asm(R"(
  .text
  .p2align 4
  .local pn_emu_switch
  .type pn_emu_switch,@function
pn_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size pn_emu_switch, .-pn_emu_switch
  .p2align 4
  .local pn_emu_fiber_start
  .type pn_emu_fiber_start,@function
pn_emu_fiber_start:
  movq %r13, %rdi
  callq *%r12
  ud2
  .size pn_emu_fiber_start, .-pn_emu_fiber_start
)");
extern "C" void pn_emu_fiber_start();

enum State { READY, AT_BARRIER, AT_WARP, DONE };

struct Copy { char* dst; const char* src; int bytes, src_bytes; };
constexpr int MAX_COPIES = 512;  // outstanding cp.async per thread (a 4-stage pipeline uses ~60)
constexpr int MAX_GROUPS = 32;

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;
  uint3 tid;
  int linear = 0, lane = 0, warp = 0;
  State state = DONE;
  // cp.async bookkeeping: copies[0, n_copies) in issue order; group_end[g] = copies in groups <= g
  Copy copies[MAX_COPIES];
  int n_copies = 0, n_groups = 0, group_end[MAX_GROUPS];
};

struct Warp {
  unsigned lanes = 0;        // lanes that exist (the last warp of a block may be partial)
  unsigned alive = 0;        // lanes that have not exited
  unsigned arrived = 0, mask = 0;
  int op = 0;
  unsigned epoch = 0;        // warp-level syncs passed (race mode)
  uint32_t in[32][16], out[32][16];  // each lane's operands / results of the collective
};

struct Range { uintptr_t lo, hi; int arg; };
struct SharedVar { uint64_t off, size; const char* name; };  // a static __shared__ variable

struct Shadow {  // race mode: one per 4 bytes of shared memory
  uint32_t block;           // block serial the entry belongs to (older entries are empty)
  uint32_t w_epoch, r_epoch;
  uint16_t w_tid, r_tid;    // thread + 1 (0: none)
  uint16_t w_wepoch, r_wepoch;
  uint8_t r_many;
};

// One launch at a time (pyneural/cuda/emulator serialises them): all state is global.
struct Launch {
  const char* kernel = "";
  dim3 grid, block;
  uint3 block_idx;
  unsigned dyn_bytes = 0;
  int nthreads = 0, live = 0, arrived = 0;
  unsigned epoch = 0, block_serial = 0;
  bool race = false, failed = false, checking = false, atomic = false;
  char* win = nullptr;  // the TLS window: static __shared__ variables + the dynamic area
  size_t win_size = 0;
  char* dyn = nullptr;
  Range ranges[MAX_RANGES];
  int n_ranges = 0;
  uintptr_t box_lo = 0, box_hi = 0;  // all ranges with their redzones
  void* main_sp = nullptr;
  const void* barrier_site = nullptr;
  int barrier_first = 0;
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  char message[2048];
};

inline Launch L;
inline Fiber* fibers = nullptr;  // MAX_THREADS of them, stacks mapped once
inline Warp* warps = nullptr;
inline Fiber* cur = nullptr;
inline uint3 tids[MAX_THREADS];  // threadIdx of every thread of the block
inline int cur_index = 0;        // the running thread
inline Shadow* shadow = nullptr;
inline size_t stack_bytes = 0;
inline uint8_t* pending = nullptr;  // one byte per 4 bytes of the window: a cp.async will land there
inline uint32_t* written = nullptr; // per 4 bytes: the block serial of the last write (initcheck)
inline const SharedVar* svars = nullptr;  // sorted by offset (from the module's TLS symbols)
inline int n_svars = 0;

}  // namespace pn_emu

// Built-in variables of the current thread.
#define threadIdx (pn_emu::tids[pn_emu::cur_index])
#define blockIdx (pn_emu::L.block_idx)
#define blockDim (pn_emu::L.block)
#define gridDim (pn_emu::L.grid)
#define warpSize 32

// The dynamic shared memory area (common.cuh's pn::dynamic_smem() returns it).
thread_local __attribute__((aligned(1024))) unsigned char pn_emu_dynamic_smem[pn_emu::DYNAMIC_SMEM_MAX];

namespace pn_emu {

// ---- faults ------------------------------------------------------------------------------
PN_EMU_RT static void switch_to_main();

PN_EMU_RT static void fault(const char* fmt, ...) {
  L.checking = false;
  char what[1400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (cur != nullptr)
    snprintf(L.message, sizeof L.message, "%s: block (%u,%u,%u), thread (%u,%u,%u): %s", L.kernel, L.block_idx.x,
             L.block_idx.y, L.block_idx.z, cur->tid.x, cur->tid.y, cur->tid.z, what);
  else
    snprintf(L.message, sizeof L.message, "%s: %s", L.kernel, what);
  L.failed = true;
  if (cur != nullptr) switch_to_main();  // never returns: the launch is over
}

// ---- fiber switching ---------------------------------------------------------------------
PN_EMU_RT static void to_fiber(Fiber* f) {
  cur = f;
  cur_index = f->linear;
#if defined(__SANITIZE_ADDRESS__)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack, stack_bytes);
  pn_emu_switch(&L.main_sp, f->sp);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  pn_emu_switch(&L.main_sp, f->sp);
#endif
  cur = nullptr;
}

// Park the current fiber (its state says why) and run the scheduler. `dying`: never resumed.
PN_EMU_RT static void switch_to_main_impl(bool dying) {
  Fiber* f = cur;
  const bool was_checking = L.checking;
  L.checking = false;
#if defined(__SANITIZE_ADDRESS__)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(dying ? nullptr : &fake, L.main_stack_bottom, L.main_stack_size);
  pn_emu_switch(&f->sp, L.main_sp);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  (void)dying;
  pn_emu_switch(&f->sp, L.main_sp);
#endif
  cur = f;
  cur_index = f->linear;
  L.checking = was_checking;
}
PN_EMU_RT static void switch_to_main() { switch_to_main_impl(true); }
PN_EMU_RT static void park() { switch_to_main_impl(false); }

PN_EMU_RT static void complete_copies(Fiber* f, int upto);
PN_EMU_RT static void thread_exit(Fiber* f);

PN_EMU_RT static void fiber_main(void* p) {
  Fiber* f = static_cast<Fiber*>(p);
  cur = f;
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &L.main_stack_bottom, &L.main_stack_size);
#endif
  L.checking = true;
  L.body(L.body_arg);
  L.checking = false;
  thread_exit(f);
  switch_to_main();
}

PN_EMU_RT static void init_fiber(Fiber* f) {
  f->n_copies = f->n_groups = 0;
  f->state = READY;
  uintptr_t top = (reinterpret_cast<uintptr_t>(f->stack) + stack_bytes) & ~uintptr_t(15);
  uint64_t* a = reinterpret_cast<uint64_t*>(top - 8);  // return address slot: top - 8
  a[0] = reinterpret_cast<uint64_t>(&pn_emu_fiber_start);
  a[-1] = 0;                                           // rbp
  a[-2] = 0;                                           // rbx
  a[-3] = reinterpret_cast<uint64_t>(&fiber_main);     // r12: function
  a[-4] = reinterpret_cast<uint64_t>(f);               // r13: argument
  a[-5] = 0;                                           // r14
  a[-6] = 0;                                           // r15
  uint32_t mxcsr;
  uint16_t fcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  uint32_t* ctl = reinterpret_cast<uint32_t*>(&a[-7]);
  ctl[0] = mxcsr;
  ctl[1] = fcw;
  f->sp = &a[-7];
}

// ---- barriers ----------------------------------------------------------------------------
PN_EMU_RT static void release_barrier() {
  L.arrived = 0;
  ++L.epoch;
  for (int i = 0; i < L.nthreads; ++i)
    if (fibers[i].state == AT_BARRIER) fibers[i].state = READY;
}

PN_EMU_RT static void syncthreads() {
  const void* site = __builtin_return_address(0);
  Fiber* f = cur;
  const bool was = L.checking;
  L.checking = false;
  if (L.arrived == 0) {
    L.barrier_site = site;
    L.barrier_first = f->linear;
  } else if (site != L.barrier_site) {
    const Fiber& o = fibers[L.barrier_first];
    fault("__syncthreads divergence: this thread waits at a different __syncthreads (code %p) than thread "
          "(%u,%u,%u) (code %p); every thread of the block must reach the same barrier", site, o.tid.x, o.tid.y,
          o.tid.z, L.barrier_site);
  }
  if (++L.arrived == L.live) {
    release_barrier();
  } else {
    f->state = AT_BARRIER;
    park();
  }
  L.checking = was;
}

// ---- warp collectives --------------------------------------------------------------------
enum WarpOp { OP_SYNC = 1, OP_SHFL, OP_SHFL_UP, OP_SHFL_DOWN, OP_SHFL_XOR, OP_BALLOT, OP_ANY, OP_ALL,
              OP_LDMATRIX, OP_MMA };
inline const char* op_name(int op) {
  static const char* names[] = {"?", "__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync", "ldmatrix",
                                "mma.sync"};
  return names[op];
}

typedef void (*CollectiveFn)(Warp& w, unsigned mask, int width);

// Deposit in[lane] (already written by the caller), wait for every lane of `mask`, and let the
// last arriver run `fn` for the warp. Results are in w.out[lane] afterwards.
PN_EMU_RT static Warp& collective(int op, unsigned mask, CollectiveFn fn, int width) {
  Fiber* f = cur;
  Warp& w = warps[f->warp];
  const unsigned bit = 1u << f->lane;
  if (!(mask & bit)) fault("%s with mask 0x%08x called by lane %d, which is not in the mask", op_name(op), mask, f->lane);
  if (mask & ~w.lanes)
    fault("%s with mask 0x%08x names lanes that do not exist in this block (warp %d has lanes 0x%08x)", op_name(op),
          mask, f->warp, w.lanes);
  if (w.arrived == 0) {
    w.op = op; w.mask = mask;
  } else if (w.op != op || w.mask != mask) {
    fault("warp %d: lane %d calls %s (mask 0x%08x) while lanes 0x%08x wait in %s (mask 0x%08x)", f->warp, f->lane,
          op_name(op), mask, w.arrived, op_name(w.op), w.mask);
  }
  if (mask & ~w.alive)
    fault("%s with mask 0x%08x: lanes 0x%08x have already exited", op_name(op), mask, mask & ~w.alive);
  w.arrived |= bit;
  if (w.arrived == mask) {
    fn(w, mask, width);
    w.arrived = 0;
    ++w.epoch;
    for (int l = 0; l < 32; ++l)
      if ((mask >> l) & 1u) {
        Fiber& o = fibers[f->warp * 32 + l];
        if (o.state == AT_WARP) o.state = READY;
      }
  } else {
    f->state = AT_WARP;
    park();
  }
  return w;
}

inline void op_nothing(Warp&, unsigned, int) {}
template <int OP>
inline void op_shfl(Warp& w, unsigned mask, int width) {
  for (int l = 0; l < 32; ++l) {
    if (!((mask >> l) & 1u)) continue;
    const int base = l & ~(width - 1), arg = static_cast<int>(w.in[l][2]);
    int src = l;
    if (OP == OP_SHFL) src = base + (arg & (width - 1));
    if (OP == OP_SHFL_XOR) src = l ^ arg;
    if (OP == OP_SHFL_DOWN) src = (l - base) + arg < width ? l + arg : l;
    if (OP == OP_SHFL_UP) src = (l - base) >= arg ? l - arg : l;
    if (src < 0 || src > 31 || src >= base + width || !((mask >> src) & 1u)) {
      w.out[l][0] = w.out[l][1] = 0xffffffffu;  // an inactive source lane: undefined, here poison
    } else {
      w.out[l][0] = w.in[src][0];
      w.out[l][1] = w.in[src][1];
    }
  }
}
template <int OP>
inline void op_vote(Warp& w, unsigned mask, int) {
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if (((mask >> l) & 1u) && w.in[l][0]) ballot |= 1u << l;
  const unsigned r = OP == OP_BALLOT ? ballot : OP == OP_ANY ? (ballot != 0) : (ballot == mask);
  for (int l = 0; l < 32; ++l) w.out[l][0] = r;
}

template <class T>
PN_EMU_RT static T shfl(int op, CollectiveFn fn, unsigned mask, T v, int arg, int width) {
  static_assert(sizeof(T) <= 8, "__shfl_*_sync on a type wider than 8 bytes");
  const bool was = L.checking;
  L.checking = false;
  if (width <= 0 || width > 32 || (width & (width - 1)))
    fault("%s: width %d is not a power of two in [1, 32]", op_name(op), width);
  Warp& w0 = warps[cur->warp];
  uint32_t* in = w0.in[cur->lane];
  in[0] = in[1] = 0;
  std::memcpy(in, &v, sizeof(T));
  in[2] = static_cast<uint32_t>(arg);
  Warp& w = collective(op, mask, fn, width);
  T r;
  std::memcpy(&r, w.out[cur->lane], sizeof(T));
  L.checking = was;
  return r;
}

PN_EMU_RT static unsigned vote(int op, CollectiveFn fn, unsigned mask, int pred) {
  const bool was = L.checking;
  L.checking = false;
  warps[cur->warp].in[cur->lane][0] = pred != 0;
  Warp& w = collective(op, mask, fn, 32);
  const unsigned r = w.out[cur->lane][0];
  L.checking = was;
  return r;
}

// ---- memory checks -----------------------------------------------------------------------
inline bool in_window(uintptr_t a) { return a - reinterpret_cast<uintptr_t>(L.win) < L.win_size; }

// "`name` + 12" for a window offset, or "shared offset 12" where no variable covers it.
PN_EMU_RT static const SharedVar* var_at(uintptr_t off) {
  int lo = 0, hi = n_svars - 1, found = -1;
  while (lo <= hi) {
    const int mid = (lo + hi) / 2;
    if (svars[mid].off <= off) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
  }
  return found >= 0 ? &svars[found] : nullptr;
}
PN_EMU_RT static const char* where(uintptr_t off) {
  static char buf[512];
  const uintptr_t dyn_off = reinterpret_cast<uintptr_t>(L.dyn) - reinterpret_cast<uintptr_t>(L.win);
  const SharedVar* v = var_at(off);
  if (off >= dyn_off && off < dyn_off + DYNAMIC_SMEM_MAX)
    snprintf(buf, sizeof buf, "dynamic shared memory + %lu", (unsigned long)(off - dyn_off));
  else if (v != nullptr && off < v->off + v->size)
    snprintf(buf, sizeof buf, "__shared__ %s + %lu", v->name, (unsigned long)(off - v->off));
  else
    snprintf(buf, sizeof buf, "shared offset %lu", (unsigned long)off);
  return buf;
}

PN_EMU_RT static void check_shared(uintptr_t a, unsigned size, bool write, bool aligned_access) {
  const uintptr_t off = a - reinterpret_cast<uintptr_t>(L.win);
  const uintptr_t dyn_lo = reinterpret_cast<uintptr_t>(L.dyn), dyn_end = dyn_lo + DYNAMIC_SMEM_MAX;
  const char* rw = write ? "write" : "read";
  if (a >= dyn_lo && a < dyn_end) {
    if (a + size > dyn_lo + L.dyn_bytes)
      fault("out-of-bounds shared %s of %u bytes at dynamic shared memory + %lu: the launch has %u bytes of "
            "dynamic shared memory", rw, size, (unsigned long)(a - dyn_lo), L.dyn_bytes);
  } else if (off + size > L.win_size) {
    fault("shared %s of %u bytes at shared offset %lu runs past the end of shared memory (%lu bytes)", rw, size,
          (unsigned long)off, (unsigned long)L.win_size);
  } else if (n_svars > 0) {
    const SharedVar* v = var_at(off);
    if (v == nullptr)
      fault("out-of-bounds shared %s of %u bytes at shared offset %lu, before every __shared__ variable", rw, size,
            (unsigned long)off);
    if (off + size > v->off + v->size)
      fault("out-of-bounds shared %s of %u bytes at __shared__ %s + %lu: the variable has %lu bytes", rw, size,
            v->name, (unsigned long)(off - v->off), (unsigned long)v->size);
  }
  if (aligned_access && size > 1 && (a & (size - 1)))
    fault("misaligned %u-byte shared %s at %s (address %p): needs %u-byte alignment", size, rw, where(off),
          reinterpret_cast<void*>(a), size);
  for (uintptr_t w = off >> 2; w <= (off + size - 1) >> 2; ++w) {
    if (pending[w])
      fault("shared %s at %s touches the destination of a cp.async issued by thread %d that has not landed yet "
            "(no cp.async.wait_group / wait_all for it)", rw, where(off), pending[w] == 255 ? -1 : pending[w] - 1);
    if (write) {
      written[w] = L.block_serial;
    } else if (written[w] != L.block_serial && !L.race) {  // race mode reports these as races instead
      fault("shared read of %u bytes at %s reads memory that no thread of this block has written (it holds the "
            "previous block's data or garbage on a GPU)", size, where(off));
    }
    if (!L.race || L.atomic) continue;  // atomics never race with each other
    Shadow& s = shadow[w];
    if (s.block != L.block_serial) { std::memset(&s, 0, sizeof s); s.block = L.block_serial; }
    const int me = cur->linear + 1;
    const unsigned wep = warps[cur->warp].epoch;
    auto unordered = [&](int other, uint32_t epoch, uint16_t wepoch) {
      if (other == 0 || other == me || epoch != L.epoch) return false;
      if ((other - 1) / 32 == cur->warp && wepoch != static_cast<uint16_t>(wep)) return false;
      return true;
    };
    if (unordered(s.w_tid, s.w_epoch, s.w_wepoch))
      fault("race on shared memory at %s: this thread's %s follows a write by thread %d with no __syncthreads "
            "between them", where(w * 4), rw, s.w_tid - 1);
    if (write) {
      if (s.r_many && s.r_epoch == L.epoch)
        fault("race on shared memory at %s: this thread's write follows reads by several threads with no "
              "__syncthreads between them", where(w * 4));
      if (unordered(s.r_tid, s.r_epoch, s.r_wepoch))
        fault("race on shared memory at %s: this thread's write follows a read by thread %d with no "
              "__syncthreads between them", where(w * 4), s.r_tid - 1);
      s.w_tid = static_cast<uint16_t>(me); s.w_epoch = L.epoch; s.w_wepoch = static_cast<uint16_t>(wep);
      s.r_tid = 0; s.r_many = 0;
    } else {
      if (s.r_tid != 0 && s.r_tid != me && s.r_epoch == L.epoch) {
        s.r_many = unordered(s.r_tid, s.r_epoch, s.r_wepoch) ? 1 : s.r_many;
      }
      s.r_tid = static_cast<uint16_t>(me); s.r_epoch = L.epoch; s.r_wepoch = static_cast<uint16_t>(wep);
    }
  }
}

PN_EMU_RT static void wild(uintptr_t a, unsigned size, bool write);
PN_EMU_RT static void check_global(uintptr_t a, unsigned size, bool write, bool aligned_access) {
  for (int i = 0; i < L.n_ranges; ++i) {
    const Range& r = L.ranges[i];
    if (a >= r.lo && a < r.hi) {
      if (a + size > r.hi)
        fault("global %s of %u bytes at %p runs %lu bytes past the end of argument %d (%lu bytes)",
              write ? "write" : "read", size, reinterpret_cast<void*>(a), (unsigned long)(a + size - r.hi), r.arg,
              (unsigned long)(r.hi - r.lo));
      if (aligned_access && size > 1 && (a & (size - 1)))
        fault("misaligned %u-byte global %s at %p (byte %lu of argument %d): needs %u-byte alignment", size,
              write ? "write" : "read", reinterpret_cast<void*>(a), (unsigned long)(a - r.lo), r.arg, size);
      return;
    }
  }
  for (int i = 0; i < L.n_ranges; ++i) {
    const Range& r = L.ranges[i];
    if (a + size > r.lo - REDZONE && a < r.lo)
      fault("out-of-bounds global %s of %u bytes at %p: %lu bytes before the start of argument %d (%lu bytes)",
            write ? "write" : "read", size, reinterpret_cast<void*>(a), (unsigned long)(r.lo - a), r.arg,
            (unsigned long)(r.hi - r.lo));
    if (a >= r.hi && a < r.hi + REDZONE)
      fault("out-of-bounds global %s of %u bytes at %p: element at byte %lu of argument %d, which has %lu bytes",
            write ? "write" : "read", size, reinterpret_cast<void*>(a), (unsigned long)(a - r.lo), r.arg,
            (unsigned long)(r.hi - r.lo));
  }
  wild(a, size, write);
}

// Memory kernel code may touch besides its arguments and shared memory: fiber stacks (locals), the
// fiber and warp records (threadIdx), and this module's own loaded segments (blockIdx, constants).
struct Region { uintptr_t lo, hi; };
inline Region allowed[16];
inline int n_allowed = 0;

PN_EMU_RT static void wild(uintptr_t a, unsigned size, bool write) {
  for (int i = 0; i < n_allowed; ++i)
    if (a >= allowed[i].lo && a < allowed[i].hi) return;
  fault("invalid global %s of %u bytes at %p: not inside any array argument of the launch (nor within %lu bytes "
        "of one)", write ? "write" : "read", size, reinterpret_cast<void*>(a), (unsigned long)REDZONE);
}

inline uintptr_t stacks_lo = 0, stacks_span = 0;  // all fiber stacks: locals, never checked

__attribute__((no_sanitize_thread, always_inline)) inline void on_access(const void* p, unsigned size, bool write,
                                                                          bool aligned_access) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a - stacks_lo < stacks_span || !L.checking) return;  // the common case: a local variable
  L.checking = false;
  if (in_window(a)) check_shared(a, size, write, aligned_access);
  else if (a + size > L.box_lo && a < L.box_hi) check_global(a, size, write, aligned_access);
  else wild(a, size, write);
  L.checking = true;
}

// A read or write the runtime does for the kernel (cp.async sources, ldmatrix rows, atomics).
PN_EMU_RT static void kernel_access(const void* p, unsigned size, bool write) {
  const bool was = L.checking;
  L.checking = true;
  on_access(p, size, write, true);
  L.checking = was;
}

// ---- shared addresses ----------------------------------------------------------------------
PN_EMU_RT static unsigned cvta_shared(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (!in_window(a)) fault("__cvta_generic_to_shared of %p, which is not shared memory", p);
  return static_cast<unsigned>(a - reinterpret_cast<uintptr_t>(L.win));
}
PN_EMU_RT static char* shared_ptr(unsigned addr, unsigned size) {
  if (static_cast<size_t>(addr) + size > L.win_size)
    fault("shared address 0x%x (+%u bytes) is outside shared memory (%lu bytes)", addr, size, (unsigned long)L.win_size);
  return L.win + addr;
}

// ---- cp.async ------------------------------------------------------------------------------
PN_EMU_RT static void cp_async(void* dst, const void* src, int bytes, int src_bytes) {
  const bool was = L.checking;
  L.checking = false;
  Fiber* f = cur;
  const uintptr_t d = reinterpret_cast<uintptr_t>(dst);
  if (!in_window(d)) fault("cp.async destination %p is not shared memory", dst);
  if ((d & (bytes - 1)) || (reinterpret_cast<uintptr_t>(src) & (bytes - 1)))
    fault("misaligned cp.async of %d bytes: destination shared offset %lu, source %p (both need %d-byte alignment)",
          bytes, (unsigned long)(d - reinterpret_cast<uintptr_t>(L.win)), src, bytes);
  if (src_bytes < 0 || src_bytes > bytes) fault("cp.async src-size %d is not in [0, %d]", src_bytes, bytes);
  kernel_access(dst, bytes, true);
  if (src_bytes > 0) kernel_access(src, src_bytes, false);
  if (f->n_copies == MAX_COPIES) fault("more than %d cp.async in flight in one thread", MAX_COPIES);
  f->copies[f->n_copies++] = Copy{static_cast<char*>(dst), static_cast<const char*>(src), bytes, src_bytes};
  std::memset(dst, 0xff, bytes);
  const uintptr_t off = d - reinterpret_cast<uintptr_t>(L.win);
  for (uintptr_t w = off >> 2; w <= (off + bytes - 1) >> 2; ++w)
    pending[w] = static_cast<uint8_t>(f->linear < 254 ? f->linear + 1 : 255);
  L.checking = was;
}

PN_EMU_RT static void cp_async_commit() {
  Fiber* f = cur;
  if (f->n_groups == MAX_GROUPS) fault("more than %d cp.async groups in flight in one thread", MAX_GROUPS);
  f->group_end[f->n_groups++] = f->n_copies;
}

// Land the copies of the oldest groups until at most `keep` committed groups are in flight.
PN_EMU_RT static void complete_copies(Fiber* f, int keep) {
  if (f->n_groups <= keep) return;
  const int drop = f->n_groups - keep;
  const int upto = f->group_end[drop - 1];
  for (int i = 0; i < upto; ++i) {
    const Copy& c = f->copies[i];
    const uintptr_t off = reinterpret_cast<uintptr_t>(c.dst) - reinterpret_cast<uintptr_t>(L.win);
    for (uintptr_t w = off >> 2; w <= (off + c.bytes - 1) >> 2; ++w) pending[w] = 0;
    if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
    std::memset(c.dst + c.src_bytes, 0, c.bytes - c.src_bytes);
    if (L.race && f == cur) kernel_access(c.dst, c.bytes, true);  // the landing is this thread's write
  }
  std::memmove(f->copies, f->copies + upto, (f->n_copies - upto) * sizeof(Copy));
  f->n_copies -= upto;
  for (int g = drop; g < f->n_groups; ++g) f->group_end[g - drop] = f->group_end[g] - upto;
  f->n_groups -= drop;
}

PN_EMU_RT static void cp_async_wait(int keep) {
  const bool was = L.checking;
  L.checking = false;
  complete_copies(cur, keep);
  L.checking = was;
}

PN_EMU_RT static void cp_async_wait_all() {
  const bool was = L.checking;
  L.checking = false;
  cp_async_commit();
  complete_copies(cur, 0);
  L.checking = was;
}

PN_EMU_RT static void thread_exit(Fiber* f) {
  // Copies still in flight at exit land anyway (the hardware drains them).
  if (f->n_groups == MAX_GROUPS) complete_copies(f, 0);
  f->group_end[f->n_groups++] = f->n_copies;
  complete_copies(f, 0);
  f->state = DONE;
  --L.live;
  Warp& w = warps[f->warp];
  w.alive &= ~(1u << f->lane);
  if (w.arrived && (w.mask & ~w.alive & (1u << f->lane)))
    fault("lane %d of warp %d exited while lanes 0x%08x wait for it in %s (mask 0x%08x)", f->lane, f->warp,
          w.arrived, op_name(w.op), w.mask);
  if (L.arrived > 0 && L.arrived == L.live) release_barrier();
}

// ---- atomics: fibers never switch inside one, so plain read-modify-writes are atomic ---------
template <class T>
PN_EMU_RT static T atomic_rmw(T* p, T v, int op) {
  const bool was = L.checking;
  L.checking = false;
  L.atomic = true;
  kernel_access(p, sizeof(T), true);
  L.atomic = false;
  const T old = *p;
  T nv = old;
  switch (op) {
    case 0: nv = old + v; break;
    case 1: nv = v < old ? v : old; break;
    case 2: nv = old < v ? v : old; break;
    case 3: nv = v; break;
  }
  *p = nv;
  L.checking = was;
  return old;
}

// ---- loads and stores the PTX twins make -------------------------------------------------------
PN_EMU_RT static void load(void* dst, const void* src, unsigned n) {
  kernel_access(src, n, false);
  std::memcpy(dst, src, n);
}
PN_EMU_RT static void store(void* dst, const void* src, unsigned n) {
  kernel_access(dst, n, true);
  std::memcpy(dst, src, n);
}

// ---- number formats ----------------------------------------------------------------------------
inline uint32_t bits(float x) { uint32_t u; std::memcpy(&u, &x, 4); return u; }
inline float from_bits(uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; }
inline unsigned f32_to_tf32(float x) {  // cvt.rna.tf32.f32: nearest, ties away from zero
  const uint32_t u = bits(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x7fffffffu) > 0x7f800000u ? 0x7fffffffu : u;
  return (u + 0x1000u) & 0xffffe000u;
}
inline uint16_t f32_to_bf16(float x) {  // round to nearest even
  const uint32_t u = bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_to_f32(uint16_t h) { return from_bits(static_cast<uint32_t>(h) << 16); }
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu;
  if (e == 0x1f) return from_bits(sign | 0x7f800000u | (m << 13));
  if (e != 0) return from_bits(sign | ((e + 112) << 23) | (m << 13));
  return (sign ? -1.f : 1.f) * std::ldexp(static_cast<float>(m), -24);
}
inline uint16_t f32_to_f16(float x) {  // round to nearest even, overflow to inf
  const uint32_t u = bits(x), sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7fff;
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (a < 0x38800000u) {  // subnormal half (or zero): value / 2^-24, rounded to nearest even
    const float q = from_bits(a) * 16777216.f;
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(q)));
  }
  const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((r - 0x38000000u) >> 13));
}

// ---- ldmatrix and mma.sync: warp collectives computed from the PTX fragment layouts -----------
inline void op_ldmatrix(Warp& w, unsigned, int trans) {
  const int warp = static_cast<int>(&w - warps);
  uint16_t m[4][8][8];
  for (int j = 0; j < 4; ++j)
    for (int r = 0; r < 8; ++r) {
      const int src_lane = j * 8 + r;
      const unsigned addr = w.in[src_lane][0];
      Fiber* saved = cur;
      cur = &fibers[warp * 32 + src_lane];
      if (addr & 15) fault("ldmatrix: row address 0x%x (lane %d) is not 16-byte aligned", addr, src_lane);
      char* p = shared_ptr(addr, 16);
      kernel_access(p, 16, false);
      std::memcpy(m[j][r], p, 16);
      cur = saved;
    }
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < 4; ++j) {
      const int r = l >> 2, c = 2 * (l & 3);
      const uint16_t lo = trans ? m[j][c][r] : m[j][r][c], hi = trans ? m[j][c + 1][r] : m[j][r][c + 1];
      w.out[l][j] = lo | (static_cast<uint32_t>(hi) << 16);
    }
}

PN_EMU_RT static void ldmatrix_x4(unsigned addr, unsigned (&r)[4], bool trans) {
  const bool was = L.checking;
  L.checking = false;
  warps[cur->warp].in[cur->lane][0] = addr;
  Warp& w = collective(OP_LDMATRIX, 0xffffffffu, trans ? [](Warp& ww, unsigned m, int) { op_ldmatrix(ww, m, 1); }
                                                       : [](Warp& ww, unsigned m, int) { op_ldmatrix(ww, m, 0); }, 32);
  for (int j = 0; j < 4; ++j) r[j] = w.out[cur->lane][j];
  L.checking = was;
}

enum MmaKind { MMA_BF16 = 0, MMA_F16 = 1, MMA_TF32 = 2 };

template <int KIND>
inline void op_mma(Warp& w, unsigned, int) {
  constexpr int K = KIND == MMA_TF32 ? 8 : 16;
  double A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const uint32_t* a = w.in[l];
    const uint32_t* b = w.in[l] + 4;
    if (KIND == MMA_TF32) {  // the tensor core reads the top 19 bits of each operand
      auto tf = [](uint32_t u) { return static_cast<double>(from_bits(u & 0xffffe000u)); };
      A[g][t] = tf(a[0]); A[g + 8][t] = tf(a[1]); A[g][t + 4] = tf(a[2]); A[g + 8][t + 4] = tf(a[3]);
      B[t][g] = tf(b[0]); B[t + 4][g] = tf(b[1]);
    } else {
      auto h = [](uint32_t u, int hi) {
        const uint16_t v = static_cast<uint16_t>(hi ? u >> 16 : u & 0xffffu);
        return static_cast<double>(KIND == MMA_BF16 ? bf16_to_f32(v) : f16_to_f32(v));
      };
      for (int e = 0; e < 2; ++e) {
        A[g][2 * t + e] = h(a[0], e); A[g + 8][2 * t + e] = h(a[1], e);
        A[g][2 * t + 8 + e] = h(a[2], e); A[g + 8][2 * t + 8 + e] = h(a[3], e);
        B[2 * t + e][g] = h(b[0], e); B[2 * t + 8 + e][g] = h(b[1], e);
      }
    }
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    const uint32_t* c = w.in[l] + 6;
    for (int e = 0; e < 4; ++e) {
      const int row = g + (e >> 1) * 8, col = 2 * t + (e & 1);
      double acc = from_bits(c[e]);
      for (int k = 0; k < K; ++k) acc += A[row][k] * B[k][col];
      w.out[l][e] = bits(static_cast<float>(acc));
    }
  }
}

PN_EMU_RT static void mma(int kind, float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  const bool was = L.checking;
  L.checking = false;
  uint32_t* in = warps[cur->warp].in[cur->lane];
  for (int e = 0; e < 4; ++e) in[e] = a[e];
  in[4] = b[0]; in[5] = b[1];
  for (int e = 0; e < 4; ++e) in[6 + e] = bits(d[e]);
  CollectiveFn fn = kind == MMA_BF16 ? &op_mma<MMA_BF16> : kind == MMA_F16 ? &op_mma<MMA_F16> : &op_mma<MMA_TF32>;
  Warp& w = collective(OP_MMA, 0xffffffffu, fn, 32);
  for (int e = 0; e < 4; ++e) d[e] = from_bits(w.out[cur->lane][e]);
  L.checking = was;
}

// ---- the launch ----------------------------------------------------------------------------
struct TlsInfo { uintptr_t base; const void* tls; size_t size; };
PN_EMU_RT static int find_tls(struct dl_phdr_info* info, size_t, void* data) {
  TlsInfo* t = static_cast<TlsInfo*>(data);
  if (info->dlpi_addr != t->base) return 0;
  n_allowed = 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_TLS) t->size = ph.p_memsz;
    if (ph.p_type == PT_LOAD && n_allowed < 12)
      allowed[n_allowed++] = Region{info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz};
  }
  t->tls = info->dlpi_tls_data;
  return 1;
}

struct LaunchDesc {
  unsigned grid[3], block[3];
  unsigned dyn_bytes;
  int race;
  int n_ranges;
  const uint64_t* ranges;  // lo, hi pairs, one per array argument (argument index in `args`)
  const int* range_args;
};

PN_EMU_RT static int setup(const char* name, const LaunchDesc* d) {
  L.kernel = name;
  L.failed = false;
  L.atomic = false;
  L.message[0] = 0;
  L.checking = false;
  L.grid = dim3(d->grid[0], d->grid[1], d->grid[2]);
  L.block = dim3(d->block[0], d->block[1], d->block[2]);
  L.nthreads = static_cast<int>(d->block[0] * d->block[1] * d->block[2]);
  L.race = d->race != 0;
  L.dyn_bytes = d->dyn_bytes;
  if (L.nthreads < 1 || L.nthreads > MAX_THREADS) {
    fault("block (%u,%u,%u) has %d threads; the limit is %d", d->block[0], d->block[1], d->block[2], L.nthreads,
          MAX_THREADS);
    return 1;
  }
  if (d->dyn_bytes > DYNAMIC_SMEM_MAX) {
    fault("%u bytes of dynamic shared memory requested; the limit is %u", d->dyn_bytes, DYNAMIC_SMEM_MAX);
    return 1;
  }
  if (d->n_ranges > MAX_RANGES) { fault("more than %d array arguments", MAX_RANGES); return 1; }
  L.n_ranges = d->n_ranges;
  L.box_lo = UINTPTR_MAX; L.box_hi = 0;
  for (int i = 0; i < d->n_ranges; ++i) {
    L.ranges[i] = Range{d->ranges[2 * i], d->ranges[2 * i + 1], d->range_args[i]};
    L.box_lo = L.ranges[i].lo - REDZONE < L.box_lo ? L.ranges[i].lo - REDZONE : L.box_lo;
    L.box_hi = L.ranges[i].hi + REDZONE > L.box_hi ? L.ranges[i].hi + REDZONE : L.box_hi;
  }
  // This module's TLS segment in the calling thread: the shared memory window.
  volatile unsigned char touch = pn_emu_dynamic_smem[0];
  (void)touch;
  Dl_info info;
  if (!dladdr(reinterpret_cast<void*>(&pn_emu::setup), &info)) { fault("dladdr failed"); return 1; }
  TlsInfo t{reinterpret_cast<uintptr_t>(info.dli_fbase), nullptr, 0};
  dl_iterate_phdr(&find_tls, &t);
  L.win = static_cast<char*>(const_cast<void*>(t.tls));
  L.win_size = t.size;
  L.dyn = reinterpret_cast<char*>(pn_emu_dynamic_smem);
  if (L.win == nullptr || !in_window(reinterpret_cast<uintptr_t>(L.dyn))) {
    fault("could not locate the module's thread-local segment (shared memory window)");
    return 1;
  }
  if (fibers == nullptr) {
#if defined(__SANITIZE_ADDRESS__)
    stack_bytes = 1 << 20;
#else
    stack_bytes = 256 << 10;
#endif
    fibers = new Fiber[MAX_THREADS];  // never touched by kernel code (threadIdx lives in tids)
    warps = new Warp[MAX_THREADS / 32];
    char* stacks = static_cast<char*>(mmap(nullptr, stack_bytes * MAX_THREADS, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (stacks == MAP_FAILED) { fault("could not map fiber stacks"); return 1; }
    for (int i = 0; i < MAX_THREADS; ++i) fibers[i].stack = stacks + i * stack_bytes;
  }
  stacks_lo = reinterpret_cast<uintptr_t>(fibers[0].stack);
  stacks_span = stack_bytes * MAX_THREADS;

  static size_t shadow_words = 0;
  if (shadow_words < (L.win_size + 3) / 4) {
    delete[] shadow;
    delete[] pending;
    delete[] written;
    shadow_words = (L.win_size + 3) / 4;
    shadow = new Shadow[shadow_words]();
    pending = new uint8_t[shadow_words]();
    written = new uint32_t[shadow_words]();
  }
  std::memset(pending, 0, shadow_words);
  return 0;
}

PN_EMU_RT static void run_block(unsigned bx, unsigned by, unsigned bz) {
  L.block_idx = uint3{bx, by, bz};
  ++L.block_serial;
  L.epoch = 0;
  L.arrived = 0;
  L.live = L.nthreads;
  // Fresh, poisoned shared memory: the static variables and the bytes this launch may use.
  const uintptr_t dyn_off = reinterpret_cast<uintptr_t>(L.dyn) - reinterpret_cast<uintptr_t>(L.win);
  std::memset(L.win, 0xff, dyn_off);
  std::memset(L.dyn, 0xff, L.dyn_bytes);
  const size_t after = dyn_off + DYNAMIC_SMEM_MAX;
  if (after < L.win_size) std::memset(L.win + after, 0xff, L.win_size - after);
  const int nwarps = (L.nthreads + 31) / 32;
  for (int w = 0; w < nwarps; ++w) {
    const int n = L.nthreads - 32 * w < 32 ? L.nthreads - 32 * w : 32;
    Warp& wp = warps[w];
    wp.lanes = wp.alive = n == 32 ? 0xffffffffu : (1u << n) - 1;
    wp.arrived = wp.mask = 0;
    wp.epoch = 0;
  }
  for (int i = 0; i < L.nthreads; ++i) {
    Fiber& f = fibers[i];
    f.linear = i;
    f.tid = uint3{i % L.block.x, (i / L.block.x) % L.block.y, i / (L.block.x * L.block.y)};
    tids[i] = f.tid;
    f.lane = i & 31;
    f.warp = i >> 5;
    init_fiber(&f);
  }
  for (;;) {
    bool ran = false, all_done = true;
    for (int i = 0; i < L.nthreads; ++i) {
      Fiber& f = fibers[i];
      if (f.state == READY) {
        to_fiber(&f);
        ran = true;
        if (L.failed) return;
      }
      if (f.state != DONE) all_done = false;
    }
    if (all_done) return;
    if (!ran) {
      int at_bar = 0, at_warp = 0, first_bar = -1, first_warp = -1;
      for (int i = 0; i < L.nthreads; ++i) {
        if (fibers[i].state == AT_BARRIER) { ++at_bar; if (first_bar < 0) first_bar = i; }
        if (fibers[i].state == AT_WARP) { ++at_warp; if (first_warp < 0) first_warp = i; }
      }
      fault("deadlock: %d threads wait at __syncthreads (first: thread %d), %d wait in a warp collective "
            "(first: thread %d, %s); %d threads have exited", at_bar, first_bar, at_warp, first_warp,
            first_warp >= 0 ? op_name(warps[first_warp / 32].op) : "-", L.nthreads - L.live);
      return;
    }
  }
}

PN_EMU_RT static int launch(const char* name, const LaunchDesc* d, void (*body)(void*), void* arg) {
  if (setup(name, d)) return 1;
  L.body = body;
  L.body_arg = arg;

  for (unsigned z = 0; z < L.grid.z; ++z)
    for (unsigned y = 0; y < L.grid.y; ++y)
      for (unsigned x = 0; x < L.grid.x; ++x) {
        run_block(x, y, z);
        if (L.failed) {
#if defined(__SANITIZE_ADDRESS__)
          // the abandoned fibers' frames leave stack poison behind
          __asan_unpoison_memory_region(fibers[0].stack, stack_bytes * MAX_THREADS);
#endif
          return 1;
        }
      }
  return 0;
}

// ---- kernel entry points: argument unpacking by the kernel's own signature --------------------
template <class T> struct ArgCode { static constexpr char value = std::is_pointer<T>::value ? 'p' : '?'; };
template <> struct ArgCode<int> { static constexpr char value = 'i'; };
template <> struct ArgCode<unsigned> { static constexpr char value = 'I'; };
template <> struct ArgCode<long long> { static constexpr char value = 'q'; };
template <> struct ArgCode<long> { static constexpr char value = 'q'; };
template <> struct ArgCode<unsigned long long> { static constexpr char value = 'Q'; };
template <> struct ArgCode<unsigned long> { static constexpr char value = 'Q'; };
template <> struct ArgCode<float> { static constexpr char value = 'f'; };
template <> struct ArgCode<double> { static constexpr char value = 'd'; };
template <> struct ArgCode<bool> { static constexpr char value = 'b'; };

template <class F> struct Entry;
template <class... A> struct Entry<void (*)(A...)> {
  struct Call { void (*fn)(A...); void** args; };
  template <size_t... I>
  PN_EMU_RT static void invoke(const Call* c, std::index_sequence<I...>) {
    c->fn(*static_cast<typename std::remove_cv<A>::type*>(c->args[I])...);
  }
  PN_EMU_RT static void body(void* p) { invoke(static_cast<const Call*>(p), std::index_sequence_for<A...>{}); }
  static int run(const char* name, void (*fn)(A...), const LaunchDesc* d, void** args) {
    Call c{fn, args};
    return launch(name, d, &body, &c);
  }
  static const char* signature() {
    static const char s[] = {ArgCode<typename std::remove_cv<A>::type>::value..., 0};
    return s;
  }
};

}  // namespace pn_emu

// ThreadSanitizer's instrumentation calls, answered by the checks above (checked mode).
#define PN_EMU_TSAN(n)                                                                                   \
  extern "C" PN_EMU_RT void __tsan_read##n(void* p) { pn_emu::on_access(p, n, false, true); }             \
  extern "C" PN_EMU_RT void __tsan_write##n(void* p) { pn_emu::on_access(p, n, true, true); }             \
  extern "C" PN_EMU_RT void __tsan_unaligned_read##n(void* p) { pn_emu::on_access(p, n, false, false); }  \
  extern "C" PN_EMU_RT void __tsan_unaligned_write##n(void* p) { pn_emu::on_access(p, n, true, false); }  \
  extern "C" PN_EMU_RT void __tsan_volatile_read##n(void* p) { pn_emu::on_access(p, n, false, true); }    \
  extern "C" PN_EMU_RT void __tsan_volatile_write##n(void* p) { pn_emu::on_access(p, n, true, true); }
PN_EMU_TSAN(1)
PN_EMU_TSAN(2)
PN_EMU_TSAN(4)
PN_EMU_TSAN(8)
PN_EMU_TSAN(16)
extern "C" PN_EMU_RT void __tsan_read_range(void* p, unsigned long n) {
  pn_emu::on_access(p, static_cast<unsigned>(n), false, false);
}
extern "C" PN_EMU_RT void __tsan_write_range(void* p, unsigned long n) {
  pn_emu::on_access(p, static_cast<unsigned>(n), true, false);
}
extern "C" PN_EMU_RT void __tsan_init() {}
extern "C" PN_EMU_RT void __tsan_func_entry(void*) {}
extern "C" PN_EMU_RT void __tsan_func_exit() {}
extern "C" PN_EMU_RT void __tsan_vptr_update(void**, void*) {}
extern "C" PN_EMU_RT void __tsan_vptr_read(void**) {}

PN_EMU_API const char* pn_emu_error() { return pn_emu::L.message; }
// The module's static __shared__ variables (offset in the TLS segment, size, name), sorted by offset.
PN_EMU_API void pn_emu_set_shared_vars(int n, const pn_emu::SharedVar* vars) {
  pn_emu::svars = vars;
  pn_emu::n_svars = n;
}

// ---- the CUDA device API -----------------------------------------------------------------
inline void __syncthreads() { pn_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  pn_emu::shfl<int>(pn_emu::OP_SYNC, &pn_emu::op_nothing, mask, 0, 0, 32);
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return pn_emu::shfl(pn_emu::OP_SHFL, &pn_emu::op_shfl<pn_emu::OP_SHFL>, mask, v, src, width);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return pn_emu::shfl(pn_emu::OP_SHFL_XOR, &pn_emu::op_shfl<pn_emu::OP_SHFL_XOR>, mask, v, lane_mask, width);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return pn_emu::shfl(pn_emu::OP_SHFL_DOWN, &pn_emu::op_shfl<pn_emu::OP_SHFL_DOWN>, mask, v, static_cast<int>(delta), width);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return pn_emu::shfl(pn_emu::OP_SHFL_UP, &pn_emu::op_shfl<pn_emu::OP_SHFL_UP>, mask, v, static_cast<int>(delta), width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return pn_emu::vote(pn_emu::OP_BALLOT, &pn_emu::op_vote<pn_emu::OP_BALLOT>, mask, pred);
}
inline int __any_sync(unsigned mask, int pred) {
  return static_cast<int>(pn_emu::vote(pn_emu::OP_ANY, &pn_emu::op_vote<pn_emu::OP_ANY>, mask, pred));
}
inline int __all_sync(unsigned mask, int pred) {
  return static_cast<int>(pn_emu::vote(pn_emu::OP_ALL, &pn_emu::op_vote<pn_emu::OP_ALL>, mask, pred));
}
namespace pn_emu {
PN_EMU_RT static unsigned activemask() { return warps[cur->warp].alive; }
}
inline unsigned __activemask() { return pn_emu::activemask(); }
inline size_t __cvta_generic_to_shared(const void* p) { return pn_emu::cvta_shared(p); }
inline float atomicAdd(float* p, float v) { return pn_emu::atomic_rmw(p, v, 0); }
inline double atomicAdd(double* p, double v) { return pn_emu::atomic_rmw(p, v, 0); }
inline int atomicAdd(int* p, int v) { return pn_emu::atomic_rmw(p, v, 0); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return pn_emu::atomic_rmw(p, v, 0); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return pn_emu::atomic_rmw(p, v, 0); }
inline int atomicMin(int* p, int v) { return pn_emu::atomic_rmw(p, v, 1); }
inline int atomicMax(int* p, int v) { return pn_emu::atomic_rmw(p, v, 2); }
inline int atomicExch(int* p, int v) { return pn_emu::atomic_rmw(p, v, 3); }
inline float atomicExch(float* p, float v) { return pn_emu::atomic_rmw(p, v, 3); }
[[noreturn]] inline void __trap() {
  pn_emu::fault("__trap() called");
  __builtin_unreachable();
}

// One exported entry per kernel, appended by pyneural/cuda/emulator after the source:
//   pn_emu_launch_<name>(desc, args) runs the grid; pn_emu_sig_<name>() is its parameter types.
#define PN_EMU_EXPORT(name)                                                                          \
  PN_EMU_API int pn_emu_launch_##name(const pn_emu::LaunchDesc* d, void** args) {           \
    return pn_emu::Entry<decltype(&name)>::run(#name, &name, d, args);                                 \
  }                                                                                                   \
  PN_EMU_API const char* pn_emu_sig_##name() { return pn_emu::Entry<decltype(&name)>::signature(); }
