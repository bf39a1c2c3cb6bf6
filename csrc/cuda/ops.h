// Entry points of the CUDA module. Pointers, sizes and strides arrive as integers from
// Python, which validated the inputs, allocated the outputs and passes its current stream.
#pragma once

#include <cstdint>
#include <vector>

namespace webda::cuda {

// out = -coeff * grad; `out` contiguous in the order of `sizes`, grad at `grad_strides`.
// The coefficient is *coeff_ptr (a float64 on the device) when coeff_ptr != 0, else coeff.
void grad_reverse_backward(uintptr_t grad, uintptr_t out, int dtype, const std::vector<int64_t>& sizes,
                           const std::vector<int64_t>& grad_strides, double coeff, uintptr_t coeff_ptr,
                           int device, uintptr_t stream);

}  // namespace webda::cuda
