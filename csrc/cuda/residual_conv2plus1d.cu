// Fused temporal part of the (2+1)D block on the GPU (webda_kernels.residual_conv2plus1d).
//
// z, y, grad_y, grad_z are [N][T][H][W][C] contiguous (channels_last_3d): rows
// r = ((n * T + t) * H + h) * W + w of C channels; a shift of d frames is r + d * HW. With
// weight (C, C, kt), p = kt / 2 and g = grad_y * (y > 0) under relu (else grad_y):
//   forward    y[r, c]      = act(z[r, c] + bias[c] + sum_{j, c'} z[r + (j - p) HW, c'] w[c, c', j])
//   grad_z     grad_z[r, c'] = g[r, c'] + sum_{j, c} g[r - (j - p) HW, c] w[c, c', j]
//   grad_w     grad_w[c, c', j] += sum_r g[r, c] z[r + (j - p) HW, c']      grad_b[c] += sum_r g[r, c]
// Shifted rows outside frames [0, T) read as zero. Both convolutions are one implicit-GEMM
// kernel (64 x 64 output tiles, K = kt * C in chunks of 32) with a fused epilogue; the weight
// gradient is a second GEMM kernel whose row reduction is split over blocks and summed with
// atomics into a float32 (float64) buffer. Float16/bfloat16 multiply on tensor cores (WMMA,
// float accumulators, sm_80+); float32/float64 use FMA in their own precision.
#include <mma.h>

#include <algorithm>

#include "cuda/cuda_common.cuh"
#include "cuda/ops.h"

namespace webda::cuda {
namespace {

constexpr int kBM = 64;   // GEMM rows per block
constexpr int kBN = 64;   // GEMM columns per block
constexpr int kBK = 32;   // reduction chunk
constexpr int kPad = 8;   // shared-memory row padding; keeps WMMA pointers 32-byte aligned
constexpr int kLdA = kBM + kPad;
constexpr int kLdB = kBN + kPad;
constexpr int kThreads = 256;

template <typename T> using acc_t = typename Acc<T>::type;

// Operand tiles a[k][m], b[k][n] during the main loop, then the accumulator tile c[m][n].
template <typename T> constexpr int smem_bytes() {
  return std::max<int>(kBK * (kLdA + kLdB) * sizeof(T), kBM * kLdB * sizeof(acc_t<T>));
}

struct Shape {
  int64_t m;   // rows: N * T * H * W
  int64_t c;   // channels
  int64_t t;   // frames
  int64_t hw;  // H * W
  int kt;      // temporal kernel size (odd)
};

// tile[i][j] of a ROWS x CHANS block of a [m][c] activation: rows row0.., channels ch0.., each
// row read from `shift` frames away. Zero where the row is >= row_end, the channel >= c or the
// shifted frame is outside [0, t); where mask != nullptr, also zero where mask <= 0 (relu).
// CH_MAJOR stores dst[ch * ld + row], else dst[row * ld + ch]. Threads walk channels, so the
// global reads are coalesced.
template <typename T, int ROWS, int CHANS, bool CH_MAJOR>
__device__ void load_activation_tile(T* dst, int ld, const T* __restrict__ src, const T* __restrict__ mask,
                                     int64_t row0, int64_t row_end, int64_t ch0, int shift, const Shape& s) {
  for (int e = threadIdx.x; e < ROWS * CHANS; e += kThreads) {
    const int r = e / CHANS, ch = e % CHANS;
    const int64_t row = row0 + r, chan = ch0 + ch;
    const int64_t frame = (row / s.hw) % s.t + shift;
    T v = from_acc<T>(acc_t<T>(0));
    if (row < row_end && chan < s.c && frame >= 0 && frame < s.t) {
      const int64_t at = (row + shift * s.hw) * s.c + chan;
      if (mask == nullptr || to_acc(mask[at]) > acc_t<T>(0)) v = src[at];
    }
    dst[CH_MAJOR ? ch * ld + r : r * ld + ch] = v;
  }
}

// c[kBM][kBN] += a^T b over one kBK chunk (a[k][m], b[k][n] in shared memory), FMA in the
// accumulator precision: each thread owns a 4 x 4 grid of outputs 16 rows/columns apart.
template <typename T> struct FmaTile {
  acc_t<T> acc[4][4] = {};

  __device__ void multiply(const T* a, const T* b) {
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll 4
    for (int k = 0; k < kBK; ++k) {
      acc_t<T> av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        av[i] = to_acc(a[k * kLdA + tm + 16 * i]);
        bv[i] = to_acc(b[k * kLdB + tn + 16 * i]);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
  }

  __device__ void store(acc_t<T>* c) const {
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) c[(tm + 16 * i) * kLdB + tn + 16 * j] = acc[i][j];
  }
};

// The same on tensor cores for 16-bit T: warp w owns the 16 x 32 strip at rows 16 (w / 2),
// columns 32 (w % 2), as two 16 x 16 x 16 float accumulators.
template <typename T> struct WmmaTile {
  using Frag = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;
  Frag acc[2];

  __device__ WmmaTile() {
    nvcuda::wmma::fill_fragment(acc[0], 0.0f);
    nvcuda::wmma::fill_fragment(acc[1], 0.0f);
  }

  __device__ void multiply(const T* a, const T* b) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    const int warp = threadIdx.x / 32, fm = warp / 2, fn = (warp % 2) * 2;
    for (int k = 0; k < kBK; k += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major> af;
      wmma::load_matrix_sync(af, a + k * kLdA + fm * 16, kLdA);
      for (int f = 0; f < 2; ++f) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bf;
        wmma::load_matrix_sync(bf, b + k * kLdB + (fn + f) * 16, kLdB);
        wmma::mma_sync(acc[f], af, bf, acc[f]);
      }
    }
#else
    __trap();  // the host refuses 16-bit inputs below sm_80
#endif
  }

  __device__ void store(float* c) const {
    const int warp = threadIdx.x / 32, fm = warp / 2, fn = (warp % 2) * 2;
    for (int f = 0; f < 2; ++f)
      nvcuda::wmma::store_matrix_sync(c + fm * 16 * kLdB + (fn + f) * 16, acc[f], kLdB, nvcuda::wmma::mem_row_major);
  }
};

template <typename T> struct TileOf { using type = FmaTile<T>; };
template <> struct TileOf<__half> { using type = WmmaTile<__half>; };
template <> struct TileOf<__nv_bfloat16> { using type = WmmaTile<__nv_bfloat16>; };

// Multiplies the operand tiles every thread has just written, then frees them for the next chunk.
template <typename Tile, typename T> __device__ void multiply_loaded(Tile& tile, const T* a, const T* b) {
  __syncthreads();
  tile.multiply(a, b);
  __syncthreads();
}

// The accumulators as c[kBM][kLdB] in shared memory (over the operand tiles), for the epilogue.
template <typename T, typename Tile> __device__ acc_t<T>* stage_accumulators(const Tile& tile, unsigned char* smem) {
  acc_t<T>* c = reinterpret_cast<acc_t<T>*>(smem);
  tile.store(c);
  __syncthreads();
  return c;
}

// out = a + sum_j shift_j(a) B_j (+ bias), relu'd if relu_out, where a = src masked by
// mask > 0 (mask may be null), shift_j = j - p (p - j if flip) frames, and B_j[k][n] =
// w[k * w_stride_k + n * w_stride_n + j]. grad_bias (may be null) += column sums of a.
template <typename T>
__global__ void __launch_bounds__(kThreads)
temporal_conv_kernel(const T* __restrict__ src, const T* __restrict__ mask, const T* __restrict__ w,
                     const T* __restrict__ bias, T* __restrict__ out, acc_t<T>* __restrict__ grad_bias, Shape s,
                     int64_t w_stride_k, int64_t w_stride_n, bool flip, bool relu_out) {
  __shared__ __align__(128) unsigned char smem[smem_bytes<T>()];
  T* a = reinterpret_cast<T*>(smem);
  T* b = a + kBK * kLdA;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int pad = s.kt / 2;
  const bool k_fastest = w_stride_k < w_stride_n;

  typename TileOf<T>::type tile;
  for (int j = 0; j < s.kt; ++j) {
    const int shift = flip ? pad - j : j - pad;
    for (int64_t k0 = 0; k0 < s.c; k0 += kBK) {
      load_activation_tile<T, kBM, kBK, true>(a, kLdA, src, mask, row0, s.m, k0, shift, s);
      // Consecutive threads walk the weight's shorter stride (kt), so their reads share sectors.
      for (int e = threadIdx.x; e < kBK * kBN; e += kThreads) {
        const int kk = k_fastest ? e % kBK : e / kBN, nn = k_fastest ? e / kBK : e % kBN;
        const int64_t k = k0 + kk, n = col0 + nn;
        b[kk * kLdB + nn] = (k < s.c && n < s.c) ? w[k * w_stride_k + n * w_stride_n + j] : from_acc<T>(acc_t<T>(0));
      }
      multiply_loaded(tile, a, b);
    }
  }
  const acc_t<T>* c = stage_accumulators<T>(tile, smem);

  // Epilogue: thread -> one column, every (kThreads / kBN)-th row of the tile.
  const int n = threadIdx.x % kBN;
  const int64_t col = col0 + n;
  if (col >= s.c) return;
  acc_t<T> column_sum = 0;
  for (int r = threadIdx.x / kBN; r < kBM && row0 + r < s.m; r += kThreads / kBN) {
    const int64_t at = (row0 + r) * s.c + col;
    acc_t<T> residual = to_acc(src[at]);
    if (mask != nullptr && !(to_acc(mask[at]) > acc_t<T>(0))) residual = 0;
    acc_t<T> v = c[r * kLdB + n] + residual;
    if (bias != nullptr) v += to_acc(bias[col]);
    if (relu_out) v = v > acc_t<T>(0) ? v : acc_t<T>(0);
    out[at] = from_acc<T>(v);
    column_sum += residual;
  }
  if (grad_bias != nullptr) atomicAdd(grad_bias + col, column_sum);
}

// grad_w[c, c', j] += sum over rows [row_begin, row_end) of this block's split of
// g[r, c] z[r + (j - p) HW, c'], g = grad_y masked by y > 0 (y may be null).
// Grid: (row splits, C tiles of c, C tiles of c' times kt).
template <typename T>
__global__ void __launch_bounds__(kThreads)
temporal_weight_grad_kernel(const T* __restrict__ grad_y, const T* __restrict__ y, const T* __restrict__ z,
                            acc_t<T>* __restrict__ grad_w, Shape s, int64_t rows_per_split) {
  __shared__ __align__(128) unsigned char smem[smem_bytes<T>()];
  T* a = reinterpret_cast<T*>(smem);
  T* b = a + kBK * kLdA;
  const int64_t row_begin = static_cast<int64_t>(blockIdx.x) * rows_per_split;
  const int64_t row_end = std::min(row_begin + rows_per_split, s.m);
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kBM;
  const int64_t cp0 = static_cast<int64_t>(blockIdx.z / s.kt) * kBN;
  const int j = blockIdx.z % s.kt;

  typename TileOf<T>::type tile;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kBK) {
    load_activation_tile<T, kBK, kBM, false>(a, kLdA, grad_y, y, r0, row_end, c0, 0, s);
    load_activation_tile<T, kBK, kBN, false>(b, kLdB, z, nullptr, r0, row_end, cp0, j - s.kt / 2, s);
    multiply_loaded(tile, a, b);
  }
  const acc_t<T>* c = stage_accumulators<T>(tile, smem);
  for (int e = threadIdx.x; e < kBM * kBN; e += kThreads) {
    const int64_t ch = c0 + e / kBN, chp = cp0 + e % kBN;
    if (ch < s.c && chp < s.c) atomicAdd(grad_w + (ch * s.c + chp) * s.kt + j, c[(e / kBN) * kLdB + e % kBN]);
  }
}

Shape make_shape(int64_t n, int64_t c, int64_t t, int64_t hw, int64_t kt) {
  check(n >= 0 && c >= 1 && t >= 1 && hw >= 0, "residual_temporal: need n >= 0, c >= 1, t >= 1, hw >= 0");
  check(kt >= 1 && kt % 2 == 1 && kt <= 65535, "residual_temporal: kt must be odd, 1..65535");
  check((c + kBN - 1) / kBN * kt <= 65535, "residual_temporal: (c / 64) * kt exceeds the grid limit");
  check(n * t * hw / kBM < (int64_t{1} << 31), "residual_temporal: too many rows for one launch");
  return Shape{n * t * hw, c, t, hw, static_cast<int>(kt)};
}

// Tensor cores for 16-bit types need sm_80 (bfloat16 WMMA); FMA types run anywhere.
void check_arch(int dtype, int device) {
  if (dtype != kFloat16 && dtype != kBFloat16) return;
  int major = 0;
  cuda_check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  if (major < 8) throw std::runtime_error("residual_temporal: float16/bfloat16 need a GPU of compute capability 8.0+");
}

template <typename T>
void launch_temporal_conv(const void* src, const void* mask, const void* w, const void* bias, void* out,
                          void* grad_bias, const Shape& s, bool flip, bool relu_out, cudaStream_t stream) {
  if (s.m == 0) return;
  // Forward: B[k = c'][n = c] = w[c, c', j]; grad_z: B[k = c][n = c'] = w[c, c', j].
  const int64_t along_c = s.c * s.kt, along_cp = s.kt;
  const dim3 grid(static_cast<unsigned>((s.m + kBM - 1) / kBM), static_cast<unsigned>((s.c + kBN - 1) / kBN));
  temporal_conv_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(src), static_cast<const T*>(mask), static_cast<const T*>(w),
      static_cast<const T*>(bias), static_cast<T*>(out), static_cast<acc_t<T>*>(grad_bias), s,
      flip ? along_c : along_cp, flip ? along_cp : along_c, flip, relu_out);
  cuda_check(cudaGetLastError(), "residual_temporal temporal_conv_kernel launch");
}

template <typename T>
void launch_weight_grad(const void* grad_y, const void* y, const void* z, void* grad_w, const Shape& s,
                        cudaStream_t stream) {
  if (s.m == 0) return;
  const int64_t c_tiles = (s.c + kBM - 1) / kBM;
  const int64_t tiles = c_tiles * c_tiles * s.kt;
  // About 1024 blocks in all (several waves on any GPU), each a whole number of kBK-row chunks.
  const int64_t chunks = (s.m + kBK - 1) / kBK;
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(chunks, (1024 + tiles - 1) / tiles));
  const int64_t rows_per_split = (chunks + splits - 1) / splits * kBK;
  const dim3 grid(static_cast<unsigned>((s.m + rows_per_split - 1) / rows_per_split), static_cast<unsigned>(c_tiles),
                  static_cast<unsigned>(c_tiles * s.kt));
  temporal_weight_grad_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(grad_y), static_cast<const T*>(y), static_cast<const T*>(z),
      static_cast<acc_t<T>*>(grad_w), s, rows_per_split);
  cuda_check(cudaGetLastError(), "residual_temporal temporal_weight_grad_kernel launch");
}

const void* ptr(uintptr_t p) { return reinterpret_cast<const void*>(p); }

}  // namespace

void residual_temporal_forward(uintptr_t z, uintptr_t weight, uintptr_t bias, uintptr_t y, int64_t n, int64_t c,
                               int64_t t, int64_t hw, int64_t kt, bool relu, int dtype, int device, uintptr_t stream) {
  const Shape s = make_shape(n, c, t, hw, kt);
  const DeviceGuard guard(device);
  check_arch(dtype, device);
  dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    launch_temporal_conv<T>(ptr(z), nullptr, ptr(weight), ptr(bias), reinterpret_cast<void*>(y), nullptr, s,
                            /*flip=*/false, relu, reinterpret_cast<cudaStream_t>(stream));
  });
}

void residual_temporal_backward(uintptr_t grad_y, uintptr_t z, uintptr_t y, uintptr_t weight, uintptr_t grad_z,
                                uintptr_t grad_weight, uintptr_t grad_bias, int64_t n, int64_t c, int64_t t,
                                int64_t hw, int64_t kt, bool relu, int dtype, int device, uintptr_t stream) {
  const Shape s = make_shape(n, c, t, hw, kt);
  const DeviceGuard guard(device);
  check_arch(dtype, device);
  const void* mask = relu ? ptr(y) : nullptr;
  const auto cu_stream = reinterpret_cast<cudaStream_t>(stream);
  dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    launch_temporal_conv<T>(ptr(grad_y), mask, ptr(weight), nullptr, reinterpret_cast<void*>(grad_z),
                            reinterpret_cast<void*>(grad_bias), s, /*flip=*/true, /*relu_out=*/false, cu_stream);
    if (grad_weight != 0)
      launch_weight_grad<T>(ptr(grad_y), mask, ptr(z), reinterpret_cast<void*>(grad_weight), s, cu_stream);
  });
}

}  // namespace webda::cuda
