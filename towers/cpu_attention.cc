// Multi-head attention forward and backward for XLA:CPU, as typed-FFI custom calls.
//
// softmax(q k^T * scale) v (Vaswani et al. 2017, eq. 1) for q [B, Q, H, d], k / v [B, K, H, d]
// in float32, one (example, head) pair at a time, the pairs spread over XLA's intra-op thread
// pool. Why it exists: XLA:CPU runs each of attention's small batched products ([65, 64] x
// [64, 65] per head) on one thread, so attention took a third of a tiny CLIP step on a 2-core
// Xeon, where torch's fused CPU kernel took 0.44 s of a 6.5 s step (BENCHMARKS.md). Here a
// pair's products run from the core's caches with register-blocked vector loops: q, v and the
// output gradient are read in place from the [B, T, H, d] layout, transposed operands are read
// through strides, and only k^T (forward) and v^T (backward) are packed.
//
// Built at first use by towers/cpu_kernels.py against jax.ffi.include_dir(); the handlers are
// registered as "hetclip_attention_forward" (with and without the probabilities the backward
// pass reads) and "hetclip_attention_backward".

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Rank-4 float32 buffers ([B, T, H, d] and [B, H, Q, K]); aliases keep the commas out of the
// handler macros.
using Buffer4 = ffi::Buffer<ffi::F32, 4>;
using Result4 = ffi::ResultBuffer<ffi::F32, 4>;

namespace {

using namespace hetclip;  // NOLINT: the shared vector and product pieces

// exp for x <= 0 (logits minus their row maximum): Cephes' expf polynomial on
// r = x - n ln2, |r| <= ln2 / 2, times 2^n built in the exponent bits (relative error ~1e-7).
// Below -87.3 the result is exactly 0: float32's normal range ends there, and denormal
// arithmetic costs each later add or multiply a microcode assist.
inline Vec ExpNonPositive(Vec x) {
  const Vec lowest = Vec{} - 87.3f;
  const auto underflow = x < lowest;
  x = underflow ? lowest : x;
  const Vec round = Vec{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  Vec n = (x * 1.44269504088896341f + round) - round;
  Vec r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  Vec p = Vec{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const IntVec bits = (__builtin_convertvector(n, IntVec) + 127) << 23;
  const Vec result = p * __builtin_bit_cast(Vec, bits);
  return underflow ? Vec{} : result;
}

inline Vec Larger(Vec a, Vec b) { return a > b ? a : b; }

// Horizontal maximum in four halving steps (the shuffles of cpu_kernels.h's Sum).
inline float Max(Vec v) {
  v = Larger(v, Halves(v));
  v = Larger(v, Quarters(v));
  v = Larger(v, Pairs(v));
  v = Larger(v, Neighbours(v));
  return v[0];
}

// The cache lines of the pair a thread runs next, asked for in step with this pair's products
// (in proportion to their multiply-adds done) instead of all at once: the ~1,300 prefetches of
// a forward pair at T = 65, issued together, waited on each other and stalled the products.
// Spread out, they cut a pair's time on one thread by 5% (forward) and 12% (backward) at
// [256, 65, 3, 64] out of cache, the write prefetches (outputs) included.
class Prefetcher {
 public:
  // Rows of `cols` floats, `stride` apart, that the next pair reads (or writes, `write`).
  void Add(const float* data, int64_t stride, int64_t rows, int64_t cols, bool write) {
    ranges_[count_++] = {data, stride, rows, cols, write};
    lines_ += rows * ((cols + kLineFloats - 1) / kLineFloats);
  }
  // The multiply-adds of this pair's products, over which the lines are spread.
  void Spread(int64_t work) { work_ = std::max<int64_t>(work, 1); }
  // `work` more multiply-adds done: asks for the lines due by now.
  void Progress(int64_t work) {
    done_ += work;
    const int64_t due = std::min(lines_, lines_ * std::min(done_, work_) / work_);
    for (; issued_ < due; ++issued_) Next();
  }
  // Asks for whatever is left (the pair's products did less work than Spread said).
  ~Prefetcher() {
    for (; issued_ < lines_; ++issued_) Next();
  }

 private:
  static constexpr int64_t kLineFloats = 64 / sizeof(float);
  struct Range {
    const float* data;
    int64_t stride, rows, cols;
    bool write;
  };
  void Next() {
    const Range& r = ranges_[range_];
    const float* line = r.data + row_ * r.stride + column_;
    if (r.write)
      __builtin_prefetch(line, 1, 2);
    else
      __builtin_prefetch(line, 0, 2);
    if ((column_ += kLineFloats) < r.cols) return;
    column_ = 0;
    if (++row_ < r.rows) return;
    row_ = 0;
    ++range_;
  }
  Range ranges_[8];
  int count_ = 0, range_ = 0;
  int64_t row_ = 0, column_ = 0, lines_ = 0, issued_ = 0, work_ = 1, done_ = 0;
};

// c [rows, cols] = a [rows, depth] x b [depth, cols], cols a multiple of 16, b's rows ldb apart
// and c's ldc. Columns go in tiles of at most kMaxTileVectors (6 on AVX-512, split evenly;
// 1 on AVX2), rows in blocks of 6 (tiles of up to 4 vectors), 5 (5 vectors) or 4 (6 vectors),
// so that a tile's accumulators and its row of b fit 32 vector registers (5 x 5 also splits 65
// rows without a 1-row rest).
// `ahead` (if not null) hears of each block's multiply-adds.
void Matmul(View a, int64_t rows, int64_t depth, const float* b, int64_t ldb, int64_t cols,
            float* c, int64_t ldc, Prefetcher* ahead) {
  const int64_t vectors = cols / kLanes;
  const int64_t tiles = (vectors + kMaxTileVectors - 1) / kMaxTileVectors;
  int64_t first = 0;
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const int width = static_cast<int>((vectors - first) / (tiles - tile));
    const int block = width <= 4 ? 6 : 10 - width;
    for (int64_t m = 0; m < rows; m += block) {
      const View a_rows{a.data + m * a.row_stride, a.row_stride, a.depth_stride};
      const int block_rows = static_cast<int>(std::min<int64_t>(block, rows - m));
      MatmulBlock(a_rows, block_rows, b + first * kLanes, ldb, depth,
                  c + m * ldc + first * kLanes, ldc, width, false);
      if (ahead) ahead->Progress(block_rows * width * kLanes * depth);
    }
    first += width;
  }
}

// One round of a 16 x 16 register transpose: rows a and b differ in row bit J, and the round
// swaps that bit with column bit J (four rounds, J = 0..3, transpose the block).
template <int J>
inline void TransposeRound(Vec& a, Vec& b) {
  constexpr int k = 1 << J;
#define HETCLIP_LO(c) (((c) & k) ? 16 + ((c) ^ k) : (c))
#define HETCLIP_HI(c) (((c) & k) ? 16 + (c) : ((c) | k))
  const Vec lo = __builtin_shufflevector(
      a, b, HETCLIP_LO(0), HETCLIP_LO(1), HETCLIP_LO(2), HETCLIP_LO(3), HETCLIP_LO(4),
      HETCLIP_LO(5), HETCLIP_LO(6), HETCLIP_LO(7), HETCLIP_LO(8), HETCLIP_LO(9), HETCLIP_LO(10),
      HETCLIP_LO(11), HETCLIP_LO(12), HETCLIP_LO(13), HETCLIP_LO(14), HETCLIP_LO(15));
  const Vec hi = __builtin_shufflevector(
      a, b, HETCLIP_HI(0), HETCLIP_HI(1), HETCLIP_HI(2), HETCLIP_HI(3), HETCLIP_HI(4),
      HETCLIP_HI(5), HETCLIP_HI(6), HETCLIP_HI(7), HETCLIP_HI(8), HETCLIP_HI(9), HETCLIP_HI(10),
      HETCLIP_HI(11), HETCLIP_HI(12), HETCLIP_HI(13), HETCLIP_HI(14), HETCLIP_HI(15));
#undef HETCLIP_LO
#undef HETCLIP_HI
  a = lo;
  b = hi;
}

template <int J>
inline void TransposeRounds(Vec (&block)[kLanes]) {
  constexpr int k = 1 << J;
  for (int i = 0; i < kLanes; ++i)
    if (!(i & k)) TransposeRound<J>(block[i], block[i | k]);
}

// out [cols, ld] = scale * in[r, c]^T for in's rows r < rows `stride` apart and c < cols;
// out's columns from `rows` to ld (a multiple of 16) are zero. Blocks of 16 x 16 are
// transposed in registers where cols is a multiple of 16.
void PackTransposed(const float* in, int64_t stride, int64_t rows, int64_t cols, float scale,
                    float* out, int64_t ld) {
  if (cols % kLanes) {
    for (int64_t c = 0; c < cols; ++c) std::fill(out + c * ld + rows, out + (c + 1) * ld, 0.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) out[c * ld + r] = scale * in[r * stride + c];
    return;
  }
  for (int64_t r0 = 0; r0 < ld; r0 += kLanes) {
    for (int64_t c0 = 0; c0 < cols; c0 += kLanes) {
      Vec block[kLanes];
      for (int i = 0; i < kLanes; ++i)
        block[i] = r0 + i < rows ? Load(in + (r0 + i) * stride + c0) * scale : Vec{};
      TransposeRounds<0>(block);
      TransposeRounds<1>(block);
      TransposeRounds<2>(block);
      TransposeRounds<3>(block);
      for (int i = 0; i < kLanes; ++i) Store(out + (c0 + i) * ld + r0, block[i]);
    }
  }
}

// out [rows, ld] = in[r, :cols] (rows `stride` apart), columns past `cols` zero.
void PackRows(const float* in, int64_t stride, int64_t rows, int64_t cols, float* out,
              int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out + r * ld, in + r * stride, cols * sizeof(float));
    std::fill(out + r * ld + cols, out + (r + 1) * ld, 0.0f);
  }
}

void CopyRows(const float* in, int64_t ld, int64_t rows, int64_t cols, float* out,
              int64_t stride) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out + r * stride, in + r * ld, cols * sizeof(float));
}

// Row-wise softmax of logits [rows, ld] over its first `cols` columns (ld >= cols rounded up to
// 16; the padding is overwritten), written to out [rows, out_ld], which may be logits itself.
void SoftmaxRows(float* logits, int64_t ld, int64_t rows, int64_t cols, float* out,
                 int64_t out_ld) {
  const int64_t padded = RoundUp(cols), full = cols / kLanes * kLanes;
  // Rows in groups of 4, each step for the whole group: a row alone is a chain of dependent
  // steps (maximum, exponentials and their sum, reciprocal), and 4 of them interleave.
  constexpr int kGroup = 4;
  for (int64_t r0 = 0; r0 < rows; r0 += kGroup) {
    const int group = static_cast<int>(std::min<int64_t>(kGroup, rows - r0));
    float* row[kGroup];
    float row_max[kGroup], inverse[kGroup];
    for (int i = 0; i < group; ++i) {
      row[i] = logits + (r0 + i) * ld;
      // Padding at float32's lowest so that whole vectors can be used; its exp is 0.
      std::fill(row[i] + cols, row[i] + padded, -3.0e38f);
      Vec max = Load(row[i]);
      for (int64_t c = kLanes; c < padded; c += kLanes) max = Larger(max, Load(row[i] + c));
      row_max[i] = Max(max);
    }
    for (int i = 0; i < group; ++i) {
      Vec sum = {};
      for (int64_t c = 0; c < padded; c += kLanes) {
        const Vec e = ExpNonPositive(Load(row[i] + c) - row_max[i]);
        Store(row[i] + c, e);
        sum += e;
      }
      inverse[i] = 1.0f / Sum(sum);
    }
    for (int i = 0; i < group; ++i) {
      float* out_row = out + (r0 + i) * out_ld;
      for (int64_t c = 0; c < full; c += kLanes) Store(out_row + c, Load(row[i] + c) * inverse[i]);
      for (int64_t c = full; c < cols; ++c) out_row[c] = row[i][c] * inverse[i];
    }
  }
}

// dS = scale P * (dP - rowsum(P * dP)) in place of dP [rows, ld] (P [rows, cols] dense).
void SoftmaxGradientRows(const float* probs, int64_t rows, int64_t cols, float scale,
                         float* grad, int64_t ld) {
  const int64_t full = cols / kLanes * kLanes;
  for (int64_t r = 0; r < rows; ++r) {
    const float* p_row = probs + r * cols;
    float* g_row = grad + r * ld;
    Vec dot_vec = {};
    for (int64_t c = 0; c < full; c += kLanes) dot_vec += Load(p_row + c) * Load(g_row + c);
    float dot = Sum(dot_vec);
    for (int64_t c = full; c < cols; ++c) dot += p_row[c] * g_row[c];
    for (int64_t c = 0; c < full; c += kLanes)
      Store(g_row + c, Load(p_row + c) * (Load(g_row + c) - dot) * scale);
    for (int64_t c = full; c < cols; ++c) g_row[c] = p_row[c] * (g_row[c] - dot) * scale;
  }
}

// Per-thread scratch, grown on demand and kept between calls.
float* Scratch(std::vector<float>& buffer, int64_t size) {
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// One attention problem: q [B, Q, H, d], k / v [B, K, H, d] (float32, row-major) and what a
// pass writes; every (example, head) pair is independent.
struct Problem {
  int64_t batch, queries, keys, heads, depth;
  float scale;
  const float *q, *k, *v;
  const float *probs_in = nullptr, *grad_out = nullptr;  // backward: P [B, H, Q, K], dout
  float *out = nullptr, *probs = nullptr;                 // forward (probs may be null)
  float *grad_q = nullptr, *grad_k = nullptr, *grad_v = nullptr;
  int64_t pairs() const { return batch * heads; }
  int64_t row() const { return heads * depth; }  // distance between tokens in [B, T, H, d]
  int64_t q_offset(int64_t pair) const {
    return pair / heads * queries * row() + pair % heads * depth;
  }
  int64_t kv_offset(int64_t pair) const {
    return pair / heads * keys * row() + pair % heads * depth;
  }
  // Whole vectors per token row: [T, d] operands are read and written in place.
  bool in_place() const { return depth % kLanes == 0; }
};

// A [rows, d] operand of one pair as Matmul's b: in place, or copied with its columns padded to
// 16 into `scratch` when d is not a multiple of 16. Returns the rows' distance.
int64_t Operand(const Problem& p, const float*& data, int64_t rows, float* scratch) {
  if (p.in_place()) return p.row();
  PackRows(data, p.row(), rows, p.depth, scratch, RoundUp(p.depth));
  data = scratch;
  return RoundUp(p.depth);
}

// c = a x b into one pair's [rows, d] result at `out`: directly, or through `scratch` when d is
// not a multiple of 16.
void MatmulInto(const Problem& p, View a, int64_t rows, int64_t depth, const float* b,
                int64_t ldb, float* out, float* scratch, Prefetcher* ahead) {
  const int64_t dpad = RoundUp(p.depth);
  if (p.in_place()) return Matmul(a, rows, depth, b, ldb, dpad, out, p.row(), ahead);
  Matmul(a, rows, depth, b, ldb, dpad, scratch, dpad, ahead);
  CopyRows(scratch, dpad, rows, p.depth, out, p.row());
}

// out = softmax(q k^T scale) v for one pair; P into probs unless it is null. `next` (or -1) is
// the pair this thread runs next, whose inputs and outputs are prefetched.
void ForwardPair(const Problem& p, int64_t pair, int64_t next, std::vector<float>& buffer) {
  const int64_t kpad = RoundUp(p.keys), dpad = RoundUp(p.depth);
  const int64_t q_offset = p.q_offset(pair), kv_offset = p.kv_offset(pair);
  float* keys_t = Scratch(buffer, p.depth * kpad + p.queries * kpad +
                                      (p.in_place() ? 0 : (p.keys + p.queries) * dpad));
  float* logits = keys_t + p.depth * kpad;      // [Q, kpad]
  float* packed = logits + p.queries * kpad;    // [max(K, Q), dpad] where d % 16 != 0
  Prefetcher ahead;
  if (next >= 0) {  // in the order this pair's successor reads them
    ahead.Add(p.k + p.kv_offset(next), p.row(), p.keys, p.depth, false);
    ahead.Add(p.q + p.q_offset(next), p.row(), p.queries, p.depth, false);
    ahead.Add(p.v + p.kv_offset(next), p.row(), p.keys, p.depth, false);
    if (p.probs) ahead.Add(p.probs + next * p.queries * p.keys, 0, 1, p.queries * p.keys, true);
    ahead.Add(p.out + p.q_offset(next), p.row(), p.queries, p.depth, true);
    ahead.Spread(p.queries * (kpad * p.depth + dpad * p.keys));
  }
  PackTransposed(p.k + kv_offset, p.row(), p.keys, p.depth, p.scale, keys_t, kpad);
  Matmul({p.q + q_offset, p.row(), 1}, p.queries, p.depth, keys_t, kpad, kpad, logits, kpad,
         &ahead);
  float* weights = p.probs ? p.probs + pair * p.queries * p.keys : logits;
  const int64_t weights_ld = p.probs ? p.keys : kpad;
  SoftmaxRows(logits, kpad, p.queries, p.keys, weights, weights_ld);
  const float* values = p.v + kv_offset;
  const int64_t values_ld = Operand(p, values, p.keys, packed);
  MatmulInto(p, {weights, weights_ld, 1}, p.queries, p.keys, values, values_ld,
             p.out + q_offset, packed + p.keys * dpad, &ahead);
}

// Gradients of out = P v, P = softmax(q k^T scale) for one pair, given P and dout:
// dv = P^T dout, dP = dout v^T, dS = scale P * (dP - rowsum(P * dP)), dq = dS k, dk = dS^T q.
void BackwardPair(const Problem& p, int64_t pair, int64_t next, std::vector<float>& buffer) {
  const int64_t kpad = RoundUp(p.keys), dpad = RoundUp(p.depth);
  const int64_t q_offset = p.q_offset(pair), kv_offset = p.kv_offset(pair);
  const int64_t longest = std::max(p.queries, p.keys);
  float* values_t =
      Scratch(buffer, p.depth * kpad + p.queries * kpad + (p.in_place() ? 0 : 4 * longest * dpad));
  float* grad_s = values_t + p.depth * kpad;  // [Q, kpad]: dP, then dS
  float* packed = grad_s + p.queries * kpad;  // 3 operands and a result where d % 16 != 0
  const float* probs = p.probs_in + pair * p.queries * p.keys;
  Prefetcher ahead;
  if (next >= 0) {  // in the order this pair's successor reads and writes them
    ahead.Add(p.v + p.kv_offset(next), p.row(), p.keys, p.depth, false);
    ahead.Add(p.grad_out + p.q_offset(next), p.row(), p.queries, p.depth, false);
    ahead.Add(p.probs_in + next * p.queries * p.keys, 0, 1, p.queries * p.keys, false);
    ahead.Add(p.q + p.q_offset(next), p.row(), p.queries, p.depth, false);
    ahead.Add(p.k + p.kv_offset(next), p.row(), p.keys, p.depth, false);
    ahead.Add(p.grad_v + p.kv_offset(next), p.row(), p.keys, p.depth, true);
    ahead.Add(p.grad_k + p.kv_offset(next), p.row(), p.keys, p.depth, true);
    ahead.Add(p.grad_q + p.q_offset(next), p.row(), p.queries, p.depth, true);
    ahead.Spread(p.queries * (kpad * p.depth + 3 * dpad * p.keys));
  }
  PackTransposed(p.v + kv_offset, p.row(), p.keys, p.depth, 1.0f, values_t, kpad);
  Matmul({p.grad_out + q_offset, p.row(), 1}, p.queries, p.depth, values_t, kpad, kpad, grad_s,
         kpad, &ahead);
  SoftmaxGradientRows(probs, p.queries, p.keys, p.scale, grad_s, kpad);
  const float *grad_out = p.grad_out + q_offset, *queries = p.q + q_offset;
  const float* keys = p.k + kv_offset;
  const int64_t grad_out_ld = Operand(p, grad_out, p.queries, packed);
  const int64_t queries_ld = Operand(p, queries, p.queries, packed + longest * dpad);
  const int64_t keys_ld = Operand(p, keys, p.keys, packed + 2 * longest * dpad);
  float* result = packed + 3 * longest * dpad;
  MatmulInto(p, {probs, 1, p.keys}, p.keys, p.queries, grad_out, grad_out_ld,
             p.grad_v + kv_offset, result, &ahead);
  MatmulInto(p, {grad_s, 1, kpad}, p.keys, p.queries, queries, queries_ld,
             p.grad_k + kv_offset, result, &ahead);
  MatmulInto(p, {grad_s, kpad, 1}, p.queries, p.keys, keys, keys_ld, p.grad_q + q_offset,
             result, &ahead);
}

ffi::Error Describe(const Buffer4& q, const Buffer4& k, const Buffer4& v, float scale,
                    Problem* p) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  for (int i = 0; i < 4; ++i)
    if (kd[i] != vd[i] || (i != 1 && qd[i] != kd[i]))
      return ffi::Error::InvalidArgument(
          "hetclip attention: q [B, Q, H, d] and k, v [B, K, H, d] disagree in shape");
  p->batch = qd[0], p->queries = qd[1], p->keys = kd[1], p->heads = qd[2], p->depth = qd[3];
  p->scale = scale;
  p->q = q.typed_data(), p->k = k.typed_data(), p->v = v.typed_data();
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, Buffer4 q, Buffer4 k, Buffer4 v, float scale,
                   float* out, float* probs) {
  Problem p;
  if (ffi::Error error = Describe(q, k, v, scale, &p); error.failure()) return error;
  p.out = out, p.probs = probs;
  ParallelFor(pool, p.pairs(), [&p](int64_t pair, int64_t next) {
    thread_local std::vector<float> buffer;
    ForwardPair(p, pair, next, buffer);
  });
  return ffi::Error::Success();
}

ffi::Error ForwardWithProbs(ffi::ThreadPool pool, Buffer4 q, Buffer4 k, Buffer4 v, Result4 out,
                            Result4 probs, float scale) {
  return Forward(pool, q, k, v, scale, out->typed_data(), probs->typed_data());
}

ffi::Error ForwardOnly(ffi::ThreadPool pool, Buffer4 q, Buffer4 k, Buffer4 v, Result4 out,
                       float scale) {
  return Forward(pool, q, k, v, scale, out->typed_data(), nullptr);
}

ffi::Error Backward(ffi::ThreadPool pool, Buffer4 q, Buffer4 k, Buffer4 v, Buffer4 probs,
                    Buffer4 grad_out, Result4 grad_q, Result4 grad_k, Result4 grad_v,
                    float scale) {
  Problem p;
  if (ffi::Error error = Describe(q, k, v, scale, &p); error.failure()) return error;
  p.probs_in = probs.typed_data(), p.grad_out = grad_out.typed_data();
  p.grad_q = grad_q->typed_data(), p.grad_k = grad_k->typed_data();
  p.grad_v = grad_v->typed_data();
  ParallelFor(pool, p.pairs(), [&p](int64_t pair, int64_t next) {
    thread_local std::vector<float> buffer;
    BackwardPair(p, pair, next, buffer);
  });
  return ffi::Error::Success();
}

}  // namespace

// Every handler takes XLA's thread pool and q, k, v first.
inline auto BindThreadPoolAndQkv() {
  return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<Buffer4>().Arg<Buffer4>().Arg<Buffer4>();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(HetclipAttentionForwardWithProbs, ForwardWithProbs,
                              BindThreadPoolAndQkv()  // -> out, probs
                                  .Ret<Buffer4>()
                                  .Ret<Buffer4>()
                                  .Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HetclipAttentionForward, ForwardOnly,
                              BindThreadPoolAndQkv().Ret<Buffer4>().Attr<float>("scale"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(HetclipAttentionBackward, Backward,
                              BindThreadPoolAndQkv()
                                  .Arg<Buffer4>()  // probs
                                  .Arg<Buffer4>()  // dout
                                  .Ret<Buffer4>()  // dq
                                  .Ret<Buffer4>()  // dk
                                  .Ret<Buffer4>()  // dv
                                  .Attr<float>("scale"));
