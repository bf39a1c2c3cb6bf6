// The transforms of a 3x3, stride-1 convolution by Winograd's F(2x2, 3x3) (Lavin & Gray, 2016)
// on the CPU (OpenMP over tiles, vectorised over channels); the caller does the 16 GEMMs.
//
// Frames are channels-last: input [F][H][W][C], output [F][Ho][Wo][Co], Ho = H + 2 pad - 2,
// Wo = W + 2 pad - 2, zero padding. Output tile i = (f, ty, tx) is the 2x2 block at
// (2 ty, 2 tx); it reads the 4x4 input patch d at (2 ty - pad, 2 tx - pad). With
//   V = B^T d B   (input_transform: v[16][tiles][C]),
//   M[p] = V[p] @ U[p]   for the 16 positions p (the caller: a batched GEMM with
//          U = G g G^T, (16, C, Co)),
//   y = A^T M A + bias   (output_transform: m[16][tiles][Co] -> output),
// 16 products per tile and channel pair replace the 36 multiply-adds of a direct convolution.
#include <omp.h>

#include <algorithm>
#include <string>

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

// B^T x B's column pass on four vectors: d0 - d2, d1 + d2, d2 - d1, d1 - d3.
template <typename V> inline void bt(const V (&d)[4], V (&out)[4]) {
  out[0] = d[0] - d[2];
  out[1] = d[1] + d[2];
  out[2] = d[2] - d[1];
  out[3] = d[1] - d[3];
}

// Calls f(tile, frame, ty, tx) for every tile, threads splitting the rows of tiles (no
// divisions per tile).
template <typename F> void for_each_tile(const Tiles& g, F&& f) {
  const int64_t tile_rows = g.frames * g.rows();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < tile_rows; ++row) {
    const int64_t frame = row / g.rows(), ty = row % g.rows();
    for (int64_t tx = 0; tx < g.cols(); ++tx) f(row * g.cols() + tx, frame, ty, tx);
  }
}

template <typename T> void input_transform(const T* in, int64_t c, const Tiles& g, T* v) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  const int64_t tiles = g.count();
  for_each_tile(g, [&](int64_t tile, int64_t frame, int64_t ty, int64_t tx) {
    const int64_t y0 = 2 * ty - g.pad, x0 = 2 * tx - g.pad;
    const bool interior = y0 >= 0 && y0 + 4 <= g.h && x0 >= 0 && x0 + 4 <= g.w;
    const T* patch = in + ((frame * g.h + y0) * g.w + x0) * c;  // may point outside: read only in range
    for (int64_t c0 = 0; c0 < c; c0 += W) {
      const int64_t n = std::min<int64_t>(W, c - c0);
      V rows[4][4];  // (B^T d)[i][j]: the row pass, one input column j at a time
      for (int j = 0; j < 4; ++j) {
        V col[4];
        for (int i = 0; i < 4; ++i) {
          const T* src = patch + (i * g.w + j) * c + c0;
          if (interior && n == W)
            col[i] = *reinterpret_cast<const V*>(src);
          else
            col[i] = (y0 + i >= 0 && y0 + i < g.h && x0 + j >= 0 && x0 + j < g.w) ? load_n(src, n) : V{};
        }
        V out[4];
        bt(col, out);
        for (int i = 0; i < 4; ++i) rows[i][j] = out[i];
      }
      for (int i = 0; i < 4; ++i) {  // the column pass: (B^T d) B
        V out[4];
        bt(rows[i], out);
        for (int j = 0; j < 4; ++j) store_n(v + ((4 * i + j) * tiles + tile) * c + c0, out[j], n);
      }
    }
  });
}

template <typename T> void output_transform(const T* m, const T* bias, int64_t c, const Tiles& g, T* out) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  const int64_t tiles = g.count(), ho = g.out_h(), wo = g.out_w();
  for_each_tile(g, [&](int64_t tile, int64_t frame, int64_t ty, int64_t tx) {
    for (int64_t c0 = 0; c0 < c; c0 += W) {
      const int64_t n = std::min<int64_t>(W, c - c0);
      V t[2][4];  // A^T M: rows m0 + m1 + m2 and m1 - m2 - m3, per column j
      for (int j = 0; j < 4; ++j) {
        V s[4];
        for (int i = 0; i < 4; ++i) s[i] = load_n(m + ((4 * i + j) * tiles + tile) * c + c0, n);
        t[0][j] = s[0] + s[1] + s[2];
        t[1][j] = s[1] - s[2] - s[3];
      }
      const V b = bias ? load_n(bias + c0, n) : V{};
      for (int i = 0; i < 2; ++i) {
        const V y[2] = {t[i][0] + t[i][1] + t[i][2] + b, t[i][1] - t[i][2] - t[i][3] + b};
        for (int j = 0; j < 2; ++j) {
          const int64_t oy = 2 * ty + i, ox = 2 * tx + j;
          if (oy < ho && ox < wo) store_n(out + ((frame * ho + oy) * wo + ox) * c + c0, y[j], n);
        }
      }
    }
  });
}

Tiles checked_tiles(const char* op, int64_t frames, int64_t h, int64_t w, int64_t c, int64_t pad, int dtype) {
  const Tiles g{frames, h, w, pad};
  check(frames >= 0 && c >= 1 && pad >= 0 && pad <= 2 && g.out_h() >= 1 && g.out_w() >= 1,
        std::string(op) + ": need frames >= 0, c >= 1, 0 <= pad <= 2 and a non-empty output");
  check(dtype == kFloat32 || dtype == kFloat64, std::string(op) + ": float32 or float64 only");
  return g;
}

}  // namespace

void winograd_input_transform(uintptr_t input, uintptr_t v, int64_t frames, int64_t h, int64_t w, int64_t c,
                              int64_t pad, int dtype) {
  const Tiles g = checked_tiles("winograd_input_transform", frames, h, w, c, pad, dtype);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    input_transform(reinterpret_cast<const T*>(input), c, g, reinterpret_cast<T*>(v));
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

}  // namespace webda::cpu
