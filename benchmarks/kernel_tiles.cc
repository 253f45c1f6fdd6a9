// GFLOP/s of one product tile of towers/cpu_kernels.h (MatmulBlock) for every rows x vectors
// shape it has (1-6 rows, 1-6 vectors of 16 floats), on one thread, from the core's L1/L2:
// b [256, 96] packed, a read in place. Built and run by benchmarks/kernel_tiles.py.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "cpu_kernels.h"

int main() {
  using hetclip::MatmulBlock;
  constexpr int kDepth = 256, kLd = 96;
  std::vector<float> a(6 * kDepth, 0.5f), b(kDepth * kLd, 0.25f), c(6 * kLd);
  std::printf("rows \\ vectors");
  for (int v = 1; v <= 6; ++v) std::printf("%7d", v);
  std::printf("   (GFLOP/s)\n");
  for (int rows = 1; rows <= 6; ++rows) {
    std::printf("%14d", rows);
    for (int vectors = 1; vectors <= 6; ++vectors) {
      double best = 1e9;
      for (int i = 0; i < 3000; ++i) {
        const auto start = std::chrono::steady_clock::now();
        MatmulBlock({a.data(), kDepth, 1}, rows, b.data(), kLd, kDepth, c.data(), kLd, vectors,
                    false);
        const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
        best = std::min(best, took.count());
      }
      std::printf("%7.0f", 2.0 * rows * vectors * 16 * kDepth / best / 1e9);
    }
    std::printf("\n");
  }
  return c[0] == 0.0f;  // keeps the products from being optimised away
}
