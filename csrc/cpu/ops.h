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

// Fused top-k similarity search (topk_similarity.cpp): values (queries, k) and int64 indices
// (queries, k) of the k largest query @ bank.T per query row, sorted (NaN first, then descending
// value, then ascending index). query (queries, depth) contiguous; bank (rows, depth) with row
// stride bank_stride, contiguous along depth; 1 <= k <= rows. dtype: float32 or float64 (all
// four arrays but indices).
void topk_similarity_search(uintptr_t query, uintptr_t bank, int64_t bank_stride, int64_t queries, int64_t rows,
                            int64_t depth, int64_t k, uintptr_t values, uintptr_t indices, int dtype);

// Fused temporal part of the (2+1)D block (residual_conv2plus1d.cpp). z, y, grad_y, grad_z are
// (N, C, T, H, W) in channels_last_3d memory ([N][T][H][W][C] contiguous), hw = H * W; weight
// (C, C, kt) contiguous, kt odd, zero padding kt / 2; bias (C,) or 0; dtype float32 or float64.
// forward: y = act(z + conv_t(z) + bias). backward: g = relu ? grad_y * (y > 0) : grad_y
// (y may be 0 without relu), grad_z = g + conv_t^T(g); grad_weight (C, C, kt) and grad_bias (C,)
// in z's dtype, written when non-zero.
void residual_temporal_forward(uintptr_t z, uintptr_t weight, uintptr_t bias, uintptr_t y, int64_t n, int64_t c,
                               int64_t t, int64_t hw, int64_t kt, bool relu, int dtype);
void residual_temporal_backward(uintptr_t grad_y, uintptr_t z, uintptr_t y, uintptr_t weight, uintptr_t grad_z,
                                uintptr_t grad_weight, uintptr_t grad_bias, int64_t n, int64_t c, int64_t t,
                                int64_t hw, int64_t kt, bool relu, int dtype);

// Winograd F(2x2, 3x3) 3x3 stride-1 convolution (winograd_conv3x3.cpp) of channels-last frames:
// input [frames][h][w][c] -> out [frames][ho][wo][co] (+ bias (co,) unless 0), ho = h + 2 pad - 2,
// wo = w + 2 pad - 2, 0 <= pad <= 2, tiles = frames * ceil(ho / 2) * ceil(wo / 2); dtype float32
// or float64. Either whole (winograd_conv3x3, with U (16, c, co) packed by winograd_pack_weight
// into winograd_packed_numel elements) or as the transforms around a batched GEMM:
// input -> v[p * v_stride + tile * c + channel] (v_stride >= tiles * c), m [16][tiles][co] -> out.
void winograd_input_transform(uintptr_t input, uintptr_t v, int64_t v_stride, int64_t frames, int64_t h, int64_t w,
                              int64_t c, int64_t pad, int dtype);
void winograd_output_transform(uintptr_t m, uintptr_t bias, uintptr_t out, int64_t frames, int64_t h, int64_t w,
                               int64_t co, int64_t pad, int dtype);
int64_t winograd_packed_numel(int64_t c, int64_t co, int dtype);
void winograd_pack_weight(uintptr_t u, uintptr_t packed, int64_t c, int64_t co, int dtype);
void winograd_conv3x3(uintptr_t input, uintptr_t packed, uintptr_t bias, uintptr_t out, int64_t frames, int64_t h,
                      int64_t w, int64_t c, int64_t co, int64_t pad, int dtype);

}  // namespace webda::cpu
