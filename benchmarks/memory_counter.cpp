// Counts the bytes the benchmark process holds from the C allocator, and their peak.
//
// The executable defines malloc, free and the aligned variants (glibc's documented way to
// replace the allocator: every library of the process, LibTorch's CPU allocator included, then
// calls these) and forwards them to glibc's own entry points (__libc_malloc, ...). Each block is
// counted by its usable size (malloc_usable_size), at allocation and at release. The harness
// resets the peak before one call of a kernel and reads it after: the peak minus the level at
// the start is what the call allocated on top of its inputs (temporaries and the outputs it
// allocates itself). Blocks served by mmap are counted the same way.
//
// Only on glibc (Linux); elsewhere memory::enabled() is false and the figures are absent.

#include <atomic>
#include <cerrno>
#include <cstddef>

#include "harness.hpp"

#if defined(__GLIBC__)
#include <malloc.h>

extern "C" {
void* __libc_malloc(std::size_t size) noexcept;
void __libc_free(void* block) noexcept;
void* __libc_calloc(std::size_t count, std::size_t size) noexcept;
void* __libc_realloc(void* block, std::size_t size) noexcept;
void* __libc_memalign(std::size_t alignment, std::size_t size) noexcept;
void* __libc_valloc(std::size_t size) noexcept;
void* __libc_pvalloc(std::size_t size) noexcept;
}

namespace {

constinit std::atomic<std::size_t> live_bytes{0};
constinit std::atomic<std::size_t> peak_bytes{0};

void count_in(void* block) noexcept {
    if (block == nullptr) return;
    const std::size_t size = malloc_usable_size(block);
    const std::size_t now = live_bytes.fetch_add(size, std::memory_order_relaxed) + size;
    std::size_t top = peak_bytes.load(std::memory_order_relaxed);
    while (now > top && !peak_bytes.compare_exchange_weak(top, now, std::memory_order_relaxed)) {
    }
}

void count_out(void* block) noexcept {
    if (block != nullptr) live_bytes.fetch_sub(malloc_usable_size(block), std::memory_order_relaxed);
}

constexpr bool valid_alignment(std::size_t alignment) noexcept {
    return alignment != 0 && (alignment & (alignment - 1)) == 0 && alignment % sizeof(void*) == 0;
}

}  // namespace

extern "C" {

void* malloc(std::size_t size) noexcept {
    void* block = __libc_malloc(size);
    count_in(block);
    return block;
}

void free(void* block) noexcept {
    count_out(block);
    __libc_free(block);
}

void* calloc(std::size_t count, std::size_t size) noexcept {
    void* block = __libc_calloc(count, size);
    count_in(block);
    return block;
}

void* realloc(void* block, std::size_t size) noexcept {
    const std::size_t old_size = block != nullptr ? malloc_usable_size(block) : 0;
    void* moved = __libc_realloc(block, size);
    if (moved != nullptr) {
        live_bytes.fetch_sub(old_size, std::memory_order_relaxed);
        count_in(moved);
    } else if (size == 0 && block != nullptr) {
        live_bytes.fetch_sub(old_size, std::memory_order_relaxed);  // glibc: realloc(p, 0) frees p
    }
    return moved;
}

int posix_memalign(void** result, std::size_t alignment, std::size_t size) noexcept {
    if (!valid_alignment(alignment)) return EINVAL;
    void* block = __libc_memalign(alignment, size);
    if (block == nullptr) return ENOMEM;
    count_in(block);
    *result = block;
    return 0;
}

void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
    void* block = __libc_memalign(alignment, size);
    count_in(block);
    return block;
}

void* memalign(std::size_t alignment, std::size_t size) noexcept {
    void* block = __libc_memalign(alignment, size);
    count_in(block);
    return block;
}

void* valloc(std::size_t size) noexcept {
    void* block = __libc_valloc(size);
    count_in(block);
    return block;
}

void* pvalloc(std::size_t size) noexcept {
    void* block = __libc_pvalloc(size);
    count_in(block);
    return block;
}

}  // extern "C"

namespace rlhf_bench::memory {

bool enabled() noexcept {
    // A block through a volatile function pointer, so the compiler cannot elide the pair.
    static const bool works = [] {
        void* (*volatile allocate)(std::size_t) = &malloc;
        const std::size_t before = live_bytes.load();
        void* block = allocate(4096);
        const bool counted = live_bytes.load() >= before + 4096;
        free(block);
        return counted;
    }();
    return works;
}

std::size_t current() noexcept {
    return live_bytes.load(std::memory_order_relaxed);
}

std::size_t peak() noexcept {
    return peak_bytes.load(std::memory_order_relaxed);
}

void reset_peak() noexcept {
    peak_bytes.store(live_bytes.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace rlhf_bench::memory

#else  // not glibc: no counting

namespace rlhf_bench::memory {
bool enabled() noexcept {
    return false;
}
std::size_t current() noexcept {
    return 0;
}
std::size_t peak() noexcept {
    return 0;
}
void reset_peak() noexcept {}
}  // namespace rlhf_bench::memory

#endif
