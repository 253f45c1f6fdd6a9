// LayerNorm forward and backward for XLA:CPU, as typed-FFI custom calls.
//
// y = (x - mean) * rstd * scale + bias over the last axis (Ba et al. 2016), rstd =
// 1 / sqrt(var + eps), for x [M, D] in float32, D a multiple of 16. Why it exists: XLA:CPU runs
// LayerNorm's backward as several passes over [M, D] (row sums, column sums, products), and a
// tiny CLIP step with every LayerNorm replaced by a bare affine map ran 1.058x as fast
// (BENCHMARKS.md). Here each row is read once from memory per pass: the forward reads x and
// writes y, the mean and rstd of each row; the backward reads x and dy and writes dx, with the
// scale and bias gradients summed per thread and added at the end:
//   xhat = (x - mean) rstd, g = dy scale,
//   dx = rstd (g - mean(g) - xhat mean(g xhat)), dscale = sum_rows dy xhat, dbias = sum_rows dy.
//
// Built at first use by towers/cpu_kernels.py; registered as "hetclip_layer_norm_forward" and
// "hetclip_layer_norm_backward".

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu_kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace hetclip;  // NOLINT: the shared vectors and the parallel loop

using Buffer1 = ffi::Buffer<ffi::F32, 1>;
using Buffer2 = ffi::Buffer<ffi::F32, 2>;
using Result1 = ffi::ResultBuffer<ffi::F32, 1>;
using Result2 = ffi::ResultBuffer<ffi::F32, 2>;

// Rows per task of the parallel loop: enough to hide its bookkeeping, few enough to balance.
constexpr int64_t kRowsPerTask = 64;

inline int64_t Tasks(int64_t rows) { return (rows + kRowsPerTask - 1) / kRowsPerTask; }

void ForwardRows(const float* x, const float* scale, const float* bias, int64_t begin,
                 int64_t end, int64_t depth, float epsilon, float* y, float* mean, float* rstd) {
  const float inverse_depth = 1.0f / static_cast<float>(depth);
  for (int64_t r = begin; r < end; ++r) {
    const float* row = x + r * depth;
    Vec sum = {};
    for (int64_t c = 0; c < depth; c += kLanes) sum += Load(row + c);
    const float row_mean = Sum(sum) * inverse_depth;
    // The variance from the centred values (two passes over a row in L1), not E[x^2] - mean^2.
    Vec squares = {};
    for (int64_t c = 0; c < depth; c += kLanes) {
      const Vec centred = Load(row + c) - row_mean;
      squares += centred * centred;
    }
    const float row_rstd = 1.0f / std::sqrt(Sum(squares) * inverse_depth + epsilon);
    float* out = y + r * depth;
    for (int64_t c = 0; c < depth; c += kLanes)
      Store(out + c, (Load(row + c) - row_mean) * row_rstd * Load(scale + c) + Load(bias + c));
    mean[r] = row_mean;
    rstd[r] = row_rstd;
  }
}

// dx for rows [begin, end), with their dscale / dbias added to `dscale` / `dbias`.
void BackwardRows(const float* x, const float* scale, const float* mean, const float* rstd,
                  const float* dy, int64_t begin, int64_t end, int64_t depth, float* dx,
                  float* dscale, float* dbias) {
  const float inverse_depth = 1.0f / static_cast<float>(depth);
  for (int64_t r = begin; r < end; ++r) {
    const float* x_row = x + r * depth;
    const float* dy_row = dy + r * depth;
    const float row_mean = mean[r], row_rstd = rstd[r];
    Vec g_sum = {}, g_xhat_sum = {};
    for (int64_t c = 0; c < depth; c += kLanes) {
      const Vec xhat = (Load(x_row + c) - row_mean) * row_rstd;
      const Vec dy_c = Load(dy_row + c);
      const Vec g = dy_c * Load(scale + c);
      g_sum += g;
      g_xhat_sum += g * xhat;
      Store(dscale + c, Load(dscale + c) + dy_c * xhat);
      Store(dbias + c, Load(dbias + c) + dy_c);
    }
    const float g_mean = Sum(g_sum) * inverse_depth;
    const float g_xhat_mean = Sum(g_xhat_sum) * inverse_depth;
    float* dx_row = dx + r * depth;
    for (int64_t c = 0; c < depth; c += kLanes) {
      const Vec xhat = (Load(x_row + c) - row_mean) * row_rstd;
      const Vec g = Load(dy_row + c) * Load(scale + c);
      Store(dx_row + c, (g - g_mean - xhat * g_xhat_mean) * row_rstd);
    }
  }
}

ffi::Error CheckShapes(const Buffer2& x, const Buffer1& scale, const char* name) {
  const int64_t depth = x.dimensions()[1];
  if (depth % kLanes || scale.dimensions()[0] != depth)
    return ffi::Error::InvalidArgument(
        std::string("hetclip layer norm ") + name +
        ": needs x [M, D] with D a multiple of 16 and scale, bias [D]");
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, Buffer2 x, Buffer1 scale, Buffer1 bias, Result2 y,
                   Result1 mean, Result1 rstd, float epsilon) {
  if (ffi::Error error = CheckShapes(x, scale, "forward"); error.failure()) return error;
  const int64_t rows = x.dimensions()[0], depth = x.dimensions()[1];
  ParallelFor(pool, Tasks(rows), [&](int64_t task, int64_t) {
    const int64_t begin = task * kRowsPerTask, end = std::min(rows, begin + kRowsPerTask);
    ForwardRows(x.typed_data(), scale.typed_data(), bias.typed_data(), begin, end, depth,
                epsilon, y->typed_data(), mean->typed_data(), rstd->typed_data());
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, Buffer2 x, Buffer1 scale, Buffer1 mean, Buffer1 rstd,
                    Buffer2 dy, Result2 dx, Result1 dscale, Result1 dbias) {
  if (ffi::Error error = CheckShapes(x, scale, "backward"); error.failure()) return error;
  const int64_t rows = x.dimensions()[0], depth = x.dimensions()[1];
  // One part of the rows per pool thread, each summing its own dscale / dbias (part 0 straight
  // into the results), added at the end.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), Tasks(rows)));
  std::vector<float> partial(2 * (parts - 1) * depth, 0.0f);
  std::fill(dscale->typed_data(), dscale->typed_data() + depth, 0.0f);
  std::fill(dbias->typed_data(), dbias->typed_data() + depth, 0.0f);
  ParallelFor(pool, parts, [&](int64_t part, int64_t) {
    const int64_t begin = rows * part / parts, end = rows * (part + 1) / parts;
    float* part_scale = part ? partial.data() + 2 * (part - 1) * depth : dscale->typed_data();
    float* part_bias = part ? part_scale + depth : dbias->typed_data();
    // Sums of kRowsPerTask rows at a time, then added to the part's: float32 sums over 10^4+
    // rows lose less that way than added row by row.
    std::vector<float> chunk(2 * depth);
    for (int64_t first = begin; first < end; first += kRowsPerTask) {
      std::fill(chunk.begin(), chunk.end(), 0.0f);
      BackwardRows(x.typed_data(), scale.typed_data(), mean.typed_data(), rstd.typed_data(),
                   dy.typed_data(), first, std::min(end, first + kRowsPerTask), depth,
                   dx->typed_data(), chunk.data(), chunk.data() + depth);
      for (int64_t c = 0; c < depth; ++c) {
        part_scale[c] += chunk[c];
        part_bias[c] += chunk[depth + c];
      }
    }
  });
  for (int64_t part = 1; part < parts; ++part) {
    const float* add = partial.data() + 2 * (part - 1) * depth;
    for (int64_t c = 0; c < depth; ++c) {
      dscale->typed_data()[c] += add[c];
      dbias->typed_data()[c] += add[depth + c];
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(HetclipLayerNormForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Buffer2>()  // x
                                  .Arg<Buffer1>()  // scale
                                  .Arg<Buffer1>()  // bias
                                  .Ret<Buffer2>()  // y
                                  .Ret<Buffer1>()  // mean
                                  .Ret<Buffer1>()  // rstd
                                  .Attr<float>("epsilon"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HetclipLayerNormBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Buffer2>()  // x
                                  .Arg<Buffer1>()  // scale
                                  .Arg<Buffer1>()  // mean
                                  .Arg<Buffer1>()  // rstd
                                  .Arg<Buffer2>()  // dy
                                  .Ret<Buffer2>()  // dx
                                  .Ret<Buffer1>()  // dscale
                                  .Ret<Buffer1>());  // dbias
