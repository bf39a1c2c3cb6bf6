// Streaming top-k of query @ bank.T on the GPU: each block computes 16 x 64 similarity tiles
// of its 16 query rows against its bank chunk (WMMA tensor cores for float16/bfloat16, FMA for
// float32; float32 accumulation) and keeps, per row, the K_PAD best entries as packed 64-bit
// keys in a descending list spread over one warp's registers. The (Nq, chunks * K_PAD) keys
// are merged and decoded by the Python side (webda_kernels/topk_similarity.py).
//
// Key of similarity s at bank index j (same format as the Triton kernel): high 32 bits are s's
// bits made order-preserving as a signed integer (NaN made one positive NaN, above +inf; -0.0
// made 0.0), low 32 bits are 0xFFFFFFFF - j, so equal similarities rank by lower index.
// Needs sm_80 or newer (bfloat16 WMMA).
#include <mma.h>

#include <climits>
#include <type_traits>

#include "cuda/cuda_common.cuh"
#include "cuda/ops.h"

namespace webda::cuda {
namespace {

constexpr int kRows = 16;   // query rows per block: one WMMA tile high
constexpr int kCols = 64;   // bank rows per tile: one 16-wide WMMA tile per warp
constexpr int kDepth = 32;  // features per shared-memory stage
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRowsPerWarp = kRows / kWarps;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr long long kEmpty = LLONG_MIN;

__device__ __forceinline__ long long pack_key(float s, long long index) {
  int bits = __float_as_int(s);
  if (s != s) bits = 0x7fc00000;
  if (s == 0.0f) bits = 0;
  const unsigned ordered = static_cast<unsigned>(bits < 0 ? bits ^ 0x7fffffff : bits);
  return static_cast<long long>((static_cast<unsigned long long>(ordered) << 32) |
                                (0xffffffffull - static_cast<unsigned long long>(index)));
}

// A warp's descending list of 32 * R keys: position j * 32 + lane is list[j] of that lane.
// Inserts `key`, which ranks above the last entry, dropping the last entry.
template <int R> __device__ __forceinline__ void insert_key(long long (&list)[R], long long key, int lane) {
  long long prev[R];           // the entry one position earlier
  long long above = LLONG_MAX;  // the entry before position j * 32: lane 31's list[j - 1]
#pragma unroll
  for (int j = 0; j < R; ++j) {
    const long long up = __shfl_up_sync(kFullMask, list[j], 1);
    const long long wrap = __shfl_sync(kFullMask, above, 31);
    prev[j] = lane > 0 ? up : wrap;
    above = list[j];
  }
#pragma unroll
  for (int j = 0; j < R; ++j) list[j] = list[j] > key ? list[j] : (prev[j] > key ? key : prev[j]);
}

template <typename T> struct TileStorage {
  static constexpr bool kTensorCores = !std::is_same_v<T, float>;
  // Rows padded against bank conflicts; WMMA needs 16-byte multiples and 32-byte alignment.
  static constexpr int kPad = kTensorCores ? 8 : 1;
  static constexpr int kScorePad = 4;
  alignas(32) T query[kRows][kDepth + kPad];
  alignas(32) T bank[kCols][kDepth + kPad];
  alignas(32) float scores[kRows][kCols + kScorePad];
};

// scores[r][c] = sum_d query[row0 + r][d] * bank[col0 + c][d], zero outside the valid rows.
template <typename T>
__device__ void similarity_tile(TileStorage<T>& s, const T* __restrict__ query, const T* __restrict__ bank,
                                int64_t n_query, int64_t dim, int64_t row0, int64_t col0, int64_t stop,
                                int64_t sq0, int64_t sq1, int64_t sb0, int64_t sb1) {
  using namespace nvcuda;
  const int warp = threadIdx.x / 32;
  const T zero = from_acc<T>(0.0f);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag;
  float acc[kRows / 2] = {};  // FMA path: column threadIdx.x % 64, rows (threadIdx.x / 64) * 8 + i
  if constexpr (TileStorage<T>::kTensorCores) wmma::fill_fragment(frag, 0.0f);
  for (int64_t d0 = 0; d0 < dim; d0 += kDepth) {
    __syncthreads();  // the previous stage has been consumed
    for (int i = threadIdx.x; i < kRows * kDepth; i += kThreads) {
      const int r = i / kDepth, d = i % kDepth;
      const bool ok = row0 + r < n_query && d0 + d < dim;
      s.query[r][d] = ok ? query[(row0 + r) * sq0 + (d0 + d) * sq1] : zero;
    }
    for (int i = threadIdx.x; i < kCols * kDepth; i += kThreads) {
      const int c = i / kDepth, d = i % kDepth;
      const bool ok = col0 + c < stop && d0 + d < dim;
      s.bank[c][d] = ok ? bank[(col0 + c) * sb0 + (d0 + d) * sb1] : zero;
    }
    __syncthreads();
    if constexpr (TileStorage<T>::kTensorCores) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;  // element (d, c) at bank[c][d]
#pragma unroll
      for (int kk = 0; kk < kDepth; kk += 16) {
        wmma::load_matrix_sync(a, &s.query[0][kk], kDepth + TileStorage<T>::kPad);
        wmma::load_matrix_sync(b, &s.bank[warp * 16][kk], kDepth + TileStorage<T>::kPad);
        wmma::mma_sync(frag, a, b, frag);
      }
    } else {
      const int c = threadIdx.x % kCols, r0 = (threadIdx.x / kCols) * (kRows / 2);
#pragma unroll 8
      for (int d = 0; d < kDepth; ++d) {
        const float bv = s.bank[c][d];
#pragma unroll
        for (int i = 0; i < kRows / 2; ++i) acc[i] = fmaf(s.query[r0 + i][d], bv, acc[i]);
      }
    }
  }
  __syncthreads();  // the previous tile's scores have been read
  if constexpr (TileStorage<T>::kTensorCores) {
    wmma::store_matrix_sync(&s.scores[0][warp * 16], frag, kCols + TileStorage<T>::kScorePad, wmma::mem_row_major);
  } else {
    const int c = threadIdx.x % kCols, r0 = (threadIdx.x / kCols) * (kRows / 2);
#pragma unroll
    for (int i = 0; i < kRows / 2; ++i) s.scores[r0 + i][c] = acc[i];
  }
  __syncthreads();
}

// Grid (row blocks, chunks); block kThreads. out[row][chunk][0 .. 32 * R) = the row's best keys
// over bank rows [chunk * chunk_rows, min(+chunk_rows, n_bank)), descending, kEmpty-padded.
template <typename T, int R>
__global__ void __launch_bounds__(kThreads)
partial_topk_kernel(const T* __restrict__ query, const T* __restrict__ bank, long long* __restrict__ out,
                    int64_t n_query, int64_t n_bank, int64_t dim, int64_t chunk_rows, int64_t sq0, int64_t sq1,
                    int64_t sb0, int64_t sb1) {
  __shared__ TileStorage<T> storage;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t start = static_cast<int64_t>(blockIdx.y) * chunk_rows;
  const int64_t stop = min(start + chunk_rows, n_bank);
  long long list[kRowsPerWarp][R];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
#pragma unroll
    for (int j = 0; j < R; ++j) list[i][j] = kEmpty;
  }
  for (int64_t col0 = start; col0 < stop; col0 += kCols) {
    similarity_tile(storage, query, bank, n_query, dim, row0, col0, stop, sq0, sq1, sb0, sb1);
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int r = warp * kRowsPerWarp + i;
      long long threshold = __shfl_sync(kFullMask, list[i][R - 1], 31);
#pragma unroll
      for (int half = 0; half < kCols / 32; ++half) {
        const int c = half * 32 + lane;
        const long long key = col0 + c < stop ? pack_key(storage.scores[r][c], col0 + c) : kEmpty;
        for (unsigned pending = __ballot_sync(kFullMask, key > threshold); pending != 0; pending &= pending - 1) {
          const long long candidate = __shfl_sync(kFullMask, key, __ffs(pending) - 1);
          if (candidate > threshold) {  // warp-uniform: both are broadcast
            insert_key(list[i], candidate, lane);
            threshold = __shfl_sync(kFullMask, list[i][R - 1], 31);
          }
        }
      }
    }
  }
  const int64_t row_stride = static_cast<int64_t>(gridDim.y) * 32 * R;
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t row = row0 + warp * kRowsPerWarp + i;
    if (row >= n_query) continue;
    long long* dst = out + row * row_stride + static_cast<int64_t>(blockIdx.y) * 32 * R;
#pragma unroll
    for (int j = 0; j < R; ++j) dst[j * 32 + lane] = list[i][j];
  }
}

template <typename T, int R>
void launch(uintptr_t query, uintptr_t bank, uintptr_t out, int64_t n_query, int64_t n_bank, int64_t dim,
            int64_t chunk_rows, int64_t n_chunks, const std::vector<int64_t>& qs, const std::vector<int64_t>& bs,
            cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((n_query + kRows - 1) / kRows), static_cast<unsigned>(n_chunks));
  partial_topk_kernel<T, R><<<grid, kThreads, 0, stream>>>(
      reinterpret_cast<const T*>(query), reinterpret_cast<const T*>(bank), reinterpret_cast<long long*>(out),
      n_query, n_bank, dim, chunk_rows, qs[0], qs[1], bs[0], bs[1]);
}

template <typename T>
void launch_for_k(int64_t k_pad, uintptr_t query, uintptr_t bank, uintptr_t out, int64_t n_query, int64_t n_bank,
                  int64_t dim, int64_t chunk_rows, int64_t n_chunks, const std::vector<int64_t>& qs,
                  const std::vector<int64_t>& bs, cudaStream_t stream) {
  switch (k_pad) {
    case 32: launch<T, 1>(query, bank, out, n_query, n_bank, dim, chunk_rows, n_chunks, qs, bs, stream); break;
    case 64: launch<T, 2>(query, bank, out, n_query, n_bank, dim, chunk_rows, n_chunks, qs, bs, stream); break;
    case 128: launch<T, 4>(query, bank, out, n_query, n_bank, dim, chunk_rows, n_chunks, qs, bs, stream); break;
    case 256: launch<T, 8>(query, bank, out, n_query, n_bank, dim, chunk_rows, n_chunks, qs, bs, stream); break;
    default: throw std::invalid_argument("topk_similarity_partial: k_pad must be 32, 64, 128 or 256");
  }
}

}  // namespace

void topk_similarity_partial(uintptr_t query, uintptr_t bank, uintptr_t out, int dtype, int64_t n_query,
                             int64_t n_bank, int64_t dim, const std::vector<int64_t>& query_strides,
                             const std::vector<int64_t>& bank_strides, int64_t k_pad, int64_t chunk_rows,
                             int64_t n_chunks, int device, uintptr_t stream) {
  check(query_strides.size() == 2 && bank_strides.size() == 2, "topk_similarity_partial: strides must have 2 entries");
  check(n_query >= 1 && n_bank >= 1 && dim >= 0, "topk_similarity_partial: empty query or bank");
  check(chunk_rows >= kCols && chunk_rows % kCols == 0, "topk_similarity_partial: chunk_rows must be a multiple of 64");
  check(n_chunks >= 1 && n_chunks <= 65535 && n_chunks * chunk_rows >= n_bank && (n_chunks - 1) * chunk_rows < n_bank,
        "topk_similarity_partial: n_chunks chunks of chunk_rows must cover the bank, each non-empty, at most 65535");
  check((n_query + kRows - 1) / kRows <= INT_MAX, "topk_similarity_partial: too many query rows");
  const DeviceGuard guard(device);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat16:
      launch_for_k<__half>(k_pad, query, bank, out, n_query, n_bank, dim, chunk_rows, n_chunks, query_strides,
                           bank_strides, s);
      break;
    case kBFloat16:
      launch_for_k<__nv_bfloat16>(k_pad, query, bank, out, n_query, n_bank, dim, chunk_rows, n_chunks, query_strides,
                                  bank_strides, s);
      break;
    case kFloat32:
      launch_for_k<float>(k_pad, query, bank, out, n_query, n_bank, dim, chunk_rows, n_chunks, query_strides,
                          bank_strides, s);
      break;
    default: throw std::invalid_argument("topk_similarity_partial: dtype must be float16, bfloat16 or float32");
  }
  cuda_check(cudaGetLastError(), "topk_similarity_partial launch");
}

}  // namespace webda::cuda
