// Gradient reversal backward on the GPU: out = -coeff * grad over any strides.
#include <algorithm>

#include "cuda/cuda_common.cuh"
#include "cuda/ops.h"

namespace webda::cuda {
namespace {

template <typename T>
__global__ void neg_scale_kernel(const T* __restrict__ grad, T* __restrict__ out, StridedLayout layout, int64_t numel,
                                 bool contiguous, double coeff, const double* __restrict__ coeff_ptr) {
  using acc = typename Acc<T>::type;
  const acc c = static_cast<acc>(-(coeff_ptr != nullptr ? *coeff_ptr : coeff));
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += step) {
    const int64_t src = contiguous ? i : layout.offset(i);
    out[i] = from_acc<T>(to_acc(grad[src]) * c);
  }
}

}  // namespace

void grad_reverse_backward(uintptr_t grad, uintptr_t out, int dtype, const std::vector<int64_t>& sizes,
                           const std::vector<int64_t>& grad_strides, double coeff, uintptr_t coeff_ptr,
                           int device, uintptr_t stream) {
  const StridedLayout layout = make_layout(sizes, grad_strides);
  const int64_t numel = numel_of(sizes);
  if (numel == 0) return;
  const bool contiguous = layout.ndim == 1 && layout.strides[0] == 1;
  const DeviceGuard guard(device);
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((numel + kThreads - 1) / kThreads, 65535LL * 8));
  dispatch_cuda_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    neg_scale_kernel<T><<<blocks, kThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
        reinterpret_cast<const T*>(grad), reinterpret_cast<T*>(out), layout, numel, contiguous, coeff,
        reinterpret_cast<const double*>(coeff_ptr));
  });
  cuda_check(cudaGetLastError(), "grad_reverse_backward launch");
}

}  // namespace webda::cuda
