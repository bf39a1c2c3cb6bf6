// Helpers shared by the CUDA kernels: error checks, dtype dispatch, strided indexing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"

namespace webda::cuda {

inline void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Makes `device` current for this (statically linked) runtime; torch's runtime is separate.
inline void set_device(int device) { cuda_check(cudaSetDevice(device), "cudaSetDevice"); }

template <typename T> struct Acc { using type = T; };
template <> struct Acc<__half> { using type = float; };
template <> struct Acc<__nv_bfloat16> { using type = float; };

template <typename T> __device__ __forceinline__ typename Acc<T>::type to_acc(T v) {
  return static_cast<typename Acc<T>::type>(v);
}
template <> __device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(typename Acc<T>::type v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }

template <typename F> void dispatch_cuda_dtype(int dtype, F&& f) {
  dispatch_dtype_as<__half, __nv_bfloat16>(dtype, f);
}

// Sizes and strides passed by value to a kernel.
struct StridedLayout {
  int ndim;
  int64_t sizes[kMaxDims];
  int64_t strides[kMaxDims];

  __device__ __forceinline__ int64_t offset(int64_t linear) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      off += (linear % sizes[d]) * strides[d];
      linear /= sizes[d];
    }
    return off;
  }
};

inline StridedLayout make_layout(const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
  check(!sizes.empty() && sizes.size() == strides.size() && sizes.size() <= kMaxDims,
        "sizes and strides must have the same length, 1.." + std::to_string(kMaxDims));
  StridedLayout layout{};
  layout.ndim = static_cast<int>(sizes.size());
  for (int d = 0; d < layout.ndim; ++d) {
    layout.sizes[d] = sizes[d];
    layout.strides[d] = strides[d];
  }
  return layout;
}

inline int64_t numel_of(const std::vector<int64_t>& sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

}  // namespace webda::cuda
