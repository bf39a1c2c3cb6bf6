// Entry points of the CPU module. Pointers arrive as integers from Python, which has
// already validated shapes, dtypes and devices and allocated the outputs.
#pragma once

#include <cstdint>
#include <vector>

namespace webda::cpu {

// out = -coeff * grad. `out` is contiguous in the order of `sizes`; `grad_strides` (in
// elements, any sign or zero) say where each grad element is.
void grad_reverse_backward(uintptr_t grad, uintptr_t out, int dtype, const std::vector<int64_t>& sizes,
                           const std::vector<int64_t>& grad_strides, double coeff);

}  // namespace webda::cpu
