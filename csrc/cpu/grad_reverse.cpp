// Gradient reversal backward on the CPU: out = -coeff * grad over any strides.
#include <omp.h>

#include "common.h"
#include "cpu/ops.h"

namespace webda::cpu {
namespace {

template <typename T>
void neg_scale(const T* grad, T* out, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
               double coeff) {
  using S = Scalar<T>;
  using acc = typename S::acc;
  const acc c = static_cast<acc>(-coeff);
  const int ndim = static_cast<int>(sizes.size());
  if (ndim == 1 && strides[0] == 1) {  // contiguous: one flat, vectorised, parallel loop
    const int64_t n = sizes[0];
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
    for (int64_t i = 0; i < n; ++i) out[i] = S::store(S::load(grad[i]) * c);
    return;
  }
  const int64_t inner = sizes[ndim - 1];
  const int64_t inner_stride = strides[ndim - 1];
  int64_t rows = 1;
  for (int d = 0; d < ndim - 1; ++d) rows *= sizes[d];
#pragma omp parallel for schedule(static) if (rows * inner > (1 << 15))
  for (int64_t row = 0; row < rows; ++row) {
    int64_t offset = 0;
    for (int64_t d = ndim - 2, rest = row; d >= 0; --d) {
      offset += (rest % sizes[d]) * strides[d];
      rest /= sizes[d];
    }
    const T* g = grad + offset;
    T* o = out + row * inner;
    for (int64_t i = 0; i < inner; ++i) o[i] = S::store(S::load(g[i * inner_stride]) * c);
  }
}

}  // namespace

void grad_reverse_backward(uintptr_t grad, uintptr_t out, int dtype, const std::vector<int64_t>& sizes,
                           const std::vector<int64_t>& grad_strides, double coeff) {
  check(!sizes.empty() && sizes.size() == grad_strides.size() && sizes.size() <= kMaxDims,
        "grad_reverse_backward: sizes and strides must have the same length, 1.." + std::to_string(kMaxDims));
  for (int64_t s : sizes) {
    if (s == 0) return;
  }
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    neg_scale(reinterpret_cast<const T*>(grad), reinterpret_cast<T*>(out), sizes, grad_strides, coeff);
  });
}

}  // namespace webda::cpu
