// pybind11 module webda_kernels._C_cuda: the CUDA kernels, called with raw pointers and the
// caller's stream. The CUDA runtime is linked statically: importing needs no GPU.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime.h>

#include "build_info.h"
#include "cuda/ops.h"

namespace py = pybind11;

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "webda_kernels CUDA kernels; called by webda_kernels, not by users";
  m.def("grad_reverse_backward", &webda::cuda::grad_reverse_backward, py::arg("grad"), py::arg("out"),
        py::arg("dtype"), py::arg("sizes"), py::arg("grad_strides"), py::arg("coeff"), py::arg("coeff_ptr"),
        py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("residual_temporal_forward", &webda::cuda::residual_temporal_forward, py::arg("z"), py::arg("weight"),
        py::arg("bias"), py::arg("y"), py::arg("n"), py::arg("c"), py::arg("t"), py::arg("hw"), py::arg("kt"),
        py::arg("relu"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
        py::call_guard<py::gil_scoped_release>());
  m.def("residual_temporal_backward", &webda::cuda::residual_temporal_backward, py::arg("grad_y"), py::arg("z"),
        py::arg("y"), py::arg("weight"), py::arg("grad_z"), py::arg("grad_weight"), py::arg("grad_bias"),
        py::arg("n"), py::arg("c"), py::arg("t"), py::arg("hw"), py::arg("kt"), py::arg("relu"), py::arg("dtype"),
        py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("topt_attention_fused", &webda::cuda::topt_attention_fused, py::arg("projected"), py::arg("tgt"),
        py::arg("out"), py::arg("indices"), py::arg("dtype"), py::arg("n_src"), py::arg("n_tgt"), py::arg("dim"),
        py::arg("top_t"), py::arg("tgt_strides"), py::arg("temperature"), py::arg("softmax"), py::arg("device"),
        py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("topk_similarity_partial", &webda::cuda::topk_similarity_partial, py::arg("query"), py::arg("bank"),
        py::arg("out"), py::arg("dtype"), py::arg("n_query"), py::arg("n_bank"), py::arg("dim"),
        py::arg("query_strides"), py::arg("bank_strides"), py::arg("k_pad"), py::arg("chunk_rows"),
        py::arg("n_chunks"), py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def("build_info", []() {
    namespace b = webda::build;
    py::dict info;
    info["compiler"] = b::kCudaCompiler;
    info["archs"] = b::kCudaArchs;
    info["runtime"] = CUDART_VERSION;
    return info;
  });
}
