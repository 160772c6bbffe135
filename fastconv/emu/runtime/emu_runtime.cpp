// emu_runtime.cpp -- fiber scheduler that runs CUDA C kernels on the CPU.
//
// Every CUDA thread of a block is a fiber (hand-written x86-64 context switch, or ucontext when
// built with -DEMU_UCONTEXT). A block runs on exactly one OS worker thread, from start to end, so
// thread_local "__shared__" variables are per block and a fiber never migrates. Between barriers
// the scheduler runs each runnable fiber until it blocks, in forward, reverse or seeded random
// thread order, so a missing __syncthreads shows up as order-dependent results.
//
// Sections: state | context switch | stacks | warp operations | barriers | block scheduler |
//           launch (C API)
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>
#ifdef EMU_UCONTEXT
#include <ucontext.h>
#endif

#define EMU_RUNTIME_VERSION 4

__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread dim3 blockDim;
__thread dim3 gridDim;

namespace {

// ================================================================ state
enum FiberState { F_RUNNABLE, F_RUNNING, F_BARRIER, F_WARP, F_DONE, F_TRAPPED };
enum Order { ORDER_FORWARD = 0, ORDER_REVERSE = 1, ORDER_RANDOM = 2 };
constexpr unsigned long long kPoison64 = 0x7fff7fff7fff7fffull;  // quiet NaN as f16, bf16, f32 and f64

struct Fiber {
#ifdef EMU_UCONTEXT
  ucontext_t ctx;
#else
  void* sp;
#endif
  char* stack_lo;
  int state;
  unsigned lin;
  uint3 tid;
  // barrier arrival
  const void* site;
  int line, kind, pred;
  // warp-op arrival
  int op, arg, width;
  volatile int in_runtime;  // > 0 while in a runtime entry point: a timeout must not abandon it there
  unsigned mask;
  unsigned long long value, result;
};

struct Warp {
  unsigned present;  // lanes that exist in this block
  unsigned live;     // lanes that have not returned
  unsigned arrived;  // lanes waiting in a warp operation
};

struct Launch {
  const emu_kernel_desc* k;
  void** args;
  dim3 grid, block;
  size_t shmem, stack_size;
  size_t smem_limit;  // static + dynamic shared memory a block may use
  int order;
  unsigned long long seed;
  unsigned nthreads;
  unsigned long long nblocks;  // blocks run: linear indices [next_block's start, nblocks) of the grid
  std::atomic<unsigned long long> next_block{0};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::string err;
  std::atomic<unsigned long long> switches{0};
  // timeout watchdog
  double timeout_s = 0;
  std::atomic<bool> timed_out{false};
  std::mutex threads_mu;
  std::vector<pthread_t> threads;  // worker threads still running blocks
  void fail(const std::string& msg) {
    std::lock_guard<std::mutex> g(err_mu);
    if (err.empty()) err = msg;
    failed = true;
  }
};

struct Arena {  // fiber stacks, each with a PROT_NONE guard page below it
  char* base = nullptr;
  size_t slot = 0, bytes = 0;
  unsigned count = 0;
};

struct Worker {
  Launch* L = nullptr;
  Arena arena;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<unsigned> perm;
#ifdef EMU_UCONTEXT
  ucontext_t sched_ctx;
#else
  void* sched_sp = nullptr;
#endif
  Fiber* cur = nullptr;
  unsigned nlive = 0;
  char* dyn_region = nullptr;
  size_t dyn_region_bytes = 0;
  char* dyn_smem = nullptr;
  unsigned long long block_gen = 0;
  std::vector<std::pair<void*, unsigned long long>> static_smem;
  size_t static_bytes = 0;  // static shared memory reached by this block so far
  std::string block_err;
  std::mt19937_64 rng;
  unsigned long long switches = 0;
  // fault recovery: written by the signal handler, read by the scheduler
  volatile int fault_sig = 0;  // signal number, or kTimeoutMarker
  volatile sig_atomic_t running = 0;  // 1 exactly while fiber code (not the scheduler) executes
  volatile int fault_code = 0;
  void* volatile fault_addr = nullptr;
  char* alt_stack = nullptr;
  stack_t old_alt{};
};

__thread Worker* tw;

size_t page_size() {
  static size_t p = (size_t)sysconf(_SC_PAGESIZE);
  return p;
}
size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

std::string fmt_dim(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

const char* op_name(int op) {
  switch (op) {
    case EMU_WOP_SYNCWARP: return "__syncwarp";
    case EMU_WOP_SHFL: return "__shfl_sync";
    case EMU_WOP_SHFL_UP: return "__shfl_up_sync";
    case EMU_WOP_SHFL_DOWN: return "__shfl_down_sync";
    case EMU_WOP_SHFL_XOR: return "__shfl_xor_sync";
    case EMU_WOP_ALL: return "__all_sync";
    case EMU_WOP_ANY: return "__any_sync";
    case EMU_WOP_BALLOT: return "__ballot_sync";
  }
  return "?";
}
const char* barrier_name(int kind) {
  switch (kind) {
    case EMU_BAR_COUNT: return "__syncthreads_count";
    case EMU_BAR_AND: return "__syncthreads_and";
    case EMU_BAR_OR: return "__syncthreads_or";
  }
  return "__syncthreads";
}

}  // namespace

// ================================================================ context switch
extern "C" EMU_HIDDEN void emu_fiber_main(Fiber* f);
#ifndef EMU_UCONTEXT
extern "C" EMU_HIDDEN void emu_swap_ctx(void** save_sp, void* load_sp);
extern "C" EMU_HIDDEN void emu_fiber_trampoline();
// Saves callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// rsp, loads the other stack and restores the same set from it.
asm(R"(
  .text
  .globl emu_swap_ctx
  .hidden emu_swap_ctx
  .type emu_swap_ctx, @function
emu_swap_ctx:
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
  .size emu_swap_ctx, .-emu_swap_ctx

  .globl emu_fiber_trampoline
  .hidden emu_fiber_trampoline
  .type emu_fiber_trampoline, @function
emu_fiber_trampoline:
  movq %r12, %rdi
  call emu_fiber_main
  ud2
  .size emu_fiber_trampoline, .-emu_fiber_trampoline
)");
#else
extern "C" EMU_HIDDEN void emu_fiber_main_uc() { emu_fiber_main(tw->cur); }
#endif

namespace {

void fiber_init(Worker& w, Fiber& f, size_t stack_size) {
#ifdef EMU_UCONTEXT
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack_lo;
  f.ctx.uc_stack.ss_size = stack_size;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, emu_fiber_main_uc, 0);
  (void)w;
#else
  (void)w;
  uintptr_t top = (uintptr_t)(f.stack_lo + stack_size) & ~(uintptr_t)15;
  uintptr_t ret_slot = top - 24;  // == 8 mod 16: the trampoline's call sees an aligned stack
  void** sp = (void**)(ret_slot - 56);
  std::memset(sp, 0, 64);
  unsigned csr[2];
  asm volatile("stmxcsr %0" : "=m"(csr[0]));
  unsigned short fcw;
  asm volatile("fnstcw %0" : "=m"(fcw));
  csr[1] = fcw;
  std::memcpy(sp, csr, 8);
  sp[4] = &f;                                   // r12: argument for emu_fiber_main
  sp[7] = (void*)&emu_fiber_trampoline;         // return address
  f.sp = sp;
#endif
}

inline void switch_to_fiber(Worker& w, Fiber* f) {
  w.cur = f;
  threadIdx = f->tid;
  f->state = F_RUNNING;
  ++w.switches;
#ifdef EMU_UCONTEXT
  swapcontext(&w.sched_ctx, &f->ctx);
#else
  emu_swap_ctx(&w.sched_sp, f->sp);
#endif
  w.cur = nullptr;
}

inline void yield_to_scheduler(Worker& w, Fiber* f) {
  w.running = 0;
#ifdef EMU_UCONTEXT
  swapcontext(&f->ctx, &w.sched_ctx);
#else
  emu_swap_ctx(&f->sp, w.sched_sp);
#endif
  w.running = 1;  // resumed: the scheduler has set threadIdx for us
}

// Marks a runtime entry point, during which a timeout must not abandon the fiber (it may be
// allocating, or holding the worker's data structures half-updated).
struct RuntimeSection {
  Fiber* f;
  explicit RuntimeSection(Fiber* fb) : f(fb) { ++f->in_runtime; }
  ~RuntimeSection() { --f->in_runtime; }
};

[[noreturn]] void fiber_fail(Worker& w, Fiber* f, const std::string& msg) {
  if (w.block_err.empty()) w.block_err = msg;
  f->state = F_TRAPPED;
  yield_to_scheduler(w, f);
  std::abort();  // a trapped fiber is never resumed
}

Worker& current_worker(const char* what) {
  Worker* w = tw;
  if (!w || !w->cur) {
    std::fprintf(stderr, "fastconv.emu: %s called outside an emulated kernel\n", what);
    std::abort();
  }
  return *w;
}

// ================================================================ stacks
std::mutex g_arena_mu;
std::vector<Arena> g_arenas;

Arena arena_get(size_t stack_size, unsigned count) {
  size_t slot = round_up(stack_size, page_size()) + page_size();
  {
    std::lock_guard<std::mutex> g(g_arena_mu);
    for (size_t i = 0; i < g_arenas.size(); ++i) {
      if (g_arenas[i].slot == slot && g_arenas[i].count >= count) {
        Arena a = g_arenas[i];
        g_arenas.erase(g_arenas.begin() + i);
        return a;
      }
    }
  }
  Arena a;
  a.slot = slot;
  a.count = count;
  a.bytes = slot * count;
  void* p = mmap(nullptr, a.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return Arena{};
  a.base = (char*)p;
  for (unsigned i = 0; i < count; ++i) mprotect(a.base + i * slot, page_size(), PROT_NONE);
  return a;
}

void arena_put(const Arena& a) {
  if (!a.base) return;
  std::lock_guard<std::mutex> g(g_arena_mu);
  g_arenas.push_back(a);
  while (g_arenas.size() > 8) {
    munmap(g_arenas.front().base, g_arenas.front().bytes);
    g_arenas.erase(g_arenas.begin());
  }
}

// ================================================================ warp operations
void try_resolve_warp(Worker& w, unsigned wi, Fiber* self) {
  Warp& wp = w.warps[wi];
  if (wp.arrived == 0 || (wp.arrived & wp.live) != wp.live) return;
  Fiber* lanes = &w.fibers[wi * 32];
  int op = 0, line = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(wp.arrived >> l & 1u)) continue;
    Fiber& f = lanes[l];
    if (op == 0) { op = f.op; line = f.line; }
    auto where = [&] { return "block " + fmt_dim(blockIdx) + " warp " + std::to_string(wi) + ": "; };
    if (f.op != op)
      fiber_fail(w, self, where() + "lanes meet in different warp operations (" + op_name(op) + " line " +
                              std::to_string(line) + " vs " + op_name(f.op) + " line " + std::to_string(f.line) + ")");
    if ((f.mask & wp.present) != wp.live) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "lane %u calls %s (line %d) with mask 0x%08x but the live lanes are 0x%08x%s",
                    l, op_name(f.op), f.line, f.mask, wp.live,
                    (f.mask & wp.present & ~wp.live) ? " (the mask names lanes that already returned)" : "");
      fiber_fail(w, self, where() + buf);
    }
    if (f.op >= EMU_WOP_SHFL && f.op <= EMU_WOP_SHFL_XOR &&
        (f.width < 1 || f.width > 32 || (f.width & (f.width - 1))))
      fiber_fail(w, self,
                 where() + op_name(f.op) + " width " + std::to_string(f.width) + " is not a power of two <= 32");
  }
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((wp.arrived >> l & 1u) && lanes[l].value) ballot |= 1u << l;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(wp.arrived >> l & 1u)) continue;
    Fiber& f = lanes[l];
    unsigned wd = (unsigned)f.width, seg = l & ~(wd - 1), src = l;
    switch (op) {
      case EMU_WOP_SHFL: src = seg + ((unsigned)f.arg & (wd - 1)); break;
      case EMU_WOP_SHFL_UP: src = (l - seg) >= (unsigned)f.arg ? l - (unsigned)f.arg : l; break;
      case EMU_WOP_SHFL_DOWN: src = (l - seg) + (unsigned)f.arg < wd ? l + (unsigned)f.arg : l; break;
      case EMU_WOP_SHFL_XOR: src = l ^ ((unsigned)f.arg & 31u); if (src >= seg + wd) src = l; break;
    }
    switch (op) {
      case EMU_WOP_ALL: f.result = (ballot & wp.arrived) == wp.arrived; break;
      case EMU_WOP_ANY: f.result = ballot != 0; break;
      case EMU_WOP_BALLOT: f.result = ballot; break;
      case EMU_WOP_SYNCWARP: f.result = 0; break;
      default:  // reading a lane that does not exist or has returned is undefined: poison
        f.result = (src < 32 && (wp.arrived >> src & 1u)) ? lanes[src].value : kPoison64;
    }
    f.state = F_RUNNABLE;
  }
  wp.arrived = 0;
}

}  // namespace

extern "C" void emu_fiber_main(Fiber* f) {
  Worker& w = *tw;
  w.running = 1;
  w.L->k->invoke(w.L->k->fn, w.L->args);
  ++f->in_runtime;
  f->state = F_DONE;
  --w.nlive;
  unsigned wi = f->lin / 32;
  w.warps[wi].live &= ~(1u << (f->lin % 32));
  if (w.warps[wi].arrived) try_resolve_warp(w, wi, f);
  yield_to_scheduler(w, f);
  std::abort();  // a finished fiber is never resumed
}

unsigned long long __emu_warp_op(int op, unsigned mask, unsigned long long value, int arg, int width, int line) {
  Worker& w = current_worker(op_name(op));
  Fiber* f = w.cur;
  RuntimeSection rs(f);
  f->op = op;
  f->mask = mask;
  f->value = value;
  f->arg = arg;
  f->width = width;
  f->line = line;
  f->state = F_WARP;
  unsigned wi = f->lin / 32;
  w.warps[wi].arrived |= 1u << (f->lin % 32);
  try_resolve_warp(w, wi, f);
  yield_to_scheduler(w, f);
  return f->result;
}

unsigned __emu_activemask() {
  Worker& w = current_worker("__activemask");
  return w.warps[w.cur->lin / 32].live;
}

// ================================================================ barriers
int __emu_barrier(int kind, int pred, int line) {
  Worker& w = current_worker("__syncthreads");
  Fiber* f = w.cur;
  RuntimeSection rs(f);
  f->site = __builtin_return_address(0);
  f->line = line;
  f->kind = kind;
  f->pred = pred;
  f->state = F_BARRIER;
  yield_to_scheduler(w, f);
  return (int)f->result;
}

void* __emu_dynamic_smem() { return current_worker("dynamic shared memory").dyn_smem; }

void __emu_poison_static_smem(void* p, size_t bytes) {
  Worker& w = current_worker("static shared memory");
  RuntimeSection rs(w.cur);
  for (auto& e : w.static_smem) {
    if (e.first == p) {
      if (e.second == w.block_gen) return;
      e.second = w.block_gen;
      goto poison;
    }
  }
  w.static_smem.emplace_back(p, w.block_gen);
poison:
  w.static_bytes += bytes;
  if (w.static_bytes + w.L->shmem > w.L->smem_limit)
    fiber_fail(w, w.cur, "block " + fmt_dim(blockIdx) + " uses " + std::to_string(w.static_bytes) +
                             " bytes of static and " + std::to_string(w.L->shmem) +
                             " bytes of dynamic shared memory, more than the " + std::to_string(w.L->smem_limit) +
                             " a block may use (above 48 KiB the kernel must opt in with "
                             "max_dynamic_shared_size_bytes, as on the GPU)");
  for (size_t i = 0; i + 8 <= bytes; i += 8) std::memcpy((char*)p + i, &kPoison64, 8);
  std::memcpy((char*)p + (bytes & ~(size_t)7), &kPoison64, bytes & 7);
}

void __emu_launch_bounds_(long long max_threads, int line) {
  unsigned long long n = (unsigned long long)blockDim.x * blockDim.y * blockDim.z;
  if ((long long)n <= max_threads) return;
  Worker& w = current_worker("__launch_bounds__");
  RuntimeSection rs(w.cur);
  fiber_fail(w, w.cur, "launch with " + std::to_string(n) + " threads per block exceeds __launch_bounds__(" +
                           std::to_string(max_threads) + ") of the kernel at line " + std::to_string(line) +
                           " (a GPU refuses this launch)");
}

void __emu_trap(const char* what, int line) {
  Worker& w = current_worker(what);
  RuntimeSection rs(w.cur);
  fiber_fail(w, w.cur, std::string(what) + " at line " + std::to_string(line) + " in block " +
                           fmt_dim(blockIdx) + " thread " + fmt_dim(threadIdx));
}

// assert() in a kernel: glibc's assert calls __assert_fail. This hidden definition binds every
// call inside the module, so a failed device-side assertion fails the launch (EmuError) the way
// a GPU reports cudaErrorAssert, instead of aborting the Python process.
extern "C" EMU_HIDDEN void __assert_fail(const char* expr, const char* file, unsigned line, const char* func) {
  Worker* w = tw;
  if (!w || !w->cur) {
    std::fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file, line, func, expr);
    std::abort();
  }
  RuntimeSection rs(w->cur);
  fiber_fail(*w, w->cur, std::string("assertion `") + expr + "' failed at " + file + ":" + std::to_string(line) +
                             " in block " + fmt_dim(blockIdx) + " thread " + fmt_dim(threadIdx));
}

namespace {

// ================================================================ fault recovery
// SIGSEGV/SIGBUS/SIGFPE raised while a fiber runs kernel code (out-of-bounds access hitting a guard
// page, stack overflow, null pointer, integer division by zero) fail the launch with EmuError
// instead of killing the process: the handler runs on a per-worker alternate stack, records the
// fault and switches to the scheduler, abandoning the faulting block. Faults anywhere else are
// passed on to the previously installed handler (Python's faulthandler, or the default action).
// Each worker's alternate stack starts with a tag that identifies this module's runtime copy, so
// the handlers of several loaded modules chain to each other correctly.
char g_module_tag;
constexpr size_t kAltStackBytes = 64 * 1024;
struct AltTag {
  const void* tag;
  Worker* worker;
};
const int kFaultSignals[3] = {SIGSEGV, SIGBUS, SIGFPE};
struct sigaction g_old_action[3];
std::mutex g_sig_mu;

void on_fault(int sig, siginfo_t* si, void* uctx);

void chain_fault(int sig, siginfo_t* si, void* uctx) {
  for (int i = 0; i < 3; ++i) {
    if (kFaultSignals[i] != sig) continue;
    struct sigaction& old = g_old_action[i];
    if (old.sa_flags & SA_SIGINFO) {
      if (old.sa_sigaction) old.sa_sigaction(sig, si, uctx);
      return;
    }
    if (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN) {
      sigaction(sig, &old, nullptr);  // returning re-executes the faulting instruction: default action
      return;
    }
    old.sa_handler(sig);
    return;
  }
}

void on_fault(int sig, siginfo_t* si, void* uctx) {
  stack_t cur;
  if (sigaltstack(nullptr, &cur) == 0 && !(cur.ss_flags & SS_DISABLE) && cur.ss_sp) {
    const AltTag* t = (const AltTag*)cur.ss_sp;
    if (t->tag == &g_module_tag && t->worker && t->worker->running && t->worker->cur) {
      Worker& w = *t->worker;
      Fiber* f = w.cur;
      w.fault_addr = si->si_addr;
      w.fault_code = si->si_code;
      w.fault_sig = sig;
      f->state = F_TRAPPED;
      yield_to_scheduler(w, f);  // never resumed
    }
  }
  chain_fault(sig, si, uctx);
}

// ---------------------------------------------------------------- timeout
// A watchdog thread (only when the launch has a timeout) sets Launch::timed_out and then signals
// the worker threads every few milliseconds with kTimeoutSignal until the launch ends. The
// handler abandons the running fiber only when it is safe: fiber code is executing (not the
// scheduler), it is not inside a runtime entry point, and the interrupted instruction lies in this
// module's own code (kernel code; not libc, where a lock might be held). Otherwise it returns and
// the next signal tries again. The scheduler checks timed_out between fibers.
constexpr int kTimeoutMarker = -1;
uintptr_t g_text_lo = 0, g_text_hi = 0;
int timeout_signal() { return SIGRTMIN + 7; }

int find_text(struct dl_phdr_info* info, size_t, void* data) {
  uintptr_t probe = (uintptr_t)data;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
    if (probe >= lo && probe < hi) {
      g_text_lo = lo;
      g_text_hi = hi;
      return 1;
    }
  }
  return 0;
}

void on_timeout(int, siginfo_t*, void* uctx) {
  stack_t cur;
  if (sigaltstack(nullptr, &cur) != 0 || (cur.ss_flags & SS_DISABLE) || !cur.ss_sp) return;
  const AltTag* t = (const AltTag*)cur.ss_sp;
  if (t->tag != &g_module_tag || !t->worker) return;
  Worker& w = *t->worker;
  if (!w.running || !w.cur || w.cur->in_runtime || !w.L->timed_out.load(std::memory_order_relaxed)) return;
  uintptr_t pc = (uintptr_t)((ucontext_t*)uctx)->uc_mcontext.gregs[REG_RIP];
  if (pc < g_text_lo || pc >= g_text_hi) return;
  Fiber* f = w.cur;
  w.fault_addr = (void*)pc;
  w.fault_sig = kTimeoutMarker;
  f->state = F_TRAPPED;
  yield_to_scheduler(w, f);  // never resumed
}

void install_fault_handlers() {
  std::lock_guard<std::mutex> g(g_sig_mu);
  for (int i = 0; i < 3; ++i) {
    struct sigaction cur;
    sigaction(kFaultSignals[i], nullptr, &cur);
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_fault) continue;
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    g_old_action[i] = cur;
    sigaction(kFaultSignals[i], &sa, nullptr);
  }
  struct sigaction cur;
  sigaction(timeout_signal(), nullptr, &cur);
  if (!((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_timeout)) {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_timeout;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(timeout_signal(), &sa, nullptr);
  }
  if (!g_text_hi) dl_iterate_phdr(find_text, (void*)&on_timeout);
}

bool alt_stack_begin(Worker& w) {
  void* p = mmap(nullptr, kAltStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  w.alt_stack = (char*)p;
  *(AltTag*)p = AltTag{&g_module_tag, &w};
  stack_t ss;
  ss.ss_sp = p;
  ss.ss_size = kAltStackBytes;
  ss.ss_flags = 0;
  if (sigaltstack(&ss, &w.old_alt) != 0) {
    munmap(p, kAltStackBytes);
    w.alt_stack = nullptr;
    return false;
  }
  return true;
}

void alt_stack_end(Worker& w) {
  if (!w.alt_stack) return;
  stack_t old = w.old_alt;
  if (!old.ss_sp) old.ss_flags = SS_DISABLE;
  sigaltstack(&old, nullptr);
  munmap(w.alt_stack, kAltStackBytes);
  w.alt_stack = nullptr;
}

std::string describe_fault(Worker& w, Fiber* f) {
  if (w.fault_sig == kTimeoutMarker)
    return "timeout after " + std::to_string(w.L->timeout_s) + " s: block " + fmt_dim(blockIdx) + " thread " +
           fmt_dim(f->tid) + " was still running (an infinite loop, or a spin-wait on another thread of the "
           "block, which the emulator's fibers cannot preempt)";
  const char* what = w.fault_sig == SIGFPE ? "arithmetic fault (SIGFPE: integer division by zero?)"
                     : w.fault_sig == SIGBUS ? "bus error (SIGBUS)"
                                             : "invalid memory access (SIGSEGV)";
  char addr[64];
  std::snprintf(addr, sizeof addr, "%p", w.fault_addr);
  std::string where;
  uintptr_t a = (uintptr_t)w.fault_addr;
  uintptr_t lo = (uintptr_t)w.arena.base, hi = lo + w.arena.bytes;
  if (w.fault_sig != SIGFPE && a >= lo && a < hi && (a - lo) % w.arena.slot < page_size())
    where = " (fiber stack overflow: raise stack_size)";
  else if (w.dyn_region && a >= (uintptr_t)w.dyn_region + w.dyn_region_bytes - page_size() &&
           a < (uintptr_t)w.dyn_region + w.dyn_region_bytes)
    where = " (past the end of dynamic shared memory: shared_mem=" + std::to_string(w.L->shmem) + ")";
  return "block " + fmt_dim(blockIdx) + " thread " + fmt_dim(f->tid) + ": " + what + " at address " + addr + where;
}

// ================================================================ block scheduler
void shuffle_order(Worker& w) {
  if (w.L->order == ORDER_RANDOM) std::shuffle(w.perm.begin(), w.perm.end(), w.rng);
}

std::string describe_stuck(Worker& w) {
  // Groups waiting threads by what they wait for: "<what>: N threads (first t)".
  std::map<std::string, std::pair<unsigned, unsigned>> groups;
  for (Fiber& f : w.fibers) {
    std::string key;
    if (f.state == F_DONE) key = "returned";
    else if (f.state == F_BARRIER) key = std::string("at ") + barrier_name(f.kind) + " line " + std::to_string(f.line);
    else if (f.state == F_WARP) key = std::string("in ") + op_name(f.op) + " line " + std::to_string(f.line);
    else key = "state " + std::to_string(f.state);
    auto it = groups.find(key);
    if (it == groups.end()) groups[key] = {1u, f.lin};
    else ++it->second.first;
  }
  std::string s;
  for (auto& g : groups) {
    if (!s.empty()) s += "; ";
    s += std::to_string(g.second.first) + " thread(s) " + g.first + " (first: linear thread " +
         std::to_string(g.second.second) + ")";
  }
  return s;
}

// Returns false (with w.block_err set) when the block cannot finish.
bool release_barrier(Worker& w) {
  unsigned nbar = 0;
  Fiber* first = nullptr;
  bool same_site = true;
  for (Fiber& f : w.fibers) {
    if (f.state == F_BARRIER) {
      ++nbar;
      if (!first) first = &f;
      else if (f.site != first->site || f.line != first->line || f.kind != first->kind) same_site = false;
    }
  }
  auto where = [] { return "block " + fmt_dim(blockIdx) + ": "; };
  if (nbar != w.nlive) {
    w.block_err = where() + "deadlock: " + describe_stuck(w);
    return false;
  }
  if (w.nlive != w.L->nthreads) {
    w.block_err = where() + "threads returned while others wait at a barrier (undefined in CUDA): " + describe_stuck(w);
    return false;
  }
  if (!same_site) {
    w.block_err = where() + "barrier reached from different call sites (divergent __syncthreads): " + describe_stuck(w);
    return false;
  }
  int result = first->kind == EMU_BAR_AND ? 1 : 0;
  for (Fiber& f : w.fibers) {
    if (first->kind == EMU_BAR_COUNT) result += f.pred;
    else if (first->kind == EMU_BAR_AND) result &= f.pred;
    else if (first->kind == EMU_BAR_OR) result |= f.pred;
  }
  for (Fiber& f : w.fibers) {
    f.result = (unsigned long long)result;
    f.state = F_RUNNABLE;
  }
  return true;
}

bool run_block(Worker& w, unsigned long long b) {
  Launch& L = *w.L;
  blockIdx = uint3{(unsigned)(b % L.grid.x), (unsigned)(b / L.grid.x % L.grid.y),
                   (unsigned)(b / ((unsigned long long)L.grid.x * L.grid.y))};
  ++w.block_gen;
  w.static_bytes = 0;
  w.block_err.clear();
  if (L.shmem) {
    for (size_t i = 0; i < L.shmem; i += 8) std::memcpy(w.dyn_smem + i, &kPoison64, std::min<size_t>(8, L.shmem - i));
  }
  unsigned n = L.nthreads;
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = w.fibers[i];
    f.state = F_RUNNABLE;
    f.in_runtime = 0;
    f.lin = i;
    f.tid = uint3{i % L.block.x, i / L.block.x % L.block.y, i / (L.block.x * L.block.y)};
    f.stack_lo = w.arena.base + (size_t)i * w.arena.slot + page_size();
    fiber_init(w, f, w.arena.slot - page_size());
  }
  for (unsigned wi = 0; wi < w.warps.size(); ++wi) {
    unsigned lanes = std::min(32u, n - wi * 32);
    w.warps[wi].present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    w.warps[wi].live = w.warps[wi].present;
    w.warps[wi].arrived = 0;
  }
  w.nlive = n;
  for (unsigned i = 0; i < n; ++i) w.perm[i] = L.order == ORDER_REVERSE ? n - 1 - i : i;
  if (L.order == ORDER_RANDOM) {
    std::seed_seq seq{(unsigned)L.seed, (unsigned)(L.seed >> 32), (unsigned)b, (unsigned)(b >> 32)};
    w.rng.seed(seq);
  }
  shuffle_order(w);
  for (;;) {
    bool ran = true;
    while (ran) {
      ran = false;
      for (unsigned i = 0; i < n; ++i) {
        Fiber* f = &w.fibers[w.perm[i]];
        if (f->state != F_RUNNABLE) continue;
        if (L.timed_out.load(std::memory_order_relaxed)) {
          w.block_err = "timeout after " + std::to_string(L.timeout_s) + " s (the launch was still running block " +
                        fmt_dim(blockIdx) + ")";
          return false;
        }
        switch_to_fiber(w, f);
        ran = true;
        if (w.fault_sig) {
          // the handler never returned, so the kernel still blocks its signal in this thread
          sigset_t set;
          sigemptyset(&set);
          sigaddset(&set, w.fault_sig == kTimeoutMarker ? timeout_signal() : w.fault_sig);
          pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
          w.block_err = describe_fault(w, f);
          return false;
        }
        if (!w.block_err.empty()) return false;
      }
    }
    if (w.nlive == 0) return true;
    if (!release_barrier(w)) return false;
    shuffle_order(w);
  }
}

void worker_main(Launch* L) {
  Worker w;
  w.L = L;
  tw = &w;
  blockDim = L->block;
  gridDim = L->grid;
  unsigned n = L->nthreads;
  w.arena = arena_get(L->stack_size, n);
  if (!w.arena.base) {
    L->fail("cannot allocate fiber stacks");
    tw = nullptr;
    return;
  }
  if (!alt_stack_begin(w)) {
    L->fail("cannot set up the signal stack");
    arena_put(w.arena);
    tw = nullptr;
    return;
  }
  w.fibers.resize(n);
  w.perm.resize(n);
  w.warps.resize((n + 31) / 32);
  if (L->shmem) {
    // The dynamic buffer ends right at a PROT_NONE page: reading or writing past the requested
    // size faults instead of corrupting the heap.
    size_t body = round_up(L->shmem, page_size());
    w.dyn_region_bytes = body + page_size();
    void* p = mmap(nullptr, w.dyn_region_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      L->fail("cannot allocate dynamic shared memory");
      alt_stack_end(w);
      arena_put(w.arena);
      tw = nullptr;
      return;
    }
    w.dyn_region = (char*)p;
    mprotect(w.dyn_region + body, page_size(), PROT_NONE);
    w.dyn_smem = w.dyn_region + body - round_up(L->shmem, 16);
  }
  {
    std::lock_guard<std::mutex> g(L->threads_mu);  // from now on the watchdog may signal this thread
    L->threads.push_back(pthread_self());
  }
  while (!L->failed.load(std::memory_order_relaxed)) {
    unsigned long long b = L->next_block.fetch_add(1);
    if (b >= L->nblocks) break;
    if (!run_block(w, b)) {
      L->fail(w.block_err);
      break;
    }
  }
  L->switches += w.switches;
  {
    std::lock_guard<std::mutex> g(L->threads_mu);
    auto& ts = L->threads;
    for (size_t i = 0; i < ts.size(); ++i)
      if (pthread_equal(ts[i], pthread_self())) { ts.erase(ts.begin() + i); break; }
  }
  alt_stack_end(w);
  if (w.dyn_region) munmap(w.dyn_region, w.dyn_region_bytes);
  arena_put(w.arena);
  tw = nullptr;
}

}  // namespace

// ================================================================ launch (C API)
EMU_API int emu_runtime_version() { return EMU_RUNTIME_VERSION; }

EMU_API const char* emu_fiber_backend() {
#ifdef EMU_UCONTEXT
  return "ucontext";
#else
  return "x86-64 asm";
#endif
}

// Runs one kernel launch to completion. Returns 0, or -1 with a message in err.
// Only the blocks with linear index (x fastest) in [first_block, end_block) run; blockIdx and gridDim are
// those of the whole grid (end_block 0: up to the grid's last block).
EMU_API int emu_launch(const emu_kernel_desc* k, void** args, const unsigned* grid, const unsigned* block,
                       unsigned long long shmem, unsigned long long smem_limit, int order,
                       unsigned long long seed, int workers, unsigned long long stack_size,
                       double timeout_s, unsigned long long* switches, char* err,
                       unsigned long long errlen, unsigned long long first_block, unsigned long long end_block) {
  auto fail = [&](const std::string& m) {
    std::snprintf(err, errlen, "%s", m.c_str());
    return -1;
  };
  for (int i = 0; i < 3; ++i)
    if (grid[i] == 0 || block[i] == 0) return fail("grid and block dimensions must be >= 1");
  unsigned long long nthreads = (unsigned long long)block[0] * block[1] * block[2];
  if (nthreads > 1024 || block[2] > 64)
    return fail("block " + std::to_string(block[0]) + "x" + std::to_string(block[1]) + "x" + std::to_string(block[2]) +
                " exceeds CUDA limits (1024 threads, z <= 64)");
  if (grid[0] > 2147483647u || grid[1] > 65535 || grid[2] > 65535)
    return fail("grid exceeds CUDA limits (x <= 2^31 - 1, y and z <= 65535)");
  unsigned long long grid_blocks = (unsigned long long)grid[0] * grid[1] * grid[2];
  if (end_block == 0) end_block = grid_blocks;
  if (first_block >= end_block || end_block > grid_blocks)
    return fail("blocks [" + std::to_string(first_block) + ", " + std::to_string(end_block) +
                ") are not a non-empty range of the grid's " + std::to_string(grid_blocks) + " blocks");
  if (order < 0 || order > 2) return fail("bad thread order");
  if (stack_size < 4096) return fail("stack_size must be >= 4096");
  if (shmem > smem_limit)
    return fail(std::to_string(shmem) + " bytes of dynamic shared memory exceed the " + std::to_string(smem_limit) +
                " a block may use (above 48 KiB the kernel must opt in with max_dynamic_shared_size_bytes, "
                "as on the GPU)");
  Launch L;
  L.k = k;
  L.args = args;
  L.grid = dim3(grid[0], grid[1], grid[2]);
  L.block = dim3(block[0], block[1], block[2]);
  L.shmem = shmem;
  L.smem_limit = smem_limit;
  L.timeout_s = timeout_s;
  L.stack_size = stack_size;
  L.order = order;
  L.seed = seed;
  L.nthreads = (unsigned)nthreads;
  L.next_block = first_block;
  L.nblocks = end_block;
  if (workers <= 0) workers = (int)std::max(1u, std::thread::hardware_concurrency());
  if ((unsigned long long)workers > end_block - first_block) workers = (int)(end_block - first_block);
  install_fault_handlers();
  Worker* saved = tw;  // a kernel launched from inside a kernel is not supported; keep the caller sane
  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false;
  std::thread watchdog;
  if (timeout_s > 0) {
    watchdog = std::thread([&] {
      std::unique_lock<std::mutex> lk(done_mu);
      if (done_cv.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return done; })) return;
      L.timed_out = true;
      // keep knocking until every worker has left its blocks: a fiber is abandoned only at a safe point
      while (!done_cv.wait_for(lk, std::chrono::milliseconds(5), [&] { return done; })) {
        std::lock_guard<std::mutex> g(L.threads_mu);
        for (pthread_t t : L.threads) pthread_kill(t, timeout_signal());
      }
    });
  }
  std::vector<std::thread> pool;
  for (int i = 1; i < workers; ++i) pool.emplace_back(worker_main, &L);
  worker_main(&L);
  for (auto& t : pool) t.join();
  if (watchdog.joinable()) {
    {
      std::lock_guard<std::mutex> lk(done_mu);
      done = true;
    }
    done_cv.notify_all();
    watchdog.join();
  }
  tw = saved;
  if (switches) *switches = L.switches;
  if (L.failed) return fail(L.err);
  return 0;
}
