// overflow_check.h -- force-included (after cuda_emu.h) into modules built with EmuModule(check_overflow=True).
//
// Those modules are compiled with g++'s -fsanitize=signed-integer-overflow: every signed +, -, *, unary -
// and / in the kernel code calls one of the handlers below when its result does not fit its type. The
// handlers fail the launch (EmuError naming the operation, its operands, its type, the file, line and
// column, the block and the thread), the way __trap() does; nothing is linked from libubsan (the module is
// linked without the sanitizer, so these definitions are the only ones), so no sanitizer runtime is loaded
// into the Python process. The data layout is the one GCC and Clang pass to the UBSan handlers.
#pragma once
#include <cstdint>
#include <cstdio>

namespace emu_overflow {
struct SourceLocation { const char* file; unsigned line, column; };
struct TypeDescriptor { unsigned short kind, info; char name[1]; };  // info: bit 0 signed, >> 1 log2(bits)
struct OverflowData { SourceLocation loc; const TypeDescriptor* type; };

// A ValueHandle holds an integer of up to 64 bits inline (wider ones by pointer)
inline long long value(const TypeDescriptor* t, void* v) {
  const unsigned bits = 1u << (t->info >> 1);
  const unsigned long long u = (unsigned long long)(uintptr_t)v;
  if (bits > 64) return 0;
  if (bits == 64) return (long long)u;
  const unsigned long long sign = 1ull << (bits - 1), mask = (sign << 1) - 1;
  return (long long)(((u & mask) ^ sign) - sign);
}

[[noreturn]] inline void fail(void* data, const char* op, void* a, void* b, bool binary) {
  const OverflowData* d = static_cast<const OverflowData*>(data);
  static thread_local char what[512];
  if (binary)
    std::snprintf(what, sizeof what, "signed integer overflow: %lld %s %lld does not fit %s (%s:%u:%u)",
                  value(d->type, a), op, value(d->type, b), d->type->name, d->loc.file, d->loc.line, d->loc.column);
  else
    std::snprintf(what, sizeof what, "signed integer overflow: %s(%lld) does not fit %s (%s:%u:%u)", op,
                  value(d->type, a), d->type->name, d->loc.file, d->loc.line, d->loc.column);
  __emu_trap(what, (int)d->loc.line);
}
}  // namespace emu_overflow

extern "C" {
void __ubsan_handle_add_overflow(void* d, void* a, void* b) { emu_overflow::fail(d, "+", a, b, true); }
void __ubsan_handle_sub_overflow(void* d, void* a, void* b) { emu_overflow::fail(d, "-", a, b, true); }
void __ubsan_handle_mul_overflow(void* d, void* a, void* b) { emu_overflow::fail(d, "*", a, b, true); }
void __ubsan_handle_divrem_overflow(void* d, void* a, void* b) { emu_overflow::fail(d, "/", a, b, true); }
void __ubsan_handle_negate_overflow(void* d, void* a) { emu_overflow::fail(d, "-", a, nullptr, false); }
}
