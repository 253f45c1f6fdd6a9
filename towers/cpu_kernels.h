// What the CPU kernels share (towers/cpu_attention.cc, towers/cpu_dense.cc): 16-float vectors,
// a register-blocked product tile in the machine's own registers (AVX-512 or AVX2) and a
// parallel loop over XLA's intra-op thread pool.
// Header-only (inline and templates), so that every kernel source can include it.

#ifndef HETCLIP_TOWERS_CPU_KERNELS_H_
#define HETCLIP_TOWERS_CPU_KERNELS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace hetclip {

namespace ffi = xla::ffi;

constexpr int kLanes = 16;
// GCC / clang vector extensions: 16 floats (one AVX-512 register, two AVX2 ones, four NEON).
typedef float Vec __attribute__((vector_size(64)));
typedef float UnalignedVec __attribute__((vector_size(64), aligned(4)));
typedef int32_t IntVec __attribute__((vector_size(64)));
// The product tiles' own vectors: one hardware register each. GCC keeps a 16-float Vec that is
// wider than the registers (AVX2, NEON) on the stack inside a tile's loop (every multiply-add
// read an accumulator from memory), so the tiles work in registers of the machine's width.
#if defined(__AVX512F__)
constexpr int kNativeLanes = 16;
#elif defined(__AVX__)
constexpr int kNativeLanes = 8;
#else
constexpr int kNativeLanes = 4;
#endif
typedef float NativeVec __attribute__((vector_size(4 * kNativeLanes)));
typedef float UnalignedNativeVec __attribute__((vector_size(4 * kNativeLanes), aligned(4)));

// The most vectors of 16 floats one row of a product tile holds. AVX-512 has 32 registers of
// 16 floats: tiles of up to 6 rows x 6 vectors keep their accumulators in registers. AVX2 has
// 16 registers of 8 floats, so each vector takes two: 6 rows x 1 vector is 12 accumulators,
// two for the row of b and one for the broadcast (the 6 x 16 tile of BLIS's Haswell kernel);
// wider tiles spilled to memory and ran at 0.05-0.21x XLA's product on a Zen 3. (NEON's 32
// registers of 4 floats fit the same 6 x 1 tile: 24 accumulators.)
constexpr int kMaxTileVectors = kNativeLanes == kLanes ? 6 : 1;

inline Vec Load(const float* p) { return *reinterpret_cast<const UnalignedVec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<UnalignedVec*>(p) = v; }
inline NativeVec LoadNative(const float* p) {
  return *reinterpret_cast<const UnalignedNativeVec*>(p);
}
inline void StoreNative(float* p, NativeVec v) { *reinterpret_cast<UnalignedNativeVec*>(p) = v; }
inline int64_t RoundUp(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Horizontal sum in four halving steps (a short dependency chain, unlike a loop); the
// shuffles also serve other reductions (attention's maximum).
inline Vec Halves(Vec v) {
  return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
}
inline Vec Quarters(Vec v) {
  return __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
}
inline Vec Pairs(Vec v) {
  return __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
}
inline Vec Neighbours(Vec v) {
  return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
}

inline float Sum(Vec v) {
  v += Halves(v);
  v += Quarters(v);
  v += Pairs(v);
  v += Neighbours(v);
  return v[0];
}

// A [rows, depth] operand of Matmul read in place: element (r, x) at
// data[r * row_stride + x * depth_stride], so a transposed matrix is a view, not a copy.
struct View {
  const float* data;
  int64_t row_stride, depth_stride;
};

// An empty asm that claims to modify v, so that v must sit in a register. Without it GCC 12
// folds a tile's loads of b into its FMAs as memory operands (R loads per vector instead of
// one), and the tile runs load-bound: a 4 x 5 tile at 0.56 of the speed of a 6 x 4 one on
// Zen 4. MatmulTile uses it for the wide tiles of 4-6 rows x 5-6 vectors (attention's
// products over 65-96 keys), where it ran 1.0-1.8x as fast; on smaller tiles its effect
// changed sign from one build to another (benchmarks/kernel_tiles.py, BENCHMARKS.md).
inline void KeepInRegister(NativeVec& v) {
#if defined(__x86_64__)
  asm("" : "+v"(v));
#else
  (void)v;
#endif
}

// c[r, :16 V] = sum_x a(r, x) b[x, :16 V] for r < R (added to c's values where `accumulate`);
// b's rows are ldb apart, c's ldc. The R x V accumulators stay in registers over the whole
// contraction; each step loads V vectors of b and broadcasts R scalars of a.
template <int R, int V>
inline void MatmulTile(View a, const float* b, int64_t ldb, int64_t depth, float* c,
                       int64_t ldc, bool accumulate) {
  constexpr int N = V * kLanes / kNativeLanes;  // registers per row of the tile
  NativeVec acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < N; ++n)
      acc[r][n] = accumulate ? LoadNative(c + r * ldc + n * kNativeLanes) : NativeVec{};
  const float* a_step = a.data;
  for (int64_t x = 0; x < depth; ++x, a_step += a.depth_stride) {
    NativeVec row[N];
    for (int n = 0; n < N; ++n) {
      row[n] = LoadNative(b + x * ldb + n * kNativeLanes);
      if constexpr (R >= 4 && V >= 5) KeepInRegister(row[n]);
    }
    for (int r = 0; r < R; ++r) {
      const float scalar = a_step[r * a.row_stride];
      for (int n = 0; n < N; ++n) acc[r][n] += row[n] * scalar;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < N; ++n) StoreNative(c + r * ldc + n * kNativeLanes, acc[r][n]);
}

// MatmulTile<R, min(vectors, V)>: only widths up to kMaxTileVectors are compiled.
template <int R, int V = kMaxTileVectors>
inline void MatmulRows(View a, const float* b, int64_t ldb, int64_t depth, float* c,
                       int64_t ldc, int vectors, bool accumulate) {
  if constexpr (V > 1) {
    if (vectors < V) return MatmulRows<R, V - 1>(a, b, ldb, depth, c, ldc, vectors, accumulate);
  }
  MatmulTile<R, V>(a, b, ldb, depth, c, ldc, accumulate);
}

// One block of `rows` <= 6 rows and `vectors` <= kMaxTileVectors vectors of c: MatmulTile for
// run-time sizes.
inline void MatmulBlock(View a, int rows, const float* b, int64_t ldb, int64_t depth, float* c,
                        int64_t ldc, int vectors, bool accumulate) {
  switch (rows) {
    case 1: return MatmulRows<1>(a, b, ldb, depth, c, ldc, vectors, accumulate);
    case 2: return MatmulRows<2>(a, b, ldb, depth, c, ldc, vectors, accumulate);
    case 3: return MatmulRows<3>(a, b, ldb, depth, c, ldc, vectors, accumulate);
    case 4: return MatmulRows<4>(a, b, ldb, depth, c, ldc, vectors, accumulate);
    case 5: return MatmulRows<5>(a, b, ldb, depth, c, ldc, vectors, accumulate);
    default: return MatmulRows<6>(a, b, ldb, depth, c, ldc, vectors, accumulate);
  }
}

// Runs body(i, next) for i < n on the calling thread and up to pool.num_threads() - 1 helpers,
// which claim indices from a shared counter: as many threads as the pool has, whether the
// caller is one of them (XLA runs a step's ops on the pool) or not (a single op run inline on
// the Python thread, hetclip/allocator.py), where one more helper put 3 threads on 2 cores
// (attention at [256, 65, 3, 64]: 28-29 ms instead of 24-25 ms). While more indices remain
// than there are threads, a thread claims its next index before running the current one
// (`next`, else -1), so that it can prefetch that index's data; near the end it claims only
// when free, so that n as small as the thread count still runs on every thread (claiming ahead
// from the start ran n = 2 on the caller alone). The caller waits only for indices already claimed, so a helper that starts
// late (or never) cannot stall it; the shared state outlives the call for such late helpers,
// which find nothing left to claim.
inline void ParallelFor(ffi::ThreadPool& pool, int64_t n,
                 const std::function<void(int64_t, int64_t)>& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    int64_t count = 0;
    int64_t threads = 1;
    const std::function<void(int64_t, int64_t)>* body = nullptr;
  };
  const int64_t helpers = std::max<int64_t>(0, std::min<int64_t>(pool.num_threads(), n) - 1);
  auto state = std::make_shared<State>();
  state->count = n;
  state->threads = helpers + 1;
  state->body = &body;
  auto work = [state] {
    int64_t i = state->next.fetch_add(1);
    while (i < state->count) {
      const int64_t ahead = i + state->threads < state->count ? state->next.fetch_add(1) : -1;
      (*state->body)(i, ahead < state->count ? ahead : -1);
      state->done.fetch_add(1, std::memory_order_release);
      i = ahead >= 0 ? ahead : state->next.fetch_add(1);
    }
  };
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule(decltype(work)(work));
  work();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

}  // namespace hetclip

#endif  // HETCLIP_TOWERS_CPU_KERNELS_H_
