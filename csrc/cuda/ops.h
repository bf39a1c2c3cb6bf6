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

// Fused temporal part of the (2+1)D block (residual_conv2plus1d.cu). Tensors are [N][T][H*W][C]
// contiguous (channels_last_3d), weight (C, C, kt) with kt odd, bias (C,) or 0, all of `dtype`.
// forward: y = act(z + conv_t(z) + bias). backward: grad_z always; grad_weight (C, C, kt) and
// grad_bias (C,) when non-zero: float32 buffers (float64 for float64), zero-filled by the caller.
void residual_temporal_forward(uintptr_t z, uintptr_t weight, uintptr_t bias, uintptr_t y, int64_t n, int64_t c,
                               int64_t t, int64_t hw, int64_t kt, bool relu, int dtype, int device, uintptr_t stream);
void residual_temporal_backward(uintptr_t grad_y, uintptr_t z, uintptr_t y, uintptr_t weight, uintptr_t grad_z,
                                uintptr_t grad_weight, uintptr_t grad_bias, int64_t n, int64_t c, int64_t t,
                                int64_t hw, int64_t kt, bool relu, int dtype, int device, uintptr_t stream);

// Top-T attention of a batch with Ns, Nt <= 64 in one thread block, from projected = src @ weight
// ((Ns, D) float32, contiguous): out (Ns) the sums of the top_t largest of each row of projected @ tgt.T
// (softmax(. / temperature) over the rows if softmax), indices (Ns, top_t) int64 their columns
// (descending, ties to the lower column, NaN highest). tgt strides in elements; dtype (of tgt and
// out) float32/float16/bfloat16.
void topt_attention_fused(uintptr_t projected, uintptr_t tgt, uintptr_t out, uintptr_t indices, int dtype,
                          int64_t n_src, int64_t n_tgt, int64_t dim, int64_t top_t,
                          const std::vector<int64_t>& tgt_strides, double temperature, bool softmax, int device,
                          uintptr_t stream);

// Streaming top-k (topk_similarity.cu): out (n_query, n_chunks * k_pad) int64, row r's slice c
// the k_pad best packed keys of query[r] @ bank.T over bank rows [c * chunk_rows, +chunk_rows),
// descending. k_pad in {32, 64, 128, 256}; chunk_rows a multiple of 64; strides in elements;
// dtype float32/float16/bfloat16.
void topk_similarity_partial(uintptr_t query, uintptr_t bank, uintptr_t out, int dtype, int64_t n_query,
                             int64_t n_bank, int64_t dim, const std::vector<int64_t>& query_strides,
                             const std::vector<int64_t>& bank_strides, int64_t k_pad, int64_t chunk_rows,
                             int64_t n_chunks, int device, uintptr_t stream);

}  // namespace webda::cuda
