// A 3x3, stride-1 convolution by Winograd's F(2x2, 3x3) (Lavin & Gray, 2016) on the CPU (OpenMP,
// vectorised over channels).
//
// Frames are channels-last: input [F][H][W][C], output [F][Ho][Wo][Co], Ho = H + 2 pad - 2,
// Wo = W + 2 pad - 2, zero padding. Output tile i = (f, ty, tx) is the 2x2 block at
// (2 ty, 2 tx); it reads the 4x4 input patch d at (2 ty - pad, 2 tx - pad). With
//   V = B^T d B   (transform_tile),
//   M[p] = V[p] @ U[p]   for the 16 positions p, U = G g G^T (16, C, Co),
//   y = A^T M A + bias   (output_tile),
// 16 products per tile and channel pair replace the 36 multiply-adds of a direct convolution.
// fused_conv does all three on blocks of tiles held in cache (its GEMMs on the micro-tiles of
// micro_tile.h); for wide convolutions the caller runs the 16 GEMMs as one batched GEMM between
// input_transform (v[16][tiles][C]) and output_transform (m[16][tiles][Co] -> output).
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common.h"
#include "cpu/micro_tile.h"
#include "cpu/ops.h"

namespace webda::cpu {
namespace {

struct Tiles {
  int64_t frames, h, w, pad;
  int64_t out_h() const { return h + 2 * pad - 2; }
  int64_t out_w() const { return w + 2 * pad - 2; }
  int64_t rows() const { return ceil_div(out_h(), 2); }
  int64_t cols() const { return ceil_div(out_w(), 2); }
  int64_t count() const { return frames * rows() * cols(); }
};

// V = B^T d B of a 4x4 patch d (vectors of channels) into out[4 * i + j].
template <typename V> __attribute__((always_inline)) inline void btdb(const V (&d)[4][4], V (&out)[16]) {
  V t[4][4];  // B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3
  for (int j = 0; j < 4; ++j) {
    t[0][j] = d[0][j] - d[2][j];
    t[1][j] = d[1][j] + d[2][j];
    t[2][j] = d[2][j] - d[1][j];
    t[3][j] = d[1][j] - d[3][j];
  }
  for (int i = 0; i < 4; ++i) {  // (B^T d) B: the same on the columns
    out[4 * i + 0] = t[i][0] - t[i][2];
    out[4 * i + 1] = t[i][1] + t[i][2];
    out[4 * i + 2] = t[i][2] - t[i][1];
    out[4 * i + 3] = t[i][1] - t[i][3];
  }
}

// V = B^T d B of the 4x4 input patch of `tile` into v[p * stride + channel] (p < 16).
template <typename T> void transform_tile(const T* in, int64_t c, const Tiles& g, int64_t tile, T* v, int64_t stride) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  const int64_t per_frame = g.rows() * g.cols(), frame = tile / per_frame;
  const int64_t ty = tile % per_frame / g.cols(), tx = tile % g.cols();
  const int64_t y0 = 2 * ty - g.pad, x0 = 2 * tx - g.pad;
  const T* patch = in + ((frame * g.h + y0) * g.w + x0) * c;  // may point outside: read only in range
  bool inside[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) inside[i][j] = y0 + i >= 0 && y0 + i < g.h && x0 + j >= 0 && x0 + j < g.w;
  const bool interior = inside[0][0] && inside[3][3];
  int64_t c0 = 0;
  for (; c0 + W <= c; c0 += W) {  // whole vectors, in registers throughout
    V d[4][4], out[16];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const T* src = patch + (i * g.w + j) * c + c0;
        d[i][j] = interior || inside[i][j] ? *reinterpret_cast<const V*>(src) : V{};
      }
    btdb(d, out);
    for (int p = 0; p < 16; ++p) *reinterpret_cast<V*>(v + p * stride + c0) = out[p];
  }
  if (c0 < c) {  // the last channels
    const int64_t n = c - c0;
    V d[4][4], out[16];
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) d[i][j] = inside[i][j] ? load_n(patch + (i * g.w + j) * c + c0, n) : V{};
    btdb(d, out);
    for (int p = 0; p < 16; ++p) store_n(v + p * stride + c0, out[p], n);
  }
}

// y = A^T M A + b of 16 vectors m[4 * i + j] into y[2 * i + j] (i, j < 2).
template <typename V> __attribute__((always_inline)) inline void atma(const V (&m)[16], V b, V (&y)[4]) {
  V t[2][4];  // A^T M: rows m0 + m1 + m2 and m1 - m2 - m3
  for (int j = 0; j < 4; ++j) {
    t[0][j] = m[j] + m[4 + j] + m[8 + j];
    t[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
  }
  for (int i = 0; i < 2; ++i) {
    y[2 * i] = t[i][0] + t[i][1] + t[i][2] + b;
    y[2 * i + 1] = t[i][1] - t[i][2] - t[i][3] + b;
  }
}

// y = A^T M A + bias of one tile's `cols` (<= kCols) output channels from m[p * stride + col],
// stored at out (the tile's channel offset applied) where inside the output.
template <typename T>
void output_tile(const T* m, int64_t stride, const T* bias, T* out, int64_t co, int64_t cols, const Tiles& g, int64_t tile) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  const int64_t per_frame = g.rows() * g.cols(), frame = tile / per_frame;
  const int64_t ty = tile % per_frame / g.cols(), tx = tile % g.cols();
  const int64_t oy = 2 * ty, ox = 2 * tx, ho = g.out_h(), wo = g.out_w();
  T* dst = out + ((frame * ho + oy) * wo + ox) * co;
  const bool whole = oy + 2 <= ho && ox + 2 <= wo;  // all four outputs inside
  for (int64_t c0 = 0; c0 < cols; c0 += W) {
    const int64_t n = std::min<int64_t>(W, cols - c0);
    V mv[16], y[4];
    for (int p = 0; p < 16; ++p) mv[p] = n == W ? *reinterpret_cast<const V*>(m + p * stride + c0) : load_n(m + p * stride + c0, n);
    atma(mv, bias ? load_n(bias + c0, n) : V{}, y);
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        T* at = dst + (i * wo + j) * co + c0;
        if (whole && n == W)
          *reinterpret_cast<V*>(at) = y[2 * i + j];
        else if (oy + i < ho && ox + j < wo)
          store_n(at, y[2 * i + j], n);
      }
  }
}

// A thread's block of tiles keeps its V in at most this many bytes (L2) and has at most
// kMaxBlockTiles tiles (so that small C still leaves blocks for every thread).
constexpr int64_t kBlockBytes = 1 << 20;
constexpr int64_t kMaxBlockTiles = 8 * kRows;

// The whole convolution: threads take blocks of tiles (and, when there are few blocks, groups of
// column tiles); a block's V stays in L2 while the 16 products of every micro-tile of kRows tiles
// x kCols output channels are summed in registers and parked in an L1 buffer for the output
// transform. packed[ct][p][k][col] = U[p][k][ct * kCols + col], zero past co.
template <typename T>
void fused_conv(const T* in, const T* packed, const T* bias, T* out, int64_t c, int64_t co, const Tiles& g) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  constexpr int64_t kCols = Vec<T>::kCols;
  const int64_t tiles = g.count(), col_tiles = ceil_div(co, kCols);
  if (tiles == 0) return;
  const int64_t fit = kBlockBytes / (16 * c * static_cast<int64_t>(sizeof(T))) / kRows * kRows;
  // As many blocks as fit, rounded up to a multiple of the threads, then evened out.
  const int64_t threads = omp_get_max_threads();
  const int64_t even = ceil_div(ceil_div(tiles, std::clamp<int64_t>(fit, kRows, kMaxBlockTiles)), threads) * threads;
  const int64_t block = ceil_div(ceil_div(tiles, even), kRows) * kRows, blocks = ceil_div(tiles, block);
  const int64_t groups = std::min(col_tiles, ceil_div(2 * threads, blocks));
  const int64_t group_size = ceil_div(col_tiles, groups);
#pragma omp parallel
  {
    std::vector<T> v(16 * (block * c + W));  // V[p] one cache line off a multiple of 4 KiB apart
    alignas(64) T m[16 * kRows * kCols];
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t group = 0; group < groups; ++group) {
        const int64_t t0 = b * block, count = std::min(block, tiles - t0);
        const int64_t pstride = count * c + W;
        for (int64_t r = 0; r < count; ++r) transform_tile(in, c, g, t0 + r, v.data() + r * c, pstride);
        for (int64_t ct = group * group_size; ct < std::min(col_tiles, (group + 1) * group_size); ++ct) {
          const int64_t c0 = ct * kCols;
          for (int64_t r0 = 0; r0 < count; r0 += kRows) {
            const int64_t valid = std::min<int64_t>(kRows, count - r0);
            for (int p = 0; p < 16; ++p) {
              // Rows past count (in the last block) read other entries of v and are never stored.
              V acc[kRows][kVectors] = {};
              micro_tile<T, true>(StridedRows<T>{v.data() + p * pstride + r0 * c, c, 1},
                                  packed + (ct * 16 + p) * c * kCols, kCols, kCols, c, acc);
              for (int r = 0; r < kRows; ++r)
                for (int u = 0; u < kVectors; ++u) *reinterpret_cast<V*>(m + (p * kRows + r) * kCols + u * W) = acc[r][u];
            }
            for (int r = 0; r < valid; ++r)
              output_tile(m + r * kCols, kRows * kCols, bias ? bias + c0 : nullptr, out + c0, co,
                          std::min(kCols, co - c0), g, t0 + r0 + r);
          }
        }
      }
  }
}

// The transforms around the caller's batched GEMM (threads split the tiles): input -> v[p * stride +
// tile * c + channel], m[p][tile][co] -> output.
template <typename T> void input_transform(const T* in, int64_t c, const Tiles& g, T* v, int64_t stride) {
#pragma omp parallel for schedule(static)
  for (int64_t tile = 0; tile < g.count(); ++tile) transform_tile(in, c, g, tile, v + tile * c, stride);
}

template <typename T> void output_transform(const T* m, const T* bias, int64_t co, const Tiles& g, T* out) {
  const int64_t tiles = g.count();
#pragma omp parallel for schedule(static)
  for (int64_t tile = 0; tile < tiles; ++tile) output_tile(m + tile * co, tiles * co, bias, out, co, co, g, tile);
}

Tiles checked_tiles(const char* op, int64_t frames, int64_t h, int64_t w, int64_t c, int64_t pad, int dtype) {
  const Tiles g{frames, h, w, pad};
  check(frames >= 0 && c >= 1 && pad >= 0 && pad <= 2 && g.out_h() >= 1 && g.out_w() >= 1,
        std::string(op) + ": need frames >= 0, c >= 1, 0 <= pad <= 2 and a non-empty output");
  check(dtype == kFloat32 || dtype == kFloat64, std::string(op) + ": float32 or float64 only");
  return g;
}

}  // namespace

void winograd_input_transform(uintptr_t input, uintptr_t v, int64_t v_stride, int64_t frames, int64_t h, int64_t w,
                              int64_t c, int64_t pad, int dtype) {
  const Tiles g = checked_tiles("winograd_input_transform", frames, h, w, c, pad, dtype);
  check(v_stride >= g.count() * c, "winograd_input_transform: v_stride must be >= tiles * c");
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    input_transform(reinterpret_cast<const T*>(input), c, g, reinterpret_cast<T*>(v), v_stride);
  });
}

void winograd_output_transform(uintptr_t m, uintptr_t bias, uintptr_t out, int64_t frames, int64_t h, int64_t w,
                               int64_t c, int64_t pad, int dtype) {
  const Tiles g = checked_tiles("winograd_output_transform", frames, h, w, c, pad, dtype);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    output_transform(reinterpret_cast<const T*>(m), reinterpret_cast<const T*>(bias), c, g, reinterpret_cast<T*>(out));
  });
}

int64_t winograd_packed_numel(int64_t c, int64_t co, int dtype) {
  check(dtype == kFloat32 || dtype == kFloat64, "winograd_packed_numel: float32 or float64 only");
  const int64_t cols = dtype == kFloat32 ? Vec<float>::kCols : Vec<double>::kCols;
  return ceil_div(co, cols) * 16 * c * cols;
}

void winograd_pack_weight(uintptr_t u, uintptr_t packed, int64_t c, int64_t co, int dtype) {
  check(dtype == kFloat32 || dtype == kFloat64, "winograd_pack_weight: float32 or float64 only");
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    constexpr int64_t kCols = Vec<T>::kCols;
    const T* src = reinterpret_cast<const T*>(u);
    T* dst = reinterpret_cast<T*>(packed);
    for (int64_t ct = 0; ct < ceil_div(co, kCols); ++ct)
      for (int64_t p = 0; p < 16; ++p)
        for (int64_t k = 0; k < c; ++k)
          for (int64_t col = 0; col < kCols; ++col) {
            const int64_t out = ct * kCols + col;
            dst[((ct * 16 + p) * c + k) * kCols + col] = out < co ? src[(p * c + k) * co + out] : T(0);
          }
  });
}

void winograd_conv3x3(uintptr_t input, uintptr_t packed, uintptr_t bias, uintptr_t out, int64_t frames, int64_t h,
                      int64_t w, int64_t c, int64_t co, int64_t pad, int dtype) {
  const Tiles g = checked_tiles("winograd_conv3x3", frames, h, w, c, pad, dtype);
  check(co >= 1, "winograd_conv3x3: co must be >= 1");
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    fused_conv(reinterpret_cast<const T*>(input), reinterpret_cast<const T*>(packed), reinterpret_cast<const T*>(bias),
               reinterpret_cast<T*>(out), c, co, g);
  });
}

}  // namespace webda::cpu
