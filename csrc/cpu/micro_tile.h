// The register-blocked GEMM step shared by the CPU kernels: a micro-tile of kRows rows x
// kVectors vectors of output columns accumulated in registers (GCC vector extensions; the
// width follows the -march the module is built for).
#pragma once

#include <cstdint>

namespace webda::cpu {

// A micro-tile is kRows rows x kVectors vectors of output columns, held in registers; the wide
// one kWideRows x kWideVectors. With AVX-512 both take 24 of the 32 vector registers: 12 x 2, and
// 6 x 4 (64 float columns, fewer rows to broadcast, and twice the weight panel per micro-tile).
// With AVX2 (16 registers) both are 6 x 2.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
constexpr int kRows = 12;
constexpr int kWideRows = 6;
constexpr int kWideVectors = 4;
#else
constexpr int kVectorBytes = 32;
constexpr int kRows = 6;
constexpr int kWideRows = 6;
constexpr int kWideVectors = 2;
#endif
constexpr int kVectors = 2;

// The signed integer of a floating type's size.
template <typename T> struct SameSizeInt;
template <> struct SameSizeInt<float> { using type = int32_t; };
template <> struct SameSizeInt<double> { using type = int64_t; };

template <typename T> struct Vec {
  typedef T type __attribute__((vector_size(kVectorBytes), aligned(sizeof(T)), may_alias));
  // What comparing two vectors gives: lanes of all ones (true) or zero.
  typedef typename SameSizeInt<T>::type mask __attribute__((vector_size(kVectorBytes)));
  static constexpr int kWidth = kVectorBytes / sizeof(T);
  static constexpr int kCols = kWidth * kVectors;  // columns of a micro-tile
  static constexpr int kWideCols = kWidth * kWideVectors;  // columns of a wide micro-tile
};

// Vector load / store of the first n (possibly fewer than a vector's width) elements.
template <typename T> inline typename Vec<T>::type load_n(const T* p, int64_t n) {
  using V = typename Vec<T>::type;
  if (n >= Vec<T>::kWidth) return *reinterpret_cast<const V*>(p);
  V v = {};
  for (int64_t i = 0; i < n; ++i) v[i] = p[i];
  return v;
}

template <typename T> inline void store_n(T* p, typename Vec<T>::type v, int64_t n) {
  using V = typename Vec<T>::type;
  if (n >= Vec<T>::kWidth) {
    *reinterpret_cast<V*>(p) = v;
    return;
  }
  for (int64_t i = 0; i < n; ++i) p[i] = v[i];
}

// Where element k of row r of a micro-tile's left operand is: a[r][k * step] (rows anywhere), or
// a[r * row_step + k * k_step] (rows at one stride: one pointer register for all of them).
template <typename T> struct RowPointers {
  const T* const* a;
  int64_t step;
  T operator()(int r, int64_t k) const { return a[r][k * step]; }
};
template <typename T> struct StridedRows {
  const T* a;
  int64_t row_step, k_step;
  T operator()(int r, int64_t k) const { return a[r * row_step + k * k_step]; }
};

// acc[r][v] += sum_{k < depth} a(r, k) * b[k * b_step + v * width] for a micro-tile of R rows x
// NV vectors, the b row cut to b_cols columns (kFullB: b_cols >= NV * width, plain vector loads).
template <typename T, bool kFullB, int R, int NV, typename Rows>
__attribute__((always_inline)) inline void micro_tile(const Rows& a, const T* b, int64_t b_step, int64_t b_cols,
                                                      int64_t depth, typename Vec<T>::type (&acc)[R][NV]) {
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  for (int64_t k = 0; k < depth; ++k) {
    V bv[NV];
    for (int v = 0; v < NV; ++v) {
      const T* bk = b + k * b_step + v * W;
      bv[v] = kFullB ? *reinterpret_cast<const V*>(bk) : load_n(bk, b_cols - v * W);
    }
    for (int r = 0; r < R; ++r) {
      const T ar = a(r, k);
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * bv[v];
    }
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace webda::cpu
