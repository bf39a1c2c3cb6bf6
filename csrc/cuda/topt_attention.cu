// Top-T attention on the GPU for a batch that fits one thread block (Ns, Nt <= kMaxRows):
// similarities, top-T selection, sums and the softmax over the batch in one launch.
#include <cmath>
#include <cstdint>

#include "cuda/cuda_common.cuh"
#include "cuda/ops.h"

namespace webda::cuda {
namespace {

constexpr int kMaxRows = 64;  // webda_kernels/topt_attention.py FUSED_MAX_ROWS
constexpr int kThreads = 512;

// An int that orders like the float: -0 as +0, every NaN above +inf (NaN ranks highest).
__device__ __forceinline__ int32_t sort_key(float v) {
  if (v != v) return INT32_MAX;
  const int32_t bits = __float_as_int(v == 0.0f ? 0.0f : v);
  return bits ^ ((bits >> 31) & 0x7fffffff);
}

struct Matrix {  // element strides of a 2-D input
  int64_t s0, s1;
};

// proj = src @ w (float32, stored); sim = proj @ tgt.T; each entry's rank in its row (descending,
// ties to the lower column) puts the top_t into indices[i, rank]; out = the row sums, or their
// softmax over the rows divided by the temperature.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    topt_fused_kernel(const T* __restrict__ src, const T* __restrict__ tgt, const T* __restrict__ w,
                      T* __restrict__ out, int64_t* __restrict__ indices, float* __restrict__ proj, int ns, int nt,
                      int d, int top_t, Matrix src_at, Matrix tgt_at, Matrix w_at, float temperature, bool softmax) {
  __shared__ float sim[kMaxRows * kMaxRows];
  __shared__ float picked[kMaxRows * kMaxRows];
  __shared__ float score[kMaxRows];
  const int tid = threadIdx.x;

  for (int e = tid; e < ns * d; e += blockDim.x) {
    const int i = e / d, b = e % d;
    float acc = 0.0f;
    for (int a = 0; a < d; ++a) acc += to_acc(src[i * src_at.s0 + a * src_at.s1]) * to_acc(w[a * w_at.s0 + b * w_at.s1]);
    proj[e] = acc;
  }
  __syncthreads();

  for (int e = tid; e < ns * nt; e += blockDim.x) {
    const int i = e / nt, j = e % nt;
    float acc = 0.0f;
    for (int b = 0; b < d; ++b) acc += proj[i * d + b] * to_acc(tgt[j * tgt_at.s0 + b * tgt_at.s1]);
    sim[e] = acc;
  }
  __syncthreads();

  for (int e = tid; e < ns * nt; e += blockDim.x) {
    const int i = e / nt, j = e % nt;
    const int32_t key = sort_key(sim[e]);
    int rank = 0;
    for (int k = 0; k < nt; ++k) {
      const int32_t other = sort_key(sim[i * nt + k]);
      rank += other > key || (other == key && k < j);
    }
    if (rank < top_t) {
      indices[i * top_t + rank] = j;
      picked[i * kMaxRows + rank] = sim[e];
    }
  }
  __syncthreads();

  if (tid < ns) {  // summed in double and rounded once: no float rounding error grows with top_t
    double s = 0.0;
    for (int r = 0; r < top_t; ++r) s += picked[tid * kMaxRows + r];
    score[tid] = static_cast<float>(s);
  }
  __syncthreads();

  if (tid < ns) {
    float v = score[tid];
    if (softmax) {
      // The largest score is subtracted before dividing: score / temperature may overflow.
      float top = -INFINITY;
      for (int k = 0; k < ns; ++k) top = fmaxf(top, score[k]);
      float total = 0.0f;
      for (int k = 0; k < ns; ++k) total += expf((score[k] - top) / temperature);
      v = expf((v - top) / temperature) / total;
    }
    out[tid] = from_acc<T>(v);
  }
}

Matrix matrix_of(const std::vector<int64_t>& strides, const char* name) {
  check(strides.size() == 2, std::string("topt_attention_fused: ") + name + " strides must have 2 entries");
  return Matrix{strides[0], strides[1]};
}

}  // namespace

void topt_attention_fused(uintptr_t src, uintptr_t tgt, uintptr_t weight, uintptr_t out, uintptr_t indices,
                          uintptr_t projected, int dtype, int64_t n_src, int64_t n_tgt, int64_t dim, int64_t top_t,
                          const std::vector<int64_t>& src_strides, const std::vector<int64_t>& tgt_strides,
                          const std::vector<int64_t>& weight_strides, double temperature, bool softmax, int device,
                          uintptr_t stream) {
  check(dtype != kFloat64, "topt_attention_fused: float64 is not supported on CUDA");
  check(n_src >= 1 && n_src <= kMaxRows && n_tgt >= 1 && n_tgt <= kMaxRows,
        "topt_attention_fused: Ns and Nt must be in [1, " + std::to_string(kMaxRows) + "]");
  check(top_t >= 1 && top_t <= n_tgt, "topt_attention_fused: top_t must be in [1, Nt]");
  check(dim >= 1 && n_src * dim <= INT32_MAX, "topt_attention_fused: D must be in [1, 2^31 / Ns]");
  check(temperature > 0.0, "topt_attention_fused: temperature must be > 0");
  const Matrix src_at = matrix_of(src_strides, "src"), tgt_at = matrix_of(tgt_strides, "tgt"),
               w_at = matrix_of(weight_strides, "weight");
  set_device(device);
  dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    topt_fused_kernel<T><<<1, kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
        reinterpret_cast<const T*>(src), reinterpret_cast<const T*>(tgt), reinterpret_cast<const T*>(weight),
        reinterpret_cast<T*>(out), reinterpret_cast<int64_t*>(indices), reinterpret_cast<float*>(projected),
        static_cast<int>(n_src), static_cast<int>(n_tgt), static_cast<int>(dim), static_cast<int>(top_t), src_at,
        tgt_at, w_at, static_cast<float>(temperature), softmax);
  });
  cuda_check(cudaGetLastError(), "topt_attention_fused launch");
}

}  // namespace webda::cuda
