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

// Streaming top-k selection (topk_similarity.cpp). `values` (rows, k) and `indices` (rows, k)
// hold each row's running top-k; `scores` (rows, cols) contiguous are the similarities to bank
// rows seen .. seen + cols - 1, tiles arriving in bank order. update folds one tile in;
// finalize sorts each row (NaN first, then descending value, then ascending index).
// dtype: the scores' and values' dtype code, float32 or float64.
void topk_similarity_update(uintptr_t scores, int64_t rows, int64_t cols, int64_t seen, uintptr_t values,
                            uintptr_t indices, int64_t k, int dtype);
void topk_similarity_finalize(uintptr_t values, uintptr_t indices, int64_t rows, int64_t k, int dtype);

}  // namespace webda::cpu
