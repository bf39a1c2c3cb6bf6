// Fused temporal part of the (2+1)D block on the CPU (OpenMP, vectorised over channels).
//
// z, y, grad_y, grad_z are [N][T][H][W][C] contiguous (channels_last_3d): row m of clip n
// (m = t * HW + s) holds C channels, and the frame t + d of the same position is row m + d * HW.
// With p = kt / 2 and taps j = 0..kt-1:
//   forward   y[m]  = act(z[m] + bias + sum_j z[m + (j - p) HW] @ P_j),   P_j[c'][c] = w[c][c'][j]
//   backward  grad_z[m] = g[m] + sum_j g[m + (j - p) HW] @ Q_j,            Q_j[c][c'] = w[c][c'][kt-1-j]
//             grad_w[c][c'][j] = sum_m g[m][c] z[m + (j - p) HW][c'],      grad_b[c] = sum_m g[m][c]
// where g = grad_y * (y > 0) under relu, else grad_y, and rows whose shifted frame leaves
// [0, T) contribute zero. Both convolutions are one routine (residual_conv) over weights packed
// into column panels; the weight gradient is a second GEMM-shaped reduction (weight_grad). For
// kt = 3 and 128 channels or more (winograd_applies), both run by Winograd's F(2, 3) along T
// instead (winograd_residual_conv, winograd_weight_grad).
// Every product is accumulated in T (float32 or float64): the kernel serves those two dtypes.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "cpu/micro_tile.h"
#include "cpu/ops.h"

namespace webda::cpu {
namespace {

// Rows of one weight-gradient reduction step: their g and z stay in L2 while every tile uses them.
constexpr int64_t kChunkRows = 128;
// Packed weights up to this size (C <= 256 in float32, kt = 3; half of a 2 MiB L2) stay in L2
// while a thread walks its rows through every column tile.
constexpr int64_t kCachedWeightBytes = 1 << 20;
// F(2, 3) along T from this many channels: narrower, its transforms cost about what its fewer
// products save. Set by timing both paths at the stages of benchmarks/bench_residual_conv2plus1d.py.
constexpr int64_t kWinogradChannels = 128;
// Weight-gradient buffers up to this size (C <= 128 in float32, kt = 3) are cheap to keep, zero
// and add up once per thread.
constexpr int64_t kSmallBufferBytes = 256 << 10;

struct Shape {
  int64_t n, c, t, hw, kt;
  int64_t rows() const { return t * hw; }  // rows of one clip
  int64_t pad() const { return kt / 2; }
};

// Scratch of `count` elements (uninitialised), one per slot and calling thread, kept between
// calls so that weight-sized buffers do not take fresh (page-faulting) memory on every call.
template <typename T> T* weight_scratch(int slot, int64_t count) {
  thread_local std::vector<T> buffers[2];
  std::vector<T>& buffer = buffers[slot];
  if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

// Tap j of the weights seen as P_j[k][out] = w[out][k][j] (forward) or Q_j[k][out] = w[k][out][kt-1-j]
// (backward).
template <typename T> inline T tap(const T* w, const Shape& s, bool backward, int64_t k, int64_t out, int64_t j) {
  return backward ? w[(k * s.c + out) * s.kt + (s.kt - 1 - j)] : w[(out * s.c + k) * s.kt + j];
}

// Column panels of the packed weights: packed[tile][j][k][col] = weight seen as P_j (forward)
// or Q_j (backward), zero past column C, so micro-tiles always load whole vectors. Threads
// split the panels: for wide C the packing is a sizeable pass of its own.
template <typename T> const T* pack_weight(const T* w, const Shape& s, bool backward) {
  constexpr int64_t kCols = Vec<T>::kWideCols;
  const int64_t c = s.c, kt = s.kt, tiles = ceil_div(c, kCols);
  T* packed = weight_scratch<T>(0, tiles * kt * c * kCols);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t tile = 0; tile < tiles; ++tile)
    for (int64_t j = 0; j < kt; ++j)
      for (int64_t k = 0; k < c; ++k) {
        T* dst = packed + ((tile * kt + j) * c + k) * kCols;
        for (int64_t col = 0; col < kCols; ++col) {
          const int64_t out = tile * kCols + col;
          dst[col] = out < c ? tap(w, s, backward, k, out, j) : T(0);
        }
      }
  return packed;
}

// act(value + the n (<= width) values at res + those at bias (may be null)): the temporal
// convolutions' epilogue.
template <typename T>
__attribute__((always_inline)) inline typename Vec<T>::type finish(typename Vec<T>::type value, const T* res,
                                                                  const T* bias, int64_t n, bool relu) {
  value += load_n(res, n);
  if (bias) value += load_n(bias, n);
  return relu ? (value < T(0) ? typename Vec<T>::type{} : value) : value;
}

// dst[r][col] = act(acc[r][col] + res[r][col] + bias[col]) for the rows r < valid and columns
// col < cols of one micro-tile (rows c apart; bias may be null). kWhole: kWideRows rows of kCols
// columns, so every loop unrolls and acc stays in registers.
template <bool kWhole, typename T>
__attribute__((always_inline)) inline void store_tile(typename Vec<T>::type (&acc)[kWideRows][kWideVectors],
                                                      const T* res, const T* bias, T* dst, int64_t c, int64_t valid,
                                                      int64_t cols, bool relu) {
  constexpr int W = Vec<T>::kWidth;
  for (int r = 0; r < (kWhole ? kWideRows : valid); ++r)
    for (int v = 0; v < kWideVectors; ++v) {
      const int64_t n = kWhole ? W : cols - v * W;
      if (n <= 0) break;
      store_n(dst + r * c + v * W, finish(acc[r][v], res + r * c + v * W, bias ? bias + v * W : nullptr, n, relu), n);
    }
}

// out[m] = act(src[m] + bias + sum_j src[m + (j - p) HW] @ packed_j), per clip; bias may be null.
template <typename T>
void residual_conv(const T* src, const T* packed, const T* bias, T* out, const Shape& s, bool relu) {
  using V = typename Vec<T>::type;
  constexpr int64_t kCols = Vec<T>::kWideCols;
  const int64_t c = s.c, rows = s.rows(), tiles = ceil_div(c, kCols), blocks = ceil_div(rows, kWideRows);
  const std::vector<T> zeros(c, T(0));  // the row a tap reads outside [0, T)
  auto block_tile = [&](int64_t tile, int64_t clip, int64_t block) {
    const int64_t m0 = block * kWideRows, valid = std::min<int64_t>(kWideRows, rows - m0), c0 = tile * kCols;
    const T* clip_src = src + clip * rows * c;
    const T* panel = packed + tile * s.kt * c * kCols;
    const T* res = clip_src + m0 * c + c0;
    T* dst = out + (clip * rows + m0) * c + c0;
    const T* tile_bias = bias ? bias + c0 : nullptr;
    // Whole micro-tiles (the common case): kWideRows rows and kCols columns, and each tap reads
    // kWideRows consecutive rows of the clip or only padding.
    bool whole = valid == kWideRows && c0 + kCols <= c;
    for (int64_t j = 0; j < s.kt; ++j) {
      const int64_t first = m0 + (j - s.pad()) * s.hw;
      whole = whole && (first + kWideRows <= 0 || first >= rows || (first >= 0 && first + kWideRows <= rows));
    }
    if (whole) {
      V acc[kWideRows][kWideVectors] = {};
      for (int64_t j = 0; j < s.kt; ++j) {
        const int64_t first = m0 + (j - s.pad()) * s.hw;
        if (first >= 0 && first < rows)
          micro_tile<T, true>(StridedRows<T>{clip_src + first * c, c, 1}, panel + j * c * kCols, kCols, kCols, c, acc);
      }
      store_tile<true>(acc, res, tile_bias, dst, c, kWideRows, kCols, relu);
      return;
    }
    V acc[kWideRows][kWideVectors] = {};
    for (int64_t j = 0; j < s.kt; ++j) {
      const int64_t shift = (j - s.pad()) * s.hw;
      if (m0 + shift >= rows || m0 + valid - 1 + shift < 0) continue;  // the tap reads only padding
      const T* a[kWideRows];
      for (int r = 0; r < kWideRows; ++r) {  // rows past the end repeat the last one, unstored
        const int64_t m = m0 + std::min<int64_t>(r, valid - 1) + shift;
        a[r] = (m >= 0 && m < rows) ? clip_src + m * c : zeros.data();
      }
      micro_tile<T, true>(RowPointers<T>{a, 1}, panel + j * c * kCols, kCols, kCols, c, acc);
    }
    store_tile<false>(acc, res, tile_bias, dst, c, valid, c - c0, relu);
  };
  if (tiles * s.kt * c * kCols * static_cast<int64_t>(sizeof(T)) <= kCachedWeightBytes) {
    // Threads split the rows, so each reads only its share of src instead of all of it.
#pragma omp parallel for collapse(2) schedule(dynamic, 8)
    for (int64_t clip = 0; clip < s.n; ++clip)
      for (int64_t block = 0; block < blocks; ++block)
        for (int64_t tile = 0; tile < tiles; ++tile) block_tile(tile, clip, block);
  } else {
    // Column tile outermost: a thread's consecutive micro-tiles reuse one weight panel from cache.
#pragma omp parallel for collapse(3) schedule(static)
    for (int64_t tile = 0; tile < tiles; ++tile)
      for (int64_t clip = 0; clip < s.n; ++clip)
        for (int64_t block = 0; block < blocks; ++block) block_tile(tile, clip, block);
  }
}

// The window d_k = frame 2q - 1 + k (k < 4) of a position in a clip, null outside [0, T).
template <typename T> void frame_window(const T* clip, const Shape& s, int64_t q, int64_t position, const T* (&d)[4]) {
  for (int k = 0; k < 4; ++k) {
    const int64_t frame = 2 * q - 1 + k;
    d[k] = frame >= 0 && frame < s.t ? clip + (frame * s.hw + position) * s.c : nullptr;
  }
}

// V = (d0 - d2, d1 + d2, d2 - d1, d1 - d3) of the n (<= width) channels from c0 of a window.
template <typename T>
__attribute__((always_inline)) inline void transform_window(const T* const (&d)[4], int64_t c0, int64_t n,
                                                            typename Vec<T>::type (&v)[4]) {
  typename Vec<T>::type x[4];
  for (int k = 0; k < 4; ++k) x[k] = d[k] ? load_n(d[k] + c0, n) : typename Vec<T>::type{};
  v[0] = x[0] - x[2];
  v[1] = x[1] + x[2];
  v[2] = x[2] - x[1];
  v[3] = x[1] - x[3];
}

// Winograd's F(2, 3) along T (kt = 3): output frames 2q and 2q + 1 of a position read its frames
// d_k = src[2q - 1 + k] (k < 4, zero outside [0, T)) through
//   V = (d0 - d2, d1 + d2, d2 - d1, d1 - d3),   M_i = V_i @ U_i,
//   U = (P0, (P0 + P1 + P2) / 2, (P0 - P1 + P2) / 2, P2)   (P_j: the taps, forward or backward),
//   out[2q] = M0 + M1 + M2,   out[2q + 1] = M1 - M2 - M3,
// then the residual, bias and activation as residual_conv: 4 products per pair of frames instead
// of 6. packed[tile][i][k][col] = U_i[k][tile * kCols + col], zero past column C.
template <typename T> const T* pack_winograd_weight(const T* w, const Shape& s, bool backward) {
  constexpr int64_t kCols = Vec<T>::kWideCols;
  const int64_t c = s.c, tiles = ceil_div(c, kCols);
  T* packed = weight_scratch<T>(0, tiles * 4 * c * kCols);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t tile = 0; tile < tiles; ++tile)
    for (int64_t k = 0; k < c; ++k) {
      T* dst = packed + (tile * 4 * c + k) * kCols;
      for (int64_t col = 0; col < kCols; ++col) {
        const int64_t out = tile * kCols + col;
        T p[3] = {};
        for (int j = 0; out < c && j < 3; ++j) p[j] = tap(w, s, backward, k, out, j);
        const T u[4] = {p[0], (p[0] + p[1] + p[2]) * T(0.5), (p[0] - p[1] + p[2]) * T(0.5), p[2]};
        for (int i = 0; i < 4; ++i) dst[i * c * kCols + col] = u[i];
      }
    }
  return packed;
}

// residual_conv for kt = 3 by F(2, 3): threads take blocks of kWideRows rows (q, position) of a
// clip's pairs of frames; a block's V stays in L1 while every column tile's four products are
// summed in registers and parked in an L1 buffer for the output transform.
template <typename T>
void winograd_residual_conv(const T* src, const T* packed, const T* bias, T* out, const Shape& s, bool relu) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  constexpr int R = kWideRows;
  constexpr int64_t kCols = Vec<T>::kWideCols;
  const int64_t c = s.c, hw = s.hw, rows = ceil_div(s.t, 2) * hw;  // (q, position) rows of one clip
  const int64_t tiles = ceil_div(c, kCols), blocks = ceil_div(rows, R);
#pragma omp parallel
  {
    std::vector<T> v(4 * R * c);  // v[i][r][channel]; rows past the last block's end keep old values, unstored
    alignas(64) T m[4 * R * kCols];
#pragma omp for collapse(2) schedule(dynamic, 4)
    for (int64_t clip = 0; clip < s.n; ++clip)
      for (int64_t block = 0; block < blocks; ++block) {
        const int64_t r0 = block * R, valid = std::min<int64_t>(R, rows - r0);
        const T* clip_src = src + clip * s.t * hw * c;
        T* clip_out = out + clip * s.t * hw * c;
        int64_t pair_of[R], position_of[R];  // row r0 + r is (pair q, position) of the clip
        for (int r = 0; r < R; ++r) {
          pair_of[r] = r == 0 ? r0 / hw : pair_of[r - 1] + (position_of[r - 1] + 1 == hw);
          position_of[r] = r == 0 ? r0 % hw : (position_of[r - 1] + 1) % hw;
        }
        for (int r = 0; r < valid; ++r) {
          const T* d[4];
          frame_window(clip_src, s, pair_of[r], position_of[r], d);
          for (int64_t c0 = 0; c0 < c; c0 += W) {
            const int64_t n = std::min<int64_t>(W, c - c0);
            V t[4];
            transform_window(d, c0, n, t);
            for (int i = 0; i < 4; ++i) store_n(v.data() + (i * R + r) * c + c0, t[i], n);
          }
        }
        for (int64_t tile = 0; tile < tiles; ++tile) {
          const int64_t c0 = tile * kCols;
          for (int i = 0; i < 4; ++i) {
            V acc[R][kWideVectors] = {};
            micro_tile<T, true>(StridedRows<T>{v.data() + i * R * c, c, 1}, packed + (tile * 4 + i) * c * kCols, kCols,
                                kCols, c, acc);
            for (int r = 0; r < R; ++r)
              for (int u = 0; u < kWideVectors; ++u) *reinterpret_cast<V*>(m + (i * R + r) * kCols + u * W) = acc[r][u];
          }
          for (int r = 0; r < valid; ++r) {
            const int64_t q = pair_of[r], position = position_of[r];
            for (int u = 0; u < kWideVectors; ++u) {
              const int64_t n = c - c0 - u * W;
              if (n <= 0) break;
              V mi[4];
              for (int i = 0; i < 4; ++i) mi[i] = *reinterpret_cast<const V*>(m + (i * R + r) * kCols + u * W);
              const V pair[2] = {mi[0] + mi[1] + mi[2], mi[1] - mi[2] - mi[3]};
              for (int f = 0; f < 2 && 2 * q + f < s.t; ++f) {
                const int64_t at = ((2 * q + f) * hw + position) * c + c0 + u * W;
                store_n(clip_out + at, finish(pair[f], clip_src + at, bias ? bias + c0 + u * W : nullptr, n, relu), n);
              }
            }
          }
        }
      }
  }
}

// `buffers` zeroed buffers of `size` elements for the weight gradient's sums (scratch slot 1).
template <typename T> T* zeroed_sums(int64_t buffers, int64_t size) {
  T* buf = weight_scratch<T>(1, buffers * size);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < buffers * size; ++i) buf[i] = T(0);
  return buf;
}

// Every buffer's sums added into the first.
template <typename T> void add_sums(T* buf, int64_t buffers, int64_t size) {
  if (buffers < 2) return;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < size; ++i)
    for (int64_t k = 1; k < buffers; ++k) buf[i] += buf[k * size + i];
}

// grad_w[c][c'][j] = sum_m g[m][c] z[m + (j - p) HW][c'], written to grad_w (fully).
// The rows are walked in chunks: each chunk's products for one (j, c-block, c'-tile) tile are
// summed in registers, then added to a [j][c][c'] buffer (two-level summation). A thread first
// copies the chunk's g into column blocks of kWideRows channels (zero past C), so every micro-tile
// broadcasts from one pointer. Threads own disjoint tiles and walk all rows, or, when the buffer
// is small, disjoint chunks of rows with a buffer each (so each reads only its share of g and
// z), added up at the end.
template <typename T> void weight_grad(const T* g, const T* z, T* grad_w, const Shape& s) {
  using V = typename Vec<T>::type;
  constexpr int64_t kCols = Vec<T>::kWideCols;
  const int64_t c = s.c, rows = s.rows();
  const int64_t row_blocks = ceil_div(c, kWideRows), col_tiles = ceil_div(c, kCols);
  const int64_t buf_rows = row_blocks * kWideRows, buf_cols = col_tiles * kCols;  // padded, never out of range
  const int64_t tiles = s.kt * row_blocks * col_tiles, buf_size = s.kt * buf_rows * buf_cols;
  const int64_t chunks_per_clip = ceil_div(rows, kChunkRows), chunks = s.n * chunks_per_clip;
  const bool split_rows = buf_size * static_cast<int64_t>(sizeof(T)) <= kSmallBufferBytes;
  const int64_t buffers = split_rows ? omp_get_max_threads() : 1;
  T* buf = zeroed_sums<T>(buffers, buf_size);

  // blocks[cb][k][r] = g[m0 + k][cb * kWideRows + r] (zero past C) for the chunk's rows m0 + k.
  auto pack_chunk = [&](int64_t chunk, T* blocks) {
    const int64_t clip = chunk / chunks_per_clip, m0 = chunk % chunks_per_clip * kChunkRows;
    const int64_t depth = std::min(kChunkRows, rows - m0);
    for (int64_t k = 0; k < depth; ++k) {
      const T* row = g + (clip * rows + m0 + k) * c;
      for (int64_t cb = 0; cb < row_blocks; ++cb) {
        T* dst = blocks + (cb * kChunkRows + k) * kWideRows;
        const int64_t n = std::min<int64_t>(kWideRows, c - cb * kWideRows);
        if (n == kWideRows) {
          std::memcpy(dst, row + cb * kWideRows, sizeof(T) * kWideRows);
        } else {
          for (int r = 0; r < kWideRows; ++r) dst[r] = r < n ? row[cb * kWideRows + r] : T(0);
        }
      }
    }
  };
  auto accumulate = [&](int64_t tile, int64_t chunk, const T* blocks, T* sums) {
    const int64_t clip = chunk / chunks_per_clip, m0 = chunk % chunks_per_clip * kChunkRows;
    const int64_t j = tile / (row_blocks * col_tiles);
    const int64_t cb = tile / col_tiles % row_blocks, ct = tile % col_tiles;
    const int64_t shift = (j - s.pad()) * s.hw;
    const int64_t lo = std::max(m0, -shift), hi = std::min({m0 + kChunkRows, rows, rows - shift});
    if (lo >= hi) return;
    const T* b = z + (clip * rows + lo + shift) * c + ct * kCols;
    const int64_t b_cols = c - ct * kCols;
    V acc[kWideRows][kWideVectors] = {};
    const StridedRows<T> a{blocks + (cb * kChunkRows + lo - m0) * kWideRows, 1, kWideRows};
    if (b_cols >= kCols)
      micro_tile<T, true>(a, b, c, b_cols, hi - lo, acc);
    else
      micro_tile<T, false>(a, b, c, b_cols, hi - lo, acc);
    for (int r = 0; r < kWideRows; ++r) {
      T* dst = sums + (j * buf_rows + cb * kWideRows + r) * buf_cols + ct * kCols;
      for (int v = 0; v < kWideVectors; ++v) {
        V* d = reinterpret_cast<V*>(dst + v * Vec<T>::kWidth);
        *d += acc[r][v];
      }
    }
  };
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
    std::vector<T> blocks(row_blocks * kChunkRows * kWideRows);
    if (split_rows) {
      T* mine = buf + id * buf_size;  // threads <= buffers: the team has at most max_threads
#pragma omp for schedule(dynamic)
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        pack_chunk(chunk, blocks.data());
        for (int64_t tile = 0; tile < tiles; ++tile) accumulate(tile, chunk, blocks.data(), mine);
      }
    } else {
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        pack_chunk(chunk, blocks.data());
        for (int64_t tile = tiles * id / threads; tile < tiles * (id + 1) / threads; ++tile)
          accumulate(tile, chunk, blocks.data(), buf);
      }
    }
  }
  add_sums(buf, buffers, buf_size);
#pragma omp parallel for schedule(static)
  for (int64_t co = 0; co < c; ++co)
    for (int64_t j = 0; j < s.kt; ++j) {
      const T* src = buf + (j * buf_rows + co) * buf_cols;
      T* dst = grad_w + co * c * s.kt + j;
      for (int64_t ci = 0; ci < c; ++ci) dst[ci * s.kt] = src[ci];
    }
}

// The weight gradient by the transpose of F(2, 3) (kt = 3): per pair of frames (2q, 2q + 1) of a
// position, with g0, g1 its rows of g (g1 zero past T) and d_k = z[2q - 1 + k] as in the forward,
//   A = (g0, g0 + g1, g0 - g1, -g1),   V = (d0 - d2, d1 + d2, d2 - d1, d1 - d3),   M_i = sum A_i^T V_i,
//   grad_w[:, :, 0] = M0 + (M1 + M2) / 2,   [1] = (M1 - M2) / 2,   [2] = (M1 + M2) / 2 + M3:
// 4 products per pair of frames instead of 6. Threads take chunks of a clip's (pair, position)
// rows, transform them into rows of A and V and sum their products into a [4][c][c'] buffer
// each, added up at the end.
template <typename T> void winograd_weight_grad(const T* g, const T* z, T* grad_w, const Shape& s) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  constexpr int R = kWideRows;
  constexpr int64_t kCols = Vec<T>::kWideCols;
  const int64_t c = s.c, hw = s.hw, rows = ceil_div(s.t, 2) * hw;
  const int64_t row_blocks = ceil_div(c, R), col_tiles = ceil_div(c, kCols);
  const int64_t buf_rows = row_blocks * R, buf_cols = col_tiles * kCols, buf_size = 4 * buf_rows * buf_cols;
  const int64_t chunks_per_clip = ceil_div(rows, kChunkRows), chunks = s.n * chunks_per_clip;
  const int64_t buffers = omp_get_max_threads();
  T* buf = zeroed_sums<T>(buffers, buf_size);
#pragma omp parallel
  {
    T* sums = buf + omp_get_thread_num() * buf_size;  // the team has at most max_threads = buffers
    // a[i][k][channel], v[i][k][channel]; the last channel block of a reads R values past C
    // (other entries of a), summed into buffer rows past C, never written out.
    std::vector<T> a(4 * kChunkRows * c + R), v(4 * kChunkRows * c);
#pragma omp for schedule(dynamic)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t clip = chunk / chunks_per_clip, m0 = chunk % chunks_per_clip * kChunkRows;
      const int64_t depth = std::min(kChunkRows, rows - m0);
      const T* clip_g = g + clip * s.t * hw * c;
      const T* clip_z = z + clip * s.t * hw * c;
      for (int64_t k = 0; k < depth; ++k) {
        const int64_t q = (m0 + k) / hw, position = (m0 + k) % hw;
        const T* g0 = clip_g + (2 * q * hw + position) * c;
        const T* g1 = 2 * q + 1 < s.t ? g0 + hw * c : nullptr;
        const T* d[4];
        frame_window(clip_z, s, q, position, d);
        for (int64_t c0 = 0; c0 < c; c0 += W) {
          const int64_t n = std::min<int64_t>(W, c - c0), at = k * c + c0, step = kChunkRows * c;
          const V x0 = load_n(g0 + c0, n), x1 = g1 ? load_n(g1 + c0, n) : V{};
          const V ai[4] = {x0, x0 + x1, x0 - x1, -x1};
          V vi[4];
          transform_window(d, c0, n, vi);
          for (int i = 0; i < 4; ++i) {
            store_n(a.data() + i * step + at, ai[i], n);
            store_n(v.data() + i * step + at, vi[i], n);
          }
        }
      }
      for (int i = 0; i < 4; ++i)
        for (int64_t cb = 0; cb < row_blocks; ++cb)
          for (int64_t ct = 0; ct < col_tiles; ++ct) {
            const StridedRows<T> rows_a{a.data() + i * kChunkRows * c + cb * R, 1, c};
            const T* b = v.data() + i * kChunkRows * c + ct * kCols;
            const int64_t b_cols = c - ct * kCols;
            V acc[R][kWideVectors] = {};
            if (b_cols >= kCols)
              micro_tile<T, true>(rows_a, b, c, b_cols, depth, acc);
            else
              micro_tile<T, false>(rows_a, b, c, b_cols, depth, acc);
            for (int r = 0; r < R; ++r)
              for (int u = 0; u < kWideVectors; ++u)
                *reinterpret_cast<V*>(sums + (i * buf_rows + cb * R + r) * buf_cols + ct * kCols + u * W) += acc[r][u];
          }
    }
  }
  add_sums(buf, buffers, buf_size);
#pragma omp parallel for schedule(static)
  for (int64_t co = 0; co < c; ++co)
    for (int64_t ci = 0; ci < c; ++ci) {
      T m[4];
      for (int i = 0; i < 4; ++i) m[i] = buf[(i * buf_rows + co) * buf_cols + ci];
      T* dst = grad_w + (co * c + ci) * 3;
      dst[0] = m[0] + (m[1] + m[2]) * T(0.5);
      dst[1] = (m[1] - m[2]) * T(0.5);
      dst[2] = (m[1] + m[2]) * T(0.5) + m[3];
    }
}

// One pass over grad_y's n * rows rows: under relu (y given) g = grad_y * (y > 0) into masked, as
// torch's threshold_backward (zero where y <= 0); with grad_b, grad_b[c] = sum_m g[m][c]
// (per-thread chunk sums, added in double).
template <typename T> void mask_and_bias_grad(const T* grad_y, const T* y, T* masked, T* grad_b, const Shape& s) {
  const int64_t c = s.c, total = s.n * s.rows(), chunks = ceil_div(total, kChunkRows);
  std::vector<double> sums(c, 0.0);
#pragma omp parallel
  {
    std::vector<double> mine(c, 0.0);
    std::vector<T> chunk(c);
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      std::fill(chunk.begin(), chunk.end(), T(0));
      for (int64_t m = ch * kChunkRows; m < std::min(total, (ch + 1) * kChunkRows); ++m) {
        const T* row = grad_y + m * c;
        if (y) {
          const T* out = y + m * c;
          T* dst = masked + m * c;
#pragma omp simd
          for (int64_t i = 0; i < c; ++i) {
            dst[i] = out[i] <= T(0) ? T(0) : row[i];
            chunk[i] += dst[i];
          }
        } else {
#pragma omp simd
          for (int64_t i = 0; i < c; ++i) chunk[i] += row[i];
        }
      }
      for (int64_t i = 0; i < c; ++i) mine[i] += chunk[i];
    }
#pragma omp critical
    for (int64_t i = 0; i < c; ++i) sums[i] += mine[i];
  }
  if (grad_b)
    for (int64_t i = 0; i < c; ++i) grad_b[i] = static_cast<T>(sums[i]);
}

// Whether the temporal convolutions and the weight gradient run by F(2, 3): kt = 3, from
// kWinogradChannels, while the rows are split over threads (packed weights in L2).
template <typename T> bool winograd_applies(const Shape& s) {
  constexpr int64_t kCols = Vec<T>::kWideCols;
  const int64_t packed_bytes = ceil_div(s.c, kCols) * s.kt * s.c * kCols * static_cast<int64_t>(sizeof(T));
  return s.kt == 3 && s.c >= kWinogradChannels && packed_bytes <= kCachedWeightBytes;
}

// out = act(src + bias + conv_t(src)) (forward taps) or src + conv_t^T(src) (backward taps).
template <typename T>
void temporal_conv(const T* src, const T* w, const T* bias, T* out, const Shape& s, bool relu, bool backward) {
  if (winograd_applies<T>(s))
    winograd_residual_conv(src, pack_winograd_weight(w, s, backward), bias, out, s, relu);
  else
    residual_conv(src, pack_weight(w, s, backward), bias, out, s, relu);
}

Shape checked_shape(const char* op, int64_t n, int64_t c, int64_t t, int64_t hw, int64_t kt, int dtype) {
  check(n >= 0 && c >= 1 && t >= 0 && hw >= 0, std::string(op) + ": sizes must be n, t, hw >= 0 and c >= 1");
  check(kt >= 1 && kt % 2 == 1, std::string(op) + ": kt must be odd and >= 1, got " + std::to_string(kt));
  check(dtype == kFloat32 || dtype == kFloat64,
        std::string(op) + ": the CPU kernel takes float32 or float64 (the caller upcasts half types)");
  return Shape{n, c, t, hw, kt};
}


}  // namespace

void residual_temporal_forward(uintptr_t z, uintptr_t weight, uintptr_t bias, uintptr_t y, int64_t n, int64_t c,
                               int64_t t, int64_t hw, int64_t kt, bool relu, int dtype) {
  const Shape s = checked_shape("residual_temporal_forward", n, c, t, hw, kt, dtype);
  if (n * t * hw == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    temporal_conv(reinterpret_cast<const T*>(z), reinterpret_cast<const T*>(weight), reinterpret_cast<const T*>(bias),
                  reinterpret_cast<T*>(y), s, relu, false);
  });
}

void residual_temporal_backward(uintptr_t grad_y, uintptr_t z, uintptr_t y, uintptr_t weight, uintptr_t grad_z,
                                uintptr_t grad_weight, uintptr_t grad_bias, int64_t n, int64_t c, int64_t t,
                                int64_t hw, int64_t kt, bool relu, int dtype) {
  const Shape s = checked_shape("residual_temporal_backward", n, c, t, hw, kt, dtype);
  if (n * t * hw == 0) return;  // grad_weight and grad_bias arrive zero-filled
  check(!relu || y != 0, "residual_temporal_backward: relu needs the forward output y");
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* g = reinterpret_cast<const T*>(grad_y);
    std::unique_ptr<T[]> masked;
    T* grad_b = reinterpret_cast<T*>(grad_bias);
    if (relu) {
      masked.reset(new T[n * t * hw * c]);
      mask_and_bias_grad(g, reinterpret_cast<const T*>(y), masked.get(), grad_b, s);
      g = masked.get();
    } else if (grad_b) {
      mask_and_bias_grad(g, static_cast<const T*>(nullptr), static_cast<T*>(nullptr), grad_b, s);
    }
    temporal_conv(g, reinterpret_cast<const T*>(weight), static_cast<const T*>(nullptr), reinterpret_cast<T*>(grad_z),
                  s, false, true);
    if (grad_weight) {
      const T* zt = reinterpret_cast<const T*>(z);
      T* gw = reinterpret_cast<T*>(grad_weight);
      if (winograd_applies<T>(s))
        winograd_weight_grad(g, zt, gw, s);
      else
        weight_grad(g, zt, gw, s);
    }
  });
}

}  // namespace webda::cpu
