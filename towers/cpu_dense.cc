// A dense layer's weight gradient for XLA:CPU, as a typed-FFI custom call.
//
// dW [K, F] = x^T dy for activations x [M, K] and output gradients dy [M, F] (float32, F a
// multiple of 16), the product that contracts the long token axis M. Why it exists: XLA:CPU ran
// it at 0.49-0.76 of the machine's float32 matmul peak at the towers' shapes on a 2-core Zen 4,
// against 0.79-0.94 for the same layer's other two products (BENCHMARKS.md). Here the rows of M
// are split into one part per thread, each part accumulates its own dW over chunks of rows small
// enough to stay in the core's caches, and the parts are added at the end. x^T is never formed:
// a 6-row tile of dW broadcasts 6 neighbouring floats of one row of x per step, read in place
// through strides (steps K floats apart) where K is small, and from a packed copy of the chunk
// (steps 6 floats apart) where K >= kPackDepth: strides of 2 KiB and more miss the stride
// prefetcher, and at K = 768-1536 a tile's lines fall into 1-4 sets of the L1 cache. Unpacked,
// an Intel Xeon (Sapphire Rapids) ran the MLP-out gradients at 0.59-0.69 of peak, below XLA's
// product; at small K on AVX-512 the copy costs more than it saves (BENCHMARKS.md).
//
// Built at first use by towers/cpu_kernels.py; the handler is registered as
// "hetclip_weight_gradient".

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace hetclip;  // NOLINT: the shared vector and product pieces

using Buffer2 = ffi::Buffer<ffi::F32, 2>;
using Result2 = ffi::ResultBuffer<ffi::F32, 2>;

// Rows of x and dy per chunk: a 4-vector column tile of dy's chunk (256 x 64 floats) stays in
// L2 while every 6-row tile of dW takes its turn. 128 ran at 0.48-0.87 of peak, 256 and 512 at
// 0.81-0.92 (benchmarks/weight_gradient.py).
constexpr int64_t kChunk = 256;
// Fewer rows than this per thread and the parts' sums cost more than the threads save.
constexpr int64_t kRowsPerPart = 2 * kChunk;
// Column tiles of 4 vectors, row tiles of 6: 24 accumulators of AVX-512's 32 vector registers
// (on AVX2, tiles of 1 vector: 12 of its 16).
constexpr int kTileVectors = std::min(4, kMaxTileVectors);
constexpr int kTileRows = 6;
// Depths K (floats) from which each chunk of x is packed: on AVX-512 a stride of 2 KiB. On
// AVX2 every depth: there each tile of 16 columns reads the whole chunk of x, and in place
// the gradients with K < 512 ran at 0.69-0.94x XLA's product on a Zen 3, packed at
// 0.79-1.21x (benchmarks/weight_gradient.py).
constexpr int64_t kPackDepth = kNativeLanes == kLanes ? 512 : 0;

// packed [ceil(K / 6), chunk, 6] = x[chunk, K] regrouped by row tile of dW: tile t, step s
// holds x[s, 6 t : 6 t + 6] (the last tile's missing columns are left unread).
void PackChunk(const float* x, int64_t chunk, int64_t depth_k, float* packed) {
  for (int64_t s = 0; s < chunk; ++s) {
    const float* row = x + s * depth_k;
    for (int64_t k = 0; k < depth_k; k += kTileRows) {
      const int64_t count = std::min<int64_t>(kTileRows, depth_k - k);
      std::copy(row + k, row + k + count, packed + ((k / kTileRows) * chunk + s) * kTileRows);
    }
  }
}

// c [K, F] = x[rows, K]^T dy [rows, F] (c's rows F apart), chunk by chunk.
void WeightGradientPart(const float* x, const float* dy, int64_t rows, int64_t depth_k,
                        int64_t features, float* c) {
  const int64_t vectors = features / kLanes;
  const bool pack = depth_k >= kPackDepth;
  const int64_t tiles = (depth_k + kTileRows - 1) / kTileRows;
  std::vector<float> packed(pack ? tiles * kChunk * kTileRows : 0);
  for (int64_t m = 0; m < rows; m += kChunk) {
    const int64_t chunk = std::min(kChunk, rows - m);
    if (pack) PackChunk(x + m * depth_k, chunk, depth_k, packed.data());
    for (int64_t v = 0; v < vectors; v += kTileVectors) {
      const int width = static_cast<int>(std::min<int64_t>(kTileVectors, vectors - v));
      for (int64_t k = 0; k < depth_k; k += kTileRows) {
        // Tile row r, step s reads x[m + s, k + r] (rows 1 apart, steps K apart) or, packed,
        // packed[k / 6, s, r] (steps 6 apart).
        const View x_tile = pack ? View{packed.data() + (k / kTileRows) * chunk * kTileRows, 1,
                                        kTileRows}
                                 : View{x + m * depth_k + k, 1, depth_k};
        MatmulBlock(x_tile, static_cast<int>(std::min<int64_t>(kTileRows, depth_k - k)),
                    dy + m * features + v * kLanes, features, chunk,
                    c + k * features + v * kLanes, features, width, m > 0);
      }
    }
  }
}

ffi::Error WeightGradient(ffi::ThreadPool pool, Buffer2 x, Buffer2 dy, Result2 out) {
  const auto xd = x.dimensions(), dyd = dy.dimensions(), od = out->dimensions();
  const int64_t rows = xd[0], depth_k = xd[1], features = dyd[1];
  if (dyd[0] != rows || od[0] != depth_k || od[1] != features || features % kLanes)
    return ffi::Error::InvalidArgument(
        "hetclip weight gradient: needs x [M, K], dy [M, F] and dW [K, F] with F a multiple of "
        "16");
  float* result = out->typed_data();
  if (rows == 0) {
    std::fill(result, result + depth_k * features, 0.0f);
    return ffi::Error::Success();
  }
  // One part per pool thread: the calling thread is one of them (XLA runs its ops on the same
  // pool), so a part more than the pool's size ran after the others (0.67-0.77 of peak instead
  // of 0.85-0.91 on 2 threads).
  const int64_t parts =
      std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), rows / kRowsPerPart));
  const int64_t size = depth_k * features;
  std::vector<float> partial((parts - 1) * size);
  ParallelFor(pool, parts, [&](int64_t part, int64_t) {
    const int64_t begin = rows * part / parts, end = rows * (part + 1) / parts;
    float* c = part == 0 ? result : partial.data() + (part - 1) * size;
    WeightGradientPart(x.typed_data() + begin * depth_k, dy.typed_data() + begin * features,
                       end - begin, depth_k, features, c);
  });
  for (int64_t part = 1; part < parts; ++part) {
    const float* add = partial.data() + (part - 1) * size;
    for (int64_t i = 0; i < size; ++i) result[i] += add[i];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(HetclipWeightGradient, WeightGradient,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Buffer2>()   // x
                                  .Arg<Buffer2>()   // dy
                                  .Ret<Buffer2>());  // dW
